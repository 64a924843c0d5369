/*
 * The large blocks kept for reuse (daemon/bigmem.c): a block freed is taken by the next large
 * allocation, the smallest that fits first, else the largest grown with its pages; calloc
 * clears it; a much larger block gives its end back; small blocks, and blocks past the cap,
 * are freed; and the trim frees only the blocks kept for the idle time. A large block is one
 * mapping, which grows by moving its pages rather than copying them.
 */
#include <criterion/criterion.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "daemon/bigmem.h"

#define MIB ((size_t)1 << 20)

static void setup(void)
{
    bigmem_init();
}

TestSuite(bigmem, .init = setup);

static bigmem_stats stats(void)
{
    bigmem_stats s;
    bigmem_get_stats(&s);
    return s;
}

Test(bigmem, a_large_block_freed_is_taken_by_the_next_large_allocation)
{
    char *p = bigmem_malloc(8 * MIB);
    cr_assert_not_null(p);
    memset(p, 0x5a, 8 * MIB);
    size_t size = malloc_usable_size(p);
    bigmem_free(p);
    cr_assert_eq(stats().spare_bytes, size);

    char *q = bigmem_malloc(7 * MIB);
    cr_assert_eq(q, p, "the kept block was not reused");
    cr_assert_eq(q[7 * MIB - 1], 0x5a, "the block's pages were not the ones written");
    cr_assert_eq(stats().reused, 1);
    cr_assert_eq(stats().spare_bytes, 0);

    /* taken once: the next allocation gets a block of its own */
    char *r = bigmem_malloc(7 * MIB);
    cr_assert_neq(r, q);
    bigmem_free(q);
    bigmem_free(r);
    bigmem_trim(0);
    cr_assert_eq(stats().spare_bytes, 0);
}

Test(bigmem, the_smallest_block_that_fits_is_taken)
{
    char *big = bigmem_malloc(24 * MIB), *small = bigmem_malloc(6 * MIB),
         *middle = bigmem_malloc(12 * MIB);
    cr_assert(big != NULL && small != NULL && middle != NULL);
    bigmem_free(big);
    bigmem_free(small);
    bigmem_free(middle);

    char *a = bigmem_malloc(5 * MIB);
    cr_assert_eq(a, small);
    char *c = bigmem_malloc(20 * MIB);
    cr_assert_eq(c, big);
    cr_assert_eq(stats().reused, 2);
    free(a);
    free(c);
    bigmem_trim(0);
}

Test(bigmem, with_none_large_enough_the_largest_is_grown)
{
    char *small = bigmem_malloc(6 * MIB), *large = bigmem_malloc(10 * MIB);
    cr_assert(small != NULL && large != NULL);
    memset(large, 0x3c, 10 * MIB);
    size_t small_size = malloc_usable_size(small);
    bigmem_free(small);
    bigmem_free(large);

    char *p = bigmem_malloc(40 * MIB);
    cr_assert_not_null(p);
    cr_assert_eq(stats().reused, 1);
    cr_assert(malloc_usable_size(p) >= 40 * MIB);
    /* the pages of the block grown are kept, with what was written in them */
    for (size_t i = 0; i < 10 * MIB; i += 4093)
        cr_assert_eq(p[i], 0x3c, "byte %zu of the block grown is %d", i, p[i]);
    memset(p, 0, 40 * MIB);
    cr_assert_eq(stats().spare_bytes, small_size);
    char *again = bigmem_malloc(5 * MIB);
    cr_assert_eq(again, small, "the smaller block was not left kept");
    free(again);
    free(p);
}

Test(bigmem, calloc_clears_a_kept_block)
{
    unsigned char *p = bigmem_malloc(8 * MIB);
    cr_assert_not_null(p);
    memset(p, 0xff, 8 * MIB);
    bigmem_free(p);

    unsigned char *q = bigmem_calloc(2 * MIB, 4);
    cr_assert_eq(q, p);
    for (size_t i = 0; i < 8 * MIB; i += 4093)
        cr_assert_eq(q[i], 0, "byte %zu of a cleared block is %u", i, q[i]);
    cr_assert_eq(q[8 * MIB - 1], 0);
    free(q);
}

Test(bigmem, a_much_larger_block_gives_its_end_back)
{
    char *p = bigmem_malloc(64 * MIB);
    cr_assert_not_null(p);
    bigmem_free(p);
    char *q = bigmem_malloc(8 * MIB);
    cr_assert_not_null(q);
    cr_assert(malloc_usable_size(q) < 12 * MIB, "8 MiB asked, %zu bytes held",
              malloc_usable_size(q));
    memset(q, 1, 8 * MIB);
    free(q);

    /* one a little larger is taken whole */
    p = bigmem_malloc(9 * MIB);
    size_t size = malloc_usable_size(p);
    bigmem_free(p);
    q = bigmem_malloc(8 * MIB);
    cr_assert_eq(q, p);
    cr_assert_eq(malloc_usable_size(q), size);
    free(q);
}

Test(bigmem, small_blocks_and_blocks_past_the_cap_are_freed)
{
    bigmem_free(bigmem_malloc(BIGMEM_MMAP_BYTES / 2));
    bigmem_free(malloc(1000));
    bigmem_free(NULL);
    cr_assert_eq(stats().spare_bytes, 0);

    /* untouched blocks: their pages are never faulted in */
    enum { N = 6 };
    char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = bigmem_malloc(BIGMEM_SPARE_BYTES / 4);
        cr_assert_not_null(p[i]);
    }
    for (int i = 0; i < N; i++)
        bigmem_free(p[i]);
    void *taken = bigmem_malloc(BIGMEM_SPARE_BYTES / 4);
    size_t one = malloc_usable_size(taken);
    free(taken);
    bigmem_stats s = stats();
    cr_assert(s.spare_bytes <= BIGMEM_SPARE_BYTES, "%zu bytes kept", (size_t)s.spare_bytes);
    cr_assert(s.spare_bytes >= 2 * one, "%zu bytes kept", (size_t)s.spare_bytes);

    /* no more blocks than BIGMEM_SPARE_BLOCKS, however small */
    bigmem_trim(0);
    char *q[BIGMEM_SPARE_BLOCKS + 4];
    for (int i = 0; i < BIGMEM_SPARE_BLOCKS + 4; i++)
        q[i] = bigmem_malloc(BIGMEM_MMAP_BYTES);
    for (int i = 0; i < BIGMEM_SPARE_BLOCKS + 4; i++)
        bigmem_free(q[i]);
    taken = bigmem_malloc(BIGMEM_MMAP_BYTES);
    size_t each = malloc_usable_size(taken);
    free(taken);
    cr_assert_eq(stats().spare_bytes, (uint64_t)(BIGMEM_SPARE_BLOCKS - 1) * each);
    bigmem_trim(0);
}

Test(bigmem, the_trim_frees_only_the_blocks_kept_for_the_idle_time)
{
    char *old = bigmem_malloc(8 * MIB), *young = bigmem_malloc(6 * MIB);
    cr_assert(old != NULL && young != NULL);
    size_t young_size = malloc_usable_size(young);
    bigmem_free(old);
    nanosleep(&(struct timespec){0, 120 * 1000000L}, NULL);
    bigmem_free(young);

    bigmem_trim(100);
    cr_assert_eq(stats().spare_bytes, young_size);
    char *again = bigmem_malloc(5 * MIB);
    cr_assert_eq(again, young, "the block kept was not the young one");
    cr_assert_eq(stats().spare_bytes, 0);
    free(again);
}

/* What the tests below hold is glibc's realloc moving a mapped block's pages; AddressSanitizer's
 * allocator stands in for glibc's and always copies. */
#if defined(__SANITIZE_ADDRESS__)
#define GLIBC_ALLOCATOR false
#else
#define GLIBC_ALLOCATOR true
#endif

static void need_glibc_allocator(void)
{
    if (!GLIBC_ALLOCATOR)
        cr_skip_test("AddressSanitizer's allocator stands in for glibc's");
}

/* The mappings of this process that share an address with [p, p + n). */
static int mappings_over(const void *p, size_t n)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert_not_null(f);
    char line[4608]; /* a line names a file by its path, of up to PATH_MAX bytes */
    int count = 0;
    uintptr_t lo = (uintptr_t)p, hi = lo + n;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx", &start, &end) == 2 && end > lo && start < hi)
            count++;
    }
    fclose(f);
    return count;
}

static long faults_of_this_thread(void)
{
    struct rusage u;
    cr_assert_eq(getrusage(RUSAGE_THREAD, &u), 0);
    return u.ru_minflt + u.ru_majflt;
}

/* A large array grows by realloc. Its pages must move with it: a copy costs the loop thread a
 * page fault per page of the new block and a pass over the old, at every growth. */
Test(bigmem, a_large_block_is_one_mapping_and_grows_without_being_copied)
{
    need_glibc_allocator();
    char *p = bigmem_malloc(32 * MIB);
    cr_assert_not_null(p);
    for (size_t i = 0; i < 32 * MIB; i += 4096)
        p[i] = (char)(i / 4096);
    cr_assert_eq(mappings_over(p, 32 * MIB), 1, "the block lies in %d mappings",
                 mappings_over(p, 32 * MIB));

    long before = faults_of_this_thread();
    char *q = bigmem_realloc(p, 48 * MIB);
    long faults = faults_of_this_thread() - before;
    cr_assert_not_null(q);
    /* a copy of 32 MiB faults at least 16 huge pages in, or 8 192 small ones */
    cr_assert_lt(faults, 8, "growing the block took %ld page faults: it was copied", faults);
    cr_assert_eq(mappings_over(q, 48 * MIB), 1);
    for (size_t i = 0; i < 32 * MIB; i += 4096)
        cr_assert_eq(q[i], (char)(i / 4096), "byte %zu was not kept", i);
    memset(q + 32 * MIB, 1, 16 * MIB);
    free(q);
}

Test(bigmem, a_block_grown_past_the_threshold_gets_a_mapping_that_grows_in_place)
{
    need_glibc_allocator();
    char *p = bigmem_malloc(BIGMEM_MMAP_BYTES / 4);
    cr_assert_not_null(p);
    memset(p, 0x6b, BIGMEM_MMAP_BYTES / 4);
    char *q = bigmem_realloc(p, 2 * BIGMEM_MMAP_BYTES);
    cr_assert_not_null(q);
    for (size_t i = 0; i < BIGMEM_MMAP_BYTES / 4; i += 511)
        cr_assert_eq(q[i], 0x6b, "byte %zu was not copied", i);
    memset(q, 0x2d, 2 * BIGMEM_MMAP_BYTES);

    long before = faults_of_this_thread();
    char *r = bigmem_realloc(q, 8 * BIGMEM_MMAP_BYTES);
    long faults = faults_of_this_thread() - before;
    cr_assert_not_null(r);
    cr_assert_lt(faults, 8, "growing the mapped block took %ld page faults", faults);
    cr_assert_eq(r[2 * BIGMEM_MMAP_BYTES - 1], 0x2d);
    free(r);
}

/* Linux (6.7 and later) puts a mapping of whole huge pages on a huge page boundary, and moves it
 * to one, so that its huge pages move whole; the rounding adds at most an eighth. */
Test(bigmem, a_large_block_is_asked_for_in_whole_huge_pages)
{
    need_glibc_allocator();
    const size_t huge = 2 * MIB, header = 2 * sizeof(size_t);
    char *p = bigmem_malloc(40 * MIB + 5);
    cr_assert_not_null(p);
    size_t mapped = malloc_usable_size(p) + header;
    cr_assert_eq(mapped % huge, 0, "a mapping of %zu bytes", mapped);
    cr_assert_leq(mapped, 42 * MIB);
    char *q = bigmem_realloc(p, 61 * MIB);
    cr_assert_not_null(q);
    mapped = malloc_usable_size(q) + header;
    cr_assert_eq(mapped % huge, 0, "grown, a mapping of %zu bytes", mapped);
    free(q);
    char *r = bigmem_calloc(25, MIB);
    cr_assert_not_null(r);
    cr_assert_eq((malloc_usable_size(r) + header) % huge, 0);
    free(r);

    /* just over the threshold, whole huge pages would add half again: not rounded */
    char *s = bigmem_malloc(BIGMEM_MMAP_BYTES);
    cr_assert_not_null(s);
    cr_assert_lt(malloc_usable_size(s), BIGMEM_MMAP_BYTES + BIGMEM_MMAP_BYTES / 8);
    free(s);
}
