/*
 * Writes the fuzzers' seed corpus from the real encoders: make_corpus DIR writes
 * DIR/fuzz_frame and DIR/fuzz_request (request bodies for every op, and a few hostile
 * ones: keys given twice, control characters and stray bytes where messages quote them),
 * DIR/fuzz_event (one encoded event of every type, chained) and DIR/fuzz_ledger (command sequences
 * in the harness's 6-byte format). The committed corpus in tests/fuzz/corpus/ was made by it;
 * libFuzzer adds what it finds beside it when asked.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <msgpack.h>

#include "budget/protocol.h"
#include "daemon/event.h"
#include "daemon/ledger.h"
#include "daemon/snapshot.h"

static const char *root;

static void put_file(const char *harness, const char *name, const void *data, size_t size)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, harness);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", root, harness, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void put_both(const char *name, const void *data, size_t size)
{
    put_file("fuzz_frame", name, data, size);
    put_file("fuzz_request", name, data, size);
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    pk_str(pk, k);
    pk_str(pk, v);
}

static void kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
    pk_str(pk, k);
    msgpack_pack_int64(pk, v);
}

/* A request: {"id": n, "op": op, "args": {pairs...}} with `pairs` "key=value" strings, a
 * value starting with '#' being an integer. */
static void request(const char *name, const char *op, const char *const *pairs)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int n = 0;
    while (pairs && pairs[n])
        n++;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, pairs ? 3 : 2);
    kv_int(&pk, "id", 7);
    kv_str(&pk, "op", op);
    if (pairs) {
        pk_str(&pk, "args");
        msgpack_pack_map(&pk, (size_t)n);
        for (int i = 0; i < n; i++) {
            char key[64];
            const char *eq = strchr(pairs[i], '=');
            snprintf(key, sizeof(key), "%.*s", (int)(eq - pairs[i]), pairs[i]);
            if (eq[1] == '#')
                kv_int(&pk, key, strtoll(eq + 2, NULL, 10));
            else
                kv_str(&pk, key, eq + 1);
        }
    }
    put_both(name, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

#define P(...) ((const char *const[]){__VA_ARGS__, NULL})

/* budget.adopt of budget 2022 with plan 2023-2025 (docs/protocol.md): its lines are an array
 * of maps, which request() does not write. */
static void adopt_request(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    kv_int(&pk, "id", 7);
    kv_str(&pk, "op", "budget.adopt");
    pk_str(&pk, "args");
    msgpack_pack_map(&pk, 8);
    kv_str(&pk, "id", "b2022");
    kv_int(&pk, "year", 2022);
    kv_int(&pk, "plan_until", 2025);
    kv_str(&pk, "title", "Budget 2022 med plan 2023–2025");
    kv_str(&pk, "decision_body", "KF");
    kv_str(&pk, "decision_date", "2021-11-22");
    kv_str(&pk, "decision_paragraph", "150");
    pk_str(&pk, "lines");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 4);
    kv_str(&pk, "unit", "KS");
    kv_int(&pk, "amount", 150000000);
    kv_str(&pk, "continues", "ks-2021");
    pk_str(&pk, "plan");
    msgpack_pack_array(&pk, 3);
    for (int i = 0; i < 3; i++)
        msgpack_pack_int64(&pk, 150000000);
    msgpack_pack_map(&pk, 3);
    kv_str(&pk, "unit", "SON");
    kv_int(&pk, "amount", 100000000);
    pk_str(&pk, "plan");
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int64(&pk, 100000000);
    msgpack_pack_int64(&pk, 100000000);
    msgpack_pack_int64(&pk, 0);
    put_both("budget-adopt", sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void requests(void)
{
    request("hello", "hello", NULL);
    request("stats", "stats", NULL);
    request("verify", "verify", NULL);
    request("grant", "frame.grant",
            P("id=ks-2021", "unit=KS", "year=#2021", "amount=#300000000",
              "title=Utökat trygghetsarbete", "decision_body=KS", "decision_date=2021-08-24",
              "decision_paragraph=241", "reference=KS 2021-08-24 § 241"));
    request("adjust", "frame.adjust",
            P("id=ks-2021-adj", "frame=ks-2021", "delta=#-5000000", "reason=Minskning",
              "decision_body=KS", "decision_date=2021-10-12", "decision_paragraph=301"));
    request("propose", "allocation.propose",
            P("id=son-2021", "frame=ks-2021", "unit=SON", "amount=#100000000",
              "purpose=Områdesarbete"));
    request("avrop", "avrop.request",
            P("id=son-avrop-2", "allocation=son-2021", "amount=#40000000", "note=Höst"));
    request("approve", "approve",
            P("id=son-avrop-1-ok", "target=son-avrop-1", "decision_body=KS",
              "decision_date=2021-09-28", "decision_paragraph=270 p. 2",
              "decision_dnr=KS 2021/123"));
    request("reject", "reject",
            P("id=son-avrop-1-no", "target=son-avrop-1", "decision_body=SON",
              "decision_date=2024-02-29", "decision_paragraph=12", "note=Nej"));
    request("withdraw", "withdraw", P("id=son-avrop-1-wd", "target=son-avrop-1"));
    request("expect-head", "frame.grant",
            P("id=kfn-2021", "unit=KFN", "year=#2021", "amount=#50000000", "title=Fritid",
              "decision_body=KS", "decision_date=2021-08-24", "decision_paragraph=241",
              "expect_head=#4"));
    request("balances", "balances", P("unit=SON", "year=#2021", "as_of=#3", "offset=#0"));
    request("events", "events", P("after=#0", "limit=#100", "type=avrop.requested"));
    request("outcome-record", "outcome.record",
            P("id=utfall-1", "unit=SON", "year=#2021", "month=#9", "allocation=son-2021",
              "amount=#-250025", "source=utfall-2021-09.csv"));
    request("outcome", "outcome", P("unit=SON", "year=#2021", "offset=#0"));
    request(
        "reduce", "allocation.reduce",
        P("id=son-2021-minus", "allocation=son-2021", "amount=#10000000", "reason=Mindre behov"));
    request(
        "reverse", "avrop.reverse",
        P("id=son-avrop-1-back", "avrop=son-avrop-1", "amount=#5000000", "reason=Felaktigt avrop"));
    request("unit-register", "unit.register",
            P("id=unit-bun", "unit=BUN", "name=Barn- och ungdomsnämnden", "kind=nämnd", "parent=KS",
              "reference=KF 2018-12-18 § 510"));
    request("unit-rename", "unit.rename",
            P("id=unit-son-namn", "unit=SON", "name=Socialnämnden", "reference=KF 2022-12-12 § 4"));
    request("unit-close", "unit.close",
            P("id=unit-son-slut", "unit=SON", "reference=KF 2022-12-12 § 5"));
    request("year-close", "year.close",
            P("id=bokslut-2021", "year=#2021", "decision_body=KF", "decision_date=2022-04-25",
              "decision_paragraph=88", "decision_dnr=KS 2022/41", "note=Bokslut 2021"));
    request("carry-over", "frame.carry_over",
            P("id=ks-2022-omb", "frame=ks-2021", "amount=#50000000",
              "title=Ombudgetering av trygghetsarbete", "avrop_last_day=2022-06-30",
              "decision_body=KF", "decision_date=2022-04-25", "decision_paragraph=89"));
    adopt_request();
    request("unknown-arg", "frame.grant", P("id=x", "colour=blå"));
    request("unknown-op", "frame.steal", NULL);

    /* Hostile bodies. */
    static const uint8_t map_bomb[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa2, 'i', 'd', 0x01};
    static const uint8_t array_bomb[] = {0x81, 0xa2, 'o', 'p', 0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t str_bomb[] = {0x81, 0xa2, 'o', 'p', 0xdb, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t int_key[] = {0x81, 0x01, 0x02};
    static const uint8_t reserved[] = {0x81, 0xa1, 'x', 0xc1};
    static const uint8_t ext[] = {0x81, 0xa1, 'x', 0xd4, 0x01, 0x02};
    uint8_t deep[64];
    deep[0] = 0x81, deep[1] = 0xa1, deep[2] = 'x';
    for (size_t i = 3; i < sizeof(deep) - 1; i++)
        deep[i] = 0x91;
    deep[sizeof(deep) - 1] = 0xc0;
    put_both("bomb-map32", map_bomb, sizeof(map_bomb));
    put_both("bomb-array32", array_bomb, sizeof(array_bomb));
    put_both("bomb-str32", str_bomb, sizeof(str_bomb));
    put_both("int-key", int_key, sizeof(int_key));
    put_both("reserved-c1", reserved, sizeof(reserved));
    put_both("ext", ext, sizeof(ext));
    put_both("deep", deep, sizeof(deep));

    /* Keys given twice: in the envelope (a write's op, then a read's), in args, nested. */
    static const uint8_t op_twice[] = {0x83, 0xa2, 'i', 'd', 0x02, 0xa2, 'o',  'p', 0xa7, 'a',
                                       'p',  'p',  'r', 'o', 'v',  'e',  0xa2, 'o', 'p',  0xa8,
                                       'b',  'a',  'l', 'a', 'n',  'c',  'e',  's'};
    static const uint8_t id_twice[] = {0x83, 0xa2, 'i', 'd', 0x01, 0xa2, 'o', 'p', 0xa5,
                                       'h',  'e',  'l', 'l', 'o',  0xa2, 'i', 'd', 0x02};
    static const uint8_t op_str8[] = {0x83, 0xa2, 'i',  'd', 0x03, 0xa2, 'o',  'p',
                                      0xa5, 's',  't',  'a', 't',  's',  0xd9, 0x02,
                                      'o',  'p',  0xa5, 'h', 'e',  'l',  'l',  'o'};
    static const uint8_t nested_twice[] = {0x81, 0xa1, 'a', 0x91, 0x82, 0xa1, 'k', 1, 0xa1, 'k', 2};
    put_both("twice-op", op_twice, sizeof(op_twice));
    put_both("twice-id", id_twice, sizeof(id_twice));
    put_both("twice-op-str8", op_str8, sizeof(op_str8));
    put_both("twice-nested", nested_twice, sizeof(nested_twice));
    request("twice-args", "avrop.request",
            P("id=a1", "allocation=son-2021", "amount=#100", "amount=#200"));
    request("twice-balances", "balances", P("unit=SON", "unit=KS"));

    /* Bytes that messages quote: an op, an arg's name, an id asked for, a unit. */
    request("stray-op", "\xff\xfe\n", NULL);
    request("stray-arg", "frame.grant", P("id=x", "\x1b[2J\xc2\x9b=1"));
    request("stray-frame", "balances", P("frame=\xe2\x82"));
    request("stray-unit", "frame.grant",
            P("id=x", "unit=X\nbudgetd error: FAKE", "year=#2021", "amount=#1", "title=T"));
}

/* Registers unit `code` in `l` (the checking ledger of events() below) as event `seq`. */
static void register_in(ledger *l, const char *code, uint64_t seq)
{
    static const ledger_actor admin = {1000, "clerk"};
    ledger_cmd c;
    ledger_event ev;
    memset(&c, 0, sizeof(c));
    c.type = LEDGER_UNIT_REGISTERED;
    snprintf(c.id, sizeof(c.id), "unit-%s", code);
    strcpy(c.unit, code);
    strcpy(c.title, code);
    strcpy(c.unit_kind, "nämnd");
    if (ledger_check(l, &c, &admin, &ev, NULL, NULL) != 0)
        exit(1);
    ev.seq = seq;
    ledger_apply(l, &ev);
}

/* The register of units, after the scenario: BUN registered under KS, renamed, closed. */
static void unit_commands(ledger_cmd *c)
{
    memset(c, 0, 3 * sizeof(*c));
    c[0].type = LEDGER_UNIT_REGISTERED;
    strcpy(c[0].id, "unit-bun");
    strcpy(c[0].unit, "BUN");
    strcpy(c[0].title, "Barn- och ungdomsnämnden");
    strcpy(c[0].unit_kind, "nämnd");
    strcpy(c[0].parent, "KS");
    strcpy(c[0].reference, "KF 2018-12-18 § 510");
    c[1].type = LEDGER_UNIT_RENAMED;
    strcpy(c[1].id, "unit-bun-namn");
    strcpy(c[1].unit, "BUN");
    strcpy(c[1].title, "Bildningsnämnden");
    c[2].type = LEDGER_UNIT_CLOSED;
    strcpy(c[2].id, "unit-bun-slut");
    strcpy(c[2].unit, "BUN");
    strcpy(c[2].reference, "KF 2022-12-12 § 5");
}

/* The budget cycle, after the outcome: budget 2022 with plan 2023-2025 adopted, year 2021
 * closed, and part of KS's unspent 2021 frame carried over into 2022. */
static void cycle_commands(ledger_cmd *c)
{
    memset(c, 0, 3 * sizeof(*c));
    c[0].type = LEDGER_BUDGET_ADOPTED;
    strcpy(c[0].id, "b2022");
    c[0].year = 2022;
    c[0].plan_until = 2025;
    strcpy(c[0].title, "Budget 2022 med plan 2023–2025");
    c[0].lines.count = 2;
    strcpy(c[0].lines.line[0].unit, "KS");
    strcpy(c[0].lines.line[0].continues, "ks-2021");
    c[0].lines.line[0].amount = 150000000;
    c[0].lines.line[0].plans = 3;
    for (int k = 0; k < 3; k++)
        c[0].lines.line[0].plan[k] = 150000000;
    strcpy(c[0].lines.line[1].unit, "SON");
    c[0].lines.line[1].amount = 100000000;
    c[0].lines.line[1].plans = 3;
    c[0].lines.line[1].plan[0] = 100000000;
    c[0].lines.line[1].plan[1] = 100000000;
    strcpy(c[0].decision_body, "KF");
    c[0].decision_date = 20211122;
    strcpy(c[0].decision_paragraph, "150");
    c[1].type = LEDGER_YEAR_CLOSED;
    strcpy(c[1].id, "bokslut-2021");
    c[1].year = 2021;
    strcpy(c[1].note, "Bokslut 2021");
    c[2].type = LEDGER_FRAME_CARRIED_OVER;
    strcpy(c[2].id, "ks-2022-omb");
    strcpy(c[2].frame, "ks-2021");
    c[2].amount = 50000000;
    strcpy(c[2].title, "Ombudgetering av trygghetsarbete");
    c[2].avrop_last_day = 20220630;
    for (int i = 1; i < 3; i++) {
        strcpy(c[i].decision_body, "KF");
        c[i].decision_date = 20220425;
        snprintf(c[i].decision_paragraph, sizeof(c[i].decision_paragraph), "%d", 87 + i);
        strcpy(c[i].decision_dnr, "KS 2022/41");
    }
}

static int stream_write(void *ctx, const void *bytes, size_t n)
{
    return fwrite(bytes, 1, n, ctx) == n ? 0 : -1;
}

/* Seeds of fuzz_snapshot: the state `l` as ledger_save writes it, and as a whole snapshot under
 * the harness's key (32 bytes of 0x5a), named by its seq. */
static void snapshot_seeds(const ledger *l, const uint8_t hash[BUDGET_HASH_BYTES])
{
    char *bytes = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&bytes, &size);
    snap_sink sink = {stream_write, f};
    if (f == NULL || ledger_save(l, &sink) != 0 || fclose(f) != 0)
        exit(1);
    put_file("fuzz_snapshot", "state", bytes, size);
    free(bytes);
    snapshots s;
    memset(&s, 0, sizeof(s));
    memset(s.key, 0x5a, sizeof(s.key));
    s.keep = SNAPSHOT_KEEP_MAX;
    snprintf(s.dir, sizeof(s.dir), "%s/fuzz_snapshot", root);
    char why[256];
    if (snapshot_write(&s, l, hash, why, sizeof(why)) != 0) {
        fprintf(stderr, "make_corpus: %s\n", why);
        exit(1);
    }
}

/*
 * The scenario of the source document, as events, each file one encoded event; then the
 * register's three types, an outcome, and the budget cycle's three types. The first seven files
 * were written before units were registered and keep their bytes: their commands are checked
 * against a ledger `l` in which KS and SON were registered first (events the corpus leaves out,
 * so `l` runs two seqs ahead). The committed files 1-11 were written by earlier versions of this
 * program (before decisions were data) and are not rewritten: files 12-14 were added beside
 * them, so the prev of 12 is the hash of this program's 11, not of the committed one.
 */
static void events(void)
{
    static const ledger_actor clerk = {1000, "clerk"}, approver = {1002, "approver"};
    ledger *l = ledger_new();
    ledger_cmd c[14];
    uint8_t prev[BUDGET_HASH_BYTES] = {0};
    register_in(l, "KS", 1);
    register_in(l, "SON", 2);
    memset(c, 0, sizeof(c));
    c[0].type = LEDGER_FRAME_GRANTED;
    strcpy(c[0].id, "ks-2021");
    strcpy(c[0].unit, "KS");
    c[0].year = 2021;
    c[0].amount = 300000000;
    strcpy(c[0].title, "Utökat trygghetsarbete");
    strcpy(c[0].reference, "KS 2021-08-24 § 241");
    c[1].type = LEDGER_FRAME_ADJUSTED;
    strcpy(c[1].id, "ks-2021-adj");
    strcpy(c[1].frame, "ks-2021");
    c[1].amount = -1000000;
    strcpy(c[1].title, "Minskning");
    c[2].type = LEDGER_ALLOCATION_PROPOSED;
    strcpy(c[2].id, "son-2021");
    strcpy(c[2].frame, "ks-2021");
    strcpy(c[2].unit, "SON");
    c[2].amount = 100000000;
    strcpy(c[2].title, "Områdesarbete");
    c[3].type = LEDGER_DECISION_APPROVED;
    strcpy(c[3].id, "son-2021-ok");
    strcpy(c[3].target, "son-2021");
    strcpy(c[3].reference, "KS 2021-09-28 § 270");
    c[4].type = LEDGER_AVROP_REQUESTED;
    strcpy(c[4].id, "son-avrop-1");
    strcpy(c[4].allocation, "son-2021");
    c[4].amount = 40000000;
    strcpy(c[4].note, "Hösten");
    c[5].type = LEDGER_DECISION_REJECTED;
    strcpy(c[5].id, "son-avrop-1-no");
    strcpy(c[5].target, "son-avrop-1");
    c[6].type = LEDGER_REQUEST_WITHDRAWN;
    strcpy(c[6].id, "son-avrop-2-wd");
    strcpy(c[6].target, "son-avrop-2");
    unit_commands(&c[7]);
    c[10].type = LEDGER_OUTCOME_RECORDED;
    strcpy(c[10].id, "utfall-son-2021-09");
    strcpy(c[10].unit, "SON");
    c[10].year = 2021;
    c[10].month = 9;
    strcpy(c[10].allocation, "son-2021");
    c[10].amount = 12345678;
    strcpy(c[10].note, "Utfall SON 2021-09.csv");
    cycle_commands(&c[11]);
    /* The decisions. The committed corpus of fuzz_event was written before decisions were
     * data: its events carry none, as a log of then does (test_event replays them). */
    for (int i = 0; i < 7; i++) {
        strcpy(c[i].decision_body, "KS");
        c[i].decision_date = 20210824;
        strcpy(c[i].decision_paragraph, "241");
    }
    for (int i = 0; i < 14; i++) {
        ledger_event ev;
        uint8_t bytes[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
        char name[32];
        if (i == 6) {
            /* An avrop to withdraw first. */
            ledger_cmd v = c[4];
            strcpy(v.id, "son-avrop-2");
            if (ledger_check(l, &v, &clerk, &ev, NULL, NULL) != 0)
                exit(1);
            ev.seq = 7 + 2;
            ledger_apply(l, &ev);
        }
        /* Four-eyes: decisions come from another identity than the requests they decide. */
        bool decision =
            c[i].type == LEDGER_DECISION_APPROVED || c[i].type == LEDGER_DECISION_REJECTED;
        if (ledger_check(l, &c[i], decision ? &approver : &clerk, &ev, NULL, NULL) != 0) {
            fprintf(stderr, "make_corpus: event %d refused\n", i);
            exit(1);
        }
        ev.seq = (uint64_t)i + 1 + (i >= 6) + 2;
        ev.ts_ms = 1630000000000ull + (uint64_t)i;
        ledger_apply(l, &ev);
        ev.seq -= 2;
        int n = event_encode(&ev, prev, bytes, sizeof(bytes), hash);
        snprintf(name, sizeof(name), "%d-%s", i + 1, ledger_type_name(ev.type));
        put_file("fuzz_event", name, bytes, (size_t)n);
        memcpy(prev, hash, sizeof(prev));
    }
    snapshot_seeds(l, prev);
    ledger_free(l);
}

/* Command sequences for fuzz_ledger: [type|actor, id, ref, amount hi, amount lo, unit]. */
static void ledger_sequences(void)
{
    static const uint8_t scenario[] = {
        0,        0,  0,  0x0b, 0xb8, 0,    /* grant x0, 3 000 000 öre, KS */
        2,        1,  0,  0x03, 0xe8, 1,    /* propose x1 on x0 to SON */
        2,        2,  0,  0x01, 0xf4, 2,    /* propose x2 on x0 to KFN */
        4,        3,  1,  0,    0,    0,    /* approve x1 */
        5,        4,  2,  0,    0,    0,    /* reject x2 */
        3,        5,  1,  0x01, 0x90, 0,    /* avrop x5 on x1 */
        3,        6,  1,  0x02, 0x58, 0,    /* avrop x6 on x1: does not fit */
        4 | 0x20, 7,  5,  0,    0,    0,    /* approve x5 by another clerk */
        3,        8,  1,  0x00, 0x64, 0,    /* avrop x8 */
        6 | 0x20, 9,  8,  0,    0,    0,    /* withdraw x8 by another clerk: forbidden */
        6,        9,  8,  0,    0,    0,    /* withdraw x8 by its requester */
        1,        10, 0,  0x00, 0x10, 0x40, /* adjust x0 down */
        0,        0,  0,  0x0b, 0xb8, 0,    /* retry of x0 */
        0,        0,  0,  0x0b, 0xb9, 0,    /* x0 with other content */
        0,        11, 0,  0xff, 3,    0,    /* grant at the amount limit */
        0,        12, 0,  0xff, 4,    0,    /* over it */
        1,        13, 11, 0xff, 3,    0,    /* adjust past the limit */
    };
    put_file("fuzz_ledger", "scenario", scenario, sizeof(scenario));
    put_file("fuzz_ledger", "grant-only", scenario, 6);
    put_file("fuzz_ledger", "to-approval", scenario, 24);
    put_file("fuzz_ledger", "to-avrop", scenario, 48);
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (int f = 0; f < 8; f++) {
        uint8_t bytes[6 * 64];
        char name[32];
        for (size_t i = 0; i < sizeof(bytes); i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            bytes[i] = (uint8_t)x;
        }
        snprintf(name, sizeof(name), "random-%d", f);
        put_file("fuzz_ledger", name, bytes, sizeof(bytes));
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);
    requests();
    events();
    ledger_sequences();
    return 0;
}
