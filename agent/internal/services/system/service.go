// Package system implements the version and health ops (protocol.md section 5.1).
package system

import (
	"time"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/version"
)

// Service answers questions about the agent itself.
type Service struct {
	started time.Time
	running func() int // processes started through the agent that are still running
}

// New returns the service; running counts live processes for health.
func New(running func() int) *Service {
	return &Service{started: time.Now(), running: running}
}

// Handlers maps this service's ops to their handlers.
func (s *Service) Handlers() map[string]channel.Handler {
	return map[string]channel.Handler{"version": s.version, "health": s.health}
}

func (s *Service) version(st *channel.Stream, req channel.Request) (any, error) {
	return map[string]any{"agent_version": version.Version, "protocol": version.Protocol}, nil
}

func (s *Service) health(st *channel.Stream, req channel.Request) (any, error) {
	return map[string]any{
		"ok":        true,
		"uptime_ms": time.Since(s.started).Milliseconds(),
		"processes": s.running(),
	}, nil
}
