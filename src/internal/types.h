/* internal/types.h: ftrt's internal types, and the map of the whole library.
 *
 * ftrt is CPython's free-threaded memory and concurrency core as a library. The host owns its
 * objects' layouts and its evaluation loop; ftrt owns counting, reclaiming, collecting, locking and
 * stopping the world. All state lives in an ft_runtime; the only process-wide state is the parking
 * lot (keyed by address), the calling OS thread's current ft_thread pointer and last error, and the
 * fatal handler.
 *
 * Layers, bottom up (each file opens with its own algorithm and invariants):
 *
 *   platform/        futex wait/wake, monotonic clock, yield; the thread id is inline in
 *                    include/ftrt/platform.h (the TLS base register)
 *   parking_lot.c    wait queues keyed by address: the slow path of every lock
 *   lock.c           ft_mutex (1 byte), event, once, recursive, reader/writer, seqlock
 *   thread.c         thread states: start/stop, attach/detach, safepoints
 *   stw.c            stop-the-world and start-the-world
 *   critical_section.c  per-object critical sections, suspended on detach
 *   runtime.c        ft_runtime and its configuration
 *   index_pool.c     smallest-first indices (thread indices today; per-thread arrays later)
 *   page.c, heap.c   the page heap: segments and pages; per-thread heaps, abandonment, walking
 *   object.c         allocation, biased reference counting, try-incref, resurrection, dealloc
 *   brc.c            the merge queues of biased reference counting
 *   freelist.c       per-thread freelists of freed objects by type
 *   qsbr.c           quiescent-state-based reclamation: sequences, slots, polling
 *   delayed.c        delayed free and delayed decref queues, and the heap's page-reuse hook
 *   uniqueid.c       unique ids and per-thread reference counts
 *   tlbc.c           thread-local copies of code buffers
 *   dict.c           a concurrent dictionary with lock-free lookups (proof of the layer)
 *   fatal.c          status strings, the last error, the fatal handler
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
 * Lock order: stw.mutex -> head_mutex -> index pool mutex, heaps.mutex, brc bucket mutexes ->
 * parking-lot bucket locks. All but stw.mutex are internal and never held across a safepoint, so they
 * are taken without detaching.
 */
#ifndef FTRT_INTERNAL_TYPES_H
#define FTRT_INTERNAL_TYPES_H

#include <stdatomic.h>

#include "ftrt/critical_section.h"
#include "ftrt/object.h"
#include "ftrt/qsbr.h"
#include "ftrt/dict.h"
#include "ftrt/tlbc.h"
#include "ftrt/uniqueid.h"
#include "heap/heap.h"
#include "ftrt/index_pool.h"
#include "ftrt/lock.h"
#include "ftrt/parking_lot.h"
#include "ftrt/runtime.h"

#define FT_BRC_OUTBOX 64 /* objects a thread collects for one owner before handing them over */

enum ft_thread_state {
    FT_THREAD_DETACHED = 0,
    FT_THREAD_ATTACHED = 1,
    FT_THREAD_SUSPENDED = 2,
    FT_THREAD_STOPPED = 3, /* after ft_thread_stop, until the state is reused for a new thread */
};

/* Thread states live as long as their runtime: ft_thread_stop leaves a state in rt->qsbr.states, and
 * the next thread given the same index reuses it, so QSBR pollers may read any state's qsbr_seq
 * without a lock. Reuse zeroes everything after head.qsbr_seq (see reset_state in thread.c). */
struct ft_thread {
    _Alignas(64) struct ft_thread_head head; /* first: the public inline functions read it */
    _Atomic(uint32_t) state;    /* enum ft_thread_state; transitions as in the comment at the top */
    ft_runtime *rt;             /* immutable */
    uintptr_t os_thread;        /* ft_os_thread_id() of the owner; immutable */
    uint32_t index;             /* from rt->thread_indices; immutable while started */
    uintptr_t cs_top;           /* innermost critical section, tagged; owner thread only */
    ft_thread *prev, *next;     /* rt->threads list; under rt->head_mutex */
    ft_heap_set *heaps;         /* owner only (adopted or made at start, abandoned at stop) */
    struct {
        ft_thread *bucket_next;       /* rt->brc bucket list; under the bucket's mutex */
        struct ft_brc_chunk *queue;   /* objects to merge; under the bucket's mutex */
        bool registered;              /* owner only */
        /* The outbox (brc.c): objects this thread dropped for another, live owner and has not
         * handed over yet, each QUEUED with the reference the outbox holds. Owner only. */
        uintptr_t outbox_tid;         /* the owner id it collects for (every object's ob_tid); 0: none */
        uint32_t outbox_count;        /* < FT_BRC_OUTBOX between calls: a full outbox is handed over */
        ft_object *outbox[FT_BRC_OUTBOX];
    } brc;
    struct {
        struct ft_delayed_chunk *head, *tail; /* this thread's delayed items; owner only (or world
                                                 stopped) */
        uint64_t count, memory;    /* pending since the last advance; owner only */
        uint64_t page_memory;      /* retired page bytes since the last advance; owner only */
        /* The first item still without a goal (its chunk and index), or NULL; owner only */
        struct ft_delayed_chunk *unsealed;
        uint32_t unsealed_at;
    } delayed;
    bool ptrc_finalized;            /* owner only: per-thread counts merged for good (stopping) */
    struct ft_freelists *freelists; /* owner only; NULL until first used or when disabled */
    bool freelists_disabled;        /* owner only: set when the thread stops */
    _Atomic(int64_t) reftotal;      /* debug reference total: owner adds, anyone reads (relaxed) */
    _Atomic(uint64_t) remote_frees; /* frees into other threads' pages: owner adds, anyone reads */
};

#define FT_BRC_BUCKETS 257

typedef struct ft_brc_bucket {
    ft_mutex mutex;     /* guards threads and their brc.queue */
    ft_thread *threads; /* registered threads whose os_thread hashes here */
} ft_brc_bucket;

struct ft_runtime {
    ft_config config;        /* immutable after ft_runtime_new; config.name points at name_copy */
    char *name_copy;         /* owned copy of the configured name, or NULL */
    ft_mutex head_mutex;     /* guards threads, nthreads and the stw fields marked "head" */
    ft_thread *threads;      /* started thread states; head */
    uint32_t nthreads;       /* head */
    ft_index_pool thread_indices; /* its own lock */
    ft_heap_runtime heaps;        /* see heap/heap.h */
    struct {
        _Alignas(64) _Atomic(uint64_t) wr_seq; /* odd, advanced by 2; its own cache line */
        _Alignas(64) _Atomic(uint64_t) rd_seq; /* a cached lower bound of every slot's sequence */
        /* Every thread state made so far, by thread index (NULL: index never used). The array is
         * replaced, doubled, only with the world stopped and head_mutex held; an entry is set once,
         * under head_mutex, with release (pollers load it with acquire, without a lock). */
        ft_thread *_Atomic *states;
        uint32_t nslots;           /* entries in states; changed like the array */
        ft_mutex delayed_mutex;    /* guards delayed_head/tail */
        struct ft_delayed_chunk *delayed_head, *delayed_tail; /* left by stopped threads */
        _Atomic(bool) delayed_has_work; /* a hint that the runtime queue is not empty */
        _Atomic(uint64_t) freed;   /* delayed items processed, in total */
    } qsbr;
    ft_brc_bucket brc[FT_BRC_BUCKETS];
    struct {
        ft_mutex mutex;           /* guards table and free_head; size is also read without it */
        uintptr_t *table;         /* by id - 1: an object, or (next free id << 1) | 1 */
        uintptr_t free_head;      /* (first free id) << 1, or 0 */
        _Atomic(uint32_t) size;   /* entries in table; grows only */
    } uid;
    struct {
        ft_mutex mutex;           /* guards list */
        ft_tlbc *list;            /* every registered code buffer */
    } tlbc;
    _Atomic(int64_t) reftotal;    /* debug: totals of stopped threads and unattached callers */
    _Atomic(int64_t) fail_countdown; /* test hook: the allocation that fails when it reaches 0 */
    /* Test hook (debug builds): called by a non-owner's decref of an object of this runtime after
     * its subtract took a biased count below zero and before it settles (object.c), so that a test
     * can run other threads' steps inside that window. Set while no thread counts objects. */
    void (*decref_window_hook)(void *arg);
    void *decref_window_arg;

    struct {
        ft_mutex mutex;                /* held by the requester from stop to start */
        _Atomic(bool) requested;       /* written under head; read relaxed as a hint */
        _Atomic(bool) world_stopped;   /* written by the requester; exact for the requester only */
        _Atomic(int32_t) countdown;    /* threads still to suspend; written under head, read by the
                                          spinning requester (acquire) */
        _Atomic(ft_thread *) requester; /* the attached requester or NULL; written under head */
        _Atomic(uintptr_t) owner_os;   /* OS thread that holds the stop; written by it only */
        ft_event stopped;              /* notified by the decrement that reaches zero */
        _Atomic(uint64_t) count, total_ns, max_ns; /* stats; written by the requester, relaxed */
    } stw;
};

#endif
