/* The syntax of a request's fields (proto/fields.h). */
#include <stdint.h>

#include "budget/limits.h"
#include "proto/fields.h"
#include "proto/text.h"

static const bool word_char[256] = {
    ['-'] = true, ['.'] = true, [':'] = true, ['_'] = true, ['0'] = true, ['1'] = true,
    ['2'] = true, ['3'] = true, ['4'] = true, ['5'] = true, ['6'] = true, ['7'] = true,
    ['8'] = true, ['9'] = true, ['A'] = true, ['B'] = true, ['C'] = true, ['D'] = true,
    ['E'] = true, ['F'] = true, ['G'] = true, ['H'] = true, ['I'] = true, ['J'] = true,
    ['K'] = true, ['L'] = true, ['M'] = true, ['N'] = true, ['O'] = true, ['P'] = true,
    ['Q'] = true, ['R'] = true, ['S'] = true, ['T'] = true, ['U'] = true, ['V'] = true,
    ['W'] = true, ['X'] = true, ['Y'] = true, ['Z'] = true, ['a'] = true, ['b'] = true,
    ['c'] = true, ['d'] = true, ['e'] = true, ['f'] = true, ['g'] = true, ['h'] = true,
    ['i'] = true, ['j'] = true, ['k'] = true, ['l'] = true, ['m'] = true, ['n'] = true,
    ['o'] = true, ['p'] = true, ['q'] = true, ['r'] = true, ['s'] = true, ['t'] = true,
    ['u'] = true, ['v'] = true, ['w'] = true, ['x'] = true, ['y'] = true, ['z'] = true,
};

bool budget_word_valid(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!word_char[(uint8_t)s[i]])
            return false;
    return true;
}

bool budget_id_valid(const char *s, size_t len)
{
    return budget_word_valid(s, len, BUDGET_ID_BYTES_MAX);
}

bool budget_unit_valid(const char *s, size_t len)
{
    return budget_word_valid(s, len, BUDGET_UNIT_BYTES_MAX);
}

bool budget_utf8_valid(const void *s, size_t n)
{
    const uint8_t *p = s;
    for (size_t i = 0; i < n;) {
        size_t len = budget_utf8_sequence(p + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

bool budget_text_valid(const char *s, size_t len, size_t min)
{
    return len >= min && len <= BUDGET_TEXT_BYTES_MAX && budget_text_clean(s, len);
}
