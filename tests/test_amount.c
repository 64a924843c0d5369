/* client/amount.c: parsing clerks' amounts into öre and formatting öre back. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "budget/amount.h"
#include "budget/errors.h"
#include "budget/limits.h"

#define NBSP "\xc2\xa0"      /* U+00A0 NO-BREAK SPACE */
#define NNBSP "\xe2\x80\xaf" /* U+202F NARROW NO-BREAK SPACE */

static void expect_ore(const char *text, int64_t want)
{
    int64_t got = -12345;
    char why[128] = "";
    int rc = budget_amount_parse(text, &got, why, sizeof(why));
    cr_assert_eq(rc, 0, "\"%s\" refused: %s", text, why);
    cr_assert_eq(got, want, "\"%s\" gave %lld öre, want %lld", text, (long long)got,
                 (long long)want);
}

/* Refused, with a reason containing `because` (when not NULL). */
static void expect_refused(const char *text, const char *because)
{
    int64_t got = -12345;
    char why[128] = "";
    int rc = budget_amount_parse(text, &got, why, sizeof(why));
    cr_assert_eq(rc, BUDGET_EBAD_REQUEST, "\"%s\" accepted as %lld öre", text, (long long)got);
    cr_assert_neq(why[0], '\0', "\"%s\" refused without a reason", text);
    cr_assert_eq(got, -12345, "\"%s\" refused but wrote the result", text);
    if (because != NULL)
        cr_assert(strstr(why, because) != NULL, "\"%s\": reason \"%s\" lacks \"%s\"", text, why,
                  because);
}

static void expect_format(int64_t ore, const char *want)
{
    char out[64];
    int n = budget_amount_format(ore, out, sizeof(out));
    cr_assert_str_eq(out, want, "%lld öre", (long long)ore);
    cr_assert_eq(n, (int)strlen(want));
}

Test(amount_parse, examples_from_the_header)
{
    expect_ore("3 mkr", 300000000);
    expect_ore("1,5 mkr", 150000000);
    expect_ore("500 tkr", 50000000);
    expect_ore("1 500 000 kr", 150000000);
    expect_ore("1500000", 150000000);
    expect_ore("0,50 kr", 50);
    expect_ore("-200 tkr", -20000000);
}

Test(amount_parse, the_source_decision)
{
    /* KS 2021: 3 mkr divided as 1 mkr to SON, 0,5 mkr to KFN, 1,5 mkr to KS. */
    int64_t total, son, kfn, ks;
    char why[128];
    cr_assert_eq(budget_amount_parse("3 mkr", &total, why, sizeof(why)), 0);
    cr_assert_eq(budget_amount_parse("1 mkr", &son, why, sizeof(why)), 0);
    cr_assert_eq(budget_amount_parse("0,5 mkr", &kfn, why, sizeof(why)), 0);
    cr_assert_eq(budget_amount_parse("1,5 mkr", &ks, why, sizeof(why)), 0);
    cr_assert_eq(son + kfn + ks, total);
}

Test(amount_parse, fractions_scaled_exactly)
{
    expect_ore("0,005 tkr", 500);
    expect_ore("1,0000005 mkr", 100000050);
    expect_ore("0,00000001 mkr", 1);
    expect_ore("0,01 kr", 1);
    expect_ore("0,1 kr", 10);
    expect_ore("12,34", 1234);
    expect_ore("2,5 tkr", 250000);
    expect_ore("1,50000 kr", 150); /* trailing zeros are not a fraction of an öre */
    expect_ore("7,000 \xc3\xb6re", 7);
}

Test(amount_parse, whole_ore_rule)
{
    expect_refused("1,234 kr", "whole number of");
    expect_refused("0,001", "whole number of");
    expect_refused("1,5 \xc3\xb6re", "whole number of");
    expect_refused("0,000001 tkr", "whole number of");
    expect_refused("1,000000001 mkr", "whole number of");
}

Test(amount_parse, thousands_separators)
{
    expect_ore("1 500 000 kr", 150000000);
    expect_ore("1" NBSP "500" NBSP "000 kr", 150000000);
    expect_ore("1" NNBSP "500" NNBSP "000 kr", 150000000);
    expect_ore("1 500" NBSP "000" NNBSP "000", 150000000000);
    expect_ore("12 345,67 kr", 1234567);
    expect_ore("999 999", 99999900);
    expect_ore("1" NBSP "mkr", 100000000); /* a no-break space before the unit */
    expect_ore("1" NNBSP "500" NBSP "kr", 150000);
}

Test(amount_parse, misplaced_separators_refused)
{
    expect_refused("1 5 kr", "three digits");
    expect_refused("1 50 000 kr", "three digits");
    expect_refused("1 5000 kr", "three digits");
    expect_refused("1234 567 kr", "three digits");
    expect_refused("1  500 kr", NULL);
    expect_refused("1,500 000 kr", NULL);
}

Test(amount_parse, decimal_point_and_comma)
{
    expect_ore("1.5 mkr", 150000000);
    expect_ore("0.50 kr", 50);
    expect_ore("1 500.25 kr", 150025);
    expect_ore("1" NBSP "500,25 kr", 150025);
    expect_refused("1.500.000", "more than one decimal mark");
    expect_refused("1,500,000", "more than one decimal mark");
    expect_refused("1,5.0 kr", "more than one decimal mark");
    expect_refused("1, kr", "no digits after the decimal mark");
    expect_refused("1,", "no digits after the decimal mark");
    expect_refused(",5 mkr", "no digits before the decimal mark");
    expect_refused(".5", "no digits before the decimal mark");
}

Test(amount_parse, units_and_case)
{
    expect_ore("2 kr", 200);
    expect_ore("2 KR", 200);
    expect_ore("2 Kr", 200);
    expect_ore("2 kronor", 200);
    expect_ore("2 Kronor", 200);
    expect_ore("2 KRONOR", 200);
    expect_ore("2 tkr", 200000);
    expect_ore("2 TKR", 200000);
    expect_ore("2 Tkr", 200000);
    expect_ore("2 mkr", 200000000);
    expect_ore("2 MKR", 200000000);
    expect_ore("2 Mkr", 200000000);
    expect_ore("2 \xc3\xb6re", 2);
    expect_ore("2 \xc3\x96RE", 2);
    expect_ore("2 \xc3\x96re", 2);
    expect_ore("2 ore", 2);
    expect_ore("2 ORE", 2);
    expect_ore("2kr", 200);
    expect_ore("2mkr", 200000000);
    expect_ore("2", 200);
    expect_ore("2\tkr", 200);
    expect_refused("2 sek", "unknown unit");
    expect_refused("2 k", "unknown unit");
    expect_refused("2 kkr", "unknown unit");
    expect_refused("2 miljoner", "unknown unit");
    expect_refused("2 \xc3\xb6", "unknown unit");
}

Test(amount_parse, signs)
{
    expect_ore("+1 mkr", 100000000);
    expect_ore("-1 mkr", -100000000);
    expect_ore("-0,50 kr", -50);
    expect_ore("+500", 50000);
    expect_ore("\xe2\x88\x92"
               "200 tkr",
               -20000000); /* U+2212 MINUS SIGN */
    expect_ore("-0", 0);
    expect_refused("-", "no digits after the sign");
    expect_refused("+", "no digits after the sign");
    expect_refused("+ 5 kr", "no digits after the sign");
    expect_refused("--5", "no digits after the sign");
    expect_refused("+-5", "no digits after the sign");
    expect_refused("5-", NULL);
    expect_refused("5 kr -", NULL);
}

Test(amount_parse, zero_and_whitespace)
{
    expect_ore("0", 0);
    expect_ore("0 kr", 0);
    expect_ore("0,00", 0);
    expect_ore("000 001", 100);
    expect_ore("  5 kr  ", 500);
    expect_ore(NBSP "5 kr" NNBSP, 500);
    expect_ore("\t5\t", 500);
}

Test(amount_parse, the_maximum)
{
    expect_ore("10 000 000 000 000 kr", BUDGET_AMOUNT_MAX);
    expect_ore("-10 000 000 000 000 kr", -BUDGET_AMOUNT_MAX);
    expect_ore("10000000 mkr", BUDGET_AMOUNT_MAX);
    expect_ore("10 000 000 000 tkr", BUDGET_AMOUNT_MAX);
    expect_ore("1000000000000000 \xc3\xb6re", BUDGET_AMOUNT_MAX);
    expect_ore("9 999 999 999 999,99 kr", BUDGET_AMOUNT_MAX - 1);
    expect_ore("10 000 000 000 000,00 kr", BUDGET_AMOUNT_MAX);
    expect_refused("10 000 000 000 000,01 kr", "10^15");
    expect_refused("-10 000 000 000 000,01 kr", "10^15");
    expect_refused("1000000000000001 \xc3\xb6re", "10^15");
    expect_refused("10000000,00000001 mkr", "10^15");
    expect_refused("10 000 001 mkr", "10^15");
    expect_refused("99999999999999999999999999 kr", "10^15");
    expect_refused("99999999999999999999999999999999999999 mkr", "10^15");
    expect_refused("18446744073709551616", "10^15");
}

Test(amount_parse, garbage_refused_with_a_reason)
{
    expect_refused("", "empty");
    expect_refused("   ", "empty");
    expect_refused(NULL, NULL);
    expect_refused("kr", NULL);
    expect_refused("abc", NULL);
    expect_refused("1e6", "unknown unit");
    expect_refused("0x10", "unknown unit");
    expect_refused("12abc34", "unknown unit");
    expect_refused("5 kr kr", NULL);
    expect_refused("5 kr 3", NULL);
    expect_refused("5 mkr.", NULL);
    expect_refused("5;", NULL);
    expect_refused("1'000", NULL);
    expect_refused("1_000", NULL);
    expect_refused("5 kronorkronor", "unknown unit");
    expect_refused("\xff", NULL);
    expect_refused("5\xc3", NULL);
    expect_refused("5 \xe2\x80", NULL);

    char long_text[300];
    memset(long_text, '0', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    expect_refused(long_text, "longer than");
}

Test(amount_parse, why_is_optional_and_truncated)
{
    int64_t ore = 0;
    cr_assert_eq(budget_amount_parse("bad", &ore, NULL, 0), BUDGET_EBAD_REQUEST);
    char why[8];
    cr_assert_eq(budget_amount_parse("1,234 kr", &ore, why, sizeof(why)), BUDGET_EBAD_REQUEST);
    cr_assert_eq(strlen(why), sizeof(why) - 1);
    cr_assert_eq(budget_amount_parse("1,23 kr", &ore, NULL, 0), 0);
    cr_assert_eq(ore, 123);
}

Test(amount_format, examples)
{
    expect_format(150000000, "1 500 000,00 kr");
    expect_format(50, "0,50 kr");
    expect_format(-20000000, "-200 000,00 kr");
    expect_format(0, "0,00 kr");
    expect_format(1, "0,01 kr");
    expect_format(-1, "-0,01 kr");
    expect_format(100, "1,00 kr");
    expect_format(99999, "999,99 kr");
    expect_format(100000, "1 000,00 kr");
    expect_format(12345678, "123 456,78 kr");
    expect_format(300000000, "3 000 000,00 kr");
    expect_format(BUDGET_AMOUNT_MAX, "10 000 000 000 000,00 kr");
    expect_format(-BUDGET_AMOUNT_MAX, "-10 000 000 000 000,00 kr");
}

Test(amount_format, extremes_of_int64)
{
    expect_format(INT64_MAX, "92 233 720 368 547 758,07 kr");
    expect_format(INT64_MIN, "-92 233 720 368 547 758,08 kr");
}

Test(amount_format, short_buffers_like_snprintf)
{
    char out[8];
    memset(out, 'x', sizeof(out));
    int n = budget_amount_format(150000000, out, sizeof(out));
    cr_assert_eq(n, (int)strlen("1 500 000,00 kr"));
    cr_assert_str_eq(out, "1 500 0");

    char one[1] = {'x'};
    cr_assert_eq(budget_amount_format(50, one, sizeof(one)), 7);
    cr_assert_eq(one[0], '\0');

    cr_assert_eq(budget_amount_format(INT64_MIN, NULL, 0), 29);
}

static void expect_round_trip(int64_t ore)
{
    char text[64];
    int n = budget_amount_format(ore, text, sizeof(text));
    cr_assert(n > 0 && (size_t)n < sizeof(text));
    int64_t back = 0;
    char why[128] = "";
    cr_assert_eq(budget_amount_parse(text, &back, why, sizeof(why)), 0, "\"%s\": %s", text, why);
    cr_assert_eq(back, ore, "\"%s\" came back as %lld", text, (long long)back);
}

Test(amount_round_trip, parse_of_format_is_identity)
{
    for (int64_t ore = -100000; ore <= 100000; ore++)
        expect_round_trip(ore);
    /* Every power of ten and its neighbours, up to the maximum. */
    for (int64_t p = 1; p <= BUDGET_AMOUNT_MAX; p *= 10) {
        expect_round_trip(p);
        expect_round_trip(-p);
        expect_round_trip(p - 1);
        expect_round_trip(-(p - 1));
        if (p < BUDGET_AMOUNT_MAX) {
            expect_round_trip(p + 1);
            expect_round_trip(-(p + 1));
        }
    }
    /* A spread of values across the whole range, from a fixed generator. */
    uint64_t state = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 100000; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        int64_t ore = (int64_t)(state % (uint64_t)(BUDGET_AMOUNT_MAX + 1));
        expect_round_trip((i & 1) ? -ore : ore);
    }
}
