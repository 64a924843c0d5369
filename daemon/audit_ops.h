/*
 * The audit ops of the server: `checkpoint` (a signed statement of the committed head) and
 * `backup` (a compacted hot copy of the store, verified before it is reported). Both run on
 * worker threads, since they touch the disk. Loop thread, like ops.c.
 */
#ifndef BUDGET_AUDIT_OPS_H
#define BUDGET_AUDIT_OPS_H

#include <stdint.h>

#include <msgpack.h>

#include "server_internal.h"

/* The longest `dir` a backup takes, in bytes. */
#define BACKUP_DIR_BYTES_MAX 1024u

/* op `checkpoint`: {} -> {seq, hash, ts, public_key, signature} (checkpoint.h). */
void op_checkpoint(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args);

/* op `backup`: {dir} -> {dir, head, hash, bytes, ms}. One at a time. */
void op_backup(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args);

#endif
