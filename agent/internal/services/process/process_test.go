package process

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/channel/channeltest"
	"github.com/isorun/isorun/agent/internal/spec"
)

func newTestService(t *testing.T) (*Service, *channeltest.Client) {
	t.Helper()
	s := New(log.New(io.Discard, "", 0))
	c := channeltest.Start(t, s.Handlers(), s.Inputs())
	c.Hello("test")
	t.Cleanup(func() {
		for _, p := range s.snapshot() {
			_ = p.killGroup(9)
		}
	})
	return s, c
}

func exitCode(t *testing.T, r channeltest.Result) any {
	t.Helper()
	if r.Reply == nil {
		t.Fatalf("no reply: %v", r)
	}
	return r.Reply["exit_code"]
}

func TestExecEcho(t *testing.T) {
	_, c := newTestService(t)
	r := c.Call(map[string]any{"op": "exec", "argv": []string{"echo", "hello"}, "env": map[string]string{"PATH": os.Getenv("PATH")}})
	if len(r.Events) != 1 || r.Events[0]["event"] != "start" || r.Events[0]["pid"].(float64) <= 0 {
		t.Fatalf("events: %v", r)
	}
	if string(r.Data[1]) != "hello\n" || len(r.Data[2]) != 0 || exitCode(t, r) != float64(0) {
		t.Fatalf("echo: %v", r)
	}
	if len(r.EOFs) != 2 || r.EOFs[0] != 1 || r.EOFs[1] != 2 {
		t.Fatalf("eofs: %v", r.EOFs)
	}
}

func TestExecStderrExitCodeEnvCwd(t *testing.T) {
	_, c := newTestService(t)
	dir := t.TempDir()
	r := c.Call(map[string]any{"op": "exec", "shell": "echo out $FOO; pwd; echo err >&2; exit 3",
		"env": map[string]string{"FOO": "bar"}, "cwd": dir})
	if string(r.Data[1]) != "out bar\n"+dir+"\n" || string(r.Data[2]) != "err\n" || exitCode(t, r) != float64(3) {
		t.Fatalf("%v", r)
	}
	if r.Reply["signal"] != nil || r.Reply["timed_out"] != false {
		t.Fatalf("%v", r.Reply)
	}
	// The environment is exactly what was asked for.
	r = c.Call(map[string]any{"op": "exec", "argv": []string{"/usr/bin/env"}})
	if len(r.Data[1]) != 0 {
		t.Fatalf("env leaked: %q", r.Data[1])
	}
}

func TestExecSignalAndTimeout(t *testing.T) {
	_, c := newTestService(t)
	r := c.Call(map[string]any{"op": "exec", "shell": "kill -TERM $$"})
	if r.Reply["signal"] != float64(15) || r.Reply["exit_code"] != nil {
		t.Fatalf("self-kill: %v", r)
	}

	start := time.Now()
	r = c.Call(map[string]any{"op": "exec", "argv": []string{"/bin/sleep", "30"}, "timeout_ms": 200})
	if r.Reply["timed_out"] != true || r.Reply["signal"] != float64(9) || time.Since(start) > 5*time.Second {
		t.Fatalf("timeout: %v after %v", r, time.Since(start))
	}

	cv := c.Open(map[string]any{"op": "exec", "argv": []string{"/bin/sleep", "30"}, "tag": "sleeper"})
	if f := cv.Next(); f.Type != spec.TypeEvent {
		t.Fatalf("frame %d", f.Type)
	}
	if r := c.Call(map[string]any{"op": "exec", "argv": []string{"/bin/true"}, "tag": "sleeper"}); r.Code() != spec.CodeExists {
		t.Fatalf("duplicate tag: %v", r)
	}
	if r := c.Call(map[string]any{"op": "signal", "tag": "sleeper", "signal": 10}); r.Reply == nil {
		t.Fatalf("signal: %v", r)
	}
	if r := cv.Collect(true); r.Reply["signal"] != float64(10) {
		t.Fatalf("after SIGUSR1: %v", r)
	}
	if r := c.Call(map[string]any{"op": "signal", "pid": 999999999, "signal": 9}); r.Code() != spec.CodeNotFound {
		t.Fatalf("unknown pid: %v", r)
	}
}

func TestExecStdin(t *testing.T) {
	_, c := newTestService(t)
	cv := c.Open(map[string]any{"op": "exec", "argv": []string{"/bin/cat"}, "stdin": true})
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, 4 windows
	credit := spec.InitialWindowBytes
	var out []byte
	var r channeltest.Result
	sent := 0
	for sent < len(want) {
		for credit == 0 {
			f := cv.Next()
			switch f.Type {
			case spec.TypeCredit:
				credit += int(f.Payload[0])<<24 | int(f.Payload[1])<<16 | int(f.Payload[2])<<8 | int(f.Payload[3])
			case spec.TypeData:
				out = append(out, f.Payload...)
				cv.Credit(len(f.Payload))
			}
		}
		n := min(credit, spec.DataChunkBytes, len(want)-sent)
		cv.Send(want[sent : sent+n])
		sent += n
		credit -= n
	}
	cv.EOF()
	r = cv.Collect(true)
	out = append(out, r.Data[1]...)
	if !bytes.Equal(out, want) || exitCode(t, r) != float64(0) {
		t.Fatalf("cat: %d bytes back of %d, %v", len(out), len(want), r.Reply)
	}
}

func TestConcurrentExecs(t *testing.T) {
	_, c := newTestService(t)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := 0; i < 20; i++ {
		cv := c.Open(map[string]any{"op": "exec", "shell": fmt.Sprintf("for j in 1 2 3; do echo %d-$j; done; echo e%d >&2; exit %d", i, i, i)})
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := cv.Collect(true)
			want := fmt.Sprintf("%d-1\n%d-2\n%d-3\n", i, i, i)
			if string(r.Data[1]) != want || string(r.Data[2]) != fmt.Sprintf("e%d\n", i) || r.Reply["exit_code"] != float64(i) {
				errs <- r.String()
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// A process flooding stdout to a host that grants no credit blocks on its own pipe; the
// agent buffers a bounded amount and other execs still complete.
func TestFloodDoesNotStarveOthers(t *testing.T) {
	s, c := newTestService(t)
	flood := c.Open(map[string]any{"op": "exec", "argv": []string{"/usr/bin/head", "-c", "50000000", "/dev/zero"}, "timeout_ms": 20000})
	got := 0
	for got < spec.InitialWindowBytes {
		f := flood.Next()
		if f.Type == spec.TypeData {
			got += len(f.Payload)
		}
	}
	for i := 0; i < 5; i++ {
		if r := c.Call(map[string]any{"op": "exec", "argv": []string{"/bin/echo", "alive"}}); string(r.Data[1]) != "alive\n" {
			t.Fatalf("starved: %v", r)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if f, ok := flood.NextWithin(50 * time.Millisecond); ok && f.Type == spec.TypeData {
		t.Fatal("agent sent DATA without credit")
	}
	for _, p := range s.snapshot() {
		p.mu.Lock()
		size := p.ring.size
		p.mu.Unlock()
		if size > spec.DetachedBufferBytes+spec.DataChunkBytes {
			t.Fatalf("pid %d buffers %d bytes", p.Pid, size)
		}
	}
	// Grant credit as it comes: the whole 50 MB arrives and the process ends normally.
	flood.Credit(got)
	r := flood.Collect(true)
	if got+len(r.Data[1]) != 50000000 || exitCode(t, r) != float64(0) {
		t.Fatalf("flood: %d bytes, %v", got+len(r.Data[1]), r.Reply)
	}
}

// A new HELLO detaches a running exec; the process survives and attach gets the rest.
func TestReconnectAttach(t *testing.T) {
	_, c := newTestService(t)
	cv := c.Open(map[string]any{"op": "exec", "shell": "echo before; sleep 0.5; echo after; exit 7", "tag": "job"})
	var out []byte
	for !bytes.Contains(out, []byte("before\n")) {
		if f := cv.Next(); f.Type == spec.TypeData {
			out = append(out, f.Payload...)
		}
	}
	c.Hello("second host")
	r := c.Call(map[string]any{"op": "attach", "tag": "job"})
	if string(r.Data[1]) != "after\n" || exitCode(t, r) != float64(7) || r.Events[0]["event"] != "start" {
		t.Fatalf("attach: %v", r)
	}
	if f, ok := cv.NextWithin(50 * time.Millisecond); ok {
		t.Fatalf("old stream got frame %d", f.Type)
	}
	// Ended within exit_ttl: a late attach still gets the end.
	if r := c.Call(map[string]any{"op": "attach", "tag": "job"}); exitCode(t, r) != float64(7) {
		t.Fatalf("late attach: %v", r)
	}
	ps := c.Call(map[string]any{"op": "ps"})
	procs := ps.Reply["processes"].([]any)
	if len(procs) != 1 || procs[0].(map[string]any)["tag"] != "job" || procs[0].(map[string]any)["running"] != false {
		t.Fatalf("ps: %v", ps)
	}
}

func TestDetachedRingAndAttachTakeover(t *testing.T) {
	_, c := newTestService(t)
	cv := c.Open(map[string]any{"op": "exec", "shell": "seq 1 30000; sleep 1"})
	f := cv.Next()
	if f.Type != spec.TypeEvent {
		t.Fatalf("frame %d", f.Type)
	}
	cv.Cancel()
	time.Sleep(500 * time.Millisecond)
	r := c.Call(map[string]any{"op": "attach", "pid": pidOf(t, c)})
	if n := len(r.Data[1]); n > spec.DetachedBufferBytes || n == 0 {
		t.Fatalf("detached ring replayed %d bytes", n)
	}
	if !bytes.HasSuffix(r.Data[1], []byte("\n30000\n")) || exitCode(t, r) != float64(0) {
		t.Fatalf("ring tail: %v", r)
	}

	c.Open(map[string]any{"op": "exec", "argv": []string{"/bin/sleep", "30"}, "tag": "s"}).Next()
	first := c.Open(map[string]any{"op": "attach", "tag": "s"})
	if f := first.Next(); f.Type != spec.TypeEvent {
		t.Fatalf("frame %d", f.Type)
	}
	second := c.Open(map[string]any{"op": "attach", "tag": "s"})
	if r := first.Collect(false); r.Code() != spec.CodeDetached {
		t.Fatalf("first attach: %v", r)
	}
	c.Call(map[string]any{"op": "signal", "tag": "s", "signal": 9})
	if r := second.Collect(true); r.Reply["signal"] != float64(9) {
		t.Fatalf("second attach: %v", r)
	}
}

func pidOf(t *testing.T, c *channeltest.Client) int {
	procs := c.Call(map[string]any{"op": "ps"}).Reply["processes"].([]any)
	return int(procs[len(procs)-1].(map[string]any)["pid"].(float64))
}

// A background grandchild holding stdout open does not keep the exec open past the grace.
func TestGrandchildHoldingPipe(t *testing.T) {
	s, c := newTestService(t)
	s.OutputGrace = 300 * time.Millisecond
	start := time.Now()
	r := c.Call(map[string]any{"op": "exec", "shell": "echo parent; /bin/sleep 30 & exit 0"})
	if string(r.Data[1]) != "parent\n" || exitCode(t, r) != float64(0) || time.Since(start) > 5*time.Second {
		t.Fatalf("%v after %v", r, time.Since(start))
	}
}

func TestExitTTL(t *testing.T) {
	s, c := newTestService(t)
	s.ExitTTL = 100 * time.Millisecond
	r := c.Call(map[string]any{"op": "exec", "argv": []string{"/bin/true"}, "tag": "short"})
	time.Sleep(200 * time.Millisecond)
	if r := c.Call(map[string]any{"op": "attach", "tag": "short"}); r.Code() != spec.CodeNotFound {
		t.Fatalf("after ttl: %v (exec %v)", r, r)
	}
	_ = r
}

func TestExecErrors(t *testing.T) {
	_, c := newTestService(t)
	cases := []struct {
		req  map[string]any
		code string
		word string
	}{
		{map[string]any{"op": "exec"}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "exec", "argv": []string{"x"}, "shell": "x"}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "exec", "argv": []string{}}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "exec", "argv": "echo"}, spec.CodeBadRequest, "argv"},
		{map[string]any{"op": "exec", "argv": []string{"/no/such/program"}}, spec.CodeNotFound, "/no/such"},
		{map[string]any{"op": "exec", "argv": []string{"no-such-program-x"}}, spec.CodeNotFound, "no-such"},
		{map[string]any{"op": "exec", "argv": []string{"/bin/true"}, "cwd": "/no/such/dir"}, spec.CodeNotFound, "/no/such/dir"},
		{map[string]any{"op": "exec", "argv": []string{"/bin/true"}, "cwd": "relative"}, spec.CodeBadRequest, "cwd"},
		{map[string]any{"op": "exec", "argv": []string{"/bin/true"}, "user": "no-such-user-x"}, spec.CodeBadRequest, "user"},
		{map[string]any{"op": "exec", "argv": []string{"/bin/true"}, "timeout_ms": -1}, spec.CodeBadRequest, "timeout_ms"},
		{map[string]any{"op": "exec", "argv": []string{"/bin/true"}, "env": map[string]any{"A": 1}}, spec.CodeBadRequest, "env"},
		{map[string]any{"op": "exec", "argv": []string{"/etc/passwd"}}, spec.CodeSpawnFailed, "/etc/passwd"},
		{map[string]any{"op": "attach", "pid": 1, "tag": "x"}, spec.CodeBadRequest, "pid"},
		{map[string]any{"op": "signal", "pid": 1, "signal": 9}, spec.CodeNotFound, "1"},
	}
	for _, tc := range cases {
		r := c.Call(tc.req)
		if r.Code() != tc.code || !strings.Contains(r.Err.Message, tc.word) {
			t.Errorf("%v: %v", tc.req, r)
		}
	}
}

func TestExecAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	s, c := newTestService(t)
	etc := t.TempDir()
	s.EtcDir = etc
	writeFile(t, filepath.Join(etc, "passwd"), "root:x:0:0::/root:/bin/sh\nalice:x:1234:1234::/home/alice:/bin/sh\n")
	writeFile(t, filepath.Join(etc, "group"), "root:x:0:\nalice:x:1234:\nstaff:x:50:bob,alice\n")
	r := c.Call(map[string]any{"op": "exec", "argv": []string{"/usr/bin/id"}, "user": "alice"})
	if got := string(r.Data[1]); !strings.Contains(got, "uid=1234") || !strings.Contains(got, "gid=1234") || !strings.Contains(got, "50") {
		t.Fatalf("id as alice: %v", r)
	}
	r = c.Call(map[string]any{"op": "exec", "argv": []string{"/usr/bin/id", "-u"}, "user": "4321:77"})
	if string(r.Data[1]) != "4321\n" {
		t.Fatalf("id as 4321: %v", r)
	}
}

func TestResolveUser(t *testing.T) {
	etc := t.TempDir()
	writeFile(t, filepath.Join(etc, "passwd"), "# c\nroot:x:0:0::/root:/bin/sh\nbob:x:1000:100::/:/bin/sh\nbad:x:zz:1\n")
	writeFile(t, filepath.Join(etc, "group"), "users:x:100:\nwheel:x:10:bob\ndocker:x:999:carol,bob\n")
	cases := map[string]string{
		"root": "<nil>", "": "<nil>", "bob": "1000/100[10 999]", "1000": "1000/100[10 999]",
		"bob:wheel": "1000/10[999]", "77": "77/0[]", "77:88": "77/88[]", "77:users": "77/100[]",
	}
	for in, want := range cases {
		cred, err := resolveUser(in, etc)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		got := "<nil>"
		if cred != nil {
			got = fmt.Sprintf("%d/%d%v", cred.Uid, cred.Gid, cred.Groups)
		}
		if got != want {
			t.Errorf("%q: got %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"nobody-here", "bob:", ":1", "bob:nogroup", "bad", "-1"} {
		if _, err := resolveUser(bad, etc); err == nil {
			t.Errorf("%q resolved", bad)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRing(t *testing.T) {
	var r ring
	r.push(1, []byte("aaaa"))
	r.push(2, []byte("bb"))
	r.push(1, []byte("cc"))
	r.trim(5)
	if r.size != 5 {
		t.Fatalf("size %d", r.size)
	}
	var got []string
	for r.size > 0 {
		ch, b := r.take(100)
		got = append(got, fmt.Sprintf("%d:%s", ch, b))
	}
	if strings.Join(got, " ") != "1:a 2:bb 1:cc" {
		t.Fatalf("%v", got)
	}
}

// Only an exec with stdin reads channel 0; the session drops DATA for the others.
func TestInputsOnlyExecWithStdin(t *testing.T) {
	in := New(log.New(io.Discard, "", 0)).Inputs()
	for body, want := range map[string]bool{
		`{"op":"exec","argv":["cat"],"stdin":true}`:  true,
		`{"op":"exec","argv":["cat"]}`:               false,
		`{"op":"exec","argv":["cat"],"stdin":false}`: false,
		`{"op":"exec","argv":["cat"],"stdin":"yes"}`: false,
	} {
		req, err := channel.ParseRequest([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if got := in[req.Op] != nil && in[req.Op](req); got != want {
			t.Errorf("%s: reads input %v", body, got)
		}
	}
	for _, op := range []string{"attach", "signal", "ps"} {
		if _, ok := in[op]; ok {
			t.Errorf("%s reads input", op)
		}
	}
}

// Ended processes are forgotten after ExitTTL by exec alone: before, only ps, attach, signal
// and health pruned, so a workload that only execs kept every record and its output ring.
func TestExecPrunesEnded(t *testing.T) {
	s, c := newTestService(t)
	s.ExitTTL = 100 * time.Millisecond
	for i := 0; i < 5; i++ {
		if r := c.Call(map[string]any{"op": "exec", "shell": "echo x"}); exitCode(t, r) != float64(0) {
			t.Fatalf("exec %d: %v", i, r)
		}
	}
	time.Sleep(200 * time.Millisecond)
	r := c.Call(map[string]any{"op": "exec", "argv": []string{"/bin/true"}})
	exitCode(t, r)
	s.mu.Lock()
	n := len(s.procs)
	s.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d process records kept, want only the last one", n)
	}
	// Within the TTL the ended process stays attachable, as before.
	if r := c.Call(map[string]any{"op": "attach", "pid": pidOf(t, c)}); exitCode(t, r) != float64(0) {
		t.Fatalf("attach within ttl: %v", r)
	}
}

// A ps REPLY fits one frame however many processes there are and however long their argv:
// argv is cut to 64 items and 4 KiB of JSON, and at most 256 ended processes are listed, the
// most recently ended. Before, such a reply exceeded max_payload_bytes and ps failed.
func TestPsFitsOneFrame(t *testing.T) {
	s := New(log.New(io.Discard, "", 0))
	c := channeltest.Start(t, s.Handlers(), s.Inputs())
	c.Hello("ps")
	long := make([]string, 100)
	for i := range long {
		long[i] = strings.Repeat("a", 100)
	}
	now := time.Now()
	fake := func(pid int, argv []string, running bool, ended time.Time) {
		p := &Process{Pid: pid, Argv: argv, started: now.Add(-time.Hour), changed: make(chan struct{})}
		if running {
			p.open = 2
		} else {
			p.exited, p.ended = true, ended
		}
		s.mu.Lock()
		s.procs[pid] = p
		s.mu.Unlock()
	}
	// Pids above the largest possible pid_max (2^22): nothing real can be signalled by mistake.
	const base = 5_000_000
	for i := 0; i < 400; i++ {
		fake(base+i, long, false, now.Add(-time.Duration(400-i)*time.Millisecond))
	}
	fake(base+1000, []string{"sh", "-c", strings.Repeat("<", 10000)}, true, time.Time{})
	fake(base+1001, []string{"short", "argv"}, true, time.Time{})

	r := c.Call(map[string]any{"op": "ps"})
	if r.Reply == nil {
		t.Fatalf("ps: %v", r)
	}
	if r.Reply["truncated"] != true {
		t.Errorf("truncated = %v", r.Reply["truncated"])
	}
	procs := r.Reply["processes"].([]any)
	var ended []int
	byPid := map[int]map[string]any{}
	lastPid := 0
	for _, x := range procs {
		e := x.(map[string]any)
		pid := int(e["pid"].(float64))
		if pid <= lastPid {
			t.Fatalf("not sorted by pid: %d after %d", pid, lastPid)
		}
		lastPid = pid
		byPid[pid] = e
		if e["running"] == false {
			ended = append(ended, pid)
		}
		argv, _ := json.Marshal(e["argv"])
		if len(e["argv"].([]any)) > 64 || len(argv) > 4096 {
			t.Fatalf("pid %d: argv of %d items, %d bytes", pid, len(e["argv"].([]any)), len(argv))
		}
	}
	// 4 KiB argvs: the frame budget binds before the 256 cap; the newest ended are kept.
	if n := len(ended); n < 200 || n > 256 || ended[0] != base+400-n || ended[n-1] != base+399 {
		t.Errorf("ended listed: %d, from %v", n, ended[:1])
	}
	if e := byPid[base]; e != nil {
		t.Errorf("oldest ended listed: %v", e["pid"])
	}
	if e := byPid[base+399]; e == nil || e["argv_truncated"] != true || len(e["argv"].([]any)) == 0 {
		t.Errorf("long argv: %v", e)
	}
	sh := byPid[base+1000]
	if sh == nil || sh["argv_truncated"] != true {
		t.Fatalf("running sh: %v", sh)
	}
	if a := sh["argv"].([]any); len(a) != 3 || a[0] != "sh" || !strings.HasPrefix(strings.Repeat("<", 10000), a[2].(string)) || len(a[2].(string)) < 500 {
		t.Errorf("sh argv cut to %d items", len(a))
	}
	if e := byPid[base+1001]; e == nil || e["argv_truncated"] != false || len(e["argv"].([]any)) != 2 {
		t.Errorf("short argv: %v", e)
	}

	// Short argvs: the cap of 256 ended processes binds.
	s.mu.Lock()
	clear(s.procs)
	s.mu.Unlock()
	for i := 0; i < 400; i++ {
		fake(base+i, []string{"true"}, false, now.Add(-time.Duration(400-i)*time.Millisecond))
	}
	r = c.Call(map[string]any{"op": "ps"})
	procs, _ = r.Reply["processes"].([]any)
	if r.Reply["truncated"] != true || len(procs) != 256 ||
		procs[0].(map[string]any)["pid"] != float64(base+400-256) {
		t.Errorf("short argvs: truncated %v, %d listed", r.Reply["truncated"], len(procs))
	}
	s.mu.Lock()
	clear(s.procs)
	s.mu.Unlock()
	if r = c.Call(map[string]any{"op": "ps"}); r.Reply["truncated"] != false {
		t.Errorf("empty: %v", r)
	}
}

func TestPsArgv(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		cut  bool
	}{
		{nil, false},
		{[]string{"a"}, false},
		{make([]string, 64), false},
		{make([]string, 65), true},
		{[]string{strings.Repeat("é", 3000)}, true},
		{[]string{strings.Repeat("\x01", 3000)}, true},
		{[]string{"x", strings.Repeat("\xff", 3000)}, true},
	} {
		got, cut := psArgv(tc.argv)
		b, _ := json.Marshal(got)
		if cut != tc.cut || len(b) > psArgvBytes || len(got) > psArgvItems {
			t.Errorf("%.20q: cut %v, %d items, %d bytes", tc.argv, cut, len(got), len(b))
		}
		for i, a := range got {
			if !strings.HasPrefix(tc.argv[i], a) || (utf8.ValidString(tc.argv[i]) && !utf8.ValidString(a)) {
				t.Errorf("item %d is not a clean prefix", i)
			}
		}
	}
}
