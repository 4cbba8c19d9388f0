package channel

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/isorun/isorun/agent/internal/spec"
)

// Decoder reads frames from a byte stream that may contain garbage.
//
// Resync rule (protocol.md section 1): a bad magic, version, oversized length or checksum means
// "no frame here"; the decoder drops one byte and scans for the next magic. It therefore never
// fails on content, only on the reader's own errors, and its memory is bounded by one maximal
// frame plus one read.
type Decoder struct {
	r       io.Reader
	buf     []byte
	start   int // buf[start:end] holds bytes read but not yet consumed
	end     int
	Dropped uint64 // garbage bytes skipped so far, for logs
}

const readSize = 64 << 10

// NewDecoder returns a decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: r, buf: make([]byte, spec.HeaderBytes+spec.MaxPayloadBytes+readSize)}
}

// Next returns the next valid frame. Its payload is a fresh copy owned by the caller.
//
// Errors are exactly those of the underlying reader (io.EOF included); the decoder stays usable
// after them.
func (d *Decoder) Next() (Frame, error) {
	for {
		if f, ok := d.parse(); ok {
			return f, nil
		}
		if err := d.fill(); err != nil {
			return Frame{}, err
		}
	}
}

// Reset forgets buffered bytes. The session calls it when the port reports EOF: the host that
// sent a half frame is gone, and waiting for the rest would swallow the next host's HELLO.
func (d *Decoder) Reset() {
	d.Dropped += uint64(d.end - d.start)
	d.start, d.end = 0, 0
}

func (d *Decoder) parse() (Frame, bool) {
	for {
		avail := d.buf[d.start:d.end]
		i := bytes.Index(avail, magic[:])
		if i < 0 {
			// Keep a tail that may be the start of a magic split across reads.
			keep := len(magic) - 1
			if len(avail) < keep {
				keep = len(avail)
			}
			d.drop(len(avail) - keep)
			return Frame{}, false
		}
		d.drop(i)
		avail = d.buf[d.start:d.end]
		if len(avail) < spec.HeaderBytes {
			return Frame{}, false
		}
		length := binary.BigEndian.Uint32(avail[12:16])
		if avail[4] != spec.Protocol || length > spec.MaxPayloadBytes {
			d.drop(1)
			continue
		}
		total := spec.HeaderBytes + int(length)
		if len(avail) < total {
			return Frame{}, false
		}
		payload := avail[spec.HeaderBytes:total]
		if checksum(avail[:16], payload) != binary.BigEndian.Uint32(avail[16:20]) {
			d.drop(1)
			continue
		}
		f := Frame{
			Type:    avail[5],
			Flags:   binary.BigEndian.Uint16(avail[6:8]),
			Stream:  binary.BigEndian.Uint32(avail[8:12]),
			Payload: append([]byte(nil), payload...),
		}
		d.start += total
		return f, true
	}
}

func (d *Decoder) drop(n int) {
	d.start += n
	d.Dropped += uint64(n)
}

func (d *Decoder) fill() error {
	if d.start == d.end {
		d.start, d.end = 0, 0
	}
	if len(d.buf)-d.end < readSize {
		d.end = copy(d.buf, d.buf[d.start:d.end])
		d.start = 0
	}
	n, err := d.r.Read(d.buf[d.end:])
	d.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}
