/* uniqueid.c: unique ids and per-thread reference counts.
 *
 * The runtime keeps a table of objects that have ids (id = index + 1; 0 means none), with a free
 * list threaded through the unused entries. Each thread keeps an array of counts indexed by id - 1,
 * grown on demand to the table's size; an object's true count is its own count plus every thread's
 * slot, minus the deferral bias.
 *
 * Invariants:
 *  - an object with an id carries the bias in its shared count, so no ordinary decref frees it;
 *  - a slot is added into its object (and zeroed) only with the world stopped, or by its own thread
 *    when it stops (an atomic add on the shared count, racing with nothing that could free it);
 *  - an id is released only by a merge, after every thread's slot for it was merged in the same
 *    stop, so a recycled id never meets a stale slot;
 *  - the debug reference total counts a slot's references when they are added into the object, not
 *    as the inline paths count them.
 *
 * The merge runs inside a stop (ft_uniqueid_merge_stopped): it adds up the slots and takes the
 * objects at zero out of the table, but frees none of them there, since a destructor may do anything,
 * stopping the world included. It hands them back on a dead list (thread/stw.h) and the caller
 * deallocates them after the restart. ft_uniqueid_merge wraps it in a stop of its own, unless its
 * caller holds one already; a caller that holds the stop, or is not attached to the runtime, merges
 * without taking objects out (they keep their ids until a merge that can free them).
 */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

#define INITIAL_IDS 8
#define BIAS_COUNT FT_DEFERRED_BIAS /* in references; shifted into the shared field */
#define FREE_TAG ((uintptr_t)1)

static uint32_t *id_field(ft_object *o)
{
    return (uint32_t *)((char *)o + o->ob_type->unique_id_offset);
}

intptr_t ft_uniqueid_bias(const ft_object *o)
{
    bool has_id = (o->ob_type->flags & FT_TYPE_UNIQUEID) && ft_object_unique_id(o) != 0;
    return has_id ? BIAS_COUNT : 0;
}

static intptr_t bias_shared(void)
{
    return (intptr_t)((uintptr_t)BIAS_COUNT << FT_SHARED_SHIFT);
}

void ft_uniqueid_runtime_destroy(ft_runtime *rt)
{
    free(rt->uniqueid.table);
    rt->uniqueid.table = NULL;
    rt->uniqueid.size = 0;
}

/* An entry index for obj, or FT_ENOMEM. rt->uniqueid.mutex held. */
static ft_status take_entry(ft_runtime *rt, ft_object *obj, uint32_t *index)
{
    if (rt->uniqueid.free_head == 0) {
        uint32_t size = rt->uniqueid.size ? rt->uniqueid.size * 2 : INITIAL_IDS;
        uintptr_t *table = ft_inject_failure(rt) ? NULL : realloc(rt->uniqueid.table, size * sizeof *table);
        if (!table)
            return FT_ENOMEM;
        for (uint32_t i = size; i-- > rt->uniqueid.size;) {
            table[i] = rt->uniqueid.free_head | FREE_TAG;
            rt->uniqueid.free_head = ((uintptr_t)i + 1) << 1;
        }
        rt->uniqueid.table = table;
        atomic_store_explicit(&rt->uniqueid.size, size, memory_order_relaxed);
    }
    *index = (uint32_t)(rt->uniqueid.free_head >> 1) - 1;
    rt->uniqueid.free_head = rt->uniqueid.table[*index] & ~FREE_TAG;
    rt->uniqueid.table[*index] = (uintptr_t)obj;
    return FT_OK;
}

static void release_entry(ft_runtime *rt, uint32_t index)
{
    rt->uniqueid.table[index] = rt->uniqueid.free_head | FREE_TAG;
    rt->uniqueid.free_head = ((uintptr_t)index + 1) << 1;
}

ft_status ft_uniqueid_enable(ft_thread *t, ft_object *obj)
{
    const ft_type *type = obj->ob_type;
    if (!(type->flags & FT_TYPE_UNIQUEID) || type->unique_id_offset < sizeof(ft_object) ||
        type->unique_id_offset + sizeof(uint32_t) > type->basic_size ||
        ft_object_is_immortal(obj))
        return FT_EINVAL;
    ft_runtime *rt = t->rt;
    uint32_t index;
    /* The "already has an id" check and the id's store under one lock: two threads enabling the
     * same object cannot both succeed. */
    ft_mutex_lock_internal(&rt->uniqueid.mutex);
    ft_status s = *id_field(obj) != 0 ? FT_EINVAL : take_entry(rt, obj, &index);
    if (s == FT_OK)
        *id_field(obj) = index + 1;
    ft_mutex_unlock(&rt->uniqueid.mutex);
    if (s != FT_OK)
        return s;
    /* Already deferred (its type's, or ft_object_enable_deferred_rc): it has the bias. */
    uint16_t was = atomic_fetch_or_explicit(&obj->ob_flags, FT_OBJ_DEFERRED, memory_order_relaxed);
    if (!(was & FT_OBJ_DEFERRED))
        atomic_fetch_add_explicit(&obj->ob_ref_shared, bias_shared(), memory_order_release);
    return FT_OK;
}

/* Make t's array cover every id issued so far; false if it cannot (then count normally). */
static bool cover(ft_thread *t, size_t index)
{
    if (t->uniqueid.finalized)
        return false;
    size_t size = atomic_load_explicit(&t->rt->uniqueid.size, memory_order_relaxed);
    if (index >= size)
        return false;
    intptr_t *counts = ft_inject_failure(t->rt)
                           ? NULL
                           : realloc(t->head.uniqueid_counts, size * sizeof *counts);
    if (!counts)
        return false;
    memset(counts + t->head.uniqueid_size, 0, (size - t->head.uniqueid_size) * sizeof *counts);
    t->head.uniqueid_counts = counts;
    t->head.uniqueid_size = size;
    return true;
}

void ft__uniqueid_incref_slow(ft_thread *t, ft_object *obj)
{
    size_t index = (size_t)ft_object_unique_id(obj) - 1;
    if (ft_object_unique_id(obj) != 0 && cover(t, index))
        t->head.uniqueid_counts[index]++;
    else
        ft_incref(obj);
}

void ft__uniqueid_decref_slow(ft_thread *t, ft_object *obj)
{
    size_t index = (size_t)ft_object_unique_id(obj) - 1;
    if (ft_object_unique_id(obj) != 0 && cover(t, index))
        t->head.uniqueid_counts[index]--;
    else
        ft_decref(obj);
}

/* Add t's slots into their objects' shared counts and zero them. rt->uniqueid.mutex held. The inline
 * per-thread increments and decrements leave the debug reference total alone, so the references a
 * slot holds enter the total here, when they enter their object. */
static void merge_thread(ft_runtime *rt, ft_thread *t)
{
    int64_t merged = 0;
    for (size_t i = 0; i < t->head.uniqueid_size; i++) {
        intptr_t n = t->head.uniqueid_counts[i];
        if (n == 0)
            continue;
        ft_object *obj = (ft_object *)rt->uniqueid.table[i];
        t->head.uniqueid_counts[i] = 0;
        if (ft_object_is_immortal(obj))
            continue; /* made immortal since: never counted again, and its id is never released */
        atomic_fetch_add_explicit(&obj->ob_ref_shared,
                                  (intptr_t)((uintptr_t)n << FT_SHARED_SHIFT),
                                  memory_order_relaxed);
        merged += n;
    }
#ifdef FTRT_DEBUG
    atomic_fetch_add_explicit(&rt->reftotal, merged, memory_order_relaxed);
#else
    (void)merged;
#endif
}

void ft_uniqueid_thread_stop(ft_thread *t)
{
    ft_runtime *rt = t->rt;
    ft_mutex_lock_internal(&rt->uniqueid.mutex);
    merge_thread(rt, t);
    ft_mutex_unlock(&rt->uniqueid.mutex);
    free(t->head.uniqueid_counts);
    t->head.uniqueid_counts = NULL;
    t->head.uniqueid_size = 0;
    t->uniqueid.finalized = true;
}

size_t ft_uniqueid_merge_stopped(ft_runtime *rt, ft_dead_list *dead)
{
    FT_ASSERT(ft_stw_held_by_caller(rt));
    /* The head lock: threads suspended in ft_thread_stop unlink themselves during a stop. */
    ft_mutex_lock_internal(&rt->head_mutex);
    ft_mutex_lock_internal(&rt->uniqueid.mutex);
    for (ft_thread *t = rt->threads; t; t = t->next)
        merge_thread(rt, t);
    size_t found = 0;
    uint32_t size = atomic_load_explicit(&rt->uniqueid.size, memory_order_relaxed);
    for (uint32_t i = 0; dead && i < size; i++) {
        if (rt->uniqueid.table[i] & FREE_TAG)
            continue;
        ft_object *obj = (ft_object *)rt->uniqueid.table[i];
        if (ft_refcount(obj) - BIAS_COUNT != 0)
            continue;
        atomic_fetch_sub_explicit(&obj->ob_ref_shared, bias_shared(), memory_order_relaxed);
        atomic_fetch_and_explicit(&obj->ob_flags, (uint16_t)~FT_OBJ_DEFERRED, memory_order_relaxed);
        *id_field(obj) = 0;
        release_entry(rt, i);
        /* Its owner's local part and the others' shared part add up to zero: fold them into one
         * merged count of zero (the world is stopped, so no owner is counting). */
        intptr_t count = ft_object_merge(obj, 0);
        FT_ASSERT(count == 0);
        (void)count;
        ft_dead_list_push(dead, obj);
        found++;
    }
    ft_mutex_unlock(&rt->uniqueid.mutex);
    ft_mutex_unlock(&rt->head_mutex);
    return found;
}

void ft_uniqueid_release_stopped(ft_runtime *rt, ft_object *obj)
{
    FT_ASSERT(ft_stw_held_by_caller(rt));
    uint32_t id = *id_field(obj);
    atomic_fetch_sub_explicit(&obj->ob_ref_shared, bias_shared(), memory_order_relaxed);
    atomic_fetch_and_explicit(&obj->ob_flags, (uint16_t)~FT_OBJ_DEFERRED, memory_order_relaxed);
    *id_field(obj) = 0;
    ft_mutex_lock_internal(&rt->uniqueid.mutex);
    release_entry(rt, id - 1);
    ft_mutex_unlock(&rt->uniqueid.mutex);
}

size_t ft_uniqueid_merge(ft_runtime *rt)
{
    /* Only a caller attached to rt can run destructors, and only outside a stop. */
    ft_thread *self = ft_current_thread;
    bool stopped = ft_stw_stop_unless_held(rt, "uniqueid merge");
    ft_dead_list dead = {0};
    ft_uniqueid_merge_stopped(rt, stopped && self && self->rt == rt ? &dead : NULL);
    if (stopped)
        ft_start_the_world(rt);
    return ft_dead_list_dealloc(&dead);
}
