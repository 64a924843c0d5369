/*
 * The journal that libplshim.so (plshim.c) writes and plimage.c reads: what budgetd wrote to
 * the regular files of its data folder, and when those writes were made durable.
 *
 * A journal is a sequence of records, each a pl_record header followed by `len` bytes:
 *
 *   PL_NAME        file, name (len bytes): the file id `file` is DATA/name from here on
 *   PL_WRITE       file, offset, len bytes: what a write put there (after the call returned,
 *                  only the bytes it reports written); flags PL_DURABLE when written through
 *                  an O_SYNC/O_DSYNC descriptor (durable on return)
 *   PL_SIZE        file, offset = the new size (ftruncate, O_TRUNC)
 *   PL_EXTEND      file, offset = a size the file grows to if smaller (fallocate)
 *   PL_SYNC_BEGIN  file, seq: fsync/fdatasync entered
 *   PL_SYNC_END    file, seq of its PL_SYNC_BEGIN: that call returned 0
 *
 * A name binds its id for the records after it, and a sync's seq is unique within one process:
 * a journal may hold the runs of several processes, one after another (not at once).
 *
 * A write or size change is durable when it carries PL_DURABLE or comes before a
 * PL_SYNC_BEGIN of its file whose PL_SYNC_END is in the journal. A journal cut short by a
 * kill ends in a partial record, which the reader ignores.
 */
#ifndef BUDGET_PLJOURNAL_H
#define BUDGET_PLJOURNAL_H

#include <stdint.h>

#define PL_MAGIC 0x504c4a31u /* "PLJ1" */
#define PL_FILES_MAX 64
#define PL_NAME_MAX 255

enum {
    PL_NAME = 1,
    PL_WRITE = 2,
    PL_SIZE = 3,
    PL_EXTEND = 4,
    PL_SYNC_BEGIN = 5,
    PL_SYNC_END = 6,
};

#define PL_DURABLE 1u

typedef struct {
    uint32_t magic;
    uint16_t type;
    uint16_t flags;
    uint32_t file;
    uint32_t len;
    uint64_t offset;
    uint64_t seq;
} pl_record;

#endif
