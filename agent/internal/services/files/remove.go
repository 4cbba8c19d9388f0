package files

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/isorun/isorun/agent/internal/channel"
)

// remove deletes a file, a symlink (not its target) or a folder; a non-empty folder needs
// recursive. A missing path is not_found, also with recursive.
func (s *Service) remove(st *channel.Stream, req channel.Request) (any, error) {
	path, err := req.Path("path")
	if err != nil {
		return nil, err
	}
	recursive, err := req.Bool("recursive", false)
	if err != nil {
		return nil, err
	}
	if path == "/" {
		return nil, channel.BadRequest("path", "refusing to remove /")
	}
	stat, err := lstat(path)
	if err != nil {
		return nil, err
	}
	switch {
	case recursive:
		err = os.RemoveAll(path)
	case stat.Type == "dir":
		err = unix.Rmdir(path)
	default:
		err = unix.Unlink(path)
	}
	if err != nil {
		return nil, channel.FromOS(path, err)
	}
	return struct{}{}, nil
}
