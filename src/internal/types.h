/* internal/types.h: ftrt's internal types, and the map of the whole library.
 *
 * ftrt is CPython's free-threaded memory and concurrency core as a library. The host owns its
 * objects' layouts and its evaluation loop; ftrt owns counting, reclaiming, collecting, locking and
 * stopping the world. All state lives in an ft_runtime; the only process-wide state is the parking
 * lot (keyed by address), the calling OS thread's current ft_thread pointer and last error, and the
 * fatal handler.
 *
 * Layers, bottom up, one folder each under src/ (docs/architecture.md draws who calls whom). Each file
 * opens with its own algorithm and invariants; each layer's per-thread and per-runtime state is
 * defined in its own header, and the two structs below only compose them.
 *
 *   platform/  futex wait/wake, monotonic clock, page memory; the thread id is inline in
 *              include/ftrt/platform.h (the TLS base register)
 *   sync/      parking_lot.c (wait queues keyed by address: the slow path of every lock), lock.c
 *              (ft_mutex, event, once, recursive, reader/writer, seqlock); sync.h
 *   thread/    fatal.c (status strings, last error, fatal handler), index_pool.c (smallest-first
 *              indices), runtime.c, thread.c (start/stop, attach/detach, safepoints), stw.c
 *              (stop-the-world; stw.h), critical_section.c (per-object critical sections)
 *   heap/      page.c, heap.c: segments and pages, per-thread heaps, abandonment, walking; heap.h
 *   object/    object.c (allocation, biased refcounting, try-incref, resurrection, dealloc), brc.c
 *              (merge queues; brc.h), freelist.c (freelist.h), uniqueid.c (unique ids and
 *              per-thread refcounts; uniqueid.h), stackref_debug.c (the stackref table of
 *              FTRT_STACKREF_DEBUG; stackref_debug.h)
 *   reclaim/   qsbr.c (sequences, slots, polling; qsbr.h), delayed.c (delayed free and decref, the
 *              heap's page-reuse hook; delayed.h)
 *   gc/        gc.c (the cycle collector: counting, scheduling, collections; gc.h), introspect.c
 *              (the gc module's listings, freeze, garbage, callbacks, roots), weakref.c
 *   lib/       tlbc.c (thread-local code copies; tlbc.h), dict.c (a concurrent dictionary)
 *   trace/     trace.c (Chrome trace events of stops, collections and safepoint work; trace.h)
 *
 * Thread states. Only the owner moves its state between ATTACHED and DETACHED. A stop-the-world
 * moves DETACHED threads to SUSPENDED (by CAS, under the runtime's head lock) and every SUSPENDED
 * thread back to DETACHED when it ends; an attached thread that sees the stop request suspends
 * itself (ATTACHED -> SUSPENDED, under the head lock). A SUSPENDED thread that wants to attach parks on
 * its state word until the world restarts. ft_thread_stop leaves a state STOPPED; it keeps its memory
 * (in rt->qsbr.states) until the next thread given its index resets and reuses it.
 *
 * Stop-the-world accounting. When a stop begins, countdown = the number of threads other than the
 * requester. Each of them is counted exactly once, by whoever moves it to SUSPENDED: the requester
 * (for a detached thread) or the thread itself (at a safepoint or on detach). A thread that stops
 * while counted-but-not-suspended decrements it itself; a thread that starts during a stop starts
 * SUSPENDED and is not counted. The decrement that reaches zero notifies the requester's event.
 *
 * Lock order (docs/architecture.md has the table with what each mutex guards). Every internal
 * mutex is taken with ft_mutex_lock_internal, without detaching, and none is held across a
 * safepoint, a blocking call or host code. A thread takes a mutex only while every mutex it holds is
 * on an earlier line; mutexes on one line are never held together:
 *   1  host and object mutexes (critical sections), a code buffer's ft_tlbc.mutex: their holders
 *      may stop the world (a destructor, or an out-of-memory path of ft_free_delayed)
 *   2  rt->stw.mutex (the requester, from stop to restart)
 *   3  rt->head_mutex
 *   4  rt->uniqueid.mutex, rt->heaps.mutex, rt->tlbc.mutex, rt->delayed.mutex, each BRC bucket's
 *      mutex, rt->thread_indices.mutex, rt->gc.mutex, rt->gc.weakref_locks[*],
 *      rt->stackref_debug.mutex, rt->trace.mutex
 *   5  parking-lot bucket locks (inside every lock's slow path and every event)
 */
#ifndef FTRT_INTERNAL_TYPES_H
#define FTRT_INTERNAL_TYPES_H

#include <stdatomic.h>

#include "ftrt/lock.h"
#include "ftrt/object.h"
#include "ftrt/runtime.h"
#include "gc/gc.h"
#include "heap/heap.h"
#include "lib/tlbc.h"
#include "object/brc.h"
#include "object/freelist.h"
#include "object/stackref_debug.h"
#include "object/uniqueid.h"
#include "reclaim/delayed.h"
#include "reclaim/qsbr.h"
#include "thread/index_pool.h"
#include "thread/stw.h"
#include "thread/thread.h"
#include "trace/trace.h"

/* Thread states live as long as their runtime: ft_thread_stop leaves a state in rt->qsbr.states, and
 * the next thread given the same index reuses it, so QSBR pollers may read any state's qsbr_seq
 * without a lock. Reuse zeroes everything after head.qsbr_seq (see reset_state in thread.c). Each
 * layer's part is defined in the layer's header. */
struct ft_thread {
    _Alignas(64) struct ft_thread_head head; /* first: the public inline functions read it */
    _Atomic(uint32_t) state;    /* enum ft_thread_state; transitions as in the comment at the top */
    ft_runtime *rt;             /* immutable */
    uintptr_t os_thread;        /* ft_os_thread_id() of the owner; immutable */
    uint32_t index;             /* from rt->thread_indices; immutable while started */
    uintptr_t cs_top;           /* innermost critical section, tagged; owner thread only */
    ft_thread *prev, *next;     /* rt->threads list; under rt->head_mutex */
    ft_heap_thread heap;        /* heap/heap.h */
    ft_brc_thread brc;          /* object/brc.h */
    ft_freelist_thread freelist; /* object/freelist.h */
    ft_uniqueid_thread uniqueid; /* object/uniqueid.h */
    ft_delayed_thread delayed;  /* reclaim/delayed.h */
    ft_gc_thread gc;            /* gc/gc.h */
    ft_trace_thread trace;      /* trace/trace.h */
    _Atomic(int64_t) reftotal;  /* debug reference total: owner adds, anyone reads (relaxed) */
};

_Static_assert(offsetof(struct ft_thread, head) == 0, "the inline fast paths cast ft_thread * to "
                                                      "struct ft_thread_head *");

struct ft_runtime {
    ft_config config;        /* immutable after ft_runtime_new; config.name points at name_copy */
    char *name_copy;         /* owned copy of the configured name, or NULL; immutable */
    ft_mutex head_mutex;     /* guards threads, nthreads and the stw fields marked "head" */
    ft_thread *threads;      /* started thread states; head */
    uint32_t nthreads;       /* head */
    ft_index_pool thread_indices; /* its own lock */
    ft_stw_runtime stw;           /* thread/stw.h */
    ft_heap_runtime heaps;        /* heap/heap.h */
    ft_brc_bucket brc[FT_BRC_BUCKETS]; /* object/brc.h */
    ft_uniqueid_runtime uniqueid; /* object/uniqueid.h */
    ft_qsbr_runtime qsbr;         /* reclaim/qsbr.h */
    ft_delayed_runtime delayed;   /* reclaim/delayed.h */
    ft_tlbc_runtime tlbc;         /* lib/tlbc.h */
    ft_gc_runtime gc;             /* gc/gc.h */
    ft_stackref_debug_runtime stackref_debug; /* object/stackref_debug.h (FTRT_STACKREF_DEBUG) */
    ft_trace_runtime trace;       /* trace/trace.h */
    /* Debug builds: the reference totals of stopped threads, of callers that are not attached, and
     * of per-thread counts as they are merged; any thread adds (relaxed), ft_runtime_reftotal reads
     * (under head_mutex, with every started thread's own total). */
    _Atomic(int64_t) reftotal;
    /* Test hook (ft_debug_fail_allocation): the allocation that fails when it reaches 0, or -1.
     * Any thread decrements it (relaxed): a test arms it while no other thread allocates. */
    _Atomic(int64_t) fail_countdown;
    /* Test hook (debug builds): called by a non-owner's decref of an object of this runtime after
     * its subtract took a biased count below zero and before it settles (object.c), so that a test
     * can run other threads' steps inside that window. Set while no thread counts objects. */
    void (*decref_window_hook)(void *arg);
    void *decref_window_arg;
};

#endif
