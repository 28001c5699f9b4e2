/* reclaim/qsbr.h: the state of quiescent-state-based reclamation (qsbr.c).
 *
 * The runtime keeps a write sequence, advanced by 2 by writers that retire memory, and a cached lower
 * bound of every thread's last seen sequence. Each thread's own sequence (its slot) sits in
 * ft_thread_head.qsbr_seq, where the inline safepoint writes it (the owner stores it with release,
 * seq_cst when it attaches, 0 when it detaches; pollers load it with acquire). The array of thread
 * states, by thread index, is what pollers scan. */
#ifndef FTRT_RECLAIM_QSBR_H
#define FTRT_RECLAIM_QSBR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ftrt/qsbr.h"

/* The runtime's part (ft_runtime.qsbr). */
typedef struct ft_qsbr_runtime {
    /* Odd; advanced by 2 with fetch_add (acq_rel: it releases the advancer's unlinks to every thread
     * that reads the new value) by any thread, attached or not; read with acquire by every safepoint
     * and poll, and by ft_qsbr_next after a seq_cst fence. Its own cache line: every thread reads it
     * at every safepoint. */
    _Alignas(64) _Atomic(uint64_t) wr_seq;
    /* A lower bound of every attached thread's qsbr_seq, cached by pollers: only raised, with a CAS
     * (relaxed: a stale value only makes a poll scan again). Its own cache line. */
    _Alignas(64) _Atomic(uint64_t) rd_seq;
    /* Every thread state made so far, by thread index (NULL: index never used). The array is
     * replaced, doubled, only with the world stopped and head_mutex held, so pollers, which are
     * attached or hold the stop, read the pointer without a lock; an entry is set once, under
     * head_mutex, with release (pollers load it with acquire, without a lock). */
    ft_thread *_Atomic *states;
    uint32_t nslots; /* entries in states; changed like the array, read by pollers like it or under
                        head_mutex */
} ft_qsbr_runtime;

/* Whether sequence a comes before b, for sequences that may wrap. */
static inline bool ft_qsbr_seq_before(uint64_t a, uint64_t b)
{
    return (int64_t)(a - b) < 0;
}

ft_status ft_qsbr_runtime_init(ft_runtime *rt);
void ft_qsbr_runtime_destroy(ft_runtime *rt);
/* Make sure states has an entry for index (before the thread is linked): growing it stops the
 * world, so the caller must not hold the stop. */
ft_status ft_qsbr_reserve(ft_runtime *rt, uint32_t index);
ft_thread *ft_qsbr_state_at(ft_runtime *rt, uint32_t index);  /* head_mutex held */
void ft_qsbr_publish_state(ft_runtime *rt, ft_thread *t);      /* head_mutex held */
void ft_qsbr_bind(ft_thread *t);
void ft_qsbr_attach(ft_thread *t);
void ft_qsbr_detach(ft_thread *t);
bool ft_qsbr_goal_reached(ft_runtime *rt, uint64_t goal); /* attached caller, or the stop's holder */

#endif
