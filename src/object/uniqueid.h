/* object/uniqueid.h: the state of unique ids and per-thread reference counts (uniqueid.c).
 *
 * An object with a unique id is counted in each thread's private array (ft_thread_head.uniqueid_counts,
 * indexed by id - 1); the runtime keeps the table from ids to objects, whose free entries form a
 * list, so that a merge can find each id's object. */
#ifndef FTRT_OBJECT_UNIQUEID_H
#define FTRT_OBJECT_UNIQUEID_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ftrt/lock.h"
#include "ftrt/uniqueid.h"
#include "thread/stw.h"

/* The runtime's part (ft_runtime.uniqueid). */
typedef struct ft_uniqueid_runtime {
    ft_mutex mutex;         /* guards table and free_head; taken alone or after head_mutex */
    uintptr_t *table;       /* by id - 1: an object, or (next free id << 1) | 1; under mutex */
    uintptr_t free_head;    /* (first free id) << 1, or 0; under mutex */
    _Atomic(uint32_t) size; /* entries in table; grows only, under mutex; read without it (relaxed)
                               as an upper bound by the threads' array growth */
} ft_uniqueid_runtime;

/* One thread's part (ft_thread.uniqueid). The counts themselves sit in ft_thread_head
 * (uniqueid_counts, uniqueid_size), where the inline fast paths read them: written by their owner
 * with plain stores, and by a merge with the world stopped (it zeroes the slots it adds in, under
 * head_mutex and mutex; the owner's suspension and its next attach order those accesses); the owner
 * grows the array, and folds and frees it as it stops, under mutex. */
typedef struct ft_uniqueid_thread {
    bool finalized; /* owner only: its counts were merged for good (the thread is stopping) */
} ft_uniqueid_thread;

/* The bias an object with a unique id carries in its shared count (in references; 0 without an id):
 * it is not a reference, so ft_immortalize leaves it out of the debug total. */
intptr_t ft_uniqueid_bias(const ft_object *o);

void ft_uniqueid_thread_stop(ft_thread *t);
void ft_uniqueid_runtime_destroy(ft_runtime *rt);

/* The merge, inside a stop the caller holds (ft_uniqueid_merge is it wrapped in a stop of its own):
 * add every started thread's slots into their objects. With dead, also take every object whose
 * true count is now zero out of the table (its id is released, its bias and FT_OBJ_DEFERRED
 * removed, its count merged: zero) and push it onto dead, for the caller to deallocate after the
 * restart; returns how many. With dead NULL, only merge: objects at zero keep their ids and bias
 * until a merge that can free them. Takes head_mutex, then rt->uniqueid.mutex. */
size_t ft_uniqueid_merge_stopped(ft_runtime *rt, ft_dead_list *dead);

/* Inside a stop the caller holds, after ft_uniqueid_merge_stopped: take obj (which has an id: its
 * bias is not 0) out of per-thread counting for good: its id released, its bias and
 * FT_OBJ_DEFERRED removed. The collector does it to garbage. Takes rt->uniqueid.mutex. */
void ft_uniqueid_release_stopped(ft_runtime *rt, ft_object *obj);

#endif
