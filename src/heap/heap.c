/* heap.c: per-thread heaps: allocation, local and remote frees, abandonment and adoption, walking.
 *
 * Allocation takes the first block of the page that heap->direct names for the size (the head of
 * the size class's active list; inline, heap/heap.h). When that page has none, the slow path, in
 * order: pushes the thread's own remote batch, takes the head page's remote frees, carves more of its
 * tail, moves exhausted pages to the full list, revives a full page that has received remote frees,
 * and finally acquires a page (see page.c for the reuse rule). Every change of an active list's head
 * goes through list_add/list_remove, which keep heap->direct in step.
 *
 * A page on an active list of an owned set carries its owner's OS thread id (owner_tid; 0 on any
 * other list or while the set is abandoned): list_add/list_remove keep it in step, and adoption and
 * abandonment rewrite it for every active page, so the owner's free of an object can recognise its
 * own active page without its thread state (ft_heap_free_owned).
 *
 * A free by the heap's owner pushes onto the page's own free list (inline); a page that becomes
 * empty is retired (unless it is its class's only active page, kept to avoid thrashing), and a full
 * page that gets a block back returns to the active list. A free by any other thread goes into that
 * thread's remote batch (heap/heap.h): a private chain for one page, pushed onto the page's
 * remote-free stack with one CAS when the thread frees into another page, when the chain is full,
 * when the thread detaches or stops or reaches its allocation slow path, and before a walk.
 *
 * A stopping thread pushes its batch, takes its remote frees and retires what became empty, then
 * abandons its heap set if any block is still allocated (or frees it). Its blocks stay valid; other
 * threads' frees go to the remote stacks; the next thread to start adopts the set whole. The set's
 * pages keep pointing to their set; only the set's owner changes, so "is this my block?" is a
 * comparison of set pointers (or, for an active page, of its owner_tid with the thread pointer).
 *
 * Walking (world stopped): every set's remote batch is pushed first, so that a freed block is never
 * taken for a live one. Then every page of every set, owned or abandoned, is scanned; a page's free
 * blocks are marked in a bitmap on the stack (its free list, its remote stack, its uncarved tail),
 * and every other block is visited. Nothing is allocated. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

#define RETIRED_KEEP 4 /* empty pages a heap keeps for quick reuse before giving safe ones back */

/* Never written: the fast path only writes a page whose free list is not empty. */
const ft_page ft_page_empty;

static uint64_t default_retire(void *ctx)
{
    (void)ctx;
    return 0;
}

static bool default_is_safe(void *ctx, uint64_t goal)
{
    (void)ctx;
    (void)goal;
    return true;
}

static void default_flush(void *ctx)
{
    (void)ctx;
}

void ft_heap_runtime_init(ft_runtime *rt)
{
    rt->heaps.hook = (ft_page_reuse_hook){default_retire, default_is_safe, default_flush, NULL};
}

void ft_heap_set_reuse_hook(ft_runtime *rt, const ft_page_reuse_hook *hook)
{
    rt->heaps.hook = *hook;
}

static void release_large_pages(ft_runtime *rt, ft_page_queue *q)
{
    for (ft_page *p = q->head, *next; p; p = next) {
        next = p->next;
        if (p->size_class == FT_LARGE_CLASS) {
            ft_queue_remove(q, p);
            ft_page_release(rt, p);
        }
    }
}

void ft_heap_runtime_destroy(ft_runtime *rt)
{
    for (ft_heap_set *set = rt->heaps.all, *next; set; set = next) {
        next = set->next;
        for (int k = 0; k < FT_HEAP_KINDS; k++) {
            release_large_pages(rt, &set->heaps[k].large);
            release_large_pages(rt, &set->heaps[k].retired);
        }
        free(set);
    }
    rt->heaps.all = NULL;
    ft_segments_unmap(rt);
}

/* ---- page lists and the direct slots --------------------------------------------------------- */

/* Point the direct slots of class c (its sizes up to FT_DIRECT_MAX) at its active list's head. */
static void sync_direct(ft_heap *heap, uint8_t c)
{
    unsigned lo = c == 0 ? 0 : ft_class_size((uint8_t)(c - 1)) / 16 + 1, hi = ft_class_size(c) / 16;
    if (lo >= FT_DIRECT_SLOTS)
        return;
    if (hi >= FT_DIRECT_SLOTS)
        hi = FT_DIRECT_SLOTS - 1;
    ft_page *head = heap->active[c].head ? heap->active[c].head : (ft_page *)&ft_page_empty;
    for (unsigned w = lo; w <= hi; w++)
        heap->direct[w] = head;
}

static void direct_init(ft_heap *heap)
{
    for (size_t w = 0; w < FT_DIRECT_SLOTS; w++)
        heap->direct[w] = (ft_page *)&ft_page_empty;
}

static ft_page_queue *queue_of(ft_heap *heap, const ft_page *page, enum ft_page_list list)
{
    switch (list) {
    case FT_PAGE_ACTIVE:
        return &heap->active[page->size_class];
    case FT_PAGE_FULL:
        return &heap->full[page->size_class];
    case FT_PAGE_RETIRED:
        return &heap->retired;
    default:
        return &heap->large;
    }
}

/* The OS thread that may free into set's active pages on the fast path (heap/heap.h): its
 * owner's, or 0 while it is abandoned. */
static uintptr_t owner_tid_of(ft_heap_set *set)
{
    ft_thread *owner = atomic_load_explicit(&set->owner, memory_order_relaxed);
    return owner ? owner->os_thread : 0;
}

/* Put page on one of heap's lists (at its front or back). */
static void list_add(ft_heap *heap, ft_page *page, enum ft_page_list list, bool front)
{
    ft_page_queue *q = queue_of(heap, page, list);
    page->list = (uint8_t)list;
    if (front)
        ft_queue_push_front(q, page);
    else
        ft_queue_push_back(q, page);
    if (list == FT_PAGE_ACTIVE) {
        sync_direct(heap, page->size_class);
        atomic_store_explicit(&page->owner_tid, owner_tid_of(heap->set), memory_order_relaxed);
    }
}

/* Take page off the list it is on. */
static void list_remove(ft_heap *heap, ft_page *page)
{
    ft_queue_remove(queue_of(heap, page, (enum ft_page_list)page->list), page);
    if (page->list == FT_PAGE_ACTIVE) {
        sync_direct(heap, page->size_class);
        atomic_store_explicit(&page->owner_tid, 0, memory_order_relaxed);
    }
}

/* Give set's active pages the owner_tid of its new owner (or 0 when it is abandoned). */
static void set_owner_tid(ft_heap_set *set)
{
    uintptr_t tid = owner_tid_of(set);
    for (int k = 0; k < FT_HEAP_KINDS; k++)
        for (int c = 0; c < FT_SIZE_CLASSES; c++)
            for (ft_page *p = set->heaps[k].active[c].head; p; p = p->next)
                atomic_store_explicit(&p->owner_tid, tid, memory_order_relaxed);
}

/* ---- allocation ------------------------------------------------------------------------------ */

static void *pop_block(ft_page *page)
{
    ft_block *b = page->free;
    page->free = (ft_block *)atomic_load_explicit(&b->next, memory_order_relaxed);
    page->used++;
    return b;
}

static void retire(ft_heap *heap, ft_page *page)
{
    ft_page_reuse_hook *hook = &heap->set->rt->heaps.hook;
    page->retire_goal = hook->retire(hook->ctx);
    list_add(heap, page, FT_PAGE_RETIRED, false);
}

/* Give retired pages whose goal was reached back to the runtime: every large page (a mapping that
 * serves no other size), and small pages beyond `keep`, which stay for quick reuse. */
static void release_retired(ft_heap *heap, size_t keep)
{
    ft_runtime *rt = heap->set->rt;
    ft_page_reuse_hook *hook = &rt->heaps.hook;
    size_t small = 0;
    for (ft_page *p = heap->retired.head; p; p = p->next)
        small += p->size_class != FT_LARGE_CLASS;
    for (ft_page *p = heap->retired.head, *next; p; p = next) {
        next = p->next;
        bool large = p->size_class == FT_LARGE_CLASS;
        if ((!large && small <= keep) || !hook->is_safe(hook->ctx, p->retire_goal))
            continue;
        ft_queue_remove(&heap->retired, p);
        ft_page_release(rt, p);
        small -= !large;
    }
}

static void *alloc_large(ft_heap *heap, size_t size)
{
    ft_page *page = ft_page_acquire_large(heap, size);
    if (!page)
        return NULL;
    list_add(heap, page, FT_PAGE_LARGE, false);
    page->used = 1;
    return ft_page_blocks(page);
}

static void *alloc_slow(ft_heap *heap, uint8_t c)
{
    ft_page_queue *active = &heap->active[c];
    for (ft_page *page = active->head, *next; page; page = next) {
        next = page->next;
        if (page->free || ft_page_collect_remote(page) || ft_page_carve(page)) {
            if (page != active->head) {
                list_remove(heap, page);
                list_add(heap, page, FT_PAGE_ACTIVE, true);
            }
            return pop_block(page);
        }
        list_remove(heap, page);
        list_add(heap, page, FT_PAGE_FULL, false);
    }
    for (ft_page *page = heap->full[c].head; page; page = page->next) {
        if (ft_page_collect_remote(page)) {
            list_remove(heap, page);
            list_add(heap, page, FT_PAGE_ACTIVE, true);
            return pop_block(page);
        }
    }
    ft_page *page = ft_page_acquire(heap, c);
    if (!page)
        return NULL;
    if (!page->free)
        ft_page_carve(page);
    list_add(heap, page, FT_PAGE_ACTIVE, true);
    return pop_block(page);
}

static void flush_batch(ft_remote_batch *rb);

void *ft_heap_alloc_slow(ft_heap *heap, size_t size)
{
    uint8_t c = size > FT_SMALL_MAX ? FT_LARGE_CLASS : ft_size_class(size);
    ft_page *page = c == FT_LARGE_CLASS ? NULL : heap->active[c].head;
    if (page && page->free)
        return pop_block(page); /* a size without a direct slot */
    /* Work to do: a good moment to hand over what this thread freed into others' pages. */
    flush_batch(&heap->set->batch);
    return c == FT_LARGE_CLASS ? alloc_large(heap, size) : alloc_slow(heap, c);
}

/* ---- free ------------------------------------------------------------------------------------ */

/* The owner's free (already on page->free, used already decremented) emptied the page or went
 * into a full one. */
void ft_heap_free_local_slow(ft_page *page)
{
    ft_heap *heap = page->heap;
    if (page->used != 0) { /* a full page has room again */
        list_remove(heap, page);
        list_add(heap, page, FT_PAGE_ACTIVE, false);
        return;
    }
    if (page->size_class != FT_LARGE_CLASS) {
        ft_page_queue *active = &heap->active[page->size_class];
        if (page->list == FT_PAGE_ACTIVE && active->head == page && active->tail == page)
            return; /* the class's only page: keep it */
    }
    list_remove(heap, page);
    retire(heap, page);
    release_retired(heap, RETIRED_KEEP);
}

/* Push the chain head..tail onto page's remote-free stack: one CAS. The release publishes the
 * chain's links (and the blocks' last contents) to the owner, who takes the stack with acquire. */
static void push_remote(ft_page *page, ft_block *head, ft_block *tail)
{
    uintptr_t top = atomic_load_explicit(&page->remote_free, memory_order_relaxed);
    do
        atomic_store_explicit(&tail->next, top, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&page->remote_free, &top, (uintptr_t)head,
                                                  memory_order_release, memory_order_relaxed));
}

static void flush_batch(ft_remote_batch *rb)
{
    if (!rb->page)
        return;
    push_remote(rb->page, rb->head, rb->tail);
    rb->page = NULL;
    rb->head = rb->tail = NULL;
    rb->count = 0;
}

void ft_heap_flush_remote(ft_thread *t)
{
    if (t->heap.set)
        flush_batch(&t->heap.set->batch);
}

/* A free by a thread that does not own the page: into the thread's batch when it has a heap set
 * (and the block is small), else pushed at once. Counted in the freeing thread's own counter
 * (summed by ft_heap_get_stats), so that no shared cache line is written. */
void ft_heap_free_remote(ft_thread *t, ft_page *page, ft_block *b)
{
    ft_heap_set *own = t ? t->heap.set : NULL;
    if (own && page->size_class != FT_LARGE_CLASS) {
        ft_remote_batch *rb = &own->batch;
        if (rb->page != page) {
            flush_batch(rb);
            rb->page = page;
            rb->tail = b;
        }
        atomic_store_explicit(&b->next, (uintptr_t)rb->head, memory_order_relaxed);
        rb->head = b;
        if (++rb->count == FT_REMOTE_BATCH)
            flush_batch(rb);
    } else {
        push_remote(page, b, b);
    }
    if (t)
        atomic_store_explicit(&t->heap.remote_frees,
                              atomic_load_explicit(&t->heap.remote_frees, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&page->set->rt->heaps.remote_frees, 1, memory_order_relaxed);
}

void ft_heap_free_block(ft_thread *t, void *p)
{
    ft_heap_free(t, t ? t->heap.set : NULL, p);
}

/* ---- collection, thread start and stop ------------------------------------------------------- */

/* Take every page's remote frees and retire the pages that became empty. */
static void collect_queue(ft_heap *heap, ft_page_queue *q)
{
    for (ft_page *page = q->head, *next; page; page = next) {
        next = page->next;
        if (page->size_class == FT_LARGE_CLASS) {
            if (atomic_load_explicit(&page->remote_free, memory_order_acquire) != 0) {
                atomic_store_explicit(&page->remote_free, 0, memory_order_relaxed);
                page->used = 0;
            }
        } else {
            ft_page_collect_remote(page);
        }
        if (page->used == 0) {
            list_remove(heap, page);
            retire(heap, page);
        }
    }
}

/* Take remote frees, retire the pages that became empty, give back what may be given back. */
static void collect_set(ft_heap_set *set)
{
    for (int k = 0; k < FT_HEAP_KINDS; k++) {
        ft_heap *heap = &set->heaps[k];
        for (int c = 0; c < FT_SIZE_CLASSES; c++) {
            collect_queue(heap, &heap->active[c]);
            collect_queue(heap, &heap->full[c]);
        }
        collect_queue(heap, &heap->large);
    }
    ft_page_reuse_hook *hook = &set->rt->heaps.hook;
    hook->flush(hook->ctx);
    for (int k = 0; k < FT_HEAP_KINDS; k++)
        release_retired(&set->heaps[k], 0);
}

static bool set_is_empty(const ft_heap_set *set)
{
    for (int k = 0; k < FT_HEAP_KINDS; k++) {
        const ft_heap *heap = &set->heaps[k];
        if (heap->retired.head || heap->large.head)
            return false;
        for (int c = 0; c < FT_SIZE_CLASSES; c++)
            if (heap->active[c].head || heap->full[c].head)
                return false;
    }
    return true;
}

ft_status ft_heap_thread_start(ft_thread *t)
{
    ft_runtime *rt = t->rt;
    ft_heap_runtime *h = &rt->heaps;
    ft_mutex_lock_internal(&h->mutex);
    for (ft_heap_set *set = h->all; set; set = set->next) {
        if (set->abandoned) {
            set->abandoned = false;
            atomic_store_explicit(&set->owner, t, memory_order_relaxed);
            set_owner_tid(set);
            atomic_fetch_sub_explicit(&h->abandoned, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&h->adopted, 1, memory_order_relaxed);
            ft_mutex_unlock(&h->mutex);
            t->heap.set = set;
            return FT_OK;
        }
    }
    ft_mutex_unlock(&h->mutex);

    ft_heap_set *set = ft_inject_failure(rt) ? NULL : calloc(1, sizeof *set);
    if (!set)
        return FT_ENOMEM;
    set->rt = rt;
    for (int k = 0; k < FT_HEAP_KINDS; k++) {
        set->heaps[k].set = set;
        set->heaps[k].kind = (ft_heap_kind)k;
        direct_init(&set->heaps[k]);
    }
    atomic_store_explicit(&set->owner, t, memory_order_relaxed);
    ft_mutex_lock_internal(&h->mutex);
    set->next = h->all;
    if (h->all)
        h->all->prev = set;
    h->all = set;
    ft_mutex_unlock(&h->mutex);
    t->heap.set = set;
    return FT_OK;
}

void ft_heap_abandon(ft_thread *t)
{
    ft_heap_set *set = t->heap.set;
    ft_heap_runtime *h = &t->rt->heaps;
    if (!set)
        return;
    flush_batch(&set->batch);
    atomic_store_explicit(&set->owner, NULL, memory_order_relaxed);
    set_owner_tid(set);
    set->abandoned = true;
    atomic_fetch_add_explicit(&h->abandoned, 1, memory_order_relaxed);
    t->heap.set = NULL;
}

void ft_heap_thread_stop(ft_thread *t)
{
    ft_heap_set *set = t->heap.set;
    ft_heap_runtime *h = &t->rt->heaps;
    if (!set)
        return;
    flush_batch(&set->batch);
    collect_set(set);
    ft_mutex_lock_internal(&h->mutex);
    atomic_store_explicit(&set->owner, NULL, memory_order_relaxed);
    set_owner_tid(set);
    bool empty = set_is_empty(set);
    if (empty) {
        if (set->prev)
            set->prev->next = set->next;
        else
            h->all = set->next;
        if (set->next)
            set->next->prev = set->prev;
    } else {
        set->abandoned = true;
        atomic_fetch_add_explicit(&h->abandoned, 1, memory_order_relaxed);
    }
    ft_mutex_unlock(&h->mutex);
    t->heap.set = NULL;
    if (empty)
        free(set);
}

/* ---- public raw-memory API ------------------------------------------------------------------- */

void *ft_malloc(ft_thread *t, size_t size)
{
    if (FT_UNLIKELY(atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_ATTACHED))
        ft_fatal("ft_malloc: thread state %p is not attached", (void *)t);
    void *p = ft_heap_alloc(&t->heap.set->heaps[FT_HEAP_RAW], size);
    if (!p)
        ft_set_last_error(FT_ENOMEM);
    return p;
}

void *ft_calloc(ft_thread *t, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) {
        ft_set_last_error(FT_ENOMEM);
        return NULL;
    }
    void *p = ft_malloc(t, count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void ft_free(ft_thread *t, void *p)
{
    if (p)
        ft_heap_free(t, t ? t->heap.set : NULL, p);
}

size_t ft_usable_size(const void *p)
{
    return ft_page_of(p)->block_size;
}

ft_thread *ft_heap_block_owner(const void *p)
{
    return atomic_load_explicit(&ft_page_of(p)->set->owner, memory_order_relaxed);
}

/* ---- walking --------------------------------------------------------------------------------- */

#define BITMAP_WORDS ((FT_PAGE_SIZE / 16 + 63) / 64)

static void mark_free(const ft_page *page, uint64_t *bits, const ft_block *b)
{
    size_t i = (size_t)((const uint8_t *)b - ft_page_blocks((ft_page *)page)) / page->block_size;
    bits[i / 64] |= (uint64_t)1 << (i % 64);
}

/* Visit the allocated blocks of one page; false if the visitor asked to stop. */
static bool visit_page(ft_page *page, bool objects, ft_block_visitor fn, void *arg)
{
    if (page->size_class == FT_LARGE_CLASS) {
        if (page->used == 0 || atomic_load_explicit(&page->remote_free, memory_order_relaxed))
            return true;
        void *b = ft_page_blocks(page);
        if (objects &&
            (atomic_load_explicit(&((ft_object *)b)->ob_gc_bits, memory_order_relaxed) & FT_GC_FREED))
            return true;
        return fn(b, page->block_size, arg);
    }
    uint64_t bits[BITMAP_WORDS] = {0};
    for (const ft_block *b = page->free; b;
         b = (const ft_block *)atomic_load_explicit(&((ft_block *)b)->next, memory_order_relaxed))
        mark_free(page, bits, b);
    for (uintptr_t r = atomic_load_explicit(&page->remote_free, memory_order_relaxed); r;
         r = atomic_load_explicit(&((ft_block *)r)->next, memory_order_relaxed))
        mark_free(page, bits, (const ft_block *)r);
    uint8_t *base = ft_page_blocks(page);
    for (uint32_t i = 0; i < page->reserved; i++) {
        if (bits[i / 64] & ((uint64_t)1 << (i % 64)))
            continue;
        void *b = base + (size_t)i * page->block_size;
        /* Not on a free list, yet freed: an object cached on a freelist (release builds mark only
         * those; blocks back in the heap were found on the lists above). */
        if (objects &&
            (atomic_load_explicit(&((ft_object *)b)->ob_gc_bits, memory_order_relaxed) & FT_GC_FREED))
            continue;
        if (!fn(b, page->block_size, arg))
            return false;
    }
    return true;
}

static bool visit_queue(ft_page_queue *q, bool objects, ft_block_visitor fn, void *arg)
{
    for (ft_page *p = q->head; p; p = p->next)
        if (!visit_page(p, objects, fn, arg))
            return false;
    return true;
}

static void visit_all(ft_runtime *rt, ft_heap_kind kind, ft_block_visitor fn, void *arg)
{
    bool objects = kind != FT_HEAP_RAW;
    ft_mutex_lock_internal(&rt->heaps.mutex);
    /* Every thread is stopped (or is the caller): blocks waiting in a batch are free, not live. */
    for (ft_heap_set *set = rt->heaps.all; set; set = set->next)
        flush_batch(&set->batch);
    for (ft_heap_set *set = rt->heaps.all; set; set = set->next) {
        ft_heap *heap = &set->heaps[kind];
        bool go = visit_queue(&heap->large, objects, fn, arg);
        for (int c = 0; go && c < FT_SIZE_CLASSES; c++)
            go = visit_queue(&heap->active[c], objects, fn, arg) &&
                 visit_queue(&heap->full[c], objects, fn, arg);
        if (!go)
            break;
    }
    ft_mutex_unlock(&rt->heaps.mutex);
}

ft_status ft_heap_visit(ft_runtime *rt, ft_heap_kind kind, ft_block_visitor fn, void *arg)
{
    if ((unsigned)kind >= FT_HEAP_KINDS || !fn)
        return FT_EINVAL;
    if (!ft_stw_held_by_caller(rt))
        return FT_EPERM;
    visit_all(rt, kind, fn, arg);
    return FT_OK;
}

static bool count_block(void *block, size_t size, void *arg)
{
    (void)block;
    ft_heap_stats *s = arg;
    s->live_blocks++;
    s->live_bytes += size;
    return true;
}

void ft_heap_get_stats(ft_runtime *rt, ft_heap_stats *out)
{
    memset(out, 0, sizeof *out);
    bool stop = ft_stw_stop_unless_held(rt);
    for (int k = 0; k < FT_HEAP_KINDS; k++)
        visit_all(rt, (ft_heap_kind)k, count_block, out);
    ft_heap_runtime *h = &rt->heaps;
    ft_mutex_lock_internal(&h->mutex);
    out->pool_pages = h->pool_pages;
    out->released_pages = h->released_pages;
    ft_mutex_unlock(&h->mutex);
    if (stop)
        ft_start_the_world(rt);
    out->pages = atomic_load_explicit(&h->pages, memory_order_relaxed);
    out->page_bytes = atomic_load_explicit(&h->page_bytes, memory_order_relaxed);
    out->remote_frees = atomic_load_explicit(&h->remote_frees, memory_order_relaxed);
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t; t = t->next)
        out->remote_frees += atomic_load_explicit(&t->heap.remote_frees, memory_order_relaxed);
    ft_mutex_unlock(&rt->head_mutex);
    out->abandoned_heaps = atomic_load_explicit(&h->abandoned, memory_order_relaxed);
    out->adopted_heaps = atomic_load_explicit(&h->adopted, memory_order_relaxed);
}
