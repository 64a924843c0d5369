/*
 * budgetctl's view of what the ledger holds, for people: `pending` (what waits for your
 * decision, and what you sent that waits for others), `complete` (the candidates a shell's
 * completion offers: commands, options, ids and unit codes from the daemon) and "did you mean"
 * for unit codes. All of it is built from the read ops `hello`, `balances` and `events`.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "budget/amount.h"
#include "client/budgetctl.h"
#include "proto/fields.h"

/* ---- what the ledger holds ---------------------------------------------------------------- */

typedef struct {
    char kind; /* 'f' frame, 'a' allocation, 'v' avrop */
    char id[BUDGET_ID_BYTES_MAX + 1];
    char parent[BUDGET_ID_BYTES_MAX + 1]; /* an allocation's frame, an avrop's allocation */
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    char status[16];
    int64_t amount, pending;
    char text[BUDGET_TEXT_BYTES_MAX + 16];   /* purpose or note, cleaned for a terminal */
    int64_t by_uid;                          /* who proposed or requested it; -1 unknown */
    char by_name[BUDGET_NAME_BYTES_MAX * 2]; /* cleaned for a terminal */
} item;

typedef struct {
    item *items;
    size_t count, capacity;
    uint64_t as_of;
} view;

static item *view_add(view *v)
{
    if (v->count == v->capacity) {
        size_t capacity = v->capacity == 0 ? 64 : v->capacity * 2;
        item *items = realloc(v->items, capacity * sizeof(*items));
        if (items == NULL)
            return NULL;
        v->items = items;
        v->capacity = capacity;
    }
    item *it = &v->items[v->count++];
    memset(it, 0, sizeof(*it));
    it->by_uid = -1;
    return it;
}

/* True when the ids and the unit of `it` are what budgetd allows (words), so they can be
 * printed and matched as they are; a daemon that sent anything else is not believed. */
static bool item_valid(const item *it)
{
    return budget_word_valid(it->id, strlen(it->id), BUDGET_ID_BYTES_MAX) &&
           (it->parent[0] == '\0' ||
            budget_word_valid(it->parent, strlen(it->parent), BUDGET_ID_BYTES_MAX)) &&
           (it->unit[0] == '\0' ||
            budget_word_valid(it->unit, strlen(it->unit), BUDGET_UNIT_BYTES_MAX)) &&
           (it->status[0] == '\0' ||
            budget_word_valid(it->status, strlen(it->status), sizeof(it->status) - 1));
}

/* Adds every map of result[key] as items of `kind`. 0, or -1 when out of memory. */
static int view_list(view *v, const msgpack_object *result, const char *key, char kind)
{
    const msgpack_object *list = budget_map_get(result, key);
    const char *parent = kind == 'a' ? "frame" : "allocation";
    for (uint32_t i = 0;
         list != NULL && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++) {
        const msgpack_object *o = &list->via.array.ptr[i];
        item *it = view_add(v);
        if (it == NULL)
            return -1;
        it->kind = kind;
        budget_map_str(o, "id", it->id, sizeof(it->id));
        budget_map_str(o, parent, it->parent, sizeof(it->parent));
        budget_map_str(o, "unit", it->unit, sizeof(it->unit));
        budget_map_str(o, "status", it->status, sizeof(it->status));
        it->amount = budget_map_int(o, kind == 'f' ? "granted" : "amount", 0);
        it->pending = budget_map_int(o, "pending", 0);
        text_cell(it->text, sizeof(it->text), o, kind == 'a' ? "purpose" : "note",
                  cli_json ? BUDGET_TEXT_BYTES_MAX : 40); /* JSON: whole */
        if (!item_valid(it))
            v->count--;
    }
    return 0;
}

static int view_page(void *state, const msgpack_object *result)
{
    view *v = state;
    if (view_list(v, result, "frames", 'f') != 0 || view_list(v, result, "allocations", 'a') != 0)
        return -1;
    if (view_list(v, result, "avrop", 'v') != 0)
        return -1;
    if (v->as_of == 0)
        v->as_of = (uint64_t)budget_map_int(result, "as_of", 0);
    return 0;
}

static int item_order(const void *a, const void *b);

/* Frames and allocations (every page), and with `avrop` the avrop of each allocation that has
 * some pending, all as of one seq. Returns 0 or an exit status. */
static int view_fetch(ctl *c, view *v, bool avrop)
{
    const command *balances = find_command("balances");
    arg_value values[OPTS_MAX];
    budget_response first;
    memset(values, 0, sizeof(values));
    memset(v, 0, sizeof(*v));
    unsigned lists = (1u << BAL_FRAMES) | (1u << BAL_ALLOCATIONS);
    int rc = fetch_balances(c, balances, values, lists, &first, view_page, v);
    if (rc != 0)
        return rc;
    budget_response_free(&first);
    size_t allocations = v->count;
    for (size_t i = 0; avrop && i < allocations && rc == 0; i++) {
        if (v->items[i].kind != 'a' || v->items[i].pending <= 0)
            continue;
        char id[BUDGET_ID_BYTES_MAX + 1];
        memcpy(id, v->items[i].id, sizeof(id)); /* the items may move as the view grows */
        memset(values, 0, sizeof(values));
        arg_value *a = value_of(balances, values, "allocation");
        arg_value *as_of = value_of(balances, values, "as-of");
        a->set = as_of->set = true;
        a->text = id;
        as_of->number = (int64_t)v->as_of;
        rc = fetch_balances(c, balances, values, 1u << BAL_AVROP, &first, view_page, v);
        if (rc == 0)
            budget_response_free(&first);
    }
    if (v->count > 0)
        qsort(v->items, v->count, sizeof(*v->items), item_order);
    return rc;
}

static int item_order(const void *a, const void *b)
{
    const item *x = a, *y = b;
    return x->kind != y->kind ? (x->kind < y->kind ? -1 : 1) : strcmp(x->id, y->id);
}

/* An item of the view (sorted by view_fetch), or NULL. */
static item *view_find(view *v, char kind, const char *id)
{
    item key;
    key.kind = kind;
    snprintf(key.id, sizeof(key.id), "%s", id);
    return bsearch(&key, v->items, v->count, sizeof(*v->items), item_order);
}

/* ---- pending ------------------------------------------------------------------------------ */

typedef struct {
    view *v;
    int64_t uid;
    const msgpack_object *roles;
} pending_state;

/* An allocation.proposed or avrop.requested event: who made a pending item. */
static int pending_proposer(void *state, const msgpack_object *event)
{
    view *v = state;
    char id[BUDGET_ID_BYTES_MAX + 1], type[32];
    budget_map_str(budget_map_get(event, "data"), "id", id, sizeof(id));
    budget_map_str(event, "type", type, sizeof(type));
    item *it = view_find(v, strcmp(type, "avrop.requested") == 0 ? 'v' : 'a', id);
    if (it != NULL && strcmp(it->status, "pending") == 0) {
        const msgpack_object *actor = budget_map_get(event, "actor");
        it->by_uid = budget_map_int(actor, "uid", -1);
        text_cell(it->by_name, sizeof(it->by_name), actor, "name", BUDGET_NAME_BYTES_MAX);
    }
    return 0;
}

/* Who proposed each pending allocation and requested each pending avrop. */
static int pending_proposers(ctl *c, view *v)
{
    static const char *const types[] = {"allocation.proposed", "avrop.requested"};
    const command *events = find_command("events");
    for (size_t i = 0; i < COUNT(types); i++) {
        arg_value values[OPTS_MAX];
        memset(values, 0, sizeof(values));
        arg_value *type = value_of(events, values, "type");
        type->set = true;
        type->text = types[i];
        int rc = walk_events(c, events, values, 0, pending_proposer, v, NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The unit whose approvers decide `it`: the unit that holds its frame. */
static const char *deciding_unit(view *v, const item *it)
{
    const item *allocation = it->kind == 'v' ? view_find(v, 'a', it->parent) : it;
    const item *frame = allocation != NULL ? view_find(v, 'f', allocation->parent) : NULL;
    return frame != NULL ? frame->unit : "";
}

/* True when hello's roles hold `approver` for `unit` (or for every unit). */
static bool may_decide(const msgpack_object *roles, const char *unit)
{
    for (uint32_t i = 0;
         roles != NULL && roles->type == MSGPACK_OBJECT_ARRAY && i < roles->via.array.size; i++) {
        const msgpack_object *role = &roles->via.array.ptr[i];
        char name[32], u[BUDGET_UNIT_BYTES_MAX + 1];
        budget_map_str(role, "role", name, sizeof(name));
        if (strcmp(name, "approver") != 0)
            continue;
        const msgpack_object *units = budget_map_get(role, "units");
        for (uint32_t k = 0;
             units != NULL && units->type == MSGPACK_OBJECT_ARRAY && k < units->via.array.size;
             k++) {
            const msgpack_object *o = &units->via.array.ptr[k];
            if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof(u))
                continue;
            memcpy(u, o->via.str.ptr, o->via.str.size);
            u[o->via.str.size] = '\0';
            if (strcmp(u, "*") == 0 || strcmp(u, unit) == 0)
                return true;
        }
    }
    return false;
}

static void pending_json_item(const item *it, bool *comma)
{
    if (*comma)
        fputc(',', stdout);
    *comma = true;
    /* ids, units, names and statuses are words; the text is JSON-escaped by json_value. */
    msgpack_object text = {.type = MSGPACK_OBJECT_STR};
    text.via.str.ptr = it->text;
    text.via.str.size = (uint32_t)strlen(it->text);
    printf("{\"kind\":\"%s\",\"id\":\"%s\",\"%s\":\"%s\",\"unit\":\"%s\",\"amount\":%" PRId64
           ",\"by\":{\"uid\":%" PRId64 ",\"name\":",
           it->kind == 'a' ? "allocation" : "avrop", it->id,
           it->kind == 'a' ? "frame" : "allocation", it->parent, it->unit, it->amount, it->by_uid);
    msgpack_object name = {.type = MSGPACK_OBJECT_STR};
    name.via.str.ptr = it->by_name;
    name.via.str.size = (uint32_t)strlen(it->by_name);
    json_value(stdout, &name, 1);
    printf("},\"%s\":", it->kind == 'a' ? "purpose" : "note");
    json_value(stdout, &text, 1);
    fputc('}', stdout);
}

/* Whether a pending item is mine (1), mine to decide (2), or neither (0). */
static int pending_side(view *v, const item *it, int64_t uid, const msgpack_object *roles)
{
    if (it->kind == 'f' || strcmp(it->status, "pending") != 0)
        return 0;
    if (it->by_uid == uid)
        return 1;
    return may_decide(roles, deciding_unit(v, it)) ? 2 : 0;
}

static void pending_print_json(view *v, int64_t uid, const msgpack_object *roles)
{
    printf("{\"as_of\":%" PRIu64 ",\"uid\":%" PRId64, v->as_of, uid);
    for (int side = 2; side >= 1; side--) {
        bool comma = false;
        printf(",\"%s\":[", side == 2 ? "to_decide" : "waiting_for_others");
        for (size_t i = 0; i < v->count; i++)
            if (pending_side(v, &v->items[i], uid, roles) == side)
                pending_json_item(&v->items[i], &comma);
        fputc(']', stdout);
    }
    fputs("}\n", stdout);
}

static int pending_print_tables(view *v, int64_t uid, const msgpack_object *roles)
{
    static const char *const headers[] = {"KIND", "ID", "UNIT", ">AMOUNT", "BY", "PURPOSE"};
    printf("%s %" PRIu64 "\n", header_text("As of seq"), v->as_of);
    size_t shown = 0;
    for (int side = 2; side >= 1; side--) {
        table t;
        table_init(&t, headers, COUNT(headers));
        for (size_t i = 0; i < v->count; i++) {
            const item *it = &v->items[i];
            if (pending_side(v, it, uid, roles) != side)
                continue;
            char amount[48], by[sizeof(it->by_name) + 32];
            budget_amount_format(it->amount, amount, sizeof(amount));
            snprintf(by, sizeof(by), "%s(%" PRId64 ")", it->by_name[0] ? it->by_name : "?",
                     it->by_uid);
            char *row[] = {(char *)header_text(it->kind == 'a' ? "allocation" : "avrop"),
                           (char *)it->id,
                           (char *)it->unit,
                           amount,
                           by,
                           (char *)it->text};
            if (table_add(&t, row) != 0) {
                table_free(&t);
                return complain(EXIT_REFUSED, "out of memory");
            }
        }
        shown += t.rows;
        table_print(stdout, &t,
                    side == 2 ? "Waiting for you to decide" : "Waiting for others to decide");
        table_free(&t);
    }
    if (shown == 0)
        printf("\n%s\n", header_text("nothing waits"));
    return EXIT_DONE;
}

/* What waits for me to decide (pending requests by others in units I approve for), and what I
 * proposed or requested that waits for others. */
int run_pending(ctl *c, const command *cmd, arg_value *values)
{
    (void)cmd;
    (void)values;
    budget_response hello;
    view v;
    int rc = call(c, "hello", NULL, &hello);
    if (rc != 0)
        return rc;
    int64_t uid = budget_map_int(budget_map_get(&hello.result, "actor"), "uid", -1);
    const msgpack_object *roles = budget_map_get(&hello.result, "roles");
    rc = view_fetch(c, &v, true);
    if (rc == 0)
        rc = pending_proposers(c, &v);
    if (rc == 0 && c->json)
        pending_print_json(&v, uid, roles);
    else if (rc == 0)
        rc = pending_print_tables(&v, uid, roles);
    free(v.items);
    budget_response_free(&hello);
    return rc;
}

/* ---- unit codes --------------------------------------------------------------------------- */

/* The unit codes the ledger knows (of frames and allocations), each once; NULL-free. */
static size_t view_units(const view *v, const char **units, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < v->count && n < max; i++) {
        bool seen = v->items[i].unit[0] == '\0';
        for (size_t k = 0; k < n && !seen; k++)
            seen = strcmp(units[k], v->items[i].unit) == 0;
        if (!seen)
            units[n++] = v->items[i].unit;
    }
    return n;
}

#define UNITS_SUGGESTED_MAX 4096

void unit_hint(ctl *c, const char *unit)
{
    view v;
    bool quiet = cli_quiet;
    cli_quiet = true; /* a hint that cannot be had is no error */
    int rc = view_fetch(c, &v, false);
    cli_quiet = quiet;
    if (rc == 0) {
        static const char *units[UNITS_SUGGESTED_MAX];
        size_t n = view_units(&v, units, UNITS_SUGGESTED_MAX);
        bool known = false;
        for (size_t i = 0; i < n; i++)
            known |= strcmp(units[i], unit) == 0;
        const char *near = known ? NULL : nearest_word(unit, units, n);
        if (near != NULL)
            notice("no unit %s in the ledger; did you mean %s?", unit, near);
    }
    free(v.items);
}

/* ---- completion --------------------------------------------------------------------------- */

static const char *const event_types[] = {
    "frame.granted",     "frame.adjusted",    "allocation.proposed", "avrop.requested",
    "decision.approved", "decision.rejected", "request.withdrawn"};

static void offer(const char *candidate, const char *prefix)
{
    if (strncmp(candidate, prefix, strlen(prefix)) == 0)
        printf("%s\n", candidate);
}

static void offer_words(const char *const *words, size_t n, const char *prefix)
{
    for (size_t i = 0; i < n; i++)
        offer(words[i], prefix);
}

/* Ids and unit codes from the daemon: `what` is "unit", "frame", "allocation", "target"
 * (pending allocations and avrop) or "entity" (frames, allocations and avrop). */
static void offer_ledger(ctl *c, const char *what, const char *prefix)
{
    view v;
    bool target = strcmp(what, "target") == 0, entity = strcmp(what, "entity") == 0;
    cli_quiet = true;
    if (view_fetch(c, &v, target || entity) == 0) {
        if (strcmp(what, "unit") == 0) {
            static const char *units[UNITS_SUGGESTED_MAX];
            offer_words(units, view_units(&v, units, UNITS_SUGGESTED_MAX), prefix);
        }
        for (size_t i = 0; i < v.count; i++) {
            const item *it = &v.items[i];
            bool pending = strcmp(it->status, "pending") == 0;
            if (entity || (target && pending && it->kind != 'f') ||
                (strcmp(what, "frame") == 0 && it->kind == 'f') ||
                (strcmp(what, "allocation") == 0 && it->kind == 'a'))
                offer(it->id, prefix);
        }
    }
    free(v.items);
}

/* The values an argument takes. */
static void offer_values(ctl *c, const arg_spec *spec, const char *prefix)
{
    static const char *const formats[] = {"csv", "jsonl"}, *const whats[] = {"events", "balances"},
                             *const actions[] = {"checkpoint", "check", "replay", "verify"};
    const char *n = spec->name;
    if (spec->kind == KIND_UNIT)
        offer_ledger(c, "unit", prefix);
    else if (strcmp(n, "format") == 0)
        offer_words(formats, COUNT(formats), prefix);
    else if (strcmp(n, "WHAT") == 0)
        offer_words(whats, COUNT(whats), prefix);
    else if (strcmp(n, "ACTION") == 0)
        offer_words(actions, COUNT(actions), prefix);
    else if (strcmp(n, "type") == 0)
        offer_words(event_types, COUNT(event_types), prefix);
    else if (strcasecmp(n, "frame") == 0 || strcasecmp(n, "allocation") == 0)
        offer_ledger(c, strcasecmp(n, "frame") == 0 ? "frame" : "allocation", prefix);
    else if (strcmp(n, "TARGET") == 0)
        offer_ledger(c, "target", prefix);
    else if (strcasecmp(n, "entity") == 0)
        offer_ledger(c, "entity", prefix);
}

static const char *const common_options[] = {"--json", "--socket", "--help", "--swedish", "--wide"};

/* The options of `cmd` (and those every command takes). */
static void offer_options(const command *cmd, const char *prefix)
{
    char name[48];
    offer_words(common_options, COUNT(common_options), prefix);
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++) {
        if (cmd->args[i].flags & ARG_POSITIONAL || strcmp(cmd->args[i].name, "swedish") == 0)
            continue;
        snprintf(name, sizeof(name), "--%s", cmd->args[i].name);
        offer(name, prefix);
    }
}

/* True when `word` is an option of `cmd` (or --socket) that takes its value as the next word. */
static bool takes_value(const command *cmd, const char *word)
{
    if (strncmp(word, "--", 2) != 0 || strchr(word, '=') != NULL)
        return false;
    if (strcmp(word, "--socket") == 0)
        return true;
    int kind = cmd != NULL ? option_kind(cmd, word + 2) : -1;
    return kind >= 0 && kind != KIND_FLAG;
}

/* Candidates for the word after a command's words[0 .. n-1] (words[0] the command). */
static void complete_command(ctl *c, const command *cmd, char **words, int n, const char *cur)
{
    const char *prev = n > 0 ? words[n - 1] : "";
    if (takes_value(cmd, prev)) {
        size_t index = 0;
        for (; index < OPTS_MAX && cmd->args[index].name != NULL; index++)
            if (!(cmd->args[index].flags & ARG_POSITIONAL) &&
                strcmp(cmd->args[index].name, prev + 2) == 0)
                offer_values(c, &cmd->args[index], cur);
        return;
    }
    if (cur[0] == '-') {
        offer_options(cmd, cur);
        return;
    }
    int positional = 0;
    for (int i = 1; i < n; i++) {
        if (takes_value(cmd, words[i]))
            i++;
        else if (words[i][0] != '-')
            positional++;
    }
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++)
        if ((cmd->args[i].flags & ARG_POSITIONAL) && positional-- == 0) {
            offer_values(c, &cmd->args[i], cur);
            return;
        }
}

/* How long completion may take before it ends (SIGALRM) and the shell offers nothing. */
#define COMPLETE_SECONDS_MAX 3

/* The socket named among the words (--socket PATH or --socket=PATH), or NULL. */
static const char *socket_of(char **words, int n)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(words[i], "--socket") == 0 && i + 1 < n)
            return words[i + 1];
        if (strncmp(words[i], "--socket=", 9) == 0)
            return words[i] + 9;
    }
    return NULL;
}

/*
 * budgetctl complete [--] WORD... : the words of a command line after `budgetctl`, the last
 * being the one to complete (maybe ""). Prints the candidates that start with it, one a line:
 * commands, options, and the values an option takes (ids and unit codes read from the
 * daemon; nothing, silently, when it cannot be reached).
 */
int run_complete(const char *socket_flag, int argc, char **argv)
{
    ctl c = {.json = false, .client = NULL};
    if (argc > 0 && strcmp(argv[0], "--") == 0) {
        argc--;
        argv++;
    }
    const char *cur = argc > 0 ? argv[argc - 1] : "";
    int n = argc > 0 ? argc - 1 : 0;
    cli_quiet = true;
    alarm(COMPLETE_SECONDS_MAX); /* a shell waiting on a stuck daemon gets nothing, soon */
    if (socket_of(argv, n) != NULL)
        socket_flag = socket_of(argv, n);
    if (budget_socket_path(socket_flag, c.socket_path, sizeof(c.socket_path)) != 0)
        return EXIT_DONE;
    int at = 0;
    while (at < n && (argv[at][0] == '-' || (at > 0 && strcmp(argv[at - 1], "--socket") == 0)))
        at++;
    if (at >= n) {
        if (n > 0 && strcmp(argv[n - 1], "--socket") == 0)
            return EXIT_DONE; /* a path: the shell's own completion */
        if (cur[0] == '-') {
            static const char *const globals[] = {"--socket", "--json", "--swedish",
                                                  "--wide",   "--help", "--version"};
            offer_words(globals, COUNT(globals), cur);
        }
        for (size_t i = 0; cur[0] != '-' && command_at(i) != NULL; i++)
            offer(command_at(i)->name, cur);
        return EXIT_DONE;
    }
    const command *cmd = find_command(argv[at]);
    if (cmd != NULL)
        complete_command(&c, cmd, argv + at, n - at, cur);
    disconnect_daemon(&c);
    fflush(stdout);
    return EXIT_DONE;
}
