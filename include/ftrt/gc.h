/* ftrt/gc.h: the cycle collector, with the semantics of Python's gc module.
 *
 * Reference counting frees everything but cycles. Instances of FT_TYPE_GC types may form cycles; the
 * collector finds the groups of them that only reference each other and frees them, with CPython's
 * rules (docs/gc.md has the whole contract and a table from Python's gc module to this header):
 *
 *   - Tracking. A GC object starts untracked; the host tracks it once its fields are valid
 *     (ft_gc_track) and untracks it before its clear or dealloc releases anything (dealloc does it
 *     for the host if it has not). Only tracked objects are collected, traversed for referrers, or
 *     listed. Tracking takes no lock and writes nothing shared.
 *   - Generations. A tracked object is in generation 0, 1 or 2, or frozen (ft_gc_freeze). A collection
 *     of generation g examines generations 0..g and moves the survivors to g + 1 (2 stays 2).
 *     Collections of generation 0 and 1 cost in proportion to the objects of those generations, not
 *     to the heap (docs/gc.md, "How young collections find their objects").
 *   - Automatic collection. Each GC allocation minus each GC deallocation counts towards generation
 *     0's threshold (default 2000; CPython 3.13+'s, where 3.11 had 700); when the count exceeds it,
 *     the thread whose allocation crossed it collects at its next ft_safepoint: the oldest
 *     generation whose count exceeds its threshold (default 10 and 10), except that a full
 *     collection waits until the objects that survived young collections since the last one exceed
 *     a quarter of the long-lived total.
 *   - A collection stops the world to find the unreachable objects, restarts it to run weak
 *     reference callbacks and then PEP 442 finalizers (each object's once: its FINALIZED bit), stops
 *     it again to see what the finalizers resurrected, and clears the rest with the world running.
 *     Objects whose type has a legacy finalizer (legacy_del), and everything they reach, are
 *     uncollectable: they go to the garbage list (ft_gc_garbage) instead.
 *   - Parallel marking. While the world is stopped, the phases that walk objects (marking what the
 *     roots reach, gathering the candidates and counting their references, marking what is
 *     reachable) run on up to ft_config.gc_workers threads: the collecting thread and helper threads
 *     the runtime owns (started the first time a collection is big enough, kept until
 *     ft_runtime_free, never attached, taking no signals). A collection takes one worker per
 *     ft_config.gc_objects_per_worker objects on the pages it walks (default 65536), so small ones
 *     stay on the collecting thread. The result is the serial one whatever the number of workers:
 *     the same unreachable objects, counts, stats and order of finalizers. So traverse functions may
 *     run on a helper thread, with no ftrt thread state current (ft_thread_current() is NULL),
 *     several at once on different objects: they must only report references (visit), as
 *     CPython's tp_traverse does. Root functions run on the collecting thread.
 *   - Re-entrancy. Finalizers, weak reference callbacks and gc callbacks may do anything a thread
 *     may do: allocate, drop references, resurrect, make cycles, call any function here. A
 *     collection requested while one runs (on any thread) returns 0 at once.
 *
 * Every function here needs the calling thread attached to rt, except ft_gc_is_tracked,
 * ft_gc_is_finalized, the getters of thresholds, flags and counts, and ft_gc_set_debug_stream. The
 * ones that walk the heap (collect, get_objects, get_referrers, freeze, unfreeze,
 * get_freeze_count) stop the world; none may be called while the caller holds a stop (FT_EPERM), or
 * from a traverse function. */
#ifndef FTRT_GC_H
#define FTRT_GC_H

#include <stdio.h>

#include "object.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FT_GC_GENERATIONS 3

/* ---- tracking ------------------------------------------------------------------------------- */

/* Track o (an FT_TYPE_GC instance) in generation 0. The caller holds o exclusively (it has not been
 * published yet) or owns it (biased to the caller). Fatal if o is already tracked or its type is
 * not a GC type. */
FT_API void ft_gc_track(ft_object *o);
/* Untrack o: it leaves its generation (and any collection under way). Same callers as track; a
 * no-op on an untracked object. */
FT_API void ft_gc_untrack(ft_object *o);
FT_API bool ft_gc_is_tracked(const ft_object *o);
/* Whether o's PEP 442 finalizer has run (gc.is_finalized). */
FT_API bool ft_gc_is_finalized(const ft_object *o);

/* ---- collecting ----------------------------------------------------------------------------- */

/* Collect generations 0..generation (gc.collect). Returns the number of unreachable objects found
 * (collected plus uncollectable, counted as CPython's gc_collect_main counts them: docs/gc.md), 0
 * if a collection is already running, or -1 with ft_last_error() FT_EINVAL (generation not 0..2) or
 * FT_EPERM (the caller holds a stop, or is not attached to rt). */
FT_API intptr_t ft_gc_collect(ft_runtime *rt, int generation);

FT_API void ft_gc_enable(ft_runtime *rt);
FT_API void ft_gc_disable(ft_runtime *rt);
FT_API bool ft_gc_is_enabled(ft_runtime *rt);
FT_API void ft_gc_get_threshold(ft_runtime *rt, long threshold[FT_GC_GENERATIONS]);
/* FT_EINVAL (nothing changed) if any value is negative. 0 for generation 0 turns automatic
 * collection off, as in CPython. */
FT_API ft_status ft_gc_set_threshold(ft_runtime *rt, const long threshold[FT_GC_GENERATIONS]);
/* gc.get_count(): GC allocations minus deallocations since the last collection (never below 0,
 * exact: every thread's buffered part included), then collections of the younger generation since
 * the last collection of generations 1 and 2. */
FT_API void ft_gc_get_count(ft_runtime *rt, long count[FT_GC_GENERATIONS]);

/* gc.get_stats(), one entry per generation, plus what a C host wants to know about pauses. */
typedef struct ft_gc_generation_stats {
    uint64_t collections;   /* collections of this generation */
    uint64_t collected;     /* objects they freed (CPython's "collected") */
    uint64_t uncollectable; /* objects they found uncollectable */
    uint64_t candidates;    /* objects they examined (young collections: only young ones) */
    uint64_t pause_ns;      /* total time the world was stopped for them */
    uint64_t max_pause_ns;  /* the longest stop of one of them */
} ft_gc_generation_stats;
FT_API void ft_gc_get_stats(ft_runtime *rt, ft_gc_generation_stats stats[FT_GC_GENERATIONS]);

/* ---- roots ---------------------------------------------------------------------------------- */

/* A host's roots: objects the host references from outside any managed object (globals, module
 * tables, its own stacks). Full collections first mark everything the roots reach as alive, so that
 * the expensive phases skip it (CPython 3.14's "mark alive"). A root function calls visit(o,
 * visit_arg) for each root object (it must hold a strong reference to each); it runs with the world
 * stopped, so it must not block, allocate managed objects or count references. Roots only speed
 * collections up: an object they fail to visit is still found reachable through its count. */
typedef void (*ft_gc_root_fn)(ft_visit_fn visit, void *visit_arg, void *arg);
FT_API ft_status ft_gc_add_root(ft_runtime *rt, ft_gc_root_fn fn, void *arg);
FT_API ft_status ft_gc_remove_root(ft_runtime *rt, ft_gc_root_fn fn, void *arg); /* FT_EINVAL: none */

/* ---- freezing ------------------------------------------------------------------------------- */

/* Move every tracked object into the permanent generation, which collections ignore (gc.freeze);
 * resets the three counts, as CPython does. */
FT_API void ft_gc_freeze(ft_runtime *rt);
/* Move the permanent generation into the oldest one (gc.unfreeze). */
FT_API void ft_gc_unfreeze(ft_runtime *rt);
FT_API size_t ft_gc_get_freeze_count(ft_runtime *rt);

/* ---- introspection -------------------------------------------------------------------------- */

/* A list of objects returned to the caller, holding a strong reference to each item: release it
 * with ft_object_list_clear (attached). */
typedef struct ft_object_list {
    ft_object **items;
    size_t count;
} ft_object_list;
FT_API void ft_object_list_clear(ft_object_list *list);

/* gc.get_objects(generation): the tracked objects of generation 0..2, or of all three with -1;
 * frozen objects and those of a collection under way are left out. FT_ENOMEM or FT_EINVAL (out is
 * then empty). */
FT_API ft_status ft_gc_get_objects(ft_runtime *rt, int generation, ft_object_list *out);
/* gc.get_referrers(*objs): the tracked objects whose traverse visits any of objs. */
FT_API ft_status ft_gc_get_referrers(ft_runtime *rt, ft_object *const *objs, size_t n,
                                     ft_object_list *out);
/* gc.get_referents(*objs): what the traverse of each tracked GC object in objs visits. */
FT_API ft_status ft_gc_get_referents(ft_runtime *rt, ft_object *const *objs, size_t n,
                                     ft_object_list *out);

/* ---- garbage -------------------------------------------------------------------------------- */

/* gc.garbage: uncollectable objects (legacy finalizers, and what they reach: only the first kind is
 * listed unless FT_GC_DEBUG_SAVEALL), and every unreachable object under FT_GC_DEBUG_SAVEALL. The
 * list holds a reference to each. ft_gc_garbage copies it (new references); ft_gc_clear_garbage
 * drops the list's references (del gc.garbage[:]). */
FT_API ft_status ft_gc_garbage(ft_runtime *rt, ft_object_list *out);
FT_API size_t ft_gc_garbage_count(ft_runtime *rt);
FT_API void ft_gc_clear_garbage(ft_runtime *rt);

/* ---- debugging ------------------------------------------------------------------------------ */

/* The gc module's flags, with its values. */
#define FT_GC_DEBUG_STATS 1u         /* a line per collection: generation, sizes, time */
#define FT_GC_DEBUG_COLLECTABLE 2u   /* each collectable object found */
#define FT_GC_DEBUG_UNCOLLECTABLE 4u /* each uncollectable object found */
#define FT_GC_DEBUG_SAVEALL 32u      /* keep every unreachable object in garbage, free none */
#define FT_GC_DEBUG_LEAK (FT_GC_DEBUG_COLLECTABLE | FT_GC_DEBUG_UNCOLLECTABLE | FT_GC_DEBUG_SAVEALL)
FT_API void ft_gc_set_debug(ft_runtime *rt, unsigned flags);
FT_API unsigned ft_gc_get_debug(ft_runtime *rt);
/* Where the debug flags print (stderr by default, or with NULL). */
FT_API void ft_gc_set_debug_stream(ft_runtime *rt, FILE *stream);

/* ---- callbacks ------------------------------------------------------------------------------ */

/* gc.callbacks: called on the collecting thread (attached, world running) at the start and at the
 * end of every collection, in registration order, with the generation and (at the end) what it
 * found. A callback may add or remove callbacks. */
typedef enum ft_gc_phase { FT_GC_PHASE_START = 0, FT_GC_PHASE_STOP = 1 } ft_gc_phase;
typedef struct ft_gc_info {
    int generation;
    intptr_t collected;     /* 0 at the start */
    intptr_t uncollectable; /* 0 at the start */
} ft_gc_info;
typedef void (*ft_gc_callback)(ft_runtime *rt, ft_gc_phase phase, const ft_gc_info *info,
                               void *arg);
FT_API ft_status ft_gc_callback_add(ft_runtime *rt, ft_gc_callback fn, void *arg);
/* Remove the first registration of (fn, arg); FT_EINVAL if there is none. */
FT_API ft_status ft_gc_callback_remove(ft_runtime *rt, ft_gc_callback fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
