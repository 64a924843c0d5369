/* The frame validator: walks a frame body before any decoder or allocator sees it. */
#ifndef BUDGET_VALIDATE_H
#define BUDGET_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Checks that `body` (the `size` bytes after a frame's length prefix) is exactly one msgpack
 * map whose keys are all str, with no ext and no reserved byte, nesting at most
 * BUDGET_DEPTH_MAX, every str/bin at most BUDGET_STRING_BYTES_MAX, and no container that
 * claims more elements than bytes remain (each element needs at least one byte), so a
 * hostile header such as `dd ff ff ff ff` is refused before anything is allocated for it.
 *
 * Returns 0, BUDGET_EBAD_REQUEST or BUDGET_ETOO_LARGE. On an error `why` (if not NULL)
 * receives one line saying what and at which byte offset. Never allocates; O(size).
 */
int budget_validate_frame(const uint8_t *body, size_t size, char *why, size_t why_size);

#endif
