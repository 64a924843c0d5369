/*
 * End to end: a real budgetd in a folder of its own for each test, driven through budgetctl,
 * through libbudgetclient and through raw frames on its socket.
 *
 * The scenario is the source document's: KS's frame for 2021 is extended by 3 mkr for
 * "utökat trygghetsarbete" (KS 2021-08-24 § 241) and divided on 2021-09-28 (§ 270): 1 mkr to
 * SON, 0,5 mkr to KFN, 1,5 mkr stays with KS; SON then calls off 400 tkr. It makes 9 events:
 *
 *   1 frame.granted        KS, 3 mkr
 *   2 allocation.proposed  SON, 1 mkr        5 decision.approved  SON allocation
 *   3 allocation.proposed  KFN, 0,5 mkr      6 decision.approved  KFN allocation
 *   4 allocation.proposed  KS, 1,5 mkr       7 decision.approved  KS allocation
 *   8 avrop.requested      SON, 400 tkr      9 decision.approved  the avrop
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e_util.h"

/* Every test has a daemon of its own, started before it and removed after it. */
static e2e_daemon bd;

static void setup(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
}

/* The last step of every test: budgetd stops on SIGTERM with exit status 0 (in a sanitizer
 * build, a report at exit makes it nonzero). */
static void stop_cleanly(void)
{
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not exit within %d ms of SIGTERM", E2E_STOP_TIMEOUT_MS);
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "budgetd stopped with status 0x%x, expected exit 0", status);
}

/* A backstop: the waits inside the tests are bounded well below it. */
#define TEST_TIMEOUT_S 90
TestSuite(e2e, .init = setup, .fini = teardown, .timeout = TEST_TIMEOUT_S);

/* ---- the scenario ---------------------------------------------------------------------------- */

#define FRAME_ID "ks-2021-trygghet"
#define FRAME_TITLE "Utökat trygghetsarbete"
#define FRAME_REFERENCE "KS 2021-08-24 § 241"
#define FRAME_ORE 300000000LL
#define DECISION_REFERENCE "KS 2021-09-28 § 270"
#define AVROP_ID "son-2021-avrop-1"
#define AVROP_DECISION_ID "son-2021-avrop-1-beslut"
#define AVROP_ORE 40000000LL
#define SCENARIO_EVENTS 9
/* The events setup writes first: the registrations of KS, SON and KFN (seqs 1..U). */
#define U 3
/* The head after the scenario. */
#define SCENARIO_HEAD (U + SCENARIO_EVENTS)

typedef struct {
    const char *id;
    const char *unit;
    const char *amount_text; /* as a clerk writes it */
    int64_t amount;          /* öre */
    const char *purpose;
    const char *decision_id;
} scenario_allocation;

static const scenario_allocation allocations[] = {
    {"ks-2021-trygghet-son", "SON", "1 mkr", 100000000,
     "Förstärka det nyupprättade områdesarbetet för trygghetsskapande åtgärder, bland annat att "
     "identifiera och omhänderta barn och ungdomar som önskar bryta sitt kriminella agerande",
     "ks-2021-09-28-270-son"},
    {"ks-2021-trygghet-kfn", "KFN", "0,5 mkr", 50000000,
     "Förstärka arbetet med att möjliggöra fritidsverksamhet som säkerställer skolgång",
     "ks-2021-09-28-270-kfn"},
    {"ks-2021-trygghet-ks", "KS", "1,5 mkr", 150000000,
     "Förstärka resurser inom kommunstyrelsens trygghetsarbete, bland annat ordningsvakter i nya "
     "och befintliga områden",
     "ks-2021-09-28-270-ks"},
};
#define ALLOCATIONS 3
#define SON 0

/* The event types of the scenario, in seq order. */
static const char *const scenario_types[SCENARIO_EVENTS] = {
    "frame.granted",       "allocation.proposed", "allocation.proposed",
    "allocation.proposed", "decision.approved",   "decision.approved",
    "decision.approved",   "avrop.requested",     "decision.approved",
};

/* ---- budgetctl ------------------------------------------------------------------------------- */

#define ARGV(...) ((const char *const[]){__VA_ARGS__})
#define ARGC(...) ((int)(sizeof(ARGV(__VA_ARGS__)) / sizeof(const char *)))

static int ctl_run_argv(e2e_ctl_result *r, int argc, const char *const *argv)
{
    e2e_assert(e2e_ctl_argv(&bd, r, argc, argv) == 0, "budgetctl %s could not be run", argv[0]);
    return r->exit_code;
}

/* Runs budgetctl; returns its exit status. */
#define ctl_run(r, ...) ctl_run_argv((r), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static void ctl_ok_argv(e2e_ctl_result *r, int argc, const char *const *argv)
{
    int code = ctl_run_argv(r, argc, argv);
    e2e_assert(code == 0, "budgetctl %s exited %d; stdout: %s; stderr: %s", argv[0], code, r->out,
               r->err);
}

/* Runs budgetctl, which must exit 0. */
#define ctl_ok(r, ...) ctl_ok_argv((r), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/* budgetctl as the second identity, which must exit 0: decisions (four-eyes). */
static void ctl_ok_other_argv(e2e_ctl_result *r, int argc, const char *const *argv)
{
    e2e_assert(e2e_ctl_argv_as(&bd, &e2e_other, r, argc, argv) == 0,
               "budgetctl %s could not be run", argv[0]);
    e2e_assert(r->exit_code == 0, "budgetctl %s as uid %u exited %d; stdout: %s; stderr: %s",
               argv[0], e2e_other.uid, r->exit_code, r->out, r->err);
}

#define ctl_ok_other(r, ...) ctl_ok_other_argv((r), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/* The hash prefixes budgetctl printed for the scenario's writes, by seq. */
static char printed_hash[SCENARIO_EVENTS + 1][17];

/* Checks a write's line, "<type> <id> seq <n> hash <16 hex digits>\n", and keeps the digits. */
static void expect_write_line(const e2e_ctl_result *r, const char *type, const char *id,
                              uint64_t seq)
{
    char prefix[200];
    int n = snprintf(prefix, sizeof(prefix), "%s %s seq %" PRIu64 " hash ", type, id, seq);
    bool ok = r->out_len == (size_t)n + 17 && strncmp(r->out, prefix, (size_t)n) == 0 &&
              r->out[n + 16] == '\n';
    for (int i = 0; ok && i < 16; i++) {
        char ch = r->out[n + i];
        ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
    }
    e2e_assert(ok, "budgetctl printed \"%s\", expected \"%s<16 hex digits>\"", r->out, prefix);
    if (seq > U && seq - U <= SCENARIO_EVENTS)
        snprintf(printed_hash[seq - U], sizeof(printed_hash[seq - U]), "%.16s", r->out + n);
}

/* The scenario through budgetctl, checking every line it prints. */
static void scenario_ctl(void)
{
    e2e_ctl_result r;
    uint64_t seq = U + 1;

    ctl_ok(&r, "grant", "--unit", "KS", "--year", "2021", "--amount", "3 mkr", "--title",
           FRAME_TITLE, "--decision", E2E_DECISION, "--reference", FRAME_REFERENCE, "--id",
           FRAME_ID);
    expect_write_line(&r, "frame.granted", FRAME_ID, seq++);
    e2e_ctl_free(&r);
    for (int i = 0; i < ALLOCATIONS; i++) {
        const scenario_allocation *a = &allocations[i];
        ctl_ok(&r, "allocate", FRAME_ID, "--unit", a->unit, "--amount", a->amount_text, "--purpose",
               a->purpose, "--id", a->id);
        expect_write_line(&r, "allocation.proposed", a->id, seq++);
        e2e_ctl_free(&r);
    }
    for (int i = 0; i < ALLOCATIONS; i++) {
        const scenario_allocation *a = &allocations[i];
        ctl_ok_other(&r, "approve", a->id, "--decision", E2E_DECISION, "--reference",
                     DECISION_REFERENCE, "--id", a->decision_id);
        expect_write_line(&r, "decision.approved", a->decision_id, seq++);
        e2e_ctl_free(&r);
    }
    ctl_ok(&r, "avrop", allocations[SON].id, "--amount", "400 tkr", "--note",
           "Områdesarbete hösten 2021", "--id", AVROP_ID);
    expect_write_line(&r, "avrop.requested", AVROP_ID, seq++);
    e2e_ctl_free(&r);
    ctl_ok_other(&r, "approve", AVROP_ID, "--decision", E2E_DECISION, "--id", AVROP_DECISION_ID);
    expect_write_line(&r, "decision.approved", AVROP_DECISION_ID, seq++);
    e2e_ctl_free(&r);
}

/* Parses budgetctl's --json output: exactly one line holding one JSON value. */
static e2e_json *json_line(const e2e_ctl_result *r)
{
    const char *newline = memchr(r->out, '\n', r->out_len);
    e2e_assert(newline != NULL && newline == r->out + r->out_len - 1,
               "--json printed %zu bytes that are not one line: %s", r->out_len, r->out);
    e2e_json *j = e2e_json_parse(r->out, r->out_len);
    e2e_assert(j != NULL, "--json printed something that is not JSON: %s", r->out);
    return j;
}

/* ---- the client library: requests ------------------------------------------------------------ */

static void grant_args(e2e_buf *b, const char *id, const char *unit, int64_t amount)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 6 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "year", 2021);
    e2e_kv_int(b, "amount", amount);
    e2e_kv_str(b, "title", FRAME_TITLE);
    e2e_kv_decision(b);
    e2e_kv_str(b, "reference", FRAME_REFERENCE);
}

static void propose_args(e2e_buf *b, const char *id, const char *frame, const char *unit,
                         int64_t amount, const char *purpose)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 5);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "frame", frame);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "amount", amount);
    e2e_kv_str(b, "purpose", purpose);
}

static void avrop_args(e2e_buf *b, const char *id, const char *allocation, int64_t amount)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 3);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "allocation", allocation);
    e2e_kv_int(b, "amount", amount);
}

static void approve_args(e2e_buf *b, const char *id, const char *target, const char *reference)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, (reference ? 3 : 2) + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "target", target);
    e2e_kv_decision(b);
    if (reference)
        e2e_kv_str(b, "reference", reference);
}

/* The scenario through the client library, with the same ids and amounts; the decisions
 * come from the second identity (four-eyes). */
static void scenario_lib(budget_client *c)
{
    e2e_buf b;
    uint64_t seq = U + 1;
    budget_client *approver = e2e_client_as(&bd, &e2e_other);

    e2e_buf_init(&b);
    grant_args(&b, FRAME_ID, "KS", FRAME_ORE);
    e2e_assert_int(e2e_write_ok(c, "frame.grant", &b), seq++, "seq of the grant");
    for (int i = 0; i < ALLOCATIONS; i++) {
        const scenario_allocation *a = &allocations[i];
        propose_args(&b, a->id, FRAME_ID, a->unit, a->amount, a->purpose);
        e2e_assert_int(e2e_write_ok(c, "allocation.propose", &b), seq++, "seq of a proposal");
    }
    for (int i = 0; i < ALLOCATIONS; i++) {
        approve_args(&b, allocations[i].decision_id, allocations[i].id, DECISION_REFERENCE);
        e2e_assert_int(e2e_write_ok(approver, "approve", &b), seq++, "seq of an approval");
    }
    avrop_args(&b, AVROP_ID, allocations[SON].id, AVROP_ORE);
    e2e_assert_int(e2e_write_ok(c, "avrop.request", &b), seq++, "seq of the avrop");
    approve_args(&b, AVROP_DECISION_ID, AVROP_ID, NULL);
    e2e_assert_int(e2e_write_ok(approver, "approve", &b), seq++, "seq of the avrop's approval");
    e2e_buf_destroy(&b);
    budget_client_close(approver);
}

/* The only element of an array under `key`, asserting there is exactly one. */
static const msgpack_object *single(const msgpack_object *map, const char *key)
{
    const msgpack_object *a = budget_map_get(map, key);
    e2e_assert(a != NULL && a->type == MSGPACK_OBJECT_ARRAY && a->via.array.size == 1,
               "\"%s\" is not an array of one element", key);
    return &a->via.array.ptr[0];
}

static uint32_t array_size(const msgpack_object *map, const char *key)
{
    const msgpack_object *a = budget_map_get(map, key);
    e2e_assert(a != NULL && a->type == MSGPACK_OBJECT_ARRAY, "\"%s\" is not an array", key);
    return a->via.array.size;
}

/* balances with one str selector (or none) and an optional as_of (0: none). */
static void balances(budget_client *c, const char *key, const char *value, uint64_t as_of,
                     budget_response *r)
{
    e2e_buf b;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, (key ? 1 : 0) + (as_of ? 1 : 0));
    if (key)
        e2e_kv_str(&b, key, value);
    if (as_of)
        e2e_kv_uint(&b, "as_of", as_of);
    e2e_call(c, "balances", &b, r);
    e2e_buf_destroy(&b);
}

static void expect_int(const msgpack_object *map, const char *key, int64_t expected,
                       const char *what)
{
    const msgpack_object *o = budget_map_get(map, key);
    e2e_assert(o != NULL && (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                             o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER),
               "%s: \"%s\" is missing or not an integer", what, key);
    int64_t got = budget_map_int(map, key, INT64_MIN);
    e2e_assert(got == expected, "%s: %s is %" PRId64 ", expected %" PRId64, what, key, got,
               expected);
}

/* The events of one page: `after`, `limit` and up to two str filters (NULL: none). */
static void events_page(budget_client *c, uint64_t after, uint32_t limit, const char *k1,
                        const char *v1, const char *k2, const char *v2, budget_response *r)
{
    e2e_buf b;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 2 + (k1 ? 1 : 0) + (k2 ? 1 : 0));
    e2e_kv_uint(&b, "after", after);
    e2e_kv_uint(&b, "limit", limit);
    if (k1)
        e2e_kv_str(&b, k1, v1);
    if (k2)
        e2e_kv_str(&b, k2, v2);
    e2e_call(c, "events", &b, r);
    e2e_buf_destroy(&b);
    e2e_assert(r->ok, "events refused: %s: %s", r->code, r->message);
}

/* An event returned under a type or unit filter has that type or data.unit. */
static void expect_filtered(const msgpack_object *ev, uint64_t seq, const char *key,
                            const char *value)
{
    if (key && strcmp(key, "type") == 0)
        e2e_assert(e2e_map_str_is(ev, "type", value), "seq %" PRIu64 " is not a %s", seq, value);
    if (key && strcmp(key, "unit") == 0)
        e2e_assert(e2e_map_str_is(budget_map_get(ev, "data"), "unit", value),
                   "seq %" PRIu64 " is not of unit %s", seq, value);
}

/* Every event matching the filters, paging by `limit`; their seqs go to `seqs` (at most
 * `max`), and each event is checked against the filters. Returns the count. */
static size_t events_all(budget_client *c, uint32_t limit, const char *k1, const char *v1,
                         const char *k2, const char *v2, uint64_t *seqs, size_t max)
{
    uint64_t after = 0;
    size_t count = 0;
    /* A page advances at least one seq, so this many pages cover any log the tests write. */
    for (int page = 0; page < 100000; page++) {
        budget_response r;
        events_page(c, after, limit, k1, v1, k2, v2, &r);
        const msgpack_object *events = budget_map_get(&r.result, "events");
        uint64_t next = e2e_map_uint(&r.result, "next");
        uint64_t head = e2e_map_uint(&r.result, "head");
        e2e_assert(events != NULL && events->type == MSGPACK_OBJECT_ARRAY,
                   "events: no \"events\" array");
        e2e_assert(events->via.array.size <= limit, "events: %u events on a page of %u",
                   events->via.array.size, limit);
        for (uint32_t i = 0; i < events->via.array.size; i++) {
            const msgpack_object *ev = &events->via.array.ptr[i];
            uint64_t seq = e2e_map_uint(ev, "seq");
            e2e_assert(seq > after && seq <= next,
                       "events: seq %" PRIu64 " outside (%" PRIu64 ", %" PRIu64 "]", seq, after,
                       next);
            e2e_assert(count == 0 || seq > seqs[count - 1], "events out of order at %" PRIu64, seq);
            expect_filtered(ev, seq, k1, v1);
            expect_filtered(ev, seq, k2, v2);
            e2e_assert(count < max, "more events than the %zu expected", max);
            seqs[count++] = seq;
        }
        budget_response_free(&r);
        if (next >= head)
            return count;
        e2e_assert(next > after, "events: next %" PRIu64 " does not advance past %" PRIu64, next,
                   after);
        after = next;
    }
    e2e_assert(false, "events: paging did not reach the head");
    return count;
}

static void expect_seqs(const uint64_t *got, size_t n, const uint64_t *want, size_t want_n,
                        const char *what)
{
    char line[400] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof(line) - 24; i++)
        used += (size_t)snprintf(line + used, sizeof(line) - used, " %" PRIu64, got[i]);
    e2e_assert(n == want_n, "%s: %zu events (seqs%s), expected %zu", what, n, line, want_n);
    for (size_t i = 0; i < n; i++)
        e2e_assert(got[i] == want[i], "%s: seqs%s, expected seq %" PRIu64 " at %zu", what, line,
                   want[i], i);
}

/* Threads joined within `timeout_ms`; when one is not, the daemon is killed (which ends every
 * blocked call of the threads) and the test fails. */
static void join_all(pthread_t *threads, int n, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (int i = 0; i < n; i++) {
        if (pthread_timedjoin_np(threads[i], NULL, &deadline) == 0)
            continue;
        e2e_report();
        e2e_daemon_kill(&bd);
        for (int j = i; j < n; j++)
            pthread_join(threads[j], NULL);
        cr_assert_fail("client threads did not finish within %d ms", timeout_ms);
    }
}

/* ---- raw connections ------------------------------------------------------------------------- */

static void pack_hello(e2e_buf *b, uint64_t id)
{
    e2e_frame_begin(b);
    msgpack_pack_map(&b->pk, 2);
    e2e_kv_uint(b, "id", id);
    e2e_kv_str(b, "op", "hello");
    e2e_frame_end(b);
}

/* Reads one response and checks its id and outcome (code NULL: ok). Returns the head a hello
 * reports, or 0. */
static uint64_t expect_response(int fd, uint64_t id, const char *code, const char *what)
{
    msgpack_unpacked u;
    e2e_envelope env;
    uint64_t head = 0;
    int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
    e2e_assert(rc == E2E_FRAME, "%s: no response (%s)", what,
               rc == E2E_CLOSED    ? "closed"
               : rc == E2E_TIMEOUT ? "timed out"
                                   : "broken");
    e2e_assert(e2e_envelope_read(&u.data, &env), "%s: the response is malformed", what);
    e2e_assert_int(env.id, id, what);
    if (code == NULL) {
        e2e_assert(env.ok, "%s: refused with %s", what, env.code);
        const msgpack_object *h = budget_map_get(env.result, "head");
        if (h != NULL && h->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            head = h->via.u64;
    } else {
        e2e_assert(!env.ok, "%s: answered ok, expected %s", what, code);
        e2e_assert_str(env.code, code, what);
    }
    msgpack_unpacked_destroy(&u);
    return head;
}

/* Reads one ok response with `id` and returns the uint under `key` of its result. */
static uint64_t expect_result_uint(int fd, uint64_t id, const char *key)
{
    msgpack_unpacked u;
    e2e_envelope env;
    int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
    e2e_assert(rc == E2E_FRAME, "response %" PRIu64 ": none (%d)", id, rc);
    e2e_assert(e2e_envelope_read(&u.data, &env), "response %" PRIu64 " is malformed", id);
    e2e_assert_int(env.id, id, "id of the response");
    e2e_assert(env.ok, "request %" PRIu64 " refused: %s", id, env.code);
    uint64_t v = e2e_map_uint(env.result, key);
    msgpack_unpacked_destroy(&u);
    return v;
}

/* Reads the ok result of a write with `id`: its seq and hash. */
static void read_write_result(int fd, uint64_t id, uint64_t *seq, uint8_t hash[32])
{
    msgpack_unpacked u;
    e2e_envelope env;
    int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
    e2e_assert(rc == E2E_FRAME, "response %" PRIu64 ": none (%d)", id, rc);
    e2e_assert(e2e_envelope_read(&u.data, &env), "response %" PRIu64 " is malformed", id);
    e2e_assert_int(env.id, id, "id of the response");
    e2e_assert(env.ok, "write %" PRIu64 " refused: %s", id, env.code);
    const msgpack_object *h = budget_map_get(env.result, "hash");
    e2e_assert(h != NULL && h->type == MSGPACK_OBJECT_BIN && h->via.bin.size == 32,
               "write %" PRIu64 ": hash is not bin32", id);
    *seq = e2e_map_uint(env.result, "seq");
    memcpy(hash, h->via.bin.ptr, 32);
    msgpack_unpacked_destroy(&u);
}

/* The head a hello with `id` reports on a raw connection. */
static uint64_t e2e_head_raw(int fd, uint64_t id)
{
    e2e_buf b;
    e2e_buf_init(&b);
    pack_hello(&b, id);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send hello");
    e2e_buf_destroy(&b);
    return expect_result_uint(fd, id, "head");
}

/* ---- the source document's scenario through budgetctl ---------------------------------------- */

static const e2e_json *json_member_array(const e2e_json *j, const char *key, size_t count)
{
    const e2e_json *a = e2e_json_get(j, key);
    e2e_assert(a != NULL && a->type == E2E_JSON_ARRAY, "JSON: \"%s\" is not an array", key);
    e2e_assert_int(a->count, count, key);
    return a;
}

Test(e2e, scenario_through_budgetctl)
{
    e2e_ctl_result r;
    scenario_ctl();

    /* The frame: every krona allocated, 400 tkr of it called off. */
    ctl_ok(&r, "balances", "--json", "--frame", FRAME_ID);
    e2e_json *j = json_line(&r);
    e2e_assert_int(e2e_json_int(j, "as_of", -1), SCENARIO_HEAD, "as_of");
    const e2e_json *frame = json_member_array(j, "frames", 1)->items[0];
    e2e_assert_str(e2e_json_str(frame, "id"), FRAME_ID, "frame id");
    e2e_assert_str(e2e_json_str(frame, "unit"), "KS", "frame unit");
    e2e_assert_int(e2e_json_int(frame, "year", -1), 2021, "frame year");
    e2e_assert_str(e2e_json_str(frame, "title"), FRAME_TITLE, "frame title");
    e2e_assert_str(e2e_json_str(frame, "reference"), FRAME_REFERENCE, "frame reference");
    e2e_assert_int(e2e_json_int(frame, "granted", -1), 300000000, "granted");
    e2e_assert_int(e2e_json_int(frame, "allocated", -1), 300000000, "allocated");
    e2e_assert_int(e2e_json_int(frame, "pending", -1), 0, "pending");
    e2e_assert_int(e2e_json_int(frame, "unallocated", -1), 0, "unallocated");
    e2e_assert_int(e2e_json_int(frame, "called_off", -1), 40000000, "called_off");
    const e2e_json *rows = json_member_array(j, "allocations", ALLOCATIONS);
    for (int i = 0; i < ALLOCATIONS; i++) {
        const e2e_json *a = rows->items[i];
        int64_t called_off = i == SON ? AVROP_ORE : 0;
        e2e_assert_str(e2e_json_str(a, "id"), allocations[i].id, "allocation id");
        e2e_assert_str(e2e_json_str(a, "frame"), FRAME_ID, "allocation frame");
        e2e_assert_str(e2e_json_str(a, "unit"), allocations[i].unit, "allocation unit");
        e2e_assert_int(e2e_json_int(a, "year", -1), 2021, "allocation year");
        e2e_assert_str(e2e_json_str(a, "purpose"), allocations[i].purpose, "purpose");
        e2e_assert_int(e2e_json_int(a, "amount", -1), allocations[i].amount, "allocation amount");
        e2e_assert_str(e2e_json_str(a, "status"), "approved", "allocation status");
        e2e_assert_int(e2e_json_int(a, "called_off", -1), called_off, "allocation called_off");
        e2e_assert_int(e2e_json_int(a, "pending", -1), 0, "allocation pending");
        e2e_assert_int(e2e_json_int(a, "available", -1), allocations[i].amount - called_off,
                       "allocation available");
    }
    e2e_json_free(j);
    e2e_ctl_free(&r);

    /* SON's own row for 2021: 1 mkr received, 400 tkr called off, 600 tkr left. */
    ctl_ok(&r, "--json", "balances", "--unit", "SON");
    j = json_line(&r);
    const e2e_json *unit = json_member_array(j, "units", 1)->items[0];
    e2e_assert_str(e2e_json_str(unit, "unit"), "SON", "unit");
    e2e_assert_int(e2e_json_int(unit, "year", -1), 2021, "unit year");
    e2e_assert_int(e2e_json_int(unit, "frames", -1), 0, "SON frames");
    e2e_assert_int(e2e_json_int(unit, "allocated", -1), 100000000, "SON allocated");
    e2e_assert_int(e2e_json_int(unit, "called_off", -1), 40000000, "SON called_off");
    e2e_assert_int(e2e_json_int(unit, "pending", -1), 0, "SON pending");
    e2e_assert_int(e2e_json_int(unit, "available", -1), 60000000, "SON available");
    rows = json_member_array(j, "allocations", 1);
    e2e_assert_str(e2e_json_str(rows->items[0], "id"), allocations[SON].id, "SON's allocation");
    e2e_json_free(j);
    e2e_ctl_free(&r);

    /* Not one öre more: the daemon refuses, budgetctl says why and exits 1. */
    e2e_assert_int(ctl_run(&r, "allocate", FRAME_ID, "--unit", "KFN", "--amount", "0,01 kr",
                           "--purpose", "Ett öre för mycket", "--id", "ks-2021-trygghet-extra"),
                   1, "exit status of an allocation over the frame");
    e2e_assert(strstr(r.err, "insufficient_funds") != NULL,
               "stderr does not name insufficient_funds: %s", r.err);
    e2e_assert_int(r.out_len, 0, "bytes on stdout of a refused write");
    e2e_ctl_free(&r);

    /* The clerk's view, in kronor. */
    ctl_ok(&r, "balances");
    e2e_assert(strstr(r.out, "3 000 000,00 kr") != NULL, "balances does not show 3 mkr: %s", r.out);
    e2e_ctl_free(&r);

    /* Every event is attributed to the caller's uid, from the socket's peer credentials: the
     * decisions to the second identity. */
    ctl_ok(&r, "--json", "events");
    j = json_line(&r);
    const e2e_json *events = json_member_array(j, "events", SCENARIO_HEAD);
    for (size_t k = U; k < events->count; k++) {
        const e2e_json *ev = events->items[k];
        size_t i = k - U; /* the scenario's own events, after the registrations */
        e2e_assert_int(e2e_json_int(ev, "seq", -1), (int64_t)k + 1, "event seq");
        e2e_assert_str(e2e_json_str(ev, "type"), scenario_types[i], "event type");
        bool decision = strcmp(scenario_types[i], "decision.approved") == 0;
        e2e_assert_int(e2e_json_int(e2e_json_get(ev, "actor"), "uid", -1),
                       decision ? (int64_t)e2e_other.uid : (int64_t)getuid(), "actor uid");
        e2e_assert(strncmp(e2e_json_str(ev, "hash"), printed_hash[i + 1], 16) == 0,
                   "event %zu: hash %s, but the write printed %s", i + 1, e2e_json_str(ev, "hash"),
                   printed_hash[i + 1]);
        e2e_assert_int(strlen(e2e_json_str(ev, "hash")), 64, "hex digits of a hash");
    }
    e2e_assert_int(e2e_json_int(j, "head", -1), SCENARIO_HEAD, "events head");
    e2e_json_free(j);
    e2e_ctl_free(&r);
    stop_cleanly();
}

/* ---- concurrent avrop on one allocation ------------------------------------------------------ */

#define RACE_THREADS 20
#define RACE_REQUESTS 60
#define RACE_ALLOCATION_ORE 1000000LL
#define RACE_AVROP_ORE 1000LL
#define RACE_WINNERS ((int)(RACE_ALLOCATION_ORE / RACE_AVROP_ORE))

typedef struct {
    const char *socket;
    int index;
    pthread_barrier_t *start;
    int failure; /* 0, or the error of connect/send/recv */
    bool ok[RACE_REQUESTS];
    uint64_t seq[RACE_REQUESTS];
    char code[RACE_REQUESTS][32];
} race_client;

static void race_avrop_id(char *out, size_t size, int thread, int request)
{
    snprintf(out, size, "race-avrop-%02d-%02d", thread, request);
}

/* Sends all its avrop requests at once on its own connection, then reads the answers. */
static void *race_main(void *arg)
{
    race_client *rc = arg;
    budget_client *c = NULL;
    e2e_buf b;

    e2e_buf_init(&b);
    rc->failure = budget_client_connect(rc->socket, &c);
    pthread_barrier_wait(rc->start);
    for (int i = 0; i < RACE_REQUESTS && rc->failure == 0; i++) {
        char id[48];
        race_avrop_id(id, sizeof(id), rc->index, i);
        avrop_args(&b, id, "race-allocation", RACE_AVROP_ORE);
        int64_t sent = budget_client_send(c, "avrop.request", b.sb.data, b.sb.size);
        if (sent < 0)
            rc->failure = (int)sent;
    }
    for (int i = 0; i < RACE_REQUESTS && rc->failure == 0; i++) {
        budget_response r;
        rc->failure = budget_client_recv(c, &r);
        if (rc->failure != 0)
            break;
        if (r.id != (uint64_t)i + 1)
            rc->failure = -EPROTO;
        rc->ok[i] = r.ok;
        if (r.ok)
            rc->seq[i] = (uint64_t)budget_map_int(&r.result, "seq", 0);
        else
            snprintf(rc->code[i], sizeof(rc->code[i]), "%s", r.code);
        budget_response_free(&r);
    }
    budget_client_close(c);
    e2e_buf_destroy(&b);
    return NULL;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

Test(e2e, concurrent_avrop_never_overdraw)
{
    static race_client clients[RACE_THREADS];
    static uint64_t seqs[RACE_THREADS * RACE_REQUESTS];
    pthread_t threads[RACE_THREADS];
    pthread_barrier_t start;
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;

    e2e_buf_init(&b);
    grant_args(&b, "race-frame", "KS", 10 * RACE_ALLOCATION_ORE);
    e2e_write_ok(c, "frame.grant", &b);
    propose_args(&b, "race-allocation", "race-frame", "SON", RACE_ALLOCATION_ORE, "Kapplöpning");
    e2e_write_ok(c, "allocation.propose", &b);
    approve_args(&b, "race-allocation-beslut", "race-allocation", DECISION_REFERENCE);
    budget_client *approver = e2e_client_as(&bd, &e2e_other);
    e2e_write_ok(approver, "approve", &b);

    pthread_barrier_init(&start, NULL, RACE_THREADS);
    for (int i = 0; i < RACE_THREADS; i++) {
        clients[i] = (race_client){.socket = bd.socket, .index = i, .start = &start};
        cr_assert_eq(pthread_create(&threads[i], NULL, race_main, &clients[i]), 0);
    }
    join_all(threads, RACE_THREADS, 30000 * e2e_slow());
    pthread_barrier_destroy(&start);

    int won = 0, lost = 0;
    for (int t = 0; t < RACE_THREADS; t++) {
        e2e_assert(clients[t].failure == 0, "client %d failed: %d", t, clients[t].failure);
        for (int i = 0; i < RACE_REQUESTS; i++) {
            if (clients[t].ok[i]) {
                seqs[won++] = clients[t].seq[i];
                continue;
            }
            e2e_assert_str(clients[t].code[i], "insufficient_funds", "code of a losing avrop");
            lost++;
        }
    }
    e2e_assert_int(won, RACE_WINNERS, "avrop granted");
    e2e_assert_int(lost, RACE_THREADS * RACE_REQUESTS - RACE_WINNERS, "avrop refused");
    qsort(seqs, (size_t)won, sizeof(seqs[0]), compare_u64);
    for (int i = 0; i < won; i++)
        e2e_assert_int(seqs[i], U + 4 + i, "the winners' seqs follow without gaps or repeats");

    balances(c, "allocation", "race-allocation", 0, &r);
    e2e_assert(r.ok, "balances refused: %s", r.code);
    const msgpack_object *a = single(&r.result, "allocations");
    expect_int(a, "pending", RACE_ALLOCATION_ORE, "allocation");
    expect_int(a, "available", 0, "allocation");
    expect_int(a, "called_off", 0, "allocation");
    e2e_assert_int(array_size(&r.result, "avrop"), RACE_WINNERS, "avrop listed");
    budget_response_free(&r);

    /* Approve every winner, pipelined in rounds on the approver's connection. */
    int approved = 0;
    for (int t = 0; t < RACE_THREADS; t++) {
        int sent = 0;
        for (int i = 0; i < RACE_REQUESTS; i++) {
            char id[48], decision[64];
            if (!clients[t].ok[i])
                continue;
            race_avrop_id(id, sizeof(id), t, i);
            snprintf(decision, sizeof(decision), "%s-beslut", id);
            approve_args(&b, decision, id, NULL);
            e2e_assert(budget_client_send(approver, "approve", b.sb.data, b.sb.size) > 0, "send");
            sent++;
        }
        for (int i = 0; i < sent; i++) {
            e2e_assert_int(budget_client_recv(approver, &r), 0, "recv of an approval");
            e2e_assert(r.ok, "approval refused: %s: %s", r.code, r.message);
            budget_response_free(&r);
            approved++;
        }
    }
    e2e_assert_int(approved, RACE_WINNERS, "approvals");
    balances(c, "allocation", "race-allocation", 0, &r);
    a = single(&r.result, "allocations");
    expect_int(a, "called_off", RACE_ALLOCATION_ORE, "allocation");
    expect_int(a, "pending", 0, "allocation");
    expect_int(a, "available", 0, "allocation");
    budget_response_free(&r);
    balances(c, "frame", "race-frame", 0, &r);
    expect_int(single(&r.result, "frames"), "called_off", RACE_ALLOCATION_ORE, "frame");
    budget_response_free(&r);

    e2e_buf_destroy(&b);
    budget_client_close(approver);
    budget_client_close(c);
    stop_cleanly();
}

/* ---- pipelining ------------------------------------------------------------------------------ */

#define PIPELINE_REQUESTS 500

typedef enum {
    PIPE_HELLO,
    PIPE_GRANT,
    PIPE_BALANCES,
    PIPE_UNKNOWN_OP,
    PIPE_MISSING_ARG,
    PIPE_NOT_FOUND,
    PIPE_UNKNOWN_ARG,
    PIPE_KINDS,
} pipe_kind;

static pipe_kind pipe_kind_of(uint64_t id)
{
    return (pipe_kind)(id * 3 % PIPE_KINDS);
}

static void pack_pipe_request(e2e_buf *b, uint64_t id)
{
    char name[32];
    pipe_kind kind = pipe_kind_of(id);
    bool has_args = kind != PIPE_HELLO && kind != PIPE_UNKNOWN_OP;

    e2e_frame_begin(b);
    msgpack_pack_map(&b->pk, has_args ? 3 : 2);
    e2e_kv_uint(b, "id", id);
    switch (kind) {
    case PIPE_HELLO:
        e2e_kv_str(b, "op", "hello");
        break;
    case PIPE_UNKNOWN_OP:
        e2e_kv_str(b, "op", "frame.steal");
        break;
    case PIPE_GRANT:
    case PIPE_MISSING_ARG:
    case PIPE_UNKNOWN_ARG:
        snprintf(name, sizeof(name), "pipe-%03" PRIu64, id);
        e2e_kv_str(b, "op", "frame.grant");
        e2e_pack_str(b, "args");
        msgpack_pack_map(&b->pk, (kind == PIPE_GRANT         ? 5
                                  : kind == PIPE_MISSING_ARG ? 4
                                                             : 6) +
                                     E2E_DECISION_PAIRS);
        e2e_kv_str(b, "id", name);
        e2e_kv_str(b, "unit", "KS");
        e2e_kv_int(b, "year", 2021);
        if (kind != PIPE_MISSING_ARG)
            e2e_kv_int(b, "amount", (int64_t)id * 100);
        e2e_kv_str(b, "title", "Pipelined");
        e2e_kv_decision(b);
        if (kind == PIPE_UNKNOWN_ARG)
            e2e_kv_str(b, "colour", "blå");
        break;
    case PIPE_BALANCES:
        e2e_kv_str(b, "op", "balances");
        e2e_pack_str(b, "args");
        msgpack_pack_map(&b->pk, 1);
        e2e_kv_str(b, "unit", "KS");
        break;
    case PIPE_NOT_FOUND:
        snprintf(name, sizeof(name), "pipe-decision-%03" PRIu64, id);
        e2e_kv_str(b, "op", "approve");
        e2e_pack_str(b, "args");
        msgpack_pack_map(&b->pk, 2 + E2E_DECISION_PAIRS);
        e2e_kv_str(b, "id", name);
        e2e_kv_str(b, "target", "no-such-allocation");
        e2e_kv_decision(b);
        break;
    default:
        break;
    }
    e2e_frame_end(b);
}

static const char *pipe_expected_code(pipe_kind kind)
{
    switch (kind) {
    case PIPE_UNKNOWN_OP:
        return "unknown_op";
    case PIPE_MISSING_ARG:
    case PIPE_UNKNOWN_ARG:
        return "bad_request";
    case PIPE_NOT_FOUND:
        return "not_found";
    default:
        return NULL;
    }
}

/* Sends the pipeline's PIPELINE_REQUESTS frames in one write on a new connection and checks
 * each answer, in order. */
static void check_pipeline(void)
{
    e2e_buf b;
    int fd = e2e_raw_connect(bd.socket);
    uint64_t grants = U, last_head = U;

    e2e_assert(fd >= 0, "connect");
    e2e_buf_init(&b);
    for (uint64_t id = 1; id <= PIPELINE_REQUESTS; id++)
        pack_pipe_request(&b, id);
    /* One write holds all 500 frames. */
    e2e_assert_int(send(fd, b.sb.data, b.sb.size, MSG_NOSIGNAL), b.sb.size, "bytes sent at once");

    for (uint64_t id = 1; id <= PIPELINE_REQUESTS; id++) {
        msgpack_unpacked u;
        e2e_envelope env;
        pipe_kind kind = pipe_kind_of(id);
        const char *code = pipe_expected_code(kind);
        int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
        e2e_assert(rc == E2E_FRAME, "response %" PRIu64 " of %d did not come (%d)", id,
                   PIPELINE_REQUESTS, rc);
        e2e_assert(e2e_envelope_read(&u.data, &env), "response %" PRIu64 " is malformed", id);
        e2e_assert_int(env.id, id, "id of the next response");
        if (code != NULL) {
            e2e_assert(!env.ok, "request %" PRIu64 " should have failed with %s", id, code);
            e2e_assert_str(env.code, code, "error code");
        } else {
            e2e_assert(env.ok, "request %" PRIu64 " (kind %d) failed: %s", id, kind, env.code);
        }
        if (kind == PIPE_GRANT)
            e2e_assert_int(e2e_map_uint(env.result, "seq"), ++grants, "seq of a grant");
        /* A read shows exactly the writes answered before it on its connection. */
        if (kind == PIPE_HELLO) {
            uint64_t head = e2e_map_uint(env.result, "head");
            e2e_assert(head >= last_head && head == grants,
                       "hello %" PRIu64 " saw head %" PRIu64 " after %" PRIu64
                       " grants and an earlier head %" PRIu64,
                       id, head, grants, last_head);
            last_head = head;
        }
        if (kind == PIPE_BALANCES)
            e2e_assert(array_size(env.result, "frames") <= grants,
                       "balances %" PRIu64 " shows more frames than were granted", id);
        msgpack_unpacked_destroy(&u);
    }
    e2e_assert(grants > 50, "the mix holds grants");
    e2e_assert_int(e2e_head_raw(fd, PIPELINE_REQUESTS + 1), grants, "head after the pipeline");
    e2e_buf_destroy(&b);
    close(fd);
}

Test(e2e, pipelined_requests_are_answered_in_order)
{
    check_pipeline();
    stop_cleanly();
}

/* `stats`' "reads_deferred" on a connection of its own. */
static uint64_t reads_deferred(void)
{
    budget_client *c = e2e_client(&bd);
    budget_response r;
    e2e_call(c, "stats", NULL, &r);
    e2e_assert(r.ok, "stats failed: %s", r.code);
    uint64_t n = e2e_map_uint(&r.result, "reads_deferred");
    budget_response_free(&r);
    budget_client_close(c);
    return n;
}

/* budgetd restarted on the test's folder with `--read-slice US`. */
static void restart_with_read_slice(const char *us)
{
    const char *const extra[] = {"--read-slice", us, NULL};
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0, "stop");
    e2e_assert(e2e_daemon_launch(&bd, &(e2e_launch){.extra = extra}) == 0, "restart");
}

/* One read a turn of budgetd's loop: every later read of that turn waits for the next. */
static void restart_with_one_read_a_turn(void)
{
    restart_with_read_slice("0");
}

/*
 * Reads past a turn's slice of the loop wait for a later turn (docs/performance.md), with the
 * frames after them: with one read a turn, the same pipeline of writes, reads and refusals is
 * still answered whole, in order, each read showing exactly the writes answered before it.
 */
Test(e2e, reads_that_wait_for_a_later_turn_are_answered_in_order)
{
    restart_with_one_read_a_turn();
    uint64_t before = reads_deferred();
    check_pipeline();
    e2e_assert(reads_deferred() > before, "no read waited for a later turn");
    stop_cleanly();
}

/* A client that closes while its reads wait for a later turn: nothing of it is kept (a
 * sanitizer build's leak report would fail stop_cleanly), and budgetd serves on. */
Test(e2e, a_connection_closed_while_its_reads_wait_leaves_nothing_behind)
{
    e2e_buf b;
    restart_with_one_read_a_turn();
    e2e_buf_init(&b);
    for (uint64_t id = 1; id <= 200; id++) {
        e2e_frame_begin(&b);
        msgpack_pack_map(&b.pk, 3);
        e2e_kv_uint(&b, "id", id);
        e2e_kv_str(&b, "op", "balances");
        e2e_pack_str(&b, "args");
        msgpack_pack_map(&b.pk, 1);
        e2e_kv_str(&b, "unit", "KS");
        e2e_frame_end(&b);
    }
    uint64_t before = reads_deferred();
    for (int round = 0; round < 20; round++) {
        int fd = e2e_raw_connect(bd.socket);
        e2e_assert(fd >= 0, "connect");
        e2e_assert_int(send(fd, b.sb.data, b.sb.size, MSG_NOSIGNAL), b.sb.size, "sent at once");
        if (round % 2 == 1) {
            /* The first answer came: the rest wait for later turns when it closes. */
            msgpack_unpacked u;
            e2e_assert(e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME, "an answer");
            msgpack_unpacked_destroy(&u);
        }
        close(fd);
    }
    e2e_buf_destroy(&b);
    e2e_assert(reads_deferred() > before, "no read waited for a later turn");
    check_pipeline();
    stop_cleanly();
}

/* The counter `key` of stats, asked on a connection of its own. */
static uint64_t stat_of(const char *key)
{
    budget_client *c = e2e_client(&bd);
    uint64_t v = e2e_stat(c, key);
    budget_client_close(c);
    return v;
}

#define REST_WRITES 240
#define REST_READS 160

/* `n` frames of `op` on one connection: grants named rest-<round>-<id>, or balances of KS. The
 * amounts differ from round to round: a grant like an earlier one would be refused as a likely
 * duplicate. */
static void pack_rest_frames(e2e_buf *b, bool writes, int round, int n)
{
    char name[48];
    for (uint64_t id = 1; id <= (uint64_t)n; id++) {
        e2e_frame_begin(b);
        msgpack_pack_map(&b->pk, 3);
        e2e_kv_uint(b, "id", id);
        if (writes) {
            snprintf(name, sizeof(name), "rest-%d-%03" PRIu64, round, id);
            e2e_kv_str(b, "op", "frame.grant");
            e2e_pack_str(b, "args");
            msgpack_pack_map(&b->pk, 5 + E2E_DECISION_PAIRS);
            e2e_kv_str(b, "id", name);
            e2e_kv_str(b, "unit", "KS");
            e2e_kv_int(b, "year", 2021);
            e2e_kv_int(b, "amount", (int64_t)round * 1000000 + (int64_t)id * 100);
            e2e_kv_str(b, "title", "Beside reads");
            e2e_kv_decision(b);
        } else {
            e2e_kv_str(b, "op", "balances");
            e2e_pack_str(b, "args");
            msgpack_pack_map(&b->pk, 1);
            e2e_kv_str(b, "unit", "KS");
        }
        e2e_frame_end(b);
    }
}

/* Reads `n` answers of `fd`, each ok and in order; a write's seq grows, and a read shows no
 * fewer frames than the one before it. */
static void recv_rest_answers(int fd, bool writes, int n)
{
    uint64_t last = 0;
    for (uint64_t id = 1; id <= (uint64_t)n; id++) {
        msgpack_unpacked u;
        e2e_envelope env;
        int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
        e2e_assert(rc == E2E_FRAME, "%s answer %" PRIu64 " of %d did not come (%d)",
                   writes ? "write" : "read", id, n, rc);
        e2e_assert(e2e_envelope_read(&u.data, &env), "answer %" PRIu64 " is malformed", id);
        e2e_assert_int(env.id, id, "id of the next answer");
        e2e_assert(env.ok, "request %" PRIu64 " failed: %s", id, env.code);
        uint64_t now = writes ? e2e_map_uint(env.result, "seq") : array_size(env.result, "frames");
        e2e_assert(writes ? now > last : now >= last,
                   "answer %" PRIu64 " went back: %" PRIu64 " after %" PRIu64, id, now, last);
        last = now;
        msgpack_unpacked_destroy(&u);
    }
}

/* One client's pipeline of writes beside another's of reads, sent at once; every answer of
 * both is checked. */
static void writes_beside_reads(int round, bool with_writes)
{
    e2e_buf w, r;
    int fdw = e2e_raw_connect(bd.socket), fdr = e2e_raw_connect(bd.socket);
    e2e_assert(fdw >= 0 && fdr >= 0, "connect");
    e2e_buf_init(&w);
    e2e_buf_init(&r);
    pack_rest_frames(&w, true, round, REST_WRITES);
    pack_rest_frames(&r, false, round, REST_READS);
    if (with_writes)
        e2e_assert_int(send(fdw, w.sb.data, w.sb.size, MSG_NOSIGNAL), w.sb.size, "writes sent");
    e2e_assert_int(send(fdr, r.sb.data, r.sb.size, MSG_NOSIGNAL), r.sb.size, "reads sent");
    recv_rest_answers(fdr, false, REST_READS);
    if (with_writes)
        recv_rest_answers(fdw, true, REST_WRITES);
    e2e_buf_destroy(&w);
    e2e_buf_destroy(&r);
    close(fdw);
    close(fdr);
}

/*
 * While writes wait, reads that keep the loop busy rest so that they take at most their share
 * of it (--read-share, docs/performance.md): with one read a turn and a share of 10 %, a client
 * reading without pause beside one writing without pause makes the reads rest, and both are
 * answered whole and in order. Reads alone never rest.
 */
Test(e2e, reads_rest_for_waiting_writes_and_both_are_answered_in_order)
{
    static const char *const extra[] = {"--read-slice", "0", "--read-share", "10", NULL};
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0, "stop");
    e2e_assert(e2e_daemon_launch(&bd, &(e2e_launch){.extra = extra}) == 0, "restart");

    uint64_t before = stat_of("read_rests");
    writes_beside_reads(0, false);
    e2e_assert_int(stat_of("read_rests"), before, "reads alone rested");
    /* A rest needs a read left waiting while a batch is in flight; a few rounds make it sure. */
    for (int round = 1; round <= 5 && stat_of("read_rests") == before; round++)
        writes_beside_reads(round, true);
    e2e_assert(stat_of("read_rests") > before, "no read rested beside the writes");
    stop_cleanly();
}

#define STATS_KEYS_MAX 64
#define STATS_KEY_BYTES 48

/* The keys the `stats` table of docs/operations.md documents: each `key` in the first cell of
 * a row of the section "## `stats`". */
static size_t documented_stats(char keys[][STATS_KEY_BYTES], size_t max)
{
    char path[512], line[2048];
    snprintf(path, sizeof(path), "%s/docs/operations.md", BUDGET_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    e2e_assert(f != NULL, "cannot open %s", path);
    bool in = false;
    size_t n = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "## ", 3) == 0) {
            in = strcmp(line, "## `stats`\n") == 0;
            continue;
        }
        char *end = line[0] == '|' ? strchr(line + 1, '|') : NULL;
        if (!in || end == NULL)
            continue;
        *end = '\0';
        for (char *p = strchr(line, '`'); p != NULL; p = strchr(p, '`')) {
            char *q = strchr(p + 1, '`');
            if (q == NULL)
                break;
            size_t len = (size_t)(q - p - 1);
            e2e_assert(len > 0 && len < STATS_KEY_BYTES && n < max, "a stats key of %zu bytes",
                       len);
            memcpy(keys[n], p + 1, len);
            keys[n++][len] = '\0';
            p = q + 1;
        }
    }
    fclose(f);
    return n;
}

/* What `stats` answers and what docs/operations.md says it answers are the same keys: a
 * counter added to one and not the other fails here. */
Test(e2e, every_stats_counter_is_documented_and_every_documented_one_is_answered)
{
    char doc[STATS_KEYS_MAX][STATS_KEY_BYTES];
    size_t documented = documented_stats(doc, STATS_KEYS_MAX);
    e2e_assert(documented >= 20, "only %zu stats keys found in docs/operations.md", documented);

    budget_client *c = e2e_client(&bd);
    budget_response r;
    e2e_call(c, "stats", NULL, &r);
    e2e_assert(r.ok && r.result.type == MSGPACK_OBJECT_MAP, "stats refused: %s", r.code);
    const msgpack_object_map *m = &r.result.via.map;
    bool seen[STATS_KEYS_MAX] = {false};
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        e2e_assert(k->type == MSGPACK_OBJECT_STR, "a stats key that is not a string");
        bool found = false;
        for (size_t d = 0; d < documented && !found; d++)
            if (strlen(doc[d]) == k->via.str.size &&
                memcmp(doc[d], k->via.str.ptr, k->via.str.size) == 0)
                found = seen[d] = true;
        e2e_assert(found, "stats answers `%.*s`, which docs/operations.md does not document",
                   (int)k->via.str.size, k->via.str.ptr);
    }
    for (size_t d = 0; d < documented; d++)
        e2e_assert(seen[d], "docs/operations.md documents `%s`, which stats does not answer",
                   doc[d]);
    budget_response_free(&r);
    budget_client_close(c);
}

/* The counters of answers and of the writes that took them, before frames are sent at once. */
typedef struct {
    int fd;
    uint64_t head; /* what a hello on fd reported before */
    uint64_t answers0, writes0;
} sent_at_once;

static sent_at_once at_once_begin(void)
{
    sent_at_once t;
    t.fd = e2e_raw_connect(bd.socket);
    e2e_assert(t.fd >= 0, "connect");
    t.head = e2e_head_raw(t.fd, 1); /* identified: frames are read now */
    t.answers0 = stat_of("answers");
    t.writes0 = stat_of("answer_writes");
    return t;
}

/* Once the `n` answers came: they took at most n / `per_write` writes. Stops the daemon. */
static void at_once_end(sent_at_once *t, uint64_t n, uint64_t per_write, const char *what)
{
    /* Each stat_of is answered in a write of its own; the first is counted in the second. */
    uint64_t answers = stat_of("answers") - t->answers0;
    uint64_t writes = stat_of("answer_writes") - t->writes0;
    e2e_assert(answers >= n, "%" PRIu64 " answers counted for %" PRIu64 " %s", answers, n, what);
    e2e_assert(writes <= n / per_write, "%" PRIu64 " answers to %s took %" PRIu64 " writes", n,
               what, writes);
    close(t->fd);
    stop_cleanly();
}

/* The writes of one group commit are answered together: one connection's answers go out in one
 * write, not one write each (docs/performance.md, the write path's CPU). */
Test(e2e, a_commits_answers_to_one_connection_are_written_together)
{
    enum { N = 64 };
    e2e_buf b;
    sent_at_once t = at_once_begin();
    e2e_assert_int(t.head, U, "head before");

    e2e_buf_init(&b);
    for (uint64_t id = 2; id < 2 + N; id++) {
        char frame_id[32];
        snprintf(frame_id, sizeof(frame_id), "together-%" PRIu64, id);
        e2e_frame_begin(&b);
        msgpack_pack_map(&b.pk, 3);
        e2e_kv_uint(&b, "id", id);
        e2e_kv_str(&b, "op", "frame.grant");
        e2e_pack_str(&b, "args");
        msgpack_pack_map(&b.pk, 5 + E2E_DECISION_PAIRS);
        e2e_kv_str(&b, "id", frame_id);
        e2e_kv_str(&b, "unit", "KS");
        e2e_kv_int(&b, "year", 2021);
        e2e_kv_int(&b, "amount", (int64_t)id * 100);
        e2e_kv_str(&b, "title", "Together");
        e2e_kv_decision(&b);
        e2e_frame_end(&b);
    }
    /* All at once: read in one turn of the loop, checked into one group commit. */
    e2e_assert_int(send(t.fd, b.sb.data, b.sb.size, MSG_NOSIGNAL), b.sb.size, "bytes sent at once");
    for (uint64_t id = 2; id < 2 + N; id++)
        expect_response(t.fd, id, NULL, "a grant of the pipeline");
    e2e_buf_destroy(&b);
    at_once_end(&t, N, 4, "grants of a few group commits");
}

/* Reads sent together are answered together: the answers that one pass over a connection's
 * frames makes go out in one write, not one write each. More than the connection's answer
 * slots hold are all answered, in order (docs/performance.md, "Reads, 8 × 4"). A pass also ends
 * when the turn's read slice is spent, which on a slow machine (valgrind) is every few reads:
 * the slice is made a second here, so that only the slots and the frames read end a pass. */
Test(e2e, reads_sent_together_are_answered_in_few_writes_and_in_order)
{
    enum { N = 3 * BUDGET_CONN_INFLIGHT_MAX + 5 };
    e2e_buf b;
    restart_with_read_slice("1000000");
    sent_at_once t = at_once_begin();

    e2e_buf_init(&b);
    for (uint64_t id = 2; id < 2 + N; id++)
        pack_hello(&b, id);
    e2e_assert_int(send(t.fd, b.sb.data, b.sb.size, MSG_NOSIGNAL), b.sb.size, "bytes sent at once");
    for (uint64_t id = 2; id < 2 + N; id++)
        e2e_assert_int(expect_response(t.fd, id, NULL, "a hello of the pipeline"), t.head,
                       "the head a hello of the pipeline reports");
    e2e_buf_destroy(&b);
    at_once_end(&t, N, 16, "reads sent at once");
}

/*
 * A read pipelined after a write on the same connection sees that write: the responses come
 * in request order, so a client that was told "ok, seq 1" and then, on the next response,
 * "head 0" would be looking at a ledger older than what it was already told. budgetd holds
 * such a read until the connection's earlier writes are committed (docs/protocol.md).
 */
Test(e2e, pipelined_read_sees_the_write_answered_before_it)
{
    e2e_buf b;
    int fd = e2e_raw_connect(bd.socket);

    e2e_assert(fd >= 0, "connect");
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 1);
    e2e_kv_str(&b, "op", "frame.grant");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 5 + E2E_DECISION_PAIRS);
    e2e_kv_str(&b, "id", "pipe-read-frame");
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "amount", 100);
    e2e_kv_str(&b, "title", "Läs det du skrev");
    e2e_kv_decision(&b);
    e2e_frame_end(&b);
    pack_hello(&b, 2);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 3);
    e2e_kv_str(&b, "op", "balances");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_str(&b, "frame", "pipe-read-frame");
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");

    e2e_assert_int(expect_result_uint(fd, 1, "seq"), U + 1, "seq of the grant");
    e2e_assert_int(expect_result_uint(fd, 2, "head"), U + 1, "head seen by the hello after it");
    expect_response(fd, 3, NULL, "balances of the frame granted just before");
    e2e_buf_destroy(&b);
    close(fd);
    stop_cleanly();
}

/* ---- idempotent retries and expect_head ------------------------------------------------------ */

static void grant_with_head(e2e_buf *b, const char *id, int64_t amount, uint64_t expect_head)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 7 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "unit", "KFN");
    e2e_kv_int(b, "year", 2022);
    e2e_kv_int(b, "amount", amount);
    e2e_kv_str(b, "title", "Fritidsverksamhet");
    e2e_kv_decision(b);
    e2e_kv_str(b, "reference", "");
    e2e_kv_uint(b, "expect_head", expect_head);
}

Test(e2e, retries_are_idempotent_and_expect_head_guards)
{
    budget_client *c = e2e_client(&bd);
    e2e_write_result first, again;
    e2e_buf b;

    e2e_buf_init(&b);
    grant_args(&b, "idem-frame", "KS", 123456);
    e2e_write(c, "frame.grant", &b, &first);
    e2e_assert(first.ok, "first grant refused: %s", first.code);
    e2e_assert_int(first.seq, U + 1, "seq of the first write");

    /* The same id and content: the first result, nothing written. */
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert(again.ok, "retry refused: %s: %s", again.code, again.message);
    e2e_assert_int(again.seq, first.seq, "seq of a retry");
    e2e_assert(memcmp(again.hash, first.hash, 32) == 0, "a retry's hash differs");
    e2e_assert_int(e2e_head(c), U + 1, "head after a retry");

    /* The same id, other content. */
    grant_args(&b, "idem-frame", "KS", 123457);
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert(!again.ok, "the same id with another amount was accepted");
    e2e_assert_str(again.code, "conflict", "code of a reused id");
    /* Ids share one namespace: a decision cannot take a frame's id. */
    approve_args(&b, "idem-frame", "idem-frame", NULL);
    e2e_write(c, "approve", &b, &again);
    e2e_assert_str(again.code, "conflict", "code of an approval reusing a frame's id");
    e2e_assert_int(e2e_head(c), U + 1, "head after conflicts");

    /* expect_head: written only when the log's last seq is the one given. */
    grant_with_head(&b, "idem-head-ok", 1000, U + 1);
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert(again.ok, "expect_head equal to head refused: %s", again.code);
    e2e_assert_int(again.seq, U + 2, "seq of the guarded write");
    grant_with_head(&b, "idem-head-stale", 1000, U + 1);
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert_str(again.code, "conflict", "code of a stale expect_head");
    grant_with_head(&b, "idem-head-future", 1000, U + 3);
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert_str(again.code, "conflict", "code of an expect_head past the head");
    /* A malformed write is bad_request whatever its expect_head (docs/events.md, the order). */
    grant_with_head(&b, "idem-head-zero", 0, U + 1);
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert_str(again.code, "bad_request", "code of amount 0 with a stale expect_head");
    e2e_assert_int(e2e_head(c), U + 2, "head after refused guarded writes");
    /* A retry is the same request whatever its expect_head: the first result again. */
    grant_with_head(&b, "idem-head-ok", 1000, 0);
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert(again.ok, "retry of a guarded write refused: %s: %s", again.code, again.message);
    e2e_assert_int(again.seq, U + 2, "seq of a retried guarded write");
    budget_client_close(c);

    /* Retries pipelined behind the first write, before it is durable: the same result, or
     * conflict for other content; one event in all. */
    int fd = e2e_raw_connect(bd.socket);
    e2e_assert(fd >= 0, "connect");
    e2e_buf_clear(&b);
    for (uint64_t id = 1; id <= 4; id++) {
        e2e_frame_begin(&b);
        msgpack_pack_map(&b.pk, 3);
        e2e_kv_uint(&b, "id", id);
        e2e_kv_str(&b, "op", "frame.grant");
        e2e_pack_str(&b, "args");
        msgpack_pack_map(&b.pk, 5 + E2E_DECISION_PAIRS);
        e2e_kv_str(&b, "id", "idem-pipelined");
        e2e_kv_str(&b, "unit", "SON");
        e2e_kv_int(&b, "year", 2021);
        e2e_kv_int(&b, "amount", id == 3 ? 778 : 777);
        e2e_kv_str(&b, "title", "Omtag");
        e2e_kv_decision(&b);
        e2e_frame_end(&b);
    }
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");
    uint64_t seq1, seq2, seq4;
    uint8_t hash1[32], hash2[32], hash4[32];
    read_write_result(fd, 1, &seq1, hash1);
    read_write_result(fd, 2, &seq2, hash2);
    expect_response(fd, 3, "conflict", "a pipelined retry with other content");
    read_write_result(fd, 4, &seq4, hash4);
    e2e_assert_int(seq1, U + 3, "seq of the pipelined write");
    e2e_assert_int(seq2, seq1, "seq of its pipelined retry");
    e2e_assert_int(seq4, seq1, "seq of its second pipelined retry");
    e2e_assert(memcmp(hash1, hash2, 32) == 0 && memcmp(hash1, hash4, 32) == 0,
               "pipelined retries carry another hash");
    e2e_assert_int(e2e_head_raw(fd, 5), U + 3, "head after pipelined retries");
    close(fd);

    /* After a restart the retry still finds the first write. */
    int status;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0, "stop");
    e2e_assert(e2e_daemon_restart(&bd) == 0, "restart");
    c = e2e_client(&bd);
    grant_args(&b, "idem-frame", "KS", 123456);
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert(again.ok, "retry after a restart refused: %s: %s", again.code, again.message);
    e2e_assert_int(again.seq, first.seq, "seq of a retry after a restart");
    e2e_assert(memcmp(again.hash, first.hash, 32) == 0, "hash of a retry after a restart");
    grant_args(&b, "idem-frame", "KS", 1);
    e2e_write(c, "frame.grant", &b, &again);
    e2e_assert_str(again.code, "conflict", "code of a reused id after a restart");
    e2e_assert_int(e2e_head(c), U + 3, "head after the retries");
    budget_client_close(c);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

/* expect_head is compared with the head that writes are checked against, which counts writes
 * pipelined ahead that are not yet durable: behind a grant that will be seq 1, expect_head 0
 * is stale and expect_head 1 is current, whether or not the grant has been committed yet. */
static void pack_guarded_grant(e2e_buf *b, uint64_t req, const char *id, uint64_t expect_head)
{
    e2e_frame_begin(b);
    msgpack_pack_map(&b->pk, 3);
    e2e_kv_uint(b, "id", req);
    e2e_kv_str(b, "op", "frame.grant");
    e2e_pack_str(b, "args");
    msgpack_pack_map(&b->pk, (expect_head == UINT64_MAX ? 5 : 6) + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "unit", "KFN");
    e2e_kv_int(b, "year", 2022);
    e2e_kv_int(b, "amount", 1000 + (int64_t)req); /* each its own grant, not a duplicate */
    e2e_kv_str(b, "title", "Fritidsverksamhet");
    e2e_kv_decision(b);
    if (expect_head != UINT64_MAX)
        e2e_kv_uint(b, "expect_head", expect_head);
    e2e_frame_end(b);
}

Test(e2e, expect_head_counts_the_writes_pipelined_ahead_of_it)
{
    int fd = e2e_raw_connect(bd.socket);
    e2e_assert(fd >= 0, "connect");
    e2e_buf b;
    e2e_buf_init(&b);
    pack_guarded_grant(&b, 1, "head-first", UINT64_MAX);
    pack_guarded_grant(&b, 2, "head-stale", U);
    pack_guarded_grant(&b, 3, "head-current", U + 1);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");
    uint64_t seq1, seq3;
    uint8_t hash1[32], hash3[32];
    read_write_result(fd, 1, &seq1, hash1);
    expect_response(fd, 2, "conflict", "expect_head 0 behind a pipelined write");
    read_write_result(fd, 3, &seq3, hash3);
    e2e_assert_int(seq1, U + 1, "seq of the first grant");
    e2e_assert_int(seq3, U + 2, "seq of the grant that expected the head after the first");
    e2e_assert_int(e2e_head_raw(fd, 4), U + 2, "head after the guarded writes");
    close(fd);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

/* A retried frame.adjust is compared by its delta too: the same delta answers the first seq,
 * another delta (larger, smaller, or of the other sign) is a conflict and writes nothing. */
static void adjust_args(e2e_buf *b, const char *id, const char *frame, int64_t delta)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 4 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "frame", frame);
    e2e_kv_int(b, "delta", delta);
    e2e_kv_str(b, "reason", "Tilläggsanslag");
    e2e_kv_decision(b);
}

Test(e2e, a_retried_adjustment_with_another_delta_is_a_conflict)
{
    budget_client *c = e2e_client(&bd);
    e2e_write_result first, again;
    e2e_buf b;
    e2e_buf_init(&b);
    grant_args(&b, "adj-frame", "KS", 100000);
    e2e_write_ok(c, "frame.grant", &b);
    adjust_args(&b, "adj-1", "adj-frame", 2500);
    e2e_write(c, "frame.adjust", &b, &first);
    e2e_assert(first.ok, "the adjustment was refused: %s: %s", first.code, first.message);
    e2e_write(c, "frame.adjust", &b, &again);
    e2e_assert(again.ok, "its retry was refused: %s: %s", again.code, again.message);
    e2e_assert_int(again.seq, first.seq, "seq of the retried adjustment");
    const int64_t others[] = {2501, 2499, -2500, 1};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        adjust_args(&b, "adj-1", "adj-frame", others[i]);
        e2e_write(c, "frame.adjust", &b, &again);
        e2e_assert(!again.ok, "a retry with delta %lld was accepted as seq %llu",
                   (long long)others[i], (unsigned long long)again.seq);
        e2e_assert(strcmp(again.code, "conflict") == 0, "a retry with delta %lld: %s, not conflict",
                   (long long)others[i], again.code);
    }
    e2e_assert_int(e2e_head(c), first.seq, "head after the retries");
    budget_client_close(c);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

/* ---- a restart shows the same ledger --------------------------------------------------------- */

Test(e2e, restart_replays_the_same_ledger)
{
    e2e_ctl_result before_balances, before_events, after_balances, after_events, r;
    int status;

    scenario_ctl();
    ctl_ok(&before_balances, "--json", "balances");
    ctl_ok(&before_events, "--json", "events", "--all");
    e2e_json_free(json_line(&before_balances));
    size_t lines = 0;
    for (size_t i = 0; i < before_events.out_len; i++)
        lines += before_events.out[i] == '\n';
    e2e_assert_int(lines, SCENARIO_HEAD, "lines of events --json --all");

    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not stop on SIGTERM");
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "budgetd stopped with status 0x%x, expected exit 0", status);
    struct stat st;
    e2e_assert(lstat(bd.socket, &st) != 0 && errno == ENOENT,
               "the socket file is still there after SIGTERM");

    e2e_assert(e2e_daemon_restart(&bd) == 0, "restart");
    ctl_ok(&after_balances, "--json", "balances");
    ctl_ok(&after_events, "--json", "events", "--all");
    e2e_assert(strcmp(before_balances.out, after_balances.out) == 0,
               "balances differ after a restart:\n%s\n%s", before_balances.out, after_balances.out);
    e2e_assert(strcmp(before_events.out, after_events.out) == 0,
               "events differ after a restart:\n%s\n%s", before_events.out, after_events.out);

    ctl_ok(&r, "--json", "verify");
    e2e_json *j = json_line(&r);
    const e2e_json *ok = e2e_json_get(j, "ok");
    e2e_assert(ok != NULL && ok->type == E2E_JSON_BOOL && ok->boolean, "verify: %s", r.out);
    e2e_assert_int(e2e_json_int(j, "checked", -1), SCENARIO_HEAD, "verify checked");
    e2e_json_free(j);
    e2e_ctl_free(&r);

    e2e_ctl_free(&before_balances);
    e2e_ctl_free(&before_events);
    e2e_ctl_free(&after_balances);
    e2e_ctl_free(&after_events);
    stop_cleanly();
}

/* The daemon's log holds `text`. */
static bool log_holds(const char *text)
{
    FILE *f = fopen(bd.log, "r");
    e2e_assert(f != NULL, "no log %s", bd.log);
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

/* A start after a kill brings back, from the write-ahead file, every commit since the last
 * checkpoint (the one written at start: a few commits ask for no other), and says so in its
 * log and in stats; a start after a clean stop brings back nothing and says nothing. */
Test(e2e, a_start_after_a_kill_says_what_it_brought_back)
{
    int status;
    scenario_ctl();
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not stop on SIGTERM");
    e2e_assert(e2e_daemon_restart(&bd) == 0, "restart after SIGTERM");
    e2e_assert_int(stat_of("wal_events_recovered"), 0, "events recovered after a clean stop");
    e2e_assert(!log_holds("unclean stop"), "a clean stop was logged as unclean");

    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    e2e_buf_init(&b);
    const int writes = 7;
    for (int i = 0; i < writes; i++) {
        char id[32];
        snprintf(id, sizeof(id), "recovered-%d", i);
        grant_args(&b, id, "KS", 1000 + i);
        e2e_write_ok(c, "frame.grant", &b);
    }
    e2e_buf_destroy(&b);
    budget_client_close(c);
    e2e_daemon_kill(&bd);

    e2e_assert(e2e_daemon_restart(&bd) == 0, "restart after SIGKILL");
    e2e_assert_int(stat_of("wal_events_recovered"), writes, "events recovered after a kill");
    char want[128];
    snprintf(want, sizeof(want), "unclean stop before this start: brought %d events (%d commits)",
             writes, writes);
    e2e_assert(log_holds(want), "the log does not say \"%s\"", want);
    c = e2e_client(&bd);
    e2e_assert_int(e2e_head(c), SCENARIO_HEAD + writes, "head after recovery");
    budget_client_close(c);
    stop_cleanly();
}

/* Reads field `key` ("voluntary_ctxt_switches") of the daemon's thread called `name`; -1 when
 * there is no such thread. */
static long thread_status(const char *name, const char *key)
{
    char path[320], line[256];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)bd.pid);
    DIR *tasks = opendir(path);
    e2e_assert(tasks != NULL, "cannot open %s", path);
    long value = -1;
    struct dirent *e;
    while (value < 0 && (e = readdir(tasks)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)bd.pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        bool match = fgets(line, sizeof(line), f) != NULL &&
                     strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == '\n';
        fclose(f);
        if (!match)
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)bd.pid, e->d_name);
        f = fopen(path, "r");
        while (f != NULL && fgets(line, sizeof(line), f))
            if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':')
                value = strtol(line + strlen(key) + 1, NULL, 10);
        if (f != NULL)
            fclose(f);
    }
    closedir(tasks);
    return value;
}

/* An idle daemon's syncer sleeps: it wakes for commits, not on a clock (it hands LMDB's pages
 * to the disk every few ms only while commits come). */
Test(e2e, an_idle_daemon_syncer_does_not_wake)
{
    scenario_ctl();
    struct timespec settle = {0, 200 * 1000000L}, idle = {1, 0};
    nanosleep(&settle, NULL);
    long before = thread_status("budgetd-syncer", "voluntary_ctxt_switches");
    e2e_assert(before >= 0, "budgetd has no thread called budgetd-syncer");
    nanosleep(&idle, NULL);
    long after = thread_status("budgetd-syncer", "voluntary_ctxt_switches");
    /* A syncer on a 5 ms clock would wake about 200 times in this second. */
    e2e_assert(after - before <= 5, "the idle syncer woke %ld times in a second", after - before);
    stop_cleanly();
}

/* ---- balances as of an earlier event --------------------------------------------------------- */

Test(e2e, balances_as_of_replay_history)
{
    budget_client *c = e2e_client(&bd);
    budget_response r;
    const msgpack_object *f;

    scenario_lib(c);

    /* Right after the grant: all of it unallocated. */
    balances(c, "frame", FRAME_ID, U + 1, &r);
    e2e_assert(r.ok, "balances as_of 1 refused: %s: %s", r.code, r.message);
    e2e_assert_int(e2e_map_uint(&r.result, "as_of"), U + 1, "as_of echoed");
    f = single(&r.result, "frames");
    expect_int(f, "granted", FRAME_ORE, "frame as of 1");
    expect_int(f, "allocated", 0, "frame as of 1");
    expect_int(f, "pending", 0, "frame as of 1");
    expect_int(f, "unallocated", FRAME_ORE, "frame as of 1");
    expect_int(f, "called_off", 0, "frame as of 1");
    e2e_assert_int(array_size(&r.result, "allocations"), 0, "allocations as of 1");
    budget_response_free(&r);

    /* After the three proposals: all of it reserved, none of it decided. */
    balances(c, "frame", FRAME_ID, U + 4, &r);
    f = single(&r.result, "frames");
    expect_int(f, "allocated", 0, "frame as of 4");
    expect_int(f, "pending", FRAME_ORE, "frame as of 4");
    expect_int(f, "unallocated", 0, "frame as of 4");
    e2e_assert_int(array_size(&r.result, "allocations"), ALLOCATIONS, "allocations as of 4");
    budget_response_free(&r);

    /* After the avrop was requested and before it was approved. */
    balances(c, "allocation", allocations[SON].id, U + 8, &r);
    f = single(&r.result, "allocations");
    expect_int(f, "called_off", 0, "SON allocation as of 8");
    expect_int(f, "pending", AVROP_ORE, "SON allocation as of 8");
    expect_int(f, "available", allocations[SON].amount - AVROP_ORE, "SON allocation as of 8");
    budget_response_free(&r);

    /* The whole ledger as of the grant: one frame, one unit row. */
    balances(c, NULL, NULL, U + 1, &r);
    e2e_assert_int(array_size(&r.result, "frames"), 1, "frames as of 1");
    e2e_assert_int(array_size(&r.result, "allocations"), 0, "allocations as of 1");
    f = single(&r.result, "units");
    e2e_assert(e2e_map_str_is(f, "unit", "KS"), "the unit row as of 1 is not KS's");
    expect_int(f, "frames", FRAME_ORE, "KS as of 1");
    expect_int(f, "allocated", 0, "KS as of 1");
    budget_response_free(&r);

    /* as_of the head is today's ledger; past the head there is nothing to show. */
    balances(c, "frame", FRAME_ID, SCENARIO_HEAD, &r);
    expect_int(single(&r.result, "frames"), "called_off", AVROP_ORE, "frame as of the head");
    budget_response_free(&r);
    balances(c, "frame", FRAME_ID, SCENARIO_HEAD + 1, &r);
    e2e_assert(!r.ok, "balances as_of past the head answered ok");
    e2e_assert_str(r.code, "not_found", "code of as_of past the head");
    budget_response_free(&r);
    /* A frame that did not exist yet. */
    balances(c, "allocation", allocations[SON].id, 1, &r);
    e2e_assert_str(r.code, "not_found", "code of an allocation as of before it existed");
    budget_response_free(&r);
    budget_client_close(c);
    stop_cleanly();
}

/* ---- hostile frames -------------------------------------------------------------------------- */

/* The honest connection kept open while others misbehave, and the ids it has used. */
typedef struct {
    int fd;
    uint64_t next_id;
} honest;

static void hello_on(int fd, uint64_t id, const char *what, uint64_t expected_head)
{
    e2e_buf b;
    e2e_buf_init(&b);
    pack_hello(&b, id);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "%s: send hello", what);
    e2e_buf_destroy(&b);
    e2e_assert_int(expect_response(fd, id, NULL, what), expected_head, what);
}

/* After each hostile connection: the honest one and a new one both get hello answered, and
 * nothing was written. */
static void still_serving(honest *h, const char *after, uint64_t head)
{
    char what[160];
    snprintf(what, sizeof(what), "hello on the open connection after %s", after);
    hello_on(h->fd, h->next_id++, what, head);
    int fd = e2e_raw_connect(bd.socket);
    e2e_assert(fd >= 0, "no new connection after %s", after);
    snprintf(what, sizeof(what), "hello on a new connection after %s", after);
    hello_on(fd, 1, what, head);
    close(fd);
}

/* Sends one frame body, behind its correct length prefix, on a new connection; returns the
 * connection, open, for the caller to read the answer. */
static int send_body(const void *body, size_t size)
{
    e2e_buf b;
    int fd = e2e_raw_connect(bd.socket);
    e2e_assert(fd >= 0, "connect");
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    e2e_buf_raw(&b, body, size);
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");
    e2e_buf_destroy(&b);
    return fd;
}

/* A request {"id": id, "op": op, "args": args} where args is packed by the caller after. */
static void begin_request(e2e_buf *b, uint64_t id, const char *op)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 3);
    e2e_kv_uint(b, "id", id);
    e2e_kv_str(b, "op", op);
    e2e_pack_str(b, "args");
}

/* A request packed by the caller must get `code` with `id`, then the connection serves on;
 * an answer with id 0 (no id could be read) is the last on its connection. */
static void refused_request(honest *h, const e2e_buf *body, uint64_t id, const char *code,
                            const char *what)
{
    int fd = send_body(body->sb.data, body->sb.size);
    expect_response(fd, id, code, what);
    if (id == 0)
        e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS), "%s: not closed", what);
    else
        hello_on(fd, id + 1, what, U);
    close(fd);
    still_serving(h, what, U);
}

/* A frame.grant whose amount the caller packs. */
static void begin_grant_amount(e2e_buf *b, uint64_t id)
{
    begin_request(b, id, "frame.grant");
    msgpack_pack_map(&b->pk, 5 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", "hostile-frame");
    e2e_kv_str(b, "unit", "KS");
    e2e_kv_int(b, "year", 2021);
    e2e_kv_str(b, "title", "Fientlig");
    e2e_kv_decision(b);
    e2e_pack_str(b, "amount");
}

/* xorshift64: the same garbage on every run. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

Test(e2e, hostile_frames_are_refused_and_the_daemon_serves_on)
{
    honest h = {e2e_raw_connect(bd.socket), 1};
    e2e_buf b;
    int fd;

    e2e_assert(h.fd >= 0, "connect");
    e2e_buf_init(&b);
    still_serving(&h, "nothing", U);

    /* A map that claims 2^32-1 pairs in 5 bytes: refused with id 0, since no id can be read
     * from it, and so closed; the daemon serves on. */
    static const uint8_t huge_map[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    fd = send_body(huge_map, sizeof(huge_map));
    expect_response(fd, 0, "bad_request", "a map claiming 2^32-1 pairs");
    e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS), "closed after an answer with id 0");
    close(fd);
    still_serving(&h, "a map claiming 2^32-1 pairs", U);

    /* Length prefixes that cannot be honoured: answered with id 0, then closed. */
    static const uint8_t prefixes[][4] = {
        {0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 0}, {0x00, 0x10, 0x00, 0x01}};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "prefix %02x%02x%02x%02x", prefixes[i][0], prefixes[i][1],
                 prefixes[i][2], prefixes[i][3]);
        fd = e2e_raw_connect(bd.socket);
        e2e_assert(e2e_raw_send(fd, prefixes[i], 4) == 0, "send");
        expect_response(fd, 0, "too_large", what);
        e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS),
                   "%s: the daemon did not close the connection", what);
        close(fd);
        still_serving(&h, what, U);
    }

    /* Nesting 20 deep inside args: too_large, with the id read from the envelope. */
    begin_request(&b, 7, "hello");
    msgpack_pack_map(&b.pk, 1);
    e2e_pack_str(&b, "x");
    for (int i = 0; i < 19; i++)
        msgpack_pack_array(&b.pk, 1);
    msgpack_pack_array(&b.pk, 0);
    refused_request(&h, &b, 7, "too_large", "nesting 20 deep");

    /* The top level is an array. */
    static const uint8_t array_body[] = {0x93, 0x01, 0x02, 0x03};
    fd = send_body(array_body, sizeof(array_body));
    expect_response(fd, 0, "bad_request", "a top-level array");
    e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS), "closed after an answer with id 0");
    close(fd);
    still_serving(&h, "a top-level array", U);

    /* A string of 5000 bytes. */
    static char long_text[5001];
    memset(long_text, 'a', 5000);
    begin_request(&b, 8, "frame.grant");
    msgpack_pack_map(&b.pk, 1 + E2E_DECISION_PAIRS);
    e2e_kv_str(&b, "title", long_text);
    e2e_kv_decision(&b);
    refused_request(&h, &b, 8, "too_large", "a 5000-byte string");

    /* 10 000 bytes of garbage, then end of input: the daemon answers what it can, closes. */
    static uint8_t garbage[10000];
    uint64_t state = 0x2021082424100928ull;
    for (size_t i = 0; i < sizeof(garbage); i++)
        garbage[i] = (uint8_t)next_random(&state);
    fd = e2e_raw_connect(bd.socket);
    /* The daemon may close before it has read it all: a failed send is no failure here. */
    (void)e2e_raw_send(fd, garbage, sizeof(garbage));
    shutdown(fd, SHUT_WR);
    e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS),
               "the daemon kept a connection of garbage open");
    close(fd);
    still_serving(&h, "10 000 bytes of garbage", U);

    /* Garbage bodies behind honest length prefixes, each on a connection of its own: each one
     * is answered with an error, and with id 0 (no id read) it is the connection's last frame. */
    size_t frames = 0;
    for (size_t used = 0; used < sizeof(garbage); frames++) {
        size_t size = 1 + next_random(&state) % 200;
        if (size > sizeof(garbage) - used)
            size = sizeof(garbage) - used;
        for (size_t i = 0; i < size; i++)
            garbage[i] = (uint8_t)next_random(&state);
        used += size;
        msgpack_unpacked u;
        e2e_envelope env;
        fd = send_body(garbage, size);
        e2e_assert(e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
                   "framed garbage %zu: no answer", frames + 1);
        e2e_assert(e2e_envelope_read(&u.data, &env) && !env.ok,
                   "framed garbage %zu: not an error response", frames + 1);
        e2e_assert(strcmp(env.code, "bad_request") == 0 || strcmp(env.code, "too_large") == 0,
                   "framed garbage %zu: code %s", frames + 1, env.code);
        msgpack_unpacked_destroy(&u);
        if (env.id == 0)
            e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS),
                       "framed garbage %zu: not closed after an answer with id 0", frames + 1);
        else
            hello_on(fd, env.id + 1, "hello after framed garbage", U);
        close(fd);
    }
    still_serving(&h, "framed garbage", U);

    /* Half a frame, then the client goes away. */
    e2e_buf_clear(&b);
    pack_hello(&b, 1);
    fd = e2e_raw_connect(bd.socket);
    static const uint8_t half_header[] = {0x00, 0x00, 0x00, 0x64};
    e2e_assert(e2e_raw_send(fd, half_header, 4) == 0, "send");
    e2e_assert(e2e_raw_send(fd, b.sb.data + 4, b.sb.size - 4) == 0, "send");
    close(fd);
    still_serving(&h, "half a frame", U);

    /* Envelopes and args that break the protocol's rules. */
    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 9);
    e2e_kv_str(&b, "op", "frame.delete");
    refused_request(&h, &b, 9, "unknown_op", "an unknown op");

    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_str(&b, "op", "hello");
    refused_request(&h, &b, 0, "bad_request", "a request without id");

    begin_request(&b, 10, "frame.grant");
    msgpack_pack_map(&b.pk, 6 + E2E_DECISION_PAIRS);
    e2e_kv_str(&b, "id", "hostile-frame");
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "amount", 100);
    e2e_kv_str(&b, "title", "Fientlig");
    e2e_kv_decision(&b);
    e2e_kv_str(&b, "colour", "blå");
    refused_request(&h, &b, 10, "bad_request", "args with an unknown key");

    begin_grant_amount(&b, 11);
    e2e_pack_str(&b, "100");
    refused_request(&h, &b, 11, "bad_request", "an amount as a string");

    begin_grant_amount(&b, 12);
    msgpack_pack_int64(&b.pk, 0);
    refused_request(&h, &b, 12, "bad_request", "an amount of 0");

    begin_grant_amount(&b, 13);
    msgpack_pack_int64(&b.pk, 1000000000000001LL);
    refused_request(&h, &b, 13, "bad_request", "an amount of 10^15 + 1");

    begin_grant_amount(&b, 14);
    msgpack_pack_int64(&b.pk, -100);
    refused_request(&h, &b, 14, "bad_request", "a negative amount");

    begin_grant_amount(&b, 15);
    msgpack_pack_double(&b.pk, 100.0);
    refused_request(&h, &b, 15, "bad_request", "an amount as a float");

    /* The largest amount is accepted: the limits above are exactly the documented ones. */
    begin_grant_amount(&b, 16);
    msgpack_pack_int64(&b.pk, 1000000000000000LL);
    fd = send_body(b.sb.data, b.sb.size);
    expect_response(fd, 16, NULL, "an amount of 10^15");
    close(fd);
    still_serving(&h, "an amount of 10^15", U + 1);

    /* Every hostile connection is gone: only the honest one and the one asking remain. */
    budget_client *c = e2e_client(&bd);
    uint64_t open = 0;
    for (int64_t deadline = e2e_now_ms() + 2000;;) {
        budget_response r;
        e2e_call(c, "stats", NULL, &r);
        e2e_assert(r.ok, "stats refused: %s", r.code);
        open = e2e_map_uint(&r.result, "connections");
        budget_response_free(&r);
        if (open == 2 || e2e_now_ms() > deadline)
            break;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    e2e_assert_int(open, 2, "connections open after the hostile ones closed");
    budget_client_close(c);
    close(h.fd);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

/* ---- events: paging and filters -------------------------------------------------------------- */

Test(e2e, events_page_and_filter)
{
    budget_client *c = e2e_client(&bd);
    uint64_t got[SCENARIO_HEAD + 1];
    size_t n;

    scenario_lib(c);

    /* Two at a time, following next: all twelve (the registrations, then the scenario), in
     * order, in six pages. */
    static const uint64_t all[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    n = events_all(c, 2, NULL, NULL, NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, all, SCENARIO_HEAD, "events, 2 per page");
    budget_response r;
    events_page(c, U, 2, NULL, NULL, NULL, NULL, &r);
    e2e_assert_int(array_size(&r.result, "events"), 2, "first page after the registrations");
    e2e_assert_int(e2e_map_uint(&r.result, "next"), U + 2, "next of that page");
    e2e_assert_int(e2e_map_uint(&r.result, "head"), SCENARIO_HEAD, "head of that page");
    const msgpack_object *ev = &budget_map_get(&r.result, "events")->via.array.ptr[0];
    static const char *const keys[] = {"seq", "ts", "actor", "type", "data", "prev", "hash"};
    e2e_assert(ev->type == MSGPACK_OBJECT_MAP && ev->via.map.size == 7, "an event has 7 keys");
    for (uint32_t i = 0; i < 7; i++) {
        const msgpack_object *k = &ev->via.map.ptr[i].key;
        e2e_assert(k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(keys[i]) &&
                       memcmp(k->via.str.ptr, keys[i], k->via.str.size) == 0,
                   "key %u of an event is not \"%s\"", i, keys[i]);
    }
    const msgpack_object *data = budget_map_get(ev, "data");
    e2e_assert(e2e_map_str_is(data, "id", FRAME_ID), "data.id of event 1");
    e2e_assert(e2e_map_str_is(data, "unit", "KS"), "data.unit of event 1");
    budget_response_free(&r);
    /* The last page is short and ends at the head. */
    events_page(c, U + 8, 2, NULL, NULL, NULL, NULL, &r);
    e2e_assert_int(array_size(&r.result, "events"), 1, "last page");
    e2e_assert_int(e2e_map_uint(&r.result, "next"), SCENARIO_HEAD, "next of the last page");
    budget_response_free(&r);

    /* The hash chain: event 1's prev is 32 zero bytes, every later prev the hash before it. */
    events_page(c, 0, 100, NULL, NULL, NULL, NULL, &r);
    const msgpack_object *page = budget_map_get(&r.result, "events");
    e2e_assert_int(page->via.array.size, SCENARIO_HEAD, "events on one page");
    static const uint8_t zeros[32];
    const uint8_t *expected_prev = zeros;
    for (uint32_t i = 0; i < page->via.array.size; i++) {
        const msgpack_object *prev = budget_map_get(&page->via.array.ptr[i], "prev");
        const msgpack_object *hash = budget_map_get(&page->via.array.ptr[i], "hash");
        e2e_assert(prev != NULL && prev->type == MSGPACK_OBJECT_BIN && prev->via.bin.size == 32 &&
                       hash != NULL && hash->type == MSGPACK_OBJECT_BIN && hash->via.bin.size == 32,
                   "event %u: prev and hash are not bin32", i + 1);
        e2e_assert(memcmp(prev->via.bin.ptr, expected_prev, 32) == 0,
                   "event %u: prev is not the hash of the event before it", i + 1);
        expected_prev = (const uint8_t *)hash->via.bin.ptr;
    }
    budget_response_free(&r);

    /* unit: events whose data.unit is SON: its allocation, that allocation's approval, its
     * avrop and the avrop's approval. */
    static const uint64_t son[] = {2, U + 2, U + 5, U + 8, U + 9}; /* its registration too */
    n = events_all(c, 100, "unit", "SON", NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, son, 5, "unit SON");
    n = events_all(c, 1, "unit", "SON", NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, son, 5, "unit SON, 1 per page");
    static const uint64_t ks[] = {1, U + 1, U + 4, U + 7};
    n = events_all(c, 100, "unit", "KS", NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, ks, 4, "unit KS");

    /* entity: events whose data names the id as id, frame, allocation or target (the
     * allocation itself: entity_names_what_the_data_names). */
    static const uint64_t avrop[] = {U + 8, U + 9};
    n = events_all(c, 100, "entity", AVROP_ID, NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, avrop, 2, "entity avrop");
    n = events_all(c, 3, "entity", FRAME_ID, NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, all + U, SCENARIO_EVENTS, "entity frame");
    n = events_all(c, 100, "entity", "no-such-id", NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, NULL, 0, "entity no-such-id");

    /* type, alone and with unit. */
    static const uint64_t approvals[] = {U + 5, U + 6, U + 7, U + 9};
    n = events_all(c, 100, "type", "decision.approved", NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, approvals, 4, "type decision.approved");
    static const uint64_t proposals[] = {U + 2, U + 3, U + 4};
    n = events_all(c, 2, "type", "allocation.proposed", NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, proposals, 3, "type allocation.proposed");
    static const uint64_t kfn_approval[] = {U + 6};
    n = events_all(c, 100, "type", "decision.approved", "unit", "KFN", got, SCENARIO_HEAD);
    expect_seqs(got, n, kfn_approval, 1, "type decision.approved, unit KFN");
    n = events_all(c, 100, "type", "avrop.requested", "unit", "KFN", got, SCENARIO_HEAD);
    expect_seqs(got, n, NULL, 0, "type avrop.requested, unit KFN");

    /* Filters and pages outside their rules. */
    e2e_buf b;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_str(&b, "type", "frame.exploded");
    e2e_call(c, "events", &b, &r);
    e2e_assert_str(r.code, "bad_request", "code of an unknown event type");
    budget_response_free(&r);
    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_uint(&b, "limit", 0);
    e2e_call(c, "events", &b, &r);
    e2e_assert_str(r.code, "bad_request", "code of limit 0");
    budget_response_free(&r);
    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_uint(&b, "limit", 1001);
    e2e_call(c, "events", &b, &r);
    e2e_assert_str(r.code, "bad_request", "code of limit 1001");
    budget_response_free(&r);
    e2e_buf_destroy(&b);
    budget_client_close(c);
    stop_cleanly();
}

/*
 * The entity filter (docs/protocol.md): the entity and everything that refers to it. For the
 * SON allocation that is its proposal (id), its approval (target), the avrop on it
 * (allocation) and the avrop's approval (target: an avrop of the allocation).
 */
Test(e2e, entity_takes_what_refers_to_it)
{
    budget_client *c = e2e_client(&bd);
    uint64_t got[SCENARIO_HEAD + 1];

    scenario_lib(c);
    static const uint64_t son_allocation[] = {U + 2, U + 5, U + 8, U + 9};
    size_t n = events_all(c, 100, "entity", allocations[SON].id, NULL, NULL, got, SCENARIO_HEAD);
    expect_seqs(got, n, son_allocation, 4, "entity SON allocation");
    budget_client_close(c);
    stop_cleanly();
}

/* ---- a client that does not read ------------------------------------------------------------- */

#define FLOOD_REQUESTS 8000

typedef struct {
    int fd;
    const e2e_buf *frames;
    atomic_int sent; /* 1 when every byte was written, -1 on an error */
} flood_writer;

static void *flood_main(void *arg)
{
    flood_writer *w = arg;
    int rc = e2e_raw_send(w->fd, w->frames->sb.data, w->frames->sb.size);
    atomic_store(&w->sent, rc == 0 ? 1 : -1);
    return NULL;
}

/* A client that pipelines far more than its answers' 4 MiB of queued output and does not read
 * is held back (the daemon stops reading it), others are served meanwhile, and once it reads,
 * every answer arrives, in order. */
Test(e2e, a_client_that_does_not_read_is_held_back_while_others_are_served)
{
    budget_client *c = e2e_client(&bd);
    flood_writer w = {e2e_raw_connect(bd.socket), NULL, 0};
    pthread_t writer;
    e2e_buf b;

    scenario_lib(c);
    e2e_assert(w.fd >= 0, "connect");
    e2e_buf_init(&b);
    /* One answer's size, from its length prefix: the flood's answers must be well over the
     * 4 MiB a connection may have queued, plus what the socket buffers hold. */
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 1);
    e2e_kv_str(&b, "op", "balances");
    e2e_frame_end(&b);
    int probe = e2e_raw_connect(bd.socket);
    uint8_t prefix[4];
    e2e_assert(e2e_raw_send(probe, b.sb.data, b.sb.size) == 0, "send");
    struct pollfd pfd = {probe, POLLIN, 0};
    e2e_assert(poll(&pfd, 1, E2E_FRAME_TIMEOUT_MS) == 1 &&
                   recv(probe, prefix, 4, MSG_PEEK | MSG_WAITALL) == 4,
               "no answer to balances");
    uint32_t answer_bytes = (uint32_t)prefix[0] << 24 | (uint32_t)prefix[1] << 16 |
                            (uint32_t)prefix[2] << 8 | prefix[3];
    expect_response(probe, 1, NULL, "balances");
    close(probe);
    e2e_assert((uint64_t)answer_bytes * FLOOD_REQUESTS > 2u * BUDGET_CONN_OUTPUT_BYTES_MAX,
               "%d answers of %u bytes do not fill the output limit", FLOOD_REQUESTS, answer_bytes);
    e2e_buf_clear(&b);
    for (uint64_t id = 1; id <= FLOOD_REQUESTS; id++) {
        e2e_frame_begin(&b);
        msgpack_pack_map(&b.pk, 2);
        e2e_kv_uint(&b, "id", id);
        e2e_kv_str(&b, "op", "balances");
        e2e_frame_end(&b);
    }
    w.frames = &b;
    cr_assert_eq(pthread_create(&writer, NULL, flood_main, &w), 0);

    /* Others are answered while the flood waits to be read. */
    for (int i = 0; i < 3; i++) {
        e2e_assert_int(e2e_head(c), SCENARIO_HEAD, "head seen by another client");
        int fd = e2e_raw_connect(bd.socket);
        e2e_assert(fd >= 0, "a new connection during the flood");
        hello_on(fd, 1, "hello on a new connection during the flood", SCENARIO_HEAD);
        close(fd);
    }

    for (uint64_t id = 1; id <= FLOOD_REQUESTS; id++) {
        msgpack_unpacked u;
        e2e_envelope env;
        int rc = e2e_raw_recv(w.fd, E2E_FRAME_TIMEOUT_MS, &u);
        e2e_assert(rc == E2E_FRAME, "flood answer %" PRIu64 ": none (%d)", id, rc);
        e2e_assert(e2e_envelope_read(&u.data, &env) && env.ok, "flood answer %" PRIu64, id);
        e2e_assert_int(env.id, id, "id of a flood answer");
        e2e_assert_int(array_size(env.result, "allocations"), ALLOCATIONS, "allocations");
        msgpack_unpacked_destroy(&u);
    }
    join_all(&writer, 1, 10000 * e2e_slow());
    e2e_assert_int(atomic_load(&w.sent), 1, "the flood was written");
    close(w.fd);
    e2e_buf_destroy(&b);
    budget_client_close(c);
    stop_cleanly();
}

/* ---- field rules ----------------------------------------------------------------------------- */

typedef struct {
    const char *what;
    const char *id;
    const char *unit;
    int64_t year;
    const char *title;
    const char *reference;
    bool ok; /* else bad_request */
} grant_case;

#define A64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define A32 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define T64 "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
#define T256 T64 T64 T64 T64
#define A16 "åäöåäöåäöåäöåäöå" /* 16 characters, 32 bytes */
#define A256 A16 A16 A16 A16 A16 A16 A16 A16

Test(e2e, field_rules_are_the_documented_ones)
{
    static const grant_case cases[] = {
        {"an id of 64 characters", A64, "KS", 2021, "t", "", true},
        {"an id of 65 characters", A64 "a", "KS", 2021, "t", "", false},
        {"an empty id", "", "KS", 2021, "t", "", false},
        {"an id with a space", "ks 2021", "KS", 2021, "t", "", false},
        {"an id with a slash", "ks/2021", "KS", 2021, "t", "", false},
        {"an id with å", "åtgärd", "KS", 2021, "t", "", false},
        {"an id of every allowed character", "Az09._:-", "KS", 2021, "t", "", true},
        {"a unit of 32 characters", "unit-32", A32, 2021, "t", "", true},
        {"a unit of 33 characters", "unit-33", A32 "A", 2021, "t", "", false},
        {"an empty unit", "unit-0", "", 2021, "t", "", false},
        {"year 1899", "year-1899", "KS", 1899, "t", "", false},
        {"year 1900", "year-1900", "KS", 1900, "t", "", true},
        {"year 9999", "year-9999", "KS", 9999, "t", "", true},
        {"year 10000", "year-10000", "KS", 10000, "t", "", false},
        {"an empty title", "title-0", "KS", 2021, "", "", false},
        {"a title of 256 bytes", "title-256", "KS", 2021, T256, "", true},
        {"a title of 257 bytes", "title-257", "KS", 2021, T256 "t", "", false},
        {"a title of 128 two-byte characters", "title-utf8-256", "KS", 2021, A256, "", true},
        {"a title of 129 two-byte characters", "title-utf8-258", "KS", 2021, A256 "å", "", false},
        {"a title that is not UTF-8", "title-latin1", "KS", 2021, "\xe5tg\xe4rd", "", false},
        {"a reference of 256 bytes", "reference-256", "KS", 2021, "t", T256, true},
        {"a reference of 257 bytes", "reference-257", "KS", 2021, "t", T256 "t", false},
    };
    /* The unit of 32 characters is registered first: a write names only registered units. */
    e2e_register_units(&bd, NULL, A32, NULL);
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    uint64_t written = U + 1;

    e2e_buf_init(&b);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const grant_case *g = &cases[i];
        e2e_write_result w;
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 6 + E2E_DECISION_PAIRS);
        e2e_kv_str(&b, "id", g->id);
        e2e_kv_str(&b, "unit", g->unit);
        e2e_kv_int(&b, "year", g->year);
        e2e_kv_int(&b, "amount", 100 + (int64_t)i); /* each its own grant, not a duplicate */
        e2e_kv_str(&b, "title", g->title);
        e2e_kv_decision(&b);
        e2e_kv_str(&b, "reference", g->reference);
        e2e_write(c, "frame.grant", &b, &w);
        if (g->ok) {
            e2e_assert(w.ok, "%s: refused with %s: %s", g->what, w.code, w.message);
            e2e_assert_int(w.seq, ++written, g->what);
        } else {
            e2e_assert(!w.ok, "%s: accepted at seq %" PRIu64, g->what, w.seq);
            e2e_assert_str(w.code, "bad_request", g->what);
        }
    }
    e2e_assert_int(e2e_head(c), written, "head after the field rules");
    e2e_buf_destroy(&b);
    budget_client_close(c);
    stop_cleanly();
}

/*
 * Envelope errors are answered with the request's id whenever it can be read
 * (docs/protocol.md: "Response, always with the request's id"; id 0 only "when its id could
 * not be read"), an envelope with a key other than id, op and args included.
 */
Test(e2e, envelope_errors_echo_a_readable_id)
{
    int fd = e2e_raw_connect(bd.socket);
    e2e_buf b;

    e2e_assert(fd >= 0, "connect");
    e2e_buf_init(&b);
    e2e_frame_begin(&b); /* op is not a str */
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 18);
    e2e_kv_int(&b, "op", 5);
    e2e_frame_end(&b);
    e2e_frame_begin(&b); /* args is not a map */
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 19);
    e2e_kv_str(&b, "op", "balances");
    e2e_pack_str(&b, "args");
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_int(&b.pk, 1);
    e2e_frame_end(&b);
    e2e_frame_begin(&b); /* hello takes no args */
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 20);
    e2e_kv_str(&b, "op", "hello");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_int(&b, "verbose", 1);
    e2e_frame_end(&b);
    e2e_frame_begin(&b); /* a key the envelope does not have */
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 22);
    e2e_kv_str(&b, "op", "hello");
    e2e_kv_str(&b, "user", "kommundirektören");
    e2e_frame_end(&b);
    e2e_frame_begin(&b); /* the id is not a uint: it cannot be read */
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_str(&b, "id", "21");
    e2e_kv_str(&b, "op", "hello");
    e2e_frame_end(&b);
    e2e_frame_begin(&b); /* never read: the frame before closed the connection */
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 23);
    e2e_kv_str(&b, "op", "hello");
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");

    expect_response(fd, 18, "bad_request", "an op that is not a str");
    expect_response(fd, 19, "bad_request", "args that are not a map");
    expect_response(fd, 20, "bad_request", "hello with args");
    expect_response(fd, 22, "bad_request", "an envelope with an unknown key");
    /* No id could be read: answered with id 0, the last frame on the connection. */
    expect_response(fd, 0, "bad_request", "an id that is not a uint");
    e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS), "closed after an answer with id 0");
    e2e_buf_destroy(&b);
    close(fd);
    stop_cleanly();
}

/* ---- who the daemon says the caller is, and what avrop rows hold ----------------------------- */

Test(e2e, hello_names_the_caller_from_peer_credentials)
{
    budget_client *c = e2e_client(&bd);
    budget_response r;
    char name[BUDGET_NAME_BYTES_MAX + 1];
    struct passwd *pw = getpwuid(getuid());

    e2e_call(c, "hello", NULL, &r);
    e2e_assert(r.ok, "hello refused: %s", r.code);
    e2e_assert_int(e2e_map_uint(&r.result, "protocol"), 1, "protocol");
    e2e_assert(e2e_map_str_is(&r.result, "server", "budgetd"), "server is not budgetd");
    e2e_assert(e2e_map_str_is(&r.result, "version", BUDGET_VERSION), "version");
    e2e_assert_int(e2e_map_uint(&r.result, "head"), U, "head of a ledger of its units only");
    const msgpack_object *actor = budget_map_get(&r.result, "actor");
    e2e_assert_int(e2e_map_uint(actor, "uid"), getuid(), "actor uid");
    budget_map_str(actor, "name", name, sizeof(name));
    e2e_assert_str(name, pw ? pw->pw_name : "", "actor name");
    budget_response_free(&r);
    budget_client_close(c);
    stop_cleanly();
}

/* An avrop row of `balances --allocation` is exactly {"id", "allocation", "unit", "amount",
 * "status", "note"} (docs/protocol.md), listed in order of creation. */
Test(e2e, avrop_rows_list_the_allocations_avrop)
{
    budget_client *c = e2e_client(&bd);
    budget_response r;
    e2e_buf b;

    scenario_lib(c);
    e2e_buf_init(&b);
    avrop_args(&b, "son-2021-avrop-2", allocations[SON].id, 1000);
    e2e_write_ok(c, "avrop.request", &b);
    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 4);
    e2e_kv_str(&b, "id", "son-2021-avrop-3");
    e2e_kv_str(&b, "allocation", allocations[SON].id);
    e2e_kv_int(&b, "amount", 2000);
    e2e_kv_str(&b, "note", "Fältassistenter, Skäggetorp");
    e2e_write_ok(c, "avrop.request", &b);
    e2e_buf_destroy(&b);

    balances(c, "allocation", allocations[SON].id, 0, &r);
    e2e_assert(r.ok, "balances refused: %s", r.code);
    const msgpack_object *rows = budget_map_get(&r.result, "avrop");
    e2e_assert_int(array_size(&r.result, "avrop"), 3, "avrop rows");
    static const char *const ids[] = {AVROP_ID, "son-2021-avrop-2", "son-2021-avrop-3"};
    static const char *const statuses[] = {"approved", "pending", "pending"};
    static const int64_t amounts[] = {AVROP_ORE, 1000, 2000};
    static const char *const keys[] = {"id",     "allocation", "unit",     "amount",
                                       "status", "note",       "reversed", "reversing"};
    static const char *const notes[] = {"", "", "Fältassistenter, Skäggetorp"};
    for (uint32_t i = 0; i < 3; i++) {
        const msgpack_object *row = &rows->via.array.ptr[i];
        e2e_assert(row->type == MSGPACK_OBJECT_MAP && row->via.map.size == 8,
                   "avrop row %u does not have the 8 documented keys", i);
        for (uint32_t k = 0; k < 8; k++) {
            const msgpack_object *key = &row->via.map.ptr[k].key;
            e2e_assert(key->type == MSGPACK_OBJECT_STR && key->via.str.size == strlen(keys[k]) &&
                           memcmp(key->via.str.ptr, keys[k], key->via.str.size) == 0,
                       "key %u of an avrop row is not \"%s\"", k, keys[k]);
        }
        e2e_assert(e2e_map_str_is(row, "id", ids[i]), "avrop row %u is not %s", i, ids[i]);
        e2e_assert(e2e_map_str_is(row, "allocation", allocations[SON].id), "avrop allocation");
        e2e_assert(e2e_map_str_is(row, "unit", "SON"), "avrop unit");
        e2e_assert(e2e_map_str_is(row, "status", statuses[i]), "avrop %s status", ids[i]);
        expect_int(row, "amount", amounts[i], "avrop amount");
        e2e_assert(e2e_map_str_is(row, "note", notes[i]), "avrop %s: note", ids[i]);
    }
    expect_int(single(&r.result, "allocations"), "pending", 3000, "SON allocation");
    expect_int(single(&r.result, "allocations"), "available",
               allocations[SON].amount - AVROP_ORE - 3000, "SON allocation");
    budget_response_free(&r);
    budget_client_close(c);
    stop_cleanly();
}

/* ---- verify ---------------------------------------------------------------------------------- */

static void expect_verify_ok(budget_client *c, uint64_t head)
{
    budget_response r;
    e2e_call(c, "verify", NULL, &r);
    e2e_assert(r.ok, "verify refused: %s", r.code);
    const msgpack_object *ok = budget_map_get(&r.result, "ok");
    const msgpack_object *first_bad = budget_map_get(&r.result, "first_bad");
    e2e_assert(ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean,
               "verify says the chain is broken");
    e2e_assert_int(e2e_map_uint(&r.result, "checked"), head, "events checked");
    e2e_assert_int(e2e_map_uint(&r.result, "head"), head, "verify's head");
    e2e_assert(first_bad != NULL && first_bad->type == MSGPACK_OBJECT_NIL,
               "first_bad is not nil on a healthy log");
    budget_response_free(&r);
}

Test(e2e, verify_a_healthy_log)
{
    budget_client *c = e2e_client(&bd);
    e2e_ctl_result r;

    expect_verify_ok(c, U);
    scenario_lib(c);
    expect_verify_ok(c, SCENARIO_HEAD);
    ctl_ok(&r, "verify");
    e2e_assert_str(r.out, "chain intact: 12 events, head 12\n", "budgetctl verify");
    e2e_ctl_free(&r);
    budget_client_close(c);
    stop_cleanly();
}

/* ---- SIGTERM under load ---------------------------------------------------------------------- */

#define LOAD_THREADS 8
#define LOAD_WRITES_MAX 20000
#define LOAD_ACKS_BEFORE_SIGNAL 200

typedef struct {
    const char *socket;
    int index;
    atomic_int *acked_total;
    atomic_int *connected_total; /* clients that have tried to connect */
    int connect_rc;              /* what budget_client_connect returned */
    uint32_t acked;
    uint64_t seqs[LOAD_WRITES_MAX];
    int ended_by;  /* the error that ended the loop: a negative errno, or 1 for a refusal */
    char code[32]; /* the refusal's code */
    bool ran_out;  /* wrote LOAD_WRITES_MAX without being stopped */
} load_client;

static void load_id(char *out, size_t size, int thread, uint32_t n)
{
    snprintf(out, size, "load-%d-%05u", thread, n);
}

/* Writes grants one at a time until the daemon refuses or goes away. */
static void *load_main(void *arg)
{
    load_client *lc = arg;
    budget_client *c = NULL;
    e2e_buf b;

    e2e_buf_init(&b);
    lc->ended_by = lc->connect_rc = budget_client_connect(lc->socket, &c);
    atomic_fetch_add(lc->connected_total, 1);
    for (uint32_t n = 0; lc->ended_by == 0; n++) {
        char id[48];
        budget_response r;
        if (n == LOAD_WRITES_MAX) {
            lc->ran_out = true;
            break;
        }
        load_id(id, sizeof(id), lc->index, n);
        /* An amount of its own: frames alike would be refused as duplicate grants. */
        grant_args(&b, id, "KS", 1000 + (int64_t)n * LOAD_THREADS + lc->index);
        lc->ended_by = budget_client_call(c, "frame.grant", b.sb.data, b.sb.size, &r);
        if (lc->ended_by != 0)
            break;
        if (r.ok) {
            lc->seqs[lc->acked++] = (uint64_t)budget_map_int(&r.result, "seq", 0);
            atomic_fetch_add(lc->acked_total, 1);
        } else {
            lc->ended_by = 1;
            snprintf(lc->code, sizeof(lc->code), "%s", r.code);
        }
        budget_response_free(&r);
    }
    budget_client_close(c);
    e2e_buf_destroy(&b);
    return NULL;
}

/*
 * 8 clients write grants one at a time; once all are connected and LOAD_ACKS_BEFORE_SIGNAL
 * writes are acknowledged, the daemon gets `signum`. After a restart every acknowledged write is in
 * the log at the seq it was acknowledged with: an answer is sent only once the write is durable.
 */
static void load_then_signal(int signum)
{
    static load_client clients[LOAD_THREADS];
    static char seen[LOAD_THREADS * LOAD_WRITES_MAX + 1][48];
    pthread_t threads[LOAD_THREADS];
    atomic_int acked_total = 0, connected_total = 0;
    int status = 0;

    for (int i = 0; i < LOAD_THREADS; i++) {
        clients[i] = (load_client){.socket = bd.socket,
                                   .index = i,
                                   .acked_total = &acked_total,
                                   .connected_total = &connected_total};
        cr_assert_eq(pthread_create(&threads[i], NULL, load_main, &clients[i]), 0);
    }
    int64_t deadline = e2e_now_ms() + 20000 * e2e_slow();
    while ((atomic_load(&connected_total) < LOAD_THREADS ||
            atomic_load(&acked_total) < LOAD_ACKS_BEFORE_SIGNAL) &&
           e2e_now_ms() < deadline) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    int acked_at_signal = atomic_load(&acked_total);
    bool all_connected = atomic_load(&connected_total) == LOAD_THREADS;

    int64_t signalled = e2e_now_ms();
    int stopped = e2e_daemon_stop(&bd, signum, E2E_STOP_TIMEOUT_MS, &status);
    int64_t took = e2e_now_ms() - signalled;
    join_all(threads, LOAD_THREADS, 10000 * e2e_slow());
    e2e_assert(all_connected, "not every client had connected before the signal");
    for (int i = 0; i < LOAD_THREADS; i++)
        e2e_assert(clients[i].connect_rc == 0, "client %d could not connect: %d", i,
                   clients[i].connect_rc);
    e2e_assert(acked_at_signal >= LOAD_ACKS_BEFORE_SIGNAL, "only %d writes acknowledged in time",
               acked_at_signal);
    e2e_assert(stopped == 0, "budgetd did not exit within %d ms of signal %d", E2E_STOP_TIMEOUT_MS,
               signum);
    if (signum == SIGTERM) {
        e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                   "budgetd stopped with status 0x%x, expected exit 0", status);
        struct stat st;
        e2e_assert(lstat(bd.socket, &st) != 0 && errno == ENOENT,
                   "the socket file is still there after SIGTERM");
    }
    cr_log_info("budgetd stopped %lld ms after signal %d, %d writes acknowledged by then",
                (long long)took, signum, acked_at_signal);

    /* Each client was stopped by the daemon: a refusal that says to retry, or a close. */
    for (int i = 0; i < LOAD_THREADS; i++) {
        const load_client *lc = &clients[i];
        bool refused = lc->ended_by == 1 && strcmp(lc->code, "unavailable") == 0;
        e2e_assert(!lc->ran_out, "client %d wrote %d grants without being stopped", i,
                   LOAD_WRITES_MAX);
        e2e_assert(lc->ended_by == -ECONNRESET || lc->ended_by == -EPIPE ||
                       (signum == SIGTERM && refused),
                   "client %d ended with %d (%s)", i, lc->ended_by, lc->code);
    }

    /* After a restart (which clears the socket file a killed daemon left) every acknowledged
     * write is in the log under its seq. */
    e2e_assert(e2e_daemon_restart(&bd) == 0, "restart after signal %d", signum);
    budget_client *c = e2e_client(&bd);
    uint64_t head = e2e_head(c);
    e2e_assert(head <= LOAD_THREADS * LOAD_WRITES_MAX, "head %" PRIu64, head);
    for (uint64_t after = 0; after < head;) {
        budget_response r;
        events_page(c, after, 1000, NULL, NULL, NULL, NULL, &r);
        const msgpack_object *events = budget_map_get(&r.result, "events");
        for (uint32_t i = 0; i < events->via.array.size; i++) {
            const msgpack_object *ev = &events->via.array.ptr[i];
            uint64_t seq = e2e_map_uint(ev, "seq");
            e2e_assert(seq >= 1 && seq <= head, "seq %" PRIu64 " outside the log", seq);
            budget_map_str(budget_map_get(ev, "data"), "id", seen[seq], sizeof(seen[seq]));
        }
        uint64_t next = e2e_map_uint(&r.result, "next");
        budget_response_free(&r);
        e2e_assert(next > after, "events did not advance past %" PRIu64, after);
        after = next;
    }
    size_t checked = 0;
    for (int i = 0; i < LOAD_THREADS; i++) {
        for (uint32_t n = 0; n < clients[i].acked; n++) {
            char id[48];
            uint64_t seq = clients[i].seqs[n];
            load_id(id, sizeof(id), i, n);
            e2e_assert(seq >= 1 && seq <= head,
                       "acknowledged %s at seq %" PRIu64 " is past the head %" PRIu64
                       " after restart",
                       id, seq, head);
            e2e_assert_str(seen[seq], id, "id of an acknowledged seq after restart");
            checked++;
        }
    }
    e2e_assert(checked >= (size_t)acked_at_signal, "acknowledged writes checked");
    /* On SIGTERM, the write each client had in flight was refused (`unavailable`: nothing
     * written) or never read: docs/operations.md says the writes already accepted are
     * committed and answered. A killed daemon may have committed one it could not answer. */
    for (int i = 0; signum == SIGTERM && i < LOAD_THREADS; i++) {
        char id[48];
        load_id(id, sizeof(id), i, clients[i].acked);
        for (uint64_t seq = 1; seq <= head; seq++)
            e2e_assert(strcmp(seen[seq], id) != 0,
                       "%s is in the log at seq %" PRIu64 " but client %d was told %s", id, seq, i,
                       clients[i].ended_by == 1 ? clients[i].code : "nothing (closed)");
    }
    expect_verify_ok(c, head);
    budget_client_close(c);
}

Test(e2e, sigterm_under_load_loses_no_acknowledged_write)
{
    load_then_signal(SIGTERM);
    stop_cleanly();
}

Test(e2e, sigkill_under_load_loses_no_acknowledged_write)
{
    load_then_signal(SIGKILL);
    stop_cleanly();
}

/* ---- the register of units through budgetctl --------------------------------------------------
 */

/* The unit `code` of `budgetctl --json units`, or NULL. */
static const e2e_json *unit_in(const e2e_json *j, const char *code)
{
    const e2e_json *units = e2e_json_get(j, "units");
    for (size_t i = 0; units && i < units->count; i++)
        if (strcmp(e2e_json_str(units->items[i], "unit"), code) == 0)
            return units->items[i];
    return NULL;
}

Test(e2e, units_are_registered_renamed_and_closed_through_budgetctl)
{
    e2e_ctl_result r;
    ctl_ok(&r, "unit", "register", "BUN", "--name", "Barn- och ungdomsnämnden", "--kind", "nämnd",
           "--parent", "KS", "--reference", "KF 2018-12-18 § 510", "--id", "unit-bun");
    e2e_assert(strncmp(r.out, "unit.registered unit-bun seq 4 hash ", 36) == 0, "%s", r.out);
    e2e_ctl_free(&r);

    /* A write naming an unregistered unit: not_found, with the nearest code. */
    e2e_assert_int(ctl_run(&r, "grant", "--decision", E2E_DECISION, "--unit", "BNU", "--year",
                           "2021", "--amount", "1 kr", "--title", "Ram"),
                   1, "a grant to an unregistered unit");
    e2e_assert(strstr(r.err, "not_found: unit BNU is not a registered unit; did you mean BUN?"),
               "%s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl_run(&r, "unit", "register", "VON", "--name", "Vård", "--kind", "namnd"), 1,
                   "a kind not of the list");
    e2e_assert(strstr(r.err, "bad_request"), "%s", r.err);
    e2e_ctl_free(&r);

    ctl_ok(&r, "grant", "--decision", E2E_DECISION, "--unit", "BUN", "--year", "2021", "--amount",
           "1 kr", "--title", "Ram", "--id", "bun-ram");
    e2e_ctl_free(&r);
    ctl_ok(&r, "unit", "rename", "BUN", "--name", "Bildningsnämnden");
    e2e_ctl_free(&r);
    /* Money left: closing is refused, saying what. */
    e2e_assert_int(ctl_run(&r, "unit", "close", "BUN"), 1, "closing a unit with money left");
    e2e_assert(strstr(r.err, "invalid_state: unit BUN cannot be closed: frame bun-ram has 1,00 kr "
                             "unallocated"),
               "%s", r.err);
    e2e_ctl_free(&r);

    /* balances names the unit as it is called now; units shows its history. */
    ctl_ok(&r, "--json", "balances", "--unit", "BUN");
    e2e_json *j = json_line(&r);
    const e2e_json *rows = e2e_json_get(j, "units");
    e2e_assert(rows && rows->count == 1, "one unit row of BUN");
    e2e_assert_str(e2e_json_str(rows->items[0], "name"), "Bildningsnämnden", "name in balances");
    e2e_json_free(j);
    ctl_ok(&r, "--json", "units");
    j = json_line(&r);
    const e2e_json *bun = unit_in(j, "BUN");
    e2e_assert(bun != NULL, "BUN is in the register: %s", r.out);
    e2e_assert_str(e2e_json_str(bun, "name"), "Bildningsnämnden", "current name");
    e2e_assert_str(e2e_json_str(bun, "kind"), "nämnd", "kind");
    e2e_assert_str(e2e_json_str(bun, "parent"), "KS", "parent");
    e2e_assert_str(e2e_json_str(bun, "state"), "open", "state");
    const e2e_json *former = e2e_json_get(bun, "former_names");
    e2e_assert(former && former->count == 1 &&
                   strcmp(former->items[0]->string, "Barn- och ungdomsnämnden") == 0,
               "former names: %s", r.out);
    e2e_assert_int(e2e_json_get(j, "units")->count, U + 1, "units in the register");
    e2e_json_free(j);

    /* Once its money is gone it closes, and no write names it again. */
    ctl_ok(&r, "adjust", "bun-ram", "--decision", E2E_DECISION, "--delta", "-1 kr", "--reason",
           "Indragen");
    e2e_ctl_free(&r);
    ctl_ok(&r, "unit", "close", "BUN");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl_run(&r, "grant", "--decision", E2E_DECISION, "--unit", "BUN", "--year",
                           "2022", "--amount", "1 kr", "--title", "Ram"),
                   1, "a grant to a closed unit");
    e2e_assert(strstr(r.err, "not_found: unit BUN is closed"), "%s", r.err);
    e2e_ctl_free(&r);
    ctl_ok(&r, "units");
    e2e_assert(strstr(r.out, "closed") && strstr(r.out, "Barn- och ungdomsnämnden"), "%s", r.out);
    e2e_ctl_free(&r);
    stop_cleanly();
}

/* ---- balances paged through a large ledger ------------------------------------------------ */

/* pf<i>: frames to KS, SON, KFN in turn, years 2021 and 2022 by threes. pa<i>: allocations,
 * every second from pf0 (more than a page holds), the rest spread over the frames, to KS, SON
 * and KFN by sevens. */
#define PAGED_FRAMES 2400u
#define PAGED_ALLOCATIONS 6000u
static const char *const paged_units[3] = {"KS", "SON", "KFN"};

static const char *paged_frame_unit(uint32_t f)
{
    return paged_units[f % 3];
}

static int32_t paged_frame_year(uint32_t f)
{
    return 2021 + (int32_t)((f / 3) % 2);
}

static uint32_t paged_frame_of(uint32_t a)
{
    return a % 2 == 0 ? 0 : a % PAGED_FRAMES;
}

static const char *paged_allocation_unit(uint32_t a)
{
    return paged_units[(a / 7) % 3];
}

/* Write `i` of the ledger, as an item of a batch's "writes": the grants, then the proposals. */
static void pack_paged_write(e2e_buf *b, uint32_t i)
{
    char id[32], frame[32];
    msgpack_pack_map(&b->pk, 2);
    e2e_kv_str(b, "op", i < PAGED_FRAMES ? "frame.grant" : "allocation.propose");
    e2e_pack_str(b, "args");
    if (i < PAGED_FRAMES) {
        snprintf(id, sizeof(id), "pf%u", i);
        msgpack_pack_map(&b->pk, 6 + E2E_DECISION_PAIRS);
        e2e_kv_str(b, "id", id);
        e2e_kv_str(b, "unit", paged_frame_unit(i));
        e2e_kv_int(b, "year", paged_frame_year(i));
        e2e_kv_int(b, "amount", 10000000);
        e2e_kv_str(b, "title", FRAME_TITLE);
        e2e_kv_decision(b);
        e2e_kv_str(b, "reference", id);
        return;
    }
    uint32_t a = i - PAGED_FRAMES;
    snprintf(id, sizeof(id), "pa%u", a);
    snprintf(frame, sizeof(frame), "pf%u", paged_frame_of(a));
    msgpack_pack_map(&b->pk, 5);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "frame", frame);
    e2e_kv_str(b, "unit", paged_allocation_unit(a));
    e2e_kv_int(b, "amount", 100);
    e2e_kv_str(b, "purpose", "Paged");
}

static void make_paged_ledger(budget_client *c)
{
    const uint32_t total = PAGED_FRAMES + PAGED_ALLOCATIONS;
    e2e_buf b;
    e2e_buf_init(&b);
    for (uint32_t first = 0; first < total; first += 1000) {
        uint32_t n = total - first < 1000 ? total - first : 1000;
        budget_response r;
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 1);
        e2e_pack_str(&b, "writes");
        msgpack_pack_array(&b.pk, n);
        for (uint32_t i = 0; i < n; i++)
            pack_paged_write(&b, first + i);
        e2e_call(c, "batch", &b, &r);
        e2e_assert(r.ok, "batch from %u: %s: %s", first, r.code, r.message);
        budget_response_free(&r);
    }
    e2e_buf_destroy(&b);
}

/* A filter of balances: unit, year, frame (NULL / 0 = none). */
typedef struct {
    const char *unit;
    int32_t year;
    const char *frame;
} paged_filter;

/* The name of item `k` of a list of the ledger when it matches `q`, else false: the one walk
 * the pages are compared with, from what was written. */
static bool paged_match(const char *list, const paged_filter *q, uint32_t k, char *name,
                        size_t size)
{
    if (strcmp(list, "frames") == 0) {
        if (k >= PAGED_FRAMES || q->frame || (q->unit && strcmp(q->unit, paged_frame_unit(k))) ||
            (q->year && q->year != paged_frame_year(k)))
            return false;
        snprintf(name, size, "pf%u", k);
        return true;
    }
    if (k >= PAGED_ALLOCATIONS || (q->unit && strcmp(q->unit, paged_allocation_unit(k))) ||
        (q->year && q->year != paged_frame_year(paged_frame_of(k))))
        return false;
    if (q->frame) {
        char frame[32];
        snprintf(frame, sizeof(frame), "pf%u", paged_frame_of(k));
        if (strcmp(frame, q->frame) != 0)
            return false;
    }
    snprintf(name, size, "pa%u", k);
    return true;
}

/*
 * Reads one list of `balances` with filter `q` page by page, from offset 0 following "next"
 * until "more" is false, and checks that the pages hold, in order, exactly the items that match
 * (paged_match). Returns the pages.
 */
static unsigned page_through(budget_client *c, const paged_filter *q, const char *list,
                             const char *offset_arg)
{
    const uint32_t end = strcmp(list, "frames") == 0 ? PAGED_FRAMES : PAGED_ALLOCATIONS;
    uint64_t offset = 0;
    uint32_t k = 0, seen = 0;
    unsigned pages = 0;
    bool more = true;
    char want[32];
    e2e_buf b;

    e2e_buf_init(&b);
    while (more) {
        budget_response r;
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 1 + (q->unit != NULL) + (q->year != 0) + (q->frame != NULL));
        e2e_kv_uint(&b, offset_arg, offset);
        if (q->unit)
            e2e_kv_str(&b, "unit", q->unit);
        if (q->year)
            e2e_kv_int(&b, "year", q->year);
        if (q->frame)
            e2e_kv_str(&b, "frame", q->frame);
        e2e_call(c, "balances", &b, &r);
        e2e_assert(r.ok, "balances %s from %" PRIu64 ": %s: %s", list, offset, r.code, r.message);
        const msgpack_object *items = budget_map_get(&r.result, list);
        e2e_assert(items && items->type == MSGPACK_OBJECT_ARRAY, "no %s", list);
        for (uint32_t i = 0; i < items->via.array.size; i++) {
            while (k < end && !paged_match(list, q, k, want, sizeof(want)))
                k++;
            e2e_assert(k < end, "%s: more items than match, at %" PRIu64, list, offset + i);
            e2e_assert(e2e_map_str_is(&items->via.array.ptr[i], "id", want),
                       "%s item %" PRIu64 " is not %s", list, offset + i, want);
            k++;
            seen++;
        }
        offset += items->via.array.size;
        const msgpack_object *m = budget_map_get(&r.result, "more");
        const msgpack_object *next = budget_map_get(&r.result, "next");
        e2e_assert(m && m->type == MSGPACK_OBJECT_BOOLEAN && next, "more and next");
        e2e_assert(e2e_map_uint(next, offset_arg) == offset, "next %s", offset_arg);
        more = m->via.boolean && items->via.array.size > 0;
        budget_response_free(&r);
        e2e_assert(++pages < 100, "%s does not end", list);
    }
    while (k < end && !paged_match(list, q, k, want, sizeof(want)))
        k++;
    e2e_assert(k == end, "%s ends at %u items, before %s", list, seen, want);
    e2e_buf_destroy(&b);
    return pages;
}

/*
 * Paging through frames and allocations of a ledger larger than a page, unfiltered, by unit,
 * by year, by both and by frame: the pages, joined, are the items that match, each once and
 * in order of creation (each page starts at its offset, whatever came before it).
 */
Test(e2e, balances_pages_of_filtered_and_unfiltered_lists_are_one_walk)
{
    budget_client *c = e2e_client(&bd);
    make_paged_ledger(c);
    const paged_filter filters[] = {
        {NULL, 0, NULL},     {"SON", 0, NULL},   {NULL, 2022, NULL},
        {"KFN", 2021, NULL}, {"KS", 2030, NULL},
    };
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        unsigned frames = page_through(c, &filters[i], "frames", "frames_offset");
        unsigned pages = page_through(c, &filters[i], "allocations", "offset");
        if (i == 0)
            e2e_assert(frames > 2 && pages > 2, "%u and %u pages: too few to page", frames, pages);
    }
    e2e_assert(page_through(c, &(paged_filter){NULL, 0, "pf0"}, "allocations", "offset") > 1,
               "pf0's allocations in one page");
    page_through(c, &(paged_filter){NULL, 0, "pf7"}, "allocations", "offset");
    budget_client_close(c);
    stop_cleanly();
}

/* ---- an allocation's events while its avrops are decided ------------------------------------ */

/* Fewer than a page of 1000 approvals in all, so each read is one request; a tenth as many
 * when budgetd runs under valgrind, whose writes take ten times as long and more. */
#define DECIDED_AVROP_COUNT 900
#define DECIDED_READERS 3

typedef struct {
    const char *socket;
    atomic_uint *decided; /* approvals answered ok so far */
    atomic_bool *done;
    int failure;         /* a transport error or a refusal, negative; 0 */
    unsigned reads;      /* reads made */
    unsigned short_read; /* a read that missed an approval answered before it: how many it saw */
    unsigned short_of;   /* ... and how many had been answered */
} approvals_reader;

/* Reads the approvals among the SON allocation's events until told to stop; each read must hold
 * every approval answered before it was sent, and the allocation's own and the scenario's. */
static void *approvals_reader_main(void *arg)
{
    approvals_reader *rd = arg;
    budget_client *c = NULL;
    e2e_buf b;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_str(&b, "entity", allocations[SON].id);
    e2e_kv_str(&b, "type", "decision.approved");
    e2e_kv_uint(&b, "limit", 1000);
    rd->failure = budget_client_connect(rd->socket, &c);
    while (rd->failure == 0 && !atomic_load(rd->done)) {
        unsigned before = atomic_load(rd->decided);
        budget_response r;
        rd->failure = budget_client_call(c, "events", b.sb.data, b.sb.size, &r);
        if (rd->failure != 0)
            break;
        const msgpack_object *events = r.ok ? budget_map_get(&r.result, "events") : NULL;
        if (events == NULL || events->type != MSGPACK_OBJECT_ARRAY)
            rd->failure = -EPROTO;
        else if (events->via.array.size < before + 2 && rd->short_of == 0) {
            rd->short_read = events->via.array.size;
            rd->short_of = before + 2;
        }
        rd->reads++;
        budget_response_free(&r);
    }
    if (c)
        budget_client_close(c);
    e2e_buf_destroy(&b);
    return NULL;
}

/* The approvals among the SON allocation's events (each names an avrop, not the allocation). */
static size_t approvals_of_son(budget_client *c)
{
    uint64_t seqs[DECIDED_AVROP_COUNT + SCENARIO_HEAD + 1];
    return events_all(c, 1000, "entity", allocations[SON].id, "type", "decision.approved", seqs,
                      sizeof seqs / sizeof seqs[0]);
}

/*
 * An events page filtered by an allocation looks up, for each decision it scans, the avrop the
 * decision names, in the committed ledger that the loop is applying new events to meanwhile
 * (every avrop and approval a new id, so the ledger's arrays grow under the lookups). Every
 * approval answered before a read is in that read, and at the end all of them are.
 */
Test(e2e, an_allocations_events_read_while_its_avrops_are_decided_hold_every_approval)
{
    budget_client *c = e2e_client(&bd);
    budget_client *approver = e2e_client_as(&bd, &e2e_other);
    scenario_lib(c);
    atomic_uint decided;
    atomic_bool done;
    atomic_init(&decided, 0);
    atomic_init(&done, false);
    approvals_reader readers[DECIDED_READERS];
    pthread_t threads[DECIDED_READERS];
    for (int i = 0; i < DECIDED_READERS; i++) {
        readers[i] = (approvals_reader){.socket = bd.socket, .decided = &decided, .done = &done};
        e2e_assert(pthread_create(&threads[i], NULL, approvals_reader_main, &readers[i]) == 0,
                   "start a reader");
    }
    int count = e2e_wrapped() ? DECIDED_AVROP_COUNT / 10 : DECIDED_AVROP_COUNT;
    e2e_buf b;
    e2e_buf_init(&b);
    for (int i = 0; i < count; i++) {
        char avrop[48], decision[48];
        snprintf(avrop, sizeof avrop, "son-avrop-%d", i);
        snprintf(decision, sizeof decision, "son-avrop-%d-beslut", i);
        avrop_args(&b, avrop, allocations[SON].id, 1000);
        e2e_write_ok(c, "avrop.request", &b);
        approve_args(&b, decision, avrop, NULL);
        e2e_write_ok(approver, "approve", &b);
        atomic_fetch_add(&decided, 1);
    }
    atomic_store(&done, true);
    join_all(threads, DECIDED_READERS, 60000 * e2e_slow());
    for (int i = 0; i < DECIDED_READERS; i++) {
        e2e_assert(readers[i].failure == 0, "reader %d failed: %d", i, readers[i].failure);
        e2e_assert(readers[i].reads > 0, "reader %d read nothing", i);
        e2e_assert(readers[i].short_of == 0, "reader %d saw %u approvals where %u were answered", i,
                   readers[i].short_read, readers[i].short_of);
    }
    e2e_assert_int((int64_t)approvals_of_son(c), count + 2,
                   "approvals among the allocation's events");
    e2e_buf_destroy(&b);
    budget_client_close(approver);
    budget_client_close(c);
    stop_cleanly();
}
