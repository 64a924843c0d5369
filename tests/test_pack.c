/*
 * The answer packer's key-value pairs (daemon/request.c) write exactly the bytes msgpack-c's
 * own calls write, at every length boundary of a str and every width of an integer, also for
 * pairs too long for the one-call path.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdint.h>
#include <string.h>

#include "daemon/request.h"

/* A str of `n` bytes: 'a', 'b', ... */
static char *text_of(size_t n)
{
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + i % 26);
    s[n] = '\0';
    return s;
}

static void packed_by_msgpack(msgpack_sbuffer *sb, const char *key, char kind, uint64_t u,
                              int64_t i, const char *v)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t n = strlen(key);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, key, n);
    if (kind == 'u') {
        msgpack_pack_uint64(&pk, u);
    } else if (kind == 'i') {
        msgpack_pack_int64(&pk, i);
    } else {
        msgpack_pack_str(&pk, strlen(v));
        msgpack_pack_str_body(&pk, v, strlen(v));
    }
}

static void same_bytes(const char *key, char kind, uint64_t u, int64_t i, const char *v)
{
    msgpack_sbuffer want, got;
    msgpack_sbuffer_init(&want);
    msgpack_sbuffer_init(&got);
    packed_by_msgpack(&want, key, kind, u, i, v);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &got, msgpack_sbuffer_write);
    /* What is already in the buffer stays ahead of the pair. */
    msgpack_pack_nil(&pk);
    if (kind == 'u')
        pack_key_uint(&pk, key, u);
    else if (kind == 'i')
        pack_key_int(&pk, key, i);
    else
        pack_key_str(&pk, key, v);
    cr_assert_eq(got.size, want.size + 1, "key of %zu bytes, kind %c: %zu bytes, not %zu",
                 strlen(key), kind, got.size - 1, want.size);
    cr_assert_eq((uint8_t)got.data[0], 0xc0);
    cr_assert(memcmp(got.data + 1, want.data, want.size) == 0,
              "key of %zu bytes, kind %c: other bytes", strlen(key), kind);
    msgpack_sbuffer_destroy(&want);
    msgpack_sbuffer_destroy(&got);
}

Test(pack, pairs_are_the_bytes_msgpack_c_writes)
{
    static const size_t lengths[] = {0, 1, 31, 32, 100, 180, 190, 255, 256, 1000, 70000};
    static const uint64_t uints[] = {0,     1,     127,        128,        255,       256,
                                     65535, 65536, UINT32_MAX, 1ull << 32, UINT64_MAX};
    static const int64_t ints[] = {0,         -1,        -32,    -33,       -128,
                                   -129,      -32768,    -32769, INT32_MIN, (int64_t)INT32_MIN - 1,
                                   INT64_MIN, INT64_MAX, 127,    70000};

    for (size_t k = 0; k < sizeof(lengths) / sizeof(lengths[0]); k++) {
        char *key = text_of(lengths[k]);
        for (size_t j = 0; j < sizeof(uints) / sizeof(uints[0]); j++)
            same_bytes(key, 'u', uints[j], 0, NULL);
        for (size_t j = 0; j < sizeof(ints) / sizeof(ints[0]); j++)
            same_bytes(key, 'i', 0, ints[j], NULL);
        for (size_t v = 0; v < sizeof(lengths) / sizeof(lengths[0]); v++) {
            char *value = text_of(lengths[v]);
            same_bytes(key, 's', 0, 0, value);
            free(value);
        }
        free(key);
    }
}
