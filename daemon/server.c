/*
 * The server: connections, request dispatch, group commit and worker jobs.
 *
 * Threads: the loop thread owns every connection and both ledgers. The writer thread only
 * runs store_append on a batch handed to it. Worker threads (libuv's pool) run read jobs on
 * their own store readers and their own ledgers.
 *
 * Two ledgers: `committed` holds exactly the durable events and answers every read;
 * `speculative` is committed plus the batches not yet durable, and every write is checked
 * against it in arrival order, so two clerks never both win the last krona. When a commit
 * fails, speculative is rebuilt from committed and the writes still waiting are checked again.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <uv.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "event.h"
#include "log.h"
#include "proto/frame.h"
#include "proto/mp.h"
#include "proto/validate.h"
#include "request.h"
#include "server.h"
#include "server_internal.h"
#include "subscribe.h"

static int64_t clock_offset_ms;

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + clock_offset_ms);
}

/* ---- start and stop ---------------------------------------------------------------------- */

static void on_signal(uv_signal_t *h, int signum)
{
    server *s = h->data;
    log_info("signal %d: finishing the batch in flight, then stopping", signum);
    server_stop(s, 0);
}

/*
 * SIGHUP: the access file is read again. Connections stay open; each one's grants are
 * resolved again under the new rules, and a subscription whose identity lost the reader role
 * ends (sub_access_changed): a push stream must not outlive the right to read. A file that
 * cannot be read or parsed leaves the rules in force as they were, and the log says why.
 */
static void on_sighup(uv_signal_t *h, int signum)
{
    server *s = h->data;
    access_rules *fresh = NULL;
    char why[600];

    (void)signum;
    if (!s->access_path) {
        log_warn("SIGHUP: there is no access file to read again (no --config)");
        return;
    }
    if (access_load(s->access_path, &fresh, why, sizeof(why)) != 0) {
        log_error("SIGHUP: the access file was not reloaded; the rules read before stay in "
                  "force: %s",
                  why);
        return;
    }
    for (conn *c = s->conns; c; c = c->next)
        access_resolve(fresh, &c->identity, &c->grants);
    access_free(s->access);
    s->access = fresh;
    log_info("SIGHUP: reloaded %s: %zu rules", s->access_path, access_rule_count(fresh));
    sub_access_changed(s);
}

static void on_sweep(uv_timer_t *h)
{
    conn_sweep(h->data);
    refusals_log_flush(h->data, false);
}

static void close_if_open(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/*
 * The loop thread's step, once per turn after poll: the connections woken in that turn
 * (reads, answers, writes done) handle their frames, and then the pending batch, with every
 * write those frames and the turn's reads admitted, goes to the writer thread.
 */
static void on_step(uv_check_t *h)
{
    server *s = h->data;
    conn_run_ready(s);
    launch_commit(s);
}

/* Once stopping, and no batch or job is left, every handle is closed and the loop ends. */
void maybe_finish(server *s)
{
    if (!s->stopping || s->inflight || s->pending->count > 0 || s->jobs_running > 0)
        return;
    /* Answers already made are still written before a connection closes. */
    for (conn *c = s->conns; c; c = c->next)
        conn_close_when_flushed(c);
    if (s->conns)
        return; /* the last close callback calls again */
    if (s->lookups)
        return; /* their connections are closed; on_lookups_done calls again */
    assert(s->ready == NULL && !s->running_ready); /* every connection is gone */
    refusals_log_flush(s, true);
    close_if_open((uv_handle_t *)&s->sigterm);
    close_if_open((uv_handle_t *)&s->sigint);
    close_if_open((uv_handle_t *)&s->sighup);
    close_if_open((uv_handle_t *)&s->sweep);
    close_if_open((uv_handle_t *)&s->writer_async);
    close_if_open((uv_handle_t *)&s->step);
    close_if_open((uv_handle_t *)&s->ready_idle);
    lookups_close(s);
}

void server_stop(server *s, int status)
{
    if (status > s->exit_status)
        s->exit_status = status;
    if (s->stopping)
        return;
    s->stopping = true;
    uv_close((uv_handle_t *)&s->listener, NULL);
    /* A socket systemd made is systemd's: it stays, to start budgetd again on demand. */
    if (!s->socket_activated && unlink(s->socket_path) != 0 && errno != ENOENT)
        log_warn("cannot remove %s: %s", s->socket_path, strerror(errno));
    maybe_finish(s);
}

/* Removes a socket file left by a daemon that died; refuses when one still answers there. */
static int clear_stale_socket(const char *path)
{
    struct stat st;
    struct sockaddr_un addr;
    int fd, rc;

    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        log_error("%s exists and is not a socket", path);
        return -EEXIST;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
    rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    close(fd);
    if (rc == 0) {
        log_error("another budgetd answers on %s", path);
        return -EADDRINUSE;
    }
    if (unlink(path) != 0)
        return -errno;
    log_info("removed the stale socket %s", path);
    return 0;
}

/* The first descriptor systemd passes (sd_listen_fds(3)), without linking libsystemd. */
#define LISTEN_FDS_START 3

/*
 * The listening socket systemd passed: fd 3 when $LISTEN_PID is this process and $LISTEN_FDS
 * is 1. Returns the fd, -1 when nothing was passed, or -2 (logged) when what was passed is
 * not one listening UNIX stream socket. The variables are removed either way. `path` gets
 * the socket's path.
 */
static int activated_socket(char *path, size_t path_size)
{
    const char *pid_text = getenv("LISTEN_PID"), *fds_text = getenv("LISTEN_FDS");
    struct sockaddr_un addr;
    socklen_t len = sizeof(addr);
    int type = 0, listening = 0;
    socklen_t optlen = sizeof(int);
    char *end;

    if (!pid_text || !fds_text)
        return -1;
    errno = 0;
    unsigned long pid = strtoul(pid_text, &end, 10);
    bool ours = errno == 0 && *end == '\0' && pid == (unsigned long)getpid();
    unsigned long fds = strtoul(fds_text, &end, 10);
    bool one = errno == 0 && *end == '\0' && fds == 1;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (!ours)
        return -1;
    if (!one) {
        log_error("systemd passed LISTEN_FDS=%s; budgetd takes exactly one socket", fds_text);
        return -2;
    }
    int fd = LISTEN_FDS_START;
    memset(&addr, 0, sizeof(addr));
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) != 0 || type != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0 || addr.sun_family != AF_UNIX) {
        log_error("the socket systemd passed is not a listening UNIX stream socket "
                  "(ListenStream= with a path)");
        return -2;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    snprintf(path, path_size, "%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path)),
             addr.sun_path);
    return fd;
}

/*
 * Gives the entry at `path` the group `gid`, only when it is what this daemon just made there:
 * of type `type` (S_IFSOCK, S_IFDIR) and owned by this process's user. The entry is opened
 * without following a symbolic link and changed through that descriptor, so an entry swapped
 * in after it was made (a link to somewhere else, another file) is refused, never changed.
 * Returns 0, or -1 with errno (ELOOP, EPERM for an entry that is not ours).
 */
static int set_group_nofollow(const char *path, mode_t type, uint32_t gid)
{
    struct stat st;
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fstat(fd, &st);
    if (rc == 0 && ((st.st_mode & S_IFMT) != type || st.st_uid != geteuid())) {
        errno = (st.st_mode & S_IFMT) == S_IFLNK ? ELOOP : EPERM;
        rc = -1;
    }
    if (rc == 0)
        rc = fchownat(fd, "", (uid_t)-1, (gid_t)gid, AT_EMPTY_PATH);
    int err = errno;
    close(fd);
    errno = err;
    return rc;
}

/*
 * Makes the socket's folder when it is missing: mode 0750 and the socket's group, so that
 * the group can reach the socket and others cannot even see it. A folder that exists is left
 * as it is (it may be /tmp); only the last component is made.
 */
static int make_socket_dir(const server_config *cfg)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];

    snprintf(dir, sizeof(dir), "%s", cfg->socket_path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    mode_t old = umask(0027);
    int rc = mkdir(dir, 0750);
    umask(old);
    if (rc != 0 && errno == EEXIST)
        return 0;
    if (rc != 0 ||
        (cfg->socket_group_set && set_group_nofollow(dir, S_IFDIR, cfg->socket_group) != 0)) {
        rc = -errno;
        log_error("cannot make the socket's folder %s: %s", dir, strerror(errno));
        return rc;
    }
    log_info("made the socket's folder %s (mode 0750)", dir);
    return 0;
}

static int server_listen(server *s, const server_config *cfg)
{
    static char activated_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    int fd = activated_socket(activated_path, sizeof(activated_path));
    int rc;

    if (fd == -2)
        return -EINVAL;
    uv_pipe_init(s->loop, &s->listener, 0);
    s->listener.data = s;
    if (fd >= 0) {
        s->socket_activated = true;
        s->socket_path = activated_path;
        rc = uv_pipe_open(&s->listener, fd);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
        if (rc != 0) {
            log_error("cannot listen on the socket systemd passed: %s", uv_strerror(rc));
            uv_close((uv_handle_t *)&s->listener, NULL);
        }
        return rc;
    }
    rc = make_socket_dir(cfg);
    if (rc == 0)
        rc = clear_stale_socket(s->socket_path);
    if (rc != 0) {
        uv_close((uv_handle_t *)&s->listener, NULL);
        return rc;
    }
    /* The socket is created 0660 (owner and group), never more open, not even for a moment;
     * then it is given its group, which only opens it to that group. */
    mode_t old = umask(0117);
    rc = uv_pipe_bind(&s->listener, s->socket_path);
    umask(old);
    if (rc == 0 && cfg->socket_hook)
        cfg->socket_hook(s->socket_path);
    if (rc == 0 && cfg->socket_group_set &&
        set_group_nofollow(s->socket_path, S_IFSOCK, cfg->socket_group) != 0) {
        rc = -errno;
        log_error("cannot give %s the group %u: %s", s->socket_path, cfg->socket_group,
                  strerror(errno));
        unlink(s->socket_path);
        uv_close((uv_handle_t *)&s->listener, NULL);
        return rc;
    }
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
    if (rc != 0) {
        log_error("cannot listen on %s: %s", s->socket_path, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    return rc;
}

/* How often the sweep looks for idle connections and late frames: a quarter of the shorter
 * limit, at most a second, so either is enforced within 25% of its value. */
static uint64_t sweep_interval_ms(const server *s)
{
    uint64_t ms = 1000;
    if (s->frame_timeout_ms / 4 < ms)
        ms = s->frame_timeout_ms / 4;
    if (s->idle_timeout_ms / 4 < ms)
        ms = s->idle_timeout_ms / 4;
    return ms < 10 ? 10 : ms;
}

int server_run(const server_config *cfg)
{
    server *s = calloc(1, sizeof(*s));
    int status;

    if (!s) {
        access_free(cfg->access);
        return 1;
    }
    s->loop = uv_default_loop();
    s->socket_path = cfg->socket_path;
    s->store = cfg->store;
    s->committed = cfg->ledger;
    s->committed_head = cfg->head;
    memcpy(s->committed_hash, cfg->head_hash, sizeof(s->committed_hash));
    s->speculative = ledger_clone(s->committed);
    s->spec_head = cfg->head;
    memcpy(s->spec_hash, cfg->head_hash, sizeof(s->spec_hash));
    s->pending = &s->batches[0];
    clock_offset_ms = cfg->clock_offset_ms;
    s->started_ms = uv_hrtime() / 1000000u;
    s->access = cfg->access;
    s->access_path = cfg->access_path;
    s->connections_max = cfg->connections_max;
    s->connections_per_uid_max = cfg->connections_per_uid_max;
    s->subscriptions_per_uid_max = cfg->subscriptions_per_uid_max;
    s->idle_timeout_ms = cfg->idle_timeout_ms;
    s->frame_timeout_ms = cfg->frame_timeout_ms;
    s->lookup_hook = cfg->lookup_hook;
    s->job_hook = cfg->job_hook;
    if (!s->speculative) {
        log_error("out of memory");
        ledger_free(s->committed);
        access_free(s->access);
        free(s);
        return 1;
    }

    uv_mutex_init(&s->writer_mutex);
    uv_cond_init(&s->writer_cond);
    uv_async_init(s->loop, &s->writer_async, on_writer_done);
    s->writer_async.data = s;
    uv_check_init(s->loop, &s->step);
    s->step.data = s;
    uv_check_start(&s->step, on_step);
    uv_idle_init(s->loop, &s->ready_idle);
    s->ready_idle.data = s;
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_init(s->loop, &s->sighup);
    s->sighup.data = s;
    uv_signal_start(&s->sighup, on_sighup, SIGHUP);
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, on_sweep, sweep_interval_ms(s), sweep_interval_ms(s));
    signal(SIGPIPE, SIG_IGN);
    uv_thread_create(&s->writer, writer_main, s);
    lookups_start(s);

    if (server_listen(s, cfg) != 0) {
        s->stopping = true;
        s->exit_status = 1;
        maybe_finish(s);
    } else {
        log_info("serving %s: head %llu", s->socket_path, (unsigned long long)s->committed_head);
    }
    uv_run(s->loop, UV_RUN_DEFAULT);

    uv_mutex_lock(&s->writer_mutex);
    s->writer_stop = true;
    uv_cond_signal(&s->writer_cond);
    uv_mutex_unlock(&s->writer_mutex);
    uv_thread_join(&s->writer);
    lookups_join(s);
    uv_loop_close(s->loop);
    uv_mutex_destroy(&s->writer_mutex);
    uv_cond_destroy(&s->writer_cond);

    status = s->exit_status;
    log_info("stopped at head %llu", (unsigned long long)s->committed_head);
    ledger_free(s->committed);
    ledger_free(s->speculative);
    access_free(s->access);
    batch_free(&s->batches[0]);
    batch_free(&s->batches[1]);
    free(s);
    return status;
}
