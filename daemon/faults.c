/*
 * The test seams of budgetd-faulty (daemon/faults.h), never linked into the installed budgetd.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h> /* MDB_MAP_FULL: this test-only seam speaks the store's language */

#include "faults.h"
#include "log.h"

/*
 * Storage faults for the reliability tests, only in the budgetd-faulty build: never in the
 * installed budgetd. $BUDGETD_FAULT holds up to FAULTS_MAX rules separated by commas, each
 * POINT:N:ERROR[:once|always]: POINT is put, commit, sync, meta, walwrite or lmdbsync (store.h), N
 * counts that point's calls from 1, ERROR is an errno name (ENOSPC, EIO, ENOMEM, EDQUOT) or
 * MAP_FULL. "once" (the default) fails call N only; "always" fails call N and every later one.
 * ERROR may also be DELAY or DELAY=MS: the call then succeeds after 300 ms, or MS (1..60000), a
 * slow disk that holds a batch in flight. Each injected fault is logged as "fault injected: ...",
 * which the tests read.
 */

#define FAULTS_MAX 4
/* Not an errno: the call waits delay_ms (FAULT_DELAY_MS unless given), then goes on. */
#define FAULT_DELAY (-1)
#define FAULT_DELAY_MS 300
#define FAULT_DELAY_MS_MAX 60000

typedef struct {
    store_fault_point point;
    unsigned long nth;
    int error;
    unsigned long delay_ms;
    bool always;
    unsigned long calls;
} fault_rule;

typedef struct {
    fault_rule rules[FAULTS_MAX];
    int count;
} fault_plan;

static fault_plan faults;

/* The variable `name`'s value, or NULL when it is unset or empty. */
static const char *seam_env(const char *name)
{
    const char *env = getenv(name);
    return env && *env ? env : NULL;
}

/* The whole of `text` as a delay of 1..FAULT_DELAY_MS_MAX ms. 0, or -1. */
static int delay_parse(const char *text, unsigned long *ms)
{
    char *end;
    errno = 0;
    *ms = strtoul(text, &end, 10);
    return errno || *end || *ms == 0 || *ms > FAULT_DELAY_MS_MAX ? -1 : 0;
}

static const char *fault_point_name(store_fault_point p)
{
    return p == STORE_FAULT_PUT         ? "put"
           : p == STORE_FAULT_COMMIT    ? "commit"
           : p == STORE_FAULT_SYNC      ? "sync"
           : p == STORE_FAULT_META      ? "meta"
           : p == STORE_FAULT_WAL_WRITE ? "walwrite"
                                        : "lmdbsync";
}

/* The store's callback: on the writer thread, but for lmdbsync on the store's syncer. A rule
 * is counted only by its own point's thread. */
static int fault_hook(void *ctx, store_fault_point point)
{
    fault_plan *plan = ctx;
    int error = 0;
    for (int i = 0; i < plan->count; i++) {
        fault_rule *r = &plan->rules[i];
        if (r->point != point)
            continue;
        r->calls++;
        if (error == 0 && (r->calls == r->nth || (r->always && r->calls > r->nth))) {
            if (r->error == FAULT_DELAY) {
                log_warn("fault injected: %s call %lu waits %lu ms", fault_point_name(point),
                         r->calls, r->delay_ms);
                usleep((useconds_t)(r->delay_ms * 1000));
                continue;
            }
            error = r->error;
            log_warn("fault injected: %s call %lu fails with %s", fault_point_name(point), r->calls,
                     error == MDB_MAP_FULL ? "MAP_FULL" : strerror(error));
        }
    }
    return error;
}

static int fault_parse_rule(char *text, fault_rule *r)
{
    static const struct {
        const char *name;
        int value;
    } errors[] = {{"ENOSPC", ENOSPC},         {"EIO", EIO},
                  {"ENOMEM", ENOMEM},         {"EDQUOT", EDQUOT},
                  {"MAP_FULL", MDB_MAP_FULL}, {"DELAY", FAULT_DELAY}};
    char *save = NULL;
    char *point = strtok_r(text, ":", &save);
    char *nth = strtok_r(NULL, ":", &save);
    char *error = strtok_r(NULL, ":", &save);
    char *mode = strtok_r(NULL, ":", &save);
    char *end;

    memset(r, 0, sizeof(*r));
    if (!point || !nth || !error || strtok_r(NULL, ":", &save))
        return -1;
    if (strcmp(point, "put") == 0)
        r->point = STORE_FAULT_PUT;
    else if (strcmp(point, "commit") == 0)
        r->point = STORE_FAULT_COMMIT;
    else if (strcmp(point, "sync") == 0)
        r->point = STORE_FAULT_SYNC;
    else if (strcmp(point, "meta") == 0)
        r->point = STORE_FAULT_META;
    else if (strcmp(point, "walwrite") == 0)
        r->point = STORE_FAULT_WAL_WRITE;
    else if (strcmp(point, "lmdbsync") == 0)
        r->point = STORE_FAULT_LMDB_SYNC;
    else
        return -1;
    errno = 0;
    r->nth = strtoul(nth, &end, 10);
    if (errno || *end || r->nth == 0)
        return -1;
    if (strncmp(error, "DELAY=", 6) == 0) {
        if (delay_parse(error + 6, &r->delay_ms) != 0)
            return -1;
        error[5] = '\0';
    }
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        if (strcmp(error, errors[i].name) == 0)
            r->error = errors[i].value;
    if (r->error == 0)
        return -1;
    if (r->error == FAULT_DELAY && r->delay_ms == 0)
        r->delay_ms = FAULT_DELAY_MS;
    if (mode && strcmp(mode, "always") == 0)
        r->always = true;
    else if (mode && strcmp(mode, "once") != 0)
        return -1;
    return 0;
}

/* Reads $BUDGETD_FAULT into the store's options. 0, or -1 when it cannot be parsed. */
static int fault_install(store_options *sopt)
{
    const char *env = seam_env("BUDGETD_FAULT");
    char text[256], *save = NULL;

    if (!env)
        return 0;
    if (strlen(env) >= sizeof(text))
        return -1;
    snprintf(text, sizeof(text), "%s", env);
    for (char *rule = strtok_r(text, ",", &save); rule; rule = strtok_r(NULL, ",", &save)) {
        if (faults.count == FAULTS_MAX || fault_parse_rule(rule, &faults.rules[faults.count]))
            return -1;
        faults.count++;
    }
    sopt->fault = fault_hook;
    sopt->fault_ctx = &faults;
    log_warn("BUDGETD_FAULT=%s: storage faults will be injected", env);
    return 0;
}

/*
 * $BUDGETD_LOOKUP_DELAY=UID[-UID]:MS: looking up the name and groups of a connecting uid in
 * that range takes MS longer (1..60000), as with a slow directory service, for the tests that
 * show the loop and the other clients do not wait for it.
 */
static uint32_t lookup_delay_first, lookup_delay_last;
static unsigned long lookup_delay_ms;

static void lookup_delay(uint32_t uid)
{
    if (uid >= lookup_delay_first && uid <= lookup_delay_last && lookup_delay_ms > 0) {
        log_warn("fault injected: the lookup of uid %u waits %lu ms", uid, lookup_delay_ms);
        usleep((useconds_t)(lookup_delay_ms * 1000));
    }
}

static int lookup_delay_install(server_config *cfg)
{
    const char *env = seam_env("BUDGETD_LOOKUP_DELAY");
    char *end;

    if (!env)
        return 0;
    errno = 0;
    unsigned long first = strtoul(env, &end, 10), last = first;
    if (*end == '-')
        last = strtoul(end + 1, &end, 10);
    if (errno || *end != ':' || first > last || last > UINT32_MAX)
        return -1;
    if (delay_parse(end + 1, &lookup_delay_ms) != 0)
        return -1;
    lookup_delay_first = (uint32_t)first;
    lookup_delay_last = (uint32_t)last;
    cfg->lookup_hook = lookup_delay;
    log_warn("BUDGETD_LOOKUP_DELAY=%s: looking up uids %lu to %lu takes %lu ms longer", env, first,
             last, lookup_delay_ms);
    return 0;
}

/* $BUDGETD_SOCKET_SWAP=TARGET: right after the socket is bound, its path is made a symbolic
 * link to TARGET, as a local user who may write in the socket's folder could do in that
 * moment; the daemon must then change nothing at TARGET. */
static const char *socket_swap_target;

static void socket_swap(const char *socket_path)
{
    char moved[PATH_MAX];
    snprintf(moved, sizeof(moved), "%s.swapped", socket_path);
    if (rename(socket_path, moved) != 0 || symlink(socket_swap_target, socket_path) != 0)
        log_warn("fault: cannot swap %s for a link: %s", socket_path, strerror(errno));
    else
        log_warn("fault injected: %s is now a link to %s", socket_path, socket_swap_target);
}

static void socket_swap_install(server_config *cfg)
{
    const char *env = seam_env("BUDGETD_SOCKET_SWAP");
    if (!env)
        return;
    socket_swap_target = env;
    cfg->socket_hook = socket_swap;
}

/*
 * $BUDGETD_JOB_DELAY=MS: every worker job (a long read, a checkpoint, a write retried) takes MS
 * longer (1..60000), as a read of a long log does, for the tests that show such reads hold up no
 * one else.
 */
static unsigned long job_delay_ms;

static void job_delay(void)
{
    usleep((useconds_t)(job_delay_ms * 1000));
}

static int job_delay_install(server_config *cfg)
{
    const char *env = seam_env("BUDGETD_JOB_DELAY");

    if (!env)
        return 0;
    if (delay_parse(env, &job_delay_ms) != 0)
        return -1;
    cfg->job_hook = job_delay;
    log_warn("BUDGETD_JOB_DELAY=%s: every worker job takes %lu ms longer", env, job_delay_ms);
    return 0;
}

/* $BUDGETD_CLOCK_OFFSET_MS=N: the daemon's wall clock is N ms off (N may be negative, at most
 * a year either way), as after a clock set wrong or set back. */
static int clock_offset_install(server_config *cfg)
{
    const char *env = seam_env("BUDGETD_CLOCK_OFFSET_MS");
    char *end;

    if (!env)
        return 0;
    errno = 0;
    long long ms = strtoll(env, &end, 10);
    if (errno || *end || ms < -31622400000LL || ms > 31622400000LL)
        return -1;
    cfg->clock_offset_ms = ms;
    log_warn("BUDGETD_CLOCK_OFFSET_MS=%s: the clock is moved by %lld ms", env, ms);
    return 0;
}

/*
 * $BUDGETD_WAL_BYTES=N: a new write-ahead file holds N bytes of records (4096..2^40) instead
 * of the default, so that a short test sees LMDB synced behind it, checkpoints and the file
 * written round again.
 */
static int wal_bytes_install(store_options *sopt)
{
    const char *env = seam_env("BUDGETD_WAL_BYTES");
    char *end;

    if (!env)
        return 0;
    errno = 0;
    unsigned long long bytes = strtoull(env, &end, 10);
    if (errno || *end || bytes < 4096 || bytes > (1ULL << 40))
        return -1;
    sopt->wal_area_bytes = bytes;
    log_warn("BUDGETD_WAL_BYTES=%s: a new write-ahead file holds %llu bytes of records", env,
             bytes);
    return 0;
}

int faults_install(store_options *sopt, server_config *cfg)
{
    if (wal_bytes_install(sopt) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_WAL_BYTES is a number of bytes (4096..2^40)\n");
        return 2;
    }
    if (fault_install(sopt) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_FAULT is POINT:N:ERROR[:once|always][,...]\n");
        return 2;
    }
    if (lookup_delay_install(cfg) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_LOOKUP_DELAY is UID[-UID]:MS\n");
        return 2;
    }
    socket_swap_install(cfg);
    if (job_delay_install(cfg) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_JOB_DELAY is a number of ms (1..60000)\n");
        return 2;
    }
    if (clock_offset_install(cfg) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_CLOCK_OFFSET_MS is a number of ms\n");
        return 2;
    }
    return 0;
}
