/*
 * budgetctl report against a real budgetd, read the way a committee reads it: rendered by a
 * headless Chromium to a PNG and a PDF, and its DOM compared figure by figure with what
 * `budgetctl --json balances` says.
 *
 * The ledger is the decision KS 2021-08-24 § 241 as scripts/demo.sh loads it: KS's frame of
 * 3 mkr for 2021 "Utökat trygghetsarbete", divided 1 mkr to SON, 0,5 mkr to KFN and 1,5 mkr to
 * KS, approved by a second uid (KS 2021-09-28 § 270); SON calls off 400 tkr, approved (KS
 * ordförandebeslut 2021-10-15), and asks for 150 000,50 kr more, still pending. Outcome
 * (utfall) is recorded for SON and KS as an import of the financial system's export
 * (outcome_import), and is compared with what `balances` and `outcome` say of it.
 *
 * Chromium comes from Debian's `chromium` package, which scripts/setup.sh installs.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "audit_util.h"
#include "budget/limits.h"
#include "e2e_util.h"

static e2e_daemon bd;

static void setup(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
    au_cleanup();
}

/* A backstop: every wait inside is bounded well below it. */
#define TEST_TIMEOUT_S 120
TestSuite(report, .init = setup, .fini = teardown, .timeout = TEST_TIMEOUT_S);

/* How long one Chromium run may take (it starts in about 1 s on an idle machine). */
#define CHROMIUM_TIMEOUT_MS (30000 * e2e_slow())
/* A rendered first page is text, tables and two charts: well over this share is ink. */
#define INKED_SHARE_MIN 0.02
/* The page is A4 at 150 dpi, as the screenshot is taken. */
#define PAGE_WIDTH_PX 1240
#define PAGE_HEIGHT_PX 1754

#define FRAME_REFERENCE "KS 2021-08-24 § 241"
#define ALLOCATION_REFERENCE "KS 2021-09-28 § 270"
#define AVROP_REFERENCE "KS ordförandebeslut 2021-10-15"

/* ---- budgetctl --------------------------------------------------------------------------- */

static void ctl_ok_argv(bool other, int argc, const char *const *argv)
{
    e2e_ctl_result r;
    int rc = other ? e2e_ctl_argv_as(&bd, &e2e_other, &r, argc, argv)
                   : e2e_ctl_argv(&bd, &r, argc, argv);
    e2e_assert(rc == 0, "budgetctl %s could not be run", argv[0]);
    e2e_assert(r.exit_code == 0, "budgetctl %s exited %d: %s%s", argv[0], r.exit_code, r.out,
               r.err);
    e2e_ctl_free(&r);
}

#define ctl_ok(...) ctl_ok_argv(false, AU_ARGC(__VA_ARGS__), AU_ARGV(__VA_ARGS__))
#define ctl_ok_other(...) ctl_ok_argv(true, AU_ARGC(__VA_ARGS__), AU_ARGV(__VA_ARGS__))

/* The decision's events (11): the grant, three allocations and their approvals, an approved
 * avrop and a pending one. */
static void seed(void)
{
    ctl_ok("grant", "--decision", E2E_DECISION, "--id", "ks-2021-trygghet", "--unit", "KS",
           "--year", "2021", "--amount", "3 mkr", "--title", "Utökat trygghetsarbete",
           "--reference", FRAME_REFERENCE);
    ctl_ok("allocate", "ks-2021-trygghet", "--id", "son-trygghet", "--unit", "SON", "--amount",
           "1 mkr", "--purpose", "Förstärka områdesarbetet för trygghetsskapande åtgärder");
    ctl_ok("allocate", "ks-2021-trygghet", "--id", "kfn-fritid", "--unit", "KFN", "--amount",
           "0,5 mkr", "--purpose", "Fritidsverksamhet som säkerställer skolgång");
    ctl_ok("allocate", "ks-2021-trygghet", "--id", "ks-trygghet", "--unit", "KS", "--amount",
           "1,5 mkr", "--purpose", "Förstärkt trygghetsarbete, bland annat ordningsvakter");
    ctl_ok_other("approve", "--decision", E2E_DECISION, "son-trygghet", "--id",
                 "beslut-son-trygghet", "--reference", ALLOCATION_REFERENCE);
    ctl_ok_other("approve", "--decision", E2E_DECISION, "kfn-fritid", "--id", "beslut-kfn-fritid",
                 "--reference", ALLOCATION_REFERENCE);
    ctl_ok_other("approve", "--decision", E2E_DECISION, "ks-trygghet", "--id", "beslut-ks-trygghet",
                 "--reference", ALLOCATION_REFERENCE);
    ctl_ok("avrop", "son-trygghet", "--id", "son-avrop-1", "--amount", "400 tkr", "--note",
           "Fältorganisationen, hösten 2021");
    ctl_ok_other("approve", "--decision", E2E_DECISION, "son-avrop-1", "--id", "beslut-son-avrop-1",
                 "--reference", AVROP_REFERENCE);
    ctl_ok("avrop", "son-trygghet", "--id", "son-avrop-2", "--amount", "150 000,50 kr", "--note",
           "Ordningsvakter vid skolorna");
}

/* Runs `budgetctl report ARGS... --output DIR/report.html` and returns the file (free it). */
static char *report_file(const char *dir, const char *const *args, int argc, char *path,
                         size_t path_size)
{
    const char *argv[16];
    snprintf(path, path_size, "%s/report.html", dir);
    argv[0] = "report";
    for (int i = 0; i < argc; i++)
        argv[1 + i] = args[i];
    argv[1 + argc] = "--output";
    argv[2 + argc] = path;
    ctl_ok_argv(false, argc + 3, argv);
    size_t len;
    char *html = au_read_file(path, &len);
    e2e_assert(html != NULL && len > 0, "budgetctl report wrote no %s", path);
    return html;
}

/* ---- Chromium ---------------------------------------------------------------------------- */

/* Where `chromium` is on PATH (copied to out); the test fails when it is not installed. */
static void find_chromium(char *out, size_t out_size)
{
    const char *path = getenv("PATH");
    char copy[4096];
    snprintf(copy, sizeof(copy), "%s", path != NULL ? path : "/usr/bin:/bin");
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir != NULL;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(out, out_size, "%s/chromium", dir);
        if (access(out, X_OK) == 0)
            return;
    }
    cr_assert_fail("chromium is not installed: scripts/setup.sh installs Debian's chromium "
                   "package, which this suite renders the report with");
}

/* Starts a headless Chromium on file://`html` with `mode` (--screenshot=..., --dump-dom);
 * `profile` is an empty folder of its own. */
static void chromium_start(au_proc *p, const char *profile, const char *mode, const char *html)
{
    static char chromium[1024];
    char profile_arg[1100], url[1100];
    find_chromium(chromium, sizeof(chromium));
    snprintf(profile_arg, sizeof(profile_arg), "--user-data-dir=%s", profile);
    snprintf(url, sizeof(url), "file://%s", html);
    const char *argv[] = {chromium,
                          "--headless",
                          "--no-sandbox",
                          "--disable-gpu",
                          "--disable-quic",
                          "--no-first-run",
                          "--disable-background-networking",
                          "--disable-component-update",
                          "--disable-sync",
                          "--hide-scrollbars",
                          profile_arg,
                          "--window-size=1240,1754",
                          mode,
                          url,
                          NULL};
    e2e_assert(au_proc_start(p, argv) == 0, "chromium could not be started");
}

static void chromium_wait(au_proc *p, const char *what)
{
    int code = au_proc_wait(p, CHROMIUM_TIMEOUT_MS);
    e2e_assert(code == 0, "chromium %s exited %d: %s", what, code, p->err ? p->err : "");
}

/* ---- a small PNG reader ------------------------------------------------------------------ */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Undoes the PNG filter of one row in place (`prev` the row above, zeros for the first). */
static bool unfilter(int type, unsigned char *row, const unsigned char *prev, size_t stride,
                     size_t bpp)
{
    for (size_t i = 0; i < stride; i++) {
        int left = i >= bpp ? row[i - bpp] : 0, up = prev[i], corner = i >= bpp ? prev[i - bpp] : 0;
        switch (type) {
        case 0:
            break;
        case 1:
            row[i] = (unsigned char)(row[i] + left);
            break;
        case 2:
            row[i] = (unsigned char)(row[i] + up);
            break;
        case 3:
            row[i] = (unsigned char)(row[i] + (left + up) / 2);
            break;
        case 4:
            row[i] = (unsigned char)(row[i] + paeth(left, up, corner));
            break;
        default:
            return false;
        }
    }
    return true;
}

/* Decodes an 8-bit RGB or RGBA PNG (what Chromium writes) and counts its pixels that are not
 * near white. Fails the test on anything else. */
static void png_ink(const char *path, uint32_t *width, uint32_t *height, uint64_t *inked)
{
    size_t len;
    unsigned char *png = (unsigned char *)au_read_file(path, &len);
    e2e_assert(png != NULL && len > 33 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0,
               "%s is not a PNG", path);
    unsigned char *idat = malloc(len);
    size_t idat_len = 0;
    int depth = 0, colour = 0, interlace = 0;
    for (size_t at = 8; at + 12 <= len;) {
        uint32_t n = be32(png + at);
        const unsigned char *kind = png + at + 4, *body = png + at + 8;
        e2e_assert(n <= len - at - 12, "a chunk of %s runs past its end", path);
        if (memcmp(kind, "IHDR", 4) == 0) {
            *width = be32(body);
            *height = be32(body + 4);
            depth = body[8];
            colour = body[9];
            interlace = body[12];
        } else if (memcmp(kind, "IDAT", 4) == 0) {
            memcpy(idat + idat_len, body, n);
            idat_len += n;
        } else if (memcmp(kind, "IEND", 4) == 0) {
            break;
        }
        at += 12 + (size_t)n;
    }
    e2e_assert(depth == 8 && (colour == 2 || colour == 6) && interlace == 0 && idat_len > 0,
               "%s: depth %d colour type %d interlace %d: not an 8-bit RGB(A) PNG", path, depth,
               colour, interlace);
    size_t bpp = colour == 2 ? 3 : 4, stride = (size_t)*width * bpp;
    uLongf raw_len = (uLongf)((stride + 1) * *height);
    unsigned char *raw = malloc(raw_len), *prev = calloc(1, stride);
    e2e_assert(raw != NULL && prev != NULL, "out of memory for %s", path);
    e2e_assert(
        uncompress(raw, &raw_len, idat, idat_len) == Z_OK && raw_len == (stride + 1) * *height,
        "%s: the image data does not inflate to %u rows of %zu bytes", path, *height, stride);
    *inked = 0;
    for (uint32_t y = 0; y < *height; y++) {
        unsigned char *row = raw + y * (stride + 1) + 1;
        e2e_assert(unfilter(row[-1], row, prev, stride, bpp), "%s: bad filter in row %u", path, y);
        for (size_t x = 0; x < stride; x += bpp) {
            unsigned char darkest = row[x] < row[x + 1] ? row[x] : row[x + 1];
            darkest = darkest < row[x + 2] ? darkest : row[x + 2];
            if (darkest < 235 && (bpp == 3 || row[x + 3] > 0))
                (*inked)++;
        }
        memcpy(prev, row, stride);
    }
    free(prev);
    free(raw);
    free(idat);
    free(png);
}

/* ---- Swedish figures --------------------------------------------------------------------- */

/* öre as the report writes them: "1 500 000 kr", "150 000,50 kr" (U+202F between groups of
 * digits, U+00A0 before kr). Written here on their own, from the documented form. */
static void swedish(int64_t ore, char *out, size_t out_size)
{
    char digits[32], grouped[96] = "";
    uint64_t magnitude = ore < 0 ? (uint64_t)(-ore) : (uint64_t)ore;
    int n = snprintf(digits, sizeof(digits), "%" PRIu64, magnitude / 100);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            at += (size_t)snprintf(grouped + at, sizeof(grouped) - at, "\u202f");
        grouped[at++] = digits[i];
    }
    grouped[at] = '\0';
    if (magnitude % 100 != 0)
        snprintf(out, out_size, "%s%s,%02" PRIu64 "\u00a0kr", ore < 0 ? "\u2212" : "", grouped,
                 magnitude % 100);
    else
        snprintf(out, out_size, "%s%s\u00a0kr", ore < 0 ? "\u2212" : "", grouped);
}

/* Replaces every "&nbsp;" of a DOM dump by U+00A0 itself, as the file holds it. */
static void unescape_nbsp(char *s)
{
    char *w = s;
    for (const char *r = s; *r != '\0';) {
        if (strncmp(r, "&nbsp;", 6) == 0) {
            memcpy(w, "\u00a0", 2);
            w += 2;
            r += 6;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/*
 * Checks the row that starts at the first `marker` at or after `from` in `dom`: its figure
 * cells (<td class="n">) hold exactly `expected`, in order. Returns where the row starts.
 */
static const char *check_row(const char *dom, const char *from, const char *marker,
                             const int64_t *expected, int count)
{
    const char *row = strstr(from, marker);
    e2e_assert(row != NULL, "the DOM has no row %s after byte %td", marker, from - dom);
    const char *end = strstr(row, "</tr>");
    e2e_assert(end != NULL, "the row %s does not end", marker);
    const char *cell = row;
    for (int i = 0; i < count; i++) {
        char want[96];
        swedish(expected[i], want, sizeof(want));
        cell = strstr(cell, "<td class=\"n\">");
        e2e_assert(cell != NULL && cell < end, "row %s: figure %d of %d is missing", marker, i + 1,
                   count);
        cell += strlen("<td class=\"n\">");
        const char *close = strstr(cell, "</td>");
        e2e_assert(close != NULL && (size_t)(close - cell) == strlen(want) &&
                       strncmp(cell, want, strlen(want)) == 0,
                   "row %s: figure %d is \"%.*s\", expected \"%s\"", marker, i + 1,
                   close ? (int)(close - cell) : 40, cell, want);
    }
    return row;
}

/* The text of a row (from `row` to its </tr>) contains `text`. */
static bool row_has(const char *row, const char *text)
{
    const char *end = strstr(row, "</tr>"), *at = strstr(row, text);
    return at != NULL && end != NULL && at < end;
}

/* `budgetctl --json balances`, parsed (free it). */
static e2e_json *balances_json(void)
{
    e2e_ctl_result r;
    e2e_assert(au_ctl(&bd, &r, "--json", "balances") == 0 && r.exit_code == 0,
               "budgetctl --json balances failed: %s", r.err);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    e2e_assert(j != NULL, "--json balances printed no JSON: %s", r.out);
    e2e_ctl_free(&r);
    return j;
}

/* Where the section of `unit` starts in the DOM, and where the next section starts (or the
 * end). */
static void unit_section(const char *dom, const char *unit, const char **start, const char **end)
{
    char marker[96];
    snprintf(marker, sizeof(marker), "<section class=\"unit\" data-unit=\"%s\">", unit);
    *start = strstr(dom, marker);
    e2e_assert(*start != NULL, "the DOM has no section for unit %s", unit);
    *end = strstr(*start + 1, "<section class=\"unit\"");
    if (*end == NULL)
        *end = *start + strlen(*start);
}

/* Runs `budgetctl report ARGS...` into `dir` (a new folder each time), has a headless
 * Chromium load it and returns the DOM it dumps, with &nbsp; as U+00A0 (free it). */
static char *report_dom(const char *dir, const char *const *args, int argc)
{
    static unsigned run;
    char sub[300], html[350], profile[350];
    snprintf(sub, sizeof(sub), "%s/dom-%u", dir, run++);
    e2e_assert(mkdir(sub, 0700) == 0, "mkdir %s: %s", sub, strerror(errno));
    free(report_file(sub, args, argc, html, sizeof(html)));
    snprintf(profile, sizeof(profile), "%s/profile", sub);
    e2e_assert(mkdir(profile, 0700) == 0, "mkdir: %s", strerror(errno));
    au_proc p;
    chromium_start(&p, profile, "--dump-dom", html);
    chromium_wait(&p, "--dump-dom");
    char *dom = strdup(p.out != NULL ? p.out : "");
    au_proc_free(&p);
    unescape_nbsp(dom);
    e2e_assert(strstr(dom, "<h1>Budgetrapport</h1>") != NULL, "the DOM has no report: %.400s", dom);
    return dom;
}

/* ---- outcome ----------------------------------------------------------------------------- */

/* The financial system's export as Swedish Excel saves it, and the map that reads it: SON's
 * September costs and a credit in October, and KS's October costs. KFN has no outcome. */
static const char outcome_csv[] = "\xef\xbb\xbfPeriod;Ansvar;Belopp\r\n"
                                  "2021-09;SON;\"13 345,50\"\r\n"
                                  "2021-10;SON;\"-2 500,25\"\r\n"
                                  "2021-10;KS;\"250 000,00\"\r\n";
static const char outcome_map[] = "period=Period\nunit=Ansvar\namount=Belopp\n";

/* Records the export's outcome with `budgetctl import outcome`, as a clerk does. */
static void outcome_import(const char *dir)
{
    char csv[300], map[300];
    snprintf(csv, sizeof(csv), "%s/utfall-2021-10.csv", dir);
    snprintf(map, sizeof(map), "%s/utfall.map", dir);
    e2e_assert(au_write_file(csv, outcome_csv, strlen(outcome_csv), 0644) == 0 &&
                   au_write_file(map, outcome_map, strlen(outcome_map), 0644) == 0,
               "cannot write the export to %s", dir);
    ctl_ok("import", "outcome", csv, "--map", map);
}

/* A share in per mille as the report writes it: "16,6 %" (U+00A0 before %, U+2212 for a
 * minus), or "—" when there is none (`has` false). Written here from the documented form;
 * the shares of this ledger stay below 1000 %. */
static void swedish_permille(bool has, int64_t permille, char *out, size_t out_size)
{
    uint64_t m = permille < 0 ? (uint64_t)(-permille) : (uint64_t)permille;
    if (!has)
        snprintf(out, out_size, "\u2014");
    else
        snprintf(out, out_size, "%s%" PRIu64 ",%" PRIu64 "\u00a0%%", permille < 0 ? "\u2212" : "",
                 m / 10, m % 10);
}

/* The text of the first cell <td class="`cls`"> of the row at `row`; fails when it has none. */
static void cell_text(const char *row, const char *cls, char *out, size_t out_size)
{
    char open[64];
    snprintf(open, sizeof(open), "<td class=\"%s\">", cls);
    const char *end = strstr(row, "</tr>"), *cell = strstr(row, open);
    e2e_assert(cell != NULL && end != NULL && cell < end, "the row has no cell %s: %.300s", cls,
               row);
    cell += strlen(open);
    const char *close = strstr(cell, "</td>");
    e2e_assert(close != NULL, "a cell %s does not end", cls);
    snprintf(out, out_size, "%.*s", (int)(close - cell), cell);
}

/* Checks the outcome row at `marker` (after `from`): its budget, outcome, deviation and
 * forecast, its share used and the month the outcome runs to. Returns where the row starts. */
static const char *check_outcome_row(const char *dom, const char *from, const char *marker,
                                     const int64_t figures[4], bool has_used, int64_t used_permille,
                                     const char *month)
{
    const char *row = check_row(dom, from, marker, figures, 4);
    char got[96], want[96];
    cell_text(row, "n used", got, sizeof(got));
    swedish_permille(has_used, used_permille, want, sizeof(want));
    e2e_assert(strcmp(got, want) == 0, "row %s: used is \"%s\", expected \"%s\"", marker, got,
               want);
    if (month != NULL) {
        cell_text(row, "n month", got, sizeof(got));
        e2e_assert(strcmp(got, month) == 0, "row %s: the outcome runs to \"%s\", expected \"%s\"",
                   marker, got, month);
    }
    return row;
}

/* `budgetctl --json outcome --unit UNIT --year 2021`, parsed (free it). */
static e2e_json *outcome_json(const char *unit)
{
    e2e_ctl_result r;
    e2e_assert(au_ctl(&bd, &r, "--json", "outcome", "--unit", unit, "--year", "2021") == 0 &&
                   r.exit_code == 0,
               "budgetctl --json outcome --unit %s failed: %s", unit, r.err);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    e2e_assert(j != NULL, "--json outcome printed no JSON: %s", r.out);
    e2e_ctl_free(&r);
    return j;
}

/* ---- the tests --------------------------------------------------------------------------- */

static void adopt_2022_and_2023(const char *dir);

Test(report, renders_headless_to_a_png_and_a_pdf_that_are_not_blank)
{
    char dir[256], html[300], png[300], pdf[300], profile_png[300], profile_pdf[300];
    char screenshot[320], print[320];
    au_temp_dir(dir, sizeof(dir));
    seed();
    outcome_import(dir);
    adopt_2022_and_2023(dir); /* the example's plan years, as scripts/demo.sh adopts them */
    free(report_file(dir, NULL, 0, html, sizeof(html)));
    snprintf(png, sizeof(png), "%s/report.png", dir);
    snprintf(pdf, sizeof(pdf), "%s/report.pdf", dir);
    snprintf(profile_png, sizeof(profile_png), "%s/profile-png", dir);
    snprintf(profile_pdf, sizeof(profile_pdf), "%s/profile-pdf", dir);
    e2e_assert(mkdir(profile_png, 0700) == 0 && mkdir(profile_pdf, 0700) == 0, "mkdir: %s",
               strerror(errno));
    snprintf(screenshot, sizeof(screenshot), "--screenshot=%s", png);
    snprintf(print, sizeof(print), "--print-to-pdf=%s", pdf);

    /* Both renderings at once: each Chromium has a profile of its own. */
    au_proc shot, printed;
    chromium_start(&shot, profile_png, screenshot, html);
    chromium_start(&printed, profile_pdf, print, html);
    chromium_wait(&shot, "--screenshot");
    chromium_wait(&printed, "--print-to-pdf");
    au_proc_free(&shot);
    au_proc_free(&printed);

    uint32_t width = 0, height = 0;
    uint64_t inked = 0;
    png_ink(png, &width, &height, &inked);
    e2e_assert(width == PAGE_WIDTH_PX && height == PAGE_HEIGHT_PX,
               "the PNG is %ux%u, expected %ux%u", width, height, PAGE_WIDTH_PX, PAGE_HEIGHT_PX);
    double share = (double)inked / ((double)width * height);
    e2e_assert(share > INKED_SHARE_MIN, "the PNG is blank: %.4f of its pixels are inked (> %.2f)",
               share, INKED_SHARE_MIN);
    const char *keep = getenv("REPORT_EXAMPLE_PNG");
    if (keep != NULL && keep[0] != '\0')
        e2e_assert(au_copy_file(png, keep) == 0, "cannot copy the PNG to %s", keep);

    size_t pdf_len;
    char *doc = au_read_file(pdf, &pdf_len);
    e2e_assert(doc != NULL && pdf_len > 1000 && memcmp(doc, "%PDF-", 5) == 0,
               "%s is not a PDF (%zu bytes)", pdf, doc ? pdf_len : 0);
    /* The summary, then a page for each of the three units at least. */
    int pages = 0;
    for (const char *p = doc; (p = memmem(p, pdf_len - (size_t)(p - doc), "/Type /Page", 11));
         p += 11)
        pages += p[11] != 's';
    e2e_assert(pages >= 4, "the PDF has %d pages, expected a page break before each of 3 units",
               pages);
    free(doc);
}

Test(report, the_dom_shows_every_figure_of_balances_unit_by_unit)
{
    char dir[256];
    au_temp_dir(dir, sizeof(dir));
    seed();
    char *dom = report_dom(dir, NULL, 0);

    e2e_json *balances = balances_json();
    const e2e_json *units = e2e_json_get(balances, "units");
    e2e_assert(units != NULL && units->type == E2E_JSON_ARRAY && units->count == 3,
               "balances has %zu unit rows, expected KS, SON and KFN for 2021",
               units ? units->count : 0);
    int64_t total[5] = {0};
    static const char *const figures[5] = {"frames", "allocated", "called_off", "pending",
                                           "available"};
    for (size_t i = 0; i < units->count; i++) {
        const e2e_json *u = units->items[i];
        const char *unit = e2e_json_str(u, "unit");
        int64_t want[5], year = e2e_json_int(u, "year", 0);
        for (int k = 0; k < 5; k++) {
            want[k] = e2e_json_int(u, figures[k], -1);
            total[k] += want[k];
        }
        char marker[128];
        /* The summary's row, and its subtotal (one year each here), then the unit's section. */
        snprintf(marker, sizeof(marker),
                 "<tr class=\"year\" data-unit=\"%s\" data-year=\"%" PRId64 "\">", unit, year);
        check_row(dom, dom, marker, want, 5);
        snprintf(marker, sizeof(marker), "<tr class=\"subtotal\" data-unit=\"%s\"", unit);
        check_row(dom, dom, marker, want, 5);
        const char *start, *end;
        unit_section(dom, unit, &start, &end);
        snprintf(marker, sizeof(marker),
                 "<tr class=\"year\" data-unit=\"%s\" data-year=\"%" PRId64 "\">", unit, year);
        e2e_assert(check_row(dom, start, marker, want, 5) < end,
                   "unit %s: its figures are not in its own section", unit);
    }
    check_row(dom, dom, "<tr class=\"total\"", total, 5);

    /* Each frame in its unit's section, with its figures and the decision that granted it. */
    const e2e_json *frames = e2e_json_get(balances, "frames");
    e2e_assert(frames != NULL && frames->count == 1, "balances lists one frame");
    for (size_t i = 0; i < frames->count; i++) {
        const e2e_json *f = frames->items[i];
        const char *start, *end;
        unit_section(dom, e2e_json_str(f, "unit"), &start, &end);
        int64_t want[5] = {e2e_json_int(f, "granted", -1), e2e_json_int(f, "allocated", -1),
                           e2e_json_int(f, "pending", -1), e2e_json_int(f, "unallocated", -1),
                           e2e_json_int(f, "called_off", -1)};
        char marker[128];
        snprintf(marker, sizeof(marker), "<tr data-frame=\"%s\">", e2e_json_str(f, "id"));
        const char *row = check_row(dom, start, marker, want, 5);
        e2e_assert(row < end, "frame %s is outside its unit's section", e2e_json_str(f, "id"));
        e2e_assert(row_has(row, e2e_json_str(f, "reference")) && row_has(row, FRAME_REFERENCE),
                   "frame %s: its reference %s is not beside its figures", e2e_json_str(f, "id"),
                   FRAME_REFERENCE);
    }
    /* Each allocation in the section of the unit it goes to, with the approval's reference. */
    const e2e_json *allocations = e2e_json_get(balances, "allocations");
    e2e_assert(allocations != NULL && allocations->count == 3, "balances lists 3 allocations");
    for (size_t i = 0; i < allocations->count; i++) {
        const e2e_json *a = allocations->items[i];
        const char *start, *end;
        unit_section(dom, e2e_json_str(a, "unit"), &start, &end);
        int64_t want[4] = {e2e_json_int(a, "amount", -1), e2e_json_int(a, "called_off", -1),
                           e2e_json_int(a, "pending", -1), e2e_json_int(a, "available", -1)};
        char marker[128];
        snprintf(marker, sizeof(marker), "<tr data-allocation=\"%s\">", e2e_json_str(a, "id"));
        const char *row = check_row(dom, start, marker, want, 4);
        e2e_assert(row < end, "allocation %s is outside its unit's section", e2e_json_str(a, "id"));
        e2e_assert(row_has(row, ALLOCATION_REFERENCE),
                   "allocation %s: the approval %s is not "
                   "beside its figures",
                   e2e_json_str(a, "id"), ALLOCATION_REFERENCE);
    }
    /* The avrop: the approved one with its decision, the pending one as pending. */
    const char *start, *end;
    unit_section(dom, "SON", &start, &end);
    int64_t first[1] = {40000000}, second[1] = {15000050};
    const char *row = check_row(dom, start, "<tr data-avrop=\"son-avrop-1\">", first, 1);
    e2e_assert(row < end && row_has(row, AVROP_REFERENCE), "son-avrop-1: no %s beside it",
               AVROP_REFERENCE);
    row = check_row(dom, start, "<tr data-avrop=\"son-avrop-2\">", second, 1);
    e2e_assert(row < end && row_has(row, "väntar på beslut"), "son-avrop-2 is not shown pending");
    e2e_json_free(balances);
    free(dom);
}

Test(report, the_dom_shows_the_outcome_used_and_deviation_that_balances_gives)
{
    char dir[256];
    au_temp_dir(dir, sizeof(dir));
    seed();
    budget_client *c = e2e_client(&bd);
    uint64_t before_outcome = e2e_head(c);
    budget_client_close(c);
    outcome_import(dir);
    char *dom = report_dom(dir, NULL, 0);

    e2e_json *balances = balances_json();
    const e2e_json *units = e2e_json_get(balances, "units");
    e2e_assert(units != NULL && units->type == E2E_JSON_ARRAY && units->count == 3,
               "balances has %zu unit rows, expected KS, SON and KFN for 2021",
               units ? units->count : 0);
    int64_t total[4] = {0};
    static const char *const figures[4] = {"budget", "outcome", "deviation", "forecast"};
    for (size_t i = 0; i < units->count; i++) {
        const e2e_json *u = units->items[i];
        const char *unit = e2e_json_str(u, "unit");
        int64_t want[4], year = e2e_json_int(u, "year", 0);
        for (int k = 0; k < 4; k++) {
            want[k] = e2e_json_int(u, figures[k], INT64_MIN);
            e2e_assert(want[k] != INT64_MIN, "balances gives %s no %s", unit, figures[k]);
            total[k] += want[k];
        }
        const e2e_json *used = e2e_json_get(u, "used_permille");
        e2e_assert(used != NULL, "balances gives %s no used_permille", unit);
        bool has_used = used->type != E2E_JSON_NULL;
        int64_t used_permille = e2e_json_int(u, "used_permille", 0);
        int64_t last_month = e2e_json_int(u, "last_month", -1);
        char month[48];
        if (last_month > 0)
            snprintf(month, sizeof(month), "%" PRId64 "-%02" PRId64, year, last_month);
        else
            snprintf(month, sizeof(month), "\u2014");
        /* The report's figures are the ones budgetctl outcome shows of the unit. */
        e2e_json *o = outcome_json(unit);
        for (int k = 0; k < 4; k++)
            e2e_assert_int(e2e_json_int(o, figures[k], INT64_MIN), want[k], figures[k]);
        e2e_assert_int(e2e_json_int(o, "used_permille", -1), e2e_json_int(u, "used_permille", -1),
                       "used_permille");
        e2e_json_free(o);

        /* The summary's row and the unit's subtotal (one year each here), then its section. */
        char marker[128];
        snprintf(marker, sizeof(marker),
                 "<tr class=\"outcome-year\" data-unit=\"%s\" data-year=\"%" PRId64 "\">", unit,
                 year);
        check_outcome_row(dom, dom, marker, want, has_used, used_permille, month);
        char subtotal[128];
        snprintf(subtotal, sizeof(subtotal),
                 "<tr class=\"subtotal outcome-subtotal\" data-unit=\"%s\">", unit);
        check_outcome_row(dom, dom, subtotal, want, has_used, used_permille, NULL);
        const char *start, *end;
        unit_section(dom, unit, &start, &end);
        e2e_assert(check_outcome_row(dom, start, marker, want, has_used, used_permille, month) <
                       end,
                   "unit %s: its outcome is not in its own section", unit);
    }
    /* The total: the sums, and the share they use by the rule of used_permille. */
    e2e_assert(total[0] > 0, "the units have no budget");
    check_outcome_row(dom, dom, "<tr class=\"total outcome-total\"", total, true,
                      total[1] * 1000 / total[0], NULL);
    e2e_json_free(balances);

    /* Not a ledger of zeros: SON's costs to October, less the credit, 1,0 % of 1 mkr. */
    char want[96];
    const char *row =
        strstr(dom, "<tr class=\"outcome-year\" data-unit=\"SON\" data-year=\"2021\">");
    swedish(1334550 - 250025, want, sizeof(want));
    e2e_assert(row != NULL && row_has(row, want) && row_has(row, "1,0\u00a0%") &&
                   row_has(row, "2021-10"),
               "SON 2021 does not show its outcome of %s, 1,0 %% used, to 2021-10", want);
    free(dom);

    /* As of the last event before the import, no unit has outcome. */
    char as_of[32];
    snprintf(as_of, sizeof(as_of), "%" PRIu64, before_outcome);
    dom = report_dom(dir, AU_ARGV("--unit", "SON", "--as-of", as_of), 4);
    const int64_t none[4] = {100000000, 0, 100000000, 0};
    check_outcome_row(dom, dom, "<tr class=\"outcome-year\" data-unit=\"SON\" data-year=\"2021\">",
                      none, true, 0, "\u2014");
    e2e_assert(strstr(dom, "data-unit=\"KS\"") == NULL, "--unit SON shows KS's outcome");
    free(dom);
}

Test(report, holds_no_script_and_names_nothing_outside_itself)
{
    char dir[256], html[300];
    au_temp_dir(dir, sizeof(dir));
    seed();
    char *page = report_file(dir, NULL, 0, html, sizeof(html));
    e2e_assert(strcasestr(page, "<script") == NULL, "the report holds a <script");
    e2e_assert(strcasestr(page, "http://") == NULL && strcasestr(page, "https://") == NULL,
               "the report names an address outside itself");
    e2e_assert(strcasestr(page, "src=") == NULL && strcasestr(page, "url(") == NULL &&
                   strcasestr(page, "<link") == NULL && strcasestr(page, "@import") == NULL,
               "the report loads something from outside itself");
    e2e_assert(strstr(page, "@page { size: A4;") != NULL, "the report has no A4 print style");
    e2e_assert(strstr(page, "<html lang=\"sv\">") != NULL &&
                   strstr(page, "<meta charset=\"utf-8\">"),
               "the report is not marked Swedish UTF-8");
    free(page);
}

Test(report, escapes_every_text_from_the_ledger)
{
    char dir[256], html[300];
    au_temp_dir(dir, sizeof(dir));
    ctl_ok("grant", "--decision", E2E_DECISION, "--id", "ks-2022-x", "--unit", "KS", "--year",
           "2022", "--amount", "250 000,50 kr", "--title", "<b>Fet</b> & \"citerad\" 'rubrik'",
           "--reference", "KS <i>2022</i> § 1 & 2");
    ctl_ok("allocate", "ks-2022-x", "--id", "son-x", "--unit", "SON", "--amount", "1 kr",
           "--purpose", "<img src=x onerror=alert(1)>");
    char *page = report_file(dir, NULL, 0, html, sizeof(html));
    e2e_assert(strstr(page, "<b>") == NULL && strstr(page, "<i>") == NULL &&
                   strstr(page, "<img") == NULL,
               "a text from the ledger became markup");
    e2e_assert(strstr(page, "&lt;b&gt;Fet&lt;/b&gt; &amp; &quot;citerad&quot; &#39;rubrik&#39;") !=
                       NULL &&
                   strstr(page, "KS &lt;i&gt;2022&lt;/i&gt; § 1 &amp; 2") != NULL &&
                   strstr(page, "&lt;img src=x onerror=alert(1)&gt;") != NULL,
               "the texts are not shown escaped");
    char amount[64];
    swedish(25000050, amount, sizeof(amount));
    e2e_assert(strstr(page, amount) != NULL, "250 000,50 kr is not written as %s", amount);
    free(page);
}

Test(report, unit_years_and_as_of_narrow_what_it_shows)
{
    char dir[256], html[300], want[64];
    au_temp_dir(dir, sizeof(dir));
    seed();
    ctl_ok("grant", "--decision", E2E_DECISION, "--id", "son-2023", "--unit", "SON", "--year",
           "2023", "--amount", "2 mkr", "--title", "Ram 2023", "--reference",
           "KF 2022-11-21 § 150");
    ctl_ok("adjust", "--decision", E2E_DECISION, "son-2023", "--delta", "+250 tkr", "--reason",
           "Tilläggsanslag", "--reference", "KF 2023-03-20 § 40");
    /* SON as of event 11 (8 of the scenario after the 3 registrations): the avrop of 400 tkr
     * requested, not yet approved; no 2023 frame. */
    char *page = report_file(dir, AU_ARGV("--unit", "SON", "--as-of", "11"), 4, html, sizeof(html));
    e2e_assert(strstr(page, "data-unit=\"KS\"") == NULL &&
                   strstr(page, "data-unit=\"KFN\"") == NULL,
               "--unit SON shows other units");
    e2e_assert(strstr(page, "data-as-of=\"11\"") != NULL, "the report does not say it is as of 11");
    const char *row = strstr(page, "<tr class=\"year\" data-unit=\"SON\" data-year=\"2021\">");
    e2e_assert(row != NULL, "no SON 2021 row");
    swedish(40000000, want, sizeof(want));
    e2e_assert(row_has(row, want) && strstr(page, "data-year=\"2023\"") == NULL &&
                   strstr(page, AVROP_REFERENCE) == NULL,
               "as of 11, SON's 400 tkr is pending and no later decision or frame is shown");
    free(page);
    /* --years 2022-2027: only the 2023 frame. */
    page = report_file(dir, AU_ARGV("--years", "2022-2027"), 2, html, sizeof(html));
    e2e_assert(strstr(page, "data-year=\"2021\"") == NULL &&
                   strstr(page, "<tr class=\"year\" data-unit=\"SON\" data-year=\"2023\">") != NULL,
               "--years 2022-2027 does not show just 2023");
    /* The frame with its grant's decision, and below it the adjustment with its own. */
    row = strstr(page, "<tr data-frame=\"son-2023\">");
    swedish(225000000, want, sizeof(want));
    e2e_assert(row != NULL && row_has(row, want) && row_has(row, "KF 2022-11-21 § 150"),
               "the 2023 frame does not show %s granted by KF 2022-11-21 § 150", want);
    row = strstr(row, "</tr>") + strlen("</tr>");
    swedish(25000000, want, sizeof(want));
    e2e_assert(row_has(row, "Tilläggsanslag") && row_has(row, want) &&
                   row_has(row, "KF 2023-03-20 § 40"),
               "the adjustment of %s is not cited under its frame", want);
    /* The line over the years spans the range asked for, years without figures too. */
    e2e_assert(strstr(page, ">2022</text>") != NULL && strstr(page, ">2027</text>") != NULL,
               "the line over the years does not run from 2022 to 2027");
    free(page);
    e2e_ctl_result r;
    e2e_assert(au_ctl(&bd, &r, "report", "--years", "2027-2022") == 0 && r.exit_code == 2,
               "--years 2027-2022 is not a usage error");
    e2e_ctl_free(&r);
}

Test(report, output_is_replaced_only_by_a_whole_report)
{
    char dir[256], path[300];
    au_temp_dir(dir, sizeof(dir));
    seed();
    snprintf(path, sizeof(path), "%s/report.html", dir);
    e2e_assert(au_write_file(path, "old\n", 4, 0644) == 0, "cannot write %s", path);
    e2e_daemon_kill(&bd);
    e2e_ctl_result r;
    e2e_assert(au_ctl(&bd, &r, "report", "--output", path) == 0 && r.exit_code == 3,
               "report without a daemon exited %d, expected 3 (no connection)", r.exit_code);
    e2e_ctl_free(&r);
    size_t len;
    char *kept = au_read_file(path, &len);
    e2e_assert(kept != NULL && strcmp(kept, "old\n") == 0, "a failed report replaced %s", path);
    free(kept);
    DIR *folder = opendir(dir);
    e2e_assert(folder != NULL, "opendir %s", dir);
    for (struct dirent *entry; (entry = readdir(folder)) != NULL;)
        e2e_assert(strncmp(entry->d_name, "report.html.tmp-", 16) != 0,
                   "a failed report left %s behind", entry->d_name);
    closedir(folder);
}

Test(report, reads_every_page_of_balances)
{
    char dir[256], html[300];
    au_temp_dir(dir, sizeof(dir));
    /* More frames than one page of balances holds. */
    const uint32_t frames = BUDGET_BALANCES_PAGE_MAX + 5;
    budget_client *c = e2e_client(&bd);
    au_grant_many(c, "many", 1, frames, 16);
    budget_client_close(c);
    char *page = report_file(dir, NULL, 0, html, sizeof(html));
    uint32_t rows = 0;
    for (const char *p = page; (p = strstr(p, "<tr data-frame=\"many-")) != NULL; p++)
        rows++;
    e2e_assert(rows == frames, "the report shows %u frames, expected %u", rows, frames);
    char marker[64], want[64];
    snprintf(marker, sizeof(marker), "<tr data-frame=\"many-%u\">", frames);
    e2e_assert(strstr(page, marker) != NULL, "the last frame, on the second page, is missing");
    /* Each is 1 krona, granted to KS for 2030: the unit's row sums them all. */
    swedish((int64_t)frames * 100, want, sizeof(want));
    const char *row = strstr(page, "<tr class=\"year\" data-unit=\"KS\" data-year=\"2030\">");
    e2e_assert(row != NULL && row_has(row, want), "KS 2030 does not show %s", want);
    free(page);
}

/* ---- plan years and decided_by ----------------------------------------------------------- */

/* `budgetctl --json ARGS...`, parsed (free it). */
static e2e_json *ctl_json_argv(int argc, const char *const *argv)
{
    e2e_ctl_result r;
    e2e_assert(e2e_ctl_argv(&bd, &r, argc, argv) == 0 && r.exit_code == 0,
               "budgetctl --json %s failed: %s", argv[1], r.err);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    e2e_assert(j != NULL, "budgetctl --json %s printed no JSON: %s", argv[1], r.out);
    e2e_ctl_free(&r);
    return j;
}
#define ctl_json(...) ctl_json_argv(AU_ARGC("--json", __VA_ARGS__), AU_ARGV("--json", __VA_ARGS__))

/* Adopts `year` with plan years `plan` through `budgetctl adopt`, its lines written to `dir`. */
static void adopt(const char *dir, const char *id, const char *year, const char *plan,
                  const char *decision, const char *lines)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/%s.txt", dir, id);
    e2e_assert(au_write_file(path, lines, strlen(lines), 0644) == 0, "cannot write %s", path);
    ctl_ok("adopt", "--id", id, "--year", year, "--plan", plan, "--decision", decision, "--title",
           "Utökat trygghetsarbete", "--lines", path);
}

/* The plan cell of the row at `row`: the amount in Swedish and, when planned, the budget year
 * that planned it ("1 500 000 kr<br><span class="small">budget 2022</span>"); "—" for none. */
static void check_plan_cell(const char *row, const char *what, const e2e_json *plan,
                            int64_t plan_by)
{
    const char *end = strstr(row, "</tr>"), *cell = strstr(row, "<td class=\"n plan\"");
    e2e_assert(cell != NULL && end != NULL && cell < end, "%s has no plan cell: %.300s", what, row);
    cell = strchr(cell, '>') + 1;
    const char *close = strstr(cell, "</td>");
    char want[160], amount[96];
    if (plan == NULL || plan->type == E2E_JSON_NULL) {
        snprintf(want, sizeof(want), "\u2014");
    } else {
        swedish(plan->integer, amount, sizeof(amount));
        if (plan_by > 0)
            snprintf(want, sizeof(want), "%s<br><span class=\"small\">budget %" PRId64 "</span>",
                     amount, plan_by);
        else
            snprintf(want, sizeof(want), "%s", amount);
    }
    e2e_assert(close != NULL && (size_t)(close - cell) == strlen(want) &&
                   strncmp(cell, want, strlen(want)) == 0,
               "%s: the plan cell is \"%.*s\", expected \"%s\"", what,
               close ? (int)(close - cell) : 60, cell, want);
}

/* Budget 2022 with plan 2023-2027 (KS's 2021 frame of the seed continued), then budget 2023
 * with plan 2024-2028, which changes SON's plan for 2024. */
static void adopt_2022_and_2023(const char *dir)
{
    adopt(dir, "b2022", "2022", "2023-2027", "KF 2021-11-22 § 150",
          "# enhet;budget 2022;plan 2023;2024;2025;2026;2027\n"
          "KS;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;continues=ks-2021-trygghet\n"
          "SON;1 mkr;1 mkr;1 mkr;1 mkr;1 mkr;1 mkr\n"
          "KFN;0,5 mkr;0,5 mkr;0,5 mkr;0;0;0\n");
    adopt(dir, "b2023", "2023", "2024-2028", "KF 2022-11-21 § 98",
          "KS;1,6 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;continues=b2022:KS\n"
          "SON;1 mkr;1,2 mkr;1 mkr;1 mkr;1 mkr;1 mkr;continues=b2022:SON\n");
}

Test(report, shows_the_plan_amounts_of_the_years_view_and_a_plan_line)
{
    char dir[256];
    au_temp_dir(dir, sizeof(dir));
    seed();
    adopt_2022_and_2023(dir);
    char *dom = report_dom(dir, AU_ARGV("--years", "2021-2027"), 2);

    /* Every row of the daemon's units × years view: its plan in the summary and in the unit's
     * section, with the budget year that planned it; and each unit's sum of them. */
    e2e_json *years = ctl_json("years", "2021-2027");
    const e2e_json *rows = e2e_json_get(years, "rows");
    e2e_assert(rows != NULL && rows->count > 0, "years gives no rows");
    const char *units[3] = {"KS", "SON", "KFN"};
    int64_t unit_plan[3] = {0}, plans = 0;
    for (size_t i = 0; i < rows->count; i++) {
        const e2e_json *row = rows->items[i];
        const char *unit = e2e_json_str(row, "unit");
        int64_t year = e2e_json_int(row, "year", 0), plan_by = e2e_json_int(row, "plan_by", 0);
        const e2e_json *plan = e2e_json_get(row, "plan");
        char marker[128], what[64];
        snprintf(marker, sizeof(marker),
                 "<tr class=\"year\" data-unit=\"%s\" data-year=\"%" PRId64 "\">", unit, year);
        snprintf(what, sizeof(what), "%s %" PRId64, unit, year);
        const char *at = strstr(dom, marker);
        e2e_assert(at != NULL, "the summary has no row for %s, which years lists", what);
        check_plan_cell(at, what, plan, plan_by);
        const char *start, *end;
        unit_section(dom, unit, &start, &end);
        at = strstr(start, marker);
        e2e_assert(at != NULL && at < end, "%s is not in its unit's section", what);
        check_plan_cell(at, what, plan, plan_by);
        for (int k = 0; k < 3; k++)
            if (plan != NULL && plan->type != E2E_JSON_NULL && strcmp(unit, units[k]) == 0)
                unit_plan[k] += plan->integer;
        plans += plan != NULL && plan->type != E2E_JSON_NULL;
    }
    e2e_assert(plans >= 12, "years gives %" PRId64 " plan amounts for 2023-2027", plans);
    /* A plan year holds only plan: 2027 is a row of its own. */
    e2e_assert(strstr(dom, "<tr class=\"year\" data-unit=\"KFN\" data-year=\"2027\">") != NULL,
               "the plan year 2027 of KFN is not a row");
    for (int k = 0; k < 3; k++) {
        char marker[128];
        snprintf(marker, sizeof(marker), "<tr class=\"subtotal\" data-unit=\"%s\"", units[k]);
        const char *at = strstr(dom, marker);
        e2e_assert(at != NULL, "no subtotal of %s", units[k]);
        e2e_json sum = {.type = E2E_JSON_NUMBER, .integral = true, .integer = unit_plan[k]};
        check_plan_cell(at, marker, &sum, 0);
    }

    /* The line over the years: a plan series, a point a year with the year's total plan. */
    e2e_assert(strstr(dom, "<polyline data-series=\"plan\"") != NULL,
               "the line over the years has no plan series");
    const e2e_json *totals = e2e_json_get(years, "totals");
    e2e_assert(totals != NULL && totals->count == 7, "years gives no totals for 2021-2027");
    for (size_t i = 0; i < totals->count; i++) {
        const e2e_json *plan = e2e_json_get(totals->items[i], "plan");
        if (plan == NULL || plan->type == E2E_JSON_NULL)
            continue;
        char amount[96], title[160];
        swedish(plan->integer, amount, sizeof(amount));
        snprintf(title, sizeof(title), "<title>%" PRId64 ", Plan: %s</title>",
                 e2e_json_int(totals->items[i], "year", 0), amount);
        e2e_assert(strstr(dom, title) != NULL, "the plan line has no point %s", title);
    }
    e2e_json_free(years);
    free(dom);

    /* As of event 14, before budget 2023 was adopted, SON's plan for 2024 is 2022's: the
     * report reads the years view at its own as_of. */
    dom = report_dom(dir, AU_ARGV("--years", "2024-2024", "--as-of", "14"), 4);
    years = ctl_json("years", "2024-2024", "--unit", "SON", "--as-of", "14");
    rows = e2e_json_get(years, "rows");
    e2e_assert(rows != NULL && rows->count == 1 &&
                   e2e_json_int(rows->items[0], "plan_by", 0) == 2022,
               "as of 14, years gives SON 2024 no plan of budget 2022");
    const char *at = strstr(dom, "<tr class=\"year\" data-unit=\"SON\" data-year=\"2024\">");
    e2e_assert(at != NULL, "as of 14, the report has no SON 2024");
    check_plan_cell(at, "SON 2024 as of 14", e2e_json_get(rows->items[0], "plan"), 2022);
    e2e_json_free(years);
    free(dom);

    /* Without --years the report covers every year of the ledger, its plan years too. */
    dom = report_dom(dir, NULL, 0);
    e2e_assert(strstr(dom, "<tr class=\"year\" data-unit=\"SON\" data-year=\"2028\">") != NULL,
               "the report of every year leaves out the plan year 2028");
    free(dom);
}

/* The decided-by ledger: the seed, then a raise of KS's frame decided on 1 October 2021 and
 * entered first, and an allocation of it to SON approved by a decision of 15 September. */
#define DECIDED_BY_DAY "2021-09-30"
#define RAISE_DECISION "KS 2021-10-01 § 300"
#define EARLY_DECISION "KS 2021-09-15 § 260"

Test(report, a_decided_by_report_shows_what_balances_decided_by_gives_and_its_oddities)
{
    char dir[256];
    au_temp_dir(dir, sizeof(dir));
    seed();
    ctl_ok("adjust", "--decision", RAISE_DECISION, "ks-2021-trygghet", "--delta", "+1 mkr",
           "--reason", "Höjd ram", "--reference", RAISE_DECISION);
    ctl_ok("allocate", "ks-2021-trygghet", "--id", "son-extra", "--unit", "SON", "--amount",
           "1 mkr", "--purpose", "Fler ordningsvakter");
    ctl_ok_other("approve", "--decision", EARLY_DECISION, "son-extra", "--id", "beslut-son-extra",
                 "--reference", EARLY_DECISION);
    char *dom = report_dom(dir, AU_ARGV("--decided-by", DECIDED_BY_DAY), 2);

    /* The page says what it is. */
    e2e_assert(strstr(dom, "data-decided-by=\"" DECIDED_BY_DAY "\"") != NULL &&
                   strstr(dom, "Beslutat senast " DECIDED_BY_DAY ", oavsett när det fördes in") !=
                       NULL,
               "the report does not say it is decided by " DECIDED_BY_DAY);
    e2e_assert(strstr(dom, "<td class=\"n plan\"") == NULL,
               "a decided-by report shows plan amounts the years view cannot give by decision");

    /* Every unit row and frame as balances --decided-by gives them. */
    e2e_json *balances = ctl_json("balances", "--decided-by", DECIDED_BY_DAY);
    e2e_assert(strcmp(e2e_json_str(balances, "decided_by"), DECIDED_BY_DAY) == 0,
               "balances --decided-by answers no decided_by");
    const e2e_json *units = e2e_json_get(balances, "units");
    e2e_assert(units != NULL && units->count == 3, "balances --decided-by lists 3 unit rows");
    static const char *const figures[5] = {"frames", "allocated", "called_off", "pending",
                                           "available"};
    for (size_t i = 0; i < units->count; i++) {
        const e2e_json *u = units->items[i];
        int64_t want[5];
        for (int k = 0; k < 5; k++)
            want[k] = e2e_json_int(u, figures[k], INT64_MIN);
        char marker[128];
        snprintf(marker, sizeof(marker),
                 "<tr class=\"year\" data-unit=\"%s\" data-year=\"%" PRId64 "\">",
                 e2e_json_str(u, "unit"), e2e_json_int(u, "year", 0));
        check_row(dom, dom, marker, want, 5);
    }
    const e2e_json *frames = e2e_json_get(balances, "frames");
    e2e_assert(frames != NULL && frames->count == 1, "balances --decided-by lists one frame");
    const e2e_json *f = frames->items[0];
    int64_t want[5] = {e2e_json_int(f, "granted", -1), e2e_json_int(f, "allocated", -1),
                       e2e_json_int(f, "pending", -1), e2e_json_int(f, "unallocated", -1),
                       e2e_json_int(f, "called_off", -1)};
    e2e_assert_int(want[0], 300000000, "granted by " DECIDED_BY_DAY " (the raise comes later)");
    e2e_assert_int(want[1], 400000000, "allocated by " DECIDED_BY_DAY);
    const char *row = check_row(dom, dom, "<tr data-frame=\"ks-2021-trygghet\">", want, 5);

    /* The oddity the daemon flags, on the frame and in the list at the top. */
    const e2e_json *odd = e2e_json_get(f, "oddities");
    e2e_assert(odd != NULL && odd->count == 1 &&
                   strcmp(odd->items[0]->string, "allocated_over_granted") == 0,
               "balances --decided-by does not flag the frame allocated_over_granted");
    e2e_assert(row_has(row, "data-oddity=\"allocated_over_granted\"") &&
                   row_has(row, "! tilldelat mer än beviljat"),
               "the frame's oddity is not shown beside it");
    const char *box = strstr(dom, "<div class=\"decided\">");
    e2e_assert(box != NULL && strstr(box, "data-oddity=\"allocated_over_granted\"") != NULL &&
                   strstr(dom, "data-oddities=\"1\"") != NULL,
               "the oddity is not listed at the top of the page");
    /* The raise is cited, marked as decided after the day. */
    row = strstr(row, "</tr>") + strlen("</tr>");
    e2e_assert(row_has(row, "Höjd ram") && row_has(row, RAISE_DECISION) &&
                   row_has(row, "beslutat 2021-10-01, efter " DECIDED_BY_DAY ": räknas inte här"),
               "the raise decided later is not marked as not counted");
    e2e_json_free(balances);
    free(dom);

    /* Beside --as-of, as the daemon takes them together: as of event 11 the raise is not
     * entered, and the frame holds what was granted. */
    dom = report_dom(dir, AU_ARGV("--decided-by", DECIDED_BY_DAY, "--as-of", "11"), 4);
    e2e_assert(strstr(dom, "data-as-of=\"11\"") != NULL &&
                   strstr(dom, "data-decided-by=\"" DECIDED_BY_DAY "\"") != NULL &&
                   strstr(dom, "data-oddities=\"0\"") != NULL,
               "--decided-by with --as-of 11 is not both, without oddities");
    free(dom);
}
