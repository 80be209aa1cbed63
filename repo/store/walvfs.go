package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// The writer's WAL writes, batched (SQLite only).
//
// SQLite appends a commit to the WAL as frames, and writes every frame with two
// pwrite calls: its 24-byte header, then its page. A group commit of 1:1 sends
// dirties one to four pages per message (a leaf of each unique index, which few
// messages of a batch share, plus the table, conversation and member pages they do
// share), and pwrite was 28% of the writer's time at 5,000 sends/s: on this kind of
// machine a 24-byte and a 4 KiB pwrite cost 5.7–6.6 µs together, while one pwrite
// carrying 15 frames costs 1.2–1.3 µs per frame. The writer is the one connection
// every send goes through, so its time per message bounds the store's rate.
//
// walVFS is the default ("unix") VFS with one change: frames appended to a WAL file
// are gathered in memory and written with one pwrite (64 KiB at most per call) when
// the commit's last frame is complete. Readers (and the checkpointer) find a
// commit's frames through the WAL index, which SQLite updates only after the last
// frame's write returned, and by then the frames are in the file: a reader never
// sees an index entry for a frame still in memory. A commit whose flush fails fails
// (the writer rolls it back), as a failed pwrite did. A crash loses at most the
// frames of a commit that had not returned, i.e. was never acknowledged, which is
// also what happens without the buffer.
//
// The buffer only takes what it recognises — a frame header (exactly 24 bytes) at
// the end of the WAL followed by its page, or a page rewritten in place inside the
// buffer — and a header with a non-zero "database size" field marks a commit, which
// SQLite sets on a transaction's last frame only. Any other write (the WAL header at
// a restart, frame headers rewritten with new checksums after the commit frame), and
// every read, sync, truncate, size query, file control, fetch or close of the file,
// first writes out what is buffered. So if a later SQLite wrote frames differently,
// the buffer would stay empty. TestWALBufferKeepsEveryCommit recovers a copy of the
// files after every commit; TestWALBufferSurvivesKill kills a process appending.
const (
	walVFSName      = "gochat-walbuf"
	walFrameHdrSize = 24
	walBufferMax    = 1 << 20 // a longer run of frames (a huge transaction) is written before its commit
	// walWriteMax is the most one write passes to the unix VFS, which cuts every
	// write to 17 bits of length (seekAndWriteFd: nBuf &= 0x1ffff) and reports the
	// rest as SQLITE_FULL; SQLite itself never writes more than one 64 KiB page.
	walWriteMax = 64 << 10
	// walBufferCap holds walBufferMax plus the last frame added: a header goes in
	// only while the buffer is under walBufferMax, and a page is at most 64 KiB.
	walBufferCap = walBufferMax + walFrameHdrSize + 64<<10
)

// Everything SQLite holds a pointer to lives outside the Go heap: the VFS, its name
// and the wrapped methods in Go globals, the buffers in SQLite's allocator. The
// transpiled SQLite turns those uintptrs back into pointers, which the race
// detector's pointer checks reject for Go heap memory.
var (
	walVFSOnce sync.Once
	walVFSErr  error

	// Read by the wrappers; set once by registerWALVFS.
	baseVFS  uintptr // the "unix" VFS
	baseOpen uintptr // its xOpen

	walVFS      sqlite3.Tsqlite3_vfs
	walVFSName0 [len(walVFSName) + 1]byte

	// walStats counts, for tests, frames that went through the buffer and writes
	// that bypassed it.
	walStats struct{ buffered, direct atomic.Int64 }

	walMu       sync.Mutex
	walFiles    = map[uintptr]*walFile{} // open WAL files, by sqlite3_file pointer
	walMethods  [4]sqlite3.Tsqlite3_io_methods
	walWrapping [len(walMethods)]uintptr // the base methods walMethods[i] wraps (0: free)
)

// walFile is one open WAL file's buffer. A sqlite3_file is used by one connection
// at a time, so only walMu's map needs a lock.
type walFile struct {
	base *sqlite3.Tsqlite3_io_methods
	buf  uintptr // walBufferCap bytes from SQLite's allocator
	n    int     // bytes in buf: contiguous frames not yet written, ending at front
	off  int64   // file offset of buf's first byte
	// front is where the next appended frame goes: the end of the highest write so
	// far, or of the WAL header after a restart. Only writes there are buffered, so
	// rewrites of earlier frames (SQLite rewrites headers when it recomputes
	// checksums after the commit frame) always go straight to the file.
	front int64
	// hdr is the offset of a buffered frame header whose page has not come yet
	// (-1: none), and commit whether that header closes a transaction.
	hdr    int64
	commit bool
}

func (w *walFile) bytes() []byte { return unsafe.Slice((*byte)(ptr(w.buf)), walBufferCap) }

// registerWALVFS registers walVFS once per process and returns its name.
func registerWALVFS() (string, error) {
	walVFSOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		base := sqlite3.Xsqlite3_vfs_find(tls, 0)
		if base == 0 {
			walVFSErr = errors.New("sqlite has no default VFS")
			return
		}
		b := (*sqlite3.Tsqlite3_vfs)(ptr(base))
		if b.FxOpen == 0 {
			walVFSErr = errors.New("sqlite's default VFS has no xOpen")
			return
		}
		baseVFS, baseOpen = base, b.FxOpen
		copy(walVFSName0[:], walVFSName)
		walVFS = *b
		walVFS.FpNext = 0
		walVFS.FzName = uintptr(unsafe.Pointer(&walVFSName0[0]))
		walVFS.FxOpen = cFunc(walOpen)
		if rc := sqlite3.Xsqlite3_vfs_register(tls, uintptr(unsafe.Pointer(&walVFS)), 0); rc != sqlite3.SQLITE_OK {
			walVFSErr = fmt.Errorf("register the %s VFS: sqlite error %d", walVFSName, rc)
		}
	})
	return walVFSName, walVFSErr
}

// cFunc is a Go function as the transpiled SQLite holds a C function pointer.
func cFunc(f any) uintptr {
	return (*[2]uintptr)(unsafe.Pointer(&f))[1]
}

// fnp turns a C function pointer held by SQLite back into something to call.
func fnp(p uintptr) unsafe.Pointer {
	return unsafe.Pointer(&struct{ uintptr }{p})
}

// ptr is an address SQLite passed as a uintptr — memory of its allocator or a Go
// global, neither of which moves — as a pointer. vet flags unsafe.Pointer(p),
// rightly for Go heap memory, so the word is read through memory; not inlined,
// because go1.26's compiler crashes ("disjointTypes: one of arguments is not a
// pointer") on walWrite's copies when it sees through it.
//
//go:noinline
func ptr(p uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&p))
}

// wrapperFor returns the wrapped copy of base methods, or 0 when every slot wraps
// other methods already (the file then keeps its base methods: never the case with
// the unix VFS, whose files all share one set).
func wrapperFor(base uintptr) uintptr {
	for i, b := range walWrapping {
		if b == base {
			return uintptr(unsafe.Pointer(&walMethods[i]))
		}
		if b != 0 {
			continue
		}
		c := *(*sqlite3.Tsqlite3_io_methods)(ptr(base))
		c.FxClose = cFunc(walClose)
		c.FxRead = cFunc(walRead)
		c.FxWrite = cFunc(walWrite)
		c.FxTruncate = cFunc(walTruncate)
		c.FxSync = cFunc(walSync)
		c.FxFileSize = cFunc(walFileSize)
		c.FxFileControl = cFunc(walFileControl)
		if c.FxFetch != 0 {
			c.FxFetch = cFunc(walFetch)
		}
		walMethods[i], walWrapping[i] = c, base
		return uintptr(unsafe.Pointer(&walMethods[i]))
	}
	return 0
}

func walOpen(tls *libc.TLS, _ uintptr, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	// The base xOpen gets the base VFS: the file is the base VFS's own in every way
	// but its methods.
	rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(fnp(baseOpen)))(tls, baseVFS, zName, pFile, flags, pOutFlags)
	if rc != sqlite3.SQLITE_OK || flags&sqlite3.SQLITE_OPEN_WAL == 0 {
		return rc
	}
	f := (*sqlite3.Tsqlite3_file)(ptr(pFile))
	if f.FpMethods == 0 {
		return rc
	}
	buf := libc.Xmalloc(tls, walBufferCap)
	if buf == 0 {
		return rc // no buffer: the file is written as the base VFS writes it
	}
	walMu.Lock()
	defer walMu.Unlock()
	m := wrapperFor(f.FpMethods)
	if m == 0 {
		libc.Xfree(tls, buf)
		return rc
	}
	walFiles[pFile] = &walFile{base: (*sqlite3.Tsqlite3_io_methods)(ptr(f.FpMethods)), buf: buf, hdr: -1}
	f.FpMethods = m
	return rc
}

func walFileOf(pFile uintptr) *walFile {
	walMu.Lock()
	defer walMu.Unlock()
	return walFiles[pFile]
}

// flush writes what is buffered with the base xWrite, in pieces of at most
// walWriteMax bytes. The buffer is emptied either way: the frames of a commit that
// failed are never read.
func (w *walFile) flush(tls *libc.TLS, pFile uintptr) int32 {
	w.hdr, w.commit = -1, false
	n := w.n
	w.n = 0
	for done := 0; done < n; {
		k := min(n-done, walWriteMax)
		rc := (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(fnp(w.base.FxWrite)))(tls, pFile, w.buf+uintptr(done), int32(k), w.off+int64(done))
		if rc != sqlite3.SQLITE_OK {
			return rc
		}
		done += k
	}
	return sqlite3.SQLITE_OK
}

func walWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	w := walFileOf(pFile)
	p := unsafe.Slice((*byte)(ptr(zBuf)), iAmt)
	switch {
	case iAmt == walFrameHdrSize && w.hdr < 0 && iOfst == w.front && iOfst > 0 && w.n < walBufferMax:
		// A frame header at the end of the WAL: buffered, its page comes next.
		if w.n == 0 {
			w.off = iOfst
		}
		w.n += copy(w.bytes()[w.n:], p)
		w.front = iOfst + int64(iAmt)
		w.hdr, w.commit = iOfst, binary.BigEndian.Uint32(p[4:8]) != 0
		walStats.buffered.Add(1)
		return sqlite3.SQLITE_OK
	case w.hdr >= 0 && iOfst == w.front && w.n+int(iAmt) <= walBufferCap:
		// The page of the buffered header; a commit's last frame is written out.
		w.n += copy(w.bytes()[w.n:], p)
		w.front = iOfst + int64(iAmt)
		commit := w.commit
		w.hdr, w.commit = -1, false
		if commit || w.n >= walBufferMax {
			return w.flush(tls, pFile)
		}
		return sqlite3.SQLITE_OK
	case w.hdr < 0 && w.n > 0 && iOfst >= w.off && iOfst+int64(iAmt) <= w.front:
		// A page rewritten in place while its frame is still buffered.
		copy(w.bytes()[iOfst-w.off:], p)
		return sqlite3.SQLITE_OK
	}
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	walStats.direct.Add(1)
	rc := (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(fnp(w.base.FxWrite)))(tls, pFile, zBuf, iAmt, iOfst)
	if end := iOfst + int64(iAmt); iOfst == 0 || end > w.front {
		w.front = end // the WAL header (a restart) or a write past the end
	}
	return rc
}

func walRead(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	w := walFileOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(fnp(w.base.FxRead)))(tls, pFile, zBuf, iAmt, iOfst)
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	w := walFileOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	w.front = min(w.front, size)
	return (*(*func(*libc.TLS, uintptr, int64) int32)(fnp(w.base.FxTruncate)))(tls, pFile, size)
}

func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	w := walFileOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32) int32)(fnp(w.base.FxSync)))(tls, pFile, flags)
}

func walFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	w := walFileOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, uintptr) int32)(fnp(w.base.FxFileSize)))(tls, pFile, pSize)
}

func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	w := walFileOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(fnp(w.base.FxFileControl)))(tls, pFile, op, pArg)
}

func walFetch(tls *libc.TLS, pFile uintptr, iOfst int64, iAmt int32, pp uintptr) int32 {
	w := walFileOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int64, int32, uintptr) int32)(fnp(w.base.FxFetch)))(tls, pFile, iOfst, iAmt, pp)
}

// walClose writes out what is buffered, gives the file its base methods back and
// closes it with them.
func walClose(tls *libc.TLS, pFile uintptr) int32 {
	walMu.Lock()
	w := walFiles[pFile]
	delete(walFiles, pFile)
	walMu.Unlock()
	rc := w.flush(tls, pFile)
	libc.Xfree(tls, w.buf)
	(*sqlite3.Tsqlite3_file)(ptr(pFile)).FpMethods = uintptr(unsafe.Pointer(w.base))
	if crc := (*(*func(*libc.TLS, uintptr) int32)(fnp(w.base.FxClose)))(tls, pFile); rc == sqlite3.SQLITE_OK {
		rc = crc
	}
	return rc
}
