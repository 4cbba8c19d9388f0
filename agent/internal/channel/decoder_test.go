package channel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"

	"github.com/isorun/isorun/agent/internal/spec"
)

func mustEncode(t testing.TB, f Frame) []byte {
	b, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeAll(t testing.TB, r io.Reader) []Frame {
	d := NewDecoder(r)
	var out []Frame
	for {
		f, err := d.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
}

func sampleFrames(rng *rand.Rand, n int) []Frame {
	fs := make([]Frame, n)
	for i := range fs {
		p := make([]byte, rng.Intn(300))
		rng.Read(p)
		fs[i] = Frame{Type: uint8(1 + rng.Intn(9)), Flags: uint16(rng.Intn(3)), Stream: uint32(rng.Intn(1000)), Payload: p}
	}
	return fs
}

func sameFrame(a, b Frame) bool {
	return a.Type == b.Type && a.Flags == b.Flags && a.Stream == b.Stream && bytes.Equal(a.Payload, b.Payload)
}

func TestEncodeLayout(t *testing.T) {
	b := mustEncode(t, Frame{Type: spec.TypeData, Flags: 2, Stream: 7, Payload: []byte("hi")})
	if string(b[:4]) != spec.Magic || b[4] != spec.Protocol || b[5] != spec.TypeData {
		t.Fatalf("header % x", b[:6])
	}
	if binary.BigEndian.Uint16(b[6:8]) != 2 || binary.BigEndian.Uint32(b[8:12]) != 7 || binary.BigEndian.Uint32(b[12:16]) != 2 {
		t.Fatalf("header % x", b[:16])
	}
	if _, err := Encode(Frame{Payload: make([]byte, spec.MaxPayloadBytes+1)}); err == nil {
		t.Fatal("oversize payload encoded")
	}
}

func TestDecodeOneByteReads(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	fs := sampleFrames(rng, 50)
	var buf bytes.Buffer
	for _, f := range fs {
		buf.Write(mustEncode(t, f))
	}
	got := decodeAll(t, iotest.OneByteReader(&buf))
	if len(got) != len(fs) {
		t.Fatalf("decoded %d of %d frames", len(got), len(fs))
	}
	for i := range fs {
		if !sameFrame(got[i], fs[i]) {
			t.Fatalf("frame %d differs", i)
		}
	}
}

// Garbage of every kind between valid frames costs bytes, never a valid frame.
func TestDecodeResyncsAfterGarbage(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	fs := sampleFrames(rng, 200)
	var buf bytes.Buffer
	for _, f := range fs {
		switch rng.Intn(6) {
		case 0: // random bytes, often containing a magic
			g := make([]byte, rng.Intn(100))
			rng.Read(g)
			if rng.Intn(2) == 0 {
				g = append(g, spec.Magic...)
			}
			buf.Write(g)
		case 1: // a truncated frame
			b := mustEncode(t, sampleFrames(rng, 1)[0])
			buf.Write(b[:rng.Intn(len(b))])
		case 2: // bad checksum
			b := mustEncode(t, sampleFrames(rng, 1)[0])
			b[16] ^= 0xff
			buf.Write(b)
		case 3: // oversize length
			b := mustEncode(t, sampleFrames(rng, 1)[0])
			binary.BigEndian.PutUint32(b[12:16], spec.MaxPayloadBytes+1+uint32(rng.Intn(1<<20)))
			buf.Write(b[:spec.HeaderBytes])
		case 4: // bad version
			b := mustEncode(t, sampleFrames(rng, 1)[0])
			b[4] = 99
			buf.Write(b)
		}
		buf.Write(mustEncode(t, f))
	}
	got := decodeAll(t, &buf)
	// A truncated frame may swallow the next valid frame as its payload only if the checksum
	// matched, which it does not; so every valid frame must come out, in order.
	j := 0
	for _, g := range got {
		if j < len(fs) && sameFrame(g, fs[j]) {
			j++
		}
	}
	if j != len(fs) {
		t.Fatalf("only %d of %d valid frames decoded (got %d frames)", j, len(fs), len(got))
	}
}

// A header claiming a huge payload must not make the decoder wait for it forever once the
// port reports EOF: Reset drops it and the next frame decodes.
func TestDecodeResetAfterEOF(t *testing.T) {
	hdr := mustEncode(t, Frame{Type: spec.TypeData, Payload: make([]byte, 1000)})[:30]
	good := mustEncode(t, Frame{Type: spec.TypeHello, Payload: []byte(`{"session":"x"}`)})
	r := &scriptReader{chunks: [][]byte{hdr, nil, good}}
	d := NewDecoder(r)
	if _, err := d.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("want EOF, got %v", err)
	}
	d.Reset()
	f, err := d.Next()
	if err != nil || f.Type != spec.TypeHello {
		t.Fatalf("after reset: %v %v", f, err)
	}
}

// scriptReader returns its chunks one per Read; a nil chunk reads as EOF.
type scriptReader struct{ chunks [][]byte }

func (s *scriptReader) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	if c == nil {
		return 0, io.EOF
	}
	return copy(p, c), nil
}

func FuzzDecoder(f *testing.F) {
	valid := mustEncode(f, Frame{Type: spec.TypeRequest, Stream: 1, Payload: []byte(`{"op":"version"}`)})
	f.Add([]byte{})
	f.Add(valid)
	f.Add(append([]byte("ISRNISRN\x01"), valid...))
	f.Add(valid[:25])
	flush := make([]byte, spec.HeaderBytes+spec.MaxPayloadBytes)
	f.Fuzz(func(t *testing.T, garbage []byte) {
		var buf bytes.Buffer
		buf.Write(garbage)
		buf.Write(valid)
		buf.Write(garbage)
		// Garbage may end in a plausible header whose length swallows what follows until that
		// many bytes have arrived; the zero bytes (no magic) are the host's flush for exactly
		// that case (protocol.md section 3). After them the valid frame must decode.
		buf.Write(flush)
		buf.Write(valid)
		got := decodeAll(t, &buf)
		if len(got) == 0 || !sameFrame(got[len(got)-1], Frame{Type: spec.TypeRequest, Stream: 1, Payload: []byte(`{"op":"version"}`)}) {
			t.Fatalf("the frame after the flush was not decoded (%d frames from %d garbage bytes)", len(got), len(garbage))
		}
		for _, g := range got {
			if len(g.Payload) > spec.MaxPayloadBytes {
				t.Fatal("oversize payload decoded")
			}
		}
	})
}
