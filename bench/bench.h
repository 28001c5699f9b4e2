/* bench.h: the small framework every ftrt benchmark file is written against.
 *
 * The numbers on a shared 2-vCPU guest drift between runs, so every figure is a comparison made inside
 * one process: the baseline and ftrt run alternately (A B A B ...) after a warm-up, and the figure is
 * the median of the per-repetition results. This header gives the pieces for that: a monotonic clock,
 * medians and percentiles, the interleaving loop, pinned thread teams with a start gate, the
 * cache-line ping-pong probe that tells a reader whether two threads were placed sensibly, a meter of
 * other processes' CPU use, and the registry that prints each figure and writes results.json.
 *
 * Adding a figure: write `void bench_<area>_<what>(const bench_config *cfg, const char *name)` in
 * bench_<area>.c, declare it below, list it in main.c's table, and have it call bench_report() once.
 * A baseline library that may be absent (liburcu) is found by bench/CMakeLists.txt, which then
 * defines FTRT_BENCH_HAVE_<NAME>; code using it sits under that macro, and without it the figure is
 * left out of the table (or reports against the baselines it has). mimalloc is the exception: it
 * is loaded at run time (see bench_heap.c), and its figure is skipped with a note when absent.
 * Boehm GC (FTRT_BENCH_HAVE_BOEHM_GC) and CPython (the python3 a figure runs as a child process)
 * are baselines of one figure each, which stays in the table and says it is skipped without them
 * (bench_gc.c). */
#ifndef FTRT_BENCH_H
#define FTRT_BENCH_H

/* Affinity calls (pthread_setaffinity_np, cpu_set_t) are GNU extensions. Include this header first. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Data written by different threads is kept 128 bytes apart, not 64: Intel's adjacent-line
 * prefetcher fetches lines in aligned pairs, so neighbours on one 128-byte pair still interfere. */
#define BENCH_SEPARATION 128
#define BENCH_ALIGNED _Alignas(BENCH_SEPARATION)

/* Tell the compiler that memory may have been read or written here, without emitting anything. */
#define BENCH_CLOBBER() __asm__ __volatile__("" ::: "memory")
/* Start the code that follows on a 64-byte boundary (a tiny timed loop's speed depends on whether it
 * straddles one of the front end's 64-byte blocks). */
#define BENCH_ALIGN_CODE() __asm__ __volatile__(".p2align 6")
/* Make the compiler believe a value is both used and changed, so a loop computing it cannot be
 * folded, vectorised or hoisted, while the value itself stays in a register. */
#define BENCH_KEEP(value) __asm__ __volatile__("" : "+r"(value))

/* How a run was asked for. quick shortens every figure (fewer repetitions, shorter windows). */
typedef struct bench_config {
    bool quick;
    int repetitions; /* interleaved repetitions per side after the warm-up; >= 5 */
    int cpu_count;   /* CPUs this process may run on */
    int cpus[2];     /* the two CPUs two-thread figures pin to (equal if only one is allowed) */
} bench_config;

/* Fill cfg: repetitions for the mode, and the CPUs this process may use. Call once, first. */
void bench_config_init(bench_config *cfg, bool quick);

/* ---- time and statistics ---------------------------------------------------------------------- */

uint64_t bench_now_ns(void);
/* Sort in place and return the median. */
double bench_median(double *values, size_t count);
/* The p-th percentile (0..100, nearest rank) of count values; reorders the array (selection). */
uint32_t bench_percentile_u32(uint32_t *values, size_t count, double p);
double bench_percentile_double(double *values, size_t count, double p);
/* Busy-wait for about ns nanoseconds (a stand-in for work between measured events). */
void bench_spin_ns(uint64_t ns);

/* A side statistic gathered once per repetition (a p50 beside the p99 that is the figure), so it
 * can be summarised the same way: by its median. */
#define BENCH_MAX_REPETITIONS 64
typedef struct bench_series {
    double values[BENCH_MAX_REPETITIONS];
    int count;
} bench_series;

/* Ignored during a warm-up run (see bench_warming_up). */
void bench_series_add(bench_series *s, double value);
double bench_series_median(bench_series *s);

/* ---- interleaving ----------------------------------------------------------------------------- */

/* One side of a comparison: run once and return a per-repetition result (for example ns per op). */
typedef struct bench_side {
    const char *label;
    double (*run)(void *arg);
    void *arg;
} bench_side;

typedef struct bench_comparison {
    double median_a;     /* median of side A's results */
    double median_b;     /* median of side B's results */
    double median_ratio; /* median over repetitions of A / B from the same repetition */
} bench_comparison;

/* One warm-up run of each side, then cfg->repetitions runs of A then B. */
bench_comparison bench_interleave(const bench_config *cfg, const bench_side *a, const bench_side *b);
/* Whether bench_interleave is in its warm-up runs: side statistics should not be recorded then. */
bool bench_warming_up(void);

/* ---- threads ---------------------------------------------------------------------------------- */

/* Create one thread, then join it: glibc switches its locks and malloc to their multi-threaded paths
 * for good once a process has ever had a second thread, and a real user's process has. */
void bench_make_process_threaded(void);
/* Pin the calling thread to one CPU; false (with a warning printed once) if the kernel refused. */
bool bench_pin_self(int cpu);
/* Undo bench_pin_self: allow every CPU the process started with. */
void bench_unpin_self(void);

/* A reusable spinning barrier for pinned threads (which would only lose time in the kernel). */
typedef struct bench_gate {
    BENCH_ALIGNED _Atomic(uint32_t) arrived;
    _Atomic(uint32_t) generation;
    uint32_t parties;
} bench_gate;

void bench_gate_init(bench_gate *g, uint32_t parties);
void bench_gate_wait(bench_gate *g);

/* Run fn(arg_i) on `count` new threads, thread i pinned to cpus[i % 2] of cfg, and join them all. */
typedef void *(*bench_thread_fn)(void *arg);
void bench_team_run(const bench_config *cfg, int count, bench_thread_fn fn, void *args,
                    size_t arg_size);

/* The one-way hand-off time of one cache line between cfg's two CPUs, in ns (median of 5). */
double bench_pingpong_ns(const bench_config *cfg);
/* Print the probe line that heads every two-thread figure. */
void bench_print_probe(const bench_config *cfg);
/* Print how often a thread spinning alone on each CPU loses it (the host or another process taking
 * the vCPU): the floor under every tail-latency figure. */
void bench_print_stalls(const bench_config *cfg);

/* ---- load ------------------------------------------------------------------------------------- */

typedef struct bench_load_sample {
    uint64_t wall_ns;
    uint64_t busy_ticks;  /* all CPUs' non-idle time from /proc/stat, steal excluded */
    uint64_t steal_ticks; /* time the hypervisor gave our vCPUs to someone else */
    uint64_t self_ticks;  /* this process's user + system time */
} bench_load_sample;

typedef struct bench_load {
    double other_fraction; /* other processes' CPU time / (wall time x CPUs) */
    double steal_fraction; /* stolen time / (wall time x CPUs) */
    double wall_s;
} bench_load;

bench_load_sample bench_load_sample_now(void);
bench_load bench_load_between(const bench_load_sample *start, const bench_load_sample *end);

/* ---- results ---------------------------------------------------------------------------------- */

/* Record and print one figure. goal is like "<= 1.0"; raw_a / raw_b are the two sides' medians in
 * raw_unit (pass raw_unit NULL when the figure has no two sides). Lines are printed at once. */
void bench_report(const char *name, double value, const char *unit, const char *baseline,
                  const char *goal, const char *label_a, double raw_a, const char *label_b,
                  double raw_b, const char *raw_unit);
/* Attach individual samples (one per collection, per stop: what a percentile figure summarises) to
 * the figure being measured, for the histograms of scripts/bench-report. Calls with the same name add
 * to one set, so call it once per repetition with that repetition's samples; the values are copied,
 * and calls during a warm-up run are ignored. The sets go with the figure that bench_report() records
 * next (or, called after it, with the figure just recorded) and are written under its "samples". */
void bench_report_samples(const char *name, const char *unit, const double *values, size_t n);
/* Print an informational line under the current figure (not recorded in the JSON). */
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Mark the start of a figure, so its line can show the load measured while it ran. */
void bench_figure_begin(void);
/* Write every reported figure as a JSON array of objects, one per figure: name, value (null when not
 * finite), unit, baseline, goal and met (whether value meets goal); label_a, raw_a, label_b, raw_b and
 * raw_unit when the figure has two sides; samples ([{name, unit, values}]) when it has any. False on
 * I/O failure (message printed). */
bool bench_write_json(const char *path);
/* How many reported figures missed their goal. */
int bench_missed_goals(void);
/* Report a failed sanity check (e.g. a lost update) and make the run exit non-zero. */
void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool bench_failed(void);

/* When one member of a team worked: written by the member, read after the team has joined. */
typedef struct bench_span {
    uint64_t start_ns, end_ns;
} bench_span;
/* A team's wall time in seconds, from the first member's start to the last member's end; member
 * i's span is at (const char *)first + i * stride (the spans of an array of worker structs). */
double bench_team_seconds(const bench_span *first, size_t stride, int members);

struct ft_runtime;
struct ft_thread;
struct ft_config;
/* A new runtime with the default configuration; exits the program if it cannot. */
struct ft_runtime *bench_runtime_new(void);
/* The same with a configuration (cfg may be NULL for the defaults). */
struct ft_runtime *bench_runtime_new_with(const struct ft_config *cfg);
/* Start a thread state in rt for the calling OS thread; exits the program if it cannot. */
struct ft_thread *bench_thread_start(struct ft_runtime *rt);
/* Free rt (every thread stopped); a refusal is a failed check. */
void bench_runtime_free(struct ft_runtime *rt);
/* bytes of zeroed memory, starting on a BENCH_SEPARATION boundary and padded to a multiple of it,
 * so that nothing else shares its lines; free() it. Exits the program when out of memory. */
void *bench_alloc(size_t bytes);

/* ---- figures ---------------------------------------------------------------------------------- */

typedef void (*bench_figure_fn)(const bench_config *cfg, const char *name);

void bench_mutex_uncontended(const bench_config *cfg, const char *name);
void bench_mutex_contended_throughput(const bench_config *cfg, const char *name);
void bench_mutex_wait_p999(const bench_config *cfg, const char *name);
void bench_stw_latency(const bench_config *cfg, const char *name);
void bench_safepoint_poll(const bench_config *cfg, const char *name);
void bench_rc_owner_vs_plain(const bench_config *cfg, const char *name);
void bench_rc_owner_vs_atomic(const bench_config *cfg, const char *name);
void bench_rc_nonowner_vs_atomic(const bench_config *cfg, const char *name);
void bench_rc_immortal_scaling_2t(const bench_config *cfg, const char *name);
void bench_rc_cross_thread_drop(const bench_config *cfg, const char *name);
void bench_heap_alloc_free_vs_malloc(const bench_config *cfg, const char *name);
void bench_heap_alloc_free_vs_mimalloc(const bench_config *cfg, const char *name);
void bench_heap_alloc_free_vs_mi_zalloc(const bench_config *cfg, const char *name);
void bench_heap_uninit_free_vs_mimalloc(const bench_config *cfg, const char *name);
void bench_heap_remote_free_vs_local(const bench_config *cfg, const char *name);
void bench_heap_bytes_per_object(const bench_config *cfg, const char *name);
#ifdef FTRT_BENCH_HAVE_URCU_QSBR
void bench_qsbr_quiescent_vs_urcu(const bench_config *cfg, const char *name);
void bench_qsbr_delayed_free_vs_call_rcu(const bench_config *cfg, const char *name);
#endif
void bench_qsbr_peak_memory_vs_immediate(const bench_config *cfg, const char *name);
void bench_uniqueid_scaling_2t(const bench_config *cfg, const char *name);
void bench_uniqueid_atomic_control_2t(const bench_config *cfg, const char *name);
void bench_tlbc_first_copy_vs_memcpy(const bench_config *cfg, const char *name);
void bench_dict_lookup_scaling_2t(const bench_config *cfg, const char *name);
void bench_dict_lookup_vs_rwlock_2t(const bench_config *cfg, const char *name);
void bench_gc_full_live_vs_boehm(const bench_config *cfg, const char *name);
void bench_gc_garbage_vs_cpython(const bench_config *cfg, const char *name);
void bench_gc_young_vs_heap_size(const bench_config *cfg, const char *name);
void bench_gc_scheduling_overhead(const bench_config *cfg, const char *name);
void bench_gc_young_pause_p99(const bench_config *cfg, const char *name);
void bench_gc_stack_scan_ns_per_slot(const bench_config *cfg, const char *name);
void bench_gc_parallel_mark_2t(const bench_config *cfg, const char *name);
void bench_gc_parallel_mark_small_2t(const bench_config *cfg, const char *name);
void bench_gc_full_live_vs_boehm_2t(const bench_config *cfg, const char *name);
/* ftrt_bench --boehm-child MARKERS OBJECTS: Boehm's side of gc.full_live_vs_boehm_2t in a fresh
 * process (Boehm fixes its marker count at GC_INIT); prints the median ns/object. */
int bench_gc_boehm_child(int markers, long objects);
void bench_stackref_vs_raw(const bench_config *cfg, const char *name);
void bench_stackref_deferred_scaling_2t(const bench_config *cfg, const char *name);
void bench_stackref_shared_rc_control_2t(const bench_config *cfg, const char *name);
void bench_trace_overhead(const bench_config *cfg, const char *name);

#endif
