package process

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// The shell ops (protocol.md section 5.6).

const (
	shellMaxCells      = 1000 // cols and rows are 1..shellMaxCells
	shellMinScrollback = 1024
)

func (s *Service) shellOpen(st *channel.Stream, req channel.Request) (any, error) {
	r, err := s.parseShellOpen(req)
	if err != nil {
		return nil, err
	}
	sh, err := s.openShell(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"id": sh.ID, "pid": sh.Pid}, nil
}

func (s *Service) parseShellOpen(req channel.Request) (*shellRequest, error) {
	var r shellRequest
	argv, err := req.Strings("argv")
	if err != nil {
		return nil, err
	}
	switch {
	case !req.Has("argv"):
		return nil, channel.BadRequest("argv", "required")
	case len(argv) == 0:
		return nil, channel.BadRequest("argv", "must not be empty")
	case argv[0] == "":
		return nil, channel.BadRequest("argv", "the program name is empty")
	}
	if r.command, err = s.parseCommand(req, argv, map[string]string{"TERM": "xterm-256color"}); err != nil {
		return nil, err
	}
	if r.cols, err = cells(req, "cols", 80); err != nil {
		return nil, err
	}
	if r.rows, err = cells(req, "rows", 24); err != nil {
		return nil, err
	}
	sb, err := req.Int("scrollback_bytes", spec.ShellScrollbackBytes)
	if err != nil {
		return nil, err
	}
	if sb < shellMinScrollback || sb > spec.MaxShellScrollbackBytes {
		return nil, channel.BadRequest("scrollback_bytes", "must be within %d..%d, got %d",
			shellMinScrollback, spec.MaxShellScrollbackBytes, sb)
	}
	r.scrollback = int(sb)
	return &r, nil
}

// cells reads a terminal dimension: 1..shellMaxCells, def when absent.
func cells(req channel.Request, name string, def int64) (int, error) {
	n, err := req.Int(name, def)
	if err != nil {
		return 0, err
	}
	if n < 1 || n > shellMaxCells {
		return 0, channel.BadRequest(name, "must be within 1..%d, got %d", shellMaxCells, n)
	}
	return int(n), nil
}

// shellAttach streams the shell's terminal until the shell has ended (see serve).
func (s *Service) shellAttach(st *channel.Stream, req channel.Request) (any, error) {
	sh, err := s.findShell(req)
	if err != nil {
		return nil, err
	}
	write, err := req.Bool("write", false)
	if err != nil {
		return nil, err
	}
	scrollback, err := req.Bool("scrollback", true)
	if err != nil {
		return nil, err
	}
	return sh.serve(st, write, scrollback)
}

// serve attaches st to the shell: EVENT start, then the ring from the stream's cursor and live
// output as credit allows, then EOF on channel 1 and the end REPLY once the shell has ended and
// everything has been sent. EVENTs queued by other goroutines (resize, writer) are sent by
// this goroutine, so the stream's frames have one author and start comes first.
//
// It returns nil, nil when the stream was dropped (CANCEL, HELLO): the shell keeps running.
func (sh *Shell) serve(st *channel.Stream, write, scrollback bool) (any, error) {
	sub := &shellSub{poke: make(chan struct{}, 1)}
	sh.mu.Lock()
	sub.cursor = sh.ring.total
	if scrollback {
		sub.cursor = sh.ring.oldest()
	}
	if write {
		if prev := sh.writer; prev != nil {
			prev.queueLocked(map[string]any{"event": "writer", "writer": false})
		}
		sh.writer = sub
	}
	sh.subs[sub] = struct{}{}
	start := map[string]any{"event": "start", "pid": sh.Pid, "cols": sh.cols, "rows": sh.rows, "writer": write}
	sh.mu.Unlock()
	defer sh.detach(sub)

	if err := st.Event(start); err != nil {
		return nil, nil
	}
	// Channel 0 is always read: the writer's bytes go to the terminal, a reader's are dropped.
	channel.Go(sh.log, "shell input", func() { sh.feedInput(st, sub) }, nil)

	buf := make([]byte, spec.DataChunkBytes)
	for {
		sh.mu.Lock()
		if evs := sub.events; len(evs) > 0 {
			sub.events = nil
			sh.mu.Unlock()
			for _, ev := range evs {
				if st.Event(ev) != nil {
					return nil, nil
				}
			}
			continue
		}
		if sub.cursor < sh.ring.total {
			sh.mu.Unlock()
			n, err := st.WaitCredit(sub.poke)
			if errors.Is(err, context.Canceled) {
				continue // an event was queued
			}
			if err != nil {
				return nil, nil
			}
			sh.mu.Lock()
			if len(sub.events) > 0 {
				sh.mu.Unlock()
				continue
			}
			// Bytes overwritten while the stream waited are reported once, when it resumes.
			var skipped int64
			if oldest := sh.ring.oldest(); sub.cursor < oldest {
				skipped = oldest - sub.cursor
				sub.cursor = oldest
			}
			k := sh.ring.read(sub.cursor, buf[:min(n, len(buf))])
			sub.cursor += int64(k)
			sh.mu.Unlock()
			if skipped > 0 && st.Event(map[string]any{"event": "skipped", "bytes": skipped}) != nil {
				return nil, nil
			}
			// Only this goroutine spends the stream's credit, so Send does not wait.
			if st.Send(spec.ChannelStdout, buf[:k]) != nil {
				return nil, nil
			}
			continue
		}
		if sh.endedLocked() {
			reply := sh.endReplyLocked()
			sh.mu.Unlock()
			if st.CloseChannel(spec.ChannelStdout) != nil {
				return nil, nil
			}
			return reply, nil
		}
		w := sh.changed
		sh.mu.Unlock()
		select {
		case <-w:
		case <-sub.poke:
		case <-st.Context().Done():
			return nil, nil
		}
	}
}

// detach removes the stream; a writer that leaves leaves the shell without one.
func (sh *Shell) detach(sub *shellSub) {
	sh.mu.Lock()
	delete(sh.subs, sub)
	if sh.writer == sub {
		sh.writer = nil
	}
	sh.mu.Unlock()
}

func (sh *Shell) isWriter(sub *shellSub) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.writer == sub && !sh.outDone
}

// feedInput consumes the stream's channel-0 DATA until the stream ends or its EOF: while the
// stream is the writer the bytes go to the terminal, otherwise they are dropped. Credit goes
// back to the host as the bytes are written (channel.Stream.Recv), so a terminal that takes no
// more input stops the host's typing, not the session. A write blocked on a full terminal is
// retried in slices so that it gives up once the stream is gone or no longer the writer.
func (sh *Shell) feedInput(st *channel.Stream, sub *shellSub) {
	for {
		data, err := st.Recv()
		if err != nil {
			return
		}
		for len(data) > 0 && sh.isWriter(sub) && st.Context().Err() == nil {
			_ = sh.master.SetWriteDeadline(time.Now().Add(shellInputSlice))
			n, err := sh.master.Write(data)
			data = data[n:]
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				break // the terminal is closed: the shell has ended
			}
		}
	}
}

func (s *Service) shellResize(st *channel.Stream, req channel.Request) (any, error) {
	sh, err := s.findShell(req)
	if err != nil {
		return nil, err
	}
	if !req.Has("cols") {
		return nil, channel.BadRequest("cols", "required")
	}
	if !req.Has("rows") {
		return nil, channel.BadRequest("rows", "required")
	}
	cols, err := cells(req, "cols", 0)
	if err != nil {
		return nil, err
	}
	rows, err := cells(req, "rows", 0)
	if err != nil {
		return nil, err
	}
	if err := sh.resize(cols, rows); err != nil {
		return nil, channel.Errorf(spec.CodeIoError, "resizing shell %s: %v", sh.ID, err)
	}
	return struct{}{}, nil
}

func (s *Service) shellSignal(st *channel.Stream, req channel.Request) (any, error) {
	sh, err := s.findShell(req)
	if err != nil {
		return nil, err
	}
	if !req.Has("signal") {
		return nil, channel.BadRequest("signal", "required")
	}
	sig, err := req.Int("signal", 0)
	if err != nil {
		return nil, err
	}
	if sig < 1 || sig > 64 {
		return nil, channel.BadRequest("signal", "must be within 1..64, got %d", sig)
	}
	target, err := req.String("target", "foreground")
	if err != nil {
		return nil, err
	}
	if target != "foreground" && target != "shell" {
		return nil, channel.BadRequest("target", `must be "foreground" or "shell", got %q`, target)
	}
	if err := sh.signal(unix.Signal(sig), target == "foreground"); err != nil {
		return nil, channel.Errorf(spec.CodeIoError, "signal %d to shell %s: %v", sig, sh.ID, err)
	}
	return struct{}{}, nil
}

func (s *Service) shellList(st *channel.Stream, req channel.Request) (any, error) {
	shells := s.shellSnapshot()
	out := make([]map[string]any, 0, len(shells))
	for _, sh := range shells {
		var tag, code, sig any
		if sh.Tag != "" {
			tag = sh.Tag
		}
		argv, _ := psArgv(sh.Argv)
		sh.mu.Lock()
		if sh.exited {
			end := sh.endReplyLocked()
			code, sig = end["exit_code"], end["signal"]
		}
		out = append(out, map[string]any{
			"id": sh.ID, "pid": sh.Pid, "tag": tag, "argv": argv, "cols": sh.cols, "rows": sh.rows,
			"running": !sh.exited, "exit_code": code, "signal": sig, "attached": len(sh.subs),
			"writer": sh.writer != nil, "started_unix_ms": sh.started.UnixMilli(),
		})
		sh.mu.Unlock()
	}
	return map[string]any{"shells": out}, nil
}

func (s *Service) shellClose(st *channel.Stream, req channel.Request) (any, error) {
	sh, err := s.findShell(req)
	if err != nil {
		return nil, err
	}
	wait := shellCloseWait
	if s.shells.closeWait > 0 {
		wait = s.shells.closeWait
	}
	if err := sh.close(wait); err != nil {
		return nil, err
	}
	s.forgetShell(sh)
	return struct{}{}, nil
}
