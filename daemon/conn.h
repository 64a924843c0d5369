/*
 * Connections: accepting them, learning who they are (lookup.h), reading frames, and
 * answering each connection's requests in the order it sent them. The bottom of the server's
 * layers: it knows nothing of ops, commits or subscriptions, and tells the layer above through
 * conn_hooks_t.
 *
 * Answers flow one way. An answer (conn_answer*) only queues bytes and marks its connection as
 * having work (woken); frames are handled only by conn_run_ready, which the owner calls from
 * the loop's step and which the end of a read callback runs, never from inside an answer. So
 * nothing a layer above does while answering can re-enter reading or dispatch.
 *
 * Loop thread only.
 */
#ifndef BUDGET_CONN_H
#define BUDGET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "access.h"
#include "budget/limits.h"
#include "ledger.h"
#include "lookup.h"
#include "proto/validate.h"
#include "readshare.h"
#include "refusal.h"
#include "resp.h"

#define CONN_RECV_BYTES_INITIAL (16u * 1024u)
#define CONN_RECV_BYTES_MAX (BUDGET_FRAME_HEADER_BYTES + BUDGET_FRAME_BYTES_MAX)

/* A connection; its fields are conn.c's. */
typedef struct conn conn_t;

/* What the layer above is told; `owner` is conn_hub_t.owner. */
typedef struct {
    /* A whole frame, read once by budget_parse_request (`rc` and `why` are what it said, `env`
     * what it read). Slot `idx` is open for its answer, which the owner must give (now or
     * later). Called only from conn_run_ready. */
    void (*frame)(void *owner, conn_t *c, uint32_t idx, const budget_envelope *env, int rc,
                  const char *why);
    /* `c` wrote something, or its last answer was handed to the socket: its subscription, if it
     * has one (conn_sub), may go on. */
    void (*writable)(void *owner, conn_t *c);
    /* `c` is closing: its subscription must send nothing more. */
    void (*closing)(void *owner, conn_t *c);
    /* `c` is being freed: its subscription too. */
    void (*freed)(void *owner, conn_t *c);
    /* A connection closed or a lookup ended: the owner may be done (stopping). */
    void (*quiet)(void *owner);
    /* Writes are waiting for the writer or being committed: reads are held to their share. */
    bool (*writes_waiting)(void *owner);
} conn_hooks_t;

/* Every connection, and what bounds them. */
typedef struct {
    uv_loop_t *loop;
    conn_hooks_t hooks;
    void *owner;
    const bool *stopping; /* the owner's: once set, new connections are refused */
    refusal_log_t *refusals;
    /* Who may do what; owned here (conn_hub_set_access replaces them). */
    access_rules *access;
    uint32_t connections_max, connections_per_uid_max;
    uint64_t idle_timeout_ms, frame_timeout_ms;

    conn_t *conns;
    uint32_t count;
    /* Woken connections (conn_wake) not yet run (conn_run_ready), oldest first; each holds a
     * reference while it is here. */
    conn_t *ready, *ready_tail;
    bool running_ready; /* inside conn_run_ready */
    /* Between conn_hub_cork and _uncork: answers are held, and the connections that got
     * them listed (each holding a reference), to be written one write per connection. */
    bool corked;
    conn_t *corked_list;
    /* Active while connections are ready or deferred, so the loop does not block before the
     * step. */
    uv_idle_t ready_idle;
    /*
     * The loop thread's time for reads (every frame but a write) in one turn: once reads have
     * taken read_slice_ns since the turn began (conn_turn_begin), a connection's next read
     * waits, with every frame after it, for the next turn (the first read of a turn always
     * runs). Meanwhile commits are answered and the writes of other connections are read and
     * launched, so a client reading without pause slows the appends only by its slice.
     */
    uint64_t read_slice_ns;
    uint64_t turn_read_ns; /* reads' time since the turn began */
    uint32_t turn_reads;   /* reads handled since the turn began */
    /*
     * The slice alone bounds a turn, not the loop: with reads waiting, the next turn follows at
     * once. So while writes wait (hooks.writes_waiting), reads may take read_account.share_pct
     * percent of the time that passes (1..100; 100: no bound), kept as an account (readshare.h): a
     * turn that leaves reads waiting with the account in debt is followed by a rest, in which no
     * read runs, until the time passing pays the debt. Meanwhile commits are answered and
     * writes read and launched. rest_timer ends the rest; so does the end of the writes.
     */
    read_account read_account; /* share_pct: the share, 1..100 */
    bool resting;
    uint64_t rest_until_ns;
    uv_timer_t rest_timer;
    /* Connections whose next frame is a read that waits for the next turn, oldest first;
     * each holds a reference while it is here, and none is closing. */
    conn_t *deferred, *deferred_tail;
    lookup_pool_t lookups;

    /* counters for stats */
    uint64_t requests, errors;
    uint64_t answers, answer_writes; /* answers written, and the writes that took them */
    uint64_t reads_deferred;         /* reads that waited for a later turn */
    uint64_t read_rests;             /* rests of the reads while writes waited */
    uint64_t connections_total, connections_refused, connections_timed_out;
} conn_hub_t;

/* Sets up the hub (hooks, limits and `access` filled in by the caller) and starts the lookup
 * threads: 0, or -1 when none could start (connections are then refused). */
int conn_hub_start(conn_hub_t *h, uv_loop_t *loop);
/* The listener's connection callback; listener->data is the hub. */
void conn_on_connection(uv_stream_t *listener, int status);
/* Handles the frames of every woken connection, as far as each one's limits allow, and
 * starts or stops its reading. The only place frames are handled; never called from inside an
 * answer (it asserts so). */
void conn_run_ready(conn_hub_t *h);
/* Holds every answer made until conn_hub_uncork, which writes each connection's answers in
 * one write: a group commit answers many writes of one connection at once, and a write
 * syscall per answer costs the loop thread more than the answers do. Not nested. */
void conn_hub_cork(conn_hub_t *h);
void conn_hub_uncork(conn_hub_t *h);
/* A new turn of the loop, after the step's commit launch: the reads' time is counted from
 * zero, and the deferred connections are made ready (to be run by conn_run_ready). True when
 * there were any. While the reads rest (read_account), it does nothing and is false; a turn
 * that would begin with reads waiting, writes waiting and the reads' account in debt begins a
 * rest instead. */
bool conn_turn_begin(conn_hub_t *h);
/* Stopping: each connection reads nothing more and closes once its answers are written. */
void conn_hub_close_all(conn_hub_t *h);
/* True once no connection is left and no lookup runs. */
bool conn_hub_empty(const conn_hub_t *h);
/* Lets the loop end (no connection is left); after the loop, conn_hub_join. */
void conn_hub_close(conn_hub_t *h);
void conn_hub_join(conn_hub_t *h);
/* New access rules: every connection's grants are resolved again; the old rules are freed. */
void conn_hub_set_access(conn_hub_t *h, access_rules *fresh);
/* Closes, each with an error frame and a log line, the connections idle for longer than
 * idle_timeout_ms (not subscribers, nor those waiting for an answer) and those whose
 * unfinished frame began more than frame_timeout_ms ago; and, with a log line only, those
 * not read from for their full output when none of it was read for frame_timeout_ms. Run by
 * the owner's sweep timer. */
void conn_sweep(conn_hub_t *h);

/* ---- answers ---- */

/* Hands a finished response to slot `idx`; written when every earlier answer is. */
void conn_answer(conn_t *c, uint32_t idx, resp_t *r, uint64_t req_id);
void conn_answer_error(conn_t *c, uint32_t idx, uint64_t req_id, int code, const char *msg);
/* A frame built elsewhere for slot `idx`; takes ownership of `frame`. */
void conn_answer_frame(conn_t *c, uint32_t idx, char *frame, size_t size);
/* Writes frames that answer no slot (subscription pushes) after everything already written.
 * Only while no answer is owed (conn_owes_answers false). Takes ownership of `frames`; 0, or -1
 * when the connection is closing or the write failed (the connection is then closed). */
int conn_push(conn_t *c, char *frames, size_t size);
/* Writes `frame` (taken) ahead of slot `idx`'s answer, which must be the oldest owed: a
 * backup's chunks. `done(arg, status)` runs once it is written (status < 0: it failed). Counts
 * in conn_out_bytes. 0, or -1 (nothing written, `frame` freed). */
int conn_write_ahead(conn_t *c, uint32_t idx, char *frame, size_t size,
                     void (*done)(void *arg, int status), void *arg);

/* ---- lifetime ---- */

void conn_ref(conn_t *c);
void conn_unref(conn_t *c);
void conn_close(conn_t *c);
/* Reads nothing more and closes once every answer is written; the sweep closes a client that
 * leaves them unread past the frame deadline. */
void conn_close_when_flushed(conn_t *c);
/* A write of `c` begins: it holds a reference, and reads sent after it wait until it is
 * answered (read-your-writes). conn_write_answered ends it, and wakes `c`. */
void conn_write_begin(conn_t *c);
void conn_write_answered(conn_t *c);
/* A worker job will answer slot `idx`: it holds a reference and a frame's worth of output room.
 * conn_job_answer hands its frame to the slot and gives the room back; the caller unrefs. */
void conn_job_begin(conn_t *c);
void conn_job_answer(conn_t *c, uint32_t idx, char *frame, size_t size);

/* ---- what others may read ---- */

conn_hub_t *conn_hub(const conn_t *c);
const ledger_actor *conn_actor(const conn_t *c);
const access_grants *conn_grants(const conn_t *c);
/* uv_close was called on it. */
bool conn_closing(const conn_t *c);
/* Closing, or closing once its answers are written: it takes nothing more. */
bool conn_ending(const conn_t *c);
/* Answers owed, made or not. */
bool conn_owes_answers(const conn_t *c);
/* `idx` is the oldest answer owed. */
bool conn_is_oldest(const conn_t *c, uint32_t idx);
/* Bytes handed to the socket and not yet written. */
size_t conn_out_bytes(const conn_t *c);
/* The subscription (sub.c's) the connection holds, or NULL. */
struct sub *conn_sub(const conn_t *c);
void conn_set_sub(conn_t *c, struct sub *sub);

#endif
