/*
 * Helpers for the end-to-end suite: a real budgetd in a folder of its own, budgetctl run as a
 * child with its output captured, raw frames on a socket, request packing, and a small JSON
 * reader for `budgetctl --json`. Every wait here has a deadline, so a hung daemon fails a
 * test instead of hanging it.
 */
#ifndef BUDGET_E2E_UTIL_H
#define BUDGET_E2E_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <criterion/criterion.h>
#include <msgpack.h>

#include "budget/client_msgpack.h"

/*
 * How much slower than a plain build the daemon and the tests run: $RELIABILITY_SLOW, or 10
 * when the daemon runs under a wrapper (valgrind), 3 in a sanitizer build, else 1. Every
 * timeout below is multiplied by it, so a slow machine or build waits longer, never less.
 */
int e2e_slow(void);
/* Microseconds on the monotonic clock: the one clock of every test helper. */
int64_t e2e_now_us(void);
/* The same clock in milliseconds. */
int64_t e2e_now_ms(void);
/* The Swedish day (the ledger's days, budget_day_of_ms) of the UTC instant `utc_ms`, moved by
 * `shift` days, as YYYY-MM-DD; utc_ms 0 is now. */
void e2e_day_text(int64_t utc_ms, int shift, char out[11]);
/* True when the daemon runs under a wrapper ($BUDGETD_WRAPPER, or $RELIABILITY_WRAPPED=1). */
bool e2e_wrapped(void);
/* The number in environment variable `name`, or `fallback` when it is unset or not a number. */
long e2e_env_long(const char *name, long fallback);

/* How long a daemon may take to answer its first connect. */
#define E2E_START_TIMEOUT_MS (10000 * e2e_slow())
/* How long a stopped daemon may take to exit. */
#define E2E_STOP_TIMEOUT_MS (5000 * e2e_slow())
/* How long budgetctl may run. */
#define E2E_CTL_TIMEOUT_MS (10000 * e2e_slow())
/* How long one response may take on a raw connection. */
#define E2E_FRAME_TIMEOUT_MS (5000 * e2e_slow())

/* ---- the daemon ------------------------------------------------------------------------------ */

/* One budgetd: its folder (DIR), its data (DIR/data), socket (DIR/budgetd.sock) and log
 * (DIR/budgetd.log, the daemon's stdout and stderr, appended to across restarts). */
typedef struct {
    char dir[64];
    char data[160];
    char socket[108];
    char log[160];
    pid_t pid; /* 0 when not running */
} e2e_daemon;

/* Makes a fresh folder and starts budgetd in it. Returns 0, or -1 with the reason printed.
 * The daemon becomes the one e2e_report describes. */
int e2e_daemon_start(e2e_daemon *d);

/* Starts budgetd again on the folder of a stopped daemon. Returns 0 or -1. */
int e2e_daemon_restart(e2e_daemon *d);

/* Makes a fresh folder for a daemon, TMPDIR/budgetd-NAME-XXXXXX, and names its data, socket
 * and log in it; starts nothing. 0, or -1 with the reason printed. */
int e2e_daemon_make(e2e_daemon *d, const char *name);

/* How e2e_daemon_launch starts budgetd. */
typedef struct {
    const char *binary;       /* NULL: BUDGETD_PATH */
    const char *const *extra; /* arguments after the usual ones, NULL-terminated; or NULL */
    /* "NAME=VALUE" settings of budgetd-faulty's seams ("BUDGETD_FAULT=commit:1:EIO"),
     * NULL-terminated; or NULL. A seam not listed is unset, whatever the test's environment.
     * Other variables may be set too ("LD_PRELOAD=..."): a setting here replaces the value
     * the test's environment has. */
    const char *const *env;
    bool no_wait; /* return once started, without waiting for the socket (a failing start) */
} e2e_launch;

/* The one way a suite starts budgetd: on the folder of `d` (made by e2e_daemon_make or a
 * stopped daemon's), under $BUDGETD_WRAPPER when that is set, its output appended to the log.
 * Waits until the socket answers unless `how->no_wait`. 0, or -1 with the log printed. */
int e2e_daemon_launch(e2e_daemon *d, const e2e_launch *how);

/*
 * Sends `signum` and waits up to `timeout_ms` for the daemon to exit. Returns 0 with its
 * waitpid status in *status, or -1 when it did not exit in time (it is then killed with
 * SIGKILL and reaped, so the folder may be reused).
 */
int e2e_daemon_stop(e2e_daemon *d, int signum, int timeout_ms, int *status);

/* SIGKILL and reap: a crash, as far as the daemon can tell. */
void e2e_daemon_kill(e2e_daemon *d);

/* Kills the daemon when it still runs and removes its folder. */
void e2e_daemon_cleanup(e2e_daemon *d);
/* Removes a folder and everything in it (nothing when `dir` is NULL or ""). */
void e2e_remove_tree(const char *dir);
/* A memory figure of a process from /proc/PID/status ("VmRSS", "VmHWM"), in KiB; -1 when
 * it cannot be read. */
long e2e_status_kib(pid_t pid, const char *field);
/* In a forked child: signals as a fresh process has them, and death with the test (the
 * parent `parent`) that made it. */
void e2e_child_reset(pid_t parent);

/* Prints the log path of the current daemon and the last lines of its log on stderr. */
void e2e_report(void);

/* Assertions that print the daemon's log before failing the test. */
#define e2e_assert(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            e2e_report();                                                                          \
            cr_assert_fail(__VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)

#define e2e_assert_int(actual, expected, what)                                                     \
    do {                                                                                           \
        long long actual_ = (long long)(actual), expected_ = (long long)(expected);                \
        e2e_assert(actual_ == expected_, "%s: got %lld, expected %lld", (what), actual_,           \
                   expected_);                                                                     \
    } while (0)

#define e2e_assert_str(actual, expected, what)                                                     \
    do {                                                                                           \
        const char *actual_ = (actual), *expected_ = (expected);                                   \
        e2e_assert(actual_ != NULL && strcmp(actual_, expected_) == 0,                             \
                   "%s: got \"%s\", expected \"%s\"", (what), actual_ ? actual_ : "(null)",        \
                   expected_);                                                                     \
    } while (0)

/* ---- budgetctl ------------------------------------------------------------------------------- */

typedef struct {
    int exit_code; /* the exit status, or -1 when it was killed by a signal or timed out */
    char *out;     /* stdout, NUL-terminated */
    size_t out_len;
    char *err; /* stderr, NUL-terminated */
    size_t err_len;
} e2e_ctl_result;

/*
 * Runs `budgetctl --socket SOCKET ARGV...` (`argc` arguments) without a shell and captures
 * its output; a run over E2E_CTL_TIMEOUT_MS is killed. Returns 0 (see r->exit_code) or -1
 * when it could not be run. Free the result with e2e_ctl_free.
 */
int e2e_ctl_argv(const e2e_daemon *d, e2e_ctl_result *r, int argc, const char *const *argv);
void e2e_ctl_free(e2e_ctl_result *r);

/* ---- raw connections ------------------------------------------------------------------------- */

enum {
    E2E_FRAME = 0,   /* a frame was read */
    E2E_CLOSED = 1,  /* the daemon closed the connection (before a whole frame) */
    E2E_TIMEOUT = 2, /* nothing complete arrived in time */
    E2E_BROKEN = 3,  /* an I/O error, a bad header or a body that is not one msgpack value */
};

/* A blocking stream socket connected to `path`, or -1. */
int e2e_raw_connect(const char *path);
/* Writes all of `data` with one write call where the kernel takes it all. 0 or -1. */
int e2e_raw_send(int fd, const void *data, size_t size);
/* Reads one frame within `timeout_ms` and decodes it into `out` (initialised here; destroy
 * it with msgpack_unpacked_destroy when E2E_FRAME is returned). */
int e2e_raw_recv(int fd, int timeout_ms, msgpack_unpacked *out);
/* Reads and discards until the daemon closes: true when it does within `timeout_ms`. */
bool e2e_raw_wait_close(int fd, int timeout_ms);

/* An envelope as read from a raw connection. `result` points into the unpacked object. */
typedef struct {
    uint64_t id;
    bool ok;
    char code[32];
    const msgpack_object *result;
} e2e_envelope;

/* Reads {"id", "ok", "result"|"error"}; false when the object is not a valid response. */
bool e2e_envelope_read(const msgpack_object *root, e2e_envelope *out);

/* ---- packing --------------------------------------------------------------------------------- */

/* A growing buffer and its packer: args for the client library, or whole frames. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t frame_start; /* where the open frame's header is */
} e2e_buf;

void e2e_buf_init(e2e_buf *b);
void e2e_buf_destroy(e2e_buf *b);
void e2e_buf_clear(e2e_buf *b);
/* Reserves a 4-byte header; e2e_frame_end fills it with the size of what was packed since. */
void e2e_frame_begin(e2e_buf *b);
void e2e_frame_end(e2e_buf *b);
/* Appends bytes as they are (hostile frames). */
void e2e_buf_raw(e2e_buf *b, const void *data, size_t size);

void e2e_pack_str(e2e_buf *b, const char *s);
void e2e_kv_str(e2e_buf *b, const char *key, const char *value);
void e2e_kv_int(e2e_buf *b, const char *key, int64_t value);
void e2e_kv_uint(e2e_buf *b, const char *key, uint64_t value);
/* The decision a write rests on, as args: E2E_DECISION_PAIRS pairs (decision_body "KS",
 * decision_date "2021-08-24", decision_paragraph "241": KS 2021-08-24 § 241, the source
 * document's), to count in the args map. */
#define E2E_DECISION_PAIRS 3
void e2e_kv_decision(e2e_buf *b);
/* The same decision as budgetctl takes it. */
#define E2E_DECISION "KS 2021-08-24 § 241"

/* ---- the client library ---------------------------------------------------------------------- */

/* Connects with budget_client_connect; asserts success. */
budget_client *e2e_client(const e2e_daemon *d);

/* budget_client_call with `args` (NULL for none); asserts that a response arrived. */
void e2e_call(budget_client *c, const char *op, const e2e_buf *args, budget_response *r);

/* What a write answered: ok with seq and hash, or the error code. */
typedef struct {
    bool ok;
    uint64_t seq;
    uint8_t hash[32];
    char code[32];
    char message[BUDGET_TEXT_BYTES_MAX + 1];
} e2e_write_result;

void e2e_write(budget_client *c, const char *op, const e2e_buf *args, e2e_write_result *out);

/* A write that must succeed; returns its seq. */
uint64_t e2e_write_ok(budget_client *c, const char *op, const e2e_buf *args);

/* The head a hello reports. */
uint64_t e2e_head(budget_client *c);
/* The `stats` counter `key` (0 when absent). */
uint64_t e2e_stat(budget_client *c, const char *key);

/* A uint under `key` of a msgpack map, asserting that it is there. */
uint64_t e2e_map_uint(const msgpack_object *map, const char *key);
/* True when the str under `key` of a msgpack map is exactly `expected`. */
bool e2e_map_str_is(const msgpack_object *map, const char *key, const char *expected);

/* ---- other identities ------------------------------------------------------------------------ */

/*
 * Clients as another user. The suites run as root (as in CI); a client that must be someone
 * else (an approval: four-eyes forbids deciding one's own proposal) connects as one of these.
 * The daemons started here give their socket the group E2E_OTHER_GID (--socket-group) and
 * their folder mode 0711, so E2E_OTHER can open it and a user outside that group cannot.
 */
#define E2E_OTHER_UID 65534u /* nobody */
#define E2E_OTHER_GID 65534u /* nogroup */
#define E2E_OTHER_GID_TEXT "65534"

typedef struct {
    uint32_t uid;
    uint32_t gid;       /* its group: the one the daemon reads from SO_PEERCRED */
    uint32_t groups[4]; /* its other groups (the kernel checks the socket's group against all) */
    int groups_count;
} e2e_identity;

/* nobody/nogroup: the second identity of every suite. */
extern const e2e_identity e2e_other;

/* A child process: the one way the helpers fork and exec. */
typedef struct {
    const char *const *argv;  /* argv[0] is the program's path; NULL-terminated */
    int out_fd, err_fd;       /* its stdout and stderr; stdin is /dev/null */
    const e2e_identity *who;  /* NULL: this process's ids */
    const char *const *unset; /* variables it does not inherit, NULL-terminated; or NULL */
    const char *const *set;   /* "NAME=VALUE" it gets besides (in place of an inherited value
                                 of NAME), NULL-terminated; or NULL */
} e2e_child;

/* Starts a child, which dies with the test. Its pid, or -1. */
pid_t e2e_spawn(const e2e_child *c);

/*
 * Connects to `path` as `who`, from a thread that takes that identity for the connect only
 * (the rest of the process stays root): the kernel checks the socket's permissions for it,
 * and the daemon sees it as the peer for as long as the connection lives. Returns 0, or a
 * negative errno (-EACCES when `who` may not open the socket; -EPERM when this process may
 * not switch identities, i.e. it does not run as root).
 */
int e2e_client_connect_as(const char *path, const e2e_identity *who, budget_client **out);
/* The same, asserting success. */
budget_client *e2e_client_as(const e2e_daemon *d, const e2e_identity *who);
/* A raw connection as `who`: the fd, or a negative errno. */
int e2e_raw_connect_as(const char *path, const e2e_identity *who);
/* e2e_ctl_argv, with budgetctl run as `who`. */
int e2e_ctl_argv_as(const e2e_daemon *d, const e2e_identity *who, e2e_ctl_result *r, int argc,
                    const char *const *argv);

/* e2e_daemon_start / e2e_daemon_restart with more arguments for budgetd (NULL-terminated, at
 * most 16): --config, limits. */
int e2e_daemon_start_with(e2e_daemon *d, const char *const *extra);
int e2e_daemon_restart_with(e2e_daemon *d, const char *const *extra);

/*
 * Registers each unit of the NULL-terminated list, as `as` (NULL: as root, the suites' admin
 * when no access file says otherwise), one unit.register each with the id "unit-CODE": KS as
 * the board (styrelse), the others as committees (nämnd), named as the source document names
 * them or else by their code. A write names only registered units: a suite registers those it
 * uses after starting its daemon. Asserts success.
 */
void e2e_register_units(const e2e_daemon *d, const e2e_identity *as, ...) __attribute__((sentinel));

/* ---- JSON ------------------------------------------------------------------------------------ */

typedef enum {
    E2E_JSON_NULL,
    E2E_JSON_BOOL,
    E2E_JSON_NUMBER,
    E2E_JSON_STRING,
    E2E_JSON_ARRAY,
    E2E_JSON_OBJECT
} e2e_json_type;

typedef struct e2e_json e2e_json;
struct e2e_json {
    e2e_json_type type;
    bool boolean;
    bool integral; /* a number written without fraction or exponent that fits int64 */
    int64_t integer;
    char *string; /* NUL-terminated (strings; object keys are in `keys`) */
    size_t count; /* items of an array or object */
    char **keys;  /* object keys */
    e2e_json **items;
};

/* Parses exactly one JSON value (surrounding whitespace allowed), or NULL when it is not. */
e2e_json *e2e_json_parse(const char *text, size_t len);
void e2e_json_free(e2e_json *j);
/* The member `key` of an object, or NULL. */
const e2e_json *e2e_json_get(const e2e_json *obj, const char *key);
/* The integer member `key`, or `fallback` when absent or not an integer. */
int64_t e2e_json_int(const e2e_json *obj, const char *key, int64_t fallback);
/* The string member `key`, or "" when absent or not a string. */
const char *e2e_json_str(const e2e_json *obj, const char *key);

#endif
