/* qsbr.c: quiescent-state-based reclamation.
 *
 * Sequences. wr_seq starts at 1 and advances by 2, so it is always odd and never 0 (0 marks an offline
 * slot). Each started thread has a slot, head.qsbr_seq in its thread state, holding the wr_seq it saw
 * at its last quiescent point, or 0 while detached. A goal g is reached when every nonzero slot is
 * >= g; the minimum found is cached in rd_seq (only ever moved forward, by CAS, so a racing poller
 * that computed an older minimum cannot move it back). All comparisons are of signed differences, so
 * they survive the 64-bit sequence wrapping.
 *
 * Why it is safe: a reader loads a pointer while attached and uses it before its next quiescent point.
 * A writer that unlinks the memory and then advances gets goal g = new wr_seq. Any reader that might
 * still hold the pointer has a slot value < g (it reported before the advance, or it is attached with
 * an older value), so the goal is not reached until it reports again, after which it cannot hold the
 * pointer. A thread that detaches sets its slot to 0 (it holds no such pointer while detached) and on
 * attach publishes the current wr_seq with a sequentially consistent store, so a poller either sees it
 * or the thread sees the writer's unlink.
 *
 * Where pollers find the slots. The slot sits in the thread state, so that ft_safepoint's report is a
 * store at a fixed offset from its argument. Pollers scan rt->qsbr.states, every thread state made so
 * far by thread index. States are never freed before the runtime (a stopped thread's state keeps slot
 * 0 and is reused by the next thread given its index), so a poller never reads freed memory. The
 * array is replaced, doubled, only with the world stopped and the head lock held; pollers, which must
 * be attached (or have stopped the world), never see it move. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

#define SEQ_INITIAL 1
#define SEQ_STEP 2
#define INITIAL_SLOTS 8

/* The first entries come with the runtime, so that the first INITIAL_SLOTS threads never need a
 * stop-the-world to grow the array. */
ft_status ft_qsbr_runtime_init(ft_runtime *rt)
{
    atomic_store_explicit(&rt->qsbr.wr_seq, SEQ_INITIAL, memory_order_relaxed);
    atomic_store_explicit(&rt->qsbr.rd_seq, SEQ_INITIAL, memory_order_relaxed);
    rt->qsbr.states = calloc(INITIAL_SLOTS, sizeof *rt->qsbr.states);
    if (!rt->qsbr.states)
        return FT_ENOMEM;
    rt->qsbr.nslots = INITIAL_SLOTS;
    return FT_OK;
}

void ft_qsbr_runtime_destroy(ft_runtime *rt)
{
    for (uint32_t i = 0; i < rt->qsbr.nslots; i++)
        free(atomic_load_explicit(&rt->qsbr.states[i], memory_order_relaxed));
    free(rt->qsbr.states);
    rt->qsbr.states = NULL;
    rt->qsbr.nslots = 0;
}

static uint32_t nslots_locked(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    uint32_t n = rt->qsbr.nslots;
    ft_mutex_unlock(&rt->head_mutex);
    return n;
}

ft_status ft_qsbr_reserve(ft_runtime *rt, uint32_t index)
{
    /* Growers are serialised by stw.mutex (taken by ft_stop_the_world); re-check under it. */
    uint32_t n = nslots_locked(rt);
    if (index < n)
        return FT_OK;
    uint32_t want = n;
    while (want <= index)
        want *= 2;
    ft_thread *_Atomic *grown =
        ft_inject_failure(rt) ? NULL : calloc(want, sizeof *grown);
    if (!grown)
        return FT_ENOMEM;

    ft_stw_stop(rt, "qsbr grow");
    ft_mutex_lock_internal(&rt->head_mutex);
    ft_thread *_Atomic *old = rt->qsbr.states;
    if (rt->qsbr.nslots > index) {
        /* another thread grew it meanwhile */
        old = grown;
    } else {
        for (uint32_t i = 0; i < rt->qsbr.nslots; i++)
            atomic_store_explicit(&grown[i],
                                  atomic_load_explicit(&old[i], memory_order_relaxed),
                                  memory_order_relaxed);
        rt->qsbr.states = grown;
        rt->qsbr.nslots = want;
    }
    ft_mutex_unlock(&rt->head_mutex);
    ft_start_the_world(rt);
    free(old);
    return FT_OK;
}

ft_thread *ft_qsbr_state_at(ft_runtime *rt, uint32_t index)
{
    return atomic_load_explicit(&rt->qsbr.states[index], memory_order_relaxed);
}

void ft_qsbr_publish_state(ft_runtime *rt, ft_thread *t)
{
    atomic_store_explicit(&rt->qsbr.states[t->index], t, memory_order_release);
}

void ft_qsbr_bind(ft_thread *t)
{
    t->head.qsbr_wr_seq = &t->rt->qsbr.wr_seq;
}

void ft_qsbr_attach(ft_thread *t)
{
    atomic_store_explicit(&t->head.qsbr_seq,
                          atomic_load_explicit(&t->rt->qsbr.wr_seq, memory_order_acquire),
                          memory_order_seq_cst);
}

void ft_qsbr_detach(ft_thread *t)
{
    atomic_store_explicit(&t->head.qsbr_seq, 0, memory_order_release);
}

uint64_t ft_qsbr_advance(ft_runtime *rt)
{
    uint64_t goal =
        atomic_fetch_add_explicit(&rt->qsbr.wr_seq, SEQ_STEP, memory_order_acq_rel) + SEQ_STEP;
    ft_trace_instant(rt, FT_TRACE_QSBR_ADVANCE, (int64_t)goal);
    /* The caller's queued delayed items were unlinked before this RMW: it covers them. */
    ft_thread *t = ft_current_thread;
    if (t && t->rt == rt)
        ft_delayed_advanced(t, goal);
    return goal;
}

uint64_t ft_qsbr_next(ft_runtime *rt)
{
    /* Orders the caller's unlink before this load. Without it (x86 lets a load pass an earlier
     * store) the writer could read wr_seq = v while its unlink is not yet visible; someone advances
     * to v + 2; a reader reports v + 2 and then still loads the old pointer, so the goal v + 2 would
     * be reached while the reader holds it. ft_qsbr_advance needs no fence: its RMW releases the
     * unlink to every reader that reads the new sequence. */
    atomic_thread_fence(memory_order_seq_cst);
    return atomic_load_explicit(&rt->qsbr.wr_seq, memory_order_acquire) + SEQ_STEP;
}

bool ft_qsbr_goal_reached(ft_runtime *rt, uint64_t goal)
{
    uint64_t rd = atomic_load_explicit(&rt->qsbr.rd_seq, memory_order_acquire);
    if (!ft_qsbr_seq_before(rd, goal))
        return true;
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t min = atomic_load_explicit(&rt->qsbr.wr_seq, memory_order_acquire);
    for (uint32_t i = 0; i < rt->qsbr.nslots; i++) {
        ft_thread *t = atomic_load_explicit(&rt->qsbr.states[i], memory_order_acquire);
        uint64_t s = t ? atomic_load_explicit(&t->head.qsbr_seq, memory_order_acquire) : 0;
        if (s != 0 && ft_qsbr_seq_before(s, min))
            min = s;
    }
    while (ft_qsbr_seq_before(rd, min) &&
           !atomic_compare_exchange_weak_explicit(&rt->qsbr.rd_seq, &rd, min, memory_order_acq_rel,
                                                  memory_order_acquire))
        ;
    return !ft_qsbr_seq_before(min, goal);
}

bool ft_qsbr_poll(ft_thread *t, uint64_t goal)
{
    if (FT_UNLIKELY(atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_ATTACHED))
        ft_fatal("ft_qsbr_poll: thread state %p is not attached", (void *)t);
    return ft_qsbr_goal_reached(t->rt, goal);
}
