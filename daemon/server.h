/*
 * The server: libuv on a UNIX socket. Reads frames, answers each connection's requests in
 * order, validates writes against the speculative ledger in arrival order and commits them in
 * groups on the writer thread, and runs long reads (as_of, events, verify) on worker threads.
 * Only this module includes uv.h.
 */
#ifndef BUDGET_SERVER_H
#define BUDGET_SERVER_H

#include <stdint.h>

#include "budget/protocol.h"
#include "ledger.h"
#include "store.h"

typedef struct {
    const char *socket_path;
    store *store;
    /* The ledger replayed from the store; the server owns it from here on. */
    ledger *ledger;
    uint64_t head;
    uint8_t head_hash[BUDGET_HASH_BYTES];
} server_config;

/*
 * Listens and serves until SIGTERM or SIGINT (exit status 0: the batch in flight finished,
 * the socket removed) or a sync failure (exit status 1: nothing unacknowledged may be
 * trusted, a restart replays what is on disk). Returns the exit status; the caller closes the
 * store.
 */
int server_run(const server_config *cfg);

#endif
