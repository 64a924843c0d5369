/*
 * Allocation of the ledger's large arrays. The kernel maps an anonymous allocation in 4 KiB
 * pages unless asked for 2 MiB ones (Debian's default transparent huge pages setting is
 * "madvise"); a ledger of 1 M events is about 70 MiB of arrays that a snapshot's restore and
 * every copy of the ledger fill at once, and their page faults cost about as much as the
 * copying. So an array of 4 MiB or more is marked for huge pages as soon as it is allocated.
 * Only the 2 MiB-aligned whole pages inside it are marked, so nothing outside it is touched.
 * The mark is advice: where huge pages are off, or none is free, the array is mapped as before.
 * Each function is its libc namesake plus that mark; free() frees what they return.
 */
#ifndef BUDGET_BIGMEM_H
#define BUDGET_BIGMEM_H

#include <stddef.h>

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

#endif
