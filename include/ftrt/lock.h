/* ftrt/lock.h: small locks built on the parking lot.
 *
 * ft_mutex      one byte; fast paths inline. Spins briefly, then parks. A waiter that has waited more
 *               than 1 ms gets the lock handed to it directly on unlock (fairness).
 * ft_event      one-shot event (unset -> set; back to unset only by ft_event_reset).
 * ft_once       one-time initialisation; a failed initialiser is retried by the next caller.
 * ft_rmutex     recursive mutex (owner + nesting level).
 * ft_rwmutex    one word, write-preferring reader/writer lock; neither fair nor reentrant.
 * ft_seqlock    sequence lock for small data read optimistically.
 *
 * All of them are zero-initialised: `ft_mutex m = {0};` is an unlocked mutex.
 *
 * Blocking and ftrt threads: a thread attached to a runtime that blocks in ft_mutex_lock (and the
 * other blocking calls here, unless told otherwise) is detached while it is parked, so that a
 * stop-the-world never waits for it; its critical sections are suspended as with ft_detach. */
#ifndef FTRT_LOCK_H
#define FTRT_LOCK_H

#include <stdatomic.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- ft_mutex ---------------------------------------------------------------------------- */

#define FT_MUTEX_UNLOCKED 0
#define FT_MUTEX_LOCKED 1     /* bit 0: held */
#define FT_MUTEX_HAS_PARKED 2 /* bit 1: at least one thread may be parked on the byte */

typedef struct ft_mutex {
    _Atomic(uint8_t) bits; /* LOCKED | HAS_PARKED; changed only by CAS or under the parking-lot bucket */
} ft_mutex;
FT_ABI_OFFSET(ft_mutex, bits, 0); /* read by ft_mutex_lock and ft_mutex_unlock */

typedef enum ft_lock_flags {
    FT_LOCK_DONT_DETACH = 0, /* stay attached while parked (for locks never held across a safepoint) */
    FT_LOCK_DETACH = 1,      /* detach the caller's attached thread state while parked */
} ft_lock_flags;

/* ABI, not API: the slow paths of ft_mutex_lock and ft_mutex_unlock, called only by the inline
 * code below (the ft__ prefix: see ftrt/object.h, "ABI, not API"). */
FT_API void ft__mutex_lock_slow(ft_mutex *m);
FT_API void ft__mutex_unlock_slow(ft_mutex *m);

/* Lock with a timeout (FT_FOREVER, 0 = try once). Returns FT_OK or FT_ETIMEDOUT. */
FT_API ft_status ft_mutex_lock_timed(ft_mutex *m, int64_t timeout_ns, ft_lock_flags flags);

/* Take the mutex if it is free (with or without parked waiters); never waits. */
static inline bool ft_mutex_trylock(ft_mutex *m)
{
    uint8_t v = FT_MUTEX_UNLOCKED;
    if (FT_LIKELY(atomic_compare_exchange_strong_explicit(&m->bits, &v, FT_MUTEX_LOCKED,
                                                          memory_order_acquire,
                                                          memory_order_relaxed)))
        return true;
    while (!(v & FT_MUTEX_LOCKED))
        if (atomic_compare_exchange_weak_explicit(&m->bits, &v, (uint8_t)(v | FT_MUTEX_LOCKED),
                                                  memory_order_acquire, memory_order_relaxed))
            return true;
    return false;
}

/* Lock, detaching the caller's thread state while parked. */
static inline void ft_mutex_lock(ft_mutex *m)
{
    uint8_t expected = FT_MUTEX_UNLOCKED;
    if (FT_UNLIKELY(!atomic_compare_exchange_strong_explicit(&m->bits, &expected, FT_MUTEX_LOCKED,
                                                             memory_order_acquire,
                                                             memory_order_relaxed)))
        ft__mutex_lock_slow(m);
}

/* Unlock. Unlocking a mutex that is not locked is fatal. */
static inline void ft_mutex_unlock(ft_mutex *m)
{
    uint8_t expected = FT_MUTEX_LOCKED;
    if (FT_UNLIKELY(!atomic_compare_exchange_strong_explicit(&m->bits, &expected, FT_MUTEX_UNLOCKED,
                                                             memory_order_release,
                                                             memory_order_relaxed)))
        ft__mutex_unlock_slow(m);
}

static inline bool ft_mutex_is_locked(const ft_mutex *m)
{
    return (atomic_load_explicit(&((ft_mutex *)m)->bits, memory_order_relaxed) & FT_MUTEX_LOCKED) != 0;
}

/* ---- ft_event ---------------------------------------------------------------------------- */

typedef struct ft_event {
    _Atomic(uint8_t) state; /* 0 unset, 1 set, 2 unset with waiters; CAS/exchange only */
} ft_event;

FT_API void ft_event_notify(ft_event *e);
FT_API void ft_event_wait(ft_event *e); /* detaches while parked */
/* Returns true if the event is set on return. */
FT_API bool ft_event_wait_timed(ft_event *e, int64_t timeout_ns, ft_lock_flags flags);
static inline bool ft_event_is_set(const ft_event *e)
{
    return atomic_load_explicit(&((ft_event *)e)->state, memory_order_acquire) == 1;
}
/* Make e unset again, for another round. The caller must rule out, by its own synchronisation, that
 * any thread is waiting on e or notifying it meanwhile (a waiter would not be woken by the next
 * notify, and a late notify would set the new round). */
FT_API void ft_event_reset(ft_event *e);

/* ---- ft_once ----------------------------------------------------------------------------- */

typedef struct ft_once {
    _Atomic(uint8_t) state; /* 0 not done, 1 running, +2 waiters parked, 4 done */
} ft_once;
FT_ABI_OFFSET(ft_once, state, 0); /* read by ft_once_call */

#define FT_ONCE_DONE 4

typedef ft_status (*ft_once_fn)(void *arg);

/* ABI, not API: the slow path of ft_once_call, called only by the inline code below (the ft__
 * prefix: see ftrt/object.h, "ABI, not API"). */
FT_API ft_status ft__once_call_slow(ft_once *o, ft_once_fn fn, void *arg);

/* Run fn exactly once with success. While one caller runs it, the others wait. If fn fails, its
 * status is returned to that caller and the next caller runs fn again. */
static inline ft_status ft_once_call(ft_once *o, ft_once_fn fn, void *arg)
{
    if (FT_LIKELY(atomic_load_explicit(&o->state, memory_order_acquire) == FT_ONCE_DONE))
        return FT_OK;
    return ft__once_call_slow(o, fn, arg);
}

/* ---- ft_rmutex --------------------------------------------------------------------------- */

typedef struct ft_rmutex {
    ft_mutex mutex;
    _Atomic(uintptr_t) owner; /* ft_os_thread_id() of the holder or 0; written by the holder only */
    size_t level;             /* nesting depth; touched only by the holder */
} ft_rmutex;

FT_API void ft_rmutex_lock(ft_rmutex *m);
FT_API bool ft_rmutex_is_owned(const ft_rmutex *m); /* by the calling thread */
/* Unlocking a recursive mutex the caller does not hold is fatal. */
FT_API void ft_rmutex_unlock(ft_rmutex *m);

/* ---- ft_rwmutex -------------------------------------------------------------------------- */

#define FT_RWMUTEX_WRITE_LOCKED 1
#define FT_RWMUTEX_HAS_PARKED 2
#define FT_RWMUTEX_READER_SHIFT 2 /* readers counted in steps of 4 */

typedef struct ft_rwmutex {
    _Atomic(uintptr_t) bits; /* readers << 2 | HAS_PARKED | WRITE_LOCKED; CAS only */
} ft_rwmutex;

FT_API void ft_rwmutex_rlock(ft_rwmutex *rw);
FT_API void ft_rwmutex_runlock(ft_rwmutex *rw);
FT_API void ft_rwmutex_lock(ft_rwmutex *rw);
FT_API void ft_rwmutex_unlock(ft_rwmutex *rw);

/* ---- ft_seqlock -------------------------------------------------------------------------- */

typedef struct ft_seqlock {
    /* Odd while a writer is inside. A writer makes it odd with a CAS (acquire, then a release fence
     * before its data stores) and even again with a release add; readers load it with acquire
     * before the data and relaxed after an acquire fence (lock.c). */
    _Atomic(uint32_t) seq;
} ft_seqlock;

/* Writers exclude each other (they spin on an odd sequence). */
FT_API void ft_seqlock_write_begin(ft_seqlock *s);
FT_API void ft_seqlock_write_end(ft_seqlock *s);
/* Leave the write section without publishing a new version (nothing was changed). */
FT_API void ft_seqlock_write_abandon(ft_seqlock *s);
/* Reader: seq = ft_seqlock_read_begin(s); copy the data with relaxed atomic loads;
 * if (ft_seqlock_read_retry(s, seq)) start over. */
FT_API uint32_t ft_seqlock_read_begin(ft_seqlock *s);
FT_API bool ft_seqlock_read_retry(ft_seqlock *s, uint32_t seq);
/* In a fork child: a sequence left odd by a writer in another thread is reset. */
FT_API void ft_seqlock_after_fork(ft_seqlock *s);

#ifdef __cplusplus
}
#endif
#endif
