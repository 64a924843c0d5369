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
#include <errno.h>
#include <pwd.h>
#include <stdbool.h>
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

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- start and stop ---------------------------------------------------------------------- */

static void on_signal(uv_signal_t *h, int signum)
{
    server *s = h->data;
    log_info("signal %d: finishing the batch in flight, then stopping", signum);
    server_stop(s, 0);
}

static void close_if_open(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Once stopping, and no batch or job is left, every handle is closed and the loop ends. */
void maybe_finish(server *s)
{
    if (!s->stopping || s->inflight || s->pending->count > 0 || s->jobs_running > 0)
        return;
    for (conn *c = s->conns; c; c = c->next)
        conn_close(c);
    if (s->conns)
        return; /* the last close callback calls again */
    close_if_open((uv_handle_t *)&s->sigterm);
    close_if_open((uv_handle_t *)&s->sigint);
    close_if_open((uv_handle_t *)&s->writer_async);
    close_if_open((uv_handle_t *)&s->commit_check);
}

void server_stop(server *s, int status)
{
    if (status > s->exit_status)
        s->exit_status = status;
    if (s->stopping)
        return;
    s->stopping = true;
    uv_close((uv_handle_t *)&s->listener, NULL);
    if (unlink(s->socket_path) != 0 && errno != ENOENT)
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

static int server_listen(server *s)
{
    int rc = clear_stale_socket(s->socket_path);
    if (rc != 0)
        return rc;
    uv_pipe_init(s->loop, &s->listener, 0);
    s->listener.data = s;
    /* The socket is created 0660 (owner and group), never more open, not even for a moment. */
    mode_t old = umask(0117);
    rc = uv_pipe_bind(&s->listener, s->socket_path);
    umask(old);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
    if (rc != 0) {
        log_error("cannot listen on %s: %s", s->socket_path, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    return rc;
}

int server_run(const server_config *cfg)
{
    server *s = calloc(1, sizeof(*s));
    int status;

    if (!s)
        return 1;
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
    s->started_ms = now_ms();
    if (!s->speculative) {
        log_error("out of memory");
        ledger_free(s->committed);
        free(s);
        return 1;
    }

    uv_mutex_init(&s->writer_mutex);
    uv_cond_init(&s->writer_cond);
    uv_async_init(s->loop, &s->writer_async, on_writer_done);
    s->writer_async.data = s;
    uv_check_init(s->loop, &s->commit_check);
    s->commit_check.data = s;
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    uv_thread_create(&s->writer, writer_main, s);

    if (server_listen(s) != 0) {
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
    uv_loop_close(s->loop);
    uv_mutex_destroy(&s->writer_mutex);
    uv_cond_destroy(&s->writer_cond);

    status = s->exit_status;
    log_info("stopped at head %llu", (unsigned long long)s->committed_head);
    ledger_free(s->committed);
    ledger_free(s->speculative);
    batch_free(&s->batches[0]);
    batch_free(&s->batches[1]);
    free(s);
    return status;
}
