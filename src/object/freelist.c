/* freelist.c: per-thread caches of freed objects, by type.
 *
 * A type with freelist_max > 0 keeps up to that many freed instances per thread, so that allocating
 * one is a pop from a private list. The lists hang off a small open-addressing table keyed by type,
 * owned by the thread (no locks). A cached object keeps its memory's layout: the list link is stored
 * in ob_tid with an atomic store, because a lock-free reader may still load that word through a
 * stale pointer; its count stays zero and FT_GC_ON_FREELIST is set, so such a reader's try-incref
 * fails, heap walks skip it, and debug builds catch any other use. When the thread stops, its lists
 * are emptied into the heap and disabled (frees from then on go straight to the heap); the blocks
 * lose FT_GC_ON_FREELIST on the way, so that the bit means "on a freelist" and nothing else. */
#include <stdlib.h>

#include "internal/internal.h"

#define INITIAL_SLOTS 16

typedef struct freelist {
    const ft_type *type; /* NULL: empty slot */
    ft_object *head;
    uint32_t count;
} freelist;

struct ft_freelists {
    size_t capacity; /* power of two */
    size_t used;
    freelist slots[];
};

static size_t slot_of(const struct ft_freelists *f, const ft_type *type)
{
    size_t mask = f->capacity - 1, i = ((uintptr_t)type >> 4) * 0x9E3779B97F4A7C15ull & mask;
    while (f->slots[i].type && f->slots[i].type != type)
        i = (i + 1) & mask;
    return i;
}

static struct ft_freelists *table_new(ft_runtime *rt, size_t capacity)
{
    struct ft_freelists *f =
        ft_inject_failure(rt) ? NULL : calloc(1, sizeof *f + capacity * sizeof(freelist));
    if (f)
        f->capacity = capacity;
    return f;
}

/* The list for type, created if needed; NULL if the table could not grow. */
static freelist *list_for(ft_thread *t, const ft_type *type)
{
    struct ft_freelists *f = t->freelist.lists;
    if (!f) {
        f = t->freelist.lists = table_new(t->rt, INITIAL_SLOTS);
        if (!f)
            return NULL;
    }
    size_t i = slot_of(f, type);
    if (f->slots[i].type)
        return &f->slots[i];
    if ((f->used + 1) * 2 > f->capacity) {
        struct ft_freelists *g = table_new(t->rt, f->capacity * 2);
        if (!g)
            return NULL;
        for (size_t j = 0; j < f->capacity; j++)
            if (f->slots[j].type)
                g->slots[slot_of(g, f->slots[j].type)] = f->slots[j];
        g->used = f->used;
        free(f);
        f = t->freelist.lists = g;
        i = slot_of(f, type);
    }
    f->slots[i].type = type;
    f->used++;
    return &f->slots[i];
}

ft_object *ft_freelist_pop(ft_thread *t, const ft_type *type)
{
    struct ft_freelists *f = t->freelist.lists;
    if (!f)
        return NULL;
    freelist *l = &f->slots[slot_of(f, type)];
    ft_object *o = l->head;
    if (!o)
        return NULL;
    l->head = (ft_object *)atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
    l->count--;
    return o;
}

bool ft_freelist_push(ft_thread *t, ft_object *o)
{
    const ft_type *type = o->ob_type;
    if (t->freelist.disabled || type->basic_size > FT_SMALL_MAX ||
        t->rt != ft_object_runtime(o) ||
        ft_usable_size(o) != ft_class_size(ft_size_class(type->basic_size)))
        return false;
    freelist *l = list_for(t, type);
    if (!l || l->count >= type->freelist_max)
        return false;
    atomic_store_explicit(&o->ob_tid, (uintptr_t)l->head, memory_order_relaxed);
    /* The freeing thread holds o exclusively (ob_gc_bits' rule), and a freed block's other bits
     * mean nothing: one store. */
    atomic_store_explicit(&o->ob_gc_bits, FT_GC_ON_FREELIST, memory_order_relaxed);
    l->head = o;
    l->count++;
    return true;
}

void ft_freelist_thread_stop(ft_thread *t)
{
    t->freelist.disabled = true;
    struct ft_freelists *f = t->freelist.lists;
    if (!f)
        return;
    for (size_t i = 0; i < f->capacity; i++) {
        for (ft_object *o = f->slots[i].head, *next; o; o = next) {
            next = (ft_object *)atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
            atomic_store_explicit(&o->ob_gc_bits, FT_HEAP_FREED_BITS, memory_order_relaxed);
            ft_heap_free_block(t, o);
        }
    }
    free(f);
    t->freelist.lists = NULL;
}
