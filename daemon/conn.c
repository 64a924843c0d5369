/* Connections: reading frames, answering each connection's requests in order. */
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "log.h"
#include "server_internal.h"
#include "subscribe.h"
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>

#include "proto/frame.h"
#include "proto/text.h"
#include "proto/validate.h"

static void conn_flush(conn *c);
static void conn_wake(conn *c);
static void conn_process(conn *c);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* ---- responses ------------------------------------------------------------------------ */

void resp_begin(resp *r, uint64_t req_id, bool ok)
{
    static const char header[BUDGET_FRAME_HEADER_BYTES] = {0};
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&r->sb, header, sizeof(header));
    msgpack_pack_map(&r->pk, 3);
    pack_key_uint(&r->pk, "id", req_id);
    pack_cstr(&r->pk, "ok");
    if (ok)
        msgpack_pack_true(&r->pk);
    else
        msgpack_pack_false(&r->pk);
    pack_cstr(&r->pk, ok ? "result" : "error");
}

/* Every error message goes out as clean text (a msgpack str must be UTF-8): one that holds
 * outside bytes still raw is escaped here, whoever made it. */
void resp_error_into(resp *r, uint64_t req_id, int code, const char *message)
{
    char safe[1024];
    size_t len = strlen(message);

    if (!budget_text_clean(message, len))
        message = safe, len = budget_escape(safe, sizeof(safe), message, len);
    resp_begin(r, req_id, false);
    msgpack_pack_map(&r->pk, 2);
    pack_key_str(&r->pk, "code", budget_err_code(code));
    pack_cstr(&r->pk, "message");
    msgpack_pack_str(&r->pk, len);
    msgpack_pack_str_body(&r->pk, message, len);
}

/* Finishes the frame; a result over the frame limit becomes a too_large error. */
void resp_finish(resp *r, uint64_t req_id)
{
    size_t body = r->sb.size - BUDGET_FRAME_HEADER_BYTES;
    if (body > BUDGET_FRAME_BYTES_MAX) {
        msgpack_sbuffer_destroy(&r->sb);
        resp_error_into(r, req_id, BUDGET_ETOO_LARGE,
                        "the result is over the 1 MiB frame limit; narrow the query or page it");
        body = r->sb.size - BUDGET_FRAME_HEADER_BYTES;
    }
    budget_frame_header((uint8_t *)r->sb.data, (uint32_t)body);
}

/* ---- connections: answer order and output ----------------------------------------------- */

typedef struct {
    uv_write_t req;
    conn *c;
    char *frame;
    size_t size;
    size_t cost;
} write_req;

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
static bool conn_roleless(const conn *c)
{
    return c->grants.all == 0 && c->grants.some == 0;
}

static size_t conn_output_max(const conn *c)
{
    return conn_roleless(c) ? BUDGET_CONN_ROLELESS_OUTPUT_BYTES_MAX : BUDGET_CONN_OUTPUT_BYTES_MAX;
}

static bool conn_slot_open(conn *c, uint32_t *idx)
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
void conn_answer(conn *c, uint32_t idx, resp *r, uint64_t req_id)
{
    resp_finish(r, req_id);
    size_t size = r->sb.size;
    conn_answer_frame(c, idx, msgpack_sbuffer_release(&r->sb), size);
}

void conn_answer_frame(conn *c, uint32_t idx, char *frame, size_t size)
{
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
    conn_flush(c);
}

void conn_answer_error(conn *c, uint32_t idx, uint64_t req_id, int code, const char *msg)
{
    resp r;
    if (code != 0)
        c->srv->errors++;
    resp_error_into(&r, req_id, code, msg);
    conn_answer(c, idx, &r, req_id);
}

/* Output waiting for this client, written or held, at the memory it holds, and a frame's
 * worth for each worker job that will answer; past the limit nothing more is read. */
static bool conn_output_full(const conn *c)
{
    size_t jobs = (size_t)c->jobs_running * BUDGET_FRAME_BYTES_MAX;
    return c->out_cost + jobs > conn_output_max(c);
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;

    c->out_bytes -= w->size;
    c->out_cost -= w->cost;
    c->active_ms = uv_now(c->srv->loop);
    free(w->frame);
    free(w);
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
        sub_on_writable(c);
    conn_wake(c);
}

static void conn_flush(conn *c)
{
    while (c->slot_count > 0 && c->slots[c->slot_head].frame) {
        slot *sl = &c->slots[c->slot_head];
        write_req *w = malloc(sizeof(*w));
        c->slot_head = (c->slot_head + 1) % BUDGET_CONN_INFLIGHT_MAX;
        c->slot_count--;
        c->held_bytes -= sl->size;
        if (!w) {
            c->out_cost -= sl->cost;
            free(sl->frame);
            sl->frame = NULL;
            conn_close(c);
            return;
        }
        w->c = c;
        w->frame = sl->frame;
        w->size = sl->size;
        w->cost = sl->cost;
        sl->frame = NULL;
        uv_buf_t buf = uv_buf_init(w->frame, (unsigned int)w->size);
        c->out_bytes += w->size;
        int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write);
        if (rc < 0) {
            c->out_bytes -= w->size;
            c->out_cost -= w->cost;
            free(w->frame);
            free(w);
            conn_close(c);
            return;
        }
    }
    if (c->sub && c->slot_count == 0)
        sub_on_writable(c);
    conn_wake(c); /* a slot or output room may have come free */
}

int conn_push(conn *c, char *frames, size_t size)
{
    write_req *w = NULL;

    if (!c->closing && c->slot_count == 0)
        w = malloc(sizeof(*w));
    if (!w) {
        free(frames);
        if (!c->closing)
            conn_close(c);
        return -1;
    }
    frames = frame_fit(frames, size);
    w->c = c;
    w->frame = frames;
    w->size = size;
    w->cost = frame_cost(frames);
    uv_buf_t buf = uv_buf_init(frames, (unsigned int)size);
    c->out_bytes += size;
    c->out_cost += w->cost;
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write) < 0) {
        c->out_bytes -= size;
        c->out_cost -= w->cost;
        free(frames);
        free(w);
        conn_close(c);
        return -1;
    }
    return 0;
}

static void conn_free(conn *c)
{
    for (uint32_t i = 0; i < BUDGET_CONN_INFLIGHT_MAX; i++)
        free(c->slots[i].frame);
    sub_free(c);
    free(c->recv);
    free(c);
}

void conn_write_answered(conn *c)
{
    assert(c->writes_waiting > 0);
    assert(c->refs > 0);
    c->writes_waiting--;
    if (c->writes_waiting == 0)
        conn_wake(c);
    conn_unref(c);
}

void conn_unref(conn *c)
{
    assert(c->refs > 0);
    c->refs--;
    if (c->refs == 0 && c->closed)
        conn_free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
    conn *c = h->data;
    server *s = c->srv;

    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->conn_count--;
    c->closed = true;
    if (c->refs == 0)
        conn_free(c);
    maybe_finish(s);
}

void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    sub_detach(c);
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = false;
    uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

/* ---- frames ------------------------------------------------------------------------------ */

/*
 * Answers one frame, read once by budget_parse_request (`rc` and `why` are what it said, `env`
 * what it read): the same reading decided whether the frame waits for the connection's writes
 * (conn_process), so the op that runs is the op that was judged.
 */
static void handle_frame(conn *c, const budget_envelope *env, int rc, const char *why)
{
    msgpack_unpacked u;
    size_t off = 0;
    uint32_t idx = 0;

    assert(c->srv->running_ready);
    assert(c->slot_count < BUDGET_CONN_INFLIGHT_MAX); /* conn_process checked */
    conn_slot_open(c, &idx);
    c->srv->requests++;
    if (c->sub) {
        /* Pushes and answers cannot share a stream unambiguously: the last frame, then close. */
        sub_detach(c);
        c->close_flushed = true;
        conn_answer_error(c, idx, env->id, BUDGET_EBAD_REQUEST,
                          "this connection is subscribed; send requests on another connection");
        return;
    }
    if (rc != 0) {
        /* An answer with id 0 answers no request: it is the last frame (docs/protocol.md). */
        if (env->id == 0)
            c->close_flushed = true;
        conn_answer_error(c, idx, env->id, rc, why);
        return;
    }
    if (env->args == NULL) {
        dispatch(c, idx, env, NULL);
        return;
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)env->args, env->args_size, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        conn_answer_error(c, idx, env->id, BUDGET_EBAD_REQUEST, "args are not one msgpack map");
        return;
    }
    dispatch(c, idx, env, &u.data);
    msgpack_unpacked_destroy(&u);
}

/* Handles every whole frame received, while answer slots and output room allow. Called only
 * by conn_run_ready: an answer made here wakes the connection again, never re-enters. */
static void conn_process(conn *c)
{
    size_t used = 0;
    uint32_t body = 0;
    bool blocked = false;

    assert(c->srv->running_ready);
    assert(!c->ready && !c->closing && c->refs > 0);
    assert(c->recv_len <= c->recv_cap);
    if (!c->identified)
        return; /* identity_done wakes it */
    while (!c->closing && !c->close_flushed && c->slot_count < BUDGET_CONN_INFLIGHT_MAX &&
           !conn_output_full(c)) {
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
            blocked = true; /* resumed by conn_write_answered */
            break;
        }
        handle_frame(c, &env, parsed, why);
        used += BUDGET_FRAME_HEADER_BYTES + body;
    }
    if (used > 0) {
        memmove(c->recv, c->recv + used, c->recv_len - used);
        c->recv_len -= used;
        /* What is left is the start of the next frame, which began just now. */
        c->frame_begun_ms = c->recv_len ? uv_now(c->srv->loop) : 0;
    }
    if (c->closing || c->close_flushed)
        return;
    bool room = !blocked && c->slot_count < BUDGET_CONN_INFLIGHT_MAX && !conn_output_full(c);
    if (room && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0)
            c->reading = true;
        /* A frame's deadline counts only while the daemon reads it. */
        if (c->recv_len)
            c->frame_begun_ms = uv_now(c->srv->loop);
    } else if (!room && c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    size_t need = c->recv_len + 1;

    (void)suggested;
    if (c->recv_len >= BUDGET_FRAME_HEADER_BYTES) {
        uint32_t body = ((uint32_t)c->recv[0] << 24) | ((uint32_t)c->recv[1] << 16) |
                        ((uint32_t)c->recv[2] << 8) | c->recv[3];
        if (body <= BUDGET_FRAME_BYTES_MAX && body + BUDGET_FRAME_HEADER_BYTES > need)
            need = body + BUDGET_FRAME_HEADER_BYTES;
    }
    if (need > c->recv_cap || c->recv_cap == 0) {
        size_t cap = c->recv_cap ? c->recv_cap : RECV_BYTES_INITIAL;
        while (cap < need)
            cap *= 2;
        if (cap > RECV_BYTES_MAX)
            cap = RECV_BYTES_MAX;
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
    conn *c = stream->data;

    (void)buf;
    if (nread < 0) {
        if (nread != UV_EOF)
            log_debug("uid %u: read failed: %s", c->actor.uid, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (nread > 0) {
        c->active_ms = uv_now(c->srv->loop);
        if (c->recv_len == 0)
            c->frame_begun_ms = c->active_ms;
    }
    c->recv_len += (size_t)nread;
    /* The end of a read callback is a step of its own: no answer is being made here, and the
     * frames are handled before the next read can fill `recv`. */
    conn_wake(c);
    conn_run_ready(c->srv);
}

/* Keeps the loop from blocking in poll while connections are ready: the step that runs them
 * (a check handle) comes after poll. */
static void on_ready_idle(uv_idle_t *h)
{
    (void)h;
}

/* Marks `c` as having work: frames to handle, or reading to start again. It runs at the next
 * step (conn_run_ready); nothing is handled here, so an answer may wake its connection from
 * anywhere. */
static void conn_wake(conn *c)
{
    server *s = c->srv;

    if (c->ready || c->closing || c->close_flushed)
        return;
    assert(!uv_is_closing((uv_handle_t *)&s->ready_idle));
    c->ready = true;
    c->refs++; /* until conn_run_ready has run it */
    c->ready_next = NULL;
    if (s->ready_tail)
        s->ready_tail->ready_next = c;
    else
        s->ready = c;
    s->ready_tail = c;
    if (!uv_is_active((uv_handle_t *)&s->ready_idle))
        uv_idle_start(&s->ready_idle, on_ready_idle);
}

void conn_run_ready(server *s)
{
    assert(!s->running_ready);
    s->running_ready = true;
    /* A connection its own answers wake again goes to the back: each run handles new frames,
     * so this ends once every connection has handled what it can. */
    while (s->ready) {
        conn *c = s->ready;
        s->ready = c->ready_next;
        if (!s->ready)
            s->ready_tail = NULL;
        c->ready_next = NULL;
        c->ready = false;
        if (!c->closing)
            conn_process(c);
        conn_unref(c);
    }
    s->running_ready = false;
    if (uv_is_active((uv_handle_t *)&s->ready_idle))
        uv_idle_stop(&s->ready_idle);
}

/*
 * Who the peer is. The uid and primary group come from the kernel (SO_PEERCRED) at once; the
 * user name and the other groups come from the user and group databases, which may be a
 * directory service (LDAP, SSSD) and slow, so they are looked up on a thread of their own and
 * the connection reads nothing until they are in.
 *
 * Lookups have their own LOOKUP_THREADS threads, not libuv's pool: there they would wait
 * behind long reads (64 slow `balances as_of` kept new users out for as long as those took),
 * and a directory that hangs would take the pool from the reads. Nor may one slow user hold
 * up the others: a connection whose uid is being looked up already waits for that lookup and
 * shares its answer, and at most LOOKUP_THREADS lookups run at once; the others wait their
 * turn in order. One that waits longer than the idle timeout is refused (conn_sweep).
 */
struct identity_job {
    identity_job *next;       /* in server.lookups */
    identity_job *queue_next; /* in server.lookup_todo or lookup_done */
    conn *conns;              /* waiting for this answer, through conn.lookup_next */
    void (*hook)(uint32_t uid);
    uint32_t uid;
    bool found; /* the uid has a password entry */
    char name[BUDGET_NAME_BYTES_MAX + 1];
    access_identity user; /* the user's group in the password database, then its others */
};

static int peer_cred(conn *c, uint32_t *gid)
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

static void identity_run(identity_job *j)
{
    struct passwd pw, *found = NULL;
    char buf[4096];

    if (j->hook)
        j->hook(j->uid);
    if (getpwuid_r(j->uid, &pw, buf, sizeof(buf), &found) != 0 || !found ||
        strlen(found->pw_name) > BUDGET_NAME_BYTES_MAX)
        return;
    snprintf(j->name, sizeof(j->name), "%s", found->pw_name);
    j->found = true;
    access_identity_of(j->uid, (uint32_t)found->pw_gid, j->name, (uint32_t)found->pw_gid, &j->user);
}

static void identity_lookup(conn *c);

static uint32_t lookups_running(const server *s)
{
    uint32_t n = 0;
    for (const identity_job *j = s->lookups; j; j = j->next)
        n++;
    return n;
}

/* True when the client has closed its end: a connection that waited its turn for a lookup
 * while nothing read from it is let go then rather than looked up. */
static bool conn_hung_up(conn *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
        return true;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static void identity_done(server *s, identity_job *j)
{
    for (identity_job **p = &s->lookups; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    while (j->conns) {
        conn *c = j->conns;
        j->conns = c->lookup_next;
        c->lookup_next = NULL;
        if (!c->closing && !c->close_flushed) {
            /* The groups: the peer's own from the kernel, the user's others from the group
             * database; a uid without a password entry has only the kernel's. */
            snprintf(c->actor.name, sizeof(c->actor.name), "%s", j->name);
            if (j->found)
                access_identity_with_gid(&j->user, c->lookup_gid, &c->identity);
            access_resolve(s->access, &c->identity, &c->grants);
            c->identified = true;
            c->active_ms = uv_now(s->loop);
            conn_wake(c);
        }
        conn_unref(c);
    }
    free(j);
    /* The next in line, as far as LOOKUP_THREADS allows; one closed meanwhile is let go. */
    while (s->lookups_waiting && lookups_running(s) < LOOKUP_THREADS) {
        conn *c = s->lookups_waiting;
        s->lookups_waiting = c->lookup_next;
        if (!s->lookups_waiting)
            s->lookups_waiting_tail = NULL;
        c->lookup_next = NULL;
        if (c->closing || c->close_flushed) {
            conn_unref(c); /* closed, or refused and closing once its answer is out */
        } else if (conn_hung_up(c)) {
            conn_close(c);
            conn_unref(c);
        } else {
            identity_lookup(c);
        }
    }
}

/* Looks `c` up: with a running lookup of its uid, at once, or once a lookup ends. It holds a
 * reference for it (identity_begin). */
static void identity_lookup(conn *c)
{
    server *s = c->srv;

    for (identity_job *j = s->lookups; j; j = j->next)
        if (j->uid == c->actor.uid) {
            c->lookup_next = j->conns;
            j->conns = c;
            return;
        }
    if (lookups_running(s) >= LOOKUP_THREADS) {
        if (s->lookups_waiting_tail)
            s->lookups_waiting_tail->lookup_next = c;
        else
            s->lookups_waiting = c;
        s->lookups_waiting_tail = c;
        return;
    }
    identity_job *j = calloc(1, sizeof(*j));
    if (!j || s->lookup_threads_count == 0) {
        free(j);
        log_warn("uid %u: cannot look up its name and groups; closing the connection",
                 c->actor.uid);
        conn_close(c);
        conn_unref(c);
        return;
    }
    j->conns = c;
    j->hook = s->lookup_hook;
    j->uid = c->actor.uid;
    j->next = s->lookups;
    s->lookups = j;
    /* Fewer than LOOKUP_THREADS run (lookups_running), so a thread is free for it. */
    uv_mutex_lock(&s->lookup_mutex);
    identity_job **tail = &s->lookup_todo;
    while (*tail)
        tail = &(*tail)->queue_next;
    *tail = j;
    uv_cond_signal(&s->lookup_cond);
    uv_mutex_unlock(&s->lookup_mutex);
}

/* A lookup thread: runs the lookups handed to it, one at a time, and wakes the loop. */
static void lookup_main(void *arg)
{
    server *s = arg;

    uv_mutex_lock(&s->lookup_mutex);
    for (;;) {
        while (!s->lookup_todo && !s->lookup_stop)
            uv_cond_wait(&s->lookup_cond, &s->lookup_mutex);
        identity_job *j = s->lookup_todo;
        if (!j)
            break; /* stopping, and nothing left to do */
        s->lookup_todo = j->queue_next;
        uv_mutex_unlock(&s->lookup_mutex);
        identity_run(j);
        uv_mutex_lock(&s->lookup_mutex);
        j->queue_next = s->lookup_done;
        s->lookup_done = j;
        /* Under the mutex: the loop closes the handle only once it has taken every job. */
        uv_async_send(&s->lookup_async);
    }
    uv_mutex_unlock(&s->lookup_mutex);
}

/* On the loop thread: the lookups the threads finished. */
static void on_lookups_done(uv_async_t *h)
{
    server *s = h->data;

    uv_mutex_lock(&s->lookup_mutex);
    identity_job *done = s->lookup_done;
    s->lookup_done = NULL;
    uv_mutex_unlock(&s->lookup_mutex);
    while (done) {
        identity_job *j = done;
        done = j->queue_next;
        identity_done(s, j);
    }
    maybe_finish(s);
}

int lookups_start(server *s)
{
    uv_mutex_init(&s->lookup_mutex);
    uv_cond_init(&s->lookup_cond);
    uv_async_init(s->loop, &s->lookup_async, on_lookups_done);
    s->lookup_async.data = s;
    for (uint32_t i = 0; i < LOOKUP_THREADS; i++) {
        if (uv_thread_create(&s->lookup_threads[i], lookup_main, s) != 0)
            break;
        s->lookup_threads_count++;
    }
    if (s->lookup_threads_count == 0) {
        log_error("cannot start a thread to look up users; connections will be refused");
        return -1;
    }
    return 0;
}

void lookups_close(server *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->lookup_async))
        uv_close((uv_handle_t *)&s->lookup_async, NULL);
}

void lookups_join(server *s)
{
    uv_mutex_lock(&s->lookup_mutex);
    s->lookup_stop = true;
    uv_cond_broadcast(&s->lookup_cond);
    uv_mutex_unlock(&s->lookup_mutex);
    for (uint32_t i = 0; i < s->lookup_threads_count; i++)
        uv_thread_join(&s->lookup_threads[i]);
    uv_cond_destroy(&s->lookup_cond);
    uv_mutex_destroy(&s->lookup_mutex);
}

static void identity_begin(conn *c, uint32_t gid)
{
    c->lookup_gid = gid;
    c->refs++; /* until its lookup is done, or it leaves the queue closed */
    identity_lookup(c);
}

static uint32_t uid_connections(const server *s, uint32_t uid);

/* Answers `msg` (request id 0) and closes once it is written; reads nothing more. */
static void conn_refuse(conn *c, int code, const char *msg)
{
    uint32_t idx = 0;

    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = false;
    c->close_flushed = true;
    c->active_ms = uv_now(c->srv->loop);
    if (!conn_slot_open(c, &idx)) {
        conn_close(c);
        return;
    }
    conn_answer_error(c, idx, 0, code, msg);
}

void on_connection(uv_stream_t *listener, int status)
{
    server *s = listener->data;
    conn *c;
    char msg[160];

    if (status < 0) {
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->srv = s;
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->conn_count++;
    uint32_t gid = 0;
    if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0 || peer_cred(c, &gid) != 0) {
        conn_close(c);
        return;
    }
    s->connections_total++;
    c->active_ms = uv_now(s->loop);
    if (s->stopping) {
        conn_refuse(c, BUDGET_EUNAVAILABLE, "budgetd is stopping");
        return;
    }
    if (s->conn_count > s->connections_max) {
        snprintf(msg, sizeof(msg), "too many connections: budgetd serves at most %u at once",
                 s->connections_max);
        if (refusal_to_log(s))
            log_warn("uid %u refused: %s", c->actor.uid, msg);
        s->connections_refused++;
        conn_refuse(c, BUDGET_EUNAVAILABLE, msg);
        return;
    }
    if (uid_connections(s, c->actor.uid) > s->connections_per_uid_max) {
        snprintf(msg, sizeof(msg), "too many connections from uid %u: at most %u at once",
                 c->actor.uid, s->connections_per_uid_max);
        if (refusal_to_log(s))
            log_warn("uid %u refused: %s", c->actor.uid, msg);
        s->connections_refused++;
        conn_refuse(c, BUDGET_EUNAVAILABLE, msg);
        return;
    }
    identity_begin(c, gid);
}

/* Connections open (and not being refused or closed) by `uid`, this one included. */
static uint32_t uid_connections(const server *s, uint32_t uid)
{
    uint32_t n = 0;
    for (const conn *o = s->conns; o; o = o->next)
        if (o->actor.uid == uid && !o->closing && !o->close_flushed)
            n++;
    return n;
}

void conn_close_when_flushed(conn *c)
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

void conn_sweep(server *s)
{
    uint64_t now = uv_now(s->loop);
    char msg[160];

    for (conn *c = s->conns; c; c = c->next) {
        if (c->closing)
            continue;
        if (c->close_flushed) {
            /* Its last answers had their time to be read. */
            if (c->refs == 0 && now - c->active_ms > s->frame_timeout_ms)
                conn_close(c);
            continue;
        }
        if (!c->identified) {
            /* Still waiting to learn who it is (identity_lookup): the idle timeout bounds that
             * too. */
            if (now - c->active_ms > s->idle_timeout_ms) {
                snprintf(msg, sizeof(msg),
                         "the user database did not say who uid %u is within %llu ms; closing "
                         "the connection",
                         c->actor.uid, (unsigned long long)s->idle_timeout_ms);
                log_warn("%s", msg);
                s->connections_timed_out++;
                conn_refuse(c, BUDGET_EUNAVAILABLE, msg);
            }
            continue;
        }
        if (c->reading && c->recv_len > 0 && c->frame_begun_ms != 0 &&
            now - c->frame_begun_ms > s->frame_timeout_ms) {
            snprintf(msg, sizeof(msg),
                     "a frame must arrive whole within %llu ms of its first byte; closing the "
                     "connection",
                     (unsigned long long)s->frame_timeout_ms);
            log_info("uid %u: %zu bytes of a frame in %llu ms: %s", c->actor.uid, c->recv_len,
                     (unsigned long long)(now - c->frame_begun_ms), msg);
            s->connections_timed_out++;
            conn_refuse(c, BUDGET_ETOO_LARGE, msg);
            continue;
        }
        /* Not read from because its answers fill its output: a client that sends and does not
         * read (its next frame, whole or not, waits in `recv` or in the socket, where neither
         * deadline above sees it). When none of its answers has been read for as long as a
         * frame may take, it is let go, its answers with it (it reads none, so a last answer
         * would not reach it). Answers still being made (refs) are not its doing. */
        if (!c->reading && !c->sub && c->refs == 0 && c->out_bytes > 0 && conn_output_full(c) &&
            now - c->active_ms > s->frame_timeout_ms) {
            log_info("uid %u: %zu bytes of answers unread for %llu ms while it sends requests; "
                     "closing the connection",
                     c->actor.uid, c->out_bytes, (unsigned long long)(now - c->active_ms));
            s->connections_timed_out++;
            conn_close(c);
            continue;
        }
        if (!c->sub && c->slot_count == 0 && c->refs == 0 && c->recv_len == 0 &&
            now - c->active_ms > s->idle_timeout_ms) {
            snprintf(msg, sizeof(msg), "idle for %llu ms; closing the connection",
                     (unsigned long long)s->idle_timeout_ms);
            log_info("uid %u: %s", c->actor.uid, msg);
            s->connections_timed_out++;
            conn_refuse(c, BUDGET_EUNAVAILABLE, msg);
        }
    }
}
