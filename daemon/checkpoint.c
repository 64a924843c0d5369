/* Checkpoints (checkpoint.h): the signing key on disk, signed checkpoints, chain walks. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "budget/errors.h"
#include "checkpoint.h"
#include "event.h"
#include "fileio.h"
#include "replay.h"

_Static_assert(crypto_sign_PUBLICKEYBYTES == CHECKPOINT_PUBLIC_KEY_BYTES, "Ed25519 public key");
_Static_assert(crypto_sign_SECRETKEYBYTES == CHECKPOINT_SECRET_KEY_BYTES, "Ed25519 secret key");
_Static_assert(crypto_sign_BYTES == CHECKPOINT_SIGNATURE_BYTES, "Ed25519 signature");
_Static_assert(crypto_sign_SEEDBYTES == 32, "Ed25519 seed");

static int key_failed(char *why, size_t why_size, const char *path, const char *what, int err)
{
    if (err != 0)
        snprintf(why, why_size, "%s: %s: %s", path, what, strerror(err));
    else
        snprintf(why, why_size, "%s: %s", path, what);
    return BUDGET_EUNAVAILABLE;
}

/* A new key in `path`, which must not exist: written, synced, and its folder synced. */
static int key_create(const char *dir, const char *path, checkpoint_key *key, char *why,
                      size_t why_size)
{
    crypto_sign_keypair(key->public_key, key->secret_key);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? 1 : key_failed(why, why_size, path, "cannot create", errno);
    int err = fileio_write_all(fd, key->secret_key, sizeof(key->secret_key));
    if (err == 0 && fsync(fd) != 0)
        err = errno;
    close(fd);
    if (err != 0) {
        unlink(path);
        return key_failed(why, why_size, path, "cannot write", err);
    }
    fileio_sync_dir(dir); /* best effort: the key is written and synced */
    return 0;
}

static int key_read(const char *path, checkpoint_key *key, char *why, size_t why_size)
{
    struct stat st;
    uint8_t seed_pk[CHECKPOINT_PUBLIC_KEY_BYTES], seed_sk[CHECKPOINT_SECRET_KEY_BYTES];
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 1 : key_failed(why, why_size, path, "cannot open", errno);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_size != (off_t)CHECKPOINT_SECRET_KEY_BYTES) {
        close(fd);
        return key_failed(why, why_size, path, "not a key file (64 bytes)", 0);
    }
    if (st.st_mode & 077) {
        close(fd);
        return key_failed(why, why_size, path,
                          "group or others may access it; chmod 600 it, or remove it "
                          "and publish the new public key",
                          0);
    }
    ssize_t n = read(fd, key->secret_key, sizeof(key->secret_key));
    int err = n < 0 ? errno : 0;
    close(fd);
    if (n != (ssize_t)sizeof(key->secret_key))
        return key_failed(why, why_size, path, "cannot read", err);
    /* libsodium's secret key is seed || public key: both halves must agree. */
    crypto_sign_seed_keypair(seed_pk, seed_sk, key->secret_key);
    bool same = sodium_memcmp(seed_sk, key->secret_key, sizeof(seed_sk)) == 0;
    sodium_memzero(seed_sk, sizeof(seed_sk));
    if (!same)
        return key_failed(why, why_size, path, "damaged: its public half does not match", 0);
    memcpy(key->public_key, seed_pk, sizeof(key->public_key));
    return 0;
}

int checkpoint_key_load(const char *dir, bool create, checkpoint_key *key, bool *created, char *why,
                        size_t why_size)
{
    char path[PATH_MAX];
    *created = false;
    if (sodium_init() < 0)
        return key_failed(why, why_size, dir, "libsodium cannot start", 0);
    if (snprintf(path, sizeof(path), "%s/%s", dir, CHECKPOINT_KEY_FILE) >= (int)sizeof(path))
        return key_failed(why, why_size, dir, "path too long", 0);
    for (int tries = 0; tries < 2; tries++) {
        int rc = key_read(path, key, why, why_size);
        if (rc <= 0)
            return rc;
        if (!create)
            return key_failed(why, why_size, path, "no signing key", ENOENT);
        rc = key_create(dir, path, key, why, why_size);
        if (rc <= 0) {
            *created = rc == 0;
            return rc;
        }
        /* Made by someone else meanwhile: read theirs. */
    }
    return key_failed(why, why_size, path, "cannot create or read", 0);
}

size_t checkpoint_message(char *out, uint64_t seq, const uint8_t hash[BUDGET_HASH_BYTES],
                          uint64_t ts_ms)
{
    char hex[2 * BUDGET_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof(hex), hash, BUDGET_HASH_BYTES);
    int n = snprintf(out, CHECKPOINT_MESSAGE_BYTES_MAX,
                     "budgetd checkpoint v1\nseq %" PRIu64 "\nhash %s\nts %" PRIu64 "\n", seq, hex,
                     ts_ms);
    return (size_t)n;
}

void checkpoint_sign(const checkpoint_key *key, uint64_t seq, const uint8_t hash[BUDGET_HASH_BYTES],
                     uint64_t ts_ms, uint8_t signature[CHECKPOINT_SIGNATURE_BYTES])
{
    char message[CHECKPOINT_MESSAGE_BYTES_MAX];
    size_t n = checkpoint_message(message, seq, hash, ts_ms);
    crypto_sign_detached(signature, NULL, (const unsigned char *)message, n, key->secret_key);
}

bool checkpoint_verify(const uint8_t public_key[CHECKPOINT_PUBLIC_KEY_BYTES], uint64_t seq,
                       const uint8_t hash[BUDGET_HASH_BYTES], uint64_t ts_ms,
                       const uint8_t signature[CHECKPOINT_SIGNATURE_BYTES])
{
    char message[CHECKPOINT_MESSAGE_BYTES_MAX];
    if (sodium_init() < 0)
        return false;
    size_t n = checkpoint_message(message, seq, hash, ts_ms);
    return crypto_sign_verify_detached(signature, (const unsigned char *)message, n, public_key) ==
           0;
}

/* ---- the chain -------------------------------------------------------------------------- */

typedef struct {
    checkpoint_chain *out;
    uint8_t prev[BUDGET_HASH_BYTES];
} walk_ctx;

static int walk_one(void *ctx, uint64_t seq, store_val v)
{
    walk_ctx *w = ctx;
    checkpoint_chain *o = w->out;
    uint64_t stored = 0;
    const uint8_t *prev, *hash;
    const char *why = "";

    if (event_seq(v.data, v.size, &stored) != 0) {
        o->first_bad = seq;
        o->why = "malformed";
        return 1;
    }
    if (seq != o->checked + 1 || stored != seq) {
        o->first_bad = o->checked + 1;
        o->why = "seq";
        return 1;
    }
    if (event_check_link(v.data, v.size, w->prev, &why) != 0 ||
        event_link(v.data, v.size, &prev, &hash) != 0) {
        o->first_bad = seq;
        o->why = why[0] ? why : "malformed";
        return 1;
    }
    memcpy(w->prev, hash, BUDGET_HASH_BYTES);
    o->checked = seq;
    if (seq == o->mark_seq) {
        o->mark_found = true;
        memcpy(o->mark_hash, hash, BUDGET_HASH_BYTES);
    }
    return 0;
}

void checkpoint_walk_chain(store_reader *rd, uint64_t mark_seq, checkpoint_chain *out)
{
    walk_ctx w;

    memset(out, 0, sizeof(*out));
    memset(&w, 0, sizeof(w));
    w.out = out;
    out->why = "";
    out->mark_seq = mark_seq;
    out->head = store_reader_head(rd);
    int rc = store_reader_scan(rd, 0, walk_one, &w);
    if (rc < 0 && out->first_bad == 0) {
        /* The store's own order broke: a seq is missing or out of place. */
        out->first_bad = out->checked + 1;
        out->why = "missing";
    }
    memcpy(out->head_hash, w.prev, BUDGET_HASH_BYTES);
}

bool checkpoint_walk_chain_on_two(store *st, store_reader *rd, uint64_t piece_events,
                                  checkpoint_chain *out)
{
    memset(out, 0, sizeof(*out));
    out->why = "";
    out->head = store_reader_head(rd);
    chain_job *j = chain_job_new(st, out->head, piece_events);
    if (j == NULL)
        return false;
    pthread_t helper;
    bool helped = pthread_create(&helper, NULL, chain_job_thread, j) == 0;
    chain_job_help(j);
    if (helped)
        pthread_join(helper, NULL);
    replay_result res;
    int rc = chain_job_finish(j, &res);
    if (rc == BUDGET_EUNAVAILABLE || (rc == 0 && res.head != out->head))
        return false;
    if (rc != 0) {
        out->first_bad = res.bad_seq;
        out->why = res.code != NULL ? res.code : "malformed";
        out->checked = res.bad_seq - 1;
        return true;
    }
    out->checked = out->head;
    memcpy(out->head_hash, res.hash, BUDGET_HASH_BYTES);
    return true;
}
