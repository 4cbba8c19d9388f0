package files

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// openRegular opens path for read or append and refuses anything but a regular file.
//
// A FIFO, TTY, socket or device would block a thread on someone else: open(2) of a FIFO waits
// for the other end, and reads wait for data that may never come. CANCEL cannot interrupt such
// a syscall, so every abandoned request would pin an OS thread until the Go runtime hits its
// thread limit and aborts PID 1. So the path is checked before opening (opening a device can have
// side effects), and the open itself is non-blocking (O_NONBLOCK, which regular files ignore) in
// case the path changed in between; fstat then decides. O_NOCTTY keeps a TTY from becoming the
// agent's controlling terminal.
//
// The descriptor stays non-blocking: a pseudo-file that claims to be regular but would wait
// (a few in /proc and /sys) then parks in Go's poller or fails with EAGAIN instead of pinning a
// thread, and closing the file wakes it.
func openRegular(path string, flags int, perm uint32) (*os.File, *unix.Stat_t, error) {
	var pre unix.Stat_t
	if err := unix.Stat(path, &pre); err == nil {
		if err := requireRegular(path, &pre); err != nil {
			return nil, nil, err
		}
	} else if flags&unix.O_CREAT == 0 || err != unix.ENOENT {
		return nil, nil, channel.FromOS(path, err)
	}
	fd, err := unix.Open(path, flags|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, nil, channel.FromOS(path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, channel.FromOS(path, err)
	}
	if err := requireRegular(path, &st); err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), path), &st, nil
}

// requireRegular is nil for a regular file, else the ERROR naming what the path is.
func requireRegular(path string, st *unix.Stat_t) error {
	var what string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return nil
	case unix.S_IFDIR:
		return channel.Errorf(spec.CodeIsADirectory, "%s: is a directory", path)
	case unix.S_IFIFO:
		what = "a fifo"
	case unix.S_IFSOCK:
		what = "a socket"
	case unix.S_IFCHR:
		what = "a character device"
	case unix.S_IFBLK:
		what = "a block device"
	default:
		what = "of an unknown type"
	}
	return channel.Errorf(spec.CodeBadRequest, "%s is %s, not a regular file", path, what)
}
