/*
 * budgetctl's help for people at a terminal: the output modes (--json errors, --swedish
 * headers, --wide), "did you mean" for commands, options and unit codes, the daemon's
 * refusals with amounts in kronor, the socket's group when a connection is refused for
 * permissions, and progress lines for long operations.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "budget/amount.h"
#include "client/budgetctl.h"

bool cli_json;
bool cli_swedish;
bool cli_wide;
bool cli_quiet;

/* ---- locale and headers ------------------------------------------------------------------- */

/* True when the locale (LC_ALL, else LC_MESSAGES, else LANG) is Swedish: sv, sv_SE, sv_FI.UTF-8. */
bool locale_is_swedish(void)
{
    static const char *const names[] = {"LC_ALL", "LC_MESSAGES", "LANG"};
    for (size_t i = 0; i < COUNT(names); i++) {
        const char *v = getenv(names[i]);
        if (v == NULL || v[0] == '\0')
            continue;
        return strncmp(v, "sv", 2) == 0 && (v[2] == '\0' || v[2] == '_' || v[2] == '.');
    }
    return false;
}

static const struct {
    const char *en, *sv;
} swedish_words[] = {
    {"UNIT", "ENHET"},
    {"YEAR", "ÅR"},
    {"GRANTED", "BEVILJAT"},
    {"ALLOCATED", "FÖRDELAT"},
    {"PENDING", "EJ BESLUTAT"},
    {"UNALLOCATED", "OFÖRDELAT"},
    {"CALLED OFF", "AVROPAT"},
    {"TITLE", "RUBRIK"},
    {"FRAME", "RAM"},
    {"AMOUNT", "BELOPP"},
    {"AVAILABLE", "TILLGÄNGLIGT"},
    {"PURPOSE", "ÄNDAMÅL"},
    {"REDUCED", "MINSKAT"},
    {"REDUCING", "MINSKAS"},
    {"REVERSED", "ÅTERFÖRT"},
    {"REVERSING", "ÅTERFÖRS"},
    {"ALLOCATION", "FÖRDELNING"},
    {"NOTE", "ANTECKNING"},
    {"FRAMES", "RAMAR"},
    {"KIND", "SLAG"},
    {"BY", "AV"},
    {"SEQ", "SEQ"},
    {"Frames", "Ramar"},
    {"Allocations", "Fördelningar"},
    {"Avrop", "Avrop"},
    {"Units, per fiscal year", "Enheter, per budgetår"},
    {"As of seq", "Per seq"},
    {"nothing to show", "inget att visa"},
    {"Waiting for you to decide", "Väntar på ditt beslut"},
    {"Waiting for others to decide", "Väntar på andras beslut"},
    {"allocation", "fördelning"},
    {"avrop", "avrop"},
    {"nothing waits", "inget väntar"},
    /* export's CSV columns */
    {"seq", "seq"},
    {"time_utc", "tid_utc"},
    {"ts_ms", "ts_ms"},
    {"actor_uid", "aktör_uid"},
    {"actor_name", "aktör_namn"},
    {"type", "typ"},
    {"id", "id"},
    {"frame", "ram"},
    {"target", "mål"},
    {"target_kind", "målslag"},
    {"unit", "enhet"},
    {"year", "år"},
    {"amount_kr", "belopp_kr"},
    {"text", "text"},
    {"reference", "referens"},
    {"note", "anteckning"},
    {"hash", "hash"},
    {"kind", "slag"},
    {"status", "status"},
    {"title", "rubrik"},
    {"frames_kr", "ramar_kr"},
    {"granted_kr", "beviljat_kr"},
    {"allocated_kr", "fördelat_kr"},
    {"pending_kr", "ej_beslutat_kr"},
    {"unallocated_kr", "ofördelat_kr"},
    {"called_off_kr", "avropat_kr"},
    {"available_kr", "tillgängligt_kr"},
    /* outcome */
    {"OUTCOME", "UTFALL"},
    {"USED", "FÖRBRUKAT"},
    {"DEVIATION", "AVVIKELSE"},
    {"FORECAST", "PROGNOS"},
    {"MONTH", "MÅNAD"},
    {"TO DATE", "ACKUMULERAT"},
    {"Outcome of", "Utfall för"},
    {"Budget:", "Budget:"},
    {"Outcome to date:", "Utfall hittills:"},
    {"Used of budget:", "Förbrukat av budget:"},
    {"Deviation:", "Avvikelse:"},
    {"Full-year forecast:", "Helårsprognos:"},
    {"month", "månad"},
    {"outcome_kr", "utfall_kr"},
    {"to_date_kr", "ackumulerat_kr"},
};

const char *header_text(const char *english)
{
    if (!cli_swedish)
        return english;
    for (size_t i = 0; i < COUNT(swedish_words); i++)
        if (strcmp(swedish_words[i].en, english) == 0)
            return swedish_words[i].sv;
    return english;
}

/* ---- did you mean ------------------------------------------------------------------------- */

/* Edits (insert, delete, change, swap two neighbours) from a to b, letter case ignored; words
 * over 64 bytes are far from everything. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64)
        return SIZE_MAX;
    size_t d[65][65];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 &&
                tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == tolower((unsigned char)b[j - 1]) &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[n][m];
}

const char *nearest_word(const char *word, const char *const *words, size_t n)
{
    size_t len = strlen(word);
    size_t limit = len < 6 ? 1 : len / 3; /* KFN is no typo of SON, SNO is */
    const char *best = NULL;
    size_t best_distance = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (words[i] == NULL || strcmp(words[i], word) == 0)
            continue;
        size_t distance = edit_distance(word, words[i]);
        if (distance <= limit && distance < best_distance) {
            best = words[i];
            best_distance = distance;
        }
    }
    return best;
}

/* ---- the daemon's refusals ---------------------------------------------------------------- */

/* True when `c` may be part of an id (A-Za-z0-9._:-). */
static bool id_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == ':' || c == '-';
}

/* Removes each whole-word `id` from `s`, with the quotes around it and the blank before it. */
static void drop_id(char *s, const char *id)
{
    size_t n = strlen(id);
    char *at = s;
    while (n > 0 && (at = strstr(at, id)) != NULL) {
        char *end = at + n;
        if ((at > s && id_char(at[-1])) || id_char(*end)) {
            at = end;
            continue;
        }
        char *from = at;
        if (from > s && from[-1] == '"' && *end == '"') {
            from--;
            end++;
        }
        if (from > s && from[-1] == ' ')
            from--;
        memmove(from, end, strlen(end) + 1);
        at = from;
    }
}

/* Appends printf output to out (size bytes, used *at). */
static void append(char *out, size_t size, size_t *at, const char *text, size_t n)
{
    if (*at + n >= size)
        n = *at + 1 < size ? size - *at - 1 : 0;
    memcpy(out + *at, text, n);
    *at += n;
    out[*at] = '\0';
}

#define AMOUNTS_IN_CHAIN 4
#define ORE_SUFFIX " \xc3\xb6re"

/* Numbers joined by " of " or ".." and ending in " öre", at `s`: how many (0 when `s` is not
 * such a chain), their values, the separators and where the chain ends. */
static size_t amount_chain(const char *s, int64_t *values, const char **seps, const char **end)
{
    size_t count = 0;
    const char *p = s;
    while (count < AMOUNTS_IN_CHAIN) {
        if (!(isdigit((unsigned char)p[0]) || (p[0] == '-' && isdigit((unsigned char)p[1]))))
            return 0;
        char *stop = NULL;
        errno = 0;
        long long v = strtoll(p, &stop, 10);
        if (errno != 0 || id_char(*stop))
            return 0;
        values[count++] = v;
        p = stop;
        if (strncmp(p, " of ", 4) == 0 && isdigit((unsigned char)p[4])) {
            seps[count - 1] = " of ";
            p += 4;
        } else if (strncmp(p, "..", 2) == 0 && (isdigit((unsigned char)p[2]) || p[2] == '-')) {
            seps[count - 1] = "..";
            p += 2;
        } else {
            break;
        }
    }
    if (strncmp(p, ORE_SUFFIX, strlen(ORE_SUFFIX)) != 0 || id_char(p[strlen(ORE_SUFFIX)]))
        return 0;
    *end = p + strlen(ORE_SUFFIX);
    return count;
}

/* A daemon's message with every amount in öre written in kronor ("225000000 of 300000000 öre"
 * becomes "2 250 000,00 kr of 3 000 000,00 kr"); where one "A of B öre" is the room used of a
 * whole, what is left is added at the end ("; 750 000,00 kr left"). */
void kronor_text(const char *message, char *out, size_t size)
{
    size_t at = 0, chains = 0;
    int64_t left = -1;
    out[0] = '\0';
    for (const char *p = message; *p != '\0';) {
        int64_t values[AMOUNTS_IN_CHAIN];
        const char *seps[AMOUNTS_IN_CHAIN], *end = NULL;
        bool boundary = p == message || !id_char(p[-1]);
        size_t count = boundary ? amount_chain(p, values, seps, &end) : 0;
        if (count == 0) {
            append(out, size, &at, p++, 1);
            continue;
        }
        for (size_t i = 0; i < count; i++) {
            char kr[48];
            budget_amount_format(values[i], kr, sizeof(kr));
            append(out, size, &at, kr, strlen(kr));
            if (i + 1 < count)
                append(out, size, &at, seps[i], strlen(seps[i]));
        }
        if (count == 2 && strcmp(seps[0], " of ") == 0 && values[0] <= values[1])
            left = values[1] - values[0];
        chains++;
        p = end;
    }
    if (left >= 0 && chains > 0) {
        char kr[48], tail[80];
        budget_amount_format(left, kr, sizeof(kr));
        snprintf(tail, sizeof(tail), "; %s left", kr);
        append(out, size, &at, tail, strlen(tail));
    }
}

/*
 * The line for a refusal: `code: message` with amounts in kronor (or, with --json, the
 * daemon's own words as JSON). An id budgetctl generated for a write that was refused does not
 * exist, so the message does not name it. Returns `status`.
 */
int refusal(int status, const char *code, const char *message, const char *generated_id)
{
    char text[BUDGET_TEXT_BYTES_MAX * 2 + 64], kronor[sizeof(text) + 256];
    snprintf(text, sizeof(text), "%s", message);
    if (generated_id != NULL)
        drop_id(text, generated_id);
    if (cli_json) {
        if (!cli_quiet)
            json_error(status, code, strlen(code), text);
        return status;
    }
    kronor_text(text, kronor, sizeof(kronor));
    return complain(status, "%s: %s", code, kronor);
}

/* ---- permissions -------------------------------------------------------------------------- */

/* Why a connect was refused for permissions: the group of the socket (or, when the folder
 * cannot be searched, of its folder) that one must belong to. */
void permission_hint(const char *path, char *out, size_t size)
{
    struct stat st;
    char folder[PATH_MAX];
    const char *what = "the socket";
    snprintf(out, size, "%s", "");
    if (stat(path, &st) != 0) {
        snprintf(folder, sizeof(folder), "%s", path);
        char *slash = strrchr(folder, '/');
        if (slash == NULL || stat(slash == folder ? "/" : (*slash = '\0', folder), &st) != 0)
            return;
        what = "the socket's folder";
    }
    struct group *g = getgrgid(st.st_gid);
    if (g != NULL)
        snprintf(out, size, " (join the group %s, which %s belongs to, and log in again)",
                 g->gr_name, what);
    else
        snprintf(out, size, " (join the group %u, which %s belongs to, and log in again)",
                 (unsigned)st.st_gid, what);
}

/* ---- progress ----------------------------------------------------------------------------- */

static struct {
    bool on;
    const char *what;
    int64_t shown_ms;
    bool drawn;
} progress;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Progress of `what` goes to a terminal on stderr from now on; nothing when stderr is not
 * one, or with --json. */
void progress_begin(const char *what)
{
    progress.on = !cli_json && isatty(STDERR_FILENO);
    progress.what = what;
    progress.shown_ms = 0;
    progress.drawn = false;
}

/* `done` of `total` (`unit`: "events", "bytes"); redrawn at most 10 times a second. */
void progress_update(uint64_t done, uint64_t total, const char *unit)
{
    if (!progress.on)
        return;
    int64_t now = now_ms();
    if (progress.drawn && now - progress.shown_ms < 100 && done < total)
        return;
    progress.shown_ms = now;
    progress.drawn = true;
    if (total > 0)
        fprintf(stderr, "\r\033[Kbudgetctl: %s: %" PRIu64 " of %" PRIu64 " %s (%" PRIu64 "%%)",
                progress.what, done, total, unit, done >= total ? 100 : done * 100 / total);
    else
        fprintf(stderr, "\r\033[Kbudgetctl: %s: %" PRIu64 " %s", progress.what, done, unit);
    fflush(stderr);
}

/* Clears the progress line; later messages start on a clean line. */
void progress_end(void)
{
    if (progress.on && progress.drawn)
        fputs("\r\033[K", stderr);
    progress.on = false;
    progress.drawn = false;
}
