package tunnel

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"io"
	"log"
	"net"
	"testing"
	"time"

	"github.com/isorun/isorun/agent/internal/channel/channeltest"
	"github.com/isorun/isorun/agent/internal/spec"
)

func newClient(t *testing.T) *channeltest.Client {
	s := New(log.New(io.Discard, "", 0))
	c := channeltest.Start(t, s.Handlers(), s.Inputs())
	c.Hello("tunnel")
	return c
}

// serve runs handle on each connection accepted on a fresh loopback port and returns the port.
func serve(t *testing.T, handle func(c *net.TCPConn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// echo copies its input back and half-closes once the input ended.
func echo(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

// duplex sends p on channel 0 as the agent's credit allows, then EOF, while it collects channel
// 1 and grants credit for it, until the REPLY or ERROR.
func duplex(t *testing.T, cv *channeltest.Conv, p []byte) channeltest.Result {
	t.Helper()
	r := channeltest.Result{Data: map[uint16][]byte{}}
	credit := spec.InitialWindowBytes
	eofSent := false
	for {
		for credit > 0 && len(p) > 0 {
			n := min(credit, spec.DataChunkBytes, len(p))
			cv.Send(p[:n])
			p, credit = p[n:], credit-n
		}
		if len(p) == 0 && !eofSent {
			cv.EOF()
			eofSent = true
		}
		f := cv.Next()
		switch f.Type {
		case spec.TypeCredit:
			credit += int(binary.BigEndian.Uint32(f.Payload))
		case spec.TypeData:
			r.Data[f.Flags] = append(r.Data[f.Flags], f.Payload...)
			cv.Credit(len(f.Payload))
		case spec.TypeEof:
			r.EOFs = append(r.EOFs, f.Flags)
		case spec.TypeEvent:
			var m map[string]any
			_ = json.Unmarshal(f.Payload, &m)
			r.Events = append(r.Events, m)
		case spec.TypeReply:
			_ = json.Unmarshal(f.Payload, &r.Reply)
			return r
		case spec.TypeError:
			t.Fatalf("ERROR %s", f.Payload)
		}
	}
}

func TestEchoThroughALocalServer(t *testing.T) {
	c := newClient(t)
	port := serve(t, echo)
	r := duplex(t, c.Open(map[string]any{"op": "connect", "port": port}), []byte("hello, guest"))
	if len(r.Events) != 1 || r.Events[0]["event"] != "connected" {
		t.Fatalf("events %v", r.Events)
	}
	if string(r.Data[1]) != "hello, guest" || len(r.EOFs) != 1 || r.EOFs[0] != spec.ChannelStdout {
		t.Fatalf("got %s", r)
	}
	if r.Reply["bytes_in"] != float64(12) || r.Reply["bytes_out"] != float64(12) {
		t.Fatalf("reply %v", r.Reply)
	}
}

// The host's EOF reaches the guest server as end of input while its answer still flows back;
// the server's EOF reaches the host as EOF on channel 1 while the host may still send.
func TestHalfCloseBothWays(t *testing.T) {
	c := newClient(t)
	port := serve(t, func(conn *net.TCPConn) {
		got, _ := io.ReadAll(conn)
		_, _ = conn.Write([]byte("got " + string(got)))
	})
	r := duplex(t, c.Open(map[string]any{"op": "connect", "port": port}), []byte("question"))
	if string(r.Data[1]) != "got question" || r.Reply["bytes_in"] != float64(8) {
		t.Fatalf("host half-close: %s", r)
	}

	received := make(chan []byte, 1)
	port = serve(t, func(conn *net.TCPConn) {
		_, _ = conn.Write([]byte("banner"))
		_ = conn.CloseWrite()
		got, _ := io.ReadAll(conn)
		received <- got
	})
	cv := c.Open(map[string]any{"op": "connect", "port": port, "host": "127.0.0.1"})
	var out []byte
	for eof := false; !eof; {
		f := cv.Next()
		switch f.Type {
		case spec.TypeData:
			out = append(out, f.Payload...)
		case spec.TypeEof:
			eof = f.Flags == spec.ChannelStdout
		case spec.TypeReply, spec.TypeError:
			t.Fatalf("stream ended before the host's EOF: %s", f.Payload)
		}
	}
	if string(out) != "banner" {
		t.Fatalf("banner %q", out)
	}
	// The guest has finished sending; the host still can, and the stream waits for its EOF.
	if f, ok := cv.NextWithin(100 * time.Millisecond); ok {
		t.Fatalf("frame %d before the host's EOF", f.Type)
	}
	cv.Send([]byte("late data"))
	cv.EOF()
	r = cv.Collect(true)
	if r.Reply["bytes_in"] != float64(9) || r.Reply["bytes_out"] != float64(6) {
		t.Fatalf("reply %s", r)
	}
	select {
	case got := <-received:
		if string(got) != "late data" {
			t.Fatalf("server got %q", got)
		}
	case <-time.After(channeltest.Timeout):
		t.Fatal("server saw no EOF")
	}
}

func TestLargeTransferBothWays(t *testing.T) {
	c := newClient(t)
	port := serve(t, echo)
	data := make([]byte, 6<<20+4321)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	r := duplex(t, c.Open(map[string]any{"op": "connect", "port": port}), data)
	if !bytes.Equal(r.Data[1], data) {
		t.Fatalf("echoed %d bytes of %d", len(r.Data[1]), len(data))
	}
	if r.Reply["bytes_in"] != float64(len(data)) || r.Reply["bytes_out"] != float64(len(data)) {
		t.Fatalf("reply %v", r.Reply)
	}
}

// Without credit the agent sends one window and reads no more from the socket.
func TestOutputRespectsCredit(t *testing.T) {
	c := newClient(t)
	const size = 3 * spec.InitialWindowBytes
	port := serve(t, func(conn *net.TCPConn) {
		_, _ = conn.Write(make([]byte, size))
		_ = conn.CloseWrite()
		_, _ = io.Copy(io.Discard, conn)
	})
	cv := c.Open(map[string]any{"op": "connect", "port": port})
	got := 0
	for got < spec.InitialWindowBytes {
		if f := cv.Next(); f.Type == spec.TypeData {
			got += len(f.Payload)
		}
	}
	if f, ok := cv.NextWithin(200 * time.Millisecond); ok {
		t.Fatalf("frame %d beyond credit", f.Type)
	}
	cv.Credit(got)
	cv.EOF()
	r := cv.Collect(true)
	if got+len(r.Data[1]) != size || r.Reply["bytes_out"] != float64(size) {
		t.Fatalf("received %d+%d of %d: %v", got, len(r.Data[1]), size, r.Reply)
	}
}

func TestRefusedPort(t *testing.T) {
	c := newClient(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	start := time.Now()
	r := c.Call(map[string]any{"op": "connect", "port": port})
	if r.Code() != spec.CodeRefused || len(r.Events) != 0 {
		t.Fatalf("got %s", r)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("refusal took %v", time.Since(start))
	}
}

func TestBadRequests(t *testing.T) {
	c := newClient(t)
	for _, req := range []map[string]any{
		{"op": "connect"},
		{"op": "connect", "port": 0},
		{"op": "connect", "port": 65536},
		{"op": "connect", "port": "80"},
		{"op": "connect", "port": 80, "host": "10.0.0.1"},
		{"op": "connect", "port": 80, "host": "localhost"},
		{"op": "connect", "port": 80, "host": "example.com"},
		{"op": "connect", "port": 80, "host": 1},
	} {
		if r := c.Call(req); r.Code() != spec.CodeBadRequest {
			t.Errorf("%v: %s", req, r)
		}
	}
}

// CANCEL, and a new session, close the guest socket at once without a reply.
func TestCancelAndNewSessionCloseTheSocket(t *testing.T) {
	c := newClient(t)
	closed := make(chan struct{}, 2)
	port := serve(t, func(conn *net.TCPConn) {
		_, _ = io.Copy(io.Discard, conn)
		closed <- struct{}{}
	})
	for i, end := range []func(cv *channeltest.Conv){
		func(cv *channeltest.Conv) { cv.Cancel() },
		func(*channeltest.Conv) { c.Hello("another") },
	} {
		cv := c.Open(map[string]any{"op": "connect", "port": port})
		if f := cv.Next(); f.Type != spec.TypeEvent {
			t.Fatalf("%d: first frame %d: %s", i, f.Type, f.Payload)
		}
		cv.Send([]byte("partial"))
		end(cv)
		select {
		case <-closed:
		case <-time.After(channeltest.Timeout):
			t.Fatalf("%d: the socket stayed open", i)
		}
		for {
			f, ok := cv.NextWithin(100 * time.Millisecond)
			if !ok {
				break
			}
			if f.Type == spec.TypeReply || f.Type == spec.TypeError {
				t.Fatalf("%d: final frame after the end: %s", i, f.Payload)
			}
		}
	}
}
