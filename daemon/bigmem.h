/*
 * Allocation of the ledger's large arrays. The kernel maps an anonymous allocation in 4 KiB
 * pages unless asked for 2 MiB ones (Debian's default transparent huge pages setting is
 * "madvise"); a ledger of 1 M events is about 70 MiB of arrays that a snapshot's restore and
 * every copy of the ledger fill at once, and their page faults cost about as much as the
 * copying. So an array of 4 MiB or more is marked for huge pages as soon as it is allocated.
 * Only the 2 MiB-aligned whole pages inside it are marked, so nothing outside it is touched.
 * The mark is advice: where huge pages are off, or none is free, the array is mapped as before.
 */
#ifndef BUDGET_BIGMEM_H
#define BUDGET_BIGMEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define BIGMEM_HUGE_PAGE_BYTES ((uintptr_t)2 << 20)

/* Marks the whole huge pages inside [p, p + n) for huge pages, when n is 4 MiB or more. */
static inline void *bigmem_advise(void *p, size_t n)
{
    if (p == NULL || n < 2 * BIGMEM_HUGE_PAGE_BYTES)
        return p;
    uintptr_t lo = ((uintptr_t)p + BIGMEM_HUGE_PAGE_BYTES - 1) & ~(BIGMEM_HUGE_PAGE_BYTES - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(BIGMEM_HUGE_PAGE_BYTES - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    return p;
}

static inline void *bigmem_malloc(size_t n)
{
    return bigmem_advise(malloc(n), n);
}

static inline void *bigmem_calloc(size_t count, size_t size)
{
    /* calloc checks count * size for overflow before anything is allocated */
    void *p = calloc(count, size);
    return p == NULL ? NULL : bigmem_advise(p, count * size);
}

static inline void *bigmem_realloc(void *p, size_t n)
{
    return bigmem_advise(realloc(p, n), n);
}

#endif
