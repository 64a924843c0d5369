/*
 * What the imports share (import.h): the CSV reader, reading the file, and the batch.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "budget/errors.h"
#include "client/import.h"

/* ---- CSV ------------------------------------------------------------------------------ */

void csv_reader_init(csv_reader *r, const char *text, size_t size)
{
    r->p = text;
    r->end = text + size;
    r->line = 1;
    if (size >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        r->p += 3; /* the byte order mark Excel writes */
}

void import_fold_case(char *s)
{
    for (unsigned char *u = (unsigned char *)s; *u; u++) {
        if (*u >= 'A' && *u <= 'Z')
            *u = (unsigned char)(*u + 32);
        else if (*u == 0xc3 && u[1] >= 0x80 && u[1] <= 0x9e && u[1] != 0x97)
            u[1] = (unsigned char)(u[1] + 0x20), u++;
    }
}

/* Reads one quoted or plain cell at r->p into `out` (room for IMPORT_CELL_BYTES_MAX + 1);
 * stops before the `;` or the end of the line. 0, or -1 with `why`. */
static int csv_cell(csv_reader *r, char *out, char *why, size_t why_size)
{
    size_t n = 0;
    bool quoted = r->p < r->end && *r->p == '"';

    if (quoted)
        r->p++;
    while (r->p < r->end) {
        char ch = *r->p;
        if (quoted && ch == '"') {
            if (r->p + 1 < r->end && r->p[1] == '"') {
                r->p++;
            } else {
                quoted = false;
                r->p++;
                while (r->p < r->end && *r->p == ' ')
                    r->p++;
                if (r->p < r->end && *r->p != ';' && *r->p != '\r' && *r->p != '\n') {
                    snprintf(why, why_size, "text after the closing quote of a field");
                    return -1;
                }
                break;
            }
        } else if (!quoted && (ch == ';' || ch == '\r' || ch == '\n')) {
            break;
        } else if (ch == '\n') {
            r->line++; /* a line break inside quotes */
        }
        if (n == IMPORT_CELL_BYTES_MAX) {
            snprintf(why, why_size, "a field longer than %u bytes", IMPORT_CELL_BYTES_MAX);
            return -1;
        }
        out[n++] = *r->p++;
    }
    if (quoted) {
        snprintf(why, why_size, "a quote that is never closed");
        return -1;
    }
    out[n] = '\0';
    return 0;
}

/* Cuts the spaces around a plain cell. */
static char *csv_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

int csv_next(csv_reader *r, csv_record *rec, char *why, size_t why_size)
{
    if (r->p >= r->end)
        return 0;
    rec->count = 0;
    rec->line = r->line;
    for (;;) {
        if (rec->count == IMPORT_COLUMNS_MAX) {
            snprintf(why, why_size, "more than %u fields", IMPORT_COLUMNS_MAX);
            return -1;
        }
        char *cell = rec->buf + rec->count * (IMPORT_CELL_BYTES_MAX + 1);
        if (csv_cell(r, cell, why, why_size) != 0)
            return -1;
        rec->cells[rec->count++] = csv_trim(cell);
        if (r->p < r->end && *r->p == ';') {
            r->p++;
            continue;
        }
        break;
    }
    if (r->p < r->end && *r->p == '\r')
        r->p++;
    if (r->p < r->end && *r->p == '\n')
        r->p++;
    r->line++;
    return 1;
}

bool csv_record_empty(const csv_record *rec)
{
    for (size_t i = 0; i < rec->count; i++)
        if (rec->cells[i][0])
            return false;
    return true;
}

char *import_read_file(const char *path, size_t *size)
{
    FILE *in = fopen(path, "rb");
    struct stat st;
    if (!in || fstat(fileno(in), &st) != 0 || !S_ISREG(st.st_mode)) {
        complain(0, "cannot read %s: %s", path, in ? "not a regular file" : strerror(errno));
        if (in)
            fclose(in);
        return NULL;
    }
    char *text = malloc(IMPORT_FILE_BYTES_MAX + 1);
    size_t n = text ? fread(text, 1, IMPORT_FILE_BYTES_MAX + 1, in) : 0;
    bool failed = !text || ferror(in);
    fclose(in);
    if (failed || n > IMPORT_FILE_BYTES_MAX) {
        complain(0, "cannot read %s: %s", path,
                 failed ? "read error or out of memory" : "larger than 1 MiB; split the file");
        free(text);
        return NULL;
    }
    text[n] = '\0';
    *size = n;
    return text;
}

/* ---- the batch ---------------------------------------------------------------------------- */

int import_pack_batch(msgpack_sbuffer *sb, const import_row *rows, size_t count, bool dry_run)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int rc = msgpack_pack_map(&pk, 2);
    rc |= msgpack_pack_str_with_body(&pk, "dry_run", 7);
    rc |= dry_run ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    rc |= msgpack_pack_str_with_body(&pk, "writes", 6);
    rc |= msgpack_pack_array(&pk, (uint32_t)count);
    for (size_t i = 0; i < count; i++)
        rc |= msgpack_sbuffer_write(sb, rows[i].write.data, rows[i].write.size);
    return rc == 0 ? 0 : -1;
}

static void sleep_ms(unsigned ms)
{
    struct timespec left = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

int import_send_batch(ctl *c, const msgpack_sbuffer *args, budget_response *out)
{
    static const unsigned wait_ms[IMPORT_RETRIES_MAX] = {100, 300, 900};
    for (unsigned attempt = 0;; attempt++) {
        int rc = connect_daemon(c);
        if (rc != 0)
            return rc;
        rc = budget_client_call(c->client, "batch", args->data, args->size, out);
        if (rc == 0 && (out->ok || out->err != BUDGET_EUNAVAILABLE))
            return 0;
        if (attempt == IMPORT_RETRIES_MAX) {
            if (rc == 0)
                return 0; /* still unavailable: the daemon's answer is reported */
            return complain(EXIT_CONNECTION, "connection to budgetd lost: %s", client_error(rc));
        }
        if (rc == 0)
            budget_response_free(out);
        disconnect_daemon(c);
        complain(0, "%s; sending the same batch again in %u ms",
                 rc == 0 ? "budgetd is unavailable" : "connection lost", wait_ms[attempt]);
        sleep_ms(wait_ms[attempt]);
    }
}

int import_say_refusals(const char *path, const import_row *rows, size_t count,
                        const budget_response *r, unsigned *refused)
{
    const msgpack_object *error = budget_map_get(&r->unpacked.data, "error");
    const msgpack_object *list = error ? budget_map_get(error, "refusals") : NULL;
    if (!list || list->type != MSGPACK_OBJECT_ARRAY)
        return complain(EXIT_REFUSED, "%s: %s", r->code, r->message);
    *refused = list->via.array.size;
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *x = &list->via.array.ptr[i];
        int64_t index = budget_map_int(x, "index", -1);
        char code[32], message[BUDGET_TEXT_BYTES_MAX + 1];
        budget_map_str(x, "code", code, sizeof(code));
        budget_map_str(x, "message", message, sizeof(message));
        if (index >= 0 && (size_t)index < count)
            complain(0, "%s:%u: %s: %s", path, rows[index].line, code, message);
        else
            complain(0, "%s: %s: %s", path, code, message);
    }
    return EXIT_REFUSED;
}

int import_head_now(ctl *c, uint64_t *head)
{
    budget_response r;
    int rc = call(c, "hello", NULL, &r);
    if (rc != 0)
        return rc;
    *head = (uint64_t)budget_map_int(&r.result, "head", 0);
    budget_response_free(&r);
    return 0;
}
