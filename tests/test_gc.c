/* tests/test_gc.c: the cycle collector's semantics on one thread (ftrt/gc.h), after CPython's gc
 * module (3.11/3.12 default build; Lib/test/test_gc.py and test_finalization.py).
 *
 * The host type is tests/test_util.h's gc_node, a container whose deallocs are counted by id, so that
 * "collected", "survived" and "freed exactly once" are checked directly; its finalizer variant
 * (gc_fin_type) logs and may run a body the test supplies; a legacy variant here has a legacy_del.
 *
 * Covered: tracking (objects start untracked, untracked cycles leak, tracking twice is fatal);
 * collect's result (unreachable objects still unreachable after finalizers, plus uncollectable ones),
 * its refusals, and cycles of every shape (self, two, hanging off live objects, referring to live
 * objects, with trees of untracked and older objects hanging off them, many at once); generations,
 * thresholds, counts and stats; automatic collection at the safepoint after the threshold is
 * crossed, and none while disabled; PEP 442 finalizers (once per object, resurrection, partial
 * resurrection, new cycles and collections from inside a finalizer); legacy finalizers and the
 * garbage list; DEBUG_SAVEALL and the debug stream; freeze and unfreeze; referrers and referents;
 * gc callbacks; roots; structures of 100,000 objects freed by reference counting and by a
 * collection; and the final collections of ft_runtime_free.
 *
 * Every test starts from a fresh runtime with automatic collection off (unless it tests it), and
 * ends by checking that every node it made was freed and, in debug builds, that the reference total
 * is back at 0. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>
#include <stddef.h>

#include "ftrt.h"
#define TEST_GC_NODE
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------------------- */

#define setup gc_fixture_setup

/* Nothing is left in garbage, and gc_fixture_teardown's checks. */
static void teardown(fixture f)
{
    ft_gc_set_debug(f.rt, 0);
    CHECK_EQ(ft_gc_garbage_count(f.rt), 0);
    gc_fixture_teardown(f);
}

static gc_node *new_node(ft_thread *t)
{
    gc_node *n = gc_node_new(t, &gc_node_type);
    CHECK(n != NULL);
    return n;
}

static gc_node *new_fin(ft_thread *t)
{
    gc_node *n = gc_node_new(t, &gc_fin_type);
    CHECK(n != NULL);
    return n;
}

static void link_to(gc_node *from, gc_node *to)
{
    gc_node_append(from, &to->ob);
}

static void drop(gc_node *n)
{
    ft_decref(&n->ob);
}

/* By id: freed exactly once, or not freed. */

/* A self-cycle, dropped: garbage for the next collection. Returns its id. */
static int drop_self_cycle(ft_thread *t, const ft_type *type)
{
    gc_node *n = gc_node_new(t, type);
    CHECK(n != NULL);
    link_to(n, n);
    int id = n->id;
    drop(n);
    return id;
}

/* A two-cycle a <-> b, dropped. */
static void drop_two_cycle(ft_thread *t, const ft_type *ta, const ft_type *tb, int *ida, int *idb)
{
    gc_node *a = gc_node_new(t, ta), *b = gc_node_new(t, tb);
    CHECK(a != NULL && b != NULL);
    link_to(a, b);
    link_to(b, a);
    *ida = a->id;
    *idb = b->id;
    drop(a);
    drop(b);
}

static bool list_has(const ft_object_list *l, const void *o)
{
    for (size_t i = 0; i < l->count; i++)
        if (l->items[i] == (const ft_object *)o)
            return true;
    return false;
}

/* Whether o is in generation g's list (-1: any generation). */
static bool in_generation(ft_runtime *rt, const void *o, int g)
{
    ft_object_list l = {0};
    CHECK_EQ(ft_gc_get_objects(rt, g, &l), FT_OK);
    bool found = list_has(&l, o);
    ft_object_list_clear(&l);
    return found;
}

/* The generation o is listed in, -1 for none; checks it is listed in one at most. */
static int generation_of(ft_runtime *rt, const void *o)
{
    int found = -1;
    for (int g = 0; g < FT_GC_GENERATIONS; g++) {
        if (in_generation(rt, o, g)) {
            CHECK_EQ(found, -1);
            found = g;
        }
    }
    return found;
}

static ft_gc_generation_stats stats_gen(ft_runtime *rt, int g)
{
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(rt, s);
    return s[g];
}

static uint64_t total_collections(ft_runtime *rt)
{
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(rt, s);
    return s[0].collections + s[1].collections + s[2].collections;
}

/* A non-GC object type with counted deallocs (test_util.h's counted_deallocs). */
static const ft_type leaf_type = {
    .name = "leaf", .basic_size = sizeof(ft_object) + 16, .dealloc = count_dealloc};

/* Objects held across a finalizer's resurrection. */
#define KEPT_MAX 16
static ft_object *kept[KEPT_MAX];
static int kept_count;

static void keep(ft_object *o)
{
    CHECK_THREAD(kept_count < KEPT_MAX);
    ft_incref(o);
    kept[kept_count++] = o;
}

static void release_kept(void)
{
    while (kept_count > 0)
        ft_decref(kept[--kept_count]);
}

/* ---- tracking ------------------------------------------------------------------------------------ */

TEST(gc_objects_start_untracked)
{
    fixture f = setup();
    gc_node *n = gc_node_new_untracked(f.t, &gc_node_type);
    CHECK(n != NULL);
    CHECK(!ft_gc_is_tracked(&n->ob));
    CHECK(!in_generation(f.rt, n, -1));
    ft_gc_track(&n->ob);
    CHECK(ft_gc_is_tracked(&n->ob));
    CHECK(in_generation(f.rt, n, 0));
    ft_gc_untrack(&n->ob);
    CHECK(!ft_gc_is_tracked(&n->ob));
    CHECK(!in_generation(f.rt, n, -1));
    ft_gc_untrack(&n->ob); /* a no-op on an untracked object */
    CHECK(!ft_gc_is_tracked(&n->ob));
    ft_gc_track(&n->ob); /* tracked again after an untrack */
    CHECK(ft_gc_is_tracked(&n->ob));
    drop(n);
    CHECK(FREED(0));

    /* Uninitialised allocations of GC types start untracked too; non-GC objects are never tracked. */
    gc_node *u = (gc_node *)ft_alloc_uninit(f.t, &gc_node_type);
    CHECK(u != NULL);
    CHECK(!ft_gc_is_tracked(&u->ob));
    u->id = atomic_fetch_add(&gc_node_next_id, 1);
    atomic_store(&u->magic, GC_NODE_ALIVE);
    u->n = u->cap = 0;
    u->items = NULL;
    u->uid = 0;
    CHECK(u->weaklist == NULL); /* zeroed all the same */
    ft_gc_track(&u->ob);
    CHECK(ft_gc_is_tracked(&u->ob));
    drop(u);
    ft_object *leaf = ft_alloc(f.t, &leaf_type);
    CHECK(leaf != NULL);
    CHECK(!ft_gc_is_tracked(leaf));
    ft_decref(leaf);
    teardown(f);
}

TEST(untracked_cycles_are_never_collected)
{
    fixture f = setup();
    gc_node *self = gc_node_new_untracked(f.t, &gc_node_type);
    gc_node *a = gc_node_new_untracked(f.t, &gc_node_type);
    gc_node *b = gc_node_new_untracked(f.t, &gc_node_type);
    CHECK(self && a && b);
    link_to(self, self);
    link_to(a, b);
    link_to(b, a);
    drop(self);
    drop(a);
    drop(b);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK_EQ(gc_node_live(), 3);
    /* Leaked until the host breaks them by hand. */
    gc_node_clear(&self->ob);
    gc_node_clear(&a->ob);
    CHECK_EQ(gc_node_live(), 0);
    teardown(f);
}

/* A young collection finds an object tracked long after its allocation: its page received no
 * allocation since the last collection, so only the tracking itself can list it as young (heap.c,
 * "Young pages"). The self-cycle is made and dropped before it is tracked, then found by
 * generation 0. */
TEST(young_collection_finds_an_object_tracked_late)
{
    fixture f = setup();
    gc_node *late = gc_node_new_untracked(f.t, &gc_node_type);
    CHECK(late != NULL);
    int id = late->id;
    /* Enough newer objects to move allocation to other pages, and a collection that starts a new
     * epoch with late's page no longer an allocation page. */
    enum { FILL = 4096 };
    static gc_node *fill[FILL];
    for (int i = 0; i < FILL; i++)
        fill[i] = new_node(f.t);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    link_to(late, late);
    ft_gc_track(&late->ob);
    drop(late);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 1);
    CHECK(FREED(id));
    for (int i = 0; i < FILL; i++)
        drop(fill[i]);
    teardown(f);
}

/* Deferred objects (here: with per-thread reference counts) are never candidates of a young
 * collection, whose references they may have elsewhere than in a count (stack references, next);
 * a full collection takes them. */
static const ft_type deferred_node_type = {.name = "deferred_node",
                                           .basic_size = sizeof(gc_node),
                                           .flags = FT_TYPE_GC | FT_TYPE_HAS_WEAKREFS |
                                                    FT_TYPE_UNIQUEID,
                                           .unique_id_offset = offsetof(gc_node, uid),
                                           .weaklist_offset = offsetof(gc_node, weaklist),
                                           .traverse = gc_node_traverse,
                                           .clear = gc_node_clear,
                                           .dealloc = gc_node_dealloc};

TEST(young_collections_leave_deferred_objects_to_full_ones)
{
    fixture f = setup();
    gc_node *d = gc_node_new(f.t, &deferred_node_type);
    CHECK(d != NULL);
    int id = d->id;
    link_to(d, d);
    CHECK_EQ(ft_uniqueid_enable(f.t, &d->ob), FT_OK);
    drop(d);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK_EQ(ft_gc_collect(f.rt, 1), 0);
    CHECK(ALIVE(id));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(id));
    teardown(f);
}

/* A half-tracked cycle (one member untracked) is not collected either: the untracked member's
 * reference counts as one from outside. */
TEST(a_cycle_through_an_untracked_object_is_not_collected)
{
    fixture f = setup();
    gc_node *a = new_node(f.t);
    gc_node *u = gc_node_new_untracked(f.t, &gc_node_type);
    CHECK(u != NULL);
    link_to(a, u);
    link_to(u, a);
    drop(a);
    drop(u);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK_EQ(gc_node_live(), 2);
    gc_node_clear(&u->ob);
    CHECK_EQ(gc_node_live(), 0);
    teardown(f);
}

static void track_twice(void *arg)
{
    (void)arg;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    gc_node *n = gc_node_new(t, &gc_node_type);
    ft_gc_track(&n->ob);
}

static void track_a_non_gc_object(void *arg)
{
    (void)arg;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    ft_object *o = ft_alloc(t, &leaf_type);
    ft_gc_track(o);
}

TEST(tracking_twice_is_fatal)
{
    CHECK_DEATH(track_twice, NULL, "track", "gc_node");
    CHECK_DEATH(track_a_non_gc_object, NULL, "track", "leaf");
}

/* ---- collect's result and refusals -------------------------------------------------------------- */

TEST(collect_refuses_bad_generations_and_a_held_stop)
{
    fixture f = setup();
    int id = drop_self_cycle(f.t, &gc_node_type);
    CHECK_EQ(ft_gc_collect(f.rt, -1), -1);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    CHECK_EQ(ft_gc_collect(f.rt, 3), -1);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    CHECK_EQ(ft_gc_collect(f.rt, FT_GC_GENERATIONS), -1);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    ft_stop_the_world(f.rt);
    intptr_t held = ft_gc_collect(f.rt, 2);
    ft_status err = ft_last_error();
    ft_start_the_world(f.rt);
    CHECK_EQ(held, -1);
    CHECK_EQ(err, FT_EPERM);
    CHECK(ALIVE(id)); /* none of them collected anything */
    ft_object_list l = {0};
    CHECK_EQ(ft_gc_get_objects(f.rt, 3, &l), FT_EINVAL);
    CHECK_EQ(l.count, 0);
    CHECK_EQ(ft_gc_get_objects(f.rt, -2, &l), FT_EINVAL);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 1);
    CHECK(FREED(id));
    teardown(f);
}

TEST(self_cycle)
{
    fixture f = setup();
    int id = drop_self_cycle(f.t, &gc_node_type);
    CHECK(ALIVE(id));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(id));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    teardown(f);
}

TEST(two_cycle)
{
    fixture f = setup();
    int a, b;
    drop_two_cycle(f.t, &gc_node_type, &gc_node_type, &a, &b);
    CHECK_EQ(gc_node_live(), 2);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(a) && FREED(b));
    teardown(f);
}

TEST(cycle_hanging_off_a_live_object_survives)
{
    fixture f = setup();
    gc_node *live = new_node(f.t);
    gc_node *a = new_node(f.t), *b = new_node(f.t);
    link_to(live, a);
    link_to(a, b);
    link_to(b, a);
    int ida = a->id, idb = b->id;
    drop(a);
    drop(b);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(ALIVE(ida) && ALIVE(idb));
    CHECK_EQ(ft_refcount(&a->ob), 2);
    CHECK_EQ(ft_refcount(&b->ob), 1);
    drop(live); /* freed by its count; the cycle it held becomes garbage */
    CHECK_EQ(gc_node_live(), 2);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(ida) && FREED(idb));
    teardown(f);
}

TEST(garbage_referring_to_live_objects)
{
    fixture f = setup();
    gc_node *live = new_node(f.t);
    gc_node *a = new_node(f.t), *b = new_node(f.t);
    link_to(a, b);
    link_to(b, a);
    link_to(a, live);
    link_to(b, live);
    int ida = a->id, idb = b->id;
    drop(a);
    drop(b);
    CHECK_EQ(ft_refcount(&live->ob), 3);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(ida) && FREED(idb));
    CHECK(ALIVE(live->id));
    CHECK_EQ(ft_refcount(&live->ob), 1);
    CHECK(ft_gc_is_tracked(&live->ob));
    drop(live);
    teardown(f);
}

/* Trees hanging off garbage are freed by the reference counts the clears drop. They count in the
 * result only as tracked containers of the collected generations found unreachable: a young one
 * does; an untracked one, a non-GC leaf and an older one do not. */
TEST(trees_hanging_off_garbage)
{
    fixture f = setup();
    atomic_store(&counted_deallocs, 0);
    gc_node *old = new_node(f.t);
    CHECK_EQ(ft_gc_collect(f.rt, 1), 0); /* old is in generation 2 now */
    CHECK_EQ(generation_of(f.rt, old), 2);

    gc_node *a = new_node(f.t), *b = new_node(f.t);
    link_to(a, b);
    link_to(b, a);
    gc_node *untracked = gc_node_new_untracked(f.t, &gc_node_type);
    gc_node *young = new_node(f.t);
    CHECK(untracked != NULL);
    ft_object *leaf1 = ft_alloc(f.t, &leaf_type), *leaf2 = ft_alloc(f.t, &leaf_type);
    ft_object *leaf3 = ft_alloc(f.t, &leaf_type);
    CHECK(leaf1 && leaf2 && leaf3);
    gc_node_append(a, leaf1);
    link_to(a, untracked);
    gc_node_append(untracked, leaf2);
    link_to(b, young);
    gc_node_append(young, leaf3);
    link_to(young, old);
    ft_decref(leaf1);
    ft_decref(leaf2);
    ft_decref(leaf3);
    drop(untracked);
    drop(young);
    drop(old);
    drop(a);
    drop(b);
    CHECK_EQ(gc_node_live(), 5);

    /* a, b and young, in generation 0, are unreachable: 3. old is freed all the same. */
    CHECK_EQ(ft_gc_collect(f.rt, 0), 3);
    CHECK_EQ(gc_node_live(), 0);
    CHECK_EQ(atomic_load(&counted_deallocs), 3);
    CHECK_EQ(stats_gen(f.rt, 0).collected, 3);
    teardown(f);
}

TEST(many_independent_cycles)
{
    fixture f = setup();
    enum { SELF = 50, PAIRS = 100, RINGS = 20, RING = 7 };
    for (int i = 0; i < SELF; i++)
        drop_self_cycle(f.t, &gc_node_type);
    for (int i = 0; i < PAIRS; i++) {
        int a, b;
        drop_two_cycle(f.t, &gc_node_type, &gc_node_type, &a, &b);
    }
    for (int r = 0; r < RINGS; r++) {
        gc_node *first = new_node(f.t), *prev = first;
        for (int i = 1; i < RING; i++) {
            gc_node *n = new_node(f.t);
            link_to(prev, n);
            drop(n); /* prev holds it */
            prev = n;
        }
        link_to(prev, first);
        drop(first);
    }
    gc_node *live = new_node(f.t); /* one survivor among them */
    CHECK_EQ(ft_gc_collect(f.rt, 2), SELF + 2 * PAIRS + RINGS * RING);
    CHECK_EQ(gc_node_live(), 1);
    drop(live);
    teardown(f);
}

/* ---- generations ---------------------------------------------------------------------------------- */

TEST(survivors_move_to_older_generations)
{
    fixture f = setup();
    gc_node *n = new_node(f.t);
    CHECK_EQ(generation_of(f.rt, n), 0);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK_EQ(generation_of(f.rt, n), 1);
    gc_node *m = new_node(f.t); /* a new object starts in generation 0 */
    CHECK_EQ(generation_of(f.rt, m), 0);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0); /* a young collection leaves generation 1 alone */
    CHECK_EQ(generation_of(f.rt, n), 1);
    CHECK_EQ(generation_of(f.rt, m), 1);
    CHECK_EQ(ft_gc_collect(f.rt, 1), 0);
    CHECK_EQ(generation_of(f.rt, n), 2);
    CHECK_EQ(generation_of(f.rt, m), 2);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK_EQ(generation_of(f.rt, n), 2);
    /* Untracked and tracked again: back to generation 0. */
    ft_gc_untrack(&n->ob);
    CHECK_EQ(generation_of(f.rt, n), -1);
    ft_gc_track(&n->ob);
    CHECK_EQ(generation_of(f.rt, n), 0);
    /* Every generation's list is also in the list of all three. */
    CHECK(in_generation(f.rt, n, -1) && in_generation(f.rt, m, -1));
    drop(n);
    drop(m);
    teardown(f);
}

TEST(thresholds_default_and_round_trip)
{
    fixture f = setup();
    long th[FT_GC_GENERATIONS];
    ft_gc_get_threshold(f.rt, th);
    CHECK_EQ(th[0], 2000);
    CHECK_EQ(th[1], 10);
    CHECK_EQ(th[2], 10);
    const long set[FT_GC_GENERATIONS] = {5, 3, 7};
    CHECK_EQ(ft_gc_set_threshold(f.rt, set), FT_OK);
    ft_gc_get_threshold(f.rt, th);
    CHECK(th[0] == 5 && th[1] == 3 && th[2] == 7);
    const long negative[3][FT_GC_GENERATIONS] = {{-1, 1, 1}, {1, -1, 1}, {1, 1, -5}};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(ft_gc_set_threshold(f.rt, negative[i]), FT_EINVAL);
        ft_gc_get_threshold(f.rt, th);
        CHECK(th[0] == 5 && th[1] == 3 && th[2] == 7); /* nothing changed */
    }
    const long zero[FT_GC_GENERATIONS] = {0, 0, 0};
    CHECK_EQ(ft_gc_set_threshold(f.rt, zero), FT_OK);
    ft_gc_get_threshold(f.rt, th);
    CHECK(th[0] == 0 && th[1] == 0 && th[2] == 0);
    teardown(f);
}

static void check_count(ft_runtime *rt, long c0, long c1, long c2)
{
    long c[FT_GC_GENERATIONS];
    ft_gc_get_count(rt, c);
    if (c[0] != c0 || c[1] != c1 || c[2] != c2)
        fprintf(stderr, "count: expected (%ld, %ld, %ld), got (%ld, %ld, %ld)\n", c0, c1, c2, c[0],
                c[1], c[2]);
    CHECK(c[0] == c0 && c[1] == c1 && c[2] == c2);
}

/* count[0]: GC allocations (tracked or not, weak references included; not non-GC objects) minus
 * GC deallocations since the last collection, never below 0. */
TEST(count_of_allocations_minus_deallocations)
{
    fixture f = setup();
    ft_gc_collect(f.rt, 2);
    check_count(f.rt, 0, 0, 0);
    gc_node *a = new_node(f.t), *b = new_node(f.t);
    gc_node *u = gc_node_new_untracked(f.t, &gc_node_type);
    CHECK(u != NULL);
    check_count(f.rt, 3, 0, 0);
    ft_object *leaves[5];
    for (int i = 0; i < 5; i++)
        CHECK((leaves[i] = ft_alloc(f.t, &leaf_type)) != NULL);
    check_count(f.rt, 3, 0, 0);
    ft_weakref *wr = ft_weakref_new(f.t, &a->ob, NULL, NULL);
    CHECK(wr != NULL);
    check_count(f.rt, 4, 0, 0);
    drop(u);
    check_count(f.rt, 3, 0, 0);
    for (int i = 0; i < 5; i++)
        ft_decref(leaves[i]);
    check_count(f.rt, 3, 0, 0);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    check_count(f.rt, 0, 1, 0);
    /* Deallocations after the collection do not take it below 0. */
    ft_decref(&wr->ob_base);
    drop(a);
    check_count(f.rt, 0, 1, 0);
    gc_node *c = new_node(f.t);
    check_count(f.rt, 1, 1, 0);
    drop(c);
    check_count(f.rt, 0, 1, 0);
    drop(b);
    teardown(f);
}

/* count[1] and count[2]: collections of the younger generation since the last collection of this one
 * (CPython's test_collect_generations). */
TEST(count_of_younger_collections)
{
    fixture f = setup();
    ft_gc_collect(f.rt, 2);
    check_count(f.rt, 0, 0, 0);
    ft_gc_collect(f.rt, 0);
    check_count(f.rt, 0, 1, 0);
    ft_gc_collect(f.rt, 0);
    check_count(f.rt, 0, 2, 0);
    ft_gc_collect(f.rt, 1);
    check_count(f.rt, 0, 0, 1);
    ft_gc_collect(f.rt, 1);
    check_count(f.rt, 0, 0, 2);
    ft_gc_collect(f.rt, 0);
    check_count(f.rt, 0, 1, 2);
    ft_gc_collect(f.rt, 2);
    check_count(f.rt, 0, 0, 0);
    teardown(f);
}

/* A cycle with one member in generation 1 is out of reach of a generation-0 collection (its young
 * member is referenced from outside generation 0), and collected by a generation-1 one. */
TEST(cycle_with_an_older_member_waits_for_its_generation)
{
    fixture f = setup();
    gc_node *a = new_node(f.t);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK_EQ(generation_of(f.rt, a), 1);
    gc_node *b = new_node(f.t);
    link_to(a, b);
    link_to(b, a);
    int ida = a->id, idb = b->id;
    drop(a);
    drop(b);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK(ALIVE(ida) && ALIVE(idb));
    CHECK_EQ(ft_gc_collect(f.rt, 1), 2);
    CHECK(FREED(ida) && FREED(idb));

    /* The same with the old member in generation 2: only a full collection finds it. */
    gc_node *c = new_node(f.t);
    CHECK_EQ(ft_gc_collect(f.rt, 1), 0);
    CHECK_EQ(generation_of(f.rt, c), 2);
    gc_node *d = new_node(f.t);
    link_to(c, d);
    link_to(d, c);
    int idc = c->id, idd = d->id;
    drop(c);
    drop(d);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK_EQ(ft_gc_collect(f.rt, 1), 0);
    CHECK(ALIVE(idc) && ALIVE(idd));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(idc) && FREED(idd));
    teardown(f);
}

static void legacy_del(ft_object *self);
static const ft_type legacy_type = {GC_NODE_TYPE_INIT("gc_legacy"), .legacy_del = legacy_del};
static _Atomic int legacy_del_calls;
static void legacy_del(ft_object *self)
{
    (void)self;
    atomic_fetch_add(&legacy_del_calls, 1);
}

TEST(stats_per_generation)
{
    fixture f = setup();
    for (int g = 0; g < FT_GC_GENERATIONS; g++) {
        ft_gc_generation_stats s = stats_gen(f.rt, g);
        CHECK(s.collections == 0 && s.collected == 0 && s.uncollectable == 0);
    }
    int a, b;
    drop_two_cycle(f.t, &gc_node_type, &gc_node_type, &a, &b);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 2);
    ft_gc_generation_stats s0 = stats_gen(f.rt, 0);
    CHECK_EQ(s0.collections, 1);
    CHECK_EQ(s0.collected, 2);
    CHECK_EQ(s0.uncollectable, 0);
    CHECK(s0.candidates >= 2);
    CHECK(s0.max_pause_ns <= s0.pause_ns);

    drop_self_cycle(f.t, &gc_node_type);
    gc_node *l = gc_node_new(f.t, &legacy_type);
    CHECK(l != NULL);
    link_to(l, l);
    drop(l);
    CHECK_EQ(ft_gc_collect(f.rt, 1), 2);
    ft_gc_generation_stats s1 = stats_gen(f.rt, 1);
    CHECK_EQ(s1.collections, 1);
    CHECK_EQ(s1.collected, 1);
    CHECK_EQ(s1.uncollectable, 1);
    CHECK_EQ(stats_gen(f.rt, 0).collections, 1); /* unchanged */
    CHECK_EQ(stats_gen(f.rt, 0).collected, 2);
    CHECK_EQ(stats_gen(f.rt, 2).collections, 0);

    /* A full collection finds the legacy cycle again, in generation 2 now. */
    ft_gc_clear_garbage(f.rt);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    ft_gc_generation_stats s2 = stats_gen(f.rt, 2);
    CHECK_EQ(s2.collections, 1);
    CHECK_EQ(s2.collected, 0);
    CHECK_EQ(s2.uncollectable, 1);
    /* Break it by hand. */
    ft_object_list g = {0};
    CHECK_EQ(ft_gc_garbage(f.rt, &g), FT_OK);
    CHECK_EQ(g.count, 1);
    gc_node_clear(g.items[0]);
    ft_object_list_clear(&g);
    ft_gc_clear_garbage(f.rt);
    CHECK_EQ(gc_node_live(), 0);
    teardown(f);
}

/* ---- automatic collection ------------------------------------------------------------------------ */

TEST(enable_and_disable)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    CHECK(ft_gc_is_enabled(rt));
    ft_gc_disable(rt);
    CHECK(!ft_gc_is_enabled(rt));
    ft_gc_disable(rt);
    CHECK(!ft_gc_is_enabled(rt));
    ft_gc_enable(rt);
    CHECK(ft_gc_is_enabled(rt));
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(disabled_gc_never_collects_on_its_own)
{
    fixture f = setup();
    const long th[FT_GC_GENERATIONS] = {10, 2, 2};
    CHECK_EQ(ft_gc_set_threshold(f.rt, th), FT_OK);
    int id = drop_self_cycle(f.t, &gc_node_type);
    for (int i = 0; i < 1000; i++) {
        drop_self_cycle(f.t, &gc_node_type);
        ft_safepoint(f.t);
    }
    CHECK_EQ(total_collections(f.rt), 0);
    CHECK(ALIVE(id));
    CHECK_EQ(gc_node_live(), 1001);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1001);
    teardown(f);
}

TEST(crossing_the_threshold_collects_at_the_next_safepoint)
{
    enum { N = 20 };
    fixture f = setup();
    const long th[FT_GC_GENERATIONS] = {N, 10, 10};
    CHECK_EQ(ft_gc_set_threshold(f.rt, th), FT_OK);
    ft_gc_collect(f.rt, 2);
    ft_gc_enable(f.rt);
    uint64_t before = total_collections(f.rt);
    int cycle = drop_self_cycle(f.t, &gc_node_type); /* one allocation */
    gc_node *held[N];
    for (int i = 0; i < N - 1; i++) /* N allocations: not past the threshold */
        held[i] = new_node(f.t);
    ft_safepoint(f.t);
    CHECK(ALIVE(cycle));
    CHECK_EQ(total_collections(f.rt), before);
    held[N - 1] = new_node(f.t); /* N + 1: past it */
    CHECK(ALIVE(cycle));         /* not inside the allocation */
    ft_safepoint(f.t);
    CHECK(FREED(cycle));
    CHECK_EQ(total_collections(f.rt), before + 1);
    CHECK_EQ(stats_gen(f.rt, 0).collections, 1);
    CHECK_EQ(stats_gen(f.rt, 1).collections, 0);
    CHECK_EQ(stats_gen(f.rt, 0).collected, 1);
    for (int i = 0; i < N; i++)
        CHECK_EQ(generation_of(f.rt, held[i]), 1);
    ft_gc_disable(f.rt);
    for (int i = 0; i < N; i++)
        drop(held[i]);
    teardown(f);
}

/* With automatic collection on, allocating many cycles runs collections of the older generations
 * too, and keeps the garbage bounded. */
TEST(automatic_collections_reach_older_generations)
{
    fixture f = setup();
    const long th[FT_GC_GENERATIONS] = {10, 3, 3};
    CHECK_EQ(ft_gc_set_threshold(f.rt, th), FT_OK);
    ft_gc_enable(f.rt);
    int max_live = 0;
    for (int i = 0; i < 2000; i++) {
        drop_self_cycle(f.t, &gc_node_type);
        ft_safepoint(f.t);
        if (gc_node_live() > max_live)
            max_live = gc_node_live();
    }
    CHECK(stats_gen(f.rt, 0).collections > 0);
    CHECK(stats_gen(f.rt, 1).collections > 0);
    CHECK(max_live <= 100);
    ft_gc_disable(f.rt);
    teardown(f);
}

TEST(threshold_zero_turns_automatic_collection_off)
{
    fixture f = setup();
    const long th[FT_GC_GENERATIONS] = {0, 10, 10};
    CHECK_EQ(ft_gc_set_threshold(f.rt, th), FT_OK);
    ft_gc_enable(f.rt);
    int id = drop_self_cycle(f.t, &gc_node_type);
    for (int i = 0; i < 500; i++) {
        drop_self_cycle(f.t, &gc_node_type);
        ft_safepoint(f.t);
    }
    CHECK_EQ(total_collections(f.rt), 0);
    CHECK(ALIVE(id));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 501); /* an explicit collection still works */
    teardown(f);
}

/* ---- PEP 442 finalizers ------------------------------------------------------------------------------ */

static void resurrect_self(gc_node *self)
{
    keep(&self->ob);
}

static int resurrect_only;
static void resurrect_one(gc_node *self)
{
    if (self->id == resurrect_only)
        keep(&self->ob);
}

TEST(finalizer_runs_once_on_the_refcount_path)
{
    fixture f = setup();
    gc_fin_body = resurrect_self;
    gc_node *n = new_fin(f.t);
    int id = n->id;
    CHECK(!ft_gc_is_finalized(&n->ob));
    drop(n);
    CHECK_EQ(atomic_load(&gc_node_finalized[id]), 1);
    CHECK(ALIVE(id)); /* resurrected */
    CHECK_EQ(kept_count, 1);
    CHECK(ft_gc_is_finalized(&n->ob));
    CHECK(ft_gc_is_tracked(&n->ob));
    release_kept(); /* dies now, without a second finalizer call */
    CHECK(FREED(id));
    CHECK_EQ(atomic_load(&gc_node_finalized[id]), 1);
    CHECK_EQ(kept_count, 0);
    teardown(f);
}

TEST(finalizer_runs_once_in_a_cycle)
{
    fixture f = setup();
    int a, b;
    drop_two_cycle(f.t, &gc_fin_type, &gc_fin_type, &a, &b);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(a) && FREED(b));
    CHECK_EQ(atomic_load(&gc_node_finalized[a]), 1);
    CHECK_EQ(atomic_load(&gc_node_finalized[b]), 1);
    CHECK_EQ(atomic_load(&gc_node_finalizes), 2);
    teardown(f);
}

/* Finalized by the refcount path (and resurrected), later garbage in a cycle: the collector does not
 * call the finalizer again. */
TEST(finalized_by_refcount_then_collected_without_a_second_call)
{
    fixture f = setup();
    gc_fin_body = resurrect_self;
    gc_node *n = new_fin(f.t);
    int id = n->id;
    drop(n);
    CHECK_EQ(kept_count, 1);
    gc_fin_body = NULL;
    link_to(n, n);
    release_kept();
    CHECK(ALIVE(id));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(id));
    CHECK_EQ(atomic_load(&gc_node_finalized[id]), 1);
    teardown(f);
}

/* A member of a cycle resurrects itself: it and everything it reaches survive, collect's result
 * leaves them out, weak references to them are cleared all the same (CPython's
 * test_finalization, SelfCycleResurrector), and they are not finalized again when they die. */
TEST(resurrection_in_a_cycle)
{
    fixture f = setup();
    gc_node *a = new_fin(f.t), *b = new_fin(f.t);
    gc_node *leaf = new_node(f.t);
    link_to(a, b);
    link_to(b, a);
    link_to(b, leaf);
    int ida = a->id, idb = b->id, idl = leaf->id;
    ft_weakref *wa = ft_weakref_new(f.t, &a->ob, NULL, NULL);
    CHECK(wa != NULL);
    drop(leaf);
    drop(a);
    drop(b);
    /* Only a resurrects: a's finalizer stores a new reference to it. */
    resurrect_only = ida;
    gc_fin_body = resurrect_one;
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(ALIVE(ida) && ALIVE(idb) && ALIVE(idl));
    CHECK_EQ(atomic_load(&gc_node_finalized[ida]), 1);
    CHECK_EQ(atomic_load(&gc_node_finalized[idb]), 1); /* both were unreachable: both finalized */
    CHECK_EQ(kept_count, 1);
    CHECK(ft_weakref_get(wa) == NULL);
    CHECK(ft_gc_is_finalized(kept[0]));
    CHECK(!ft_gc_is_finalized(&leaf->ob));
    CHECK_EQ(stats_gen(f.rt, 2).collected, 0);
    /* The survivors are not finalized again. */
    release_kept();
    CHECK_EQ(ft_gc_collect(f.rt, 2), 3);
    CHECK(FREED(ida) && FREED(idb) && FREED(idl));
    CHECK_EQ(atomic_load(&gc_node_finalized[ida]), 1);
    CHECK_EQ(atomic_load(&gc_node_finalized[idb]), 1);
    ft_decref(&wa->ob_base);
    teardown(f);
}

/* Partial resurrection: x (a self-cycle) refers to the cycle a <-> b; a resurrects itself. a and b
 * survive (b is reachable from a); x, which a does not reach, is collected: the result counts it
 * alone. */
TEST(partial_resurrection)
{
    fixture f = setup();
    gc_node *x = new_node(f.t), *a = new_fin(f.t), *b = new_fin(f.t);
    link_to(x, x);
    link_to(x, a);
    link_to(a, b);
    link_to(b, a);
    int idx = x->id, ida = a->id, idb = b->id;
    resurrect_only = ida;
    gc_fin_body = resurrect_one;
    drop(x);
    drop(a);
    drop(b);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(idx));
    CHECK(ALIVE(ida) && ALIVE(idb));
    CHECK_EQ(kept_count, 1);
    CHECK_EQ(ft_refcount(&a->ob), 2); /* kept, and b's */
    CHECK_EQ(ft_refcount(&b->ob), 1);
    CHECK_EQ(stats_gen(f.rt, 2).collected, 1);
    release_kept();
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(ida) && FREED(idb));
    CHECK_EQ(atomic_load(&gc_node_finalizes), 2);
    teardown(f);
}

/* The ring a -> b -> c -> a where only c resurrects: c reaches a and, through it, b, so all three
 * survive; all three were finalized, and none is finalized again when the ring dies. */
TEST(resurrected_member_keeps_what_it_reaches)
{
    fixture f = setup();
    gc_node *a = new_fin(f.t), *b = new_fin(f.t), *c = new_fin(f.t);
    link_to(a, b);
    link_to(b, c);
    link_to(c, a);
    int ida = a->id, idb = b->id, idc = c->id;
    resurrect_only = idc;
    gc_fin_body = resurrect_one;
    drop(a);
    drop(b);
    drop(c);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(ALIVE(ida) && ALIVE(idb) && ALIVE(idc));
    CHECK_EQ(atomic_load(&gc_node_finalizes), 3);
    release_kept();
    CHECK_EQ(ft_gc_collect(f.rt, 2), 3);
    CHECK(FREED(ida) && FREED(idb) && FREED(idc));
    CHECK_EQ(atomic_load(&gc_node_finalizes), 3);
    teardown(f);
}

/* A finalizer that makes a new cycle: the cycle is not part of this collection's garbage and the next
 * collection frees it. */
static _Atomic int new_cycle_id = -1;
static void make_a_cycle(gc_node *self)
{
    (void)self;
    ft_thread *t = ft_thread_current();
    int id = drop_self_cycle(t, &gc_node_type);
    atomic_store(&new_cycle_id, id);
}

TEST(finalizer_making_a_new_cycle)
{
    fixture f = setup();
    gc_fin_body = make_a_cycle;
    int id = drop_self_cycle(f.t, &gc_fin_type);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(id));
    int made = atomic_load(&new_cycle_id);
    CHECK(made >= 0);
    CHECK(ALIVE(made));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(made));
    teardown(f);
}

/* A finalizer that drops its references to other garbage. When that frees the rest of the garbage
 * by reference counting, nothing is left unreachable after the finalizers: the result is 0 (CPython
 * counts what is still unreachable then), and every object is freed exactly once, the finalizing one
 * not before its finalizer returns. When the rest is still a cycle, it is collected and counted. */
static void drop_everything(gc_node *self)
{
    gc_node_clear(&self->ob);
    CHECK_THREAD(atomic_load(&self->magic) == GC_NODE_ALIVE);
}

TEST(finalizer_dropping_references_to_other_garbage)
{
    fixture f = setup();
    gc_fin_body = drop_everything;
    gc_node *a = new_fin(f.t), *b = new_node(f.t), *c = new_node(f.t);
    link_to(a, b);
    link_to(a, c);
    link_to(b, c);
    link_to(c, a);
    int ida = a->id, idb = b->id, idc = c->id;
    drop(a);
    drop(b);
    drop(c);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(FREED(ida) && FREED(idb) && FREED(idc));
    CHECK_EQ(atomic_load(&gc_node_finalized[ida]), 1);
    check_helpers_ok();

    /* a -> b <-> c -> a: a's finalizer drops b, which c still holds. */
    a = new_fin(f.t), b = new_node(f.t), c = new_node(f.t);
    link_to(a, b);
    link_to(b, c);
    link_to(c, b);
    link_to(c, a);
    ida = a->id, idb = b->id, idc = c->id;
    drop(a);
    drop(b);
    drop(c);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 3);
    CHECK(FREED(ida) && FREED(idb) && FREED(idc));
    CHECK_EQ(atomic_load(&gc_node_finalized[ida]), 1);
    check_helpers_ok();
    teardown(f);
}

static intptr_t inner_collect = 12345;
static void collect_inside(gc_node *self)
{
    (void)self;
    ft_thread *t = ft_thread_current();
    inner_collect = ft_gc_collect(ft_thread_runtime(t), 2);
}

TEST(collect_inside_a_finalizer_returns_0)
{
    fixture f = setup();
    gc_fin_body = collect_inside;
    int id = drop_self_cycle(f.t, &gc_fin_type);
    int other = drop_self_cycle(f.t, &gc_node_type);
    inner_collect = 12345;
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK_EQ(inner_collect, 0);
    CHECK(FREED(id) && FREED(other));
    CHECK_EQ(stats_gen(f.rt, 2).collections, 1);
    teardown(f);
}

/* ---- legacy finalizers and the garbage list ---------------------------------------------------------- */

/* A cycle with a legacy finalizer is uncollectable: it and everything it reaches; only the legacy
 * objects are listed in garbage; nothing of it is finalized, cleared or freed. */
TEST(legacy_finalizer_cycle_is_uncollectable)
{
    fixture f = setup();
    atomic_store(&legacy_del_calls, 0);
    gc_node *l = gc_node_new(f.t, &legacy_type);
    CHECK(l != NULL);
    gc_node *b = new_fin(f.t), *c = new_node(f.t);
    link_to(l, b);
    link_to(b, l);
    link_to(b, c);
    int idl = l->id, idb = b->id, idc = c->id;
    drop(l);
    drop(b);
    drop(c);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 3);
    CHECK(ALIVE(idl) && ALIVE(idb) && ALIVE(idc));
    CHECK_EQ(atomic_load(&gc_node_finalizes), 0); /* b's finalizer not run: it is uncollectable */
    CHECK_EQ(atomic_load(&legacy_del_calls), 0);
    CHECK_EQ(l->n, 1); /* not cleared */
    CHECK_EQ(b->n, 2);
    CHECK_EQ(stats_gen(f.rt, 2).uncollectable, 3);
    CHECK_EQ(stats_gen(f.rt, 2).collected, 0);
    CHECK_EQ(ft_gc_garbage_count(f.rt), 1);
    ft_object_list g = {0};
    CHECK_EQ(ft_gc_garbage(f.rt, &g), FT_OK);
    CHECK_EQ(g.count, 1);
    CHECK(g.items[0] == &l->ob);
    CHECK(ft_gc_is_tracked(&l->ob) && ft_gc_is_tracked(&b->ob) && ft_gc_is_tracked(&c->ob));
    /* Break the cycle by hand and release the list: everything goes. */
    gc_node_clear(g.items[0]);
    ft_object_list_clear(&g);
    CHECK(ALIVE(idl));
    ft_gc_clear_garbage(f.rt);
    CHECK_EQ(ft_gc_garbage_count(f.rt), 0);
    CHECK(FREED(idl) && FREED(idb) && FREED(idc));
    teardown(f);
}

/* A legacy object that is not in a cycle but hangs off one: it is uncollectable when the collection
 * finds it, but the cycle's clears drop its last reference, so it dies by its count and leaves the
 * uncollectable set before CPython counts that set (gc_collect_main counts the finalizers list after
 * delete_garbage): the result and the stats leave it out, and garbage never holds it. */
TEST(legacy_object_hanging_off_garbage_dies_with_it)
{
    fixture f = setup();
    gc_node *x = new_node(f.t), *y = new_node(f.t);
    gc_node *l = gc_node_new(f.t, &legacy_type);
    CHECK(l != NULL);
    link_to(x, y);
    link_to(y, x);
    link_to(y, l);
    int idx = x->id, idy = y->id, idl = l->id;
    drop(x);
    drop(y);
    drop(l);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(idx) && FREED(idy));
    CHECK_EQ(stats_gen(f.rt, 2).collected, 2);
    CHECK_EQ(stats_gen(f.rt, 2).uncollectable, 0);
    CHECK(FREED(idl));
    CHECK_EQ(ft_gc_garbage_count(f.rt), 0);
    teardown(f);
}

/* A legacy object hanging off garbage that something else keeps: it stays, and is listed. */
TEST(legacy_object_held_by_live_and_garbage)
{
    fixture f = setup();
    gc_node *x = new_node(f.t);
    gc_node *l = gc_node_new(f.t, &legacy_type);
    CHECK(l != NULL);
    link_to(x, x);
    link_to(x, l);
    link_to(l, l); /* a cycle of its own: uncollectable */
    int idx = x->id, idl = l->id;
    drop(x);
    drop(l);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(idx));
    CHECK(ALIVE(idl));
    CHECK_EQ(ft_gc_garbage_count(f.rt), 1);
    CHECK_EQ(ft_refcount(&l->ob), 2); /* itself, and garbage */
    gc_node_clear(&l->ob);
    CHECK(ALIVE(idl));
    ft_gc_clear_garbage(f.rt);
    CHECK(FREED(idl));
    teardown(f);
}

/* DEBUG_SAVEALL: every unreachable object goes to garbage, uncleared; finalizers still run; the
 * result is the same. Without the flag, the same objects are collected after garbage lets go. */
TEST(saveall_keeps_unreachable_objects)
{
    fixture f = setup();
    ft_gc_set_debug(f.rt, FT_GC_DEBUG_SAVEALL);
    CHECK_EQ(ft_gc_get_debug(f.rt), FT_GC_DEBUG_SAVEALL);
    int a, b;
    drop_two_cycle(f.t, &gc_node_type, &gc_node_type, &a, &b);
    int s = drop_self_cycle(f.t, &gc_fin_type);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 3);
    CHECK(ALIVE(a) && ALIVE(b) && ALIVE(s));
    CHECK_EQ(atomic_load(&gc_node_finalized[s]), 1);
    CHECK_EQ(ft_gc_garbage_count(f.rt), 3);
    ft_object_list g = {0};
    CHECK_EQ(ft_gc_garbage(f.rt, &g), FT_OK);
    CHECK_EQ(g.count, 3);
    for (size_t i = 0; i < g.count; i++)
        CHECK_EQ(((gc_node *)g.items[i])->n, 1); /* not cleared */
    ft_object_list_clear(&g);
    ft_gc_set_debug(f.rt, 0);
    ft_gc_clear_garbage(f.rt);
    CHECK_EQ(gc_node_live(), 3); /* still cycles */
    CHECK_EQ(ft_gc_collect(f.rt, 2), 3);
    CHECK(FREED(a) && FREED(b) && FREED(s));
    CHECK_EQ(atomic_load(&gc_node_finalized[s]), 1); /* not again */
    teardown(f);
}

/* ---- debug output ---------------------------------------------------------------------------------- */

static bool stream_has(FILE *stream, char **buf, const char *text)
{
    fflush(stream);
    return *buf && strstr(*buf, text) != NULL;
}

TEST(debug_flags_print_to_the_debug_stream)
{
    fixture f = setup();
    char *buf = NULL;
    size_t len = 0;
    FILE *stream = open_memstream(&buf, &len);
    CHECK(stream != NULL);
    ft_gc_set_debug_stream(f.rt, stream);

    /* Without flags: nothing. */
    drop_self_cycle(f.t, &gc_node_type);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    fflush(stream);
    CHECK_EQ(len, 0);

    ft_gc_set_debug(f.rt, FT_GC_DEBUG_COLLECTABLE);
    drop_self_cycle(f.t, &gc_node_type);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(stream_has(stream, &buf, "gc_node"));
    CHECK(!stream_has(stream, &buf, "gc_legacy"));

    ft_gc_set_debug(f.rt, FT_GC_DEBUG_UNCOLLECTABLE);
    gc_node *l = gc_node_new(f.t, &legacy_type);
    CHECK(l != NULL);
    link_to(l, l);
    drop(l);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(stream_has(stream, &buf, "gc_legacy"));
    size_t before = len;

    ft_gc_set_debug(f.rt, FT_GC_DEBUG_STATS);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    fflush(stream);
    CHECK(len > before);

    ft_gc_set_debug(f.rt, 0);
    ft_gc_set_debug_stream(f.rt, NULL);
    fclose(stream);
    free(buf);
    /* Break the legacy cycle. */
    ft_object_list g = {0};
    CHECK_EQ(ft_gc_garbage(f.rt, &g), FT_OK);
    CHECK_EQ(g.count, 1);
    gc_node_clear(g.items[0]);
    ft_object_list_clear(&g);
    ft_gc_clear_garbage(f.rt);
    teardown(f);
}

/* ---- freeze ------------------------------------------------------------------------------------------ */

TEST(freeze_and_unfreeze)
{
    fixture f = setup();
    gc_node *live = new_node(f.t);
    int garbage = drop_self_cycle(f.t, &gc_node_type);
    CHECK_EQ(ft_gc_get_freeze_count(f.rt), 0);
    ft_gc_freeze(f.rt);
    CHECK_EQ(ft_gc_get_freeze_count(f.rt), 2);
    CHECK(!in_generation(f.rt, live, -1));
    CHECK_EQ(generation_of(f.rt, live), -1);
    CHECK(ft_gc_is_tracked(&live->ob));
    long c[FT_GC_GENERATIONS];
    ft_gc_get_count(f.rt, c);
    CHECK_EQ(c[0], 0);
    /* Garbage made before the freeze is not collected; garbage made after it is. */
    int after = drop_self_cycle(f.t, &gc_node_type);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(ALIVE(garbage));
    CHECK(FREED(after));
    CHECK_EQ(ft_gc_get_freeze_count(f.rt), 2);
    ft_gc_unfreeze(f.rt);
    CHECK_EQ(ft_gc_get_freeze_count(f.rt), 0);
    CHECK(in_generation(f.rt, live, 2));
    CHECK_EQ(generation_of(f.rt, live), 2);
    CHECK_EQ(ft_gc_collect(f.rt, 1), 0); /* in generation 2 now */
    CHECK(ALIVE(garbage));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(garbage));
    drop(live);
    teardown(f);
}

/* ---- introspection --------------------------------------------------------------------------------- */

TEST(referrers_and_referents)
{
    fixture f = setup();
    gc_node *a = new_node(f.t), *b = new_node(f.t), *c = new_node(f.t);
    gc_node *u = gc_node_new_untracked(f.t, &gc_node_type);
    CHECK(u != NULL);
    ft_object *leaf = ft_alloc(f.t, &leaf_type);
    CHECK(leaf != NULL);
    link_to(a, c);
    link_to(b, c);
    link_to(u, c); /* untracked: not a referrer */
    gc_node_append(c, leaf);
    link_to(c, a);

    ft_object_list l = {0};
    ft_object *objs[2] = {&c->ob, leaf};
    CHECK_EQ(ft_gc_get_referrers(f.rt, objs, 1, &l), FT_OK);
    CHECK_EQ(l.count, 2);
    CHECK(list_has(&l, a) && list_has(&l, b));
    ft_object_list_clear(&l);
    CHECK_EQ(l.count, 0);
    CHECK_EQ(ft_gc_get_referrers(f.rt, objs, 2, &l), FT_OK);
    CHECK_EQ(l.count, 3);
    CHECK(list_has(&l, a) && list_has(&l, b) && list_has(&l, c));
    ft_object_list_clear(&l);
    CHECK_EQ(ft_gc_get_referrers(f.rt, (ft_object *[]){&b->ob}, 1, &l), FT_OK);
    CHECK_EQ(l.count, 0);
    ft_object_list_clear(&l);

    CHECK_EQ(ft_gc_get_referents(f.rt, objs, 1, &l), FT_OK);
    CHECK_EQ(l.count, 2);
    CHECK(list_has(&l, leaf) && list_has(&l, a));
    ft_object_list_clear(&l);
    ft_object *two[2] = {&a->ob, &b->ob};
    CHECK_EQ(ft_gc_get_referents(f.rt, two, 2, &l), FT_OK);
    CHECK_EQ(l.count, 2);
    CHECK(l.items[0] == &c->ob && l.items[1] == &c->ob);
    ft_object_list_clear(&l);
    /* A non-GC object has no referents to report. */
    CHECK_EQ(ft_gc_get_referents(f.rt, &leaf, 1, &l), FT_OK);
    CHECK_EQ(l.count, 0);
    ft_object_list_clear(&l);
    CHECK_EQ(ft_refcount(&c->ob), 4); /* the lists let go of their references */

    ft_decref(leaf);
    gc_node_clear(&c->ob);
    drop(a);
    drop(b);
    drop(u);
    drop(c);
    teardown(f);
}

/* ---- gc callbacks ---------------------------------------------------------------------------------- */

static void record_callback(ft_runtime *rt, ft_gc_phase phase, const ft_gc_info *info, void *arg)
{
    (void)rt;
    gc_log("%s%d:g%d:c%d:u%d ", phase == FT_GC_PHASE_START ? "start" : "stop", (int)(intptr_t)arg,
           info->generation, (int)info->collected, (int)info->uncollectable);
}

TEST(callbacks_at_start_and_stop)
{
    fixture f = setup();
    CHECK_EQ(ft_gc_callback_add(f.rt, record_callback, (void *)1), FT_OK);
    CHECK_EQ(ft_gc_callback_add(f.rt, record_callback, (void *)2), FT_OK);
    int a, b;
    drop_two_cycle(f.t, &gc_node_type, &gc_node_type, &a, &b);
    gc_node *l = gc_node_new(f.t, &legacy_type);
    CHECK(l != NULL);
    link_to(l, l);
    drop(l);
    CHECK_EQ(ft_gc_collect(f.rt, 1), 3);
    CHECK_LOG("start1:g1:c0:u0 start2:g1:c0:u0 stop1:g1:c2:u1 stop2:g1:c2:u1 ");
    gc_log_len = 0;
    gc_log_text[0] = 0;
    CHECK_EQ(ft_gc_callback_remove(f.rt, record_callback, (void *)1), FT_OK);
    CHECK_EQ(ft_gc_callback_remove(f.rt, record_callback, (void *)1), FT_EINVAL);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK_LOG("start2:g0:c0:u0 stop2:g0:c0:u0 ");
    CHECK_EQ(ft_gc_callback_remove(f.rt, record_callback, (void *)2), FT_OK);
    gc_log_len = 0;
    gc_log_text[0] = 0;
    /* Break the legacy cycle. */
    ft_object_list g = {0};
    CHECK_EQ(ft_gc_garbage(f.rt, &g), FT_OK);
    CHECK_EQ(g.count, 1);
    gc_node_clear(g.items[0]);
    ft_object_list_clear(&g);
    ft_gc_clear_garbage(f.rt);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK_LOG("");
    teardown(f);
}

static intptr_t callback_collect = 12345;
static void collecting_callback(ft_runtime *rt, ft_gc_phase phase, const ft_gc_info *info,
                                void *arg)
{
    (void)info;
    (void)arg;
    if (phase == FT_GC_PHASE_START)
        callback_collect = ft_gc_collect(rt, 2);
}

TEST(collect_inside_a_gc_callback_returns_0)
{
    fixture f = setup();
    CHECK_EQ(ft_gc_callback_add(f.rt, collecting_callback, NULL), FT_OK);
    int id = drop_self_cycle(f.t, &gc_node_type);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK_EQ(callback_collect, 0);
    CHECK(FREED(id));
    CHECK_EQ(stats_gen(f.rt, 2).collections, 1);
    CHECK_EQ(ft_gc_callback_remove(f.rt, collecting_callback, NULL), FT_OK);
    teardown(f);
}

/* ---- roots ------------------------------------------------------------------------------------------- */

static gc_node *root_node;
static void visit_root(ft_visit_fn visit, void *visit_arg, void *arg)
{
    (void)arg;
    if (root_node)
        visit(&root_node->ob, visit_arg);
}

/* Roots only speed collections up: what a root reaches survives, garbage is still collected. */
TEST(roots)
{
    fixture f = setup();
    root_node = new_node(f.t);
    gc_node *child = new_node(f.t);
    link_to(root_node, child);
    link_to(child, root_node);
    drop(child);
    CHECK_EQ(ft_gc_add_root(f.rt, visit_root, NULL), FT_OK);
    int id = drop_self_cycle(f.t, &gc_node_type);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(id));
    CHECK_EQ(gc_node_live(), 2);
    CHECK_EQ(ft_gc_remove_root(f.rt, visit_root, NULL), FT_OK);
    CHECK_EQ(ft_gc_remove_root(f.rt, visit_root, NULL), FT_EINVAL);
    drop(root_node);
    root_node = NULL;
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    teardown(f);
}

/* ---- deep structures --------------------------------------------------------------------------------- */

#define DEEP 100000

TEST(long_chain_freed_by_refcount)
{
    fixture f = setup();
    gc_node *head = new_node(f.t), *prev = head;
    for (int i = 1; i < DEEP; i++) {
        gc_node *n = new_node(f.t);
        link_to(prev, n);
        drop(n);
        prev = n;
    }
    CHECK_EQ(gc_node_live(), DEEP);
    drop(head);
    CHECK_EQ(gc_node_live(), 0);
    CHECK_EQ(atomic_load(&gc_node_deallocs), DEEP);
    teardown(f);
}

TEST(long_ring_collected)
{
    fixture f = setup();
    gc_node *head = new_node(f.t), *prev = head;
    for (int i = 1; i < DEEP; i++) {
        gc_node *n = new_node(f.t);
        link_to(prev, n);
        drop(n);
        prev = n;
    }
    link_to(prev, head);
    drop(head);
    CHECK_EQ(gc_node_live(), DEEP);
    CHECK_EQ(ft_gc_collect(f.rt, 2), DEEP);
    CHECK_EQ(gc_node_live(), 0);
    CHECK_EQ(atomic_load(&gc_node_deallocs), DEEP);
    teardown(f);
}

/* ---- shutdown ---------------------------------------------------------------------------------------- */

static _Atomic int shutdown_callbacks;
static void count_callback(ft_runtime *rt, ft_gc_phase phase, const ft_gc_info *info, void *arg)
{
    (void)rt;
    (void)phase;
    (void)info;
    (void)arg;
    atomic_fetch_add(&shutdown_callbacks, 1);
}

TEST(runtime_free_collects_what_is_left)
{
    gc_node_reset();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    CHECK_EQ(ft_gc_callback_add(rt, count_callback, NULL), FT_OK);
    int a, b;
    drop_two_cycle(t, &gc_node_type, &gc_node_type, &a, &b);
    drop_self_cycle(t, &gc_fin_type);
    gc_node *old = new_node(t);
    link_to(old, old);
    CHECK_EQ(ft_gc_collect(rt, 1), 3); /* old goes to generation 2 */
    atomic_store(&shutdown_callbacks, 0);
    drop(old);
    drop_two_cycle(t, &gc_node_type, &gc_fin_type, &a, &b);
    drop_self_cycle(t, &gc_node_type);
    CHECK_EQ(gc_node_live(), 4);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
    CHECK_EQ(gc_node_live(), 0);
    CHECK_EQ(atomic_load(&gc_node_bad_deallocs), 0);
    CHECK_EQ(atomic_load(&shutdown_callbacks), 0);
}

int main(void)
{
    RUN(gc_objects_start_untracked);
    RUN(untracked_cycles_are_never_collected);
    RUN(a_cycle_through_an_untracked_object_is_not_collected);
    RUN(young_collection_finds_an_object_tracked_late);
    RUN(young_collections_leave_deferred_objects_to_full_ones);
    RUN(tracking_twice_is_fatal);
    RUN(collect_refuses_bad_generations_and_a_held_stop);
    RUN(self_cycle);
    RUN(two_cycle);
    RUN(cycle_hanging_off_a_live_object_survives);
    RUN(garbage_referring_to_live_objects);
    RUN(trees_hanging_off_garbage);
    RUN(many_independent_cycles);
    RUN(survivors_move_to_older_generations);
    RUN(thresholds_default_and_round_trip);
    RUN(count_of_allocations_minus_deallocations);
    RUN(count_of_younger_collections);
    RUN(cycle_with_an_older_member_waits_for_its_generation);
    RUN(stats_per_generation);
    RUN(enable_and_disable);
    RUN(disabled_gc_never_collects_on_its_own);
    RUN(crossing_the_threshold_collects_at_the_next_safepoint);
    RUN(automatic_collections_reach_older_generations);
    RUN(threshold_zero_turns_automatic_collection_off);
    RUN(finalizer_runs_once_on_the_refcount_path);
    RUN(finalizer_runs_once_in_a_cycle);
    RUN(finalized_by_refcount_then_collected_without_a_second_call);
    RUN(resurrection_in_a_cycle);
    RUN(partial_resurrection);
    RUN(resurrected_member_keeps_what_it_reaches);
    RUN(finalizer_making_a_new_cycle);
    RUN(finalizer_dropping_references_to_other_garbage);
    RUN(collect_inside_a_finalizer_returns_0);
    RUN(legacy_finalizer_cycle_is_uncollectable);
    RUN(legacy_object_hanging_off_garbage_dies_with_it);
    RUN(legacy_object_held_by_live_and_garbage);
    RUN(saveall_keeps_unreachable_objects);
    RUN(debug_flags_print_to_the_debug_stream);
    RUN(freeze_and_unfreeze);
    RUN(referrers_and_referents);
    RUN(callbacks_at_start_and_stop);
    RUN(collect_inside_a_gc_callback_returns_0);
    RUN(roots);
    RUN(long_chain_freed_by_refcount);
    RUN(long_ring_collected);
    RUN(runtime_free_collects_what_is_left);
    return harness_done();
}
