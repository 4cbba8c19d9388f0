package channel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"sync"

	"github.com/isorun/isorun/agent/internal/spec"
)

// ErrClosed is returned by stream operations after the stream ended or was dropped.
var ErrClosed = errors.New("stream closed")

// Stream is one request's conversation (protocol.md sections 2 and 4).
//
// Credit, per direction:
//   - out: the agent may send `credit` more DATA bytes; the host's CREDIT frames add to it.
//     Senders wait for credit, so a host that stops granting stalls this stream only.
//   - in: the host may send `inAllowed` more bytes. Received DATA is queued; it counts as
//     consumed when the handler calls Recv again, and CREDIT is returned once half a window
//     has been consumed. The queue is therefore bounded by one window. A stream whose request
//     does not read input (Session.Inputs) queues nothing: its DATA is consumed on arrival.
type Stream struct {
	id     uint32
	sess   *Session
	epoch  uint64
	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex // guards the fields below; frames are queued under it so they keep order
	closed     bool       // a final frame was queued, or the stream was dropped
	credit     int64
	creditWake chan struct{} // closed and replaced when credit grows or the stream closes
	input      bool          // the request reads DATA on channel 0; otherwise DATA is dropped
	inbox      [][]byte
	inEOF      bool
	inWake     chan struct{}
	inAllowed  int64
	consumed   int64 // consumed but not yet returned as CREDIT
	held       int64 // length of the chunk the last Recv returned
}

func newStream(parent context.Context, s *Session, id uint32, epoch uint64, input bool) *Stream {
	ctx, cancel := context.WithCancel(parent)
	return &Stream{
		id: id, sess: s, epoch: epoch, ctx: ctx, cancel: cancel, input: input,
		credit: spec.InitialWindowBytes, creditWake: make(chan struct{}),
		inWake: make(chan struct{}), inAllowed: spec.InitialWindowBytes,
	}
}

// ID is the stream number chosen by the host.
func (st *Stream) ID() uint32 { return st.id }

// Context is done once the stream has ended or been dropped; nothing sent after that arrives.
func (st *Stream) Context() context.Context { return st.ctx }

func (st *Stream) run(h Handler, req Request) {
	reply, err := h(st, req)
	st.finish(reply, err)
}

// queueLocked queues a frame on this stream; st.mu must be held.
func (st *Stream) queueLocked(typ uint8, flags uint16, payload []byte) {
	st.sess.enqueue(st.epoch, Frame{Type: typ, Flags: flags, Stream: st.id, Payload: payload})
}

func wake(ch *chan struct{}) {
	close(*ch)
	*ch = make(chan struct{})
}

// closeLocked marks the stream finished; st.mu must be held.
func (st *Stream) closeLocked() {
	st.closed = true
	st.cancel()
	wake(&st.creditWake)
	wake(&st.inWake)
}

// drop ends the stream without a frame (HELLO, CANCEL).
func (st *Stream) drop() {
	st.mu.Lock()
	if !st.closed {
		st.closeLocked()
	}
	st.mu.Unlock()
}

// finish sends the final REPLY or ERROR unless the stream is already gone.
func (st *Stream) finish(reply any, err error) {
	st.mu.Lock()
	if !st.closed && st.ctx.Err() == nil {
		typ, payload := finalFrame(reply, err)
		st.queueLocked(typ, 0, payload)
		st.closeLocked()
	}
	st.mu.Unlock()
	st.sess.remove(st)
}

func finalFrame(reply any, err error) (uint8, []byte) {
	if err == nil {
		if reply == nil {
			reply = struct{}{}
		}
		payload, merr := json.Marshal(reply)
		if merr == nil && len(payload) <= spec.MaxPayloadBytes {
			return spec.TypeReply, payload
		}
		if merr == nil {
			merr = errors.New("reply is larger than max_payload_bytes")
		}
		err = Errorf(spec.CodeInternal, "encoding the reply: %v", merr)
	}
	var e *Error
	if !errors.As(err, &e) {
		e = Errorf(spec.CodeInternal, "%v", err)
	}
	payload, _ := json.Marshal(e)
	return spec.TypeError, payload
}

// Event sends a non-final EVENT frame.
func (st *Stream) Event(v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return ErrClosed
	}
	st.queueLocked(spec.TypeEvent, 0, payload)
	return nil
}

// WaitCredit blocks until the host has granted credit and returns how much. It returns
// ErrClosed when the stream ends, or context.Canceled when cancel is closed first.
func (st *Stream) WaitCredit(cancel <-chan struct{}) (int, error) {
	for {
		st.mu.Lock()
		if st.closed {
			st.mu.Unlock()
			return 0, ErrClosed
		}
		if st.credit > 0 {
			n := st.credit
			st.mu.Unlock()
			return int(min(n, 1<<30)), nil
		}
		w := st.creditWake
		st.mu.Unlock()
		select {
		case <-w:
		case <-cancel:
			return 0, context.Canceled
		}
	}
}

// Send sends p as DATA on channel ch, in chunks of at most data_chunk_bytes, waiting for
// credit as needed. On error an unknown prefix of p has been sent.
func (st *Stream) Send(ch uint16, p []byte) error {
	for len(p) > 0 {
		if _, err := st.WaitCredit(nil); err != nil {
			return err
		}
		n, err := st.trySend(ch, p)
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// trySend sends as much of p as the credit allows (up to one chunk) and returns the count.
func (st *Stream) trySend(ch uint16, p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return 0, ErrClosed
	}
	n := int(min(int64(len(p)), st.credit, spec.DataChunkBytes))
	if n > 0 {
		st.credit -= int64(n)
		st.queueLocked(spec.TypeData, ch, p[:n])
	}
	return n, nil
}

// CloseChannel sends EOF for channel ch.
func (st *Stream) CloseChannel(ch uint16) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return ErrClosed
	}
	st.queueLocked(spec.TypeEof, ch, nil)
	return nil
}

// Recv returns the next DATA payload the host sent on channel 0, io.EOF after its EOF, or
// ErrClosed. Calling Recv again declares the previous chunk consumed, which is what returns
// credit to the host: call it only once that chunk has been written out.
func (st *Stream) Recv() ([]byte, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.consumed += st.held
	st.held = 0
	if st.consumed >= spec.InitialWindowBytes/2 && !st.closed && !st.inEOF {
		st.grantLocked()
	}
	for len(st.inbox) == 0 {
		if st.closed {
			return nil, ErrClosed
		}
		if st.inEOF {
			return nil, io.EOF
		}
		w := st.inWake
		st.mu.Unlock()
		<-w
		st.mu.Lock()
	}
	p := st.inbox[0]
	st.inbox[0] = nil
	st.inbox = st.inbox[1:]
	st.held = int64(len(p))
	return p, nil
}

func (st *Stream) grantLocked() {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(st.consumed))
	st.inAllowed += st.consumed
	st.consumed = 0
	st.queueLocked(spec.TypeCredit, 0, b[:])
}

// receive handles a host frame routed to this stream by the session's reader goroutine. It
// never blocks on the handler: DATA is queued, bounded by the credit the agent granted.
func (st *Stream) receive(f Frame) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	switch f.Type {
	case spec.TypeCancel:
		st.closeLocked()
	case spec.TypeCredit:
		if len(f.Payload) == 4 {
			st.credit += int64(binary.BigEndian.Uint32(f.Payload))
			wake(&st.creditWake)
		}
	case spec.TypeEof:
		if f.Flags == spec.ChannelInput {
			st.inEOF = true
			wake(&st.inWake)
		}
	case spec.TypeData:
		if int64(len(f.Payload)) > st.inAllowed {
			e, _ := json.Marshal(Errorf(spec.CodeFlowControl,
				"DATA of %d bytes exceeds the %d bytes of credit granted", len(f.Payload), st.inAllowed))
			st.queueLocked(spec.TypeError, 0, e)
			st.closeLocked()
			break
		}
		st.inAllowed -= int64(len(f.Payload))
		if st.input && f.Flags == spec.ChannelInput && !st.inEOF && len(f.Payload) > 0 {
			st.inbox = append(st.inbox, f.Payload)
			wake(&st.inWake)
		} else {
			// Ignored bytes still spent credit; count them consumed so the host is not starved.
			st.consumed += int64(len(f.Payload))
		}
	}
	closed := st.closed
	st.mu.Unlock()
	if closed {
		st.sess.remove(st)
	}
}
