package boot

import (
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/spec"
)

// openPort waits for the virtio-serial port named org.isorun.agent.0 and opens it. It never
// gives up: without the port the guest is unreachable anyway, and exiting would panic the
// kernel. A slow appearance is logged once.
func openPort(logger *log.Logger, sysDir, devDir string) *os.File {
	start := time.Now()
	warned := false
	for {
		if dev := findPort(sysDir, devDir, spec.PortName); dev != "" {
			f, err := OpenPortDevice(dev)
			if err == nil {
				logger.Printf("serving %s (%s) after %v", dev, spec.PortName, time.Since(start).Round(time.Millisecond))
				return f
			}
			logger.Printf("open %s: %v", dev, err)
		}
		if !warned && time.Since(start) > 10*time.Second {
			logger.Printf("PORT %s NOT FOUND after 10s; still looking", spec.PortName)
			warned = true
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// findPort returns /dev/vportNpM for the port whose sysfs name is name, or "".
func findPort(sysDir, devDir, name string) string {
	entries, err := os.ReadDir(sysDir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
		if err == nil && strings.TrimSpace(string(raw)) == name {
			dev := filepath.Join(devDir, e.Name())
			if _, err := os.Stat(dev); err == nil {
				return dev
			}
		}
	}
	return ""
}

// OpenPortDevice opens a port in blocking mode. Go's poller is deliberately avoided: a
// virtio-serial port reports POLLHUP for as long as no host is connected, and blocking calls
// give the documented semantics instead (read returns 0, write waits for a host).
func OpenPortDevice(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}
