package files

import (
	"os"

	"github.com/isorun/isorun/agent/internal/channel"
)

func (s *Service) chmod(st *channel.Stream, req channel.Request) (any, error) {
	path, err := req.Path("path")
	if err != nil {
		return nil, err
	}
	if !req.Has("mode") {
		return nil, channel.BadRequest("mode", "required")
	}
	mode, err := req.Mode("mode", 0)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, fileMode(mode)); err != nil {
		return nil, channel.FromOS(path, err)
	}
	return struct{}{}, nil
}
