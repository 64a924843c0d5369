/* The benchmarks' side of budgetd's wire protocol (bench_wire.h). */
#include "bench_wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "budget/limits.h"
#include "proto/frame.h"

/* Nesting allowed when a result value is skipped: results nest a few levels at most. */
#define RESULT_DEPTH_MAX 16

void bench_request_begin(mp_writer *w, uint8_t *buf, size_t cap, uint64_t id, const char *op,
                         uint32_t args)
{
    mp_writer_init(w, buf, cap);
    mp_write_raw(w, "\0\0\0\0", BUDGET_FRAME_HEADER_BYTES);
    mp_write_map(w, args ? 3 : 2);
    mp_write_cstr(w, "id");
    mp_write_uint(w, id);
    mp_write_cstr(w, "op");
    mp_write_cstr(w, op);
    if (args) {
        mp_write_cstr(w, "args");
        mp_write_map(w, args);
    }
}

size_t bench_request_end(mp_writer *w)
{
    if (w->overflow)
        return 0;
    budget_frame_header(w->buf, (uint32_t)(w->len - BUDGET_FRAME_HEADER_BYTES));
    return w->len;
}

void bench_kv_str(mp_writer *w, const char *key, const char *value)
{
    mp_write_cstr(w, key);
    mp_write_cstr(w, value);
}

void bench_kv_int(mp_writer *w, const char *key, int64_t value)
{
    mp_write_cstr(w, key);
    mp_write_int(w, value);
}

static void copy_str(mp_reader *r, char *out, size_t size)
{
    const char *s;
    uint32_t len;
    out[0] = '\0';
    if (mp_read_str(r, &s, &len) != 0) {
        mp_skip(r, RESULT_DEPTH_MAX);
        return;
    }
    if (len >= size)
        len = (uint32_t)size - 1;
    memcpy(out, s, len);
    out[len] = '\0';
}

static int parse_error(mp_reader *r, bench_response *out)
{
    uint32_t n;
    if (mp_read_map(r, &n) != 0)
        return -1;
    for (uint32_t j = 0; j < n; j++) {
        int is_code = mp_read_str_eq(r, "code");
        if (is_code < 0)
            return -1;
        if (is_code)
            copy_str(r, out->code, sizeof(out->code));
        else
            copy_str(r, out->message, sizeof(out->message));
    }
    return 0;
}

int bench_parse_response(const uint8_t *body, size_t size, bench_response *out)
{
    mp_reader r;
    uint32_t n;

    memset(out, 0, sizeof(*out));
    mp_reader_init(&r, body, size);
    if (mp_read_map(&r, &n) != 0)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t klen;
        if (mp_read_str(&r, &k, &klen) != 0)
            return -1;
        if (klen == 2 && memcmp(k, "id", 2) == 0) {
            if (mp_read_uint(&r, &out->id) != 0)
                return -1;
        } else if (klen == 2 && memcmp(k, "ok", 2) == 0) {
            if (mp_read_bool(&r, &out->ok) != 0)
                return -1;
        } else if (klen == 5 && memcmp(k, "error", 5) == 0) {
            if (parse_error(&r, out) != 0)
                return -1;
        } else {
            out->result = r;
            /* The last value of the envelope (budgetd's result is) ends with the frame: a
             * page of balances is not walked just to find where it ends. */
            if (i + 1 == n)
                break;
            if (mp_skip(&r, RESULT_DEPTH_MAX) != 0)
                return -1;
            out->result.end = r.p;
        }
    }
    return 0;
}

/* Moves `r` to the value under `key` of the result map; -1 when there is none. */
static int find_key(const bench_response *resp, const char *key, mp_reader *r)
{
    uint32_t n;
    *r = resp->result;
    if (r->p == NULL || mp_read_map(r, &n) != 0)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        int eq = mp_read_str_eq(r, key);
        if (eq < 0)
            return -1;
        if (eq == 1)
            return 0;
        if (mp_skip(r, RESULT_DEPTH_MAX) != 0)
            return -1;
    }
    return -1;
}

uint64_t bench_result_uint(const bench_response *resp, const char *key, uint64_t fallback)
{
    mp_reader r;
    uint64_t v;
    return find_key(resp, key, &r) == 0 && mp_read_uint(&r, &v) == 0 ? v : fallback;
}

uint64_t bench_result_inner_uint(const bench_response *resp, const char *map, const char *key,
                                 uint64_t fallback)
{
    mp_reader r;
    uint32_t n;
    uint64_t v;
    if (find_key(resp, map, &r) != 0 || mp_read_map(&r, &n) != 0)
        return fallback;
    for (uint32_t i = 0; i < n; i++) {
        int eq = mp_read_str_eq(&r, key);
        if (eq < 0)
            return fallback;
        if (eq == 1)
            return mp_read_uint(&r, &v) == 0 ? v : fallback;
        if (mp_skip(&r, RESULT_DEPTH_MAX) != 0)
            return fallback;
    }
    return fallback;
}

bool bench_result_bool(const bench_response *resp, const char *key, bool fallback)
{
    mp_reader r;
    bool v;
    return find_key(resp, key, &r) == 0 && mp_read_bool(&r, &v) == 0 ? v : fallback;
}

int bench_connect(const char *path, bool nonblocking)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(addr.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(addr.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    if (nonblocking)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int bench_write_all(int fd, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int bench_conn_open(bench_conn *c, const char *path, int timeout_ms)
{
    memset(c, 0, sizeof(*c));
    c->timeout_ms = timeout_ms;
    c->fd = bench_connect(path, false);
    return c->fd < 0 ? -1 : 0;
}

void bench_conn_close(bench_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

int bench_conn_read(bench_conn *c, const uint8_t **body, uint32_t *size)
{
    if (c->used > 0) {
        memmove(c->buf, c->buf + c->used, c->len - c->used);
        c->len -= c->used;
        c->used = 0;
    }
    for (;;) {
        int rc = budget_frame_peek(c->buf, c->len, size);
        if (rc == 0) {
            *body = c->buf + BUDGET_FRAME_HEADER_BYTES;
            c->used = BUDGET_FRAME_HEADER_BYTES + *size;
            return 0;
        }
        if (rc < 0)
            return -1;
        if (c->cap - c->len < 65536) {
            size_t cap = c->cap ? c->cap * 2 : (size_t)1 << 20;
            uint8_t *p = realloc(c->buf, cap);
            if (!p)
                return -1;
            c->buf = p;
            c->cap = cap;
        }
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int ready = poll(&pfd, 1, c->timeout_ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready != 1)
            return -1;
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c->len += (size_t)n;
    }
}

int bench_conn_call(bench_conn *c, const uint8_t *frame, size_t size, bench_response *out)
{
    const uint8_t *body;
    uint32_t body_size;
    if (bench_write_all(c->fd, frame, size) != 0 || bench_conn_read(c, &body, &body_size) != 0)
        return -1;
    return bench_parse_response(body, body_size, out);
}
