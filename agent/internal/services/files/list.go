package files

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// listBatchBytes keeps each frame of a listing well under max_payload_bytes, leaving room for
// the JSON around the entries.
const listBatchBytes = spec.MaxPayloadBytes - 4096

// list replies with the folder's entries sorted by name. A listing too big for one frame sends
// its leading entries in EVENT {"event": "entries"} frames and the rest in the REPLY
// (protocol.md section 5.5).
func (s *Service) list(st *channel.Stream, req channel.Request) (any, error) {
	path, err := req.Path("path")
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, channel.FromOS(path, err)
	}
	batch := []json.RawMessage{}
	size := 0
	for _, e := range entries {
		stat, err := lstat(filepath.Join(path, e.Name()))
		var ce *channel.Error
		if errors.As(err, &ce) && ce.Code == spec.CodeNotFound {
			continue // removed since the folder was read
		}
		if err != nil {
			return nil, err
		}
		raw, err := json.Marshal(stat)
		if err != nil {
			return nil, err
		}
		if size+len(raw)+1 > listBatchBytes && len(batch) > 0 {
			if err := st.Event(map[string]any{"event": "entries", "entries": batch}); err != nil {
				return nil, nil
			}
			batch, size = []json.RawMessage{}, 0
		}
		batch = append(batch, raw)
		size += len(raw) + 1
	}
	return map[string]any{"entries": batch}, nil
}
