/*
 * A snapshot's tag: Poly1305 over the file's bytes, under the one-time key snapshot.c makes for
 * each file. OpenSSL's code computes it where OpenSSL gives it (its assembly for AVX2 tags the
 * 80 MB of a 1 M-event snapshot in about half libsodium's time), else libsodium's. Both compute
 * the one function, Poly1305 (RFC 8439), so a tag made by either verifies under the other: a
 * snapshot is read the same whichever code wrote it.
 *
 * One snapmac is used by one thread at a time; separate ones on any threads.
 */
#ifndef BUDGET_SNAPMAC_H
#define BUDGET_SNAPMAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>
#include <sodium.h>

#define SNAPMAC_KEY_BYTES 32
#define SNAPMAC_BYTES 16

typedef struct {
    EVP_MAC_CTX *ossl; /* NULL: libsodium's state below computes the tag */
    crypto_onetimeauth_state sodium;
    bool failed; /* OpenSSL refused a step: there is no tag */
} snapmac;

/* Starts a tag under `key` (used for this one message only). */
void snapmac_init(snapmac *m, const uint8_t key[SNAPMAC_KEY_BYTES]);
void snapmac_update(snapmac *m, const void *bytes, size_t n);
/* The tag into `tag`: 0, or -1 when it could not be computed (`tag` is then zeros, and must not
 * be written or trusted). Ends the snapmac either way. */
int snapmac_final(snapmac *m, uint8_t tag[SNAPMAC_BYTES]);
/* Ends a snapmac whose tag is not wanted. */
void snapmac_abandon(snapmac *m);

/* For tests: every snapmac started after snapmac_use_sodium(true) is computed by libsodium's
 * code, as where OpenSSL gives no Poly1305; false goes back to OpenSSL's where it is. */
void snapmac_use_sodium(bool only_sodium);

#endif
