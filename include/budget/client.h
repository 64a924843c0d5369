/*
 * libbudgetclient: talk to budgetd over its UNIX socket (docs/protocol.md).
 * The whole contract, with the lifetime of every pointer, is docs/client-library.md.
 *
 *   budget_client *c;
 *   budget_req *req;
 *   budget_answer *a;
 *   budget_client_connect(path, &c);                        the socket: budget_socket_path
 *   budget_req_new("balances", &req);
 *   budget_req_add_str(req, "unit", "KS");
 *   budget_call(c, req, &a);                                 send, then receive its answer
 *   const budget_value *units = budget_value_get(budget_answer_result(a), "units");
 *   ...
 *   budget_answer_free(a);
 *   budget_req_free(req);
 *   budget_client_close(c);
 *
 * Every function that can fail returns 0 (or a count, or an id) on success and a negative
 * number on failure: either a negative errno (-ENOENT, -ECONNREFUSED, -ECONNRESET, -ENOMEM
 * ...) or one of the budget_err values of budget/errors.h (-1001 and below); budget_strerror
 * describes both. A budget_client is one connection, to be used by one thread at a time;
 * requests, answers and values are separate objects that any thread may read.
 *
 * Nothing here exposes msgpack: budget/client_msgpack.h is the lower layer for programs that
 * already pack and read msgpack with msgpack-c.
 */
#ifndef BUDGET_CLIENT_H
#define BUDGET_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/errors.h"
#include "budget/export.h"
#include "budget/limits.h"
#include "budget/protocol.h"
#include "budget/socket.h"

typedef struct budget_client budget_client; /* one connection */
typedef struct budget_req budget_req;       /* a request being built: an op and its args */
typedef struct budget_answer budget_answer; /* one frame received: an answer or a push */
typedef struct budget_value budget_value;   /* a value inside an answer (a view, never freed) */

/* ---- the connection ----------------------------------------------------------------------- */

/*
 * Connects to the socket at `path`. Returns 0 with *out set (close it with
 * budget_client_close), or a negative errno: -ENOENT or -ECONNREFUSED when no daemon listens
 * there, -EACCES when this user may not open the socket, -ENAMETOOLONG for a path that does
 * not fit a socket address.
 */
BUDGET_API int budget_client_connect(const char *path, budget_client **out);

/* Closes the connection and frees `c` (nothing when NULL). Answers received stay valid. */
BUDGET_API void budget_client_close(budget_client *c);

/* ---- requests ----------------------------------------------------------------------------- */

/*
 * A new request for `op` ("hello", "balances", "frame.grant" ...) with no args yet. Returns 0
 * with *out set (free it with budget_req_free), BUDGET_EBAD_REQUEST when `op` is empty or
 * longer than BUDGET_OP_BYTES_MAX, or -ENOMEM.
 */
BUDGET_API int budget_req_new(const char *op, budget_req **out);

/*
 * Adds the arg `key` (a str, an unsigned or a signed integer). Returns 0;
 * BUDGET_EBAD_REQUEST when `key` is empty or was added already (the daemon refuses a key
 * given twice); BUDGET_ETOO_LARGE when a str is over BUDGET_STRING_BYTES_MAX bytes or the
 * args would hold more than BUDGET_MAP_PAIRS_MAX pairs; -ENOMEM. On failure the request is
 * as it was. The strings are copied: they need not outlive the call.
 */
BUDGET_API int budget_req_add_str(budget_req *r, const char *key, const char *value);
BUDGET_API int budget_req_add_uint(budget_req *r, const char *key, uint64_t value);
BUDGET_API int budget_req_add_int(budget_req *r, const char *key, int64_t value);

/* Frees a request (nothing when NULL). A request may be sent any number of times first. */
BUDGET_API void budget_req_free(budget_req *r);

/*
 * Sends `r` without waiting for its answer (pipelining: answers come in the order sent).
 * Returns the request's id (>= 1; the library numbers requests 1, 2, 3 ... per connection), or
 * a negative errno / budget_err. After an I/O error the connection is unusable: every later
 * call returns that error again.
 */
BUDGET_API int64_t budget_send(budget_client *c, const budget_req *r);

/*
 * Receives the next frame (blocking). Returns 0 with *out set (free it with
 * budget_answer_free), or: -ECONNRESET when the daemon closed the connection, another
 * negative errno, BUDGET_ETOO_LARGE / BUDGET_EBAD_REQUEST when what arrived is not a valid
 * frame. An error answer from the daemon is not a failure here: see budget_answer_error.
 */
BUDGET_API int budget_recv(budget_client *c, budget_answer **out);

/* budget_send, then budget_recv. Returns as they do; *out is NULL on failure. */
BUDGET_API int budget_call(budget_client *c, const budget_req *r, budget_answer **out);

/* budget_call of an op without args ("hello", "stats", "verify", "checkpoint"). */
BUDGET_API int budget_call_op(budget_client *c, const char *op, budget_answer **out);

/* ---- answers ------------------------------------------------------------------------------ */

/* The id the frame carries: the request's, or 0 for a frame the daemon sends as it closes the
 * connection (always an error: too many connections, idle too long, a frame it cannot read). */
BUDGET_API uint64_t budget_answer_id(const budget_answer *a);

/* 0 when the daemon said ok, else its error as a budget_err (BUDGET_EFORBIDDEN ...). */
BUDGET_API int budget_answer_error(const budget_answer *a);

/* The daemon's error code ("forbidden") and message: "" when ok. Valid while `a` is. */
BUDGET_API const char *budget_answer_code(const budget_answer *a);
BUDGET_API const char *budget_answer_message(const budget_answer *a);

/* The result of an ok answer; NULL for an error, or for a push frame of `subscribe`. */
BUDGET_API const budget_value *budget_answer_result(const budget_answer *a);

/* The event of a push frame of `subscribe`; NULL for any other frame. */
BUDGET_API const budget_value *budget_answer_event(const budget_answer *a);

/* Frees an answer and every value in it (nothing when NULL). */
BUDGET_API void budget_answer_free(budget_answer *a);

/* ---- values ------------------------------------------------------------------------------- */

typedef enum {
    BUDGET_VALUE_NIL, /* nil, or no value (a NULL pointer) */
    BUDGET_VALUE_BOOL,
    BUDGET_VALUE_UINT,  /* an integer >= 0 */
    BUDGET_VALUE_INT,   /* an integer < 0 */
    BUDGET_VALUE_FLOAT, /* budgetd sends none; listed for completeness */
    BUDGET_VALUE_STR,
    BUDGET_VALUE_BIN,
    BUDGET_VALUE_ARRAY,
    BUDGET_VALUE_MAP,
    BUDGET_VALUE_OTHER, /* an ext type: budgetd sends none */
} budget_value_type;

/* The type of `v`; BUDGET_VALUE_NIL for NULL, so chained lookups need no checks between. */
BUDGET_API budget_value_type budget_value_type_of(const budget_value *v);

/* The value under `key` of a map, or NULL when `map` is NULL, not a map, or has no such key. */
BUDGET_API const budget_value *budget_value_get(const budget_value *map, const char *key);

/* Items of an array or pairs of a map; 0 for anything else. */
BUDGET_API size_t budget_value_count(const budget_value *v);

/* Item `i` of an array, or the value of pair `i` of a map; NULL when out of range. */
BUDGET_API const budget_value *budget_value_at(const budget_value *v, size_t i);

/* The key of pair `i` of a map (a str value); NULL when out of range or not a map. */
BUDGET_API const budget_value *budget_value_key_at(const budget_value *map, size_t i);

/* Reads an integer. Returns 0 with *out set, or BUDGET_EBAD_REQUEST when `v` is not an
 * integer or does not fit *out (a negative one for _uint; one over INT64_MAX for _int). Every
 * amount, seq, ts and total of budgetd fits both. */
BUDGET_API int budget_value_uint(const budget_value *v, uint64_t *out);
BUDGET_API int budget_value_int(const budget_value *v, int64_t *out);

/* Reads a bool: 0 with *out set, or BUDGET_EBAD_REQUEST. */
BUDGET_API int budget_value_bool(const budget_value *v, bool *out);

/* The bytes of a str (UTF-8, NOT NUL-terminated; *len set) or NULL when `v` is not a str. */
BUDGET_API const char *budget_value_str(const budget_value *v, size_t *len);

/* The bytes of a bin (a hash: 32 bytes) or NULL when `v` is not a bin. */
BUDGET_API const uint8_t *budget_value_bin(const budget_value *v, size_t *len);

/*
 * Copies a str into `out` with a NUL, cut at a UTF-8 character boundary when it does not
 * fit; "" when `v` is not a str. Returns the str's whole length in bytes (like snprintf: a
 * result >= out_size means it was cut), or 0 when it is not a str.
 */
BUDGET_API size_t budget_value_str_copy(const budget_value *v, char *out, size_t out_size);

/* Whether `v` is a str equal to `s`. */
BUDGET_API bool budget_value_str_is(const budget_value *v, const char *s);

#endif
