package files

import (
	"os"

	"github.com/isorun/isorun/agent/internal/channel"
	"github.com/isorun/isorun/agent/internal/spec"
)

// mkdir creates a folder. The mode is applied with chmod afterwards so that the agent's umask
// does not strip bits the host asked for.
func (s *Service) mkdir(st *channel.Stream, req channel.Request) (any, error) {
	path, err := req.Path("path")
	if err != nil {
		return nil, err
	}
	mode, err := req.Mode("mode", 0o755)
	if err != nil {
		return nil, err
	}
	parents, err := req.Bool("parents", true)
	if err != nil {
		return nil, err
	}
	if parents {
		if fi, err := os.Stat(path); err == nil {
			if fi.IsDir() {
				return struct{}{}, nil
			}
			return nil, channel.Errorf(spec.CodeExists, "%s: exists and is not a directory", path)
		}
		if err := os.MkdirAll(path, fileMode(mode)); err != nil {
			return nil, channel.FromOS(path, err)
		}
	} else if err := os.Mkdir(path, fileMode(mode)); err != nil {
		return nil, channel.FromOS(path, err)
	}
	if err := os.Chmod(path, fileMode(mode)); err != nil {
		return nil, channel.FromOS(path, err)
	}
	return struct{}{}, nil
}
