/* Names and messages of budget_err values, from the one table in budget/errors.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "budget/errors.h"
#include "proto/fail.h"

const char *budget_err_code(int err)
{
    switch (err) {
#define BUDGET_ERR_CODE(name, value, code, message)                                                \
    case (value):                                                                                  \
        return code;
        BUDGET_ERRNO_MAP(BUDGET_ERR_CODE)
#undef BUDGET_ERR_CODE
    default:
        return "internal";
    }
}

const char *budget_strerror(int err)
{
    if (err == 0)
        return "success";
    switch (err) {
#define BUDGET_ERR_MESSAGE(name, value, code, message)                                             \
    case (value):                                                                                  \
        return message;
        BUDGET_ERRNO_MAP(BUDGET_ERR_MESSAGE)
#undef BUDGET_ERR_MESSAGE
    default:
        /* A negative errno, as the client library returns beside these. */
        return err < 0 && err > -1000 ? strerror(-err) : "unknown error";
    }
}

int budget_err_from_code(const char *code, unsigned long len)
{
#define BUDGET_ERR_MATCH(name, value, wire, message)                                               \
    if (len == sizeof(wire) - 1 && memcmp(code, wire, len) == 0)                                   \
        return (value);
    BUDGET_ERRNO_MAP(BUDGET_ERR_MATCH)
#undef BUDGET_ERR_MATCH
    return BUDGET_EINTERNAL;
}

int budget_fail(int err, char *why, size_t why_size, const char *fmt, ...)
{
    if (why != NULL && why_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
