/* ftrt/uniqueid.h: per-thread reference counts for hot shared objects.
 *
 * Some objects are referenced from every thread all the time (types, code, module dictionaries).
 * Counting them on a shared field makes every thread fight over one cache line. Instead, such an
 * object gets a small unique id, and each thread counts its references to it in a private array
 * indexed by the id: an increment of a thread-local integer, no atomics, no sharing.
 *
 * The price: the true count is only known when every thread's slots are added up, which happens with
 * the world stopped (ft_uniqueid_merge) or when a thread stops (its slots are folded into the shared
 * count). So the object becomes deferred: its shared count carries a large bias, ordinary decrefs can
 * never bring it to zero, and only a merge frees it. Ids are recycled only after every thread's slot
 * for them was merged, so a new object never inherits a stale count.
 *
 * The type opts in with FT_TYPE_UNIQUEID and reserves a uint32_t in its instances for the id
 * (ft_type.unique_id_offset). */
#ifndef FTRT_UNIQUEID_H
#define FTRT_UNIQUEID_H

#include "object.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Give obj a unique id and make it deferred (the bias is added atomically, so any time will do).
 * FT_EINVAL if its type does not opt in or it already has an id or is immortal; FT_ENOMEM if the id
 * table cannot grow (obj unchanged). */
FT_API ft_status ft_uniqueid_enable(ft_thread *t, ft_object *obj);

static inline uint32_t ft_object_unique_id(const ft_object *obj)
{
    return *(const uint32_t *)((const char *)obj + obj->ob_type->unique_id_offset);
}

/* ABI, not API: the slow paths of ft_uniqueid_incref and ft_uniqueid_decref, called only by the
 * inline code below (the ft__ prefix: see ftrt/object.h, "ABI, not API"). */
FT_API void ft__uniqueid_incref_slow(ft_thread *t, ft_object *obj);
FT_API void ft__uniqueid_decref_slow(ft_thread *t, ft_object *obj);

/* Count a reference to obj in t's own array (an object without an id, or a thread whose array
 * cannot grow, takes ft_incref; the decref likewise takes ft_decref, which may free the object). */
static inline void ft_uniqueid_incref(ft_thread *t, ft_object *obj)
{
    struct ft_thread_head *h = (struct ft_thread_head *)t;
    size_t index = (size_t)ft_object_unique_id(obj) - 1; /* id 0 wraps to a miss */
    if (FT_LIKELY(index < h->uniqueid_size))
        h->uniqueid_counts[index]++;
    else
        ft__uniqueid_incref_slow(t, obj);
}

static inline void ft_uniqueid_decref(ft_thread *t, ft_object *obj)
{
    struct ft_thread_head *h = (struct ft_thread_head *)t;
    size_t index = (size_t)ft_object_unique_id(obj) - 1;
    if (FT_LIKELY(index < h->uniqueid_size))
        h->uniqueid_counts[index]--;
    else
        ft__uniqueid_decref_slow(t, obj);
}

/* Stop the world (unless the caller already has), add every thread's slots into the objects' shared
 * counts, and free the objects whose true count is zero: after the world restarts, on the caller,
 * if it is attached to rt. Returns how many were freed. A caller that holds the stop, or is not
 * attached to rt, only merges: nothing is freed (a destructor cannot run inside a stop, nor without
 * an attached thread), and the objects at zero wait for a merge that can free them.
 * Stops the world, so it is a quiescent point for the caller (ftrt/qsbr.h); the destructors it runs
 * may do anything. */
FT_API size_t ft_uniqueid_merge(ft_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif
