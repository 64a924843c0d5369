/*
 * Hostile clients, each while four honest clients keep working (a hello and a durable
 * frame.grant in turn, at a clerk's pace). For every attack the test checks that the daemon
 * answers the attacker as docs/protocol.md says, that every honest request is served, and
 * that the daemon's memory stays bounded; it prints the honest clients' p50/p99 latency and
 * the daemon's resident memory (VmRSS now, VmHWM its peak) for docs/reliability.md. Latency
 * is printed, never asserted on.
 *
 * Attacks: msgpack headers that claim 4 G elements or bytes; a 4 GiB length prefix; nesting
 * far past the limit in 1 MiB frames; 1000 idle connections (and the 1025th refused); clients
 * that send one byte a second; a client that pipelines thousands of requests and never reads.
 *
 * RELIABILITY_ATTACK_S sets how long each attack lasts (default 2 s; the slow clients 4 s).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rel_util.h"

#define HONEST 4
#define ATTACK_S_DEFAULT 2
#define IDLE_CONNECTIONS 1000

/* Growth of the daemon's peak resident memory an attack may cause. AddressSanitizer keeps
 * freed memory in quarantine (256 MiB by default) and shadows what is live, so its bound is
 * wider; under valgrind resident memory says nothing about the daemon. */
#if defined(__SANITIZE_ADDRESS__)
#define GROWTH_KIB_MAX (640L * 1024L)
#else
#define GROWTH_KIB_MAX (96L * 1024L)
#endif

static rel_daemon rd;

static void setup(void)
{
    /* 1000 idle connections, the honest ones and the daemon's own files: the daemon inherits
     * this limit from the test. */
    long nofile = rel_raise_nofile(4096);
    cr_assert_geq(nofile, IDLE_CONNECTIONS + 200, "RLIMIT_NOFILE is %ld", nofile);
    cr_assert_eq(rel_start(&rd), 0, "budgetd did not start");
}

/* A daemon that came through its attack stops cleanly: under ASan or valgrind that exit is
 * also where leaks are reported, and any report fails the stop. */
static void teardown(void)
{
    int status = 0;
    bool stopped =
        rd.d.pid == 0 || (e2e_daemon_stop(&rd.d, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0 &&
                          WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!stopped)
        rel_report(&rd);
    rel_cleanup(&rd);
    cr_assert(stopped, "budgetd did not stop cleanly after the attack (status 0x%x)", status);
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 300);

/* ---- the frame around an attack ------------------------------------------------------------ */

typedef struct {
    rel_honest honest[HONEST];
    atomic_bool stop;
    long rss_before_kib;
    int64_t started_us, until_us;
} attack;

/* A memory figure of the daemon under attack, in KiB. */
static long status_kib(const char *field)
{
    return e2e_status_kib(rd.d.pid, field);
}

static int attack_seconds(void)
{
    long s = e2e_env_long("RELIABILITY_ATTACK_S", ATTACK_S_DEFAULT);
    return s < 1 ? 1 : (int)s;
}

static void attack_begin(attack *a, const char *name, int seconds)
{
    rel_honest_start(a->honest, HONEST, rd.d.socket, name, &a->stop);
    rel_sleep_ms(100); /* the honest clients are connected and working */
    a->rss_before_kib = status_kib("VmRSS");
    a->started_us = e2e_now_us();
    a->until_us = a->started_us + (int64_t)seconds * 1000000;
}

static bool attack_running(const attack *a)
{
    return e2e_now_us() < a->until_us;
}

/* Stops the honest clients, prints the figures and checks the daemon came through. */
static void attack_end(attack *a, const char *name)
{
    rel_latency lat;
    long rss = status_kib("VmRSS"), peak = status_kib("VmHWM");
    bool joined = rel_honest_stop(a->honest, HONEST, &rd, &lat);
    rel_assert(&rd, joined, "%s: honest clients hung", name);
    fprintf(stderr,
            "hostile %-22s honest: %" PRIu64 " requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms;"
            " budgetd VmRSS %ld KiB before, %ld KiB after, VmHWM %ld KiB\n",
            name, lat.requests, lat.p50_ms, lat.p99_ms, lat.max_ms, a->rss_before_kib, rss, peak);
    rel_assert(&rd, lat.failures == 0, "%s: %" PRIu64 " honest requests failed", name,
               lat.failures);
    rel_assert(&rd, lat.requests >= HONEST, "%s: the honest clients were not served", name);
    if (!e2e_wrapped())
        rel_assert(&rd, peak - a->rss_before_kib < GROWTH_KIB_MAX,
                   "%s: budgetd's peak memory grew by %ld KiB", name, peak - a->rss_before_kib);

    /* Still serving new clients, and still alive. */
    budget_client *c = NULL;
    budget_response r;
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "%s: connect after", name);
    rel_assert(&rd, budget_client_call(c, "hello", NULL, 0, &r) == 0 && r.ok, "%s: hello after",
               name);
    budget_response_free(&r);
    budget_client_close(c);
}

/* Restarts the daemon on its folder with one more option. */
static void restart_with(rel_daemon *r, const char *option, const char *value)
{
    rel_stop_clean(r);
    r->extra[0] = option;
    r->extra[1] = value;
    rel_assert(r, rel_restart(r) == 0, "restart with %s %s", option, value);
}

/* ---- raw frames ----------------------------------------------------------------------------- */

/* One error response with `code` on `fd`; its id must be `id`. */
static void expect_error(int fd, uint64_t id, const char *code, const char *what)
{
    msgpack_unpacked u;
    e2e_envelope env;
    int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
    rel_assert(&rd, rc == E2E_FRAME, "%s: no answer (%d)", what, rc);
    rel_assert(&rd, e2e_envelope_read(&u.data, &env), "%s: malformed answer", what);
    rel_assert(&rd, !env.ok && strcmp(env.code, code) == 0, "%s: answered %s, expected %s", what,
               env.ok ? "ok" : env.code, code);
    rel_assert(&rd, env.id == id, "%s: answer for id %" PRIu64 ", expected %" PRIu64, what, env.id,
               id);
    msgpack_unpacked_destroy(&u);
}

static int connect_raw(void)
{
    int fd = e2e_raw_connect(rd.d.socket);
    rel_assert(&rd, fd >= 0, "connect: %s", strerror(errno));
    return fd;
}

static void send_all(int fd, const void *data, size_t size, const char *what)
{
    rel_assert(&rd, e2e_raw_send(fd, data, size) == 0, "%s: send failed: %s", what,
               strerror(errno));
}

/* A frame around `body`. */
static void send_frame(int fd, const uint8_t *body, size_t size, const char *what)
{
    uint8_t header[4] = {(uint8_t)(size >> 24), (uint8_t)(size >> 16), (uint8_t)(size >> 8),
                         (uint8_t)size};
    send_all(fd, header, 4, what);
    send_all(fd, body, size, what);
}

/* ---- the attacks ---------------------------------------------------------------------------- */

Test(hostile, quiet_baseline)
{
    attack a;
    attack_begin(&a, "baseline", attack_seconds());
    while (attack_running(&a))
        rel_sleep_ms(20);
    attack_end(&a, "baseline");
}

/* Headers that claim 4 G map pairs, array items, str and bin bytes, with a few bytes behind
 * them: refused by the validator before anything is allocated; the connection stays open. */
Test(hostile, memory_bomb_headers)
{
    static const struct {
        uint8_t bytes[16];
        size_t size;
        const char *code;
    } bombs[] = {
        {{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa2, 'i', 'd', 0x05}, 9, "bad_request"},
        {{0x82, 0xa2, 'i', 'd', 0x05, 0xa4, 'a', 'r', 'g', 's', 0xdd, 0xff, 0xff, 0xff, 0xff},
         15,
         "bad_request"},
        {{0x82, 0xa2, 'i', 'd', 0x05, 0xa2, 'o', 'p', 0xdb, 0xff, 0xff, 0xff, 0xff},
         13,
         "too_large"},
        {{0x82, 0xa2, 'i', 'd', 0x05, 0xa2, 'o', 'p', 0xc6, 0xff, 0xff, 0xff, 0xff},
         13,
         "too_large"},
        {{0x82, 0xa2, 'i', 'd', 0x05, 0xa2, 'o', 'p', 0xde, 0xff, 0xff}, 11, "bad_request"},
    };
    enum { BOMBS = sizeof(bombs) / sizeof(bombs[0]), CONNS = 8 };
    int fds[CONNS];
    attack a;
    uint64_t sent = 0;

    for (int i = 0; i < CONNS; i++)
        fds[i] = connect_raw();
    attack_begin(&a, "memory-bomb", attack_seconds());
    while (attack_running(&a)) {
        for (int i = 0; i < CONNS; i++) {
            int k = (int)(sent % BOMBS);
            send_frame(fds[i], bombs[k].bytes, bombs[k].size, "bomb");
            /* The envelope's id is read best-effort from a refused frame: 5 in each. */
            expect_error(fds[i], 5, bombs[k].code, "a memory-bomb header");
            sent++;
        }
    }
    attack_end(&a, "memory-bomb");
    fprintf(stderr, "hostile memory-bomb: %" PRIu64 " bomb frames refused on %d connections\n",
            sent, CONNS);
    for (int i = 0; i < CONNS; i++)
        close(fds[i]);
}

/* A length prefix of 4 GiB - 1 (and one byte over the 1 MiB limit): answered too_large with
 * id 0, then closed, since the stream cannot be re-synchronised. */
Test(hostile, four_gib_length_prefix)
{
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0x81, 0xa2, 'i', 'd'};
    static const uint8_t over[] = {0x00, 0x10, 0x00, 0x01, 0x80};
    attack a;
    uint64_t sent = 0;

    attack_begin(&a, "4GiB-prefix", attack_seconds());
    while (attack_running(&a)) {
        int fd = connect_raw();
        if (sent % 2 == 0)
            send_all(fd, huge, sizeof(huge), "prefix");
        else
            send_all(fd, over, sizeof(over), "prefix");
        expect_error(fd, 0, "too_large", "a 4 GiB length prefix");
        rel_assert(&rd, e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS),
                   "the connection stays open after an unframeable length");
        close(fd);
        sent++;
    }
    attack_end(&a, "4GiB-prefix");
    fprintf(stderr, "hostile 4GiB-prefix: %" PRIu64 " connections refused and closed\n", sent);
}

/* 1 MiB frames of nested arrays (and maps) 1 million deep: too_large with id 0 (none can be
 * read), and so the connection's last frame; each frame comes on a new connection. */
Test(hostile, deep_nesting)
{
    size_t size = BUDGET_FRAME_BYTES_MAX;
    uint8_t *arrays = malloc(size), *maps = malloc(size);
    attack a;
    uint64_t sent = 0;

    cr_assert(arrays != NULL && maps != NULL);
    arrays[0] = 0x81, arrays[1] = 0xa2, arrays[2] = 'i', arrays[3] = 'd';
    memset(arrays + 4, 0x91, size - 4);
    /* {"a": {"a": {"a": ... */
    for (size_t i = 0; i + 3 <= size; i += 3)
        maps[i] = 0x81, maps[i + 1] = 0xa1, maps[i + 2] = 'a';
    memset(maps + size / 3 * 3, 0xc0, size - size / 3 * 3);

    attack_begin(&a, "deep-nesting", attack_seconds());
    while (attack_running(&a)) {
        int fd = connect_raw();
        send_frame(fd, sent % 2 ? maps : arrays, size, "nesting");
        expect_error(fd, 0, "too_large", "nesting a million deep");
        rel_assert(&rd, e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS),
                   "not closed after an answer with id 0");
        close(fd);
        sent++;
    }
    attack_end(&a, "deep-nesting");
    fprintf(stderr, "hostile deep-nesting: %" PRIu64 " frames of 1 MiB refused\n", sent);
    free(arrays);
    free(maps);
}

/* 1000 idle connections: honest clients are served; past 1024 connections the next is
 * answered unavailable and closed; once the idle ones go, new clients are let in again. All
 * come from one uid here, so the per-uid limit (256 by default) is raised to the global one. */
Test(hostile, a_thousand_idle_connections)
{
    static int fds[IDLE_CONNECTIONS + 64];
    attack a;
    int n = 0;

    restart_with(&rd, "--connections-per-uid", "1024");

    attack_begin(&a, "1000-idle", attack_seconds());
    for (; n < IDLE_CONNECTIONS; n++)
        fds[n] = connect_raw();
    while (attack_running(&a))
        rel_sleep_ms(20);
    long rss_idle = status_kib("VmRSS");
    attack_end(&a, "1000-idle");
    fprintf(stderr, "hostile 1000-idle: VmRSS with %d idle connections %ld KiB\n", n, rss_idle);

    /* Fill up to the limit: the daemon holds 1000 + the ones opened here. Each accepted one
     * answers a hello, so we know it counts. */
    int refused = 0;
    for (int extra = 0; extra < 40 && refused == 0; extra++) {
        int fd = connect_raw();
        e2e_buf b;
        msgpack_unpacked u;
        e2e_envelope env;
        e2e_buf_init(&b);
        e2e_frame_begin(&b);
        msgpack_pack_map(&b.pk, 2);
        e2e_kv_uint(&b, "id", 1);
        e2e_kv_str(&b, "op", "hello");
        e2e_frame_end(&b);
        /* A refused connection may be closed by the time the hello is sent (EPIPE): its
         * refusal is already waiting to be read either way. */
        int sent = e2e_raw_send(fd, b.sb.data, b.sb.size);
        rel_assert(&rd, sent == 0 || errno == EPIPE || errno == ECONNRESET,
                   "hello: send failed: %s", strerror(errno));
        e2e_buf_destroy(&b);
        int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
        rel_assert(&rd, rc == E2E_FRAME, "connection %d: no answer", n + 1);
        rel_assert(&rd, e2e_envelope_read(&u.data, &env), "malformed answer");
        if (!env.ok) {
            rel_assert(&rd, strcmp(env.code, "unavailable") == 0 && env.id == 0,
                       "over the limit: %s", env.code);
            refused++;
            rel_assert(&rd, e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS), "refused, not closed");
            close(fd);
        } else {
            fds[n++] = fd;
        }
        msgpack_unpacked_destroy(&u);
    }
    rel_assert(&rd, refused == 1, "no connection was refused with %d open", n);
    rel_assert(&rd, n == (int)BUDGET_CONNECTIONS_MAX, "refused at %d connections; the limit is %u",
               n + 1, BUDGET_CONNECTIONS_MAX);
    fprintf(stderr, "hostile 1000-idle: connection %d refused with unavailable\n", n + 1);

    for (int i = 0; i < n; i++)
        close(fds[i]);
    /* The daemon notices the closes on its next loop turns: a client gets in again. */
    budget_client *c = NULL;
    int64_t deadline = e2e_now_us() + 5000000LL * e2e_slow();
    bool served = false;
    while (!served && e2e_now_us() < deadline) {
        budget_response r;
        if (budget_client_connect(rd.d.socket, &c) == 0) {
            if (budget_client_call(c, "hello", NULL, 0, &r) == 0) {
                served = r.ok;
                budget_response_free(&r);
            }
            budget_client_close(c);
        }
        if (!served)
            rel_sleep_ms(20);
    }
    rel_assert(&rd, served, "no client is let in after the idle connections closed");
}

/* Clients that send a request one byte a second: the frame deadline (--frame-timeout, 2 s
 * here, 10 s by default) closes each connection whose frame stays incomplete that long, so
 * a trickle cannot hold a place under the connection limits. */
Test(hostile, one_byte_a_second)
{
    enum { SLOW = 50, DEADLINE_S = 2 };
    int fds[SLOW];
    e2e_buf b;
    attack a;
    int seconds = attack_seconds() * 2;

    restart_with(&rd, "--frame-timeout", "2");
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 9);
    e2e_kv_str(&b, "op", "hello");
    e2e_frame_end(&b);
    for (int i = 0; i < SLOW; i++)
        fds[i] = connect_raw();
    attack_begin(&a, "one-byte-a-second", seconds);
    size_t off = 0;
    int64_t t0 = e2e_now_us();
    while (attack_running(&a) && off + 1 < b.sb.size) {
        for (int i = 0; i < SLOW; i++)
            send(fds[i], b.sb.data + off, 1, MSG_NOSIGNAL); /* fails once it is closed */
        off++;
        rel_sleep_ms(1000);
    }
    attack_end(&a, "one-byte-a-second");
    /* Every slow connection is closed by the deadline, not answered. */
    for (int i = 0; i < SLOW; i++)
        rel_assert(&rd, e2e_raw_wait_close(fds[i], (DEADLINE_S + 5) * 1000 * e2e_slow()),
                   "slow connection %d is still open after the frame deadline", i);
    fprintf(stderr,
            "hostile one-byte-a-second: %d clients sent %zu bytes each, one a second; all closed "
            "by the %d s frame deadline within %.1f s\n",
            SLOW, off, DEADLINE_S, (double)(e2e_now_us() - t0) / 1e6);
    for (int i = 0; i < SLOW; i++)
        close(fds[i]);
    e2e_buf_destroy(&b);
}

/* A counter from `stats`. */
static uint64_t stat_uint(const char *key)
{
    budget_client *c = NULL;
    budget_response r;
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    rel_assert(&rd, budget_client_call(c, "stats", NULL, 0, &r) == 0 && r.ok, "stats");
    uint64_t v = (uint64_t)budget_map_int(&r.result, key, 0);
    budget_response_free(&r);
    budget_client_close(c);
    return v;
}

/* Packs `count` balances requests (each answered with the whole ledger) as frames. */
static void pack_pipeline(e2e_buf *b, int count)
{
    for (int i = 0; i < count; i++) {
        e2e_frame_begin(b);
        msgpack_pack_map(&b->pk, 2);
        e2e_kv_uint(b, "id", (uint64_t)i + 1);
        e2e_kv_str(b, "op", "balances");
        e2e_frame_end(b);
    }
}

/* A client that pipelines thousands of requests and never reads: the daemon stops reading
 * it once its answers back up, so its memory stays bounded while the others are served. */
Test(hostile, pipelines_and_never_reads)
{
    enum { FRAMES = 300, REQUESTS = 20000 };
    budget_client *c = NULL;
    e2e_buf b;
    attack a;

    /* A ledger whose balances answer is about 100 KiB. */
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    e2e_buf_init(&b);
    for (int i = 0; i < FRAMES; i++) {
        char id[32];
        rel_result r;
        snprintf(id, sizeof(id), "pipe-frame-%d", i);
        rel_pack_grant(&b, id, "KS", 1000000 + i);
        rel_write(c, "frame.grant", b.sb.data, b.sb.size, &r);
        rel_assert(&rd, r.ok, "grant: %s", r.code);
    }
    budget_client_close(c);
    e2e_buf_clear(&b);
    pack_pipeline(&b, REQUESTS);

    int fd = connect_raw();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uint64_t requests_before = stat_uint("requests");
    attack_begin(&a, "pipeline-no-read", attack_seconds());
    size_t off = 0;
    long rss_max = 0;
    int64_t stuck_since = 0;
    while (attack_running(&a) && off < b.sb.size) {
        ssize_t n = send(fd, b.sb.data + off, b.sb.size - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            stuck_since = 0;
        } else {
            rel_assert(&rd, errno == EAGAIN || errno == EWOULDBLOCK, "send: %s", strerror(errno));
            if (stuck_since == 0)
                stuck_since = e2e_now_us();
            rel_sleep_ms(10);
        }
        long rss = status_kib("VmRSS");
        if (rss > rss_max)
            rss_max = rss;
    }
    uint64_t honest = 0;
    for (int i = 0; i < HONEST; i++)
        honest += a.honest[i].count;
    attack_end(&a, "pipeline-no-read");
    /* Frames the daemon took from the attacker: all it handled, less the honest ones and
     * the hello and stats of the checks. */
    uint64_t handled = stat_uint("requests") - requests_before - honest - 2;
    rel_assert(&rd, off < b.sb.size, "the daemon read all %d requests without being read from",
               REQUESTS);
    rel_assert(&rd, stuck_since != 0, "the daemon never stopped reading the client");
    rel_assert(&rd, handled < REQUESTS / 4,
               "the daemon handled %" PRIu64 " requests of a client "
               "that never reads",
               handled);
    fprintf(stderr,
            "hostile pipeline-no-read: the kernel took %zu of %zu bytes; the daemon handled "
            "%" PRIu64 " of %d requests and stopped reading; VmRSS peak seen %ld KiB\n",
            off, b.sb.size, handled, REQUESTS, rss_max);
    close(fd);
    e2e_buf_destroy(&b);
}

/*
 * Answers held behind a slow one. Answers go out in request order, so an answer that is ready
 * waits in its slot while an earlier request (a read on a worker thread: events, verify,
 * balances as_of) is still running. Such held answers are not counted in the connection's
 * queued output (conn.c counts them with the bytes being written), so a client that never
 * reads cannot park up to 255 answers of up to 1 MiB each behind one slow read: the daemon
 * stops reading it once 4 MiB are waiting, written or held.
 */
Test(hostile, answers_held_behind_a_slow_read)
{
    enum { ALLOCATIONS = 1900, ROUNDS = 4 };
    budget_client *c = NULL;
    e2e_buf b;
    attack a;
    char purpose[257];
    memset(purpose, 'x', 256);
    purpose[256] = '\0';

    /* A ledger whose balances answer is close to the 1 MiB limit. */
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    e2e_buf_init(&b);
    rel_pack_grant(&b, "held-frame", "KS", 1000000000000LL);
    rel_result r;
    rel_write(c, "frame.grant", b.sb.data, b.sb.size, &r);
    rel_assert(&rd, r.ok, "grant");
    for (int i = 0; i < ALLOCATIONS; i++) {
        char id[32];
        snprintf(id, sizeof(id), "held-a-%d", i);
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 5);
        e2e_kv_str(&b, "id", id);
        e2e_kv_str(&b, "frame", "held-frame");
        e2e_kv_str(&b, "unit", "SON");
        e2e_kv_int(&b, "amount", 1000 + i);
        e2e_kv_str(&b, "purpose", purpose);
        budget_client_send(c, "allocation.propose", b.sb.data, b.sb.size);
        if (i % 64 == 63 || i == ALLOCATIONS - 1)
            for (int k = i - i % 64; k <= i; k++) {
                budget_response resp;
                rel_assert(&rd, budget_client_recv(c, &resp) == 0 && resp.ok, "propose");
                budget_response_free(&resp);
            }
    }
    budget_client_close(c);

    /* Each round: one `events` (a worker job) and then 255 balances, never read. */
    e2e_buf_clear(&b);
    for (int round = 0; round < ROUNDS; round++) {
        e2e_frame_begin(&b);
        msgpack_pack_map(&b.pk, 3);
        e2e_kv_uint(&b, "id", 1);
        e2e_kv_str(&b, "op", "events");
        e2e_pack_str(&b, "args");
        msgpack_pack_map(&b.pk, 1);
        e2e_kv_uint(&b, "limit", 1000);
        e2e_frame_end(&b);
        for (int i = 0; i < (int)BUDGET_CONN_INFLIGHT_MAX - 1; i++) {
            e2e_frame_begin(&b);
            msgpack_pack_map(&b.pk, 2);
            e2e_kv_uint(&b, "id", (uint64_t)i + 2);
            e2e_kv_str(&b, "op", "balances");
            e2e_frame_end(&b);
        }
    }
    int fd = connect_raw();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    attack_begin(&a, "held-answers", attack_seconds() * 2);
    size_t off = 0;
    while (attack_running(&a)) {
        ssize_t n = off < b.sb.size ? send(fd, b.sb.data + off, b.sb.size - off, MSG_NOSIGNAL) : 0;
        if (n > 0)
            off += (size_t)n;
        else
            rel_sleep_ms(20);
    }
    long peak = status_kib("VmHWM");
    fprintf(stderr,
            "hostile held-answers: one client that never reads: budgetd VmHWM %ld KiB "
            "(%ld KiB over the start of the attack)\n",
            peak, peak - a.rss_before_kib);
    attack_end(&a, "held-answers");
    close(fd);
    e2e_buf_destroy(&b);
}

/* ---- the data folder and the socket's path ------------------------------------------------- */

/* A second budgetd on a data folder that one already serves must not start: it exits at once,
 * naming the pid of the first, and the first goes on serving. */
Test(hostile, a_second_daemon_on_the_same_data_exits_naming_the_first)
{
    rel_daemon second;
    char pid_text[64];
    int status = 0;
    budget_client *c = e2e_client(&rd.d);
    e2e_buf b;
    e2e_buf_init(&b);

    memset(&second, 0, sizeof(second));
    second.d = rd.d;
    second.d.pid = 0;
    snprintf(second.d.socket, sizeof(second.d.socket), "%s/second.sock", rd.d.dir);
    snprintf(second.d.log, sizeof(second.d.log), "%s/second.log", rd.d.dir);
    cr_assert_eq(rel_spawn(&second), 0, "the second budgetd could not be run");
    rel_assert(&second, rel_wait_exit(&second, 10000, &status) == 0,
               "the second budgetd on the same data did not exit");
    rel_assert(&second, WIFEXITED(status) && WEXITSTATUS(status) != 0,
               "the second budgetd exited with status 0x%x, expected a failure", status);
    snprintf(pid_text, sizeof(pid_text), "pid %ld", (long)rd.d.pid);
    rel_assert(&second, rel_log_contains(&second, pid_text),
               "the second budgetd's refusal names the first (%s)", pid_text);
    /* The first still serves, reads and writes. */
    uint64_t head = e2e_head(c);
    rel_pack_grant(&b, "after-second", "KS", 1000);
    rel_result r;
    rel_write(c, "frame.grant", b.sb.data, b.sb.size, &r);
    rel_assert(&rd, r.ok && r.seq == head + 1, "the first takes a write");
    /* An offline audit of the served folder only reads, and says that budgetd serves it. */
    e2e_ctl_result v;
    const char *argv[] = {"audit", "verify", "--data", rd.d.data};
    cr_assert_eq(e2e_ctl_argv(&rd.d, &v, 4, argv), 0, "budgetctl could not be run");
    snprintf(pid_text, sizeof(pid_text), "notice: budgetd pid %ld is serving", (long)rd.d.pid);
    rel_assert(&rd, v.exit_code == 0 && strstr(v.err, pid_text),
               "offline verify of a served folder: exit %d, stderr %s", v.exit_code, v.err);
    e2e_ctl_free(&v);
    budget_client_close(c);
    e2e_buf_destroy(&b);
}

/* A local user who may write in the socket's folder swaps the socket's path for a link right
 * after budgetd binds it (budgetd-faulty does it for the test, at exactly that moment). budgetd
 * must not give the link's target the socket's group: it refuses to start instead. */
Test(hostile, a_link_swapped_in_for_the_socket_is_never_followed)
{
    char target[96], message[256];
    struct stat st;
    int status = 0;

    int stopped = e2e_daemon_stop(&rd.d, SIGTERM, E2E_STOP_TIMEOUT_MS, &status);
    cr_assert(stopped == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "the first stops");
    snprintf(target, sizeof(target), "%s/target", rd.d.dir);
    FILE *f = fopen(target, "w");
    cr_assert(f != NULL && fclose(f) == 0, "the link's target");
    cr_assert(chown(target, 0, 0) == 0 && stat(target, &st) == 0 && st.st_gid == 0,
              "the target's group is 0");
    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_SOCKET_SWAP=%s", target);
    rd.env[1][0] = '\0';
    cr_assert_eq(rel_spawn(&rd), 0, "budgetd-faulty could not be run");
    int exited = rel_wait_exit(&rd, 10000, &status);
    rel_assert(&rd, stat(target, &st) == 0 && st.st_gid == 0,
               "the link's target was given group %u", (unsigned)st.st_gid);
    rel_assert(&rd, exited == 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0,
               "budgetd did not refuse the swapped socket path (status 0x%x)", status);
    snprintf(message, sizeof(message), "cannot give %s the group", rd.d.socket);
    rel_assert(&rd, rel_log_contains(&rd, message), "the log says why");
}

/*
 * Tiny requests, never read. An empty map (5 bytes with its header: 00 00 00 01 80) is
 * answered with a 40-byte error, but the answer was built in a buffer of 8 KiB and kept in it
 * until written: counted at its 40 bytes against the connection's 4 MiB of output, 4 clients
 * that never read made budgetd hold some 800 MiB. Answers are now kept in buffers of their own
 * size and counted at the memory they hold (their allocation and write request), so each
 * client costs at most its 4 MiB, and the others are served meanwhile.
 */
#if defined(__SANITIZE_ADDRESS__)
#define TINY_GROWTH_KIB_MAX (640L * 1024L)
#else
#define TINY_GROWTH_KIB_MAX (64L * 1024L)
#endif

Test(hostile, tiny_requests_never_read_hold_little_memory)
{
    enum { CONNS = 4, REQUESTS = 200000 };
    /* {"id": 1}: refused (no op) and answered, the connection left open. (An empty map has no
     * id to answer under, so it is answered with id 0 and the connection closed.) */
    static const uint8_t empty_map[] = {0x00, 0x00, 0x00, 0x05, 0x81, 0xa2, 'i', 'd', 0x01};
    size_t size = sizeof(empty_map) * REQUESTS;
    uint8_t *bytes = malloc(size);
    int fds[CONNS];
    size_t off[CONNS] = {0};
    attack a;

    rel_assert(&rd, bytes != NULL, "out of memory");
    for (size_t i = 0; i < REQUESTS; i++)
        memcpy(bytes + i * sizeof(empty_map), empty_map, sizeof(empty_map));
    for (int i = 0; i < CONNS; i++) {
        fds[i] = connect_raw();
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    }
    uint64_t requests_before = stat_uint("requests");
    attack_begin(&a, "tiny-no-read", attack_seconds());
    long rss_max = 0;
    while (attack_running(&a)) {
        bool sent = false;
        for (int i = 0; i < CONNS; i++) {
            ssize_t n =
                off[i] < size ? send(fds[i], bytes + off[i], size - off[i], MSG_NOSIGNAL) : 0;
            if (n > 0) {
                off[i] += (size_t)n;
                sent = true;
            } else if (n < 0) {
                rel_assert(&rd, errno == EAGAIN || errno == EWOULDBLOCK, "send: %s",
                           strerror(errno));
            }
        }
        long rss = status_kib("VmRSS");
        if (rss > rss_max)
            rss_max = rss;
        if (!sent)
            rel_sleep_ms(10);
    }
    uint64_t handled = stat_uint("requests") - requests_before;
    long growth = rss_max - a.rss_before_kib;
    fprintf(stderr,
            "hostile tiny-no-read: %d clients sent %zu, %zu, %zu, %zu of %zu bytes; budgetd "
            "handled %" PRIu64 " requests; VmRSS grew by %ld KiB at most\n",
            CONNS, off[0], off[1], off[2], off[3], size, handled, growth);
    attack_end(&a, "tiny-no-read");
    if (!e2e_wrapped())
        rel_assert(&rd, growth < TINY_GROWTH_KIB_MAX,
                   "4 clients that never read made budgetd grow by %ld KiB", growth);
    for (int i = 0; i < CONNS; i++)
        close(fds[i]);
    free(bytes);
}
