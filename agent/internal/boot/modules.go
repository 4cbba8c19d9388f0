package boot

import (
	"errors"
	"log"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// loadModules loads each module in the list with finit_module, in order. A failed module is
// logged loudly and skipped: later ones may not need it, and the console log tells hostd's
// developers what broke.
func loadModules(logger *log.Logger, list string) {
	raw, err := os.ReadFile(list)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		logger.Printf("MODULES NOT LOADED: %v", err)
		return
	}
	for _, path := range parseModuleList(string(raw)) {
		if err := loadModule(path); errors.Is(err, unix.EEXIST) {
			logger.Printf("module %s already loaded", path)
		} else if err != nil {
			logger.Printf("MODULE LOAD FAILED: %s: %v", path, err)
		}
	}
}

func parseModuleList(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}
