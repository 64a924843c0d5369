/* The ledger core: every rule and its boundary, balances, apply on a corrupt log, clones. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "daemon/event.h"
#include "daemon/ledger.h"
#include "daemon/snapio.h"
#include "daemon/years.h"

#define MAX BUDGET_AMOUNT_MAX

/* Identities: clerks of KS and SON, and a decider. */
#define UID_KS 1001u
#define UID_SON 1002u
#define UID_DECIDER 2000u

static ledger *l;
static uint64_t seq;          /* last seq applied */
static ledger_error err;      /* of the last submit */
static uint64_t existing_seq; /* of the last submit that returned 1 */
static ledger_event last_ev;  /* made by the last successful submit */
/* The time of entry of the next submit, as the daemon's clock would stamp it (ms since 1970);
 * 0: a time derived from the seq. */
static uint64_t entry_ms;

static void register_fixture_units(void);
static ledger_event fixture_log[4]; /* the events it made */

/* The units every test may name are registered first: FIXTURE_EVENTS events. */
#define FIXTURE_EVENTS 4u

static void setup(void)
{
    l = ledger_new();
    cr_assert_not_null(l);
    seq = 0;
    entry_ms = 0;
    register_fixture_units();
}

static void teardown(void)
{
    ledger_free(l);
    l = NULL;
}

TestSuite(ledger, .init = setup, .fini = teardown);

/* ---- helpers ------------------------------------------------------------------------------ */

static void put(char *dst, size_t size, const char *src)
{
    size_t len = strlen(src);
    cr_assert_lt(len, size, "test string too long for its field");
    memcpy(dst, src, len + 1);
}

#define PUT(field, value) put((field), sizeof(field), (value))

/* Sets the decision of `c`: body, date (YYYYMMDD), paragraph and diary number. */
static void set_decision(ledger_cmd *c, const char *body, int32_t date, const char *paragraph,
                         const char *dnr)
{
    PUT(c->decision_body, body);
    c->decision_date = date;
    PUT(c->decision_paragraph, paragraph);
    PUT(c->decision_dnr, dnr);
}

/* The decision of the source document, KS 2021-08-24 § 241, which every write that rests on
 * a decision is given below unless a test sets another. */
static void seed_decision(ledger_cmd *c)
{
    set_decision(c, "KS", 20210824, "241", "");
}

static ledger_cmd grant(const char *id, const char *unit, int32_t year, int64_t amount,
                        const char *title, const char *reference)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_FRAME_GRANTED;
    PUT(c.id, id);
    PUT(c.unit, unit);
    c.year = year;
    c.amount = amount;
    PUT(c.title, title);
    PUT(c.reference, reference);
    seed_decision(&c);
    return c;
}

static ledger_cmd adjust(const char *id, const char *frame, int64_t delta, const char *reason,
                         const char *reference)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_FRAME_ADJUSTED;
    PUT(c.id, id);
    PUT(c.frame, frame);
    c.amount = delta;
    PUT(c.title, reason);
    PUT(c.reference, reference);
    seed_decision(&c);
    return c;
}

static ledger_cmd propose(const char *id, const char *frame, const char *unit, int64_t amount,
                          const char *purpose)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_ALLOCATION_PROPOSED;
    PUT(c.id, id);
    PUT(c.frame, frame);
    PUT(c.unit, unit);
    c.amount = amount;
    PUT(c.title, purpose);
    return c;
}

static ledger_cmd avrop(const char *id, const char *allocation, int64_t amount, const char *note)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_AVROP_REQUESTED;
    PUT(c.id, id);
    PUT(c.allocation, allocation);
    c.amount = amount;
    PUT(c.note, note);
    return c;
}

static ledger_cmd decide(ledger_type type, const char *id, const char *target,
                         const char *reference, const char *note)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    PUT(c.id, id);
    PUT(c.target, target);
    PUT(c.reference, reference);
    PUT(c.note, note);
    seed_decision(&c);
    return c;
}

/* frame.grant of a frame that continues `continues`. */
static ledger_cmd grant_continuing(const char *id, const char *unit, int32_t year, int64_t amount,
                                   const char *continues)
{
    ledger_cmd c = grant(id, unit, year, amount, "Ram", "");
    PUT(c.continues, continues);
    return c;
}

/* budget.adopt of budget year `year` with plan years to `plan_until`, on the decision KF
 * 2021-11-22 § 120; lines are added with add_line. */
static ledger_cmd adopt(const char *id, int32_t year, int32_t plan_until)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_BUDGET_ADOPTED;
    PUT(c.id, id);
    c.year = year;
    c.plan_until = plan_until;
    PUT(c.title, "Utökat trygghetsarbete");
    PUT(c.decision_body, "KF");
    c.decision_date = 20211122;
    PUT(c.decision_paragraph, "120");
    return c;
}

/* Adds a line to adoption `c`: `unit`, `amount` for the budget year, the frame it continues
 * ("" for none) and `plans` plan amounts. */
static void add_line(ledger_cmd *c, const char *unit, int64_t amount, const char *continues,
                     uint8_t plans, const int64_t *plan)
{
    cr_assert_lt(c->lines.count, BUDGET_ADOPT_LINES_MAX);
    ledger_line *x = &c->lines.line[c->lines.count++];
    PUT(x->unit, unit);
    PUT(x->continues, continues);
    x->amount = amount;
    x->plans = plans;
    for (uint8_t k = 0; k < plans; k++)
        x->plan[k] = plan[k];
}

static ledger_cmd approve(const char *id, const char *target)
{
    return decide(LEDGER_DECISION_APPROVED, id, target, "KS 2021-09-28 § 270", "");
}

static ledger_cmd reject(const char *id, const char *target)
{
    return decide(LEDGER_DECISION_REJECTED, id, target, "", "");
}

static ledger_cmd withdraw(const char *id, const char *target, const char *note)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_REQUEST_WITHDRAWN;
    PUT(c.id, id);
    PUT(c.target, target);
    PUT(c.note, note);
    return c;
}

/* The decision a year's end rests on: KS 2022-01-25 § 12. */
static void decided(ledger_cmd *c)
{
    PUT(c->decision_body, "KS");
    c->decision_date = 20220125;
    PUT(c->decision_paragraph, "12");
}

static ledger_cmd close_year(const char *id, int32_t year)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_YEAR_CLOSED;
    PUT(c.id, id);
    c.year = year;
    decided(&c);
    return c;
}

static ledger_cmd carry_over(const char *id, const char *frame, int64_t amount, int32_t last_day)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_FRAME_CARRIED_OVER;
    PUT(c.id, id);
    PUT(c.frame, frame);
    c.amount = amount;
    PUT(c.title, "Ombudgetering");
    c.avrop_last_day = last_day;
    decided(&c);
    return c;
}

static ledger_cmd register_unit(const char *id, const char *unit, const char *name,
                                const char *kind, const char *parent, const char *reference)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_UNIT_REGISTERED;
    PUT(c.id, id);
    PUT(c.unit, unit);
    PUT(c.title, name);
    PUT(c.unit_kind, kind);
    PUT(c.parent, parent);
    PUT(c.reference, reference);
    return c;
}

static ledger_cmd rename_unit(const char *id, const char *unit, const char *name)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_UNIT_RENAMED;
    PUT(c.id, id);
    PUT(c.unit, unit);
    PUT(c.title, name);
    PUT(c.reference, "KF 2022-12-12 § 5");
    return c;
}

static ledger_cmd close_unit(const char *id, const char *unit)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_UNIT_CLOSED;
    PUT(c.id, id);
    PUT(c.unit, unit);
    return c;
}

static ledger_cmd reduce(const char *id, const char *allocation, int64_t amount, const char *reason)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_ALLOCATION_REDUCTION_REQUESTED;
    PUT(c.id, id);
    PUT(c.allocation, allocation);
    c.amount = amount;
    PUT(c.title, reason);
    return c;
}

static ledger_cmd reverse(const char *id, const char *avrop_id, int64_t amount, const char *reason)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_AVROP_REVERSAL_REQUESTED;
    PUT(c.id, id);
    PUT(c.target, avrop_id);
    c.amount = amount;
    PUT(c.title, reason);
    return c;
}

static ledger_cmd record_outcome(const char *id, const char *unit, int32_t year, int32_t month,
                                 const char *allocation, int64_t amount, const char *source)
{
    ledger_cmd c;
    memset(&c, 0, sizeof c);
    c.type = LEDGER_OUTCOME_RECORDED;
    PUT(c.id, id);
    PUT(c.unit, unit);
    c.year = year;
    c.month = month;
    PUT(c.allocation, allocation);
    c.amount = amount;
    PUT(c.note, source);
    return c;
}

/* A grant the client says is meant even when like an existing frame. */
static ledger_cmd intended(ledger_cmd c)
{
    c.intended = true;
    return c;
}

static ledger_actor actor(uint32_t uid)
{
    ledger_actor a;
    memset(&a, 0, sizeof a);
    a.uid = uid;
    snprintf(a.name, sizeof a.name, "user%" PRIu32, uid);
    return a;
}

/* ---- lists by position --------------------------------------------------------------------- */

typedef enum { LIST_FRAMES, LIST_ALLOCATIONS, LIST_AVROP, LIST_UNITS } list_kind;

/* A filter of a list of balances: NULL / 0 = any. */
typedef struct {
    const char *frame, *allocation, *unit;
    int32_t year;
} list_filter;

/* The next match of `k` after the walk's `*i`; its name ("id", or "unit year") in `name`. */
static bool walk_next(const ledger *s, list_kind k, const list_filter *q, size_t *i, char *name,
                      size_t size)
{
    ledger_frame_view f;
    ledger_allocation_view a;
    ledger_avrop_view v;
    ledger_unit_view u;
    switch (k) {
    case LIST_FRAMES:
        if (!ledger_next_frame(s, i, q->unit, q->year, &f))
            return false;
        snprintf(name, size, "%s", f.id);
        return true;
    case LIST_ALLOCATIONS:
        if (!ledger_next_allocation(s, i, q->frame, q->unit, q->year, &a))
            return false;
        snprintf(name, size, "%s", a.id);
        return true;
    case LIST_AVROP:
        if (!ledger_next_avrop(s, i, q->allocation, &v))
            return false;
        snprintf(name, size, "%s", v.id);
        return true;
    case LIST_UNITS:
        if (!ledger_next_unit(s, i, q->unit, q->year, &u))
            return false;
        snprintf(name, size, "%s %d", u.unit, (int)u.year);
        return true;
    }
    return false;
}

static bool seek(const ledger *s, list_kind k, const list_filter *q, uint64_t offset,
                 ledger_cursor *c)
{
    switch (k) {
    case LIST_FRAMES:
        return ledger_seek_frames(s, q->unit, q->year, offset, c);
    case LIST_ALLOCATIONS:
        return ledger_seek_allocations(s, q->frame, q->unit, q->year, offset, c);
    case LIST_AVROP:
        return ledger_seek_avrop(s, q->allocation, offset, c);
    case LIST_UNITS:
        return ledger_seek_units(s, q->unit, q->year, offset, c);
    }
    return false;
}

static bool cursor_next(const ledger *s, list_kind k, ledger_cursor *c, char *name, size_t size)
{
    ledger_frame_view f;
    ledger_allocation_view a;
    ledger_avrop_view v;
    ledger_unit_view u;
    bool ok = false;
    switch (k) {
    case LIST_FRAMES:
        if ((ok = ledger_cursor_frame(s, c, &f)))
            snprintf(name, size, "%s", f.id);
        break;
    case LIST_ALLOCATIONS:
        if ((ok = ledger_cursor_allocation(s, c, &a)))
            snprintf(name, size, "%s", a.id);
        break;
    case LIST_AVROP:
        if ((ok = ledger_cursor_avrop(s, c, &v)))
            snprintf(name, size, "%s", v.id);
        break;
    case LIST_UNITS:
        if ((ok = ledger_cursor_unit(s, c, &u)))
            snprintf(name, size, "%s %d", u.unit, (int)u.year);
        break;
    }
    return ok;
}

/* The names of at most `limit` matches after the first `offset`, one a line: by a walk from
 * the start that passes over `offset` matches, or (by_position) from ledger_seek_*; NULL when
 * the ledger keeps no positions for the filter. */
static char *listed(const ledger *s, list_kind k, const list_filter *q, uint64_t offset,
                    uint64_t limit, bool by_position)
{
    char *buf = NULL, name[BUDGET_ID_BYTES_MAX + 16];
    size_t size = 0, i = 0;
    ledger_cursor c;
    if (by_position && !seek(s, k, q, offset, &c))
        return NULL;
    FILE *f = open_memstream(&buf, &size);
    cr_assert_not_null(f);
    uint64_t taken = 0, passed = 0;
    while (taken < limit) {
        bool more = by_position ? cursor_next(s, k, &c, name, sizeof name)
                                : walk_next(s, k, q, &i, name, sizeof name);
        if (!more)
            break;
        if (!by_position && passed < offset) {
            passed++;
            continue;
        }
        fprintf(f, "%s\n", name);
        taken++;
    }
    fclose(f);
    return buf;
}

/* Every list of every filter of units and years the ledger names, and of each frame and
 * allocation, as found by position ("-" when the ledger keeps no positions for it). */
static void print_positions(FILE *f, const ledger *s)
{
    const registry *reg = ledger_registry(s);
    int32_t years[] = {0, 2020, 2021, 2022, 2023};
    for (uint32_t k = 0; k <= registry_count(reg); k++) {
        registry_view rv = {.code = NULL};
        if (k < registry_count(reg))
            registry_view_of(reg, k, &rv);
        for (size_t y = 0; y < sizeof years / sizeof years[0]; y++) {
            list_filter q = {.unit = rv.code, .year = years[y]};
            for (list_kind kind = LIST_FRAMES; kind <= LIST_UNITS; kind++) {
                if (kind == LIST_AVROP)
                    continue;
                char *got = listed(s, kind, &q, 0, UINT32_MAX, true);
                fprintf(f, "list %d %s %d:\n%s", (int)kind, rv.code ? rv.code : "*", (int)years[y],
                        got ? got : "-\n");
                free(got);
            }
        }
    }
    size_t i = 0;
    ledger_frame_view fv;
    while (ledger_next_frame(s, &i, NULL, 0, &fv)) {
        char *got =
            listed(s, LIST_ALLOCATIONS, &(list_filter){.frame = fv.id}, 0, UINT32_MAX, true);
        fprintf(f, "allocations of %s:\n%s", fv.id, got ? got : "-\n");
        free(got);
    }
    i = 0;
    ledger_allocation_view av;
    while (ledger_next_allocation(s, &i, NULL, NULL, 0, &av)) {
        char *got = listed(s, LIST_AVROP, &(list_filter){.allocation = av.id}, 0, UINT32_MAX, true);
        fprintf(f, "avrop of %s:\n%s", av.id, got ? got : "-\n");
        free(got);
    }
}

/* Everything the ledger shows, as text: equal snapshots mean equal states. */
static char *snapshot(const ledger *s)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    cr_assert_not_null(f);
    ledger_counts n;
    ledger_get_counts(s, &n);
    fprintf(f, "events %" PRIu64 " last %" PRIu64 " at %" PRIu64 "\n", ledger_events(s),
            ledger_last_seq(s), ledger_last_ts(s));
    fprintf(f,
            "counts %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
            " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
            n.frames, n.allocations, n.avrop, n.decisions, n.adjustments, n.withdrawals,
            n.reductions, n.reversals, n.units);
    size_t i = 0;
    ledger_frame_view fv;
    while (ledger_next_frame(s, &i, NULL, 0, &fv))
        fprintf(f,
                "frame %s %s %d [%s] [%s] <%s> %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
                " %" PRId64 "\n",
                fv.id, fv.unit, (int)fv.year, fv.title, fv.reference, fv.continues, fv.granted,
                fv.allocated, fv.pending, fv.unallocated, fv.called_off);
    i = 0;
    ledger_year_view yv;
    while (ledger_next_year_row(s, &i, NULL, BUDGET_YEAR_MIN, BUDGET_YEAR_MAX, &yv))
        fprintf(f, "year %s %d %" PRId64 " %d %d %" PRId64 "\n", yv.unit, (int)yv.year, yv.budget,
                (int)yv.has_plan, (int)yv.plan_by, yv.plan);
    i = 0;
    while (ledger_next_frame(s, &i, NULL, 0, &fv))
        fprintf(f, "year-end %s %d %" PRId64 " %" PRId64 " [%s] %" PRId32 "\n", fv.id,
                (int)fv.closed, fv.unspent, fv.carried_over, fv.carried_from ? fv.carried_from : "",
                fv.avrop_last_day);
    i = 0;
    ledger_allocation_view av;
    while (ledger_next_allocation(s, &i, NULL, NULL, 0, &av))
        fprintf(f,
                "allocation %s %s %s %d [%s] %d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
                " %" PRId64 " %" PRId64 " %" PRId32 "\n",
                av.id, av.frame, av.unit, (int)av.year, av.purpose, (int)av.status, av.amount,
                av.called_off, av.pending, av.available, av.reduced, av.reducing,
                av.avrop_last_day);
    i = 0;
    ledger_avrop_view vv;
    while (ledger_next_avrop(s, &i, NULL, &vv))
        fprintf(f, "avrop %s %s %s %d %" PRId64 " [%s] %" PRId64 " %" PRId64 "\n", vv.id,
                vv.allocation, vv.unit, (int)vv.status, vv.amount, ledger_avrop_note(s, vv.id),
                vv.reversed, vv.reversing);
    i = 0;
    ledger_unit_view uv;
    while (ledger_next_unit(s, &i, NULL, 0, &uv))
        fprintf(f,
                "unit %s %d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
                "\n",
                uv.unit, (int)uv.year, uv.frames, uv.allocated, uv.called_off, uv.pending,
                uv.available, uv.reducing);
    i = 0;
    while (ledger_next_unit(s, &i, NULL, 0, &uv)) {
        ledger_outcome_view ov;
        ledger_outcome(s, uv.unit, uv.year, &ov);
        fprintf(f, "outcome %s %d %" PRId64 " %" PRId64 " %d:", uv.unit, (int)uv.year, ov.budget,
                ov.outcome, ov.last_month);
        for (int m = 0; m < OUTCOME_MONTHS; m++)
            fprintf(f, " %" PRId64, ov.months[m]);
        uint32_t cursor = 0;
        outcome_figure_view fig;
        while (outcome_next_figure(ledger_outcomes(s), uv.unit, uv.year, &cursor, &fig))
            fprintf(f, " [%d %s %" PRId64 " %" PRIu64 "]", fig.month, fig.allocation, fig.amount,
                    fig.seq);
        fprintf(f, "\n");
    }
    const registry *reg = ledger_registry(s);
    for (uint32_t k = 0; k < registry_count(reg); k++) {
        registry_view rv;
        registry_view_of(reg, k, &rv);
        fprintf(f, "registered %s [%s] [%s] [%s] %d %d", rv.code, rv.name, rv.kind, rv.parent,
                (int)rv.registered, (int)rv.closed);
        for (uint32_t former = 0; former < rv.former_count; former++)
            fprintf(f, " [%s]", registry_former_name(reg, k, former));
        fprintf(f, "\n");
    }
    print_positions(f, s);
    fclose(f);
    return buf;
}

/*
 * Checks `c` as `uid`; on success applies the event it makes with the next seq. Also checks
 * that an error comes with a message, and (while the ledger is small enough for it to be
 * cheap) that ledger_check never changes the state.
 */
static int submit_as(uint32_t uid, ledger_cmd c)
{
    ledger_actor a = actor(uid);
    bool small = ledger_events(l) < 300;
    char *before = small ? snapshot(l) : NULL;
    memset(&err, 0, sizeof err);
    /* The rules see the time the event is stamped with, as the daemon gives it. */
    c.ts_ms = entry_ms != 0 ? entry_ms : 1630000000000u + seq + 1;
    int rc = ledger_check(l, &c, &a, &last_ev, &existing_seq, &err);
    if (small) {
        char *after = snapshot(l);
        cr_assert_str_eq(before, after, "ledger_check changed the state");
        free(before);
        free(after);
    }
    if (rc == 0) {
        cr_assert_eq(last_ev.seq, 0);
        cr_assert_eq(last_ev.actor.uid, uid);
        cr_assert_eq(last_ev.ts_ms, c.ts_ms);
        last_ev.seq = ++seq;
        cr_assert_eq(ledger_apply(l, &last_ev), 0, "apply of a checked event failed");
        cr_assert_eq(ledger_last_seq(l), seq);
        cr_assert_eq(ledger_last_ts(l), last_ev.ts_ms);
    } else if (rc < 0) {
        cr_assert_eq(err.code, rc);
        cr_assert_gt(strlen(err.message), 0, "an error without a message");
    }
    return rc;
}

static int submit(ledger_cmd c)
{
    return submit_as(UID_KS, c);
}

#define OK(c) cr_assert_eq(submit(c), 0, "%s", err.message)
#define OK_AS(uid, c) cr_assert_eq(submit_as((uid), (c)), 0, "%s", err.message)
#define FAILS(c, code) cr_assert_eq(submit(c), (code), "got: %s", err.message)
#define FAILS_AS(uid, c, code) cr_assert_eq(submit_as((uid), (c)), (code), "got: %s", err.message)

/* KS, the board, and the committees SON, KFN and X under it. */
static void register_fixture_units(void)
{
    const ledger_cmd units[FIXTURE_EVENTS] = {
        register_unit("unit-KS", "KS", "Kommunstyrelsen", "styrelse", "", ""),
        register_unit("unit-SON", "SON", "Social- och omsorgsnämnden", "nämnd", "KS", ""),
        register_unit("unit-KFN", "KFN", "Kultur- och fritidsnämnden", "nämnd", "KS", ""),
        register_unit("unit-X", "X", "Nämnden X", "nämnd", "", ""),
    };
    for (size_t i = 0; i < FIXTURE_EVENTS; i++) {
        OK(units[i]);
        fixture_log[i] = last_ev;
    }
    cr_assert_eq(seq, FIXTURE_EVENTS);
}

/* A new ledger holding the fixture's registered units, as `l` does before a test's first
 * write: a replay of a test's log starts from it. */
static ledger *replica(void)
{
    ledger *r = ledger_new();
    cr_assert_not_null(r);
    for (size_t i = 0; i < FIXTURE_EVENTS; i++)
        cr_assert_eq(ledger_apply(r, &fixture_log[i]), 0);
    return r;
}

static void expect_frame(const char *id, int64_t granted, int64_t allocated, int64_t pending,
                         int64_t called_off)
{
    ledger_frame_view v;
    cr_assert(ledger_frame(l, id, &v), "no frame %s", id);
    cr_assert_str_eq(v.id, id);
    cr_assert_eq(v.granted, granted, "frame %s granted %" PRId64, id, v.granted);
    cr_assert_eq(v.allocated, allocated, "frame %s allocated %" PRId64, id, v.allocated);
    cr_assert_eq(v.pending, pending, "frame %s pending %" PRId64, id, v.pending);
    cr_assert_eq(v.unallocated, granted - allocated - pending, "frame %s unallocated", id);
    cr_assert_eq(v.called_off, called_off, "frame %s called_off %" PRId64, id, v.called_off);
}

static void expect_allocation(const char *id, ledger_status status, int64_t amount,
                              int64_t called_off, int64_t pending, int64_t available)
{
    ledger_allocation_view v;
    cr_assert(ledger_allocation(l, id, &v), "no allocation %s", id);
    cr_assert_eq(v.status, status, "allocation %s is %s", id, ledger_status_name(v.status));
    cr_assert_eq(v.amount, amount, "allocation %s amount", id);
    cr_assert_eq(v.called_off, called_off, "allocation %s called_off %" PRId64, id, v.called_off);
    cr_assert_eq(v.pending, pending, "allocation %s pending %" PRId64, id, v.pending);
    cr_assert_eq(v.available, available, "allocation %s available %" PRId64, id, v.available);
}

static void expect_unit(const char *unit, int32_t year, int64_t frames, int64_t allocated,
                        int64_t called_off, int64_t pending)
{
    size_t i = 0;
    ledger_unit_view v;
    cr_assert(ledger_next_unit(l, &i, unit, year, &v), "no unit row %s %d", unit, (int)year);
    cr_assert_str_eq(v.unit, unit);
    cr_assert_eq(v.year, year);
    cr_assert_eq(v.frames, frames, "unit %s frames %" PRId64, unit, v.frames);
    cr_assert_eq(v.allocated, allocated, "unit %s allocated %" PRId64, unit, v.allocated);
    cr_assert_eq(v.called_off, called_off, "unit %s called_off %" PRId64, unit, v.called_off);
    cr_assert_eq(v.pending, pending, "unit %s pending %" PRId64, unit, v.pending);
    cr_assert_eq(v.available, allocated - called_off - pending, "unit %s available", unit);
    cr_assert_not(ledger_next_unit(l, &i, unit, year, &v), "two rows for %s %d", unit, (int)year);
}

static void expect_avrop(const char *id, ledger_status status, int64_t amount)
{
    ledger_avrop_view v;
    cr_assert(ledger_avrop(l, id, &v), "no avrop %s", id);
    cr_assert_eq(v.status, status, "avrop %s is %s", id, ledger_status_name(v.status));
    cr_assert_eq(v.amount, amount);
}

/* A frame of 1 mkr for KS in 2021 with one approved allocation of 0.4 mkr to SON. */
static void small_state(void)
{
    OK(grant("f1", "KS", 2021, 100000000, "Ram", "KS 2021-08-24 § 241"));
    OK(propose("a1", "f1", "SON", 40000000, "Fältorganisation"));
    OK_AS(UID_DECIDER, approve("d1", "a1"));
}

/* ---- the source document -------------------------------------------------------------------- */

Test(ledger, source_document_scenario)
{
    OK(grant("KS-2021", "KS", 2021, 300000000, "Utökat trygghetsarbete", "KS 2021-08-24 § 241"));
    expect_frame("KS-2021", 300000000, 0, 0, 0);
    expect_unit("KS", 2021, 300000000, 0, 0, 0);

    OK(propose("a-son", "KS-2021", "SON", 100000000, "Områdesarbete för trygghet"));
    OK(propose("a-kfn", "KS-2021", "KFN", 50000000, "Fritidsverksamhet och skolgång"));
    OK(propose("a-ks", "KS-2021", "KS", 150000000, "Ordningsvakter och civilsamhälle"));
    expect_frame("KS-2021", 300000000, 0, 300000000, 0);

    /* The frame is exactly full: one more öre does not fit. */
    FAILS(propose("a-extra", "KS-2021", "KS", 1, "Mer"), BUDGET_EINSUFFICIENT_FUNDS);
    cr_assert_str_eq(err.message, "allocation a-extra of 1 öre does not fit frame KS-2021: "
                                  "300000000 of 300000000 öre approved or pending");
    cr_assert_eq(ledger_id_kind(l, "a-extra"), 0);

    expect_allocation("a-son", LEDGER_PENDING, 100000000, 0, 0, 0);
    OK_AS(UID_DECIDER, approve("d-son", "a-son"));
    OK_AS(UID_DECIDER, approve("d-kfn", "a-kfn"));
    OK_AS(UID_DECIDER, approve("d-ks", "a-ks"));
    expect_frame("KS-2021", 300000000, 300000000, 0, 0);
    expect_allocation("a-son", LEDGER_APPROVED, 100000000, 0, 0, 100000000);
    expect_allocation("a-kfn", LEDGER_APPROVED, 50000000, 0, 0, 50000000);
    expect_allocation("a-ks", LEDGER_APPROVED, 150000000, 0, 0, 150000000);
    expect_unit("KS", 2021, 300000000, 150000000, 0, 0);
    expect_unit("SON", 2021, 0, 100000000, 0, 0);
    expect_unit("KFN", 2021, 0, 50000000, 0, 0);

    /* SON calls off the whole 1 mkr: one öre more does not fit. */
    FAILS_AS(UID_SON, avrop("v-son", "a-son", 100000001, "Hösten 2021"),
             BUDGET_EINSUFFICIENT_FUNDS);
    OK_AS(UID_SON, avrop("v-son", "a-son", 100000000, "Hösten 2021"));
    expect_allocation("a-son", LEDGER_APPROVED, 100000000, 0, 100000000, 0);
    expect_unit("SON", 2021, 0, 100000000, 0, 100000000);
    expect_frame("KS-2021", 300000000, 300000000, 0, 0);
    FAILS_AS(UID_SON, avrop("v-son2", "a-son", 1, ""), BUDGET_EINSUFFICIENT_FUNDS);

    OK_AS(UID_DECIDER, approve("d-v-son", "v-son"));
    expect_avrop("v-son", LEDGER_APPROVED, 100000000);
    expect_allocation("a-son", LEDGER_APPROVED, 100000000, 100000000, 0, 0);
    expect_unit("SON", 2021, 0, 100000000, 100000000, 0);
    expect_frame("KS-2021", 300000000, 300000000, 0, 100000000);
    FAILS_AS(UID_SON, avrop("v-son2", "a-son", 1, ""), BUDGET_EINSUFFICIENT_FUNDS);

    /* KFN calls off part, is rejected, and calls off again. */
    OK(avrop("v-kfn", "a-kfn", 20000000, "Första delen"));
    expect_unit("KFN", 2021, 0, 50000000, 0, 20000000);
    OK_AS(UID_DECIDER, reject("r-kfn", "v-kfn"));
    expect_avrop("v-kfn", LEDGER_REJECTED, 20000000);
    expect_allocation("a-kfn", LEDGER_APPROVED, 50000000, 0, 0, 50000000);
    expect_unit("KFN", 2021, 0, 50000000, 0, 0);
    OK(avrop("v-kfn2", "a-kfn", 50000000, ""));
    OK_AS(UID_DECIDER, approve("d-kfn2", "v-kfn2"));
    expect_allocation("a-kfn", LEDGER_APPROVED, 50000000, 50000000, 0, 0);
    expect_unit("KFN", 2021, 0, 50000000, 50000000, 0);
    expect_frame("KS-2021", 300000000, 300000000, 0, 150000000);

    /* Units are listed in order of first appearance. */
    const char *order[] = {"KS", "SON", "KFN"};
    size_t i = 0, k = 0;
    ledger_unit_view uv;
    while (ledger_next_unit(l, &i, NULL, 0, &uv)) {
        cr_assert_lt(k, 3);
        cr_assert_str_eq(uv.unit, order[k++]);
    }
    cr_assert_eq(k, 3);

    ledger_counts n;
    ledger_get_counts(l, &n);
    cr_assert_eq(n.frames, 1);
    cr_assert_eq(n.allocations, 3);
    cr_assert_eq(n.avrop, 3);
    cr_assert_eq(n.decisions, 6);
    cr_assert_eq(n.adjustments, 0);
    cr_assert_eq(n.withdrawals, 0);
    cr_assert_eq(n.units, 3);
    cr_assert_eq(ledger_events(l), FIXTURE_EVENTS + 13);
    cr_assert_eq(ledger_last_seq(l), FIXTURE_EVENTS + 13);
}

/* ---- reservations ---------------------------------------------------------------------------- */

Test(ledger, pending_allocations_reserve_the_frame)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    OK(propose("a1", "f1", "SON", 600, "Först"));
    FAILS(propose("a2", "f1", "KFN", 401, "Sen"), BUDGET_EINSUFFICIENT_FUNDS);
    cr_assert_str_eq(err.message, "allocation a2 of 401 öre does not fit frame f1: 600 of 1000 "
                                  "öre approved or pending");
    OK(propose("a2", "f1", "KFN", 400, "Sen"));
    FAILS(propose("a3", "f1", "KFN", 1, "Ännu"), BUDGET_EINSUFFICIENT_FUNDS);
    expect_frame("f1", 1000, 0, 1000, 0);

    /* A rejection releases the reservation. */
    OK_AS(UID_DECIDER, reject("r1", "a1"));
    expect_allocation("a1", LEDGER_REJECTED, 600, 0, 0, 0);
    expect_frame("f1", 1000, 0, 400, 0);
    FAILS(propose("a3", "f1", "KFN", 601, "Ännu"), BUDGET_EINSUFFICIENT_FUNDS);
    OK(propose("a3", "f1", "KFN", 600, "Ännu"));

    /* So does a withdrawal by the proposer. */
    OK(withdraw("w3", "a3", "Fel belopp"));
    expect_allocation("a3", LEDGER_WITHDRAWN, 600, 0, 0, 0);
    expect_frame("f1", 1000, 0, 400, 0);
    OK(propose("a4", "f1", "KFN", 600, "Rätt belopp"));
    expect_frame("f1", 1000, 0, 1000, 0);
}

Test(ledger, pending_avrop_reserve_the_allocation)
{
    small_state();
    OK_AS(UID_SON, avrop("v1", "a1", 30000000, ""));
    FAILS_AS(UID_SON, avrop("v2", "a1", 10000001, ""), BUDGET_EINSUFFICIENT_FUNDS);
    cr_assert_str_eq(err.message, "avrop v2 of 10000001 öre does not fit allocation a1: "
                                  "30000000 of 40000000 öre called off or pending");
    OK_AS(UID_SON, avrop("v2", "a1", 10000000, ""));
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 0, 40000000, 0);
    expect_unit("SON", 2021, 0, 40000000, 0, 40000000);

    OK_AS(UID_SON, withdraw("w1", "v1", ""));
    expect_avrop("v1", LEDGER_WITHDRAWN, 30000000);
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 0, 10000000, 30000000);
    expect_unit("SON", 2021, 0, 40000000, 0, 10000000);

    OK_AS(UID_DECIDER, approve("d2", "v2"));
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 10000000, 0, 30000000);
    expect_unit("SON", 2021, 0, 40000000, 10000000, 0);
    expect_frame("f1", 100000000, 40000000, 0, 10000000);
}

/* ---- frame.adjusted -----------------------------------------------------------------------------
 */

Test(ledger, adjust_down_to_exactly_allocated_and_pending)
{
    small_state();
    OK(propose("a2", "f1", "KFN", 10000000, "Fritid"));
    /* 40000000 approved + 10000000 pending = 50000000 */
    FAILS(adjust("j1", "f1", -50000001, "Minskning", ""), BUDGET_EINSUFFICIENT_FUNDS);
    cr_assert_str_eq(err.message, "frame f1 cannot fall to 49999999 öre: 50000000 öre of it is "
                                  "approved or pending");
    OK(adjust("j1", "f1", -50000000, "Minskning", "KS 2021-10-01 § 300"));
    expect_frame("f1", 50000000, 40000000, 10000000, 0);
    expect_unit("KS", 2021, 50000000, 0, 0, 0);
    FAILS(adjust("j2", "f1", -1, "Lite till", ""), BUDGET_EINSUFFICIENT_FUNDS);
    FAILS(propose("a3", "f1", "KFN", 1, "Mer"), BUDGET_EINSUFFICIENT_FUNDS);

    /* Withdrawing the pending allocation frees room to reduce. */
    OK(withdraw("w2", "a2", ""));
    OK(adjust("j2", "f1", -10000000, "Minskning", ""));
    expect_frame("f1", 40000000, 40000000, 0, 0);

    /* A frame may rise again, and derived fields come from the frame. */
    OK(adjust("j3", "f1", 5, "Tilläggsanslag", ""));
    cr_assert_str_eq(last_ev.unit, "KS");
    cr_assert_eq(last_ev.year, 2021);
    cr_assert_eq(last_ev.amount, 5);
    expect_frame("f1", 40000005, 40000000, 0, 0);
    expect_unit("KS", 2021, 40000005, 0, 0, 0);
    ledger_counts n;
    ledger_get_counts(l, &n);
    cr_assert_eq(n.adjustments, 3);
}

Test(ledger, adjust_to_zero_with_nothing_allocated)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    OK(adjust("j1", "f1", -1000, "Indragen", ""));
    expect_frame("f1", 0, 0, 0, 0);
    FAILS(propose("a1", "f1", "SON", 1, "Inget"), BUDGET_EINSUFFICIENT_FUNDS);
    FAILS(adjust("j2", "f1", -1, "Under noll", ""), BUDGET_EINSUFFICIENT_FUNDS);
}

Test(ledger, adjust_above_the_amount_limit)
{
    OK(grant("f1", "KS", 2021, MAX - 10, "Ram", ""));
    FAILS(adjust("j1", "f1", 11, "För mycket", ""), BUDGET_EBAD_REQUEST);
    OK(adjust("j1", "f1", 10, "Precis", ""));
    expect_frame("f1", MAX, 0, 0, 0);
    FAILS(adjust("j2", "f1", 1, "För mycket", ""), BUDGET_EBAD_REQUEST);
    FAILS(adjust("j2", "f1", MAX, "För mycket", ""), BUDGET_EBAD_REQUEST);
    OK(adjust("j2", "f1", -MAX, "Allt", ""));
    expect_frame("f1", 0, 0, 0, 0);
}

Test(ledger, adjust_needs_a_frame)
{
    small_state();
    FAILS(adjust("j1", "nope", 1, "Öka", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "frame nope does not exist");
    FAILS(adjust("j1", "a1", 1, "Öka", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "a1 is an allocation, not a frame");
    FAILS(adjust("j1", "d1", 1, "Öka", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "d1 is a decision, not a frame");
}

/* ---- allocation.proposed ------------------------------------------------------------------------
 */

Test(ledger, propose_needs_a_frame_and_derives_its_year)
{
    OK(grant("f1", "KS", 2022, 1000, "Ram", ""));
    FAILS(propose("a1", "nope", "SON", 1, "X"), BUDGET_ENOT_FOUND);
    OK(propose("a1", "f1", "SON", 1000, "X"));
    FAILS(propose("a2", "a1", "SON", 1, "X"), BUDGET_ENOT_FOUND);
    FAILS(propose("a3", "f1", "SON", 1, "X"), BUDGET_EINSUFFICIENT_FUNDS);
    OK(adjust("j1", "f1", 1, "Öka", ""));
    OK(propose("a3", "f1", "SON", 1, "X"));
    cr_assert_eq(last_ev.year, 2022);
    cr_assert_str_eq(last_ev.frame, "f1");
    cr_assert_str_eq(last_ev.unit, "SON");
    /* The allocation made the receiving unit's row, in the frame's year. */
    expect_unit("SON", 2022, 0, 0, 0, 0);
    expect_allocation("a3", LEDGER_PENDING, 1, 0, 0, 0);
    ledger_allocation_view v;
    cr_assert(ledger_allocation(l, "a3", &v));
    cr_assert_str_eq(v.frame, "f1");
    cr_assert_str_eq(v.unit, "SON");
    cr_assert_eq(v.year, 2022);
    cr_assert_str_eq(v.purpose, "X");
}

Test(ledger, amounts_at_the_limit_fit_exactly)
{
    OK(grant("f1", "KS", 2021, MAX, "Ram", ""));
    OK(propose("a1", "f1", "SON", MAX, "Allt"));
    OK_AS(UID_DECIDER, approve("d1", "a1"));
    OK_AS(UID_SON, avrop("v1", "a1", MAX, "Allt"));
    OK_AS(UID_DECIDER, approve("d2", "v1"));
    expect_frame("f1", MAX, MAX, 0, MAX);
    expect_allocation("a1", LEDGER_APPROVED, MAX, MAX, 0, 0);
    expect_unit("SON", 2021, 0, MAX, MAX, 0);
}

/* ---- avrop.requested
 * ------------------------------------------------------------------------------ */

Test(ledger, avrop_needs_an_approved_allocation)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    OK(propose("a-pending", "f1", "SON", 100, "X"));
    OK(propose("a-rejected", "f1", "SON", 100, "X"));
    OK(propose("a-withdrawn", "f1", "SON", 100, "X"));
    OK_AS(UID_DECIDER, reject("r1", "a-rejected"));
    OK(withdraw("w1", "a-withdrawn", ""));

    FAILS_AS(UID_SON, avrop("v1", "a-pending", 1, ""), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "allocation a-pending is pending; an avrop needs an approved allocation");
    FAILS_AS(UID_SON, avrop("v1", "a-rejected", 1, ""), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "allocation a-rejected is rejected; an avrop needs an approved allocation");
    FAILS_AS(UID_SON, avrop("v1", "a-withdrawn", 1, ""), BUDGET_EINVALID_STATE);
    FAILS_AS(UID_SON, avrop("v1", "nope", 1, ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "allocation nope does not exist");
    FAILS_AS(UID_SON, avrop("v1", "f1", 1, ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "f1 is a frame, not an allocation");
}

Test(ledger, avrop_derives_frame_unit_and_year)
{
    small_state();
    OK_AS(UID_SON, avrop("v1", "a1", 5, "Första avropet"));
    cr_assert_eq(last_ev.type, LEDGER_AVROP_REQUESTED);
    cr_assert_str_eq(last_ev.allocation, "a1");
    cr_assert_str_eq(last_ev.frame, "f1");
    cr_assert_str_eq(last_ev.unit, "SON");
    cr_assert_eq(last_ev.year, 2021);
    cr_assert_eq(last_ev.amount, 5);
    cr_assert_str_eq(last_ev.note, "Första avropet");
    cr_assert_str_eq(last_ev.actor.name, "user1002");
    ledger_avrop_view v;
    cr_assert(ledger_avrop(l, "v1", &v));
    cr_assert_str_eq(v.id, "v1");
    cr_assert_str_eq(v.allocation, "a1");
    cr_assert_str_eq(v.unit, "SON");
    cr_assert_eq(v.status, LEDGER_PENDING);
    cr_assert_str_eq(ledger_avrop_note(l, "v1"), "Första avropet");
    cr_assert_null(ledger_avrop_note(l, "a1"));
}

/* ---- decisions and withdrawals
 * ---------------------------------------------------------------------- */

Test(ledger, decisions_need_a_pending_allocation_or_avrop)
{
    small_state();
    FAILS_AS(UID_DECIDER, approve("d2", "nope"), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "target nope does not exist");
    FAILS_AS(UID_DECIDER, reject("d2", "nope"), BUDGET_ENOT_FOUND);
    FAILS_AS(UID_DECIDER, approve("d2", "f1"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(
        err.message,
        "target f1 is a frame; only an allocation, an avrop, a reduction or a reversal "
        "can be approved");
    FAILS_AS(UID_DECIDER, reject("d2", "d1"), BUDGET_EINVALID_STATE);
    FAILS_AS(UID_DECIDER, approve("d2", "a1"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "allocation a1 is approved, not pending; it cannot be approved");
    FAILS_AS(UID_DECIDER, reject("d2", "a1"), BUDGET_EINVALID_STATE);
    FAILS(withdraw("w2", "a1", ""), BUDGET_EINVALID_STATE);

    OK(adjust("j1", "f1", 1, "Öka", ""));
    FAILS_AS(UID_DECIDER, approve("d2", "j1"), BUDGET_EINVALID_STATE);
    OK_AS(UID_SON, avrop("v1", "a1", 5, ""));
    OK_AS(UID_DECIDER, reject("d2", "v1"));
    FAILS_AS(UID_DECIDER, approve("d3", "v1"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "avrop v1 is rejected, not pending; it cannot be approved");
    FAILS_AS(UID_SON, withdraw("w3", "v1", ""), BUDGET_EINVALID_STATE);
    FAILS_AS(UID_DECIDER, approve("d3", "d2"), BUDGET_EINVALID_STATE);
    OK_AS(UID_SON, avrop("v2", "a1", 5, ""));
    OK_AS(UID_SON, withdraw("w2", "v2", ""));
    FAILS_AS(UID_SON, withdraw("w3", "w2", ""), BUDGET_EINVALID_STATE);
    FAILS_AS(UID_DECIDER, approve("d3", "v2"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "avrop v2 is withdrawn, not pending; it cannot be approved");
}

Test(ledger, decisions_derive_the_target)
{
    small_state();
    OK(propose("a2", "f1", "KFN", 7, "Fritid"));
    OK_AS(UID_DECIDER,
          decide(LEDGER_DECISION_REJECTED, "d2", "a2", "KS 2021-10-12 § 301", "Ej i år"));
    cr_assert_eq(last_ev.type, LEDGER_DECISION_REJECTED);
    cr_assert_eq(last_ev.target_kind, LEDGER_KIND_ALLOCATION);
    cr_assert_str_eq(last_ev.target, "a2");
    cr_assert_str_eq(last_ev.frame, "f1");
    cr_assert_str_eq(last_ev.unit, "KFN");
    cr_assert_eq(last_ev.year, 2021);
    cr_assert_eq(last_ev.amount, 7);
    cr_assert_str_eq(last_ev.reference, "KS 2021-10-12 § 301");
    cr_assert_str_eq(last_ev.note, "Ej i år");
    cr_assert_eq(last_ev.actor.uid, UID_DECIDER);

    OK_AS(UID_SON, avrop("v1", "a1", 9, ""));
    OK_AS(UID_SON, withdraw("w1", "v1", "Ångrat"));
    cr_assert_eq(last_ev.target_kind, LEDGER_KIND_AVROP);
    cr_assert_str_eq(last_ev.frame, "f1");
    cr_assert_str_eq(last_ev.unit, "SON");
    cr_assert_eq(last_ev.year, 2021);
    cr_assert_eq(last_ev.amount, 9);
    cr_assert_str_eq(last_ev.note, "Ångrat");
    ledger_counts n;
    ledger_get_counts(l, &n);
    cr_assert_eq(n.decisions, 2);
    cr_assert_eq(n.withdrawals, 1);
}

Test(ledger, only_the_proposer_may_withdraw)
{
    small_state();
    OK(propose("a2", "f1", "KFN", 7, "Fritid"));
    FAILS_AS(UID_SON, withdraw("w1", "a2", ""), BUDGET_EFORBIDDEN);
    cr_assert_str_eq(err.message, "allocation a2 was proposed by uid 1001; uid 1002 may not "
                                  "withdraw it");
    FAILS_AS(UID_DECIDER, withdraw("w1", "a2", ""), BUDGET_EFORBIDDEN);
    expect_allocation("a2", LEDGER_PENDING, 7, 0, 0, 0);
    OK_AS(UID_KS, withdraw("w1", "a2", ""));

    OK_AS(UID_SON, avrop("v1", "a1", 9, ""));
    FAILS_AS(UID_KS, withdraw("w2", "v1", ""), BUDGET_EFORBIDDEN);
    cr_assert_str_eq(err.message, "avrop v1 was requested by uid 1002; uid 1001 may not "
                                  "withdraw it");
    OK_AS(UID_SON, withdraw("w2", "v1", ""));
}

Test(ledger, four_eyes_the_proposer_never_decides_its_allocation)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    OK(propose("a1", "f1", "SON", 100, "X"));
    FAILS_AS(UID_KS, approve("d1", "a1"), BUDGET_EFORBIDDEN);
    cr_assert_str_eq(err.message, "allocation a1 was proposed by uid 1001; it must be approved "
                                  "by another identity (four-eyes)");
    FAILS_AS(UID_KS, reject("d1", "a1"), BUDGET_EFORBIDDEN);
    cr_assert_str_eq(err.message, "allocation a1 was proposed by uid 1001; it must be rejected "
                                  "by another identity (four-eyes)");
    expect_allocation("a1", LEDGER_PENDING, 100, 0, 0, 0);
    /* The refusal took nothing: the id is free, and another identity decides. */
    OK_AS(UID_DECIDER, approve("d1", "a1"));
    cr_assert_eq(last_ev.actor.uid, UID_DECIDER);
    expect_allocation("a1", LEDGER_APPROVED, 100, 0, 0, 100);
}

Test(ledger, four_eyes_the_requester_never_decides_its_avrop)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    OK(propose("a1", "f1", "SON", 100, "X"));
    OK_AS(UID_DECIDER, approve("d1", "a1"));
    OK_AS(UID_SON, avrop("v1", "a1", 40, ""));
    OK_AS(UID_SON, avrop("v2", "a1", 10, ""));
    FAILS_AS(UID_SON, approve("d2", "v1"), BUDGET_EFORBIDDEN);
    cr_assert_str_eq(err.message, "avrop v1 was requested by uid 1002; it must be approved by "
                                  "another identity (four-eyes)");
    FAILS_AS(UID_SON, reject("d2", "v2"), BUDGET_EFORBIDDEN);
    /* Whoever made the allocation's decision may decide its avrop: only the requester may not. */
    OK_AS(UID_DECIDER, approve("d2", "v1"));
    OK_AS(UID_KS, reject("d3", "v2"));
    expect_allocation("a1", LEDGER_APPROVED, 100, 40, 0, 60);
    /* The requester still withdraws its own: four-eyes is about deciding. */
    OK_AS(UID_SON, avrop("v3", "a1", 5, ""));
    OK_AS(UID_SON, withdraw("w1", "v3", ""));
}

/* ---- ids ----------------------------------------------------------------------------------------
 */

Test(ledger, a_taken_id_returns_the_seq_that_created_it)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", "")); /* 1 */
    OK(propose("a1", "f1", "SON", 100, "X"));     /* 2 */
    OK_AS(UID_DECIDER, approve("d1", "a1"));      /* 3 */
    OK(adjust("j1", "f1", 5, "Öka", ""));         /* 4 */
    OK_AS(UID_SON, avrop("v1", "a1", 1, ""));     /* 5 */
    OK_AS(UID_SON, withdraw("w1", "v1", ""));     /* 6 */
    const char *ids[] = {"f1", "a1", "d1", "j1", "v1", "w1"};
    for (uint64_t k = 0; k < 6; k++) {
        const char *id = ids[k];
        ledger_cmd cmds[] = {
            grant(id, "KS", 2021, 1, "T", ""),
            adjust(id, "f1", 1, "R", ""),
            propose(id, "f1", "SON", 1, "P"),
            avrop(id, "a1", 1, ""),
            approve(id, "a1"),
            reject(id, "v1"),
            withdraw(id, "zz", ""),
        };
        for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++) {
            existing_seq = 0;
            cr_assert_eq(submit(cmds[c]), 1, "id %s type %d", id, (int)cmds[c].type);
            cr_assert_eq(existing_seq, FIXTURE_EVENTS + k + 1, "id %s", id);
        }
    }
    /* Field syntax comes first. */
    FAILS(grant("f1", "KS", 2021, 0, "T", ""), BUDGET_EBAD_REQUEST);
    cr_assert_eq(ledger_id_kind(l, "f1"), LEDGER_KIND_FRAME);
    cr_assert_eq(ledger_id_kind(l, "a1"), LEDGER_KIND_ALLOCATION);
    cr_assert_eq(ledger_id_kind(l, "d1"), LEDGER_KIND_DECISION);
    cr_assert_eq(ledger_id_kind(l, "j1"), LEDGER_KIND_ADJUSTMENT);
    cr_assert_eq(ledger_id_kind(l, "v1"), LEDGER_KIND_AVROP);
    cr_assert_eq(ledger_id_kind(l, "w1"), LEDGER_KIND_WITHDRAWAL);
    cr_assert_eq(ledger_id_kind(l, "x1"), 0);
    cr_assert_eq(ledger_id_kind(l, ""), 0);
    cr_assert_eq(ledger_events(l), FIXTURE_EVENTS + 6);
}

Test(ledger, many_ids_survive_table_growth)
{
    OK(grant("f0", "KS", 2021, MAX, "Ram", ""));
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "a-%d", i);
        OK(propose(id, "f0", i % 2 ? "SON" : "KFN", 1000 + i, "X"));
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "a-%d", i);
        expect_allocation(id, LEDGER_PENDING, 1000 + i, 0, 0, 0);
        existing_seq = 0;
        cr_assert_eq(submit(grant(id, "KS", 2021, 1, "T", "")), 1);
        cr_assert_eq(existing_seq, FIXTURE_EVENTS + (uint64_t)i + 2);
    }
    cr_assert_eq(ledger_id_kind(l, "a-5000"), 0);
}

/* ---- field syntax
 * -------------------------------------------------------------------------------- */

static void fill(char *dst, char c, size_t n)
{
    memset(dst, c, n);
}

Test(ledger, ids_are_1_to_64_of_the_id_characters)
{
    OK(grant("Az09._:-", "KS", 2021, 1, "T", ""));
    ledger_cmd c = intended(grant("x", "KS", 2021, 1, "T", ""));
    fill(c.id, 'i', 64);
    c.id[64] = '\0';
    OK(c);
    fill(c.id, 'j', 65); /* 65 bytes, no room for the NUL */
    FAILS(c, BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "id must be 1..64 characters of A-Za-z0-9._:-");
    const char *bad[] = {"", "a b", "a/b", "å", "a#", "a\tb", "a,b", "a+b", "a\"b", "~"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        FAILS(grant(bad[i], "KS", 2021, 1, "T", ""), BUDGET_EBAD_REQUEST);
    /* and for every other id field */
    OK(propose("a1", "Az09._:-", "SON", 1, "X"));
    FAILS(propose("a2", "f 1", "SON", 1, "X"), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "frame must be 1..64 characters of A-Za-z0-9._:-");
    FAILS(adjust("j1", "", 1, "R", ""), BUDGET_EBAD_REQUEST);
    FAILS(avrop("v1", "a/1", 1, ""), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "allocation must be 1..64 characters of A-Za-z0-9._:-");
    FAILS(approve("d1", "a 1"), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "target must be 1..64 characters of A-Za-z0-9._:-");
    FAILS(reject("d1", ""), BUDGET_EBAD_REQUEST);
    FAILS(withdraw("w1", "ä", ""), BUDGET_EBAD_REQUEST);
    c = withdraw("w1", "x", "");
    fill(c.target, 't', 65);
    FAILS(c, BUDGET_EBAD_REQUEST);
    FAILS(withdraw("w 1", "a1", ""), BUDGET_EBAD_REQUEST);

    cr_assert(ledger_valid_id("a", 1));
    cr_assert_not(ledger_valid_id("a", 0));
    char long_id[80];
    fill(long_id, 'k', sizeof long_id);
    cr_assert(ledger_valid_id(long_id, 64));
    cr_assert_not(ledger_valid_id(long_id, 65));
    for (int ch = 1; ch < 256; ch++) {
        char s[1] = {(char)ch};
        bool expected = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                        (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
                        ch == '-';
        cr_assert_eq(ledger_valid_id(s, 1), expected, "character %d", ch);
    }
}

Test(ledger, units_are_1_to_32_of_the_id_characters)
{
    ledger_cmd c = grant("f1", "x", 2021, 1, "T", "");
    fill(c.unit, 'U', 32);
    c.unit[32] = '\0';
    OK(register_unit("u-long", c.unit, "Lång", "nämnd", "", ""));
    OK(register_unit("u-dots", "S.O-N:1_", "Punkter", "verksamhet", "", ""));
    OK(c);
    c = grant("f2", "x", 2021, 1, "T", "");
    fill(c.unit, 'U', 33);
    FAILS(c, BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "unit must be 1..32 characters of A-Za-z0-9._:-");
    FAILS(grant("f2", "", 2021, 1, "T", ""), BUDGET_EBAD_REQUEST);
    FAILS(grant("f2", "K S", 2021, 1, "T", ""), BUDGET_EBAD_REQUEST);
    FAILS(propose("a1", "f1", "SÖN", 1, "X"), BUDGET_EBAD_REQUEST);
    OK(propose("a1", "f1", "S.O-N:1_", 1, "X"));
    char u[40];
    fill(u, 'u', sizeof u);
    cr_assert(ledger_valid_unit(u, 32));
    cr_assert_not(ledger_valid_unit(u, 33));
    cr_assert_not(ledger_valid_unit(u, 0));
}

Test(ledger, years_are_1900_to_9999)
{
    FAILS(grant("f1", "KS", 1899, 1, "T", ""), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "year 1899 is not within 1900..9999");
    FAILS(grant("f1", "KS", 10000, 1, "T", ""), BUDGET_EBAD_REQUEST);
    FAILS(grant("f1", "KS", 0, 1, "T", ""), BUDGET_EBAD_REQUEST);
    FAILS(grant("f1", "KS", -2021, 1, "T", ""), BUDGET_EBAD_REQUEST);
    OK(grant("f1", "KS", 1900, 1, "T", ""));
    OK(grant("f2", "KS", 9999, 1, "T", ""));
    expect_unit("KS", 1900, 1, 0, 0, 0);
    expect_unit("KS", 9999, 1, 0, 0, 0);
}

Test(ledger, amounts_are_1_to_10_to_the_15)
{
    FAILS(grant("f1", "KS", 2021, 0, "T", ""), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "amount 0 öre is not within 1..1000000000000000 öre");
    FAILS(grant("f1", "KS", 2021, -1, "T", ""), BUDGET_EBAD_REQUEST);
    FAILS(grant("f1", "KS", 2021, MAX + 1, "T", ""), BUDGET_EBAD_REQUEST);
    FAILS(grant("f1", "KS", 2021, INT64_MIN, "T", ""), BUDGET_EBAD_REQUEST);
    FAILS(grant("f1", "KS", 2021, INT64_MAX, "T", ""), BUDGET_EBAD_REQUEST);
    OK(grant("f1", "KS", 2021, 1, "T", ""));
    OK(grant("f2", "KS", 2021, MAX, "T", ""));

    FAILS(propose("a1", "f2", "SON", 0, "X"), BUDGET_EBAD_REQUEST);
    FAILS(propose("a1", "f2", "SON", MAX + 1, "X"), BUDGET_EBAD_REQUEST);
    FAILS(propose("a1", "f2", "SON", -5, "X"), BUDGET_EBAD_REQUEST);
    OK(propose("a1", "f2", "SON", 1, "X"));
    OK(propose("a2", "f2", "SON", MAX - 1, "X"));
    OK_AS(UID_DECIDER, approve("d1", "a2"));

    FAILS(avrop("v1", "a2", 0, ""), BUDGET_EBAD_REQUEST);
    FAILS(avrop("v1", "a2", MAX + 1, ""), BUDGET_EBAD_REQUEST);
    FAILS(avrop("v1", "a2", -1, ""), BUDGET_EBAD_REQUEST);
    OK(avrop("v1", "a2", 1, ""));

    FAILS(adjust("j1", "f1", 0, "R", ""), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "delta 0 öre must be non-zero and within "
                                  "-1000000000000000..1000000000000000 öre");
    FAILS(adjust("j1", "f1", MAX + 1, "R", ""), BUDGET_EBAD_REQUEST);
    FAILS(adjust("j1", "f1", -MAX - 1, "R", ""), BUDGET_EBAD_REQUEST);
    FAILS(adjust("j1", "f1", INT64_MIN, "R", ""), BUDGET_EBAD_REQUEST);
    FAILS(adjust("j1", "f1", INT64_MAX, "R", ""), BUDGET_EBAD_REQUEST);
    OK(adjust("j1", "f1", -1, "R", ""));
    OK(adjust("j2", "f1", MAX, "R", ""));
    expect_frame("f1", MAX, 0, 0, 0);
}

/* Checks that the field at `off` in `c` takes `min`..256 bytes and refuses bad UTF-8 and controls.
 */
static void check_text_rules(ledger_cmd c, size_t off, size_t min, const char *name)
{
    static const char *bad[] = {
        "\xff",
        "a\xc3",
        "\xc0\xaf",
        "\xe0\x80\xaf",
        "\xed\xa0\x80",
        "\xf4\x90\x80\x80",
        "\xf8\x88\x80\x80\x80",
        "\x80",
        "a\x01",
        "\x1f",
        "a\x7f",
        "rad\nrad",
        "tab\t",
        "\xc2\x85",
        "\xc2\x9f",
        "\xe2\x82",
        "\xf0\x9f\x98",
    };
    static const char *good[] = {"Kultur- och fritidsnämnden", "KS 2021-09-28 § 270", "\xc2\xa0",
                                 "\xf0\x9f\x98\x80",           "\xef\xbf\xbd",        "~"};
    static int n = 0; /* ids unique across calls */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ledger_cmd t = c;
        snprintf(t.id, sizeof t.id, "bad-%s-%d", name, n++);
        strcpy((char *)&t + off, bad[i]);
        cr_assert_eq(submit(t), BUDGET_EBAD_REQUEST, "%s with bad text %zu: %s", name, i,
                     err.message);
        cr_assert(strstr(err.message, name) == err.message, "message: %s", err.message);
    }
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ledger_cmd t = c;
        snprintf(t.id, sizeof t.id, "good-%s-%d", name, n++);
        strcpy((char *)&t + off, good[i]);
        OK(t);
    }
    ledger_cmd t = c;
    /* 256 bytes: all ASCII, and all two-byte characters */
    snprintf(t.id, sizeof t.id, "good-%s-%d", name, n++);
    fill((char *)&t + off, 'x', 256);
    ((char *)&t + off)[256] = '\0';
    OK(t);
    snprintf(t.id, sizeof t.id, "good-%s-%d", name, n++);
    for (int i = 0; i < 128; i++)
        memcpy((char *)&t + off + 2 * i, "\xc3\xa4", 2);
    OK(t);
    /* 257 bytes: the field is full with no NUL */
    snprintf(t.id, sizeof t.id, "long-%s-%d", name, n++);
    fill((char *)&t + off, 'x', 257);
    FAILS(t, BUDGET_EBAD_REQUEST);
    /* empty */
    snprintf(t.id, sizeof t.id, "empty-%s-%d", name, n++);
    ((char *)&t + off)[0] = '\0';
    if (min == 0)
        OK(t);
    else
        FAILS(t, BUDGET_EBAD_REQUEST);
}

Test(ledger, text_fields)
{
    OK(grant("f0", "KS", 2021, MAX / 2, "Ram", ""));
    OK(propose("a0", "f0", "SON", 1000000, "X"));
    OK_AS(UID_DECIDER, approve("d0", "a0"));
    ledger_cmd c = intended(grant("x", "KS", 2021, 1, "T", ""));
    check_text_rules(c, offsetof(ledger_cmd, title), 1, "title");
    check_text_rules(c, offsetof(ledger_cmd, reference), 0, "reference");
    c = adjust("x", "f0", 1, "R", "");
    check_text_rules(c, offsetof(ledger_cmd, title), 1, "reason");
    check_text_rules(c, offsetof(ledger_cmd, reference), 0, "reference");
    c = propose("x", "f0", "SON", 1, "P");
    check_text_rules(c, offsetof(ledger_cmd, title), 1, "purpose");
    c = avrop("x", "a0", 1, "");
    check_text_rules(c, offsetof(ledger_cmd, note), 0, "note");
}

Test(ledger, decision_and_withdrawal_text_fields)
{
    OK(grant("f0", "KS", 2021, MAX, "Ram", ""));
    OK(propose("t-0-0-0", "f0", "KFN", 1, "X"));
    OK(propose("t-0-0-1", "f0", "KFN", 1, "X"));
    OK(propose("t-0-0-2", "f0", "KFN", 1, "X"));
    /* Bad texts are refused, in each text field of each type. */
    static const char *bad[] = {"\xff", "\xc0\xaf", "\xed\xa0\x80", "a\x01", "\x7f", "\xc2\x85"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FAILS_AS(UID_DECIDER, decide(LEDGER_DECISION_APPROVED, "d", "t-0-0-0", bad[i], ""),
                 BUDGET_EBAD_REQUEST);
        cr_assert(strncmp(err.message, "reference ", 10) == 0, "%s", err.message);
        FAILS_AS(UID_DECIDER, decide(LEDGER_DECISION_REJECTED, "d", "t-0-0-0", "", bad[i]),
                 BUDGET_EBAD_REQUEST);
        cr_assert(strncmp(err.message, "note ", 5) == 0, "%s", err.message);
        FAILS(withdraw("w", "t-0-0-0", bad[i]), BUDGET_EBAD_REQUEST);
        cr_assert(strncmp(err.message, "note ", 5) == 0, "%s", err.message);
    }
    /* 256 bytes fit, 257 do not. */
    ledger_cmd c = decide(LEDGER_DECISION_APPROVED, "d1", "t-0-0-0", "", "");
    fill(c.reference, 'r', 256);
    fill(c.note, 'n', 256);
    OK_AS(UID_DECIDER, c);
    c = decide(LEDGER_DECISION_REJECTED, "d2", "t-0-0-1", "", "");
    fill(c.reference, 'r', 257);
    FAILS_AS(UID_DECIDER, c, BUDGET_EBAD_REQUEST);
    c = decide(LEDGER_DECISION_REJECTED, "d2", "t-0-0-1", "", "");
    fill(c.note, 'n', 257);
    FAILS_AS(UID_DECIDER, c, BUDGET_EBAD_REQUEST);
    c = withdraw("w1", "t-0-0-1", "");
    fill(c.note, 'n', 256);
    OK(c);
    c = withdraw("w2", "t-0-0-2", "");
    fill(c.note, 'n', 257);
    FAILS(c, BUDGET_EBAD_REQUEST);
    OK(withdraw("w2", "t-0-0-2", ""));
}

Test(ledger, valid_text)
{
    char buf[300];
    fill(buf, 'a', sizeof buf);
    cr_assert(ledger_valid_text(buf, 256, 0));
    cr_assert_not(ledger_valid_text(buf, 257, 0));
    cr_assert(ledger_valid_text(buf, 0, 0));
    cr_assert_not(ledger_valid_text(buf, 0, 1));
    cr_assert(ledger_valid_text(buf, 1, 1));
    cr_assert_not(ledger_valid_text("\0", 1, 0), "a NUL is a control character");
    cr_assert(ledger_valid_text("\xc2\xa0", 2, 0));
    cr_assert_not(ledger_valid_text("\xc2\xa0", 1, 0), "cut short");
    cr_assert(ledger_valid_text("\xe0\xa0\x80", 3, 0), "U+0800");
    cr_assert_not(ledger_valid_text("\xe0\x9f\xbf", 3, 0), "overlong U+07FF");
    cr_assert(ledger_valid_text("\xed\x9f\xbf", 3, 0), "U+D7FF");
    cr_assert_not(ledger_valid_text("\xed\xbf\xbf", 3, 0), "surrogate U+DFFF");
    cr_assert(ledger_valid_text("\xee\x80\x80", 3, 0), "U+E000");
    cr_assert(ledger_valid_text("\xf4\x8f\xbf\xbf", 4, 0), "U+10FFFF");
    cr_assert_not(ledger_valid_text("\xf4\x90\x80\x80", 4, 0), "past U+10FFFF");
    cr_assert_not(ledger_valid_text("\xf0\x8f\xbf\xbf", 4, 0), "overlong U+FFFF");
    cr_assert_not(ledger_valid_text("\xc1\xbf", 2, 0), "overlong U+007F");
    cr_assert_not(ledger_valid_text("\xc2\x80", 2, 0), "C1 control U+0080");
    cr_assert(ledger_valid_text(" ", 1, 0));
    cr_assert(ledger_valid_text("~", 1, 0));
    cr_assert_not(ledger_valid_text("a\xe2\x82", 3, 0));
}

/* ---- limits of the unit table
 * ------------------------------------------------------------------------ */

Test(ledger, unit_totals_never_overflow)
{
    /* 9223 frames of 10^15 plus one of the rest fill a unit-year up to INT64_MAX exactly. */
    char id[32];
    int64_t rest = INT64_MAX - 9223 * MAX;
    for (int i = 0; i < 9224; i++) {
        snprintf(id, sizeof id, "f%d", i);
        OK(intended(grant(id, "KS", 2021, i < 9223 ? MAX : rest, "Ram", "")));
    }
    expect_unit("KS", 2021, INT64_MAX, 0, 0, 0);
    FAILS(grant("g", "KS", 2021, 1, "Ram", ""), BUDGET_ETOO_LARGE);
    FAILS(adjust("j", "f9223", 1, "Öka", ""), BUDGET_ETOO_LARGE);
    OK(adjust("j", "f9223", -1, "Minska", ""));
    OK(adjust("j2", "f9223", 1, "Öka", ""));
    OK(grant("g", "KS", 2022, 1, "Ram", "")); /* another year, another row */
    OK(grant("h", "KFN", 2021, 1, "Ram", ""));

    /* Allocations to SON from all of them fill SON's row up to INT64_MAX, then refuse. */
    for (int i = 0; i < 9224; i++) {
        char f[32];
        snprintf(f, sizeof f, "f%d", i);
        snprintf(id, sizeof id, "a%d", i);
        OK(propose(id, f, "SON", i < 9223 ? MAX : rest, "X"));
        snprintf(id, sizeof id, "d%d", i);
        char a[32];
        snprintf(a, sizeof a, "a%d", i);
        OK_AS(UID_DECIDER, approve(id, a));
    }
    expect_unit("SON", 2021, 0, INT64_MAX, 0, 0);
    OK(propose("a-last", "h", "SON", 1, "X"));
    FAILS_AS(UID_DECIDER, approve("d-last", "a-last"), BUDGET_ETOO_LARGE);
    OK_AS(UID_DECIDER, reject("d-last", "a-last"));
}

/* ---- ledger_same_request
 * -------------------------------------------------------------------------- */

static ledger_event made(ledger_cmd c, uint32_t uid)
{
    cr_assert_eq(submit_as(uid, c), 0, "%s", err.message);
    return last_ev;
}

Test(ledger, same_request)
{
    ledger_cmd g = grant("f1", "KS", 2021, 1000, "Ram", "KS 1");
    ledger_event e = made(g, UID_KS);
    cr_assert(ledger_same_request(&g, &e.actor, &e));
    ledger_cmd x = g;
    x.amount = 999;
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = g;
    x.year = 2022;
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = g;
    PUT(x.unit, "SON");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = g;
    PUT(x.title, "Ram2");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = g;
    PUT(x.reference, "");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = g;
    PUT(x.id, "f2");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = g;
    x.type = LEDGER_FRAME_ADJUSTED;
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    /* Not compared: the actor's name, seq, ts, and fields the type does not have. */
    ledger_event e2 = e;
    PUT(e2.actor.name, "another.name");
    e2.seq = 99;
    e2.ts_ms = 5;
    PUT(e2.note, "annat");
    cr_assert(ledger_same_request(&g, &e.actor, &e2));

    ledger_cmd j = adjust("j1", "f1", -5, "Minska", "ref");
    e = made(j, UID_KS);
    cr_assert(ledger_same_request(&j, &e.actor, &e));
    e2 = e;
    e2.year = 1999; /* derived */
    PUT(e2.unit, "ZZ");
    cr_assert(ledger_same_request(&j, &e2.actor, &e2));
    x = j;
    x.amount = 5;
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = j;
    PUT(x.frame, "f2");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = j;
    PUT(x.title, "Öka");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = j;
    PUT(x.reference, "ref2");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));

    ledger_cmd p = propose("a1", "f1", "SON", 100, "Syfte");
    e = made(p, UID_KS);
    cr_assert(ledger_same_request(&p, &e.actor, &e));
    e2 = e;
    e2.year = 1999;
    cr_assert(ledger_same_request(&p, &e2.actor, &e2));
    x = p;
    PUT(x.unit, "KFN");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = p;
    x.amount = 101;
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = p;
    PUT(x.title, "Annat");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = p;
    PUT(x.frame, "f9");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));

    ledger_cmd d = decide(LEDGER_DECISION_APPROVED, "d1", "a1", "KS § 1", "ok");
    e = made(d, UID_DECIDER);
    cr_assert(ledger_same_request(&d, &e.actor, &e));
    e2 = e;
    e2.amount = 1;
    e2.target_kind = LEDGER_KIND_AVROP;
    cr_assert(ledger_same_request(&d, &e2.actor, &e2));
    x = d;
    x.type = LEDGER_DECISION_REJECTED;
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = d;
    PUT(x.target, "a2");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = d;
    PUT(x.reference, "KS § 2");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = d;
    PUT(x.note, "");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));

    ledger_cmd v = avrop("v1", "a1", 10, "not");
    e = made(v, UID_SON);
    cr_assert(ledger_same_request(&v, &e.actor, &e));
    x = v;
    x.amount = 11;
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = v;
    PUT(x.note, "note");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = v;
    PUT(x.allocation, "a2");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));

    ledger_cmd w = withdraw("w1", "v1", "ångrar");
    e = made(w, UID_SON);
    cr_assert(ledger_same_request(&w, &e.actor, &e));
    x = w;
    PUT(x.note, "");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = w;
    PUT(x.target, "v2");
    cr_assert_not(ledger_same_request(&x, &e.actor, &e));
    x = w;
    PUT(x.reference, "ignored"); /* a withdrawal has no reference */
    cr_assert(ledger_same_request(&x, &e.actor, &e));
}

/*
 * A retry counts only from the uid that first sent it. A proposal by one uid, sent again with
 * the same id and content by another, is not the same request: were it answered ok, the
 * second uid would hold an acknowledgement of a proposal the log records as the first's, and
 * the four-eyes rule (no one decides their own proposal) would follow the log, not the
 * acknowledgement. The same uid under another name is the same request.
 */
Test(ledger, a_retry_counts_only_from_the_uid_that_sent_it)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", "KS 1"));
    ledger_cmd p = propose("a1", "f1", "SON", 100, "Syfte");
    ledger_event e = made(p, UID_KS);
    ledger_actor ks = actor(UID_KS), son = actor(UID_SON);
    cr_assert(ledger_same_request(&p, &ks, &e));
    cr_assert_not(ledger_same_request(&p, &son, &e), "another uid's identical proposal");
    PUT(ks.name, "renamed");
    cr_assert(ledger_same_request(&p, &ks, &e), "the same uid under another name");

    /* The id is taken whoever asks: the caller decides between retry and conflict. */
    cr_assert_eq(submit_as(UID_SON, p), 1);
    cr_assert_eq(existing_seq, e.seq);
    /* And the proposer stays the one the log names: it may not decide, the other may. */
    FAILS_AS(UID_KS, approve("d1", "a1"), BUDGET_EFORBIDDEN);
    OK_AS(UID_SON, approve("d1", "a1"));
}

/* ---- ledger_apply on events that break the rules
 * --------------------------------------------------- */

/* Applies `ev` with the next seq and expects a refusal that leaves the state as it was. */
static void expect_refused(ledger_event ev, const char *what)
{
    char *before = snapshot(l);
    if (ev.seq == 0)
        ev.seq = seq + 1;
    cr_assert_eq(ledger_apply(l, &ev), BUDGET_EINTERNAL, "applied: %s", what);
    char *after = snapshot(l);
    cr_assert_str_eq(before, after, "state changed by: %s", what);
    free(before);
    free(after);
}

/* A checked event for `c`, not applied. */
static ledger_event checked(ledger_cmd c, uint32_t uid)
{
    ledger_actor a = actor(uid);
    ledger_event ev;
    int rc = ledger_check(l, &c, &a, &ev, &existing_seq, &err);
    cr_assert_eq(rc, 0, "%s", err.message);
    return ev;
}

Test(ledger, apply_refuses_inconsistent_events)
{
    small_state();
    OK_AS(UID_SON, avrop("v1", "a1", 10, ""));
    OK(propose("a2", "f1", "KFN", 5, "X"));

    ledger_event ev = checked(approve("d9", "a2"), UID_DECIDER);
    ledger_event bad;

    bad = ev;
    PUT(bad.target, "a1"); /* approved already */
    bad.amount = 40000000;
    PUT(bad.unit, "SON");
    expect_refused(bad, "decision on a non-pending target");
    bad = ev;
    PUT(bad.target, "nope");
    expect_refused(bad, "decision on an unknown target");
    bad = ev;
    PUT(bad.target, "f1");
    expect_refused(bad, "decision on a frame");
    bad = ev;
    PUT(bad.id, "d1");
    expect_refused(bad, "a duplicate id");
    bad = ev;
    PUT(bad.id, "f1");
    expect_refused(bad, "a duplicate id of another kind");
    bad = ev;
    bad.amount = 6;
    expect_refused(bad, "a decision with the wrong amount");
    bad = ev;
    PUT(bad.unit, "SON");
    expect_refused(bad, "a decision with the wrong unit");
    bad = ev;
    PUT(bad.frame, "f2");
    expect_refused(bad, "a decision with the wrong frame");
    bad = ev;
    bad.year = 2022;
    expect_refused(bad, "a decision with the wrong year");
    bad = ev;
    bad.target_kind = LEDGER_KIND_AVROP;
    expect_refused(bad, "a decision with the wrong target kind");
    bad = ev;
    bad.seq = seq;
    expect_refused(bad, "a seq that does not advance");
    bad.seq = 1;
    expect_refused(bad, "an old seq");
    bad.seq = UINT64_C(1) << 48;
    expect_refused(bad, "a seq past 48 bits");
    bad = ev;
    bad.type = 0;
    expect_refused(bad, "type 0");
    bad.type = 99;
    expect_refused(bad, "type 99");
    bad = ev;
    PUT(bad.id, "");
    expect_refused(bad, "an empty id");
    bad = ev;
    fill(bad.id, 'x', sizeof bad.id);
    expect_refused(bad, "an id without its NUL");

    ledger_event w = checked(withdraw("w9", "a2", ""), UID_KS);
    bad = w;
    bad.actor.uid = UID_SON;
    expect_refused(bad, "a withdrawal by another uid");

    ledger_event p = checked(propose("a9", "f1", "KFN", 1, "X"), UID_KS);
    bad = p;
    PUT(bad.frame, "nope");
    expect_refused(bad, "a proposal from an unknown frame");
    bad = p;
    bad.amount = 100000000; /* 40000000 + 5 taken */
    expect_refused(bad, "a proposal that does not fit");
    bad = p;
    bad.amount = 0;
    expect_refused(bad, "a proposal of 0");
    bad = p;
    bad.year = 2020;
    expect_refused(bad, "a proposal with the wrong year");
    bad = p;
    bad.title[0] = '\0';
    expect_refused(bad, "a proposal without a purpose");

    ledger_event g = checked(grant("f9", "KS", 2021, 1, "T", ""), UID_KS);
    bad = g;
    bad.amount = MAX + 1;
    expect_refused(bad, "a grant over the limit");
    bad = g;
    bad.year = 1000;
    expect_refused(bad, "a grant in year 1000");
    bad = g;
    PUT(bad.unit, "");
    expect_refused(bad, "a grant without a unit");

    ledger_event j = checked(adjust("j9", "f1", -1, "R", ""), UID_KS);
    bad = j;
    bad.amount = -100000000;
    expect_refused(bad, "an adjustment below what is taken");
    bad = j;
    PUT(bad.unit, "SON");
    expect_refused(bad, "an adjustment with the wrong unit");
    bad = j;
    PUT(bad.frame, "a1");
    expect_refused(bad, "an adjustment of an allocation");

    ledger_event v = checked(avrop("v9", "a1", 1, ""), UID_SON);
    bad = v;
    PUT(bad.allocation, "a2"); /* pending */
    PUT(bad.unit, "KFN");
    expect_refused(bad, "an avrop on a pending allocation");
    bad = v;
    bad.amount = 40000000 - 9; /* 10 pending */
    expect_refused(bad, "an avrop that does not fit");
    bad = v;
    PUT(bad.frame, "f2");
    expect_refused(bad, "an avrop with the wrong frame");
    bad = v;
    PUT(bad.unit, "KS");
    expect_refused(bad, "an avrop with the wrong unit");

    /* The good events still apply, with the next seq. */
    ev.seq = ++seq;
    cr_assert_eq(ledger_apply(l, &ev), 0);
    expect_allocation("a2", LEDGER_APPROVED, 5, 0, 0, 5);
    ev.seq = ++seq;
    PUT(ev.id, "d10");
    expect_refused(ev, "the same decision again under a new id");
}

Test(ledger, four_eyes_holds_on_replay)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    OK(propose("a1", "f1", "SON", 100, "X"));
    ledger_event d = checked(approve("d1", "a1"), UID_DECIDER);
    /* A log that records the proposer deciding its own allocation does not replay. */
    ledger_event forged = d;
    forged.actor.uid = UID_KS;
    expect_refused(forged, "an approval by the proposer");
    forged.type = LEDGER_DECISION_REJECTED;
    expect_refused(forged, "a rejection by the proposer");
    d.seq = seq + 1;
    cr_assert_eq(ledger_apply(l, &d), 0, "the approval by another identity applies");
}

Test(ledger, replaying_checked_events_rebuilds_the_same_state)
{
    ledger_event log[64];
    size_t n = 0;
#define LOG(uid, c)                                                                                \
    do {                                                                                           \
        OK_AS(uid, c);                                                                             \
        log[n++] = last_ev;                                                                        \
    } while (0)
    LOG(UID_KS, grant("f1", "KS", 2021, 300000000, "Ram", "KS § 241"));
    LOG(UID_KS, propose("a1", "f1", "SON", 100000000, "X"));
    LOG(UID_KS, propose("a2", "f1", "KFN", 50000000, "Y"));
    LOG(UID_DECIDER, approve("d1", "a1"));
    LOG(UID_KS, withdraw("w1", "a2", ""));
    LOG(UID_SON, avrop("v1", "a1", 60000000, "n"));
    LOG(UID_DECIDER, approve("d2", "v1"));
    LOG(UID_KS, adjust("j1", "f1", -100000000, "R", ""));
#undef LOG
    ledger *r = replica();
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ledger_apply(r, &log[i]), 0);
    char *a = snapshot(l), *b = snapshot(r);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
    /* Replaying again on the rebuilt ledger refuses every event. */
    for (size_t i = 0; i < n; i++) {
        ledger_event e = log[i];
        e.seq = ledger_last_seq(r) + 1;
        cr_assert_eq(ledger_apply(r, &e), BUDGET_EINTERNAL, "event %zu applied twice", i);
    }
    ledger_free(r);
}

Test(ledger, the_two_halves_of_apply_accept_what_apply_accepts)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    ledger_event ok = checked(propose("a1", "f1", "SON", 100, "X"), UID_KS);
    ok.seq = seq + 1;
    char *before = snapshot(l);

    /* Bad syntax: both ways refuse it, and the state is unchanged. */
    ledger_event bad = ok;
    PUT(bad.id, "");
    cr_assert(!ledger_syntax_ok(&bad));
    cr_assert_eq(ledger_apply(l, &bad), BUDGET_EINTERNAL);
    bad = checked(intended(grant("f2", "KS", 2021, 1000, "Ram", "")), UID_KS);
    bad.seq = seq + 1;
    bad.year = BUDGET_YEAR_MIN - 1;
    cr_assert(!ledger_syntax_ok(&bad));
    cr_assert_eq(ledger_apply(l, &bad), BUDGET_EINTERNAL);
    /* Good syntax that breaks a rule: the second half refuses it. */
    ledger_event over = ok;
    over.amount = 1001;
    cr_assert(ledger_syntax_ok(&over));
    cr_assert_eq(ledger_apply_syntax_ok(l, &over), BUDGET_EINTERNAL);
    char *after = snapshot(l);
    cr_assert_str_eq(before, after, "a refused event changed the state");
    free(after);

    /* A good event: the halves apply it as ledger_apply does on a clone. */
    ledger *twin = ledger_clone(l);
    cr_assert(ledger_syntax_ok(&ok));
    cr_assert_eq(ledger_apply_syntax_ok(l, &ok), 0);
    cr_assert_eq(ledger_apply(twin, &ok), 0);
    char *a = snapshot(l), *b = snapshot(twin);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
    free(before);
    ledger_free(twin);
}

/* ---- lists by position
 * ------------------------------------------------------------------------------------------ */

/* The list by position (ledger_seek_*) and the walk that passes over the offset agree. */
static void expect_same_list(list_kind k, list_filter q, uint64_t offset, uint64_t limit)
{
    char *want = listed(l, k, &q, offset, limit, false);
    char *got = listed(l, k, &q, offset, limit, true);
    cr_assert_not_null(got, "no positions for list %d unit %s year %d frame %s", (int)k,
                       q.unit ? q.unit : "-", (int)q.year, q.frame ? q.frame : "-");
    cr_assert_str_eq(got, want, "list %d unit %s year %d frame %s allocation %s from %" PRIu64,
                     (int)k, q.unit ? q.unit : "-", (int)q.year, q.frame ? q.frame : "-",
                     q.allocation ? q.allocation : "-", offset);
    free(want);
    free(got);
}

static size_t lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/*
 * Every list that balances pages, with every filter the ledger keeps positions for, read from
 * offsets at and around its edges, is what a walk from the start gives after passing over the
 * offset: frames, allocations and unit rows by unit, year or both; a frame's allocations and an
 * allocation's avrop, both while they are only linked and once they are listed.
 */
Test(ledger, lists_by_position_are_the_walks_from_their_offsets)
{
    static const char *const units[] = {"KS", "SON", "KFN", "X"};
    char id[32], frame[32];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "f%d", i);
        OK(grant(id, units[i % 4], 2021 + (i / 4) % 2, 1000000, "Ram", id));
    }
    /* f0 takes one allocation of four: 100, past the linked ones. */
    for (int i = 0; i < 400; i++) {
        snprintf(id, sizeof id, "a%d", i);
        snprintf(frame, sizeof frame, "f%d", i % 4 == 0 ? 0 : i % 40);
        OK(propose(id, frame, units[(i / 3) % 4], 100, "X"));
    }
    OK_AS(UID_DECIDER, approve("d1", "a1"));
    OK_AS(UID_DECIDER, approve("d2", "a2"));
    for (int i = 0; i < 70; i++) {
        snprintf(id, sizeof id, "v%d", i);
        OK_AS(UID_SON, avrop(id, i % 10 == 0 ? "a2" : "a1", 1, ""));
    }

    static const uint64_t offsets[] = {0,  1,   2,   30,  31,  32,  33,   39,        40,
                                       99, 100, 101, 399, 400, 401, 1000, UINT64_MAX};
    static const char *const filter_units[] = {NULL, "KS", "SON", "KFN", "X", "NONE"};
    static const int32_t filter_years[] = {0, 2021, 2022, 2030};
    list_filter by_frame[] = {{.frame = "f0"}, {.frame = "f1"}, {.frame = "f39"}, {.frame = "a1"}};
    list_filter by_allocation[] = {
        {.allocation = NULL}, {.allocation = "a1"}, {.allocation = "a2"}, {.allocation = "a3"}};
    for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++)
        for (uint64_t limit = 7; limit != 0; limit = limit == 7 ? UINT32_MAX : 0) {
            for (size_t u = 0; u < sizeof filter_units / sizeof filter_units[0]; u++)
                for (size_t y = 0; y < sizeof filter_years / sizeof filter_years[0]; y++) {
                    list_filter q = {.unit = filter_units[u], .year = filter_years[y]};
                    expect_same_list(LIST_FRAMES, q, offsets[o], limit);
                    expect_same_list(LIST_ALLOCATIONS, q, offsets[o], limit);
                    expect_same_list(LIST_UNITS, q, offsets[o], limit);
                }
            for (size_t f = 0; f < sizeof by_frame / sizeof by_frame[0]; f++)
                expect_same_list(LIST_ALLOCATIONS, by_frame[f], offsets[o], limit);
            for (size_t a = 0; a < sizeof by_allocation / sizeof by_allocation[0]; a++)
                expect_same_list(LIST_AVROP, by_allocation[a], offsets[o], limit);
        }

    /* The lists compared are the ones meant. */
    char *s = listed(l, LIST_ALLOCATIONS, &(list_filter){.frame = "f0"}, 0, UINT32_MAX, true);
    cr_assert_eq(lines(s), 100);
    free(s);
    s = listed(l, LIST_AVROP, &(list_filter){.allocation = "a1"}, 0, UINT32_MAX, true);
    cr_assert_eq(lines(s), 63);
    free(s);
    s = listed(l, LIST_FRAMES, &(list_filter){.unit = "SON", .year = 2022}, 0, UINT32_MAX, true);
    cr_assert_str_eq(s, "f5\nf13\nf21\nf29\nf37\n");
    free(s);
    /* A frame with a year is walked. */
    ledger_cursor c;
    cr_assert_not(ledger_seek_allocations(l, "f0", NULL, 2021, 0, &c));
}

static int to_stream(void *ctx, const void *bytes, size_t n)
{
    return fwrite(bytes, 1, n, ctx) == n ? 0 : -1;
}

typedef struct {
    const char *bytes;
    size_t at;
} saved_state;

static int from_saved(void *ctx, void *bytes, size_t n)
{
    saved_state *m = ctx;
    memcpy(bytes, m->bytes + m->at, n);
    m->at += n;
    return 0;
}

/* `s` saved (ledger_save) and loaded again, its index made (ledger_load_finish). */
static ledger *saved_and_loaded(const ledger *s)
{
    char *bytes = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&bytes, &size);
    cr_assert_not_null(f);
    snap_sink sink = {to_stream, f};
    cr_assert_eq(ledger_save(s, &sink), 0);
    cr_assert_eq(fclose(f), 0);
    saved_state m = {bytes, 0};
    snap_source source = {from_saved, &m, size};
    ledger *back = ledger_load(&source);
    cr_assert_not_null(back);
    cr_assert_eq(ledger_load_finish(back), 0);
    free(bytes);
    return back;
}

/* `n` avrop of 1 öre on `allocation` by the social committee, ids `prefix`0.., checked and
 * applied to `s` (not necessarily the test's ledger). */
static void avrop_on(ledger *s, const char *prefix, const char *allocation, int n)
{
    ledger_actor a = actor(UID_SON);
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "%s%d", prefix, i);
        ledger_cmd c = avrop(id, allocation, 1, "");
        c.ts_ms = ledger_last_ts(s) + 1;
        ledger_event ev;
        uint64_t existing = 0;
        ledger_error e;
        cr_assert_eq(ledger_check(s, &c, &a, &ev, &existing, &e), 0, "%s", e.message);
        ev.seq = ledger_last_seq(s) + 1;
        cr_assert_eq(ledger_apply(s, &ev), 0);
    }
}

/*
 * A loaded ledger makes its index at once (every allocation's avrop counted, then listed): it
 * lists every frame's allocations and every allocation's avrop by position as the ledger saved
 * does, for allocations with none, fewer than are only linked, one short of being listed, just
 * listed and long listed; and both go on the same as avrop are added, past the lists' lengths
 * and across the bound.
 */
Test(ledger, a_loaded_ledger_lists_by_position_as_the_one_saved)
{
    OK(grant("f0", "KS", 2021, 1000000, "Ram", "f0"));
    char id[32];
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof id, "a%d", i);
        OK(propose(id, "f0", i % 2 ? "SON" : "KFN", 1000, "X"));
        snprintf(id, sizeof id, "d%d", i);
        char target[32];
        snprintf(target, sizeof target, "a%d", i);
        OK_AS(UID_DECIDER, approve(id, target));
    }
    avrop_on(l, "v1-", "a1", 63);
    avrop_on(l, "v2-", "a2", 7);
    avrop_on(l, "v3-", "a3", 31);
    avrop_on(l, "v4-", "a4", 32);
    avrop_on(l, "v5-", "a1", 2); /* a1's interleaved with the others' */
    ledger *back = saved_and_loaded(l);
    char *want = snapshot(l), *got = snapshot(back);
    cr_assert_str_eq(got, want);
    free(want);
    free(got);
    char *s = listed(back, LIST_AVROP, &(list_filter){.allocation = "a4"}, 30, UINT32_MAX, true);
    cr_assert_str_eq(s, "v4-30\nv4-31\n");
    free(s);

    ledger *both[] = {l, back};
    for (int k = 0; k < 2; k++) {
        avrop_on(both[k], "w1-", "a1", 40);
        avrop_on(both[k], "w3-", "a3", 2);
        avrop_on(both[k], "w5-", "a5", 33);
    }
    want = snapshot(l);
    got = snapshot(back);
    cr_assert_str_eq(got, want);
    free(want);
    free(got);
    ledger_free(back);
}

/* ---- clones
 * ------------------------------------------------------------------------------------------ */

Test(ledger, clones_are_independent)
{
    small_state();
    char *original = snapshot(l);
    ledger *c = ledger_clone(l);
    cr_assert_not_null(c);
    char *copy = snapshot(c);
    cr_assert_str_eq(original, copy);
    free(copy);

    /* Grow the clone well past every capacity the original had. */
    ledger_actor a = actor(UID_KS);
    char id[32];
    for (int i = 0; i < 3000; i++) {
        ledger_cmd cmd = i % 3 == 0   ? intended(grant("x", i % 2 ? "KS" : "SON", 2000 + i % 50, 10,
                                                       "Ett långt namn på en ram", "ref"))
                         : i % 3 == 1 ? propose("x", "f1", "KFN", 1, "Syfte")
                                      : avrop("x", "a1", 1, "note");
        snprintf(id, sizeof id, "c%d", i);
        PUT(cmd.id, id);
        ledger_event ev;
        cr_assert_eq(ledger_check(c, &cmd, &a, &ev, &existing_seq, &err), 0, "%s", err.message);
        ev.seq = ledger_last_seq(c) + 1;
        cr_assert_eq(ledger_apply(c, &ev), 0);
    }
    char *now = snapshot(l);
    cr_assert_str_eq(original, now, "applying to the clone changed the original");
    free(now);
    cr_assert_eq(ledger_id_kind(l, "c0"), 0);
    cr_assert_eq(ledger_id_kind(c, "c0"), LEDGER_KIND_FRAME);
    ledger_allocation_view v;
    cr_assert(ledger_allocation(c, "a1", &v));
    cr_assert_eq(v.pending, 1000);
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 0, 0, 40000000);

    /* And the other way: the original moves on, the clone does not see it. */
    char *clone_before = snapshot(c);
    OK(adjust("j1", "f1", 1, "Öka", ""));
    char *clone_after = snapshot(c);
    cr_assert_str_eq(clone_before, clone_after);
    cr_assert_eq(ledger_id_kind(c, "j1"), 0);

    /* A clone of a clone outlives both. */
    ledger *cc = ledger_clone(c);
    ledger_free(c);
    char *cc_snap = snapshot(cc);
    cr_assert_str_eq(clone_before, cc_snap);
    ledger_free(cc);
    free(cc_snap);
    free(clone_before);
    free(clone_after);
    free(original);

    ledger *empty = ledger_new();
    ledger *empty_clone = ledger_clone(empty);
    cr_assert_not_null(empty_clone);
    cr_assert_eq(ledger_events(empty_clone), 0);
    ledger_cmd g = register_unit("f1", "KS", "Kommunstyrelsen", "styrelse", "", "");
    ledger_event ev;
    cr_assert_eq(ledger_check(empty_clone, &g, &a, &ev, NULL, NULL), 0);
    ev.seq = 1;
    cr_assert_eq(ledger_apply(empty_clone, &ev), 0);
    cr_assert_eq(ledger_id_kind(empty, "f1"), 0);
    ledger_free(empty);
    ledger_free(empty_clone);
}

/* ---- iteration and names
 * ------------------------------------------------------------------------------ */

Test(ledger, iteration_filters)
{
    OK(grant("f1", "KS", 2021, 1000, "T1", ""));
    OK(grant("f2", "KS", 2022, 1000, "T2", "ref2"));
    OK(grant("f3", "SON", 2021, 1000, "T3", ""));
    OK(propose("a1", "f1", "SON", 1, "X"));
    OK(propose("a2", "f2", "SON", 2, "X"));
    OK(propose("a3", "f1", "KFN", 3, "X"));
    OK(propose("a4", "f3", "KFN", 4, "X"));
    OK_AS(UID_DECIDER, approve("d1", "a1"));
    OK_AS(UID_DECIDER, approve("d3", "a3"));
    OK(avrop("v1", "a1", 1, ""));
    OK(avrop("v2", "a3", 1, ""));
    OK(avrop("v3", "a3", 2, ""));

#define COLLECT(call, view, field, expected)                                                       \
    do {                                                                                           \
        size_t i_ = 0;                                                                             \
        char got_[128] = "";                                                                       \
        while (call) {                                                                             \
            strcat(got_, view.field);                                                              \
            strcat(got_, " ");                                                                     \
        }                                                                                          \
        cr_assert_str_eq(got_, expected, "%s", #call);                                             \
    } while (0)
    ledger_frame_view fv;
    ledger_allocation_view av;
    ledger_avrop_view vv;
    ledger_unit_view uv;
    COLLECT(ledger_next_frame(l, &i_, NULL, 0, &fv), fv, id, "f1 f2 f3 ");
    COLLECT(ledger_next_frame(l, &i_, "KS", 0, &fv), fv, id, "f1 f2 ");
    COLLECT(ledger_next_frame(l, &i_, NULL, 2021, &fv), fv, id, "f1 f3 ");
    COLLECT(ledger_next_frame(l, &i_, "KS", 2022, &fv), fv, id, "f2 ");
    COLLECT(ledger_next_frame(l, &i_, "KFN", 0, &fv), fv, id, "");
    COLLECT(ledger_next_allocation(l, &i_, NULL, NULL, 0, &av), av, id, "a1 a2 a3 a4 ");
    COLLECT(ledger_next_allocation(l, &i_, "f1", NULL, 0, &av), av, id, "a1 a3 ");
    COLLECT(ledger_next_allocation(l, &i_, NULL, "KFN", 0, &av), av, id, "a3 a4 ");
    COLLECT(ledger_next_allocation(l, &i_, NULL, "SON", 2022, &av), av, id, "a2 ");
    COLLECT(ledger_next_allocation(l, &i_, NULL, NULL, 2021, &av), av, id, "a1 a3 a4 ");
    COLLECT(ledger_next_allocation(l, &i_, "f1", "KFN", 2021, &av), av, id, "a3 ");
    COLLECT(ledger_next_allocation(l, &i_, "nope", NULL, 0, &av), av, id, "");
    COLLECT(ledger_next_allocation(l, &i_, "a1", NULL, 0, &av), av, id, "");
    COLLECT(ledger_next_avrop(l, &i_, NULL, &vv), vv, id, "v1 v2 v3 ");
    COLLECT(ledger_next_avrop(l, &i_, "a3", &vv), vv, id, "v2 v3 ");
    COLLECT(ledger_next_avrop(l, &i_, "a2", &vv), vv, id, "");
    COLLECT(ledger_next_avrop(l, &i_, "f1", &vv), vv, id, "");
    /* Rows by first appearance: f1, f2, f3, then a2 (SON 2022) and a3 (KFN 2021); a4 from
     * the 2021 frame f3 adds to KFN 2021. */
    COLLECT(ledger_next_unit(l, &i_, NULL, 0, &uv), uv, unit, "KS KS SON SON KFN ");
    COLLECT(ledger_next_unit(l, &i_, NULL, 2021, &uv), uv, unit, "KS SON KFN ");
    COLLECT(ledger_next_unit(l, &i_, NULL, 2022, &uv), uv, unit, "KS SON ");
    COLLECT(ledger_next_unit(l, &i_, "KFN", 0, &uv), uv, unit, "KFN ");
    COLLECT(ledger_next_unit(l, &i_, "KFN", 2022, &uv), uv, unit, "");
#undef COLLECT
    expect_unit("KFN", 2021, 0, 3, 0, 3);
    expect_unit("SON", 2021, 1000, 1, 0, 1);
    expect_unit("SON", 2022, 0, 0, 0, 0);
}

Test(ledger, lookups_by_kind)
{
    small_state();
    ledger_frame_view fv;
    ledger_allocation_view av;
    ledger_avrop_view vv;
    cr_assert(ledger_frame(l, "f1", &fv));
    cr_assert_str_eq(fv.title, "Ram");
    cr_assert_str_eq(fv.reference, "KS 2021-08-24 § 241");
    cr_assert_str_eq(fv.unit, "KS");
    cr_assert_eq(fv.year, 2021);
    cr_assert_not(ledger_frame(l, "a1", &fv));
    cr_assert_not(ledger_frame(l, "nope", &fv));
    cr_assert_not(ledger_allocation(l, "f1", &av));
    cr_assert_not(ledger_avrop(l, "a1", &vv));
    cr_assert_not(ledger_frame(l, "", &fv));
}

Test(ledger, names)
{
    for (int t = LEDGER_FRAME_GRANTED; t <= LEDGER_REQUEST_WITHDRAWN; t++) {
        const char *name = ledger_type_name((ledger_type)t);
        cr_assert_eq(ledger_type_from_name(name, strlen(name)), t);
    }
    cr_assert_str_eq(ledger_type_name(LEDGER_FRAME_GRANTED), "frame.granted");
    cr_assert_str_eq(ledger_type_name(LEDGER_REQUEST_WITHDRAWN), "request.withdrawn");
    cr_assert_eq(ledger_type_from_name("frame.grant", 11), 0);
    cr_assert_eq(ledger_type_from_name("frame.granted", 12), 0);
    cr_assert_eq(ledger_type_from_name("frame.grantedx", 14), 0);
    cr_assert_eq(ledger_type_from_name("decision.approved", 17), LEDGER_DECISION_APPROVED);
    cr_assert_str_eq(ledger_status_name(LEDGER_PENDING), "pending");
    cr_assert_str_eq(ledger_status_name(LEDGER_APPROVED), "approved");
    cr_assert_str_eq(ledger_status_name(LEDGER_REJECTED), "rejected");
    cr_assert_str_eq(ledger_status_name(LEDGER_WITHDRAWN), "withdrawn");
    cr_assert_str_eq(ledger_kind_name(LEDGER_KIND_FRAME), "frame");
    cr_assert_str_eq(ledger_kind_name(LEDGER_KIND_ADJUSTMENT), "adjustment");
    cr_assert_str_eq(ledger_kind_name(LEDGER_KIND_ALLOCATION), "allocation");
    cr_assert_str_eq(ledger_kind_name(LEDGER_KIND_AVROP), "avrop");
    cr_assert_str_eq(ledger_kind_name(LEDGER_KIND_DECISION), "decision");
    cr_assert_str_eq(ledger_kind_name(LEDGER_KIND_WITHDRAWAL), "withdrawal");
}

/* ---- a randomized model check
 * ---------------------------------------------------------------------------- */

#define M_FRAMES 5
#define M_ALLOCATIONS 200
#define M_AVROP 1500
#define M_OTHERS 20000
#define M_STEPS 20000

static const char *m_units[] = {"KS", "SON", "KFN"};
static const int32_t m_years[] = {2021, 2022};

typedef struct {
    int unit, year;
    int64_t granted, allocated, pending, called_off;
    uint64_t seq;
} m_frame;

typedef struct {
    int frame, unit;
    int64_t amount, called_off, pending;
    ledger_status status;
    uint32_t uid;
    uint64_t seq;
} m_allocation;

typedef struct {
    int allocation;
    int64_t amount;
    ledger_status status;
    uint32_t uid;
    uint64_t seq;
} m_avrop;

typedef struct {
    m_frame frames[M_FRAMES];
    m_allocation allocations[M_ALLOCATIONS];
    m_avrop avrop[M_AVROP];
    uint64_t other_seq[M_OTHERS]; /* decisions, adjustments, withdrawals: id o<n> */
    int n_frames, n_allocations, n_avrop, n_others;
    int64_t unit_frames[3][2], unit_allocated[3][2], unit_called_off[3][2], unit_pending[3][2];
} model;

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int64_t pick(int64_t lo, int64_t hi)
{
    if (hi < lo)
        return lo;
    return lo + (int64_t)(next_random() % (uint64_t)(hi - lo + 1));
}

/* An amount near the boundary `room` (what is left), or anywhere. */
static int64_t amount_near(int64_t room)
{
    switch (next_random() % 10) {
    case 0:
        return room;
    case 1:
        return room + 1;
    case 2:
        return room - 1;
    case 3:
        return 1;
    case 4:
        return MAX;
    case 5:
        return next_random() % 50 == 0 ? 0 : pick(1, 1000);
    case 6:
        return next_random() % 50 == 0 ? MAX + 1 : pick(1, 1000000000);
    default:
        return pick(1, room > 1 ? room : 1);
    }
}

/* The status of a target named by kind and index, and its uid, for the model's rules. */
typedef struct {
    int kind; /* 0 none, 1 frame, 2 allocation, 3 avrop, 4 other */
    int index;
} m_target;

static void m_target_name(m_target t, char *out, size_t size)
{
    const char *prefix[] = {"none", "f", "a", "v", "o"};
    snprintf(out, size, "%s%d", prefix[t.kind], t.index);
}

static m_target m_random_target(const model *m)
{
    m_target t = {0, 0};
    uint64_t r = next_random() % 100;
    if (r < 45 && m->n_allocations > 0)
        t = (m_target){2, (int)pick(0, m->n_allocations - 1)};
    else if (r < 90 && m->n_avrop > 0)
        t = (m_target){3, (int)pick(0, m->n_avrop - 1)};
    else if (r < 94 && m->n_frames > 0)
        t = (m_target){1, (int)pick(0, m->n_frames - 1)};
    else if (r < 97 && m->n_others > 0)
        t = (m_target){4, (int)pick(0, m->n_others - 1)};
    else
        t = (m_target){0, (int)pick(0, 5)};
    return t;
}

/* The id a command creates: usually new, sometimes one taken (expecting 1 and its seq). */
static void m_new_id(const model *m, char *prefix_and_id, size_t size, const char *prefix, int next,
                     uint64_t *taken_seq)
{
    *taken_seq = 0;
    if (next_random() % 40 == 0) {
        m_target t = m_random_target(m);
        if (t.kind != 0) {
            m_target_name(t, prefix_and_id, size);
            *taken_seq = t.kind == 1   ? m->frames[t.index].seq
                         : t.kind == 2 ? m->allocations[t.index].seq
                         : t.kind == 3 ? m->avrop[t.index].seq
                                       : m->other_seq[t.index];
            return;
        }
    }
    snprintf(prefix_and_id, size, "%s%d", prefix, next);
}

static void m_check_against(const model *m)
{
    size_t i = 0;
    ledger_frame_view fv;
    for (int k = 0; k < m->n_frames; k++) {
        cr_assert(ledger_next_frame(l, &i, NULL, 0, &fv));
        const m_frame *f = &m->frames[k];
        cr_assert(fv.allocated >= 0 && fv.pending >= 0 && fv.called_off >= 0);
        cr_assert_leq(fv.allocated + fv.pending, fv.granted);
        cr_assert_leq(fv.called_off, fv.allocated);
        cr_assert_eq(fv.granted, f->granted, "frame f%d granted", k);
        cr_assert_eq(fv.allocated, f->allocated, "frame f%d allocated", k);
        cr_assert_eq(fv.pending, f->pending, "frame f%d pending", k);
        cr_assert_eq(fv.called_off, f->called_off, "frame f%d called_off", k);
    }
    cr_assert_not(ledger_next_frame(l, &i, NULL, 0, &fv));
    i = 0;
    ledger_allocation_view av;
    for (int k = 0; k < m->n_allocations; k++) {
        cr_assert(ledger_next_allocation(l, &i, NULL, NULL, 0, &av));
        const m_allocation *a = &m->allocations[k];
        cr_assert(av.called_off >= 0 && av.pending >= 0);
        cr_assert_leq(av.called_off + av.pending, av.amount);
        cr_assert_eq(av.status, a->status, "allocation a%d status", k);
        cr_assert_eq(av.amount, a->amount);
        cr_assert_eq(av.called_off, a->called_off, "allocation a%d called_off", k);
        cr_assert_eq(av.pending, a->pending, "allocation a%d pending", k);
        cr_assert_eq(av.available,
                     a->status == LEDGER_APPROVED ? a->amount - a->called_off - a->pending : 0);
    }
    cr_assert_not(ledger_next_allocation(l, &i, NULL, NULL, 0, &av));
    for (int u = 0; u < 3; u++) {
        for (int y = 0; y < 2; y++) {
            size_t j = 0;
            ledger_unit_view uv;
            if (!ledger_next_unit(l, &j, m_units[u], m_years[y], &uv)) {
                cr_assert_eq(m->unit_frames[u][y] + m->unit_allocated[u][y], 0);
                continue;
            }
            cr_assert_eq(uv.frames, m->unit_frames[u][y]);
            cr_assert_eq(uv.allocated, m->unit_allocated[u][y]);
            cr_assert_eq(uv.called_off, m->unit_called_off[u][y]);
            cr_assert_eq(uv.pending, m->unit_pending[u][y]);
            cr_assert_geq(uv.available, 0);
        }
    }
}

static void m_check_avrop(const model *m)
{
    size_t i = 0;
    ledger_avrop_view vv;
    for (int k = 0; k < m->n_avrop; k++) {
        cr_assert(ledger_next_avrop(l, &i, NULL, &vv));
        cr_assert_eq(vv.status, m->avrop[k].status, "avrop v%d", k);
        cr_assert_eq(vv.amount, m->avrop[k].amount);
    }
    cr_assert_not(ledger_next_avrop(l, &i, NULL, &vv));
}

/* One random command: the model predicts its outcome, the ledger must agree. */
static void m_step(model *m)
{
    ledger_cmd c;
    uint64_t taken;
    char id[32];
    int expected = 0;
    uint32_t uid = next_random() % 2 ? UID_KS : UID_SON;
    m_target t = {0, 0};
    uint64_t r = next_random() % 100;

    if (m->n_frames == 0 || (r < 3 && m->n_frames < M_FRAMES)) {
        m_new_id(m, id, sizeof id, "f", m->n_frames, &taken);
        int u = (int)pick(0, 2), y = (int)pick(0, 1);
        int64_t amount = next_random() % 2 ? MAX : amount_near(pick(1, 2000000000));
        c = grant(id, m_units[u], m_years[y], amount, "Ram", "");
        if (amount <= 0 || amount > MAX)
            expected = BUDGET_EBAD_REQUEST;
        else if (taken)
            expected = 1;
        int rc = submit_as(uid, c);
        cr_assert_eq(rc, expected, "grant: %d, %s", rc, err.message);
        if (rc == 1)
            cr_assert_eq(existing_seq, taken);
        if (rc != 0)
            return;
        m->frames[m->n_frames++] = (m_frame){u, y, amount, 0, 0, 0, seq};
        m->unit_frames[u][y] += amount;
        return;
    }
    if (r < 12) {
        int k = (int)pick(0, m->n_frames - 1);
        m_frame *f = &m->frames[k];
        int64_t floor_ = f->allocated + f->pending;
        int64_t delta =
            next_random() % 2 ? -amount_near(f->granted - floor_) : amount_near(MAX - f->granted);
        m_new_id(m, id, sizeof id, "o", m->n_others, &taken);
        char frame[16];
        snprintf(frame, sizeof frame, "f%d", k);
        c = adjust(id, frame, delta, "Justering", "");
        if (delta == 0 || delta > MAX || delta < -MAX)
            expected = BUDGET_EBAD_REQUEST;
        else if (taken)
            expected = 1;
        else if (f->granted + delta > MAX)
            expected = BUDGET_EBAD_REQUEST;
        else if (f->granted + delta < floor_)
            expected = BUDGET_EINSUFFICIENT_FUNDS;
        int rc = submit_as(uid, c);
        cr_assert_eq(rc, expected, "adjust %" PRId64 ": %d, %s", delta, rc, err.message);
        if (rc == 1)
            cr_assert_eq(existing_seq, taken);
        if (rc != 0)
            return;
        f->granted += delta;
        m->unit_frames[f->unit][f->year] += delta;
        m->other_seq[m->n_others++] = seq;
        return;
    }
    if (r < 35 && m->n_allocations < M_ALLOCATIONS) {
        int k = (int)pick(0, m->n_frames - 1);
        m_frame *f = &m->frames[k];
        int u = (int)pick(0, 2);
        int64_t amount = amount_near(f->granted - f->allocated - f->pending);
        m_new_id(m, id, sizeof id, "a", m->n_allocations, &taken);
        char frame[16];
        snprintf(frame, sizeof frame, "f%d", k);
        c = propose(id, frame, m_units[u], amount, "Syfte");
        if (amount <= 0 || amount > MAX)
            expected = BUDGET_EBAD_REQUEST;
        else if (taken)
            expected = 1;
        else if (amount > f->granted - f->allocated - f->pending)
            expected = BUDGET_EINSUFFICIENT_FUNDS;
        int rc = submit_as(uid, c);
        cr_assert_eq(rc, expected, "propose: %d, %s", rc, err.message);
        if (rc == 1)
            cr_assert_eq(existing_seq, taken);
        if (rc != 0)
            return;
        m->allocations[m->n_allocations++] =
            (m_allocation){k, u, amount, 0, 0, LEDGER_PENDING, uid, seq};
        f->pending += amount;
        return;
    }
    if (r < 60 && m->n_allocations > 0 && m->n_avrop < M_AVROP) {
        int k = (int)pick(0, m->n_allocations - 1);
        m_allocation *a = &m->allocations[k];
        int64_t amount = amount_near(a->amount - a->called_off - a->pending);
        m_new_id(m, id, sizeof id, "v", m->n_avrop, &taken);
        char allocation[16];
        snprintf(allocation, sizeof allocation, "a%d", k);
        c = avrop(id, allocation, amount, "");
        if (amount <= 0 || amount > MAX)
            expected = BUDGET_EBAD_REQUEST;
        else if (taken)
            expected = 1;
        else if (a->status != LEDGER_APPROVED)
            expected = BUDGET_EINVALID_STATE;
        else if (amount > a->amount - a->called_off - a->pending)
            expected = BUDGET_EINSUFFICIENT_FUNDS;
        int rc = submit_as(uid, c);
        cr_assert_eq(rc, expected, "avrop: %d, %s", rc, err.message);
        if (rc == 1)
            cr_assert_eq(existing_seq, taken);
        if (rc != 0)
            return;
        m->avrop[m->n_avrop++] = (m_avrop){k, amount, LEDGER_PENDING, uid, seq};
        a->pending += amount;
        m->unit_pending[a->unit][m->frames[a->frame].year] += amount;
        return;
    }

    /* A decision or a withdrawal. */
    t = m_random_target(m);
    ledger_type type = r < 75   ? LEDGER_DECISION_APPROVED
                       : r < 88 ? LEDGER_DECISION_REJECTED
                                : LEDGER_REQUEST_WITHDRAWN;
    if (type != LEDGER_REQUEST_WITHDRAWN)
        uid = UID_DECIDER;
    char target[16];
    m_target_name(t, target, sizeof target);
    m_new_id(m, id, sizeof id, "o", m->n_others, &taken);
    c = type == LEDGER_REQUEST_WITHDRAWN ? withdraw(id, target, "")
                                         : decide(type, id, target, "", "");
    ledger_status status = LEDGER_PENDING;
    uint32_t owner = 0;
    if (t.kind == 2) {
        status = m->allocations[t.index].status;
        owner = m->allocations[t.index].uid;
    } else if (t.kind == 3) {
        status = m->avrop[t.index].status;
        owner = m->avrop[t.index].uid;
    }
    if (taken)
        expected = 1;
    else if (t.kind == 0)
        expected = BUDGET_ENOT_FOUND;
    else if (t.kind == 1 || t.kind == 4)
        expected = BUDGET_EINVALID_STATE;
    else if (status != LEDGER_PENDING)
        expected = BUDGET_EINVALID_STATE;
    else if (type == LEDGER_REQUEST_WITHDRAWN && owner != uid)
        expected = BUDGET_EFORBIDDEN;
    int rc = submit_as(uid, c);
    cr_assert_eq(rc, expected, "%s of %s: %d, %s", ledger_type_name(type), target, rc, err.message);
    if (rc == 1)
        cr_assert_eq(existing_seq, taken);
    if (rc != 0)
        return;
    m->other_seq[m->n_others++] = seq;
    ledger_status to = type == LEDGER_DECISION_APPROVED   ? LEDGER_APPROVED
                       : type == LEDGER_DECISION_REJECTED ? LEDGER_REJECTED
                                                          : LEDGER_WITHDRAWN;
    if (t.kind == 2) {
        m_allocation *a = &m->allocations[t.index];
        m_frame *f = &m->frames[a->frame];
        a->status = to;
        f->pending -= a->amount;
        if (to == LEDGER_APPROVED) {
            f->allocated += a->amount;
            m->unit_allocated[a->unit][f->year] += a->amount;
        }
    } else {
        m_avrop *v = &m->avrop[t.index];
        m_allocation *a = &m->allocations[v->allocation];
        m_frame *f = &m->frames[a->frame];
        v->status = to;
        a->pending -= v->amount;
        m->unit_pending[a->unit][f->year] -= v->amount;
        if (to == LEDGER_APPROVED) {
            a->called_off += v->amount;
            f->called_off += v->amount;
            m->unit_called_off[a->unit][f->year] += v->amount;
        }
    }
}

Test(ledger, randomized_against_a_model, .timeout = 120)
{
    model *m = calloc(1, sizeof *m);
    cr_assert_not_null(m);
    rng = 0x2021082441u;
    for (int step = 0; step < M_STEPS; step++) {
        m_step(m);
        m_check_against(m);
        if (step % 1000 == 999)
            m_check_avrop(m);
    }
    m_check_avrop(m);
    /* The model run reached every kind of entity in numbers. */
    cr_assert_eq(m->n_frames, M_FRAMES);
    cr_assert_gt(m->n_allocations, 100);
    cr_assert_gt(m->n_avrop, 300);
    cr_assert_gt(m->n_others, 2000);
    free(m);
}

/* ---- the type table: every type's fields are checked, copied and compared --------------------
 */

/* The state the witnesses below are checked against: frame f1 of KS; a1 from it to SON,
 * approved; a2 from it to SON, pending; v1 on a1, pending; v2 on a1, approved. */
static void table_fixture(void)
{
    OK(grant("f0", "KS", 2020, 1000, "Ram 2020", ""));
    OK(close_year("c2020", 2020));
    OK(grant("f1", "KS", 2021, 1000000, "Ram", ""));
    OK(propose("a1", "f1", "SON", 1000, "Fritid"));
    OK_AS(UID_DECIDER, approve("a1-ok", "a1"));
    OK(propose("a2", "f1", "SON", 500, "Kultur"));
    OK_AS(UID_SON, avrop("v1", "a1", 200, ""));
    OK_AS(UID_SON, avrop("v2", "a1", 100, ""));
    OK_AS(UID_DECIDER, approve("v2-ok", "v2"));
}

/* A command of `type` that the fixture accepts from *uid, with every field it may give set.
 * A type added to the table needs its witness here (the switch names every type). */
static ledger_cmd witness(ledger_type type, uint32_t *uid)
{
    *uid = UID_KS;
    switch (type) {
    case LEDGER_UNIT_REGISTERED:
        return register_unit("w", "BUN", "Barn- och ungdomsnämnden", "nämnd", "KS",
                             "KF 2022-12-12 § 5");
    case LEDGER_UNIT_RENAMED:
        return rename_unit("w", "SON", "Socialnämnden");
    case LEDGER_UNIT_CLOSED:
        return close_unit("w", "KFN");
    case LEDGER_FRAME_GRANTED: {
        ledger_cmd c = grant("w", "KS", 2022, 100, "Ram", "KS 2022-01-10 § 3");
        PUT(c.continues, "f1");
        return c;
    }
    case LEDGER_FRAME_ADJUSTED:
        return adjust("w", "f1", 100, "Tillägg", "KS 2021-10-01 § 9");
    case LEDGER_ALLOCATION_PROPOSED:
        return propose("w", "f1", "SON", 100, "Idrott");
    case LEDGER_AVROP_REQUESTED:
        *uid = UID_SON;
        return avrop("w", "a1", 100, "Hösten");
    case LEDGER_DECISION_APPROVED:
    case LEDGER_DECISION_REJECTED:
        *uid = UID_DECIDER;
        return decide(type, "w", "a2", "KS 2021-09-28 § 270", "Enligt förslag");
    case LEDGER_REQUEST_WITHDRAWN:
        return withdraw("w", "a2", "Fel belopp");
    case LEDGER_BUDGET_ADOPTED: {
        ledger_cmd c = adopt("w", 2022, 2024);
        PUT(c.decision_dnr, "KS 2021/123");
        add_line(&c, "KS", 100, "f1", 2, (const int64_t[]){50, 60});
        return c;
    }
    case LEDGER_ALLOCATION_REDUCTION_REQUESTED:
        return reduce("w", "a1", 100, "Verksamheten startar 2022");
    case LEDGER_AVROP_REVERSAL_REQUESTED:
        return reverse("w", "v2", 50, "Felaktigt avrop");
    case LEDGER_YEAR_CLOSED: {
        ledger_cmd c = close_year("w", 2022);
        PUT(c.decision_dnr, "KS 2022/7");
        PUT(c.note, "Bokslut");
        return c;
    }
    case LEDGER_FRAME_CARRIED_OVER: {
        ledger_cmd c = carry_over("w", "f0", 100, 20210630);
        PUT(c.decision_dnr, "KS 2021/3");
        return c;
    }
    case LEDGER_OUTCOME_RECORDED:
        *uid = UID_SON;
        return record_outcome("w", "SON", 2021, 9, "a1", 123456, "utfall-2021-09.csv");
    }
    cr_assert_fail("no witness for type %d", (int)type);
    return grant("w", "KS", 2022, 100, "Ram", "");
}

/* The fields the client gives, by type, in order, written out again here on purpose; "!"
 * marks a required one (docs/protocol.md). */
#define GIVEN_DECISION "decision_body!", "decision_date!", "decision_paragraph!", "decision_dnr"
#define GIVEN_FIELDS_MAX 12
static const char *const given_fields[][GIVEN_FIELDS_MAX] = {
    [LEDGER_FRAME_GRANTED] = {"id!", "unit!", "year!", "amount!", "title!", GIVEN_DECISION,
                              "reference", "avrop_last_day", "continues"},
    [LEDGER_FRAME_ADJUSTED] = {"id!", "frame!", "delta!", "reason!", GIVEN_DECISION, "reference"},
    [LEDGER_ALLOCATION_PROPOSED] = {"id!", "frame!", "unit!", "amount!", "purpose!",
                                    "avrop_last_day"},
    [LEDGER_AVROP_REQUESTED] = {"id!", "allocation!", "amount!", "note"},
    [LEDGER_DECISION_APPROVED] = {"id!", "target!", GIVEN_DECISION, "reference", "note"},
    [LEDGER_DECISION_REJECTED] = {"id!", "target!", GIVEN_DECISION, "reference", "note"},
    [LEDGER_REQUEST_WITHDRAWN] = {"id!", "target!", "note"},
    [LEDGER_ALLOCATION_REDUCTION_REQUESTED] = {"id!", "allocation!", "amount!", "reason!"},
    [LEDGER_AVROP_REVERSAL_REQUESTED] = {"id!", "avrop!", "amount!", "reason!"},
    [LEDGER_YEAR_CLOSED] = {"id!", "year!", "decision_body!", "decision_date!",
                            "decision_paragraph!", "decision_dnr", "note"},
    [LEDGER_FRAME_CARRIED_OVER] = {"id!", "frame!", "amount!", "title!", "avrop_last_day",
                                   "decision_body!", "decision_date!", "decision_paragraph!",
                                   "decision_dnr"},
    [LEDGER_UNIT_REGISTERED] = {"id!", "unit!", "name!", "kind!", "parent", "reference"},
    [LEDGER_UNIT_RENAMED] = {"id!", "unit!", "name!", "reference"},
    [LEDGER_UNIT_CLOSED] = {"id!", "unit!", "reference"},
    [LEDGER_BUDGET_ADOPTED] = {"id!", "year!", "plan_until!", "title!", "lines!", GIVEN_DECISION},
    [LEDGER_OUTCOME_RECORDED] = {"id!", "unit!", "year!", "month!", "allocation", "amount!",
                                 "source!"},
};

/* The table gives the fields above, and requires those marked. */
static void expect_given_fields(ledger_type t)
{
    const event_type_info *info = &event_types[t];
    size_t k = 0;
    for (uint8_t i = 0; i < info->field_count; i++) {
        const event_field *f = &info->fields[i];
        if (f->source == FIELD_DERIVED)
            continue;
        char want[32];
        snprintf(want, sizeof want, "%s%s", f->key, f->source == FIELD_REQUIRED ? "!" : "");
        cr_assert_lt(k, GIVEN_FIELDS_MAX);
        cr_assert_not_null(given_fields[t][k], "%s gives more than this suite knows", info->name);
        cr_assert_str_eq(want, given_fields[t][k], "%s", info->name);
        k++;
    }
    cr_assert(k == GIVEN_FIELDS_MAX || given_fields[t][k] == NULL, "%s gives fewer fields",
              info->name);
}

static char *member(ledger_event *ev, const event_field *f)
{
    return (char *)ev + f->offset;
}

/* Checks `c` as `uid`, without applying it. */
static int check_as(uint32_t uid, const ledger_cmd *c, ledger_event *out)
{
    ledger_actor a = actor(uid);
    memset(&err, 0, sizeof err);
    return ledger_check(l, c, &a, out, NULL, &err);
}

/* True when the last check was refused as bad_request for field `f`. */
static bool refused_for(int rc, const event_field *f)
{
    return rc == BUDGET_EBAD_REQUEST && strncmp(err.message, f->key, f->key_len) == 0 &&
           err.message[f->key_len] == ' ';
}

/* `c` with field `f` absent: an empty str, an int of 0. */
static ledger_cmd without(ledger_cmd c, const event_field *f)
{
    memset(member(&c, f), 0, f->size);
    return c;
}

/* `c`'s lines as many as the limit allows (`over`: one more), each of its first line but for
 * its unit. */
static ledger_cmd lines_at_limit(ledger_cmd c, bool over)
{
    ledger_line first = c.lines.line[0];
    c.lines.count = BUDGET_ADOPT_LINES_MAX + (over ? 1 : 0);
    for (uint16_t i = 0; i < BUDGET_ADOPT_LINES_MAX; i++) {
        c.lines.line[i] = first;
        snprintf(c.lines.line[i].unit, sizeof first.unit, "U%u", (unsigned)i);
    }
    return c;
}

/* A str field's character at its limit: one its rule accepts. */
static char limit_char(const event_field *f)
{
    return f->value == FIELD_TEXT        ? 't'
           : f->value == FIELD_BODY      ? 'X'
           : f->value == FIELD_PARAGRAPH ? '1'
                                         : 'x';
}

/* `c` with field `f` just over its limit (`over`) or at it. */
static ledger_cmd at_limit(ledger_cmd c, const event_field *f, bool over)
{
    if (f->value == FIELD_LINES)
        return lines_at_limit(c, over);
    if (f->value == FIELD_DATE) {
        ledger_field_set_int(&c, f, over ? 100000101 : 99991231);
        return c;
    }
    if (field_is_str(f)) {
        char *s = member(&c, f);
        memset(s, limit_char(f), f->size);
        if (!over)
            s[f->size - 1] = '\0';
        return c;
    }
    int64_t max = f->value == FIELD_YEAR    ? BUDGET_YEAR_MAX
                  : f->value == FIELD_DATE  ? 99991231
                  : f->value == FIELD_MONTH ? 12
                                            : BUDGET_AMOUNT_MAX;
    ledger_field_set_int(&c, f, over ? max + 1 : max);
    return c;
}

/* `c` with field `f` changed to another valid value. */
static ledger_cmd changed(ledger_cmd c, const event_field *f)
{
    if (f->value == FIELD_LINES) {
        c.lines.line[0].plan[0]++;
        return c;
    }
    if (field_is_str(f)) {
        char *s = member(&c, f);
        size_t len = strlen(s);
        if (len == 0)
            strcpy(s, "x");
        else
            s[len - 1] = f->value == FIELD_PARAGRAPH ? (s[len - 1] == '1' ? '2' : '1')
                         : f->value == FIELD_BODY    ? (s[len - 1] == 'X' ? 'Y' : 'X')
                         : s[len - 1] == 'x'         ? 'y'
                                                     : 'x';
        return c;
    }
    ledger_field_set_int(&c, f, ledger_field_int(&c, f) + 1);
    return c;
}

static void check_fields_of(ledger_type t)
{
    const event_type_info *info = &event_types[t];
    expect_given_fields(t);
    uint32_t uid;
    ledger_cmd base = witness(t, &uid);
    ledger_event ev;
    cr_assert_eq(check_as(uid, &base, &ev), 0, "%s witness: %s", info->name, err.message);
    ledger_actor a = actor(uid);
    cr_assert(ledger_same_request(&base, &a, &ev), "%s: a retry is not the same", info->name);
    ledger_actor other = actor(uid + 1);
    cr_assert_not(ledger_same_request(&base, &other, &ev), "%s from another uid", info->name);

    for (uint8_t i = 0; i < info->field_count; i++) {
        const event_field *f = &info->fields[i];
        if (f->source == FIELD_DERIVED)
            continue;
        ledger_cmd c = without(base, f);
        int rc = check_as(uid, &c, NULL);
        /* A sum of money may be 0: its absence is seen by the request's decoder alone. */
        if (f->value == FIELD_MONEY)
            cr_assert_neq(rc, BUDGET_EBAD_REQUEST, "%s with %s 0: %s", info->name, f->key,
                          err.message);
        else if (f->source == FIELD_REQUIRED)
            cr_assert(refused_for(rc, f), "%s without %s: %d %s", info->name, f->key, rc,
                      err.message);
        else
            cr_assert_eq(rc, 0, "%s without %s: %s", info->name, f->key, err.message);
        c = at_limit(base, f, true);
        rc = check_as(uid, &c, NULL);
        cr_assert(refused_for(rc, f), "%s with %s over its limit: %d %s", info->name, f->key, rc,
                  err.message);
        if (!field_is_str(f) && f->value != FIELD_LINES) {
            /* Just under its least value (an amount: 0, as when absent). */
            int64_t least = f->value == FIELD_YEAR ? BUDGET_YEAR_MIN
                            : f->value == FIELD_DELTA || f->value == FIELD_MONEY
                                ? -BUDGET_AMOUNT_MAX
                            : f->value == FIELD_DATE ? 19000101
                                                     : 1;
            c = base;
            ledger_field_set_int(&c, f, least - 1);
            rc = check_as(uid, &c, NULL);
            cr_assert(refused_for(rc, f), "%s with %s under its limit: %d %s", info->name, f->key,
                      rc, err.message);
        }
        c = at_limit(base, f, false);
        rc = check_as(uid, &c, NULL);
        cr_assert_not(refused_for(rc, f), "%s with %s at its limit: %s", info->name, f->key,
                      err.message);
        /* A retry with this field changed is another request: a conflict. */
        c = changed(base, f);
        cr_assert_not(ledger_same_request(&c, &a, &ev), "%s with another %s is the same",
                      info->name, f->key);
    }
}

/* The count of ids of kind `k` in `n`. */
static uint64_t count_of(const ledger_counts *n, ledger_kind k)
{
    switch (k) {
#define KIND_COUNT(name, wire, count)                                                              \
    case LEDGER_KIND_##name:                                                                       \
        return n->count;
        LEDGER_KINDS(KIND_COUNT)
#undef KIND_COUNT
    }
    return UINT64_MAX;
}

static void check_replay_of(ledger_type t)
{
    const event_type_info *info = &event_types[t];
    uint32_t uid;
    ledger_cmd base = witness(t, &uid);
    ledger_event ev;
    cr_assert_eq(check_as(uid, &base, &ev), 0, "%s witness: %s", info->name, err.message);
    ev.seq = seq + 1;
    ev.ts_ms = 1640000000000u;

    /* Its layout: it encodes, and decodes to the same fields. */
    uint8_t bytes[EVENT_BYTES_MAX];
    int n = event_encode(&ev, (const uint8_t[BUDGET_HASH_BYTES]){0}, bytes, sizeof bytes, NULL);
    cr_assert_gt(n, 0, "%s does not encode", info->name);
    ledger_event back;
    cr_assert_eq(event_decode(bytes, (size_t)n, &back), 0, "%s does not decode", info->name);
    for (uint8_t i = 0; i < info->field_count; i++) {
        const event_field *f = &info->fields[i];
        if (f->value == FIELD_LINES) {
            cr_assert(ledger_same_request(&ev, &ev.actor, &back), "%s: lines differ", info->name);
            continue;
        }
        cr_assert_eq(memcmp(member(&back, f), member(&ev, f),
                            field_is_str(f) ? strlen(member(&ev, f)) + 1 : f->size),
                     0, "%s: %s differs after a round trip", info->name, f->key);
    }

    /* Every derived field is checked against the state when the event is applied. */
    for (uint8_t i = 0; i < info->field_count; i++) {
        const event_field *f = &info->fields[i];
        if (f->source != FIELD_DERIVED)
            continue;
        ledger_event bad = ev;
        if (f->value == FIELD_TARGET_KIND)
            bad.target_kind =
                bad.target_kind == LEDGER_KIND_AVROP ? LEDGER_KIND_ALLOCATION : LEDGER_KIND_AVROP;
        else
            bad = changed(bad, f);
        cr_assert_eq(ledger_apply(l, &bad), BUDGET_EINTERNAL, "%s with another %s applies",
                     info->name, f->key);
    }

    /* It applies, its id names the kind of its row, and that kind is counted. */
    ledger *c = ledger_clone(l);
    cr_assert_not_null(c);
    ledger_counts before, after;
    ledger_get_counts(c, &before);
    cr_assert_eq(ledger_apply(c, &ev), 0, "%s does not apply", info->name);
    ledger_get_counts(c, &after);
    cr_assert_eq(ledger_id_kind(c, "w"), info->creates, "%s", info->name);
    cr_assert_eq(count_of(&after, info->creates), count_of(&before, info->creates) + 1,
                 "%s: %s not counted", info->name, ledger_kind_name(info->creates));
    ledger_free(c);
}

Test(ledger, every_type_names_round_trip_and_every_kind_has_a_name)
{
    for (int t = 1; t < (int)LEDGER_TYPE_END; t++) {
        const char *name = ledger_type_name((ledger_type)t);
        cr_assert_str_eq(name, event_types[t].name);
        cr_assert_eq(ledger_type_from_name(name, strlen(name)), (ledger_type)t, "%s", name);
        cr_assert_str_neq(ledger_kind_name(event_types[t].creates), "unknown", "%s", name);
        cr_assert_gt(event_types[t].field_count, 0, "%s has no layout", name);
        cr_assert_str_eq(event_types[t].fields[0].key, "id", "%s", name);
    }
    cr_assert_str_eq(ledger_type_name((ledger_type)LEDGER_TYPE_END), "unknown");
    cr_assert_str_eq(ledger_type_name(0), "unknown");
    for (int k = 1; k < (int)LEDGER_KIND_END; k++)
        cr_assert_str_neq(ledger_kind_name((ledger_kind)k), "unknown");
    cr_assert_str_eq(ledger_kind_name((ledger_kind)LEDGER_KIND_END), "unknown");
}

Test(ledger, every_field_of_every_type_is_checked_and_compared_on_retry)
{
    table_fixture();
    for (int t = 1; t < (int)LEDGER_TYPE_END; t++)
        check_fields_of((ledger_type)t);
}

Test(ledger, every_type_encodes_by_its_layout_and_replays_with_its_derived_fields_checked)
{
    table_fixture();
    for (int t = 1; t < (int)LEDGER_TYPE_END; t++)
        check_replay_of((ledger_type)t);
}

/* ---- budget year and plan years ---------------------------------------------------------- */

/* The units × years row of (unit, year), which must exist. */
static ledger_year_view year_row(const char *unit, int32_t year)
{
    size_t i = 0;
    ledger_year_view v;
    cr_assert(ledger_next_year_row(l, &i, unit, year, year, &v), "no row %s %d", unit, (int)year);
    return v;
}

static bool has_year_row(const char *unit, int32_t year)
{
    size_t i = 0;
    ledger_year_view v;
    return ledger_next_year_row(l, &i, unit, year, year, &v);
}

/* Budget 2022 with plan 2023-2027 for KS, SON and KFN; KS's line continues f2021. */
static void adopt_2022(void)
{
    OK(grant("f2021", "KS", 2021, 300000000, "Utökat trygghetsarbete", "KS 2021-08-24 § 241"));
    ledger_cmd c = adopt("b2022", 2022, 2027);
    add_line(&c, "KS", 150000000, "f2021", 5,
             (const int64_t[]){150000000, 150000000, 150000000, 150000000, 150000000});
    add_line(&c, "SON", 100000000, "", 5,
             (const int64_t[]){100000000, 100000000, 100000000, 100000000, 100000000});
    add_line(&c, "KFN", 50000000, "", 5, (const int64_t[]){50000000, 50000000, 0, 0, 0});
    OK(c);
}

/* A closed year takes no adoption: its frames would move money in it. A closed year's unspent
 * money shows in the units × years view. */
Test(ledger, a_closed_year_takes_no_adoption_and_shows_its_unspent_by_unit)
{
    OK(grant("f2021", "KS", 2021, 3000, "Ram", ""));
    OK(propose("a1", "f2021", "SON", 1000, "X"));
    OK_AS(UID_DECIDER, approve("a1-ok", "a1"));
    OK_AS(UID_SON, avrop("v1", "a1", 400, ""));
    OK_AS(UID_DECIDER, approve("v1-ok", "v1"));
    ledger_cmd c = adopt("b2021", 2021, 2022);
    add_line(&c, "SON", 100, "", 1, (const int64_t[]){100});
    ledger_cmd closing = close_year("c21", 2021);
    OK(closing);
    FAILS(c, BUDGET_EINVALID_STATE);
    cr_assert_not_null(strstr(err.message, "fiscal year 2021 is closed (c21)"), "%s", err.message);
    size_t i = 0;
    ledger_year_view v;
    cr_assert(ledger_next_year_row(l, &i, "KS", 2021, 2021, &v));
    int64_t unspent = -1;
    cr_assert(years_unspent(l, "KS", 2021, &unspent));
    cr_assert_eq(unspent, 3000 - 400, "KS's frame kept what was not called off");
    cr_assert_not(years_unspent(l, "KS", 2022, &unspent), "2022 is open");
}

Test(ledger, an_adoption_makes_a_binding_frame_per_line_and_records_the_plan_years)
{
    adopt_2022();
    cr_assert_eq(ledger_id_kind(l, "b2022"), LEDGER_KIND_ADOPTION);
    expect_frame("b2022:KS", 150000000, 0, 0, 0);
    expect_frame("b2022:SON", 100000000, 0, 0, 0);
    expect_frame("b2022:KFN", 50000000, 0, 0, 0);
    ledger_frame_view f;
    cr_assert(ledger_frame(l, "b2022:KS", &f));
    cr_assert_eq(f.year, 2022);
    cr_assert_str_eq(f.unit, "KS");
    cr_assert_str_eq(f.title, "Utökat trygghetsarbete");
    cr_assert_str_eq(f.reference, "KF 2021-11-22 § 120");
    cr_assert_str_eq(f.continues, "f2021");
    cr_assert(ledger_frame(l, "b2022:SON", &f));
    cr_assert_str_eq(f.continues, "");

    ledger_year_view y = year_row("SON", 2022);
    cr_assert_eq(y.budget, 100000000);
    cr_assert_not(y.has_plan);
    y = year_row("KFN", 2024);
    cr_assert(y.has_plan);
    cr_assert_eq(y.plan_by, 2022);
    cr_assert_eq(y.plan, 50000000);
    cr_assert_eq(y.budget, 0);
    y = year_row("KFN", 2025);
    cr_assert(y.has_plan, "a plan amount of 0 is a plan");
    cr_assert_eq(y.plan, 0);
    cr_assert_not(has_year_row("KS", 2028), "2028 is past the plan years");

    ledger_counts n;
    ledger_get_counts(l, &n);
    cr_assert_eq(n.frames, 4);
    cr_assert_eq(n.adoptions, 1);
    cr_assert_eq(n.units, 4, "plan years are no units: %" PRIu64, n.units);
}

Test(ledger, plan_amounts_cannot_be_allocated_from_or_called_off)
{
    adopt_2022();
    /* Nothing of 2023 is a frame: no frame, no unit row to allocate or call off from. */
    size_t i = 0;
    ledger_frame_view f;
    cr_assert_not(ledger_next_frame(l, &i, NULL, 2023, &f));
    i = 0;
    ledger_unit_view u;
    cr_assert_not(ledger_next_unit(l, &i, "KS", 2023, &u));
    /* The adoption itself is no frame either. */
    FAILS(propose("a1", "b2022", "SON", 1, "Trygghet"), BUDGET_ENOT_FOUND);
    cr_assert(strstr(err.message, "adoption") != NULL, "%s", err.message);
    FAILS(adjust("j1", "b2022", 1, "Tillägg", ""), BUDGET_ENOT_FOUND);
    FAILS_AS(UID_SON, avrop("v1", "b2022", 1, ""), BUDGET_ENOT_FOUND);
    FAILS(propose("a1", "b2022:KS:2023", "SON", 1, "Trygghet"), BUDGET_ENOT_FOUND);
    /* The budget year's frame is binding, and only it: the plan amounts do not add to it. */
    FAILS(propose("a1", "b2022:KS", "SON", 150000001, "Trygghet"), BUDGET_EINSUFFICIENT_FUNDS);
    OK(propose("a1", "b2022:KS", "SON", 150000000, "Trygghet"));
    OK_AS(UID_DECIDER, approve("a1-ok", "a1"));
    OK_AS(UID_SON, avrop("v1", "a1", 150000000, ""));
    OK_AS(UID_DECIDER, approve("v1-ok", "v1"));
    ledger_year_view y = year_row("SON", 2023);
    cr_assert_eq(y.allocated, 0);
    cr_assert_eq(y.called_off, 0);
    cr_assert_eq(y.plan, 100000000);
    y = year_row("SON", 2022);
    cr_assert_eq(y.allocated, 150000000);
    cr_assert_eq(y.called_off, 150000000);
}

Test(ledger, a_later_adoption_shows_plan_against_adopted_and_takes_over_the_plan)
{
    adopt_2022();
    ledger_cmd c = adopt("b2023", 2023, 2028);
    add_line(&c, "KS", 160000000, "b2022:KS", 5,
             (const int64_t[]){150000000, 150000000, 150000000, 150000000, 150000000});
    add_line(&c, "SON", 100000000, "b2022:SON", 5,
             (const int64_t[]){120000000, 100000000, 100000000, 100000000, 100000000});
    OK(c);
    /* 2023: the plan of 2022's adoption beside the frame 2023's adopted. */
    ledger_year_view y = year_row("KS", 2023);
    cr_assert_eq(y.budget, 160000000);
    cr_assert(y.has_plan);
    cr_assert_eq(y.plan_by, 2022);
    cr_assert_eq(y.plan, 150000000);
    /* 2024: the later adoption changed SON's plan amount. */
    y = year_row("SON", 2024);
    cr_assert_eq(y.plan_by, 2023);
    cr_assert_eq(y.plan, 120000000);
    /* KFN was not in 2023's adoption: its plan of 2022 stands. */
    y = year_row("KFN", 2024);
    cr_assert_eq(y.plan_by, 2022);
    cr_assert_eq(y.plan, 50000000);
    y = year_row("KS", 2028);
    cr_assert_eq(y.plan_by, 2023);
}

Test(ledger, an_adoption_of_an_earlier_year_entered_later_keeps_the_later_plan)
{
    ledger_cmd c = adopt("b2023", 2023, 2024);
    add_line(&c, "KS", 100, "", 1, (const int64_t[]){300});
    OK(c);
    c = adopt("b2022", 2022, 2024);
    add_line(&c, "KS", 100, "", 2, (const int64_t[]){200, 200});
    OK(c);
    ledger_year_view y = year_row("KS", 2024);
    cr_assert_eq(y.plan_by, 2023);
    cr_assert_eq(y.plan, 300);
    y = year_row("KS", 2023);
    cr_assert_eq(y.plan_by, 2022);
    cr_assert_eq(y.plan, 200);
    cr_assert_eq(y.budget, 100);
}

Test(ledger, one_bad_line_refuses_the_whole_adoption)
{
    OK(grant("f2021", "KS", 2021, 100, "Ram", ""));
    OK(grant("f2022", "KS", 2022, 100, "Ram", ""));
    char *before = snapshot(l);
    const int64_t plan[] = {1, 2};
    struct {
        const char *why;
        const char *unit, *continues;
        int64_t amount;
        uint8_t plans;
        int code;
    } bad[] = {
        {"a unit twice", "SON", "", 5, 2, BUDGET_EBAD_REQUEST},
        {"continues a frame of the same year", "KFN", "f2022", 5, 2, BUDGET_EBAD_REQUEST},
        {"continues no frame", "KFN", "nowhere", 5, 2, BUDGET_ENOT_FOUND},
        {"too few plan amounts", "KFN", "", 5, 1, BUDGET_EBAD_REQUEST},
        {"no amount", "KFN", "", 0, 2, BUDGET_EBAD_REQUEST},
        {"an amount over the limit", "KFN", "", MAX + 1, 2, BUDGET_EBAD_REQUEST},
        {"a unit of bad characters", "K N", "", 5, 2, BUDGET_EBAD_REQUEST},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        ledger_cmd c = adopt("b2022", 2022, 2024);
        add_line(&c, "KS", 10, "f2021", 2, plan);
        add_line(&c, "SON", 10, "", 2, plan);
        add_line(&c, bad[k].unit, bad[k].amount, bad[k].continues, bad[k].plans, plan);
        FAILS(c, bad[k].code);
        char *after = snapshot(l);
        cr_assert_str_eq(before, after, "%s: something was adopted", bad[k].why);
        free(after);
    }
    free(before);
    /* A negative plan amount, and the frame of a line that exists already. */
    ledger_cmd c = adopt("b2022", 2022, 2024);
    add_line(&c, "KS", 10, "", 2, (const int64_t[]){1, -1});
    FAILS(c, BUDGET_EBAD_REQUEST);
    OK(grant("b2022:SON", "SON", 2022, 1, "Ram", ""));
    c = adopt("b2022", 2022, 2024);
    add_line(&c, "KS", 10, "", 2, plan);
    add_line(&c, "SON", 10, "", 2, plan);
    FAILS(c, BUDGET_ECONFLICT);
    cr_assert_not(ledger_frame(l, "b2022:KS", &(ledger_frame_view){0}));
}

Test(ledger, an_adoption_holds_at_most_its_lines_and_plan_years)
{
    int64_t plan[BUDGET_PLAN_YEARS_MAX + 1];
    for (int k = 0; k <= BUDGET_PLAN_YEARS_MAX; k++)
        plan[k] = k;
    /* Ten plan years, and not eleven. */
    ledger_cmd c = adopt("b11", 2022, 2022 + BUDGET_PLAN_YEARS_MAX + 1);
    add_line(&c, "KS", 10, "", BUDGET_PLAN_YEARS_MAX, plan);
    FAILS(c, BUDGET_EBAD_REQUEST);
    cr_assert(strstr(err.message, "at most 10 plan years") != NULL, "%s", err.message);
    c = adopt("b10", 2022, 2022 + BUDGET_PLAN_YEARS_MAX);
    add_line(&c, "KS", 10, "", BUDGET_PLAN_YEARS_MAX, plan);
    OK(c);
    cr_assert_eq(year_row("KS", 2022 + BUDGET_PLAN_YEARS_MAX).plan, BUDGET_PLAN_YEARS_MAX - 1);
    /* A budget year alone (no plan years), and a plan_until before it. */
    c = adopt("b0", 2030, 2030);
    add_line(&c, "KS", 10, "", 0, plan);
    OK(c);
    c = adopt("bneg", 2030, 2029);
    add_line(&c, "KS", 10, "", 0, plan);
    FAILS(c, BUDGET_EBAD_REQUEST);
    /* The most lines, each with the most plan years, and one line more. */
    c = adopt("bmax", 2040, 2040 + BUDGET_PLAN_YEARS_MAX);
    for (int i = 0; i < BUDGET_ADOPT_LINES_MAX; i++) {
        char unit[16], id[24];
        snprintf(unit, sizeof unit, "U%d", i);
        snprintf(id, sizeof id, "unit-U%d", i);
        OK(register_unit(id, unit, "Verksamhet", "verksamhet", "SON", ""));
        add_line(&c, unit, 10, "b10:KS", BUDGET_PLAN_YEARS_MAX, plan);
    }
    ledger_cmd over = c;
    OK(c);
    ledger_counts n;
    ledger_get_counts(l, &n);
    cr_assert_eq(n.frames, 2 + BUDGET_ADOPT_LINES_MAX);
    cr_assert_eq(year_row("U63", 2050).plan, BUDGET_PLAN_YEARS_MAX - 1);
    PUT(over.id, "bover");
    over.lines.count = BUDGET_ADOPT_LINES_MAX + 1;
    FAILS(over, BUDGET_EBAD_REQUEST);
    /* A frame id over 64 characters: "<adoption id>:<unit>". */
    OK(register_unit("unit-long", "A-UNIT-CODE-OF-TWENTY-FOUR", "Lång", "verksamhet", "", ""));
    c = adopt("an-adoption-id-of-forty-characters-long", 2050, 2050);
    add_line(&c, "A-UNIT-CODE-OF-TWENTY-FOUR", 10, "", 0, plan);
    FAILS(c, BUDGET_EBAD_REQUEST);
    cr_assert(strstr(err.message, "shorter id") != NULL, "%s", err.message);
}

Test(ledger, a_frame_may_continue_a_frame_of_an_earlier_year)
{
    OK(grant("f2021", "KS", 2021, 100, "Ram", ""));
    OK(propose("a1", "f2021", "SON", 10, "Trygghet"));
    OK(grant_continuing("f2022", "SON", 2022, 100, "f2021"));
    ledger_frame_view f;
    cr_assert(ledger_frame(l, "f2022", &f));
    cr_assert_str_eq(f.continues, "f2021");
    FAILS(grant_continuing("g2022", "KS", 2022, 100, "f2022"), BUDGET_EBAD_REQUEST);
    FAILS(grant_continuing("g2021", "KS", 2021, 100, "f2022"), BUDGET_EBAD_REQUEST);
    FAILS(grant_continuing("g2023", "KS", 2023, 100, "nowhere"), BUDGET_ENOT_FOUND);
    FAILS(grant_continuing("g2023", "KS", 2023, 100, "a1"), BUDGET_ENOT_FOUND);
    cr_assert(strstr(err.message, "allocation") != NULL, "%s", err.message);
    FAILS(grant_continuing("g2023", "KS", 2023, 100, "bad id!"), BUDGET_EBAD_REQUEST);
    cr_assert(strstr(err.message, "continues") == err.message, "%s", err.message);
    OK(grant_continuing("g2023", "KS", 2023, 100, "f2022"));
}

Test(ledger, adoptions_and_continued_frames_replay_to_the_same_state)
{
    adopt_2022();
    OK(grant_continuing("f2023", "KFN", 2023, 100, "b2022:KFN"));
    ledger_cmd c = adopt("b2023", 2023, 2024);
    add_line(&c, "KS", 10, "b2022:KS", 1, (const int64_t[]){7});
    OK(c);
    /* Check each command again on a fresh ledger, by its events. */
    ledger *twin = replica();
    ledger *keep = l;
    l = twin;
    seq = FIXTURE_EVENTS;
    adopt_2022();
    OK(grant_continuing("f2023", "KFN", 2023, 100, "b2022:KFN"));
    /* A clone before the last adoption does not see it. */
    ledger *before = ledger_clone(l);
    cr_assert_not_null(before);
    char *before_snap = snapshot(before);
    OK(c);
    char *a = snapshot(keep), *b = snapshot(twin), *after_snap = snapshot(before);
    cr_assert_str_eq(a, b);
    cr_assert_str_eq(before_snap, after_snap);
    cr_assert_str_neq(before_snap, b);
    free(a);
    free(b);
    free(before_snap);
    free(after_snap);
    ledger_free(before);
    l = keep;
    ledger_free(twin);
}

Test(ledger, the_years_view_sums_rows_by_parent_and_by_year)
{
    adopt_2022();
    OK(propose("a1", "b2022:KS", "SON", 30000000, "Trygghet"));
    OK_AS(UID_DECIDER, approve("a1-ok", "a1"));
    OK_AS(UID_SON, avrop("v1", "a1", 10000000, ""));
    OK_AS(UID_DECIDER, approve("v1-ok", "v1"));

    years_summary sum;
    /* The register's parents: SON and KFN are under KS (the fixture); KS is under none. */
    cr_assert_eq(years_summarize(l, NULL, 2021, 2024, years_parent, NULL, &sum), 0);
    /* Totals of every unit by year. */
    cr_assert_eq(sum.totals[0].budget, 300000000); /* 2021: f2021 */
    cr_assert_not(sum.totals[0].has_plan);
    cr_assert_eq(sum.totals[1].budget, 300000000);
    cr_assert_eq(sum.totals[1].allocated, 30000000);
    cr_assert_eq(sum.totals[1].called_off, 10000000);
    cr_assert_eq(sum.totals[1].available, 20000000);
    cr_assert_eq(sum.totals[2].budget, 0);
    cr_assert(sum.totals[2].has_plan);
    cr_assert_eq(sum.totals[2].plan, 300000000);
    cr_assert_eq(sum.totals[3].plan, 300000000);
    /* Subtotals of KS (SON and KFN), in order of first appearance: 2022, then 2023, 2024. */
    cr_assert_eq(sum.subtotals_count, 3);
    cr_assert_str_eq(sum.subtotals[0].parent, "KS");
    cr_assert_eq(sum.subtotals[0].year, 2022);
    cr_assert_eq(sum.subtotals[0].sums.budget, 150000000);
    cr_assert_eq(sum.subtotals[0].sums.allocated, 30000000);
    cr_assert_eq(sum.subtotals[1].year, 2023);
    cr_assert_eq(sum.subtotals[1].sums.plan, 150000000);
    cr_assert_eq(sum.subtotals[2].sums.plan, 150000000);
    years_summary_free(&sum);

    /* One unit only: its parent's subtotals hold it alone. */
    cr_assert_eq(years_summarize(l, "KFN", 2021, 2024, years_parent, NULL, &sum), 0);
    cr_assert_eq(sum.totals[1].budget, 50000000);
    cr_assert_eq(sum.totals[2].plan, 50000000);
    cr_assert_eq(sum.subtotals_count, 3);
    cr_assert_eq(sum.subtotals[0].sums.budget, 50000000);
    years_summary_free(&sum);
    /* KS itself has no parent: its rows are in the totals only. */
    cr_assert_eq(years_summarize(l, "KS", 2021, 2024, years_parent, NULL, &sum), 0);
    cr_assert_eq(sum.subtotals_count, 0);
    cr_assert_eq(sum.totals[1].budget, 150000000);
    years_summary_free(&sum);
    /* A span over the limit is refused. */
    cr_assert_eq(
        years_summarize(l, NULL, 2021, 2021 + BUDGET_YEARS_SPAN_MAX, years_parent, NULL, &sum), -1);
    years_summary_free(&sum);
}

Test(ledger, unspent_is_shown_only_for_closed_years)
{
    adopt_2022();
    size_t i = 0;
    years_row r;
    int rows = 0;
    while (years_next_row(l, &i, NULL, 2021, 2027, &r)) {
        cr_assert_not(r.sums.has_unspent, "%s %d is of an open year", r.unit, (int)r.year);
        rows++;
    }
    cr_assert_eq(rows, 1 + 3 + 3 * 5);
    int64_t unspent = -1;
    cr_assert_not(years_unspent(l, "KS", 2022, &unspent));
    cr_assert_eq(unspent, -1);
}

Test(ledger, an_adoption_names_only_registered_open_units)
{
    ledger_counts before, after;
    ledger_get_counts(l, &before);
    ledger_cmd c = adopt("b2022", 2022, 2022);
    add_line(&c, "KS", 1000, "", 0, NULL);
    add_line(&c, "SONN", 500, "", 0, NULL);
    FAILS(c, BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "line 2: unit SONN is not a registered unit; did you mean SON?");
    OK(close_unit("c1", "X"));
    c = adopt("b2022", 2022, 2022);
    add_line(&c, "X", 1000, "", 0, NULL);
    FAILS(c, BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "line 1: unit X is closed");
    /* Nothing of a refused adoption is made. */
    ledger_get_counts(l, &after);
    cr_assert_eq(after.frames, before.frames);
    ledger_frame_view f;
    cr_assert_not(ledger_frame(l, "b2022:KS", &f));
    /* Adoptions exist only in logs written with the register: replay refuses one naming a unit
     * the register does not hold, where an older type's event would define it. */
    c = adopt("b2022", 2022, 2022);
    add_line(&c, "KS", 1000, "", 0, NULL);
    OK(c);
    ledger *bare = ledger_new();
    cr_assert_not_null(bare);
    ledger_event stored = last_ev;
    stored.seq = 1;
    cr_assert_neq(ledger_apply(bare, &stored), 0);
    ledger_free(bare);
}

/* ---- the register of units ------------------------------------------------------------------ */

/* The register's view of `code`; asserts it is there. */
static registry_view unit_view_of(const char *code)
{
    const registry *reg = ledger_registry(l);
    uint32_t i = registry_find(reg, code);
    cr_assert_neq(i, REGISTRY_NONE, "%s is not in the register", code);
    registry_view v;
    registry_view_of(reg, i, &v);
    return v;
}

Test(ledger, a_write_naming_an_unregistered_unit_is_not_found_with_the_nearest_codes)
{
    FAILS(grant("f1", "SONN", 2021, 1000, "Ram", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "unit SONN is not a registered unit; did you mean SON?");
    /* Case does not count in the distance; the code is still refused as written. */
    FAILS(grant("f1", "son", 2021, 1000, "Ram", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "unit son is not a registered unit; did you mean SON?");
    OK(register_unit("u1", "SOC", "Socialförvaltningen", "förvaltning", "SON", ""));
    OK(register_unit("u2", "SN", "Samhällsbyggnadsnämnden", "nämnd", "", ""));
    OK(register_unit("u3", "SOM", "Sommarverksamheten", "verksamhet", "SOC", ""));
    /* At most three, nearest first, ties in the order they were registered. */
    FAILS(propose("a1", "f1", "SO", 1, "P"), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "unit SO is not a registered unit; did you mean SON, SOC or SN?");
    /* Nothing near: no guess. */
    FAILS(grant("f1", "QWERTY", 2021, 1000, "Ram", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "unit QWERTY is not a registered unit");
    /* A swap of two neighbours is one edit. */
    FAILS(grant("f1", "SNO", 2021, 1000, "Ram", ""), BUDGET_ENOT_FOUND);
    cr_assert(strstr(err.message, "did you mean SON") != NULL, "%s", err.message);
    OK(grant("f1", "SON", 2021, 1000, "Ram", ""));
}

Test(ledger,
     a_proposal_to_an_unregistered_unit_is_not_found_and_a_proposal_to_a_registered_one_fits)
{
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    FAILS(propose("a1", "f1", "KFM", 100, "Fritid"), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "unit KFM is not a registered unit; did you mean KFN?");
    OK(propose("a1", "f1", "KFN", 100, "Fritid"));
}

Test(ledger, a_unit_is_registered_once_with_a_kind_of_the_list_under_an_open_parent)
{
    registry_view v = unit_view_of("SON");
    cr_assert_str_eq(v.name, "Social- och omsorgsnämnden");
    cr_assert_str_eq(v.kind, "nämnd");
    cr_assert_str_eq(v.parent, "KS");
    cr_assert(v.registered && !v.closed);
    FAILS(register_unit("u1", "SON", "Socialnämnden", "nämnd", "", ""), BUDGET_ECONFLICT);
    cr_assert_str_eq(err.message, "unit SON is registered already, as Social- och omsorgsnämnden");
    FAILS(register_unit("u1", "BUN", "Barn", "namnd", "", ""), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(err.message, "\"namnd\" is not a kind of unit: the kinds are styrelse, "
                                  "nämnd, förvaltning, verksamhet");
    FAILS(register_unit("u1", "BUN", "Barn", "nämnd", "KZ", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "parent KZ is not a registered unit; did you mean KS?");
    OK(register_unit("u1", "BUN", "Barn- och ungdomsnämnden", "nämnd", "KS", "KF § 1"));
    cr_assert_str_eq(unit_view_of("BUN").parent, "KS");
    /* A closed unit is no parent, and its code is not registered again. */
    OK(close_unit("c1", "X"));
    FAILS(register_unit("u2", "X2", "Ny", "verksamhet", "X", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "parent X is closed");
    FAILS(register_unit("u2", "X", "Ny", "nämnd", "", ""), BUDGET_ECONFLICT);
    cr_assert_str_eq(err.message, "unit X was closed; the code of a closed unit is not used again");
}

Test(ledger, a_rename_keeps_the_former_names_and_refuses_an_unknown_unit_or_the_same_name)
{
    OK(rename_unit("r1", "SON", "Socialnämnden"));
    OK(rename_unit("r2", "SON", "Vård- och omsorgsnämnden"));
    registry_view v = unit_view_of("SON");
    cr_assert_str_eq(v.name, "Vård- och omsorgsnämnden");
    cr_assert_eq(v.former_count, 2);
    const registry *reg = ledger_registry(l);
    uint32_t i = registry_find(reg, "SON");
    cr_assert_str_eq(registry_former_name(reg, i, 0), "Socialnämnden");
    cr_assert_str_eq(registry_former_name(reg, i, 1), "Social- och omsorgsnämnden");
    FAILS(rename_unit("r3", "SON", "Vård- och omsorgsnämnden"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "unit SON is named Vård- och omsorgsnämnden already");
    FAILS(rename_unit("r3", "SONX", "Ny"), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "unit SONX is not a registered unit; did you mean SON?");
    /* A unit has at most REGISTRY_NAMES_MAX names in all. */
    for (uint32_t k = 3; k <= REGISTRY_NAMES_MAX; k++) {
        char id[16], name[32];
        snprintf(id, sizeof id, "r%u", k);
        snprintf(name, sizeof name, "Namn %u", k);
        if (k < REGISTRY_NAMES_MAX)
            OK(rename_unit(id, "SON", name));
        else
            FAILS(rename_unit(id, "SON", name), BUDGET_EINVALID_STATE);
    }
    cr_assert_eq(unit_view_of("SON").former_count, REGISTRY_NAMES_MAX - 1);
}

Test(ledger, closing_a_unit_is_refused_while_money_is_left_or_pending_and_says_what)
{
    OK(grant("f1", "KFN", 2021, 1000, "Ram", ""));
    FAILS(close_unit("c1", "KFN"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "unit KFN cannot be closed: frame f1 has 1000 öre unallocated, "
                                  "0 öre pending");
    OK(propose("a1", "f1", "KFN", 400, "Fritid"));
    FAILS(close_unit("c1", "KFN"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "unit KFN cannot be closed: frame f1 has 600 öre unallocated, 400 öre "
                     "pending; allocation a1 is pending");
    OK_AS(UID_DECIDER, approve("d1", "a1"));
    OK(adjust("j1", "f1", -600, "Minskning", ""));
    FAILS(close_unit("c1", "KFN"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "unit KFN cannot be closed: 2021: 400 öre to call off, 0 öre pending");
    OK(avrop("v1", "a1", 400, "Allt"));
    OK_AS(UID_DECIDER, approve("d2", "v1"));
    /* Open units under it keep it open too. */
    OK(register_unit("u1", "KFN-B", "Biblioteken", "verksamhet", "KFN", ""));
    FAILS(close_unit("c1", "KFN"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "unit KFN cannot be closed: unit KFN-B under it is open");
    OK(close_unit("c1", "KFN-B"));
    OK(close_unit("c2", "KFN"));
    cr_assert(unit_view_of("KFN").closed);
    FAILS(close_unit("c3", "KFN"), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "unit KFN is closed");
}

Test(ledger, a_closed_unit_is_named_by_no_write_and_nothing_moves_in_or_out_of_it)
{
    OK(grant("f1", "KFN", 2021, 1000, "Ram", ""));
    OK(adjust("j1", "f1", -1000, "Indragen", ""));
    OK(close_unit("c1", "KFN"));
    FAILS(grant("f2", "KFN", 2021, 1000, "Ram", ""), BUDGET_ENOT_FOUND);
    cr_assert_str_eq(err.message, "unit KFN is closed");
    OK(grant("f2", "KS", 2021, 1000, "Ram", ""));
    FAILS(propose("a1", "f2", "KFN", 100, "Fritid"), BUDGET_ENOT_FOUND);
    FAILS(adjust("j2", "f1", 100, "Tillägg", ""), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "frame f1 is held by unit KFN, which is closed");
    FAILS(rename_unit("r1", "KFN", "Ny"), BUDGET_ENOT_FOUND);
}

/* An event as budgetd before the register wrote it: checked against a ledger in which its
 * units were taken as defined, then applied to `l` as replay does. */
static int replay_old(ledger_event ev)
{
    ev.seq = ++seq;
    ev.ts_ms = 1630000000000u + seq;
    return ledger_apply(l, &ev);
}

Test(ledger, replay_takes_the_units_of_an_old_log_as_defined_under_their_codes)
{
    ledger_event g;
    memset(&g, 0, sizeof g);
    g.type = LEDGER_FRAME_GRANTED;
    PUT(g.id, "old-f1");
    PUT(g.unit, "TN");
    g.year = 2020;
    g.amount = 5000;
    PUT(g.title, "Ram");
    g.actor = actor(UID_KS);
    /* The write path refuses it... */
    FAILS(grant("old-f1", "TN", 2020, 5000, "Ram", ""), BUDGET_ENOT_FOUND);
    /* ...replay of the stored event takes TN as defined, named by its code. */
    cr_assert_eq(replay_old(g), 0);
    registry_view v = unit_view_of("TN");
    cr_assert_str_eq(v.name, "TN");
    cr_assert_str_eq(v.kind, "");
    cr_assert(!v.registered && !v.closed);
    expect_frame("old-f1", 5000, 0, 0, 0);
    /* New writes may name it, and it may be registered with a name, a kind and a parent. */
    OK(grant("f2", "TN", 2021, 100, "Ram", ""));
    OK(register_unit("u1", "TN-D", "Driften", "verksamhet", "TN", ""));
    FAILS(register_unit("u2", "TN", "Tekniska nämnden", "nämnd", "TN", ""), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "unit TN cannot be under TN, which is itself");
    FAILS(register_unit("u2", "TN", "Tekniska nämnden", "nämnd", "TN-D", ""),
          BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "unit TN cannot be under TN-D, which is under it");
    OK(register_unit("u2", "TN", "Tekniska nämnden", "nämnd", "KS", ""));
    v = unit_view_of("TN");
    cr_assert_str_eq(v.name, "Tekniska nämnden");
    cr_assert(v.registered);
    cr_assert_eq(v.former_count, 0);
}

Test(ledger, replay_refuses_an_event_that_names_a_closed_unit)
{
    OK(close_unit("c1", "X"));
    ledger_event g;
    memset(&g, 0, sizeof g);
    g.type = LEDGER_FRAME_GRANTED;
    PUT(g.id, "f1");
    PUT(g.unit, "X");
    g.year = 2021;
    g.amount = 1;
    PUT(g.title, "Ram");
    g.actor = actor(UID_KS);
    g.seq = seq + 1;
    cr_assert_eq(ledger_apply(l, &g), BUDGET_EINTERNAL);
    PUT(g.unit, "Y");
    cr_assert_eq(ledger_apply(l, &g), 0, "an unknown unit is taken as defined");
}

/* ---- decisions as data ------------------------------------------------------------------- */

/* `c` without a decision: as events were written before decisions were data. */
static ledger_cmd without_decision(ledger_cmd c)
{
    set_decision(&c, "", 0, "", "");
    return c;
}

Test(ledger, every_write_that_rests_on_a_decision_needs_one)
{
    FAILS(without_decision(grant("f1", "KS", 2021, 1000, "Ram", "KS 2021-08-24 § 241")),
          BUDGET_EBAD_REQUEST);
    cr_assert(strncmp(err.message, "decision_body ", 14) == 0, "%s", err.message);
    OK(grant("f1", "KS", 2021, 1000, "Ram", ""));
    FAILS(without_decision(adjust("f1-up", "f1", 100, "Tillägg", "")), BUDGET_EBAD_REQUEST);
    OK(propose("a1", "f1", "SON", 100, "Fritid"));
    FAILS_AS(UID_DECIDER, without_decision(approve("a1-ok", "a1")), BUDGET_EBAD_REQUEST);
    FAILS_AS(UID_DECIDER, without_decision(reject("a1-no", "a1")), BUDGET_EBAD_REQUEST);
    /* One part missing is as bad as all of them. */
    ledger_cmd c = approve("a1-ok", "a1");
    c.decision_date = 0;
    FAILS_AS(UID_DECIDER, c, BUDGET_EBAD_REQUEST);
    cr_assert(strstr(err.message, "decision_date is required") != NULL, "%s", err.message);
    c = approve("a1-ok", "a1");
    c.decision_paragraph[0] = '\0';
    FAILS_AS(UID_DECIDER, c, BUDGET_EBAD_REQUEST);
    cr_assert(strncmp(err.message, "decision_paragraph ", 19) == 0, "%s", err.message);
    /* The diary number is optional; the free-text reference too. */
    c = approve("a1-ok", "a1");
    set_decision(&c, "KS", 20210928, "270 p. 2", "KS 2021/123");
    PUT(c.reference, "");
    OK_AS(UID_DECIDER, c);
    cr_assert_str_eq(last_ev.decision_body, "KS");
    cr_assert_eq(last_ev.decision_date, 20210928);
    cr_assert_str_eq(last_ev.decision_paragraph, "270 p. 2");
    cr_assert_str_eq(last_ev.decision_dnr, "KS 2021/123");
    /* Neither a proposal nor an avrop nor a withdrawal carries a decision. */
    cr_assert_eq(last_ev.type, LEDGER_DECISION_APPROVED);
    OK_AS(UID_SON, avrop("v1", "a1", 10, ""));
    cr_assert_not(ledger_has_decision(&last_ev));
}

Test(ledger, a_decision_date_is_a_real_day)
{
    ledger_cmd c = grant("f1", "KS", 2021, 1000, "Ram", "");
    c.decision_date = 20210229;
    FAILS(c, BUDGET_EBAD_REQUEST);
    cr_assert(strstr(err.message, "decision_date must be a real day") != NULL, "%s", err.message);
    c.decision_date = 18991231;
    FAILS(c, BUDGET_EBAD_REQUEST);
    c.decision_date = 20241301;
    FAILS(c, BUDGET_EBAD_REQUEST);
    c.decision_date = 20240229;
    OK(c);
    cr_assert_eq(last_ev.decision_date, 20240229);
    c = grant("f2", "KS", 2021, 1000, "Ram", "");
    PUT(c.decision_body, "ks");
    FAILS(c, BUDGET_EBAD_REQUEST);
    cr_assert(strncmp(err.message, "decision_body ", 14) == 0, "%s", err.message);
    PUT(c.decision_body, "KFN");
    PUT(c.decision_paragraph, "§ 241");
    FAILS(c, BUDGET_EBAD_REQUEST);
    cr_assert(strncmp(err.message, "decision_paragraph ", 19) == 0, "%s", err.message);
}

/* Applies `ev` (checked, then stripped or changed) with the next seq. */
static int apply_next(ledger_event ev)
{
    ev.seq = ++seq;
    ev.ts_ms = 1630000000000u + seq;
    int rc = ledger_apply(l, &ev);
    if (rc != 0)
        seq--;
    return rc;
}

Test(ledger, events_written_before_decisions_were_data_replay_to_the_same_balances)
{
    /* The same history twice: once with decisions, once as an old log has it (without). */
    ledger_cmd cmds[] = {
        grant("f1", "KS", 2021, 3000, "Ram", "KS 2021-08-24 § 241"),
        adjust("f1-up", "f1", 500, "Tillägg", ""),
        propose("a1", "f1", "SON", 1000, "Fritid"),
        approve("a1-ok", "a1"),
        propose("a2", "f1", "KFN", 500, "Kultur"),
        reject("a2-no", "a2"),
    };
    const uint32_t uids[] = {UID_KS, UID_KS, UID_KS, UID_DECIDER, UID_KS, UID_DECIDER};
    ledger *old = replica();
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        OK_AS(uids[i], cmds[i]);
        ledger_event stripped = last_ev;
        set_decision(&stripped, "", 0, "", "");
        cr_assert_eq(ledger_apply(old, &stripped), 0, "event %zu without a decision", i);
        cr_assert(ledger_added_absent(&stripped) == ledger_has_decision(&last_ev));
    }
    char *a = snapshot(l), *b = snapshot(old);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
    ledger_free(old);
}

Test(ledger, a_logged_event_with_part_of_a_decision_does_not_apply)
{
    OK(grant("f1", "KS", 2021, 3000, "Ram", ""));
    ledger_event ev;
    ledger_actor a = actor(UID_KS);
    cr_assert_eq(ledger_check(l, &(ledger_cmd){0}, &a, &ev, NULL, &err), BUDGET_EBAD_REQUEST);
    ledger_cmd c = grant("f2", "KS", 2021, 2000, "Ram", "");
    cr_assert_eq(ledger_check(l, &c, &a, &ev, NULL, &err), 0, "%s", err.message);
    ledger_event partial = ev;
    partial.decision_date = 0;
    cr_assert_eq(apply_next(partial), BUDGET_EINTERNAL);
    partial = ev;
    partial.decision_body[0] = '\0';
    cr_assert_eq(apply_next(partial), BUDGET_EINTERNAL);
    partial = ev;
    partial.decision_date = 20210229;
    cr_assert_eq(apply_next(partial), BUDGET_EINTERNAL);
    /* With only the optional diary number it is not one of before decisions either. */
    partial = ev;
    set_decision(&partial, "", 0, "", "KS 2021/1");
    cr_assert_eq(apply_next(partial), BUDGET_EINTERNAL);
    cr_assert_eq(apply_next(ev), 0);
}

/* ---- what was decided by a day ---------------------------------------------------------- */

/* The events of the commands so far, kept to be applied again (decided_events). */
static ledger_event decided_log[16];
static size_t decided_len;

static void ok_kept(uint32_t uid, ledger_cmd c)
{
    OK_AS(uid, c);
    cr_assert_lt(decided_len, 16);
    decided_log[decided_len++] = last_ev;
}

/* A ledger of what the log so far had decided by `day`. */
static ledger *decided_by(int32_t day)
{
    ledger *d = ledger_new();
    cr_assert_not_null(d);
    for (size_t i = 0; i < FIXTURE_EVENTS; i++)
        cr_assert_eq(ledger_apply_decided(d, &fixture_log[i], day), 0, "unit %zu", i);
    for (size_t i = 0; i < decided_len; i++)
        cr_assert_eq(ledger_apply_decided(d, &decided_log[i], day), 0, "event %zu", i);
    cr_assert_eq(ledger_last_seq(d), decided_log[decided_len - 1].seq);
    return d;
}

/* The units × years row of (unit, year) in `d`, when there is one. */
static bool year_row_in(const ledger *d, const char *unit, int32_t year, ledger_year_view *v)
{
    size_t i = 0;
    return ledger_next_year_row(d, &i, unit, year, year, v);
}

Test(ledger, decided_by_takes_an_adoption_as_a_grant_by_its_decision_date)
{
    decided_len = 0;
    ledger_cmd c = adopt("b2022", 2022, 2023); /* decided 2021-11-22 */
    add_line(&c, "KS", 1000, "", 1, (const int64_t[]){900});
    add_line(&c, "SON", 500, "", 1, (const int64_t[]){400});
    ok_kept(UID_KS, c);
    ok_kept(UID_KS, propose("a1", "b2022:KS", "KFN", 300, "Trygghet"));

    /* The day before: the frames stay for what draws on them, with nothing granted, and the
     * adoption's plan amounts are not there. */
    ledger *d = decided_by(20211121);
    ledger_frame_view f;
    const char *const frames[] = {"b2022:KS", "b2022:SON"};
    for (size_t i = 0; i < 2; i++) {
        cr_assert(ledger_frame(d, frames[i], &f), "%s", frames[i]);
        cr_assert_eq(f.granted, 0, "%s", frames[i]);
        cr_assert(f.granted_later, "%s", frames[i]);
    }
    cr_assert(ledger_frame(d, "b2022:KS", &f));
    cr_assert_eq(f.pending, 300);
    ledger_year_view v;
    cr_assert(!year_row_in(d, "KS", 2023, &v) || !v.has_plan);
    ledger_free(d);

    /* On the day of its decision: the ledger itself. */
    d = decided_by(20211122);
    cr_assert(ledger_frame(d, "b2022:SON", &f));
    cr_assert_eq(f.granted, 500);
    cr_assert_not(f.granted_later);
    cr_assert(year_row_in(d, "KS", 2023, &v) && v.has_plan && v.plan == 900);
    char *want = snapshot(l), *got = snapshot(d);
    cr_assert_str_eq(got, want);
    free(want);
    free(got);
    ledger_free(d);
}

Test(ledger, decided_by_counts_decisions_by_date_in_any_order_of_entry)
{
    decided_len = 0;
    ledger_cmd c = grant("f1", "KS", 2021, 1000, "Ram", "");
    ok_kept(UID_KS, c);
    c = adjust("f1-up", "f1", 1000, "Tillägg", "");
    set_decision(&c, "KS", 20211001, "280", "");
    ok_kept(UID_KS, c);
    ok_kept(UID_KS, propose("a1", "f1", "SON", 1500, "Trygghet"));
    c = approve("a1-ok", "a1");
    set_decision(&c, "KS", 20210915, "260", "");
    ok_kept(UID_DECIDER, c);
    ok_kept(UID_SON, avrop("v1", "a1", 700, ""));
    c = approve("v1-ok", "v1");
    set_decision(&c, "KS", 20210901, "250", ""); /* dated before the allocation's approval */
    ok_kept(UID_DECIDER, c);

    /* Decided by 2021-09-30: the approvals, not the raise: more allocated than granted. */
    ledger *d = decided_by(20210930);
    ledger_frame_view f;
    cr_assert(ledger_frame(d, "f1", &f));
    cr_assert_eq(f.granted, 1000);
    cr_assert_eq(f.allocated, 1500);
    cr_assert_eq(f.called_off, 700);
    cr_assert_not(f.granted_later);
    ledger_free(d);

    /* By 2021-09-10: the avrop's approval, not the allocation's: called off while pending. */
    d = decided_by(20210910);
    ledger_allocation_view a;
    cr_assert(ledger_allocation(d, "a1", &a));
    cr_assert_eq(a.status, LEDGER_PENDING);
    cr_assert_eq(a.called_off, 700);
    cr_assert(ledger_frame(d, "f1", &f));
    cr_assert_eq(f.allocated, 0);
    cr_assert_eq(f.pending, 1500);
    ledger_free(d);

    /* Before the grant: the frame stays for what draws on it, with nothing granted. */
    d = decided_by(20210801);
    cr_assert(ledger_frame(d, "f1", &f));
    cr_assert_eq(f.granted, 0);
    cr_assert(f.granted_later);
    ledger_free(d);

    /* By the last decision's day: the ledger itself. */
    d = decided_by(20211001);
    char *want = snapshot(l), *got = snapshot(d);
    cr_assert_str_eq(got, want);
    free(want);
    free(got);
    ledger_free(d);
}

Test(ledger, decided_by_counts_an_event_without_a_decision_by_its_day_of_entry)
{
    decided_len = 0;
    ok_kept(UID_KS, grant("f1", "KS", 2021, 1000, "Ram", ""));
    ledger_event old = decided_log[0];
    set_decision(&old, "", 0, "", "");
    old.ts_ms = 1630000000000u; /* 2021-08-26T17:46:40Z */
    cr_assert_eq(ledger_decision_day(&old), 20210826);
    cr_assert_eq(ledger_decision_day(&decided_log[0]), 20210824);
    ledger *d = ledger_new();
    cr_assert_eq(ledger_apply_decided(d, &old, 20210825), 0);
    ledger_frame_view f;
    cr_assert(ledger_frame(d, "f1", &f));
    cr_assert(f.granted_later);
    ledger_free(d);
    d = ledger_new();
    cr_assert_eq(ledger_apply_decided(d, &old, 20210826), 0);
    cr_assert(ledger_frame(d, "f1", &f));
    cr_assert_eq(f.granted, 1000);
    /* Not an event of a log: out of order. */
    cr_assert_eq(ledger_apply_decided(d, &old, 20210826), BUDGET_EINTERNAL);
    ledger_free(d);
}

/* ---- corrections: reductions of allocations, reversals of avrop ------------------------ */

static void expect_reductions(const char *id, int64_t reduced, int64_t reducing)
{
    ledger_allocation_view v;
    cr_assert(ledger_allocation(l, id, &v), "no allocation %s", id);
    cr_assert_eq(v.reduced, reduced, "allocation %s reduced %" PRId64, id, v.reduced);
    cr_assert_eq(v.reducing, reducing, "allocation %s reducing %" PRId64, id, v.reducing);
}

static void expect_reversals(const char *id, int64_t reversed, int64_t reversing)
{
    ledger_avrop_view v;
    cr_assert(ledger_avrop(l, id, &v), "no avrop %s", id);
    cr_assert_eq(v.reversed, reversed, "avrop %s reversed %" PRId64, id, v.reversed);
    cr_assert_eq(v.reversing, reversing, "avrop %s reversing %" PRId64, id, v.reversing);
}

/* small_state, and on a1 (0.4 mkr): v1 of 100 tkr called off, v2 of 50 tkr pending. */
static void corrections_state(void)
{
    small_state();
    OK_AS(UID_SON, avrop("v1", "a1", 10000000, "Hösten"));
    OK_AS(UID_DECIDER, approve("v1-ok", "v1"));
    OK_AS(UID_SON, avrop("v2", "a1", 5000000, "Vintern"));
}

Test(ledger, a_reduction_takes_at_most_what_is_not_called_off_pending_or_being_reduced)
{
    corrections_state();
    OK(reduce("r1", "a1", 3000000, "Mindre behov"));
    /* 40 000 000 - 10 000 000 called off - 5 000 000 pending - 3 000 000 being reduced */
    FAILS(reduce("r2", "a1", 22000001, "Resten"), BUDGET_EINSUFFICIENT_FUNDS);
    cr_assert(strstr(err.message, "at most 220 000,00 kr, not 220 000,01 kr") != NULL, "%s",
              err.message);
    cr_assert(strstr(err.message, "100 000,00 kr is called off") != NULL, "%s", err.message);
    cr_assert(strstr(err.message, "30 000,00 kr pending reductions") != NULL, "%s", err.message);
    OK(reduce("r2", "a1", 22000000, "Resten"));
    expect_reductions("a1", 0, 25000000);
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 10000000, 5000000, 0);
    /* A pending reduction is reserved: no avrop can take the same krona. */
    FAILS_AS(UID_SON, avrop("v3", "a1", 1, ""), BUDGET_EINSUFFICIENT_FUNDS);
    FAILS(reduce("r3", "a1", 1, "En krona till"), BUDGET_EINSUFFICIENT_FUNDS);
    /* Nothing moved until a decision: the frame still counts it allocated. */
    expect_frame("f1", 100000000, 40000000, 0, 10000000);
}

Test(ledger, an_approved_reduction_returns_the_money_to_the_frame)
{
    corrections_state();
    OK(reduce("r1", "a1", 20000000, "Mindre behov"));
    FAILS(approve("r1-ok", "r1"), BUDGET_EFORBIDDEN); /* four-eyes: not by its requester */
    cr_assert(strstr(err.message, "four-eyes") != NULL, "%s", err.message);
    OK_AS(UID_DECIDER, approve("r1-ok", "r1"));
    cr_assert_eq(last_ev.target_kind, LEDGER_KIND_REDUCTION);
    cr_assert_eq(last_ev.amount, 20000000);
    cr_assert_str_eq(last_ev.unit, "SON");
    expect_allocation("a1", LEDGER_APPROVED, 20000000, 10000000, 5000000, 5000000);
    expect_reductions("a1", 20000000, 0);
    expect_frame("f1", 100000000, 20000000, 0, 10000000);
    expect_unit("SON", 2021, 0, 20000000, 10000000, 5000000);
    /* The frame's room is back: it can be allocated again, or lowered by an adjustment. */
    OK(adjust("j1", "f1", -80000000, "Neddragning", ""));
    expect_frame("f1", 20000000, 20000000, 0, 10000000);
    FAILS_AS(UID_DECIDER, approve("r1-again", "r1"), BUDGET_EINVALID_STATE);
}

Test(ledger, a_reduction_needs_an_approved_allocation)
{
    small_state();
    OK(propose("a2", "f1", "KFN", 1000, "Bibliotek"));
    FAILS(reduce("r1", "a2", 100, "x"), BUDGET_EINVALID_STATE);
    FAILS(reduce("r1", "nope", 100, "x"), BUDGET_ENOT_FOUND);
    FAILS(reduce("r1", "f1", 100, "x"), BUDGET_ENOT_FOUND);
    FAILS(reduce("r1", "a1", 0, "x"), BUDGET_EBAD_REQUEST);
    FAILS(reduce("r1", "a1", 100, ""), BUDGET_EBAD_REQUEST);
    /* The whole of an untouched allocation may go. */
    OK(reduce("r1", "a1", 40000000, "Utgår"));
    OK_AS(UID_DECIDER, approve("r1-ok", "r1"));
    expect_allocation("a1", LEDGER_APPROVED, 0, 0, 0, 0);
    expect_frame("f1", 100000000, 0, 1000, 0);
}

Test(ledger, rejected_or_withdrawn_reductions_release_their_reservation)
{
    corrections_state();
    OK(reduce("r1", "a1", 25000000, "Allt"));
    FAILS_AS(UID_SON, withdraw("r1-w", "r1", ""), BUDGET_EFORBIDDEN); /* only its requester */
    OK(withdraw("r1-w", "r1", "Fel"));
    cr_assert_eq(last_ev.target_kind, LEDGER_KIND_REDUCTION);
    expect_reductions("a1", 0, 0);
    FAILS_AS(UID_DECIDER, approve("r1-ok", "r1"), BUDGET_EINVALID_STATE);
    OK(reduce("r2", "a1", 25000000, "Allt"));
    OK_AS(UID_DECIDER, reject("r2-no", "r2"));
    expect_reductions("a1", 0, 0);
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 10000000, 5000000, 25000000);
    expect_frame("f1", 100000000, 40000000, 0, 10000000);
}

Test(ledger, a_reversal_takes_at_most_what_is_left_of_the_avrop)
{
    corrections_state();
    FAILS(reverse("x1", "v2", 100, "Pending"), BUDGET_EINVALID_STATE);
    FAILS(reverse("x1", "a1", 100, "Not an avrop"), BUDGET_ENOT_FOUND);
    OK(reverse("x1", "v1", 6000000, "Fel konto"));
    cr_assert_str_eq(last_ev.allocation, "a1");
    cr_assert_str_eq(last_ev.frame, "f1");
    cr_assert_str_eq(last_ev.unit, "SON");
    FAILS(reverse("x2", "v1", 4000001, "Resten"), BUDGET_EINSUFFICIENT_FUNDS);
    cr_assert(strstr(err.message, "at most 40 000,00 kr, not 40 000,01 kr") != NULL, "%s",
              err.message);
    OK(reverse("x2", "v1", 4000000, "Resten"));
    expect_reversals("v1", 0, 10000000);
    /* Nothing returns before a decision. */
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 10000000, 5000000, 25000000);
    FAILS(approve("x1-ok", "x1"), BUDGET_EFORBIDDEN); /* four-eyes */
    OK_AS(UID_DECIDER, approve("x1-ok", "x1"));
    cr_assert_eq(last_ev.target_kind, LEDGER_KIND_REVERSAL);
    cr_assert_eq(last_ev.amount, 6000000);
    expect_reversals("v1", 6000000, 4000000);
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 4000000, 5000000, 31000000);
    expect_frame("f1", 100000000, 40000000, 0, 4000000);
    expect_unit("SON", 2021, 0, 40000000, 4000000, 5000000);
    OK_AS(UID_DECIDER, approve("x2-ok", "x2"));
    expect_reversals("v1", 10000000, 0);
    expect_avrop("v1", LEDGER_APPROVED, 10000000);
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 0, 5000000, 35000000);
    FAILS(reverse("x3", "v1", 1, "Ingenting kvar"), BUDGET_EINSUFFICIENT_FUNDS);
}

Test(ledger, withdrawn_or_rejected_reversals_leave_the_avrop_called_off)
{
    corrections_state();
    OK(reverse("x1", "v1", 10000000, "Allt"));
    FAILS_AS(UID_DECIDER, withdraw("x1-w", "x1", ""), BUDGET_EFORBIDDEN);
    OK(withdraw("x1-w", "x1", ""));
    expect_reversals("v1", 0, 0);
    OK(reverse("x2", "v1", 10000000, "Allt"));
    OK_AS(UID_DECIDER, reject("x2-no", "x2"));
    expect_reversals("v1", 0, 0);
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 10000000, 5000000, 25000000);
    expect_frame("f1", 100000000, 40000000, 0, 10000000);
}

Test(ledger, corrections_are_checked_again_against_the_state_at_approval)
{
    corrections_state();
    OK(reduce("r1", "a1", 25000000, "Det som är kvar"));
    /* Between request and approval: the pending avrop is approved, part of v1 reversed. */
    OK_AS(UID_DECIDER, approve("v2-ok", "v2"));
    OK(reverse("x1", "v1", 2000000, "Fel"));
    OK_AS(UID_DECIDER, approve("x1-ok", "x1"));
    expect_allocation("a1", LEDGER_APPROVED, 40000000, 13000000, 0, 2000000);
    OK_AS(UID_DECIDER, approve("r1-ok", "r1"));
    expect_allocation("a1", LEDGER_APPROVED, 15000000, 13000000, 0, 2000000);
    expect_frame("f1", 100000000, 15000000, 0, 13000000);
    /* What is left after the reversal may be taken too: the allocation ends fully called off.
     */
    OK(reduce("r2", "a1", 2000000, "Resten"));
    OK_AS(UID_DECIDER, approve("r2-ok", "r2"));
    expect_allocation("a1", LEDGER_APPROVED, 13000000, 13000000, 0, 0);
    expect_reductions("a1", 27000000, 0);
}

Test(ledger, corrections_replay_to_the_same_balances)
{
    ledger_event log[64];
    size_t n = 0;
#define LOG(uid, c)                                                                                \
    do {                                                                                           \
        OK_AS(uid, c);                                                                             \
        log[n++] = last_ev;                                                                        \
    } while (0)
    LOG(UID_KS, grant("f1", "KS", 2021, 300000000, "Ram", "KS § 241"));
    LOG(UID_KS, propose("a1", "f1", "SON", 100000000, "X"));
    LOG(UID_DECIDER, approve("d1", "a1"));
    LOG(UID_SON, avrop("v1", "a1", 60000000, "n"));
    LOG(UID_DECIDER, approve("d2", "v1"));
    LOG(UID_KS, reduce("r1", "a1", 30000000, "Mindre"));
    LOG(UID_KS, reduce("r2", "a1", 1000000, "Mindre"));
    LOG(UID_SON, reverse("x1", "v1", 20000000, "Fel"));
    LOG(UID_SON, reverse("x2", "v1", 100, "Fel"));
    LOG(UID_DECIDER, approve("r1-ok", "r1"));
    LOG(UID_KS, withdraw("r2-w", "r2", ""));
    LOG(UID_DECIDER, approve("x1-ok", "x1"));
    LOG(UID_DECIDER, reject("x2-no", "x2"));
    LOG(UID_KS, intended(grant("f2", "KS", 2021, 300000000, "Ram", "KS § 241")));
#undef LOG
    ledger *r = replica();
    for (size_t i = 0; i < n; i++) {
        uint8_t bytes[EVENT_BYTES_MAX];
        int size =
            event_encode(&log[i], (const uint8_t[BUDGET_HASH_BYTES]){0}, bytes, sizeof bytes, NULL);
        cr_assert_gt(size, 0);
        ledger_event back;
        cr_assert_eq(event_decode(bytes, (size_t)size, &back), 0, "event %zu", i);
        cr_assert_eq(ledger_apply(r, &back), 0, "event %zu", i);
    }
    char *a = snapshot(l), *b = snapshot(r);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
    ledger_free(r);
    expect_allocation("a1", LEDGER_APPROVED, 70000000, 40000000, 0, 30000000);
    expect_frame("f1", 300000000, 70000000, 0, 40000000);
}

Test(ledger, four_eyes_holds_for_corrections_on_replay)
{
    corrections_state();
    OK(reduce("r1", "a1", 1000, "x"));
    OK(reverse("x1", "v1", 1000, "x"));
    for (int k = 0; k < 2; k++) {
        ledger_cmd c = approve("d", k == 0 ? "r1" : "x1");
        ledger_actor a = actor(UID_DECIDER);
        ledger_event ev;
        cr_assert_eq(ledger_check(l, &c, &a, &ev, NULL, &err), 0, "%s", err.message);
        ev.actor.uid = UID_KS; /* forged: by the requester */
        ev.seq = seq + 1;
        cr_assert_eq(ledger_apply(l, &ev), BUDGET_EINTERNAL);
    }
}

/* ---- duplicate grants ----------------------------------------------------------------------
 */

Test(ledger, a_grant_like_an_existing_frame_is_refused_unless_intended)
{
    OK(grant("f1", "KS", 2021, 300000000, "Trygghet", "KS 2021-08-24 § 241"));
    FAILS(grant("f2", "KS", 2021, 300000000, "Annan titel", "KS 2021-08-24 § 241"),
          BUDGET_ECONFLICT);
    cr_assert(strstr(err.message, "frame f1") != NULL, "%s", err.message);
    cr_assert(strstr(err.message, "3 000 000,00 kr") != NULL, "%s", err.message);
    cr_assert(strstr(err.message, "intended") != NULL, "%s", err.message);
    /* Any of unit, year, amount or decision differing makes it another grant. */
    OK(grant("f3", "SON", 2021, 300000000, "Trygghet", "KS 2021-08-24 § 241"));
    OK(grant("f4", "KS", 2022, 300000000, "Trygghet", "KS 2021-08-24 § 241"));
    OK(grant("f5", "KS", 2021, 300000001, "Trygghet", "KS 2021-08-24 § 241"));
    OK(grant("f6", "KS", 2021, 300000000, "Trygghet", "KS 2021-08-24 § 242"));
    OK(grant("f7", "KS", 2021, 300000000, "Trygghet", ""));
    FAILS(grant("f8", "KS", 2021, 300000000, "Trygghet", ""), BUDGET_ECONFLICT);
    cr_assert(strstr(err.message, "frame f7") != NULL, "%s", err.message);
    /* An adjusted frame is still compared by the amount it was granted. */
    OK(adjust("j1", "f1", 100, "Tillägg", ""));
    FAILS(grant("f2", "KS", 2021, 300000000, "Trygghet", "KS 2021-08-24 § 241"), BUDGET_ECONFLICT);
    OK(intended(grant("f2", "KS", 2021, 300000000, "Trygghet", "KS 2021-08-24 § 241")));
    expect_frame("f2", 300000000, 0, 0, 0);
    /* The intended flag is the command's, not the event's. */
    cr_assert_not(last_ev.intended);
}

Test(ledger, a_retry_of_a_grant_is_not_a_duplicate)
{
    OK(grant("f1", "KS", 2021, 300000000, "Trygghet", "KS 2021-08-24 § 241"));
    uint64_t first = seq;
    cr_assert_eq(submit(grant("f1", "KS", 2021, 300000000, "Trygghet", "KS 2021-08-24 § 241")), 1);
    cr_assert_eq(existing_seq, first);
}

Test(ledger, duplicate_grants_in_a_log_still_replay)
{
    OK(grant("f1", "KS", 2021, 300000000, "Trygghet", "KS § 241"));
    ledger_event dup = last_ev;
    PUT(dup.id, "f2");
    dup.seq = ++seq;
    cr_assert_eq(ledger_apply(l, &dup), 0); /* as a log written before the rule holds it */
    expect_frame("f2", 300000000, 0, 0, 0);
    expect_unit("KS", 2021, 600000000, 0, 0, 0);
}

/* ---- the year's end ------------------------------------------------------------------------ */

/* Every frame of these tests is made here, so that what a frame needs first (a registered
 * unit) is one edit. `last_day` is its last day for avrop (YYYYMMDD), 0 for none. */
static void frame_of(const char *id, const char *unit, int32_t year, int64_t amount,
                     int32_t last_day)
{
    ledger_cmd c = grant(id, unit, year, amount, "Ram", "");
    c.avrop_last_day = last_day;
    OK(c);
}

/* 2021: frame k21 of KS, 3 000 000; a1 to SON 1 000 000 approved, 400 000 of it called off;
 * a2 to KFN 500 000 approved, nothing called off. Unspent: 1 500 000 + 600 000 + 500 000. */
static void year_2021(void)
{
    frame_of("k21", "KS", 2021, 3000000, 0);
    OK(propose("a1", "k21", "SON", 1000000, "Trygghet"));
    OK_AS(UID_DECIDER, approve("a1-ok", "a1"));
    OK(propose("a2", "k21", "KFN", 500000, "Fritid"));
    OK_AS(UID_DECIDER, approve("a2-ok", "a2"));
    OK_AS(UID_SON, avrop("v1", "a1", 400000, ""));
    OK_AS(UID_DECIDER, approve("v1-ok", "v1"));
}

static ledger_frame_view frame(const char *id)
{
    ledger_frame_view f;
    cr_assert(ledger_frame(l, id, &f), "no frame %s", id);
    return f;
}

Test(ledger, closing_a_year_is_refused_while_its_frames_have_pending_requests_and_lists_them)
{
    year_2021();
    OK(propose("a3", "k21", "SON", 100, "Mer"));
    OK_AS(UID_SON, avrop("v2", "a1", 100, ""));
    frame_of("k22", "KS", 2022, 1000, 0);
    OK(propose("a-2022", "k22", "SON", 100, "Nästa år")); /* another year's: no matter */
    FAILS(close_year("c21", 2021), BUDGET_ECONFLICT);
    cr_assert_not_null(strstr(err.message, "2021 has 2 pending requests"), "%s", err.message);
    cr_assert_not_null(strstr(err.message, ": a3, v2"), "%s", err.message);
    cr_assert_null(strstr(err.message, "a-2022"), "%s", err.message);
    cr_assert_null(ledger_year_closed(l, 2021));
    /* Decided or withdrawn, they hold it up no more. */
    OK_AS(UID_DECIDER, reject("a3-no", "a3"));
    FAILS(close_year("c21", 2021), BUDGET_ECONFLICT);
    cr_assert_not_null(strstr(err.message, "1 pending request on its frames; decide or withdraw "
                                           "it first: v2"),
                       "%s", err.message);
    OK_AS(UID_SON, withdraw("v2-wd", "v2", ""));
    OK(close_year("c21", 2021));
    cr_assert_str_eq(ledger_year_closed(l, 2021), "c21");
}

Test(ledger, a_long_list_of_pending_requests_is_cut_with_their_count)
{
    frame_of("k21", "KS", 2021, 1000000, 0);
    char id[32];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "pending-allocation-%02d", i);
        OK(propose(id, "k21", "SON", 1, "X"));
    }
    FAILS(close_year("c21", 2021), BUDGET_ECONFLICT);
    cr_assert_not_null(strstr(err.message, "40 pending requests"), "%s", err.message);
    cr_assert_not_null(strstr(err.message, "pending-allocation-00, pending-allocation-01"), "%s",
                       err.message);
    cr_assert_not_null(strstr(err.message, " more"), "%s", err.message);
    cr_assert_lt(strlen(err.message), sizeof err.message - 1, "the message is cut: %s",
                 err.message);
}

Test(ledger, a_closed_year_is_not_closed_again)
{
    OK(close_year("c21", 2021));
    FAILS(close_year("c21-again", 2021), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "fiscal year 2021 is already closed (c21)");
}

Test(ledger, closing_reports_what_each_frame_kept_unallocated_or_not_called_off)
{
    year_2021();
    frame_of("s21", "SON", 2021, 700, 0);
    frame_of("k22", "KS", 2022, 900, 0);
    cr_assert_not(frame("k21").closed);
    OK(close_year("c21", 2021));
    cr_assert_eq(last_ev.amount, 1500000 + 600000 + 500000 + 700, "the year's unspent");
    ledger_frame_view k21 = frame("k21"), s21 = frame("s21"), k22 = frame("k22");
    cr_assert(k21.closed && s21.closed && !k22.closed);
    cr_assert_eq(k21.unspent, 2600000);
    cr_assert_eq(k21.unallocated + k21.allocated - k21.called_off, k21.unspent);
    cr_assert_eq(s21.unspent, 700);
}

Test(ledger, after_the_close_nothing_on_the_years_frames_moves)
{
    year_2021();
    frame_of("k22", "KS", 2022, 1000, 0);
    OK(close_year("c21", 2021));
    char *before = snapshot(l);

    FAILS(grant("k21b", "KS", 2021, 100, "Ram", ""), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "fiscal year 2021 is closed (c21): frame k21b cannot be granted in it");
    FAILS(adjust("j1", "k21", 100, "Tillägg", ""), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "fiscal year 2021 is closed (c21): frame k21 cannot be adjusted");
    FAILS(adjust("j2", "k21", -100, "Minskning", ""), BUDGET_EINVALID_STATE);
    FAILS(propose("a9", "k21", "SON", 100, "X"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "fiscal year 2021 is closed (c21): nothing can be allocated from frame k21");
    FAILS_AS(UID_SON, avrop("v9", "a1", 100, ""), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "fiscal year 2021 is closed (c21): allocation a1 cannot be called off");
    FAILS_AS(UID_DECIDER, approve("d9", "v1"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "fiscal year 2021 is closed (c21): avrop v1 cannot be approved");
    FAILS_AS(UID_DECIDER, reject("d9", "a2"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "fiscal year 2021 is closed (c21): allocation a2 cannot be rejected");
    FAILS(withdraw("w9", "a1", ""), BUDGET_EINVALID_STATE);

    char *after = snapshot(l);
    cr_assert_str_eq(before, after, "a refused write changed the closed year");
    free(before);
    free(after);
    /* The next year goes on. */
    OK(adjust("j3", "k22", 100, "Tillägg", ""));
    OK(propose("a22", "k22", "SON", 100, "X"));
}

/* Replay checks a close as a write is checked: a log that closes a year past a pending request
 * on its frames does not replay. */
Test(ledger, a_close_past_a_pending_request_does_not_replay)
{
    frame_of("k21", "KS", 2021, 1000, 0);
    ledger_event g = last_ev;
    OK(propose("a1", "k21", "SON", 100, "X"));
    ledger_event p = last_ev;
    /* The close, as checked where a1 was never proposed. */
    ledger *with_a1 = l;
    l = replica();
    cr_assert_eq(ledger_apply(l, &g), 0);
    ledger_event c = checked(close_year("c21", 2021), UID_KS);
    ledger_free(l);
    l = with_a1;
    /* The forged log: a1 pending, then the year closed. */
    ledger *r = replica();
    c.seq = FIXTURE_EVENTS + 3;
    cr_assert_eq(ledger_apply(r, &g), 0);
    cr_assert_eq(ledger_apply(r, &p), 0);
    cr_assert_eq(ledger_apply(r, &c), BUDGET_EINTERNAL, "a close past a pending request");
    ledger_free(r);
    /* Without a1, the same close applies. */
    r = replica();
    cr_assert_eq(ledger_apply(r, &g), 0);
    c.seq = FIXTURE_EVENTS + 2;
    cr_assert_eq(ledger_apply(r, &c), 0);
    ledger_free(r);
}

/* What a closed year kept is unspent, not money left: it does not hold a unit's close up, and
 * a closed unit gets nothing carried over into the next year. */
Test(ledger, a_unit_closes_over_a_closed_years_unspent_money_and_gets_no_carry_over)
{
    year_2021();
    frame_of("kfn21", "KFN", 2021, 1000, 0);
    FAILS(close_unit("unit-KFN-closed", "KFN"), BUDGET_EINVALID_STATE);
    cr_assert_not_null(strstr(err.message, "frame kfn21 has 1000 öre unallocated"), "%s",
                       err.message);
    OK(close_year("c21", 2021));
    OK(close_unit("unit-KFN-closed", "KFN"));
    FAILS(carry_over("kfn22", "kfn21", 1000, 0), BUDGET_ENOT_FOUND);
    cr_assert_not_null(strstr(err.message, "unit KFN is closed"), "%s", err.message);
    OK(carry_over("k22-ob", "k21", 1000, 0)); /* KS is open */
}

Test(ledger, carrying_over_takes_at_most_what_a_closed_years_frame_has_left)
{
    year_2021();
    FAILS(carry_over("k22-ob", "k21", 100, 0), BUDGET_EINVALID_STATE);
    cr_assert_not_null(strstr(err.message, "which is not closed"), "%s", err.message);
    OK(close_year("c21", 2021));
    FAILS(carry_over("k22-ob", "nothing", 100, 0), BUDGET_ENOT_FOUND);
    FAILS(carry_over("k22-ob", "a1", 100, 0), BUDGET_ENOT_FOUND);

    FAILS(carry_over("k22-ob", "k21", 2600001, 0), BUDGET_EINSUFFICIENT_FUNDS);
    cr_assert_str_eq(err.message,
                     "carrying 26 000,01 kr over from frame k21 exceeds what it has "
                     "left: 26 000,00 kr (unspent 26 000,00 kr, carried over 0,00 kr)");
    OK(carry_over("k22-ob", "k21", 2000000, 20220630));
    cr_assert_str_eq(last_ev.frame, "k21");
    cr_assert_str_eq(last_ev.id, "k22-ob");
    cr_assert_str_eq(last_ev.unit, "KS");
    cr_assert_eq(last_ev.year, 2021);

    ledger_frame_view from = frame("k21"), made = frame("k22-ob");
    cr_assert_eq(from.carried_over, 2000000);
    cr_assert_eq(from.unspent, 2600000, "what the year kept stays as it was");
    cr_assert_str_eq(made.unit, "KS");
    cr_assert_eq(made.year, 2022);
    cr_assert_eq(made.granted, 2000000);
    cr_assert_str_eq(made.carried_from, "k21");
    cr_assert_eq(made.avrop_last_day, 20220630);
    cr_assert_not(made.closed);
    ledger_unit_view u;
    size_t i = 0;
    cr_assert(ledger_next_unit(l, &i, "KS", 2022, &u));
    cr_assert_eq(u.frames, 2000000);

    FAILS(carry_over("k22-ob2", "k21", 600001, 0), BUDGET_EINSUFFICIENT_FUNDS);
    cr_assert_not_null(strstr(err.message, "has left: 6 000,00 kr (unspent 26 000,00 kr, carried "
                                           "over 20 000,00 kr)"),
                       "%s", err.message);
    OK(carry_over("k22-ob2", "k21", 600000, 0));
    FAILS(carry_over("k22-ob3", "k21", 1, 0), BUDGET_EINSUFFICIENT_FUNDS);
    /* The new frame is of an open year: money moves on it. */
    OK(propose("a22", "k22-ob", "SON", 2000000, "Trygghet 2022"));
}

Test(ledger, nothing_is_carried_into_a_closed_year)
{
    frame_of("k21", "KS", 2021, 1000, 0);
    OK(close_year("c21", 2021));
    OK(close_year("c22", 2022));
    FAILS(carry_over("k22-ob", "k21", 100, 0), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "fiscal year 2022 is closed (c22): frame k22-ob cannot be made in it");
}

/* The last ms of 2021 in Swedish time (2021-12-31T22:59:59.999Z) and the ms after it: a day
 * ends in Stockholm, not in UTC. */
#define LAST_MS_OF_2021 1640991599999u
#define FIRST_MS_OF_2022 1640991600000u

Test(ledger, an_avrop_on_its_last_day_is_taken_and_the_day_after_refused_with_the_date)
{
    frame_of("k21", "KS", 2021, 1000, 20211231);
    OK(propose("a1", "k21", "SON", 500, "X"));
    OK_AS(UID_DECIDER, approve("a1-ok", "a1"));
    entry_ms = LAST_MS_OF_2021;
    OK_AS(UID_SON, avrop("v1", "a1", 100, "i tid"));
    /* 23:30 UTC on 31 December is 00:30 on New Year's Day in Stockholm: too late. */
    entry_ms = FIRST_MS_OF_2022 + 1800000u;
    FAILS_AS(UID_SON, avrop("v2", "a1", 100, "för sent"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "the last day for avrop on allocation a1 was 2021-12-31 (of its "
                                  "frame); avrop v2 entered on 2022-01-01 is too late");
    /* The avrop requested in time is decided after the day. */
    OK_AS(UID_DECIDER, approve("v1-ok", "v1"));
    cr_assert_eq(frame("k21").called_off, 100);
    /* An allocation without a day of its own, and a frame without one: no end. */
    frame_of("k21-open", "KS", 2021, 2000, 0);
    OK(propose("a2", "k21-open", "SON", 500, "X"));
    OK_AS(UID_DECIDER, approve("a2-ok", "a2"));
    entry_ms = FIRST_MS_OF_2022 + 86400000u * 300;
    OK_AS(UID_SON, avrop("v3", "a2", 100, ""));
}

Test(ledger, an_allocations_own_last_day_holds_over_its_frames)
{
    frame_of("k21", "KS", 2021, 1000, 20211231);
    ledger_cmd p = propose("a1", "k21", "SON", 500, "X");
    p.avrop_last_day = 20211130;
    OK(p);
    OK_AS(UID_DECIDER, approve("a1-ok", "a1"));
    cr_assert_eq(frame("k21").avrop_last_day, 20211231);
    ledger_allocation_view a;
    cr_assert(ledger_allocation(l, "a1", &a));
    cr_assert_eq(a.avrop_last_day, 20211130);
    entry_ms = 1638313199999u; /* 2021-11-30T22:59:59.999Z, the day's last ms in Stockholm */
    OK_AS(UID_SON, avrop("v1", "a1", 100, ""));
    entry_ms = 1638313200000u; /* 2021-12-01 in Stockholm */
    FAILS_AS(UID_SON, avrop("v2", "a1", 100, ""), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "the last day for avrop on allocation a1 was 2021-11-30 (of its "
                                  "allocation); avrop v2 entered on 2021-12-01 is too late");
    /* A later day of its own lets it run past its frame's. */
    ledger_cmd q = propose("a2", "k21", "SON", 500, "Y");
    q.avrop_last_day = 20220115;
    OK(q);
    OK_AS(UID_DECIDER, approve("a2-ok", "a2"));
    entry_ms = FIRST_MS_OF_2022;
    OK_AS(UID_SON, avrop("v3", "a2", 100, ""));
}

Test(ledger, the_years_end_replays_to_the_same_state_at_every_point)
{
    ledger_event log[32];
    size_t n = 0;
    char *at[32];
#define LOG(uid, c)                                                                                \
    do {                                                                                           \
        OK_AS(uid, c);                                                                             \
        log[n] = last_ev;                                                                          \
        at[n++] = snapshot(l);                                                                     \
    } while (0)
    ledger_cmd g = grant("k21", "KS", 2021, 3000000, "Ram", "");
    g.avrop_last_day = 20211231;
    LOG(UID_KS, g);
    LOG(UID_KS, propose("a1", "k21", "SON", 1000000, "X"));
    LOG(UID_DECIDER, approve("a1-ok", "a1"));
    entry_ms = LAST_MS_OF_2021;
    LOG(UID_SON, avrop("v1", "a1", 400000, ""));
    entry_ms = FIRST_MS_OF_2022;
    LOG(UID_DECIDER, approve("v1-ok", "v1"));
    LOG(UID_KS, close_year("c21", 2021));
    LOG(UID_KS, carry_over("k22-ob", "k21", 2000000, 0));
    LOG(UID_KS, propose("a22", "k22-ob", "SON", 100, "Y"));
#undef LOG
    ledger *r = replica();
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(ledger_apply(r, &log[i]), 0, "event %zu", i);
        char *b = snapshot(r);
        cr_assert_str_eq(at[i], b, "as of event %zu", i + 1);
        free(b);
        free(at[i]);
    }
    ledger_free(r);
    /* The close's unspent is checked on replay; an avrop stamped after its day does not
     * replay. */
    r = replica();
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(ledger_apply(r, &log[i]), 0);
    ledger_event bad = log[5];
    bad.amount += 1;
    cr_assert_eq(ledger_apply(r, &bad), BUDGET_EINTERNAL);
    ledger_free(r);
    r = replica();
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(ledger_apply(r, &log[i]), 0);
    bad = log[3];
    bad.ts_ms = FIRST_MS_OF_2022;
    cr_assert_eq(ledger_apply(r, &bad), BUDGET_EINTERNAL);
    ledger_free(r);
}

/* A reduction or a reversal on a closed year is refused as its other writes are, and one
 * still pending holds the close up as a pending avrop does. */
Test(ledger, a_reduction_or_a_reversal_on_a_closed_year_is_refused)
{
    year_2021();
    OK(reduce("r1", "a2", 100, "Mindre"));
    OK_AS(UID_SON, reverse("x1", "v1", 100, "Fel"));
    FAILS(close_year("c21", 2021), BUDGET_ECONFLICT);
    cr_assert_not_null(strstr(err.message, "2 pending requests"), "%s", err.message);
    cr_assert_not_null(strstr(err.message, ": r1, x1"), "%s", err.message);
    OK(withdraw("r1-w", "r1", ""));
    OK_AS(UID_SON, withdraw("x1-w", "x1", ""));
    OK(close_year("c21", 2021));
    char *before = snapshot(l);
    FAILS(reduce("r2", "a2", 100, "Mindre"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message,
                     "fiscal year 2021 is closed (c21): allocation a2 cannot be reduced");
    FAILS_AS(UID_SON, reverse("x2", "v1", 100, "Fel"), BUDGET_EINVALID_STATE);
    cr_assert_str_eq(err.message, "fiscal year 2021 is closed (c21): avrop v1 cannot be reversed");
    char *after = snapshot(l);
    cr_assert_str_eq(before, after, "a refused correction changed the closed year");
    free(before);
    free(after);
}

/* In a view of what was decided by a day, a carry-over counts by its decision's date as a
 * grant does (decided later, its frame is there with nothing granted), and no year is closed. */
Test(ledger, a_decided_by_view_counts_a_carry_over_by_its_decision_and_closes_no_year)
{
    decided_len = 0;
    ok_kept(UID_KS, grant("k21", "KS", 2021, 3000, "Ram", ""));
    ok_kept(UID_KS, close_year("c21", 2021));
    ledger_cmd c = carry_over("k22", "k21", 1000, 0);
    set_decision(&c, "KS", 20220210, "13", "");
    ok_kept(UID_KS, c);
    ok_kept(UID_KS, propose("a22", "k22", "SON", 500, "X"));

    ledger *d = decided_by(20220209);
    ledger_frame_view f;
    cr_assert(ledger_frame(d, "k22", &f), "the carried frame is in the view");
    cr_assert(f.granted_later);
    cr_assert_eq(f.granted, 0);
    cr_assert_eq(f.pending, 500);
    cr_assert_str_eq(f.carried_from, "k21");
    cr_assert(ledger_frame(d, "k21", &f));
    cr_assert_not(f.closed);
    cr_assert_eq(f.carried_over, 0);
    cr_assert_null(ledger_year_closed(d, 2021));
    ledger_free(d);

    d = decided_by(20220210);
    cr_assert(ledger_frame(d, "k22", &f));
    cr_assert_not(f.granted_later);
    cr_assert_eq(f.granted, 1000);
    cr_assert(ledger_frame(d, "k21", &f));
    cr_assert_eq(f.carried_over, 1000);
    cr_assert_null(ledger_year_closed(d, 2021));
    ledger_free(d);
}

/* ---- outcome (utfall) ---------------------------------------------------------------------- */

static ledger_outcome_view outcome_of(const char *unit, int32_t year)
{
    ledger_outcome_view v;
    ledger_outcome(l, unit, year, &v);
    return v;
}

Test(ledger, outcome_is_refused_for_unknown_units_allocations_of_others_and_bad_months)
{
    OK(grant("f1", "KS", 2021, 300000000, "Ram", ""));
    OK(propose("a-son", "f1", "SON", 100000000, "Trygghet"));
    FAILS(record_outcome("o1", "NOPE", 2021, 9, "", 100, "u.csv"), BUDGET_ENOT_FOUND);
    FAILS(record_outcome("o1", "SON", 2021, 9, "a-none", 100, "u.csv"), BUDGET_ENOT_FOUND);
    FAILS(record_outcome("o1", "SON", 2021, 9, "f1", 100, "u.csv"), BUDGET_ENOT_FOUND);
    /* a-son is SON's, in 2021: not KFN's, and not of 2022 */
    FAILS(record_outcome("o1", "KFN", 2021, 9, "a-son", 100, "u.csv"), BUDGET_EINVALID_STATE);
    FAILS(record_outcome("o1", "SON", 2022, 9, "a-son", 100, "u.csv"), BUDGET_EINVALID_STATE);
    FAILS(record_outcome("o1", "SON", 2021, 0, "", 100, "u.csv"), BUDGET_EBAD_REQUEST);
    FAILS(record_outcome("o1", "SON", 2021, 13, "", 100, "u.csv"), BUDGET_EBAD_REQUEST);
    FAILS(record_outcome("o1", "SON", 2021, 9, "", BUDGET_AMOUNT_MAX + 1, "u.csv"),
          BUDGET_EBAD_REQUEST);
    FAILS(record_outcome("o1", "SON", 2021, 9, "", 100, ""), BUDGET_EBAD_REQUEST);
    OK(close_unit("c-kfn", "KFN"));
    FAILS(record_outcome("o1", "KFN", 2021, 9, "", 100, "u.csv"), BUDGET_ENOT_FOUND);
    OK(record_outcome("o1", "SON", 2021, 9, "a-son", -2500, "u.csv")); /* a credit */
    cr_assert_eq(outcome_of("SON", 2021).outcome, -2500);
}

Test(ledger, a_later_outcome_figure_replaces_the_earlier_and_an_equal_one_is_unchanged)
{
    OK(grant("f1", "KS", 2021, 300000000, "Ram", ""));
    OK(record_outcome("o1", "KS", 2021, 1, "", 1000000, "jan.csv"));
    OK(record_outcome("o2", "KS", 2021, 2, "", 2000000, "feb.csv"));
    OK(record_outcome("o3", "KS", 2021, 1, "", 1500000, "jan-rättad.csv"));
    ledger_outcome_view v = outcome_of("KS", 2021);
    cr_assert_eq(v.months[0], 1500000);
    cr_assert_eq(v.months[1], 2000000);
    cr_assert_eq(v.outcome, 3500000);
    cr_assert_eq(v.figures, 2);
    cr_assert_eq(v.last_month, 2);
    /* the same figure again, under any id or source, writes nothing */
    FAILS(record_outcome("o4", "KS", 2021, 1, "", 1500000, "jan.csv"), BUDGET_ECONFLICT);
    cr_assert(strstr(err.message, "unchanged") != NULL, "%s", err.message);
    /* no figure yet is 0: recording 0 there changes nothing either */
    FAILS(record_outcome("o4", "KS", 2021, 3, "", 0, "mar.csv"), BUDGET_ECONFLICT);
    /* back to 0 where there was a figure is a change */
    OK(record_outcome("o4", "KS", 2021, 2, "", 0, "feb.csv"));
    cr_assert_eq(outcome_of("KS", 2021).outcome, 1500000);
    cr_assert_eq(outcome_of("KS", 2021).last_month, 2, "a figure of 0 is a figure");
    /* a retry of o3 is still a retry (the id exists), not refused as unchanged */
    cr_assert_eq(submit(record_outcome("o3", "KS", 2021, 1, "", 1500000, "jan-rättad.csv")), 1);
}

Test(ledger, outcome_is_set_against_the_units_budget_with_a_straight_line_forecast)
{
    OK(grant("f1", "KS", 2021, 300000000, "Ram", ""));
    OK(propose("a-son", "f1", "SON", 100000000, "Trygghet"));
    OK_AS(UID_DECIDER, approve("d1", "a-son"));
    OK(propose("a-ks", "f1", "KS", 150000000, "Egen del"));
    OK_AS(UID_DECIDER, approve("d2", "a-ks"));
    OK_AS(UID_SON, record_outcome("s9", "SON", 2021, 9, "a-son", 20000000, "sep.csv"));
    OK_AS(UID_SON, record_outcome("s10", "SON", 2021, 10, "a-son", 25000000, "okt.csv"));
    OK_AS(UID_SON, record_outcome("s10b", "SON", 2021, 10, "", 5000000, "okt.csv"));
    ledger_outcome_view son = outcome_of("SON", 2021);
    int64_t spent = 20000000 + 25000000 + 5000000;
    cr_assert_eq(son.budget, 100000000, "SON: the allocation it received");
    cr_assert_eq(son.outcome, spent);
    cr_assert_eq(son.months[9], 30000000);
    cr_assert_eq(son.deviation, 100000000 - spent);
    cr_assert_eq(son.last_month, 10);
    cr_assert_eq(son.forecast, spent * 12 / 10);
    cr_assert(son.has_used);
    cr_assert_eq(son.used_permille, spent * 1000 / 100000000);
    /* KS: its frame less what went to SON (its own allocation counts once) */
    ledger_outcome_view ks = outcome_of("KS", 2021);
    cr_assert_eq(ks.budget, 300000000 - 100000000);
    cr_assert_eq(ks.outcome, 0);
    cr_assert_eq(ks.forecast, 0);
    /* an approved reduction of SON's allocation moves budget back to KS */
    OK(reduce("r1", "a-son", 10000000, "Mindre behov"));
    OK_AS(UID_DECIDER, approve("d3", "r1"));
    cr_assert_eq(outcome_of("SON", 2021).budget, 100000000 - 10000000);
    cr_assert_eq(outcome_of("KS", 2021).budget, 300000000 - 100000000 + 10000000);
    /* a unit without budget has no share used */
    OK(record_outcome("k1", "KFN", 2021, 3, "", 700, "mar.csv"));
    cr_assert_not(outcome_of("KFN", 2021).has_used);
    cr_assert_eq(outcome_of("KFN", 2021).deviation, -700);
}

Test(ledger, outcome_replays_to_the_same_state)
{
    ledger_event log[16];
    size_t n = 0;
#define LOG(uid, c)                                                                                \
    do {                                                                                           \
        OK_AS(uid, c);                                                                             \
        log[n++] = last_ev;                                                                        \
    } while (0)
    LOG(UID_KS, grant("f1", "KS", 2021, 300000000, "Ram", ""));
    LOG(UID_KS, propose("a-son", "f1", "SON", 100000000, "Trygghet"));
    LOG(UID_SON, record_outcome("s9", "SON", 2021, 9, "a-son", 20000000, "sep.csv"));
    LOG(UID_SON, record_outcome("s9b", "SON", 2021, 9, "", -300, "sep.csv"));
    LOG(UID_SON, record_outcome("s9c", "SON", 2021, 9, "a-son", 21000000, "sep-2.csv"));
    LOG(UID_SON, record_outcome("s12", "SON", 2022, 12, "", 5, "dec.csv"));
#undef LOG
    ledger *r = replica();
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ledger_apply(r, &log[i]), 0);
    char *a = snapshot(l), *b = snapshot(r);
    cr_assert_str_eq(a, b);
    cr_assert(strstr(a, "[9 a-son 21000000 ") != NULL, "%s", a);
    free(a);
    free(b);
    /* a figure equal to the one before never replays: it could not have been written */
    ledger_event again = log[4];
    PUT(again.id, "s9d");
    again.seq = ledger_last_seq(r) + 1;
    cr_assert_eq(ledger_apply(r, &again), BUDGET_EINTERNAL);
    ledger_free(r);
}

Test(ledger, outcome_sums_are_bounded)
{
    char id[16];
    int k = 0;
    int rc = 0;
    /* 10^15 öre a key: the month passes 10^17 after 100 allocations' worth of keys */
    OK(grant("f1", "KS", 2021, 300000000, "Ram", ""));
    for (k = 0; k < 200 && rc == 0; k++) {
        snprintf(id, sizeof id, "a%d", k);
        OK(propose(id, "f1", "KS", 1, "X"));
        char oid[16];
        snprintf(oid, sizeof oid, "o%d", k);
        rc = submit(record_outcome(oid, "KS", 2021, 5, id, BUDGET_AMOUNT_MAX, "x.csv"));
    }
    cr_assert_eq(rc, BUDGET_ETOO_LARGE, "%s", err.message);
    cr_assert_leq(outcome_of("KS", 2021).outcome, OUTCOME_TOTAL_MAX);
}
