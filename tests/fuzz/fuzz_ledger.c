/*
 * libFuzzer harness for the ledger core: the input is a sequence of commands (6 bytes each,
 * below) run through ledger_check and, when they pass, ledger_apply, as the daemon does.
 * After every step the rules of the budget must hold:
 *   - no frame is allocated past what it was granted (allocated + pending <= granted);
 *   - no allocation is called off past its amount (called_off + pending <= amount), and an
 *     allocation that is not approved has nothing called off or pending;
 *   - no unit may call off more than it received (available >= 0);
 *   - what ledger_check accepts, ledger_apply applies; what it refuses changes nothing.
 * Every event made is also encoded, decoded and applied to a second ledger (start-up
 * replay), and a clone taken part-way is fed the rest: at the end all three are equal.
 *
 * A command: byte 0 the type (low 3 bits, modulo 7) and the actor (bits 5-6); byte 1 the id
 * it creates and byte 2 the id it refers to, both from one small namespace so that retries,
 * conflicts and references of the wrong kind are common; bytes 3-4 the amount (byte 3 = 0xff
 * picks an edge value); byte 5 the unit and year, and (bit 7) a malformed id.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "daemon/event.h"
#include "daemon/ledger.h"

#define COMMAND_BYTES 6
#define COMMANDS_MAX 400
#define NAMESPACE 24
#define CLONE_AT 12

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int64_t edges[] = {0,
                                -1,
                                1,
                                BUDGET_AMOUNT_MAX,
                                BUDGET_AMOUNT_MAX + 1,
                                -BUDGET_AMOUNT_MAX,
                                INT64_MAX,
                                INT64_MIN,
                                BUDGET_AMOUNT_MAX / 2 + 1};

static void decode_command(const uint8_t *b, ledger_cmd *cmd, ledger_actor *actor)
{
    static const char *const units[] = {"KS", "SON", "KFN", "U3"};
    memset(cmd, 0, sizeof(*cmd));
    cmd->type = (ledger_type)(b[0] % 8 % 7 + 1);
    memset(actor, 0, sizeof(*actor));
    actor->uid = 1000u + ((b[0] >> 5) & 3u);
    snprintf(actor->name, sizeof(actor->name), "clerk%u", actor->uid);
    if (b[5] & 0x80)
        snprintf(cmd->id, sizeof(cmd->id), "x%u bad", b[1] % NAMESPACE);
    else
        snprintf(cmd->id, sizeof(cmd->id), "x%u", b[1] % NAMESPACE);
    char ref[16];
    snprintf(ref, sizeof(ref), "x%u", b[2] % NAMESPACE);
    int64_t amount = b[3] == 0xff ? edges[b[4] % (sizeof(edges) / sizeof(edges[0]))]
                                  : ((int64_t)b[3] << 8 | b[4]) * 1000;
    switch (cmd->type) {
    case LEDGER_FRAME_GRANTED:
        snprintf(cmd->unit, sizeof(cmd->unit), "%s", units[b[5] & 3]);
        cmd->year = 2021 + ((b[5] >> 4) & 1);
        cmd->amount = amount;
        snprintf(cmd->title, sizeof(cmd->title), "Utökat trygghetsarbete");
        snprintf(cmd->reference, sizeof(cmd->reference), "KS 2021-08-24 § 241");
        break;
    case LEDGER_FRAME_ADJUSTED:
        snprintf(cmd->frame, sizeof(cmd->frame), "%s", ref);
        cmd->amount = (b[5] & 0x40) && amount != INT64_MIN ? -amount : amount;
        snprintf(cmd->title, sizeof(cmd->title), "Tilläggsanslag");
        break;
    case LEDGER_ALLOCATION_PROPOSED:
        snprintf(cmd->frame, sizeof(cmd->frame), "%s", ref);
        snprintf(cmd->unit, sizeof(cmd->unit), "%s", units[b[5] & 3]);
        cmd->amount = amount;
        snprintf(cmd->title, sizeof(cmd->title), "Områdesarbete");
        break;
    case LEDGER_AVROP_REQUESTED:
        snprintf(cmd->allocation, sizeof(cmd->allocation), "%s", ref);
        cmd->amount = amount;
        break;
    default:
        snprintf(cmd->target, sizeof(cmd->target), "%s", ref);
        break;
    }
    /* The decision of the types that rest on one (ignored by the others); now and then a
     * date that is no day, which must be refused. */
    snprintf(cmd->decision_body, sizeof(cmd->decision_body), "KS");
    cmd->decision_date = b[2] == 0xff ? 20210229 : 20210824;
    snprintf(cmd->decision_paragraph, sizeof(cmd->decision_paragraph), "%u", b[2] % 400u + 1);
}

static void check_rules(const ledger *l)
{
    ledger_frame_view f;
    ledger_allocation_view a;
    ledger_unit_view u;
    size_t i = 0;
    while (ledger_next_frame(l, &i, NULL, 0, &f)) {
        if (f.allocated < 0 || f.pending < 0 || f.called_off < 0 ||
            f.allocated + f.pending > f.granted ||
            f.unallocated != f.granted - f.allocated - f.pending || f.called_off > f.allocated)
            abort();
    }
    i = 0;
    while (ledger_next_allocation(l, &i, NULL, NULL, 0, &a)) {
        if (a.called_off < 0 || a.pending < 0 || a.called_off + a.pending > a.amount)
            abort();
        if (a.status == LEDGER_APPROVED) {
            if (a.available != a.amount - a.called_off - a.pending)
                abort();
        } else if (a.called_off != 0 || a.pending != 0 || a.available != 0) {
            abort();
        }
    }
    i = 0;
    while (ledger_next_unit(l, &i, NULL, 0, &u))
        if (u.available < 0 || u.available != u.allocated - u.called_off - u.pending)
            abort();
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Two ledgers hold the same state, entity by entity. */
static void check_equal(const ledger *x, const ledger *y)
{
    ledger_counts cx, cy;
    ledger_get_counts(x, &cx);
    ledger_get_counts(y, &cy);
    if (memcmp(&cx, &cy, sizeof(cx)) != 0 || ledger_events(x) != ledger_events(y) ||
        ledger_last_seq(x) != ledger_last_seq(y))
        abort();
    size_t i = 0, j = 0;
    ledger_frame_view f, g;
    while (ledger_next_frame(x, &i, NULL, 0, &f)) {
        if (!ledger_next_frame(y, &j, NULL, 0, &g) || !same_str(f.id, g.id) ||
            !same_str(f.unit, g.unit) || !same_str(f.title, g.title) ||
            !same_str(f.reference, g.reference) || f.year != g.year || f.granted != g.granted ||
            f.allocated != g.allocated || f.pending != g.pending ||
            f.unallocated != g.unallocated || f.called_off != g.called_off)
            abort();
    }
    if (ledger_next_frame(y, &j, NULL, 0, &g))
        abort();
    ledger_allocation_view a, b;
    i = j = 0;
    while (ledger_next_allocation(x, &i, NULL, NULL, 0, &a)) {
        if (!ledger_next_allocation(y, &j, NULL, NULL, 0, &b) || !same_str(a.id, b.id) ||
            !same_str(a.frame, b.frame) || !same_str(a.unit, b.unit) ||
            !same_str(a.purpose, b.purpose) || a.year != b.year || a.status != b.status ||
            a.amount != b.amount || a.called_off != b.called_off || a.pending != b.pending ||
            a.available != b.available)
            abort();
    }
    if (ledger_next_allocation(y, &j, NULL, NULL, 0, &b))
        abort();
    ledger_avrop_view v, w;
    i = j = 0;
    while (ledger_next_avrop(x, &i, NULL, &v)) {
        if (!ledger_next_avrop(y, &j, NULL, &w) || !same_str(v.id, w.id) ||
            !same_str(v.allocation, w.allocation) || !same_str(v.unit, w.unit) ||
            v.status != w.status || v.amount != w.amount)
            abort();
    }
    if (ledger_next_avrop(y, &j, NULL, &w))
        abort();
    ledger_unit_view u, t;
    i = j = 0;
    while (ledger_next_unit(x, &i, NULL, 0, &u)) {
        if (!ledger_next_unit(y, &j, NULL, 0, &t) || !same_str(u.unit, t.unit) ||
            u.year != t.year || u.frames != t.frames || u.allocated != t.allocated ||
            u.called_off != t.called_off || u.pending != t.pending || u.available != t.available)
            abort();
    }
    if (ledger_next_unit(y, &j, NULL, 0, &t))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ledger *l = ledger_new(), *replayed = ledger_new(), *clone = NULL;
    uint8_t prev[BUDGET_HASH_BYTES] = {0};
    uint64_t seq = 0;
    size_t commands = size / COMMAND_BYTES;

    if (l == NULL || replayed == NULL)
        abort();
    if (commands > COMMANDS_MAX)
        commands = COMMANDS_MAX;
    for (size_t k = 0; k < commands; k++) {
        ledger_cmd cmd;
        ledger_actor actor;
        ledger_event ev;
        ledger_error err;
        uint64_t existing = 0;

        if (k == CLONE_AT) {
            clone = ledger_clone(l);
            if (clone == NULL)
                abort();
            check_equal(l, clone);
        }
        decode_command(data + k * COMMAND_BYTES, &cmd, &actor);
        uint64_t events_before = ledger_events(l);
        int rc = ledger_check(l, &cmd, &actor, &ev, &existing, &err);
        if (rc == 1) {
            if (existing == 0 || existing > seq)
                abort();
        } else if (rc < 0) {
            if (rc < BUDGET_EINTERNAL || rc > BUDGET_EBAD_REQUEST || rc == BUDGET_EINTERNAL ||
                err.code != rc || err.message[0] == '\0')
                abort();
        } else if (rc == 0) {
            ev.seq = ++seq;
            ev.ts_ms = 1630000000000ull + seq;
            if (ledger_apply(l, &ev) != 0)
                abort();
            /* The replay path: bytes on disk, decoded, applied to another ledger. */
            uint8_t bytes[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
            ledger_event back;
            int n = event_encode(&ev, prev, bytes, sizeof(bytes), hash);
            if (n < 0 || event_decode(bytes, (size_t)n, &back) != 0 ||
                event_check_link(bytes, (size_t)n, prev, NULL) != 0 ||
                ledger_apply(replayed, &back) != 0)
                abort();
            memcpy(prev, hash, sizeof(prev));
            if (clone != NULL && ledger_apply(clone, &ev) != 0)
                abort();
            /* The retry of what was just made is recognised as the same request. */
            if (!ledger_same_request(&cmd, &actor, &ev))
                abort();
        } else {
            abort();
        }
        if (rc != 0 && ledger_events(l) != events_before)
            abort();
        check_rules(l);
    }
    check_equal(l, replayed);
    if (clone != NULL)
        check_equal(l, clone);
    ledger_free(clone);
    ledger_free(replayed);
    ledger_free(l);
    return 0;
}
