/*
 * libbudgetclient: one blocking connection to budgetd (docs/protocol.md).
 *
 * Requests are packed with msgpack-c into one buffer that holds the 4-byte length header and
 * the body, and written fully. Each response body is read into its own buffer of exactly the
 * announced size (at most BUDGET_FRAME_BYTES_MAX), decoded with msgpack_unpack_next, and handed
 * to the response's zone, which frees it: decoded strings point into that buffer, so a response
 * stays valid while later ones are received (pipelining).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "budget/client.h"
#include "proto/frame.h"

struct budget_client {
    int fd;
    uint64_t next_id; /* id of the next request sent; ids start at 1 */
    int broken;       /* first I/O or protocol error; the stream is unusable after it */
};

int budget_client_connect(const char *path, budget_client **out)
{
    assert(path != NULL && out != NULL);
    *out = NULL;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    size_t path_bytes = strlen(path);
    if (path_bytes == 0 || path_bytes >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    memcpy(addr.sun_path, path, path_bytes);

    budget_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        int err = -errno;
        free(c);
        return err;
    }
    int rc;
    do {
        rc = connect(c->fd, (const struct sockaddr *)&addr, sizeof(addr));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        int err = -errno;
        close(c->fd);
        free(c);
        return err;
    }
    c->next_id = 1;
    *out = c;
    return 0;
}

void budget_client_close(budget_client *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c);
}

/* Writes all of `data`, through EINTR and partial writes, without raising SIGPIPE. */
static int write_all(int fd, const char *data, size_t size)
{
    while (size > 0) {
        ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        data += n;
        size -= (size_t)n;
    }
    return 0;
}

/* Reads exactly `size` bytes. A close by the daemon is -ECONNRESET, before or inside them. */
static int read_all(int fd, void *buf, size_t size)
{
    char *p = buf;
    while (size > 0) {
        ssize_t n = read(fd, p, size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -ECONNRESET;
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

/* Packs the envelope {"id", "op", "args"} after 4 bytes reserved for the frame header. */
static int pack_request(msgpack_sbuffer *sbuf, uint64_t id, const char *op, size_t op_bytes,
                        const void *args, size_t args_size)
{
    static const char header_space[BUDGET_FRAME_HEADER_BYTES] = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    int rc = msgpack_sbuffer_write(sbuf, header_space, sizeof(header_space));
    rc |= msgpack_pack_map(&pk, args != NULL ? 3 : 2);
    rc |= msgpack_pack_str_with_body(&pk, "id", 2);
    rc |= msgpack_pack_uint64(&pk, id);
    rc |= msgpack_pack_str_with_body(&pk, "op", 2);
    rc |= msgpack_pack_str_with_body(&pk, op, op_bytes);
    if (args != NULL) {
        rc |= msgpack_pack_str_with_body(&pk, "args", 4);
        rc |= msgpack_sbuffer_write(sbuf, args, args_size); /* already packed: raw */
    }
    return rc == 0 ? 0 : -ENOMEM;
}

/* Whether packed bytes begin with a msgpack map header (fixmap, map 16, map 32). */
static bool starts_map(const void *packed)
{
    uint8_t first = *(const uint8_t *)packed;
    return (first & 0xf0) == 0x80 || first == 0xde || first == 0xdf;
}

int64_t budget_client_send(budget_client *c, const char *op, const void *args, size_t args_size)
{
    assert(c != NULL && op != NULL);
    if (c->broken != 0)
        return c->broken;
    size_t op_bytes = strnlen(op, BUDGET_OP_BYTES_MAX + 1);
    if (op_bytes == 0 || op_bytes > BUDGET_OP_BYTES_MAX)
        return BUDGET_EBAD_REQUEST;
    if (args != NULL && args_size == 0)
        args = NULL;
    if (args != NULL && args_size > BUDGET_FRAME_BYTES_MAX)
        return BUDGET_ETOO_LARGE;
    if (args != NULL && !starts_map(args))
        return BUDGET_EBAD_REQUEST;

    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    uint64_t id = c->next_id;
    int rc = pack_request(&sbuf, id, op, op_bytes, args, args_size);
    if (rc == 0 && sbuf.size - BUDGET_FRAME_HEADER_BYTES > BUDGET_FRAME_BYTES_MAX)
        rc = BUDGET_ETOO_LARGE;
    if (rc == 0) {
        budget_frame_header((uint8_t *)sbuf.data,
                            (uint32_t)(sbuf.size - BUDGET_FRAME_HEADER_BYTES));
        rc = write_all(c->fd, sbuf.data, sbuf.size);
        if (rc != 0)
            c->broken = rc; /* part of a frame may be out: the stream is lost */
    }
    msgpack_sbuffer_destroy(&sbuf);
    if (rc != 0)
        return rc;
    c->next_id++;
    return (int64_t)id;
}

static bool str_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

/* Copies a str object into `out` (NUL-terminated), never splitting a UTF-8 sequence. */
static void copy_str(const msgpack_object *o, char *out, size_t out_size)
{
    if (out_size == 0)
        return;
    size_t n = 0;
    if (o != NULL && o->type == MSGPACK_OBJECT_STR) {
        n = o->via.str.size;
        if (n > out_size - 1) {
            n = out_size - 1;
            while (n > 0 && ((unsigned char)o->via.str.ptr[n] & 0xc0) == 0x80)
                n--;
        }
        memcpy(out, o->via.str.ptr, n);
    }
    out[n] = '\0';
}

/* Fills `out` from a decoded envelope. Returns 0 or BUDGET_EBAD_REQUEST. */
static int read_envelope(budget_client *c, budget_response *out)
{
    const msgpack_object *top = &out->unpacked.data;
    if (top->type != MSGPACK_OBJECT_MAP)
        return BUDGET_EBAD_REQUEST;
    const msgpack_object *id = budget_map_get(top, "id");
    const msgpack_object *ok = budget_map_get(top, "ok");
    if (id == NULL || id->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ok == NULL ||
        ok->type != MSGPACK_OBJECT_BOOLEAN)
        return BUDGET_EBAD_REQUEST;
    out->id = id->via.u64;
    out->ok = ok->via.boolean;
    /* Only ids this client sent, or 0 (a refused frame whose id could not be read). */
    if (out->id >= c->next_id || (out->id == 0 && out->ok))
        return BUDGET_EBAD_REQUEST;
    if (out->ok) {
        const msgpack_object *result = budget_map_get(top, "result");
        if (result != NULL)
            out->result = *result;
        return 0;
    }
    const msgpack_object *error = budget_map_get(top, "error");
    if (error == NULL || error->type != MSGPACK_OBJECT_MAP)
        return BUDGET_EBAD_REQUEST;
    const msgpack_object *code = budget_map_get(error, "code");
    if (code == NULL || code->type != MSGPACK_OBJECT_STR)
        return BUDGET_EBAD_REQUEST;
    copy_str(code, out->code, sizeof(out->code));
    copy_str(budget_map_get(error, "message"), out->message, sizeof(out->message));
    out->err = budget_err_from_code(code->via.str.ptr, code->via.str.size);
    return 0;
}

static void free_body(void *body)
{
    free(body);
}

/* Reads one frame and decodes it into out->unpacked, which then owns the body. */
static int read_frame(budget_client *c, budget_response *out)
{
    uint8_t header[BUDGET_FRAME_HEADER_BYTES];
    int rc = read_all(c->fd, header, sizeof(header));
    if (rc != 0)
        return rc;
    uint32_t size = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 |
                    (uint32_t)header[2] << 8 | (uint32_t)header[3];
    if (size == 0 || size > BUDGET_FRAME_BYTES_MAX)
        return BUDGET_ETOO_LARGE;
    char *body = malloc(size);
    if (body == NULL)
        return -ENOMEM;
    rc = read_all(c->fd, body, size);
    size_t offset = 0;
    if (rc == 0 &&
        (msgpack_unpack_next(&out->unpacked, body, size, &offset) != MSGPACK_UNPACK_SUCCESS ||
         offset != size))
        rc = BUDGET_EBAD_REQUEST;
    if (rc == 0 && !msgpack_zone_push_finalizer(out->unpacked.zone, free_body, body))
        rc = -ENOMEM;
    if (rc != 0) {
        msgpack_unpacked_destroy(&out->unpacked);
        free(body);
    }
    return rc;
}

int budget_client_recv(budget_client *c, budget_response *out)
{
    assert(c != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    msgpack_unpacked_init(&out->unpacked);
    out->result.type = MSGPACK_OBJECT_NIL;
    if (c->broken != 0)
        return c->broken;
    int rc = read_frame(c, out);
    if (rc == 0) {
        rc = read_envelope(c, out);
        if (rc != 0)
            budget_response_free(out);
    }
    if (rc != 0) {
        c->broken = rc;
        return rc;
    }
    return 0;
}

int budget_client_call(budget_client *c, const char *op, const void *args, size_t args_size,
                       budget_response *out)
{
    int64_t id = budget_client_send(c, op, args, args_size);
    if (id < 0) {
        memset(out, 0, sizeof(*out));
        msgpack_unpacked_init(&out->unpacked);
        return (int)id;
    }
    return budget_client_recv(c, out);
}

void budget_response_free(budget_response *r)
{
    if (r == NULL)
        return;
    msgpack_unpacked_destroy(&r->unpacked);
    r->result.type = MSGPACK_OBJECT_NIL;
}

const msgpack_object *budget_map_get(const msgpack_object *map, const char *key)
{
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (str_is(&kv->key, key))
            return &kv->val;
    }
    return NULL;
}

void budget_map_str(const msgpack_object *map, const char *key, char *out, size_t out_size)
{
    copy_str(budget_map_get(map, key), out, out_size);
}

int64_t budget_map_int(const msgpack_object *map, const char *key, int64_t fallback)
{
    const msgpack_object *o = budget_map_get(map, key);
    if (o == NULL)
        return fallback;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return o->via.u64 <= (uint64_t)INT64_MAX ? (int64_t)o->via.u64 : fallback;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    return fallback;
}
