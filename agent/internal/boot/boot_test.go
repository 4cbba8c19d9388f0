package boot

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	c := parseCmdline("console=ttyS0 quiet isorun.root=/dev/vda isorun.hostname=box-1 rdinit=/init -- isorun.root=/dev/nope\n")
	if c != (Cmdline{Root: "/dev/vda", Hostname: "box-1"}) {
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
