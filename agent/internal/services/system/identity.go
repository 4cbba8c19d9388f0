package system

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// Bounds of the identity request (protocol.md section 5.1).
const (
	minEntropyBytes = 32  // 256 bits: enough to initialise the CRNG on its own
	maxEntropyBytes = 512 // more buys nothing; the pool hashes it down anyway
	// minTimeUnixNs is 2000-01-01T00:00:00Z. An earlier clock is a host bug, not a choice.
	minTimeUnixNs = 946_684_800_000_000_000
	machineIDLen  = 32
)

// hostnamePattern is a DNS label as hostd's vm/cmdline.py accepts it for isorun.hostname.
var hostnamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Host applies the identity op's effects. The guest's implementation makes syscalls that need
// root and would change the machine they run on; tests replace it.
type Host interface {
	// AddEntropy credits seed to the kernel's pool (8 bits per byte) and forces a CRNG reseed.
	AddEntropy(seed []byte) error
	// SetClock steps CLOCK_REALTIME to unixNs and returns the step applied (new - old).
	SetClock(unixNs int64) (stepNs int64, err error)
	// SetHostname sets the kernel's hostname (uname -n).
	SetHostname(name string) error
	// WriteMachineID replaces /etc/machine-id atomically; written is false when there is no /etc.
	WriteMachineID(id string) (written bool, err error)
}

// identityRequest is a validated identity request.
type identityRequest struct {
	entropy    []byte
	timeUnixNs int64
	hostname   string
	machineID  string
}

// parseIdentity validates every field before anything is applied, so a malformed request
// leaves the guest untouched.
func parseIdentity(req channel.Request) (identityRequest, error) {
	var r identityRequest
	for _, name := range []string{"entropy", "time_unix_ns", "hostname"} {
		if !req.Has(name) {
			return r, channel.BadRequest(name, "required")
		}
	}
	encoded, err := req.String("entropy", "")
	if err != nil {
		return r, err
	}
	r.entropy, err = base64.StdEncoding.Strict().DecodeString(encoded)
	if err != nil {
		return r, channel.BadRequest("entropy", "must be standard base64 with padding: %v", err)
	}
	if n := len(r.entropy); n < minEntropyBytes || n > maxEntropyBytes {
		return r, channel.BadRequest("entropy", "must decode to %d..%d bytes, got %d",
			minEntropyBytes, maxEntropyBytes, n)
	}
	if r.timeUnixNs, err = req.Int("time_unix_ns", 0); err != nil {
		return r, err
	}
	if r.timeUnixNs < minTimeUnixNs {
		return r, channel.BadRequest("time_unix_ns", "must be at or after 2000-01-01 (%d), got %d",
			int64(minTimeUnixNs), r.timeUnixNs)
	}
	if r.hostname, err = req.String("hostname", ""); err != nil {
		return r, err
	}
	if !hostnamePattern.MatchString(r.hostname) {
		return r, channel.BadRequest("hostname",
			"must be a DNS label (1..63 of a-z, 0-9 and '-', not starting or ending with '-'), got %q",
			r.hostname)
	}
	if r.machineID, err = req.String("machine_id", ""); err != nil {
		return r, err
	}
	if req.Has("machine_id") && !validMachineID(r.machineID) {
		return r, channel.BadRequest("machine_id",
			"must be %d lowercase hex characters and not all zero, got %q", machineIDLen, r.machineID)
	}
	return r, nil
}

// validMachineID follows machine-id(5): 32 lowercase hex digits; all zeros is the null ID,
// which systemd rejects.
func validMachineID(id string) bool {
	if len(id) != machineIDLen || strings.Trim(id, "0") == "" {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// identity gives a restored or forked guest fresh entropy, the host's wall clock, a hostname and
// (unless the request leaves it out: a pool entry got its own when it was warmed) a machine-id. Entropy comes first, so that nothing after it (nor anything the host runs next)
// draws from the RNG state the snapshot shares with its siblings.
func (s *Service) identity(st *channel.Stream, req channel.Request) (any, error) {
	r, err := parseIdentity(req)
	if err != nil {
		return nil, err
	}
	if s.host == nil {
		return nil, channel.Errorf(spec.CodePermissionDenied,
			"identity: the agent is not the guest's init (it serves --port); refusing to change this machine")
	}
	if err := s.host.AddEntropy(r.entropy); err != nil {
		return nil, stepFailed("entropy", err)
	}
	stepNs, err := s.host.SetClock(r.timeUnixNs)
	if err != nil {
		return nil, stepFailed("clock", err)
	}
	if err := s.host.SetHostname(r.hostname); err != nil {
		return nil, stepFailed("hostname", err)
	}
	written := false
	if r.machineID != "" {
		if written, err = s.host.WriteMachineID(r.machineID); err != nil {
			return nil, stepFailed("machine_id", err)
		}
	}
	return map[string]any{
		"ok":                 true,
		"entropy_bytes":      len(r.entropy),
		"clock_step_ms":      stepNs / 1_000_000,
		"machine_id_written": written,
	}, nil
}

// stepFailed is the ERROR for a failed step: the code comes from the errno as for files
// (EPERM permission_denied, else mostly io_error); the message names the step. The steps before
// it have taken effect.
func stepFailed(step string, err error) error {
	e := channel.FromOS(step, err)
	return &channel.Error{Code: e.Code, Message: fmt.Sprintf("identity step %q failed: %v", step, err)}
}
