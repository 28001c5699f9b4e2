/* heap/heap.h: the page heap's internal structures and its inline fast paths.
 *
 * Memory comes from the system in segments (4 MiB, aligned to the page size) and is handed out as
 * 64 KiB pages, each aligned to 64 KiB with its ft_page header at its start, so page_of(block) is a
 * mask. A page belongs to one heap and holds blocks of one size class; blocks larger than
 * FT_SMALL_MAX get a large page of their own (a separate mapping, also 64 KiB-aligned).
 *
 * A heap keeps, per size class, a list of active pages (allocation takes from the head page's free
 * list) and a list of full pages; plus its retired pages (empty, waiting for the reuse hook) and its
 * large pages. Only the heap's owner touches these lists, or anyone while the world is stopped.
 * heap->direct[(size + 15) / 16] names, for every size up to FT_DIRECT_MAX, the head of its class's
 * active list, or the static empty page when that list is empty, so the allocation fast path is two
 * loads and a test; every change of an active list's head updates it (heap.c: list_add/remove).
 *
 * Page life cycle:
 *   pool -> (given to a heap, initialised for a class) -> active <-> full
 *        -> retired when empty (goal from the reuse hook)
 *        -> reused at once for the same class by the same heap, or,
 *           once the hook says the goal is reached, re-initialised for another class or given back
 *           to the runtime's pool, which decommits it (ft_vm_decommit) after FT_POOL_RELEASE_NS.
 *   large: mapped -> large -> (freed by a non-owner: on the set's large_freed stack until the owner
 *          takes it) -> retired -> reused at once for the same mapping size by the same heap, or
 *          unmapped once its goal is reached.
 *
 * Free lists: page->free is the owner's list; page->remote_free is a lock-free stack onto which other
 * threads push (one CAS per block or per chain of blocks) and which the owner takes whole with one
 * exchange, so there is no ABA. page->used counts blocks handed out and not yet freed back to the
 * owner's list (a remote free is counted when the owner collects it), so used == 0 means the page is
 * truly empty.
 *
 * Remote batches: a thread that frees blocks of a page it does not own links them into its heap
 * set's ft_remote_batch, a private chain for one page, and pushes the whole chain with one CAS when
 * its next remote free is for another page, when the chain holds FT_REMOTE_BATCH blocks, when the
 * thread detaches, stops or reaches its own allocation slow path, and before any heap walk (the walk
 * flushes every set's chain, with the world stopped). A block in a chain still counts in its page's
 * `used`, so its page cannot look empty, be retired or change layout while the block waits; and as
 * walks push every chain first, they never take a waiting block for a live one. Frees by callers
 * without a heap set are pushed at once.
 *
 * Large pages freed by another thread: a large page holds one block, so a non-owner's free empties it.
 * The freer pushes the page itself (not the block) onto its heap set's large_freed stack, one CAS,
 * linking it through the page's remote_free word; from then on the page is the owner's. The owner's
 * allocation slow path (any size: one load of large_freed when nothing is there) and its stop take
 * the whole stack with one exchange and retire each page with a goal, as if the owner had freed the
 * block: a lock-free reader may still be reading the object that was there. A retired large page is
 * reused at once by its heap for a block of the same mapping size (its class), and unmapped once its
 * goal is reached; while any wait (retired_large), each slow path tries again to give them back. So a
 * set holds no more large pages than its live blocks, the ones it reuses and those its goals hold
 * back, however many blocks other threads free while it runs.
 *
 * The owner's free has two inline forms: ft_heap_free compares the page's set with the caller's, and
 * ft_heap_free_owned (the drop of a plain object) compares the page's owner_tid, which is the owner's
 * OS thread id only while the page is active in an owned set, with the thread pointer: a match means
 * the block is the caller's and its page does not need to change lists unless it becomes empty.
 *
 * Block links are stored in a block's first word with atomic stores, because that word is an
 * object's ob_tid, which lock-free readers may load through a stale pointer. Nothing in the heap
 * writes a block's word at offset 16 (an object's ob_ref_shared): a freed object keeps its value.
 *
 * Memory comes from the system and goes back to it only through the platform layer
 * (platform/platform.h: ft_vm_map_aligned, ft_vm_release, ft_vm_decommit).
 *
 * Checking: heap.c states the invariants of pages, heaps, sets and the runtime's pool as equations,
 * and ft_page_is_valid, ft_heap_set_is_valid and ft_heap_runtime_is_valid recount the lists to check
 * them (after mimalloc's mi_page_is_valid). With expensive checks on (FT_ASSERT_EXPENSIVE: debug
 * builds, ft_config.expensive_checks) every heap walk runs them before it visits a block (a broken
 * list would hang the walk or make it write outside its bitmap), and so does the runtime's teardown,
 * where the pages are seen last. ft_heap_get_stats walks the heaps, with the world stopped: it is a
 * quiescent point for its caller. */
#ifndef FTRT_INTERNAL_HEAP_H
#define FTRT_INTERNAL_HEAP_H

#include "ftrt/heap.h"
#include "ftrt/lock.h"
#include "ftrt/object.h"

#define FT_PAGE_SHIFT 16
#define FT_PAGE_SIZE ((size_t)1 << FT_PAGE_SHIFT)
#define FT_SEGMENT_SIZE ((size_t)4 << 20)
#define FT_PAGE_HEADER 128     /* blocks start here; >= sizeof(ft_page), keeps 16-byte alignment */
#define FT_SMALL_MAX 8192      /* larger blocks get a large page */
#define FT_SIZE_CLASSES 32
#define FT_LARGE_CLASS 255
#define FT_CLASS_TABLE_MAX 1024 /* sizes up to this take their class from a table */
#define FT_DIRECT_MAX FT_CLASS_TABLE_MAX /* sizes up to this have a direct page slot */
#define FT_DIRECT_SLOTS (FT_DIRECT_MAX / 16 + 1)
#define FT_CARVE_BATCH 64      /* blocks carved from a page's untouched tail at a time */
#define FT_REMOTE_BATCH 64     /* blocks a remote batch holds before it is pushed */
#define FT_POOL_RELEASE_NS (100 * FT_NS_PER_MS) /* an idle pool page is decommitted after this */

typedef struct ft_block {
    _Atomic(uintptr_t) next; /* overlaps ob_tid: atomic, see above */
} ft_block;

enum ft_page_list { FT_PAGE_ACTIVE, FT_PAGE_FULL, FT_PAGE_RETIRED, FT_PAGE_LARGE, FT_PAGE_POOL };

/* The header at the start of every page. The first cache line holds what the owner's allocation
 * and free fast paths write (and the owner's cold bookkeeping); the second what other threads read
 * (the owner checks, the block size) and, written rarely (one CAS per remote batch), the remote-free
 * stack, so that remote freers neither write nor read the owner's hot line.
 *
 * In the rules below (and in ft_heap and ft_heap_set), "owner" means the thread that owns the page's
 * heap set, or any thread while the world is stopped (walks, statistics), or the runtime's teardown
 * (no thread started). "In a heap" means from ft_page_init (by the acquiring owner, before any block
 * of the page is handed out) until the page is pooled or unmapped: a thread that holds a block of the
 * page got it, directly or through whatever handed it the block, after those writes. */
typedef struct ft_page {
    ft_block *free;         /* owner only */
    uint32_t used;          /* owner only */
    uint32_t reserved;      /* owner only: blocks [0, reserved) carved so far */
    uint8_t list;           /* enum ft_page_list; owner only */
    /* The collector's marks (world stopped only): on the runtime's list of pages that may hold
     * generation-1 objects, and the walk that last visited the page (heap.c, "Young pages"). */
    uint8_t gc_in_older;
    uint32_t gc_walk;
    struct ft_page *next, *prev;    /* the list named by `list`; owner only, or world stopped */
    uint64_t retire_goal;   /* retired: the reuse hook's goal; owner only */
    int64_t pooled_at;      /* in the pool: when it entered it; written by the thread that pools the
                               page just before it takes rt->heaps.mutex to push it, then read and
                               written under that mutex only */

    /* heap->set, NULL in the pool. Immutable while in a heap: read by anyone holding a block of the
     * page (the owner checks of the free paths); written by the owner that acquires the page and by
     * the thread that pools it (which then holds no block of it, and nobody else does). */
    _Alignas(64) struct ft_heap_set *set;
    /* The ft_os_thread_id() of the set's owner while the page is on an active list of an owned
     * set; 0 otherwise (full, retired, pooled, large, or the set abandoned). Written by the owner
     * (list changes, adoption, abandonment), read by anyone; relaxed. */
    _Atomic(uintptr_t) owner_tid;
    struct ft_heap *heap;   /* the page's heap, NULL in the pool: as `set` */
    uint32_t capacity;      /* blocks the page holds (1 if large); immutable while in a heap */
    uint32_t block_size;    /* immutable while in a heap: read by anyone holding a block */
    uint8_t size_class;     /* immutable while in a heap; FT_LARGE_CLASS for a large page */
    uint8_t released;       /* in the pool: decommitted; under rt->heaps.mutex (0 when pooled) */
    size_t mapped_size;     /* FT_PAGE_SIZE, or a large page's whole mapping; written when the page
                               is initialised, read by the owner (reuse, release, accounting) */
    /* A small page's remote-free stack of blocks: push: any thread (CAS); take all: owner (exchange).
     * A large page's link in its set's large_freed stack once a non-owner freed its block (tagged
     * with FT_LARGE_FREED_TAG, so never 0 there), else 0: written by that freer before its push,
     * read and reset by the owner after it takes the stack; read by walks (world stopped). */
    _Atomic(uintptr_t) remote_free;
    /* GC heaps: the allocation epoch in which the page last became an allocation page, or received
     * a newly tracked object (heap.c, "Young pages"). Set by compare-and-swap by whoever stamps it
     * (the owner's allocation slow path, a tracking thread, the collector in a stop), which then
     * lists the page; read by anyone, relaxed. */
    _Atomic(uint64_t) young_epoch;
} ft_page;

_Static_assert(sizeof(ft_page) <= FT_PAGE_HEADER, "page header fits before the first block");

typedef struct ft_page_queue {
    ft_page *head, *tail;
} ft_page_queue;

#define FT_HEAP_FIELDS_SIZE                                                                        \
    (FT_DIRECT_SLOTS * sizeof(ft_page *) + sizeof(struct ft_heap_set *) +                          \
     (2 * FT_SIZE_CLASSES + 2) * sizeof(ft_page_queue))
#define FT_HEAP_STRIDE 2048 /* sizeof(ft_heap): a power of two, so heap_for is a shift, not a multiply */

typedef struct ft_heap {
    ft_page *direct[FT_DIRECT_SLOTS];      /* owner only: see the top of this file */
    struct ft_heap_set *set;               /* immutable: set by the set's creator */
    ft_page_queue active[FT_SIZE_CLASSES]; /* owner only */
    ft_page_queue full[FT_SIZE_CLASSES];   /* owner only */
    ft_page_queue retired;                 /* owner only */
    ft_page_queue large;                   /* owner only */
    char pad[FT_HEAP_STRIDE - FT_HEAP_FIELDS_SIZE];
} ft_heap;

_Static_assert(sizeof(ft_heap) == FT_HEAP_STRIDE, "ft_heap's padding: FT_HEAP_FIELDS_SIZE is exact");

/* Blocks of one page that the set's thread freed without owning the page, not yet pushed. */
typedef struct ft_remote_batch {
    ft_page *page;          /* NULL when empty */
    ft_block *head, *tail;  /* the chain, linked through the blocks' first words */
    uint32_t count;
} ft_remote_batch;

#define FT_LARGE_FREED_TAG ((uintptr_t)1) /* in a large page's remote_free: on large_freed */

/* The heaps of one thread state; abandoned and adopted as a unit. */
typedef struct ft_heap_set {
    ft_heap heaps[FT_HEAP_KINDS];
    ft_remote_batch batch;          /* the owner's remote frees; owner only, or world stopped */
    /* Pages this set's owner stamped in the current allocation epoch (heap.c, "Young pages"):
     * appended by the owner, read and emptied by the collector with the world stopped. On an
     * allocation failure young_overflow is set instead, and the next young walk walks every page. */
    ft_page **young;
    size_t young_count, young_cap;
    bool young_overflow;
    uint32_t retired_large;         /* large pages on the heaps' retired lists; owner only */
    uint32_t retired_small[FT_HEAP_KINDS]; /* small pages on each heap's retired list; owner only */
    /* Bit k: a non-owner pushed a remote free onto a page of heap k that was not active (full, most
     * likely), so the owner's slow path should look at its full pages. Set by that freer after its
     * push (fetch_or, release); taken by the owner (fetch_and, acquire). */
    _Atomic(uint8_t) full_freed;
    ft_runtime *rt;                 /* immutable */
    /* NULL while abandoned. Written under rt->heaps.mutex once the set is on rt->heaps.all (by its
     * creator before); read by anyone (ft_heap_block_owner), relaxed. */
    _Atomic(ft_thread *) owner;
    struct ft_heap_set *next, *prev; /* rt->heaps.all; under rt->heaps.mutex */
    bool abandoned;                 /* waiting for adoption; under rt->heaps.mutex (every writer,
                                       ft_heap_abandon in a fork child too) */
    /* Large pages whose block a non-owner freed, linked through their remote_free words: push: the
     * freer (CAS, release); take all: the owner (exchange, acquire). On a line of its own, away from
     * what the owner writes. */
    _Alignas(64) _Atomic(uintptr_t) large_freed;
} ft_heap_set;

/* The reuse hook: retire() returns a goal for a page that just became empty, is_safe(goal) says
 * whether it may be repurposed now, flush() is called by a stopping thread between retiring its
 * empty pages and giving back the safe ones. Goals never decrease over time, and a goal reached
 * means every earlier one is (the heap stops at the first retired page not safe yet). The default
 * (no reclamation layer) is always safe. */
typedef struct ft_page_reuse_hook {
    uint64_t (*retire)(void *ctx);
    bool (*is_safe)(void *ctx, uint64_t goal);
    void (*flush)(void *ctx); /* make goals handed out so far reachable, as far as the caller can */
    void *ctx;
} ft_page_reuse_hook;

/* A mapping carved into pages. Every field is under rt->heaps.mutex (base and size are immutable
 * once the segment is on rt->heaps.segments); the runtime's teardown unmaps them. */
typedef struct ft_segment {
    struct ft_segment *next; /* rt->heaps.segments */
    uint8_t *base;  /* aligned start */
    size_t size;
    size_t carved;  /* bytes handed out as pages */
} ft_segment;

/* One thread's part (ft_thread.heap). */
typedef struct ft_heap_thread {
    ft_heap_set *set;                /* owner only (adopted or made at start, abandoned at stop) */
    _Atomic(uint64_t) remote_frees;  /* frees into other threads' pages: owner adds, anyone reads */
} ft_heap_thread;

/* Runtime-wide heap state (a member of ft_runtime). */
typedef struct ft_heap_runtime {
    ft_mutex mutex;              /* guards everything below but the hook and the atomics */
    ft_heap_set *all;            /* every heap set, owned or abandoned; under mutex */
    ft_segment *segments;        /* every segment; under mutex; unmapped by ft_runtime_free */
    ft_page_queue pool;          /* empty pages, oldest first; under mutex */
    uint64_t pool_pages;         /* pages in the pool; under mutex */
    uint64_t released_pages;     /* of those, decommitted ones; under mutex */
    ft_page_reuse_hook hook;     /* set once, before any thread starts; then read-only */
    /* Pages held by heaps and their bytes (mapped_size): added by the owner that acquires a page,
     * subtracted by the owner that releases one, without a lock (relaxed); ft_heap_get_stats reads a
     * snapshot. */
    _Atomic(uint64_t) pages, page_bytes;
    /* Sets waiting for adoption, and adoptions so far: changed under mutex, with the abandoned flags
     * they count; atomic so that ft_heap_get_stats reads them without it (relaxed). */
    _Atomic(uint64_t) abandoned, adopted;
    _Atomic(uint64_t) remote_frees; /* by stopped threads and unattached callers (live threads count
                                       their own: ft_thread.remote_frees); anyone adds and reads,
                                       relaxed */
    /* Young pages (heap.c): the current allocation epoch (advanced by the collector with the world
     * stopped; read by anyone, relaxed). Under mutex: the pages that may hold generation-1 objects
     * (older; written by the collector with the world stopped), the young pages of sets freed by
     * their stopping owner (orphans), and the walk number. */
    _Atomic(uint64_t) young_epoch;
    ft_page **older, **orphans;
    size_t older_count, older_cap, orphan_count, orphan_cap;
    bool older_overflow, orphan_overflow;
    uint32_t walks;
} ft_heap_runtime;

static inline ft_page *ft_page_of(const void *p)
{
    return (ft_page *)((uintptr_t)p & ~(uintptr_t)(FT_PAGE_SIZE - 1));
}

static inline uint8_t *ft_page_blocks(ft_page *page)
{
    return (uint8_t *)page + FT_PAGE_HEADER;
}

/* heap.c */
void ft_heap_runtime_init(ft_runtime *rt);
void ft_heap_runtime_destroy(ft_runtime *rt);
ft_status ft_heap_thread_start(ft_thread *t); /* adopt an abandoned set or make one */
void ft_heap_thread_stop(ft_thread *t);       /* abandon (or free) the thread's set */
void ft_heap_abandon(ft_thread *t);           /* abandon without collecting (after fork) */
void *ft_heap_alloc_slow(ft_heap *heap, size_t size);
void ft_heap_free_block(ft_thread *t, void *p); /* t: the caller's attached state, or NULL */
void ft_heap_free_local_slow(ft_page *page);  /* a local free emptied page, or page was full */
void ft_heap_free_remote(ft_thread *t, ft_page *page, ft_block *b);
void ft_heap_flush_remote(ft_thread *t);      /* push t's remote batch now; t attached */
void ft_heap_set_reuse_hook(ft_runtime *rt, const ft_page_reuse_hook *hook);
extern const ft_page ft_page_empty; /* the direct slot of a class without an active page */
/* The checker (heap.c: the invariants as equations): true, or false after a line on stderr naming
 * the broken page or set and what is wrong. With the world stopped by the caller, or with no thread
 * started; ft_heap_runtime_is_valid with rt->heaps.mutex held too. */
bool ft_page_is_valid(ft_page *page);
bool ft_heap_set_is_valid(ft_heap_set *set);
bool ft_heap_runtime_is_valid(ft_runtime *rt);

/* Young pages (heap.c): which pages of the GC heaps received objects since the last collection of
 * each generation, so that young collections walk only those.
 *   ft_heap_note_young: block's page receives a newly tracked object (t: the caller, attached).
 *   ft_heap_gc_pages: world stopped: hand fn every GC page that may hold objects of generation 0
 *     (generation 0), of generation 0 or 1 (1), or every GC page (2), in a fixed order; then begin
 *     a new epoch. The pages handed over for generation 0 are remembered as older pages; a walk for
 *     1 or 2 forgets them. FT_ENOMEM if fn returned false (the walk stops there; the epoch still
 *     begins, and the next young walk visits every page, so that no young page goes unvisited).
 *   ft_heap_gc_pages_unused: the caller could not visit the pages it was handed (out of memory):
 *     the next young walk visits every page, as after a failed walk.
 *   ft_heap_visit_page: visit the allocated objects of a page the walk handed over; false if the
 *     visitor asked to stop. Pages are independent: several threads may visit different pages at
 *     once (the world stopped by one of them). */
void ft_heap_note_young(ft_thread *t, const void *block);
typedef bool (*ft_heap_page_fn)(ft_page *page, void *arg);
ft_status ft_heap_gc_pages(ft_runtime *rt, int generation, ft_heap_page_fn fn, void *arg);
void ft_heap_gc_pages_unused(ft_runtime *rt);
bool ft_heap_visit_page(ft_page *page, ft_block_visitor fn, void *arg);
/* The world stopped: remember page (holding an object the collector just moved to generation 1)
 * as an older page. */
void ft_heap_note_older(ft_runtime *rt, const void *block);

/* page.c */
ft_page *ft_page_acquire(ft_heap *heap, uint8_t size_class);
ft_page *ft_page_acquire_large(ft_heap *heap, size_t size);
void ft_page_init(ft_page *page, ft_heap *heap, uint8_t size_class, uint32_t block_size);
void ft_page_release(ft_runtime *rt, ft_page *page); /* back to the pool, or unmapped if large */
uint32_t ft_page_collect_remote(ft_page *page);      /* returns blocks taken */
bool ft_page_carve(ft_page *page);
void ft_segments_unmap(ft_runtime *rt);

/* size classes */
uint8_t ft_size_class(size_t size);
uint32_t ft_class_size(uint8_t size_class);

/* list helpers */
void ft_queue_push_front(ft_page_queue *q, ft_page *p);
void ft_queue_push_back(ft_page_queue *q, ft_page *p);
void ft_queue_remove(ft_page_queue *q, ft_page *p);

/* The allocation fast path, for size <= FT_DIRECT_MAX: a block from the page that heap->direct
 * names for the size, or NULL when that page has none (the caller then goes to ft_heap_alloc_slow).
 * Owner only. */
static inline void *ft_heap_pop(ft_heap *heap, size_t size)
{
    ft_page *page = heap->direct[(size + 15) / 16];
    ft_block *b = page->free;
    if (FT_LIKELY(b != NULL)) {
        page->free = (ft_block *)atomic_load_explicit(&b->next, memory_order_relaxed);
        page->used++;
    }
    return b;
}

/* A block of at least size bytes from heap, or NULL when out of memory. Owner only. */
static inline void *ft_heap_alloc(ft_heap *heap, size_t size)
{
    if (FT_LIKELY(size <= FT_DIRECT_MAX)) {
        void *b = ft_heap_pop(heap, size);
        if (FT_LIKELY(b != NULL))
            return b;
    }
    return ft_heap_alloc_slow(heap, size);
}

/* The owner's free of a block of one of its active pages, when the caller is the set owner's OS
 * thread and may act for it (it is attached to the block's runtime, so no stop is walking the heap):
 * one comparison of the page's owner_tid with the thread pointer, and a push on the page's own list.
 * Returns false, having done nothing, for any other block or caller (a full or large page, another
 * thread's page, an abandoned set); the caller then goes to ft_heap_free. */
static inline bool ft_heap_free_owned(void *p)
{
    ft_page *page = ft_page_of(p);
    ft_block *b = p;
    if (FT_UNLIKELY(atomic_load_explicit(&page->owner_tid, memory_order_relaxed) !=
                    ft_os_thread_id()))
        return false;
    atomic_store_explicit(&b->next, (uintptr_t)page->free, memory_order_relaxed);
    page->free = b;
    if (FT_UNLIKELY(--page->used == 0))
        ft_heap_free_local_slow(page);
    return true;
}

/* Free any block of the heap. own is the caller's heap set (t->heap.set; NULL for a caller without
 * one). The fast path is the owner's free into one of its active pages that does not become empty:
 * a push on the page's own list; an emptied or full page, and every other thread's free, go out of
 * line. */
static inline void ft_heap_free(ft_thread *t, ft_heap_set *own, void *p)
{
    ft_page *page = ft_page_of(p);
    ft_block *b = p;
    if (FT_LIKELY(page->set == own)) {
        atomic_store_explicit(&b->next, (uintptr_t)page->free, memory_order_relaxed);
        page->free = b;
        if (FT_UNLIKELY(--page->used == 0 || page->list != FT_PAGE_ACTIVE))
            ft_heap_free_local_slow(page);
        return;
    }
    ft_heap_free_remote(t, page, b);
}

#endif
