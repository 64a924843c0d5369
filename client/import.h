/*
 * What the imports of budgetctl share (budgetctl_import.c: `import budget`; budgetctl_outcome.c:
 * `import outcome`): the CSV reader for files as Swedish Excel saves them, the limits of the
 * file, and the one `batch` request that writes every row or none.
 */
#ifndef BUDGETCTL_IMPORT_H
#define BUDGETCTL_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "budget/limits.h"
#include "client/budgetctl.h"

/* The file is read whole; its rows become one batch, which holds at most 1000 writes in a
 * request of at most 1 MiB. */
#define IMPORT_FILE_BYTES_MAX (1024u * 1024u)
#define IMPORT_ROWS_MAX 1000u
#define IMPORT_COLUMNS_MAX 32u
#define IMPORT_CELL_BYTES_MAX 1024u
#define IMPORT_RETRIES_MAX 3u

/* A row read and checked: its line, type, id and its write packed as {"op", "args"}. */
typedef struct {
    unsigned line;
    size_t type;
    char id[BUDGET_ID_BYTES_MAX + 1];
    msgpack_sbuffer write;
} import_row;

/* A CSV reader over the whole file: `;` between fields, fields in double quotes where they
 * need it, CRLF or LF. */
typedef struct {
    const char *p, *end;
    unsigned line; /* of the next byte */
} csv_reader;

typedef struct {
    char *cells[IMPORT_COLUMNS_MAX];
    size_t count;
    unsigned line; /* where the record starts */
    char buf[IMPORT_COLUMNS_MAX * (IMPORT_CELL_BYTES_MAX + 1)];
} csv_record;

/* A reader at the start of `text`, after the UTF-8 byte order mark Excel writes, if any. */
void csv_reader_init(csv_reader *r, const char *text, size_t size);
/* The next record, its cells trimmed: 1, 0 at the end of the file, -1 with `why` (the rest is
 * not read). At most IMPORT_COLUMNS_MAX cells of IMPORT_CELL_BYTES_MAX bytes. */
int csv_next(csv_reader *r, csv_record *rec, char *why, size_t why_size);
bool csv_record_empty(const csv_record *rec);
/* Lower case of ASCII and of Å Ä Ö (and the other Latin-1 capitals), in place. */
void import_fold_case(char *s);

/* Reads a regular file whole: at most IMPORT_FILE_BYTES_MAX bytes (a NUL after them). NULL
 * after saying why. */
char *import_read_file(const char *path, size_t *size);

/* The args of `batch`: {"dry_run", "writes": [each row's write]}. 0, or -1 out of memory. */
int import_pack_batch(msgpack_sbuffer *sb, const import_row *rows, size_t count, bool dry_run);
/* Sends the batch; after a lost connection or `unavailable` the same batch again (its ids make
 * a retry answer as before). 0 with `out` (any answer), or an exit status after saying why. */
int import_send_batch(ctl *c, const msgpack_sbuffer *args, budget_response *out);
/* A refused batch: each refusal with the line of its row, *refused their number. Returns
 * EXIT_REFUSED. */
int import_say_refusals(const char *path, const import_row *rows, size_t count,
                        const budget_response *r, unsigned *refused);
/* The head now, to tell a first import from a repeated one. 0 or an exit status. */
int import_head_now(ctl *c, uint64_t *head);

#endif
