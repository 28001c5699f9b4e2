/* object/stackref_debug.h: the runtime's table of stackrefs in debug mode (FTRT_STACKREF_DEBUG,
 * include/ftrt/stackref.h; object/stackref_debug.c has the rules).
 *
 * Entry i (i >= 1) describes the stackref whose bits are (i << 2) | tag. Ids are handed out in order
 * and never reused, so a closed entry keeps answering "closed at file:line". Open entries are also on
 * a doubly linked list (by index) that ft_thread_stop walks. */
#ifndef FTRT_OBJECT_STACKREF_DEBUG_H
#define FTRT_OBJECT_STACKREF_DEBUG_H

#include <stddef.h>
#include <stdint.h>

#include "ftrt/lock.h"
#include "ftrt/object.h"

typedef struct ft_stackref_debug_entry {
    ft_object *obj;
    const char *type_name; /* read at creation: the object may be gone when a misuse is reported */
    ft_thread *creator;    /* the creating thread state, NULL once it stopped (or heap-held) */
    const char *file, *borrow_file, *close_file;
    int line, borrow_line, close_line;
    uint8_t open;      /* 1 until closed or consumed */
    uint8_t owns;      /* it owns a counted reference */
    uint8_t heap;      /* went through ft_stackref_make_heap_safe: may outlive its creator */
    uint32_t prev, next; /* the open list; 0 ends it */
} ft_stackref_debug_entry;

/* In struct ft_runtime. All fields under mutex (level 4 of the lock order), except that the
 * collector reads entries without it while it has stopped the world (stackref operations need an
 * attached thread, so nothing else touches the table then). */
typedef struct ft_stackref_debug_runtime {
    ft_mutex mutex;
    ft_stackref_debug_entry *entries; /* [0, n); entry 0 unused */
    size_t n, cap;
    uint32_t open_head;
    size_t n_open;
} ft_stackref_debug_runtime;

void ft_stackref_debug_runtime_destroy(ft_runtime *rt);
/* ft_thread_stop: fatal if t created stackrefs that own a count and are still open; the rest of its
 * open entries forget their creator. */
void ft_stackref_debug_thread_stop(ft_thread *t);
/* The collector, world stopped by the caller: the object of a stackref that refers to one (tagged
 * or not, not NULL, not an integer), without the lock and without recording a borrow site; NULL
 * for an id that is not open. In builds without FTRT_STACKREF_DEBUG: the address in the bits. */
ft_object *ft_stackref_debug_object_stopped(ft_runtime *rt, uintptr_t bits);

#endif
