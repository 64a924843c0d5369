/*
 * libbudgetclient: one blocking connection to budgetd (docs/protocol.md).
 *
 * Requests are packed with msgpack-c into one buffer that holds the 4-byte length header and
 * the body, and written fully. Each response body is read into its own buffer of exactly the
 * announced size (at most BUDGET_FRAME_BYTES_MAX), decoded with msgpack_unpack_next, and handed
 * to the response's zone, which frees it: decoded strings point into that buffer, so a response
 * stays valid while later ones are received (pipelining).
 *
 * The msgpack-free layer (budget/client.h) sits on the same code: a budget_req packs its args
 * as they are added, a budget_answer holds a budget_response, and a budget_value is the
 * msgpack_object it views, under another name.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "budget/client_msgpack.h"
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

/* ---- the msgpack-free layer (budget/client.h) --------------------------------------------- */

struct budget_req {
    char op[BUDGET_OP_BYTES_MAX + 1];
    uint32_t pairs;
    msgpack_sbuffer args; /* the pairs packed so far, without the map's header */
    char *keys[BUDGET_MAP_PAIRS_MAX];
};

struct budget_answer {
    budget_response r;
};

int budget_req_new(const char *op, budget_req **out)
{
    assert(op != NULL && out != NULL);
    *out = NULL;
    size_t op_bytes = strnlen(op, BUDGET_OP_BYTES_MAX + 1);
    if (op_bytes == 0 || op_bytes > BUDGET_OP_BYTES_MAX)
        return BUDGET_EBAD_REQUEST;
    budget_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    memcpy(r->op, op, op_bytes);
    msgpack_sbuffer_init(&r->args);
    *out = r;
    return 0;
}

void budget_req_free(budget_req *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->pairs; i++)
        free(r->keys[i]);
    msgpack_sbuffer_destroy(&r->args);
    free(r);
}

/* Checks `key` and packs it; the value follows. On failure the request is unchanged. */
static int req_key(budget_req *r, const char *key, msgpack_packer *pk, size_t *undo)
{
    assert(r != NULL && key != NULL);
    size_t key_bytes = strnlen(key, BUDGET_STRING_BYTES_MAX + 1);
    if (key_bytes == 0)
        return BUDGET_EBAD_REQUEST;
    if (key_bytes > BUDGET_STRING_BYTES_MAX)
        return BUDGET_ETOO_LARGE;
    for (uint32_t i = 0; i < r->pairs; i++)
        if (strcmp(r->keys[i], key) == 0)
            return BUDGET_EBAD_REQUEST;
    if (r->pairs >= BUDGET_MAP_PAIRS_MAX)
        return BUDGET_ETOO_LARGE;
    char *copy = strdup(key);
    if (copy == NULL)
        return -ENOMEM;
    *undo = r->args.size;
    msgpack_packer_init(pk, &r->args, msgpack_sbuffer_write);
    if (msgpack_pack_str_with_body(pk, key, key_bytes) != 0) {
        free(copy);
        r->args.size = *undo;
        return -ENOMEM;
    }
    r->keys[r->pairs] = copy;
    return 0;
}

/* Counts the pair whose value was packed (`rc` 0), or takes the key back. */
static int req_done(budget_req *r, int rc, size_t undo)
{
    if (rc != 0) {
        free(r->keys[r->pairs]);
        r->keys[r->pairs] = NULL;
        r->args.size = undo;
        return -ENOMEM;
    }
    r->pairs++;
    return 0;
}

int budget_req_add_str(budget_req *r, const char *key, const char *value)
{
    assert(value != NULL);
    size_t bytes = strnlen(value, BUDGET_STRING_BYTES_MAX + 1);
    if (bytes > BUDGET_STRING_BYTES_MAX)
        return BUDGET_ETOO_LARGE;
    msgpack_packer pk;
    size_t undo;
    int rc = req_key(r, key, &pk, &undo);
    if (rc != 0)
        return rc;
    return req_done(r, msgpack_pack_str_with_body(&pk, value, bytes), undo);
}

int budget_req_add_uint(budget_req *r, const char *key, uint64_t value)
{
    msgpack_packer pk;
    size_t undo;
    int rc = req_key(r, key, &pk, &undo);
    if (rc != 0)
        return rc;
    return req_done(r, msgpack_pack_uint64(&pk, value), undo);
}

int budget_req_add_int(budget_req *r, const char *key, int64_t value)
{
    msgpack_packer pk;
    size_t undo;
    int rc = req_key(r, key, &pk, &undo);
    if (rc != 0)
        return rc;
    return req_done(r, msgpack_pack_int64(&pk, value), undo);
}

int64_t budget_send(budget_client *c, const budget_req *r)
{
    assert(c != NULL && r != NULL);
    if (r->pairs == 0)
        return budget_client_send(c, r->op, NULL, 0);
    msgpack_sbuffer args;
    msgpack_packer pk;
    msgpack_sbuffer_init(&args);
    msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
    int64_t rc = -ENOMEM;
    if (msgpack_pack_map(&pk, r->pairs) == 0 &&
        msgpack_sbuffer_write(&args, r->args.data, r->args.size) == 0)
        rc = budget_client_send(c, r->op, args.data, args.size);
    msgpack_sbuffer_destroy(&args);
    return rc;
}

int budget_recv(budget_client *c, budget_answer **out)
{
    assert(c != NULL && out != NULL);
    *out = NULL;
    budget_answer *a = malloc(sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    int rc = budget_client_recv(c, &a->r);
    if (rc != 0) {
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

int budget_call(budget_client *c, const budget_req *r, budget_answer **out)
{
    assert(out != NULL);
    *out = NULL;
    int64_t id = budget_send(c, r);
    if (id < 0)
        return (int)id;
    return budget_recv(c, out);
}

int budget_call_op(budget_client *c, const char *op, budget_answer **out)
{
    assert(c != NULL && op != NULL && out != NULL);
    *out = NULL;
    int64_t id = budget_client_send(c, op, NULL, 0);
    if (id < 0)
        return (int)id;
    return budget_recv(c, out);
}

uint64_t budget_answer_id(const budget_answer *a)
{
    return a->r.id;
}

int budget_answer_error(const budget_answer *a)
{
    return a->r.ok ? 0 : a->r.err;
}

const char *budget_answer_code(const budget_answer *a)
{
    return a->r.code;
}

const char *budget_answer_message(const budget_answer *a)
{
    return a->r.message;
}

const budget_value *budget_answer_result(const budget_answer *a)
{
    if (!a->r.ok || budget_map_get(&a->r.unpacked.data, "result") == NULL)
        return NULL;
    return budget_value_of(&a->r.result);
}

const budget_value *budget_answer_event(const budget_answer *a)
{
    if (!a->r.ok)
        return NULL;
    return budget_value_of(budget_map_get(&a->r.unpacked.data, "event"));
}

void budget_answer_free(budget_answer *a)
{
    if (a == NULL)
        return;
    budget_response_free(&a->r);
    free(a);
}

const msgpack_object *budget_value_object(const budget_value *v)
{
    return (const msgpack_object *)v;
}

const budget_value *budget_value_of(const msgpack_object *o)
{
    return (const budget_value *)o;
}

budget_value_type budget_value_type_of(const budget_value *v)
{
    const msgpack_object *o = budget_value_object(v);
    if (o == NULL)
        return BUDGET_VALUE_NIL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return BUDGET_VALUE_NIL;
    case MSGPACK_OBJECT_BOOLEAN:
        return BUDGET_VALUE_BOOL;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return BUDGET_VALUE_UINT;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return BUDGET_VALUE_INT;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return BUDGET_VALUE_FLOAT;
    case MSGPACK_OBJECT_STR:
        return BUDGET_VALUE_STR;
    case MSGPACK_OBJECT_BIN:
        return BUDGET_VALUE_BIN;
    case MSGPACK_OBJECT_ARRAY:
        return BUDGET_VALUE_ARRAY;
    case MSGPACK_OBJECT_MAP:
        return BUDGET_VALUE_MAP;
    default:
        return BUDGET_VALUE_OTHER;
    }
}

const budget_value *budget_value_get(const budget_value *map, const char *key)
{
    return budget_value_of(budget_map_get(budget_value_object(map), key));
}

size_t budget_value_count(const budget_value *v)
{
    const msgpack_object *o = budget_value_object(v);
    if (o != NULL && o->type == MSGPACK_OBJECT_ARRAY)
        return o->via.array.size;
    if (o != NULL && o->type == MSGPACK_OBJECT_MAP)
        return o->via.map.size;
    return 0;
}

const budget_value *budget_value_at(const budget_value *v, size_t i)
{
    const msgpack_object *o = budget_value_object(v);
    if (i >= budget_value_count(v))
        return NULL;
    if (o->type == MSGPACK_OBJECT_ARRAY)
        return budget_value_of(&o->via.array.ptr[i]);
    return budget_value_of(&o->via.map.ptr[i].val);
}

const budget_value *budget_value_key_at(const budget_value *map, size_t i)
{
    const msgpack_object *o = budget_value_object(map);
    if (o == NULL || o->type != MSGPACK_OBJECT_MAP || i >= o->via.map.size)
        return NULL;
    return budget_value_of(&o->via.map.ptr[i].key);
}

int budget_value_uint(const budget_value *v, uint64_t *out)
{
    const msgpack_object *o = budget_value_object(v);
    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return BUDGET_EBAD_REQUEST;
    *out = o->via.u64;
    return 0;
}

int budget_value_int(const budget_value *v, int64_t *out)
{
    const msgpack_object *o = budget_value_object(v);
    if (o != NULL && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    if (o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return 0;
    }
    return BUDGET_EBAD_REQUEST;
}

int budget_value_bool(const budget_value *v, bool *out)
{
    const msgpack_object *o = budget_value_object(v);
    if (o == NULL || o->type != MSGPACK_OBJECT_BOOLEAN)
        return BUDGET_EBAD_REQUEST;
    *out = o->via.boolean;
    return 0;
}

const char *budget_value_str(const budget_value *v, size_t *len)
{
    const msgpack_object *o = budget_value_object(v);
    if (o == NULL || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    if (len != NULL)
        *len = o->via.str.size;
    return o->via.str.ptr != NULL ? o->via.str.ptr : "";
}

const uint8_t *budget_value_bin(const budget_value *v, size_t *len)
{
    const msgpack_object *o = budget_value_object(v);
    if (o == NULL || o->type != MSGPACK_OBJECT_BIN)
        return NULL;
    if (len != NULL)
        *len = o->via.bin.size;
    return o->via.bin.ptr != NULL ? (const uint8_t *)o->via.bin.ptr : (const uint8_t *)"";
}

size_t budget_value_str_copy(const budget_value *v, char *out, size_t out_size)
{
    const msgpack_object *o = budget_value_object(v);
    copy_str(o, out, out_size);
    return o != NULL && o->type == MSGPACK_OBJECT_STR ? o->via.str.size : 0;
}

bool budget_value_str_is(const budget_value *v, const char *s)
{
    const msgpack_object *o = budget_value_object(v);
    return o != NULL && s != NULL && str_is(o, s);
}
