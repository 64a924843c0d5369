/* The ledger's large arrays, marked for huge pages and kept a while once freed (bigmem.h). */
#include "bigmem.h"

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define HUGE_PAGE_BYTES ((uintptr_t)2 << 20)

/* A block kept for reuse: its usable size, and when it was freed (monotonic ms). */
typedef struct {
    void *p;
    size_t size;
    uint64_t freed_ms;
} spare;

static struct {
    pthread_mutex_t lock;
    spare blocks[BIGMEM_SPARE_BLOCKS];
    uint32_t len;
    size_t bytes;
    uint64_t reused; /* blocks taken, since start */
} spares = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* glibc puts a mapped block's 16-byte header at the start of its mapping, and the block's
 * usable size runs to the mapping's end. A request of n bytes gets a mapping of at most n + 24
 * bytes rounded up to whole pages, and of exactly that when n + 24 is whole pages. */
#define MAPPED_HEADER_BYTES (2 * sizeof(size_t))
#define MAPPED_REQUEST_OVERHEAD (3 * sizeof(size_t))

/*
 * What to ask glibc for, for a block of n bytes: for a large one, the most that keeps its mapping
 * within the same whole number of huge pages. The kernel puts a mapping of whole huge pages on
 * a huge page boundary (where it aligns anonymous mappings at all), and mremap moves such a
 * mapping to another boundary, so its huge pages move whole. A mapping of any other length lies
 * anywhere, and a move to an address that differs from the old one modulo 2 MiB breaks its huge
 * pages into small ones. The pages beyond n are never written, so they cost no memory, but they
 * count in the bytes kept for reuse: a block is rounded only when that adds at most an eighth.
 */
static size_t mapped_request(size_t n)
{
    if (n < BIGMEM_MMAP_BYTES || n > SIZE_MAX - HUGE_PAGE_BYTES - MAPPED_REQUEST_OVERHEAD)
        return n;
    size_t whole = ((n + MAPPED_REQUEST_OVERHEAD + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1)) -
                   MAPPED_REQUEST_OVERHEAD;
    return whole - n <= n / 8 ? whole : n;
}

/*
 * Marks the block at p, of n bytes, for huge pages when n is 4 MiB or more. A block that has a
 * mapping of its own is marked whole, header and all, so that its mapping stays one: a mark on
 * part of a mapping splits it in three, and mremap, with which glibc's realloc grows a mapped
 * block, refuses a range that spans more than one mapping: glibc then copies the block into a
 * fresh mapping at every growth instead (a 40 MiB array grown by half: 112 ms and 10 369 page
 * faults, where moving its pages takes none). Any other block has only the whole huge pages
 * inside it marked.
 */
static void *advise(void *p, size_t n)
{
    if (p == NULL || n < 2 * HUGE_PAGE_BYTES)
        return p;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)p - MAPPED_HEADER_BYTES;
    uintptr_t len = (uintptr_t)malloc_usable_size(p) + MAPPED_HEADER_BYTES;
    if (page != 0 && start % page == 0 && len % page == 0) {
        (void)madvise((void *)start, len, MADV_HUGEPAGE);
        return p;
    }
    uintptr_t lo = ((uintptr_t)p + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(HUGE_PAGE_BYTES - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    return p;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

void bigmem_init(void)
{
    /* Advice too: where it is refused, allocation works as before. */
    (void)mallopt(M_MMAP_THRESHOLD, (int)BIGMEM_MMAP_BYTES);
}

/*
 * A kept block for n bytes, taken out of the list; NULL when none is kept. The smallest of at
 * least n bytes, its end given back when it is much larger (a mapped block shrinks in place);
 * else the largest, grown to n (a mapped block grows by moving its pages, not copying them).
 * Every kept page is used before a fresh one: pages freed by the process a moment ago are
 * cheap to touch again, and memory it never touched may not be (bigmem.h).
 */
static void *take_spare(size_t n)
{
    if (n < BIGMEM_MMAP_BYTES)
        return NULL;
    pthread_mutex_lock(&spares.lock);
    uint32_t fit = spares.len, largest = spares.len;
    for (uint32_t i = 0; i < spares.len; i++) {
        size_t size = spares.blocks[i].size;
        if (size >= n && (fit == spares.len || size < spares.blocks[fit].size))
            fit = i;
        if (largest == spares.len || size > spares.blocks[largest].size)
            largest = i;
    }
    uint32_t take = fit < spares.len ? fit : largest;
    void *p = NULL;
    size_t size = 0;
    if (take < spares.len) {
        p = spares.blocks[take].p;
        size = spares.blocks[take].size;
        spares.blocks[take] = spares.blocks[--spares.len];
        spares.bytes -= size;
        spares.reused++;
    }
    pthread_mutex_unlock(&spares.lock);
    if (p == NULL || (size >= n && size - n <= n / 4 + HUGE_PAGE_BYTES))
        return p;
    void *resized = realloc(p, mapped_request(n));
    if (resized != NULL)
        return advise(resized, n);
    if (size >= n)
        return p; /* a shrink refused: the block still holds n */
    free(p);
    return NULL;
}

void *bigmem_malloc(size_t n)
{
    void *p = take_spare(n);
    return p != NULL ? p : advise(malloc(mapped_request(n)), n);
}

void *bigmem_calloc(size_t count, size_t size)
{
    /* refused before anything is allocated, as calloc refuses it: a count * size that overflows */
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    size_t n = count * size;
    void *p = take_spare(n);
    if (p != NULL)
        return memset(p, 0, n);
    p = calloc(mapped_request(n), 1);
    return p == NULL ? NULL : advise(p, n);
}

void *bigmem_realloc(void *p, size_t n)
{
    return advise(realloc(p, mapped_request(n)), n);
}

void bigmem_free(void *p)
{
    if (p == NULL)
        return;
    size_t size = malloc_usable_size(p);
    if (size >= BIGMEM_MMAP_BYTES) {
        pthread_mutex_lock(&spares.lock);
        bool kept = spares.len < BIGMEM_SPARE_BLOCKS && spares.bytes + size <= BIGMEM_SPARE_BYTES;
        if (kept) {
            spares.blocks[spares.len++] = (spare){p, size, now_ms()};
            spares.bytes += size;
        }
        pthread_mutex_unlock(&spares.lock);
        if (kept)
            return;
    }
    free(p);
}

void bigmem_trim(uint64_t idle_ms)
{
    spare old[BIGMEM_SPARE_BLOCKS];
    uint32_t n = 0;
    uint64_t now = now_ms();
    pthread_mutex_lock(&spares.lock);
    for (uint32_t i = 0; i < spares.len;) {
        if (now - spares.blocks[i].freed_ms >= idle_ms) {
            old[n++] = spares.blocks[i];
            spares.bytes -= spares.blocks[i].size;
            spares.blocks[i] = spares.blocks[--spares.len];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&spares.lock);
    for (uint32_t i = 0; i < n; i++)
        free(old[i].p);
}

void bigmem_get_stats(bigmem_stats *out)
{
    pthread_mutex_lock(&spares.lock);
    *out = (bigmem_stats){spares.reused, spares.bytes};
    pthread_mutex_unlock(&spares.lock);
}
