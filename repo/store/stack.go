package store

// growStack grows the calling goroutine's stack while it is shallow. A group
// commit's leader is a Kitex handler on a pooled goroutine that starts with a small
// stack, and SQLite's transpiled C grew it two or three times deep down, each time
// copying and adjusting every frame above, with wmu held: runtime.newstack under
// lead was 1.4–2.1% of the process at 50 sends in flight (four profiles). One frame
// of growStackBytes makes the runtime allocate a stack large enough at once, with
// only the handler's frames to copy: 0.2–0.6% (three profiles, alternating builds).
//
//go:noinline
func growStack() byte {
	var b [growStackBytes]byte
	b[growStackBytes/2] = 1 // a read the compiler cannot fold away
	return b[sink%growStackBytes]
}

const growStackBytes = 48 << 10

var sink int // always 0; a variable, so growStack's read is not a constant
