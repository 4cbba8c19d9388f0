package channel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"sync"
	"testing"
	"time"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/channel/channeltest"
	"github.com/isorun/isorun/agent/internal/spec"
)

// testInputs: of the test ops, only sink reads channel 0.
var testInputs = channel.Inputs{"sink": nil}

func testHandlers() map[string]channel.Handler {
	return map[string]channel.Handler{
		"echo": func(st *channel.Stream, req channel.Request) (any, error) {
			s, err := req.String("text", "")
			if err != nil {
				return nil, err
			}
			return map[string]any{"text": s}, nil
		},
		"panic": func(st *channel.Stream, req channel.Request) (any, error) {
			var m map[string]int
			m["boom"] = 1
			return nil, nil
		},
		// sink consumes channel 0 and replies with its length.
		"sink": func(st *channel.Stream, req channel.Request) (any, error) {
			n := 0
			for {
				p, err := st.Recv()
				if errors.Is(err, io.EOF) {
					return map[string]any{"bytes": n}, nil
				}
				if err != nil {
					return nil, err
				}
				n += len(p)
			}
		},
		// source sends `bytes` bytes on channel 1.
		"source": func(st *channel.Stream, req channel.Request) (any, error) {
			n, err := req.Int("bytes", 0)
			if err != nil {
				return nil, err
			}
			if err := st.Send(spec.ChannelStdout, bytes.Repeat([]byte("x"), int(n))); err != nil {
				return nil, err
			}
			return nil, st.CloseChannel(spec.ChannelStdout)
		},
		"block": func(st *channel.Stream, req channel.Request) (any, error) {
			<-st.Context().Done()
			return nil, nil
		},
	}
}

func TestHelloAndRequests(t *testing.T) {
	c := channeltest.Start(t, testHandlers(), testInputs)
	h := c.Hello("s1")
	if h["protocol"] != float64(1) || h["agent_version"] == "" {
		t.Fatalf("hello reply %v", h)
	}
	if r := c.Call(map[string]any{"op": "echo", "text": "hi"}); r.Reply["text"] != "hi" {
		t.Fatalf("echo: %v", r)
	}
	if r := c.Call(map[string]any{"op": "echo", "text": 5}); r.Code() != spec.CodeBadRequest {
		t.Fatalf("wrong type: %v", r)
	}
	if r := c.Call(map[string]any{"op": "nope"}); r.Code() != spec.CodeBadRequest {
		t.Fatalf("unknown op: %v", r)
	}
	if r := c.Call(map[string]any{"op": "panic"}); r.Code() != spec.CodeInternal {
		t.Fatalf("panic: %v", r)
	}
	cv := c.Open(nil)
	c.WriteFrame(channel.Frame{Type: spec.TypeRequest, Stream: cv.ID + 100, Payload: []byte("{nope")})
	if r := c.Call(map[string]any{"op": "echo", "text": "still alive"}); r.Reply["text"] != "still alive" {
		t.Fatalf("after bad JSON: %v", r)
	}
}

func TestInboundCreditAndFlowControl(t *testing.T) {
	c := channeltest.Start(t, testHandlers(), testInputs)
	c.Hello("s")
	cv := c.Open(map[string]any{"op": "sink"})
	// 4 windows' worth, sending only what the agent has granted.
	total, allowed := 0, spec.InitialWindowBytes
	chunk := bytes.Repeat([]byte("a"), spec.DataChunkBytes)
	for total < 4*spec.InitialWindowBytes {
		for allowed < len(chunk) {
			f := cv.Next()
			if f.Type != spec.TypeCredit {
				t.Fatalf("frame %d before credit", f.Type)
			}
			allowed += int(uint32(f.Payload[0])<<24 | uint32(f.Payload[1])<<16 | uint32(f.Payload[2])<<8 | uint32(f.Payload[3]))
		}
		cv.Send(chunk)
		allowed -= len(chunk)
		total += len(chunk)
	}
	cv.EOF()
	if r := cv.Collect(false); r.Reply["bytes"] != float64(total) {
		t.Fatalf("sink: %v", r)
	}

	over := c.Open(map[string]any{"op": "block"}) // never consumes, so never grants
	over.Send(make([]byte, spec.InitialWindowBytes))
	over.Send([]byte("one too many"))
	if r := over.Collect(false); r.Code() != spec.CodeFlowControl {
		t.Fatalf("overrun: %v", r)
	}
}

func TestOutboundCreditBlocksOnlyItsStream(t *testing.T) {
	c := channeltest.Start(t, testHandlers(), testInputs)
	c.Hello("s")
	slow := c.Open(map[string]any{"op": "source", "bytes": 3 * spec.InitialWindowBytes})
	got := 0
	for got < spec.InitialWindowBytes {
		f := slow.Next()
		if f.Type != spec.TypeData {
			t.Fatalf("frame %d", f.Type)
		}
		got += len(f.Payload)
	}
	if f, ok := slow.NextWithin(100 * time.Millisecond); ok {
		t.Fatalf("agent sent frame %d beyond its credit", f.Type)
	}
	if r := c.Call(map[string]any{"op": "source", "bytes": 1000}); len(r.Data[1]) != 1000 {
		t.Fatalf("other stream starved: %v", r)
	}
	slow.Credit(2 * spec.InitialWindowBytes)
	if r := slow.Collect(true); r.Reply == nil || got+len(r.Data[1]) != 3*spec.InitialWindowBytes {
		t.Fatalf("slow stream: %d + %v", got, r)
	}
}

func TestCancelAndHelloDropStreams(t *testing.T) {
	c := channeltest.Start(t, testHandlers(), testInputs)
	c.Hello("a")
	cv := c.Open(map[string]any{"op": "block"})
	cv.Cancel()
	if f, ok := cv.NextWithin(100 * time.Millisecond); ok {
		t.Fatalf("cancelled stream sent frame %d", f.Type)
	}
	cv2 := c.Open(map[string]any{"op": "block"})
	c.Hello("b")
	if f, ok := cv2.NextWithin(100 * time.Millisecond); ok {
		t.Fatalf("stream of the old session sent frame %d", f.Type)
	}
	if r := c.Call(map[string]any{"op": "echo", "text": "b"}); r.Reply["text"] != "b" {
		t.Fatalf("new session: %v", r)
	}
}

func TestBusy(t *testing.T) {
	c := channeltest.Start(t, testHandlers(), testInputs)
	c.Hello("s")
	for i := 0; i < spec.MaxStreams; i++ {
		c.Open(map[string]any{"op": "block"})
	}
	if r := c.Call(map[string]any{"op": "echo"}); r.Code() != spec.CodeBusy {
		t.Fatalf("stream %d: %v", spec.MaxStreams+1, r)
	}
}

// The port reader survives EOFs and errors (a virtio-serial port with no host) and goes on
// serving once bytes arrive again.
func TestServeSurvivesPortEOF(t *testing.T) {
	pr, pw := io.Pipe()
	port := &flakyPort{r: pr}
	out := &lockedBuffer{}
	sess := channel.NewSession(port, out, log.New(io.Discard, "", 0), testHandlers())
	sess.RetryDelay = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = sess.Serve(ctx) }()
	hello, _ := channel.Encode(channel.Frame{Type: spec.TypeHello, Payload: []byte(`{"session":"x"}`)})
	half := hello[:10]
	go func() {
		_, _ = pw.Write(half)
		port.setEOF(5)
		_, _ = pw.Write(hello)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if bytes.Contains(out.Bytes(), []byte(`"session":"x"`)) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no HELLO reply after the port came back")
}

// flakyPort returns EOF for a while, as virtio-serial does while the host is away.
type flakyPort struct {
	r    io.Reader
	mu   sync.Mutex
	eofs int
}

func (p *flakyPort) setEOF(n int) {
	p.mu.Lock()
	p.eofs = n
	p.mu.Unlock()
}

func (p *flakyPort) Read(b []byte) (int, error) {
	p.mu.Lock()
	if p.eofs > 0 {
		p.eofs--
		p.mu.Unlock()
		return 0, io.EOF
	}
	p.mu.Unlock()
	return p.r.Read(b)
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

func TestRequestValidation(t *testing.T) {
	req, err := channel.ParseRequest([]byte(`{"op":"x","n":1.5,"p":"rel","m":70000,"ok":"yes","l":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	checks := []func() error{
		func() error { _, err := req.Int("n", 0); return err },
		func() error { _, err := req.Path("p"); return err },
		func() error { _, err := req.Path("missing"); return err },
		func() error { _, err := req.Mode("m", 0); return err },
		func() error { _, err := req.Bool("ok", false); return err },
		func() error { _, err := req.Strings("l"); return err },
	}
	for i, c := range checks {
		var e *channel.Error
		if err := c(); !errors.As(err, &e) || e.Code != spec.CodeBadRequest {
			t.Errorf("check %d: %v", i, err)
		}
	}
	for _, bad := range []string{`[]`, `null`, `{"op":3}`, `{}`, `{"op":""}`} {
		if _, err := channel.ParseRequest([]byte(bad)); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
	b, _ := json.Marshal(channel.FromOS("/x", errors.New("plain")))
	if !bytes.Contains(b, []byte(spec.CodeIoError)) {
		t.Errorf("FromOS: %s", b)
	}
}
