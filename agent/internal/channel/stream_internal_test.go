package channel

import (
	"context"
	"io"
	"log"
	"testing"

	"github.com/isorun/isorun/agent/internal/spec"
)

// DATA on channel 0 is queued only for requests that read input (Session.Inputs). Before, every
// stream queued up to a window, so max_streams idle reads or execs without stdin could hold
// 1024 x 256 KiB of host bytes in a small guest.
func TestDataDroppedUnlessOpReadsInput(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := func(st *Stream, req Request) (any, error) {
		<-st.Context().Done()
		return nil, nil
	}
	s := NewSession(nil, io.Discard, log.New(io.Discard, "", 0), map[string]Handler{"in": wait, "out": wait, "maybe": wait})
	s.Inputs = Inputs{"in": nil, "maybe": func(req Request) bool {
		v, _ := req.Bool("stdin", false)
		return v
	}}
	s.ctx = ctx
	go s.bgWrite(ctx)

	requests := map[uint32]string{
		1: `{"op":"in"}`, 2: `{"op":"out"}`, 3: `{"op":"maybe"}`, 4: `{"op":"maybe","stdin":true}`,
	}
	want := map[uint32]int{1: spec.InitialWindowBytes, 2: 0, 3: 0, 4: spec.InitialWindowBytes}
	for id, body := range requests {
		s.handle(ctx, Frame{Type: spec.TypeRequest, Stream: id, Payload: []byte(body)})
		for sent := 0; sent < spec.InitialWindowBytes; sent += spec.DataChunkBytes {
			s.handle(ctx, Frame{Type: spec.TypeData, Stream: id, Flags: spec.ChannelInput, Payload: make([]byte, spec.DataChunkBytes)})
		}
	}
	for id, n := range want {
		s.mu.Lock()
		st := s.streams[id]
		s.mu.Unlock()
		if st == nil {
			t.Fatalf("stream %d (%s) is gone", id, requests[id])
		}
		st.mu.Lock()
		queued := 0
		for _, p := range st.inbox {
			queued += len(p)
		}
		closed, allowed, consumed := st.closed, st.inAllowed, st.consumed
		st.mu.Unlock()
		if queued != n || closed {
			t.Errorf("%s: %d bytes queued (closed %v), want %d", requests[id], queued, closed, n)
		}
		// Dropped bytes still spent credit and count as consumed.
		if allowed != 0 || (n == 0 && consumed != spec.InitialWindowBytes) {
			t.Errorf("%s: inAllowed %d, consumed %d", requests[id], allowed, consumed)
		}
	}
}
