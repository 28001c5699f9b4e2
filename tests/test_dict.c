/* tests/test_dict.c: the concurrent dictionary (lock-free lookups, locked writes, QSBR resizes).
 *
 * Single-threaded: the semantics of get (absent is NULL; a hit is a new reference), of the borrowed
 * lookup (the same value, no reference), set (insert, replace, revive after a delete; references
 * taken, and a replaced or deleted value's dropped only after a grace period), del and size, equality
 * for distinct but equal keys and for colliding hashes, growth through several resizes, and a set
 * whose table cannot grow (FT_ENOMEM, nothing changed).
 *
 * Borrowed values: a reader borrows three values and holds still; the writer replaces one, deletes
 * another and drops the dictionary, and processes its delayed queue again and again: none may be
 * freed, and the reader still reads them intact, until the reader passes a safepoint; then each is
 * freed. Values keep part of their contents in a malloc'd box their dealloc frees, so under ASan
 * any read of a value freed too early is reported.
 *
 * Concurrent: two writers own disjoint key ranges and keep a private model of their range; two
 * readers look up random keys without locks, borrowed or with a new reference at random. Resizes
 * happen throughout (thousands of keys), with deletes and hot keys replaced over and over. Every
 * value encodes its key and a per-key version, and the writer publishes the highest version it
 * created before storing it, so a reader can tell a value that was never stored for a key (wrong
 * key, version from the future, or a dead object) and a lookup that goes back in time. Writers check
 * their own keys against the model as they go, and at the end every key must map to the model's
 * value and ft_dict_size must match. Every key and value object carries a serial number; after the
 * dictionary is dropped, all threads have stopped and a final quiesce has run the delayed decrefs,
 * each must have been deallocated exactly once. A second test replaces two hot keys back and forth
 * under readers, so that replaced values are freed as soon as both readers have passed a safepoint
 * and their blocks are taken by the next values (of either key): a lookup must never return one of
 * those. Under TSan this also checks the publication order of entries and tables, and that no value
 * is freed while a reader still reads it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "ftrt.h"
#include "harness.h"

/* ---- waiting ------------------------------------------------------------------------------------- */

#define WAIT_LIMIT_NS (30 * INT64_C(1000000000)) /* far beyond any correct wait, even under TSan */
#include "test_util.h"

/* ---- objects ------------------------------------------------------------------------------------- */

#define LIVE_MAGIC 0x1157u
#define DEAD_MAGIC 0xDEADu
#define MAX_SERIALS (1u << 19)

typedef struct key_obj {
    ft_object ob;
    int64_t k;
    uint32_t magic;
    uint32_t serial;
} key_obj;

/* A value also keeps {k, version} in a malloc'd box that its dealloc frees: under ASan, a reader that
 * reads the box of a value freed too early reads poisoned memory and the run fails. */
typedef struct val_obj {
    ft_object ob;
    int64_t k;
    int64_t version;
    uint32_t magic;
    uint32_t serial;
    int64_t *box;
} val_obj;

static _Atomic uint32_t next_serial;
static _Atomic uint8_t deallocs_by_serial[MAX_SERIALS];
static _Atomic int bad_deallocs;
static _Atomic int64_t equal_calls;
static _Atomic int equal_on_dead;

static void key_dealloc(ft_object *self)
{
    key_obj *k = (key_obj *)self;
    if (k->magic != LIVE_MAGIC || k->serial >= MAX_SERIALS) {
        atomic_fetch_add(&bad_deallocs, 1);
        return;
    }
    k->magic = DEAD_MAGIC;
    atomic_fetch_add(&deallocs_by_serial[k->serial], 1);
}

static void val_dealloc(ft_object *self)
{
    val_obj *v = (val_obj *)self;
    if (v->magic != LIVE_MAGIC || v->serial >= MAX_SERIALS) {
        atomic_fetch_add(&bad_deallocs, 1);
        return;
    }
    v->magic = DEAD_MAGIC;
    free(v->box);
    v->box = NULL;
    atomic_fetch_add(&deallocs_by_serial[v->serial], 1);
}

static const ft_type key_type = {.name = "key", .basic_size = sizeof(key_obj), .dealloc = key_dealloc};
static const ft_type val_type = {.name = "val", .basic_size = sizeof(val_obj), .dealloc = val_dealloc};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7FB5D329728EA185ull;
    x ^= x >> 27;
    x *= 0x81DADEF4BC2DD44Dull;
    return x ^ (x >> 33);
}

/* Keys 2j and 2j+1 share a hash: every lookup also exercises the equality callback. */
static uint64_t key_hash(ft_object *o)
{
    return mix((uint64_t)((key_obj *)o)->k >> 1);
}

static bool key_equal(ft_object *a, ft_object *b)
{
    const key_obj *x = (const key_obj *)a, *y = (const key_obj *)b;
    atomic_fetch_add_explicit(&equal_calls, 1, memory_order_relaxed);
    if (x->magic != LIVE_MAGIC || y->magic != LIVE_MAGIC)
        atomic_fetch_add(&equal_on_dead, 1);
    return x->k == y->k;
}

static const ft_dict_ops key_ops = {key_hash, key_equal};

static uint32_t take_serial(void)
{
    return atomic_fetch_add(&next_serial, 1);
}

static ft_object *new_key_of_type(ft_thread *t, const ft_type *type, int64_t k)
{
    key_obj *o = (key_obj *)ft_alloc(t, type);
    if (!o)
        return NULL;
    o->k = k;
    o->magic = LIVE_MAGIC;
    o->serial = take_serial();
    return &o->ob;
}

static ft_object *new_key(ft_thread *t, int64_t k)
{
    return new_key_of_type(t, &key_type, k);
}

static ft_object *new_val(ft_thread *t, int64_t k, int64_t version)
{
    int64_t *box = malloc(2 * sizeof *box);
    val_obj *o = box ? (val_obj *)ft_alloc(t, &val_type) : NULL;
    if (!o) {
        free(box);
        return NULL;
    }
    box[0] = k;
    box[1] = version;
    o->box = box;
    o->k = k;
    o->version = version;
    o->magic = LIVE_MAGIC;
    o->serial = take_serial();
    return &o->ob;
}

static void reset_counts(void)
{
    uint32_t n = atomic_load(&next_serial);
    for (uint32_t i = 0; i < n && i < MAX_SERIALS; i++)
        atomic_store(&deallocs_by_serial[i], 0);
    atomic_store(&next_serial, 0);
    atomic_store(&bad_deallocs, 0);
    atomic_store(&equal_calls, 0);
    atomic_store(&equal_on_dead, 0);
}

/* Every object made since reset_counts was deallocated exactly once; returns the first serial
 * that was not (or UINT32_MAX). */
static uint32_t first_not_freed_once(void)
{
    uint32_t n = atomic_load(&next_serial);
    for (uint32_t i = 0; i < n; i++)
        if (atomic_load(&deallocs_by_serial[i]) != 1)
            return i;
    return UINT32_MAX;
}

/* Run every delayed item (t is the only thread left): a few rounds, since a dealloc may queue more. */
static void quiesce_all(ft_runtime *rt, ft_thread *t)
{
    for (int round = 0; round < 8; round++) {
        ft_qsbr_advance(rt);
        ft_safepoint(t);
        ft_delayed_process(t);
    }
}

static int64_t val_version(ft_object *v)
{
    return ((val_obj *)v)->version;
}

/* Whether a value a lookup returned is alive and is a value of key k: its magic, and the box its
 * dealloc would have freed (ASan checks that read). */
static bool val_intact(ft_object *v, int64_t k)
{
    const val_obj *vo = (const val_obj *)v;
    return vo->magic == LIVE_MAGIC && vo->k == k && vo->box[0] == k && vo->box[1] == vo->version;
}

/* A lookup by a reader: alternately borrowed (*owned false) and a new reference (*owned true). */
static ft_object *reader_lookup(ft_thread *t, ft_dict *d, ft_object *key, bool borrowed, bool *owned)
{
    *owned = !borrowed;
    return borrowed ? ft_dict_get_borrowed(t, d, key) : ft_dict_get(t, d, key);
}

/* ---- single-threaded semantics ------------------------------------------------------------------- */

TEST(new_rejects_bad_ops)
{
    fixture f = fixture_setup();
    CHECK(ft_dict_new(f.t, NULL) == NULL);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    ft_dict_ops no_hash = {NULL, key_equal};
    CHECK(ft_dict_new(f.t, &no_hash) == NULL);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    ft_dict_ops no_equal = {key_hash, NULL};
    CHECK(ft_dict_new(f.t, &no_equal) == NULL);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    fixture_teardown(f);
}

TEST(get_set_del_semantics)
{
    reset_counts();
    fixture f = fixture_setup();
    ft_dict *d = ft_dict_new(f.t, &key_ops);
    CHECK(d != NULL);
    CHECK_EQ(ft_refcount(ft_dict_as_object(d)), 1);
    CHECK_EQ(ft_dict_size(d), 0);

    ft_object *k1 = new_key(f.t, 10), *k1_twin = new_key(f.t, 10), *k2 = new_key(f.t, 11);
    ft_object *v1 = new_val(f.t, 10, 1), *v2 = new_val(f.t, 10, 2), *v3 = new_val(f.t, 11, 1);
    CHECK(k1 && k1_twin && k2 && v1 && v2 && v3);
    CHECK_EQ(key_hash(k1), key_hash(k2)); /* a collision, on purpose */
    CHECK(ft_dict_get(f.t, d, k1) == NULL);

    CHECK_EQ(ft_dict_set(f.t, d, k1, v1), FT_OK);
    CHECK_EQ(ft_dict_size(d), 1);
    CHECK_EQ(ft_refcount(k1), 2); /* the dictionary took its own references */
    CHECK_EQ(ft_refcount(v1), 2);
    ft_object *got = ft_dict_get(f.t, d, k1);
    CHECK(got == v1);
    CHECK_EQ(ft_refcount(v1), 3); /* a new reference for the caller */
    ft_decref(got);
    got = ft_dict_get(f.t, d, k1_twin); /* equal, not identical */
    CHECK(got == v1);
    ft_decref(got);
    CHECK(ft_dict_get(f.t, d, k2) == NULL); /* same hash, different key */
    CHECK(ft_dict_get_borrowed(f.t, d, k1_twin) == v1);
    CHECK_EQ(ft_refcount(v1), 2); /* borrowed: no reference taken */
    CHECK(ft_dict_get_borrowed(f.t, d, k2) == NULL);

    /* Replace through an equal key: the key is kept; the old value's reference is dropped after a
     * grace period, not at once (a borrowed lookup may still use it). */
    CHECK_EQ(ft_dict_set(f.t, d, k1_twin, v2), FT_OK);
    CHECK_EQ(ft_dict_size(d), 1);
    CHECK_EQ(ft_refcount(v1), 2);
    quiesce_all(f.rt, f.t);
    CHECK_EQ(ft_refcount(v1), 1);
    CHECK_EQ(ft_refcount(v2), 2);
    CHECK_EQ(ft_refcount(k1_twin), 1);
    got = ft_dict_get(f.t, d, k1);
    CHECK(got == v2);
    ft_decref(got);
    /* Setting the same value again changes nothing, not even for a grace period. */
    CHECK_EQ(ft_dict_set(f.t, d, k1, v2), FT_OK);
    CHECK_EQ(ft_refcount(v2), 2);
    CHECK_EQ(ft_dict_size(d), 1);

    CHECK_EQ(ft_dict_set(f.t, d, k2, v3), FT_OK);
    CHECK_EQ(ft_dict_size(d), 2);
    got = ft_dict_get(f.t, d, k2);
    CHECK(got == v3);
    ft_decref(got);

    CHECK(ft_dict_del(f.t, d, k1_twin));
    CHECK_EQ(ft_dict_size(d), 1);
    CHECK_EQ(ft_refcount(v2), 2); /* a grace period first, as for a replacement */
    quiesce_all(f.rt, f.t);
    CHECK_EQ(ft_refcount(v2), 1);
    CHECK(ft_dict_get(f.t, d, k1) == NULL);
    CHECK(ft_dict_get_borrowed(f.t, d, k1) == NULL);
    CHECK(!ft_dict_del(f.t, d, k1));
    CHECK_EQ(ft_dict_size(d), 1);
    got = ft_dict_get(f.t, d, k2); /* its colliding neighbour is still found */
    CHECK(got == v3);
    ft_decref(got);

    /* Revive the deleted key. */
    CHECK_EQ(ft_dict_set(f.t, d, k1, v1), FT_OK);
    CHECK_EQ(ft_dict_size(d), 2);
    got = ft_dict_get(f.t, d, k1_twin);
    CHECK(got == v1);
    ft_decref(got);

    /* Grow through several resizes, with deletes in between. */
    enum { MANY = 300 };
    ft_object *keys[MANY], *vals[MANY];
    for (int i = 0; i < MANY; i++) {
        keys[i] = new_key(f.t, 1000 + i);
        vals[i] = new_val(f.t, 1000 + i, 1);
        CHECK(keys[i] && vals[i]);
        CHECK_EQ(ft_dict_set(f.t, d, keys[i], vals[i]), FT_OK);
        if (i % 5 == 4)
            CHECK(ft_dict_del(f.t, d, keys[i - 2]));
    }
    CHECK_EQ(ft_dict_size(d), 2 + MANY - MANY / 5);
    for (int i = 0; i < MANY; i++) {
        got = ft_dict_get(f.t, d, keys[i]);
        if (i % 5 == 2) {
            CHECK(got == NULL);
        } else {
            CHECK(got == vals[i]);
            ft_decref(got);
        }
        CHECK(ft_dict_get_borrowed(f.t, d, keys[i]) == got);
    }
    got = ft_dict_get(f.t, d, k2);
    CHECK(got == v3);
    ft_decref(got);

    /* Drop the dictionary: every reference it held goes (removed keys and the values after a grace
     * period). */
    ft_decref(ft_dict_as_object(d));
    CHECK_EQ(ft_refcount(k2), 1);
    CHECK_EQ(ft_refcount(v3), 2); /* a value may still be borrowed: dropped after a grace period */
    quiesce_all(f.rt, f.t);
    CHECK_EQ(ft_refcount(k1), 1);
    CHECK_EQ(ft_refcount(k2), 1);
    CHECK_EQ(ft_refcount(v1), 1);
    CHECK_EQ(ft_refcount(v2), 1);
    CHECK_EQ(ft_refcount(v3), 1);
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ(ft_refcount(keys[i]), 1);
        CHECK_EQ(ft_refcount(vals[i]), 1);
        ft_decref(keys[i]);
        ft_decref(vals[i]);
    }
    ft_decref(k1);
    ft_decref(k1_twin);
    ft_decref(k2);
    ft_decref(v1);
    ft_decref(v2);
    ft_decref(v3);
    CHECK_EQ(first_not_freed_once(), UINT32_MAX);
    CHECK_EQ(atomic_load(&bad_deallocs), 0);
    CHECK_EQ(atomic_load(&equal_on_dead), 0);
    CHECK(atomic_load(&equal_calls) > 0);
    fixture_teardown(f);
}

TEST(set_out_of_memory_changes_nothing)
{
    /* Tables past 8 KiB take a page of their own, whose mapping the test hook can fail. */
    reset_counts();
    fixture f = fixture_setup();
    ft_dict *d = ft_dict_new(f.t, &key_ops);
    CHECK(d != NULL);
    enum { N = 400 };
    static ft_object *keys[N], *vals[N];
    int failures = 0;
    for (int i = 0; i < N; i++) {
        keys[i] = new_key(f.t, i);
        vals[i] = new_val(f.t, i, 1);
        CHECK(keys[i] && vals[i]);
        ft_debug_fail_allocation(f.rt, 0);
        ft_status st = ft_dict_set(f.t, d, keys[i], vals[i]);
        ft_debug_fail_allocation(f.rt, -1);
        if (st != FT_OK) {
            failures++;
            CHECK_EQ(st, FT_ENOMEM);
            CHECK_EQ(ft_last_error(), FT_ENOMEM);
            CHECK_EQ(ft_dict_size(d), i);
            CHECK_EQ(ft_refcount(keys[i]), 1);
            CHECK_EQ(ft_refcount(vals[i]), 1);
            CHECK(ft_dict_get(f.t, d, keys[i]) == NULL);
            for (int j = 0; j < i; j++) {
                ft_object *v = ft_dict_get(f.t, d, keys[j]);
                CHECK(v == vals[j]);
                ft_decref(v);
            }
            CHECK_EQ(ft_dict_set(f.t, d, keys[i], vals[i]), FT_OK);
        }
        CHECK_EQ(ft_dict_size(d), i + 1);
    }
    CHECK(failures > 0);
    ft_decref(ft_dict_as_object(d));
    quiesce_all(f.rt, f.t);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(ft_refcount(keys[i]), 1);
        ft_decref(keys[i]);
        ft_decref(vals[i]);
    }
    CHECK_EQ(first_not_freed_once(), UINT32_MAX);
    fixture_teardown(f);
}

/* ---- the dictionary as an object ------------------------------------------------------------ */

/* ft_dict_as_object gives the object API a dictionary without a cast: count it, drop it. */
TEST(a_dictionary_is_counted_through_its_object)
{
    fixture f = fixture_setup();
    ft_dict *d = ft_dict_new(f.t, &key_ops);
    CHECK(d != NULL);
    ft_object *o = ft_dict_as_object(d);
    CHECK((void *)o == (void *)d);
    CHECK_EQ(ft_refcount(o), 1);
    ft_incref(o);
    CHECK_EQ(ft_refcount(o), 2);
    ft_decref(o);
    CHECK_EQ(stats_of(f.rt).live_blocks, 2); /* the dictionary and its table */
    ft_decref(ft_dict_as_object(d));
    CHECK_EQ(stats_of(f.rt).live_blocks, 0);
    fixture_teardown(f);
}

/* ---- references dropped outside the critical section ------------------------------------------ */

/* dict.c drops the references a write unlinks after leaving the dictionary's critical section (a
 * drop may run a dealloc, or stop the world when the delayed queue cannot grow). A resize unlinks
 * the keys of removed entries. The test makes one such drop run at once, by failing the delayed
 * queue's first chunk (the queue then stops the world and drops the reference itself), and the
 * key's dealloc records whether the writer still held the dictionary's critical section. */
static ft_dict *_Atomic watched_dict;
static _Atomic int watched_deallocs, deallocs_in_the_section;

static void watched_key_dealloc(ft_object *self)
{
    ft_dict *d = atomic_load(&watched_dict);
    if (d && ft_critical_section_holds(ft_thread_current(), &ft_dict_as_object(d)->ob_mutex))
        atomic_fetch_add(&deallocs_in_the_section, 1);
    atomic_fetch_add(&watched_deallocs, 1);
    key_dealloc(self);
}

static const ft_type watched_key_type = {
    .name = "watched key", .basic_size = sizeof(key_obj), .dealloc = watched_key_dealloc};

/* Values that are never counted, so that deleting them queues nothing. */
static const ft_type immortal_val_type = {.name = "immortal val", .basic_size = sizeof(ft_object)};
static ft_object immortal_val = FT_STATIC_OBJECT_INIT(&immortal_val_type);

TEST(a_resize_drops_removed_keys_outside_the_critical_section)
{
    reset_counts();
    atomic_store(&watched_deallocs, 0);
    atomic_store(&deallocs_in_the_section, 0);
    fixture f = fixture_setup();
    ft_dict *d = ft_dict_new(f.t, &key_ops);
    CHECK(d != NULL);
    atomic_store(&watched_dict, d);
    /* Five entries fill the first table (8 slots, kept under 2/3): the sixth key resizes it. */
    enum { REMOVED = 5 };
    for (int i = 0; i < REMOVED; i++) {
        ft_object *k = new_key_of_type(f.t, &watched_key_type, i);
        CHECK(k != NULL);
        CHECK_EQ(ft_dict_set(f.t, d, k, &immortal_val), FT_OK);
        CHECK(ft_dict_del(f.t, d, k));
        ft_decref(k); /* the dictionary's removed entry holds the last reference */
    }
    ft_object *last = new_key(f.t, REMOVED);
    CHECK(last != NULL);
    ft_debug_fail_allocation(f.rt, 0);
    CHECK_EQ(ft_dict_set(f.t, d, last, &immortal_val), FT_OK);
    ft_debug_fail_allocation(f.rt, -1);
    CHECK_EQ(atomic_load(&watched_deallocs), 1); /* the first drop ran at once; the rest wait */
    CHECK_EQ(atomic_load(&deallocs_in_the_section), 0);
    atomic_store(&watched_dict, NULL);
    ft_decref(ft_dict_as_object(d));
    quiesce_all(f.rt, f.t);
    CHECK_EQ(atomic_load(&watched_deallocs), REMOVED);
    ft_decref(last);
    CHECK_EQ(first_not_freed_once(), UINT32_MAX);
    CHECK_EQ(atomic_load(&bad_deallocs), 0);
    fixture_teardown(f);
}

/* ---- borrowed values and the reader's quiescent point --------------------------------------------- */

typedef struct borrow {
    ft_dict *d;
    ft_object *key;
    ft_object *value; /* what the borrowed lookup returned */
    bool intact;      /* what reading it later found */
} borrow;

static void cmd_lookup_borrowed(commanded *w)
{
    borrow *b = w->arg;
    b->value = ft_dict_get_borrowed(w->t, b->d, b->key);
}

static void cmd_read_borrowed(commanded *w)
{
    borrow *b = w->arg;
    b->intact = b->value && val_intact(b->value, ((key_obj *)b->key)->k);
}

static uint32_t serial_of(ft_object *v)
{
    return ((val_obj *)v)->serial;
}

/* The writer (t) advances and processes its delayed queue, a few rounds: everything whose goal
 * the other thread (the reader) does not hold back is released. */
static void writer_processes(ft_runtime *rt, ft_thread *t)
{
    for (int round = 0; round < 8; round++) {
        ft_qsbr_advance(rt);
        ft_safepoint(t);
        ft_delayed_process(t);
    }
}

TEST(borrowed_values_live_until_the_readers_safepoint)
{
    /* A reader borrows three values and then holds still, passing no safepoint. The writer replaces
     * the first, deletes the second's key and drops the whole dictionary (the third goes with it),
     * having dropped its own references first, so the dictionary's were the last. However often the
     * writer processes its delayed queue, none may be freed while the reader can still use them;
     * once the reader passes a safepoint, all three are. */
    reset_counts();
    fixture f = fixture_setup();
    ft_dict *d = ft_dict_new(f.t, &key_ops);
    CHECK(d != NULL);
    enum { N = 3 };
    ft_object *keys[N];
    uint32_t serials[N];
    borrow b[N];
    for (int i = 0; i < N; i++) {
        keys[i] = new_key(f.t, i);
        ft_object *v = new_val(f.t, i, 1);
        CHECK(keys[i] && v);
        CHECK_EQ(ft_dict_set(f.t, d, keys[i], v), FT_OK);
        serials[i] = serial_of(v);
        ft_decref(v); /* the dictionary holds the only reference */
        b[i] = (borrow){d, keys[i], NULL, false};
    }
    commanded r;
    commanded_start(f.t, &r, f.rt);
    commanded_do(f.t, &r, cmd_hold, NULL);
    for (int i = 0; i < N; i++) {
        commanded_do(f.t, &r, cmd_lookup_borrowed, &b[i]);
        CHECK(b[i].value != NULL);
        CHECK_EQ(serial_of(b[i].value), serials[i]);
    }

    ft_object *replacement = new_val(f.t, 0, 2);
    CHECK(replacement != NULL);
    CHECK_EQ(ft_dict_set(f.t, d, keys[0], replacement), FT_OK);
    ft_decref(replacement);
    CHECK(ft_dict_del(f.t, d, keys[1]));
    ft_decref(ft_dict_as_object(d));
    writer_processes(f.rt, f.t);
    for (int i = 0; i < N; i++)
        CHECK_EQ(atomic_load(&deallocs_by_serial[serials[i]]), 0);
    for (int i = 0; i < N; i++) {
        commanded_do(f.t, &r, cmd_read_borrowed, &b[i]);
        CHECK(b[i].intact);
    }

    commanded_do(f.t, &r, cmd_safepoint, NULL);
    writer_processes(f.rt, f.t);
    for (int i = 0; i < N; i++)
        CHECK_EQ(atomic_load(&deallocs_by_serial[serials[i]]), 1);

    commanded_finish(f.t, &r);
    for (int i = 0; i < N; i++)
        ft_decref(keys[i]);
    quiesce_all(f.rt, f.t);
    CHECK_EQ(first_not_freed_once(), UINT32_MAX); /* the replacement too, with the dictionary */
    CHECK_EQ(atomic_load(&bad_deallocs), 0);
    fixture_teardown(f);
}

/* ---- concurrent readers and writers -------------------------------------------------------------- */

#define WRITERS 2
#define READERS 2
#define KEYS_PER_WRITER 1500
#define KEYS (WRITERS * KEYS_PER_WRITER)
#define HOT_KEYS 8 /* per writer: replaced over and over */
#define WRITER_OPS (UNDER_TSAN ? 10000 : 100000)

typedef struct stress {
    ft_runtime *rt;
    ft_dict *d;
    _Atomic int64_t max_version[KEYS]; /* highest version created for each key */
    int64_t model[WRITERS][KEYS_PER_WRITER]; /* writer-private: the stored version, 0 = absent */
    _Atomic int writers_done;
    _Atomic int readers_started;
    _Atomic uint64_t reader_hits, reader_misses;
} stress;

typedef struct stress_arg {
    stress *s;
    int id;
} stress_arg;

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static void writer_set(ft_thread *t, stress *s, int w, int64_t k)
{
    int64_t version = atomic_load(&s->max_version[k]) + 1;
    ft_object *key = new_key(t, k); /* a fresh, equal key object every time */
    ft_object *val = new_val(t, k, version);
    CHECK_THREAD(key && val);
    if (!key || !val)
        return;
    atomic_store(&s->max_version[k], version); /* before the value can be seen */
    CHECK_THREAD(ft_dict_set(t, s->d, key, val) == FT_OK);
    s->model[w][k - (int64_t)w * KEYS_PER_WRITER] = version;
    ft_decref(key);
    ft_decref(val);
}

static void writer_check(ft_thread *t, stress *s, int w, int64_t k)
{
    ft_object *key = new_key(t, k);
    CHECK_THREAD(key != NULL);
    if (!key)
        return;
    ft_object *v = ft_dict_get(t, s->d, key);
    int64_t expected = s->model[w][k - (int64_t)w * KEYS_PER_WRITER];
    if (expected == 0) {
        CHECK_THREAD(v == NULL);
    } else {
        CHECK_THREAD(v != NULL && ((val_obj *)v)->k == k && val_version(v) == expected);
    }
    ft_xdecref(v);
    ft_decref(key);
}

static void *writer_main(void *arg)
{
    stress_arg *a = arg;
    stress *s = a->s;
    int w = a->id;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    while (atomic_load(&s->readers_started) < READERS) {
        ft_safepoint(t);
        sched_yield();
    }
    int64_t base = (int64_t)w * KEYS_PER_WRITER;
    /* Fill the range in order: the table resizes several times under the readers. */
    for (int64_t i = 0; i < KEYS_PER_WRITER; i++) {
        writer_set(t, s, w, base + i);
        ft_safepoint(t);
    }
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(w + 1);
    for (int op = 0; op < WRITER_OPS; op++) {
        uint64_t r = next_random(&rng);
        int64_t k = base + (int64_t)((r >> 8) % ((r & 3) == 0 ? HOT_KEYS : KEYS_PER_WRITER));
        unsigned kind = (unsigned)((r >> 40) % 10);
        if (kind < 6) {
            writer_set(t, s, w, k);
        } else if (kind < 8) {
            ft_object *key = new_key(t, k);
            CHECK_THREAD(key != NULL);
            if (key) {
                bool present = s->model[w][k - base] != 0;
                CHECK_THREAD(ft_dict_del(t, s->d, key) == present);
                s->model[w][k - base] = 0;
                ft_decref(key);
            }
        } else {
            writer_check(t, s, w, k);
        }
        ft_safepoint(t);
    }
    atomic_fetch_add(&s->writers_done, 1);
    ft_thread_stop(t);
    return NULL;
}

static void *reader_main(void *arg)
{
    stress_arg *a = arg;
    stress *s = a->s;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    static _Thread_local ft_object *keys[KEYS];
    static _Thread_local int64_t last_seen[KEYS];
    for (int64_t k = 0; k < KEYS; k++) {
        keys[k] = new_key(t, k);
        CHECK_THREAD(keys[k] != NULL);
        last_seen[k] = 0;
    }
    atomic_fetch_add(&s->readers_started, 1);
    uint64_t rng = 0xD1B54A32D192ED03ull * (uint64_t)(a->id + 1);
    uint64_t hits = 0, misses = 0, bad = 0;
    while (atomic_load(&s->writers_done) < WRITERS) {
        for (int i = 0; i < 64; i++) {
            uint64_t r = next_random(&rng);
            int64_t w = (int64_t)(r & 1);
            int64_t k = w * KEYS_PER_WRITER +
                        (int64_t)((r >> 8) % ((r & 6) == 0 ? HOT_KEYS : KEYS_PER_WRITER));
            bool owned;
            ft_object *v = reader_lookup(t, s->d, keys[k], (r >> 60) & 1, &owned);
            if (!v) {
                misses++;
                continue;
            }
            hits++;
            const val_obj *vo = (const val_obj *)v;
            int64_t published = atomic_load(&s->max_version[k]);
            if (!val_intact(v, k) || vo->version < 1 || vo->version > published ||
                vo->version < last_seen[k]) {
                if (bad++ < 5)
                    fprintf(stderr,
                            "reader: key %ld got value (key %ld, version %ld, magic %#x); "
                            "published %ld, last seen %ld\n",
                            (long)k, (long)vo->k, (long)vo->version, vo->magic, (long)published,
                            (long)last_seen[k]);
            }
            last_seen[k] = vo->version;
            if (owned)
                ft_decref(v);
        }
        ft_safepoint(t); /* the borrowed values of this round are not used after it */
    }
    CHECK_THREAD(bad == 0);
    for (int64_t k = 0; k < KEYS; k++)
        ft_xdecref(keys[k]);
    atomic_fetch_add(&s->reader_hits, hits);
    atomic_fetch_add(&s->reader_misses, misses);
    ft_thread_stop(t);
    return NULL;
}

TEST(readers_and_writers_with_resizes)
{
    reset_counts();
    static stress s;
    memset(&s, 0, sizeof s);
    s.rt = new_runtime(NULL);
    ft_thread *m = ft_thread_start(s.rt);
    CHECK(m != NULL);
    s.d = ft_dict_new(m, &key_ops);
    CHECK(s.d != NULL);

    pthread_t threads[WRITERS + READERS];
    stress_arg args[WRITERS + READERS];
    ft_detach(m);
    for (int i = 0; i < WRITERS + READERS; i++) {
        args[i] = (stress_arg){&s, i < WRITERS ? i : i - WRITERS};
        CHECK(pthread_create(&threads[i], NULL, i < WRITERS ? writer_main : reader_main,
                             &args[i]) == 0);
    }
    for (int i = 0; i < WRITERS + READERS; i++)
        pthread_join(threads[i], NULL);
    ft_attach(m);
    CHECK_THREADS_OK();
    CHECK(atomic_load(&s.reader_hits) > 0);

    /* No lost value: every key maps to its writer's model, and the size agrees. */
    size_t present = 0;
    for (int w = 0; w < WRITERS; w++)
        for (int64_t i = 0; i < KEYS_PER_WRITER; i++) {
            int64_t k = (int64_t)w * KEYS_PER_WRITER + i;
            ft_object *key = new_key(m, k);
            CHECK(key != NULL);
            ft_object *v = ft_dict_get(m, s.d, key);
            if (s.model[w][i] == 0) {
                CHECK(v == NULL);
            } else {
                present++;
                CHECK(v != NULL);
                CHECK_EQ(((val_obj *)v)->k, k);
                CHECK_EQ(val_version(v), s.model[w][i]);
                CHECK_EQ(ft_refcount(v), 2); /* the dictionary's and ours */
                ft_decref(v);
            }
            ft_decref(key);
        }
    CHECK_EQ(ft_dict_size(s.d), present);
    CHECK(present > 0);

    /* Drop it; after a final quiesce every key and value was deallocated exactly once. */
    ft_decref(ft_dict_as_object(s.d));
    quiesce_all(s.rt, m);
    ft_qsbr_stats st;
    ft_qsbr_get_stats(s.rt, &st);
    CHECK_EQ(st.pending_items, 0);
    uint32_t first = first_not_freed_once();
    if (first != UINT32_MAX)
        fprintf(stderr, "object serial %u deallocated %d times (of %u objects)\n", first,
                (int)atomic_load(&deallocs_by_serial[first]), atomic_load(&next_serial));
    CHECK_EQ(first, UINT32_MAX);
    CHECK_EQ(atomic_load(&bad_deallocs), 0);
    CHECK_EQ(atomic_load(&equal_on_dead), 0);
    ft_thread_stop(m);
    CHECK_EQ(ft_runtime_free(s.rt), FT_OK);
}

/* ---- two hot keys replaced under readers --------------------------------------------------------- */

#define HOT_REPLACEMENTS (UNDER_TSAN ? 20000 : 300000)
#define HOT_READERS 2

typedef struct hot {
    ft_runtime *rt;
    ft_dict *d;
    _Atomic int64_t max_version[2];
    _Atomic bool done;
    _Atomic int readers_started;
} hot;

static void *hot_reader(void *arg)
{
    hot *h = arg;
    ft_thread *t = ft_thread_start(h->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    ft_object *keys[2] = {new_key(t, 0), new_key(t, 1)};
    CHECK_THREAD(keys[0] && keys[1]);
    int64_t last_seen[2] = {0, 0};
    uint64_t bad = 0;
    atomic_fetch_add(&h->readers_started, 1);
    for (uint64_t i = 0; !atomic_load(&h->done); i++) {
        int k = (int)(i & 1);
        bool owned;
        ft_object *v = reader_lookup(t, h->d, keys[k], (i >> 1) & 1, &owned);
        CHECK_THREAD(v != NULL); /* never deleted */
        if (!v)
            break;
        const val_obj *vo = (const val_obj *)v;
        int64_t published = atomic_load(&h->max_version[k]);
        if (!val_intact(v, k) || vo->version > published || vo->version < last_seen[k]) {
            if (bad++ < 5)
                fprintf(stderr, "hot reader: key %d got (key %ld, version %ld, magic %#x), "
                        "published %ld, last seen %ld\n", k, (long)vo->k, (long)vo->version,
                        vo->magic, (long)published, (long)last_seen[k]);
        }
        last_seen[k] = vo->version;
        if (owned)
            ft_decref(v);
        ft_safepoint(t);
    }
    CHECK_THREAD(bad == 0);
    ft_decref(keys[0]);
    ft_decref(keys[1]);
    ft_thread_stop(t);
    return NULL;
}

TEST(hot_keys_replaced_under_readers)
{
    /* Each replacement retires the old value; it is freed once both readers have passed a safepoint,
     * and the writer's next values take the freed blocks: a reader must never return such a block,
     * whatever it holds by then, as a value of its key. */
    reset_counts();
    static hot h;
    memset(&h, 0, sizeof h);
    h.rt = new_runtime(NULL);
    ft_thread *w = ft_thread_start(h.rt);
    CHECK(w != NULL);
    h.d = ft_dict_new(w, &key_ops);
    CHECK(h.d != NULL);
    ft_object *keys[2] = {new_key(w, 0), new_key(w, 1)};
    CHECK(keys[0] && keys[1]);
    for (int k = 0; k < 2; k++) {
        ft_object *v = new_val(w, k, 1);
        CHECK(v != NULL);
        atomic_store(&h.max_version[k], 1);
        CHECK_EQ(ft_dict_set(w, h.d, keys[k], v), FT_OK);
        ft_decref(v);
    }
    pthread_t readers[HOT_READERS];
    for (int i = 0; i < HOT_READERS; i++)
        CHECK(pthread_create(&readers[i], NULL, hot_reader, &h) == 0);
    AWAIT(w, atomic_load(&h.readers_started) == HOT_READERS);
    for (int64_t i = 0; i < HOT_REPLACEMENTS; i++) {
        int k = (int)(i & 1);
        int64_t version = atomic_load(&h.max_version[k]) + 1;
        ft_object *v = new_val(w, k, version);
        CHECK(v != NULL);
        atomic_store(&h.max_version[k], version);
        CHECK_EQ(ft_dict_set(w, h.d, keys[k], v), FT_OK);
        ft_decref(v);
        ft_safepoint(w);
    }
    atomic_store(&h.done, true);
    join_detached(w, readers, HOT_READERS);
    CHECK_EQ(ft_dict_size(h.d), 2);
    ft_decref(ft_dict_as_object(h.d));
    ft_decref(keys[0]);
    ft_decref(keys[1]);
    quiesce_all(h.rt, w);
    CHECK_EQ(first_not_freed_once(), UINT32_MAX);
    CHECK_EQ(atomic_load(&bad_deallocs), 0);
    ft_thread_stop(w);
    CHECK_EQ(ft_runtime_free(h.rt), FT_OK);
}

int main(void)
{
    RUN(new_rejects_bad_ops);
    RUN(get_set_del_semantics);
    RUN(set_out_of_memory_changes_nothing);
    RUN(a_dictionary_is_counted_through_its_object);
    RUN(a_resize_drops_removed_keys_outside_the_critical_section);
    RUN(borrowed_values_live_until_the_readers_safepoint);
    RUN(readers_and_writers_with_resizes);
    RUN(hot_keys_replaced_under_readers);
    return harness_done();
}
