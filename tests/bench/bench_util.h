/*
 * What the benchmarks in tests/bench share: a monotonic clock, a latency recorder with
 * percentiles, machine-readable result lines, and the shape of the events the load generator
 * makes (so that the raw LMDB baseline stores events of the same size).
 *
 * Every benchmark prints its figures as lines "RESULT <key> <value>" on stdout; scripts/bench.sh
 * collects them into one table. Anything else a benchmark prints is for people.
 */
#ifndef BUDGET_BENCH_UTIL_H
#define BUDGET_BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- time ------------------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in nanoseconds, and in seconds. */
uint64_t bench_now_ns(void);
double bench_now_s(void);

/* ---- latency --------------------------------------------------------------------------- */

/* Every sample kept (8 bytes each), sorted once when a percentile is first asked. */
typedef struct {
    uint64_t *ns;
    size_t count, cap;
    bool sorted;
} bench_latency;

void bench_latency_init(bench_latency *l);
void bench_latency_free(bench_latency *l);
/* Adds one sample; returns -1 when out of memory (the sample is dropped). */
int bench_latency_add(bench_latency *l, uint64_t ns);
/* The sample at fraction `q` (0.5, 0.99, 0.999) in nanoseconds; 0 when there is none. */
uint64_t bench_latency_at(bench_latency *l, double q);

/* ---- results --------------------------------------------------------------------------- */

/* Prints "RESULT <key> <value>" with the value formatted by `fmt`, and flushes stdout. */
void bench_result(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- options --------------------------------------------------------------------------- */

/* Parses a positive number (seconds, counts) or exits with status 2 naming `what`. */
double bench_arg_double(const char *text, const char *what);
long bench_arg_long(const char *text, const char *what);

/* ---- /proc ----------------------------------------------------------------------------- */

/* A "Key:   N kB" line of /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile), in KiB; -1 when
 * it cannot be read. */
long bench_proc_status_kib(int pid, const char *key);

/* ---- the shape of load-generator events ------------------------------------------------ */

/* The fiscal year, the unit of the frames, the texts and amounts of what the load generator
 * writes. bench_lmdb encodes real events with these so its values have the same size. */
#define BENCH_YEAR 2026
#define BENCH_FRAME_UNIT "KS"
#define BENCH_ALLOCATION_UNIT "SON"
#define BENCH_PURPOSE "Lastprov: trygghetsarbete i Skäggetorp"
#define BENCH_NOTE "Avrop enligt plan, kvartal 3"
#define BENCH_REFERENCE "KS 2026-08-24 § 241"
/* The loadgen's id of the n-th write of connection `conn`, run `tag`: "lg<tag>-c<conn>-<n>". */
#define BENCH_WRITE_ID_FORMAT "lg%s-c%u-%llu"
/* The frame and allocation ids its appends name, as "lg<tag>-f<i>" and "lg<tag>-a<i>". */
#define BENCH_FRAME_ID_FORMAT "lg%s-f%u"
#define BENCH_ALLOCATION_ID_FORMAT "lg%s-a%u"
#define BENCH_TAG_EXAMPLE "4f2a1c"

#endif
