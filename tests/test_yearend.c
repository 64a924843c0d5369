/*
 * The year's end through budgetctl against a real budgetd: a last day for avrop at its edge
 * (budgetd-faulty with its clock moved by BUDGETD_CLOCK_OFFSET_MS), a close refused while a
 * request is pending, nothing moving after the close, carry-over into the next year, and the
 * same balances after a restart replays the log, at the head and as of before the close.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rel_util.h"

#define DAY_MS INT64_C(86400000)

static rel_daemon rd;

static void teardown(void)
{
    rel_cleanup(&rd);
}

TestSuite(yearend, .fini = teardown, .timeout = 600);

/* budgetctl ARGS... as root (`who` NULL) or as another identity; the result to free. */
static void ctl(const e2e_identity *who, e2e_ctl_result *r, const char *const *argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    rel_assert(&rd, e2e_ctl_argv_as(&rd.d, who, r, argc, argv) == 0, "budgetctl %s: not run",
               argv[0]);
}

#define CTL_OK(...)                                                                                \
    do {                                                                                           \
        e2e_ctl_result r_;                                                                         \
        const char *const argv_[] = {__VA_ARGS__, NULL};                                           \
        ctl(NULL, &r_, argv_);                                                                     \
        rel_assert(&rd, r_.exit_code == 0, "budgetctl %s: %d %s", argv_[0], r_.exit_code, r_.err); \
        e2e_ctl_free(&r_);                                                                         \
    } while (0)

#define CTL_OK_AS_OTHER(...)                                                                       \
    do {                                                                                           \
        e2e_ctl_result r_;                                                                         \
        const char *const argv_[] = {__VA_ARGS__, NULL};                                           \
        ctl(&e2e_other, &r_, argv_);                                                               \
        rel_assert(&rd, r_.exit_code == 0, "budgetctl %s as nobody: %d %s", argv_[0],              \
                   r_.exit_code, r_.err);                                                          \
        e2e_ctl_free(&r_);                                                                         \
    } while (0)

/* budgetctl ARGS... must be refused, its message holding `text`. */
#define CTL_REFUSED(text, ...)                                                                     \
    do {                                                                                           \
        e2e_ctl_result r_;                                                                         \
        const char *const argv_[] = {__VA_ARGS__, NULL};                                           \
        ctl(NULL, &r_, argv_);                                                                     \
        rel_assert(&rd, r_.exit_code != 0, "budgetctl %s was not refused", argv_[0]);              \
        rel_assert(&rd, strstr(r_.err, (text)) != NULL, "budgetctl %s: \"%s\" not in: %s",         \
                   argv_[0], (text), r_.err);                                                      \
        e2e_ctl_free(&r_);                                                                         \
    } while (0)

/* Frames are granted here only, so that what a frame needs first is one edit. */
static void grant_frame(const char *id, const char *unit, const char *year, const char *amount,
                        const char *last_day)
{
    CTL_OK("grant", "--id", id, "--unit", unit, "--year", year, "--amount", amount, "--title",
           "Utökat trygghetsarbete", "--decision", "KS 2021-08-24 § 241", "--last-avrop-day",
           last_day);
}

/* `budgetctl --json ARGS...`, parsed; free it with e2e_json_free. */
static e2e_json *ctl_json(const char *const *argv)
{
    const char *full[16] = {"--json"};
    int n = 1;
    for (; argv[n - 1] != NULL && n < 15; n++)
        full[n] = argv[n - 1];
    full[n] = NULL;
    e2e_ctl_result r;
    ctl(NULL, &r, full);
    rel_assert(&rd, r.exit_code == 0, "budgetctl --json %s: %s", argv[0], r.err);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    rel_assert(&rd, j != NULL, "not JSON: %s", r.out);
    e2e_ctl_free(&r);
    return j;
}

/* The balances of one frame, as JSON text, as of `as_of` (NULL: the head); the frame object
 * in *frame (owned by the returned value). */
static e2e_json *frame_json(const char *id, const char *as_of, const e2e_json **frame)
{
    const char *argv[] = {"balances", "--frame", id, as_of ? "--as-of" : NULL, as_of, NULL};
    e2e_json *j = ctl_json(argv);
    const e2e_json *frames = e2e_json_get(j, "frames");
    rel_assert(&rd, frames != NULL && frames->type == E2E_JSON_ARRAY && frames->count == 1,
               "balances of %s has no frame", id);
    *frame = frames->items[0];
    return j;
}

static bool json_true(const e2e_json *obj, const char *key)
{
    const e2e_json *v = e2e_json_get(obj, key);
    return v != NULL && v->type == E2E_JSON_BOOL && v->boolean;
}

/* Starts budgetd-faulty with its clock at `at_ms` (UTC, within a year of now). */
static void start_at(int64_t at_ms, bool restart)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_CLOCK_OFFSET_MS=%" PRId64, at_ms - now_ms);
    rd.env[1][0] = '\0';
    if (restart)
        rel_assert(&rd, rel_restart(&rd) == 0, "budgetd-faulty did not start again");
    else
        cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
}

/* Starts budgetd-faulty with its clock at noon UTC of the day `day_ms` (the first ms of a UTC
 * day, within a year of today): the same day in Stockholm. */
static void start_at_noon(int64_t day_ms, bool restart)
{
    start_at(day_ms + DAY_MS / 2, restart);
}

/* The day a test plays out, the first ms of it: tomorrow (UTC). The units are registered by a
 * daemon on the real clock, and no event is stamped before the one before it, so the played
 * clock must be ahead of the real one, even at 23:59 UTC (00:59 the next day in Stockholm). */
static int64_t played_day(void)
{
    return ((int64_t)time(NULL) / 86400 + 1) * DAY_MS;
}

static void day_text(int64_t day_ms, char out[16])
{
    time_t t = (time_t)(day_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

Test(yearend, a_year_is_closed_and_carried_over_through_budgetctl_and_replays)
{
    /* Today is the last day for avrop (at noon UTC the same day in Stockholm); its year is the
     * fiscal year. */
    int64_t today = played_day();
    char last[16], next_day[16], year[8], next_year[16];
    day_text(today, last);
    day_text(today + DAY_MS, next_day);
    snprintf(year, sizeof year, "%.4s", last);
    snprintf(next_year, sizeof next_year, "%d", atoi(year) + 1);

    start_at_noon(today, false);
    grant_frame("ks", "KS", year, "3 mkr", last);
    CTL_OK("allocate", "ks", "--id", "a-son", "--unit", "SON", "--amount", "1 mkr", "--purpose",
           "Trygghet");
    CTL_OK_AS_OTHER("approve", "a-son", "--decision", E2E_DECISION);
    /* The last day itself. */
    CTL_OK("avrop", "a-son", "--id", "v-in-time", "--amount", "400 tkr");
    CTL_OK("avrop", "a-son", "--id", "v-pending", "--amount", "100 tkr");

    /* The day after it. */
    rel_stop_clean(&rd);
    start_at_noon(today + DAY_MS, true);
    char message[160];
    snprintf(message, sizeof message,
             "the last day for avrop on allocation a-son was %s (of its frame); avrop v-late "
             "entered on %s is too late",
             last, next_day);
    CTL_REFUSED(message, "avrop", "a-son", "--id", "v-late", "--amount", "1 kr");
    /* Requested in time, approved after the day. */
    CTL_OK_AS_OTHER("approve", "v-in-time", "--decision", E2E_DECISION);

    /* A pending request holds the close up, named in the refusal. */
    CTL_REFUSED("has 1 pending request on its frames; decide or withdraw it first: v-pending",
                "close-year", year, "--decision", "KS 2022-01-25 § 12", "--id", "close");
    CTL_OK_AS_OTHER("reject", "v-pending", "--decision", E2E_DECISION);
    e2e_ctl_result r;
    const char *const close_argv[] = {
        "close-year", year,    "--decision", "KS 2022-01-25 § 12 dnr KS 2022/7",
        "--id",       "close", NULL};
    ctl(NULL, &r, close_argv);
    rel_assert(&rd, r.exit_code == 0, "close-year: %s", r.err);
    rel_assert(&rd, strstr(r.out, "year.closed close seq ") == r.out, "%s", r.out);
    /* The seq before the close: v-pending rejected. */
    char before_close[24];
    snprintf(before_close, sizeof before_close, "%lu",
             strtoul(r.out + strlen("year.closed close seq "), NULL, 10) - 1);
    rel_assert(&rd, strstr(r.out, "unspent 2 600 000,00 kr\n") != NULL, "%s", r.out);
    rel_assert(&rd, strstr(r.out, "unspent 2 600 000,00 kr, carried over 0,00 kr") != NULL, "%s",
               r.out);
    e2e_ctl_free(&r);
    CTL_REFUSED("already closed (close)", "close-year", year, "--decision", "KS 2022-01-25 § 12",
                "--id", "close-again");

    /* Nothing on the year's frames moves. */
    snprintf(message, sizeof message, "fiscal year %s is closed (close)", year);
    CTL_REFUSED(message, "grant", "--unit", "KS", "--year", year, "--amount", "1 kr", "--title",
                "x", "--decision", "KS 2021-12-01 § 300");
    CTL_REFUSED(message, "adjust", "ks", "--delta", "-1 kr", "--reason", "x", "--decision",
                "KS 2021-12-01 § 301");
    CTL_REFUSED(message, "allocate", "ks", "--unit", "KFN", "--amount", "1 kr", "--purpose", "x");
    CTL_REFUSED(message, "avrop", "a-son", "--amount", "1 kr");

    /* Ombudgetering: at most what is left, into a frame of the next year. */
    CTL_REFUSED("exceeds what it has left: 2 600 000,00 kr", "carry-over", "ks", "--id", "ks-next",
                "--amount", "3 mkr", "--title", "Ombudgetering", "--decision",
                "KS 2022-01-25 § 13");
    CTL_OK("carry-over", "ks", "--id", "ks-next", "--amount", "2 mkr", "--title", "Ombudgetering",
           "--decision", "KS 2022-01-25 § 13");
    const e2e_json *f;
    e2e_json *j = frame_json("ks", NULL, &f);
    rel_assert(&rd, json_true(f, "closed"), "frame ks is not shown closed");
    e2e_assert_int(e2e_json_int(f, "unspent", -1), 260000000, "unspent of ks");
    e2e_assert_int(e2e_json_int(f, "carried_over", -1), 200000000, "carried over from ks");
    e2e_assert_str(e2e_json_str(f, "avrop_last_day"), last, "last day of ks");
    e2e_json_free(j);
    j = frame_json("ks-next", NULL, &f);
    e2e_assert_str(e2e_json_str(f, "carried_from"), "ks", "ks-next comes from");
    e2e_assert_int(e2e_json_int(f, "year", 0), atoi(next_year), "the year of ks-next");
    e2e_assert_int(e2e_json_int(f, "granted", 0), 200000000, "ks-next granted");
    rel_assert(&rd, !json_true(f, "closed"), "the next year is shown closed");
    e2e_json_free(j);
    CTL_OK("allocate", "ks-next", "--unit", "SON", "--amount", "2 mkr", "--purpose", "Trygghet");

    /* A restart replays the log to the same balances; as of before the close, open. */
    const char *const all[] = {"--json", "balances", NULL};
    e2e_ctl_result before, after;
    ctl(NULL, &before, all);
    rel_stop_clean(&rd);
    start_at_noon(today + DAY_MS, true);
    ctl(NULL, &after, all);
    rel_assert(&rd, before.exit_code == 0 && strstr(before.out, "\"carried_from\":\"ks\"") != NULL,
               "balances: %s", before.out);
    e2e_assert_str(after.out, before.out, "balances after a restart");
    e2e_ctl_free(&before);
    e2e_ctl_free(&after);
    CTL_OK("verify");
    j = frame_json("ks", before_close, &f);
    rel_assert(&rd, !json_true(f, "closed"), "as of seq %s the year was open", before_close);
    e2e_assert_int(e2e_json_int(f, "carried_over", -1), 0, "carried over before the close");
    e2e_json_free(j);
    rel_stop_clean(&rd);
}

/* A day ends in Stockholm, not in UTC: at 23:30 UTC it is already the next day there (00:30 in
 * winter, 01:30 in summer), so an avrop entered then on an allocation whose last day is the
 * UTC date is too late, and the message names the Swedish day. */
Test(yearend, the_last_day_for_avrop_ends_at_midnight_in_stockholm)
{
    int64_t today = played_day();
    char last[16], next_day[16], year[8];
    day_text(today, last);
    day_text(today + DAY_MS, next_day);
    snprintf(year, sizeof year, "%.4s", last);
    start_at(today + DAY_MS - DAY_MS / 48, false); /* 23:30 UTC */
    grant_frame("ks", "KS", year, "3 mkr", last);
    CTL_OK("allocate", "ks", "--id", "a-son", "--unit", "SON", "--amount", "1 mkr", "--purpose",
           "Trygghet");
    CTL_OK_AS_OTHER("approve", "a-son", "--decision", E2E_DECISION);
    char message[160];
    snprintf(message, sizeof message,
             "the last day for avrop on allocation a-son was %s (of its frame); avrop v-late "
             "entered on %s is too late",
             last, next_day);
    CTL_REFUSED(message, "avrop", "a-son", "--id", "v-late", "--amount", "1 kr");
    /* Balances as of the UTC date end before the frame: it was entered the next day. */
    e2e_ctl_result r;
    const char *const argv[] = {"--json", "balances", "--as-of", last, NULL};
    ctl(NULL, &r, argv);
    rel_assert(&rd, r.exit_code == 0 && strstr(r.out, "\"frames\":[]") != NULL,
               "as of %s, before the events: %s %s", last, r.out, r.err);
    e2e_ctl_free(&r);
    rel_stop_clean(&rd);
}
