// Package channel is the agent's end of the wire protocol (spec/agent/protocol.md): frames,
// their resynchronising decoder, and the session that multiplexes streams over one port.
//
// Frame layout (section 1), big-endian:
//
//	0      4   5    6      8        12       16      20
//	"ISRN" ver type flags  stream   length   crc32   payload
//
// The CRC covers header bytes 0..15 and then the payload.
package channel

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/isorun/isorun/agent/internal/spec"
)

// Frame is one decoded message.
type Frame struct {
	Type    uint8
	Flags   uint16 // the channel for DATA and EOF
	Stream  uint32
	Payload []byte
}

var magic = [4]byte{spec.Magic[0], spec.Magic[1], spec.Magic[2], spec.Magic[3]}

// Encode returns the wire bytes of f.
//
// Returns an error when the payload is over max_payload_bytes: such a frame would be skipped as
// garbage by the peer, so it must never be written.
func Encode(f Frame) ([]byte, error) {
	if len(f.Payload) > spec.MaxPayloadBytes {
		return nil, fmt.Errorf("frame payload of %d bytes is over max_payload_bytes", len(f.Payload))
	}
	b := make([]byte, spec.HeaderBytes+len(f.Payload))
	copy(b[0:4], magic[:])
	b[4] = spec.Protocol
	b[5] = f.Type
	binary.BigEndian.PutUint16(b[6:8], f.Flags)
	binary.BigEndian.PutUint32(b[8:12], f.Stream)
	binary.BigEndian.PutUint32(b[12:16], uint32(len(f.Payload)))
	copy(b[spec.HeaderBytes:], f.Payload)
	binary.BigEndian.PutUint32(b[16:20], checksum(b[:16], f.Payload))
	return b, nil
}

func checksum(head, payload []byte) uint32 {
	return crc32.Update(crc32.ChecksumIEEE(head), crc32.IEEETable, payload)
}
