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
 * when the thread detaches or stops or reaches its allocation slow path, and before a walk. A large
 * block freed by another thread empties its page, which that thread pushes onto the page's set's
 * large_freed stack; the owner's allocation slow path and its stop take the stack and retire the
 * pages, and retired large pages are tried for release on every slow path until they are gone.
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
 * and every other block is visited; a large page's block is visited unless the page is retired or
 * waits on its set's large_freed stack (remote_free not 0). Nothing is allocated.
 *
 * Young pages (for the collector's young generations; docs/gc.md). A young collection must find the
 * objects of generation 0 (and 1) without walking every page. Every object of generation 0 was
 * allocated, or tracked, since the last collection, so it lies on a page that since then was the
 * head of its class's active list in a GC heap (allocation only ever takes from that page), or that
 * received a newly tracked object. Each page carries the allocation epoch in which that last
 * happened (young_epoch); the epoch advances at every collection. Whoever stamps a page with the
 * current epoch (a compare-and-swap, so exactly one thread per page and epoch) appends it to its
 * own heap set's young list: the owner when its page becomes the head (sync_direct, on the
 * allocation slow path: the fast path stamps nothing), a tracking thread when the page it tracks an
 * object on is not stamped yet (ft_heap_note_young: one relaxed load when it is), and the collector,
 * in its stop, for the heads that stay heads into the new epoch. Large pages (one block each) are
 * not stamped: young walks visit every large page of the GC heaps. A young walk visits the blocks
 * of the listed pages, each once, skipping entries that are no longer small GC pages in a heap (an
 * entry may outlive its page's use: pages are never unmapped while the runtime lives, only pooled
 * or decommitted, so reading a stale entry's header is safe). The pages walked for generation 0 are
 * kept on the runtime's older list (they may hold generation-1 objects now) until a walk for
 * generation 1 or 2 empties it. When a list cannot grow, its overflow flag makes the next walk of
 * that kind visit every GC page: slower, never wrong. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
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
    /* Epoch 0 is what a fresh (or decommitted) page header holds: never current, so such a page is
     * stamped and listed when it first serves allocations. */
    atomic_store_explicit(&rt->heaps.young_epoch, 1, memory_order_relaxed);
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
    /* The pages' last look: every thread has stopped, every set left is abandoned. */
    ft_mutex_lock_internal(&rt->heaps.mutex);
    FT_ASSERT_EXPENSIVE(rt, ft_heap_runtime_is_valid(rt));
    ft_mutex_unlock(&rt->heaps.mutex);
    for (ft_heap_set *set = rt->heaps.all, *next; set; set = next) {
        next = set->next;
        for (int k = 0; k < FT_HEAP_KINDS; k++) {
            release_large_pages(rt, &set->heaps[k].large);
            release_large_pages(rt, &set->heaps[k].retired);
        }
        free(set->young);
        free(set);
    }
    rt->heaps.all = NULL;
    free(rt->heaps.older);
    free(rt->heaps.orphans);
    ft_segments_unmap(rt);
}

/* ---- page lists and the direct slots --------------------------------------------------------- */

static unsigned heap_kind(const ft_heap *heap)
{
    return (unsigned)(heap - heap->set->heaps);
}

static bool is_gc_heap(const ft_heap *heap)
{
    return heap_kind(heap) == FT_HEAP_GC;
}

/* Append page to a list of pages that grows by doubling; false (nothing changed) when it cannot
 * grow: the caller sets the list's overflow flag. */
static bool page_list_push(ft_page ***pages, size_t *count, size_t *cap, ft_page *page)
{
    if (*count == *cap) {
        size_t n = *cap ? *cap * 2 : 64;
        ft_page **grown = realloc(*pages, n * sizeof *grown);
        if (!grown)
            return false;
        *pages = grown;
        *cap = n;
    }
    (*pages)[(*count)++] = page;
    return true;
}

/* Append page to set's young list (its owner, or the collector with the world stopped). */
static void young_list_add(ft_heap_set *set, ft_page *page)
{
    if (!page_list_push(&set->young, &set->young_count, &set->young_cap, page))
        set->young_overflow = true;
}

/* Stamp a small page with the epoch and list it on set, unless it carries the epoch already (then
 * someone listed it). */
static void young_stamp(ft_heap_set *set, ft_page *page, uint64_t epoch)
{
    uint64_t seen = atomic_load_explicit(&page->young_epoch, memory_order_relaxed);
    while (seen != epoch)
        if (atomic_compare_exchange_weak_explicit(&page->young_epoch, &seen, epoch,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            young_list_add(set, page);
            return;
        }
}


/* Point the direct slots of class c (its sizes up to FT_DIRECT_MAX) at its active list's head, and
 * (GC heaps) stamp that head young: allocation takes only from it. */
static void sync_direct(ft_heap *heap, uint8_t c)
{
    if (is_gc_heap(heap) && heap->active[c].head)
        young_stamp(heap->set, heap->active[c].head,
                    atomic_load_explicit(&heap->set->rt->heaps.young_epoch, memory_order_relaxed));
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
    if (page->size_class == FT_LARGE_CLASS)
        heap->set->retired_large++;
    else
        heap->set->retired_small[heap_kind(heap)]++;
}

/* Give retired pages whose goal was reached back to the runtime: every large page (a mapping that
 * serves no other size), and small pages beyond `keep`, which stay for quick reuse. Pages are retired
 * at the back of the list and the hook's goals never decrease, so goals never decrease along the
 * list: the first page whose goal is not reached ends the search (one poll, not one per page). */
static void release_retired(ft_heap *heap, size_t keep)
{
    ft_runtime *rt = heap->set->rt;
    ft_page_reuse_hook *hook = &rt->heaps.hook;
    uint32_t *small = &heap->set->retired_small[heap_kind(heap)];
    if (*small <= keep && heap->set->retired_large == 0)
        return;
    for (ft_page *p = heap->retired.head, *next; p; p = next) {
        next = p->next;
        bool large = p->size_class == FT_LARGE_CLASS;
        if (!large && *small <= keep)
            continue;
        if (!hook->is_safe(hook->ctx, p->retire_goal))
            break;
        ft_queue_remove(&heap->retired, p);
        ft_page_release(rt, p);
        *small -= !large;
        heap->set->retired_large -= large;
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
        /* A freer that pushed before it could see owner_tid 0 did not flag the page: look once.
         * This store and load and the freer's push and load (push_remote) are seq_cst, so one of
         * the two sides sees the other's write. */
        atomic_store_explicit(&page->owner_tid, 0, memory_order_seq_cst);
        if (atomic_load_explicit(&page->remote_free, memory_order_seq_cst) != 0)
            atomic_fetch_or_explicit(&heap->set->full_freed, (uint8_t)(1u << heap_kind(heap)),
                                     memory_order_relaxed);
    }
    /* Full pages get blocks back only from other threads, which flag it (push_remote): without a
     * flag, none has any, and a growing heap's many full pages are not walked on every slow path. */
    uint8_t bit = (uint8_t)(1u << heap_kind(heap));
    bool freed = atomic_load_explicit(&heap->set->full_freed, memory_order_relaxed) & bit;
    if (freed)
        atomic_fetch_and_explicit(&heap->set->full_freed, (uint8_t)~bit, memory_order_acquire);
    for (ft_page *page = freed ? heap->full[c].head : NULL; page; page = page->next) {
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

/* Retire the large pages whose block another thread freed (set->large_freed; heap/heap.h), each into
 * its own heap's retired list, with a goal from the reuse hook: a lock-free reader may still be
 * reading the object that was there. Owner only. */
static void take_large_freed(ft_heap_set *set)
{
    if (atomic_load_explicit(&set->large_freed, memory_order_relaxed) == 0)
        return;
    /* Acquire: pairs with the freers' release, so their last writes to the blocks come before the
     * pages' reuse or unmapping, and the links read below are theirs. */
    uintptr_t next = atomic_exchange_explicit(&set->large_freed, 0, memory_order_acquire);
    while (next) {
        ft_page *page = (ft_page *)next;
        next = atomic_load_explicit(&page->remote_free, memory_order_relaxed) & ~FT_LARGE_FREED_TAG;
        atomic_store_explicit(&page->remote_free, 0, memory_order_relaxed);
        /* As if the owner had freed the block itself: on the page's free list, used 0. */
        ft_block *b = (ft_block *)ft_page_blocks(page);
        atomic_store_explicit(&b->next, 0, memory_order_relaxed);
        page->free = b;
        page->used = 0;
        list_remove(page->heap, page);
        retire(page->heap, page);
    }
}

/* Give back the set's retired pages whose goal was reached (beyond the few each heap keeps). */
static void release_set_retired(ft_heap_set *set, size_t keep)
{
    for (int k = 0; k < FT_HEAP_KINDS; k++)
        release_retired(&set->heaps[k], keep);
}

void *ft_heap_alloc_slow(ft_heap *heap, size_t size)
{
    uint8_t c = size > FT_SMALL_MAX ? FT_LARGE_CLASS : ft_size_class(size);
    ft_page *page = c == FT_LARGE_CLASS ? NULL : heap->active[c].head;
    if (page && page->free)
        return pop_block(page); /* a size without a direct slot */
    /* Work to do: a good moment to hand over what this thread freed into others' pages, and to take
     * back the large pages that others emptied: retired before the allocation, which may reuse one
     * at once, and given back after it once their goal is reached (those that wait for it are tried
     * again on every slow path until they go). */
    ft_heap_set *set = heap->set;
    flush_batch(&set->batch);
    bool large_work = atomic_load_explicit(&set->large_freed, memory_order_relaxed) != 0 ||
                      set->retired_large != 0;
    if (FT_UNLIKELY(large_work))
        take_large_freed(set);
    void *b = c == FT_LARGE_CLASS ? alloc_large(heap, size) : alloc_slow(heap, c);
    if (FT_UNLIKELY(large_work))
        release_set_retired(set, RETIRED_KEEP);
    return b;
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
                                                  memory_order_seq_cst, memory_order_relaxed));
    /* Not active (owner_tid 0: full, or its set abandoned): tell the owner's slow path to look
     * (seq_cst: see alloc_slow). */
    if (atomic_load_explicit(&page->owner_tid, memory_order_seq_cst) == 0) {
        uint8_t bit = (uint8_t)(1u << heap_kind(page->heap));
        if (!(atomic_load_explicit(&page->set->full_freed, memory_order_relaxed) & bit))
            atomic_fetch_or_explicit(&page->set->full_freed, bit, memory_order_release);
    }
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

/* A non-owner freed the only block of a large page: the page goes onto its set's large_freed stack
 * (one CAS), from which the owner's next allocation slow path, or its stop, retires it. Its
 * remote_free word is its link there, tagged so that the last one is not 0. The release publishes
 * the link and the freer's last writes to the block; after the CAS the freer touches neither the
 * page nor the set, which the owner may reuse or unmap at once. */
static void push_large_freed(ft_page *page)
{
    ft_heap_set *set = page->set;
    uintptr_t top = atomic_load_explicit(&set->large_freed, memory_order_relaxed);
    do
        atomic_store_explicit(&page->remote_free, top | FT_LARGE_FREED_TAG, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&set->large_freed, &top, (uintptr_t)page,
                                                  memory_order_release, memory_order_relaxed));
}

/* A free by a thread that does not own the page: into the thread's batch when it has a heap set
 * (and the block is small), else pushed at once; a large block's page goes to its set's stack of
 * emptied large pages. Counted in the freeing thread's own counter (summed by ft_heap_get_stats), so
 * that no shared cache line is written; counted first, because once a block is pushed its page may
 * be reused, pooled or unmapped under the freer. */
void ft_heap_free_remote(ft_thread *t, ft_page *page, ft_block *b)
{
    if (t)
        atomic_store_explicit(&t->heap.remote_frees,
                              atomic_load_explicit(&t->heap.remote_frees, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&page->set->rt->heaps.remote_frees, 1, memory_order_relaxed);
    ft_heap_set *own = t ? t->heap.set : NULL;
    if (page->size_class == FT_LARGE_CLASS) {
        push_large_freed(page);
    } else if (own) {
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
}

void ft_heap_free_block(ft_thread *t, void *p)
{
    ft_heap_free(t, t ? t->heap.set : NULL, p);
}

/* ---- collection, thread start and stop ------------------------------------------------------- */

/* Take every page's remote frees and retire the pages that became empty. Small pages only. */
static void collect_queue(ft_heap *heap, ft_page_queue *q)
{
    for (ft_page *page = q->head, *next; page; page = next) {
        next = page->next;
        ft_page_collect_remote(page);
        if (page->used == 0) {
            list_remove(heap, page);
            retire(heap, page);
        }
    }
}

/* Take remote frees, retire the pages that became empty, give back what may be given back. A large
 * page whose freer has not finished its push yet stays on its large list (its block still counts as
 * in use): it is pushed onto the set's stack and taken by whoever owns the set next. */
static void collect_set(ft_heap_set *set)
{
    take_large_freed(set);
    for (int k = 0; k < FT_HEAP_KINDS; k++) {
        ft_heap *heap = &set->heaps[k];
        for (int c = 0; c < FT_SIZE_CLASSES; c++) {
            collect_queue(heap, &heap->active[c]);
            collect_queue(heap, &heap->full[c]);
        }
    }
    ft_page_reuse_hook *hook = &set->rt->heaps.hook;
    hook->flush(hook->ctx);
    release_set_retired(set, 0);
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

/* Give a published set a new owner (NULL: none) and say whether it waits for adoption. Both change
 * under rt->heaps.mutex, under which a starting thread looks for a set to adopt (the check sees
 * only that someone holds it: an ft_mutex records no owner). */
static void set_owner_locked(ft_heap_runtime *h, ft_heap_set *set, ft_thread *owner, bool abandoned)
{
    FT_ASSERT(ft_mutex_is_locked(&h->mutex));
    atomic_store_explicit(&set->owner, owner, memory_order_relaxed);
    set_owner_tid(set);
    set->abandoned = abandoned;
}

/* The young pages of a set about to be freed (its own pages are all empty, but it may have listed
 * others' pages it tracked objects on) go to the runtime's orphans. rt->heaps.mutex held. */
static void orphan_young_locked(ft_heap_runtime *h, ft_heap_set *set)
{
    if (set->young_overflow)
        h->orphan_overflow = true;
    for (size_t i = 0; i < set->young_count; i++) {
        if (!page_list_push(&h->orphans, &h->orphan_count, &h->orphan_cap, set->young[i])) {
            h->orphan_overflow = true;
            break;
        }
    }
    free(set->young);
    set->young = NULL;
    set->young_count = set->young_cap = 0;
}

ft_status ft_heap_thread_start(ft_thread *t)
{
    ft_runtime *rt = t->rt;
    ft_heap_runtime *h = &rt->heaps;
    ft_mutex_lock_internal(&h->mutex);
    for (ft_heap_set *set = h->all; set; set = set->next) {
        if (set->abandoned) {
            set_owner_locked(h, set, t, false);
            atomic_fetch_sub_explicit(&h->abandoned, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&h->adopted, 1, memory_order_relaxed);
            ft_mutex_unlock(&h->mutex);
            t->heap.set = set;
            return FT_OK;
        }
    }
    ft_mutex_unlock(&h->mutex);

    /* Aligned as its type asks: large_freed has a cache line of its own. */
    ft_heap_set *set =
        ft_inject_failure(rt) ? NULL : aligned_alloc(_Alignof(ft_heap_set), sizeof *set);
    if (!set)
        return FT_ENOMEM;
    memset(set, 0, sizeof *set);
    set->rt = rt;
    for (int k = 0; k < FT_HEAP_KINDS; k++) {
        set->heaps[k].set = set;
        direct_init(&set->heaps[k]);
    }
    atomic_store_explicit(&set->owner, t, memory_order_relaxed);
    ft_mutex_lock_internal(&h->mutex);
    FT_LIST_PUSH(h->all, set);
    ft_mutex_unlock(&h->mutex);
    t->heap.set = set;
    return FT_OK;
}

/* The caller's heap set with its remote batch pushed, or NULL when it has none. */
static ft_heap_set *own_set_flushed(ft_thread *t)
{
    ft_heap_set *set = t->heap.set;
    if (set)
        flush_batch(&set->batch);
    return set;
}

void ft_heap_abandon(ft_thread *t)
{
    ft_heap_set *set = own_set_flushed(t);
    if (!set)
        return;
    ft_heap_runtime *h = &t->rt->heaps;
    /* The fork child has one thread, so nobody could race here; the lock (free: the child reset it)
     * keeps one rule for owner and abandoned, whoever abandons. */
    ft_mutex_lock_internal(&h->mutex);
    set_owner_locked(h, set, NULL, true);
    atomic_fetch_add_explicit(&h->abandoned, 1, memory_order_relaxed);
    ft_mutex_unlock(&h->mutex);
    t->heap.set = NULL;
}

void ft_heap_thread_stop(ft_thread *t)
{
    ft_heap_set *set = own_set_flushed(t);
    if (!set)
        return;
    ft_heap_runtime *h = &t->rt->heaps;
    collect_set(set);
    ft_mutex_lock_internal(&h->mutex);
    bool empty = set_is_empty(set);
    set_owner_locked(h, set, NULL, !empty);
    if (empty) {
        FT_LIST_REMOVE(h->all, set);
        orphan_young_locked(h, set);
    } else {
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

/* ---- checking -------------------------------------------------------------------------------- */

/* The checker, after mimalloc's mi_page_is_valid: it recounts a page's lists and compares them with
 * its counters and its place in its heap. Callers: with the world stopped by the caller, or with no
 * thread started (the runtime's teardown), so that no list changes meanwhile and nobody pushes onto
 * a remote-free stack. For a page in a heap, with |L| the length of list L:
 *
 *   used + |free| == reserved <= capacity       (used counts every block handed out and not back on
 *                                                the owner's list: live ones, ones in a remote batch,
 *                                                ones on the remote-free stack)
 *   |remote| <= used                            (small pages; a remote block is still in `used`)
 *   every block on free or remote is base + i * block_size with i < reserved, and none is there twice
 *   list == RETIRED => used == 0;  list == LARGE => used == 1;  list == FULL => reserved == capacity
 *   owner_tid == (list == ACTIVE and the set has an owner ? the owner's os_thread : 0)
 *   small: block_size == class_size(size_class), capacity == (FT_PAGE_SIZE - FT_PAGE_HEADER) /
 *          block_size, mapped_size == FT_PAGE_SIZE
 *   large: capacity == reserved == 1, block_size == min(mapped_size - FT_PAGE_HEADER, UINT32_MAX),
 *          mapped_size a multiple of FT_PAGE_SIZE; remote_free != 0 <=> the page is on its set's
 *          large_freed stack (remote_free then carries FT_LARGE_FREED_TAG, and list == LARGE)
 *
 * and for each heap: each queue is linked both ways with its tail last, and its pages have the
 * queue's list, heap and class; direct[w] == (active[class of w * 16].head, or &ft_page_empty). For
 * each set: retired_large == the large pages on its retired lists. For the runtime: pages and
 * page_bytes == the count and mapped bytes of the pages on every set's lists; the pool's pages have
 * list == POOL, no heap, and number pool_pages, released_pages of them decommitted.
 *
 * The first invariant found broken is reported on stderr, naming the page (or set) and what is
 * wrong, and the check returns false; FT_ASSERT_EXPENSIVE then stops the process. */

static const char *const list_names[] = {"active", "full", "retired", "large", "pool"};
static const char *const kind_names[] = {"raw", "object", "gc"};

/* Report a broken invariant of `subject` (already formatted) and return false. */
static bool report_broken(const char *subject, const char *fmt, va_list ap)
{
    char what[256];
    vsnprintf(what, sizeof what, fmt, ap);
    fprintf(stderr, "ftrt: heap check: %s: %s\n", subject, what);
    return false;
}

static FT_PRINTF(2, 3) bool page_broken(const ft_page *page, const char *fmt, ...)
{
    const ft_heap_set *set = page->set;
    ptrdiff_t k = set && page->heap ? page->heap - set->heaps : -1;
    char subject[128];
    snprintf(subject, sizeof subject, "page %p (%s heap, class %u, %s list)", (const void *)page,
             k >= 0 && k < FT_HEAP_KINDS ? kind_names[k] : "no", (unsigned)page->size_class,
             page->list <= FT_PAGE_POOL ? list_names[page->list] : "no");
    va_list ap;
    va_start(ap, fmt);
    report_broken(subject, fmt, ap);
    va_end(ap);
    return false;
}

/* A broken heap set or runtime: what names the kind ("heap set", "runtime"). */
static FT_PRINTF(3, 4) bool part_broken(const char *what, const void *part, const char *fmt, ...)
{
    char subject[64];
    snprintf(subject, sizeof subject, "%s %p", what, part);
    va_list ap;
    va_start(ap, fmt);
    report_broken(subject, fmt, ap);
    va_end(ap);
    return false;
}
#define set_broken(set, ...) part_broken("heap set", (const void *)(set), __VA_ARGS__)
#define runtime_broken(rt, ...) part_broken("runtime", (const void *)(rt), __VA_ARGS__)

#define BITMAP_WORDS ((FT_PAGE_SIZE / 16 + 63) / 64)

/* Count the blocks of one of page's lists into *n, marking them in seen; false (reported) at the
 * first block that is not a carved block of the page or was seen before, which also ends a list that
 * loops. */
static bool count_list(const ft_page *page, uintptr_t head, const char *name, uint64_t *seen,
                       uint32_t *n)
{
    uintptr_t base = (uintptr_t)ft_page_blocks((ft_page *)page);
    *n = 0;
    for (uintptr_t b = head; b;
         b = atomic_load_explicit(&((ft_block *)b)->next, memory_order_relaxed)) {
        size_t i = (b - base) / page->block_size;
        if (b < base || (b - base) % page->block_size != 0 || i >= page->reserved)
            return page_broken(page, "block %p on its %s list is not one of its %u carved blocks",
                               (void *)b, name, page->reserved);
        if (seen[i / 64] & ((uint64_t)1 << (i % 64)))
            return page_broken(page, "block %p is twice on its lists (again on its %s list)",
                               (void *)b, name);
        seen[i / 64] |= (uint64_t)1 << (i % 64);
        (*n)++;
    }
    return true;
}

static bool geometry_is_valid(const ft_page *page)
{
    if (page->size_class == FT_LARGE_CLASS) {
        size_t block = page->mapped_size - FT_PAGE_HEADER;
        if (page->mapped_size < FT_PAGE_SIZE || page->mapped_size % FT_PAGE_SIZE != 0 ||
            page->block_size != (block > UINT32_MAX ? UINT32_MAX : block))
            return page_broken(page, "large page of %zu mapped bytes with block size %u",
                               page->mapped_size, page->block_size);
        if (page->capacity != 1 || page->reserved != 1)
            return page_broken(page, "large page with capacity %u and %u carved (1 and 1)",
                               page->capacity, page->reserved);
        return true;
    }
    if (page->size_class >= FT_SIZE_CLASSES || page->block_size != ft_class_size(page->size_class))
        return page_broken(page, "block size %u is not its class's", page->block_size);
    if (page->capacity != (FT_PAGE_SIZE - FT_PAGE_HEADER) / page->block_size ||
        page->reserved > page->capacity || page->mapped_size != FT_PAGE_SIZE)
        return page_broken(page, "capacity %u, %u carved, %zu mapped bytes for blocks of %u",
                           page->capacity, page->reserved, page->mapped_size, page->block_size);
    return true;
}

bool ft_page_is_valid(ft_page *page)
{
    if (!page->set || !page->heap || page->heap->set != page->set)
        return page_broken(page, "its heap %p and set %p do not belong together", (void *)page->heap,
                           (void *)page->set);
    if (page->list > FT_PAGE_LARGE)
        return page_broken(page, "list %u is not a heap's list", (unsigned)page->list);
    if (!geometry_is_valid(page))
        return false;

    uint64_t seen[BITMAP_WORDS] = {0};
    uint32_t nfree, nremote = 0;
    if (!count_list(page, (uintptr_t)page->free, "free", seen, &nfree))
        return false;
    if ((uint64_t)page->used + nfree != page->reserved)
        return page_broken(page, "used %u + %u blocks on its free list != %u carved", page->used,
                           nfree, page->reserved);
    uintptr_t remote = atomic_load_explicit(&page->remote_free, memory_order_relaxed);
    if (page->size_class == FT_LARGE_CLASS) {
        if (remote != 0 && (!(remote & FT_LARGE_FREED_TAG) || page->list != FT_PAGE_LARGE))
            return page_broken(page, "remote_free %#lx: not a link of its set's large_freed stack",
                               (unsigned long)remote);
    } else {
        if (!count_list(page, remote, "remote-free", seen, &nremote))
            return false;
        if (nremote > page->used)
            return page_broken(page, "%u blocks on its remote-free stack > used %u", nremote,
                               page->used);
    }

    if (page->list == FT_PAGE_RETIRED && page->used != 0)
        return page_broken(page, "retired with used %u", page->used);
    if (page->list == FT_PAGE_LARGE && (page->size_class != FT_LARGE_CLASS || page->used != 1))
        return page_broken(page, "on a large list with used %u", page->used);
    if (page->list == FT_PAGE_FULL && page->reserved != page->capacity)
        return page_broken(page, "full with %u of %u blocks carved", page->reserved, page->capacity);
    ft_thread *owner = atomic_load_explicit(&page->set->owner, memory_order_relaxed);
    uintptr_t tid = page->list == FT_PAGE_ACTIVE && owner ? owner->os_thread : 0;
    if (atomic_load_explicit(&page->owner_tid, memory_order_relaxed) != tid)
        return page_broken(page, "owner_tid %#lx, expected %#lx",
                           (unsigned long)atomic_load_explicit(&page->owner_tid, memory_order_relaxed),
                           (unsigned long)tid);
    return true;
}

/* Check one queue of heap: its links, and each page's list, heap and class (class < 0: any); count
 * its pages, its mapped bytes and its large pages. At most `limit` pages, which a loop exceeds. */
static bool queue_is_valid(ft_heap *heap, ft_page_queue *q, enum ft_page_list list, int size_class,
                           uint64_t limit, uint64_t *pages, uint64_t *bytes, uint32_t *large)
{
    ft_page *prev = NULL;
    for (ft_page *p = q->head; p; prev = p, p = p->next) {
        if (++*pages > limit)
            return set_broken(heap->set, "its %s lists hold more pages than the runtime counts "
                              "(%" PRIu64 "): a list loops", list_names[list], limit);
        if (p->prev != prev)
            return page_broken(p, "its prev link %p is not the page before it, %p", (void *)p->prev,
                               (void *)prev);
        if (p->list != list || p->heap != heap)
            return page_broken(p, "found on the %s list of heap %p", list_names[list], (void *)heap);
        if (size_class >= 0 && p->size_class != size_class)
            return page_broken(p, "found on the %s list of class %d", list_names[list], size_class);
        if (!ft_page_is_valid(p))
            return false;
        *bytes += p->mapped_size;
        *large += p->size_class == FT_LARGE_CLASS;
    }
    if (q->tail != prev)
        return set_broken(heap->set, "a %s list's tail %p is not its last page %p",
                          list_names[list], (void *)q->tail, (void *)prev);
    return true;
}

/* ft_heap_set_is_valid, counting the set's pages and their mapped bytes (at most `limit` pages). */
static bool set_is_valid(ft_heap_set *set, uint64_t limit, uint64_t *pages, uint64_t *bytes)
{
    uint32_t retired_large = 0, on_large_lists = 0, waiting = 0, unused = 0;
    for (int k = 0; k < FT_HEAP_KINDS; k++) {
        ft_heap *heap = &set->heaps[k];
        if (heap->set != set)
            return set_broken(set, "its %s heap names set %p", kind_names[k], (void *)heap->set);
        for (int c = 0; c < FT_SIZE_CLASSES; c++)
            if (!queue_is_valid(heap, &heap->active[c], FT_PAGE_ACTIVE, c, limit, pages, bytes,
                                &unused) ||
                !queue_is_valid(heap, &heap->full[c], FT_PAGE_FULL, c, limit, pages, bytes, &unused))
                return false;
        if (!queue_is_valid(heap, &heap->retired, FT_PAGE_RETIRED, -1, limit, pages, bytes,
                            &retired_large) ||
            !queue_is_valid(heap, &heap->large, FT_PAGE_LARGE, FT_LARGE_CLASS, limit, pages, bytes,
                            &on_large_lists))
            return false;
        for (ft_page *p = heap->large.head; p; p = p->next)
            waiting += atomic_load_explicit(&p->remote_free, memory_order_relaxed) != 0;
        for (unsigned w = 0; w < FT_DIRECT_SLOTS; w++) {
            ft_page *head = heap->active[ft_size_class((size_t)w * 16)].head;
            if (heap->direct[w] != (head ? head : (ft_page *)&ft_page_empty))
                return set_broken(set, "its %s heap's direct slot %u names %p, not the head %p of "
                                  "its class's active list", kind_names[k], w,
                                  (void *)heap->direct[w], (void *)head);
        }
    }
    if (set->retired_large != retired_large)
        return set_broken(set, "retired_large %u, but %u large pages are retired",
                          set->retired_large, retired_large);
    for (int k = 0; k < FT_HEAP_KINDS; k++) {
        uint32_t small = 0;
        for (ft_page *p = set->heaps[k].retired.head; p; p = p->next)
            small += p->size_class != FT_LARGE_CLASS;
        if (set->retired_small[k] != small)
            return set_broken(set, "retired_small[%d] %u, but %u small pages are retired on its %s "
                              "heap", k, set->retired_small[k], small, kind_names[k]);
    }
    uint32_t stacked = 0;
    for (uintptr_t p = atomic_load_explicit(&set->large_freed, memory_order_relaxed); p;
         p = atomic_load_explicit(&((ft_page *)p)->remote_free, memory_order_relaxed) &
             ~FT_LARGE_FREED_TAG) {
        ft_page *page = (ft_page *)p;
        if (++stacked > on_large_lists || page->set != set || page->list != FT_PAGE_LARGE)
            return page_broken(page, "on the large_freed stack of set %p, which does not hold it "
                               "on a large list (or the stack loops)", (void *)set);
    }
    if (stacked != waiting)
        return set_broken(set, "%u large pages carry a large_freed link, %u are on its stack",
                          waiting, stacked);
    return true;
}

bool ft_heap_set_is_valid(ft_heap_set *set)
{
    uint64_t pages = 0, bytes = 0;
    return set_is_valid(set, atomic_load_explicit(&set->rt->heaps.pages, memory_order_relaxed),
                        &pages, &bytes);
}

bool ft_heap_runtime_is_valid(ft_runtime *rt)
{
    ft_heap_runtime *h = &rt->heaps;
    uint64_t limit = atomic_load_explicit(&h->pages, memory_order_relaxed);
    uint64_t pages = 0, bytes = 0, abandoned = 0;
    for (ft_heap_set *set = h->all; set; set = set->next) {
        if (!set_is_valid(set, limit, &pages, &bytes))
            return false;
        abandoned += set->abandoned;
    }
    if (pages != limit || bytes != atomic_load_explicit(&h->page_bytes, memory_order_relaxed))
        return runtime_broken(rt, "the heaps hold %" PRIu64 " pages of %" PRIu64 " bytes; the runtime "
                          "counts %" PRIu64 " of %" PRIu64, pages, bytes, limit,
                          atomic_load_explicit(&h->page_bytes, memory_order_relaxed));
    if (abandoned != atomic_load_explicit(&h->abandoned, memory_order_relaxed))
        return runtime_broken(rt, "%" PRIu64 " sets are abandoned; the runtime counts %" PRIu64,
                          abandoned, atomic_load_explicit(&h->abandoned, memory_order_relaxed));
    uint64_t pooled = 0, released = 0;
    ft_page *prev = NULL;
    for (ft_page *p = h->pool.head; p; prev = p, p = p->next) {
        if (++pooled > h->pool_pages || p->prev != prev)
            return page_broken(p, "the pool's list is longer than pool_pages %" PRIu64
                               " or badly linked", h->pool_pages);
        if (p->list != FT_PAGE_POOL || p->heap || p->set ||
            atomic_load_explicit(&p->owner_tid, memory_order_relaxed) != 0)
            return page_broken(p, "in the pool, yet it names a heap or an owner");
        released += p->released;
    }
    if (pooled != h->pool_pages || released != h->released_pages || h->pool.tail != prev)
        return runtime_broken(rt, "the pool holds %" PRIu64 " pages, %" PRIu64 " decommitted; the "
                          "runtime counts %" PRIu64 " and %" PRIu64, pooled, released,
                          h->pool_pages, h->released_pages);
    return true;
}

/* ---- walking --------------------------------------------------------------------------------- */

static void mark_free(const ft_page *page, uint64_t *bits, const ft_block *b)
{
    size_t i = (size_t)((const uint8_t *)b - ft_page_blocks((ft_page *)page)) / page->block_size;
    bits[i / 64] |= (uint64_t)1 << (i % 64);
}

/* Whether block b, not on any free list of its page, is an object cached on a thread's freelist:
 * freed for the object layer, so no walk of objects visits it (FT_GC_ON_FREELIST marks only those;
 * blocks back in the heap are found on the lists). */
static bool cached_on_freelist(bool objects, const void *b)
{
    return objects && (atomic_load_explicit(&((const ft_object *)b)->ob_gc_bits,
                                            memory_order_relaxed) &
                       FT_GC_ON_FREELIST);
}

/* Visit the allocated blocks of one page; false if the visitor asked to stop. */
static bool visit_page(ft_page *page, bool objects, ft_block_visitor fn, void *arg)
{
    if (page->size_class == FT_LARGE_CLASS) {
        if (page->used == 0 || atomic_load_explicit(&page->remote_free, memory_order_relaxed))
            return true;
        void *b = ft_page_blocks(page);
        return cached_on_freelist(objects, b) || fn(b, page->block_size, arg);
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
        if (cached_on_freelist(objects, b))
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

/* Begin a walk: world stopped by the caller, rt->heaps.mutex held. Every thread is stopped (or is
 * the caller), so blocks waiting in a batch are free, not live: push every batch. Then check every
 * page (expensive checks): the walk trusts the lists, and a broken one (a loop, a block outside its
 * page) would hang it or make it write outside its bitmap. */
static void walk_begin_locked(ft_runtime *rt)
{
    for (ft_heap_set *set = rt->heaps.all; set; set = set->next)
        flush_batch(&set->batch);
    FT_ASSERT_EXPENSIVE(rt, ft_heap_runtime_is_valid(rt));
}

static void visit_kind_locked(ft_runtime *rt, ft_heap_kind kind, ft_block_visitor fn, void *arg)
{
    bool objects = kind != FT_HEAP_RAW;
    for (ft_heap_set *set = rt->heaps.all; set; set = set->next) {
        ft_heap *heap = &set->heaps[kind];
        bool go = visit_queue(&heap->large, objects, fn, arg);
        for (int c = 0; go && c < FT_SIZE_CLASSES; c++)
            go = visit_queue(&heap->active[c], objects, fn, arg) &&
                 visit_queue(&heap->full[c], objects, fn, arg);
        if (!go)
            break;
    }
}

ft_status ft_heap_visit(ft_runtime *rt, ft_heap_kind kind, ft_block_visitor fn, void *arg)
{
    if ((unsigned)kind >= FT_HEAP_KINDS || !fn)
        return FT_EINVAL;
    if (!ft_stw_held_by_caller(rt))
        return FT_EPERM;
    ft_mutex_lock_internal(&rt->heaps.mutex);
    walk_begin_locked(rt);
    visit_kind_locked(rt, kind, fn, arg);
    ft_mutex_unlock(&rt->heaps.mutex);
    return FT_OK;
}

/* ---- young pages ----------------------------------------------------------------------------- */

void ft_heap_note_young(ft_thread *t, const void *block)
{
    ft_page *page = ft_page_of(block);
    uint64_t epoch = atomic_load_explicit(&t->rt->heaps.young_epoch, memory_order_relaxed);
    if (FT_LIKELY(atomic_load_explicit(&page->young_epoch, memory_order_relaxed) == epoch) ||
        page->size_class == FT_LARGE_CLASS)
        return;
    young_stamp(t->heap.set, page, epoch);
}

/* Append a small page to the older list (world stopped, rt->heaps.mutex held). */
static void older_add_locked(ft_heap_runtime *h, ft_page *page)
{
    if (page->gc_in_older)
        return;
    if (page_list_push(&h->older, &h->older_count, &h->older_cap, page))
        page->gc_in_older = 1;
    else
        h->older_overflow = true;
}

void ft_heap_note_older(ft_runtime *rt, const void *block)
{
    ft_page *page = ft_page_of(block);
    if (page->size_class == FT_LARGE_CLASS)
        return;
    FT_ASSERT(ft_stw_held_by_caller(rt));
    ft_mutex_lock_internal(&rt->heaps.mutex);
    older_add_locked(&rt->heaps, page);
    ft_mutex_unlock(&rt->heaps.mutex);
}

/* Hand a listed page to the walk, unless the entry is stale (no longer a small page of a GC heap,
 * or already handed over in this walk). Its first visit in a walk for generation 0 lists it as
 * older. */
static bool walk_listed(ft_heap_runtime *h, ft_page *page, int generation, ft_heap_page_fn fn,
                        void *arg)
{
    ft_heap *heap = page->heap;
    if (!heap || !is_gc_heap(heap) || page->size_class == FT_LARGE_CLASS ||
        (page->list != FT_PAGE_ACTIVE && page->list != FT_PAGE_FULL) || page->gc_walk == h->walks)
        return true;
    page->gc_walk = h->walks;
    FT_ASSERT_EXPENSIVE(heap->set->rt, ft_page_is_valid(page));
    if (generation == 0)
        older_add_locked(h, page);
    return fn(page, arg);
}

static bool walk_queue(ft_page_queue *q, ft_heap_page_fn fn, void *arg)
{
    for (ft_page *p = q->head; p; p = p->next)
        if (!fn(p, arg))
            return false;
    return true;
}

static void older_clear_locked(ft_heap_runtime *h)
{
    for (size_t i = 0; i < h->older_count; i++)
        h->older[i]->gc_in_older = 0;
    h->older_count = 0;
    h->older_overflow = false;
}

/* Whether a young walk for generation must visit every page: a list it needs has overflowed. */
static bool young_lists_overflowed(ft_heap_runtime *h, int generation)
{
    if (h->orphan_overflow || (generation == 1 && h->older_overflow))
        return true;
    for (ft_heap_set *set = h->all; set; set = set->next)
        if (set->young_overflow)
            return true;
    return false;
}

/* Begin a new epoch: forget every young list, and stamp the heads of the GC heaps' active lists,
 * which the fast path goes on allocating from, with the new epoch. */
static void young_advance_locked(ft_heap_runtime *h)
{
    uint64_t epoch = atomic_load_explicit(&h->young_epoch, memory_order_relaxed) + 1;
    atomic_store_explicit(&h->young_epoch, epoch, memory_order_relaxed);
    h->orphan_count = 0;
    h->orphan_overflow = false;
    for (ft_heap_set *set = h->all; set; set = set->next) {
        set->young_count = 0;
        set->young_overflow = false;
        ft_heap *heap = &set->heaps[FT_HEAP_GC];
        for (int c = 0; c < FT_SIZE_CLASSES; c++)
            if (heap->active[c].head)
                young_stamp(set, heap->active[c].head, epoch);
    }
}

void ft_heap_gc_pages_unused(ft_runtime *rt)
{
    FT_ASSERT(ft_stw_held_by_caller(rt));
    ft_mutex_lock_internal(&rt->heaps.mutex);
    rt->heaps.orphan_overflow = true;
    ft_mutex_unlock(&rt->heaps.mutex);
}

bool ft_heap_visit_page(ft_page *page, ft_block_visitor fn, void *arg)
{
    return visit_page(page, true, fn, arg);
}

ft_status ft_heap_gc_pages(ft_runtime *rt, int generation, ft_heap_page_fn fn, void *arg)
{
    if (generation < 0 || generation > 2 || !fn)
        return FT_EINVAL;
    if (!ft_stw_held_by_caller(rt))
        return FT_EPERM;
    ft_heap_runtime *h = &rt->heaps;
    ft_mutex_lock_internal(&h->mutex);
    for (ft_heap_set *set = h->all; set; set = set->next)
        flush_batch(&set->batch);
    h->walks++;
    bool go = true;
    if (generation == 2 || young_lists_overflowed(h, generation)) {
        FT_ASSERT_EXPENSIVE(rt, ft_heap_runtime_is_valid(rt));
        for (ft_heap_set *set = h->all; go && set; set = set->next) {
            ft_heap *heap = &set->heaps[FT_HEAP_GC];
            go = walk_queue(&heap->large, fn, arg);
            for (int c = 0; go && c < FT_SIZE_CLASSES; c++)
                go = walk_queue(&heap->active[c], fn, arg) && walk_queue(&heap->full[c], fn, arg);
        }
        /* Every page was visited, none listed: a later walk for generation 1 must visit them all. */
        if (generation == 0)
            h->older_overflow = true;
        else
            older_clear_locked(h);
    } else {
        for (ft_heap_set *set = h->all; go && set; set = set->next) {
            for (size_t i = 0; go && i < set->young_count; i++)
                go = walk_listed(h, set->young[i], generation, fn, arg);
            if (go)
                go = walk_queue(&set->heaps[FT_HEAP_GC].large, fn, arg);
        }
        for (size_t i = 0; go && i < h->orphan_count; i++)
            go = walk_listed(h, h->orphans[i], generation, fn, arg);
        if (generation == 1) {
            for (size_t i = 0; go && i < h->older_count; i++)
                go = walk_listed(h, h->older[i], generation, fn, arg);
            older_clear_locked(h);
        }
    }
    young_advance_locked(h);
    if (!go) /* pages not handed over lost their listing: the next young walk visits them all */
        h->orphan_overflow = true;
    ft_mutex_unlock(&h->mutex);
    return go ? FT_OK : FT_ENOMEM;
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
    bool stop = ft_stw_stop_unless_held(rt, "heap stats");
    ft_heap_runtime *h = &rt->heaps;
    ft_mutex_lock_internal(&h->mutex);
    walk_begin_locked(rt);
    for (int k = 0; k < FT_HEAP_KINDS; k++)
        visit_kind_locked(rt, (ft_heap_kind)k, count_block, out);
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
