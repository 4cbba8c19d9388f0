package files

import (
	"errors"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// write stores the DATA the host sends on channel 0. Credit is returned as chunks reach the
// file (Stream.Recv), so the host can never get more than one window ahead of the disk.
//
// Without append the bytes go to a temp file in the target's folder that is renamed over the
// path at EOF: readers see the old file or the new one, never half of it. CANCEL, a new HELLO
// or an error removes the temp file. With append there is nothing to undo; bytes written stay.
func (s *Service) write(st *channel.Stream, req channel.Request) (any, error) {
	path, err := req.Path("path")
	if err != nil {
		return nil, err
	}
	mode, err := req.Mode("mode", 0o644)
	if err != nil {
		return nil, err
	}
	appendMode, err := req.Bool("append", false)
	if err != nil {
		return nil, err
	}
	parents, err := req.Bool("parents", false)
	if err != nil {
		return nil, err
	}
	if path == "/" {
		return nil, channel.Errorf(spec.CodeIsADirectory, "/: is a directory")
	}
	dir := filepath.Dir(path)
	if parents {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, channel.FromOS(dir, err)
		}
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, channel.Errorf(spec.CodeIsADirectory, "%s: is a directory", path)
	}

	var f *os.File
	if appendMode {
		_, statErr := os.Lstat(path)
		f, _, err = openRegular(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT, mode&0o777)
		if err == nil && errors.Is(statErr, os.ErrNotExist) {
			err = f.Chmod(fileMode(mode))
		}
	} else {
		// A short fixed pattern: deriving it from the name would exceed NAME_MAX (255) for
		// legal names of 240 bytes and more.
		f, err = os.CreateTemp(dir, ".isorun-*.tmp")
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, channel.FromOS(path, err)
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			if !appendMode {
				os.Remove(f.Name())
			}
		}
	}()

	var total int64
	for {
		data, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil
		}
		if _, err := f.Write(data); err != nil {
			return nil, channel.FromOS(path, err)
		}
		total += int64(len(data))
	}
	if !appendMode {
		if err := f.Chmod(fileMode(mode)); err != nil {
			return nil, channel.FromOS(path, err)
		}
	}
	if err := f.Close(); err != nil {
		return nil, channel.FromOS(path, err)
	}
	committed = true
	if !appendMode {
		if err := os.Rename(f.Name(), path); err != nil {
			os.Remove(f.Name())
			return nil, channel.FromOS(path, err)
		}
	}
	return map[string]any{"bytes": total}, nil
}

// fileMode converts spec permission bits (with setuid, setgid and sticky) to an os.FileMode.
func fileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
