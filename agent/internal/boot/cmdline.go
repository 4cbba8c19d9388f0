package boot

import (
	"log"
	"os"
	"strings"
)

// Cmdline holds the isorun.* kernel parameters.
type Cmdline struct {
	Root     string // isorun.root: the erofs image's block device; empty stays in the initramfs
	Hostname string // isorun.hostname
	IP       string // isorun.ip: ADDRESS/PREFIX:GATEWAY of eth0; empty leaves the network down
}

func readCmdline(logger *log.Logger) Cmdline {
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		logger.Printf("reading /proc/cmdline: %v", err)
		return Cmdline{}
	}
	return parseCmdline(string(raw))
}

// parseCmdline reads key=value words up to "--" (what follows belongs to init's argv).
func parseCmdline(s string) Cmdline {
	var c Cmdline
	for _, word := range strings.Fields(s) {
		if word == "--" {
			break
		}
		key, value, _ := strings.Cut(word, "=")
		switch key {
		case "isorun.root":
			c.Root = value
		case "isorun.hostname":
			c.Hostname = value
		case "isorun.ip":
			c.IP = value
		}
	}
	return c
}
