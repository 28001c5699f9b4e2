/* index_pool.c: smallest-first reusable indices from a min-heap.
 *
 * alloc pops the smallest freed index, or hands out `next` if none is free. The heap's capacity is
 * grown (doubling) whenever `next` would exceed it, so it can always hold every index ever handed
 * out, all freed at once; free then only pushes and sifts, never allocates, and cannot fail. */
#include <stdlib.h>

#include "internal/internal.h"

#define INITIAL_CAPACITY 64

void ft_index_pool_init(ft_index_pool *p)
{
    *p = (ft_index_pool)FT_INDEX_POOL_INIT;
}

void ft_index_pool_destroy(ft_index_pool *p)
{
    free(p->heap);
    ft_index_pool_init(p);
}

static void lock(ft_index_pool *p)
{
    ft_mutex_lock_internal(&p->mutex);
}

static void swap(uint32_t *a, uint32_t *b)
{
    uint32_t t = *a;
    *a = *b;
    *b = t;
}

static uint32_t heap_pop(ft_index_pool *p)
{
    uint32_t *h = p->heap, top = h[0], n = --p->size;
    h[0] = h[n];
    for (uint32_t i = 0;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l] < h[m])
            m = l;
        if (r < n && h[r] < h[m])
            m = r;
        if (m == i)
            break;
        swap(&h[i], &h[m]);
        i = m;
    }
    return top;
}

static void heap_push(ft_index_pool *p, uint32_t index)
{
    uint32_t *h = p->heap, i = p->size++;
    h[i] = index;
    while (i > 0 && h[(i - 1) / 2] > h[i]) {
        swap(&h[(i - 1) / 2], &h[i]);
        i = (i - 1) / 2;
    }
}

ft_status ft_index_pool_alloc(ft_index_pool *p, uint32_t *out)
{
    ft_status s = FT_OK;
    lock(p);
    if (p->size > 0) {
        *out = heap_pop(p);
    } else if (p->next < p->capacity) {
        *out = p->next++;
    } else if (p->capacity >= UINT32_MAX / 2) {
        s = FT_ENOMEM;
    } else {
        uint32_t capacity = p->capacity ? p->capacity * 2 : INITIAL_CAPACITY;
        uint32_t *heap = realloc(p->heap, (size_t)capacity * sizeof *heap);
        if (!heap) {
            s = FT_ENOMEM;
        } else {
            p->heap = heap;
            p->capacity = capacity;
            *out = p->next++;
        }
    }
    ft_mutex_unlock(&p->mutex);
    return s;
}

void ft_index_pool_free(ft_index_pool *p, uint32_t index)
{
    lock(p);
    bool free_already = false;
    for (uint32_t i = 0; i < p->size && !free_already; i++)
        free_already = p->heap[i] == index; /* frees are rare: a scan is cheap enough */
    if (index >= p->next || free_already)
        ft_fatal("ft_index_pool_free: index %u %s pool %p", index,
                 free_already ? "is already free in" : "was never handed out by", (void *)p);
    heap_push(p, index);
    ft_mutex_unlock(&p->mutex);
}
