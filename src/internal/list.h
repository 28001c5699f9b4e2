/* internal/list.h: the intrusive doubly linked list that ftrt's registries share.
 *
 * A list is a head pointer (and, for a queue, a tail pointer) to structs that carry their own `prev`
 * and `next` members: thread states on rt->threads, heap sets on rt->heaps.all, code buffers on
 * rt->tlbc.list, pages on a heap's queues. The macros work on any such struct, so each keeps its
 * member names and layout. Invariants, for every element e of a list with head h and tail t:
 *     e->prev == NULL  <=>  e == h        e->next == NULL  <=>  e == t (queues) or e is last
 *     e->prev->next == e                  e->next->prev == e
 * Whoever may change a list is said beside its head. Arguments are evaluated more than once: pass
 * plain lvalues. */
#ifndef FTRT_INTERNAL_LIST_H
#define FTRT_INTERNAL_LIST_H

#include <stddef.h>

/* Put e first on the list whose head is `head`. */
#define FT_LIST_PUSH(head, e)                                                                      \
    do {                                                                                           \
        (e)->prev = NULL;                                                                          \
        (e)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (e);                                                                    \
        (head) = (e);                                                                              \
    } while (0)

/* Take e off the list whose head is `head`; e's own links are left as they were. */
#define FT_LIST_REMOVE(head, e)                                                                    \
    do {                                                                                           \
        if ((e)->prev)                                                                             \
            (e)->prev->next = (e)->next;                                                           \
        else                                                                                       \
            (head) = (e)->next;                                                                    \
        if ((e)->next)                                                                             \
            (e)->next->prev = (e)->prev;                                                           \
    } while (0)

/* The same for a queue, a struct q with members head and tail; removal clears e's links. */
#define FT_QUEUE_PUSH_FRONT(q, e)                                                                  \
    do {                                                                                           \
        if (!(q)->head)                                                                            \
            (q)->tail = (e);                                                                       \
        FT_LIST_PUSH((q)->head, e);                                                                \
    } while (0)

#define FT_QUEUE_PUSH_BACK(q, e)                                                                   \
    do {                                                                                           \
        (e)->next = NULL;                                                                          \
        (e)->prev = (q)->tail;                                                                     \
        if ((q)->tail)                                                                             \
            (q)->tail->next = (e);                                                                 \
        else                                                                                       \
            (q)->head = (e);                                                                       \
        (q)->tail = (e);                                                                           \
    } while (0)

#define FT_QUEUE_REMOVE(q, e)                                                                      \
    do {                                                                                           \
        if (!(e)->next)                                                                            \
            (q)->tail = (e)->prev;                                                                 \
        FT_LIST_REMOVE((q)->head, e);                                                              \
        (e)->next = (e)->prev = NULL;                                                              \
    } while (0)

#endif
