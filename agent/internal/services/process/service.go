// Package process implements the exec, attach, signal and ps ops (protocol.md sections 5.2 to
// 5.4) and the PID 1 duty of reaping every child.
//
// Life of a process:
//
//	exec ──spawn──▶ running ──exit (reaper)──▶ exited ──pipes closed──▶ done ──exit_ttl_ms──▶ forgotten
//	                   │  ▲
//	      CANCEL/HELLO │  │ attach
//	                   ▼  │
//	                 detached: output kept in a ring of detached_buffer_bytes, oldest dropped
//
// Two pump goroutines per process move stdout and stderr from the pipes into the ring; the
// attached stream's handler moves the ring to the host as credit allows. While attached and
// the ring is full the pumps stop reading, so a flooding process blocks on its own pipe and the
// agent holds a bounded amount per process.
package process

import (
	"log"
	"sort"
	"sync"
	"time"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// Service owns every process started through the agent.
type Service struct {
	log    *log.Logger
	reaper *reaper

	// OutputGrace bounds how long a process's output pipes are read after it exits, for pipes
	// that a background grandchild keeps open. See Process.bgPump.
	OutputGrace time.Duration
	// ExitTTL is how long an ended process can still be attached and listed.
	ExitTTL time.Duration
	// EtcDir holds the passwd and group files used to resolve users.
	EtcDir string

	mu    sync.Mutex // guards procs
	procs map[int]*Process

	shells shellSet // shell_* ops (shell.go)
}

// New returns the service; its reaper starts with it, before the first fork.
func New(logger *log.Logger) *Service {
	return &Service{
		log:         logger,
		reaper:      sharedReaper(),
		OutputGrace: 2 * time.Second,
		ExitTTL:     spec.ExitTTLMs * time.Millisecond,
		EtcDir:      "/etc",
		procs:       make(map[int]*Process),
	}
}

// Handlers maps this service's ops to their handlers.
func (s *Service) Handlers() map[string]channel.Handler {
	return map[string]channel.Handler{
		"exec":   s.exec,
		"attach": s.attach,
		"signal": s.signal,
		"ps":     s.ps,

		"shell_open":   s.shellOpen,
		"shell_attach": s.shellAttach,
		"shell_resize": s.shellResize,
		"shell_signal": s.shellSignal,
		"shell_list":   s.shellList,
		"shell_close":  s.shellClose,
	}
}

// Inputs names the ops that read DATA on channel 0 (channel.Inputs): exec with stdin, and
// shell_attach always (the writer's bytes go to the terminal, a reader's are consumed and dropped).
func (s *Service) Inputs() channel.Inputs {
	return channel.Inputs{
		"exec": func(req channel.Request) bool {
			stdin, err := req.Bool("stdin", false)
			return err == nil && stdin
		},
		"shell_attach": nil,
	}
}

// Running counts processes started through the agent that have not exited.
func (s *Service) Running() int {
	n := 0
	for _, p := range s.snapshot() {
		if p.state().running {
			n++
		}
	}
	return n
}

// snapshot forgets processes done for longer than ExitTTL and returns the others by pid.
func (s *Service) snapshot() []*Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(time.Now())
	out := make([]*Process, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out
}

// pruneLocked forgets processes done for longer than ExitTTL, with their detached output; s.mu
// must be held. snapshot and spawn both call it, so a workload that only ever execs does not
// keep every record it ever made.
func (s *Service) pruneLocked(now time.Time) {
	for pid, p := range s.procs {
		if st := p.state(); st.done && now.Sub(st.ended) > s.ExitTTL {
			delete(s.procs, pid)
		}
	}
}

// find selects a process by the request's pid or tag. Among processes with the same tag the
// running one wins, else the most recently started.
func (s *Service) find(req channel.Request) (*Process, error) {
	hasPid, hasTag := req.Has("pid"), req.Has("tag")
	if hasPid == hasTag {
		return nil, channel.BadRequest("pid", "exactly one of pid and tag is required")
	}
	procs := s.snapshot()
	if hasPid {
		pid, err := req.Int("pid", 0)
		if err != nil {
			return nil, err
		}
		for _, p := range procs {
			if int64(p.Pid) == pid {
				return p, nil
			}
		}
		return nil, channel.Errorf(spec.CodeNotFound, "no process with pid %d", pid)
	}
	tag, err := req.String("tag", "")
	if err != nil {
		return nil, err
	}
	var best *Process
	for _, p := range procs {
		if p.Tag != tag {
			continue
		}
		if best == nil || (p.state().running && !best.state().running) ||
			(p.state().running == best.state().running && p.started.After(best.started)) {
			best = p
		}
	}
	if best == nil {
		return nil, channel.Errorf(spec.CodeNotFound, "no process with tag %q", tag)
	}
	return best, nil
}
