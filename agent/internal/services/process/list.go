package process

import (
	"github.com/isorun/isorun/agent/internal/channel"
)

func (s *Service) ps(st *channel.Stream, req channel.Request) (any, error) {
	procs := s.snapshot()
	out := make([]map[string]any, 0, len(procs))
	for _, p := range procs {
		p.mu.Lock()
		var tag, code, sig any
		if p.Tag != "" {
			tag = p.Tag
		}
		if p.exited {
			end := p.endReplyLocked()
			code, sig = end["exit_code"], end["signal"]
		}
		out = append(out, map[string]any{
			"pid": p.Pid, "tag": tag, "argv": p.Argv, "running": !p.exited,
			"exit_code": code, "signal": sig,
		})
		p.mu.Unlock()
	}
	return map[string]any{"processes": out}, nil
}
