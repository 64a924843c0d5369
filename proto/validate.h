/* The frame validator: walks a frame body before any decoder or allocator sees it, and reads
 * a request's envelope from it in the same place. */
#ifndef BUDGET_VALIDATE_H
#define BUDGET_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Checks that `body` (the `size` bytes after a frame's length prefix) is exactly one msgpack
 * map whose keys are all str, no map holding a key twice or more than BUDGET_MAP_PAIRS_MAX
 * pairs, with no ext and no reserved byte, nesting at most BUDGET_DEPTH_MAX, every str/bin at
 * most BUDGET_STRING_BYTES_MAX, and no container that
 * claims more elements than bytes remain (each element needs at least one byte), so a
 * hostile header such as `dd ff ff ff ff` is refused before anything is allocated for it.
 *
 * Returns 0, BUDGET_EBAD_REQUEST or BUDGET_ETOO_LARGE. On an error `why` (if not NULL)
 * receives one line saying what and at which byte offset. Never allocates; O(size).
 */
int budget_validate_frame(const uint8_t *body, size_t size, char *why, size_t why_size);

/* A request's envelope {"id", "op", "args"}, as views into the frame's body. */
typedef struct {
    uint64_t id;    /* 0 when it cannot be read */
    const char *op; /* not NUL-terminated; NULL unless the envelope is valid */
    uint32_t op_len;
    const uint8_t *args; /* the args map's bytes; NULL when args is left out or nil */
    size_t args_size;
} budget_envelope;

/*
 * Validates a frame body (budget_validate_frame) and reads its envelope, once: everything a
 * server needs to know of a request before it runs it (its id, its op, its args) comes from
 * this one reading. Returns 0 with `env` filled, or BUDGET_EBAD_REQUEST / BUDGET_ETOO_LARGE
 * with `why` set (as budget_validate_frame does) and env->id the request's id when it can be
 * read, else 0. The envelope is refused when its id is not a uint, it holds a key other than
 * id, op and args, its op is not a str, or its args are neither a map nor nil.
 */
int budget_parse_request(const uint8_t *body, size_t size, budget_envelope *env, char *why,
                         size_t why_size);

#endif
