/* Who may do what: the access file's parser, identities, and the decision (access.h). */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access.h"
#include "budget/errors.h"

typedef enum { WHO_USER = 1, WHO_GROUP, WHO_ANYONE } who_kind;

/* One line of the file that grants: who, which role, for which units. */
typedef struct {
    uint8_t kind; /* who_kind */
    uint8_t role; /* access_role */
    bool all_units;
    uint32_t id; /* uid or gid */
    uint64_t units[ACCESS_UNITS_MAX / 64];
} rule;

struct access_rules {
    bool open;
    rule *rules;
    size_t count;
    char units[ACCESS_UNITS_MAX][BUDGET_UNIT_BYTES_MAX + 1];
    size_t unit_count;
};

static const char *const role_names[] = {
    [ACCESS_UNDECLARED] = "undeclared", [ACCESS_ANYONE] = "anyone", [ACCESS_READER] = "reader",
    [ACCESS_AUDITOR] = "auditor",       [ACCESS_CLERK] = "clerk",   [ACCESS_APPROVER] = "approver",
    [ACCESS_ADMIN] = "admin",
};

const char *access_role_name(access_role role)
{
    if ((unsigned)role >= sizeof(role_names) / sizeof(role_names[0]))
        return "undeclared";
    return role_names[role];
}

static uint8_t role_bit(access_role role)
{
    return (uint8_t)(1u << (role - ACCESS_ROLE_FIRST));
}

static bool unit_bit(const uint64_t *units, size_t idx)
{
    return (units[idx / 64] >> (idx % 64)) & 1u;
}

/* ---- parsing ---------------------------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t len;
} word;

typedef struct {
    const access_resolver *res;
    access_rules *r;
    size_t rules_cap;
    unsigned line;
    char *why;
    size_t why_size;
} parser;

static int parse_fail(parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int parse_fail(parser *ps, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(ps->why, ps->why_size, "line %u: ", ps->line);
    if (n < 0 || (size_t)n >= ps->why_size)
        return -1;
    va_start(ap, fmt);
    vsnprintf(ps->why + n, ps->why_size - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A word as it may be shown in a message: at most 40 bytes, control bytes as '?'. */
static const char *shown(const word *w, char buf[48])
{
    size_t n = w->len > 40 ? 40 : w->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)w->p[i];
        buf[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    memcpy(buf + n, w->len > 40 ? "..." : "", w->len > 40 ? 4 : 1);
    return buf;
}

static bool word_is(const word *w, const char *s)
{
    return strlen(s) == w->len && memcmp(w->p, s, w->len) == 0;
}

/* Splits a line into words separated by spaces or tabs; a word that starts with '#' starts a
 * comment. Returns the number of words, or -1 when there are more than `max`. */
static int split(const char *line, size_t len, word *words, int max)
{
    int n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
            i++;
        if (i == len || line[i] == '#')
            break;
        size_t start = i;
        while (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
            i++;
        if (n == max)
            return -1;
        words[n].p = line + start;
        words[n].len = i - start;
        n++;
    }
    return n;
}

static access_role role_of(const word *w)
{
    for (int r = ACCESS_ROLE_FIRST; r <= ACCESS_ROLE_LAST; r++)
        if (word_is(w, role_names[r]))
            return (access_role)r;
    return ACCESS_UNDECLARED;
}

/* A uid or gid written as digits: true with *id, false when the word is not all digits. */
static bool numeric_id(const word *w, uint32_t *id, bool *too_big)
{
    uint64_t v = 0;
    *too_big = false;
    if (w->len == 0)
        return false;
    for (size_t i = 0; i < w->len; i++) {
        if (w->p[i] < '0' || w->p[i] > '9')
            return false;
        if (v <= UINT32_MAX)
            v = v * 10 + (uint64_t)(w->p[i] - '0');
    }
    /* (uid_t)-1 means "no id" to the kernel: never a real user. */
    if (v >= UINT32_MAX) {
        *too_big = true;
        return true;
    }
    *id = (uint32_t)v;
    return true;
}

static int parse_who(parser *ps, who_kind kind, const word *w, uint32_t *id)
{
    const char *what = kind == WHO_USER ? "user" : "group";
    char name[BUDGET_NAME_BYTES_MAX + 1], buf[48];
    bool too_big;

    if (numeric_id(w, id, &too_big)) {
        if (too_big)
            return parse_fail(ps, "%s id %s is out of range", what, shown(w, buf));
        return 0;
    }
    if (w->len > BUDGET_NAME_BYTES_MAX)
        return parse_fail(ps, "%s name %s is longer than %d bytes", what, shown(w, buf),
                          BUDGET_NAME_BYTES_MAX);
    memcpy(name, w->p, w->len);
    name[w->len] = '\0';
    int rc = kind == WHO_USER ? ps->res->user(ps->res->ctx, name, id)
                              : ps->res->group(ps->res->ctx, name, id);
    if (rc != 0)
        return parse_fail(ps, "no %s named %s", what, shown(w, buf));
    return 0;
}

/* The index of `unit` in the rules' unit table, or -1. */
static int unit_index(const access_rules *r, const char *unit, size_t len)
{
    for (size_t i = 0; i < r->unit_count; i++)
        if (strlen(r->units[i]) == len && memcmp(r->units[i], unit, len) == 0)
            return (int)i;
    return -1;
}

static int parse_unit(parser *ps, const word *w, rule *out)
{
    access_rules *r = ps->r;
    char buf[48];

    if (!ledger_valid_unit(w->p, w->len))
        return parse_fail(ps, "%s is not a unit: units are 1..%d of A-Z a-z 0-9 . _ : - (KS, SON)",
                          shown(w, buf), BUDGET_UNIT_BYTES_MAX);
    int idx = unit_index(r, w->p, w->len);
    if (idx < 0) {
        if (r->unit_count == ACCESS_UNITS_MAX)
            return parse_fail(ps, "more than %u different units in the file", ACCESS_UNITS_MAX);
        idx = (int)r->unit_count++;
        memcpy(r->units[idx], w->p, w->len);
        r->units[idx][w->len] = '\0';
    }
    out->units[idx / 64] |= 1ull << (idx % 64);
    return 0;
}

static int add_rule(parser *ps, const rule *x)
{
    access_rules *r = ps->r;
    if (r->count == ACCESS_RULES_MAX)
        return parse_fail(ps, "more than %u rules", ACCESS_RULES_MAX);
    if (r->count == ps->rules_cap) {
        size_t cap = ps->rules_cap ? ps->rules_cap * 2 : 16;
        rule *p = realloc(r->rules, cap * sizeof(*p));
        if (!p)
            return parse_fail(ps, "out of memory");
        r->rules = p;
        ps->rules_cap = cap;
    }
    r->rules[r->count++] = *x;
    return 0;
}

/* One line: `user WHO ROLE [UNIT...]`, `group WHO ROLE [UNIT...]` or `anyone ROLE [UNIT...]`. */
static int parse_line(parser *ps, const char *line, size_t len)
{
    /* A line of ACCESS_LINE_BYTES_MAX bytes holds at most half as many words. */
    word words[ACCESS_LINE_BYTES_MAX / 2 + 1];
    char buf[48];
    rule x;
    int n = split(line, len, words, (int)(sizeof(words) / sizeof(words[0])));

    if (n <= 0)
        return n; /* blank or a comment (n < 0 cannot happen for a line within its limit) */
    memset(&x, 0, sizeof(x));
    int at = 1;
    if (word_is(&words[0], "user") || word_is(&words[0], "group")) {
        x.kind = word_is(&words[0], "user") ? WHO_USER : WHO_GROUP;
        if (n < 3)
            return parse_fail(ps, "%s needs a name or id and a role: %s NAME ROLE [UNIT...]",
                              shown(&words[0], buf), shown(&words[0], buf));
        if (parse_who(ps, (who_kind)x.kind, &words[1], &x.id) != 0)
            return -1;
        at = 2;
    } else if (word_is(&words[0], "anyone")) {
        x.kind = WHO_ANYONE;
        if (n < 2)
            return parse_fail(ps, "anyone needs a role: anyone ROLE [UNIT...]");
    } else {
        return parse_fail(ps, "%s: a rule starts with user, group or anyone",
                          shown(&words[0], buf));
    }
    access_role role = role_of(&words[at]);
    if (role == ACCESS_UNDECLARED)
        return parse_fail(ps, "%s is not a role: reader, auditor, clerk, approver or admin",
                          shown(&words[at], buf));
    x.role = (uint8_t)role;
    at++;
    if (at == n) {
        x.all_units = true;
    } else if (role == ACCESS_READER || role == ACCESS_AUDITOR) {
        return parse_fail(ps, "%s is not limited to units: every read shows every unit",
                          role_names[role]);
    }
    for (; at < n; at++)
        if (parse_unit(ps, &words[at], &x) != 0)
            return -1;
    return add_rule(ps, &x);
}

int access_parse(const char *text, size_t len, const access_resolver *res, access_rules **out,
                 char *why, size_t why_size)
{
    parser ps = {res, NULL, 0, 0, why, why_size};
    size_t at = 0;

    *out = NULL;
    if (len > ACCESS_FILE_BYTES_MAX) {
        snprintf(why, why_size, "the file is over %u bytes", ACCESS_FILE_BYTES_MAX);
        return -1;
    }
    if (memchr(text, '\0', len)) {
        snprintf(why, why_size, "the file holds a NUL byte; it is not a text file");
        return -1;
    }
    ps.r = calloc(1, sizeof(*ps.r));
    if (!ps.r) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    while (at < len) {
        const char *line = text + at;
        const char *nl = memchr(line, '\n', len - at);
        size_t line_len = nl ? (size_t)(nl - line) : len - at;
        at += line_len + (nl ? 1 : 0);
        ps.line++;
        if (line_len > ACCESS_LINE_BYTES_MAX) {
            parse_fail(&ps, "the line is over %u bytes", ACCESS_LINE_BYTES_MAX);
            goto failed;
        }
        if (parse_line(&ps, line, line_len) != 0)
            goto failed;
    }
    *out = ps.r;
    return 0;
failed:
    access_free(ps.r);
    return -1;
}

int access_load(const char *path, access_rules **out, char *why, size_t why_size)
{
    struct stat st;
    char *text = NULL, inner[400];
    ssize_t got = 0;
    int rc = -1;

    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, why_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_size, "%s is not a regular file", path);
        goto done;
    }
    if (st.st_mode & S_IWOTH) {
        snprintf(why, why_size, "%s may be written by every user (mode %04o); refused", path,
                 (unsigned)(st.st_mode & 07777));
        goto done;
    }
    if (st.st_size > (off_t)ACCESS_FILE_BYTES_MAX) {
        snprintf(why, why_size, "%s is over %u bytes", path, ACCESS_FILE_BYTES_MAX);
        goto done;
    }
    /* One byte more than the limit: a file that grew since fstat is still caught. */
    text = malloc(ACCESS_FILE_BYTES_MAX + 1);
    if (!text) {
        snprintf(why, why_size, "out of memory");
        goto done;
    }
    size_t len = 0;
    while (len <= ACCESS_FILE_BYTES_MAX &&
           (got = read(fd, text + len, ACCESS_FILE_BYTES_MAX + 1 - len)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(why, why_size, "%s: %s", path, strerror(errno));
            goto done;
        }
        len += (size_t)got;
    }
    if (access_parse(text, len, &access_system_resolver, out, inner, sizeof(inner)) != 0) {
        snprintf(why, why_size, "%s: %s", path, inner);
        goto done;
    }
    rc = 0;
done:
    free(text);
    close(fd);
    return rc;
}

access_rules *access_rules_open(void)
{
    access_rules *r = calloc(1, sizeof(*r));
    if (r)
        r->open = true;
    return r;
}

void access_free(access_rules *r)
{
    if (!r)
        return;
    free(r->rules);
    free(r);
}

bool access_is_open(const access_rules *r)
{
    return r->open;
}

size_t access_rule_count(const access_rules *r)
{
    return r->count;
}

/* ---- the system's user and group databases --------------------------------------------- */

static int system_user(void *ctx, const char *name, uint32_t *uid)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    (void)ctx;
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &found) != 0 || !found)
        return -1;
    *uid = (uint32_t)found->pw_uid;
    return 0;
}

static int system_group(void *ctx, const char *name, uint32_t *gid)
{
    struct group gr, *found = NULL;
    /* Group entries list their members: large groups need a large buffer. */
    size_t size = 16384;
    int rc = -1;
    (void)ctx;
    for (int tries = 0; tries < 6; tries++, size *= 2) {
        char *buf = malloc(size);
        if (!buf)
            return -1;
        int e = getgrnam_r(name, &gr, buf, size, &found);
        if (e == 0 && found) {
            *gid = (uint32_t)found->gr_gid;
            rc = 0;
        }
        free(buf);
        if (e != ERANGE)
            break;
    }
    return rc;
}

const access_resolver access_system_resolver = {system_user, system_group, NULL};

/* Adds `gid` to `id` unless it is there or the list is full. */
static void identity_add_gid(access_identity *id, uint32_t gid)
{
    for (uint32_t j = 0; j < id->gid_count; j++)
        if (id->gids[j] == gid)
            return;
    if (id->gid_count < ACCESS_GROUPS_MAX)
        id->gids[id->gid_count++] = gid;
}

void access_identity_of(uint32_t uid, uint32_t gid, const char *name, uint32_t user_gid,
                        access_identity *out)
{
    gid_t groups[ACCESS_GROUPS_MAX];
    int n = (int)ACCESS_GROUPS_MAX;

    memset(out, 0, sizeof(*out));
    out->uid = uid;
    out->gids[out->gid_count++] = gid;
    if (!name || !*name)
        return;
    int total = n;
    if (getgrouplist(name, (gid_t)user_gid, groups, &total) < 0)
        total = n; /* more groups than looked at: the first ones were filled */
    for (int i = 0; i < total && i < n; i++)
        identity_add_gid(out, (uint32_t)groups[i]);
}

void access_identity_with_gid(const access_identity *user, uint32_t gid, access_identity *out)
{
    memset(out, 0, sizeof(*out));
    out->uid = user->uid;
    out->gids[out->gid_count++] = gid;
    for (uint32_t i = 0; i < user->gid_count; i++)
        identity_add_gid(out, user->gids[i]);
}

/* ---- decisions -------------------------------------------------------------------------- */

static bool rule_matches(const rule *x, const access_identity *id)
{
    if (x->kind == WHO_ANYONE)
        return true;
    if (x->kind == WHO_USER)
        return x->id == id->uid;
    for (uint32_t i = 0; i < id->gid_count; i++)
        if (x->id == id->gids[i])
            return true;
    return false;
}

void access_resolve(const access_rules *r, const access_identity *id, access_grants *out)
{
    uint8_t reader = role_bit(ACCESS_READER);

    memset(out, 0, sizeof(*out));
    if (r->open) {
        out->all = out->some = (uint8_t)((1u << ACCESS_ROLE_COUNT) - 1);
        return;
    }
    for (size_t i = 0; i < r->count; i++) {
        const rule *x = &r->rules[i];
        if (!rule_matches(x, id))
            continue;
        uint8_t bit = role_bit((access_role)x->role);
        /* Every role reads, and reads are not limited to units. */
        out->all |= reader;
        out->some |= (uint8_t)(bit | reader);
        if (x->all_units) {
            out->all |= bit;
            continue;
        }
        uint64_t *units = out->units[x->role - ACCESS_ROLE_FIRST];
        for (size_t w = 0; w < ACCESS_UNITS_MAX / 64; w++)
            units[w] |= x->units[w];
    }
}

/* Appends to `buf` (at `*n`, bounded by `size`) with printf. */
static void append(char *buf, size_t size, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t size, size_t *n, const char *fmt, ...)
{
    va_list ap;
    if (*n >= size)
        return;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *n, size - *n, fmt, ap);
    va_end(ap);
    if (w > 0)
        *n = *n + (size_t)w < size ? *n + (size_t)w : size - 1;
}

/* "reader, clerk for SON KFN, approver": what `g` holds, at most `size` bytes. */
static void describe(const access_rules *r, const access_grants *g, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int role = ACCESS_ROLE_FIRST; role <= ACCESS_ROLE_LAST; role++) {
        uint8_t bit = role_bit((access_role)role);
        if (!(g->some & bit) && !(g->all & bit))
            continue;
        append(buf, size, &n, "%s%s", n ? ", " : "", role_names[role]);
        if (g->all & bit)
            continue;
        append(buf, size, &n, " for");
        for (size_t u = 0; u < r->unit_count; u++)
            if (unit_bit(g->units[role - ACCESS_ROLE_FIRST], u))
                append(buf, size, &n, " %s", r->units[u]);
    }
}

bool access_allows(const access_rules *r, const access_grants *g, access_role need,
                   const char *unit)
{
    if (need == ACCESS_ANYONE)
        return true;
    if (need < ACCESS_ROLE_FIRST || need > ACCESS_ROLE_LAST)
        return false;
    uint8_t bit = role_bit(need);
    if ((g->all & bit) || ((g->some & bit) && unit == NULL))
        return true;
    if (!(g->some & bit))
        return false;
    int idx = unit_index(r, unit, strlen(unit));
    return idx >= 0 && unit_bit(g->units[need - ACCESS_ROLE_FIRST], (size_t)idx);
}

int access_decide(const access_rules *r, const access_grants *g, access_role need, const char *unit,
                  const char *what, const char *op, const char *who, char *why, size_t why_size)
{
    char holds[160];

    if (access_allows(r, g, need, unit))
        return 0;
    if (need < ACCESS_ROLE_FIRST || need > ACCESS_ROLE_LAST) {
        snprintf(why, why_size, "%s declares no role; it is refused to everyone", op);
        return BUDGET_EINTERNAL;
    }
    uint8_t bit = role_bit(need);
    if (g->some & bit) {
        describe(r, g, holds, sizeof(holds));
        snprintf(why, why_size, "%s needs the %s role for %s%s%s%s; %s holds %s", op,
                 role_names[need], unit, what ? " (" : "", what ? what : "", what ? ")" : "", who,
                 holds);
        return BUDGET_EFORBIDDEN;
    }
    if (g->some == 0) {
        snprintf(why, why_size, "%s needs the %s role; %s has no role in budgetd's access file", op,
                 role_names[need], who);
        return BUDGET_EFORBIDDEN;
    }
    describe(r, g, holds, sizeof(holds));
    snprintf(why, why_size, "%s needs the %s role; %s holds %s", op, role_names[need], who, holds);
    return BUDGET_EFORBIDDEN;
}

bool access_next_role(const access_rules *r, const access_grants *g, int *i, access_role *role,
                      bool *all_units, const char **units, size_t units_max, size_t *units_count)
{
    for (; *i < ACCESS_ROLE_COUNT; (*i)++) {
        uint8_t bit = (uint8_t)(1u << *i);
        if (!(g->some & bit) && !(g->all & bit))
            continue;
        *role = (access_role)(ACCESS_ROLE_FIRST + *i);
        *all_units = (g->all & bit) != 0;
        *units_count = 0;
        if (!*all_units)
            for (size_t u = 0; u < r->unit_count && *units_count < units_max; u++)
                if (unit_bit(g->units[*i], u))
                    units[(*units_count)++] = r->units[u];
        (*i)++;
        return true;
    }
    return false;
}

/* A unit code into `dst`, cut to BUDGET_UNIT_BYTES_MAX bytes. */
static void unit_copy(char dst[BUDGET_UNIT_BYTES_MAX + 1], const char *src)
{
    size_t n = strnlen(src, BUDGET_UNIT_BYTES_MAX);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The unit that holds frame `id` into `unit`; false when there is no such frame. */
static bool frame_holder(const ledger *l, const char *id, char unit[BUDGET_UNIT_BYTES_MAX + 1])
{
    ledger_frame_view f;
    if (!ledger_frame(l, id, &f))
        return false;
    unit_copy(unit, f.unit);
    return true;
}

/* Adds `unit` to `out`, with the phrase that says why the write concerns it. */
__attribute__((format(printf, 3, 4))) static void scope_add(access_scope *out, const char *unit,
                                                            const char *fmt, ...)
{
    assert(out->count < ACCESS_SCOPE_UNITS_MAX);
    unit_copy(out->units[out->count].unit, unit);
    out->units[out->count].what[0] = '\0';
    if (out->words) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(out->units[out->count].what, sizeof out->units[out->count].what, fmt, ap);
        va_end(ap);
    }
    out->count++;
}

/*
 * The scopes of the types, scope_<scope> of each row of LEDGER_EVENT_TYPES: each adds the
 * units the write concerns to `out`, none when what it names does not exist.
 */

/* The unit the client names (frame.grant: the unit of the new frame). */
static void scope_given_unit(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    (void)l;
    if (cmd->unit[0] != '\0')
        scope_add(out, cmd->unit, "the frame is for %s", cmd->unit);
}

/* The unit whose outcome is recorded (outcome.record): its clerk records it. */
static void scope_outcome_unit(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    (void)l;
    if (cmd->unit[0] != '\0')
        scope_add(out, cmd->unit, "the outcome is of %s", cmd->unit);
}

/* The unit that holds the frame the write names (frame.adjust, allocation.propose). */
static void scope_frame_holder(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    if (frame_holder(l, cmd->frame, unit))
        scope_add(out, unit, "frame %s is held by %s", cmd->frame, unit);
}

/* The unit the allocation the write names is to (avrop.request). */
static void scope_allocation_unit(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    ledger_allocation_view a;
    if (ledger_allocation(l, cmd->allocation, &a))
        scope_add(out, a.unit, "allocation %s is to %s", cmd->allocation, a.unit);
}

/* The unit allocation `id` is to, and the unit that holds its frame (once when they are the
 * same): a correction takes money from the one and gives it back to the other. */
static void scope_allocation_and_holder(const ledger *l, const char *id, access_scope *out)
{
    ledger_allocation_view a;
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    if (!ledger_allocation(l, id, &a))
        return;
    scope_add(out, a.unit, "allocation %s is to %s", id, a.unit);
    if (frame_holder(l, a.frame, unit) && strcmp(unit, a.unit) != 0)
        scope_add(out, unit, "allocation %s comes from frame %s, held by %s", id, a.frame, unit);
}

/* The unit that holds the frame the target comes from (approve, reject); of a reduction or a
 * reversal, also the unit of its allocation. */
static void scope_target_holder(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    ledger_allocation_view a;
    ledger_avrop_view v;
    char unit[BUDGET_UNIT_BYTES_MAX + 1];

    if (ledger_allocation(l, cmd->target, &a)) {
        if (frame_holder(l, a.frame, unit))
            scope_add(out, unit, "allocation %s comes from frame %s, held by %s", cmd->target,
                      a.frame, unit);
        return;
    }
    if (ledger_avrop(l, cmd->target, &v) && ledger_allocation(l, v.allocation, &a) &&
        frame_holder(l, a.frame, unit))
        scope_add(out, unit, "avrop %s draws on frame %s, held by %s", cmd->target, a.frame, unit);
    ledger_correction_view c;
    if (ledger_correction(l, cmd->target, &c))
        scope_allocation_and_holder(l, c.allocation, out);
}

/* A reduction: the allocation's unit and the frame's (allocation.reduce). */
static void scope_allocation_and_frame(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    scope_allocation_and_holder(l, cmd->allocation, out);
}

/* A reversal: the unit of the avrop's allocation and the frame's (avrop.reverse; the avrop is
 * in `target`). */
static void scope_avrop_and_frame(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    ledger_avrop_view v;
    if (ledger_avrop(l, cmd->target, &v))
        scope_allocation_and_holder(l, v.allocation, out);
}

/* The unit registered, renamed or closed (unit.register, unit.rename, unit.close). A parent
 * is not in the scope: naming a unit as a parent changes nothing of it. */
static void scope_registered_unit(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    (void)l;
    if (cmd->unit[0] != '\0')
        scope_add(out, cmd->unit, "the unit is %s", cmd->unit);
}

/* Every unit (year.close: a closed year freezes the frames of all units). No unit of the
 * access file is named ACCESS_EVERY_UNIT, so only a role held for every unit passes. */
static void scope_every_unit(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    (void)l;
    scope_add(out, ACCESS_EVERY_UNIT, "closing fiscal year %d concerns every unit", (int)cmd->year);
}

/* No unit (withdraw: only the proposer may withdraw; the ledger checks). */
static void scope_none(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    (void)l;
    (void)cmd;
    (void)out;
}

/* The unit of each line (budget.adopt): each gets a frame. */
static void scope_line_units(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    (void)l;
    for (uint16_t i = 0; i < cmd->lines.count && out->count < ACCESS_SCOPE_UNITS_MAX; i++)
        scope_add(out, cmd->lines.line[i].unit, "line %u of the adoption is for %s",
                  (unsigned)i + 1, cmd->lines.line[i].unit);
}

typedef void (*scope_fn)(const ledger *l, const ledger_cmd *cmd, access_scope *out);
static const scope_fn type_scopes[LEDGER_TYPE_END] = {
#define TYPE_SCOPE(name, wire, op, role, kind, fields, rules, scope)                               \
    [LEDGER_##name] = scope_##scope,
    LEDGER_EVENT_TYPES(TYPE_SCOPE)
#undef TYPE_SCOPE
};

static void write_scope(const ledger *l, const ledger_cmd *cmd, bool words, access_scope *out)
{
    out->count = 0;
    out->words = words;
    if (ledger_type_known(cmd->type))
        type_scopes[cmd->type](l, cmd, out);
}

void access_write_scope(const ledger *l, const ledger_cmd *cmd, access_scope *out)
{
    write_scope(l, cmd, true, out);
}

bool access_write_refused(const access_rules *r, const access_grants *g, access_role need,
                          const ledger *l, const ledger_cmd *cmd, access_scope *out, size_t *i)
{
    write_scope(l, cmd, false, out);
    for (*i = 0; *i < out->count; (*i)++)
        if (!access_allows(r, g, need, out->units[*i].unit)) {
            write_scope(l, cmd, true, out); /* the same units, with why each is concerned */
            return true;
        }
    return false;
}
