// Command isorun-agent is the isorun guest agent: PID 1 of the guest initramfs.
//
// As PID 1 (no flags) it boots the guest (internal/boot), opens the virtio-serial port
// org.isorun.agent.0 and serves the agent protocol (spec/agent/protocol.md) on it forever.
// With --port it skips the boot and serves on any file, device or unix socket instead, for
// development and tests on a normal machine.
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"time"

	"github.com/isorun/isorun/agent/internal/boot"
	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/services/files"
	"github.com/isorun/isorun/agent/internal/services/process"
	"github.com/isorun/isorun/agent/internal/services/system"
	"github.com/isorun/isorun/agent/internal/services/tunnel"
	"github.com/isorun/isorun/agent/internal/version"
)

func main() {
	portPath := flag.String("port", "", "serve on this file, device or unix socket instead of booting as PID 1")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	logger := log.New(os.Stderr, "isorun-agent: ", log.Lmicroseconds)
	if *showVersion {
		os.Stdout.WriteString(version.Version + "\n")
		return
	}
	pid1 := os.Getpid() == 1
	if pid1 {
		// PID 1 must never return: its exit panics the kernel.
		defer func() {
			if p := recover(); p != nil {
				logger.Printf("PANIC in main: %v", p)
			}
			for {
				time.Sleep(time.Hour)
			}
		}()
	}

	var port io.ReadWriter
	switch {
	case *portPath != "":
		p, err := openDevPort(*portPath)
		if err != nil {
			logger.Fatalf("open %s: %v", *portPath, err)
		}
		port = p
	case pid1:
		port = boot.Init(logger)
	default:
		logger.Fatalf("not PID 1; use --port PATH to serve elsewhere")
	}

	procs := process.New(logger)
	fs := files.New(logger)
	tun := tunnel.New(logger)
	// Only the guest's init may change the machine's clock, hostname and machine-id; under
	// --port the agent runs on someone's own machine, so identity is refused there.
	var host system.Host
	if pid1 {
		host = system.GuestHost{Etc: "/etc"}
	}
	handlers := map[string]channel.Handler{}
	for _, svc := range []map[string]channel.Handler{
		system.New(procs.Running, host).Handlers(),
		procs.Handlers(),
		fs.Handlers(),
		tun.Handlers(),
	} {
		for op, h := range svc {
			handlers[op] = h
		}
	}
	// Every other op's DATA is dropped on arrival (channel.Inputs).
	inputs := channel.Inputs{}
	for _, svc := range []channel.Inputs{procs.Inputs(), fs.Inputs(), tun.Inputs()} {
		for op, reads := range svc {
			inputs[op] = reads
		}
	}
	logger.Printf("agent %s ready (protocol %d)", version.Version, version.Protocol)
	sess := channel.NewSession(port, port, logger, handlers)
	sess.Inputs = inputs
	_ = sess.Serve(context.Background())
}

func openDevPort(path string) (io.ReadWriter, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return net.Dial("unix", path)
	}
	return boot.OpenPortDevice(path)
}
