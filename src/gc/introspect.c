/* introspect.c: the gc module's other functions: listings (get_objects, get_referrers,
 * get_referents), freezing, the garbage list, debug flags, callbacks, roots, stats; and the
 * collector's lifetime in its runtime (init, the final collections, the leak report).
 *
 * The listings and freezing walk the heap with the world stopped, as CPython's free-threaded build
 * does; they leave out frozen objects (but freeze's own walk) and those of a collection under way
 * (UNREACHABLE). References to listed objects are taken inside the stop (an incref needs no lock),
 * and given back, when a listing runs out of memory, after it. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

static uint8_t bits_of(const ft_object *o)
{
    return atomic_load_explicit(&((ft_object *)o)->ob_gc_bits, memory_order_relaxed);
}

/* Whether a walk lists o: tracked, not frozen, not in a collection under way. */
static bool listable(const ft_object *o)
{
    return (bits_of(o) & (FT_GC_TRACKED | FT_GC_FROZEN | FT_GC_UNREACHABLE)) == FT_GC_TRACKED;
}

static int generation_of(const ft_object *o)
{
    if (!(bits_of(o) & FT_GC_OLD))
        return 0;
    return (atomic_load_explicit(&((ft_object *)o)->ob_flags, memory_order_relaxed) &
            FT_OBJ_GC_OLDEST)
               ? 2
               : 1;
}

/* ---- object lists ---------------------------------------------------------------------------- */

typedef struct list_builder {
    ft_object_list *out;
    size_t cap;
    bool oom;
} list_builder;

static bool list_add(list_builder *b, ft_object *o)
{
    ft_object_list *l = b->out;
    if (l->count == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        ft_object **grown = realloc(l->items, cap * sizeof *grown);
        if (!grown) {
            b->oom = true;
            return false;
        }
        l->items = grown;
        b->cap = cap;
    }
    ft_incref(o);
    l->items[l->count++] = o;
    return true;
}

void ft_object_list_clear(ft_object_list *list)
{
    ft_object **items = list->items;
    size_t n = list->count;
    list->items = NULL;
    list->count = 0;
    for (size_t i = 0; i < n; i++)
        ft_decref(items[i]);
    free(items);
}

/* Begin a listing: the caller must be attached to rt and hold no stop. */
static ft_status listing_begin(ft_runtime *rt, ft_object_list *out)
{
    out->items = NULL;
    out->count = 0;
    ft_thread *t = ft_current_thread;
    if (!t || t->rt != rt || ft_stw_held_by_caller(rt))
        return FT_EPERM;
    ft_stw_stop(rt, "gc listing");
    return FT_OK;
}

static ft_status listing_end(ft_runtime *rt, list_builder *b)
{
    ft_start_the_world(rt);
    if (!b->oom)
        return FT_OK;
    ft_object_list_clear(b->out);
    return FT_ENOMEM;
}

typedef struct objects_walk {
    list_builder b;
    int generation;
} objects_walk;

static bool list_generation(void *block, size_t size, void *arg)
{
    (void)size;
    objects_walk *w = arg;
    ft_object *o = block;
    if (!listable(o) || (w->generation >= 0 && generation_of(o) != w->generation))
        return true;
    return list_add(&w->b, o);
}

ft_status ft_gc_get_objects(ft_runtime *rt, int generation, ft_object_list *out)
{
    if (generation < -1 || generation >= FT_GC_GENERATIONS) {
        out->items = NULL;
        out->count = 0;
        return FT_EINVAL;
    }
    ft_status s = listing_begin(rt, out);
    if (s != FT_OK)
        return s;
    objects_walk w = {{out, 0, false}, generation};
    ft_heap_visit(rt, FT_HEAP_GC, list_generation, &w);
    return listing_end(rt, &w.b);
}

typedef struct referrers_walk {
    list_builder b;
    ft_object *const *objs;
    size_t n;
} referrers_walk;

static int is_wanted(ft_object *r, void *arg)
{
    referrers_walk *w = arg;
    for (size_t i = 0; i < w->n; i++)
        if (w->objs[i] == r)
            return 1;
    return 0;
}

static bool list_referrer(void *block, size_t size, void *arg)
{
    (void)size;
    referrers_walk *w = arg;
    ft_object *o = block;
    if (!listable(o) || !ft_gc_traverse(o, is_wanted, w))
        return true;
    return list_add(&w->b, o);
}

ft_status ft_gc_get_referrers(ft_runtime *rt, ft_object *const *objs, size_t n,
                              ft_object_list *out)
{
    ft_status s = listing_begin(rt, out);
    if (s != FT_OK)
        return s;
    referrers_walk w = {{out, 0, false}, objs, n};
    ft_heap_visit(rt, FT_HEAP_GC, list_referrer, &w);
    return listing_end(rt, &w.b);
}

static int list_referent(ft_object *r, void *arg)
{
    return list_add(arg, r) ? 0 : 1;
}

ft_status ft_gc_get_referents(ft_runtime *rt, ft_object *const *objs, size_t n,
                              ft_object_list *out)
{
    ft_status s = listing_begin(rt, out);
    if (s != FT_OK)
        return s;
    list_builder b = {out, 0, false};
    for (size_t i = 0; i < n && !b.oom; i++)
        if (objs[i]->ob_type->flags & FT_TYPE_GC)
            ft_gc_traverse(objs[i], list_referent, &b);
    return listing_end(rt, &b);
}

/* ---- freezing -------------------------------------------------------------------------------- */

static bool freeze_one(void *block, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    ft_object *o = block;
    uint8_t bits = bits_of(o);
    if ((bits & (FT_GC_TRACKED | FT_GC_FROZEN | FT_GC_UNREACHABLE)) == FT_GC_TRACKED)
        atomic_store_explicit(&o->ob_gc_bits, (uint8_t)(bits | FT_GC_FROZEN), memory_order_relaxed);
    return true;
}

static bool unfreeze_one(void *block, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    ft_object *o = block;
    uint8_t bits = bits_of(o);
    if ((bits & (FT_GC_TRACKED | FT_GC_FROZEN)) != (FT_GC_TRACKED | FT_GC_FROZEN))
        return true;
    atomic_store_explicit(&o->ob_gc_bits, (uint8_t)((bits & ~FT_GC_FROZEN) | FT_GC_OLD),
                          memory_order_relaxed);
    atomic_fetch_or_explicit(&o->ob_flags, FT_OBJ_GC_OLDEST, memory_order_relaxed);
    return true;
}

static bool count_frozen(void *block, size_t size, void *arg)
{
    (void)size;
    if ((bits_of(block) & (FT_GC_TRACKED | FT_GC_FROZEN)) == (FT_GC_TRACKED | FT_GC_FROZEN))
        ++*(size_t *)arg;
    return true;
}

/* Walk the GC heap with the world stopped (or inside the caller's stop). */
static void walk_stopped(ft_runtime *rt, ft_block_visitor fn, void *arg)
{
    bool stopped = ft_stw_stop_unless_held(rt, "gc walk");
    ft_heap_visit(rt, FT_HEAP_GC, fn, arg);
    if (stopped)
        ft_start_the_world(rt);
}

void ft_gc_freeze(ft_runtime *rt)
{
    bool stopped = ft_stw_stop_unless_held(rt, "gc freeze");
    ft_heap_visit(rt, FT_HEAP_GC, freeze_one, NULL);
    ft_gc_counts_reset_stopped(rt);
    if (stopped)
        ft_start_the_world(rt);
}

void ft_gc_unfreeze(ft_runtime *rt)
{
    walk_stopped(rt, unfreeze_one, NULL);
}

size_t ft_gc_get_freeze_count(ft_runtime *rt)
{
    size_t n = 0;
    walk_stopped(rt, count_frozen, &n);
    return n;
}

/* ---- garbage --------------------------------------------------------------------------------- */

ft_status ft_gc_garbage(ft_runtime *rt, ft_object_list *out)
{
    out->items = NULL;
    out->count = 0;
    ft_mutex_lock_internal(&rt->gc.mutex);
    size_t n = rt->gc.garbage_count;
    ft_object **items = n ? malloc(n * sizeof *items) : NULL;
    if (n && !items) {
        ft_mutex_unlock(&rt->gc.mutex);
        return FT_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        items[i] = rt->gc.garbage[i];
        ft_incref(items[i]);
    }
    ft_mutex_unlock(&rt->gc.mutex);
    out->items = items;
    out->count = n;
    return FT_OK;
}

size_t ft_gc_garbage_count(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->gc.mutex);
    size_t n = rt->gc.garbage_count;
    ft_mutex_unlock(&rt->gc.mutex);
    return n;
}

void ft_gc_clear_garbage(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->gc.mutex);
    ft_object **items = rt->gc.garbage;
    size_t n = rt->gc.garbage_count;
    rt->gc.garbage = NULL;
    rt->gc.garbage_count = rt->gc.garbage_cap = 0;
    ft_mutex_unlock(&rt->gc.mutex);
    /* Outside the lock (destructors may touch the list), last first, as CPython's list slice
     * deletion drops them. */
    while (n > 0)
        ft_decref(items[--n]);
    free(items);
}

/* ---- settings, callbacks, roots, stats ------------------------------------------------------ */

void ft_gc_set_debug(ft_runtime *rt, unsigned flags)
{
    atomic_store_explicit(&rt->gc.debug, flags, memory_order_relaxed);
}

unsigned ft_gc_get_debug(ft_runtime *rt)
{
    return atomic_load_explicit(&rt->gc.debug, memory_order_relaxed);
}

void ft_gc_set_debug_stream(ft_runtime *rt, FILE *stream)
{
    atomic_store_explicit(&rt->gc.debug_stream, stream, memory_order_relaxed);
}

/* Append (fn, arg) to one of the registries (rt->gc.mutex held). */
static ft_status registry_add(void **entries, size_t *count, size_t *cap, size_t size,
                              const void *entry)
{
    if (*count == *cap) {
        size_t n = *cap ? *cap * 2 : 8;
        void *grown = realloc(*entries, n * size);
        if (!grown)
            return FT_ENOMEM;
        *entries = grown;
        *cap = n;
    }
    memcpy((char *)*entries + *count * size, entry, size);
    ++*count;
    return FT_OK;
}

/* Remove the first entry equal to entry (rt->gc.mutex held). */
static ft_status registry_remove(void *entries, size_t *count, size_t size, const void *entry)
{
    for (size_t i = 0; i < *count; i++) {
        char *at = (char *)entries + i * size;
        if (memcmp(at, entry, size) == 0) {
            memmove(at, at + size, (*count - i - 1) * size);
            --*count;
            return FT_OK;
        }
    }
    return FT_EINVAL;
}

ft_status ft_gc_callback_add(ft_runtime *rt, ft_gc_callback fn, void *arg)
{
    if (!fn)
        return FT_EINVAL;
    ft_gc_callback_entry e = {fn, arg};
    ft_mutex_lock_internal(&rt->gc.mutex);
    ft_status s = registry_add((void **)&rt->gc.callbacks, &rt->gc.callback_count,
                               &rt->gc.callback_cap, sizeof e, &e);
    ft_mutex_unlock(&rt->gc.mutex);
    return s;
}

ft_status ft_gc_callback_remove(ft_runtime *rt, ft_gc_callback fn, void *arg)
{
    ft_gc_callback_entry e = {fn, arg};
    ft_mutex_lock_internal(&rt->gc.mutex);
    ft_status s = registry_remove(rt->gc.callbacks, &rt->gc.callback_count, sizeof e, &e);
    ft_mutex_unlock(&rt->gc.mutex);
    return s;
}

ft_status ft_gc_add_root(ft_runtime *rt, ft_gc_root_fn fn, void *arg)
{
    if (!fn)
        return FT_EINVAL;
    ft_gc_root_entry e = {fn, arg};
    ft_mutex_lock_internal(&rt->gc.mutex);
    ft_status s =
        registry_add((void **)&rt->gc.roots, &rt->gc.root_count, &rt->gc.root_cap, sizeof e, &e);
    ft_mutex_unlock(&rt->gc.mutex);
    return s;
}

ft_status ft_gc_remove_root(ft_runtime *rt, ft_gc_root_fn fn, void *arg)
{
    ft_gc_root_entry e = {fn, arg};
    ft_mutex_lock_internal(&rt->gc.mutex);
    ft_status s = registry_remove(rt->gc.roots, &rt->gc.root_count, sizeof e, &e);
    ft_mutex_unlock(&rt->gc.mutex);
    return s;
}

void ft_gc_get_stats(ft_runtime *rt, ft_gc_generation_stats stats[FT_GC_GENERATIONS])
{
    for (int g = 0; g < FT_GC_GENERATIONS; g++) {
        __typeof__(rt->gc.stats[0]) *s = &rt->gc.stats[g];
        stats[g] = (ft_gc_generation_stats){
            atomic_load_explicit(&s->collections, memory_order_relaxed),
            atomic_load_explicit(&s->collected, memory_order_relaxed),
            atomic_load_explicit(&s->uncollectable, memory_order_relaxed),
            atomic_load_explicit(&s->candidates, memory_order_relaxed),
            atomic_load_explicit(&s->pause_ns, memory_order_relaxed),
            atomic_load_explicit(&s->max_pause_ns, memory_order_relaxed),
        };
    }
}

/* ---- lifetime -------------------------------------------------------------------------------- */

void ft_gc_runtime_init(ft_runtime *rt)
{
    static const long defaults[FT_GC_GENERATIONS] = {2000, 10, 10};
    atomic_store_explicit(&rt->gc.enabled, true, memory_order_relaxed);
    for (int g = 0; g < FT_GC_GENERATIONS; g++)
        atomic_store_explicit(&rt->gc.threshold[g], defaults[g], memory_order_relaxed);
    rt->gc.pool.rt = rt;
    for (int k = 0; k < FT_GC_MAX_WORKERS; k++)
        rt->gc.pool.workers[k].rt = rt;
    atomic_store_explicit(&rt->gc.pool.participants, 1, memory_order_relaxed);
}

void ft_gc_runtime_destroy(ft_runtime *rt)
{
    ft_gc_pool_destroy(&rt->gc.pool);
    free(rt->gc.work.pages);
    free(rt->gc.work.runs);
    free(rt->gc.work.set);
    free(rt->gc.work.stack);
    rt->gc.work = (ft_gc_work){0};
    free(rt->gc.garbage);
    free(rt->gc.callbacks);
    free(rt->gc.roots);
    rt->gc.garbage = NULL;
    rt->gc.callbacks = NULL;
    rt->gc.roots = NULL;
}

/* Shutdown, world stopped: every deferred object becomes an ordinary one; those its deferral alone
 * kept alive are dead (pushed for dealloc after the restart). */
static bool undefer(void *block, size_t size, void *arg)
{
    (void)size;
    ft_object *o = block;
    if (!ft_object_deferral_bias(o))
        return true;
    ft_object_disable_deferred_stopped(ft_object_runtime(o), o);
    if (ft_refcount(o) == 0) {
        ft_object_merge_stopped(o);
        ft_dead_list_push(arg, o);
    }
    return true;
}

void ft_gc_finalize_runtime(ft_runtime *rt)
{
    ft_dead_list dead = {0};
    ft_stw_stop(rt, "gc shutdown");
    ft_uniqueid_merge_stopped(rt, NULL);
    ft_heap_visit(rt, FT_HEAP_OBJECT, undefer, &dead);
    ft_heap_visit(rt, FT_HEAP_GC, undefer, &dead);
    ft_start_the_world(rt);
    ft_dead_list_dealloc(&dead);
    /* No callbacks at shutdown (CPython clears gc.callbacks before its last collections). */
    ft_mutex_lock_internal(&rt->gc.mutex);
    rt->gc.callback_count = 0;
    ft_mutex_unlock(&rt->gc.mutex);
    ft_gc_clear_garbage(rt);
    /* Until a collection finds nothing (finalizers may leave new garbage), a few times at most. */
    for (int i = 0; i < 4 && ft_gc_collect(rt, 2) > 0; i++)
        ;
    ft_gc_clear_garbage(rt);
}

#ifdef FTRT_DEBUG
/* Immortal objects are meant to outlive their runtime: not leaks. */
static bool count_block(void *block, size_t size, void *arg)
{
    (void)size;
    if (!ft_object_is_immortal(block))
        ++*(size_t *)arg;
    return true;
}

static bool print_leak(void *block, size_t size, void *arg)
{
    (void)size;
    size_t *printed = arg;
    ft_object *o = block;
    if (ft_object_is_immortal(o))
        return true;
    fprintf(stderr, "ftrt:   %p '%s' (count %ld)\n", (void *)o,
            o->ob_type && o->ob_type->name ? o->ob_type->name : "?", (long)ft_refcount(o));
    return ++*printed < 10;
}

void ft_gc_report_leaks(ft_runtime *rt)
{
    size_t leaked = 0, printed = 0;
    bool stopped = ft_stw_stop_unless_held(rt, "gc leak report");
    ft_heap_visit(rt, FT_HEAP_OBJECT, count_block, &leaked);
    ft_heap_visit(rt, FT_HEAP_GC, count_block, &leaked);
    if (leaked) {
        fprintf(stderr, "ftrt: runtime %p: %zu objects still allocated at ft_runtime_free; the "
                        "first:\n",
                (void *)rt, leaked);
        ft_heap_visit(rt, FT_HEAP_OBJECT, print_leak, &printed);
        if (printed < 10)
            ft_heap_visit(rt, FT_HEAP_GC, print_leak, &printed);
    }
    if (stopped)
        ft_start_the_world(rt);
}
#else
void ft_gc_report_leaks(ft_runtime *rt)
{
    (void)rt;
}
#endif
