/*
 * The audit ops of the server: `checkpoint` (a signed statement of the committed head, made
 * on a worker thread) and `backup` (a compacted hot copy of the store, sent to the client in
 * chunk frames; the daemon writes no file for it). Loop thread, like ops.c.
 */
#ifndef BUDGET_AUDIT_OPS_H
#define BUDGET_AUDIT_OPS_H

#include <stdint.h>

#include <msgpack.h>
#include <uv.h>

#include "commit.h"
#include "conn.h"
#include "job.h"
#include "store.h"

/* A backup's chunk frames carry at most this many bytes of the copy each, and at most
 * BACKUP_WRITES_MAX of them wait to be written at once: a backup adds at most about 512 KiB
 * to its connection's output, far below BUDGET_CONN_OUTPUT_BYTES_MAX. */
#define BACKUP_CHUNK_BYTES (256u * 1024u)
#define BACKUP_WRITES_MAX 2u
/* The checksum of a backup's bytes: BLAKE2b (libsodium crypto_generichash), unkeyed. */
#define BACKUP_CHECKSUM_BYTES 32u

/* What the audit ops use; filled in by the owner, except `backup_running`. */
typedef struct {
    uv_loop_t *loop;
    store *store;
    const commit_t *commit; /* the committed head a checkpoint signs and a backup holds */
    job_pool_t *jobs;       /* checkpoints run there; a backup is counted there */
    const bool *stopping;
    uint64_t frame_timeout_ms; /* a chunk left unread this long ends the backup */
    bool backup_running;
} audit_t;

/* op `checkpoint`: {} -> {seq, hash, ts, public_key, signature} (checkpoint.h). */
void audit_checkpoint(audit_t *a, conn_t *c, uint32_t idx, uint64_t req_id,
                      const msgpack_object *args);

/* op `backup`: {} -> chunk frames {id, ok, chunk}, then {seq, hash, bytes, checksum, ms}.
 * One at a time, and only as the oldest request waiting on its connection. */
void audit_backup(audit_t *a, conn_t *c, uint32_t idx, uint64_t req_id, const msgpack_object *args);

#endif
