/* The syntax of a request's fields (proto/fields.h). */
#include <stdint.h>
#include <string.h>

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

/* ---- dates ---------------------------------------------------------------------------- */

static bool leap_year(int32_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int32_t days_in_month(int32_t y, int32_t m)
{
    static const int8_t days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap_year(y) ? 29 : days[m - 1];
}

bool budget_date_valid(int32_t date)
{
    int32_t y = date / 10000, m = date / 100 % 100, d = date % 100;
    return y >= BUDGET_YEAR_MIN && y <= BUDGET_YEAR_MAX && m >= 1 && m <= 12 && d >= 1 &&
           d <= days_in_month(y, m);
}

bool budget_date_parse(const char *s, size_t len, int32_t *date)
{
    if (len != BUDGET_DATE_BYTES || s[4] != '-' || s[7] != '-')
        return false;
    int32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (i == 4 || i == 7)
            continue;
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (!budget_date_valid(v))
        return false;
    *date = v;
    return true;
}

bool budget_date_format(int32_t date, char out[BUDGET_DATE_BYTES + 1])
{
    if (!budget_date_valid(date))
        return false;
    int32_t parts[3] = {date / 10000, date / 100 % 100, date % 100};
    int widths[3] = {4, 2, 2};
    size_t at = 0;
    for (int p = 0; p < 3; p++) {
        if (p > 0)
            out[at++] = '-';
        for (int k = widths[p] - 1; k >= 0; k--) {
            out[at + (size_t)k] = (char)('0' + parts[p] % 10);
            parts[p] /= 10;
        }
        at += (size_t)widths[p];
    }
    out[at] = '\0';
    return true;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar (Howard Hinnant's
 * days_from_civil). */
int64_t budget_date_days(int32_t date)
{
    int64_t y = date / 10000, m = date / 100 % 100, d = date % 100;
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int32_t budget_date_from_days(int64_t days)
{
    if (days < -1000000000 || days > 1000000000)
        return 0;
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    if (y < BUDGET_YEAR_MIN || y > BUDGET_YEAR_MAX)
        return 0;
    return (int32_t)(y * 10000 + m * 100 + d);
}

/* ---- Swedish days ---------------------------------------------------------------------- */

#define HOUR_MS INT64_C(3600000)
#define DAY_MS INT64_C(86400000)

/* Days since 1970-01-01 of the last Sunday of `month` in `year`. */
static int64_t last_sunday(int64_t year, int month)
{
    int32_t first_of_next =
        (int32_t)(month == 12 ? (year + 1) * 10000 + 101 : year * 10000 + (month + 1) * 100 + 1);
    int64_t last = budget_date_days(first_of_next) - 1;
    /* 1970-01-01 was a Thursday: day 0 is weekday 4 when Sunday is 0. */
    int64_t weekday = ((last + 4) % 7 + 7) % 7;
    return last - weekday;
}

int64_t budget_swedish_offset_ms(int64_t utc_ms)
{
    int64_t days = utc_ms >= 0 ? utc_ms / DAY_MS : -((-utc_ms + DAY_MS - 1) / DAY_MS);
    int32_t date = budget_date_from_days(days);
    int64_t year = date / 10000;
    if (date == 0 || year < 1980)
        return HOUR_MS;
    /* 1980, the first year, began on the first Sunday of April. */
    int64_t begins =
        (year == 1980 ? budget_date_days(19800406) : last_sunday(year, 3)) * DAY_MS + HOUR_MS;
    int64_t ends = last_sunday(year, year < 1996 ? 9 : 10) * DAY_MS + HOUR_MS;
    return utc_ms >= begins && utc_ms < ends ? 2 * HOUR_MS : HOUR_MS;
}

int32_t budget_day_of_ms(int64_t utc_ms)
{
    int64_t local = utc_ms + budget_swedish_offset_ms(utc_ms);
    int64_t days = local >= 0 ? local / DAY_MS : -((-local + DAY_MS - 1) / DAY_MS);
    return budget_date_from_days(days);
}

int64_t budget_day_start_ms(int32_t date)
{
    /* Midnight is never within a change of offset (they happen at 02:00 and 03:00), so the
     * offset an hour before midnight UTC of the same date is the one in force. */
    int64_t midnight_utc = budget_date_days(date) * DAY_MS;
    return midnight_utc - budget_swedish_offset_ms(midnight_utc - HOUR_MS);
}

int64_t budget_day_end_ms(int32_t date)
{
    int64_t next = budget_date_days(date) + 1;
    int32_t next_date = budget_date_from_days(next);
    if (next_date == 0) /* the last day allowed: as if its next day existed */
        return budget_day_start_ms(date) + DAY_MS;
    return budget_day_start_ms(next_date);
}

/* ---- decisions ------------------------------------------------------------------------ */

/* Bytes of the body letter at s (A-Z: 1; Å, Ä, Ö in UTF-8: 2), or 0. */
static size_t body_letter(const char *s, size_t n)
{
    if (s[0] >= 'A' && s[0] <= 'Z')
        return 1;
    if (n >= 2 && (uint8_t)s[0] == 0xc3 &&
        ((uint8_t)s[1] == 0x85 || (uint8_t)s[1] == 0x84 || (uint8_t)s[1] == 0x96))
        return 2;
    return 0;
}

bool budget_decision_body_valid(const char *s, size_t len)
{
    if (len == 0 || len > BUDGET_DECISION_BODY_BYTES_MAX || body_letter(s, len) == 0)
        return false;
    for (size_t i = 0; i < len;) {
        size_t n = s[i] >= '0' && s[i] <= '9' ? 1 : body_letter(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

bool budget_decision_paragraph_valid(const char *s, size_t len)
{
    if (len == 0 || len > BUDGET_DECISION_PARAGRAPH_BYTES_MAX || s[0] < '0' || s[0] > '9' ||
        s[len - 1] == ' ')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                  c == '.' || c == '/' || c == ':' || c == '-' || (c == ' ' && s[i - 1] != ' ');
        if (!ok)
            return false;
    }
    return true;
}

static const char SECTION[] = "\xc2\xa7"; /* § in UTF-8 */

/* The offset of the first word "dnr" (any case, after a space, before a space or the end)
 * in s[from..len), at its space; or len. */
static size_t find_dnr(const char *s, size_t from, size_t len)
{
    for (size_t i = from; i + 4 <= len; i++)
        if (s[i] == ' ' && (s[i + 1] | 0x20) == 'd' && (s[i + 2] | 0x20) == 'n' &&
            (s[i + 3] | 0x20) == 'r' && (i + 4 == len || s[i + 4] == ' '))
            return i;
    return len;
}

bool budget_decision_parse(const char *s, size_t len, budget_decision *out, const char **why)
{
    const char *scratch;
    if (why == NULL)
        why = &scratch;
    memset(out, 0, sizeof *out);
    const char *space = memchr(s, ' ', len);
    size_t body_len = space == NULL ? len : (size_t)(space - s);
    if (!budget_decision_body_valid(s, body_len)) {
        *why = "the body must be 1..16 of A-Z, Å, Ä, Ö and 0-9, beginning with a letter";
        return false;
    }
    memcpy(out->body, s, body_len);
    size_t at = body_len + 1;
    if (space == NULL || len - at < BUDGET_DATE_BYTES ||
        !budget_date_parse(s + at, BUDGET_DATE_BYTES, &out->date)) {
        *why = "the body must be followed by one space and a real day as YYYY-MM-DD";
        return false;
    }
    at += BUDGET_DATE_BYTES;
    if (len - at < 3 || s[at] != ' ' || memcmp(s + at + 1, SECTION, 2) != 0) {
        *why = "the date must be followed by one space and §";
        return false;
    }
    at += 3;
    if (at < len && s[at] == ' ')
        at++;
    size_t dnr = find_dnr(s, at, len);
    if (!budget_decision_paragraph_valid(s + at, dnr - at)) {
        *why = "the paragraph after § must be 1..16 of A-Z a-z 0-9 . / : - and single "
               "spaces, beginning with a digit";
        return false;
    }
    memcpy(out->paragraph, s + at, dnr - at);
    if (dnr < len) {
        at = dnr + 4 == len ? len : dnr + 5;
        if (len - at > BUDGET_DECISION_DNR_BYTES_MAX || !budget_text_valid(s + at, len - at, 1) ||
            s[at] == ' ' || s[len - 1] == ' ') {
            *why = "the diary number after \"dnr\" must be 1..64 bytes of text, not beginning or "
                   "ending with a space";
            return false;
        }
        memcpy(out->dnr, s + at, len - at);
    }
    *why = "";
    return true;
}
