/*
 * Helpers for the end-to-end suite (tests/e2e_util.h). Children are started with fork and
 * exec, never through a shell; every wait polls against a deadline.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e_util.h"
#include "proto/fields.h"

/* Sleep between two looks at a child or a socket while waiting for it. */
#define POLL_INTERVAL_MS 5
/* Bytes of the daemon's log shown when a test fails. */
#define LOG_TAIL_BYTES 6000
/* Arguments of one budgetctl run. */
#define CTL_ARGS_MAX 48
/* Output kept from one budgetctl run. */
#define CTL_OUTPUT_BYTES_MAX (16u * 1024u * 1024u)

/* The daemon of the running test, for e2e_report. */
static const e2e_daemon *current;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- the daemon ------------------------------------------------------------------------------ */

void e2e_child_reset(pid_t parent)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
}

const e2e_identity e2e_other = {E2E_OTHER_UID, E2E_OTHER_GID, {0}, 0};

/*
 * Makes the calling thread `who`: its groups, then its group and user as effective ids.
 * Raw system calls change only the calling thread (glibc's wrappers would change every
 * thread of the process). The real and saved ids stay root's. 0 or a negative errno.
 */
static int become(const e2e_identity *who)
{
    gid_t groups[5];
    int n = 0;
    groups[n++] = (gid_t)who->gid;
    for (int i = 0; i < who->groups_count && i < 4; i++)
        groups[n++] = (gid_t)who->groups[i];
    if (syscall(SYS_setgroups, n, groups) != 0 ||
        syscall(SYS_setresgid, (gid_t)-1, (gid_t)who->gid, (gid_t)-1) != 0 ||
        syscall(SYS_setresuid, (uid_t)-1, (uid_t)who->uid, (uid_t)-1) != 0)
        return -errno;
    return 0;
}

/* Names of budgetd-faulty's seams: no daemon inherits them from the test's environment; a
 * launch sets the ones it wants (e2e_launch.env). */
static const char *const seam_names[] = {"BUDGETD_FAULT",           "BUDGETD_LOOKUP_DELAY",
                                         "BUDGETD_CLOCK_OFFSET_MS", "BUDGETD_SOCKET_SWAP",
                                         "BUDGETD_JOB_DELAY",       NULL};

static bool named_in(const char *entry, const char *const *names)
{
    for (int i = 0; names && names[i]; i++) {
        size_t n = strlen(names[i]);
        if (strncmp(entry, names[i], n) == 0 && entry[n] == '=')
            return true;
    }
    return false;
}

/* True when `set` holds a setting of the variable of `entry` ("NAME=..."). */
static bool set_in(const char *entry, const char *const *set)
{
    const char *eq = strchr(entry, '=');
    size_t n = eq ? (size_t)(eq - entry) : strlen(entry);
    for (int i = 0; set && set[i]; i++)
        if (strncmp(set[i], entry, n) == 0 && set[i][n] == '=')
            return true;
    return false;
}

/* The child's environment: this process's, less `unset`, plus `set` (which replaces an
 * inherited setting of the same name). One allocation, which the caller frees; NULL when out
 * of memory. */
static char **child_environment(const char *const *unset, const char *const *set)
{
    extern char **environ;
    size_t n = 0, extra = 0;
    while (environ[n])
        n++;
    while (set && set[extra])
        extra++;
    char **envp = calloc(n + extra + 1, sizeof(*envp));
    if (envp == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!named_in(environ[i], unset) && !set_in(environ[i], set))
            envp[k++] = environ[i];
    for (size_t i = 0; i < extra; i++)
        envp[k++] = (char *)set[i];
    envp[k] = NULL;
    return envp;
}

pid_t e2e_spawn(const e2e_child *c)
{
    pid_t parent = getpid();
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    char **envp = child_environment(c->unset, c->set);
    if (null_fd < 0 || envp == NULL) {
        if (null_fd >= 0)
            close(null_fd);
        free(envp);
        return -1;
    }
    const e2e_identity *who = c->who;
    /* Everything is ready before fork: the child only makes async-signal-safe calls. */
    pid_t pid = fork();
    if (pid == 0) {
        e2e_child_reset(parent);
        dup2(null_fd, STDIN_FILENO);
        dup2(c->out_fd, STDOUT_FILENO);
        dup2(c->err_fd, STDERR_FILENO);
        /* All of its ids, real and saved too: the child is that user for good. */
        if (who && (become(who) != 0 || syscall(SYS_setresgid, who->gid, who->gid, who->gid) ||
                    syscall(SYS_setresuid, who->uid, who->uid, who->uid)))
            _exit(126);
        execve(c->argv[0], (char *const *)c->argv, envp);
        _exit(127);
    }
    close(null_fd);
    free(envp);
    return pid;
}

static bool socket_answers(const char *path)
{
    int fd = e2e_raw_connect(path);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* Words of $BUDGETD_WRAPPER, and arguments given to budgetd after the usual ones. */
#define WRAPPER_WORDS_MAX 24
#define EXTRA_ARGS_MAX 16

/* Waits until the started daemon's socket answers, or it exits, or the start-up time is up. */
static int await_socket(e2e_daemon *d)
{
    int64_t deadline = e2e_now_ms() + E2E_START_TIMEOUT_MS;
    for (;;) {
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            fprintf(stderr, "e2e: budgetd exited during start-up (status 0x%x)\n", status);
            e2e_report();
            return -1;
        }
        if (socket_answers(d->socket))
            return 0;
        if (e2e_now_ms() > deadline)
            break;
        sleep_ms(POLL_INTERVAL_MS);
    }
    fprintf(stderr, "e2e: budgetd did not listen on %s within %d ms\n", d->socket,
            E2E_START_TIMEOUT_MS);
    e2e_report();
    e2e_daemon_kill(d);
    return -1;
}

/*
 * Starts budgetd on the daemon's folder, under $BUDGETD_WRAPPER when that is set, and unless
 * `how->no_wait`, waits until its socket answers. Its socket's group is E2E_OTHER_GID, so that
 * the second identity of the suites can open it.
 */
int e2e_daemon_launch(e2e_daemon *d, const e2e_launch *how)
{
    const char *argv[WRAPPER_WORDS_MAX + 7 + EXTRA_ARGS_MAX + 1];
    char wrapper[1024];
    int argc = 0;
    const char *w = getenv("BUDGETD_WRAPPER");
    if (d->pid != 0) {
        fprintf(stderr, "e2e: start of a daemon that still runs\n");
        return -1;
    }
    if (w != NULL && *w != '\0') {
        char *save = NULL;
        snprintf(wrapper, sizeof(wrapper), "%s", w);
        for (char *word = strtok_r(wrapper, " ", &save); word && argc < WRAPPER_WORDS_MAX;
             word = strtok_r(NULL, " ", &save))
            argv[argc++] = word;
    }
    const char *usual[] = {how && how->binary ? how->binary : BUDGETD_PATH,
                           "--data",
                           d->data,
                           "--socket",
                           d->socket,
                           "--socket-group",
                           E2E_OTHER_GID_TEXT};
    for (size_t i = 0; i < sizeof(usual) / sizeof(usual[0]); i++)
        argv[argc++] = usual[i];
    for (int i = 0; how && how->extra && how->extra[i] && i < EXTRA_ARGS_MAX; i++)
        argv[argc++] = how->extra[i];
    argv[argc] = NULL;

    int log_fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        fprintf(stderr, "e2e: cannot open %s: %s\n", d->log, strerror(errno));
        return -1;
    }
    e2e_child child = {argv, log_fd, log_fd, NULL, seam_names, how ? how->env : NULL};
    pid_t pid = e2e_spawn(&child);
    close(log_fd);
    if (pid < 0) {
        fprintf(stderr, "e2e: cannot start budgetd: %s\n", strerror(errno));
        return -1;
    }
    d->pid = pid;
    current = d;
    return how && how->no_wait ? 0 : await_socket(d);
}

static int launch(e2e_daemon *d, const char *const *extra)
{
    e2e_launch how = {.extra = extra};
    return e2e_daemon_launch(d, &how);
}

/* ---- slowness ---- */

long e2e_env_long(const char *name, long fallback)
{
    const char *v = getenv(name);
    char *end;
    if (v == NULL || *v == '\0')
        return fallback;
    errno = 0;
    long n = strtol(v, &end, 10);
    return errno || *end ? fallback : n;
}

bool e2e_wrapped(void)
{
    const char *w = getenv("BUDGETD_WRAPPER");
    return (w != NULL && *w != '\0') || e2e_env_long("RELIABILITY_WRAPPED", 0) != 0;
}

int64_t e2e_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t e2e_now_ms(void)
{
    return e2e_now_us() / 1000;
}

void e2e_day_text(int64_t utc_ms, int shift, char out[11])
{
    if (utc_ms == 0)
        utc_ms = (int64_t)time(NULL) * 1000;
    int32_t day = budget_date_from_days(budget_date_days(budget_day_of_ms(utc_ms)) + shift);
    if (!budget_date_format(day, out))
        snprintf(out, 11, "?");
}

int e2e_slow(void)
{
    bool wrapped = e2e_wrapped();
    long fallback = wrapped ? 10 : 1;
#if defined(__SANITIZE_ADDRESS__)
    if (!wrapped)
        fallback = 3;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    if (!wrapped)
        fallback = 3;
#endif
#endif
    long n = e2e_env_long("RELIABILITY_SLOW", fallback);
    return n < 1 ? 1 : n > 100 ? 100 : (int)n;
}

int e2e_daemon_start(e2e_daemon *d)
{
    return e2e_daemon_start_with(d, NULL);
}

int e2e_daemon_make(e2e_daemon *d, const char *name)
{
    const char *tmp = getenv("TMPDIR");
    memset(d, 0, sizeof(*d));
    /* The socket path must fit a sockaddr_un: a long $TMPDIR is not used. */
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 40)
        tmp = "/tmp";
    snprintf(d->dir, sizeof(d->dir), "%s/budgetd-%.8s-XXXXXX", tmp, name);
    if (mkdtemp(d->dir) == NULL) {
        fprintf(stderr, "e2e: mkdtemp %s: %s\n", d->dir, strerror(errno));
        return -1;
    }
    snprintf(d->data, sizeof(d->data), "%s/data", d->dir);
    snprintf(d->socket, sizeof(d->socket), "%s/budgetd.sock", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/budgetd.log", d->dir);
    /* Others may pass through to the socket (which its mode and group guard), no further. */
    if (chmod(d->dir, 0711) != 0) {
        fprintf(stderr, "e2e: chmod %s: %s\n", d->dir, strerror(errno));
        return -1;
    }
    return 0;
}

int e2e_daemon_start_with(e2e_daemon *d, const char *const *extra)
{
    if (e2e_daemon_make(d, "e2e") != 0)
        return -1;
    return launch(d, extra);
}

int e2e_daemon_restart(e2e_daemon *d)
{
    return e2e_daemon_restart_with(d, NULL);
}

int e2e_daemon_restart_with(e2e_daemon *d, const char *const *extra)
{
    return launch(d, extra);
}

int e2e_daemon_stop(e2e_daemon *d, int signum, int timeout_ms, int *status)
{
    if (d->pid == 0)
        return -1;
    kill(d->pid, signum);
    int64_t deadline = e2e_now_ms() + timeout_ms;
    for (;;) {
        pid_t got = waitpid(d->pid, status, WNOHANG);
        if (got == d->pid) {
            d->pid = 0;
            return 0;
        }
        if (got < 0 && errno != EINTR) {
            d->pid = 0;
            return -1;
        }
        if (e2e_now_ms() > deadline)
            break;
        sleep_ms(1);
    }
    fprintf(stderr, "e2e: budgetd did not exit within %d ms of signal %d; killing it\n", timeout_ms,
            signum);
    e2e_report();
    e2e_daemon_kill(d);
    return -1;
}

void e2e_daemon_kill(e2e_daemon *d)
{
    int status;
    if (d->pid == 0)
        return;
    kill(d->pid, SIGKILL);
    while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR)
        ;
    d->pid = 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void e2e_remove_tree(const char *dir)
{
    if (dir != NULL && dir[0] != '\0')
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

long e2e_status_kib(pid_t pid, const char *field)
{
    char path[64], line[256], format[64];
    long kib = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    snprintf(format, sizeof(format), "%s: %%ld kB", field);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, format, &kib) == 1)
            break;
    fclose(f);
    return kib;
}

void e2e_daemon_cleanup(e2e_daemon *d)
{
    e2e_daemon_kill(d);
    e2e_remove_tree(d->dir);
    if (current == d)
        current = NULL;
    d->dir[0] = '\0';
}

void e2e_report(void)
{
    char tail[LOG_TAIL_BYTES + 1];
    const e2e_daemon *d = current;
    if (d == NULL)
        return;
    fprintf(stderr, "---- budgetd log %s (pid %d) ----\n", d->log, (int)d->pid);
    FILE *f = fopen(d->log, "r");
    if (f == NULL) {
        fprintf(stderr, "(cannot open it: %s)\n", strerror(errno));
        return;
    }
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > LOG_TAIL_BYTES)
            fseek(f, size - LOG_TAIL_BYTES, SEEK_SET);
        else
            fseek(f, 0, SEEK_SET);
    }
    size_t n = fread(tail, 1, LOG_TAIL_BYTES, f);
    fclose(f);
    tail[n] = '\0';
    fprintf(stderr, "%s---- end of log ----\n", tail);
}

/* ---- budgetctl ------------------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap;
} growing;

/* Reads what is there from `fd` into `g`. Returns 1 at end of file, 0 otherwise. */
static int drain(int fd, growing *g)
{
    if (g->cap - g->len < 4096) {
        size_t cap = g->cap ? g->cap * 2 : 8192;
        char *p = cap <= CTL_OUTPUT_BYTES_MAX ? realloc(g->data, cap + 1) : NULL;
        if (p == NULL)
            return 1; /* more output than any command makes: treat as the end */
        g->data = p;
        g->cap = cap;
    }
    ssize_t n = read(fd, g->data + g->len, g->cap - g->len);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : 1;
    if (n == 0)
        return 1;
    g->len += (size_t)n;
    return 0;
}

static void finish(growing *g, char **out, size_t *out_len)
{
    if (g->data == NULL)
        g->data = malloc(1);
    if (g->data != NULL)
        g->data[g->len] = '\0';
    *out = g->data;
    *out_len = g->len;
}

/* Reads both pipes until both end or `deadline` passes. Returns false on the deadline. */
static bool collect(int out_fd, int err_fd, int64_t deadline, growing *out, growing *err)
{
    bool out_open = true, err_open = true;
    while (out_open || err_open) {
        struct pollfd p[2] = {{out_open ? out_fd : -1, POLLIN, 0},
                              {err_open ? err_fd : -1, POLLIN, 0}};
        int64_t left = deadline - e2e_now_ms();
        if (left <= 0)
            return false;
        int n = poll(p, 2, (int)left);
        if (n < 0 && errno != EINTR)
            return true; /* nothing more can be read; the exit status still tells */
        if (n <= 0)
            continue;
        if (out_open && p[0].revents && drain(out_fd, out))
            out_open = false;
        if (err_open && p[1].revents && drain(err_fd, err))
            err_open = false;
    }
    return true;
}

/* Waits for `pid` until `deadline`, then kills it. Returns its status, or -1 when killed. */
static int reap(pid_t pid, int64_t deadline)
{
    int status = 0;
    for (;;) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        if (e2e_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        sleep_ms(1);
    }
}

int e2e_ctl_argv(const e2e_daemon *d, e2e_ctl_result *r, int argc, const char *const *argv)
{
    return e2e_ctl_argv_as(d, NULL, r, argc, argv);
}

int e2e_ctl_argv_as(const e2e_daemon *d, const e2e_identity *who, e2e_ctl_result *r, int argc,
                    const char *const *argv)
{
    const char *full[CTL_ARGS_MAX + 4] = {BUDGETCTL_PATH, "--socket", d->socket};
    int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    growing out = {0}, err = {0};
    int rc = -1;

    memset(r, 0, sizeof(*r));
    r->exit_code = -1;
    if (argc > CTL_ARGS_MAX)
        return -1;
    for (int i = 0; i < argc; i++)
        full[3 + i] = argv[i];
    full[3 + argc] = NULL;

    if (pipe2(out_pipe, O_CLOEXEC) == 0 && pipe2(err_pipe, O_CLOEXEC) == 0) {
        e2e_child child = {full, out_pipe[1], err_pipe[1], who, NULL, NULL};
        pid_t pid = e2e_spawn(&child);
        close(out_pipe[1]);
        close(err_pipe[1]);
        out_pipe[1] = err_pipe[1] = -1;
        if (pid > 0) {
            int64_t deadline = e2e_now_ms() + E2E_CTL_TIMEOUT_MS;
            bool in_time = collect(out_pipe[0], err_pipe[0], deadline, &out, &err);
            int status = reap(pid, in_time ? deadline : 0);
            finish(&out, &r->out, &r->out_len);
            finish(&err, &r->err, &r->err_len);
            if (status == -1)
                fprintf(stderr, "e2e: budgetctl %s ran over %d ms\n", argc > 0 ? argv[0] : "",
                        E2E_CTL_TIMEOUT_MS);
            else if (WIFEXITED(status))
                r->exit_code = WEXITSTATUS(status);
            rc = 0;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (out_pipe[i] >= 0)
            close(out_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    return rc;
}

void e2e_ctl_free(e2e_ctl_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/* ---- raw connections ------------------------------------------------------------------------- */

int e2e_raw_connect(const char *path)
{
    struct sockaddr_un addr;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
    if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int e2e_raw_send(int fd, const void *data, size_t size)
{
    const char *p = data;
    while (size > 0) {
        ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

/* Reads exactly `size` bytes before `deadline`. E2E_FRAME when they came. */
static int read_exact(int fd, void *buf, size_t size, int64_t deadline, bool *any)
{
    char *p = buf;
    while (size > 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int64_t left = deadline - e2e_now_ms();
        if (left <= 0)
            return E2E_TIMEOUT;
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno != EINTR)
            return E2E_BROKEN;
        if (n <= 0)
            continue;
        ssize_t got = read(fd, p, size);
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return errno == ECONNRESET ? E2E_CLOSED : E2E_BROKEN;
        }
        if (got == 0)
            return E2E_CLOSED;
        *any = true;
        p += got;
        size -= (size_t)got;
    }
    return E2E_FRAME;
}

int e2e_raw_recv(int fd, int timeout_ms, msgpack_unpacked *out)
{
    int64_t deadline = e2e_now_ms() + timeout_ms;
    uint8_t header[4];
    bool any = false;

    msgpack_unpacked_init(out);
    int rc = read_exact(fd, header, sizeof(header), deadline, &any);
    if (rc != E2E_FRAME) {
        msgpack_unpacked_destroy(out);
        return rc == E2E_CLOSED && any ? E2E_BROKEN : rc;
    }
    uint32_t size = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 |
                    (uint32_t)header[2] << 8 | (uint32_t)header[3];
    if (size == 0 || size > BUDGET_FRAME_BYTES_MAX) {
        msgpack_unpacked_destroy(out);
        return E2E_BROKEN;
    }
    char *body = malloc(size);
    if (body == NULL) {
        msgpack_unpacked_destroy(out);
        return E2E_BROKEN;
    }
    rc = read_exact(fd, body, size, deadline, &any);
    size_t offset = 0;
    if (rc == E2E_FRAME &&
        (msgpack_unpack_next(out, body, size, &offset) != MSGPACK_UNPACK_SUCCESS || offset != size))
        rc = E2E_BROKEN;
    if (rc == E2E_CLOSED)
        rc = E2E_BROKEN; /* closed inside a frame */
    if (rc != E2E_FRAME) {
        free(body);
        msgpack_unpacked_destroy(out);
        return rc;
    }
    /* The decoded strings point into `body`: the zone frees it with them. */
    if (!msgpack_zone_push_finalizer(out->zone, free, body)) {
        free(body);
        msgpack_unpacked_destroy(out);
        return E2E_BROKEN;
    }
    return E2E_FRAME;
}

bool e2e_raw_wait_close(int fd, int timeout_ms)
{
    int64_t deadline = e2e_now_ms() + timeout_ms;
    char sink[4096];
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int64_t left = deadline - e2e_now_ms();
        if (left <= 0)
            return false;
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno != EINTR)
            return false;
        if (n <= 0)
            continue;
        ssize_t got = read(fd, sink, sizeof(sink));
        if (got == 0 || (got < 0 && errno == ECONNRESET))
            return true;
        if (got < 0 && errno != EINTR && errno != EAGAIN)
            return false;
    }
}

bool e2e_envelope_read(const msgpack_object *root, e2e_envelope *out)
{
    memset(out, 0, sizeof(*out));
    if (root->type != MSGPACK_OBJECT_MAP || root->via.map.size != 3)
        return false;
    const msgpack_object *id = budget_map_get(root, "id");
    const msgpack_object *ok = budget_map_get(root, "ok");
    if (id == NULL || id->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ok == NULL ||
        ok->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    out->id = id->via.u64;
    out->ok = ok->via.boolean;
    if (out->ok) {
        out->result = budget_map_get(root, "result");
        return out->result != NULL;
    }
    const msgpack_object *error = budget_map_get(root, "error");
    if (error == NULL || error->type != MSGPACK_OBJECT_MAP)
        return false;
    const msgpack_object *code = budget_map_get(error, "code");
    const msgpack_object *message = budget_map_get(error, "message");
    if (code == NULL || code->type != MSGPACK_OBJECT_STR || message == NULL ||
        message->type != MSGPACK_OBJECT_STR)
        return false;
    budget_map_str(error, "code", out->code, sizeof(out->code));
    return true;
}

/* ---- packing --------------------------------------------------------------------------------- */

void e2e_buf_init(e2e_buf *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
    b->frame_start = 0;
}

void e2e_buf_destroy(e2e_buf *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

void e2e_buf_clear(e2e_buf *b)
{
    msgpack_sbuffer_clear(&b->sb);
    b->frame_start = 0;
}

void e2e_frame_begin(e2e_buf *b)
{
    static const char header[4] = {0};
    b->frame_start = b->sb.size;
    msgpack_sbuffer_write(&b->sb, header, sizeof(header));
}

void e2e_frame_end(e2e_buf *b)
{
    uint32_t size = (uint32_t)(b->sb.size - b->frame_start - 4);
    uint8_t *h = (uint8_t *)b->sb.data + b->frame_start;
    h[0] = (uint8_t)(size >> 24);
    h[1] = (uint8_t)(size >> 16);
    h[2] = (uint8_t)(size >> 8);
    h[3] = (uint8_t)size;
}

void e2e_buf_raw(e2e_buf *b, const void *data, size_t size)
{
    msgpack_sbuffer_write(&b->sb, data, size);
}

void e2e_pack_str(e2e_buf *b, const char *s)
{
    msgpack_pack_str_with_body(&b->pk, s, strlen(s));
}

void e2e_kv_str(e2e_buf *b, const char *key, const char *value)
{
    e2e_pack_str(b, key);
    e2e_pack_str(b, value);
}

void e2e_kv_decision(e2e_buf *b)
{
    e2e_kv_str(b, "decision_body", "KS");
    e2e_kv_str(b, "decision_date", "2021-08-24");
    e2e_kv_str(b, "decision_paragraph", "241");
}

void e2e_kv_int(e2e_buf *b, const char *key, int64_t value)
{
    e2e_pack_str(b, key);
    msgpack_pack_int64(&b->pk, value);
}

void e2e_kv_uint(e2e_buf *b, const char *key, uint64_t value)
{
    e2e_pack_str(b, key);
    msgpack_pack_uint64(&b->pk, value);
}

/* ---- other identities ------------------------------------------------------------------------ */

typedef struct {
    const char *path;
    const e2e_identity *who;
    bool raw;
    budget_client *client;
    int fd;
    int rc;
} connect_job;

static void *connect_as_thread(void *arg)
{
    connect_job *j = arg;
    j->rc = become(j->who);
    if (j->rc != 0)
        return NULL;
    if (!j->raw) {
        j->rc = budget_client_connect(j->path, &j->client);
        return NULL;
    }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", j->path);
    j->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (j->fd < 0 || connect(j->fd, (const struct sockaddr *)&addr, sizeof(addr)) != 0) {
        j->rc = -errno;
        if (j->fd >= 0)
            close(j->fd);
        j->fd = -1;
    }
    return NULL;
}

/* Runs the connect on a thread of its own, which ends with the identity it took. */
static int connect_as(connect_job *j)
{
    pthread_t t;
    struct timespec deadline;
    if (pthread_create(&t, NULL, connect_as_thread, j) != 0)
        return -EAGAIN;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += E2E_FRAME_TIMEOUT_MS / 1000;
    if (pthread_timedjoin_np(t, NULL, &deadline) != 0) {
        /* A connect that hangs: the thread keeps `j`, which is left to it. */
        pthread_detach(t);
        return -ETIMEDOUT;
    }
    return j->rc;
}

int e2e_client_connect_as(const char *path, const e2e_identity *who, budget_client **out)
{
    connect_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -ENOMEM;
    j->path = path;
    j->who = who;
    int rc = connect_as(j);
    if (rc == -ETIMEDOUT)
        return rc;
    *out = j->client;
    free(j);
    return rc;
}

budget_client *e2e_client_as(const e2e_daemon *d, const e2e_identity *who)
{
    budget_client *c = NULL;
    int rc = e2e_client_connect_as(d->socket, who, &c);
    e2e_assert(rc == 0 && c != NULL, "connect to %s as uid %u: %s", d->socket, who->uid,
               strerror(-rc));
    return c;
}

int e2e_raw_connect_as(const char *path, const e2e_identity *who)
{
    connect_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -ENOMEM;
    j->path = path;
    j->who = who;
    j->raw = true;
    j->fd = -1;
    int rc = connect_as(j);
    if (rc == -ETIMEDOUT)
        return rc;
    int fd = rc == 0 ? j->fd : rc;
    free(j);
    return fd;
}

/* ---- the client library ---------------------------------------------------------------------- */

budget_client *e2e_client(const e2e_daemon *d)
{
    budget_client *c = NULL;
    int rc = budget_client_connect(d->socket, &c);
    e2e_assert(rc == 0 && c != NULL, "connect to %s: %s", d->socket, strerror(-rc));
    return c;
}

void e2e_call(budget_client *c, const char *op, const e2e_buf *args, budget_response *r)
{
    int rc = budget_client_call(c, op, args ? args->sb.data : NULL, args ? args->sb.size : 0, r);
    e2e_assert(rc == 0, "%s: no response (%d: %s)", op, rc,
               rc <= BUDGET_EBAD_REQUEST ? budget_strerror(rc) : strerror(-rc));
}

void e2e_write(budget_client *c, const char *op, const e2e_buf *args, e2e_write_result *out)
{
    budget_response r;
    memset(out, 0, sizeof(*out));
    e2e_call(c, op, args, &r);
    out->ok = r.ok;
    if (r.ok) {
        const msgpack_object *hash = budget_map_get(&r.result, "hash");
        out->seq = e2e_map_uint(&r.result, "seq");
        e2e_assert(hash != NULL && hash->type == MSGPACK_OBJECT_BIN && hash->via.bin.size == 32,
                   "%s: the result's hash is not a bin of 32 bytes", op);
        memcpy(out->hash, hash->via.bin.ptr, 32);
    } else {
        snprintf(out->code, sizeof(out->code), "%s", r.code);
        snprintf(out->message, sizeof(out->message), "%s", r.message);
    }
    budget_response_free(&r);
}

uint64_t e2e_write_ok(budget_client *c, const char *op, const e2e_buf *args)
{
    e2e_write_result w;
    e2e_write(c, op, args, &w);
    e2e_assert(w.ok, "%s refused: %s: %s", op, w.code, w.message);
    return w.seq;
}

/* The full names of the units the suites name most; any other is registered under its code. */
static const char *unit_name(const char *code)
{
    static const char *const names[][2] = {
        {"KS", "Kommunstyrelsen"},
        {"SON", "Social- och omsorgsnämnden"},
        {"KFN", "Kultur- och fritidsnämnden"},
        {"BUN", "Barn- och ungdomsnämnden"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(names[i][0], code) == 0)
            return names[i][1];
    return code;
}

void e2e_register_units(const e2e_daemon *d, const e2e_identity *as, ...)
{
    budget_client *c = as == NULL ? e2e_client(d) : e2e_client_as(d, as);
    e2e_buf args;
    e2e_buf_init(&args);
    va_list ap;
    va_start(ap, as);
    for (const char *code = va_arg(ap, const char *); code != NULL;
         code = va_arg(ap, const char *)) {
        char id[BUDGET_UNIT_BYTES_MAX + 8];
        snprintf(id, sizeof(id), "unit-%s", code);
        bool board = strcmp(code, "KS") == 0;
        e2e_buf_clear(&args);
        msgpack_pack_map(&args.pk, 4);
        e2e_kv_str(&args, "id", id);
        e2e_kv_str(&args, "unit", code);
        e2e_kv_str(&args, "name", unit_name(code));
        e2e_kv_str(&args, "kind", board ? "styrelse" : "nämnd");
        e2e_write_ok(c, "unit.register", &args);
    }
    va_end(ap);
    e2e_buf_destroy(&args);
    budget_client_close(c);
}

uint64_t e2e_head(budget_client *c)
{
    budget_response r;
    e2e_call(c, "hello", NULL, &r);
    e2e_assert(r.ok, "hello refused: %s", r.code);
    uint64_t head = e2e_map_uint(&r.result, "head");
    budget_response_free(&r);
    return head;
}

uint64_t e2e_stat(budget_client *c, const char *key)
{
    budget_response r;
    e2e_call(c, "stats", NULL, &r);
    e2e_assert(r.ok, "stats refused: %s", r.code);
    uint64_t v = e2e_map_uint(&r.result, key);
    budget_response_free(&r);
    return v;
}

uint64_t e2e_map_uint(const msgpack_object *map, const char *key)
{
    const msgpack_object *o = budget_map_get(map, key);
    e2e_assert(o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER,
               "\"%s\" is missing or not a uint", key);
    return o->via.u64;
}

bool e2e_map_str_is(const msgpack_object *map, const char *key, const char *expected)
{
    const msgpack_object *o = budget_map_get(map, key);
    size_t n = strlen(expected);
    return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, expected, n) == 0;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

/* Nesting accepted by the reader; budgetctl's output is far shallower. */
#define JSON_DEPTH_MAX 32

typedef struct {
    const char *p, *end;
} json_cursor;

static void skip_space(json_cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static e2e_json *json_new(e2e_json_type type)
{
    e2e_json *j = calloc(1, sizeof(*j));
    if (j != NULL)
        j->type = type;
    return j;
}

static void put_utf8(char *out, size_t *n, uint32_t cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xc0 | cp >> 6);
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xe0 | cp >> 12);
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*n)++] = (char)(0xf0 | cp >> 18);
        out[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static bool read_hex4(json_cursor *c, uint32_t *out)
{
    *out = 0;
    if (c->end - c->p < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        char ch = *c->p++;
        int v = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (v < 0)
            return false;
        *out = *out << 4 | (uint32_t)v;
    }
    return true;
}

/* Reads a string at the cursor (after its opening quote) into a new NUL-terminated copy. */
static char *json_string(json_cursor *c)
{
    size_t cap = (size_t)(c->end - c->p) + 1, n = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    while (c->p < c->end && *c->p != '"') {
        unsigned char ch = (unsigned char)*c->p++;
        if (ch < 0x20)
            goto bad;
        if (ch != '\\') {
            out[n++] = (char)ch;
            continue;
        }
        if (c->p == c->end)
            goto bad;
        char e = *c->p++;
        uint32_t cp;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out[n++] = e;
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'u':
            if (!read_hex4(c, &cp))
                goto bad;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t low;
                if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
                    goto bad;
                c->p += 2;
                if (!read_hex4(c, &low) || low < 0xdc00 || low > 0xdfff)
                    goto bad;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            put_utf8(out, &n, cp); /* never longer than the 6 bytes of its escape */
            break;
        default:
            goto bad;
        }
    }
    if (c->p == c->end)
        goto bad;
    c->p++; /* the closing quote */
    out[n] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

static bool json_number(json_cursor *c, e2e_json *j)
{
    const char *start = c->p;
    bool integral = true;
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p == c->end || *c->p < '0' || *c->p > '9')
        return false;
    while (c->p < c->end && ((*c->p >= '0' && *c->p <= '9') || *c->p == '.' || *c->p == 'e' ||
                             *c->p == 'E' || *c->p == '+' || *c->p == '-')) {
        if (*c->p == '.' || *c->p == 'e' || *c->p == 'E')
            integral = false;
        c->p++;
    }
    char text[64];
    size_t n = (size_t)(c->p - start);
    if (n >= sizeof(text))
        return false;
    memcpy(text, start, n);
    text[n] = '\0';
    char *end;
    errno = 0;
    if (integral) {
        long long v = strtoll(text, &end, 10);
        if (*end != '\0')
            return false;
        j->integral = errno == 0;
        j->integer = v;
    } else {
        strtod(text, &end);
        if (*end != '\0')
            return false;
    }
    return true;
}

static bool json_literal(json_cursor *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return false;
    c->p += n;
    return true;
}

static e2e_json *json_value(json_cursor *c, int depth);

static bool json_push(e2e_json *j, char *key, e2e_json *item)
{
    char **keys = j->keys;
    e2e_json **items = realloc(j->items, (j->count + 1) * sizeof(*items));
    if (items == NULL)
        return false;
    j->items = items;
    if (j->type == E2E_JSON_OBJECT) {
        keys = realloc(j->keys, (j->count + 1) * sizeof(*keys));
        if (keys == NULL)
            return false;
        j->keys = keys;
        keys[j->count] = key;
    }
    items[j->count++] = item;
    return true;
}

/* An array or object at the cursor, after its opening bracket. */
static e2e_json *json_container(json_cursor *c, int depth, bool object)
{
    e2e_json *j = json_new(object ? E2E_JSON_OBJECT : E2E_JSON_ARRAY);
    char close = object ? '}' : ']';
    if (j == NULL)
        return NULL;
    skip_space(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return j;
    }
    for (;;) {
        char *key = NULL;
        skip_space(c);
        if (object) {
            if (c->p == c->end || *c->p != '"')
                goto bad;
            c->p++;
            key = json_string(c);
            skip_space(c);
            if (key == NULL || c->p == c->end || *c->p != ':') {
                free(key);
                goto bad;
            }
            c->p++;
        }
        e2e_json *item = json_value(c, depth + 1);
        if (item == NULL || !json_push(j, key, item)) {
            free(key);
            e2e_json_free(item);
            goto bad;
        }
        skip_space(c);
        if (c->p == c->end)
            goto bad;
        if (*c->p == ',') {
            c->p++;
            continue;
        }
        if (*c->p != close)
            goto bad;
        c->p++;
        return j;
    }
bad:
    e2e_json_free(j);
    return NULL;
}

static e2e_json *json_value(json_cursor *c, int depth)
{
    e2e_json *j;
    skip_space(c);
    if (c->p == c->end || depth > JSON_DEPTH_MAX)
        return NULL;
    switch (*c->p) {
    case '{':
    case '[':
        c->p++;
        return json_container(c, depth, c->p[-1] == '{');
    case '"':
        c->p++;
        j = json_new(E2E_JSON_STRING);
        if (j != NULL && (j->string = json_string(c)) == NULL) {
            free(j);
            j = NULL;
        }
        return j;
    case 't':
    case 'f':
        j = json_new(E2E_JSON_BOOL);
        if (j != NULL) {
            j->boolean = *c->p == 't';
            if (!json_literal(c, j->boolean ? "true" : "false")) {
                free(j);
                j = NULL;
            }
        }
        return j;
    case 'n':
        if (!json_literal(c, "null"))
            return NULL;
        return json_new(E2E_JSON_NULL);
    default:
        j = json_new(E2E_JSON_NUMBER);
        if (j != NULL && !json_number(c, j)) {
            free(j);
            j = NULL;
        }
        return j;
    }
}

e2e_json *e2e_json_parse(const char *text, size_t len)
{
    json_cursor c = {text, text + len};
    e2e_json *j = json_value(&c, 0);
    skip_space(&c);
    if (j != NULL && c.p != c.end) {
        e2e_json_free(j);
        return NULL;
    }
    return j;
}

void e2e_json_free(e2e_json *j)
{
    if (j == NULL)
        return;
    for (size_t i = 0; i < j->count; i++) {
        if (j->keys != NULL)
            free(j->keys[i]);
        e2e_json_free(j->items[i]);
    }
    free(j->keys);
    free(j->items);
    free(j->string);
    free(j);
}

const e2e_json *e2e_json_get(const e2e_json *obj, const char *key)
{
    if (obj == NULL || obj->type != E2E_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return obj->items[i];
    return NULL;
}

int64_t e2e_json_int(const e2e_json *obj, const char *key, int64_t fallback)
{
    const e2e_json *v = e2e_json_get(obj, key);
    return v != NULL && v->type == E2E_JSON_NUMBER && v->integral ? v->integer : fallback;
}

const char *e2e_json_str(const e2e_json *obj, const char *key)
{
    const e2e_json *v = e2e_json_get(obj, key);
    return v != NULL && v->type == E2E_JSON_STRING ? v->string : "";
}
