/* dict.c: a concurrent dictionary with lock-free lookups (see include/ftrt/dict.h).
 *
 * Layout: an open-addressing table with linear probing; entries {hash, key, value}. An entry's key,
 * once set, never changes while the table is current; a removed entry keeps its key (a "dead" entry,
 * value NULL) so probes run past it, until the next resize drops it. Tables are sized so that live
 * plus dead entries stay under 2/3 of the slots.
 *
 * Readers (no lock): load the table (acquire), probe; for a matching key load the value (acquire),
 * try-incref it, and check the slot still holds it (try-incref-compare). On a change, or on MOVED,
 * start over from the current table. Writers mark every value they store as safe to try-incref
 * (MAYBE_WEAKREF, even if they own it), so try-incref refuses only a value whose count is already
 * zero, i.e. one being replaced right now; then the reader looks the key up again under the lock.
 *
 * Writers (the dictionary's critical section) publish a new entry's hash and key before its value, and
 * store a replaced value before dropping the old one, so a reader that still sees the old value in
 * the slot either got its reference before the drop, or fails the compare.
 *
 * Resize: build the new table, publish it, then mark every value slot of the old table MOVED, and free
 * the old table with QSBR (readers may still be probing it). Marking matters: after the resize, a
 * writer replaces values in the new table only, so without it a reader on the old table could find a
 * value freed and its block reused by another object, and its compare against the old, unchanged slot
 * would pass. Header initialisation publishes ob_ref_shared with release and try-incref's CAS reads
 * it with acquire, so a reader whose try-incref lands on a reused block also sees the MOVED mark. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

#define MIN_SLOTS 8
#define MOVED ((ft_object *)1)

typedef struct dict_entry {
    _Atomic(uint64_t) hash;
    ft_object *_Atomic key;
    ft_object *_Atomic value;
} dict_entry;

typedef struct dict_table {
    size_t mask;   /* slots - 1 */
    size_t filled; /* live + dead entries; writers only */
    dict_entry entries[];
} dict_table;

struct ft_dict {
    ft_object ob;
    const ft_dict_ops *ops;       /* immutable */
    dict_table *_Atomic table;    /* replaced under the critical section; read without a lock */
    _Atomic(size_t) used;         /* live entries; written under the critical section */
};

static int dict_traverse(ft_object *self, ft_visit_fn visit, void *arg);
static void dict_dealloc(ft_object *self);

static const ft_type dict_type = {
    .name = "ft_dict",
    .basic_size = sizeof(ft_dict),
    .flags = FT_TYPE_GC,
    .traverse = dict_traverse,
    .dealloc = dict_dealloc,
};

static size_t table_bytes(size_t slots)
{
    return sizeof(dict_table) + slots * sizeof(dict_entry);
}

static dict_table *table_new(ft_thread *t, size_t slots)
{
    dict_table *tb = ft_malloc(t, table_bytes(slots));
    if (!tb)
        return NULL;
    memset(tb, 0, table_bytes(slots));
    tb->mask = slots - 1;
    return tb;
}

ft_dict *ft_dict_new(ft_thread *t, const ft_dict_ops *ops)
{
    if (!ops || !ops->hash || !ops->equal) {
        ft_set_last_error(FT_EINVAL);
        return NULL;
    }
    ft_dict *d = (ft_dict *)ft_alloc(t, &dict_type);
    if (!d)
        return NULL;
    dict_table *tb = table_new(t, MIN_SLOTS);
    if (!tb) {
        ft_decref(&d->ob); /* no table: dealloc has nothing to release */
        return NULL;
    }
    d->ops = ops;
    atomic_store_explicit(&d->table, tb, memory_order_release);
    return d;
}

static bool keys_equal(ft_dict *d, ft_object *a, ft_object *b)
{
    return a == b || d->ops->equal(a, b);
}

/* ---- lookups --------------------------------------------------------------------------------- */

static dict_entry *find_slot(ft_dict *d, dict_table *tb, ft_object *key, uint64_t hash);

/* The slow path: look key up under the dictionary's critical section. */
static ft_object *get_locked(ft_thread *t, ft_dict *d, ft_object *key, uint64_t hash)
{
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &d->ob.ob_mutex);
    dict_table *tb = atomic_load_explicit(&d->table, memory_order_relaxed);
    dict_entry *e = find_slot(d, tb, key, hash);
    ft_object *v = atomic_load_explicit(&e->key, memory_order_relaxed)
                       ? atomic_load_explicit(&e->value, memory_order_relaxed)
                       : NULL;
    ft_xincref(v);
    ft_critical_section_end(t, &cs);
    return v;
}

ft_object *ft_dict_get(ft_thread *t, ft_dict *d, ft_object *key)
{
    uint64_t hash = d->ops->hash(key);
    for (;;) {
        dict_table *tb = atomic_load_explicit(&d->table, memory_order_acquire);
        bool retry = false;
        for (size_t i = hash & tb->mask;; i = (i + 1) & tb->mask) {
            dict_entry *e = &tb->entries[i];
            ft_object *k = atomic_load_explicit(&e->key, memory_order_acquire);
            if (!k)
                return NULL;
            if (atomic_load_explicit(&e->hash, memory_order_relaxed) != hash ||
                !keys_equal(d, k, key))
                continue;
            ft_object *v = atomic_load_explicit(&e->value, memory_order_acquire);
            if (!v)
                return NULL; /* removed */
            if (v != MOVED) {
                if (!ft_try_incref(v))
                    return get_locked(t, d, key, hash);
                if (atomic_load_explicit(&e->value, memory_order_acquire) == v)
                    return v;
                ft_decref(v);
            }
            retry = true;
            break;
        }
        if (!retry)
            return NULL;
    }
}

size_t ft_dict_size(ft_dict *d)
{
    return atomic_load_explicit(&d->used, memory_order_relaxed);
}

/* ---- writes (critical section held) ---------------------------------------------------------- */

/* The entry for key, or the empty slot where it would go. */
static dict_entry *find_slot(ft_dict *d, dict_table *tb, ft_object *key, uint64_t hash)
{
    for (size_t i = hash & tb->mask;; i = (i + 1) & tb->mask) {
        dict_entry *e = &tb->entries[i];
        ft_object *k = atomic_load_explicit(&e->key, memory_order_relaxed);
        if (!k || (atomic_load_explicit(&e->hash, memory_order_relaxed) == hash &&
                   keys_equal(d, k, key)))
            return e;
    }
}

/* Rebuild into a table sized for the live entries (dropping dead ones); false on no memory. */
static bool resize(ft_thread *t, ft_dict *d, size_t need)
{
    dict_table *old = atomic_load_explicit(&d->table, memory_order_relaxed);
    size_t slots = MIN_SLOTS;
    while (slots * 2 < need * 3)
        slots *= 2;
    dict_table *tb = table_new(t, slots);
    if (!tb)
        return false;
    for (size_t i = 0; i <= old->mask; i++) {
        dict_entry *e = &old->entries[i];
        ft_object *k = atomic_load_explicit(&e->key, memory_order_relaxed);
        ft_object *v = atomic_load_explicit(&e->value, memory_order_relaxed);
        if (!k)
            continue;
        if (!v) {
            ft_decref_delayed(t, k); /* dead: lookups on the old table may still compare it */
            continue;
        }
        uint64_t h = atomic_load_explicit(&e->hash, memory_order_relaxed);
        dict_entry *n = find_slot(d, tb, k, h);
        atomic_store_explicit(&n->hash, h, memory_order_relaxed);
        atomic_store_explicit(&n->key, k, memory_order_relaxed);
        atomic_store_explicit(&n->value, v, memory_order_relaxed);
        tb->filled++;
    }
    atomic_store_explicit(&d->table, tb, memory_order_release);
    for (size_t i = 0; i <= old->mask; i++)
        if (atomic_load_explicit(&old->entries[i].value, memory_order_relaxed))
            atomic_store_explicit(&old->entries[i].value, MOVED, memory_order_release);
    ft_free_delayed(t, old, table_bytes(old->mask + 1));
    return true;
}

ft_status ft_dict_set(ft_thread *t, ft_dict *d, ft_object *key, ft_object *value)
{
    uint64_t hash = d->ops->hash(key);
    ft_status s = FT_OK;
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &d->ob.ob_mutex);
    dict_table *tb = atomic_load_explicit(&d->table, memory_order_relaxed);
    dict_entry *e = find_slot(d, tb, key, hash);
    if (!atomic_load_explicit(&e->key, memory_order_relaxed) &&
        (tb->filled + 1) * 3 > (tb->mask + 1) * 2) {
        if (!resize(t, d, atomic_load_explicit(&d->used, memory_order_relaxed) + 1)) {
            s = FT_ENOMEM;
            goto out;
        }
        tb = atomic_load_explicit(&d->table, memory_order_relaxed);
        e = find_slot(d, tb, key, hash);
    }
    ft_incref(value);
    ft_object_enable_try_incref(value);
    ft_object *stored = value;
    if (!atomic_load_explicit(&e->key, memory_order_relaxed)) {
        ft_incref(key);
        atomic_store_explicit(&e->hash, hash, memory_order_relaxed);
        atomic_store_explicit(&e->key, key, memory_order_release);
        atomic_store_explicit(&e->value, stored, memory_order_release);
        tb->filled++;
        atomic_store_explicit(&d->used, atomic_load_explicit(&d->used, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    } else {
        ft_object *old = atomic_exchange_explicit(&e->value, stored, memory_order_acq_rel);
        if (old)
            ft_decref(old);
        else
            atomic_store_explicit(&d->used,
                                  atomic_load_explicit(&d->used, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
    }
out:
    ft_critical_section_end(t, &cs);
    if (s != FT_OK)
        ft_set_last_error(s);
    return s;
}

bool ft_dict_del(ft_thread *t, ft_dict *d, ft_object *key)
{
    uint64_t hash = d->ops->hash(key);
    ft_object *old = NULL;
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &d->ob.ob_mutex);
    dict_table *tb = atomic_load_explicit(&d->table, memory_order_relaxed);
    dict_entry *e = find_slot(d, tb, key, hash);
    if (atomic_load_explicit(&e->key, memory_order_relaxed)) {
        old = atomic_exchange_explicit(&e->value, NULL, memory_order_acq_rel);
        if (old)
            atomic_store_explicit(&d->used,
                                  atomic_load_explicit(&d->used, memory_order_relaxed) - 1,
                                  memory_order_relaxed);
    }
    ft_critical_section_end(t, &cs);
    if (old)
        ft_decref(old);
    return old != NULL;
}

/* ---- the dictionary object ------------------------------------------------------------------- */

static int dict_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    dict_table *tb = atomic_load_explicit(&((ft_dict *)self)->table, memory_order_relaxed);
    for (size_t i = 0; tb && i <= tb->mask; i++) {
        ft_object *k = atomic_load_explicit(&tb->entries[i].key, memory_order_relaxed);
        ft_object *v = atomic_load_explicit(&tb->entries[i].value, memory_order_relaxed);
        int r;
        if (k && (r = visit(k, arg)) != 0)
            return r;
        if (v && (r = visit(v, arg)) != 0)
            return r;
    }
    return 0;
}

static void dict_dealloc(ft_object *self)
{
    ft_dict *d = (ft_dict *)self;
    dict_table *tb = atomic_load_explicit(&d->table, memory_order_relaxed);
    if (!tb)
        return;
    for (size_t i = 0; i <= tb->mask; i++) {
        ft_xdecref(atomic_load_explicit(&tb->entries[i].key, memory_order_relaxed));
        ft_xdecref(atomic_load_explicit(&tb->entries[i].value, memory_order_relaxed));
    }
    ft_free(ft_current_thread, tb);
}
