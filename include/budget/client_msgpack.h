/*
 * libbudgetclient's msgpack-c layer: requests whose args the caller packed itself, and answers
 * read as msgpack_object. budget/client.h is the same library without msgpack types; both
 * layers may be used on one connection (request ids are counted once per connection).
 * Including this header needs msgpack-c's headers (`pkg-config --cflags budgetclient` gives
 * them); docs/client-library.md.
 */
#ifndef BUDGET_CLIENT_MSGPACK_H
#define BUDGET_CLIENT_MSGPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "budget/client.h"

/* A decoded response. `result` (ok) or `code`/`message` (not ok) point into `unpacked`:
 * valid until budget_response_free. A push frame of `subscribe` is ok with a nil `result`:
 * its event is budget_map_get(&unpacked.data, "event"). */
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
 * Sends one request. `args` is a packed msgpack map (or NULL for none), `args_size` its size.
 * Returns the request id used (> 0), or a negative errno / budget_err.
 */
BUDGET_API int64_t budget_client_send(budget_client *c, const char *op, const void *args,
                                      size_t args_size);

/*
 * Receives the next response (blocking). Returns 0 with `out` filled (free it with
 * budget_response_free), or a negative errno (-ECONNRESET when the daemon closed) /
 * BUDGET_ETOO_LARGE / BUDGET_EBAD_REQUEST for a response that is not a valid frame.
 */
BUDGET_API int budget_client_recv(budget_client *c, budget_response *out);

/* send + recv. */
BUDGET_API int budget_client_call(budget_client *c, const char *op, const void *args,
                                  size_t args_size, budget_response *out);

BUDGET_API void budget_response_free(budget_response *r);

/* Helpers to read a decoded map: the value under `key`, or NULL. */
BUDGET_API const msgpack_object *budget_map_get(const msgpack_object *map, const char *key);
/* The str under `key` copied into `out` (truncated to fit; "" when absent or not a str). */
BUDGET_API void budget_map_str(const msgpack_object *map, const char *key, char *out,
                               size_t out_size);
/* The integer under `key`, or `fallback` when absent or not an integer. */
BUDGET_API int64_t budget_map_int(const msgpack_object *map, const char *key, int64_t fallback);

/* The msgpack_object behind a budget_value (the same object, valid as long), and back. */
BUDGET_API const msgpack_object *budget_value_object(const budget_value *v);
BUDGET_API const budget_value *budget_value_of(const msgpack_object *o);

#endif
