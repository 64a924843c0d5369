/* The daemon's wall clock (clock.h). */
#include <time.h>

#include "clock.h"

static int64_t clock_offset_ms;

uint64_t clock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + clock_offset_ms);
}

void clock_set_offset_ms(int64_t offset_ms)
{
    clock_offset_ms = offset_ms;
}
