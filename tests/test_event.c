/* The event codec: round trips, the hash chain, strictness, and a cross-check with msgpack-c. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "daemon/event.h"

#define MAX BUDGET_AMOUNT_MAX
#define TYPES 7

static const ledger_type all_types[TYPES] = {
    LEDGER_FRAME_GRANTED,     LEDGER_FRAME_ADJUSTED,    LEDGER_ALLOCATION_PROPOSED,
    LEDGER_AVROP_REQUESTED,   LEDGER_DECISION_APPROVED, LEDGER_DECISION_REJECTED,
    LEDGER_REQUEST_WITHDRAWN,
};

/* The documented data keys of each type, in order (written out again here on purpose). */
static const char *const data_keys[][10] = {
    [LEDGER_FRAME_GRANTED] = {"id", "unit", "year", "amount", "title", "reference"},
    [LEDGER_FRAME_ADJUSTED] = {"id", "frame", "unit", "year", "delta", "reason", "reference"},
    [LEDGER_ALLOCATION_PROPOSED] = {"id", "frame", "unit", "year", "amount", "purpose"},
    [LEDGER_AVROP_REQUESTED] = {"id", "allocation", "frame", "unit", "year", "amount", "note"},
    [LEDGER_DECISION_APPROVED] = {"id", "target", "target_kind", "frame", "unit", "year", "amount",
                                  "reference", "note"},
    [LEDGER_DECISION_REJECTED] = {"id", "target", "target_kind", "frame", "unit", "year", "amount",
                                  "reference", "note"},
    [LEDGER_REQUEST_WITHDRAWN] = {"id", "target", "target_kind", "frame", "unit", "year", "amount",
                                  "note"},
};

static size_t key_count(ledger_type t)
{
    size_t n = 0;
    while (n < 10 && data_keys[t][n] != NULL)
        n++;
    return n;
}

static const char *type_name(ledger_type t)
{
    static const char *names[] = {
        [LEDGER_FRAME_GRANTED] = "frame.granted",
        [LEDGER_FRAME_ADJUSTED] = "frame.adjusted",
        [LEDGER_ALLOCATION_PROPOSED] = "allocation.proposed",
        [LEDGER_AVROP_REQUESTED] = "avrop.requested",
        [LEDGER_DECISION_APPROVED] = "decision.approved",
        [LEDGER_DECISION_REJECTED] = "decision.rejected",
        [LEDGER_REQUEST_WITHDRAWN] = "request.withdrawn",
    };
    return names[t];
}

/* ---- events to encode ---------------------------------------------------------------------------
 */

static void fill(char *dst, size_t n, char c)
{
    memset(dst, c, n);
    dst[n] = '\0';
}

/* 256 bytes of UTF-8: "ä" (2 bytes) 100 times, then ASCII. */
static void fill_text(char *dst, char tail)
{
    for (int i = 0; i < 100; i++)
        memcpy(dst + 2 * i, "\xc3\xa4", 2);
    fill(dst + 200, 56, tail);
}

/* An event of `type` with every field the type has at its longest or largest. */
static ledger_event max_event(ledger_type type)
{
    ledger_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.seq = UINT64_MAX;
    ev.ts_ms = UINT64_MAX;
    ev.actor.uid = UINT32_MAX;
    fill(ev.actor.name, BUDGET_NAME_BYTES_MAX, 'n');
    fill(ev.id, BUDGET_ID_BYTES_MAX, 'I');
    fill(ev.unit, BUDGET_UNIT_BYTES_MAX, 'U');
    ev.year = BUDGET_YEAR_MAX;
    ev.amount = MAX;
    switch (type) {
    case LEDGER_FRAME_GRANTED:
        fill_text(ev.title, 't');
        fill_text(ev.reference, 'r');
        break;
    case LEDGER_FRAME_ADJUSTED:
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        ev.amount = -MAX;
        fill_text(ev.title, 'w');
        fill_text(ev.reference, 'r');
        break;
    case LEDGER_ALLOCATION_PROPOSED:
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.title, 'p');
        break;
    case LEDGER_AVROP_REQUESTED:
        fill(ev.allocation, BUDGET_ID_BYTES_MAX, 'A');
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.note, 'o');
        break;
    case LEDGER_DECISION_APPROVED:
    case LEDGER_DECISION_REJECTED:
        fill(ev.target, BUDGET_ID_BYTES_MAX, 'T');
        ev.target_kind = LEDGER_KIND_ALLOCATION;
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.reference, 'r');
        fill_text(ev.note, 'o');
        break;
    case LEDGER_REQUEST_WITHDRAWN:
        fill(ev.target, BUDGET_ID_BYTES_MAX, 'T');
        ev.target_kind = LEDGER_KIND_AVROP;
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.note, 'o');
        break;
    }
    return ev;
}

static void put(char *dst, size_t size, const char *src)
{
    cr_assert_lt(strlen(src), size);
    strcpy(dst, src);
}

#define PUT(field, value) put((field), sizeof(field), (value))

/* An everyday event of `type`, with seq `seq`. */
static ledger_event typical_event(ledger_type type, uint64_t seq)
{
    ledger_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.seq = seq;
    ev.ts_ms = 1632816000000u + seq * 37;
    ev.actor.uid = 1000 + (uint32_t)(seq % 3);
    PUT(ev.actor.name, "kslinbe");
    snprintf(ev.id, sizeof ev.id, "ev-%llu", (unsigned long long)seq);
    PUT(ev.unit, "SON");
    ev.year = 2021;
    ev.amount = 100000000 + (int64_t)seq;
    switch (type) {
    case LEDGER_FRAME_GRANTED:
        PUT(ev.unit, "KS");
        PUT(ev.title, "Utökat trygghetsarbete");
        PUT(ev.reference, "KS 2021-08-24 § 241");
        break;
    case LEDGER_FRAME_ADJUSTED:
        PUT(ev.frame, "KS-2021");
        PUT(ev.unit, "KS");
        ev.amount = -(int64_t)(seq * 1000 + 1);
        PUT(ev.title, "Tilläggsanslag");
        break;
    case LEDGER_ALLOCATION_PROPOSED:
        PUT(ev.frame, "KS-2021");
        PUT(ev.title, "Områdesarbete för trygghetsskapande åtgärder");
        break;
    case LEDGER_AVROP_REQUESTED:
        PUT(ev.allocation, "a-son");
        PUT(ev.frame, "KS-2021");
        PUT(ev.note, "Hösten 2021");
        break;
    case LEDGER_DECISION_APPROVED:
    case LEDGER_DECISION_REJECTED:
        PUT(ev.target, "a-son");
        ev.target_kind = LEDGER_KIND_ALLOCATION;
        PUT(ev.frame, "KS-2021");
        PUT(ev.reference, "KS 2021-09-28 § 270");
        break;
    case LEDGER_REQUEST_WITHDRAWN:
        PUT(ev.target, "v-son");
        ev.target_kind = LEDGER_KIND_AVROP;
        PUT(ev.frame, "KS-2021");
        PUT(ev.note, "Fel belopp");
        break;
    }
    return ev;
}

static const uint8_t zero_prev[BUDGET_HASH_BYTES];

static size_t encode(const ledger_event *ev, const uint8_t *prev, uint8_t *out,
                     uint8_t hash[BUDGET_HASH_BYTES])
{
    int n = event_encode(ev, prev, out, EVENT_BYTES_MAX, hash);
    cr_assert_gt(n, 0, "event_encode of %s: %d", type_name(ev->type), n);
    cr_assert_leq(n, EVENT_BYTES_MAX);
    return (size_t)n;
}

/* The fields of `type` in two events are equal, and the others are empty in `got`. */
static void expect_same_event(const ledger_event *want, const ledger_event *got)
{
    cr_assert_eq(got->type, want->type);
    cr_assert_eq(got->seq, want->seq);
    cr_assert_eq(got->ts_ms, want->ts_ms);
    cr_assert_eq(got->actor.uid, want->actor.uid);
    cr_assert_str_eq(got->actor.name, want->actor.name);
    cr_assert_str_eq(got->id, want->id);
    cr_assert_str_eq(got->frame, want->frame);
    cr_assert_str_eq(got->allocation, want->allocation);
    cr_assert_str_eq(got->target, want->target);
    cr_assert_eq(got->target_kind, want->target_kind);
    cr_assert_str_eq(got->unit, want->unit);
    cr_assert_eq(got->year, want->year);
    cr_assert_eq(got->amount, want->amount);
    cr_assert_str_eq(got->title, want->title);
    cr_assert_str_eq(got->reference, want->reference);
    cr_assert_str_eq(got->note, want->note);
}

/* ---- round trips
 * ----------------------------------------------------------------------------------- */

Test(event, round_trip_of_every_type_at_maximum_lengths)
{
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = max_event(all_types[k]);
        uint8_t buf[EVENT_BYTES_MAX], again[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
        uint8_t prev[BUDGET_HASH_BYTES];
        memset(prev, 0xa5, sizeof prev);
        size_t n = encode(&ev, prev, buf, hash);
        ledger_event got;
        memset(&got, 0x5a, sizeof got); /* decode must set or empty every field */
        cr_assert_eq(event_decode(buf, n, &got), 0, "decode of %s", type_name(ev.type));
        expect_same_event(&ev, &got);
        /* A decoded event encodes to the same bytes. */
        size_t m = encode(&got, prev, again, NULL);
        cr_assert_eq(m, n);
        cr_assert_eq(memcmp(buf, again, n), 0);
        cr_assert_eq(event_check_link(buf, n, prev, NULL), 0);
    }
}

Test(event, round_trip_of_every_type_at_minimum_values)
{
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = typical_event(all_types[k], 1);
        ev.seq = 0;
        ev.ts_ms = 0;
        ev.actor.uid = 0;
        ev.actor.name[0] = '\0';
        PUT(ev.id, "x");
        PUT(ev.unit, "K");
        ev.year = BUDGET_YEAR_MIN;
        ev.amount = all_types[k] == LEDGER_FRAME_ADJUSTED ? -1 : 1;
        ev.reference[0] = '\0';
        ev.note[0] = '\0';
        if (ev.title[0] != '\0')
            PUT(ev.title, "t");
        uint8_t buf[EVENT_BYTES_MAX];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        ledger_event got;
        memset(&got, 0x5a, sizeof got);
        cr_assert_eq(event_decode(buf, n, &got), 0, "decode of %s", type_name(ev.type));
        expect_same_event(&ev, &got);
    }
}

Test(event, integers_of_every_width_round_trip)
{
    const uint64_t seqs[] = {
        1, 127, 128, 255, 256, 65535, 65536, UINT32_MAX, UINT64_C(1) << 32, UINT64_MAX};
    const int64_t deltas[] = {-1,        -32,         -33,   -128,       -129,       -32768, -32769,
                              INT32_MIN, -2147483649, -MAX,  1,          127,        128,    255,
                              256,       65535,       65536, 4294967295, 4294967296, MAX};
    uint8_t buf[EVENT_BYTES_MAX];
    ledger_event got;
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        ledger_event ev = typical_event(LEDGER_FRAME_GRANTED, 1);
        ev.seq = seqs[i];
        ev.ts_ms = seqs[i];
        ev.actor.uid = (uint32_t)seqs[i];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        cr_assert_eq(event_decode(buf, n, &got), 0);
        expect_same_event(&ev, &got);
        uint64_t seq = 0;
        cr_assert_eq(event_seq(buf, n, &seq), 0);
        cr_assert_eq(seq, seqs[i]);
    }
    for (size_t i = 0; i < sizeof deltas / sizeof deltas[0]; i++) {
        ledger_event ev = typical_event(LEDGER_FRAME_ADJUSTED, 1);
        ev.amount = deltas[i];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        cr_assert_eq(event_decode(buf, n, &got), 0, "delta %lld", (long long)deltas[i]);
        expect_same_event(&ev, &got);
    }
}

/* ---- hashing and the link
 * ------------------------------------------------------------------------------ */

Test(event, hash_is_sha256_of_prev_and_the_map_without_hash)
{
    for (int k = 0; k < TYPES; k++) {
        for (int variant = 0; variant < 2; variant++) {
            ledger_event ev = variant ? max_event(all_types[k]) : typical_event(all_types[k], 42);
            uint8_t prev[BUDGET_HASH_BYTES], buf[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
            for (int i = 0; i < BUDGET_HASH_BYTES; i++)
                prev[i] = (uint8_t)(i * 7 + k);
            size_t n = encode(&ev, prev, buf, hash);

            /* The documented layout of the tail. */
            cr_assert_eq(buf[0], 0x87);
            cr_assert_eq(memcmp(buf + n - 39, "\xa4hash\xc4\x20", 7), 0);
            cr_assert_eq(memcmp(buf + n - 78, "\xa4prev\xc4\x20", 7), 0);
            cr_assert_eq(memcmp(buf + n - 71, prev, 32), 0);
            cr_assert_eq(memcmp(buf + n - 32, hash, 32), 0);

            /* hash = SHA-256(prev || 0x86 || bytes[1 .. n-39)) */
            uint8_t input[BUDGET_HASH_BYTES + EVENT_BYTES_MAX], want[BUDGET_HASH_BYTES];
            memcpy(input, prev, 32);
            input[32] = 0x86;
            memcpy(input + 33, buf + 1, n - 39 - 1);
            crypto_hash_sha256(want, input, 32 + (n - 39));
            cr_assert_eq(memcmp(want, hash, 32), 0, "hash of %s", type_name(ev.type));

            const uint8_t *p = NULL, *h = NULL;
            cr_assert_eq(event_link(buf, n, &p, &h), 0);
            cr_assert_eq(p, buf + n - 71);
            cr_assert_eq(h, buf + n - 32);
            const char *why = "unset";
            cr_assert_eq(event_check_link(buf, n, prev, &why), 0);
            cr_assert_str_eq(why, "");
            uint8_t other[BUDGET_HASH_BYTES];
            memcpy(other, prev, 32);
            other[31] ^= 1;
            cr_assert_eq(event_check_link(buf, n, other, &why), BUDGET_EINTERNAL);
            cr_assert_str_eq(why, "prev");
        }
    }
}

Test(event, every_single_byte_change_is_caught)
{
    static const uint8_t masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = typical_event(all_types[k], 300);
        uint8_t prev[BUDGET_HASH_BYTES], buf[EVENT_BYTES_MAX], bad[EVENT_BYTES_MAX];
        memset(prev, 0x3c, sizeof prev);
        size_t n = encode(&ev, prev, buf, NULL);
        size_t decode_failures = 0, total = 0;
        for (size_t at = 0; at < n; at++) {
            for (size_t m = 0; m < sizeof masks; m++) {
                memcpy(bad, buf, n);
                bad[at] ^= masks[m];
                ledger_event got;
                bool decoded = event_decode(bad, n, &got) == 0;
                const char *why = NULL;
                bool linked = event_check_link(bad, n, prev, &why) == 0;
                cr_assert(!decoded || !linked, "%s: byte %zu ^ %02x went unnoticed",
                          type_name(ev.type), at, masks[m]);
                /* Every byte is under the hash, the prev comparison or the fixed layout. */
                cr_assert(!linked, "%s: byte %zu ^ %02x passed the link check", type_name(ev.type),
                          at, masks[m]);
                decode_failures += !decoded;
                total++;
            }
        }
        /* Structure bytes are refused by decode on its own. */
        cr_assert_gt(decode_failures, total / 4);
    }
}

Test(event, a_chain_of_1000_events_checks_link_by_link)
{
    enum { N = 1000 };
    static uint8_t bytes[N][EVENT_BYTES_MAX];
    static size_t sizes[N];
    uint8_t prev[BUDGET_HASH_BYTES] = {0};
    for (int i = 0; i < N; i++) {
        ledger_event ev = typical_event(all_types[i % TYPES], (uint64_t)i + 1);
        uint8_t hash[BUDGET_HASH_BYTES];
        sizes[i] = encode(&ev, prev, bytes[i], hash);
        memcpy(prev, hash, sizeof prev);
    }

    /* Walks the chain as an auditor does: the index of the first bad link, or N. */
#define FIRST_BAD(result)                                                                          \
    do {                                                                                           \
        uint8_t p_[BUDGET_HASH_BYTES] = {0};                                                       \
        (result) = N;                                                                              \
        for (int i_ = 0; i_ < N; i_++) {                                                           \
            uint64_t seq_;                                                                         \
            ledger_event ev_;                                                                      \
            if (event_check_link(bytes[i_], sizes[i_], p_, NULL) != 0 ||                           \
                event_seq(bytes[i_], sizes[i_], &seq_) != 0 || seq_ != (uint64_t)i_ + 1 ||         \
                event_decode(bytes[i_], sizes[i_], &ev_) != 0) {                                   \
                (result) = i_;                                                                     \
                break;                                                                             \
            }                                                                                      \
            const uint8_t *h_;                                                                     \
            cr_assert_eq(event_link(bytes[i_], sizes[i_], NULL, &h_), 0);                          \
            memcpy(p_, h_, BUDGET_HASH_BYTES);                                                     \
        }                                                                                          \
    } while (0)

    int bad;
    FIRST_BAD(bad);
    cr_assert_eq(bad, N, "an untouched chain fails at %d", bad);

    const int victims[] = {0, 1, 2, 499, 998, 999};
    for (size_t v = 0; v < sizeof victims / sizeof victims[0]; v++) {
        int k = victims[v];
        /* A value byte (inside the data map), the seq, a prev byte and a hash byte. */
        size_t positions[] = {sizes[k] / 2, 5, sizes[k] - 40, sizes[k] - 1};
        for (size_t q = 0; q < 4; q++) {
            size_t at = positions[q];
            bytes[k][at] ^= 0x01;
            FIRST_BAD(bad);
            cr_assert_eq(bad, k, "byte %zu of event %d changed, first bad: %d", at, k, bad);
            bytes[k][at] ^= 0x01;
        }
    }
    FIRST_BAD(bad);
    cr_assert_eq(bad, N);
#undef FIRST_BAD
}

/* ---- msgpack-c reads what we write
 * ---------------------------------------------------------------------- */

static bool str_is(msgpack_object o, const char *s)
{
    return o.type == MSGPACK_OBJECT_STR && o.via.str.size == strlen(s) &&
           memcmp(o.via.str.ptr, s, o.via.str.size) == 0;
}

static int64_t int_of(msgpack_object o)
{
    cr_assert(o.type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
              o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER);
    return o.type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o.via.u64 : o.via.i64;
}

/* The value a data key of `ev` must hold, as msgpack-c sees it. */
static void expect_data_value(const ledger_event *ev, const char *key, msgpack_object v)
{
    const char *s = NULL;
    if (strcmp(key, "id") == 0)
        s = ev->id;
    else if (strcmp(key, "frame") == 0)
        s = ev->frame;
    else if (strcmp(key, "allocation") == 0)
        s = ev->allocation;
    else if (strcmp(key, "target") == 0)
        s = ev->target;
    else if (strcmp(key, "unit") == 0)
        s = ev->unit;
    else if (strcmp(key, "title") == 0 || strcmp(key, "reason") == 0 || strcmp(key, "purpose") == 0)
        s = ev->title;
    else if (strcmp(key, "reference") == 0)
        s = ev->reference;
    else if (strcmp(key, "note") == 0)
        s = ev->note;
    else if (strcmp(key, "target_kind") == 0)
        s = ev->target_kind == LEDGER_KIND_ALLOCATION ? "allocation" : "avrop";
    if (s != NULL) {
        cr_assert(str_is(v, s), "data.%s", key);
        return;
    }
    if (strcmp(key, "year") == 0)
        cr_assert_eq(int_of(v), ev->year);
    else if (strcmp(key, "amount") == 0 || strcmp(key, "delta") == 0)
        cr_assert_eq(int_of(v), ev->amount, "data.%s", key);
    else
        cr_assert_fail("unexpected key %s", key);
}

static void cross_check(const ledger_event *ev, const uint8_t *prev)
{
    uint8_t buf[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
    size_t n = encode(ev, prev, buf, hash);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(off, n, "bytes after the map");
    msgpack_object root = u.data;
    cr_assert_eq(root.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(root.via.map.size, 7);
    const char *keys[] = {"seq", "ts", "actor", "type", "data", "prev", "hash"};
    msgpack_object_kv *kv = root.via.map.ptr;
    for (int i = 0; i < 7; i++)
        cr_assert(str_is(kv[i].key, keys[i]), "key %d is not %s", i, keys[i]);
    cr_assert_eq(kv[0].val.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    cr_assert_eq(kv[0].val.via.u64, ev->seq);
    cr_assert_eq(kv[1].val.via.u64, ev->ts_ms);
    msgpack_object actor = kv[2].val;
    cr_assert_eq(actor.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(actor.via.map.size, 2);
    cr_assert(str_is(actor.via.map.ptr[0].key, "uid"));
    cr_assert_eq(actor.via.map.ptr[0].val.via.u64, ev->actor.uid);
    cr_assert(str_is(actor.via.map.ptr[1].key, "name"));
    cr_assert(str_is(actor.via.map.ptr[1].val, ev->actor.name));
    cr_assert(str_is(kv[3].val, type_name(ev->type)));
    msgpack_object data = kv[4].val;
    cr_assert_eq(data.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(data.via.map.size, key_count(ev->type));
    for (size_t i = 0; i < key_count(ev->type); i++) {
        const char *key = data_keys[ev->type][i];
        cr_assert(str_is(data.via.map.ptr[i].key, key), "%s: data key %zu is not %s",
                  type_name(ev->type), i, key);
        expect_data_value(ev, key, data.via.map.ptr[i].val);
    }
    cr_assert_eq(kv[5].val.type, MSGPACK_OBJECT_BIN);
    cr_assert_eq(kv[5].val.via.bin.size, 32);
    cr_assert_eq(memcmp(kv[5].val.via.bin.ptr, prev, 32), 0);
    cr_assert_eq(kv[6].val.type, MSGPACK_OBJECT_BIN);
    cr_assert_eq(kv[6].val.via.bin.size, 32);
    cr_assert_eq(memcmp(kv[6].val.via.bin.ptr, hash, 32), 0);
    msgpack_unpacked_destroy(&u);
}

Test(event, msgpack_c_reads_the_documented_keys_in_order)
{
    uint8_t prev[BUDGET_HASH_BYTES];
    memset(prev, 0x11, sizeof prev);
    for (int k = 0; k < TYPES; k++) {
        ledger_event a = typical_event(all_types[k], 7);
        ledger_event b = max_event(all_types[k]);
        cross_check(&a, prev);
        cross_check(&b, zero_prev);
    }
}

/*
 * Packs an event with msgpack-c, entry by entry, with its hash: the independent way to the
 * same bytes. `mutate` names one departure from the canonical event, or NULL.
 */
typedef struct {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
} packer;

static void pack_str(packer *p, const char *s)
{
    msgpack_pack_str_with_body(&p->pk, s, strlen(s));
}

static bool is(const char *mutate, const char *name)
{
    return mutate != NULL && strcmp(mutate, name) == 0;
}

static void pack_data_value(packer *p, const ledger_event *ev, const char *key, const char *mutate)
{
    if (strcmp(key, "year") == 0) {
        if (is(mutate, "year-nil"))
            msgpack_pack_nil(&p->pk);
        else if (is(mutate, "year-int16"))
            msgpack_pack_fix_int16(&p->pk, (int16_t)ev->year);
        else
            msgpack_pack_int64(&p->pk, ev->year);
        return;
    }
    if (strcmp(key, "amount") == 0 || strcmp(key, "delta") == 0) {
        if (is(mutate, "amount-int64"))
            msgpack_pack_fix_int64(&p->pk, ev->amount);
        else if (is(mutate, "amount-int16"))
            msgpack_pack_fix_int16(&p->pk, (int16_t)ev->amount);
        else if (is(mutate, "amount-str"))
            pack_str(p, "100");
        else
            msgpack_pack_int64(&p->pk, ev->amount);
        return;
    }
    const char *s = NULL;
    if (strcmp(key, "id") == 0)
        s = ev->id;
    else if (strcmp(key, "frame") == 0)
        s = ev->frame;
    else if (strcmp(key, "allocation") == 0)
        s = ev->allocation;
    else if (strcmp(key, "target") == 0)
        s = ev->target;
    else if (strcmp(key, "unit") == 0)
        s = ev->unit;
    else if (strcmp(key, "title") == 0 || strcmp(key, "reason") == 0 || strcmp(key, "purpose") == 0)
        s = ev->title;
    else if (strcmp(key, "reference") == 0)
        s = ev->reference;
    else if (strcmp(key, "note") == 0)
        s = ev->note;
    else if (strcmp(key, "target_kind") == 0)
        s = ev->target_kind == LEDGER_KIND_ALLOCATION ? "allocation" : "avrop";
    cr_assert_not_null(s);
    if (strcmp(key, "id") == 0 && is(mutate, "id-str8")) {
        uint8_t head[2] = {0xd9, (uint8_t)strlen(s)};
        msgpack_sbuffer_write(&p->sbuf, (const char *)head, 2);
        msgpack_sbuffer_write(&p->sbuf, s, strlen(s));
        return;
    }
    if (strcmp(key, "id") == 0 && is(mutate, "id-as-bin")) {
        msgpack_pack_bin_with_body(&p->pk, s, strlen(s));
        return;
    }
    if (strcmp(key, "id") == 0 && is(mutate, "id-nul")) {
        msgpack_pack_str_with_body(&p->pk, "a\0b", 3);
        return;
    }
    bool is_title =
        strcmp(key, "title") == 0 || strcmp(key, "reason") == 0 || strcmp(key, "purpose") == 0;
    if (is_title && is(mutate, "title-nul")) {
        msgpack_pack_str_with_body(&p->pk, "a\0b", 3);
        return;
    }
    if (strcmp(key, "note") == 0 && is(mutate, "note-nul")) {
        msgpack_pack_str_with_body(&p->pk, "a\0b", 3);
        return;
    }
    pack_str(p, s);
}

static size_t pack_event(const ledger_event *ev, const uint8_t *prev, const char *mutate,
                         uint8_t *out, size_t cap)
{
    packer p;
    msgpack_sbuffer_init(&p.sbuf);
    msgpack_packer_init(&p.pk, &p.sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&p.pk, 7);
    pack_str(&p, is(mutate, "key-seq") ? "Seq" : "seq");
    if (is(mutate, "seq-uint64"))
        msgpack_pack_fix_uint64(&p.pk, ev->seq);
    else
        msgpack_pack_uint64(&p.pk, ev->seq);
    pack_str(&p, "ts");
    if (is(mutate, "ts-str"))
        pack_str(&p, "1632816000000");
    else
        msgpack_pack_uint64(&p.pk, ev->ts_ms);
    pack_str(&p, "actor");
    msgpack_pack_map(&p.pk, is(mutate, "actor-3") ? 3 : 2);
    pack_str(&p, "uid");
    if (is(mutate, "uid-33bit"))
        msgpack_pack_uint64(&p.pk, UINT64_C(1) << 32);
    else if (is(mutate, "uid-nil"))
        msgpack_pack_nil(&p.pk);
    else
        msgpack_pack_uint32(&p.pk, ev->actor.uid);
    pack_str(&p, "name");
    pack_str(&p, ev->actor.name);
    if (is(mutate, "actor-3")) {
        pack_str(&p, "gid");
        msgpack_pack_uint32(&p.pk, 0);
    }
    pack_str(&p, "type");
    pack_str(&p, is(mutate, "type-unknown") ? "frame.grant" : type_name(ev->type));
    pack_str(&p, "data");
    size_t count = key_count(ev->type);
    size_t packed =
        count + (is(mutate, "data-extra") ? 1 : 0) - (is(mutate, "data-missing") ? 1 : 0);
    msgpack_pack_map(&p.pk, packed);
    for (size_t i = 0; i < count; i++) {
        size_t j = i;
        if (is(mutate, "data-swap") && i < 2)
            j = 1 - i;
        if (is(mutate, "data-missing") && i == count - 1)
            break;
        if (is(mutate, "key-renamed") && i == count - 1)
            pack_str(&p, "referens");
        else
            pack_str(&p, data_keys[ev->type][j]);
        pack_data_value(&p, ev, data_keys[ev->type][j], mutate);
    }
    if (is(mutate, "data-extra")) {
        pack_str(&p, "extra");
        pack_str(&p, "x");
    }
    pack_str(&p, "prev");
    msgpack_pack_bin_with_body(&p.pk, prev, is(mutate, "prev-31") ? 31 : 32);
    /* hash = SHA-256(prev || the map as 6 entries without hash) */
    uint8_t hash[BUDGET_HASH_BYTES];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, prev, 32);
    uint8_t map6 = 0x86;
    crypto_hash_sha256_update(&st, &map6, 1);
    crypto_hash_sha256_update(&st, (const uint8_t *)p.sbuf.data + 1, p.sbuf.size - 1);
    crypto_hash_sha256_final(&st, hash);
    pack_str(&p, "hash");
    msgpack_pack_bin_with_body(&p.pk, hash, 32);
    if (is(mutate, "trailing"))
        msgpack_pack_nil(&p.pk);
    cr_assert_leq(p.sbuf.size, cap);
    size_t n = p.sbuf.size;
    memcpy(out, p.sbuf.data, n);
    msgpack_sbuffer_destroy(&p.sbuf);
    return n;
}

Test(event, msgpack_c_packs_the_same_bytes)
{
    uint8_t prev[BUDGET_HASH_BYTES];
    memset(prev, 0x77, sizeof prev);
    for (int k = 0; k < TYPES; k++) {
        for (int variant = 0; variant < 2; variant++) {
            ledger_event ev =
                variant ? max_event(all_types[k]) : typical_event(all_types[k], 1234567);
            uint8_t ours[EVENT_BYTES_MAX], theirs[4096], hash[BUDGET_HASH_BYTES];
            size_t n = encode(&ev, prev, ours, hash);
            size_t m = pack_event(&ev, prev, NULL, theirs, sizeof theirs);
            cr_assert_eq(n, m, "%s: %zu bytes, msgpack-c %zu", type_name(ev.type), n, m);
            cr_assert_eq(memcmp(ours, theirs, n), 0, "%s differs from msgpack-c",
                         type_name(ev.type));
        }
    }
}

/* ---- strictness
 * ------------------------------------------------------------------------------------------- */

/* An event packed by msgpack-c with one mutation: its link is sound, decode must refuse it. */
static void expect_refused(ledger_event ev, const char *mutate)
{
    uint8_t buf[4096];
    size_t n = pack_event(&ev, zero_prev, mutate, buf, sizeof buf);
    ledger_event got;
    cr_assert_eq(event_decode(buf, n, &got), BUDGET_EINTERNAL, "decoded: %s (%s)",
                 mutate ? mutate : "as is", type_name(ev.type));
}

static void expect_accepted(ledger_event ev)
{
    uint8_t buf[4096];
    size_t n = pack_event(&ev, zero_prev, NULL, buf, sizeof buf);
    ledger_event got;
    cr_assert_eq(event_decode(buf, n, &got), 0, "refused %s", type_name(ev.type));
    expect_same_event(&ev, &got);
}

Test(event, decode_refuses_other_shapes)
{
    const char *mutations[] = {"key-seq",      "seq-uint64", "actor-3",      "uid-33bit",
                               "type-unknown", "data-extra", "data-missing", "data-swap",
                               "prev-31",      "trailing",   "year-int16",   "amount-int64",
                               "id-str8",      "id-as-bin",  "id-nul",       "year-nil",
                               "amount-str",   "ts-str",     "uid-nil",      "key-renamed"};
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = typical_event(all_types[k], 9);
        expect_accepted(ev);
        for (size_t i = 0; i < sizeof mutations / sizeof mutations[0]; i++)
            expect_refused(ev, mutations[i]);
    }
    expect_refused(typical_event(LEDGER_AVROP_REQUESTED, 9), "note-nul");
    expect_refused(typical_event(LEDGER_FRAME_GRANTED, 9), "title-nul");
    expect_refused(typical_event(LEDGER_FRAME_ADJUSTED, 9), "title-nul");
    expect_refused(typical_event(LEDGER_ALLOCATION_PROPOSED, 9), "title-nul");
    /* A negative delta in a longer form than it needs. */
    ledger_event small = typical_event(LEDGER_FRAME_ADJUSTED, 9);
    small.amount = -5;
    expect_accepted(small);
    expect_refused(small, "amount-int16");
    small.amount = -100;
    expect_refused(small, "amount-int16");
    small.amount = -1000;
    expect_accepted(small);
    small.amount = 200; /* a positive int16 is the uint16's longer twin */
    expect_refused(small, "amount-int16");
    expect_refused(typical_event(LEDGER_REQUEST_WITHDRAWN, 9), "note-nul");
}

Test(event, decode_refuses_values_out_of_their_limits)
{
    ledger_event ev;
    ev = typical_event(LEDGER_FRAME_GRANTED, 3);
    ev.year = 1899;
    expect_refused(ev, NULL);
    ev.year = 10000;
    expect_refused(ev, NULL);
    ev = typical_event(LEDGER_FRAME_GRANTED, 3);
    ev.amount = 0;
    expect_refused(ev, NULL);
    ev.amount = -5;
    expect_refused(ev, NULL);
    ev.amount = MAX + 1;
    expect_refused(ev, NULL);
    ev.amount = MAX;
    expect_accepted(ev);
    ev = typical_event(LEDGER_FRAME_ADJUSTED, 3);
    ev.amount = 0;
    expect_refused(ev, NULL);
    ev.amount = -MAX - 1;
    expect_refused(ev, NULL);
    ev.amount = -MAX;
    expect_accepted(ev);
    ev = typical_event(LEDGER_DECISION_APPROVED, 3);
    ev.amount = -1;
    expect_refused(ev, NULL);

    ev = typical_event(LEDGER_FRAME_GRANTED, 3);
    PUT(ev.id, "a b");
    expect_refused(ev, NULL);
    PUT(ev.id, "");
    expect_refused(ev, NULL);
    fill(ev.id, 64, 'i');
    expect_accepted(ev);
    ev = typical_event(LEDGER_FRAME_GRANTED, 3);
    PUT(ev.unit, "SÖN");
    expect_refused(ev, NULL);
    fill(ev.unit, 32, 'u');
    expect_accepted(ev);
    ev.title[0] = '\0';
    expect_refused(ev, NULL);
    ev = typical_event(LEDGER_DECISION_REJECTED, 3);
    PUT(ev.frame, "f/1");
    expect_refused(ev, NULL);
    ev = typical_event(LEDGER_AVROP_REQUESTED, 3);
    PUT(ev.allocation, "a:1");
    expect_accepted(ev);
    PUT(ev.allocation, "a;1");
    expect_refused(ev, NULL);
}

/* Packs an event whose string field is longer than ledger_event can hold. */
static void expect_refused_long(ledger_type type, const char *key, size_t len)
{
    ledger_event ev = typical_event(type, 5);
    uint8_t buf[4096];
    size_t n = pack_event(&ev, zero_prev, NULL, buf, sizeof buf);
    /* Re-pack by hand with the long value in place of `key`'s. */
    packer p;
    msgpack_sbuffer_init(&p.sbuf);
    msgpack_packer_init(&p.pk, &p.sbuf, msgpack_sbuffer_write);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    char *long_value = malloc(len);
    memset(long_value, 'x', len);
    msgpack_object root = u.data;
    msgpack_pack_map(&p.pk, 7);
    for (uint32_t i = 0; i < 7; i++) {
        msgpack_object_kv *kv = &root.via.map.ptr[i];
        msgpack_pack_object(&p.pk, kv->key);
        if (str_is(kv->key, "data")) {
            msgpack_pack_map(&p.pk, kv->val.via.map.size);
            for (uint32_t j = 0; j < kv->val.via.map.size; j++) {
                msgpack_object_kv *d = &kv->val.via.map.ptr[j];
                msgpack_pack_object(&p.pk, d->key);
                if (str_is(d->key, key))
                    msgpack_pack_str_with_body(&p.pk, long_value, len);
                else
                    msgpack_pack_object(&p.pk, d->val);
            }
        } else if (str_is(kv->key, "actor") && strcmp(key, "name") == 0) {
            msgpack_pack_map(&p.pk, 2);
            msgpack_pack_object(&p.pk, kv->val.via.map.ptr[0].key);
            msgpack_pack_object(&p.pk, kv->val.via.map.ptr[0].val);
            msgpack_pack_object(&p.pk, kv->val.via.map.ptr[1].key);
            msgpack_pack_str_with_body(&p.pk, long_value, len);
        } else {
            msgpack_pack_object(&p.pk, kv->val);
        }
    }
    ledger_event got;
    int rc = event_decode((const uint8_t *)p.sbuf.data, p.sbuf.size, &got);
    cr_assert_eq(rc, BUDGET_EINTERNAL, "%s of %zu bytes decoded", key, len);
    free(long_value);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&p.sbuf);
}

Test(event, decode_refuses_strings_over_their_limits)
{
    expect_refused_long(LEDGER_FRAME_GRANTED, "id", 65);
    expect_refused_long(LEDGER_FRAME_GRANTED, "unit", 33);
    expect_refused_long(LEDGER_FRAME_GRANTED, "title", 257);
    expect_refused_long(LEDGER_FRAME_GRANTED, "reference", 257);
    expect_refused_long(LEDGER_FRAME_GRANTED, "reference", 70000);
    expect_refused_long(LEDGER_FRAME_ADJUSTED, "reason", 257);
    expect_refused_long(LEDGER_ALLOCATION_PROPOSED, "purpose", 257);
    expect_refused_long(LEDGER_AVROP_REQUESTED, "allocation", 65);
    expect_refused_long(LEDGER_AVROP_REQUESTED, "note", 257);
    expect_refused_long(LEDGER_DECISION_APPROVED, "target", 65);
    expect_refused_long(LEDGER_DECISION_APPROVED, "frame", 65);
    expect_refused_long(LEDGER_REQUEST_WITHDRAWN, "name", 65);
}

Test(event, decode_refuses_every_truncation_and_extension)
{
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = typical_event(all_types[k], 77);
        uint8_t buf[EVENT_BYTES_MAX + 1];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        ledger_event got;
        for (size_t len = 0; len < n; len++)
            cr_assert_eq(event_decode(buf, len, &got), BUDGET_EINTERNAL, "%zu of %zu bytes", len,
                         n);
        buf[n] = 0xc0;
        cr_assert_eq(event_decode(buf, n + 1, &got), BUDGET_EINTERNAL);
        cr_assert_eq(event_decode(buf, n, &got), 0);
        cr_assert_eq(event_link(buf, n - 1, NULL, NULL), BUDGET_EINTERNAL);
        const char *why = NULL;
        cr_assert_eq(event_check_link(buf, 10, zero_prev, &why), BUDGET_EINTERNAL);
        cr_assert_str_eq(why, "malformed");
    }
    uint64_t seq;
    cr_assert_eq(event_seq((const uint8_t *)"\x87\xa3seq", 5, &seq), BUDGET_EINTERNAL);
    cr_assert_eq(event_seq((const uint8_t *)"\x87\xa3seq\x05", 6, &seq), 0);
    cr_assert_eq(seq, 5);
    cr_assert_eq(event_seq((const uint8_t *)"\x86\xa3seq\x05", 6, &seq), BUDGET_EINTERNAL);
    cr_assert_eq(event_seq((const uint8_t *)"\x87\xa3seq\xcc\x05", 7, &seq), BUDGET_EINTERNAL);
}

/* ---- encoding limits
 * ------------------------------------------------------------------------------------------ */

Test(event, encode_needs_room_and_a_well_formed_event)
{
    ledger_event ev = typical_event(LEDGER_DECISION_APPROVED, 12);
    uint8_t buf[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
    size_t n = encode(&ev, zero_prev, buf, hash);
    uint8_t exact[EVENT_BYTES_MAX];
    cr_assert_eq(event_encode(&ev, zero_prev, exact, n, NULL), (int)n);
    cr_assert_eq(memcmp(exact, buf, n), 0);
    cr_assert_eq(event_encode(&ev, zero_prev, exact, n - 1, NULL), BUDGET_EINTERNAL);
    cr_assert_eq(event_encode(&ev, zero_prev, exact, 0, NULL), BUDGET_EINTERNAL);

    ledger_event bad = ev;
    bad.type = 0;
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad.type = 8;
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    bad.target_kind = LEDGER_KIND_FRAME;
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    PUT(bad.id, "a b");
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    memset(bad.note, 'x', sizeof bad.note); /* no NUL */
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    bad.amount = 0;
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    memset(bad.actor.name, 'x', sizeof bad.actor.name);
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);

    /* Fields a type does not have are not encoded. */
    ledger_event extra = ev;
    PUT(extra.allocation, "ignored");
    PUT(extra.title, "ignored");
    uint8_t other[EVENT_BYTES_MAX];
    cr_assert_eq(event_encode(&extra, zero_prev, other, sizeof other, NULL), (int)n);
    cr_assert_eq(memcmp(other, exact, n), 0);
}

Test(event, the_largest_event_fits)
{
    size_t largest = 0;
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = max_event(all_types[k]);
        /* All text at its limit in one-byte characters too. */
        uint8_t buf[EVENT_BYTES_MAX];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        if (n > largest)
            largest = n;
    }
    cr_assert_leq(largest, EVENT_BYTES_MAX);
    cr_assert_gt(largest, 900); /* the maximum event really is at its limits */
}
