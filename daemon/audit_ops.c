/* The audit ops (audit_ops.h): signed checkpoints and hot backups, on worker threads. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit_ops.h"
#include "budget/errors.h"
#include "checkpoint.h"
#include "log.h"

typedef struct {
    worker_job base;
    bool backup;
    uint64_t seq;                    /* checkpoint: the committed head when asked */
    uint8_t hash[BUDGET_HASH_BYTES]; /* and its hash */
    char dir[BACKUP_DIR_BYTES_MAX + 1];
} audit_job;

static void pack_key_bin(msgpack_packer *pk, const char *key, const uint8_t *bytes, size_t n)
{
    pack_cstr(pk, key);
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, bytes, n);
}

/* ---- checkpoint ------------------------------------------------------------------------- */

static void checkpoint_work(audit_job *j, resp *r)
{
    checkpoint_key key;
    uint8_t signature[CHECKPOINT_SIGNATURE_BYTES];
    char why[PATH_MAX + 200] = "the data folder is unknown";
    bool created = false;
    const char *dir = store_folder(j->base.srv->store);

    if (!dir || checkpoint_key_load(dir, true, &key, &created, why, sizeof(why)) != 0) {
        log_error("checkpoint refused: %s", why);
        resp_error_into(r, j->base.req_id, BUDGET_EUNAVAILABLE, why);
        return;
    }
    if (created)
        log_warn("the signing key was missing: made a new one in %s/%s", dir, CHECKPOINT_KEY_FILE);
    uint64_t ts = now_ms();
    checkpoint_sign(&key, j->seq, j->hash, ts, signature);
    resp_begin(r, j->base.req_id, true);
    msgpack_pack_map(&r->pk, 5);
    pack_key_uint(&r->pk, "seq", j->seq);
    pack_key_bin(&r->pk, "hash", j->hash, BUDGET_HASH_BYTES);
    pack_key_uint(&r->pk, "ts", ts);
    pack_key_bin(&r->pk, "public_key", key.public_key, sizeof(key.public_key));
    pack_key_bin(&r->pk, "signature", signature, sizeof(signature));
    sodium_memzero(&key, sizeof(key));
}

/* ---- backup ----------------------------------------------------------------------------- */

/* True when `path` is `folder` or inside it (both resolved, without a trailing slash). */
static bool inside(const char *path, const char *folder)
{
    size_t n = strlen(folder);
    if (strcmp(folder, "/") == 0)
        return true;
    return strncmp(path, folder, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static void remove_copy(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* Checks where the copy goes and makes its folder. Returns 0, or an error with `why`. */
static int backup_folder(audit_job *j, char *why, size_t why_size)
{
    char parent[BACKUP_DIR_BYTES_MAX + 1], real_parent[PATH_MAX], real_data[PATH_MAX];
    struct stat st;
    const char *data = store_folder(j->base.srv->store);

    snprintf(parent, sizeof(parent), "%s", j->dir);
    char *slash = strrchr(parent, '/');
    slash[slash == parent ? 1 : 0] = '\0';
    if (!realpath(parent, real_parent) || stat(real_parent, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, why_size,
                 "%s: no such folder; a backup goes into a new folder in an "
                 "existing one",
                 parent);
        return BUDGET_ENOT_FOUND;
    }
    if (!data || !realpath(data, real_data) || inside(real_parent, real_data)) {
        snprintf(why, why_size, "a backup cannot go inside the data folder");
        return BUDGET_EBAD_REQUEST;
    }
    if (mkdir(j->dir, 0750) != 0) {
        int err = errno;
        snprintf(why, why_size, "%s: %s", j->dir,
                 err == EEXIST ? "exists; a backup goes into a new folder" : strerror(err));
        return err == EEXIST ? BUDGET_ECONFLICT : BUDGET_EUNAVAILABLE;
    }
    return 0;
}

/* Opens the copy read-only and walks its whole chain. Returns 0, or an error with `why`. */
static int backup_check(const char *dir, checkpoint_chain *chain, char *why, size_t why_size)
{
    store_options opt = {.read_only = true};
    store *copy;
    store_reader *rd;
    char path[PATH_MAX];

    if (store_open(&copy, dir, &opt, why, why_size) != 0)
        return BUDGET_EINTERNAL;
    int rc = store_reader_begin(copy, &rd);
    if (rc == 0) {
        checkpoint_walk_chain(rd, 0, chain);
        store_reader_end(rd);
    }
    store_close(copy);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path); /* made by the check's open; the copy is data.mdb alone */
    if (rc != 0) {
        snprintf(why, why_size, "the copy in %s cannot be read", dir);
        return BUDGET_EINTERNAL;
    }
    if (chain->first_bad != 0) {
        snprintf(why, why_size,
                 "the copy in %s breaks the chain at seq %llu (%s); it is left "
                 "there for inspection",
                 dir, (unsigned long long)chain->first_bad, chain->why);
        return BUDGET_EINTERNAL;
    }
    return 0;
}

static void backup_work(audit_job *j, resp *r)
{
    char why[PATH_MAX + 300];
    char path[PATH_MAX];
    checkpoint_chain chain;
    struct stat st;
    uint64_t started = now_ms();

    int rc = backup_folder(j, why, sizeof(why));
    if (rc == 0 && store_backup(j->base.srv->store, j->dir, why, sizeof(why)) != 0) {
        remove_copy(j->dir);
        rc = BUDGET_EUNAVAILABLE;
    }
    snprintf(path, sizeof(path), "%s/data.mdb", j->dir);
    if (rc == 0 && (chmod(path, 0640) != 0 || stat(path, &st) != 0)) {
        snprintf(why, sizeof(why), "%s: %s", path, strerror(errno));
        remove_copy(j->dir);
        rc = BUDGET_EUNAVAILABLE;
    }
    if (rc == 0)
        rc = backup_check(j->dir, &chain, why, sizeof(why));
    if (rc != 0) {
        log_warn("backup into %s failed: %s", j->dir, why);
        resp_error_into(r, j->base.req_id, rc, why);
        return;
    }
    log_info("backup into %s: %llu events, %lld bytes, verified", j->dir,
             (unsigned long long)chain.head, (long long)st.st_size);
    resp_begin(r, j->base.req_id, true);
    msgpack_pack_map(&r->pk, 5);
    pack_key_str(&r->pk, "dir", j->dir);
    pack_key_uint(&r->pk, "head", chain.head);
    pack_key_bin(&r->pk, "hash", chain.head_hash, BUDGET_HASH_BYTES);
    pack_key_uint(&r->pk, "bytes", (uint64_t)st.st_size);
    pack_key_uint(&r->pk, "ms", now_ms() - started);
}

/* ---- jobs --------------------------------------------------------------------------------- */

static void audit_run(worker_job *w, resp *answer)
{
    audit_job *j = (audit_job *)w;
    if (j->backup)
        backup_work(j, answer);
    else
        checkpoint_work(j, answer);
}

static void backup_finished(worker_job *w)
{
    w->srv->backup_running = false;
}

static void audit_queue(conn *c, uint32_t idx, uint64_t req_id, audit_job *j)
{
    j->base.run = audit_run;
    if (j->backup)
        j->base.finished = backup_finished;
    if (worker_queue(c, idx, req_id, &j->base) == 0 && j->backup)
        c->srv->backup_running = true;
}

/* ---- ops ---------------------------------------------------------------------------------- */

void op_checkpoint(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    server *s = c->srv;
    audit_job *j;

    if (args && args->via.map.size != 0) {
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST, "checkpoint takes no args");
        return;
    }
    if (s->committed_head == 0) {
        conn_answer_error(c, idx, req_id, BUDGET_ENOT_FOUND,
                          "the log is empty: there is nothing to sign yet");
        return;
    }
    j = calloc(1, sizeof(*j));
    if (!j) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
        return;
    }
    j->seq = s->committed_head;
    memcpy(j->hash, s->committed_hash, sizeof(j->hash));
    audit_queue(c, idx, req_id, j);
}

/* args: {"dir": str}, an absolute path; trailing slashes are dropped. 0 or -1 with `msg`. */
static int decode_dir(const msgpack_object *args, char *dir, char *msg, size_t msg_size)
{
    const msgpack_object *v = NULL;
    for (uint32_t i = 0; args && i < args->via.map.size; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != 3 ||
            memcmp(k->via.str.ptr, "dir", 3) != 0) {
            snprintf(msg, msg_size, "backup takes only dir");
            return -1;
        }
        v = &args->via.map.ptr[i].val;
    }
    if (!v || v->type != MSGPACK_OBJECT_STR) {
        snprintf(msg, msg_size, "backup needs args.dir, a string");
        return -1;
    }
    size_t n = v->via.str.size;
    if (n == 0 || n > BACKUP_DIR_BYTES_MAX || memchr(v->via.str.ptr, '\0', n) ||
        v->via.str.ptr[0] != '/') {
        snprintf(msg, msg_size, "args.dir must be an absolute path of at most %u bytes",
                 BACKUP_DIR_BYTES_MAX);
        return -1;
    }
    while (n > 1 && v->via.str.ptr[n - 1] == '/')
        n--;
    if (n == 1) {
        snprintf(msg, msg_size, "args.dir cannot be /");
        return -1;
    }
    memcpy(dir, v->via.str.ptr, n);
    dir[n] = '\0';
    return 0;
}

void op_backup(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    server *s = c->srv;
    char msg[160];
    audit_job *j = calloc(1, sizeof(*j));

    if (!j) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
        return;
    }
    if (decode_dir(args, j->dir, msg, sizeof(msg)) != 0) {
        free(j);
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST, msg);
        return;
    }
    if (s->backup_running || s->stopping) {
        free(j);
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE,
                          s->stopping ? "budgetd is stopping" : "a backup is running; retry later");
        return;
    }
    j->backup = true;
    audit_queue(c, idx, req_id, j);
}
