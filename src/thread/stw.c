/* stw.c: stopping and restarting the world of one runtime.
 *
 * Stop (the requester holds stw.mutex from stop to start, so stops of one runtime are serialised):
 *  1. Under the head lock: mark the stop requested, note the requester (the caller's attached thread
 *     state in this runtime, or none), and set countdown to the number of other threads.
 *  2. Repeat until countdown is zero: under the head lock, move every DETACHED thread to SUSPENDED
 *     (counting it) and set FT_PENDING_STOP on every ATTACHED one; then spin for a short while on the
 *     countdown, and wait on the stopped event for at most the re-poll interval. The re-poll catches
 *     threads that detached without seeing the request, and threads slow to reach a safepoint.
 *  3. Mark the world stopped.
 * An attached thread that sees FT_PENDING_STOP (at a safepoint, or when it detaches) suspends itself
 * under the head lock and decrements the countdown; the decrement to zero notifies the event.
 *
 * Start: free every queued delayed block (every other thread is quiescent); then, under the head
 * lock, clear the request, store DETACHED into every other thread (all are SUSPENDED now: those that
 * stopped are gone, those that started during the stop started SUSPENDED) and unpark each one's
 * state word; then release stw.mutex.
 *
 * The requester waits for stw.mutex detached (a thread blocked on another stop is itself stoppable)
 * and waits on the event without detaching (it holds the stop and must not be suspended by it).
 *
 * A stop does not freeze the thread list: a thread suspended inside ft_thread_stop goes on to unlink
 * itself, and a thread that starts links its state (SUSPENDED). So whatever walks the list inside a
 * stop holds the head lock.
 *
 * Cores that run inside a stop (a merge, a clearing, a count) are called both by the public calls,
 * which stop the world for them, and by a caller that already holds the stop (the collector will run
 * several in one): ft_stw_stop_unless_held stops only in the first case. A core never runs a
 * destructor (it may block, stop the world, start threads): objects it finds dead go on a dead list,
 * which its caller deallocates after the restart. */
#include "internal/internal.h"

void ft_stw_suspend_self(ft_thread *t)
{
    ft_runtime *rt = t->rt;
    ft_mutex_lock_internal(&rt->head_mutex);
    if (atomic_load_explicit(&rt->stw.requested, memory_order_relaxed) &&
        atomic_load_explicit(&rt->stw.requester, memory_order_relaxed) != t) {
        atomic_store_explicit(&t->state, FT_THREAD_SUSPENDED, memory_order_release);
        if (atomic_fetch_sub_explicit(&rt->stw.countdown, 1, memory_order_release) == 1)
            ft_event_notify(&rt->stw.stopped);
    } else {
        atomic_store_explicit(&t->state, FT_THREAD_DETACHED, memory_order_release);
    }
    ft_mutex_unlock(&rt->head_mutex);
}

/* The calling OS thread's thread state in rt if it is attached (it becomes the requester), or NULL.
 * Looked up by OS thread rather than through ft_thread_current(), which may name a thread state of
 * another runtime. */
static ft_thread *attached_state_of(ft_runtime *rt, uintptr_t os)
{
    ft_thread *found = NULL;
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t; t = t->next)
        if (t->os_thread == os) {
            if (atomic_load_explicit(&t->state, memory_order_relaxed) == FT_THREAD_ATTACHED)
                found = t;
            break;
        }
    ft_mutex_unlock(&rt->head_mutex);
    return found;
}

/* One scan: suspend detached threads, ask attached ones to stop. Returns whether all are stopped. */
static bool scan_threads(ft_runtime *rt, ft_thread *requester)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t; t = t->next) {
        if (t == requester)
            continue;
        uint32_t s = atomic_load_explicit(&t->state, memory_order_relaxed);
        if (s == FT_THREAD_ATTACHED) {
            atomic_fetch_or_explicit(&t->head.pending, FT_PENDING_STOP, memory_order_relaxed);
        } else if (s == FT_THREAD_DETACHED &&
                   atomic_compare_exchange_strong_explicit(&t->state, &s, FT_THREAD_SUSPENDED,
                                                           memory_order_acq_rel,
                                                           memory_order_relaxed)) {
            atomic_fetch_sub_explicit(&rt->stw.countdown, 1, memory_order_relaxed);
        }
    }
    bool stopped = atomic_load_explicit(&rt->stw.countdown, memory_order_relaxed) == 0;
    ft_mutex_unlock(&rt->head_mutex);
    return stopped;
}

static void wait_for_countdown(ft_runtime *rt)
{
    int64_t spin_until = ft_monotonic_ns() + rt->config.stw_spin_ns;
    do {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&rt->stw.countdown, memory_order_acquire) == 0)
                return;
            ft_cpu_relax();
        }
    } while (ft_monotonic_ns() < spin_until);
    ft_event_wait_timed(&rt->stw.stopped, rt->config.stw_repoll_ns, FT_LOCK_DONT_DETACH);
}

void ft_stw_stop(ft_runtime *rt, const char *reason)
{
    uintptr_t self_os = ft_os_thread_id();
    if (atomic_load_explicit(&rt->stw.owner_os, memory_order_relaxed) == self_os)
        ft_fatal("ft_stop_the_world: the calling thread has already stopped the world of runtime "
                 "%p (stops do not nest)",
                 (void *)rt);
    ft_thread *self = attached_state_of(rt, self_os);
    if (!ft_mutex_trylock(&rt->stw.mutex)) {
        /* Wait detached: another stop in progress must be able to suspend us. */
        if (self)
            ft_detach(self);
        ft_mutex_lock_internal(&rt->stw.mutex);
        if (self)
            ft_attach(self);
    }
    int64_t start = ft_monotonic_ns();
    atomic_store_explicit(&rt->stw.owner_os, self_os, memory_order_relaxed);

    ft_mutex_lock_internal(&rt->head_mutex);
    ft_event_reset(&rt->stw.stopped); /* its notifiers decrement countdown under the head lock */
    atomic_store_explicit(&rt->stw.requester, self, memory_order_relaxed);
    atomic_store_explicit(&rt->stw.countdown, (int32_t)(rt->nthreads - (self ? 1 : 0)),
                          memory_order_relaxed);
    atomic_store_explicit(&rt->stw.requested, true, memory_order_relaxed);
    ft_mutex_unlock(&rt->head_mutex);

    while (!scan_threads(rt, self))
        wait_for_countdown(rt);
    atomic_store_explicit(&rt->stw.world_stopped, true, memory_order_relaxed);

    int64_t stopped = ft_monotonic_ns();
    rt->stw.reason = reason;
    rt->stw.requested_ns = start;
    rt->stw.stopped_ns = stopped;
    uint64_t waited = (uint64_t)(stopped - start);
    atomic_fetch_add_explicit(&rt->stw.count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->stw.total_ns, waited, memory_order_relaxed);
    if (waited > atomic_load_explicit(&rt->stw.max_ns, memory_order_relaxed))
        atomic_store_explicit(&rt->stw.max_ns, waited, memory_order_relaxed);
}

void ft_stop_the_world(ft_runtime *rt)
{
    ft_stw_stop(rt, "host");
}

void ft_start_the_world(ft_runtime *rt)
{
    if (!atomic_load_explicit(&rt->stw.world_stopped, memory_order_relaxed) ||
        atomic_load_explicit(&rt->stw.owner_os, memory_order_relaxed) != ft_os_thread_id())
        ft_fatal("ft_start_the_world: the world of runtime %p was not stopped by the calling "
                 "thread",
                 (void *)rt);
    /* Every other thread is quiescent now: free the blocks they were holding back. References
     * stay queued: their destructors run after the restart. */
    ft_delayed_process_stopped(rt, NULL);
    ft_mutex_lock_internal(&rt->head_mutex);
    ft_thread *requester = atomic_load_explicit(&rt->stw.requester, memory_order_relaxed);
    atomic_store_explicit(&rt->stw.world_stopped, false, memory_order_relaxed);
    atomic_store_explicit(&rt->stw.requested, false, memory_order_relaxed);
    atomic_store_explicit(&rt->stw.requester, NULL, memory_order_relaxed);
    for (ft_thread *t = rt->threads; t; t = t->next) {
        if (t == requester)
            continue;
        if (atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_SUSPENDED)
            ft_fatal("ft_start_the_world: thread state %p of runtime %p ran during the stop",
                     (void *)t, (void *)rt);
        atomic_fetch_and_explicit(&t->head.pending, ~FT_PENDING_STOP, memory_order_relaxed);
        atomic_store_explicit(&t->state, FT_THREAD_DETACHED, memory_order_release);
        ft_parking_lot_unpark_all(&t->state);
    }
    ft_mutex_unlock(&rt->head_mutex);
    /* Recorded under stw.mutex, which a requester outside the runtime needs for its buffer. */
    if (ft_trace_on(rt))
        ft_trace_record_stop(rt, requester, rt->stw.reason, rt->stw.requested_ns,
                             rt->stw.stopped_ns);
    ft_dead_list dead = rt->stw.dead;
    rt->stw.dead = (ft_dead_list){0};
    atomic_store_explicit(&rt->stw.owner_os, 0, memory_order_relaxed);
    ft_mutex_unlock(&rt->stw.mutex);
    if (ft_trace_on(rt))
        ft_trace_flush_due(rt, requester); /* the world runs: write the stop's events if due */
    /* Only a thread attached to rt counts its objects, so only an attached requester leaves any. */
    FT_ASSERT(dead.count == 0 || requester != NULL);
    ft_dead_list_dealloc(&dead);
}

bool ft_stw_held_by_caller(ft_runtime *rt)
{
    /* owner_os holds this OS thread's id only if this thread stored it (relaxed loads see one's own
     * stores), and it is cleared only after world_stopped, by the same thread. */
    return atomic_load_explicit(&rt->stw.world_stopped, memory_order_relaxed) &&
           atomic_load_explicit(&rt->stw.owner_os, memory_order_relaxed) == ft_os_thread_id();
}

bool ft_stw_stop_unless_held(ft_runtime *rt, const char *reason)
{
    if (ft_stw_held_by_caller(rt))
        return false;
    ft_stw_stop(rt, reason);
    return true;
}

void ft_dead_list_push(ft_dead_list *dead, ft_object *o)
{
    FT_ASSERT(atomic_load_explicit(&o->ob_tid, memory_order_relaxed) == 0 && ft_refcount(o) == 0);
    atomic_store_explicit(&o->ob_tid, (uintptr_t)dead->head, memory_order_relaxed);
    dead->head = o;
    dead->count++;
}

size_t ft_dead_list_dealloc(ft_dead_list *dead)
{
    size_t n = dead->count;
    FT_ASSERT(!dead->head || !ft_stw_held_by_caller(ft_object_runtime(dead->head)));
    while (dead->head) {
        ft_object *o = dead->head;
        dead->head = (ft_object *)atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
        atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed); /* merged, as it was */
        ft_object_dealloc(o);
    }
    dead->count = 0;
    return n;
}

bool ft_world_is_stopped(const ft_runtime *rt)
{
    return atomic_load_explicit(&((ft_runtime *)rt)->stw.world_stopped, memory_order_relaxed);
}
