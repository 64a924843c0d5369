/* The byte streams of ledger_save and ledger_load (snapio.h): arrays in and out, bounded. */
#include "snapio.h"

#include <stdint.h>
#include <stdlib.h>

#include "bigmem.h"

int snap_put_array(snap_sink *s, const void *items, uint32_t count, size_t size)
{
    if (snap_put_u32(s, count) != 0)
        return -1;
    return snap_put(s, items, (size_t)count * size);
}

int snap_get_array(snap_source *s, void **items, uint32_t *count, uint32_t *cap, size_t size,
                   uint32_t max)
{
    uint32_t n;
    *items = NULL;
    *count = *cap = 0;
    if (snap_get_u32(s, &n) != 0 || n > max || (uint64_t)n * size > s->left)
        return -1;
    if (n == 0)
        return 0;
    /* Room for an eighth more: the events applied after a restore (up to a snapshot interval)
     * then mostly fit, where an array of exactly its count would be moved whole by the first
     * one. The room's pages are not written until used, so it costs little memory. */
    uint64_t room = (uint64_t)n + n / SNAP_ROOM_SHARE + SNAP_ROOM_MIN;
    if (room > UINT32_MAX - 1)
        room = UINT32_MAX - 1;
    if (room > SIZE_MAX / size)
        return -1;
    void *p = bigmem_malloc((size_t)room * size);
    if (p == NULL)
        return -1;
    if (snap_get(s, p, (size_t)n * size) != 0) {
        free(p);
        return -1;
    }
    *items = p;
    *count = n;
    *cap = (uint32_t)room;
    return 0;
}
