package process

import (
	"encoding/json"
	"sort"
	"unicode/utf8"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// Bounds of a ps REPLY (protocol.md section 5.4), which must fit one frame.
const (
	psArgvItems = 64   // argv items listed per process
	psArgvBytes = 4096 // JSON-encoded argv per process
	psEnded     = 256  // ended processes listed, the most recently ended first
	// psReplyBytes leaves room for the JSON around the entries.
	psReplyBytes = spec.MaxPayloadBytes - 4096
)

// ps lists running processes and those ended within ExitTTL, by pid. Each argv is cut to
// psArgvItems items and psArgvBytes (argv_truncated says so); at most psEnded ended processes
// are listed, and entries that would overflow the frame are left out, ended ones first
// (truncated says so).
func (s *Service) ps(st *channel.Stream, req channel.Request) (any, error) {
	type entry struct {
		raw     json.RawMessage
		running bool
		ended   int64
		pid     int
	}
	procs := s.snapshot()
	entries := make([]entry, 0, len(procs))
	for _, p := range procs {
		p.mu.Lock()
		var tag, code, sig any
		if p.Tag != "" {
			tag = p.Tag
		}
		if p.exited {
			end := p.endReplyLocked()
			code, sig = end["exit_code"], end["signal"]
		}
		argv, cut := psArgv(p.Argv)
		raw, err := json.Marshal(map[string]any{
			"pid": p.Pid, "tag": tag, "argv": argv, "argv_truncated": cut, "running": !p.exited,
			"exit_code": code, "signal": sig,
		})
		e := entry{raw: raw, running: !p.exited, ended: p.ended.UnixNano(), pid: p.Pid}
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}

	// Choose what to list: running processes first, then the most recently ended.
	order := make([]int, len(entries))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ea, eb := entries[order[a]], entries[order[b]]
		if ea.running != eb.running {
			return ea.running
		}
		return !ea.running && ea.ended > eb.ended
	})
	keep := make([]bool, len(entries))
	size, ended, truncated := 0, 0, false
	for _, i := range order {
		e := entries[i]
		if (!e.running && ended == psEnded) || size+len(e.raw)+1 > psReplyBytes {
			truncated = true
			continue
		}
		keep[i] = true
		size += len(e.raw) + 1
		if !e.running {
			ended++
		}
	}
	out := make([]json.RawMessage, 0, len(entries))
	for i, e := range entries {
		if keep[i] {
			out = append(out, e.raw)
		}
	}
	return map[string]any{"processes": out, "truncated": truncated}, nil
}

// psArgv returns argv cut to psArgvItems items and psArgvBytes of JSON, and whether it was cut.
// The item that does not fit is cut short at a character boundary.
func psArgv(argv []string) ([]string, bool) {
	out := make([]string, 0, min(len(argv), psArgvItems))
	left := psArgvBytes - len("[]")
	for i, a := range argv {
		if i == psArgvItems {
			return out, true
		}
		sep := 0
		if i > 0 {
			sep = 1
		}
		if n := jsonLen(a) + sep; n <= left {
			out = append(out, a)
			left -= n
			continue
		}
		if cut := fitJSON(a, left-sep); cut != "" {
			out = append(out, cut)
		}
		return out, true
	}
	return out, false
}

// fitJSON returns the longest prefix of s, cut at a character boundary, whose JSON string
// encoding takes at most max bytes.
func fitJSON(s string, max int) string {
	// The encoding is never shorter than the string plus its quotes.
	hi := min(len(s), max-2)
	lo := 0 // s[:lo] fits
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if jsonLen(s[:runeStart(s, mid)]) <= max {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return s[:runeStart(s, lo)]
}

// runeStart moves i back to the start of the character it falls in.
func runeStart(s string, i int) int {
	for i > 0 && i < len(s) && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}

func jsonLen(s string) int {
	b, _ := json.Marshal(s)
	return len(b)
}
