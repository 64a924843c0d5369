/*
 * The server: libuv on a UNIX socket. Reads frames, answers each connection's requests in
 * order, validates writes against the speculative ledger in arrival order and commits them in
 * groups on the writer thread, and runs long reads (as_of, events, verify) on worker threads.
 * Only the server's modules (server.c and the layers below it, docs/architecture.md) include
 * uv.h; the ledger core, the store and the codec do not.
 */
#ifndef BUDGET_SERVER_H
#define BUDGET_SERVER_H

#include <stdint.h>

#include "access.h"
#include "budget/protocol.h"
#include "ledger.h"
#include "snapshot.h"
#include "store.h"

typedef struct {
    const char *socket_path;
    store *store;
    /* The ledger replayed from the store; the server owns it from here on. */
    ledger *ledger;
    uint64_t head;
    uint8_t head_hash[BUDGET_HASH_BYTES];
    /* Who may do what; the server owns the rules from here on. `access_path` is the file they
     * came from, read again on SIGHUP; NULL when there is none. */
    access_rules *access;
    const char *access_path;
    /* The group the socket (and a folder made for it) is given; else the daemon's own. */
    bool socket_group_set;
    uint32_t socket_group;
    /* Connections at once, in all and per uid; idle time before a connection is closed; time
     * from a frame's first byte to its last. */
    uint32_t connections_max, connections_per_uid_max;
    /* Subscriptions open at once from one uid (1..BUDGET_SUBSCRIPTIONS_MAX). */
    uint32_t subscriptions_per_uid_max;
    uint64_t idle_timeout_ms, frame_timeout_ms;
    /* The loop thread's time for reads in one turn of the loop (conn_hub_t.read_slice_ns). */
    uint32_t read_slice_us;
    /* Reads' share of the loop thread while writes wait, in percent (conn_hub_t). */
    uint32_t read_share_pct;
    /* Called on a lookup thread before a connecting uid's name and groups are looked up; NULL
     * in budgetd. budgetd-faulty uses it to stand in for a slow user database. */
    void (*lookup_hook)(uint32_t uid);
    /* Called right after the socket is bound, before it is given its group; NULL in budgetd.
     * budgetd-faulty uses it to stand in for a local user who swaps the socket's path for a
     * symbolic link in that moment. */
    void (*socket_hook)(const char *socket_path);
    /* Called on a worker thread before a worker job (a long read, a checkpoint, a write retried)
     * runs; NULL in budgetd. budgetd-faulty uses it to make those jobs slow. */
    void (*job_hook)(void);
    /* Snapshots of the committed ledger (snapshot.h): NULL when none are kept. One is written
     * off the loop after each `snapshot_every` events (0: never), and at start-up when the
     * newest one restored (`snapshot_head`, 0: none) is that many events or more behind. */
    const snapshots *snapshots;
    uint64_t snapshot_every;
    uint64_t snapshot_head;
    /* The ledgers of earlier points kept for `balances` (history.h): at most `as_of_keep`,
     * each freed after `as_of_idle_ms` unused. */
    uint32_t as_of_keep;
    uint64_t as_of_idle_ms;
    /* Added to the wall clock; 0 in budgetd. budgetd-faulty takes it from
     * $BUDGETD_CLOCK_OFFSET_MS to stand in for a clock that was set wrong. */
    int64_t clock_offset_ms;
} server_config;

/*
 * Listens (on the socket systemd passed, when LISTEN_FDS says so) and serves until SIGTERM
 * or SIGINT (exit status 0: the batch in flight finished, the socket removed) or a sync
 * failure (exit status 1: nothing unacknowledged may be trusted, a restart replays what is
 * on disk). SIGHUP reads the access file again. Returns the exit status; the caller closes
 * the store.
 */
int server_run(const server_config *cfg);

#endif
