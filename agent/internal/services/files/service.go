// Package files implements the file ops (protocol.md section 5.5): read and write stream file
// content under credit; stat, list, mkdir, remove, rename and chmod are single replies.
//
// All paths are absolute paths in the guest's root and are used as given: the agent is root
// and the whole guest is the sandbox, so there is nothing to confine them to. OS errors map to
// spec codes through channel.FromOS, with the path in the message.
package files

import (
	"log"

	"github.com/isorun/isorun/agent/internal/channel"
)

// Service is stateless; it exists to mount the handlers like the other services.
type Service struct {
	log *log.Logger
}

// New returns the file service.
func New(logger *log.Logger) *Service {
	return &Service{log: logger}
}

// Inputs names the ops that read DATA on channel 0 (channel.Inputs): write.
func (s *Service) Inputs() channel.Inputs {
	return channel.Inputs{"write": nil}
}

// Handlers maps this service's ops to their handlers.
func (s *Service) Handlers() map[string]channel.Handler {
	return map[string]channel.Handler{
		"read":   s.read,
		"write":  s.write,
		"list":   s.list,
		"stat":   s.stat,
		"mkdir":  s.mkdir,
		"remove": s.remove,
		"rename": s.rename,
		"chmod":  s.chmod,
	}
}
