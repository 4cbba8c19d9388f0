// Package tunnel implements the connect op (protocol.md section 5.7): a TCP port forward from
// the host to a server listening on the guest's loopback, carried on one stream.
//
//	host DATA ch 0 ──► Recv ──► socket write      (credit returns as bytes are written)
//	host EOF  ch 0 ──► CloseWrite
//	socket read (≤ credit) ──► DATA ch 1 ──► host (the socket is not read without credit)
//	socket EOF ──► EOF ch 1; both directions done ──► REPLY {bytes_in, bytes_out}
//
// CANCEL (or a new session) ends the stream's context, which closes the socket and so
// unblocks both pumps.
package tunnel

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// DialTimeout bounds the dial to the guest port.
const DialTimeout = 5 * time.Second

// Service is stateless; it exists to mount the handler like the other services.
type Service struct {
	log *log.Logger
}

// New returns the tunnel service.
func New(logger *log.Logger) *Service {
	return &Service{log: logger}
}

// Inputs names the ops that read DATA on channel 0 (channel.Inputs): connect.
func (s *Service) Inputs() channel.Inputs {
	return channel.Inputs{"connect": nil}
}

// Handlers maps this service's ops to their handlers.
func (s *Service) Handlers() map[string]channel.Handler {
	return map[string]channel.Handler{"connect": s.connect}
}

// Reply is the end of a connect stream.
type Reply struct {
	BytesIn  int64 `json:"bytes_in"`  // written into the guest socket
	BytesOut int64 `json:"bytes_out"` // sent to the host
}

func (s *Service) connect(st *channel.Stream, req channel.Request) (any, error) {
	if !req.Has("port") {
		return nil, channel.BadRequest("port", "required")
	}
	port, err := req.Int("port", 0)
	if err != nil {
		return nil, err
	}
	if port < 1 || port > 65535 {
		return nil, channel.BadRequest("port", "must be within 1..65535, got %d", port)
	}
	host, err := req.String("host", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	if host != "127.0.0.1" && host != "::1" {
		return nil, channel.BadRequest("host", "must be 127.0.0.1 or ::1 (a port forward reaches loopback only), got %q", host)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	dialCtx, cancelDial := context.WithTimeout(st.Context(), DialTimeout)
	conn, err := (&net.Dialer{}).DialContext(dialCtx, "tcp", addr)
	cancelDial()
	if err != nil {
		if st.Context().Err() != nil {
			return nil, err // cancelled: nothing is sent
		}
		return nil, channel.Errorf(spec.CodeRefused, "dial %s: %v", addr, err)
	}
	tcp := conn.(*net.TCPConn)
	defer tcp.Close()
	stop := context.AfterFunc(st.Context(), func() { tcp.Close() })
	defer stop()

	if err := st.Event(map[string]string{"event": "connected"}); err != nil {
		return nil, err
	}
	var bytesIn atomic.Int64
	inDone := make(chan struct{})
	channel.Go(s.log, "connect input", func() {
		defer close(inDone)
		bytesIn.Store(pumpIn(st, tcp))
	}, func(any) { tcp.Close() })

	bytesOut, err := pumpOut(st, tcp)
	if err != nil {
		return nil, err
	}
	if err := st.CloseChannel(spec.ChannelStdout); err != nil {
		return nil, err
	}
	select {
	case <-inDone:
	case <-st.Context().Done():
		return nil, st.Context().Err()
	}
	return Reply{BytesIn: bytesIn.Load(), BytesOut: bytesOut}, nil
}

// pumpIn writes channel 0 into the socket until EOF (then half-closes the socket's write side),
// a failed write, or the end of the stream. It returns the bytes written.
func pumpIn(st *channel.Stream, tcp *net.TCPConn) int64 {
	var n int64
	for {
		data, err := st.Recv()
		if errors.Is(err, io.EOF) {
			_ = tcp.CloseWrite()
			return n
		}
		if err != nil {
			return n
		}
		w, err := tcp.Write(data)
		n += int64(w)
		if err != nil {
			// The guest side is gone; the direction is done. Later DATA is dropped with the stream.
			return n
		}
	}
}

// pumpOut sends what the socket yields as DATA on channel 1, reading at most the credit the
// host has granted, until the socket reaches EOF or fails. It returns the bytes sent, or an
// error once the stream itself is gone.
func pumpOut(st *channel.Stream, tcp *net.TCPConn) (int64, error) {
	buf := make([]byte, spec.DataChunkBytes)
	var n int64
	for {
		credit, err := st.WaitCredit(nil)
		if err != nil {
			return n, err
		}
		r, rerr := tcp.Read(buf[:min(credit, len(buf))])
		if r > 0 {
			if err := st.Send(spec.ChannelStdout, buf[:r]); err != nil {
				return n, err
			}
			n += int64(r)
		}
		if rerr != nil {
			if st.Context().Err() != nil {
				return n, st.Context().Err()
			}
			return n, nil // EOF or a reset: the guest → host direction is done
		}
	}
}
