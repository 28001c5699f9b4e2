/* ftrt/dict.h: a concurrent dictionary with lock-free lookups.
 *
 * Keys and values are objects; the host gives hash and equality callbacks for keys. Lookups take no
 * lock and write nothing shared: they load the current table and probe it. Writes take the
 * dictionary's critical section (its object mutex). Everything a lookup may load is released only
 * after a QSBR grace period: a resize frees the old table with ft_free_delayed, and the dictionary's
 * references to removed keys and to replaced or deleted values are dropped with ft_decref_delayed.
 *
 * So there are two lookups. ft_dict_get_borrowed returns the value without a reference: it stays
 * valid until the calling thread's next quiescent point (ft_safepoint, ft_detach, or any call that
 * may reach one; docs/reclamation.md), like any pointer a QSBR reader loads, and costs no atomic
 * write, so lookups from many threads scale. ft_dict_get returns a new reference (an incref of the
 * value), which the caller may keep for as long as it likes.
 *
 * Unlike CPython, which drops a replaced value's reference at once, a replaced or deleted value
 * keeps the dictionary's reference until a grace period has passed: the writer queues the drop with
 * ft_decref_delayed, whose queue runs it once every attached thread has passed a quiescent point
 * after the write (and after an advance, which the queue makes itself every 128 items). That delay
 * is what makes a borrowed lookup safe; docs/dict.md says when the drop happens and why.
 *
 * This is the layer's proof of work: QSBR, delayed free and decref, and critical sections together.
 * A lookup may run only on an attached thread, which must keep the dictionary alive for the call (a
 * reference, or a QSBR-protected load of it). The hash and equality callbacks must not block, take
 * the dictionary, or reach a quiescent point. */
#ifndef FTRT_DICT_H
#define FTRT_DICT_H

#include "object.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ft_dict_ops {
    uint64_t (*hash)(ft_object *key);
    bool (*equal)(ft_object *a, ft_object *b); /* called only when hashes match and a != b */
} ft_dict_ops;

typedef struct ft_dict ft_dict;

/* A new, empty dictionary (an object with count 1), or NULL with ft_last_error() set. */
FT_API ft_dict *ft_dict_new(ft_thread *t, const ft_dict_ops *ops);

/* The dictionary as an object, for the object API: ft_incref, ft_decref (drop it with
 * ft_decref(ft_dict_as_object(d))), ft_refcount, slots, critical sections. A dictionary begins with
 * its ft_object header, so this is a conversion, checked by the compiler, not a cast by the
 * caller. */
static inline ft_object *ft_dict_as_object(ft_dict *d)
{
    return (ft_object *)(void *)d;
}

/* A new reference to the value for key, or NULL if absent. Takes no lock. t: the caller's attached
 * thread state. */
FT_API ft_object *ft_dict_get(ft_thread *t, ft_dict *d, ft_object *key);

/* The value for key, borrowed, or NULL if absent. Takes no lock and no reference; the value stays
 * valid until t's next quiescent point, even if a writer replaces or deletes it meanwhile, or the
 * dictionary itself is freed. To keep it longer, ft_incref it before that point. */
FT_API ft_object *ft_dict_get_borrowed(ft_thread *t, ft_dict *d, ft_object *key);

/* Map key to value (both borrowed: the dictionary takes its own references). The reference to a
 * value it replaces is dropped after a grace period (see above). FT_ENOMEM if the table had to grow
 * and could not (nothing changed). */
FT_API ft_status ft_dict_set(ft_thread *t, ft_dict *d, ft_object *key, ft_object *value);

/* Remove key; returns whether it was there. The value's reference is dropped after a grace period. */
FT_API bool ft_dict_del(ft_thread *t, ft_dict *d, ft_object *key);

/* Entries now (a snapshot). */
FT_API size_t ft_dict_size(ft_dict *d);

#ifdef __cplusplus
}
#endif
#endif
