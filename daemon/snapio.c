/* The byte streams of ledger_save and ledger_load (snapio.h): arrays in and out, bounded. */
#include "snapio.h"

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
    void *p = bigmem_malloc((size_t)n * size);
    if (p == NULL)
        return -1;
    if (snap_get(s, p, (size_t)n * size) != 0) {
        free(p);
        return -1;
    }
    *items = p;
    *count = *cap = n;
    return 0;
}
