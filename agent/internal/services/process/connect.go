package process

import (
	"context"
	"errors"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

func (s *Service) attach(st *channel.Stream, req channel.Request) (any, error) {
	p, err := s.find(req)
	if err != nil {
		return nil, err
	}
	sub := p.subscribe()
	if err := st.Event(map[string]any{"event": "start", "pid": p.Pid}); err != nil {
		p.detach(sub)
		return nil, nil
	}
	return p.serve(st, sub)
}

// subscribe makes the caller's stream the attached one, kicking out any other. It comes
// before the start event: a host that learns the pid from that event and attaches at once
// must find this stream already attached, and take over from it, not be taken over by it.
func (p *Process) subscribe() *subscription {
	sub := &subscription{kicked: make(chan struct{})}
	p.mu.Lock()
	if p.sub != nil {
		close(p.sub.kicked)
	}
	p.sub = sub
	p.notifyLocked()
	p.mu.Unlock()
	return sub
}

// serve delivers the process's output to st, attached as sub, until the end REPLY
// (protocol.md sections 5.2 and 5.3): the ring first, then live output, then EOF on channels
// 1 and 2 once both pipes are closed and the process has been reaped.
//
// It returns nil, nil when the stream was dropped: the process is detached and keeps running.
func (p *Process) serve(st *channel.Stream, sub *subscription) (any, error) {
	defer p.detach(sub)

	for {
		p.mu.Lock()
		select {
		case <-sub.kicked:
			p.mu.Unlock()
			return nil, channel.Errorf(spec.CodeDetached, "another stream attached to process %d", p.Pid)
		default:
		}
		if p.ring.size > 0 {
			p.mu.Unlock()
			n, err := st.WaitCredit(sub.kicked)
			if errors.Is(err, context.Canceled) {
				continue
			}
			if err != nil {
				return nil, nil
			}
			p.mu.Lock()
			if p.ring.size == 0 || p.sub != sub {
				p.mu.Unlock()
				continue
			}
			ch, data := p.ring.take(min(n, spec.DataChunkBytes))
			p.notifyLocked()
			p.mu.Unlock()
			if err := st.Send(ch, data); err != nil {
				p.mu.Lock()
				p.ring.pushFront(ch, data)
				p.mu.Unlock()
				return nil, nil
			}
			continue
		}
		if p.exited && p.open == 0 {
			reply := p.endReplyLocked()
			p.mu.Unlock()
			if st.CloseChannel(spec.ChannelStdout) != nil || st.CloseChannel(spec.ChannelStderr) != nil {
				return nil, nil
			}
			return reply, nil
		}
		w := p.changed
		p.mu.Unlock()
		select {
		case <-w:
		case <-sub.kicked:
		case <-st.Context().Done():
			return nil, nil
		}
	}
}

// detach leaves the process unattended: from now on the pumps never wait and the ring keeps
// only the newest detached_buffer_bytes.
func (p *Process) detach(sub *subscription) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sub != sub {
		return
	}
	p.sub = nil
	p.ring.trim(spec.DetachedBufferBytes)
	p.notifyLocked()
}
