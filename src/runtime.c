/* runtime.c: creating, describing and freeing a runtime.
 *
 * A runtime is one allocation holding everything ftrt keeps for it (plus the heap's segments);
 * freeing it is refused while any thread state is started, because those threads could still touch
 * it. Freeing it releases all heap memory, including objects still alive in abandoned heaps. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

void ft_config_init(ft_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->stw_repoll_ns = FT_NS_PER_MS;
    cfg->stw_spin_ns = 20 * FT_NS_PER_US;
}

ft_runtime *ft_runtime_new(const ft_config *cfg)
{
    ft_config defaults;
    ft_config_init(&defaults);
    if (!cfg)
        cfg = &defaults;
    if (cfg->stw_repoll_ns <= 0 || cfg->stw_spin_ns < 0) {
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
    ft_index_pool_init(&rt->thread_indices);
    ft_heap_runtime_init(rt);
    atomic_store_explicit(&rt->fail_countdown, -1, memory_order_relaxed);
    return rt;
}

ft_status ft_runtime_free(ft_runtime *rt)
{
    if (!rt)
        return FT_EINVAL;
    ft_mutex_lock_ex(&rt->head_mutex, FT_FOREVER, FT_LOCK_DONT_DETACH);
    uint32_t started = rt->nthreads;
    ft_mutex_unlock(&rt->head_mutex);
    if (started != 0 || ft_world_is_stopped(rt))
        return FT_EBUSY;
    ft_heap_runtime_destroy(rt);
    ft_index_pool_destroy(&rt->thread_indices);
    free(rt->name_copy);
    free(rt);
    return FT_OK;
}

void ft_runtime_get_stats(ft_runtime *rt, ft_runtime_stats *out)
{
    out->stw_count = atomic_load_explicit(&rt->stw.count, memory_order_relaxed);
    out->stw_total_ns = atomic_load_explicit(&rt->stw.total_ns, memory_order_relaxed);
    out->stw_max_ns = atomic_load_explicit(&rt->stw.max_ns, memory_order_relaxed);
    ft_mutex_lock_ex(&rt->head_mutex, FT_FOREVER, FT_LOCK_DONT_DETACH);
    out->threads = rt->nthreads;
    ft_mutex_unlock(&rt->head_mutex);
}

int64_t ft_runtime_reftotal(ft_runtime *rt)
{
    ft_mutex_lock_ex(&rt->head_mutex, FT_FOREVER, FT_LOCK_DONT_DETACH);
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
