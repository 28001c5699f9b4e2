/* object/freelist.h: the state of per-thread freelists (freelist.c): freed objects kept by type for
 * the next allocation of the same type on the same thread. */
#ifndef FTRT_OBJECT_FREELIST_H
#define FTRT_OBJECT_FREELIST_H

#include <stdbool.h>

#include "ftrt/object.h"

struct ft_freelists;

/* One thread's part (ft_thread.freelist). Owner only. */
typedef struct ft_freelist_thread {
    struct ft_freelists *lists; /* NULL until first used, or when disabled */
    bool disabled;              /* set when the thread stops: its last frees go to the heap */
} ft_freelist_thread;

ft_object *ft_freelist_pop(ft_thread *t, const ft_type *type);
bool ft_freelist_push(ft_thread *t, ft_object *o);
void ft_freelist_thread_stop(ft_thread *t);

#endif
