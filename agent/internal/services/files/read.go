package files

import (
	"context"
	"errors"
	"io"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// read streams a file: EVENT stat, DATA on channel 0 as credit allows, EOF, REPLY {bytes}.
// Reading only as fast as the host grants credit keeps one chunk in memory at a time.
func (s *Service) read(st *channel.Stream, req channel.Request) (any, error) {
	path, err := req.Path("path")
	if err != nil {
		return nil, err
	}
	offset, err := req.Int("offset", 0)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, channel.BadRequest("offset", "must not be negative")
	}
	length, err := req.Int("length", -1)
	if err != nil {
		return nil, err
	}
	if length < -1 {
		return nil, channel.BadRequest("length", "must be -1 (to the end) or more")
	}

	f, fst, err := openRegular(path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// A CANCEL closes the file, which wakes a read parked in the poller (see openRegular).
	stop := context.AfterFunc(st.Context(), func() { f.Close() })
	defer stop()
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return nil, channel.FromOS(path, err)
		}
	}
	if err := st.Event(withEvent("stat", describe(path, fst))); err != nil {
		return nil, nil
	}

	buf := make([]byte, spec.DataChunkBytes)
	var total int64
	for length < 0 || total < length {
		want := int64(len(buf))
		if length >= 0 {
			want = min(want, length-total)
		}
		n, rerr := f.Read(buf[:want])
		if n > 0 {
			if err := st.Send(spec.ChannelInput, buf[:n]); err != nil {
				return nil, nil
			}
			total += int64(n)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, channel.FromOS(path, rerr)
		}
	}
	if err := st.CloseChannel(spec.ChannelInput); err != nil {
		return nil, nil
	}
	return map[string]any{"bytes": total}, nil
}

// withEvent flattens a stat object into an EVENT body {"event": name, ...stat}.
func withEvent(name string, s *Stat) map[string]any {
	return map[string]any{
		"event": name, "name": s.Name, "path": s.Path, "type": s.Type, "size": s.Size,
		"mode": s.Mode, "uid": s.UID, "gid": s.GID, "mtime_ms": s.MtimeMs, "link_target": s.LinkTarget,
	}
}
