package channel

import (
	"log"
	"runtime/debug"
)

// Go runs fn on a new goroutine that cannot crash the agent: as PID 1, an unrecovered panic
// would exit init and panic the guest kernel. A panic is logged with its stack and handed to
// onPanic (may be nil) so the owner can fail its stream.
func Go(logger *log.Logger, name string, fn func(), onPanic func(p any)) {
	go func() {
		defer func() {
			if p := recover(); p != nil {
				logger.Printf("PANIC in %s: %v\n%s", name, p, debug.Stack())
				if onPanic != nil {
					onPanic(p)
				}
			}
		}()
		fn()
	}()
}
