package wsnet

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// openIdle upgrades one raw client and returns it with its server-side Conn, once
// that has no writer running.
func openIdle(t *testing.T) (*rawClient, *Conn) {
	t.Helper()
	h := newHandler(t)
	ts := startServer(t, Config{}, h)
	rc := dialRaw(t, ts.addr)
	sc := h.nextOpen(t)
	idleWriter(t, sc)
	return rc, sc
}

// idleWriter waits until c has no drain claimed (the upgrade's write of the 101
// has finished), so what SendDeferred reports is up to the test.
func idleWriter(t *testing.T, c *Conn) {
	t.Helper()
	waitFor(t, 5*time.Second, "the 101's drain to finish", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.draining
	})
}

// SendDeferred leaves the writing to the caller's Flush, and frames queued before
// that Flush (deferred or not) wait for it and leave with it, in order.
func TestSendDeferredWaitsForFlush(t *testing.T) {
	rc, sc := openIdle(t)

	if flush, err := sc.SendDeferred([]byte("a")); !flush || err != nil {
		t.Fatalf("first SendDeferred = %v, %v; want the flush left to the caller", flush, err)
	}
	if flush, err := sc.SendDeferred([]byte("b")); flush || err != nil {
		t.Fatalf("second SendDeferred = %v, %v; want it to join the pending flush", flush, err)
	}
	if err := sc.Send([]byte("c")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	sc.mu.Lock()
	queued := len(sc.queue)
	sc.mu.Unlock()
	if queued != 3 {
		t.Fatalf("%d frames queued before Flush, want 3 (no writer may start before it)", queued)
	}
	sc.Flush()
	for _, want := range []string{"a", "b", "c"} {
		rc.expectText(want)
	}
	// Flush released the claim: the next deferred frame needs a Flush again.
	idleWriter(t, sc)
	if flush, err := sc.SendDeferred([]byte("d")); !flush || err != nil {
		t.Fatalf("SendDeferred after Flush = %v, %v; want the flush left to the caller", flush, err)
	}
	sc.Flush()
	rc.expectText("d")
}

// A close requested while a deferred frame waits for its Flush goes out after that
// frame, with the Flush.
func TestCloseWaitsForThePendingFlush(t *testing.T) {
	rc, sc := openIdle(t)
	if flush, err := sc.SendDeferred([]byte("last words")); !flush || err != nil {
		t.Fatalf("SendDeferred = %v, %v", flush, err)
	}
	sc.Close(4001, "bye")
	sc.Flush()
	rc.expectText("last words")
	rc.expectClose(4001)
	sc.Flush() // a Flush with nothing to write, on a closed connection, does nothing
}

// Flush never waits for a peer that does not read: a batch the socket cannot take
// moves to a writer goroutine of its own, which sends everything, whole and in order,
// once the peer reads. Here a client with a 4 KiB receive buffer reads nothing until
// 16 MiB are queued, in batches under one chunk (the partial-write hand-off) and one
// frame over it (the whole-batch hand-off).
func TestFlushHandsAFullSocketToItsOwnWriter(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{SendQueue: 256, WriteTimeout: 20 * time.Second}, h)
	rc := tinyRecvBuf(t, ts.addr)
	sc := h.nextOpen(t)
	idleWriter(t, sc)

	const frames, size = 160, 100 << 10
	frame := func(i, n int) []byte {
		p := bytes.Repeat([]byte{'a' + byte(i%26)}, n)
		binary.BigEndian.PutUint32(p, uint32(i))
		return p
	}
	sizes := make([]int, frames+1)
	joined := 0 // deferred frames that found a writer already busy
	for i := range frames + 1 {
		sizes[i] = size
		if i == frames {
			sizes[i] = maxChunk + 1
		}
		flush, err := sc.SendDeferred(frame(i, sizes[i]))
		if err != nil {
			t.Fatalf("SendDeferred %d: %v", i, err)
		}
		if !flush {
			joined++
			continue
		}
		start := time.Now()
		sc.Flush()
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Flush %d took %v: it waited for the peer (WriteTimeout 20s)", i, d)
		}
	}
	if joined == 0 {
		t.Fatal("every Flush wrote its frame at once: the socket never filled, so no hand-off was tested")
	}
	for i := range frames + 1 {
		op, p, err := rc.readFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if op != 0x1 || len(p) != sizes[i] || binary.BigEndian.Uint32(p) != uint32(i) ||
			bytes.Count(p[4:], []byte{'a' + byte(i%26)}) != sizes[i]-4 {
			t.Fatalf("frame %d: op %d, %d bytes, index %d", i, op, len(p), binary.BigEndian.Uint32(p))
		}
	}
}
