/*
 * libFuzzer harness for the request path behind the frame validator: a body the validator
 * accepts is unpacked by msgpack-c, its op looked up, and its args decoded by the same
 * table-driven decoders the daemon uses (request_decode_write, _balances, _events). A write
 * that decodes is then checked against a small ledger (a frame, an approved allocation, a
 * pending avrop), and if ledger_check accepts it, ledger_apply must apply it. Any error must
 * be one of the documented codes with a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "daemon/ledger.h"
#include "daemon/request.h"
#include "proto/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ledger *base;

/* KS's 3 mkr, 1 mkr of it to SON (approved), and a pending avrop of 400 tkr. */
static ledger *make_base(void)
{
    static const ledger_actor clerk = {1000, "clerk"}, approver = {1002, "approver"};
    ledger *l = ledger_new();
    ledger_cmd c[4];
    memset(c, 0, sizeof(c));
    c[0].type = LEDGER_FRAME_GRANTED;
    strcpy(c[0].id, "ks-2021");
    strcpy(c[0].unit, "KS");
    c[0].year = 2021;
    c[0].amount = 300000000;
    strcpy(c[0].title, "Utökat trygghetsarbete");
    c[1].type = LEDGER_ALLOCATION_PROPOSED;
    strcpy(c[1].id, "son-2021");
    strcpy(c[1].frame, "ks-2021");
    strcpy(c[1].unit, "SON");
    c[1].amount = 100000000;
    strcpy(c[1].title, "Områdesarbete");
    c[2].type = LEDGER_DECISION_APPROVED;
    strcpy(c[2].id, "son-2021-ok");
    strcpy(c[2].target, "son-2021");
    c[3].type = LEDGER_AVROP_REQUESTED;
    strcpy(c[3].id, "son-avrop-1");
    strcpy(c[3].allocation, "son-2021");
    c[3].amount = 40000000;
    for (int i = 0; l != NULL && i < 4; i++) {
        ledger_event ev;
        /* Four-eyes: the approval comes from another identity than the proposal. */
        const ledger_actor *by = c[i].type == LEDGER_DECISION_APPROVED ? &approver : &clerk;
        if (ledger_check(l, &c[i], by, &ev, NULL, NULL) != 0)
            abort();
        ev.seq = (uint64_t)i + 1;
        if (ledger_apply(l, &ev) != 0)
            abort();
    }
    return l;
}

static void check_error(int rc, const ledger_error *err)
{
    if (rc != BUDGET_EBAD_REQUEST && rc != BUDGET_ETOO_LARGE && rc != BUDGET_ENOT_FOUND)
        abort();
    if (err->message[0] == '\0')
        abort();
}

static void run_write(const request_write_op *w, const msgpack_object *args)
{
    static const ledger_actor clerk = {1001, "other"};
    ledger_cmd cmd;
    ledger_error err = {0};
    bool has_expect;
    uint64_t expect;
    int rc = request_decode_write(w, args, &cmd, &has_expect, &expect, &err);
    if (rc != 0) {
        check_error(rc, &err);
        return;
    }
    if (cmd.type != w->type)
        abort();
    ledger_event ev;
    uint64_t existing = 0;
    rc = ledger_check(base, &cmd, &clerk, &ev, &existing, &err);
    if (rc == 1 && (existing == 0 || existing > 4))
        abort();
    if (rc != 0)
        return;
    ledger *l = ledger_clone(base);
    if (l == NULL)
        abort();
    ev.seq = 5;
    if (ledger_apply(l, &ev) != 0)
        abort();
    ledger_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[160];
    if (base == NULL && (base = make_base()) == NULL)
        abort();
    if (budget_validate_frame(data, size, why, sizeof(why)) != 0)
        return 0;

    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)data, size, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP)
        abort();
    const msgpack_object *op = NULL, *args = NULL;
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            abort(); /* the validator lets only str keys through */
        if (kv->key.via.str.size == 2 && memcmp(kv->key.via.str.ptr, "op", 2) == 0)
            op = &kv->val;
        else if (kv->key.via.str.size == 4 && memcmp(kv->key.via.str.ptr, "args", 4) == 0)
            args = &kv->val;
    }
    if (op != NULL && op->type == MSGPACK_OBJECT_STR) {
        const char *name = op->via.str.ptr;
        uint32_t len = op->via.str.size;
        const request_write_op *w = request_find_write(name, len);
        ledger_error err = {0};
        if (w != NULL) {
            run_write(w, args);
        } else if (len == 8 && memcmp(name, "balances", 8) == 0) {
            balances_query q;
            int rc = request_decode_balances(args, &q, &err);
            if (rc != 0)
                check_error(rc, &err);
        } else if (len == 6 && memcmp(name, "events", 6) == 0) {
            events_query q;
            int rc = request_decode_events(args, &q, &err);
            if (rc != 0)
                check_error(rc, &err);
            else if (q.limit == 0 || q.limit > BUDGET_EVENTS_PAGE_MAX)
                abort();
        }
    }
    msgpack_unpacked_destroy(&u);
    return 0;
}
