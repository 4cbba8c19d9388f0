package process

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// execRequest is a validated exec request (protocol.md section 5.2).
type execRequest struct {
	command
	stdin   bool
	timeout time.Duration
}

// command is what exec and shell_open both start: a program, its environment, folder, user and
// tag.
type command struct {
	argv []string
	env  []string
	cwd  string
	cred *syscall.Credential
	tag  string
}

// tagBytes bounds a process's or shell's tag.
const tagBytes = 256

// parseCommand checks argv (chosen by the caller from its fields) and reads env, cwd, user and
// tag; extraEnv is added for names the request leaves out.
func (s *Service) parseCommand(req channel.Request, argv []string, extraEnv map[string]string) (command, error) {
	var c command
	for _, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return c, channel.BadRequest("argv", "contains a NUL byte")
		}
	}
	c.argv = argv
	env, err := req.StringMap("env")
	if err != nil {
		return c, err
	}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			return c, channel.BadRequest("env", "invalid variable %q", k)
		}
		c.env = append(c.env, k+"="+v)
	}
	for k, v := range extraEnv {
		if _, given := env[k]; !given {
			c.env = append(c.env, k+"="+v)
		}
	}
	sort.Strings(c.env)
	c.cwd = "/"
	if req.Has("cwd") {
		if c.cwd, err = req.Path("cwd"); err != nil {
			return c, err
		}
	}
	user, err := req.String("user", "root")
	if err != nil {
		return c, err
	}
	if c.cred, err = resolveUser(user, s.EtcDir); err != nil {
		return c, err
	}
	if c.tag, err = req.String("tag", ""); err != nil {
		return c, err
	}
	if len(c.tag) > tagBytes {
		return c, channel.BadRequest("tag", "longer than %d bytes", tagBytes)
	}
	return c, nil
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (s *Service) exec(st *channel.Stream, req channel.Request) (any, error) {
	r, err := s.parseExec(req)
	if err != nil {
		return nil, err
	}
	p, err := s.spawn(r)
	if err != nil {
		return nil, err
	}
	sub := p.subscribe()
	if err := st.Event(map[string]any{"event": "start", "pid": p.Pid}); err != nil {
		p.detach(sub)
		p.closeStdin()
		return nil, nil
	}
	if r.stdin {
		channel.Go(s.log, "exec stdin", func() { p.feedStdin(st) }, nil)
	}
	defer p.closeStdin()
	return p.serve(st, sub)
}

func (s *Service) parseExec(req channel.Request) (*execRequest, error) {
	var r execRequest
	argv, err := req.Strings("argv")
	if err != nil {
		return nil, err
	}
	shell, err := req.String("shell", "")
	if err != nil {
		return nil, err
	}
	switch hasArgv, hasShell := req.Has("argv"), req.Has("shell"); {
	case hasArgv == hasShell:
		return nil, channel.BadRequest("argv", "exactly one of argv and shell is required")
	case hasArgv && len(argv) == 0:
		return nil, channel.BadRequest("argv", "must not be empty")
	case hasArgv && argv[0] == "":
		return nil, channel.BadRequest("argv", "the program name is empty")
	case hasShell:
		argv = []string{"/bin/sh", "-c", shell}
	}
	if r.command, err = s.parseCommand(req, argv, nil); err != nil {
		return nil, err
	}
	if r.stdin, err = req.Bool("stdin", false); err != nil {
		return nil, err
	}
	ms, err := req.Int("timeout_ms", 0)
	if err != nil {
		return nil, err
	}
	if ms < 0 || ms > int64(365*24*time.Hour/time.Millisecond) {
		return nil, channel.BadRequest("timeout_ms", "out of range: %d", ms)
	}
	r.timeout = time.Duration(ms) * time.Millisecond
	return &r, nil
}

// spawn starts the process in its own group with three fresh descriptors, registers it with
// the reaper and the service, and starts its pumps.
func (s *Service) spawn(r *execRequest) (*Process, error) {
	if fi, err := os.Stat(r.cwd); err != nil {
		return nil, channel.FromOS(r.cwd, err)
	} else if !fi.IsDir() {
		return nil, channel.Errorf(spec.CodeNotFound, "cwd %s is not a directory", r.cwd)
	}
	path, err := lookPath(r.argv[0], r.cwd, r.env)
	if err != nil {
		return nil, err
	}

	var childStdin, parentStdin *os.File
	if r.stdin {
		if childStdin, parentStdin, err = os.Pipe(); err != nil {
			return nil, channel.Errorf(spec.CodeSpawnFailed, "stdin pipe: %v", err)
		}
	} else if childStdin, err = os.Open(os.DevNull); err != nil {
		return nil, channel.Errorf(spec.CodeSpawnFailed, "%s: %v", os.DevNull, err)
	}
	defer childStdin.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		parentStdin.Close()
		return nil, channel.Errorf(spec.CodeSpawnFailed, "stdout pipe: %v", err)
	}
	defer outW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		parentStdin.Close()
		outR.Close()
		return nil, channel.Errorf(spec.CodeSpawnFailed, "stderr pipe: %v", err)
	}
	defer errW.Close()

	p := &Process{
		Tag: r.tag, Argv: r.argv, outputs: []*os.File{outR, errR}, grace: s.OutputGrace,
		changed: make(chan struct{}), open: 2, stdin: parentStdin,
	}
	attr := &syscall.ProcAttr{
		Dir:   r.cwd,
		Env:   r.env,
		Files: []uintptr{childStdin.Fd(), outW.Fd(), errW.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: r.cred},
	}

	// s.mu is held across the fork so that the tag check and the registration are atomic.
	s.mu.Lock()
	s.pruneLocked(time.Now())
	if r.tag != "" {
		for _, q := range s.procs {
			if q.Tag == r.tag && q.state().running {
				s.mu.Unlock()
				parentStdin.Close()
				outR.Close()
				errR.Close()
				return nil, channel.Errorf(spec.CodeExists, "a running process has tag %q", r.tag)
			}
		}
	}
	p.started = time.Now()
	pid, err := s.reaper.start(func() (int, error) { return syscall.ForkExec(path, r.argv, attr) }, p.onExit)
	if err != nil {
		s.mu.Unlock()
		parentStdin.Close()
		outR.Close()
		errR.Close()
		return nil, spawnError(path, err)
	}
	p.Pid = pid
	s.procs[pid] = p
	s.mu.Unlock()

	if r.timeout > 0 {
		p.mu.Lock()
		if !p.exited {
			p.timer = time.AfterFunc(r.timeout, p.onTimeout)
		}
		p.mu.Unlock()
	}
	channel.Go(s.log, "stdout pump", func() { p.bgPump(outR, spec.ChannelStdout) }, nil)
	channel.Go(s.log, "stderr pump", func() { p.bgPump(errR, spec.ChannelStderr) }, nil)
	return p, nil
}

func spawnError(path string, err error) error {
	if errors.Is(err, syscall.ENOENT) {
		return channel.Errorf(spec.CodeNotFound, "%s: %v", path, err)
	}
	return channel.Errorf(spec.CodeSpawnFailed, "%s: %v", path, err)
}

// lookPath resolves a program name against PATH from the request's own environment (the
// agent's environment is not the process's). Names with a slash are used as they are.
func lookPath(name, cwd string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		candidate := filepath.Join(dir, name)
		if fi, err := os.Stat(candidate); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", channel.Errorf(spec.CodeNotFound, "executable %q not found in PATH %q", name, path)
}
