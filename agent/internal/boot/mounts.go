package boot

import (
	"errors"
	"log"
	"os"

	"golang.org/x/sys/unix"
)

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

// mountEarly gives the initramfs /dev, /proc and /sys, needed to load modules and find devices.
func mountEarly(logger *log.Logger) {
	mountAll(logger, []mountSpec{
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	})
}

// mountFinal completes the final root. /proc, /sys and /dev are usually already there (moved
// from the initramfs); mounting over them again would only hide the moved ones, so a target
// that is already a mount point is left alone.
func mountFinal(logger *log.Logger) {
	mountAll(logger, []mountSpec{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", 0o755},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
	})
	links := map[string]string{
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2",
		"/dev/ptmx":   "pts/ptmx",
	}
	for link, target := range links {
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(target, link); err != nil {
				logger.Printf("symlink %s: %v", link, err)
			}
		}
	}
}

func mountAll(logger *log.Logger, specs []mountSpec) {
	for _, m := range specs {
		if isMountPoint(m.target) {
			continue
		}
		if err := os.MkdirAll(m.target, m.mode.Perm()); err != nil {
			logger.Printf("MOUNT FAILED: mkdir %s: %v", m.target, err)
			continue
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			logger.Printf("MOUNT FAILED: %s on %s: %v", m.fstype, m.target, err)
		}
	}
}

// isMountPoint compares the device of path with its parent's, which is enough for the
// pseudo-filesystems mounted here (the root itself is never a target).
func isMountPoint(path string) bool {
	var st, parent unix.Stat_t
	if unix.Lstat(path, &st) != nil || unix.Lstat(path+"/..", &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

func setHostname(logger *log.Logger, name string) {
	if err := unix.Sethostname([]byte(name)); err != nil {
		logger.Printf("sethostname %q: %v", name, err)
	}
}

// consoleStdio points fds 0-2 at /dev/console when the kernel could not (an initramfs without
// /dev/console gives init no stdio at all), so logs reach the serial console.
func consoleStdio(logger *log.Logger) {
	var st unix.Stat_t
	if unix.Fstat(2, &st) == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for target := 0; target <= 2; target++ {
		_ = unix.Dup2(fd, target)
	}
	if fd > 2 {
		unix.Close(fd)
	}
	logger.Printf("stdio attached to /dev/console")
}
