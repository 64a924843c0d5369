/*
 * budgetctl's audit and integration commands: watch, history, audit, backup and export
 * (docs/audit.md).
 *
 * These commands share budgetctl.c's argument tables, connection, printing and exit statuses
 * through client/budgetctl.h.
 *
 * `audit replay`, `audit verify` and `audit check` also work offline, with --data DIR, on a
 * copy of a data folder (a backup): they open the store read-only and use the daemon's own
 * store, event, ledger and checkpoint code, so no daemon has to run.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client/budgetctl.h"
#include "daemon/checkpoint.h"
#include "daemon/event.h"
#include "daemon/ledger.h"
#include "daemon/replay.h"
#include "daemon/request.h"
#include "daemon/store.h"
#include "client/report.h"
#include "proto/fields.h"

/* A checkpoint file is a few short lines; anything longer is not one. */
#define CHECKPOINT_FILE_BYTES_MAX 4096
/* Events asked for per request when a command reads the whole log. */
#define PAGE_EVENTS BUDGET_EVENTS_PAGE_MAX
/* Pages of events followed before giving up (a billion events). */
#define EVENT_PAGES_MAX 1000000u

/* ---- days --------------------------------------------------------------------------------- */

/* "YYYY-MM-DD", a Swedish day of 1970 or later, into *date (YYYYMMDD). 0, or -1. */
static int parse_day(const char *text, int32_t *date)
{
    size_t len = strlen(text);
    if (!budget_date_parse(text, len, date) || *date < 19700101)
        return -1; /* 2021-02-30 and the like */
    return 0;
}

/* KIND_DATE: a day; the value is its first ms, or (min 1) the first ms of the next day, as
 * Swedish days begin and end (budget_day_start_ms). */
int check_date(const arg_spec *spec, const char *label, const char *text, int64_t *out)
{
    int32_t date;
    if (parse_day(text, &date) != 0)
        return complain(EXIT_USAGE, "%s: not a day YYYY-MM-DD: %.40s", label, text);
    *out = spec->min ? budget_day_end_ms(date) : budget_day_start_ms(date);
    return 0;
}

/* "2021-08-24T13:02:11.123Z" */
static void iso_time(int64_t ts_ms, char *out, size_t out_size)
{
    time_t seconds = (time_t)(ts_ms / 1000);
    struct tm tm;
    char when[32] = "?";
    if (gmtime_r(&seconds, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, out_size, "%s.%03dZ", when, (int)(ts_ms % 1000));
}

/* ---- small helpers ------------------------------------------------------------------------ */

static const msgpack_object *bin_of(const msgpack_object *map, const char *key, size_t size)
{
    const msgpack_object *o = budget_map_get(map, key);
    return o != NULL && o->type == MSGPACK_OBJECT_BIN && o->via.bin.size == size ? o : NULL;
}

static void hex_string(const uint8_t *bytes, size_t n, char *out, size_t out_size)
{
    sodium_bin2hex(out, out_size, bytes, n);
}

/* A read whose args are packed by `pack` into a map. Returns 0 with `r`, or an exit status. */
static int call_packed(ctl *c, const char *op, msgpack_sbuffer *sb, budget_response *r)
{
    int rc = call(c, op, sb, r);
    msgpack_sbuffer_destroy(sb);
    return rc;
}

/* One `events` page: the user's filters (`cmd` may be NULL), then limit, after, ts_from. */
static int events_page(ctl *c, const command *cmd, const arg_value *values, uint64_t after,
                       uint32_t limit, int64_t ts_from, budget_response *r)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint32_t extra = 1 + (after > 0) + (ts_from >= 0);
    int rc = 0;
    if (cmd != NULL)
        rc = pack_args(&pk, cmd, values, extra);
    else if (msgpack_pack_map(&pk, extra) != 0)
        rc = -ENOMEM;
    if (rc == 0)
        rc = pack_uint_pair(&pk, "limit", limit);
    if (rc == 0 && after > 0)
        rc = pack_uint_pair(&pk, "after", after);
    if (rc == 0 && ts_from >= 0)
        rc = pack_uint_pair(&pk, "ts_from", (uint64_t)ts_from);
    if (rc != 0) {
        msgpack_sbuffer_destroy(&sb);
        return complain(EXIT_USAGE, "out of memory");
    }
    return call_packed(c, "events", &sb, r);
}

/*
 * Reads `events` pages from `after` on until the head the first page reported, calling `fn`
 * for each event. `cmd` and `values` give filters (NULL: none). Returns 0 or an exit status.
 */
int walk_events(ctl *c, const command *cmd, const arg_value *values, uint64_t after, event_fn fn,
                void *state, uint64_t *head_out)
{
    uint64_t target = 0;
    for (unsigned page = 0; page < EVENT_PAGES_MAX; page++) {
        budget_response r;
        int rc = events_page(c, cmd, values, after, PAGE_EVENTS, -1, &r);
        if (rc != 0)
            return rc;
        uint64_t next = (uint64_t)budget_map_int(&r.result, "next", 0);
        uint64_t head = (uint64_t)budget_map_int(&r.result, "head", 0);
        if (page == 0) {
            target = head;
            if (head_out != NULL)
                *head_out = head;
        }
        const msgpack_object *events = budget_map_get(&r.result, "events");
        for (uint32_t i = 0; rc == 0 && events != NULL && events->type == MSGPACK_OBJECT_ARRAY &&
                             i < events->via.array.size;
             i++)
            rc = fn(state, &events->via.array.ptr[i]);
        budget_response_free(&r);
        if (rc != 0)
            return rc;
        progress_update(next < target ? next : target, target, "events");
        if (next >= target)
            return EXIT_DONE;
        if (next <= after)
            return complain(EXIT_CONNECTION, "events: the daemon did not advance past seq %" PRIu64,
                            after);
        after = next;
    }
    return complain(EXIT_REFUSED, "events: more than %u pages", EVENT_PAGES_MAX);
}

/* ---- watch -------------------------------------------------------------------------------- */

/* True when the str under `key` of `map` is exactly `text`. */
static bool str_is(const msgpack_object *map, const char *key, const char *text)
{
    const msgpack_object *o = budget_map_get(map, key);
    return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(text) &&
           memcmp(o->via.str.ptr, text, o->via.str.size) == 0;
}

/* The filters `events` applies in the daemon, applied here to pushed events: --unit
 * (data.unit), --type, --from (ts >= its first ms) and --to (ts < the next day's). */
bool event_passes(const command *cmd, arg_value *values, const msgpack_object *event)
{
    const arg_value *unit = value_of(cmd, values, "unit");
    const arg_value *type = value_of(cmd, values, "type");
    const arg_value *from = value_of(cmd, values, "from");
    const arg_value *to = value_of(cmd, values, "to");
    int64_t ts = budget_map_int(event, "ts", 0);
    if (unit != NULL && unit->set && !str_is(budget_map_get(event, "data"), "unit", unit->text))
        return false;
    if (type != NULL && type->set && !str_is(event, "type", type->text))
        return false;
    if (from != NULL && from->set && ts < from->number)
        return false;
    return to == NULL || !to->set || ts < to->number;
}

/* Subscribes after --after and prints each event as it comes: the catch-up first, then live
 * events. Stops after --count events, or when the connection ends. */
int run_watch(ctl *c, const command *cmd, arg_value *values)
{
    const arg_value *after_value = value_of(cmd, values, "after");
    const arg_value *count_value = value_of(cmd, values, "count");
    uint64_t after = after_value->set ? (uint64_t)after_value->number : 0;
    uint64_t count = count_value->set ? (uint64_t)count_value->number : 0;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    budget_response r;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    int rc = pack_uint_pair(&pk, "after", after);
    rc = rc != 0 ? complain(EXIT_USAGE, "out of memory") : call_packed(c, cmd->op, &sb, &r);
    if (rc != 0)
        return rc;
    uint64_t head = (uint64_t)budget_map_int(&r.result, "head", 0);
    budget_response_free(&r);

    int width = digits_of(head > after ? head : after + 1);
    for (uint64_t expect = after + 1, seen = 0; count == 0 || seen < count; expect++, seen++) {
        rc = budget_client_recv(c->client, &r);
        if (rc != 0) {
            disconnect_daemon(c);
            return complain(EXIT_CONNECTION, "connection to budgetd lost: %s", client_error(rc));
        }
        if (!r.ok) {
            rc = complain(EXIT_REFUSED, "%s: %s", r.code, r.message);
            budget_response_free(&r);
            return rc;
        }
        const msgpack_object *event = budget_map_get(&r.unpacked.data, "event");
        int64_t seq = budget_map_int(event, "seq", -1);
        if (seq < 0 || (uint64_t)seq != expect) {
            budget_response_free(&r);
            return complain(EXIT_CONNECTION,
                            "the daemon sent event %" PRId64 " where %" PRIu64 " was due", seq,
                            expect);
        }
        if (!event_passes(cmd, values, event)) {
            seen--; /* --count counts the events shown */
            budget_response_free(&r);
            continue;
        }
        if (c->json)
            json_line(event);
        else
            print_event(event, width);
        budget_response_free(&r);
        if (fflush(stdout) != 0)
            return complain(EXIT_REFUSED, "cannot write the output: %s", strerror(errno));
    }
    return EXIT_DONE;
}

/* ---- history ------------------------------------------------------------------------------ */

typedef struct {
    const ctl *c;
    int width;
    uint64_t found;
} history_state;

static int history_event(void *state, const msgpack_object *event)
{
    history_state *h = state;
    if (h->c->json)
        json_line(event);
    else
        print_event(event, h->width);
    h->found++;
    return 0;
}

/* Every event of the entity and of what refers to it, oldest first, read to the head. */
int run_history(ctl *c, const command *cmd, arg_value *values)
{
    history_state h = {c, 1, 0};
    budget_response r;
    int rc = call(c, "hello", NULL, &r);
    if (rc != 0)
        return rc;
    h.width = digits_of((uint64_t)budget_map_int(&r.result, "head", 0));
    budget_response_free(&r);
    rc = walk_events(c, cmd, values, 0, history_event, &h, NULL);
    if (rc == 0 && h.found == 0)
        return complain(EXIT_REFUSED, "not_found: no event names %s",
                        value_of(cmd, values, "ENTITY")->text);
    return rc;
}

/* ---- balances from a ledger (offline) ------------------------------------------------------- */

/* Packs the balances of `l` page by page, as the daemon would answer them, through `page`.
 * The first page stays in `first` (the caller destroys it). Returns 0 or an exit status. */
static int ledger_pages(const ledger *l, uint64_t as_of, page_fn page, void *state,
                        msgpack_unpacked *first)
{
    balances_query q;
    balances_cursor cur;
    memset(&q, 0, sizeof(q));
    balances_cursor_init(&cur, BALANCES_ALL_LISTS);
    for (unsigned n = 0; n < BALANCES_PAGES_MAX; n++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_unpacked u;
        ledger_error err;
        size_t offset = 0;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_unpacked_init(&u);
        if (request_pack_balances(&pk, l, &q, as_of, &err) != 0 ||
            msgpack_unpack_next(&u, sb.data, sb.size, &offset) != MSGPACK_UNPACK_SUCCESS ||
            !msgpack_zone_push_finalizer(u.zone, free, sb.data)) {
            msgpack_sbuffer_destroy(&sb);
            msgpack_unpacked_destroy(&u);
            return complain(EXIT_REFUSED, "balances cannot be packed");
        }
        msgpack_sbuffer_release(&sb); /* the zone frees it with the objects that point into it */
        int rc = page(state, &u.data);
        bool more = more_pages(&u.data);
        bool moved = balances_advance(&u.data, &cur);
        if (n == 0)
            *first = u;
        else
            msgpack_unpacked_destroy(&u);
        if (rc != 0)
            return complain(EXIT_REFUSED, "out of memory");
        if (!more)
            return 0;
        if (!moved)
            return complain(EXIT_REFUSED, "balances: more, but no next page");
        q.frames_offset = cur.at[BAL_FRAMES];
        q.offset = cur.at[BAL_ALLOCATIONS];
        q.avrop_offset = cur.at[BAL_AVROP];
        q.units_offset = cur.at[BAL_UNITS];
    }
    return complain(EXIT_REFUSED, "balances: more than %u pages", BALANCES_PAGES_MAX);
}

static int print_ledger_balances(const ctl *c, const ledger *l, uint64_t as_of)
{
    msgpack_unpacked first;
    msgpack_unpacked_init(&first);
    if (c->json) {
        balances_json j;
        if (balances_json_open(&j) != 0) {
            balances_json_free(&j);
            return complain(EXIT_REFUSED, "out of memory");
        }
        int rc = ledger_pages(l, as_of, balances_page_json, &j, &first);
        balances_json_close(&j);
        if (rc == 0)
            print_balances_json(&first.data, &j);
        balances_json_free(&j);
        msgpack_unpacked_destroy(&first);
        return rc;
    }
    balance_tables t;
    balance_tables_init(&t);
    int rc = ledger_pages(l, as_of, balances_page_rows, &t, &first);
    if (rc == 0) {
        budget_response shown;
        memset(&shown, 0, sizeof(shown));
        shown.result = first.data;
        rc = print_balances(&shown, &t);
    }
    msgpack_unpacked_destroy(&first);
    balance_tables_free(&t);
    return rc;
}

/* ---- a store copy, offline ---------------------------------------------------------------- */

/* Says so on stderr when a running budgetd holds DIR (its lock file is locked): the offline
 * tools only read, through their own snapshot, and the daemon may append meanwhile. */
static void notice_if_served(const char *dir)
{
    char path[PATH_MAX];
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    if (snprintf(path, sizeof(path), "%s/%s", dir, STORE_DAEMON_LOCK_FILE) >= (int)sizeof(path))
        return;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return;
    if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
        fprintf(stderr,
                "budgetctl: notice: budgetd pid %ld is serving %s; this only reads it, from "
                "one snapshot taken now\n",
                (long)fl.l_pid, dir);
    close(fd);
}

/* Opens the store in DIR read-only. Returns 0, or an exit status (3: it cannot be read). */
static int open_copy(const char *dir, store **st)
{
    char path[PATH_MAX], why[PATH_MAX + 200];
    struct stat sb;
    store_options opt = {.read_only = true};
    if (snprintf(path, sizeof(path), "%s/data.mdb", dir) >= (int)sizeof(path))
        return complain(EXIT_USAGE, "--data: path too long");
    if (stat(path, &sb) != 0)
        return complain(EXIT_CONNECTION, "--data: %s: %s", path, strerror(errno));
    notice_if_served(dir);
    if (store_open(st, dir, &opt, why, sizeof(why)) != 0)
        return complain(EXIT_CONNECTION, "--data: %s", why);
    return 0;
}

/* The first event stamped at or after `ts_from`, found by a scan of a copy's timestamps. */
typedef struct {
    uint64_t ts_from;
    uint64_t first_late; /* 0: none */
    uint64_t bad;        /* an event that does not decode */
} day_scan;

static int day_scan_one(void *ctx, uint64_t seq, store_val v)
{
    day_scan *d = ctx;
    ledger_event ev;
    if (event_decode(v.data, v.size, &ev) != 0) {
        d->bad = seq;
        return 1;
    }
    if (ev.ts_ms >= d->ts_from) {
        d->first_late = seq;
        return 1;
    }
    return 0;
}

/*
 * Replays a copy up to `as_of`, or to the end of the day `day_end` (ms; -1: not), into a
 * ledger: the chain is walked first, every hash recomputed (checkpoint_walk_chain_on_two), then the
 * events are applied as start-up replay does (replay_log).
 */
static int replay_offline(const ctl *c, const char *dir, uint64_t as_of, int64_t day_end)
{
    store *st;
    store_reader *rd;
    checkpoint_chain chain;
    int rc = open_copy(dir, &st);
    if (rc != 0)
        return rc;
    if (store_reader_begin(st, &rd) != 0) {
        store_close(st);
        return complain(EXIT_CONNECTION, "--data: the store cannot be read");
    }
    uint64_t head = store_reader_head(rd);
    progress_begin("checking the chain and replaying");
    progress_update(head, 0, "events");
    if (!checkpoint_walk_chain_on_two(st, rd, 0, &chain))
        checkpoint_walk_chain(rd, 0, &chain);
    if (day_end >= 0) {
        day_scan d = {(uint64_t)day_end, 0, 0};
        store_reader_scan(rd, 0, day_scan_one, &d);
        if (d.bad && (chain.first_bad == 0 || d.bad < chain.first_bad)) {
            chain.first_bad = d.bad;
            chain.why = "malformed";
        }
        as_of = d.first_late ? d.first_late - 1 : head;
    }
    store_reader_end(rd); /* replay_log's walker begins its own */

    ledger *l = NULL;
    if (chain.first_bad != 0 && chain.first_bad <= (as_of ? as_of : head)) {
        rc = complain(EXIT_BROKEN_CHAIN, "chain broken at seq %" PRIu64 ": %s", chain.first_bad,
                      chain.why);
    } else if (as_of == 0 || as_of > head) {
        rc = complain(EXIT_REFUSED, "not_found: %s %" PRIu64 " events",
                      as_of == 0 ? "nothing recorded yet: the copy holds" : "the copy holds only",
                      head);
    } else if ((l = ledger_new()) == NULL) {
        rc = complain(EXIT_REFUSED, "out of memory");
    } else {
        replay_result res;
        if (replay_log(st, l, as_of, &res) != 0)
            rc = complain(EXIT_BROKEN_CHAIN, "the copy does not replay: %s", res.why);
    }
    store_close(st);
    progress_end();
    if (rc == 0)
        rc = print_ledger_balances(c, l, as_of);
    ledger_free(l);
    return rc;
}

/* ---- audit replay (online) ---------------------------------------------------------------- */

/* The last seq before the first event stamped at or after `day_end` (or the head). */
static int seq_before(ctl *c, int64_t day_end, uint64_t *as_of)
{
    uint64_t after = 0;
    for (unsigned page = 0; page < EVENT_PAGES_MAX; page++) {
        budget_response r;
        int rc = events_page(c, NULL, NULL, after, 1, day_end, &r);
        if (rc != 0)
            return rc;
        const msgpack_object *events = budget_map_get(&r.result, "events");
        uint64_t next = (uint64_t)budget_map_int(&r.result, "next", 0);
        uint64_t head = (uint64_t)budget_map_int(&r.result, "head", 0);
        if (events != NULL && events->type == MSGPACK_OBJECT_ARRAY && events->via.array.size > 0) {
            *as_of = (uint64_t)budget_map_int(&events->via.array.ptr[0], "seq", 1) - 1;
            budget_response_free(&r);
            return 0;
        }
        budget_response_free(&r);
        if (next >= head) {
            *as_of = head;
            return 0;
        }
        after = next;
    }
    return complain(EXIT_REFUSED, "events: more than %u pages", EVENT_PAGES_MAX);
}

/* --as-of SEQ or DATE: a seq (day_end -1), or the end of a day (as_of 0, day_end set). */
static int parse_as_of(const char *text, uint64_t *as_of, int64_t *day_end)
{
    int32_t date;
    *as_of = 0;
    *day_end = -1;
    if (parse_day(text, &date) == 0) {
        *day_end = budget_day_end_ms(date);
        return 0;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long n = text[0] >= '0' && text[0] <= '9' ? strtoull(text, &end, 10) : 0;
    if (errno != 0 || end == NULL || *end != '\0' || n == 0)
        return complain(EXIT_USAGE, "--as-of: a seq (1 or more) or a day YYYY-MM-DD: %.40s", text);
    *as_of = n;
    return 0;
}

/*
 * --as-of SEQ|DAY as a seq: a day becomes the last seq stamped before its end (Swedish time), read
 * from the events' ts (seq_before). Every command that takes --as-of comes through here.
 */
int resolve_as_of(ctl *c, arg_value *v)
{
    uint64_t as_of;
    int64_t day_end;
    if (!v->set || v->number > 0)
        return 0;
    int rc = parse_as_of(v->text, &as_of, &day_end);
    if (rc == 0 && day_end >= 0)
        rc = seq_before(c, day_end, &as_of);
    if (rc != 0)
        return rc;
    if (as_of == 0)
        return complain(EXIT_REFUSED, "not_found: nothing was recorded by the end of %s", v->text);
    v->number = (int64_t)as_of;
    return 0;
}

static int audit_replay(ctl *c, const char *as_of_text, const char *data)
{
    uint64_t as_of;
    int64_t day_end;
    int rc = parse_as_of(as_of_text, &as_of, &day_end);
    if (rc != 0)
        return rc;
    if (data != NULL)
        return replay_offline(c, data, as_of, day_end);
    const command *balances = find_command("balances");
    arg_value values[OPTS_MAX];
    memset(values, 0, sizeof(values));
    arg_value *v = value_of(balances, values, "as-of");
    v->set = true;
    v->text = as_of_text;
    v->number = (int64_t)as_of;
    /* As offline: a day before the first event has nothing to replay. */
    rc = resolve_as_of(c, v);
    return rc != 0 ? rc : run_balances(c, balances, values);
}

/* ---- audit verify ------------------------------------------------------------------------- */

static int print_chain(const ctl *c, const checkpoint_chain *chain)
{
    if (c->json) {
        printf("{\"ok\":%s,\"checked\":%" PRIu64 ",\"head\":%" PRIu64 ",\"first_bad\":",
               chain->first_bad ? "false" : "true", chain->checked, chain->head);
        if (chain->first_bad)
            printf("%" PRIu64, chain->first_bad);
        else
            fputs("null", stdout);
        printf(",\"reason\":\"%s\"}\n", chain->first_bad ? chain->why : "");
    } else if (chain->first_bad == 0) {
        printf("chain intact: %" PRIu64 " events, head %" PRIu64 "\n", chain->checked, chain->head);
    } else {
        printf("chain broken at seq %" PRIu64 ": %s\n", chain->first_bad, chain->why);
    }
    return chain->first_bad ? EXIT_BROKEN_CHAIN : EXIT_DONE;
}

/* Walks the chain of the copy in `dir`; `mark_seq` as for checkpoint_walk_chain. */
static int walk_copy(const char *dir, uint64_t mark_seq, checkpoint_chain *chain)
{
    store *st;
    store_reader *rd;
    int rc = open_copy(dir, &st);
    if (rc != 0)
        return rc;
    if (store_reader_begin(st, &rd) != 0) {
        store_close(st);
        return complain(EXIT_CONNECTION, "--data: the store cannot be read");
    }
    progress_begin("checking the chain");
    progress_update(store_reader_head(rd), 0, "events");
    /* With no mark, on two threads (the mark is one walk's) */
    if (mark_seq != 0 || !checkpoint_walk_chain_on_two(st, rd, 0, chain))
        checkpoint_walk_chain(rd, mark_seq, chain);
    progress_end();
    store_reader_end(rd);
    store_close(st);
    return 0;
}

static int audit_verify(ctl *c, const char *data)
{
    checkpoint_chain chain;
    if (data == NULL) {
        arg_value values[OPTS_MAX];
        memset(values, 0, sizeof(values));
        return run_verify(c, find_command("verify"), values);
    }
    int rc = walk_copy(data, 0, &chain);
    return rc != 0 ? rc : print_chain(c, &chain);
}

/* ---- audit checkpoint --------------------------------------------------------------------- */

typedef struct {
    uint64_t seq, ts;
    uint8_t hash[BUDGET_HASH_BYTES];
    uint8_t public_key[CHECKPOINT_PUBLIC_KEY_BYTES];
    uint8_t signature[CHECKPOINT_SIGNATURE_BYTES];
} checkpoint_file;

/* The text form: the signed message (four lines), then time, public_key and signature. */
static void print_checkpoint(const checkpoint_file *cp)
{
    char message[CHECKPOINT_MESSAGE_BYTES_MAX], when[40];
    char key[2 * CHECKPOINT_PUBLIC_KEY_BYTES + 1], signature[2 * CHECKPOINT_SIGNATURE_BYTES + 1];
    checkpoint_message(message, cp->seq, cp->hash, cp->ts);
    iso_time((int64_t)cp->ts, when, sizeof(when));
    hex_string(cp->public_key, sizeof(cp->public_key), key, sizeof(key));
    hex_string(cp->signature, sizeof(cp->signature), signature, sizeof(signature));
    printf("%stime %s\npublic_key %s\nsignature %s\n", message, when, key, signature);
}

static int audit_checkpoint(ctl *c)
{
    checkpoint_file cp;
    budget_response r;
    int rc = call(c, "checkpoint", NULL, &r);
    if (rc != 0)
        return rc;
    const msgpack_object *hash = bin_of(&r.result, "hash", sizeof(cp.hash));
    const msgpack_object *key = bin_of(&r.result, "public_key", sizeof(cp.public_key));
    const msgpack_object *signature = bin_of(&r.result, "signature", sizeof(cp.signature));
    cp.seq = (uint64_t)budget_map_int(&r.result, "seq", 0);
    cp.ts = (uint64_t)budget_map_int(&r.result, "ts", 0);
    if (hash == NULL || key == NULL || signature == NULL || cp.seq == 0) {
        budget_response_free(&r);
        return complain(EXIT_CONNECTION, "checkpoint: the daemon's answer lacks a field");
    }
    memcpy(cp.hash, hash->via.bin.ptr, sizeof(cp.hash));
    memcpy(cp.public_key, key->via.bin.ptr, sizeof(cp.public_key));
    memcpy(cp.signature, signature->via.bin.ptr, sizeof(cp.signature));
    if (c->json)
        json_line(&r.result);
    budget_response_free(&r);
    if (!checkpoint_verify(cp.public_key, cp.seq, cp.hash, cp.ts, cp.signature))
        return complain(EXIT_BROKEN_CHAIN, "checkpoint: the daemon's signature does not verify");
    if (!c->json)
        print_checkpoint(&cp);
    return EXIT_DONE;
}

/* Reads one "key value" line's hex value into `out` of exactly `size` bytes. */
static bool hex_field(const char *value, uint8_t *out, size_t size)
{
    size_t used = 0;
    return strlen(value) == 2 * size &&
           sodium_hex2bin(out, size, value, strlen(value), NULL, &used, NULL) == 0 && used == size;
}

static bool uint_field(const char *value, uint64_t *out)
{
    char *end = NULL;
    if (value[0] < '0' || value[0] > '9')
        return false;
    errno = 0;
    *out = strtoull(value, &end, 10);
    return errno == 0 && *end == '\0';
}

/* Parses a checkpoint file (the text form). Returns 0, or EXIT_USAGE after saying why. */
static int read_checkpoint(const char *path, checkpoint_file *cp)
{
    static const char *const keys[] = {"seq", "hash", "ts", "time", "public_key", "signature"};
    char text[CHECKPOINT_FILE_BYTES_MAX + 1];
    bool seen[COUNT(keys)] = {false};
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return complain(EXIT_USAGE, "%s: %s", path, strerror(errno));
    size_t n = fread(text, 1, sizeof(text), f);
    fclose(f);
    if (n > CHECKPOINT_FILE_BYTES_MAX)
        return complain(EXIT_USAGE, "%s: not a checkpoint file (too long)", path);
    text[n] = '\0';
    memset(cp, 0, sizeof(*cp));
    int line_no = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        if (line_no == 1) {
            if (strcmp(line, "budgetd checkpoint v1") != 0)
                return complain(EXIT_USAGE, "%s: not a budgetd checkpoint v1 file", path);
            continue;
        }
        char *value = strchr(line, ' ');
        if (value == NULL)
            return complain(EXIT_USAGE, "%s: line %d: not \"key value\"", path, line_no);
        *value++ = '\0';
        size_t k = 0;
        while (k < COUNT(keys) && strcmp(line, keys[k]) != 0)
            k++;
        if (k == COUNT(keys) || seen[k])
            return complain(EXIT_USAGE, "%s: line %d: %s \"%.20s\"", path, line_no,
                            k == COUNT(keys) ? "unknown key" : "repeated key", line);
        seen[k] = true;
        bool ok = k == 0   ? uint_field(value, &cp->seq)
                  : k == 1 ? hex_field(value, cp->hash, sizeof(cp->hash))
                  : k == 2 ? uint_field(value, &cp->ts)
                  : k == 3 ? true
                  : k == 4 ? hex_field(value, cp->public_key, sizeof(cp->public_key))
                           : hex_field(value, cp->signature, sizeof(cp->signature));
        if (!ok)
            return complain(EXIT_USAGE, "%s: line %d: bad %s", path, line_no, keys[k]);
    }
    if (line_no == 0)
        return complain(EXIT_USAGE, "%s: empty", path);
    for (size_t k = 0; k < COUNT(keys); k++)
        if (!seen[k] && k != 3)
            return complain(EXIT_USAGE, "%s: no %s line", path, keys[k]);
    if (cp->seq == 0)
        return complain(EXIT_USAGE, "%s: seq must be 1 or more", path);
    return 0;
}

/* ---- audit check -------------------------------------------------------------------------- */

typedef struct {
    const checkpoint_file *cp;
    uint64_t expect;
    uint8_t prev[BUDGET_HASH_BYTES];
    msgpack_sbuffer bytes;
    uint64_t bad;
    char why[160];
} check_state;

/*
 * Checks one event as the daemon sent it: re-encoded from its msgpack form (the encoding is
 * canonical, so these are the stored bytes), its seq is the next, and its link holds. At the
 * checkpoint's seq its hash must be the checkpoint's.
 */
static int check_event(void *state, const msgpack_object *event)
{
    check_state *s = state;
    msgpack_packer pk;
    const uint8_t *prev, *hash;
    const char *why = "";
    uint64_t seq = 0;

    msgpack_sbuffer_clear(&s->bytes);
    msgpack_packer_init(&pk, &s->bytes, msgpack_sbuffer_write);
    if (msgpack_pack_object(&pk, *event) != 0)
        return complain(EXIT_REFUSED, "out of memory");
    const uint8_t *b = (const uint8_t *)s->bytes.data;
    size_t n = s->bytes.size;
    if (event_seq(b, n, &seq) != 0 || seq != s->expect || event_link(b, n, &prev, &hash) != 0) {
        s->bad = s->expect;
        snprintf(s->why, sizeof(s->why), "event %" PRIu64 " is missing or malformed", s->expect);
        return EXIT_BROKEN_CHAIN;
    }
    if (seq == s->cp->seq) {
        if (memcmp(hash, s->cp->hash, BUDGET_HASH_BYTES) != 0) {
            s->bad = seq;
            snprintf(s->why, sizeof(s->why),
                     "event %" PRIu64 " no longer has the checkpoint's hash: history was "
                     "rewritten",
                     seq);
            return EXIT_BROKEN_CHAIN;
        }
        memcpy(s->prev, prev, BUDGET_HASH_BYTES); /* its own prev: its hash is checked below */
    }
    if (event_check_link(b, n, s->prev, &why) != 0) {
        s->bad = seq;
        snprintf(s->why, sizeof(s->why), "chain broken at seq %" PRIu64 ": %s", seq, why);
        return EXIT_BROKEN_CHAIN;
    }
    memcpy(s->prev, hash, BUDGET_HASH_BYTES);
    s->expect++;
    return 0;
}

/* audit check --data: the copy's chain must hold the checkpoint's event with its hash and be
 * intact to its head. 0 with the head and the events checked, or an exit status. */
static int check_copy(const char *data, const checkpoint_file *cp, uint64_t *head,
                      uint64_t *checked)
{
    checkpoint_chain chain;
    int rc = walk_copy(data, cp->seq, &chain);
    if (rc != 0)
        return rc;
    if (!chain.mark_found && chain.first_bad == 0)
        return complain(EXIT_BROKEN_CHAIN,
                        "check failed: the log ends at seq %" PRIu64
                        ", before the checkpoint's seq %" PRIu64 ": history was cut",
                        chain.head, cp->seq);
    if (!chain.mark_found)
        return complain(EXIT_BROKEN_CHAIN, "check failed: chain broken at seq %" PRIu64 ": %s",
                        chain.first_bad, chain.why);
    if (memcmp(chain.mark_hash, cp->hash, sizeof(cp->hash)) != 0)
        return complain(EXIT_BROKEN_CHAIN,
                        "check failed: event %" PRIu64 " no longer has the "
                        "checkpoint's hash: history was rewritten",
                        cp->seq);
    if (chain.first_bad != 0)
        return complain(EXIT_BROKEN_CHAIN, "check failed: chain broken at seq %" PRIu64 ": %s",
                        chain.first_bad, chain.why);
    *head = chain.head;
    *checked = chain.head - cp->seq + 1;
    return 0;
}

/* audit check against the daemon: every event from the checkpoint's on is read and linked.
 * 0 with the head and the events checked, or an exit status. */
static int check_daemon(ctl *c, const checkpoint_file *cp, uint64_t *head, uint64_t *checked)
{
    check_state s;
    memset(&s, 0, sizeof(s));
    s.cp = cp;
    s.expect = cp->seq;
    msgpack_sbuffer_init(&s.bytes);
    int rc = walk_events(c, NULL, NULL, cp->seq - 1, check_event, &s, head);
    msgpack_sbuffer_destroy(&s.bytes);
    if (rc == EXIT_BROKEN_CHAIN)
        return complain(EXIT_BROKEN_CHAIN, "check failed: %s", s.why);
    if (rc != 0)
        return rc;
    if (s.expect <= cp->seq)
        return complain(EXIT_BROKEN_CHAIN,
                        "check failed: the log ends at seq %" PRIu64
                        ", before the checkpoint's seq %" PRIu64 ": history was cut",
                        *head, cp->seq);
    *checked = s.expect - cp->seq;
    *head = s.expect - 1;
    return 0;
}

static int audit_check(ctl *c, const char *path, const char *data, const char *key_hex)
{
    checkpoint_file cp;
    char key_shown[2 * CHECKPOINT_PUBLIC_KEY_BYTES + 1], hash_shown[2 * BUDGET_HASH_BYTES + 1];
    uint64_t head = 0, checked = 0;
    int rc = read_checkpoint(path, &cp);
    if (rc != 0)
        return rc;
    hex_string(cp.public_key, sizeof(cp.public_key), key_shown, sizeof(key_shown));
    hex_string(cp.hash, sizeof(cp.hash), hash_shown, sizeof(hash_shown));
    if (key_hex != NULL && strcasecmp(key_hex, key_shown) != 0)
        return complain(EXIT_BROKEN_CHAIN,
                        "check failed: the checkpoint is signed by key %.16s…, "
                        "not by the key given with --key",
                        key_shown);
    if (!checkpoint_verify(cp.public_key, cp.seq, cp.hash, cp.ts, cp.signature))
        return complain(EXIT_BROKEN_CHAIN, "check failed: the signature does not verify: the "
                                           "file was altered, or was not signed by this key");
    rc = data != NULL ? check_copy(data, &cp, &head, &checked)
                      : check_daemon(c, &cp, &head, &checked);
    if (rc != 0)
        return rc;
    if (c->json)
        printf("{\"ok\":true,\"seq\":%" PRIu64 ",\"hash\":\"%s\",\"public_key\":\"%s\","
               "\"head\":%" PRIu64 ",\"checked\":%" PRIu64 "}\n",
               cp.seq, hash_shown, key_shown, head, checked);
    else
        printf("checkpoint holds: event %" PRIu64 " still has hash %.16s…, signed by key "
               "%.16s…; chain intact from seq %" PRIu64 " to the head, %" PRIu64 " (%" PRIu64
               " events checked)\n",
               cp.seq, hash_shown, key_shown, cp.seq, head, checked);
    return EXIT_DONE;
}

/* ---- audit -------------------------------------------------------------------------------- */

int run_audit(ctl *c, const command *cmd, arg_value *values)
{
    const char *action = value_of(cmd, values, "ACTION")->text;
    const arg_value *file = value_of(cmd, values, "FILE");
    const arg_value *as_of = value_of(cmd, values, "as-of");
    const arg_value *data = value_of(cmd, values, "data");
    const arg_value *key = value_of(cmd, values, "key");
    const char *dir = data->set ? data->text : NULL;
    bool check = strcmp(action, "check") == 0, replay = strcmp(action, "replay") == 0;
    bool checkpoint = strcmp(action, "checkpoint") == 0, verify = strcmp(action, "verify") == 0;

    if (!check && !replay && !checkpoint && !verify)
        return complain(EXIT_USAGE, "audit: ACTION is checkpoint, check, replay or verify");
    if (file->set != check)
        return complain(EXIT_USAGE,
                        check ? "audit check: missing FILE"
                              : "audit %s: unexpected argument \"%.40s\"",
                        action, file->text);
    if (as_of->set != replay)
        return complain(EXIT_USAGE,
                        replay ? "audit replay: missing --as-of SEQ|DATE"
                               : "audit %s takes no --as-of",
                        action);
    if (key->set && !check)
        return complain(EXIT_USAGE, "audit %s takes no --key", action);
    if (data->set && checkpoint)
        return complain(EXIT_USAGE, "audit checkpoint asks the daemon: it takes no --data");
    if (checkpoint)
        return audit_checkpoint(c);
    if (check)
        return audit_check(c, file->text, dir, key->set ? key->text : NULL);
    if (replay)
        return audit_replay(c, as_of->text, dir);
    return audit_verify(c, dir);
}

/* ---- backup ------------------------------------------------------------------------------- */

/*
 * budgetd sends the copy on the connection (chunk frames, then an answer with its size and
 * checksum); budgetctl writes it with the rights of whoever runs it: DIR is made new, the
 * data file is written under BACKUP_PARTIAL_NAME inside it, synced, then renamed to data.mdb,
 * and the copy is verified offline like `audit verify --data DIR`.
 */
#define BACKUP_PARTIAL_NAME "data.mdb.partial"
#define BACKUP_CHECKSUM_BYTES 32

typedef struct {
    const char *path; /* DIR */
    int dir_fd;       /* DIR, opened without following a link */
    int file_fd;      /* DIR/BACKUP_PARTIAL_NAME */
    uint64_t bytes;
    crypto_generichash_state checksum;
} backup_file;

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int write_fully(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Makes DIR (it must not exist) and the partial data file in it. 0, or an exit status. */
static int backup_create(backup_file *f)
{
    if (mkdir(f->path, 0750) != 0)
        return complain(EXIT_REFUSED, "backup: %s: %s", f->path,
                        errno == EEXIST ? "exists; a backup goes into a new folder"
                                        : strerror(errno));
    f->dir_fd = open(f->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (f->dir_fd >= 0)
        f->file_fd = openat(f->dir_fd, BACKUP_PARTIAL_NAME,
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (f->dir_fd < 0 || f->file_fd < 0) {
        int err = errno;
        if (f->dir_fd >= 0)
            close(f->dir_fd);
        f->dir_fd = -1;
        rmdir(f->path);
        return complain(EXIT_REFUSED, "backup: %s: %s", f->path, strerror(err));
    }
    crypto_generichash_init(&f->checksum, NULL, 0, BACKUP_CHECKSUM_BYTES);
    return 0;
}

/* Removes what backup_create made, after a failure before the copy was whole. */
static void backup_discard(backup_file *f)
{
    if (f->file_fd >= 0)
        close(f->file_fd);
    f->file_fd = -1;
    unlinkat(f->dir_fd, BACKUP_PARTIAL_NAME, 0);
    close(f->dir_fd);
    f->dir_fd = -1;
    rmdir(f->path);
}

/* Sends `backup` and writes each chunk until the answer. 0 with `answer`, or an exit status. */
static int backup_receive(ctl *c, backup_file *f, budget_response *answer)
{
    int rc = connect_daemon(c);
    if (rc != 0)
        return rc;
    int64_t id = budget_client_send(c->client, "backup", NULL, 0);
    if (id < 0) {
        disconnect_daemon(c);
        return complain(EXIT_CONNECTION, "connection to budgetd lost: %s", client_error((int)id));
    }
    for (;;) {
        budget_response r;
        rc = budget_client_recv(c->client, &r);
        if (rc != 0) {
            disconnect_daemon(c);
            return complain(EXIT_CONNECTION, "connection to budgetd lost during the backup: %s",
                            client_error(rc));
        }
        if (r.id != (uint64_t)id || !r.ok) {
            rc = r.ok ? complain(EXIT_CONNECTION, "budgetd answered another request")
                      : complain(EXIT_REFUSED, "%s: %s", r.code, r.message);
            budget_response_free(&r);
            return rc;
        }
        const msgpack_object *chunk = budget_map_get(&r.unpacked.data, "chunk");
        if (chunk == NULL) {
            *answer = r;
            return 0;
        }
        if (chunk->type != MSGPACK_OBJECT_BIN) {
            budget_response_free(&r);
            return complain(EXIT_CONNECTION, "budgetd sent a chunk that is not bytes");
        }
        rc = write_fully(f->file_fd, chunk->via.bin.ptr, chunk->via.bin.size);
        crypto_generichash_update(&f->checksum, (const uint8_t *)chunk->via.bin.ptr,
                                  chunk->via.bin.size);
        f->bytes += chunk->via.bin.size;
        progress_update(f->bytes, 0, "bytes received");
        budget_response_free(&r);
        if (rc != 0)
            return complain(EXIT_REFUSED, "backup: %s/%s: %s", f->path, BACKUP_PARTIAL_NAME,
                            strerror(-rc));
    }
}

/* Checks the answer against what was received, syncs the file, names it data.mdb and syncs
 * the folders. 0, or an exit status. */
static int backup_seal(backup_file *f, const msgpack_object *result)
{
    uint8_t sum[BACKUP_CHECKSUM_BYTES];
    const msgpack_object *expect = bin_of(result, "checksum", sizeof(sum));
    crypto_generichash_final(&f->checksum, sum, sizeof(sum));
    if (expect == NULL || budget_map_int(result, "bytes", -1) != (int64_t)f->bytes ||
        memcmp(expect->via.bin.ptr, sum, sizeof(sum)) != 0)
        return complain(EXIT_CONNECTION,
                        "backup: the copy received (%" PRIu64 " bytes) is not what budgetd sent "
                        "(%" PRId64 " bytes); nothing is kept",
                        f->bytes, budget_map_int(result, "bytes", -1));
    if (fsync(f->file_fd) != 0 || close(f->file_fd) != 0) {
        f->file_fd = -1;
        return complain(EXIT_REFUSED, "backup: %s/%s: %s", f->path, BACKUP_PARTIAL_NAME,
                        strerror(errno));
    }
    f->file_fd = -1;
    if (renameat(f->dir_fd, BACKUP_PARTIAL_NAME, f->dir_fd, "data.mdb") != 0 ||
        fsync(f->dir_fd) != 0)
        return complain(EXIT_REFUSED, "backup: %s: %s", f->path, strerror(errno));
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s/..", f->path);
    int parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent_fd >= 0) {
        fsync(parent_fd);
        close(parent_fd);
    }
    return 0;
}

/* Walks the copy's chain offline; it must be intact and hold the event budgetd named. */
static int backup_verify(backup_file *f, const msgpack_object *result, checkpoint_chain *chain)
{
    uint64_t seq = (uint64_t)budget_map_int(result, "seq", 0);
    const msgpack_object *hash = bin_of(result, "hash", BUDGET_HASH_BYTES);
    int rc = walk_copy(f->path, seq, chain);
    unlinkat(f->dir_fd, "lock.mdb", 0); /* made by the check's open; the copy is data.mdb */
    if (rc != 0)
        return rc;
    if (chain->first_bad != 0)
        return complain(EXIT_REFUSED,
                        "backup: the copy in %s breaks the chain at seq %" PRIu64
                        " (%s); it is left there for inspection",
                        f->path, chain->first_bad, chain->why);
    if (seq > 0 && (hash == NULL || !chain->mark_found ||
                    memcmp(chain->mark_hash, hash->via.bin.ptr, BUDGET_HASH_BYTES) != 0))
        return complain(EXIT_REFUSED,
                        "backup: the copy in %s does not hold event %" PRIu64
                        " as budgetd committed it; it is left there for inspection",
                        f->path, seq);
    return 0;
}

/* The absolute path of the backup folder DIR, without trailing slashes. 0 or EXIT_USAGE. */
static int backup_path(const char *dir, char path[PATH_MAX])
{
    char cwd[PATH_MAX];
    if (dir[0] == '/') {
        snprintf(path, PATH_MAX, "%s", dir);
    } else {
        if (getcwd(cwd, sizeof(cwd)) == NULL)
            return complain(EXIT_USAGE, "backup: cannot tell the current folder: %s",
                            strerror(errno));
        if (snprintf(path, PATH_MAX, "%s/%s", cwd, dir) >= PATH_MAX)
            return complain(EXIT_USAGE, "backup: DIR is too long");
    }
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    return 0;
}

/* What a finished backup holds, as a line or as JSON. */
static void print_backup(const ctl *c, const char *path, const checkpoint_chain *chain,
                         int64_t bytes, uint64_t ms)
{
    if (c->json) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_unpacked u;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 5);
        msgpack_pack_str_with_body(&pk, "dir", 3);
        msgpack_pack_str_with_body(&pk, path, strlen(path));
        msgpack_pack_str_with_body(&pk, "head", 4);
        msgpack_pack_uint64(&pk, chain->head);
        msgpack_pack_str_with_body(&pk, "hash", 4);
        msgpack_pack_bin_with_body(&pk, chain->head_hash, BUDGET_HASH_BYTES);
        msgpack_pack_str_with_body(&pk, "bytes", 5);
        msgpack_pack_int64(&pk, bytes);
        msgpack_pack_str_with_body(&pk, "ms", 2);
        msgpack_pack_uint64(&pk, ms);
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS)
            json_line(&u.data);
        msgpack_unpacked_destroy(&u);
        msgpack_sbuffer_destroy(&sb);
    } else {
        char hash[2 * BUDGET_HASH_BYTES + 1] = "";
        hex_string(chain->head_hash, BUDGET_HASH_BYTES, hash, sizeof(hash));
        printf("backup in %s: events up to seq %" PRIu64 " (hash %.16s), %" PRId64
               " bytes, verified in %" PRIu64 " ms\n",
               path, chain->head, hash, bytes, ms);
    }
}

int run_backup(ctl *c, const command *cmd, arg_value *values)
{
    const char *dir = value_of(cmd, values, "DIR")->text;
    char path[PATH_MAX];
    budget_response r;
    checkpoint_chain chain;
    uint64_t started = monotonic_ms();
    progress_begin("backup");

    int rc = backup_path(dir, path);
    if (rc != 0)
        return rc;
    backup_file f = {.path = path, .dir_fd = -1, .file_fd = -1};
    rc = backup_create(&f);
    if (rc != 0)
        return rc;
    rc = backup_receive(c, &f, &r);
    if (rc != 0) {
        backup_discard(&f);
        return rc;
    }
    rc = backup_seal(&f, &r.result);
    if (rc != 0) {
        budget_response_free(&r);
        backup_discard(&f);
        return rc;
    }
    rc = backup_verify(&f, &r.result, &chain);
    close(f.dir_fd);
    budget_response_free(&r);
    if (rc != 0)
        return rc;
    struct stat st;
    char data_path[PATH_MAX + 16];
    snprintf(data_path, sizeof(data_path), "%s/data.mdb", path);
    int64_t bytes = stat(data_path, &st) == 0 ? (int64_t)st.st_size : (int64_t)f.bytes;
    uint64_t ms = monotonic_ms() - started;
    progress_end();
    print_backup(c, path, &chain, bytes, ms);
    return EXIT_DONE;
}

/* ---- export ------------------------------------------------------------------------------- */

typedef struct {
    FILE *f;
    char separator, decimal;
    size_t column;
} csv_writer;

static void csv_field(csv_writer *w)
{
    if (w->column++ > 0)
        fputc(w->separator, w->f);
}

static void csv_row_end(csv_writer *w)
{
    fputs("\r\n", w->f);
    w->column = 0;
}

/*
 * Text, quoted as RFC 4180 says when it holds the separator, a quote or a line break. Text
 * that a spreadsheet would take for a formula (it starts with = + - @ or a tab) is quoted
 * and gets a leading apostrophe, so that opening the file never runs it.
 */
static void csv_text(csv_writer *w, const char *s, size_t n)
{
    bool formula = n > 0 && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' ||
                             s[0] == '\t' || s[0] == '\r');
    bool quote = formula;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == w->separator || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    csv_field(w);
    if (!quote) {
        fwrite(s, 1, n, w->f);
        return;
    }
    fputc('"', w->f);
    if (formula)
        fputc('\'', w->f);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            fputc('"', w->f);
        fputc(s[i], w->f);
    }
    fputc('"', w->f);
}

static void csv_cstr(csv_writer *w, const char *s)
{
    csv_text(w, s, strlen(s));
}

static void csv_str(csv_writer *w, const msgpack_object *map, const char *key)
{
    const msgpack_object *o = budget_map_get(map, key);
    if (o != NULL && o->type == MSGPACK_OBJECT_STR)
        csv_text(w, o->via.str.ptr, o->via.str.size);
    else
        csv_field(w);
}

static void csv_int(csv_writer *w, const msgpack_object *map, const char *key)
{
    const msgpack_object *o = budget_map_get(map, key);
    csv_field(w);
    if (o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        fprintf(w->f, "%" PRIu64, o->via.u64);
    else if (o != NULL && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        fprintf(w->f, "%" PRId64, o->via.i64);
}

/* Öre as kronor with two decimals and no grouping: 150000000 -> 1500000,00 (or .00). */
static void csv_amount(csv_writer *w, const msgpack_object *map, const char *key)
{
    const msgpack_object *o = budget_map_get(map, key);
    csv_field(w);
    if (o == NULL ||
        (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER && o->type != MSGPACK_OBJECT_NEGATIVE_INTEGER))
        return;
    bool negative = o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
    uint64_t magnitude = negative ? (uint64_t)0 - (uint64_t)o->via.i64 : o->via.u64;
    fprintf(w->f, "%s%" PRIu64 "%c%02u", negative ? "-" : "", magnitude / 100, w->decimal,
            (unsigned)(magnitude % 100));
}

static void csv_header(csv_writer *w, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        csv_cstr(w, header_text(names[i]));
    csv_row_end(w);
}

static const char *const event_columns[] = {
    "seq",   "time_utc",   "ts_ms",  "actor_uid",   "actor_name", "type", "id",
    "frame", "allocation", "target", "target_kind", "unit",       "year", "amount_kr",
    "text",  "reference",  "note",   "hash",        "avrop"};

typedef struct {
    csv_writer w;
    bool csv;
    uint64_t rows; /* events or balance rows written */
} export_state;

static int export_event(void *state, const msgpack_object *event)
{
    export_state *x = state;
    csv_writer *w = &x->w;
    x->rows++;
    if (!x->csv) {
        json_line(event);
        return 0;
    }
    const msgpack_object *data = budget_map_get(event, "data");
    const msgpack_object *actor = budget_map_get(event, "actor");
    const msgpack_object *hash = bin_of(event, "hash", BUDGET_HASH_BYTES);
    int64_t ts_ms = budget_map_int(event, "ts", 0);
    time_t seconds = (time_t)(ts_ms / 1000);
    struct tm tm;
    char when[32] = "", hash_hex[2 * BUDGET_HASH_BYTES + 1] = "";
    if (gmtime_r(&seconds, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
    if (hash != NULL)
        hex_string((const uint8_t *)hash->via.bin.ptr, BUDGET_HASH_BYTES, hash_hex,
                   sizeof(hash_hex));
    csv_int(w, event, "seq");
    csv_cstr(w, when);
    csv_int(w, event, "ts");
    csv_int(w, actor, "uid");
    csv_str(w, actor, "name");
    csv_str(w, event, "type");
    csv_str(w, data, "id");
    csv_str(w, data, "frame");
    csv_str(w, data, "allocation");
    csv_str(w, data, "target");
    csv_str(w, data, "target_kind");
    csv_str(w, data, "unit");
    csv_int(w, data, "year");
    csv_amount(w, data, budget_map_get(data, "delta") != NULL ? "delta" : "amount");
    csv_str(w, data,
            budget_map_get(data, "purpose")  ? "purpose"
            : budget_map_get(data, "reason") ? "reason"
                                             : "title");
    csv_str(w, data, "reference");
    csv_str(w, data, "note");
    csv_cstr(w, hash_hex);
    csv_str(w, data, "avrop"); /* a reversal's avrop; last, so earlier columns keep their place */
    csv_row_end(w);
    return 0;
}

static const char *const balance_columns[] = {
    "kind",         "id",         "unit",           "year",          "frame",
    "status",       "title",      "frames_kr",      "granted_kr",    "amount_kr",
    "allocated_kr", "pending_kr", "unallocated_kr", "called_off_kr", "available_kr"};

/* One row of the balances export: a frame, an allocation or a unit's year. */
static void export_balance_row(export_state *x, const char *kind, const msgpack_object *o)
{
    csv_writer *w = &x->w;
    x->rows++;
    if (!x->csv) {
        printf("{\"kind\":\"%s\"", kind);
        for (uint32_t i = 0; o->type == MSGPACK_OBJECT_MAP && i < o->via.map.size; i++) {
            fputc(',', stdout);
            json_value(stdout, &o->via.map.ptr[i].key, 1);
            fputc(':', stdout);
            json_value(stdout, &o->via.map.ptr[i].val, 1);
        }
        fputs("}\n", stdout);
        return;
    }
    bool unit = strcmp(kind, "unit") == 0;
    csv_cstr(w, kind);
    if (unit)
        csv_field(w);
    else
        csv_str(w, o, "id");
    csv_str(w, o, "unit");
    csv_int(w, o, "year");
    csv_str(w, o, "frame");
    csv_str(w, o, "status");
    csv_str(w, o, strcmp(kind, "allocation") == 0 ? "purpose" : "title");
    csv_amount(w, o, "frames");
    csv_amount(w, o, "granted");
    csv_amount(w, o, "amount");
    csv_amount(w, o, "allocated");
    csv_amount(w, o, "pending");
    csv_amount(w, o, "unallocated");
    csv_amount(w, o, "called_off");
    csv_amount(w, o, "available");
    csv_row_end(w);
}

static void export_list(export_state *x, const msgpack_object *result, const char *key,
                        const char *kind)
{
    const msgpack_object *list = budget_map_get(result, key);
    for (uint32_t i = 0;
         list != NULL && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++)
        export_balance_row(x, kind, &list->via.array.ptr[i]);
}

/* A page of a balances export: the rows of every list it holds (the lists not asked for in
 * this pass come empty). */
static int export_balances_page(void *state, const msgpack_object *result)
{
    export_state *x = state;
    export_list(x, result, "frames", "frame");
    export_list(x, result, "allocations", "allocation");
    export_list(x, result, "units", "unit");
    return 0;
}

/*
 * The balances export: frames, then allocations, then unit-years, each list fetched page by
 * page in a pass of its own, every pass as of the seq of the first page (so the rows are one
 * consistent view, and each kind's rows stay together without holding them in memory).
 */
static int export_balances(ctl *c, export_state *x, arg_value *as_of, const arg_value *unit)
{
    static const unsigned passes[] = {1u << BAL_FRAMES, 1u << BAL_ALLOCATIONS, 1u << BAL_UNITS};
    const command *balances = find_command("balances");
    arg_value bvalues[OPTS_MAX];
    memset(bvalues, 0, sizeof(bvalues));
    arg_value *pinned = value_of(balances, bvalues, "as-of");
    int rc;
    /* A day goes to the daemon with the first pass; the others ask the seq it stood at. */
    if (as_of->set)
        *pinned = *as_of;
    *value_of(balances, bvalues, "unit") = *unit;
    for (size_t i = 0; i < COUNT(passes); i++) {
        budget_response first;
        rc = fetch_balances(c, balances, bvalues, passes[i], &first, export_balances_page, x);
        if (rc != 0)
            return rc;
        int64_t seq = budget_map_int(&first.result, "as_of", 0);
        budget_response_free(&first);
        if (seq == 0)
            return EXIT_DONE; /* the empty ledger: nothing in any list */
        pinned->set = true;
        pinned->number = seq;
    }
    return EXIT_DONE;
}

/*
 * --output FILE: the export is written to a new file in FILE's folder (FILE.tmp-XXXXXX, the
 * mode a new file gets under the umask), synced, and renamed to FILE only once it is whole;
 * an export that fails, or is interrupted by a signal, removes it. So FILE is either the
 * whole export or what it was before. Standard output is pointed at the file meanwhile.
 */
typedef struct {
    const char *path;
    int fd;        /* the temporary file, also standard output meanwhile */
    int stdout_fd; /* the standard output of before */
} export_file;

/* The temporary file being written, for the signal handler; "" when there is none. */
static char export_temp[4096 + 16];

static void export_interrupted(int signum)
{
    if (export_temp[0] != '\0')
        unlink(export_temp);
    signal(signum, SIG_DFL);
    raise(signum);
}

static int export_file_begin(export_file *o, const char *path)
{
    static const int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
    o->path = path;
    o->fd = o->stdout_fd = -1;
    if (snprintf(export_temp, sizeof(export_temp), "%s.tmp-XXXXXX", path) >=
        (int)sizeof(export_temp))
        return complain(EXIT_USAGE, "--output: the path is too long");
    fflush(stdout);
    for (size_t i = 0; i < COUNT(signals); i++)
        signal(signals[i], export_interrupted);
    o->fd = mkstemp(export_temp);
    if (o->fd < 0) {
        export_temp[0] = '\0';
        return complain(EXIT_REFUSED, "--output: cannot make a file beside %s: %s", path,
                        strerror(errno));
    }
    mode_t mask = umask(0);
    umask(mask);
    o->stdout_fd = dup(STDOUT_FILENO);
    if (fchmod(o->fd, 0666 & ~mask) != 0 || o->stdout_fd < 0 || dup2(o->fd, STDOUT_FILENO) < 0) {
        int saved = errno;
        if (o->stdout_fd >= 0)
            close(o->stdout_fd);
        close(o->fd);
        unlink(export_temp);
        export_temp[0] = '\0';
        return complain(EXIT_REFUSED, "--output: %s: %s", path, strerror(saved));
    }
    return 0;
}

/* Ends the export to a file: when `rc` is 0 and everything was written, the file is synced
 * and takes FILE's name; else it is removed. Returns the exit status. */
static int export_file_end(export_file *o, int rc)
{
    int failed = 0;
    if (fflush(stdout) != 0 || ferror(stdout))
        failed = errno != 0 ? errno : EIO;
    else if (rc == 0 && fsync(o->fd) != 0)
        failed = errno;
    clearerr(stdout);
    dup2(o->stdout_fd, STDOUT_FILENO);
    close(o->stdout_fd);
    close(o->fd);
    if (rc == 0 && failed == 0 && rename(export_temp, o->path) != 0)
        failed = errno;
    if (rc != 0 || failed != 0)
        unlink(export_temp);
    export_temp[0] = '\0';
    if (rc == 0 && failed != 0)
        rc = complain(EXIT_REFUSED, "cannot write %s: %s", o->path, strerror(failed));
    if (rc == 0) {
        /* The rename is durable once the folder is synced. */
        char dir[sizeof(export_temp)];
        snprintf(dir, sizeof(dir), "%s", o->path);
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = '\0';
        else if (slash != NULL)
            *slash = '\0';
        else
            snprintf(dir, sizeof(dir), ".");
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return rc;
}

static int export_write(ctl *c, export_state *x, const command *cmd, arg_value *values)
{
    bool events = strcmp(value_of(cmd, values, "WHAT")->text, "events") == 0;
    if (value_of(cmd, values, "bom")->set)
        fputs("\xef\xbb\xbf", stdout);
    if (!isatty(STDOUT_FILENO))
        progress_begin("export");
    int rc;
    if (events) {
        if (x->csv)
            csv_header(&x->w, event_columns, COUNT(event_columns));
        rc = walk_events(c, cmd, values, 0, export_event, x, NULL);
    } else {
        if (x->csv)
            csv_header(&x->w, balance_columns, COUNT(balance_columns));
        rc = export_balances(c, x, value_of(cmd, values, "as-of"), value_of(cmd, values, "unit"));
    }
    progress_end();
    const arg_value *unit = value_of(cmd, values, "unit");
    if (rc == 0 && x->rows == 0 && unit->set)
        unit_hint(c, unit->text);
    return rc;
}

int run_export(ctl *c, const command *cmd, arg_value *values)
{
    const char *what = value_of(cmd, values, "WHAT")->text;
    const arg_value *format = value_of(cmd, values, "format");
    const arg_value *as_of = value_of(cmd, values, "as-of");
    const arg_value *output = value_of(cmd, values, "output");
    bool bom = value_of(cmd, values, "bom")->set;
    bool swedish = cli_swedish;
    bool events = strcmp(what, "events") == 0;
    export_state x = {{stdout, swedish ? ';' : ',', swedish ? ',' : '.', 0}, true, 0};

    if (!events && strcmp(what, "balances") != 0)
        return complain(EXIT_USAGE, "export: WHAT is events or balances");
    if (format->set && strcmp(format->text, "csv") != 0 && strcmp(format->text, "jsonl") != 0)
        return complain(EXIT_USAGE, "--format: csv or jsonl");
    x.csv = !format->set || strcmp(format->text, "csv") == 0;
    if (!x.csv && (bom || value_of(cmd, values, "swedish")->set))
        return complain(EXIT_USAGE, "--bom and --swedish are for --format csv");
    if (events && as_of->set)
        return complain(EXIT_USAGE, "export events takes no --as-of");
    if (!events && (value_of(cmd, values, "type")->set || value_of(cmd, values, "from")->set ||
                    value_of(cmd, values, "to")->set))
        return complain(EXIT_USAGE, "export balances takes no --type, --from or --to");
    if (!output->set)
        return export_write(c, &x, cmd, values);
    export_file o;
    int rc = export_file_begin(&o, output->text);
    if (rc != 0)
        return rc;
    return export_file_end(&o, export_write(c, &x, cmd, values));
}

/* ---- report ------------------------------------------------------------------------------- */

/* The years of a report: --year Y, --years Y1-Y2, or every year. 0, or a usage status. */
static int report_years(const command *cmd, arg_value *values, report_filter *filter)
{
    const arg_value *year = value_of(cmd, values, "year");
    const arg_value *years = value_of(cmd, values, "years");
    filter->year_from = BUDGET_YEAR_MIN;
    filter->year_to = BUDGET_YEAR_MAX;
    if (year->set && years->set)
        return complain(EXIT_USAGE, "report: give --year or --years, not both");
    if (year->set)
        filter->year_from = filter->year_to = (int)year->number;
    if (!years->set)
        return 0;
    int from, to, end = 0;
    if (sscanf(years->text, "%4d-%4d%n", &from, &to, &end) != 2 || years->text[end] != '\0' ||
        from < BUDGET_YEAR_MIN || to > BUDGET_YEAR_MAX || from > to)
        return complain(EXIT_USAGE,
                        "--years: a range of fiscal years Y1-Y2 (%d..%d), "
                        "the first not after the last: %.40s",
                        BUDGET_YEAR_MIN, BUDGET_YEAR_MAX, years->text);
    filter->year_from = from;
    filter->year_to = to;
    return 0;
}

static int report_event_seen(void *state, const msgpack_object *event)
{
    int rc = report_event(state, event);
    return rc < 0 ? complain(EXIT_REFUSED, "out of memory") : rc;
}

/* The plan amounts: every page of the units × years view as of the balances' seq, over the
 * years report_plan_years names, BUDGET_YEARS_SPAN_MAX years a request. 0 or an exit status. */
static int report_plans(ctl *c, const char *unit, uint64_t as_of, report *r)
{
    int32_t from, to;
    if (!report_plan_years(r, &from, &to))
        return 0;
    for (int32_t year = from; year <= to; year += BUDGET_YEARS_SPAN_MAX) {
        int32_t span[2] = {
            year, to - year >= BUDGET_YEARS_SPAN_MAX ? year + BUDGET_YEARS_SPAN_MAX - 1 : to};
        budget_response first;
        int rc = fetch_years_view(c, unit, span, as_of, &first, report_years_page, r);
        if (rc != 0)
            return rc;
        budget_response_free(&first);
    }
    return 0;
}

/* Every page of balances, then the plan amounts and the events up to their as_of, then the
 * page on stdout. */
static int report_write(ctl *c, const command *cmd, arg_value *values, report *r)
{
    budget_response first;
    int rc = fetch_balances(c, cmd, values, BALANCES_ALL_LISTS, &first, report_balances, r);
    if (rc != 0)
        return rc;
    uint64_t as_of = (uint64_t)budget_map_int(&first.result, "as_of", 0);
    report_set_as_of(r, as_of);
    budget_response_free(&first);
    const arg_value *unit = value_of(cmd, values, "unit");
    rc = report_plans(c, unit->set ? unit->text : NULL, as_of, r);
    if (rc != 0)
        return rc;
    rc = walk_events(c, NULL, NULL, 0, report_event_seen, r, NULL);
    if (rc != 0 && rc != REPORT_PAST_AS_OF)
        return rc;
    if (report_write_html(r, stdout) != 0)
        return complain(EXIT_REFUSED, "report: cannot write the page: %s", strerror(errno));
    return EXIT_DONE;
}

int run_report(ctl *c, const command *cmd, arg_value *values)
{
    const arg_value *unit = value_of(cmd, values, "unit");
    const arg_value *output = value_of(cmd, values, "output");
    report_filter filter = {unit->set ? unit->text : NULL, 0, 0};
    int rc = report_years(cmd, values, &filter);
    if (rc != 0)
        return rc;
    report *r = report_new(&filter);
    if (r == NULL)
        return complain(EXIT_REFUSED, "out of memory");
    if (!output->set) {
        rc = report_write(c, cmd, values, r);
    } else {
        export_file o;
        rc = export_file_begin(&o, output->text);
        if (rc == 0)
            rc = export_file_end(&o, report_write(c, cmd, values, r));
    }
    report_free(r);
    return rc;
}
