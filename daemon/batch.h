/*
 * The `batch` op: writes of the write ops, checked together against the ledger as each leaves
 * it and committed together in one group commit, or refused together (docs/protocol.md,
 * "batch"). Decodes the request and checks each write's role and units here; commit.h's
 * commit_admit_group does the rest. Loop thread only.
 */
#ifndef BUDGET_BATCH_H
#define BUDGET_BATCH_H

#include <stdint.h>

#include <msgpack.h>

#include "access.h"
#include "commit.h"
#include "conn.h"
#include "refusal.h"

/* Answers `batch` with `args` from `c` in slot `idx` (now or once its commit is durable). */
void batch_op(commit_t *m, const access_rules *rules, refusal_log_t *refusals, conn_t *c,
              uint32_t idx, uint64_t req_id, const msgpack_object *args);

#endif
