/* ftrt/qsbr.h: quiescent-state-based reclamation and delayed free.
 *
 * Lock-free readers load pointers to shared memory without taking locks or references. A writer that
 * unlinks such memory cannot free it at once: a reader may still be using it. QSBR answers "when is
 * it safe?" cheaply:
 *
 *  - the runtime has a write sequence, odd, advanced by 2 (ft_qsbr_advance) when memory is retired;
 *  - every attached thread records the sequence it has seen at each quiescent point, a moment at which
 *    it holds no pointer obtained from a lock-free read. ft_safepoint() reports one (a load and a
 *    store; no fence on x86); a detached thread counts as quiescent throughout;
 *  - memory retired with goal g may be freed once every attached thread has recorded a sequence >= g
 *    (ft_qsbr_poll).
 *
 * So a reader may use what it loaded until its next ft_safepoint (or ft_detach, or any call that may
 * reach one), and no longer. ft_stop_the_world is a quiescent point for its caller.
 *
 * Delayed free builds on it: ft_free_delayed(t, p, size) frees ft_malloc memory, and
 * ft_decref_delayed(t, obj) drops a reference, once every reader that could have seen them has moved
 * on. Items wait in per-thread queues and are processed at the thread's safepoints after each of its
 * advances; when the world is stopped (every stop, including the ones ft_qsbr_get_stats and
 * ft_heap_get_stats make, frees all queued blocks as it restarts; references stay queued, since
 * destructors do not run under a stop); and when the thread stops (it advances the sequence, passes
 * its own quiescent point, frees what is due, and hands the rest to a runtime-wide queue, which every
 * started thread then processes at its safepoints until all of it has run; if no thread is left,
 * ft_runtime_free runs it). Goals: an item takes its goal after it is queued, in a batch: the goal
 * of the thread's next advance, or, when the queue is processed first, the next sequence (reached
 * only after someone advances); the queue advances itself once more than 127 items or 1 MiB are
 * pending, or at once for a block over 1 MiB, so memory held back stays bounded. A thread that
 * neither advances nor queues enough to advance keeps its last few items until it calls
 * ft_delayed_process, advances, or stops. */
#ifndef FTRT_QSBR_H
#define FTRT_QSBR_H

#include "object.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Advance the write sequence; returns the new value, a goal reached once every attached thread has
 * passed a quiescent point after this call. Items the calling thread queued for delayed free or
 * decref that have no goal yet take this one. */
FT_API uint64_t ft_qsbr_advance(ft_runtime *rt);

/* A goal without advancing: reached after the next advance by anyone and a quiescent point of every
 * attached thread after that. Cheaper (no shared write) when an advance is bound to come. Call it
 * after unlinking what it guards: it starts with a full fence, which orders the unlink first. */
FT_API uint64_t ft_qsbr_next(ft_runtime *rt);

/* Whether goal has been reached. The caller must be attached (t is its thread state). */
FT_API bool ft_qsbr_poll(ft_thread *t, uint64_t goal);

/* Report a quiescent point now (ft_safepoint does it too). */
static inline void ft_qsbr_quiescent(ft_thread *t)
{
    struct ft_thread_head *h = (struct ft_thread_head *)t;
    atomic_store_explicit(&h->qsbr_seq, atomic_load_explicit(h->qsbr_wr_seq, memory_order_acquire),
                          memory_order_release);
}

/* Free p (from ft_malloc) once no reader can see it. Never fails: if the queue cannot grow (out of
 * memory), the world is stopped and p is freed at once. That stop, like any, is a quiescent point for
 * the caller, and waits for every other attached thread (one blocked without detaching deadlocks
 * it); nothing else here stops the world. */
FT_API void ft_free_delayed(ft_thread *t, void *p, size_t size);

/* Drop a reference to obj once no reader can see it (a reader may still try-incref it meanwhile).
 * Out of memory for the queue, the world is stopped, as for ft_free_delayed, and the reference is
 * dropped at once after the restart (its destructor may run here). */
FT_API void ft_decref_delayed(ft_thread *t, ft_object *obj);

/* Run what is due in t's queue (and in the runtime's queue) now. Dropped references run their
 * destructors here, and a destructor may do anything, stopping the world included. */
FT_API void ft_delayed_process(ft_thread *t);

typedef struct ft_qsbr_stats {
    uint64_t wr_seq, rd_seq;    /* the sequences */
    uint64_t pending_items;     /* in every queue (read with the world stopped) */
    uint64_t pending_bytes;     /* their sizes */
    uint64_t freed_items;       /* processed, in total */
} ft_qsbr_stats;

/* Statistics; stops the world itself unless the caller has already stopped it. So it is a quiescent
 * point for the caller: a pointer it loaded without a reference before the call must not be used
 * after it (the restart frees every queued block). Items a thread has taken out of the runtime's
 * queue to process are not counted. */
FT_API void ft_qsbr_get_stats(ft_runtime *rt, ft_qsbr_stats *out);

#ifdef __cplusplus
}
#endif
#endif
