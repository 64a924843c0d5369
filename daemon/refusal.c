/* The refusal log (refusal.h). */
#include <assert.h>

#include "log.h"
#include "refusal.h"

void refusal_init(refusal_log_t *r, uv_loop_t *loop)
{
    r->loop = loop;
    r->window_ms = 0;
    r->logged = 0;
    r->unlogged = 0;
}

void refusal_flush(refusal_log_t *r, bool force)
{
    assert(r->loop != NULL);
    if (!force && uv_now(r->loop) - r->window_ms < 1000)
        return;
    if (r->unlogged > 0)
        log_info("%llu more refusals in the last second were not logged (at most %d a second "
                 "are)",
                 (unsigned long long)r->unlogged, REFUSAL_LOGGED_PER_S);
    r->unlogged = 0;
    r->logged = 0;
    r->window_ms = uv_now(r->loop);
}

bool refusal_to_log(refusal_log_t *r)
{
    refusal_flush(r, false);
    if (r->logged < REFUSAL_LOGGED_PER_S) {
        r->logged++;
        return true;
    }
    r->unlogged++;
    return false;
}
