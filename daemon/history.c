/* Kept ledgers of earlier points (history.h). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "history.h"

typedef enum { SLOT_EMPTY, SLOT_BUILDING, SLOT_READY } slot_state;

typedef struct {
    slot_state state;
    history_key key;
    ledger *l;         /* SLOT_READY only */
    uint32_t refs;     /* reads holding it, the one building it included */
    uint64_t last_ms;  /* when a read last got or gave it back */
    uint64_t last_use; /* the cache's count of uses then: the order of use, for eviction */
} slot;

struct history_cache {
    pthread_mutex_t lock;
    pthread_cond_t built; /* a build ended, or a read gave its ledger back */
    uint64_t idle_ms;
    uint32_t slots_len;
    uint32_t builds_max;
    uint32_t building;     /* ledgers being built, kept or not */
    uint32_t private_held; /* ledgers built but not kept, that their reads still hold */
    uint64_t hits, builds, based, queued, from_snapshot;
    uint64_t uses;
    slot slots[];
};

uint64_t history_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

history_cache *history_cache_new(uint32_t kept_max, uint64_t idle_ms, uint32_t builds_max)
{
    history_cache *c = calloc(1, sizeof(*c) + (size_t)kept_max * sizeof(slot));
    if (c == NULL)
        return NULL;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return NULL;
    }
    if (pthread_cond_init(&c->built, NULL) != 0) {
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
    }
    c->idle_ms = idle_ms;
    c->slots_len = kept_max;
    c->builds_max = builds_max > 0 ? builds_max : 1;
    return c;
}

void history_cache_free(history_cache *c)
{
    if (c == NULL)
        return;
    for (uint32_t i = 0; i < c->slots_len; i++)
        ledger_free(c->slots[i].l);
    pthread_cond_destroy(&c->built);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Ledgers in memory that nothing can free now: being built, or held by a read. A build starts
 * only while fewer than builds_max are, so that reads of many points at once hold about that
 * many ledgers: the idle kept ones are evicted for them. */
static uint32_t pinned(const history_cache *c)
{
    uint32_t n = c->building + c->private_held;
    for (uint32_t i = 0; i < c->slots_len; i++)
        n += c->slots[i].state == SLOT_READY && c->slots[i].refs > 0;
    return n;
}

static bool key_equal(history_key a, history_key b)
{
    return a.upto == b.upto && a.decided_by == b.decided_by;
}

static slot *find(history_cache *c, history_key key)
{
    for (uint32_t i = 0; i < c->slots_len; i++)
        if (c->slots[i].state != SLOT_EMPTY && key_equal(c->slots[i].key, key))
            return &c->slots[i];
    return NULL;
}

/* A slot for a new ledger: an empty one, else the least recently used ready one that no read
 * holds, whose ledger goes to *evicted (freed by the caller, outside the lock); NULL when
 * every slot is in use. */
static slot *claim(history_cache *c, ledger **evicted)
{
    slot *lru = NULL;
    for (uint32_t i = 0; i < c->slots_len; i++) {
        slot *s = &c->slots[i];
        if (s->state == SLOT_EMPTY)
            return s;
        if (s->state == SLOT_READY && s->refs == 0 && (lru == NULL || s->last_use < lru->last_use))
            lru = s;
    }
    if (lru != NULL) {
        *evicted = lru->l;
        lru->l = NULL;
        lru->state = SLOT_EMPTY;
    }
    return lru;
}

const ledger *history_cache_get(history_cache *c, history_key key, history_build_fn build,
                                void *ctx, int *rc)
{
    ledger *evicted = NULL;
    slot *s;

    *rc = 0;
    bool waited = false;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        s = find(c, key);
        if (s != NULL && s->state == SLOT_READY) {
            s->refs++;
            s->last_ms = history_now_ms();
            s->last_use = ++c->uses;
            c->hits++;
            pthread_mutex_unlock(&c->lock);
            return s->l;
        }
        /* Being built by another read: wait for it (if that build fails, the slot is empty
         * again and this read builds its own). Too many builds: wait for one to end, and
         * look again, as it may have been this point. */
        if (s == NULL && pinned(c) < c->builds_max)
            break;
        if (s == NULL && !waited) {
            waited = true;
            c->queued++;
        }
        pthread_cond_wait(&c->built, &c->lock);
    }
    c->building++;
    s = claim(c, &evicted);
    if (s != NULL) {
        s->state = SLOT_BUILDING;
        s->key = key;
        s->refs = 1;
    }
    c->builds++;
    pthread_mutex_unlock(&c->lock);
    ledger_free(evicted);

    ledger *l = NULL;
    *rc = build(ctx, &l);

    pthread_mutex_lock(&c->lock);
    c->building--;
    if (s == NULL) {
        c->private_held += *rc == 0; /* no room: this read's own, freed when given back */
    } else if (*rc == 0) {
        s->state = SLOT_READY;
        s->l = l;
        s->last_ms = history_now_ms();
        s->last_use = ++c->uses;
    } else {
        s->state = SLOT_EMPTY;
        s->refs = 0;
    }
    pthread_cond_broadcast(&c->built);
    pthread_mutex_unlock(&c->lock);
    return *rc == 0 ? l : NULL;
}

const ledger *history_cache_base(history_cache *c, int32_t decided_by, uint64_t floor,
                                 uint64_t upto, uint64_t *at)
{
    slot *best = NULL;
    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < c->slots_len; i++) {
        slot *s = &c->slots[i];
        if (s->state == SLOT_READY && s->key.decided_by == decided_by && s->key.upto >= floor &&
            s->key.upto > 0 && s->key.upto <= upto &&
            (best == NULL || s->key.upto > best->key.upto))
            best = s;
    }
    if (best != NULL) {
        best->refs++;
        best->last_ms = history_now_ms();
        best->last_use = ++c->uses;
        c->based++;
        *at = best->key.upto;
    }
    pthread_mutex_unlock(&c->lock);
    return best != NULL ? best->l : NULL;
}

void history_cache_release(history_cache *c, const ledger *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < c->slots_len; i++) {
        slot *s = &c->slots[i];
        if (s->state == SLOT_READY && s->l == l) {
            s->refs--;
            s->last_ms = history_now_ms();
            s->last_use = ++c->uses;
            if (s->refs == 0)
                pthread_cond_broadcast(&c->built); /* a read waiting to build may now */
            pthread_mutex_unlock(&c->lock);
            return;
        }
    }
    pthread_mutex_unlock(&c->lock);
    ledger_free((ledger *)l); /* not kept: it was the read's own */
    pthread_mutex_lock(&c->lock);
    c->private_held--;
    pthread_cond_broadcast(&c->built);
    pthread_mutex_unlock(&c->lock);
}

void history_cache_trim(history_cache *c, uint64_t now_ms)
{
    for (;;) {
        ledger *old = NULL;
        pthread_mutex_lock(&c->lock);
        for (uint32_t i = 0; i < c->slots_len && old == NULL; i++) {
            slot *s = &c->slots[i];
            if (s->state == SLOT_READY && s->refs == 0 && now_ms >= s->last_ms &&
                now_ms - s->last_ms >= c->idle_ms) {
                old = s->l;
                s->l = NULL;
                s->state = SLOT_EMPTY;
            }
        }
        pthread_mutex_unlock(&c->lock);
        if (old == NULL)
            return;
        ledger_free(old);
    }
}

void history_cache_stats(history_cache *c, history_stats *out)
{
    pthread_mutex_lock(&c->lock);
    out->hits = c->hits;
    out->builds = c->builds;
    out->based = c->based;
    out->from_snapshot = c->from_snapshot;
    out->queued = c->queued;
    out->kept = 0;
    for (uint32_t i = 0; i < c->slots_len; i++)
        out->kept += c->slots[i].state == SLOT_READY;
    pthread_mutex_unlock(&c->lock);
}

void history_cache_note_snapshot(history_cache *c)
{
    pthread_mutex_lock(&c->lock);
    c->from_snapshot++;
    pthread_mutex_unlock(&c->lock);
}
