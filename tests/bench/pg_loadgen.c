/*
 * pg_loadgen: budgetd's append mix on PostgreSQL, measured the way loadgen measures budgetd.
 *
 * The peer's schema and functions are tests/bench/pg_ledger.sql: budget_propose() and
 * budget_avrop() make the checks budgetd makes before it appends, update the reservation and
 * insert the event, in the one transaction of one call. This program opens C connections,
 * keeps D calls in flight on each (libpq pipeline mode, a sync after every call, so each call
 * is its own transaction and is answered after its commit is durable), and for a fixed time
 * after a warm-up alternates the two appends exactly as loadgen does: allocation.propose of
 * 1 öre out of one of 16 frames of 10^15 öre, avrop.request of 1 öre out of one of 256
 * approved allocations of 10^12 öre, each with a new id. Before the run it makes those frames
 * and allocations (budget_bench_setup(), not measured).
 *
 * It reports what loadgen reports, under the same keys: appends answered ok per second,
 * p50/p99/p999 latency (from sending a call to the end of its transaction, its Sync answered)
 * and errors by SQLSTATE. After the run it counts the events the run appended and compares
 * them with the calls answered ok, and reports the WAL bytes per append.
 *
 * One thread and poll(), as loadgen: on a two-core machine the server's backends take one
 * core's worth and the load generator the rest.
 *
 * usage: pg_loadgen --conninfo CONNINFO [--clients N] [--depth D] [--seconds S]
 *                   [--warmup S] [--name NAME]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bench_util.h"

#define CLIENTS_MAX 512
#define DEPTH_MAX 64
/* What loadgen's appends draw on: frames for the proposals, allocations for the avrop. */
#define APPEND_FRAMES 16
#define APPEND_ALLOCATIONS 256
#define DRAIN_TIMEOUT_MS 30000
#define CODES_MAX 12
#define ID_BYTES_MAX 64

typedef struct {
    uint64_t ok, failed;
    unsigned code_count;
    char codes[CODES_MAX][8];
    uint64_t code_hits[CODES_MAX];
    char first_message[CODES_MAX][160];
    bench_latency latency;
    uint64_t ok_total; /* warm-up and drain included: what the log must hold */
} pg_stats;

typedef struct {
    PGconn *pg;
    unsigned index;
    uint64_t writes;
    uint64_t sent_ns[DEPTH_MAX]; /* a ring, oldest at head */
    uint32_t ring_head, inflight;
    bool failed_current; /* the oldest call in flight has answered with an error */
    bool want_write;     /* libpq holds bytes it could not send yet */
} pg_client;

typedef struct {
    pg_client *clients;
    unsigned count, depth;
    uint64_t warm_ns, end_ns;
    bool sending;
    char tag[16];
    pg_stats stats;
} run_state;

/* ---- calls ---------------------------------------------------------------------------- */

static const char *const propose_sql = "SELECT budget_propose($1, $2, $3, $4::bigint, $5)";
static const char *const avrop_sql = "SELECT budget_avrop($1, $2, $3::bigint, $4)";

/* Sends the client's next append (loadgen's: even writes propose, odd ones call off). */
static int client_send(run_state *s, pg_client *c, uint64_t now)
{
    char id[ID_BYTES_MAX + 1], ref[ID_BYTES_MAX + 1];
    uint64_t n = c->writes++;
    const char *params[5];
    int sent;

    snprintf(id, sizeof id, "pg%s-c%u-%" PRIu64, s->tag, c->index, n);
    params[0] = id;
    params[1] = ref;
    if (n % 2 == 1) {
        snprintf(ref, sizeof ref, "pg%s-a%u", s->tag,
                 (unsigned)((c->index * 7 + n) % APPEND_ALLOCATIONS));
        params[2] = "1";
        params[3] = BENCH_NOTE;
        sent = PQsendQueryPrepared(c->pg, "avrop", 4, params, NULL, NULL, 0);
    } else {
        snprintf(ref, sizeof ref, "pg%s-f%u", s->tag, (unsigned)((c->index + n) % APPEND_FRAMES));
        params[2] = BENCH_ALLOCATION_UNIT;
        params[3] = "1";
        params[4] = BENCH_PURPOSE;
        sent = PQsendQueryPrepared(c->pg, "propose", 5, params, NULL, NULL, 0);
    }
    /* The Sync ends the call's implicit transaction: its answer comes after the commit. */
    if (!sent || !PQpipelineSync(c->pg)) {
        fprintf(stderr, "pg_loadgen: client %u: %s", c->index, PQerrorMessage(c->pg));
        return -1;
    }
    c->sent_ns[(c->ring_head + c->inflight) % DEPTH_MAX] = now;
    c->inflight++;
    return 0;
}

/* Sends what libpq holds; remembers whether it must wait for the socket to take more. */
static int client_flush(pg_client *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0) {
        fprintf(stderr, "pg_loadgen: client %u: %s", c->index, PQerrorMessage(c->pg));
        return -1;
    }
    c->want_write = rc == 1;
    return 0;
}

/* ---- answers -------------------------------------------------------------------------- */

static void stats_error(pg_stats *st, const PGresult *res)
{
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *message = PQresultErrorMessage(res);
    unsigned i;

    if (!code)
        code = "?????";
    for (i = 0; i < st->code_count; i++)
        if (strcmp(st->codes[i], code) == 0)
            break;
    if (i == st->code_count) {
        if (st->code_count == CODES_MAX)
            return;
        st->code_count++;
        snprintf(st->codes[i], sizeof st->codes[i], "%s", code);
        snprintf(st->first_message[i], sizeof st->first_message[i], "%s", message);
        st->first_message[i][strcspn(st->first_message[i], "\n")] = '\0';
    }
    st->code_hits[i]++;
}

/* The oldest call of `c` is over (its Sync answered): counted, and timed when in the window. */
static void client_complete(run_state *s, pg_client *c, uint64_t now)
{
    uint64_t sent = c->sent_ns[c->ring_head];
    bool ok = !c->failed_current;

    c->ring_head = (c->ring_head + 1) % DEPTH_MAX;
    c->inflight--;
    c->failed_current = false;
    if (ok)
        s->stats.ok_total++;
    if (sent < s->warm_ns || now > s->end_ns)
        return;
    if (ok) {
        s->stats.ok++;
        bench_latency_add(&s->stats.latency, now - sent);
    } else {
        s->stats.failed++;
    }
}

/* Reads what the server sent and handles every whole answer in it. */
static int client_read(run_state *s, pg_client *c)
{
    if (!PQconsumeInput(c->pg)) {
        fprintf(stderr, "pg_loadgen: client %u: %s", c->index, PQerrorMessage(c->pg));
        return -1;
    }
    /* Between two calls' results PQgetResult gives one NULL; two in a row: nothing is left. */
    bool last_null = false;
    while (c->inflight > 0 && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (last_null)
                break;
            last_null = true;
            continue;
        }
        last_null = false;
        switch (PQresultStatus(res)) {
        case PGRES_TUPLES_OK:
            if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
                c->failed_current = true;
            break;
        case PGRES_PIPELINE_SYNC:
            client_complete(s, c, bench_now_ns());
            break;
        case PGRES_PIPELINE_ABORTED:
            c->failed_current = true;
            break;
        default:
            /* Named by code only when counted: sent in the window, answered before its end. */
            if (!c->failed_current && c->sent_ns[c->ring_head] >= s->warm_ns &&
                bench_now_ns() <= s->end_ns)
                stats_error(&s->stats, res);
            c->failed_current = true;
            break;
        }
        PQclear(res);
    }
    return 0;
}

/* ---- the run -------------------------------------------------------------------------- */

static int run(run_state *s)
{
    struct pollfd *fds = calloc(s->count, sizeof(*fds));
    uint64_t drain_end = 0;
    int rc = -1;

    if (!fds)
        return -1;
    for (;;) {
        uint64_t now = bench_now_ns();
        if (s->sending && now >= s->end_ns) {
            s->sending = false;
            drain_end = now + (uint64_t)DRAIN_TIMEOUT_MS * 1000000u;
        }
        unsigned busy = 0;
        for (unsigned i = 0; i < s->count; i++) {
            pg_client *c = &s->clients[i];
            bool sent = false;
            while (s->sending && c->inflight < s->depth) {
                if (client_send(s, c, now) != 0)
                    goto out;
                sent = true;
            }
            if ((sent || c->want_write) && client_flush(c) != 0)
                goto out;
            busy += c->inflight > 0;
            fds[i].fd = PQsocket(c->pg);
            fds[i].events = (short)(POLLIN | (c->want_write ? POLLOUT : 0));
            fds[i].revents = 0;
        }
        if (!s->sending && busy == 0)
            break;
        if (!s->sending && now > drain_end) {
            fprintf(stderr, "pg_loadgen: %u clients still wait for answers\n", busy);
            goto out;
        }
        if (poll(fds, s->count, 100) < 0 && errno != EINTR)
            goto out;
        for (unsigned i = 0; i < s->count; i++) {
            pg_client *c = &s->clients[i];
            if ((fds[i].revents & POLLOUT) && client_flush(c) != 0)
                goto out;
            if ((fds[i].revents & (POLLIN | POLLERR | POLLHUP)) && client_read(s, c) != 0)
                goto out;
        }
    }
    rc = 0;
out:
    free(fds);
    return rc;
}

/* ---- set-up and the check after ------------------------------------------------------- */

/* One value of a query on the control connection, as text into `out`; -1 on failure. */
static int query_value(PGconn *pg, const char *sql, int count, const char *const *params, char *out,
                       size_t size)
{
    PGresult *res = PQexecParams(pg, sql, count, NULL, params, NULL, NULL, 0);
    int rc = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
        rc = 0;
    } else {
        fprintf(stderr, "pg_loadgen: %s: %s", sql, PQerrorMessage(pg));
    }
    PQclear(res);
    return rc;
}

static PGconn *connect_to(const char *conninfo)
{
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "pg_loadgen: cannot connect (%s): %s", conninfo, PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/* A client connection: the two calls prepared, then non-blocking and in pipeline mode. */
static int client_open(pg_client *c, const char *conninfo)
{
    c->pg = connect_to(conninfo);
    if (!c->pg)
        return -1;
    const char *names[2] = {"propose", "avrop"};
    const char *sql[2] = {propose_sql, avrop_sql};
    for (int k = 0; k < 2; k++) {
        PGresult *res = PQprepare(c->pg, names[k], sql[k], 0, NULL);
        bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!ok) {
            fprintf(stderr, "pg_loadgen: prepare %s: %s", names[k], PQerrorMessage(c->pg));
            return -1;
        }
    }
    if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg)) {
        fprintf(stderr, "pg_loadgen: pipeline mode: %s", PQerrorMessage(c->pg));
        return -1;
    }
    return 0;
}

static void report(run_state *s, double seconds, const char *name)
{
    pg_stats *st = &s->stats;
    char key[96];
    double per_s = (double)st->ok / seconds;
    double p50 = (double)bench_latency_at(&st->latency, 0.5) / 1e3;
    double p99 = (double)bench_latency_at(&st->latency, 0.99) / 1e3;
    double p999 = (double)bench_latency_at(&st->latency, 0.999) / 1e3;

    printf("appends  %3u clients x depth %u: %10.0f ok/s  p50 %9.1f us  p99 %9.1f us  p999 %9.1f "
           "us  errors %" PRIu64 "\n",
           s->count, s->depth, per_s, p50, p99, p999, st->failed);
    for (unsigned i = 0; i < st->code_count; i++)
        printf("         %" PRIu64 " x SQLSTATE %s, first: %s\n", st->code_hits[i], st->codes[i],
               st->first_message[i]);
    snprintf(key, sizeof key, "%s_appends_per_s", name);
    bench_result(key, "%.0f", per_s);
    snprintf(key, sizeof key, "%s_appends_p50_us", name);
    bench_result(key, "%.1f", p50);
    snprintf(key, sizeof key, "%s_appends_p99_us", name);
    bench_result(key, "%.1f", p99);
    snprintf(key, sizeof key, "%s_appends_p999_us", name);
    bench_result(key, "%.1f", p999);
    snprintf(key, sizeof key, "%s_appends_errors", name);
    bench_result(key, "%" PRIu64, st->failed);
}

/* After the run: the events appended against the calls answered ok, and WAL per append. */
static int check_after(PGconn *control, run_state *s, const char *seq0, const char *lsn0,
                       const char *name)
{
    char events[32], wal[32];
    const char *params[1] = {seq0};
    if (query_value(control, "SELECT count(*) FROM events WHERE seq > $1::bigint", 1, params,
                    events, sizeof events) != 0)
        return -1;
    params[0] = lsn0;
    if (query_value(control, "SELECT pg_current_wal_lsn() - $1::pg_lsn", 1, params, wal,
                    sizeof wal) != 0)
        return -1;
    uint64_t appended = strtoull(events, NULL, 10);
    double wal_bytes = strtod(wal, NULL);
    printf("         %" PRIu64 " events appended, %" PRIu64 " calls answered ok%s; %.0f WAL bytes "
           "per append\n",
           appended, s->stats.ok_total, appended == s->stats.ok_total ? "" : " (MISMATCH)",
           appended ? wal_bytes / (double)appended : 0);
    char key[96];
    snprintf(key, sizeof key, "%s_wal_bytes_per_append", name);
    bench_result(key, "%.0f", appended ? wal_bytes / (double)appended : 0);
    return appended == s->stats.ok_total ? 0 : -1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: pg_loadgen --conninfo CONNINFO [--clients N] [--depth D] [--seconds S]\n"
                 "                  [--warmup S] [--name NAME]\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"conninfo", required_argument, NULL, 'c'}, {"clients", required_argument, NULL, 'n'},
        {"depth", required_argument, NULL, 'd'},    {"seconds", required_argument, NULL, 't'},
        {"warmup", required_argument, NULL, 'w'},   {"name", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    const char *conninfo = NULL, *name = "pg";
    unsigned clients = 1, depth = 1;
    double seconds = 3, warmup = 1;
    int opt;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            conninfo = optarg;
            break;
        case 'n':
            clients = (unsigned)bench_arg_long(optarg, "--clients");
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
        case 'N':
            name = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!conninfo || clients == 0 || clients > CLIENTS_MAX || depth == 0 || depth > DEPTH_MAX) {
        usage(stderr);
        return 2;
    }

    run_state s = {0};
    snprintf(s.tag, sizeof s.tag, "%06x",
             (unsigned)((getpid() * 2654435761u) ^ time(NULL)) & 0xffffffu);
    s.count = clients;
    s.depth = depth;

    PGconn *control = connect_to(conninfo);
    if (!control)
        return 1;
    char year[16], frames[16], allocations[16], done[32], seq0[32], lsn0[32];
    snprintf(year, sizeof year, "%d", BENCH_YEAR);
    snprintf(frames, sizeof frames, "%d", APPEND_FRAMES);
    snprintf(allocations, sizeof allocations, "%d", APPEND_ALLOCATIONS);
    const char *setup[4] = {s.tag, year, frames, allocations};
    if (query_value(control, "SELECT budget_bench_setup($1, $2::int, $3::int, $4::int)", 4, setup,
                    done, sizeof done) != 0 ||
        query_value(control, "SELECT coalesce(max(seq), 0) FROM events", 0, NULL, seq0,
                    sizeof seq0) != 0 ||
        query_value(control, "SELECT pg_current_wal_lsn()", 0, NULL, lsn0, sizeof lsn0) != 0)
        return 1;

    s.clients = calloc(clients, sizeof(*s.clients));
    if (!s.clients)
        return 1;
    for (unsigned i = 0; i < clients; i++) {
        s.clients[i].index = i;
        if (client_open(&s.clients[i], conninfo) != 0)
            return 1;
    }
    bench_latency_init(&s.stats.latency);
    s.warm_ns = bench_now_ns() + (uint64_t)(warmup * 1e9);
    s.end_ns = s.warm_ns + (uint64_t)(seconds * 1e9);
    s.sending = true;
    if (run(&s) != 0) {
        fprintf(stderr, "pg_loadgen: the run failed\n");
        return 1;
    }

    printf("%s: %u append clients on PostgreSQL, depth %u, %.1f s after %.1f s of warm-up\n", name,
           clients, depth, seconds, warmup);
    report(&s, seconds, name);
    int checked = check_after(control, &s, seq0, lsn0, name);

    for (unsigned i = 0; i < clients; i++)
        PQfinish(s.clients[i].pg);
    free(s.clients);
    PQfinish(control);
    bench_latency_free(&s.stats.latency);
    return checked != 0 ? 1 : s.stats.failed > 0 ? 3 : 0;
}
