/* The audit ops (audit_ops.h): signed checkpoints on worker threads, and backups streamed
 * to the client. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "audit_ops.h"
#include "budget/errors.h"
#include "checkpoint.h"
#include "clock.h"
#include "log.h"
#include "proto/frame.h"
#include "request.h"

typedef struct {
    job_t base;
    store *store;
    uint64_t seq;                    /* the committed head when asked */
    uint8_t hash[BUDGET_HASH_BYTES]; /* and its hash */
} audit_job;

static void pack_key_bin(msgpack_packer *pk, const char *key, const uint8_t *bytes, size_t n)
{
    pack_cstr(pk, key);
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, bytes, n);
}

/* ---- checkpoint ------------------------------------------------------------------------- */

static void checkpoint_work(audit_job *j, resp_t *r)
{
    checkpoint_key key;
    uint8_t signature[CHECKPOINT_SIGNATURE_BYTES];
    char why[PATH_MAX + 200] = "the data folder is unknown";
    bool created = false;
    const char *dir = store_folder(j->store);

    if (!dir || checkpoint_key_load(dir, true, &key, &created, why, sizeof(why)) != 0) {
        log_error("checkpoint refused: %s", why);
        resp_error_into(r, j->base.req_id, BUDGET_EUNAVAILABLE, why);
        return;
    }
    if (created)
        log_warn("the signing key was missing: made a new one in %s/%s", dir, CHECKPOINT_KEY_FILE);
    uint64_t ts = clock_now_ms();
    checkpoint_sign(&key, j->seq, j->hash, ts, signature);
    resp_begin(r, j->base.req_id, true);
    msgpack_pack_map(&r->pk, 5);
    pack_key_uint(&r->pk, "seq", j->seq);
    pack_key_bin(&r->pk, "hash", j->hash, BUDGET_HASH_BYTES);
    pack_key_uint(&r->pk, "ts", ts);
    pack_key_bin(&r->pk, "public_key", key.public_key, sizeof(key.public_key));
    pack_key_bin(&r->pk, "signature", signature, sizeof(signature));
    sodium_memzero(&key, sizeof(key));
}

/* ---- backup ----------------------------------------------------------------------------- */

/*
 * A backup streams a compacted copy of the store to its client; the daemon writes no file.
 * A thread of its own runs store_backup_fd into a pipe; the loop reads the pipe into chunks of
 * BACKUP_CHUNK_BYTES and writes each as a frame on the connection, ahead of the backup's
 * answer. At most BACKUP_WRITES_MAX chunk frames wait to be written: past that the pipe is not
 * read, the pipe fills, and the copy waits for the client. Memory stays bounded whatever the
 * size of the store. Then the answer: the committed head when it was asked (the copy holds at
 * least that), the size, and a checksum of every byte sent, so that a client can tell a
 * truncated or damaged copy.
 */
typedef struct backup_stream backup_stream;

struct backup_stream {
    audit_t *audit;
    conn_t *c;
    uint32_t slot;
    uint64_t req_id;
    uint64_t seq;                    /* the committed head when asked */
    uint8_t hash[BUDGET_HASH_BYTES]; /* and its hash */
    uint64_t started_ms;             /* clock_now_ms() when asked */

    /* The copy thread: writes the copy into sink_fd, closes it, then signals `copied`. */
    uv_thread_t thread;
    int sink_fd;
    int copy_rc; /* set by the thread before `copied`; read on the loop after the join */
    char copy_why[200];

    uv_pipe_t source; /* the pipe's read end, on the loop */
    uv_async_t copied;
    uv_timer_t watch; /* gives up when the client stops reading, or the daemon stops */
    uint32_t handles_open;
    bool thread_done, source_done, source_reading, answered;

    uint8_t chunk[BACKUP_CHUNK_BYTES];
    size_t chunk_len;
    uint32_t writes;     /* chunk frames handed to the connection, not yet written */
    uint64_t written_ms; /* loop time the last chunk frame was written (or the start) */
    uint64_t bytes;      /* sent so far */
    crypto_generichash_state checksum;
    int fail_code; /* 0, or why the stream is given up: then only the error follows */
    char fail_why[200];
};

static void backup_try_finish(backup_stream *b);
static void backup_read_more(backup_stream *b);

static void backup_handle_closed(uv_handle_t *h)
{
    backup_stream *b = h->data;
    if (--b->handles_open > 0)
        return;
    audit_t *a = b->audit;
    conn_unref(b->c);
    a->backup_running = false;
    free(b);
    job_count_end(a->jobs);
}

static void close_source(backup_stream *b)
{
    b->source_done = true;
    if (!uv_is_closing((uv_handle_t *)&b->source))
        uv_close((uv_handle_t *)&b->source, backup_handle_closed);
}

/* Gives the stream up: nothing more is sent but the error. Closing the pipe's read end makes
 * the copy thread's next write fail (EPIPE), which ends the copy. */
static void backup_fail(backup_stream *b, int code, const char *why)
{
    if (b->fail_code == 0) {
        b->fail_code = code;
        snprintf(b->fail_why, sizeof(b->fail_why), "%s", why);
    }
    close_source(b);
    backup_try_finish(b);
}

static void on_chunk_written(void *arg, int status)
{
    backup_stream *b = arg;

    assert(b->writes > 0);
    b->writes--;
    if (status < 0) {
        backup_fail(b, BUDGET_EUNAVAILABLE, "the client went away");
        return;
    }
    b->written_ms = uv_now(b->audit->loop);
    if (!b->source_done && !b->source_reading && b->writes < BACKUP_WRITES_MAX)
        backup_read_more(b);
    backup_try_finish(b);
}

/* Sends what is in `chunk` as one frame: {"id", "ok": true, "chunk": bin}. */
static void send_chunk(backup_stream *b)
{
    static const char header[BUDGET_FRAME_HEADER_BYTES] = {0};
    msgpack_sbuffer sb;
    msgpack_packer pk;

    if (conn_closing(b->c)) {
        backup_fail(b, BUDGET_EUNAVAILABLE, "the client went away");
        return;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&sb, header, sizeof(header));
    msgpack_pack_map(&pk, 3);
    pack_key_uint(&pk, "id", b->req_id);
    pack_cstr(&pk, "ok");
    msgpack_pack_true(&pk);
    pack_key_bin(&pk, "chunk", b->chunk, b->chunk_len);
    budget_frame_header((uint8_t *)sb.data, (uint32_t)(sb.size - BUDGET_FRAME_HEADER_BYTES));
    crypto_generichash_update(&b->checksum, b->chunk, b->chunk_len);
    b->bytes += b->chunk_len;
    b->chunk_len = 0;
    size_t size = sb.size;
    char *frame = msgpack_sbuffer_release(&sb);
    if (!frame) {
        backup_fail(b, BUDGET_EUNAVAILABLE, "out of memory");
        return;
    }
    b->writes++;
    if (conn_write_ahead(b->c, b->slot, frame, size, on_chunk_written, b) != 0) {
        b->writes--;
        backup_fail(b, BUDGET_EUNAVAILABLE, "the client went away");
    }
}

static void on_source_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    backup_stream *b = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)b->chunk + b->chunk_len,
                       (unsigned int)(BACKUP_CHUNK_BYTES - b->chunk_len));
}

static void on_source_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    backup_stream *b = h->data;
    (void)buf;
    if (nread == UV_EOF) {
        if (b->chunk_len > 0)
            send_chunk(b);
        close_source(b);
        backup_try_finish(b);
        return;
    }
    if (nread < 0) {
        backup_fail(b, BUDGET_EUNAVAILABLE, "the copy could not be read");
        return;
    }
    b->chunk_len += (size_t)nread;
    if (b->chunk_len < BACKUP_CHUNK_BYTES)
        return;
    send_chunk(b);
    if (!b->source_done && b->writes >= BACKUP_WRITES_MAX) {
        uv_read_stop((uv_stream_t *)&b->source);
        b->source_reading = false;
    }
}

static void backup_read_more(backup_stream *b)
{
    if (uv_read_start((uv_stream_t *)&b->source, on_source_alloc, on_source_read) == 0)
        b->source_reading = true;
    else
        backup_fail(b, BUDGET_EUNAVAILABLE, "the copy could not be read");
}

/* The copy thread. */
static void copy_main(void *arg)
{
    backup_stream *b = arg;
    b->copy_rc = store_backup_fd(b->audit->store, b->sink_fd, b->copy_why, sizeof(b->copy_why));
    close(b->sink_fd);
    uv_async_send(&b->copied);
}

static void on_copied(uv_async_t *h)
{
    backup_stream *b = h->data;
    uv_thread_join(&b->thread);
    b->thread_done = true;
    uv_close((uv_handle_t *)&b->copied, backup_handle_closed);
    backup_try_finish(b);
}

/* Gives the stream up when the daemon stops, or when a chunk frame has waited unread for
 * longer than the frame deadline: the copy holds the store's gate, and a growth of the map
 * (so every write that needs it) waits for the copy to end. */
static void on_watch(uv_timer_t *h)
{
    backup_stream *b = h->data;
    audit_t *a = b->audit;
    uint64_t now = uv_now(a->loop);

    if (b->answered || b->fail_code != 0)
        return;
    if (*a->stopping) {
        backup_fail(b, BUDGET_EUNAVAILABLE, "budgetd is stopping");
    } else if (b->writes > 0 && now - b->written_ms > a->frame_timeout_ms) {
        log_info("uid %u: a backup chunk was left unread for %llu ms; the backup is given up "
                 "and the connection closed",
                 conn_actor(b->c)->uid, (unsigned long long)(now - b->written_ms));
        backup_fail(b, BUDGET_EUNAVAILABLE, "the backup's chunks were left unread");
        conn_close(b->c);
    }
}

/* Once the copy thread has ended, the pipe is drained or closed and every chunk frame is
 * written: the answer, then the handles close and the stream is freed. */
static void backup_try_finish(backup_stream *b)
{
    resp_t r;
    uint8_t checksum[BACKUP_CHECKSUM_BYTES];

    if (b->answered || !b->thread_done || !b->source_done || b->writes > 0)
        return;
    b->answered = true;
    if (b->fail_code == 0 && b->copy_rc != 0) {
        b->fail_code = BUDGET_EUNAVAILABLE;
        snprintf(b->fail_why, sizeof(b->fail_why), "%s", b->copy_why);
    }
    if (b->fail_code != 0) {
        log_warn("backup for uid %u failed after %llu bytes: %s", conn_actor(b->c)->uid,
                 (unsigned long long)b->bytes, b->fail_why);
        conn_answer_error(b->c, b->slot, b->req_id, b->fail_code, b->fail_why);
    } else {
        crypto_generichash_final(&b->checksum, checksum, sizeof(checksum));
        log_info("backup for uid %u: %llu bytes sent, events up to seq %llu at least",
                 conn_actor(b->c)->uid, (unsigned long long)b->bytes, (unsigned long long)b->seq);
        resp_begin(&r, b->req_id, true);
        msgpack_pack_map(&r.pk, 5);
        pack_key_uint(&r.pk, "seq", b->seq);
        pack_key_bin(&r.pk, "hash", b->hash, BUDGET_HASH_BYTES);
        pack_key_uint(&r.pk, "bytes", b->bytes);
        pack_key_bin(&r.pk, "checksum", checksum, sizeof(checksum));
        pack_key_uint(&r.pk, "ms", clock_now_ms() - b->started_ms);
        conn_answer(b->c, b->slot, &r, b->req_id);
    }
    uv_close((uv_handle_t *)&b->watch, backup_handle_closed);
}

static void free_unstarted(uv_handle_t *h)
{
    free(h->data);
}

/* Starts the copy thread and the stream; from then on the stream answers the request, with
 * the copy or an error. 0, or -1 with `why` and nothing started. */
static int backup_start(audit_t *a, conn_t *c, uint32_t idx, uint64_t req_id, char *why,
                        size_t why_size)
{
    int fds[2];
    /* The checksum state asks for 64-byte alignment, which calloc does not promise. */
    size_t size = (sizeof(backup_stream) + 63u) & ~(size_t)63u;
    backup_stream *b = aligned_alloc(64, size);

    assert(!a->backup_running && conn_is_oldest(c, idx));
    if (b)
        memset(b, 0, size);
    if (!b) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(why, why_size, "cannot make a pipe: %s", strerror(errno));
        free(b);
        return -1;
    }
    fcntl(fds[1], F_SETPIPE_SZ, (int)BACKUP_CHUNK_BYTES); /* fewer wake-ups; best effort */
    uv_pipe_init(a->loop, &b->source, 0);
    int rc = uv_pipe_open(&b->source, fds[0]);
    if (rc != 0) {
        snprintf(why, why_size, "cannot read a pipe: %s", uv_strerror(rc));
        close(fds[0]);
        close(fds[1]);
        b->source.data = b;
        uv_close((uv_handle_t *)&b->source, free_unstarted);
        return -1;
    }
    b->audit = a;
    b->c = c;
    b->slot = idx;
    b->req_id = req_id;
    b->seq = commit_head(a->commit);
    memcpy(b->hash, commit_head_hash(a->commit), sizeof(b->hash));
    b->started_ms = clock_now_ms();
    b->written_ms = uv_now(a->loop);
    b->sink_fd = fds[1];
    crypto_generichash_init(&b->checksum, NULL, 0, BACKUP_CHECKSUM_BYTES);
    b->source.data = b;
    uv_async_init(a->loop, &b->copied, on_copied);
    b->copied.data = b;
    uv_timer_init(a->loop, &b->watch);
    b->watch.data = b;
    b->handles_open = 3;
    conn_ref(c);
    job_count_begin(a->jobs);
    a->backup_running = true;
    uint64_t tick = a->frame_timeout_ms / 4;
    tick = tick < 10 ? 10 : tick > 1000 ? 1000 : tick;
    uv_timer_start(&b->watch, on_watch, tick, tick);
    rc = uv_thread_create(&b->thread, copy_main, b);
    if (rc != 0) {
        close(b->sink_fd);
        b->thread_done = true;
        uv_close((uv_handle_t *)&b->copied, backup_handle_closed);
        snprintf(why, why_size, "cannot start the copy: %s", uv_strerror(rc));
        backup_fail(b, BUDGET_EUNAVAILABLE, why);
        return 0;
    }
    backup_read_more(b);
    return 0;
}

/* ---- jobs --------------------------------------------------------------------------------- */

static void audit_run(job_t *w, resp_t *answer)
{
    checkpoint_work((audit_job *)w, answer);
}

/* ---- ops ---------------------------------------------------------------------------------- */

void audit_checkpoint(audit_t *a, conn_t *c, uint32_t idx, uint64_t req_id,
                      const msgpack_object *args)
{
    audit_job *j;

    if (args && args->via.map.size != 0) {
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST, "checkpoint takes no args");
        return;
    }
    if (commit_head(a->commit) == 0) {
        conn_answer_error(c, idx, req_id, BUDGET_ENOT_FOUND,
                          "the log is empty: there is nothing to sign yet");
        return;
    }
    j = calloc(1, sizeof(*j));
    if (!j) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
        return;
    }
    j->store = a->store;
    j->seq = commit_head(a->commit);
    memcpy(j->hash, commit_head_hash(a->commit), sizeof(j->hash));
    j->base.run = audit_run;
    job_queue(a->jobs, c, idx, req_id, &j->base);
}

/* True when the args map has the key `key`. */
static bool has_key(const msgpack_object *args, const char *key)
{
    size_t n = strlen(key);
    for (uint32_t i = 0; args && i < args->via.map.size; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return true;
    }
    return false;
}

void audit_backup(audit_t *a, conn_t *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    char why[160];

    if (args && args->via.map.size != 0) {
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST,
                          has_key(args, "dir")
                              ? "backup takes no dir: budgetd writes no file for a backup; it "
                                "sends the copy on this connection and the client writes it "
                                "(budgetctl backup DIR)"
                              : "backup takes no args");
        return;
    }
    if (a->backup_running || *a->stopping) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE,
                          *a->stopping ? "budgetd is stopping"
                                       : "a backup is running; retry later");
        return;
    }
    if (!conn_is_oldest(c, idx)) {
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST,
                          "a backup sends its copy ahead of its answer: send it once every "
                          "earlier request on the connection is answered");
        return;
    }
    if (a->jobs->running >= BUDGET_READ_JOBS_MAX) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE,
                          "too many long reads are running; retry shortly");
        return;
    }
    if (backup_start(a, c, idx, req_id, why, sizeof(why)) != 0) {
        log_warn("backup for uid %u not started: %s", conn_actor(c)->uid, why);
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, why);
    }
}
