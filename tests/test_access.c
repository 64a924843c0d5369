/* Access: the access file's parser (every rule and every error, with its line), identities,
 * what each role may do for which unit, and the unit a write is done for. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "budget/errors.h"
#include "daemon/access.h"
#include "daemon/ledger.h"

/* ---- a small user and group database ------------------------------------------------------ */

static const struct {
    const char *name;
    uint32_t id;
} users[] = {{"anna", 1001}, {"bertil", 1002}, {"cecilia", 1003}},
  groups[] = {{"ekonomi", 3000}, {"son-kansli", 3001}};

static int fake_user(void *ctx, const char *name, uint32_t *uid)
{
    (void)ctx;
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
        if (strcmp(users[i].name, name) == 0) {
            *uid = users[i].id;
            return 0;
        }
    return -1;
}

static int fake_group(void *ctx, const char *name, uint32_t *gid)
{
    (void)ctx;
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        if (strcmp(groups[i].name, name) == 0) {
            *gid = groups[i].id;
            return 0;
        }
    return -1;
}

static const access_resolver fake = {fake_user, fake_group, NULL};

static char why[600];

static access_rules *parse_ok(const char *text)
{
    access_rules *r = NULL;
    int rc = access_parse(text, strlen(text), &fake, &r, why, sizeof(why));
    cr_assert_eq(rc, 0, "refused: %s", why);
    cr_assert_not_null(r);
    return r;
}

/* The file must be refused with exactly `expected`. */
static void parse_fails(const char *text, const char *expected)
{
    access_rules *r = (access_rules *)1;
    int rc = access_parse(text, strlen(text), &fake, &r, why, sizeof(why));
    cr_assert_eq(rc, -1, "accepted: %s", text);
    cr_assert_null(r, "a refused file still gave rules");
    cr_assert_str_eq(why, expected);
}

static access_identity who(uint32_t uid, uint32_t gid)
{
    access_identity id;
    memset(&id, 0, sizeof(id));
    id.uid = uid;
    id.gids[0] = gid;
    id.gid_count = 1;
    return id;
}

/* 0, or the error of access_decide for `id` under `r`; access_allows must agree. */
static int decide(const access_rules *r, access_identity id, access_role need, const char *unit)
{
    access_grants g;
    access_resolve(r, &id, &g);
    memset(why, 0, sizeof(why));
    int rc = access_decide(r, &g, need, unit, NULL, "op", "uid X", why, sizeof(why));
    if (rc != 0)
        cr_assert_gt(strlen(why), 0, "a refusal without a message");
    cr_assert_eq(access_allows(r, &g, need, unit), rc == 0,
                 "access_allows and access_decide disagree on %s for %s", access_role_name(need),
                 unit ? unit : "(any unit)");
    return rc;
}

#define ALLOWED(r, id, need, unit) cr_assert_eq(decide((r), (id), (need), (unit)), 0, "%s", why)
#define FORBIDDEN(r, id, need, unit)                                                               \
    cr_assert_eq(decide((r), (id), (need), (unit)), BUDGET_EFORBIDDEN, "allowed: %s %s",           \
                 access_role_name(need), (unit) ? (unit) : "(any unit)")

/* ---- the file ---------------------------------------------------------------------------- */

Test(access, parses_every_kind_of_rule)
{
    access_rules *r = parse_ok("# budgetd access\n"
                               "\n"
                               "user anna clerk SON KFN   # trailing comment\n"
                               "user 1002 approver KS\r\n"
                               "group ekonomi admin\n"
                               "group 3001 clerk SON\n"
                               "\t anyone reader\n"
                               "user cecilia auditor");
    cr_assert_eq(access_rule_count(r), 6);
    cr_assert_not(access_is_open(r));
    access_free(r);
}

Test(access, an_empty_file_grants_nothing)
{
    access_rules *r = parse_ok("");
    cr_assert_eq(access_rule_count(r), 0);
    FORBIDDEN(r, who(0, 0), ACCESS_READER, NULL);
    access_free(r);
    r = parse_ok("# only comments\n\n   \n");
    cr_assert_eq(access_rule_count(r), 0);
    access_free(r);
}

Test(access, errors_name_the_line_and_the_problem)
{
    parse_fails("user anna clerk\nperson anna clerk\n",
                "line 2: person: a rule starts with user, group or anyone");
    parse_fails("\n\nuser anna\n", "line 3: user needs a name or id and a role: user NAME ROLE "
                                   "[UNIT...]");
    parse_fails("group ekonomi\n", "line 1: group needs a name or id and a role: group NAME ROLE "
                                   "[UNIT...]");
    parse_fails("anyone\n", "line 1: anyone needs a role: anyone ROLE [UNIT...]");
    parse_fails("user anna clerck SON\n",
                "line 1: clerck is not a role: reader, auditor, clerk, approver or admin");
    parse_fails("user Anna clerk\n", "line 1: no user named Anna");
    parse_fails("group revision auditor\n", "line 1: no group named revision");
    parse_fails("user anna clerk S/N\n",
                "line 1: S/N is not a unit: units are 1..32 of A-Z a-z 0-9 . _ : - (KS, SON)");
    parse_fails("user anna reader SON\n",
                "line 1: reader is not limited to units: every read shows every unit");
    parse_fails("user anna auditor KS\n",
                "line 1: auditor is not limited to units: every read shows every unit");
    parse_fails("user 4294967295 admin\n", "line 1: user id 4294967295 is out of range");
    parse_fails("user 99999999999999999999 admin\n",
                "line 1: user id 99999999999999999999 is out of range");
    parse_fails("user anna clerk \x01\n",
                "line 1: ? is not a unit: units are 1..32 of A-Z a-z 0-9 . _ : - (KS, SON)");
}

Test(access, names_and_lines_have_limits)
{
    char name[100], line[2048];
    memset(name, 'a', 65);
    name[65] = '\0';
    snprintf(line, sizeof(line), "user %s admin\n", name);
    parse_fails(line, "line 1: user name aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... is longer "
                      "than 64 bytes");

    /* A line of exactly the limit is read; one byte more is not. */
    size_t n = (size_t)snprintf(line, sizeof(line), "user anna clerk");
    while (n + 4 <= ACCESS_LINE_BYTES_MAX) {
        memcpy(line + n, " SON", 4);
        n += 4;
    }
    while (n < ACCESS_LINE_BYTES_MAX)
        line[n++] = ' ';
    line[n] = '\0';
    access_free(parse_ok(line));
    line[n++] = ' ';
    line[n] = '\0';
    parse_fails(line, "line 1: the line is over 1024 bytes");
}

Test(access, a_file_has_limits)
{
    access_rules *r = NULL;
    size_t big = ACCESS_FILE_BYTES_MAX + 1;
    char *text = malloc(big);
    cr_assert_not_null(text);
    memset(text, '\n', big);
    cr_assert_eq(access_parse(text, big, &fake, &r, why, sizeof(why)), -1);
    cr_assert_str_eq(why, "the file is over 262144 bytes");

    /* NUL bytes: not a text file. */
    cr_assert_eq(access_parse("user anna\0 admin", 16, &fake, &r, why, sizeof(why)), -1);
    cr_assert_str_eq(why, "the file holds a NUL byte; it is not a text file");

    /* ACCESS_RULES_MAX rules are taken, one more is not. */
    size_t len = 0;
    for (unsigned i = 0; i <= ACCESS_RULES_MAX; i++)
        len += (size_t)sprintf(text + len, "user %u reader\n", 10000 + i);
    cr_assert_eq(access_parse(text, len, &fake, &r, why, sizeof(why)), -1);
    cr_assert_str_eq(why, "line 4097: more than 4096 rules");
    len -= strlen("user 14096 reader\n");
    cr_assert_eq(access_parse(text, len, &fake, &r, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(access_rule_count(r), ACCESS_RULES_MAX);
    access_free(r);

    /* ACCESS_UNITS_MAX different units in the whole file, not one more. */
    len = 0;
    for (unsigned i = 0; i <= ACCESS_UNITS_MAX; i++)
        len += (size_t)sprintf(text + len, "user anna clerk U%u\n", i);
    cr_assert_eq(access_parse(text, len, &fake, &r, why, sizeof(why)), -1);
    cr_assert_str_eq(why, "line 257: more than 256 different units in the file");
    len -= strlen("user anna clerk U256\n");
    cr_assert_eq(access_parse(text, len, &fake, &r, why, sizeof(why)), 0, "%s", why);
    access_free(r);
    free(text);
}

/* ---- roles ---------------------------------------------------------------------------------- */

static const access_role roles[] = {ACCESS_READER, ACCESS_AUDITOR, ACCESS_CLERK, ACCESS_APPROVER,
                                    ACCESS_ADMIN};
#define ROLES (sizeof(roles) / sizeof(roles[0]))

Test(access, each_role_holds_itself_and_reader_only)
{
    char text[400];
    for (size_t i = 0; i < ROLES; i++) {
        snprintf(text, sizeof(text), "user anna %s\n", access_role_name(roles[i]));
        access_rules *r = parse_ok(text);
        for (size_t j = 0; j < ROLES; j++) {
            bool holds = roles[j] == roles[i] || roles[j] == ACCESS_READER;
            int rc = decide(r, who(1001, 100), roles[j], NULL);
            cr_assert_eq(rc, holds ? 0 : BUDGET_EFORBIDDEN, "%s holding %s: %s",
                         access_role_name(roles[i]), access_role_name(roles[j]), why);
            /* For a unit too: these rules name none, so they hold for every unit. */
            rc = decide(r, who(1001, 100), roles[j], "SON");
            cr_assert_eq(rc, holds ? 0 : BUDGET_EFORBIDDEN);
        }
        /* Someone else holds nothing. */
        FORBIDDEN(r, who(1002, 100), ACCESS_READER, NULL);
        /* hello is for everyone, known or not. */
        ALLOWED(r, who(1002, 100), ACCESS_ANYONE, NULL);
        access_free(r);
    }
}

Test(access, an_unknown_identity_is_told_it_has_no_role)
{
    access_rules *r = parse_ok("user anna clerk\n");
    access_grants g;
    access_identity id = who(4242, 4242);
    access_resolve(r, &id, &g);
    cr_assert_eq(
        access_decide(r, &g, ACCESS_READER, NULL, NULL, "balances", "uid 4242", why, sizeof(why)),
        BUDGET_EFORBIDDEN);
    cr_assert_str_eq(why, "balances needs the reader role; uid 4242 has no role in budgetd's "
                          "access file");
    id = who(1001, 100);
    access_resolve(r, &id, &g);
    cr_assert_eq(access_decide(r, &g, ACCESS_APPROVER, NULL, NULL, "approve", "uid 1001 (anna)",
                               why, sizeof(why)),
                 BUDGET_EFORBIDDEN);
    cr_assert_str_eq(why, "approve needs the approver role; uid 1001 (anna) holds reader, clerk");
    access_free(r);
}

Test(access, an_op_that_declares_nothing_is_refused_to_everyone)
{
    access_rules *open = access_rules_open();
    access_grants g;
    access_identity id = who(0, 0);
    access_resolve(open, &id, &g);
    cr_assert_eq(
        access_decide(open, &g, ACCESS_UNDECLARED, NULL, NULL, "export", "uid 0", why, sizeof(why)),
        BUDGET_EINTERNAL);
    cr_assert_str_eq(why, "export declares no role; it is refused to everyone");
    access_free(open);
}

Test(access, without_a_file_everyone_holds_every_role)
{
    access_rules *r = access_rules_open();
    cr_assert(access_is_open(r));
    for (size_t i = 0; i < ROLES; i++) {
        ALLOWED(r, who(0, 0), roles[i], NULL);
        ALLOWED(r, who(4242, 17), roles[i], "SON");
    }
    access_free(r);
}

/* ---- units ---------------------------------------------------------------------------------- */

Test(access, a_role_limited_to_units_holds_for_those_only)
{
    access_rules *r = parse_ok("user anna clerk SON KFN\n"
                               "user bertil approver KS\n"
                               "user bertil clerk\n"
                               "user cecilia admin KS\n");
    ALLOWED(r, who(1001, 1), ACCESS_CLERK, "SON");
    ALLOWED(r, who(1001, 1), ACCESS_CLERK, "KFN");
    FORBIDDEN(r, who(1001, 1), ACCESS_CLERK, "KS");
    /* A unit no rule names. */
    FORBIDDEN(r, who(1001, 1), ACCESS_CLERK, "UBN");
    /* Unit names are exact: case matters. */
    FORBIDDEN(r, who(1001, 1), ACCESS_CLERK, "son");
    /* No unit known (the target does not exist): the role for some unit is enough here, and
     * the ledger answers not_found. */
    ALLOWED(r, who(1001, 1), ACCESS_CLERK, NULL);
    /* Reads are not limited to units. */
    ALLOWED(r, who(1001, 1), ACCESS_READER, "KS");

    ALLOWED(r, who(1002, 1), ACCESS_APPROVER, "KS");
    FORBIDDEN(r, who(1002, 1), ACCESS_APPROVER, "SON");
    ALLOWED(r, who(1002, 1), ACCESS_CLERK, "SON");
    ALLOWED(r, who(1002, 1), ACCESS_CLERK, "KS");

    ALLOWED(r, who(1003, 1), ACCESS_ADMIN, "KS");
    FORBIDDEN(r, who(1003, 1), ACCESS_ADMIN, "SON");
    FORBIDDEN(r, who(1003, 1), ACCESS_CLERK, "KS");
    access_free(r);
}

Test(access, a_unit_refusal_says_what_is_held)
{
    access_rules *r = parse_ok("user anna clerk SON KFN\nuser anna approver KS\n");
    access_grants g;
    access_identity id = who(1001, 1);
    access_resolve(r, &id, &g);
    cr_assert_eq(access_decide(r, &g, ACCESS_CLERK, "KS", "frame ks-2021 is held by KS",
                               "allocation.propose", "uid 1001 (anna)", why, sizeof(why)),
                 BUDGET_EFORBIDDEN);
    cr_assert_str_eq(why, "allocation.propose needs the clerk role for KS (frame ks-2021 is held "
                          "by KS); uid 1001 (anna) holds reader, clerk for SON KFN, approver for "
                          "KS");
    access_free(r);
}

Test(access, rules_add_up)
{
    /* Two lines for one user and role: the union of their units. A line without units wins. */
    access_rules *r = parse_ok("user anna clerk SON\nuser anna clerk KFN\n"
                               "user bertil approver SON\nuser bertil approver\n");
    ALLOWED(r, who(1001, 1), ACCESS_CLERK, "SON");
    ALLOWED(r, who(1001, 1), ACCESS_CLERK, "KFN");
    FORBIDDEN(r, who(1001, 1), ACCESS_CLERK, "KS");
    ALLOWED(r, who(1002, 1), ACCESS_APPROVER, "KS");
    access_free(r);
}

/* ---- groups and anyone --------------------------------------------------------------------- */

Test(access, group_rules_match_any_group_of_the_identity)
{
    access_rules *r = parse_ok("group ekonomi approver\ngroup son-kansli clerk SON\n");
    ALLOWED(r, who(5000, 3000), ACCESS_APPROVER, "KS");
    FORBIDDEN(r, who(5000, 3000), ACCESS_CLERK, "SON");
    /* The group among the others, not the first. */
    access_identity id = who(5001, 100);
    id.gids[id.gid_count++] = 200;
    id.gids[id.gid_count++] = 3001;
    ALLOWED(r, id, ACCESS_CLERK, "SON");
    FORBIDDEN(r, id, ACCESS_CLERK, "KS");
    FORBIDDEN(r, id, ACCESS_APPROVER, "KS");
    /* A uid equal to a group's gid is not in the group. */
    FORBIDDEN(r, who(3000, 100), ACCESS_APPROVER, "KS");
    access_free(r);
}

Test(access, anyone_grants_every_identity)
{
    access_rules *r = parse_ok("anyone reader\nuser anna clerk SON\n");
    ALLOWED(r, who(77777, 77777), ACCESS_READER, NULL);
    FORBIDDEN(r, who(77777, 77777), ACCESS_AUDITOR, NULL);
    FORBIDDEN(r, who(77777, 77777), ACCESS_CLERK, "SON");
    ALLOWED(r, who(1001, 1), ACCESS_CLERK, "SON");
    access_free(r);
}

/* ---- what hello shows ---------------------------------------------------------------------- */

Test(access, next_role_lists_roles_and_units)
{
    access_rules *r = parse_ok("user anna clerk SON KFN\nuser anna admin\n");
    access_grants g;
    access_identity id = who(1001, 1);
    const char *units[8];
    size_t count;
    access_role role;
    bool all;
    int i = 0;

    access_resolve(r, &id, &g);
    cr_assert(access_next_role(r, &g, &i, &role, &all, units, 8, &count));
    cr_assert_eq(role, ACCESS_READER);
    cr_assert(all);
    cr_assert(access_next_role(r, &g, &i, &role, &all, units, 8, &count));
    cr_assert_eq(role, ACCESS_CLERK);
    cr_assert_not(all);
    cr_assert_eq(count, 2);
    cr_assert_str_eq(units[0], "SON");
    cr_assert_str_eq(units[1], "KFN");
    cr_assert(access_next_role(r, &g, &i, &role, &all, units, 8, &count));
    cr_assert_eq(role, ACCESS_ADMIN);
    cr_assert(all);
    cr_assert_not(access_next_role(r, &g, &i, &role, &all, units, 8, &count));

    /* Nothing for an unknown identity. */
    id = who(2, 2);
    access_resolve(r, &id, &g);
    i = 0;
    cr_assert_not(access_next_role(r, &g, &i, &role, &all, units, 8, &count));
    access_free(r);
}

/* ---- the unit of a write ------------------------------------------------------------------- */

static ledger *l;
static uint64_t seq;

static void apply_cmd(ledger_cmd c, uint32_t uid)
{
    ledger_actor a = {uid, ""};
    ledger_event ev;
    ledger_error err;
    uint64_t existing;
    cr_assert_eq(ledger_check(l, &c, &a, &ev, &existing, &err), 0, "%s", err.message);
    ev.seq = ++seq;
    cr_assert_eq(ledger_apply(l, &ev), 0);
}

static ledger_cmd cmd(ledger_type type, const char *id)
{
    ledger_cmd c;
    memset(&c, 0, sizeof(c));
    c.type = type;
    snprintf(c.id, sizeof(c.id), "%s", id);
    /* The decision every grant, adjustment and decision rests on (others carry none). */
    strcpy(c.decision_body, "KS");
    c.decision_date = 20210824;
    strcpy(c.decision_paragraph, "241");
    return c;
}

/* Registers the units the ledger below names (a write names only registered units). */
static void register_units(void)
{
    static const char *const codes[] = {"KS", "SON", "KFN"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        ledger_cmd c = cmd(LEDGER_UNIT_REGISTERED, codes[i]);
        strcpy(c.unit, codes[i]);
        strcpy(c.title, codes[i]);
        strcpy(c.unit_kind, i == 0 ? "styrelse" : "nämnd");
        apply_cmd(c, 1);
    }
}

/* KS holds frame f1; allocation a1 goes from it to SON (approved); avrop v1 draws on it;
 * a2 to KFN is pending. */
static void small_ledger(void)
{
    l = ledger_new();
    seq = 0;
    register_units();
    ledger_cmd c = cmd(LEDGER_FRAME_GRANTED, "f1");
    strcpy(c.unit, "KS");
    c.year = 2021;
    c.amount = 1000;
    strcpy(c.title, "Ram");
    apply_cmd(c, 1);
    c = cmd(LEDGER_ALLOCATION_PROPOSED, "a1");
    strcpy(c.frame, "f1");
    strcpy(c.unit, "SON");
    c.amount = 100;
    strcpy(c.title, "X");
    apply_cmd(c, 1);
    c = cmd(LEDGER_DECISION_APPROVED, "d1");
    strcpy(c.target, "a1");
    apply_cmd(c, 2);
    c = cmd(LEDGER_AVROP_REQUESTED, "v1");
    strcpy(c.allocation, "a1");
    c.amount = 10;
    apply_cmd(c, 3);
    c = cmd(LEDGER_ALLOCATION_PROPOSED, "a2");
    strcpy(c.frame, "f1");
    strcpy(c.unit, "KFN");
    c.amount = 100;
    strcpy(c.title, "Y");
    apply_cmd(c, 1);
}

/* access_write_refused for `c` under the access file `text` (uid 1001 needing clerk): the unit
 * refused is `want` (-1: none), and then the scope it fills is `scope`, phrases and all. */
static void expect_refused(const ledger_cmd *c, const char *text, int want,
                           const access_scope *scope)
{
    access_rules *r = parse_ok(text);
    access_grants g;
    access_resolve(r, &(access_identity){.uid = 1001}, &g);
    access_scope got;
    size_t i = 99;
    bool refused = access_write_refused(r, &g, ACCESS_CLERK, l, c, &got, &i);
    access_free(r);
    cr_assert_eq(refused, want >= 0, "%s under \"%s\": refused %d", c->id, text, refused);
    if (!refused)
        return;
    cr_assert_eq(i, (size_t)want, "%s under \"%s\": unit %zu refused", c->id, text, i);
    cr_assert_eq(got.count, scope->count, "%s: %zu units", c->id, got.count);
    for (size_t k = 0; k < got.count; k++) {
        cr_assert_str_eq(got.units[k].unit, scope->units[k].unit, "%s: unit %zu", c->id, k);
        cr_assert_str_eq(got.units[k].what, scope->units[k].what, "%s: phrase %zu", c->id, k);
    }
}

/* `c`'s scope; access_write_refused must agree with it: nothing refused to a clerk for every
 * unit, the first unit to one who holds no unit, each unit's phrase made for the refusal. */
static void scope_of(const ledger_cmd *c, access_scope *scope)
{
    access_write_scope(l, c, scope);
    expect_refused(c, "user 1001 clerk", -1, scope);
    expect_refused(c, "user 1001 reader", scope->count > 0 ? 0 : -1, scope);
}

static void expect_scope(ledger_cmd c, const char *unit, const char *what)
{
    access_scope scope;
    scope_of(&c, &scope);
    if (!unit) {
        cr_assert_eq(scope.count, 0, "a unit for %s: %s", c.id, scope.units[0].unit);
        return;
    }
    cr_assert_eq(scope.count, 1, "not one unit for %s", c.id);
    cr_assert_str_eq(scope.units[0].unit, unit);
    cr_assert_str_eq(scope.units[0].what, what);
}

Test(access, the_unit_of_each_write)
{
    small_ledger();
    ledger_cmd c = cmd(LEDGER_FRAME_GRANTED, "f2");
    strcpy(c.unit, "SON");
    expect_scope(c, "SON", "the frame is for SON");

    c = cmd(LEDGER_FRAME_ADJUSTED, "j1");
    strcpy(c.frame, "f1");
    expect_scope(c, "KS", "frame f1 is held by KS");

    /* A proposal is made for the unit that holds the frame, not the one it goes to. */
    c = cmd(LEDGER_ALLOCATION_PROPOSED, "a3");
    strcpy(c.frame, "f1");
    strcpy(c.unit, "SON");
    expect_scope(c, "KS", "frame f1 is held by KS");

    /* An avrop is made for the unit the allocation goes to. */
    c = cmd(LEDGER_AVROP_REQUESTED, "v2");
    strcpy(c.allocation, "a1");
    expect_scope(c, "SON", "allocation a1 is to SON");

    /* Decisions are made for the unit that holds the frame the target comes from. */
    c = cmd(LEDGER_DECISION_APPROVED, "d2");
    strcpy(c.target, "a2");
    expect_scope(c, "KS", "allocation a2 comes from frame f1, held by KS");
    c = cmd(LEDGER_DECISION_REJECTED, "d2");
    strcpy(c.target, "v1");
    expect_scope(c, "KS", "avrop v1 draws on frame f1, held by KS");

    /* A withdrawal concerns no unit; what does not exist has none. */
    c = cmd(LEDGER_REQUEST_WITHDRAWN, "w1");
    strcpy(c.target, "v1");
    expect_scope(c, NULL, NULL);
    c = cmd(LEDGER_AVROP_REQUESTED, "v3");
    strcpy(c.allocation, "nope");
    expect_scope(c, NULL, NULL);
    c = cmd(LEDGER_DECISION_APPROVED, "d3");
    strcpy(c.target, "f1"); /* a frame: not something that is decided */
    expect_scope(c, NULL, NULL);
    c = cmd(LEDGER_FRAME_ADJUSTED, "j2");
    strcpy(c.frame, "nope");
    expect_scope(c, NULL, NULL);

    /* The register's writes are for the unit they register, rename or close; a parent is not
     * in the scope. */
    c = cmd(LEDGER_UNIT_REGISTERED, "u1");
    strcpy(c.unit, "BUN");
    strcpy(c.parent, "KS");
    expect_scope(c, "BUN", "the unit is BUN");
    c = cmd(LEDGER_UNIT_RENAMED, "u2");
    strcpy(c.unit, "SON");
    expect_scope(c, "SON", "the unit is SON");
    c = cmd(LEDGER_UNIT_CLOSED, "u3");
    strcpy(c.unit, "KFN");
    expect_scope(c, "KFN", "the unit is KFN");
    ledger_free(l);
}

/* `c`'s scope is exactly these two units, each with its reason. */
static void expect_two_units(ledger_cmd c, const char *unit0, const char *what0, const char *unit1,
                             const char *what1)
{
    access_scope scope;
    scope_of(&c, &scope);
    cr_assert_eq(scope.count, 2, "not two units for %s", c.id);
    cr_assert_str_eq(scope.units[0].unit, unit0);
    cr_assert_str_eq(scope.units[0].what, what0);
    cr_assert_str_eq(scope.units[1].unit, unit1);
    cr_assert_str_eq(scope.units[1].what, what1);
    /* A clerk for the first unit only is refused at the second, with its phrase. */
    char text[64];
    snprintf(text, sizeof(text), "user 1001 clerk %s", unit0);
    expect_refused(&c, text, 1, &scope);
}

Test(access, a_correction_concerns_the_allocations_unit_and_the_frames)
{
    small_ledger();
    ledger_cmd c = cmd(LEDGER_DECISION_APPROVED, "v1-ok");
    strcpy(c.target, "v1");
    apply_cmd(c, 2);
    /* A reduction, and a reversal (whose avrop is in `target`), asked for and decided. */
    c = cmd(LEDGER_ALLOCATION_REDUCTION_REQUESTED, "r1");
    strcpy(c.allocation, "a1");
    c.amount = 5;
    strcpy(c.title, "Mindre");
    expect_two_units(c, "SON", "allocation a1 is to SON", "KS",
                     "allocation a1 comes from frame f1, held by KS");
    apply_cmd(c, 1);
    c = cmd(LEDGER_AVROP_REVERSAL_REQUESTED, "x1");
    strcpy(c.target, "v1");
    c.amount = 5;
    strcpy(c.title, "Fel");
    expect_two_units(c, "SON", "allocation a1 is to SON", "KS",
                     "allocation a1 comes from frame f1, held by KS");
    apply_cmd(c, 1);
    const char *const decided[] = {"r1", "x1"};
    for (int i = 0; i < 2; i++) {
        c = cmd(i == 0 ? LEDGER_DECISION_APPROVED : LEDGER_DECISION_REJECTED, "d9");
        strcpy(c.target, decided[i]);
        expect_two_units(c, "SON", "allocation a1 is to SON", "KS",
                         "allocation a1 comes from frame f1, held by KS");
    }
    /* Within one unit (its own frame to itself), that unit once. */
    c = cmd(LEDGER_FRAME_GRANTED, "f-son");
    strcpy(c.unit, "SON");
    c.year = 2021;
    c.amount = 1000;
    strcpy(c.title, "Egen ram");
    apply_cmd(c, 1);
    c = cmd(LEDGER_ALLOCATION_PROPOSED, "a-son");
    strcpy(c.frame, "f-son");
    strcpy(c.unit, "SON");
    c.amount = 100;
    strcpy(c.title, "Z");
    apply_cmd(c, 1);
    c = cmd(LEDGER_DECISION_APPROVED, "a-son-ok");
    strcpy(c.target, "a-son");
    apply_cmd(c, 2);
    c = cmd(LEDGER_ALLOCATION_REDUCTION_REQUESTED, "r2");
    strcpy(c.allocation, "a-son");
    expect_scope(c, "SON", "allocation a-son is to SON");
    /* What does not exist has none. */
    c = cmd(LEDGER_AVROP_REVERSAL_REQUESTED, "x2");
    strcpy(c.target, "a1"); /* an allocation, not an avrop */
    expect_scope(c, NULL, NULL);
    ledger_free(l);
}

/* Closing a year concerns every unit: only an admin for every unit may; a carry-over concerns
 * the unit that holds the frame carried from. */
Test(access, closing_a_year_needs_the_admin_role_for_every_unit)
{
    small_ledger();
    ledger_cmd c = cmd(LEDGER_YEAR_CLOSED, "c21");
    c.year = 2021;
    expect_scope(c, ACCESS_EVERY_UNIT, "closing fiscal year 2021 concerns every unit");
    c = cmd(LEDGER_FRAME_CARRIED_OVER, "f22");
    strcpy(c.frame, "f1");
    expect_scope(c, "KS", "frame f1 is held by KS");
    ledger_free(l);

    access_rules *r = parse_ok("user anna admin\n"
                               "user bertil admin KS SON KFN\n");
    ALLOWED(r, who(1001, 1), ACCESS_ADMIN, ACCESS_EVERY_UNIT);
    cr_assert_eq(decide(r, who(1002, 1), ACCESS_ADMIN, ACCESS_EVERY_UNIT), BUDGET_EFORBIDDEN);
    cr_assert_not_null(strstr(why, "needs the admin role for every unit"), "%s", why);
    ALLOWED(r, who(1002, 1), ACCESS_ADMIN, "KS");
    access_free(r);
}

/* ---- the system side ----------------------------------------------------------------------- */

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

Test(access, load_reads_a_file_and_names_it_in_errors)
{
    char dir[] = "/tmp/budgetd-access-XXXXXX", path[128], expected[300];
    access_rules *r = NULL;
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/access", dir);

    write_file(path, "user 0 admin\nuser root approver\n", 0640);
    cr_assert_eq(access_load(path, &r, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(access_rule_count(r), 2);
    access_free(r);

    write_file(path, "user 0 admin\nuser no-such-user-here approver\n", 0640);
    cr_assert_eq(access_load(path, &r, why, sizeof(why)), -1);
    snprintf(expected, sizeof(expected), "%s: line 2: no user named no-such-user-here", path);
    cr_assert_str_eq(why, expected);

    /* A file every user may write is not trusted. */
    write_file(path, "user 0 admin\n", 0646);
    cr_assert_eq(access_load(path, &r, why, sizeof(why)), -1);
    snprintf(expected, sizeof(expected), "%s may be written by every user (mode 0646); refused",
             path);
    cr_assert_str_eq(why, expected);

    cr_assert_eq(access_load(dir, &r, why, sizeof(why)), -1);
    snprintf(expected, sizeof(expected), "%s is not a regular file", dir);
    cr_assert_str_eq(why, expected);

    unlink(path);
    cr_assert_eq(access_load(path, &r, why, sizeof(why)), -1);
    snprintf(expected, sizeof(expected), "%s: No such file or directory", path);
    cr_assert_str_eq(why, expected);
    rmdir(dir);
}

Test(access, identity_takes_the_groups_of_the_user)
{
    access_identity id;
    /* No user name: only the group the kernel gave. */
    access_identity_of(4242, 77, NULL, 0, &id);
    cr_assert_eq(id.uid, 4242);
    cr_assert_eq(id.gid_count, 1);
    cr_assert_eq(id.gids[0], 77);
    /* root's group in the password database is 0; the kernel's group comes first. */
    access_identity_of(0, 12345, "root", 0, &id);
    cr_assert_eq(id.gids[0], 12345);
    bool zero = false;
    for (uint32_t i = 0; i < id.gid_count; i++)
        zero = zero || id.gids[i] == 0;
    cr_assert(zero, "root's group 0 is missing");
}

Test(access, a_user_looked_up_once_serves_peers_of_any_group)
{
    access_identity user, id, direct;
    /* What the databases say of root, then a peer of root in group 12345. */
    access_identity_of(0, 0, "root", 0, &user);
    access_identity_with_gid(&user, 12345, &id);
    access_identity_of(0, 12345, "root", 0, &direct);
    cr_assert_eq(id.uid, 0);
    cr_assert_eq(id.gid_count, direct.gid_count);
    for (uint32_t i = 0; i < id.gid_count; i++)
        cr_assert_eq(id.gids[i], direct.gids[i], "group %u", i);

    /* The peer's group comes first and is not repeated; the list stops at its limit. */
    memset(&user, 0, sizeof(user));
    user.uid = 7;
    for (uint32_t i = 0; i < ACCESS_GROUPS_MAX; i++)
        user.gids[user.gid_count++] = 1000 + i;
    access_identity_with_gid(&user, 1003, &id);
    cr_assert_eq(id.gids[0], 1003);
    cr_assert_eq(id.gid_count, ACCESS_GROUPS_MAX);
    for (uint32_t i = 1; i < id.gid_count; i++)
        cr_assert_neq(id.gids[i], 1003, "group 1003 twice");
    access_identity_with_gid(&user, 5, &id);
    cr_assert_eq(id.gids[0], 5);
    cr_assert_eq(id.gid_count, ACCESS_GROUPS_MAX);
    cr_assert_eq(id.gids[ACCESS_GROUPS_MAX - 1], 1000 + ACCESS_GROUPS_MAX - 2);
}
