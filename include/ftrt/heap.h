/* ftrt/heap.h: the page heap: per-thread heaps for raw memory and managed objects.
 *
 * Each thread state has three heaps: raw memory (ft_malloc), non-GC objects and GC objects (ft_alloc
 * picks by type). A heap owns 64 KiB pages, each holding blocks of one size class; a block's page is
 * found by masking its address. The owner allocates and frees without atomics; a free from another
 * thread waits in that thread's batch of frees for one page, which is pushed onto the page's
 * remote-free list with one CAS (when the batch is full, when the thread frees into another page,
 * detaches, stops or runs out of blocks of its own, and before any heap walk or statistics), and the
 * owner collects the list later. Until then the page counts the blocks as in use, and they are
 * neither visited nor counted as live. A block larger than 8 KiB has a page of its own; when another
 * thread frees it, the page goes back to its owner at once, which takes it at its next allocation
 * slow path (or its stop), so a thread whose large blocks other threads free holds no more pages
 * than it has live blocks, plus those the reuse rule below holds back.
 *
 * When a thread stops, its heaps are abandoned, not destroyed: their blocks stay valid, other threads
 * may still free them, the heap walk still sees them, and the next thread to start adopts them.
 *
 * Reuse rule (for lock-free readers): a freed block is reused at once only for the same size class in
 * the same page; a page that became empty is given to another size class, another heap or back to
 * the system only once the reclamation layer says no reader can still be looking at it. So memory a
 * reader reached through a stale pointer is still an object header until its grace period ends. */
#ifndef FTRT_HEAP_H
#define FTRT_HEAP_H

#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ft_heap_kind {
    FT_HEAP_RAW = 0,    /* ft_malloc */
    FT_HEAP_OBJECT = 1, /* objects of types without FT_TYPE_GC */
    FT_HEAP_GC = 2,     /* objects of FT_TYPE_GC types */
    FT_HEAP_KINDS = 3,
} ft_heap_kind;

/* Raw memory from t's heap (t attached); NULL with ft_last_error() == FT_ENOMEM. Alignment 16. */
FT_API void *ft_malloc(ft_thread *t, size_t size);
FT_API void *ft_calloc(ft_thread *t, size_t count, size_t size);
/* Free memory from any thread's heap of the same runtime (NULL is ignored). t attached. */
FT_API void ft_free(ft_thread *t, void *p);
/* The usable size of a block from ft_malloc or ft_alloc. */
FT_API size_t ft_usable_size(const void *p);

/* The thread state whose heap holds p, or NULL if that heap is abandoned (its thread stopped). */
FT_API ft_thread *ft_heap_block_owner(const void *p);

/* Visit every allocated block of one kind in every heap of rt, abandoned heaps included. For object
 * kinds only live objects are visited (not those cached on freelists). The world must be stopped (by
 * the caller): FT_EPERM otherwise. The walk allocates nothing; fn must not allocate or free from rt's
 * heaps. fn returns false to stop the walk. With expensive checks on (ft_config.expensive_checks,
 * debug builds), the walk first checks every page of every heap and stops the process with a report
 * naming the page if one is broken. */
typedef bool (*ft_block_visitor)(void *block, size_t size, void *arg);
FT_API ft_status ft_heap_visit(ft_runtime *rt, ft_heap_kind kind, ft_block_visitor fn, void *arg);

typedef struct ft_heap_stats {
    uint64_t pages;            /* pages held by heaps (in use or retired) */
    uint64_t page_bytes;       /* their size in bytes */
    uint64_t pool_pages;       /* empty pages kept by the runtime for reuse */
    uint64_t released_pages;   /* pool pages whose memory went back to the system, still reserved */
    uint64_t live_blocks;      /* allocated blocks (exact when the world is stopped) */
    uint64_t live_bytes;       /* their block sizes */
    uint64_t remote_frees;     /* frees from a thread that did not own the page */
    uint64_t abandoned_heaps;  /* heaps of stopped threads, waiting for adoption */
    uint64_t adopted_heaps;    /* heaps adopted by a new thread, in total */
} ft_heap_stats;

/* Statistics for rt. live_* come from a walk of the heaps with the world stopped, so they are exact:
 * ft_heap_get_stats stops the world itself unless the caller has. That stop is a quiescent point
 * for the caller, like ft_stop_the_world (ftrt/qsbr.h): pointers it loaded without taking a reference
 * (lock-free reads, borrowed references) must not be used after the call, since the memory behind
 * them may be freed (the stop frees every queued delayed block as the world restarts) or reused.
 * pages, page_bytes and the counters are read after the restart: a snapshot. */
FT_API void ft_heap_get_stats(ft_runtime *rt, ft_heap_stats *out);

#ifdef __cplusplus
}
#endif
#endif
