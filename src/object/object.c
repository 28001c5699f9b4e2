/* object.c: allocation, biased reference counting, lock-free reader support, resurrection, dealloc.
 *
 * The counting rules (see include/ftrt/object.h for the fields) and the invariants kept here:
 *  1. ob_tid == 0 if and only if the object is merged or immortal. Whoever merges stores ob_tid = 0
 *     before publishing MERGED, so "tid 0" is never seen on an object that is still biased.
 *  2. Only the owner writes ob_ref_local, except during an explicit merge of an object whose owner
 *     has stopped, or with the world stopped.
 *  3. An object is freed only when the owner drops local to 0 and then reads shared == 0 exactly
 *     (no other thread holds or has queued a reference, and none was promised try-incref), or when an
 *     atomic update of shared produced exactly MERGED (merged, count zero). Exactly one thread sees
 *     either, so an object is freed exactly once.
 *  4. A QUEUED object carries one reference owned by the merge queue: the non-owner whose decref
 *     found shared at zero gave its reference to the queue (it subtracted, then added the reference
 *     back as it marked the object QUEUED).
 *  5. Immortal objects (local == UINT32_MAX) are never written by incref or decref.
 *  6. A negative shared count in the DEFAULT or MAYBE_WEAKREF state means a non-owner's decref is
 *     between its subtract and its settling (below); no other step makes one. Such a decref is on an
 *     attached thread that is not quiescent, so the object's block stays an object header of its
 *     size class (the heap's reuse rule) even if the object is freed meanwhile; and ob_ref_shared is
 *     only ever written atomically, on allocation too.
 *
 * The non-owner's decref is one atomic subtract, where CPython's is a load and a compare-and-swap
 * (a loop whose load waits for the previous locked instruction on the word). When the subtract finds
 * the count not positive in a biased state, the reference dropped may have been the last, and the
 * object must go to its owner QUEUED, with the queue holding a reference. The decref has given its
 * reference up by then, so settling it may race with anything, the object's free and its block's
 * reuse by a new object included. So settling is written for whatever object is in the block: while
 * the word is negative in a biased state, a CAS adds one reference back and sets QUEUED, and whoever
 * wins queues that object, holding the reference the CAS added; once the word is not negative, or
 * queued, or merged, there is nothing left to settle. Each negative biased word stands for some
 * thread's dropped reference that no QUEUED mark has taken in yet (invariant 6), and any decref still
 * settling on the block stops at the first QUEUED mark, so exactly one reference is handed to the
 * queue per episode, whichever thread's CAS wins and whichever object it lands on. A count that an
 * incref brought back to zero or above needs nothing: that reference now stands where the dropped one
 * did, and its own decref will settle.
 *
 * Misuse. A free overwrites ob_tid with a list link, which is no thread's id, so an extra decref of
 * a freed object takes the non-owner's path, and every build catches it there, off the fast paths
 * (below_zero): a decref of a merged count of zero or less, a settling CAS that queued a block
 * marked freed, a merge that leaves a count below zero.
 *
 * Allocation has an inline fast path for the common case (no freelist, a size with a direct page
 * slot, a free block on that page): pop the block, write the header (four stores: ob_tid, bytes 8..15
 * as one word, ob_type, then ob_ref_shared alone with release), zero the payload with a ladder of
 * 16-byte stores (ft_alloc_uninit leaves it: CPython's PyObject_New; GC objects start untracked, so
 * the collector reads nothing of them before their constructor tracks them); everything else goes
 * to alloc_slow. A GC allocation is counted for the collector's threshold (gc/gc.h). Nothing here
 * ever writes ob_ref_shared but with an atomic store or read-modify-write of its own, and a freed
 * block keeps its value.
 *
 * Dealloc, in CPython's order (subtype_dealloc): a GC object leaves any collection under way; the
 * type's finalize runs (PEP 442: once per GC object, its FINALIZED bit; every time for other
 * objects), with the object resurrected around it and, for a GC object, tracked in generation 0
 * (resurrected, it stays there); the object is untracked; its weak references are cleared and their
 * callbacks called (gc/weakref.c); the type's dealloc releases what it holds; the block is freed (to
 * the thread's freelist for the type, or to the heap), except that a GC object's block may wait for
 * the end of a collection under way (gc/gc.h, "Deferred frees"). Deallocs nest (a dealloc drops the
 * last reference to another object); past FT_GC_TRASH_DEPTH of them the trashcan defers the next
 * to the outermost, so that a long chain does not overflow the C stack. A type with none of
 * finalize, dealloc, freelist, GC or weak references is freed by the owner's ft__merge_zero_local
 * itself, with the heap's owner check by thread pointer (ft_heap_free_owned); everything else goes
 * through ft_object_dealloc. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "internal/internal.h"

static intptr_t shared_count(intptr_t shared)
{
    return shared >> FT_SHARED_SHIFT; /* arithmetic: the shared part may be negative */
}

static intptr_t make_shared(intptr_t count, intptr_t state)
{
    return (intptr_t)(((uintptr_t)count << FT_SHARED_SHIFT) | (uintptr_t)state);
}

static const char *type_name(const ft_object *o)
{
    return o->ob_type && o->ob_type->name ? o->ob_type->name : "?";
}

/* A count went below zero: say what probably happened, then how it was found (detail). A freed
 * block keeps its type, so the name is the freed object's. */
static FT_NORETURN __attribute__((noinline, cold, format(printf, 2, 3))) void
below_zero(ft_object *o, const char *detail, ...)
{
    char text[160];
    va_list args;
    va_start(args, detail);
    vsnprintf(text, sizeof text, detail, args);
    va_end(args);
    ft_fatal("object %p of type '%s': reference count went below zero: an extra decref, or a use "
             "after free (%s)",
             (void *)o, type_name(o), text);
}

ft_runtime *ft_object_runtime(const ft_object *o)
{
    return ft_page_of(o)->heap->set->rt;
}

/* ---- allocation ------------------------------------------------------------------------------ */

/* The test hook (ft_debug_fail_allocation) is an allocation site at every heap allocation of an
 * object in debug builds; release builds test it only off the fast path, which carries no test
 * code. */
#ifdef FTRT_DEBUG
#define SITE_ON_FAST_PATH true
#else
#define SITE_ON_FAST_PATH false
#endif

_Static_assert(FT_TYPE_GC == 1 && FT_HEAP_GC == FT_HEAP_OBJECT + 1, "heap_for's arithmetic");

/* The object heap or the GC heap: an offset of 0 or one heap's size (a power of two) from the first. */
static inline ft_heap *heap_for(ft_thread *t, const ft_type *type)
{
    uintptr_t gc = type->flags & FT_TYPE_GC;
    return (ft_heap *)(void *)((char *)&t->heap.set->heaps[FT_HEAP_OBJECT] + gc * sizeof(ft_heap));
}

/* Offsets 8 to 15 of the header (ob_flags, ob_mutex, ob_gc_bits, ob_ref_local) as one word, so that a
 * new object's header takes one store for them. Each of those fields is atomic (stale readers may load
 * them), and so is this store; ob_ref_shared (offset 16) is never part of it. */
typedef _Atomic(uint64_t) header_word __attribute__((may_alias));

_Static_assert(offsetof(ft_object, ob_flags) == 8 && offsetof(ft_object, ob_mutex) == 10 &&
                   offsetof(ft_object, ob_gc_bits) == 11 && offsetof(ft_object, ob_ref_local) == 12 &&
                   offsetof(ft_object, ob_ref_shared) == 16 && sizeof(ft_mutex) == 1,
               "header_word covers exactly ob_flags .. ob_ref_local");

/* The word for flags 0, an unlocked mutex, gc bits 0 and local count 1, in the machine's byte order. */
static inline uint64_t new_header_word(void)
{
    struct {
        uint16_t flags;
        uint8_t mutex, gc_bits;
        uint32_t ref_local;
    } fields = {0, 0, 0, 1};
    _Static_assert(sizeof fields == sizeof(uint64_t), "no padding");
    uint64_t word;
    memcpy(&word, &fields, sizeof word);
    return word;
}

static inline void init_header(ft_object *o, const ft_type *type)
{
    atomic_store_explicit(&o->ob_tid, ft_os_thread_id(), memory_order_relaxed);
    atomic_store_explicit((header_word *)(void *)&o->ob_flags, new_header_word(),
                          memory_order_relaxed);
    o->ob_type = type;
    /* Last, with release: a try-incref that lands on a reused block through a stale pointer
     * (acquire CAS on this field) sees a whole header, never a half-written one. */
    atomic_store_explicit(&o->ob_ref_shared, 0, memory_order_release);
}

typedef uint64_t zero16 __attribute__((vector_size(16), aligned(16), may_alias));

/* Zero the payload of a block of a small size: bytes [32, size rounded up to 16), which the block
 * always has (blocks are 16-aligned multiples of 16), with 16-byte stores and no call. The first (up
 * to) 224 bytes are cleared in 32-byte steps that the compiler unrolls into a ladder of compares and
 * straight stores: conditional branches, which predicted a mix of sizes better than one indirect
 * jump into a run of stores did (heap.alloc_free_vs_mimalloc, median of 10 alternated runs: 1.70
 * with the jump, 1.64 with the ladder). A longer payload clears the rest first, 64 bytes at a time
 * from its end (the last of those may overlap the first 224 bytes, which is harmless). */
static inline __attribute__((always_inline)) void zero_payload(ft_object *o, size_t size)
{
    enum { HEAD = 14 }; /* 16-byte stores in the unrolled ladder: 224 bytes */
    zero16 *p = (zero16 *)(void *)(o + 1), zero = {0};
    size_t n = (size + 15) / 16 - sizeof(ft_object) / 16; /* 16-byte stores to do */
    /* An opaque register, so that the compiler does not rebuild the zero before every store. */
    FT_OPAQUE_VECTOR(zero);
    if (FT_UNLIKELY(n > HEAD)) {
        zero16 *q = p + n;
        do {
            /* Hides the stride, so that the compiler does not turn the loop into a memset call. */
            FT_OPAQUE(q);
            q -= 4;
            q[0] = q[1] = q[2] = q[3] = zero;
        } while (q > p + HEAD);
        n = HEAD;
    }
    size_t i = 0;
#pragma GCC unroll 7
    for (; i + 2 <= n; i += 2) {
        p[i] = zero;
        p[i + 1] = zero;
    }
    if (i < n)
        p[i] = zero;
}

/* The debug reference total is the sum of the counts of the runtime's live mortal objects (a merge
 * queue's reference and a finalizer's resurrection included; the bias of per-thread counts not), so
 * it is 0 once they are all freed. Every change of a count adds to it: an allocation, the checked
 * incref and decref, try-incref, the reference a settling decref hands to a queue and the merge that
 * drops it, ft_set_refcount (the difference), ft_immortalize (the whole count, out for good). */
static void count_reference(ft_object *o, int64_t delta)
{
    ft_thread *t = ft_current_thread;
    if (t)
        atomic_store_explicit(&t->reftotal,
                              atomic_load_explicit(&t->reftotal, memory_order_relaxed) + delta,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&ft_object_runtime(o)->reftotal, delta, memory_order_relaxed);
}

/* count_reference in debug builds, nothing in release builds (the total is not kept there). */
static inline void debug_count_reference(ft_object *o, int64_t delta)
{
#ifdef FTRT_DEBUG
    count_reference(o, delta);
#else
    (void)o;
    (void)delta;
#endif
}

static ft_object *alloc_failed(void)
{
    ft_set_last_error(FT_ENOMEM);
    return NULL;
}

static FT_NORETURN __attribute__((noinline, cold)) void not_attached(ft_thread *t,
                                                                    const ft_type *type)
{
    ft_fatal("ft_alloc: thread state %p is not attached (type '%s')", (void *)t,
             type->name ? type->name : "?");
}

/* What an allocation leaves in the bytes after the header. */
typedef enum payload_kind { PAYLOAD_ZEROED, PAYLOAD_AS_IT_WAS } payload_kind;

/* The payload of an allocation that does not zero it: as the block had it, except that debug builds
 * fill it with FT_UNINIT_BYTE, so that a constructor that forgets a field reads a loud value, not
 * a quiet zero. */
static inline void leave_payload(ft_object *o, size_t size)
{
#ifdef FTRT_DEBUG
    memset(o + 1, FT_UNINIT_BYTE, size - sizeof *o);
#else
    (void)o;
    (void)size;
#endif
}

/* Make block o a new object of type: its header, its payload as the allocation promises, and (debug
 * builds) its reference in the thread's total. small: size <= FT_DIRECT_MAX, zeroed without a call. */
static inline __attribute__((always_inline)) ft_object *
new_object(ft_object *o, const ft_type *type, size_t size, payload_kind payload, bool small)
{
    init_header(o, type);
    if (payload == PAYLOAD_AS_IT_WAS) {
        leave_payload(o, size);
        if (type->flags & FT_TYPE_HAS_WEAKREFS)
            atomic_store_explicit(ft_weakref_list(o), NULL, memory_order_relaxed);
    } else if (small)
        zero_payload(o, size);
    else
        memset(o + 1, 0, size - sizeof *o);
    debug_count_reference(o, 1);
    return o;
}

/* Everything the fast path does not serve: a type with a freelist, a size without a direct slot,
 * a page without a free block. site_tested: the test hook was already consulted for this
 * allocation. */
static __attribute__((noinline)) ft_object *alloc_slow(ft_thread *t, const ft_type *type,
                                                       size_t size, bool from_freelist,
                                                       bool site_tested, payload_kind payload)
{
    ft_object *o = from_freelist ? ft_freelist_pop(t, type) : NULL;
    if (!o) {
        if (!site_tested && ft_inject_failure(t->rt))
            return alloc_failed();
        o = ft_heap_alloc(heap_for(t, type), size);
        if (!o)
            return alloc_failed();
    }
    new_object(o, type, size, payload, false);
    if (type->flags & FT_TYPE_GC)
        ft_gc_count_alloc(&t->gc, t);
    return o;
}

/* Every GC allocation counts towards generation 0's threshold (gc/gc.h). */
static __attribute__((noinline)) ft_object *count_gc_alloc(ft_thread *t, ft_object *o)
{
    ft_gc_count_alloc(&t->gc, t);
    return o;
}

/* The fast path: a block from the direct page of the object's size, a header, a zeroed payload (or
 * not). Inlined into every entry point, so that none calls another function on it. */
static inline __attribute__((always_inline)) ft_object *
alloc_object(ft_thread *t, const ft_type *type, size_t size, bool from_freelist,
             payload_kind payload)
{
    if (FT_UNLIKELY(!t ||
                    atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_ATTACHED))
        not_attached(t, type);
    if (FT_UNLIKELY(from_freelist || size > FT_DIRECT_MAX))
        return alloc_slow(t, type, size, from_freelist, false, payload);
    if (SITE_ON_FAST_PATH && ft_inject_failure(t->rt))
        return alloc_failed();
    ft_object *o = ft_heap_pop(heap_for(t, type), size);
    if (FT_UNLIKELY(!o))
        return alloc_slow(t, type, size, false, SITE_ON_FAST_PATH, payload);
    o = new_object(o, type, size, payload, true);
    /* A call in tail position only: the fast path keeps no registers across a call. */
    if (FT_UNLIKELY(type->flags & FT_TYPE_GC))
        return count_gc_alloc(t, o);
    return o;
}

static __attribute__((noinline, cold)) ft_object *bad_type(void)
{
    ft_set_last_error(FT_EINVAL);
    return NULL;
}

/* The deferral bias in shared-count units. */
static intptr_t deferral_shared(void)
{
    return (intptr_t)((uintptr_t)FT_DEFERRED_BIAS << FT_SHARED_SHIFT);
}

/* A new instance of an FT_TYPE_DEFERRED type is deferred from the start (it is still private). */
static ft_object *deferred_if_its_type(ft_object *o)
{
    if (o && (o->ob_type->flags & FT_TYPE_DEFERRED)) {
        atomic_fetch_or_explicit(&o->ob_flags, FT_OBJ_DEFERRED, memory_order_relaxed);
        atomic_fetch_add_explicit(&o->ob_ref_shared, deferral_shared(), memory_order_release);
    }
    return o;
}

ft_status ft_object_enable_deferred_rc(ft_object *o)
{
    /* Private: the caller owns it, and no other thread has counted it or been promised it. */
    if (!o || !(o->ob_type->flags & FT_TYPE_GC) || ft_object_is_immortal(o) ||
        !ft_object_is_owned(o) || ft_object_is_deferred(o) ||
        atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed) != 0)
        return FT_EINVAL;
    atomic_fetch_or_explicit(&o->ob_flags, FT_OBJ_DEFERRED, memory_order_relaxed);
    /* Release: a try-incref that accepts the biased count sees the object as this thread does. */
    atomic_fetch_add_explicit(&o->ob_ref_shared, deferral_shared(), memory_order_release);
    return FT_OK;
}

void ft_object_hold_stopped(ft_object *o)
{
    atomic_store_explicit(&o->ob_ref_shared, FT_SHARED_ONE | FT_SHARED_MERGED, memory_order_relaxed);
    debug_count_reference(o, 1);
}

void ft_object_disable_deferred_stopped(ft_runtime *rt, ft_object *o)
{
    if (ft_uniqueid_bias(o) != 0) {
        ft_uniqueid_release_stopped(rt, o); /* the id, the bias and the flag */
        return;
    }
    atomic_fetch_sub_explicit(&o->ob_ref_shared, deferral_shared(), memory_order_relaxed);
    atomic_fetch_and_explicit(&o->ob_flags, (uint16_t)~FT_OBJ_DEFERRED, memory_order_relaxed);
}

/* A type that cannot be allocated: smaller than a header, deferred without being a GC type (nothing
 * could free its instances), or whose weak reference list head lies outside the instance. */
static bool type_refused(const ft_type *type)
{
    return type->basic_size < sizeof(ft_object) ||
           (type->flags & (FT_TYPE_DEFERRED | FT_TYPE_GC)) == FT_TYPE_DEFERRED ||
           ((type->flags & FT_TYPE_HAS_WEAKREFS) &&
            (type->weaklist_offset < sizeof(ft_object) ||
             type->weaklist_offset > type->basic_size - sizeof(void *)));
}

/* A type the fast path does not take: one with a freelist, a size out of range, or (for an
 * allocation that leaves the payload) one with weak references, whose list head must be zeroed. */
static __attribute__((noinline)) ft_object *alloc_unusual(ft_thread *t, const ft_type *type,
                                                          payload_kind payload)
{
    if (type_refused(type))
        return bad_type();
    return deferred_if_its_type(
        alloc_object(t, type, type->basic_size, type->freelist_max != 0, payload));
}

/* ft_alloc and ft_alloc_uninit. One comparison covers both ends of the size (too small, an error;
 * too large for a direct slot), and an uninitialised allocation folds its GC check into the same
 * test, so the common case takes one branch to the fast path. */
static inline __attribute__((always_inline)) ft_object *
alloc_fixed(ft_thread *t, const ft_type *type, payload_kind payload)
{
    if (FT_UNLIKELY(!type))
        return bad_type();
    size_t size = type->basic_size;
    uint32_t unusual = type->freelist_max | (type->flags & FT_TYPE_DEFERRED);
    if (payload == PAYLOAD_AS_IT_WAS)
        unusual |= type->flags & FT_TYPE_HAS_WEAKREFS;
    if (FT_UNLIKELY(size - sizeof(ft_object) > FT_DIRECT_MAX - sizeof(ft_object) || unusual != 0))
        return alloc_unusual(t, type, payload);
    return alloc_object(t, type, size, false, payload);
}

ft_object *ft_alloc(ft_thread *t, const ft_type *type)
{
    return alloc_fixed(t, type, PAYLOAD_ZEROED);
}

ft_object *ft_alloc_uninit(ft_thread *t, const ft_type *type)
{
    return alloc_fixed(t, type, PAYLOAD_AS_IT_WAS);
}

static inline __attribute__((always_inline)) ft_object *
alloc_var(ft_thread *t, const ft_type *type, size_t nitems, payload_kind payload)
{
    if (!type || type_refused(type))
        return bad_type();
    if (type->item_size && nitems > (SIZE_MAX / 2 - type->basic_size) / type->item_size) {
        ft_set_last_error(FT_ENOMEM);
        return NULL;
    }
    return deferred_if_its_type(
        alloc_object(t, type, type->basic_size + nitems * type->item_size, false, payload));
}

ft_object *ft_alloc_var(ft_thread *t, const ft_type *type, size_t nitems)
{
    return alloc_var(t, type, nitems, PAYLOAD_ZEROED);
}

ft_object *ft_alloc_var_uninit(ft_thread *t, const ft_type *type, size_t nitems)
{
    return alloc_var(t, type, nitems, PAYLOAD_AS_IT_WAS);
}

/* ---- dealloc --------------------------------------------------------------------------------- */

_Static_assert((FT_GC_TRACKED | FT_GC_FINALIZED | FT_GC_UNREACHABLE | FT_GC_FROZEN | FT_GC_ALIVE |
                FT_GC_OLD | FT_GC_ON_FREELIST | FT_GC_HEAP_FREED) == 0xFF &&
                   FT_GC_TRACKED + FT_GC_FINALIZED + FT_GC_UNREACHABLE + FT_GC_FROZEN +
                           FT_GC_ALIVE + FT_GC_OLD + FT_GC_ON_FREELIST + FT_GC_HEAP_FREED ==
                       0xFF,
               "the eight gc bits are distinct and fill ob_gc_bits");

/* Set gc bits under ob_gc_bits' write rule (object.h: one writer at a time), here for an object the
 * caller holds exclusively (being finalized). A plain load and store: nobody else writes them now. */
static void gc_bits_set(ft_object *o, uint8_t bits)
{
    uint8_t old = atomic_load_explicit(&o->ob_gc_bits, memory_order_relaxed);
    atomic_store_explicit(&o->ob_gc_bits, (uint8_t)(old | bits), memory_order_relaxed);
}

/* Mark a block given back to the heap (internal.h: FT_HEAP_FREED_BITS; a block cached on a freelist
 * carries FT_GC_ON_FREELIST instead, freelist.c). The freeing thread holds the block exclusively,
 * and a free block's other bits mean nothing: one store for all of them, and none at all in release
 * builds. */
static inline void mark_heap_freed(ft_object *o)
{
    if (FT_HEAP_FREED_BITS != 0)
        atomic_store_explicit(&o->ob_gc_bits, FT_HEAP_FREED_BITS, memory_order_relaxed);
}

/* Give o's block back: to t's freelist for the type if it has one with room, else to the heap (for
 * a block of t's own active page, a push on the page's list, inline). A freed block's count stays
 * zero: readers that try-incref it through a stale pointer must fail. */
static inline void free_memory(ft_thread *t, ft_object *o, const ft_type *type)
{
    atomic_store_explicit(&o->ob_ref_local, 0, memory_order_relaxed);
    if (FT_UNLIKELY(type->freelist_max != 0) && ft_freelist_push(t, o))
        return;
    mark_heap_freed(o);
    ft_heap_free(t, t->heap.set, o);
}

void ft_object_free_memory(ft_thread *t, ft_object *o)
{
    free_memory(t, o, o->ob_type);
}

static FT_NORETURN __attribute__((noinline, cold)) void dealloc_unattached(ft_object *o)
{
    ft_fatal("object %p of type '%s' reached refcount zero on a thread that is not attached (it "
             "cannot be freed there)",
             (void *)o, type_name(o));
}

/* Finalize (PEP 442) with the object resurrected around it; false if the finalizer resurrected it
 * for good. A GC object is marked finalized (never again) and is tracked in generation 0 while the
 * finalizer runs, as CPython re-tracks it: resurrected, it stays there. */
static __attribute__((noinline)) bool finalize(ft_object *o, bool gc)
{
    if (gc) {
        gc_bits_set(o, FT_GC_FINALIZED);
        if (!ft_gc_is_tracked(o))
            ft_gc_track(o);
        else
            ft_gc_move_to_young(o);
    }
    ft_resurrect_begin(o);
    o->ob_type->finalize(o);
    return ft_resurrect_end(o);
}

/* Finalize (if still due), untrack, clear weak references, dealloc, free. */
static void dealloc_object(ft_thread *t, ft_object *o)
{
    const ft_type *type = o->ob_type;
    bool gc = type->flags & FT_TYPE_GC;
    uint8_t bits = atomic_load_explicit(&o->ob_gc_bits, memory_order_relaxed);
    /* It leaves the collection under way; its memory may have to wait for the collection's end. */
    bool defer_free = gc && (bits & FT_GC_UNREACHABLE) && ft_gc_leave_collection(t, o);
    if (defer_free)
        atomic_store_explicit(&o->ob_gc_bits, (uint8_t)(bits & ~FT_GC_UNREACHABLE),
                              memory_order_relaxed);
    if (type->finalize && !(gc && (bits & FT_GC_FINALIZED)) && !finalize(o, gc))
        return; /* resurrected: someone else owns it now; do not touch it */
    if (gc)
        ft_gc_untrack(o);
    if (type->flags & FT_TYPE_HAS_WEAKREFS)
        ft_weakref_clear_dying(o);
    if (type->dealloc)
        type->dealloc(o);
    if (type->flags & FT_TYPE_WEAKREF)
        ft_weakref_release_base((ft_weakref *)o);
#ifdef FTRT_DEBUG
    if (ft_refcount(o) != 0)
        ft_fatal("dealloc of object %p of type '%s' left it referenced (count %ld): it cannot be "
                 "freed",
                 (void *)o, type_name(o), (long)ft_refcount(o));
#endif
    if (gc) {
        ft_gc_count_dealloc(&t->gc, t);
        if (FT_UNLIKELY(defer_free ||
                        atomic_load_explicit(&t->rt->gc.defer_all_frees, memory_order_seq_cst))) {
            ft_gc_zombie_push(t, o);
            return;
        }
    }
    free_memory(t, o, type);
}

/* The trashcan's deferred deallocs, linked through ob_tid (a dead object's word, as a free block's
 * is the heap's link). */
static void trash_push(ft_thread *t, ft_object *o)
{
    atomic_store_explicit(&o->ob_tid, (uintptr_t)t->gc.trash, memory_order_relaxed);
    t->gc.trash = o;
}

/* Dealloc o on t, nested at most FT_GC_TRASH_DEPTH deep: deeper, o waits for the outermost dealloc,
 * which runs what waits once it is done, one at a time, each at depth 1. */
static __attribute__((noinline)) void dealloc_slow(ft_object *o)
{
    ft_thread *t = ft_current_thread;
    if (FT_UNLIKELY(!t))
        dealloc_unattached(o);
    if (FT_UNLIKELY(t->gc.trash_depth >= FT_GC_TRASH_DEPTH)) {
        trash_push(t, o);
        return;
    }
    t->gc.trash_depth++;
    dealloc_object(t, o);
    if (--t->gc.trash_depth == 0) {
        while (t->gc.trash) {
            ft_object *next = t->gc.trash;
            t->gc.trash = (ft_object *)atomic_load_explicit(&next->ob_tid, memory_order_relaxed);
            t->gc.trash_depth = 1;
            dealloc_object(t, next);
            t->gc.trash_depth = 0;
        }
    }
}

/* A type whose instances need nothing between count zero and the heap: no finalize, no dealloc, no
 * freelist, no GC (counting, tracking), no weak references. One test for them all. */
static inline bool type_is_plain(const ft_type *type)
{
    return ((uintptr_t)type->finalize | (uintptr_t)type->dealloc | type->freelist_max |
            (type->flags & (FT_TYPE_GC | FT_TYPE_HAS_WEAKREFS))) == 0;
}

void ft_object_dealloc(ft_object *o)
{
    /* The short path, for a plain type: no call before the free. */
    ft_thread *t = ft_current_thread;
    const ft_type *type = o->ob_type;
    if (FT_LIKELY(t && type_is_plain(type))) {
        free_memory(t, o, type);
        return;
    }
    dealloc_slow(o);
}

/* ---- the biased reference counting slow paths ------------------------------------------------ */

/* The owner dropped its local count to 0 while the shared word was not 0: give up the bias. */
static __attribute__((noinline)) void merge_zero_local_shared(ft_object *o, intptr_t shared)
{
    atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed); /* invariant 1 */
    intptr_t merged;
    do
        merged = shared | FT_SHARED_MERGED;
    while (!atomic_compare_exchange_weak_explicit(&o->ob_ref_shared, &shared, merged,
                                                  memory_order_acq_rel, memory_order_acquire));
    if (merged == FT_SHARED_MERGED)
        ft_object_dealloc(o);
}

void ft__merge_zero_local(ft_object *o)
{
    intptr_t shared = atomic_load_explicit(&o->ob_ref_shared, memory_order_acquire);
    if (FT_UNLIKELY(shared != 0)) {
        merge_zero_local_shared(o, shared);
        return;
    }
    /* Invariant 3, first case. The owner's drop to zero of a plain type is the commonest free of
     * all, so it is served here without another call: the count is already zero (the caller
     * stored local 0), so there is nothing to write before the heap's free. */
    if (FT_LIKELY(type_is_plain(o->ob_type) && ft_current_thread != NULL)) {
        mark_heap_freed(o);
        if (FT_LIKELY(ft_heap_free_owned(o)))
            return;
    }
    ft_object_dealloc(o); /* which stops a thread that is not attached */
}


/* A negative count in a biased state: hand one reference to the owner's queue (see the opening
 * comment; o may be another object by now). shared: the word as the decref's subtract left it, the
 * likeliest value, so that the first CAS needs no load.
 *
 * Once the CAS has succeeded the block holds a live object that the queue's reference pins, unless
 * the decref was of a freed block: a freed block's word is 0 or MERGED, and only a decref of it can
 * make it negative. The CAS (acquire) read a value that follows the release store with which the
 * block's last allocation ended its header, after clearing the gc bits; so a freed mark seen here
 * was set after that allocation: the block is freed now, a freelist's (every build) or the heap's
 * (debug builds). One load of a line the CAS holds, on this path only. */
static void settle_debt(ft_object *o, intptr_t shared)
{
    while (shared < 0 && !(shared & FT_SHARED_QUEUED)) {
        intptr_t queued = ((shared + FT_SHARED_ONE) & ~FT_SHARED_FLAGS) | FT_SHARED_QUEUED;
        if (atomic_compare_exchange_weak_explicit(&o->ob_ref_shared, &shared, queued,
                                                  memory_order_acq_rel, memory_order_relaxed)) {
            uint8_t bits = atomic_load_explicit(&o->ob_gc_bits, memory_order_relaxed);
            if (FT_UNLIKELY(bits & (FT_GC_ON_FREELIST | FT_GC_HEAP_FREED)))
                below_zero(o, "ft_decref of an object already freed: %s",
                           bits & FT_GC_ON_FREELIST ? "cached on a freelist"
                                                    : "given back to the heap");
            debug_count_reference(o, 1); /* the queue's reference */
            ft_brc_enqueue(o); /* invariant 4 */
            return;
        }
    }
}

void ft__decref_shared_settle(ft_object *o, intptr_t old)
{
    switch (old & FT_SHARED_FLAGS) {
    case FT_SHARED_MERGED:
        if (old == (FT_SHARED_ONE | FT_SHARED_MERGED)) {
            ft_object_dealloc(o); /* invariant 3, second case */
            return;
        }
        /* A merged count of zero or less: a freed merged object keeps its word MERGED (count 0). */
        below_zero(o, "ft_decref of a merged object whose count was %ld", (long)shared_count(old));
    case FT_SHARED_QUEUED:
        return; /* the owner's merge folds the negative part in */
    default:
        settle_debt(o, old - FT_SHARED_ONE);
    }
}

void ft_decref_shared(ft_object *o)
{
    debug_count_reference(o, -1);
    intptr_t old = atomic_fetch_sub_explicit(&o->ob_ref_shared, FT_SHARED_ONE, memory_order_acq_rel);
    if (ft__shared_decref_needs_settle(old))
        ft__decref_shared_settle(o, old);
}

intptr_t ft_object_merge(ft_object *o, intptr_t extra)
{
    if (ft_object_is_immortal(o))
        return (intptr_t)FT_IMMORTAL_LOCAL;
    debug_count_reference(o, extra);
    uint32_t local = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed);
    atomic_store_explicit(&o->ob_ref_local, 0, memory_order_relaxed);
    atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed);
    intptr_t shared = atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed), count;
    do
        count = shared_count(shared) + (intptr_t)local + extra;
    while (!atomic_compare_exchange_weak_explicit(&o->ob_ref_shared, &shared,
                                                  make_shared(count, FT_SHARED_MERGED),
                                                  memory_order_acq_rel, memory_order_relaxed));
    /* Every reference is in the sum now, so a negative one is a decref too many. In release builds
     * this is where an extra decref of a block freed to the heap ends: the decref queues the block
     * to the "owner" its list link names, which no thread is, so the decref merges it itself. */
    if (FT_UNLIKELY(count < 0))
        below_zero(o, "count %ld once its counts were merged", (long)count);
    return count;
}

void ft_object_merge_stopped(ft_object *o)
{
    if (ft_object_is_immortal(o))
        return;
    /* No other thread runs: plain stores, where ft_object_merge needs a compare-and-swap. */
    uint32_t local = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed);
    intptr_t shared = atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed);
    atomic_store_explicit(&o->ob_ref_local, 0, memory_order_relaxed);
    atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed);
    atomic_store_explicit(&o->ob_ref_shared,
                          make_shared(shared_count(shared) + (intptr_t)local, FT_SHARED_MERGED),
                          memory_order_relaxed);
}

intptr_t ft_refcount(const ft_object *o)
{
    ft_object *m = (ft_object *)o;
    uint32_t local = atomic_load_explicit(&m->ob_ref_local, memory_order_relaxed);
    if (local == FT_IMMORTAL_LOCAL)
        return (intptr_t)FT_IMMORTAL_LOCAL;
    return (intptr_t)local +
           shared_count(atomic_load_explicit(&m->ob_ref_shared, memory_order_relaxed));
}

void ft_set_refcount(ft_object *o, size_t n)
{
    if (ft_object_is_immortal(o))
        return;
    if (n >= FT_IMMORTAL_LOCAL) {
        ft_immortalize(o);
        return;
    }
    if (FT_UNLIKELY(ft_object_deferral_bias(o) != 0))
        ft_fatal("ft_set_refcount: object %p of type '%s' has deferred counting (per-thread "
                 "reference counts, ftrt/uniqueid.h, or stack references, ftrt/stackref.h): its "
                 "count is spread over places no single value can replace",
                 (void *)o, type_name(o));
    intptr_t was;
    if (ft_object_is_owned(o)) {
        was = atomic_exchange_explicit(&o->ob_ref_local, (uint32_t)n, memory_order_relaxed);
    } else {
        atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed);
        was = atomic_exchange_explicit(&o->ob_ref_local, 0, memory_order_relaxed);
        /* Release: a merged count that try-incref accepts (see ft_try_incref). */
        was += shared_count(atomic_exchange_explicit(
            &o->ob_ref_shared, make_shared((intptr_t)n, FT_SHARED_MERGED), memory_order_release));
    }
    debug_count_reference(o, (intptr_t)n - was);
}

void ft_immortalize(ft_object *o)
{
    if (ft_object_is_immortal(o))
        return; /* never written again: it may sit in read-only memory */
    /* A deferral's bias was never a reference; an id's slots' counts are dropped by the merges to
     * come. Read before the object is immortal (then it has no bias to speak of). */
    intptr_t bias = ft_object_deferral_bias(o);
    atomic_store_explicit(&o->ob_tid, 0, memory_order_relaxed);
    /* Exchanges: the count they replace leaves the debug total for good. Release: a try-incref
     * that finds the object immortal (an acquire load) sees it as the caller does. */
    intptr_t was =
        atomic_exchange_explicit(&o->ob_ref_local, FT_IMMORTAL_LOCAL, memory_order_release);
    was += shared_count(atomic_exchange_explicit(&o->ob_ref_shared, 0, memory_order_relaxed));
    atomic_fetch_or_explicit(&o->ob_flags, FT_OBJ_DEFERRED, memory_order_relaxed);
    debug_count_reference(o, -(was - bias));
}

/* ---- checked (debug) fast paths -------------------------------------------------------------- */

static void check_usable(ft_object *o, const char *op)
{
    if (FT_UNLIKELY(atomic_load_explicit(&o->ob_gc_bits, memory_order_relaxed) &
                    (FT_GC_ON_FREELIST | FT_GC_HEAP_FREED)))
        ft_fatal("%s: object %p of type '%s' was already freed (use after free)", op, (void *)o,
                 type_name(o));
    if (ft_object_is_immortal(o))
        return; /* static objects have no runtime; immortal ones are shared by all */
    ft_thread *t = ft_thread_current();
    if (FT_UNLIKELY(!t))
        ft_fatal("%s: object %p of type '%s' used from a thread that is not attached", op,
                 (void *)o, type_name(o));
    if (FT_UNLIKELY(t->rt != ft_object_runtime(o)))
        ft_fatal("%s: object %p of type '%s' belongs to runtime %p, but the calling thread is "
                 "attached to runtime %p",
                 op, (void *)o, type_name(o), (void *)ft_object_runtime(o), (void *)t->rt);
}

/* An incref of an object whose count is zero: its dealloc is running (or about to), and the
 * reference would outlive it. Only the owner's view of a biased count, and a merged count, are
 * exact enough to tell. */
static bool count_is_zero(ft_object *o, uint32_t local)
{
    intptr_t shared = atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed);
    if (ft_object_is_owned(o))
        return local == 0 && shared == 0;
    return shared == FT_SHARED_MERGED;
}

void ft__incref_checked(ft_object *o)
{
    check_usable(o, "ft_incref");
    uint32_t local = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed);
    if (local == FT_IMMORTAL_LOCAL)
        return;
    if (FT_UNLIKELY(count_is_zero(o, local)))
        ft_fatal("ft_incref: object %p of type '%s' has count zero: it is being deallocated, and "
                 "a new reference to it would dangle (a finalizer or dealloc that keeps its object "
                 "must take the reference before the count reaches zero, or resurrect it from its "
                 "finalizer)",
                 (void *)o, type_name(o));
    if (ft_object_is_owned(o))
        atomic_store_explicit(&o->ob_ref_local, local + 1, memory_order_relaxed);
    else /* release: as in ft_incref */
        atomic_fetch_add_explicit(&o->ob_ref_shared, FT_SHARED_ONE, memory_order_release);
    count_reference(o, 1);
}

void ft__decref_checked(ft_object *o)
{
    check_usable(o, "ft_decref");
    uint32_t local = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed);
    if (local == FT_IMMORTAL_LOCAL)
        return;
    count_reference(o, -1);
    if (ft_object_is_owned(o)) {
        if (FT_UNLIKELY(local == 0))
            below_zero(o, "ft_decref by its owner: local 0, shared %ld",
                       (long)atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed));
        atomic_store_explicit(&o->ob_ref_local, local - 1, memory_order_relaxed);
        if (local == 1)
            ft__merge_zero_local(o);
        return;
    }
    intptr_t old = atomic_fetch_sub_explicit(&o->ob_ref_shared, FT_SHARED_ONE, memory_order_acq_rel);
    if (ft__shared_decref_needs_settle(old)) {
        ft_runtime *rt = ft_thread_current()->rt;
        if (FT_UNLIKELY(rt->decref_window_hook != NULL) && old < FT_SHARED_ONE &&
            !(old & FT_SHARED_QUEUED))
            rt->decref_window_hook(rt->decref_window_arg);
        ft__decref_shared_settle(o, old);
    }
}

/* ---- lock-free readers ----------------------------------------------------------------------- */

void ft_object_enable_try_incref(ft_object *o)
{
    if (ft_object_is_immortal(o))
        return; /* never written: it may sit in read-only memory */
    intptr_t shared = atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed);
    /* Only from the DEFAULT state, whatever the count: QUEUED and MERGED already make readers'
     * increments visible to whoever frees the object. Release: a reader whose try-incref succeeds
     * on the promise (or on a count added after it) sees what this thread saw of the object. */
    while ((shared & FT_SHARED_FLAGS) == FT_SHARED_DEFAULT &&
           !atomic_compare_exchange_weak_explicit(&o->ob_ref_shared, &shared,
                                                  shared | FT_SHARED_MAYBE_WEAKREF,
                                                  memory_order_release, memory_order_relaxed))
        ;
}

ft_object *ft_new_ref_for_shared_slot(ft_object *o)
{
    ft_incref(o);
    /* The owner too: readers of the slot cannot take a reference while the shared count is zero
     * without the promise, whoever wrote it. */
    ft_object_enable_try_incref(o);
    return o;
}

bool ft_try_incref(ft_object *o)
{
    /* Acquire, like the CAS below: an object seen immortal is seen as ft_immortalize's caller saw
     * it (its exchange of this field is a release). */
    uint32_t local = atomic_load_explicit(&o->ob_ref_local, memory_order_acquire);
    if (local == FT_IMMORTAL_LOCAL)
        return true;
    if (ft_object_is_owned(o)) {
        ft_incref(o);
        return true;
    }
    /* The CAS succeeds with acquire: it pairs with the release of whatever made the count it
     * accepts acceptable (object.h, "What a successful try-incref sees"). */
    intptr_t shared = atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed);
    do {
        /* Count zero and nobody promised readers it is safe: the owner may free it any moment. */
        if (shared == FT_SHARED_DEFAULT || shared == FT_SHARED_MERGED)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&o->ob_ref_shared, &shared, shared + FT_SHARED_ONE,
                                                    memory_order_acquire, memory_order_relaxed));
    debug_count_reference(o, 1);
    return true;
}

bool ft_try_incref_compare(ft_object *_Atomic *slot, ft_object *o)
{
    if (!ft_try_incref(o))
        return false;
    if (atomic_load_explicit(slot, memory_order_acquire) != o) {
        ft_decref(o);
        return false;
    }
    return true;
}

ft_object *ft_get_ref(ft_object *_Atomic *slot)
{
    for (;;) {
        ft_object *o = atomic_load_explicit(slot, memory_order_acquire);
        if (!o)
            return NULL;
        if (ft_try_incref_compare(slot, o))
            return o;
    }
}

/* ---- resurrection ---------------------------------------------------------------------------- */

void ft_resurrect_begin(ft_object *o)
{
    atomic_store_explicit(&o->ob_tid, ft_os_thread_id(), memory_order_relaxed);
    atomic_store_explicit(&o->ob_ref_local, 1, memory_order_relaxed);
    atomic_store_explicit(&o->ob_ref_shared, 0, memory_order_relaxed);
    debug_count_reference(o, 1);
}

bool ft_resurrect_end(ft_object *o)
{
    if (ft_object_is_immortal(o))
        return false; /* the finalizer made it immortal: it lives forever */
    if (ft_object_is_owned(o)) {
        uint32_t local = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed);
        if (local == 1 && atomic_load_explicit(&o->ob_ref_shared, memory_order_acquire) == 0) {
            atomic_store_explicit(&o->ob_ref_local, 0, memory_order_relaxed);
            debug_count_reference(o, -1);
            return true;
        }
        return ft_object_merge(o, -1) == 0;
    }
    /* Merged while resurrected: drop our reference in the shared count. */
    debug_count_reference(o, -1);
    intptr_t shared = atomic_fetch_sub_explicit(&o->ob_ref_shared, FT_SHARED_ONE,
                                                memory_order_acq_rel) - FT_SHARED_ONE;
    return shared == FT_SHARED_MERGED;
}
