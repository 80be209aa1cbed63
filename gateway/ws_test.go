package gateway

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/kerrors"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
)

// TestSendOutcome: a batched send's outcome becomes the same error frame (code and
// message) as the error the single logic.Send fails with, and a failed batch call
// is handled as a failed single call.
func TestSendOutcome(t *testing.T) {
	g := &Gateway{log: slog.New(slog.DiscardHandler)}
	for _, c := range []struct {
		code base.ErrCode
		msg  string
	}{
		{base.ErrCode_CONTENT_TOO_LONG, "message content is too long"},
		{base.ErrCode_NOT_MEMBER, "you are not a member of this conversation"},
		{base.ErrCode_CONVERSATION_NOT_FOUND, "conversation not found"},
		{base.ErrCode_UNAVAILABLE, "service temporarily unavailable"},
		{base.ErrCode_INTERNAL, "internal error: details"},
	} {
		single := g.classify("send", kerrors.NewBizStatusError(int32(c.code), c.msg))
		m, err := sendOutcome(&logicapi.SendOutcome{ErrorCode: c.code, Message: c.msg}, nil)
		if m != nil || err == nil {
			t.Fatalf("outcome %s = %v, %v; want an error", c.code, m, err)
		}
		if got := g.classify("send", err); *got != *single {
			t.Errorf("outcome %s classified %+v, single Send's error %+v", c.code, got, single)
		}
	}
	rpc := errors.New("connection reset")
	if _, err := sendOutcome(nil, rpc); err != rpc {
		t.Errorf("batch call error = %v, want %v", err, rpc)
	}
	for _, bad := range []*logicapi.SendOutcome{nil, {}, {Resp: &logicapi.SendResp{}}} {
		if _, err := sendOutcome(bad, nil); err == nil || g.classify("send", err).code != base.ErrCode_UNAVAILABLE.String() {
			t.Errorf("outcome %+v err = %v, want UNAVAILABLE", bad, err)
		}
	}
	want := &repoapi.Message{Id: 7}
	if m, err := sendOutcome(&logicapi.SendOutcome{Resp: &logicapi.SendResp{Message: want}}, nil); err != nil || m != want {
		t.Errorf("ok outcome = %v, %v", m, err)
	}
}

// fakeDeferred is a socket for fanWriter: claims says whether its SendDeferred leaves
// the write to the caller, refuse makes it fail, flushes counts Flush calls.
type fakeDeferred struct {
	id      uint64
	claims  bool
	refuse  bool
	got     [][]byte
	flushes sync.WaitGroup
	flushed atomic.Int32
}

func (f *fakeDeferred) ID() uint64 { return f.id }

func (f *fakeDeferred) SendDeferred(frame []byte) (bool, error) {
	if f.refuse {
		return false, errors.New("closed")
	}
	f.got = append(f.got, frame)
	return f.claims, nil
}

func (f *fakeDeferred) Flush() { f.flushed.Add(1); f.flushes.Done() }

// TestFanWriterWritesASmallLastChunkItself: a push to one user's socket or two is
// flushed by done before it returns, on the caller's goroutine, not by a goroutine
// started for it. With a third socket the chunk is left to a goroutine; the test
// only waits for its flushes.
func TestFanWriterWritesASmallLastChunkItself(t *testing.T) {
	for n := 1; n <= flushInline+1; n++ {
		w := fanWriter[*fakeDeferred]{frame: []byte("frame"), skip: 99, users: 1}
		socks := make([]*fakeDeferred, n)
		for i := range socks {
			socks[i] = &fakeDeferred{id: uint64(i), claims: true}
			socks[i].flushes.Add(1)
			w.add(socks[i])
		}
		if got := w.done(); got != n {
			t.Fatalf("%d sockets: done() = %d", n, got)
		}
		if n <= flushInline {
			for i, s := range socks {
				if s.flushed.Load() != 1 {
					t.Fatalf("%d sockets: socket %d not flushed when done returned", n, i)
				}
			}
		}
		for _, s := range socks {
			s.flushes.Wait()
		}
	}
}

// TestFanWriter: every socket but the sender's gets the frame queued; each one whose
// SendDeferred left the write to the writer is flushed exactly once, in full chunks
// and in the last partial one; refused sockets do not count.
func TestFanWriter(t *testing.T) {
	const n, skip = 3*flushChunk + 37, 5
	frame := []byte("frame")
	socks := make([]*fakeDeferred, n)
	w := fanWriter[*fakeDeferred]{frame: frame, skip: skip}
	wantQueued, wantFlushed := 0, 0
	for i := range socks {
		s := &fakeDeferred{id: uint64(i), claims: i%7 != 0, refuse: i%11 == 0}
		socks[i] = s
		if i != skip && !s.refuse {
			wantQueued++
			if s.claims {
				wantFlushed++
				s.flushes.Add(1)
			}
		}
		w.add(s)
	}
	if got := w.done(); got != wantQueued {
		t.Fatalf("done() = %d, want %d", got, wantQueued)
	}
	if wantFlushed <= 2*flushChunk || wantFlushed%flushChunk == 0 {
		t.Fatalf("only %d sockets to flush: the test must cover full chunks and a partial one", wantFlushed)
	}
	flushed := make(chan struct{})
	go func() {
		for _, s := range socks {
			s.flushes.Wait()
		}
		close(flushed)
	}()
	select {
	case <-flushed:
	case <-time.After(10 * time.Second):
		t.Fatal("sockets left to the writer were not all flushed within 10 s")
	}
	for i, s := range socks {
		wantGot, wantFlush := 1, int32(1)
		if i == skip || s.refuse {
			wantGot, wantFlush = 0, 0
		} else if !s.claims {
			wantFlush = 0
		}
		if len(s.got) != wantGot || (wantGot == 1 && string(s.got[0]) != "frame") || s.flushed.Load() != wantFlush {
			t.Fatalf("socket %d: queued %d frames, flushed %d times; want %d, %d", i, len(s.got), s.flushed.Load(), wantGot, wantFlush)
		}
	}
}
