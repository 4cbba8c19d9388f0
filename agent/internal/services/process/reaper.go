package process

import (
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// reaper is the only caller of wait4 in the agent.
//
// As PID 1 the agent inherits every orphan in the guest, so it must reap children it never
// started; exec.Cmd.Wait would race it for the same pids. One goroutine therefore waits on
// SIGCHLD and calls wait4(-1, WNOHANG) until nothing is left, handing the statuses of tracked
// pids to their owners and discarding the rest.
//
// Invariant: mu is held from fork until the pid is registered, and taken again before a reaped
// pid is looked up, so a child that exits before start returns is still dispatched.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]func(status unix.WaitStatus, at time.Time)
}

var (
	reaperOnce sync.Once
	theReaper  *reaper
)

// sharedReaper returns the process-wide reaper, starting it on first use. SIGCHLD and wait4(-1)
// are process-wide, so there can only be one.
func sharedReaper() *reaper {
	reaperOnce.Do(func() {
		theReaper = &reaper{waiters: make(map[int]func(unix.WaitStatus, time.Time))}
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, unix.SIGCHLD)
		go theReaper.bgLoop(sigs)
	})
	return theReaper
}

// bgLoop reaps on every SIGCHLD. Signals coalesce (the channel holds one), which is why each
// wake-up reaps until wait4 reports nothing more.
func (r *reaper) bgLoop(sigs <-chan os.Signal) {
	for range sigs {
		r.reapAll()
	}
}

func (r *reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		at := time.Now()
		r.mu.Lock()
		onExit := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if onExit != nil {
			onExit(ws, at)
		}
	}
}

// start runs spawn and registers onExit for the pid it returns, atomically with respect to
// reaping. onExit runs on the reaper goroutine and must not block.
func (r *reaper) start(spawn func() (int, error), onExit func(unix.WaitStatus, time.Time)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := spawn()
	if err != nil {
		return 0, err
	}
	r.waiters[pid] = onExit
	return pid, nil
}
