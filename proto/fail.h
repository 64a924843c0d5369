/*
 * The one way the codec and the client library report an error in words: a message written
 * into the caller's `why` buffer beside the error code that is returned.
 */
#ifndef BUDGET_FAIL_H
#define BUDGET_FAIL_H

#include <stddef.h>

/* Writes the message into `why` (when it is not NULL and why_size > 0, always NUL-terminated,
 * cut to fit) and returns `err`. */
int budget_fail(int err, char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
