/* Shared helpers of the benchmarks: clock, latency percentiles, result lines, /proc. */
#include "bench_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double bench_now_s(void)
{
    return (double)bench_now_ns() / 1e9;
}

void bench_latency_init(bench_latency *l)
{
    memset(l, 0, sizeof(*l));
}

void bench_latency_free(bench_latency *l)
{
    free(l->ns);
    memset(l, 0, sizeof(*l));
}

int bench_latency_add(bench_latency *l, uint64_t ns)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint64_t *grown = realloc(l->ns, cap * sizeof(*grown));
        if (!grown)
            return -1;
        l->ns = grown;
        l->cap = cap;
    }
    l->ns[l->count++] = ns;
    l->sorted = false;
    return 0;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t bench_latency_at(bench_latency *l, double q)
{
    if (l->count == 0)
        return 0;
    if (!l->sorted) {
        qsort(l->ns, l->count, sizeof(*l->ns), compare_u64);
        l->sorted = true;
    }
    double at = q * (double)(l->count - 1);
    size_t i = (size_t)(at + 0.5);
    if (i >= l->count)
        i = l->count - 1;
    return l->ns[i];
}

void bench_result(const char *key, const char *fmt, ...)
{
    va_list ap;
    printf("RESULT %s ", key);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

double bench_arg_double(const char *text, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v > 0)) {
        fprintf(stderr, "%s wants a positive number, not \"%s\"\n", what, text);
        exit(2);
    }
    return v;
}

long bench_arg_long(const char *text, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v <= 0) {
        fprintf(stderr, "%s wants a positive integer, not \"%s\"\n", what, text);
        exit(2);
    }
    return v;
}

long bench_proc_status_kib(int pid, const char *key)
{
    char path[64], line[256];
    size_t key_len = strlen(key);
    long kib = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
            kib = strtol(line + key_len + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}
