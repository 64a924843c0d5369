/* The ledger's large arrays, marked for huge pages (bigmem.h). */
#include "bigmem.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_PAGE_BYTES ((uintptr_t)2 << 20)

/* Marks the whole huge pages inside [p, p + n) for huge pages, when n is 4 MiB or more. */
static void *advise(void *p, size_t n)
{
    if (p == NULL || n < 2 * HUGE_PAGE_BYTES)
        return p;
    uintptr_t lo = ((uintptr_t)p + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(HUGE_PAGE_BYTES - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    return p;
}

void bigmem_init(void)
{
    /* Advice too: where it is refused, allocation works as before. */
    (void)mallopt(M_MMAP_THRESHOLD, (int)BIGMEM_MMAP_BYTES);
}

void *bigmem_malloc(size_t n)
{
    return advise(malloc(n), n);
}

void *bigmem_calloc(size_t count, size_t size)
{
    /* calloc refuses a count * size that overflows before anything is allocated */
    void *p = calloc(count, size);
    return p == NULL ? NULL : advise(p, count * size);
}

void *bigmem_realloc(void *p, size_t n)
{
    return advise(realloc(p, n), n);
}
