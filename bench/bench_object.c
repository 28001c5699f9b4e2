/* bench_object.c: what biased reference counting costs, against the counters a C programmer would
 * otherwise write.
 *
 * rc.owner_vs_plain      the owner's ft_incref+ft_decref pair ÷ a plain ++/-- on a struct field
 * rc.owner_vs_atomic     the same pair ÷ a relaxed atomic fetch_add/fetch_sub pair (one thread)
 * rc.nonowner_vs_atomic  a pair on an object another live thread owns ÷ the raw atomic pair
 * rc.immortal_scaling_2t two pinned threads counting one immortal object, total ÷ one thread's
 *                        (a note gives the same ratio for a private counter: the machine's own)
 * rc.cross_thread_drop   allocate on A, drop the last reference on B, A merges and frees at its
 *                        safepoints (per object, as throughput) ÷ allocate and drop on A
 *
 * The single-thread loops put an empty asm memory clobber after every count operation on both
 * sides: each operation must then load and store its field, as it would around real code, while
 * nothing stops either side from keeping the object's address (and the owner's thread id) in a
 * register. This file is built without FTRT_DEBUG in the release preset, so ft_incref/ft_decref are
 * the inline fast paths a user's release build gets. */
#include "bench.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftrt.h"

static void *checked_aligned_alloc(size_t size)
{
    size_t rounded = (size + BENCH_SEPARATION - 1) & ~(size_t)(BENCH_SEPARATION - 1);
    void *p = aligned_alloc(BENCH_SEPARATION, rounded);
    if (!p) {
        fprintf(stderr, "bench: out of memory\n");
        exit(2);
    }
    memset(p, 0, size);
    return p;
}

static ft_object *alloc_or_die(ft_thread *t, const ft_type *type)
{
    ft_object *o = ft_alloc(t, type);
    if (!o) {
        fprintf(stderr, "bench: ft_alloc: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    return o;
}

/* A 64-byte object: the header and 32 bytes of payload. */
typedef struct small_object {
    ft_object ob;
    uint64_t payload[4];
} small_object;

static const ft_type small_type = {.name = "bench.small", .basic_size = sizeof(small_object)};

/* ---- single-thread pairs ---------------------------------------------------------------------- */

/* What a C programmer's own refcounted struct looks like: the count beside other header words. */
typedef struct plain_object {
    uint64_t word;
    uint32_t flags;
    uint32_t refcount;
    uint64_t payload[6];
} plain_object;

typedef struct pair_loop {
    ft_object *object;
    plain_object *plain;
    _Atomic(uint64_t) *counter;
    uint64_t iterations;
} pair_loop;

static double ft_pair_ns(void *arg)
{
    pair_loop *l = arg;
    ft_object *o = l->object;
    uint64_t n = l->iterations;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        ft_incref(o);
        BENCH_CLOBBER();
        ft_decref(o);
        BENCH_CLOBBER();
    }
    return (double)(bench_now_ns() - start) / (double)n;
}

static double plain_pair_ns(void *arg)
{
    pair_loop *l = arg;
    plain_object *p = l->plain;
    uint64_t n = l->iterations;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        p->refcount++;
        BENCH_CLOBBER();
        p->refcount--;
        BENCH_CLOBBER();
    }
    return (double)(bench_now_ns() - start) / (double)n;
}

static double atomic_pair_ns(void *arg)
{
    pair_loop *l = arg;
    _Atomic(uint64_t) *c = l->counter;
    uint64_t n = l->iterations;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
        BENCH_CLOBBER();
        atomic_fetch_sub_explicit(c, 1, memory_order_relaxed);
        BENCH_CLOBBER();
    }
    return (double)(bench_now_ns() - start) / (double)n;
}

/* CPython's protocol for a shared count, without ftrt, for comparison: the increment a fetch_add,
 * the decrement a load and a CAS of the loaded value, on the same kind of uncontended counter. The
 * load waits for the previous locked instruction on the word, which ftrt's single fetch_sub avoids. */
static double cas_pair_ns(void *arg)
{
    pair_loop *l = arg;
    _Atomic(uint64_t) *c = l->counter;
    uint64_t n = l->iterations;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
        BENCH_CLOBBER();
        uint64_t v = atomic_load_explicit(c, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(c, &v, v - 1, memory_order_acq_rel,
                                                      memory_order_relaxed))
            ;
        BENCH_CLOBBER();
    }
    return (double)(bench_now_ns() - start) / (double)n;
}

/* One thread's object and the baselines' counters, each on lines of its own. */
typedef struct pair_setup {
    ft_runtime *rt;
    ft_thread *t;
    pair_loop loop;
} pair_setup;

static void pair_setup_begin(pair_setup *s, uint64_t iterations)
{
    s->rt = bench_runtime_new();
    s->t = bench_thread_start(s->rt);
    s->loop.object = alloc_or_die(s->t, &small_type);
    s->loop.plain = checked_aligned_alloc(sizeof(plain_object));
    s->loop.plain->refcount = 1;
    s->loop.counter = checked_aligned_alloc(sizeof(_Atomic(uint64_t)));
    atomic_store_explicit(s->loop.counter, 1, memory_order_relaxed);
    s->loop.iterations = iterations;
}

static void pair_setup_end(pair_setup *s)
{
    if (ft_refcount(s->loop.object) != 1 || s->loop.plain->refcount != 1 ||
        atomic_load_explicit(s->loop.counter, memory_order_relaxed) != 1)
        bench_fail("a count pair did not return its count to 1");
    ft_decref(s->loop.object);
    ft_thread_stop(s->t);
    bench_runtime_free(s->rt);
    free(s->loop.plain);
    free((void *)s->loop.counter);
}

void bench_rc_owner_vs_plain(const bench_config *cfg, const char *name)
{
    pair_setup s;
    /* About 20 ms per repetition at ~1 ns per pair. */
    pair_setup_begin(&s, cfg->quick ? 6000000 : 20000000);
    bench_side ft = {"owner ft_incref+ft_decref", ft_pair_ns, &s.loop};
    bench_side plain = {"plain ++/--", plain_pair_ns, &s.loop};
    bench_comparison c = bench_interleave(cfg, &ft, &plain);
    bench_report(name, c.median_ratio, "ratio",
                 "plain non-atomic ++/-- of a uint32 field, one hot object; asm memory clobber "
                 "after each operation on both sides",
                 "<= 1.3", ft.label, c.median_a, plain.label, c.median_b, "ns/pair");
    pair_setup_end(&s);
}

void bench_rc_owner_vs_atomic(const bench_config *cfg, const char *name)
{
    pair_setup s;
    pair_setup_begin(&s, cfg->quick ? 600000 : 2000000);
    bench_side ft = {"owner ft_incref+ft_decref", ft_pair_ns, &s.loop};
    bench_side atomic = {"atomic add/sub", atomic_pair_ns, &s.loop};
    bench_comparison c = bench_interleave(cfg, &ft, &atomic);
    bench_report(name, c.median_ratio, "ratio",
                 "relaxed atomic fetch_add+fetch_sub, one thread, uncontended line", "<= 0.2",
                 ft.label, c.median_a, atomic.label, c.median_b, "ns/pair");
    pair_setup_end(&s);
}

/* ---- rc.nonowner_vs_atomic -------------------------------------------------------------------- */

/* The owner allocates the object, publishes it, then waits detached (alive, still its owner) until
 * the measuring thread is done; then it drops its reference, which frees the object. */
typedef struct owner_thread {
    ft_runtime *rt;
    _Atomic(ft_object *) published;
    pthread_mutex_t lock;
    pthread_cond_t done_cond;
    bool done; /* guarded by lock */
} owner_thread;

static void *owner_main(void *arg)
{
    owner_thread *ow = arg;
    ft_thread *t = bench_thread_start(ow->rt);
    ft_object *o = alloc_or_die(t, &small_type);
    atomic_store_explicit(&ow->published, o, memory_order_release);
    ft_detach(t);
    pthread_mutex_lock(&ow->lock);
    while (!ow->done)
        pthread_cond_wait(&ow->done_cond, &ow->lock);
    pthread_mutex_unlock(&ow->lock);
    ft_attach(t);
    if (ft_refcount(o) != 1)
        bench_fail("non-owner pairs left the count at %ld, not 1", (long)ft_refcount(o));
    ft_decref(o);
    ft_thread_stop(t);
    return NULL;
}

void bench_rc_nonowner_vs_atomic(const bench_config *cfg, const char *name)
{
    owner_thread *ow = checked_aligned_alloc(sizeof *ow);
    ow->rt = bench_runtime_new();
    pthread_mutex_init(&ow->lock, NULL);
    pthread_cond_init(&ow->done_cond, NULL);
    pthread_t owner;
    if (pthread_create(&owner, NULL, owner_main, ow) != 0) {
        fprintf(stderr, "bench: cannot create the owner thread\n");
        exit(2);
    }
    bench_pin_self(cfg->cpus[0]);
    ft_thread *t = bench_thread_start(ow->rt);
    ft_object *o;
    while (!(o = atomic_load_explicit(&ow->published, memory_order_acquire)))
        sched_yield();
    if (ft_object_is_owned(o))
        bench_fail("the owner thread's object looks owned by the measuring thread");

    pair_loop loop = {.object = o,
                      .counter = checked_aligned_alloc(sizeof(_Atomic(uint64_t))),
                      .iterations = cfg->quick ? 600000 : 2000000};
    bench_side ft = {"non-owner ft_incref+ft_decref", ft_pair_ns, &loop};
    bench_side atomic = {"atomic add/sub", atomic_pair_ns, &loop};
    bench_side cas = {"fetch_add + load/CAS", cas_pair_ns, &loop};
    bench_comparison cpython = bench_interleave(cfg, &cas, &atomic);
    bench_note("CPython's protocol, without ftrt: fetch_add then load+CAS %.2f vs fetch_add then "
               "fetch_sub %.2f ns/pair, ratio %.3g",
               cpython.median_a, cpython.median_b, cpython.median_ratio);
    bench_comparison c = bench_interleave(cfg, &ft, &atomic);
    bench_report(name, c.median_ratio, "ratio",
                 "relaxed atomic fetch_add+fetch_sub, one thread, uncontended line; the object's "
                 "owner is alive (detached, waiting)",
                 "<= 1.15", ft.label, c.median_a, atomic.label, c.median_b, "ns/pair");

    ft_thread_stop(t);
    bench_unpin_self();
    pthread_mutex_lock(&ow->lock);
    ow->done = true;
    pthread_cond_signal(&ow->done_cond);
    pthread_mutex_unlock(&ow->lock);
    pthread_join(owner, NULL);
    bench_runtime_free(ow->rt);
    pthread_cond_destroy(&ow->done_cond);
    pthread_mutex_destroy(&ow->lock);
    free((void *)loop.counter);
    free(ow);
}

/* ---- rc.immortal_scaling_2t ------------------------------------------------------------------- */

/* A static immortal object alone on its lines: the counters below are written, it is only read. */
static BENCH_ALIGNED struct {
    small_object object;
    char padding[BENCH_SEPARATION - sizeof(small_object)];
} immortal = {{FT_STATIC_OBJECT_INIT(&small_type), {0, 0, 0, 0}}, {0}};

typedef struct immortal_shared {
    ft_runtime *rt;
    bench_gate gate;
    uint64_t duration_ns;
} immortal_shared;

typedef struct immortal_worker {
    BENCH_ALIGNED immortal_shared *shared;
    bool control; /* count a private plain counter instead: how well this machine scales at all */
    uint64_t ops;
    bench_span span;
    BENCH_ALIGNED uint32_t private_count;
} immortal_worker;

static void immortal_pairs(ft_object *o)
{
    for (int i = 0; i < 1024; i++) {
        ft_incref(o);
        BENCH_CLOBBER();
        ft_decref(o);
        BENCH_CLOBBER();
    }
}

static void private_pairs(uint32_t *count)
{
    for (int i = 0; i < 1024; i++) {
        ++*count;
        BENCH_CLOBBER();
        --*count;
        BENCH_CLOBBER();
    }
}

static void *immortal_thread(void *arg)
{
    immortal_worker *w = arg;
    immortal_shared *s = w->shared;
    ft_thread *t = bench_thread_start(s->rt);
    ft_object *o = &immortal.object.ob;
    bench_gate_wait(&s->gate);
    uint64_t start = bench_now_ns(), now, ops = 0;
    uint64_t deadline = start + s->duration_ns;
    do {
        if (w->control)
            private_pairs(&w->private_count);
        else
            immortal_pairs(o);
        ops += 1024;
        ft_safepoint(t);
        now = bench_now_ns();
    } while (now < deadline);
    w->ops = ops;
    w->span.start_ns = start;
    w->span.end_ns = now;
    ft_thread_stop(t);
    return NULL;
}

typedef struct immortal_run {
    const bench_config *cfg;
    immortal_shared *shared;
    immortal_worker *workers;
    int threads;
    bool control;
} immortal_run;

/* Total pairs per second of the team, in millions. */
static double immortal_team_mops(void *arg)
{
    immortal_run *run = arg;
    bench_gate_init(&run->shared->gate, (uint32_t)run->threads);
    for (int i = 0; i < run->threads; i++) {
        run->workers[i].shared = run->shared;
        run->workers[i].control = run->control;
    }
    bench_team_run(run->cfg, run->threads, immortal_thread, run->workers, sizeof run->workers[0]);
    uint64_t ops = 0;
    for (int i = 0; i < run->threads; i++)
        ops += run->workers[i].ops;
    return (double)ops /
           bench_team_seconds(&run->workers[0].span, sizeof run->workers[0], run->threads) / 1e6;
}

void bench_rc_immortal_scaling_2t(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    immortal_shared *s = checked_aligned_alloc(sizeof *s);
    s->rt = bench_runtime_new();
    s->duration_ns = cfg->quick ? 10 * FT_NS_PER_MS : 20 * FT_NS_PER_MS;
    immortal_worker *workers = checked_aligned_alloc(2 * sizeof *workers);
    immortal_run two = {cfg, s, workers, 2, false}, one = {cfg, s, workers, 1, false};
    bench_side a = {"2 threads", immortal_team_mops, &two};
    bench_side b = {"1 thread", immortal_team_mops, &one};
    bench_comparison c = bench_interleave(cfg, &a, &b);
    if (ft_refcount(&immortal.object.ob) != (intptr_t)FT_IMMORTAL_LOCAL)
        bench_fail("the immortal object's count changed");
    /* If the machine itself does not give two threads twice the work (a busy host, another
     * process on one CPU), this shows it: the same loop shape on each thread's own counter. */
    two.control = one.control = true;
    bench_comparison control = bench_interleave(cfg, &a, &b);
    bench_note("control, each thread counting its own plain counter: 2 threads %.0f vs 1 thread "
               "%.0f Mpairs/s, ratio %.3f",
               control.median_a, control.median_b, control.median_ratio);
    bench_report(name, c.median_ratio, "ratio",
                 "the same loop on one pinned thread (total incref+decref pairs per second)",
                 ">= 1.9", a.label, c.median_a, b.label, c.median_b, "Mpairs/s");
    bench_runtime_free(s->rt);
    free(workers);
    free(s);
}

/* ---- rc.cross_thread_drop --------------------------------------------------------------------- */

#define DROP_BATCH 64 /* objects handed over at a time */
#define DROP_RING 8   /* batches in flight between the allocating and the dropping thread */

/* Counted by the type's dealloc on whichever thread frees the object. */
static _Thread_local uint64_t drop_deallocs;

static void count_dealloc(ft_object *self)
{
    (void)self;
    drop_deallocs++;
}

static const ft_type drop_type = {
    .name = "bench.drop", .basic_size = sizeof(small_object), .dealloc = count_dealloc};

typedef struct drop_slot {
    BENCH_ALIGNED ft_object *objects[DROP_BATCH];
} drop_slot;

typedef struct drop_shared {
    ft_runtime *rt;
    uint64_t batches;
    BENCH_ALIGNED _Atomic(uint64_t) produced; /* batches published by the allocating thread */
    BENCH_ALIGNED _Atomic(uint64_t) consumed; /* batches dropped by the other thread */
    bench_gate gate;
    drop_slot ring[DROP_RING];
} drop_shared;

typedef struct drop_worker {
    BENCH_ALIGNED drop_shared *shared;
    int role; /* 0: allocates (and, alone, drops); 1: drops */
    uint64_t elapsed_ns;
    uint64_t deallocs;   /* objects this thread freed */
    uint64_t busy_ns;    /* allocator: in safepoints that had merges; dropper: in its drops */
} drop_worker;

/* The allocating thread of the cross-thread run: publish batches while the ring has room, and poll
 * ft_safepoint every time round, which merges and frees what the other thread queued. Done when
 * every object has been freed. */
static void drop_allocator(drop_worker *w, ft_thread *t)
{
    drop_shared *s = w->shared;
    uint64_t total = s->batches * DROP_BATCH, next = 0, merging_ns = 0;
    struct ft_thread_head *head = (struct ft_thread_head *)t;
    uint64_t start = bench_now_ns();
    while (drop_deallocs < total) {
        if (next < s->batches &&
            next - atomic_load_explicit(&s->consumed, memory_order_acquire) < DROP_RING) {
            drop_slot *slot = &s->ring[next % DROP_RING];
            for (int i = 0; i < DROP_BATCH; i++)
                slot->objects[i] = alloc_or_die(t, &drop_type);
            atomic_store_explicit(&s->produced, ++next, memory_order_release);
        } else {
            ft_cpu_relax();
        }
        if (atomic_load_explicit(&head->pending, memory_order_relaxed)) {
            uint64_t before = bench_now_ns();
            ft_safepoint(t);
            merging_ns += bench_now_ns() - before;
        }
    }
    w->elapsed_ns = bench_now_ns() - start;
    w->busy_ns = merging_ns;
}

static void drop_dropper(drop_worker *w, ft_thread *t)
{
    drop_shared *s = w->shared;
    uint64_t dropping_ns = 0;
    for (uint64_t b = 0; b < s->batches; b++) {
        while (atomic_load_explicit(&s->produced, memory_order_acquire) <= b) {
            ft_cpu_relax();
            ft_safepoint(t);
        }
        drop_slot *slot = &s->ring[b % DROP_RING];
        uint64_t before = bench_now_ns();
        for (int i = 0; i < DROP_BATCH; i++)
            ft_decref(slot->objects[i]);
        dropping_ns += bench_now_ns() - before;
        atomic_store_explicit(&s->consumed, b + 1, memory_order_release);
        ft_safepoint(t);
    }
    w->busy_ns = dropping_ns;
}

/* The same-thread baseline: allocate a batch into the same ring, drop it, poll, repeat. */
static void drop_alone(drop_worker *w, ft_thread *t)
{
    drop_shared *s = w->shared;
    uint64_t start = bench_now_ns();
    for (uint64_t b = 0; b < s->batches; b++) {
        drop_slot *slot = &s->ring[b % DROP_RING];
        for (int i = 0; i < DROP_BATCH; i++)
            slot->objects[i] = alloc_or_die(t, &drop_type);
        BENCH_CLOBBER();
        for (int i = 0; i < DROP_BATCH; i++)
            ft_decref(slot->objects[i]);
        ft_safepoint(t);
    }
    w->elapsed_ns = bench_now_ns() - start;
}

static void *drop_thread(void *arg)
{
    drop_worker *w = arg;
    drop_shared *s = w->shared;
    ft_thread *t = bench_thread_start(s->rt);
    drop_deallocs = 0;
    bench_gate_wait(&s->gate);
    if (s->gate.parties == 1)
        drop_alone(w, t);
    else if (w->role == 0)
        drop_allocator(w, t);
    else
        drop_dropper(w, t);
    w->deallocs = drop_deallocs;
    ft_thread_stop(t);
    return NULL;
}

typedef struct drop_run {
    const bench_config *cfg;
    drop_shared *shared;
    drop_worker workers[2];
    int threads;
    bench_series allocator_merge_ns; /* per object, cross-thread run only */
    bench_series dropper_drop_ns;
} drop_run;

static double drop_ns_per_object(void *arg)
{
    drop_run *run = arg;
    drop_shared *s = run->shared;
    atomic_store_explicit(&s->produced, 0, memory_order_relaxed);
    atomic_store_explicit(&s->consumed, 0, memory_order_relaxed);
    bench_gate_init(&s->gate, (uint32_t)run->threads);
    for (int i = 0; i < run->threads; i++)
        run->workers[i] = (drop_worker){.shared = s, .role = i};
    bench_team_run(run->cfg, run->threads, drop_thread, run->workers, sizeof run->workers[0]);
    double objects = (double)(s->batches * DROP_BATCH);
    if (run->workers[0].deallocs != s->batches * DROP_BATCH ||
        (run->threads == 2 && run->workers[1].deallocs != 0))
        bench_fail("cross_thread_drop: the allocating thread freed %llu of %.0f objects",
                   (unsigned long long)run->workers[0].deallocs, objects);
    if (run->threads == 2) {
        bench_series_add(&run->allocator_merge_ns, (double)run->workers[0].busy_ns / objects);
        bench_series_add(&run->dropper_drop_ns, (double)run->workers[1].busy_ns / objects);
    }
    return (double)run->workers[0].elapsed_ns / objects;
}

void bench_rc_cross_thread_drop(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    drop_shared *s = checked_aligned_alloc(sizeof *s);
    s->rt = bench_runtime_new();
    s->batches = cfg->quick ? 1000 : 3000;
    drop_run *cross = checked_aligned_alloc(sizeof *cross);
    drop_run *alone = checked_aligned_alloc(sizeof *alone);
    cross->cfg = alone->cfg = cfg;
    cross->shared = alone->shared = s;
    cross->threads = 2;
    alone->threads = 1;
    bench_side a = {"A allocates, B drops", drop_ns_per_object, cross};
    bench_side b = {"A allocates and drops", drop_ns_per_object, alone};
    bench_comparison c = bench_interleave(cfg, &a, &b);
    bench_note("cross-thread: B's decrefs (queueing) %.1f ns/object; A's safepoints that merged "
               "and freed %.1f ns/object",
               bench_series_median(&cross->dropper_drop_ns),
               bench_series_median(&cross->allocator_merge_ns));
    bench_report(name, c.median_ratio, "ratio",
                 "64-byte objects allocated and dropped on one thread, batches of 64 (wall ns "
                 "per object, alloc + drop + free)",
                 "<= 5", a.label, c.median_a, b.label, c.median_b, "ns/object");
    bench_runtime_free(s->rt);
    free(cross);
    free(alone);
    free(s);
}
