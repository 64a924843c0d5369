/*
 * Outside text made safe (proto/text.h): UTF-8 checked as RFC 3629 has it, control characters
 * and stray bytes written as escapes, and the result capped with an ellipsis.
 */
#include <stdint.h>
#include <string.h>

#include "proto/text.h"

#define ELLIPSIS "\xe2\x80\xa6" /* U+2026 HORIZONTAL ELLIPSIS */
#define ELLIPSIS_BYTES 3

size_t budget_utf8_sequence(const void *s, size_t n)
{
    const uint8_t *p = s;
    if (n == 0)
        return 0;
    if (p[0] < 0x80)
        return 1;
    size_t len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
    if (len == 0 || p[0] > 0xf4 || len > n)
        return 0;
    uint32_t cp = p[0] & (0x7fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    bool overlong = (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A C1 control (U+0080..U+009F) as UTF-8: c2 80 .. c2 9f. */
static inline bool is_c1(const uint8_t *p, size_t len)
{
    return len == 2 && p[0] == 0xc2 && p[1] <= 0x9f;
}

bool budget_text_clean(const void *s, size_t n)
{
    const uint8_t *p = s;
    for (size_t i = 0; i < n;) {
        size_t len = budget_utf8_sequence(p + i, n - i);
        if (len == 0 || (len == 1 && (p[i] < 0x20 || p[i] == 0x7f)) || is_c1(p + i, len))
            return false;
        i += len;
    }
    return true;
}

/*
 * The rendering of the character or stray byte at `p` (`n` bytes left) into `unit` (at most 8
 * bytes); returns the bytes it takes of the input and sets *size to the rendering's size.
 */
static size_t render_one(const uint8_t *p, size_t n, char unit[8], size_t *size)
{
    static const char digits[] = "0123456789abcdef";
    size_t len = budget_utf8_sequence(p, n);
    size_t escaped = 0; /* input bytes written as \xNN */

    if (len == 1) {
        char letter = p[0] == '\\'   ? '\\'
                      : p[0] == '\n' ? 'n'
                      : p[0] == '\r' ? 'r'
                      : p[0] == '\t' ? 't'
                                     : 0;
        if (letter != 0) {
            unit[0] = '\\';
            unit[1] = letter;
            *size = 2;
            return 1;
        }
        if (p[0] < 0x20 || p[0] == 0x7f)
            escaped = 1;
    } else if (len == 0) {
        len = 1;
        escaped = 1;
    } else if (is_c1(p, len)) {
        escaped = 2;
    }
    if (escaped == 0) {
        memcpy(unit, p, len);
        *size = len;
        return len;
    }
    for (size_t i = 0; i < escaped; i++) {
        unit[4 * i] = '\\';
        unit[4 * i + 1] = 'x';
        unit[4 * i + 2] = digits[p[i] >> 4];
        unit[4 * i + 3] = digits[p[i] & 0x0f];
    }
    *size = 4 * escaped;
    return escaped;
}

size_t budget_escape(char *out, size_t out_size, const void *s, size_t n)
{
    const uint8_t *p = s;
    char unit[8];
    size_t size, total = 0, o = 0;

    if (out_size == 0)
        return 0;
    for (size_t i = 0; i < n;) /* first: does all of it fit? */ {
        i += render_one(p + i, n - i, unit, &size);
        total += size;
    }
    bool cut = total > out_size - 1;
    size_t room = out_size - 1;
    if (cut)
        room = room >= ELLIPSIS_BYTES ? room - ELLIPSIS_BYTES : 0;
    for (size_t i = 0; i < n;) {
        size_t used = render_one(p + i, n - i, unit, &size);
        if (o + size > room)
            break;
        memcpy(out + o, unit, size);
        o += size;
        i += used;
    }
    if (cut && out_size - 1 - o >= ELLIPSIS_BYTES) {
        memcpy(out + o, ELLIPSIS, ELLIPSIS_BYTES);
        o += ELLIPSIS_BYTES;
    }
    out[o] = '\0';
    return o;
}
