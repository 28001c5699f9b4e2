/* internal/internal.h: functions shared between ftrt's source files, not part of the API. */
#ifndef FTRT_INTERNAL_H
#define FTRT_INTERNAL_H

#include "internal/assert.h"
#include "internal/list.h"
#include "internal/types.h"
#include "platform/platform.h"
#include "ftrt/parking_lot.h"
#include "ftrt/stackref.h"
#include "sync/sync.h"
#include "thread/critical_section.h"

#define FT_TLS_INITIAL_EXEC __attribute__((tls_model("initial-exec")))

/* thread.c: the attached thread state of the calling OS thread (ft_thread_current). */
extern FT_TLS_INITIAL_EXEC _Thread_local ft_thread *ft_current_thread;

/* fatal.c */
void ft_set_last_error(ft_status s);

/* Test hook (ft_debug_fail_allocation): whether this allocation site must fail now. */
static inline bool ft_inject_failure(ft_runtime *rt)
{
    if (FT_LIKELY(atomic_load_explicit(&rt->fail_countdown, memory_order_relaxed) < 0))
        return false;
    return atomic_fetch_sub_explicit(&rt->fail_countdown, 1, memory_order_relaxed) == 0;
}

/* The gc bits of a block given back to the heap (ftrt/object.h): FT_GC_HEAP_FREED in debug builds,
 * whose use-after-free checks read it; nothing in release builds, where nothing reads it (heap walks
 * know free blocks from their pages' lists). Stored whole by the freeing thread (object.c,
 * freelist.c), which holds the block exclusively. */
#ifdef FTRT_DEBUG
#define FT_HEAP_FREED_BITS FT_GC_HEAP_FREED
#else
#define FT_HEAP_FREED_BITS 0
#endif

/* The bias a deferred object carries in its shared count (in references): no ordinary decref can
 * take its count to zero, so only the collector (or a merge of per-thread counts) frees it. */
#define FT_DEFERRED_BIAS (INTPTR_MAX / 8)
static inline intptr_t ft_object_deferral_bias(const ft_object *o)
{
    return (atomic_load_explicit(&((ft_object *)o)->ob_flags, memory_order_relaxed) &
            FT_OBJ_DEFERRED) && !ft_object_is_immortal(o)
               ? FT_DEFERRED_BIAS
               : 0;
}
/* object.c: world stopped, o garbage: take its deferral away (its unique id too, if it has one). */
void ft_object_disable_deferred_stopped(ft_runtime *rt, ft_object *o);
/* object.c: world stopped, o merged at count zero: the caller takes one reference to it. */
void ft_object_hold_stopped(ft_object *o);

/* object.c: a non-owner's decref out of line (the merge queue drops its references with it). */
void ft_decref_shared(ft_object *o);
/* object.c: the count reached zero: finalize, dealloc and free o. */
void ft_object_dealloc(ft_object *o);
/* object.c: merge o's counts (ft_object_merge with nothing added) with the world stopped by the
 * caller: no other thread counts it. */
void ft_object_merge_stopped(ft_object *o);
/* object.c: give a deallocated object's block back (to t's freelist for its type, or the heap). */
void ft_object_free_memory(ft_thread *t, ft_object *o);
ft_runtime *ft_object_runtime(const ft_object *o);

/* Trace hooks (trace/trace.h), on slow paths only: with recording off each costs one relaxed load. */
static inline bool ft_trace_on(ft_runtime *rt)
{
    return FT_UNLIKELY(atomic_load_explicit(&rt->trace.session, memory_order_relaxed) != 0);
}
static inline void ft_trace_begin(ft_runtime *rt, ft_trace_name name)
{
    if (ft_trace_on(rt))
        ft_trace_record(rt, name, 'B', NULL, 0);
}
static inline void ft_trace_end(ft_runtime *rt, ft_trace_name name)
{
    if (ft_trace_on(rt))
        ft_trace_record(rt, name, 'E', NULL, 0);
}
/* An end with the event's four arguments (a collection's counts). */
static inline void ft_trace_end_with(ft_runtime *rt, ft_trace_name name, int64_t a0, int64_t a1,
                                     int64_t a2, int64_t a3)
{
    if (ft_trace_on(rt))
        ft_trace_record(rt, name, 'E', (const int64_t[]){a0, a1, a2, a3}, 4);
}
static inline void ft_trace_instant(ft_runtime *rt, ft_trace_name name, int64_t a0)
{
    if (ft_trace_on(rt))
        ft_trace_record(rt, name, 'i', &a0, 1);
}

/* Whether t is the thread that has stopped its runtime's world. */
static inline bool ft_stw_is_requester(const ft_thread *t)
{
    ft_runtime *rt = t->rt;
    return atomic_load_explicit(&rt->stw.world_stopped, memory_order_relaxed) &&
           atomic_load_explicit(&rt->stw.requester, memory_order_relaxed) == t;
}

#endif
