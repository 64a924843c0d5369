/*
 * A msgpack reader that never allocates: a cursor over a buffer, read one value at a time.
 * Used where msgpack-c's zone-based unpacker is too slow or must not be trusted yet: the
 * frame validator, start-up replay, and event filtering.
 */
#ifndef BUDGET_MP_H
#define BUDGET_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The cursor. `p` advances as values are read; `end` is one past the last byte. */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} mp_reader;

/* The kind of the next value, without consuming it. */
typedef enum {
    MP_NONE = 0, /* no bytes left, or the next byte is not a valid msgpack type (0xc1) */
    MP_NIL,
    MP_BOOL,
    MP_UINT, /* positive fixint, uint 8..64 */
    MP_INT,  /* negative fixint, int 8..64 (may hold a non-negative value) */
    MP_FLOAT,
    MP_STR,
    MP_BIN,
    MP_ARRAY,
    MP_MAP,
    MP_EXT,
} mp_type;

static inline void mp_reader_init(mp_reader *r, const void *data, size_t size)
{
    r->p = (const uint8_t *)data;
    r->end = r->p + size;
}

static inline size_t mp_remaining(const mp_reader *r)
{
    return (size_t)(r->end - r->p);
}

/* Every reader below returns 0 and advances on success, or -1 and leaves the cursor where it
 * was when the next value is of another type or is cut short by the end of the buffer. */
mp_type mp_peek(const mp_reader *r);
int mp_read_nil(mp_reader *r);
int mp_read_bool(mp_reader *r, bool *out);
/* Accepts any integer encoding whose value fits in uint64 (negative values fail). */
int mp_read_uint(mp_reader *r, uint64_t *out);
/* Accepts any integer encoding whose value fits in int64. */
int mp_read_int(mp_reader *r, int64_t *out);
/* The string's bytes stay in the buffer: *out points into it, not NUL-terminated. */
int mp_read_str(mp_reader *r, const char **out, uint32_t *len);
int mp_read_bin(mp_reader *r, const uint8_t **out, uint32_t *len);
/* Reads a container header; the elements follow (a map has 2 * n values). */
int mp_read_array(mp_reader *r, uint32_t *n);
int mp_read_map(mp_reader *r, uint32_t *n);
/* Skips one whole value, containers included, at most `depth_max` levels deep. */
int mp_skip(mp_reader *r, int depth_max);

/* Reads a str and compares it to the NUL-terminated `s`; 1 if equal, 0 if another str,
 * -1 if the next value is not a str (the cursor advances past the str either way). */
int mp_read_str_eq(mp_reader *r, const char *s);

/*
 * Writers into a caller's buffer, each the shortest msgpack form (the canonical encoding).
 * `mp_writer` counts what it would have written even past `cap`, so a caller can size a
 * buffer by writing once into a zero-length one; `overflow` says the buffer was too small.
 */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    bool overflow;
} mp_writer;

static inline void mp_writer_init(mp_writer *w, void *buf, size_t cap)
{
    w->buf = (uint8_t *)buf;
    w->cap = cap;
    w->len = 0;
    w->overflow = false;
}

void mp_write_nil(mp_writer *w);
void mp_write_bool(mp_writer *w, bool v);
void mp_write_uint(mp_writer *w, uint64_t v);
void mp_write_int(mp_writer *w, int64_t v); /* a non-negative value is written as uint */
void mp_write_str(mp_writer *w, const char *s, size_t len);
void mp_write_cstr(mp_writer *w, const char *s);
void mp_write_bin(mp_writer *w, const void *data, size_t len);
void mp_write_array(mp_writer *w, uint32_t n);
void mp_write_map(mp_writer *w, uint32_t n);
void mp_write_raw(mp_writer *w, const void *data, size_t len);

#endif
