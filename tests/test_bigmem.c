/*
 * The large blocks kept for reuse (daemon/bigmem.c): a block freed is taken by the next large
 * allocation, the smallest that fits first, else the largest grown with its pages; calloc
 * clears it; a much larger block gives its end back; small blocks, and blocks past the cap,
 * are freed; and the trim frees only the blocks kept for the idle time.
 */
#include <criterion/criterion.h>
#include <malloc.h>
#include <string.h>
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
