/*
 * The hash benchmark: the cost of one event hash, SHA-256(prev || the event up to prev), on
 * the sizes of event budgetd writes, by each way there is to compute it:
 *
 *   budgetd     event_check_link, which hashes with whatever event.c uses (and compares)
 *   sodium      libsodium, init / update x3 / final on a state on the stack
 *   evp-ctx     OpenSSL EVP, one EVP_MD_CTX and one fetched EVP_MD kept, init / update x3 / final
 *   evp-reinit  the same, re-initialized with the digest the context already has
 *   evp-digest  OpenSSL EVP_Digest one-shot with the fetched EVP_MD, on a copy of the message
 *   sha256      OpenSSL SHA256() one-shot, on a copy of the message
 *   sha256-init OpenSSL SHA256_Init / Update x3 / Final (deprecated since OpenSSL 3.0)
 *
 * For each event size it prints the best of three runs in ns of this thread's CPU time per
 * hash (CPU time, not wall time: on a shared machine a neighbour then slows the figure less),
 * and a RESULT line per way and size. usage: bench_sha [--seconds S] (per way and size,
 * default 0.3)
 */
/* SHA256_Init and its kin are deprecated in OpenSSL 3; measured only to show what EVP costs. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "budget/protocol.h"
#include "daemon/event.h"
#include "daemon/ledger.h"

static uint64_t cpu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef void (*hash_fn)(const uint8_t *prev, const uint8_t *bytes, size_t size, uint8_t *out);

static EVP_MD *md;
static EVP_MD_CTX *ctx;
static const uint8_t MAP6 = 0x86;

/* Not a hash: event_check_link of the whole event, which hashes bytes[0..size - 39). */
static void way_budgetd(const uint8_t *prev, const uint8_t *bytes, size_t size, uint8_t *out)
{
    (void)out;
    if (event_check_link(bytes, size, prev, NULL) != 0) {
        fprintf(stderr, "bench_sha: the event does not check\n");
        exit(1);
    }
}

static void way_sodium(const uint8_t *prev, const uint8_t *bytes, size_t size, uint8_t *out)
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, prev, BUDGET_HASH_BYTES);
    crypto_hash_sha256_update(&st, &MAP6, 1);
    crypto_hash_sha256_update(&st, bytes + 1, size - 1);
    crypto_hash_sha256_final(&st, out);
}

static void way_evp_ctx(const uint8_t *prev, const uint8_t *bytes, size_t size, uint8_t *out)
{
    if (!EVP_DigestInit_ex2(ctx, md, NULL) || !EVP_DigestUpdate(ctx, prev, BUDGET_HASH_BYTES) ||
        !EVP_DigestUpdate(ctx, &MAP6, 1) || !EVP_DigestUpdate(ctx, bytes + 1, size - 1) ||
        !EVP_DigestFinal_ex(ctx, out, NULL))
        abort();
}

/* The same, re-initialized with the digest the context already has. */
static void way_evp_reinit(const uint8_t *prev, const uint8_t *bytes, size_t size, uint8_t *out)
{
    if (!EVP_DigestInit_ex2(ctx, NULL, NULL) || !EVP_DigestUpdate(ctx, prev, BUDGET_HASH_BYTES) ||
        !EVP_DigestUpdate(ctx, &MAP6, 1) || !EVP_DigestUpdate(ctx, bytes + 1, size - 1) ||
        !EVP_DigestFinal_ex(ctx, out, NULL))
        abort();
}

static size_t flatten(uint8_t *buf, const uint8_t *prev, const uint8_t *bytes, size_t size)
{
    memcpy(buf, prev, BUDGET_HASH_BYTES);
    buf[BUDGET_HASH_BYTES] = MAP6;
    memcpy(buf + BUDGET_HASH_BYTES + 1, bytes + 1, size - 1);
    return BUDGET_HASH_BYTES + size;
}

static void way_evp_digest(const uint8_t *prev, const uint8_t *bytes, size_t size, uint8_t *out)
{
    uint8_t buf[BUDGET_HASH_BYTES + EVENT_BYTES_MAX];
    if (!EVP_Digest(buf, flatten(buf, prev, bytes, size), out, NULL, md, NULL))
        abort();
}

static void way_sha256(const uint8_t *prev, const uint8_t *bytes, size_t size, uint8_t *out)
{
    uint8_t buf[BUDGET_HASH_BYTES + EVENT_BYTES_MAX];
    SHA256(buf, flatten(buf, prev, bytes, size), out);
}

static void way_lowlevel(const uint8_t *prev, const uint8_t *bytes, size_t size, uint8_t *out)
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, prev, BUDGET_HASH_BYTES);
    SHA256_Update(&c, &MAP6, 1);
    SHA256_Update(&c, bytes + 1, size - 1);
    SHA256_Final(out, &c);
}

static const struct {
    const char *name;
    hash_fn fn;
} ways[] = {
    {"budgetd", way_budgetd},       {"sodium", way_sodium},         {"evp-ctx", way_evp_ctx},
    {"evp-reinit", way_evp_reinit}, {"evp-digest", way_evp_digest}, {"sha256", way_sha256},
    {"sha256-init", way_lowlevel},
};

/* An event whose texts are `text_len` bytes long: from the smallest budgetd writes to the
 * largest. */
static int make_event(size_t text_len, uint8_t *out, uint8_t prev[BUDGET_HASH_BYTES])
{
    ledger_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = text_len > 100 ? LEDGER_DECISION_APPROVED : LEDGER_AVROP_REQUESTED;
    ev.seq = 123456;
    ev.ts_ms = 1780000000000ull;
    ev.actor.uid = 1000;
    strcpy(ev.actor.name, "anna.l");
    strcpy(ev.id, "lg4f2a1c-c3-81234");
    strcpy(ev.allocation, "lg4f2a1c-a17");
    strcpy(ev.target, "lg4f2a1c-a17");
    ev.target_kind = LEDGER_KIND_AVROP;
    strcpy(ev.frame, "lg4f2a1c-f3");
    strcpy(ev.unit, "SON");
    ev.year = 2026;
    ev.amount = 125000000;
    memset(ev.note, 'n', text_len > 256 ? 256 : text_len);
    if (text_len > 256)
        memset(ev.reference, 'r', text_len - 256 > 256 ? 256 : text_len - 256);
    for (size_t i = 0; i < BUDGET_HASH_BYTES; i++)
        prev[i] = (uint8_t)(i * 29 + 3);
    return event_encode(&ev, prev, out, EVENT_BYTES_MAX, NULL);
}

int main(int argc, char **argv)
{
    double seconds = 0.3;
    if (argc == 3 && strcmp(argv[1], "--seconds") == 0)
        seconds = bench_arg_double(argv[2], "--seconds");
    else if (argc != 1) {
        fprintf(stderr, "usage: bench_sha [--seconds S]\n");
        return 2;
    }
    if (sodium_init() < 0 || (md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL ||
        (ctx = EVP_MD_CTX_new()) == NULL) {
        fprintf(stderr, "bench_sha: cannot set up the libraries\n");
        return 1;
    }
    static const size_t texts[] = {0, 28, 120, 300, 512};
    char keys[64][64];
    double values[64];
    size_t nresults = 0;
    printf("%-10s", "event B");
    for (size_t w = 0; w < sizeof ways / sizeof ways[0]; w++)
        printf(" %12s", ways[w].name);
    printf("   (ns of CPU per event hash)\n");
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        uint8_t ev[EVENT_BYTES_MAX], prev[BUDGET_HASH_BYTES], want[32], got[32];
        int n = make_event(texts[t], ev, prev);
        if (n < 0)
            return 1;
        size_t hashed = (size_t)n - EVENT_HASH_TAIL_BYTES;
        way_sodium(prev, ev, hashed, want);
        printf("%-10d", n);
        for (size_t w = 0; w < sizeof ways / sizeof ways[0]; w++) {
            size_t size = w == 0 ? (size_t)n : hashed;
            if (w != 0) {
                ways[w].fn(prev, ev, size, got);
                if (memcmp(got, want, sizeof want) != 0) {
                    fprintf(stderr, "bench_sha: %s disagrees with libsodium\n", ways[w].name);
                    return 1;
                }
            }
            /* Best of three runs of `seconds` / 3. */
            double best = 1e30;
            for (int round = 0; round < 3; round++) {
                uint64_t count = 0, start = cpu_now_ns(), end;
                do {
                    for (int i = 0; i < 256; i++)
                        ways[w].fn(prev, ev, size, got);
                    count += 256;
                    end = cpu_now_ns();
                } while ((double)(end - start) < seconds / 3 * 1e9);
                double ns = (double)(end - start) / (double)count;
                if (ns < best)
                    best = ns;
            }
            printf(" %12.1f", best);
            if (nresults == sizeof values / sizeof values[0])
                return 1;
            snprintf(keys[nresults], sizeof keys[0], "sha_ns_%s_%d", ways[w].name, n);
            values[nresults++] = best;
        }
        printf("\n");
        fflush(stdout);
    }
    for (size_t i = 0; i < nresults; i++)
        bench_result(keys[i], "%.1f", values[i]);
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
    return 0;
}
