/*
 * Dispatch: the op table, each op's access check, the read ops answered on the loop thread,
 * and the long reads handed to worker jobs; writes go to the group commit (commit.h),
 * `subscribe` to sub.h, `checkpoint` and `backup` to audit_ops.h. Loop thread only.
 */
#ifndef BUDGET_OPS_H
#define BUDGET_OPS_H

#include <stdint.h>

#include "audit_ops.h"
#include "commit.h"
#include "conn.h"
#include "history.h"
#include "job.h"
#include "proto/validate.h"
#include "refusal.h"
#include "store.h"
#include "snapshot.h"
#include "sub.h"

/* What the ops read and hand work to; filled in by the owner. */
typedef struct {
    conn_hub_t *hub; /* the access rules, and the connection counters of `stats` */
    commit_t *commit;
    job_pool_t *jobs;
    sub_set_t *subs;
    audit_t *audit;
    refusal_log_t *refusals;
    store *store;
    const snapshots *snapshots; /* for balances as_of; NULL: none kept */
    history_cache *history;     /* the ledgers of earlier points kept for balances */
    uint64_t started_ms;        /* monotonic (uv_hrtime), for uptime */
} ops_t;

/* Answers one frame of `c` in slot `idx` (the conn hub's frame hook): `rc` and `why` are what
 * budget_parse_request said of it, `env` what it read. */
void ops_frame(ops_t *o, conn_t *c, uint32_t idx, const budget_envelope *env, int rc,
               const char *why);

#endif
