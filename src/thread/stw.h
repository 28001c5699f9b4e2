/* thread/stw.h: the state of stop-the-world (stw.c), the helper that cores running inside a stop use
 * to stop the world only when their caller has not, and the list on which they hand back objects
 * that died inside the stop. */
#ifndef FTRT_THREAD_STW_H
#define FTRT_THREAD_STW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ftrt/lock.h"
#include "ftrt/object.h"
#include "ftrt/runtime.h"

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

/* The runtime's part (ft_runtime.stw). "head" means written under rt->head_mutex. The requester is
 * the OS thread that holds mutex, from ft_stop_the_world to ft_start_the_world; stops of one runtime
 * are serialised by it. */
typedef struct ft_stw_runtime {
    ft_mutex mutex;                /* held by the requester from stop to start */
    /* A stop is under way (from its start to its restart). Written under head; read under head by
     * threads that suspend, start or stop, and relaxed as a hint elsewhere. */
    _Atomic(bool) requested;
    /* Every other thread is suspended or detached (from the end of the stop to its restart).
     * Written by the requester (relaxed: set once the stop is complete, cleared under head at the
     * restart); exact for the requester only, a hint for anyone else. */
    _Atomic(bool) world_stopped;
    /* Threads still to suspend. Set and decremented under head (the decrement by a thread that
     * suspends itself or stops is a release, ordering what it did before the requester's acquire
     * load); read by the spinning requester with acquire, or under head. */
    _Atomic(int32_t) countdown;
    /* The requester's attached thread state in this runtime, or NULL (a requester outside it, or no
     * stop). Written under head; read under head, or relaxed by a thread comparing it with itself. */
    _Atomic(ft_thread *) requester;
    /* The requester's OS thread, or 0. Written by the requester only (relaxed): a thread that reads
     * its own id here is the requester, any other value means it is not. */
    _Atomic(uintptr_t) owner_os;
    /* Set by the decrement of countdown that reaches zero (under head); reset by the requester under
     * head before it counts; waited on (timed, without detaching) by the requester only. */
    ft_event stopped;
    /* Objects that died inside the stop through the requester's own calls into ftrt (a decref whose
     * queue was out of memory), waiting for the restart: ft_start_the_world deallocates them on the
     * requester after the other threads run again. Requester only. */
    ft_dead_list dead;
    /* The stop under way, for its trace event: why (a short static string), when it was requested
     * (stw.mutex taken) and when every thread was stopped. Requester only. */
    const char *reason;
    int64_t requested_ns, stopped_ns;
    /* Stats: written by the requester only (serialised by mutex), relaxed; read relaxed by anyone. */
    _Atomic(uint64_t) count, total_ns, max_ns;
} ft_stw_runtime;

void ft_stw_suspend_self(ft_thread *t); /* a thread that saw FT_PENDING_STOP, instead of DETACHED */

/* ft_stop_the_world with its reason: a short static string that the trace shows ("gc", "qsbr
 * stats", ...; "host" for ft_stop_the_world). */
void ft_stw_stop(ft_runtime *rt, const char *reason);

/* Whether the calling OS thread holds rt's stop (it stopped the world and has not restarted it). */
bool ft_stw_held_by_caller(ft_runtime *rt);

/* Stop rt's world unless the calling OS thread holds its stop already. Returns whether it stopped it
 * now: then, and only then, the caller restarts it when done. So a core that needs the world stopped
 * runs the same way called on its own or inside a caller's stop:
 *     bool stopped = ft_stw_stop_unless_held(rt, "why");
 *     ...work...
 *     if (stopped)
 *         ft_start_the_world(rt); */
bool ft_stw_stop_unless_held(ft_runtime *rt, const char *reason);


void ft_dead_list_push(ft_dead_list *dead, ft_object *o); /* o merged, count zero */
/* Deallocate every object of dead (finalize, dealloc, free) on the caller, which must be attached
 * to their runtime and must not hold its stop; returns how many. */
size_t ft_dead_list_dealloc(ft_dead_list *dead);

#endif
