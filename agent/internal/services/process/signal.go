package process

import (
	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

func (s *Service) signal(st *channel.Stream, req channel.Request) (any, error) {
	p, err := s.find(req)
	if err != nil {
		return nil, err
	}
	sig, err := req.Int("signal", 0)
	if err != nil {
		return nil, err
	}
	if sig < 1 || sig > 64 {
		return nil, channel.BadRequest("signal", "must be within 1..64, got %d", sig)
	}
	if err := p.killGroup(unix.Signal(sig)); err != nil {
		return nil, channel.Errorf(spec.CodeIoError, "signal %d to process group %d: %v", sig, p.Pid, err)
	}
	return struct{}{}, nil
}
