/* object/stackref_debug.c: stackrefs as ids into a per-runtime table (FTRT_STACKREF_DEBUG; CPython's
 * Py_STACKREF_DEBUG, Python/stackrefs.c).
 *
 * Every stackref that refers to an object gets a fresh id: bits = (id << 2) | tag, tag 0 when it owns
 * a count, 1 when it owns none, so ft_stackref_is_tagged, is_null and is_tagged_int keep their
 * meaning without the table (NULL is the word 1, id 0; integers end in 11 and are in no table). The
 * entry records the object, its type name, whether a count is owned, the creating thread and the
 * creation, last borrow and close sites. Closing (close, xclose, as_object_steal) marks the entry
 * closed; using or closing it again, or an id never handed out, is fatal with every site known. Ids
 * are not reused, so closed entries stay (the mode is for tests). ft_thread_stop finds the entries
 * its thread created that are open, own a count and were never made heap safe (a leaked reference),
 * and is fatal on the first one.
 *
 * Thread safety: one mutex (level 4) guards the table; every operation takes it once, and does its
 * count changes (incref, decref: which may run a destructor that uses stackrefs) after releasing it.
 * The collector reads entries without it, world stopped (ft_stackref_debug_object_stopped). */
#include <stdlib.h>

#include "internal/internal.h"
#include "object/stackref_debug.h"
#include "thread/thread.h"

#ifdef FTRT_STACKREF_DEBUG

typedef ft_stackref_debug_entry entry;

static const char *site(const char *file)
{
    return file ? file : "?";
}

static ft_runtime *runtime_of_caller(const char *op, const char *file, int line)
{
    ft_thread *t = ft_current_thread;
    if (FT_UNLIKELY(!t ||
                    atomic_load_explicit(&t->state, memory_order_relaxed) != FT_THREAD_ATTACHED))
        ft_fatal("ft_stackref_%s at %s:%d: stackref operations need an attached thread (the calling "
                 "OS thread has %s)",
                 op, site(file), line, t ? "a detached thread state" : "no thread state");
    return t->rt;
}

static uintptr_t bits_of(size_t id, bool owns)
{
    return ((uintptr_t)id << 2) | (owns ? 0 : FT_STACKREF_TAG_NO_REF);
}

static void list_remove(ft_stackref_debug_runtime *d, size_t id)
{
    entry *e = &d->entries[id];
    if (e->prev)
        d->entries[e->prev].next = e->next;
    else
        d->open_head = e->next;
    if (e->next)
        d->entries[e->next].prev = e->prev;
    e->prev = e->next = 0;
    d->n_open--;
}

/* Under the mutex: a new open entry. */
static ft_stackref create_locked(ft_runtime *rt, ft_object *o, bool owns, const char *file,
                                 int line)
{
    ft_stackref_debug_runtime *d = &rt->stackref_debug;
    if (d->n == 0)
        d->n = 1; /* id 0 is NULL's */
    if (d->n >= d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        if (cap > UINT32_MAX)
            ft_fatal("ft_stackref_from_object at %s:%d: the stackref debug table is full (%zu ids)",
                     site(file), line, d->n);
        entry *grown = realloc(d->entries, cap * sizeof *grown);
        if (!grown)
            ft_fatal("ft_stackref_from_object at %s:%d: out of memory growing the stackref debug "
                     "table to %zu entries",
                     site(file), line, cap);
        d->entries = grown;
        d->cap = cap;
    }
    size_t id = d->n++;
    entry *e = &d->entries[id];
    *e = (entry){.obj = o,
                 .type_name = o && o->ob_type && o->ob_type->name ? o->ob_type->name : "?",
                 .creator = ft_current_thread,
                 .file = file,
                 .line = line,
                 .open = 1,
                 .owns = owns,
                 .next = d->open_head};
    if (d->open_head)
        d->entries[d->open_head].prev = (uint32_t)id;
    d->open_head = (uint32_t)id;
    d->n_open++;
    return (ft_stackref){bits_of(id, owns)};
}

static ft_stackref create(ft_object *o, bool owns, const char *op, const char *file, int line)
{
    ft_runtime *rt = runtime_of_caller(op, file, line);
    if (FT_UNLIKELY(!o))
        ft_fatal("ft_stackref_%s at %s:%d: NULL object (use FT_STACKREF_NULL)", op, site(file),
                 line);
    ft_mutex_lock_internal(&rt->stackref_debug.mutex);
    ft_stackref r = create_locked(rt, o, owns, file, line);
    ft_mutex_unlock(&rt->stackref_debug.mutex);
    return r;
}

static FT_NORETURN void report(const char *what, const char *op, uintptr_t bits, const entry *e,
                               const char *file, int line)
{
    ft_fatal("ft_stackref_%s at %s:%d: %s: stackref %#lx (id %lu) to object %p ('%s'), created at "
             "%s:%d, last borrowed at %s:%d, closed at %s:%d",
             op, site(file), line, what, (unsigned long)bits, (unsigned long)(bits >> 2),
             (void *)e->obj, e->type_name, site(e->file), e->line,
             e->borrow_file ? e->borrow_file : "-", e->borrow_line,
             e->close_file ? e->close_file : "-", e->close_line);
}

/* Under the mutex: the open entry of bits (which refers to an object), or fatal. */
static entry *lookup_locked(ft_runtime *rt, uintptr_t bits, const char *op, const char *file,
                            int line, bool closing)
{
    ft_stackref_debug_runtime *d = &rt->stackref_debug;
    size_t id = bits >> 2;
    if (FT_UNLIKELY(id == 0 || id >= d->n))
        ft_fatal("ft_stackref_%s at %s:%d: %s an unknown stackref %#lx (id %lu; runtime %p has "
                 "handed out ids below %lu)",
                 op, site(file), line, closing ? "closing" : "using", (unsigned long)bits,
                 (unsigned long)id, (void *)rt, (unsigned long)(d->n ? d->n : 1));
    entry *e = &d->entries[id];
    if (FT_UNLIKELY(!e->open))
        report(closing ? "double close" : "use after close", op, bits, e, file, line);
    if (FT_UNLIKELY((bits & FT_STACKREF_TAG_NO_REF) != (e->owns ? 0 : FT_STACKREF_TAG_NO_REF)))
        report(e->owns ? "a counted stackref's id with the no-reference tag"
                       : "a stackref that owns no count used as counted",
               op, bits, e, file, line);
    return e;
}

static bool refers(ft_stackref r)
{
    return !ft_stackref_is_null(r) && !ft_stackref_is_tagged_int(r);
}

/* ---- the operations ------------------------------------------------------------------------------ */

ft_stackref ft_stackref_debug_from_object_new(ft_object *o, const char *file, int line)
{
    bool owns = !(ft_object_is_deferred(o) || ft_object_is_immortal(o));
    ft_stackref r = create(o, owns, "from_object_new", file, line);
    if (owns)
        ft_incref(o);
    return r;
}

ft_stackref ft_stackref_debug_from_object_steal(ft_object *o, const char *file, int line)
{
    return create(o, true, "from_object_steal", file, line);
}

ft_stackref ft_stackref_debug_from_object_borrow(ft_object *o, const char *file, int line)
{
    return create(o, false, "from_object_borrow", file, line);
}

ft_stackref ft_stackref_debug_from_object_immortal(ft_object *o, const char *file, int line)
{
    return create(o, false, "from_object_immortal", file, line);
}

/* The caller's runtime's table locked, and the entry of r in it (checked as lookup_locked does);
 * the caller unlocks (*rt)->stackref_debug.mutex. */
static entry *lock_entry(ft_stackref r, const char *op, const char *file, int line, bool closing,
                         ft_runtime **rt)
{
    *rt = runtime_of_caller(op, file, line);
    ft_mutex_lock_internal(&(*rt)->stackref_debug.mutex);
    return lookup_locked(*rt, r.bits, op, file, line, closing);
}

/* The object of an open stackref, recording the borrow site; ints give their bits back as the
 * plain build does, NULL gives NULL. */
static ft_object *borrow(ft_stackref r, const char *op, const char *file, int line, bool *owns)
{
    *owns = false;
    if (!refers(r))
        return (ft_object *)(r.bits & ~FT_STACKREF_TAG_MASK);
    ft_runtime *rt;
    entry *e = lock_entry(r, op, file, line, false, &rt);
    e->borrow_file = file;
    e->borrow_line = line;
    ft_object *o = e->obj;
    *owns = e->owns;
    ft_mutex_unlock(&rt->stackref_debug.mutex);
    return o;
}

/* Close an open stackref; its object and whether it owned a count. */
static ft_object *close_entry(ft_stackref r, const char *op, const char *file, int line,
                              bool *owns)
{
    ft_runtime *rt;
    entry *e = lock_entry(r, op, file, line, true, &rt);
    ft_stackref_debug_runtime *d = &rt->stackref_debug;
    e->open = 0;
    e->close_file = file;
    e->close_line = line;
    list_remove(d, r.bits >> 2);
    ft_object *o = e->obj;
    *owns = e->owns;
    ft_mutex_unlock(&d->mutex);
    return o;
}

ft_object *ft_stackref_debug_as_object_borrow(ft_stackref r, const char *file, int line)
{
    bool owns;
    return borrow(r, "as_object_borrow", file, line, &owns);
}

ft_object *ft_stackref_debug_as_object_steal(ft_stackref r, const char *file, int line)
{
    if (!refers(r))
        return (ft_object *)(r.bits & ~FT_STACKREF_TAG_MASK);
    bool owns;
    ft_object *o = close_entry(r, "as_object_steal", file, line, &owns);
    if (!owns)
        ft_incref(o);
    return o;
}

ft_object *ft_stackref_debug_as_object_new(ft_stackref r, const char *file, int line)
{
    bool owns;
    ft_object *o = borrow(r, "as_object_new", file, line, &owns);
    ft_incref(o);
    return o;
}

const ft_type *ft_stackref_debug_type(ft_stackref r, const char *file, int line)
{
    bool owns;
    return borrow(r, "type", file, line, &owns)->ob_type;
}

ft_stackref ft_stackref_debug_dup(ft_stackref r, const char *file, int line)
{
    if (!refers(r))
        return r;
    ft_runtime *rt;
    entry *e = lock_entry(r, "dup", file, line, false, &rt);
    ft_stackref_debug_runtime *d = &rt->stackref_debug;
    ft_object *o = e->obj;
    bool owns = e->owns;
    ft_stackref copy = create_locked(rt, o, owns, file, line); /* may move e */
    ft_mutex_unlock(&d->mutex);
    if (owns)
        ft_incref(o);
    return copy;
}

ft_stackref ft_stackref_debug_make_heap_safe(ft_stackref r, const char *file, int line)
{
    if (!refers(r))
        return r;
    ft_runtime *rt;
    entry *e = lock_entry(r, "make_heap_safe", file, line, false, &rt);
    ft_stackref_debug_runtime *d = &rt->stackref_debug;
    ft_object *o = e->obj;
    bool count = !e->owns && !ft_object_is_immortal(o) && !ft_object_is_deferred(o);
    e->heap = 1;
    e->borrow_file = file;
    e->borrow_line = line;
    if (count)
        e->owns = 1; /* the same id, now counted: the borrowed word is consumed */
    ft_mutex_unlock(&d->mutex);
    if (count) {
        ft_incref(o);
        return (ft_stackref){r.bits & ~FT_STACKREF_TAG_MASK};
    }
    return r;
}

void ft_stackref_debug_close(ft_stackref r, const char *file, int line)
{
    if (!refers(r))
        return;
    bool owns;
    ft_object *o = close_entry(r, "close", file, line, &owns);
    if (owns)
        ft_decref(o);
}

void ft_stackref_debug_xclose(ft_stackref r, const char *file, int line)
{
    ft_stackref_debug_close(r, file, line);
}

bool ft_stackref_debug_is_deferred(ft_stackref r, const char *file, int line)
{
    if (!ft_stackref_is_tagged(r) || ft_stackref_is_null(r))
        return false;
    bool owns;
    return ft_object_is_deferred(borrow(r, "is_deferred", file, line, &owns));
}

bool ft_stackref_debug_is_heap_safe(ft_stackref r, const char *file, int line)
{
    if (!ft_stackref_is_tagged(r) || ft_stackref_is_null(r))
        return true;
    bool owns;
    ft_object *o = borrow(r, "is_heap_safe", file, line, &owns);
    return ft_object_is_immortal(o) || ft_object_is_deferred(o);
}

/* ---- the runtime's side -------------------------------------------------------------------------- */

void ft_stackref_debug_thread_stop(ft_thread *t)
{
    ft_stackref_debug_runtime *d = &t->rt->stackref_debug;
    ft_mutex_lock_internal(&d->mutex);
    for (uint32_t id = d->open_head; id; id = d->entries[id].next) {
        entry *e = &d->entries[id];
        if (e->creator != t)
            continue;
        if (e->owns && !e->heap) {
            entry copy = *e;
            ft_mutex_unlock(&d->mutex);
            report("still open, owning a count, when its creating thread stops", "thread_stop",
                   bits_of(id, true), &copy, "ft_thread_stop", 0);
        }
        e->creator = NULL;
    }
    ft_mutex_unlock(&d->mutex);
}

ft_object *ft_stackref_debug_object_stopped(ft_runtime *rt, uintptr_t bits)
{
    ft_stackref_debug_runtime *d = &rt->stackref_debug;
    size_t id = bits >> 2;
    if (FT_UNLIKELY(id == 0 || id >= d->n))
        ft_fatal("the collector found an unknown stackref %#lx (id %lu) on a stack or in a "
                 "traverse (ft_gc_visit_stackref)",
                 (unsigned long)bits, (unsigned long)id);
    entry *e = &d->entries[id];
    if (FT_UNLIKELY(!e->open))
        report("the collector found a closed stackref on a stack or in a traverse", "gc_scan", bits,
               e, "collector", 0);
    return e->obj;
}

void ft_stackref_debug_runtime_destroy(ft_runtime *rt)
{
    free(rt->stackref_debug.entries);
    rt->stackref_debug = (ft_stackref_debug_runtime){0};
}

#else /* !FTRT_STACKREF_DEBUG: the same symbols, each a fatal error */

static FT_NORETURN void not_built(const char *op, const char *file, int line)
{
    ft_fatal("ft_stackref_debug_%s at %s:%d: this library was built without FTRT_STACKREF_DEBUG "
             "while the caller was compiled with it",
             op, file ? file : "?", line);
}

#define NOT_BUILT(ret, name, param)                                                               \
    ret ft_stackref_debug_##name(param, const char *file, int line)                               \
    {                                                                                             \
        (void)x;                                                                                  \
        not_built(#name, file, line);                                                             \
    }
NOT_BUILT(ft_stackref, from_object_new, ft_object *x)
NOT_BUILT(ft_stackref, from_object_steal, ft_object *x)
NOT_BUILT(ft_stackref, from_object_borrow, ft_object *x)
NOT_BUILT(ft_stackref, from_object_immortal, ft_object *x)
NOT_BUILT(ft_object *, as_object_borrow, ft_stackref x)
NOT_BUILT(ft_object *, as_object_steal, ft_stackref x)
NOT_BUILT(ft_object *, as_object_new, ft_stackref x)
NOT_BUILT(const ft_type *, type, ft_stackref x)
NOT_BUILT(ft_stackref, dup, ft_stackref x)
NOT_BUILT(void, close, ft_stackref x)
NOT_BUILT(void, xclose, ft_stackref x)
NOT_BUILT(bool, is_deferred, ft_stackref x)
NOT_BUILT(bool, is_heap_safe, ft_stackref x)
NOT_BUILT(ft_stackref, make_heap_safe, ft_stackref x)

void ft_stackref_debug_thread_stop(ft_thread *t)
{
    (void)t;
}

ft_object *ft_stackref_debug_object_stopped(ft_runtime *rt, uintptr_t bits)
{
    (void)rt;
    return (ft_object *)(bits & ~FT_STACKREF_TAG_MASK);
}

void ft_stackref_debug_runtime_destroy(ft_runtime *rt)
{
    (void)rt;
}

#endif
