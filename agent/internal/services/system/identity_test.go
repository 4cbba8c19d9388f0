package system

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/channel/channeltest"
)

// fakeHost records the calls the identity op makes instead of changing the test machine.
type fakeHost struct {
	calls  []string
	seed   []byte
	unixNs int64
	name   string
	id     string
	fail   map[string]error
}

func (f *fakeHost) step(name string) error {
	f.calls = append(f.calls, name)
	return f.fail[name]
}

func (f *fakeHost) AddEntropy(seed []byte) error {
	f.seed = seed
	return f.step("entropy")
}

func (f *fakeHost) SetClock(unixNs int64) (int64, error) {
	f.unixNs = unixNs
	return 1_500_000_000, f.step("clock")
}

func (f *fakeHost) SetHostname(name string) error {
	f.name = name
	return f.step("hostname")
}

func (f *fakeHost) WriteMachineID(id string) (bool, error) {
	f.id = id
	return true, f.step("machine_id")
}

const (
	goodTime = int64(1_750_000_000_123_456_789)
	goodID   = "0123456789abcdef0123456789abcdef"
)

func goodRequest() map[string]any {
	return map[string]any{
		"op":           "identity",
		"entropy":      base64.StdEncoding.EncodeToString(make([]byte, 64)),
		"time_unix_ns": goodTime,
		"hostname":     "sb-fork-1",
		"machine_id":   goodID,
	}
}

func TestIdentityAppliesEveryStepInOrder(t *testing.T) {
	host := &fakeHost{}
	c := channeltest.Start(t, New(func() int { return 0 }, host).Handlers(), nil)
	c.Hello("s")
	r := c.Call(goodRequest())
	if r.Err != nil {
		t.Fatalf("identity: %v", r)
	}
	if r.Reply["ok"] != true || r.Reply["clock_step_ms"] != float64(1500) ||
		r.Reply["entropy_bytes"] != float64(64) || r.Reply["machine_id_written"] != true {
		t.Fatalf("reply: %v", r.Reply)
	}
	if got := strings.Join(host.calls, ","); got != "entropy,clock,hostname,machine_id" {
		t.Fatalf("steps: %s", got)
	}
	if len(host.seed) != 64 || host.unixNs != goodTime || host.name != "sb-fork-1" || host.id != goodID {
		t.Fatalf("arguments: %+v", host)
	}
}

func TestIdentityWithoutMachineIDKeepsTheGuestsOwn(t *testing.T) {
	host := &fakeHost{}
	c := channeltest.Start(t, New(func() int { return 0 }, host).Handlers(), nil)
	c.Hello("s")
	req := goodRequest()
	delete(req, "machine_id")
	r := c.Call(req)
	if r.Err != nil || r.Reply["machine_id_written"] != false {
		t.Fatalf("identity: %v", r)
	}
	if got := strings.Join(host.calls, ","); got != "entropy,clock,hostname" {
		t.Fatalf("steps: %s", got)
	}
}

func TestIdentityRejectsMalformedFieldsBeforeTouchingAnything(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	cases := []struct {
		name, field string
		value       any // nil: leave the field out
		want        string
	}{
		{"entropy missing", "entropy", nil, `"entropy": required`},
		{"entropy not a string", "entropy", 42, `"entropy": must be a string`},
		{"entropy not base64", "entropy", "not base64!", "standard base64"},
		{"entropy unpadded", "entropy", strings.TrimRight(b64(40), "="), "standard base64"},
		{"entropy url alphabet", "entropy", strings.Repeat("-_", 22), "standard base64"},
		{"entropy too short", "entropy", b64(31), "32..512 bytes, got 31"},
		{"entropy too long", "entropy", b64(513), "32..512 bytes, got 513"},
		{"entropy empty", "entropy", "", "32..512 bytes, got 0"},
		{"time missing", "time_unix_ns", nil, `"time_unix_ns": required`},
		{"time a string", "time_unix_ns", "1750000000", "must be an integer"},
		{"time a fraction", "time_unix_ns", 1_750_000_000.5, "must be an integer"},
		{"time negative", "time_unix_ns", -1, "at or after 2000-01-01"},
		{"time in seconds", "time_unix_ns", 1_750_000_000, "at or after 2000-01-01"},
		{"time beyond int64", "time_unix_ns", 1e19, "must be an integer"},
		{"hostname missing", "hostname", nil, `"hostname": required`},
		{"hostname empty", "hostname", "", "DNS label"},
		{"hostname upper case", "hostname", "Box", "DNS label"},
		{"hostname with a dot", "hostname", "a.b", "DNS label"},
		{"hostname leading dash", "hostname", "-a", "DNS label"},
		{"hostname trailing dash", "hostname", "a-", "DNS label"},
		{"hostname too long", "hostname", strings.Repeat("a", 64), "DNS label"},
		{"hostname with NUL", "hostname", "a\x00b", "DNS label"},
		{"hostname a list", "hostname", []string{"a"}, "must be a string"},
		{"machine_id empty", "machine_id", "", "32 lowercase hex"},
		{"machine_id short", "machine_id", goodID[:31], "32 lowercase hex"},
		{"machine_id long", "machine_id", goodID + "0", "32 lowercase hex"},
		{"machine_id upper case", "machine_id", strings.ToUpper(goodID), "32 lowercase hex"},
		{"machine_id not hex", "machine_id", "g" + goodID[1:], "32 lowercase hex"},
		{"machine_id uuid form", "machine_id", "01234567-89ab-cdef-0123-456789abcdef", "32 lowercase hex"},
		{"machine_id null id", "machine_id", strings.Repeat("0", 32), "not all zero"},
	}
	host := &fakeHost{}
	c := channeltest.Start(t, New(func() int { return 0 }, host).Handlers(), nil)
	c.Hello("s")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := goodRequest()
			if tc.value == nil {
				delete(req, tc.field)
			} else {
				req[tc.field] = tc.value
			}
			r := c.Call(req)
			if r.Code() != "bad_request" || !strings.Contains(r.Err.Message, tc.want) ||
				!strings.Contains(r.Err.Message, `"`+tc.field+`"`) {
				t.Fatalf("want bad_request naming %q and saying %q, got %v", tc.field, tc.want, r)
			}
		})
	}
	// A JSON null counts as absent.
	req := goodRequest()
	req["hostname"] = nil
	if r := c.Call(req); r.Code() != "bad_request" || !strings.Contains(r.Err.Message, "required") {
		t.Fatalf("null hostname: %v", r)
	}
	if len(host.calls) != 0 {
		t.Fatalf("a malformed request reached the host: %v", host.calls)
	}
}

func TestIdentityAcceptsTheBounds(t *testing.T) {
	for _, req := range []map[string]any{
		{"entropy": base64.StdEncoding.EncodeToString(make([]byte, 32))},
		{"entropy": base64.StdEncoding.EncodeToString(make([]byte, 512))},
		{"time_unix_ns": int64(946_684_800_000_000_000)},
		{"time_unix_ns": int64(1<<63 - 1)},
		{"hostname": "a"},
		{"hostname": strings.Repeat("a", 63)},
		{"hostname": "0-9"},
		{"machine_id": strings.Repeat("0", 31) + "1"},
	} {
		full := goodRequest()
		for k, v := range req {
			full[k] = v
		}
		r, err := parseIdentity(mustRequest(t, full))
		if err != nil {
			t.Fatalf("%v: %v", req, err)
		}
		if r.hostname == "" || r.machineID == "" || len(r.entropy) < 32 || r.timeUnixNs <= 0 {
			t.Fatalf("%v parsed as %+v", req, r)
		}
	}
}

func TestIdentityErrorNamesTheFailedStep(t *testing.T) {
	host := &fakeHost{fail: map[string]error{"clock": errors.New("clock_settime(CLOCK_REALTIME): no errno here")}}
	c := channeltest.Start(t, New(func() int { return 0 }, host).Handlers(), nil)
	c.Hello("s")
	r := c.Call(goodRequest())
	if r.Code() != "io_error" || !strings.Contains(r.Err.Message, `identity step "clock" failed: clock_settime`) {
		t.Fatalf("clock failure: %v", r)
	}
	if got := strings.Join(host.calls, ","); got != "entropy,clock" {
		t.Fatalf("steps after a failure: %s", got)
	}

	host = &fakeHost{fail: map[string]error{"entropy": fmt.Errorf("ioctl RNDADDENTROPY on /dev/urandom: %w", syscall.EPERM)}}
	c = channeltest.Start(t, New(func() int { return 0 }, host).Handlers(), nil)
	c.Hello("s")
	r = c.Call(goodRequest())
	if r.Code() != "permission_denied" || !strings.Contains(r.Err.Message, `identity step "entropy" failed: ioctl RNDADDENTROPY`) {
		t.Fatalf("entropy failure: %v", r)
	}
	if got := strings.Join(host.calls, ","); got != "entropy" {
		t.Fatalf("steps after a failure: %s", got)
	}
}

func TestIdentityOutsideTheGuestIsRefusedAfterValidation(t *testing.T) {
	c := channeltest.Start(t, New(func() int { return 0 }, nil).Handlers(), nil)
	c.Hello("s")
	bad := goodRequest()
	bad["hostname"] = "-"
	if r := c.Call(bad); r.Code() != "bad_request" {
		t.Fatalf("malformed: %v", r)
	}
	if r := c.Call(goodRequest()); r.Code() != "permission_denied" || !strings.Contains(r.Err.Message, "not the guest's init") {
		t.Fatalf("no host: %v", r)
	}
}

// The machine-id write needs no privilege, so the real implementation is tested in a temp dir.
func TestGuestHostWritesMachineIDAtomically(t *testing.T) {
	etc := t.TempDir()
	target := filepath.Join(etc, "machine-id")
	if err := os.WriteFile(target, []byte("old\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	written, err := GuestHost{Etc: etc}.WriteMachineID(goodID)
	if err != nil || !written {
		t.Fatalf("write: %v %v", written, err)
	}
	got, err := os.ReadFile(target)
	if err != nil || string(got) != goodID+"\n" {
		t.Fatalf("content %q %v", got, err)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o444 {
		t.Fatalf("mode %v", fi.Mode())
	}
	entries, _ := os.ReadDir(etc)
	if len(entries) != 1 {
		t.Fatalf("temp file left behind: %v", entries)
	}

	written, err = GuestHost{Etc: filepath.Join(etc, "absent")}.WriteMachineID(goodID)
	if err != nil || written {
		t.Fatalf("without /etc: %v %v", written, err)
	}
}

func mustRequest(t *testing.T, fields map[string]any) channel.Request {
	t.Helper()
	payload, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	req, err := channel.ParseRequest(payload)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
