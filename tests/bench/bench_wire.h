/*
 * budgetd's wire protocol for the benchmarks: request frames written with the codec's
 * allocation-free writer, responses read with its reader, and a blocking connection that
 * reads whole frames with a deadline. Only what the benchmarks need (docs/protocol.md).
 */
#ifndef BUDGET_BENCH_WIRE_H
#define BUDGET_BENCH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/mp.h"

/* Every request the benchmarks send fits in this. */
#define BENCH_REQUEST_BYTES_MAX 512

/* Starts a request frame in `buf`: the header's place, then {"id", "op"[, "args": map of
 * `args` entries]} (no "args" when `args` is 0). Write the args' keys and values next. */
void bench_request_begin(mp_writer *w, uint8_t *buf, size_t cap, uint64_t id, const char *op,
                         uint32_t args);
/* Patches the frame header; returns the frame's size, or 0 when it did not fit. */
size_t bench_request_end(mp_writer *w);
void bench_kv_str(mp_writer *w, const char *key, const char *value);
void bench_kv_int(mp_writer *w, const char *key, int64_t value);

/* A decoded response envelope. `result` is a reader over the result value when ok. */
typedef struct {
    uint64_t id;
    bool ok;
    char code[32];
    char message[160];
    mp_reader result;
} bench_response;

/* Reads {"id", "ok", "result" | "error": {"code", "message"}}; -1 when it is not one. */
int bench_parse_response(const uint8_t *body, size_t size, bench_response *out);
/* The uint / bool under `key` of a result map, or `fallback` when absent or another type. */
uint64_t bench_result_uint(const bench_response *r, const char *key, uint64_t fallback);
bool bench_result_bool(const bench_response *r, const char *key, bool fallback);
/* The uint under `key` of the map under `map` of a result map (`next` of a balances page), or
 * `fallback`. */
uint64_t bench_result_inner_uint(const bench_response *r, const char *map, const char *key,
                                 uint64_t fallback);

/* A connected UNIX stream socket, non-blocking when asked; -1 with errno set. */
int bench_connect(const char *path, bool nonblocking);
/* Writes all of `n` bytes to a blocking socket; 0 or -1. */
int bench_write_all(int fd, const void *data, size_t n);

/* Whole frames from a blocking socket, each within `timeout_ms`. */
typedef struct {
    int fd;
    int timeout_ms;
    uint8_t *buf;
    size_t len, cap, used;
} bench_conn;

/* Connects; 0, or -1 with errno set. */
int bench_conn_open(bench_conn *c, const char *path, int timeout_ms);
void bench_conn_close(bench_conn *c);
/* The next frame's body, valid until the next call; 0, or -1 (timeout, closed, bad frame). */
int bench_conn_read(bench_conn *c, const uint8_t **body, uint32_t *size);
/* Sends one request frame and reads its answer into `out` (valid until the next read). */
int bench_conn_call(bench_conn *c, const uint8_t *frame, size_t size, bench_response *out);

#endif
