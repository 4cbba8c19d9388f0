package process

import (
	"errors"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/spec"
)

// Process is one process started through exec.
type Process struct {
	Pid     int
	Tag     string
	Argv    []string
	started time.Time
	outputs []*os.File // parent ends of the stdout and stderr pipes
	grace   time.Duration

	mu       sync.Mutex    // guards the fields below
	changed  chan struct{} // closed and replaced on every change below, to wake waiters
	ring     ring
	open     int // output pipes still being read
	exited   bool
	status   unix.WaitStatus
	ended    time.Time
	timedOut bool
	timer    *time.Timer   // the timeout_ms timer, stopped at exit
	sub      *subscription // the attached stream, nil while detached
	stdin    *os.File      // write end of stdin when piped; closed when its stream goes
}

// subscription is one attached stream; kicked closes when another attach takes over.
type subscription struct {
	kicked chan struct{}
}

type procState struct {
	running bool
	done    bool // exited and both pipes closed: the end REPLY can be sent
	ended   time.Time
}

func (p *Process) state() procState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return procState{running: !p.exited, done: p.exited && p.open == 0, ended: p.ended}
}

func (p *Process) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// onExit is called by the reaper. Pipes still open now are held by something the process left
// behind; they get OutputGrace more, counted from the exit.
func (p *Process) onExit(ws unix.WaitStatus, at time.Time) {
	p.mu.Lock()
	p.exited = true
	p.status = ws
	p.ended = at
	if p.timer != nil {
		p.timer.Stop()
	}
	p.notifyLocked()
	p.mu.Unlock()
	for _, f := range p.outputs {
		_ = f.SetReadDeadline(at.Add(p.grace))
	}
}

// killGroup sends sig to the process group. ESRCH only means nobody is left in it.
func (p *Process) killGroup(sig unix.Signal) error {
	if err := unix.Kill(-p.Pid, sig); err != nil && err != unix.ESRCH {
		return err
	}
	return nil
}

func (p *Process) onTimeout() {
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		return
	}
	p.timedOut = true
	p.mu.Unlock()
	_ = p.killGroup(unix.SIGKILL)
}

// bgPump copies one output pipe into the ring until the pipe closes.
//
// Grace rule: when the process exits, the pipe normally reaches EOF as soon as it is drained.
// If a background grandchild holds it open, reading would never end and neither would the
// exec; so reads stop OutputGrace after the exit (a read deadline set by onExit). Bytes already
// in the pipe when the grace runs out are still taken, then the pipe is closed.
func (p *Process) bgPump(f *os.File, ch uint16) {
	defer func() {
		f.Close()
		p.mu.Lock()
		p.open--
		p.notifyLocked()
		p.mu.Unlock()
	}()
	buf := make([]byte, spec.DataChunkBytes)
	leftover := -1 // bytes to drain after the grace ran out; -1 while it has not
	for {
		p.waitRoom()
		want := len(buf)
		if leftover >= 0 {
			want = min(want, leftover)
		}
		n, err := f.Read(buf[:want])
		if n > 0 {
			p.push(ch, buf[:n])
		}
		if leftover >= 0 {
			leftover -= n
			if leftover <= 0 || err != nil {
				return
			}
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			leftover = pipeBuffered(f)
			_ = f.SetReadDeadline(time.Time{})
			if leftover == 0 {
				return
			}
			continue
		}
		if err != nil {
			return
		}
	}
}

func pipeBuffered(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ)
	})
	return n
}

// waitRoom blocks while an attached stream has a full ring to deliver first.
func (p *Process) waitRoom() {
	for {
		p.mu.Lock()
		if p.sub == nil || p.ring.size < spec.DetachedBufferBytes {
			p.mu.Unlock()
			return
		}
		w := p.changed
		p.mu.Unlock()
		<-w
	}
}

func (p *Process) push(ch uint16, b []byte) {
	p.mu.Lock()
	p.ring.push(ch, b)
	if p.sub == nil {
		p.ring.trim(spec.DetachedBufferBytes)
	}
	p.notifyLocked()
	p.mu.Unlock()
}

// endReplyLocked is the exec REPLY (protocol.md section 5.2).
func (p *Process) endReplyLocked() map[string]any {
	code, sig := outcome(p.status)
	return map[string]any{
		"exit_code":   code,
		"signal":      sig,
		"timed_out":   p.timedOut,
		"duration_ms": p.ended.Sub(p.started).Milliseconds(),
	}
}

func (p *Process) closeStdin() {
	p.mu.Lock()
	f := p.stdin
	p.stdin = nil
	p.mu.Unlock()
	if f != nil {
		f.Close()
	}
}

// outcome is a wait status as the REPLY fields exit_code and signal: one of them is nil.
func outcome(ws unix.WaitStatus) (code, sig any) {
	switch {
	case ws.Exited():
		code = ws.ExitStatus()
	case ws.Signaled():
		sig = int(ws.Signal())
	}
	return code, sig
}
