/*
 * Subscriptions (subscribe.h): catch-up pages read from the store on worker threads, then
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
#include "subscribe.h"

typedef enum { SUB_CATCHUP, SUB_LIVE } sub_mode;

typedef struct subscription subscription;

struct subscription {
    conn *c;
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
    subscription *prev, *next, *wait_next;
};

/* One catch-up page, read on a worker thread. */
typedef struct {
    uv_work_t work;
    subscription *sub;
    server *s;
    uint64_t req_id;
    uint64_t from, head;    /* events from..head, as far as the page holds */
    uint64_t last;          /* the last seq packed into `out` (from - 1: none yet) */
    msgpack_sbuffer out;    /* push frames, back to back */
    const uint8_t *lo, *hi; /* the span of the map the page was read from */
    int rc;
    char why[120];
} page_job;

static void sub_advance(subscription *sub);

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
static void sub_fail(subscription *sub, int code, const char *why)
{
    conn *c = sub->c;
    resp r;

    log_warn("uid %u: subscription ends at seq %llu: %s", c->actor.uid,
             (unsigned long long)sub->next_seq, why);
    sub_detach(c);
    c->close_flushed = true;
    resp_error_into(&r, sub->req_id, code, why);
    resp_finish(&r, sub->req_id);
    size_t size = r.sb.size;
    char *frame = msgpack_sbuffer_release(&r.sb);
    if (c->slot_count == 0) {
        conn_push(c, frame, size);
        return;
    }
    free(sub->end_frame);
    sub->end_frame = frame;
    sub->end_size = size;
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

    if (store_reader_begin(j->s->store, &rd) != 0) {
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
static void start_waiting(server *s)
{
    while (s->subs_waiting && s->sub_jobs_running < SUB_JOBS_MAX) {
        subscription *sub = s->subs_waiting;
        s->subs_waiting = sub->wait_next;
        sub->wait_next = NULL;
        sub->waiting = false;
        sub_advance(sub);
    }
}

static void page_done(uv_work_t *w, int status)
{
    page_job *j = w->data;
    subscription *sub = j->sub;
    server *s = j->s;
    conn *c = sub->c;

    (void)status;
    sub->job_running = false;
    s->jobs_running--;
    s->sub_jobs_running--;
    if (!sub->detached && !c->closing && !c->close_flushed) {
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
    start_waiting(s);
    conn_unref(c); /* may free the connection and its subscription */
    maybe_finish(s);
}

static void start_page(subscription *sub)
{
    conn *c = sub->c;
    server *s = c->srv;
    page_job *j = calloc(1, sizeof(*j));

    if (!j) {
        sub_fail(sub, BUDGET_EUNAVAILABLE, "budgetd is out of memory");
        return;
    }
    j->work.data = j;
    j->sub = sub;
    j->s = s;
    j->req_id = sub->req_id;
    j->from = sub->next_seq;
    j->head = s->committed_head;
    j->last = j->from - 1;
    msgpack_sbuffer_init(&j->out);
    sub->job_running = true;
    c->refs++;
    s->jobs_running++;
    s->sub_jobs_running++;
    uv_queue_work(s->loop, &j->work, page_work, page_done);
}

/*
 * Moves a catching-up subscription on: turns it live when it has every committed event,
 * else asks for the next page, once its earlier answers are written and its queued output
 * is below a page.
 */
static void sub_advance(subscription *sub)
{
    conn *c = sub->c;
    server *s = c->srv;

    if (sub->detached || c->closing || c->close_flushed || sub->mode == SUB_LIVE ||
        sub->job_running || sub->waiting)
        return;
    if (c->slot_count > 0 || c->out_bytes >= SUB_PAGE_BYTES_MAX || s->stopping)
        return;
    if (sub->next_seq > s->committed_head) {
        sub->mode = SUB_LIVE;
        return;
    }
    if (s->sub_jobs_running >= SUB_JOBS_MAX) {
        subscription **tail = &s->subs_waiting;
        while (*tail)
            tail = &(*tail)->wait_next;
        *tail = sub;
        sub->waiting = true;
        return;
    }
    start_page(sub);
}

/* ---- live ----------------------------------------------------------------------------- */

static void publish_to(server *s, subscription *sub, const batch *b)
{
    conn *c = sub->c;
    uint64_t next = sub->next_seq;
    msgpack_sbuffer sb;
    bool whole = true;

    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < b->count; i++) {
        const batch_entry *e = &b->entries[i];
        if (e->dup || e->ev.seq < next)
            continue; /* a retry's answer, or an event the subscriber already has */
        if (e->ev.seq > next || pack_push(&sb, sub->req_id, b->bytes + e->offset, e->size) != 0) {
            whole = false; /* a gap, or out of memory: the store has it */
            break;
        }
        next++;
    }
    if (sb.size > 0 && c->out_bytes + sb.size > SUB_OUTPUT_BYTES_MAX) {
        /* A slow reader: it gets these from the store once it has read what it has (at
         * once when nothing is queued: a batch alone can be over the bound). */
        msgpack_sbuffer_destroy(&sb);
        sub->mode = SUB_CATCHUP;
        s->sub_fallbacks++;
        sub_advance(sub);
        return;
    }
    if (whole && next <= s->committed_head)
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

void sub_publish(server *s, const batch *b)
{
    subscription *sub = s->subs;
    while (sub) {
        subscription *next = sub->next; /* publish_to may detach `sub` on a failed write */
        if (sub->mode == SUB_LIVE && !sub->c->close_flushed)
            publish_to(s, sub, b);
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
static uint32_t uid_subscriptions(const server *s, uint32_t uid)
{
    uint32_t n = 0;
    for (const subscription *sub = s->subs; sub; sub = sub->next)
        n += sub->c->actor.uid == uid;
    return n;
}

void op_subscribe(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    server *s = c->srv;
    uint64_t after;
    char msg[160];
    resp r;

    if (decode_after(args, &after, msg, sizeof(msg)) != 0) {
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST, msg);
        return;
    }
    if (after > s->committed_head) {
        snprintf(msg, sizeof(msg), "after %llu is past the last event, %llu",
                 (unsigned long long)after, (unsigned long long)s->committed_head);
        conn_answer_error(c, idx, req_id, BUDGET_ENOT_FOUND, msg);
        return;
    }
    if (s->stopping)
        snprintf(msg, sizeof(msg), "budgetd is stopping");
    else if (s->subs_count >= SUB_SUBSCRIPTIONS_MAX)
        snprintf(msg, sizeof(msg),
                 "too many subscriptions: budgetd serves at most %u at once; "
                 "retry later",
                 SUB_SUBSCRIPTIONS_MAX);
    else if (uid_subscriptions(s, c->actor.uid) >= s->subscriptions_per_uid_max)
        snprintf(msg, sizeof(msg),
                 "too many subscriptions from uid %u: at most %u at once; "
                 "close one first",
                 c->actor.uid, s->subscriptions_per_uid_max);
    else
        msg[0] = '\0';
    if (msg[0]) {
        if (refusal_to_log(s))
            log_info("uid %u refused: %s", c->actor.uid, msg);
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, msg);
        return;
    }
    subscription *sub = calloc(1, sizeof(*sub));
    if (!sub) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "budgetd is out of memory");
        return;
    }
    sub->c = c;
    sub->req_id = req_id;
    sub->next_seq = after + 1;
    sub->mode = SUB_CATCHUP;
    sub->next = s->subs;
    if (s->subs)
        s->subs->prev = sub;
    s->subs = sub;
    s->subs_count++;
    c->sub = sub;

    resp_begin(&r, req_id, true);
    msgpack_pack_map(&r.pk, 2);
    pack_key_uint(&r.pk, "after", after);
    pack_key_uint(&r.pk, "head", s->committed_head);
    conn_answer(c, idx, &r, req_id); /* once written, the subscription starts (conn_flush) */
}

void sub_on_writable(conn *c)
{
    subscription *sub = c->sub;

    if (!sub)
        return;
    if (sub->end_frame && c->slot_count == 0 && !c->closing) {
        char *frame = sub->end_frame;
        sub->end_frame = NULL;
        conn_push(c, frame, sub->end_size);
        return;
    }
    sub_advance(sub);
}

void sub_access_changed(server *s)
{
    char why[600], who[BUDGET_NAME_BYTES_MAX + 32], msg[700];
    subscription *sub = s->subs;

    while (sub) {
        subscription *next = sub->next; /* sub_fail takes `sub` off the list */
        conn *c = sub->c;
        if (c->actor.name[0])
            snprintf(who, sizeof(who), "uid %u (%s)", c->actor.uid, c->actor.name);
        else
            snprintf(who, sizeof(who), "uid %u", c->actor.uid);
        int rc = access_decide(s->access, &c->grants, ACCESS_READER, NULL, NULL, "subscribe", who,
                               why, sizeof(why));
        if (rc != 0) {
            snprintf(msg, sizeof(msg), "the access file was reloaded: %s", why);
            sub_fail(sub, rc, msg);
        }
        sub = next;
    }
}

void sub_detach(conn *c)
{
    subscription *sub = c->sub;
    server *s = c->srv;

    if (!sub || sub->detached)
        return;
    sub->detached = true;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        s->subs = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    s->subs_count--;
    if (sub->waiting) {
        subscription **at = &s->subs_waiting;
        while (*at != sub)
            at = &(*at)->wait_next;
        *at = sub->wait_next;
        sub->waiting = false;
    }
}

void sub_free(conn *c)
{
    if (c->sub)
        free(c->sub->end_frame);
    free(c->sub);
    c->sub = NULL;
}

void sub_pack_stats(const server *s, msgpack_packer *pk)
{
    uint64_t queued = 0;
    for (const subscription *sub = s->subs; sub; sub = sub->next)
        queued += sub->c->out_bytes;
    pack_key_uint(pk, "subscriptions", s->subs_count);
    pack_key_uint(pk, "subscription_fallbacks", s->sub_fallbacks);
    pack_key_uint(pk, "subscription_queued_bytes", queued);
}
