/* demo/stackrefs.c: the demo's fifth phase: shared functions called through stack references.
 *
 * A table holds a few "functions": GC objects of an FT_TYPE_DEFERRED type, so every thread pushes
 * them onto its evaluation stack as tagged stackrefs (ftrt/stackref.h) without touching their
 * counts. Each worker registers a stack region (ft_stack_push_region) and runs "frames": it pushes
 * the frame's own function in slot 0, then for 256 calls pushes a function from the table and a
 * tagged integer argument, calls it, and closes both; it reaches a safepoint every 32 calls, so
 * collections run while its frame's function sits on its stack.
 *
 * Main redefines a random function every millisecond (a new deferred object goes into the table,
 * main drops its reference to the old one) and runs a full collection every 4 ms. A retired
 * function is then held only by the stacks that still have it; only the collector frees it, once
 * no registered stack has it. Every call checks its function's magic word, so a function freed
 * while a stack still held it would be seen (calls_to_freed). The phase runs one worker, then
 * several, and prints calls per second with N threads ÷ 1 thread: the functions' counts are never
 * written, so the workers share nothing they write.
 *
 * At the end the workers pop their regions and stop, main empties the table and runs a full
 * collection: every function made must have been freed, exactly once. */
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
    FUNCTIONS = 16,
    MAX_WORKERS = 4,
    STACK_SLOTS = 32,
    CALLS_PER_FRAME = 256,
    REDEFINE_EVERY_MS = 1,
    COLLECT_EVERY_MS = 4,
};

#define FUNCTION_MAGIC UINT64_C(0xF00DFACEF00DFACE)

/* ---- the function ------------------------------------------------------------------------------ */

typedef struct function {
    ft_object ob;
    _Atomic(uint64_t) magic; /* FUNCTION_MAGIC while alive, 0 once freed */
    int64_t coefficient;
} function;

static _Atomic(uint64_t) functions_made, functions_freed, functions_bad_frees;

static int function_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    (void)self, (void)visit, (void)arg;
    return 0;
}

static void function_dealloc(ft_object *self)
{
    function *f = (function *)self;
    ft_gc_untrack(self);
    if (atomic_exchange_explicit(&f->magic, 0, memory_order_relaxed) != FUNCTION_MAGIC)
        atomic_fetch_add_explicit(&functions_bad_frees, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&functions_freed, 1, memory_order_relaxed);
}

static const ft_type function_type = {.name = "demo.function",
                                      .basic_size = sizeof(function),
                                      .flags = FT_TYPE_GC | FT_TYPE_DEFERRED,
                                      .traverse = function_traverse,
                                      .dealloc = function_dealloc};

static function *new_function(ft_thread *t, int64_t coefficient)
{
    function *f = (function *)ft_alloc(t, &function_type);
    if (!f) {
        fprintf(stderr, "ftrt_demo: ft_alloc: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    atomic_store_explicit(&f->magic, FUNCTION_MAGIC, memory_order_relaxed);
    f->coefficient = coefficient;
    ft_gc_track(&f->ob);
    atomic_fetch_add_explicit(&functions_made, 1, memory_order_relaxed);
    return f;
}

/* ---- the world --------------------------------------------------------------------------------- */

typedef struct sr_world sr_world;

typedef struct sr_worker {
    _Alignas(128) sr_world *world;
    pthread_t os_thread;
    uint64_t random_state;
    uint64_t calls, calls_to_freed, start_ns, end_ns;
    int64_t checksum;
    ft_stackref stack[STACK_SLOTS]; /* the registered region */
} sr_worker;

struct sr_world {
    ft_runtime *rt;
    function *_Atomic table[FUNCTIONS]; /* main owns one counted reference to each */
    _Atomic(bool) stop;
    sr_worker workers[MAX_WORKERS];
};

/* Call the function in fn with the argument in arg; the result is a tagged integer. */
static ft_stackref call(sr_worker *w, ft_stackref fn, ft_stackref arg)
{
    function *f = (function *)ft_stackref_as_object_borrow(fn);
    if (atomic_load_explicit(&f->magic, memory_order_relaxed) != FUNCTION_MAGIC)
        w->calls_to_freed++;
    w->calls++;
    return ft_stackref_tag_int(ft_stackref_untag_int(arg) * f->coefficient + 1);
}

static function *pick(sr_worker *w)
{
    return atomic_load_explicit(&w->world->table[demo_random(&w->random_state) % FUNCTIONS],
                                memory_order_acquire);
}

static void *sr_worker_main(void *arg)
{
    sr_worker *w = arg;
    ft_thread *t = ft_thread_start(w->world->rt);
    if (!t) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    ft_stack_region region;
    ft_stackref *s = w->stack;
    ft_stack_push_region(t, &region, s);
    w->start_ns = demo_now_ns();
    while (!atomic_load_explicit(&w->world->stop, memory_order_relaxed)) {
        /* A frame: its function stays in slot 0 across the safepoints below. No safepoint between
         * reading the table and pushing: a collection cannot run in between. */
        s[0] = ft_stackref_from_object_new(&pick(w)->ob);
        ft_stack_region_set_top(&region, s + 1);
        for (int i = 0; i < CALLS_PER_FRAME; i++) {
            s[1] = ft_stackref_from_object_new(&pick(w)->ob);
            s[2] = ft_stackref_tag_int(i);
            ft_stack_region_set_top(&region, s + 3);
            ft_stackref result = call(w, s[1], s[2]);
            ft_stack_region_set_top(&region, s + 1);
            ft_stackref_close(s[2]);
            ft_stackref_close(s[1]);
            w->checksum += ft_stackref_untag_int(result);
            if (i % 32 == 31)
                ft_safepoint(t);
        }
        /* The frame's function, maybe retired meanwhile, must still be alive. */
        w->checksum += ft_stackref_untag_int(call(w, s[0], ft_stackref_tag_int(1)));
        ft_stack_region_set_top(&region, s);
        ft_stackref_close(s[0]);
        ft_safepoint(t);
    }
    w->end_ns = demo_now_ns();
    ft_stack_pop_region(t, &region);
    ft_thread_stop(t);
    return NULL;
}

/* Run `workers` workers for run_ms while main redefines and collects; calls per second. */
static double run_round(sr_world *w, ft_thread *t, int workers, long run_ms, uint64_t *redefined,
                        uint64_t *collections, uint64_t *calls_to_freed)
{
    atomic_store(&w->stop, false);
    for (int i = 0; i < workers; i++) {
        sr_worker *g = &w->workers[i];
        g->world = w;
        g->calls = g->calls_to_freed = 0;
        g->random_state = UINT64_C(0x9E3779B97F4A7C15) * (uint64_t)(i + 1 + workers * 8);
        if (pthread_create(&g->os_thread, NULL, sr_worker_main, g) != 0) {
            fprintf(stderr, "ftrt_demo: pthread_create failed\n");
            exit(2);
        }
    }
    uint64_t random_state = 0x1234567u + (uint64_t)workers;
    for (long ms = 0; ms < run_ms; ms++) {
        demo_sleep_ms(1);
        ft_attach(t);
        if (ms % REDEFINE_EVERY_MS == 0) {
            function *f = new_function(t, (int64_t)(demo_random(&random_state) % 100));
            function *old = atomic_exchange_explicit(
                &w->table[demo_random(&random_state) % FUNCTIONS], f, memory_order_acq_rel);
            ft_decref(&old->ob); /* deferred: only the collector frees it, once no stack has it */
            (*redefined)++;
        }
        if (ms % COLLECT_EVERY_MS == COLLECT_EVERY_MS - 1) {
            ft_gc_collect(w->rt, 2);
            (*collections)++;
        }
        ft_detach(t);
    }
    atomic_store(&w->stop, true);
    uint64_t calls = 0, first = UINT64_MAX, last = 0;
    for (int i = 0; i < workers; i++) {
        sr_worker *g = &w->workers[i];
        pthread_join(g->os_thread, NULL);
        calls += g->calls;
        *calls_to_freed += g->calls_to_freed;
        first = g->start_ns < first ? g->start_ns : first;
        last = g->end_ns > last ? g->end_ns : last;
    }
    return (double)calls / ((double)(last - first) / 1e9);
}

int demo_stackrefs_phase(long run_ms, long cpus)
{
    static sr_world w;
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.name = "demo-stackrefs";
    w.rt = ft_runtime_new(&cfg);
    ft_thread *t = w.rt ? ft_thread_start(w.rt) : NULL;
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: cannot start the runtime: %s\n", ft_status_str(ft_last_error()));
        return 2;
    }
    int workers = cpus < 2 ? 2 : cpus > MAX_WORKERS ? MAX_WORKERS : (int)cpus;
    printf("== phase 5: stack references (deferred functions called from registered stacks) ==\n\n"
           "Workers call %d shared deferred functions through tagged stackrefs on their stack "
           "regions;\nmain redefines one every %d ms and runs a full collection every %d ms.\n",
           FUNCTIONS, REDEFINE_EVERY_MS, COLLECT_EVERY_MS);
    for (int i = 0; i < FUNCTIONS; i++)
        atomic_store(&w.table[i], new_function(t, i + 1));
    ft_detach(t);

    uint64_t redefined = 0, collections = 0, calls_to_freed = 0;
    double one = run_round(&w, t, 1, run_ms / 2, &redefined, &collections, &calls_to_freed);
    double many = run_round(&w, t, workers, run_ms - run_ms / 2, &redefined, &collections,
                            &calls_to_freed);
    ft_attach(t);
    uint64_t freed_while_running = atomic_load(&functions_freed);
    printf("calls: 1 thread %.1f M/s, %d threads %.1f M/s: scaling %.2fx (%" PRIu64
           " full collections meanwhile)\n",
           one / 1e6, workers, many / 1e6, many / one, collections);

    /* The stacks are gone: empty the table and collect. */
    for (int i = 0; i < FUNCTIONS; i++)
        ft_decref(&atomic_exchange(&w.table[i], NULL)->ob);
    intptr_t last = ft_gc_collect(w.rt, 2);
    uint64_t made = atomic_load(&functions_made), freed = atomic_load(&functions_freed);
    printf("functions: %" PRIu64 " made, %" PRIu64 " redefined; %" PRIu64
           " retired ones freed while stacks ran, the last full collection freed %" PRIdPTR "\n",
           made, redefined, freed_while_running, last);
    bool ok = calls_to_freed == 0 && made == freed && atomic_load(&functions_bad_frees) == 0 &&
              freed_while_running <= redefined && last >= 0 &&
              (uint64_t)last == made - freed_while_running;
    printf("calls through a freed function: %" PRIu64 "; every function freed exactly once: %s\n",
           calls_to_freed, made == freed && atomic_load(&functions_bad_frees) == 0 ? "yes" : "NO");
    if (cpus > 0 && workers + 1 > cpus)
        printf("note: %d workers and main on %ld CPUs: main's collections take time from the "
               "workers\n",
               workers, cpus);
    printf("\nstack references held: %s\n", ok ? "yes" : "NO");

    ft_thread_stop(t);
    ft_status status = ft_runtime_free(w.rt);
    if (status != FT_OK) {
        fprintf(stderr, "ftrt_demo: ft_runtime_free: %s\n", ft_status_str(status));
        return 2;
    }
    return ok ? 0 : 1;
}
