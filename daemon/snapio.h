/*
 * The byte streams a ledger is saved to and loaded from (ledger_save, ledger_load): a sink
 * that takes bytes and a source that gives them, each behind a callback, so that the ledger
 * core does no I/O of its own. snapshot.c puts a file and a keyed hash behind them.
 *
 * A source knows how many bytes it has left; every count read from it is checked against
 * that (and against the bound of what it counts) before anything is allocated for it, so a
 * source of any bytes costs about its own size in memory (arrays get an eighth more, and
 * room for SNAP_ROOM_MIN records, to grow into) and never reads past its end.
 */
#ifndef BUDGET_SNAPIO_H
#define BUDGET_SNAPIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* snap_get_array's room to grow: 1 / SNAP_ROOM_SHARE of the count, and SNAP_ROOM_MIN more. */
#define SNAP_ROOM_SHARE 8u
#define SNAP_ROOM_MIN 16u

typedef struct {
    /* Takes all `n` bytes: 0, or -1 (the sink failed; the save is abandoned). */
    int (*write)(void *ctx, const void *bytes, size_t n);
    void *ctx;
} snap_sink;

typedef struct {
    /* Gives exactly `n` bytes: 0, or -1 (the source ended or failed). */
    int (*read)(void *ctx, void *bytes, size_t n);
    void *ctx;
    uint64_t left; /* bytes the source has left */
} snap_source;

static inline int snap_put(snap_sink *s, const void *bytes, size_t n)
{
    return n == 0 ? 0 : s->write(s->ctx, bytes, n);
}

static inline int snap_put_u32(snap_sink *s, uint32_t v)
{
    return snap_put(s, &v, sizeof v);
}

/* An array: its count, then `count` items of `size` bytes. 0 or -1. */
int snap_put_array(snap_sink *s, const void *items, uint32_t count, size_t size);

static inline int snap_get(snap_source *s, void *bytes, size_t n)
{
    if (n > s->left)
        return -1;
    if (n == 0)
        return 0;
    s->left -= n;
    return s->read(s->ctx, bytes, n);
}

static inline int snap_get_u32(snap_source *s, uint32_t *v)
{
    return snap_get(s, v, sizeof *v);
}

/*
 * An array written by snap_put_array, of at most `max` items of `size` bytes, into a new
 * allocation with room for about an eighth more (NULL when 0): *items, *count and *cap. -1
 * when the count is over `max` or over what the source has left, out of memory, or the
 * source fails; then nothing is allocated and *items is NULL.
 */
int snap_get_array(snap_source *s, void **items, uint32_t *count, uint32_t *cap, size_t size,
                   uint32_t max);

/* True when `n` is a power of two in [min, max]. */
static inline bool snap_pow2_in(uint64_t n, uint64_t min, uint64_t max)
{
    return n >= min && n <= max && (n & (n - 1)) == 0;
}

#endif
