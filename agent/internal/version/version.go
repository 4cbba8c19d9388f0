// Package version names this build of the agent.
//
// Version is bumped on every change in behaviour (STYLE section 5), so hostd can tell agents
// apart in logs and the version/health ops; Protocol changes only with the wire format.
package version

import "github.com/isorun/isorun/agent/internal/spec"

// Version is the agent's release, reported by HELLO and the version op.
const Version = "0.2.0"

// Protocol is the wire protocol this agent speaks (protocol.md, wire.json "protocol").
const Protocol = spec.Protocol
