/* tlbc.c: thread-local copies of code buffers (see include/ftrt/tlbc.h for the model and the rule
 * that makes freeing copies safe).
 *
 * Readers (ft_tlbc_get) load the copies array with acquire and an entry with acquire, without a lock.
 * Writers hold the buffer's mutex: a new entry is stored with release after the copy is complete; a
 * grown array is fully built before its release store, and the old one is freed with QSBR, because a
 * reader may still be looking at it until its next quiescent point. Copies themselves are freed only
 * by ft_tlbc_destroy (no thread uses the buffer any more) and by ft_tlbc_clear_unused_stopped (inside
 * a stop the caller holds, only indices no started thread holds; ft_tlbc_clear_unused wraps it in a
 * stop of its own unless its caller holds one). The core writes entries under the registry's lock
 * but not the buffers' own: every thread that could take a buffer's lock is suspended or detached,
 * and one suspended while holding it (in the host's copy callback) is making the copy of its own
 * index, which the core never frees. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

static size_t array_bytes(size_t entries)
{
    return sizeof(ft_tlbc_array) + entries * sizeof(void *);
}

static ft_tlbc_array *array_new(ft_thread *t, size_t entries)
{
    ft_tlbc_array *a = ft_inject_failure(t->rt) ? NULL : ft_malloc(t, array_bytes(entries));
    if (!a)
        return NULL;
    a->size = entries;
    for (size_t i = 0; i < entries; i++)
        atomic_store_explicit(&a->entries[i], NULL, memory_order_relaxed);
    return a;
}

ft_status ft_tlbc_init(ft_tlbc *c, ft_thread *t, void *code, size_t size, ft_tlbc_copy_fn copy,
                       void *arg)
{
    if (!code || !copy)
        return FT_EINVAL;
    ft_tlbc_array *a = array_new(t, 1);
    if (!a)
        return FT_ENOMEM;
    atomic_store_explicit(&a->entries[0], code, memory_order_relaxed);
    atomic_store_explicit(&c->copies, a, memory_order_release);
    c->mutex = (ft_mutex){0}; /* unlocked; c is not published yet */
    c->size = size;
    c->copy = copy;
    c->arg = arg;
    c->rt = t->rt;
    ft_runtime *rt = t->rt;
    ft_mutex_lock_internal(&rt->tlbc.mutex);
    FT_LIST_PUSH(rt->tlbc.list, c);
    ft_mutex_unlock(&rt->tlbc.mutex);
    return FT_OK;
}

void ft_tlbc_destroy(ft_tlbc *c, ft_thread *t)
{
    ft_runtime *rt = c->rt;
    ft_mutex_lock_internal(&rt->tlbc.mutex);
    FT_LIST_REMOVE(rt->tlbc.list, c);
    ft_mutex_unlock(&rt->tlbc.mutex);
    ft_tlbc_array *a = atomic_load_explicit(&c->copies, memory_order_acquire);
    for (size_t i = 1; i < a->size; i++)
        free(atomic_load_explicit(&a->entries[i], memory_order_relaxed));
    ft_free(t, a);
}

void *ft__tlbc_get_slow(ft_tlbc *c, ft_thread *t)
{
    size_t index = t->head.tlbc_index;
    void *code = NULL;
    ft_mutex_lock(&c->mutex);
    ft_tlbc_array *a = atomic_load_explicit(&c->copies, memory_order_relaxed);
    if (index >= a->size) {
        size_t entries = a->size;
        while (entries <= index)
            entries *= 2;
        ft_tlbc_array *grown = array_new(t, entries);
        if (!grown)
            goto out;
        for (size_t i = 0; i < a->size; i++)
            atomic_store_explicit(&grown->entries[i],
                                  atomic_load_explicit(&a->entries[i], memory_order_relaxed),
                                  memory_order_relaxed);
        atomic_store_explicit(&c->copies, grown, memory_order_release);
        ft_free_delayed(t, a, array_bytes(a->size)); /* readers may still hold it */
        a = grown;
    }
    code = atomic_load_explicit(&a->entries[index], memory_order_relaxed);
    if (!code) {
        code = ft_inject_failure(t->rt) ? NULL : malloc(c->size ? c->size : 1);
        if (code) {
            c->copy(code, atomic_load_explicit(&a->entries[0], memory_order_relaxed), c->size,
                    c->arg);
            atomic_store_explicit(&a->entries[index], code, memory_order_release);
        }
    }
out:
    ft_mutex_unlock(&c->mutex);
    if (!code)
        ft_set_last_error(FT_ENOMEM);
    return code;
}

bool ft_tlbc_enabled(const ft_runtime *rt)
{
    return !rt->config.tlbc_disabled;
}

size_t ft_tlbc_clear_unused_stopped(ft_runtime *rt)
{
    FT_ASSERT(ft_stw_held_by_caller(rt));
    size_t freed = 0;
    /* The head lock: threads that start or stop during a stop link or unlink their states. One that
     * starts after this walk holds an index no started thread held, whose copy goes below: it makes
     * a fresh one on first use, as any new thread does. */
    ft_mutex_lock_internal(&rt->head_mutex);
    size_t limit = 1;
    for (ft_thread *t = rt->threads; t; t = t->next)
        if (t->head.tlbc_index + 1 > limit)
            limit = t->head.tlbc_index + 1;
    bool *live = calloc(limit, sizeof *live); /* no memory: free nothing this time */
    if (live)
        for (ft_thread *t = rt->threads; t; t = t->next)
            live[t->head.tlbc_index] = true;
    ft_mutex_unlock(&rt->head_mutex);
    ft_mutex_lock_internal(&rt->tlbc.mutex);
    for (ft_tlbc *c = live ? rt->tlbc.list : NULL; c; c = c->next) {
        ft_tlbc_array *a = atomic_load_explicit(&c->copies, memory_order_relaxed);
        for (size_t i = 1; i < a->size; i++) {
            void *code = atomic_load_explicit(&a->entries[i], memory_order_relaxed);
            if (!code || (i < limit && live[i]))
                continue;
            atomic_store_explicit(&a->entries[i], NULL, memory_order_relaxed);
            free(code);
            freed++;
        }
    }
    ft_mutex_unlock(&rt->tlbc.mutex);
    free(live);
    return freed;
}

size_t ft_tlbc_clear_unused(ft_runtime *rt)
{
    bool stopped = ft_stw_stop_unless_held(rt, "tlbc clear");
    size_t freed = ft_tlbc_clear_unused_stopped(rt);
    if (stopped)
        ft_start_the_world(rt);
    return freed;
}

size_t ft_tlbc_count(ft_runtime *rt)
{
    /* Inside a stop, as the other statistics: a grower may retire the array being read, and the
     * caller may not be attached (so not protected by QSBR), but a retired array is freed only after
     * the restart. A buffer's own mutex would do too, but it comes before the registry's in the lock
     * order (its holder may stop the world: docs/architecture.md). */
    size_t n = 0;
    bool stopped = ft_stw_stop_unless_held(rt, "tlbc count");
    ft_mutex_lock_internal(&rt->tlbc.mutex);
    for (ft_tlbc *c = rt->tlbc.list; c; c = c->next) {
        ft_tlbc_array *a = atomic_load_explicit(&c->copies, memory_order_acquire);
        for (size_t i = 1; i < a->size; i++)
            n += atomic_load_explicit(&a->entries[i], memory_order_relaxed) != NULL;
    }
    ft_mutex_unlock(&rt->tlbc.mutex);
    if (stopped)
        ft_start_the_world(rt);
    return n;
}
