/*
 * A log written by an earlier budgetd keeps replaying: tests/fixtures/v1-log holds the backup
 * of a ledger of 274 events of every type, written before units were registered
 * (tests/fixtures/v1-log/generate.py made it), with the balances and the chain head that
 * version answered. A real budgetd started on a copy must answer the same balances and verify
 * the same chain, and take the units the log names as defined under their codes.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit_util.h"

#define FIXTURE BUDGET_SOURCE_DIR "/tests/fixtures/v1-log"

static e2e_daemon bd;

/* budgetd on a copy of the fixture: started once on an empty folder, stopped, its data file
 * replaced by the fixture's, and started again, as an operator restores a backup. */
static void setup(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    int status = 0;
    cr_assert_eq(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status), 0);
    char from[256], to[256];
    snprintf(to, sizeof(to), "%s/lock.mdb", bd.data);
    unlink(to);
    snprintf(from, sizeof(from), "%s/data/data.mdb", FIXTURE);
    snprintf(to, sizeof(to), "%s/data.mdb", bd.data);
    cr_assert_eq(au_copy_file(from, to), 0, "copy %s", from);
    cr_assert_eq(e2e_daemon_restart(&bd), 0, "budgetd did not start on the fixture");
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
    au_cleanup();
}

TestSuite(v1_log, .init = setup, .fini = teardown, .timeout = 120);

static e2e_json *read_json_file(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", FIXTURE, name);
    size_t len = 0;
    char *text = au_read_file(path, &len);
    cr_assert_not_null(text, "read %s", path);
    e2e_json *j = e2e_json_parse(text, len);
    free(text);
    cr_assert_not_null(j, "%s is not JSON", path);
    return j;
}

/* The JSON that `budgetctl --json ARGS...` prints; asserts it succeeded. */
static e2e_json *ctl_json(int argc, const char *const *argv)
{
    const char *full[8] = {"--json"};
    cr_assert(argc < 8);
    for (int i = 0; i < argc; i++)
        full[i + 1] = argv[i];
    e2e_ctl_result r;
    e2e_assert(e2e_ctl_argv(&bd, &r, argc + 1, full) == 0, "run budgetctl");
    e2e_assert(r.exit_code == 0, "budgetctl %s: exit %d: %s", argv[0], r.exit_code, r.err);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    e2e_assert(j != NULL, "budgetctl %s printed no JSON: %s", argv[0], r.out);
    e2e_ctl_free(&r);
    return j;
}

/*
 * True when `actual` holds `expected`: the same scalars, arrays of the same length with each
 * item holding its counterpart, and objects with every key of `expected` (an answer may gain
 * keys; it never loses or changes one). `where` names the place for the message.
 */
static bool json_holds(const e2e_json *actual, const e2e_json *expected, char *where,
                       size_t where_size)
{
    if (actual == NULL || actual->type != expected->type)
        return false;
    size_t at = strlen(where);
    switch (expected->type) {
    case E2E_JSON_NULL:
        return true;
    case E2E_JSON_BOOL:
        return actual->boolean == expected->boolean;
    case E2E_JSON_NUMBER:
        return actual->integral && expected->integral && actual->integer == expected->integer;
    case E2E_JSON_STRING:
        return strcmp(actual->string, expected->string) == 0;
    case E2E_JSON_ARRAY:
        if (actual->count != expected->count)
            return false;
        for (size_t i = 0; i < expected->count; i++) {
            snprintf(where + at, where_size - at, "[%zu]", i);
            if (!json_holds(actual->items[i], expected->items[i], where, where_size))
                return false;
        }
        break;
    case E2E_JSON_OBJECT:
        for (size_t i = 0; i < expected->count; i++) {
            snprintf(where + at, where_size - at, ".%s", expected->keys[i]);
            if (!json_holds(e2e_json_get(actual, expected->keys[i]), expected->items[i], where,
                            where_size))
                return false;
        }
        break;
    }
    where[at] = '\0';
    return true;
}

Test(v1_log, a_log_written_before_the_register_replays_to_the_same_balances)
{
    e2e_json *expected = read_json_file("balances.json");
    e2e_json *actual = ctl_json(1, (const char *const[]){"balances"});
    char where[256] = "balances";
    e2e_assert(json_holds(actual, expected, where, sizeof(where)),
               "the balances differ from the fixture's at %s", where);
    /* Not a vacuous match: the fixture holds frames, allocations and units. */
    e2e_assert(e2e_json_get(expected, "frames")->count >= 10, "frames in the fixture");
    e2e_assert(e2e_json_get(expected, "allocations")->count >= 50, "allocations in the fixture");
    e2e_assert(e2e_json_get(expected, "units")->count >= 10, "units in the fixture");
    e2e_json_free(actual);
    e2e_json_free(expected);
}

Test(v1_log, a_log_written_before_the_register_verifies_to_the_same_head)
{
    e2e_json *head = read_json_file("head.json");
    int64_t events = e2e_json_int(head, "events", -1);
    e2e_json *verify = ctl_json(1, (const char *const[]){"verify"});
    const e2e_json *ok = e2e_json_get(verify, "ok");
    e2e_assert(ok != NULL && ok->type == E2E_JSON_BOOL && ok->boolean, "verify passes");
    e2e_assert_int(e2e_json_int(verify, "checked", -1), events, "events checked");
    e2e_assert_int(e2e_json_int(verify, "head", -1), e2e_json_int(head, "head", -2), "head");

    char after[32];
    snprintf(after, sizeof(after), "%" PRId64, e2e_json_int(head, "head", 0) - 1);
    e2e_json *last = ctl_json(3, (const char *const[]){"events", "--after", after});
    const e2e_json *list = e2e_json_get(last, "events");
    e2e_assert(list != NULL && list->count == 1, "the last event is read back");
    e2e_assert_str(e2e_json_str(list->items[0], "hash"), e2e_json_str(head, "hash"),
                   "the hash of the last event");
    e2e_json_free(last);
    e2e_json_free(verify);
    e2e_json_free(head);
}

/* The units the old log names are in the register under their codes, and writes may name
 * them; a write naming any other unit is checked as always. */
Test(v1_log, the_units_of_an_old_log_are_taken_as_defined_under_their_codes)
{
    e2e_json *units = ctl_json(1, (const char *const[]){"units"});
    const e2e_json *list = e2e_json_get(units, "units");
    static const char *const codes[] = {"KS", "SON", "KFN", "BUN", "TN", "MHN", "SBN"};
    e2e_assert(list != NULL && list->count == sizeof(codes) / sizeof(codes[0]),
               "the seven units of the log");
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const e2e_json *u = NULL;
        for (size_t k = 0; k < list->count; k++)
            if (strcmp(e2e_json_str(list->items[k], "unit"), codes[i]) == 0)
                u = list->items[k];
        e2e_assert(u != NULL, "%s is in the register", codes[i]);
        e2e_assert_str(e2e_json_str(u, "name"), codes[i], "named by its code");
        e2e_assert_str(e2e_json_str(u, "kind"), "", "no kind");
        e2e_assert_str(e2e_json_str(u, "state"), "open", "open");
    }
    e2e_json_free(units);

    e2e_ctl_result r;
    const char *grant[] = {"grant", "--unit",  "SON", "--year",     "2024",      "--amount",
                           "1 kr",  "--title", "Ram", "--decision", E2E_DECISION};
    e2e_assert(e2e_ctl_argv(&bd, &r, 11, grant) == 0 && r.exit_code == 0, "a grant to SON: %s",
               r.err);
    e2e_ctl_free(&r);
    grant[2] = "SONX";
    e2e_assert(e2e_ctl_argv(&bd, &r, 11, grant) == 0 && r.exit_code == 1, "a grant to SONX");
    e2e_assert(strstr(r.err, "unit SONX is not a registered unit; did you mean SON?"), "%s", r.err);
    e2e_ctl_free(&r);
    /* Registering one gives it its name, and the restarted daemon replays both kinds. */
    const char *reg[] = {"unit",   "register", "SON",      "--name", "Social- och omsorgsnämnden",
                         "--kind", "nämnd",    "--parent", "KS"};
    e2e_assert(e2e_ctl_argv(&bd, &r, 9, reg) == 0 && r.exit_code == 0, "register SON: %s", r.err);
    e2e_ctl_free(&r);
    int status = 0;
    cr_assert_eq(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status), 0);
    cr_assert_eq(e2e_daemon_restart(&bd), 0, "budgetd did not start again");
    e2e_json *balances = ctl_json(3, (const char *const[]){"balances", "--unit", "SON"});
    const e2e_json *rows = e2e_json_get(balances, "units");
    e2e_assert(rows && rows->count >= 1, "SON's rows");
    e2e_assert_str(e2e_json_str(rows->items[0], "name"), "Social- och omsorgsnämnden",
                   "the registered name after a restart");
    e2e_json_free(balances);
}

/* The id of the allocation the avrop `id` was made on, from the log `events`; NULL if none. */
static const char *allocation_of(const e2e_json *events, const char *id)
{
    for (size_t i = 0; i < events->count; i++) {
        const e2e_json *data = e2e_json_get(events->items[i], "data");
        const char *type = e2e_json_str(events->items[i], "type");
        if (type && strcmp(type, "avrop.requested") == 0 && data &&
            strcmp(e2e_json_str(data, "id"), id) == 0)
            return e2e_json_str(data, "allocation");
    }
    return NULL;
}

/* How many of `events` are decisions on an avrop of `allocation`; `in` (if not NULL) must hold
 * each of them, by id. */
static size_t decisions_on(const e2e_json *events, const e2e_json *all, const char *allocation,
                           const e2e_json *in)
{
    size_t n = 0;
    for (size_t i = 0; i < events->count; i++) {
        const e2e_json *data = e2e_json_get(events->items[i], "data");
        const char *kind = data ? e2e_json_str(data, "target_kind") : NULL;
        if (!kind || strcmp(kind, "avrop") != 0)
            continue;
        const char *on = allocation_of(all, e2e_json_str(data, "target"));
        if (!on || strcmp(on, allocation) != 0)
            continue;
        n++;
        if (in == NULL)
            continue;
        bool found = false;
        for (size_t k = 0; k < in->count && !found; k++) {
            const e2e_json *d = e2e_json_get(in->items[k], "data");
            found = d && strcmp(e2e_json_str(d, "id"), e2e_json_str(data, "id")) == 0;
        }
        e2e_assert(found, "%s (on %s) is missing from the allocation's events",
                   e2e_json_str(data, "id"), allocation);
    }
    return n;
}

/* The log predates format 2 and its index of ids: an allocation's events still hold the
 * decisions on its avrops, which name the avrop and the frame but not the allocation. */
Test(v1_log, an_allocations_events_hold_the_decisions_on_its_avrops)
{
    e2e_json *all = ctl_json(5, (const char *const[]){"events", "--after", "0", "--limit", "1000"});
    const e2e_json *events = e2e_json_get(all, "events");
    e2e_assert(events != NULL && events->count == 274, "the whole log in one page");
    size_t checked = 0;
    for (size_t i = 0; i < events->count; i++) {
        const char *type = e2e_json_str(events->items[i], "type");
        if (!type || strcmp(type, "avrop.requested") != 0)
            continue;
        const char *allocation = e2e_json_str(e2e_json_get(events->items[i], "data"), "allocation");
        e2e_json *page =
            ctl_json(5, (const char *const[]){"events", "--entity", allocation, "--limit", "1000"});
        const e2e_json *mine = e2e_json_get(page, "events");
        size_t want = decisions_on(events, events, allocation, mine);
        size_t got = decisions_on(mine, events, allocation, NULL);
        e2e_assert(got == want, "%zu decisions in the events of %s, of %zu", got, allocation, want);
        checked += want;
        e2e_json_free(page);
    }
    e2e_assert(checked >= 20, "only %zu decisions on avrops were checked", checked);
    e2e_json_free(all);
}
