/* ftrt/stackref.h: tagged stack references and deferred reference counting (CPython's
 * _PyStackRef, pycore_stackref.h, under ft_stackref_* names).
 *
 * A host's evaluation stacks hold ft_stackref words instead of object pointers. A stackref either
 * owns a counted reference (untagged: the object's address) or owns none (tagged: the address with
 * bit 0 set). Objects with deferred reference counting (FT_OBJ_DEFERRED: functions, types, code,
 * module globals; ft_object_enable_deferred_rc) and immortal objects are pushed tagged, so hot
 * shared objects are used from every thread's stack without touching their counts. Deferred objects
 * carry a bias in their shared count that keeps ordinary decrefs from ever freeing them; only the
 * collector frees them, after adding one reference for each tagged stackref it finds on the stacks
 * the threads registered (ft_stack_push_region). Deferred objects are GC objects: only a collection
 * could free them.
 *
 * Tag layout (objects are 16-byte aligned):
 *   ....xxx0  an object, one counted reference owned
 *   ....xxx1  an object (or NULL, the word 1), no reference owned: deferred, immortal or borrowed
 *   ....xx11  a tagged integer: the value shifted left by 2
 *
 * Which operations touch a count: new (counted objects only), dup and close (untagged only),
 * as_object_steal (tagged only: it makes the reference the caller gets), as_object_new (always),
 * make_heap_safe (tagged, non-deferred, non-immortal only). Everything else is a bit operation.
 *
 * A borrowed stackref (ft_stackref_from_object_borrow) is valid only while a counted reference
 * backs it on the same stack or in the caller; it must never be stored where the collector does not
 * scan: make it heap safe first (ft_stackref_make_heap_safe). */
#ifndef FTRT_STACKREF_H
#define FTRT_STACKREF_H

#include "object.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ft_stackref {
    uintptr_t bits;
} ft_stackref;

#define FT_STACKREF_TAG_NO_REF ((uintptr_t)1)
#define FT_STACKREF_TAG_INT ((uintptr_t)3)
#define FT_STACKREF_TAG_MASK ((uintptr_t)3)

#define FT_STACKREF_NULL ((ft_stackref){FT_STACKREF_TAG_NO_REF})

static inline bool ft_object_is_deferred(const ft_object *o)
{
    return atomic_load_explicit(&((ft_object *)o)->ob_flags, memory_order_relaxed) &
           FT_OBJ_DEFERRED;
}

static inline bool ft_stackref_is_null(ft_stackref r)
{
    return r.bits == FT_STACKREF_TAG_NO_REF;
}

/* Tagged: owns no reference (deferred, immortal, borrowed or NULL); not an integer. */
static inline bool ft_stackref_is_tagged(ft_stackref r)
{
    return (r.bits & FT_STACKREF_TAG_MASK) == FT_STACKREF_TAG_NO_REF;
}

static inline bool ft_stackref_is_tagged_int(ft_stackref r)
{
    return (r.bits & FT_STACKREF_TAG_MASK) == FT_STACKREF_TAG_INT;
}

static inline ft_stackref ft_stackref_tag_int(intptr_t v)
{
    return (ft_stackref){((uintptr_t)v << 2) | FT_STACKREF_TAG_INT};
}

static inline intptr_t ft_stackref_untag_int(ft_stackref r)
{
    return (intptr_t)r.bits >> 2;
}

/* ---- debug mode (FTRT_STACKREF_DEBUG) -------------------------------------------------------------
 *
 * Built with FTRT_STACKREF_DEBUG (CMake option of the same name; a public compile definition of the
 * ftrt targets, so the library and the code that includes this header agree), a stackref that refers
 * to an object holds no address: bits is an id, shifted left by 2, into a table of the runtime of the
 * calling thread, with the same tag meaning (bit 0 set: owns no count; tagged integers and NULL, the
 * word 1, are unchanged and in no table). Each entry records the object, whether the stackref owns a
 * count, the creating thread, the creation site, the last borrow site and the close site. Every
 * operation below is then a macro that passes __FILE__ and __LINE__ to the out-of-line function of
 * the same name with a _debug infix, and ft_fatal names the sites, the object's address and its type
 * on: use after close, double close, an unknown id, and stackrefs that own a count still open when
 * their creating thread stops (ft_thread_stop). Ids are never reused (an entry takes 64 bytes for the
 * runtime's life): the mode is for tests. The operations need the calling thread attached.
 *
 * A stackref stored in the heap must go through ft_stackref_make_heap_safe in this mode even when it
 * is already safe: that marks its entry as heap-held, exempt from the thread-stop check.
 *
 * The functions are in every build (so the library exports the same symbols); in a library built
 * without the option they report a fatal error. */
FT_API ft_stackref ft_stackref_debug_from_object_new(ft_object *o, const char *file, int line);
FT_API ft_stackref ft_stackref_debug_from_object_steal(ft_object *o, const char *file, int line);
FT_API ft_stackref ft_stackref_debug_from_object_borrow(ft_object *o, const char *file, int line);
FT_API ft_stackref ft_stackref_debug_from_object_immortal(ft_object *o, const char *file, int line);
FT_API ft_object *ft_stackref_debug_as_object_borrow(ft_stackref r, const char *file, int line);
FT_API ft_object *ft_stackref_debug_as_object_steal(ft_stackref r, const char *file, int line);
FT_API ft_object *ft_stackref_debug_as_object_new(ft_stackref r, const char *file, int line);
FT_API const ft_type *ft_stackref_debug_type(ft_stackref r, const char *file, int line);
FT_API ft_stackref ft_stackref_debug_dup(ft_stackref r, const char *file, int line);
FT_API void ft_stackref_debug_close(ft_stackref r, const char *file, int line);
FT_API void ft_stackref_debug_xclose(ft_stackref r, const char *file, int line);
FT_API bool ft_stackref_debug_is_deferred(ft_stackref r, const char *file, int line);
FT_API bool ft_stackref_debug_is_heap_safe(ft_stackref r, const char *file, int line);
FT_API ft_stackref ft_stackref_debug_make_heap_safe(ft_stackref r, const char *file, int line);

#ifdef FTRT_STACKREF_DEBUG

#define ft_stackref_from_object_new(o) ft_stackref_debug_from_object_new((o), __FILE__, __LINE__)
#define ft_stackref_from_object_steal(o) ft_stackref_debug_from_object_steal((o), __FILE__, __LINE__)
#define ft_stackref_from_object_borrow(o)                                                          \
    ft_stackref_debug_from_object_borrow((o), __FILE__, __LINE__)
#define ft_stackref_from_object_immortal(o)                                                        \
    ft_stackref_debug_from_object_immortal((o), __FILE__, __LINE__)
#define ft_stackref_as_object_borrow(r) ft_stackref_debug_as_object_borrow((r), __FILE__, __LINE__)
#define ft_stackref_as_object_steal(r) ft_stackref_debug_as_object_steal((r), __FILE__, __LINE__)
#define ft_stackref_as_object_new(r) ft_stackref_debug_as_object_new((r), __FILE__, __LINE__)
#define ft_stackref_type(r) ft_stackref_debug_type((r), __FILE__, __LINE__)
#define ft_stackref_dup(r) ft_stackref_debug_dup((r), __FILE__, __LINE__)
#define ft_stackref_close(r) ft_stackref_debug_close((r), __FILE__, __LINE__)
#define ft_stackref_xclose(r) ft_stackref_debug_xclose((r), __FILE__, __LINE__)
#define ft_stackref_is_deferred(r) ft_stackref_debug_is_deferred((r), __FILE__, __LINE__)
#define ft_stackref_is_heap_safe(r) ft_stackref_debug_is_heap_safe((r), __FILE__, __LINE__)
#define ft_stackref_make_heap_safe(r) ft_stackref_debug_make_heap_safe((r), __FILE__, __LINE__)

#else /* !FTRT_STACKREF_DEBUG */

/* ---- from an object ---------------------------------------------------------------------------- */

/* A new reference: tagged for deferred and immortal objects (no count), counted otherwise. */
static inline ft_stackref ft_stackref_from_object_new(ft_object *o)
{
    if (ft_object_is_deferred(o) || ft_object_is_immortal(o))
        return (ft_stackref){(uintptr_t)o | FT_STACKREF_TAG_NO_REF};
    ft_incref(o);
    return (ft_stackref){(uintptr_t)o};
}

/* Take over the caller's counted reference. */
static inline ft_stackref ft_stackref_from_object_steal(ft_object *o)
{
    return (ft_stackref){(uintptr_t)o};
}

/* No reference: valid while a counted one backs it (see above). */
static inline ft_stackref ft_stackref_from_object_borrow(ft_object *o)
{
    return (ft_stackref){(uintptr_t)o | FT_STACKREF_TAG_NO_REF};
}

/* An immortal object: no count, ever. */
static inline ft_stackref ft_stackref_from_object_immortal(ft_object *o)
{
    return (ft_stackref){(uintptr_t)o | FT_STACKREF_TAG_NO_REF};
}

/* ---- to an object ------------------------------------------------------------------------------ */

static inline ft_object *ft_stackref_as_object_borrow(ft_stackref r)
{
    return (ft_object *)(r.bits & ~FT_STACKREF_TAG_MASK);
}

/* A counted reference the caller owns, the stackref consumed. */
static inline ft_object *ft_stackref_as_object_steal(ft_stackref r)
{
    ft_object *o = ft_stackref_as_object_borrow(r);
    if (r.bits & FT_STACKREF_TAG_NO_REF)
        ft_incref(o);
    return o;
}

/* A new counted reference; the stackref stays. */
static inline ft_object *ft_stackref_as_object_new(ft_stackref r)
{
    ft_object *o = ft_stackref_as_object_borrow(r);
    ft_incref(o);
    return o;
}

static inline const ft_type *ft_stackref_type(ft_stackref r)
{
    return ft_stackref_as_object_borrow(r)->ob_type;
}

/* ---- copying and closing ----------------------------------------------------------------------- */

static inline ft_stackref ft_stackref_dup(ft_stackref r)
{
    if ((r.bits & FT_STACKREF_TAG_MASK) == 0)
        ft_incref(ft_stackref_as_object_borrow(r));
    return r;
}

static inline void ft_stackref_close(ft_stackref r)
{
    if ((r.bits & FT_STACKREF_TAG_MASK) == 0)
        ft_decref(ft_stackref_as_object_borrow(r));
}

static inline void ft_stackref_xclose(ft_stackref r)
{
    if (!ft_stackref_is_null(r))
        ft_stackref_close(r);
}

/* Deferred: tagged to a deferred object (the collector counts it from the stacks). */
static inline bool ft_stackref_is_deferred(ft_stackref r)
{
    return ft_stackref_is_tagged(r) && !ft_stackref_is_null(r) &&
           ft_object_is_deferred(ft_stackref_as_object_borrow(r));
}

/* Safe to store in the heap: it owns a reference, or needs none: NULL, an immortal object, or a
 * deferred one (only the collector frees those, and it sees the reference through the holder's
 * traverse, ft_gc_visit_stackref). A borrowed reference to any other object is not. */
static inline bool ft_stackref_is_heap_safe(ft_stackref r)
{
    if (!ft_stackref_is_tagged(r) || ft_stackref_is_null(r))
        return true;
    ft_object *o = ft_stackref_as_object_borrow(r);
    return ft_object_is_immortal(o) || ft_object_is_deferred(o);
}

/* Make r safe to store in the heap: a borrowed reference to a mortal, non-deferred object becomes a
 * counted one. */
static inline ft_stackref ft_stackref_make_heap_safe(ft_stackref r)
{
    if (ft_stackref_is_heap_safe(r))
        return r;
    ft_object *o = ft_stackref_as_object_borrow(r);
    ft_incref(o);
    return (ft_stackref){(uintptr_t)o};
}

#endif /* FTRT_STACKREF_DEBUG */

/* ---- stacks the collector sees ----------------------------------------------------------------- */

/* A region of stackrefs a thread registers while it uses it: slots [base, top). The owner pushes
 * and pops regions (innermost last) and moves top as it pushes and pops values, attached; a full
 * collection, with the world stopped, reads every thread's regions (detached or suspended) and
 * counts one reference for each tagged stackref to one of its candidates. A top of NULL means "unknown right now"
 * (a thread interrupted between writing a slot and moving top): that collection then keeps every
 * deferred object alive (CPython's gh-129236). The region's memory is the host's. */
typedef struct ft_stack_region {
    ft_stackref *base;                /* owner writes before pushing; immutable while pushed */
    _Atomic(ft_stackref *) top;       /* owner writes (relaxed); the collector reads, world stopped */
    struct ft_stack_region *previous; /* the thread's next outer region; owner only */
} ft_stack_region;

FT_API void ft_stack_push_region(ft_thread *t, ft_stack_region *region, ft_stackref *base);
FT_API void ft_stack_pop_region(ft_thread *t, ft_stack_region *region);

static inline void ft_stack_region_set_top(ft_stack_region *region, ft_stackref *top)
{
    atomic_store_explicit(&region->top, top, memory_order_relaxed);
}

/* ---- deferred objects -------------------------------------------------------------------------- */

/* Make o deferred: it must be a GC object (only a collection frees a deferred object) and still
 * private (owned by the caller, no other thread has seen it, no shared count), tracked or not.
 * FT_EINVAL otherwise (and for immortal or already deferred objects), nothing changed. Instances of
 * FT_TYPE_DEFERRED types (which must be GC types) are deferred from allocation. */
FT_API ft_status ft_object_enable_deferred_rc(ft_object *o);

/* For a host traverse whose object holds stackrefs (a heap frame, a generator): visits the object
 * a stackref refers to, the way the collector needs it (a tagged reference is not in any count, so
 * the collector's subtraction skips it). */
FT_API int ft_gc_visit_stackref(ft_stackref r, ft_visit_fn visit, void *arg);

#ifdef __cplusplus
}
#endif
#endif
