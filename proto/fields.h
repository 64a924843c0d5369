/*
 * The syntax of a request's fields, shared by the daemon (which checks every command before it
 * is written) and its clients (which check arguments before anything is sent): ids and units
 * of A-Z a-z 0-9 . _ : - and text of UTF-8, within the limits of budget/limits.h. No
 * allocation, no I/O.
 */
#ifndef BUDGET_FIELDS_H
#define BUDGET_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

/* 1..max bytes, each one of A-Z a-z 0-9 . _ : - (ids, units and other words). */
bool budget_word_valid(const char *s, size_t len, size_t max);

/* An id: a word of 1..BUDGET_ID_BYTES_MAX bytes. */
bool budget_id_valid(const char *s, size_t len);

/* A unit code: a word of 1..BUDGET_UNIT_BYTES_MAX bytes. */
bool budget_unit_valid(const char *s, size_t len);

/* The `n` bytes at `s` are UTF-8 as RFC 3629 has it; control characters count as valid. */
bool budget_utf8_valid(const void *s, size_t n);

/* Ledger text: len bytes within [min, BUDGET_TEXT_BYTES_MAX], valid UTF-8 with no control
 * character (budget_text_clean). */
bool budget_text_valid(const char *s, size_t len, size_t min);

#endif
