/*
 * libbudgetclient: talk to budgetd over its UNIX socket (docs/protocol.md).
 *
 * A budget_client is one connection; it is not thread-safe (one thread at a time), but many
 * clients may be used from many threads. Requests may be pipelined: send several, then
 * receive their responses, which arrive in the order sent.
 */
#ifndef BUDGET_CLIENT_H
#define BUDGET_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "budget/protocol.h"

typedef struct budget_client budget_client;

/* A decoded response. `result` (ok) or `code`/`message` (not ok) point into `unpacked`:
 * valid until budget_response_free. */
typedef struct {
    uint64_t id;
    bool ok;
    msgpack_object result; /* nil when !ok */
    int err;               /* 0 when ok, else a budget_err */
    char code[32];         /* "" when ok */
    char message[BUDGET_TEXT_BYTES_MAX + 1];
    msgpack_unpacked unpacked;
} budget_response;

/*
 * Connects to the socket at `path` (see budget_socket_path for the usual resolution).
 * Returns 0 or a negative errno (-ENOENT when no daemon listens there, -ECONNREFUSED ...).
 */
int budget_client_connect(const char *path, budget_client **out);
void budget_client_close(budget_client *c);

/*
 * Sends one request. `args` is a packed msgpack map (or NULL for none), `args_size` its size.
 * Returns the request id used (> 0), or a negative errno / budget_err.
 */
int64_t budget_client_send(budget_client *c, const char *op, const void *args, size_t args_size);

/*
 * Receives the next response (blocking). Returns 0 with `out` filled (free it with
 * budget_response_free), or a negative errno (-ECONNRESET when the daemon closed) /
 * BUDGET_ETOO_LARGE / BUDGET_EBAD_REQUEST for a response that is not a valid frame.
 */
int budget_client_recv(budget_client *c, budget_response *out);

/* send + recv. */
int budget_client_call(budget_client *c, const char *op, const void *args, size_t args_size,
                       budget_response *out);

void budget_response_free(budget_response *r);

/* Helpers to read a decoded map: the value under `key`, or NULL. */
const msgpack_object *budget_map_get(const msgpack_object *map, const char *key);
/* The str under `key` copied into `out` (truncated to fit; "" when absent or not a str). */
void budget_map_str(const msgpack_object *map, const char *key, char *out, size_t out_size);
/* The integer under `key`, or `fallback` when absent or not an integer. */
int64_t budget_map_int(const msgpack_object *map, const char *key, int64_t fallback);

#endif
