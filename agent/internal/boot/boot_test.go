package boot

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	c := parseCmdline("console=ttyS0 quiet isorun.root=/dev/vda isorun.hostname=box-1 isorun.ip=10.0.0.2/24:10.0.0.1 rdinit=/init -- isorun.root=/dev/nope\n")
	if c != (Cmdline{Root: "/dev/vda", Hostname: "box-1", IP: "10.0.0.2/24:10.0.0.1"}) {
		t.Fatalf("%+v", c)
	}
	if c := parseCmdline("console=ttyS0"); c != (Cmdline{}) {
		t.Fatalf("%+v", c)
	}
}

func TestParseModuleList(t *testing.T) {
	got := parseModuleList("# order matters\n/lib/modules/virtio.ko\n\n  /lib/modules/virtio_ring.ko  \n")
	want := []string{"/lib/modules/virtio.ko", "/lib/modules/virtio_ring.ko"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%v", got)
	}
}

func TestFindPort(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	for name, port := range map[string]string{"vport0p1": "org.other\n", "vport0p2": "org.isorun.agent.0\n"} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		os.WriteFile(filepath.Join(sys, name, "name"), []byte(port), 0o644)
	}
	if got := findPort(sys, dev, "org.isorun.agent.0"); got != "" {
		t.Fatalf("found %s before its device node exists", got)
	}
	os.WriteFile(filepath.Join(dev, "vport0p2"), nil, 0o644)
	if got := findPort(sys, dev, "org.isorun.agent.0"); got != filepath.Join(dev, "vport0p2") {
		t.Fatalf("found %q", got)
	}
}

func TestParseNetConfig(t *testing.T) {
	cfg, err := parseNetConfig("10.0.0.2/24:10.0.0.1")
	if err != nil || cfg.Address.String() != "10.0.0.2/24" || cfg.Gateway.String() != "10.0.0.1" {
		t.Fatalf("%+v %v", cfg, err)
	}
	for _, bad := range []string{"", "10.0.0.2/24", "10.0.0.2:10.0.0.1", "fd00::2/64:fd00::1", "10.0.0.2/24:10.0.1.1", "10.0.0.2/24:x"} {
		if _, err := parseNetConfig(bad); err == nil {
			t.Errorf("parseNetConfig(%q) accepted", bad)
		}
	}
}

func TestWriteResolvConfReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink("/run/systemd/resolve/stub-resolv.conf", path); err != nil {
		t.Fatal(err)
	}
	if err := writeResolvConf(path, net.IPv4(10, 0, 0, 1)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "nameserver 10.0.0.1\noptions edns0\n" {
		t.Fatalf("%q %v", got, err)
	}
}
