/*
 * A data folder as a power loss could have left it (plimage.c): the folder as it was when the
 * daemon started (taken as durable), every write the journal of libplshim.so (pljournal.h)
 * shows durable, and, by mode, a subset of the others.
 */
#ifndef BUDGET_PLIMAGE_H
#define BUDGET_PLIMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PL_MODE_NONE,   /* every write after its file's last completed sync is dropped */
    PL_MODE_RANDOM, /* each such write is kept with probability 1/2, in journal order */
    PL_MODE_TORN,   /* like random, and a kept write may be cut at a 512-byte boundary */
} pl_mode;

typedef struct {
    uint64_t records; /* journal records read */
    uint64_t writes;  /* write and size records of tracked files */
    uint64_t durable; /* of them, durable */
    uint64_t kept;    /* not durable, kept */
    uint64_t dropped; /* not durable, dropped */
    uint64_t torn;    /* kept, but only a prefix */
    uint64_t syncs;   /* completed syncs */
    uint64_t files;   /* tracked files written to the image */
    uint64_t bytes_dropped;
} pl_image_stats;

/* "none", "random", "torn"; NULL otherwise. */
const char *pl_mode_name(pl_mode mode);
/* 0 and *mode set, or -1 when `name` is none of them. */
int pl_mode_parse(const char *name, pl_mode *mode);

/*
 * Writes the folder `out` (which must not exist): each tracked file (a regular file directly
 * in `base` or named in `journal`, except lock.mdb and budgetd.lock) as `base` had it, with
 * the journal's writes applied as `mode` and `seed` choose; everything else (subfolders,
 * lock files) copied from `live` as it is. A tracked file that is not in `live` is left out;
 * one that is not in `base` is written only when a sync of it completed or one of its writes
 * was kept. 0, or -1 with the reason in `why`.
 */
int pl_image_make(const char *journal, const char *base, const char *live, const char *out,
                  pl_mode mode, uint64_t seed, pl_image_stats *stats, char *why, size_t why_size);

/* Copies the folder `from` to `to` (which must not exist): regular files, folders and symbolic
 * links, with their modes. 0, or -1 with the reason in `why`. */
int pl_copy_tree(const char *from, const char *to, char *why, size_t why_size);

#endif
