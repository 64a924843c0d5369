/* Where budgetd's socket is, resolved as budgetd and budgetctl resolve it. */
#ifndef BUDGET_SOCKET_H
#define BUDGET_SOCKET_H

#include <stddef.h>

#include "budget/export.h"

/*
 * Resolves the socket path: `flag` if not NULL or "", else $BUDGETD_SOCKET, else
 * $XDG_RUNTIME_DIR/budgetd.sock, else /run/budgetd/budgetd.sock (an empty variable counts as
 * unset). Writes it into `out`. Returns 0, or BUDGET_ETOO_LARGE when the path does not fit
 * `out` or a sockaddr_un (108 bytes with its NUL); `out` is then "".
 */
BUDGET_API int budget_socket_path(const char *flag, char *out, size_t out_size);

#endif
