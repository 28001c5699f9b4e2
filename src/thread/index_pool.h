/* thread/index_pool.h: smallest-first reusable indices (internal: thread indices, and any per-thread
 * array that wants small dense keys).
 *
 * Hands out small non-negative indices, always the smallest free one, so that arrays indexed by them
 * stay short and entries made for an index are reused by its next holder. Freed indices sit in a
 * binary min-heap whose capacity always covers every index ever handed out, so freeing never
 * allocates and cannot fail (thread teardown relies on that). Thread-safe; the lock is internal. */
#ifndef FTRT_THREAD_INDEX_POOL_H
#define FTRT_THREAD_INDEX_POOL_H

#include "ftrt/lock.h"

typedef struct ft_index_pool {
    ft_mutex mutex;    /* guards every field below */
    uint32_t next;     /* the lowest index never handed out */
    uint32_t size;     /* freed indices in heap[] */
    uint32_t capacity; /* heap[] slots; >= next */
    uint32_t *heap;    /* min-heap of freed indices */
} ft_index_pool;

#define FT_INDEX_POOL_INIT {{0}, 0, 0, 0, NULL}

void ft_index_pool_init(ft_index_pool *p);
void ft_index_pool_destroy(ft_index_pool *p);
/* The smallest free index, or FT_ENOMEM if the heap could not grow (nothing changed). */
ft_status ft_index_pool_alloc(ft_index_pool *p, uint32_t *out);
/* Give an index back. Never allocates. Fatal for an index that was never handed out or is already
 * free. */
void ft_index_pool_free(ft_index_pool *p, uint32_t index);

#endif
