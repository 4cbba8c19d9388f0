package boot

import (
	"fmt"
	"log"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// rootDeviceWait bounds the wait for the root disk to appear after virtio_blk loads.
const rootDeviceWait = 10 * time.Second

// switchRoot mounts the image read-only under a tmpfs-backed overlay and makes it the root:
//
//	/mnt/lower  erofs, ro (the image)        ┐
//	/mnt/rw     tmpfs: upper/ and work/      ├─ overlay on /mnt/root ─▶ becomes /
//	/dev /proc /sys moved into /mnt/root     ┘
//
// The tmpfs upper layer is private to this guest, so writes die with it. The initramfs stays
// in memory underneath (rootfs cannot be unmounted); this process keeps running from it.
func switchRoot(logger *log.Logger, device string) error {
	if err := waitFor(device, rootDeviceWait); err != nil {
		return err
	}
	for _, dir := range []string{"/mnt/lower", "/mnt/rw", "/mnt/root"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount(device, "/mnt/lower", "erofs", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount erofs %s: %w", device, err)
	}
	if err := unix.Mount("tmpfs", "/mnt/rw", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs for the upper layer: %w", err)
	}
	for _, dir := range []string{"/mnt/rw/upper", "/mnt/rw/work"} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
	}
	opts := "lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work"
	if err := unix.Mount("overlay", "/mnt/root", "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	for _, dir := range []string{"/dev", "/proc", "/sys"} {
		target := "/mnt/root" + dir
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(dir, target, "", unix.MS_MOVE, ""); err != nil {
			logger.Printf("move %s into the new root: %v (it will be mounted afresh)", dir, err)
		}
	}
	if err := unix.Chdir("/mnt/root"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the new root onto /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

func waitFor(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
