/*
 * Who may do what, against a real budgetd, with clients as other uids (the suite runs as
 * root, as in CI, and connects as the uids of the access file below): an unknown uid gets
 * nothing but hello; each role may do exactly its ops (a table over every op and role); roles
 * limited to units; four-eyes; SIGHUP reloads the file and a broken file keeps the old rules;
 * the socket's group keeps other users out; limits on connections, idle connections and slow
 * frames; subscriptions end when a reload takes their role, and are limited per uid; socket
 * activation by systemd's protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e_util.h"

/* The identities of the access file: uids without a passwd entry, in the socket's group. */
enum {
    UID_ADMIN = 60001,
    UID_CLERK = 60002,
    UID_APPROVER = 60003,
    UID_AUDITOR = 60004,
    UID_READER = 60005,
    UID_UNKNOWN = 60006,
    UID_SON_CLERK = 60007,    /* clerk for SON only */
    UID_SON_APPROVER = 60008, /* approver for frames SON holds */
    UID_CLERK_APPROVER = 60009,
    UID_KFN_MEMBER = 60010, /* clerk for KFN through its group */
    GID_KFN = 60100,
    GID_OUTSIDE = 60200, /* not the socket's group */
};

static const char access_text[] = "# budgetd access file of the end-to-end suite\n"
                                  "user 60001 admin\n"
                                  "user 60002 clerk\n"
                                  "user 60003 approver\n"
                                  "user 60004 auditor\n"
                                  "user 60005 reader\n"
                                  "user 60007 clerk SON\n"
                                  "user 60008 approver SON\n"
                                  "user 60009 clerk\n"
                                  "user 60009 approver\n"
                                  "group 60100 clerk KFN\n";

static e2e_daemon bd;
static char conf_dir[64], conf_path[128];

/* The events start_with writes first: the units of the suite, registered by UID_ADMIN. */
#define UNIT_EVENTS 3

static e2e_identity as_uid(uint32_t uid)
{
    e2e_identity who = {uid, E2E_OTHER_GID, {0}, 0};
    return who;
}

static void write_access(const char *text)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.new", conf_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    cr_assert_geq(fd, 0, "cannot write %s: %s", tmp, strerror(errno));
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    cr_assert_eq(rename(tmp, conf_path), 0);
}

static void make_conf_dir(void)
{
    snprintf(conf_dir, sizeof(conf_dir), "/tmp/budgetd-access-XXXXXX");
    cr_assert_not_null(mkdtemp(conf_dir));
    snprintf(conf_path, sizeof(conf_path), "%s/access", conf_dir);
}

static void remove_conf_dir(void)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.new", conf_path);
    unlink(tmp);
    unlink(conf_path);
    rmdir(conf_dir);
}

/* Starts budgetd with the access file of the suite and `extra` arguments after it. */
static void start_with(const char *const *extra)
{
    const char *argv[20] = {"--config", conf_path};
    int n = 2;
    for (int i = 0; extra && extra[i] && n < 19; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    write_access(access_text);
    cr_assert_eq(e2e_daemon_start_with(&bd, argv), 0, "budgetd did not start");
    e2e_identity admin = as_uid(UID_ADMIN);
    e2e_register_units(&bd, &admin, "KS", "SON", "KFN", NULL);
}

static void setup(void)
{
    make_conf_dir();
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
    remove_conf_dir();
}

TestSuite(access, .init = setup, .fini = teardown, .timeout = 60);

static void stop_cleanly(void)
{
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not stop");
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "budgetd exited with 0x%x", status);
}

/* True when the daemon's log holds `text` within `timeout_ms`. */
static bool log_has(const char *text, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        FILE *f = fopen(bd.log, "r");
        if (f) {
            static char buf[1 << 18];
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            fclose(f);
            buf[n] = '\0';
            if (strstr(buf, text))
                return true;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* ---- requests as someone ------------------------------------------------------------------- */

/* What one request answered. */
typedef struct {
    bool ok;
    char code[32];
    char message[BUDGET_TEXT_BYTES_MAX + 1];
} answer;

static void call(budget_client *c, const char *op, const e2e_buf *args, answer *out)
{
    budget_response r;
    e2e_call(c, op, args, &r);
    out->ok = r.ok;
    snprintf(out->code, sizeof(out->code), "%s", r.ok ? "" : r.code);
    snprintf(out->message, sizeof(out->message), "%s", r.ok ? "" : r.message);
    budget_response_free(&r);
}

/* One request on a connection of its own as `uid`. */
static void call_as(uint32_t uid, const char *op, const e2e_buf *args, answer *out)
{
    e2e_identity who = as_uid(uid);
    budget_client *c = e2e_client_as(&bd, &who);
    call(c, op, args, out);
    budget_client_close(c);
}

static void expect_ok(uint32_t uid, const char *op, const e2e_buf *args)
{
    answer a;
    call_as(uid, op, args, &a);
    e2e_assert(a.ok, "uid %u: %s refused: %s: %s", uid, op, a.code, a.message);
}

static void expect_code(uint32_t uid, const char *op, const e2e_buf *args, const char *code,
                        answer *out)
{
    call_as(uid, op, args, out);
    e2e_assert(!out->ok && strcmp(out->code, code) == 0, "uid %u: %s: got %s (%s), expected %s",
               uid, op, out->ok ? "ok" : out->code, out->message, code);
}

static void args_grant(e2e_buf *b, const char *id, const char *unit)
{
    e2e_buf_clear(b);
    char reference[96];
    snprintf(reference, sizeof(reference), "KS 2021-08-24 § %s", id); /* not a duplicate */
    msgpack_pack_map(&b->pk, 6 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "year", 2021);
    e2e_kv_int(b, "amount", 1000000000);
    e2e_kv_str(b, "title", "Utökat trygghetsarbete");
    e2e_kv_decision(b);
    e2e_kv_str(b, "reference", reference);
}

static void args_adjust(e2e_buf *b, const char *id, const char *frame)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 4 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "frame", frame);
    e2e_kv_int(b, "delta", 100);
    e2e_kv_str(b, "reason", "Tilläggsanslag");
    e2e_kv_decision(b);
}

static void args_propose(e2e_buf *b, const char *id, const char *frame, const char *unit)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 5);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "frame", frame);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "amount", 10000);
    e2e_kv_str(b, "purpose", "Områdesarbete");
}

static void args_avrop(e2e_buf *b, const char *id, const char *allocation)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 3);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "allocation", allocation);
    e2e_kv_int(b, "amount", 100);
}

/* A reduction of `allocation`, or a reversal of `avrop` (op "avrop.reverse"), by 1 öre. */
static void args_correction(e2e_buf *b, const char *id, const char *key, const char *what)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 4);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, key, what);
    e2e_kv_int(b, "amount", 1);
    e2e_kv_str(b, "reason", "Rättelse");
}

static void args_withdraw(e2e_buf *b, const char *id, const char *target)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 2);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "target", target);
}

/* The args of approve and reject: with the decision. */
static void args_target(e2e_buf *b, const char *id, const char *target)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 2 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "target", target);
    e2e_kv_decision(b);
}

static uint64_t head_now(void)
{
    budget_client *c = e2e_client(&bd);
    uint64_t h = e2e_head(c);
    budget_client_close(c);
    return h;
}

/* ---- unknown identities -------------------------------------------------------------------- */

Test(access, an_unknown_uid_gets_hello_and_nothing_else)
{
    start_with(NULL);
    e2e_identity who = as_uid(UID_UNKNOWN);
    budget_client *c = e2e_client_as(&bd, &who);
    budget_response r;
    e2e_buf b;
    answer a;

    /* hello tells it who it is, and that it has no role. */
    e2e_call(c, "hello", NULL, &r);
    e2e_assert(r.ok, "hello refused: %s", r.code);
    const msgpack_object *actor = budget_map_get(&r.result, "actor");
    e2e_assert_int(e2e_map_uint(actor, "uid"), UID_UNKNOWN, "hello's actor uid");
    const msgpack_object *roles = budget_map_get(&r.result, "roles");
    e2e_assert(roles && roles->type == MSGPACK_OBJECT_ARRAY && roles->via.array.size == 0,
               "an unknown uid is shown roles");
    budget_response_free(&r);

    e2e_buf_init(&b);
    call(c, "balances", NULL, &a);
    e2e_assert_str(a.code, "forbidden", "balances");
    e2e_assert_str(a.message,
                   "balances needs the reader role; uid 60006 has no role in budgetd's "
                   "access file",
                   "the refusal");
    args_grant(&b, "f-unknown", "KS");
    call(c, "frame.grant", &b, &a);
    e2e_assert_str(a.code, "forbidden", "frame.grant");
    /* The connection stays usable: refusals are answers. */
    e2e_assert_int(e2e_head(c), UNIT_EVENTS, "head");
    e2e_buf_destroy(&b);
    budget_client_close(c);
    e2e_assert(log_has("refused: balances needs the reader role; uid 60006", 2000),
               "the refusal is not in the log");
    stop_cleanly();
}

/* ---- each role, each op -------------------------------------------------------------------- */

typedef enum { R_UNKNOWN, R_READER, R_AUDITOR, R_CLERK, R_APPROVER, R_ADMIN, R_COUNT } role_index;

static const struct {
    const char *name;
    uint32_t uid;
} table_roles[R_COUNT] = {
    [R_UNKNOWN] = {"unknown", UID_UNKNOWN},    [R_READER] = {"reader", UID_READER},
    [R_AUDITOR] = {"auditor", UID_AUDITOR},    [R_CLERK] = {"clerk", UID_CLERK},
    [R_APPROVER] = {"approver", UID_APPROVER}, [R_ADMIN] = {"admin", UID_ADMIN},
};

#define BIT(r) (1u << (r))
#define READERS (BIT(R_READER) | BIT(R_AUDITOR) | BIT(R_CLERK) | BIT(R_APPROVER) | BIT(R_ADMIN))

/* Every op of docs/protocol.md and the roles that may do it. */
static const struct {
    const char *op;
    unsigned allowed;
} table_ops[] = {
    {"hello", READERS | BIT(R_UNKNOWN)},
    {"balances", READERS},
    {"events", READERS},
    {"stats", READERS},
    {"subscribe", READERS},
    {"verify", BIT(R_AUDITOR)},
    {"checkpoint", BIT(R_AUDITOR)},
    {"backup", BIT(R_AUDITOR)},
    {"frame.grant", BIT(R_ADMIN)},
    {"frame.adjust", BIT(R_ADMIN)},
    {"allocation.propose", BIT(R_CLERK)},
    {"avrop.request", BIT(R_CLERK)},
    {"allocation.reduce", BIT(R_CLERK)},
    {"avrop.reverse", BIT(R_CLERK)},
    {"withdraw", BIT(R_CLERK)},
    {"approve", BIT(R_APPROVER)},
    {"reject", BIT(R_APPROVER)},
};

/* Args under which `op` succeeds for a role that holds it; ids are the role's own. */
static void table_args(e2e_buf *b, const char *op, const char *role)
{
    char id[64], target[64];
    snprintf(id, sizeof(id), "%s-%s", op, role);
    e2e_buf_clear(b);
    if (strcmp(op, "subscribe") == 0) {
        msgpack_pack_map(&b->pk, 1);
        e2e_kv_uint(b, "after", 0);
    } else if (strcmp(op, "frame.grant") == 0) {
        args_grant(b, id, "KS");
    } else if (strcmp(op, "frame.adjust") == 0) {
        args_adjust(b, id, "F");
    } else if (strcmp(op, "allocation.propose") == 0) {
        args_propose(b, id, "F", "SON");
    } else if (strcmp(op, "avrop.request") == 0) {
        args_avrop(b, id, "A");
    } else if (strcmp(op, "allocation.reduce") == 0) {
        args_correction(b, id, "allocation", "A");
    } else if (strcmp(op, "avrop.reverse") == 0) {
        args_correction(b, id, "avrop", "V");
    } else if (strcmp(op, "approve") == 0 || strcmp(op, "reject") == 0 ||
               strcmp(op, "withdraw") == 0) {
        /* Pending allocations the clerk proposed, one per op and role (table_state). */
        snprintf(target, sizeof(target), "pending-%s-%s", op, role);
        if (strcmp(op, "withdraw") == 0)
            args_withdraw(b, id, target);
        else
            args_target(b, id, target);
    } else {
        msgpack_pack_map(&b->pk, 0);
    }
}

/* Frame F (KS), allocation A from it to SON (approved), avrop V on A (approved), and pending
 * allocations for every decision and withdrawal of the table, proposed by the clerk. */
static void table_state(void)
{
    e2e_buf b;
    e2e_buf_init(&b);
    args_grant(&b, "F", "KS");
    expect_ok(UID_ADMIN, "frame.grant", &b);
    args_propose(&b, "A", "F", "SON");
    expect_ok(UID_CLERK, "allocation.propose", &b);
    args_target(&b, "A-beslut", "A");
    expect_ok(UID_APPROVER, "approve", &b);
    args_avrop(&b, "V", "A");
    expect_ok(UID_CLERK, "avrop.request", &b);
    args_target(&b, "V-beslut", "V");
    expect_ok(UID_APPROVER, "approve", &b);
    static const char *const decided[] = {"approve", "reject", "withdraw"};
    for (int r = 0; r < R_COUNT; r++)
        for (int d = 0; d < 3; d++) {
            char id[64];
            snprintf(id, sizeof(id), "pending-%s-%s", decided[d], table_roles[r].name);
            args_propose(&b, id, "F", "SON");
            expect_ok(UID_CLERK, "allocation.propose", &b);
        }
    e2e_buf_destroy(&b);
}

Test(access, each_role_may_do_exactly_its_ops)
{
    start_with(NULL);
    table_state();
    e2e_buf b;
    e2e_buf_init(&b);
    int checked = 0;
    for (int r = 0; r < R_COUNT; r++) {
        for (size_t o = 0; o < sizeof(table_ops) / sizeof(table_ops[0]); o++) {
            const char *op = table_ops[o].op;
            bool allowed = (table_ops[o].allowed & BIT(r)) != 0;
            uint64_t before = head_now();
            answer a;
            table_args(&b, op, table_roles[r].name);
            call_as(table_roles[r].uid, op, &b, &a);
            if (allowed) {
                e2e_assert(a.ok, "%s may %s, but was answered %s: %s", table_roles[r].name, op,
                           a.code, a.message);
            } else {
                e2e_assert(!a.ok && strcmp(a.code, "forbidden") == 0,
                           "%s may not %s, but was answered %s %s", table_roles[r].name, op,
                           a.ok ? "ok" : a.code, a.message);
                /* A refused write leaves no event. */
                e2e_assert_int(head_now(), before, "head after a refusal");
            }
            checked++;
        }
    }
    e2e_assert_int(checked, R_COUNT * 17, "requests checked");
    e2e_buf_destroy(&b);
    stop_cleanly();
}

/* ---- units --------------------------------------------------------------------------------- */

/* A correction moves money between the unit an allocation is to and the unit that holds its
 * frame: asking for it and deciding it need the role for both. */
Test(access, corrections_need_the_role_for_the_allocations_unit_and_the_frames)
{
    start_with(NULL);
    e2e_buf b;
    answer a;
    e2e_buf_init(&b);
    args_grant(&b, "KS-F", "KS");
    expect_ok(UID_ADMIN, "frame.grant", &b);
    args_grant(&b, "SON-F", "SON");
    expect_ok(UID_ADMIN, "frame.grant", &b);
    const char *const made[][3] = {{"ks-to-son", "KS-F", "SON"}, {"son-to-son", "SON-F", "SON"}};
    for (int i = 0; i < 2; i++) {
        char id[64];
        args_propose(&b, made[i][0], made[i][1], made[i][2]);
        expect_ok(UID_CLERK, "allocation.propose", &b);
        snprintf(id, sizeof(id), "%s-ok", made[i][0]);
        args_target(&b, id, made[i][0]);
        expect_ok(UID_APPROVER, "approve", &b);
        snprintf(id, sizeof(id), "%s-v", made[i][0]);
        args_avrop(&b, id, made[i][0]);
        expect_ok(UID_SON_CLERK, "avrop.request", &b);
    }
    args_target(&b, "ks-v-ok", "ks-to-son-v");
    expect_ok(UID_APPROVER, "approve", &b);
    args_target(&b, "son-v-ok", "son-to-son-v");
    expect_ok(UID_SON_APPROVER, "approve", &b);

    /* A clerk for SON alone: not on KS's frame, for either kind of correction. */
    uint64_t before = head_now();
    args_correction(&b, "r-son", "allocation", "ks-to-son");
    expect_code(UID_SON_CLERK, "allocation.reduce", &b, "forbidden", &a);
    e2e_assert_str(a.message,
                   "allocation.reduce needs the clerk role for KS (allocation ks-to-son comes "
                   "from frame KS-F, held by KS); uid 60007 holds reader, clerk for SON",
                   "the refusal");
    args_correction(&b, "x-son", "avrop", "ks-to-son-v");
    expect_code(UID_SON_CLERK, "avrop.reverse", &b, "forbidden", &a);
    e2e_assert(strstr(a.message, "clerk role for KS") != NULL, "the refusal: %s", a.message);
    e2e_assert_int(head_now(), before, "head after refused corrections");
    /* Within SON's own frame it may. */
    args_correction(&b, "r-son-own", "allocation", "son-to-son");
    expect_ok(UID_SON_CLERK, "allocation.reduce", &b);
    args_correction(&b, "x-son-own", "avrop", "son-to-son-v");
    expect_ok(UID_SON_CLERK, "avrop.reverse", &b);

    /* A clerk for every unit asks; an approver for SON alone may not decide it, one for
     * every unit may. */
    args_correction(&b, "r-ks", "allocation", "ks-to-son");
    expect_ok(UID_CLERK, "allocation.reduce", &b);
    args_correction(&b, "x-ks", "avrop", "ks-to-son-v");
    expect_ok(UID_CLERK, "avrop.reverse", &b);
    args_target(&b, "r-ks-ok", "r-ks");
    expect_code(UID_SON_APPROVER, "approve", &b, "forbidden", &a);
    e2e_assert(strstr(a.message, "approver role for KS") != NULL, "the refusal: %s", a.message);
    expect_ok(UID_APPROVER, "approve", &b);
    args_target(&b, "x-ks-ok", "x-ks");
    expect_code(UID_SON_APPROVER, "reject", &b, "forbidden", &a);
    expect_ok(UID_APPROVER, "reject", &b);
    /* And SON's approver decides SON's own. */
    args_target(&b, "r-son-own-ok", "r-son-own");
    expect_ok(UID_SON_APPROVER, "approve", &b);
    args_target(&b, "x-son-own-ok", "x-son-own");
    expect_ok(UID_SON_APPROVER, "approve", &b);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

Test(access, roles_limited_to_units)
{
    start_with(NULL);
    e2e_buf b;
    answer a;
    e2e_buf_init(&b);
    /* KS holds KS-F; SON holds SON-F. Allocations: KS-F to SON and to KFN (approved), SON-F to
     * SON (approved), and pending ones from each frame. */
    args_grant(&b, "KS-F", "KS");
    expect_ok(UID_ADMIN, "frame.grant", &b);
    args_grant(&b, "SON-F", "SON");
    expect_ok(UID_ADMIN, "frame.grant", &b);
    const char *const made[][3] = {
        {"ks-to-son", "KS-F", "SON"}, {"ks-to-kfn", "KS-F", "KFN"}, {"son-to-son", "SON-F", "SON"}};
    for (int i = 0; i < 3; i++) {
        char decision[64];
        args_propose(&b, made[i][0], made[i][1], made[i][2]);
        expect_ok(UID_CLERK, "allocation.propose", &b);
        snprintf(decision, sizeof(decision), "%s-ok", made[i][0]);
        args_target(&b, decision, made[i][0]);
        expect_ok(UID_APPROVER, "approve", &b);
    }

    /* A SON clerk calls off what is allocated to SON, from any frame, and nothing else. */
    args_avrop(&b, "v-son-1", "ks-to-son");
    expect_ok(UID_SON_CLERK, "avrop.request", &b);
    args_avrop(&b, "v-son-2", "son-to-son");
    expect_ok(UID_SON_CLERK, "avrop.request", &b);
    uint64_t before = head_now();
    args_avrop(&b, "v-son-3", "ks-to-kfn");
    expect_code(UID_SON_CLERK, "avrop.request", &b, "forbidden", &a);
    e2e_assert_str(a.message,
                   "avrop.request needs the clerk role for KFN (allocation ks-to-kfn is to KFN); "
                   "uid 60007 holds reader, clerk for SON",
                   "the refusal");
    e2e_assert_int(head_now(), before, "head after a refused avrop");
    /* It proposes out of frames SON holds only. */
    args_propose(&b, "p-son-1", "SON-F", "SON");
    expect_ok(UID_SON_CLERK, "allocation.propose", &b);
    args_propose(&b, "p-son-2", "KS-F", "SON");
    expect_code(UID_SON_CLERK, "allocation.propose", &b, "forbidden", &a);
    e2e_assert_str(a.message,
                   "allocation.propose needs the clerk role for KS (frame KS-F is held by KS); "
                   "uid 60007 holds reader, clerk for SON",
                   "the refusal");
    /* What does not exist is not_found, not forbidden: the role for some unit is enough. */
    args_avrop(&b, "v-son-4", "no-such-allocation");
    expect_code(UID_SON_CLERK, "avrop.request", &b, "not_found", &a);

    /* A clerk for KFN through its group. */
    e2e_identity kfn = {UID_KFN_MEMBER, GID_KFN, {E2E_OTHER_GID}, 1};
    budget_client *c = e2e_client_as(&bd, &kfn);
    args_avrop(&b, "v-kfn-1", "ks-to-kfn");
    call(c, "avrop.request", &b, &a);
    e2e_assert(a.ok, "the KFN group's clerk was refused: %s", a.message);
    args_avrop(&b, "v-kfn-2", "ks-to-son");
    call(c, "avrop.request", &b, &a);
    e2e_assert_str(a.code, "forbidden", "the KFN group's clerk on SON's allocation");
    budget_client_close(c);

    /* An approver for SON decides for frames SON holds, not for KS's. */
    args_target(&b, "d-1", "p-son-1");
    expect_ok(UID_SON_APPROVER, "approve", &b);
    args_target(&b, "d-2", "v-son-2"); /* an avrop on SON-F */
    expect_ok(UID_SON_APPROVER, "reject", &b);
    args_target(&b, "d-3", "v-son-1"); /* an avrop on KS-F, to SON */
    expect_code(UID_SON_APPROVER, "approve", &b, "forbidden", &a);
    e2e_assert_str(a.message,
                   "approve needs the approver role for KS (avrop v-son-1 draws on frame KS-F, "
                   "held by KS); uid 60008 holds reader, approver for SON",
                   "the refusal");
    /* The approver for every unit does. */
    expect_ok(UID_APPROVER, "approve", &b);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

/* ---- four-eyes ----------------------------------------------------------------------------- */

/* The events' actors, as a list of uids by seq (1-based), from `events`. */
static void actors(uint32_t *out, size_t n)
{
    e2e_identity reader = as_uid(UID_READER);
    budget_client *c = e2e_client_as(&bd, &reader);
    budget_response r;
    e2e_buf args;
    e2e_buf_init(&args);
    msgpack_pack_map(&args.pk, 1);
    e2e_kv_uint(&args, "after", UNIT_EVENTS); /* after the registrations */
    e2e_call(c, "events", &args, &r);
    e2e_buf_destroy(&args);
    e2e_assert(r.ok, "events refused: %s", r.code);
    const msgpack_object *events = budget_map_get(&r.result, "events");
    e2e_assert(events && events->via.array.size == n, "events: %u, expected %zu",
               events ? events->via.array.size : 0, n);
    for (size_t i = 0; i < n; i++)
        out[i] = (uint32_t)e2e_map_uint(budget_map_get(&events->via.array.ptr[i], "actor"), "uid");
    budget_response_free(&r);
    budget_client_close(c);
}

Test(access, nobody_decides_their_own_request)
{
    start_with(NULL);
    e2e_buf b;
    answer a;
    e2e_buf_init(&b);
    args_grant(&b, "F", "KS");
    expect_ok(UID_ADMIN, "frame.grant", &b);
    /* 60009 is clerk and approver for every unit: roles never lift four-eyes. */
    args_propose(&b, "A", "F", "SON");
    expect_ok(UID_CLERK_APPROVER, "allocation.propose", &b);
    args_target(&b, "A-ok", "A");
    expect_code(UID_CLERK_APPROVER, "approve", &b, "forbidden", &a);
    e2e_assert_str(a.message,
                   "allocation A was proposed by uid 60009; it must be approved by "
                   "another identity (four-eyes)",
                   "the refusal");
    expect_code(UID_CLERK_APPROVER, "reject", &b, "forbidden", &a);
    expect_ok(UID_APPROVER, "approve", &b);

    args_avrop(&b, "V", "A");
    expect_ok(UID_CLERK_APPROVER, "avrop.request", &b);
    args_target(&b, "V-ok", "V");
    expect_code(UID_CLERK_APPROVER, "approve", &b, "forbidden", &a);
    e2e_assert_str(a.message,
                   "avrop V was requested by uid 60009; it must be approved by "
                   "another identity (four-eyes)",
                   "the refusal");
    expect_ok(UID_APPROVER, "approve", &b);

    /* 60009 decides what another proposed. */
    args_propose(&b, "B", "F", "KFN");
    expect_ok(UID_CLERK, "allocation.propose", &b);
    args_target(&b, "B-no", "B");
    expect_ok(UID_CLERK_APPROVER, "reject", &b);

    /* Both identities are in the events. */
    uint32_t uids[7];
    actors(uids, 7);
    const uint32_t expected[7] = {UID_ADMIN,          UID_CLERK_APPROVER, UID_APPROVER,
                                  UID_CLERK_APPROVER, UID_APPROVER,       UID_CLERK,
                                  UID_CLERK_APPROVER};
    for (int i = 0; i < 7; i++)
        e2e_assert_int(uids[i], expected[i], "actor of an event");
    e2e_buf_destroy(&b);
    stop_cleanly();
}

Test(access, without_an_access_file_four_eyes_still_holds)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
    e2e_assert(log_has("no access file (--config): every local user", 2000),
               "no warning about the open access");
    budget_client *c = e2e_client(&bd);
    budget_response r;
    e2e_buf b;
    e2e_write_result w;

    /* Root holds every role for every unit. */
    e2e_call(c, "hello", NULL, &r);
    const msgpack_object *roles = budget_map_get(&r.result, "roles");
    e2e_assert(roles && roles->type == MSGPACK_OBJECT_ARRAY && roles->via.array.size == 5,
               "hello's roles");
    for (uint32_t i = 0; i < 5; i++) {
        const msgpack_object *units = budget_map_get(&roles->via.array.ptr[i], "units");
        e2e_assert(units && units->via.array.size == 1 &&
                       units->via.array.ptr[0].via.str.size == 1 &&
                       units->via.array.ptr[0].via.str.ptr[0] == '*',
                   "a role not held for every unit");
    }
    budget_response_free(&r);

    e2e_buf_init(&b);
    args_grant(&b, "F", "KS");
    e2e_write_ok(c, "frame.grant", &b);
    args_propose(&b, "A", "F", "SON");
    e2e_write_ok(c, "allocation.propose", &b);
    args_target(&b, "A-ok", "A");
    e2e_write(c, "approve", &b, &w);
    e2e_assert(!w.ok && strcmp(w.code, "forbidden") == 0, "root approved its own proposal");
    budget_client *other = e2e_client_as(&bd, &e2e_other);
    e2e_write_ok(other, "approve", &b);
    budget_client_close(other);
    e2e_buf_destroy(&b);
    budget_client_close(c);
    stop_cleanly();
}

/* ---- SIGHUP -------------------------------------------------------------------------------- */

Test(access, sighup_reloads_and_a_broken_file_keeps_the_old_rules)
{
    start_with(NULL);
    e2e_identity reader = as_uid(UID_READER);
    budget_client *c = e2e_client_as(&bd, &reader);
    e2e_buf b;
    answer a;
    e2e_buf_init(&b);

    args_grant(&b, "F1", "KS");
    call(c, "frame.grant", &b, &a);
    e2e_assert_str(a.code, "forbidden", "a reader's grant");

    /* 60005 becomes admin; the connection it has stays open and holds the new role. */
    char text[sizeof(access_text) + 64];
    snprintf(text, sizeof(text), "%suser 60005 admin\n", access_text);
    write_access(text);
    kill(bd.pid, SIGHUP);
    e2e_assert(log_has("SIGHUP: reloaded", 5000), "no reload in the log");
    call(c, "frame.grant", &b, &a);
    e2e_assert(a.ok, "the grant after the reload was refused: %s", a.message);

    /* A broken file: the rules read before stay, and the log says why. */
    snprintf(text, sizeof(text), "%suser 60005 admin\nuser 60005 emperor\n", access_text);
    write_access(text);
    kill(bd.pid, SIGHUP);
    e2e_assert(
        log_has("the access file was not reloaded; the rules read before stay in force", 5000),
        "no refused reload in the log");
    e2e_assert(log_has("line 13: emperor is not a role", 100), "the log does not say why");
    args_grant(&b, "F2", "KS");
    call(c, "frame.grant", &b, &a);
    e2e_assert(a.ok, "the old rules were not kept: %s", a.message);
    /* And a new connection is judged by them too. */
    args_grant(&b, "F3", "KS");
    expect_ok(UID_READER, "frame.grant", &b);

    /* Taking the role away works the same way. */
    write_access(access_text);
    kill(bd.pid, SIGHUP);
    for (int i = 0; i < 250; i++) {
        args_grant(&b, "F4", "KS");
        call(c, "frame.grant", &b, &a);
        if (!a.ok)
            break;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    e2e_assert_str(a.code, "forbidden", "a grant after the role was taken away");
    e2e_buf_destroy(&b);
    budget_client_close(c);
    stop_cleanly();
}

Test(access, a_broken_access_file_stops_the_start)
{
    write_access("user 60001 admin\nuser 60002 clerk SON KFN S&N\n");
    const char *argv[] = {"--config", conf_path, NULL};
    /* The daemon refuses to start: e2e reports it, the test checks why. */
    cr_assert_neq(e2e_daemon_start_with(&bd, argv), 0, "budgetd started on a broken file");
    e2e_assert(log_has("line 2: S&N is not a unit", 100), "the log does not say why");
}

/* ---- the socket ---------------------------------------------------------------------------- */

Test(access, the_socket_is_open_to_its_group_only)
{
    start_with(NULL);
    /* Made by budgetd in a folder it makes: mode 0750, the socket 0660, both in the group. */
    stop_cleanly();
    snprintf(bd.socket, sizeof(bd.socket), "%s/run/budgetd.sock", bd.dir);
    const char *argv[] = {"--config", conf_path, NULL};
    cr_assert_eq(e2e_daemon_restart_with(&bd, argv), 0, "budgetd did not start");
    struct stat st;
    char run[160];
    snprintf(run, sizeof(run), "%s/run", bd.dir);
    e2e_assert(stat(run, &st) == 0, "no folder %s", run);
    e2e_assert_int(st.st_mode & 07777, 0750, "mode of the socket's folder");
    e2e_assert_int(st.st_gid, E2E_OTHER_GID, "group of the socket's folder");
    e2e_assert(stat(bd.socket, &st) == 0 && S_ISSOCK(st.st_mode), "no socket");
    e2e_assert_int(st.st_mode & 07777, 0660, "mode of the socket");
    e2e_assert_int(st.st_gid, E2E_OTHER_GID, "group of the socket");

    /* A uid in the access file, but not in the socket's group, cannot even connect. */
    e2e_identity outsider = {UID_ADMIN, GID_OUTSIDE, {0}, 0};
    budget_client *c = NULL;
    int rc = e2e_client_connect_as(bd.socket, &outsider, &c);
    e2e_assert_int(rc, -EACCES, "connect outside the socket's group");
    /* In the group, it connects. */
    e2e_identity member = {UID_ADMIN, GID_OUTSIDE, {E2E_OTHER_GID}, 1};
    c = e2e_client_as(&bd, &member);
    e2e_assert_int(e2e_head(c), UNIT_EVENTS, "head");
    budget_client_close(c);
    stop_cleanly();
}

/* A listening socket made here and passed to budgetd as systemd does (LISTEN_FDS). */
Test(access, socket_activation_takes_the_socket_systemd_passes)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    stop_cleanly();
    /* The daemon's socket path is now ours to make. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", bd.socket);
    cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    cr_assert_eq(listen(fd, 16), 0);

    int log_fd = open(bd.log, O_WRONLY | O_APPEND | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        char pid_text[24];
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        dup2(fd, 3); /* dup2 clears FD_CLOEXEC on the copy */
        snprintf(pid_text, sizeof(pid_text), "%d", (int)getpid());
        setenv("LISTEN_PID", pid_text, 1);
        setenv("LISTEN_FDS", "1", 1);
        execl(BUDGETD_PATH, BUDGETD_PATH, "--data", bd.data, "--socket", "/nonexistent/x.sock",
              (char *)NULL);
        _exit(127);
    }
    close(log_fd);
    close(fd);
    cr_assert_gt(pid, 0);
    bd.pid = pid;
    /* It answers on the socket it was given, not on --socket. */
    budget_client *c = NULL;
    for (int i = 0; i < 500 && budget_client_connect(bd.socket, &c) != 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    e2e_assert(c != NULL, "budgetd does not answer on the socket it was passed");
    e2e_assert_int(e2e_head(c), 0, "head");
    budget_client_close(c);
    /* Stopped, it leaves the socket to whoever made it. */
    stop_cleanly();
    struct stat st;
    e2e_assert(stat(bd.socket, &st) == 0 && S_ISSOCK(st.st_mode),
               "budgetd removed the socket systemd made");
}

/* ---- limits -------------------------------------------------------------------------------- */

/* Reads the refusal a connection gets, then its close. */
static void expect_refused(int fd, const char *code, const char *message_part)
{
    msgpack_unpacked u;
    e2e_envelope env;
    e2e_assert(fd >= 0, "connect failed: %s", strerror(-fd));
    int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u);
    e2e_assert_int(rc, E2E_FRAME, "the refusal's frame");
    e2e_assert(e2e_envelope_read(&u.data, &env) && !env.ok && env.id == 0,
               "not an error frame with id 0");
    e2e_assert_str(env.code, code, "code of the refusal");
    const msgpack_object *error = budget_map_get(&u.data, "error");
    char message[300];
    budget_map_str(error, "message", message, sizeof(message));
    e2e_assert(strstr(message, message_part) != NULL, "message \"%s\" lacks \"%s\"", message,
               message_part);
    msgpack_unpacked_destroy(&u);
    e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS), "refused, but not closed");
    close(fd);
}

/* A hello on a raw connection: true when it is answered ok. */
static bool raw_hello(int fd)
{
    e2e_buf b;
    msgpack_unpacked u;
    e2e_envelope env;
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 7);
    e2e_kv_str(&b, "op", "hello");
    e2e_frame_end(&b);
    bool ok = e2e_raw_send(fd, b.sb.data, b.sb.size) == 0 &&
              e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME;
    if (ok) {
        ok = e2e_envelope_read(&u.data, &env) && env.ok && env.id == 7;
        msgpack_unpacked_destroy(&u);
    }
    e2e_buf_destroy(&b);
    return ok;
}

Test(access, connections_are_limited_in_all_and_per_uid)
{
    const char *extra[] = {"--connections", "5", "--connections-per-uid", "3", NULL};
    start_with(extra);
    e2e_identity a = as_uid(UID_READER), b = as_uid(UID_CLERK), c = as_uid(UID_ADMIN);
    int fds[8], n = 0;
    for (int i = 0; i < 3; i++) {
        fds[n] = e2e_raw_connect_as(bd.socket, &a);
        e2e_assert(raw_hello(fds[n]), "connection %d of uid %u not served", i + 1, a.uid);
        n++;
    }
    /* The fourth of one uid is refused; another uid still gets in. */
    expect_refused(e2e_raw_connect_as(bd.socket, &a), "unavailable",
                   "too many connections from uid 60005: at most 3 at once");
    e2e_assert(log_has("uid 60005 refused: too many connections from uid 60005", 2000),
               "no log line for the refusal");
    for (int i = 0; i < 2; i++) {
        fds[n] = e2e_raw_connect_as(bd.socket, &b);
        e2e_assert(raw_hello(fds[n]), "connection of uid %u not served", b.uid);
        n++;
    }
    /* Five open: the sixth is refused whoever it is. */
    expect_refused(e2e_raw_connect_as(bd.socket, &c), "unavailable",
                   "too many connections: budgetd serves at most 5 at once");
    /* One closes: there is room again. */
    close(fds[--n]);
    int again = -1;
    for (int i = 0; i < 100 && again < 0; i++) {
        int fd = e2e_raw_connect_as(bd.socket, &c);
        if (raw_hello(fd)) {
            again = fd;
            break;
        }
        close(fd);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    e2e_assert(again >= 0, "no room after a connection closed");
    close(again);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    stop_cleanly();
}

Test(access, a_slow_frame_is_cut_off_while_others_are_served)
{
    const char *extra[] = {"--frame-timeout", "2", NULL};
    start_with(extra);
    e2e_identity reader = as_uid(UID_READER);
    int slow = e2e_raw_connect_as(bd.socket, &reader);
    int fast = e2e_raw_connect_as(bd.socket, &reader);
    e2e_assert(slow >= 0 && fast >= 0, "connect");
    e2e_buf b;
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 1);
    e2e_kv_str(&b, "op", "hello");
    e2e_frame_end(&b);

    /* One byte a second on `slow`; meanwhile `fast` is answered, every time. */
    int served = 0;
    bool closed = false;
    size_t sent = 0;
    for (int second = 0; second < 8 && !closed; second++) {
        if (sent < b.sb.size - 1 && e2e_raw_send(slow, b.sb.data + sent, 1) == 0)
            sent++;
        for (int i = 0; i < 5; i++) {
            e2e_assert(raw_hello(fast), "the fast client was not served");
            served++;
        }
        struct pollfd p = {slow, POLLIN, 0};
        closed = poll(&p, 1, 1000) == 1;
    }
    e2e_assert(closed, "the slow client was not cut off after %zu bytes", sent);
    e2e_assert(sent >= 2 && sent <= 5, "cut off after %zu bytes, one a second, with a 2 s deadline",
               sent);
    expect_refused(slow, "too_large", "a frame must arrive whole within 2000 ms of its first byte");
    e2e_assert(log_has("bytes of a frame in", 1000), "no log line for the cut");
    e2e_assert(served >= 10, "the fast client was served %d times", served);
    e2e_assert(raw_hello(fast), "the fast client was not served after the cut");
    close(fast);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

Test(access, idle_connections_are_closed_but_subscribers_are_not)
{
    const char *extra[] = {"--idle-timeout", "3", NULL};
    start_with(extra);
    e2e_identity reader = as_uid(UID_READER);
    int idle = e2e_raw_connect_as(bd.socket, &reader);
    int busy = e2e_raw_connect_as(bd.socket, &reader);
    int sub = e2e_raw_connect_as(bd.socket, &reader);
    e2e_assert(idle >= 0 && busy >= 0 && sub >= 0, "connect");
    e2e_assert(raw_hello(idle), "hello");

    /* A subscriber: idle on its side, but waiting for events. */
    e2e_buf b;
    msgpack_unpacked u;
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 5);
    e2e_kv_str(&b, "op", "subscribe");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 0);
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(sub, b.sb.data, b.sb.size) == 0, "send subscribe");
    e2e_assert(e2e_raw_recv(sub, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME, "subscribe answer");
    msgpack_unpacked_destroy(&u);

    /* `busy` asks something every 200 ms until `idle`, which sends nothing, is closed (3 s
     * and up to one sweep, 750 ms); `sub` sends nothing either. */
    for (int64_t deadline = e2e_now_ms() + 10000 * e2e_slow(); e2e_now_ms() < deadline;) {
        e2e_assert(raw_hello(busy), "a client that keeps asking was closed");
        struct pollfd p = {.fd = idle, .events = POLLIN};
        if (poll(&p, 1, 200) == 1)
            break;
    }
    expect_refused(idle, "unavailable", "idle for 3000 ms; closing the connection");
    budget_client *c = e2e_client_as(&bd, &reader);
    budget_response r;
    e2e_call(c, "stats", NULL, &r);
    e2e_assert_int(e2e_map_uint(&r.result, "connections_timed_out"), 1, "connections timed out");
    budget_response_free(&r);
    budget_client_close(c);
    /* The subscriber is still open and gets the next event. */
    args_grant(&b, "F", "KS");
    expect_ok(UID_ADMIN, "frame.grant", &b);
    e2e_assert(e2e_raw_recv(sub, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
               "the subscriber was closed or got nothing");
    e2e_assert(budget_map_get(&u.data, "event") != NULL, "not a push");
    msgpack_unpacked_destroy(&u);
    close(sub);
    close(busy);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

/* ---- subscriptions and access ------------------------------------------------------------- */

/* Subscribes on a raw connection as `who` (id 5, after 0): the fd, and in `code` the
 * answer's code ("" when ok). The connection stays open either way. */
static int raw_subscribe(const e2e_identity *who, char *code, size_t code_size)
{
    e2e_buf b;
    msgpack_unpacked u;
    e2e_envelope env;
    int fd = e2e_raw_connect_as(bd.socket, who);
    e2e_assert(fd >= 0, "connect as uid %u: %s", who->uid, strerror(-fd));
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 5);
    e2e_kv_str(&b, "op", "subscribe");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_uint(&b, "after", UNIT_EVENTS); /* the registrations are not what it listens for */
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send subscribe");
    e2e_assert(e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME, "no subscribe answer");
    e2e_assert(e2e_envelope_read(&u.data, &env) && env.id == 5, "not the subscribe answer");
    snprintf(code, code_size, "%s", env.ok ? "" : env.code);
    msgpack_unpacked_destroy(&u);
    e2e_buf_destroy(&b);
    return fd;
}

/* The next frame on a subscribed connection must be the push of a new event. */
static void expect_push(int fd, const char *who)
{
    msgpack_unpacked u;
    e2e_assert(e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME, "%s got no push", who);
    e2e_assert(budget_map_get(&u.data, "event") != NULL, "%s: not a push", who);
    msgpack_unpacked_destroy(&u);
}

/*
 * A reader whose role is taken away stops hearing events: its subscription ends at the
 * reload with a forbidden frame that says why, the connection closes, and the event written
 * after the reload is not pushed to it. A subscriber that keeps its role hears it.
 */
Test(access, a_subscription_ends_when_its_reader_role_is_taken_away)
{
    start_with(NULL);
    e2e_identity reader = as_uid(UID_READER), auditor = as_uid(UID_AUDITOR);
    char code[32];
    int revoked = raw_subscribe(&reader, code, sizeof(code));
    e2e_assert_str(code, "", "the reader's subscribe");
    int kept = raw_subscribe(&auditor, code, sizeof(code));
    e2e_assert_str(code, "", "the auditor's subscribe");
    e2e_buf b;
    e2e_buf_init(&b);
    args_grant(&b, "F-before", "KS");
    expect_ok(UID_ADMIN, "frame.grant", &b);
    expect_push(revoked, "the reader, before the reload,");
    expect_push(kept, "the auditor, before the reload,");

    /* The same rules without the reader's line. */
    const char *line = "user 60005 reader\n";
    char text[sizeof(access_text)];
    const char *at = strstr(access_text, line);
    cr_assert_not_null(at);
    snprintf(text, sizeof(text), "%.*s%s", (int)(at - access_text), access_text, at + strlen(line));
    write_access(text);
    kill(bd.pid, SIGHUP);
    e2e_assert(log_has("SIGHUP: reloaded", 5000 * e2e_slow()), "no reload in the log");
    args_grant(&b, "F-after", "KS");
    expect_ok(UID_ADMIN, "frame.grant", &b);

    /* The reader: the ending frame, then the close; never the event written after. */
    msgpack_unpacked u;
    e2e_envelope env;
    e2e_assert_int(e2e_raw_recv(revoked, E2E_FRAME_TIMEOUT_MS, &u), E2E_FRAME, "the ending frame");
    e2e_assert(budget_map_get(&u.data, "event") == NULL,
               "an event was pushed to a subscriber whose reader role was taken away");
    e2e_assert(e2e_envelope_read(&u.data, &env) && !env.ok && env.id == 5,
               "not an error frame with the subscribe id");
    e2e_assert_str(env.code, "forbidden", "code of the ending frame");
    char message[600];
    budget_map_str(budget_map_get(&u.data, "error"), "message", message, sizeof(message));
    e2e_assert(strstr(message, "the access file was reloaded: subscribe needs the reader role; "
                               "uid 60005 has no role") != NULL,
               "the message does not say why: %s", message);
    msgpack_unpacked_destroy(&u);
    e2e_assert(e2e_raw_wait_close(revoked, E2E_FRAME_TIMEOUT_MS),
               "the connection stayed open, or more came after the ending frame");
    close(revoked);
    e2e_assert(log_has("uid 60005: subscription ends", 1000), "no log line for the end");

    /* The auditor still reads: it hears the new event. */
    expect_push(kept, "the auditor, after the reload,");
    close(kept);
    e2e_buf_destroy(&b);
    stop_cleanly();
}

/*
 * One uid cannot hold every subscription: past 8 (the default of --subscriptions-per-uid) its
 * subscribe is answered unavailable, while another uid still subscribes; once one of the first
 * closes, the uid may subscribe again.
 */
Test(access, subscriptions_are_limited_per_uid)
{
    enum { PER_UID = 8 };
    start_with(NULL);
    e2e_identity reader = as_uid(UID_READER), auditor = as_uid(UID_AUDITOR);
    char code[32];
    int fds[PER_UID];
    for (int i = 0; i < PER_UID; i++) {
        fds[i] = raw_subscribe(&reader, code, sizeof(code));
        e2e_assert_str(code, "", "a subscribe within the limit");
    }
    int over = raw_subscribe(&reader, code, sizeof(code));
    e2e_assert_str(code, "unavailable", "the subscribe past the limit");
    close(over);
    e2e_assert(
        log_has("uid 60005 refused: too many subscriptions from uid 60005: at most 8 at once",
                2000),
        "no log line for the refusal");
    int other = raw_subscribe(&auditor, code, sizeof(code));
    e2e_assert_str(code, "", "another uid's subscribe");
    close(other);

    /* One closes: the uid has room again (once the daemon has seen the close). */
    close(fds[0]);
    for (int64_t deadline = e2e_now_ms() + 5000 * e2e_slow();;) {
        int again = raw_subscribe(&reader, code, sizeof(code));
        close(again);
        if (code[0] == '\0')
            break;
        e2e_assert(e2e_now_ms() < deadline, "no room after a subscription closed: %s", code);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int i = 1; i < PER_UID; i++)
        close(fds[i]);
    stop_cleanly();
}

/* --subscriptions-per-uid sets the limit. */
Test(access, the_subscription_limit_per_uid_is_set_by_an_option)
{
    const char *extra[] = {"--subscriptions-per-uid", "1", NULL};
    start_with(extra);
    e2e_identity reader = as_uid(UID_READER);
    char code[32];
    int first = raw_subscribe(&reader, code, sizeof(code));
    e2e_assert_str(code, "", "the first subscribe");
    int second = raw_subscribe(&reader, code, sizeof(code));
    e2e_assert_str(code, "unavailable", "the second subscribe of one uid");
    close(second);
    close(first);
    stop_cleanly();
}

/* ---- the log under a flood of refusals ----------------------------------------------------- */

/* Reads the log: lines that log a refusal of `op`, and the sum of the refusals the daemon
 * counted instead of logging. */
static void refusals_in_log(const char *op, int *logged, long *unlogged)
{
    char want[64], line[1024];
    snprintf(want, sizeof(want), "refused: %s", op);
    *logged = 0;
    *unlogged = 0;
    FILE *f = fopen(bd.log, "r");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        const char *more = strstr(line, "budgetd info: ");
        long n;
        if (strstr(line, want))
            (*logged)++;
        else if (more && strstr(line, "more refusals in the last second were not logged") &&
                 sscanf(more + strlen("budgetd info: "), "%ld", &n) == 1)
            *unlogged += n;
    }
    fclose(f);
}

/* Waits until `flood` refusals of `what`, made within `seconds`, are in the log, in full or
 * counted, and checks that at most 10 a second (and at least the first 10) are in full. */
static void expect_refusals_logged(const char *what, int flood, int64_t seconds)
{
    enum { LOGGED_PER_S = 10 };
    int logged = 0;
    long unlogged = 0;
    for (int64_t deadline = e2e_now_ms() + 5000 * e2e_slow(); e2e_now_ms() < deadline;) {
        refusals_in_log(what, &logged, &unlogged);
        if (logged + unlogged >= flood)
            break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    e2e_assert_int(logged + unlogged, flood, "refusals logged or counted");
    e2e_assert(logged >= LOGGED_PER_S && logged <= LOGGED_PER_S * (seconds + 1),
               "%d refusals logged in %lld s", logged, (long long)seconds);
    cr_log_info("%d refusals of %s in %lld s: %d logged, %ld counted", flood, what,
                (long long)seconds, logged, unlogged);
}

/*
 * A client refused again and again cannot flood the log: a reader asks for 300 grants one
 * after another; each is answered forbidden, at most 10 refusals a second are logged, and
 * the rest are counted in a line once their second is over, so that every one of the 300 is
 * in the log, one way or the other.
 */
Test(access, a_flood_of_refusals_is_logged_in_short)
{
    enum { FLOOD = 300 };
    start_with(NULL);
    e2e_identity who = as_uid(UID_READER);
    budget_client *c = e2e_client_as(&bd, &who);
    e2e_buf b;
    answer a;

    e2e_buf_init(&b);
    args_grant(&b, "f-flood", "KS");
    int64_t began = e2e_now_ms();
    for (int i = 0; i < FLOOD; i++) {
        call(c, "frame.grant", &b, &a);
        e2e_assert(strcmp(a.code, "forbidden") == 0, "grant %d: %s", i, a.code);
    }
    int64_t seconds = (e2e_now_ms() - began) / 1000 + 1;

    expect_refusals_logged("frame.grant", FLOOD, seconds);
    e2e_buf_destroy(&b);
    budget_client_close(c);
    stop_cleanly();
}

/* The same for connections over a limit: 100 refused, at most 10 a second logged in full, and
 * every one in the log, in full or in a count. */
Test(access, a_flood_of_refused_connections_is_logged_in_short)
{
    enum { FLOOD = 100 };
    const char *extra[] = {"--connections-per-uid", "2", NULL};
    start_with(extra);
    e2e_identity who = as_uid(UID_READER);
    int held[2];
    for (int i = 0; i < 2; i++) {
        held[i] = e2e_raw_connect_as(bd.socket, &who);
        e2e_assert(raw_hello(held[i]), "connection %d not served", i);
    }
    int64_t began = e2e_now_ms();
    for (int i = 0; i < FLOOD; i++)
        expect_refused(e2e_raw_connect_as(bd.socket, &who), "unavailable",
                       "too many connections from uid 60005: at most 2 at once");
    int64_t seconds = (e2e_now_ms() - began) / 1000 + 1;

    expect_refusals_logged("too many connections from uid 60005", FLOOD, seconds);
    for (int i = 0; i < 2; i++)
        close(held[i]);
    stop_cleanly();
}

/* ---- clients that send and do not read ------------------------------------------------------ */

/* `count` frames of {"id": 1} (each answered with an error, the connection left open),
 * malloc'd; *size set. */
static uint8_t *empty_maps(size_t count, size_t *size)
{
    static const uint8_t empty_map[] = {0x00, 0x00, 0x00, 0x05, 0x81, 0xa2, 'i', 'd', 0x01};
    *size = sizeof(empty_map) * count;
    uint8_t *bytes = malloc(*size);
    e2e_assert(bytes != NULL, "out of memory");
    for (size_t i = 0; i < count; i++)
        memcpy(bytes + i * sizeof(empty_map), empty_map, sizeof(empty_map));
    return bytes;
}

/* Sends `bytes` on non-blocking `fd` without reading until all are sent, the daemon has
 * taken none for 2 s (stretched: a slow build may be that long at handling what it read): it
 * stopped reading, or it closed the connection. Returns how many were sent. */
static size_t send_until_stalled(int fd, const uint8_t *bytes, size_t size)
{
    size_t off = 0;
    int64_t stalled_since = 0;
    int64_t deadline = e2e_now_ms() + 30000 * e2e_slow();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (off < size && e2e_now_ms() < deadline) {
        ssize_t n = send(fd, bytes + off, size - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            stalled_since = 0;
            continue;
        }
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
            break;
        e2e_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "send: %s", strerror(errno));
        if (stalled_since == 0)
            stalled_since = e2e_now_ms();
        else if (e2e_now_ms() - stalled_since >= 2000 * e2e_slow())
            break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return off;
}

/* A counter of `stats`, asked as the reader. */
static uint64_t stat_of(const char *key)
{
    e2e_identity reader = as_uid(UID_READER);
    budget_client *c = e2e_client_as(&bd, &reader);
    uint64_t v = e2e_stat(c, key);
    budget_client_close(c);
    return v;
}

/*
 * A client that sends and never reads, and leaves part of a frame: once its answers fill its
 * output the daemon stops reading it, and then neither the frame deadline (which counts while
 * the daemon reads) nor the idle timeout (which waits for an empty buffer) closed it, so it
 * held its 4 MiB of answers for good. Now a connection whose output stays full and unread for
 * the frame timeout (1 s here; the idle timeout is 600 s) is closed and counted as timed out.
 */
Test(access, a_client_that_sends_and_never_reads_is_closed)
{
    const char *extra[] = {"--frame-timeout", "1", NULL};
    start_with(extra);
    e2e_identity reader = as_uid(UID_READER);
    size_t size;
    uint8_t *bytes = empty_maps(200000, &size);
    int fd = e2e_raw_connect_as(bd.socket, &reader);
    e2e_assert(fd >= 0, "connect");

    size_t sent = send_until_stalled(fd, bytes, size);
    e2e_assert(sent < size, "the daemon read all %zu bytes without being read from", size);
    /* The start of one more frame, should the socket take it. */
    (void)send(fd, bytes, 2, MSG_NOSIGNAL);
    int64_t stalled = e2e_now_ms() - 2000 * e2e_slow();
    uint64_t timed_out = 0;
    for (int64_t deadline = stalled + 10000 * e2e_slow(); e2e_now_ms() < deadline;) {
        timed_out = stat_of("connections_timed_out");
        if (timed_out > 0)
            break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    e2e_assert(timed_out == 1,
               "%" PRIu64 " connections timed out, %lld ms after the daemon stopped reading",
               timed_out, (long long)(e2e_now_ms() - stalled));
    cr_log_info("closed %lld ms after the last byte it sent was taken, %zu bytes sent",
                (long long)(e2e_now_ms() - stalled), sent);
    /* Closed for its unread answers; or, should a write have let it be read again, for the
     * part of a frame it never finished. */
    e2e_assert(log_has("bytes of answers unread for", 2000) || log_has("bytes of a frame in", 0),
               "no log line for the close");
    e2e_assert(e2e_raw_wait_close(fd, E2E_FRAME_TIMEOUT_MS), "not closed");
    close(fd);
    int other = e2e_raw_connect_as(bd.socket, &reader);
    e2e_assert(raw_hello(other), "another client was not served after");
    close(other);
    free(bytes);
    stop_cleanly();
}

/*
 * An identity that holds no role may say hello and is refused everything else, so it is given
 * little: 64 KiB of queued answers (not 4 MiB) and frames of at most 16 KiB. A uid without a
 * role that pipelines 200 000 requests and never reads has few of them handled before the
 * daemon stops reading it; its 20 000-byte frame is refused too_large and the connection
 * closed, while a reader's frame of that size is read and answered.
 */
Test(access, a_uid_without_a_role_is_given_little)
{
    start_with(NULL);
    e2e_identity unknown = as_uid(UID_UNKNOWN), reader = as_uid(UID_READER);
    size_t size;
    uint8_t *bytes = empty_maps(200000, &size);

    int fd = e2e_raw_connect_as(bd.socket, &unknown);
    e2e_assert(raw_hello(fd), "hello");
    uint64_t before = stat_of("requests");
    size_t sent = send_until_stalled(fd, bytes, size);
    uint64_t handled = stat_of("requests") - before - 1;
    cr_log_info("a uid without a role: %" PRIu64 " requests handled of %zu bytes sent", handled,
                sent);
    e2e_assert(sent < size, "the daemon read all %zu bytes without being read from", size);
    /* 64 KiB at some 130 bytes an answer, and what the socket takes; 4 MiB took some 30 000. */
    e2e_assert(handled < 5000, "%" PRIu64 " requests of a uid without a role were handled",
               handled);
    close(fd);

    /* A frame of some 20 000 bytes: an id and 5 strings of 4 000 bytes (the id keeps the
     * reader's connection open after its answer). */
    e2e_buf b;
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 6);
    e2e_kv_uint(&b, "id", 7);
    static char filler[4001];
    memset(filler, 'x', sizeof(filler) - 1);
    for (int i = 0; i < 5; i++) {
        char key[8];
        snprintf(key, sizeof(key), "k%d", i);
        e2e_kv_str(&b, key, filler);
    }
    e2e_frame_end(&b);
    e2e_assert(b.sb.size > 20000 && b.sb.size < 20100, "frame of %zu bytes", b.sb.size);
    fd = e2e_raw_connect_as(bd.socket, &unknown);
    e2e_assert(raw_hello(fd), "hello");
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0 || errno == EPIPE || errno == ECONNRESET,
               "send");
    expect_refused(fd, "too_large", "holds no role, and its frames are 1..16380 bytes");
    fd = e2e_raw_connect_as(bd.socket, &reader);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send as the reader");
    msgpack_unpacked u;
    e2e_envelope env;
    e2e_assert(e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME, "the reader's answer");
    e2e_assert(e2e_envelope_read(&u.data, &env) && !env.ok, "not an error");
    e2e_assert(strcmp(env.code, "too_large") != 0, "the reader's frame was refused too_large");
    msgpack_unpacked_destroy(&u);
    e2e_assert(raw_hello(fd), "the reader's connection was closed");
    close(fd);
    e2e_buf_destroy(&b);
    free(bytes);
    stop_cleanly();
}

/* unit.register, unit.rename and unit.close need the admin role for the unit; every other role
 * is refused, and the register is unchanged. */
Test(access, only_an_admin_registers_renames_and_closes_units)
{
    start_with(NULL);
    e2e_buf b;
    answer a;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 4);
    e2e_kv_str(&b, "id", "unit-bun");
    e2e_kv_str(&b, "unit", "BUN");
    e2e_kv_str(&b, "name", "Barn- och ungdomsnämnden");
    e2e_kv_str(&b, "kind", "nämnd");
    const uint32_t others[] = {UID_CLERK, UID_APPROVER, UID_AUDITOR, UID_READER,
                               UID_CLERK_APPROVER};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        expect_code(others[i], "unit.register", &b, "forbidden", &a);
        e2e_assert(strstr(a.message, "unit.register needs the admin role"), "%s", a.message);
    }
    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_str(&b, "id", "son-namn");
    e2e_kv_str(&b, "unit", "SON");
    e2e_kv_str(&b, "name", "Socialnämnden");
    expect_code(UID_SON_CLERK, "unit.rename", &b, "forbidden", &a);
    expect_ok(UID_ADMIN, "unit.rename", &b);
    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_str(&b, "id", "kfn-slut");
    e2e_kv_str(&b, "unit", "KFN");
    expect_code(UID_KFN_MEMBER, "unit.close", &b, "forbidden", &a);
    expect_ok(UID_ADMIN, "unit.close", &b);
    e2e_identity reader = as_uid(UID_READER);
    budget_client *c = e2e_client_as(&bd, &reader);
    e2e_assert_int(e2e_head(c), UNIT_EVENTS + 2, "only the admin's two writes were made");
    budget_client_close(c);
    e2e_buf_destroy(&b);
}
