/*
 * The wire codec: the msgpack reader and writer (proto/mp.h), the frame validator
 * (proto/validate.h) and framing (proto/frame.h), checked against msgpack-c where the two
 * must agree. Inputs that are cut short are copied into heap buffers of exactly their length,
 * so a sanitizer build catches any read past the end.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/fields.h"
#include "proto/frame.h"
#include "proto/mp.h"
#include "proto/text.h"
#include "proto/validate.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* A heap copy of exactly `size` bytes (at least one allocated byte so the pointer is valid). */
static uint8_t *exact_copy(const void *data, size_t size)
{
    uint8_t *copy = malloc(size == 0 ? 1 : size);
    cr_assert_not_null(copy);
    if (size == 0)
        return copy + 1; /* one past the end: any read is out of bounds */
    memcpy(copy, data, size);
    return copy;
}

static void exact_free(uint8_t *copy, size_t size)
{
    free(size == 0 ? copy - 1 : copy);
}

/* budget_validate_frame on an exact heap copy; `why` receives the explanation. */
static int validate_copy(const void *body, size_t size, char *why, size_t why_size)
{
    uint8_t *copy = exact_copy(body, size);
    int rc = budget_validate_frame(copy, size, why, why_size);
    exact_free(copy, size);
    return rc;
}

static int validate(const void *body, size_t size)
{
    char why[160];
    return validate_copy(body, size, why, sizeof why);
}

/* The request used for framing and truncation tests, written with the mp writer. */
static size_t write_request(uint8_t *buf, size_t cap)
{
    mp_writer w;
    mp_writer_init(&w, buf, cap);
    mp_write_map(&w, 3);
    mp_write_cstr(&w, "id");
    mp_write_uint(&w, 7);
    mp_write_cstr(&w, "op");
    mp_write_cstr(&w, "allocation.propose");
    mp_write_cstr(&w, "args");
    mp_write_map(&w, 5);
    mp_write_cstr(&w, "id");
    mp_write_cstr(&w, "a1");
    mp_write_cstr(&w, "frame");
    mp_write_cstr(&w, "f1");
    mp_write_cstr(&w, "unit");
    mp_write_cstr(&w, "SON");
    mp_write_cstr(&w, "amount");
    mp_write_uint(&w, 100000000);
    mp_write_cstr(&w, "purpose");
    mp_write_cstr(&w, "x");
    cr_assert_eq(w.overflow, w.len > cap);
    return w.len;
}

/* A whole frame: 4-byte header, then the request. */
static size_t write_request_frame(uint8_t *buf, size_t cap)
{
    size_t body = write_request(buf + BUDGET_FRAME_HEADER_BYTES, cap - BUDGET_FRAME_HEADER_BYTES);
    budget_frame_header(buf, (uint32_t)body);
    return BUDGET_FRAME_HEADER_BYTES + body;
}

/* A map {"k": <str or bin of n bytes>}, into a heap buffer the caller frees. */
static uint8_t *map_with_bytes(bool is_str, size_t n, size_t *size)
{
    char *payload = malloc(n + 1);
    cr_assert_not_null(payload);
    memset(payload, 'x', n);
    mp_writer w;
    mp_writer_init(&w, NULL, 0);
    for (int pass = 0; pass < 2; pass++) {
        mp_write_map(&w, 1);
        mp_write_cstr(&w, "k");
        if (is_str)
            mp_write_str(&w, payload, n);
        else
            mp_write_bin(&w, payload, n);
        if (pass == 0) {
            size_t len = w.len;
            mp_writer_init(&w, malloc(len), len);
            cr_assert_not_null(w.buf);
        }
    }
    cr_assert_not(w.overflow);
    free(payload);
    *size = w.len;
    return w.buf;
}

/* ---- integers --------------------------------------------------------------------------- */

typedef struct {
    uint64_t value;
    size_t size;
    uint8_t first;
} uint_case;

static const uint_case uint_cases[] = {
    {0, 1, 0x00},         {127, 1, 0x7f},        {128, 2, 0xcc},
    {255, 2, 0xcc},       {256, 3, 0xcd},        {65535, 3, 0xcd},
    {65536, 5, 0xce},     {UINT32_MAX, 5, 0xce}, {(uint64_t)UINT32_MAX + 1, 9, 0xcf},
    {INT64_MAX, 9, 0xcf}, {UINT64_MAX, 9, 0xcf},
};

typedef struct {
    int64_t value;
    size_t size;
    uint8_t first;
} int_case;

static const int_case int_cases[] = {
    {-1, 1, 0xff},        {-32, 1, 0xe0},       {-33, 2, 0xd0},
    {-128, 2, 0xd0},      {-129, 3, 0xd1},      {-32768, 3, 0xd1},
    {-32769, 5, 0xd2},    {INT32_MIN, 5, 0xd2}, {(int64_t)INT32_MIN - 1, 9, 0xd3},
    {INT64_MIN, 9, 0xd3},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

Test(mp_int, unsigned_boundaries_round_trip_in_shortest_form)
{
    for (size_t i = 0; i < COUNT(uint_cases); i++) {
        const uint_case *c = &uint_cases[i];
        uint8_t buf[16];
        mp_writer w;
        mp_writer_init(&w, buf, sizeof buf);
        mp_write_uint(&w, c->value);
        cr_assert_eq(w.len, c->size, "%" PRIu64 ": %zu bytes", c->value, w.len);
        cr_assert_eq(buf[0], c->first, "%" PRIu64 ": first byte %02x", c->value, buf[0]);

        mp_reader r;
        mp_reader_init(&r, buf, w.len);
        cr_assert_eq(mp_peek(&r), MP_UINT);
        uint64_t u = 0;
        cr_assert_eq(mp_read_uint(&r, &u), 0);
        cr_assert_eq(u, c->value);
        cr_assert_eq(mp_remaining(&r), 0);

        /* Through the signed reader and writer, when the value fits int64. */
        mp_reader_init(&r, buf, w.len);
        int64_t s = 0;
        if (c->value <= INT64_MAX) {
            cr_assert_eq(mp_read_int(&r, &s), 0);
            cr_assert_eq((uint64_t)s, c->value);
            uint8_t again[16];
            mp_writer_init(&w, again, sizeof again);
            mp_write_int(&w, (int64_t)c->value);
            cr_assert_eq(w.len, c->size);
            cr_assert_arr_eq(again, buf, c->size);
        } else {
            cr_assert_eq(mp_read_int(&r, &s), -1);
            cr_assert_eq(r.p, buf, "a failed read moved the cursor");
        }
    }
}

Test(mp_int, signed_boundaries_round_trip_in_shortest_form)
{
    for (size_t i = 0; i < COUNT(int_cases); i++) {
        const int_case *c = &int_cases[i];
        uint8_t buf[16];
        mp_writer w;
        mp_writer_init(&w, buf, sizeof buf);
        mp_write_int(&w, c->value);
        cr_assert_eq(w.len, c->size, "%" PRId64 ": %zu bytes", c->value, w.len);
        cr_assert_eq(buf[0], c->first, "%" PRId64 ": first byte %02x", c->value, buf[0]);

        mp_reader r;
        mp_reader_init(&r, buf, w.len);
        cr_assert_eq(mp_peek(&r), MP_INT);
        int64_t s = 0;
        cr_assert_eq(mp_read_int(&r, &s), 0);
        cr_assert_eq(s, c->value);
        cr_assert_eq(mp_remaining(&r), 0);

        mp_reader_init(&r, buf, w.len);
        uint64_t u = 0;
        cr_assert_eq(mp_read_uint(&r, &u), -1, "%" PRId64 " read as uint", c->value);
        cr_assert_eq(r.p, buf, "a failed read moved the cursor");
    }
}

Test(mp_int, non_canonical_encodings_are_read_by_value)
{
    /* int8 5, int64 INT64_MAX, uint64 7, uint64 INT64_MAX, uint64 INT64_MAX + 1 */
    static const uint8_t int8_five[] = {0xd0, 0x05};
    static const uint8_t int64_max[] = {0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t uint64_seven[] = {0xcf, 0, 0, 0, 0, 0, 0, 0, 7};
    static const uint8_t uint64_max_signed[] = {0xcf, 0x7f, 0xff, 0xff, 0xff,
                                                0xff, 0xff, 0xff, 0xff};
    static const uint8_t uint64_past_signed[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0};
    mp_reader r;
    uint64_t u;
    int64_t s;

    mp_reader_init(&r, int8_five, sizeof int8_five);
    cr_assert_eq(mp_read_uint(&r, &u), 0);
    cr_assert_eq(u, 5);
    mp_reader_init(&r, int64_max, sizeof int64_max);
    cr_assert_eq(mp_read_uint(&r, &u), 0);
    cr_assert_eq(u, (uint64_t)INT64_MAX);
    mp_reader_init(&r, uint64_seven, sizeof uint64_seven);
    cr_assert_eq(mp_read_int(&r, &s), 0);
    cr_assert_eq(s, 7);
    mp_reader_init(&r, uint64_max_signed, sizeof uint64_max_signed);
    cr_assert_eq(mp_read_int(&r, &s), 0);
    cr_assert_eq(s, INT64_MAX);
    mp_reader_init(&r, uint64_past_signed, sizeof uint64_past_signed);
    cr_assert_eq(mp_read_int(&r, &s), -1);
    cr_assert_eq(mp_remaining(&r), sizeof uint64_past_signed);
}

Test(mp_int, truncated_integers_fail_without_moving)
{
    for (size_t i = 0; i < COUNT(uint_cases); i++) {
        uint8_t buf[16];
        mp_writer w;
        mp_writer_init(&w, buf, sizeof buf);
        mp_write_uint(&w, uint_cases[i].value);
        for (size_t cut = 0; cut < w.len; cut++) {
            uint8_t *copy = exact_copy(buf, cut);
            mp_reader r;
            mp_reader_init(&r, copy, cut);
            uint64_t u;
            int64_t s;
            cr_assert_eq(mp_read_uint(&r, &u), -1);
            cr_assert_eq(mp_read_int(&r, &s), -1);
            cr_assert_eq(mp_skip(&r, 1), -1);
            cr_assert_eq(r.p, copy);
            exact_free(copy, cut);
        }
    }
}

/* ---- scalars, str, bin, containers ------------------------------------------------------ */

Test(mp_scalar, nil_and_bool)
{
    uint8_t buf[8];
    mp_writer w;
    mp_writer_init(&w, buf, sizeof buf);
    mp_write_nil(&w);
    mp_write_bool(&w, true);
    mp_write_bool(&w, false);
    cr_assert_eq(w.len, 3);
    cr_assert_eq(buf[0], 0xc0);
    cr_assert_eq(buf[1], 0xc3);
    cr_assert_eq(buf[2], 0xc2);

    mp_reader r;
    mp_reader_init(&r, buf, w.len);
    bool b = false;
    cr_assert_eq(mp_read_bool(&r, &b), -1, "nil read as bool");
    cr_assert_eq(mp_peek(&r), MP_NIL);
    cr_assert_eq(mp_read_nil(&r), 0);
    cr_assert_eq(mp_peek(&r), MP_BOOL);
    cr_assert_eq(mp_read_nil(&r), -1, "bool read as nil");
    cr_assert_eq(mp_read_bool(&r, &b), 0);
    cr_assert(b);
    cr_assert_eq(mp_read_bool(&r, &b), 0);
    cr_assert_not(b);
    cr_assert_eq(mp_peek(&r), MP_NONE);
    cr_assert_eq(mp_read_nil(&r), -1);
    cr_assert_eq(mp_read_bool(&r, &b), -1);
}

Test(mp_scalar, peek_names_every_first_byte)
{
    for (int b = 0; b < 256; b++) {
        mp_type want;
        if (b <= 0x7f || (b >= 0xcc && b <= 0xcf))
            want = MP_UINT;
        else if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3))
            want = MP_INT;
        else if (b <= 0x8f || b == 0xde || b == 0xdf)
            want = MP_MAP;
        else if (b <= 0x9f || b == 0xdc || b == 0xdd)
            want = MP_ARRAY;
        else if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb))
            want = MP_STR;
        else if (b == 0xc0)
            want = MP_NIL;
        else if (b == 0xc1)
            want = MP_NONE;
        else if (b == 0xc2 || b == 0xc3)
            want = MP_BOOL;
        else if (b >= 0xc4 && b <= 0xc6)
            want = MP_BIN;
        else if (b == 0xca || b == 0xcb)
            want = MP_FLOAT;
        else
            want = MP_EXT; /* 0xc7..0xc9, 0xd4..0xd8 */
        uint8_t byte = (uint8_t)b;
        mp_reader r;
        mp_reader_init(&r, &byte, 1);
        cr_assert_eq(mp_peek(&r), want, "byte %02x", b);
    }
}

Test(mp_scalar, floats_and_ext_are_skipped)
{
    static const uint8_t values[] = {
        0xca, 0x3f, 0x80, 0x00, 0x00,                  /* float32 1.0 */
        0xcb, 0x3f, 0xf0, 0,    0,    0,    0,  0,  0, /* float64 1.0 */
        0xd4, 0x01, 0xaa,                              /* fixext 1 */
        0xd8, 0x01, 1,    2,    3,    4,    5,  6,  7,
        8,    9,    10,   11,   12,   13,   14, 15, 16, /* fixext 16 */
        0xc7, 0x02, 0x05, 0xaa, 0xbb,                   /* ext 8 of 2 bytes */
        0xc8, 0x00, 0x01, 0x05, 0xaa,                   /* ext 16 of 1 byte */
        0xc9, 0x00, 0x00, 0x00, 0x00, 0x05,             /* ext 32 of 0 bytes */
    };
    static const mp_type kinds[] = {MP_FLOAT, MP_FLOAT, MP_EXT, MP_EXT, MP_EXT, MP_EXT, MP_EXT};
    uint8_t *copy = exact_copy(values, sizeof values);
    mp_reader r;
    mp_reader_init(&r, copy, sizeof values);
    for (size_t i = 0; i < COUNT(kinds); i++) {
        cr_assert_eq(mp_peek(&r), kinds[i], "value %zu", i);
        cr_assert_eq(mp_skip(&r, 0), 0, "value %zu", i);
    }
    cr_assert_eq(mp_remaining(&r), 0);
    exact_free(copy, sizeof values);
}

typedef struct {
    size_t len;
    size_t head;
    uint8_t first;
} bytes_case;

Test(mp_bytes, str_lengths_round_trip_in_shortest_form)
{
    static const bytes_case cases[] = {
        {0, 1, 0xa0},   {31, 1, 0xbf},    {32, 2, 0xd9},    {255, 2, 0xd9},
        {256, 3, 0xda}, {65535, 3, 0xda}, {65536, 5, 0xdb},
    };
    char *text = malloc(65536);
    uint8_t *buf = malloc(65536 + 16);
    cr_assert(text && buf);
    for (size_t i = 0; i < 65536; i++)
        text[i] = (char)('a' + i % 26);
    for (size_t i = 0; i < COUNT(cases); i++) {
        const bytes_case *c = &cases[i];
        mp_writer w;
        mp_writer_init(&w, buf, 65536 + 16);
        mp_write_str(&w, text, c->len);
        cr_assert_eq(w.len, c->head + c->len, "str %zu: %zu bytes", c->len, w.len);
        cr_assert_eq(buf[0], c->first, "str %zu: first byte %02x", c->len, buf[0]);

        mp_reader r;
        mp_reader_init(&r, buf, w.len);
        cr_assert_eq(mp_peek(&r), MP_STR);
        const uint8_t *bin;
        uint32_t len = 0;
        cr_assert_eq(mp_read_bin(&r, &bin, &len), -1, "str read as bin");
        const char *s = NULL;
        cr_assert_eq(mp_read_str(&r, &s, &len), 0);
        cr_assert_eq(len, c->len);
        cr_assert_eq(s, (const char *)buf + c->head, "str must point into the buffer");
        cr_assert_eq(memcmp(s, text, len), 0);
        cr_assert_eq(mp_remaining(&r), 0);

        /* One byte short: no read, no move. */
        uint8_t *cut = exact_copy(buf, w.len - 1);
        mp_reader_init(&r, cut, w.len - 1);
        cr_assert_eq(mp_read_str(&r, &s, &len), -1);
        cr_assert_eq(mp_skip(&r, 0), -1);
        cr_assert_eq(r.p, cut);
        exact_free(cut, w.len - 1);
    }
    free(buf);
    free(text);
}

Test(mp_bytes, bin_lengths_round_trip_in_shortest_form)
{
    static const bytes_case cases[] = {
        {0, 2, 0xc4},   {1, 2, 0xc4},     {255, 2, 0xc4},
        {256, 3, 0xc5}, {65535, 3, 0xc5}, {65536, 5, 0xc6},
    };
    uint8_t *data = malloc(65536);
    uint8_t *buf = malloc(65536 + 16);
    cr_assert(data && buf);
    for (size_t i = 0; i < 65536; i++)
        data[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < COUNT(cases); i++) {
        const bytes_case *c = &cases[i];
        mp_writer w;
        mp_writer_init(&w, buf, 65536 + 16);
        mp_write_bin(&w, data, c->len);
        cr_assert_eq(w.len, c->head + c->len, "bin %zu: %zu bytes", c->len, w.len);
        cr_assert_eq(buf[0], c->first);

        mp_reader r;
        mp_reader_init(&r, buf, w.len);
        cr_assert_eq(mp_peek(&r), MP_BIN);
        const char *s;
        uint32_t len = 0;
        cr_assert_eq(mp_read_str(&r, &s, &len), -1, "bin read as str");
        const uint8_t *out = NULL;
        cr_assert_eq(mp_read_bin(&r, &out, &len), 0);
        cr_assert_eq(len, c->len);
        cr_assert_eq(out, buf + c->head);
        cr_assert_eq(memcmp(out, data, len), 0);

        uint8_t *cut = exact_copy(buf, w.len - 1);
        mp_reader_init(&r, cut, w.len - 1);
        cr_assert_eq(mp_read_bin(&r, &out, &len), -1);
        cr_assert_eq(mp_skip(&r, 0), -1);
        cr_assert_eq(r.p, cut);
        exact_free(cut, w.len - 1);
    }
    free(buf);
    free(data);
}

Test(mp_bytes, str_eq)
{
    uint8_t buf[32];
    mp_writer w;
    mp_writer_init(&w, buf, sizeof buf);
    mp_write_cstr(&w, "op");
    mp_write_cstr(&w, "op");
    mp_write_cstr(&w, "o");
    mp_write_uint(&w, 1);
    mp_reader r;
    mp_reader_init(&r, buf, w.len);
    cr_assert_eq(mp_read_str_eq(&r, "op"), 1);
    cr_assert_eq(mp_read_str_eq(&r, "opx"), 0);
    cr_assert_eq(mp_read_str_eq(&r, "op"), 0);
    const uint8_t *before = r.p;
    cr_assert_eq(mp_read_str_eq(&r, "op"), -1);
    cr_assert_eq(r.p, before);
}

Test(mp_container, header_sizes_at_boundaries)
{
    static const struct {
        uint32_t n;
        size_t size;
        uint8_t array_first;
        uint8_t map_first;
    } cases[] = {
        {0, 1, 0x90, 0x80},     {15, 1, 0x9f, 0x8f},    {16, 3, 0xdc, 0xde},
        {65535, 3, 0xdc, 0xde}, {65536, 5, 0xdd, 0xdf}, {UINT32_MAX, 5, 0xdd, 0xdf},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        uint8_t buf[16];
        mp_writer w;
        mp_writer_init(&w, buf, sizeof buf);
        mp_write_array(&w, cases[i].n);
        cr_assert_eq(w.len, cases[i].size);
        cr_assert_eq(buf[0], cases[i].array_first);
        mp_write_map(&w, cases[i].n);
        cr_assert_eq(w.len, 2 * cases[i].size);
        cr_assert_eq(buf[cases[i].size], cases[i].map_first);

        mp_reader r;
        mp_reader_init(&r, buf, w.len);
        uint32_t n = 0;
        cr_assert_eq(mp_peek(&r), MP_ARRAY);
        cr_assert_eq(mp_read_map(&r, &n), -1, "array read as map");
        cr_assert_eq(mp_read_array(&r, &n), 0);
        cr_assert_eq(n, cases[i].n);
        cr_assert_eq(mp_peek(&r), MP_MAP);
        cr_assert_eq(mp_read_array(&r, &n), -1, "map read as array");
        cr_assert_eq(mp_read_map(&r, &n), 0);
        cr_assert_eq(n, cases[i].n);
        cr_assert_eq(mp_remaining(&r), 0);

        /* A header cut short fails and stays put. */
        for (size_t cut = 0; cut < cases[i].size; cut++) {
            uint8_t *copy = exact_copy(buf, cut);
            mp_reader_init(&r, copy, cut);
            cr_assert_eq(mp_read_array(&r, &n), -1);
            cr_assert_eq(r.p, copy);
            exact_free(copy, cut);
        }
    }
}

/* ---- the writer's buffer ---------------------------------------------------------------- */

Test(mp_writer, counts_past_cap_and_never_writes_there)
{
    mp_writer w;
    mp_writer_init(&w, NULL, 0);
    size_t full = write_request(NULL, 0);
    cr_assert_gt(full, 0);

    /* Sizing pass: nothing written, the length counted. */
    mp_write_map(&w, 1);
    mp_write_cstr(&w, "amount");
    mp_write_uint(&w, 100000000);
    cr_assert(w.overflow);
    cr_assert_eq(w.len, 1 + 7 + 5);

    /* Every cap short of the full length overflows and leaves the guard bytes alone. */
    uint8_t reference[128];
    cr_assert_eq(write_request(reference, sizeof reference), full);
    for (size_t cap = 0; cap <= full; cap++) {
        uint8_t buf[160];
        memset(buf, 0x5a, sizeof buf);
        mp_writer_init(&w, buf, cap);
        mp_write_map(&w, 3);
        mp_write_cstr(&w, "id");
        mp_write_uint(&w, 7);
        mp_write_cstr(&w, "op");
        mp_write_cstr(&w, "allocation.propose");
        mp_write_cstr(&w, "args");
        mp_write_map(&w, 5);
        mp_write_cstr(&w, "id");
        mp_write_cstr(&w, "a1");
        mp_write_cstr(&w, "frame");
        mp_write_cstr(&w, "f1");
        mp_write_cstr(&w, "unit");
        mp_write_cstr(&w, "SON");
        mp_write_cstr(&w, "amount");
        mp_write_uint(&w, 100000000);
        mp_write_cstr(&w, "purpose");
        mp_write_raw(&w, "\xa1x", 2);
        cr_assert_eq(w.len, full, "cap %zu", cap);
        cr_assert_eq(w.overflow, cap < full, "cap %zu", cap);
        for (size_t i = cap; i < sizeof buf; i++)
            cr_assert_eq(buf[i], 0x5a, "cap %zu: byte %zu written", cap, i);
        if (cap == full)
            cr_assert_arr_eq(buf, reference, full);
    }
}

/* ---- mp_skip ---------------------------------------------------------------------------- */

Test(mp_skip, whole_request_and_depth_bound)
{
    uint8_t buf[128];
    size_t len = write_request(buf, sizeof buf);
    mp_reader r;
    mp_reader_init(&r, buf, len);
    cr_assert_eq(mp_skip(&r, 1), -1, "the request nests two levels");
    cr_assert_eq(r.p, buf);
    cr_assert_eq(mp_skip(&r, 2), 0);
    cr_assert_eq(mp_remaining(&r), 0);

    /* [[[]]] is three levels; an empty container counts as a level. */
    static const uint8_t nested[] = {0x91, 0x91, 0x90, 0x01};
    mp_reader_init(&r, nested, 3);
    cr_assert_eq(mp_skip(&r, 2), -1);
    cr_assert_eq(mp_skip(&r, 3), 0);
    cr_assert_eq(mp_remaining(&r), 0);
    mp_reader_init(&r, nested + 3, 1);
    cr_assert_eq(mp_skip(&r, 0), 0, "a scalar needs no depth");
}

Test(mp_skip, every_truncation_fails_in_place)
{
    uint8_t buf[128];
    size_t len = write_request(buf, sizeof buf);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = exact_copy(buf, cut);
        mp_reader r;
        mp_reader_init(&r, copy, cut);
        cr_assert_eq(mp_skip(&r, BUDGET_DEPTH_MAX), -1, "prefix of %zu bytes", cut);
        cr_assert_eq(r.p, copy);
        exact_free(copy, cut);
    }
}

Test(mp_skip, hostile_counts_are_refused_at_the_header)
{
    static const uint8_t array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t array16[] = {0xdc, 0xff, 0xff};
    static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t str32[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'x'};
    static const uint8_t ext32[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t map_one_short[] = {0x82, 0xa0, 0x01, 0xa0}; /* 4 values, 3 bytes */
    const struct {
        const uint8_t *data;
        size_t size;
    } cases[] = {
        {array32, sizeof array32}, {array16, sizeof array16}, {map32, sizeof map32},
        {str32, sizeof str32},     {ext32, sizeof ext32},     {map_one_short, sizeof map_one_short},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        uint8_t *copy = exact_copy(cases[i].data, cases[i].size);
        mp_reader r;
        mp_reader_init(&r, copy, cases[i].size);
        cr_assert_eq(mp_skip(&r, BUDGET_DEPTH_MAX), -1, "case %zu", i);
        cr_assert_eq(r.p, copy);
        exact_free(copy, cases[i].size);
    }
}

Test(mp_skip, reserved_byte)
{
    static const uint8_t data[] = {0x91, 0xc1};
    mp_reader r;
    mp_reader_init(&r, data, sizeof data);
    cr_assert_eq(mp_peek(&r), MP_ARRAY);
    cr_assert_eq(mp_skip(&r, 4), -1);
    cr_assert_eq(r.p, data);
}

/* ---- agreement with msgpack-c ----------------------------------------------------------- */

static void pack_reference_values(msgpack_packer *pk, const char *text)
{
    for (size_t i = 0; i < COUNT(uint_cases); i++)
        msgpack_pack_uint64(pk, uint_cases[i].value);
    for (size_t i = 0; i < COUNT(int_cases); i++)
        msgpack_pack_int64(pk, int_cases[i].value);
    static const size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536};
    for (size_t i = 0; i < COUNT(lens); i++) {
        msgpack_pack_str(pk, lens[i]);
        msgpack_pack_str_body(pk, text, lens[i]);
        msgpack_pack_bin(pk, lens[i]);
        msgpack_pack_bin_body(pk, text, lens[i]);
    }
    static const uint32_t counts[] = {0, 15, 16, 65535, 65536};
    for (size_t i = 0; i < COUNT(counts); i++) {
        msgpack_pack_array(pk, counts[i]);
        for (uint32_t k = 0; k < counts[i]; k++)
            msgpack_pack_nil(pk);
        msgpack_pack_map(pk, counts[i]);
        for (uint32_t k = 0; k < counts[i]; k++) {
            msgpack_pack_uint32(pk, k);
            msgpack_pack_true(pk);
        }
    }
}

static void write_reference_values(mp_writer *w, const char *text)
{
    for (size_t i = 0; i < COUNT(uint_cases); i++)
        mp_write_uint(w, uint_cases[i].value);
    for (size_t i = 0; i < COUNT(int_cases); i++)
        mp_write_int(w, int_cases[i].value);
    static const size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536};
    for (size_t i = 0; i < COUNT(lens); i++) {
        mp_write_str(w, text, lens[i]);
        mp_write_bin(w, text, lens[i]);
    }
    static const uint32_t counts[] = {0, 15, 16, 65535, 65536};
    for (size_t i = 0; i < COUNT(counts); i++) {
        mp_write_array(w, counts[i]);
        for (uint32_t k = 0; k < counts[i]; k++)
            mp_write_nil(w);
        mp_write_map(w, counts[i]);
        for (uint32_t k = 0; k < counts[i]; k++) {
            mp_write_uint(w, k);
            mp_write_bool(w, true);
        }
    }
}

static char *reference_text(void)
{
    char *text = malloc(65536);
    cr_assert_not_null(text);
    for (size_t i = 0; i < 65536; i++)
        text[i] = (char)(' ' + i % 90);
    return text;
}

Test(msgpack_c, same_bytes_as_msgpack_c_packer)
{
    char *text = reference_text();
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    pack_reference_values(&pk, text);

    mp_writer w;
    mp_writer_init(&w, NULL, 0);
    write_reference_values(&w, text);
    cr_assert_eq(w.len, sbuf.size);
    size_t len = w.len;
    mp_writer_init(&w, malloc(len), len);
    write_reference_values(&w, text);
    cr_assert_not(w.overflow);
    cr_assert_eq(memcmp(w.buf, sbuf.data, len), 0, "both write the canonical form");
    free(w.buf);
    msgpack_sbuffer_destroy(&sbuf);
    free(text);
}

Test(msgpack_c, mp_reader_decodes_msgpack_c_output)
{
    char *text = reference_text();
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    pack_reference_values(&pk, text);

    mp_reader r;
    mp_reader_init(&r, sbuf.data, sbuf.size);
    for (size_t i = 0; i < COUNT(uint_cases); i++) {
        uint64_t u;
        cr_assert_eq(mp_read_uint(&r, &u), 0);
        cr_assert_eq(u, uint_cases[i].value);
    }
    for (size_t i = 0; i < COUNT(int_cases); i++) {
        int64_t s;
        cr_assert_eq(mp_read_int(&r, &s), 0);
        cr_assert_eq(s, int_cases[i].value);
    }
    static const size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536};
    for (size_t i = 0; i < COUNT(lens); i++) {
        const char *s;
        const uint8_t *b;
        uint32_t len;
        cr_assert_eq(mp_read_str(&r, &s, &len), 0);
        cr_assert_eq(len, lens[i]);
        cr_assert_eq(memcmp(s, text, len), 0);
        cr_assert_eq(mp_read_bin(&r, &b, &len), 0);
        cr_assert_eq(len, lens[i]);
        cr_assert_eq(memcmp(b, text, len), 0);
    }
    static const uint32_t counts[] = {0, 15, 16, 65535, 65536};
    for (size_t i = 0; i < COUNT(counts); i++) {
        uint32_t n;
        cr_assert_eq(mp_read_array(&r, &n), 0);
        cr_assert_eq(n, counts[i]);
        for (uint32_t k = 0; k < n; k++)
            cr_assert_eq(mp_read_nil(&r), 0);
        cr_assert_eq(mp_read_map(&r, &n), 0);
        cr_assert_eq(n, counts[i]);
        for (uint32_t k = 0; k < n; k++) {
            uint64_t key;
            bool v;
            cr_assert_eq(mp_read_uint(&r, &key), 0);
            cr_assert_eq(key, k);
            cr_assert_eq(mp_read_bool(&r, &v), 0);
            cr_assert(v);
        }
    }
    cr_assert_eq(mp_remaining(&r), 0);
    msgpack_sbuffer_destroy(&sbuf);
    free(text);
}

Test(msgpack_c, msgpack_c_decodes_mp_writer_output)
{
    char *text = reference_text();
    mp_writer w;
    mp_writer_init(&w, NULL, 0);
    write_reference_values(&w, text);
    size_t len = w.len;
    mp_writer_init(&w, malloc(len), len);
    write_reference_values(&w, text);

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    for (size_t i = 0; i < COUNT(uint_cases); i++) {
        cr_assert_eq(msgpack_unpack_next(&up, (const char *)w.buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(up.data.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        cr_assert_eq(up.data.via.u64, uint_cases[i].value);
    }
    for (size_t i = 0; i < COUNT(int_cases); i++) {
        cr_assert_eq(msgpack_unpack_next(&up, (const char *)w.buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(up.data.type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
        cr_assert_eq(up.data.via.i64, int_cases[i].value);
    }
    static const size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536};
    for (size_t i = 0; i < COUNT(lens); i++) {
        cr_assert_eq(msgpack_unpack_next(&up, (const char *)w.buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(up.data.type, MSGPACK_OBJECT_STR);
        cr_assert_eq(up.data.via.str.size, lens[i]);
        if (lens[i] > 0) /* msgpack-c gives NULL for an empty str or bin */
            cr_assert_eq(memcmp(up.data.via.str.ptr, text, lens[i]), 0);
        cr_assert_eq(msgpack_unpack_next(&up, (const char *)w.buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(up.data.type, MSGPACK_OBJECT_BIN);
        cr_assert_eq(up.data.via.bin.size, lens[i]);
        if (lens[i] > 0) /* msgpack-c gives NULL for an empty str or bin */
            cr_assert_eq(memcmp(up.data.via.bin.ptr, text, lens[i]), 0);
    }
    static const uint32_t counts[] = {0, 15, 16, 65535, 65536};
    for (size_t i = 0; i < COUNT(counts); i++) {
        cr_assert_eq(msgpack_unpack_next(&up, (const char *)w.buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(up.data.type, MSGPACK_OBJECT_ARRAY);
        cr_assert_eq(up.data.via.array.size, counts[i]);
        cr_assert_eq(msgpack_unpack_next(&up, (const char *)w.buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(up.data.type, MSGPACK_OBJECT_MAP);
        cr_assert_eq(up.data.via.map.size, counts[i]);
        for (uint32_t k = 0; k < counts[i]; k++) {
            const msgpack_object_kv *kv = &up.data.via.map.ptr[k];
            cr_assert_eq(kv->key.via.u64, k);
            cr_assert_eq(kv->val.type, MSGPACK_OBJECT_BOOLEAN);
        }
    }
    cr_assert_eq(off, len);
    msgpack_unpacked_destroy(&up);
    free(w.buf);
    free(text);
}

/* ---- the validator ---------------------------------------------------------------------- */

Test(validate, accepts_a_request)
{
    uint8_t buf[128];
    size_t len = write_request(buf, sizeof buf);
    char why[128] = "";
    cr_assert_eq(validate_copy(buf, len, why, sizeof why), 0, "%s", why);
}

Test(validate, every_truncation_is_bad_request)
{
    uint8_t buf[128];
    size_t len = write_request(buf, sizeof buf);
    for (size_t cut = 0; cut < len; cut++) {
        char why[160] = "";
        cr_assert_eq(validate_copy(buf, cut, why, sizeof why), BUDGET_EBAD_REQUEST,
                     "prefix of %zu bytes", cut);
        cr_assert_neq(why[0], '\0', "prefix of %zu bytes has no explanation", cut);
    }
}

Test(validate, hostile_container_headers_cost_nothing)
{
    static const uint8_t array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t array16[] = {0xdc, 0xff, 0xff};
    static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    char why[160];

    cr_assert_eq(validate_copy(array32, sizeof array32, why, sizeof why), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(why, "array at byte 0 claims 4294967295 elements but 0 bytes remain");
    cr_assert_eq(validate_copy(array16, sizeof array16, why, sizeof why), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(why, "array at byte 0 claims 65535 elements but 0 bytes remain");
    cr_assert_eq(validate_copy(map32, sizeof map32, why, sizeof why), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(why, "map at byte 0 claims 4294967295 pairs but 0 bytes remain");

    /* A nested map16 claiming 3 pairs with 5 bytes left (6 needed): refused at its header. */
    static const uint8_t one_over[] = {0x81, 0xa1, 'k',  0xde, 0x00, 0x03,
                                       0xa0, 0x00, 0xa0, 0x00, 0x00};
    cr_assert_eq(validate_copy(one_over, sizeof one_over, why, sizeof why), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(why, "map at byte 3 claims 3 pairs but 5 bytes remain");
    /* The same claim with 7 bytes left passes the header and fails later, on the last key. */
    static const uint8_t fits[] = {0x81, 0xa1, 'k', 0xde, 0x00, 0x03, 0xa0,
                                   0x00, 0xa1, 'b', 0x00, 0x00, 0x00};
    cr_assert_eq(validate_copy(fits, sizeof fits, why, sizeof why), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(why, "map key at byte 11 is of type nil, bool or number, not str");
    /* And with a str key there (each key another), it is a valid frame. */
    static const uint8_t valid[] = {0x81, 0xa1, 'k', 0xde, 0x00, 0x03, 0xa0,
                                    0x00, 0xa1, 'b', 0x00, 0xa1, 'c',  0x00};
    cr_assert_eq(validate_copy(valid, sizeof valid, why, sizeof why), 0, "%s", why);
}

/* A frame nesting `levels` containers: {"a": [[...{}...]]}, alternating arrays and maps. */
static size_t write_nested(uint8_t *buf, size_t cap, int levels)
{
    mp_writer w;
    mp_writer_init(&w, buf, cap);
    mp_write_map(&w, 1);
    mp_write_cstr(&w, "a");
    for (int level = 2; level < levels; level++) {
        if (level % 2 == 0) {
            mp_write_array(&w, 1);
        } else {
            mp_write_map(&w, 1);
            mp_write_cstr(&w, "b");
        }
    }
    if (levels >= 2)
        mp_write_map(&w, 0);
    else
        mp_write_nil(&w);
    cr_assert_not(w.overflow);
    return w.len;
}

Test(validate, nesting_limit)
{
    uint8_t buf[128];
    char why[160];
    size_t len = write_nested(buf, sizeof buf, BUDGET_DEPTH_MAX);
    cr_assert_eq(validate_copy(buf, len, why, sizeof why), 0, "%s", why);
    mp_reader r;
    mp_reader_init(&r, buf, len);
    cr_assert_eq(mp_skip(&r, BUDGET_DEPTH_MAX - 1), -1);
    cr_assert_eq(mp_skip(&r, BUDGET_DEPTH_MAX), 0);
    cr_assert_eq(mp_remaining(&r), 0);

    len = write_nested(buf, sizeof buf, BUDGET_DEPTH_MAX + 1);
    cr_assert_eq(validate_copy(buf, len, why, sizeof why), BUDGET_ETOO_LARGE);
    cr_assert(strstr(why, "nests deeper") != NULL, "%s", why);
}

Test(validate, string_and_bin_limits)
{
    for (int is_str = 0; is_str < 2; is_str++) {
        size_t size;
        uint8_t *body = map_with_bytes(is_str, BUDGET_STRING_BYTES_MAX, &size);
        cr_assert_eq(validate(body, size), 0, "%s of %u", is_str ? "str" : "bin",
                     BUDGET_STRING_BYTES_MAX);
        free(body);
        body = map_with_bytes(is_str, BUDGET_STRING_BYTES_MAX + 1, &size);
        cr_assert_eq(validate(body, size), BUDGET_ETOO_LARGE);
        free(body);
    }
    /* A key is a str too. */
    char key[BUDGET_STRING_BYTES_MAX + 1];
    memset(key, 'k', sizeof key);
    uint8_t buf[BUDGET_STRING_BYTES_MAX + 16];
    mp_writer w;
    mp_writer_init(&w, buf, sizeof buf);
    mp_write_map(&w, 1);
    mp_write_str(&w, key, sizeof key);
    mp_write_nil(&w);
    cr_assert_eq(validate(buf, w.len), BUDGET_ETOO_LARGE);
}

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t size;
} bad_case;

Test(validate, shapes_that_are_not_a_request)
{
    static const uint8_t array[] = {0x91, 0x01};
    static const uint8_t integer[] = {0x07};
    static const uint8_t str[] = {0xa2, 'i', 'd'};
    static const uint8_t nil[] = {0xc0};
    static const uint8_t int_key[] = {0x81, 0x01, 0x01};
    static const uint8_t nil_key[] = {0x81, 0xc0, 0x01};
    static const uint8_t map_key[] = {0x81, 0x80, 0x01};
    static const uint8_t inner_int_key[] = {0x81, 0xa1, 'a', 0x81, 0x05, 0x01};
    static const uint8_t fixext[] = {0x81, 0xa1, 'a', 0xd4, 0x01, 0x00};
    static const uint8_t ext8[] = {0x81, 0xa1, 'a', 0xc7, 0x01, 0x01, 0x00};
    static const uint8_t ext_key[] = {0x81, 0xd4, 0x01, 0x00, 0x01};
    static const uint8_t reserved[] = {0x81, 0xa1, 'a', 0xc1};
    static const uint8_t reserved_in_array[] = {0x81, 0xa1, 'a', 0x92, 0x01, 0xc1};
    static const uint8_t trailing[] = {0x81, 0xa1, 'a', 0x01, 0x00};
    static const uint8_t two_maps[] = {0x80, 0x80};
    static const uint8_t str_overrun[] = {0x81, 0xa1, 'a', 0xd9, 0x05, 'x'};
    static const bad_case cases[] = {
        {"array", array, sizeof array},
        {"int", integer, sizeof integer},
        {"str", str, sizeof str},
        {"nil", nil, sizeof nil},
        {"int key", int_key, sizeof int_key},
        {"nil key", nil_key, sizeof nil_key},
        {"map key", map_key, sizeof map_key},
        {"inner int key", inner_int_key, sizeof inner_int_key},
        {"fixext", fixext, sizeof fixext},
        {"ext8", ext8, sizeof ext8},
        {"ext key", ext_key, sizeof ext_key},
        {"0xc1", reserved, sizeof reserved},
        {"0xc1 in array", reserved_in_array, sizeof reserved_in_array},
        {"trailing byte", trailing, sizeof trailing},
        {"two maps", two_maps, sizeof two_maps},
        {"str past the end", str_overrun, sizeof str_overrun},
        {"empty", str, 0},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        char why[160] = "";
        cr_assert_eq(validate_copy(cases[i].data, cases[i].size, why, sizeof why),
                     BUDGET_EBAD_REQUEST, "%s", cases[i].name);
        cr_assert(strstr(why, "byte") != NULL || cases[i].size == 0, "%s: %s", cases[i].name, why);
    }
    /* The empty map is a well-formed (if useless) frame; the request decoder judges it. */
    static const uint8_t empty_map[] = {0x80};
    cr_assert_eq(validate(empty_map, sizeof empty_map), 0);
}

Test(validate, explanation_is_bounded_and_optional)
{
    static const uint8_t array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    char why[8];
    memset(why, 'z', sizeof why);
    cr_assert_eq(budget_validate_frame(array32, sizeof array32, why, 5), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(why, "arra");
    cr_assert_eq(why[5], 'z');
    cr_assert_eq(budget_validate_frame(array32, sizeof array32, NULL, 0), BUDGET_EBAD_REQUEST);
    cr_assert_eq(budget_validate_frame(array32, sizeof array32, why, 0), BUDGET_EBAD_REQUEST);
}

/* ---- duplicate keys and map sizes -------------------------------------------------------- */

/* Validates `body`, expecting `rc`; when `key` is given, the explanation must quote it. */
static void expect_refused(const void *body, size_t size, int rc, const char *key, const char *what)
{
    char why[160] = "";
    cr_assert_eq(validate_copy(body, size, why, sizeof why), rc, "%s: %s", what, why);
    if (key != NULL) {
        char quoted[80];
        snprintf(quoted, sizeof quoted, "\"%s\"", key);
        cr_assert(strstr(why, quoted) != NULL && strstr(why, "twice") != NULL, "%s: %s", what, why);
    }
}

Test(validate, a_key_twice_in_any_map_is_refused)
{
    /* The envelope: the op the write check reads and the op dispatch reads must be one. */
    static const uint8_t top[] = {0x83, 0xa2, 'i', 'd', 0x02, 0xa2, 'o',  'p', 0xa7, 'a',
                                  'p',  'p',  'r', 'o', 'v',  'e',  0xa2, 'o', 'p',  0xa8,
                                  'b',  'a',  'l', 'a', 'n',  'c',  'e',  's'};
    /* args: {"id": 1, "op": "x", "args": {"amount": 1, "amount": 2}} */
    static const uint8_t args[] = {0x83, 0xa2, 'i',  'd', 0x01, 0xa2, 'o', 'p', 0xa1, 'x', 0xa4,
                                   'a',  'r',  'g',  's', 0x82, 0xa6, 'a', 'm', 'o',  'u', 'n',
                                   't',  0x01, 0xa6, 'a', 'm',  'o',  'u', 'n', 't',  0x02};
    /* nested maps, in a map and in an array: {"a": {"b": {"k": 1, "k": 2}}}, {"a": [{"k": 1, "k":
     * 2}]} */
    static const uint8_t nested[] = {0x81, 0xa1, 'a', 0x81, 0xa1, 'b', 0x82,
                                     0xa1, 'k',  1,   0xa1, 'k',  2};
    static const uint8_t in_array[] = {0x81, 0xa1, 'a', 0x91, 0x82, 0xa1, 'k', 1, 0xa1, 'k', 2};
    /* The same key in another encoding (str 8) is the same key. */
    static const uint8_t str8[] = {0x82, 0xa2, 'o', 'p', 0x01, 0xd9, 0x02, 'o', 'p', 0x02};
    /* The empty key, and a key of control bytes, which the explanation escapes. */
    static const uint8_t empty[] = {0x83, 0xa0, 1, 0xa1, 'x', 2, 0xa0, 3};
    static const uint8_t control[] = {0x82, 0xa2, '\n', 0xff, 1, 0xa2, '\n', 0xff, 2};

    expect_refused(top, sizeof top, BUDGET_EBAD_REQUEST, "op", "the envelope");
    expect_refused(args, sizeof args, BUDGET_EBAD_REQUEST, "amount", "args");
    expect_refused(nested, sizeof nested, BUDGET_EBAD_REQUEST, "k", "a nested map");
    expect_refused(in_array, sizeof in_array, BUDGET_EBAD_REQUEST, "k", "a map in an array");
    expect_refused(str8, sizeof str8, BUDGET_EBAD_REQUEST, "op", "op as fixstr and str 8");
    expect_refused(empty, sizeof empty, BUDGET_EBAD_REQUEST, "", "the empty key");
    expect_refused(control, sizeof control, BUDGET_EBAD_REQUEST, "\\n\\xff", "control bytes");

    char why[160];
    cr_assert_eq(validate_copy(top, sizeof top, why, sizeof why), BUDGET_EBAD_REQUEST);
    cr_assert_str_eq(why, "map key \"op\" at byte 16 appears twice in its map; every key must be "
                          "given once");
}

Test(validate, the_same_key_in_other_maps_is_not_twice)
{
    /* {"k": {"k": 1}, "a": {"k": 2}, "b": [{"k": 3}, {"k": 4}]} */
    static const uint8_t ok[] = {0x83, 0xa1, 'k',  0x81, 0xa1, 'k',  1,   0xa1,
                                 'a',  0x81, 0xa1, 'k',  2,    0xa1, 'b', 0x92,
                                 0x81, 0xa1, 'k',  3,    0x81, 0xa1, 'k', 4};
    /* Keys that share a prefix or a length are other keys: "a", "ab", "b", "". */
    static const uint8_t close[] = {0x84, 0xa1, 'a', 1, 0xa2, 'a', 'b', 2, 0xa1, 'b', 3, 0xa0, 4};
    char why[160] = "";
    cr_assert_eq(validate_copy(ok, sizeof ok, why, sizeof why), 0, "%s", why);
    cr_assert_eq(validate_copy(close, sizeof close, why, sizeof why), 0, "%s", why);
}

/* A frame {"m": {k0: 0, k1: 1, ...}} with `pairs` keys, each another. */
static size_t write_wide_map(uint8_t *buf, size_t cap, uint32_t pairs, uint32_t twice_at)
{
    mp_writer w;
    mp_writer_init(&w, buf, cap);
    mp_write_map(&w, 1);
    mp_write_cstr(&w, "m");
    mp_write_map(&w, pairs);
    for (uint32_t i = 0; i < pairs; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%u", i == twice_at ? pairs : pairs - i);
        mp_write_cstr(&w, key);
        mp_write_uint(&w, i);
    }
    cr_assert(!w.overflow);
    return w.len;
}

Test(validate, a_map_holds_at_most_the_pairs_limit)
{
    uint8_t buf[4096];
    char why[160] = "";
    size_t n = write_wide_map(buf, sizeof buf, BUDGET_MAP_PAIRS_MAX, UINT32_MAX);
    cr_assert_eq(validate_copy(buf, n, why, sizeof why), 0, "%s", why);
    n = write_wide_map(buf, sizeof buf, BUDGET_MAP_PAIRS_MAX + 1, UINT32_MAX);
    cr_assert_eq(validate_copy(buf, n, why, sizeof why), BUDGET_ETOO_LARGE);
    cr_assert_str_eq(why, "map at byte 3 has 65 pairs, more than 64");
    /* The last of the limit's keys repeating the first is found too. */
    n = write_wide_map(buf, sizeof buf, BUDGET_MAP_PAIRS_MAX, BUDGET_MAP_PAIRS_MAX - 1);
    cr_assert_eq(validate_copy(buf, n, why, sizeof why), BUDGET_EBAD_REQUEST);
    cr_assert(strstr(why, "\"k64\" at byte") != NULL, "%s", why);
}

/* ---- the envelope, read once --------------------------------------------------------------- */

/* budget_parse_request on an exact heap copy. The copy is kept for the views in `env`: free
 * it with exact_free(*copy, size). */
static int parse_copy(const void *body, size_t size, budget_envelope *env, uint8_t **copy)
{
    char why[160];
    *copy = exact_copy(body, size);
    return budget_parse_request(*copy, size, env, why, sizeof why);
}

Test(envelope, reads_id_op_and_args_once)
{
    uint8_t buf[256], *copy;
    size_t n = write_request(buf, sizeof buf);
    budget_envelope env;
    cr_assert_eq(parse_copy(buf, n, &env, &copy), 0);
    cr_assert_eq(env.id, 7);
    cr_assert_eq(env.op_len, strlen("allocation.propose"));
    cr_assert_eq(memcmp(env.op, "allocation.propose", env.op_len), 0);
    cr_assert_not_null(env.args);
    /* The args view is exactly the args map: one value, nothing after it. */
    mp_reader r;
    mp_reader_init(&r, env.args, env.args_size);
    cr_assert_eq(mp_peek(&r), MP_MAP);
    cr_assert_eq(mp_skip(&r, BUDGET_DEPTH_MAX), 0);
    cr_assert_eq(mp_remaining(&r), 0);
    cr_assert(env.args + env.args_size == copy + n, "args are the frame's last value");
    exact_free(copy, n);

    /* nil args are none */
    static const uint8_t nil_args[] = {0x83, 0xa2, 'i',  'd', 0x05, 0xa2, 'o', 'p',
                                       0xa1, 'x',  0xa4, 'a', 'r',  'g',  's', 0xc0};
    cr_assert_eq(parse_copy(nil_args, sizeof nil_args, &env, &copy), 0);
    cr_assert_eq(env.id, 5);
    cr_assert_null(env.args);
    exact_free(copy, sizeof nil_args);
}

Test(envelope, refusals_keep_the_id_when_it_is_readable)
{
    static const struct {
        const char *name;
        const char *bytes;
        size_t size;
        int rc;
        uint64_t id;
        const char *why;
    } cases[] = {
        {"op twice", "\x83\xa2id\x02\xa2op\xa1x\xa2op\xa1y", 14, BUDGET_EBAD_REQUEST, 2,
         "map key \"op\" at byte 10 appears twice in its map; every key must be given once"},
        {"id twice", "\x83\xa2id\x02\xa2op\xa1x\xa2id\x03", 13, BUDGET_EBAD_REQUEST, 0,
         "map key \"id\" at byte 10 appears twice in its map; every key must be given once"},
        {"args twice",
         "\x84\xa2id\x04\xa2op\xa1x\xa4"
         "args\x80\xa4"
         "args\x80",
         22, BUDGET_EBAD_REQUEST, 4,
         "map key \"args\" at byte 16 appears twice in its map; every key must be given once"},
        {"no id", "\x81\xa2op\xa1x", 6, BUDGET_EBAD_REQUEST, 0, "a request needs a uint id"},
        {"str id",
         "\x82\xa2id\xa1"
         "7\xa2op\xa1x",
         11, BUDGET_EBAD_REQUEST, 0, "a request needs a uint id"},
        {"id 0", "\x82\xa2id\x00\xa2op\xa5hello", 14, BUDGET_EBAD_REQUEST, 0,
         "request ids start at 1; id 0 marks the frame the daemon sends as it closes"},
        {"other key", "\x83\xa2id\x09\xa2op\xa1x\xa1u\x01", 13, BUDGET_EBAD_REQUEST, 9,
         "a request holds only id, op and args"},
        {"int op", "\x82\xa2id\x0a\xa2op\x01", 9, BUDGET_EBAD_REQUEST, 10,
         "a request needs a str op"},
        {"array args",
         "\x83\xa2id\x0b\xa2op\xa1x\xa4"
         "args\x90",
         16, BUDGET_EBAD_REQUEST, 11, "args must be a map"},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        budget_envelope env;
        char why[160] = "";
        uint8_t *copy = exact_copy(cases[i].bytes, cases[i].size);
        int rc = budget_parse_request(copy, cases[i].size, &env, why, sizeof why);
        cr_assert_eq(rc, cases[i].rc, "%s: %d %s", cases[i].name, rc, why);
        cr_assert_eq(env.id, cases[i].id, "%s: id %" PRIu64, cases[i].name, env.id);
        cr_assert_str_eq(why, cases[i].why, "%s: %s", cases[i].name, why);
        cr_assert_null(env.op, "%s: a refused envelope has no op", cases[i].name);
        exact_free(copy, cases[i].size);
    }
}

Test(envelope, every_truncation_is_refused_in_bounds)
{
    uint8_t buf[256];
    size_t n = write_request(buf, sizeof buf);
    for (size_t cut = 0; cut < n; cut++) {
        budget_envelope env;
        uint8_t *copy;
        cr_assert_neq(parse_copy(buf, cut, &env, &copy), 0, "cut at %zu", cut);
        cr_assert(env.id == 0 || env.id == 7, "cut at %zu: id %" PRIu64, cut, env.id);
        exact_free(copy, cut);
    }
}

/* ---- escaping outside text ------------------------------------------------------------------ */

/* budget_escape of `n` bytes (an exact heap copy) into a buffer of `out_size`. */
static size_t escape_copy(char *out, size_t out_size, const char *s, size_t n)
{
    uint8_t *copy = exact_copy(s, n);
    size_t len = budget_escape(out, out_size, copy, n);
    exact_free(copy, n);
    return len;
}

Test(escape, control_characters_and_stray_bytes)
{
    static const struct {
        const char *in;
        size_t size;
        const char *out;
    } cases[] = {
        {"KS", 2, "KS"},
        {"X\nbudgetd error: FAKE", 21, "X\\nbudgetd error: FAKE"},
        {"a\r\tb", 4, "a\\r\\tb"},
        {"back\\slash", 10, "back\\\\slash"},
        {"\x00\x01\x1b[31m\x7f", 8, "\\x00\\x01\\x1b[31m\\x7f"},
        {"\xff\xfe\n", 3, "\\xff\\xfe\\n"},
        {"C1 \xc2\x9b"
         "2J \xc2\x80",
         10, "C1 \\xc2\\x9b2J \\xc2\\x80"},
        {"\xc2\xa0 \xc2\xa7 \xc3\xb6", 8, "\xc2\xa0 \xc2\xa7 \xc3\xb6"}, /* U+00A0 is not C1 */
        {"\xe2\x82\xac \xf0\x9f\x98\x80", 8, "\xe2\x82\xac \xf0\x9f\x98\x80"},
        {"\xc0\xaf", 2, "\\xc0\\xaf"},                   /* overlong '/' */
        {"\xe0\x80\xaf", 3, "\\xe0\\x80\\xaf"},          /* overlong, 3 bytes */
        {"\xed\xa0\x80", 3, "\\xed\\xa0\\x80"},          /* a surrogate */
        {"\xf4\x90\x80\x80", 4, "\\xf4\\x90\\x80\\x80"}, /* past U+10FFFF */
        {"\xf5\x80\x80\x80", 4, "\\xf5\\x80\\x80\\x80"},
        {"\x80", 1, "\\x80"},
        {"", 0, ""},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        char out[128];
        size_t len = escape_copy(out, sizeof out, cases[i].in, cases[i].size);
        cr_assert_str_eq(out, cases[i].out, "case %zu", i);
        cr_assert_eq(len, strlen(cases[i].out), "case %zu", i);
        cr_assert(budget_text_clean(out, len), "case %zu: the rendering is clean", i);
        /* Clean text is kept as it is, but for its backslashes. */
        bool kept = strcmp(cases[i].in, cases[i].out) == 0 && cases[i].size == strlen(cases[i].in);
        cr_assert_eq(budget_text_clean(cases[i].in, cases[i].size),
                     kept || memchr(cases[i].in, '\\', cases[i].size) != NULL, "case %zu", i);
    }
}

/*
 * Text cut at every byte: a multi-byte character cut inside is stray bytes (escaped), a whole
 * one is kept. "aö€😀b" has sequences of 2, 3 and 4 bytes.
 */
Test(escape, every_split_point_of_multibyte_sequences)
{
    static const char text[] = "a\xc3\xb6\xe2\x82\xac\xf0\x9f\x98\x80"
                               "b";
    static const size_t starts[] = {0, 1, 3, 6, 10, 11}; /* where each character begins */
    const size_t n = sizeof text - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        char out[128], want[128];
        size_t w = 0, whole = 0;
        for (size_t k = 0; k + 1 < COUNT(starts) && starts[k + 1] <= cut; k++)
            whole = starts[k + 1];
        memcpy(want, text, whole);
        w = whole;
        for (size_t b = whole; b < cut; b++)
            w += (size_t)snprintf(want + w, sizeof want - w, "\\x%02x", (uint8_t)text[b]);
        want[w] = '\0';
        escape_copy(out, sizeof out, text, cut);
        cr_assert_str_eq(out, want, "cut at %zu", cut);
        cr_assert(budget_text_clean(out, strlen(out)), "cut at %zu", cut);
        cr_assert_eq(budget_text_clean(text, cut), whole == cut, "cut at %zu", cut);
        /* And the split as the input's start: the first bytes are missing. */
        escape_copy(out, sizeof out, text + cut, n - cut);
        cr_assert(budget_text_clean(out, strlen(out)), "from %zu", cut);
    }
}

/* A cap cuts before an escape or a character, never inside one, and says so with "…". */
Test(escape, the_cap_never_splits_and_ends_in_an_ellipsis)
{
    static const char text[] = "a\xc3\xb6\n\xe2\x82\xac\xff\xf0\x9f\x98\x80"
                               "b";
    const size_t n = sizeof text - 1;
    char full[128];
    size_t full_len = escape_copy(full, sizeof full, text, n);
    for (size_t cap = 0; cap <= full_len + 1; cap++) {
        char out[128];
        memset(out, 'z', sizeof out);
        size_t len = escape_copy(out, cap, text, n);
        if (cap == 0) {
            cr_assert_eq(len, 0);
            cr_assert_eq(out[0], 'z', "nothing is written into no room");
            continue;
        }
        cr_assert_lt(len, cap, "cap %zu", cap);
        cr_assert_eq(out[len], '\0', "cap %zu", cap);
        cr_assert_eq(strlen(out), len, "cap %zu", cap);
        cr_assert_eq(out[cap], 'z', "cap %zu: wrote past the buffer", cap);
        cr_assert(budget_text_clean(out, len), "cap %zu: %s", cap, out);
        if (cap > full_len) {
            cr_assert_str_eq(out, full, "cap %zu: it fits whole", cap);
            continue;
        }
        const char *ellipsis = strstr(out, "\xe2\x80\xa6");
        size_t kept = ellipsis ? (size_t)(ellipsis - out) : len;
        if (cap >= 4)
            cr_assert(ellipsis != NULL && ellipsis + 3 == out + len, "cap %zu: %s", cap, out);
        cr_assert_eq(memcmp(out, full, kept), 0, "cap %zu: a prefix of the whole", cap);
        /* The cut falls between two units of the whole rendering. */
        char unit_end[128];
        size_t ends = 0;
        size_t boundaries[64] = {0};
        for (size_t i = 0; i < n;) {
            size_t seq = budget_utf8_sequence(text + i, n - i);
            i += seq == 0 ? 1 : seq;
            boundaries[ends++] = escape_copy(unit_end, sizeof unit_end, text, i);
        }
        bool at_boundary = kept == 0;
        for (size_t b = 0; b < ends; b++)
            at_boundary = at_boundary || boundaries[b] == kept;
        cr_assert(at_boundary, "cap %zu cuts inside a unit: %s", cap, out);
    }
}

/* ---- framing ---------------------------------------------------------------------------- */

Test(frame, every_prefix_needs_more)
{
    uint8_t frame[160];
    size_t len = write_request_frame(frame, sizeof frame);
    uint32_t body = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = exact_copy(frame, cut);
        cr_assert_eq(budget_frame_peek(copy, cut, &body), 1, "prefix of %zu bytes", cut);
        exact_free(copy, cut);
    }
    cr_assert_eq(budget_frame_peek(frame, len, &body), 0);
    cr_assert_eq(body, len - BUDGET_FRAME_HEADER_BYTES);
    /* The next frame's first bytes behind it change nothing. */
    frame[len] = 0x00;
    body = 0;
    cr_assert_eq(budget_frame_peek(frame, len + 1, &body), 0);
    cr_assert_eq(body, len - BUDGET_FRAME_HEADER_BYTES);
    cr_assert_eq(validate(frame + BUDGET_FRAME_HEADER_BYTES, body), 0);
}

Test(frame, header_round_trip)
{
    static const uint32_t sizes[] = {1, 0xff, 0x100, 0x12345, BUDGET_FRAME_BYTES_MAX};
    for (size_t i = 0; i < COUNT(sizes); i++) {
        uint8_t head[4];
        budget_frame_header(head, sizes[i]);
        cr_assert_eq(head[0], (uint8_t)(sizes[i] >> 24));
        cr_assert_eq(head[3], (uint8_t)sizes[i]);
        uint32_t body = 0;
        cr_assert_eq(budget_frame_peek(head, 4, &body), 1, "size %u", sizes[i]);
    }
    uint8_t head[4];
    budget_frame_header(head, 0x01020304);
    cr_assert_eq(head[0], 1);
    cr_assert_eq(head[1], 2);
    cr_assert_eq(head[2], 3);
    cr_assert_eq(head[3], 4);
}

Test(frame, sizes_out_of_bounds_are_too_large)
{
    static const uint32_t bad[] = {0, BUDGET_FRAME_BYTES_MAX + 1, 0xffffffffu, 0x80000000u};
    for (size_t i = 0; i < COUNT(bad); i++) {
        uint8_t head[4];
        budget_frame_header(head, bad[i]);
        uint32_t body = 12345;
        cr_assert_eq(budget_frame_peek(head, 4, &body), BUDGET_ETOO_LARGE, "size %u", bad[i]);
        cr_assert_eq(body, 12345, "body size set on error");
        for (size_t cut = 0; cut < 4; cut++)
            cr_assert_eq(budget_frame_peek(head, cut, &body), 1);
    }
}

Test(frame, largest_frame_needs_more_until_complete)
{
    size_t total = BUDGET_FRAME_HEADER_BYTES + BUDGET_FRAME_BYTES_MAX;
    uint8_t *buf = calloc(1, total);
    cr_assert_not_null(buf);
    budget_frame_header(buf, BUDGET_FRAME_BYTES_MAX);
    uint32_t body = 0;
    for (size_t len = 0; len < total; len++)
        cr_assert_eq(budget_frame_peek(buf, len, &body), 1, "%zu bytes", len);
    cr_assert_eq(budget_frame_peek(buf, total, &body), 0);
    cr_assert_eq(body, BUDGET_FRAME_BYTES_MAX);
    free(buf);
}

/* ---- the socket path -------------------------------------------------------------------- */

#define SUN_PATH_BYTES sizeof(((struct sockaddr_un *)0)->sun_path)

Test(socket_path, resolution_order)
{
    char out[SUN_PATH_BYTES];
    cr_assert_eq(setenv("BUDGETD_SOCKET", "/tmp/env.sock", 1), 0);
    cr_assert_eq(setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1), 0);

    cr_assert_eq(budget_socket_path("/tmp/flag.sock", out, sizeof out), 0);
    cr_assert_str_eq(out, "/tmp/flag.sock");
    cr_assert_eq(budget_socket_path(NULL, out, sizeof out), 0);
    cr_assert_str_eq(out, "/tmp/env.sock");

    cr_assert_eq(unsetenv("BUDGETD_SOCKET"), 0);
    cr_assert_eq(budget_socket_path(NULL, out, sizeof out), 0);
    cr_assert_str_eq(out, "/run/user/1000/budgetd.sock");

    cr_assert_eq(unsetenv("XDG_RUNTIME_DIR"), 0);
    cr_assert_eq(budget_socket_path(NULL, out, sizeof out), 0);
    cr_assert_str_eq(out, "/run/budgetd/budgetd.sock");
    cr_assert_eq(budget_socket_path("/tmp/flag.sock", out, sizeof out), 0);
    cr_assert_str_eq(out, "/tmp/flag.sock");
}

Test(socket_path, empty_settings_count_as_unset)
{
    char out[SUN_PATH_BYTES];
    cr_assert_eq(setenv("BUDGETD_SOCKET", "", 1), 0);
    cr_assert_eq(setenv("XDG_RUNTIME_DIR", "", 1), 0);
    cr_assert_eq(budget_socket_path(NULL, out, sizeof out), 0);
    cr_assert_str_eq(out, "/run/budgetd/budgetd.sock");
}

Test(socket_path, must_fit_sockaddr_un)
{
    char out[2 * SUN_PATH_BYTES];
    char path[2 * SUN_PATH_BYTES];
    cr_assert_eq(unsetenv("BUDGETD_SOCKET"), 0);

    /* The longest path that fits: sun_path minus its NUL. */
    memset(path, 'p', SUN_PATH_BYTES - 1);
    path[0] = '/';
    path[SUN_PATH_BYTES - 1] = '\0';
    cr_assert_eq(budget_socket_path(path, out, sizeof out), 0);
    cr_assert_str_eq(out, path);

    path[SUN_PATH_BYTES - 1] = 'p';
    path[SUN_PATH_BYTES] = '\0';
    cr_assert_eq(budget_socket_path(path, out, sizeof out), BUDGET_ETOO_LARGE);
    cr_assert_eq(setenv("BUDGETD_SOCKET", path, 1), 0);
    cr_assert_eq(budget_socket_path(NULL, out, sizeof out), BUDGET_ETOO_LARGE);

    /* $XDG_RUNTIME_DIR plus "/budgetd.sock" overflowing. */
    cr_assert_eq(unsetenv("BUDGETD_SOCKET"), 0);
    path[SUN_PATH_BYTES - 13] = '\0';
    cr_assert_eq(setenv("XDG_RUNTIME_DIR", path, 1), 0);
    cr_assert_eq(budget_socket_path(NULL, out, sizeof out), BUDGET_ETOO_LARGE);
    path[SUN_PATH_BYTES - 14] = '\0';
    cr_assert_eq(setenv("XDG_RUNTIME_DIR", path, 1), 0);
    cr_assert_eq(budget_socket_path(NULL, out, sizeof out), 0);
    cr_assert_eq(strlen(out), SUN_PATH_BYTES - 1);

    /* A caller's buffer smaller than the path. */
    char small[8];
    cr_assert_eq(budget_socket_path("/tmp/flag.sock", small, sizeof small), BUDGET_ETOO_LARGE);
}

/* ---- random input ----------------------------------------------------------------------- */

static uint64_t next_random(uint64_t *state)
{
    /* xorshift64*: fixed seed, same sequence on every run */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* Bytes leaning towards msgpack headers and small counts, for mutations and noise. */
static uint8_t random_byte(uint64_t *state)
{
    static const uint8_t interesting[] = {
        0x80, 0x81, 0x82, 0x8f, 0x90, 0x91, 0x9f, 0xa0, 0xa1, 0xbf, 0xc0, 0xc1, 0xc2,
        0xc3, 0xc4, 0xc7, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd9,
        0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0x00, 0x01, 0x02, 0x7f, 0xe0, 0xff,
    };
    uint64_t r = next_random(state);
    if (r % 3 == 0)
        return (uint8_t)(r >> 8);
    return interesting[(r >> 8) % sizeof interesting];
}

static void random_value(mp_writer *w, uint64_t *state, int depth);

/* A map of 0..3 pairs, keys nearly always str. */
static void random_map(mp_writer *w, uint64_t *state, int depth)
{
    uint32_t n = (uint32_t)(next_random(state) % 4);
    mp_write_map(w, n);
    for (uint32_t i = 0; i < n; i++) {
        if (next_random(state) % 40 == 0)
            mp_write_uint(w, i);
        else
            mp_write_str(w, "keyname", next_random(state) % 8);
        random_value(w, state, depth + 1);
    }
}

/* A random value nested `depth` deep; containers stop a little past BUDGET_DEPTH_MAX. */
static void random_value(mp_writer *w, uint64_t *state, int depth)
{
    static const char text[BUDGET_STRING_BYTES_MAX + 8] = "some text";
    uint64_t r = next_random(state);
    unsigned kind = (unsigned)(r % 16);
    uint64_t big = next_random(state) >> (next_random(state) % 64);
    if (depth > BUDGET_DEPTH_MAX + 1 && kind >= 12)
        kind = 0;
    switch (kind) {
    case 0:
        mp_write_nil(w);
        break;
    case 1:
        mp_write_bool(w, r & 0x100);
        break;
    case 2:
    case 3:
        mp_write_uint(w, big);
        break;
    case 4:
        mp_write_int(w, -(int64_t)(big >> 1) - 1);
        break;
    case 5:
    case 6:
    case 7:
        mp_write_str(w, text, (r >> 8) % 40);
        break;
    case 8:
        /* now and then right at the limit, or one past it */
        mp_write_str(w, text, BUDGET_STRING_BYTES_MAX - 1 + (r >> 8) % 3);
        break;
    case 9:
        mp_write_bin(w, text, (r >> 8) % 300);
        break;
    case 10:
        mp_write_raw(w, "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", 9); /* float64 1.0 */
        break;
    case 11:
        if ((r >> 8) % 8 == 0)
            mp_write_raw(w, "\xd4\x01\x00", 3); /* fixext 1 */
        else
            mp_write_int(w, -(int64_t)((r >> 8) % 40));
        break;
    case 12:
    case 13: {
        uint32_t n = (uint32_t)((r >> 8) % 4);
        mp_write_array(w, n);
        for (uint32_t i = 0; i < n; i++)
            random_value(w, state, depth + 1);
        break;
    }
    default:
        random_map(w, state, depth);
        break;
    }
}

/*
 * One test input into `buf` (at most `cap` bytes): a generated frame, as it is or with one
 * byte changed or cut short, or plain noise. Returns its length.
 */
static size_t random_input(uint8_t *buf, size_t cap, uint64_t *state)
{
    uint64_t how = next_random(state) % 10;
    if (how == 0) {
        size_t len = next_random(state) % 48;
        for (size_t k = 0; k < len; k++)
            buf[k] = random_byte(state);
        return len;
    }
    mp_writer w;
    mp_writer_init(&w, buf, cap);
    random_map(&w, state, 1);
    if (w.overflow)
        return 0;
    if (how <= 4 || w.len == 0)
        return w.len;
    if (how <= 7) {
        buf[next_random(state) % w.len] = random_byte(state);
        return w.len;
    }
    return next_random(state) % w.len;
}

Test(random, validate_and_skip_agree_and_never_overrun, .timeout = 300)
{
    uint64_t state = 0x9e3779b97f4a7c15ULL;
    size_t accepted = 0, too_large = 0, bad = 0;
    static uint8_t tmp[64 * 1024];
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    for (int i = 0; i < 100000; i++) {
        size_t len = random_input(tmp, sizeof tmp, &state);
        uint8_t *copy = exact_copy(tmp, len);

        char why[160];
        int rc = budget_validate_frame(copy, len, why, sizeof why);
        cr_assert(rc == 0 || rc == BUDGET_EBAD_REQUEST || rc == BUDGET_ETOO_LARGE);
        too_large += rc == BUDGET_ETOO_LARGE;
        bad += rc == BUDGET_EBAD_REQUEST;

        mp_reader r;
        mp_reader_init(&r, copy, len);
        int skipped = mp_skip(&r, BUDGET_DEPTH_MAX);
        cr_assert(skipped == 0 || r.p == copy, "a failed skip moved the cursor");
        cr_assert(r.p <= copy + len);

        if (rc == 0) {
            accepted++;
            cr_assert_eq(skipped, 0, "input %d accepted but not skippable", i);
            cr_assert_eq(mp_remaining(&r), 0, "input %d: skip stopped short", i);
            /* What the validator passes, msgpack-c decodes in full as one map. */
            msgpack_object obj;
            size_t off = 0;
            cr_assert_eq(msgpack_unpack((const char *)copy, len, &off, &zone, &obj),
                         MSGPACK_UNPACK_SUCCESS, "input %d", i);
            cr_assert_eq(off, len);
            cr_assert_eq(obj.type, MSGPACK_OBJECT_MAP);
            msgpack_zone_clear(&zone);
        }
        exact_free(copy, len);
    }
    msgpack_zone_destroy(&zone);
    /* The mix must exercise all three outcomes, or the test proves little. */
    cr_assert_gt(accepted, 10000, "only %zu of 100000 inputs were valid frames", accepted);
    cr_assert_gt(too_large, 1000, "only %zu inputs were too large", too_large);
    cr_assert_gt(bad, 10000, "only %zu inputs were bad requests", bad);
}

/* ---- dates and decisions (proto/fields.h) ------------------------------------------------- */

static bool date_of(const char *text, int32_t *date)
{
    return budget_date_parse(text, strlen(text), date);
}

Test(date, a_real_day_at_the_limits_is_read_and_written_back)
{
    const char *days[] = {"2024-02-29", "2000-02-29", "1900-01-01", "9999-12-31",
                          "2021-08-24", "2021-12-31", "2021-04-30", "1970-01-01"};
    const int32_t values[] = {20240229, 20000229, 19000101, 99991231,
                              20210824, 20211231, 20210430, 19700101};
    for (size_t i = 0; i < sizeof days / sizeof days[0]; i++) {
        int32_t date = 0;
        cr_assert(date_of(days[i], &date), "%s is a day", days[i]);
        cr_assert_eq(date, values[i], "%s", days[i]);
        char out[BUDGET_DATE_BYTES + 1];
        cr_assert(budget_date_format(date, out));
        cr_assert_str_eq(out, days[i]);
        cr_assert_eq(budget_date_from_days(budget_date_days(date)), date, "%s", days[i]);
    }
}

Test(date, a_day_that_does_not_exist_or_is_out_of_range_is_refused)
{
    const char *bad[] = {"2021-02-29",  "1900-02-29", "2100-02-29", "2021-04-31", "2021-13-01",
                         "2021-00-10",  "2021-01-00", "2021-01-32", "1899-12-31", "0000-01-01",
                         "2021-8-24",   "2021-08-2",  "21-08-24",   "2021/08/24", "2021-08-24 ",
                         " 2021-08-24", "2021-08-2x", "+021-08-24", "2021-08--4", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t date = 7;
        cr_assert_not(date_of(bad[i], &date), "\"%s\" is refused", bad[i]);
        cr_assert_eq(date, 7, "a refused day leaves the value alone");
    }
    char out[BUDGET_DATE_BYTES + 1];
    cr_assert_not(budget_date_format(0, out));
    cr_assert_not(budget_date_format(20210229, out));
    cr_assert_not(budget_date_valid(20210229));
    cr_assert(budget_date_valid(20240229));
    cr_assert_not(budget_date_valid(100000101));
}

Test(date, days_count_from_1970_across_leap_years)
{
    int32_t a = 0, b = 0;
    cr_assert(date_of("2024-02-28", &a) && date_of("2024-03-01", &b));
    cr_assert_eq(budget_date_days(b) - budget_date_days(a), 2);
    cr_assert(date_of("2021-02-28", &a) && date_of("2021-03-01", &b));
    cr_assert_eq(budget_date_days(b) - budget_date_days(a), 1);
    cr_assert(date_of("1970-01-02", &a));
    cr_assert_eq(budget_date_days(a), 1);
    cr_assert(date_of("2021-08-24", &a));
    cr_assert_eq(budget_date_days(a), 18863); /* date -ud 2021-08-24 +%s / 86400 */
    cr_assert_eq(budget_date_from_days(budget_date_days(19000101) - 1), 0);
}

Test(decision, a_body_is_upper_case_letters_and_digits)
{
    const char *good[] = {"KS", "SON", "KFN", "K", "TN2", "ÅÄÖ", "BUN1234567890123"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(budget_decision_body_valid(good[i], strlen(good[i])), "%s", good[i]);
    const char *bad[] = {
        "", "ks", "Ks", "2KS", "K S", "K-S", "KS.", "åäö", "BUN12345678901234", "\xc3", "K\xc3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(budget_decision_body_valid(bad[i], strlen(bad[i])), "\"%s\"", bad[i]);
}

Test(decision, a_paragraph_begins_with_a_digit)
{
    const char *good[] = {"241", "241 p. 2", "12:3", "1", "7/2021", "1234567890123456"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(budget_decision_paragraph_valid(good[i], strlen(good[i])), "%s", good[i]);
    const char *bad[] = {"",       "p. 2",  " 241", "241 ",
                         "241  p", "241\t", "241§", "12345678901234567"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(budget_decision_paragraph_valid(bad[i], strlen(bad[i])), "\"%s\"", bad[i]);
}

static bool decision_of(const char *text, budget_decision *d, const char **why)
{
    return budget_decision_parse(text, strlen(text), d, why);
}

Test(decision, the_forms_clerks_write_are_read)
{
    budget_decision d;
    const char *why = NULL;
    cr_assert(decision_of("KS 2021-08-24 § 241", &d, &why), "%s", why);
    cr_assert_str_eq(d.body, "KS");
    cr_assert_eq(d.date, 20210824);
    cr_assert_str_eq(d.paragraph, "241");
    cr_assert_str_eq(d.dnr, "");

    cr_assert(decision_of("KS 2021-08-24 §241", &d, &why), "%s", why);
    cr_assert_str_eq(d.paragraph, "241");

    cr_assert(decision_of("SON 2024-02-29 § 241 p. 2 dnr KS 2021/123", &d, &why), "%s", why);
    cr_assert_str_eq(d.body, "SON");
    cr_assert_eq(d.date, 20240229);
    cr_assert_str_eq(d.paragraph, "241 p. 2");
    cr_assert_str_eq(d.dnr, "KS 2021/123");

    cr_assert(decision_of("KFN 2021-09-28 § 270 Dnr 5", &d, &why), "%s", why);
    cr_assert_str_eq(d.paragraph, "270");
    cr_assert_str_eq(d.dnr, "5");
}

Test(decision, every_malformed_part_is_refused_with_its_reason)
{
    const struct {
        const char *text, *why_has;
    } bad[] = {
        {"", "body"},
        {"ks 2021-08-24 § 241", "body"},
        {"KS", "YYYY-MM-DD"},
        {"KS 2021-02-29 § 241", "YYYY-MM-DD"},
        {"KS  2021-08-24 § 241", "YYYY-MM-DD"},
        {"KS 24/8 2021 § 241", "YYYY-MM-DD"},
        {"KS 2021-08-24", "§"},
        {"KS 2021-08-24 241", "§"},
        {"KS 2021-08-24  § 241", "§"},
        {"KS 2021-08-24 §", "paragraph"},
        {"KS 2021-08-24 § ", "paragraph"},
        {"KS 2021-08-24 §  241", "paragraph"},
        {"KS 2021-08-24 § p. 2", "paragraph"},
        {"KS 2021-08-24 § 241 ", "paragraph"},
        {"KS 2021-08-24 § 241 dnr ", "diary"},
        {"KS 2021-08-24 § 241 dnr \x01", "diary"},
        {"KS 2021-08-24 § 241 dnr "
         "12345678901234567890123456789012345678901234567890123456789012345",
         "diary"},
        {"KS 2021-08-24 § 241 dnr", "diary"},
        {"KS 2021-08-24 § 241 DNR  5", "diary"},
        {"KS 2021-08-24 § dnr 5", "paragraph"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        budget_decision d;
        const char *why = NULL;
        cr_assert_not(decision_of(bad[i].text, &d, &why), "\"%s\" is refused", bad[i].text);
        cr_assert_not_null(strstr(why, bad[i].why_has), "\"%s\": %s", bad[i].text, why);
    }
}

/* ---- Swedish days ------------------------------------------------------------------------ */

#define H_MS INT64_C(3600000)

Test(swedish_days, summer_time_begins_and_ends_at_one_o_clock_utc)
{
    const int64_t spring = 1616893200000; /* 2021-03-28T01:00:00Z */
    const int64_t autumn = 1635642000000; /* 2021-10-31T01:00:00Z */
    cr_assert_eq(budget_swedish_offset_ms(spring - 1), H_MS);
    cr_assert_eq(budget_swedish_offset_ms(spring), 2 * H_MS);
    cr_assert_eq(budget_swedish_offset_ms(autumn - 1), 2 * H_MS);
    cr_assert_eq(budget_swedish_offset_ms(autumn), H_MS);
    /* 1980-1995: summer time ended in September; before 1980 there was none. */
    cr_assert_eq(budget_swedish_offset_ms(654656400000 - 1), 2 * H_MS); /* 1990-09-30T00:59:59Z */
    cr_assert_eq(budget_swedish_offset_ms(654656400000), H_MS);
    cr_assert_eq(budget_swedish_offset_ms(173448000000), H_MS); /* 1975-07-01T12:00Z */
}

Test(swedish_days, a_day_is_a_day_of_swedish_time)
{
    const int64_t new_year = 1640991600000; /* 2021-12-31T23:00:00Z, 00:00 in Stockholm */
    cr_assert_eq(budget_day_of_ms(new_year - 1), 20211231);
    cr_assert_eq(budget_day_of_ms(new_year), 20220101);
    cr_assert_eq(budget_day_of_ms(new_year + H_MS / 2), 20220101, "00:30 Swedish time");
    cr_assert_eq(budget_day_start_ms(20220101), new_year);
    cr_assert_eq(budget_day_end_ms(20211231), new_year);
    /* In summer the day begins at 22:00 UTC the day before. */
    cr_assert_eq(budget_day_start_ms(20210824), 1629756000000); /* 2021-08-23T22:00Z */
    cr_assert_eq(budget_day_of_ms(1629756000000 - 1), 20210823);
    cr_assert_eq(budget_day_of_ms(1629756000000), 20210824);
    /* The days of a change of offset are 23 and 25 hours long. */
    cr_assert_eq(budget_day_end_ms(20210328) - budget_day_start_ms(20210328), 23 * H_MS);
    cr_assert_eq(budget_day_end_ms(20211031) - budget_day_start_ms(20211031), 25 * H_MS);
    cr_assert_eq(budget_day_end_ms(99991231) - budget_day_start_ms(99991231), 24 * H_MS);
}

/* The rule agrees with the system's time zone database, where it has one, at every hour of
 * 1980 to 2060 and at the minute around each change. */
Test(swedish_days, the_rule_agrees_with_the_time_zone_database)
{
    setenv("TZ", "Europe/Stockholm", 1);
    tzset();
    time_t probe = 1629756000; /* a summer day */
    struct tm tm;
    if (localtime_r(&probe, &tm) == NULL || tm.tm_gmtoff != 7200)
        cr_skip_test("no time zone database for Europe/Stockholm on this machine");
    const int64_t from = 315532800, to = 2871763200; /* 1980-01-01 .. 2061-01-01, seconds */
    unsigned checked = 0;
    for (int64_t t = from; t < to; t += 3600) {
        for (int64_t d = -60; d <= 60; d += 60) {
            time_t s = (time_t)(t + d);
            cr_assert_not_null(localtime_r(&s, &tm));
            cr_assert_eq(budget_swedish_offset_ms((int64_t)s * 1000), (int64_t)tm.tm_gmtoff * 1000,
                         "at %lld s", (long long)s);
            int32_t day = (tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
            cr_assert_eq(budget_day_of_ms((int64_t)s * 1000), day, "day at %lld s", (long long)s);
            checked++;
        }
    }
    cr_assert_gt(checked, 2000000u);
}
