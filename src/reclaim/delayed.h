/* reclaim/delayed.h: the state of delayed free and delayed decref (delayed.c).
 *
 * Each thread queues blocks and objects in chunks of items, each with the QSBR goal after which it
 * may run. A thread that stops hands what it could not run to the runtime's queue, with goals that
 * quiescent points alone reach, and marks every started thread's queue due; their safepoints run it
 * (or, with no thread left, ft_runtime_free does). */
#ifndef FTRT_RECLAIM_DELAYED_H
#define FTRT_RECLAIM_DELAYED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ftrt/lock.h"
#include "ftrt/qsbr.h"
#include "thread/stw.h"

struct ft_delayed_chunk;

/* One thread's part (ft_thread.delayed). The owner's only; also touched by the holder of a stop
 * (ft_delayed_process_stopped seals and compacts every thread's queue, the owner being suspended or
 * detached) and, for a thread that vanished in a fork, by the child's survivor. */
typedef struct ft_delayed_thread {
    struct ft_delayed_chunk *head, *tail; /* this thread's items, oldest first */
    uint64_t count, memory;    /* pending since the last advance */
    uint64_t page_memory;      /* retired page bytes since the last advance */
    struct ft_delayed_chunk *unsealed; /* the first item still without a goal (chunk, index), or NULL */
    uint32_t unsealed_at;
} ft_delayed_thread;

/* The runtime's part (ft_runtime.delayed): items left by stopped threads. */
typedef struct ft_delayed_runtime {
    ft_mutex mutex; /* guards head and tail; never held with another of ftrt's locks */
    struct ft_delayed_chunk *head, *tail; /* under mutex; empty while a thread processes the
                                             items it took out */
    /* Whether the queue holds items: written under mutex, read relaxed without it as a hint. False
     * also while a thread has taken the items out; it puts back what is not due, marking every
     * thread's queue due again, so a reader that saw false misses nothing. */
    _Atomic(bool) has_work;
    /* Items run in total, over every queue: any thread adds (relaxed); read relaxed by the stats and
     * by ft_delayed_drain's sole thread. */
    _Atomic(uint64_t) freed;
} ft_delayed_runtime;

void ft_delayed_install_page_hook(ft_runtime *rt);
void ft_delayed_thread_start(ft_thread *t); /* linked: marks its queue due if the runtime's has work */
void ft_delayed_thread_stop(ft_thread *t);
void ft_delayed_hand_over(ft_thread *t); /* move t's queue to the runtime's */
void ft_delayed_seal(ft_thread *t, uint64_t goal); /* t's items without a goal take this one */
/* t (the caller's current thread) advanced to goal: seal, and mark its queue due if it holds any. */
void ft_delayed_advanced(ft_thread *t, uint64_t goal);
bool ft_delayed_runtime_pending(ft_runtime *rt); /* whether the runtime's queue holds items */
/* Run everything queued, in t's queue and the runtime's, and what destructors queue meanwhile, until
 * a round runs nothing. t must be its runtime's only thread (ft_runtime_free's temporary one). */
void ft_delayed_drain(ft_thread *t);
/* Inside a stop the caller holds (every stop runs it as the world restarts, with dead NULL): free
 * every queued block, whatever its goal, since every other thread is quiescent. With dead, also
 * drop every queued reference, as a merge (ft_object_merge, as CPython's collector does: the
 * objects lose their owner's bias), and push the objects that reach zero onto dead for the caller
 * to deallocate after the restart. Without, references stay queued. Items another thread has taken
 * out of the runtime's queue to process (it was stopped inside a destructor) are not seen. Takes
 * head_mutex, then rt->delayed.mutex. */
void ft_delayed_process_stopped(ft_runtime *rt, ft_dead_list *dead);
void ft_delayed_runtime_destroy(ft_runtime *rt);

#endif
