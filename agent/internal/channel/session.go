package channel

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isorun/isorun/agent/internal/spec"
	"github.com/isorun/isorun/agent/internal/version"
)

// Handler serves one REQUEST on its own goroutine. It returns the REPLY body (nil means {}) or an
// error: an *Error ends the stream with its code, any other error with `internal`. Once the
// stream has been dropped (CANCEL, HELLO, flow_control), whatever it returns is discarded, so a
// handler may simply return when Stream.Context is done.
type Handler func(st *Stream, req Request) (any, error)

// Inputs names the ops whose streams read DATA on channel 0: Inputs[op](req) reports whether
// that request does (a nil func: always). DATA on any other stream still spends credit but
// counts as consumed and is dropped on arrival, so a host cannot park a window of bytes on each
// stream of an op that never reads them. A nil Inputs means that every op reads input.
type Inputs map[string]func(Request) bool

// Session multiplexes streams over one port (protocol.md sections 2 to 4).
//
//	reader goroutine ──frames──▶ hello / open stream / route DATA, EOF, CREDIT, CANCEL
//	handlers, pumps  ──encoded frames, tagged with their epoch──▶ out queue ──▶ writer goroutine
//
// Every HELLO starts a new epoch. The writer drops queued frames of older epochs, which is how
// a reconnecting host is spared the previous session's backlog; only a frame the writer was in
// the middle of writing can reach it, and the host skips that (section 3).
//
// Serve never gives up on the port: virtio-serial reads return 0 (EOF) while no host is
// connected and writes block or fail, and the agent must still be there when the next host comes.
type Session struct {
	r        io.Reader
	w        io.Writer
	log      *log.Logger
	handlers map[string]Handler

	// RetryDelay is the pause after the port reported EOF or an error. virtio-serial's poll()
	// reports POLLHUP continuously while the host is away, so sleeping is the only way to wait;
	// the delay bounds how late a new host's HELLO is noticed.
	RetryDelay time.Duration
	// Inputs says which requests read DATA on channel 0; set it before Serve.
	Inputs Inputs

	epoch atomic.Uint64
	out   chan outFrame

	mu      sync.Mutex // guards streams; taken before any Stream.mu, never after
	streams map[uint32]*Stream
	ctx     context.Context // Serve's; set before the first frame is handled
}

type outFrame struct {
	epoch uint64
	buf   []byte
}

// NewSession returns a session that reads frames from r, writes them to w and dispatches
// REQUESTs to handlers by op.
func NewSession(r io.Reader, w io.Writer, logger *log.Logger, handlers map[string]Handler) *Session {
	return &Session{
		r:          r,
		w:          w,
		log:        logger,
		handlers:   handlers,
		RetryDelay: 10 * time.Millisecond,
		// Small on purpose: frames of an old epoch still queued when a new host connects before
		// its HELLO is read reach that host, and this bounds them.
		out:     make(chan outFrame, 64),
		streams: make(map[uint32]*Stream),
	}
}

// Serve runs the session until ctx is done. It returns ctx's error; port errors never end it.
// A blocked read or write of the port is only interrupted by closing the port.
func (s *Session) Serve(ctx context.Context) error {
	s.ctx = ctx
	go s.bgWrite(ctx)
	dec := NewDecoder(s.r)
	var lastErr string
	var dropped uint64
	for ctx.Err() == nil {
		f, err := dec.Next()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if msg := err.Error(); msg != lastErr && !errors.Is(err, io.EOF) {
				s.log.Printf("port read: %v (retrying)", err)
				lastErr = msg
			}
			dec.Reset()
			sleep(ctx, s.RetryDelay)
			continue
		}
		lastErr = ""
		if dec.Dropped != dropped {
			s.log.Printf("skipped %d bytes that were not frames", dec.Dropped-dropped)
			dropped = dec.Dropped
		}
		s.handle(ctx, f)
	}
	s.mu.Lock()
	old := s.streams
	s.streams = make(map[uint32]*Stream)
	s.mu.Unlock()
	for _, st := range old {
		st.drop()
	}
	return ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// bgWrite is the only writer of the port, so frames never interleave.
func (s *Session) bgWrite(ctx context.Context) {
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-s.out:
			if f.epoch != s.epoch.Load() {
				continue
			}
			if _, err := s.w.Write(f.buf); err != nil {
				// The frame is dropped: the host that would have read it is gone, and its
				// successor's HELLO resets everything the frame was about.
				if !failing {
					s.log.Printf("port write: %v (dropping frames until a write succeeds)", err)
				}
				failing = true
				continue
			}
			failing = false
		}
	}
}

func (s *Session) enqueue(epoch uint64, f Frame) {
	buf, err := Encode(f)
	if err != nil {
		s.log.Printf("stream %d: %v", f.Stream, err)
		return
	}
	// After Serve ends nobody drains the queue; giving up then keeps handlers from hanging.
	select {
	case s.out <- outFrame{epoch: epoch, buf: buf}:
	case <-s.ctx.Done():
	}
}

// sendError answers a REQUEST that never became a stream.
func (s *Session) sendError(stream uint32, e *Error) {
	payload, _ := json.Marshal(e)
	s.enqueue(s.epoch.Load(), Frame{Type: spec.TypeError, Stream: stream, Payload: payload})
}

func (s *Session) handle(ctx context.Context, f Frame) {
	switch f.Type {
	case spec.TypeHello:
		s.hello(f)
	case spec.TypeRequest:
		s.open(ctx, f)
	case spec.TypeData, spec.TypeEof, spec.TypeCredit, spec.TypeCancel:
		s.mu.Lock()
		st := s.streams[f.Stream]
		s.mu.Unlock()
		if st != nil {
			st.receive(f)
		}
	}
	// Other types do not belong in this direction and are ignored (section 6).
}

// hello ends the previous session and starts a new one (section 3).
func (s *Session) hello(f Frame) {
	var h struct {
		Session *string `json:"session"`
	}
	if err := json.Unmarshal(f.Payload, &h); err != nil || h.Session == nil {
		s.log.Printf("ignoring HELLO without a session string")
		return
	}
	s.mu.Lock()
	epoch := s.epoch.Add(1)
	old := s.streams
	s.streams = make(map[uint32]*Stream)
	s.mu.Unlock()
	for _, st := range old {
		st.drop()
	}
	s.log.Printf("session %q started; dropped %d streams of the previous one", *h.Session, len(old))
	payload, _ := json.Marshal(map[string]any{
		"session": *h.Session, "protocol": version.Protocol, "agent_version": version.Version,
	})
	s.enqueue(epoch, Frame{Type: spec.TypeReply, Stream: 0, Payload: payload})
}

func (s *Session) open(ctx context.Context, f Frame) {
	if f.Stream == 0 {
		s.sendError(0, BadRequest("stream", "stream 0 is reserved for HELLO"))
		return
	}
	s.mu.Lock()
	if _, busy := s.streams[f.Stream]; busy {
		s.mu.Unlock()
		// Answering would end the live stream in the host's eyes; the duplicate is a host bug.
		s.log.Printf("ignoring REQUEST for stream %d, which is open", f.Stream)
		return
	}
	req, err := ParseRequest(f.Payload)
	if err != nil {
		s.mu.Unlock()
		s.sendError(f.Stream, err.(*Error))
		return
	}
	h := s.handlers[req.Op]
	if h == nil {
		s.mu.Unlock()
		s.sendError(f.Stream, BadRequest("op", "unknown op %q", req.Op))
		return
	}
	if len(s.streams) >= spec.MaxStreams {
		s.mu.Unlock()
		s.sendError(f.Stream, Errorf(spec.CodeBusy, "%d streams are open", spec.MaxStreams))
		return
	}
	st := newStream(ctx, s, f.Stream, s.epoch.Load(), s.readsInput(req))
	s.streams[f.Stream] = st
	s.mu.Unlock()
	Go(s.log, "stream handler", func() { st.run(h, req) }, func(p any) {
		st.finish(nil, Errorf(spec.CodeInternal, "handler panicked: %v", p))
	})
}

func (s *Session) readsInput(req Request) bool {
	if s.Inputs == nil {
		return true
	}
	reads, ok := s.Inputs[req.Op]
	return ok && (reads == nil || reads(req))
}

func (s *Session) remove(st *Stream) {
	s.mu.Lock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
	}
	s.mu.Unlock()
}
