/* thread/stw.h: the state of stop-the-world (stw.c). */
#ifndef FTRT_THREAD_STW_H
#define FTRT_THREAD_STW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ftrt/lock.h"
#include "ftrt/object.h"
#include "ftrt/runtime.h"

/* The runtime's part (ft_runtime.stw). "head" means written under rt->head_mutex. */
typedef struct ft_stw_runtime {
    ft_mutex mutex;                /* held by the requester from stop to start */
    _Atomic(bool) requested;       /* written under head; read relaxed as a hint */
    _Atomic(bool) world_stopped;   /* written by the requester (relaxed); exact for the requester
                                      only */
    _Atomic(int32_t) countdown;    /* threads still to suspend; written under head, read by the
                                      spinning requester (acquire) */
    _Atomic(ft_thread *) requester; /* the attached requester or NULL; written under head */
    _Atomic(uintptr_t) owner_os;   /* OS thread that holds the stop; written by it only */
    ft_event stopped;              /* notified by the decrement that reaches zero */
    _Atomic(uint64_t) count, total_ns, max_ns; /* stats; written by the requester, relaxed */
} ft_stw_runtime;

void ft_stw_suspend_self(ft_thread *t); /* a thread that saw FT_PENDING_STOP, instead of DETACHED */

/* Whether the calling OS thread holds rt's stop (it stopped the world and has not restarted it). */
bool ft_stw_held_by_caller(ft_runtime *rt);

/* Stop rt's world unless the calling OS thread holds its stop already. Returns whether it stopped it
 * now: then, and only then, the caller restarts it when done. So a core that needs the world stopped
 * runs the same way called on its own or inside a caller's stop:
 *     bool stopped = ft_stw_stop_unless_held(rt);
 *     ...work...
 *     if (stopped)
 *         ft_start_the_world(rt); */
bool ft_stw_stop_unless_held(ft_runtime *rt);

/* Objects that a core running inside a stop found dead (count zero), handed back to its caller: a
 * destructor may do anything (block, stop the world, start threads), so none runs inside a stop, and
 * the caller deallocates them after the restart. The list is threaded through the objects' ob_tid
 * words: a dead object is merged first (ob_tid 0, the whole count, zero, in ob_ref_shared), and
 * nothing else reads the word of an object that no reference reaches any more (the stop made every
 * other thread pass a quiescent point after its last reference went; the heap links freed blocks
 * through the same word, also with atomic stores). So pushing never allocates and cannot fail. */
typedef struct ft_dead_list {
    ft_object *head; /* the last object pushed; the caller's, unshared */
    size_t count;
} ft_dead_list;

void ft_dead_list_push(ft_dead_list *dead, ft_object *o); /* o merged, count zero */
/* Deallocate every object of dead (finalize, dealloc, free) on the caller, which must be attached
 * to their runtime and must not hold its stop; returns how many. */
size_t ft_dead_list_dealloc(ft_dead_list *dead);

#endif
