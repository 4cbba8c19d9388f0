package process

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/channel/channeltest"
	"github.com/isorun/isorun/agent/internal/spec"
)

// shellWait bounds every wait in these tests; they normally take milliseconds.
const shellWait = 3 * time.Second

var shellEnv = map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

func newShellTestService(t *testing.T) (*Service, *channeltest.Client) {
	t.Helper()
	s, c := newTestService(t)
	t.Cleanup(func() {
		for _, sh := range s.shellSnapshot() {
			if sh.running() {
				_ = unix.Kill(-sh.Pid, unix.SIGKILL)
			}
			sh.master.Close()
		}
	})
	return s, c
}

// openTestShell runs shell_open and returns the id and pid.
func openTestShell(t *testing.T, c *channeltest.Client, req map[string]any) (string, int) {
	t.Helper()
	req["op"] = "shell_open"
	if _, ok := req["env"]; !ok {
		req["env"] = shellEnv
	}
	r := c.Call(req)
	if r.Reply == nil {
		t.Fatalf("shell_open %v: %v", req["argv"], r)
	}
	id, _ := r.Reply["id"].(string)
	if !regexp.MustCompile(`^sh-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("id %q", id)
	}
	pid, _ := r.Reply["pid"].(float64)
	if pid <= 0 {
		t.Fatalf("pid %v", r.Reply)
	}
	return id, int(pid)
}

// term is an attached stream as the host sees it.
type term struct {
	t      *testing.T
	cv     *channeltest.Conv
	credit bool // grant back every DATA byte at once
	start  map[string]any
	out    []byte
	events []map[string]any
	eof    bool
	reply  map[string]any
	err    *channel.Error
}

func attachShell(t *testing.T, c *channeltest.Client, req map[string]any) *term {
	t.Helper()
	req["op"] = "shell_attach"
	tm := &term{t: t, cv: c.Open(req), credit: true}
	f, ok := tm.cv.NextWithin(shellWait)
	if !ok {
		t.Fatalf("shell_attach %v: no frame", req)
	}
	if f.Type != spec.TypeEvent {
		t.Fatalf("shell_attach %v: first frame is type %d: %s", req, f.Type, f.Payload)
	}
	if err := json.Unmarshal(f.Payload, &tm.start); err != nil || tm.start["event"] != "start" {
		t.Fatalf("start event: %s", f.Payload)
	}
	return tm
}

// step handles one frame; false when none came within d or the stream has ended.
func (tm *term) step(d time.Duration) bool {
	tm.t.Helper()
	if tm.reply != nil || tm.err != nil {
		return false
	}
	f, ok := tm.cv.NextWithin(d)
	if !ok {
		return false
	}
	switch f.Type {
	case spec.TypeEvent:
		var m map[string]any
		if err := json.Unmarshal(f.Payload, &m); err != nil {
			tm.t.Fatalf("bad EVENT %q", f.Payload)
		}
		tm.events = append(tm.events, m)
	case spec.TypeData:
		if f.Flags != spec.ChannelStdout {
			tm.t.Fatalf("DATA on channel %d", f.Flags)
		}
		if tm.eof {
			tm.t.Fatalf("DATA after EOF")
		}
		tm.out = append(tm.out, f.Payload...)
		if tm.credit && len(f.Payload) > 0 {
			tm.cv.Credit(len(f.Payload))
		}
	case spec.TypeEof:
		if f.Flags != spec.ChannelStdout {
			tm.t.Fatalf("EOF on channel %d", f.Flags)
		}
		tm.eof = true
	case spec.TypeReply:
		if err := json.Unmarshal(f.Payload, &tm.reply); err != nil {
			tm.t.Fatalf("bad REPLY %q", f.Payload)
		}
	case spec.TypeError:
		tm.err = &channel.Error{}
		_ = json.Unmarshal(f.Payload, tm.err)
	case spec.TypeCredit:
	default:
		tm.t.Fatalf("unexpected frame type %d", f.Type)
	}
	return true
}

func (tm *term) waitOut(want string) {
	tm.t.Helper()
	deadline := time.Now().Add(shellWait)
	for !bytes.Contains(tm.out, []byte(want)) {
		if !tm.step(time.Until(deadline)) {
			tm.t.Fatalf("output %q never came; got %q events %v reply %v err %v", want, tm.out, tm.events, tm.reply, tm.err)
		}
	}
}

func (tm *term) waitEvent(name string) map[string]any {
	tm.t.Helper()
	deadline := time.Now().Add(shellWait)
	for {
		for i, ev := range tm.events {
			if ev["event"] == name {
				tm.events = append(tm.events[:i:i], tm.events[i+1:]...)
				return ev
			}
		}
		if !tm.step(time.Until(deadline)) {
			tm.t.Fatalf("no %s event; events %v", name, tm.events)
		}
	}
}

// waitEnd reads to the REPLY, which must follow EOF on channel 1.
func (tm *term) waitEnd() map[string]any {
	tm.t.Helper()
	deadline := time.Now().Add(shellWait)
	for tm.reply == nil && tm.err == nil {
		if !tm.step(time.Until(deadline)) {
			tm.t.Fatalf("no end; output %q events %v", tm.out, tm.events)
		}
	}
	if tm.err != nil {
		tm.t.Fatalf("ERROR %v", tm.err)
	}
	if !tm.eof {
		tm.t.Fatalf("REPLY without EOF on channel 1")
	}
	return tm.reply
}

func (tm *term) typeIn(s string) { tm.cv.Send([]byte(s)) }

func callOK(t *testing.T, c *channeltest.Client, req map[string]any) map[string]any {
	t.Helper()
	r := c.Call(req)
	if r.Reply == nil {
		t.Fatalf("%v: %v", req, r)
	}
	return r.Reply
}

func listShells(t *testing.T, c *channeltest.Client) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, v := range callOK(t, c, map[string]any{"op": "shell_list"})["shells"].([]any) {
		out = append(out, v.(map[string]any))
	}
	return out
}

func TestShellOutputReplyAndReplay(t *testing.T) {
	_, c := newShellTestService(t)
	id, pid := openTestShell(t, c, map[string]any{"argv": []string{"sh", "-c", "echo hello T=$TERM; sleep 0.2"}})
	tm := attachShell(t, c, map[string]any{"id": id})
	if tm.start["pid"] != float64(pid) || tm.start["cols"] != float64(80) || tm.start["rows"] != float64(24) || tm.start["writer"] != false {
		t.Fatalf("start %v", tm.start)
	}
	if got := listShells(t, c); len(got) != 1 || got[0]["id"] != id || got[0]["running"] != true ||
		got[0]["attached"] != float64(1) || got[0]["writer"] != false || got[0]["tag"] != nil ||
		got[0]["exit_code"] != nil || got[0]["started_unix_ms"].(float64) <= 0 {
		t.Fatalf("list while running: %v", got)
	}
	end := tm.waitEnd()
	if !bytes.Contains(tm.out, []byte("hello T=xterm-256color\r\n")) {
		t.Fatalf("output %q", tm.out)
	}
	if end["exit_code"] != float64(0) || end["signal"] != nil || end["duration_ms"].(float64) < 150 {
		t.Fatalf("end %v", end)
	}

	// An ended shell replays its ring and its REPLY until it is forgotten; without scrollback
	// only the REPLY.
	again := attachShell(t, c, map[string]any{"id": id})
	if again.waitEnd()["exit_code"] != float64(0) || !bytes.Equal(again.out, tm.out) {
		t.Fatalf("replay %q vs %q", again.out, tm.out)
	}
	bare := attachShell(t, c, map[string]any{"id": id, "scrollback": false})
	if bare.waitEnd()["exit_code"] != float64(0) || len(bare.out) != 0 {
		t.Fatalf("no scrollback: %q", bare.out)
	}
	if got := listShells(t, c); len(got) != 1 || got[0]["running"] != false || got[0]["exit_code"] != float64(0) || got[0]["attached"] != float64(0) {
		t.Fatalf("list after the end: %v", got)
	}

	// env is the whole environment; a TERM given is kept.
	id2, _ := openTestShell(t, c, map[string]any{"argv": []string{"/bin/sh", "-c", "echo T=$TERM"}, "env": map[string]string{"TERM": "dumb"}})
	tm2 := attachShell(t, c, map[string]any{"id": id2})
	tm2.waitEnd()
	if !bytes.Contains(tm2.out, []byte("T=dumb")) {
		t.Fatalf("TERM: %q", tm2.out)
	}
}

func TestShellScrollbackAfterDetach(t *testing.T) {
	_, c := newShellTestService(t)
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"sh"}})
	w := attachShell(t, c, map[string]any{"id": id, "write": true})
	if w.start["writer"] != true {
		t.Fatalf("start %v", w.start)
	}
	w.typeIn("echo mark$((6*7))\n")
	w.waitOut("mark42")
	w.cv.Cancel()

	// The shell keeps running without anyone attached; the next attach replays the ring.
	r := attachShell(t, c, map[string]any{"id": id})
	r.waitOut("mark42")
	if l := listShells(t, c); l[0]["running"] != true {
		t.Fatalf("list %v", l)
	}
	// A new session drops every stream; the shell still runs and can be attached again.
	c.Hello("second")
	w2 := attachShell(t, c, map[string]any{"id": id, "write": true})
	w2.waitOut("mark42")
	w2.typeIn("exit 7\n")
	if end := w2.waitEnd(); end["exit_code"] != float64(7) {
		t.Fatalf("end %v", end)
	}
}

func TestShellTwoReaders(t *testing.T) {
	_, c := newShellTestService(t)
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"sh", "-c", "sleep 0.3; echo both"}})
	a := attachShell(t, c, map[string]any{"id": id})
	b := attachShell(t, c, map[string]any{"id": id})
	for _, tm := range []*term{a, b} {
		if end := tm.waitEnd(); end["exit_code"] != float64(0) || string(tm.out) != "both\r\n" {
			t.Fatalf("reader: %q %v", tm.out, end)
		}
	}
}

func TestShellWriterInputAndTakeover(t *testing.T) {
	_, c := newShellTestService(t)
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"cat"}})
	w := attachShell(t, c, map[string]any{"id": id, "write": true})
	r := attachShell(t, c, map[string]any{"id": id})
	r.typeIn("zz\n") // a reader's input is dropped
	w.typeIn("ok\n")
	w.waitOut("ok\r\nok\r\n") // the terminal's echo, then cat
	r.waitOut("ok\r\nok\r\n")

	w2 := attachShell(t, c, map[string]any{"id": id, "write": true, "scrollback": false})
	if ev := w.waitEvent("writer"); ev["writer"] != false {
		t.Fatalf("writer event %v", ev)
	}
	w.typeIn("old\n") // no longer the writer: dropped
	w2.typeIn("new\n")
	w2.waitOut("new\r\nnew\r\n")
	w.waitOut("new\r\nnew\r\n")
	r.waitOut("new\r\nnew\r\n")
	for _, tm := range []*term{w, r, w2} {
		if bytes.Contains(tm.out, []byte("zz")) || bytes.Contains(tm.out, []byte("old")) {
			t.Fatalf("dropped input reached the terminal: %q", tm.out)
		}
	}
	if l := listShells(t, c); l[0]["attached"] != float64(3) || l[0]["writer"] != true {
		t.Fatalf("list %v", l)
	}
	if len(w2.events) != 0 || len(r.events) != 0 {
		t.Fatalf("unexpected events: %v %v", w2.events, r.events)
	}

	callOK(t, c, map[string]any{"op": "shell_close", "id": id})
	for _, tm := range []*term{w, r, w2} {
		if end := tm.waitEnd(); end["signal"] != float64(unix.SIGHUP) {
			t.Fatalf("end %v", end)
		}
	}
}

func TestShellResize(t *testing.T) {
	_, c := newShellTestService(t)
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"sh"}, "cols": 100, "rows": 40})
	w := attachShell(t, c, map[string]any{"id": id, "write": true})
	if w.start["cols"] != float64(100) || w.start["rows"] != float64(40) {
		t.Fatalf("start %v", w.start)
	}
	w.typeIn("stty size\n")
	w.waitOut("40 100\r\n")
	callOK(t, c, map[string]any{"op": "shell_resize", "id": id, "cols": 111, "rows": 33})
	if ev := w.waitEvent("resize"); ev["cols"] != float64(111) || ev["rows"] != float64(33) {
		t.Fatalf("resize event %v", ev)
	}
	w.typeIn("stty size\n")
	w.waitOut("33 111\r\n")
	if l := listShells(t, c); l[0]["cols"] != float64(111) || l[0]["rows"] != float64(33) {
		t.Fatalf("list %v", l)
	}
	r := attachShell(t, c, map[string]any{"id": id, "scrollback": false})
	if r.start["cols"] != float64(111) || r.start["rows"] != float64(33) {
		t.Fatalf("start after resize %v", r.start)
	}
}

// waitForeground waits until a job other than the shell is in front of the terminal.
func waitForeground(t *testing.T, s *Service, id string, pid int) {
	t.Helper()
	s.shells.mu.Lock()
	sh := s.shells.m[id]
	s.shells.mu.Unlock()
	if !waitUntil(shellWait, func() bool {
		fg, err := sh.foreground()
		return err == nil && fg != pid
	}) {
		t.Fatal("the job never came to the foreground")
	}
}

func TestShellCtrlCAndForegroundSignal(t *testing.T) {
	s, c := newShellTestService(t)
	id, pid := openTestShell(t, c, map[string]any{"argv": []string{"sh", "-i"}})
	w := attachShell(t, c, map[string]any{"id": id, "write": true})
	w.typeIn("sleep 100\n")
	waitForeground(t, s, id, pid)
	w.typeIn("\x03")
	w.typeIn("echo X$((6*7))Y\n")
	w.waitOut("X42Y")

	w.typeIn("sleep 100\n")
	waitForeground(t, s, id, pid)
	callOK(t, c, map[string]any{"op": "shell_signal", "id": id, "signal": int(unix.SIGINT)})
	w.typeIn("echo Z$((1+1))Z\n")
	w.waitOut("Z2Z")
	if l := listShells(t, c); l[0]["running"] != true {
		t.Fatalf("the shell itself died: %v", l)
	}
}

func TestShellSignalShell(t *testing.T) {
	_, c := newShellTestService(t)
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"sleep", "100"}})
	tm := attachShell(t, c, map[string]any{"id": id})
	callOK(t, c, map[string]any{"op": "shell_signal", "id": id, "signal": 9, "target": "shell"})
	if end := tm.waitEnd(); end["signal"] != float64(9) || end["exit_code"] != nil {
		t.Fatalf("end %v", end)
	}
	// An ended shell takes signals and resizes as no-ops.
	callOK(t, c, map[string]any{"op": "shell_signal", "id": id, "signal": 9, "target": "shell"})
	callOK(t, c, map[string]any{"op": "shell_signal", "id": id, "signal": 15})
	callOK(t, c, map[string]any{"op": "shell_resize", "id": id, "cols": 10, "rows": 10})
}

func TestShellFloodIsBounded(t *testing.T) {
	s, c := newShellTestService(t)
	const ring = 4096
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"yes"}, "scrollback_bytes": ring})
	s.shells.mu.Lock()
	sh := s.shells.m[id]
	s.shells.mu.Unlock()
	total := func() int64 {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if len(sh.ring.buf) > ring || cap(sh.ring.buf) > ring {
			t.Errorf("ring holds %d bytes (cap %d), more than %d", len(sh.ring.buf), cap(sh.ring.buf), ring)
		}
		return sh.ring.total
	}
	// Nobody is attached: the agent keeps reading, the ring keeps the newest bytes.
	if !waitUntil(shellWait, func() bool { return total() > 20*ring }) {
		t.Fatalf("the reader stalled at %d bytes", total())
	}

	// An attach gets at most the ring, then live output; a host that grants nothing more
	// falls behind and is told how much it missed.
	tm := attachShell(t, c, map[string]any{"id": id})
	tm.credit = false
	for len(tm.out) < spec.InitialWindowBytes {
		if !tm.step(shellWait) {
			t.Fatalf("only %d bytes within the first window", len(tm.out))
		}
	}
	// (The host read as fast as it could, yet a 4 KiB ring may already have skipped.)
	tm.events = nil
	before := total()
	if !waitUntil(shellWait, func() bool { return total() > before+2*ring }) {
		t.Fatal("the reader waited for the stalled stream")
	}
	tm.cv.Credit(spec.DataChunkBytes)
	ev := tm.waitEvent("skipped")
	if ev["bytes"].(float64) < 2*ring {
		t.Fatalf("skipped %v", ev)
	}
	n := len(tm.out)
	if !tm.step(shellWait) || len(tm.out) <= n {
		t.Fatalf("no data after the skip")
	}
	if strings.Trim(string(tm.out), "y\r\n") != "" {
		t.Fatalf("output is not yes's")
	}
	callOK(t, c, map[string]any{"op": "shell_close", "id": id})
}

func TestShellClose(t *testing.T) {
	s, c := newShellTestService(t)
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"sleep", "100"}})
	tm := attachShell(t, c, map[string]any{"id": id})
	callOK(t, c, map[string]any{"op": "shell_close", "id": id})
	if end := tm.waitEnd(); end["signal"] != float64(unix.SIGHUP) {
		t.Fatalf("end %v", end)
	}
	if len(listShells(t, c)) != 0 {
		t.Fatal("a closed shell is still listed")
	}
	if r := c.Call(map[string]any{"op": "shell_attach", "id": id}); r.Code() != spec.CodeNotFound {
		t.Fatalf("attach after close: %v", r)
	}

	// A shell that ignores SIGHUP gets SIGKILL after the wait.
	s.shells.closeWait = 200 * time.Millisecond
	id, _ = openTestShell(t, c, map[string]any{"argv": []string{"sh", "-c", "trap '' HUP; sleep 100; echo never"}})
	tm = attachShell(t, c, map[string]any{"id": id})
	time.Sleep(50 * time.Millisecond) // let the trap be set
	start := time.Now()
	callOK(t, c, map[string]any{"op": "shell_close", "id": id})
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("close took %v", d)
	}
	if end := tm.waitEnd(); end["signal"] != float64(unix.SIGKILL) {
		t.Fatalf("end %v", end)
	}
}

func TestShellExitTTL(t *testing.T) {
	s, c := newShellTestService(t)
	s.ExitTTL = 50 * time.Millisecond
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"true"}})
	attachShell(t, c, map[string]any{"id": id}).waitEnd()
	time.Sleep(100 * time.Millisecond)
	if l := listShells(t, c); len(l) != 0 {
		t.Fatalf("not forgotten: %v", l)
	}
	if r := c.Call(map[string]any{"op": "shell_attach", "id": id}); r.Code() != spec.CodeNotFound {
		t.Fatalf("attach: %v", r)
	}
}

func TestShellValidation(t *testing.T) {
	s, c := newShellTestService(t)
	sh := []string{"sh"}
	cases := []struct {
		req   map[string]any
		code  string
		field string
	}{
		{map[string]any{"op": "shell_open"}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "shell_open", "argv": []string{}}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "shell_open", "argv": "sh"}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "shell_open", "argv": []string{""}}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "shell_open", "argv": []string{"sh\x00"}}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "shell_open", "argv": sh, "cols": 0}, spec.CodeBadRequest, "cols"},
		{map[string]any{"op": "shell_open", "argv": sh, "cols": 1001}, spec.CodeBadRequest, "cols"},
		{map[string]any{"op": "shell_open", "argv": sh, "cols": 1.5}, spec.CodeBadRequest, "cols"},
		{map[string]any{"op": "shell_open", "argv": sh, "rows": "x"}, spec.CodeBadRequest, "rows"},
		{map[string]any{"op": "shell_open", "argv": sh, "rows": -1}, spec.CodeBadRequest, "rows"},
		{map[string]any{"op": "shell_open", "argv": sh, "scrollback_bytes": 1023}, spec.CodeBadRequest, "scrollback_bytes"},
		{map[string]any{"op": "shell_open", "argv": sh, "scrollback_bytes": spec.MaxShellScrollbackBytes + 1}, spec.CodeBadRequest, "scrollback_bytes"},
		{map[string]any{"op": "shell_open", "argv": sh, "env": map[string]string{"A=B": "c"}}, spec.CodeBadRequest, "env"},
		{map[string]any{"op": "shell_open", "argv": sh, "env": map[string]any{"A": 1}}, spec.CodeBadRequest, "env"},
		{map[string]any{"op": "shell_open", "argv": sh, "cwd": "relative"}, spec.CodeBadRequest, "cwd"},
		{map[string]any{"op": "shell_open", "argv": sh, "user": "no-such-user-xyz"}, spec.CodeBadRequest, "user"},
		{map[string]any{"op": "shell_open", "argv": sh, "tag": strings.Repeat("t", 257)}, spec.CodeBadRequest, "tag"},
		{map[string]any{"op": "shell_open", "argv": []string{"no-such-program-xyz"}, "env": shellEnv}, spec.CodeNotFound, ""},
		{map[string]any{"op": "shell_open", "argv": sh, "cwd": "/no/such/dir"}, spec.CodeNotFound, ""},
		{map[string]any{"op": "shell_attach"}, spec.CodeBadRequest, "id"},
		{map[string]any{"op": "shell_attach", "id": 5}, spec.CodeBadRequest, "id"},
		{map[string]any{"op": "shell_attach", "id": "sh-000000000000"}, spec.CodeNotFound, ""},
		{map[string]any{"op": "shell_resize", "id": "sh-000000000000", "cols": 1, "rows": 1}, spec.CodeNotFound, ""},
		{map[string]any{"op": "shell_signal", "id": "sh-000000000000", "signal": 9}, spec.CodeNotFound, ""},
		{map[string]any{"op": "shell_close", "id": "sh-000000000000"}, spec.CodeNotFound, ""},
	}
	for _, tc := range cases {
		r := c.Call(tc.req)
		if r.Code() != tc.code || (tc.field != "" && !strings.Contains(r.Err.Message, `"`+tc.field+`"`)) {
			t.Errorf("%v: got %v, want %s naming %q", tc.req, r, tc.code, tc.field)
		}
	}

	// Field checks on a live shell.
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"sleep", "100"}, "tag": "web"})
	for _, tc := range []struct {
		req   map[string]any
		field string
	}{
		{map[string]any{"op": "shell_resize", "id": id, "rows": 10}, "cols"},
		{map[string]any{"op": "shell_resize", "id": id, "cols": 10}, "rows"},
		{map[string]any{"op": "shell_resize", "id": id, "cols": 10, "rows": 1001}, "rows"},
		{map[string]any{"op": "shell_signal", "id": id}, "signal"},
		{map[string]any{"op": "shell_signal", "id": id, "signal": 0}, "signal"},
		{map[string]any{"op": "shell_signal", "id": id, "signal": 65}, "signal"},
		{map[string]any{"op": "shell_signal", "id": id, "signal": 9, "target": "bogus"}, "target"},
		{map[string]any{"op": "shell_attach", "id": id, "write": "yes"}, "write"},
		{map[string]any{"op": "shell_attach", "id": id, "scrollback": 1}, "scrollback"},
	} {
		if r := c.Call(tc.req); r.Code() != spec.CodeBadRequest || !strings.Contains(r.Err.Message, `"`+tc.field+`"`) {
			t.Errorf("%v: got %v, want bad_request naming %q", tc.req, r, tc.field)
		}
	}

	// Tags are unique among running shells.
	if r := c.Call(map[string]any{"op": "shell_open", "argv": sh, "tag": "web"}); r.Code() != spec.CodeExists {
		t.Fatalf("duplicate tag: %v", r)
	}
	// max_shells counts running and ended shells that are not forgotten.
	s.shells.max = 2
	id2, _ := openTestShell(t, c, map[string]any{"argv": []string{"true"}})
	attachShell(t, c, map[string]any{"id": id2}).waitEnd()
	if r := c.Call(map[string]any{"op": "shell_open", "argv": sh}); r.Code() != spec.CodeBusy {
		t.Fatalf("over max_shells: %v", r)
	}
	callOK(t, c, map[string]any{"op": "shell_close", "id": id2})
	// An ended shell's tag is free again.
	web := attachShell(t, c, map[string]any{"id": id})
	callOK(t, c, map[string]any{"op": "shell_signal", "id": id, "signal": 9, "target": "shell"})
	web.waitEnd()
	openTestShell(t, c, map[string]any{"argv": []string{"true"}, "tag": "web"})
	if l := listShells(t, c); len(l) != 2 || l[0]["tag"] != "web" || l[1]["tag"] != "web" {
		t.Fatalf("list %v", l)
	}
}

func TestByteRing(t *testing.T) {
	r := byteRing{size: 8}
	var all []byte
	check := func() {
		t.Helper()
		if r.total != int64(len(all)) || len(r.buf) > r.size {
			t.Fatalf("total %d want %d, buf %d", r.total, len(all), len(r.buf))
		}
		var got []byte
		p := make([]byte, 3)
		for off := r.oldest(); off < r.total; {
			n := r.read(off, p)
			if n == 0 {
				t.Fatalf("read at %d returned nothing", off)
			}
			got = append(got, p[:n]...)
			off += int64(n)
		}
		want := all[max(0, len(all)-r.size):]
		if !bytes.Equal(got, want) {
			t.Fatalf("ring %q, want %q", got, want)
		}
	}
	for _, w := range []string{"ab", "cde", "fgh", "ijklm", "", "nopqrstuvwxyz0123", "4", "56789"} {
		r.write([]byte(w))
		all = append(all, w...)
		check()
	}
	if r.read(r.oldest()-1, make([]byte, 4)) != 0 || r.read(r.total, make([]byte, 4)) != 0 {
		t.Fatal("read outside the ring")
	}
	// A large first write fills the ring at once.
	r = byteRing{size: 8}
	all = nil
	r.write([]byte("0123456789abc"))
	all = append(all, "0123456789abc"...)
	check()
}

func TestShellUserAndTerminal(t *testing.T) {
	_, c := newShellTestService(t)
	id, _ := openTestShell(t, c, map[string]any{"argv": []string{"sh", "-c", "id -u; tty; stty -a | grep -c icanon"}, "user": "65534:65534"})
	tm := attachShell(t, c, map[string]any{"id": id})
	if end := tm.waitEnd(); end["exit_code"] != float64(0) {
		t.Fatalf("end %v: %q", end, tm.out)
	}
	if !regexp.MustCompile(`^65534\r\n/dev/pts/[0-9]+\r\n1\r\n$`).Match(tm.out) {
		t.Fatalf("output %q", tm.out)
	}
}

// A background child that keeps the terminal open does not keep the shell from ending: its
// output is read for OutputGrace after the exit.
func TestShellOutputGrace(t *testing.T) {
	s, c := newShellTestService(t)
	s.OutputGrace = 200 * time.Millisecond
	id, pid := openTestShell(t, c, map[string]any{"argv": []string{"sh", "-c", "trap '' HUP; sleep 100 & echo started"}})
	t.Cleanup(func() { killGroups(procSessionGroups(pid), unix.SIGKILL) })
	tm := attachShell(t, c, map[string]any{"id": id})
	start := time.Now()
	if end := tm.waitEnd(); end["exit_code"] != float64(0) || !bytes.Contains(tm.out, []byte("started")) {
		t.Fatalf("end %v: %q", end, tm.out)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Fatalf("ended after %v", d)
	}
	if len(procSessionGroups(pid)) == 0 {
		t.Fatal("the background child is gone; the test proves nothing")
	}
	// Closing an ended shell forgets it; the child it left behind gets SIGHUP, then SIGKILL.
	s.shells.closeWait = 100 * time.Millisecond
	callOK(t, c, map[string]any{"op": "shell_close", "id": id})
	if len(listShells(t, c)) != 0 {
		t.Fatal("still listed")
	}
	if !waitUntil(time.Second, func() bool { return len(procSessionGroups(pid)) == 0 }) {
		t.Fatal("the background child survived shell_close")
	}
}
