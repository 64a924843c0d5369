/*
 * The server (server.h): the top of the daemon's layers. It owns the loop, the listening
 * socket, the signals and the sweep, and wires the modules below it together:
 *
 *   server.c                 start, stop, signals, the loop's step
 *   ops.c                    dispatch: the op table and access checks
 *   sub.c  audit_ops.c       subscriptions; checkpoints and backups
 *   commit.c                 group commit, the writer thread, the two ledgers
 *   job.c                    worker jobs on libuv's pool
 *   conn.c                   connections, frames, answer order
 *   lookup.c refusal.c resp.c clock.c
 *
 * Each module includes only those below it; a lower one tells the server through the hooks
 * the server gives it (a frame read, a batch durable, the disk failed, work ended). See
 * docs/architecture.md.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "audit_ops.h"
#include "bigmem.h"
#include "budget/errors.h"
#include "clock.h"
#include "commit.h"
#include "conn.h"
#include "job.h"
#include "log.h"
#include "ops.h"
#include "refusal.h"
#include "server.h"
#include "sub.h"

typedef struct {
    uv_loop_t *loop;
    uv_pipe_t listener;
    uv_signal_t sigterm, sigint;
    uv_signal_t sighup; /* reloads the access file */
    uv_timer_t sweep;   /* closes idle connections and frames past their deadline */
    /* Once per loop turn, after poll: the ready connections handle their frames, then the
     * pending batch goes to the writer (on_step). */
    uv_check_t step;
    const char *socket_path;
    bool socket_activated;   /* the listener came from systemd: never unlinked here */
    const char *access_path; /* NULL: no access file, every identity holds every role */
    bool stopping;           /* every module reads it through its `stopping` */
    int exit_status;

    refusal_log_t refusals;
    conn_hub_t hub;
    job_pool_t jobs;
    commit_t commit;
    sub_set_t subs;
    audit_t audit;
    ops_t ops;

    /* The snapshot being written on its own thread: of the ledger at snapshot_seq made again from
     * the log there (snapshot_rebuild), or of a copy of the committed ledger taken at start-up. */
    const snapshots *snapshots;
    history_cache *history; /* the ledgers of earlier points kept for balances */
    uint64_t spare_idle_ms; /* a large block freed is kept this long for reuse (bigmem.h) */
    bool snapshot_running;
    pthread_t snapshot_thread;
    uv_async_t snapshot_async; /* its thread is done */
    ledger *snapshot_state;    /* NULL until made on its thread */
    uint64_t snapshot_seq;
    uint8_t snapshot_hash[BUDGET_HASH_BYTES]; /* of event snapshot_seq, as committed */
    bool snapshot_rebuilt;
    uint64_t snapshot_from; /* the snapshot it was made from (0: the first event) */
    double snapshot_build_s;
    int snapshot_rc;
    char snapshot_why[256];
} server_t;

static void server_stop(server_t *s, int status);

/* ---- the loop's step and the end ---------------------------------------------------------- */

/*
 * The loop thread's step, once per turn after poll: the connections woken in that turn
 * (reads, answers, writes done) handle their frames, and then the pending batch, with every
 * write those frames and the turn's reads admitted, goes to the writer thread. Then the next
 * turn's reads begin with the connections whose reads waited (conn_turn_begin), after the
 * launch, so that a commit never waits for them.
 */
static void on_step(uv_check_t *h)
{
    server_t *s = h->data;
    assert(!s->hub.running_ready);
    conn_run_ready(&s->hub);
    commit_launch(&s->commit);
    if (conn_turn_begin(&s->hub)) {
        conn_run_ready(&s->hub);
        commit_launch(&s->commit);
    }
}

static void close_if_open(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Once stopping, and no batch or job is left, every handle is closed and the loop ends. Every
 * module's `quiet` hook calls it. */
static void maybe_finish(void *owner)
{
    server_t *s = owner;

    if (!s->stopping || !commit_idle(&s->commit) || s->jobs.running > 0)
        return;
    /* Answers already made are still written before a connection closes. */
    conn_hub_close_all(&s->hub);
    if (!conn_hub_empty(&s->hub))
        return; /* the last close callback, or the last lookup, calls again */
    refusal_flush(&s->refusals, true);
    close_if_open((uv_handle_t *)&s->sigterm);
    close_if_open((uv_handle_t *)&s->sigint);
    close_if_open((uv_handle_t *)&s->sighup);
    close_if_open((uv_handle_t *)&s->sweep);
    close_if_open((uv_handle_t *)&s->snapshot_async);
    close_if_open((uv_handle_t *)&s->step);
    commit_close(&s->commit);
    conn_hub_close(&s->hub);
}

static void server_stop(server_t *s, int status)
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

/* ---- hooks the modules below call --------------------------------------------------------- */

static void hook_frame(void *owner, conn_t *c, uint32_t idx, const budget_envelope *env, int rc,
                       const char *why)
{
    server_t *s = owner;
    ops_frame(&s->ops, c, idx, env, rc, why);
}

/* Writes wait while a batch is pending or being committed. */
static bool hook_writes_waiting(void *owner)
{
    server_t *s = owner;
    return !commit_idle(&s->commit);
}

static void hook_writable(void *owner, conn_t *c)
{
    (void)owner;
    sub_on_writable(c);
}

static void hook_closing(void *owner, conn_t *c)
{
    (void)owner;
    sub_detach(c);
}

static void hook_freed(void *owner, conn_t *c)
{
    (void)owner;
    sub_free(c);
}

static void hook_durable(void *owner, const commit_batch_t *b)
{
    server_t *s = owner;
    sub_publish(&s->subs, b);
}

/* ---- snapshots ----------------------------------------------------------------------------- */

/* The nice value of the thread that makes and writes a snapshot: background work, it takes a
 * smaller share of a busy machine's CPU than the loop, the writer and the reads. */
#define SNAPSHOT_NICE 10

/* The state at snapshot_seq made again from the log when no copy was given, checked to end at
 * the event the committed ledger applied there, then written. */
static void snapshot_make(server_t *s)
{
    if (s->snapshot_state == NULL) {
        uint8_t hash[BUDGET_HASH_BYTES];
        uint64_t t0 = uv_hrtime();
        s->snapshot_state =
            snapshot_rebuild(s->snapshots, s->ops.store, s->snapshot_seq, &s->snapshot_from, hash,
                             s->snapshot_why, sizeof(s->snapshot_why));
        s->snapshot_build_s = (double)(uv_hrtime() - t0) / 1e9;
        if (s->snapshot_state == NULL) {
            s->snapshot_rc = BUDGET_EUNAVAILABLE;
            return;
        }
        if (memcmp(hash, s->snapshot_hash, BUDGET_HASH_BYTES) != 0) {
            snprintf(s->snapshot_why, sizeof(s->snapshot_why),
                     "event %llu of the log is not the one the committed ledger applied",
                     (unsigned long long)s->snapshot_seq);
            s->snapshot_rc = BUDGET_EINTERNAL;
            return;
        }
    }
    s->snapshot_rc = snapshot_write(s->snapshots, s->snapshot_state, s->snapshot_hash,
                                    s->snapshot_why, sizeof(s->snapshot_why));
}

/* The snapshot's own thread, at a lower priority: Linux keeps a nice value per thread, and the
 * replay's walker inherits it; raising it needs no privilege, and the thread ends with the
 * snapshot. Not on libuv's pool, whose threads answer the long reads: a snapshot made there held
 * one of them for as long as it took, and the reads queued behind it. */
static void *snapshot_thread_main(void *arg)
{
    server_t *s = arg;
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), SNAPSHOT_NICE);
    snapshot_make(s);
    uv_async_send(&s->snapshot_async);
    return NULL;
}

/* On the loop, once the snapshot's thread is done. */
static void snapshot_done(uv_async_t *h)
{
    server_t *s = h->data;
    if (!s->snapshot_running)
        return;
    pthread_join(s->snapshot_thread, NULL);
    unsigned long long seq = s->snapshot_seq;
    if (s->snapshot_rc != 0)
        log_warn("snapshot %llu not written: %s", seq, s->snapshot_why);
    else if (s->snapshot_rebuilt && s->snapshot_from != 0)
        log_info("snapshot %llu written, made again from snapshot %llu and the %llu events after "
                 "it in %.3f s",
                 seq, (unsigned long long)s->snapshot_from,
                 (unsigned long long)(seq - s->snapshot_from), s->snapshot_build_s);
    else if (s->snapshot_rebuilt)
        log_info("snapshot %llu written, made again from the log's %llu events in %.3f s", seq, seq,
                 s->snapshot_build_s);
    else
        log_info("snapshot %llu written, of the state at start", seq);
    ledger_free(s->snapshot_state);
    s->snapshot_state = NULL;
    s->snapshot_running = false;
    job_count_end(&s->jobs);
}

/* Writes a snapshot at event `seq`, whose hash is `hash`, on its own thread: of `state` when given
 * (the thread takes it), else of the ledger made again there from the log. One at a time: while
 * one is written, the next multiple is skipped. */
static void snapshot_start(server_t *s, uint64_t seq, const uint8_t hash[BUDGET_HASH_BYTES],
                           ledger *state)
{
    s->snapshot_state = state;
    s->snapshot_rebuilt = state == NULL;
    s->snapshot_seq = seq;
    s->snapshot_from = 0;
    s->snapshot_rc = 0;
    memcpy(s->snapshot_hash, hash, BUDGET_HASH_BYTES);
    s->snapshot_running = true;
    job_count_begin(&s->jobs);
    int rc = pthread_create(&s->snapshot_thread, NULL, snapshot_thread_main, s);
    if (rc != 0) {
        log_warn("snapshot %llu not written: cannot start its thread: %s", (unsigned long long)seq,
                 strerror(rc));
        ledger_free(s->snapshot_state);
        s->snapshot_state = NULL;
        s->snapshot_running = false;
        job_count_end(&s->jobs);
    }
}

/*
 * The committed ledger reached a multiple of --snapshot-every. The snapshot is made on a thread
 * of its own from the log: the snapshot before it and the events since, as a read as of that
 * event makes it. The loop copies nothing, where a copy of the committed ledger held it for one
 * memcpy per array of the state, 13 ms and more on a ledger of 1 M events (docs/performance.md,
 * "Snapshots"), every other connection waiting.
 */
static void hook_snapshot(void *owner, const ledger *committed,
                          const uint8_t hash[BUDGET_HASH_BYTES])
{
    server_t *s = owner;
    if (s->snapshots == NULL || s->snapshot_running || s->stopping)
        return;
    snapshot_start(s, ledger_last_seq(committed), hash, NULL);
}

static void hook_fatal(void *owner)
{
    server_stop(owner, 1);
}

/* ---- signals and the sweep ---------------------------------------------------------------- */

static void on_signal(uv_signal_t *h, int signum)
{
    server_t *s = h->data;
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
    server_t *s = h->data;
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
    conn_hub_set_access(&s->hub, fresh);
    log_info("SIGHUP: reloaded %s: %zu rules", s->access_path, access_rule_count(fresh));
    sub_access_changed(&s->subs);
}

static void on_sweep(uv_timer_t *h)
{
    server_t *s = h->data;
    conn_sweep(&s->hub);
    refusal_flush(&s->refusals, false);
    history_cache_trim(s->history, history_now_ms());
    bigmem_trim(s->spare_idle_ms);
}

/* ---- the socket --------------------------------------------------------------------------- */

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

static int server_listen(server_t *s, const server_config *cfg)
{
    static char activated_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    int fd = activated_socket(activated_path, sizeof(activated_path));
    int rc;

    if (fd == -2)
        return -EINVAL;
    uv_pipe_init(s->loop, &s->listener, 0);
    s->listener.data = &s->hub;
    if (fd >= 0) {
        s->socket_activated = true;
        s->socket_path = activated_path;
        rc = uv_pipe_open(&s->listener, fd);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&s->listener, 128, conn_on_connection);
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
        rc = uv_listen((uv_stream_t *)&s->listener, 128, conn_on_connection);
    if (rc != 0) {
        log_error("cannot listen on %s: %s", s->socket_path, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    return rc;
}

/* ---- start and run ------------------------------------------------------------------------ */

/* How often the sweep looks for idle connections and late frames: a quarter of the shorter
 * limit, at most a second, so either is enforced within 25% of its value. */
static uint64_t sweep_interval_ms(const conn_hub_t *h)
{
    uint64_t ms = 1000;
    if (h->frame_timeout_ms / 4 < ms)
        ms = h->frame_timeout_ms / 4;
    if (h->idle_timeout_ms / 4 < ms)
        ms = h->idle_timeout_ms / 4;
    return ms < 10 ? 10 : ms;
}

/* Fills in what each module reads and the hooks it calls; nothing is started. */
static void server_wire(server_t *s, const server_config *cfg)
{
    conn_hub_t *h = &s->hub;
    commit_t *m = &s->commit;

    refusal_init(&s->refusals, s->loop);
    h->hooks = (conn_hooks_t){hook_frame, hook_writable, hook_closing,
                              hook_freed, maybe_finish,  hook_writes_waiting};
    h->owner = s;
    h->stopping = &s->stopping;
    h->refusals = &s->refusals;
    h->access = cfg->access;
    h->connections_max = cfg->connections_max;
    h->connections_per_uid_max = cfg->connections_per_uid_max;
    h->idle_timeout_ms = cfg->idle_timeout_ms;
    h->frame_timeout_ms = cfg->frame_timeout_ms;
    h->read_slice_ns = cfg->read_slice_us * 1000ull;
    h->read_account.share_pct = cfg->read_share_pct;
    h->lookups.hook = cfg->lookup_hook;

    s->jobs =
        (job_pool_t){.loop = s->loop, .hook = cfg->job_hook, .quiet = maybe_finish, .owner = s};
    m->store = cfg->store;
    m->jobs = &s->jobs;
    m->stopping = &s->stopping;
    m->durable = hook_durable;
    m->fatal = hook_fatal;
    m->quiet = maybe_finish;
    m->owner = s;
    m->hub = h;
    s->snapshots = cfg->snapshots;
    m->snapshot = hook_snapshot;
    m->snapshot_every = cfg->snapshots != NULL ? cfg->snapshot_every : 0;

    s->subs = (sub_set_t){.loop = s->loop,
                          .store = cfg->store,
                          .commit = m,
                          .jobs = &s->jobs,
                          .refusals = &s->refusals,
                          .hub = h,
                          .stopping = &s->stopping,
                          .per_uid_max = cfg->subscriptions_per_uid_max};
    s->audit = (audit_t){.loop = s->loop,
                         .store = cfg->store,
                         .commit = m,
                         .jobs = &s->jobs,
                         .stopping = &s->stopping,
                         .frame_timeout_ms = cfg->frame_timeout_ms};
    s->ops = (ops_t){.hub = h,
                     .commit = m,
                     .jobs = &s->jobs,
                     .subs = &s->subs,
                     .audit = &s->audit,
                     .refusals = &s->refusals,
                     .store = cfg->store,
                     .snapshots = cfg->snapshots,
                     .history = s->history,
                     .started_ms = uv_hrtime() / 1000000u};
}

/* The server's own handles: the step, the signals, the sweep. */
static void server_handles(server_t *s)
{
    uv_check_init(s->loop, &s->step);
    s->step.data = s;
    uv_check_start(&s->step, on_step);
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_init(s->loop, &s->sighup);
    s->sighup.data = s;
    uv_signal_start(&s->sighup, on_sighup, SIGHUP);
    uv_async_init(s->loop, &s->snapshot_async, snapshot_done);
    s->snapshot_async.data = s;
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    uint64_t every = sweep_interval_ms(&s->hub);
    uv_timer_start(&s->sweep, on_sweep, every, every);
    signal(SIGPIPE, SIG_IGN);
}

int server_run(const server_config *cfg)
{
    server_t *s = calloc(1, sizeof(*s));

    if (!s) {
        ledger_free(cfg->ledger);
        access_free(cfg->access);
        return 1;
    }
    s->loop = uv_default_loop();
    s->socket_path = cfg->socket_path;
    s->access_path = cfg->access_path;
    clock_set_offset_ms(cfg->clock_offset_ms);
    /* As many ledgers of earlier points built at once as there are cores: more would only
     * hold more memory while they share the cores. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->spare_idle_ms = cfg->as_of_idle_ms;
    s->history = history_cache_new(cfg->as_of_keep, cfg->as_of_idle_ms,
                                   cores > 0 && cores < 64 ? (uint32_t)cores : 4);
    server_wire(s, cfg);
    if (s->history == NULL ||
        commit_start(&s->commit, s->loop, cfg->ledger, cfg->head, cfg->head_hash) != 0) {
        log_error("out of memory");
        if (s->history == NULL)
            ledger_free(cfg->ledger);
        history_cache_free(s->history);
        access_free(cfg->access);
        free(s);
        return 1;
    }
    server_handles(s);
    conn_hub_start(&s->hub, s->loop);
    /* The newest snapshot was missing, damaged or behind: one is made of the state now, from a
     * copy, before anyone is served. */
    if (cfg->snapshot_every != 0 && cfg->snapshots != NULL &&
        cfg->head >= cfg->snapshot_head + cfg->snapshot_every) {
        const ledger *now = commit_ledger(&s->commit);
        ledger *copy = ledger_clone(now);
        if (copy == NULL)
            log_warn("snapshot %llu not written: out of memory",
                     (unsigned long long)ledger_last_seq(now));
        else
            snapshot_start(s, ledger_last_seq(copy), commit_head_hash(&s->commit), copy);
    }
    if (server_listen(s, cfg) != 0) {
        s->stopping = true;
        s->exit_status = 1;
        maybe_finish(s);
    } else {
        log_info("serving %s: head %llu", s->socket_path,
                 (unsigned long long)commit_head(&s->commit));
    }
    uv_run(s->loop, UV_RUN_DEFAULT);

    commit_join(&s->commit);
    conn_hub_join(&s->hub);
    uv_loop_close(s->loop);
    history_cache_free(s->history);
    bigmem_trim(0);
    int status = s->exit_status;
    log_info("stopped at head %llu", (unsigned long long)commit_head(&s->commit));
    free(s);
    return status;
}
