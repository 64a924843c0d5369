/* The budgetd wire protocol, version 1: constants shared by the daemon and its clients. */
#ifndef BUDGET_PROTOCOL_H
#define BUDGET_PROTOCOL_H

#define BUDGET_PROTOCOL_VERSION 1
#define BUDGET_VERSION "0.1.0"

/* Where the socket is when neither --socket nor $BUDGETD_SOCKET says. */
#define BUDGET_SOCKET_ENV "BUDGETD_SOCKET"
#define BUDGET_SOCKET_FALLBACK "/run/budgetd/budgetd.sock"
#define BUDGET_SOCKET_NAME "budgetd.sock"

/* Event types, as stored and as read back in an event's "type". */
#define BUDGET_EV_FRAME_GRANTED "frame.granted"
#define BUDGET_EV_FRAME_ADJUSTED "frame.adjusted"
#define BUDGET_EV_ALLOCATION_PROPOSED "allocation.proposed"
#define BUDGET_EV_AVROP_REQUESTED "avrop.requested"
#define BUDGET_EV_DECISION_APPROVED "decision.approved"
#define BUDGET_EV_DECISION_REJECTED "decision.rejected"
#define BUDGET_EV_REQUEST_WITHDRAWN "request.withdrawn"

/* SHA-256 digest length of an event's hash and prev. */
#define BUDGET_HASH_BYTES 32

#endif
