package spec

import (
	"encoding/json"
	"os"
	"testing"
)

// The agent and hostd each check their constants against the shared wire.json; this is the Go half.
func TestConstantsMatchWireJSON(t *testing.T) {
	raw, err := os.ReadFile("../../../spec/agent/wire.json")
	if err != nil {
		t.Fatal(err)
	}
	var w map[string]any
	if err := json.Unmarshal(raw, &w); err != nil {
		t.Fatal(err)
	}
	scalars := map[string]any{
		"protocol":                   Protocol,
		"magic":                      Magic,
		"header_bytes":               HeaderBytes,
		"max_payload_bytes":          MaxPayloadBytes,
		"data_chunk_bytes":           DataChunkBytes,
		"initial_window_bytes":       InitialWindowBytes,
		"max_streams":                MaxStreams,
		"exit_ttl_ms":                ExitTTLMs,
		"detached_buffer_bytes":      DetachedBufferBytes,
		"shell_scrollback_bytes":     ShellScrollbackBytes,
		"max_shell_scrollback_bytes": MaxShellScrollbackBytes,
		"max_shells":                 MaxShells,
		"port_name":                  PortName,
	}
	for key, want := range scalars {
		got, ok := w[key]
		if !ok {
			t.Errorf("wire.json has no %q", key)
			continue
		}
		if s, isStr := want.(string); isStr {
			if got != s {
				t.Errorf("%s: wire.json %v, Go %q", key, got, s)
			}
		} else if got != float64(want.(int)) {
			t.Errorf("%s: wire.json %v, Go %v", key, got, want)
		}
	}
	checkInts(t, w, "frame_types", map[string]int{
		"hello": int(TypeHello), "request": int(TypeRequest), "reply": int(TypeReply),
		"event": int(TypeEvent), "data": int(TypeData), "eof": int(TypeEof),
		"credit": int(TypeCredit), "error": int(TypeError), "cancel": int(TypeCancel),
	})
	checkInts(t, w, "channels", map[string]int{
		"input": int(ChannelInput), "stdout": int(ChannelStdout), "stderr": int(ChannelStderr),
	})
	codes, _ := w["error_codes"].([]any)
	if len(codes) != len(ErrorCodes) {
		t.Fatalf("error_codes: wire.json has %d, Go %d", len(codes), len(ErrorCodes))
	}
	for i, c := range codes {
		if c != ErrorCodes[i] {
			t.Errorf("error_codes[%d]: wire.json %v, Go %q", i, c, ErrorCodes[i])
		}
	}
	named := []string{CodeBadRequest, CodeNotFound, CodePermissionDenied, CodeExists,
		CodeNotADirectory, CodeIsADirectory, CodeNotEmpty, CodeSpawnFailed, CodeIoError,
		CodeFlowControl, CodeBusy, CodeDetached, CodeInternal}
	for i, c := range named {
		if c != ErrorCodes[i] {
			t.Errorf("constant for error code %d is %q, list has %q", i, c, ErrorCodes[i])
		}
	}
	if len(Magic) != 4 || HeaderBytes != 20 {
		t.Errorf("frame layout changed: magic %q, header %d; update channel/frame.go", Magic, HeaderBytes)
	}
}

func checkInts(t *testing.T, w map[string]any, key string, want map[string]int) {
	t.Helper()
	got, ok := w[key].(map[string]any)
	if !ok {
		t.Fatalf("wire.json %s is not an object", key)
	}
	if len(got) != len(want) {
		t.Errorf("%s: wire.json has %d entries, Go %d", key, len(got), len(want))
	}
	for name, v := range want {
		if got[name] != float64(v) {
			t.Errorf("%s.%s: wire.json %v, Go %d", key, name, got[name], v)
		}
	}
}
