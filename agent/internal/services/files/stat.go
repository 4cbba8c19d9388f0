package files

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
)

// Stat is the stat object of protocol.md section 5.5.
type Stat struct {
	Name       string  `json:"name"`
	Path       string  `json:"path"`
	Type       string  `json:"type"`
	Size       int64   `json:"size"`
	Mode       uint32  `json:"mode"`
	UID        uint32  `json:"uid"`
	GID        uint32  `json:"gid"`
	MtimeMs    int64   `json:"mtime_ms"`
	LinkTarget *string `json:"link_target"`
}

// lstat describes path without following a final symlink.
func lstat(path string) (*Stat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return nil, channel.FromOS(path, err)
	}
	return describe(path, &st), nil
}

func describe(path string, st *unix.Stat_t) *Stat {
	s := &Stat{
		Name:    filepath.Base(path),
		Path:    path,
		Size:    st.Size,
		Mode:    st.Mode & 0o7777,
		UID:     st.Uid,
		GID:     st.Gid,
		MtimeMs: st.Mtim.Sec*1000 + st.Mtim.Nsec/1e6,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		s.Type = "file"
	case unix.S_IFDIR:
		s.Type = "dir"
	case unix.S_IFLNK:
		s.Type = "symlink"
		if target, err := os.Readlink(path); err == nil {
			s.LinkTarget = &target
		}
	default:
		s.Type = "other"
	}
	return s
}

func (s *Service) stat(st *channel.Stream, req channel.Request) (any, error) {
	path, err := req.Path("path")
	if err != nil {
		return nil, err
	}
	return lstat(path)
}
