/* demo/demo.h: what the demo's five phases share: clock, random numbers, stop-latency logs, and
 * each phase's entry point. demo.c has the bank phase and main; graphs.c has the object-graph
 * phase; sharing.c has the shared-dictionary phase; gc.c has the cycle-collector phase; stackrefs.c has the
 * stack-reference phase. */
#ifndef FTRT_DEMO_H
#define FTRT_DEMO_H

#include <stddef.h>
#include <stdint.h>

uint64_t demo_now_ns(void);
void demo_sleep_ms(long ms);
/* xorshift64*: fast, per thread, good enough to pick accounts, sizes and destinations. */
uint64_t demo_random(uint64_t *state);
void demo_format_duration(char *out, size_t size, uint64_t ns);
void demo_format_bytes(char *out, size_t size, uint64_t bytes);

/* The stop latencies an auditor measured, one per stop. */
typedef struct demo_latency_log {
    uint64_t *ns;
    size_t count, capacity;
} demo_latency_log;

void demo_latency_record(demo_latency_log *log, uint64_t ns);
/* Prints "  latency  p50 .., p99 .., max .." (sorting the log), then frees it. */
void demo_latency_print_and_free(demo_latency_log *log);

/* Each phase runs for about run_ms, prints its report and returns 0 if its invariants held, 1 if
 * not, 2 if it could not be set up. */
int demo_bank_phase(long run_ms, long cpus);
int demo_graphs_phase(long run_ms, long cpus);
int demo_sharing_phase(long run_ms, long cpus);
/* trace: a file for the phase's trace (ftrt/trace.h), or NULL. */
int demo_gc_phase(long run_ms, long cpus, const char *trace);
int demo_stackrefs_phase(long run_ms, long cpus);

#endif
