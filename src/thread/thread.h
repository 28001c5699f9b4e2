/* thread/thread.h: the thread-state machine's constants (thread.c, stw.c).
 *
 * A thread state moves between DETACHED and ATTACHED on its own OS thread only; a stop-the-world
 * moves DETACHED states to SUSPENDED and back; ft_thread_stop leaves it STOPPED until the next thread
 * given its index reuses it (internal/types.h says who does what, and under which lock).
 *
 * The pending-work word (ft_thread_head.pending, read inline by ft_safepoint) carries one bit per
 * kind of work another thread can leave for this one. Any thread sets a bit with fetch_or; only the
 * owner clears it, with fetch_and, before doing the work, so work left after the clear sets it again.
 * The bits publish nothing: whoever leaves work publishes it under its own lock or with its own
 * release, and the owner's handler takes that lock or acquire. */
#ifndef FTRT_THREAD_THREAD_H
#define FTRT_THREAD_THREAD_H

#include <stdint.h>

enum ft_thread_state {
    FT_THREAD_DETACHED = 0,
    FT_THREAD_ATTACHED = 1,
    FT_THREAD_SUSPENDED = 2,
    FT_THREAD_STOPPED = 3, /* after ft_thread_stop, until the state is reused for a new thread */
};

#define FT_PENDING_STOP ((uintptr_t)1)    /* a stop-the-world asks this thread to suspend */
#define FT_PENDING_MERGE ((uintptr_t)2)   /* objects wait in this thread's merge queue or outbox */
#define FT_PENDING_DELAYED ((uintptr_t)4) /* delayed frees are due */
#define FT_PENDING_GC ((uintptr_t)8)      /* this thread's allocations crossed the gc threshold */

#endif
