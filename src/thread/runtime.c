/* runtime.c: creating, describing and freeing a runtime.
 *
 * A runtime is one allocation holding everything ftrt keeps for it (plus the heap's segments);
 * freeing it is refused while any thread state is started, because those threads could still touch
 * it. Before it frees anything, it runs the delayed frees and decrefs that stopped threads handed to
 * the runtime's queue and no thread ran: with no thread left every goal is reachable, but a
 * destructor needs an attached thread, so it starts one on the calling OS thread for the purpose
 * (ft_thread_start and ft_thread_stop, as a host thread would), runs everything (and what those
 * destructors queue in turn), and stops it. Then it releases all heap memory, including objects
 * still alive in abandoned heaps (their destructors never run). A trace asked for by the config
 * starts with the runtime and is written when it is freed (trace/trace.c). */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

void ft_config_init(ft_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->stw_repoll_ns = FT_NS_PER_MS;
    cfg->stw_spin_ns = 20 * FT_NS_PER_US;
    const char *tlbc = getenv("FTRT_TLBC");
    cfg->tlbc_disabled = tlbc && strcmp(tlbc, "0") == 0;
    const char *checks = getenv("FTRT_EXPENSIVE_CHECKS");
#ifdef FTRT_DEBUG
    cfg->expensive_checks = !(checks && strcmp(checks, "0") == 0);
#else
    cfg->expensive_checks = checks && strcmp(checks, "1") == 0;
#endif
    const char *workers = getenv("FTRT_GC_WORKERS");
    int cpus = ft_cpu_count();
    cfg->gc_workers = workers && atoi(workers) > 0 ? atoi(workers) : cpus < 8 ? cpus : 8;
    if (cfg->gc_workers > FT_GC_MAX_WORKERS)
        cfg->gc_workers = FT_GC_MAX_WORKERS;
    const char *per_worker = getenv("FTRT_GC_OBJECTS_PER_WORKER");
    cfg->gc_objects_per_worker = per_worker && atoll(per_worker) > 0 ? atoll(per_worker) : 0;
}

/* Free everything rt holds, once no thread is left; returns the trace's status (FT_EIO: a write
 * failed). */
static ft_status destroy(ft_runtime *rt)
{
    ft_gc_runtime_destroy(rt); /* first: its marking helpers close their trace buffers */
    ft_status traced = ft_trace_runtime_destroy(rt);
    ft_stackref_debug_runtime_destroy(rt);
    ft_delayed_runtime_destroy(rt);
    ft_uniqueid_runtime_destroy(rt);
    ft_heap_runtime_destroy(rt);
    ft_qsbr_runtime_destroy(rt);
    ft_index_pool_destroy(&rt->thread_indices);
    free(rt->name_copy);
    free(rt);
    return traced;
}

ft_runtime *ft_runtime_new(const ft_config *cfg)
{
    ft_config defaults;
    ft_config_init(&defaults);
    if (!cfg)
        cfg = &defaults;
    if (cfg->stw_repoll_ns <= 0 || cfg->stw_spin_ns < 0 || cfg->gc_workers < 1 ||
        cfg->gc_workers > FT_GC_MAX_WORKERS || cfg->gc_objects_per_worker < 0) {
        ft_set_last_error(FT_EINVAL);
        return NULL;
    }
    ft_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        ft_set_last_error(FT_ENOMEM);
        return NULL;
    }
    rt->config = *cfg;
    if (cfg->name) {
        rt->name_copy = strdup(cfg->name);
        if (!rt->name_copy) {
            free(rt);
            ft_set_last_error(FT_ENOMEM);
            return NULL;
        }
    }
    rt->config.name = rt->name_copy;
    rt->config.trace = NULL; /* the caller's string: read here only */
    ft_trace_runtime_init(rt);
    ft_index_pool_init(&rt->thread_indices);
    if (ft_qsbr_runtime_init(rt) != FT_OK) {
        free(rt->name_copy);
        free(rt);
        ft_set_last_error(FT_ENOMEM);
        return NULL;
    }
    ft_heap_runtime_init(rt);
    ft_gc_runtime_init(rt);
    ft_delayed_install_page_hook(rt);
    atomic_store_explicit(&rt->fail_countdown, -1, memory_order_relaxed);
    ft_status traced = cfg->trace ? ft_trace_start(rt, cfg->trace) : FT_OK;
    if (traced != FT_OK) {
        destroy(rt);
        ft_set_last_error(traced);
        return NULL;
    }
    return rt;
}

static bool in_use(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    uint32_t started = rt->nthreads;
    ft_mutex_unlock(&rt->head_mutex);
    return started != 0 || ft_world_is_stopped(rt);
}

/* The last work with the runtime's objects, in a thread state of the calling OS thread started for
 * the purpose, so that destructors run as anywhere else: the delayed frees and decrefs that stopped
 * threads left in the runtime's queue, the final collections (gc/introspect.c), the end of
 * per-thread counting (objects whose ids held them up are freed), and (debug builds) the report of
 * what is left. The caller's current thread (attached to another runtime, perhaps) is its current
 * thread again afterwards. */
static ft_status last_work(ft_runtime *rt)
{
    ft_thread *current = ft_current_thread;
    ft_thread *t = ft_thread_start(rt);
    if (t) {
        ft_delayed_drain(t);
        ft_gc_finalize_runtime(rt);
        ft_uniqueid_merge(rt);
        ft_delayed_drain(t);
        ft_gc_report_leaks(rt);
        ft_thread_stop(t);
    }
    ft_current_thread = current;
    return t ? FT_OK : FT_ENOMEM;
}

ft_status ft_runtime_free(ft_runtime *rt)
{
    if (!rt)
        return FT_EINVAL;
    if (in_use(rt))
        return FT_EBUSY;
    ft_status s = last_work(rt);
    if (s != FT_OK)
        return s;
    /* A destructor may have started a thread that still runs, or left work behind it. */
    if (in_use(rt) || ft_delayed_runtime_pending(rt))
        return FT_EBUSY;
    return destroy(rt);
}

void ft_runtime_get_stats(ft_runtime *rt, ft_runtime_stats *out)
{
    out->stw_count = atomic_load_explicit(&rt->stw.count, memory_order_relaxed);
    out->stw_total_ns = atomic_load_explicit(&rt->stw.total_ns, memory_order_relaxed);
    out->stw_max_ns = atomic_load_explicit(&rt->stw.max_ns, memory_order_relaxed);
    ft_mutex_lock_internal(&rt->head_mutex);
    out->threads = rt->nthreads;
    ft_mutex_unlock(&rt->head_mutex);
}

int64_t ft_runtime_reftotal(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    int64_t total = atomic_load_explicit(&rt->reftotal, memory_order_relaxed);
    for (ft_thread *t = rt->threads; t; t = t->next)
        total += atomic_load_explicit(&t->reftotal, memory_order_relaxed);
    ft_mutex_unlock(&rt->head_mutex);
    return total;
}

void ft_debug_fail_allocation(ft_runtime *rt, int64_t nth)
{
    atomic_store_explicit(&rt->fail_countdown, nth < 0 ? -1 : nth, memory_order_relaxed);
}

/* The child of fork() has one thread: the caller. Every other thread state describes a thread that
 * no longer exists, and any internal lock may have been held by one of them. */
void ft_runtime_after_fork_child(ft_runtime *rt, ft_thread *survivor)
{
    ft_mutex *locks[] = {&rt->head_mutex, &rt->stw.mutex, &rt->heaps.mutex,
                         &rt->delayed.mutex, &rt->thread_indices.mutex, &rt->uniqueid.mutex,
                         &rt->tlbc.mutex};
    for (size_t i = 0; i < sizeof locks / sizeof locks[0]; i++)
        *locks[i] = (ft_mutex){0};
    for (uint32_t i = 0; i < FT_BRC_BUCKETS; i++)
        rt->brc[i].mutex = (ft_mutex){0};
    rt->gc.mutex = (ft_mutex){0};
    ft_gc_pool_after_fork_child(&rt->gc.pool);
    rt->stackref_debug.mutex = (ft_mutex){0};
    for (uint32_t i = 0; i < FT_WEAKREF_STRIPES; i++)
        rt->gc.weakref_locks[i] = (ft_mutex){0};
    ft_trace_after_fork_child(rt);
    atomic_store_explicit(&rt->stw.requested, false, memory_order_relaxed);
    atomic_store_explicit(&rt->stw.world_stopped, false, memory_order_relaxed);
    atomic_store_explicit(&rt->stw.requester, NULL, memory_order_relaxed);
    atomic_store_explicit(&rt->stw.owner_os, 0, memory_order_relaxed);

    for (ft_thread *t = rt->threads, *next; t; t = next) {
        next = t->next;
        if (t == survivor)
            continue;
        FT_LIST_REMOVE(rt->threads, t);
        rt->nthreads--;
        atomic_store_explicit(&t->head.qsbr_seq, 0, memory_order_relaxed);
        ft_brc_forget_thread(t);
        free(t->head.uniqueid_counts); /* its slots are lost: those objects stay alive */
        ft_freelist_thread_stop(t);
        ft_delayed_hand_over(t);
        ft_heap_abandon(t);
        atomic_fetch_add_explicit(&rt->reftotal,
                                  atomic_load_explicit(&t->reftotal, memory_order_relaxed),
                                  memory_order_relaxed);
        atomic_store_explicit(&t->state, FT_THREAD_STOPPED, memory_order_relaxed);
        ft_index_pool_free(&rt->thread_indices, t->index); /* the state stays, for reuse */
    }
}
