/*
 * The allocation-free msgpack reader and writer (proto/mp.h).
 *
 * The readers decode straight from the caller's buffer: every length is checked against the
 * bytes that remain before anything is loaded, and a reader that fails leaves the cursor
 * where it was. The writers always choose the shortest form, so equal values give equal
 * bytes (event hashes depend on it).
 */
#include <assert.h>
#include <string.h>

#include "proto/mp.h"

/*
 * mp_skip keeps one remaining-count per open container on the C stack. A caller's depth_max
 * above this is treated as this: nothing budgetd reads nests deeper than BUDGET_DEPTH_MAX
 * (8), plus an event envelope.
 */
#define MP_SKIP_DEPTH_LIMIT 64

/* Big-endian loads from a byte pointer; the compiler turns these into one load and a swap. */
static inline uint16_t mp__be16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t mp__be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t mp__be64(const uint8_t *p)
{
    return (uint64_t)mp__be32(p) << 32 | mp__be32(p + 4);
}

static inline void mp__put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void mp__put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void mp__put_be64(uint8_t *p, uint64_t v)
{
    mp__put_be32(p, (uint32_t)(v >> 32));
    mp__put_be32(p + 4, (uint32_t)v);
}

/* ---- reading ---------------------------------------------------------------------------- */

mp_type mp_peek(const mp_reader *r)
{
    if (r->p >= r->end)
        return MP_NONE;
    uint8_t b = *r->p;
    if (b <= 0x7f)
        return MP_UINT;
    if (b <= 0x8f)
        return MP_MAP;
    if (b <= 0x9f)
        return MP_ARRAY;
    if (b <= 0xbf)
        return MP_STR;
    if (b >= 0xe0)
        return MP_INT;
    switch (b) {
    case 0xc0:
        return MP_NIL;
    case 0xc2:
    case 0xc3:
        return MP_BOOL;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return MP_BIN;
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return MP_EXT;
    case 0xca:
    case 0xcb:
        return MP_FLOAT;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        return MP_UINT;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3:
        return MP_INT;
    case 0xd9:
    case 0xda:
    case 0xdb:
        return MP_STR;
    case 0xdc:
    case 0xdd:
        return MP_ARRAY;
    case 0xde:
    case 0xdf:
        return MP_MAP;
    default: /* 0xc1, never used */
        return MP_NONE;
    }
}

int mp_read_nil(mp_reader *r)
{
    if (r->p >= r->end || *r->p != 0xc0)
        return -1;
    r->p++;
    return 0;
}

int mp_read_bool(mp_reader *r, bool *out)
{
    if (r->p >= r->end || (*r->p != 0xc2 && *r->p != 0xc3))
        return -1;
    *out = *r->p == 0xc3;
    r->p++;
    return 0;
}

/* The big-endian value of the `width` (1, 2, 4 or 8) bytes at `p`. */
static inline uint64_t mp__be(const uint8_t *p, size_t width)
{
    return width == 1 ? p[0] : width == 2 ? mp__be16(p) : width == 4 ? mp__be32(p) : mp__be64(p);
}

/* `v`, `width` bytes wide, read as a two's-complement number of that width. */
static inline int64_t mp__sign_extend(uint64_t v, size_t width)
{
    unsigned shift = 64 - 8 * (unsigned)width;
    return (int64_t)(v << shift) >> shift;
}

/*
 * Decodes any integer encoding at the cursor. On success returns the bytes it takes and sets
 * *bits to the value as a two's-complement uint64 and *negative to whether it is below zero.
 * Returns 0 when the next value is not an integer or is cut short. The type bytes 0xcc..0xcf
 * are uint 8, 16, 32 and 64, 0xd0..0xd3 int 8 to 64: the low two bits give the width.
 */
static inline size_t mp__integer(const mp_reader *r, uint64_t *bits, bool *negative)
{
    size_t avail = mp_remaining(r);
    if (avail == 0)
        return 0;
    uint8_t b = r->p[0];
    if (b <= 0x7f || b >= 0xe0) { /* positive or negative fixint */
        *bits = (uint64_t)(int64_t)(int8_t)b;
        *negative = b >= 0xe0;
        return 1;
    }
    if (b < 0xcc || b > 0xd3)
        return 0;
    size_t width = (size_t)1 << (b & 3);
    if (avail < 1 + width)
        return 0;
    uint64_t v = mp__be(r->p + 1, width);
    if (b <= 0xcf) {
        *bits = v;
        *negative = false;
    } else {
        int64_t s = mp__sign_extend(v, width);
        *bits = (uint64_t)s;
        *negative = s < 0;
    }
    return 1 + width;
}

int mp_read_uint(mp_reader *r, uint64_t *out)
{
    uint64_t bits;
    bool negative;
    size_t used = mp__integer(r, &bits, &negative);
    if (used == 0 || negative)
        return -1;
    *out = bits;
    r->p += used;
    return 0;
}

int mp_read_int(mp_reader *r, int64_t *out)
{
    uint64_t bits;
    bool negative;
    size_t used = mp__integer(r, &bits, &negative);
    if (used == 0 || (!negative && bits > (uint64_t)INT64_MAX))
        return -1;
    *out = (int64_t)bits; /* two's complement: negative values come back as they were */
    r->p += used;
    return 0;
}

/*
 * Reads the header of a str (is_str) or bin at the cursor. Returns the header's size and sets
 * *len, or 0 when the next value is of another kind or the header or payload is cut short.
 */
static inline size_t mp__bytes_head(const mp_reader *r, bool is_str, uint32_t *len)
{
    size_t avail = mp_remaining(r);
    if (avail == 0)
        return 0;
    const uint8_t *p = r->p;
    uint8_t b = p[0];
    size_t head;
    uint32_t n;
    if (is_str && b >= 0xa0 && b <= 0xbf) {
        head = 1;
        n = b & 0x1f;
    } else if (b == (is_str ? 0xd9 : 0xc4)) {
        if (avail < 2)
            return 0;
        head = 2;
        n = p[1];
    } else if (b == (is_str ? 0xda : 0xc5)) {
        if (avail < 3)
            return 0;
        head = 3;
        n = mp__be16(p + 1);
    } else if (b == (is_str ? 0xdb : 0xc6)) {
        if (avail < 5)
            return 0;
        head = 5;
        n = mp__be32(p + 1);
    } else {
        return 0;
    }
    if (n > avail - head)
        return 0;
    *len = n;
    return head;
}

int mp_read_str(mp_reader *r, const char **out, uint32_t *len)
{
    uint32_t n;
    size_t head = mp__bytes_head(r, true, &n);
    if (head == 0)
        return -1;
    *out = (const char *)(r->p + head);
    *len = n;
    r->p += head + n;
    return 0;
}

int mp_read_bin(mp_reader *r, const uint8_t **out, uint32_t *len)
{
    uint32_t n;
    size_t head = mp__bytes_head(r, false, &n);
    if (head == 0)
        return -1;
    *out = r->p + head;
    *len = n;
    r->p += head + n;
    return 0;
}

/* The header of an array (fix 0x90, 0xdc, 0xdd) or a map (fix 0x80, 0xde, 0xdf). */
static inline size_t mp__container_head(const mp_reader *r, uint8_t fix, uint8_t op16, uint32_t *n)
{
    size_t avail = mp_remaining(r);
    if (avail == 0)
        return 0;
    const uint8_t *p = r->p;
    uint8_t b = p[0];
    if ((b & 0xf0) == fix) {
        *n = b & 0x0f;
        return 1;
    }
    if (b == op16) {
        if (avail < 3)
            return 0;
        *n = mp__be16(p + 1);
        return 3;
    }
    if (b == op16 + 1) {
        if (avail < 5)
            return 0;
        *n = mp__be32(p + 1);
        return 5;
    }
    return 0;
}

int mp_read_array(mp_reader *r, uint32_t *n)
{
    size_t head = mp__container_head(r, 0x90, 0xdc, n);
    if (head == 0)
        return -1;
    r->p += head;
    return 0;
}

int mp_read_map(mp_reader *r, uint32_t *n)
{
    size_t head = mp__container_head(r, 0x80, 0xde, n);
    if (head == 0)
        return -1;
    r->p += head;
    return 0;
}

int mp_read_str_eq(mp_reader *r, const char *s)
{
    const char *str;
    uint32_t len;
    if (mp_read_str(r, &str, &len) != 0)
        return -1;
    size_t want = strlen(s);
    return len == want && memcmp(str, s, want) == 0;
}

/*
 * What mp_skip needs to know about the value starting at `p`: its header size, and either
 * the payload bytes that follow (scalars) or the element count (containers, maps doubled).
 */
typedef struct {
    size_t head;
    uint64_t count; /* payload bytes, or elements for a container */
    bool container;
} mp__item;

/* Returns 0, or -1 when the byte is not a msgpack type or the header is cut short. */
static inline int mp__item_at(const uint8_t *p, size_t avail, mp__item *it)
{
    uint8_t b = p[0];
    it->container = false;
    it->count = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        it->head = 1;
        return 0;
    }
    if (b <= 0x8f) {
        it->head = 1;
        it->count = 2u * (b & 0x0f);
        it->container = true;
        return 0;
    }
    if (b <= 0x9f) {
        it->head = 1;
        it->count = b & 0x0f;
        it->container = true;
        return 0;
    }
    if (b <= 0xbf) {
        it->head = 1;
        it->count = b & 0x1f;
        return 0;
    }
    /* 0xc4..0xdf: fixed-size scalars, then length-prefixed values and containers. */
    static const uint8_t fixed[32] = {
        [0xca - 0xc4] = 5, [0xcb - 0xc4] = 9,  [0xcc - 0xc4] = 2,  [0xcd - 0xc4] = 3,
        [0xce - 0xc4] = 5, [0xcf - 0xc4] = 9,  [0xd0 - 0xc4] = 2,  [0xd1 - 0xc4] = 3,
        [0xd2 - 0xc4] = 5, [0xd3 - 0xc4] = 9,  [0xd4 - 0xc4] = 3,  [0xd5 - 0xc4] = 4,
        [0xd6 - 0xc4] = 6, [0xd7 - 0xc4] = 10, [0xd8 - 0xc4] = 18,
    };
    if (b == 0xc1)
        return -1;
    if (fixed[b - 0xc4] != 0) {
        it->head = fixed[b - 0xc4];
        return 0;
    }
    size_t width; /* bytes of the length field */
    switch (b) {
    case 0xc4:
    case 0xc7:
    case 0xd9:
        width = 1;
        break;
    case 0xc5:
    case 0xc8:
    case 0xda:
    case 0xdc:
    case 0xde:
        width = 2;
        break;
    default: /* 0xc6, 0xc9, 0xdb, 0xdd, 0xdf */
        width = 4;
        break;
    }
    if (avail < 1 + width)
        return -1;
    uint64_t n = width == 1 ? p[1] : width == 2 ? mp__be16(p + 1) : mp__be32(p + 1);
    it->head = 1 + width;
    if (b >= 0xc7 && b <= 0xc9)
        it->head += 1; /* the ext type byte */
    if (b >= 0xdc) {
        it->container = true;
        n = b >= 0xde ? 2 * n : n;
    }
    it->count = n;
    return 0;
}

int mp_skip(mp_reader *r, int depth_max)
{
    uint64_t stack[MP_SKIP_DEPTH_LIMIT];
    int depth = 0;
    uint64_t pending = 1; /* values left in the innermost open container */
    const uint8_t *p = r->p;
    const uint8_t *end = r->end;
    if (depth_max > MP_SKIP_DEPTH_LIMIT)
        depth_max = MP_SKIP_DEPTH_LIMIT;

    /* Each turn consumes at least one byte or closes a container, so this ends. */
    for (;;) {
        if (pending == 0) {
            if (depth == 0)
                break;
            pending = stack[--depth];
            continue;
        }
        size_t avail = (size_t)(end - p);
        mp__item it;
        if (avail == 0 || mp__item_at(p, avail, &it) != 0 || it.head > avail)
            return -1;
        p += it.head;
        avail -= it.head;
        pending--;
        if (!it.container) {
            if (it.count > avail)
                return -1;
            p += it.count;
            continue;
        }
        /* Every element takes at least one byte: refuse impossible counts at once. */
        if (depth >= depth_max || it.count > avail)
            return -1;
        stack[depth++] = pending;
        pending = it.count;
    }
    r->p = p;
    return 0;
}

/* ---- writing ---------------------------------------------------------------------------- */

static inline void mp__put(mp_writer *w, const void *data, size_t n)
{
    if (w->len <= w->cap && n <= w->cap - w->len) {
        if (n != 0)
            memcpy(w->buf + w->len, data, n);
    } else {
        w->overflow = true;
    }
    w->len += n;
}

void mp_write_nil(mp_writer *w)
{
    uint8_t b = 0xc0;
    mp__put(w, &b, 1);
}

void mp_write_bool(mp_writer *w, bool v)
{
    uint8_t b = v ? 0xc3 : 0xc2;
    mp__put(w, &b, 1);
}

void mp_write_uint(mp_writer *w, uint64_t v)
{
    uint8_t b[9];
    size_t n;
    if (v <= 0x7f) {
        b[0] = (uint8_t)v;
        n = 1;
    } else if (v <= 0xff) {
        b[0] = 0xcc;
        b[1] = (uint8_t)v;
        n = 2;
    } else if (v <= 0xffff) {
        b[0] = 0xcd;
        mp__put_be16(b + 1, (uint16_t)v);
        n = 3;
    } else if (v <= 0xffffffff) {
        b[0] = 0xce;
        mp__put_be32(b + 1, (uint32_t)v);
        n = 5;
    } else {
        b[0] = 0xcf;
        mp__put_be64(b + 1, v);
        n = 9;
    }
    mp__put(w, b, n);
}

void mp_write_int(mp_writer *w, int64_t v)
{
    if (v >= 0) {
        mp_write_uint(w, (uint64_t)v);
        return;
    }
    uint8_t b[9];
    size_t n;
    if (v >= -32) {
        b[0] = (uint8_t)v; /* negative fixint 0xe0..0xff */
        n = 1;
    } else if (v >= INT8_MIN) {
        b[0] = 0xd0;
        b[1] = (uint8_t)v;
        n = 2;
    } else if (v >= INT16_MIN) {
        b[0] = 0xd1;
        mp__put_be16(b + 1, (uint16_t)v);
        n = 3;
    } else if (v >= INT32_MIN) {
        b[0] = 0xd2;
        mp__put_be32(b + 1, (uint32_t)v);
        n = 5;
    } else {
        b[0] = 0xd3;
        mp__put_be64(b + 1, (uint64_t)v);
        n = 9;
    }
    mp__put(w, b, n);
}

/*
 * The header of a str or bin of `len` bytes. msgpack cannot hold more than UINT32_MAX bytes in
 * one value; asking for that is a programmer error, and without asserts it marks the writer
 * as overflowed so the result is never used.
 */
static inline bool mp__bytes_header(mp_writer *w, bool is_str, size_t len)
{
    uint8_t b[5];
    size_t n;
    assert(len <= UINT32_MAX);
    if (len > UINT32_MAX) {
        w->overflow = true;
        return false;
    }
    if (is_str && len <= 31) {
        b[0] = (uint8_t)(0xa0 | len);
        n = 1;
    } else if (len <= 0xff) {
        b[0] = is_str ? 0xd9 : 0xc4;
        b[1] = (uint8_t)len;
        n = 2;
    } else if (len <= 0xffff) {
        b[0] = is_str ? 0xda : 0xc5;
        mp__put_be16(b + 1, (uint16_t)len);
        n = 3;
    } else {
        b[0] = is_str ? 0xdb : 0xc6;
        mp__put_be32(b + 1, (uint32_t)len);
        n = 5;
    }
    mp__put(w, b, n);
    return true;
}

void mp_write_str(mp_writer *w, const char *s, size_t len)
{
    if (mp__bytes_header(w, true, len))
        mp__put(w, s, len);
}

void mp_write_cstr(mp_writer *w, const char *s)
{
    mp_write_str(w, s, strlen(s));
}

void mp_write_bin(mp_writer *w, const void *data, size_t len)
{
    if (mp__bytes_header(w, false, len))
        mp__put(w, data, len);
}

static inline void mp__container_header(mp_writer *w, uint8_t fix, uint8_t op16, uint32_t n)
{
    uint8_t b[5];
    size_t size;
    if (n <= 15) {
        b[0] = (uint8_t)(fix | n);
        size = 1;
    } else if (n <= 0xffff) {
        b[0] = op16;
        mp__put_be16(b + 1, (uint16_t)n);
        size = 3;
    } else {
        b[0] = (uint8_t)(op16 + 1);
        mp__put_be32(b + 1, n);
        size = 5;
    }
    mp__put(w, b, size);
}

void mp_write_array(mp_writer *w, uint32_t n)
{
    mp__container_header(w, 0x90, 0xdc, n);
}

void mp_write_map(mp_writer *w, uint32_t n)
{
    mp__container_header(w, 0x80, 0xde, n);
}

void mp_write_raw(mp_writer *w, const void *data, size_t len)
{
    mp__put(w, data, len);
}
