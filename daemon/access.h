/*
 * Who may do what. The access file maps users and groups to roles, each role for every unit
 * or for the units named (docs/operations.md, "The access file"); every op declares the role
 * it needs (ops.c's read table, request.c's write table); a connection's identity comes from
 * the kernel (SO_PEERCRED) and the group database, never from what the client says.
 *
 * Pure: access_parse takes the file's text and a resolver for user and group names, and
 * access_resolve / access_decide / access_write_scope only look at their arguments. The
 * system-facing parts are apart: access_load (reads the file), access_system_resolver (the
 * user and group databases) and access_identity_of (getgrouplist).
 */
#ifndef BUDGET_ACCESS_H
#define BUDGET_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/limits.h"
#include "ledger.h"

/* The access file: at most this many bytes, rules (lines that grant), bytes in one line,
 * distinct units named in the whole file. */
#define ACCESS_FILE_BYTES_MAX (256u * 1024u)
#define ACCESS_RULES_MAX 4096u
#define ACCESS_LINE_BYTES_MAX 1024u
#define ACCESS_UNITS_MAX 256u
/* Groups of one identity that are looked at (its primary group and the first others). */
#define ACCESS_GROUPS_MAX 64u

/*
 * What an op needs. Every op in the op tables declares one; ACCESS_UNDECLARED (0, what a
 * row that forgot it holds) is refused as a bug, so a new op is never open by accident.
 * The roles from ACCESS_READER on are the roles of the access file.
 */
typedef enum {
    ACCESS_UNDECLARED = 0,
    ACCESS_ANYONE,   /* hello: every identity, known or not */
    ACCESS_READER,   /* reads and subscriptions; every role includes it */
    ACCESS_AUDITOR,  /* verify, checkpoints, export, backup */
    ACCESS_CLERK,    /* allocation.propose, avrop.request, withdraw (its own) */
    ACCESS_APPROVER, /* approve, reject */
    ACCESS_ADMIN,    /* frame.grant, frame.adjust */
} access_role;

#define ACCESS_ROLE_FIRST ACCESS_READER
#define ACCESS_ROLE_LAST ACCESS_ADMIN
#define ACCESS_ROLE_COUNT (ACCESS_ROLE_LAST - ACCESS_ROLE_FIRST + 1)

/* Who is calling: the peer's uid and the groups it is in. */
typedef struct {
    uint32_t uid;
    uint32_t gids[ACCESS_GROUPS_MAX];
    uint32_t gid_count;
} access_identity;

/* The rules of one access file (or of none: access_rules_open). Immutable once made. */
typedef struct access_rules access_rules;

/*
 * What one identity holds under one set of rules: for each role, whether it holds it for
 * every unit, and else for which units (bits index the rules' unit table). Valid only with
 * the rules it was resolved from.
 */
typedef struct {
    uint8_t all;  /* bit (role - ACCESS_ROLE_FIRST): held for every unit */
    uint8_t some; /* bit: held for at least one unit */
    uint64_t units[ACCESS_ROLE_COUNT][ACCESS_UNITS_MAX / 64];
} access_grants;

/* Names of users and groups to ids. Each returns 0 and the id, or -1 when there is none. */
typedef struct {
    int (*user)(void *ctx, const char *name, uint32_t *uid);
    int (*group)(void *ctx, const char *name, uint32_t *gid);
    void *ctx;
} access_resolver;

/* The user and group databases of the system (getpwnam_r, getgrnam_r). */
extern const access_resolver access_system_resolver;

/*
 * Parses an access file's text (`len` bytes; NUL bytes are refused). Names are resolved once,
 * here, with `res`. Returns 0 with *out set (free it with access_free), or -1 with `why`
 * saying what is wrong, with its line number, and *out NULL. Never partially applies.
 */
int access_parse(const char *text, size_t len, const access_resolver *res, access_rules **out,
                 char *why, size_t why_size);

/* Reads `path` (a regular file of at most ACCESS_FILE_BYTES_MAX bytes) and parses it with
 * the system resolver. 0, or -1 with `why` (naming the file). */
int access_load(const char *path, access_rules **out, char *why, size_t why_size);

/* The rules when no access file is given: every identity holds every role for every unit
 * (the socket's permissions are then the only gate; four-eyes still holds). NULL when out of
 * memory. */
access_rules *access_rules_open(void);

void access_free(access_rules *r);

/* True for access_rules_open's rules. */
bool access_is_open(const access_rules *r);
/* The number of rules (lines that grant something). */
size_t access_rule_count(const access_rules *r);

/* What `id` holds under `r`. O(rules x groups). */
void access_resolve(const access_rules *r, const access_identity *id, access_grants *out);

/*
 * access_decide's answer without its words: true when it would return 0. What a caller checks
 * first, so that the words of a refusal are made only for a refusal.
 */
bool access_allows(const access_rules *r, const access_grants *g, access_role need,
                   const char *unit);

/*
 * May an identity holding `g` (resolved under `r`) do something that needs `need`, for
 * `unit` (NULL when the op concerns no unit, or the unit is not known: the role held for
 * any unit is then enough)? Returns 0, or BUDGET_EFORBIDDEN with `why` filled: one line for
 * the client, starting with `op`, naming `who`, why the unit is concerned (`what`, from
 * access_write_scope, or NULL) and what `who` holds. An op that declares no role
 * (ACCESS_UNDECLARED) is refused to everyone with BUDGET_EINTERNAL.
 */
int access_decide(const access_rules *r, const access_grants *g, access_role need, const char *unit,
                  const char *what, const char *op, const char *who, char *why, size_t why_size);

/* The unit a write that concerns every unit names in its scope (year.close): not a unit's
 * name (it holds a space), so only a role held for every unit is enough for it. */
#define ACCESS_EVERY_UNIT "every unit"

/* A write concerns at most this many units (one that moves money between two units
 * concerns both; a budget adoption concerns the unit of each of its lines). */
#define ACCESS_SCOPE_UNITS_MAX BUDGET_ADOPT_LINES_MAX

/* The units a write concerns, each with a phrase for an error ("frame ks-2021 is held by
 * KS"). */
typedef struct {
    size_t count;
    bool words; /* the phrases are made, or left empty (access_write_refused's first look) */
    struct {
        char unit[BUDGET_UNIT_BYTES_MAX + 1];
        char what[200];
    } units[ACCESS_SCOPE_UNITS_MAX];
} access_scope;

/*
 * The units a write is done for, from the ledger state, by the scope of its type's row
 * (LEDGER_EVENT_TYPES): frame.grant the unit of the new frame; frame.adjust and
 * allocation.propose the unit that holds the frame; avrop.request the unit the allocation is
 * to; approve and reject the unit that holds the frame the target comes from. withdraw
 * concerns no unit (only the proposer may withdraw; the ledger checks); year.close concerns
 * every unit (ACCESS_EVERY_UNIT); frame.carry_over the unit that holds the frame carried from.
 * Fills `out`; its count is 0 when the write concerns no unit or what it names does not exist (the
 * ledger then says not_found). The caller checks the role for every unit of the set.
 */
void access_write_scope(const ledger *l, const ledger_cmd *cmd, access_scope *out);

/*
 * The first unit of `cmd`'s scope (access_write_scope) for which `g` does not hold `need`: true
 * with its index in *i and `out` filled as access_write_scope fills it, phrases and all; false
 * when `need` is held for every unit. The units are first found without their phrases, so a
 * write that passes formats nothing.
 */
bool access_write_refused(const access_rules *r, const access_grants *g, access_role need,
                          const ledger *l, const ledger_cmd *cmd, access_scope *out, size_t *i);

/*
 * Iterates what `g` holds, for hello: each call fills the next role held, whether it is
 * held for every unit, and else its units (pointers valid while `r` lives, at most
 * `units_max`; *units_count may be less than held when there are more). `*i` starts at 0.
 */
bool access_next_role(const access_rules *r, const access_grants *g, int *i, access_role *role,
                      bool *all_units, const char **units, size_t units_max, size_t *units_count);

/* "reader", "auditor", "clerk", "approver", "admin"; "anyone", "undeclared". */
const char *access_role_name(access_role role);

/*
 * The groups of a peer: `gid` (the peer's group from SO_PEERCRED) and, when `name` names a
 * user, the groups getgrouplist gives for it with `user_gid`, its group in the password
 * database (at most ACCESS_GROUPS_MAX in all). May block on the name service, as getpwuid_r
 * does.
 */
void access_identity_of(uint32_t uid, uint32_t gid, const char *name, uint32_t user_gid,
                        access_identity *out);

/* `user` (access_identity_of with gid = user_gid: what the databases say of a uid) with `gid`,
 * a peer's group from SO_PEERCRED, put first: the same groups access_identity_of gives for
 * that peer, without asking the databases again. */
void access_identity_with_gid(const access_identity *user, uint32_t gid, access_identity *out);

#endif
