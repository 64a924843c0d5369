/*
 * Events on disk and on the wire: the canonical msgpack encoding of a ledger_event, its hash
 * chain link, and the fast decoder used by replay.
 *
 * Encoding: a 7-entry map, keys in this order: seq, ts, actor {uid, name}, type, data, prev,
 * hash; every value in its shortest form; data's keys in the order of docs/events.md.
 * hash = SHA-256(prev || the same map as a 6-entry map without "hash"). The hash entry is
 * always the last 39 bytes (a4 "hash" c4 20 <32 bytes>), prev the 39 before them.
 */
#ifndef BUDGET_EVENT_H
#define BUDGET_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "budget/protocol.h"
#include "ledger.h"

/* Bytes at the end of every encoded event taken by the prev and hash entries. */
#define EVENT_HASH_TAIL_BYTES 39
/* An encoded event is never longer than this (all strings at their limits): a budget.adopted
 * of BUDGET_ADOPT_LINES_MAX lines, each at most 228 bytes, and the rest under 1.2 KiB. */
#define EVENT_BYTES_MAX 16384

/*
 * Encodes `ev` with `prev` into `out` (capacity `cap`, EVENT_BYTES_MAX always suffices),
 * computes its hash into `hash`. Returns the encoded size, or BUDGET_EINTERNAL if `cap` is
 * too small.
 */
int event_encode(const ledger_event *ev, const uint8_t prev[BUDGET_HASH_BYTES], uint8_t *out,
                 size_t cap, uint8_t hash[BUDGET_HASH_BYTES]);

/*
 * Decodes an encoded event into `ev`. Returns 0, or BUDGET_EINTERNAL when the bytes are not a
 * well-formed event (wrong keys, order, types, or a field over its limit). Does not check
 * the hash: see event_check_link.
 */
int event_decode(const uint8_t *bytes, size_t size, ledger_event *ev);

/* The prev and hash stored in an encoded event (views into `bytes`); 0 or BUDGET_EINTERNAL. */
int event_link(const uint8_t *bytes, size_t size, const uint8_t **prev, const uint8_t **hash);

/*
 * Checks one link of the chain: the event's stored prev equals `prev`, and its stored hash is
 * SHA-256(prev || the event without hash). Returns 0, or BUDGET_EINTERNAL with `why` set to
 * "prev" or "hash" or "malformed".
 */
int event_check_link(const uint8_t *bytes, size_t size, const uint8_t prev[BUDGET_HASH_BYTES],
                     const char **why);

/* One piece of a message to hash. */
typedef struct {
    const void *bytes;
    size_t size;
} event_span;

/*
 * SHA-256 of the concatenation of `count` spans, the one hash budgetd uses for its chain
 * (OpenSSL's, else libsodium's). Safe to call from any thread.
 */
void event_sha256(const event_span *parts, size_t count, uint8_t out[BUDGET_HASH_BYTES]);

/* The same with libsodium's portable code: what event_sha256 falls back to. */
void event_sha256_portable(const event_span *parts, size_t count, uint8_t out[BUDGET_HASH_BYTES]);

/* Only the seq of an encoded event, cheaply; 0 or BUDGET_EINTERNAL. */
int event_seq(const uint8_t *bytes, size_t size, uint64_t *seq);

#endif
