/*
 * Tamper evidence an auditor can keep: the daemon's Ed25519 signing key (libsodium), signed
 * checkpoints of the hash chain, and a walk of the whole chain over a store snapshot. Used
 * by budgetd (the `checkpoint` and `backup` ops) and by budgetctl (offline audit of a copy).
 * No libuv here.
 *
 * A checkpoint says "event SEQ has hash HASH", signed at TS. Because every event's hash
 * covers its predecessor's, the signature pins the whole history up to SEQ: a log that is
 * later rewritten anywhere at or before SEQ no longer has HASH at SEQ.
 *
 * The signed message is this ASCII text, with a newline after each line:
 *
 *   budgetd checkpoint v1
 *   seq <seq in decimal>
 *   hash <the 32-byte hash in 64 lowercase hex digits>
 *   ts <milliseconds since 1970-01-01T00:00:00Z, in decimal>
 *
 * and the signature is Ed25519 (crypto_sign_detached) over exactly those bytes.
 */
#ifndef BUDGET_CHECKPOINT_H
#define BUDGET_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/protocol.h"
#include "store.h"

/* The key's file in the data folder: libsodium's 64-byte Ed25519 secret key, mode 0600. */
#define CHECKPOINT_KEY_FILE "checkpoint.key"
#define CHECKPOINT_PUBLIC_KEY_BYTES 32
#define CHECKPOINT_SECRET_KEY_BYTES 64
#define CHECKPOINT_SIGNATURE_BYTES 64
/* The signed message is never longer than this. */
#define CHECKPOINT_MESSAGE_BYTES_MAX 160

typedef struct {
    uint8_t public_key[CHECKPOINT_PUBLIC_KEY_BYTES];
    uint8_t secret_key[CHECKPOINT_SECRET_KEY_BYTES];
} checkpoint_key;

/*
 * Loads DIR/checkpoint.key. When it is missing and `create` is set, makes a new key and
 * writes it first (mode 0600, synced, its folder synced); `*created` says so. Refuses a file
 * that is not a regular file of 64 bytes, that group or others may read, or whose public half
 * does not follow from its seed. Returns 0, or BUDGET_EUNAVAILABLE with `why` set.
 */
int checkpoint_key_load(const char *dir, bool create, checkpoint_key *key, bool *created, char *why,
                        size_t why_size);

/* Writes the signed message into `out` (CHECKPOINT_MESSAGE_BYTES_MAX) and returns its length. */
size_t checkpoint_message(char *out, uint64_t seq, const uint8_t hash[BUDGET_HASH_BYTES],
                          uint64_t ts_ms);

void checkpoint_sign(const checkpoint_key *key, uint64_t seq, const uint8_t hash[BUDGET_HASH_BYTES],
                     uint64_t ts_ms, uint8_t signature[CHECKPOINT_SIGNATURE_BYTES]);

/* True when `signature` is `public_key`'s signature of the checkpoint (seq, hash, ts_ms). */
bool checkpoint_verify(const uint8_t public_key[CHECKPOINT_PUBLIC_KEY_BYTES], uint64_t seq,
                       const uint8_t hash[BUDGET_HASH_BYTES], uint64_t ts_ms,
                       const uint8_t signature[CHECKPOINT_SIGNATURE_BYTES]);

/* What a walk of the chain found. */
typedef struct {
    uint64_t head;      /* the snapshot's last seq */
    uint64_t checked;   /* events whose link held, from seq 1 on */
    uint64_t first_bad; /* 0 when the chain is intact, else the first event that breaks it */
    const char *why;    /* "" or: "seq", "prev", "hash", "malformed", "missing" */
    uint8_t head_hash[BUDGET_HASH_BYTES]; /* hash of event `checked` (zeros when none) */
    uint64_t mark_seq;                    /* the seq asked for in checkpoint_walk_chain */
    bool mark_found;
    uint8_t mark_hash[BUDGET_HASH_BYTES]; /* its stored hash, when its link held */
} checkpoint_chain;

/*
 * Walks every event of a reader's snapshot from seq 1: each seq follows the last, each
 * `prev` is the last `hash`, each `hash` is the SHA-256 it claims. Stops at the first break.
 * `mark_seq` (0: none) is an event whose hash to report. O(events).
 */
void checkpoint_walk_chain(store_reader *rd, uint64_t mark_seq, checkpoint_chain *out);

/*
 * The same walk (no mark) of `rd`'s chain, in pieces of `piece_events` (0: the default) on the
 * calling thread and one more (replay.h's chain_job, as start-up checks the chain): the same
 * result at up to twice the pace. False when it cannot be run (no thread, no reader, out of
 * memory); then walk with checkpoint_walk_chain.
 */
bool checkpoint_walk_chain_on_two(store *st, store_reader *rd, uint64_t piece_events,
                                  checkpoint_chain *out);

#endif
