/* budgetd: the budget ledger daemon. Opens the store, replays the log, serves the socket. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "access.h"
#include "bigmem.h"
#include "budget/errors.h"
#include "budget/protocol.h"
#include "checkpoint.h"
#include "event.h"
#include "faults.h"
#include "history.h"
#include "ledger.h"
#include "log.h"
#include "proto/frame.h"
#include "replay.h"
#include "server.h"
#include "snapshot.h"
#include "store.h"

/* Logs why replay stopped. */
static void replay_failed(const char *data, const replay_result *res)
{
    if (res->bad_seq != 0)
        log_error("replay stopped at seq %llu: %s; budgetd does not serve a log that does not "
                  "verify: run `budgetctl audit verify --data %s` (or on a copy of that "
                  "folder) to check the whole chain",
                  (unsigned long long)res->bad_seq, res->why, data);
    else
        log_error("replay stopped: %s", res->why);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/*
 * From the newest valid snapshot: the whole chain is checked in pieces by a thread of its own
 * while the snapshot is read; then the events after it are applied, decoded but not hashed
 * again (the check covers them), while the check goes on beside them, helped at the end by the
 * main thread. *l is NULL when there is no valid snapshot, or when the events after it do not
 * apply (the caller then replays the whole log, which says what is wrong with it if anything
 * is). 0, or 1 after logging that the chain does not verify.
 */
static int replay_from_snapshot(store *st, const char *data, const snapshots *snaps, ledger **l,
                                uint64_t *at, replay_result *res)
{
    uint8_t at_hash[BUDGET_HASH_BYTES];
    char why[256];
    replay_links links = {0};
    uint64_t newest;
    *l = NULL;
    if (snapshot_list(snaps, &newest, 1) == 0)
        return 0; /* none: the whole replay checks the chain once */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (replay_links_start(&links, st, 0, UINT64_MAX) != 0)
        return 0; /* the store could not be read: the whole replay says so */
    *l = snapshot_restore(snaps, st, UINT64_MAX, at, at_hash, why, sizeof(why));
    double restored = seconds_since(&t0);
    if (why[0] != '\0')
        log_warn("%s", why);
    if (*l == NULL) {
        /* No snapshot to start from: the whole replay checks the chain as it goes. */
        replay_links_cancel(&links);
        return 0;
    }
    int rc = replay_log_beside(st, *l, *at, UINT64_MAX, 0, &links, res);
    if (rc == 0) {
        log_info("snapshot %llu read in %.3f s; the events after it applied and the whole "
                 "chain checked by %.3f s",
                 (unsigned long long)*at, restored, seconds_since(&t0));
        return 0;
    }
    ledger_free(*l);
    *l = NULL;
    if (rc == BUDGET_EINTERNAL && res->code != NULL) {
        /* A link of the chain is broken, before the snapshot or after it. */
        replay_failed(data, res);
        return 1;
    }
    log_warn("replay from snapshot %llu stopped: %s; replaying the whole log",
             (unsigned long long)*at, res->why);
    return 0;
}

/* Replays the log into *out, from a snapshot when `snaps` has a valid one (*snapshot_head: its
 * seq, else 0). 0, or 1 after logging why. */
static int replay(store *st, const char *data, const snapshots *snaps, ledger **out,
                  uint64_t *snapshot_head, uint64_t *head, uint8_t head_hash[BUDGET_HASH_BYTES])
{
    replay_result res;
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    *snapshot_head = 0;
    ledger *l = NULL;
    if (snaps != NULL && replay_from_snapshot(st, data, snaps, &l, snapshot_head, &res) != 0)
        return 1;
    if (l == NULL) {
        *snapshot_head = 0;
        l = ledger_new();
        if (l == NULL) {
            log_error("out of memory");
            return 1;
        }
        if (replay_log(st, l, UINT64_MAX, &res) != 0) {
            replay_failed(data, &res);
            ledger_free(l);
            return 1;
        }
    }
    *out = l;
    *head = res.head;
    memcpy(head_hash, res.hash, BUDGET_HASH_BYTES);
    log_info("replayed %llu events in %.3f s (from snapshot %llu, every hash checked)",
             (unsigned long long)*head, seconds_since(&t0), (unsigned long long)*snapshot_head);
    return 0;
}

/* Says, after an unclean stop, what start-up brought back from the write-ahead file. */
static void log_recovery(store *st)
{
    store_stats ss;
    store_get_stats(st, &ss);
    if (ss.wal_unclean_start)
        log_info("unclean stop before this start: brought %llu events (%llu commits) from the "
                 "write-ahead file into data.mdb",
                 (unsigned long long)ss.wal_events_replayed,
                 (unsigned long long)ss.wal_records_replayed);
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

/* ---- options ------------------------------------------------------------------------------ */

/* What the command line sets. */
typedef struct {
    const char *data, *socket_flag, *config;
    store_options sopt;
    server_config cfg;
    uint32_t snapshots_keep;
    snapshots snaps;
} daemon_options;

typedef struct option_row option_row;

/* Reads an option's value into `o`. 0, or 2 after saying on stderr what the option wants. */
typedef int (*option_parser)(const option_row *row, const char *value, daemon_options *o);

/* One option of budgetd: a row of `option_rows`, which makes getopt's table and the usage. */
struct option_row {
    const char *name;
    const char *meta; /* the value's placeholder; NULL when the option takes no value */
    option_parser parse;
    unsigned long min, max; /* the range of a count */
    size_t field;           /* where a count goes in daemon_options */
    const char *help;
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

static int parse_data(const option_row *row, const char *value, daemon_options *o)
{
    (void)row;
    o->data = value;
    return 0;
}

static int parse_socket(const option_row *row, const char *value, daemon_options *o)
{
    (void)row;
    o->socket_flag = value;
    return 0;
}

static int parse_config(const option_row *row, const char *value, daemon_options *o)
{
    (void)row;
    o->config = value;
    return 0;
}

/* A group by name or number. */
static int parse_socket_group(const option_row *row, const char *value, daemon_options *o)
{
    unsigned long n;
    if (parse_count(value, 0, UINT32_MAX - 1ul, &n) == 0)
        o->cfg.socket_group = (uint32_t)n;
    else if (access_system_resolver.group(NULL, value, &o->cfg.socket_group) != 0) {
        fprintf(stderr, "budgetd: --%s: no group %s\n", row->name, value);
        return 2;
    }
    o->cfg.socket_group_set = true;
    return 0;
}

/* A count in the row's range, or 2 after saying that the option wants `what` in it. */
static int option_count(const option_row *row, const char *value, const char *what,
                        unsigned long *count)
{
    if (parse_count(value, row->min, row->max, count) == 0)
        return 0;
    fprintf(stderr, "budgetd: --%s wants %s, %lu..%lu\n", row->name, what, row->min, row->max);
    return 2;
}

/* A count of connections or subscriptions, into the uint32_t at row->field. */
static int parse_limit(const option_row *row, const char *value, daemon_options *o)
{
    unsigned long count;
    int status = option_count(row, value, "a count", &count);
    if (status == 0)
        *(uint32_t *)((char *)o + row->field) = (uint32_t)count;
    return status;
}

/* Seconds, into the milliseconds (uint64_t) at row->field. */
static int parse_seconds(const option_row *row, const char *value, daemon_options *o)
{
    unsigned long count;
    int status = option_count(row, value, "seconds", &count);
    if (status == 0)
        *(uint64_t *)((char *)o + row->field) = count * 1000u;
    return status;
}

/* A count of events, into the uint64_t at row->field. */
static int parse_events(const option_row *row, const char *value, daemon_options *o)
{
    unsigned long count;
    int status = option_count(row, value, "a count of events", &count);
    if (status == 0)
        *(uint64_t *)((char *)o + row->field) = count;
    return status;
}

static int parse_map_size(const option_row *row, const char *value, daemon_options *o)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(value, &end, 10);
    if (errno || *end || n < row->min) {
        fprintf(stderr, "budgetd: --%s wants bytes, at least %lu\n", row->name, row->min);
        return 2;
    }
    o->sopt.map_bytes_initial = (size_t)n;
    return 0;
}

static int parse_log_level(const option_row *row, const char *value, daemon_options *o)
{
    static const struct {
        const char *name;
        log_level level;
    } levels[] = {{"debug", LOG_LEVEL_DEBUG},
                  {"info", LOG_LEVEL_INFO},
                  {"warn", LOG_LEVEL_WARN},
                  {"error", LOG_LEVEL_ERROR}};
    (void)o;
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (strcmp(value, levels[i].name) == 0) {
            log_set_level(levels[i].level);
            return 0;
        }
    }
    fprintf(stderr, "budgetd: --%s is debug, info, warn or error\n", row->name);
    return 2;
}

#define CFG_FIELD(f) offsetof(daemon_options, cfg.f)

/* Every option of budgetd. --help and --version (no parser) are answered in main. */
static const option_row option_rows[] = {
    {"data", "DIR", parse_data, 0, 0, 0, "the data folder (required)"},
    {"socket", "PATH", parse_socket, 0, 0, 0, "the UNIX socket"},
    {"socket-group", "GROUP", parse_socket_group, 0, 0, 0, "the socket's group"},
    {"config", "FILE", parse_config, 0, 0, 0, "the access file: who may do what"},
    {"connections", "N", parse_limit, 1, BUDGET_CONNECTIONS_CEILING, CFG_FIELD(connections_max),
     "connections at once, from everyone"},
    {"connections-per-uid", "N", parse_limit, 1, BUDGET_CONNECTIONS_CEILING,
     CFG_FIELD(connections_per_uid_max), "connections at once from one uid"},
    {"subscriptions-per-uid", "N", parse_limit, 1, BUDGET_SUBSCRIPTIONS_MAX,
     CFG_FIELD(subscriptions_per_uid_max), "subscriptions at once from one uid"},
    {"idle-timeout", "SECONDS", parse_seconds, 1, 86400, CFG_FIELD(idle_timeout_ms),
     "close a connection idle this long"},
    {"frame-timeout", "SECONDS", parse_seconds, 1, 86400, CFG_FIELD(frame_timeout_ms),
     "a frame must arrive whole within this long"},
    {"read-slice", "MICROSECONDS", parse_limit, 0, 1000000, CFG_FIELD(read_slice_us),
     "loop time for reads in one turn before they wait for the next"},
    {"read-share", "PERCENT", parse_limit, 1, 100, CFG_FIELD(read_share_pct),
     "share of the loop reads may take while writes wait (100: no bound)"},
    {"map-size", "BYTES", parse_map_size, 65536, 0, 0, "LMDB's initial map size"},
    {"snapshot-every", "N", parse_events, 0, UINT32_MAX, CFG_FIELD(snapshot_every),
     "a snapshot of the ledger every N events (0: none)"},
    {"snapshots-keep", "N", parse_limit, 1, SNAPSHOT_KEEP_MAX,
     offsetof(daemon_options, snapshots_keep), "keep the newest N snapshots"},
    {"as-of-keep", "N", parse_limit, 0, HISTORY_KEEP_MAX, CFG_FIELD(as_of_keep),
     "keep the ledgers of the last N points balances were read at (0: none)"},
    {"as-of-idle", "SECONDS", parse_seconds, 1, 86400, CFG_FIELD(as_of_idle_ms),
     "free a kept ledger, and the arrays of one freed, after this long unused"},
    {"log-level", "debug|info|warn|error", parse_log_level, 0, 0, 0, "what the log holds"},
    {"help", NULL, NULL, 0, 0, 0, "print this usage and exit"},
    {"version", NULL, NULL, 0, 0, 0, "print the version and exit"},
};

#define OPTION_ROWS (sizeof(option_rows) / sizeof(option_rows[0]))
/* getopt_long's value for option_rows[i] is OPTION_VAL_FIRST + i, clear of '?' and ':'. */
#define OPTION_VAL_FIRST 1000

static void usage(FILE *out)
{
    fprintf(out,
            "usage: budgetd --data DIR [OPTION]...\n"
            "\n"
            "Serves the budget ledger kept in DIR on a UNIX socket, in the foreground.\n"
            "The socket is --socket, else $BUDGETD_SOCKET, else $XDG_RUNTIME_DIR/budgetd.sock,\n"
            "else /run/budgetd/budgetd.sock, or the one systemd passes (LISTEN_FDS). --config\n"
            "names the access file (who may do what); without it every local user that can\n"
            "open the socket holds every role. SIGHUP reads the access file again; SIGTERM or\n"
            "SIGINT stops budgetd after the batch in flight. See budgetd(8) and\n"
            "docs/operations.md.\n"
            "\n");
    for (size_t i = 0; i < OPTION_ROWS; i++) {
        const option_row *row = &option_rows[i];
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", row->name, row->meta ? " " : "",
                 row->meta ? row->meta : "");
        fprintf(out, "  %-36s %s\n", left, row->help);
    }
}

/* The defaults of everything the command line may set. */
static void options_init(daemon_options *o)
{
    memset(o, 0, sizeof(*o));
    o->cfg.connections_max = BUDGET_CONNECTIONS_MAX;
    o->cfg.connections_per_uid_max = BUDGET_CONNECTIONS_PER_UID_MAX;
    o->cfg.subscriptions_per_uid_max = BUDGET_SUBSCRIPTIONS_PER_UID_MAX;
    o->cfg.idle_timeout_ms = BUDGET_IDLE_TIMEOUT_S * 1000ull;
    o->cfg.frame_timeout_ms = BUDGET_FRAME_TIMEOUT_S * 1000ull;
    o->cfg.snapshot_every = SNAPSHOT_EVERY_DEFAULT;
    o->snapshots_keep = SNAPSHOT_KEEP_DEFAULT;
    o->cfg.read_slice_us = BUDGET_READ_SLICE_US;
    o->cfg.read_share_pct = BUDGET_READ_SHARE_PCT;
    o->cfg.as_of_keep = HISTORY_KEEP_DEFAULT;
    o->cfg.as_of_idle_ms = HISTORY_IDLE_S_DEFAULT * 1000ull;
}

/* -1 when the command line is all read into `o`; else the status to exit with (0 after
 * --help or --version). */
static int options_parse(int argc, char **argv, daemon_options *o)
{
    struct option long_options[OPTION_ROWS + 1];
    int index;

    for (size_t i = 0; i < OPTION_ROWS; i++)
        long_options[i] = (struct option){option_rows[i].name,
                                          option_rows[i].meta ? required_argument : no_argument,
                                          NULL, OPTION_VAL_FIRST + (int)i};
    long_options[OPTION_ROWS] = (struct option){NULL, 0, NULL, 0};
    options_init(o);
    while ((index = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (index < OPTION_VAL_FIRST || (size_t)(index - OPTION_VAL_FIRST) >= OPTION_ROWS) {
            usage(stderr);
            return 2;
        }
        const option_row *row = &option_rows[index - OPTION_VAL_FIRST];
        if (strcmp(row->name, "help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(row->name, "version") == 0) {
            printf("budgetd %s (protocol %d)\n", BUDGET_VERSION, BUDGET_PROTOCOL_VERSION);
            return 0;
        }
        int status = row->parse(row, optarg, o);
        if (status != 0)
            return status;
    }
    if (!o->data || optind != argc) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* The access rules: from --config, else every role for everyone. 0, or 1 after logging why. */
static int load_access(daemon_options *o)
{
    char why[256];
    server_config *cfg = &o->cfg;

    if (o->config) {
        if (access_load(o->config, &cfg->access, why, sizeof(why)) != 0) {
            log_error("the access file cannot be used: %s", why);
            return 1;
        }
        cfg->access_path = o->config;
        log_info("access file %s: %zu rules", o->config, access_rule_count(cfg->access));
        return 0;
    }
    cfg->access = access_rules_open();
    if (!cfg->access) {
        log_error("out of memory");
        return 1;
    }
    log_warn("no access file (--config): every local user who can open the socket holds "
             "every role; only the socket's permissions keep others out (four-eyes still "
             "holds)");
    return 0;
}

/* Locks the data folder, opens the store and replays it, then serves. The exit status. */
static int serve(daemon_options *o, const char *socket_path)
{
    char why[256];
    store *st = NULL;
    server_config *cfg = &o->cfg;

    if (data_lock(o->data) < 0) {
        access_free(cfg->access);
        return 1;
    }
    if (store_open(&st, o->data, &o->sopt, why, sizeof(why)) != 0) {
        log_error("%s", why);
        access_free(cfg->access);
        return 1;
    }
    log_recovery(st);
    cfg->snapshots = NULL;
    if (cfg->snapshot_every != 0) {
        if (snapshots_open(&o->snaps, o->data, o->snapshots_keep, why, sizeof(why)) == 0)
            cfg->snapshots = &o->snaps;
        else
            log_warn("no snapshots: %s", why);
    }
    if (replay(st, o->data, cfg->snapshots, &cfg->ledger, &cfg->snapshot_head, &cfg->head,
               cfg->head_hash) != 0) {
        access_free(cfg->access);
        store_close(st);
        return 1;
    }
    start_signing_key(o->data);
    cfg->socket_path = socket_path;
    cfg->store = st;
    int status = server_run(cfg);
    store_close(st);
    return status;
}

int main(int argc, char **argv)
{
    daemon_options o;
    char socket_path[108];

    bigmem_init();
    int status = options_parse(argc, argv, &o);
    if (status >= 0)
        return status;
    if (budget_socket_path(o.socket_flag, socket_path, sizeof(socket_path)) != 0) {
        fprintf(stderr, "budgetd: the socket path is too long for a UNIX socket\n");
        return 2;
    }
    if (load_access(&o) != 0)
        return 1;
    status = faults_install(&o.sopt, &o.cfg);
    if (status != 0)
        return status;
    return serve(&o, socket_path);
}
