/* tests/test_uniqueid.c: unique ids and per-thread reference counts.
 *
 * An object with a unique id is counted in each thread's private array; its true count is its own
 * count plus every thread's slot, and is only known after ft_uniqueid_merge (or as each thread
 * stops). The shared count carries a bias of INTPTR_MAX / 8 references while the object has an id
 * (src/object/uniqueid.c), so the tests read the true count as ft_refcount(obj) - BIAS.
 *
 * The tests drive helper threads ("workers", which pass safepoints while idle, so merges can stop
 * them) through increments and decrements, and check: merges give the exact count, including while
 * workers keep counting and threads start and stop; an object is freed exactly once, by the merge
 * after its last reference went, never while any thread's slot holds a reference; a stopping
 * thread's slots reach the object without a merge; a recycled id starts from zero even though live
 * threads had nonzero slots for the object that held it before; thread arrays grow as ids are
 * issued; ft_uniqueid_enable's refusals (including out of memory, which leaves the
 * object unchanged); the debug reference total returns to its start; and the merge inside a stop the
 * caller holds (the public call merges without freeing, the core hands the dead back). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include "ftrt.h"
#include "harness.h"
#include "object/uniqueid.h" /* ft_uniqueid_merge_stopped, the core that runs inside a stop */

/* ---- helpers ------------------------------------------------------------------------------------- */

#define WAIT_LIMIT_NS (30 * INT64_C(1000000000)) /* far beyond any correct wait, even under TSan */
#include "test_util.h"
#define BIAS (INTPTR_MAX / 8)                    /* the deferral bias, in references */

/* The objects: per-thread counted, with a serial number so that each dealloc is attributed. */
#define MAX_SERIALS 256

typedef struct shared_obj {
    ft_object ob;
    uint32_t unique_id; /* reserved for ftrt */
    uint32_t serial;
} shared_obj;

static _Atomic int deallocs_by_serial[MAX_SERIALS];
static _Atomic int deallocs;
static uint32_t next_serial;

static void shared_dealloc(ft_object *self)
{
    uint32_t serial = ((shared_obj *)self)->serial;
    CHECK_THREAD(serial < MAX_SERIALS);
    if (serial < MAX_SERIALS)
        atomic_fetch_add(&deallocs_by_serial[serial], 1);
    atomic_fetch_add(&deallocs, 1);
}

static const ft_type uniqueid_type = {
    .name = "uniqueid_obj",
    .basic_size = sizeof(shared_obj),
    .flags = FT_TYPE_UNIQUEID,
    .unique_id_offset = offsetof(shared_obj, unique_id),
    .dealloc = shared_dealloc,
};

static const ft_type plain_type = {
    .name = "plain",
    .basic_size = sizeof(shared_obj),
    .unique_id_offset = offsetof(shared_obj, unique_id), /* but no FT_TYPE_UNIQUEID */
    .dealloc = shared_dealloc,
};

static const ft_type bad_offset_type = {
    .name = "bad offset",
    .basic_size = sizeof(shared_obj),
    .flags = FT_TYPE_UNIQUEID,
    .unique_id_offset = 0, /* inside the header */
    .dealloc = shared_dealloc,
};

static void reset_counts(void)
{
    for (int i = 0; i < MAX_SERIALS; i++)
        atomic_store(&deallocs_by_serial[i], 0);
    atomic_store(&deallocs, 0);
    next_serial = 0;
}

static ft_object *new_obj(ft_thread *t, const ft_type *type)
{
    shared_obj *o = (shared_obj *)ft_alloc(t, type);
    if (!o)
        return NULL;
    o->serial = next_serial++;
    return &o->ob;
}

static ft_object *new_enabled(ft_thread *t)
{
    ft_object *o = new_obj(t, &uniqueid_type);
    if (o && ft_uniqueid_enable(t, o) != FT_OK)
        return NULL;
    return o;
}

static intptr_t true_count(const ft_object *o)
{
    return ft_refcount(o) - BIAS;
}

static int serial_deallocs(const ft_object *o)
{
    return atomic_load(&deallocs_by_serial[((const shared_obj *)o)->serial]);
}

/* The workers are commanded threads (tests/test_util.h): idle, they pass safepoints, so a merge can
 * stop them. A counting command's argument says which object, and how many references. */
typedef struct refs {
    ft_object *obj;
    int n;
} refs;

/* Run cmd on w with obj and n as its argument, and wait for it. */
static void refs_do(ft_thread *self, commanded *w, commanded_fn cmd, ft_object *obj, int n)
{
    refs r = {obj, n};
    commanded_do(self, w, cmd, &r);
}

static void cmd_incref(commanded *w)
{
    refs *r = w->arg;
    for (int i = 0; i < r->n; i++)
        ft_uniqueid_incref(w->t, r->obj);
}

static void cmd_decref(commanded *w)
{
    refs *r = w->arg;
    for (int i = 0; i < r->n; i++)
        ft_uniqueid_decref(w->t, r->obj);
}

/* ---- enabling ------------------------------------------------------------------------------------ */

TEST(enable_refuses_bad_objects)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);

    ft_object *plain = new_obj(a, &plain_type);
    CHECK(plain != NULL);
    CHECK_EQ(ft_uniqueid_enable(a, plain), FT_EINVAL);
    CHECK_EQ(ft_object_unique_id(plain), 0);
    CHECK_EQ(ft_refcount(plain), 1);

    ft_object *bad = new_obj(a, &bad_offset_type);
    CHECK(bad != NULL);
    CHECK_EQ(ft_uniqueid_enable(a, bad), FT_EINVAL);
    CHECK_EQ(ft_refcount(bad), 1);

    ft_object *obj = new_obj(a, &uniqueid_type);
    CHECK(obj != NULL);
    CHECK_EQ(ft_uniqueid_enable(a, obj), FT_OK);
    CHECK(ft_object_unique_id(obj) != 0);
    CHECK_EQ(true_count(obj), 1);
    CHECK(atomic_load(&obj->ob_flags) & FT_OBJ_DEFERRED);
    uint32_t id = ft_object_unique_id(obj);
    CHECK_EQ(ft_uniqueid_enable(a, obj), FT_EINVAL); /* twice */
    CHECK_EQ(ft_object_unique_id(obj), id);
    CHECK_EQ(true_count(obj), 1);

    ft_object *immortal = new_obj(a, &uniqueid_type);
    CHECK(immortal != NULL);
    ft_immortalize(immortal);
    CHECK_EQ(ft_uniqueid_enable(a, immortal), FT_EINVAL);
    CHECK_EQ(ft_object_unique_id(immortal), 0);
    CHECK(ft_object_is_immortal(immortal));

    /* Deferred: an ordinary decref of the last ordinary reference does not free it. */
    ft_decref(obj);
    CHECK_EQ(serial_deallocs(obj), 0);
    CHECK_EQ(true_count(obj), 0);
    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(atomic_load(&deallocs), 1);

    ft_decref(plain);
    ft_decref(bad);
    CHECK_EQ(atomic_load(&deallocs), 3);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(enable_out_of_memory_leaves_the_object_unchanged)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    ft_object *obj = new_obj(a, &uniqueid_type);
    CHECK(obj != NULL);
    intptr_t shared_before = atomic_load(&obj->ob_ref_shared);
    uint16_t flags_before = atomic_load(&obj->ob_flags);
    ft_debug_fail_allocation(rt, 0); /* the id table's first allocation fails */
    CHECK_EQ(ft_uniqueid_enable(a, obj), FT_ENOMEM);
    ft_debug_fail_allocation(rt, -1);
    CHECK_EQ(ft_object_unique_id(obj), 0);
    CHECK_EQ(ft_refcount(obj), 1);
    CHECK_EQ(atomic_load(&obj->ob_ref_shared), shared_before);
    CHECK_EQ(atomic_load(&obj->ob_flags), flags_before);
    /* Still an ordinary object: the last decref frees it at once. */
    ft_object *other = new_obj(a, &uniqueid_type);
    CHECK(other != NULL);
    ft_decref(obj);
    CHECK_EQ(atomic_load(&deallocs), 1);
    /* And the table works once memory is back. */
    CHECK_EQ(ft_uniqueid_enable(a, other), FT_OK);
    CHECK(ft_object_unique_id(other) != 0);
    ft_uniqueid_decref(a, other);
    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(atomic_load(&deallocs), 2);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(object_without_an_id_counts_normally)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    ft_object *obj = new_obj(a, &uniqueid_type); /* opted in, but never enabled */
    CHECK(obj != NULL);
    ft_uniqueid_incref(a, obj);
    CHECK_EQ(ft_refcount(obj), 2);
    commanded b;
    commanded_start(a, &b, rt);
    refs_do(a, &b, cmd_incref, obj, 3);
    CHECK_EQ(ft_refcount(obj), 5); /* no merge needed */
    refs_do(a, &b, cmd_decref, obj, 3);
    CHECK_EQ(ft_refcount(obj), 2);
    ft_uniqueid_decref(a, obj);
    CHECK_EQ(ft_refcount(obj), 1);
    ft_uniqueid_decref(a, obj);
    CHECK_EQ(atomic_load(&deallocs), 1); /* freed at once, no merge */
    commanded_finish(a, &b);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- merges -------------------------------------------------------------------------------------- */

#define COUNT_WORKERS 4

TEST(merge_gives_the_exact_count)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    ft_object *obj = new_enabled(a);
    CHECK(obj != NULL);
    commanded w[COUNT_WORKERS];
    for (int i = 0; i < COUNT_WORKERS; i++)
        commanded_start(a, &w[i], rt);

    intptr_t expected = 1;
    for (int i = 0; i < COUNT_WORKERS; i++) {
        refs_do(a, &w[i], cmd_incref, obj, 100 * (i + 1) + 7);
        refs_do(a, &w[i], cmd_decref, obj, 7);
        expected += 100 * (i + 1);
    }
    CHECK_EQ(true_count(obj), 1); /* the slots are private until merged */
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(obj), expected);
    CHECK_EQ(ft_uniqueid_merge(rt), 0); /* merging again adds nothing */
    CHECK_EQ(true_count(obj), expected);

    /* Drop them from other threads than took them: slots go negative, the sum is what counts. */
    for (int i = 0; i < COUNT_WORKERS; i++)
        refs_do(a, &w[(i + 1) % COUNT_WORKERS], cmd_decref, obj, 100 * (i + 1));
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(obj), 1);
    CHECK_EQ(atomic_load(&deallocs), 0);

    for (int i = 0; i < COUNT_WORKERS; i++)
        commanded_finish(a, &w[i]);
    ft_uniqueid_decref(a, obj);
    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(atomic_load(&deallocs), 1);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(freed_exactly_when_the_last_reference_goes)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    ft_object *obj = new_enabled(a);
    CHECK(obj != NULL);
    commanded x;
    commanded_start(a, &x, rt);
    refs_do(a, &x, cmd_incref, obj, 1);
    ft_decref(obj); /* the allocation's reference, the ordinary way */
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(ft_uniqueid_merge(rt), 0);
        CHECK_EQ(true_count(obj), 1);
        CHECK_EQ(serial_deallocs(obj), 0);
        /* x churns, but keeps its reference across every merge */
        refs_do(a, &x, cmd_incref, obj, 3);
        CHECK_EQ(ft_uniqueid_merge(rt), 0);
        refs_do(a, &x, cmd_decref, obj, 3);
    }
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(obj), 1);
    CHECK_EQ(serial_deallocs(obj), 0);
    refs_do(a, &x, cmd_decref, obj, 1); /* the last reference */
    CHECK_EQ(serial_deallocs(obj), 0);    /* only a merge frees */
    uint32_t serial = ((shared_obj *)obj)->serial;
    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(atomic_load(&deallocs_by_serial[serial]), 1);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(atomic_load(&deallocs_by_serial[serial]), 1);
    commanded_finish(a, &x);
    CHECK_EQ(atomic_load(&deallocs), 1);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(stopping_thread_merges_its_slots)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    ft_object *obj = new_enabled(a);
    CHECK(obj != NULL);
    commanded x;
    commanded_start(a, &x, rt);
    refs_do(a, &x, cmd_incref, obj, 5);
    CHECK_EQ(true_count(obj), 1);
    commanded_finish(a, &x);
    CHECK_EQ(true_count(obj), 6); /* folded in by the stop itself */
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(obj), 6);

    commanded y;
    commanded_start(a, &y, rt);
    refs_do(a, &y, cmd_decref, obj, 5);
    commanded_finish(a, &y);
    CHECK_EQ(true_count(obj), 1);
    CHECK_EQ(serial_deallocs(obj), 0);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);

    /* A stopping thread that drops the last reference: the next merge frees. */
    commanded z;
    commanded_start(a, &z, rt);
    ft_decref(obj);
    refs_do(a, &z, cmd_incref, obj, 1);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    refs_do(a, &z, cmd_decref, obj, 1);
    commanded_finish(a, &z);
    CHECK_EQ(true_count(obj), 0);
    CHECK_EQ(serial_deallocs(obj), 0);
    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(atomic_load(&deallocs), 1);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(recycled_id_has_no_stale_slots)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded x, y;
    commanded_start(a, &x, rt);
    commanded_start(a, &y, rt);

    /* The old object's count is 1 (a) + 1 (x) - 2 (y) = 0; x and y keep running with slots +1
     * and -2 until the merge that frees it. */
    ft_object *old = new_enabled(a);
    CHECK(old != NULL);
    uint32_t id = ft_object_unique_id(old);
    refs_do(a, &x, cmd_incref, old, 1);
    refs_do(a, &y, cmd_decref, old, 2);
    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(serial_deallocs(old), 1);

    /* The new object gets the same id; its count must not include x's or y's old slots. */
    ft_object *fresh = new_enabled(a);
    CHECK(fresh != NULL);
    CHECK_EQ(ft_object_unique_id(fresh), id);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(fresh), 1);
    CHECK_EQ(serial_deallocs(fresh), 0);
    refs_do(a, &x, cmd_incref, fresh, 2);
    refs_do(a, &y, cmd_incref, fresh, 1);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(fresh), 4);
    refs_do(a, &x, cmd_decref, fresh, 2);
    refs_do(a, &y, cmd_decref, fresh, 1);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(fresh), 1);

    commanded_finish(a, &x);
    commanded_finish(a, &y);
    CHECK_EQ(true_count(fresh), 1); /* x and y stopped with zero slots for it */
    ft_uniqueid_decref(a, fresh);
    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(serial_deallocs(fresh), 1);
    CHECK_EQ(atomic_load(&deallocs), 2);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- many ids: thread arrays grow ---------------------------------------------------------------- */

#define MANY_IDS 40 /* the id table grows 8 -> 16 -> 32 -> 64 */

static ft_object *many[MANY_IDS];

static void cmd_incref_all(commanded *w)
{
    for (int i = 0; i < MANY_IDS; i++)
        for (int k = 0; k <= i % 3; k++)
            ft_uniqueid_incref(w->t, many[i]);
}

static void cmd_decref_all(commanded *w)
{
    for (int i = 0; i < MANY_IDS; i++)
        for (int k = 0; k <= i % 3; k++)
            ft_uniqueid_decref(w->t, many[i]);
}

TEST(thread_arrays_grow_with_the_ids)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded x, y;
    commanded_start(a, &x, rt);
    commanded_start(a, &y, rt);
    /* x counts each object as soon as it has its id: its array grows step by step. */
    for (int i = 0; i < MANY_IDS; i++) {
        many[i] = new_enabled(a);
        CHECK(many[i] != NULL);
        refs_do(a, &x, cmd_incref, many[i], 1);
    }
    /* y's array grows at once to the whole table. */
    commanded_do(a, &y, cmd_incref_all, NULL);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    for (int i = 0; i < MANY_IDS; i++)
        CHECK_EQ(true_count(many[i]), 2 + i % 3 + 1);
    commanded_do(a, &y, cmd_decref_all, NULL);
    for (int i = 0; i < MANY_IDS; i++)
        refs_do(a, &x, cmd_decref, many[i], 1);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    for (int i = 0; i < MANY_IDS; i++) {
        CHECK_EQ(true_count(many[i]), 1);
        ft_uniqueid_decref(a, many[i]);
    }
    CHECK_EQ(ft_uniqueid_merge(rt), MANY_IDS);
    CHECK_EQ(atomic_load(&deallocs), MANY_IDS);
    for (int i = 0; i < MANY_IDS; i++)
        CHECK_EQ(atomic_load(&deallocs_by_serial[i]), 1);
    commanded_finish(a, &x);
    commanded_finish(a, &y);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- merges inside a stop the caller holds ------------------------------------------------------- */

/* ft_uniqueid_merge inside the caller's own stop merges the counts but frees nothing (destructors do
 * not run inside a stop): the object at zero keeps its id until a merge outside a stop. A caller
 * that is not attached to the runtime cannot free either: it merges only. */
TEST(merge_inside_the_callers_stop_merges_only)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    ft_object *obj = new_enabled(a);
    CHECK(obj != NULL);
    commanded x;
    commanded_start(a, &x, rt);
    refs_do(a, &x, cmd_incref, obj, 5);

    ft_stop_the_world(rt);
    size_t freed = ft_uniqueid_merge(rt);
    intptr_t merged = true_count(obj);
    ft_start_the_world(rt);
    CHECK_EQ(freed, 0);
    CHECK_EQ(merged, 6);

    refs_do(a, &x, cmd_decref, obj, 5);
    ft_decref(obj);
    ft_stop_the_world(rt);
    freed = ft_uniqueid_merge(rt);
    merged = true_count(obj);
    ft_start_the_world(rt);
    CHECK_EQ(freed, 0);
    CHECK_EQ(merged, 0);
    CHECK_EQ(atomic_load(&deallocs), 0);
    CHECK(ft_object_unique_id(obj) != 0);

    ft_detach(a);
    freed = ft_uniqueid_merge(rt); /* from outside: merges, cannot free */
    ft_attach(a);
    CHECK_EQ(freed, 0);
    CHECK_EQ(atomic_load(&deallocs), 0);

    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(atomic_load(&deallocs), 1);
    commanded_finish(a, &x);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* The core a collector runs inside its own stop: it merges, and hands the dead back on a list that
 * the caller deallocates after the restart. */
TEST(merge_core_hands_the_dead_back)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    ft_object *objs[3];
    for (int i = 0; i < 3; i++) {
        objs[i] = new_enabled(a);
        CHECK(objs[i] != NULL);
    }
    commanded x;
    commanded_start(a, &x, rt);
    refs_do(a, &x, cmd_incref, objs[0], 2);
    refs_do(a, &x, cmd_decref, objs[1], 1); /* objs[1] and objs[2] are at zero */
    ft_uniqueid_decref(a, objs[2]);

    ft_stop_the_world(rt);
    ft_dead_list dead = {0};
    size_t found = ft_uniqueid_merge_stopped(rt, &dead);
    intptr_t count0 = true_count(objs[0]);
    int deallocs_inside = atomic_load(&deallocs);
    /* Nested: the public merge inside the same stop finds nothing more and does not stop again. */
    size_t nested = ft_uniqueid_merge(rt);
    ft_start_the_world(rt);
    CHECK_EQ(found, 2);
    CHECK_EQ(dead.count, 2);
    CHECK_EQ(count0, 3);
    CHECK_EQ(deallocs_inside, 0);
    CHECK_EQ(nested, 0);
    CHECK_EQ(ft_object_unique_id(objs[1]), 0); /* out of the table, its id released */
    CHECK_EQ(ft_refcount(objs[1]), 0);         /* merged: no bias, count zero */
    CHECK_EQ(atomic_load(&deallocs), 0);

    CHECK_EQ(ft_dead_list_dealloc(&dead), 2);
    CHECK_EQ(serial_deallocs(objs[1]), 1);
    CHECK_EQ(serial_deallocs(objs[2]), 1);
    CHECK_EQ(serial_deallocs(objs[0]), 0);
    ft_object *again = new_enabled(a);
    CHECK(again != NULL);

    /* Without a list the core only merges: nothing leaves the table. */
    refs_do(a, &x, cmd_decref, objs[0], 2);
    ft_decref(objs[0]);
    ft_stop_the_world(rt);
    found = ft_uniqueid_merge_stopped(rt, NULL);
    ft_start_the_world(rt);
    CHECK_EQ(found, 0);
    CHECK_EQ(true_count(objs[0]), 0);
    CHECK(ft_object_unique_id(objs[0]) != 0);
    ft_decref(again);
    CHECK_EQ(ft_uniqueid_merge(rt), 2);
    CHECK_EQ(atomic_load(&deallocs), 4);
    commanded_finish(a, &x);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- the debug reference total ------------------------------------------------------------------ */

#ifdef FTRT_DEBUG
static void cmd_incref_plain(commanded *w)
{
    refs *r = w->arg;
    for (int i = 0; i < r->n; i++)
        ft_incref(r->obj);
}

static void cmd_decref_plain(commanded *w)
{
    refs *r = w->arg;
    for (int i = 0; i < r->n; i++)
        ft_decref(r->obj);
}
#endif

#define TOTAL_OBJS 4

/* References taken in a slot and dropped the ordinary way (and the reverse), merged, folded in by
 * stopping threads: once every object is freed, the total is back where it started. Per-thread
 * counts enter the total when a merge or a stopping thread adds them into their objects. */
/* An object with an id made immortal keeps its id; merges drop what threads counted in its slot
 * instead of adding it into a count nobody reads, and the id's bias never entered the total. */
TEST(immortalized_object_keeps_its_id_and_merges_leave_it_alone)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    int64_t start = ft_runtime_reftotal(rt);
    ft_object *obj = new_enabled(a);
    CHECK(obj != NULL);
    ft_uniqueid_incref(a, obj);
    ft_immortalize(obj);
    CHECK(ft_object_is_immortal(obj));
    ft_uniqueid_incref(a, obj);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(atomic_load(&obj->ob_ref_shared), 0); /* nothing added into the immortal object */
    CHECK(ft_object_is_immortal(obj));
    CHECK(ft_object_unique_id(obj) != 0);
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(rt), start); /* immortal: out of the total, bias and all */
#else
    (void)start;
#endif
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
    CHECK_EQ(atomic_load(&deallocs), 0);
}

static void set_refcount_of_a_counted_object(void *arg)
{
    (void)arg;
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    ft_object *obj = new_enabled(a);
    ft_set_refcount(obj, 3);
}

TEST(set_refcount_of_an_object_with_per_thread_counts_is_fatal)
{
    CHECK_DEATH(set_refcount_of_a_counted_object, NULL, "ft_set_refcount",
                "per-thread reference counts", "'uniqueid_obj'");
}

TEST(reftotal_returns_to_its_start)
{
#ifndef FTRT_DEBUG
    printf("     (skipped: ftrt keeps the reference total only in debug builds)\n");
#else
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    int64_t start = ft_runtime_reftotal(rt);
    ft_object *objs[TOTAL_OBJS];
    for (int i = 0; i < TOTAL_OBJS; i++) {
        objs[i] = new_enabled(a);
        CHECK(objs[i] != NULL);
    }
    commanded x, y;
    commanded_start(a, &x, rt);
    commanded_start(a, &y, rt);

    /* objs[0]: x takes references in its slot, y the ordinary way; each drops the other's kind. */
    refs_do(a, &x, cmd_incref, objs[0], 5);
    refs_do(a, &y, cmd_incref_plain, objs[0], 3);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    refs_do(a, &y, cmd_decref, objs[0], 3);
    refs_do(a, &x, cmd_decref_plain, objs[0], 5);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(objs[0]), 1);

    /* objs[1]: x stops holding two slot references; a drops them from its own slot. */
    refs_do(a, &x, cmd_incref, objs[1], 2);
    commanded_finish(a, &x);
    for (int i = 0; i < 2; i++)
        ft_uniqueid_decref(a, objs[1]);

    /* objs[3]: many references churned across merges; objs[2]: the allocation's reference is
     * dropped through y's slot, which y folds in as it stops. */
    for (int r = 0; r < 10; r++) {
        refs_do(a, &y, cmd_incref, objs[3], r + 1);
        CHECK_EQ(ft_uniqueid_merge(rt), 0);
        refs_do(a, &y, cmd_decref_plain, objs[3], r + 1);
    }
    refs_do(a, &y, cmd_decref, objs[2], 1);
    commanded_finish(a, &y);
    CHECK_EQ(ft_uniqueid_merge(rt), 1); /* objs[2] */

    ft_decref(objs[0]);
    ft_uniqueid_decref(a, objs[1]);
    ft_decref(objs[3]);
    CHECK_EQ(ft_uniqueid_merge(rt), 3);
    CHECK_EQ(atomic_load(&deallocs), TOTAL_OBJS);
    CHECK_EQ(ft_runtime_reftotal(rt) - start, 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_reftotal(rt) - start, 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
#endif
}

/* ---- concurrency: merges while threads count, start and stop ------------------------------------- */

#define RACE_THREADS 6
#define RACE_ROUNDS 2000
#define RACE_KEEP 50 /* references each thread still holds when it stops */

#define RACE_MIN_MERGES 3 /* threads stay until the main thread has merged this often */

typedef struct race_shared {
    ft_runtime *rt;
    ft_object *obj;
    _Atomic int finished;
    _Atomic uint64_t merges;
} race_shared;

/* Stay attached (passing safepoints, slots not yet folded in) until enough merges have run. */
static void await_merges(ft_thread *t, race_shared *s)
{
    AWAIT(t, atomic_load(&s->merges) >= RACE_MIN_MERGES);
    CHECK_THREAD(atomic_load(&s->merges) >= RACE_MIN_MERGES);
}

static void *race_main(void *arg)
{
    race_shared *s = arg;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    for (int r = 0; r < RACE_ROUNDS; r++) {
        ft_uniqueid_incref(t, s->obj);
        ft_uniqueid_incref(t, s->obj);
        ft_safepoint(t); /* a merge may run here, with this thread's slot at +2 */
        ft_uniqueid_decref(t, s->obj);
        if (r >= RACE_KEEP)
            ft_uniqueid_decref(t, s->obj);
        if (r % 64 == 0)
            sched_yield();
    }
    await_merges(t, s);
    ft_thread_stop(t); /* folds the last RACE_KEEP references in */
    atomic_fetch_add(&s->finished, 1);
    return NULL;
}

static void *race_release_main(void *arg)
{
    race_shared *s = arg;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    for (int r = 0; r < RACE_KEEP; r++) {
        ft_uniqueid_decref(t, s->obj);
        ft_safepoint(t);
    }
    await_merges(t, s);
    ft_thread_stop(t);
    atomic_fetch_add(&s->finished, 1);
    return NULL;
}

static void run_racers(ft_thread *a, race_shared *s, void *(*fn)(void *), intptr_t low,
                       intptr_t high)
{
    pthread_t threads[RACE_THREADS];
    atomic_store(&s->finished, 0);
    atomic_store(&s->merges, 0);
    for (int i = 0; i < RACE_THREADS; i++)
        CHECK(pthread_create(&threads[i], NULL, fn, s) == 0);
    /* Merge over and over meanwhile: the true count stays within what the threads may hold. */
    int64_t start = now_ns();
    while (atomic_load(&s->finished) < RACE_THREADS && now_ns() - start < WAIT_LIMIT_NS) {
        CHECK_EQ(ft_uniqueid_merge(s->rt), 0);
        intptr_t c = true_count(s->obj);
        if (c < low || c > high)
            fprintf(stderr, "count %ld outside [%ld, %ld]\n", (long)c, (long)low, (long)high);
        CHECK(c >= low && c <= high);
        atomic_fetch_add(&s->merges, 1);
        sched_yield();
    }
    join_detached(a, threads, RACE_THREADS);
    CHECK(atomic_load(&s->merges) >= RACE_MIN_MERGES);
}

TEST(merges_race_with_counting_threads)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    race_shared s = {.rt = rt, .obj = new_enabled(a)};
    CHECK(s.obj != NULL);
    run_racers(a, &s, race_main, 1, 1 + RACE_THREADS * (RACE_KEEP + 2));
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(s.obj), 1 + RACE_THREADS * RACE_KEEP);
    run_racers(a, &s, race_release_main, 1, 1 + RACE_THREADS * RACE_KEEP);
    CHECK_EQ(ft_uniqueid_merge(rt), 0);
    CHECK_EQ(true_count(s.obj), 1);
    CHECK_EQ(atomic_load(&deallocs), 0);
    ft_uniqueid_decref(a, s.obj);
    CHECK_EQ(ft_uniqueid_merge(rt), 1);
    CHECK_EQ(atomic_load(&deallocs), 1);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

int main(void)
{
    RUN(enable_refuses_bad_objects);
    RUN(enable_out_of_memory_leaves_the_object_unchanged);
    RUN(object_without_an_id_counts_normally);
    RUN(merge_gives_the_exact_count);
    RUN(freed_exactly_when_the_last_reference_goes);
    RUN(stopping_thread_merges_its_slots);
    RUN(recycled_id_has_no_stale_slots);
    RUN(thread_arrays_grow_with_the_ids);
    RUN(merges_race_with_counting_threads);
    RUN(immortalized_object_keeps_its_id_and_merges_leave_it_alone);
    RUN(set_refcount_of_an_object_with_per_thread_counts_is_fatal);
    RUN(reftotal_returns_to_its_start);
    RUN(merge_inside_the_callers_stop_merges_only);
    RUN(merge_core_hands_the_dead_back);
    return harness_done();
}
