/*
 * Subscriptions: `subscribe` sends every committed event after a seq, read from the store in
 * pages on worker threads (catch-up), then pushes each new event once its batch is durable
 * (live), in seq order, with no gap and no duplicate. A subscriber that does not read keeps
 * at most SUB_OUTPUT_BYTES_MAX queued; past it the live events are left in the store and it
 * catches up from there again once it reads. Loop thread only.
 *
 * The switch is safe because both sides of it run on the loop thread: the catch-up reads only
 * up to the committed head of when its page was asked for, and a subscription turns live only
 * when its next seq is past the committed head; every batch committed after that is published
 * to it, and each push starts exactly at the subscription's next seq.
 */
#ifndef BUDGET_SUB_H
#define BUDGET_SUB_H

#include <stdint.h>

#include <msgpack.h>

#include "commit.h"
#include "conn.h"
#include "job.h"
#include "refusal.h"
#include "store.h"

/* Subscriptions at once; past it `subscribe` is answered `unavailable`. One uid may hold at
 * most sub_set_t.per_uid_max of them (--subscriptions-per-uid). */
#define SUB_SUBSCRIPTIONS_MAX BUDGET_SUBSCRIPTIONS_MAX
/* Output queued to a live subscriber; a batch that would go past it is not pushed, and the
 * subscriber falls back to catching up from the store. */
#define SUB_OUTPUT_BYTES_MAX (1024u * 1024u)
/* One catch-up page: at most this many events, and not more than this many bytes of frames
 * (the last event may go over by one frame). The next page is asked for only once the queued
 * output is below SUB_PAGE_BYTES_MAX again. */
#define SUB_PAGE_EVENTS_MAX 1000u
#define SUB_PAGE_BYTES_MAX (256u * 1024u)
/* Catch-up pages being read on worker threads at once; other subscribers wait their turn. */
#define SUB_JOBS_MAX 8u

typedef struct sub sub_t;

/* Every subscription. The fields before `subs` are the owner's to fill. */
typedef struct {
    uv_loop_t *loop;
    store *store;
    const commit_t *commit; /* the committed head: what catch-up reads up to */
    job_pool_t *jobs;       /* pages are counted there (the owner waits for them to end) */
    refusal_log_t *refusals;
    const conn_hub_t *hub; /* the access rules */
    const bool *stopping;
    uint32_t per_uid_max;

    sub_t *subs;           /* live and catching up */
    sub_t *waiting;        /* for a catch-up job slot */
    uint32_t count;        /* in `subs` */
    uint32_t jobs_running; /* catch-up pages being read */
    uint64_t fallbacks;    /* times a live subscriber fell back to catching up */
} sub_set_t;

/* op `subscribe` {after}: answered at once, then the events follow as push frames. */
void sub_subscribe(sub_set_t *set, conn_t *c, uint32_t idx, uint64_t req_id,
                   const msgpack_object *args);

/* Pushes a batch that has just become durable, and was applied, to every live subscriber. */
void sub_publish(sub_set_t *set, const commit_batch_t *b);

/* The connection wrote something (or its last answer became writable): a subscription may
 * go on. */
void sub_on_writable(conn_t *c);

/*
 * The access rules were read again (SIGHUP), and every connection's grants resolved again
 * under them: each subscription whose identity no longer holds the reader role ends with an
 * error frame {"id", "ok": false, "error": {"code": "forbidden", "message"}}, sent after the
 * answers its connection still owes, and the connection closes. Nothing is pushed to it after
 * this call.
 */
void sub_access_changed(sub_set_t *set);

/* The connection is closing or misbehaved: its subscription sends nothing more. */
void sub_detach(conn_t *c);

/* Frees the connection's subscription (when the connection itself is freed). */
void sub_free(conn_t *c);

/* One counter of `stats`: its key and value. */
typedef struct {
    const char *key;
    uint64_t value;
} stat_pair;

/* The subscription counters of `stats`, SUB_STATS_COUNT of them, into `out`: "subscriptions"
 * (open now), "subscription_fallbacks" (since start), "subscription_queued_bytes" (now). */
#define SUB_STATS_COUNT 3
void sub_stats(const sub_set_t *set, stat_pair out[SUB_STATS_COUNT]);

#endif
