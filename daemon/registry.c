/*
 * The register of units (registry.h). Flat arrays linked by uint32 indices, so that a copy is
 * one memcpy per array:
 *   units   one row per code, in the order it entered the register
 *   slots   open addressing, code -> index into units (UINT32_MAX: empty)
 *   names   every name a unit has had; a unit's row points at its current name, and each
 *           name at the one before it
 */
#include "registry.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS_MIN 16u

typedef struct {
    char code[BUDGET_UNIT_BYTES_MAX + 1];
    uint32_t name;   /* into names: the current name; REGISTRY_NONE for an implicit unit */
    uint32_t parent; /* into units, or REGISTRY_NONE */
    uint16_t names;  /* how many it has had, the current one included */
    uint8_t kind;    /* 1.. of REGISTRY_KINDS; 0 for an implicit unit */
    uint8_t closed;
} unit_row;

typedef struct {
    char text[BUDGET_TEXT_BYTES_MAX + 1];
    uint32_t before; /* the name before this one, or REGISTRY_NONE */
} name_row;

struct registry {
    unit_row *units;
    uint32_t units_len, units_cap;
    name_row *names;
    uint32_t names_len, names_cap;
    uint32_t *slots;
    uint32_t slots_mask; /* slots - 1 */
};

static const char *const kind_names[] = {"", REGISTRY_KINDS};
#define KINDS_COUNT (sizeof(kind_names) / sizeof(kind_names[0]))

static uint32_t hash_code(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* The slot holding `code`, or the empty slot where it would go. */
static uint32_t slot_of(const registry *r, const char *code)
{
    for (uint32_t i = hash_code(code) & r->slots_mask;; i = (i + 1) & r->slots_mask) {
        uint32_t u = r->slots[i];
        if (u == REGISTRY_NONE || strcmp(r->units[u].code, code) == 0)
            return i;
    }
}

static uint32_t *new_slots(uint32_t count)
{
    uint32_t *slots = malloc((size_t)count * sizeof *slots);
    if (slots != NULL)
        memset(slots, 0xff, (size_t)count * sizeof *slots);
    return slots;
}

registry *registry_new(void)
{
    registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->slots = new_slots(SLOTS_MIN);
    if (r->slots == NULL) {
        free(r);
        return NULL;
    }
    r->slots_mask = SLOTS_MIN - 1;
    return r;
}

void registry_free(registry *r)
{
    if (r == NULL)
        return;
    free(r->slots);
    free(r->names);
    free(r->units);
    free(r);
}

static void *copy_of(const void *items, size_t count, size_t cap, size_t size, bool *failed)
{
    if (cap == 0)
        return NULL;
    void *p = malloc(cap * size);
    if (p == NULL)
        *failed = true;
    else if (count > 0)
        memcpy(p, items, count * size);
    return p;
}

registry *registry_clone(const registry *r)
{
    registry *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    *c = *r;
    bool failed = false;
    size_t slots = (size_t)r->slots_mask + 1;
    c->units = copy_of(r->units, r->units_len, r->units_cap, sizeof *r->units, &failed);
    c->names = copy_of(r->names, r->names_len, r->names_cap, sizeof *r->names, &failed);
    c->slots = copy_of(r->slots, slots, slots, sizeof *r->slots, &failed);
    if (failed) {
        registry_free(c);
        return NULL;
    }
    return c;
}

/* Room for one more item after `len`; 0 or -1. */
static int grow(void **items, uint32_t *cap, uint32_t len, size_t size)
{
    if (len < *cap)
        return 0;
    uint64_t want = *cap < 8 ? 8 : (uint64_t)*cap * 2;
    if (want > UINT32_MAX / 2 || want > SIZE_MAX / size)
        return -1;
    void *p = realloc(*items, (size_t)want * size);
    if (p == NULL)
        return -1;
    *items = p;
    *cap = (uint32_t)want;
    return 0;
}

/* Keeps the table at most half full with one more unit. */
static int grow_slots(registry *r)
{
    uint64_t slots = (uint64_t)r->slots_mask + 1;
    if (((uint64_t)r->units_len + 1) * 2 <= slots)
        return 0;
    if (slots * 2 > UINT32_MAX / 2)
        return -1;
    uint32_t *grown = new_slots((uint32_t)slots * 2);
    if (grown == NULL)
        return -1;
    uint32_t *old = r->slots;
    r->slots = grown;
    r->slots_mask = (uint32_t)slots * 2 - 1;
    for (uint32_t u = 0; u < r->units_len; u++)
        r->slots[slot_of(r, r->units[u].code)] = u;
    free(old);
    return 0;
}

int registry_reserve(registry *r)
{
    if (grow((void **)&r->units, &r->units_cap, r->units_len, sizeof *r->units) != 0 ||
        grow((void **)&r->names, &r->names_cap, r->names_len, sizeof *r->names) != 0)
        return -1;
    return grow_slots(r);
}

uint32_t registry_find(const registry *r, const char *code)
{
    if (strnlen(code, BUDGET_UNIT_BYTES_MAX + 1) > BUDGET_UNIT_BYTES_MAX)
        return REGISTRY_NONE;
    return r->slots[slot_of(r, code)];
}

uint32_t registry_count(const registry *r)
{
    return r->units_len;
}

void registry_view_of(const registry *r, uint32_t i, registry_view *out)
{
    assert(i < r->units_len);
    const unit_row *u = &r->units[i];
    out->code = u->code;
    out->name = u->name == REGISTRY_NONE ? u->code : r->names[u->name].text;
    out->kind = kind_names[u->kind];
    out->parent = u->parent == REGISTRY_NONE ? "" : r->units[u->parent].code;
    out->registered = u->kind != 0;
    out->closed = u->closed != 0;
    out->former_count = u->names > 0 ? u->names - 1u : 0;
}

const char *registry_former_name(const registry *r, uint32_t i, uint32_t k)
{
    assert(i < r->units_len);
    uint32_t n = r->units[i].name;
    for (uint32_t step = 0; n != REGISTRY_NONE && step <= k; step++)
        n = r->names[n].before;
    return n == REGISTRY_NONE ? "" : r->names[n].text;
}

uint32_t registry_parent(const registry *r, uint32_t i)
{
    assert(i < r->units_len);
    return r->units[i].parent;
}

bool registry_closed(const registry *r, uint32_t i)
{
    assert(i < r->units_len);
    return r->units[i].closed != 0;
}

bool registry_registered(const registry *r, uint32_t i)
{
    assert(i < r->units_len);
    return r->units[i].kind != 0;
}

uint32_t registry_names(const registry *r, uint32_t i)
{
    assert(i < r->units_len);
    return r->units[i].names > 0 ? r->units[i].names : 1u;
}

int registry_kind_from_name(const char *name)
{
    for (size_t k = 1; k < KINDS_COUNT; k++)
        if (strcmp(kind_names[k], name) == 0)
            return (int)k;
    return 0;
}

const char *registry_kinds_text(void)
{
    return "styrelse, nämnd, förvaltning, verksamhet";
}

void registry_define(registry *r, const char *code)
{
    uint32_t slot = slot_of(r, code);
    assert(r->slots[slot] == REGISTRY_NONE && r->units_len < r->units_cap);
    uint32_t i = r->units_len++;
    unit_row *u = &r->units[i];
    memset(u, 0, sizeof *u);
    strncpy(u->code, code, BUDGET_UNIT_BYTES_MAX);
    u->name = REGISTRY_NONE;
    u->parent = REGISTRY_NONE;
    r->slots[slot] = i;
}

/* Makes `name` the current name of unit `i` (room reserved). */
static void push_name(registry *r, uint32_t i, const char *name)
{
    assert(r->names_len < r->names_cap);
    uint32_t n = r->names_len++;
    memset(&r->names[n], 0, sizeof r->names[n]); /* its padding too: a snapshot saves it */
    strncpy(r->names[n].text, name, BUDGET_TEXT_BYTES_MAX);
    r->names[n].text[BUDGET_TEXT_BYTES_MAX] = '\0';
    r->names[n].before = r->units[i].name;
    r->units[i].name = n;
    r->units[i].names++;
}

void registry_register(registry *r, const char *code, const char *name, int kind, uint32_t parent)
{
    assert(kind > 0 && (size_t)kind < KINDS_COUNT);
    uint32_t i = registry_find(r, code);
    if (i == REGISTRY_NONE) {
        registry_define(r, code);
        i = r->units_len - 1;
    }
    r->units[i].kind = (uint8_t)kind;
    r->units[i].parent = parent;
    push_name(r, i, name);
}

void registry_rename(registry *r, uint32_t i, const char *name)
{
    assert(i < r->units_len);
    push_name(r, i, name);
}

void registry_close(registry *r, uint32_t i)
{
    assert(i < r->units_len);
    r->units[i].closed = 1;
}

/* The edit distance of `a` and `b` case-insensitively (optimal string alignment: a swap of
 * neighbours counts 1), or `limit` + 1 when it is over `limit`. O(len(a) * len(b)). */
static uint32_t distance(const char *a, const char *b, uint32_t limit)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > BUDGET_UNIT_BYTES_MAX || m > BUDGET_UNIT_BYTES_MAX)
        return limit + 1;
    if ((n > m ? n - m : m - n) > limit)
        return limit + 1;
    uint32_t d[BUDGET_UNIT_BYTES_MAX + 1][BUDGET_UNIT_BYTES_MAX + 1];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (uint32_t)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (uint32_t)j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            int ca = toupper((unsigned char)a[i - 1]), cb = toupper((unsigned char)b[j - 1]);
            uint32_t best = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == toupper((unsigned char)b[j - 2]) &&
                toupper((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[n][m] > limit ? limit + 1 : d[n][m];
}

uint32_t registry_nearest(const registry *r, const char *code, uint32_t out[REGISTRY_NEAREST_MAX])
{
    size_t len = strlen(code);
    uint32_t limit = len < REGISTRY_NEAREST_LONG_BYTES ? 1 : REGISTRY_NEAREST_DISTANCE_MAX;
    uint32_t found = 0, best = limit;
    for (uint32_t u = 0; u < r->units_len; u++) {
        if (r->units[u].closed || strcmp(r->units[u].code, code) == 0)
            continue;
        uint32_t d = distance(code, r->units[u].code, best);
        size_t other = strlen(r->units[u].code);
        /* Not near when every character would have to change ("X" is not near "KS"). */
        if (d > best || d >= (len > other ? len : other))
            continue;
        if (d < best) {
            best = d;
            found = 0;
        }
        if (found < REGISTRY_NEAREST_MAX)
            out[found++] = u;
    }
    return found;
}

/* ---- saving and loading (snapio.h) ---------------------------------------------------------- */

#define REGISTRY_ROWS_MAX (UINT32_C(1) << 30)

/* The sizes of the records, first: bytes saved by a build with other records are refused. */
static const uint32_t registry_layout[2] = {sizeof(unit_row), sizeof(name_row)};

int registry_save(const registry *r, snap_sink *sink)
{
    uint32_t slots = r->slots_mask + 1;
    if (snap_put(sink, registry_layout, sizeof registry_layout) != 0 ||
        snap_put_array(sink, r->units, r->units_len, sizeof *r->units) != 0 ||
        snap_put_array(sink, r->names, r->names_len, sizeof *r->names) != 0 ||
        snap_put_array(sink, r->slots, slots, sizeof *r->slots) != 0)
        return -1;
    return 0;
}

registry *registry_load(snap_source *source)
{
    uint32_t layout[2];
    if (snap_get(source, layout, sizeof layout) != 0 ||
        memcmp(layout, registry_layout, sizeof layout) != 0)
        return NULL;
    registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    uint32_t slots, slots_cap;
    if (snap_get_array(source, (void **)&r->units, &r->units_len, &r->units_cap, sizeof *r->units,
                       REGISTRY_ROWS_MAX) != 0 ||
        snap_get_array(source, (void **)&r->names, &r->names_len, &r->names_cap, sizeof *r->names,
                       REGISTRY_ROWS_MAX) != 0 ||
        snap_get_array(source, (void **)&r->slots, &slots, &slots_cap, sizeof *r->slots,
                       REGISTRY_ROWS_MAX) != 0 ||
        !snap_pow2_in(slots, SLOTS_MIN, REGISTRY_ROWS_MAX) || r->units_len >= slots) {
        registry_free(r);
        return NULL;
    }
    r->slots_mask = slots - 1;
    for (uint32_t i = 0; i < r->units_len; i++)
        r->units[i].code[BUDGET_UNIT_BYTES_MAX] = '\0';
    for (uint32_t i = 0; i < r->names_len; i++)
        r->names[i].text[BUDGET_TEXT_BYTES_MAX] = '\0';
    return r;
}
