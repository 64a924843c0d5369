/* budgetd: the budget ledger daemon. Opens the store, replays the log, serves the socket. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "budget/errors.h"
#include "budget/protocol.h"
#include "event.h"
#include "ledger.h"
#include "log.h"
#include "proto/frame.h"
#include "server.h"
#include "store.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: budgetd --data DIR [--socket PATH] [--config FILE] [--map-size BYTES]\n"
            "               [--log-level debug|info|warn|error]\n"
            "\n"
            "Serves the budget ledger kept in DIR on a UNIX socket, in the foreground.\n"
            "The socket is --socket, else $BUDGETD_SOCKET, else $XDG_RUNTIME_DIR/budgetd.sock,\n"
            "else /run/budgetd/budgetd.sock. SIGTERM or SIGINT stops it after the batch in\n"
            "flight. See budgetd(8) and docs/operations.md.\n");
}

typedef struct {
    ledger *l;
    uint64_t expect;
    uint8_t prev[BUDGET_HASH_BYTES];
    char why[160];
} replay_state;

/*
 * Replays one stored event: its seq follows the last one, its prev is the last one's hash
 * (a cheap check of the chain's order; `verify` recomputes every hash), and it applies.
 */
static int replay_event(void *ctx, uint64_t seq, store_val v)
{
    replay_state *r = ctx;
    ledger_event ev;
    const uint8_t *prev, *hash;

    if (seq != r->expect || event_link(v.data, v.size, &prev, &hash) != 0 ||
        memcmp(prev, r->prev, BUDGET_HASH_BYTES) != 0) {
        snprintf(r->why, sizeof(r->why), "event %llu does not follow event %llu in the chain",
                 (unsigned long long)seq, (unsigned long long)(r->expect - 1));
        return 1;
    }
    if (event_decode(v.data, v.size, &ev) != 0 || ev.seq != seq) {
        snprintf(r->why, sizeof(r->why), "event %llu cannot be decoded", (unsigned long long)seq);
        return 1;
    }
    if (ledger_apply(r->l, &ev) != 0) {
        snprintf(r->why, sizeof(r->why), "event %llu breaks a ledger rule on replay",
                 (unsigned long long)seq);
        return 1;
    }
    memcpy(r->prev, hash, BUDGET_HASH_BYTES);
    r->expect++;
    return 0;
}

static int replay(store *st, ledger *l, uint64_t *head, uint8_t head_hash[BUDGET_HASH_BYTES])
{
    replay_state r = {l, 1, {0}, ""};
    store_reader *rd;
    struct timespec t0, t1;
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (store_reader_begin(st, &rd) != 0) {
        log_error("cannot read the event store");
        return 1;
    }
    rc = store_reader_scan(rd, 0, replay_event, &r);
    store_reader_end(rd);
    if (rc != 0) {
        log_error("replay stopped: %s; run an offline verify on a copy of the data", r.why);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *head = r.expect - 1;
    memcpy(head_hash, r.prev, BUDGET_HASH_BYTES);
    log_info("replayed %llu events in %.3f s", (unsigned long long)*head,
             (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"data", required_argument, NULL, 'd'},      {"socket", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},    {"map-size", required_argument, NULL, 'm'},
        {"log-level", required_argument, NULL, 'l'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},         {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *socket_flag = NULL, *config = NULL;
    char socket_path[108], why[256];
    store_options sopt = {0};
    store *st = NULL;
    server_config cfg;
    int opt, status;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'd':
            data = optarg;
            break;
        case 's':
            socket_flag = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'm': {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(optarg, &end, 10);
            if (errno || *end || n < 65536) {
                fprintf(stderr, "budgetd: --map-size wants bytes, at least 65536\n");
                return 2;
            }
            sopt.map_bytes_initial = (size_t)n;
            break;
        }
        case 'l':
            if (strcmp(optarg, "debug") == 0)
                log_set_level(LOG_LEVEL_DEBUG);
            else if (strcmp(optarg, "info") == 0)
                log_set_level(LOG_LEVEL_INFO);
            else if (strcmp(optarg, "warn") == 0)
                log_set_level(LOG_LEVEL_WARN);
            else if (strcmp(optarg, "error") == 0)
                log_set_level(LOG_LEVEL_ERROR);
            else {
                fprintf(stderr, "budgetd: --log-level is debug, info, warn or error\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("budgetd %s (protocol %d)\n", BUDGET_VERSION, BUDGET_PROTOCOL_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!data || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (budget_socket_path(socket_flag, socket_path, sizeof(socket_path)) != 0) {
        fprintf(stderr, "budgetd: the socket path is too long for a UNIX socket\n");
        return 2;
    }
    if (config)
        log_warn("--config %s: access rules are not read by this version; every local user "
                 "that can open the socket may read and write",
                 config);

    if (store_open(&st, data, &sopt, why, sizeof(why)) != 0) {
        log_error("%s", why);
        return 1;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.ledger = ledger_new();
    if (!cfg.ledger || replay(st, cfg.ledger, &cfg.head, cfg.head_hash) != 0) {
        ledger_free(cfg.ledger);
        store_close(st);
        return 1;
    }
    cfg.socket_path = socket_path;
    cfg.store = st;
    status = server_run(&cfg);
    store_close(st);
    return status;
}
