/*
 * libFuzzer harness for the event decoder and the chain link: whatever the bytes,
 * event_decode, event_link, event_seq and event_check_link must not crash or over-read, and
 * they must agree with each other and with the encoder:
 *   - an event that decodes has exactly one encoding: re-encoding it with its stored prev
 *     gives the same bytes, hash aside;
 *   - event_check_link accepts it exactly when its stored hash is the one the encoder computes;
 *   - event_seq and event_link read what event_decode reads;
 *   - budgetd's SHA-256 (event_sha256) equals libsodium's on the input, whole and cut in three.
 */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "budget/protocol.h"
#include "daemon/event.h"
#include "daemon/ledger.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t zeros[BUDGET_HASH_BYTES];
    ledger_event ev;
    const uint8_t *prev = NULL, *hash = NULL;
    const char *why = NULL;
    uint64_t seq = 0;

    /* The hash is SHA-256, whatever the bytes and wherever a message is cut. */
    uint8_t want[BUDGET_HASH_BYTES], got[BUDGET_HASH_BYTES];
    crypto_hash_sha256(want, data, size);
    size_t cut1 = size == 0 ? 0 : data[0] % (size + 1), cut2 = cut1 + (size - cut1) / 2;
    const event_span parts[3] = {
        {data, cut1}, {data + cut1, cut2 - cut1}, {data + cut2, size - cut2}};
    event_sha256(parts, 3, got);
    if (memcmp(want, got, sizeof want) != 0)
        abort();

    /* Every reader copes with any bytes. */
    int link = event_link(data, size, &prev, &hash);
    int seq_rc = event_seq(data, size, &seq);
    int check_zero = event_check_link(data, size, zeros, &why);
    if (check_zero != 0 && why == NULL)
        abort();
    if (event_decode(data, size, &ev) != 0)
        return 0;

    /* It decoded: the other readers see the same event. */
    if (link != 0 || seq_rc != 0 || seq != ev.seq)
        abort();
    uint8_t out[EVENT_BYTES_MAX], computed[BUDGET_HASH_BYTES];
    int n = event_encode(&ev, prev, out, sizeof(out), computed);
    if (n < 0 || (size_t)n != size)
        abort();
    if (memcmp(out, data, size - BUDGET_HASH_BYTES) != 0)
        abort();
    /* The link holds exactly when the stored hash is the computed one. */
    bool stored_right = memcmp(hash, computed, BUDGET_HASH_BYTES) == 0;
    why = NULL;
    int check = event_check_link(data, size, prev, &why);
    if ((check == 0) != stored_right)
        abort();
    if (memcmp(out + size - BUDGET_HASH_BYTES, computed, BUDGET_HASH_BYTES) != 0)
        abort();
    /* Whatever it accepts as a whole event, decode then encode gives back the same bytes. */
    if (check == 0 && memcmp(out, data, size) != 0)
        abort();

    /* A decoded event decodes again to the same thing after re-encoding. */
    ledger_event again;
    if (event_decode(out, (size_t)n, &again) != 0 || again.seq != ev.seq || again.type != ev.type ||
        strcmp(again.id, ev.id) != 0 || again.amount != ev.amount)
        abort();
    return 0;
}
