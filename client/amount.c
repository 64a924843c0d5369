/*
 * Amounts as clerks write them ("1,5 mkr", "1 500 000 kr") and as budgetctl shows them
 * ("1 500 000,00 kr"). Exact integer arithmetic throughout: no floating point touches money.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "budget/amount.h"
#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/fail.h"

/* The longest text looked at. "-10 000 000 000 000,00 kronor" is 29 bytes; the rest leaves
 * room for no-break spaces (3 bytes each) and trailing zeros, and refuses pasted essays. */
#define AMOUNT_TEXT_BYTES_MAX 128
/* The longest unit name, in bytes ("kronor"); "öre" is 4 bytes in UTF-8. */
#define AMOUNT_UNIT_BYTES_MAX 8
/* Fraction digits that can matter: mkr is 10^8 öre, so at most 8 after trailing zeros go. */
#define AMOUNT_FRACTION_DIGITS_MAX 8

/* A unit and the power of ten that turns one of it into öre. */
typedef struct {
    const char *name; /* lower case, UTF-8 */
    int exponent;
} amount_unit;

static const amount_unit amount_units[] = {
    {"kr", 2}, {"kronor", 2}, {"tkr", 5}, {"mkr", 8}, {"\xc3\xb6re", 0}, {"ore", 0},
};

static const uint64_t powers_of_ten[] = {1,      10,      100,      1000,     10000,
                                         100000, 1000000, 10000000, 100000000};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Bytes of a thousands separator at `p`: space, U+00A0 or U+202F; else 0. */
static size_t separator_bytes(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    if (u[0] == ' ')
        return 1;
    if (u[0] == 0xc2 && u[1] == 0xa0)
        return 2;
    if (u[0] == 0xe2 && u[1] == 0x80 && u[2] == 0xaf)
        return 3;
    return 0;
}

/* Bytes of whitespace at `p` (a separator, or a tab); else 0. */
static size_t space_bytes(const char *p)
{
    if (*p == '\t')
        return 1;
    return separator_bytes(p);
}

static const char *skip_space(const char *p)
{
    size_t n;
    while ((n = space_bytes(p)) > 0)
        p += n;
    return p;
}

/* Describes the character at `p` for an error message: itself when printable ASCII. */
static int unexpected(char *why, size_t why_size, const char *text, const char *p,
                      const char *where)
{
    unsigned char c = (unsigned char)*p;
    if (c > 0x20 && c < 0x7f)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "unexpected '%c' %s", c, where);
    return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "unexpected character at byte %zu %s",
                       (size_t)(p - text), where);
}

/* Reads a unit name at `p` (ASCII letters, 'ö' or 'Ö'), lower-cased into `name`.
 * Returns the bytes consumed; 0 when there is none; -1 when it is too long. */
static int read_unit_name(const char *p, char name[AMOUNT_UNIT_BYTES_MAX + 1])
{
    size_t in = 0;
    size_t out = 0;
    for (;;) {
        unsigned char c = (unsigned char)p[in];
        size_t bytes = 1;
        char lower[2];
        size_t lower_bytes = 1;
        if (c >= 'A' && c <= 'Z') {
            lower[0] = (char)(c - 'A' + 'a');
        } else if (c >= 'a' && c <= 'z') {
            lower[0] = (char)c;
        } else if (c == 0xc3 &&
                   ((unsigned char)p[in + 1] == 0xb6 || (unsigned char)p[in + 1] == 0x96)) {
            lower[0] = (char)0xc3; /* 'ö' and 'Ö' both become 'ö' */
            lower[1] = (char)0xb6;
            bytes = 2;
            lower_bytes = 2;
        } else {
            break;
        }
        if (out + lower_bytes > AMOUNT_UNIT_BYTES_MAX)
            return -1;
        memcpy(name + out, lower, lower_bytes);
        out += lower_bytes;
        in += bytes;
    }
    name[out] = '\0';
    return (int)in;
}

static const amount_unit *find_unit(const char *name)
{
    for (size_t i = 0; i < sizeof(amount_units) / sizeof(amount_units[0]); i++) {
        if (strcmp(amount_units[i].name, name) == 0)
            return &amount_units[i];
    }
    return NULL;
}

/* The parts of a number as written, before its unit scales it. */
typedef struct {
    bool negative;
    uint64_t whole;         /* digits before the decimal mark, saturated past the maximum */
    bool whole_too_large;   /* more than BUDGET_AMOUNT_MAX before any scaling */
    const char *fraction;   /* digits after the decimal mark (NULL when none) */
    size_t fraction_digits; /* without trailing zeros */
} amount_number;

/* Reads the digits before the decimal mark, with optional thousands separators between
 * groups of three. Advances *pp. Returns 0 or an error with `why` set. */
static int read_whole(const char *text, const char **pp, amount_number *n, char *why,
                      size_t why_size)
{
    const char *p = *pp;
    size_t digits = 0;
    size_t group = 0;
    bool grouped = false;
    for (;;) {
        if (is_digit(*p)) {
            if (n->whole <= (uint64_t)BUDGET_AMOUNT_MAX)
                n->whole = n->whole * 10 + (uint64_t)(*p - '0');
            digits++;
            group++;
            p++;
            continue;
        }
        size_t sep = separator_bytes(p);
        if (sep == 0 || digits == 0 || !is_digit(p[sep]))
            break;
        if (group > 3 || (grouped && group != 3))
            return budget_fail(
                BUDGET_EBAD_REQUEST, why, why_size,
                "thousands separator at byte %zu does not follow a group of three digits",
                (size_t)(p - text));
        grouped = true;
        group = 0;
        p += sep;
    }
    if (grouped && group != 3)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                           "the last thousands group must have three digits");
    if (n->whole > (uint64_t)BUDGET_AMOUNT_MAX)
        n->whole_too_large = true;
    *pp = p;
    return 0;
}

/* Reads the digits after a decimal mark at *pp, if there is one. */
static int read_fraction(const char *text, const char **pp, amount_number *n, char *why,
                         size_t why_size)
{
    const char *p = *pp;
    if (*p != ',' && *p != '.')
        return 0;
    p++;
    if (!is_digit(*p))
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "no digits after the decimal mark");
    n->fraction = p;
    size_t digits = 0;
    size_t significant = 0;
    while (is_digit(*p)) {
        digits++;
        if (*p != '0')
            significant = digits;
        p++;
    }
    n->fraction_digits = significant;
    if (*p == ',' || *p == '.')
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                           "more than one decimal mark (at byte %zu)", (size_t)(p - text));
    if (separator_bytes(p) > 0 && is_digit(p[separator_bytes(p)]))
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                           "thousands separator after the decimal mark (at byte %zu)",
                           (size_t)(p - text));
    *pp = p;
    return 0;
}

/* Scales the number by 10^exponent into öre, exactly, or explains why it cannot. */
static int scale(const amount_number *n, int exponent, int64_t *ore, char *why, size_t why_size)
{
    if (n->fraction_digits > (size_t)exponent)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "not a whole number of \xc3\xb6re");
    uint64_t fraction = 0;
    for (size_t i = 0; i < n->fraction_digits; i++)
        fraction = fraction * 10 + (uint64_t)(n->fraction[i] - '0');
    fraction *= powers_of_ten[(size_t)exponent - n->fraction_digits];

    uint64_t whole = 0;
    if (n->whole_too_large || __builtin_mul_overflow(n->whole, powers_of_ten[exponent], &whole) ||
        whole > (uint64_t)BUDGET_AMOUNT_MAX - fraction)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                           "more than 10 000 000 000 000 kr (10^15 \xc3\xb6re) in magnitude");
    uint64_t total = whole + fraction;
    *ore = n->negative ? -(int64_t)total : (int64_t)total;
    return 0;
}

int budget_amount_parse(const char *text, int64_t *ore, char *why, size_t why_size)
{
    if (why != NULL && why_size > 0)
        why[0] = '\0';
    if (text == NULL)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "no amount");
    if (strnlen(text, AMOUNT_TEXT_BYTES_MAX + 1) > AMOUNT_TEXT_BYTES_MAX)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "longer than %d bytes",
                           AMOUNT_TEXT_BYTES_MAX);

    amount_number n = {0};
    const char *p = skip_space(text);
    if (*p == '\0')
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "empty amount");
    bool signed_text = true;
    if (*p == '+') {
        p++;
    } else if (*p == '-') {
        n.negative = true;
        p++;
    } else if (strncmp(p, "\xe2\x88\x92", 3) == 0) { /* U+2212, as word processors write */
        n.negative = true;
        p += 3;
    } else {
        signed_text = false;
    }
    if (!is_digit(*p)) {
        if (*p == ',' || *p == '.')
            return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                               "no digits before the decimal mark (write 0%c5)", *p);
        if (signed_text)
            return budget_fail(BUDGET_EBAD_REQUEST, why, why_size, "no digits after the sign");
        return unexpected(why, why_size, text, p, "where the amount should start with a digit");
    }

    int rc = read_whole(text, &p, &n, why, why_size);
    if (rc == 0)
        rc = read_fraction(text, &p, &n, why, why_size);
    if (rc != 0)
        return rc;

    p = skip_space(p);
    char name[AMOUNT_UNIT_BYTES_MAX + 1];
    int name_bytes = read_unit_name(p, name);
    const amount_unit *unit = &amount_units[0]; /* kronor when no unit is written */
    if (name_bytes < 0)
        return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                           "unknown unit at byte %zu (use kr, tkr, mkr or \xc3\xb6re)",
                           (size_t)(p - text));
    if (name_bytes > 0) {
        unit = find_unit(name);
        if (unit == NULL)
            return budget_fail(BUDGET_EBAD_REQUEST, why, why_size,
                               "unknown unit '%s' (use kr, tkr, mkr or \xc3\xb6re)", name);
        p += name_bytes;
    }
    p = skip_space(p);
    if (*p != '\0')
        return unexpected(why, why_size, text, p, "after the amount");
    return scale(&n, unit->exponent, ore, why, why_size);
}

int budget_amount_format(int64_t ore, char *out, size_t out_size)
{
    /* Room for "-92 233 720 368 547 758,08 kr" (INT64_MIN) and more. */
    char reversed[48];
    size_t len = 0;
    uint64_t magnitude = ore < 0 ? (uint64_t)0 - (uint64_t)ore : (uint64_t)ore;
    uint64_t kronor = magnitude / 100;
    unsigned hundredths = (unsigned)(magnitude % 100);

    memcpy(reversed, "rk ", 3); /* built back to front */
    len = 3;
    reversed[len++] = (char)('0' + hundredths % 10);
    reversed[len++] = (char)('0' + hundredths / 10);
    reversed[len++] = ',';
    unsigned digits = 0;
    do {
        if (digits > 0 && digits % 3 == 0)
            reversed[len++] = ' ';
        reversed[len++] = (char)('0' + kronor % 10);
        kronor /= 10;
        digits++;
    } while (kronor > 0);
    if (ore < 0)
        reversed[len++] = '-';

    for (size_t i = 0; i < len && i + 1 < out_size; i++)
        out[i] = reversed[len - 1 - i];
    if (out_size > 0)
        out[len < out_size ? len : out_size - 1] = '\0';
    return (int)len;
}
