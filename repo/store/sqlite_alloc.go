package store

import (
	"sync"

	"modernc.org/libc"
)

// keepSQLiteAllocatorPages keeps one page of every size class of the SQLite driver's
// allocator mapped for the life of the process.
//
// modernc.org/sqlite's malloc hands out blocks of 16 B … 16 KiB from 64 KiB pages
// it maps one at a time per size class, and unmaps a page the moment its last block
// is freed. A class that drops to no live block therefore costs an mmap, page faults
// and an munmap every time it is used again. SQLite's B-tree does exactly that: each
// page split (balance_nonroot) allocates an 11–16 KiB scratch block and frees it,
// and message inserts split index pages all the time — the maps, faults and unmaps
// were 10% of the process at 5,000 sends/s on a guest where a syscall costs 1.2 µs.
// One block of each class that is never freed keeps its page, and the page's other
// blocks serve the next allocations from the free list. The cost is at most eleven
// 64 KiB pages per process. Larger blocks get a mapping of their own each time,
// which this cannot help.
var keepSQLiteAllocatorPages = sync.OnceFunc(func() {
	tls := libc.NewTLS()
	defer tls.Close()
	for log := 4; log <= 14; log++ { // modernc.org/memory: 16 B slots up to pageSize/4
		libc.Xmalloc(tls, libc.Tsize_t(1)<<log)
	}
})
