/* bench_trace.c: what recording a trace costs (ftrt/trace.h).
 *
 * trace.overhead: a collection-heavy loop, timed with a trace recording ÷ the same loop without one,
 * on one runtime and its one thread. The loop builds 3-node cycles of 48-byte containers and drops
 * them, with a safepoint after each allocation and automatic collection on (default thresholds), so
 * every ~2,000 allocations a young collection runs at a safepoint; every 20,000 cycles it also
 * collects generation 0 explicitly. Each traced repetition starts a session before the clock starts
 * and stops it (writing what its buffer still holds, and the footer) before the clock stops, so the
 * file writes count; the file is in /tmp, made afresh for each repetition and deleted afterwards. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ftrt.h"

#define CYCLES 200000
#define CYCLE_NODES 3
#define EXPLICIT_EVERY 20000

typedef struct cycle_node {
    ft_object ob;
    ft_object *next; /* owned, or NULL */
    ft_object *unused;
} cycle_node;

static int cycle_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    cycle_node *n = (cycle_node *)self;
    return n->next ? visit(n->next, arg) : 0;
}

static void cycle_clear(ft_object *self)
{
    cycle_node *n = (cycle_node *)self;
    ft_object *next = n->next;
    n->next = NULL;
    if (next)
        ft_decref(next);
}

static void cycle_dealloc(ft_object *self)
{
    ft_gc_untrack(self);
    cycle_clear(self);
}

static const ft_type cycle_type = {.name = "bench.trace_node",
                                   .basic_size = sizeof(cycle_node),
                                   .flags = FT_TYPE_GC,
                                   .traverse = cycle_traverse,
                                   .clear = cycle_clear,
                                   .dealloc = cycle_dealloc};

typedef struct trace_run {
    ft_runtime *rt;
    ft_thread *t;
    const char *path; /* NULL: no trace */
    bench_series collections;
} trace_run;

static cycle_node *new_cycle_node(ft_thread *t)
{
    cycle_node *n = (cycle_node *)ft_alloc(t, &cycle_type);
    if (!n) {
        fprintf(stderr, "bench: ft_alloc: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    ft_gc_track(&n->ob);
    ft_safepoint(t); /* where automatic collections run */
    return n;
}

static uint64_t collections(ft_runtime *rt)
{
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(rt, s);
    return s[0].collections + s[1].collections + s[2].collections;
}

static double cycles_ns_per_cycle(void *arg)
{
    trace_run *r = arg;
    /* A new file each time: ext4 writes back a file truncated and rewritten when it is closed
     * (auto_da_alloc), which would time the filesystem's heuristic rather than the trace. */
    if (r->path)
        remove(r->path);
    if (r->path && ft_trace_start(r->rt, r->path) != FT_OK) {
        bench_fail("ft_trace_start(%s) failed", r->path);
        return 0;
    }
    uint64_t before = collections(r->rt);
    uint64_t start = bench_now_ns();
    for (int i = 0; i < CYCLES; i++) {
        cycle_node *first = new_cycle_node(r->t), *last = first;
        for (int k = 1; k < CYCLE_NODES; k++) {
            cycle_node *n = new_cycle_node(r->t);
            last->next = &n->ob; /* the allocation's reference */
            last = n;
        }
        ft_incref(&first->ob);
        last->next = &first->ob;
        ft_decref(&first->ob); /* garbage now: a cycle */
        if (i % EXPLICIT_EVERY == EXPLICIT_EVERY - 1)
            ft_gc_collect(r->rt, 0);
    }
    if (r->path && ft_trace_stop(r->rt) != FT_OK)
        bench_fail("ft_trace_stop(%s) failed", r->path);
    uint64_t elapsed = bench_now_ns() - start;
    bench_series_add(&r->collections, (double)(collections(r->rt) - before));
    ft_gc_collect(r->rt, 2); /* untimed: the next repetition starts from an empty heap */
    return (double)elapsed / CYCLES;
}

void bench_trace_overhead(const bench_config *cfg, const char *name)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/ftrt-bench-trace-%d.json", (int)getpid());
    ft_runtime *rt = bench_runtime_new();
    ft_thread *t = bench_thread_start(rt);
    ft_gc_enable(rt);
    trace_run *on = bench_alloc(sizeof *on), *off = bench_alloc(sizeof *off);
    *on = (trace_run){.rt = rt, .t = t, .path = path};
    *off = (trace_run){.rt = rt, .t = t};

    bench_side a = {"tracing", cycles_ns_per_cycle, on};
    bench_side b = {"not tracing", cycles_ns_per_cycle, off};
    bench_comparison c = bench_interleave(cfg, &a, &b);

    FILE *f = fopen(path, "r");
    long bytes = -1;
    if (f && fseek(f, 0, SEEK_END) == 0)
        bytes = ftell(f);
    if (f)
        fclose(f);
    remove(path);
    bench_note("%d cycles of %d nodes per repetition, %.0f collections each (automatic and explicit); "
               "the last trace was %ld bytes",
               CYCLES, CYCLE_NODES, bench_series_median(&on->collections), bytes);
    bench_report(name, c.median_ratio, "ratio",
                 "the same loop (build and drop 3-node cycles, automatic and explicit young "
                 "collections) without a trace",
                 "<= 1.05", a.label, c.median_a, b.label, c.median_b, "ns/cycle");
    ft_thread_stop(t);
    bench_runtime_free(rt);
    free(on);
    free(off);
}
