/* ftrt/dict.h: a concurrent dictionary with lock-free lookups.
 *
 * Keys and values are objects; the host gives hash and equality callbacks for keys. Lookups take no
 * lock: they load the current table, probe it, and take a reference to the value with
 * try-incref-compare (if the slot changed meanwhile they start over). Writes take the dictionary's
 * critical section (its object mutex). A resize publishes a new table and frees the old one with
 * QSBR; keys a write removes are dropped with a delayed decref, so a concurrent lookup may still call
 * the equality callback on them.
 *
 * This is the layer's proof of work: QSBR, delayed decref, try-incref and critical sections together.
 * A lookup may run only on an attached thread, and the pointers it touches stay valid until that
 * thread's next quiescent point. The equality callback must not block or take the dictionary. */
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

/* A new reference to the value for key, or NULL if absent. Takes no lock. */
FT_API ft_object *ft_dict_get(ft_thread *t, ft_dict *d, ft_object *key);

/* Map key to value (both borrowed: the dictionary takes its own references). FT_ENOMEM if the table
 * had to grow and could not (nothing changed). */
FT_API ft_status ft_dict_set(ft_thread *t, ft_dict *d, ft_object *key, ft_object *value);

/* Remove key; returns whether it was there. */
FT_API bool ft_dict_del(ft_thread *t, ft_dict *d, ft_object *key);

/* Entries now (a snapshot). */
FT_API size_t ft_dict_size(ft_dict *d);

#ifdef __cplusplus
}
#endif
#endif
