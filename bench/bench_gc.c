/* bench_gc.c: what the cycle collector costs, against the collectors a user would otherwise have.
 *
 * gc.full_live_vs_boehm   a full collection (ft_gc_collect(rt, 2)) of 1M live 48-byte containers in a
 *                         binary tree reachable from a registered root ÷ Boehm GC's GC_gcollect() of
 *                         the same tree built with GC_MALLOC, one marker each (skipped without
 *                         libgc-dev)
 * gc.garbage_vs_cpython   a full collection finding and freeing 1M objects of cyclic garbage (rings
 *                         of 10) ÷ CPython's gc.collect() of the same rings, timed by the machine's
 *                         python3 in a child process (skipped without python3)
 * gc.young_vs_heap_size   a generation-0 collection of 10,000 young objects with 10M old objects in
 *                         the heap ÷ the same with 100,000 old objects (two runtimes side by side)
 * gc.scheduling_overhead  building 10M tracked objects that stay reachable, ft_safepoint after each
 *                         allocation, with automatic collection on (default thresholds) ÷ off
 * gc.parallel_mark_2t     the world-stopped time of a full collection of 1M live containers (the tree
 *                         of gc.full_live_vs_boehm) with one marking worker ÷ with two (a speedup:
 *                         two runtimes side by side, ft_config.gc_workers 1 and 2)
 * gc.parallel_mark_small_2t  the same with 50,000 containers, gc_workers 1 ÷ 2 with ftrt's choice of
 *                         workers (the helpers must not make small collections slower)
 * gc.full_live_vs_boehm_2t  gc.full_live_vs_boehm with two markers each: ftrt with gc_workers 2 ÷
 *                         Boehm with GC_MARKERS=2, timed in a fresh process per repetition (Boehm
 *                         fixes its marker count when it starts)
 * gc.young_pause_p99_us   absolute: p99 of the world-stopped time of the automatic collections while
 *                         one thread builds and drops 10-object cycles beside 1M old live objects;
 *                         the stop-the-world handshake's own p99 in the same loop beside it;
 *                         both sides' individual times go to results.json as samples
 *
 * Every figure uses one object type: a 48-byte container (the 32-byte header and two child
 * pointers), FT_TYPE_GC, allocated with ft_alloc and then tracked, whose traverse visits its
 * children and whose clear and dealloc drop them. Trees are complete binary trees built breadth
 * first, each node linked into its parent as soon as it is made, so every node is reachable from the
 * root the whole time and a drop of the root frees the tree by reference counting (24 levels of
 * recursion for 10M nodes). The figures run on the main thread, unpinned (one thread each). */
#include "bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ftrt.h"

#ifdef FTRT_BENCH_HAVE_BOEHM_GC
/* GC_THREADS declares GC_set_markers_count; no redirection of pthread_create: no thread but the main
 * one, which GC_INIT registers, ever touches Boehm's heap. The header comes by its full path
 * (bench/CMakeLists.txt): <gc/gc.h> would find the collector's src/gc/gc.h. */
#define GC_THREADS 1
#define GC_NO_THREAD_REDIRECTS 1
#include FTRT_BENCH_BOEHM_HEADER
#endif

static void out_of_memory(const char *what)
{
    fprintf(stderr, "bench: %s: out of memory\n", what);
    exit(2);
}

/* ---- the container --------------------------------------------------------------------------- */

typedef struct node {
    ft_object ob;
    ft_object *child[2]; /* owned references, or NULL */
} node;

_Static_assert(sizeof(node) == 48, "a 48-byte container");

static int node_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    node *n = (node *)self;
    for (int i = 0; i < 2; i++) {
        if (n->child[i]) {
            int r = visit(n->child[i], arg);
            if (r)
                return r;
        }
    }
    return 0;
}

static void node_clear(ft_object *self)
{
    node *n = (node *)self;
    for (int i = 0; i < 2; i++) {
        ft_object *c = n->child[i];
        if (c) {
            n->child[i] = NULL;
            ft_decref(c);
        }
    }
}

static void node_dealloc(ft_object *self)
{
    ft_gc_untrack(self);
    node_clear(self);
}

static const ft_type node_type = {.name = "bench.gc_node",
                                  .basic_size = sizeof(node),
                                  .flags = FT_TYPE_GC,
                                  .traverse = node_traverse,
                                  .clear = node_clear,
                                  .dealloc = node_dealloc};

static node *new_node(ft_thread *t)
{
    node *n = (node *)ft_alloc(t, &node_type);
    if (!n)
        out_of_memory("ft_alloc");
    ft_gc_track(&n->ob);
    return n;
}

/* A complete binary tree of count >= 1 nodes, breadth first: node i's children are 2i+1 and 2i+2.
 * *root is set as soon as the root exists (a registered root function may read it at any
 * safepoint); the caller gets its reference. With safepoints, ft_safepoint(t) follows every
 * allocation, so automatic collections run in the middle of the build. */
static void build_tree(ft_thread *t, size_t count, bool safepoints, ft_object **root)
{
    node **nodes = malloc(count * sizeof *nodes);
    if (!nodes)
        out_of_memory("malloc");
    nodes[0] = new_node(t);
    *root = &nodes[0]->ob;
    if (safepoints)
        ft_safepoint(t);
    for (size_t i = 1; i < count; i++) {
        node *n = new_node(t);
        nodes[(i - 1) / 2]->child[(i - 1) % 2] = &n->ob; /* the allocation's reference */
        nodes[i] = n;
        if (safepoints)
            ft_safepoint(t);
    }
    free(nodes);
}

/* A ring of 10: each node's first child is the next one. Returns with no reference held: garbage. */
#define RING 10
static void make_garbage_ring(ft_thread *t, bool safepoints)
{
    node *first = new_node(t), *prev = first;
    if (safepoints)
        ft_safepoint(t);
    for (int i = 1; i < RING; i++) {
        node *n = new_node(t);
        prev->child[0] = &n->ob;
        prev = n;
        if (safepoints)
            ft_safepoint(t);
    }
    ft_incref(&first->ob);
    prev->child[0] = &first->ob;
    ft_decref(&first->ob);
}

/* The root function of every figure: arg points to a slot holding the tree's root, or NULL. */
static void visit_tree_root(ft_visit_fn visit, void *visit_arg, void *arg)
{
    ft_object *root = *(ft_object *const *)arg;
    if (root)
        visit(root, visit_arg);
}

static void add_root(ft_runtime *rt, ft_object **slot)
{
    if (ft_gc_add_root(rt, visit_tree_root, slot) != FT_OK)
        out_of_memory("ft_gc_add_root");
}

static void remove_root(ft_runtime *rt, ft_object **slot)
{
    if (ft_gc_remove_root(rt, visit_tree_root, slot) != FT_OK)
        bench_fail("ft_gc_remove_root did not find the root function");
}

/* ft_gc_collect, checked: found must be what the caller knows is unreachable. */
static void collect_expect(ft_runtime *rt, int generation, intptr_t expected, const char *figure)
{
    intptr_t found = ft_gc_collect(rt, generation);
    if (found != expected)
        bench_fail("%s: ft_gc_collect(rt, %d) returned %" PRIdPTR ", expected %" PRIdPTR
                   " (error %s)",
                   figure, generation, found, expected,
                   found < 0 ? ft_status_str(ft_last_error()) : "none");
}

static uint64_t total_pause_ns(ft_runtime *rt)
{
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(rt, s);
    return s[0].pause_ns + s[1].pause_ns + s[2].pause_ns;
}

/* ---- gc.full_live_vs_boehm -------------------------------------------------------------------- */

#ifdef FTRT_BENCH_HAVE_BOEHM_GC
#define FULL_LIVE_OBJECTS 1000000

typedef struct full_live {
    ft_runtime *rt;
    ft_object *root;
    bench_series pause_fraction; /* world-stopped share of the collection's wall time */
} full_live;

static double ft_full_ns_per_object(void *arg)
{
    full_live *f = arg;
    uint64_t paused = total_pause_ns(f->rt);
    uint64_t start = bench_now_ns();
    collect_expect(f->rt, 2, 0, "full_live_vs_boehm");
    uint64_t elapsed = bench_now_ns() - start;
    bench_series_add(&f->pause_fraction,
                     (double)(total_pause_ns(f->rt) - paused) / (double)elapsed);
    return (double)elapsed / FULL_LIVE_OBJECTS;
}

/* A runtime marking on `workers` workers, its collector off, holding the tree of FULL_LIVE_OBJECTS
 * nodes from a registered root; *t is the calling thread's state in it. */
static full_live *full_live_new(int workers, ft_thread **t)
{
    full_live *f = bench_alloc(sizeof *f);
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.gc_workers = workers;
    f->rt = bench_runtime_new_with(&cfg);
    *t = bench_thread_start(f->rt);
    ft_gc_disable(f->rt);
    add_root(f->rt, &f->root);
    build_tree(*t, FULL_LIVE_OBJECTS, false, &f->root);
    return f;
}

static void full_live_free(full_live *f, ft_thread *t)
{
    remove_root(f->rt, &f->root);
    ft_decref(f->root);
    f->root = NULL;
    ft_thread_stop(t);
    bench_runtime_free(f->rt);
    free(f);
}

/* The same shape for Boehm: 48 bytes, four header words (the last pointing at static data, like
 * ob_type), then the two children. */
typedef struct boehm_node {
    const void *header[4];
    struct boehm_node *child[2];
} boehm_node;

static const char boehm_type_stand_in[16] = "bench.boehm";
/* Static storage: Boehm scans the data segment, so this is the tree's root for it. */
static boehm_node *volatile boehm_root;
static bool boehm_initialised;

static void boehm_init(void)
{
    if (boehm_initialised)
        return;
    setenv("GC_MARKERS", "1", 1);
    GC_set_markers_count(1);
    GC_INIT();
    boehm_initialised = true;
}

static void boehm_build_tree(size_t count)
{
    boehm_node **nodes = malloc(count * sizeof *nodes);
    if (!nodes)
        out_of_memory("malloc");
    for (size_t i = 0; i < count; i++) {
        boehm_node *n = GC_MALLOC(sizeof *n);
        if (!n)
            out_of_memory("GC_MALLOC");
        n->header[3] = boehm_type_stand_in;
        if (i == 0)
            boehm_root = n;
        else
            nodes[(i - 1) / 2]->child[(i - 1) % 2] = n;
        nodes[i] = n;
    }
    free(nodes);
}

static size_t boehm_count_tree(const boehm_node *n)
{
    return n ? 1 + boehm_count_tree(n->child[0]) + boehm_count_tree(n->child[1]) : 0;
}

static double boehm_full_ns_per_object(void *arg)
{
    (void)arg;
    uint64_t start = bench_now_ns();
    GC_gcollect();
    return (double)(bench_now_ns() - start) / FULL_LIVE_OBJECTS;
}
#endif

void bench_gc_full_live_vs_boehm(const bench_config *cfg, const char *name)
{
#ifndef FTRT_BENCH_HAVE_BOEHM_GC
    (void)cfg;
    printf("%-28s skipped: Boehm GC not found at build time (apt-get install libgc-dev)\n", name);
#else
    boehm_init();
    boehm_build_tree(FULL_LIVE_OBJECTS);

    ft_thread *t;
    full_live *f = full_live_new(1, &t);

    bench_side a = {"ft_gc_collect(rt, 2)", ft_full_ns_per_object, f};
    bench_side b = {"GC_gcollect", boehm_full_ns_per_object, NULL};
    bench_comparison c = bench_interleave(cfg, &a, &b);

    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(f->rt, s);
    double pause_fraction = bench_series_median(&f->pause_fraction);
    uint64_t candidates = s[2].collections ? s[2].candidates / s[2].collections : 0;
    /* The same without the root: every object a candidate, found reachable through its count. */
    remove_root(f->rt, &f->root);
    bench_comparison unrooted = bench_interleave(cfg, &a, &b);
    add_root(f->rt, &f->root);

    if (boehm_count_tree(boehm_root) != FULL_LIVE_OBJECTS)
        bench_fail("full_live_vs_boehm: Boehm's tree lost nodes");
    bench_note("Boehm GC %d.%d.%d, %d marker thread(s) (GC_get_parallel() + 1), heap %.0f MB; "
               "ftrt: world stopped for %.0f%% of each collection, %" PRIu64
               " candidates per collection (objects the roots did not reach)",
               (int)(GC_get_version() >> 16), (int)((GC_get_version() >> 8) & 0xff),
               (int)(GC_get_version() & 0xff), GC_get_parallel() + 1,
               (double)GC_get_heap_size() / 1e6, 100 * pause_fraction, candidates);
    bench_note("without ft_gc_add_root (no mark alive: all 1M objects candidates): %.2f vs %.2f "
               "ns/object, ratio %.3g",
               unrooted.median_a, unrooted.median_b, unrooted.median_ratio);
    bench_report(name, c.median_ratio, "ratio",
                 "Boehm GC_gcollect(), 1 marker, on the same tree of 1M 48-byte nodes built with "
                 "GC_MALLOC (root in static data); ftrt's root registered with ft_gc_add_root",
                 "<= 1.0", a.label, c.median_a, b.label, c.median_b, "ns/object");

    boehm_root = NULL;
    GC_gcollect(); /* give the memory back to Boehm's free lists for whoever runs next */
    full_live_free(f, t);
#endif
}

/* ---- gc.garbage_vs_cpython -------------------------------------------------------------------- */

#define GARBAGE_OBJECTS 1000000

/* Rings of 10 instances of a class with two slots (the ftrt node's two children: "b" stays None),
 * built with the collector disabled, dropped ring by ring, then one timed gc.collect(). Prints the
 * nanoseconds and what gc.collect() returned. No single quotes: it goes in a shell's '...'. */
static const char cpython_script[] =
    "import gc, sys, time\n"
    "class N:\n"
    "    __slots__ = (\"a\", \"b\")\n"
    "def build(rings):\n"
    "    for _ in range(rings):\n"
    "        first = N(); first.b = None; prev = first\n"
    "        for _ in range(9):\n"
    "            n = N(); n.b = None; prev.a = n; prev = n\n"
    "        prev.a = first\n"
    "gc.disable(); gc.collect()\n"
    "build(int(sys.argv[1]) // 10)\n"
    "t0 = time.perf_counter_ns(); found = gc.collect(); t1 = time.perf_counter_ns()\n"
    "print(t1 - t0, found)\n";

typedef struct garbage_run {
    ft_runtime *rt;
    ft_thread *t;
    char command[2048];
    bench_series ft_pause_fraction;
} garbage_run;

static bool python3_version(char *out, size_t size)
{
    FILE *p = popen("python3 -c 'import sys; print(sys.version.split()[0])' 2>/dev/null", "r");
    if (!p)
        return false;
    bool ok = fgets(out, (int)size, p) != NULL;
    if (pclose(p) != 0)
        ok = false;
    if (ok)
        out[strcspn(out, "\n")] = '\0';
    return ok;
}

static double cpu_seconds(const struct rusage *u)
{
    return (double)(u->ru_utime.tv_sec + u->ru_stime.tv_sec) +
           (double)(u->ru_utime.tv_usec + u->ru_stime.tv_usec) / 1e6;
}

static double cpython_garbage_ns_per_object(void *arg)
{
    garbage_run *g = arg;
    FILE *p = popen(g->command, "r");
    unsigned long long ns = 0;
    long long found = -1;
    int fields = p ? fscanf(p, "%llu %lld", &ns, &found) : 0;
    int status = p ? pclose(p) : -1;
    if (fields != 2 || status != 0 || found != GARBAGE_OBJECTS) {
        bench_fail("garbage_vs_cpython: python3 printed %d fields (collected %lld of %d), status %d",
                   fields, found, GARBAGE_OBJECTS, status);
        return 1.0;
    }
    return (double)ns / GARBAGE_OBJECTS;
}

static double ft_garbage_ns_per_object(void *arg)
{
    garbage_run *g = arg;
    for (int i = 0; i < GARBAGE_OBJECTS / RING; i++)
        make_garbage_ring(g->t, false);
    uint64_t paused = total_pause_ns(g->rt);
    uint64_t start = bench_now_ns();
    collect_expect(g->rt, 2, GARBAGE_OBJECTS, "garbage_vs_cpython");
    uint64_t elapsed = bench_now_ns() - start;
    bench_series_add(&g->ft_pause_fraction,
                     (double)(total_pause_ns(g->rt) - paused) / (double)elapsed);
    return (double)elapsed / GARBAGE_OBJECTS;
}

void bench_gc_garbage_vs_cpython(const bench_config *cfg, const char *name)
{
    char version[64];
    if (!python3_version(version, sizeof version)) {
        printf("%-28s skipped: no python3 on this machine\n", name);
        return;
    }
    garbage_run *g = bench_alloc(sizeof *g);
    snprintf(g->command, sizeof g->command, "python3 -S -c '%s' %d", cpython_script,
             GARBAGE_OBJECTS);
    g->rt = bench_runtime_new();
    g->t = bench_thread_start(g->rt);
    ft_gc_disable(g->rt);

    struct rusage children_before, children_after;
    getrusage(RUSAGE_CHILDREN, &children_before);
    bench_side a = {"ft_gc_collect(rt, 2)", ft_garbage_ns_per_object, g};
    bench_side b = {"gc.collect()", cpython_garbage_ns_per_object, g};
    bench_comparison c = bench_interleave(cfg, &a, &b);
    getrusage(RUSAGE_CHILDREN, &children_after);

    ft_heap_stats heap;
    ft_heap_get_stats(g->rt, &heap);
    if (heap.live_blocks != 0)
        bench_fail("garbage_vs_cpython: %llu blocks still allocated after the collections",
                   (unsigned long long)heap.live_blocks);
    bench_note("CPython %s (python3 -S in a child process per repetition, timing itself with "
               "perf_counter_ns); ftrt: world stopped for %.0f%% of each collection",
               version, 100 * bench_series_median(&g->ft_pause_fraction));
    bench_note("the python3 children used %.1f s of CPU, which the load column counts as other "
               "processes'",
               cpu_seconds(&children_after) - cpu_seconds(&children_before));
    bench_report(name, c.median_ratio, "ratio",
                 "CPython gc.collect() of 1M instances of a 2-slot class in rings of 10, built "
                 "with gc disabled (collect and free, no build)",
                 "<= 0.25", a.label, c.median_a, b.label, c.median_b, "ns/object");
    ft_thread_stop(g->t);
    bench_runtime_free(g->rt);
    free(g);
}

/* ---- gc.young_vs_heap_size -------------------------------------------------------------------- */

#define YOUNG_OBJECTS 10000
#define OLD_OBJECTS_BIG 10000000
#define OLD_OBJECTS_SMALL 100000

/* One runtime per side, both with a thread state of the main thread; each side attaches its own
 * and detaches it when done, so only one is attached at a time. */
typedef struct young_heap {
    ft_runtime *rt;
    ft_thread *t;
    ft_object *old_root;
    size_t old_objects;
    int collections; /* timed generation-0 collections per repetition */
    double *times_us;
    uint64_t setup_ns;
} young_heap;

static void young_heap_setup(young_heap *y, size_t old_objects, int collections)
{
    uint64_t start = bench_now_ns();
    y->rt = bench_runtime_new();
    y->t = bench_thread_start(y->rt);
    y->old_objects = old_objects;
    y->collections = collections;
    y->times_us = malloc((size_t)collections * sizeof *y->times_us);
    if (!y->times_us)
        out_of_memory("malloc");
    ft_gc_disable(y->rt);
    add_root(y->rt, &y->old_root);
    build_tree(y->t, old_objects, false, &y->old_root);
    collect_expect(y->rt, 2, 0, "young_vs_heap_size");
    collect_expect(y->rt, 2, 0, "young_vs_heap_size");
    y->setup_ns = bench_now_ns() - start;
    ft_detach(y->t);
}

/* The median time of y->collections generation-0 collections, each of a fresh tree of 10,000 young
 * objects (held by this function: reachable), which is then dropped (freed by reference counting). */
static double young_collect_us(void *arg)
{
    young_heap *y = arg;
    ft_attach(y->t);
    for (int i = 0; i < y->collections; i++) {
        ft_object *young;
        build_tree(y->t, YOUNG_OBJECTS, false, &young);
        uint64_t start = bench_now_ns();
        collect_expect(y->rt, 0, 0, "young_vs_heap_size");
        y->times_us[i] = (double)(bench_now_ns() - start) / 1e3;
        ft_decref(young);
    }
    ft_detach(y->t);
    return bench_median(y->times_us, (size_t)y->collections);
}

static void young_heap_teardown(young_heap *y)
{
    ft_attach(y->t);
    remove_root(y->rt, &y->old_root);
    ft_decref(y->old_root);
    y->old_root = NULL;
    ft_thread_stop(y->t);
    bench_runtime_free(y->rt);
    free(y->times_us);
}

void bench_gc_young_vs_heap_size(const bench_config *cfg, const char *name)
{
    young_heap *big = bench_alloc(sizeof *big), *small = bench_alloc(sizeof *small);
    int collections = cfg->quick ? 10 : 30;
    young_heap_setup(big, OLD_OBJECTS_BIG, collections);
    young_heap_setup(small, OLD_OBJECTS_SMALL, collections);

    bench_side a = {"10M old", young_collect_us, big};
    bench_side b = {"100k old", young_collect_us, small};
    bench_comparison c = bench_interleave(cfg, &a, &b);

    ft_attach(big->t);
    ft_heap_stats heap;
    ft_heap_get_stats(big->rt, &heap);
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(big->rt, s);
    ft_detach(big->t);
    bench_note("each repetition: median of %d generation-0 collections of a fresh 10,000-node tree; "
               "10M-old heap: %.0f MB in pages, built and aged (two full collections) in %.1f s; "
               "objects examined per generation-0 collection %.0f",
               collections, (double)heap.page_bytes / 1e6, (double)big->setup_ns / 1e9,
               s[0].collections ? (double)s[0].candidates / (double)s[0].collections : 0.0);
    bench_report(name, c.median_ratio, "ratio",
                 "the same generation-0 collection of 10,000 young 48-byte containers with 100,000 "
                 "old ones in the heap (10M on the measured side)",
                 "<= 1.2", a.label, c.median_a, b.label, c.median_b, "us/collection");
    young_heap_teardown(big);
    young_heap_teardown(small);
    free(big);
    free(small);
}

/* ---- gc.scheduling_overhead ------------------------------------------------------------------- */

#define SCHEDULED_OBJECTS 10000000

typedef struct scheduling_run {
    ft_runtime *rt;
    ft_thread *t;
    ft_object *root;
    bool automatic;
    /* Automatic side only, per repetition: collections by generation and their share of the time. */
    bench_series collections[FT_GC_GENERATIONS];
    bench_series paused_ns_per_object[FT_GC_GENERATIONS];
    bench_series collecting_fraction;
    bench_series paused_fraction;
} scheduling_run;

/* The collecting thread's wall time inside collections, from the callback. */
typedef struct collect_clock {
    uint64_t started_ns;
    uint64_t total_ns;
} collect_clock;

static void clock_collections(ft_runtime *rt, ft_gc_phase phase, const ft_gc_info *info, void *arg)
{
    (void)rt;
    (void)info;
    collect_clock *clock = arg;
    if (phase == FT_GC_PHASE_START)
        clock->started_ns = bench_now_ns();
    else
        clock->total_ns += bench_now_ns() - clock->started_ns;
}

static collect_clock scheduling_clock;

static double scheduling_ns_per_object(void *arg)
{
    scheduling_run *s = arg;
    ft_gc_generation_stats before[FT_GC_GENERATIONS], after[FT_GC_GENERATIONS];
    if (s->automatic)
        ft_gc_enable(s->rt);
    else
        ft_gc_disable(s->rt);
    ft_gc_get_stats(s->rt, before);
    scheduling_clock.total_ns = 0;
    uint64_t start = bench_now_ns();
    build_tree(s->t, SCHEDULED_OBJECTS, true, &s->root);
    uint64_t elapsed = bench_now_ns() - start;
    ft_gc_get_stats(s->rt, after);
    ft_gc_disable(s->rt);
    if (s->automatic) {
        uint64_t paused = 0;
        for (int g = 0; g < FT_GC_GENERATIONS; g++) {
            bench_series_add(&s->collections[g],
                             (double)(after[g].collections - before[g].collections));
            bench_series_add(&s->paused_ns_per_object[g],
                             (double)(after[g].pause_ns - before[g].pause_ns) / SCHEDULED_OBJECTS);
            paused += after[g].pause_ns - before[g].pause_ns;
        }
        bench_series_add(&s->collecting_fraction,
                         (double)scheduling_clock.total_ns / (double)elapsed);
        bench_series_add(&s->paused_fraction, (double)paused / (double)elapsed);
    }
    /* Untimed: drop the tree and start the next repetition from an empty heap and zero counts. */
    ft_object *root = s->root;
    s->root = NULL;
    ft_decref(root);
    collect_expect(s->rt, 2, 0, "scheduling_overhead");
    return (double)elapsed / SCHEDULED_OBJECTS;
}

void bench_gc_scheduling_overhead(const bench_config *cfg, const char *name)
{
    scheduling_run *on = bench_alloc(sizeof *on), *off = bench_alloc(sizeof *off);
    ft_runtime *rt = bench_runtime_new();
    ft_thread *t = bench_thread_start(rt);
    *on = (scheduling_run){.rt = rt, .t = t, .automatic = true};
    *off = (scheduling_run){.rt = rt, .t = t, .automatic = false};
    /* One root function per side's slot; only the side running has a tree. */
    add_root(rt, &on->root);
    add_root(rt, &off->root);
    if (ft_gc_callback_add(rt, clock_collections, &scheduling_clock) != FT_OK)
        out_of_memory("ft_gc_callback_add");
    long threshold[FT_GC_GENERATIONS];
    ft_gc_get_threshold(rt, threshold);

    bench_side a = {"automatic collection on", scheduling_ns_per_object, on};
    bench_side b = {"off", scheduling_ns_per_object, off};
    bench_comparison c = bench_interleave(cfg, &a, &b);

    bench_note("thresholds %ld/%ld/%ld; automatic collections per build of 10M: %.0f / %.0f / %.0f "
               "(generation 0 / 1 / 2), world stopped %.1f / %.1f / %.1f ns per object built",
               threshold[0], threshold[1], threshold[2], bench_series_median(&on->collections[0]),
               bench_series_median(&on->collections[1]), bench_series_median(&on->collections[2]),
               bench_series_median(&on->paused_ns_per_object[0]),
               bench_series_median(&on->paused_ns_per_object[1]),
               bench_series_median(&on->paused_ns_per_object[2]));
    bench_note("in collections %.0f%% of the build's time, world stopped %.0f%%",
               100 * bench_series_median(&on->collecting_fraction),
               100 * bench_series_median(&on->paused_fraction));
    bench_report(name, c.median_ratio, "ratio",
                 "the same build of a 10M-node tree of 48-byte containers (all reachable, root "
                 "registered), ft_safepoint after each allocation, automatic collection off",
                 "<= 1.25", a.label, c.median_a, b.label, c.median_b, "ns/object");
    ft_gc_callback_remove(rt, clock_collections, &scheduling_clock);
    remove_root(rt, &on->root);
    remove_root(rt, &off->root);
    ft_thread_stop(t);
    bench_runtime_free(rt);
    free(on);
    free(off);
}

/* ---- gc.young_pause_p99_us -------------------------------------------------------------------- */

#define PAUSE_OLD_OBJECTS 1000000

/* What the gc callback records: one entry per automatic collection while recording. */
typedef struct pause_log {
    bool recording;
    uint64_t pause_at_start;
    uint64_t wall_at_start;
    int count, capacity;
    double *pause_us;
    double *wall_us;
    int by_generation[FT_GC_GENERATIONS];
    double worst_full_us; /* full collections are not young: kept apart */
    intptr_t collected;
} pause_log;

typedef struct pause_run {
    ft_runtime *rt;
    ft_thread *t;
    ft_object *old_root;
    pause_log log;
    int stops;       /* stop-the-world pairs per repetition */
    double *stop_us; /* their times */
    bench_series pause_p50_us, wall_p99_us, stop_p50_us;
    double pause_max_us;
} pause_run;

static void record_pause(ft_runtime *rt, ft_gc_phase phase, const ft_gc_info *info, void *arg)
{
    pause_log *log = arg;
    if (phase == FT_GC_PHASE_START) {
        log->pause_at_start = total_pause_ns(rt);
        log->wall_at_start = bench_now_ns();
        return;
    }
    uint64_t wall = bench_now_ns() - log->wall_at_start;
    double pause_us = (double)(total_pause_ns(rt) - log->pause_at_start) / 1e3;
    if (!log->recording)
        return;
    log->by_generation[info->generation]++;
    log->collected += info->collected;
    if (info->generation == 2) {
        if (pause_us > log->worst_full_us)
            log->worst_full_us = pause_us;
        return;
    }
    if (log->count < log->capacity) {
        log->pause_us[log->count] = pause_us;
        log->wall_us[log->count] = (double)wall / 1e3;
        log->count++;
    }
}

/* Build and drop rings until the callback has recorded log.capacity young collections; the p99 of
 * their world-stopped times, in us. */
static double automatic_pause_p99_us(void *arg)
{
    pause_run *p = arg;
    pause_log *log = &p->log;
    log->count = 0;
    log->recording = true;
    while (log->count < log->capacity)
        make_garbage_ring(p->t, true);
    log->recording = false;
    int n = log->count;
    bench_report_samples("young collection, world stopped", "us", log->pause_us, (size_t)n);
    double p99 = bench_percentile_double(log->pause_us, (size_t)n, 99);
    bench_series_add(&p->pause_p50_us, bench_percentile_double(log->pause_us, (size_t)n, 50));
    if (!bench_warming_up() && log->pause_us[n - 1] > p->pause_max_us)
        p->pause_max_us = log->pause_us[n - 1]; /* sorted by the percentile call */
    bench_series_add(&p->wall_p99_us, bench_percentile_double(log->wall_us, (size_t)n, 99));
    return p99;
}

/* The same loop, automatic collection still on, with a timed ft_stop_the_world + ft_start_the_world
 * pair every 200 rings (2,000 allocations: generation 0's default threshold). */
static double stop_pair_p99_us(void *arg)
{
    pause_run *p = arg;
    for (int i = 0; i < p->stops; i++) {
        for (int r = 0; r < 200; r++)
            make_garbage_ring(p->t, true);
        uint64_t start = bench_now_ns();
        ft_stop_the_world(p->rt);
        ft_start_the_world(p->rt);
        p->stop_us[i] = (double)(bench_now_ns() - start) / 1e3;
    }
    bench_report_samples("stop+start pair", "us", p->stop_us, (size_t)p->stops);
    double p99 = bench_percentile_double(p->stop_us, (size_t)p->stops, 99);
    bench_series_add(&p->stop_p50_us, bench_percentile_double(p->stop_us, (size_t)p->stops, 50));
    return p99;
}

void bench_gc_young_pause_p99(const bench_config *cfg, const char *name)
{
    pause_run *p = bench_alloc(sizeof *p);
    p->rt = bench_runtime_new();
    p->t = bench_thread_start(p->rt);
    ft_gc_disable(p->rt);
    add_root(p->rt, &p->old_root);
    build_tree(p->t, PAUSE_OLD_OBJECTS, false, &p->old_root);
    collect_expect(p->rt, 2, 0, "young_pause_p99_us");
    collect_expect(p->rt, 2, 0, "young_pause_p99_us");
    p->log.capacity = cfg->quick ? 300 : 1000;
    p->stops = p->log.capacity;
    p->log.pause_us = malloc((size_t)p->log.capacity * sizeof(double));
    p->log.wall_us = malloc((size_t)p->log.capacity * sizeof(double));
    p->stop_us = malloc((size_t)p->stops * sizeof(double));
    if (!p->log.pause_us || !p->log.wall_us || !p->stop_us)
        out_of_memory("malloc");
    if (ft_gc_callback_add(p->rt, record_pause, &p->log) != FT_OK)
        out_of_memory("ft_gc_callback_add");
    ft_gc_enable(p->rt);

    bench_side a = {"automatic collections", automatic_pause_p99_us, p};
    bench_side b = {"stop+start pairs", stop_pair_p99_us, p};
    bench_comparison c = bench_interleave(cfg, &a, &b);

    ft_gc_disable(p->rt);
    bench_note("blocks of %d young automatic collections (the p99 of each block, median over "
               "blocks): world stopped p50 %.1f us, p99 %.1f us, max %.1f us; wall time in the "
               "collection p99 %.1f us",
               p->log.capacity, bench_series_median(&p->pause_p50_us), c.median_a,
               p->pause_max_us, bench_series_median(&p->wall_p99_us));
    bench_note("collections over the run (warm-up included): generation 0: %d, 1: %d, 2: %d "
               "(longest full: %.0f us, not in the figure); %" PRIdPTR " objects collected",
               p->log.by_generation[0], p->log.by_generation[1], p->log.by_generation[2],
               p->log.worst_full_us, p->log.collected);
    bench_note("ft_stop_the_world + ft_start_the_world from the same thread (no other thread "
               "attached), every 2,000 allocations: p50 %.2f us, p99 %.2f us",
               bench_series_median(&p->stop_p50_us), c.median_b);
    char baseline[240];
    snprintf(baseline, sizeof baseline,
             "absolute; 1 thread builds and drops rings of 10 beside 1M old live objects, default "
             "thresholds; stop+start pair p99 = %.2f us in the same loop",
             c.median_b);
    bench_report(name, c.median_a, "us", baseline, "<= 250", a.label, c.median_a, b.label,
                 c.median_b, "us p99");

    ft_gc_callback_remove(p->rt, record_pause, &p->log);
    remove_root(p->rt, &p->old_root);
    ft_decref(p->old_root);
    p->old_root = NULL;
    ft_gc_collect(p->rt, 2); /* the rings built since the last automatic collection */
    ft_thread_stop(p->t);
    bench_runtime_free(p->rt);
    free(p->log.pause_us);
    free(p->log.wall_us);
    free(p->stop_us);
    free(p);
}

/* ---- gc.parallel_mark_2t, gc.parallel_mark_small_2t --------------------------------------------- */

typedef struct marked_tree {
    ft_runtime *rt;
    ft_thread *t;
    ft_object *root;
    size_t objects;
    const char *figure;
} marked_tree;

static void marked_tree_init(marked_tree *m, size_t objects, int workers, int64_t objects_per_worker,
                             const char *figure)
{
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.gc_workers = workers;
    cfg.gc_objects_per_worker = objects_per_worker;
    m->rt = bench_runtime_new_with(&cfg);
    m->t = bench_thread_start(m->rt);
    m->objects = objects;
    m->figure = figure;
    ft_gc_disable(m->rt);
    add_root(m->rt, &m->root);
    build_tree(m->t, objects, false, &m->root);
    ft_detach(m->t);
}

static void marked_tree_free(marked_tree *m)
{
    ft_attach(m->t);
    remove_root(m->rt, &m->root);
    ft_decref(m->root);
    ft_thread_stop(m->t);
    bench_runtime_free(m->rt);
}

/* World-stopped nanoseconds per object of one full collection (the main thread attaches to each
 * runtime in turn). */
static double full_pause_ns_per_object(void *arg)
{
    marked_tree *m = arg;
    ft_attach(m->t);
    uint64_t paused = total_pause_ns(m->rt);
    collect_expect(m->rt, 2, 0, m->figure);
    double ns = (double)(total_pause_ns(m->rt) - paused) / (double)m->objects;
    ft_detach(m->t);
    return ns;
}

static void parallel_mark(const bench_config *cfg, const char *name, size_t objects,
                          const char *goal)
{
    marked_tree one, two, forced;
    marked_tree_init(&one, objects, 1, 0, name);
    marked_tree_init(&two, objects, 2, 0, name);
    bench_side a = {"1 worker", full_pause_ns_per_object, &one};
    bench_side b = {"gc_workers = 2", full_pause_ns_per_object, &two};
    bench_comparison c = bench_interleave(cfg, &a, &b);
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(two.rt, s);
    bench_note("ftrt's choice for %zu objects: %s (a worker per %d objects)", objects,
               objects >= 65536 ? "2 workers" : "1 worker", 65536);
    if (objects < 65536) {
        /* What the choice avoids: two workers forced on a small heap. */
        marked_tree_init(&forced, objects, 2, 1, name);
        bench_side f = {"2 workers forced", full_pause_ns_per_object, &forced};
        bench_comparison fc = bench_interleave(cfg, &a, &f);
        bench_note("2 workers forced (gc_objects_per_worker = 1): %.2f vs %.2f ns/object, speedup "
                   "%.3g",
                   fc.median_a, fc.median_b, fc.median_ratio);
        marked_tree_free(&forced);
    }
    bench_report(name, c.median_ratio, "speedup",
                 "the same full collection of a tree reachable from a registered root, world-stopped "
                 "time, with ft_config.gc_workers = 1",
                 goal, a.label, c.median_a, b.label, c.median_b, "ns/object stopped");
    marked_tree_free(&one);
    marked_tree_free(&two);
}

void bench_gc_parallel_mark_2t(const bench_config *cfg, const char *name)
{
    parallel_mark(cfg, name, 1000000, ">= 1.6");
}

void bench_gc_parallel_mark_small_2t(const bench_config *cfg, const char *name)
{
    parallel_mark(cfg, name, 50000, ">= 1.0");
}

/* ---- gc.full_live_vs_boehm_2t ------------------------------------------------------------------ */

#define BOEHM_CHILD_COLLECTIONS 5

int bench_gc_boehm_child(int markers, long objects)
{
#ifndef FTRT_BENCH_HAVE_BOEHM_GC
    (void)markers;
    (void)objects;
    return 2;
#else
    char value[16];
    snprintf(value, sizeof value, "%d", markers);
    setenv("GC_MARKERS", value, 1);
    GC_set_markers_count((unsigned)markers);
    GC_INIT();
    GC_start_mark_threads(); /* Boehm starts them lazily, with a process's second thread */
    boehm_initialised = true;
    boehm_build_tree((size_t)objects);
    double ns[BOEHM_CHILD_COLLECTIONS];
    GC_gcollect(); /* warm-up */
    for (int i = 0; i < BOEHM_CHILD_COLLECTIONS; i++) {
        uint64_t start = bench_now_ns();
        GC_gcollect();
        ns[i] = (double)(bench_now_ns() - start) / (double)objects;
    }
    if (boehm_count_tree(boehm_root) != (size_t)objects)
        return 3;
    printf("%.6f %d\n", bench_percentile_double(ns, BOEHM_CHILD_COLLECTIONS, 50),
           GC_get_parallel() + 1);
    return 0;
#endif
}

#ifdef FTRT_BENCH_HAVE_BOEHM_GC
typedef struct boehm_child {
    int markers;
    int seen_markers;
} boehm_child;

/* One repetition of Boehm's side: a fresh ftrt_bench --boehm-child process. */
static double boehm_child_ns_per_object(void *arg)
{
    boehm_child *b = arg;
    char command[4200];
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        bench_fail("full_live_vs_boehm_2t: cannot find this program (/proc/self/exe)");
    self[len] = '\0';
    snprintf(command, sizeof command, "'%s' --boehm-child %d %d", self, b->markers,
             FULL_LIVE_OBJECTS);
    FILE *p = popen(command, "r");
    double ns = 0;
    if (!p || fscanf(p, "%lf %d", &ns, &b->seen_markers) != 2)
        bench_fail("full_live_vs_boehm_2t: the Boehm child printed nothing");
    if (pclose(p) != 0)
        bench_fail("full_live_vs_boehm_2t: the Boehm child failed");
    return ns;
}
#endif

void bench_gc_full_live_vs_boehm_2t(const bench_config *cfg, const char *name)
{
#ifndef FTRT_BENCH_HAVE_BOEHM_GC
    (void)cfg;
    printf("%-28s skipped: Boehm GC not found at build time (apt-get install libgc-dev)\n", name);
#else
    ft_thread *t;
    full_live *f = full_live_new(2, &t);

    boehm_child b = {2, 0};
    bench_side a = {"ft_gc_collect(rt, 2), 2 workers", ft_full_ns_per_object, f};
    bench_side bs = {"GC_gcollect, GC_MARKERS=2", boehm_child_ns_per_object, &b};
    bench_comparison c = bench_interleave(cfg, &a, &bs);
    bench_note("Boehm's child reported %d marker thread(s) (GC_get_parallel() + 1); ftrt: world "
               "stopped for %.0f%% of each collection",
               b.seen_markers, 100 * bench_series_median(&f->pause_fraction));
    bench_report(name, c.median_ratio, "ratio",
                 "Boehm GC_gcollect() with 2 markers on the same tree of 1M 48-byte nodes built "
                 "with GC_MALLOC, in a fresh process per repetition",
                 "<= 1.0", a.label, c.median_a, bs.label, c.median_b, "ns/object");
    full_live_free(f, t);
#endif
}
