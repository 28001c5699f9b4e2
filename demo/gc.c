/* demo/gc.c: the demo's fourth phase: cycles collected while threads work.
 *
 * Three workers build small documents of GC containers: a ring of 2 to 12 nodes, half of them with
 * a chord, each kept in a window of the worker's last four documents and dropped when it leaves
 * the window. A dropped ring is a cycle, which reference counting never frees. Now and then a
 * worker publishes a document in one of a few shared exchange slots, or takes one out and hangs it
 * on its next document, so cycles also hold objects another thread made (and counts them from a
 * thread that does not own them). One document in eight is a chain instead, which reference
 * counting frees as soon as it is dropped.
 *
 * Automatic collection is on, with the default thresholds: whichever worker's allocations cross
 * generation 0's threshold collects at its next ft_safepoint, stopping the other two meanwhile. A
 * gc callback prints the first collections (generation, thread, what it found, how long the world
 * was stopped) and counts the rest. Main samples the heap's live blocks a few times meanwhile.
 *
 * At the end the workers drop their windows and stop, main drops what the exchange still holds and
 * runs a full collection, then prints ft_gc_get_stats per generation and the live blocks before,
 * during and after. The phase holds if every node made was freed, the heap has as many live blocks
 * as before, nothing was uncollectable, and the callbacks saw every collection ft_gc_get_stats
 * counts and the same number of objects collected. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "demo.h"
#include "ftrt.h"

enum {
    GC_WORKERS = 3,
    WINDOW = 4,         /* documents a worker keeps */
    EXCHANGE_SLOTS = 4, /* documents waiting to be taken by another worker */
    MAX_RING = 12,
    COLLECTIONS_SHOWN = 8, /* collections the callback prints (plus each generation's first) */
    HEAP_SAMPLES = 4,      /* times main samples the live blocks during the run */
};

/* ---- the container --------------------------------------------------------------------------- */

typedef struct doc_node {
    ft_object ob;
    ft_object *next;  /* the ring or chain; owned */
    ft_object *extra; /* a chord, or another worker's document; owned, or NULL */
} doc_node;

/* The deallocs of each thread, counted in its own slot (the thread that frees a node is whichever
 * dropped its last reference, or the collecting one). */
static _Thread_local _Atomic(uint64_t) *freed_here;

static void count(_Atomic(uint64_t) *counter)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static int doc_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    doc_node *n = (doc_node *)self;
    int r = n->next ? visit(n->next, arg) : 0;
    if (r == 0 && n->extra)
        r = visit(n->extra, arg);
    return r;
}

static void doc_clear(ft_object *self)
{
    doc_node *n = (doc_node *)self;
    ft_object *next = n->next, *extra = n->extra;
    n->next = n->extra = NULL;
    ft_xdecref(next);
    ft_xdecref(extra);
}

static void doc_dealloc(ft_object *self)
{
    ft_gc_untrack(self);
    doc_clear(self);
    count(freed_here);
}

static const ft_type doc_type = {.name = "demo.doc_node",
                                 .basic_size = sizeof(doc_node),
                                 .flags = FT_TYPE_GC,
                                 .freelist_max = 64,
                                 .traverse = doc_traverse,
                                 .clear = doc_clear,
                                 .dealloc = doc_dealloc};

/* ---- the world ------------------------------------------------------------------------------- */

typedef struct gc_worker {
    _Alignas(64) struct gc_world *world;
    pthread_t os_thread;
    int number; /* 1..GC_WORKERS */
    uint64_t random_state;
    ft_object *window[WINDOW];
    size_t window_next;
    /* Written by this thread only, read by main after joining. */
    _Atomic(uint64_t) made, freed, documents, chains, published, taken;
} gc_worker;

/* What the callback sees; collections never overlap, so one of them at a time writes it. */
typedef struct collection_log {
    uint64_t pause_at_start, wall_at_start;
    _Atomic(uint64_t) starts, stops, shown;
    _Atomic(intptr_t) collected, uncollectable;
    bool generation_shown[FT_GC_GENERATIONS];
} collection_log;

typedef struct gc_world {
    ft_runtime *rt;
    gc_worker workers[GC_WORKERS];
    ft_object *_Atomic exchange[EXCHANGE_SLOTS];
    collection_log log;
    ft_event done;
    _Atomic(uint64_t) main_freed;
} gc_world;

/* The name the callback prints for the collecting thread. */
static _Thread_local const char *thread_name = "main";

/* ---- the workers ----------------------------------------------------------------------------- */

static doc_node *new_node(gc_worker *w, ft_thread *t)
{
    doc_node *n = (doc_node *)ft_alloc(t, &doc_type);
    if (n == NULL) {
        fprintf(stderr, "ftrt_demo: ft_alloc: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    ft_gc_track(&n->ob);
    count(&w->made);
    ft_safepoint(t); /* where automatic collections run */
    return n;
}

/* A new document with one reference for the caller; foreign (another worker's document, whose
 * reference it takes over) hangs on its first node. */
static ft_object *build_document(gc_worker *w, ft_thread *t, uint64_t r, ft_object *foreign)
{
    size_t length = 2 + (size_t)(r % (MAX_RING - 1));
    bool chain = (r >> 8) % 8 == 0;
    doc_node *nodes[MAX_RING];
    for (size_t i = 0; i < length; i++) {
        nodes[i] = new_node(w, t);
        if (i > 0)
            nodes[i - 1]->next = &nodes[i]->ob; /* the allocation's reference */
    }
    nodes[0]->extra = foreign;
    if (chain) {
        count(&w->chains);
    } else {
        ft_incref(&nodes[0]->ob);
        nodes[length - 1]->next = &nodes[0]->ob; /* close the ring */
        if ((r >> 12) % 2 == 0) {
            doc_node *from = nodes[1 + (r >> 16) % (length - 1)];
            if (from->extra == NULL) {
                ft_object *to = &nodes[(r >> 24) % length]->ob;
                ft_incref(to);
                from->extra = to;
            }
        }
    }
    count(&w->documents);
    return &nodes[0]->ob;
}

static void *gc_worker_main(void *arg)
{
    gc_worker *w = arg;
    gc_world *world = w->world;
    char name[16];
    snprintf(name, sizeof name, "worker %d", w->number);
    thread_name = name;
    freed_here = &w->freed;
    ft_thread *t = ft_thread_start(world->rt);
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    while (!ft_event_is_set(&world->done)) {
        uint64_t r = demo_random(&w->random_state);
        unsigned choice = (unsigned)(r >> 58); /* 0..63 */
        ft_object *_Atomic *slot = &world->exchange[(r >> 32) % EXCHANGE_SLOTS];
        ft_object *foreign = NULL;
        if (choice < 4) { /* take another worker's document (or nothing) */
            foreign = atomic_exchange_explicit(slot, NULL, memory_order_acq_rel);
            if (foreign)
                count(&w->taken);
        }
        ft_object *doc = build_document(w, t, r, foreign);
        if (choice >= 4 && choice < 8 && foreign == NULL) { /* publish this one as well */
            ft_incref(doc);
            ft_object *old = atomic_exchange_explicit(slot, doc, memory_order_acq_rel);
            ft_xdecref(old);
            count(&w->published);
        }
        ft_object *dropped = w->window[w->window_next];
        w->window[w->window_next] = doc;
        w->window_next = (w->window_next + 1) % WINDOW;
        ft_xdecref(dropped);
        ft_safepoint(t);
    }
    for (size_t i = 0; i < WINDOW; i++)
        ft_xdecref(w->window[i]);
    ft_thread_stop(t);
    return NULL;
}

/* ---- the callback ---------------------------------------------------------------------------- */

static uint64_t total_pause_ns(ft_runtime *rt)
{
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(rt, s);
    return s[0].pause_ns + s[1].pause_ns + s[2].pause_ns;
}

static void on_collection(ft_runtime *rt, ft_gc_phase phase, const ft_gc_info *info, void *arg)
{
    collection_log *log = arg;
    if (phase == FT_GC_PHASE_START) {
        count(&log->starts);
        log->pause_at_start = total_pause_ns(rt);
        log->wall_at_start = demo_now_ns();
        return;
    }
    uint64_t wall = demo_now_ns() - log->wall_at_start;
    uint64_t paused = total_pause_ns(rt) - log->pause_at_start;
    uint64_t number = atomic_load_explicit(&log->stops, memory_order_relaxed) + 1;
    count(&log->stops);
    atomic_fetch_add_explicit(&log->collected, info->collected, memory_order_relaxed);
    atomic_fetch_add_explicit(&log->uncollectable, info->uncollectable, memory_order_relaxed);
    bool first_of_generation = !log->generation_shown[info->generation];
    log->generation_shown[info->generation] = true;
    if (atomic_load_explicit(&log->shown, memory_order_relaxed) < COLLECTIONS_SHOWN ||
        first_of_generation) {
        count(&log->shown);
        char stopped[32], took[32];
        demo_format_duration(stopped, sizeof stopped, paused);
        demo_format_duration(took, sizeof took, wall);
        printf("  #%-5" PRIu64 " gen %d by %-8s %6" PRIdPTR " collected, %" PRIdPTR
               " uncollectable; world stopped %s of %s\n",
               number, info->generation, thread_name, info->collected, info->uncollectable,
               stopped, took);
    }
}

/* ---- the phase ------------------------------------------------------------------------------- */

static uint64_t live_blocks(ft_runtime *rt)
{
    ft_heap_stats stats;
    ft_heap_get_stats(rt, &stats);
    return stats.live_blocks;
}

static uint64_t sum(gc_world *w, size_t offset)
{
    uint64_t total = 0;
    for (size_t i = 0; i < GC_WORKERS; i++)
        total += atomic_load_explicit((_Atomic(uint64_t) *)((char *)&w->workers[i] + offset),
                                      memory_order_relaxed);
    return total;
}

#define SUM(w, field) sum((w), offsetof(gc_worker, field))

int demo_gc_phase(long run_ms, long cpus, const char *trace)
{
    static gc_world w; /* zeroed: empty slots, unset event, zero counters */
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.name = "demo-gc";
    cfg.trace = trace && *trace ? trace : NULL;
    w.rt = ft_runtime_new(&cfg);
    ft_thread *t = w.rt ? ft_thread_start(w.rt) : NULL;
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: cannot start the runtime: %s\n", ft_status_str(ft_last_error()));
        return 2;
    }
    freed_here = &w.main_freed;
    if (ft_gc_callback_add(w.rt, on_collection, &w.log) != FT_OK) {
        fprintf(stderr, "ftrt_demo: ft_gc_callback_add: %s\n", ft_status_str(ft_last_error()));
        return 2;
    }
    ft_gc_enable(w.rt);
    long threshold[FT_GC_GENERATIONS];
    ft_gc_get_threshold(w.rt, threshold);
    uint64_t before = live_blocks(w.rt);

    printf("== phase 4: cycles (the cycle collector) ==\n\n"
           "%d workers build rings of GC containers for %ld ms, keep each a while and drop it: "
           "every\ndropped ring is a cycle. Automatic collection (thresholds %ld/%ld/%ld): the "
           "worker whose\nallocations cross the threshold collects at its next safepoint. A gc "
           "callback prints:\n",
           GC_WORKERS, run_ms, threshold[0], threshold[1], threshold[2]);
    fflush(stdout);

    ft_detach(t); /* main waits; it must not hold up the workers' stops */
    for (int i = 0; i < GC_WORKERS; i++) {
        gc_worker *g = &w.workers[i];
        g->world = &w;
        g->number = i + 1;
        g->random_state = UINT64_C(0x2545F4914F6CDD1D) * (uint64_t)(i + 1);
        if (pthread_create(&g->os_thread, NULL, gc_worker_main, g) != 0) {
            fprintf(stderr, "ftrt_demo: pthread_create failed\n");
            exit(2);
        }
    }
    uint64_t peak = 0;
    for (int i = 0; i < HEAP_SAMPLES; i++) {
        demo_sleep_ms(run_ms / HEAP_SAMPLES + (i == 0 ? run_ms % HEAP_SAMPLES : 0));
        ft_attach(t);
        uint64_t live = live_blocks(w.rt);
        ft_detach(t);
        if (live > peak)
            peak = live;
    }
    ft_event_notify(&w.done);
    for (int i = 0; i < GC_WORKERS; i++)
        pthread_join(w.workers[i].os_thread, NULL);
    ft_attach(t);
    for (size_t i = 0; i < EXCHANGE_SLOTS; i++)
        ft_xdecref(atomic_exchange_explicit(&w.exchange[i], NULL, memory_order_relaxed));
    intptr_t last = ft_gc_collect(w.rt, 2);
    (void)live_blocks(w.rt); /* the restart of its stop frees what waited for the workers' QSBR */
    uint64_t after = live_blocks(w.rt);

    uint64_t shown = atomic_load_explicit(&w.log.shown, memory_order_relaxed);
    uint64_t stops = atomic_load_explicit(&w.log.stops, memory_order_relaxed);
    if (stops > shown)
        printf("  ... and %" PRIu64 " more collections; the last, a full one by main after the "
               "workers stopped, found %" PRIdPTR "\n",
               stops - shown, last);

    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(w.rt, s);
    printf("\n  generation  collections   collected  uncollectable   examined  world stopped: "
           "total, max\n");
    uint64_t collections = 0, collected = 0, uncollectable = 0;
    for (int g = 0; g < FT_GC_GENERATIONS; g++) {
        char total[32], max[32];
        demo_format_duration(total, sizeof total, s[g].pause_ns);
        demo_format_duration(max, sizeof max, s[g].max_pause_ns);
        printf("  %10d  %11" PRIu64 "  %10" PRIu64 "  %13" PRIu64 "  %9" PRIu64 "  %s, %s\n", g,
               s[g].collections, s[g].collected, s[g].uncollectable, s[g].candidates, total, max);
        collections += s[g].collections;
        collected += s[g].collected;
        uncollectable += s[g].uncollectable;
    }

    uint64_t made = SUM(&w, made);
    uint64_t freed = SUM(&w, freed) + atomic_load_explicit(&w.main_freed, memory_order_relaxed);
    printf("\nnodes          %" PRIu64 " made in %" PRIu64 " documents (%" PRIu64
           " chains); %" PRIu64 " handed to another worker\n",
           made, SUM(&w, documents), SUM(&w, chains), SUM(&w, taken));
    printf("  freed        %" PRIu64 ": %" PRIu64 " by the collector, %" PRIu64
           " by reference counting\n",
           freed, collected, freed - collected);
    printf("heap           live blocks before %" PRIu64 ", during up to %" PRIu64
           " (%d samples), after %" PRIu64 "\n",
           before, peak, HEAP_SAMPLES, after);
    if (cpus > 0 && GC_WORKERS > cpus)
        printf("note           %d workers on %ld CPUs: a collection's stop waits until a preempted "
               "worker runs again\n",
               GC_WORKERS, cpus);

    bool callbacks_ok = atomic_load_explicit(&w.log.starts, memory_order_relaxed) == collections &&
                        stops == collections &&
                        (uint64_t)atomic_load_explicit(&w.log.collected, memory_order_relaxed) ==
                            collected;
    bool ok = made == freed && after == before && uncollectable == 0 &&
              ft_gc_garbage_count(w.rt) == 0 && callbacks_ok;
    printf("\nevery cycle collected: %s\n",
           ok ? "yes (every node freed, heap back to where it was, the callbacks saw every "
                "collection)"
              : "NO");
    if (!ok)
        printf("  made %" PRIu64 ", freed %" PRIu64 "; live blocks %" PRIu64 " -> %" PRIu64
               "; uncollectable %" PRIu64 ", garbage %zu; callbacks %s\n",
               made, freed, before, after, uncollectable, ft_gc_garbage_count(w.rt),
               callbacks_ok ? "right" : "WRONG");

    ft_gc_callback_remove(w.rt, on_collection, &w.log);
    ft_thread_stop(t);
    ft_status status = ft_runtime_free(w.rt);
    if (status != FT_OK) {
        fprintf(stderr, "ftrt_demo: ft_runtime_free: %s\n", ft_status_str(status));
        return 2;
    }
    if (cfg.trace)
        printf("\ntrace          %s: open it at https://ui.perfetto.dev (\"Open trace file\"), or "
               "draw it offline with `make trace-screenshot` (docs/tracing.md)\n",
               cfg.trace);
    return ok ? 0 : 1;
}
