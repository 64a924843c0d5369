/*
 * Connections (conn.h): accepting, reading frames, answering each connection's requests in the
 * order it sent them, and the bounds on what a connection may hold.
 */
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "budget/errors.h"
#include "conn.h"
#include "log.h"
#include "proto/frame.h"
#include "request.h"

/* One request's place in its connection's answer order. */
typedef struct {
    char *frame; /* the whole response frame (header included), malloc'd; NULL until ready */
    size_t size;
    size_t cost; /* the memory it holds (frame_cost) */
} answer_slot;

struct conn {
    uv_pipe_t pipe;
    conn_hub_t *hub;
    ledger_actor actor;
    access_identity identity; /* uid and groups, from the kernel and the group database */
    access_grants grants;     /* what the identity holds under hub->access */
    uint64_t active_ms;       /* loop time of the last byte read or answer written */
    uint64_t frame_begun_ms;  /* loop time the unfinished frame in `recv` began; 0: none */
    uint8_t *recv;
    size_t recv_len, recv_cap;
    answer_slot slots[BUDGET_CONN_INFLIGHT_MAX];
    uint32_t slot_head, slot_count;
    size_t out_bytes;  /* handed to uv_write and not yet written */
    size_t held_bytes; /* answers ready but held behind an earlier one still being made */
    /* The memory those answers and pushes really hold: their allocations and write requests,
     * not only their bytes. The output limit is counted on it. */
    size_t out_cost;
    uint32_t refs;       /* batch entries, jobs, lookups and the ready list that hold it */
    bool reading;        /* uv_read_start is in effect */
    bool closing;        /* uv_close called */
    bool closed;         /* close callback ran; freed when refs reach 0 */
    bool close_flushed;  /* close once every answer is written (unframeable stream) */
    bool identified;     /* name and groups looked up: frames may be read and handled */
    uint32_t lookup_gid; /* the primary group SO_PEERCRED gave, for the lookup */
    lookup_waiter_t lookup;
    /* Writes read from this connection and not yet answered. A read that follows them waits
     * until they are answered, so a client sees its own writes (read-your-writes). */
    uint32_t writes_waiting;
    /* Worker jobs that will answer into this connection; each may answer up to 1 MiB, so
     * they count against its output limit before they are done. */
    uint32_t jobs_running;
    /* In hub->ready: it may have frames to handle or reading to start (conn_wake). */
    bool ready;
    conn_t *ready_next;
    /* In conn_process: the answers it makes wait in their slots, and are written together
     * when it ends (or when the slots run out). */
    bool gathering;
    /* In hub->corked: answers wait in their slots until conn_hub_uncork writes them. */
    bool flush_due;
    conn_t *flush_next;
    /* In hub->deferred: its next frame is a read that waits for the next turn. */
    bool deferred;
    conn_t *deferred_next;
    struct sub *sub; /* sub.c's: set once the connection subscribed */
    conn_t *prev, *next;
};

static void conn_flush(conn_t *c);
static void conn_wake(conn_t *c);
static void ready_push(conn_t *c);
static void deferred_remove(conn_t *c);
static void conn_process(conn_t *c);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_ready_idle(uv_idle_t *h);

/* ---- connections: answer order and output ----------------------------------------------- */

/* One write of one or more frames (answers written together are one write_req). */
typedef struct {
    uv_write_t req;
    conn_t *c;
    size_t size;
    size_t cost;
    void (*done)(void *arg, int status); /* conn_write_ahead's; NULL for answers and pushes */
    void *arg;
    uint32_t count;
    char *frame[]; /* `count` of them, malloc'd */
} write_req;

static write_req *write_req_new(conn_t *c, uint32_t count)
{
    write_req *w = malloc(sizeof(*w) + count * sizeof(w->frame[0]));
    if (w) {
        w->c = c;
        w->size = 0;
        w->cost = 0;
        w->done = NULL;
        w->arg = NULL;
        w->count = count;
    }
    return w;
}

static void write_req_free(write_req *w)
{
    for (uint32_t i = 0; i < w->count; i++)
        free(w->frame[i]);
    free(w);
}

/* malloc's own bookkeeping for each of a frame's two allocations (the frame, its write_req). */
#define MALLOC_OVERHEAD_BYTES 16u

/*
 * `frame` (`size` bytes, malloc'd) in an allocation of its own size. A response is built in a
 * buffer that starts at 8 KiB; a 40-byte answer kept in it would hold 200 times its size
 * while it waits to be written. A copy frees the big buffer for the next answer (shrinking it
 * in place would leave a hole that buffer no longer fits). Returns the frame to keep.
 */
static char *frame_fit(char *frame, size_t size)
{
    if (!frame || size == 0 || malloc_usable_size(frame) - size < 64)
        return frame;
    char *fit = malloc(size);
    if (!fit)
        return frame;
    memcpy(fit, frame, size);
    free(frame);
    return fit;
}

/* The memory a frame waiting to be written holds: its allocation and its write request. */
static size_t frame_cost(char *frame)
{
    return malloc_usable_size(frame) + sizeof(write_req) + 2 * MALLOC_OVERHEAD_BYTES;
}

/* An identity that holds no role may say hello and is refused everything else: it gets a
 * small share of memory (BUDGET_CONN_ROLELESS_*). */
static bool conn_roleless(const conn_t *c)
{
    return c->grants.all == 0 && c->grants.some == 0;
}

static size_t conn_output_max(const conn_t *c)
{
    return conn_roleless(c) ? BUDGET_CONN_ROLELESS_OUTPUT_BYTES_MAX : BUDGET_CONN_OUTPUT_BYTES_MAX;
}

static bool conn_slot_open(conn_t *c, uint32_t *idx)
{
    if (c->slot_count == BUDGET_CONN_INFLIGHT_MAX)
        return false;
    *idx = (c->slot_head + c->slot_count) % BUDGET_CONN_INFLIGHT_MAX;
    c->slot_count++;
    c->slots[*idx].frame = NULL;
    c->slots[*idx].size = 0;
    return true;
}

/* Hands a finished response to its slot; the connection writes it when its turn comes. */
void conn_answer(conn_t *c, uint32_t idx, resp_t *r, uint64_t req_id)
{
    resp_finish(r, req_id);
    size_t size = r->sb.size;
    conn_answer_frame(c, idx, msgpack_sbuffer_release(&r->sb), size);
}

/* `idx` is a slot opened and not yet written. */
static inline bool slot_owed(const conn_t *c, uint32_t idx)
{
    uint32_t age = (idx + BUDGET_CONN_INFLIGHT_MAX - c->slot_head) % BUDGET_CONN_INFLIGHT_MAX;
    return idx < BUDGET_CONN_INFLIGHT_MAX && age < c->slot_count;
}

void conn_answer_frame(conn_t *c, uint32_t idx, char *frame, size_t size)
{
    assert(slot_owed(c, idx) && c->slots[idx].frame == NULL); /* each slot is answered once */
    assert(size >= BUDGET_FRAME_HEADER_BYTES);
    if (c->closing) {
        free(frame);
        return;
    }
    frame = frame_fit(frame, size);
    c->slots[idx].frame = frame;
    c->slots[idx].size = size;
    c->slots[idx].cost = frame_cost(frame);
    c->held_bytes += size;
    c->out_cost += c->slots[idx].cost;
    conn_hub_t *h = c->hub;
    if (c->gathering && !h->corked)
        return; /* conn_process writes it with the others it answers */
    if (!h->corked) {
        conn_flush(c);
        return;
    }
    if (!c->flush_due) {
        c->flush_due = true;
        c->refs++; /* until conn_hub_uncork has written it */
        c->flush_next = h->corked_list;
        h->corked_list = c;
    }
}

void conn_hub_cork(conn_hub_t *h)
{
    assert(!h->corked);
    h->corked = true;
}

void conn_hub_uncork(conn_hub_t *h)
{
    assert(h->corked);
    h->corked = false;
    while (h->corked_list) {
        conn_t *c = h->corked_list;
        h->corked_list = c->flush_next;
        c->flush_next = NULL;
        c->flush_due = false;
        if (!c->closing)
            conn_flush(c);
        conn_unref(c);
    }
}

void conn_answer_error(conn_t *c, uint32_t idx, uint64_t req_id, int code, const char *msg)
{
    resp_t r;
    if (code != 0)
        c->hub->errors++;
    resp_error_into(&r, req_id, code, msg);
    conn_answer(c, idx, &r, req_id);
}

/* Output waiting for this client, written or held, at the memory it holds, and a frame's
 * worth for each worker job that will answer; past the limit nothing more is read. */
static bool conn_output_full(const conn_t *c)
{
    size_t jobs = (size_t)c->jobs_running * BUDGET_FRAME_BYTES_MAX;
    return c->out_cost + jobs > conn_output_max(c);
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn_t *c = w->c;
    void (*done)(void *arg, int status) = w->done;
    void *arg = w->arg;

    assert(c->out_bytes >= w->size && c->out_cost >= w->cost);
    c->out_bytes -= w->size;
    c->out_cost -= w->cost;
    write_req_free(w);
    if (done) {
        if (status >= 0)
            c->active_ms = uv_now(c->hub->loop);
        done(arg, status);
        return;
    }
    c->active_ms = uv_now(c->hub->loop);
    if (status < 0 && status != UV_ECANCELED) {
        log_debug("uid %u: write failed: %s", c->actor.uid, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->close_flushed && c->out_bytes == 0 && c->slot_count == 0) {
        conn_close(c);
        return;
    }
    if (c->sub)
        c->hub->hooks.writable(c->hub->owner, c);
    conn_wake(c);
}

/* Writes the answers ready at the head of the slots, in order, in one write. */
static void conn_flush(conn_t *c)
{
    uv_buf_t bufs[BUDGET_CONN_INFLIGHT_MAX];
    uint32_t n = 0;

    while (n < c->slot_count && c->slots[(c->slot_head + n) % BUDGET_CONN_INFLIGHT_MAX].frame)
        n++;
    if (n > 0) {
        write_req *w = write_req_new(c, n);
        for (uint32_t i = 0; i < n; i++) {
            answer_slot *sl = &c->slots[c->slot_head];
            c->slot_head = (c->slot_head + 1) % BUDGET_CONN_INFLIGHT_MAX;
            c->slot_count--;
            c->held_bytes -= sl->size;
            if (!w) {
                c->out_cost -= sl->cost;
                free(sl->frame);
            } else {
                w->frame[i] = sl->frame;
                w->size += sl->size;
                w->cost += sl->cost;
                bufs[i] = uv_buf_init(sl->frame, (unsigned int)sl->size);
            }
            sl->frame = NULL;
        }
        if (!w) {
            conn_close(c);
            return;
        }
        c->out_bytes += w->size;
        c->hub->answers += n;
        c->hub->answer_writes++;
        if (uv_write(&w->req, (uv_stream_t *)&c->pipe, bufs, n, on_write) < 0) {
            c->out_bytes -= w->size;
            c->out_cost -= w->cost;
            write_req_free(w);
            conn_close(c);
            return;
        }
    }
    if (c->sub && c->slot_count == 0)
        c->hub->hooks.writable(c->hub->owner, c);
    conn_wake(c); /* a slot or output room may have come free */
}

int conn_push(conn_t *c, char *frames, size_t size)
{
    write_req *w = NULL;

    assert(size >= BUDGET_FRAME_HEADER_BYTES);

    if (!c->closing && c->slot_count == 0)
        w = write_req_new(c, 1);
    if (!w) {
        free(frames);
        if (!c->closing)
            conn_close(c);
        return -1;
    }
    frames = frame_fit(frames, size);
    w->frame[0] = frames;
    w->size = size;
    w->cost = frame_cost(frames);
    uv_buf_t buf = uv_buf_init(frames, (unsigned int)size);
    c->out_bytes += size;
    c->out_cost += w->cost;
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write) < 0) {
        c->out_bytes -= size;
        c->out_cost -= w->cost;
        write_req_free(w);
        conn_close(c);
        return -1;
    }
    return 0;
}

static void conn_free(conn_t *c)
{
    for (uint32_t i = 0; i < BUDGET_CONN_INFLIGHT_MAX; i++)
        free(c->slots[i].frame);
    if (c->sub)
        c->hub->hooks.freed(c->hub->owner, c);
    free(c->recv);
    free(c);
}

void conn_write_answered(conn_t *c)
{
    assert(c->writes_waiting > 0);
    assert(c->refs > 0);
    c->writes_waiting--;
    if (c->writes_waiting == 0)
        conn_wake(c);
    conn_unref(c);
}

void conn_unref(conn_t *c)
{
    assert(c->refs > 0);
    c->refs--;
    if (c->refs == 0 && c->closed)
        conn_free(c);
}

static void on_conn_closed(uv_handle_t *handle)
{
    conn_t *c = handle->data;
    conn_hub_t *h = c->hub;

    assert(c->closing && !c->closed && !c->ready);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->count--;
    c->closed = true;
    if (c->refs == 0)
        conn_free(c);
    h->hooks.quiet(h->owner);
}

void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->deferred)
        deferred_remove(c);
    if (c->sub)
        c->hub->hooks.closing(c->hub->owner, c);
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = false;
    uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

/* ---- frames ------------------------------------------------------------------------------ */

/* Opens a slot for one whole frame and hands it to the owner, which answers it. A read's time
 * on the loop thread counts in the turn's (read_slice_spent). */
static void handle_frame(conn_t *c, const budget_envelope *env, int rc, const char *why,
                         bool is_write)
{
    conn_hub_t *h = c->hub;
    uint32_t idx = 0;

    assert(h->running_ready);
    assert(c->slot_count < BUDGET_CONN_INFLIGHT_MAX); /* conn_process checked */
    conn_slot_open(c, &idx);
    h->requests++;
    if (is_write) {
        h->hooks.frame(h->owner, c, idx, env, rc, why);
        return;
    }
    uint64_t begun_ns = uv_hrtime();
    h->hooks.frame(h->owner, c, idx, env, rc, why);
    h->turn_read_ns += uv_hrtime() - begun_ns;
    h->turn_reads++;
}

/* Reads have had their time in this turn; the first read of a turn always runs. */
static bool read_slice_spent(const conn_hub_t *h)
{
    return h->resting || (h->turn_reads > 0 && h->turn_read_ns >= h->read_slice_ns);
}

/* `c`'s next frame is a read that waits for the next turn (conn_turn_begin); it reads nothing
 * meanwhile. */
static void deferred_push(conn_t *c)
{
    conn_hub_t *h = c->hub;

    assert(!c->deferred && !c->ready && !c->closing);
    c->deferred = true;
    c->refs++; /* until conn_turn_begin or conn_close takes it off */
    c->deferred_next = NULL;
    if (h->deferred_tail)
        h->deferred_tail->deferred_next = c;
    else
        h->deferred = c;
    h->deferred_tail = c;
    h->reads_deferred++;
    /* While resting, the timer wakes the loop, which may block until then. */
    if (!h->resting && !uv_is_active((uv_handle_t *)&h->ready_idle))
        uv_idle_start(&h->ready_idle, on_ready_idle);
}

/* Takes a closing `c` off the deferred list: its frames will never be handled. */
static void deferred_remove(conn_t *c)
{
    conn_hub_t *h = c->hub;
    conn_t *prev = NULL, *at = h->deferred;

    while (at != c) {
        assert(at != NULL);
        prev = at;
        at = at->deferred_next;
    }
    if (prev)
        prev->deferred_next = c->deferred_next;
    else
        h->deferred = c->deferred_next;
    if (h->deferred_tail == c)
        h->deferred_tail = prev;
    c->deferred = false;
    c->deferred_next = NULL;
    conn_unref(c);
}

/* A frame over the limit (`n` bytes, of at most `max`): its answer is the last frame. */
static void refuse_frame(conn_t *c, uint32_t n, uint32_t max)
{
    uint32_t idx = 0;
    char msg[160];

    if (max == BUDGET_FRAME_BYTES_MAX)
        snprintf(msg, sizeof(msg), "a frame of %u bytes; frames are 1..%u bytes", n, max);
    else
        snprintf(msg, sizeof(msg),
                 "a frame of %u bytes; uid %u holds no role, and its frames are 1..%u "
                 "bytes",
                 n, c->actor.uid, max);
    log_info("uid %u: %s; closing the connection", c->actor.uid, msg);
    conn_slot_open(c, &idx);
    c->close_flushed = true;
    conn_answer_error(c, idx, 0, BUDGET_ETOO_LARGE, msg);
}

/* Reads while there is room for more answers and nothing waits on the connection's writes. */
static void conn_set_reading(conn_t *c, bool blocked)
{
    bool room = !blocked && c->slot_count < BUDGET_CONN_INFLIGHT_MAX && !conn_output_full(c);
    if (room && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0)
            c->reading = true;
        /* A frame's deadline counts only while the daemon reads it. */
        if (c->recv_len)
            c->frame_begun_ms = uv_now(c->hub->loop);
    } else if (!room && c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
    }
}

/* True when the oldest answer owed is made: conn_flush has something to write. */
static bool conn_head_answered(const conn_t *c)
{
    return c->slot_count > 0 && c->slots[c->slot_head].frame != NULL;
}

/* Writes the answers held in a pass (conn_flush). The write is the reads' loop time as much as
 * making their answers is, so when the pass handled reads since `reads` (hub->turn_reads then)
 * it counts in the turn's reads' time (read_slice_spent, --read-share). */
static void conn_flush_pass(conn_t *c, uint32_t reads)
{
    conn_hub_t *h = c->hub;
    if (h->turn_reads == reads) {
        conn_flush(c);
        return;
    }
    uint64_t begun_ns = uv_hrtime();
    conn_flush(c);
    h->turn_read_ns += uv_hrtime() - begun_ns;
}

/*
 * Handles every whole frame received, while answer slots and output room allow. Sets *blocked
 * when a read waits for the connection's writes, *deferred when one waits for the next turn.
 * The answers made here are held in their slots (c->gathering) until conn_process writes them;
 * when the slots run out, those made so far are written to free them, as they would have been.
 */
static void conn_handle_frames(conn_t *c, bool *blocked, bool *deferred)
{
    size_t used = 0;
    uint32_t body = 0;
    uint32_t reads = c->hub->turn_reads;

    for (;;) {
        if (c->slot_count >= BUDGET_CONN_INFLIGHT_MAX && conn_head_answered(c) && !c->closing) {
            conn_flush_pass(c, reads);
            reads = c->hub->turn_reads;
        }
        if (c->closing || c->close_flushed || c->slot_count >= BUDGET_CONN_INFLIGHT_MAX ||
            conn_output_full(c))
            break;
        int rc = budget_frame_peek(c->recv + used, c->recv_len - used, &body);
        uint32_t n = 0, max = BUDGET_FRAME_BYTES_MAX;
        if (c->recv_len - used >= BUDGET_FRAME_HEADER_BYTES) {
            n = ((uint32_t)c->recv[used] << 24) | ((uint32_t)c->recv[used + 1] << 16) |
                ((uint32_t)c->recv[used + 2] << 8) | c->recv[used + 3];
            if (conn_roleless(c) && n > BUDGET_CONN_ROLELESS_FRAME_BYTES_MAX) {
                max = BUDGET_CONN_ROLELESS_FRAME_BYTES_MAX;
                rc = -1;
            }
        }
        if (rc == 1)
            break;
        if (rc < 0) {
            refuse_frame(c, n, max);
            used = c->recv_len;
            break;
        }
        budget_envelope env;
        char why[160];
        int parsed = budget_parse_request(c->recv + used + BUDGET_FRAME_HEADER_BYTES, body, &env,
                                          why, sizeof(why));
        /* Only a write may pass the connection's writes not yet answered (read-your-writes);
         * a frame that is refused waits its turn like a read. */
        bool is_write = parsed == 0 && request_find_write(env.op, env.op_len) != NULL;
        if (c->writes_waiting > 0 && !is_write) {
            *blocked = true; /* woken by conn_write_answered */
            break;
        }
        /* A read past the turn's slice waits, and the frames after it with it (they stay in
         * order), for the next turn. */
        if (!is_write && read_slice_spent(c->hub)) {
            *deferred = true;
            break;
        }
        handle_frame(c, &env, parsed, why, is_write);
        used += BUDGET_FRAME_HEADER_BYTES + body;
    }
    if (used > 0) {
        memmove(c->recv, c->recv + used, c->recv_len - used);
        c->recv_len -= used;
        /* What is left is the start of the next frame, which began just now. */
        c->frame_begun_ms = c->recv_len ? uv_now(c->hub->loop) : 0;
    }
}

/* Handles the frames received (conn_handle_frames), then writes the answers it made in one
 * write: a client that sends several requests at once gets their answers at once, one system
 * call on each side instead of one per answer. Called only by conn_run_ready: an answer made
 * here wakes the connection again, never re-enters. */
static void conn_process(conn_t *c)
{
    bool blocked = false, deferred = false;

    assert(c->hub->running_ready);
    assert(!c->ready && !c->closing && c->refs > 0);
    assert(c->recv_len <= c->recv_cap);
    if (!c->identified)
        return; /* identity_done wakes it */
    uint32_t reads = c->hub->turn_reads;
    c->gathering = true;
    conn_handle_frames(c, &blocked, &deferred);
    c->gathering = false;
    if (conn_head_answered(c) && !c->closing)
        conn_flush_pass(c, reads);
    if (c->closing || c->close_flushed)
        return;
    conn_set_reading(c, blocked || deferred);
    /* One that its own answers woke again (conn_wake while it did not read) is already back
     * on the ready list: it defers when it is run there. */
    if (deferred && !c->ready)
        deferred_push(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    size_t need = c->recv_len + 1;

    (void)suggested;
    if (c->recv_len >= BUDGET_FRAME_HEADER_BYTES) {
        uint32_t body = ((uint32_t)c->recv[0] << 24) | ((uint32_t)c->recv[1] << 16) |
                        ((uint32_t)c->recv[2] << 8) | c->recv[3];
        if (body <= BUDGET_FRAME_BYTES_MAX && body + BUDGET_FRAME_HEADER_BYTES > need)
            need = body + BUDGET_FRAME_HEADER_BYTES;
    }
    if (need > c->recv_cap || c->recv_cap == 0) {
        size_t cap = c->recv_cap ? c->recv_cap : CONN_RECV_BYTES_INITIAL;
        while (cap < need)
            cap *= 2;
        if (cap > CONN_RECV_BYTES_MAX)
            cap = CONN_RECV_BYTES_MAX;
        uint8_t *p = realloc(c->recv, cap);
        if (p) {
            c->recv = p;
            c->recv_cap = cap;
        }
    }
    *buf = uv_buf_init((char *)c->recv + c->recv_len, (unsigned int)(c->recv_cap - c->recv_len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = stream->data;

    (void)buf;
    if (nread < 0) {
        if (nread != UV_EOF)
            log_debug("uid %u: read failed: %s", c->actor.uid, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (nread > 0) {
        c->active_ms = uv_now(c->hub->loop);
        if (c->recv_len == 0)
            c->frame_begun_ms = c->active_ms;
    }
    c->recv_len += (size_t)nread;
    /* The end of a read callback is a step of its own: no answer is being made here, and the
     * frames are handled before the next read can fill `recv`. */
    ready_push(c);
    conn_run_ready(c->hub);
}

/* Keeps the loop from blocking in poll while connections are ready: the step that runs them
 * (a check handle) comes after poll. */
static void on_ready_idle(uv_idle_t *h)
{
    (void)h;
}

/* Puts `c` on the ready list, to be run at the next step (conn_run_ready). */
static void ready_push(conn_t *c)
{
    conn_hub_t *h = c->hub;

    assert(!c->closed);
    /* A deferred connection is run at the next turn (conn_turn_begin). */
    if (c->ready || c->deferred || c->closing || c->close_flushed)
        return;
    assert(!uv_is_closing((uv_handle_t *)&h->ready_idle));
    c->ready = true;
    c->refs++; /* until conn_run_ready has run it */
    c->ready_next = NULL;
    if (h->ready_tail)
        h->ready_tail->ready_next = c;
    else
        h->ready = c;
    h->ready_tail = c;
    if (!uv_is_active((uv_handle_t *)&h->ready_idle))
        uv_idle_start(&h->ready_idle, on_ready_idle);
}

/*
 * Marks `c` as having work: frames to handle, or reading to start again, at the next step
 * (conn_run_ready). Nothing is handled here, so an answer may wake its connection from
 * anywhere. A connection that reads has no whole frame left unhandled (conn_process stops
 * reading whenever it leaves one), so only its next read can give it work.
 */
static void conn_wake(conn_t *c)
{
    if (c->reading)
        return;
    ready_push(c);
}

void conn_run_ready(conn_hub_t *h)
{
    assert(!h->running_ready);
    h->running_ready = true;
    /* A connection its own answers wake again goes to the back: each run handles new frames,
     * so this ends once every connection has handled what it can. */
    while (h->ready) {
        conn_t *c = h->ready;
        h->ready = c->ready_next;
        if (!h->ready)
            h->ready_tail = NULL;
        c->ready_next = NULL;
        c->ready = false;
        if (!c->closing)
            conn_process(c);
        conn_unref(c);
    }
    h->running_ready = false;
    if ((h->deferred == NULL || h->resting) && uv_is_active((uv_handle_t *)&h->ready_idle))
        uv_idle_stop(&h->ready_idle);
}

/* The rest is over: the step after this turn's poll begins the next turn (conn_turn_begin),
 * and the poll must not block before it. */
static void on_rest_timer(uv_timer_t *t)
{
    conn_hub_t *h = t->data;
    if (!uv_is_active((uv_handle_t *)&h->ready_idle))
        uv_idle_start(&h->ready_idle, on_ready_idle);
}

/* Settles the reads' account (readshare.h) at the start of a turn; when the reads owe a rest,
 * it begins: no read runs until rest_timer or the end of the writes ends it. */
static bool reads_rest(conn_hub_t *h, uint64_t now)
{
    uint64_t rest_ns = read_account_settle(&h->read_account, now, h->turn_read_ns, h->read_slice_ns,
                                           h->hooks.writes_waiting(h->owner), h->deferred != NULL);
    if (rest_ns == 0)
        return false;
    h->rest_until_ns = now + rest_ns;
    h->turn_read_ns = 0;
    h->turn_reads = 0;
    h->resting = true;
    h->read_rests++;
    uv_timer_start(&h->rest_timer, on_rest_timer, (rest_ns + 999999u) / 1000000u, 0);
    if (uv_is_active((uv_handle_t *)&h->ready_idle))
        uv_idle_stop(&h->ready_idle);
    return true;
}

bool conn_turn_begin(conn_hub_t *h)
{
    conn_t *list = h->deferred;
    uint64_t now = uv_hrtime();

    assert(!h->running_ready);
    if (h->resting) {
        /* The writes' end ends the rest: nothing is left for the reads to make room for. */
        if (h->hooks.writes_waiting(h->owner) && now + READ_REST_SLACK_NS < h->rest_until_ns) {
            /* libuv's clock is in whole milliseconds: its timer may end a rest early. */
            if (!uv_is_active((uv_handle_t *)&h->rest_timer))
                uv_timer_start(&h->rest_timer, on_rest_timer,
                               (h->rest_until_ns - now + 999999u) / 1000000u, 0);
            return false;
        }
        h->resting = false;
        uv_timer_stop(&h->rest_timer);
    }
    if (reads_rest(h, now))
        return false;
    h->turn_read_ns = 0;
    h->turn_reads = 0;
    h->deferred = h->deferred_tail = NULL;
    while (list) {
        conn_t *c = list;
        list = c->deferred_next;
        assert(c->deferred && !c->closing);
        c->deferred = false;
        c->deferred_next = NULL;
        ready_push(c); /* takes its own reference (none when closing once flushed) */
        conn_unref(c);
    }
    return h->ready != NULL;
}

/*
 * Who the peer is. The uid and primary group come from the kernel (SO_PEERCRED) at once; the
 * user name and the other groups come from the user and group databases (lookup.h), and the
 * connection reads nothing until they are in. One that waits longer than the idle timeout is
 * refused (conn_sweep).
 */
static int peer_cred(conn_t *c, uint32_t *gid)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    uv_os_fd_t fd;

    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return -1;
    c->actor.uid = cred.uid;
    c->actor.name[0] = '\0';
    *gid = cred.gid;
    /* Until the lookup is done: the uid and the primary group, which a reload may resolve. */
    access_identity_of(cred.uid, cred.gid, NULL, cred.gid, &c->identity);
    return 0;
}

/* True when the client has closed its end: a connection that waited its turn for a lookup
 * while nothing read from it is let go then rather than looked up. */
static bool conn_hung_up(conn_t *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
        return true;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static bool identity_turn(lookup_waiter_t *w)
{
    conn_t *c = (conn_t *)((char *)w - offsetof(conn_t, lookup));

    if (c->closing || c->close_flushed)
        return false; /* closed, or refused and closing once its answer is out */
    if (conn_hung_up(c)) {
        conn_close(c);
        return false;
    }
    return true;
}

static void identity_done(lookup_waiter_t *w, const lookup_result_t *r)
{
    conn_t *c = (conn_t *)((char *)w - offsetof(conn_t, lookup));

    if (!r && !c->closing && !c->close_flushed) {
        log_warn("uid %u: cannot look up its name and groups; closing the connection",
                 c->actor.uid);
        conn_close(c);
    } else if (r && !c->closing && !c->close_flushed) {
        /* The groups: the peer's own from the kernel, the user's others from the group
         * database; a uid without a password entry has only the kernel's. */
        snprintf(c->actor.name, sizeof(c->actor.name), "%s", r->name);
        if (r->found)
            access_identity_with_gid(&r->user, c->lookup_gid, &c->identity);
        access_resolve(c->hub->access, &c->identity, &c->grants);
        c->identified = true;
        c->active_ms = uv_now(c->hub->loop);
        conn_wake(c);
    }
    conn_unref(c);
}

static void identity_begin(conn_t *c, uint32_t gid)
{
    c->lookup_gid = gid;
    c->refs++; /* until its lookup is done (identity_done) */
    c->lookup.uid = c->actor.uid;
    c->lookup.turn = identity_turn;
    c->lookup.done = identity_done;
    lookup_want(&c->hub->lookups, &c->lookup);
}

static uint32_t uid_connections(const conn_hub_t *h, uint32_t uid);

/* Answers `msg` (request id 0) and closes once it is written; reads nothing more. */
static void conn_refuse(conn_t *c, int code, const char *msg)
{
    uint32_t idx = 0;

    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = false;
    c->close_flushed = true;
    c->active_ms = uv_now(c->hub->loop);
    if (!conn_slot_open(c, &idx)) {
        conn_close(c);
        return;
    }
    conn_answer_error(c, idx, 0, code, msg);
}

void conn_on_connection(uv_stream_t *listener, int status)
{
    conn_hub_t *h = listener->data;
    conn_t *c;
    char msg[160];

    if (status < 0) {
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->hub = h;
    uv_pipe_init(h->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->count++;
    uint32_t gid = 0;
    if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0 || peer_cred(c, &gid) != 0) {
        conn_close(c);
        return;
    }
    h->connections_total++;
    c->active_ms = uv_now(h->loop);
    if (*h->stopping) {
        conn_refuse(c, BUDGET_EUNAVAILABLE, "budgetd is stopping");
        return;
    }
    if (h->count > h->connections_max) {
        snprintf(msg, sizeof(msg), "too many connections: budgetd serves at most %u at once",
                 h->connections_max);
        if (refusal_to_log(h->refusals))
            log_warn("uid %u refused: %s", c->actor.uid, msg);
        h->connections_refused++;
        conn_refuse(c, BUDGET_EUNAVAILABLE, msg);
        return;
    }
    if (uid_connections(h, c->actor.uid) > h->connections_per_uid_max) {
        snprintf(msg, sizeof(msg), "too many connections from uid %u: at most %u at once",
                 c->actor.uid, h->connections_per_uid_max);
        if (refusal_to_log(h->refusals))
            log_warn("uid %u refused: %s", c->actor.uid, msg);
        h->connections_refused++;
        conn_refuse(c, BUDGET_EUNAVAILABLE, msg);
        return;
    }
    identity_begin(c, gid);
}

/* Connections open (and not being refused or closed) by `uid`, this one included. */
static uint32_t uid_connections(const conn_hub_t *h, uint32_t uid)
{
    uint32_t n = 0;
    for (const conn_t *o = h->conns; o; o = o->next)
        if (o->actor.uid == uid && !o->closing && !o->close_flushed)
            n++;
    return n;
}

void conn_close_when_flushed(conn_t *c)
{
    if (c->closing)
        return;
    c->close_flushed = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
    }
    if (c->out_bytes == 0 && c->slot_count == 0)
        conn_close(c);
}

void conn_sweep(conn_hub_t *h)
{
    uint64_t now = uv_now(h->loop);
    char msg[160];

    for (conn_t *c = h->conns; c; c = c->next) {
        if (c->closing)
            continue;
        if (c->close_flushed) {
            /* Its last answers had their time to be read. */
            if (c->refs == 0 && now - c->active_ms > h->frame_timeout_ms)
                conn_close(c);
            continue;
        }
        if (!c->identified) {
            /* Still waiting to learn who it is (identity_begin): the idle timeout bounds that
             * too. */
            if (now - c->active_ms > h->idle_timeout_ms) {
                snprintf(msg, sizeof(msg),
                         "the user database did not say who uid %u is within %llu ms; closing "
                         "the connection",
                         c->actor.uid, (unsigned long long)h->idle_timeout_ms);
                log_warn("%s", msg);
                h->connections_timed_out++;
                conn_refuse(c, BUDGET_EUNAVAILABLE, msg);
            }
            continue;
        }
        if (c->reading && c->recv_len > 0 && c->frame_begun_ms != 0 &&
            now - c->frame_begun_ms > h->frame_timeout_ms) {
            snprintf(msg, sizeof(msg),
                     "a frame must arrive whole within %llu ms of its first byte; closing the "
                     "connection",
                     (unsigned long long)h->frame_timeout_ms);
            log_info("uid %u: %zu bytes of a frame in %llu ms: %s", c->actor.uid, c->recv_len,
                     (unsigned long long)(now - c->frame_begun_ms), msg);
            h->connections_timed_out++;
            conn_refuse(c, BUDGET_ETOO_LARGE, msg);
            continue;
        }
        /* Not read from because its answers fill its output: a client that sends and does not
         * read (its next frame, whole or not, waits in `recv` or in the socket, where neither
         * deadline above sees it). When none of its answers has been read for as long as a
         * frame may take, it is let go, its answers with it (it reads none, so a last answer
         * would not reach it). Answers still being made (refs) are not its doing. */
        if (!c->reading && !c->sub && c->refs == 0 && c->out_bytes > 0 && conn_output_full(c) &&
            now - c->active_ms > h->frame_timeout_ms) {
            log_info("uid %u: %zu bytes of answers unread for %llu ms while it sends requests; "
                     "closing the connection",
                     c->actor.uid, c->out_bytes, (unsigned long long)(now - c->active_ms));
            h->connections_timed_out++;
            conn_close(c);
            continue;
        }
        if (!c->sub && c->slot_count == 0 && c->refs == 0 && c->recv_len == 0 &&
            now - c->active_ms > h->idle_timeout_ms) {
            snprintf(msg, sizeof(msg), "idle for %llu ms; closing the connection",
                     (unsigned long long)h->idle_timeout_ms);
            log_info("uid %u: %s", c->actor.uid, msg);
            h->connections_timed_out++;
            conn_refuse(c, BUDGET_EUNAVAILABLE, msg);
        }
    }
}

int conn_write_ahead(conn_t *c, uint32_t idx, char *frame, size_t size,
                     void (*done)(void *arg, int status), void *arg)
{
    assert(done != NULL);
    /* Made while the connection's frames are handled: the answers held ahead of it go first. */
    if (c->gathering)
        conn_flush(c);
    assert(c->slot_count > 0 && c->slot_head == idx); /* the oldest answer owed */
    (void)idx;
    write_req *w = c->closing ? NULL : write_req_new(c, 1);
    if (!w) {
        free(frame);
        return -1;
    }
    w->frame[0] = frame;
    w->size = size;
    w->cost = 0; /* bounded by its maker (a backup keeps at most two chunks out) */
    w->done = done;
    w->arg = arg;
    uv_buf_t buf = uv_buf_init(frame, (unsigned int)size);
    c->out_bytes += size;
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write) < 0) {
        c->out_bytes -= size;
        write_req_free(w);
        return -1;
    }
    return 0;
}

/* ---- the hub ------------------------------------------------------------------------------ */

int conn_hub_start(conn_hub_t *h, uv_loop_t *loop)
{
    assert(h->hooks.frame && h->hooks.writable && h->hooks.closing && h->hooks.freed &&
           h->hooks.quiet && h->hooks.writes_waiting && h->stopping && h->refusals);
    h->loop = loop;
    uv_idle_init(loop, &h->ready_idle);
    h->ready_idle.data = h;
    uv_timer_init(loop, &h->rest_timer);
    h->rest_timer.data = h;
    h->lookups.owner = h->owner;
    h->lookups.quiet = h->hooks.quiet;
    return lookup_start(&h->lookups, loop);
}

void conn_hub_close_all(conn_hub_t *h)
{
    for (conn_t *c = h->conns; c; c = c->next)
        conn_close_when_flushed(c);
}

bool conn_hub_empty(const conn_hub_t *h)
{
    return h->conns == NULL && !lookup_busy(&h->lookups);
}

void conn_hub_close(conn_hub_t *h)
{
    assert(conn_hub_empty(h));
    assert(h->ready == NULL && h->deferred == NULL && !h->running_ready); /* all gone */
    if (!uv_is_closing((uv_handle_t *)&h->ready_idle))
        uv_close((uv_handle_t *)&h->ready_idle, NULL);
    if (!uv_is_closing((uv_handle_t *)&h->rest_timer))
        uv_close((uv_handle_t *)&h->rest_timer, NULL);
    lookup_close(&h->lookups);
}

void conn_hub_join(conn_hub_t *h)
{
    lookup_join(&h->lookups);
    access_free(h->access);
    h->access = NULL;
}

void conn_hub_set_access(conn_hub_t *h, access_rules *fresh)
{
    for (conn_t *c = h->conns; c; c = c->next)
        access_resolve(fresh, &c->identity, &c->grants);
    access_free(h->access);
    h->access = fresh;
}

/* ---- references and what others may read ------------------------------------------------- */

void conn_ref(conn_t *c)
{
    assert(!c->closed);
    c->refs++;
}

void conn_write_begin(conn_t *c)
{
    conn_ref(c);
    c->writes_waiting++;
}

void conn_job_begin(conn_t *c)
{
    conn_ref(c);
    c->jobs_running++;
}

void conn_job_answer(conn_t *c, uint32_t idx, char *frame, size_t size)
{
    assert(c->jobs_running > 0 && c->refs > 0);
    c->jobs_running--;
    conn_answer_frame(c, idx, frame, size);
}

conn_hub_t *conn_hub(const conn_t *c)
{
    return c->hub;
}

const ledger_actor *conn_actor(const conn_t *c)
{
    return &c->actor;
}

const access_grants *conn_grants(const conn_t *c)
{
    return &c->grants;
}

bool conn_closing(const conn_t *c)
{
    return c->closing;
}

bool conn_ending(const conn_t *c)
{
    return c->closing || c->close_flushed;
}

bool conn_owes_answers(const conn_t *c)
{
    return c->slot_count > 0;
}

bool conn_is_oldest(const conn_t *c, uint32_t idx)
{
    return c->slot_count > 0 && c->slot_head == idx;
}

size_t conn_out_bytes(const conn_t *c)
{
    return c->out_bytes;
}

struct sub *conn_sub(const conn_t *c)
{
    return c->sub;
}

void conn_set_sub(conn_t *c, struct sub *sub)
{
    c->sub = sub;
}
