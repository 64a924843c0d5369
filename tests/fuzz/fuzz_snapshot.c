/*
 * libFuzzer harness for the snapshot reader: whatever the bytes, and whatever the length,
 *   - snapshot_read_stream never crashes, never reads past the file, and allocates at most
 *     about the file's size: every count is checked against what is left before it is used;
 *     bytes that are not an authentic snapshot under the key give NULL;
 *   - ledger_load, the state's own reader, given the bytes as a state without the keyed hash
 *     in front of it, never crashes either, and what it loads is freed whole.
 * The seeds (make_corpus) are states saved by ledger_save and a whole snapshot under the key
 * below.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger.h"
#include "daemon/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The key of the seed snapshot: 32 bytes of 0x5a. */
static uint8_t key[SNAPSHOT_KEY_BYTES];

typedef struct {
    const uint8_t *at;
} memory;

static int memory_read(void *ctx, void *bytes, size_t n)
{
    memory *m = ctx;
    memcpy(bytes, m->at, n);
    m->at += n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(key, 0x5a, sizeof(key));
    if (size > 0) {
        FILE *f = fmemopen((void *)data, size, "rb");
        if (f != NULL) {
            uint64_t seq;
            uint8_t hash[BUDGET_HASH_BYTES];
            char why[200];
            ledger *l = snapshot_read_stream(f, size, key, &seq, hash, why, sizeof(why));
            if (l != NULL && ledger_last_seq(l) != seq)
                abort();
            ledger_free(l);
            fclose(f);
        }
    }
    memory m = {data};
    snap_source source = {memory_read, &m, size};
    ledger *state = ledger_load(&source);
    if (state != NULL && source.left != 0)
        abort();
    ledger_free(state);
    return 0;
}
