/* bench_uniqueid.c: per-thread data that keeps hot shared things off shared cache lines.
 *
 * ptrc.scaling_2t: two pinned threads each take and drop references to one shared object whose type
 * uses per-thread reference counts (each thread counts in its own array, by the object's unique id).
 * The figure is their total throughput over one thread's: per-thread counting should scale.
 * ptrc.atomic_control_2t is the same loop with an atomic add and subtract on one shared counter,
 * the contention that per-thread counts avoid; it has no goal and is expected at or below 1.
 * Both loops reach a safepoint every 64 pairs, as an attached thread must.
 *
 * tlbc.first_copy_vs_memcpy: the first ft_tlbc_get of a code buffer by a thread other than the
 * first (thread index 1) makes that thread's copy: grow the copies array (the old one goes to
 * delayed free), allocate the copy, and call the host's copy callback (a memcpy here). It is
 * compared with a memcpy of the same bytes into a preallocated buffer. Each round registers a batch
 * of fresh buffers (untimed), times the first get of each, then destroys them (untimed); the
 * baseline copies the same batch of originals into as many preallocated buffers. The figure is for
 * 4 KiB of code (batches of 16); 64 KiB (one per round) is printed as a note. Both sides' page
 * faults per op are printed too: the copies' memory comes from glibc's malloc, and when glibc hands
 * freed memory back to the kernel the next copy pays a fault per page, which is the kernel's cost,
 * not ftrt's, and which the batch sizes avoid. */
#include "bench.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ftrt.h"

/* ---- ptrc.scaling_2t and ptrc.atomic_control_2t ----------------------------------------------- */

typedef struct counted_object {
    ft_object ob;
    uint32_t unique_id; /* reserved for ftrt (ft_type.unique_id_offset) */
} counted_object;

static const ft_type counted_type = {
    .name = "bench_counted",
    .basic_size = sizeof(counted_object),
    .flags = FT_TYPE_PER_THREAD_RC,
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
    uint64_t start_ns, end_ns;
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
                ft_incref_per_thread(t, o);
                BENCH_CLOBBER();
                ft_decref_per_thread(t, o);
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
    w->start_ns = start;
    w->end_ns = now;
}

static void *count_thread(void *arg)
{
    count_worker *w = arg;
    count_shared *s = w->shared;
    ft_thread *t = bench_thread_start(s->rt);
    /* The first per-thread count sizes this thread's array: outside the window. */
    ft_incref_per_thread(t, s->object);
    ft_decref_per_thread(t, s->object);
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
    uint64_t pairs = 0, first_start = UINT64_MAX, last_end = 0;
    for (int i = 0; i < threads; i++) {
        pairs += workers[i].pairs;
        if (workers[i].start_ns < first_start)
            first_start = workers[i].start_ns;
        if (workers[i].end_ns > last_end)
            last_end = workers[i].end_ns;
    }
    if (atomic_load_explicit(&s->atomic_count, memory_order_relaxed) != 0)
        bench_fail("atomic reference pairs did not balance: counter %ld",
                   (long)atomic_load_explicit(&s->atomic_count, memory_order_relaxed));
    return (double)pairs / ((double)(last_end - first_start) / 1e9) / 1e6;
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
    if (!s->object || ft_object_enable_per_thread_rc(main_thread, s->object) != FT_OK) {
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
    if (ft_merge_refcounts(s->rt) != 1)
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

void bench_ptrc_scaling_2t(const bench_config *cfg, const char *name)
{
    count_figure(cfg, name, COUNT_PER_THREAD);
}

void bench_ptrc_atomic_control_2t(const bench_config *cfg, const char *name)
{
    count_figure(cfg, name, COUNT_ATOMIC);
}

/* ---- tlbc.first_copy_vs_memcpy ---------------------------------------------------------------- */

typedef struct first_copy {
    BENCH_ALIGNED const bench_config *cfg;
    ft_runtime *rt;
    ft_thread *thread; /* index >= 1: it gets copies */
    size_t code_bytes;
    int batch;  /* code buffers per round */
    int rounds; /* per repetition */
    unsigned char **originals; /* batch buffers of code_bytes, each with its own pattern */
    unsigned char **targets;   /* the baseline's preallocated destinations */
    ft_tlbc *buffers;          /* batch of them, registered and destroyed every round */
    uint64_t sink;
    bench_series faults_per_op[2]; /* minor page faults per op, ftrt (0) and memcpy (1) */
    bench_comparison small, large; /* 4 KiB and 64 KiB of code */
    double small_faults[2], large_faults[2];
} first_copy;

/* Minor page faults of the calling thread so far: memory glibc gave back to the kernel and took
 * again costs a fault per page on first touch, which would dwarf what is measured here. */
static long thread_minor_faults(void)
{
    struct rusage usage;
    getrusage(RUSAGE_THREAD, &usage);
    return usage.ru_minflt;
}

static void copy_code(void *dst, const void *original, size_t size, void *arg)
{
    (void)arg;
    memcpy(dst, original, size);
}

static double ft_first_get_ns(void *arg)
{
    first_copy *f = arg;
    ft_thread *t = f->thread;
    uint64_t timed = 0, sink = f->sink;
    long faults = thread_minor_faults();
    for (int round = 0; round < f->rounds; round++) {
        for (int i = 0; i < f->batch; i++)
            if (ft_tlbc_init(&f->buffers[i], t, f->originals[i], f->code_bytes, copy_code, NULL) !=
                FT_OK) {
                fprintf(stderr, "bench: ft_tlbc_init failed\n");
                exit(2);
            }
        uint64_t start = bench_now_ns();
        for (int i = 0; i < f->batch; i++) {
            unsigned char *code = ft_tlbc_get(&f->buffers[i], t);
            sink += code[f->code_bytes - 1];
            ft_safepoint(t);
        }
        timed += bench_now_ns() - start;
        for (int i = 0; i < f->batch; i++) {
            const unsigned char *code = ft_tlbc_get(&f->buffers[i], t);
            if (code == f->originals[i] || memcmp(code, f->originals[i], f->code_bytes) != 0)
                bench_fail("ft_tlbc_get did not return a copy of the original");
            ft_tlbc_destroy(&f->buffers[i], t);
        }
    }
    f->sink = sink;
    bench_series_add(&f->faults_per_op[0], (double)(thread_minor_faults() - faults) /
                                               ((double)f->rounds * (double)f->batch));
    return (double)timed / ((double)f->rounds * (double)f->batch);
}

static double memcpy_ns(void *arg)
{
    first_copy *f = arg;
    uint64_t timed = 0, sink = f->sink;
    long faults = thread_minor_faults();
    for (int round = 0; round < f->rounds; round++) {
        uint64_t start = bench_now_ns();
        for (int i = 0; i < f->batch; i++) {
            memcpy(f->targets[i], f->originals[i], f->code_bytes);
            BENCH_CLOBBER();
            sink += f->targets[i][f->code_bytes - 1];
        }
        timed += bench_now_ns() - start;
    }
    f->sink = sink;
    bench_series_add(&f->faults_per_op[1], (double)(thread_minor_faults() - faults) /
                                               ((double)f->rounds * (double)f->batch));
    return (double)timed / ((double)f->rounds * (double)f->batch);
}

static bench_comparison compare_first_copy(first_copy *f, size_t code_bytes, int batch, int rounds,
                                           double *faults)
{
    memset(f->faults_per_op, 0, sizeof f->faults_per_op);
    f->code_bytes = code_bytes;
    f->batch = batch;
    f->rounds = rounds;
    f->originals = bench_alloc((size_t)batch * sizeof *f->originals);
    f->targets = bench_alloc((size_t)batch * sizeof *f->targets);
    f->buffers = bench_alloc((size_t)batch * sizeof *f->buffers);
    for (int i = 0; i < batch; i++) {
        f->originals[i] = bench_alloc(code_bytes);
        f->targets[i] = bench_alloc(code_bytes);
        for (size_t k = 0; k < code_bytes; k++)
            f->originals[i][k] = (unsigned char)(k * 31 + (size_t)i);
    }
    bench_side ft = {"ft_tlbc_get (first)", ft_first_get_ns, f};
    bench_side copy = {"memcpy", memcpy_ns, f};
    bench_comparison c = bench_interleave(f->cfg, &ft, &copy);
    faults[0] = bench_series_median(&f->faults_per_op[0]);
    faults[1] = bench_series_median(&f->faults_per_op[1]);
    for (int i = 0; i < batch; i++) {
        free(f->originals[i]);
        free(f->targets[i]);
    }
    free(f->originals);
    free(f->targets);
    free(f->buffers);
    return c;
}

static void *first_copy_thread(void *arg)
{
    first_copy *f = arg;
    f->thread = bench_thread_start(f->rt);
    if (ft_thread_index(f->thread) == 0)
        bench_fail("tlbc: the measuring thread got index 0, which uses the original");
    bool quick = f->cfg->quick;
    /* Batches small enough that glibc keeps the freed copies for the next round rather than
     * trimming them back to the kernel (64 copies of 4 KiB, freed together, made it fault on half
     * of the next round's pages), and that everything stays in L2 on both sides. */
    f->small = compare_first_copy(f, 4096, 16, quick ? 1000 : 3000, f->small_faults);
    f->large = compare_first_copy(f, 65536, 1, quick ? 1500 : 5000, f->large_faults);
    ft_thread_stop(f->thread);
    return NULL;
}

void bench_tlbc_first_copy_vs_memcpy(const bench_config *cfg, const char *name)
{
    ft_config config;
    ft_config_init(&config);
    config.tlbc_disabled = false; /* the figure measures copies, whatever FTRT_TLBC says */
    ft_runtime *rt = ft_runtime_new(&config);
    /* This thread holds index 0 (the original), detached so it never delays anyone. */
    ft_thread *holder = rt ? ft_thread_start(rt) : NULL;
    if (!holder) {
        fprintf(stderr, "bench: cannot start a runtime thread: %s\n",
                ft_status_str(ft_last_error()));
        exit(2);
    }
    ft_detach(holder);
    first_copy *f = bench_alloc(sizeof *f);
    f->cfg = cfg;
    f->rt = rt;
    bench_team_run(cfg, 1, first_copy_thread, f, sizeof *f);
    bench_note("4 KiB: page faults per op %.3f (ftrt, round included) vs %.3f (memcpy)",
               f->small_faults[0], f->small_faults[1]);
    bench_note("64 KiB of code, one buffer per round: first ft_tlbc_get %.0f ns vs memcpy %.0f ns, "
               "ratio %.2f; page faults per op %.3f vs %.3f",
               f->large.median_a, f->large.median_b, f->large.median_ratio, f->large_faults[0],
               f->large_faults[1]);
    ft_attach(holder);
    if (ft_tlbc_count(rt) != 0)
        bench_fail("tlbc: %zu copies left after every buffer was destroyed", ft_tlbc_count(rt));
    ft_thread_stop(holder);
    if (ft_runtime_free(rt) != FT_OK)
        bench_fail("ft_runtime_free refused after every thread stopped");
    bench_report(name, f->small.median_ratio, "ratio",
                 "memcpy of the same 4 KiB into a preallocated buffer; ftrt: the first get by "
                 "thread index 1 (array growth, malloc, copy callback = memcpy), a safepoint "
                 "after each; batches of 16 code buffers",
                 "<= 2.0", "first ft_tlbc_get", f->small.median_a, "memcpy",
                 f->small.median_b, "ns");
    free(f);
}
