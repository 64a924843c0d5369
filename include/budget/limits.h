/* Every bound budgetd puts on what comes from outside, in one place. */
#ifndef BUDGET_LIMITS_H
#define BUDGET_LIMITS_H

/* Framing: a 4-byte big-endian length, then that many bytes of one msgpack map. */
#define BUDGET_FRAME_HEADER_BYTES 4
#define BUDGET_FRAME_BYTES_MAX (1024u * 1024u)

/* Nesting of maps and arrays in one frame; requests need 3 (envelope, args, actor). */
#define BUDGET_DEPTH_MAX 8
/* Any msgpack str or bin inside a request frame. */
#define BUDGET_STRING_BYTES_MAX 4096u
/* Pairs of any one map inside a request frame (an envelope has 3, the most args an op takes 8);
 * no key may appear twice in a map, and this bound keeps checking that cheap. */
#define BUDGET_MAP_PAIRS_MAX 64u

/* Identifiers (frame, allocation, avrop, decision ids): 1..64 of A-Za-z0-9._:- */
#define BUDGET_ID_BYTES_MAX 64
/* Unit codes ("KS", "SON"): 1..32 of the same characters. */
#define BUDGET_UNIT_BYTES_MAX 32
/* title, purpose, reason: 1..256 bytes of UTF-8; reference and note: 0..256. */
#define BUDGET_TEXT_BYTES_MAX 256
/* A user name taken from the password database for an actor. */
#define BUDGET_NAME_BYTES_MAX 64
/* A decision (beslut): the body that took it ("KS"), 1..16 bytes of A-Z, Å, Ä, Ö and 0-9; its
 * paragraph ("241", "241 p. 2"), 1..16 bytes; its diary number (dnr), 0..64 bytes of UTF-8. */
#define BUDGET_DECISION_BODY_BYTES_MAX 16
#define BUDGET_DECISION_PARAGRAPH_BYTES_MAX 16
#define BUDGET_DECISION_DNR_BYTES_MAX 64
/* A calendar date, "YYYY-MM-DD". */
#define BUDGET_DATE_BYTES 10
/* A budget adoption (budget.adopted): at most this many lines (one binding frame each, with its
 * plan amounts), and at most this many plan years after the budget year. Every line is kept
 * inside the decoded event, so the bound also sizes every decoded event (docs/events.md). */
#define BUDGET_ADOPT_LINES_MAX 64
#define BUDGET_PLAN_YEARS_MAX 10
/* The units × years view: at most this many years in one answer. */
#define BUDGET_YEARS_SPAN_MAX 20
/* Operation names. */
#define BUDGET_OP_BYTES_MAX 32

/* Money, in öre: 0 < amount <= 10^15 (ten thousand billion kronor). */
#define BUDGET_AMOUNT_MAX 1000000000000000LL
/* Fiscal years accepted. */
#define BUDGET_YEAR_MIN 1900
#define BUDGET_YEAR_MAX 9999

/* events: page size default and maximum; events scanned per call before returning a cursor. */
#define BUDGET_EVENTS_PAGE_DEFAULT 100u
#define BUDGET_EVENTS_PAGE_MAX 1000u
#define BUDGET_EVENTS_SCAN_MAX 100000u
/* balances: each list (frames, allocations, avrop, units) is paged on its own: a page holds at
 * most this many items, and stops after the item that reaches this many bytes, so that every
 * answer fits in a frame however many units or frames the ledger holds. */
#define BUDGET_BALANCES_PAGE_MAX 2000u
#define BUDGET_BALANCES_PAGE_BYTES_MAX (192u * 1024u)

/* The server side. Connections at once (default of --connections; --connections may raise it
 * up to BUDGET_CONNECTIONS_CEILING), and from one uid (default of --connections-per-uid). */
#define BUDGET_CONNECTIONS_MAX 1024u
#define BUDGET_CONNECTIONS_CEILING 65536u
#define BUDGET_CONNECTIONS_PER_UID_MAX 256u
/* A connection that sends nothing and waits for nothing is closed after this long (default of
 * --idle-timeout); subscribers are not idle. */
#define BUDGET_IDLE_TIMEOUT_S 600u
/* A frame must arrive whole within this long of its first byte (default of --frame-timeout). */
#define BUDGET_FRAME_TIMEOUT_S 10u
/* The loop thread's time for reads (every request but a write) in one turn of the loop, in
 * microseconds (default of --read-slice): past it a connection's next read waits for the next
 * turn, while commits are answered and writes go on. */
#define BUDGET_READ_SLICE_US 1000u
/* While writes wait for the writer, the share of the loop thread's time, in percent, that
 * reads may take (default of --read-share; 100: no bound): turns follow each other at once, so
 * a slice in each turn alone would let reads fill nearly all of it. */
#define BUDGET_READ_SHARE_PCT 50u
/* Requests read from one connection but not yet answered; past it the server stops reading. */
#define BUDGET_CONN_INFLIGHT_MAX 256u
/* Memory the answers queued for one connection may hold (their allocations, not only their
 * bytes); past it the server stops reading from it. */
#define BUDGET_CONN_OUTPUT_BYTES_MAX (4u * 1024u * 1024u)
/* The same, and the largest frame read, for a connection whose identity holds no role (it
 * may say hello and is refused everything else). */
#define BUDGET_CONN_ROLELESS_OUTPUT_BYTES_MAX (64u * 1024u)
#define BUDGET_CONN_ROLELESS_FRAME_BYTES_MAX (16u * 1024u - 4u)
/* Writes validated and waiting for the next group commit. */
#define BUDGET_BATCH_EVENTS_MAX 4096u
/* Subscriptions at once, from everyone; and from one uid (default of --subscriptions-per-uid,
 * which may set 1..BUDGET_SUBSCRIPTIONS_MAX), so that one reader cannot hold them all. */
#define BUDGET_SUBSCRIPTIONS_MAX 64u
#define BUDGET_SUBSCRIPTIONS_PER_UID_MAX 8u
/* Long reads on worker threads (verify, as_of, events, checkpoint) running or
 * waiting for a thread, in all and for one uid. */
#define BUDGET_READ_JOBS_MAX 64u
#define BUDGET_READ_JOBS_PER_UID_MAX 16u

#endif
