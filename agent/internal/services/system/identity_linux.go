package system

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ioctls come from golang.org/x/sys/unix (include/uapi/linux/random.h):
// unix.RNDADDENTROPY = _IOW('R', 0x03, int[2]) = 0x40085203 and
// unix.RNDRESEEDCRNG = _IO('R', 0x07) = 0x5207. Both need CAP_SYS_ADMIN.

const randomDevice = "/dev/urandom"

// GuestHost is the Host of a guest whose init is this agent. etc is the folder holding
// machine-id ("/etc" in the guest).
type GuestHost struct {
	Etc string
}

// AddEntropy mixes seed into the input pool crediting 8 bits per byte (RNDADDENTROPY takes a
// struct rand_pool_info {int entropy_count; int buf_size; __u32 buf[];}), then forces the CRNG
// to reseed from the pool at once (RNDRESEEDCRNG) instead of at its next scheduled reseed, so
// the state copied from the snapshot stops being used now.
func (g GuestHost) AddEntropy(seed []byte) error {
	fd, err := unix.Open(randomDevice, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", randomDevice, err)
	}
	defer unix.Close(fd)
	info := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(info[0:4], uint32(8*len(seed)))
	binary.NativeEndian.PutUint32(info[4:8], uint32(len(seed)))
	copy(info[8:], seed)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0])))
	runtime.KeepAlive(info)
	if errno != 0 {
		return fmt.Errorf("ioctl RNDADDENTROPY on %s: %w", randomDevice, errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("ioctl RNDRESEEDCRNG on %s: %w", randomDevice, errno)
	}
	return nil
}

// SetClock steps CLOCK_REALTIME; CLOCK_MONOTONIC, which the agent's timers use, is unaffected.
func (g GuestHost) SetClock(unixNs int64) (int64, error) {
	before := time.Now().UnixNano()
	ts := unix.NsecToTimespec(unixNs)
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return 0, fmt.Errorf("clock_settime(CLOCK_REALTIME): %w", err)
	}
	return unixNs - before, nil
}

// SetHostname sets the UTS hostname.
func (g GuestHost) SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	return nil
}

// WriteMachineID writes "<id>\n" (machine-id(5)) to a temp file in Etc and renames it over
// machine-id, so a reader sees the old id or the new one, never a torn file. A guest image
// without /etc has no consumer of the file: that is not an error.
func (g GuestHost) WriteMachineID(id string) (bool, error) {
	if _, err := os.Stat(g.Etc); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	f, err := os.CreateTemp(g.Etc, ".machine-id.*")
	if err != nil {
		return false, fmt.Errorf("create temp file in %s: %w", g.Etc, err)
	}
	tmp := f.Name()
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Chmod(0o444)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	target := filepath.Join(g.Etc, "machine-id")
	if err == nil {
		err = os.Rename(tmp, target)
	}
	if err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("write %s: %w", target, err)
	}
	return true, nil
}
