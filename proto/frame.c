/* Framing (proto/frame.h): the 4-byte length prefix, and where the socket lives. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/frame.h"

#define BUDGET_SOCKET_NAME "budgetd.sock"
#define BUDGET_SOCKET_DEFAULT "/run/budgetd/" BUDGET_SOCKET_NAME

int budget_frame_peek(const uint8_t *buf, size_t len, uint32_t *body_size)
{
    if (len < BUDGET_FRAME_HEADER_BYTES)
        return 1;
    uint32_t size =
        (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | (uint32_t)buf[3];
    /* An empty body can never be a map, and past the maximum the stream cannot be trusted. */
    if (size == 0 || size > BUDGET_FRAME_BYTES_MAX)
        return BUDGET_ETOO_LARGE;
    if (len - BUDGET_FRAME_HEADER_BYTES < size)
        return 1;
    *body_size = size;
    return 0;
}

void budget_frame_header(uint8_t out[4], uint32_t size)
{
    out[0] = (uint8_t)(size >> 24);
    out[1] = (uint8_t)(size >> 16);
    out[2] = (uint8_t)(size >> 8);
    out[3] = (uint8_t)size;
}

/* An unset or empty setting counts as absent, as the shell's `VAR= cmd` expects. */
static const char *budget__setting(const char *value)
{
    return value != NULL && value[0] != '\0' ? value : NULL;
}

int budget_socket_path(const char *flag, char *out, size_t out_size)
{
    size_t limit = sizeof(((struct sockaddr_un *)0)->sun_path);
    if (out_size < limit)
        limit = out_size;

    const char *path = budget__setting(flag);
    if (path == NULL)
        path = budget__setting(getenv("BUDGETD_SOCKET"));

    int n;
    if (path != NULL) {
        n = snprintf(out, out_size, "%s", path);
    } else {
        const char *runtime = budget__setting(getenv("XDG_RUNTIME_DIR"));
        if (runtime != NULL)
            n = snprintf(out, out_size, "%s/%s", runtime, BUDGET_SOCKET_NAME);
        else
            n = snprintf(out, out_size, "%s", BUDGET_SOCKET_DEFAULT);
    }
    /* The path and its NUL must fit both `out` and sun_path. */
    if (n < 0 || (size_t)n >= limit) {
        if (out_size > 0)
            out[0] = '\0';
        return BUDGET_ETOO_LARGE;
    }
    return 0;
}
