/* bench_lock.c: ft_mutex against glibc's pthread_mutex, the lock a C user would otherwise take.
 *
 * Three figures: the uncontended lock+unlock pair in one thread, the total throughput of two pinned
 * threads fighting over one lock around a short critical section, and the tail of the time a thread
 * waits to acquire that lock (ft_mutex hands the lock to a waiter that has waited 1 ms, so its tail
 * should stay below that plus a wake-up; glibc's mutex makes no such promise). The two-thread
 * figures also print the same measurement with 4 threads on the 2 CPUs, where a holder can be
 * preempted: a spinning policy that wins with 2 threads must not lose there. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftrt.h"

enum lock_kind { LOCK_FT, LOCK_PTHREAD };

/* ---- mutex.uncontended ------------------------------------------------------------------------ */

static BENCH_ALIGNED ft_mutex uncontended_ft_lock;
static BENCH_ALIGNED pthread_mutex_t uncontended_pthread_lock = PTHREAD_MUTEX_INITIALIZER;

static double ft_pair_ns(void *arg)
{
    uint64_t iterations = *(const uint64_t *)arg;
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < iterations; i++) {
        ft_mutex_lock(&uncontended_ft_lock);
        BENCH_CLOBBER();
        ft_mutex_unlock(&uncontended_ft_lock);
    }
    return (double)(bench_now_ns() - start) / (double)iterations;
}

static double pthread_pair_ns(void *arg)
{
    uint64_t iterations = *(const uint64_t *)arg;
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < iterations; i++) {
        pthread_mutex_lock(&uncontended_pthread_lock);
        BENCH_CLOBBER();
        pthread_mutex_unlock(&uncontended_pthread_lock);
    }
    return (double)(bench_now_ns() - start) / (double)iterations;
}

void bench_mutex_uncontended(const bench_config *cfg, const char *name)
{
    /* About 20 ms per repetition at the ~20 ns a locked pair costs here. */
    uint64_t iterations = cfg->quick ? 300000 : 1000000;
    bench_side ft = {"ft_mutex", ft_pair_ns, &iterations};
    bench_side glibc = {"pthread_mutex", pthread_pair_ns, &iterations};
    bench_comparison c = bench_interleave(cfg, &ft, &glibc);
    bench_report(name, c.median_ratio, "ratio",
                 "pthread_mutex lock+unlock, one thread, in a process that has created a thread",
                 "<= 1.0", ft.label, c.median_a, glibc.label, c.median_b, "ns/pair");
}

/* ---- two or more threads on one lock ---------------------------------------------------------- */

typedef struct contended_shared {
    BENCH_ALIGNED ft_mutex ft_lock;
    BENCH_ALIGNED pthread_mutex_t pthread_lock;
    BENCH_ALIGNED uint64_t counter; /* guarded by the lock under test */
    BENCH_ALIGNED uint64_t second_line; /* a second guarded line, so the section moves two lines */
    bench_gate gate;
    uint64_t duration_ns;
} contended_shared;

typedef struct contended_worker {
    BENCH_ALIGNED contended_shared *shared;
    uint32_t *waits; /* per-acquisition wait in ns, or NULL when only throughput is measured */
    size_t wait_capacity;
    size_t wait_count;
    uint64_t ops;
    bench_span span;
} contended_worker;

static inline __attribute__((always_inline)) void lock_kind(contended_shared *s, enum lock_kind kind)
{
    if (kind == LOCK_FT)
        ft_mutex_lock(&s->ft_lock);
    else
        pthread_mutex_lock(&s->pthread_lock);
}

static inline __attribute__((always_inline)) void unlock_kind(contended_shared *s,
                                                              enum lock_kind kind)
{
    if (kind == LOCK_FT)
        ft_mutex_unlock(&s->ft_lock);
    else
        pthread_mutex_unlock(&s->pthread_lock);
}

static inline __attribute__((always_inline)) void critical_section(contended_shared *s)
{
    s->counter++;
    s->second_line += s->counter;
    BENCH_CLOBBER();
}

/* Lock, work, unlock until the window closes; the clock is read only every 64 rounds. */
static inline __attribute__((always_inline)) void throughput_loop(contended_worker *w,
                                                                  enum lock_kind kind)
{
    contended_shared *s = w->shared;
    bench_gate_wait(&s->gate);
    uint64_t start = bench_now_ns(), now, ops = 0;
    uint64_t deadline = start + s->duration_ns;
    do {
        for (int i = 0; i < 64; i++) {
            lock_kind(s, kind);
            critical_section(s);
            unlock_kind(s, kind);
        }
        ops += 64;
        now = bench_now_ns();
    } while (now < deadline);
    w->ops = ops;
    w->span.start_ns = start;
    w->span.end_ns = now;
}

/* The same, timing every acquisition: from the call to lock until it returns. */
static inline __attribute__((always_inline)) void wait_loop(contended_worker *w, enum lock_kind kind)
{
    contended_shared *s = w->shared;
    bench_gate_wait(&s->gate);
    uint64_t start = bench_now_ns(), acquired;
    uint64_t deadline = start + s->duration_ns;
    size_t count = 0;
    do {
        uint64_t asked = bench_now_ns();
        lock_kind(s, kind);
        acquired = bench_now_ns();
        critical_section(s);
        unlock_kind(s, kind);
        uint64_t waited = acquired - asked;
        w->waits[count++] = waited > UINT32_MAX ? UINT32_MAX : (uint32_t)waited;
    } while (count < w->wait_capacity && acquired < deadline);
    w->wait_count = count;
    w->ops = count;
    w->span.start_ns = start;
    w->span.end_ns = acquired;
}

static void *ft_throughput_thread(void *w)
{
    throughput_loop(w, LOCK_FT);
    return NULL;
}

static void *pthread_throughput_thread(void *w)
{
    throughput_loop(w, LOCK_PTHREAD);
    return NULL;
}

static void *ft_wait_thread(void *w)
{
    wait_loop(w, LOCK_FT);
    return NULL;
}

static void *pthread_wait_thread(void *w)
{
    wait_loop(w, LOCK_PTHREAD);
    return NULL;
}

#define MAX_CONTENDERS 4

/* One repetition's setup for one kind of lock; also what the wait figure keeps across repetitions. */
typedef struct contended_run {
    const bench_config *cfg;
    contended_shared *shared;
    contended_worker workers[MAX_CONTENDERS];
    int threads;
    bench_thread_fn thread_fn;
    uint32_t *pooled_waits; /* every worker's waits, gathered for the percentile */
    double worst_wait_ms;   /* the longest single wait over all repetitions */
    bench_series p50s_ms;
    bool capacity_reached;
} contended_run;

/* Run the team once; returns the total ops/s and checks that no increment was lost. */
static double run_team(contended_run *run)
{
    contended_shared *s = run->shared;
    s->counter = 0;
    bench_gate_init(&s->gate, (uint32_t)run->threads);
    bench_team_run(run->cfg, run->threads, run->thread_fn, run->workers, sizeof run->workers[0]);
    uint64_t ops = 0;
    for (int i = 0; i < run->threads; i++)
        ops += run->workers[i].ops;
    if (s->counter != ops)
        bench_fail("lock lost updates: counter %llu after %llu critical sections",
                   (unsigned long long)s->counter, (unsigned long long)ops);
    return (double)ops / bench_team_seconds(&run->workers[0].span, sizeof run->workers[0],
                                            run->threads);
}

static double team_mops(void *arg)
{
    return run_team(arg) / 1e6;
}

/* p99.9 of every acquisition's wait in one repetition, in ms. */
static double team_wait_p999_ms(void *arg)
{
    contended_run *run = arg;
    run_team(run);
    size_t pooled = 0;
    for (int i = 0; i < run->threads; i++) {
        const contended_worker *w = &run->workers[i];
        if (w->wait_count == w->wait_capacity)
            run->capacity_reached = true;
        memcpy(run->pooled_waits + pooled, w->waits, w->wait_count * sizeof *w->waits);
        pooled += w->wait_count;
    }
    uint32_t p999 = bench_percentile_u32(run->pooled_waits, pooled, 99.9);
    uint32_t p50 = bench_percentile_u32(run->pooled_waits, pooled, 50);
    uint32_t worst = bench_percentile_u32(run->pooled_waits, pooled, 100);
    if (!bench_warming_up() && (double)worst / 1e6 > run->worst_wait_ms)
        run->worst_wait_ms = (double)worst / 1e6;
    bench_series_add(&run->p50s_ms, (double)p50 / 1e6);
    return (double)p999 / 1e6;
}

static contended_shared *new_shared(uint64_t duration_ns)
{
    contended_shared *s = aligned_alloc(BENCH_SEPARATION, sizeof *s);
    if (!s) {
        fprintf(stderr, "bench: out of memory\n");
        exit(2);
    }
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->pthread_lock, NULL);
    s->duration_ns = duration_ns;
    return s;
}

static void free_shared(contended_shared *s)
{
    pthread_mutex_destroy(&s->pthread_lock);
    free(s);
}

static void init_run(contended_run *run, const bench_config *cfg, contended_shared *s, int threads,
                     bench_thread_fn fn, uint32_t **wait_arrays, size_t wait_capacity)
{
    memset(run, 0, sizeof *run);
    run->cfg = cfg;
    run->shared = s;
    run->threads = threads;
    run->thread_fn = fn;
    for (int i = 0; i < threads; i++) {
        run->workers[i].shared = s;
        if (wait_arrays) {
            run->workers[i].waits = wait_arrays[i];
            run->workers[i].wait_capacity = wait_capacity;
        }
    }
}

void bench_mutex_contended_throughput(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    contended_shared *s = new_shared(cfg->quick ? 20 * FT_NS_PER_MS : 60 * FT_NS_PER_MS);
    contended_run ft_run, pthread_run;
    init_run(&ft_run, cfg, s, 2, ft_throughput_thread, NULL, 0);
    init_run(&pthread_run, cfg, s, 2, pthread_throughput_thread, NULL, 0);
    bench_side ft = {"ft_mutex", team_mops, &ft_run};
    bench_side glibc = {"pthread_mutex", team_mops, &pthread_run};
    bench_comparison c = bench_interleave(cfg, &ft, &glibc);
    /* Not the figure, but what a spinning policy must not break: twice as many threads as CPUs,
     * where a lock holder can be preempted. */
    init_run(&ft_run, cfg, s, 4, ft_throughput_thread, NULL, 0);
    init_run(&pthread_run, cfg, s, 4, pthread_throughput_thread, NULL, 0);
    bench_comparison oversubscribed = bench_interleave(cfg, &ft, &glibc);
    bench_note("4 threads on 2 CPUs: ft_mutex %.2f vs pthread_mutex %.2f Mops/s, ratio %.2f",
               oversubscribed.median_a, oversubscribed.median_b, oversubscribed.median_ratio);
    bench_report(name, c.median_ratio, "ratio",
                 "pthread_mutex, 2 pinned threads, lock; 2 guarded lines; unlock (total ops/s)",
                 ">= 2.0", ft.label, c.median_a, glibc.label, c.median_b, "Mops/s");
    free_shared(s);
}

/* Interleave ft_mutex and pthread_mutex with `threads` contenders; returns the comparison of p99.9s. */
static bench_comparison compare_waits(const bench_config *cfg, int threads, contended_shared *s,
                                      uint32_t **wait_arrays, size_t capacity, uint32_t *pooled,
                                      contended_run *ft_run, contended_run *pthread_run)
{
    init_run(ft_run, cfg, s, threads, ft_wait_thread, wait_arrays, capacity);
    init_run(pthread_run, cfg, s, threads, pthread_wait_thread, wait_arrays, capacity);
    ft_run->pooled_waits = pooled;
    pthread_run->pooled_waits = pooled;
    bench_side ft = {"ft_mutex", team_wait_p999_ms, ft_run};
    bench_side glibc = {"pthread_mutex", team_wait_p999_ms, pthread_run};
    return bench_interleave(cfg, &ft, &glibc);
}

static void note_waits(int threads, const bench_comparison *c, contended_run *ft_run,
                       contended_run *pthread_run)
{
    bench_note("%d threads on 2 CPUs: p99.9 ft_mutex %.3f ms, pthread_mutex %.3f ms; "
               "p50 %.2f / %.2f us; worst single wait %.2f / %.2f ms",
               threads, c->median_a, c->median_b, 1000 * bench_series_median(&ft_run->p50s_ms),
               1000 * bench_series_median(&pthread_run->p50s_ms), ft_run->worst_wait_ms,
               pthread_run->worst_wait_ms);
    if (ft_run->capacity_reached || pthread_run->capacity_reached)
        bench_note("a wait array filled up: some repetitions ended before their window");
}

void bench_mutex_wait_p999(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    /* Two clock reads and a locked pair cost at least ~40 ns: this many samples outlast the window. */
    uint64_t duration_ns = cfg->quick ? 50 * FT_NS_PER_MS : 150 * FT_NS_PER_MS;
    size_t capacity = (size_t)(duration_ns / 30);
    uint32_t *wait_arrays[MAX_CONTENDERS];
    uint32_t *pooled = malloc(MAX_CONTENDERS * capacity * sizeof *pooled);
    for (int i = 0; i < MAX_CONTENDERS; i++)
        wait_arrays[i] = malloc(capacity * sizeof **wait_arrays);
    for (int i = 0; i < MAX_CONTENDERS; i++) {
        if (!wait_arrays[i] || !pooled) {
            fprintf(stderr, "bench: out of memory\n");
            exit(2);
        }
        /* Fault the pages in now, not inside a measured window. */
        memset(wait_arrays[i], 0, capacity * sizeof **wait_arrays);
    }
    memset(pooled, 0, MAX_CONTENDERS * capacity * sizeof *pooled);
    contended_shared *s = new_shared(duration_ns);
    contended_run ft_run, pthread_run;

    bench_comparison two = compare_waits(cfg, 2, s, wait_arrays, capacity, pooled, &ft_run,
                                         &pthread_run);
    note_waits(2, &two, &ft_run, &pthread_run);
    bench_comparison four = compare_waits(cfg, 4, s, wait_arrays, capacity, pooled, &ft_run,
                                          &pthread_run);
    note_waits(4, &four, &ft_run, &pthread_run);

    char baseline[256];
    snprintf(baseline, sizeof baseline,
             "absolute (2 pinned threads); pthread_mutex p99.9 = %.3f ms in the same run; "
             "4 threads on 2 CPUs: ft_mutex %.3f ms, pthread_mutex %.3f ms",
             two.median_b, four.median_a, four.median_b);
    bench_report(name, two.median_a, "ms", baseline, "<= 2.0", "ft_mutex", two.median_a,
                 "pthread_mutex", two.median_b, "ms p99.9");
    free_shared(s);
    for (int i = 0; i < MAX_CONTENDERS; i++)
        free(wait_arrays[i]);
    free(pooled);
}
