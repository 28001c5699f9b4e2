/* runtime.c: creating, describing and freeing a runtime.
 *
 * A runtime is one allocation holding everything ftrt keeps for it; freeing it is refused while any
 * thread state is started, because those threads could still touch it. */
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
