/* thread.c: thread states: start and stop, attach and detach, and the safepoint slow path.
 *
 * A thread state belongs to the OS thread that started it, and only that OS thread may use it. It is
 * linked into its runtime's list (under the head lock) from ft_thread_start to ft_thread_stop, and
 * holds a small index from the runtime's index pool for that time.
 *
 * Attach is a CAS DETACHED -> ATTACHED. If the state is SUSPENDED, a stop-the-world holds it: the
 * thread spins briefly (stops are short), then parks on its state word until the world restarts and
 * stores DETACHED. Detach first hands over what the thread holds back for others (its batch of remote
 * frees, its outbox of objects for their owners' merge queues; neither runs a destructor), releases
 * the thread's critical sections, then stores DETACHED, or, if a stop already asked this thread to
 * suspend, suspends it at once (so the requester need not wait for its next 1 ms re-poll).
 *
 * Start takes an index and the thread state kept for it (or a new one), makes its heaps (or adopts a
 * stopped thread's) and registers it for merges; stop drains its freelists, delayed frees, merge
 * queue and outbox (then hands over what destructors run by those merges queued) and abandons its
 * heaps while still attached, because those steps may free objects, then unlinks it and leaves the
 * state for the next thread given its index. Attach and detach also bring the thread's QSBR slot
 * online and offline.
 *
 * The current-thread pointer is process-wide thread-local storage: the thread state most recently
 * attached on this OS thread, cleared when it detaches. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

#define ATTACH_SPINS 200

/* Process-wide (documented in include/ftrt/runtime.h): the calling OS thread's attached state.
 * Initial-exec TLS: one instruction to read, also from the shared library. */
FT_TLS_INITIAL_EXEC _Thread_local ft_thread *ft_current_thread;

ft_thread *ft_thread_current(void)
{
    return ft_current_thread;
}

ft_runtime *ft_thread_runtime(const ft_thread *t)
{
    return t->rt;
}

uint32_t ft_thread_index(const ft_thread *t)
{
    return t->index;
}

static void check_owner(const ft_thread *t, const char *fn)
{
    if (FT_UNLIKELY(atomic_load_explicit(&t->state, memory_order_relaxed) == FT_THREAD_STOPPED))
        ft_fatal("%s: thread state %p was stopped by ft_thread_stop and cannot be used again", fn,
                 (void *)t);
    uintptr_t self = ft_os_thread_id();
    if (FT_UNLIKELY(t->os_thread != self))
        ft_fatal("%s: thread state %p (runtime %p '%s') belongs to OS thread %#lx but was used "
                 "from OS thread %#lx",
                 fn, (void *)t, (void *)t->rt, t->rt->config.name ? t->rt->config.name : "",
                 (unsigned long)t->os_thread, (unsigned long)self);
}

static bool has_state_for(ft_runtime *rt, uintptr_t os_thread)
{
    bool found = false;
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *o = rt->threads; o && !found; o = o->next)
        found = o->os_thread == os_thread;
    ft_mutex_unlock(&rt->head_mutex);
    return found;
}

/* A stopped state is reused whole, except its QSBR slot, which pollers may be reading (it is 0). */
static void reset_state(ft_thread *t)
{
    _Static_assert(offsetof(ft_thread, head.qsbr_seq) == 0, "the QSBR slot leads the thread state");
    memset((char *)t + sizeof t->head.qsbr_seq, 0, sizeof *t - sizeof t->head.qsbr_seq);
}

/* The state for a freshly allocated index: the one a stopped thread left there, or a new one. */
static ft_thread *state_for_index(ft_runtime *rt, uint32_t index)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    ft_thread *t = ft_qsbr_state_at(rt, index);
    ft_mutex_unlock(&rt->head_mutex);
    bool fresh = !t;
    if (fresh) {
        t = ft_inject_failure(rt) ? NULL : aligned_alloc(_Alignof(ft_thread), sizeof *t);
        if (!t)
            return NULL;
        memset(t, 0, sizeof *t);
    } else {
        reset_state(t);
    }
    t->rt = rt;
    t->index = index;
    t->os_thread = ft_os_thread_id();
    atomic_store_explicit(&t->state, FT_THREAD_STOPPED, memory_order_relaxed);
    if (fresh) {
        ft_mutex_lock_internal(&rt->head_mutex);
        ft_qsbr_publish_state(rt, t); /* its slot is 0: pollers skip it until it attaches */
        ft_mutex_unlock(&rt->head_mutex);
    }
    return t;
}

ft_thread *ft_thread_start(ft_runtime *rt)
{
    if (!rt) {
        ft_set_last_error(FT_EINVAL);
        return NULL;
    }
    /* Only this OS thread can make a state for itself, so one check up front is enough. */
    if (has_state_for(rt, ft_os_thread_id())) {
        ft_set_last_error(FT_EEXIST);
        return NULL;
    }
    uint32_t index;
    if (ft_inject_failure(rt) || ft_index_pool_alloc(&rt->thread_indices, &index) != FT_OK) {
        ft_set_last_error(FT_ENOMEM);
        return NULL;
    }
    ft_thread *t = ft_qsbr_reserve(rt, index) == FT_OK ? state_for_index(rt, index) : NULL;
    if (!t || ft_heap_thread_start(t) != FT_OK) {
        ft_index_pool_free(&rt->thread_indices, index);
        ft_set_last_error(FT_ENOMEM);
        return NULL;
    }
    ft_brc_thread_start(t);
    ft_gc_thread_start(t);

    ft_mutex_lock_internal(&rt->head_mutex);
    /* A thread that starts during a stop is held like the others (and not counted). */
    bool stopping = atomic_load_explicit(&rt->stw.requested, memory_order_relaxed);
    atomic_store_explicit(&t->state, stopping ? FT_THREAD_SUSPENDED : FT_THREAD_DETACHED,
                          memory_order_relaxed);
    ft_qsbr_bind(t);
    t->head.tlbc_index = rt->config.tlbc_disabled ? 0 : t->index;
    FT_LIST_PUSH(rt->threads, t);
    rt->nthreads++;
    ft_trace_thread_start_locked(t); /* linked first: ft_trace_start gives linked threads theirs */
    ft_mutex_unlock(&rt->head_mutex);
    ft_delayed_thread_start(t); /* what stopped threads left waits for the threads there are */

    ft_attach(t);
    return t;
}

void ft_thread_stop(ft_thread *t)
{
    check_owner(t, "ft_thread_stop");
    ft_runtime *rt = t->rt;
    if (t->cs_top != 0)
        ft_fatal("ft_thread_stop: thread state %p still has critical section %p open", (void *)t,
                 (void *)(t->cs_top & ~FT_CS_TAGS));
    if (atomic_load_explicit(&rt->stw.requester, memory_order_relaxed) == t)
        ft_fatal("ft_thread_stop: thread state %p has stopped the world of runtime %p and must "
                 "start it again first",
                 (void *)t, (void *)rt);
    /* Tear down attached: draining the merge queue and freelists may free objects. */
    if (atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_ATTACHED)
        ft_attach(t);
    /* Unregister from the merge queues last: until then this thread may still run destructors and
     * count its own objects, and a non-owner that found no owner would merge them concurrently. */
    ft_uniqueid_thread_stop(t);
    ft_freelist_thread_stop(t);
    ft_delayed_thread_stop(t);
    ft_brc_thread_stop(t);
    ft_delayed_hand_over(t); /* what destructors run by those last merges queued */
    ft_heap_thread_stop(t);
    ft_gc_thread_stop(t); /* last: everything above may free GC objects */
    ft_stackref_debug_thread_stop(t); /* after the destructors above, which may close some */
    ft_detach(t);

    ft_mutex_lock_internal(&rt->head_mutex);
    /* Counted by a stop in progress but not suspended: nobody else will count it now. */
    if (atomic_load_explicit(&rt->stw.requested, memory_order_relaxed) &&
        atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_SUSPENDED &&
        atomic_fetch_sub_explicit(&rt->stw.countdown, 1, memory_order_release) == 1)
        ft_event_notify(&rt->stw.stopped);
    FT_LIST_REMOVE(rt->threads, t);
    rt->nthreads--;
    ft_trace_buffer *trace = ft_trace_thread_take_locked(t);
    atomic_fetch_add_explicit(&rt->reftotal,
                              atomic_load_explicit(&t->reftotal, memory_order_relaxed),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->heaps.remote_frees,
                              atomic_load_explicit(&t->heap.remote_frees, memory_order_relaxed),
                              memory_order_relaxed);
    atomic_store_explicit(&t->state, FT_THREAD_STOPPED, memory_order_relaxed);
    ft_mutex_unlock(&rt->head_mutex);
    if (trace)
        ft_trace_buffer_close(trace); /* writes what it still holds */

    /* The state stays in rt->qsbr.states for the next thread given this index. */
    ft_index_pool_free(&rt->thread_indices, t->index);
}

static void wait_while_suspended(ft_thread *t)
{
    for (int i = 0; i < ATTACH_SPINS; i++) {
        if (atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_SUSPENDED)
            return;
        ft_cpu_relax();
    }
    uint32_t suspended = FT_THREAD_SUSPENDED;
    ft_parking_lot_park(&t->state, &suspended, sizeof suspended, FT_FOREVER, NULL, NULL);
}

void ft_attach(ft_thread *t)
{
    check_owner(t, "ft_attach");
    for (;;) {
        uint32_t s = FT_THREAD_DETACHED;
        if (atomic_compare_exchange_weak_explicit(&t->state, &s, FT_THREAD_ATTACHED,
                                                  memory_order_acquire, memory_order_relaxed))
            break;
        if (s == FT_THREAD_ATTACHED)
            ft_fatal("ft_attach: thread state %p is already attached", (void *)t);
        if (s == FT_THREAD_SUSPENDED) {
            if (atomic_load_explicit(&t->rt->stw.owner_os, memory_order_relaxed) == t->os_thread)
                ft_fatal("ft_attach: thread state %p cannot attach: its own OS thread has stopped "
                         "the world of runtime %p (it would wait for itself forever)",
                         (void *)t, (void *)t->rt);
            wait_while_suspended(t);
        }
    }
    ft_qsbr_attach(t);
    ft_current_thread = t;
    if (t->cs_top != 0)
        ft_critical_section_resume(t);
}

void ft_detach(ft_thread *t)
{
    check_owner(t, "ft_detach");
    if (atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_ATTACHED)
        ft_fatal("ft_detach: thread state %p is not attached", (void *)t);
    ft_heap_flush_remote(t);
    ft_brc_thread_detach(t);
    if (ft_critical_section_active_top(t))
        ft_critical_section_suspend_all(t);
    if (ft_current_thread == t)
        ft_current_thread = NULL;
    ft_qsbr_detach(t);
    if (atomic_load_explicit(&t->head.pending, memory_order_relaxed) & FT_PENDING_STOP) {
        atomic_fetch_and_explicit(&t->head.pending, ~FT_PENDING_STOP, memory_order_relaxed);
        ft_stw_suspend_self(t);
        return;
    }
    atomic_store_explicit(&t->state, FT_THREAD_DETACHED, memory_order_release);
}

void ft__safepoint_slow(ft_thread *t)
{
    uintptr_t pending = atomic_load_explicit(&t->head.pending, memory_order_relaxed);
    if (pending & FT_PENDING_STOP) {
        /* ft_detach sees the bit and suspends; ft_attach waits for the world to restart. */
        ft_detach(t);
        ft_attach(t);
    }
    ft_runtime *rt = t->rt;
    if (pending & FT_PENDING_MERGE) {
        ft_trace_begin(rt, FT_TRACE_BRC_MERGE);
        ft_brc_merge(t);
        ft_trace_end(rt, FT_TRACE_BRC_MERGE);
    }
    if (pending & FT_PENDING_DELAYED) {
        ft_trace_begin(rt, FT_TRACE_QSBR_PROCESS);
        ft_delayed_process(t);
        ft_trace_end(rt, FT_TRACE_QSBR_PROCESS);
    }
    if (pending & FT_PENDING_GC)
        ft_gc_collect_scheduled(t);
    if (ft_trace_on(rt))
        ft_trace_flush_due(rt, t); /* the world runs and t holds no internal mutex here */
}
