package channel

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/isorun/isorun/agent/internal/spec"
)

// Error is a failure that ends a stream with an ERROR frame (protocol.md section 5).
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error with the given spec code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// BadRequest is the ERROR for a request field that is missing, mistyped or out of range.
func BadRequest(field, format string, args ...any) *Error {
	return &Error{Code: spec.CodeBadRequest, Message: fmt.Sprintf("field %q: ", field) + fmt.Sprintf(format, args...)}
}

// FromOS maps an OS error about path to a spec error code (protocol.md section 5.5); the message
// carries the path and the OS text.
func FromOS(path string, err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	text := err.Error()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		text = errno.Error()
	}
	return &Error{Code: codeOf(err), Message: path + ": " + text}
}

func codeOf(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return spec.CodeIoError
	}
	switch errno {
	case syscall.ENOENT:
		return spec.CodeNotFound
	case syscall.EACCES, syscall.EPERM:
		return spec.CodePermissionDenied
	case syscall.EEXIST:
		return spec.CodeExists
	case syscall.ENOTDIR:
		return spec.CodeNotADirectory
	case syscall.EISDIR:
		return spec.CodeIsADirectory
	case syscall.ENOTEMPTY:
		return spec.CodeNotEmpty
	}
	return spec.CodeIoError
}
