package files

import (
	"os"

	"github.com/isorun/isorun/agent/internal/channel"
)

func (s *Service) rename(st *channel.Stream, req channel.Request) (any, error) {
	src, err := req.Path("src")
	if err != nil {
		return nil, err
	}
	dst, err := req.Path("dst")
	if err != nil {
		return nil, err
	}
	if err := os.Rename(src, dst); err != nil {
		return nil, channel.FromOS(src+" -> "+dst, err)
	}
	return struct{}{}, nil
}
