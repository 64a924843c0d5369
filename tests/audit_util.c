/* Helpers of the subscription and audit suites (tests/audit_util.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit_util.h"

/* Folders one test makes with au_temp_dir and au_daemon_on, removed by au_cleanup. */
#define MADE_DIRS_MAX 16
static char made_dirs[MADE_DIRS_MAX][128];

static void remember_dir(const char *dir)
{
    for (int i = 0; i < MADE_DIRS_MAX; i++)
        if (made_dirs[i][0] == '\0') {
            snprintf(made_dirs[i], sizeof(made_dirs[i]), "%s", dir);
            return;
        }
}

/* Output kept from one child. */
#define PROC_OUTPUT_BYTES_MAX (64u * 1024u * 1024u)

/* ---- writes ------------------------------------------------------------------------------ */

uint64_t au_grant_many(budget_client *c, const char *prefix, uint32_t first, uint32_t n,
                       size_t title_bytes)
{
    char title[BUDGET_TEXT_BYTES_MAX + 1], id[BUDGET_ID_BYTES_MAX + 1];
    uint64_t last = 0;
    e2e_buf b;

    cr_assert(title_bytes >= 1 && title_bytes <= BUDGET_TEXT_BYTES_MAX);
    memset(title, 't', title_bytes);
    title[title_bytes] = '\0';
    e2e_buf_init(&b);
    for (uint32_t done = 0; done < n;) {
        uint32_t batch = n - done < AU_PIPELINE ? n - done : AU_PIPELINE;
        for (uint32_t i = 0; i < batch; i++) {
            snprintf(id, sizeof(id), "%s-%u", prefix, first + done + i);
            e2e_buf_clear(&b);
            msgpack_pack_map(&b.pk, 6 + E2E_DECISION_PAIRS);
            e2e_kv_str(&b, "id", id);
            e2e_kv_str(&b, "unit", "KS");
            e2e_kv_int(&b, "year", 2030);
            e2e_kv_int(&b, "amount", 100);
            e2e_kv_str(&b, "title", title);
            e2e_kv_decision(&b);
            msgpack_pack_str_with_body(&b.pk, "intended", 8); /* many alike, on purpose */
            msgpack_pack_true(&b.pk);
            int64_t rc = budget_client_send(c, "frame.grant", b.sb.data, b.sb.size);
            e2e_assert(rc > 0, "frame.grant %s could not be sent (%lld)", id, (long long)rc);
        }
        for (uint32_t i = 0; i < batch; i++) {
            budget_response r;
            int rc = budget_client_recv(c, &r);
            e2e_assert(rc == 0, "no answer to a frame.grant (%d)", rc);
            e2e_assert(r.ok, "frame.grant refused: %s: %s", r.code, r.message);
            uint64_t seq = e2e_map_uint(&r.result, "seq");
            e2e_assert(seq > last, "seqs of one connection's writes go up");
            last = seq;
            budget_response_free(&r);
        }
        done += batch;
    }
    e2e_buf_destroy(&b);
    return last;
}

/* ---- raw subscriptions ------------------------------------------------------------------- */

void au_subscribe(const e2e_daemon *d, uint64_t after, uint64_t req_id, au_sub *s)
{
    e2e_buf b;
    msgpack_unpacked u;
    e2e_envelope env;

    memset(s, 0, sizeof(*s));
    s->req_id = req_id;
    s->next_seq = after + 1;
    s->fd = e2e_raw_connect(d->socket);
    e2e_assert(s->fd >= 0, "cannot connect to %s", d->socket);
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", req_id);
    e2e_kv_str(&b, "op", "subscribe");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_uint(&b, "after", after);
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(s->fd, b.sb.data, b.sb.size) == 0, "subscribe could not be sent");
    e2e_buf_destroy(&b);
    e2e_assert(e2e_raw_recv(s->fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
               "no answer to subscribe");
    e2e_assert(e2e_envelope_read(&u.data, &env), "the subscribe answer is not a response");
    e2e_assert(env.ok, "subscribe refused: %s", env.code);
    e2e_assert_int(env.id, req_id, "the subscribe answer's id");
    e2e_assert_int(e2e_map_uint(env.result, "after"), after, "the subscribe answer's after");
    s->head = e2e_map_uint(env.result, "head");
    msgpack_unpacked_destroy(&u);
}

int au_sub_next(au_sub *s, int timeout_ms, uint64_t *seq)
{
    msgpack_unpacked u;
    int rc = e2e_raw_recv(s->fd, timeout_ms, &u);
    if (rc != E2E_FRAME)
        return rc;
    const msgpack_object *root = &u.data;
    const msgpack_object *id = budget_map_get(root, "id");
    const msgpack_object *ok = budget_map_get(root, "ok");
    const msgpack_object *event = budget_map_get(root, "event");
    e2e_assert(root->type == MSGPACK_OBJECT_MAP && root->via.map.size == 3 && id != NULL &&
                   id->type == MSGPACK_OBJECT_POSITIVE_INTEGER && id->via.u64 == s->req_id &&
                   ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean &&
                   event != NULL && event->type == MSGPACK_OBJECT_MAP,
               "after event %llu: a frame that is not a push of this subscription",
               (unsigned long long)(s->next_seq - 1));
    uint64_t got = e2e_map_uint(event, "seq");
    e2e_assert(got == s->next_seq, "event %llu came where %llu was due (a %s)",
               (unsigned long long)got, (unsigned long long)s->next_seq,
               got < s->next_seq ? "duplicate" : "gap");
    const msgpack_object *prev = budget_map_get(event, "prev");
    const msgpack_object *hash = budget_map_get(event, "hash");
    e2e_assert(prev != NULL && prev->type == MSGPACK_OBJECT_BIN && prev->via.bin.size == 32 &&
                   hash != NULL && hash->type == MSGPACK_OBJECT_BIN && hash->via.bin.size == 32,
               "event %llu: prev and hash are bin 32", (unsigned long long)got);
    if (s->received > 0)
        e2e_assert(memcmp(prev->via.bin.ptr, s->prev, 32) == 0,
                   "event %llu does not follow the event before it", (unsigned long long)got);
    memcpy(s->prev, hash->via.bin.ptr, 32);
    s->next_seq++;
    s->received++;
    *seq = got;
    msgpack_unpacked_destroy(&u);
    return E2E_FRAME;
}

void au_sub_until(au_sub *s, uint64_t seq)
{
    while (s->next_seq <= seq) {
        uint64_t got = 0;
        int rc = au_sub_next(s, AU_PUSH_TIMEOUT_MS, &got);
        e2e_assert(rc == E2E_FRAME, "event %llu did not come (%d) within %d ms",
                   (unsigned long long)s->next_seq, rc, AU_PUSH_TIMEOUT_MS);
    }
}

void au_sub_close(au_sub *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* ---- child processes --------------------------------------------------------------------- */

int au_proc_start(au_proc *p, const char *const *argv)
{
    int out[2], err[2];

    memset(p, 0, sizeof(*p));
    p->out_fd = p->err_fd = -1;
    if (pipe2(out, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(err, O_CLOEXEC) != 0) {
        close(out[0]);
        close(out[1]);
        return -1;
    }
    e2e_child child = {argv, out[1], err[1], NULL, NULL, NULL};
    pid_t pid = e2e_spawn(&child);
    close(out[1]);
    close(err[1]);
    if (pid < 0) {
        close(out[0]);
        close(err[0]);
        return -1;
    }
    p->pid = pid;
    p->out_fd = out[0];
    p->err_fd = err[0];
    return 0;
}

/* Reads what is there from `*fd` into a growing buffer; closes it at end of file. */
static void drain(int *fd, char **buf, size_t *len, size_t *cap)
{
    if (*cap - *len < 4096 + 1) {
        size_t next = *cap ? *cap * 2 : 16384;
        char *grown = next <= PROC_OUTPUT_BYTES_MAX ? realloc(*buf, next) : NULL;
        if (grown == NULL) {
            close(*fd);
            *fd = -1;
            return;
        }
        *buf = grown;
        *cap = next;
    }
    ssize_t n = read(*fd, *buf + *len, *cap - *len - 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    *len += (size_t)n;
    (*buf)[*len] = '\0';
}

/* Waits up to `ms` for output and reads it. False when both pipes are closed. */
static bool pump(au_proc *p, int ms)
{
    struct pollfd fds[2] = {{p->out_fd, POLLIN, 0}, {p->err_fd, POLLIN, 0}};
    if (p->out_fd < 0 && p->err_fd < 0)
        return false;
    int n = poll(fds, 2, ms);
    if (n <= 0)
        return true;
    if (p->out_fd >= 0 && fds[0].revents)
        drain(&p->out_fd, &p->out, &p->out_len, &p->out_cap);
    if (p->err_fd >= 0 && fds[1].revents)
        drain(&p->err_fd, &p->err, &p->err_len, &p->err_cap);
    return true;
}

static size_t count_lines(const au_proc *p)
{
    size_t lines = 0;
    for (size_t i = 0; i < p->out_len; i++)
        lines += p->out[i] == '\n';
    return lines;
}

bool au_proc_wait_lines(au_proc *p, size_t lines, int timeout_ms)
{
    int64_t deadline = e2e_now_ms() + timeout_ms;
    while (count_lines(p) < lines) {
        int64_t left = deadline - e2e_now_ms();
        if (left <= 0 || !pump(p, (int)(left < 50 ? left : 50)))
            return count_lines(p) >= lines;
    }
    return true;
}

int au_proc_wait(au_proc *p, int timeout_ms)
{
    int64_t deadline = e2e_now_ms() + timeout_ms;
    bool killed = false;
    for (;;) {
        pump(p, 10);
        pid_t got = waitpid(p->pid, &p->status, WNOHANG);
        if (got == p->pid)
            break;
        if (got < 0 && errno != EINTR)
            return -1;
        if (e2e_now_ms() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &p->status, 0);
            killed = true;
            break;
        }
    }
    /* What the child wrote before it exited is still in the pipes. */
    while (pump(p, 100) && e2e_now_ms() < deadline + 1000)
        ;
    p->pid = 0;
    if (killed || !WIFEXITED(p->status))
        return -1;
    return WEXITSTATUS(p->status);
}

void au_proc_stop(au_proc *p, int signum, int timeout_ms)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, signum);
    au_proc_wait(p, timeout_ms);
}

void au_proc_free(au_proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &p->status, 0);
    }
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    free(p->out);
    free(p->err);
    memset(p, 0, sizeof(*p));
}

const char *au_python(void)
{
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

/* ---- daemons and files ------------------------------------------------------------------- */

int au_daemon_on(e2e_daemon *d, const char *data)
{
    const char *tmp = getenv("TMPDIR");
    memset(d, 0, sizeof(*d));
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 40)
        tmp = "/tmp";
    snprintf(d->dir, sizeof(d->dir), "%s/budgetd-copy-XXXXXX", tmp);
    if (mkdtemp(d->dir) == NULL)
        return -1;
    remember_dir(d->dir);
    snprintf(d->data, sizeof(d->data), "%s", data);
    snprintf(d->socket, sizeof(d->socket), "%s/budgetd.sock", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/budgetd.log", d->dir);
    /* As e2e_daemon_start does: the second identity may pass through to the socket. */
    if (chmod(d->dir, 0711) != 0)
        return -1;
    return e2e_daemon_restart(d);
}

char *au_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    long size;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (data = malloc((size_t)size + 1)) != NULL) {
        *len = fread(data, 1, (size_t)size, f);
        data[*len] = '\0';
    }
    fclose(f);
    return data;
}

int au_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd);
}

int au_copy_file(const char *from, const char *to)
{
    size_t len = 0;
    struct stat st;
    char *data = au_read_file(from, &len);
    if (data == NULL || stat(from, &st) != 0) {
        free(data);
        return -1;
    }
    int rc = au_write_file(to, data, len, st.st_mode & 07777);
    free(data);
    return rc;
}

void au_temp_dir(char *out, size_t out_size)
{
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 40)
        tmp = "/tmp";
    snprintf(out, out_size, "%s/budgetd-audit-XXXXXX", tmp);
    cr_assert(mkdtemp(out) != NULL, "mkdtemp %s: %s", out, strerror(errno));
    remember_dir(out);
}

void au_cleanup(void)
{
    for (int i = 0; i < MADE_DIRS_MAX; i++) {
        if (made_dirs[i][0] != '\0' && access(made_dirs[i], F_OK) == 0)
            e2e_remove_tree(made_dirs[i]);
        made_dirs[i][0] = '\0';
    }
}
