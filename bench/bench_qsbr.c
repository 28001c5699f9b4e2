/* bench_qsbr.c: what quiescent-state-based reclamation costs, against liburcu's QSBR flavour and
 * against freeing at once.
 *
 * qsbr.quiescent_vs_urcu: the reader's side. One pinned thread, attached to a runtime and registered
 * with liburcu, runs safepoint.poll's loop (one dependent add per iteration) with ft_qsbr_quiescent,
 * then with liburcu's inlined rcu_quiescent_state. No grace period is in progress.
 *
 * qsbr.delayed_free_vs_call_rcu: the writer's side. A pinned thread retires 48-byte blocks, each
 * followed by a quiescent point, and the clock stops only when every block has really been freed:
 * ftrt processes its queue at the thread's own safepoints (an advance and a final poll close the
 * run); liburcu's call_rcu helper thread runs the callbacks that free them (rcu_barrier closes the
 * run). The blocks are allocated before the clock starts, so the figure is retire-and-free
 * throughput, not allocation. A second pinned thread, a reader attached to the runtime and
 * registered with liburcu, reports quiescent points to both in a loop, as readers do; the same run
 * without it is printed as a note. liburcu's helper thread is created unpinned, so on this 2-vCPU
 * machine it shares the CPUs with the two spinning threads, as it would in a real process.
 *
 * qsbr.peak_memory_vs_immediate: a writer replaces 1 KiB buffers in an array of slots, round-robin,
 * and retires each old one; a reader checks the pattern of the buffer in a slot and reaches a
 * safepoint between reads (a torn or reused buffer fails the run). The baseline is the same writer
 * calling ft_free at once, with a reader that only reads the slots' generation counters, since it
 * must not touch freed memory. The main thread, outside the runtime and on the writer's CPU, samples
 * ft_heap_get_stats every 2 ms (it stops the world: the sampling rate is low for that reason) and
 * keeps the peak of the heap's page bytes, the memory ftrt holds from the system. Each repetition
 * uses a fresh runtime.
 * The figure has 1024 slots (1 MiB of live buffers); one slot is printed as a note, where what
 * the queue holds back stands against almost nothing live. Two things to know when reading it:
 * what is held back is about one or two batches of retired buffers (a thread advances every 128
 * items) plus what the writer retires while the reader is off its CPU between two safepoints, so
 * the reader's longest such gap is printed too; and each sample's stop-the-world frees every queued
 * block when the world restarts, which can only lower ftrt's peak. */
#include "bench.h"
#include "bench_urcu.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ftrt.h"

#ifdef FTRT_BENCH_HAVE_URCU_QSBR

/* ---- qsbr.quiescent_vs_urcu ------------------------------------------------------------------- */

typedef struct quiescent_loop {
    BENCH_ALIGNED const bench_config *cfg;
    ft_thread *thread;
    uint64_t iterations;
    uint64_t sink;
    bench_comparison result;
} quiescent_loop;

/* The same loop as bench_urcu_quiescent_loop_ns, with ftrt's quiescent point. */
static double ft_quiescent_loop_ns(void *arg)
{
    quiescent_loop *q = arg;
    ft_thread *t = q->thread;
    uint64_t n = q->iterations, x = q->sink;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        x += i;
        BENCH_KEEP(x);
        ft_qsbr_quiescent(t);
    }
    uint64_t elapsed = bench_now_ns() - start;
    q->sink = x;
    return (double)elapsed / (double)n;
}

static double urcu_quiescent_loop_ns(void *arg)
{
    quiescent_loop *q = arg;
    return bench_urcu_quiescent_loop_ns(q->iterations, &q->sink);
}

static void *quiescent_thread(void *arg)
{
    quiescent_loop *q = arg;
    ft_runtime *rt = bench_runtime_new();
    q->thread = bench_thread_start(rt);
    bench_urcu_register_thread();
    bench_side ft = {"ft_qsbr_quiescent", ft_quiescent_loop_ns, q};
    bench_side urcu = {"rcu_quiescent_state", urcu_quiescent_loop_ns, q};
    q->result = bench_interleave(q->cfg, &ft, &urcu);
    bench_urcu_unregister_thread();
    ft_thread_stop(q->thread);
    bench_runtime_free(rt);
    return NULL;
}

void bench_qsbr_quiescent_vs_urcu(const bench_config *cfg, const char *name)
{
    /* About 20-60 ms per repetition at one to three cycles per iteration. */
    quiescent_loop q = {.cfg = cfg, .iterations = cfg->quick ? 20000000 : 60000000, .sink = 1};
    bench_team_run(cfg, 1, quiescent_thread, &q, sizeof q);
    bench_report(name, q.result.median_ratio, "ratio",
                 "liburcu urcu-qsbr rcu_quiescent_state inlined (_LGPL_SOURCE), same loop (one "
                 "dependent add per iteration), registered thread, no grace period in progress",
                 "<= 1.0", "ft_qsbr_quiescent", q.result.median_a, "rcu_quiescent_state",
                 q.result.median_b, "ns/iter");
}

/* ---- qsbr.delayed_free_vs_call_rcu ------------------------------------------------------------ */

#define RETIRE_BLOCK_BYTES 48

typedef struct retire_shared {
    const bench_config *cfg;
    ft_runtime *rt;
    size_t count;  /* blocks per repetition */
    void **blocks; /* count pointers, refilled every repetition */
    void *urcu_helper;
    ft_thread *producer;
    BENCH_ALIGNED _Atomic(bool) quit;
    _Atomic(bool) reader_ready;
    bool with_reader;
    bench_comparison result;
} retire_shared;

typedef struct retire_thread {
    BENCH_ALIGNED retire_shared *shared;
    int index; /* 0: the producer; 1: the reader */
} retire_thread;

/* ft side: retire every block, a safepoint after each (it processes the queue when due), then make
 * the last goals reachable and wait until they are reached and processed. M frees/s. */
static double ft_retire_mfrees(void *arg)
{
    retire_shared *s = arg;
    ft_thread *t = s->producer;
    for (size_t i = 0; i < s->count; i++) {
        s->blocks[i] = ft_malloc(t, RETIRE_BLOCK_BYTES);
        if (!s->blocks[i]) {
            fprintf(stderr, "bench: ft_malloc failed\n");
            exit(2);
        }
        *(char *)s->blocks[i] = 1; /* the block was used before it is retired */
    }
    ft_qsbr_stats before, after;
    ft_qsbr_get_stats(s->rt, &before);
    uint64_t start = bench_now_ns();
    for (size_t i = 0; i < s->count; i++) {
        ft_free_delayed(t, s->blocks[i], RETIRE_BLOCK_BYTES);
        ft_safepoint(t);
    }
    uint64_t goal = ft_qsbr_advance(s->rt);
    while (!ft_qsbr_poll(t, goal))
        ft_safepoint(t);
    ft_delayed_process(t);
    uint64_t elapsed = bench_now_ns() - start;
    ft_qsbr_get_stats(s->rt, &after);
    if (after.freed_items - before.freed_items != s->count || after.pending_items != 0)
        bench_fail("delayed free: %llu of %zu blocks freed, %llu still pending after the final "
                   "goal was reached",
                   (unsigned long long)(after.freed_items - before.freed_items), s->count,
                   (unsigned long long)after.pending_items);
    return (double)s->count / ((double)elapsed / 1e9) / 1e6;
}

static double urcu_retire_mfrees(void *arg)
{
    retire_shared *s = arg;
    for (size_t i = 0; i < s->count; i++)
        s->blocks[i] = bench_urcu_block_new();
    uint64_t freed;
    uint64_t elapsed = bench_urcu_retire_all(s->blocks, s->count, &freed);
    if (freed != s->count)
        bench_fail("call_rcu: %llu of %zu callbacks ran before rcu_barrier returned",
                   (unsigned long long)freed, s->count);
    return (double)s->count / ((double)elapsed / 1e9) / 1e6;
}

static void retire_produce(retire_shared *s)
{
    bench_urcu_use_helper(s->urcu_helper);
    if (s->with_reader)
        while (!atomic_load_explicit(&s->reader_ready, memory_order_acquire))
            ft_cpu_relax();
    bench_side ft = {"ft_free_delayed", ft_retire_mfrees, s};
    bench_side urcu = {"call_rcu", urcu_retire_mfrees, s};
    s->result = bench_interleave(s->cfg, &ft, &urcu);
    atomic_store_explicit(&s->quit, true, memory_order_relaxed);
    bench_urcu_use_helper(NULL);
}

/* The reader: quiescent for both schemes, all the time. */
static void retire_read(retire_shared *s, ft_thread *t)
{
    atomic_store_explicit(&s->reader_ready, true, memory_order_release);
    while (!atomic_load_explicit(&s->quit, memory_order_relaxed)) {
        ft_safepoint(t);
        bench_urcu_quiescent();
    }
}

static void *retire_team_thread(void *arg)
{
    retire_thread *self = arg;
    retire_shared *s = self->shared;
    ft_thread *t = bench_thread_start(s->rt);
    bench_urcu_register_thread();
    if (self->index == 0) {
        s->producer = t;
        retire_produce(s);
    } else {
        retire_read(s, t);
    }
    bench_urcu_unregister_thread();
    ft_thread_stop(t);
    return NULL;
}

static bench_comparison compare_retire(const bench_config *cfg, retire_shared *s, bool with_reader)
{
    s->rt = bench_runtime_new();
    s->with_reader = with_reader;
    atomic_store_explicit(&s->quit, false, memory_order_relaxed);
    atomic_store_explicit(&s->reader_ready, false, memory_order_relaxed);
    retire_thread team[2] = {{s, 0}, {s, 1}};
    bench_team_run(cfg, with_reader ? 2 : 1, retire_team_thread, team, sizeof team[0]);
    bench_runtime_free(s->rt);
    return s->result;
}

void bench_qsbr_delayed_free_vs_call_rcu(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    retire_shared *s = bench_alloc(sizeof *s);
    s->cfg = cfg;
    /* About 10-40 ms per repetition at 5-20 M frees/s. */
    s->count = cfg->quick ? 60000 : 200000;
    s->blocks = bench_alloc(s->count * sizeof *s->blocks);
    /* Created from this thread, unpinned, so the helper may run on either CPU. */
    bench_unpin_self();
    s->urcu_helper = bench_urcu_helper_new();

    bench_comparison alone = compare_retire(cfg, s, false);
    bench_note("no reader (liburcu's helper has the second CPU to itself): ft_free_delayed %.2f vs "
               "call_rcu %.2f M frees/s, ratio %.2f",
               alone.median_a, alone.median_b, alone.median_ratio);
    bench_comparison c = compare_retire(cfg, s, true);

    bench_urcu_helper_free(s->urcu_helper);
    char baseline[320];
    snprintf(baseline, sizeof baseline,
             "liburcu call_rcu of %zu 48-byte malloc blocks per repetition, its helper thread "
             "frees them, rcu_barrier ends the run; a quiescent point after each retire; one "
             "other pinned thread spins reporting quiescent points to both; blocks allocated "
             "before the clock starts",
             s->count);
    bench_report(name, c.median_ratio, "ratio", baseline, ">= 2.0", "ft_free_delayed", c.median_a,
                 "call_rcu", c.median_b, "M frees/s");
    free(s->blocks);
    free(s);
}

#endif /* FTRT_BENCH_HAVE_URCU_QSBR */

/* ---- qsbr.peak_memory_vs_immediate ------------------------------------------------------------ */

#define PEAK_BUFFER_BYTES 1024
#define PEAK_WORDS (PEAK_BUFFER_BYTES / sizeof(uint64_t))
#define PEAK_SAMPLE_NS (2 * FT_NS_PER_MS)
#define PATTERN_STEP 0x9E3779B97F4A7C15ull

typedef struct peak_shared {
    const bench_config *cfg;
    ft_runtime *rt;
    bool delayed;      /* ft_free_delayed (and a reader that checks the buffers), or ft_free */
    size_t slot_count; /* a power of two */
    uint64_t *_Atomic *slots;
    _Atomic(uint64_t) *generations; /* each slot's buffer generation, for the baseline's reader */
    uint64_t duration_ns;
    BENCH_ALIGNED _Atomic(bool) stop;
    _Atomic(uint32_t) ready;
    _Atomic(bool) reader_done;
    BENCH_ALIGNED uint64_t replacements; /* written by the writer */
    BENCH_ALIGNED uint64_t reads, bad_reads; /* written by the reader */
    uint64_t reader_longest_round_ns; /* the longest 16 reads (and safepoints) took, no sample */
    BENCH_ALIGNED _Atomic(uint64_t) samples_taken; /* +1 before and after each heap sample */
    /* side statistics, by side (0: delayed, 1: immediate) */
    bench_series peak_live_kib[2];
    bench_series replacements_per_us[2];
    bench_series samples[2]; /* heap samples per run (each stops the world) */
    bench_series reader_longest_us[2];
} peak_shared;

typedef struct peak_thread {
    BENCH_ALIGNED peak_shared *shared;
    int index; /* 0: the writer; 1: the reader */
} peak_thread;

static uint64_t *new_buffer(ft_thread *t, uint64_t generation)
{
    uint64_t *b = ft_malloc(t, PEAK_BUFFER_BYTES);
    if (!b) {
        fprintf(stderr, "bench: ft_malloc failed\n");
        exit(2);
    }
    uint64_t base = generation * PATTERN_STEP;
    for (size_t k = 0; k < PEAK_WORDS; k++)
        b[k] = base + k;
    return b;
}

static void peak_write(peak_shared *s, ft_thread *t)
{
    size_t mask = s->slot_count - 1;
    uint64_t generation = 1;
    for (size_t i = 0; i < s->slot_count; i++, generation++) {
        atomic_store_explicit(&s->slots[i], new_buffer(t, generation), memory_order_release);
        atomic_store_explicit(&s->generations[i], generation, memory_order_release);
    }
    atomic_fetch_add_explicit(&s->ready, 1, memory_order_release);
    uint64_t first = generation;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        for (int round = 0; round < 16; round++, generation++) {
            size_t i = generation & mask;
            uint64_t *old = atomic_exchange_explicit(&s->slots[i], new_buffer(t, generation),
                                                     memory_order_acq_rel);
            atomic_store_explicit(&s->generations[i], generation, memory_order_release);
            if (s->delayed)
                ft_free_delayed(t, old, PEAK_BUFFER_BYTES);
            else
                ft_free(t, old);
            ft_safepoint(t);
        }
    }
    s->replacements = generation - first;
    /* Only once the reader is gone may the last buffers be freed at once. */
    while (!atomic_load_explicit(&s->reader_done, memory_order_acquire))
        ft_safepoint(t);
    for (size_t i = 0; i < s->slot_count; i++)
        ft_free(t, atomic_load_explicit(&s->slots[i], memory_order_relaxed));
}

static void peak_read(peak_shared *s, ft_thread *t)
{
    size_t mask = s->slot_count - 1, j = 0;
    uint64_t reads = 0, bad = 0, sum = 0;
    /* The writer counts itself ready once every slot holds a buffer. */
    while (atomic_load_explicit(&s->ready, memory_order_acquire) == 0)
        ft_safepoint(t);
    atomic_fetch_add_explicit(&s->ready, 1, memory_order_release);
    uint64_t round_start = bench_now_ns(), longest = 0;
    uint64_t samples_at_start = atomic_load_explicit(&s->samples_taken, memory_order_relaxed);
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        for (int round = 0; round < 16; round++) {
            j = (j + 7) & mask; /* not the writer's order, so the two rarely meet on a line */
            if (s->delayed) {
                const uint64_t *b = atomic_load_explicit(&s->slots[j], memory_order_acquire);
                uint64_t base = b[0];
                for (size_t k = 1; k < PEAK_WORDS; k++)
                    bad += b[k] != base + k;
            } else {
                sum += atomic_load_explicit(&s->generations[j], memory_order_acquire);
                BENCH_KEEP(sum);
            }
            ft_safepoint(t);
        }
        reads += 16;
        /* A reader that loses its CPU between safepoints holds every goal back meanwhile (a
         * round that a heap sample stopped does not count: the writer was stopped too). */
        uint64_t round_end = bench_now_ns();
        uint64_t samples_at_end = atomic_load_explicit(&s->samples_taken, memory_order_relaxed);
        if (samples_at_end == samples_at_start && round_end - round_start > longest)
            longest = round_end - round_start;
        round_start = round_end;
        samples_at_start = samples_at_end;
    }
    s->reads = reads;
    s->reader_longest_round_ns = longest;
    s->bad_reads = bad;
    atomic_store_explicit(&s->reader_done, true, memory_order_release);
}

static void *peak_team_thread(void *arg)
{
    peak_thread *self = arg;
    peak_shared *s = self->shared;
    ft_thread *t = bench_thread_start(s->rt);
    if (self->index == 0)
        peak_write(s, t);
    else
        peak_read(s, t);
    ft_thread_stop(t);
    return NULL;
}

static void *peak_launcher(void *arg)
{
    peak_shared *s = arg;
    peak_thread team[2] = {{s, 0}, {s, 1}};
    bench_team_run(s->cfg, 2, peak_team_thread, team, sizeof team[0]);
    return NULL;
}

/* One run: writer and reader on the two CPUs, this thread sampling the heap. Peak page KiB. */
static double peak_run_kib(peak_shared *s)
{
    s->rt = bench_runtime_new();
    atomic_store_explicit(&s->stop, false, memory_order_relaxed);
    atomic_store_explicit(&s->ready, 0, memory_order_relaxed);
    atomic_store_explicit(&s->reader_done, false, memory_order_relaxed);
    pthread_t launcher;
    if (pthread_create(&launcher, NULL, peak_launcher, s) != 0) {
        fprintf(stderr, "bench: cannot create a thread\n");
        exit(2);
    }
    while (atomic_load_explicit(&s->ready, memory_order_acquire) < 2)
        sched_yield();
    uint64_t peak_pages = 0, peak_live = 0, samples = 0;
    uint64_t start = bench_now_ns();
    do {
        struct timespec pause = {0, PEAK_SAMPLE_NS};
        nanosleep(&pause, NULL);
        ft_heap_stats stats;
        atomic_fetch_add_explicit(&s->samples_taken, 1, memory_order_relaxed);
        ft_heap_get_stats(s->rt, &stats);
        atomic_fetch_add_explicit(&s->samples_taken, 1, memory_order_relaxed);
        if (stats.page_bytes > peak_pages)
            peak_pages = stats.page_bytes;
        if (stats.live_bytes > peak_live)
            peak_live = stats.live_bytes;
        samples++;
    } while (bench_now_ns() - start < s->duration_ns);
    uint64_t elapsed = bench_now_ns() - start;
    atomic_store_explicit(&s->stop, true, memory_order_relaxed);
    pthread_join(launcher, NULL);
    bench_runtime_free(s->rt);

    if (s->bad_reads)
        bench_fail("peak memory: the reader saw %llu torn or reused buffers in %llu reads",
                   (unsigned long long)s->bad_reads, (unsigned long long)s->reads);
    int side = s->delayed ? 0 : 1;
    bench_series_add(&s->samples[side], (double)samples);
    bench_series_add(&s->reader_longest_us[side], (double)s->reader_longest_round_ns / 1e3);
    bench_series_add(&s->peak_live_kib[side], (double)peak_live / 1024);
    bench_series_add(&s->replacements_per_us[side], (double)s->replacements / ((double)elapsed / 1e3));
    return (double)peak_pages / 1024;
}

static double delayed_peak_kib(void *arg)
{
    peak_shared *s = arg;
    s->delayed = true;
    return peak_run_kib(s);
}

static double immediate_peak_kib(void *arg)
{
    peak_shared *s = arg;
    s->delayed = false;
    return peak_run_kib(s);
}

static bench_comparison compare_peaks(peak_shared *s, size_t slot_count)
{
    s->slot_count = slot_count;
    s->slots = bench_alloc(slot_count * sizeof *s->slots);
    s->generations = bench_alloc(slot_count * sizeof *s->generations);
    memset(s->peak_live_kib, 0, sizeof s->peak_live_kib);
    memset(s->replacements_per_us, 0, sizeof s->replacements_per_us);
    memset(s->samples, 0, sizeof s->samples);
    memset(s->reader_longest_us, 0, sizeof s->reader_longest_us);
    bench_side delayed = {"ft_free_delayed", delayed_peak_kib, s};
    bench_side immediate = {"ft_free", immediate_peak_kib, s};
    bench_comparison c = bench_interleave(s->cfg, &delayed, &immediate);
    free(s->slots);
    free(s->generations);
    return c;
}

static void note_peaks(peak_shared *s, size_t slot_count, const bench_comparison *c)
{
    double live_delayed = bench_series_median(&s->peak_live_kib[0]);
    double live_immediate = bench_series_median(&s->peak_live_kib[1]);
    bench_note("%zu slots (%zu KiB of live buffers): peak heap pages %.0f vs %.0f KiB (ratio "
               "%.2f); peak live blocks %.0f vs %.0f KiB (%.0f KiB held back); writer %.1f vs "
               "%.1f M replacements/s; %.0f / %.0f heap samples per run; the reader's longest "
               "16 reads outside a sample took %.0f / %.0f us",
               slot_count, slot_count * PEAK_BUFFER_BYTES / 1024, c->median_a, c->median_b,
               c->median_ratio, live_delayed, live_immediate, live_delayed - live_immediate,
               bench_series_median(&s->replacements_per_us[0]),
               bench_series_median(&s->replacements_per_us[1]),
               bench_series_median(&s->samples[0]), bench_series_median(&s->samples[1]),
               bench_series_median(&s->reader_longest_us[0]),
               bench_series_median(&s->reader_longest_us[1]));
}

void bench_qsbr_peak_memory_vs_immediate(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    peak_shared *s = bench_alloc(sizeof *s);
    s->cfg = cfg;
    s->duration_ns = cfg->quick ? 40 * FT_NS_PER_MS : 100 * FT_NS_PER_MS;
    /* The sampler shares the writer's CPU: when it wakes it delays the writer, which then retires
     * nothing. Unpinned, it could preempt the reader instead, and the writer would retire buffers
     * that no goal can free until the reader runs again: a peak made by the measurement. */
    bench_pin_self(cfg->cpus[0]);

    /* One slot: the absolute bound of what the queue holds back, against almost nothing live. */
    bench_comparison one = compare_peaks(s, 1);
    note_peaks(s, 1, &one);
    /* The figure: 1024 slots, 1 MiB of live buffers that the readers consult. */
    enum { FIGURE_SLOTS = 1024 };
    bench_comparison c = compare_peaks(s, FIGURE_SLOTS);
    note_peaks(s, FIGURE_SLOTS, &c);

    bench_report(name, c.median_ratio, "ratio",
                 "the same writer with ft_free at once (its reader reads only generation "
                 "counters); 1024 slots of 1 KiB buffers replaced round-robin; peak heap page "
                 "bytes sampled every 2 ms",
                 "<= 1.5", "ft_free_delayed", c.median_a, "ft_free", c.median_b, "KiB peak");
    bench_unpin_self();
    free(s);
}
