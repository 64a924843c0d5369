/*
 * libFuzzer harness for the frame validator and the decoders behind it: whatever the bytes,
 * the validator must not crash or over-read, and a body it accepts must be one msgpack map
 * that mp_skip walks to its exact end and msgpack-c unpacks whole.
 */
#include <stdint.h>
#include <stdlib.h>

#include <msgpack.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/frame.h"
#include "proto/mp.h"
#include "proto/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[160];
    uint32_t body = 0;

    /* The stream view: a frame header, then the body. */
    int peek = budget_frame_peek(data, size, &body);
    if (peek == 0 && (body == 0 || body > BUDGET_FRAME_BYTES_MAX))
        abort();

    int rc = budget_validate_frame(data, size, why, sizeof(why));
    if (rc != 0 && rc != BUDGET_EBAD_REQUEST && rc != BUDGET_ETOO_LARGE)
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
        off != size || u.data.type != MSGPACK_OBJECT_MAP)
        abort();
    msgpack_unpacked_destroy(&u);
    return 0;
}
