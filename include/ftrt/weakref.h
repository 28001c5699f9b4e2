/* ftrt/weakref.h: weak references, with the semantics of Python's weakref.ref.
 *
 * A weak reference names its referent without keeping it alive. Instances of types flagged
 * FT_TYPE_HAS_WEAKREFS can be weakly referenced; such a type reserves a pointer-sized field, zeroed
 * at allocation, for the head of the object's list of weak references (ft_type.weaklist_offset).
 *
 * A weak reference is itself a tracked GC object (an ft_weakref, or a host type that starts with
 * one, the way Python code subclasses weakref.ref). It may carry a callback: a C function and an
 * object it keeps a strong reference to (its traverse visits only that object). When the referent
 * dies the weak reference is cleared (ft_weakref_get returns NULL from then on) and, if the weak
 * reference itself is still alive, its callback is called once with it.
 *
 *   - By reference counting: the referent's finalizer runs first (it may resurrect it); then all
 *     its weak references are cleared, then the callbacks are called, newest weak reference first.
 *   - By the collector: every weak reference to an unreachable object is cleared before any
 *     finalizer or callback runs; the callbacks of weak references that are themselves unreachable
 *     are not called; the others are called, newest first for one referent, all before any
 *     finalizer (ftrt/gc.h).
 *
 * Thread safety: any thread may get, create or drop weak references to a shared object at any time.
 * A get races safely with the referent's last decref on another thread: it returns a new reference
 * to a live object, or NULL. Creating the first weak reference to an object marks it
 * try-incref-able (ft_object_enable_try_incref), so its owner's last decref merges it first. */
#ifndef FTRT_WEAKREF_H
#define FTRT_WEAKREF_H

#include "object.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ft_weakref ft_weakref;

/* Called with the weak reference (the caller holds a reference to it for the call) and the object
 * the weak reference holds for it (may be NULL). */
typedef void (*ft_weakref_callback)(ft_weakref *wr, ft_object *arg);

/* The fields are ftrt's: hosts read them only through the functions below. */
struct ft_weakref {
    ft_object ob_base;
    /* The referent, NULL once cleared. Written under the referent's weak reference lock (and by the
     * collector with the world stopped); read under it, or relaxed as a hint. */
    _Atomic(ft_object *) wr_object;
    ft_weakref_callback wr_callback; /* NULL: none; immutable until the weak reference is cleared */
    ft_object *wr_arg;               /* the callback's object (strong), or NULL; as wr_callback */
    ft_weakref *wr_prev, *wr_next;   /* the referent's list, newest first; under its lock */
};

/* The type of plain weak references (ft_weakref_new). */
FT_API extern const ft_type ft_weakref_type;

/* A new weak reference to referent, with an optional callback and its object (a new strong
 * reference is taken to arg). The weak reference is tracked, and returned with one reference; NULL
 * with ft_last_error() FT_EINVAL (referent's type not FT_TYPE_HAS_WEAKREFS) or FT_ENOMEM. */
FT_API ft_weakref *ft_weakref_new(ft_thread *t, ft_object *referent, ft_weakref_callback callback,
                                  ft_object *arg);
/* The same with a host type whose instances start with an ft_weakref: flags FT_TYPE_GC |
 * FT_TYPE_WEAKREF, basic_size >= sizeof(ft_weakref). ftrt traverses, clears and deallocates the
 * ft_weakref part itself; the type's own traverse, clear and dealloc (each optional) handle the rest,
 * and run first. */
FT_API ft_weakref *ft_weakref_new_of_type(ft_thread *t, const ft_type *type, ft_object *referent,
                                          ft_weakref_callback callback, ft_object *arg);

/* The referent with a new reference, or NULL once it is dead or dying. */
FT_API ft_object *ft_weakref_get(ft_weakref *wr);
/* How many weak references o has (weakref.getweakrefcount). */
FT_API size_t ft_weakref_count(ft_object *o);

#ifdef __cplusplus
}
#endif
#endif
