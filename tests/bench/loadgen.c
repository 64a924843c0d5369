/*
 * loadgen: drives a running budgetd over its socket and measures what it answers.
 *
 * It opens C connections, keeps D requests in flight on each (pipelining, raw frames), and
 * runs a mix for a fixed time after a warm-up:
 *   append clients  alternate allocation.propose (1 öre out of a frame of 10^15 öre) and
 *                   avrop.request (1 öre out of an approved allocation of 10^12 öre), each
 *                   with a new id, so every write is a new durable event that keeps
 *                   succeeding for the whole run;
 *   read clients    balances of one frame that holds a few allocations (--read-mode frame,
 *                   the default); or (--read-mode pages) plain balances, reading every page
 *                   by following "next" and starting again when "more" is false; or
 *                   (--read-mode unit) the same for balances of one unit, the next unit of
 *                   the seeded ones after each whole read. A paging reader keeps D
 *                   requests in flight as D cursors, each a read of its own (a page's
 *                   offsets come from the answer to that cursor's page before); cursor k
 *                   of reader r, of R readers, starts (r D + k)/(R D) of the way into the
 *                   allocations (--read-spread N: the number of allocations), so that the
 *                   cursors are spread over the list.
 * --seed-allocations N first fills the ledger with N allocation proposals (batches of 1000)
 * over 8 units and frames, for the paging readers; with no clients it only seeds.
 * --compare runs the appenders alone first, then the same appenders beside the readers, and
 * reports both and the ratio of their appends/s.
 * Before the run it sets up what the writes name: frames, allocations, their approvals. It
 * reports, per kind, requests answered ok per second, p50/p99/p999 latency (from sending a
 * request to reading its whole answer), and errors by code, with the first message of each.
 *
 * One thread and epoll: on a two-core machine the daemon's loop thread takes one core and the
 * load generator the other; more client threads would only compete with the daemon.
 *
 * budgetd refuses a decision by the proposer (four-eyes), so run as root the load generator makes
 * the approvals from a child process with another uid (--decider-uid, default 65534), which
 * must be able to reach the socket: group root and a folder open to the group. Otherwise, or
 * when approvals are refused, appends are allocation proposals only.
 *
 * usage: loadgen --socket PATH [--append-clients N] [--read-clients N] [--depth D]
 *                [--seconds S] [--warmup S] [--name NAME] [--decider-uid UID]
 *                [--read-mode frame|pages|unit] [--read-spread N] [--seed-allocations N]
 *                [--compare] [--daemon-pid PID]
 *
 * --daemon-pid also reports the CPU time budgetd spent per event appended (user + system, of
 * all its threads, from /proc/PID/stat), over the same window as the events counted: a figure
 * of the write path's cost that a slow or busy disk does not move as it moves appends/s.
 * With readers alone it reports budgetd's CPU time per read answered in the timed run: the
 * readers share the machine's cores with budgetd, so reads/s moves with their cost as well.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <grp.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "bench_wire.h"
#include "budget/limits.h"
#include "proto/frame.h"
#include "proto/mp.h"

#define CONNECTIONS_MAX 1000
#define DEPTH_MAX 256
/* Frames the appends draw on, allocations the avrop draw on, allocations of the read frame. */
#define APPEND_FRAMES 16
#define APPEND_ALLOCATIONS 256
#define READ_ALLOCATIONS 8
#define FRAME_AMOUNT 1000000000000000LL     /* 10^15 öre, the most a frame may hold */
#define ALLOCATION_AMOUNT 1000000000000LL   /* 10^12 öre: a million avrop of 1 öre each */
#define READ_ALLOCATION_AMOUNT 1000000000LL /* 10^9 öre */
#define REQUEST_BYTES_MAX BENCH_REQUEST_BYTES_MAX
#define SETUP_CHUNK 128
/* How long to wait for one answer in set-up, and for the answers in flight when time is up. */
#define SETUP_TIMEOUT_MS 30000
#define DRAIN_TIMEOUT_MS 30000
#define CODES_MAX 12
/* The cursors of one paging reader: its depth, at most. */
#define CURSORS_MAX 16

typedef enum { ROLE_APPEND = 0, ROLE_READ = 1 } role;
static const char *const role_names[] = {"appends", "reads"};

typedef struct {
    uint64_t ok, failed;
    unsigned code_count;
    char codes[CODES_MAX][32];
    uint64_t code_hits[CODES_MAX];
    char first_message[CODES_MAX][160];
    bench_latency latency;
} role_stats;

typedef struct {
    int fd;
    role kind;
    unsigned index;
    uint8_t *out;
    size_t out_len, out_sent, out_cap;
    uint8_t *in;
    size_t in_len, in_cap;
    uint64_t next_request_id;
    uint64_t sent_ns[DEPTH_MAX];
    uint32_t ring_head, inflight;
    uint64_t writes;
    bool polling_out;
    /* A paging reader's cursors: each one's next frames_offset, offset, units_offset, and
     * (a unit reader's) unit, of seed_units. Each has one request in flight; `cursor_of`
     * says whose each request in flight is, and the free ones wait in `cursors_free`. */
    uint64_t offsets[CURSORS_MAX][3];
    unsigned unit[CURSORS_MAX];
    uint8_t cursor_of[DEPTH_MAX];
    uint8_t cursors_free[CURSORS_MAX];
    unsigned free_head, free_count;
} lg_conn;

typedef enum { READ_FRAME, READ_PAGES, READ_UNIT } read_mode;
static read_mode reading = READ_FRAME;

/* The units and frames the seeded allocations are spread over. */
#define SEED_UNITS 8
#define SEED_BATCH 1000
static const char *const seed_units[SEED_UNITS] = {
    BENCH_FRAME_UNIT, BENCH_ALLOCATION_UNIT, "LG2", "LG3", "LG4", "LG5", "LG6", "LG7"};
static const char *const page_offset_args[3] = {"frames_offset", "offset", "units_offset"};

static char tag[16];
static bool avrop_enabled = true;

/* ---- requests ------------------------------------------------------------------------------ */

/* The decision of a grant or an approval, as its three args: KS 2026-08-24 § 241. */
#define BENCH_DECISION_PAIRS 3
static void bench_kv_decision(mp_writer *w)
{
    bench_kv_str(w, "decision_body", "KS");
    bench_kv_str(w, "decision_date", "2026-08-24");
    bench_kv_str(w, "decision_paragraph", "241");
}

static size_t build_grant(uint8_t *buf, uint64_t rid, const char *id, const char *title)
{
    mp_writer w;
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "frame.grant", 7 + BENCH_DECISION_PAIRS);
    bench_kv_str(&w, "id", id);
    bench_kv_str(&w, "unit", BENCH_FRAME_UNIT);
    bench_kv_int(&w, "year", BENCH_YEAR);
    bench_kv_int(&w, "amount", FRAME_AMOUNT);
    bench_kv_str(&w, "title", title);
    bench_kv_decision(&w);
    bench_kv_str(&w, "reference", BENCH_REFERENCE);
    mp_write_cstr(&w, "intended"); /* the run's frames are alike on purpose */
    mp_write_bool(&w, true);
    return bench_request_end(&w);
}

static size_t build_propose(uint8_t *buf, uint64_t rid, const char *id, const char *frame,
                            int64_t amount)
{
    mp_writer w;
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "allocation.propose", 5);
    bench_kv_str(&w, "id", id);
    bench_kv_str(&w, "frame", frame);
    bench_kv_str(&w, "unit", BENCH_ALLOCATION_UNIT);
    bench_kv_int(&w, "amount", amount);
    bench_kv_str(&w, "purpose", BENCH_PURPOSE);
    return bench_request_end(&w);
}

static size_t build_approve(uint8_t *buf, uint64_t rid, const char *id, const char *target)
{
    mp_writer w;
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "approve", 3 + BENCH_DECISION_PAIRS);
    bench_kv_str(&w, "id", id);
    bench_kv_str(&w, "target", target);
    bench_kv_decision(&w);
    bench_kv_str(&w, "reference", BENCH_REFERENCE);
    return bench_request_end(&w);
}

static size_t build_avrop(uint8_t *buf, uint64_t rid, const char *id, const char *allocation)
{
    mp_writer w;
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "avrop.request", 4);
    bench_kv_str(&w, "id", id);
    bench_kv_str(&w, "allocation", allocation);
    bench_kv_int(&w, "amount", 1);
    bench_kv_str(&w, "note", BENCH_NOTE);
    return bench_request_end(&w);
}

static size_t build_balances_frame(uint8_t *buf, uint64_t rid, const char *frame)
{
    mp_writer w;
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "balances", 1);
    bench_kv_str(&w, "frame", frame);
    return bench_request_end(&w);
}

/* The next page of a paging reader's cursor `k`: plain balances, or of its unit. */
static size_t build_balances_page(uint8_t *buf, uint64_t rid, const lg_conn *c, unsigned k)
{
    mp_writer w;
    bool unit = reading == READ_UNIT;
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "balances", 3 + unit);
    if (unit)
        bench_kv_str(&w, "unit", seed_units[c->unit[k]]);
    for (int i = 0; i < 3; i++)
        bench_kv_int(&w, page_offset_args[i], (int64_t)c->offsets[k][i]);
    return bench_request_end(&w);
}

static size_t build_plain(uint8_t *buf, uint64_t rid, const char *op)
{
    mp_writer w;
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, op, 0);
    return bench_request_end(&w);
}

static void frame_id(char *out, size_t size, unsigned i)
{
    snprintf(out, size, BENCH_FRAME_ID_FORMAT, tag, i);
}

static void allocation_id(char *out, size_t size, unsigned i)
{
    snprintf(out, size, BENCH_ALLOCATION_ID_FORMAT, tag, i);
}

static void read_frame_id(char *out, size_t size)
{
    snprintf(out, size, "lg%s-read", tag);
}

/* The next request of a connection in the run. */
static size_t build_next(lg_conn *c, uint8_t *buf)
{
    char id[BUDGET_ID_BYTES_MAX + 1], ref[BUDGET_ID_BYTES_MAX + 1];
    uint64_t rid = c->next_request_id++;

    if (c->kind == ROLE_READ && reading != READ_FRAME) {
        /* The cursor of the request: the oldest free one (conn_top_up checked there is one). */
        unsigned k = c->cursors_free[c->free_head];
        c->free_head = (c->free_head + 1) % CURSORS_MAX;
        c->free_count--;
        c->cursor_of[(c->ring_head + c->inflight) % DEPTH_MAX] = (uint8_t)k;
        return build_balances_page(buf, rid, c, k);
    }
    if (c->kind == ROLE_READ) {
        read_frame_id(ref, sizeof(ref));
        return build_balances_frame(buf, rid, ref);
    }
    uint64_t n = c->writes++;
    snprintf(id, sizeof(id), BENCH_WRITE_ID_FORMAT, tag, c->index, (unsigned long long)n);
    if (avrop_enabled && n % 2 == 1) {
        allocation_id(ref, sizeof(ref), (unsigned)((c->index * 7 + n) % APPEND_ALLOCATIONS));
        return build_avrop(buf, rid, id, ref);
    }
    frame_id(ref, sizeof(ref), (unsigned)((c->index + n) % APPEND_FRAMES));
    return build_propose(buf, rid, id, ref, 1);
}

/* ---- responses ----------------------------------------------------------------------------- */

static void stats_record(role_stats *st, const bench_response *resp)
{
    if (resp->ok) {
        st->ok++;
        return;
    }
    st->failed++;
    for (unsigned i = 0; i < st->code_count; i++) {
        if (strcmp(st->codes[i], resp->code) == 0) {
            st->code_hits[i]++;
            return;
        }
    }
    if (st->code_count < CODES_MAX) {
        unsigned i = st->code_count++;
        snprintf(st->codes[i], sizeof(st->codes[i]), "%s", resp->code);
        snprintf(st->first_message[i], sizeof(st->first_message[i]), "%s", resp->message);
        st->code_hits[i] = 1;
    }
}

/* A page's "more" and the offsets of its "next"; -1 when the answer has no "next". One walk
 * over the answer: a page is up to 200 KiB of items, and walking it once for each key (as
 * bench_result_bool does) cost the load generator more CPU than budgetd spent answering. */
static int page_next(const bench_response *resp, bool *more, uint64_t next[3])
{
    mp_reader r = resp->result;
    uint32_t n, m;
    bool found_next = false, found_more = false;
    *more = false;
    if (mp_read_map(&r, &n) != 0)
        return -1;
    for (uint32_t i = 0; i < n && !(found_next && found_more); i++) {
        const char *key;
        uint32_t len;
        if (mp_read_str(&r, &key, &len) != 0)
            return -1;
        if (len == 4 && memcmp(key, "more", 4) == 0) {
            if (mp_read_bool(&r, more) != 0)
                return -1;
            found_more = true;
            continue;
        }
        if (len != 4 || memcmp(key, "next", 4) != 0) {
            if (mp_skip(&r, 16) != 0)
                return -1;
            continue;
        }
        if (mp_read_map(&r, &m) != 0)
            return -1;
        for (uint32_t j = 0; j < m; j++) {
            uint64_t v;
            if (mp_read_str(&r, &key, &len) != 0 || mp_read_uint(&r, &v) != 0)
                return -1;
            for (int k = 0; k < 3; k++)
                if (len == strlen(page_offset_args[k]) &&
                    memcmp(key, page_offset_args[k], len) == 0)
                    next[k] = v;
        }
        found_next = true;
    }
    return found_next ? 0 : -1;
}

/* A paging reader's answer to cursor `k`: its next page, or (no more) the start again, of
 * the next unit; the cursor is free for its next request. */
static void page_advance(lg_conn *c, unsigned k, const bench_response *resp)
{
    bool more = false;
    if (!resp->ok || page_next(resp, &more, c->offsets[k]) != 0 || !more) {
        memset(c->offsets[k], 0, sizeof(c->offsets[k]));
        c->unit[k] = (c->unit[k] + 1) % SEED_UNITS;
    }
    c->cursors_free[(c->free_head + c->free_count) % CURSORS_MAX] = (uint8_t)k;
    c->free_count++;
}

/* ---- blocking set-up connection ------------------------------------------------------------ */

/* Sends the frames in `buf` (`count` requests) and reads as many answers. Returns how many
 * failed; a failed answer is printed once, and when `forbidden` is not NULL a "forbidden"
 * answer sets it instead. -1 when the connection broke. */
static int setup_exchange(bench_conn *bc, const uint8_t *buf, size_t len, unsigned count,
                          const char *what, bool *forbidden)
{
    int failed = 0;
    bool printed = false;
    if (bench_write_all(bc->fd, buf, len) != 0)
        return -1;
    for (unsigned i = 0; i < count; i++) {
        const uint8_t *body;
        uint32_t size;
        bench_response resp;
        if (bench_conn_read(bc, &body, &size) != 0 || bench_parse_response(body, size, &resp) != 0)
            return -1;
        if (resp.ok)
            continue;
        failed++;
        if (forbidden && strcmp(resp.code, "forbidden") == 0) {
            *forbidden = true;
            continue;
        }
        if (!printed)
            fprintf(stderr, "loadgen: set-up %s: %s: %s\n", what, resp.code, resp.message);
        printed = true;
    }
    return failed;
}

typedef size_t (*setup_builder)(uint8_t *buf, uint64_t rid, unsigned i);

/* The two units the load names, registered first: a write names only registered units. The
 * ids are fixed, so a later run on the same daemon is a retry that answers the first result. */
static size_t setup_unit(uint8_t *buf, uint64_t rid, unsigned i)
{
    mp_writer w;
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "unit.register", 4);
    bench_kv_str(&w, "id", i == 0 ? "lg-unit-ks" : "lg-unit-son");
    bench_kv_str(&w, "unit", i == 0 ? BENCH_FRAME_UNIT : BENCH_ALLOCATION_UNIT);
    bench_kv_str(&w, "name", i == 0 ? "Kommunstyrelsen" : "Social- och omsorgsnämnden");
    bench_kv_str(&w, "kind", i == 0 ? "styrelse" : "nämnd");
    return bench_request_end(&w);
}

static size_t setup_frame(uint8_t *buf, uint64_t rid, unsigned i)
{
    char id[BUDGET_ID_BYTES_MAX + 1], title[64];
    if (i == APPEND_FRAMES)
        read_frame_id(id, sizeof(id));
    else
        frame_id(id, sizeof(id), i);
    snprintf(title, sizeof(title), "Lastprov, ram %u", i);
    return build_grant(buf, rid, id, title);
}

static size_t setup_proposal(uint8_t *buf, uint64_t rid, unsigned i)
{
    char id[BUDGET_ID_BYTES_MAX + 1], frame[BUDGET_ID_BYTES_MAX + 1];
    if (i < APPEND_ALLOCATIONS) {
        allocation_id(id, sizeof(id), i);
        frame_id(frame, sizeof(frame), i % APPEND_FRAMES);
        return build_propose(buf, rid, id, frame, ALLOCATION_AMOUNT);
    }
    snprintf(id, sizeof(id), "lg%s-r%u", tag, i - APPEND_ALLOCATIONS);
    read_frame_id(frame, sizeof(frame));
    return build_propose(buf, rid, id, frame, READ_ALLOCATION_AMOUNT);
}

static size_t setup_approval(uint8_t *buf, uint64_t rid, unsigned i)
{
    char id[BUDGET_ID_BYTES_MAX + 1], target[BUDGET_ID_BYTES_MAX + 1];
    snprintf(id, sizeof(id), "lg%s-d%u", tag, i);
    if (i < APPEND_ALLOCATIONS)
        allocation_id(target, sizeof(target), i);
    else
        snprintf(target, sizeof(target), "lg%s-r%u", tag, i - APPEND_ALLOCATIONS);
    return build_approve(buf, rid, id, target);
}

/* Runs `count` set-up writes made by `build`, SETUP_CHUNK at a time. */
static int setup_step(bench_conn *fr, setup_builder build, unsigned count, const char *what,
                      bool *forbidden)
{
    static uint8_t buf[SETUP_CHUNK * REQUEST_BYTES_MAX];
    static uint64_t rid = 1;
    int failed = 0;
    for (unsigned start = 0; start < count; start += SETUP_CHUNK) {
        size_t len = 0;
        unsigned n = count - start < SETUP_CHUNK ? count - start : SETUP_CHUNK;
        for (unsigned i = 0; i < n; i++)
            len += build(buf + len, rid++, start + i);
        int rc = setup_exchange(fr, buf, len, n, what, forbidden);
        if (rc < 0)
            return -1;
        failed += rc;
    }
    return failed;
}

/* The units and frames the seeded allocations name; fixed ids, so seeding again is a retry. */
static size_t setup_seed_unit(uint8_t *buf, uint64_t rid, unsigned i)
{
    mp_writer w;
    char id[32];
    snprintf(id, sizeof(id), "lg-seed-unit-%u", i + 2);
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "unit.register", 4);
    bench_kv_str(&w, "id", id);
    bench_kv_str(&w, "unit", seed_units[i + 2]);
    bench_kv_str(&w, "name", seed_units[i + 2]);
    bench_kv_str(&w, "kind", "nämnd");
    return bench_request_end(&w);
}

static size_t setup_seed_frame(uint8_t *buf, uint64_t rid, unsigned i)
{
    mp_writer w;
    char id[32];
    snprintf(id, sizeof(id), "lg-seed-f%u", i);
    bench_request_begin(&w, buf, REQUEST_BYTES_MAX, rid, "frame.grant", 7 + BENCH_DECISION_PAIRS);
    bench_kv_str(&w, "id", id);
    bench_kv_str(&w, "unit", seed_units[i]);
    bench_kv_int(&w, "year", BENCH_YEAR);
    bench_kv_int(&w, "amount", FRAME_AMOUNT);
    bench_kv_str(&w, "title", "Lastprov, ram för sidor");
    bench_kv_decision(&w);
    bench_kv_str(&w, "reference", BENCH_REFERENCE);
    mp_write_cstr(&w, "intended");
    mp_write_bool(&w, true);
    return bench_request_end(&w);
}

/* Proposes `count` allocations of 1 öre, SEED_BATCH to a batch: allocation i from frame
 * i % SEED_UNITS to unit (i / SEED_UNITS) % SEED_UNITS. */
static int seed(bench_conn *fr, unsigned count)
{
    static uint8_t buf[1u << 20];
    double t0 = bench_now_s();
    if (setup_step(fr, setup_unit, 2, "unit.register", NULL) != 0 ||
        setup_step(fr, setup_seed_unit, SEED_UNITS - 2, "unit.register", NULL) != 0 ||
        setup_step(fr, setup_seed_frame, SEED_UNITS, "frame.grant", NULL) != 0)
        return -1;
    for (unsigned start = 0; start < count; start += SEED_BATCH) {
        unsigned n = count - start < SEED_BATCH ? count - start : SEED_BATCH;
        mp_writer w;
        bench_response resp;
        bench_request_begin(&w, buf, sizeof(buf), 1000000 + start, "batch", 1);
        mp_write_cstr(&w, "writes");
        mp_write_array(&w, n);
        for (unsigned i = start; i < start + n; i++) {
            char id[32], frame[32];
            snprintf(id, sizeof(id), "lg-seed-a%u", i);
            snprintf(frame, sizeof(frame), "lg-seed-f%u", i % SEED_UNITS);
            mp_write_map(&w, 2);
            bench_kv_str(&w, "op", "allocation.propose");
            mp_write_cstr(&w, "args");
            mp_write_map(&w, 5);
            bench_kv_str(&w, "id", id);
            bench_kv_str(&w, "frame", frame);
            bench_kv_str(&w, "unit", seed_units[(i / SEED_UNITS) % SEED_UNITS]);
            bench_kv_int(&w, "amount", 1);
            bench_kv_str(&w, "purpose", BENCH_PURPOSE);
        }
        size_t len = bench_request_end(&w);
        if (len == 0 || bench_conn_call(fr, buf, len, &resp) != 0 || !resp.ok) {
            fprintf(stderr, "loadgen: seeding at %u: %s: %s\n", start, len ? resp.code : "",
                    len ? resp.message : "the batch does not fit");
            return -1;
        }
    }
    double s = bench_now_s() - t0;
    printf("seeded: %u allocations in %.1f s (%.0f/s)\n", count, s, count / s);
    bench_result("seed_allocations_per_s", "%.0f", count / s);
    return 0;
}

/* The daemon's stats: head, batches. */
static int daemon_stats(bench_conn *fr, uint64_t *head, uint64_t *batches)
{
    uint8_t buf[REQUEST_BYTES_MAX];
    const uint8_t *body;
    uint32_t size;
    bench_response resp;
    size_t len = build_plain(buf, 999999, "stats");
    if (bench_write_all(fr->fd, buf, len) != 0 || bench_conn_read(fr, &body, &size) != 0 ||
        bench_parse_response(body, size, &resp) != 0 || !resp.ok)
        return -1;
    *head = bench_result_uint(&resp, "head", 0);
    *batches = bench_result_uint(&resp, "batches", 0);
    return 0;
}

/*
 * Makes the set-up approvals as another identity, since budgetd refuses a decision by the
 * proposer (four-eyes). A child process takes `uid` and keeps group root, which the socket's
 * mode 0660 admits when its folder is open to the group. Returns 0 when every approval was
 * made, 1 when some were refused, -1 when the child could not connect or broke.
 */
static int approve_as(const char *socket_path, uid_t uid)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        bench_conn c;
        bool forbidden = false;
        if (setgroups(0, NULL) != 0 || setresuid(uid, uid, uid) != 0)
            _exit(3);
        if (bench_conn_open(&c, socket_path, SETUP_TIMEOUT_MS) != 0) {
            fprintf(stderr, "loadgen: uid %u cannot connect to %s: %s\n", (unsigned)uid,
                    socket_path, strerror(errno));
            _exit(3);
        }
        int failed = setup_step(&c, setup_approval, APPEND_ALLOCATIONS + READ_ALLOCATIONS,
                                "approve", &forbidden);
        _exit(failed < 0 ? 3 : failed > 0 ? 1 : 0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status) == 0 ? 0 : WEXITSTATUS(status) == 1 ? 1 : -1;
}

static int setup(bench_conn *fr, const char *socket_path, uid_t decider)
{
    bool forbidden = false;
    double t0 = bench_now_s();
    if (setup_step(fr, setup_unit, 2, "unit.register", NULL) != 0)
        return -1;
    if (setup_step(fr, setup_frame, APPEND_FRAMES + 1, "frame.grant", NULL) != 0)
        return -1;
    if (setup_step(fr, setup_proposal, APPEND_ALLOCATIONS + READ_ALLOCATIONS, "allocation.propose",
                   NULL) != 0)
        return -1;
    int failed;
    if (getuid() == 0 && decider != 0) {
        failed = approve_as(socket_path, decider);
        forbidden = failed != 0;
    } else {
        failed = setup_step(fr, setup_approval, APPEND_ALLOCATIONS + READ_ALLOCATIONS, "approve",
                            &forbidden);
        if (failed < 0 || (failed > 0 && !forbidden))
            return -1;
    }
    if (forbidden) {
        /* No other identity could approve: appends are then allocation proposals only, which
         * keep succeeding just as well. */
        fprintf(stderr, "loadgen: the allocations could not be approved; appends are "
                        "allocation proposals only\n");
        avrop_enabled = false;
    }
    printf("set-up: %u frames, %u allocations in %.2f s (run tag %s)\n", APPEND_FRAMES + 1,
           APPEND_ALLOCATIONS + READ_ALLOCATIONS, bench_now_s() - t0, tag);
    return 0;
}

/* ---- the run ------------------------------------------------------------------------------- */

typedef struct {
    int epoll_fd;
    lg_conn *conns;
    unsigned count;
    unsigned depth;
    uint64_t warm_ns, end_ns;
    bool sending;
    uint64_t inflight;
    role_stats stats[2];
    bool readers_on; /* --compare: false while the appenders run alone */
    /* --daemon-pid: budgetd's CPU time (s) when the warm-up ended, read at the first turn
     * after it, so that a figure per answer counts the answers of the timed run only. */
    long daemon_pid;
    bool warm_read;
    double cpu_warm;
} run_state;

static int proc_cpu(long pid, double *seconds);

static int conn_reserve_out(lg_conn *c, size_t more)
{
    if (c->out_sent > 0 && c->out_sent == c->out_len)
        c->out_sent = c->out_len = 0;
    if (c->out_cap - c->out_len >= more)
        return 0;
    if (c->out_sent > 0) {
        memmove(c->out, c->out + c->out_sent, c->out_len - c->out_sent);
        c->out_len -= c->out_sent;
        c->out_sent = 0;
        if (c->out_cap - c->out_len >= more)
            return 0;
    }
    size_t cap = c->out_cap ? c->out_cap * 2 : 16384;
    while (cap - c->out_len < more)
        cap *= 2;
    uint8_t *p = realloc(c->out, cap);
    if (!p)
        return -1;
    c->out = p;
    c->out_cap = cap;
    return 0;
}

static void conn_poll_out(run_state *s, lg_conn *c, bool want)
{
    if (c->polling_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
    c->polling_out = want;
}

static int conn_flush(run_state *s, lg_conn *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_sent, c->out_len - c->out_sent);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0)
            return -1;
        c->out_sent += (size_t)n;
    }
    conn_poll_out(s, c, c->out_sent < c->out_len);
    return 0;
}

/* Sends requests until `depth` are in flight (while the run still sends). */
static int conn_top_up(run_state *s, lg_conn *c, uint64_t now)
{
    bool reader = c->kind == ROLE_READ;
    unsigned depth = s->depth;
    if (reader && !s->readers_on)
        return conn_flush(s, c);
    while (s->sending && c->inflight < depth) {
        if (conn_reserve_out(c, REQUEST_BYTES_MAX) != 0)
            return -1;
        size_t n = build_next(c, c->out + c->out_len);
        if (n == 0)
            return -1;
        c->out_len += n;
        c->sent_ns[(c->ring_head + c->inflight) % DEPTH_MAX] = now;
        c->inflight++;
        s->inflight++;
    }
    return conn_flush(s, c);
}

static int conn_on_frame(run_state *s, lg_conn *c, const uint8_t *body, uint32_t size, uint64_t now)
{
    bench_response resp;
    if (bench_parse_response(body, size, &resp) != 0 || c->inflight == 0) {
        fprintf(stderr, "loadgen: connection %u: an answer that is not one\n", c->index);
        return -1;
    }
    uint64_t sent = c->sent_ns[c->ring_head];
    unsigned cursor = c->cursor_of[c->ring_head];
    c->ring_head = (c->ring_head + 1) % DEPTH_MAX;
    c->inflight--;
    s->inflight--;
    if (c->kind == ROLE_READ && reading != READ_FRAME)
        page_advance(c, cursor, &resp);
    if (now >= s->warm_ns && now < s->end_ns) {
        stats_record(&s->stats[c->kind], &resp);
        if (resp.ok)
            bench_latency_add(&s->stats[c->kind].latency, now - sent);
    }
    return 0;
}

static int conn_on_readable(run_state *s, lg_conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 262144;
            uint8_t *p = realloc(c->in, cap);
            if (!p)
                return -1;
            c->in = p;
            c->in_cap = cap;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            fprintf(stderr, "loadgen: connection %u closed by budgetd\n", c->index);
            return -1;
        }
        c->in_len += (size_t)n;
        if ((size_t)n < 65536)
            break;
    }
    uint64_t now = bench_now_ns();
    size_t used = 0;
    uint32_t size;
    int rc;
    while ((rc = budget_frame_peek(c->in + used, c->in_len - used, &size)) == 0) {
        if (conn_on_frame(s, c, c->in + used + BUDGET_FRAME_HEADER_BYTES, size, now) != 0)
            return -1;
        used += BUDGET_FRAME_HEADER_BYTES + size;
    }
    if (rc < 0)
        return -1;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    return conn_top_up(s, c, now);
}

static int run(run_state *s)
{
    struct epoll_event events[64];
    uint64_t now = bench_now_ns();

    for (unsigned i = 0; i < s->count; i++)
        if (conn_top_up(s, &s->conns[i], now) != 0)
            return -1;
    for (;;) {
        int n = epoll_wait(s->epoll_fd, events, 64, 10);
        if (n < 0 && errno != EINTR)
            return -1;
        for (int i = 0; i < n; i++) {
            lg_conn *c = events[i].data.ptr;
            if ((events[i].events & (EPOLLERR | EPOLLHUP)) && !(events[i].events & EPOLLIN)) {
                fprintf(stderr, "loadgen: connection %u broke\n", c->index);
                return -1;
            }
            if ((events[i].events & EPOLLOUT) && conn_flush(s, c) != 0)
                return -1;
            if ((events[i].events & EPOLLIN) && conn_on_readable(s, c) != 0)
                return -1;
        }
        now = bench_now_ns();
        if (!s->warm_read && now >= s->warm_ns) {
            s->warm_read = true;
            if (proc_cpu(s->daemon_pid, &s->cpu_warm) != 0)
                return -1;
        }
        if (s->sending && now >= s->end_ns)
            s->sending = false;
        if (!s->sending && s->inflight == 0)
            return 0;
        if (!s->sending && now >= s->end_ns + (uint64_t)DRAIN_TIMEOUT_MS * 1000000u) {
            fprintf(stderr, "loadgen: %llu answers still missing %d ms after the run\n",
                    (unsigned long long)s->inflight, DRAIN_TIMEOUT_MS);
            return -1;
        }
    }
}

/* One timed run, with the readers or without; the stats start from zero. */
static int run_phase(run_state *s, bool readers_on, double seconds, double warmup)
{
    for (int k = 0; k < 2; k++) {
        bench_latency_free(&s->stats[k].latency);
        memset(&s->stats[k], 0, sizeof(s->stats[k]));
        bench_latency_init(&s->stats[k].latency);
    }
    s->readers_on = readers_on;
    s->warm_read = false;
    uint64_t start = bench_now_ns();
    s->warm_ns = start + (uint64_t)(warmup * 1e9);
    s->end_ns = s->warm_ns + (uint64_t)(seconds * 1e9);
    s->sending = true;
    return run(s);
}

static void report(run_state *s, role kind, unsigned clients, double seconds, const char *name)
{
    role_stats *st = &s->stats[kind];
    char key[96];
    double per_s = (double)st->ok / seconds;
    double p50 = (double)bench_latency_at(&st->latency, 0.5) / 1e3;
    double p99 = (double)bench_latency_at(&st->latency, 0.99) / 1e3;
    double p999 = (double)bench_latency_at(&st->latency, 0.999) / 1e3;

    if (clients == 0)
        return;
    printf("%-8s %3u clients x depth %u: %10.0f ok/s  p50 %9.1f us  p99 %9.1f us  p999 %9.1f us"
           "  errors %llu\n",
           role_names[kind], clients, s->depth, per_s, p50, p99, p999,
           (unsigned long long)st->failed);
    for (unsigned i = 0; i < st->code_count; i++)
        printf("         %llu x %s, first: %s\n", (unsigned long long)st->code_hits[i],
               st->codes[i], st->first_message[i]);
    snprintf(key, sizeof(key), "%s_%s_per_s", name, role_names[kind]);
    bench_result(key, "%.0f", per_s);
    snprintf(key, sizeof(key), "%s_%s_p50_us", name, role_names[kind]);
    bench_result(key, "%.1f", p50);
    snprintf(key, sizeof(key), "%s_%s_p99_us", name, role_names[kind]);
    bench_result(key, "%.1f", p99);
    snprintf(key, sizeof(key), "%s_%s_p999_us", name, role_names[kind]);
    bench_result(key, "%.1f", p999);
    snprintf(key, sizeof(key), "%s_%s_errors", name, role_names[kind]);
    bench_result(key, "%llu", (unsigned long long)st->failed);
}

/* The CPU time, user and system, that process `pid` and all its threads have taken, in
 * seconds (fields 14 and 15 of /proc/PID/stat, in clock ticks). A pid of 0 reads nothing. */
static int proc_cpu(long pid, double *seconds)
{
    char path[64], buf[1024];
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name, in parentheses, may hold spaces: the fields count from its end. */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                     &stime) != 2) {
        fprintf(stderr, "loadgen: %s: cannot read the CPU times\n", path);
        return -1;
    }
    *seconds = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: loadgen --socket PATH [--append-clients N] [--read-clients N] [--depth D]\n"
            "               [--seconds S] [--warmup S] [--name NAME] [--decider-uid UID]\n"
            "               [--read-mode frame|pages|unit] [--read-spread N]\n"
            "               [--seed-allocations N] [--compare] [--daemon-pid PID]\n"
            "Sets up frames and allocations on a running budgetd, then keeps D requests in\n"
            "flight on each connection for S seconds and reports ok/s, latency and errors.\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"socket", required_argument, NULL, 's'},
        {"append-clients", required_argument, NULL, 'a'},
        {"read-clients", required_argument, NULL, 'r'},
        {"depth", required_argument, NULL, 'd'},
        {"seconds", required_argument, NULL, 't'},
        {"warmup", required_argument, NULL, 'w'},
        {"name", required_argument, NULL, 'n'},
        {"decider-uid", required_argument, NULL, 'u'},
        {"read-mode", required_argument, NULL, 'm'},
        {"read-spread", required_argument, NULL, 'p'},
        {"seed-allocations", required_argument, NULL, 'e'},
        {"compare", no_argument, NULL, 'c'},
        {"daemon-pid", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *socket_path = NULL, *name = "load";
    unsigned appenders = 0, readers = 0, depth = 1;
    double seconds = 3.0, warmup = 0.5;
    uid_t decider = 65534;
    unsigned seed_count = 0;
    uint64_t spread = 0;
    bool compare = false;
    long daemon_pid = 0;
    int opt;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 's':
            socket_path = optarg;
            break;
        case 'a':
            appenders = (unsigned)bench_arg_long(optarg, "--append-clients");
            break;
        case 'r':
            readers = (unsigned)bench_arg_long(optarg, "--read-clients");
            break;
        case 'd':
            depth = (unsigned)bench_arg_long(optarg, "--depth");
            break;
        case 't':
            seconds = bench_arg_double(optarg, "--seconds");
            break;
        case 'w':
            warmup = bench_arg_double(optarg, "--warmup");
            break;
        case 'n':
            name = optarg;
            break;
        case 'u':
            decider = (uid_t)bench_arg_long(optarg, "--decider-uid");
            break;
        case 'm':
            if (strcmp(optarg, "frame") != 0 && strcmp(optarg, "pages") != 0 &&
                strcmp(optarg, "unit") != 0) {
                usage(stderr);
                return 2;
            }
            reading = optarg[0] == 'f' ? READ_FRAME : optarg[0] == 'p' ? READ_PAGES : READ_UNIT;
            break;
        case 'p':
            spread = (uint64_t)bench_arg_long(optarg, "--read-spread");
            break;
        case 'e':
            seed_count = (unsigned)bench_arg_long(optarg, "--seed-allocations");
            break;
        case 'c':
            compare = true;
            break;
        case 'P':
            daemon_pid = bench_arg_long(optarg, "--daemon-pid");
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!socket_path || (appenders + readers == 0 && seed_count == 0) ||
        appenders + readers > CONNECTIONS_MAX || depth > DEPTH_MAX ||
        depth > BUDGET_CONN_INFLIGHT_MAX ||
        (readers > 0 && reading != READ_FRAME && depth > CURSORS_MAX)) {
        usage(stderr);
        return 2;
    }
    snprintf(tag, sizeof(tag), "%06x",
             (unsigned)((getpid() * 2654435761u) ^ time(NULL)) & 0xffffffu);

    bench_conn fr;
    if (bench_conn_open(&fr, socket_path, SETUP_TIMEOUT_MS) != 0) {
        fprintf(stderr, "loadgen: cannot connect to %s: %s\n", socket_path, strerror(errno));
        return 1;
    }
    if (seed_count > 0 && seed(&fr, seed_count) != 0) {
        fprintf(stderr, "loadgen: seeding failed\n");
        return 1;
    }
    if (appenders + readers == 0)
        return 0;
    uint64_t head0 = 0, batches0 = 0, head1 = 0, batches1 = 0;
    if (setup(&fr, socket_path, decider) != 0 || daemon_stats(&fr, &head0, &batches0) != 0) {
        fprintf(stderr, "loadgen: set-up failed\n");
        return 1;
    }

    run_state s = {0};
    s.count = appenders + readers;
    s.depth = depth;
    s.daemon_pid = daemon_pid;
    s.conns = calloc(s.count, sizeof(*s.conns));
    s.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (!s.conns || s.epoll_fd < 0)
        return 1;
    for (unsigned i = 0; i < s.count; i++) {
        lg_conn *c = &s.conns[i];
        c->index = i;
        c->kind = i < appenders ? ROLE_APPEND : ROLE_READ;
        c->next_request_id = 1;
        if (c->kind == ROLE_READ) {
            unsigned r = i - appenders;
            uint64_t list = reading == READ_UNIT ? spread / SEED_UNITS : spread;
            for (unsigned k = 0; k < depth && k < CURSORS_MAX; k++) {
                unsigned at = r * depth + k;
                c->unit[k] = at % SEED_UNITS;
                c->offsets[k][1] = list * at / (readers * depth);
                c->cursors_free[k] = (uint8_t)k;
            }
            c->free_count = depth;
        }
        c->fd = bench_connect(socket_path, true);
        if (c->fd < 0) {
            fprintf(stderr, "loadgen: connection %u: %s\n", i, strerror(errno));
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(s.epoll_fd, EPOLL_CTL_ADD, c->fd, &ev);
    }
    bench_latency_init(&s.stats[0].latency);
    bench_latency_init(&s.stats[1].latency);
    double alone = 0;
    if (compare && appenders > 0 && readers > 0) {
        char alone_name[96];
        snprintf(alone_name, sizeof(alone_name), "%s_alone", name);
        if (run_phase(&s, false, seconds, warmup) != 0) {
            fprintf(stderr, "loadgen: the run failed\n");
            return 1;
        }
        printf("%s: %u append clients alone, depth %u, %.1f s after %.1f s of warm-up\n",
               alone_name, appenders, depth, seconds, warmup);
        report(&s, ROLE_APPEND, appenders, seconds, alone_name);
        alone = (double)s.stats[ROLE_APPEND].ok / seconds;
    }
    double cpu0 = 0, cpu1 = 0;
    if (daemon_stats(&fr, &head0, &batches0) != 0 || proc_cpu(daemon_pid, &cpu0) != 0 ||
        run_phase(&s, true, seconds, warmup) != 0 || daemon_stats(&fr, &head1, &batches1) != 0 ||
        proc_cpu(daemon_pid, &cpu1) != 0) {
        fprintf(stderr, "loadgen: the run failed\n");
        return 1;
    }

    printf("%s: %u append + %u read clients, depth %u, %.1f s after %.1f s of warm-up%s\n", name,
           appenders, readers, depth, seconds, warmup,
           avrop_enabled ? "" : " (appends: proposals only)");
    report(&s, ROLE_APPEND, appenders, seconds, name);
    report(&s, ROLE_READ, readers, seconds, name);
    if (alone > 0) {
        double with = (double)s.stats[ROLE_APPEND].ok / seconds;
        printf("         appends beside the readers / alone: %.2f\n", with / alone);
        char key[96];
        snprintf(key, sizeof(key), "%s_appends_ratio", name);
        bench_result(key, "%.3f", with / alone);
    }
    if (appenders > 0 && batches1 > batches0) {
        double per_commit = (double)(head1 - head0) / (double)(batches1 - batches0);
        printf("         %llu events in %llu group commits: %.1f events per commit\n",
               (unsigned long long)(head1 - head0), (unsigned long long)(batches1 - batches0),
               per_commit);
        char key[96];
        snprintf(key, sizeof(key), "%s_events_per_commit", name);
        bench_result(key, "%.1f", per_commit);
    }
    if (daemon_pid > 0 && head1 > head0) {
        double us = (cpu1 - cpu0) * 1e6 / (double)(head1 - head0);
        printf("         budgetd's CPU per event: %.1f us (%.2f s of CPU in all)\n", us,
               cpu1 - cpu0);
        char key[96];
        snprintf(key, sizeof(key), "%s_cpu_us_per_event", name);
        bench_result(key, "%.2f", us);
    }
    if (daemon_pid > 0 && appenders == 0 && s.stats[ROLE_READ].ok > 0) {
        /* Reads alone: the CPU of the timed run (from the end of the warm-up) per answer. */
        double us = (cpu1 - s.cpu_warm) * 1e6 / (double)s.stats[ROLE_READ].ok;
        printf("         budgetd's CPU per read: %.1f us\n", us);
        char key[96];
        snprintf(key, sizeof(key), "%s_cpu_us_per_read", name);
        bench_result(key, "%.2f", us);
    }
    for (unsigned i = 0; i < s.count; i++) {
        close(s.conns[i].fd);
        free(s.conns[i].in);
        free(s.conns[i].out);
    }
    free(s.conns);
    close(s.epoll_fd);
    bench_conn_close(&fr);
    bench_latency_free(&s.stats[0].latency);
    bench_latency_free(&s.stats[1].latency);
    return s.stats[0].failed + s.stats[1].failed > 0 ? 3 : 0;
}
