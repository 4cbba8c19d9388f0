package process

import (
	"github.com/isorun/isorun/agent/internal/channel"
)

// feedStdin copies DATA on channel 0 into the process's stdin and closes it at EOF.
//
// Credit flows back only as the bytes are written, so a process that does not read its stdin
// stops the host instead of filling the agent. If the process stops reading for good (it
// exited, or closed stdin), the rest is consumed and discarded so the stream can finish.
// When the stream goes away (detach) stdin is closed too: nobody can write to it any more,
// and EOF is the honest thing to tell the process.
func (p *Process) feedStdin(st *channel.Stream) {
	defer p.closeStdin()
	p.mu.Lock()
	f := p.stdin
	p.mu.Unlock()
	broken := f == nil
	for {
		data, err := st.Recv()
		if err != nil {
			return
		}
		if !broken {
			if _, err := f.Write(data); err != nil {
				broken = true
			}
		}
	}
}
