/* Helpers for the reliability suites (tests/rel_util.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rel_util.h"

/* Words of $BUDGETD_WRAPPER. */
/* Bytes of the daemon's log shown when a check fails. */
#define REPORT_TAIL_BYTES 4000
/* Log bytes searched by rel_log_contains. */
#define LOG_READ_BYTES_MAX (8u * 1024u * 1024u)
/* Allocations per balances page (docs/protocol.md). */
#define BALANCES_PAGE 2000u

/* ---- small things ------------------------------------------------------------------------- */

void rel_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

uint64_t rel_seed(const char *what)
{
    uint64_t seed = (uint64_t)e2e_env_long("RELIABILITY_SEED", 0);
    if (seed == 0)
        seed = (uint64_t)e2e_now_us() ^ ((uint64_t)getpid() << 32);
    fprintf(stderr, "%s: RELIABILITY_SEED=%" PRIu64 "\n", what, seed);
    return seed;
}

uint64_t rel_rand(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

long rel_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if ((long)rl.rlim_cur < want) {
        rlim_t target = (rlim_t)want;
        if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max)
            target = rl.rlim_max;
        rl.rlim_cur = target;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

bool rel_join(pthread_t *threads, int n, int timeout_ms, rel_daemon *r)
{
    struct timespec deadline;
    long long ms = (long long)timeout_ms * e2e_slow();
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(ms / 1000);
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (int i = 0; i < n; i++) {
        if (pthread_timedjoin_np(threads[i], NULL, &deadline) == 0)
            continue;
        fprintf(stderr, "rel: client threads did not finish within %lld ms; killing budgetd\n", ms);
        rel_report(r);
        e2e_daemon_kill(&r->d);
        for (int j = i; j < n; j++)
            pthread_join(threads[j], NULL);
        return false;
    }
    return true;
}

/* ---- the daemon ---------------------------------------------------------------------------- */

/* The daemon's seam settings, NULL-terminated: its env entries up to the first "". */
static void seam_settings(const rel_daemon *r, const char *out[REL_ENV_MAX + 1])
{
    int n = 0;
    for (int i = 0; i < REL_ENV_MAX && r->env[i][0] != '\0'; i++)
        out[n++] = r->env[i];
    out[n] = NULL;
}

static int launch(rel_daemon *r, bool wait)
{
    const char *env[REL_ENV_MAX + 1];
    seam_settings(r, env);
    e2e_launch how = {.binary = r->binary, .extra = r->extra, .env = env, .no_wait = !wait};
    return e2e_daemon_launch(&r->d, &how);
}

int rel_spawn(rel_daemon *r)
{
    return launch(r, false);
}

/*
 * The units the reliability suites name are registered on the fresh folder first, by a daemon
 * started without the seams of `r->env` (so a fault counts only the workload's calls) and
 * stopped again: KS, SON, KFN and U0..U7 (test_crash's clients).
 */
static int register_units_first(rel_daemon *r)
{
    char env[REL_ENV_MAX][sizeof(r->env[0])];
    memcpy(env, r->env, sizeof(env));
    memset(r->env, 0, sizeof(r->env));
    int rc = launch(r, true);
    memcpy(r->env, env, sizeof(env));
    if (rc != 0)
        return -1;
    e2e_register_units(&r->d, NULL, "KS", "SON", "KFN", "U0", "U1", "U2", "U3", "U4", "U5", "U6",
                       "U7", NULL);
    int status = 0;
    if (e2e_daemon_stop(&r->d, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) != 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "rel: budgetd did not stop after registering the units\n");
        return -1;
    }
    return 0;
}

int rel_start(rel_daemon *r)
{
    if (e2e_daemon_make(&r->d, "rel") != 0)
        return -1;
    return register_units_first(r) == 0 ? launch(r, true) : -1;
}

int rel_restart(rel_daemon *r)
{
    return launch(r, true);
}

int rel_wait_exit(rel_daemon *r, int timeout_ms, int *status)
{
    int64_t deadline = e2e_now_us() + (int64_t)timeout_ms * 1000 * e2e_slow();
    while (r->d.pid != 0) {
        pid_t got = waitpid(r->d.pid, status, WNOHANG);
        if (got == r->d.pid) {
            r->d.pid = 0;
            return 0;
        }
        if (got < 0 && errno != EINTR)
            return -1;
        if (e2e_now_us() > deadline) {
            rel_report(r);
            e2e_daemon_kill(&r->d);
            return -1;
        }
        rel_sleep_ms(2);
    }
    return -1;
}

void rel_stop_clean(rel_daemon *r)
{
    int status = 0;
    int rc = e2e_daemon_stop(&r->d, SIGTERM, E2E_STOP_TIMEOUT_MS, &status);
    rel_assert(r, rc == 0, "budgetd did not stop on SIGTERM");
    rel_assert(r, WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "budgetd stopped with status 0x%x, not a clean exit 0", status);
}

void rel_cleanup(rel_daemon *r)
{
    e2e_daemon_cleanup(&r->d);
}

/* The log's last `max` bytes (or all of it), NUL-terminated and malloc'd; NULL on failure. */
static char *read_log(const rel_daemon *r, size_t max)
{
    FILE *f = fopen(r->d.log, "r");
    if (f == NULL)
        return NULL;
    long start = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > (long)max)
            start = size - (long)max;
    }
    fseek(f, start, SEEK_SET);
    char *text = malloc(max + 1);
    size_t n = text ? fread(text, 1, max, f) : 0;
    fclose(f);
    if (text)
        text[n] = '\0';
    return text;
}

void rel_report(const rel_daemon *r)
{
    char *text = read_log(r, REPORT_TAIL_BYTES);
    fprintf(stderr, "---- budgetd log %s (pid %d) ----\n%s---- end of log ----\n", r->d.log,
            (int)r->d.pid, text ? text : "(cannot read it)\n");
    free(text);
}

int rel_log_count(const rel_daemon *r, const char *needle)
{
    char *text = read_log(r, LOG_READ_BYTES_MAX);
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(text);
    return n;
}

bool rel_log_contains(const rel_daemon *r, const char *needle)
{
    return rel_log_count(r, needle) > 0;
}

/* ---- requests ----------------------------------------------------------------------------- */

void rel_pack_grant(e2e_buf *b, const char *id, const char *unit, int64_t amount)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 6 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "year", 2021);
    e2e_kv_int(b, "amount", amount);
    e2e_kv_str(b, "title", "Utökat trygghetsarbete");
    e2e_kv_decision(b);
    /* Load makes many frames alike on purpose: not the duplicates a clerk would enter. */
    msgpack_pack_str_with_body(&b->pk, "intended", 8);
    msgpack_pack_true(&b->pk);
}

void rel_pack_adjust(e2e_buf *b, const char *id, const char *frame, int64_t delta)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 4 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "frame", frame);
    e2e_kv_int(b, "delta", delta);
    e2e_kv_str(b, "reason", "Tilläggsanslag");
    e2e_kv_decision(b);
}

void rel_pack_propose(e2e_buf *b, const char *id, const char *frame, const char *unit,
                      int64_t amount)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 5);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "frame", frame);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "amount", amount);
    e2e_kv_str(b, "purpose", "Områdesarbete");
}

void rel_pack_avrop(e2e_buf *b, const char *id, const char *allocation, int64_t amount)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 3);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "allocation", allocation);
    e2e_kv_int(b, "amount", amount);
}

void rel_pack_target(e2e_buf *b, const char *id, const char *target)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 2);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "target", target);
}

void rel_pack_decide(e2e_buf *b, const char *id, const char *target)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 2 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "target", target);
    e2e_kv_decision(b);
}

void rel_pack_for(e2e_buf *b, const char *op, const char *id, const char *target)
{
    if (strcmp(op, "withdraw") == 0)
        rel_pack_target(b, id, target);
    else
        rel_pack_decide(b, id, target);
}

void rel_write(budget_client *c, const char *op, const void *args, size_t args_size,
               rel_result *out)
{
    budget_response resp;
    memset(out, 0, sizeof(*out));
    int rc = budget_client_call(c, op, args, args_size, &resp);
    if (rc != 0) {
        out->transport = rc;
        return;
    }
    out->ok = resp.ok;
    if (resp.ok) {
        out->seq = (uint64_t)budget_map_int(&resp.result, "seq", 0);
    } else {
        snprintf(out->code, sizeof(out->code), "%s", resp.code);
        snprintf(out->message, sizeof(out->message), "%s", resp.message);
    }
    budget_response_free(&resp);
}

/* ---- whole-ledger checks ------------------------------------------------------------------ */

/* A call on the main thread that must be answered ok. */
static void call_ok(const rel_daemon *r, budget_client *c, const char *op, const e2e_buf *args,
                    budget_response *resp)
{
    int rc = budget_client_call(c, op, args ? args->sb.data : NULL, args ? args->sb.size : 0, resp);
    rel_assert(r, rc == 0, "%s: no response (%d)", op, rc);
    if (!resp->ok) {
        rel_report(r);
        cr_assert_fail("%s refused: %s: %s", op, resp->code, resp->message);
    }
}

static const msgpack_object *array_at(const rel_daemon *r, const msgpack_object *map,
                                      const char *key)
{
    const msgpack_object *a = budget_map_get(map, key);
    rel_assert(r, a != NULL && a->type == MSGPACK_OBJECT_ARRAY, "result has no array %s", key);
    return a;
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp(((const rel_event *)a)->id, ((const rel_event *)b)->id);
}

size_t rel_read_log(const rel_daemon *r, budget_client *c, rel_event **out)
{
    e2e_buf b;
    budget_response resp;
    size_t count = 0, cap = 1024;
    uint64_t after = 0, head = 0;
    rel_event *events = malloc(cap * sizeof(*events));

    cr_assert(events != NULL);
    e2e_buf_init(&b);
    do {
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 2);
        e2e_kv_uint(&b, "after", after);
        e2e_kv_uint(&b, "limit", BUDGET_EVENTS_PAGE_MAX);
        call_ok(r, c, "events", &b, &resp);
        const msgpack_object *list = array_at(r, &resp.result, "events");
        head = (uint64_t)budget_map_int(&resp.result, "head", 0);
        uint64_t next = (uint64_t)budget_map_int(&resp.result, "next", 0);
        for (uint32_t i = 0; i < list->via.array.size; i++) {
            const msgpack_object *ev = &list->via.array.ptr[i];
            const msgpack_object *data = budget_map_get(ev, "data");
            if (count == cap) {
                cap *= 2;
                events = realloc(events, cap * sizeof(*events));
                cr_assert(events != NULL);
            }
            rel_event *e = &events[count];
            e->seq = (uint64_t)budget_map_int(ev, "seq", 0);
            rel_assert(r, e->seq == count + 1, "event %zu has seq %" PRIu64 ": a gap or a repeat",
                       count + 1, e->seq);
            budget_map_str(ev, "type", e->type, sizeof(e->type));
            e->ts_ms = (uint64_t)budget_map_int(ev, "ts", 0);
            rel_assert(r, data != NULL, "event %" PRIu64 " has no data", e->seq);
            budget_map_str(data, "id", e->id, sizeof(e->id));
            rel_assert(r, e->id[0] != '\0', "event %" PRIu64 " creates no id", e->seq);
            count++;
        }
        budget_response_free(&resp);
        rel_assert(r, next > after || next >= head, "events does not advance past %" PRIu64, after);
        after = next;
    } while (after < head);
    e2e_buf_destroy(&b);
    rel_assert(r, count == head, "read %zu events, head is %" PRIu64, count, head);

    /* No id twice: a retry never made a second event. */
    rel_event *sorted = malloc((count ? count : 1) * sizeof(*sorted));
    cr_assert(sorted != NULL);
    memcpy(sorted, events, count * sizeof(*sorted));
    qsort(sorted, count, sizeof(*sorted), compare_ids);
    for (size_t i = 1; i < count; i++)
        rel_assert(r, strcmp(sorted[i - 1].id, sorted[i].id) != 0,
                   "id %s is in the log twice (seq %" PRIu64 " and %" PRIu64 ")", sorted[i].id,
                   sorted[i - 1].seq, sorted[i].seq);
    free(sorted);
    *out = events;
    return count;
}

uint64_t rel_verify(const rel_daemon *r, budget_client *c)
{
    budget_response resp;
    call_ok(r, c, "verify", NULL, &resp);
    const msgpack_object *ok = budget_map_get(&resp.result, "ok");
    uint64_t checked = (uint64_t)budget_map_int(&resp.result, "checked", -1);
    uint64_t head = (uint64_t)budget_map_int(&resp.result, "head", -1);
    char reason[160];
    budget_map_str(&resp.result, "reason", reason, sizeof(reason));
    rel_assert(r, ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean,
               "verify: the chain does not hold: %s (first bad %" PRId64 ")", reason,
               budget_map_int(&resp.result, "first_bad", 0));
    rel_assert(r, checked == head, "verify checked %" PRIu64 " of %" PRIu64 " events", checked,
               head);
    budget_response_free(&resp);
    return head;
}

static int64_t need_int(const rel_daemon *r, const msgpack_object *m, const char *key)
{
    const msgpack_object *v = budget_map_get(m, key);
    rel_assert(r,
               v != NULL && (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                             v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER),
               "balance row has no integer %s", key);
    return budget_map_int(m, key, 0);
}

static void check_frame(const rel_daemon *r, const msgpack_object *f)
{
    char id[BUDGET_ID_BYTES_MAX + 1];
    budget_map_str(f, "id", id, sizeof(id));
    int64_t granted = need_int(r, f, "granted"), allocated = need_int(r, f, "allocated");
    int64_t pending = need_int(r, f, "pending"), unallocated = need_int(r, f, "unallocated");
    int64_t called_off = need_int(r, f, "called_off");
    rel_assert(r, allocated >= 0 && pending >= 0 && called_off >= 0,
               "frame %s has a negative balance", id);
    rel_assert(r, allocated + pending <= granted,
               "frame %s: allocated %" PRId64 " + pending %" PRId64 " > granted %" PRId64, id,
               allocated, pending, granted);
    rel_assert(r, unallocated == granted - allocated - pending, "frame %s: unallocated is wrong",
               id);
    rel_assert(r, called_off <= allocated, "frame %s: called off %" PRId64 " > allocated %" PRId64,
               id, called_off, allocated);
}

static void check_allocation(const rel_daemon *r, const msgpack_object *a, rel_rules *out)
{
    char id[BUDGET_ID_BYTES_MAX + 1], status[16];
    budget_map_str(a, "id", id, sizeof(id));
    budget_map_str(a, "status", status, sizeof(status));
    int64_t amount = need_int(r, a, "amount"), called_off = need_int(r, a, "called_off");
    int64_t pending = need_int(r, a, "pending"), available = need_int(r, a, "available");
    rel_assert(r, called_off >= 0 && pending >= 0 && available >= 0,
               "allocation %s has a negative balance", id);
    rel_assert(r, called_off + pending <= amount,
               "allocation %s: called off %" PRId64 " + pending %" PRId64 " > amount %" PRId64, id,
               called_off, pending, amount);
    if (strcmp(status, "approved") == 0)
        rel_assert(r, available == amount - called_off - pending,
                   "allocation %s: available is wrong", id);
    else
        rel_assert(r, called_off == 0 && pending == 0 && available == 0,
                   "allocation %s is %s but has avrop against it", id, status);
    out->called_off_total += called_off;
}

void rel_check_rules(const rel_daemon *r, budget_client *c, const char *const *units,
                     rel_rules *out)
{
    e2e_buf b;
    budget_response resp;

    memset(out, 0, sizeof(*out));
    e2e_buf_init(&b);
    for (int u = 0; units[u] != NULL; u++) {
        uint64_t offset = 0;
        bool more = true;
        while (more) {
            e2e_buf_clear(&b);
            msgpack_pack_map(&b.pk, 2);
            e2e_kv_str(&b, "unit", units[u]);
            e2e_kv_uint(&b, "offset", offset);
            call_ok(r, c, "balances", &b, &resp);
            const msgpack_object *frames = array_at(r, &resp.result, "frames");
            const msgpack_object *allocations = array_at(r, &resp.result, "allocations");
            const msgpack_object *rows = array_at(r, &resp.result, "units");
            if (offset == 0) {
                for (uint32_t i = 0; i < frames->via.array.size; i++)
                    check_frame(r, &frames->via.array.ptr[i]);
                out->frames += frames->via.array.size;
                for (uint32_t i = 0; i < rows->via.array.size; i++) {
                    const msgpack_object *row = &rows->via.array.ptr[i];
                    rel_assert(r, need_int(r, row, "available") >= 0,
                               "unit %s has a negative available", units[u]);
                }
            }
            for (uint32_t i = 0; i < allocations->via.array.size; i++)
                check_allocation(r, &allocations->via.array.ptr[i], out);
            out->allocations += allocations->via.array.size;
            offset += allocations->via.array.size;
            const msgpack_object *m = budget_map_get(&resp.result, "more");
            more = m != NULL && m->type == MSGPACK_OBJECT_BOOLEAN && m->via.boolean &&
                   allocations->via.array.size > 0;
            budget_response_free(&resp);
        }
    }
    e2e_buf_destroy(&b);

    /* The units named must hold everything: compare with the daemon's own counts. */
    call_ok(r, c, "stats", NULL, &resp);
    uint64_t frames = (uint64_t)budget_map_int(&resp.result, "frames", -1);
    uint64_t allocations = (uint64_t)budget_map_int(&resp.result, "allocations", -1);
    budget_response_free(&resp);
    rel_assert(r, frames == out->frames, "balances listed %" PRIu64 " frames, stats %" PRIu64,
               out->frames, frames);
    rel_assert(r, allocations == out->allocations,
               "balances listed %" PRIu64 " allocations, stats %" PRIu64, out->allocations,
               allocations);
}

void rel_get_allocation(const rel_daemon *r, budget_client *c, const char *id, rel_allocation *out)
{
    e2e_buf b;
    budget_response resp;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_str(&b, "allocation", id);
    call_ok(r, c, "balances", &b, &resp);
    e2e_buf_destroy(&b);
    const msgpack_object *list = array_at(r, &resp.result, "allocations");
    rel_assert(r, list->via.array.size == 1, "allocation %s: %u rows", id, list->via.array.size);
    const msgpack_object *a = &list->via.array.ptr[0];
    out->amount = need_int(r, a, "amount");
    out->called_off = need_int(r, a, "called_off");
    out->pending = need_int(r, a, "pending");
    out->available = need_int(r, a, "available");
    budget_map_str(a, "status", out->status, sizeof(out->status));
    budget_response_free(&resp);
}

/* ---- honest clients ------------------------------------------------------------------------ */

static void *honest_main(void *arg)
{
    rel_honest *h = arg;
    budget_client *c = NULL;
    e2e_buf b;
    char id[64];
    uint64_t n = 0;

    h->latency_us = malloc(REL_SAMPLES_MAX * sizeof(*h->latency_us));
    if (h->latency_us == NULL || budget_client_connect(h->socket, &c) != 0) {
        snprintf(h->failure, sizeof(h->failure), "cannot connect");
        h->failures++;
        return NULL;
    }
    e2e_buf_init(&b);
    while (!atomic_load(h->stop) && h->count < REL_SAMPLES_MAX) {
        bool write = n % 2 == 1;
        budget_response resp;
        int64_t t0 = e2e_now_us();
        int rc;
        if (write) {
            snprintf(id, sizeof(id), "%s-%d-%" PRIu64, h->prefix, h->index, n);
            rel_pack_grant(&b, id, "KS", 100000);
            rc = budget_client_call(c, "frame.grant", b.sb.data, b.sb.size, &resp);
        } else {
            rc = budget_client_call(c, "hello", NULL, 0, &resp);
        }
        int64_t t1 = e2e_now_us();
        n++;
        if (rc != 0) {
            snprintf(h->failure, sizeof(h->failure), "request %" PRIu64 ": no response (%d)", n,
                     rc);
            h->failures++;
            break;
        }
        if (!resp.ok) {
            snprintf(h->failure, sizeof(h->failure), "request %" PRIu64 " refused: %s: %s", n,
                     resp.code, resp.message);
            h->failures++;
        }
        budget_response_free(&resp);
        h->latency_us[h->count++] = (uint32_t)(t1 - t0 > UINT32_MAX ? UINT32_MAX : t1 - t0);
        rel_sleep_ms(1); /* a clerk's pace, not a benchmark: leave the CPU to the attack */
    }
    e2e_buf_destroy(&b);
    budget_client_close(c);
    return NULL;
}

void rel_honest_start(rel_honest *h, int n, const char *socket, const char *prefix,
                      atomic_bool *stop)
{
    atomic_store(stop, false);
    for (int i = 0; i < n; i++) {
        memset(&h[i], 0, sizeof(h[i]));
        h[i].socket = socket;
        h[i].prefix = prefix;
        h[i].index = i;
        h[i].stop = stop;
        cr_assert_eq(pthread_create(&h[i].thread, NULL, honest_main, &h[i]), 0);
    }
}

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

bool rel_honest_stop(rel_honest *h, int n, rel_daemon *r, rel_latency *out)
{
    pthread_t threads[64];
    size_t total = 0;

    cr_assert(n <= 64);
    atomic_store(h[0].stop, true);
    for (int i = 0; i < n; i++)
        threads[i] = h[i].thread;
    bool joined = rel_join(threads, n, 20000, r);

    memset(out, 0, sizeof(*out));
    for (int i = 0; i < n; i++) {
        total += h[i].count;
        out->failures += h[i].failures;
        if (h[i].failures)
            fprintf(stderr, "honest client %d: %s\n", i, h[i].failure);
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof(*all));
    cr_assert(all != NULL);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        memcpy(all + k, h[i].latency_us, h[i].count * sizeof(*all));
        k += h[i].count;
        free(h[i].latency_us);
        h[i].latency_us = NULL;
    }
    qsort(all, total, sizeof(*all), compare_u32);
    out->requests = total;
    if (total > 0) {
        out->p50_ms = all[total / 2] / 1000.0;
        out->p99_ms = all[total * 99 / 100] / 1000.0;
        out->max_ms = all[total - 1] / 1000.0;
    }
    free(all);
    return joined;
}
