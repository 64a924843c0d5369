/*
 * What the server's modules share: the server, its connections, batches and jobs.
 * conn.c: connections, frames, answer order. commit.c: group commit and the writer thread.
 * ops.c: the op table and read jobs. server.c: start, listen, stop.
 * Everything here runs on the loop thread unless its comment says otherwise.
 */
#ifndef BUDGET_SERVER_INTERNAL_H
#define BUDGET_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>
#include <uv.h>

#include "budget/limits.h"
#include "budget/protocol.h"
#include "proto/validate.h"
#include "access.h"
#include "ledger.h"
#include "request.h"
#include "store.h"

#define RECV_BYTES_INITIAL (16u * 1024u)
#define RECV_BYTES_MAX (BUDGET_FRAME_HEADER_BYTES + BUDGET_FRAME_BYTES_MAX)

typedef struct server server;
typedef struct conn conn;
typedef struct identity_job identity_job; /* conn.c: a lookup of a name and groups */

/* Threads that look up connecting users' names and groups, so at most this many lookups run
 * at once (a directory that hangs holds up these threads and nothing else). */
#define LOOKUP_THREADS 2
/* Worker jobs handed to libuv's pool (4 threads) at once; the others wait their turn, taken
 * fairly between uids (worker_queue). */
#define WORKER_JOBS_ON_POOL_MAX 4

/* One request's place in its connection's answer order. */
typedef struct {
    char *frame; /* the whole response frame (header included), malloc'd; NULL until ready */
    size_t size;
    size_t cost; /* the memory it holds (frame_cost) */
} slot;

struct conn {
    uv_pipe_t pipe;
    server *srv;
    ledger_actor actor;
    access_identity identity; /* uid and groups, from the kernel and the group database */
    access_grants grants;     /* what the identity holds under srv->access */
    uint64_t active_ms;       /* loop time of the last byte read or answer written */
    uint64_t frame_begun_ms;  /* loop time the unfinished frame in `recv` began; 0: none */
    uint8_t *recv;
    size_t recv_len, recv_cap;
    slot slots[BUDGET_CONN_INFLIGHT_MAX];
    uint32_t slot_head, slot_count;
    size_t out_bytes;  /* handed to uv_write and not yet written */
    size_t held_bytes; /* answers ready but held behind an earlier one still being made */
    /* The memory those answers and pushes really hold: their allocations and write requests,
     * not only their bytes. The output limit is counted on it. */
    size_t out_cost;
    uint32_t refs;       /* batch entries and jobs that will answer into this connection */
    bool reading;        /* uv_read_start is in effect */
    bool closing;        /* uv_close called */
    bool closed;         /* close callback ran; freed when refs reach 0 */
    bool close_flushed;  /* close once every answer is written (unframeable stream) */
    bool identified;     /* name and groups looked up: frames may be read and handled */
    uint32_t lookup_gid; /* the primary group SO_PEERCRED gave, for the lookup */
    conn *lookup_next;   /* in server.lookups_waiting, or in a lookup's list */
    /* Writes read from this connection and not yet answered. A read that follows them waits
     * until they are answered, so a client sees its own writes (read-your-writes). */
    uint32_t writes_waiting;
    /* Worker jobs that will answer into this connection; each may answer up to 1 MiB, so
     * they count against its output limit before they are done. */
    uint32_t jobs_running;
    /* In server.ready: it may have frames to handle or reading to start (conn_wake). */
    bool ready;
    conn *ready_next;
    struct subscription *sub; /* subscribe.c: set once the connection subscribed */
    conn *prev, *next;
};

/* A write waiting for, or riding in, a group commit. */
typedef struct {
    conn *c;
    uint32_t slot;
    uint64_t req_id;
    ledger_cmd cmd;
    bool has_expect_head;
    uint64_t expect_head;
    bool dup;        /* a retry of an event still in flight: answered with its result */
    ledger_event ev; /* the event made (or, for dup, the original's) */
    uint8_t hash[BUDGET_HASH_BYTES];
    size_t offset; /* of the encoded event in the batch's bytes */
    size_t size;
} batch_entry;

typedef struct {
    batch_entry *entries;
    size_t count, cap;
    uint8_t *bytes;
    size_t bytes_len, bytes_cap;
    store_item *items;
    size_t items_count;
    int rc;
    bool sync_failed;
} batch;

struct server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    uv_signal_t sigterm, sigint;
    uv_async_t writer_async;
    /* Once per loop turn, after the reads of that turn: the ready connections handle their
     * frames, then the pending batch goes to the writer (server.c on_step). */
    uv_check_t step;
    /* Active while connections are ready, so the loop does not block before the step. */
    uv_idle_t ready_idle;
    const char *socket_path;
    store *store;

    ledger *committed;
    uint64_t committed_head;
    uint8_t committed_hash[BUDGET_HASH_BYTES];
    ledger *speculative;
    uint64_t spec_head;
    uint8_t spec_hash[BUDGET_HASH_BYTES];

    batch batches[2];
    batch *pending;  /* filling on the loop thread */
    batch *inflight; /* with the writer thread, or NULL */

    uv_thread_t writer;
    uv_mutex_t writer_mutex;
    uv_cond_t writer_cond;
    batch *writer_job;
    bool writer_done;
    bool writer_stop;

    conn *conns;
    uint32_t conn_count;
    uint32_t jobs_running;
    /* Connections woken (conn_wake) and not yet run (conn_run_ready), oldest first; each holds
     * a reference while it is here. Answers only queue bytes and wake: frames are handled
     * only by conn_run_ready, never from inside an answer. */
    conn *ready, *ready_tail;
    bool running_ready; /* inside conn_run_ready */
    bool stopping;
    int exit_status;
    uint64_t started_ms; /* monotonic (uv_hrtime), for uptime: a clock set back moves nothing */

    /* counters for stats */
    uint64_t requests, errors, batches_committed, batch_events_max, commits_failed;
    uint64_t connections_total, connections_refused;

    /* subscribe.c: live subscriptions, and those waiting for a catch-up job */
    struct subscription *subs, *subs_waiting;
    uint32_t subs_count, sub_jobs_running;
    uint32_t subscriptions_per_uid_max;
    uint64_t sub_fallbacks; /* times a live subscriber fell back to catching up */
    /* audit_ops.c */
    bool backup_running;

    /* Access and connection limits (server.c, conn.c) */
    uv_signal_t sighup; /* reloads the access file */
    uv_timer_t sweep;   /* closes idle connections and frames past their deadline */
    access_rules *access;
    const char *access_path; /* NULL: no access file, every identity holds every role */
    bool socket_activated;   /* the listener came from systemd: never unlinked here */
    uint32_t connections_max, connections_per_uid_max;
    uint64_t idle_timeout_ms, frame_timeout_ms;
    uint64_t connections_timed_out; /* idle, or a frame past its deadline */
    void (*lookup_hook)(uint32_t uid);
    /* conn.c: lookups of names and groups running, and connections waiting for a turn */
    identity_job *lookups;
    conn *lookups_waiting, *lookups_waiting_tail;
    /* conn.c: the threads that run those lookups (never libuv's pool, where long reads wait),
     * what they are to do and what they did (both under lookup_mutex), and the loop's wakeup */
    uv_thread_t lookup_threads[LOOKUP_THREADS];
    uint32_t lookup_threads_count;
    uv_mutex_t lookup_mutex;
    uv_cond_t lookup_cond;
    identity_job *lookup_todo, *lookup_done;
    bool lookup_stop;
    uv_async_t lookup_async;
    /* ops.c: worker jobs waiting for a turn on the pool, and those on it (worker_queue) */
    struct worker_job *jobs_waiting, *jobs_waiting_tail, *jobs_on_pool;
    uint32_t jobs_on_pool_count;
    void (*job_hook)(void);
    /* ops.c: refusals logged in the second that began at refusals_window_ms, and not logged */
    uint64_t refusals_window_ms;
    uint32_t refusals_logged;
    uint64_t refusals_unlogged;
};

/* A response under construction: the frame header is patched in when it is finished. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} resp;

/*
 * A request answered on a worker thread (libuv's pool): long reads, checkpoints, backups.
 * A job's own struct embeds this first. The connection is kept alive until the answer is in.
 */
typedef struct worker_job worker_job;
struct worker_job {
    uv_work_t work;
    server *srv;
    conn *c;
    uint32_t uid;     /* the connection's, for the per-uid bound and the fair turn */
    worker_job *next; /* in server.jobs_waiting or server.jobs_on_pool */
    uint32_t slot;
    uint64_t req_id;
    /* On a worker thread: makes the whole answer in `answer` (resp_begin or resp_error_into;
     * resp_finish is done by the caller). Touches no loop-thread state. */
    void (*run)(worker_job *j, resp *answer);
    /* On the loop thread, after the answer is handed to the connection; may be NULL. */
    void (*finished)(worker_job *j);
    resp answer;
};

/* The wall clock in ms since 1970, moved by server_config.clock_offset_ms. */
uint64_t now_ms(void);

/* conn.c */
void resp_begin(resp *r, uint64_t req_id, bool ok);
void resp_error_into(resp *r, uint64_t req_id, int code, const char *message);
void resp_finish(resp *r, uint64_t req_id);
/* Hands a finished response to slot `idx`; written when every earlier answer is. */
void conn_answer(conn *c, uint32_t idx, resp *r, uint64_t req_id);
void conn_answer_error(conn *c, uint32_t idx, uint64_t req_id, int code, const char *msg);
/* A frame built elsewhere (a worker job) for slot `idx`; takes ownership of `frame`. */
void conn_answer_frame(conn *c, uint32_t idx, char *frame, size_t size);
/* Writes frames that answer no slot (subscription pushes) after everything already written.
 * Only while no answer waits (slot_count == 0). Takes ownership of `frames`; 0, or -1 when
 * the connection is closing or the write failed (the connection is then closed). */
int conn_push(conn *c, char *frames, size_t size);
void conn_unref(conn *c);
/* A write of `c` was answered: drops its reference and wakes it, so that reads queued behind
 * the write go on at the next step. */
void conn_write_answered(conn *c);
/* Handles the frames of every connection woken since the last call, as far as each one's
 * limits allow, and starts or stops its reading. The only place frames are handled. */
void conn_run_ready(server *s);
void conn_close(conn *c);
/* Reads nothing more and closes once every answer is written; the sweep closes a client that
 * leaves them unread past the frame deadline. */
void conn_close_when_flushed(conn *c);
void on_connection(uv_stream_t *listener, int status);
/* Closes, each with an error frame and a log line, the connections idle for longer than
 * idle_timeout_ms (not subscribers, nor those waiting for an answer) and those whose
 * unfinished frame began more than frame_timeout_ms ago; and, with a log line only, those
 * not read from for their full output when none of it was read for frame_timeout_ms. Run by
 * the server's sweep timer. */
void conn_sweep(server *s);

/* commit.c */
void admit_write(server *s, const batch_entry *in);
void on_writer_done(uv_async_t *h);
/* Hands the pending batch to the writer thread when it is idle and the batch is not empty. */
void launch_commit(server *s);
void writer_main(void *arg);
void batch_free(batch *b);

/* Starts the lookup threads (0, or -1: none could be started); lets the loop end once no
 * lookup runs (lookups_close, from maybe_finish); stops and joins them after the loop. */
int lookups_start(server *s);
void lookups_close(server *s);
void lookups_join(server *s);

/* ops.c */
/* Queues `j` (calloc'd by the caller, `run` set) to answer slot `idx`; frees it when done.
 * At most WORKER_JOBS_ON_POOL_MAX run at once; the others wait, and the next to run is the
 * oldest of a uid with the fewest running. Returns 0; or -1 past BUDGET_READ_JOBS_MAX jobs
 * running or waiting, or BUDGET_READ_JOBS_PER_UID_MAX of the connection's uid: then the request
 * is answered `unavailable` at once and `j` is freed. */
int worker_queue(conn *c, uint32_t idx, uint64_t req_id, worker_job *j);
/* Runs the request `env` (read by budget_parse_request; `args` is its args decoded, or NULL). */
void dispatch(conn *c, uint32_t idx, const budget_envelope *env, const msgpack_object *args);
/* True when a refusal may be logged in full now (at most 10 a second); else it is counted. */
bool refusal_to_log(server *s);
/* Logs how many refusals were not logged, once their second is over (or at once: `force`). */
void refusals_log_flush(server *s, bool force);

/* server.c */
void maybe_finish(server *s);
void server_stop(server *s, int status);

#endif
