// Package system implements the version, health and identity ops (protocol.md section 5.1).
package system

import (
	"time"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/version"
)

// Service answers questions about the agent itself and applies the guest's identity.
type Service struct {
	started time.Time
	running func() int // processes started through the agent that are still running
	host    Host       // nil when the agent is not the guest's init: identity is refused
}

// New returns the service; running counts live processes for health. host applies the identity
// op's effects; pass nil where the agent does not own the machine (--port on a developer's
// host), so that identity validates its request and then refuses to touch the machine.
func New(running func() int, host Host) *Service {
	return &Service{started: time.Now(), running: running, host: host}
}

// Handlers maps this service's ops to their handlers.
func (s *Service) Handlers() map[string]channel.Handler {
	return map[string]channel.Handler{"version": s.version, "health": s.health, "identity": s.identity}
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
