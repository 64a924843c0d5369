/*
 * The register of units: each unit's code, name, kind, parent, whether it is closed, and the
 * names it had before (docs/events.md, "Units"). Part of the ledger core (ledger.c keeps one
 * in its state and changes it only through ledger_apply): pure, no I/O.
 *
 * A unit is in the register once it is registered (unit.registered), or, in a log written
 * before units were registered, once a stored event names it: it is then defined under its
 * code, with no name of its own and no kind ("implicit").
 */
#ifndef BUDGET_REGISTRY_H
#define BUDGET_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/limits.h"
#include "snapio.h"

/* No unit: what registry_find returns for a code not in the register, and a unit's parent
 * when it has none. */
#define REGISTRY_NONE UINT32_MAX
/* The most names a unit has in all, its current one included: a rename past it is refused. */
#define REGISTRY_NAMES_MAX 64u
/* The most codes a did-you-mean names, and the largest edit distance it names: 1 for a code
 * of fewer than REGISTRY_NEAREST_LONG_BYTES bytes (codes are short: "KS", "SON"), else 2. */
#define REGISTRY_NEAREST_MAX 3u
#define REGISTRY_NEAREST_DISTANCE_MAX 2u
#define REGISTRY_NEAREST_LONG_BYTES 6u
/* The kinds of unit, in the order of their numbers from 1 (0: no kind, an implicit unit). */
#define REGISTRY_KINDS "styrelse", "nämnd", "förvaltning", "verksamhet"
/* The longest kind's bytes ("förvaltning" is 12 in UTF-8), with room to spare. */
#define REGISTRY_KIND_BYTES_MAX 15

typedef struct registry registry;

/* A unit as the register holds it: views valid until the register next changes. */
typedef struct {
    const char *code;
    const char *name;   /* the current name; the code for an implicit unit */
    const char *kind;   /* "" for an implicit unit */
    const char *parent; /* the parent's code, or "" */
    bool registered;    /* false: implicit, defined by an old log's use of its code */
    bool closed;
    uint32_t former_count; /* names before the current one */
} registry_view;

/* A new empty register, or NULL when out of memory. */
registry *registry_new(void);
void registry_free(registry *r);
/* A deep copy, or NULL when out of memory. */
registry *registry_clone(const registry *r);

/* The register as bytes into `sink` (snapio.h), for ledger_save: 0, or -1 when the sink fails. */
int registry_save(const registry *r, snap_sink *sink);
/* A register read back from what registry_save wrote, every count bounded by the source; NULL
 * when the bytes are not such a register (or out of memory). Only a source whose bytes are
 * authentic (snapshot.c) may be used as a register afterwards: the links between its rows are
 * as they were written, not checked here. */
registry *registry_load(snap_source *source);

/* Makes room for one more unit and one more name, so that the changes below cannot fail.
 * 0, or -1 when out of memory (the register is unchanged). */
int registry_reserve(registry *r);

/* The index of the unit `code`, or REGISTRY_NONE. */
uint32_t registry_find(const registry *r, const char *code);
/* The number of units; they are numbered 0.. in the order they entered the register. */
uint32_t registry_count(const registry *r);
void registry_view_of(const registry *r, uint32_t i, registry_view *out);
/* Former name `k` of unit `i` (0: the one just before the current name). */
const char *registry_former_name(const registry *r, uint32_t i, uint32_t k);
/* The parent of unit `i`, or REGISTRY_NONE. */
uint32_t registry_parent(const registry *r, uint32_t i);
bool registry_closed(const registry *r, uint32_t i);
bool registry_registered(const registry *r, uint32_t i);
/* The number of names unit `i` has had, its current one included (1 for an implicit unit). */
uint32_t registry_names(const registry *r, uint32_t i);

/* The number (1..) of the kind named `name`, or 0 when it is not one of REGISTRY_KINDS. */
int registry_kind_from_name(const char *name);
/* The kinds as one line for a message: "styrelse, nämnd, förvaltning, verksamhet". */
const char *registry_kinds_text(void);

/*
 * The changes; room was reserved. registry_define adds `code` as an implicit unit (it is not
 * in the register). registry_register adds it with a name and a kind, or gives an implicit
 * unit its name, kind and parent. `parent` is REGISTRY_NONE or an index.
 */
void registry_define(registry *r, const char *code);
void registry_register(registry *r, const char *code, const char *name, int kind, uint32_t parent);
void registry_rename(registry *r, uint32_t i, const char *name);
void registry_close(registry *r, uint32_t i);

/*
 * The open units whose codes are nearest to `code`, case-insensitively, by edit distance
 * (an insertion, deletion, substitution or swap of neighbours counts 1), within the distance
 * above and never `code` itself: of those at the smallest distance found, up to
 * REGISTRY_NEAREST_MAX indices into `out`, in register order. Returns how many. O(units).
 */
uint32_t registry_nearest(const registry *r, const char *code, uint32_t out[REGISTRY_NEAREST_MAX]);

#endif
