/* ftrt/object.h: managed objects: the header, types, allocation and biased reference counting.
 *
 * Every managed object starts with an ft_object header (32 bytes on 64-bit, PEP 703's layout). Hosts
 * embed it as the first member of their structs and allocate with ft_alloc.
 *
 * Biased reference counting. The thread that allocates an object owns it (ob_tid is its
 * ft_os_thread_id()). The owner counts in ob_ref_local with plain (relaxed) loads and stores; any other
 * thread counts in ob_ref_shared with one atomic add or subtract. The true count is
 *     ob_ref_local + (ob_ref_shared >> 2)
 * and the two low bits of ob_ref_shared hold a state:
 *     DEFAULT        the normal state; the shared part may be negative
 *     MAYBE_WEAKREF  a writer promised that lock-free readers may try-incref this object
 *     QUEUED         a non-owner's decref found the shared part at zero or below; the object waits in
 *                    its owner's merge queue, which holds one reference
 *     MERGED         the owner gave up its bias (ob_tid is 0); the whole count is in ob_ref_shared
 * An object is freed exactly once: when its owner drops ob_ref_local to 0 and finds ob_ref_shared
 * exactly 0, or when an atomic update leaves ob_ref_shared exactly MERGED (count zero).
 *
 * Immortal objects have ob_ref_local == UINT32_MAX and ob_tid == 0; incref and decref never write
 * them, so they can sit in read-only memory and are shared by every thread without contention. An
 * object that every thread references all the time can instead be counted in per-thread arrays
 * (include/ftrt/uniqueid.h).
 *
 * Destruction. When the count reaches zero, ftrt runs the type's finalize (once per object, PEP 442;
 * it may resurrect the object), then its dealloc (release what the object holds), then frees the
 * memory (or keeps it on the thread's freelist for the type).
 *
 * Only a thread attached to an object's runtime may count it (immortal objects excepted): a
 * non-owner's decref may read the header after giving its reference up, which is safe only while the
 * runtime's reclamation waits for that thread (docs/objects.md). Debug builds check it.
 */
#ifndef FTRT_OBJECT_H
#define FTRT_OBJECT_H

#include <stdatomic.h>

#include "lock.h"
#include "platform.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ft_object ft_object;
typedef struct ft_type ft_type;

struct ft_object {
    /* Owner's ft_os_thread_id(), or 0 when merged or immortal; a free block's list link. Written by
     * the owner (or by whoever holds the object exclusively: allocation, merge, free); read by
     * anyone, relaxed. */
    _Atomic(uintptr_t) ob_tid;
    _Atomic(uint16_t) ob_flags;  /* FT_OBJ_*; any thread, atomic fetch_or/fetch_and only (below) */
    ft_mutex ob_mutex;           /* the per-object lock (critical sections) */
    _Atomic(uint8_t) ob_gc_bits; /* FT_GC_*; one writer at a time, load then store (below) */
    _Atomic(uint32_t) ob_ref_local;  /* owner's count; UINT32_MAX = immortal; owner writes, relaxed */
    _Atomic(intptr_t) ob_ref_shared; /* others' count << 2 | state; atomic read-modify-write */
    const ft_type *ob_type;          /* immutable after allocation */
};

FT_STATIC_ASSERT(sizeof(void *) != 8 || sizeof(ft_object) == 32, "ft_object is 32 bytes on 64-bit");
/* Read by the inline reference counting below. */
FT_ABI_OFFSET(ft_object, ob_tid, 0);
FT_ABI_OFFSET(ft_object, ob_flags, 8);
FT_ABI_OFFSET(ft_object, ob_mutex, 10);
FT_ABI_OFFSET(ft_object, ob_gc_bits, 11);
FT_ABI_OFFSET(ft_object, ob_ref_local, 12);
FT_ABI_OFFSET(ft_object, ob_ref_shared, 16);
FT_ABI_OFFSET(ft_object, ob_type, 24);

/* ob_ref_shared states (low two bits) */
#define FT_SHARED_SHIFT 2
#define FT_SHARED_FLAGS ((intptr_t)3)
#define FT_SHARED_DEFAULT ((intptr_t)0)
#define FT_SHARED_MAYBE_WEAKREF ((intptr_t)1)
#define FT_SHARED_QUEUED ((intptr_t)2)
#define FT_SHARED_MERGED ((intptr_t)3)
#define FT_SHARED_ONE ((intptr_t)1 << FT_SHARED_SHIFT) /* one reference in ob_ref_shared */

#define FT_IMMORTAL_LOCAL UINT32_MAX

/* ---- header bits -----------------------------------------------------------------------------
 *
 * Two fields of bits, one write rule each (docs/objects.md, "Header bits", has the same map).
 *
 * ob_gc_bits: one writer at a time, so a relaxed load followed by a relaxed store loses nothing.
 * The writer is one of
 *   - a thread that holds the object exclusively: the allocating thread (the header store), the
 *     thread that finalizes, deallocates or frees it once its count is zero, the collector for
 *     objects it has found unreachable;
 *   - its owner (ob_tid == the caller's ft_os_thread_id()) while the object is biased and the
 *     owner holds a reference;
 *   - the thread that stopped the world, while it is stopped, and the collector's marking workers
 *     on its behalf (ftrt/gc.h, "Parallel marking"): several of them may store the same object's
 *     bits at once, but during a marking phase each only adds (or only removes) that phase's
 *     mark, and nobody writes another bit, so every such store writes the same value.
 * They exclude each other: an object nobody else can reach has no other writer; a biased object
 * reaches count zero only on its owner; and a stopped world runs nobody else. Any thread may read
 * the bits (relaxed). These bits are written on hot paths (tracking at every allocation and
 * dealloc of a GC object, marks on every object in every collection), where a locked
 * read-modify-write would cost about 20 cycles each; CPython's _PyObject_SET_GC_BITS makes the
 * same choice.
 *
 * ob_flags: any thread at any time, but only with an atomic fetch_or or fetch_and (relaxed),
 * never a plain store; the allocation's header store and FT_STATIC_OBJECT_INIT initialise it. Its
 * bits are set by threads that merely hold a reference (ft_immortalize,
 * ft_uniqueid_enable, a non-owner marking an object shared), which the rule above
 * cannot serve, and they change a few times in an object's life at most. A read-modify-write never
 * loses another thread's bit. Relaxed: the bits publish nothing; whoever acts on one gets its
 * ordering elsewhere. */

/* ob_gc_bits: one writer at a time (above) */
#define FT_GC_TRACKED 1     /* in the collector's set (ftrt/gc.h): ft_gc_track and ft_gc_untrack,
                               by the holder or the owner; dealloc; the collector */
#define FT_GC_FINALIZED 2   /* finalize has run (never twice): by the thread that finalizes it */
/* A candidate of the collection under way, then one it found unreachable: set by the collector
 * (world stopped); cleared by it, or by ft_gc_untrack (the object leaves the collection). */
#define FT_GC_UNREACHABLE 4
#define FT_GC_FROZEN 8      /* left out of collections (gc.freeze): world stopped */
#define FT_GC_ALIVE 16      /* reachable from a known root in this collection: world stopped */
/* In generation 1 or 2 (clear: generation 0, so allocation writes nothing; FT_OBJ_GC_OLDEST tells
 * 1 from 2): set by the collector, cleared by ft_gc_track. */
#define FT_GC_OLD 32
/* Cached on a thread's freelist: freed for the object layer, allocated for the heap (heap walks
 * skip it by this bit). Set by the thread that frees it; cleared by its next allocation, or when
 * that thread's stop empties the freelist into the heap. */
#define FT_GC_ON_FREELIST 64
/* Debug builds only: given back to the heap (their use-after-free checks read it). Set by the
 * thread that frees it, cleared by the block's next allocation. Release builds never write it. */
#define FT_GC_HEAP_FREED 128

/* ob_flags: atomic fetch_or / fetch_and by any thread (above) */
#define FT_OBJ_STATIC 1 /* static storage (FT_STATIC_OBJECT_INIT), always immortal; never written */
/* Deferred reference counting: freed only by the collector (stack references, ftrt/stackref.h),
 * by a merge of counts kept elsewhere (per-thread counts, ftrt/uniqueid.h), or never (immortal).
 * Set by the allocation of an FT_TYPE_DEFERRED type, ft_object_enable_deferred_rc,
 * ft_uniqueid_enable and ft_immortalize; cleared by ft_uniqueid_merge and by the collector for
 * garbage. */
#define FT_OBJ_DEFERRED 2
/* A thread other than the owner has reached the object, so its owner must free what readers may
 * still see with QSBR (CPython's _PyGC_BITS_SHARED; for containers).
 * Set by that thread. */
#define FT_OBJ_SHARED 4
/* With FT_GC_OLD: in generation 2, not 1 (ignored without FT_GC_OLD). Set and cleared by the
 * collector with the world stopped; ob_gc_bits has no room left for it. */
#define FT_OBJ_GC_OLDEST 8

/* ---- types ----------------------------------------------------------------------------------- */

typedef int (*ft_visit_fn)(ft_object *referent, void *arg);

/* Type flags */
/* May form cycles: instances come from the GC heap, start untracked, and are traversed by the
 * collector once the host tracks them (ftrt/gc.h). */
#define FT_TYPE_GC 1
/* Instances can be weakly referenced (ftrt/weakref.h): weaklist_offset names their list head. */
#define FT_TYPE_HAS_WEAKREFS 2
/* Instances may get per-thread reference counts: ft_uniqueid_enable
 * (include/ftrt/uniqueid.h), with the id in the field unique_id_offset names. */
#define FT_TYPE_UNIQUEID 4
/* Deferred reference counting for every instance, from its allocation (ftrt/stackref.h): instances
 * get FT_OBJ_DEFERRED and a bias in their shared count (CPython's _PyObject_SetDeferredRefcount), so
 * that references from evaluation stacks need no count and only a collection, which counts those
 * references, frees them. One object at a time: ft_object_enable_deferred_rc. */
#define FT_TYPE_DEFERRED 8
/* Instances start with an ft_weakref (ftrt/weakref.h); with FT_TYPE_GC. */
#define FT_TYPE_WEAKREF 16

/* How ftrt allocates, counts and destroys a type's instances. Immutable while instances exist (or
 * may be allocated): any thread reads it without synchronisation (allocation, the owner's free,
 * dealloc, the merge queues, the collector), through each instance's ob_type. A static const
 * definition is the usual form. */
struct ft_type {
    const char *name;      /* shown in errors */
    size_t basic_size;     /* bytes, including the ft_object header */
    size_t item_size;      /* bytes per item for ft_alloc_var; 0 otherwise */
    uint32_t flags;        /* FT_TYPE_* */
    uint32_t freelist_max; /* per-thread cache of freed instances (ft_alloc only, not _var); 0: none */
    /* FT_TYPE_UNIQUEID types: the offset of a uint32_t in the instance that the host reserves
     * for ftrt (its unique id; 0 = none). */
    uint32_t unique_id_offset;
    /* FT_TYPE_HAS_WEAKREFS types: the offset of a pointer-sized field in the instance that the host
     * reserves for ftrt (the head of its weak references; zeroed by ft_alloc). */
    uint32_t weaklist_offset;
    /* GC types: visit each object this one references, stopping at the first non-zero return of
     * visit and returning it. It runs with the world stopped, so it must not block, allocate or
     * count references; it may be called from any thread. */
    int (*traverse)(ft_object *self, ft_visit_fn visit, void *arg);
    /* GC types: drop the references this object holds, to break a cycle (the collector calls it on
     * unreachable objects, world running). */
    void (*clear)(ft_object *self);
    /* PEP 442 finalizer: runs once, before dealloc; may resurrect the object. */
    void (*finalize)(ft_object *self);
    /* Legacy finalizer (tp_del): an object with one, in a cycle, is uncollectable. */
    void (*legacy_del)(ft_object *self);
    /* Release what the object holds (decref its fields). ftrt frees the memory afterwards. */
    void (*dealloc)(ft_object *self);
};
/* Read by ft_object_unique_id (ftrt/uniqueid.h). */
FT_ABI_OFFSET(ft_type, unique_id_offset, 32);
FT_ABI_OFFSET(ft_type, traverse, 40);

/* A static, immortal object: `static my_obj x = {FT_STATIC_OBJECT_INIT(&my_type), ...};` */
#define FT_STATIC_OBJECT_INIT(type)                                                                \
    {                                                                                              \
        0, FT_OBJ_STATIC | FT_OBJ_DEFERRED, {0}, 0, FT_IMMORTAL_LOCAL, 0, (type)                  \
    }

/* ---- allocation ------------------------------------------------------------------------------ */

/* A new object of type, owned by t, with count 1 and its bytes after the header zeroed; or NULL with
 * ft_last_error() == FT_ENOMEM (FT_EINVAL for a bad type). t must be attached. */
FT_API ft_object *ft_alloc(ft_thread *t, const ft_type *type);
/* The same with room for nitems items of type->item_size after basic_size. */
FT_API ft_object *ft_alloc_var(ft_thread *t, const ft_type *type, size_t nitems);

/* ft_alloc and ft_alloc_var without the zeroing: the bytes after the header are whatever the block
 * held (CPython's PyObject_New beside PyType_GenericAlloc; mimalloc's mi_malloc beside mi_zalloc),
 * for constructors that write every field themselves. A debug build of ftrt fills them with
 * FT_UNINIT_BYTE instead, so that a field left unwritten shows. GC types are served too: their
 * objects start untracked, and the collector reads nothing of them until the constructor has
 * written them and tracked them (ft_gc_track); a FT_TYPE_HAS_WEAKREFS type's list head is zeroed
 * all the same. */
FT_API ft_object *ft_alloc_uninit(ft_thread *t, const ft_type *type);
FT_API ft_object *ft_alloc_var_uninit(ft_thread *t, const ft_type *type, size_t nitems);
#define FT_UNINIT_BYTE 0xCD

/* ---- reference counting: inline fast paths --------------------------------------------------- */

/* ---- ABI, not API ------------------------------------------------------------------------------
 * The out-of-line halves of the inline functions in this header. They are exported because inline
 * code in the host calls them, and named ft__ because nothing else should: they assume the checks
 * their inline callers made. They are not documented in docs/ and may change between versions. */
FT_API void ft__merge_zero_local(ft_object *o);
FT_API void ft__decref_shared_settle(ft_object *o, intptr_t old);
FT_API void ft__incref_checked(ft_object *o);
FT_API void ft__decref_checked(ft_object *o);

/* Whether a non-owner's subtract that found `old` in ob_ref_shared leaves work to do: the count was
 * not positive, or it dropped a merged object's last reference (ft__decref_shared_settle). */
static inline bool ft__shared_decref_needs_settle(intptr_t old)
{
    return old < FT_SHARED_ONE || old == (FT_SHARED_ONE | FT_SHARED_MERGED);
}

static inline bool ft_object_is_owned(const ft_object *o)
{
    return atomic_load_explicit(&((ft_object *)o)->ob_tid, memory_order_relaxed) ==
           ft_os_thread_id();
}

static inline bool ft_object_is_immortal(const ft_object *o)
{
    return atomic_load_explicit(&((ft_object *)o)->ob_ref_local, memory_order_relaxed) ==
           FT_IMMORTAL_LOCAL;
}

/* Build the library user's code with FTRT_DEBUG defined to get the checked versions, which detect
 * underflow and use of freed objects and keep the runtime's reference total. Release builds still
 * catch most extra decrefs, off these paths: once an object is freed its ob_tid is a list link, so
 * a decref takes the non-owner's path, whose settling and merges check for a count below zero and
 * for a block on a freelist (docs/objects.md, "An extra decref, in any build"). */
static inline void ft_incref(ft_object *o)
{
#ifdef FTRT_DEBUG
    ft__incref_checked(o);
#else
    /* Ownership first: an immortal object has ob_tid 0, so it is never "owned", and the owner's path
     * needs no immortal check. */
    if (FT_LIKELY(ft_object_is_owned(o)))
        atomic_store_explicit(&o->ob_ref_local,
                              atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    else if (!ft_object_is_immortal(o))
        /* release: a try-incref that succeeds on the count this adds sees the object as this thread
         * does (see "What a successful try-incref sees"); on x86 the same instruction as relaxed. */
        atomic_fetch_add_explicit(&o->ob_ref_shared, FT_SHARED_ONE, memory_order_release);
#endif
}

static inline void ft_decref(ft_object *o)
{
#ifdef FTRT_DEBUG
    ft__decref_checked(o);
#else
    if (FT_LIKELY(ft_object_is_owned(o))) {
        uint32_t local = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed) - 1;
        atomic_store_explicit(&o->ob_ref_local, local, memory_order_relaxed);
        if (FT_UNLIKELY(local == 0))
            ft__merge_zero_local(o);
    } else if (!ft_object_is_immortal(o)) {
        /* Subtract first; only a count that was not positive, or a merged object's last reference,
         * needs more (ft__decref_shared_settle). acq_rel: this thread's writes to the object happen
         * before whoever frees it, and a thread that frees it sees everyone's. */
        intptr_t old = atomic_fetch_sub_explicit(&o->ob_ref_shared, FT_SHARED_ONE,
                                                 memory_order_acq_rel);
        if (FT_UNLIKELY(ft__shared_decref_needs_settle(old)))
            ft__decref_shared_settle(o, old);
    }
#endif
}

static inline void ft_xincref(ft_object *o)
{
    if (o)
        ft_incref(o);
}

static inline void ft_xdecref(ft_object *o)
{
    if (o)
        ft_decref(o);
}

/* ---- reference counting: the rest ------------------------------------------------------------ */

/* The true count (a snapshot when other threads are counting too). Immortal: UINT32_MAX. */
FT_API intptr_t ft_refcount(const ft_object *o);

/* Whether the caller holds the only reference: it owns o, local is 1 and the shared word is 0. */
static inline bool ft_object_is_unique(const ft_object *o)
{
    return ft_object_is_owned(o) &&
           atomic_load_explicit(&((ft_object *)o)->ob_ref_local, memory_order_relaxed) == 1 &&
           atomic_load_explicit(&((ft_object *)o)->ob_ref_shared, memory_order_relaxed) == 0;
}

/* Give up the owner's bias: fold local into shared (+extra), set ob_tid 0 and the MERGED state.
 * Returns the new count; the caller frees the object if it is 0. Owner only (or world stopped). */
FT_API intptr_t ft_object_merge(ft_object *o, intptr_t extra);

/* Set the count to n (n > UINT32_MAX - 1 makes the object immortal). The owner keeps its bias;
 * another thread merges the object. The caller must hold the only reference(s) being replaced.
 * Debug builds' reference total changes by the difference. Fatal for an object with per-thread
 * reference counts (ftrt/uniqueid.h), whose count no single value describes. */
FT_API void ft_set_refcount(ft_object *o, size_t n);

/* Make o immortal: never counted, never freed; its count leaves debug builds' reference total for
 * good. No other thread may count o meanwhile. An object with per-thread reference counts
 * (ftrt/uniqueid.h) keeps its id; merges drop what threads counted in its slots. */
FT_API void ft_immortalize(ft_object *o);

/* Run t's pending merges and hand over its outbox now (both also happen at ft_safepoint). */
FT_API void ft_brc_merge(ft_thread *t);

/* ---- lock-free readers ----------------------------------------------------------------------- */

/* A writer that stores o into a slot that lock-free readers load promises them they may try-incref
 * o: returns o with a new reference, marked MAYBE_WEAKREF (ft_object_enable_try_incref; immortal
 * objects need no mark and get none), whether or not the writer owns o. The price of the mark for
 * the owner: its last decref merges the object (a CAS) instead of freeing it at once. */
FT_API ft_object *ft_new_ref_for_shared_slot(ft_object *o);
/* Mark o as safe to try-incref (a CAS of the shared state DEFAULT -> MAYBE_WEAKREF). */
FT_API void ft_object_enable_try_incref(ft_object *o);

/* Take a reference to o unless its count is already zero (it is being freed). o's memory must still
 * be an object header (see the heap's reuse rule). Returns whether a reference was taken.
 *
 * What a successful try-incref sees. A pointer loaded from a shared slot may be stale: its object
 * freed and the block reused, at once, for a new object of the same size class (heap.h), and
 * try-incref may succeed on that one. Every write that makes an object try-increfable has release
 * order: the promise (ft_object_enable_try_incref), a non-owner's incref, the merges, a non-owner's
 * ft_set_refcount, ft_immortalize; and every count a try-incref accepts was written by one of them
 * or by a read-modify-write after one (which continues its release sequence). A success has acquire
 * order, so the reader sees the object it got as its writers built it, whichever object that is. To
 * know it is the object the slot holds, use ft_try_incref_compare or ft_get_ref. */
FT_API bool ft_try_incref(ft_object *o);
/* try-incref o, then check that *slot still holds o; on a change, drop the reference and fail. */
FT_API bool ft_try_incref_compare(ft_object *_Atomic *slot, ft_object *o);
/* Load *slot and take a reference to what it holds, retrying while it changes. NULL if empty. The
 * object must carry the try-incref promise (stored with ft_new_ref_for_shared_slot, or marked with
 * ft_object_enable_try_incref); otherwise, while its shared count is zero, this spins until the
 * slot changes. */
FT_API ft_object *ft_get_ref(ft_object *_Atomic *slot);

/* ---- resurrection ---------------------------------------------------------------------------- */

/* Around code run from dealloc (a finalizer): begin makes the caller the owner with count 1; end
 * drops that reference and returns true if the object is dead (the caller goes on freeing it) or
 * false if the finalizer resurrected it (the caller must not touch it again). */
FT_API void ft_resurrect_begin(ft_object *o);
FT_API bool ft_resurrect_end(ft_object *o);

#ifdef __cplusplus
}
#endif
#endif
