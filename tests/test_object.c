/* tests/test_object.c: the object header and the biased reference counting state machine.
 *
 * Each test drives one object through the transitions of include/ftrt/object.h and checks the header
 * words after every step: a fresh object is owned by its creator (local 1, shared 0); another thread's
 * incref adds to the shared count; a non-owner's decref that finds the shared word at zero queues the
 * object to its owner, who merges it at a safepoint; an owner that drops local to zero while others
 * still count merges it; try-incref succeeds only where the rules promise it is safe; immortal objects
 * are never written (a static one sits on a read-only page); finalizers run once and may resurrect.
 * A dealloc callback counts deallocations, so "freed exactly once" and "not freed early" are checked
 * directly. Helper threads run one step each and are joined, so every step is ordered by the join. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>
#include <sys/mman.h>

#include "ftrt.h"
#include "test_util.h"
#include "thread/thread.h" /* FT_PENDING_MERGE */

/* ---- helpers ------------------------------------------------------------------------------------- */

#define TID(o) atomic_load_explicit(&(o)->ob_tid, memory_order_relaxed)
#define LOCAL(o) atomic_load_explicit(&(o)->ob_ref_local, memory_order_relaxed)
#define SHARED(o) atomic_load_explicit(&(o)->ob_ref_shared, memory_order_relaxed)
#define GC_BITS(o) atomic_load_explicit(&(o)->ob_gc_bits, memory_order_relaxed)
#define SHARED_WORD(count, state) ((intptr_t)(count) * 4 + (state))

typedef struct probe {
    ft_object ob;
    uint64_t payload[6];
} probe;

static _Atomic int deallocs;
static _Atomic uintptr_t dealloc_thread; /* ft_os_thread_id() of the last thread that deallocated */

static void probe_dealloc(ft_object *o)
{
    (void)o;
    atomic_fetch_add(&deallocs, 1);
    atomic_store(&dealloc_thread, ft_os_thread_id());
}

static const ft_type probe_type = {
    .name = "probe", .basic_size = sizeof(probe), .dealloc = probe_dealloc};

static uintptr_t pending_bits(ft_thread *t)
{
    return atomic_load_explicit(&((struct ft_thread_head *)t)->pending, memory_order_relaxed);
}

static fixture setup(void)
{
    atomic_store(&deallocs, 0);
    atomic_store(&dealloc_thread, 0);
    return fixture_setup();
}

/* Every object freed, and the debug reference total back at 0. */
static void teardown(fixture f)
{
    ft_heap_stats s;
    ft_heap_get_stats(f.rt, &s);
    CHECK_EQ(s.live_blocks, 0);
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
#endif
    fixture_teardown(f);
}

static ft_object *new_probe(ft_thread *t)
{
    ft_object *o = ft_alloc(t, &probe_type);
    CHECK(o != NULL);
    return o;
}

static void incref_step(ft_thread *t, void *o)
{
    (void)t;
    ft_incref(o);
}

static void decref_step(ft_thread *t, void *o)
{
    (void)t;
    ft_decref(o);
}

static void decref_twice_step(ft_thread *t, void *o)
{
    (void)t;
    ft_decref(o);
    ft_decref(o);
}

/* ---- a fresh object -------------------------------------------------------------------------------- */

TEST(fresh_object_header)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    CHECK_EQ(TID(o), ft_os_thread_id());
    CHECK_EQ(LOCAL(o), 1);
    CHECK_EQ(SHARED(o), 0);
    CHECK_EQ(atomic_load(&o->ob_flags), 0);
    CHECK_EQ(atomic_load(&o->ob_mutex.bits), 0);
    CHECK_EQ(GC_BITS(o), 0);
    CHECK(o->ob_type == &probe_type);
    CHECK_EQ((uintptr_t)o % 16, 0);
    CHECK(ft_usable_size(o) >= sizeof(probe));
    CHECK(ft_object_is_owned(o));
    CHECK(!ft_object_is_immortal(o));
    CHECK(ft_object_is_unique(o));
    CHECK_EQ(ft_refcount(o), 1);

    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    CHECK_EQ(dealloc_thread, ft_os_thread_id());
    /* The block is still mapped (the heap keeps the page): its count stays zero, so a stale
     * reader's try-incref fails, and debug builds mark it given back to the heap for their
     * use-after-free checks. It is not on a freelist, and says so in every build. */
    CHECK_EQ(LOCAL(o), 0);
    CHECK_EQ(SHARED(o), 0);
    CHECK(!ft_try_incref(o));
    CHECK(!(GC_BITS(o) & FT_GC_ON_FREELIST));
#ifdef FTRT_DEBUG
    CHECK_EQ(GC_BITS(o), FT_GC_HEAP_FREED);
#else
    CHECK(!(GC_BITS(o) & FT_GC_HEAP_FREED)); /* release builds never write it */
#endif
    teardown(f);
}

TEST(payload_zeroed_on_reuse)
{
    fixture f = setup();
    enum { N = 64 };
    probe *first[N];
    for (int i = 0; i < N; i++) {
        first[i] = (probe *)new_probe(f.t);
        memset(first[i]->payload, 0xA5, sizeof first[i]->payload);
    }
    for (int i = 0; i < N; i++)
        ft_decref(&first[i]->ob);
    CHECK_EQ(deallocs, N);
    int reused = 0;
    probe *second[N];
    for (int i = 0; i < N; i++) {
        second[i] = (probe *)new_probe(f.t);
        for (size_t w = 0; w < sizeof second[i]->payload / sizeof(uint64_t); w++)
            CHECK_EQ(second[i]->payload[w], 0);
        CHECK_EQ(GC_BITS(&second[i]->ob), 0);
        CHECK_EQ(LOCAL(&second[i]->ob), 1);
        for (int j = 0; j < N; j++)
            reused += second[i] == first[j];
    }
    CHECK(reused > 0); /* otherwise the zero check above proved nothing about dirty blocks */
    for (int i = 0; i < N; i++)
        ft_decref(&second[i]->ob);
    teardown(f);
}

/* Every basic size the allocation fast path serves (32 to 1024 bytes) and the first ones past it,
 * which take the slow path: a dirty block that comes back gets a fresh header and its payload as the
 * allocation promises it, up to the object's size, and nothing past the block's end changes (the
 * next block keeps its header and its bytes). The three blocks are checked to be neighbours in their
 * page, or the last check would prove nothing. payload_byte: what the payload of a reused block must
 * hold; DIRTY for "what the block held". */
enum { FIRST_SIZE = sizeof(ft_object), LAST_SIZE = 1024 + 48, DIRTY = 0xA5 };

static ft_type sized_types[LAST_SIZE - FIRST_SIZE + 1];

static bool bytes_are(const unsigned char *p, size_t n, unsigned char value)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != value)
            return false;
    return true;
}

static void reused_blocks_get(ft_object *(*alloc)(ft_thread *, const ft_type *),
                              unsigned char payload_byte)
{
    fixture f = setup();
    for (size_t size = FIRST_SIZE; size <= LAST_SIZE; size++) {
        ft_type *type = &sized_types[size - FIRST_SIZE];
        *type = (ft_type){.name = "sized", .basic_size = size};
        ft_object *o[3];
        for (int i = 0; i < 3; i++) {
            o[i] = alloc(f.t, type);
            CHECK(o[i] != NULL);
        }
        size_t usable = ft_usable_size(o[1]);
        CHECK((unsigned char *)o[2] == (unsigned char *)o[1] + usable);
        for (int i = 0; i < 3; i++)
            memset(o[i] + 1, DIRTY, usable - sizeof(ft_object));
        ft_decref(o[1]);
        ft_object *again = alloc(f.t, type); /* the block just freed: the page's list is LIFO */
        CHECK(again == o[1]);
        CHECK(again->ob_type == type);
        CHECK_EQ(LOCAL(again), 1);
        CHECK_EQ(SHARED(again), 0);
        CHECK_EQ(GC_BITS(again), 0);
        CHECK(bytes_are((unsigned char *)(again + 1), size - sizeof(ft_object), payload_byte));
        CHECK(o[2]->ob_type == type);
        CHECK_EQ(LOCAL(o[2]), 1);
        CHECK_EQ(TID(o[2]), ft_os_thread_id());
        CHECK(bytes_are((unsigned char *)(o[2] + 1), usable - sizeof(ft_object), DIRTY));
        CHECK(bytes_are((unsigned char *)(o[0] + 1), usable - sizeof(ft_object), DIRTY));
        for (int i = 2; i >= 0; i--) /* the next size of this class gets them in address order */
            ft_decref(o[i]);
    }
    teardown(f);
}

TEST(fast_path_zeroes_the_payload_and_no_more)
{
    reused_blocks_get(ft_alloc, 0);
}

/* ft_alloc_uninit leaves a reused block's payload as it was; a debug build fills it instead, so that
 * a constructor that leaves a field unwritten reads FT_UNINIT_BYTE. */
TEST(uninit_allocation_writes_the_header_and_leaves_the_payload)
{
#ifdef FTRT_DEBUG
    reused_blocks_get(ft_alloc_uninit, FT_UNINIT_BYTE);
#else
    reused_blocks_get(ft_alloc_uninit, DIRTY);
#endif
}

typedef struct var_obj {
    ft_object ob;
    uint64_t length;
    uint64_t items[];
} var_obj;

static const ft_type var_type = {
    .name = "var", .basic_size = sizeof(var_obj), .item_size = sizeof(uint64_t)};

/* Item counts for the var tests; 2000 items make a large block. */
static const size_t var_counts[] = {0, 1, 7, 100, 1000, 2000};

/* Leave ft_last_error() at something other than FT_EINVAL (an impossible size: FT_ENOMEM), so that
 * a check for FT_EINVAL after the next call sees what that call set. */
static void forget_last_error(ft_thread *t)
{
    CHECK(ft_alloc_var(t, &var_type, SIZE_MAX / 4) == NULL);
    CHECK_EQ(ft_last_error(), FT_ENOMEM);
}

TEST(var_objects_and_bad_types)
{
    fixture f = setup();
    for (size_t k = 0; k < sizeof var_counts / sizeof var_counts[0]; k++) {
        var_obj *v = (var_obj *)ft_alloc_var(f.t, &var_type, var_counts[k]);
        CHECK(v != NULL);
        CHECK(ft_usable_size(v) >= sizeof(var_obj) + var_counts[k] * sizeof(uint64_t));
        CHECK_EQ(v->length, 0);
        for (size_t i = 0; i < var_counts[k]; i++)
            CHECK_EQ(v->items[i], 0);
        memset(v->items, 0xFF, var_counts[k] * sizeof(uint64_t));
        CHECK_EQ(ft_refcount(&v->ob), 1);
        ft_decref(&v->ob);
        v = (var_obj *)ft_alloc_var(f.t, &var_type, var_counts[k]);
        CHECK(v != NULL);
        for (size_t i = 0; i < var_counts[k]; i++)
            CHECK_EQ(v->items[i], 0);
        ft_decref(&v->ob);
    }
    CHECK(ft_alloc_var(f.t, &var_type, SIZE_MAX / 4) == NULL);
    CHECK_EQ(ft_last_error(), FT_ENOMEM);

    static const ft_type too_small = {.name = "too small", .basic_size = sizeof(ft_object) - 1};
    ft_object *(*const fixed[])(ft_thread *, const ft_type *) = {ft_alloc, ft_alloc_uninit};
    ft_object *(*const var[])(ft_thread *, const ft_type *, size_t) = {ft_alloc_var,
                                                                       ft_alloc_var_uninit};
    for (int k = 0; k < 2; k++) {
        forget_last_error(f.t);
        CHECK(fixed[k](f.t, &too_small) == NULL);
        CHECK_EQ(ft_last_error(), FT_EINVAL);
        forget_last_error(f.t);
        CHECK(fixed[k](f.t, NULL) == NULL);
        CHECK_EQ(ft_last_error(), FT_EINVAL);
        forget_last_error(f.t);
        CHECK(var[k](f.t, &too_small, 3) == NULL);
        CHECK_EQ(ft_last_error(), FT_EINVAL);
        forget_last_error(f.t);
        CHECK(var[k](f.t, NULL, 3) == NULL);
        CHECK_EQ(ft_last_error(), FT_EINVAL);
    }
    teardown(f);
}

/* ft_alloc_var_uninit: the header, the room asked for, and the payload left as it was (filled in a
 * debug build), up to a large block. */
TEST(uninit_var_objects)
{
    fixture f = setup();
    for (size_t k = 0; k < sizeof var_counts / sizeof var_counts[0]; k++) {
        var_obj *v = (var_obj *)ft_alloc_var_uninit(f.t, &var_type, var_counts[k]);
        CHECK(v != NULL);
        CHECK(ft_usable_size(v) >= sizeof(var_obj) + var_counts[k] * sizeof(uint64_t));
        CHECK(v->ob.ob_type == &var_type);
        CHECK_EQ(ft_refcount(&v->ob), 1);
#ifdef FTRT_DEBUG
        CHECK(bytes_are((unsigned char *)(&v->ob + 1),
                        sizeof(var_obj) - sizeof(ft_object) + var_counts[k] * sizeof(uint64_t),
                        FT_UNINIT_BYTE));
#endif
        v->length = var_counts[k];
        for (size_t i = 0; i < var_counts[k]; i++)
            v->items[i] = i;
        ft_decref(&v->ob);
    }
    CHECK(ft_alloc_var_uninit(f.t, &var_type, SIZE_MAX / 4) == NULL);
    CHECK_EQ(ft_last_error(), FT_ENOMEM);
    teardown(f);
}

/* The allocations that leave the payload serve GC types too, fixed-size and var, on the fast path's
 * sizes, past them and from a freelist: their objects start untracked (the collector reads nothing
 * of them until the constructor tracks them), and a FT_TYPE_HAS_WEAKREFS type's list head is zeroed
 * all the same. */
typedef struct gc_uninit {
    ft_object ob;
    void *weaklist;
    uint64_t payload[4];
} gc_uninit;

TEST(uninit_allocation_serves_gc_types_untracked)
{
    fixture f = setup();
    static const ft_type gc_small = {.name = "gc small", .basic_size = 64, .flags = FT_TYPE_GC};
    static const ft_type gc_large = {.name = "gc large", .basic_size = 20000, .flags = FT_TYPE_GC};
    static const ft_type gc_cached = {
        .name = "gc cached", .basic_size = 64, .flags = FT_TYPE_GC, .freelist_max = 2};
    static const ft_type gc_weak = {.name = "gc weak",
                                    .basic_size = sizeof(gc_uninit),
                                    .flags = FT_TYPE_GC | FT_TYPE_HAS_WEAKREFS,
                                    .weaklist_offset = offsetof(gc_uninit, weaklist)};
    static const ft_type gc_var = {
        .name = "gc var", .basic_size = 48, .item_size = 8, .flags = FT_TYPE_GC};
    const ft_type *fixed[] = {&gc_small, &gc_large, &gc_cached, &gc_weak};
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) {
        for (int round = 0; round < 3; round++) { /* the later rounds reuse blocks (or the freelist) */
            ft_object *o = ft_alloc_uninit(f.t, fixed[k]);
            CHECK(o != NULL);
            CHECK(o->ob_type == fixed[k]);
            CHECK(!ft_gc_is_tracked(o));
            CHECK(!(GC_BITS(o) & FT_GC_TRACKED));
            if (fixed[k] == &gc_weak) /* a debug build fills the rest with FT_UNINIT_BYTE */
                CHECK(((gc_uninit *)o)->weaklist == NULL);
            ft_decref(o);
        }
    }
    for (int round = 0; round < 3; round++) {
        ft_object *o = ft_alloc_var_uninit(f.t, &gc_var, 4);
        CHECK(o != NULL);
        CHECK(!ft_gc_is_tracked(o));
        ft_decref(o);
    }
    CHECK_EQ(stats_of(f.rt).live_blocks, 0);
    teardown(f);
}

/* ---- owner and non-owner counting ---------------------------------------------------------------- */

TEST(owner_counts_locally)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_incref(o);
    ft_incref(o);
    CHECK_EQ(LOCAL(o), 3);
    CHECK_EQ(SHARED(o), 0);
    CHECK_EQ(ft_refcount(o), 3);
    CHECK(!ft_object_is_unique(o));
    ft_decref(o);
    ft_decref(o);
    CHECK(ft_object_is_unique(o));
    CHECK_EQ(deallocs, 0);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

typedef struct observed {
    ft_object *o;
    intptr_t shared, refcount;
    bool unique, owned;
} observed;

static void incref_and_observe(ft_thread *t, void *arg)
{
    (void)t;
    observed *ob = arg;
    ft_incref(ob->o);
    ob->shared = SHARED(ob->o);
    ob->refcount = ft_refcount(ob->o);
    ob->unique = ft_object_is_unique(ob->o);
    ob->owned = ft_object_is_owned(ob->o);
}

TEST(non_owner_incref_adds_to_shared)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    observed ob = {.o = o};
    on_other_thread(f.t, incref_and_observe, &ob);
    CHECK_EQ(ob.shared, SHARED_WORD(1, FT_SHARED_DEFAULT));
    CHECK_EQ(ob.refcount, 2);
    CHECK(!ob.unique);
    CHECK(!ob.owned);
    CHECK_EQ(TID(o), ft_os_thread_id()); /* still biased to its creator */
    CHECK_EQ(LOCAL(o), 1);
    CHECK(!ft_object_is_unique(o)); /* the shared word is not zero */

    on_other_thread(f.t, decref_step, o); /* 4 - 4: subtracted, not queued */
    CHECK_EQ(SHARED(o), 0);
    CHECK_EQ(pending_bits(f.t) & FT_PENDING_MERGE, 0);
    CHECK(ft_object_is_unique(o));
    CHECK_EQ(deallocs, 0);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

TEST(enable_try_incref_sets_maybe_weakref)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_object_enable_try_incref(o);
    CHECK_EQ(SHARED(o), FT_SHARED_MAYBE_WEAKREF);
    ft_object_enable_try_incref(o); /* idempotent */
    CHECK_EQ(SHARED(o), FT_SHARED_MAYBE_WEAKREF);
    CHECK_EQ(ft_refcount(o), 1);
    CHECK(!ft_object_is_unique(o)); /* unique needs the whole shared word zero */

    /* The owner writes a slot: a plain local incref, no mark needed (it already carries one here). */
    ft_object *ref = ft_new_ref_for_shared_slot(o);
    CHECK(ref == o);
    CHECK_EQ(LOCAL(o), 2);
    CHECK_EQ(SHARED(o), FT_SHARED_MAYBE_WEAKREF);
    ft_decref(o);

    /* Local drops to zero with the flag set: no shortcut, the owner merges and the CAS frees it. */
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

/* object.h: the writer's new reference is "marked MAYBE_WEAKREF", whoever the writer is: the owner
 * too, or readers of its slot could not take a reference while the shared count is zero. */
TEST(owner_new_ref_for_shared_slot_marks)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    CHECK(ft_new_ref_for_shared_slot(o) == o);
    CHECK_EQ(LOCAL(o), 2);
    CHECK_EQ(SHARED(o), FT_SHARED_MAYBE_WEAKREF);
    ft_decref(o);
    ft_decref(o); /* local zero, shared not: merged, and freed by the merge's CAS */
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

static void cmd_get_ref(commanded *w)
{
    ft_object *got = ft_get_ref(w->arg);
    w->result = (uintptr_t)got;
    ft_xdecref(got);
}

/* An owner stores its own object into a slot with ft_new_ref_for_shared_slot, and another thread's
 * ft_get_ref takes a reference to it. Before, it spun until the slot changed: the object carried no
 * promise and its shared count was zero. The owner waits for the reader up to the wait limit, then
 * empties the slot, which ends a reader still spinning (it returns NULL). */
TEST(get_ref_takes_an_object_its_owner_stored)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_object *_Atomic slot;
    atomic_init(&slot, NULL);
    atomic_store_explicit(&slot, ft_new_ref_for_shared_slot(o), memory_order_release);
    commanded reader;
    commanded_start(f.t, &reader, f.rt);
    int get = commanded_post(&reader, cmd_get_ref, (void *)&slot);
    AWAIT(f.t, atomic_load(&reader.done) == get);
    bool returned_while_stored = atomic_load(&reader.done) == get;
    ft_decref(atomic_exchange(&slot, NULL));
    commanded_wait(f.t, &reader, get);
    commanded_finish(f.t, &reader);
    CHECK(returned_while_stored);
    CHECK(reader.result == (uintptr_t)o);
    CHECK_EQ(deallocs, 0);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

static void new_ref_and_observe(ft_thread *t, void *arg)
{
    (void)t;
    observed *ob = arg;
    CHECK_THREAD(ft_new_ref_for_shared_slot(ob->o) == ob->o);
    ob->shared = SHARED(ob->o);
    ob->refcount = ft_refcount(ob->o);
}

static void enable_and_observe(ft_thread *t, void *arg)
{
    (void)t;
    observed *ob = arg;
    ft_object_enable_try_incref(ob->o);
    ob->shared = SHARED(ob->o);
}

/* object.h: a non-owner writer's new reference is "marked MAYBE_WEAKREF", and enabling try-incref is
 * "a CAS of the shared state DEFAULT -> MAYBE_WEAKREF": the state bits, whatever the shared count. */
TEST(non_owner_new_ref_for_shared_slot_marks)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    observed ob = {.o = o};
    on_other_thread(f.t, new_ref_and_observe, &ob);
    CHECK_EQ(ob.refcount, 2);
    CHECK_EQ(ob.shared, SHARED_WORD(1, FT_SHARED_MAYBE_WEAKREF));
    on_other_thread(f.t, decref_step, o);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

TEST(enable_try_incref_keeps_shared_count)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    on_other_thread(f.t, incref_step, o);
    CHECK_EQ(SHARED(o), SHARED_WORD(1, FT_SHARED_DEFAULT));
    observed ob = {.o = o};
    on_other_thread(f.t, enable_and_observe, &ob);
    CHECK_EQ(ob.shared, SHARED_WORD(1, FT_SHARED_MAYBE_WEAKREF));
    CHECK_EQ(ft_refcount(o), 2);
    on_other_thread(f.t, decref_step, o);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

TEST(enable_try_incref_leaves_queued_and_merged_alone)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_incref(o);
    on_other_thread(f.t, decref_step, o); /* queued */
    CHECK_EQ(SHARED(o), FT_SHARED_QUEUED);
    ft_object_enable_try_incref(o);
    CHECK_EQ(SHARED(o), FT_SHARED_QUEUED);
    ft_safepoint(f.t); /* merged, count 1 */
    CHECK_EQ(SHARED(o), SHARED_WORD(1, FT_SHARED_MERGED));
    ft_object_enable_try_incref(o);
    CHECK_EQ(SHARED(o), SHARED_WORD(1, FT_SHARED_MERGED));
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

/* ---- queueing and merging ------------------------------------------------------------------------ */

TEST(non_owner_decref_at_zero_queues_then_safepoint_merges)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_incref(o); /* the second reference is handed to another thread */
    on_other_thread(f.t, decref_step, o);
    CHECK_EQ(SHARED(o), FT_SHARED_QUEUED); /* nothing subtracted: the queue holds that reference */
    CHECK_EQ(LOCAL(o), 2);
    CHECK_EQ(TID(o), ft_os_thread_id());
    CHECK(pending_bits(f.t) & FT_PENDING_MERGE);
    CHECK_EQ(deallocs, 0);

    ft_safepoint(f.t);
    CHECK_EQ(pending_bits(f.t) & FT_PENDING_MERGE, 0);
    CHECK_EQ(TID(o), 0);
    CHECK_EQ(LOCAL(o), 0);
    CHECK_EQ(SHARED(o), SHARED_WORD(1, FT_SHARED_MERGED));
    CHECK_EQ(ft_refcount(o), 1);
    CHECK(!ft_object_is_owned(o));
    CHECK(!ft_object_is_unique(o));
    CHECK_EQ(deallocs, 0);

    ft_decref(o); /* a non-owner decref now: MERGED count 0 frees */
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

TEST(queued_object_with_zero_count_is_freed_by_the_merge)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t); /* its only reference is handed to another thread */
    on_other_thread(f.t, decref_step, o);
    CHECK_EQ(SHARED(o), FT_SHARED_QUEUED);
    CHECK(pending_bits(f.t) & FT_PENDING_MERGE);
    CHECK_EQ(deallocs, 0); /* not freed early: the owner's local count is not the other's to read */
    ft_brc_merge(f.t);
    CHECK_EQ(deallocs, 1);
    CHECK_EQ(dealloc_thread, ft_os_thread_id()); /* the owner frees it */
    CHECK_EQ(pending_bits(f.t) & FT_PENDING_MERGE, 0);
    teardown(f);
}

TEST(queued_object_may_go_negative)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_incref(o);
    ft_incref(o); /* local 3: two references handed to the other thread */
    on_other_thread(f.t, decref_twice_step, o);
    CHECK_EQ(SHARED(o), SHARED_WORD(-1, FT_SHARED_QUEUED));
    CHECK(SHARED(o) < 0);
    CHECK_EQ(ft_refcount(o), 2); /* 3 - 1: the queue still holds one */
    ft_safepoint(f.t);
    CHECK_EQ(SHARED(o), SHARED_WORD(1, FT_SHARED_MERGED));
    CHECK_EQ(deallocs, 0);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

TEST(owner_dropping_to_zero_with_shared_references_merges)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    on_other_thread(f.t, incref_step, o);
    ft_decref(o);
    CHECK_EQ(deallocs, 0);
    CHECK_EQ(TID(o), 0);
    CHECK_EQ(LOCAL(o), 0);
    CHECK_EQ(SHARED(o), SHARED_WORD(1, FT_SHARED_MERGED));
    CHECK_EQ(ft_refcount(o), 1);
    CHECK(!ft_object_is_owned(o));

    on_other_thread(f.t, decref_step, o); /* the last reference: freed there */
    CHECK_EQ(deallocs, 1);
    CHECK(dealloc_thread != ft_os_thread_id());
    teardown(f);
}

TEST(merged_object_counts_in_shared_everywhere)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    CHECK_EQ(ft_object_merge(o, 0), 1);
    CHECK_EQ(TID(o), 0);
    ft_incref(o); /* the former owner counts in shared too */
    CHECK_EQ(LOCAL(o), 0);
    CHECK_EQ(SHARED(o), SHARED_WORD(2, FT_SHARED_MERGED));
    on_other_thread(f.t, incref_step, o);
    CHECK_EQ(SHARED(o), SHARED_WORD(3, FT_SHARED_MERGED));
    on_other_thread(f.t, decref_step, o);
    ft_decref(o);
    CHECK_EQ(deallocs, 0);
    on_other_thread(f.t, decref_step, o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

/* ---- explicit merge, set-refcount, immortalize ----------------------------------------------------- */

TEST(explicit_merge_returns_the_count)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_incref(o);
    on_other_thread(f.t, incref_step, o); /* local 2, shared count 1 */
    CHECK_EQ(ft_object_merge(o, 1), 4);
    CHECK_EQ(TID(o), 0);
    CHECK_EQ(LOCAL(o), 0);
    CHECK_EQ(SHARED(o), SHARED_WORD(4, FT_SHARED_MERGED));
    CHECK_EQ(ft_refcount(o), 4);
    CHECK_EQ(ft_object_merge(o, -1), 3); /* merging a merged object only adds extra */
    CHECK_EQ(SHARED(o), SHARED_WORD(3, FT_SHARED_MERGED));
    ft_decref(o);
    ft_decref(o);
    CHECK_EQ(deallocs, 0);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

TEST(set_refcount_by_owner_keeps_bias_and_state)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_object_enable_try_incref(o);
    ft_set_refcount(o, 5);
    CHECK_EQ(TID(o), ft_os_thread_id());
    CHECK_EQ(LOCAL(o), 5);
    CHECK_EQ(SHARED(o), FT_SHARED_MAYBE_WEAKREF);
    CHECK_EQ(ft_refcount(o), 5);
    for (int i = 0; i < 4; i++)
        ft_decref(o);
    CHECK_EQ(deallocs, 0);
    CHECK(ft_object_is_owned(o));
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

typedef struct set_args {
    ft_object *o;
    size_t n;
} set_args;

static void set_refcount_step(ft_thread *t, void *arg)
{
    (void)t;
    set_args *a = arg;
    ft_set_refcount(a->o, a->n);
}

TEST(set_refcount_by_non_owner_merges)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    set_args a = {o, 3};
    on_other_thread(f.t, set_refcount_step, &a);
    CHECK_EQ(TID(o), 0);
    CHECK_EQ(LOCAL(o), 0);
    CHECK_EQ(SHARED(o), SHARED_WORD(3, FT_SHARED_MERGED));
    CHECK_EQ(ft_refcount(o), 3);
    ft_decref(o);
    ft_decref(o);
    CHECK_EQ(deallocs, 0);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

TEST(set_refcount_huge_makes_immortal)
{
    fixture f = setup();
    ft_object *below = new_probe(f.t);
    ft_set_refcount(below, (size_t)UINT32_MAX - 1); /* the largest mortal count */
    CHECK(!ft_object_is_immortal(below));
    CHECK_EQ(ft_refcount(below), (intptr_t)UINT32_MAX - 1);

    ft_object *mine = new_probe(f.t);
    ft_set_refcount(mine, UINT32_MAX);
    CHECK(ft_object_is_immortal(mine));
    CHECK_EQ(TID(mine), 0);
    CHECK_EQ(SHARED(mine), 0);
    CHECK_EQ(ft_refcount(mine), (intptr_t)UINT32_MAX);

    ft_object *theirs = new_probe(f.t);
    set_args a = {theirs, SIZE_MAX};
    on_other_thread(f.t, set_refcount_step, &a);
    CHECK(ft_object_is_immortal(theirs));
    CHECK_EQ(TID(theirs), 0);
    ft_decref(mine);
    ft_decref(theirs);
    on_other_thread(f.t, decref_step, theirs);
    CHECK_EQ(deallocs, 0);

    ft_set_refcount(below, 1);
    ft_decref(below);
    CHECK_EQ(deallocs, 1);
    /* The immortal two stay allocated for good; ft_runtime_free releases their memory. */
    fixture_teardown(f);
}

static void hammer_immortal(ft_thread *t, void *o)
{
    (void)t;
    for (int i = 0; i < 20000; i++) {
        ft_incref(o);
        ft_decref(o);
        ft_decref(o); /* more decrefs than increfs: immortal objects do not count */
        CHECK_THREAD(ft_try_incref(o));
    }
}

TEST(immortalized_heap_object_is_never_counted_or_freed)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_incref(o);
    on_other_thread(f.t, incref_step, o);
    ft_immortalize(o);
    CHECK(ft_object_is_immortal(o));
    CHECK_EQ(TID(o), 0);
    CHECK_EQ(LOCAL(o), FT_IMMORTAL_LOCAL);
    CHECK_EQ(SHARED(o), 0);
    CHECK(atomic_load(&o->ob_flags) & FT_OBJ_DEFERRED);
#ifdef FTRT_DEBUG
    int64_t total = ft_runtime_reftotal(f.rt);
#endif
    on_other_thread(f.t, hammer_immortal, o);
    hammer_immortal(f.t, o);
    CHECK_EQ(LOCAL(o), FT_IMMORTAL_LOCAL);
    CHECK_EQ(SHARED(o), 0);
    CHECK_EQ(TID(o), 0);
    CHECK_EQ(ft_refcount(o), (intptr_t)UINT32_MAX);
    CHECK_EQ(ft_object_merge(o, -1), (intptr_t)UINT32_MAX);
    ft_set_refcount(o, 0);
    CHECK(ft_object_is_immortal(o));
    CHECK_EQ(deallocs, 0);
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), total);
#endif
    fixture_teardown(f);
}

/* ---- static immortal objects on a read-only page ------------------------------------------------- */

static const ft_type static_type = {.name = "static", .basic_size = sizeof(ft_object)};

/* A static immortal object alone on a page that is then made read-only: any write faults. */
static ft_object *read_only_static_object(void)
{
    long page = sysconf(_SC_PAGESIZE);
    void *mem = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    ft_object init = FT_STATIC_OBJECT_INIT(&static_type);
    memcpy(mem, &init, sizeof init);
    CHECK_EQ(mprotect(mem, (size_t)page, PROT_READ), 0);
    return mem;
}

static void drop_read_only_page(ft_object *o)
{
    munmap(o, (size_t)sysconf(_SC_PAGESIZE));
}

typedef struct ro_args {
    ft_object *o;
    ft_object *_Atomic slot;
    pthread_barrier_t *start;
} ro_args;

static void use_static_object(ro_args *a)
{
    for (int i = 0; i < 50000; i++) {
        ft_incref(a->o);
        ft_xincref(a->o);
        ft_decref(a->o);
        ft_xdecref(a->o);
        CHECK_THREAD(ft_try_incref(a->o));
        ft_decref(a->o);
        CHECK_THREAD(ft_try_incref_compare(&a->slot, a->o));
        ft_decref(a->o);
        ft_object *got = ft_get_ref(&a->slot);
        CHECK_THREAD(got == a->o);
        ft_decref(got);
    }
    CHECK_THREAD(ft_refcount(a->o) == (intptr_t)UINT32_MAX);
    CHECK_THREAD(ft_object_merge(a->o, 5) == (intptr_t)UINT32_MAX);
    ft_set_refcount(a->o, 7);
    CHECK_THREAD(!ft_object_is_unique(a->o));
    CHECK_THREAD(!ft_object_is_owned(a->o));
}

static void *static_user(void *arg)
{
    ro_args *a = arg;
    pthread_barrier_wait(a->start);
    use_static_object(a);
    return NULL;
}

static void attached_static_user(ft_thread *t, void *arg)
{
    ro_args *a = arg;
    barrier_detached(t, a->start);
    for (int round = 0; round < 4; round++) {
        use_static_object(a);
        ft_safepoint(t);
    }
}

typedef struct attached_job {
    ft_runtime *rt;
    ro_args *args;
} attached_job;

static void *attached_static_thread(void *arg)
{
    attached_job *j = arg;
    ft_thread *t = ft_thread_start(j->rt);
    CHECK_THREAD(t != NULL);
    if (!t) {
        pthread_barrier_wait(j->args->start); /* let the others go on */
        return NULL;
    }
    attached_static_user(t, j->args);
    ft_thread_stop(t);
    return NULL;
}

TEST(static_immortal_on_read_only_page)
{
    fixture f = setup();
    ft_object *o = read_only_static_object();
    CHECK(ft_object_is_immortal(o));
    CHECK_EQ(ft_refcount(o), (intptr_t)UINT32_MAX);
    CHECK_EQ(atomic_load(&o->ob_flags), FT_OBJ_STATIC | FT_OBJ_DEFERRED);
    CHECK_EQ(GC_BITS(o), 0);
#ifdef FTRT_DEBUG
    int64_t total = ft_runtime_reftotal(f.rt);
#endif
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 3);
    ro_args a = {.o = o, .start = &start};
    atomic_store(&a.slot, o);
    attached_job job = {f.rt, &a};
    pthread_t th[3];
    ft_detach(f.t);
    CHECK_EQ(pthread_create(&th[0], NULL, attached_static_thread, &job), 0);
    CHECK_EQ(pthread_create(&th[1], NULL, attached_static_thread, &job), 0);
    CHECK_EQ(pthread_create(&th[2], NULL, static_user, &a), 0); /* not attached anywhere */
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    ft_attach(f.t);
    pthread_barrier_destroy(&start);
    CHECK_THREADS_OK();
    ft_object copy = FT_STATIC_OBJECT_INIT(&static_type);
    CHECK_EQ(memcmp(o, &copy, sizeof copy), 0);
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), total);
#endif
    drop_read_only_page(o);
    teardown(f);
}

/* Run fn in a forked child; true if it returned normally (no fault, no abort). */
static bool child_survives(void (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        fprintf(stderr, "child died: status %#x (signal %d)\n", status,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void publish_static(void *arg)
{
    ft_object *o = arg;
    ft_object *ref = ft_new_ref_for_shared_slot(o); /* a non-owner writer: must not mark an immortal */
    ft_decref(ref);
}

static void enable_static(void *arg)
{
    ft_object_enable_try_incref(arg);
}

static void immortalize_static(void *arg)
{
    ft_immortalize(arg); /* already immortal: nothing to do */
}

/* object.h: immortal objects "are never written" and "can sit in read-only memory". The calls that
 * store a slot or promise try-incref must leave them alone too. Each runs in a child, so a write
 * shows up as that child's SIGSEGV rather than the end of this test binary. */
TEST(static_immortal_is_not_written_by_slot_publication)
{
    fixture f = setup();
    ft_object *o = read_only_static_object();
    bool published = child_survives(publish_static, o);
    bool enabled = child_survives(enable_static, o);
    bool immortalized = child_survives(immortalize_static, o);
    CHECK(published);
    CHECK(enabled);
    CHECK(immortalized);
    drop_read_only_page(o);
    teardown(f);
}

/* ---- try-incref ------------------------------------------------------------------------------------ */

typedef struct try_args {
    ft_object *o;
    ft_object *_Atomic *slot;
    bool result;
    intptr_t shared_after;
    ft_object *got;
} try_args;

static void try_incref_step(ft_thread *t, void *arg)
{
    (void)t;
    try_args *a = arg;
    a->result = ft_try_incref(a->o);
    a->shared_after = SHARED(a->o);
    if (a->result)
        ft_decref(a->o);
}

TEST(try_incref_rules)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    try_args a = {.o = o};

    /* The owner may always take a reference. */
    CHECK(ft_try_incref(o));
    CHECK_EQ(LOCAL(o), 2);
    ft_decref(o);

    /* Shared word 0, nobody promised readers anything: a non-owner must fail, whatever local is. */
    on_other_thread(f.t, try_incref_step, &a);
    CHECK(!a.result);
    CHECK_EQ(a.shared_after, 0);
    CHECK_EQ(SHARED(o), 0);

    /* With the promise, a non-owner succeeds. */
    ft_object_enable_try_incref(o);
    on_other_thread(f.t, try_incref_step, &a);
    CHECK(a.result);
    CHECK_EQ(a.shared_after, SHARED_WORD(1, FT_SHARED_MAYBE_WEAKREF));
    CHECK_EQ(SHARED(o), FT_SHARED_MAYBE_WEAKREF); /* its decref undid it */

    /* QUEUED, count 0 but the queue holds a reference: the object is alive. */
    ft_incref(o);
    on_other_thread(f.t, decref_step, o);
    CHECK_EQ(SHARED(o), FT_SHARED_QUEUED);
    on_other_thread(f.t, try_incref_step, &a);
    CHECK(a.result);
    CHECK_EQ(a.shared_after, SHARED_WORD(1, FT_SHARED_QUEUED));

    /* MERGED with a count. */
    ft_safepoint(f.t);
    CHECK_EQ(SHARED(o), SHARED_WORD(1, FT_SHARED_MERGED));
    on_other_thread(f.t, try_incref_step, &a);
    CHECK(a.result);
    CHECK_EQ(a.shared_after, SHARED_WORD(2, FT_SHARED_MERGED));
    CHECK(ft_try_incref(o)); /* the former owner, now a non-owner */
    CHECK_EQ(SHARED(o), SHARED_WORD(2, FT_SHARED_MERGED));
    ft_decref(o);
    CHECK_EQ(deallocs, 0);
    ft_decref(o);
    CHECK_EQ(deallocs, 1);
    teardown(f);
}

static void try_compare_step(ft_thread *t, void *arg)
{
    (void)t;
    try_args *a = arg;
    a->result = ft_try_incref_compare(a->slot, a->o);
    a->shared_after = SHARED(a->o);
    if (a->result)
        ft_decref(a->o);
}

static void get_ref_step(ft_thread *t, void *arg)
{
    (void)t;
    try_args *a = arg;
    a->got = ft_get_ref(a->slot);
    if (a->got) {
        a->shared_after = SHARED(a->got);
        ft_decref(a->got);
    }
}

TEST(try_incref_compare_and_get_ref)
{
    fixture f = setup();
    ft_object *o = new_probe(f.t);
    ft_object *other = new_probe(f.t);
    ft_object_enable_try_incref(o);
    ft_object *_Atomic slot = NULL;
    try_args a = {.o = o, .slot = &slot};

    /* Empty slot. */
    on_other_thread(f.t, get_ref_step, &a);
    CHECK(a.got == NULL);
    CHECK(ft_get_ref(&slot) == NULL);

    /* The slot holds another object: the reference taken is given back. */
    atomic_store(&slot, other);
    on_other_thread(f.t, try_compare_step, &a);
    CHECK(!a.result);
    CHECK_EQ(SHARED(o), FT_SHARED_MAYBE_WEAKREF);
    CHECK(!ft_try_incref_compare(&slot, o)); /* the owner's variant gives its local one back */
    CHECK_EQ(LOCAL(o), 1);

    /* The slot holds o. */
    atomic_store(&slot, ft_new_ref_for_shared_slot(o));
    CHECK_EQ(LOCAL(o), 2);
    on_other_thread(f.t, try_compare_step, &a);
    CHECK(a.result);
    CHECK_EQ(a.shared_after, SHARED_WORD(1, FT_SHARED_MAYBE_WEAKREF));
    on_other_thread(f.t, get_ref_step, &a);
    CHECK(a.got == o);
    CHECK_EQ(a.shared_after, SHARED_WORD(1, FT_SHARED_MAYBE_WEAKREF));
    ft_object *mine = ft_get_ref(&slot);
    CHECK(mine == o);
    CHECK_EQ(LOCAL(o), 3);
    ft_decref(mine);

    ft_decref(atomic_exchange(&slot, NULL));
    ft_decref(o);
    ft_decref(other);
    CHECK_EQ(deallocs, 2);
    teardown(f);
}

/* ---- what a successful try-incref sees ---------------------------------------------------------- */

/* A reader holds a stale pointer: it loaded the address of an object that is then freed and its
 * block reused for a new object, whose payload the owner writes. The reader has no ordering with any
 * of that but what the header's counts give it, and it tries to take a reference until it
 * succeeds. Success must make the new object's contents visible: whatever made the object
 * try-increfable (a promise, a non-owner's incref, a merge by ft_set_refcount, immortality) came
 * after its construction, and a successful try-incref synchronises with it. Otherwise the reader's
 * plain read of the payload is a data race, which ThreadSanitizer reports (halting the test); other
 * builds check the value it read. */
#define PAYLOAD_MARK UINT64_C(0x5EED5EED5EED5EED)

/* The reader's command (arg: the stale pointer): try until a reference is taken or the limit
 * passes; result: the payload word it then read, or 0 if it never succeeded. */
static void cmd_try_incref_until_it_works(commanded *w)
{
    ft_object *o = w->arg;
    bool got = false;
    for (int64_t start = now_ns(); !got && now_ns() - start < WAIT_LIMIT_NS;)
        if (!(got = ft_try_incref(o)))
            sched_yield();
    w->result = got ? ((probe *)o)->payload[0] : 0;
    if (got)
        ft_decref(o);
}

static void cmd_incref(commanded *w)
{
    ft_incref(w->arg);
}

static void cmd_decref(commanded *w)
{
    ft_decref(w->arg);
}

static void cmd_set_refcount_2(commanded *w)
{
    ft_set_refcount(w->arg, 2); /* the owner's reference and one for the helper: merged */
}

/* How the owner's new object becomes try-increfable (publish), and how the references that leaves
 * are dropped once the reader is done (release; NULL for an immortal object). */
typedef struct publication {
    void (*publish)(fixture f, commanded *helper, ft_object *o);
    void (*release)(fixture f, commanded *helper, ft_object *o);
} publication;

static void reader_of_a_reused_block(publication how)
{
    fixture f = setup();
    ft_object *keeper = new_probe(f.t); /* keeps the page: the freed block comes back at once */
    ft_object *old = new_probe(f.t);
    commanded reader, helper;
    commanded_start(f.t, &reader, f.rt);
    commanded_start(f.t, &helper, f.rt);
    /* Posted before the new object exists: the command's hand-over orders nothing after it. */
    int tries = commanded_post(&reader, cmd_try_incref_until_it_works, old);

    ft_decref(old);
    ft_object *o = new_probe(f.t);
    CHECK(o == old);
    ((probe *)o)->payload[0] = PAYLOAD_MARK;
    how.publish(f, &helper, o);
    commanded_wait(f.t, &reader, tries);
    CHECK(reader.result == PAYLOAD_MARK);

    if (how.release)
        how.release(f, &helper, o);
    commanded_finish(f.t, &reader);
    commanded_finish(f.t, &helper);
    ft_decref(keeper);
    if (how.release) {
        CHECK_EQ(deallocs, 3);
        teardown(f);
        return;
    }
    CHECK_EQ(stats_of(f.rt).live_blocks, 1); /* the immortal one */
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
#endif
    fixture_teardown(f);
}

static void promise(fixture f, commanded *helper, ft_object *o)
{
    (void)f;
    (void)helper;
    ft_object_enable_try_incref(o);
}

static void drop_owners_reference(fixture f, commanded *helper, ft_object *o)
{
    (void)f;
    (void)helper;
    ft_decref(o);
}

TEST(try_incref_success_sees_a_promised_object)
{
    reader_of_a_reused_block((publication){promise, drop_owners_reference});
}

static void non_owner_incref(fixture f, commanded *helper, ft_object *o)
{
    commanded_do(f.t, helper, cmd_incref, o);
}

static void drop_both_references(fixture f, commanded *helper, ft_object *o)
{
    commanded_do(f.t, helper, cmd_decref, o);
    ft_decref(o);
}

TEST(try_incref_success_sees_an_object_a_non_owner_counts)
{
    reader_of_a_reused_block((publication){non_owner_incref, drop_both_references});
}

static void non_owner_set_refcount(fixture f, commanded *helper, ft_object *o)
{
    commanded_do(f.t, helper, cmd_set_refcount_2, o);
}

TEST(try_incref_success_sees_an_object_merged_by_set_refcount)
{
    reader_of_a_reused_block((publication){non_owner_set_refcount, drop_both_references});
}

static void immortalize_it(fixture f, commanded *helper, ft_object *o)
{
    (void)f;
    (void)helper;
    ft_immortalize(o);
}

TEST(try_incref_success_sees_an_immortalized_object)
{
    reader_of_a_reused_block((publication){immortalize_it, NULL});
}

/* ---- finalizers and resurrection ---------------------------------------------------------------- */

static _Atomic int finalizes;
static _Atomic bool resurrect;
static ft_object *_Atomic resurrected;

static void resurrecting_finalize(ft_object *o)
{
    atomic_fetch_add(&finalizes, 1);
    CHECK_THREAD(ft_object_is_owned(o)); /* resurrect_begin made this thread the owner */
    CHECK_THREAD(ft_refcount(o) == 1);
    if (atomic_load(&resurrect)) {
        ft_incref(o);
        atomic_store(&resurrected, o);
    }
}

/* A GC type: only GC objects carry the FINALIZED bit that makes their finalizer run once (as in
 * CPython, a finalizer of another type runs each time the count reaches zero). */
static const ft_type finalized_type = {.name = "finalized",
                                       .basic_size = sizeof(probe),
                                       .flags = FT_TYPE_GC,
                                       .finalize = resurrecting_finalize,
                                       .dealloc = probe_dealloc};
static const ft_type finalized_plain_type = {.name = "finalized plain",
                                             .basic_size = sizeof(probe),
                                             .finalize = resurrecting_finalize,
                                             .dealloc = probe_dealloc};

static void reset_finalizer(bool resurrect_it)
{
    atomic_store(&finalizes, 0);
    atomic_store(&resurrect, resurrect_it);
    atomic_store(&resurrected, NULL);
}

TEST(finalize_runs_once_before_dealloc)
{
    fixture f = setup();
    reset_finalizer(false);
    ft_object *o = ft_alloc(f.t, &finalized_type);
    CHECK(o != NULL);
    ft_decref(o);
    CHECK_EQ(finalizes, 1);
    CHECK_EQ(deallocs, 1);
    CHECK_THREADS_OK();
    teardown(f);
}

TEST(finalize_resurrects_on_the_owner)
{
    fixture f = setup();
    reset_finalizer(true);
    ft_object *o = ft_alloc(f.t, &finalized_type);
    CHECK(o != NULL);
    ft_decref(o);
    CHECK_EQ(finalizes, 1);
    CHECK_EQ(deallocs, 0);
    CHECK(atomic_load(&resurrected) == o);
    CHECK(GC_BITS(o) & FT_GC_FINALIZED);
    CHECK(!(GC_BITS(o) & (FT_GC_ON_FREELIST | FT_GC_HEAP_FREED)));
    CHECK_EQ(ft_refcount(o), 1);
    CHECK_EQ(TID(o), 0); /* the resurrected object was merged */

    atomic_store(&resurrect, true); /* would resurrect again if finalize ran twice */
    ft_decref(atomic_exchange(&resurrected, NULL));
    CHECK_EQ(finalizes, 1);
    CHECK_EQ(deallocs, 1);
    CHECK_THREADS_OK();
    teardown(f);
}

TEST(finalize_resurrects_on_a_non_owner)
{
    fixture f = setup();
    reset_finalizer(true);
    ft_object *o = ft_alloc(f.t, &finalized_type);
    CHECK(o != NULL);
    on_other_thread(f.t, incref_step, o);
    ft_decref(o); /* merged; the other thread holds the last reference */
    CHECK_EQ(finalizes, 0);
    on_other_thread(f.t, decref_step, o); /* finalize runs there and resurrects */
    CHECK_EQ(finalizes, 1);
    CHECK_EQ(deallocs, 0);
    CHECK(atomic_load(&resurrected) == o);
    CHECK_EQ(TID(o), 0);
    CHECK_EQ(SHARED(o), SHARED_WORD(1, FT_SHARED_MERGED));
    ft_decref(atomic_exchange(&resurrected, NULL));
    CHECK_EQ(finalizes, 1);
    CHECK_EQ(deallocs, 1);
    CHECK_EQ(dealloc_thread, ft_os_thread_id());
    CHECK_THREADS_OK();
    teardown(f);
}

/* CPython: only GC objects carry the finalized mark; another type's finalizer runs every time its
 * count reaches zero, resurrections included. */
TEST(finalize_of_a_non_gc_type_runs_at_every_zero)
{
    fixture f = setup();
    reset_finalizer(true);
    ft_object *o = ft_alloc(f.t, &finalized_plain_type);
    CHECK(o != NULL);
    ft_decref(o);
    CHECK_EQ(finalizes, 1);
    CHECK(atomic_load(&resurrected) == o);
    atomic_store(&resurrect, false);
    ft_decref(atomic_exchange(&resurrected, NULL));
    CHECK_EQ(finalizes, 2);
    CHECK_EQ(deallocs, 1);
    CHECK_THREADS_OK();
    teardown(f);
}

static _Atomic int direct_checks;

static void dealloc_with_resurrect_calls(ft_object *o)
{
    ft_resurrect_begin(o);
    if (ft_object_is_owned(o) && LOCAL(o) == 1 && SHARED(o) == 0 && ft_refcount(o) == 1)
        atomic_fetch_add(&direct_checks, 1);
    if (ft_resurrect_end(o) && ft_refcount(o) == 0)
        atomic_fetch_add(&direct_checks, 1);
    probe_dealloc(o);
}

static const ft_type direct_type = {
    .name = "direct", .basic_size = sizeof(probe), .dealloc = dealloc_with_resurrect_calls};

TEST(resurrect_begin_end_without_resurrection_is_dead)
{
    fixture f = setup();
    atomic_store(&direct_checks, 0);
    ft_object *o = ft_alloc(f.t, &direct_type);
    CHECK(o != NULL);
    on_other_thread(f.t, incref_step, o);
    ft_decref(o);
    on_other_thread(f.t, decref_step, o); /* dealloc on a non-owner of a merged object */
    CHECK_EQ(direct_checks, 2);
    o = ft_alloc(f.t, &direct_type);
    CHECK(o != NULL);
    ft_decref(o); /* dealloc on the owner */
    CHECK_EQ(direct_checks, 4);
    CHECK_EQ(deallocs, 2);
    teardown(f);
}

/* ---- header bits ----------------------------------------------------------------------------------- */

static void immortalize_step(ft_thread *t, void *o)
{
    (void)t;
    ft_immortalize(o);
}

/* object.h: ob_flags takes atomic read-modify-writes from any thread; ob_gc_bits only its one writer
 * at a time. A non-owner that makes an object immortal sets FT_OBJ_DEFERRED in ob_flags and leaves
 * ob_gc_bits (here FT_GC_FINALIZED, set by the finalizer's thread) as they were. */
TEST(immortalize_by_a_non_owner_writes_flags_not_gc_bits)
{
    fixture f = setup();
    reset_finalizer(true);
    ft_object *o = ft_alloc(f.t, &finalized_type);
    CHECK(o != NULL);
    ft_decref(o); /* finalized and resurrected: the finalizer stored a reference */
    CHECK(atomic_load(&resurrected) == o);
    /* Resurrected by its finalizer, a GC object stays tracked, in generation 0. */
    CHECK_EQ(GC_BITS(o), FT_GC_FINALIZED | FT_GC_TRACKED);
    CHECK_EQ(atomic_load(&o->ob_flags), 0);
    on_other_thread(f.t, immortalize_step, o);
    CHECK(ft_object_is_immortal(o));
    CHECK_EQ(atomic_load(&o->ob_flags), FT_OBJ_DEFERRED);
    CHECK_EQ(GC_BITS(o), FT_GC_FINALIZED | FT_GC_TRACKED);
    ft_decref(atomic_exchange(&resurrected, NULL));
    CHECK_EQ(deallocs, 0);
    CHECK_THREADS_OK();
    fixture_teardown(f);
}

/* ---- the debug reference total ------------------------------------------------------------------- */

#ifdef FTRT_DEBUG
static void alloc_and_hand_over(ft_thread *t, void *arg)
{
    *(ft_object **)arg = ft_alloc(t, &probe_type);
}
#endif

TEST(reference_total)
{
    fixture f = setup();
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
    ft_object *o = new_probe(f.t);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 1);
    ft_incref(o);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 2);
    on_other_thread(f.t, incref_step, o); /* counted on a thread that then stops */
    CHECK_EQ(ft_runtime_reftotal(f.rt), 3);
    CHECK(ft_try_incref(o));
    CHECK_EQ(ft_runtime_reftotal(f.rt), 4);
    ft_decref(o);
    ft_decref(o);
    on_other_thread(f.t, decref_step, o);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 1);
    ft_decref(o);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);

    ft_object *theirs = NULL;
    on_other_thread(f.t, alloc_and_hand_over, &theirs);
    CHECK(theirs != NULL);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 1);
    ft_decref(theirs);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
    CHECK_EQ(deallocs, 2);
#endif
    teardown(f);
}

/* The total is the sum of the counts of the runtime's live mortal objects, so it is back at 0 once
 * they are all freed, whatever set their counts: ft_set_refcount replaces a count, ft_immortalize
 * takes one out of the sum for good (an immortal object is never counted again), including the
 * reference a merge queue holds and the one a finalizer runs under. */
#ifdef FTRT_DEBUG
static void immortalize_self(ft_object *o)
{
    ft_immortalize(o);
}

static const ft_type self_immortalizing_type = {
    .name = "self-immortalizing", .basic_size = sizeof(probe), .finalize = immortalize_self};
#endif

TEST(reference_total_after_set_refcount_and_immortalize)
{
    fixture f = setup();
#ifdef FTRT_DEBUG
    ft_object *one = new_probe(f.t);
    ft_immortalize(one);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);

    ft_object *three = new_probe(f.t); /* two local references and a shared one */
    ft_incref(three);
    on_other_thread(f.t, incref_step, three);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 3);
    ft_immortalize(three);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);

    ft_object *huge = new_probe(f.t);
    ft_set_refcount(huge, UINT32_MAX);
    CHECK(ft_object_is_immortal(huge));
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);

    ft_object *queued = new_probe(f.t); /* its reference goes to another thread, which drops it */
    on_other_thread(f.t, decref_step, queued);
    CHECK_EQ(SHARED(queued), FT_SHARED_QUEUED); /* the owner's queue holds the only reference */
    ft_immortalize(queued);
    ft_safepoint(f.t); /* the drain finds it immortal and leaves it */
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);

    ft_object *finalized = ft_alloc(f.t, &self_immortalizing_type);
    CHECK(finalized != NULL);
    ft_decref(finalized); /* its finalizer makes it immortal */
    CHECK(ft_object_is_immortal(finalized));
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);

    ft_object *mortal = new_probe(f.t);
    ft_set_refcount(mortal, 4);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 4);
    set_args a = {mortal, 2};
    on_other_thread(f.t, set_refcount_step, &a); /* merged, count 2 */
    CHECK_EQ(ft_runtime_reftotal(f.rt), 2);
    ft_decref(mortal);
    ft_decref(mortal);
    CHECK_EQ(deallocs, 1);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
#endif
    fixture_teardown(f); /* the immortal objects stay allocated until here */
}

int main(void)
{
    RUN(fresh_object_header);
    RUN(payload_zeroed_on_reuse);
    RUN(fast_path_zeroes_the_payload_and_no_more);
    RUN(uninit_allocation_writes_the_header_and_leaves_the_payload);
    RUN(var_objects_and_bad_types);
    RUN(uninit_var_objects);
    RUN(uninit_allocation_serves_gc_types_untracked);
    RUN(owner_counts_locally);
    RUN(non_owner_incref_adds_to_shared);
    RUN(enable_try_incref_sets_maybe_weakref);
    RUN(owner_new_ref_for_shared_slot_marks);
    RUN(get_ref_takes_an_object_its_owner_stored);
    RUN(non_owner_new_ref_for_shared_slot_marks);
    RUN(enable_try_incref_keeps_shared_count);
    RUN(enable_try_incref_leaves_queued_and_merged_alone);
    RUN(non_owner_decref_at_zero_queues_then_safepoint_merges);
    RUN(queued_object_with_zero_count_is_freed_by_the_merge);
    RUN(queued_object_may_go_negative);
    RUN(owner_dropping_to_zero_with_shared_references_merges);
    RUN(merged_object_counts_in_shared_everywhere);
    RUN(explicit_merge_returns_the_count);
    RUN(set_refcount_by_owner_keeps_bias_and_state);
    RUN(set_refcount_by_non_owner_merges);
    RUN(set_refcount_huge_makes_immortal);
    RUN(immortalized_heap_object_is_never_counted_or_freed);
    RUN(static_immortal_on_read_only_page);
    RUN(static_immortal_is_not_written_by_slot_publication);
    RUN(try_incref_rules);
    RUN(try_incref_compare_and_get_ref);
    RUN(try_incref_success_sees_a_promised_object);
    RUN(try_incref_success_sees_an_object_a_non_owner_counts);
    RUN(try_incref_success_sees_an_object_merged_by_set_refcount);
    RUN(try_incref_success_sees_an_immortalized_object);
    RUN(finalize_runs_once_before_dealloc);
    RUN(finalize_resurrects_on_the_owner);
    RUN(finalize_resurrects_on_a_non_owner);
    RUN(resurrect_begin_end_without_resurrection_is_dead);
    RUN(immortalize_by_a_non_owner_writes_flags_not_gc_bits);
    RUN(finalize_of_a_non_gc_type_runs_at_every_zero);
    RUN(reference_total);
    RUN(reference_total_after_set_refcount_and_immortalize);
    return harness_done();
}
