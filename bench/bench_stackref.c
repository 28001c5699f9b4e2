/* bench_stackref.c: tagged stack references and deferred reference counting (ftrt/stackref.h).
 *
 * stackref.vs_raw                 push a stackref to a deferred object onto a small stack array
 *                                 (ft_stackref_from_object_new), use it (read its type), close it
 *                                 ÷ the same loop with a raw pointer (no counting)
 * stackref.deferred_scaling_2t    two pinned threads each take and close stackrefs to ONE shared
 *                                 deferred object on a registered stack region: total throughput
 *                                 with 2 threads ÷ 1 thread
 * stackref.shared_rc_control_2t   control, no goal: the same loop with ft_incref/ft_decref of one
 *                                 shared non-deferred object (owned by main: both threads take the
 *                                 shared, atomic path), 2 threads ÷ 1; expected at or below 1
 * gc.stack_scan_ns_per_slot       absolute: a full collection with a registered region of 1M slots
 *                                 of tagged stackrefs to 1024 deferred objects, minus the same
 *                                 collection of the same heap with the region empty, ÷ 1M
 *
 * The single-thread loop puts an empty asm memory clobber after the push and after the close on
 * both sides, so each one stores and reloads its slot as an interpreter's stack would. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftrt.h"

/* A deferred object: a "function" (FT_TYPE_DEFERRED needs FT_TYPE_GC). */
typedef struct deferred_object {
    ft_object ob;
    uint64_t payload[2];
} deferred_object;

static int no_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    (void)self, (void)visit, (void)arg;
    return 0;
}

static void deferred_dealloc(ft_object *self)
{
    ft_gc_untrack(self);
}

static const ft_type deferred_type = {.name = "bench.deferred",
                                      .basic_size = sizeof(deferred_object),
                                      .flags = FT_TYPE_GC | FT_TYPE_DEFERRED,
                                      .traverse = no_traverse,
                                      .dealloc = deferred_dealloc};

static const ft_type plain_type = {.name = "bench.plain", .basic_size = sizeof(deferred_object)};

static ft_object *new_object(ft_thread *t, const ft_type *type)
{
    ft_object *o = ft_alloc(t, type);
    if (!o) {
        fprintf(stderr, "bench: ft_alloc: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    if (type->flags & FT_TYPE_GC)
        ft_gc_track(o);
    if ((type->flags & FT_TYPE_DEFERRED) && !ft_object_is_deferred(o)) {
        fprintf(stderr, "bench: an FT_TYPE_DEFERRED instance is not deferred\n");
        exit(2);
    }
    return o;
}

/* ---- stackref.vs_raw -------------------------------------------------------------------------- */

#define SMALL_STACK 8

typedef struct push_loop {
    ft_object *object;
    uint64_t iterations;
    BENCH_ALIGNED ft_stackref stack[SMALL_STACK];
    ft_object *raw_stack[SMALL_STACK];
    const ft_type *seen; /* the last type read, so the use is not dead */
} push_loop;

static double stackref_push_ns(void *arg)
{
    push_loop *l = arg;
    ft_object *o = l->object;
    ft_stackref *sp = l->stack + 1; /* a frame with one value below */
    const ft_type *type = NULL;
    uint64_t n = l->iterations;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        *sp++ = ft_stackref_from_object_new(o);
        BENCH_CLOBBER();
        type = ft_stackref_type(sp[-1]);
        BENCH_KEEP(type);
        ft_stackref_close(*--sp);
        BENCH_CLOBBER();
    }
    uint64_t end = bench_now_ns();
    l->seen = type;
    return (double)(end - start) / (double)n;
}

static double raw_push_ns(void *arg)
{
    push_loop *l = arg;
    ft_object *o = l->object;
    ft_object **sp = l->raw_stack + 1;
    const ft_type *type = NULL;
    uint64_t n = l->iterations;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < n; i++) {
        *sp++ = o;
        BENCH_CLOBBER();
        type = sp[-1]->ob_type;
        BENCH_KEEP(type);
        --sp;
        BENCH_CLOBBER();
    }
    uint64_t end = bench_now_ns();
    l->seen = type;
    return (double)(end - start) / (double)n;
}

void bench_stackref_vs_raw(const bench_config *cfg, const char *name)
{
    ft_runtime *rt = bench_runtime_new();
    ft_thread *t = bench_thread_start(rt);
    ft_gc_disable(rt);
    push_loop *l = bench_alloc(sizeof *l);
    l->object = new_object(t, &deferred_type);
    l->iterations = cfg->quick ? 2000000 : 20000000;
    intptr_t before = ft_refcount(l->object);

    bench_side a = {"stackref", stackref_push_ns, l};
    bench_side b = {"raw pointer", raw_push_ns, l};
    bench_comparison c = bench_interleave(cfg, &a, &b);

    if (ft_refcount(l->object) != before)
        bench_fail("%s: a deferred object's count changed: %ld -> %ld", name, (long)before,
                   (long)ft_refcount(l->object));
    if (l->seen != &deferred_type)
        bench_fail("%s: the loop read the wrong type", name);
    ft_decref(l->object);
    if (ft_gc_collect(rt, 2) != 1)
        bench_fail("%s: the deferred object was not freed by a full collection", name);
    ft_thread_stop(t);
    bench_runtime_free(rt);
    free(l);
    bench_report(name, c.median_ratio, "ratio",
                 "the same push/use/close loop on a small stack array with a raw pointer (no "
                 "counting)",
                 "<= 1.5", a.label, c.median_a, b.label, c.median_b, "ns/op");
}

/* ---- stackref.deferred_scaling_2t and stackref.shared_rc_control_2t --------------------------- */

enum take_kind { TAKE_STACKREF, TAKE_INCREF };

typedef struct take_shared {
    const bench_config *cfg;
    ft_runtime *rt;
    ft_object *object;
    uint64_t duration_ns;
    enum take_kind kind;
    bench_gate gate;
} take_shared;

typedef struct take_worker {
    BENCH_ALIGNED take_shared *shared;
    uint64_t pairs;
    bench_span span;
    const ft_type *seen;
    BENCH_ALIGNED ft_stackref slots[SMALL_STACK]; /* this thread's registered stack */
} take_worker;

/* Take a reference, read the type through it, drop it, 64 times, then a safepoint; until the
 * window closes. The stackref side keeps its stack region's top exact, as an interpreter that
 * publishes its stack pointer would. */
static inline __attribute__((always_inline)) void take_loop(take_worker *w, ft_thread *t,
                                                            ft_stack_region *region,
                                                            enum take_kind kind)
{
    take_shared *s = w->shared;
    ft_object *o = s->object;
    ft_stackref *base = w->slots;
    const ft_type *type = NULL;
    bench_gate_wait(&s->gate);
    uint64_t start = bench_now_ns(), now, pairs = 0;
    uint64_t deadline = start + s->duration_ns;
    do {
        for (int i = 0; i < 64; i++) {
            if (kind == TAKE_STACKREF) {
                base[0] = ft_stackref_from_object_new(o);
                ft_stack_region_set_top(region, base + 1);
                BENCH_CLOBBER();
                type = ft_stackref_type(base[0]);
                BENCH_KEEP(type);
                ft_stack_region_set_top(region, base);
                ft_stackref_close(base[0]);
                BENCH_CLOBBER();
            } else {
                ft_incref(o);
                BENCH_CLOBBER();
                type = o->ob_type;
                BENCH_KEEP(type);
                ft_decref(o);
                BENCH_CLOBBER();
            }
        }
        pairs += 64;
        ft_safepoint(t);
        now = bench_now_ns();
    } while (now < deadline);
    w->pairs = pairs;
    w->span.start_ns = start;
    w->span.end_ns = now;
    w->seen = type;
}

static void *take_thread(void *arg)
{
    take_worker *w = arg;
    take_shared *s = w->shared;
    ft_thread *t = bench_thread_start(s->rt);
    ft_stack_region region;
    ft_stack_push_region(t, &region, w->slots);
    if (s->kind == TAKE_STACKREF)
        take_loop(w, t, &region, TAKE_STACKREF);
    else
        take_loop(w, t, &region, TAKE_INCREF);
    ft_stack_pop_region(t, &region);
    ft_thread_stop(t);
    return NULL;
}

static double take_team_mpairs(take_shared *s, int threads)
{
    take_worker *workers = bench_alloc(2 * sizeof *workers);
    for (int i = 0; i < threads; i++)
        workers[i].shared = s;
    bench_gate_init(&s->gate, (uint32_t)threads);
    bench_team_run(s->cfg, threads, take_thread, workers, sizeof workers[0]);
    uint64_t pairs = 0;
    for (int i = 0; i < threads; i++) {
        pairs += workers[i].pairs;
        if (workers[i].seen != s->object->ob_type)
            bench_fail("a worker read the wrong type");
    }
    double seconds = bench_team_seconds(&workers[0].span, sizeof workers[0], threads);
    free(workers);
    return (double)pairs / seconds / 1e6;
}

static double take_two_threads(void *arg)
{
    return take_team_mpairs(arg, 2);
}

static double take_one_thread(void *arg)
{
    return take_team_mpairs(arg, 1);
}

static void take_figure(const bench_config *cfg, const char *name, enum take_kind kind)
{
    bench_print_probe(cfg);
    take_shared *s = bench_alloc(sizeof *s);
    s->cfg = cfg;
    s->kind = kind;
    s->duration_ns = cfg->quick ? 15 * FT_NS_PER_MS : 40 * FT_NS_PER_MS;
    s->rt = bench_runtime_new();
    ft_thread *main_thread = bench_thread_start(s->rt);
    ft_gc_disable(s->rt);
    s->object = new_object(main_thread, kind == TAKE_STACKREF ? &deferred_type : &plain_type);
    intptr_t before = ft_refcount(s->object);
    ft_detach(main_thread); /* out of any stop's way while the team runs */

    bench_side two = {"2 threads", take_two_threads, s};
    bench_side one = {"1 thread", take_one_thread, s};
    bench_comparison c = bench_interleave(cfg, &two, &one);

    ft_attach(main_thread);
    if (ft_refcount(s->object) != before)
        bench_fail("%s: reference pairs did not balance: count %ld -> %ld", name, (long)before,
                   (long)ft_refcount(s->object));
    ft_decref(s->object);
    if (kind == TAKE_STACKREF && ft_gc_collect(s->rt, 2) != 1)
        bench_fail("%s: the deferred object was not freed by a full collection", name);
    ft_thread_stop(main_thread);
    bench_runtime_free(s->rt);
    free(s);

    if (kind == TAKE_STACKREF)
        bench_report(name, c.median_ratio, "ratio",
                     "the same loop on 1 thread: push a stackref to one shared deferred object on "
                     "a registered region, read its type, close it, 64 per safepoint (total/s)",
                     ">= 1.85", two.label, c.median_a, one.label, c.median_b, "M pairs/s");
    else
        bench_report(name, c.median_ratio, "ratio",
                     "control: ft_incref/ft_decref of one shared non-deferred object (non-owner, "
                     "shared count), 2 threads vs 1 (total pairs/s); expected at or below 1",
                     "none", two.label, c.median_a, one.label, c.median_b, "M pairs/s");
}

void bench_stackref_deferred_scaling_2t(const bench_config *cfg, const char *name)
{
    take_figure(cfg, name, TAKE_STACKREF);
}

void bench_stackref_shared_rc_control_2t(const bench_config *cfg, const char *name)
{
    take_figure(cfg, name, TAKE_INCREF);
}

/* ---- gc.stack_scan_ns_per_slot ---------------------------------------------------------------- */

#define SCAN_SLOTS 1000000
#define SCAN_OBJECTS 1024

typedef struct scan_run {
    ft_runtime *rt;
    ft_stack_region region;
    ft_stackref *slots;
    ft_object *objects[SCAN_OBJECTS];
} scan_run;

static double scan_collect_us(scan_run *s, ft_stackref *top)
{
    ft_stack_region_set_top(&s->region, top);
    uint64_t start = bench_now_ns();
    intptr_t found = ft_gc_collect(s->rt, 2);
    uint64_t ns = bench_now_ns() - start;
    if (found != 0)
        bench_fail("gc.stack_scan_ns_per_slot: a collection found %ld unreachable objects",
                   (long)found);
    return (double)ns / 1e3;
}

static double scan_with_region_us(void *arg)
{
    scan_run *s = arg;
    return scan_collect_us(s, s->slots + SCAN_SLOTS);
}

static double scan_without_region_us(void *arg)
{
    scan_run *s = arg;
    return scan_collect_us(s, s->slots);
}

void bench_gc_stack_scan_ns_per_slot(const bench_config *cfg, const char *name)
{
    scan_run *s = bench_alloc(sizeof *s);
    s->rt = bench_runtime_new();
    ft_thread *t = bench_thread_start(s->rt);
    ft_gc_disable(s->rt);
    s->slots = bench_alloc(SCAN_SLOTS * sizeof *s->slots);
    for (int i = 0; i < SCAN_OBJECTS; i++)
        s->objects[i] = new_object(t, &deferred_type); /* main keeps a counted reference */
    /* Slots cycle through the objects in a scrambled order (an odd stride), as frames of many
     * functions would, with every eighth slot a tagged integer (skipped by the scan). */
    for (size_t i = 0; i < SCAN_SLOTS; i++)
        s->slots[i] = i % 8 == 7 ? ft_stackref_tag_int((intptr_t)i)
                                 : ft_stackref_from_object_new(
                                       s->objects[(i * 389) % SCAN_OBJECTS]);
    ft_stack_push_region(t, &s->region, s->slots);

    bench_side a = {"1M slots", scan_with_region_us, s};
    bench_side b = {"empty region", scan_without_region_us, s};
    bench_comparison c = bench_interleave(cfg, &a, &b);

    ft_stack_region_set_top(&s->region, s->slots);
    ft_stack_pop_region(t, &s->region);
    for (int i = 0; i < SCAN_OBJECTS; i++)
        ft_decref(s->objects[i]);
    intptr_t freed = ft_gc_collect(s->rt, 2);
    if (freed != SCAN_OBJECTS)
        bench_fail("%s: the last collection freed %ld deferred objects, expected %d", name,
                   (long)freed, SCAN_OBJECTS);
    ft_thread_stop(t);
    bench_runtime_free(s->rt);
    free(s->slots);
    free(s);
    double per_slot = (c.median_a - c.median_b) * 1e3 / SCAN_SLOTS;
    bench_report(name, per_slot, "ns/slot",
                 "a full collection of the same heap (1024 tracked deferred objects) with the "
                 "region empty; 1M slots of tagged stackrefs (1 in 8 a tagged integer)",
                 "<= 2", a.label, c.median_a, b.label, c.median_b, "us/collection");
}
