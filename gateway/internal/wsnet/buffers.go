package wsnet

import (
	"sync"

	"github.com/cloudwego/netpoll"
)

// netpoll keeps, per connection and for its whole life, an 8 KiB input node and a
// 4 KiB output node (mcache-pooled) even when the connection is idle. Upgraded
// WebSockets leave netpoll (poller.go), but HTTP keep-alives, connections still in
// their handshake and Kitex's connections stay. OnDemandBuffers changes two
// process-wide netpoll settings so that idle connections hold no data buffers:
//
//   - BufferSize just above netpoll's page size (8 KiB) makes every connection's read
//     size exceed the page, and netpoll's Release then swaps the drained input node for
//     an empty one (resetTail) and returns it to the pool. The next read borrows a
//     pooled 16 KiB node for as long as unread input exists.
//   - LinkBufferCap 256 sizes output nodes by the write instead of at least 4 KiB. The
//     last written node stays attached after a flush (netpoll keeps the tail), so an
//     idle socket keeps at most one small node: the size of its last write rounded up.
//
// Kitex and Hertz share the setting in the same process; their connections borrow a
// pooled node per read instead of pinning one, which costs a pool Get/Put per read.
//
// netpoll reads its configuration when its pollers start, so this must run before
// any netpoll connection exists: in main's init or a test's TestMain. It is
// idempotent.
func OnDemandBuffers() error {
	onDemandOnce.Do(func() {
		netpoll.LinkBufferCap = minOutputNode
		onDemandErr = netpoll.Configure(netpoll.Config{BufferSize: onDemandReadSize})
	})
	return onDemandErr
}

const (
	// onDemandReadSize must exceed netpoll's internal pagesize (8 KiB) for resetTail
	// to free the drained input node.
	onDemandReadSize = 8<<10 + 1
	minOutputNode    = 256
)

var (
	onDemandOnce sync.Once
	onDemandErr  error
)
