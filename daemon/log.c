/* budgetd's log: timestamped lines on stderr, written whole so threads do not interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "proto/text.h"

static log_level log_threshold = LOG_LEVEL_INFO;

void log_set_level(log_level level)
{
    log_threshold = level;
}

void log_write(log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char line[1024], message[1024];
    struct timespec now;
    struct tm tm;
    va_list ap;
    int n, m;

    if (level < log_threshold)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ budgetd %s: ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000,
                 names[level]);
    va_start(ap, fmt);
    m = vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (m < 0)
        message[0] = '\0';
    /* One record is one line: a message that still holds a client's raw bytes (a newline that
     * would start a forged record, a terminal escape, bytes that are not UTF-8) is escaped. Its
     * callers escape what they quote; this is the guarantee. */
    size_t len = strnlen(message, sizeof(message));
    if (budget_text_clean(message, len))
        n += snprintf(line + n, sizeof(line) - (size_t)n - 1, "%s", message);
    else
        n += (int)budget_escape(line + n, sizeof(line) - (size_t)n - 1, message, len);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* One write(2) per line: records from the writer thread and the loop never interleave. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}
