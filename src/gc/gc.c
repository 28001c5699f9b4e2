/* gc.c: the cycle collector: tracking, counting and scheduling, and collections.
 *
 * A collection of generation g (CPython's gc_collect_main, on a heap without a GC list):
 *
 *  stop the world (1)
 *    settle every count: the merge queues and outboxes (BRC), the per-thread counts, the delayed
 *      decrefs; objects those leave at zero are deallocated after the restart, never collected;
 *    (full collections) mark alive what the host's roots reach (ALIVE), so that nothing below
 *      touches it but the walk that clears the mark;
 *    gather the candidates: the tracked objects of generations 0..g, not frozen, not immortal, not
 *      at zero, and (young collections) not deferred, whose references a count may not show.
 *      Young collections walk only the pages that may hold them (heap.c, "Young pages"). Each
 *      candidate gets UNREACHABLE, and its ob_tid is borrowed to hold its count of references from
 *      outside the candidates (its owner's id waits in an array): every candidate is marked and
 *      counted before any count is subtracted, and only marked objects are subtracted from, so an
 *      older object is never written (its references into the candidates count as external, as in
 *      CPython's default build);
 *    subtract the references between candidates (traverse), then clear UNREACHABLE on every
 *      candidate with references left and on everything it reaches among the candidates (an
 *      explicit stack: no recursion);
 *    survivors get their ob_tid back and move to generation g + 1; the unreachable ones are merged
 *      (any thread's decref may free them from now on, as their only references are each other's
 *      and the collector's) and lose their unique ids; those with a legacy finalizer and
 *      everything they reach move to the uncollectable list (they survive, in generation g + 1);
 *    clear every weak reference to an unreachable object, and every unreachable weak reference;
 *      keep (with a reference) the live weak references with callbacks, newest first per referent;
 *  start the world
 *    deallocate what the settling left at zero; call the kept callbacks, each weak reference freed
 *      right after its callback counting as collected; run the PEP 442 finalizers of the
 *      unreachable objects not finalized yet (FINALIZED);
 *  stop the world (2), unless no host code ran since the first
 *    resurrection: among the objects still unreachable (a finalizer or a death may have untracked
 *      some: that took them out), subtract the references between them again; those with
 *      references left, and what they reach, were resurrected: they move to generation g + 1;
 *  start the world
 *    clear each object still unreachable (or, under DEBUG_SAVEALL, put it in garbage); put the
 *      legacy finalizer objects (all of them under SAVEALL) in garbage; free the zombies.
 *
 * What collect returns and the stats count are CPython's: the objects still unreachable after the
 * finalizers, plus the weak references their callbacks freed, plus the uncollectable ones.
 *
 * Objects that die while the world runs during a collection (a callback, a finalizer or a clear
 * dropped the last reference) are deallocated at once, as CPython does; an object of the unreachable
 * set leaves it as it dies, and its memory is freed at once or waits for the end ("Leaving a
 * collection", below; gc/gc.h, "Deferred frees"), so that the collector never reads freed memory. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

/* ---- header bits and generations --------------------------------------------------------------- */

static uint8_t bits_of(const ft_object *o)
{
    return atomic_load_explicit(&((ft_object *)o)->ob_gc_bits, memory_order_relaxed);
}

/* A store of gc bits by one of their allowed writers (ftrt/object.h). */
static void bits_store(ft_object *o, uint8_t bits)
{
    atomic_store_explicit(&o->ob_gc_bits, bits, memory_order_relaxed);
}

static bool in_oldest(const ft_object *o)
{
    return atomic_load_explicit(&((ft_object *)o)->ob_flags, memory_order_relaxed) &
           FT_OBJ_GC_OLDEST;
}

/* The generation of a tracked object: 0, 1 or 2, or FT_GC_GENERATIONS when frozen. */
static int generation_of(const ft_object *o, uint8_t bits)
{
    if (bits & FT_GC_FROZEN)
        return FT_GC_GENERATIONS;
    if (!(bits & FT_GC_OLD))
        return 0;
    return in_oldest(o) ? 2 : 1;
}

/* Put o in generation 1 or 2 (its bits' writer: the collector). */
static void move_to_old(ft_object *o, int generation)
{
    uint8_t bits = bits_of(o);
    if (!(bits & FT_GC_OLD) || (bits & FT_GC_FROZEN))
        bits_store(o, (uint8_t)((bits | FT_GC_OLD) & ~FT_GC_FROZEN));
    bool oldest = in_oldest(o);
    if (generation == 2 && !oldest)
        atomic_fetch_or_explicit(&o->ob_flags, FT_OBJ_GC_OLDEST, memory_order_relaxed);
    else if (generation == 1 && oldest)
        atomic_fetch_and_explicit(&o->ob_flags, (uint16_t)~FT_OBJ_GC_OLDEST, memory_order_relaxed);
}

static FT_NORETURN __attribute__((noinline, cold)) void track_misuse(const ft_object *o,
                                                                    const char *what)
{
    ft_fatal("ft_gc_track: object %p of type '%s' %s", (void *)o,
             o->ob_type && o->ob_type->name ? o->ob_type->name : "?", what);
}

void ft_gc_track(ft_object *o)
{
    uint8_t bits = bits_of(o);
    if (FT_UNLIKELY(!(o->ob_type->flags & FT_TYPE_GC)))
        track_misuse(o, "is not of a GC type (FT_TYPE_GC)");
    if (FT_UNLIKELY(bits & FT_GC_TRACKED))
        track_misuse(o, "is already tracked");
    ft_thread *t = ft_current_thread;
    if (FT_UNLIKELY(!t))
        track_misuse(o, "is tracked by a thread that is not attached");
    if (FT_UNLIKELY(bits & FT_GC_UNREACHABLE)) /* untracked out of a collection under way */
        bits = ft_gc_leave_collection(t, o) ? bits : bits_of(o);
    bits_store(o, (uint8_t)((bits | FT_GC_TRACKED) & ~(FT_GC_OLD | FT_GC_FROZEN)));
    ft_heap_note_young(t, o);
}

void ft_gc_move_to_young(ft_object *o)
{
    uint8_t bits = bits_of(o);
    bits_store(o, (uint8_t)(bits & ~(FT_GC_OLD | FT_GC_FROZEN)));
    ft_heap_note_young(ft_current_thread, o);
}

void ft_gc_untrack(ft_object *o)
{
    uint8_t bits = bits_of(o);
    if (FT_UNLIKELY(bits & FT_GC_UNREACHABLE)) {
        ft_thread *t = ft_current_thread;
        if (t && !ft_gc_leave_collection(t, o))
            bits = bits_of(o);
    }
    if (bits & (FT_GC_TRACKED | FT_GC_FROZEN))
        bits_store(o, (uint8_t)(bits & ~(FT_GC_TRACKED | FT_GC_FROZEN)));
}

/* ---- leaving a collection ------------------------------------------------------------------ */

/* While the world runs during a collection, each object of its unreachable set carries
 * UNREACHABLE, is merged, and holds 1 + its index in the collector's array (rt->gc.work.set) in
 * ob_tid (never a thread id: those are addresses). An object leaves the set when it is untracked or
 * its count reaches zero. On the collecting thread, which alone reads the array while the world
 * runs, it leaves at once: its entry is emptied and its ob_tid is 0 again, so its memory may be
 * freed as usual. On another thread (rare: only the collector's callbacks, finalizers and clears can
 * reach garbage, and only by publishing it could another thread), or if the entry is not found (its
 * ob_tid was rewritten: ft_set_refcount, ft_immortalize), it keeps UNREACHABLE for the collector to
 * drop, and its memory, if it dies, waits for the collection's end: the collector may be reading it
 * (gc/gc.h, "Deferred frees"). Returns whether its memory must wait. */
bool ft_gc_leave_collection(ft_thread *t, ft_object *o)
{
    ft_runtime *rt = t->rt;
    ft_gc_work *w = &rt->gc.work;
    if (atomic_load_explicit(&rt->gc.collector, memory_order_relaxed) == t &&
        !atomic_load_explicit(&rt->gc.defer_all_frees, memory_order_relaxed)) {
        size_t index = atomic_load_explicit(&o->ob_tid, memory_order_relaxed) - 1;
        if (index < w->entries && w->set[index] == o) {
            w->set[index] = NULL;
            atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed);
            bits_store(o, (uint8_t)(bits_of(o) & ~FT_GC_UNREACHABLE));
            return false;
        }
    }
    return true;
}

bool ft_gc_is_tracked(const ft_object *o)
{
    return bits_of(o) & FT_GC_TRACKED;
}

bool ft_gc_is_finalized(const ft_object *o)
{
    return (o->ob_type->flags & FT_TYPE_GC) && (bits_of(o) & FT_GC_FINALIZED);
}

int ft_gc_traverse(ft_object *o, ft_visit_fn visit, void *arg)
{
    const ft_type *type = o->ob_type;
    if (type->flags & FT_TYPE_WEAKREF) {
        ft_object *cb_arg = ((ft_weakref *)o)->wr_arg;
        int r = cb_arg ? visit(cb_arg, arg) : 0;
        if (r)
            return r;
    }
    return type->traverse ? type->traverse(o, visit, arg) : 0;
}

void ft_gc_clear(ft_object *o)
{
    const ft_type *type = o->ob_type;
    if (type->clear)
        type->clear(o);
    if (type->flags & FT_TYPE_WEAKREF)
        ft_weakref_release_base((ft_weakref *)o);
}

/* ---- counting and scheduling --------------------------------------------------------------- */

static long threshold_of(ft_runtime *rt, int g)
{
    return atomic_load_explicit(&rt->gc.threshold[g], memory_order_relaxed);
}

/* Where t folds next: FT_GC_FLUSH away, or, with automatic collection on, at the allocation that
 * makes the total exceed generation 0's threshold, which may be the next one or, after
 * deallocations, one that brings the thread's part back up (CPython checks at every allocation). */
static int32_t limit_for(ft_runtime *rt, int64_t total)
{
    long threshold = threshold_of(rt, 0);
    if (!atomic_load_explicit(&rt->gc.enabled, memory_order_relaxed) || threshold <= 0)
        return FT_GC_FLUSH;
    int64_t room = (int64_t)threshold + 1 - total;
    return room < 1 - FT_GC_FLUSH ? 1 - FT_GC_FLUSH : room > FT_GC_FLUSH ? FT_GC_FLUSH : (int32_t)room;
}

static bool collection_due(ft_runtime *rt, int64_t total)
{
    long threshold = threshold_of(rt, 0);
    return atomic_load_explicit(&rt->gc.enabled, memory_order_relaxed) && threshold > 0 &&
           total > threshold && !atomic_load_explicit(&rt->gc.collecting, memory_order_relaxed);
}

void ft_gc_count_fold(ft_thread *t, bool allocating)
{
    ft_runtime *rt = t->rt;
    int32_t c = atomic_load_explicit(&t->gc.count, memory_order_relaxed);
    atomic_store_explicit(&t->gc.count, 0, memory_order_relaxed);
    int64_t total = atomic_fetch_add_explicit(&rt->gc.count0, c, memory_order_relaxed) + c;
    t->gc.seen_total = total;
    t->gc.limit = limit_for(rt, total);
    /* Not at once: the allocating call is in the middle of building its object. */
    if (allocating && collection_due(rt, total))
        atomic_fetch_or_explicit(&t->head.pending, FT_PENDING_GC, memory_order_relaxed);
}

/* World stopped: fold every thread's count into count0 (or, with reset, zero them all) and set each
 * thread's limit afresh. Takes head_mutex. */
static void counts_refold_stopped(ft_runtime *rt, bool reset)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    int64_t total = reset ? 0 : atomic_load_explicit(&rt->gc.count0, memory_order_relaxed);
    for (ft_thread *t = rt->threads; t; t = t->next) {
        if (!reset)
            total += atomic_load_explicit(&t->gc.count, memory_order_relaxed);
        atomic_store_explicit(&t->gc.count, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&rt->gc.count0, total, memory_order_relaxed);
    for (ft_thread *t = rt->threads; t; t = t->next) {
        t->gc.seen_total = total;
        t->gc.limit = limit_for(rt, total);
    }
    ft_mutex_unlock(&rt->head_mutex);
}

void ft_gc_counts_reset_stopped(ft_runtime *rt)
{
    for (int g = 1; g < FT_GC_GENERATIONS; g++)
        atomic_store_explicit(&rt->gc.counts[g], 0, memory_order_relaxed);
    counts_refold_stopped(rt, true);
}

/* Enable, thresholds: the threads' limits depend on them. */
static void counts_refold(ft_runtime *rt)
{
    bool stopped = ft_stw_stop_unless_held(rt, "gc settings");
    counts_refold_stopped(rt, false);
    if (stopped)
        ft_start_the_world(rt);
}

void ft_gc_thread_start(ft_thread *t)
{
    int64_t total = atomic_load_explicit(&t->rt->gc.count0, memory_order_relaxed);
    t->gc.seen_total = total;
    t->gc.limit = limit_for(t->rt, total);
}

void ft_gc_thread_stop(ft_thread *t)
{
    if (FT_UNLIKELY(t->gc.regions != NULL))
        ft_fatal("ft_thread_stop: thread %p still has stack region %p registered (base %p): pop "
                 "every region before the thread stops",
                 (void *)t, (void *)t->gc.regions, (void *)t->gc.regions->base);
    int32_t c = atomic_load_explicit(&t->gc.count, memory_order_relaxed);
    atomic_store_explicit(&t->gc.count, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->rt->gc.count0, c, memory_order_relaxed);
}

static int64_t count0_exact(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    int64_t total = atomic_load_explicit(&rt->gc.count0, memory_order_relaxed);
    for (ft_thread *t = rt->threads; t; t = t->next)
        total += atomic_load_explicit(&t->gc.count, memory_order_relaxed);
    ft_mutex_unlock(&rt->head_mutex);
    return total < 0 ? 0 : total;
}

void ft_gc_get_count(ft_runtime *rt, long count[FT_GC_GENERATIONS])
{
    count[0] = (long)count0_exact(rt);
    count[1] = atomic_load_explicit(&rt->gc.counts[1], memory_order_relaxed);
    count[2] = atomic_load_explicit(&rt->gc.counts[2], memory_order_relaxed);
}

void ft_gc_enable(ft_runtime *rt)
{
    atomic_store_explicit(&rt->gc.enabled, true, memory_order_relaxed);
    counts_refold(rt);
}

void ft_gc_disable(ft_runtime *rt)
{
    atomic_store_explicit(&rt->gc.enabled, false, memory_order_relaxed);
    counts_refold(rt);
}

bool ft_gc_is_enabled(ft_runtime *rt)
{
    return atomic_load_explicit(&rt->gc.enabled, memory_order_relaxed);
}

void ft_gc_get_threshold(ft_runtime *rt, long threshold[FT_GC_GENERATIONS])
{
    for (int g = 0; g < FT_GC_GENERATIONS; g++)
        threshold[g] = threshold_of(rt, g);
}

ft_status ft_gc_set_threshold(ft_runtime *rt, const long threshold[FT_GC_GENERATIONS])
{
    for (int g = 0; g < FT_GC_GENERATIONS; g++)
        if (threshold[g] < 0)
            return FT_EINVAL;
    for (int g = 0; g < FT_GC_GENERATIONS; g++)
        atomic_store_explicit(&rt->gc.threshold[g], threshold[g], memory_order_relaxed);
    counts_refold(rt);
    return FT_OK;
}

/* ---- zombies --------------------------------------------------------------------------------- */

/* Free a list of zombies linked through ob_tid. */
static void zombies_free_list(ft_thread *t, uintptr_t next)
{
    while (next) {
        ft_object *o = (ft_object *)next;
        next = atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
        ft_object_free_memory(t, o);
    }
}

/* Free every zombie on the runtime's stack (taken whole: each is freed once, by whoever takes it). */
static void zombies_free(ft_runtime *rt)
{
    zombies_free_list(ft_current_thread,
                      atomic_exchange_explicit(&rt->gc.zombies, 0, memory_order_seq_cst));
}

void ft_gc_zombie_push(ft_thread *t, ft_object *o)
{
    ft_runtime *rt = t->rt;
    /* The collector's own deallocs (nearly all of a collection's) go on its private list. */
    if (atomic_load_explicit(&rt->gc.collector, memory_order_relaxed) == t) {
        atomic_store_explicit(&o->ob_tid, (uintptr_t)t->gc.zombies, memory_order_relaxed);
        t->gc.zombies = o;
        return;
    }
    uintptr_t head = atomic_load_explicit(&rt->gc.zombies, memory_order_relaxed);
    do
        atomic_store_explicit(&o->ob_tid, head, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&rt->gc.zombies, &head, (uintptr_t)o,
                                                  memory_order_seq_cst, memory_order_relaxed));
    /* The collection may have ended between this thread's look at `collecting` and the push, and its
     * last take of the stack missed this one: then free it here. Both sides are seq_cst (the
     * collector clears `collecting`, then takes), so at least one of them sees the other. */
    if (!atomic_load_explicit(&rt->gc.collecting, memory_order_seq_cst))
        zombies_free(rt);
}

/* ---- one collection -------------------------------------------------------------------------- */

/* The collection's working state, on the collector's stack; its arrays are the runtime's
 * (rt->gc.work and the workers' in rt->gc.pool), kept from one collection to the next so that a
 * collection does not fault in fresh memory for them. While the world is stopped, each candidate's
 * ob_tid holds its count of references from outside the candidates (CPython's gc_refs), its owner's
 * id waiting in its worker's tids. */
typedef struct ft_gc_collection {
    ft_runtime *rt;
    ft_gc_work *w;
    ft_gc_pool *pool;
    int generation, older; /* collected, and where survivors go */
    /* The stop's marking workers (1: the collecting thread alone); with more than one, marks and
     * counts change by atomic read-modify-writes (shared). */
    int workers;
    bool shared;
    size_t n;             /* candidates, in every run */
    size_t n_runs;        /* chunks of the walk's pages, each with its run of candidates */
    size_t chunk_pages;   /* pages per chunk */
    uint64_t estimate;    /* objects on the walk's pages: what picks the number of workers */
    _Atomic(size_t) claim; /* the next chunk or run a worker takes; 0 at each phase's start */
    bool oom;
    uint64_t alive; /* objects the roots' mark kept out of the candidates */
    size_t sp;      /* the serial mark stack: w->stack[0, sp) */
    /* What the scan saw among the unreachable objects: legacy finalizers, weak references, PEP 442
     * finalizers still to run. */
    bool saw_legacy, saw_weakrefs, saw_finalizers;
    /* A thread's stack region had no known top: no deferred object is a candidate. */
    bool skip_deferred;
    ft_object **unreachable, **legacy;
    size_t n_unreachable, n_legacy;
    /* Live weak references whose callbacks run (with a reference), and those still alive after. */
    ft_weakref **callbacks, **kept;
    size_t n_callbacks, n_kept, callbacks_cap;
    /* Deferred garbage that nothing counted once its deferral was gone (only stacks or nothing held
     * it): the collector holds one reference to each until the end, as CPython's worklist does. */
    ft_object **held;
    size_t n_held, held_cap;
    intptr_t collected, uncollectable;
    uint64_t survivors;
    int64_t pause_ns;
    ft_dead_list dead;
} collection;

static bool grow(void **array, size_t *cap, size_t elem, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 1024;
    while (n < need)
        n *= 2;
    void *grown = realloc(*array, n * elem);
    if (!grown)
        return false;
    *array = grown;
    *cap = n;
    return true;
}

static intptr_t refs_of(const ft_object *o)
{
    return (intptr_t)atomic_load_explicit(&((ft_object *)o)->ob_tid, memory_order_relaxed);
}

static void refs_store(ft_object *o, intptr_t refs)
{
    atomic_store_explicit(&o->ob_tid, (uintptr_t)refs, memory_order_relaxed);
}

static bool add_candidate(ft_gc_worker *wk, ft_object *o, intptr_t refs)
{
    if (wk->n == wk->cap) {
        size_t cap = wk->cap, cap2 = wk->cap;
        if (!grow((void **)&wk->objs, &cap, sizeof *wk->objs, wk->n + 1) ||
            !grow((void **)&wk->tids, &cap2, sizeof *wk->tids, wk->n + 1))
            return false;
        wk->cap = cap < cap2 ? cap : cap2;
    }
    wk->objs[wk->n] = o;
    wk->tids[wk->n] = atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
    refs_store(o, refs);
    bits_store(o, (uint8_t)(bits_of(o) | FT_GC_UNREACHABLE));
    wk->n++;
    return true;
}

/* The walk's visitor (on the worker that claimed the block's page): take o as a candidate if it
 * belongs to the collected generations. */
static bool gather(void *block, size_t size, void *arg)
{
    (void)size;
    ft_gc_worker *wk = arg;
    collection *c = wk->c;
    ft_object *o = block;
    uint8_t bits = bits_of(o);
    if (!(bits & FT_GC_TRACKED) || (bits & FT_GC_FROZEN))
        return true;
    if (bits & FT_GC_ALIVE) { /* the roots reach it: it survives, and is in generation 2 already */
        bits_store(o, (uint8_t)(bits & ~FT_GC_ALIVE));
        wk->alive++;
        return true;
    }
    if (generation_of(o, bits) > c->generation || ft_object_is_immortal(o))
        return true;
    uint16_t flags = atomic_load_explicit(&o->ob_flags, memory_order_relaxed);
    /* A deferred object's references from evaluation stacks are in no count; an older holder of
     * one is not traversed by a young collection, so such objects wait for a full one. */
    if ((flags & FT_OBJ_DEFERRED) && (c->generation < 2 || c->skip_deferred))
        return true;
    intptr_t refs = ft_refcount(o);
    if (refs == 0) /* dead: deallocated after the restart by whoever settled its count */
        return true;
    if (FT_UNLIKELY(flags & FT_OBJ_DEFERRED))
        refs -= ft_object_deferral_bias(o); /* the stack scan adds its stack references */
    if (!add_candidate(wk, o, refs)) {
        wk->oom = true;
        return false;
    }
    return true;
}

static int visit_decref(ft_object *r, void *arg)
{
    (void)arg;
    if (r && (bits_of(r) & FT_GC_UNREACHABLE))
        refs_store(r, refs_of(r) - 1);
    return 0;
}

/* visit_decref when several workers subtract: two of them may reach the same candidate. */
static int visit_decref_shared(ft_object *r, void *arg)
{
    (void)arg;
    if (r && (bits_of(r) & FT_GC_UNREACHABLE))
        atomic_fetch_sub_explicit(&r->ob_tid, 1, memory_order_relaxed);
    return 0;
}

/* Clear UNREACHABLE on a candidate and queue it for traversal. The stack has room for every
 * candidate (each is pushed once: its bit is cleared first). */
static int visit_reachable(ft_object *r, void *arg)
{
    collection *c = arg;
    uint8_t bits;
    if (r && ((bits = bits_of(r)) & FT_GC_UNREACHABLE)) {
        bits_store(r, (uint8_t)(bits & ~FT_GC_UNREACHABLE));
        c->w->stack[c->sp++] = r;
    }
    return 0;
}

/* From each object on the stack, clear UNREACHABLE on what it reaches. */
static void propagate(collection *c)
{
    while (c->sp) {
        ft_object *o = c->w->stack[--c->sp];
        ft_gc_traverse(o, visit_reachable, c);
    }
}

/* Clear UNREACHABLE on every candidate of objs[0, n) with references left, and on what it reaches:
 * what stays marked is unreachable. */
static void mark_reachable(collection *c, ft_object **objs, size_t n)
{
    c->sp = 0;
    for (size_t i = 0; i < n; i++) {
        ft_object *o = objs[i];
        uint8_t bits = bits_of(o);
        if ((bits & FT_GC_UNREACHABLE) && refs_of(o) > 0) {
            bits_store(o, (uint8_t)(bits & ~FT_GC_UNREACHABLE));
            c->w->stack[c->sp++] = o;
            propagate(c);
        }
    }
}

static bool clear_alive(void *block, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    ft_object *o = block;
    uint8_t bits = bits_of(o);
    if (bits & FT_GC_ALIVE)
        bits_store(o, (uint8_t)(bits & ~FT_GC_ALIVE));
    return true;
}

/* Out of memory while gathering or marking alive: put every candidate back as it was, clear every
 * ALIVE bit; the collection finds nothing. */
static void undo_gather(collection *c)
{
    for (size_t r = 0; r < c->n_runs; r++) {
        const ft_gc_run *run = &c->w->runs[r];
        ft_gc_worker *wk = &c->pool->workers[run->worker];
        for (size_t i = run->start; i < run->start + run->count; i++) {
            ft_object *o = wk->objs[i];
            atomic_store_explicit(&o->ob_tid, wk->tids[i], memory_order_relaxed);
            bits_store(o, (uint8_t)(bits_of(o) & ~FT_GC_UNREACHABLE));
        }
    }
    c->n = 0;
    c->n_runs = 0;
    if (c->generation == 2)
        ft_heap_visit(c->rt, FT_HEAP_GC, clear_alive, NULL);
}

static void print_object(FILE *f, const char *what, ft_object *o)
{
    fprintf(f, "gc: %s <%s %p>\n", what, o->ob_type->name ? o->ob_type->name : "?", (void *)o);
}

static FILE *debug_stream(ft_runtime *rt)
{
    FILE *f = atomic_load_explicit(&rt->gc.debug_stream, memory_order_relaxed);
    return f ? f : stderr;
}

static unsigned debug_flags(ft_runtime *rt)
{
    return atomic_load_explicit(&rt->gc.debug, memory_order_relaxed);
}

/* World stopped: clear the weak references of the unreachable objects (CPython's handle_weakrefs,
 * first pass). */
static void clear_weakrefs_stopped(collection *c)
{
    ft_trace_begin(c->rt, FT_TRACE_GC_WEAKREFS);
    for (size_t i = 0; i < c->n_unreachable; i++) {
        ft_object *o = c->unreachable[i];
        const ft_type *type = o->ob_type;
        if (type->flags & FT_TYPE_WEAKREF)
            ft_weakref_clear_stopped((ft_weakref *)o);
        if (!(type->flags & FT_TYPE_HAS_WEAKREFS))
            continue;
        _Atomic(ft_weakref *) *list = ft_weakref_list(o);
        ft_weakref *wr;
        while ((wr = atomic_load_explicit(list, memory_order_relaxed)) != NULL) {
            ft_weakref_clear_stopped(wr); /* unlinks it: the list's head moves on */
            if (!wr->wr_callback || (bits_of(&wr->ob_base) & FT_GC_UNREACHABLE))
                continue; /* no callback, or garbage itself: its callback must not run */
            if (ft_refcount(&wr->ob_base) == 0)
                continue; /* dead already (the settling left it at zero): no callback */
            if (!grow((void **)&c->callbacks, &c->callbacks_cap, sizeof *c->callbacks,
                      c->n_callbacks + 1))
                continue; /* out of memory: the callback is lost, the clearing is not */
            ft_incref(&wr->ob_base);
            c->callbacks[c->n_callbacks++] = wr;
        }
    }
    ft_trace_end(c->rt, FT_TRACE_GC_WEAKREFS);
}

/* Whether o is (still) in the unreachable set: not emptied, not untracked, not dead. */
static bool in_set(const ft_object *o)
{
    return o && (bits_of(o) & (FT_GC_UNREACHABLE | FT_GC_TRACKED)) ==
                    (FT_GC_UNREACHABLE | FT_GC_TRACKED);
}

/* o leaves the set by the collector's own hand (it survives): entry emptied, merged ob_tid 0. */
static void leave_set(collection *c, size_t i, ft_object *o)
{
    c->unreachable[i] = NULL;
    atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed);
    bits_store(o, (uint8_t)(bits_of(o) & ~FT_GC_UNREACHABLE));
}

/* World stopped: each object of the unreachable set holds 1 + its index in ob_tid while the world
 * runs (see ft_gc_leave_collection). */
static void number_entries(collection *c)
{
    for (size_t i = 0; i < c->n_unreachable; i++)
        atomic_store_explicit(&c->unreachable[i]->ob_tid, i + 1, memory_order_relaxed);
    c->w->entries = c->n_unreachable;
}

/* ---- stacks ---------------------------------------------------------------------------------- */

void ft_stack_push_region(ft_thread *t, ft_stack_region *region, ft_stackref *base)
{
    region->base = base;
    atomic_store_explicit(&region->top, base, memory_order_relaxed);
    region->previous = t->gc.regions;
    t->gc.regions = region;
}

void ft_stack_pop_region(ft_thread *t, ft_stack_region *region)
{
    if (FT_UNLIKELY(t->gc.regions != region))
        ft_fatal("ft_stack_pop_region: region %p is not thread %p's innermost (%p): regions are "
                 "popped in the reverse order of their pushes",
                 (void *)region, (void *)t, (void *)t->gc.regions);
    t->gc.regions = region->previous;
}

/* World stopped: whether some thread's region has no known top (gh-129236). */
static bool stack_top_unknown(ft_runtime *rt)
{
    bool unknown = false;
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t && !unknown; t = t->next)
        for (ft_stack_region *r = t->gc.regions; r && !unknown; r = r->previous)
            unknown = atomic_load_explicit(&r->top, memory_order_relaxed) == NULL;
    ft_mutex_unlock(&rt->head_mutex);
    return unknown;
}

/* The object a stackref names, world stopped. In FTRT_STACKREF_DEBUG builds a stackref's bits are
 * an id into rt->stackref_debug (object/stackref_debug.c): translated without the table's lock and
 * without recording a borrow site. In other builds, the address in the bits. */
static ft_object *stackref_object_stopped(ft_runtime *rt, ft_stackref r)
{
#ifdef FTRT_STACKREF_DEBUG
    return ft_stackref_debug_object_stopped(rt, r.bits);
#else
    (void)rt;
    return (ft_object *)(r.bits & ~FT_STACKREF_TAG_MASK);
#endif
}

/* ft_gc_visit_stackref's runtime: the caller's (a traverse runs in an attached thread, or on one of
 * the collector's helpers). */
static ft_runtime *stackref_runtime(void)
{
#ifdef FTRT_STACKREF_DEBUG
    ft_thread *t = ft_current_thread;
    if (t)
        return t->rt;
    if (ft_gc_helper_runtime)
        return ft_gc_helper_runtime;
    ft_fatal("ft_gc_visit_stackref: no thread state on the calling OS thread");
#else
    return NULL;
#endif
}

/* World stopped, candidates gathered: one reference for each tagged stackref to a candidate on
 * every thread's registered regions (those references are in no count). */
static void count_stack_references(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t; t = t->next)
        for (ft_stack_region *r = t->gc.regions; r; r = r->previous) {
            ft_stackref *top = atomic_load_explicit(&r->top, memory_order_relaxed);
            for (ft_stackref *p = r->base; top && p < top; p++) {
                ft_stackref v = *p;
                if (FT_UNLIKELY(!ft_stackref_is_tagged(v) || ft_stackref_is_null(v)))
                    continue;
                ft_object *o = stackref_object_stopped(rt, v);
                if (FT_LIKELY(bits_of(o) & FT_GC_UNREACHABLE))
                    refs_store(o, refs_of(o) + 1);
            }
        }
    ft_mutex_unlock(&rt->head_mutex);
}

int ft_gc_visit_stackref(ft_stackref r, ft_visit_fn visit, void *arg)
{
    if (ft_stackref_is_null(r) || ft_stackref_is_tagged_int(r))
        return 0;
    /* A tagged reference is in no count: the subtraction must not take it away. */
    if (ft_stackref_is_tagged(r) && (visit == visit_decref || visit == visit_decref_shared))
        return 0;
    ft_runtime *rt = stackref_runtime();
#ifdef FTRT_STACKREF_DEBUG
    if (!ft_world_is_stopped(rt)) /* a traverse outside a collection: the checked, locked lookup */
        return visit(ft_stackref_as_object_borrow(r), arg);
#endif
    return visit(stackref_object_stopped(rt, r), arg);
}

/* ---- the stopped phases, on one or more workers ------------------------------------------------- */

/* A collection of fewer objects than this per worker stays on fewer workers: below it, waking and
 * joining helpers costs more than they save (bench: gc.parallel_mark_small_2t). */
#define OBJECTS_PER_WORKER ((uint64_t)65536)
/* Chunks of pages per worker in the walk: enough for a fast worker to take a slow one's share. */
#define CHUNKS_PER_WORKER 16

static uint64_t objects_per_worker(ft_runtime *rt)
{
    int64_t n = rt->config.gc_objects_per_worker;
    return n > 0 ? (uint64_t)n : OBJECTS_PER_WORKER;
}

/* The walk hands over its pages, in its order (world stopped). */
static bool note_page(ft_page *page, void *arg)
{
    collection *c = arg;
    ft_gc_work *w = c->w;
    if (w->n_pages == w->pages_cap &&
        !grow((void **)&w->pages, &w->pages_cap, sizeof *w->pages, w->n_pages + 1))
        return false;
    w->pages[w->n_pages++] = page;
    c->estimate += page->used;
    return true;
}

static size_t claim_next(collection *c)
{
    return atomic_fetch_add_explicit(&c->claim, 1, memory_order_relaxed);
}

static ft_object **run_objects(collection *c, const ft_gc_run *run)
{
    return c->pool->workers[run->worker].objs + run->start;
}

/* Marks are idempotent, so marking needs no atomic read-modify-write, even with several workers
 * (as Boehm's parallel marker, which marks with whole bytes for the same reason): a worker reads an
 * object's gc bits, and if the mark is not there stores them back with the mark. During a marking
 * phase no one writes any other bit of those bytes, so every store of an object's bits writes the
 * same value, and nothing is lost. Two workers may both see an object unmarked and both follow it:
 * the second only repeats the first's work, a rare window of a few instructions. A locked OR per
 * object would make that impossible, and doubles the cost of marking an object (docs/gc.md,
 * "Parallel marking"). */

/* Mark r ALIVE (reached from the host's roots) and queue it, unless it is so already or is not a
 * tracked GC object outside the frozen ones. ALIVE objects are in generation 2 (OLD, and OLDEST in
 * the flags). */
static int visit_alive(ft_object *r, void *arg)
{
    ft_gc_worker *wk = arg;
    if (!r || !(r->ob_type->flags & FT_TYPE_GC))
        return 0;
    uint8_t bits = bits_of(r);
    if ((bits & (FT_GC_TRACKED | FT_GC_FROZEN | FT_GC_ALIVE)) != FT_GC_TRACKED)
        return 0;
    bits_store(r, (uint8_t)(bits | FT_GC_ALIVE | FT_GC_OLD));
    if (!in_oldest(r))
        atomic_fetch_or_explicit(&r->ob_flags, FT_OBJ_GC_OLDEST, memory_order_relaxed);
    /* If the stack cannot grow, what r reaches is simply not marked alive: it becomes a candidate,
     * which costs time, never correctness. */
    ft_gc_worker_push(wk, r);
    return 0;
}

/* Run visit over everything on this worker's stack, handing half of it to its deque whenever
 * another worker is idle and the deque has nothing left to steal; then over what nobody stole. */
static void drain(collection *c, ft_gc_worker *wk, ft_visit_fn visit)
{
    ft_object *o;
    for (;;) {
        while ((o = ft_gc_worker_pop(wk)) != NULL) {
            if (c->shared && wk->stack_n > 1 &&
                atomic_load_explicit(&c->pool->idle, memory_order_relaxed) > 0 &&
                ft_gc_deque_is_empty(&wk->deque))
                ft_gc_worker_share(wk);
            ft_gc_traverse(o, visit, wk);
        }
        if (!c->shared || (o = ft_gc_worker_take_back(wk)) == NULL)
            return;
        ft_gc_traverse(o, visit, wk);
    }
}

/* A phase's work-stealing loop: run visit over everything this worker holds, then over what it can
 * steal, until every worker is out of work. */
static void drain_and_steal(collection *c, int k, ft_visit_fn visit)
{
    ft_gc_worker *wk = &c->pool->workers[k];
    ft_object *o;
    for (;;) {
        drain(c, wk, visit);
        if (!c->shared || (o = ft_gc_pool_steal(c->pool, k, c->workers)) == NULL)
            return;
        ft_gc_traverse(o, visit, wk);
    }
}

/* Mark-alive: worker 0's stack holds what the roots reach; the workers share it out. */
static void mark_alive_job(void *arg, int k)
{
    drain_and_steal(arg, k, visit_alive);
}

/* Gather: each worker takes chunks of pages and lists their candidates in its own arrays; chunk i's
 * run says where. */
static void gather_job(void *arg, int k)
{
    collection *c = arg;
    ft_gc_work *w = c->w;
    ft_gc_worker *wk = &c->pool->workers[k];
    size_t chunk;
    while ((chunk = claim_next(c)) < c->n_runs) {
        ft_gc_run *run = &w->runs[chunk];
        run->worker = k;
        run->start = wk->n;
        size_t end = (chunk + 1) * c->chunk_pages;
        if (end > w->n_pages)
            end = w->n_pages;
        for (size_t p = chunk * c->chunk_pages; p < end && !wk->oom; p++)
            ft_heap_visit_page(w->pages[p], gather, wk);
        run->count = wk->n - run->start;
    }
}

/* Subtract the references between candidates, a run at a time. */
static void subtract_job(void *arg, int k)
{
    (void)k;
    collection *c = arg;
    ft_visit_fn visit = c->shared ? visit_decref_shared : visit_decref;
    size_t r;
    while ((r = claim_next(c)) < c->n_runs) {
        const ft_gc_run *run = &c->w->runs[r];
        ft_object **objs = run_objects(c, run);
        for (size_t i = 0; i < run->count; i++)
            ft_gc_traverse(objs[i], visit, c);
    }
}

/* Clear UNREACHABLE on a candidate; whether it was set (the caller then follows the object; see
 * "Marks are idempotent" above). */
static bool claim_reachable(ft_object *o)
{
    uint8_t bits = bits_of(o);
    if (!(bits & FT_GC_UNREACHABLE))
        return false;
    bits_store(o, (uint8_t)(bits & ~FT_GC_UNREACHABLE));
    return true;
}

static void queue_reachable(ft_gc_worker *wk, ft_object *o)
{
    if (!ft_gc_worker_push(wk, o))
        wk->overflow = true; /* marked but not followed: rescan_reachable follows it */
}

static int visit_reachable_worker(ft_object *r, void *arg)
{
    ft_gc_worker *wk = arg;
    if (r && claim_reachable(r))
        queue_reachable(wk, r);
    return 0;
}

/* Reachability: every candidate with references left, and what it reaches, loses UNREACHABLE. */
static void mark_job(void *arg, int k)
{
    collection *c = arg;
    ft_gc_worker *wk = &c->pool->workers[k];
    size_t r;
    while ((r = claim_next(c)) < c->n_runs) {
        const ft_gc_run *run = &c->w->runs[r];
        ft_object **objs = run_objects(c, run);
        for (size_t i = 0; i < run->count; i++) {
            ft_object *o = objs[i];
            if (refs_of(o) > 0 && claim_reachable(o)) {
                queue_reachable(wk, o);
                drain(c, wk, visit_reachable_worker);
            }
        }
    }
    drain_and_steal(c, k, visit_reachable_worker);
}

static int visit_rescan(ft_object *r, void *arg)
{
    uint8_t bits;
    if (r && ((bits = bits_of(r)) & FT_GC_UNREACHABLE)) {
        bits_store(r, (uint8_t)(bits & ~FT_GC_UNREACHABLE));
        *(bool *)arg = true;
    }
    return 0;
}

/* A worker marked objects it could not queue (a deque could not grow): follow every reachable
 * candidate again until nothing changes. Rare, and slow, but it needs no memory. */
static void rescan_reachable(collection *c)
{
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < c->n_runs; r++) {
            const ft_gc_run *run = &c->w->runs[r];
            ft_object **objs = run_objects(c, run);
            for (size_t i = 0; i < run->count; i++)
                if (!(bits_of(objs[i]) & FT_GC_UNREACHABLE))
                    ft_gc_traverse(objs[i], visit_rescan, &changed);
        }
    }
}

/* Run one phase on the collection's workers, its claims starting from the first chunk; helpers
 * trace it as `trace`. */
static void run_phase(collection *c, ft_gc_job job, ft_trace_name trace)
{
    atomic_store_explicit(&c->claim, 0, memory_order_relaxed);
    ft_gc_pool_run(c->pool, job, c, trace);
}

/* How many workers the stop uses: one more per objects_per_worker objects on the walk's pages, up
 * to the configured number, as the pool can provide. Then each is made ready. */
static void choose_workers(collection *c)
{
    ft_runtime *rt = c->rt;
    uint64_t want = 1 + c->estimate / objects_per_worker(rt);
    int limit = rt->config.gc_workers;
    int workers = want < (uint64_t)limit ? (int)want : limit;
    c->workers = workers > 1 ? ft_gc_pool_reserve(c->pool, workers) : 1;
    c->shared = c->workers > 1;
    for (int k = 0; k < c->workers; k++) {
        ft_gc_worker *wk = &c->pool->workers[k];
        wk->c = c;
        wk->n = 0;
        wk->alive = 0;
        wk->oom = wk->overflow = false;
    }
}

/* Stop #1, after the settling: the stopped phases on the chosen workers. False if out of memory
 * (nothing changed). */
static bool mark_stopped(collection *c)
{
    ft_runtime *rt = c->rt;
    ft_gc_work *w = c->w;
    ft_gc_pool *pool = c->pool;
    w->n_pages = 0;
    c->estimate = 0;
    if (ft_heap_gc_pages(rt, c->generation, note_page, c) != FT_OK)
        return false;
    choose_workers(c);
    c->chunk_pages = w->n_pages / ((size_t)c->workers * CHUNKS_PER_WORKER);
    if (c->chunk_pages == 0)
        c->chunk_pages = 1;
    c->n_runs = (w->n_pages + c->chunk_pages - 1) / c->chunk_pages;
    if (!grow((void **)&w->runs, &w->runs_cap, sizeof *w->runs, c->n_runs)) {
        c->n_runs = 0;
        ft_heap_gc_pages_unused(rt);
        return false;
    }
    ft_gc_pool_open(pool, c->workers);
    if (c->generation == 2 && rt->gc.root_count) {
        ft_trace_begin(rt, FT_TRACE_GC_MARK_ALIVE);
        ft_mutex_lock_internal(&rt->gc.mutex);
        for (size_t i = 0; i < rt->gc.root_count; i++)
            rt->gc.roots[i].fn(visit_alive, &pool->workers[0], rt->gc.roots[i].arg);
        ft_mutex_unlock(&rt->gc.mutex);
        run_phase(c, mark_alive_job, FT_TRACE_GC_MARK_ALIVE);
        ft_trace_end(rt, FT_TRACE_GC_MARK_ALIVE);
    }
    ft_trace_begin(rt, FT_TRACE_GC_SCRATCH);
    ft_trace_begin(rt, FT_TRACE_GC_GATHER);
    run_phase(c, gather_job, FT_TRACE_GC_GATHER);
    ft_trace_end(rt, FT_TRACE_GC_GATHER);
    c->n = 0;
    bool oom = false;
    for (int k = 0; k < c->workers; k++) {
        c->n += pool->workers[k].n;
        c->alive += pool->workers[k].alive;
        oom |= pool->workers[k].oom;
    }
    if (oom || !grow((void **)&w->stack, &w->stack_cap, sizeof *w->stack, c->n) ||
        !grow((void **)&w->set, &w->set_cap, sizeof *w->set, c->n)) {
        ft_gc_pool_close(pool);
        undo_gather(c);
        ft_heap_gc_pages_unused(rt);
        ft_trace_end(rt, FT_TRACE_GC_SCRATCH);
        return false;
    }
    if (c->generation == 2)
        count_stack_references(rt);
    ft_trace_begin(rt, FT_TRACE_GC_SUBTRACT);
    run_phase(c, subtract_job, FT_TRACE_GC_SUBTRACT);
    ft_trace_end(rt, FT_TRACE_GC_SUBTRACT);
    ft_trace_end(rt, FT_TRACE_GC_SCRATCH);
    ft_trace_begin(rt, FT_TRACE_GC_MARK);
    run_phase(c, mark_job, FT_TRACE_GC_MARK);
    ft_gc_pool_close(pool);
    bool overflow = false;
    for (int k = 0; k < c->workers; k++)
        overflow |= pool->workers[k].overflow;
    if (FT_UNLIKELY(overflow))
        rescan_reachable(c);
    ft_trace_end(rt, FT_TRACE_GC_MARK);
    return true;
}

/* Stop #1, after the settling: find the unreachable objects. False if out of memory. */
static bool find_unreachable(collection *c)
{
    ft_runtime *rt = c->rt;
    ft_gc_work *w = c->w;
    c->skip_deferred = c->generation == 2 && stack_top_unknown(rt);
    if (!mark_stopped(c))
        return false;
    /* Scan: survivors get their owner back and grow older. The unreachable ones are listed in
     * candidate order in the set, and merged: from now on any thread's decref may free them (their
     * only references are each other's and the collector's); they lose their unique ids for good. */
    size_t nu = 0;
    for (size_t r = 0; r < c->n_runs; r++) {
        const ft_gc_run *run = &w->runs[r];
        ft_gc_worker *wk = &c->pool->workers[run->worker];
        for (size_t i = run->start; i < run->start + run->count; i++) {
            ft_object *o = wk->objs[i];
            uint8_t bits = bits_of(o);
            bool deferred = (bits & FT_GC_UNREACHABLE) && ft_object_deferral_bias(o) != 0;
            /* Deferred garbage that only its bias kept alive: once its deferral goes nothing
             * counts it, so the collector holds it (c->held). Without room to note that, it
             * survives this collection (nothing counted references it, so nothing else changes). */
            bool hold = deferred && ft_refcount(o) == FT_DEFERRED_BIAS;
            if (FT_UNLIKELY(hold) &&
                !grow((void **)&c->held, &c->held_cap, sizeof *c->held, c->n_held + 1))
                bits_store(o, (uint8_t)(bits &= (uint8_t)~FT_GC_UNREACHABLE));
            if (!(bits & FT_GC_UNREACHABLE)) {
                atomic_store_explicit(&o->ob_tid, wk->tids[i], memory_order_relaxed);
                move_to_old(o, c->older);
                c->survivors++;
                continue;
            }
            w->set[nu++] = o;
            if (FT_UNLIKELY(deferred))
                ft_object_disable_deferred_stopped(rt, o);
            ft_object_merge_stopped(o);
            if (FT_UNLIKELY(hold)) {
                ft_object_hold_stopped(o);
                c->held[c->n_held++] = o;
            }
            /* Its index (see ft_gc_leave_collection), while the world runs; renumbered if legacy
             * finalizers split the list below. */
            atomic_store_explicit(&o->ob_tid, nu, memory_order_relaxed);
            const ft_type *type = o->ob_type;
            c->saw_legacy |= type->legacy_del != NULL;
            c->saw_weakrefs |= (type->flags & (FT_TYPE_HAS_WEAKREFS | FT_TYPE_WEAKREF)) != 0;
            c->saw_finalizers |= type->finalize && !(bits & FT_GC_FINALIZED);
        }
    }
    c->unreachable = w->set;
    c->n_unreachable = nu;
    if (c->saw_legacy) {
        /* Legacy finalizers and what they reach are uncollectable: split them off, keeping the
         * order, into an array of their own (rare; out of memory, they survive all the same,
         * unlisted). */
        c->sp = 0;
        for (size_t i = 0; i < nu; i++) {
            ft_object *o = c->unreachable[i];
            if (o->ob_type->legacy_del && (bits_of(o) & FT_GC_UNREACHABLE)) {
                visit_reachable(o, c);
                propagate(c);
            }
        }
        size_t n_legacy = 0;
        for (size_t i = 0; i < nu; i++)
            n_legacy += !(bits_of(c->unreachable[i]) & FT_GC_UNREACHABLE);
        c->legacy = n_legacy ? malloc(n_legacy * sizeof *c->legacy) : NULL;
        size_t n_unreachable = 0;
        for (size_t i = 0; i < nu; i++) {
            ft_object *o = c->unreachable[i];
            if (bits_of(o) & FT_GC_UNREACHABLE) {
                c->unreachable[n_unreachable++] = o;
            } else {
                if (c->legacy)
                    c->legacy[c->n_legacy++] = o;
                move_to_old(o, c->older);
            }
        }
        c->n_unreachable = n_unreachable;
        number_entries(c);
    }
    w->entries = c->n_unreachable;
    if (debug_flags(rt) & FT_GC_DEBUG_COLLECTABLE)
        for (size_t i = 0; i < c->n_unreachable; i++)
            print_object(debug_stream(rt), "collectable", c->unreachable[i]);
    if (c->saw_weakrefs)
        clear_weakrefs_stopped(c);
    /* Uncollectable objects are listed apart, not by entries: every GC object's memory then waits
     * for the end, so that the list never holds freed memory. */
    atomic_store_explicit(&rt->gc.defer_all_frees, c->n_legacy != 0, memory_order_seq_cst);
    return true;
}

/* The callbacks of the weak references kept in stop #1 (world running). */
static void call_weakref_callbacks(collection *c)
{
    c->kept = c->callbacks;
    c->n_kept = 0;
    for (size_t i = 0; i < c->n_callbacks; i++) {
        ft_weakref *wr = c->callbacks[i];
        wr->wr_callback(wr, wr->wr_arg);
        /* Freed right after its callback (only the collector's reference is left): collected. A
         * survivor moves to the older generation in stop #2, so it keeps its reference until then. */
        if (ft_refcount(&wr->ob_base) == 1) {
            ft_decref(&wr->ob_base);
            c->collected++;
        } else {
            c->kept[c->n_kept++] = wr;
        }
    }
}

/* PEP 442: the finalizers of the objects still unreachable, once each (world running). */
static void finalize_garbage(collection *c)
{
    for (size_t i = 0; i < c->n_unreachable; i++) {
        ft_object *o = c->unreachable[i];
        if (!in_set(o))
            continue;
        uint8_t bits = bits_of(o);
        if (!o->ob_type->finalize || (bits & FT_GC_FINALIZED))
            continue;
        bits_store(o, (uint8_t)(bits | FT_GC_FINALIZED));
        ft_incref(o);
        o->ob_type->finalize(o);
        ft_decref(o);
    }
}

/* World stopped: drop from the unreachable list the objects that left it (emptied entries; dead
 * ones, whose dealloc cleared UNREACHABLE; untracked ones, whose bit the collector clears now). */
static void compact_unreachable(collection *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_unreachable; i++) {
        ft_object *o = c->unreachable[i];
        if (in_set(o))
            c->unreachable[n++] = o;
        else if (o && (bits_of(o) & FT_GC_UNREACHABLE))
            leave_set(c, i, o);
    }
    c->n_unreachable = n;
}

/* Stop #2: what the finalizers resurrected (and what that reaches) moves to the older generation;
 * the rest stays in unreachable. The kept weak references move there too (CPython moves them to the
 * older generation after their callbacks). */
static void handle_resurrected_stopped(collection *c)
{
    ft_trace_begin(c->rt, FT_TRACE_GC_RESURRECTION);
    compact_unreachable(c);
    size_t n = c->n_unreachable;
    /* Merged in stop #1, and still merged (only a dealloc unmerges an object, and dealloc takes it
     * out first): ob_tid, which holds its index, is free to hold the count again. */
    for (size_t i = 0; i < n; i++) {
        ft_object *o = c->unreachable[i];
        refs_store(o, ft_refcount(o));
    }
    for (size_t i = 0; i < c->n_held; i++) /* the collector's own reference is no one's */
        if (in_set(c->held[i]))
            refs_store(c->held[i], refs_of(c->held[i]) - 1);
    for (size_t i = 0; i < n; i++)
        ft_gc_traverse(c->unreachable[i], visit_decref, c);
    mark_reachable(c, c->unreachable, n);
    size_t still = 0;
    for (size_t i = 0; i < n; i++) {
        ft_object *o = c->unreachable[i];
        atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed);
        if (bits_of(o) & FT_GC_UNREACHABLE)
            c->unreachable[still++] = o;
        else
            move_to_old(o, c->older);
    }
    c->n_unreachable = still;
    number_entries(c);
    for (size_t i = 0; i < c->n_kept; i++) {
        ft_object *wr = &c->kept[i]->ob_base;
        if (bits_of(wr) & FT_GC_TRACKED) {
            move_to_old(wr, c->older);
            if (c->older == 1)
                ft_heap_note_older(c->rt, wr);
        }
    }
    ft_trace_end(c->rt, FT_TRACE_GC_RESURRECTION);
}

static void garbage_append(ft_runtime *rt, ft_object *o)
{
    ft_mutex_lock_internal(&rt->gc.mutex);
    if (grow((void **)&rt->gc.garbage, &rt->gc.garbage_cap, sizeof *rt->gc.garbage,
             rt->gc.garbage_count + 1)) {
        ft_incref(o);
        rt->gc.garbage[rt->gc.garbage_count++] = o;
    }
    ft_mutex_unlock(&rt->gc.mutex);
}

/* Clear (or save) what is still unreachable (world running). An object that survives its clear
 * (another object's clear will free it, or SAVEALL keeps it) leaves the set for the older
 * generation; one that dies leaves it in its dealloc. */
static void delete_garbage(collection *c)
{
    ft_trace_begin(c->rt, FT_TRACE_GC_CLEAR);
    bool saveall = debug_flags(c->rt) & FT_GC_DEBUG_SAVEALL;
    for (size_t i = 0; i < c->n_unreachable; i++) {
        ft_object *o = c->unreachable[i];
        if (!in_set(o)) {
            if (o && (bits_of(o) & FT_GC_UNREACHABLE)) /* untracked meanwhile */
                leave_set(c, i, o);
            continue;
        }
        if (saveall) {
            garbage_append(c->rt, o);
            leave_set(c, i, o);
            move_to_old(o, c->older);
            continue;
        }
        ft_incref(o);
        ft_gc_clear(o);
        if (ft_refcount(o) > 1 && (bits_of(o) & FT_GC_UNREACHABLE)) {
            leave_set(c, i, o);
            move_to_old(o, c->older);
        }
        ft_decref(o);
    }
    c->w->entries = 0;
    ft_trace_end(c->rt, FT_TRACE_GC_CLEAR);
}

/* The uncollectable objects still listed (counted after the clears, as CPython does: those the
 * clears freed, or that a finalizer untracked, left the list) go to garbage. */
static void handle_legacy(collection *c)
{
    size_t kept = 0;
    for (size_t i = 0; i < c->n_legacy; i++)
        if (bits_of(c->legacy[i]) & FT_GC_TRACKED)
            c->legacy[kept++] = c->legacy[i];
    c->n_legacy = kept;
    c->uncollectable = (intptr_t)kept;
    unsigned debug = debug_flags(c->rt);
    for (size_t i = 0; i < c->n_legacy; i++) {
        ft_object *o = c->legacy[i];
        if (debug & FT_GC_DEBUG_UNCOLLECTABLE)
            print_object(debug_stream(c->rt), "uncollectable", o);
        if ((debug & FT_GC_DEBUG_SAVEALL) || o->ob_type->legacy_del)
            garbage_append(c->rt, o);
    }
}

static void stop_world_timed(collection *c, int64_t *start)
{
    ft_stw_stop(c->rt, "gc");
    *start = ft_monotonic_ns();
}

static void start_world_timed(collection *c, int64_t start)
{
    c->pause_ns += ft_monotonic_ns() - start;
    ft_start_the_world(c->rt);
    ft_gc_pool_flush_traces(c->pool);
}

/* Stop #1's settling: exact counts everywhere, the generation counters as CPython moves them. */
static void settle_stopped(collection *c)
{
    ft_runtime *rt = c->rt;
    ft_trace_begin(rt, FT_TRACE_GC_SETTLE);
    ft_brc_merge_stopped(rt, &c->dead);
    ft_uniqueid_merge_stopped(rt, &c->dead);
    ft_delayed_process_stopped(rt, &c->dead);
    if (c->generation + 1 < FT_GC_GENERATIONS)
        atomic_fetch_add_explicit(&rt->gc.counts[c->generation + 1], 1, memory_order_relaxed);
    for (int g = 1; g <= c->generation; g++)
        atomic_store_explicit(&rt->gc.counts[g], 0, memory_order_relaxed);
    counts_refold_stopped(rt, true);
    ft_trace_end(rt, FT_TRACE_GC_SETTLE);
}

/* Give back working memory that the last collection used little of (a big collection leaves big
 * arrays behind; later ones reuse them, unless they need far less). */
static void work_trim(collection *c)
{
    enum { KEEP = 65536 };
    ft_gc_work *w = c->w;
    if (w->set_cap > KEEP && c->n < w->set_cap / 8) {
        free(w->set);
        free(w->stack);
        w->set = w->stack = NULL;
        w->set_cap = w->stack_cap = 0;
    }
    for (int k = 0; k < FT_GC_MAX_WORKERS; k++) {
        ft_gc_worker *wk = &c->pool->workers[k];
        size_t used = k < c->workers ? wk->n : 0;
        if (wk->cap > KEEP && used < wk->cap / 8) {
            free(wk->objs);
            free(wk->tids);
            wk->objs = NULL;
            wk->tids = NULL;
            wk->cap = 0;
        }
    }
}

/* Collect generations 0..generation; the caller holds `collecting`. Returns CPython's n + m (or -1
 * when out of memory), with m and n in *collected and *uncollectable. */
static intptr_t collect(ft_thread *t, int generation, intptr_t *collected, intptr_t *uncollectable)
{
    ft_runtime *rt = t->rt;
    collection c = {.rt = rt, .w = &rt->gc.work, .pool = &rt->gc.pool, .generation = generation};
    c.older = generation + 1 < FT_GC_GENERATIONS ? generation + 1 : generation;
    unsigned debug = debug_flags(rt);
    int64_t began = ft_monotonic_ns(), stopped_at;
    if (debug & FT_GC_DEBUG_STATS)
        fprintf(debug_stream(rt), "gc: collecting generation %d...\n", generation);

    ft_gc_pool_open_traces(c.pool);
    ft_trace_begin(rt, FT_TRACE_GC_COLLECT);
    stop_world_timed(&c, &stopped_at);
    settle_stopped(&c);
    bool found = find_unreachable(&c);
    size_t candidates = c.n;
    if (found) {
        if (generation == 1)
            rt->gc.long_lived_pending += c.survivors;
        else if (generation == 2) {
            rt->gc.long_lived_pending = 0;
            rt->gc.long_lived_total = c.survivors + c.alive;
        }
    }
    start_world_timed(&c, stopped_at);

    bool dead = c.dead.count != 0;
    ft_dead_list_dealloc(&c.dead);
    if (found) {
        ft_trace_begin(rt, FT_TRACE_GC_FINALIZERS);
        call_weakref_callbacks(&c);
        if (c.saw_finalizers)
            finalize_garbage(&c);
        ft_trace_end(rt, FT_TRACE_GC_FINALIZERS);
        /* Only host code can resurrect: with no callback, no finalizer and no dealloc run since the
         * stop, what was unreachable still is, and the second stop is skipped. */
        if (c.n_callbacks || c.saw_finalizers || dead) {
            stop_world_timed(&c, &stopped_at);
            handle_resurrected_stopped(&c);
            start_world_timed(&c, stopped_at);
        }
        for (size_t i = 0; i < c.n_kept; i++)
            ft_decref(&c.kept[i]->ob_base);
        c.collected += (intptr_t)c.n_unreachable;
        delete_garbage(&c);
        for (size_t i = 0; i < c.n_held; i++)
            ft_decref(c.held[i]);
        handle_legacy(&c);
        atomic_store_explicit(&rt->gc.defer_all_frees, false, memory_order_seq_cst);
    }
    if (debug & FT_GC_DEBUG_STATS) {
        double secs = (double)(ft_monotonic_ns() - began) / 1e9;
        if (c.collected == 0 && c.uncollectable == 0)
            fprintf(debug_stream(rt), "gc: done, %zu examined, %.4fs elapsed\n", candidates, secs);
        else
            fprintf(debug_stream(rt),
                    "gc: done, %ld unreachable, %ld uncollectable, %zu examined, %.4fs elapsed\n",
                    (long)(c.collected + c.uncollectable), (long)c.uncollectable, candidates, secs);
    }

    __typeof__(rt->gc.stats[0]) *s = &rt->gc.stats[generation];
    atomic_fetch_add_explicit(&s->collections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->collected, (uint64_t)c.collected, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->uncollectable, (uint64_t)c.uncollectable, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->candidates, candidates, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->pause_ns, (uint64_t)c.pause_ns, memory_order_relaxed);
    if ((uint64_t)c.pause_ns > atomic_load_explicit(&s->max_pause_ns, memory_order_relaxed))
        atomic_store_explicit(&s->max_pause_ns, (uint64_t)c.pause_ns, memory_order_relaxed);

    ft_trace_end_with(rt, FT_TRACE_GC_COLLECT, generation, (int64_t)candidates, c.collected,
                      c.uncollectable);
    work_trim(&c);
    free(c.legacy);
    free(c.callbacks);
    free(c.held);
    *collected = c.collected;
    *uncollectable = c.uncollectable;
    if (!found) {
        ft_set_last_error(FT_ENOMEM);
        return -1;
    }
    return c.collected + c.uncollectable;
}

static void invoke_callbacks(ft_runtime *rt, ft_gc_phase phase, int generation, intptr_t collected,
                             intptr_t uncollectable)
{
    ft_gc_info info = {generation, collected, uncollectable};
    /* By index, the lock dropped around each call: a callback may add or remove callbacks. */
    for (size_t i = 0;; i++) {
        ft_mutex_lock_internal(&rt->gc.mutex);
        if (i >= rt->gc.callback_count) {
            ft_mutex_unlock(&rt->gc.mutex);
            return;
        }
        ft_gc_callback_entry e = rt->gc.callbacks[i];
        ft_mutex_unlock(&rt->gc.mutex);
        e.fn(rt, phase, &info, e.arg);
    }
}

/* Collect with the gc callbacks around it; the caller holds `collecting`. */
static intptr_t collect_with_callbacks(ft_thread *t, int generation)
{
    ft_runtime *rt = t->rt;
    invoke_callbacks(rt, FT_GC_PHASE_START, generation, 0, 0);
    intptr_t collected = 0, uncollectable = 0;
    intptr_t result = collect(t, generation, &collected, &uncollectable);
    invoke_callbacks(rt, FT_GC_PHASE_STOP, generation, collected, uncollectable);
    return result;
}

static bool begin_collecting(ft_thread *t)
{
    int idle = 0;
    if (!atomic_compare_exchange_strong_explicit(&t->rt->gc.collecting, &idle, 1,
                                                 memory_order_seq_cst, memory_order_relaxed))
        return false;
    atomic_store_explicit(&t->rt->gc.collector, t, memory_order_relaxed);
    return true;
}

/* Clear `collecting`, then free the zombies: the collector's own list, and the stack (gc/gc.h:
 * whoever pushes after this frees its own). */
static void end_collecting(ft_thread *t)
{
    ft_runtime *rt = t->rt;
    atomic_store_explicit(&rt->gc.collector, NULL, memory_order_relaxed);
    atomic_store_explicit(&rt->gc.collecting, 0, memory_order_seq_cst);
    ft_object *own = t->gc.zombies;
    t->gc.zombies = NULL;
    zombies_free_list(t, (uintptr_t)own);
    zombies_free(rt);
}

static ft_thread *attached_to(ft_runtime *rt)
{
    ft_thread *t = ft_current_thread;
    return t && t->rt == rt && !ft_stw_held_by_caller(rt) ? t : NULL;
}

intptr_t ft_gc_collect(ft_runtime *rt, int generation)
{
    if (generation < 0 || generation >= FT_GC_GENERATIONS) {
        ft_set_last_error(FT_EINVAL);
        return -1;
    }
    ft_thread *t = attached_to(rt);
    if (!t) {
        ft_set_last_error(FT_EPERM);
        return -1;
    }
    if (!begin_collecting(t))
        return 0;
    intptr_t n = collect_with_callbacks(t, generation);
    end_collecting(t);
    return n;
}

void ft_gc_collect_scheduled(ft_thread *t)
{
    atomic_fetch_and_explicit(&t->head.pending, ~FT_PENDING_GC, memory_order_relaxed);
    ft_runtime *rt = t->rt;
    if (!atomic_load_explicit(&rt->gc.enabled, memory_order_relaxed) || threshold_of(rt, 0) == 0 ||
        ft_stw_held_by_caller(rt) || !begin_collecting(t))
        return;
    /* The oldest generation whose count exceeds its threshold (CPython's gc_collect_generations),
     * a full collection only once enough survivors of young ones have built up. */
    long count[FT_GC_GENERATIONS];
    ft_gc_get_count(rt, count);
    for (int g = FT_GC_GENERATIONS - 1; g >= 0; g--) {
        if (count[g] <= threshold_of(rt, g))
            continue;
        if (g == FT_GC_GENERATIONS - 1 && rt->gc.long_lived_pending < rt->gc.long_lived_total / 4)
            continue;
        collect_with_callbacks(t, g);
        break;
    }
    end_collecting(t);
}
