/*
 * Text that came from outside (a client's bytes, a daemon's answer) made safe to put in a log
 * line, an error message or on a terminal. Shared by the daemon and its clients; no
 * allocation.
 */
#ifndef BUDGET_TEXT_H
#define BUDGET_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True when the `n` bytes at `s` are UTF-8 as RFC 3629 has it (no overlong form, no
 * surrogate, nothing past U+10FFFF) and hold no control character: neither C0
 * (U+0000..U+001F), DEL (U+007F) nor C1 (U+0080..U+009F). Such text is printed as it is.
 */
bool budget_text_clean(const void *s, size_t n);

/* Bytes of the valid UTF-8 sequence at the start of the `n` bytes at `s` (1..4), or 0 when
 * they do not start with one (n == 0 included). Control characters count as valid here. */
size_t budget_utf8_sequence(const void *s, size_t n);

/*
 * Renders the `n` bytes at `s` into `out` as one line of clean text (budget_text_clean holds
 * for it), always NUL-terminated:
 *   - a backslash becomes `\\`; newline, carriage return and tab become `\n`, `\r`, `\t`;
 *   - every other control character, and every byte that is not part of valid UTF-8, becomes
 *     `\xNN` (a C1 control, two bytes in UTF-8, becomes two of them);
 *   - everything else, multi-byte characters included, is kept as it is.
 * When the rendering does not fit in `out_size` bytes it is cut before an escape or a
 * character (never inside one) and ends with an ellipsis, U+2026 ("…"), so `out_size` is a
 * cap on what outside bytes can add to a line. BUDGET_ESCAPED_BYTES(n) is enough for `n`
 * bytes never to be cut. Returns the length written, without the NUL.
 */
size_t budget_escape(char *out, size_t out_size, const void *s, size_t n);

/* A buffer size that holds the rendering of any `n` bytes whole: each byte may take 4. */
#define BUDGET_ESCAPED_BYTES(n) (4 * (size_t)(n) + 1)

#endif
