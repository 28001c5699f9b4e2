/* page.c: pages and segments: where heap memory comes from and where it goes back.
 *
 * The runtime maps segments of FT_SEGMENT_SIZE bytes aligned to the page size and carves them into
 * 64 KiB pages on demand. Pages that heaps give back enter the runtime's pool; a pool page unused for
 * FT_POOL_RELEASE_NS is decommitted (all but its first 4 KiB, which hold the header and keep the pool's
 * links valid) and is reused last. Segments are unmapped only when the runtime is freed. Large pages
 * are mappings of their own and are unmapped when released. Memory comes from and goes back to the
 * system only through the platform layer (ft_vm_map_aligned, ft_vm_release, ft_vm_decommit).
 *
 * A page given to a heap is initialised for one size class; its blocks are carved from the untouched
 * tail FT_CARVE_BATCH at a time, so a fresh page costs no more than the blocks actually used. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

#define RELEASE_KEEP 4096 /* bytes kept resident in a released pool page: its header */

/* ---- size classes: 16-byte steps to 128, then four classes per power of two up to 8 KiB ---- */

static uint8_t size_class_slow(size_t size)
{
    if (size <= 128)
        return (uint8_t)(size == 0 ? 0 : (size - 1) / 16);
    size_t s = size - 1;
    unsigned bit = (unsigned)(63 - __builtin_clzll((unsigned long long)s));
    return (uint8_t)(8 + (bit - 7) * 4 + ((s >> (bit - 2)) & 3));
}

/* Classes of sizes up to FT_CLASS_TABLE_MAX, by (size + 15) / 16: one load on the fast path. */
static const uint8_t class_table[FT_CLASS_TABLE_MAX / 16 + 1] = {
#define C4(i) size_class_const(i), size_class_const(i + 1), size_class_const(i + 2), size_class_const(i + 3)
#define size_class_const(i)                                                                        \
    ((i) <= 8 ? ((i) == 0 ? 0 : (i) - 1)                                                          \
              : (i) <= 10 ? 8 : (i) <= 12 ? 9 : (i) <= 14 ? 10 : (i) <= 16 ? 11                   \
              : (i) <= 20 ? 12 : (i) <= 24 ? 13 : (i) <= 28 ? 14 : (i) <= 32 ? 15                  \
              : (i) <= 40 ? 16 : (i) <= 48 ? 17 : (i) <= 56 ? 18 : 19)
    C4(0), C4(4), C4(8), C4(12), C4(16), C4(20), C4(24), C4(28), C4(32), C4(36), C4(40), C4(44),
    C4(48), C4(52), C4(56), C4(60), size_class_const(64)
#undef C4
#undef size_class_const
};

uint8_t ft_size_class(size_t size)
{
    if (FT_LIKELY(size <= FT_CLASS_TABLE_MAX))
        return class_table[(size + 15) / 16];
    return size_class_slow(size);
}

uint32_t ft_class_size(uint8_t c)
{
    if (c < 8)
        return 16u * (c + 1u);
    unsigned group = (c - 8u) / 4, index = (c - 8u) % 4;
    return (128u << group) + (32u << group) * (index + 1);
}

/* ---- page lists ---------------------------------------------------------------------------- */

void ft_queue_push_front(ft_page_queue *q, ft_page *p)
{
    FT_QUEUE_PUSH_FRONT(q, p);
}

void ft_queue_push_back(ft_page_queue *q, ft_page *p)
{
    FT_QUEUE_PUSH_BACK(q, p);
}

void ft_queue_remove(ft_page_queue *q, ft_page *p)
{
    FT_QUEUE_REMOVE(q, p);
}

/* ---- mappings ------------------------------------------------------------------------------ */

/* size bytes aligned to FT_PAGE_SIZE, or NULL. */
static void *map_aligned(ft_runtime *rt, size_t size)
{
    if (ft_inject_failure(rt))
        return NULL;
    return ft_vm_map_aligned(size, FT_PAGE_SIZE);
}

/* A fresh page from the pool or a segment; rt->heaps.mutex held. */
static ft_page *pool_take_locked(ft_runtime *rt)
{
    ft_heap_runtime *h = &rt->heaps;
    ft_page *page = h->pool.tail; /* most recently pooled: likely still in cache */
    if (page) {
        ft_queue_remove(&h->pool, page);
        h->pool_pages--;
        if (page->released)
            h->released_pages--;
        return page;
    }
    ft_segment *seg = h->segments;
    if (!seg || seg->carved == seg->size) {
        uint8_t *base = map_aligned(rt, FT_SEGMENT_SIZE);
        if (!base)
            return NULL;
        seg = ft_inject_failure(rt) ? NULL : malloc(sizeof *seg);
        if (!seg) {
            ft_vm_release(base, FT_SEGMENT_SIZE);
            return NULL;
        }
        *seg = (ft_segment){.next = h->segments, .base = base, .size = FT_SEGMENT_SIZE};
        h->segments = seg;
    }
    page = (ft_page *)(seg->base + seg->carved);
    seg->carved += FT_PAGE_SIZE;
    return page;
}

void ft_page_init(ft_page *page, ft_heap *heap, uint8_t size_class, uint32_t block_size)
{
    page->heap = heap;
    page->set = heap->set;
    atomic_store_explicit(&page->owner_tid, 0, memory_order_relaxed); /* not active yet */
    page->free = NULL;
    atomic_store_explicit(&page->remote_free, 0, memory_order_relaxed);
    page->next = page->prev = NULL;
    page->used = 0;
    page->reserved = 0;
    page->block_size = block_size;
    page->capacity = (uint32_t)((FT_PAGE_SIZE - FT_PAGE_HEADER) / block_size);
    page->size_class = size_class;
    page->released = 0;
    page->retire_goal = 0;
    page->mapped_size = FT_PAGE_SIZE;
}

/* A page for size_class: an empty page of that class this heap retired (reusable at once: same
 * class, same page), else a retired page whose goal was reached, else one from the pool. */
ft_page *ft_page_acquire(ft_heap *heap, uint8_t size_class)
{
    ft_runtime *rt = heap->set->rt;
    ft_page_reuse_hook *hook = &rt->heaps.hook;
    ft_page *safe = NULL;
    for (ft_page *p = heap->retired.head; p; p = p->next) {
        if (p->size_class == FT_LARGE_CLASS)
            continue; /* a mapping of its own: never re-used as a small page */
        if (p->size_class == size_class) {
            ft_queue_remove(&heap->retired, p);
            heap->set->retired_small[heap - heap->set->heaps]--;
            return p;
        }
        if (!safe && hook->is_safe(hook->ctx, p->retire_goal))
            safe = p;
    }
    if (safe) {
        ft_queue_remove(&heap->retired, safe);
        heap->set->retired_small[heap - heap->set->heaps]--;
        ft_page_init(safe, heap, size_class, ft_class_size(size_class));
        return safe;
    }
    ft_mutex_lock_internal(&rt->heaps.mutex);
    ft_page *page = pool_take_locked(rt);
    ft_mutex_unlock(&rt->heaps.mutex);
    if (!page)
        return NULL;
    atomic_fetch_add_explicit(&rt->heaps.pages, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->heaps.page_bytes, FT_PAGE_SIZE, memory_order_relaxed);
    ft_page_init(page, heap, size_class, ft_class_size(size_class));
    return page;
}

ft_page *ft_page_acquire_large(ft_heap *heap, size_t size)
{
    ft_runtime *rt = heap->set->rt;
    if (size > SIZE_MAX - FT_PAGE_HEADER - 2 * FT_PAGE_SIZE)
        return NULL;
    size_t mapped = (FT_PAGE_HEADER + size + FT_PAGE_SIZE - 1) & ~(FT_PAGE_SIZE - 1);
    /* A retired large page of this heap with the same mapping is reused at once, as a small page is
     * for its own class: the block, at the same address and of the same size, is again this heap's
     * kind of block, whatever a reader with a stale pointer still looks at. */
    for (ft_page *p = heap->retired.head; p; p = p->next) {
        if (p->size_class == FT_LARGE_CLASS && p->mapped_size == mapped) {
            ft_queue_remove(&heap->retired, p);
            heap->set->retired_large--;
            p->free = NULL;
            return p;
        }
    }
    ft_page *page = map_aligned(rt, mapped);
    if (!page)
        return NULL;
    atomic_fetch_add_explicit(&rt->heaps.pages, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->heaps.page_bytes, mapped, memory_order_relaxed);
    ft_page_init(page, heap, FT_LARGE_CLASS, 1);
    page->block_size = (uint32_t)(mapped - FT_PAGE_HEADER > UINT32_MAX ? UINT32_MAX
                                                                      : mapped - FT_PAGE_HEADER);
    page->mapped_size = mapped;
    page->capacity = 1;
    page->reserved = 1;
    return page;
}

static void pool_trim(ft_runtime *rt);

void ft_page_release(ft_runtime *rt, ft_page *page)
{
    atomic_fetch_sub_explicit(&rt->heaps.pages, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&rt->heaps.page_bytes, page->mapped_size, memory_order_relaxed);
    if (page->size_class == FT_LARGE_CLASS) {
        ft_vm_release(page, page->mapped_size);
        return;
    }
    page->heap = NULL;
    page->set = NULL;
    page->list = FT_PAGE_POOL;
    page->released = 0;
    page->pooled_at = ft_monotonic_ns();
    ft_mutex_lock_internal(&rt->heaps.mutex);
    ft_queue_push_back(&rt->heaps.pool, page);
    rt->heaps.pool_pages++;
    ft_mutex_unlock(&rt->heaps.mutex);
    pool_trim(rt);
}

/* Return idle pool pages to the system: those pooled longer than FT_POOL_RELEASE_NS ago. */
static void pool_trim(ft_runtime *rt)
{
    int64_t cutoff = ft_monotonic_ns() - FT_POOL_RELEASE_NS;
    ft_heap_runtime *h = &rt->heaps;
    ft_mutex_lock_internal(&h->mutex);
    for (ft_page *p = h->pool.head; p && p->pooled_at <= cutoff; p = p->next) {
        if (p->released)
            continue;
        ft_vm_decommit((uint8_t *)p + RELEASE_KEEP, FT_PAGE_SIZE - RELEASE_KEEP);
        p->released = 1;
        h->released_pages++;
    }
    ft_mutex_unlock(&h->mutex);
}

/* ---- blocks within a page -------------------------------------------------------------------- */

bool ft_page_carve(ft_page *page)
{
    if (page->reserved >= page->capacity)
        return false;
    uint32_t n = page->capacity - page->reserved;
    if (n > FT_CARVE_BATCH)
        n = FT_CARVE_BATCH;
    uint8_t *first = ft_page_blocks(page) + (size_t)page->reserved * page->block_size;
    ft_block *head = page->free;
    for (uint32_t i = n; i-- > 0;) {
        ft_block *b = (ft_block *)(first + (size_t)i * page->block_size);
        atomic_store_explicit(&b->next, (uintptr_t)head, memory_order_relaxed);
        head = b;
    }
    page->free = head;
    page->reserved += n;
    return true;
}

uint32_t ft_page_collect_remote(ft_page *page)
{
    if (atomic_load_explicit(&page->remote_free, memory_order_relaxed) == 0)
        return 0;
    ft_block *list = (ft_block *)atomic_exchange_explicit(&page->remote_free, 0,
                                                          memory_order_acquire);
    uint32_t n = 1;
    ft_block *tail = list;
    for (uintptr_t next; (next = atomic_load_explicit(&tail->next, memory_order_relaxed)) != 0;
         n++)
        tail = (ft_block *)next;
    atomic_store_explicit(&tail->next, (uintptr_t)page->free, memory_order_relaxed);
    page->free = list;
    page->used -= n;
    return n;
}

void ft_segments_unmap(ft_runtime *rt)
{
    for (ft_segment *seg = rt->heaps.segments, *next; seg; seg = next) {
        next = seg->next;
        ft_vm_release(seg->base, seg->size);
        free(seg);
    }
    rt->heaps.segments = NULL;
}
