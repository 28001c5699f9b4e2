/* tests/test_freelist.c: per-thread freelists of freed objects, by type.
 *
 * A type with freelist_max = K keeps up to K freed instances per thread. Caching is told apart from
 * an ordinary free with a second type of the same size and no freelist: the heap hands a freed block
 * to the next allocation of that size, whatever its type, while a cached block only comes back to an
 * allocation of its own type. The tests check reuse, the limit of K, a fresh header on reuse (and a
 * finalizer that runs again for the new object), that a cached object is dead to try-incref readers
 * and to the heap walk, that many types grow the per-thread table without losing cached objects, and
 * that a thread's freelists are emptied back into the heap when it stops. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>

#include "ftrt.h"
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------------------- */

#define OBJECT_SIZE 64
#define LIMIT 4

typedef struct item {
    ft_object ob;
    uint64_t payload[4];
} item;

_Static_assert(sizeof(item) == OBJECT_SIZE, "one size class for both types");

static const ft_type cached_type = {.name = "cached", .basic_size = OBJECT_SIZE, .freelist_max = LIMIT};
static const ft_type uncached_type = {.name = "uncached", .basic_size = OBJECT_SIZE};

static bool contains(ft_object *const *set, int n, const ft_object *o)
{
    for (int i = 0; i < n; i++)
        if (set[i] == o)
            return true;
    return false;
}

static void teardown(fixture f)
{
    ft_thread_stop(f.t);
    ft_heap_stats s = stats_of(f.rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.abandoned_heaps, 0); /* the freelists went back to the heap, which was then empty */
    CHECK_EQ(s.pages, 0);
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
#endif
    CHECK_EQ(ft_runtime_free(f.rt), FT_OK);
}

/* ---- reuse and the limit ------------------------------------------------------------------------- */

TEST(freed_object_comes_back_to_its_own_type_only)
{
    fixture f = fixture_setup();
    ft_object *x = ft_alloc(f.t, &cached_type);
    CHECK(x != NULL);
    ((item *)x)->payload[2] = 0xDEAD;
    ft_decref(x);
    CHECK_EQ(atomic_load(&x->ob_gc_bits), FT_GC_ON_FREELIST);

    ft_object *y = ft_alloc(f.t, &uncached_type); /* the heap does not have x */
    CHECK(y != NULL);
    CHECK(y != x);
    ft_object *again = ft_alloc(f.t, &cached_type);
    CHECK(again == x);

    /* A whole new object: fresh header, zeroed payload. */
    CHECK_EQ(atomic_load(&x->ob_tid), ft_os_thread_id());
    CHECK_EQ(atomic_load(&x->ob_ref_local), 1);
    CHECK_EQ(atomic_load(&x->ob_ref_shared), 0);
    CHECK_EQ(atomic_load(&x->ob_gc_bits), 0);
    CHECK_EQ(atomic_load(&x->ob_flags), 0);
    CHECK(x->ob_type == &cached_type);
    CHECK(ft_object_is_unique(x));
    for (int i = 0; i < 4; i++)
        CHECK_EQ(((item *)x)->payload[i], 0);
    ft_decref(again);
    ft_decref(y);
    teardown(f);
}

/* ft_alloc_uninit takes a cached object too: a fresh header (no longer marked freed), the payload as
 * the old object left it (a debug build fills it with FT_UNINIT_BYTE). */
TEST(uninit_allocation_takes_a_cached_object)
{
    fixture f = fixture_setup();
    ft_object *x = ft_alloc(f.t, &cached_type);
    CHECK(x != NULL);
    for (int i = 0; i < 4; i++)
        ((item *)x)->payload[i] = 0xDEAD0 + (uint64_t)i;
    ft_decref(x);
    CHECK_EQ(atomic_load(&x->ob_gc_bits), FT_GC_ON_FREELIST);

    ft_object *again = ft_alloc_uninit(f.t, &cached_type);
    CHECK(again == x);
    CHECK_EQ(atomic_load(&x->ob_tid), ft_os_thread_id());
    CHECK_EQ(atomic_load(&x->ob_gc_bits), 0);
    CHECK(x->ob_type == &cached_type);
    CHECK(ft_object_is_unique(x));
    for (int i = 0; i < 4; i++) {
#ifdef FTRT_DEBUG
        CHECK_EQ(((item *)x)->payload[i], 0x0101010101010101u * FT_UNINIT_BYTE);
#else
        CHECK_EQ(((item *)x)->payload[i], 0xDEAD0 + (uint64_t)i);
#endif
    }
    ft_decref(again);
    teardown(f);
}

TEST(only_freelist_max_objects_are_cached)
{
    fixture f = fixture_setup();
    enum { EXTRA = 6, N = LIMIT + EXTRA };
    ft_object *x[N], *y[N];
    for (int i = 0; i < N; i++) {
        x[i] = ft_alloc(f.t, &cached_type);
        CHECK(x[i] != NULL);
    }
    for (int i = 0; i < N; i++)
        ft_decref(x[i]); /* x[0..LIMIT) cached, the rest back to the heap */
    CHECK_EQ(stats_of(f.rt).live_blocks, 0); /* cached objects are not live */

    for (int i = 0; i < N; i++) {
        y[i] = ft_alloc(f.t, &uncached_type);
        CHECK(y[i] != NULL);
        CHECK(!contains(x, LIMIT, y[i]));
    }
    for (int i = LIMIT; i < N; i++)
        CHECK(contains(y, N, x[i])); /* the heap hands freed blocks out again at once */

    for (int i = LIMIT - 1; i >= 0; i--) { /* last cached, first reused */
        ft_object *again = ft_alloc(f.t, &cached_type);
        CHECK(again == x[i]);
    }
    ft_object *fresh = ft_alloc(f.t, &cached_type); /* the freelist is empty now */
    CHECK(!contains(x, N, fresh));
    CHECK_EQ(stats_of(f.rt).live_blocks, N + LIMIT + 1);

    ft_decref(fresh);
    for (int i = 0; i < LIMIT; i++)
        ft_decref(x[i]);
    for (int i = 0; i < N; i++)
        ft_decref(y[i]);
    teardown(f);
}

typedef struct var_item {
    ft_object ob;
    uint64_t n;
    uint64_t items[];
} var_item;

static const ft_type cached_var_type = {
    .name = "cached var", .basic_size = sizeof(var_item), .item_size = 8, .freelist_max = LIMIT};
static const ft_type uncached_var_type = {
    .name = "uncached var", .basic_size = sizeof(var_item), .item_size = 8};

TEST(larger_var_objects_are_not_cached)
{
    fixture f = fixture_setup();
    ft_object *v = ft_alloc_var(f.t, &cached_var_type, 100);
    CHECK(v != NULL);
    ft_decref(v);
    ft_object *w = ft_alloc_var(f.t, &uncached_var_type, 100); /* same size: gets the block back */
    CHECK(w == v);
    ft_decref(w);
    teardown(f);
}

/* ---- a recycled object is a new object ------------------------------------------------------------ */

static _Atomic int finalizes;

static void count_finalize(ft_object *o)
{
    (void)o;
    atomic_fetch_add(&finalizes, 1);
}

static const ft_type finalized_cached_type = {.name = "finalized cached",
                                              .basic_size = OBJECT_SIZE,
                                              .freelist_max = LIMIT,
                                              .finalize = count_finalize,
                                              .dealloc = count_dealloc};

TEST(recycled_object_is_finalized_again)
{
    fixture f = fixture_setup();
    atomic_store(&finalizes, 0);
    atomic_store(&counted_deallocs, 0);
    ft_object *o = ft_alloc(f.t, &finalized_cached_type);
    CHECK(o != NULL);
    ft_decref(o);
    CHECK_EQ(finalizes, 1);
    CHECK_EQ(counted_deallocs, 1);
    ft_object *again = ft_alloc(f.t, &finalized_cached_type);
    CHECK(again == o);
    CHECK(!(atomic_load(&o->ob_gc_bits) & FT_GC_FINALIZED));
    ft_decref(again);
    CHECK_EQ(finalizes, 2);
    CHECK_EQ(counted_deallocs, 2);
    teardown(f);
}

typedef struct try_args {
    ft_object *o;
    bool got;
} try_args;

static void try_incref_step(ft_thread *t, void *arg)
{
    (void)t;
    try_args *a = arg;
    a->got = ft_try_incref(a->o);
    if (a->got)
        ft_decref(a->o);
}

/* A reader holding a stale pointer to a cached object must not revive it. */
TEST(cached_object_is_dead_to_try_incref)
{
    fixture f = fixture_setup();
    ft_object *marked = ft_alloc(f.t, &cached_type);
    ft_object *plain = ft_alloc(f.t, &cached_type);
    CHECK(marked && plain);
    ft_object_enable_try_incref(marked);
    try_args a = {marked, false};
    on_other_thread(f.t, try_incref_step, &a);
    CHECK(a.got); /* alive and marked: readers may */
    ft_decref(marked);
    ft_decref(plain);
    on_other_thread(f.t, try_incref_step, &a);
    CHECK(!a.got);
    a.o = plain;
    on_other_thread(f.t, try_incref_step, &a);
    CHECK(!a.got);
    CHECK(!ft_try_incref(marked)); /* nor may the thread that cached them */
    CHECK(!ft_try_incref(plain));
    CHECK(!ft_object_is_owned(marked));
    CHECK_EQ(ft_refcount(marked), 0);
    teardown(f);
}

/* ---- the two freed marks ----------------------------------------------------------------------- */

/* What the bits of a block given back to the heap must be: FT_GC_HEAP_FREED in debug builds,
 * nothing in release builds; never FT_GC_ON_FREELIST. */
static void check_heap_freed_bits(ft_object *o)
{
#ifdef FTRT_DEBUG
    CHECK_EQ(atomic_load(&o->ob_gc_bits), FT_GC_HEAP_FREED);
#else
    CHECK_EQ(atomic_load(&o->ob_gc_bits), 0);
#endif
}

typedef struct stop_args {
    ft_object *keeper, *cached;
    uint8_t bits_while_cached;
} stop_args;

/* On a helper that then stops: one object cached, and a live one of the same size class that keeps
 * their page (the helper's heap is abandoned, not freed). */
static void cache_one_then_stop(ft_thread *t, void *arg)
{
    stop_args *a = arg;
    a->keeper = ft_alloc(t, &uncached_type);
    a->cached = ft_alloc(t, &cached_type);
    CHECK_THREAD(a->keeper && a->cached);
    ft_decref(a->cached);
    a->bits_while_cached = atomic_load(&a->cached->ob_gc_bits);
}

static void adopt_step(ft_thread *t, void *arg)
{
    (void)t;
    (void)arg;
}

/* object.h: FT_GC_ON_FREELIST means "cached on a freelist" and FT_GC_HEAP_FREED "given back to the
 * heap" (debug builds only), in every build: a block carries the one that is true of it, and loses
 * FT_GC_ON_FREELIST when its thread's stop empties the freelist into the heap. */
TEST(each_freed_mark_means_one_thing)
{
    fixture f = fixture_setup();
    ft_object *x[LIMIT + 1];
    for (int i = 0; i <= LIMIT; i++) {
        x[i] = ft_alloc(f.t, &cached_type);
        CHECK(x[i] != NULL);
    }
    for (int i = 0; i <= LIMIT; i++)
        ft_decref(x[i]); /* x[0..LIMIT) cached; x[LIMIT] finds the freelist full */
    for (int i = 0; i < LIMIT; i++)
        CHECK_EQ(atomic_load(&x[i]->ob_gc_bits), FT_GC_ON_FREELIST);
    check_heap_freed_bits(x[LIMIT]);

    stop_args a = {0};
    on_other_thread(f.t, cache_one_then_stop, &a);
    CHECK_EQ(a.bits_while_cached, FT_GC_ON_FREELIST);
    CHECK_EQ(stats_of(f.rt).abandoned_heaps, 1); /* the keeper holds the page */
    check_heap_freed_bits(a.cached);
    ft_decref(a.keeper); /* its owner has stopped: merged and freed here */
    on_other_thread(f.t, adopt_step, NULL); /* adopts the emptied heap, and frees it at its stop */
    teardown(f);
}

/* ---- the heap walk skips cached objects ----------------------------------------------------------- */

static const ft_type gc_cached_type = {
    .name = "gc cached", .basic_size = OBJECT_SIZE, .flags = FT_TYPE_GC, .freelist_max = LIMIT};

typedef struct seen {
    ft_object *blocks[16];
    int count;
} seen;

static bool record(void *block, size_t size, void *arg)
{
    (void)size;
    seen *s = arg;
    if (s->count < 16)
        s->blocks[s->count] = block;
    s->count++;
    return true;
}

TEST(cached_object_is_not_visited)
{
    fixture f = fixture_setup();
    ft_object *live = ft_alloc(f.t, &gc_cached_type);
    ft_object *cached = ft_alloc(f.t, &gc_cached_type);
    CHECK(live && cached);
    ft_decref(cached);
    seen s = {.count = 0};
    ft_stop_the_world(f.rt);
    ft_status st = ft_heap_visit(f.rt, FT_HEAP_GC, record, &s);
    ft_start_the_world(f.rt);
    CHECK_EQ(st, FT_OK);
    CHECK_EQ(s.count, 1);
    CHECK(s.blocks[0] == live);
    ft_decref(live);
    teardown(f);
}

/* ---- many types --------------------------------------------------------------------------------- */

enum { TYPES = 40, PER_TYPE = 2 };

TEST(many_types_keep_their_cached_objects)
{
    fixture f = fixture_setup();
    static ft_type types[TYPES];
    static char names[TYPES][24];
    for (int k = 0; k < TYPES; k++) {
        snprintf(names[k], sizeof names[k], "type %d", k);
        types[k] = (ft_type){.name = names[k], .basic_size = OBJECT_SIZE, .freelist_max = PER_TYPE};
    }
    ft_object *objs[TYPES][PER_TYPE];
    for (int k = 0; k < TYPES; k++)
        for (int i = 0; i < PER_TYPE; i++) {
            objs[k][i] = ft_alloc(f.t, &types[k]);
            CHECK(objs[k][i] != NULL);
        }
    for (int k = 0; k < TYPES; k++) /* the table grows while these are cached */
        for (int i = 0; i < PER_TYPE; i++)
            ft_decref(objs[k][i]);
    ft_object *others[TYPES * PER_TYPE];
    for (int j = 0; j < TYPES * PER_TYPE; j++) { /* none of the cached blocks is in the heap */
        others[j] = ft_alloc(f.t, &uncached_type);
        CHECK(others[j] != NULL);
        CHECK(!contains(&objs[0][0], TYPES * PER_TYPE, others[j]));
    }
    for (int k = 0; k < TYPES; k++)
        for (int i = PER_TYPE - 1; i >= 0; i--) {
            ft_object *again = ft_alloc(f.t, &types[k]);
            CHECK(again == objs[k][i]);
        }
    for (int k = 0; k < TYPES; k++)
        for (int i = 0; i < PER_TYPE; i++)
            ft_decref(objs[k][i]);
    for (int j = 0; j < TYPES * PER_TYPE; j++)
        ft_decref(others[j]);
    teardown(f);
}

/* ---- freelists per thread, and at thread stop ---------------------------------------------------- */

typedef struct cache_args {
    ft_runtime *rt;
    ft_object *mine[LIMIT];
    ft_object *foreign; /* allocated by the main thread, freed onto this thread's freelist */
    bool reused_foreign, reused_own, foreign_block_kept_owner;
    ft_thread *main_thread;
} cache_args;

static void cache_on_helper(ft_thread *t, void *arg)
{
    cache_args *c = arg;
    for (int i = 0; i < LIMIT; i++) {
        c->mine[i] = ft_alloc(t, &cached_type);
        CHECK_THREAD(c->mine[i] != NULL);
    }
    for (int i = 0; i < LIMIT - 1; i++)
        ft_decref(c->mine[i]);
    ft_decref(c->foreign); /* the last reference (merged): freed here, cached here */
    ft_object *a = ft_alloc(t, &cached_type);
    c->reused_foreign = a == c->foreign && ft_object_is_owned(a);
    c->foreign_block_kept_owner = ft_heap_block_owner(a) == c->main_thread;
    ft_object *b = ft_alloc(t, &cached_type);
    c->reused_own = b == c->mine[LIMIT - 2];
    ft_decref(a);
    ft_decref(b);
    ft_decref(c->mine[LIMIT - 1]);
    /* Stops with LIMIT objects cached, one of them from the main thread's heap. */
}

static void incref_step(ft_thread *t, void *o)
{
    (void)t;
    ft_incref(o);
}

TEST(freelists_are_per_thread_and_emptied_at_stop)
{
    fixture f = fixture_setup();
    cache_args c = {.rt = f.rt, .main_thread = f.t};
    c.foreign = ft_alloc(f.t, &cached_type);
    CHECK(c.foreign != NULL);
    on_other_thread(f.t, incref_step, c.foreign);
    ft_decref(c.foreign); /* merged; the helper below drops the last reference */

    /* The main thread caches LIMIT objects of its own: the helper's limit is separate. */
    ft_object *main_cached[LIMIT];
    for (int i = 0; i < LIMIT; i++)
        main_cached[i] = ft_alloc(f.t, &cached_type);
    for (int i = 0; i < LIMIT; i++)
        ft_decref(main_cached[i]);

    uint64_t remote_before = stats_of(f.rt).remote_frees;
    on_other_thread(f.t, cache_on_helper, &c);
    CHECK(c.reused_foreign);
    CHECK(c.foreign_block_kept_owner);
    CHECK(c.reused_own);
    ft_heap_stats s = stats_of(f.rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.abandoned_heaps, 0); /* emptied into its heap, the helper's heap was empty */
    CHECK_EQ(s.remote_frees - remote_before, 1); /* the foreign block went home */

    for (int i = LIMIT - 1; i >= 0; i--) /* the main thread's cache is untouched */
        CHECK(ft_alloc(f.t, &cached_type) == main_cached[i]);
    for (int i = 0; i < LIMIT; i++)
        ft_decref(main_cached[i]);
    teardown(f);
}

int main(void)
{
    RUN(freed_object_comes_back_to_its_own_type_only);
    RUN(uninit_allocation_takes_a_cached_object);
    RUN(only_freelist_max_objects_are_cached);
    RUN(larger_var_objects_are_not_cached);
    RUN(recycled_object_is_finalized_again);
    RUN(cached_object_is_dead_to_try_incref);
    RUN(each_freed_mark_means_one_thing);
    RUN(cached_object_is_not_visited);
    RUN(many_types_keep_their_cached_objects);
    RUN(freelists_are_per_thread_and_emptied_at_stop);
    return harness_done();
}
