/*
 * Helpers of the subscription and audit suites (test_subscribe.c, test_audit.c), on top of
 * e2e_util.h: pipelined writes, raw subscriptions that check every push, child processes
 * with their output captured (budgetctl watch, python3), daemons on copied data folders.
 * Every wait has a deadline.
 */
#ifndef BUDGET_AUDIT_UTIL_H
#define BUDGET_AUDIT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

#include "e2e_util.h"

/* Requests in flight on one connection while writing many (below the daemon's 256). */
#define AU_PIPELINE 128u
/* How long one push may take to arrive on a subscription. */
#define AU_PUSH_TIMEOUT_MS 10000

#define AU_ARGV(...) ((const char *const[]){__VA_ARGS__})
#define AU_ARGC(...) ((int)(sizeof(AU_ARGV(__VA_ARGS__)) / sizeof(const char *)))
/* Polls `cond` every 200 µs until it holds or `timeout_ms` pass: true when it holds. */
#define AU_WAIT(cond, timeout_ms)                                                                  \
    __extension__({                                                                                \
        int64_t deadline_ = e2e_now_ms() + (timeout_ms);                                           \
        bool held_;                                                                                \
        while (!(held_ = (cond)) && e2e_now_ms() < deadline_)                                      \
            usleep(200);                                                                           \
        held_;                                                                                     \
    })
/* e2e_ctl_argv with the arguments listed: au_ctl(d, &r, "watch", "--after", "1"). */
#define au_ctl(d, r, ...) e2e_ctl_argv((d), (r), AU_ARGC(__VA_ARGS__), AU_ARGV(__VA_ARGS__))

/*
 * Writes `n` frames (frame.grant, unit KS, year 2030, 1 krona each) with ids
 * "<prefix>-<first + i>" and titles of `title_bytes` bytes (1..256), AU_PIPELINE requests at
 * a time. Every write must succeed. Returns the seq of the last.
 */
uint64_t au_grant_many(budget_client *c, const char *prefix, uint32_t first, uint32_t n,
                       size_t title_bytes);

/* ---- raw subscriptions ------------------------------------------------------------------- */

typedef struct {
    int fd;
    uint64_t req_id;
    uint64_t head;     /* the head the subscribe answer reported */
    uint64_t next_seq; /* the seq the next push must carry */
    uint8_t prev[32];  /* hash of the last event received */
    uint64_t received;
} au_sub;

/* Connects and subscribes after `after` with request id `req_id`; asserts the answer
 * {"after": after, "head": H}. */
void au_subscribe(const e2e_daemon *d, uint64_t after, uint64_t req_id, au_sub *s);

/*
 * Reads the next push and checks it: {"id": req_id, "ok": true, "event": {...}} with exactly
 * those keys, the event's seq is next_seq (no gap, no duplicate), its prev is the last hash.
 * Returns E2E_FRAME (and the seq), or E2E_TIMEOUT / E2E_CLOSED / E2E_BROKEN.
 */
int au_sub_next(au_sub *s, int timeout_ms, uint64_t *seq);

/* Reads pushes until event `seq` has come; asserts each as au_sub_next does. */
void au_sub_until(au_sub *s, uint64_t seq);

void au_sub_close(au_sub *s);

/* ---- child processes --------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int out_fd, err_fd;
    char *out, *err;
    size_t out_len, err_len, out_cap, err_cap;
    int status; /* waitpid status once reaped */
} au_proc;

/* Starts argv[0] (a path) with stdin from /dev/null, stdout and stderr captured. 0 or -1. */
int au_proc_start(au_proc *p, const char *const *argv);
/* Reads output until stdout holds `lines` newlines or `timeout_ms` pass: true when it does. */
bool au_proc_wait_lines(au_proc *p, size_t lines, int timeout_ms);
/* Waits for the child to exit, reading its output; kills it (SIGKILL) at the deadline.
 * Returns its exit status, or -1 when it was killed or died of a signal. */
int au_proc_wait(au_proc *p, int timeout_ms);
/* Sends `signum` and reaps the child (SIGKILL after `timeout_ms`). */
void au_proc_stop(au_proc *p, int signum, int timeout_ms);
void au_proc_free(au_proc *p);

/* The python3 with python3-msgpack: /usr/bin/python3 when it exists, else the one on PATH. */
const char *au_python(void);

/* ---- daemons and files ------------------------------------------------------------------- */

/* Starts budgetd on an existing data folder `data` (a copy), with a fresh folder of its own
 * for the socket and log (removed by e2e_daemon_cleanup; `data` is not). 0 or -1. */
int au_daemon_on(e2e_daemon *d, const char *data);

/* A whole file, NUL-terminated (free it), or NULL. */
char *au_read_file(const char *path, size_t *len);
int au_write_file(const char *path, const void *data, size_t len, mode_t mode);
/* Copies one file. 0 or -1. */
int au_copy_file(const char *from, const char *to);

/* A fresh empty temporary folder (mkdtemp) in `out`; asserts. Remove it with e2e_remove_tree. */
void au_temp_dir(char *out, size_t out_size);

/* Removes every folder au_temp_dir and au_daemon_on made in this test that is still there:
 * for a suite's teardown, so that a failed test leaves nothing behind. (A daemon started
 * here dies with the test process.) */
void au_cleanup(void);

#endif
