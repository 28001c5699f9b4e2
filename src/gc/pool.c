/* pool.c: the collector's marking workers: a pool of helper threads, the work-stealing deques they
 * mark from, and the barrier that ends each phase.
 *
 * Why a pool of its own. A collection's stopped phases (gc.c) may run on up to ft_config.gc_workers
 * threads: the collecting thread plus helpers. The helpers are threads the runtime owns, created the
 * first time a collection is big enough to want them and kept until ft_runtime_free. The stopped
 * threads themselves would be the other choice, but a program with one mutator has none, and they
 * are parked inside the stop-the-world handshake, whose protocol would have to learn to lend them
 * out. A helper is not an ftrt thread state: it never attaches, takes part in no stop, and touches
 * objects only while the collector holds the world stopped, on the collector's behalf.
 *
 * Sessions and phases. A collection that wants helpers opens a session (`session` becomes odd, the
 * sleeping helpers are woken) and closes it when its stop ends (even again: they go back to sleep on
 * the futex). Within a session each phase is published by storing the job and bumping `phase`; every
 * participating helper runs the job with its worker index, then adds one to `done`; the collector
 * runs the job as worker 0 and waits for `done` to count every participant. A helper joining a
 * session takes only the phases published since it opened: one left out of the sessions before
 * (they wanted fewer workers) must not mistake their last phase for a new one. Between phases the
 * helpers spin, then yield: the world is stopped, so the cores they spin on are idle anyway.
 *
 * Stacks and deques. Each worker marks from a stack of its own (plain loads and stores). When
 * another worker is idle and the worker's deque is empty, it moves the oldest half of its stack (the
 * objects nearest the roots of what is left, the most work each) into its deque, where idle workers
 * steal them: the deque's costs are paid per steal, not per object. The deques are Chase and Lev's
 * (SPAA 2005), with the memory orders of Lê, Pop, Cohen and Zappa Nardelli (PPoPP 2013), their two
 * fences folded into seq_cst accesses, which ThreadSanitizer understands. The owner pushes and pops at
 * the bottom alone until the deque holds one item, where a compare-and-swap on `top` settles who gets
 * it; thieves take from the top. A deque that fills is copied into one twice the size; the old array
 * may still be read by a thief, so it is kept on the owner's retired list and freed once the phase is
 * over.
 *
 * Ending a phase that steals (ft_gc_pool_steal). A worker with nothing left in its deque and
 * nothing to steal counts itself idle; it leaves the count when some deque holds work again, and the
 * phase's work is over when every worker is idle at once: an idle worker pushes nothing, so no work
 * can appear after that. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

_Thread_local ft_runtime *ft_gc_helper_runtime;

#define DEQUE_INITIAL 1024 /* slots of a deque's first array, and of a worker's first stack */
#define SPIN_ROUNDS 256    /* polls with the pause instruction before a helper yields its core */

/* ---- deques ---------------------------------------------------------------------------------- */

static ft_gc_deque_array *array_new(size_t capacity)
{
    ft_gc_deque_array *a = malloc(sizeof *a + capacity * sizeof a->slots[0]);
    if (a) {
        a->mask = capacity - 1;
        a->retired_next = NULL;
    }
    return a;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static bool deque_init(ft_gc_deque *d)
{
    ft_gc_deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    if (!a) {
        a = array_new(DEQUE_INITIAL);
        if (!a)
            return false;
        atomic_store_explicit(&d->array, a, memory_order_relaxed);
    }
    atomic_store_explicit(&d->top, 0, memory_order_relaxed);
    atomic_store_explicit(&d->bottom, 0, memory_order_relaxed);
    return true;
}

static void deque_release_retired(ft_gc_deque *d)
{
    while (d->retired) {
        ft_gc_deque_array *next = d->retired->retired_next;
        free(d->retired);
        d->retired = next;
    }
}

static void deque_destroy(ft_gc_deque *d)
{
    deque_release_retired(d);
    free(atomic_load_explicit(&d->array, memory_order_relaxed));
    atomic_store_explicit(&d->array, NULL, memory_order_relaxed);
}

/* The owner's array is full: copy [top, bottom) into one twice the size. */
static ft_gc_deque_array *deque_grow(ft_gc_deque *d, ft_gc_deque_array *a, int64_t top,
                                     int64_t bottom)
{
    ft_gc_deque_array *b = array_new((a->mask + 1) * 2);
    if (!b)
        return NULL;
    for (int64_t i = top; i < bottom; i++)
        atomic_store_explicit(&b->slots[(size_t)i & b->mask],
                              atomic_load_explicit(&a->slots[(size_t)i & a->mask],
                                                   memory_order_relaxed),
                              memory_order_relaxed);
    /* Release: a thief that reads the new array sees its slots filled. */
    atomic_store_explicit(&d->array, b, memory_order_release);
    a->retired_next = d->retired;
    d->retired = a;
    return b;
}

/* Owner: queue o; false if the deque was full and could not grow. */
static bool deque_push(ft_gc_deque *d, ft_object *o)
{
    int64_t bottom = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t top = atomic_load_explicit(&d->top, memory_order_acquire);
    ft_gc_deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    if (bottom - top > (int64_t)a->mask) {
        a = deque_grow(d, a, top, bottom);
        if (!a)
            return false;
    }
    atomic_store_explicit(&a->slots[(size_t)bottom & a->mask], o, memory_order_relaxed);
    /* Release: a thief that sees the new bottom sees the slot (and the object's marks before it). */
    atomic_store_explicit(&d->bottom, bottom + 1, memory_order_release);
    return true;
}

/* Owner: the newest item, or NULL. */
static ft_object *deque_pop(ft_gc_deque *d)
{
    int64_t bottom = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    ft_gc_deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    /* Both seq_cst: the bottom store is ordered before the top load, so a thief reading the old
     * bottom and this pop reading the old top cannot both take the last item. */
    atomic_store_explicit(&d->bottom, bottom, memory_order_seq_cst);
    int64_t top = atomic_load_explicit(&d->top, memory_order_seq_cst);
    if (top > bottom) { /* empty */
        atomic_store_explicit(&d->bottom, bottom + 1, memory_order_relaxed);
        return NULL;
    }
    ft_object *o = atomic_load_explicit(&a->slots[(size_t)bottom & a->mask], memory_order_relaxed);
    if (top == bottom) { /* the last item: race the thieves for it */
        if (!atomic_compare_exchange_strong_explicit(&d->top, &top, top + 1, memory_order_seq_cst,
                                                     memory_order_relaxed))
            o = NULL;
        atomic_store_explicit(&d->bottom, bottom + 1, memory_order_relaxed);
    }
    return o;
}

/* One attempt to take the top item of another worker's deque: the item, NULL if empty, or
 * FT_GC_DEQUE_RETRY if another thief or the owner won the race. */
#define FT_GC_DEQUE_RETRY ((ft_object *)1)

static ft_object *deque_steal(ft_gc_deque *d)
{
    /* seq_cst: the top load is ordered before the bottom load (the pop's other half). */
    int64_t top = atomic_load_explicit(&d->top, memory_order_seq_cst);
    int64_t bottom = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
    if (top >= bottom)
        return NULL;
    ft_gc_deque_array *a = atomic_load_explicit(&d->array, memory_order_acquire);
    ft_object *o = atomic_load_explicit(&a->slots[(size_t)top & a->mask], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&d->top, &top, top + 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return FT_GC_DEQUE_RETRY;
    return o;
}

/* ---- a worker's own stack ---------------------------------------------------------------------- */

bool ft_gc_worker_push_slow(ft_gc_worker *wk, ft_object *o)
{
    size_t cap = wk->stack_cap ? wk->stack_cap * 2 : DEQUE_INITIAL;
    ft_object **grown = ft_inject_failure(wk->rt) ? NULL : realloc(wk->stack, cap * sizeof *grown);
    if (!grown)
        return false;
    wk->stack = grown;
    wk->stack_cap = cap;
    wk->stack[wk->stack_n++] = o;
    return true;
}

void ft_gc_worker_share(ft_gc_worker *wk)
{
    /* The oldest objects sit nearest the roots of what is left, so they carry the most work. What
     * the deque cannot take stays on the stack. */
    size_t give = wk->stack_n / 2, given = 0;
    while (given < give && deque_push(&wk->deque, wk->stack[given]))
        given++;
    memmove(wk->stack, wk->stack + given, (wk->stack_n - given) * sizeof *wk->stack);
    wk->stack_n -= given;
}

ft_object *ft_gc_worker_take_back(ft_gc_worker *wk)
{
    return deque_pop(&wk->deque);
}

/* ---- stealing and the end of a phase ----------------------------------------------------------- */

ft_object *ft_gc_pool_steal(ft_gc_pool *pool, int self, int workers)
{
    bool counted_idle = false;
    for (unsigned round = 0;; round++) {
        for (int i = 1; i < workers; i++) {
            ft_gc_deque *victim = &pool->workers[(self + i) % workers].deque;
            ft_object *o;
            while ((o = deque_steal(victim)) == FT_GC_DEQUE_RETRY)
                cpu_relax();
            if (o) {
                if (counted_idle)
                    atomic_fetch_sub_explicit(&pool->idle, 1, memory_order_relaxed);
                return o;
            }
        }
        if (!counted_idle) {
            atomic_fetch_add_explicit(&pool->idle, 1, memory_order_acq_rel);
            counted_idle = true;
        }
        /* Every worker idle at once: none holds work and none can make any. Acquire: their last
         * marks happen before this worker's return (and so before the phase's end). */
        if (atomic_load_explicit(&pool->idle, memory_order_acquire) == workers)
            return NULL;
        bool work_somewhere = false;
        for (int i = 1; i < workers && !work_somewhere; i++)
            work_somewhere = !ft_gc_deque_is_empty(&pool->workers[(self + i) % workers].deque);
        if (work_somewhere) {
            /* Leave the idle count before stealing, so that nobody ends the phase meanwhile. */
            atomic_fetch_sub_explicit(&pool->idle, 1, memory_order_acq_rel);
            counted_idle = false;
        } else if (round % 64 == 63) {
            sched_yield();
        } else {
            cpu_relax();
        }
    }
}

/* ---- the helper threads -------------------------------------------------------------------------- */

typedef struct helper_start {
    ft_gc_pool *pool;
    int index;
} helper_start;

/* A helper's life: sleep between sessions; in a session, run each phase published while it is a
 * participant. */
static void *helper_main(void *arg)
{
    helper_start *start = arg;
    ft_gc_pool *pool = start->pool;
    int index = start->index;
    uint32_t seen_phase = 0, seen_session = 0; /* sessions are odd: the first one is new */
    free(start);
    ft_gc_helper_runtime = pool->rt;

    for (;;) {
        uint32_t session = atomic_load_explicit(&pool->session, memory_order_acquire);
        if (atomic_load_explicit(&pool->quit, memory_order_acquire))
            break;
        if (!(session & 1) ||
            index >= atomic_load_explicit(&pool->participants, memory_order_acquire)) {
            ft_futex_wait_until(&pool->session, session, FT_FOREVER);
            continue;
        }
        /* A session it has just joined: only the phases published from its start on are this
         * helper's (an older one's job and collection are gone, and it did not take part). */
        if (session != seen_session) {
            seen_session = session;
            seen_phase = atomic_load_explicit(&pool->opened_at_phase, memory_order_relaxed);
        }
        /* Acquire: the job and everything the collector wrote before publishing it. */
        uint32_t phase = atomic_load_explicit(&pool->phase, memory_order_acquire);
        if (phase == seen_phase) {
            for (int spin = 0; spin < SPIN_ROUNDS &&
                               atomic_load_explicit(&pool->phase, memory_order_relaxed) == phase &&
                               atomic_load_explicit(&pool->session, memory_order_relaxed) == session;
                 spin++)
                cpu_relax();
            if (atomic_load_explicit(&pool->phase, memory_order_relaxed) == phase)
                sched_yield();
            continue;
        }
        seen_phase = phase;
        /* Opened by the collector before its stop (ft_gc_pool_open_traces); read after the acquire
         * of the phase. */
        ft_trace_buffer *trace = pool->traces[index];
        if (trace)
            ft_trace_buffer_begin(trace, (ft_trace_name)pool->job_trace);
        pool->job(pool->job_arg, index);
        if (trace)
            ft_trace_buffer_end(trace, (ft_trace_name)pool->job_trace);
        /* Release: this helper's marks happen before the collector's next step. */
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
    }
    if (pool->traces[index])
        ft_trace_buffer_close(pool->traces[index]); /* ft_runtime_free: the world runs */
    return NULL;
}

int ft_gc_pool_reserve(ft_gc_pool *pool, int workers)
{
    if (workers > FT_GC_MAX_WORKERS)
        workers = FT_GC_MAX_WORKERS;
    for (int i = 0; i < workers; i++)
        if (!deque_init(&pool->workers[i].deque)) {
            workers = i; /* out of memory: only the workers with a deque */
            break;
        }
    if (workers <= 1)
        return 1;
    while (pool->helpers + 1 < workers) {
        helper_start *start = malloc(sizeof *start);
        if (!start)
            break;
        *start = (helper_start){pool, pool->helpers + 1};
        /* The helper takes no signal: a host's handlers run on the host's own threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int err = pthread_create(&pool->threads[pool->helpers], NULL, helper_main, start);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (err != 0) {
            free(start);
            break;
        }
        pool->helpers++;
    }
    return workers < pool->helpers + 1 ? workers : pool->helpers + 1;
}

void ft_gc_pool_open(ft_gc_pool *pool, int workers)
{
    atomic_store_explicit(&pool->participants, workers, memory_order_relaxed);
    if (workers <= 1)
        return;
    atomic_store_explicit(&pool->opened_at_phase,
                          atomic_load_explicit(&pool->phase, memory_order_relaxed),
                          memory_order_relaxed);
    /* Release: the participants count and the first phase before the odd session that makes
     * helpers read them. */
    atomic_fetch_add_explicit(&pool->session, 1, memory_order_release);
    ft_futex_wake_all(&pool->session);
}

void ft_gc_pool_close(ft_gc_pool *pool)
{
    if (atomic_load_explicit(&pool->participants, memory_order_relaxed) > 1)
        atomic_fetch_add_explicit(&pool->session, 1, memory_order_release);
    atomic_store_explicit(&pool->participants, 1, memory_order_relaxed);
}

void ft_gc_pool_run(ft_gc_pool *pool, ft_gc_job job, void *arg, int trace)
{
    int workers = atomic_load_explicit(&pool->participants, memory_order_relaxed);
    atomic_store_explicit(&pool->idle, 0, memory_order_relaxed);
    if (workers > 1) {
        pool->job = job;
        pool->job_arg = arg;
        pool->job_trace = trace;
        atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
        /* Release: the job, its argument and every mark so far, to the helpers' acquire. */
        atomic_fetch_add_explicit(&pool->phase, 1, memory_order_release);
    }
    job(arg, 0);
    if (workers > 1) {
        unsigned spins = 0;
        /* Acquire: every helper's marks happen before what the collector does next. */
        while (atomic_load_explicit(&pool->done, memory_order_acquire) != workers - 1)
            if (++spins % 64 == 0)
                sched_yield();
            else
                cpu_relax();
    }
    for (int i = 0; i < workers; i++)
        deque_release_retired(&pool->workers[i].deque);
}

void ft_gc_pool_open_traces(ft_gc_pool *pool)
{
    if (!ft_trace_on(pool->rt))
        return;
    for (int i = 1; i <= pool->helpers; i++)
        if (!pool->traces[i]) {
            char name[32];
            snprintf(name, sizeof name, "gc worker %d", i);
            /* Without memory the helper records nothing: only the trace is poorer. */
            pool->traces[i] =
                ft_trace_buffer_open(pool->rt, FT_TRACE_TID_HELPERS + (uint32_t)i, name);
        }
}

void ft_gc_pool_flush_traces(ft_gc_pool *pool)
{
    /* A helper runs only while the world is stopped, when it may not write the file: its buffer's
     * reading side is anyone's who holds the trace mutex, as here. */
    for (int i = 1; i <= pool->helpers; i++)
        if (pool->traces[i])
            ft_trace_buffer_flush_due(pool->traces[i]);
}

void ft_gc_pool_destroy(ft_gc_pool *pool)
{
    atomic_store_explicit(&pool->quit, true, memory_order_release);
    atomic_fetch_add_explicit(&pool->session, 2, memory_order_release);
    ft_futex_wake_all(&pool->session);
    for (int i = 0; i < pool->helpers; i++)
        pthread_join(pool->threads[i], NULL);
    pool->helpers = 0;
    for (int i = 0; i < FT_GC_MAX_WORKERS; i++) {
        deque_destroy(&pool->workers[i].deque);
        free(pool->workers[i].objs);
        free(pool->workers[i].tids);
        free(pool->workers[i].stack);
        pool->workers[i].stack = NULL;
        pool->workers[i].stack_n = pool->workers[i].stack_cap = 0;
        pool->workers[i].objs = NULL;
        pool->workers[i].tids = NULL;
        pool->workers[i].cap = 0;
    }
}

void ft_gc_pool_after_fork_child(ft_gc_pool *pool)
{
    /* The helpers do not exist in the child; their stacks are lost with them. */
    pool->helpers = 0;
    atomic_store_explicit(&pool->session, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->participants, 1, memory_order_relaxed);
}
