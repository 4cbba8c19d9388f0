package process

// ring is a process's output not yet delivered: chunks in arrival order, each tagged with its
// channel (1 stdout, 2 stderr), so stdout and stderr keep their relative order on replay.
// While detached it is trimmed to the newest detached_buffer_bytes; while attached it only
// shrinks as the stream's credit allows, and the pumps stop reading when it is full.
type ring struct {
	chunks []chunk
	size   int
}

type chunk struct {
	ch   uint16
	data []byte
}

func (r *ring) push(ch uint16, b []byte) {
	if len(b) == 0 {
		return
	}
	if n := len(r.chunks); n > 0 && r.chunks[n-1].ch == ch && len(r.chunks[n-1].data) < 4096 {
		r.chunks[n-1].data = append(r.chunks[n-1].data, b...)
	} else {
		r.chunks = append(r.chunks, chunk{ch: ch, data: append([]byte(nil), b...)})
	}
	r.size += len(b)
}

// pushFront returns bytes that could not be delivered to the head of the ring.
func (r *ring) pushFront(ch uint16, b []byte) {
	r.chunks = append([]chunk{{ch: ch, data: b}}, r.chunks...)
	r.size += len(b)
}

// take removes up to max bytes from the head chunk.
func (r *ring) take(max int) (uint16, []byte) {
	head := &r.chunks[0]
	n := min(max, len(head.data))
	out := head.data[:n:n]
	head.data = head.data[n:]
	ch := head.ch
	if len(head.data) == 0 {
		r.chunks[0] = chunk{}
		r.chunks = r.chunks[1:]
	}
	r.size -= n
	return ch, out
}

// trim drops the oldest bytes until at most max remain.
func (r *ring) trim(max int) {
	for r.size > max {
		head := &r.chunks[0]
		n := min(r.size-max, len(head.data))
		head.data = head.data[n:]
		r.size -= n
		if len(head.data) == 0 {
			r.chunks[0] = chunk{}
			r.chunks = r.chunks[1:]
		}
	}
}
