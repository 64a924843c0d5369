/*
 * Subscriptions (sub.h): catch-up pages read from the store on worker threads, then
 * live pushes after each durable batch; a bounded queue per subscriber in between.
 *
 * A subscription is in one of two modes. CATCHUP: it asks for a page of events from
 * next_seq up to the committed head (one worker job at a time), pushes the page when it
 * comes, and repeats until next_seq is past the committed head; then it turns LIVE. LIVE:
 * every batch that becomes durable is pushed to it from next_seq on. A live subscriber whose
 * queued output would go over SUB_OUTPUT_BYTES_MAX is not pushed that batch: it falls back
 * to CATCHUP, and reads the events it missed from the store once its output has drained.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "log.h"
#include "proto/frame.h"
#include "request.h"
#include <assert.h>

#include "sub.h"

typedef enum { SUB_CATCHUP, SUB_LIVE } sub_mode;

struct sub {
    sub_set_t *set;
    conn_t *c;
    uint64_t req_id;   /* the subscribe request's id, repeated in every push */
    uint64_t next_seq; /* the next event this subscriber is to get */
    sub_mode mode;
    bool job_running; /* a catch-up page is being read */
    bool waiting;     /* queued for a catch-up job slot */
    bool detached;    /* sends nothing more; freed with its connection */
    /* The frame that ends the subscription, kept while answers before it are still unwritten
     * (a push may not overtake an answer); NULL when there is none. */
    char *end_frame;
    size_t end_size;
    sub_t *prev, *next, *wait_next;
};

/* One catch-up page, read on a worker thread. */
typedef struct {
    uv_work_t work;
    sub_t *sub;
    sub_set_t *set;
    uint64_t req_id;
    uint64_t from, head;    /* events from..head, as far as the page holds */
    uint64_t last;          /* the last seq packed into `out` (from - 1: none yet) */
    msgpack_sbuffer out;    /* push frames, back to back */
    const uint8_t *lo, *hi; /* the span of the map the page was read from */
    int rc;
    char why[120];
} page_job;

static void sub_advance(sub_t *sub);

/* ---- frames --------------------------------------------------------------------------- */

/* Appends the push frame {"id": req_id, "ok": true, "event": <the event's stored bytes>}.
 * Returns 0, or -1 when out of memory (`sb` is then as it was). */
static int pack_push(msgpack_sbuffer *sb, uint64_t req_id, const uint8_t *event, size_t size)
{
    static const char header[BUDGET_FRAME_HEADER_BYTES] = {0};
    msgpack_packer pk;
    size_t start = sb->size;
    int rc;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    rc = msgpack_sbuffer_write(sb, header, sizeof(header));
    rc |= msgpack_pack_map(&pk, 3);
    rc |= msgpack_pack_str_with_body(&pk, "id", 2);
    rc |= msgpack_pack_uint64(&pk, req_id);
    rc |= msgpack_pack_str_with_body(&pk, "ok", 2);
    rc |= msgpack_pack_true(&pk);
    rc |= msgpack_pack_str_with_body(&pk, "event", 5);
    rc |= msgpack_sbuffer_write(sb, (const char *)event, size);
    if (rc != 0) {
        sb->size = start;
        return -1;
    }
    budget_frame_header((uint8_t *)sb->data + start,
                        (uint32_t)(sb->size - start - BUDGET_FRAME_HEADER_BYTES));
    return 0;
}

/*
 * Ends a subscription with an error frame {"id", "ok": false, "error"}; then the connection
 * closes once everything before it is written. The frame goes after every answer the
 * connection still owes: at once when there is none, else from sub_on_writable.
 */
static void sub_fail(sub_t *sub, int code, const char *why)
{
    conn_t *c = sub->c;
    resp_t r;

    log_warn("uid %u: subscription ends at seq %llu: %s", conn_actor(c)->uid,
             (unsigned long long)sub->next_seq, why);
    sub_detach(c);
    resp_error_into(&r, sub->req_id, code, why);
    resp_finish(&r, sub->req_id);
    size_t size = r.sb.size;
    char *frame = msgpack_sbuffer_release(&r.sb);
    if (!conn_owes_answers(c)) {
        if (conn_push(c, frame, size) == 0)
            conn_close_when_flushed(c);
        return;
    }
    free(sub->end_frame);
    sub->end_frame = frame;
    sub->end_size = size;
    conn_close_when_flushed(c); /* not at once: answers are owed, then the end frame */
}

/* ---- catch-up pages ------------------------------------------------------------------- */

static int page_one(void *ctx, uint64_t seq, store_val v)
{
    page_job *j = ctx;

    if (seq > j->head)
        return 1;
    if (j->lo == NULL || v.data < j->lo)
        j->lo = v.data;
    if (v.data + v.size > j->hi)
        j->hi = v.data + v.size;
    if (pack_push(&j->out, j->req_id, v.data, v.size) != 0) {
        j->rc = BUDGET_EUNAVAILABLE;
        snprintf(j->why, sizeof(j->why), "budgetd is out of memory");
        return 1;
    }
    j->last = seq;
    if (seq - j->from + 1 >= SUB_PAGE_EVENTS_MAX || j->out.size >= SUB_PAGE_BYTES_MAX)
        return 1;
    return 0;
}

static void page_work(uv_work_t *w)
{
    page_job *j = w->data;
    store_reader *rd;

    if (store_reader_begin(j->set->store, &rd) != 0) {
        j->rc = BUDGET_EUNAVAILABLE;
        snprintf(j->why, sizeof(j->why), "the event store cannot be read now");
        return;
    }
    int rc = store_reader_scan(rd, j->from - 1, page_one, j);
    /* A catch-up reads the whole log a page at a time: none of it stays resident. */
    store_reader_release(rd, j->lo, j->hi);
    store_reader_end(rd);
    if (j->rc == 0 && (rc < 0 || j->last < j->from)) {
        j->rc = BUDGET_EINTERNAL;
        snprintf(j->why, sizeof(j->why), "event %llu cannot be read; run verify",
                 (unsigned long long)(j->last + 1));
    }
}

/* Gives waiting subscribers the job slots that are free. */
static void start_waiting(sub_set_t *set)
{
    while (set->waiting && set->jobs_running < SUB_JOBS_MAX) {
        sub_t *sub = set->waiting;
        set->waiting = sub->wait_next;
        sub->wait_next = NULL;
        sub->waiting = false;
        sub_advance(sub);
    }
}

static void page_done(uv_work_t *w, int status)
{
    page_job *j = w->data;
    sub_t *sub = j->sub;
    sub_set_t *set = j->set;
    conn_t *c = sub->c;

    (void)status;
    assert(sub->job_running && set->jobs_running > 0);
    sub->job_running = false;
    set->jobs_running--;
    if (!sub->detached && !conn_ending(c)) {
        if (j->rc != 0) {
            sub_fail(sub, j->rc, j->why);
        } else {
            size_t size = j->out.size;
            sub->next_seq = j->last + 1;
            conn_push(c, msgpack_sbuffer_release(&j->out), size);
            sub_advance(sub);
        }
    }
    msgpack_sbuffer_destroy(&j->out);
    free(j);
    start_waiting(set);
    conn_unref(c); /* may free the connection and its subscription */
    job_count_end(set->jobs);
}

static void start_page(sub_t *sub)
{
    conn_t *c = sub->c;
    sub_set_t *set = sub->set;
    page_job *j = calloc(1, sizeof(*j));

    if (!j) {
        sub_fail(sub, BUDGET_EUNAVAILABLE, "budgetd is out of memory");
        return;
    }
    j->work.data = j;
    j->sub = sub;
    j->set = set;
    j->req_id = sub->req_id;
    j->from = sub->next_seq;
    j->head = commit_head(set->commit);
    j->last = j->from - 1;
    msgpack_sbuffer_init(&j->out);
    sub->job_running = true;
    conn_ref(c);
    job_count_begin(set->jobs);
    set->jobs_running++;
    uv_queue_work(set->loop, &j->work, page_work, page_done);
}

/*
 * Moves a catching-up subscription on: turns it live when it has every committed event,
 * else asks for the next page, once its earlier answers are written and its queued output
 * is below a page.
 */
static void sub_advance(sub_t *sub)
{
    conn_t *c = sub->c;
    sub_set_t *set = sub->set;

    if (sub->detached || conn_ending(c) || sub->mode == SUB_LIVE || sub->job_running ||
        sub->waiting)
        return;
    if (conn_owes_answers(c) || conn_out_bytes(c) >= SUB_PAGE_BYTES_MAX || *set->stopping)
        return;
    if (sub->next_seq > commit_head(set->commit)) {
        sub->mode = SUB_LIVE;
        return;
    }
    if (set->jobs_running >= SUB_JOBS_MAX) {
        sub_t **tail = &set->waiting;
        while (*tail)
            tail = &(*tail)->wait_next;
        *tail = sub;
        sub->waiting = true;
        return;
    }
    start_page(sub);
}

/* ---- live ----------------------------------------------------------------------------- */

static void publish_to(sub_set_t *set, sub_t *sub, const commit_batch_t *b)
{
    conn_t *c = sub->c;
    uint64_t next = sub->next_seq;
    msgpack_sbuffer sb;
    bool whole = true;

    assert(sub->mode == SUB_LIVE && !sub->detached);

    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < b->count; i++) {
        const commit_entry_t *e = &b->entries[i];
        if (e->dup || e->ev.seq < next)
            continue; /* a retry's answer, or an event the subscriber already has */
        if (e->ev.seq > next || pack_push(&sb, sub->req_id, b->bytes + e->offset, e->size) != 0) {
            whole = false; /* a gap, or out of memory: the store has it */
            break;
        }
        next++;
    }
    if (sb.size > 0 && conn_out_bytes(c) + sb.size > SUB_OUTPUT_BYTES_MAX) {
        /* A slow reader: it gets these from the store once it has read what it has (at
         * once when nothing is queued: a batch alone can be over the bound). */
        msgpack_sbuffer_destroy(&sb);
        sub->mode = SUB_CATCHUP;
        set->fallbacks++;
        sub_advance(sub);
        return;
    }
    if (whole && next <= commit_head(set->commit))
        whole = false; /* this batch was not the next one: should not happen, but recover */
    if (sb.size > 0) {
        size_t size = sb.size;
        sub->next_seq = next;
        if (conn_push(c, msgpack_sbuffer_release(&sb), size) != 0)
            return; /* the connection is closing */
    }
    msgpack_sbuffer_destroy(&sb);
    if (!whole) {
        sub->mode = SUB_CATCHUP;
        sub_advance(sub);
    }
}

void sub_publish(sub_set_t *set, const commit_batch_t *b)
{
    sub_t *sub = set->subs;

    assert(b->count > 0 && b->rc == 0 && !b->sync_failed); /* durable */
    while (sub) {
        sub_t *next = sub->next; /* publish_to may detach `sub` on a failed write */
        if (sub->mode == SUB_LIVE && !conn_ending(sub->c))
            publish_to(set, sub, b);
        sub = next;
    }
}

/* ---- the op and the connection's hooks --------------------------------------------------- */

/* args: {"after": uint} (optional, default 0). Returns 0 or -1 with `msg` set. */
static int decode_after(const msgpack_object *args, uint64_t *after, char *msg, size_t size)
{
    *after = 0;
    for (uint32_t i = 0; args && i < args->via.map.size; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        const msgpack_object *v = &args->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != 5 ||
            memcmp(k->via.str.ptr, "after", 5) != 0) {
            snprintf(msg, size, "subscribe takes only after");
            return -1;
        }
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            snprintf(msg, size, "args.after must be a uint seq");
            return -1;
        }
        *after = v->via.u64;
    }
    return 0;
}

/* Subscriptions open now for `uid`. O(subscriptions), at most SUB_SUBSCRIPTIONS_MAX. */
static uint32_t uid_subscriptions(const sub_set_t *set, uint32_t uid)
{
    uint32_t n = 0;
    for (const sub_t *sub = set->subs; sub; sub = sub->next)
        n += conn_actor(sub->c)->uid == uid;
    return n;
}

void sub_subscribe(sub_set_t *set, conn_t *c, uint32_t idx, uint64_t req_id,
                   const msgpack_object *args)
{
    uint64_t after;
    char msg[160];
    resp_t r;

    assert(conn_sub(c) == NULL); /* ops_frame refuses requests on a subscribed connection */
    if (decode_after(args, &after, msg, sizeof(msg)) != 0) {
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST, msg);
        return;
    }
    if (after > commit_head(set->commit)) {
        snprintf(msg, sizeof(msg), "after %llu is past the last event, %llu",
                 (unsigned long long)after, (unsigned long long)commit_head(set->commit));
        conn_answer_error(c, idx, req_id, BUDGET_ENOT_FOUND, msg);
        return;
    }
    if (*set->stopping)
        snprintf(msg, sizeof(msg), "budgetd is stopping");
    else if (set->count >= SUB_SUBSCRIPTIONS_MAX)
        snprintf(msg, sizeof(msg),
                 "too many subscriptions: budgetd serves at most %u at once; "
                 "retry later",
                 SUB_SUBSCRIPTIONS_MAX);
    else if (uid_subscriptions(set, conn_actor(c)->uid) >= set->per_uid_max)
        snprintf(msg, sizeof(msg),
                 "too many subscriptions from uid %u: at most %u at once; "
                 "close one first",
                 conn_actor(c)->uid, set->per_uid_max);
    else
        msg[0] = '\0';
    if (msg[0]) {
        if (refusal_to_log(set->refusals))
            log_info("uid %u refused: %s", conn_actor(c)->uid, msg);
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, msg);
        return;
    }
    sub_t *sub = calloc(1, sizeof(*sub));
    if (!sub) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "budgetd is out of memory");
        return;
    }
    sub->set = set;
    sub->c = c;
    sub->req_id = req_id;
    sub->next_seq = after + 1;
    sub->mode = SUB_CATCHUP;
    sub->next = set->subs;
    if (set->subs)
        set->subs->prev = sub;
    set->subs = sub;
    set->count++;
    conn_set_sub(c, sub);

    resp_begin(&r, req_id, true);
    msgpack_pack_map(&r.pk, 2);
    pack_key_uint(&r.pk, "after", after);
    pack_key_uint(&r.pk, "head", commit_head(set->commit));
    conn_answer(c, idx, &r, req_id); /* once written, the subscription starts (conn_flush) */
}

void sub_on_writable(conn_t *c)
{
    sub_t *sub = conn_sub(c);

    if (!sub)
        return;
    if (sub->end_frame && !conn_owes_answers(c) && !conn_closing(c)) {
        char *frame = sub->end_frame;
        sub->end_frame = NULL;
        conn_push(c, frame, sub->end_size);
        return;
    }
    sub_advance(sub);
}

void sub_access_changed(sub_set_t *set)
{
    char why[600], who[BUDGET_NAME_BYTES_MAX + 32], msg[700];
    sub_t *sub = set->subs;

    while (sub) {
        sub_t *next = sub->next; /* sub_fail takes `sub` off the list */
        conn_t *c = sub->c;
        if (conn_actor(c)->name[0])
            snprintf(who, sizeof(who), "uid %u (%s)", conn_actor(c)->uid, conn_actor(c)->name);
        else
            snprintf(who, sizeof(who), "uid %u", conn_actor(c)->uid);
        int rc = access_decide(set->hub->access, conn_grants(c), ACCESS_READER, NULL, NULL,
                               "subscribe", who, why, sizeof(why));
        if (rc != 0) {
            snprintf(msg, sizeof(msg), "the access file was reloaded: %s", why);
            sub_fail(sub, rc, msg);
        }
        sub = next;
    }
}

void sub_detach(conn_t *c)
{
    sub_t *sub = conn_sub(c);

    if (!sub || sub->detached)
        return;
    sub_set_t *set = sub->set;
    assert(set->count > 0);
    sub->detached = true;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        set->subs = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    set->count--;
    if (sub->waiting) {
        sub_t **at = &set->waiting;
        while (*at != sub)
            at = &(*at)->wait_next;
        *at = sub->wait_next;
        sub->waiting = false;
    }
}

void sub_free(conn_t *c)
{
    sub_t *sub = conn_sub(c);
    if (sub)
        free(sub->end_frame);
    free(sub);
    conn_set_sub(c, NULL);
}

void sub_stats(const sub_set_t *set, stat_pair out[SUB_STATS_COUNT])
{
    uint64_t queued = 0;
    for (const sub_t *sub = set->subs; sub; sub = sub->next)
        queued += conn_out_bytes(sub->c);
    out[0] = (stat_pair){"subscriptions", set->count};
    out[1] = (stat_pair){"subscription_fallbacks", set->fallbacks};
    out[2] = (stat_pair){"subscription_queued_bytes", queued};
}
