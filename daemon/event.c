/*
 * Events on disk and on the wire (event.h): the canonical msgpack encoding of a ledger_event,
 * its hash chain link, and the decoder that start-up replay runs once per event.
 *
 * An event is a 7-entry map, keys in this order:
 *
 *   seq    uint     1, 2, 3, ... without gaps
 *   ts     uint     milliseconds since 1970-01-01T00:00:00Z
 *   actor  map      {"uid": uint (32 bits), "name": str (0..64 bytes)}
 *   type   str      the event type, below
 *   data   map      the type's fields, below, keys in exactly this order
 *   prev   bin 32   hash of the event before (32 zero bytes for event 1)
 *   hash   bin 32   SHA-256(prev || this map as a 6-entry map without "hash")
 *
 * data, per type (the field tables of event_types.c):
 *
 *   frame.granted        id, unit, year, amount, title, DECISION, reference[, avrop_last_day][,
 *                        continues]
 *   frame.adjusted       id, frame, unit, year, delta, reason, DECISION, reference
 *   allocation.proposed  id, frame, unit, year, amount, purpose[, avrop_last_day]
 *   avrop.requested      id, allocation, frame, unit, year, amount, note
 *   decision.approved    id, target, target_kind, frame, unit, year, amount, DECISION,
 *                        reference, note
 *   decision.rejected    (as decision.approved)
 *   request.withdrawn    id, target, target_kind, frame, unit, year, amount, note
 *   allocation.reduction_requested  id, allocation, frame, unit, year, amount, reason
 *   avrop.reversal_requested        id, avrop, allocation, frame, unit, year, amount, reason
 *   unit.registered      id, unit, name, kind, parent, reference
 *   unit.renamed         id, unit, name, reference
 *   unit.closed          id, unit, reference
 *   year.closed          id, year, unspent, decision_body, decision_date,
 *                        decision_paragraph, decision_dnr, note
 *   frame.carried_over   id, frame, unit, year, amount, title, avrop_last_day, decision_body,
 *                        decision_date, decision_paragraph, decision_dnr
 *   budget.adopted       id, year, plan_until, title, lines, DECISION
 *   outcome.recorded     id, unit, year, month, allocation, amount, source
 *
 * where DECISION is decision_body, decision_date, decision_paragraph, decision_dnr: fields
 * added to frame.granted, frame.adjusted and the decisions (FIELD_ADDED) after events of them
 * were written. An event written before has none of the four (its data map is four entries
 * shorter) and is read and written back in that form. The fields in [ ] were added in later
 * rounds still (field_round): avrop_last_day (round 2, also of allocation.proposed), then
 * continues (round 3), so a frame.granted event has 6, 10, 11 or 12 entries: an event is
 * written with the rounds up to the last of which it has a field that is not empty.
 * budget.adopted always has all its fields.
 *
 * with
 *
 *   id, frame, allocation, target, avrop  str, 1..64 of A-Za-z0-9._:-
 *   unit                            str, 1..32 of A-Za-z0-9._:-
 *   parent                          str, "" or 1..32 of A-Za-z0-9._:-
 *   year                            int, 1900..9999
 *   amount                          int, 1..10^15 (öre)
 *   delta                           int, non-zero, -10^15..10^15 (öre)
 *   month                           int, 1..12
 *   outcome.recorded's amount       int, -10^15..10^15, zero too (öre)
 *   outcome.recorded's allocation   str, "" or an id
 *   title, reason, purpose, name    str, 1..256 bytes of UTF-8
 *   kind                            str, 1..15 bytes of UTF-8 (one of the unit kinds)
 *   reference, note                 str, 0..256 bytes of UTF-8
 *   target_kind                     str, "allocation", "avrop", "reduction" or "reversal"
 *   unspent                         int, 0..2^63-1 (öre)
 *   continues                       str, a frame id; frame.granted writes it only when set
 *   plan_until                      int, year..year+10
 *   lines                           array of 1..64 maps {unit, amount, plan: [int 0..10^15,
 *                                   plan_until - year of them], continues: "" or a frame id}
 *   decision_body                   str, 1..16 of A-Z Å Ä Ö 0-9, a letter first
 *   decision_date                   str, "YYYY-MM-DD", a real day of 1900..9999
 *   decision_paragraph              str, 1..16, a digit first ("241", "241 p. 2")
 *   decision_dnr                    str, 0..64 bytes of UTF-8
 *   avrop_last_day                  str, "YYYY-MM-DD"; an absent one is "", or (added to
 *                                   frame.granted and allocation.proposed) left out, the
 *                                   data map being that of the older events
 *
 * Every value is in its shortest msgpack form (non-negative integers as uint), so one event
 * has exactly one encoding and re-encoding a decoded event gives the same bytes. In the
 * ledger_event, delta is `amount`, reason and purpose are `title`, and avrop is `target`.
 */
#include "event.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <string.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/fields.h"
#include "proto/mp.h"

/* The data map of each type is its field table (event_types.c): the keys in order, each
 * value's rule (field_value) and its member of ledger_event. */
typedef event_field field;

/* The fixed parts of the envelope, as encoded. */
static const uint8_t MAP7 = 0x87, MAP6 = 0x86, ACTOR_MAP = 0x82;
static const char KEY_SEQ[] = "\xa3seq", KEY_TS[] = "\xa2ts",
                  KEY_ACTOR[] = "\xa5"
                                "actor",
                  KEY_UID[] = "\xa3uid", KEY_NAME[] = "\xa4name", KEY_TYPE[] = "\xa4type",
                  KEY_DATA[] = "\xa4"
                               "data";
/* The tail: "prev" and "hash", each a key and a bin 8 header of 32. */
static const uint8_t PREV_HEAD[7] = {0xa4, 'p', 'r', 'e', 'v', 0xc4, BUDGET_HASH_BYTES};
static const uint8_t HASH_HEAD[7] = {0xa4, 'h', 'a', 's', 'h', 0xc4, BUDGET_HASH_BYTES};
#define LINK_BYTES (sizeof PREV_HEAD + BUDGET_HASH_BYTES)
_Static_assert(LINK_BYTES == EVENT_HASH_TAIL_BYTES, "the tail is 39 bytes");

/* The smallest possible event is well over this; anything shorter is malformed. */
#define EVENT_BYTES_MIN (1 + 2 * LINK_BYTES)

/* The rule of a str value of field `f`. Text is not scanned for UTF-8 here: it was checked
 * before the event was first written, and the hash chain covers it since. */
static bool str_ok(const field *f, const char *s, size_t len)
{
    switch ((field_value)f->value) {
    case FIELD_ID:
        return (len == 0 && (f->source == FIELD_OPTIONAL || field_bytes_min(f) == 0)) ||
               ledger_valid_id(s, len);
    case FIELD_UNIT:
        return (len == 0 && field_bytes_min(f) == 0) || ledger_valid_unit(s, len);
    case FIELD_TEXT:
        return len >= field_bytes_min(f) && len <= field_bytes_max(f) && memchr(s, 0, len) == NULL;
    case FIELD_BODY:
        return budget_decision_body_valid(s, len);
    case FIELD_PARAGRAPH:
        return budget_decision_paragraph_valid(s, len);
    default:
        return false;
    }
}

static bool int_ok(field_value kind, int64_t v)
{
    switch (kind) {
    case FIELD_YEAR:
        return v >= BUDGET_YEAR_MIN && v <= BUDGET_YEAR_MAX;
    case FIELD_AMOUNT:
        return v >= 1 && v <= BUDGET_AMOUNT_MAX;
    case FIELD_DELTA:
        return v != 0 && v >= -BUDGET_AMOUNT_MAX && v <= BUDGET_AMOUNT_MAX;
    case FIELD_MONTH:
        return v >= 1 && v <= 12;
    case FIELD_MONEY:
        return v >= -BUDGET_AMOUNT_MAX && v <= BUDGET_AMOUNT_MAX;
    case FIELD_DATE:
        return v >= INT32_MIN && v <= INT32_MAX && budget_date_valid((int32_t)v);
    case FIELD_TOTAL:
        return v >= 0;
    default:
        return false;
    }
}

/* The kinds a target_kind may hold. */
static const char *kind_text(ledger_kind k)
{
    return k == LEDGER_KIND_ALLOCATION || k == LEDGER_KIND_AVROP || k == LEDGER_KIND_REDUCTION ||
                   k == LEDGER_KIND_REVERSAL
               ? ledger_kind_name(k)
               : NULL;
}

/* The number of fields of `t` of rounds 0..round (field_round): the size of its data map. */
static uint8_t round_count(const event_type_info *t, unsigned round)
{
    uint8_t n = 0;
    for (uint8_t i = 0; i < t->field_count; i++)
        n += field_round(t->fields[i].flags) <= round;
    return n;
}

/* The round whose layout has a data map with fixmap header `head`, the last round first (the
 * whole map, as every new event of most types has), or FIELD_ROUNDS when none has. */
static unsigned round_of_map(const event_type_info *t, uint8_t head)
{
    if (head == (uint8_t)(0x80 | t->field_count))
        return FIELD_ROUNDS - 1;
    for (unsigned round = FIELD_ROUNDS - 1; round-- > 0;)
        if (head == (uint8_t)(0x80 | round_count(t, round)))
            return round;
    return FIELD_ROUNDS;
}

/* ---- encoding ----------------------------------------------------------------------------- */

/* The keys of a line of budget.adopted, in their order. */
static const char LINE_UNIT[] = "unit", LINE_AMOUNT[] = "amount", LINE_PLAN[] = "plan",
                  LINE_CONTINUES[] = "continues";

/* True when line `x` keeps the rules of a line (docs/events.md, budget.adopted). */
static bool line_ok(const ledger_line *x)
{
    size_t unit_len = strnlen(x->unit, sizeof x->unit);
    size_t cont_len = strnlen(x->continues, sizeof x->continues);
    if (!ledger_valid_unit(x->unit, unit_len) || !int_ok(FIELD_AMOUNT, x->amount) ||
        (cont_len != 0 && !ledger_valid_id(x->continues, cont_len)) ||
        x->plans > BUDGET_PLAN_YEARS_MAX)
        return false;
    for (uint8_t k = 0; k < x->plans; k++)
        if (x->plan[k] < 0 || x->plan[k] > BUDGET_AMOUNT_MAX)
            return false;
    return true;
}

/* Writes the lines of `ev`: an array of maps {unit, amount, plan: [...], continues}. */
static bool write_lines(mp_writer *w, const ledger_event *ev)
{
    const ledger_lines *ls = &ev->lines;
    if (ls->count < 1 || ls->count > BUDGET_ADOPT_LINES_MAX)
        return false;
    mp_write_array(w, ls->count);
    for (uint16_t i = 0; i < ls->count; i++) {
        const ledger_line *x = &ls->line[i];
        if (!line_ok(x))
            return false;
        mp_write_map(w, 4);
        mp_write_str(w, LINE_UNIT, sizeof LINE_UNIT - 1);
        mp_write_cstr(w, x->unit);
        mp_write_str(w, LINE_AMOUNT, sizeof LINE_AMOUNT - 1);
        mp_write_int(w, x->amount);
        mp_write_str(w, LINE_PLAN, sizeof LINE_PLAN - 1);
        mp_write_array(w, x->plans);
        for (uint8_t k = 0; k < x->plans; k++)
            mp_write_int(w, x->plan[k]);
        mp_write_str(w, LINE_CONTINUES, sizeof LINE_CONTINUES - 1);
        mp_write_cstr(w, x->continues);
    }
    return true;
}

/* Writes one data entry; false when the event's value breaks the field's rule. */
static bool write_field(mp_writer *w, const field *f, const ledger_event *ev)
{
    mp_write_str(w, f->key, f->key_len);
    switch ((field_value)f->value) {
    case FIELD_YEAR:
    case FIELD_AMOUNT:
    case FIELD_DELTA:
    case FIELD_TOTAL:
    case FIELD_MONTH:
    case FIELD_MONEY: {
        int64_t v = ledger_field_int(ev, f);
        mp_write_int(w, v);
        return int_ok(f->value, v);
    }
    case FIELD_TARGET_KIND: {
        const char *k = kind_text(ev->target_kind);
        if (k == NULL)
            return false;
        mp_write_cstr(w, k);
        return true;
    }
    case FIELD_DATE: {
        char day[BUDGET_DATE_BYTES + 1];
        /* An optional date that is absent is "" (as an absent optional text is). */
        if (f->source == FIELD_OPTIONAL && ledger_field_int(ev, f) == 0) {
            mp_write_str(w, "", 0);
            return true;
        }
        if (!budget_date_format((int32_t)ledger_field_int(ev, f), day))
            return false;
        mp_write_str(w, day, BUDGET_DATE_BYTES);
        return true;
    }
    case FIELD_LINES:
        return write_lines(w, ev);
    default: {
        const char *s = ledger_field_str(ev, f);
        size_t len = strnlen(s, f->size);
        if (!str_ok(f, s, len))
            return false;
        mp_write_str(w, s, len);
        return true;
    }
    }
}

/*
 * SHA-256 is OpenSSL's (libcrypto), which uses the CPU's SHA extensions where it has them:
 * about four times libsodium's portable code, which every write (event_encode) and every
 * event of `verify` pays for. One EVP_MD is fetched once, and each thread keeps one
 * EVP_MD_CTX that it re-initializes per hash, so hashing allocates nothing once a thread has
 * hashed once. Should OpenSSL fail to give either, the hash is libsodium's: the same digest,
 * slower.
 */
static EVP_MD *sha256_md;
static pthread_key_t sha256_ctx_key;
static bool sha256_key_made;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static _Thread_local EVP_MD_CTX *sha256_ctx;
static _Thread_local bool sha256_ctx_failed;

static void sha256_ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void sha256_setup(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    sha256_key_made = pthread_key_create(&sha256_ctx_key, sha256_ctx_free) == 0;
}

/* This thread's context, made on its first hash and freed when the thread exits; NULL when
 * OpenSSL cannot give one. */
static EVP_MD_CTX *sha256_thread_ctx(void)
{
    if (sha256_ctx != NULL)
        return sha256_ctx;
    if (sha256_ctx_failed)
        return NULL;
    pthread_once(&sha256_once, sha256_setup);
    EVP_MD_CTX *ctx = NULL;
    if (sha256_md != NULL && sha256_key_made && (ctx = EVP_MD_CTX_new()) != NULL &&
        pthread_setspecific(sha256_ctx_key, ctx) == 0) {
        sha256_ctx = ctx;
        return ctx;
    }
    EVP_MD_CTX_free(ctx);
    sha256_ctx_failed = true;
    return NULL;
}

void event_sha256_portable(const event_span *parts, size_t count, uint8_t out[BUDGET_HASH_BYTES])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    for (size_t i = 0; i < count; i++)
        crypto_hash_sha256_update(&st, parts[i].bytes, parts[i].size);
    crypto_hash_sha256_final(&st, out);
}

void event_sha256(const event_span *parts, size_t count, uint8_t out[BUDGET_HASH_BYTES])
{
    EVP_MD_CTX *ctx = sha256_thread_ctx();
    if (ctx != NULL && EVP_DigestInit_ex2(ctx, sha256_md, NULL)) {
        size_t i = 0;
        while (i < count && EVP_DigestUpdate(ctx, parts[i].bytes, parts[i].size))
            i++;
        unsigned int len = 0;
        if (i == count && EVP_DigestFinal_ex(ctx, out, &len) && len == BUDGET_HASH_BYTES)
            return;
    }
    event_sha256_portable(parts, count, out);
}

/* The hash of an encoded event whose first `size` bytes run up to and including prev:
 * SHA-256(prev || MAP6 || bytes[1..size)). */
static void hash_event(const uint8_t prev[BUDGET_HASH_BYTES], const uint8_t *bytes, size_t size,
                       uint8_t hash[BUDGET_HASH_BYTES])
{
    const event_span parts[3] = {
        {prev, BUDGET_HASH_BYTES},
        {&MAP6, 1},
        {bytes + 1, size - 1},
    };
    event_sha256(parts, 3, hash);
}

int event_encode(const ledger_event *ev, const uint8_t prev[BUDGET_HASH_BYTES], uint8_t *out,
                 size_t cap, uint8_t hash[BUDGET_HASH_BYTES])
{
    if (!ledger_type_known(ev->type))
        return BUDGET_EINTERNAL;
    size_t name_len = strnlen(ev->actor.name, sizeof ev->actor.name);
    if (name_len > BUDGET_NAME_BYTES_MAX)
        return BUDGET_EINTERNAL;

    mp_writer w;
    mp_writer_init(&w, out, cap);
    mp_write_raw(&w, &MAP7, 1);
    mp_write_raw(&w, KEY_SEQ, sizeof KEY_SEQ - 1);
    mp_write_uint(&w, ev->seq);
    mp_write_raw(&w, KEY_TS, sizeof KEY_TS - 1);
    mp_write_uint(&w, ev->ts_ms);
    mp_write_raw(&w, KEY_ACTOR, sizeof KEY_ACTOR - 1);
    mp_write_raw(&w, &ACTOR_MAP, 1);
    mp_write_raw(&w, KEY_UID, sizeof KEY_UID - 1);
    mp_write_uint(&w, ev->actor.uid);
    mp_write_raw(&w, KEY_NAME, sizeof KEY_NAME - 1);
    mp_write_str(&w, ev->actor.name, name_len);
    mp_write_raw(&w, KEY_TYPE, sizeof KEY_TYPE - 1);
    mp_write_cstr(&w, ledger_type_name(ev->type));
    mp_write_raw(&w, KEY_DATA, sizeof KEY_DATA - 1);
    const event_type_info *t = &event_types[ev->type];
    /* An event without the fields added to its type in a round keeps the data map of the
     * round before. */
    unsigned round = ledger_added_round(ev);
    mp_write_map(&w, round_count(t, round));
    for (uint8_t i = 0; i < t->field_count; i++)
        if (field_round(t->fields[i].flags) <= round && !write_field(&w, &t->fields[i], ev))
            return BUDGET_EINTERNAL;
    mp_write_raw(&w, PREV_HEAD, sizeof PREV_HEAD);
    mp_write_raw(&w, prev, BUDGET_HASH_BYTES);
    if (w.overflow)
        return BUDGET_EINTERNAL;

    uint8_t digest[BUDGET_HASH_BYTES];
    hash_event(prev, out, w.len, digest);
    mp_write_raw(&w, HASH_HEAD, sizeof HASH_HEAD);
    mp_write_raw(&w, digest, BUDGET_HASH_BYTES);
    if (w.overflow || w.len > EVENT_BYTES_MAX)
        return BUDGET_EINTERNAL;
    if (hash != NULL)
        memcpy(hash, digest, BUDGET_HASH_BYTES);
    return (int)w.len;
}

/* ---- decoding ------------------------------------------------------------------------------ */

/*
 * Readers of the shortest forms only, on an mp_reader cursor, inlined for replay. mp_read_*
 * accept any form of a value; an event has exactly one encoding, so a value in a longer form
 * than it needs is refused here. Each returns false when the next value is not of the kind
 * asked for, is not in its shortest form or is cut short; the cursor is then not to be used.
 */
static inline uint16_t load_be16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t load_be64(const uint8_t *p)
{
    return (uint64_t)load_be32(p) << 32 | load_be32(p + 4);
}

static inline bool read_uint(mp_reader *r, uint64_t *v)
{
    const uint8_t *p = r->p;
    size_t avail = mp_remaining(r);
    if (avail == 0)
        return false;
    switch (p[0]) {
    case 0xcc:
        if (avail < 2 || p[1] <= 0x7f)
            return false;
        *v = p[1];
        r->p += 2;
        return true;
    case 0xcd:
        if (avail < 3 || (*v = load_be16(p + 1)) <= 0xff)
            return false;
        r->p += 3;
        return true;
    case 0xce:
        if (avail < 5 || (*v = load_be32(p + 1)) <= 0xffff)
            return false;
        r->p += 5;
        return true;
    case 0xcf:
        if (avail < 9 || (*v = load_be64(p + 1)) <= 0xffffffff)
            return false;
        r->p += 9;
        return true;
    default:
        if (p[0] > 0x7f)
            return false;
        *v = p[0];
        r->p += 1;
        return true;
    }
}

/* An int: a non-negative one is a uint. */
static inline bool read_int(mp_reader *r, int64_t *v)
{
    const uint8_t *p = r->p;
    size_t avail = mp_remaining(r);
    if (avail == 0)
        return false;
    uint8_t b = p[0];
    if (b <= 0x7f || (b >= 0xcc && b <= 0xcf)) {
        uint64_t u;
        if (!read_uint(r, &u) || u > INT64_MAX)
            return false;
        *v = (int64_t)u;
        return true;
    }
    if (b >= 0xe0) {
        *v = (int8_t)b;
        r->p += 1;
        return true;
    }
    switch (b) {
    case 0xd0:
        if (avail < 2 || (*v = (int8_t)p[1]) >= -32)
            return false;
        r->p += 2;
        return true;
    case 0xd1:
        if (avail < 3 || (*v = (int16_t)load_be16(p + 1)) >= INT8_MIN)
            return false;
        r->p += 3;
        return true;
    case 0xd2:
        if (avail < 5 || (*v = (int32_t)load_be32(p + 1)) >= INT16_MIN)
            return false;
        r->p += 5;
        return true;
    case 0xd3:
        if (avail < 9 || (*v = (int64_t)load_be64(p + 1)) >= INT32_MIN)
            return false;
        r->p += 9;
        return true;
    default:
        return false;
    }
}

/* A str of at most `max` bytes (max < 65536): fixstr, str 8 or str 16. */
static inline bool read_str(mp_reader *r, const char **s, uint32_t *len, uint32_t max)
{
    const uint8_t *p = r->p;
    size_t avail = mp_remaining(r);
    if (avail == 0)
        return false;
    uint8_t b = p[0];
    size_t head;
    uint32_t n;
    if ((b & 0xe0) == 0xa0) {
        head = 1;
        n = b & 0x1fu;
    } else if (b == 0xd9) {
        if (avail < 2 || (n = p[1]) <= 31)
            return false;
        head = 2;
    } else if (b == 0xda) {
        if (avail < 3 || (n = load_be16(p + 1)) <= 0xff)
            return false;
        head = 3;
    } else {
        return false;
    }
    if (n > max || n > avail - head)
        return false;
    *s = (const char *)p + head;
    *len = n;
    r->p += head + n;
    return true;
}

/* Consumes the `n` bytes at the cursor when they are exactly `want`. */
static inline bool expect(mp_reader *r, const void *want, size_t n)
{
    if (mp_remaining(r) < n || memcmp(r->p, want, n) != 0)
        return false;
    r->p += n;
    return true;
}

/* Consumes the key `key` (a fixstr: len < 32) when it is next. */
static inline bool expect_key(mp_reader *r, const char *key, uint8_t len)
{
    const uint8_t *p = r->p;
    if (mp_remaining(r) < 1u + len || p[0] != (0xa0 | len))
        return false;
    for (uint8_t i = 0; i < len; i++)
        if (p[1 + i] != (uint8_t)key[i])
            return false;
    r->p += 1u + len;
    return true;
}

/*
 * Copies a str of `len` bytes and a NUL into `dst` (capacity `cap` > len). Strings are
 * short, and a call to memcpy costs more than the copy: this copies 16 bytes at a time when
 * both the source buffer (which ends at `end`) and `dst` have room for the rounding up.
 */
static inline void copy_str(char *dst, size_t cap, const char *s, size_t len, const uint8_t *end)
{
    size_t rounded = (len + 15) & ~(size_t)15;
    if (rounded < cap && rounded <= (size_t)((const char *)end - s)) {
        for (size_t i = 0; i < rounded; i += 16)
            memcpy(dst + i, s + i, 16);
    } else {
        memcpy(dst, s, len);
    }
    dst[len] = '\0';
}

/* An array or map header of `n` entries in its shortest form (fix or 16-bit); `fix` is 0x90 for
 * an array, 0x80 for a map. */
static bool read_header(mp_reader *r, uint8_t fix, uint32_t *n)
{
    const uint8_t *p = r->p;
    size_t avail = mp_remaining(r);
    if (avail >= 1 && (p[0] & 0xf0) == fix) {
        *n = p[0] & 0x0fu;
        r->p += 1;
        return true;
    }
    uint8_t wide = fix == 0x90 ? 0xdc : 0xde;
    if (avail >= 3 && p[0] == wide && (*n = load_be16(p + 1)) > 15) {
        r->p += 3;
        return true;
    }
    return false;
}

/* One line of budget.adopted into `x`. */
static bool read_line(mp_reader *r, ledger_line *x)
{
    uint32_t n, len;
    const char *s;
    int64_t v;
    if (!read_header(r, 0x80, &n) || n != 4 || !expect_key(r, LINE_UNIT, sizeof LINE_UNIT - 1) ||
        !read_str(r, &s, &len, BUDGET_UNIT_BYTES_MAX) || memchr(s, 0, len) != NULL)
        return false;
    memcpy(x->unit, s, len);
    x->unit[len] = '\0';
    if (!expect_key(r, LINE_AMOUNT, sizeof LINE_AMOUNT - 1) || !read_int(r, &x->amount) ||
        !expect_key(r, LINE_PLAN, sizeof LINE_PLAN - 1) || !read_header(r, 0x90, &n) ||
        n > BUDGET_PLAN_YEARS_MAX)
        return false;
    x->plans = (uint8_t)n;
    for (uint32_t k = 0; k < n; k++) {
        if (!read_int(r, &v))
            return false;
        x->plan[k] = v;
    }
    if (!expect_key(r, LINE_CONTINUES, sizeof LINE_CONTINUES - 1) ||
        !read_str(r, &s, &len, BUDGET_ID_BYTES_MAX) || memchr(s, 0, len) != NULL)
        return false; /* a NUL inside would shorten the text the line is checked and kept as */
    memcpy(x->continues, s, len);
    x->continues[len] = '\0';
    return line_ok(x);
}

/* The lines of budget.adopted. */
static bool read_lines(mp_reader *r, ledger_event *ev)
{
    uint32_t n;
    if (!read_header(r, 0x90, &n) || n < 1 || n > BUDGET_ADOPT_LINES_MAX)
        return false;
    for (uint32_t i = 0; i < n; i++)
        if (!read_line(r, &ev->lines.line[i]))
            return false;
    ev->lines.count = (uint16_t)n;
    return true;
}

static bool read_field(mp_reader *r, const field *f, ledger_event *ev)
{
    if (!expect_key(r, f->key, f->key_len))
        return false;
    int64_t v;
    const char *s;
    uint32_t len;
    switch ((field_value)f->value) {
    case FIELD_YEAR:
    case FIELD_AMOUNT:
    case FIELD_DELTA:
    case FIELD_TOTAL:
    case FIELD_MONTH:
    case FIELD_MONEY:
        if (!read_int(r, &v) || !int_ok(f->value, v))
            return false;
        ledger_field_set_int(ev, f, v);
        return true;
    case FIELD_DATE: {
        int32_t day = 0;
        if (!read_str(r, &s, &len, BUDGET_DATE_BYTES) ||
            (len == 0 ? f->source != FIELD_OPTIONAL : !budget_date_parse(s, len, &day)))
            return false;
        ledger_field_set_int(ev, f, day);
        return true;
    }
    case FIELD_LINES:
        return read_lines(r, ev);
    case FIELD_TARGET_KIND:
        if (!read_str(r, &s, &len, 16))
            return false;
        for (int k = 1; k < (int)LEDGER_KIND_END; k++) {
            const char *name = kind_text((ledger_kind)k);
            if (name != NULL && strlen(name) == len && memcmp(s, name, len) == 0) {
                ev->target_kind = (ledger_kind)k;
                return true;
            }
        }
        return false;
    default:
        if (!read_str(r, &s, &len, (uint32_t)field_bytes_max(f)) || !str_ok(f, s, len))
            return false;
        copy_str((char *)ev + f->offset, f->size, s, len, r->end);
        return true;
    }
}

/* Empties the fields of `ev` that the type's data map does not fill. */
static void clear_fields(ledger_event *ev)
{
    ev->id[0] = ev->frame[0] = ev->allocation[0] = ev->target[0] = ev->unit[0] = '\0';
    ev->title[0] = ev->reference[0] = ev->note[0] = ev->unit_kind[0] = ev->parent[0] = '\0';
    ev->decision_body[0] = ev->decision_paragraph[0] = ev->decision_dnr[0] = '\0';
    ev->decision_date = 0;
    ev->avrop_last_day = 0;
    ev->continues[0] = '\0';
    ev->plan_until = 0;
    ev->lines.count = 0;
    ev->target_kind = 0;
    ev->year = 0;
    ev->amount = 0;
}

int event_decode(const uint8_t *bytes, size_t size, ledger_event *ev)
{
    if (size < EVENT_BYTES_MIN || size > EVENT_BYTES_MAX)
        return BUDGET_EINTERNAL;
    mp_reader r;
    mp_reader_init(&r, bytes, size);
    uint64_t seq, ts, uid;
    const char *s;
    uint32_t len;
    if (!expect(&r, &MAP7, 1) || !expect(&r, KEY_SEQ, sizeof KEY_SEQ - 1) || !read_uint(&r, &seq) ||
        !expect(&r, KEY_TS, sizeof KEY_TS - 1) || !read_uint(&r, &ts) ||
        !expect(&r, KEY_ACTOR, sizeof KEY_ACTOR - 1) || !expect(&r, &ACTOR_MAP, 1) ||
        !expect(&r, KEY_UID, sizeof KEY_UID - 1) || !read_uint(&r, &uid) || uid > UINT32_MAX ||
        !expect(&r, KEY_NAME, sizeof KEY_NAME - 1) ||
        !read_str(&r, &s, &len, BUDGET_NAME_BYTES_MAX) || memchr(s, 0, len) != NULL)
        return BUDGET_EINTERNAL;
    ev->seq = seq;
    ev->ts_ms = ts;
    ev->actor.uid = (uint32_t)uid;
    copy_str(ev->actor.name, sizeof ev->actor.name, s, len, r.end);

    if (!expect(&r, KEY_TYPE, sizeof KEY_TYPE - 1) || !read_str(&r, &s, &len, 32))
        return BUDGET_EINTERNAL;
    ledger_type type = ledger_type_from_name(s, len);
    if (!ledger_type_known(type))
        return BUDGET_EINTERNAL;
    ev->type = type;
    const event_type_info *t = &event_types[type];
    if (!expect(&r, KEY_DATA, sizeof KEY_DATA - 1) || mp_remaining(&r) < 1)
        return BUDGET_EINTERNAL;
    /* The whole data map, or one written before a round of fields added to the type, without
     * them. */
    unsigned round = round_of_map(t, *r.p++);
    if (round == FIELD_ROUNDS)
        return BUDGET_EINTERNAL;
    clear_fields(ev);
    for (uint8_t i = 0; i < t->field_count; i++)
        if (field_round(t->fields[i].flags) <= round && !read_field(&r, &t->fields[i], ev))
            return BUDGET_EINTERNAL;

    /* Exactly the link remains. */
    if (mp_remaining(&r) != 2 * LINK_BYTES || !expect(&r, PREV_HEAD, sizeof PREV_HEAD))
        return BUDGET_EINTERNAL;
    r.p += BUDGET_HASH_BYTES;
    if (!expect(&r, HASH_HEAD, sizeof HASH_HEAD))
        return BUDGET_EINTERNAL;
    return 0;
}

/* ---- the chain ---------------------------------------------------------------------------- */

int event_link(const uint8_t *bytes, size_t size, const uint8_t **prev, const uint8_t **hash)
{
    if (size < EVENT_BYTES_MIN || bytes[0] != MAP7)
        return BUDGET_EINTERNAL;
    const uint8_t *h = bytes + size - LINK_BYTES, *p = h - LINK_BYTES;
    if (memcmp(p, PREV_HEAD, sizeof PREV_HEAD) != 0 || memcmp(h, HASH_HEAD, sizeof HASH_HEAD) != 0)
        return BUDGET_EINTERNAL;
    if (prev != NULL)
        *prev = p + sizeof PREV_HEAD;
    if (hash != NULL)
        *hash = h + sizeof HASH_HEAD;
    return 0;
}

int event_check_link(const uint8_t *bytes, size_t size, const uint8_t prev[BUDGET_HASH_BYTES],
                     const char **why)
{
    const char *scratch;
    if (why == NULL)
        why = &scratch;
    const uint8_t *stored_prev, *stored_hash;
    if (event_link(bytes, size, &stored_prev, &stored_hash) != 0) {
        *why = "malformed";
        return BUDGET_EINTERNAL;
    }
    if (memcmp(stored_prev, prev, BUDGET_HASH_BYTES) != 0) {
        *why = "prev";
        return BUDGET_EINTERNAL;
    }
    uint8_t digest[BUDGET_HASH_BYTES];
    hash_event(prev, bytes, size - LINK_BYTES, digest);
    if (memcmp(digest, stored_hash, BUDGET_HASH_BYTES) != 0) {
        *why = "hash";
        return BUDGET_EINTERNAL;
    }
    *why = "";
    return 0;
}

int event_seq(const uint8_t *bytes, size_t size, uint64_t *seq)
{
    mp_reader r;
    mp_reader_init(&r, bytes, size);
    if (!expect(&r, &MAP7, 1) || !expect(&r, KEY_SEQ, sizeof KEY_SEQ - 1) || !read_uint(&r, seq))
        return BUDGET_EINTERNAL;
    return 0;
}
