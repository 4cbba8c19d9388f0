package files

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel/channeltest"
	"github.com/isorun/isorun/agent/internal/spec"
)

func newClient(t *testing.T) *channeltest.Client {
	s := New(log.New(io.Discard, "", 0))
	c := channeltest.Start(t, s.Handlers(), s.Inputs())
	c.Hello("files")
	return c
}

func TestWriteReadLargeFile(t *testing.T) {
	c := newClient(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "big.bin")
	data := make([]byte, 20<<20+12345)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	w := c.Open(map[string]any{"op": "write", "path": path, "parents": true, "mode": 0o600})
	w.SendAll(data)
	if r := w.Collect(false); r.Reply["bytes"] != float64(len(data)) {
		t.Fatalf("write: %v", r)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat after write: %v %v", fi, err)
	}
	r := c.Open(map[string]any{"op": "read", "path": path}).Collect(true)
	if !bytes.Equal(r.Data[0], data) || r.Reply["bytes"] != float64(len(data)) {
		t.Fatalf("read back %d bytes of %d", len(r.Data[0]), len(data))
	}
	if len(r.Events) != 1 || r.Events[0]["event"] != "stat" || r.Events[0]["size"] != float64(len(data)) || r.Events[0]["type"] != "file" {
		t.Fatalf("stat event: %v", r.Events)
	}
	if len(r.EOFs) != 1 || r.EOFs[0] != spec.ChannelInput {
		t.Fatalf("eofs %v", r.EOFs)
	}
	r = c.Open(map[string]any{"op": "read", "path": path, "offset": 1000, "length": 5000}).Collect(true)
	if !bytes.Equal(r.Data[0], data[1000:6000]) {
		t.Fatalf("ranged read: %d bytes", len(r.Data[0]))
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
}

// Without credit the agent sends one window and stops.
func TestReadRespectsCredit(t *testing.T) {
	c := newClient(t)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 3*spec.InitialWindowBytes), 0o644); err != nil {
		t.Fatal(err)
	}
	cv := c.Open(map[string]any{"op": "read", "path": path})
	got := 0
	for got < spec.InitialWindowBytes {
		if f := cv.Next(); f.Type == spec.TypeData {
			got += len(f.Payload)
		}
	}
	if f, ok := cv.NextWithin(100 * time.Millisecond); ok {
		t.Fatalf("frame %d beyond credit", f.Type)
	}
	cv.Cancel()
	if r := c.Call(map[string]any{"op": "stat", "path": path}); r.Reply["size"] != float64(3*spec.InitialWindowBytes) {
		t.Fatalf("after cancel: %v", r)
	}
}

func TestWriteAppendAndCancel(t *testing.T) {
	c := newClient(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	for _, part := range []string{"one ", "two"} {
		w := c.Open(map[string]any{"op": "write", "path": path, "append": true})
		w.SendAll([]byte(part))
		if r := w.Collect(false); r.Reply == nil {
			t.Fatalf("append: %v", r)
		}
	}
	if b, _ := os.ReadFile(path); string(b) != "one two" {
		t.Fatalf("appended %q", b)
	}
	w := c.Open(map[string]any{"op": "write", "path": path})
	w.Send([]byte("partial"))
	w.Cancel()
	time.Sleep(100 * time.Millisecond)
	if b, _ := os.ReadFile(path); string(b) != "one two" {
		t.Fatalf("cancelled write changed the file: %q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp file left after cancel: %v", entries)
	}
}

func TestMetadataOps(t *testing.T) {
	c := newClient(t)
	dir := t.TempDir()
	call := func(req map[string]any) channeltest.Result { return c.Call(req) }
	if r := call(map[string]any{"op": "mkdir", "path": dir + "/a/b", "mode": 0o750}); r.Reply == nil {
		t.Fatalf("mkdir: %v", r)
	}
	if fi, _ := os.Stat(dir + "/a/b"); fi == nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("mkdir mode: %v", fi)
	}
	if r := call(map[string]any{"op": "mkdir", "path": dir + "/a/b"}); r.Reply == nil {
		t.Fatalf("mkdir existing with parents: %v", r)
	}
	if r := call(map[string]any{"op": "mkdir", "path": dir + "/a/b", "parents": false}); r.Code() != spec.CodeExists {
		t.Fatalf("mkdir existing: %v", r)
	}
	os.WriteFile(dir+"/a/z.txt", []byte("z"), 0o644)
	os.WriteFile(dir+"/a/c.txt", []byte("cc"), 0o644)
	os.Symlink("c.txt", dir+"/a/link")

	r := call(map[string]any{"op": "list", "path": dir + "/a"})
	var names []string
	for _, e := range r.Reply["entries"].([]any) {
		names = append(names, e.(map[string]any)["name"].(string))
	}
	if strings.Join(names, ",") != "b,c.txt,link,z.txt" {
		t.Fatalf("list: %v", names)
	}
	r = call(map[string]any{"op": "stat", "path": dir + "/a/link"})
	if r.Reply["type"] != "symlink" || r.Reply["link_target"] != "c.txt" || r.Reply["path"] != dir+"/a/link" {
		t.Fatalf("stat symlink: %v", r)
	}
	r = call(map[string]any{"op": "stat", "path": dir + "/a/c.txt"})
	if r.Reply["type"] != "file" || r.Reply["size"] != float64(2) || r.Reply["mode"] != float64(0o644) || r.Reply["link_target"] != nil {
		t.Fatalf("stat file: %v", r)
	}
	if r := call(map[string]any{"op": "chmod", "path": dir + "/a/c.txt", "mode": 0o4711}); r.Reply == nil {
		t.Fatalf("chmod: %v", r)
	}
	if r := call(map[string]any{"op": "stat", "path": dir + "/a/c.txt"}); r.Reply["mode"] != float64(0o4711) {
		t.Fatalf("mode after chmod: %v", r)
	}
	if r := call(map[string]any{"op": "rename", "src": dir + "/a/c.txt", "dst": dir + "/a/d.txt"}); r.Reply == nil {
		t.Fatalf("rename: %v", r)
	}
	if r := call(map[string]any{"op": "remove", "path": dir + "/a"}); r.Code() != spec.CodeNotEmpty {
		t.Fatalf("remove non-empty: %v", r)
	}
	if r := call(map[string]any{"op": "remove", "path": dir + "/a/link"}); r.Reply == nil {
		t.Fatalf("remove link: %v", r)
	}
	if r := call(map[string]any{"op": "remove", "path": dir + "/a", "recursive": true}); r.Reply == nil {
		t.Fatalf("remove recursive: %v", r)
	}
	if _, err := os.Stat(dir + "/a"); !os.IsNotExist(err) {
		t.Fatalf("still there: %v", err)
	}
}

func TestErrorMapping(t *testing.T) {
	c := newClient(t)
	dir := t.TempDir()
	os.WriteFile(dir+"/file", []byte("x"), 0o644)
	cases := []struct {
		req  map[string]any
		code string
	}{
		{map[string]any{"op": "stat", "path": dir + "/missing"}, spec.CodeNotFound},
		{map[string]any{"op": "read", "path": dir + "/missing"}, spec.CodeNotFound},
		{map[string]any{"op": "read", "path": dir}, spec.CodeIsADirectory},
		{map[string]any{"op": "list", "path": dir + "/file"}, spec.CodeNotADirectory},
		{map[string]any{"op": "stat", "path": dir + "/file/x"}, spec.CodeNotADirectory},
		{map[string]any{"op": "write", "path": dir}, spec.CodeIsADirectory},
		{map[string]any{"op": "write", "path": dir + "/no/such/file"}, spec.CodeNotFound},
		{map[string]any{"op": "mkdir", "path": dir + "/file"}, spec.CodeExists},
		{map[string]any{"op": "remove", "path": dir + "/missing", "recursive": true}, spec.CodeNotFound},
		{map[string]any{"op": "rename", "src": dir + "/missing", "dst": dir + "/x"}, spec.CodeNotFound},
		{map[string]any{"op": "stat", "path": "relative"}, spec.CodeBadRequest},
		{map[string]any{"op": "stat"}, spec.CodeBadRequest},
		{map[string]any{"op": "read", "path": dir + "/file", "offset": -1}, spec.CodeBadRequest},
		{map[string]any{"op": "chmod", "path": dir + "/file"}, spec.CodeBadRequest},
		{map[string]any{"op": "chmod", "path": dir + "/file", "mode": 0o10000}, spec.CodeBadRequest},
		{map[string]any{"op": "remove", "path": "/", "recursive": true}, spec.CodeBadRequest},
	}
	for _, tc := range cases {
		r := c.Call(tc.req)
		if r.Code() != tc.code {
			t.Errorf("%v: want %s, got %v", tc.req, tc.code, r)
		}
		if r.Err != nil && tc.code != spec.CodeBadRequest && !strings.Contains(r.Err.Message, dir) {
			t.Errorf("%v: message %q lacks the path", tc.req, r.Err.Message)
		}
	}
}

// A listing too big for one frame arrives in EVENT batches plus the REPLY.
func TestListBatches(t *testing.T) {
	c := newClient(t)
	dir := t.TempDir()
	const n = 6000
	long := strings.Repeat("n", 120)
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s%05d", long, i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	r := c.Call(map[string]any{"op": "list", "path": dir})
	total := len(r.Reply["entries"].([]any))
	for _, e := range r.Events {
		if e["event"] != "entries" {
			t.Fatalf("event %v", e["event"])
		}
		total += len(e["entries"].([]any))
	}
	if len(r.Events) == 0 || total != n {
		t.Fatalf("%d events, %d entries", len(r.Events), total)
	}
}

// read and append refuse FIFOs and devices at once. Opening a FIFO used to block in the kernel
// until the other end showed up, and reading one (or a TTY) until data came; CANCEL could not
// end either, so each abandoned request pinned an OS thread of PID 1.
func TestSpecialFilesRefused(t *testing.T) {
	c := newClient(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// A FIFO with a writer: opening it no longer waits, reading it would.
	held := filepath.Join(dir, "held")
	if err := unix.Mkfifo(held, 0o644); err != nil {
		t.Fatal(err)
	}
	hold, err := os.OpenFile(held, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	cases := []struct {
		req  map[string]any
		word string
	}{
		{map[string]any{"op": "read", "path": fifo}, "is a fifo, not a regular file"},
		{map[string]any{"op": "read", "path": held}, "is a fifo, not a regular file"},
		{map[string]any{"op": "write", "path": fifo, "append": true}, "is a fifo, not a regular file"},
		{map[string]any{"op": "write", "path": held, "append": true}, "is a fifo, not a regular file"},
		{map[string]any{"op": "read", "path": "/dev/null"}, "is a character device"},
	}
	for _, tc := range cases {
		cv := c.Open(tc.req)
		f, ok := cv.NextWithin(3 * time.Second)
		if !ok {
			cv.Cancel()
			t.Errorf("%v: no answer within 3s (blocked)", tc.req)
			continue
		}
		var e struct{ Code, Message string }
		if f.Type != spec.TypeError || json.Unmarshal(f.Payload, &e) != nil ||
			e.Code != spec.CodeBadRequest || !strings.Contains(e.Message, tc.word) {
			t.Errorf("%v: frame %d %s", tc.req, f.Type, f.Payload)
		}
	}
	// Regular files still work through the same path, appends included.
	path := filepath.Join(dir, "plain")
	w := c.Open(map[string]any{"op": "write", "path": path, "append": true, "mode": 0o600})
	w.SendAll([]byte("abc"))
	if r := w.Collect(false); r.Reply["bytes"] != float64(3) {
		t.Fatalf("append: %v", r)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("append created %v %v", fi, err)
	}
	if r := c.Call(map[string]any{"op": "read", "path": path}); string(r.Data[0]) != "abc" {
		t.Fatalf("read: %v", r)
	}
}

// The temp file of a write must fit NAME_MAX even when the target's own name is near it.
func TestWriteLongName(t *testing.T) {
	c := newClient(t)
	dir := t.TempDir()
	path := filepath.Join(dir, strings.Repeat("n", 250))
	w := c.Open(map[string]any{"op": "write", "path": path})
	w.SendAll([]byte("long"))
	if r := w.Collect(false); r.Reply["bytes"] != float64(4) {
		t.Fatalf("write: %v", r)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "long" {
		t.Fatalf("read back %q %v", b, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
}
