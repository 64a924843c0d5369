/*
 * A response frame under construction: the 4-byte frame header is reserved at the start and
 * patched in by resp_finish. Any thread (worker jobs make theirs on the pool).
 */
#ifndef BUDGET_RESP_H
#define BUDGET_RESP_H

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} resp_t;

/* Starts {"id": req_id, "ok": ok, "result"|"error": ...}; the caller packs the value. */
void resp_begin(resp_t *r, uint64_t req_id, bool ok);

/* A whole error answer {"code", "message"}; a message that is not clean text is escaped. */
void resp_error_into(resp_t *r, uint64_t req_id, int code, const char *message);

/* Finishes the frame; a result over the frame limit becomes a too_large error. */
void resp_finish(resp_t *r, uint64_t req_id);

#endif
