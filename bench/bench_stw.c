/* bench_stw.c: what safepoints and stop-the-world cost.
 *
 * stw.latency_p99_us: a worker thread attached to a runtime spins in a loop that polls ft_safepoint;
 * the main thread, which is not attached to the runtime, stops and restarts the world over and over
 * and times each ft_stop_the_world. The baseline is the handshake a C programmer would write instead:
 * a flag the worker polls, answered through a pthread mutex and condition variable. The same worker
 * loop polls both, so the two are measured alternately against the same thread.
 *
 * safepoint.poll: a tiny loop with and without an ft_safepoint call, nothing pending. */
#include "bench.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftrt.h"

/* ---- stw.latency_p99_us ----------------------------------------------------------------------- */

typedef struct stw_shared {
    ft_runtime *rt;
    BENCH_ALIGNED _Atomic(uint64_t) progress; /* the worker's loop count, published every round */
    BENCH_ALIGNED _Atomic(bool) quit;
    _Atomic(bool) ready;
    /* The baseline handshake: request polled by the worker, answered under the mutex. */
    BENCH_ALIGNED _Atomic(bool) handshake_request;
    pthread_mutex_t handshake_lock;
    pthread_cond_t handshake_acked_cond;
    pthread_cond_t handshake_resume_cond;
    bool handshake_acked; /* guarded by handshake_lock */
    bool one_cpu;         /* stopper and worker share a CPU: waiting must give it up */
    uint64_t worker_sink;
} stw_shared;

/* The worker's side of the baseline: acknowledge, then wait until released. */
static void handshake_pause(stw_shared *s)
{
    pthread_mutex_lock(&s->handshake_lock);
    s->handshake_acked = true;
    pthread_cond_signal(&s->handshake_acked_cond);
    while (atomic_load_explicit(&s->handshake_request, memory_order_relaxed))
        pthread_cond_wait(&s->handshake_resume_cond, &s->handshake_lock);
    s->handshake_acked = false;
    pthread_mutex_unlock(&s->handshake_lock);
}

static void *stw_worker(void *arg)
{
    stw_shared *s = *(stw_shared **)arg;
    ft_thread *t = ft_thread_start(s->rt);
    if (!t) {
        fprintf(stderr, "bench: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    atomic_store_explicit(&s->ready, true, memory_order_release);
    uint64_t x = 1;
    for (uint64_t i = 1;; i++) {
        x += i;
        BENCH_KEEP(x);
        atomic_store_explicit(&s->progress, i, memory_order_relaxed);
        ft_safepoint(t);
        if (FT_UNLIKELY(atomic_load_explicit(&s->handshake_request, memory_order_relaxed)))
            handshake_pause(s);
        if (FT_UNLIKELY(atomic_load_explicit(&s->quit, memory_order_relaxed)))
            break;
    }
    s->worker_sink = x;
    ft_thread_stop(t);
    return NULL;
}

/* Let the worker run: wait until it has gone round its loop this many more times. */
static void wait_for_worker_progress(stw_shared *s, uint64_t rounds)
{
    uint64_t target = atomic_load_explicit(&s->progress, memory_order_relaxed) + rounds;
    while (atomic_load_explicit(&s->progress, memory_order_relaxed) < target) {
        if (s->one_cpu)
            sched_yield();
        else
            ft_cpu_relax();
    }
}

/* The worker must not move while stopped: look at its counter twice, a moment apart. */
static void check_worker_still(stw_shared *s, const char *what)
{
    uint64_t before = atomic_load_explicit(&s->progress, memory_order_relaxed);
    bench_spin_ns(300);
    uint64_t after = atomic_load_explicit(&s->progress, memory_order_relaxed);
    if (before != after)
        bench_fail("%s returned but the worker still ran (%llu -> %llu)", what,
                   (unsigned long long)before, (unsigned long long)after);
}

typedef struct stw_block {
    stw_shared *shared;
    int stops;
    double *latencies_us; /* stops entries, reused every block */
    bench_series p50s_us;
    int blocks;
    double worst_us;
} stw_block;

#define WORKER_ROUNDS_BETWEEN_STOPS 2000

/* Summarise one block of stop latencies: returns p99, records p50 and the maximum. */
static double summarise_block(stw_block *b)
{
    double p99 = bench_percentile_double(b->latencies_us, (size_t)b->stops, 99);
    bench_series_add(&b->p50s_us, bench_percentile_double(b->latencies_us, (size_t)b->stops, 50));
    double worst = b->latencies_us[b->stops - 1]; /* sorted by the percentile call */
    if (!bench_warming_up() && worst > b->worst_us)
        b->worst_us = worst;
    b->blocks++; /* warm-up included: the runtime's stop count is checked against it */
    return p99;
}

static double ft_stop_block_p99_us(void *arg)
{
    stw_block *b = arg;
    stw_shared *s = b->shared;
    for (int i = 0; i < b->stops; i++) {
        wait_for_worker_progress(s, WORKER_ROUNDS_BETWEEN_STOPS);
        uint64_t start = bench_now_ns();
        ft_stop_the_world(s->rt);
        uint64_t stopped = bench_now_ns();
        check_worker_still(s, "ft_stop_the_world");
        ft_start_the_world(s->rt);
        b->latencies_us[i] = (double)(stopped - start) / 1e3;
    }
    return summarise_block(b);
}

static double handshake_block_p99_us(void *arg)
{
    stw_block *b = arg;
    stw_shared *s = b->shared;
    for (int i = 0; i < b->stops; i++) {
        wait_for_worker_progress(s, WORKER_ROUNDS_BETWEEN_STOPS);
        uint64_t start = bench_now_ns();
        pthread_mutex_lock(&s->handshake_lock);
        atomic_store_explicit(&s->handshake_request, true, memory_order_relaxed);
        while (!s->handshake_acked)
            pthread_cond_wait(&s->handshake_acked_cond, &s->handshake_lock);
        pthread_mutex_unlock(&s->handshake_lock);
        uint64_t stopped = bench_now_ns();
        check_worker_still(s, "the handshake");
        pthread_mutex_lock(&s->handshake_lock);
        atomic_store_explicit(&s->handshake_request, false, memory_order_relaxed);
        pthread_cond_signal(&s->handshake_resume_cond);
        pthread_mutex_unlock(&s->handshake_lock);
        b->latencies_us[i] = (double)(stopped - start) / 1e3;
    }
    return summarise_block(b);
}

void bench_stw_latency(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    stw_shared *s = aligned_alloc(BENCH_SEPARATION, sizeof *s);
    if (!s) {
        fprintf(stderr, "bench: out of memory\n");
        exit(2);
    }
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->handshake_lock, NULL);
    pthread_cond_init(&s->handshake_acked_cond, NULL);
    pthread_cond_init(&s->handshake_resume_cond, NULL);
    s->one_cpu = cfg->cpus[0] == cfg->cpus[1];
    s->rt = ft_runtime_new(NULL);
    if (!s->rt) {
        fprintf(stderr, "bench: ft_runtime_new: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }

    /* The main thread is the stopper, on the first CPU; the worker gets the second to itself. */
    bench_pin_self(cfg->cpus[0]);
    pthread_t worker;
    pthread_attr_t attr;
    cpu_set_t worker_cpu;
    CPU_ZERO(&worker_cpu);
    CPU_SET(cfg->cpus[1], &worker_cpu);
    pthread_attr_init(&attr);
    pthread_attr_setaffinity_np(&attr, sizeof worker_cpu, &worker_cpu);
    if (pthread_create(&worker, &attr, stw_worker, &s) != 0) {
        fprintf(stderr, "bench: cannot create the worker\n");
        exit(2);
    }
    pthread_attr_destroy(&attr);
    while (!atomic_load_explicit(&s->ready, memory_order_acquire))
        ft_cpu_relax();
    /* Starting a runtime's first thread may stop the world itself (to size the QSBR slots): only
     * the stops made from here on are this figure's. */
    ft_runtime_stats at_start;
    ft_runtime_get_stats(s->rt, &at_start);

    int stops = cfg->quick ? 400 : 2000;
    double *ft_latencies = malloc((size_t)stops * sizeof *ft_latencies);
    double *handshake_latencies = malloc((size_t)stops * sizeof *handshake_latencies);
    if (!ft_latencies || !handshake_latencies) {
        fprintf(stderr, "bench: out of memory\n");
        exit(2);
    }
    stw_block ft_block = {.shared = s, .stops = stops, .latencies_us = ft_latencies};
    stw_block handshake_block = {.shared = s, .stops = stops, .latencies_us = handshake_latencies};
    bench_side ft = {"ft_stop_the_world", ft_stop_block_p99_us, &ft_block};
    bench_side handshake = {"cond handshake", handshake_block_p99_us, &handshake_block};
    bench_comparison c = bench_interleave(cfg, &ft, &handshake);

    atomic_store_explicit(&s->quit, true, memory_order_relaxed);
    pthread_join(worker, NULL);
    bench_unpin_self();

    ft_runtime_stats stats;
    ft_runtime_get_stats(s->rt, &stats);
    bench_note("medians over %d blocks of %d stops, after a warm-up block; max over those blocks",
               cfg->repetitions, stops);
    bench_note("ft_stop_the_world: p50 %.2f us, p99 %.2f us, max %.2f us",
               bench_series_median(&ft_block.p50s_us), c.median_a, ft_block.worst_us);
    bench_note("cond handshake:    p50 %.2f us, p99 %.2f us, max %.2f us",
               bench_series_median(&handshake_block.p50s_us), c.median_b,
               handshake_block.worst_us);
    bench_note("runtime stats (warm-up included): %llu stops, mean wait %.2f us, max %.2f us",
               (unsigned long long)stats.stw_count,
               stats.stw_count ? (double)stats.stw_total_ns / 1e3 / (double)stats.stw_count : 0.0,
               (double)stats.stw_max_ns / 1e3);
    if (stats.stw_count - at_start.stw_count != (uint64_t)(ft_block.blocks * stops))
        bench_fail("runtime counted %llu stops, expected %d",
                   (unsigned long long)(stats.stw_count - at_start.stw_count),
                   ft_block.blocks * stops);

    char baseline[200];
    snprintf(baseline, sizeof baseline,
             "absolute; main thread outside the runtime stops 1 attached worker; "
             "pthread cond/flag handshake p99 = %.2f us in the same run",
             c.median_b);
    bench_report(name, c.median_a, "us", baseline, "<= 50", ft.label, c.median_a,
                 handshake.label, c.median_b, "us p99");

    if (ft_runtime_free(s->rt) != FT_OK)
        bench_fail("ft_runtime_free refused after the worker stopped");
    pthread_cond_destroy(&s->handshake_resume_cond);
    pthread_cond_destroy(&s->handshake_acked_cond);
    pthread_mutex_destroy(&s->handshake_lock);
    free(ft_latencies);
    free(handshake_latencies);
    free(s);
}

/* ---- safepoint.poll --------------------------------------------------------------------------- */

typedef struct poll_loop {
    ft_thread *thread;
    uint64_t iterations;
    uint64_t sink;
} poll_loop;

/* A dependent add per iteration; BENCH_KEEP stops the compiler from summing the series itself.
 * Both loops start in a fresh 64-byte block: a loop this small ran twice as slow here when it
 * straddled a 64-byte boundary, which otherwise depends on where the linker happened to put the
 * function (the same source gave a ratio of 0.5 in one build and 1.0 in another). The padding runs
 * once, before the timed loop starts iterating. */
static double loop_with_safepoint_ns(void *arg)
{
    poll_loop *p = arg;
    ft_thread *t = p->thread;
    uint64_t n = p->iterations, x = p->sink;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        x += i;
        BENCH_KEEP(x);
        ft_safepoint(t);
    }
    uint64_t elapsed = bench_now_ns() - start;
    p->sink = x;
    return (double)elapsed / (double)n;
}

static double loop_without_safepoint_ns(void *arg)
{
    poll_loop *p = arg;
    uint64_t n = p->iterations, x = p->sink;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        x += i;
        BENCH_KEEP(x);
    }
    uint64_t elapsed = bench_now_ns() - start;
    p->sink = x;
    return (double)elapsed / (double)n;
}

void bench_safepoint_poll(const bench_config *cfg, const char *name)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = rt ? ft_thread_start(rt) : NULL;
    if (!t) {
        fprintf(stderr, "bench: cannot start a runtime thread: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    /* About 20 ms per repetition at one cycle per iteration. */
    poll_loop loop = {t, cfg->quick ? 20000000 : 60000000, 1};
    bench_side with = {"with ft_safepoint", loop_with_safepoint_ns, &loop};
    bench_side without = {"without", loop_without_safepoint_ns, &loop};
    bench_comparison c = bench_interleave(cfg, &with, &without);
    bench_report(name, c.median_ratio, "ratio",
                 "the same loop (one dependent add per iteration) without the poll; nothing pending",
                 "<= 2.0", with.label, c.median_a, without.label, c.median_b, "ns/iter");
    ft_thread_stop(t);
    if (ft_runtime_free(rt) != FT_OK)
        bench_fail("ft_runtime_free refused after the only thread stopped");
}
