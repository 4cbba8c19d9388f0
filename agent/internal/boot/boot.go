// Package boot does the agent's PID 1 duties before it serves the port (protocol.md section 7).
//
//	/dev /proc /sys ─▶ modules (/etc/isorun/modules) ─▶ [isorun.root: erofs + tmpfs overlay,
//	switch root] ─▶ /proc /sys /dev /dev/pts /dev/shm /tmp /run ─▶ hostname ─▶ [isorun.ip:
//	lo, eth0, default route, resolv.conf] ─▶ find the port
//
// Nothing here is fatal. PID 1 must not exit (the kernel would panic and hostd would only see
// a dead VM), so every step logs its failure to the console and the boot goes on; a guest that
// reaches the port can at least be inspected.
package boot

import (
	"log"
	"os"
)

// ModulesList is where hostd's initramfs lists the modules to load, in order.
const ModulesList = "/etc/isorun/modules"

// Init prepares the guest as PID 1 and returns the virtio-serial port to serve; it only
// returns once the port is open.
func Init(logger *log.Logger) *os.File {
	mountEarly(logger)
	consoleStdio(logger)
	loadModules(logger, ModulesList)
	cmd := readCmdline(logger)
	if cmd.Root != "" {
		if err := switchRoot(logger, cmd.Root); err != nil {
			logger.Printf("ROOT SWITCH FAILED, staying in the initramfs: %v", err)
		}
	}
	mountFinal(logger)
	if cmd.Hostname != "" {
		setHostname(logger, cmd.Hostname)
	}
	if cmd.IP != "" {
		if cfg, err := parseNetConfig(cmd.IP); err != nil {
			logger.Printf("NETWORK DOWN: %v", err)
		} else {
			setUpNetwork(logger, cfg)
		}
	}
	return openPort(logger, "/sys/class/virtio-ports", "/dev")
}
