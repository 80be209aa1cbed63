package wsnet

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"
)

// An upgraded WebSocket leaves netpoll's Connection and is served straight from one
// of netpoll's pollers through a bare FDOperator (see Conn). A netpoll Connection
// costs ~4 KiB of heap for as long as it lives, however idle: the struct with its two
// LinkBuffers and nodes, two trigger channels, the 1.3 KiB write barrier it borrows
// for life, and the output node it keeps after a write. An idle WebSocket needs none
// of that; its Conn and operator are ~0.5 KiB.
//
// netpoll v0.7.5 exports FDOperator and Poll but no way to reach a poller, and a
// Connection keeps its operator private. Three symbols are reached here, pinned to the
// exact netpoll version in go.mod (the build fails if one disappears, checkInternals
// fails at start if the layout moved, and the package's tests exercise all three):
//
//   - pollmanager and (*manager).Pick: the poller a new operator registers with, the
//     same choice netpoll makes for its own connections;
//   - (*FDOperator).unused: waits until the poller is not running a handler of the
//     operator and stops it from starting one; netpoll's own Free begins with it;
//   - the operator field of netpoll's connection, read through reflect: the upgrade
//     detaches it from the poller itself so that no read lands in the Connection's
//     buffer after its bytes were taken over, then closes the Connection and keeps a
//     dup of the descriptor.

//go:linkname pollmanager github.com/cloudwego/netpoll.pollmanager
var pollmanager unsafe.Pointer

//go:linkname managerPick github.com/cloudwego/netpoll.(*manager).Pick
func managerPick(m unsafe.Pointer) netpoll.Poll

//go:linkname operatorUnused github.com/cloudwego/netpoll.(*FDOperator).unused
func operatorUnused(op *netpoll.FDOperator)

// pickPoll returns the poller a new WebSocket registers with.
func pickPoll() netpoll.Poll { return managerPick(pollmanager) }

var (
	internalsOnce sync.Once
	internalsErr  error
	// connType is netpoll's connection struct: the dynamic type (behind a pointer) of
	// every Connection its server accepts.
	connType reflect.Type
	// operatorField is the index of connection.operator in connType.
	operatorField []int
)

// checkInternals verifies, once, that netpoll's connection has the operator field
// this package reads; ListenAndServe fails with its error otherwise.
func checkInternals() error {
	internalsOnce.Do(func() {
		t := reflect.TypeFor[netpoll.TCPConnection]() // embeds netpoll's connection
		conn, ok := t.FieldByName("connection")
		if !ok || conn.Type.Kind() != reflect.Struct {
			internalsErr = errors.New("wsnet: netpoll.TCPConnection embeds no connection struct")
			return
		}
		f, ok := conn.Type.FieldByName("operator")
		if !ok || f.Type != reflect.TypeFor[*netpoll.FDOperator]() {
			internalsErr = errors.New("wsnet: netpoll's connection has no operator *FDOperator field")
			return
		}
		connType, operatorField = conn.Type, f.Index
	})
	return internalsErr
}

// operatorOf returns the FDOperator of a Connection accepted by netpoll's server.
func operatorOf(nc netpoll.Connection) (*netpoll.FDOperator, error) {
	if err := checkInternals(); err != nil {
		return nil, err
	}
	v := reflect.ValueOf(nc)
	if v.Kind() != reflect.Pointer || v.Elem().Type() != connType {
		return nil, fmt.Errorf("wsnet: unexpected netpoll connection type %T", nc)
	}
	op := (*netpoll.FDOperator)(v.Elem().FieldByIndex(operatorField).UnsafePointer())
	if op == nil {
		return nil, errors.New("wsnet: netpoll connection has no operator")
	}
	return op, nil
}

// takeOver moves nc's socket out of netpoll and returns a descriptor of its own for it
// and every byte netpoll had read but nobody consumed. It must run inside nc's
// OnRequest. The descriptor is a dup: netpoll closes its own number, after dropping it
// from its connection map, when it frees the Connection as OnRequest returns, so the
// number can never be reused by a new accept while netpoll still maps it. Nothing of
// netpoll reads the socket again.
func takeOver(nc netpoll.Connection) (fd int, rest []byte, err error) {
	op, err := operatorOf(nc)
	if err != nil {
		return -1, nil, err
	}
	// EPOLL_CTL_DEL now, so no new event is taken for the socket; netpoll's own
	// detach when OnRequest returns is then a no-op (it detaches an operator once).
	if err := op.Control(netpoll.PollDetach); err != nil {
		return -1, nil, fmt.Errorf("wsnet: detach from netpoll: %w", err)
	}
	// An event taken before the detach may be reading into nc's buffer right now: wait
	// for that handler, and keep the poller from starting another for op. netpoll's
	// Free, when it runs the finalizer, finds op already unused.
	operatorUnused(op)
	r := nc.Reader()
	if n := r.Len(); n > 0 {
		p, err := r.Next(n)
		if err != nil {
			return -1, nil, fmt.Errorf("wsnet: take buffered input: %w", err)
		}
		rest = append([]byte(nil), p...)
	}
	_ = r.Release()
	// One fcntl dups and sets close-on-exec (dup then CloseOnExec was two syscalls
	// per connection in a storm).
	fd, err = unix.FcntlInt(uintptr(op.FD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("wsnet: dup the socket: %w", err)
	}
	// The close runs when OnRequest returns; the socket lives on in fd.
	_ = nc.Close()
	return fd, rest, nil
}
