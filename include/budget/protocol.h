/* The budgetd wire protocol, version 1: constants shared by the daemon and its clients. */
#ifndef BUDGET_PROTOCOL_H
#define BUDGET_PROTOCOL_H

#define BUDGET_PROTOCOL_VERSION 1
#define BUDGET_VERSION "0.1.0"

/* Where the socket is when neither --socket nor $BUDGETD_SOCKET says. */
#define BUDGET_SOCKET_ENV "BUDGETD_SOCKET"
#define BUDGET_SOCKET_FALLBACK "/run/budgetd/budgetd.sock"
#define BUDGET_SOCKET_NAME "budgetd.sock"

/* Event types ("frame.granted", ...) are listed in docs/events.md; the daemon makes its
 * tables of them from one list, LEDGER_EVENT_TYPES in daemon/event_types.h. */

/* SHA-256 digest length of an event's hash and prev. */
#define BUDGET_HASH_BYTES 32

#endif
