/*
 * Subscriptions end to end: `subscribe` on raw frames, its catch-up racing live writes, a
 * subscriber that never reads, `budgetctl watch`, and the Python example in docs/examples
 * (an independent msgpack implementation reading the protocol as documented).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit_util.h"

static e2e_daemon bd;

/* The events setup writes first: the registrations of KS, SON and KFN. */
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

/* budgetd stops on SIGTERM with status 0, subscribers or not. */
static void stop_cleanly(void)
{
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not exit within %d ms of SIGTERM", E2E_STOP_TIMEOUT_MS);
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "budgetd stopped with status 0x%x, expected exit 0", status);
}

#define TEST_TIMEOUT_S 120
TestSuite(subscribe, .init = setup, .fini = teardown, .timeout = TEST_TIMEOUT_S);

/* Sends one raw request {"id", "op", "args": {"after": after}} (args left out when after < 0
 * and `bad_args` is NULL). */
static void send_subscribe(int fd, uint64_t id, const char *op, int64_t after, const char *bad)
{
    e2e_buf b;
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, after >= 0 || bad ? 3 : 2);
    e2e_kv_uint(&b, "id", id);
    e2e_kv_str(&b, "op", op);
    if (after >= 0 || bad) {
        e2e_pack_str(&b, "args");
        msgpack_pack_map(&b.pk, 1);
        if (bad)
            e2e_kv_str(&b, bad, "1");
        else
            e2e_kv_uint(&b, "after", (uint64_t)after);
    }
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");
    e2e_buf_destroy(&b);
}

/* The next frame on `fd` is a response with this id and error code. */
static void expect_error(int fd, uint64_t id, const char *code)
{
    msgpack_unpacked u;
    e2e_envelope env;
    e2e_assert(e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME, "no answer");
    e2e_assert(e2e_envelope_read(&u.data, &env), "not a response");
    e2e_assert(!env.ok, "expected %s, got ok", code);
    e2e_assert_int(env.id, id, "id of the error");
    e2e_assert_str(env.code, code, "error code");
    msgpack_unpacked_destroy(&u);
}

/* Every pushed event is the stored event: the same bytes as `events` returns. */
static void expect_same_as_events(budget_client *c, const au_sub *s, uint64_t seq)
{
    e2e_buf args;
    budget_response r;
    e2e_buf_init(&args);
    msgpack_pack_map(&args.pk, 2);
    e2e_kv_uint(&args, "after", seq - 1);
    e2e_kv_uint(&args, "limit", 1);
    e2e_call(c, "events", &args, &r);
    const msgpack_object *events = budget_map_get(&r.result, "events");
    e2e_assert(events && events->type == MSGPACK_OBJECT_ARRAY && events->via.array.size == 1,
               "events after %llu", (unsigned long long)(seq - 1));
    const msgpack_object *hash = budget_map_get(&events->via.array.ptr[0], "hash");
    e2e_assert(hash && memcmp(hash->via.bin.ptr, s->prev, 32) == 0,
               "the pushed event %llu is the stored one", (unsigned long long)seq);
    budget_response_free(&r);
    e2e_buf_destroy(&args);
}

Test(subscribe, catches_up_then_pushes_live_events_on_the_subscribe_id)
{
    budget_client *c = e2e_client(&bd);
    au_sub s;
    uint64_t seq = 0;

    e2e_assert_int(au_grant_many(c, "before", 0, 5, 40), U + 5, "head before subscribing");
    au_subscribe(&bd, U + 2, 77, &s);
    e2e_assert_int(s.head, U + 5, "the head in the subscribe answer");
    au_sub_until(&s, U + 5);
    expect_same_as_events(c, &s, U + 5);
    /* Nothing more until something is written. */
    e2e_assert_int(au_sub_next(&s, 200, &seq), E2E_TIMEOUT, "a push without a write");
    e2e_assert_int(au_grant_many(c, "after", 0, 3, 40), U + 8, "head after");
    au_sub_until(&s, U + 8);
    expect_same_as_events(c, &s, U + 8);

    /* A request on a subscribed connection: refused with its id, then the connection ends. */
    send_subscribe(s.fd, 78, "hello", -1, NULL);
    expect_error(s.fd, 78, "bad_request");
    e2e_assert(e2e_raw_wait_close(s.fd, E2E_FRAME_TIMEOUT_MS), "the daemon closes it");
    au_sub_close(&s);

    /* A subscription from 0 gets everything; from the head, only what comes. */
    au_subscribe(&bd, 0, 1, &s);
    au_sub_until(&s, U + 8);
    au_sub_close(&s);
    au_subscribe(&bd, U + 8, 1, &s);
    e2e_assert_int(au_grant_many(c, "last", 0, 1, 40), U + 9, "head");
    au_sub_until(&s, U + 9);
    e2e_assert_int(s.received, 1, "pushes after subscribing at the head");

    budget_client_close(c);
    stop_cleanly(); /* with a subscriber still connected */
    e2e_assert(e2e_raw_wait_close(s.fd, E2E_FRAME_TIMEOUT_MS), "the subscriber sees the end");
    au_sub_close(&s);
}

Test(subscribe, refuses_what_it_cannot_serve)
{
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "x", 0, 2, 10);
    int fd = e2e_raw_connect(bd.socket);
    send_subscribe(fd, 5, "subscribe", U + 3, NULL);
    expect_error(fd, 5, "not_found"); /* after is past the head */
    send_subscribe(fd, 6, "subscribe", -1, "from");
    expect_error(fd, 6, "bad_request"); /* an unknown arg */
    /* The connection is still a plain one: a later subscribe works on it. */
    send_subscribe(fd, 7, "subscribe", 1, NULL);
    msgpack_unpacked u;
    e2e_envelope env;
    e2e_assert(e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME, "answer");
    e2e_assert(e2e_envelope_read(&u.data, &env) && env.ok && env.id == 7, "subscribed");
    msgpack_unpacked_destroy(&u);
    close(fd);
    budget_client_close(c);
    stop_cleanly();
}

/* ---- catch-up racing live writes --------------------------------------------------------- */

typedef struct {
    const e2e_daemon *d;
    uint32_t run;
    atomic_bool stop;
    atomic_uint_fast64_t written;
    uint64_t last_seq;
} race_writer;

/* Writes small pipelined batches until told to stop. */
static void *race_write(void *arg)
{
    race_writer *w = arg;
    budget_client *c = e2e_client(w->d);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "race%u", w->run);
    for (uint32_t i = 0; !atomic_load(&w->stop); i += 16) {
        w->last_seq = au_grant_many(c, prefix, i, 16, 40);
        atomic_fetch_add(&w->written, 16);
    }
    budget_client_close(c);
    return NULL;
}

#define RACE_RUNS 20
#define RACE_PRELOAD 2500 /* three catch-up pages */
#define RACE_LIVE_MIN 64  /* events written after subscribing, before the writer stops */

Test(subscribe, catch_up_meets_live_writes_without_gap_or_duplicate)
{
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "preload", 0, RACE_PRELOAD, 60);
    for (uint32_t run = 0; run < RACE_RUNS; run++) {
        race_writer w = {.d = &bd, .run = run};
        pthread_t t;
        au_sub s;
        atomic_init(&w.stop, false);
        atomic_init(&w.written, 0);
        cr_assert_eq(pthread_create(&t, NULL, race_write, &w), 0);
        /* Subscribe while the writer runs, from a different place each run. */
        e2e_assert(AU_WAIT(atomic_load(&w.written) >= 16 * (1 + run % 4), 10000),
                   "run %u: the writer writes", run);
        au_subscribe(&bd, (uint64_t)run * 97, 1000 + run, &s);
        uint64_t from = s.head;
        uint64_t live_target = atomic_load(&w.written) + RACE_LIVE_MIN;
        while (s.next_seq <= from) { /* the catch-up, with writes landing meanwhile */
            uint64_t seq;
            e2e_assert(au_sub_next(&s, AU_PUSH_TIMEOUT_MS, &seq) == E2E_FRAME,
                       "run %u: event %llu did not come", run, (unsigned long long)s.next_seq);
        }
        e2e_assert(AU_WAIT(atomic_load(&w.written) >= live_target, 10000),
                   "run %u: the writer goes on writing", run);
        atomic_store(&w.stop, true);
        pthread_join(t, NULL);
        uint64_t head = e2e_head(c);
        e2e_assert(head > from, "run %u: writes landed after subscribing", run);
        au_sub_until(&s, head);
        /* Nothing after the head: a duplicate would show here. */
        uint64_t extra;
        e2e_assert_int(au_sub_next(&s, 100, &extra), E2E_TIMEOUT, "a push past the head");
        e2e_assert_int(s.received, head - (uint64_t)run * 97, "events received");
        au_sub_close(&s);
    }
    budget_client_close(c);
    stop_cleanly();
}

/* ---- a subscriber that never reads ------------------------------------------------------- */

#define SLOW_WRITERS 4
#define SLOW_EVENTS_EACH 2500
#define SLOW_TITLE_BYTES 256
/* The bound of subscribe.h: a subscriber never has more than this queued. */
#define SUB_OUTPUT_BYTES_MAX (1024u * 1024u)
/* Growth of the daemon's resident memory allowed while 10 000 events are written: the
 * ledger's own growth, with room; the queue it would take without the bound is ~6 MiB. */
#define SLOW_RSS_GROWTH_KIB_MAX (96 * 1024)

typedef struct {
    const e2e_daemon *d;
    uint32_t index;
} slow_writer;

static void *slow_write(void *arg)
{
    slow_writer *w = arg;
    budget_client *c = e2e_client(w->d);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "w%u", w->index);
    au_grant_many(c, prefix, 0, SLOW_EVENTS_EACH, SLOW_TITLE_BYTES);
    budget_client_close(c);
    return NULL;
}

Test(subscribe, a_subscriber_that_never_reads_slows_no_writer_and_stays_bounded)
{
    budget_client *c = e2e_client(&bd);
    au_sub s;
    pthread_t t[SLOW_WRITERS];
    slow_writer w[SLOW_WRITERS];

#if defined(__SANITIZE_ADDRESS__)
    /* AddressSanitizer keeps freed memory in quarantine (256 MiB by default): bounded, but
     * not what this measures. The daemon is restarted with a small one. */
    int status;
    char options[512];
    const char *had = getenv("ASAN_OPTIONS");
    snprintf(options, sizeof(options), "%s%squarantine_size_mb=8", had ? had : "",
             had && had[0] ? ":" : "");
    setenv("ASAN_OPTIONS", options, 1);
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0, "stop");
    e2e_assert(e2e_daemon_restart(&bd) == 0, "restart with a small quarantine");
    budget_client_close(c);
    c = e2e_client(&bd);
#endif
    au_subscribe(&bd, 0, 9, &s); /* and then not a byte read until every write is done */
    long rss_before = e2e_status_kib(bd.pid, "VmRSS");
    for (uint32_t i = 0; i < SLOW_WRITERS; i++) {
        w[i] = (slow_writer){&bd, i};
        cr_assert_eq(pthread_create(&t[i], NULL, slow_write, &w[i]), 0);
    }
    for (uint32_t i = 0; i < SLOW_WRITERS; i++)
        pthread_join(t[i], NULL); /* each writer asserted every one of its writes ok */
    uint64_t head = e2e_head(c);
    e2e_assert_int(head, U + SLOW_WRITERS * SLOW_EVENTS_EACH, "every write landed");
    long rss_after = e2e_status_kib(bd.pid, "VmRSS");
    uint64_t queued = e2e_stat(c, "subscription_queued_bytes");
    uint64_t fallbacks = e2e_stat(c, "subscription_fallbacks");
    fprintf(stderr,
            "slow subscriber: %d events written; daemon RSS %ld -> %ld KiB; "
            "queued to the subscriber %llu bytes; fallbacks %llu\n",
            SLOW_WRITERS * SLOW_EVENTS_EACH, rss_before, rss_after, (unsigned long long)queued,
            (unsigned long long)fallbacks);
    e2e_assert(queued <= SUB_OUTPUT_BYTES_MAX, "queued %llu bytes, over the bound",
               (unsigned long long)queued);
    e2e_assert(fallbacks >= 1, "the subscriber fell back to catching up");
    e2e_assert(rss_before > 0 && rss_after - rss_before < SLOW_RSS_GROWTH_KIB_MAX,
               "RSS grew from %ld to %ld KiB", rss_before, rss_after);

    /* Now it reads: every event comes, in order, none twice, from the store and then live. */
    au_sub_until(&s, head);
    e2e_assert_int(au_grant_many(c, "late", 0, 1, 10), head + 1, "a write after");
    au_sub_until(&s, head + 1);
    au_sub_close(&s);
    budget_client_close(c);
    stop_cleanly();
}

/* ---- budgetctl watch --------------------------------------------------------------------- */

static void count_event_lines(const char *out, const char *const *types, int n)
{
    const char *line = out;
    for (int i = 0; i < n; i++) {
        e2e_assert(line && *line, "line %d of the output is missing: %s", i + 1, out);
        e2e_assert(strstr(line, types[i]) != NULL && strstr(line, types[i]) < strchr(line, '\n'),
                   "line %d shows %s: %s", i + 1, types[i], out);
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    e2e_assert(line && *line == '\0', "exactly %d lines: %s", n, out);
}

Test(subscribe, watch_prints_events_live_and_resumes_from_a_seq)
{
    e2e_ctl_result r;
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "w", 0, 4, 20);

    /* Resuming from a seq: the events after it, then --count ends it. */
    e2e_assert(au_ctl(&bd, &r, "watch", "--after", "4", "--count", "3") == 0, "run");
    e2e_assert(r.exit_code == 0, "watch exited %d: %s", r.exit_code, r.err);
    count_event_lines(r.out, AU_ARGV("frame.granted", "frame.granted", "frame.granted"), 3);
    e2e_assert(strncmp(r.out, "5  ", 3) == 0, "the first line is seq 5: %s", r.out);
    e2e_ctl_free(&r);

    /* Live, as JSON lines: it waits for events that are not written yet. */
    au_proc p;
    const char *const argv[] = {BUDGETCTL_PATH, "--socket", bd.socket, "--json",
                                "watch",        "--after",  "7",       NULL};
    e2e_assert(au_proc_start(&p, argv) == 0, "budgetctl watch started");
    e2e_assert(!au_proc_wait_lines(&p, 1, 200), "nothing to print before a write: %s", p.out);
    au_grant_many(c, "live", 0, 3, 20);
    e2e_assert(au_proc_wait_lines(&p, 3, 10000), "three live events printed: %s / %s", p.out,
               p.err);
    const char *line = p.out;
    for (int64_t seq = U + 5; seq <= U + 7; seq++) {
        const char *end = strchr(line, '\n');
        e2e_json *j = e2e_json_parse(line, (size_t)(end - line));
        e2e_assert(j != NULL, "a JSON line: %.*s", (int)(end - line), line);
        e2e_assert_int(e2e_json_int(j, "seq", -1), seq, "seq of a live event");
        e2e_assert_str(e2e_json_str(j, "type"), "frame.granted", "type");
        e2e_json_free(j);
        line = end + 1;
    }
    au_proc_stop(&p, SIGTERM, 5000);
    au_proc_free(&p);

    /* A refused subscription is a refusal (exit 1). */
    e2e_assert(au_ctl(&bd, &r, "watch", "--after", "99") == 0, "run");
    e2e_assert_int(r.exit_code, 1, "watch past the head");
    e2e_assert(strstr(r.err, "not_found") != NULL, "says not_found: %s", r.err);
    e2e_ctl_free(&r);

    /* The daemon going away ends watch with exit 3. */
    e2e_assert(au_proc_start(&p, argv) == 0, "budgetctl watch started");
    e2e_assert(au_proc_wait_lines(&p, 3, 10000), "catch-up printed");
    budget_client_close(c);
    stop_cleanly();
    e2e_assert_int(au_proc_wait(&p, 5000), 3, "watch's exit status when budgetd stops");
    au_proc_free(&p);
}

/* ---- the Python example ------------------------------------------------------------------ */

/* A ledger with several units and years, rejections, withdrawals, pending avrop, and
 * reductions and reversals approved, pending and rejected. */
static uint64_t python_scenario(void)
{
    static const char *const steps[][16] = {
        {"grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2021", "--amount", "3 mkr",
         "--title", "Utökat trygghetsarbete", "--reference", "KS 2021-08-24 § 241", "--id", "ks21",
         NULL},
        {"grant", "--decision", E2E_DECISION, "--unit", "KS", "--year", "2022", "--amount", "2 mkr",
         "--title", "Plan 2022", "--id", "ks22", NULL},
        {"allocate", "ks21", "--unit", "SON", "--amount", "1 mkr", "--purpose", "Områdesarbete",
         "--id", "son21", NULL},
        {"allocate", "ks21", "--unit", "KFN", "--amount", "0,5 mkr", "--purpose", "Fritid", "--id",
         "kfn21", NULL},
        {"allocate", "ks21", "--unit", "KS", "--amount", "1,5 mkr", "--purpose", "Vakter", "--id",
         "ks21a", NULL},
        {"allocate", "ks22", "--unit", "SON", "--amount", "700 tkr", "--purpose", "2022", "--id",
         "son22", NULL},
        {"approve", "--decision", E2E_DECISION, "son21", "--reference", "KS 2021-09-28 § 270",
         NULL},
        {"approve", "--decision", E2E_DECISION, "kfn21", NULL},
        {"reject", "--decision", E2E_DECISION, "ks21a", "--note", "ny beredning", NULL},
        {"approve", "--decision", E2E_DECISION, "son22", NULL},
        {"avrop", "son21", "--amount", "400 tkr", "--id", "av1", NULL},
        {"approve", "--decision", E2E_DECISION, "av1", NULL},
        {"avrop", "son21", "--amount", "100 tkr", "--id", "av2", NULL},
        {"withdraw", "av2", NULL},
        {"avrop", "kfn21", "--amount", "250 tkr", "--id", "av3", NULL},
        {"avrop", "son22", "--amount", "50 tkr", "--id", "av4", NULL},
        {"approve", "--decision", E2E_DECISION, "av4", NULL},
        {"adjust", "--decision", E2E_DECISION, "ks22", "--delta", "-200 tkr", "--reason",
         "Omprioritering", NULL},
        {"reduce", "son21", "100 tkr", "--reason", "Mindre behov", "--id", "red1", NULL},
        {"approve", "--decision", E2E_DECISION, "red1", NULL},
        {"reduce", "son22", "50 tkr", "--reason", "Väntar", "--id", "red2", NULL},
        {"reverse", "av1", "50 tkr", "--reason", "Fel konto", "--id", "rev1", NULL},
        {"approve", "--decision", E2E_DECISION, "rev1", NULL},
        {"reverse", "av4", "--reason", "Fel konto", "--id", "rev2", NULL},
        {"reject", "--decision", E2E_DECISION, "rev2", NULL},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        e2e_ctl_result r;
        int argc = 0;
        while (steps[i][argc])
            argc++;
        /* Decisions by a second identity: four-eyes forbids deciding one's own proposal. */
        bool decision = strcmp(steps[i][0], "approve") == 0 || strcmp(steps[i][0], "reject") == 0;
        e2e_assert(e2e_ctl_argv_as(&bd, decision ? &e2e_other : NULL, &r, argc, steps[i]) == 0,
                   "run");
        e2e_assert(r.exit_code == 0, "budgetctl %s: %s", steps[i][0], r.err);
        e2e_ctl_free(&r);
    }
    return sizeof(steps) / sizeof(steps[0]);
}

Test(subscribe, the_python_example_agrees_with_balances)
{
    char head_text[24], path[600];
    uint64_t head = U + python_scenario(); /* after the registrations */
    snprintf(head_text, sizeof(head_text), "%" PRIu64, head);
    snprintf(path, sizeof(path), "%s/docs/examples/follow_ledger.py", BUDGET_SOURCE_DIR);

    au_proc p;
    const char *const argv[] = {au_python(), path,      "--socket", bd.socket,
                                "--until",   head_text, NULL};
    e2e_assert(au_proc_start(&p, argv) == 0, "python3 started");
    int code = au_proc_wait(&p, 20000);
    e2e_assert(code == 0, "follow_ledger.py exited %d: %s", code, p.err ? p.err : "");
    const char *last = p.out;
    for (const char *nl; (nl = strchr(last, '\n')) != NULL && nl[1] != '\0';)
        last = nl + 1;
    e2e_json *totals = e2e_json_parse(last, strlen(last));
    e2e_assert(totals != NULL, "the last line is JSON: %s", p.out);
    e2e_assert_int(e2e_json_int(totals, "seq", -1), head, "the seq it followed to");

    e2e_ctl_result r;
    e2e_assert(au_ctl(&bd, &r, "--json", "balances") == 0 && r.exit_code == 0, "balances");
    e2e_json *balances = e2e_json_parse(r.out, r.out_len);
    const e2e_json *units = e2e_json_get(balances, "units");
    const e2e_json *mine = e2e_json_get(totals, "units");
    e2e_assert(units && mine && units->count == mine->count && units->count >= 4,
               "the same units and years: %s vs %s", r.out, last);
    static const char *const keys[] = {"allocated", "called_off", "pending", "available"};
    for (size_t i = 0; i < units->count; i++) {
        const e2e_json *u = units->items[i];
        const e2e_json *m = NULL;
        for (size_t k = 0; k < mine->count; k++)
            if (strcmp(e2e_json_str(mine->items[k], "unit"), e2e_json_str(u, "unit")) == 0 &&
                e2e_json_int(mine->items[k], "year", 0) == e2e_json_int(u, "year", -1))
                m = mine->items[k];
        e2e_assert(m != NULL, "the follower knows %s %lld", e2e_json_str(u, "unit"),
                   (long long)e2e_json_int(u, "year", 0));
        for (size_t k = 0; k < 4; k++)
            e2e_assert(e2e_json_int(m, keys[k], -1) == e2e_json_int(u, keys[k], -2),
                       "%s %lld %s: follower %lld, balances %lld", e2e_json_str(u, "unit"),
                       (long long)e2e_json_int(u, "year", 0), keys[k],
                       (long long)e2e_json_int(m, keys[k], -1),
                       (long long)e2e_json_int(u, keys[k], -2));
    }
    e2e_json_free(balances);
    e2e_json_free(totals);
    e2e_ctl_free(&r);
    au_proc_free(&p);
    stop_cleanly();
}
