/*
 * libFuzzer harness for the request path behind the frame validator: a body the validator
 * accepts is unpacked by msgpack-c, its op looked up, and its args decoded by the same
 * table-driven decoders the daemon uses (request_decode_write, _balances, _events). A write
 * that decodes is then checked against a small ledger (a frame, an approved allocation, a
 * pending avrop), and if ledger_check accepts it, ledger_apply must apply it. Any error must
 * be one of the documented codes with a message, and every message clean text (UTF-8 without
 * control characters), whatever bytes the request held. The envelope is read as the daemon
 * reads it: once, by budget_parse_request.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "daemon/ledger.h"
#include "daemon/request.h"
#include "proto/text.h"
#include "proto/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ledger *base;

/* Registers `unit` (no parent) in `l`, as event `seq`; false when refused. */
static bool register_unit(ledger *l, const char *unit, const char *kind, uint64_t seq)
{
    static const ledger_actor admin = {1000, "clerk"};
    ledger_cmd c;
    memset(&c, 0, sizeof(c));
    c.type = LEDGER_UNIT_REGISTERED;
    snprintf(c.id, sizeof(c.id), "unit-%s", unit);
    strcpy(c.unit, unit);
    strcpy(c.title, unit);
    strcpy(c.unit_kind, kind);
    ledger_event ev;
    if (ledger_check(l, &c, &admin, &ev, NULL, NULL) != 0)
        return false;
    ev.seq = seq;
    return ledger_apply(l, &ev) == 0;
}

/* KS and SON registered; KS's 3 mkr, 1 mkr of it to SON (approved), and a pending avrop of
 * 400 tkr: BASE_EVENTS events. */
#define BASE_EVENTS 6
static ledger *make_base(void)
{
    static const ledger_actor clerk = {1000, "clerk"}, approver = {1002, "approver"};
    ledger *l = ledger_new();
    if (l != NULL &&
        (!register_unit(l, "KS", "styrelse", 1) || !register_unit(l, "SON", "nämnd", 2)))
        abort();
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
    for (int i = 0; i < 3; i += 2) {
        strcpy(c[i].decision_body, "KS");
        c[i].decision_date = 20210824;
        strcpy(c[i].decision_paragraph, "241");
    }
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
        ev.seq = (uint64_t)i + 3;
        if (ledger_apply(l, &ev) != 0)
            abort();
    }
    return l;
}

static void check_error(int rc, const ledger_error *err)
{
    if (rc != BUDGET_EBAD_REQUEST && rc != BUDGET_ETOO_LARGE && rc != BUDGET_ENOT_FOUND)
        abort();
    if (err->message[0] == '\0' || !budget_text_clean(err->message, strlen(err->message)))
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
    if (rc == 1 && (existing == 0 || existing > BASE_EVENTS))
        abort();
    if (rc < 0 && !budget_text_clean(err.message, strlen(err.message)))
        abort();
    if (rc != 0)
        return;
    ledger *l = ledger_clone(base);
    if (l == NULL)
        abort();
    ev.seq = BASE_EVENTS + 1;
    if (ledger_apply(l, &ev) != 0)
        abort();
    ledger_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[160];
    if (base == NULL && (base = make_base()) == NULL)
        abort();
    budget_envelope env;
    why[0] = '\0';
    int parsed = budget_parse_request(data, size, &env, why, sizeof(why));
    if (!budget_text_clean(why, strlen(why)))
        abort();
    if (parsed != 0)
        return 0;

    msgpack_unpacked u;
    size_t off = 0;
    const msgpack_object *args = NULL;
    msgpack_unpacked_init(&u);
    if (env.args != NULL) {
        if (msgpack_unpack_next(&u, (const char *)env.args, env.args_size, &off) !=
                MSGPACK_UNPACK_SUCCESS ||
            off != env.args_size || u.data.type != MSGPACK_OBJECT_MAP)
            abort(); /* the reader hands on exactly one map */
        args = &u.data;
    }
    const char *name = env.op;
    uint32_t len = env.op_len;
    const request_write_op *w = request_find_write(name, len);
    ledger_error err = {0};
    if (w != NULL) {
        run_write(w, args);
    } else if (len == 8 && memcmp(name, "balances", 8) == 0) {
        balances_query q;
        int rc = request_decode_balances(args, &q, &err);
        if (rc != 0)
            check_error(rc, &err);
        else if (q.frame[0] || q.allocation[0]) {
            /* A frame or allocation that does not exist is named in the answer. */
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            rc = request_pack_balances(&pk, base, &q, 4, &err);
            if (rc != 0)
                check_error(rc, &err);
            msgpack_sbuffer_destroy(&sb);
        }
    } else if (len == 6 && memcmp(name, "events", 6) == 0) {
        events_query q;
        int rc = request_decode_events(args, &q, &err);
        if (rc != 0)
            check_error(rc, &err);
        else if (q.limit == 0 || q.limit > BUDGET_EVENTS_PAGE_MAX)
            abort();
    }
    msgpack_unpacked_destroy(&u);
    return 0;
}
