/*
 * Audit end to end: history of an entity, tamper evidence (bytes of stored events altered in
 * a copy of the data, offline), signed checkpoints against honest and rewritten logs, hot
 * backups under load, replay as of a seq or a day online and offline, and export.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
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

#include <sodium.h>

#include "audit_util.h"

static e2e_daemon bd;

/* The events setup writes first: the registrations of KS, SON and KFN (seqs 1..3). */
#define U 3

static void setup(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
    au_cleanup();
}

static void stop_daemon(e2e_daemon *d)
{
    int status = 0;
    e2e_assert(e2e_daemon_stop(d, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not exit within %d ms of SIGTERM", E2E_STOP_TIMEOUT_MS);
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "budgetd stopped with status 0x%x, expected exit 0", status);
}

#define TEST_TIMEOUT_S 120
TestSuite(audit, .init = setup, .fini = teardown, .timeout = TEST_TIMEOUT_S);

/* ---- budgetctl ------------------------------------------------------------------------------ */

/* budgetctl as `who` (NULL: this process's identity). Decisions are made as e2e_other:
 * four-eyes forbids deciding one's own proposal. */
static int ctl_as_argv(const e2e_daemon *d, const e2e_identity *who, e2e_ctl_result *r, int argc,
                       const char *const *argv)
{
    e2e_assert(e2e_ctl_argv_as(d, who, r, argc, argv) == 0, "budgetctl %s could not be run",
               argv[0]);
    return r->exit_code;
}

static int ctl_on_argv(const e2e_daemon *d, e2e_ctl_result *r, int argc, const char *const *argv)
{
    return ctl_as_argv(d, NULL, r, argc, argv);
}

/* budgetctl on `bd`; its exit status. */
#define ctl(r, ...) ctl_on_argv(&bd, (r), AU_ARGC(__VA_ARGS__), AU_ARGV(__VA_ARGS__))
/* budgetctl on daemon `d`, which must exit 0. */
#define ctl_ok_on(d, r, ...)                                                                       \
    do {                                                                                           \
        int code_ = ctl_on_argv((d), (r), AU_ARGC(__VA_ARGS__), AU_ARGV(__VA_ARGS__));             \
        e2e_assert(code_ == 0, "budgetctl %s exited %d: %s%s", AU_ARGV(__VA_ARGS__)[0], code_,     \
                   (r)->out, (r)->err);                                                            \
    } while (0)
#define ctl_ok(r, ...) ctl_ok_on(&bd, r, __VA_ARGS__)
/* A decision on daemon `d` by the second identity, which must succeed. */
#define decide_on(d, ...)                                                                          \
    do {                                                                                           \
        e2e_ctl_result r_;                                                                         \
        int code_ = ctl_as_argv((d), &e2e_other, &r_, AU_ARGC(__VA_ARGS__), AU_ARGV(__VA_ARGS__)); \
        e2e_assert(code_ == 0, "budgetctl %s exited %d: %s", AU_ARGV(__VA_ARGS__)[0], code_,       \
                   r_.err);                                                                        \
        e2e_ctl_free(&r_);                                                                         \
    } while (0)
#define decide(...) decide_on(&bd, __VA_ARGS__)

/* Runs budgetctl (which must exit 0) and frees its result. */
#define run_ok(...)                                                                                \
    do {                                                                                           \
        e2e_ctl_result r_;                                                                         \
        ctl_ok(&r_, __VA_ARGS__);                                                                  \
        e2e_ctl_free(&r_);                                                                         \
    } while (0)

/* The seqs at the start of each line of budgetctl's event lines, into `seqs`. */
static size_t line_seqs(const char *out, uint64_t *seqs, size_t max)
{
    size_t n = 0;
    for (const char *line = out; line && *line && n < max;) {
        char *end;
        seqs[n++] = strtoull(line, &end, 10);
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return n;
}

static void expect_seqs(const uint64_t *got, size_t n, const uint64_t *want, size_t m,
                        const char *what)
{
    char shown[256] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(shown + strlen(shown), sizeof(shown) - strlen(shown), " %" PRIu64, got[i]);
    e2e_assert(n == m, "%s: %zu events (%s), expected %zu", what, n, shown, m);
    for (size_t i = 0; i < n; i++)
        e2e_assert(got[i] == want[i], "%s: event %zu is seq %" PRIu64 ", expected %" PRIu64 " (%s)",
                   what, i, got[i], want[i], shown);
}

/* ---- history --------------------------------------------------------------------------------- */

/*
 * 1 grant F1     5 approve A1 (D1)    9 approve V1 (D3)       13 reject V2 (D4)
 * 2 grant F2     6 approve A2 (D2)   10 avrop A1 (V3)
 * 3 allocate A1  7 avrop A1 (V1)     11 withdraw V3 (W1)
 * 4 allocate A2  8 avrop A2 (V2)     12 adjust F1 (J1)
 */
static void history_scenario(void)
{
    run_ok("grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2021", "--amount",
           "3 mkr", "--title", "Ram 1", "--id", "F1");
    run_ok("grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2021", "--amount",
           "2 mkr", "--title", "Ram 2", "--id", "F2");
    run_ok("allocate", "F1", "--unit", "SON", "--amount", "1 mkr", "--purpose", "a", "--id", "A1");
    run_ok("allocate", "F2", "--unit", "KFN", "--amount", "1 mkr", "--purpose", "b", "--id", "A2");
    decide("approve", "--decision", E2E_DECISION, "A1", "--id", "D1");
    decide("approve", "--decision", E2E_DECISION, "A2", "--id", "D2");
    run_ok("avrop", "A1", "--amount", "100 tkr", "--id", "V1");
    run_ok("avrop", "A2", "--amount", "100 tkr", "--id", "V2");
    decide("approve", "--decision", E2E_DECISION, "V1", "--id", "D3");
    run_ok("avrop", "A1", "--amount", "50 tkr", "--id", "V3");
    run_ok("withdraw", "V3", "--id", "W1");
    run_ok("adjust", "--decision", E2E_DECISION, "F1", "--delta", "+1 mkr", "--reason", "Tillägg",
           "--id", "J1");
    decide("reject", "--decision", E2E_DECISION, "V2", "--id", "D4");
}

/* `events` with `entity`, one event per page, following `next`: the seqs found. */
static size_t entity_pages(budget_client *c, const char *entity, uint64_t *seqs, size_t max)
{
    uint64_t after = 0, head = 1;
    size_t n = 0;
    while (after < head) {
        e2e_buf args;
        budget_response r;
        e2e_buf_init(&args);
        msgpack_pack_map(&args.pk, 3);
        e2e_kv_str(&args, "entity", entity);
        e2e_kv_uint(&args, "limit", 1);
        e2e_kv_uint(&args, "after", after);
        e2e_call(c, "events", &args, &r);
        e2e_assert(r.ok, "events entity %s: %s", entity, r.code);
        const msgpack_object *events = budget_map_get(&r.result, "events");
        for (uint32_t i = 0; i < events->via.array.size && n < max; i++)
            seqs[n++] = e2e_map_uint(&events->via.array.ptr[i], "seq");
        after = e2e_map_uint(&r.result, "next");
        head = e2e_map_uint(&r.result, "head");
        budget_response_free(&r);
        e2e_buf_destroy(&args);
    }
    return n;
}

/* `events` with one filter of uint values; the number of events returned (one page). */
static uint32_t events_count(budget_client *c, const char *k1, uint64_t v1, const char *k2,
                             uint64_t v2, const char **code)
{
    e2e_buf args;
    budget_response r;
    uint32_t n = 0;
    e2e_buf_init(&args);
    msgpack_pack_map(&args.pk, k2 ? 2 : 1);
    e2e_kv_uint(&args, k1, v1);
    if (k2)
        e2e_kv_uint(&args, k2, v2);
    e2e_call(c, "events", &args, &r);
    static char error[32];
    snprintf(error, sizeof(error), "%s", r.ok ? "" : r.code);
    *code = error;
    if (r.ok)
        n = budget_map_get(&r.result, "events")->via.array.size;
    budget_response_free(&r);
    e2e_buf_destroy(&args);
    return n;
}

static uint64_t event_ts(budget_client *c, uint64_t seq)
{
    e2e_buf args;
    budget_response r;
    e2e_buf_init(&args);
    msgpack_pack_map(&args.pk, 2);
    e2e_kv_uint(&args, "after", seq - 1);
    e2e_kv_uint(&args, "limit", 1);
    e2e_call(c, "events", &args, &r);
    uint64_t ts = e2e_map_uint(&budget_map_get(&r.result, "events")->via.array.ptr[0], "ts");
    budget_response_free(&r);
    e2e_buf_destroy(&args);
    return ts;
}

/* The Swedish day (YYYY-MM-DD) of a ts in ms, moved by `shift` days. */
static void swedish_day(uint64_t ts_ms, int shift, char out[16])
{
    e2e_day_text((int64_t)ts_ms, shift, out);
}

Test(audit, history_follows_an_entity_and_all_that_refers_to_it)
{
    static const struct {
        const char *entity;
        uint64_t seqs[8];
        size_t n;
    } cases[] = {
        /* seqs after the U registrations */
        {"F1", {U + 1, U + 3, U + 5, U + 7, U + 9, U + 10, U + 11, U + 12}, 8},
        {"A1", {U + 3, U + 5, U + 7, U + 9, U + 10, U + 11}, 6},
        {"V1", {U + 7, U + 9}, 2},
        {"F2", {U + 2, U + 4, U + 6, U + 8, U + 13}, 5},
        {"A2", {U + 4, U + 6, U + 8, U + 13}, 4},
        {"D3", {U + 9}, 1},
        {"V3", {U + 10, U + 11}, 2},
    };
    uint64_t got[32];
    e2e_ctl_result r;
    budget_client *c = e2e_client(&bd);
    history_scenario();

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* Paged one event at a time: an avrop's decision is found on a later page. */
        size_t n = entity_pages(c, cases[i].entity, got, 32);
        expect_seqs(got, n, cases[i].seqs, cases[i].n, cases[i].entity);
        ctl_ok(&r, "history", cases[i].entity);
        n = line_seqs(r.out, got, 32);
        expect_seqs(got, n, cases[i].seqs, cases[i].n, "budgetctl history");
        e2e_ctl_free(&r);
    }
    e2e_assert_int(ctl(&r, "history", "nothing-here"), 1, "history of an unknown id");
    e2e_assert(strstr(r.err, "not_found") != NULL, "says not_found: %s", r.err);
    e2e_ctl_free(&r);

    /* By actor: the four decisions are the second identity's, the rest mine; a uid that
     * wrote nothing has nothing. */
    const char *code;
    e2e_assert_int(events_count(c, "actor", getuid(), NULL, 0, &code), U + 9,
                   "events by me (the registrations too)");
    e2e_assert_int(events_count(c, "actor", e2e_other.uid, NULL, 0, &code), 4, "by the other");
    e2e_assert_int(events_count(c, "actor", 4242, NULL, 0, &code), 0, "by a uid without any");

    /* By time, [from, to) in ms: event 5's millisecond holds event 5 and nothing outside it. */
    uint64_t ts5 = event_ts(c, 5);
    uint32_t same_ms = events_count(c, "ts_from", ts5, "ts_to", ts5 + 1, &code);
    e2e_assert(same_ms >= 1 && same_ms <= U + 13, "events in event 5's millisecond: %u", same_ms);
    e2e_assert_int(events_count(c, "ts_to", event_ts(c, 1), NULL, 0, &code), 0,
                   "events before the first");
    e2e_assert_int(events_count(c, "ts_from", event_ts(c, U + 13) + 1, NULL, 0, &code), 0,
                   "events after the last");
    events_count(c, "ts_from", 10, "ts_to", 5, &code);
    e2e_assert_str(code, "bad_request", "from after to");

    /* budgetctl takes days: the days of the first and the last event hold everything (one day
     * unless the scenario ran across midnight, UTC), a day long gone nothing. */
    char first_day[16], last_day[16];
    swedish_day(event_ts(c, 1), 0, first_day);
    swedish_day(event_ts(c, U + 13), 0, last_day);
    ctl_ok(&r, "history", "F1", "--from", first_day, "--to", last_day);
    e2e_assert_int(line_seqs(r.out, got, 32), 8, "F1's events today");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "history", "F1", "--to", "2001-01-01"), 1, "F1 before 2001");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "events", "--from", "2021-02-30"), 2, "a day that does not exist");
    e2e_ctl_free(&r);
    budget_client_close(c);
    stop_daemon(&bd);
}

/* ---- tamper evidence ------------------------------------------------------------------------- */

#define TAMPER_EVENTS 30
#define MARKER "tamper-marker-%02u-"
/* Copies of one event a data file may hold: LMDB writes a page anew at each commit that
 * changes it, and the old copies stay until their space is reused, which budgetd holds back
 * until LMDB's file is synced behind the write-ahead file (daemon/store.c). */
#define TAMPER_COPIES_MAX 256

/* Where grant `seq`'s bytes (event U + seq) are in a data file: every place its marker is (a file
 * that is not compacted may hold old copies of a page too). Returns how many. */
static size_t find_event(const uint8_t *file, size_t len, unsigned seq, size_t *starts,
                         size_t *ends, size_t max)
{
    char marker[32];
    static const uint8_t head[] = {0x87, 0xa3, 's', 'e', 'q'};
    static const uint8_t tail[] = {0xa4, 'h', 'a', 's', 'h', 0xc4, 0x20};
    size_t n = 0, mlen = (size_t)snprintf(marker, sizeof(marker), MARKER, seq);
    for (size_t at = 0; at + mlen <= len && n < max; at++) {
        if (memcmp(file + at, marker, mlen) != 0)
            continue;
        size_t start = at, end = at;
        while (start > 0 && memcmp(file + start, head, sizeof(head)) != 0)
            start--;
        while (end + sizeof(tail) + 32 <= len && memcmp(file + end, tail, sizeof(tail)) != 0)
            end++;
        /* A stale copy in a page freed since may be cut short, its tail another event's:
         * a whole copy holds its own seq, one head and one tail, within an event's size. */
        bool whole = start > 0 && end + sizeof(tail) + 32 <= len &&
                     end + sizeof(tail) + 32 - start <= 2048 &&
                     file[start + sizeof(head)] == U + seq;
        for (size_t k = start + 1; whole && k + sizeof(head) <= end; k++)
            whole = memcmp(file + k, head, sizeof(head)) != 0;
        if (!whole)
            continue;
        starts[n] = start;
        ends[n] = end + sizeof(tail) + 32;
        n++;
    }
    return n;
}

/* Runs `budgetctl audit verify --data DIR`; returns the seq it reports broken (0: intact). */
static uint64_t offline_first_bad(const char *dir)
{
    e2e_ctl_result r;
    uint64_t bad = 0;
    int code = ctl(&r, "audit", "verify", "--data", dir);
    if (code == 4)
        e2e_assert(sscanf(r.out, "chain broken at seq %" SCNu64, &bad) == 1, "%s", r.out);
    else
        e2e_assert(code == 0 && strncmp(r.out, "chain intact", 12) == 0, "exit %d: %s %s", code,
                   r.out, r.err);
    e2e_ctl_free(&r);
    return bad;
}

/* A data folder budgetd was killed on is refused offline until budgetd has run on it once:
 * its write-ahead file may hold acknowledged events that data.mdb lacks. */
Test(audit, an_offline_read_refuses_a_folder_left_uncleanly_until_budgetd_recovers_it)
{
    e2e_ctl_result r;
    e2e_daemon_kill(&bd);
    int code = ctl(&r, "audit", "verify", "--data", bd.data);
    e2e_assert(code == 3 && strstr(r.err, "did not stop cleanly") != NULL,
               "audit verify of a folder left uncleanly: exit %d: %s%s", code, r.out, r.err);
    e2e_ctl_free(&r);
    e2e_assert(e2e_daemon_restart(&bd) == 0, "budgetd did not start on the folder");
    stop_daemon(&bd);
    e2e_assert_int(offline_first_bad(bd.data), 0, "the folder once recovered verifies");
}

Test(audit, a_change_of_any_stored_byte_is_found_at_its_event)
{
    static const unsigned sample_events[] = {1, 9, 17, 30};
    char copy[128], data_file[256], title[64];
    e2e_ctl_result r;
    budget_client *c = e2e_client(&bd);
    for (unsigned seq = 1; seq <= TAMPER_EVENTS; seq++) {
        snprintf(title, sizeof(title), MARKER "Utökat trygghetsarbete", seq);
        char id[16];
        snprintf(id, sizeof(id), "t%u", seq);
        run_ok("grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2021", "--amount",
               "1 kr", "--title", title, "--reference", "KS § 241", "--id", id, "--intended");
    }
    budget_client_close(c);
    stop_daemon(&bd);

    /* A copy of the data folder, made offline. */
    au_temp_dir(copy, sizeof(copy));
    char from[256];
    snprintf(from, sizeof(from), "%s/data.mdb", bd.data);
    snprintf(data_file, sizeof(data_file), "%s/data.mdb", copy);
    e2e_assert(au_copy_file(from, data_file) == 0, "copy %s", from);
    e2e_assert_int(offline_first_bad(copy), 0, "the untouched copy verifies");

    size_t len = 0;
    uint8_t *file = (uint8_t *)au_read_file(data_file, &len);
    e2e_assert(file != NULL, "read the copy");
    unsigned flips = 0;
    for (size_t e = 0; e < sizeof(sample_events) / sizeof(sample_events[0]); e++) {
        unsigned seq = sample_events[e];
        size_t starts[TAMPER_COPIES_MAX], ends[TAMPER_COPIES_MAX];
        size_t found = find_event(file, len, seq, starts, ends, TAMPER_COPIES_MAX);
        e2e_assert(found >= 1, "event %u is in the file", seq);
        size_t size = ends[0] - starts[0];
        /* Only whole copies: a stale fragment on a free page is not the event. */
        size_t copies = 0;
        for (size_t i = 0; i < found; i++)
            if (ends[i] - starts[i] == size &&
                memcmp(file + starts[i], file + starts[0], size) == 0)
                starts[copies++] = starts[i];
        /* The first byte, the seq, the middle, the prev and hash headers and bytes, the end. */
        size_t offsets[] = {0,         4,         7,         size / 3,  size / 2, size - 71,
                            size - 60, size - 39, size - 33, size - 20, size - 1};
        for (size_t k = 0; k < sizeof(offsets) / sizeof(offsets[0]); k++) {
            for (size_t i = 0; i < copies; i++)
                file[starts[i] + offsets[k]] ^= 0x01;
            e2e_assert(au_write_file(data_file, file, len, 0640) == 0, "write the copy");
            uint64_t bad = offline_first_bad(copy);
            e2e_assert(bad == U + seq, "byte %zu of grant %u changed: verify says %" PRIu64,
                       offsets[k], seq, bad);
            for (size_t i = 0; i < copies; i++)
                file[starts[i] + offsets[k]] ^= 0x01;
            flips++;
        }
    }
    e2e_assert(au_write_file(data_file, file, len, 0640) == 0, "restore the copy");
    e2e_assert_int(offline_first_bad(copy), 0, "restored, the copy verifies again");

    /* A daemon on a copy whose event 17 has one letter of its title changed: the links
     * between events still follow, but its hash does not, so it does not start. */
    size_t starts[TAMPER_COPIES_MAX], ends[TAMPER_COPIES_MAX];
    size_t copies = find_event(file, len, 17, starts, ends, TAMPER_COPIES_MAX);
    char marker[32];
    size_t mlen = (size_t)snprintf(marker, sizeof(marker), MARKER, 17u);
    for (size_t i = 0; i < copies; i++) {
        uint8_t *m = memmem(file + starts[i], ends[i] - starts[i], marker, mlen);
        m[mlen + 1] ^= 0x01; /* "Utökat" becomes "Tuökat" */
    }
    e2e_assert(au_write_file(data_file, file, len, 0640) == 0, "write the copy");
    e2e_daemon on_copy;
    e2e_assert(au_daemon_on(&on_copy, copy) != 0, "budgetd refuses a log whose event 17 changed");
    size_t log_len = 0;
    char *log = au_read_file(on_copy.log, &log_len);
    e2e_assert(log && strstr(log, "replay stopped at seq 20: event 20 is not what its hash says"),
               "the log names it: %s", log ? log : "");
    free(log);
    e2e_daemon_cleanup(&on_copy);
    e2e_assert_int(offline_first_bad(copy), U + 17, "offline verify names event 20 (grant 17)");
    for (size_t i = 0; i < copies; i++) {
        uint8_t *m = memmem(file + starts[i], ends[i] - starts[i], marker, mlen);
        m[mlen + 1] ^= 0x01;
    }

    /* One whose event 9's prev is changed: start-up replay refuses it, naming event 9. */
    copies = find_event(file, len, 9, starts, ends, TAMPER_COPIES_MAX);
    for (size_t i = 0; i < copies; i++)
        file[ends[i] - 39 - 10] ^= 0x01;
    e2e_assert(au_write_file(data_file, file, len, 0640) == 0, "write the copy");
    e2e_assert(au_daemon_on(&on_copy, copy) != 0, "budgetd refuses a log that does not replay");
    log = au_read_file(on_copy.log, &log_len);
    e2e_assert(log && strstr(log, "event 12 does not follow event 11"), "the log names it: %s",
               log ? log : "");
    free(log);
    e2e_daemon_cleanup(&on_copy);
    e2e_assert_int(offline_first_bad(copy), U + 9, "offline verify names event 12 (grant 9)");
    /* An offline replay past the break refuses it; one before it is served. */
    e2e_assert_int(ctl(&r, "audit", "replay", "--as-of", "15", "--data", copy), 4,
                   "offline replay past the break");
    e2e_assert(strstr(r.err, "chain broken at seq 12") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "audit", "replay", "--as-of", "8", "--data", copy), 0,
                   "offline replay before the break");
    e2e_ctl_free(&r);
    fprintf(stderr, "tamper: %u single-byte changes in %zu events, each found at its event\n",
            flips, sizeof(sample_events) / sizeof(sample_events[0]));
    free(file);
    e2e_remove_tree(copy);
}

/* ---- a log changed in place does not start ----------------------------------------------------
 */

#define CHANGED_EVENTS 9
/* 1 000 000 kr in öre, as msgpack stores it (uint 32), and ten times that in the same width. */
static const uint8_t amount_stored[] = {0xce, 0x05, 0xf5, 0xe1, 0x00};
static const uint8_t amount_tenfold[] = {0xce, 0x3b, 0x9a, 0xca, 0x00};

/*
 * Runs budgetd on the data folder `data`, as an operator would start it, and waits for it to
 * exit: its exit status (-1 when it was still serving at the deadline and was killed), its
 * stderr in `err` (free it).
 */
static int start_on(const char *data, char **err)
{
    char sock[256];
    au_proc p;
    snprintf(sock, sizeof(sock), "%s/budgetd.sock", data);
    e2e_assert(au_proc_start(&p, AU_ARGV(BUDGETD_PATH, "--data", data, "--socket", sock, NULL)) ==
                   0,
               "run budgetd");
    int status = au_proc_wait(&p, E2E_START_TIMEOUT_MS);
    *err = strdup(p.err ? p.err : "");
    au_proc_free(&p);
    unlink(sock);
    return status;
}

/*
 * Someone with write access to a data folder patches one stored event in place: an amount
 * made ten times larger in the same width, or a prev that no longer names the event before.
 * Whether the event is the first, one in the middle or the last, budgetd refuses to start
 * (exit 1) and its log names the event and the command that checks the chain offline, which
 * names the same event. A daemon that started would serve the patched balances and sign
 * checkpoints over them.
 */
Test(audit, a_log_changed_in_place_does_not_start)
{
    static const unsigned changed[] = {1, (CHANGED_EVENTS + 1) / 2, CHANGED_EVENTS};
    char copy[128], data_file[256], title[64], id[16], want[64];

    for (unsigned seq = 1; seq <= CHANGED_EVENTS; seq++) {
        snprintf(title, sizeof(title), MARKER "Utökat trygghetsarbete", seq);
        snprintf(id, sizeof(id), "c%u", seq);
        run_ok("grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2021", "--amount",
               "1000000 kr", "--title", title, "--reference", "KS § 241", "--id", id, "--intended");
    }
    stop_daemon(&bd);
    char from[256];
    snprintf(from, sizeof(from), "%s/data.mdb", bd.data);
    size_t len = 0;
    uint8_t *honest = (uint8_t *)au_read_file(from, &len);
    e2e_assert(honest != NULL, "read %s", from);
    uint8_t *file = malloc(len);
    e2e_assert(file != NULL, "memory");

    au_temp_dir(copy, sizeof(copy));
    snprintf(data_file, sizeof(data_file), "%s/data.mdb", copy);
    e2e_assert(au_write_file(data_file, honest, len, 0640) == 0, "write the copy");
    e2e_assert_int(offline_first_bad(copy), 0, "the untouched copy verifies");

    for (size_t k = 0; k < sizeof(changed) / sizeof(changed[0]); k++) {
        for (int kind = 0; kind < 2; kind++) {
            unsigned seq = changed[k];
            const char *what = kind == 0 ? "amount" : "prev";
            size_t starts[TAMPER_COPIES_MAX], ends[TAMPER_COPIES_MAX];
            memcpy(file, honest, len);
            size_t copies = find_event(file, len, seq, starts, ends, TAMPER_COPIES_MAX);
            e2e_assert(copies >= 1, "event %u is in the file", seq);
            for (size_t i = 0; i < copies; i++) {
                if (kind == 0) {
                    uint8_t *a = memmem(file + starts[i], ends[i] - starts[i], amount_stored,
                                        sizeof(amount_stored));
                    e2e_assert(a != NULL, "event %u stores 1 000 000 kr", seq);
                    memcpy(a, amount_tenfold, sizeof(amount_tenfold));
                } else {
                    file[ends[i] - 39 - 10] ^= 0x01; /* a byte of prev */
                }
            }
            e2e_assert(au_write_file(data_file, file, len, 0640) == 0, "write the copy");

            char *err = NULL;
            int status = start_on(copy, &err);
            e2e_assert(status == 1, "budgetd on a log whose event %u's %s is changed: exit %d: %s",
                       seq, what, status, err);
            snprintf(want, sizeof(want), "replay stopped at seq %u:", U + seq);
            e2e_assert(strstr(err, want) != NULL, "the log does not name event %u (%s): %s", seq,
                       what, err);
            e2e_assert(strstr(err, "budgetctl audit verify --data") != NULL,
                       "the log does not say how to check the chain: %s", err);
            free(err);
            uint64_t bad = offline_first_bad(copy);
            e2e_assert(bad == U + seq, "grant %u's %s changed: offline verify says %" PRIu64, seq,
                       what, bad);
        }
    }
    e2e_assert(au_write_file(data_file, honest, len, 0640) == 0, "restore the copy");
    e2e_daemon on_copy;
    e2e_assert(au_daemon_on(&on_copy, copy) == 0, "budgetd serves the restored copy");
    stop_daemon(&on_copy);
    e2e_daemon_cleanup(&on_copy);
    free(file);
    free(honest);
    e2e_remove_tree(copy);
}

/* ---- checkpoints ----------------------------------------------------------------------------- */

/* The same writes on any daemon; `son_amount` makes a rewritten history. */
static void checkpoint_scenario(const e2e_daemon *d, const char *son_amount)
{
    e2e_ctl_result r;
    ctl_ok_on(d, &r, "grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2021",
              "--amount", "3 mkr", "--title", "Utökat trygghetsarbete", "--id", "ks21");
    e2e_ctl_free(&r);
    ctl_ok_on(d, &r, "allocate", "ks21", "--unit", "SON", "--amount", son_amount, "--purpose",
              "Områdesarbete", "--id", "son21");
    e2e_ctl_free(&r);
    decide_on(d, "approve", "--decision", E2E_DECISION, "son21", "--id", "d1");
    ctl_ok_on(d, &r, "avrop", "son21", "--amount", "400 tkr", "--id", "v1");
    e2e_ctl_free(&r);
}

static void write_text(const char *path, const char *text)
{
    e2e_assert(au_write_file(path, text, strlen(text), 0644) == 0, "write %s", path);
}

/* Replaces the first "<key> " line's value in a checkpoint text. */
static void alter_line(char *text, const char *key, size_t at)
{
    char *line = strstr(text, key);
    e2e_assert(line != NULL, "a %s line", key);
    char *v = line + strlen(key) + 1 + at;
    *v = *v == '5' ? '6' : '5';
}

Test(audit, a_checkpoint_holds_on_an_honest_log_and_fails_on_a_rewritten_one)
{
    char dir[128], file[256], altered[256], key_path[256];
    e2e_ctl_result r;
    au_temp_dir(dir, sizeof(dir));
    snprintf(file, sizeof(file), "%s/checkpoint.txt", dir);
    snprintf(altered, sizeof(altered), "%s/altered.txt", dir);
    checkpoint_scenario(&bd, "1 mkr");

    /* The key: made on the first start, 0600, its public half in the log. */
    struct stat st;
    snprintf(key_path, sizeof(key_path), "%s/checkpoint.key", bd.data);
    e2e_assert(stat(key_path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 64,
               "checkpoint.key is 64 bytes, mode 0600");

    ctl_ok(&r, "audit", "checkpoint");
    e2e_assert(strncmp(r.out, "budgetd checkpoint v1\nseq 7\nhash ", 33) == 0, "%s", r.out);
    write_text(file, r.out);
    char public_key[65] = "";
    sscanf(strstr(r.out, "public_key ") + 11, "%64s", public_key);
    size_t log_len = 0;
    char *log = au_read_file(bd.log, &log_len);
    e2e_assert(log && strstr(log, public_key), "the log shows the public key %s", public_key);
    free(log);
    e2e_ctl_free(&r);

    /* Honest: it holds now, and after more writes. */
    ctl_ok(&r, "audit", "check", file);
    e2e_assert(strncmp(r.out, "checkpoint holds: event 7", 25) == 0, "%s", r.out);
    e2e_ctl_free(&r);
    decide("approve", "--decision", E2E_DECISION, "v1");
    run_ok("avrop", "son21", "--amount", "100 tkr");
    ctl_ok(&r, "--json", "audit", "check", file, "--key", public_key);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    e2e_assert(j && e2e_json_int(j, "head", 0) == U + 6 && e2e_json_int(j, "checked", 0) == 3,
               "checked from 7 to the head 9: %s", r.out);
    e2e_json_free(j);
    e2e_ctl_free(&r);

    /* The file altered, or signed by a key not given: refused. */
    size_t len = 0;
    char *text = au_read_file(file, &len);
    alter_line(text, "\nhash", 5);
    write_text(altered, text);
    e2e_assert_int(ctl(&r, "audit", "check", altered), 4, "a changed hash");
    e2e_assert(strstr(r.err, "signature does not verify"), "%s", r.err);
    e2e_ctl_free(&r);
    free(text);
    text = au_read_file(file, &len);
    alter_line(text, "\nseq", 0);
    write_text(altered, text);
    e2e_assert_int(ctl(&r, "audit", "check", altered), 4, "a changed seq");
    e2e_ctl_free(&r);
    free(text);
    char other_key[65];
    memset(other_key, 'a', 64);
    other_key[64] = '\0';
    e2e_assert_int(ctl(&r, "audit", "check", file, "--key", other_key), 4, "another key");
    e2e_ctl_free(&r);
    write_text(altered, "budgetd checkpoint v1\nseq 7\n");
    e2e_assert_int(ctl(&r, "audit", "check", altered), 2, "a file that is not whole");
    e2e_ctl_free(&r);

    /* Offline, on the stopped daemon's folder. */
    stop_daemon(&bd);
    ctl_ok(&r, "audit", "check", file, "--data", bd.data);
    e2e_ctl_free(&r);

    /* A rewritten history: the same writes, SON's amount changed, its chain whole; even the
     * signing key copied over. Every other check passes; this one does not. */
    char forged[128], forged_data[256], forged_key[320];
    au_temp_dir(forged, sizeof(forged));
    snprintf(forged_data, sizeof(forged_data), "%s/data", forged);
    e2e_assert(mkdir(forged_data, 0750) == 0, "mkdir");
    snprintf(forged_key, sizeof(forged_key), "%s/checkpoint.key", forged_data);
    e2e_assert(au_copy_file(key_path, forged_key) == 0, "copy the key");
    e2e_daemon forger;
    e2e_assert(au_daemon_on(&forger, forged_data) == 0, "the forger's budgetd");
    e2e_register_units(&forger, NULL, "KS", "SON", "KFN", NULL);
    checkpoint_scenario(&forger, "1,2 mkr");
    ctl_on_argv(&forger, &r, 1, AU_ARGV("verify"));
    e2e_assert_int(r.exit_code, 0, "the rewritten chain is whole");
    e2e_ctl_free(&r);
    ctl_on_argv(&forger, &r, 3, AU_ARGV("audit", "check", file));
    e2e_assert_int(r.exit_code, 4, "the checkpoint against the rewritten log");
    e2e_assert(strstr(r.err, "history was rewritten"), "%s", r.err);
    e2e_ctl_free(&r);
    stop_daemon(&forger);
    e2e_assert_int(ctl(&r, "audit", "check", file, "--data", forged_data), 4, "offline too");
    e2e_assert(strstr(r.err, "history was rewritten"), "%s", r.err);
    e2e_ctl_free(&r);
    e2e_daemon_cleanup(&forger);
    e2e_remove_tree(forged);

    /* A log cut short of the checkpoint. */
    au_temp_dir(forged, sizeof(forged));
    e2e_assert(au_daemon_on(&forger, forged) == 0, "a short log's budgetd");
    e2e_register_units(&forger, NULL, "KS", NULL);
    ctl_ok_on(&forger, &r, "grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2021",
              "--amount", "3 mkr", "--title", "Utökat trygghetsarbete", "--id", "ks21");
    e2e_ctl_free(&r);
    ctl_on_argv(&forger, &r, 3, AU_ARGV("audit", "check", file));
    e2e_assert_int(r.exit_code, 4, "a log that ends before the checkpoint");
    e2e_assert(strstr(r.err, "history was cut"), "%s", r.err);
    e2e_ctl_free(&r);
    stop_daemon(&forger);
    e2e_daemon_cleanup(&forger);
    e2e_remove_tree(forged);
    e2e_remove_tree(dir);
}

/* ---- backup ---------------------------------------------------------------------------------- */

typedef struct {
    const e2e_daemon *d;
    uint32_t index;
    atomic_bool stop;
    atomic_uint_fast64_t written;
} load_writer;

static void *load_write(void *arg)
{
    load_writer *w = arg;
    budget_client *c = e2e_client(w->d);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "load%u", w->index);
    for (uint32_t i = 0; !atomic_load(&w->stop); i += 32) {
        au_grant_many(c, prefix, i, 32, 100);
        atomic_fetch_add(&w->written, 32);
    }
    budget_client_close(c);
    return NULL;
}

#define LOAD_WRITERS 2
#define BACKUP_PRELOAD 3000

static uint64_t written_by(load_writer *w)
{
    uint64_t n = 0;
    for (int i = 0; i < LOAD_WRITERS; i++)
        n += atomic_load(&w[i].written);
    return n;
}

Test(audit, a_backup_made_under_load_verifies_and_serves)
{
    char dir[128], copy[192], path[256];
    e2e_ctl_result r;
    load_writer w[LOAD_WRITERS];
    pthread_t t[LOAD_WRITERS];
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "pre", 0, BACKUP_PRELOAD, 100);

    for (int i = 0; i < LOAD_WRITERS; i++) {
        w[i].d = &bd;
        w[i].index = (uint32_t)i;
        atomic_init(&w[i].stop, false);
        atomic_init(&w[i].written, 0);
        cr_assert_eq(pthread_create(&t[i], NULL, load_write, &w[i]), 0);
    }
    e2e_assert(AU_WAIT(written_by(w) >= 256, 10000), "the clerks write");
    au_temp_dir(dir, sizeof(dir));
    snprintf(copy, sizeof(copy), "%s/copy", dir);
    ctl_ok(&r, "--json", "backup", copy);
    e2e_json *result = e2e_json_parse(r.out, r.out_len);
    e2e_assert(result != NULL, "backup's answer: %s", r.out);
    uint64_t head = (uint64_t)e2e_json_int(result, "head", 0);
    e2e_assert_str(e2e_json_str(result, "dir"), copy, "the folder");
    e2e_assert(head >= BACKUP_PRELOAD + 256, "the copy holds what was written: %s", r.out);
    e2e_json_free(result);
    e2e_ctl_free(&r);
    uint64_t after_backup = written_by(w);
    e2e_assert(AU_WAIT(written_by(w) >= after_backup + 256, 10000), "the clerks go on writing");
    for (int i = 0; i < LOAD_WRITERS; i++) {
        atomic_store(&w[i].stop, true);
        pthread_join(t[i], NULL); /* every write of theirs was answered ok */
    }
    uint64_t now = e2e_head(c);
    e2e_assert(now > head, "writes went on during and after the backup");

    /* The copy: data.mdb alone, it verifies offline, and a daemon on it serves it. */
    struct stat st;
    snprintf(path, sizeof(path), "%s/lock.mdb", copy);
    e2e_assert(stat(path, &st) != 0, "no lock.mdb left in the copy");
    e2e_assert(stat(copy, &st) == 0 && (st.st_mode & 0777) == 0750, "the copy's folder is 0750");
    ctl_ok(&r, "audit", "verify", "--data", copy);
    char expect[96];
    snprintf(expect, sizeof(expect), "chain intact: %" PRIu64 " events, head %" PRIu64 "\n", head,
             head);
    e2e_assert_str(r.out, expect, "offline verify of the copy");
    e2e_ctl_free(&r);

    char head_text[24];
    snprintf(head_text, sizeof(head_text), "%" PRIu64, head);
    e2e_ctl_result original;
    ctl_ok(&original, "--json", "balances", "--as-of", head_text);
    e2e_daemon on_copy;
    e2e_assert(au_daemon_on(&on_copy, copy) == 0, "budgetd starts on the copy");
    budget_client *cc = e2e_client(&on_copy);
    e2e_assert_int(e2e_head(cc), head, "the copy's head");
    ctl_ok_on(&on_copy, &r, "verify");
    e2e_ctl_free(&r);
    ctl_ok_on(&on_copy, &r, "--json", "balances");
    e2e_assert_str(r.out, original.out, "balances on the copy = balances as of its head");
    e2e_ctl_free(&r);
    e2e_ctl_free(&original);
    e2e_assert_int(au_grant_many(cc, "on-copy", 0, 1, 10), head + 1, "the copy takes writes");
    budget_client_close(cc);
    stop_daemon(&on_copy);
    e2e_daemon_cleanup(&on_copy);
    budget_client_close(c);
    stop_daemon(&bd);
    e2e_remove_tree(dir);
}

/* A backup request naming a folder, as clients sent it when the daemon wrote the copy: it must
 * be refused as bad_request, saying that the client writes backups now. */
static void old_style_backup(budget_client *c, const char *dir)
{
    e2e_buf args;
    budget_response r;
    e2e_buf_init(&args);
    msgpack_pack_map(&args.pk, 1);
    e2e_kv_str(&args, "dir", dir);
    e2e_call(c, "backup", &args, &r);
    e2e_assert(!r.ok && strcmp(r.code, "bad_request") == 0 && strstr(r.message, "client"),
               "a backup naming a folder: %s %s", r.ok ? "ok" : r.code, r.message);
    budget_response_free(&r);
    e2e_buf_destroy(&args);
}

/* A file of the live data folder ("data.mdb", "lock.mdb"): its inode, or 0 when it is gone. */
static ino_t live_inode(const char *name)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", bd.data, name);
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

#define live_data_inode() live_inode("data.mdb")

Test(audit, a_backup_request_naming_a_folder_writes_nothing_there)
{
    char dir[128], victim[192], link[192], path[320];
    struct stat st;
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "x", 0, 3, 10);
    au_temp_dir(dir, sizeof(dir));

    /* An attacker's folder holds a link to a folder the attacker may not write in. */
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    snprintf(link, sizeof(link), "%s/attacker", dir);
    e2e_assert(mkdir(victim, 0700) == 0 && symlink(victim, link) == 0, "the folders");
    snprintf(path, sizeof(path), "%s/copy", link);
    old_style_backup(c, path);
    snprintf(path, sizeof(path), "%s/copy", victim);
    e2e_assert(lstat(path, &st) != 0, "budgetd made nothing in the folder behind the link");
    /* A link in place of the new folder itself, to the live data folder. */
    e2e_assert(symlink(bd.data, path) == 0, "the link");
    ino_t live = live_data_inode();
    old_style_backup(c, path);
    e2e_assert_int(live_data_inode(), live, "the live data file is the same file");
    snprintf(path, sizeof(path), "%s/data.mdb.partial", bd.data);
    e2e_assert(lstat(path, &st) != 0, "nothing new in the live data folder");
    e2e_assert_int(e2e_head(c), U + 3, "budgetd still serves every event");
    budget_client_close(c);
    stop_daemon(&bd);
    e2e_remove_tree(dir);
}

/* The attack on a daemon that wrote the copy into a folder the client named: right after the
 * daemon makes the folder, it is moved away and a link to the live data folder put in its
 * place, so the daemon's copy, and its clean-up after the copy fails, land in the live data. */
typedef struct {
    char dir[256], moved[272];
    const char *target;
    atomic_bool stop;
    atomic_uint swaps;
} folder_swapper;

static void *swap_folder(void *arg)
{
    folder_swapper *w = arg;
    while (!atomic_load(&w->stop)) {
        if (rename(w->dir, w->moved) == 0 && symlink(w->target, w->dir) == 0)
            atomic_fetch_add(&w->swaps, 1);
    }
    return NULL;
}

#define SWAP_TRIES 32

Test(audit, a_backup_raced_with_a_link_never_touches_the_live_data)
{
    char dir[128];
    struct stat st;
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "x", 0, 20, 10);
    au_temp_dir(dir, sizeof(dir));
    ino_t live = live_data_inode(), live_lock = live_inode("lock.mdb");
    e2e_assert(live != 0 && live_lock != 0, "the live data files are there");

    for (int i = 0; i < SWAP_TRIES; i++) {
        folder_swapper w;
        pthread_t t;
        snprintf(w.dir, sizeof(w.dir), "%s/copy%d", dir, i);
        snprintf(w.moved, sizeof(w.moved), "%s/moved%d", dir, i);
        w.target = bd.data;
        atomic_init(&w.stop, false);
        atomic_init(&w.swaps, 0);
        cr_assert_eq(pthread_create(&t, NULL, swap_folder, &w), 0);
        e2e_buf args;
        budget_response r;
        e2e_buf_init(&args);
        msgpack_pack_map(&args.pk, 1);
        e2e_kv_str(&args, "dir", w.dir);
        e2e_call(c, "backup", &args, &r);
        atomic_store(&w.stop, true);
        pthread_join(t, NULL);
        e2e_assert(live_data_inode() == live,
                   "try %d: the live data.mdb was removed or replaced (%u swaps)", i,
                   atomic_load(&w.swaps));
        e2e_assert(live_inode("lock.mdb") == live_lock,
                   "try %d: the live lock.mdb was removed or replaced (%u swaps)", i,
                   atomic_load(&w.swaps));
        e2e_assert(lstat(w.dir, &st) != 0 && lstat(w.moved, &st) != 0,
                   "try %d: budgetd made no folder (%u swaps)", i, atomic_load(&w.swaps));
        e2e_assert(!r.ok && strcmp(r.code, "bad_request") == 0,
                   "try %d: a backup naming a folder was answered %s %s", i, r.ok ? "ok" : r.code,
                   r.message);
        budget_response_free(&r);
        e2e_buf_destroy(&args);
    }
    e2e_assert_int(e2e_head(c), U + 20, "budgetd still serves every event");
    e2e_assert_int(au_grant_many(c, "after", 0, 1, 10), U + 21, "and takes writes");
    budget_client_close(c);
    stop_daemon(&bd);
    /* The data folder holds the whole ledger after a restart. */
    e2e_assert(e2e_daemon_restart(&bd) == 0, "budgetd starts again on its data");
    c = e2e_client(&bd);
    e2e_assert_int(e2e_head(c), U + 21, "every event is still there");
    budget_client_close(c);
    stop_daemon(&bd);
    e2e_remove_tree(dir);
}

Test(audit, budgetctl_backup_refuses_an_existing_folder_and_leaves_it_untouched)
{
    char dir[128], path[256];
    e2e_ctl_result r;
    struct stat st;
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "x", 0, 3, 10);
    au_temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/keep", dir);
    FILE *f = fopen(path, "w");
    e2e_assert(f != NULL && fputs("mine\n", f) >= 0 && fclose(f) == 0, "a file of the user's");
    e2e_assert(chmod(dir, 0700) == 0 && stat(dir, &st) == 0, "the folder");
    struct timespec before = st.st_mtim;

    e2e_assert_int(ctl(&r, "backup", dir), 1, "budgetctl backup into an existing folder");
    e2e_assert(strstr(r.err, "exists"), "%s", r.err);
    e2e_ctl_free(&r);
    e2e_assert(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700 &&
                   st.st_mtim.tv_sec == before.tv_sec && st.st_mtim.tv_nsec == before.tv_nsec,
               "the folder is untouched");
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    e2e_assert(stat(path, &st) != 0, "no data file was written into it");
    snprintf(path, sizeof(path), "%s/missing/copy", dir);
    e2e_assert_int(ctl(&r, "backup", path), 1, "budgetctl backup under a missing folder");
    e2e_ctl_free(&r);
    budget_client_close(c);
    stop_daemon(&bd);
    e2e_remove_tree(dir);
}

/* The raw stream: chunk frames with the backup's id, then an answer whose size and checksum
 * are those of the bytes sent, and a copy that holds the event it names. */
Test(audit, a_backup_streams_chunks_then_their_size_and_checksum)
{
    char dir[128], path[256];
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "x", 0, 2000, 10);
    au_temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    FILE *f = fopen(path, "w");
    e2e_assert(f != NULL, "the copy's file");

    int64_t id = budget_client_send(c, "backup", NULL, 0);
    e2e_assert(id > 0, "sent");
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, 32);
    uint64_t bytes = 0, chunks = 0;
    budget_response r;
    for (;;) {
        e2e_assert_int(budget_client_recv(c, &r), 0, "a frame of the backup");
        e2e_assert(r.ok && r.id == (uint64_t)id, "%s %s", r.code, r.message);
        const msgpack_object *chunk = budget_map_get(&r.unpacked.data, "chunk");
        if (chunk == NULL)
            break;
        e2e_assert(chunk->type == MSGPACK_OBJECT_BIN && chunk->via.bin.size > 0 &&
                       chunk->via.bin.size <= 256 * 1024,
                   "a chunk is bytes, at most 256 KiB");
        fwrite(chunk->via.bin.ptr, 1, chunk->via.bin.size, f);
        crypto_generichash_update(&state, (const uint8_t *)chunk->via.bin.ptr, chunk->via.bin.size);
        bytes += chunk->via.bin.size;
        chunks++;
        budget_response_free(&r);
    }
    fclose(f);
    uint8_t sum[32];
    crypto_generichash_final(&state, sum, sizeof(sum));
    e2e_assert(chunks > 1, "more than one chunk (%" PRIu64 " bytes)", bytes);
    e2e_assert_int(e2e_map_uint(&r.result, "bytes"), bytes, "bytes = what was sent");
    e2e_assert_int(e2e_map_uint(&r.result, "seq"), U + 2000, "seq = the committed head");
    const msgpack_object *checksum = budget_map_get(&r.result, "checksum");
    e2e_assert(checksum && checksum->type == MSGPACK_OBJECT_BIN && checksum->via.bin.size == 32 &&
                   memcmp(checksum->via.bin.ptr, sum, 32) == 0,
               "checksum = BLAKE2b-256 of what was sent");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), U + 2000, "the connection goes on after a backup");
    e2e_ctl_result v;
    ctl_ok(&v, "audit", "verify", "--data", dir);
    e2e_assert_str(v.out, "chain intact: 2003 events, head 2003\n", "the streamed copy verifies");
    e2e_ctl_free(&v);
    budget_client_close(c);
    stop_daemon(&bd);
    e2e_remove_tree(dir);
}

/* A client that asks for a backup and reads nothing: the copy holds the store's gate while it
 * waits for the client, so budgetd gives the backup up once a chunk has waited unread past
 * the frame deadline and closes that connection. Writes go on meanwhile, and a backup after
 * it streams in full. */
Test(audit, a_backup_left_unread_is_given_up_at_the_frame_deadline)
{
    char dir[128], copy[192];
    e2e_ctl_result r;
    stop_daemon(&bd);
    const char *extra[] = {"--frame-timeout", "1", NULL};
    e2e_assert(e2e_daemon_restart_with(&bd, extra) == 0, "budgetd starts with --frame-timeout 1");
    budget_client *c = e2e_client(&bd);
    for (uint32_t i = 0; i < 20000; i += 500)
        au_grant_many(c, "big", i, 500, 200);

    int fd = e2e_raw_connect(bd.socket);
    int size = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    e2e_buf b;
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 7);
    e2e_kv_str(&b, "op", "backup");
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "sent");
    e2e_buf_destroy(&b);
    /* While it reads nothing, clerks write. */
    e2e_assert_int(au_grant_many(c, "during", 0, 10, 10), U + 20010, "writes go on");
    /* Reading nothing, the client sees the daemon close its end (POLLRDHUP). */
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    int64_t deadline = e2e_now_ms() + 10000 * e2e_slow();
    while (poll(&p, 1, 100) == 0 && e2e_now_ms() < deadline)
        ;
    e2e_assert(p.revents & (POLLRDHUP | POLLHUP),
               "budgetd closes the connection that left its backup unread");
    close(fd);
    au_temp_dir(dir, sizeof(dir));
    /* The backup given up ends on its worker thread after the close: one asked for at once may
     * still be told that a backup is running (and to retry), and then asks again. */
    int code, tries = 0;
    int64_t until = e2e_now_ms() + 10000 * e2e_slow();
    for (;;) {
        snprintf(copy, sizeof(copy), "%s/copy-%d", dir, tries++);
        const char *argv[] = {"backup", copy};
        code = ctl_on_argv(&bd, &r, 2, argv);
        if (code == 0 || strstr(r.err, "a backup is running") == NULL || e2e_now_ms() > until)
            break;
        e2e_ctl_free(&r);
        usleep(20000);
    }
    e2e_assert(code == 0, "budgetctl backup exited %d: %s", code, r.err);
    e2e_assert(strstr(r.out, "events up to seq 20013 "), "the next backup is whole: %s", r.out);
    e2e_ctl_free(&r);
    budget_client_close(c);
    stop_daemon(&bd);
    e2e_remove_tree(dir);
}

/* ---- replay ---------------------------------------------------------------------------------- */

Test(audit, replay_as_of_a_seq_or_a_day_online_and_offline)
{
    char dir[128], copy[192], today[16], yesterday[16];
    e2e_ctl_result a, b;
    history_scenario();
    au_temp_dir(dir, sizeof(dir));
    snprintf(copy, sizeof(copy), "%s/copy", dir);
    run_ok("backup", copy);
    /* "today" is the day of the last event, "yesterday" the day before the first. */
    budget_client *c = e2e_client(&bd);
    swedish_day(event_ts(c, U + 13), 0, today);
    swedish_day(event_ts(c, 1), -1, yesterday);
    budget_client_close(c);

    static const char *const seqs[] = {"6", "10", "15", "16"}; /* U + 3, 7, 12, 13 */
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        ctl_ok(&a, "balances", "--as-of", seqs[i]);
        ctl_ok(&b, "audit", "replay", "--as-of", seqs[i]);
        e2e_assert_str(b.out, a.out, "audit replay = balances as of the same seq");
        e2e_ctl_free(&b);
        ctl_ok(&b, "audit", "replay", "--as-of", seqs[i], "--data", copy);
        e2e_assert_str(b.out, a.out, "offline replay on the backup = balances online");
        e2e_ctl_free(&b);
        e2e_ctl_free(&a);
        ctl_ok(&a, "--json", "balances", "--as-of", seqs[i]);
        ctl_ok(&b, "--json", "audit", "replay", "--as-of", seqs[i], "--data", copy);
        e2e_assert_str(b.out, a.out, "the same as JSON");
        e2e_ctl_free(&b);
        e2e_ctl_free(&a);
    }
    /* The end of today holds everything; the end of yesterday nothing. */
    ctl_ok(&a, "audit", "replay", "--as-of", today);
    e2e_assert(strncmp(a.out, "As of seq 16\n", 13) == 0, "%s", a.out);
    ctl_ok(&b, "audit", "replay", "--as-of", today, "--data", copy);
    e2e_assert_str(b.out, a.out, "offline, the same");
    e2e_ctl_free(&a);
    e2e_ctl_free(&b);
    e2e_assert_int(ctl(&a, "audit", "replay", "--as-of", yesterday), 1, "before the first event");
    e2e_ctl_free(&a);
    e2e_assert_int(ctl(&a, "audit", "replay", "--as-of", yesterday, "--data", copy), 1,
                   "offline, before the first event");
    e2e_ctl_free(&a);
    e2e_assert_int(ctl(&a, "audit", "replay", "--as-of", "99", "--data", copy), 1, "past the head");
    e2e_ctl_free(&a);
    e2e_assert_int(ctl(&a, "audit", "replay", "--as-of", "0"), 2, "seq 0");
    e2e_ctl_free(&a);
    e2e_assert_int(ctl(&a, "audit", "replay"), 2, "no --as-of");
    e2e_ctl_free(&a);
    e2e_assert_int(ctl(&a, "audit", "replay", "--as-of", "3", "--data", dir), 3, "no store");
    e2e_ctl_free(&a);
    stop_daemon(&bd);
    e2e_remove_tree(dir);
}

/* ---- export ---------------------------------------------------------------------------------- */

static size_t count_of(const char *text, const char *what)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, what)) != NULL; p += strlen(what))
        n++;
    return n;
}

Test(audit, export_writes_csv_for_excel_and_json_lines)
{
    e2e_ctl_result r;
    run_ok("grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2021", "--amount",
           "3 mkr", "--title", "Utökat; \"trygghets\",arbete", "--id", "ks21");
    run_ok("allocate", "ks21", "--unit", "SON", "--amount", "1 500 000,50 kr", "--purpose",
           "=HYPERLINK(\"x\")", "--id", "son21");
    run_ok("adjust", "--decision", E2E_DECISION, "ks21", "--delta", "-200 tkr", "--reason",
           "Omprioritering", "--id", "j1");

    ctl_ok(&r, "export", "events");
    e2e_assert(strncmp(r.out, "seq,time_utc,ts_ms,actor_uid,actor_name,type,id,", 48) == 0, "%s",
               r.out);
    e2e_assert_int(count_of(r.out, "\r\n"), 1 + U + 3, "a header and U + 3 rows, CRLF");
    e2e_assert(strstr(r.out, ",3000000.00,"), "kronor with a decimal point: %s", r.out);
    e2e_assert(strstr(r.out, ",1500000.50,"), "öre kept: %s", r.out);
    e2e_assert(strstr(r.out, ",-200000.00,"), "a negative delta: %s", r.out);
    e2e_assert(strstr(r.out, ",\"Utökat; \"\"trygghets\"\",arbete\","), "quoted: %s", r.out);
    e2e_assert(strstr(r.out, ",\"'=HYPERLINK(\"\"x\"\")\","), "no formula: %s", r.out);
    e2e_ctl_free(&r);

    ctl_ok(&r, "export", "events", "--swedish", "--bom");
    e2e_assert(memcmp(r.out, "\xef\xbb\xbfseq;tid_utc;ts_ms;akt\xc3\xb6r_uid;", 32) == 0,
               "BOM, then ; and Swedish column names: %s", r.out);
    e2e_assert(strstr(r.out, ";3000000,00;") && strstr(r.out, ";1500000,50;") &&
                   strstr(r.out, ";-200000,00;"),
               "decimal comma: %s", r.out);
    e2e_assert(strstr(r.out, ";\"Utökat; \"\"trygghets\"\",arbete\";"), "quoted: %s", r.out);
    e2e_ctl_free(&r);

    ctl_ok(&r, "export", "events", "--format", "jsonl");
    e2e_assert_int(count_of(r.out, "\n"), U + 3, "one line per event");
    const char *second = r.out; /* the line of the second event after the registrations */
    for (int line = 0; line <= U; line++)
        second = strchr(second, '\n') + 1;
    e2e_json *j = e2e_json_parse(second, (size_t)(strchr(second, '\n') - second));
    e2e_assert(j && e2e_json_int(e2e_json_get(j, "data"), "amount", 0) == 150000050,
               "amounts in öre: %s", second);
    e2e_json_free(j);
    e2e_ctl_free(&r);

    ctl_ok(&r, "export", "balances", "--swedish");
    e2e_assert(strncmp(r.out, "slag;id;enhet;\xc3\xa5r;ram;status;rubrik;", 36) == 0, "%s", r.out);
    e2e_assert(strstr(r.out, "\r\nframe;ks21;KS;2021;;;") && strstr(r.out, ";2800000,00;"),
               "the frame after its adjustment: %s", r.out);
    e2e_assert(strstr(r.out, "\r\nallocation;son21;SON;2021;ks21;pending;"), "%s", r.out);
    e2e_assert(strstr(r.out, "\r\nunit;;SON;2021;"), "%s", r.out);
    e2e_ctl_free(&r);
    ctl_ok(&r, "export", "balances", "--format", "jsonl", "--as-of", "4"); /* U + 1 */
    e2e_assert(strncmp(r.out, "{\"kind\":\"frame\",\"id\":\"ks21\"", 27) == 0, "%s", r.out);
    e2e_assert(strstr(r.out, "\"granted\":300000000"), "as of seq 1, in öre: %s", r.out);
    e2e_assert_int(count_of(r.out, "\n"), 2, "the frame and KS's year");
    e2e_ctl_free(&r);

    e2e_assert_int(ctl(&r, "export", "ledger"), 2, "an unknown WHAT");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "export", "events", "--format", "xml"), 2, "an unknown format");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "export", "events", "--format", "jsonl", "--bom"), 2, "a BOM in JSON");
    e2e_ctl_free(&r);
    stop_daemon(&bd);
}

/* ---- a ledger too large for one answer -------------------------------------------------- */

/* Frames with 256-byte titles (about 360 bytes each in an answer): together over the 1 MiB
 * frame limit, as a single `balances` answer would hold them. Proposals of 1 öre to as many
 * new units of 32 characters, with 256-byte purposes: the units and allocations lists also
 * take more than one page each. */
#define BIG_FRAMES 3000u
#define BIG_UNITS 2000u

/* `n` proposals of 1 öre from frame `frame`, each to a unit of its own, pipelined. */
static void propose_to_new_units(budget_client *c, const char *frame, uint32_t n)
{
    char id[BUDGET_ID_BYTES_MAX + 1], unit[BUDGET_UNIT_BYTES_MAX + 1];
    char purpose[BUDGET_TEXT_BYTES_MAX + 1];
    e2e_buf b;
    memset(purpose, 'p', BUDGET_TEXT_BYTES_MAX);
    purpose[BUDGET_TEXT_BYTES_MAX] = '\0';
    e2e_buf_init(&b);
    for (uint32_t done = 0; done < n;) {
        uint32_t batch = n - done < AU_PIPELINE ? n - done : AU_PIPELINE;
        for (uint32_t i = 0; i < batch; i++) {
            snprintf(id, sizeof(id), "p-%u", done + i);
            snprintf(unit, sizeof(unit), "U%031u", done + i);
            /* A unit is registered before it is named. */
            e2e_buf_clear(&b);
            msgpack_pack_map(&b.pk, 4);
            e2e_kv_str(&b, "id", unit);
            e2e_kv_str(&b, "unit", unit);
            e2e_kv_str(&b, "name", unit);
            e2e_kv_str(&b, "kind", "verksamhet");
            int64_t sent = budget_client_send(c, "unit.register", b.sb.data, b.sb.size);
            e2e_assert(sent > 0, "unit.register %s could not be sent (%lld)", unit,
                       (long long)sent);
            e2e_buf_clear(&b);
            msgpack_pack_map(&b.pk, 5);
            e2e_kv_str(&b, "id", id);
            e2e_kv_str(&b, "frame", frame);
            e2e_kv_str(&b, "unit", unit);
            e2e_kv_int(&b, "amount", 1);
            e2e_kv_str(&b, "purpose", purpose);
            int64_t rc = budget_client_send(c, "allocation.propose", b.sb.data, b.sb.size);
            e2e_assert(rc > 0, "allocation.propose %s could not be sent (%lld)", id, (long long)rc);
        }
        for (uint32_t i = 0; i < 2 * batch; i++) {
            budget_response r;
            e2e_assert(budget_client_recv(c, &r) == 0, "no answer to a proposal");
            e2e_assert(r.ok, "unit.register or allocation.propose refused: %s: %s", r.code,
                       r.message);
            budget_response_free(&r);
        }
        done += batch;
    }
    e2e_buf_destroy(&b);
}

/* Frames big-0.. and "pool" (KS), allocations p-0.. from pool, units U0..01 and KS. */
static void make_big_ledger(void)
{
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    e2e_buf_init(&b);
    au_grant_many(c, "big", 0, BIG_FRAMES, BUDGET_TEXT_BYTES_MAX);
    msgpack_pack_map(&b.pk, 5 + E2E_DECISION_PAIRS);
    e2e_kv_str(&b, "id", "pool");
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2030);
    e2e_kv_int(&b, "amount", 1000000);
    e2e_kv_str(&b, "title", "Pool");
    e2e_kv_decision(&b);
    e2e_write_ok(c, "frame.grant", &b);
    propose_to_new_units(c, "pool", BIG_UNITS);
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

/* Marks the number after `prefix` in `text` (of `len` bytes) in `seen` (of `n`); false when
 * it is not such a name, is out of range, or was seen before. */
static bool mark_once(const char *text, size_t len, const char *prefix, bool *seen, uint32_t n)
{
    char buf[BUDGET_TEXT_BYTES_MAX + 1], *end;
    size_t plen = strlen(prefix);
    if (len <= plen || len >= sizeof(buf) || memcmp(text, prefix, plen) != 0)
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    unsigned long i = strtoul(buf + plen, &end, 10);
    if (*end != '\0' || i >= n || seen[i])
        return false;
    seen[i] = true;
    return true;
}

/* Every item of one list of a page, each named once: `key` of each map is PREFIX<i>, or one
 * of the extra names `extra` (counted in *extras). */
static void mark_list(const msgpack_object *result, const char *list, const char *key,
                      const char *prefix, bool *seen, uint32_t n, const char *extra,
                      uint32_t *extras)
{
    const msgpack_object *items = budget_map_get(result, list);
    e2e_assert(items != NULL && items->type == MSGPACK_OBJECT_ARRAY, "no %s in the answer", list);
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        const msgpack_object *name = budget_map_get(&items->via.array.ptr[i], key);
        e2e_assert(name != NULL && name->type == MSGPACK_OBJECT_STR, "a %s without %s", list, key);
        if (name->via.str.size == strlen(extra) &&
            memcmp(name->via.str.ptr, extra, name->via.str.size) == 0) {
            (*extras)++;
            continue;
        }
        e2e_assert(mark_once(name->via.str.ptr, name->via.str.size, prefix, seen, n),
                   "%s: %.*s is not expected, or came twice", list, (int)name->via.str.size,
                   name->via.str.ptr);
    }
}

static uint32_t count_true(const bool *seen, uint32_t n)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        k += seen[i];
    return k;
}

/*
 * `balances` over the protocol: every answer fits in a frame, and following "next" until
 * "more" is false lists every frame, allocation and unit-year exactly once. Returns the pages.
 */
static unsigned balances_by_pages(void)
{
    static bool frames[BIG_FRAMES], allocations[BIG_UNITS], units[BIG_UNITS];
    uint32_t pools = 0, ks = 0, none = 0;
    uint64_t as_of = 0, offsets[4] = {0, 0, 0, 0};
    static const char *const offset_args[4] = {"frames_offset", "offset", "units_offset", NULL};
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    unsigned pages = 0;
    bool more = true;

    memset(frames, 0, sizeof(frames));
    memset(allocations, 0, sizeof(allocations));
    memset(units, 0, sizeof(units));
    e2e_buf_init(&b);
    while (more) {
        budget_response r;
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, pages == 0 ? 0 : 4);
        if (pages > 0) {
            e2e_kv_uint(&b, "as_of", as_of);
            for (int k = 0; offset_args[k] != NULL; k++)
                e2e_kv_uint(&b, offset_args[k], offsets[k]);
        }
        e2e_call(c, "balances", &b, &r);
        e2e_assert(r.ok, "balances, page %u: %s: %s", pages + 1, r.code, r.message);
        if (pages == 0)
            as_of = e2e_map_uint(&r.result, "as_of");
        e2e_assert_int(e2e_map_uint(&r.result, "as_of"), as_of, "as_of of every page");
        mark_list(&r.result, "frames", "id", "big-", frames, BIG_FRAMES, "pool", &pools);
        mark_list(&r.result, "allocations", "id", "p-", allocations, BIG_UNITS, "", &none);
        mark_list(&r.result, "units", "unit", "U", units, BIG_UNITS, "KS", &ks);
        const msgpack_object *m = budget_map_get(&r.result, "more");
        const msgpack_object *next = budget_map_get(&r.result, "next");
        e2e_assert(m != NULL && m->type == MSGPACK_OBJECT_BOOLEAN, "more");
        e2e_assert(next != NULL && next->type == MSGPACK_OBJECT_MAP, "next");
        more = m->via.boolean;
        for (int k = 0; offset_args[k] != NULL; k++)
            offsets[k] = e2e_map_uint(next, offset_args[k]);
        budget_response_free(&r);
        pages++;
        e2e_assert(pages < 100, "balances does not end");
    }
    e2e_buf_destroy(&b);
    budget_client_close(c);
    e2e_assert_int(count_true(frames, BIG_FRAMES), BIG_FRAMES, "frames listed");
    e2e_assert_int(pools, 1, "the pool frame listed");
    e2e_assert_int(count_true(allocations, BIG_UNITS), BIG_UNITS, "allocations listed");
    e2e_assert_int(count_true(units, BIG_UNITS), BIG_UNITS, "new units listed");
    e2e_assert_int(ks, 1, "KS's year listed");
    return pages;
}

/* Lines of `text` that start with `start`. */
static size_t lines_starting(const char *text, const char *start)
{
    size_t n = 0;
    for (const char *line = text; line && *line;) {
        n += strncmp(line, start, strlen(start)) == 0;
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return n;
}

/*
 * A clerk cannot make `balances` fail for everyone by filling the ledger: frames and new
 * units past what one answer holds are paged like allocations. `balances` (every page under
 * the frame limit, every item once), `budgetctl balances` (tables and --json) and `budgetctl
 * export balances` all show every frame, allocation and unit-year.
 */
Test(audit, balances_and_export_page_a_ledger_too_large_for_one_answer)
{
    int64_t t0 = e2e_now_ms();
    make_big_ledger();
    int64_t t1 = e2e_now_ms();
    unsigned pages = balances_by_pages();
    e2e_assert(pages >= 3, "%u pages: the frames alone are over 1 MiB", pages);

    e2e_ctl_result r;
    ctl_ok(&r, "balances");
    e2e_assert_int(lines_starting(r.out, "big-"), BIG_FRAMES, "frame rows of budgetctl balances");
    e2e_assert_int(lines_starting(r.out, "p-"), BIG_UNITS, "allocation rows");
    e2e_assert_int(lines_starting(r.out, "U0"), BIG_UNITS, "unit rows");
    e2e_ctl_free(&r);
    /* --json: one object, every page joined (counted in the text: a big JSON parses slowly
     * here). */
    ctl_ok(&r, "--json", "balances", "--year", "2030");
    e2e_assert_int(count_of(r.out, "\n"), 1, "one line of JSON");
    e2e_assert_int(count_of(r.out, "{\"id\":\"big-"), BIG_FRAMES, "frames in the JSON");
    e2e_assert_int(count_of(r.out, "{\"id\":\"p-"), BIG_UNITS, "allocations in the JSON");
    e2e_assert_int(count_of(r.out, "{\"unit\":\""), BIG_UNITS + 1, "units in the JSON");
    e2e_assert(strstr(r.out, ",\"more\":false}") && !strstr(r.out, "\"next\""),
               "more is false once every page is joined, and no next");
    e2e_ctl_free(&r);

    char dir[128], path[192];
    au_temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/balances.csv", dir);
    ctl_ok(&r, "export", "balances", "--output", path);
    e2e_ctl_free(&r);
    size_t len;
    char *csv = au_read_file(path, &len);
    e2e_assert(csv != NULL, "no export in %s", path);
    e2e_assert_int(lines_starting(csv, "frame,"), BIG_FRAMES + 1, "frame rows exported");
    e2e_assert_int(lines_starting(csv, "allocation,"), BIG_UNITS, "allocation rows exported");
    e2e_assert_int(lines_starting(csv, "unit,"), BIG_UNITS + 1, "unit rows exported");
    /* Each kind's rows together: frames, then allocations, then units. */
    const char *last_frame = csv, *first_allocation = strstr(csv, "\r\nallocation,");
    for (const char *p = csv; (p = strstr(p, "\r\nframe,")) != NULL; p++)
        last_frame = p;
    e2e_assert(first_allocation && last_frame < first_allocation &&
                   strstr(first_allocation, "\r\nframe,") == NULL &&
                   strstr(first_allocation, "\r\nunit,") > first_allocation &&
                   strstr(strstr(first_allocation, "\r\nunit,"), "\r\nallocation,") == NULL,
               "rows are not grouped by kind");
    free(csv);
    cr_log_info("%u frames and %u units written in %lld ms; balances in %u pages, checked in "
                "%lld ms",
                BIG_FRAMES, BIG_UNITS, (long long)(t1 - t0), pages, (long long)(e2e_now_ms() - t1));
    e2e_remove_tree(dir);
    stop_daemon(&bd);
}

/* The names in `dir` (not . and ..), joined by spaces, into `out`. */
static void dir_names(const char *dir, char *out, size_t size)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls -A %s", dir);
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    e2e_assert(p != NULL, "ls");
    char line[256];
    while (fgets(line, sizeof(line), p)) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? " " : "", line);
    }
    pclose(p);
}

/* True when `dir` holds a name that starts with `prefix`. */
static bool dir_has(const char *dir, const char *prefix)
{
    char names[1024];
    dir_names(dir, names, sizeof(names));
    return strstr(names, prefix) != NULL;
}

/* True when process `pid` holds a connected UNIX socket: one of its fds is a socket that
 * /proc/net/unix lists as connected (St 03). */
static bool holds_connected_socket(pid_t pid)
{
    char dir[64];
    unsigned long inodes[16];
    size_t n = 0;
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (d == NULL)
        return false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < sizeof(inodes) / sizeof(inodes[0])) {
        char link[384], target[64];
        snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (sscanf(target, "socket:[%lu]", &inodes[n]) == 1)
            n++;
    }
    closedir(d);
    FILE *f = n > 0 ? fopen("/proc/net/unix", "r") : NULL;
    if (f == NULL)
        return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        unsigned state;
        unsigned long inode;
        if (sscanf(line, "%*s %*s %*s %*s %*s %x %lu", &state, &inode) != 2 || state != 3)
            continue;
        for (size_t i = 0; i < n; i++)
            found = found || inodes[i] == inode;
    }
    fclose(f);
    return found;
}

/* Starts `budgetctl export events --output path` while the daemon is stopped (SIGSTOP), and
 * waits until it has made its temporary file and is waiting for the first answer: connected
 * (budgetctl makes the file first, and a daemon killed before the connection is refused it). */
static void start_stuck_export(au_proc *p, const char *dir, const char *path)
{
    e2e_assert(kill(bd.pid, SIGSTOP) == 0, "SIGSTOP");
    const char *const argv[] = {BUDGETCTL_PATH, "--socket", bd.socket, "export",
                                "events",       "--output", path,      NULL};
    e2e_assert(au_proc_start(p, argv) == 0, "budgetctl export started");
    e2e_assert(AU_WAIT(dir_has(dir, "events.csv.tmp-"), 10000 * e2e_slow()),
               "no temporary file beside %s", path);
    e2e_assert(AU_WAIT(holds_connected_socket(p->pid), 10000 * e2e_slow()),
               "budgetctl export did not connect");
}

/*
 * An export to a file is whole or absent: a complete one replaces the file; one that fails
 * midway (the daemon dies while budgetctl waits for it) or is interrupted (SIGINT) leaves the
 * file as it was and no temporary file beside it.
 */
Test(audit, an_export_that_fails_leaves_no_file)
{
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "x", 0, 50, 20);
    budget_client_close(c);
    char dir[128], path[192], names[1024];
    au_temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/events.csv", dir);
    static const char old[] = "the export of before\n";
    e2e_assert(au_write_file(path, old, strlen(old), 0640) == 0, "write %s", path);

    /* A complete export replaces the file with what standard output would have shown. */
    e2e_ctl_result r;
    ctl_ok(&r, "export", "events");
    char *expected = strdup(r.out);
    e2e_ctl_free(&r);
    ctl_ok(&r, "export", "events", "--output", path);
    e2e_assert_int(r.out_len, 0, "nothing on standard output with --output");
    e2e_ctl_free(&r);
    size_t len;
    char *got = au_read_file(path, &len);
    e2e_assert(got != NULL && strcmp(got, expected) == 0, "the file is not the export");
    free(got);
    free(expected);
    dir_names(dir, names, sizeof(names));
    e2e_assert_str(names, "events.csv", "what is left in the folder");

    /* The daemon dies while budgetctl waits for an answer: exit 3, the old file stays. */
    e2e_assert(au_write_file(path, old, strlen(old), 0640) == 0, "write %s", path);
    au_proc p;
    start_stuck_export(&p, dir, path);
    e2e_daemon_kill(&bd);
    e2e_assert_int(au_proc_wait(&p, E2E_CTL_TIMEOUT_MS), 3, "exit status of the failed export");
    e2e_assert(strstr(p.err, "connection"), "it says why: %s", p.err);
    au_proc_free(&p);
    dir_names(dir, names, sizeof(names));
    e2e_assert_str(names, "events.csv", "what a failed export leaves in the folder");
    got = au_read_file(path, &len);
    e2e_assert(got != NULL && strcmp(got, old) == 0, "the file of before was changed");
    free(got);

    /* Interrupted: the temporary file goes with budgetctl. */
    e2e_assert(e2e_daemon_restart(&bd) == 0, "budgetd did not start again");
    start_stuck_export(&p, dir, path);
    au_proc_stop(&p, SIGINT, E2E_CTL_TIMEOUT_MS);
    e2e_assert(WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGINT,
               "budgetctl did not end by its SIGINT (status 0x%x)", p.status);
    au_proc_free(&p);
    dir_names(dir, names, sizeof(names));
    e2e_assert_str(names, "events.csv", "what an interrupted export leaves in the folder");
    kill(bd.pid, SIGCONT);
    e2e_remove_tree(dir);
    stop_daemon(&bd);
}
