/*
 * Allocation of the ledger's large arrays. The kernel maps an anonymous allocation in 4 KiB
 * pages unless asked for 2 MiB ones (Debian's default transparent huge pages setting is
 * "madvise"); a ledger of 1 M events is about 70 MiB of arrays that a snapshot's restore and
 * every copy of the ledger fill at once, and their page faults cost about as much as the
 * copying. So an array of 4 MiB or more is marked for huge pages as soon as it is allocated:
 * the whole of its own mapping, so that the mapping stays one and realloc can move its pages
 * with mremap, which refuses a range over several mappings (a block in some other memory has
 * only the whole huge pages inside it marked, so nothing outside it is touched). The mark is
 * advice: where huge pages are off, or none is free, the array is mapped as before.
 *
 * A large block freed with bigmem_free is kept a while for the next large allocation, which
 * then reuses its pages: a fresh mapping costs a page fault per page and the kernel's zeroing
 * of each, and on a virtual machine the first huge pages of a process can take far longer
 * (about 250 ms for 80 MiB, against 11 ms for pages the process had used). A `balances` read
 * as of an earlier point builds and frees a whole ledger, so each read after the first takes
 * the last one's pages. At most BIGMEM_SPARE_BYTES are kept, each block until bigmem_trim
 * finds it unused for its idle time.
 *
 * Each allocating function is its libc namesake plus the mark and the reuse; free() or
 * bigmem_free() frees what they return (free() just does not keep it), and realloc() may
 * grow it. A block taken for bigmem_malloc holds what its last user left in it, as a
 * malloc'd block may; bigmem_calloc clears it. Thread-safe.
 */
#ifndef BUDGET_BIGMEM_H
#define BUDGET_BIGMEM_H

#include <stddef.h>
#include <stdint.h>

/* Called once at start, before any ledger is built: every allocation of
 * BIGMEM_MMAP_BYTES or more gets a mapping of its own (mallopt M_MMAP_THRESHOLD). glibc's
 * own threshold rises to the size of each such block freed, so once a ledger's copy is freed
 * its arrays came from the heap, and each growth by realloc copied the whole array instead of
 * moving its pages with mremap. */
#define BIGMEM_MMAP_BYTES ((size_t)4 << 20)
void bigmem_init(void);

void *bigmem_malloc(size_t n);
void *bigmem_calloc(size_t count, size_t size);
void *bigmem_realloc(void *p, size_t n);

/* At most this many blocks, and bytes in all, are kept for reuse. */
#define BIGMEM_SPARE_BLOCKS 24
#define BIGMEM_SPARE_BYTES ((size_t)128 << 20)

/* Frees p, or keeps it for reuse when it is of BIGMEM_MMAP_BYTES or more and there is room. */
void bigmem_free(void *p);

/* Frees the blocks kept for `idle_ms` or more without reuse (0: all of them). */
void bigmem_trim(uint64_t idle_ms);

typedef struct {
    uint64_t reused;      /* allocations that took a kept block, since start */
    uint64_t spare_bytes; /* bytes kept for reuse now */
} bigmem_stats;
void bigmem_get_stats(bigmem_stats *out);

#endif
