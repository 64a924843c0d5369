/* A snapshot's Poly1305 tag, by OpenSSL's code or libsodium's (snapmac.h). */
#include "snapmac.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <openssl/evp.h>

_Static_assert(SNAPMAC_KEY_BYTES == crypto_onetimeauth_KEYBYTES, "Poly1305 key");
_Static_assert(SNAPMAC_BYTES == crypto_onetimeauth_BYTES, "Poly1305 tag");

static EVP_MAC *poly1305; /* NULL: OpenSSL gives none; libsodium's code is used */
static pthread_once_t poly1305_once = PTHREAD_ONCE_INIT;
static atomic_bool only_sodium;

static void poly1305_fetch(void)
{
    poly1305 = EVP_MAC_fetch(NULL, "POLY1305", NULL);
}

void snapmac_use_sodium(bool on)
{
    atomic_store(&only_sodium, on);
}

void snapmac_init(snapmac *m, const uint8_t key[SNAPMAC_KEY_BYTES])
{
    memset(m, 0, sizeof(*m));
    pthread_once(&poly1305_once, poly1305_fetch);
    if (poly1305 != NULL && !atomic_load(&only_sodium)) {
        m->ossl = EVP_MAC_CTX_new(poly1305);
        if (m->ossl != NULL && EVP_MAC_init(m->ossl, key, SNAPMAC_KEY_BYTES, NULL) == 1)
            return;
        EVP_MAC_CTX_free(m->ossl);
        m->ossl = NULL;
    }
    crypto_onetimeauth_init(&m->sodium, key);
}

void snapmac_update(snapmac *m, const void *bytes, size_t n)
{
    if (m->ossl == NULL)
        crypto_onetimeauth_update(&m->sodium, bytes, n);
    else if (!m->failed && EVP_MAC_update(m->ossl, bytes, n) != 1)
        m->failed = true;
}

int snapmac_final(snapmac *m, uint8_t tag[SNAPMAC_BYTES])
{
    if (m->ossl == NULL) {
        crypto_onetimeauth_final(&m->sodium, tag);
        return 0;
    }
    size_t len = 0;
    bool ok =
        !m->failed && EVP_MAC_final(m->ossl, tag, &len, SNAPMAC_BYTES) == 1 && len == SNAPMAC_BYTES;
    snapmac_abandon(m);
    if (!ok)
        memset(tag, 0, SNAPMAC_BYTES);
    return ok ? 0 : -1;
}

void snapmac_abandon(snapmac *m)
{
    EVP_MAC_CTX_free(m->ossl);
    m->ossl = NULL;
    sodium_memzero(&m->sodium, sizeof(m->sodium));
}
