/* ftrt/runtime.h: runtimes, thread states, safepoints and stop-the-world.
 *
 * An ft_runtime holds all of ftrt's state; several runtimes live side by side in one process and never
 * see each other. An OS thread takes part in a runtime through an ft_thread, created on that OS thread
 * by ft_thread_start() and stopped by ft_thread_stop() on the same OS thread (its memory stays with the
 * runtime and is reused by a later thread).
 *
 * A thread state is ATTACHED (it may touch managed state and must reach ft_safepoint() regularly),
 * DETACHED (it promises not to, e.g. around a blocking call) or SUSPENDED (it is held by a
 * stop-the-world). Only the thread itself moves between ATTACHED and DETACHED; a stop-the-world moves
 * DETACHED threads to SUSPENDED and back.
 *
 *     ft_runtime *rt = ft_runtime_new(NULL);
 *     ft_thread *t = ft_thread_start(rt);      // attached on return
 *     for (;;) { work(); ft_safepoint(t); }    // a quiescent report and a relaxed load
 *     ft_detach(t); blocking_io(); ft_attach(t);
 *     ft_thread_stop(t);
 *     ft_runtime_free(rt);
 */
#ifndef FTRT_RUNTIME_H
#define FTRT_RUNTIME_H

#include <stdatomic.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ft_runtime ft_runtime;
typedef struct ft_thread ft_thread;

typedef struct ft_config {
    const char *name;        /* shown in fatal messages and stats; may be NULL */
    int64_t stw_repoll_ns;   /* how long a stop-the-world waits before re-polling; default 1 ms */
    int64_t stw_spin_ns;     /* how long it spins before it parks; default 20 us */
    bool tlbc_disabled;      /* every thread shares the original code (ftrt/tlbc.h); default false,
                                or true when the environment has FTRT_TLBC=0 */
    /* ftrt's expensive internal checks (a recount of every page's lists after each heap walk and at
     * teardown): on by default in a debug build of ftrt (FTRT_DEBUG), where they run; other builds
     * ignore it. FTRT_EXPENSIVE_CHECKS=0 or 1 in the environment sets the default. */
    bool expensive_checks;
    /* The collector's marking workers (ftrt/gc.h, "Parallel marking"): at most this many threads
     * walk objects while a collection has the world stopped, the collecting thread included. The
     * helpers are threads the runtime starts the first time a collection is big enough to use them
     * and keeps until ft_runtime_free. Default: the number of online CPUs, at most 8, or
     * FTRT_GC_WORKERS from the environment; 1 marks on the collecting thread alone. 1 to 16. */
    int gc_workers;
    /* A collection takes one more worker per this many objects on the pages it walks (fewer objects
     * than that per worker, and the helpers cost more than they save). 0: ftrt's choice (65536).
     * FTRT_GC_OBJECTS_PER_WORKER from the environment sets the default (1: always every worker, to
     * test parallel marking on small heaps). */
    int64_t gc_objects_per_worker;
    /* A path: record a trace (ftrt/trace.h) from the runtime's creation, written to this file by
     * ft_runtime_free. NULL (the default): no trace. Read by ft_runtime_new only. */
    const char *trace;
} ft_config;

/* Fill cfg with the defaults. */
FT_API void ft_config_init(ft_config *cfg);

/* A new runtime (cfg may be NULL for the defaults), or NULL with ft_last_error() set: FT_EINVAL,
 * FT_ENOMEM, or ft_trace_start's error when cfg->trace names a file (ftrt/trace.h). */
FT_API ft_runtime *ft_runtime_new(const ft_config *cfg);

/* Free a runtime. FT_EBUSY, with nothing freed, while any thread is still started or the world is
 * stopped; FT_EINVAL for NULL. First it runs the delayed frees and decrefs that stopped threads left
 * (ftrt/qsbr.h): in a thread state of the calling OS thread that it starts and stops for that, so
 * their destructors run as on any attached thread (ft_thread_current() is that state meanwhile; the
 * caller's own current thread, if any, is current again on return). FT_ENOMEM, with nothing freed,
 * if that thread state cannot be made; FT_EBUSY if a destructor leaves a thread started. A trace
 * still recording (ftrt/trace.h) is written last: FT_EIO if that failed, with the runtime freed. */
FT_API ft_status ft_runtime_free(ft_runtime *rt);

/* Start a thread state for the calling OS thread; it is attached on return. NULL with
 * ft_last_error() = FT_EEXIST if this OS thread already has a thread state in rt, FT_ENOMEM if out of
 * memory, FT_EINVAL if rt is NULL. A thread that starts while the world is stopped waits here until
 * it restarts. The first start of a thread whose index is past the runtime's array of thread states
 * (8 entries, doubled as needed) stops the world to grow it. */
FT_API ft_thread *ft_thread_start(ft_runtime *rt);

/* Stop the calling OS thread's thread state (attached or detached); t must not be used again. A
 * detached state is attached first (its teardown may free objects), so during a stop this waits for
 * the restart. Fatal if called from another OS thread, with a critical section still open, or while
 * this thread has the world stopped. Its teardown runs the destructors of the objects its delayed
 * drops and merges free (which may do anything, stopping the world included). The memory stays
 * with rt and is reused by the next thread given the same index. */
FT_API void ft_thread_stop(ft_thread *t);

/* Detach: the thread may block; it no longer delays a stop-the-world. Its critical sections are
 * suspended (their mutexes released). */
FT_API void ft_detach(ft_thread *t);

/* Attach again: waits while the world is stopped, then re-locks the top critical section. */
FT_API void ft_attach(ft_thread *t);

/* The thread state attached on the calling OS thread, or NULL. Process-wide thread-local. An OS
 * thread may have thread states in several runtimes and may attach more than one at a time; this is
 * then the one attached most recently (detaching it clears the pointer). Blocking lock calls detach
 * only this one. */
FT_API ft_thread *ft_thread_current(void);

FT_API ft_runtime *ft_thread_runtime(const ft_thread *t);

/* The thread's small index, unique among the runtime's started threads and smallest-first: later
 * layers index per-thread arrays with it. */
FT_API uint32_t ft_thread_index(const ft_thread *t);

/* ---- safepoints ---------------------------------------------------------------------------- */

/* The first member of every ft_thread; the rest is private. */
struct ft_thread_head {
    /* The write sequence this thread saw at its last quiescent point, or 0 while detached (its QSBR
     * slot, kept here so a quiescent report needs no pointer load). Written by the owner (release;
     * seq_cst when it attaches), read by pollers (acquire). */
    _Atomic(uint64_t) qsbr_seq;
    /* Work other threads left for this one, a bit per kind (src/thread/thread.h): set with fetch_or
     * by any thread, cleared with fetch_and by the owner; ft_safepoint tests it for zero. */
    _Atomic(uintptr_t) pending;
    const _Atomic(uint64_t) *qsbr_wr_seq; /* the runtime's write sequence; immutable */
    /* Per-thread reference counts by unique id - 1 (ftrt/uniqueid.h). Written by the owner, and by
     * a merge with the world stopped (it adds the slots into their objects and zeroes them). */
    intptr_t *uniqueid_counts;
    size_t uniqueid_size;      /* entries in uniqueid_counts; owner */
    size_t tlbc_index;     /* the copy of code this thread uses (ftrt/tlbc.h); immutable */
};
/* Read by ft_safepoint, the per-thread increfs (ftrt/uniqueid.h) and ft_tlbc_get (ftrt/tlbc.h). */
FT_ABI_OFFSET(struct ft_thread_head, qsbr_seq, 0);
FT_ABI_OFFSET(struct ft_thread_head, pending, 8);
FT_ABI_OFFSET(struct ft_thread_head, qsbr_wr_seq, 16);
FT_ABI_OFFSET(struct ft_thread_head, uniqueid_counts, 24);
FT_ABI_OFFSET(struct ft_thread_head, uniqueid_size, 32);
FT_ABI_OFFSET(struct ft_thread_head, tlbc_index, 40);

/* ABI, not API: the slow path of ft_safepoint, called only by the inline code below (the ft__
 * prefix: see ftrt/object.h, "ABI, not API"). */
FT_API void ft__safepoint_slow(ft_thread *t);

/* A quiescent point (see ftrt/qsbr.h), and a chance for pending work to run: a stop-the-world, merges
 * of objects other threads dropped, due delayed frees (the destructors these run may do anything,
 * stopping the world included). An attached thread must call it regularly (in loops, at calls); a
 * stop waits for every attached thread to get here. The common case is a load and a store to the
 * thread's own cache line, and a relaxed load of the pending word. */
static inline void ft_safepoint(ft_thread *t)
{
    struct ft_thread_head *h = (struct ft_thread_head *)t;
    atomic_store_explicit(&h->qsbr_seq, atomic_load_explicit(h->qsbr_wr_seq, memory_order_acquire),
                          memory_order_release);
    if (FT_UNLIKELY(atomic_load_explicit(&h->pending, memory_order_relaxed) != 0))
        ft__safepoint_slow(t);
}

/* ---- stop-the-world ------------------------------------------------------------------------ */

/* Stop every other thread of rt at a safepoint (or detached) and return when they all are. The
 * caller is either a thread attached to rt, which keeps running, or a thread outside rt. Stops of one
 * runtime are serialised; stops of different runtimes are independent. Nesting is fatal (the calls
 * that stop the world for their own work, such as ft_qsbr_get_stats or ft_uniqueid_merge, run
 * inside the caller's stop instead). A stop is a quiescent point for its caller, and an attached
 * thread that blocks without detaching (in a lock ftrt does not know) holds it up forever;
 * docs/reclamation.md lists the calls that may stop the world. */
FT_API void ft_stop_the_world(ft_runtime *rt);

/* Let the stopped threads run again. Must be called by the thread that stopped the world. */
FT_API void ft_start_the_world(ft_runtime *rt);

/* Whether rt's world is stopped now (exact only for the thread that stopped it). */
FT_API bool ft_world_is_stopped(const ft_runtime *rt);

typedef struct ft_runtime_stats {
    uint64_t stw_count;        /* stops completed */
    uint64_t stw_total_ns;     /* time spent waiting for threads to stop */
    uint64_t stw_max_ns;       /* the longest such wait */
    uint32_t threads;          /* thread states started now */
} ft_runtime_stats;

FT_API void ft_runtime_get_stats(ft_runtime *rt, ft_runtime_stats *out);

/* ---- fork ------------------------------------------------------------------------------------- */

/* In the child after fork(): t is the only thread that survived. Every other thread state is
 * stopped in place (its QSBR slot taken offline, so it no longer holds goals back; its heap
 * abandoned for adoption; its merge queue and per-thread counts dropped), and the runtime's internal
 * locks are reset. */
FT_API void ft_runtime_after_fork_child(ft_runtime *rt, ft_thread *t);

/* ---- debugging and testing ------------------------------------------------------------------- */

/* The runtime's reference total: the sum of the reference counts of rt's live mortal objects, over
 * every thread (stopped ones included), so it returns to its start once every object is freed and a
 * leak shows as what is left. Per-thread references (ftrt/uniqueid.h) count when a merge, or their
 * thread's stop, adds them into their objects. Kept only by code built with FTRT_DEBUG. */
FT_API int64_t ft_runtime_reftotal(ft_runtime *rt);

/* Make the nth allocation site reached from now on (0 = the next one) in rt fail once as if out of
 * memory; -1 cancels. For tests of failure paths. */
FT_API void ft_debug_fail_allocation(ft_runtime *rt, int64_t nth);

#ifdef __cplusplus
}
#endif
#endif
