/*
 * The daemon's wall clock: ms since 1970, moved by a fixed offset (server_config
 * clock_offset_ms, which only budgetd-faulty sets). Any thread may read it.
 */
#ifndef BUDGET_CLOCK_H
#define BUDGET_CLOCK_H

#include <stdint.h>

/* The wall clock in ms since 1970, plus the offset. */
uint64_t clock_now_ms(void);

/* Sets the offset; once, before any other thread starts. */
void clock_set_offset_ms(int64_t offset_ms);

#endif
