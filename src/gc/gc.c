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
 *      candidate gets UNREACHABLE, and its ob_tid is borrowed to hold its index in the candidate
 *      arrays (the owner's id is kept there, to be put back): every candidate is marked before any
 *      count is subtracted, and only marked objects are subtracted from, so an older object is never
 *      written (its references into the candidates count as external, as in CPython's default
 *      build);
 *    subtract the references between candidates (traverse), then clear UNREACHABLE on every
 *      candidate with references left and on everything it reaches among the candidates (an
 *      explicit stack: no recursion);
 *    survivors get their ob_tid back and move to generation g + 1; the unreachable ones are merged
 *      (ob_tid 0: any thread's decref may free them from now on, as their only references are each
 *      other's and the collector's), lose their unique ids, and those with a legacy finalizer and
 *      everything they reach move to the uncollectable list (they survive, in generation g + 1);
 *    clear every weak reference to an unreachable object, and every unreachable weak reference;
 *      keep (with a reference) the live weak references with callbacks, newest first per referent;
 *  start the world
 *    deallocate what the settling left at zero; call the kept callbacks, each weak reference freed
 *      right after its callback counting as collected; run the PEP 442 finalizers of the
 *      unreachable objects not finalized yet (FINALIZED);
 *  stop the world (2)
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
 * Objects that die while the world runs during a collection (a callback or a finalizer dropped the
 * last reference) are deallocated at once, as CPython does, but their memory waits on the zombies
 * stack until the collection ends (gc/gc.h): the candidate arrays keep pointing at them, and read
 * their gc bits (untracked: out of the collection). */
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
    if (bits & (FT_GC_TRACKED | FT_GC_UNREACHABLE | FT_GC_FROZEN))
        bits_store(o, (uint8_t)(bits & ~(FT_GC_TRACKED | FT_GC_UNREACHABLE | FT_GC_FROZEN)));
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

/* Where t folds next: FT_GC_FLUSH away, or at the allocation that makes the total cross generation
 * 0's threshold when automatic collection is on (at once when it is already past it). */
static int32_t limit_for(ft_runtime *rt, int64_t total)
{
    long threshold = threshold_of(rt, 0);
    if (!atomic_load_explicit(&rt->gc.enabled, memory_order_relaxed) || threshold <= 0)
        return FT_GC_FLUSH;
    int64_t room = (int64_t)threshold + 1 - total;
    return room < 1 ? 1 : room > FT_GC_FLUSH ? FT_GC_FLUSH : (int32_t)room;
}

static bool collection_due(ft_runtime *rt, int64_t total)
{
    long threshold = threshold_of(rt, 0);
    return atomic_load_explicit(&rt->gc.enabled, memory_order_relaxed) && threshold > 0 &&
           total > threshold && !atomic_load_explicit(&rt->gc.collecting, memory_order_relaxed);
}

void ft_gc_count_fold(ft_thread *t)
{
    ft_runtime *rt = t->rt;
    int32_t c = atomic_load_explicit(&t->gc.count, memory_order_relaxed);
    atomic_store_explicit(&t->gc.count, 0, memory_order_relaxed);
    int64_t total = atomic_fetch_add_explicit(&rt->gc.count0, c, memory_order_relaxed) + c;
    t->gc.seen_total = total;
    t->gc.limit = limit_for(rt, total);
    if (c > 0 && collection_due(rt, total)) {
        /* Not at once: the allocating call is in the middle of building its object. */
        atomic_fetch_or_explicit(&t->head.pending, FT_PENDING_GC, memory_order_relaxed);
        t->gc.limit = FT_GC_FLUSH;
    }
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
    bool stopped = ft_stw_stop_unless_held(rt);
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

/* Free every zombie on the stack (taken whole: each is freed once, by whoever takes it). */
static void zombies_free(ft_runtime *rt)
{
    uintptr_t next = atomic_exchange_explicit(&rt->gc.zombies, 0, memory_order_seq_cst);
    ft_thread *t = ft_current_thread;
    while (next) {
        ft_object *o = (ft_object *)next;
        next = atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
        ft_object_free_memory(t, o);
    }
}

void ft_gc_zombie_push(ft_runtime *rt, ft_object *o)
{
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

/* The collection's working state: the collector's own, on its stack and in malloc'd arrays. */
typedef struct collection {
    ft_runtime *rt;
    ft_thread *t;
    int generation, older; /* collected, and where survivors go */
    /* The candidates, by index (which ob_tid holds while the world is stopped). */
    ft_object **objs;
    uintptr_t *tids;
    intptr_t *refs;
    size_t n, cap;
    bool oom;
    uint64_t alive; /* objects the roots' mark kept out of the candidates */
    ft_object **stack;
    size_t sp, stack_cap;
    /* After the scan: unreachable objects (in candidate order), the uncollectable ones. */
    ft_object **unreachable, **legacy;
    size_t n_unreachable, n_legacy;
    /* Live weak references whose callbacks run (with a reference), and those still alive after. */
    ft_weakref **callbacks, **kept;
    size_t n_callbacks, n_kept, callbacks_cap;
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

static bool add_candidate(collection *c, ft_object *o, intptr_t refs)
{
    if (c->n == c->cap) {
        size_t cap = c->cap;
        if (!grow((void **)&c->objs, &cap, sizeof *c->objs, c->n + 1))
            return false;
        size_t cap2 = c->cap;
        if (!grow((void **)&c->tids, &cap2, sizeof *c->tids, c->n + 1))
            return false;
        size_t cap3 = c->cap;
        if (!grow((void **)&c->refs, &cap3, sizeof *c->refs, c->n + 1))
            return false;
        c->cap = cap;
    }
    c->objs[c->n] = o;
    c->tids[c->n] = atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
    c->refs[c->n] = refs;
    atomic_store_explicit(&o->ob_tid, c->n, memory_order_relaxed);
    bits_store(o, (uint8_t)(bits_of(o) | FT_GC_UNREACHABLE));
    c->n++;
    return true;
}

static size_t index_of(const ft_object *o)
{
    return atomic_load_explicit(&((ft_object *)o)->ob_tid, memory_order_relaxed);
}

/* The walk's visitor: take o as a candidate if it belongs to the collected generations. */
static bool gather(void *block, size_t size, void *arg)
{
    (void)size;
    collection *c = arg;
    ft_object *o = block;
    uint8_t bits = bits_of(o);
    if (!(bits & FT_GC_TRACKED) || (bits & FT_GC_FROZEN))
        return true;
    if (bits & FT_GC_ALIVE) { /* the roots reach it: it survives, and is in generation 2 already */
        bits_store(o, (uint8_t)(bits & ~FT_GC_ALIVE));
        c->alive++;
        return true;
    }
    if (generation_of(o, bits) > c->generation || ft_object_is_immortal(o))
        return true;
    uint16_t flags = atomic_load_explicit(&o->ob_flags, memory_order_relaxed);
    /* A deferred object's references from evaluation stacks are in no count; an older holder of
     * one is not traversed by a young collection, so such objects wait for a full one. */
    if ((flags & FT_OBJ_DEFERRED) && c->generation < 2)
        return true;
    intptr_t refs = ft_refcount(o);
    if (refs == 0) /* dead: deallocated after the restart by whoever settled its count */
        return true;
    refs -= ft_uniqueid_bias(o);
    if (!add_candidate(c, o, refs)) {
        c->oom = true;
        return false;
    }
    return true;
}

static int visit_decref(ft_object *r, void *arg)
{
    collection *c = arg;
    if (r && (bits_of(r) & FT_GC_UNREACHABLE))
        c->refs[index_of(r)]--;
    return 0;
}

static bool push(collection *c, ft_object *o)
{
    if (c->sp == c->stack_cap &&
        !grow((void **)&c->stack, &c->stack_cap, sizeof *c->stack, c->sp + 1)) {
        c->oom = true;
        return false;
    }
    c->stack[c->sp++] = o;
    return true;
}

/* Clear UNREACHABLE on a candidate and queue it for traversal. */
static int visit_reachable(ft_object *r, void *arg)
{
    collection *c = arg;
    uint8_t bits;
    if (r && ((bits = bits_of(r)) & FT_GC_UNREACHABLE)) {
        bits_store(r, (uint8_t)(bits & ~FT_GC_UNREACHABLE));
        push(c, r);
    }
    return 0;
}

/* From each object on the stack, clear UNREACHABLE on what it reaches. */
static void propagate(collection *c)
{
    while (c->sp) {
        ft_object *o = c->stack[--c->sp];
        ft_gc_traverse(o, visit_reachable, c);
    }
}

/* Mark what the host's roots reach as ALIVE and move it to generation 2 (full collections). */
static int visit_alive(ft_object *r, void *arg)
{
    collection *c = arg;
    if (!r || !(r->ob_type->flags & FT_TYPE_GC))
        return 0;
    uint8_t bits = bits_of(r);
    if ((bits & (FT_GC_TRACKED | FT_GC_FROZEN | FT_GC_ALIVE)) != FT_GC_TRACKED)
        return 0;
    bits_store(r, (uint8_t)(bits | FT_GC_ALIVE));
    move_to_old(r, 2);
    push(c, r);
    return 0;
}

static void mark_alive(collection *c)
{
    ft_runtime *rt = c->rt;
    ft_mutex_lock_internal(&rt->gc.mutex);
    for (size_t i = 0; i < rt->gc.root_count; i++)
        rt->gc.roots[i].fn(visit_alive, c, rt->gc.roots[i].arg);
    ft_mutex_unlock(&rt->gc.mutex);
    while (c->sp) {
        ft_object *o = c->stack[--c->sp];
        ft_gc_traverse(o, visit_alive, c);
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

/* Out of memory while gathering: put every candidate back as it was (and, after a mark, clear
 * every ALIVE bit); the collection finds nothing. */
static void undo_gather(collection *c)
{
    for (size_t i = 0; i < c->n; i++) {
        ft_object *o = c->objs[i];
        atomic_store_explicit(&o->ob_tid, c->tids[i], memory_order_relaxed);
        bits_store(o, (uint8_t)(bits_of(o) & ~FT_GC_UNREACHABLE));
    }
    c->n = 0;
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

/* Move o and every unreachable object it reaches to the uncollectable list. */
static void move_legacy(collection *c, ft_object *o)
{
    visit_reachable(o, c);
    propagate(c);
}

/* World stopped: clear the weak references of the unreachable objects (CPython's handle_weakrefs,
 * first pass). */
static void clear_weakrefs_stopped(collection *c)
{
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
            if (!grow((void **)&c->callbacks, &c->callbacks_cap, sizeof *c->callbacks,
                      c->n_callbacks + 1))
                continue; /* out of memory: the callback is lost, the clearing is not */
            ft_incref(&wr->ob_base);
            c->callbacks[c->n_callbacks++] = wr;
        }
    }
}

/* Stop #1, after the settling: find the unreachable objects. False if out of memory. */
static bool find_unreachable(collection *c)
{
    ft_runtime *rt = c->rt;
    if (c->generation == 2 && rt->gc.root_count) {
        mark_alive(c);
        c->sp = 0;
    }
    c->oom = false;
    ft_heap_visit_gc(rt, c->generation, gather, c);
    if (c->oom || !grow((void **)&c->stack, &c->stack_cap, sizeof *c->stack, c->n)) {
        undo_gather(c);
        return false;
    }
    for (size_t i = 0; i < c->n; i++)
        ft_gc_traverse(c->objs[i], visit_decref, c);
    for (size_t i = 0; i < c->n; i++) {
        ft_object *o = c->objs[i];
        uint8_t bits = bits_of(o);
        if (c->refs[i] > 0 && (bits & FT_GC_UNREACHABLE)) {
            bits_store(o, (uint8_t)(bits & ~FT_GC_UNREACHABLE));
            c->stack[c->sp++] = o;
            propagate(c);
        }
    }
    /* Scan: survivors get their owner back and grow older; the unreachable ones are compacted to
     * the front of objs (in candidate order). */
    size_t nu = 0;
    for (size_t i = 0; i < c->n; i++) {
        ft_object *o = c->objs[i];
        if (bits_of(o) & FT_GC_UNREACHABLE) {
            c->objs[nu++] = o;
            continue;
        }
        atomic_store_explicit(&o->ob_tid, c->tids[i], memory_order_relaxed);
        move_to_old(o, c->older);
        c->survivors++;
    }
    /* Merged, they can be counted and freed by any thread; they lose their unique ids for good. */
    for (size_t i = 0; i < nu; i++) {
        ft_object *o = c->objs[i];
        if (ft_uniqueid_bias(o) != 0)
            ft_uniqueid_release_stopped(rt, o);
        ft_object_merge(o, 0);
    }
    /* Legacy finalizers and what they reach are uncollectable (the stack is free again). */
    for (size_t i = 0; i < nu; i++) {
        ft_object *o = c->objs[i];
        if (o->ob_type->legacy_del && (bits_of(o) & FT_GC_UNREACHABLE))
            move_legacy(c, o);
    }
    /* Split, keeping the order: unreachable ones at the front of objs, the uncollectable ones in an
     * array of their own (rare; out of memory, they survive all the same, unlisted). */
    size_t n_legacy = 0;
    for (size_t i = 0; i < nu; i++)
        n_legacy += !(bits_of(c->objs[i]) & FT_GC_UNREACHABLE);
    c->legacy = n_legacy ? malloc(n_legacy * sizeof *c->legacy) : NULL;
    c->unreachable = c->objs;
    size_t n_unreachable = 0;
    c->n_legacy = 0;
    for (size_t i = 0; i < nu; i++) {
        ft_object *o = c->objs[i];
        if (bits_of(o) & FT_GC_UNREACHABLE) {
            c->unreachable[n_unreachable++] = o;
        } else {
            if (c->legacy)
                c->legacy[c->n_legacy++] = o;
            move_to_old(o, c->older);
        }
    }
    c->n_unreachable = n_unreachable;
    unsigned debug = debug_flags(rt);
    if (debug & FT_GC_DEBUG_COLLECTABLE)
        for (size_t i = 0; i < c->n_unreachable; i++)
            print_object(debug_stream(rt), "collectable", c->unreachable[i]);
    clear_weakrefs_stopped(c);
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
        uint8_t bits = bits_of(o);
        if (!(bits & FT_GC_UNREACHABLE) || !o->ob_type->finalize || (bits & FT_GC_FINALIZED))
            continue;
        bits_store(o, (uint8_t)(bits | FT_GC_FINALIZED));
        ft_incref(o);
        o->ob_type->finalize(o);
        ft_decref(o);
    }
}

/* Stop #2: what the finalizers resurrected (and what that reaches) moves to the older generation;
 * the rest stays in unreachable. The kept weak references move there too (CPython moves them to the
 * older generation after their callbacks). */
static void handle_resurrected_stopped(collection *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_unreachable; i++)
        if (bits_of(c->unreachable[i]) & FT_GC_UNREACHABLE)
            c->unreachable[n++] = c->unreachable[i];
    c->n_unreachable = n;
    /* Merged in stop #1, and still merged (only a dealloc unmerges an object, and dealloc takes it
     * out first): ob_tid is 0, free to hold the index again. */
    for (size_t i = 0; i < n; i++) {
        ft_object *o = c->unreachable[i];
        FT_ASSERT(atomic_load_explicit(&o->ob_tid, memory_order_relaxed) == 0 ||
                  ft_object_is_immortal(o));
        c->refs[i] = ft_refcount(o);
        atomic_store_explicit(&o->ob_tid, i, memory_order_relaxed);
    }
    for (size_t i = 0; i < n; i++)
        ft_gc_traverse(c->unreachable[i], visit_decref, c);
    c->sp = 0;
    for (size_t i = 0; i < n; i++) {
        ft_object *o = c->unreachable[i];
        uint8_t bits = bits_of(o);
        if (c->refs[i] > 0 && (bits & FT_GC_UNREACHABLE)) {
            bits_store(o, (uint8_t)(bits & ~FT_GC_UNREACHABLE));
            c->stack[c->sp++] = o;
            propagate(c);
        }
    }
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
    for (size_t i = 0; i < c->n_kept; i++) {
        ft_object *wr = &c->kept[i]->ob_base;
        if (bits_of(wr) & FT_GC_TRACKED) {
            move_to_old(wr, c->older);
            if (c->older == 1)
                ft_heap_note_older(c->rt, wr);
        }
    }
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

/* Clear (or save) what is still unreachable (world running). An object still unreachable after its
 * clear is alive after all (another clear will free it, or SAVEALL keeps it): it leaves the
 * collection for the older generation. */
static void delete_garbage(collection *c)
{
    bool saveall = debug_flags(c->rt) & FT_GC_DEBUG_SAVEALL;
    for (size_t i = 0; i < c->n_unreachable; i++) {
        ft_object *o = c->unreachable[i];
        if (!(bits_of(o) & FT_GC_UNREACHABLE))
            continue;
        if (saveall) {
            garbage_append(c->rt, o);
        } else {
            ft_incref(o);
            ft_gc_clear(o);
            ft_decref(o);
        }
        uint8_t bits = bits_of(o);
        if (bits & FT_GC_UNREACHABLE) {
            bits_store(o, (uint8_t)(bits & ~FT_GC_UNREACHABLE));
            move_to_old(o, c->older);
        }
    }
}

static void handle_legacy(collection *c)
{
    bool saveall = debug_flags(c->rt) & FT_GC_DEBUG_SAVEALL;
    for (size_t i = 0; i < c->n_legacy; i++) {
        ft_object *o = c->legacy[i];
        if (saveall || o->ob_type->legacy_del)
            garbage_append(c->rt, o);
    }
}

static void stop_world_timed(collection *c, int64_t *start)
{
    ft_stop_the_world(c->rt);
    *start = ft_monotonic_ns();
}

static void start_world_timed(collection *c, int64_t start)
{
    c->pause_ns += ft_monotonic_ns() - start;
    ft_start_the_world(c->rt);
}

/* Stop #1's settling: exact counts everywhere, the generation counters as CPython moves them. */
static void settle_stopped(collection *c)
{
    ft_runtime *rt = c->rt;
    ft_brc_merge_stopped(rt, &c->dead);
    ft_uniqueid_merge_stopped(rt, &c->dead);
    ft_delayed_process_stopped(rt, &c->dead);
    if (c->generation + 1 < FT_GC_GENERATIONS)
        atomic_fetch_add_explicit(&rt->gc.counts[c->generation + 1], 1, memory_order_relaxed);
    for (int g = 1; g <= c->generation; g++)
        atomic_store_explicit(&rt->gc.counts[g], 0, memory_order_relaxed);
    counts_refold_stopped(rt, true);
}

/* Collect generations 0..generation; the caller holds `collecting`. Returns CPython's n + m (or -1
 * when out of memory), with m and n in *collected and *uncollectable. */
static intptr_t collect(ft_thread *t, int generation, intptr_t *collected, intptr_t *uncollectable)
{
    ft_runtime *rt = t->rt;
    collection c = {.rt = rt, .t = t, .generation = generation};
    c.older = generation + 1 < FT_GC_GENERATIONS ? generation + 1 : generation;
    unsigned debug = debug_flags(rt);
    int64_t began = ft_monotonic_ns(), stopped_at;
    if (debug & FT_GC_DEBUG_STATS)
        fprintf(debug_stream(rt), "gc: collecting generation %d...\n", generation);

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

    ft_dead_list_dealloc(&c.dead);
    if (found) {
        call_weakref_callbacks(&c);
        finalize_garbage(&c);
        stop_world_timed(&c, &stopped_at);
        handle_resurrected_stopped(&c);
        start_world_timed(&c, stopped_at);
        for (size_t i = 0; i < c.n_kept; i++)
            ft_decref(&c.kept[i]->ob_base);
        c.collected += (intptr_t)c.n_unreachable;
        delete_garbage(&c);
        /* Uncollectable: counted after the clears, as CPython does: those the clears freed (or that
         * a finalizer untracked) left the list. */
        size_t kept = 0;
        for (size_t i = 0; i < c.n_legacy; i++)
            if (bits_of(c.legacy[i]) & FT_GC_TRACKED)
                c.legacy[kept++] = c.legacy[i];
        c.n_legacy = kept;
        c.uncollectable = (intptr_t)c.n_legacy;
        if (debug & FT_GC_DEBUG_UNCOLLECTABLE)
            for (size_t i = 0; i < c.n_legacy; i++)
                print_object(debug_stream(rt), "uncollectable", c.legacy[i]);
        handle_legacy(&c);
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

    free(c.objs);
    free(c.tids);
    free(c.refs);
    free(c.stack);
    free(c.legacy);
    free(c.callbacks);
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

static bool begin_collecting(ft_runtime *rt)
{
    int idle = 0;
    return atomic_compare_exchange_strong_explicit(&rt->gc.collecting, &idle, 1,
                                                   memory_order_seq_cst, memory_order_relaxed);
}

/* Clear `collecting`, then free the zombies (gc/gc.h: whoever pushes after this frees its own). */
static void end_collecting(ft_runtime *rt)
{
    atomic_store_explicit(&rt->gc.collecting, 0, memory_order_seq_cst);
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
    if (!begin_collecting(rt))
        return 0;
    intptr_t n = collect_with_callbacks(t, generation);
    end_collecting(rt);
    return n;
}

void ft_gc_collect_scheduled(ft_thread *t)
{
    atomic_fetch_and_explicit(&t->head.pending, ~FT_PENDING_GC, memory_order_relaxed);
    ft_runtime *rt = t->rt;
    if (!atomic_load_explicit(&rt->gc.enabled, memory_order_relaxed) || threshold_of(rt, 0) == 0 ||
        ft_stw_held_by_caller(rt) || !begin_collecting(rt))
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
    end_collecting(rt);
}
