package system

import (
	"testing"

	"github.com/isorun/isorun/agent/internal/channel/channeltest"
	"github.com/isorun/isorun/agent/internal/version"
)

func TestVersionAndHealth(t *testing.T) {
	c := channeltest.Start(t, New(func() int { return 3 }, nil).Handlers(), nil)
	c.Hello("s")
	r := c.Call(map[string]any{"op": "version"})
	if r.Reply["agent_version"] != version.Version || r.Reply["protocol"] != float64(1) {
		t.Fatalf("version: %v", r)
	}
	r = c.Call(map[string]any{"op": "health"})
	if r.Reply["ok"] != true || r.Reply["processes"] != float64(3) || r.Reply["uptime_ms"] == nil {
		t.Fatalf("health: %v", r)
	}
}
