/*
 * libFuzzer harness for the frame validator and the decoders behind it: whatever the bytes,
 * the validator must not crash or over-read, and a body it accepts must be one msgpack map
 * that mp_skip walks to its exact end and msgpack-c unpacks whole, with no map holding a key
 * twice. Every explanation the validator and the envelope reader give is clean text (UTF-8
 * without control characters), and so is the escaping of the bytes themselves at any cap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/frame.h"
#include "proto/mp.h"
#include "proto/text.h"
#include "proto/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* True when no map in `o` holds a key twice (the validator lets only str keys through). */
static bool keys_once(const msgpack_object *o, int depth)
{
    if (depth > BUDGET_DEPTH_MAX + 1)
        abort();
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (!keys_once(&o->via.array.ptr[i], depth + 1))
                return false;
        return true;
    }
    if (o->type != MSGPACK_OBJECT_MAP)
        return true;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            abort();
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *other = &o->via.map.ptr[j].key;
            if (other->via.str.size == k->via.str.size &&
                memcmp(other->via.str.ptr, k->via.str.ptr, k->via.str.size) == 0)
                return false;
        }
        if (!keys_once(&o->via.map.ptr[i].val, depth + 1))
            return false;
    }
    return true;
}

/* Escaping the input at a cap taken from it: clean, within the cap, NUL-terminated. */
static void check_escape(const uint8_t *data, size_t size)
{
    static char out[8 * 1024];
    size_t cap = size == 0 ? sizeof(out) : (size_t)data[0] * 16 % sizeof(out);
    memset(out, 'z', sizeof(out));
    size_t len = budget_escape(out, cap, data, size);
    if (cap == 0) {
        if (len != 0 || out[0] != 'z')
            abort();
        return;
    }
    if (len >= cap || out[len] != '\0' || strlen(out) != len || !budget_text_clean(out, len))
        abort();
    if (cap < sizeof(out) && out[cap] != 'z')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[160];
    uint32_t body = 0;

    check_escape(data, size);

    /* The stream view: a frame header, then the body. */
    int peek = budget_frame_peek(data, size, &body);
    if (peek == 0 && (body == 0 || body > BUDGET_FRAME_BYTES_MAX))
        abort();

    why[0] = '\0';
    int rc = budget_validate_frame(data, size, why, sizeof(why));
    if (rc != 0 && rc != BUDGET_EBAD_REQUEST && rc != BUDGET_ETOO_LARGE)
        abort();
    if (!budget_text_clean(why, strlen(why)))
        abort();

    /* The envelope reader agrees with the validator, and explains itself in clean text too. */
    budget_envelope env;
    char env_why[160] = "";
    int env_rc = budget_parse_request(data, size, &env, env_why, sizeof(env_why));
    if ((rc != 0 && env_rc != rc) || !budget_text_clean(env_why, strlen(env_why)))
        abort();
    if (env_rc == 0 &&
        (env.op == NULL ||
         (env.args != NULL && (env.args < data || env.args + env.args_size > data + size))))
        abort();
    if (rc != 0)
        return 0;

    mp_reader r;
    mp_reader_init(&r, data, size);
    if (mp_peek(&r) != MP_MAP || mp_skip(&r, BUDGET_DEPTH_MAX) != 0 || mp_remaining(&r) != 0)
        abort();

    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)data, size, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != size || u.data.type != MSGPACK_OBJECT_MAP || !keys_once(&u.data, 1))
        abort();
    msgpack_unpacked_destroy(&u);
    return 0;
}
