// Package channeltest is a minimal host side of the agent protocol for tests: it runs a
// channel.Session on one end of a unix socketpair and talks to it from the other.
package channeltest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// Timeout bounds every wait in these helpers so that a broken agent fails a test, not hangs it.
var Timeout = 20 * time.Second

// Client is the test's host end.
type Client struct {
	t    testing.TB
	Conn net.Conn
	Sess *channel.Session

	wmu sync.Mutex

	mu    sync.Mutex
	convs map[uint32]*Conv
	next  uint32
}

// Start serves handlers on a fresh session and returns a client connected to it. inputs becomes
// the session's Inputs (nil: every op reads input). Everything is torn down when the test ends.
func Start(t testing.TB, handlers map[string]channel.Handler, inputs channel.Inputs) *Client {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	agentConn, hostConn := fileConn(t, fds[0]), fileConn(t, fds[1])
	logger := log.New(io.Discard, "", 0)
	if os.Getenv("AGENT_TEST_LOG") != "" {
		logger = log.New(os.Stderr, "agent: ", log.Lmicroseconds)
	}
	sess := channel.NewSession(agentConn, agentConn, logger, handlers)
	sess.Inputs = inputs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		_ = sess.Serve(ctx)
		close(done)
	}()
	c := &Client{t: t, Conn: hostConn, Sess: sess, convs: make(map[uint32]*Conv)}
	go c.bgRead()
	t.Cleanup(func() {
		cancel()
		agentConn.Close()
		hostConn.Close()
		<-done
	})
	return c
}

func fileConn(t testing.TB, fd int) net.Conn {
	f := os.NewFile(uintptr(fd), "socketpair")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *Client) bgRead() {
	dec := channel.NewDecoder(c.Conn)
	for {
		f, err := dec.Next()
		if err != nil {
			return
		}
		c.conv(f.Stream).push(f)
	}
}

func (c *Client) conv(id uint32) *Conv {
	c.mu.Lock()
	defer c.mu.Unlock()
	cv := c.convs[id]
	if cv == nil {
		cv = &Conv{c: c, ID: id, wake: make(chan struct{}, 1)}
		c.convs[id] = cv
	}
	return cv
}

// WriteFrame sends one frame.
func (c *Client) WriteFrame(f channel.Frame) {
	b, err := channel.Encode(f)
	if err != nil {
		c.t.Fatal(err)
	}
	c.WriteRaw(b)
}

// WriteRaw sends bytes as they are (garbage, partial frames).
func (c *Client) WriteRaw(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.Conn.Write(b); err != nil {
		c.t.Errorf("client write: %v", err)
	}
}

// Hello starts a session and waits for its REPLY.
func (c *Client) Hello(session string) map[string]any {
	c.t.Helper()
	payload, _ := json.Marshal(map[string]any{"session": session, "protocol": spec.Protocol})
	c.WriteFrame(channel.Frame{Type: spec.TypeHello, Payload: payload})
	cv := c.conv(0)
	for {
		f := cv.Next()
		if f.Type != spec.TypeReply {
			continue
		}
		var m map[string]any
		if json.Unmarshal(f.Payload, &m) == nil && m["session"] == session {
			return m
		}
	}
}

// Open sends a REQUEST on a new stream.
func (c *Client) Open(req map[string]any) *Conv {
	c.mu.Lock()
	c.next++
	id := c.next
	c.mu.Unlock()
	cv := c.conv(id)
	payload, err := json.Marshal(req)
	if err != nil {
		c.t.Fatal(err)
	}
	c.WriteFrame(channel.Frame{Type: spec.TypeRequest, Stream: id, Payload: payload})
	return cv
}

// Call runs a request without data and returns its REPLY or ERROR.
func (c *Client) Call(req map[string]any) Result {
	c.t.Helper()
	return c.Open(req).Collect(true)
}

// Conv is one stream as the host sees it.
type Conv struct {
	c    *Client
	ID   uint32
	mu   sync.Mutex
	q    []channel.Frame
	wake chan struct{}
}

func (cv *Conv) push(f channel.Frame) {
	cv.mu.Lock()
	cv.q = append(cv.q, f)
	cv.mu.Unlock()
	select {
	case cv.wake <- struct{}{}:
	default:
	}
}

// Next returns the stream's next frame, failing the test after Timeout.
func (cv *Conv) Next() channel.Frame {
	cv.c.t.Helper()
	f, ok := cv.NextWithin(Timeout)
	if !ok {
		cv.c.t.Fatalf("stream %d: no frame within %v", cv.ID, Timeout)
	}
	return f
}

// NextWithin returns the next frame, or false when none comes within d.
func (cv *Conv) NextWithin(d time.Duration) (channel.Frame, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		cv.mu.Lock()
		if len(cv.q) > 0 {
			f := cv.q[0]
			cv.q = cv.q[1:]
			cv.mu.Unlock()
			return f, true
		}
		cv.mu.Unlock()
		select {
		case <-cv.wake:
		case <-deadline.C:
			return channel.Frame{}, false
		}
	}
}

// Send sends DATA on channel 0 (the caller respects the agent's credit).
func (cv *Conv) Send(p []byte) {
	cv.c.WriteFrame(channel.Frame{Type: spec.TypeData, Stream: cv.ID, Flags: spec.ChannelInput, Payload: p})
}

// EOF closes channel 0.
func (cv *Conv) EOF() {
	cv.c.WriteFrame(channel.Frame{Type: spec.TypeEof, Stream: cv.ID, Flags: spec.ChannelInput})
}

// Cancel abandons the stream.
func (cv *Conv) Cancel() {
	cv.c.WriteFrame(channel.Frame{Type: spec.TypeCancel, Stream: cv.ID})
}

// Credit grants the agent n more bytes.
func (cv *Conv) Credit(n int) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	cv.c.WriteFrame(channel.Frame{Type: spec.TypeCredit, Stream: cv.ID, Payload: b[:]})
}

// Result is everything a stream produced.
type Result struct {
	Events []map[string]any
	Data   map[uint16][]byte
	EOFs   []uint16
	Reply  map[string]any // set on REPLY
	Err    *channel.Error // set on ERROR
}

// Collect reads the stream to its REPLY or ERROR. With credit, it grants back every DATA
// byte as it arrives, like a host that consumes promptly.
func (cv *Conv) Collect(credit bool) Result {
	cv.c.t.Helper()
	r := Result{Data: map[uint16][]byte{}}
	for {
		f := cv.Next()
		switch f.Type {
		case spec.TypeEvent:
			var m map[string]any
			if err := json.Unmarshal(f.Payload, &m); err != nil {
				cv.c.t.Fatalf("stream %d: bad EVENT: %v", cv.ID, err)
			}
			r.Events = append(r.Events, m)
		case spec.TypeData:
			r.Data[f.Flags] = append(r.Data[f.Flags], f.Payload...)
			if credit && len(f.Payload) > 0 {
				cv.Credit(len(f.Payload))
			}
		case spec.TypeEof:
			r.EOFs = append(r.EOFs, f.Flags)
		case spec.TypeReply:
			if err := json.Unmarshal(f.Payload, &r.Reply); err != nil {
				cv.c.t.Fatalf("stream %d: bad REPLY: %v", cv.ID, err)
			}
			return r
		case spec.TypeError:
			r.Err = &channel.Error{}
			if err := json.Unmarshal(f.Payload, r.Err); err != nil {
				cv.c.t.Fatalf("stream %d: bad ERROR: %v", cv.ID, err)
			}
			return r
		case spec.TypeCredit:
		default:
			cv.c.t.Fatalf("stream %d: unexpected frame type %d", cv.ID, f.Type)
		}
	}
}

// Code is the ERROR code, or "" after a REPLY.
func (r Result) Code() string {
	if r.Err == nil {
		return ""
	}
	return r.Err.Code
}

// String summarises the result for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("events=%v eofs=%v reply=%v err=%v stdout=%q stderr=%q",
		r.Events, r.EOFs, r.Reply, r.Err, trunc(r.Data[1]), trunc(r.Data[2]))
}

func trunc(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// SendAll sends p on channel 0 as fast as the agent's credit allows, then EOF. It stops early,
// leaving the frame for Collect, when the agent sends anything but CREDIT (an ERROR).
func (cv *Conv) SendAll(p []byte) {
	cv.c.t.Helper()
	credit := spec.InitialWindowBytes
	for len(p) > 0 {
		for credit == 0 {
			f := cv.Next()
			if f.Type != spec.TypeCredit {
				cv.mu.Lock()
				cv.q = append([]channel.Frame{f}, cv.q...)
				cv.mu.Unlock()
				return
			}
			credit += int(binary.BigEndian.Uint32(f.Payload))
		}
		n := min(credit, spec.DataChunkBytes, len(p))
		cv.Send(p[:n])
		p = p[n:]
		credit -= n
	}
	cv.EOF()
}
