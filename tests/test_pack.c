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

/* A record of `pairs` pairs, each of a kind and length drawn from `seed`, packed by pack_rec and
 * by msgpack-c's own calls: the same bytes. */
static void same_record(uint32_t seed, uint32_t pairs)
{
    static const size_t lengths[] = {0, 1, 5, 31, 32, 255, 256, 1000, PACK_REC_BYTES, 5000};
    msgpack_sbuffer want, got;
    msgpack_sbuffer_init(&want);
    msgpack_sbuffer_init(&got);
    msgpack_packer pw, pg;
    msgpack_packer_init(&pw, &want, msgpack_sbuffer_write);
    msgpack_packer_init(&pg, &got, msgpack_sbuffer_write);
    pack_rec r;
    pack_rec_begin(&r, &pg);
    pack_rec_map(&r, pairs);
    msgpack_pack_map(&pw, pairs);
    uint32_t x = seed;
    for (uint32_t i = 0; i < pairs; i++) {
        x = x * 1103515245u + 12345u;
        char *key = text_of(lengths[(x >> 8) % 8]); /* keys up to 1000 bytes */
        char *value = text_of(lengths[(x >> 12) % 10]);
        size_t kn = strlen(key);
        int64_t n = (int64_t)(x >> 3) * ((x & 1) ? -1 : 1) * (int64_t)(x % 977);
        msgpack_pack_str(&pw, kn);
        msgpack_pack_str_body(&pw, key, kn);
        switch ((x >> 20) % 7) {
        case 0:
            pack_rec_int(&r, key, kn, n);
            msgpack_pack_int64(&pw, n);
            break;
        case 1:
            pack_rec_uint(&r, key, kn, (uint64_t)n * 7919u);
            msgpack_pack_uint64(&pw, (uint64_t)n * 7919u);
            break;
        case 2:
            pack_rec_str(&r, key, kn, value);
            msgpack_pack_str(&pw, strlen(value));
            msgpack_pack_str_body(&pw, value, strlen(value));
            break;
        case 3:
            pack_rec_str(&r, key, kn, NULL);
            msgpack_pack_nil(&pw);
            break;
        case 4:
            pack_rec_bool(&r, key, kn, (x & 2) != 0);
            if (x & 2)
                msgpack_pack_true(&pw);
            else
                msgpack_pack_false(&pw);
            break;
        case 5:
            pack_rec_key(&r, key, kn);
            pack_rec_value_array(&r, 2);
            pack_rec_value_str(&r, value);
            pack_rec_value_int(&r, n);
            msgpack_pack_array(&pw, 2);
            msgpack_pack_str(&pw, strlen(value));
            msgpack_pack_str_body(&pw, value, strlen(value));
            msgpack_pack_int64(&pw, n);
            break;
        default:
            pack_rec_key(&r, key, kn);
            pack_rec_value_nil(&r);
            msgpack_pack_nil(&pw);
            break;
        }
        free(key);
        free(value);
    }
    pack_rec_end(&r);
    cr_assert_eq(got.size, want.size, "seed %u, %u pairs: %zu bytes, not %zu", seed, pairs,
                 got.size, want.size);
    cr_assert(memcmp(got.data, want.data, want.size) == 0, "seed %u, %u pairs: other bytes", seed,
              pairs);
    msgpack_sbuffer_destroy(&want);
    msgpack_sbuffer_destroy(&got);
}

/* Records of every size, from one short pair to many times the record buffer, with values
 * longer than the buffer among them: whatever the buffer holds when a pair comes, the bytes are
 * msgpack-c's. */
Test(pack, records_are_the_bytes_msgpack_c_writes)
{
    for (uint32_t seed = 1; seed <= 200; seed++)
        same_record(seed, 1 + seed % 40);
    /* The literal-key form the packers use. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_rec r;
    pack_rec_begin(&r, &pk);
    pack_rec_int(&r, PACK_KEY("year"), 2021);
    pack_rec_end(&r);
    static const uint8_t year[] = {0xa4, 'y', 'e', 'a', 'r', 0xcd, 0x07, 0xe5};
    cr_assert_eq(sb.size, sizeof(year));
    cr_assert(memcmp(sb.data, year, sizeof(year)) == 0);
    msgpack_sbuffer_destroy(&sb);
}
