/*
 * The frame validator (proto/validate.h). One pass over the body with an explicit stack of
 * BUDGET_DEPTH_MAX remaining-counts; no recursion, no allocation. Everything after it (the
 * request decoder, msgpack-c's unpacker) may then trust the frame's shape and sizes, and that
 * every key of every map means one thing.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/mp.h"
#include "proto/text.h"
#include "proto/fail.h"
#include "proto/validate.h"

typedef enum {
    VALUE_SCALAR, /* nil, bool, integers, floats: `head` is the whole value */
    VALUE_STR,
    VALUE_BIN,
    VALUE_ARRAY,
    VALUE_MAP,
    VALUE_EXT,
    VALUE_RESERVED, /* 0xc1 */
} value_kind;

/* The start of one value: its kind, header bytes, and payload bytes or element count. */
typedef struct {
    value_kind kind;
    size_t head;
    uint64_t len;
} value_head;

static const char *const kind_names[] = {
    [VALUE_SCALAR] = "nil, bool or number",
    [VALUE_STR] = "str",
    [VALUE_BIN] = "bin",
    [VALUE_ARRAY] = "array",
    [VALUE_MAP] = "map",
    [VALUE_EXT] = "ext",
    [VALUE_RESERVED] = "the reserved byte 0xc1",
};

static inline uint64_t load_be(const uint8_t *p, size_t width)
{
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++)
        v = v << 8 | p[i];
    return v;
}

/* Sets the kind, and `width` to the bytes of the length field that follows the type byte. */
static inline void classify(uint8_t b, value_head *h, size_t *width)
{
    *width = 0;
    h->head = 1;
    h->len = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        h->kind = VALUE_SCALAR;
    } else if (b <= 0x8f) {
        h->kind = VALUE_MAP;
        h->len = b & 0x0f;
    } else if (b <= 0x9f) {
        h->kind = VALUE_ARRAY;
        h->len = b & 0x0f;
    } else if (b <= 0xbf) {
        h->kind = VALUE_STR;
        h->len = b & 0x1f;
    } else if (b == 0xc1) {
        h->kind = VALUE_RESERVED;
    } else if (b <= 0xc6) {
        h->kind = VALUE_BIN;
        *width = (size_t)1 << (b - 0xc4);
    } else if (b <= 0xc9 || (b >= 0xd4 && b <= 0xd8)) {
        h->kind = VALUE_EXT;
    } else if (b <= 0xd3) {
        /* float 32/64, uint 8..64, int 8..64: fixed sizes, type byte included */
        static const uint8_t sizes[] = {5, 9, 2, 3, 5, 9, 2, 3, 5, 9};
        h->kind = VALUE_SCALAR;
        h->head = sizes[b - 0xca];
    } else if (b <= 0xdb) {
        h->kind = VALUE_STR;
        *width = (size_t)1 << (b - 0xd9);
    } else if (b <= 0xdd) {
        h->kind = VALUE_ARRAY;
        *width = b == 0xdc ? 2 : 4;
    } else {
        h->kind = VALUE_MAP;
        *width = b == 0xde ? 2 : 4;
    }
}

/* Reads the header at `p`; -1 when it is cut short by the end of the body. */
static inline int read_head(const uint8_t *p, size_t avail, value_head *h)
{
    size_t width;
    classify(p[0], h, &width);
    if (width != 0) {
        if (avail < 1 + width)
            return -1;
        h->len = load_be(p + 1, width);
        h->head = 1 + width;
    }
    return h->head <= avail ? 0 : -1;
}

/* A map key seen: its bytes in the body. */
typedef struct {
    const uint8_t *p;
    uint32_t len;
} key_ref;

/* The keys of every open map, each map's sorted in a segment of its own: at most
 * BUDGET_MAP_PAIRS_MAX keys in each of at most BUDGET_DEPTH_MAX open maps. */
#define KEYS_MAX (BUDGET_DEPTH_MAX * BUDGET_MAP_PAIRS_MAX)

/* The walk's cursor, and where to say what went wrong. */
typedef struct {
    const uint8_t *body;
    const uint8_t *p;
    const uint8_t *end;
    char *why;
    size_t why_size;
    key_ref keys[KEYS_MAX];
    size_t keys_count;
} walker;

/* A total order on keys: by length, then by bytes. */
static int key_compare(const key_ref *a, const key_ref *b)
{
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return memcmp(a->p, b->p, a->len);
}

/*
 * Adds the key `k`, whose value starts at byte `at`, to its map's keys, which are
 * keys[first..keys_count), kept sorted so that a map of n keys costs O(n log n) comparisons.
 * Refuses a key the map already holds.
 */
static int add_key(walker *w, size_t first, key_ref k, size_t at)
{
    size_t lo = first, hi = w->keys_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = key_compare(&w->keys[mid], &k);
        if (cmp == 0) {
            char name[48];
            budget_escape(name, sizeof(name), k.p, k.len);
            return budget_fail(
                BUDGET_EBAD_REQUEST, w->why, w->why_size,
                "map key \"%s\" at byte %zu appears twice in its map; every key must be "
                "given once",
                name, at);
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (w->keys_count == KEYS_MAX) /* cannot happen: the limits above bound it */
        return budget_fail(BUDGET_ETOO_LARGE, w->why, w->why_size,
                           "too many map keys open at once");
    memmove(&w->keys[lo + 1], &w->keys[lo], (w->keys_count - lo) * sizeof(w->keys[0]));
    w->keys[lo] = k;
    w->keys_count++;
    return 0;
}

/*
 * Checks the value at the cursor, whose place is the top level (`top`) or a map key (`key`),
 * and moves past its header, and past its payload for a str or bin. Leaves a container's
 * header in *h for the caller to open. Returns 0 or the error.
 */
static int visit(walker *w, bool top, bool key, value_head *h)
{
    size_t at = (size_t)(w->p - w->body);
    size_t avail = (size_t)(w->end - w->p);
    if (avail == 0 || read_head(w->p, avail, h) != 0)
        return budget_fail(BUDGET_EBAD_REQUEST, w->why, w->why_size,
                           "value at byte %zu is cut short by the end of the frame", at);
    avail -= h->head;
    /* Every element needs at least one byte, so a count larger than what remains is refused
     * at the header, before anyone sizes anything by it. */
    if ((h->kind == VALUE_ARRAY && h->len > avail) || (h->kind == VALUE_MAP && 2 * h->len > avail))
        return budget_fail(BUDGET_EBAD_REQUEST, w->why, w->why_size,
                           "%s at byte %zu claims %" PRIu64 " %s but %zu bytes remain",
                           kind_names[h->kind], at, h->len,
                           h->kind == VALUE_MAP ? "pairs" : "elements", avail);
    if (h->kind == VALUE_MAP && h->len > BUDGET_MAP_PAIRS_MAX)
        return budget_fail(BUDGET_ETOO_LARGE, w->why, w->why_size,
                           "map at byte %zu has %" PRIu64 " pairs, more than %u", at, h->len,
                           BUDGET_MAP_PAIRS_MAX);
    if (top && h->kind != VALUE_MAP)
        return budget_fail(BUDGET_EBAD_REQUEST, w->why, w->why_size,
                           "the value at byte 0 is of type %s, not a map", kind_names[h->kind]);
    if (key && h->kind != VALUE_STR)
        return budget_fail(BUDGET_EBAD_REQUEST, w->why, w->why_size,
                           "map key at byte %zu is of type %s, not str", at, kind_names[h->kind]);
    if (h->kind == VALUE_EXT || h->kind == VALUE_RESERVED)
        return budget_fail(BUDGET_EBAD_REQUEST, w->why, w->why_size,
                           "%s at byte %zu is not accepted", kind_names[h->kind], at);
    w->p += h->head;
    if (h->kind != VALUE_STR && h->kind != VALUE_BIN)
        return 0;
    if (h->len > BUDGET_STRING_BYTES_MAX)
        return budget_fail(BUDGET_ETOO_LARGE, w->why, w->why_size,
                           "%s at byte %zu has %" PRIu64 " bytes, more than %u",
                           kind_names[h->kind], at, h->len, BUDGET_STRING_BYTES_MAX);
    if (h->len > avail)
        return budget_fail(BUDGET_EBAD_REQUEST, w->why, w->why_size,
                           "%s at byte %zu claims %" PRIu64 " bytes but %zu remain",
                           kind_names[h->kind], at, h->len, avail);
    w->p += h->len;
    return 0;
}

int budget_validate_frame(const uint8_t *body, size_t size, char *why, size_t why_size)
{
    walker w = {.body = body, .p = body, .end = body + size, .why = why, .why_size = why_size};
    uint64_t stack[BUDGET_DEPTH_MAX]; /* values left in each enclosing container */
    bool in_map[BUDGET_DEPTH_MAX + 1] = {false};
    size_t keys_first[BUDGET_DEPTH_MAX + 1] = {0}; /* where each open map's keys begin */
    int depth = 0;                                 /* containers open */
    uint64_t pending = 1;                          /* values left at this depth: one at the top */

    if (size == 0)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "the frame body is empty");

    /* Each turn consumes at least one byte or closes a container, so this is O(size). */
    for (;;) {
        if (pending == 0) {
            if (depth == 0)
                break;
            if (in_map[depth])
                w.keys_count = keys_first[depth]; /* the map is closed: its keys are done */
            pending = stack[--depth];
            continue;
        }
        value_head h = {.kind = VALUE_SCALAR};
        size_t at = (size_t)(w.p - body);
        bool key = in_map[depth] && pending % 2 == 0;
        int err = visit(&w, depth == 0, key, &h);
        if (err == 0 && key)
            err = add_key(&w, keys_first[depth], (key_ref){w.p - h.len, (uint32_t)h.len}, at);
        if (err != 0)
            return err;
        pending--;
        if (h.kind != VALUE_ARRAY && h.kind != VALUE_MAP)
            continue;
        if (depth == BUDGET_DEPTH_MAX)
            return budget_fail(BUDGET_ETOO_LARGE, why, why_size,
                               "%s at byte %zu nests deeper than %d levels", kind_names[h.kind], at,
                               BUDGET_DEPTH_MAX);
        stack[depth++] = pending;
        in_map[depth] = h.kind == VALUE_MAP;
        keys_first[depth] = w.keys_count;
        pending = h.kind == VALUE_MAP ? 2 * h.len : h.len;
    }

    if (w.p != w.end)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                           "the map ends at byte %zu but the frame has %zu more bytes",
                           (size_t)(w.p - body), (size_t)(w.end - w.p));
    return 0;
}

/*
 * The id of a frame that failed validation, read as far as it can be: 0 when the top level is
 * not a map, "id" is not a uint, or "id" appears twice (then no one id is the request's).
 */
static uint64_t best_effort_id(const uint8_t *body, size_t size)
{
    mp_reader r;
    uint32_t n;
    uint64_t id = 0;
    bool seen = false;

    mp_reader_init(&r, body, size);
    if (mp_read_map(&r, &n) != 0)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        int eq = mp_read_str_eq(&r, "id");
        if (eq < 0)
            break;
        if (eq == 1) {
            if (seen || mp_read_uint(&r, &id) != 0)
                return 0;
            seen = true;
            continue;
        }
        if (mp_skip(&r, BUDGET_DEPTH_MAX) != 0)
            break;
    }
    return seen ? id : 0;
}

int budget_parse_request(const uint8_t *body, size_t size, budget_envelope *env, char *why,
                         size_t why_size)
{
    mp_reader r;
    uint32_t n;
    bool has_id = false, has_op = false, extra = false, args_bad = false;
    const char *op = NULL;
    uint32_t op_len = 0;

    memset(env, 0, sizeof(*env));
    int rc = budget_validate_frame(body, size, why, why_size);
    if (rc != 0) {
        env->id = best_effort_id(body, size);
        return rc;
    }
    /* The frame is one map of str keys without a key twice: each read below succeeds. */
    mp_reader_init(&r, body, size);
    mp_read_map(&r, &n);
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        uint32_t key_len;
        mp_read_str(&r, &key, &key_len);
        const uint8_t *value = r.p;
        if (key_len == 2 && memcmp(key, "id", 2) == 0) {
            has_id = mp_read_uint(&r, &env->id) == 0;
        } else if (key_len == 2 && memcmp(key, "op", 2) == 0) {
            has_op = mp_read_str(&r, &op, &op_len) == 0;
        } else if (key_len == 4 && memcmp(key, "args", 4) == 0) {
            mp_type t = mp_peek(&r);
            args_bad = t != MP_MAP && t != MP_NIL;
            if (t == MP_MAP) {
                env->args = value;
                env->args_size = 0; /* set once skipped */
            }
        } else {
            extra = true;
        }
        if (r.p == value && mp_skip(&r, BUDGET_DEPTH_MAX) != 0)
            return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "the envelope cannot be read");
        if (env->args == value)
            env->args_size = (size_t)(r.p - value);
    }
    if (!has_id) {
        env->id = 0;
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "a request needs a uint id");
    }
    if (env->id == 0)
        return budget_fail(
            BUDGET_EBAD_REQUEST, why, why_size,
            "request ids start at 1; id 0 marks the frame the daemon sends as it closes");
    if (extra)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                           "a request holds only id, op and args");
    if (!has_op)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "a request needs a str op");
    if (args_bad)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "args must be a map");
    env->op = op;
    env->op_len = op_len;
    return 0;
}
