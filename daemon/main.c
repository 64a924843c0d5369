/* budgetd: the budget ledger daemon. Opens the store, replays the log, serves the socket. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "access.h"
#include "budget/errors.h"
#include "budget/protocol.h"
#include "checkpoint.h"
#include "event.h"
#include "ledger.h"
#include "log.h"
#include "proto/frame.h"
#include "replay.h"
#include "server.h"
#include "store.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: budgetd --data DIR [--socket PATH] [--socket-group GROUP] [--config FILE]\n"
            "               [--connections N] [--connections-per-uid N]\n"
            "               [--subscriptions-per-uid N]\n"
            "               [--idle-timeout SECONDS] [--frame-timeout SECONDS]\n"
            "               [--map-size BYTES] [--log-level debug|info|warn|error]\n"
            "\n"
            "Serves the budget ledger kept in DIR on a UNIX socket, in the foreground.\n"
            "The socket is --socket, else $BUDGETD_SOCKET, else $XDG_RUNTIME_DIR/budgetd.sock,\n"
            "else /run/budgetd/budgetd.sock, or the one systemd passes (LISTEN_FDS). --config\n"
            "names the access file (who may do what); without it every local user that can\n"
            "open the socket holds every role. SIGHUP reads the access file again; SIGTERM or\n"
            "SIGINT stops budgetd after the batch in flight. See budgetd(8) and\n"
            "docs/operations.md.\n");
}

#ifdef BUDGET_FAULT_INJECTION
/*
 * Storage faults for the reliability tests, only in the budgetd-faulty build: never in the
 * installed budgetd. $BUDGETD_FAULT holds up to FAULTS_MAX rules separated by commas, each
 * POINT:N:ERROR[:once|always]: POINT is put, commit, sync or meta (store.h), N counts that point's
 * calls from 1, ERROR is an errno name (ENOSPC, EIO, ENOMEM, EDQUOT) or MAP_FULL. "once" (the
 * default) fails call N only; "always" fails call N and every later one. ERROR may also be
 * DELAY or DELAY=MS: the call then succeeds after 300 ms, or MS (1..60000), a slow disk that
 * holds a batch in flight. Each injected fault is logged as "fault injected: ...", which the
 * tests read.
 */
#include <lmdb.h> /* MDB_MAP_FULL: this test-only seam speaks the store's language */

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

static const char *fault_point_name(store_fault_point p)
{
    return p == STORE_FAULT_PUT      ? "put"
           : p == STORE_FAULT_COMMIT ? "commit"
           : p == STORE_FAULT_SYNC   ? "sync"
                                     : "meta";
}

/* The store's callback; runs on the writer thread only. */
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
    else
        return -1;
    errno = 0;
    r->nth = strtoul(nth, &end, 10);
    if (errno || *end || r->nth == 0)
        return -1;
    if (strncmp(error, "DELAY=", 6) == 0) {
        errno = 0;
        r->delay_ms = strtoul(error + 6, &end, 10);
        if (errno || *end || r->delay_ms == 0 || r->delay_ms > FAULT_DELAY_MS_MAX)
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
    const char *env = getenv("BUDGETD_FAULT");
    char text[256], *save = NULL;

    if (!env || !*env)
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
    const char *env = getenv("BUDGETD_LOOKUP_DELAY");
    char *end;

    if (!env || !*env)
        return 0;
    errno = 0;
    unsigned long first = strtoul(env, &end, 10), last = first;
    if (*end == '-')
        last = strtoul(end + 1, &end, 10);
    if (errno || *end != ':' || first > last || last > UINT32_MAX)
        return -1;
    lookup_delay_ms = strtoul(end + 1, &end, 10);
    if (errno || *end || lookup_delay_ms == 0 || lookup_delay_ms > FAULT_DELAY_MS_MAX)
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
    const char *env = getenv("BUDGETD_SOCKET_SWAP");
    if (!env || !*env)
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
    const char *env = getenv("BUDGETD_JOB_DELAY");
    char *end;

    if (!env || !*env)
        return 0;
    errno = 0;
    job_delay_ms = strtoul(env, &end, 10);
    if (errno || *end || job_delay_ms == 0 || job_delay_ms > FAULT_DELAY_MS_MAX)
        return -1;
    cfg->job_hook = job_delay;
    log_warn("BUDGETD_JOB_DELAY=%s: every worker job takes %lu ms longer", env, job_delay_ms);
    return 0;
}

/* $BUDGETD_CLOCK_OFFSET_MS=N: the daemon's wall clock is N ms off (N may be negative, at most
 * a year either way), as after a clock set wrong or set back. */
static int clock_offset_install(server_config *cfg)
{
    const char *env = getenv("BUDGETD_CLOCK_OFFSET_MS");
    char *end;

    if (!env || !*env)
        return 0;
    errno = 0;
    long long ms = strtoll(env, &end, 10);
    if (errno || *end || ms < -31622400000LL || ms > 31622400000LL)
        return -1;
    cfg->clock_offset_ms = ms;
    log_warn("BUDGETD_CLOCK_OFFSET_MS=%s: the clock is moved by %lld ms", env, ms);
    return 0;
}
#endif

static int replay(store *st, const char *data, ledger *l, uint64_t *head,
                  uint8_t head_hash[BUDGET_HASH_BYTES])
{
    replay_result res;
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (replay_log(st, l, UINT64_MAX, &res) != 0) {
        if (res.bad_seq != 0)
            log_error("replay stopped at seq %llu: %s; budgetd does not serve a log that does not "
                      "verify: run `budgetctl audit verify --data %s` (or on a copy of that "
                      "folder) to check the whole chain",
                      (unsigned long long)res.bad_seq, res.why, data);
        else
            log_error("replay stopped: %s", res.why);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *head = res.head;
    memcpy(head_hash, res.hash, BUDGET_HASH_BYTES);
    log_info("replayed %llu events in %.3f s", (unsigned long long)*head,
             (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}

/* The checkpoint signing key (checkpoint.h), made on the first start; its public half is
 * logged so that an operator can publish it. budgetd serves without it: only `checkpoint`
 * then fails. */
static void start_signing_key(const char *data)
{
    checkpoint_key key;
    bool created = false;
    char why[512], hex[2 * CHECKPOINT_PUBLIC_KEY_BYTES + 1];

    if (checkpoint_key_load(data, true, &key, &created, why, sizeof(why)) != 0) {
        log_warn("checkpoints cannot be signed: %s", why);
        return;
    }
    sodium_bin2hex(hex, sizeof(hex), key.public_key, sizeof(key.public_key));
    sodium_memzero(&key, sizeof(key));
    log_info("%s checkpoint signing key: public key %s", created ? "made a new" : "the", hex);
}

/*
 * Holds STORE_DAEMON_LOCK_FILE in the data folder locked (a POSIX write lock over the whole file)
 * for the daemon's whole life, so that a second budgetd on the same folder refuses to start: two
 * writers would each replay, check and append against a ledger the other changes. The file
 * holds the holder's pid for people; the lock itself is what counts, and the kernel drops it
 * when the process ends, however it ends. Makes the folder (0750) when it is missing. Returns
 * the descriptor, never closed (closing any descriptor of the file would drop the lock), or
 * -1 after logging why.
 */
static int data_lock(const char *data)
{
    char path[PATH_MAX], pid_text[32];
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};

    if (snprintf(path, sizeof(path), "%s/%s", data, STORE_DAEMON_LOCK_FILE) >= (int)sizeof(path)) {
        log_error("%s: the data folder's path is too long", data);
        return -1;
    }
    if (mkdir(data, 0750) != 0 && errno != EEXIST) {
        log_error("cannot make the data folder %s: %s", data, strerror(errno));
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        int err = errno;
        struct flock holder = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if ((err == EAGAIN || err == EACCES) && fcntl(fd, F_GETLK, &holder) == 0 &&
            holder.l_type != F_UNLCK)
            log_error("the data folder %s is in use by budgetd pid %ld (it holds %s); one "
                      "daemon serves a data folder at a time",
                      data, (long)holder.l_pid, path);
        else
            log_error("cannot lock %s: %s", path, strerror(err));
        close(fd);
        return -1;
    }
    int n = snprintf(pid_text, sizeof(pid_text), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid_text, (size_t)n, 0) != n)
        log_warn("cannot write the pid into %s: %s", path, strerror(errno));
    return fd;
}

/* Long options without a short letter. */
enum {
    OPT_SOCKET_GROUP = 1000,
    OPT_CONNECTIONS,
    OPT_CONNECTIONS_PER_UID,
    OPT_IDLE_TIMEOUT,
    OPT_FRAME_TIMEOUT,
    OPT_SUBSCRIPTIONS_PER_UID,
};

/* A decimal count in [min, max]. 0 or -1. */
static int parse_count(const char *text, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (*text < '0' || *text > '9')
        return -1;
    *out = strtoul(text, &end, 10);
    return errno || *end || *out < min || *out > max ? -1 : 0;
}

/* A group by name or number. 0 or -1. */
static int parse_group(const char *text, uint32_t *gid)
{
    unsigned long n;
    if (parse_count(text, 0, UINT32_MAX - 1ul, &n) == 0) {
        *gid = (uint32_t)n;
        return 0;
    }
    return access_system_resolver.group(NULL, text, gid);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"data", required_argument, NULL, 'd'},
        {"socket", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},
        {"map-size", required_argument, NULL, 'm'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"socket-group", required_argument, NULL, OPT_SOCKET_GROUP},
        {"connections", required_argument, NULL, OPT_CONNECTIONS},
        {"connections-per-uid", required_argument, NULL, OPT_CONNECTIONS_PER_UID},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"frame-timeout", required_argument, NULL, OPT_FRAME_TIMEOUT},
        {"subscriptions-per-uid", required_argument, NULL, OPT_SUBSCRIPTIONS_PER_UID},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *socket_flag = NULL, *config = NULL;
    char socket_path[108], why[256];
    store_options sopt = {0};
    store *st = NULL;
    server_config cfg = {0};
    int opt, status;
    unsigned long count;

    cfg.connections_max = BUDGET_CONNECTIONS_MAX;
    cfg.connections_per_uid_max = BUDGET_CONNECTIONS_PER_UID_MAX;
    cfg.subscriptions_per_uid_max = BUDGET_SUBSCRIPTIONS_PER_UID_MAX;
    cfg.idle_timeout_ms = BUDGET_IDLE_TIMEOUT_S * 1000ull;
    cfg.frame_timeout_ms = BUDGET_FRAME_TIMEOUT_S * 1000ull;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'd':
            data = optarg;
            break;
        case 's':
            socket_flag = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'm': {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(optarg, &end, 10);
            if (errno || *end || n < 65536) {
                fprintf(stderr, "budgetd: --map-size wants bytes, at least 65536\n");
                return 2;
            }
            sopt.map_bytes_initial = (size_t)n;
            break;
        }
        case 'l':
            if (strcmp(optarg, "debug") == 0)
                log_set_level(LOG_LEVEL_DEBUG);
            else if (strcmp(optarg, "info") == 0)
                log_set_level(LOG_LEVEL_INFO);
            else if (strcmp(optarg, "warn") == 0)
                log_set_level(LOG_LEVEL_WARN);
            else if (strcmp(optarg, "error") == 0)
                log_set_level(LOG_LEVEL_ERROR);
            else {
                fprintf(stderr, "budgetd: --log-level is debug, info, warn or error\n");
                return 2;
            }
            break;
        case OPT_SOCKET_GROUP:
            if (parse_group(optarg, &cfg.socket_group) != 0) {
                fprintf(stderr, "budgetd: --socket-group: no group %s\n", optarg);
                return 2;
            }
            cfg.socket_group_set = true;
            break;
        case OPT_CONNECTIONS:
        case OPT_CONNECTIONS_PER_UID:
            if (parse_count(optarg, 1, BUDGET_CONNECTIONS_CEILING, &count) != 0) {
                fprintf(stderr, "budgetd: --%s wants a count, 1..%u\n",
                        opt == OPT_CONNECTIONS ? "connections" : "connections-per-uid",
                        BUDGET_CONNECTIONS_CEILING);
                return 2;
            }
            *(opt == OPT_CONNECTIONS ? &cfg.connections_max : &cfg.connections_per_uid_max) =
                (uint32_t)count;
            break;
        case OPT_SUBSCRIPTIONS_PER_UID:
            if (parse_count(optarg, 1, BUDGET_SUBSCRIPTIONS_MAX, &count) != 0) {
                fprintf(stderr, "budgetd: --subscriptions-per-uid wants a count, 1..%u\n",
                        BUDGET_SUBSCRIPTIONS_MAX);
                return 2;
            }
            cfg.subscriptions_per_uid_max = (uint32_t)count;
            break;
        case OPT_IDLE_TIMEOUT:
        case OPT_FRAME_TIMEOUT:
            if (parse_count(optarg, 1, 86400, &count) != 0) {
                fprintf(stderr, "budgetd: --%s wants seconds, 1..86400\n",
                        opt == OPT_IDLE_TIMEOUT ? "idle-timeout" : "frame-timeout");
                return 2;
            }
            *(opt == OPT_IDLE_TIMEOUT ? &cfg.idle_timeout_ms : &cfg.frame_timeout_ms) =
                count * 1000u;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("budgetd %s (protocol %d)\n", BUDGET_VERSION, BUDGET_PROTOCOL_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!data || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (budget_socket_path(socket_flag, socket_path, sizeof(socket_path)) != 0) {
        fprintf(stderr, "budgetd: the socket path is too long for a UNIX socket\n");
        return 2;
    }
    if (config) {
        if (access_load(config, &cfg.access, why, sizeof(why)) != 0) {
            log_error("the access file cannot be used: %s", why);
            return 1;
        }
        cfg.access_path = config;
        log_info("access file %s: %zu rules", config, access_rule_count(cfg.access));
    } else {
        cfg.access = access_rules_open();
        if (!cfg.access) {
            log_error("out of memory");
            return 1;
        }
        log_warn("no access file (--config): every local user who can open the socket holds "
                 "every role; only the socket's permissions keep others out (four-eyes still "
                 "holds)");
    }

#ifdef BUDGET_FAULT_INJECTION
    if (fault_install(&sopt) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_FAULT is POINT:N:ERROR[:once|always][,...]\n");
        return 2;
    }
    if (lookup_delay_install(&cfg) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_LOOKUP_DELAY is UID[-UID]:MS\n");
        return 2;
    }
    socket_swap_install(&cfg);
    if (job_delay_install(&cfg) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_JOB_DELAY is a number of ms (1..60000)\n");
        return 2;
    }
    if (clock_offset_install(&cfg) != 0) {
        fprintf(stderr, "budgetd: BUDGETD_CLOCK_OFFSET_MS is a number of ms\n");
        return 2;
    }
#endif
    if (data_lock(data) < 0) {
        access_free(cfg.access);
        return 1;
    }
    if (store_open(&st, data, &sopt, why, sizeof(why)) != 0) {
        log_error("%s", why);
        access_free(cfg.access);
        return 1;
    }
    cfg.ledger = ledger_new();
    if (!cfg.ledger || replay(st, data, cfg.ledger, &cfg.head, cfg.head_hash) != 0) {
        ledger_free(cfg.ledger);
        access_free(cfg.access);
        store_close(st);
        return 1;
    }
    start_signing_key(data);
    cfg.socket_path = socket_path;
    cfg.store = st;
    status = server_run(&cfg);
    store_close(st);
    return status;
}
