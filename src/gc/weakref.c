/* weakref.c: weak references (ftrt/weakref.h).
 *
 * A referent's weak references form a doubly linked list, newest first, whose head is a field of
 * the referent (its type's weaklist_offset). The list and every member's wr_object change under one
 * of the runtime's striped locks, chosen by the referent's address, as CPython's free-threaded build
 * does; or with the world stopped by the collector, which needs no lock: an internal lock is never
 * held across a safepoint, so no suspended thread holds one.
 *
 * get. Load wr_object; if it is not NULL, lock its stripe and look again: still there means the
 * referent's dealloc has not cleared its list yet (that takes the same lock), so its memory is an
 * object, and a try-incref decides: it fails once the count has reached zero. Creating a weak
 * reference marks the referent try-incref-able (MAYBE_WEAKREF), so a non-owner's try-incref is
 * sound while its owner counts it, and the owner's last decref merges it first.
 *
 * Death by reference counting (ft_weakref_clear_dying, from the referent's dealloc after its
 * finalizer): under the lock, every weak reference is unlinked and cleared, and those that are
 * alive and have a callback are kept with a reference (a weak reference may be dying on another
 * thread: its count is zero, and its own dealloc waits for the lock to unlink itself, finding it
 * done); outside the lock the callbacks run, newest first, each detached from its weak reference
 * first (CPython's PyObject_ClearWeakRefs). The callbacks may have made new weak references to
 * the referent meanwhile: they are cleared too, without callbacks.
 *
 * Death in the collector: gc.c clears them in its stop (ft_weakref_clear_stopped) and runs the
 * callbacks itself, leaving them attached, as CPython's handle_weakrefs does.
 *
 * A weak reference is a tracked GC object; its own part is its callback's object, which traverse
 * visits and clear and dealloc release (gc.c's ft_gc_traverse and ft_gc_clear, object.c's dealloc
 * call in here after the host type's functions). */
#include <stdlib.h>

#include "internal/internal.h"

const ft_type ft_weakref_type = {
    .name = "weakref",
    .basic_size = sizeof(ft_weakref),
    .flags = FT_TYPE_GC | FT_TYPE_WEAKREF,
};

ft_mutex *ft_weakref_lock_for(ft_runtime *rt, const ft_object *referent)
{
    uintptr_t a = (uintptr_t)referent >> 4; /* blocks are 16-aligned */
    return &rt->gc.weakref_locks[(a ^ (a >> 7)) % FT_WEAKREF_STRIPES];
}

static ft_object *referent_of(ft_weakref *wr)
{
    return atomic_load_explicit(&wr->wr_object, memory_order_acquire);
}

/* Unlink wr from referent's list and clear it: referent's lock held, or the world stopped. */
static void unlink_locked(ft_weakref *wr, ft_object *referent)
{
    if (wr->wr_prev)
        wr->wr_prev->wr_next = wr->wr_next;
    else
        atomic_store_explicit(ft_weakref_list(referent), wr->wr_next, memory_order_relaxed);
    if (wr->wr_next)
        wr->wr_next->wr_prev = wr->wr_prev;
    wr->wr_prev = wr->wr_next = NULL;
    atomic_store_explicit(&wr->wr_object, NULL, memory_order_relaxed);
}

static FT_NORETURN __attribute__((noinline, cold)) void bad_weakref_type(const ft_type *type)
{
    ft_fatal("ft_weakref_new_of_type: type '%s' is not a weak reference type (it needs FT_TYPE_GC "
             "| FT_TYPE_WEAKREF and basic_size >= sizeof(ft_weakref))",
             type && type->name ? type->name : "?");
}

ft_weakref *ft_weakref_new_of_type(ft_thread *t, const ft_type *type, ft_object *referent,
                                   ft_weakref_callback callback, ft_object *arg)
{
    if (!type || (type->flags & (FT_TYPE_GC | FT_TYPE_WEAKREF)) != (FT_TYPE_GC | FT_TYPE_WEAKREF) ||
        type->basic_size < sizeof(ft_weakref))
        bad_weakref_type(type);
    if (!referent || !(referent->ob_type->flags & FT_TYPE_HAS_WEAKREFS)) {
        ft_set_last_error(FT_EINVAL);
        return NULL;
    }
    ft_weakref *wr = (ft_weakref *)ft_alloc(t, type);
    if (!wr)
        return NULL;
    wr->wr_callback = callback;
    wr->wr_arg = arg;
    ft_xincref(arg);
    /* Both may be try-incref'd by other threads: the referent by gets, the weak reference by its
     * referent's dealloc on any thread. */
    ft_object_enable_try_incref(referent);
    ft_object_enable_try_incref(&wr->ob_base);
    ft_mutex *lock = ft_weakref_lock_for(t->rt, referent);
    ft_mutex_lock_internal(lock);
    _Atomic(ft_weakref *) *head = ft_weakref_list(referent);
    ft_weakref *first = atomic_load_explicit(head, memory_order_relaxed);
    wr->wr_next = first;
    if (first)
        first->wr_prev = wr;
    atomic_store_explicit(head, wr, memory_order_relaxed);
    atomic_store_explicit(&wr->wr_object, referent, memory_order_relaxed);
    ft_mutex_unlock(lock);
    ft_gc_track(&wr->ob_base);
    return wr;
}

ft_weakref *ft_weakref_new(ft_thread *t, ft_object *referent, ft_weakref_callback callback,
                           ft_object *arg)
{
    return ft_weakref_new_of_type(t, &ft_weakref_type, referent, callback, arg);
}

ft_object *ft_weakref_get(ft_weakref *wr)
{
    ft_object *referent = referent_of(wr);
    if (!referent)
        return NULL;
    ft_mutex *lock = ft_weakref_lock_for(ft_object_runtime(&wr->ob_base), referent);
    ft_mutex_lock_internal(lock);
    if (atomic_load_explicit(&wr->wr_object, memory_order_relaxed) != referent ||
        !ft_try_incref(referent))
        referent = NULL;
    ft_mutex_unlock(lock);
    return referent;
}

size_t ft_weakref_count(ft_object *o)
{
    if (!(o->ob_type->flags & FT_TYPE_HAS_WEAKREFS))
        return 0;
    ft_mutex *lock = ft_weakref_lock_for(ft_object_runtime(o), o);
    ft_mutex_lock_internal(lock);
    size_t n = 0;
    for (ft_weakref *wr = atomic_load_explicit(ft_weakref_list(o), memory_order_relaxed); wr;
         wr = wr->wr_next)
        n++;
    ft_mutex_unlock(lock);
    return n;
}

/* Whether the caller can take a reference to wr: it is not dying. Its owner's count is exact for
 * the owner, which may be the caller in the middle of wr's own dealloc; any other thread's
 * try-incref fails once the count reached zero. */
static bool hold(ft_weakref *wr)
{
    ft_object *o = &wr->ob_base;
    if (ft_object_is_owned(o) && ft_refcount(o) <= 0)
        return false;
    return ft_try_incref(o);
}

void ft_weakref_clear_dying(ft_object *o)
{
    _Atomic(ft_weakref *) *head = ft_weakref_list(o);
    if (!atomic_load_explicit(head, memory_order_relaxed))
        return;
    ft_thread *t = ft_current_thread;
    ft_mutex *lock = ft_weakref_lock_for(t->rt, o);
    /* Kept weak references, oldest first, linked through wr_next (free once unlinked). */
    ft_weakref *kept = NULL;
    ft_mutex_lock_internal(lock);
    for (ft_weakref *wr; (wr = atomic_load_explicit(head, memory_order_relaxed)) != NULL;) {
        bool call = wr->wr_callback && hold(wr);
        unlink_locked(wr, o);
        if (call) {
            wr->wr_next = kept;
            kept = wr;
        }
    }
    ft_mutex_unlock(lock);
    /* Newest first: reverse the chain. */
    ft_weakref *order = NULL;
    while (kept) {
        ft_weakref *next = kept->wr_next;
        kept->wr_next = order;
        order = kept;
        kept = next;
    }
    while (order) {
        ft_weakref *wr = order;
        order = wr->wr_next;
        wr->wr_next = NULL;
        ft_weakref_callback callback = wr->wr_callback;
        ft_object *arg = wr->wr_arg;
        wr->wr_callback = NULL;
        wr->wr_arg = NULL;
        callback(wr, arg);
        ft_xdecref(arg);
        ft_decref(&wr->ob_base);
    }
    /* Weak references the callbacks made meanwhile: cleared without their callbacks (CPython does
     * this for objects with a finalizer only, and leaves the others dangling). */
    if (atomic_load_explicit(head, memory_order_relaxed)) {
        ft_mutex_lock_internal(lock);
        for (ft_weakref *wr; (wr = atomic_load_explicit(head, memory_order_relaxed)) != NULL;)
            unlink_locked(wr, o);
        ft_mutex_unlock(lock);
    }
}

void ft_weakref_clear_stopped(ft_weakref *wr)
{
    ft_object *referent = atomic_load_explicit(&wr->wr_object, memory_order_relaxed);
    if (referent)
        unlink_locked(wr, referent);
}

/* Unlink wr from its referent, if it still has one (world running). */
static void detach(ft_weakref *wr)
{
    ft_object *referent = referent_of(wr);
    if (!referent)
        return;
    ft_mutex *lock = ft_weakref_lock_for(ft_object_runtime(&wr->ob_base), referent);
    ft_mutex_lock_internal(lock);
    if (atomic_load_explicit(&wr->wr_object, memory_order_relaxed) == referent)
        unlink_locked(wr, referent);
    ft_mutex_unlock(lock);
}

/* Drop the callback and its object (a clear, or a dealloc). */
static void drop_callback(ft_weakref *wr)
{
    ft_object *arg = wr->wr_arg;
    wr->wr_callback = NULL;
    wr->wr_arg = NULL;
    ft_xdecref(arg);
}

void ft_weakref_release_base(ft_weakref *wr)
{
    detach(wr);
    drop_callback(wr);
}
