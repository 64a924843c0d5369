/*
 * What budgetd promises a client, checked with real clients against a real budgetd: request
 * ids start at 1 and an answer with id 0 is the connection's last frame; libbudgetclient's
 * msgpack-free API builds requests and reads answers; the installed library, headers and
 * budgetclient.pc build docs/examples/c/hello_balances.c from the install prefix alone, linked
 * shared and static; and the C and Node.js examples print what `budgetctl --json balances`
 * says, totals past 2^53 included.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_util.h"
#include "budget/client.h"
#include "e2e_util.h"

#define TEST_TIMEOUT_S 300
/* A build, an install or a run of an example (make, cmake --install, node). */
#define STEP_TIMEOUT_MS (120000 * e2e_slow())

static e2e_daemon bd;

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

TestSuite(clients, .init = setup, .fini = teardown, .timeout = TEST_TIMEOUT_S);

/* ---- request ids ------------------------------------------------------------------------- */

static void pack_hello(e2e_buf *b, uint64_t id)
{
    e2e_frame_begin(b);
    msgpack_pack_map(&b->pk, 2);
    e2e_kv_uint(b, "id", id);
    e2e_kv_str(b, "op", "hello");
    e2e_frame_end(b);
}

/* One answer on `fd`: its id, and whether it is ok (`code` gets the error code). */
static bool recv_answer(int fd, uint64_t *id, char *code, size_t code_size)
{
    msgpack_unpacked u;
    e2e_envelope env;
    int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
    e2e_assert(rc == E2E_FRAME, "no answer (%d)", rc);
    e2e_assert(e2e_envelope_read(&u.data, &env), "a malformed answer");
    *id = env.id;
    snprintf(code, code_size, "%s", env.ok ? "" : env.code);
    msgpack_unpacked_destroy(&u);
    return env.ok;
}

Test(clients, a_request_with_id_0_is_refused_and_is_the_connections_last)
{
    int fd = e2e_raw_connect(bd.socket);
    e2e_buf b;
    uint64_t id;
    char code[32];

    e2e_assert(fd >= 0, "connect");
    e2e_buf_init(&b);
    pack_hello(&b, 1);
    pack_hello(&b, 0);
    pack_hello(&b, 2); /* never answered: the connection closes before it */
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");
    e2e_assert(recv_answer(fd, &id, code, sizeof(code)), "hello with id 1: %s", code);
    e2e_assert_int(id, 1, "the first answer's id");
    e2e_assert(!recv_answer(fd, &id, code, sizeof(code)), "hello with id 0 answered ok");
    e2e_assert_int(id, 0, "the refusal's id");
    e2e_assert_str(code, "bad_request", "the refusal's code");
    e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS),
               "the connection stayed open after an answer with id 0");
    close(fd);
    e2e_buf_destroy(&b);

    /* The daemon serves on, and the library numbers its requests from 1. */
    budget_client *c = e2e_client(&bd);
    budget_req *req;
    cr_assert_eq(budget_req_new("hello", &req), 0);
    for (uint64_t want = 1; want <= 3; want++)
        e2e_assert_int(budget_send(c, req), want, "the library's request id");
    for (uint64_t want = 1; want <= 3; want++) {
        budget_answer *a;
        e2e_assert_int(budget_recv(c, &a), 0, "receive");
        e2e_assert_int(budget_answer_id(a), want, "answers come in the order sent");
        e2e_assert_int(budget_answer_error(a), 0, "hello answered");
        budget_answer_free(a);
    }
    budget_req_free(req);
    budget_client_close(c);
}

/* ---- the request builder ------------------------------------------------------------------ */

Test(clients, the_request_builder_refuses_what_the_daemon_would)
{
    budget_req *r = NULL;
    char name[40];

    cr_assert_eq(budget_req_new("", &r), BUDGET_EBAD_REQUEST);
    cr_assert_null(r);
    cr_assert_eq(budget_req_new("an.op.name.longer.than.32.bytes.x", &r), BUDGET_EBAD_REQUEST);
    cr_assert_eq(budget_req_new("frame.grant", &r), 0);
    cr_assert_eq(budget_req_add_str(r, "id", "ks-2021"), 0);
    cr_assert_eq(budget_req_add_str(r, "id", "again"), BUDGET_EBAD_REQUEST, "a key twice");
    cr_assert_eq(budget_req_add_uint(r, "id", 1), BUDGET_EBAD_REQUEST, "a key twice");
    cr_assert_eq(budget_req_add_int(r, "", 1), BUDGET_EBAD_REQUEST, "an empty key");
    char *long_text = malloc(BUDGET_STRING_BYTES_MAX + 2);
    cr_assert_not_null(long_text);
    memset(long_text, 'a', BUDGET_STRING_BYTES_MAX + 1);
    long_text[BUDGET_STRING_BYTES_MAX + 1] = '\0';
    cr_assert_eq(budget_req_add_str(r, "title", long_text), BUDGET_ETOO_LARGE);
    long_text[BUDGET_STRING_BYTES_MAX] = '\0';
    cr_assert_eq(budget_req_add_str(r, "title", long_text), 0, "4096 bytes fit");
    free(long_text);
    for (unsigned i = 2; i < BUDGET_MAP_PAIRS_MAX; i++) {
        snprintf(name, sizeof(name), "k%u", i);
        cr_assert_eq(budget_req_add_int(r, name, -(int64_t)i), 0, "pair %u", i);
    }
    cr_assert_eq(budget_req_add_int(r, "one-too-many", 1), BUDGET_ETOO_LARGE);

    /* What was refused left the request as it was: the daemon reads the frame of 64 pairs and
     * refuses an arg by its rule, not the frame by its limits. */
    budget_client *c = e2e_client(&bd);
    budget_answer *a;
    e2e_assert_int(budget_call(c, r, &a), 0, "call");
    e2e_assert_int(budget_answer_error(a), BUDGET_EBAD_REQUEST, "64 args, one too long");
    e2e_assert(strstr(budget_answer_message(a), "args.") != NULL, "the message names an arg: %s",
               budget_answer_message(a));
    e2e_assert(budget_answer_result(a) == NULL, "an error has no result");
    budget_answer_free(a);
    budget_req_free(r);
    budget_client_close(c);
}

/* ---- a ledger to read ---------------------------------------------------------------------- */

#define BIG_GRANTS 10
#define BIG_ORE 1000000000000000LL /* 10^15, the largest amount */
/* KS's frames in 2021: ten of 10^15 and one of 1 öre, past 2^53 and odd, so a reader that
 * holds it in a double prints it wrong. */
#define KS_FRAMES_ORE (BIG_GRANTS * BIG_ORE + 1)

/* A write through the request builder; returns its answer's seq, asserting ok. */
static uint64_t write_ok(budget_client *c, budget_req *r)
{
    budget_answer *a;
    uint64_t seq = 0;
    e2e_assert_int(budget_call(c, r, &a), 0, "a write's call");
    e2e_assert(budget_answer_error(a) == 0, "a write refused: %s: %s", budget_answer_code(a),
               budget_answer_message(a));
    e2e_assert(budget_value_uint(budget_value_get(budget_answer_result(a), "seq"), &seq) == 0,
               "a write's seq");
    budget_answer_free(a);
    budget_req_free(r);
    return seq;
}

static budget_req *req(const char *op, const char *id)
{
    budget_req *r;
    cr_assert_eq(budget_req_new(op, &r), 0);
    cr_assert_eq(budget_req_add_str(r, "id", id), 0);
    return r;
}

/* The decision a grant or an approval rests on: KS 2021-08-24 § 241. */
static void add_decision(budget_req *r)
{
    cr_assert_eq(budget_req_add_str(r, "decision_body", "KS"), 0);
    cr_assert_eq(budget_req_add_str(r, "decision_date", "2021-08-24"), 0);
    cr_assert_eq(budget_req_add_str(r, "decision_paragraph", "241"), 0);
}

static uint64_t grant(budget_client *c, const char *id, const char *unit, int64_t year,
                      int64_t amount)
{
    budget_req *r = req("frame.grant", id);
    cr_assert_eq(budget_req_add_str(r, "unit", unit), 0);
    cr_assert_eq(budget_req_add_int(r, "year", year), 0);
    cr_assert_eq(budget_req_add_int(r, "amount", amount), 0);
    cr_assert_eq(budget_req_add_str(r, "title", "Ram för klienterna"), 0);
    add_decision(r);
    /* A decision of its own: frames alike in all else are refused as duplicate grants. */
    char reference[80];
    snprintf(reference, sizeof(reference), "KS 2021-08-24 § %s", id);
    cr_assert_eq(budget_req_add_str(r, "reference", reference), 0);
    return write_ok(c, r);
}

static uint64_t allocate(budget_client *c, const char *id, const char *frame, const char *unit,
                         int64_t amount)
{
    budget_req *r = req("allocation.propose", id);
    cr_assert_eq(budget_req_add_str(r, "frame", frame), 0);
    cr_assert_eq(budget_req_add_str(r, "unit", unit), 0);
    cr_assert_eq(budget_req_add_int(r, "amount", amount), 0);
    cr_assert_eq(budget_req_add_str(r, "purpose", "Områdesarbete"), 0);
    return write_ok(c, r);
}

static uint64_t avrop(budget_client *c, const char *id, const char *allocation, int64_t amount)
{
    budget_req *r = req("avrop.request", id);
    cr_assert_eq(budget_req_add_str(r, "allocation", allocation), 0);
    cr_assert_eq(budget_req_add_uint(r, "amount", (uint64_t)amount), 0);
    return write_ok(c, r);
}

static uint64_t approve(budget_client *c, const char *id, const char *target)
{
    budget_req *r = req("approve", id);
    cr_assert_eq(budget_req_add_str(r, "target", target), 0);
    add_decision(r);
    return write_ok(c, r);
}

/* Grants, allocations, avrop approved and pending, over two years and three units, written
 * with the request builder (decisions by a second identity: four-eyes). Returns the head. */
static uint64_t scenario(void)
{
    budget_client *c = e2e_client(&bd), *other = e2e_client_as(&bd, &e2e_other);
    char id[32];
    for (int i = 1; i <= BIG_GRANTS; i++) {
        snprintf(id, sizeof(id), "ks21-%d", i);
        grant(c, id, "KS", 2021, BIG_ORE);
    }
    grant(c, "ks21-ore", "KS", 2021, 1);
    grant(c, "ks22", "KS", 2022, 200000000);
    allocate(c, "son21", "ks21-1", "SON", 100000000);
    allocate(c, "kfn21", "ks21-2", "KFN", 50000000);
    allocate(c, "son22", "ks22", "SON", 70000000);
    approve(other, "d-son21", "son21");
    approve(other, "d-son22", "son22");
    avrop(c, "av1", "son21", 40000000);
    approve(other, "d-av1", "av1");
    avrop(c, "av2", "son22", 5000000);
    uint64_t head = avrop(c, "av3", "son21", 1);
    budget_client_close(other);
    budget_client_close(c);
    return head;
}

Test(clients, answers_are_read_without_msgpack)
{
    uint64_t head = scenario();
    budget_client *c = e2e_client(&bd);
    budget_answer *a;
    budget_req *r;

    /* A refused write: its code, message and error value, and no result. */
    r = req("frame.grant", "ks22");
    cr_assert_eq(budget_req_add_str(r, "unit", "KS"), 0);
    cr_assert_eq(budget_req_add_int(r, "year", 2022), 0);
    cr_assert_eq(budget_req_add_int(r, "amount", 1), 0);
    cr_assert_eq(budget_req_add_str(r, "title", "Annat innehåll"), 0);
    add_decision(r);
    e2e_assert_int(budget_call(c, r, &a), 0, "call");
    e2e_assert_int(budget_answer_error(a), BUDGET_ECONFLICT, "an id taken by other content");
    e2e_assert_str(budget_answer_code(a), "conflict", "its code");
    e2e_assert(budget_answer_message(a)[0] != '\0', "a message");
    e2e_assert(budget_answer_result(a) == NULL, "no result");
    budget_answer_free(a);
    budget_req_free(r);

    /* hello: strs, uints, maps and arrays. */
    e2e_assert_int(budget_call_op(c, "hello", &a), 0, "hello");
    const budget_value *hello = budget_answer_result(a);
    e2e_assert(budget_value_type_of(hello) == BUDGET_VALUE_MAP, "hello's result is a map");
    e2e_assert(budget_value_str_is(budget_value_get(hello, "server"), "budgetd"), "server");
    uint64_t got = 0;
    e2e_assert(budget_value_uint(budget_value_get(hello, "head"), &got) == 0, "head");
    e2e_assert_int(got, head, "hello's head");
    const budget_value *actor = budget_value_get(hello, "actor");
    e2e_assert(budget_value_uint(budget_value_get(actor, "uid"), &got) == 0, "actor.uid");
    e2e_assert_int(got, getuid(), "actor.uid");
    const budget_value *roles = budget_value_get(hello, "roles");
    e2e_assert(budget_value_type_of(roles) == BUDGET_VALUE_ARRAY && budget_value_count(roles) > 0,
               "roles: every role without an access file");
    e2e_assert(budget_value_get(hello, "no such key") == NULL, "an absent key");
    e2e_assert(budget_value_type_of(budget_value_get(NULL, "x")) == BUDGET_VALUE_NIL,
               "lookups chain through NULL");
    char key[16];
    budget_value_str_copy(budget_value_key_at(hello, 0), key, sizeof(key));
    e2e_assert(budget_value_get(hello, key) == budget_value_at(hello, 0), "pair 0 by its key");
    budget_answer_free(a);

    /* balances of KS: a total past 2^53, exact; a str copied and cut at a character. */
    cr_assert_eq(budget_req_new("balances", &r), 0);
    cr_assert_eq(budget_req_add_str(r, "unit", "KS"), 0);
    cr_assert_eq(budget_req_add_int(r, "year", 2021), 0);
    e2e_assert_int(budget_call(c, r, &a), 0, "balances");
    budget_req_free(r);
    const budget_value *units = budget_value_get(budget_answer_result(a), "units");
    e2e_assert_int(budget_value_count(units), 1, "KS 2021 is one unit row");
    const budget_value *ks = budget_value_at(units, 0);
    uint64_t frames = 0;
    int64_t frames_signed = 0;
    e2e_assert(budget_value_uint(budget_value_get(ks, "frames"), &frames) == 0, "frames");
    e2e_assert(frames == (uint64_t)KS_FRAMES_ORE, "KS frames %" PRIu64, frames);
    e2e_assert(budget_value_int(budget_value_get(ks, "frames"), &frames_signed) == 0 &&
                   frames_signed == KS_FRAMES_ORE,
               "frames as int64");
    e2e_assert(budget_value_at(units, 1) == NULL, "past the end");
    const budget_value *first =
        budget_value_at(budget_value_get(budget_answer_result(a), "frames"), 0);
    char title[6];
    size_t len = budget_value_str_copy(budget_value_get(first, "title"), title, sizeof(title));
    e2e_assert_int(len, strlen("Ram för klienterna"), "the title's whole length");
    e2e_assert_str(title, "Ram f", "cut before the two bytes of ö");
    budget_answer_free(a);

    /* events: bins of 32 bytes, and prev of event 2 is hash of event 1. */
    cr_assert_eq(budget_req_new("events", &r), 0);
    cr_assert_eq(budget_req_add_uint(r, "limit", 2), 0);
    e2e_assert_int(budget_call(c, r, &a), 0, "events");
    budget_req_free(r);
    const budget_value *events = budget_value_get(budget_answer_result(a), "events");
    e2e_assert_int(budget_value_count(events), 2, "two events");
    size_t hash_len = 0, prev_len = 0;
    const uint8_t *hash =
        budget_value_bin(budget_value_get(budget_value_at(events, 0), "hash"), &hash_len);
    const uint8_t *prev =
        budget_value_bin(budget_value_get(budget_value_at(events, 1), "prev"), &prev_len);
    e2e_assert(hash && prev && hash_len == 32 && prev_len == 32 && memcmp(hash, prev, 32) == 0,
               "the chain's link from event 1 to 2");
    budget_answer_free(a);
    budget_client_close(c);
}

/* ---- the examples ------------------------------------------------------------------------- */

/* Runs argv (argv[0] a path) and returns its stdout, asserting exit status 0. Free it. */
static char *run(const char *const *argv)
{
    au_proc p;
    e2e_assert(au_proc_start(&p, argv) == 0, "%s started", argv[0]);
    int code = au_proc_wait(&p, STEP_TIMEOUT_MS);
    e2e_assert(code == 0, "%s %s exited %d:\n%s\n%s", argv[0], argv[1] ? argv[1] : "", code,
               p.out ? p.out : "", p.err ? p.err : "");
    char *out = strdup(p.out ? p.out : "");
    au_proc_free(&p);
    return out;
}

/* `budgetctl --json balances`, parsed. */
static e2e_json *ctl_balances(void)
{
    e2e_ctl_result r;
    e2e_assert(au_ctl(&bd, &r, "--json", "balances") == 0 && r.exit_code == 0, "balances: %s",
               r.err);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    e2e_assert(j != NULL, "balances is JSON: %s", r.out);
    e2e_ctl_free(&r);
    return j;
}

/* The row of `list` whose `key` (and `year`, when >= 0) match; NULL when none does. */
static const e2e_json *find_row(const e2e_json *list, const char *key, const char *value,
                                int64_t year)
{
    for (size_t i = 0; list != NULL && i < list->count; i++)
        if (strcmp(e2e_json_str(list->items[i], key), value) == 0 &&
            (year < 0 || e2e_json_int(list->items[i], "year", -1) == year))
            return list->items[i];
    return NULL;
}

/* Checks "name=value" words from `words` against the integers of `row`; returns how many. */
static int check_figures(const char *who, const char *line, char *words, const e2e_json *row)
{
    int n = 0;
    for (char *save = NULL, *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(w, '=');
        e2e_assert(eq != NULL, "%s: a word without '=' in: %s", who, line);
        *eq = '\0';
        const e2e_json *v = e2e_json_get(row, w);
        e2e_assert(v != NULL && v->integral, "%s: budgetctl has no integer %s", who, w);
        errno = 0;
        long long figure = strtoll(eq + 1, NULL, 10);
        e2e_assert(figure == v->integer && errno == 0,
                   "%s: %s is %s, budgetctl says %" PRId64 " (%s)", who, w, eq + 1, v->integer,
                   line);
        n++;
    }
    return n;
}

/*
 * Checks an example's output (the lines hello_balances prints) against budgetctl: the hello
 * line's head, every unit and frame line against `budgetctl --json balances`, and that every
 * unit and frame there has its line. Returns the lines that were not hello, unit or frame.
 */
static char *check_example_output(const char *who, const char *out, uint64_t head)
{
    e2e_json *balances = ctl_balances();
    const e2e_json *units = e2e_json_get(balances, "units");
    const e2e_json *frames = e2e_json_get(balances, "frames");
    size_t unit_lines = 0, frame_lines = 0, hello_lines = 0;
    char *text = strdup(out), *rest = calloc(1, strlen(out) + 1);
    cr_assert(text != NULL && rest != NULL);

    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char name[80], unit[40], copy[512];
        long long year;
        int at = 0;
        snprintf(copy, sizeof(copy), "%s", line);
        if (strncmp(line, "hello ", 6) == 0) {
            unsigned long long h;
            e2e_assert(sscanf(line, "hello budgetd %*s protocol 1 head %llu", &h) == 1,
                       "%s: hello line: %s", who, line);
            e2e_assert_int(h, head, "the head an example's hello saw");
            hello_lines++;
        } else if (sscanf(line, "unit %39s %lld %n", unit, &year, &at) == 2 && at > 0) {
            const e2e_json *row = find_row(units, "unit", unit, year);
            e2e_assert(row != NULL, "%s: budgetctl has no unit %s %lld", who, unit, year);
            e2e_assert_int(check_figures(who, copy, line + at, row), 5, "figures of a unit");
            unit_lines++;
        } else if (sscanf(line, "frame %79s %39s %lld %n", name, unit, &year, &at) == 3 && at > 0) {
            const e2e_json *row = find_row(frames, "id", name, -1);
            e2e_assert(row != NULL, "%s: budgetctl has no frame %s", who, name);
            e2e_assert(strcmp(e2e_json_str(row, "unit"), unit) == 0 &&
                           e2e_json_int(row, "year", -1) == year,
                       "%s: frame %s's unit and year", who, name);
            e2e_assert_int(check_figures(who, copy, line + at, row), 5, "figures of a frame");
            frame_lines++;
        } else {
            strcat(rest, line);
            strcat(rest, "\n");
        }
    }
    e2e_assert_int(hello_lines, 1, "hello lines");
    e2e_assert(units != NULL && unit_lines == units->count && unit_lines >= 4,
               "%s printed %zu unit lines; budgetctl has %zu", who, unit_lines,
               units ? units->count : 0);
    e2e_assert(frames != NULL && frame_lines == frames->count && frame_lines >= 12,
               "%s printed %zu frame lines; budgetctl has %zu", who, frame_lines,
               frames ? frames->count : 0);
    free(text);
    e2e_json_free(balances);
    return rest;
}

Test(clients, the_installed_library_builds_the_c_example_shared_and_static)
{
    char prefix[256], work[256], pc_path[300], lib[300], src[600], dst[600];
    uint64_t head = scenario();

    /* Install the client component alone into a fresh prefix. */
    au_temp_dir(prefix, sizeof(prefix));
    au_temp_dir(work, sizeof(work));
    const char *const install[] = {CMAKE_PATH, "--install",   BUDGET_BINARY_DIR, "--prefix",
                                   prefix,     "--component", "client",          NULL};
    free(run(install));

    /* Only budget_* leave the shared library. */
    snprintf(lib, sizeof(lib), "%s/lib/libbudgetclient.so", prefix);
    const char *const nm[] = {"/usr/bin/nm", "-D", "--defined-only", lib, NULL};
    char *symbols = run(nm);
    size_t exported = 0;
    for (char *save = NULL, *line = strtok_r(symbols, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        const char *name = strrchr(line, ' ');
        name = name ? name + 1 : line;
        e2e_assert(strncmp(name, "budget_", 7) == 0, "the library exports %s", name);
        exported++;
    }
    e2e_assert(exported >= 30, "the library exports %zu symbols", exported);
    free(symbols);

    /* The example and its Makefile, built in a folder of their own against the prefix alone. */
    static const char *const files[] = {"hello_balances.c", "Makefile"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(src, sizeof(src), "%s/docs/examples/c/%s", BUDGET_SOURCE_DIR, files[i]);
        snprintf(dst, sizeof(dst), "%s/%s", work, files[i]);
        e2e_assert(au_copy_file(src, dst) == 0, "copy %s", files[i]);
    }
    snprintf(pc_path, sizeof(pc_path), "%s/lib/pkgconfig", prefix);
    setenv("PKG_CONFIG_PATH", pc_path, 1);
    unsetenv("PKG_CONFIG_LIBDIR"); /* the system's msgpack.pc stays visible */
    setenv("CFLAGS", "-O1 -g -Wall -Wextra -Werror " EXAMPLE_SANITIZE, 1);
    setenv("LDFLAGS", EXAMPLE_SANITIZE, 1);
    const char *const make[] = {"/usr/bin/make", "-s", "-C", work, "all", "static", NULL};
    free(run(make));

    /* The static one holds the library: it runs with the shared one gone. */
    snprintf(dst, sizeof(dst), "%s/hello_balances-static", work);
    const char *const readelf[] = {"/usr/bin/readelf", "-d", dst, NULL};
    char *dynamic = run(readelf);
    e2e_assert(strstr(dynamic, "libbudgetclient") == NULL, "static, yet needs: %s", dynamic);
    free(dynamic);
    snprintf(dst, sizeof(dst), "%s/hello_balances", work);
    const char *const readelf2[] = {"/usr/bin/readelf", "-d", dst, NULL};
    dynamic = run(readelf2);
    e2e_assert(strstr(dynamic, "[libbudgetclient.so.0]") != NULL, "not linked to the soname: %s",
               dynamic);
    free(dynamic);

    for (int linking = 0; linking < 2; linking++) {
        snprintf(dst, sizeof(dst), "%s/%s", work,
                 linking ? "hello_balances-static" : "hello_balances");
        const char *const example[] = {dst, bd.socket, NULL};
        char *out = run(example);
        char *rest = check_example_output(dst, out, head);
        e2e_assert(rest[0] == '\0', "%s printed more: %s", dst, rest);
        free(rest);
        free(out);
    }
}

Test(clients, the_node_example_agrees_with_budgetctl)
{
    char script[600], node_modules[600];
    uint64_t head = scenario();
    struct stat st;

    snprintf(script, sizeof(script), "%s/docs/examples/node/hello_balances.mjs", BUDGET_SOURCE_DIR);
    snprintf(node_modules, sizeof(node_modules),
             "%s/docs/examples/node/node_modules/@msgpack/msgpack", BUDGET_SOURCE_DIR);
    cr_assert(stat(node_modules, &st) == 0, "no %s: scripts/setup.sh installs it", node_modules);
    const char *const argv[] = {NODE_PATH, script, bd.socket, NULL};
    char *out = run(argv);
    char *rest = check_example_output("hello_balances.mjs", out, head);

    /* The chain line: every event from 1 to the head, and the head's hash as the daemon has it. */
    budget_client *c = e2e_client(&bd);
    budget_req *r;
    budget_answer *a;
    cr_assert_eq(budget_req_new("events", &r), 0);
    cr_assert_eq(budget_req_add_uint(r, "after", head - 1), 0);
    e2e_assert_int(budget_call(c, r, &a), 0, "events");
    size_t len = 0;
    const uint8_t *hash = budget_value_bin(
        budget_value_get(budget_value_at(budget_value_get(budget_answer_result(a), "events"), 0),
                         "hash"),
        &len);
    e2e_assert(hash != NULL && len == 32, "the head's hash");
    char want[200];
    int n =
        snprintf(want, sizeof(want),
                 "chain %" PRIu64 " events verified, seq 1..%" PRIu64 ", last hash ", head, head);
    for (size_t i = 0; i < 32; i++)
        n += snprintf(want + n, sizeof(want) - (size_t)n, "%02x", hash[i]);
    snprintf(want + n, sizeof(want) - (size_t)n, "\n");
    e2e_assert_str(rest, want, "the node example's chain line");
    budget_answer_free(a);
    budget_req_free(r);
    budget_client_close(c);
    free(rest);
    free(out);
}
