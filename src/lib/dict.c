/* dict.c: a concurrent dictionary with lock-free lookups (see include/ftrt/dict.h).
 *
 * Layout: an open-addressing table with linear probing; entries {hash, key, value}. An entry's key,
 * once set, never changes while the table is current; a removed entry keeps its key (a "dead" entry,
 * value NULL) so probes run past it, until the next resize drops it. Tables are sized so that live
 * plus dead entries stay under 2/3 of the slots.
 *
 * The rule that makes lookups safe without a lock or a reference: nothing a reader can load from a
 * dictionary is released before every reader that may have loaded it has passed a quiescent point
 * (QSBR, docs/reclamation.md):
 *  - tables: a resize publishes the new table and frees the old one with ft_free_delayed;
 *  - keys: a key leaves only when a resize leaves its dead entry behind: the old table's removed
 *    keys are dropped with ft_decref_delayed;
 *  - values: a write that replaces or deletes a value unlinks it, then drops the dictionary's
 *    reference with ft_decref_delayed. So a value loaded from any slot of any table still has that
 *    reference (pending, at worst) until the reader's next quiescent point: its count is at least 1
 *    and its memory is still that object.
 *
 * Readers (no lock): load the table (acquire), probe, and return the value of the matching entry
 * (acquire, pairing with the writer's release, so the value's contents are visible). The borrowed
 * lookup stops there: it writes nothing shared, so lookups from many threads do not contend.
 * ft_dict_get adds a plain incref, which is safe because of the rule above: no try-incref, no retry.
 *
 * Writers (the dictionary's critical section) publish a new entry's hash and key before its value.
 * They drop what they unlinked (a replaced or deleted value; after a resize, the old table and its
 * removed keys) only after leaving the critical section: a drop may run a dealloc, and the delayed
 * queue stops the world to drop at once when it cannot grow. No writer touches a replaced table,
 * so the writer that replaced it reads it then without the lock.
 *
 * Resize: build the new table, publish it, and (after the critical section) free the old one with
 * QSBR. The old table is left as it was: a reader still probing it finds the entries as they were
 * when the new table was published, which was during its lookup (it loaded the old table before),
 * so its answer is one the dictionary held at a moment of the lookup; values it finds there are
 * alive by the rule above, even if they have since been replaced in the new table.
 *
 * Freeing the dictionary: no lookup can be running in it (a caller must keep the dictionary alive,
 * by a reference or by QSBR, for the whole call), so the table and the keys go at once. Values are
 * dropped with ft_decref_delayed, so that a value a caller borrowed stays valid until its next
 * quiescent point even if the caller dropped the last reference to the dictionary meanwhile. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ftrt/dict.h"
#include "internal/internal.h"

#define MIN_SLOTS 8

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

_Static_assert(offsetof(struct ft_dict, ob) == 0, "ft_dict_as_object: the header comes first");

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

static ft_object *lookup(ft_dict *d, ft_object *key)
{
    uint64_t hash = d->ops->hash(key);
    dict_table *tb = atomic_load_explicit(&d->table, memory_order_acquire);
    for (size_t i = hash & tb->mask;; i = (i + 1) & tb->mask) {
        dict_entry *e = &tb->entries[i];
        ft_object *k = atomic_load_explicit(&e->key, memory_order_acquire);
        if (!k)
            return NULL;
        if (atomic_load_explicit(&e->hash, memory_order_relaxed) == hash && keys_equal(d, k, key))
            return atomic_load_explicit(&e->value, memory_order_acquire); /* NULL: removed */
    }
}

ft_object *ft_dict_get_borrowed(ft_thread *t, ft_dict *d, ft_object *key)
{
    (void)t; /* the caller's attached state: the result lives until its next quiescent point */
    return lookup(d, key);
}

ft_object *ft_dict_get(ft_thread *t, ft_dict *d, ft_object *key)
{
    (void)t;
    ft_object *v = lookup(d, key);
    ft_xincref(v); /* alive: the dictionary's reference is dropped only after our quiescent point */
    return v;
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

/* Rebuild into a table sized for the live entries, leaving the removed ones behind, and publish it.
 * Returns the old table, for release_table once the caller has left the critical section; NULL
 * when there is no memory (nothing changed). */
static dict_table *resize(ft_thread *t, ft_dict *d, size_t need)
{
    dict_table *old = atomic_load_explicit(&d->table, memory_order_relaxed);
    size_t slots = MIN_SLOTS;
    while (slots * 2 < need * 3)
        slots *= 2;
    dict_table *tb = table_new(t, slots);
    if (!tb)
        return NULL;
    for (size_t i = 0; i <= old->mask; i++) {
        dict_entry *e = &old->entries[i];
        ft_object *k = atomic_load_explicit(&e->key, memory_order_relaxed);
        ft_object *v = atomic_load_explicit(&e->value, memory_order_relaxed);
        if (!k || !v)
            continue; /* empty, or removed: its key stays behind in the old table */
        uint64_t h = atomic_load_explicit(&e->hash, memory_order_relaxed);
        dict_entry *n = find_slot(d, tb, k, h);
        atomic_store_explicit(&n->hash, h, memory_order_relaxed);
        atomic_store_explicit(&n->key, k, memory_order_relaxed);
        atomic_store_explicit(&n->value, v, memory_order_relaxed);
        tb->filled++;
    }
    atomic_store_explicit(&d->table, tb, memory_order_release);
    return old;
}

/* Release a table that a resize replaced, outside the critical section: drop the references to the
 * keys of its removed entries, which the new table left behind, and free it, both after a grace
 * period, since lookups that loaded the old table may still read it and compare those keys. No
 * writer touches a table once it is replaced, so reading it without the lock is safe. */
static void release_table(ft_thread *t, dict_table *old)
{
    if (!old)
        return;
    for (size_t i = 0; i <= old->mask; i++) {
        ft_object *k = atomic_load_explicit(&old->entries[i].key, memory_order_relaxed);
        if (k && !atomic_load_explicit(&old->entries[i].value, memory_order_relaxed))
            ft_decref_delayed(t, k);
    }
    ft_free_delayed(t, old, table_bytes(old->mask + 1));
}

/* Drop the dictionary's reference to a value a write unlinked, outside the critical section. */
static void release_value(ft_thread *t, ft_object *old, ft_object *stored)
{
    if (!old)
        return;
    if (old == stored)
        ft_decref(old); /* the same value again: it is still in its slot, no reader can lose it */
    else
        ft_decref_delayed(t, old); /* readers may hold it borrowed until their quiescent point */
}

ft_status ft_dict_set(ft_thread *t, ft_dict *d, ft_object *key, ft_object *value)
{
    uint64_t hash = d->ops->hash(key);
    ft_status s = FT_OK;
    ft_object *old = NULL;
    dict_table *replaced = NULL;
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &d->ob.ob_mutex);
    dict_table *tb = atomic_load_explicit(&d->table, memory_order_relaxed);
    dict_entry *e = find_slot(d, tb, key, hash);
    if (!atomic_load_explicit(&e->key, memory_order_relaxed) &&
        (tb->filled + 1) * 3 > (tb->mask + 1) * 2) {
        replaced = resize(t, d, atomic_load_explicit(&d->used, memory_order_relaxed) + 1);
        if (!replaced) {
            s = FT_ENOMEM;
            goto out;
        }
        tb = atomic_load_explicit(&d->table, memory_order_relaxed);
        e = find_slot(d, tb, key, hash);
    }
    ft_incref(value);
    if (!atomic_load_explicit(&e->key, memory_order_relaxed)) {
        ft_incref(key);
        atomic_store_explicit(&e->hash, hash, memory_order_relaxed);
        atomic_store_explicit(&e->key, key, memory_order_release);
        atomic_store_explicit(&e->value, value, memory_order_release);
        tb->filled++;
        atomic_store_explicit(&d->used, atomic_load_explicit(&d->used, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    } else {
        old = atomic_exchange_explicit(&e->value, value, memory_order_acq_rel);
        if (!old)
            atomic_store_explicit(&d->used,
                                  atomic_load_explicit(&d->used, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
    }
out:
    ft_critical_section_end(t, &cs);
    release_table(t, replaced);
    release_value(t, old, value);
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
    release_value(t, old, NULL);
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
    ft_thread *t = ft_current_thread;
    dict_table *tb = atomic_load_explicit(&d->table, memory_order_relaxed);
    if (!tb)
        return;
    /* No lookup runs in a dictionary being freed, but a value looked up before may still be
     * borrowed by its caller (see the top of the file). */
    for (size_t i = 0; i <= tb->mask; i++) {
        ft_xdecref(atomic_load_explicit(&tb->entries[i].key, memory_order_relaxed));
        ft_decref_delayed(t, atomic_load_explicit(&tb->entries[i].value, memory_order_relaxed));
    }
    ft_free(t, tb);
}
