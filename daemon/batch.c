/* The `batch` op (batch.h): its args, and the role and units of each of its writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "budget/errors.h"
#include "log.h"
#include "proto/text.h"
#include "request.h"

/* What a batch's writes are checked with. */
typedef struct {
    const access_rules *rules;
    const access_grants *grants;
    refusal_log_t *refusals;
    const request_write_op **ops; /* each write's op */
    char who[BUDGET_NAME_BYTES_MAX + 32];
} batch_access;

static bool key_is(const msgpack_object *key, const char *name)
{
    size_t n = strlen(name);
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == n &&
           memcmp(key->via.str.ptr, name, n) == 0;
}

/* access_decide, with the refusal escaped into `err` and logged as ops.c logs its own. */
static int batch_decide(batch_access *a, const request_write_op *w, const char *unit,
                        const char *what, ledger_error *err)
{
    char why[600];
    int rc =
        access_decide(a->rules, a->grants, w->need, unit, what, w->op, a->who, why, sizeof(why));
    if (rc == 0)
        return 0;
    char safe[BUDGET_ESCAPED_BYTES(sizeof(why))];
    budget_escape(safe, sizeof(safe), why, strlen(why));
    if (rc == BUDGET_EINTERNAL)
        log_error("%s", safe);
    else if (refusal_to_log(a->refusals))
        log_info("refused: %s", safe);
    /* Cut to the message's room, never inside a UTF-8 sequence. */
    size_t len = strlen(safe);
    if (len >= sizeof(err->message)) {
        len = sizeof(err->message) - 1;
        while (len > 0 && ((unsigned char)safe[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(err->message, safe, len);
    err->message[len] = '\0';
    err->code = rc;
    return rc;
}

/* commit_group_check_fn: the role for every unit the write concerns, as the state stands
 * after the writes before it (a frame granted earlier in the batch names its unit). */
static int batch_scope_check(void *ctx, const ledger *l, uint32_t index, const ledger_cmd *cmd,
                             ledger_error *err)
{
    batch_access *a = ctx;
    access_scope scope;

    size_t i;
    if (!access_write_refused(a->rules, a->grants, a->ops[index]->need, l, cmd, &scope, &i))
        return 0;
    return batch_decide(a, a->ops[index], scope.units[i].unit, scope.units[i].what, err);
}

/* Reads write `index`, {"op": str, "args": map}, into `e->cmd`. 0, or a budget_err with
 * `err` filled. */
static int decode_one(batch_access *a, const msgpack_object *o, uint32_t index, commit_entry_t *e,
                      ledger_error *err)
{
    const msgpack_object *op = NULL, *args = NULL;
    char name[BUDGET_ESCAPED_BYTES(BUDGET_OP_BYTES_MAX)];

    if (o->type != MSGPACK_OBJECT_MAP)
        goto malformed;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (key_is(k, "op"))
            op = &o->via.map.ptr[i].val;
        else if (key_is(k, "args"))
            args = &o->via.map.ptr[i].val;
        else
            goto malformed;
    }
    if (!op || op->type != MSGPACK_OBJECT_STR)
        goto malformed;
    const request_write_op *w = request_find_write(op->via.str.ptr, op->via.str.size);
    if (!w) {
        budget_escape(name, sizeof(name), op->via.str.ptr, op->via.str.size);
        err->code = BUDGET_EBAD_REQUEST;
        snprintf(err->message, sizeof(err->message),
                 "\"%s\" is not a write op; a batch holds only writes", name);
        return err->code;
    }
    a->ops[index] = w;
    int rc = request_decode_write(w, args, &e->cmd, &e->has_expect_head, &e->expect_head, err);
    if (rc == 0 && e->has_expect_head) {
        err->code = rc = BUDGET_EBAD_REQUEST;
        snprintf(err->message, sizeof(err->message),
                 "a write in a batch takes no expect_head; give it to the batch");
    }
    if (rc == 0)
        rc = batch_decide(a, w, NULL, NULL, err);
    return rc;
malformed:
    err->code = BUDGET_EBAD_REQUEST;
    snprintf(err->message, sizeof(err->message),
             "a write must be a map {\"op\": str, \"args\": map}");
    return err->code;
}

/* The batch's own args; `writes` is set to its array. 0, or BUDGET_EBAD_REQUEST with `msg`. */
static int decode_batch(const msgpack_object *args, const msgpack_object **writes,
                        commit_group_opts *o, char *msg, size_t size)
{
    *writes = NULL;
    for (uint32_t i = 0; args && i < args->via.map.size; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        const msgpack_object *v = &args->via.map.ptr[i].val;
        if (key_is(k, "writes") && v->type == MSGPACK_OBJECT_ARRAY) {
            *writes = v;
        } else if (key_is(k, "dry_run") && v->type == MSGPACK_OBJECT_BOOLEAN) {
            o->dry_run = v->via.boolean;
        } else if (key_is(k, "expect_head") && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            o->has_expect_head = true;
            o->expect_head = v->via.u64;
        } else {
            snprintf(msg, size, "batch takes writes (array), dry_run (bool), expect_head (uint)");
            return BUDGET_EBAD_REQUEST;
        }
    }
    if (!*writes || (*writes)->via.array.size == 0 ||
        (*writes)->via.array.size > COMMIT_GROUP_WRITES_MAX) {
        snprintf(msg, size, "batch needs args.writes, an array of 1..%u writes",
                 COMMIT_GROUP_WRITES_MAX);
        return (*writes && (*writes)->via.array.size > COMMIT_GROUP_WRITES_MAX)
                   ? BUDGET_ETOO_LARGE
                   : BUDGET_EBAD_REQUEST;
    }
    return 0;
}

/* Decodes every write and checks its role; answers the refusals when there are any. True
 * when every write was read. */
static bool decode_writes(batch_access *a, conn_t *c, uint32_t idx, uint64_t req_id,
                          const msgpack_object *writes, commit_entry_t *entries)
{
    uint32_t n = writes->via.array.size, refused = 0;
    commit_refusal_t *refusals = malloc(n * sizeof(*refusals));
    ledger_error err;

    if (!refusals) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
        return false;
    }
    for (uint32_t i = 0; i < n; i++) {
        entries[i].c = c;
        entries[i].slot = idx;
        entries[i].req_id = req_id;
        if (decode_one(a, &writes->via.array.ptr[i], i, &entries[i], &err) == 0)
            continue;
        refusals[refused].index = i;
        refusals[refused].code = err.code;
        snprintf(refusals[refused].message, sizeof(refusals[refused].message), "%s", err.message);
        refused++;
    }
    if (refused > 0)
        commit_answer_refused(c, idx, req_id, n, refusals, refused);
    free(refusals);
    return refused == 0;
}

void batch_op(commit_t *m, const access_rules *rules, refusal_log_t *refusals, conn_t *c,
              uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    commit_group_opts o = {0};
    const msgpack_object *writes;
    char msg[200];
    batch_access a = {rules, conn_grants(c), refusals, NULL, ""};

    int rc = decode_batch(args, &writes, &o, msg, sizeof(msg));
    if (rc != 0) {
        conn_answer_error(c, idx, req_id, rc, msg);
        return;
    }
    uint32_t n = writes->via.array.size;
    const ledger_actor *actor = conn_actor(c);
    if (actor->name[0])
        snprintf(a.who, sizeof(a.who), "uid %u (%s)", actor->uid, actor->name);
    else
        snprintf(a.who, sizeof(a.who), "uid %u", actor->uid);
    commit_entry_t *entries = calloc(n, sizeof(*entries));
    a.ops = calloc(n, sizeof(*a.ops));
    if (!entries || !a.ops) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
    } else if (decode_writes(&a, c, idx, req_id, writes, entries)) {
        o.check = batch_scope_check;
        o.check_ctx = &a;
        conn_write_begin(c);
        commit_admit_group(m, entries, n, &o);
    }
    free(entries);
    free(a.ops);
}
