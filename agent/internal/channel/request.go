package channel

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
)

// Request is the JSON body of a REQUEST frame. Its accessors validate one field each and name
// it in the bad_request error, so handlers never see a value of the wrong type. A JSON null is
// treated like an absent field.
type Request struct {
	Op     string
	fields map[string]json.RawMessage
}

// ParseRequest decodes a REQUEST payload; it must be a JSON object with a string "op".
func ParseRequest(payload []byte) (Request, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil || fields == nil {
		return Request{}, BadRequest("op", "payload is not a JSON object")
	}
	r := Request{fields: fields}
	op, err := r.String("op", "")
	if err != nil {
		return Request{}, err
	}
	if op == "" {
		return Request{}, BadRequest("op", "required")
	}
	r.Op = op
	return r, nil
}

// Has reports whether the field is present and not null.
func (r Request) Has(name string) bool {
	raw, ok := r.fields[name]
	return ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

func (r Request) decode(name string, v any, want string) (bool, error) {
	if !r.Has(name) {
		return false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(r.fields[name]))
	if err := dec.Decode(v); err != nil {
		return false, BadRequest(name, "must be %s", want)
	}
	return true, nil
}

// String returns the field, or def when absent.
func (r Request) String(name, def string) (string, error) {
	v := def
	_, err := r.decode(name, &v, "a string")
	return v, err
}

// Int returns the field, or def when absent. Fractions and out-of-range numbers are rejected.
func (r Request) Int(name string, def int64) (int64, error) {
	v := def
	_, err := r.decode(name, &v, "an integer")
	return v, err
}

// Bool returns the field, or def when absent.
func (r Request) Bool(name string, def bool) (bool, error) {
	v := def
	_, err := r.decode(name, &v, "a boolean")
	return v, err
}

// Strings returns a list of strings, or nil when absent.
func (r Request) Strings(name string) ([]string, error) {
	var v []string
	_, err := r.decode(name, &v, "a list of strings")
	return v, err
}

// StringMap returns an object of strings, or nil when absent.
func (r Request) StringMap(name string) (map[string]string, error) {
	var v map[string]string
	_, err := r.decode(name, &v, "an object of strings")
	return v, err
}

// Path returns a required absolute path, cleaned. Paths are bounded by PATH_MAX and may not
// contain NUL, which the kernel would reject with a confusing error.
func (r Request) Path(name string) (string, error) {
	p, err := r.String(name, "")
	if err != nil {
		return "", err
	}
	switch {
	case p == "":
		return "", BadRequest(name, "required")
	case !strings.HasPrefix(p, "/"):
		return "", BadRequest(name, "must be an absolute path, got %q", p)
	case len(p) > 4096:
		return "", BadRequest(name, "longer than 4096 bytes")
	case strings.IndexByte(p, 0) >= 0:
		return "", BadRequest(name, "contains a NUL byte")
	}
	return filepath.Clean(p), nil
}

// Mode returns permission bits (0..0o7777), or def when absent.
func (r Request) Mode(name string, def uint32) (uint32, error) {
	m, err := r.Int(name, int64(def))
	if err != nil {
		return 0, err
	}
	if m < 0 || m > 0o7777 {
		return 0, BadRequest(name, "must be within 0..0o7777, got %d", m)
	}
	return uint32(m), nil
}
