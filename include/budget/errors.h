/* budgetd error codes: one table makes the enum, the wire names and the messages. */
#ifndef BUDGET_ERRORS_H
#define BUDGET_ERRORS_H

#include "budget/export.h"

/*
 * X(NAME, value, wire code, message). Values are negative, as libuv's are, so a function
 * can return either a count (>= 0) or an error, and start at -1001 so they never collide
 * with a negative errno (the client library returns both). The wire code is the stable
 * string sent in an error response's "code" field (docs/protocol.md).
 */
#define BUDGET_ERRNO_MAP(X)                                                                        \
    X(BAD_REQUEST, -1001, "bad_request", "the request is malformed or breaks a field rule")        \
    X(UNKNOWN_OP, -1002, "unknown_op", "no such operation")                                        \
    X(NOT_FOUND, -1003, "not_found", "no such frame, allocation, avrop or event")                  \
    X(CONFLICT, -1004, "conflict", "the id is taken by other content, or expect_head differs")     \
    X(INSUFFICIENT_FUNDS, -1005, "insufficient_funds", "the amount does not fit what is left")     \
    X(INVALID_STATE, -1006, "invalid_state", "the target is not in a state that allows this")      \
    X(FORBIDDEN, -1007, "forbidden", "this identity may not do this")                              \
    X(TOO_LARGE, -1008, "too_large", "a limit was exceeded")                                       \
    X(UNAVAILABLE, -1009, "unavailable",                                                           \
      "the ledger cannot take this now; retry with the same id")                                   \
    X(INTERNAL, -1010, "internal", "internal error")

typedef enum {
    BUDGET_OK = 0,
#define BUDGET_ERR_ENUM(name, value, code, message) BUDGET_E##name = (value),
    BUDGET_ERRNO_MAP(BUDGET_ERR_ENUM)
#undef BUDGET_ERR_ENUM
} budget_err;

/* The wire code of an error ("insufficient_funds"), or "internal" for an unknown value. */
BUDGET_API const char *budget_err_code(int err);

/* A short English description of an error or of a negative errno, never NULL. */
BUDGET_API const char *budget_strerror(int err);

/* The error value for a wire code, or BUDGET_EINTERNAL when the code is unknown. */
BUDGET_API int budget_err_from_code(const char *code, unsigned long len);

#endif
