/* bench_uniqueid.c: per-thread reference counts (unique ids), which keep hot shared objects off shared
 * cache lines.
 *
 * uniqueid.scaling_2t: two pinned threads each take and drop references to one shared object whose
 * type uses per-thread reference counts (each thread counts in its own array, by the object's unique
 * id).
 * The figure is their total throughput over one thread's: per-thread counting should scale.
 * uniqueid.atomic_control_2t is the same loop with an atomic add and subtract on one shared counter,
 * the contention that per-thread counts avoid; it has no goal and is expected at or below 1.
 * Both loops reach a safepoint every 64 pairs, as an attached thread must. */
#include "bench.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftrt.h"

/* ---- uniqueid.scaling_2t and uniqueid.atomic_control_2t ----------------------------------------------- */

typedef struct counted_object {
    ft_object ob;
    uint32_t unique_id; /* reserved for ftrt (ft_type.unique_id_offset) */
} counted_object;

static const ft_type counted_type = {
    .name = "bench_counted",
    .basic_size = sizeof(counted_object),
    .flags = FT_TYPE_UNIQUEID,
    .unique_id_offset = offsetof(counted_object, unique_id),
};

enum count_kind { COUNT_PER_THREAD, COUNT_ATOMIC };

typedef struct count_shared {
    const bench_config *cfg;
    ft_runtime *rt;
    ft_object *object;
    uint64_t duration_ns;
    enum count_kind kind;
    bench_gate gate;
    BENCH_ALIGNED _Atomic(intptr_t) atomic_count; /* the control's shared counter */
} count_shared;

typedef struct count_worker {
    BENCH_ALIGNED count_shared *shared;
    uint64_t pairs;
    bench_span span;
} count_worker;

/* Take and drop a reference, 64 times, then a safepoint; until the window closes. The clobber
 * between the two stands for the use of the reference: without it the pair folds to nothing. */
static inline __attribute__((always_inline)) void count_loop(count_worker *w, ft_thread *t,
                                                             enum count_kind kind)
{
    count_shared *s = w->shared;
    ft_object *o = s->object;
    bench_gate_wait(&s->gate);
    uint64_t start = bench_now_ns(), now, pairs = 0;
    uint64_t deadline = start + s->duration_ns;
    do {
        for (int i = 0; i < 64; i++) {
            if (kind == COUNT_PER_THREAD) {
                ft_uniqueid_incref(t, o);
                BENCH_CLOBBER();
                ft_uniqueid_decref(t, o);
            } else {
                atomic_fetch_add_explicit(&s->atomic_count, 1, memory_order_relaxed);
                BENCH_CLOBBER();
                atomic_fetch_sub_explicit(&s->atomic_count, 1, memory_order_relaxed);
            }
        }
        pairs += 64;
        ft_safepoint(t);
        now = bench_now_ns();
    } while (now < deadline);
    w->pairs = pairs;
    w->span.start_ns = start;
    w->span.end_ns = now;
}

static void *count_thread(void *arg)
{
    count_worker *w = arg;
    count_shared *s = w->shared;
    ft_thread *t = bench_thread_start(s->rt);
    /* The first per-thread count sizes this thread's array: outside the window. */
    ft_uniqueid_incref(t, s->object);
    ft_uniqueid_decref(t, s->object);
    if (s->kind == COUNT_PER_THREAD)
        count_loop(w, t, COUNT_PER_THREAD);
    else
        count_loop(w, t, COUNT_ATOMIC);
    ft_thread_stop(t);
    return NULL;
}

/* Total M pairs/s of s->threads threads. */
static double count_team_mpairs(count_shared *s, int threads)
{
    count_worker workers[2];
    memset(workers, 0, sizeof workers);
    for (int i = 0; i < threads; i++)
        workers[i].shared = s;
    bench_gate_init(&s->gate, (uint32_t)threads);
    bench_team_run(s->cfg, threads, count_thread, workers, sizeof workers[0]);
    uint64_t pairs = 0;
    for (int i = 0; i < threads; i++)
        pairs += workers[i].pairs;
    if (atomic_load_explicit(&s->atomic_count, memory_order_relaxed) != 0)
        bench_fail("atomic reference pairs did not balance: counter %ld",
                   (long)atomic_load_explicit(&s->atomic_count, memory_order_relaxed));
    double seconds = bench_team_seconds(&workers[0].span, sizeof workers[0], threads);
    return (double)pairs / seconds / 1e6;
}

static double count_two_threads(void *arg)
{
    return count_team_mpairs(arg, 2);
}

static double count_one_thread(void *arg)
{
    return count_team_mpairs(arg, 1);
}

static void count_figure(const bench_config *cfg, const char *name, enum count_kind kind)
{
    bench_print_probe(cfg);
    count_shared *s = bench_alloc(sizeof *s);
    s->cfg = cfg;
    s->kind = kind;
    s->duration_ns = cfg->quick ? 15 * FT_NS_PER_MS : 40 * FT_NS_PER_MS;
    s->rt = ft_runtime_new(NULL);
    ft_thread *main_thread = s->rt ? ft_thread_start(s->rt) : NULL;
    s->object = main_thread ? ft_alloc(main_thread, &counted_type) : NULL;
    if (!s->object || ft_uniqueid_enable(main_thread, s->object) != FT_OK) {
        fprintf(stderr, "bench: cannot make a per-thread counted object: %s\n",
                ft_status_str(ft_last_error()));
        exit(2);
    }
    intptr_t count_before = ft_refcount(s->object);
    ft_detach(main_thread); /* quiescent, and out of any stop's way, while the team runs */

    bench_side two = {"2 threads", count_two_threads, s};
    bench_side one = {"1 thread", count_one_thread, s};
    bench_comparison c = bench_interleave(cfg, &two, &one);

    ft_attach(main_thread);
    /* Each stopped thread folded its counts into the object: balanced pairs leave it unchanged. */
    if (ft_refcount(s->object) != count_before)
        bench_fail("per-thread reference pairs did not balance: count %ld -> %ld",
                   (long)count_before, (long)ft_refcount(s->object));
    ft_decref(s->object);
    if (ft_uniqueid_merge(s->rt) != 1)
        bench_fail("the per-thread counted object was not freed by the merge after its last "
                   "reference was dropped");
    ft_thread_stop(main_thread);
    if (ft_runtime_free(s->rt) != FT_OK)
        bench_fail("ft_runtime_free refused after every thread stopped");
    free(s);

    if (kind == COUNT_PER_THREAD)
        bench_report(name, c.median_ratio, "ratio",
                     "the same loop on 1 thread: incref/decref of one shared object with "
                     "per-thread counts, 64 pairs per safepoint (total pairs/s)",
                     ">= 1.85", two.label, c.median_a, one.label, c.median_b, "M pairs/s");
    else
        bench_report(name, c.median_ratio, "ratio",
                     "control: relaxed atomic fetch_add/fetch_sub on one shared counter, 2 "
                     "threads vs 1 (total pairs/s); expected at or below 1",
                     "none", two.label, c.median_a, one.label, c.median_b, "M pairs/s");
}

void bench_uniqueid_scaling_2t(const bench_config *cfg, const char *name)
{
    count_figure(cfg, name, COUNT_PER_THREAD);
}

void bench_uniqueid_atomic_control_2t(const bench_config *cfg, const char *name)
{
    count_figure(cfg, name, COUNT_ATOMIC);
}
