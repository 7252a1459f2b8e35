#ifndef METRICS_COST_MALLOC_COUNTER_H
#define METRICS_COST_MALLOC_COUNTER_H
/// Counts malloc, calloc, realloc and aligned allocations (all threads) while counting is on.
void malloc_counter_start(void);
/// Stops counting and returns the allocations made since `malloc_counter_start`.
long malloc_counter_stop(void);
#endif
