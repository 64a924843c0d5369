/* Framing: a 4-byte big-endian length, then one msgpack map of that many bytes. */
#ifndef BUDGET_FRAME_H
#define BUDGET_FRAME_H

#include <stddef.h>
#include <stdint.h>

/*
 * Looks at the start of a receive buffer. Returns:
 *  0  and sets *body_size when a whole frame (header + body) is in `buf`;
 *  1  when more bytes are needed (the header or the body is incomplete);
 *  BUDGET_ETOO_LARGE when the header announces 0 bytes or more than BUDGET_FRAME_BYTES_MAX:
 *     the stream cannot be re-synchronised and the caller answers and closes.
 */
int budget_frame_peek(const uint8_t *buf, size_t len, uint32_t *body_size);

/* Writes the 4-byte header for a body of `size` bytes. */
void budget_frame_header(uint8_t out[4], uint32_t size);

/* budget_socket_path is public, in budget/socket.h. */
#include "budget/socket.h"

#endif
