/* gc/gc.h: the collector's state (gc.c, introspect.c, weakref.c) and what the lower layers call.
 *
 * Counting allocations. Each thread counts its GC allocations minus its GC deallocations in its own
 * `count` and folds it into the runtime's count0 when an allocation brings it to `limit` (at most
 * FT_GC_FLUSH ahead; with automatic collection on, exactly where the total as the thread knows it
 * exceeds generation 0's threshold, so the allocation that makes the excess schedules a collection,
 * as CPython checks at every allocation) or a deallocation to -FT_GC_FLUSH. A deallocation does not count below zero
 * as far as its thread knows the total (CPython clamps each decrement at zero). get_count adds every
 * thread's unflushed part, so it is exact. A stop of the world that changes what the limits depend
 * on (a collection, enable, thresholds, freeze) folds every thread's part in and sets each limit.
 *
 * Deferred frees. While a collection runs, its lists must never point at freed memory, whatever
 * callbacks, finalizers and clears free meanwhile. An object of its unreachable set that dies on
 * the collecting thread leaves the list at once (gc.c, "Leaving a collection") and is freed as
 * usual; one that dies on another thread, and every GC object that dies while the collection holds
 * uncollectable objects (whose list is not kept that way: defer_all_frees), is deallocated as
 * usual but its memory goes on the zombies stack (the collecting thread's own on a private list),
 * which the collection frees when it ends (docs/gc.md). */
#ifndef FTRT_GC_GC_H
#define FTRT_GC_GC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ftrt/gc.h"
#include "ftrt/lock.h"
#include "ftrt/stackref.h"
#include "ftrt/weakref.h"

#define FT_GC_FLUSH 512        /* a thread's count folds into the runtime's at this distance */
#define FT_GC_TRASH_DEPTH 50   /* nested deallocs before the trashcan defers the next one */
#define FT_WEAKREF_STRIPES 64  /* weak reference locks per runtime, keyed by the referent's address */

/* One thread's part (ft_thread.gc). */
typedef struct ft_gc_thread {
    /* GC allocations minus deallocations not yet folded into rt->gc.count0. Written by the owner
     * (relaxed load and store) and by the collector with the world stopped; read by get_count on
     * any thread (relaxed). */
    _Atomic(int32_t) count;
    int32_t limit;      /* fold when count reaches it; owner, or world stopped */
    int64_t seen_total; /* rt->gc.count0 as this thread last left it; owner, or world stopped */
    /* The trashcan (object.c): deallocs nested on this thread, and the objects whose dealloc waits
     * for the outermost one to return (linked through ob_tid, as the heap links free blocks).
     * Owner only. */
    uint32_t trash_depth;
    ft_object *trash;
    /* The collector's zombies (below), while this thread collects; owner only. */
    ft_object *zombies;
    /* The innermost stack region this thread registered (ftrt/stackref.h): the owner pushes and
     * pops, attached; the collector reads every thread's, world stopped. */
    ft_stack_region *regions;
} ft_gc_thread;

/* One chunk of a collection's candidates (gc.c): those a worker gathered from one chunk of pages,
 * worker's objs[start, start + count). Chunks are numbered in page order, so reading the runs in
 * order reads the candidates in the same order whatever the number of workers. */
typedef struct ft_gc_run {
    size_t start, count;
    int worker;
} ft_gc_run;

/* The collector's working arrays, kept from one collection to the next (gc.c): the pages the walk
 * visits, the runs of candidates, the unreachable set and the serial mark stack. Used only by the
 * collecting thread, and by its workers during a phase (each run written by the worker that claimed
 * its chunk). */
typedef struct ft_gc_work {
    struct ft_page **pages;
    size_t n_pages, pages_cap;
    ft_gc_run *runs;
    size_t runs_cap;
    ft_object **set; /* the unreachable set, in candidate order */
    size_t set_cap;
    ft_object **stack;
    size_t stack_cap;
    /* While the world runs: set[0, entries) is the unreachable set, an emptied entry NULL. */
    size_t entries;
} ft_gc_work;

/* ---- parallel marking (pool.c) ------------------------------------------------------------------ */

#define FT_GC_MAX_WORKERS 16

/* A deque's array; outgrown ones wait on the owner's retired list until the phase ends. */
typedef struct ft_gc_deque_array {
    size_t mask; /* capacity - 1, a power of two minus one */
    struct ft_gc_deque_array *retired_next;
    _Atomic(ft_object *) slots[];
} ft_gc_deque_array;

/* A work-stealing deque of objects to visit (pool.c). */
typedef struct ft_gc_deque {
    /* The oldest item: thieves advance it by seq_cst compare-and-swap, and so does the owner when it
     * takes the last item. */
    _Atomic(int64_t) top;
    /* One past the newest item: the owner alone writes it (release after filling a slot); thieves
     * read it (acquire). On a cache line of its own, away from the thieves' top. */
    _Alignas(64) _Atomic(int64_t) bottom;
    /* The slots: the owner replaces the array when it grows (release), thieves read it (acquire). */
    _Atomic(ft_gc_deque_array *) array;
    ft_gc_deque_array *retired; /* owner only */
} ft_gc_deque;

struct ft_gc_collection;

/* One marking worker (index 0: the collecting thread). During a phase each field but the deque is
 * its own worker's; between phases the collector reads them all (the phase's barrier orders it). */
typedef struct ft_gc_worker {
    _Alignas(128) ft_gc_deque deque;
    ft_runtime *rt; /* set once, with the pool */
    struct ft_gc_collection *c;
    /* The objects this worker has yet to visit, newest last: its own, no synchronisation. It hands
     * the oldest to its deque when another worker is idle (ft_gc_worker_share). */
    ft_object **stack;
    size_t stack_n, stack_cap;
    /* The candidates it gathered, with their owners' ids: runs point into these. */
    ft_object **objs;
    uintptr_t *tids;
    size_t n, cap;
    uint64_t alive; /* objects whose ALIVE mark its gather cleared */
    bool oom;       /* a candidate array could not grow */
    bool overflow;  /* a reachable object was marked but could not be queued (gc.c re-scans) */
} ft_gc_worker;

typedef void (*ft_gc_job)(void *arg, int worker);

/* The helper threads (pool.c's top comment). */
typedef struct ft_gc_pool {
    ft_runtime *rt;
    int helpers;                          /* started; the collector only */
    pthread_t threads[FT_GC_MAX_WORKERS]; /* the collector only */
    /* Odd while a collection's stop uses the helpers: bumped by the collector (release), waited on
     * by sleeping helpers (futex). */
    _Atomic(uint32_t) session;
    /* Bumped (release) by the collector to publish job and job_arg, read (acquire) by helpers. */
    _Atomic(uint32_t) phase;
    _Atomic(int) participants; /* workers of this session, the collector included; set before it */
    /* `phase` when this session opened: a helper joining the session takes only later phases (a
     * helper left out of earlier sessions must not run their last job). Set before `session`. */
    _Atomic(uint32_t) opened_at_phase;
    _Atomic(int) done;         /* helpers finished with this phase (release add, acquire poll) */
    _Atomic(int) idle;         /* workers with nothing to do in a stealing phase (pool.c) */
    _Atomic(bool) quit;        /* ft_runtime_free: helpers exit */
    ft_gc_job job;             /* written before `phase` is bumped */
    void *job_arg;
    int job_trace;             /* the phase's ft_trace_name, for the helpers' traces; likewise */
    /* Each helper's trace buffer (trace/trace.h), opened and closed by the helper; the collector
     * writes out what they recorded after the world restarts (ft_gc_pool_flush_traces). */
    struct ft_trace_buffer *traces[FT_GC_MAX_WORKERS];
    ft_gc_worker workers[FT_GC_MAX_WORKERS];
} ft_gc_pool;

bool ft_gc_worker_push_slow(ft_gc_worker *wk, ft_object *o);
/* Hand the oldest half of wk's stack to its deque (another worker is idle: something to steal). */
void ft_gc_worker_share(ft_gc_worker *wk);
/* The newest object wk handed to its deque that nobody stole, or NULL. */
ft_object *ft_gc_worker_take_back(ft_gc_worker *wk);

/* Queue o on wk's own stack; false if the stack was full and could not grow. */
static inline bool ft_gc_worker_push(ft_gc_worker *wk, ft_object *o)
{
    if (FT_UNLIKELY(wk->stack_n == wk->stack_cap))
        return ft_gc_worker_push_slow(wk, o);
    wk->stack[wk->stack_n++] = o;
    return true;
}

static inline ft_object *ft_gc_worker_pop(ft_gc_worker *wk)
{
    return wk->stack_n ? wk->stack[--wk->stack_n] : NULL;
}

/* Whether a deque looks empty (a thief may be taking its last item). */
static inline bool ft_gc_deque_is_empty(ft_gc_deque *d)
{
    return atomic_load_explicit(&d->top, memory_order_acquire) >=
           atomic_load_explicit(&d->bottom, memory_order_relaxed);
}

/* The runtime of the collector a helper thread works for (the stackref debug table's lookup needs
 * it, and a helper has no ft_current_thread). Set by each helper for its whole life. */
extern _Thread_local ft_runtime *ft_gc_helper_runtime;

/* Worker self, out of work: an item stolen from another of the phase's workers, or NULL when every
 * worker is out of work (the phase's work is done). */
ft_object *ft_gc_pool_steal(ft_gc_pool *pool, int self, int workers);
/* The collector, world stopped: make ready up to `workers` workers (deques, helper threads);
 * returns how many it has (at least 1; 1 needs no deque: nobody steals). */
int ft_gc_pool_reserve(ft_gc_pool *pool, int workers);
void ft_gc_pool_open(ft_gc_pool *pool, int workers); /* wake the helpers of a session */
void ft_gc_pool_close(ft_gc_pool *pool);             /* let them sleep again */
/* Run job on every worker of the session (the caller as worker 0) and wait for all of them; the
 * helpers trace it as the phase `trace` (an ft_trace_name). */
void ft_gc_pool_run(ft_gc_pool *pool, ft_gc_job job, void *arg, int trace);
/* The collector, world running, before its stop: give each helper a trace buffer if a trace is
 * being recorded (a helper made during the stop records from the next collection on). After the
 * restart: write the helpers' events out if their buffers fill up. */
void ft_gc_pool_open_traces(ft_gc_pool *pool);
void ft_gc_pool_flush_traces(ft_gc_pool *pool);
void ft_gc_pool_destroy(ft_gc_pool *pool);
void ft_gc_pool_after_fork_child(ft_gc_pool *pool);

typedef struct ft_gc_callback_entry {
    ft_gc_callback fn;
    void *arg;
} ft_gc_callback_entry;

typedef struct ft_gc_root_entry {
    ft_gc_root_fn fn;
    void *arg;
} ft_gc_root_entry;

/* The runtime's part (ft_runtime.gc). */
typedef struct ft_gc_runtime {
    /* 1 while a collection runs, from before its first stop to after its last callback: set by
     * compare-and-swap by the thread that collects, which alone clears it (seq_cst: the zombies'
     * hand-over, gc.c). Read by anyone. */
    _Atomic(int) collecting;
    /* The collecting thread (its deallocs keep their zombies on a private list); set and cleared by
     * it, read (relaxed) by deallocs on any thread, which compare it with themselves. */
    _Atomic(ft_thread *) collector;
    ft_gc_work work; /* the collecting thread only (and its workers, pool.c) */
    ft_gc_pool pool; /* the marking workers */
    /* Every GC object's memory waits for the collection's end (it has uncollectable objects): set
     * and cleared by the collector; read by any dealloc (seq_cst: the zombies' hand-over). */
    _Atomic(bool) defer_all_frees;
    /* Settings: any thread writes (relaxed; enable and thresholds then stop the world to reset the
     * threads' limits), any thread reads (relaxed). */
    _Atomic(bool) enabled;
    _Atomic(long) threshold[FT_GC_GENERATIONS];
    _Atomic(unsigned) debug;
    _Atomic(FILE *) debug_stream; /* NULL: stderr */
    /* Generation 0's folded count: threads add (relaxed fetch_add); the collector resets it with the
     * world stopped. counts[1], counts[2]: written by the collector, read by anyone (relaxed). */
    _Atomic(int64_t) count0;
    _Atomic(long) counts[FT_GC_GENERATIONS];
    /* Objects that survived young collections since the last full one, and the survivors of the
     * last full one (CPython's long_lived_pending and long_lived_total): the collector only. */
    uint64_t long_lived_pending, long_lived_total;
    /* Per generation: written by the collector (relaxed), read by anyone. */
    struct {
        _Atomic(uint64_t) collections, collected, uncollectable, candidates, pause_ns, max_pause_ns;
    } stats[FT_GC_GENERATIONS];
    /* GC objects deallocated during a collection, their memory not yet freed (above): a lock-free
     * stack through ob_tid; any thread pushes (seq_cst CAS), the collector or a late pusher takes
     * it whole (seq_cst exchange). */
    _Atomic(uintptr_t) zombies;
    /* mutex guards garbage, callbacks and roots (level 4 of the lock order: nothing is called
     * while it is held, but the root functions, world stopped, which may take no lock). */
    ft_mutex mutex;
    ft_object **garbage;
    size_t garbage_count, garbage_cap;
    ft_gc_callback_entry *callbacks;
    size_t callback_count, callback_cap;
    ft_gc_root_entry *roots;
    size_t root_count, root_cap;
    /* Weak references: a referent's list and each weak reference's wr_object change under the lock
     * its referent's address picks (level 4: nothing else is taken under it). */
    ft_mutex weakref_locks[FT_WEAKREF_STRIPES];
} ft_gc_runtime;

/* gc.c: lifetime and hooks called by the lower layers. */
void ft_gc_runtime_init(ft_runtime *rt);
void ft_gc_runtime_destroy(ft_runtime *rt);
void ft_gc_thread_start(ft_thread *t);
void ft_gc_thread_stop(ft_thread *t);
void ft_gc_count_fold(ft_thread *t, bool allocating); /* t's count reached its limit */
void ft_gc_collect_scheduled(ft_thread *t);      /* FT_PENDING_GC at a safepoint */
void ft_gc_zombie_push(ft_thread *t, ft_object *o); /* memory of a dead GC object, to free later */
/* o (UNREACHABLE) leaves the collection under way, untracked or dead: whether its memory must wait
 * for the collection's end (gc.c, "Leaving a collection"). */
bool ft_gc_leave_collection(ft_thread *t, ft_object *o);
/* World stopped: zero every generation's count, every thread's part included (freeze). */
void ft_gc_counts_reset_stopped(ft_runtime *rt);
/* A tracked object back to generation 0 (a dealloc about to finalize it: CPython re-tracks it). */
void ft_gc_move_to_young(ft_object *o);
/* ft_runtime_free: the final collections, with callbacks off; then what leaked (debug builds). */
void ft_gc_finalize_runtime(ft_runtime *rt);
void ft_gc_report_leaks(ft_runtime *rt);

/* The object's traverse and clear as the collector sees them: for weak references, ftrt's part
 * (the callback's object) and the host type's. */
int ft_gc_traverse(ft_object *o, ft_visit_fn visit, void *arg);
void ft_gc_clear(ft_object *o);

/* Counting (inline: every GC allocation and deallocation). */
static inline void ft_gc_count_alloc(ft_gc_thread *g, ft_thread *t)
{
    int32_t c = atomic_load_explicit(&g->count, memory_order_relaxed) + 1;
    atomic_store_explicit(&g->count, c, memory_order_relaxed);
    if (FT_UNLIKELY(c >= g->limit))
        ft_gc_count_fold(t, true);
}

static inline void ft_gc_count_dealloc(ft_gc_thread *g, ft_thread *t)
{
    int32_t c = atomic_load_explicit(&g->count, memory_order_relaxed);
    if (g->seen_total + c <= 0)
        return;
    atomic_store_explicit(&g->count, c - 1, memory_order_relaxed);
    if (FT_UNLIKELY(c - 1 <= -FT_GC_FLUSH))
        ft_gc_count_fold(t, false);
}

/* weakref.c */
ft_mutex *ft_weakref_lock_for(ft_runtime *rt, const ft_object *referent);
/* A referent's count reached zero (object.c dealloc, after the finalizer): clear its weak
 * references and call their callbacks, newest first; then clear the ones the callbacks made, without
 * calling theirs. */
void ft_weakref_clear_dying(ft_object *o);
/* The collector, world stopped: clear wr (no lock: none is held in a stop). */
void ft_weakref_clear_stopped(ft_weakref *wr);
/* The head of o's weak reference list (o's type has FT_TYPE_HAS_WEAKREFS). */
static inline _Atomic(ft_weakref *) *ft_weakref_list(const ft_object *o)
{
    return (_Atomic(ft_weakref *) *)(void *)((char *)o + o->ob_type->weaklist_offset);
}
/* A weak reference's own part released: unlinked from its referent, its callback dropped (its
 * clear and its dealloc, after the host type's). */
void ft_weakref_release_base(ft_weakref *wr);

#endif
