/*
 * Group commit. Writes are checked in arrival order against the speculative ledger and queued
 * in the pending batch; at the loop's step the pending batch goes to the writer thread, which
 * appends it in one LMDB transaction. Only then are its writes applied to the committed ledger
 * and answered, in one step on the loop thread (the writer's wakeup), which also hands the
 * batch to the owner (`durable`: the subscriptions) and wakes the connections that wait.
 *
 * Two ledgers: `committed` holds exactly the durable events and answers every read;
 * `speculative` is committed plus the batches not yet durable, and every write is checked
 * against it in arrival order, so two clerks never both win the last krona. When a commit
 * fails, speculative is rebuilt from committed and the writes still waiting are checked again.
 *
 * Threads: the writer thread touches only the batch handed to it and the store; everything
 * else is the loop thread's.
 */
#ifndef BUDGET_COMMIT_H
#define BUDGET_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <uv.h>

#include "conn.h"
#include "job.h"
#include "ledger.h"
#include "store.h"

/* A write waiting for, or riding in, a group commit. */
typedef struct {
    conn_t *c;
    uint32_t slot;
    uint64_t req_id;
    bool has_expect_head;
    uint64_t expect_head;
    bool dup; /* a retry of an event still in flight: answered with its result */
    uint8_t hash[BUDGET_HASH_BYTES];
    size_t offset; /* of the encoded event in the batch's bytes */
    size_t size;
    /* A `batch` op's writes ride as consecutive entries of one commit batch: the first holds
     * their number in `group` and answers for all of them; the others hold `in_group`. */
    uint32_t group;
    bool in_group;
    /* Last, and cleared and copied as ledger_event_clear and _copy do (commit_entry_clear
     * and _copy): the entry is 27 KiB, nearly all of it the lines of an adoption. */
    ledger_cmd cmd;
    ledger_event ev; /* the event made (or, for dup, the original's) */
} commit_entry_t;

static inline void commit_entry_clear(commit_entry_t *e)
{
    memset(e, 0, offsetof(commit_entry_t, cmd));
    ledger_event_clear(&e->cmd);
    ledger_event_clear(&e->ev);
}

static inline void commit_entry_copy(commit_entry_t *dst, const commit_entry_t *src)
{
    memcpy(dst, src, offsetof(commit_entry_t, cmd));
    ledger_event_copy(&dst->cmd, &src->cmd);
    ledger_event_copy(&dst->ev, &src->ev);
}

/* The writes committed together; `bytes` holds their encoded events back to back. */
typedef struct {
    commit_entry_t *entries;
    size_t count, cap;
    uint8_t *bytes;
    size_t bytes_len, bytes_cap;
    store_item *items;
    size_t items_count;
    int rc;
    bool sync_failed;
} commit_batch_t;

typedef struct {
    uv_loop_t *loop;
    store *store;
    job_pool_t *jobs;
    const bool *stopping; /* the owner's: once set, writes are refused */
    /* Told on the loop thread: a batch is durable and applied (it may now be seen); the disk
     * failed (the owner stops with status 1); a commit ended (the owner may be done). */
    void (*durable)(void *owner, const commit_batch_t *b);
    void (*fatal)(void *owner);
    void (*quiet)(void *owner);
    void *owner;
    conn_hub_t *hub; /* the owner's: a commit's answers are written together (conn_hub_cork) */
    /* Told on the loop thread, while a batch is applied, each time the committed ledger's last
     * event is a multiple of `snapshot_every` (0: never), with that event's hash: the ledger is
     * exactly at that event during the call only (snapshot.h). NULL: never. */
    void (*snapshot)(void *owner, const ledger *committed, const uint8_t hash[BUDGET_HASH_BYTES]);
    uint64_t snapshot_every;

    ledger *committed;
    /* Held by the loop while it applies to `committed`, and by worker threads while they look
     * an id up in it (commit_find_id): the ledger's arrays move as they grow. */
    uv_mutex_t committed_lock;
    uint64_t committed_head;
    uint8_t committed_hash[BUDGET_HASH_BYTES];
    ledger *speculative;
    uint64_t spec_head;
    uint8_t spec_hash[BUDGET_HASH_BYTES];

    commit_batch_t batches[2];
    commit_batch_t *pending;  /* filling on the loop thread */
    commit_batch_t *inflight; /* with the writer thread, or NULL */
    bool halted;              /* the disk failed: nothing more is written */

    /* Shared with the writer thread, under writer_mutex. */
    uv_thread_t writer;
    uv_mutex_t writer_mutex;
    uv_cond_t writer_cond;
    commit_batch_t *writer_job;
    bool writer_done;
    bool writer_stop;
    uv_async_t writer_async;

    /* counters for stats */
    uint64_t batches_committed, batch_events_max, commits_failed;
} commit_t;

/* Takes `committed` (the ledger replayed, at `head` with `head_hash`) and starts the writer
 * thread; the fields before `committed` are the caller's to fill. 0, or -1 (out of memory:
 * nothing started, `committed` freed). */
int commit_start(commit_t *m, uv_loop_t *loop, ledger *committed, uint64_t head,
                 const uint8_t head_hash[BUDGET_HASH_BYTES]);
/* Checks a write against the speculative ledger and, when it passes, queues its event in the
 * pending batch. `in` is copied. The write (conn_write_begin) is answered, and ended with
 * conn_write_answered, here or once its batch is durable. */
void commit_admit(commit_t *m, const commit_entry_t *in);
/* A `batch` op's writes: at most this many, checked together and committed together. */
#define COMMIT_GROUP_WRITES_MAX 1000u

/* The access check of write `index` of a group, against `l`, the state the writes before it
 * in the group leave: 0, or a budget_err with `err` filled. */
typedef int (*commit_group_check_fn)(void *ctx, const ledger *l, uint32_t index,
                                     const ledger_cmd *cmd, ledger_error *err);

/* One refused write of a group: its index in the group, a budget_err and why. */
typedef struct {
    uint32_t index;
    int code;
    char message[200];
} commit_refusal_t;

typedef struct {
    bool dry_run; /* answer as if, append nothing */
    bool has_expect_head;
    uint64_t expect_head;
    commit_group_check_fn check; /* may be NULL */
    void *check_ctx;
} commit_group_opts;

/*
 * Checks the writes of a group (`n` entries, 1..COMMIT_GROUP_WRITES_MAX, each with `cmd`,
 * and the same connection, slot and request id) in order against the speculative ledger as
 * the writes before each leave it, and queues all their events in the pending batch (so one
 * commit holds them, at consecutive seqs) or none. The group gets one answer: every event's
 * result once durable, or every refusal with its index (here). A group whose ids all exist
 * is a retry, answered with the first results; one whose ids partly exist is refused.
 * `entries` is copied. The caller did conn_write_begin once; it is ended here or once durable.
 */
void commit_admit_group(commit_t *m, const commit_entry_t *entries, uint32_t n,
                        const commit_group_opts *o);
/* Answers a group of `n` writes refused: the first refusal's code, and every refusal
 * ("refusals", sorted here by index; `count` >= 1). */
void commit_answer_refused(conn_t *c, uint32_t slot, uint64_t req_id, uint32_t n,
                           commit_refusal_t *refusals, uint32_t count);
/* Hands the pending batch to the writer thread when it is idle and the batch is not empty. */
void commit_launch(commit_t *m);
/* No write waits or is in flight. */
bool commit_idle(const commit_t *m);
/* Lets the loop end (commit_idle); after the loop, commit_join stops the writer and frees
 * the ledgers. */
void commit_close(commit_t *m);
void commit_join(commit_t *m);

/* What readers see: the durable head, its hash and ledger; the ledger writes are checked
 * against. */
uint64_t commit_head(const commit_t *m);
const uint8_t *commit_head_hash(const commit_t *m);
const ledger *commit_ledger(const commit_t *m);
const ledger *commit_speculative(const commit_t *m);
/* Any thread: the seq of the committed event that created `id`; false when none did. It may
 * be past the head a worker's reader sees, when the id was committed since it began. */
bool commit_find_id(commit_t *m, const char *id, uint64_t *seq);

#endif
