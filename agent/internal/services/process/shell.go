package process

// Shells (protocol.md section 5.6): processes on a pseudo-terminal that outlive every stream.
//
// Life of a shell:
//
//	shell_open ──spawn──▶ running ──exit (reaper) + terminal closed──▶ ended ──exit_ttl_ms──▶ forgotten
//	                        │                                             ▲
//	                        └──────────shell_close: SIGHUP, SIGKILL after 2 s, forgotten at once
//
// One goroutine per shell (bgRead) reads the pty master for as long as the terminal is open,
// whether anyone is attached or not, into a byte ring of scrollback_bytes addressed by absolute
// offsets (bytes ever written). It never waits for a client: a flood only overwrites the ring.
// Every attached stream has its own cursor into the ring and sends from it as its credit allows;
// a cursor that fell behind the oldest byte still held jumps forward (EVENT skipped).
//
// The terminal's output ends when reading the master fails with EIO (every slave descriptor is
// closed), or OutputGrace after the shell exited when something it left behind keeps the
// terminal open (like exec's pipes); the master is closed then. The shell has ended once it has
// been reaped and its output has ended; attached streams then get the rest of the ring, EOF on
// channel 1 and the end REPLY.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

const (
	// ptmxPath is the pty multiplexer; the guest links it to /dev/pts/ptmx (boot/mounts.go).
	ptmxPath = "/dev/ptmx"
	// shellCloseWait is how long shell_close waits after SIGHUP before SIGKILL.
	shellCloseWait = 2 * time.Second
	// shellKillWait bounds the wait for the reaper after SIGKILL.
	shellKillWait = 5 * time.Second
	// shellInputSlice bounds one blocked write to the terminal, so that an input path blocked on
	// a full terminal notices that its stream went away or lost the writer role.
	shellInputSlice = 200 * time.Millisecond
	// shellReadBytes is the size of one read of the master.
	shellReadBytes = 32 << 10
)

// shellSet is the service's table of shells. The zero value is ready to use.
type shellSet struct {
	mu sync.Mutex // guards m; held across the fork in openShell
	m  map[string]*Shell

	// max overrides spec.MaxShells when > 0 (tests).
	max int
	// closeWait overrides shellCloseWait when > 0 (tests).
	closeWait time.Duration
}

func (t *shellSet) limit() int {
	if t.max > 0 {
		return t.max
	}
	return spec.MaxShells
}

// Shell is one process on a pty opened with shell_open.
type Shell struct {
	ID      string
	Pid     int
	Tag     string
	Argv    []string
	started time.Time
	master  *os.File // the pty master; closed once the output has ended
	grace   time.Duration
	log     *log.Logger

	mu       sync.Mutex    // guards the fields below
	changed  chan struct{} // closed and replaced on new output and on the end, to wake streams
	ring     byteRing
	cols     int
	rows     int
	exited   bool
	status   unix.WaitStatus
	exitedAt time.Time
	outDone  bool      // the master has been read to its end (or given up on) and closed
	endedAt  time.Time // when both exited and outDone became true; zero before
	subs     map[*shellSub]struct{}
	writer   *shellSub
}

// shellSub is one attached stream.
type shellSub struct {
	cursor int64         // absolute offset of the next byte to send
	events []any         // EVENTs queued for the stream by other goroutines (resize, writer)
	poke   chan struct{} // cap 1: wakes the stream when an event is queued
}

func (sub *shellSub) queueLocked(ev any) {
	sub.events = append(sub.events, ev)
	select {
	case sub.poke <- struct{}{}:
	default:
	}
}

func (sh *Shell) notifyLocked() {
	close(sh.changed)
	sh.changed = make(chan struct{})
}

func (sh *Shell) endedLocked() bool { return sh.exited && sh.outDone }

func (sh *Shell) markEndLocked() {
	if sh.endedLocked() && sh.endedAt.IsZero() {
		sh.endedAt = time.Now()
	}
	sh.notifyLocked()
}

// onExit is called by the reaper and must not block. A terminal still open now is held by
// something the shell left behind; it gets OutputGrace more, counted from the exit.
func (sh *Shell) onExit(ws unix.WaitStatus, at time.Time) {
	sh.mu.Lock()
	sh.exited = true
	sh.status = ws
	sh.exitedAt = at
	sh.markEndLocked()
	sh.mu.Unlock()
	_ = sh.master.SetReadDeadline(at.Add(sh.grace))
}

// bgRead copies the master into the ring until the terminal's output ends, then closes it.
func (sh *Shell) bgRead() {
	defer func() {
		sh.master.Close()
		sh.mu.Lock()
		sh.outDone = true
		sh.markEndLocked()
		sh.mu.Unlock()
	}()
	buf := make([]byte, shellReadBytes)
	leftover := -1 // bytes to drain after the grace ran out; -1 while it has not
	for {
		want := len(buf)
		if leftover >= 0 {
			want = min(want, leftover)
		}
		n, err := sh.master.Read(buf[:want])
		if n > 0 {
			sh.mu.Lock()
			sh.ring.write(buf[:n])
			sh.notifyLocked()
			sh.mu.Unlock()
		}
		if leftover >= 0 {
			leftover -= n
			if leftover <= 0 || err != nil {
				return
			}
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// What is in the terminal now is taken; nothing after it.
			leftover = pipeBuffered(sh.master)
			_ = sh.master.SetReadDeadline(time.Time{})
			if leftover <= 0 {
				return
			}
			continue
		}
		if err != nil { // EIO: every slave descriptor is closed; or the master was closed
			return
		}
	}
}

// endReplyLocked is the end REPLY of shell_attach.
func (sh *Shell) endReplyLocked() map[string]any {
	code, sig := outcome(sh.status)
	return map[string]any{
		"exit_code":   code,
		"signal":      sig,
		"duration_ms": sh.exitedAt.Sub(sh.started).Milliseconds(),
	}
}

// control runs fn on the master's descriptor; it fails once the master is closed.
func (sh *Shell) control(fn func(fd int) error) error {
	rc, err := sh.master.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// foreground returns the terminal's foreground process group.
func (sh *Shell) foreground() (int, error) {
	var pgrp int
	err := sh.control(func(fd int) error {
		var err error
		pgrp, err = unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		return err
	})
	return pgrp, err
}

// resize sets the terminal size (the kernel sends SIGWINCH to the foreground group) and tells
// every attached stream. An ended shell has no terminal left: nothing happens.
func (sh *Shell) resize(cols, rows int) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.outDone {
		return nil
	}
	err := sh.control(func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)})
	})
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	if err != nil {
		return err
	}
	sh.cols, sh.rows = cols, rows
	for sub := range sh.subs {
		sub.queueLocked(map[string]any{"event": "resize", "cols": cols, "rows": rows})
	}
	return nil
}

// signal sends sig to the foreground process group or to the shell's own group. Nothing is
// sent once the shell has been reaped (its pid may be reused); a group that is gone already
// (ESRCH) is not an error either.
func (sh *Shell) signal(sig unix.Signal, foreground bool) error {
	sh.mu.Lock()
	exited := sh.exited
	sh.mu.Unlock()
	if exited {
		return nil
	}
	pgrp := sh.Pid
	if foreground {
		// Without a terminal (closed, or the shell dropped it) the shell's group is the front.
		if fg, err := sh.foreground(); err == nil && fg > 0 {
			pgrp = fg
		}
	}
	if err := unix.Kill(-pgrp, sig); err != nil && err != unix.ESRCH {
		return err
	}
	return nil
}

// sessionGroups lists the process groups of the shell's session (the shell leads it, so the
// session id is its pid) found in /proc, plus, until the shell has been reaped, its own group
// and the terminal's foreground group.
func (sh *Shell) sessionGroups() []int {
	sh.mu.Lock()
	exited := sh.exited
	sh.mu.Unlock()
	seen := map[int]bool{}
	if !exited {
		seen[sh.Pid] = true
		if fg, err := sh.foreground(); err == nil && fg > 0 {
			seen[fg] = true
		}
	}
	for _, pg := range procSessionGroups(sh.Pid) {
		seen[pg] = true
	}
	out := make([]int, 0, len(seen))
	for pg := range seen {
		out = append(out, pg)
	}
	sort.Ints(out)
	return out
}

// procSessionGroups scans /proc for processes of session sid and returns their groups.
func procSessionGroups(sid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(raw), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(raw[i+1:]))
		if len(f) < 4 || f[0] == "Z" {
			continue
		}
		pgrp, err1 := strconv.Atoi(f[2])
		session, err2 := strconv.Atoi(f[3])
		if err1 == nil && err2 == nil && session == sid && pgrp > 0 {
			out = append(out, pgrp)
		}
	}
	return out
}

func killGroups(groups []int, sig unix.Signal) {
	for _, pg := range groups {
		_ = unix.Kill(-pg, sig)
	}
}

// waitUntil polls cond every few milliseconds until it holds or d has passed.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// close ends the shell (shell_close): SIGHUP to its session's process groups, SIGKILL after
// wait to those left, then the terminal is closed. It returns once the shell has ended and
// nothing is left in its session.
func (sh *Shell) close(wait time.Duration) error {
	ended := func() bool {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return sh.endedLocked()
	}
	exited := func() bool {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return sh.exited
	}
	// What an ended shell left behind in its session goes too. (A session id or group id is
	// not reused while /proc still shows a member, so the scan finds no stranger.)
	if groups := sh.sessionGroups(); len(groups) > 0 || !ended() {
		killGroups(groups, unix.SIGHUP)
		waitUntil(wait, func() bool { return ended() && len(procSessionGroups(sh.Pid)) == 0 })
		if left := sh.sessionGroups(); len(left) > 0 {
			killGroups(left, unix.SIGKILL)
		}
		if !waitUntil(shellKillWait, exited) {
			return channel.Errorf(spec.CodeIoError, "shell %s (pid %d) did not exit after SIGKILL", sh.ID, sh.Pid)
		}
		// The shell is gone; whatever still holds the terminal does not keep it open any more.
		// A short wait lets the reader take what the shell wrote last.
		waitUntil(100*time.Millisecond, ended)
		sh.master.Close()
		waitUntil(shellKillWait, ended)
	}
	return nil
}

// openPty opens a new pty pair: the master as a pollable file, the slave as a raw blocking
// descriptor (the child's stdin, stdout and stderr) without close-on-exec cleared.
func openPty(cols, rows int) (*os.File, int, error) {
	master, err := os.OpenFile(ptmxPath, os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, -1, err
	}
	slave := -1
	err = func() error {
		rc, err := master.SyscallConn()
		if err != nil {
			return err
		}
		var ierr error
		if err := rc.Control(func(fd uintptr) {
			if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr != nil {
				ierr = os.NewSyscallError("TIOCSPTLCK", ierr)
				return
			}
			if ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ,
				&unix.Winsize{Row: uint16(rows), Col: uint16(cols)}); ierr != nil {
				ierr = os.NewSyscallError("TIOCSWINSZ", ierr)
				return
			}
			// TIOCGPTPEER opens the slave through the master, whatever is mounted at /dev/pts.
			r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, unix.TIOCGPTPEER,
				uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
			if errno == 0 {
				slave = int(r)
				return
			}
			n, err := unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
			if err != nil {
				ierr = os.NewSyscallError("TIOCGPTN", err)
				return
			}
			path := "/dev/pts/" + strconv.Itoa(n)
			if slave, err = unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err != nil {
				ierr = &os.PathError{Op: "open", Path: path, Err: err}
			}
		}); err != nil {
			return err
		}
		return ierr
	}()
	if err != nil {
		master.Close()
		return nil, -1, err
	}
	return master, slave, nil
}

// newShellID returns "sh-" and 12 lowercase hex digits.
func newShellID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; a clock-based id keeps the agent going if it did.
		n := time.Now().UnixNano()
		for i := range b {
			b[i] = byte(n >> (8 * i))
		}
	}
	return "sh-" + hex.EncodeToString(b[:])
}

// shellRequest is a validated shell_open request.
type shellRequest struct {
	command
	cols, rows int
	scrollback int
}

// openShell spawns the shell on a new pty and registers it.
func (s *Service) openShell(r *shellRequest) (*Shell, error) {
	if fi, err := os.Stat(r.cwd); err != nil {
		return nil, channel.FromOS(r.cwd, err)
	} else if !fi.IsDir() {
		return nil, channel.Errorf(spec.CodeNotFound, "cwd %s is not a directory", r.cwd)
	}
	path, err := lookPath(r.argv[0], r.cwd, r.env)
	if err != nil {
		return nil, err
	}

	t := &s.shells
	t.mu.Lock()
	defer t.mu.Unlock()
	s.pruneShellsLocked(time.Now())
	if len(t.m) >= t.limit() {
		return nil, channel.Errorf(spec.CodeBusy, "%d shells are open (running, or ended within exit_ttl_ms)", len(t.m))
	}
	if r.tag != "" {
		for _, q := range t.m {
			if q.Tag == r.tag && q.running() {
				return nil, channel.Errorf(spec.CodeExists, "a running shell has tag %q", r.tag)
			}
		}
	}

	master, slave, err := openPty(r.cols, r.rows)
	if err != nil {
		return nil, channel.Errorf(spec.CodeSpawnFailed, "pty: %v", err)
	}
	defer unix.Close(slave)
	if r.cred != nil {
		// The terminal belongs to its user, as login(1) does it; the group stays (tty).
		_ = unix.Fchown(slave, int(r.cred.Uid), -1)
	}
	id := newShellID()
	for t.m[id] != nil {
		id = newShellID()
	}
	sh := &Shell{
		ID: id, Tag: r.tag, Argv: r.argv, master: master, grace: s.OutputGrace, log: s.log,
		changed: make(chan struct{}), ring: byteRing{size: r.scrollback},
		cols: r.cols, rows: r.rows, subs: make(map[*shellSub]struct{}),
	}
	attr := &syscall.ProcAttr{
		Dir:   r.cwd,
		Env:   r.env,
		Files: []uintptr{uintptr(slave), uintptr(slave), uintptr(slave)},
		Sys: &syscall.SysProcAttr{
			Setsid: true, Setctty: true, Ctty: 0, Credential: r.cred,
		},
	}
	sh.started = time.Now()
	pid, err := s.reaper.start(func() (int, error) { return syscall.ForkExec(path, r.argv, attr) }, sh.onExit)
	if err != nil {
		master.Close()
		return nil, spawnError(path, err)
	}
	sh.Pid = pid
	if t.m == nil {
		t.m = make(map[string]*Shell)
	}
	t.m[id] = sh
	channel.Go(s.log, "shell reader", sh.bgRead, func(any) {
		// A panic here would leave the shell without a reader: end its output so it can end.
		sh.master.Close()
		sh.mu.Lock()
		sh.outDone = true
		sh.markEndLocked()
		sh.mu.Unlock()
	})
	return sh, nil
}

func (sh *Shell) running() bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return !sh.exited
}

// pruneShellsLocked forgets shells ended for longer than ExitTTL; s.shells.mu must be held.
func (s *Service) pruneShellsLocked(now time.Time) {
	for id, sh := range s.shells.m {
		sh.mu.Lock()
		old := !sh.endedAt.IsZero() && now.Sub(sh.endedAt) > s.ExitTTL
		sh.mu.Unlock()
		if old {
			delete(s.shells.m, id)
		}
	}
}

// shellSnapshot prunes and returns the shells by start time.
func (s *Service) shellSnapshot() []*Shell {
	t := &s.shells
	t.mu.Lock()
	s.pruneShellsLocked(time.Now())
	out := make([]*Shell, 0, len(t.m))
	for _, sh := range t.m {
		out = append(out, sh)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].started.Equal(out[j].started) {
			return out[i].started.Before(out[j].started)
		}
		return out[i].Pid < out[j].Pid
	})
	return out
}

// findShell returns the shell named by the request's "id".
func (s *Service) findShell(req channel.Request) (*Shell, error) {
	id, err := req.String("id", "")
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, channel.BadRequest("id", "required")
	}
	t := &s.shells
	t.mu.Lock()
	defer t.mu.Unlock()
	s.pruneShellsLocked(time.Now())
	sh := t.m[id]
	if sh == nil {
		if len(id) > 64 {
			id = id[:64] + "..."
		}
		return nil, channel.Errorf(spec.CodeNotFound, "no shell with id %q", id)
	}
	return sh, nil
}

// forgetShell removes sh from the table (shell_close).
func (s *Service) forgetShell(sh *Shell) {
	t := &s.shells
	t.mu.Lock()
	if t.m[sh.ID] == sh {
		delete(t.m, sh.ID)
	}
	t.mu.Unlock()
}

// byteRing keeps the newest size bytes of a stream of bytes, addressed by absolute offset:
// offset total-1 is the newest byte, max(0, total-size) the oldest still held. The buffer
// grows as bytes arrive, up to size, so an idle shell costs little.
type byteRing struct {
	buf   []byte
	size  int
	total int64 // bytes ever written
}

// oldest is the offset of the oldest byte still held.
func (r *byteRing) oldest() int64 { return max(0, r.total-int64(r.size)) }

func (r *byteRing) write(b []byte) {
	if skip := len(b) - r.size; skip > 0 {
		r.total += int64(skip)
		b = b[skip:]
		r.grow(r.size)
	}
	for len(b) > 0 {
		pos := int(r.total % int64(r.size))
		var k int
		if pos == len(r.buf) { // still filling: pos < size, since it is a remainder
			k = min(len(b), r.size-pos)
			r.grow(pos + k)
			copy(r.buf[pos:], b[:k])
		} else {
			k = copy(r.buf[pos:], b)
		}
		r.total += int64(k)
		b = b[k:]
	}
}

// grow extends buf to n bytes (n <= size), never allocating more than size.
func (r *byteRing) grow(n int) {
	if n <= len(r.buf) {
		return
	}
	if n > cap(r.buf) {
		c := min(r.size, max(n, 2*cap(r.buf), 4096))
		nb := make([]byte, len(r.buf), c)
		copy(nb, r.buf)
		r.buf = nb
	}
	r.buf = r.buf[:n]
}

// read copies bytes from offset from (oldest <= from <= total) into p, up to the end of the
// buffer or of the data, and returns the count.
func (r *byteRing) read(from int64, p []byte) int {
	if from < r.oldest() || from >= r.total {
		return 0
	}
	pos := int(from % int64(r.size))
	end := len(r.buf)
	if avail := r.total - from; int64(end-pos) > avail {
		end = pos + int(avail)
	}
	return copy(p, r.buf[pos:end])
}
