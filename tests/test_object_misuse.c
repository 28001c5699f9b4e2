/* tests/test_object_misuse.c: misuse that must be fatal, and allocation failures that must not hurt.
 *
 * Death tests: each misuse runs in a forked child, which must abort with a message naming the object
 * (its address, as %p prints it) and its type. The parent prepares the runtime and the object before
 * forking, so it knows the address; the child inherits them, with the same OS thread id.
 *
 * Allocation failures: ft_debug_fail_allocation(rt, n) makes the nth allocation site from now on fail
 * once. Each scenario runs for n = 0, 1, 2, ... until it succeeds without the failure having been
 * injected (so every allocation site it reaches has failed once). After each failure the test checks
 * the reported error and that nothing leaked or broke: the heap's live block count, the debug
 * reference total, that every object was freed exactly once, that the runtime still works, and that
 * ft_runtime_free succeeds (leaks of malloc'd memory are left to LeakSanitizer in the ASan build). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "ftrt.h"
#include "test_util.h"
#include "internal/types.h" /* ft_runtime.fail_countdown: whether an armed failure was used */

/* ---- helpers ------------------------------------------------------------------------------------- */

typedef struct victim {
    ft_object ob;
    uint64_t payload[2];
} victim;

static const ft_type victim_type = {
    .name = "victim", .basic_size = sizeof(victim), .dealloc = count_dealloc};

/* The text ft_fatal prints for p. */
typedef struct address {
    char text[32];
} address;

static address address_of(const void *p)
{
    address a;
    snprintf(a.text, sizeof a.text, "%p", p);
    return a;
}

/* A runtime with the calling thread attached and one object it owns: the state a death test's
 * child starts from. */
typedef struct scene {
    ft_runtime *rt;
    ft_thread *t;
    ft_object *o;
} scene;

static scene make_scene(const ft_type *type)
{
    scene s = {ft_runtime_new(NULL), NULL, NULL};
    CHECK(s.rt != NULL);
    s.t = ft_thread_start(s.rt);
    CHECK(s.t != NULL);
    s.o = ft_alloc(s.t, type);
    CHECK(s.o != NULL);
    return s;
}

/* The parent's copy is untouched by the child: drop it normally. */
static void end_scene(scene s)
{
    ft_decref(s.o);
    CHECK_EQ(stats_of(s.rt).live_blocks, 0);
    ft_thread_stop(s.t);
    CHECK_EQ(ft_runtime_free(s.rt), FT_OK);
}

/* ---- death tests ------------------------------------------------------------------------------- */

static void alloc_while_detached(void *arg)
{
    scene *s = arg;
    ft_detach(s->t);
    ft_alloc(s->t, &victim_type);
}

TEST(alloc_from_a_detached_thread_is_fatal)
{
    scene s = make_scene(&victim_type);
    address t = address_of(s.t);
    CHECK_DEATH(alloc_while_detached, &s, "ft_alloc", "not attached", t.text, "victim");
    end_scene(s);
}

/* No finalize, dealloc or freelist: its owner's drop to zero takes the shortest free path. */
static const ft_type plain_victim_type = {.name = "plain victim", .basic_size = sizeof(victim)};

static void drop_last_while_detached(void *arg)
{
    scene *s = arg;
    ft_detach(s->t);
    ft_decref(s->o);
}

/* In every build: freeing touches the heap, which a stop-the-world walk may be reading. */
TEST(owners_drop_to_zero_while_detached_is_fatal)
{
    scene s = make_scene(&plain_victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(drop_last_while_detached, &s, "not attached", o.text, "plain victim");
    end_scene(s);
}

/* ---- an extra decref, in every build ------------------------------------------------------------ */

/* The owner's path never meets a freed object: every free overwrites ob_tid with a list link, which is
 * no thread's id. So an extra decref takes a non-owner's path, where it is caught. Debug builds name
 * it a use after free at once (a freed block is marked); release builds catch it on the way: a cached
 * block's mark when the decref queues it, a count that its owner's merge leaves below zero, a merged
 * count that goes below zero. */
#ifdef FTRT_DEBUG
#define EXTRA_DECREF_SAYS "already freed (use after free)"
#else
#define EXTRA_DECREF_SAYS "reference count went below zero: an extra decref, or a use after free"
#endif
#define BELOW_ZERO_SAYS "reference count went below zero: an extra decref, or a use after free"

static void decref_twice_after_free(void *arg)
{
    scene *s = arg;
    ft_decref(s->o); /* the last reference: freed (to the heap, or cached on a freelist) */
    ft_decref(s->o);
}

static const ft_type cached_victim_type = {
    .name = "cached victim", .basic_size = sizeof(victim), .freelist_max = 8};

TEST(extra_decref_by_the_owner_is_fatal)
{
    const ft_type *types[] = {&plain_victim_type, &victim_type, &cached_victim_type};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        scene s = make_scene(types[i]);
        address o = address_of(s.o);
        CHECK_DEATH(decref_twice_after_free, &s, o.text, types[i]->name, EXTRA_DECREF_SAYS);
        end_scene(s);
    }
}

typedef struct thread_job {
    ft_runtime *rt;
    ft_object *o;
    int increfs, decrefs;
} thread_job;

static void *attached_counting(void *arg)
{
    thread_job *j = arg;
    ft_thread *t = ft_thread_start(j->rt);
    for (int i = 0; i < j->increfs; i++)
        ft_incref(j->o);
    for (int i = 0; i < j->decrefs; i++)
        ft_decref(j->o);
    ft_thread_stop(t);
    return NULL;
}

/* Count s->o on a new thread attached to s's runtime, the caller detached meanwhile. */
static void count_on_another_thread(scene *s, int increfs, int decrefs)
{
    thread_job j = {s->rt, s->o, increfs, decrefs};
    pthread_t th;
    ft_detach(s->t);
    pthread_create(&th, NULL, attached_counting, &j);
    pthread_join(th, NULL);
    ft_attach(s->t);
}

/* The owner drops its reference while another thread holds one (merged), that thread's drop frees
 * the object, and the former owner decrefs it once more. */
static void decref_after_a_merged_free(void *arg)
{
    scene *s = arg;
    count_on_another_thread(s, 1, 0);
    ft_decref(s->o);                  /* merged, count 1 */
    count_on_another_thread(s, 0, 1); /* freed there */
    ft_decref(s->o);
}

TEST(extra_decref_of_a_freed_merged_object_is_fatal)
{
    scene s = make_scene(&victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(decref_after_a_merged_free, &s, o.text, "victim", EXTRA_DECREF_SAYS);
    end_scene(s);
}

/* Another thread drops one reference too many while the object waits in its owner's queue; the
 * owner's merge then finds the count below zero. */
static void merge_below_zero(void *arg)
{
    scene *s = arg;
    ft_incref(s->o);                  /* two references, both handed to the other thread */
    count_on_another_thread(s, 0, 3); /* queued, then below zero */
    ft_safepoint(s->t);               /* the merge: count -1 */
}

TEST(merge_below_zero_is_fatal)
{
    scene s = make_scene(&victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(merge_below_zero, &s, o.text, "victim", BELOW_ZERO_SAYS);
    end_scene(s);
}

#ifdef FTRT_DEBUG

static void incref_after_free(void *arg)
{
    scene *s = arg;
    ft_decref(s->o);
    ft_incref(s->o);
}

TEST(use_after_free_is_fatal)
{
    scene s = make_scene(&victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(decref_twice_after_free, &s, "ft_decref", o.text, "victim", "already freed");
    CHECK_DEATH(incref_after_free, &s, "ft_incref", o.text, "victim", "already freed");
    end_scene(s);
}

TEST(use_after_free_of_a_plain_object_is_fatal)
{
    scene s = make_scene(&plain_victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(decref_twice_after_free, &s, "ft_decref", o.text, "plain victim", "already freed");
    CHECK_DEATH(incref_after_free, &s, "ft_incref", o.text, "plain victim", "already freed");
    end_scene(s);
}

TEST(use_after_free_of_a_cached_object_is_fatal)
{
    scene s = make_scene(&cached_victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(decref_twice_after_free, &s, "ft_decref", o.text, "cached victim", "already freed");
    end_scene(s);
}

static void owner_underflow(void *arg)
{
    scene *s = arg;
    ft_set_refcount(s->o, 0); /* the owner's count is now 0 and the object not freed */
    ft_decref(s->o);
}

TEST(owner_refcount_underflow_is_fatal)
{
    scene s = make_scene(&victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(owner_underflow, &s, "ft_decref", o.text, "victim", BELOW_ZERO_SAYS, "local 0");
    end_scene(s);
}

static void incref_in_dealloc(ft_object *o)
{
    ft_incref(o);
}

static const ft_type clinging_type = {
    .name = "clinging", .basic_size = sizeof(victim), .dealloc = incref_in_dealloc};

static void drop_clinging(void *arg)
{
    scene *s = arg;
    ft_decref(s->o);
}

TEST(dealloc_that_keeps_a_reference_is_fatal)
{
    scene s = make_scene(&clinging_type);
    address o = address_of(s.o);
    /* Caught at the incref itself, which names the object and says why. */
    CHECK_DEATH(drop_clinging, &s, "ft_incref", o.text, "clinging", "count zero",
                "being deallocated");
    /* The parent frees it without the clinging dealloc ever running. */
    ft_immortalize(s.o);
    ft_thread_stop(s.t);
    CHECK_EQ(ft_runtime_free(s.rt), FT_OK);
}

static void decref_while_detached(void *arg)
{
    scene *s = arg;
    ft_incref(s->o);
    ft_detach(s->t);
    ft_decref(s->o);
}

static void incref_while_detached(void *arg)
{
    scene *s = arg;
    ft_detach(s->t);
    ft_incref(s->o);
}

static void *unattached_decref(void *arg)
{
    ft_decref(arg);
    return NULL;
}

static void decref_on_unattached_thread(void *arg)
{
    scene *s = arg;
    pthread_t th;
    ft_incref(s->o);
    pthread_create(&th, NULL, unattached_decref, s->o);
    pthread_join(th, NULL);
}

TEST(counting_on_an_unattached_thread_is_fatal)
{
    scene s = make_scene(&victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(decref_while_detached, &s, "ft_decref", o.text, "victim", "not attached");
    CHECK_DEATH(incref_while_detached, &s, "ft_incref", o.text, "victim", "not attached");
    CHECK_DEATH(decref_on_unattached_thread, &s, "ft_decref", o.text, "victim", "not attached");
    end_scene(s);
}

/* The calling thread leaves the scene's runtime for a thread state in a new one. */
static void move_to_another_runtime(scene *s)
{
    ft_detach(s->t);
    ft_thread_start(ft_runtime_new(NULL));
}

static void incref_from_another_runtime(void *arg)
{
    scene *s = arg;
    move_to_another_runtime(s);
    ft_incref(s->o);
}

static void decref_from_another_runtime(void *arg)
{
    scene *s = arg;
    ft_incref(s->o);
    move_to_another_runtime(s);
    ft_decref(s->o);
}

TEST(counting_from_a_thread_of_another_runtime_is_fatal)
{
    scene s = make_scene(&victim_type);
    address o = address_of(s.o);
    CHECK_DEATH(incref_from_another_runtime, &s, "ft_incref", o.text, "victim", "belongs to runtime");
    CHECK_DEATH(decref_from_another_runtime, &s, "ft_decref", o.text, "victim", "belongs to runtime");
    end_scene(s);
}
#endif /* FTRT_DEBUG */

/* ---- allocation failures ------------------------------------------------------------------------- */

#define MAX_FAILURE_SITES 64

/* Whether the armed failure was used up (it then reads -1) rather than still waiting. */
static bool failure_was_injected(ft_runtime *rt)
{
    return atomic_load_explicit(&rt->fail_countdown, memory_order_relaxed) < 0;
}

static int64_t reftotal(ft_runtime *rt)
{
#ifdef FTRT_DEBUG
    return ft_runtime_reftotal(rt);
#else
    (void)rt;
    return 0;
#endif
}

TEST(thread_start_survives_allocation_failures)
{
    ft_runtime *rt = new_runtime(NULL);
    int failures = 0;
    for (int64_t n = 0;; n++) {
        CHECK(n < MAX_FAILURE_SITES);
        ft_debug_fail_allocation(rt, n);
        ft_thread *t = ft_thread_start(rt);
        bool injected = failure_was_injected(rt);
        ft_debug_fail_allocation(rt, -1);
        ft_runtime_stats rs;
        ft_runtime_get_stats(rt, &rs);
        if (!t) {
            CHECK(injected);
            CHECK_EQ(ft_last_error(), FT_ENOMEM);
            CHECK_EQ(rs.threads, 0);
            CHECK(ft_thread_current() == NULL);
            failures++;
            continue;
        }
        CHECK_EQ(rs.threads, 1);
        CHECK(ft_thread_current() == t);
        CHECK_EQ(ft_thread_index(t), 0); /* the failed attempts gave their index back */
        ft_object *o = ft_alloc(t, &victim_type); /* the new thread works */
        CHECK(o != NULL);
        ft_decref(o);
        ft_thread_stop(t);
        if (!injected)
            break;
    }
    CHECK(failures > 0);
    CHECK_EQ(stats_of(rt).live_blocks, 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

typedef enum alloc_kind {
    SMALL_OBJECT,
    LARGE_OBJECT,
    VAR_OBJECT,
    LARGE_VAR_OBJECT,
    UNINIT_OBJECT,
    LARGE_UNINIT_VAR_OBJECT,
    RAW,
    LARGE_RAW
} alloc_kind;

static const ft_type large_type = {.name = "large", .basic_size = 50000, .dealloc = count_dealloc};
static const ft_type var_type = {
    .name = "var", .basic_size = sizeof(victim), .item_size = 16, .dealloc = count_dealloc};

static void *allocate(ft_thread *t, alloc_kind kind)
{
    switch (kind) {
    case SMALL_OBJECT:
        return ft_alloc(t, &victim_type);
    case LARGE_OBJECT:
        return ft_alloc(t, &large_type);
    case VAR_OBJECT:
        return ft_alloc_var(t, &var_type, 20);
    case LARGE_VAR_OBJECT:
        return ft_alloc_var(t, &var_type, 2000);
    case UNINIT_OBJECT:
        return ft_alloc_uninit(t, &victim_type);
    case LARGE_UNINIT_VAR_OBJECT:
        return ft_alloc_var_uninit(t, &var_type, 2000);
    case RAW:
        return ft_malloc(t, 200);
    case LARGE_RAW:
        return ft_malloc(t, 100000);
    }
    return NULL;
}

static void release(ft_thread *t, alloc_kind kind, void *p)
{
    if (kind == RAW || kind == LARGE_RAW)
        ft_free(t, p);
    else
        ft_decref(p);
}

/* Each attempt starts from a fresh runtime, so that it needs a new segment or mapping and reaches
 * every allocation site on the way. */
static void allocation_survives_failures(alloc_kind kind)
{
    int failures = 0;
    for (int64_t n = 0;; n++) {
        CHECK(n < MAX_FAILURE_SITES);
        atomic_store(&counted_deallocs, 0);
        ft_runtime *rt = ft_runtime_new(NULL);
        ft_thread *t = ft_thread_start(rt);
        CHECK(t != NULL);
        ft_debug_fail_allocation(rt, n);
        void *p = allocate(t, kind);
        bool injected = failure_was_injected(rt);
        ft_debug_fail_allocation(rt, -1);
        if (!p) {
            CHECK(injected);
            CHECK_EQ(ft_last_error(), FT_ENOMEM);
            CHECK_EQ(stats_of(rt).live_blocks, 0);
            CHECK_EQ(reftotal(rt), 0);
            failures++;
            p = allocate(t, kind); /* without the failure, the same call works */
            CHECK(p != NULL);
        }
        CHECK_EQ(stats_of(rt).live_blocks, 1);
        release(t, kind, p);
        CHECK_EQ(counted_deallocs, kind == RAW || kind == LARGE_RAW ? 0 : 1);
        CHECK_EQ(stats_of(rt).live_blocks, 0);
        CHECK_EQ(reftotal(rt), 0);
        ft_thread_stop(t);
        CHECK_EQ(ft_runtime_free(rt), FT_OK);
        if (!injected)
            break;
    }
    CHECK(failures > 0);
}

TEST(alloc_survives_allocation_failures)
{
    allocation_survives_failures(SMALL_OBJECT);
    allocation_survives_failures(LARGE_OBJECT);
    allocation_survives_failures(VAR_OBJECT);
    allocation_survives_failures(LARGE_VAR_OBJECT);
    allocation_survives_failures(UNINIT_OBJECT);
    allocation_survives_failures(LARGE_UNINIT_VAR_OBJECT);
    allocation_survives_failures(RAW);
    allocation_survives_failures(LARGE_RAW);
}

#ifndef FTRT_DEBUG
static const ft_type freelist_victim_type = {.name = "freelist victim",
                                             .basic_size = sizeof(victim),
                                             .freelist_max = 4,
                                             .dealloc = count_dealloc};
#endif

/* On a warm heap, an object allocation takes the fast path (a free block on the page the heap's
 * direct slot names). Debug builds make every object allocation a failure site, that one included;
 * release builds keep the test hook off the fast path, so an armed failure waits for the next
 * allocation that leaves it: a type with a freelist, or a page that has run out of blocks. */
static void fast_path_and_the_failure_hook(alloc_kind kind)
{
    fixture f = fixture_setup();
    release(f.t, kind, allocate(f.t, kind)); /* the class has a page with free blocks now */
    atomic_store(&counted_deallocs, 0);
    uint64_t live = stats_of(f.rt).live_blocks;
    ft_debug_fail_allocation(f.rt, 0);
    void *p = allocate(f.t, kind);
    bool injected = failure_was_injected(f.rt);
#ifdef FTRT_DEBUG
    CHECK(p == NULL);
    CHECK(injected);
    CHECK_EQ(ft_last_error(), FT_ENOMEM);
    CHECK_EQ(stats_of(f.rt).live_blocks, live);
    CHECK_EQ(reftotal(f.rt), 0);
    p = allocate(f.t, kind);
    CHECK(p != NULL);
#else
    CHECK(p != NULL);
    CHECK(!injected);
    ft_object *cached = ft_alloc(f.t, &freelist_victim_type);
    CHECK(cached == NULL);
    CHECK(failure_was_injected(f.rt));
    CHECK_EQ(ft_last_error(), FT_ENOMEM);
    CHECK_EQ(stats_of(f.rt).live_blocks, live + 1);
    /* Armed again: the fast path serves the rest of the page, then the slow path fails once. */
    enum { MAX_OBJECTS = 4096 };
    static void *held[MAX_OBJECTS];
    int n = 0, failed_at = -1;
    ft_debug_fail_allocation(f.rt, 0);
    for (; n < MAX_OBJECTS && failed_at < 0; n++) {
        held[n] = allocate(f.t, kind);
        if (!held[n]) {
            CHECK_EQ(ft_last_error(), FT_ENOMEM);
            failed_at = n;
        }
    }
    CHECK(failed_at > 0);          /* some came from the fast path first */
    CHECK(failure_was_injected(f.rt));
    CHECK_EQ(stats_of(f.rt).live_blocks, live + 1 + (uint64_t)failed_at);
    held[failed_at] = allocate(f.t, kind); /* the same call works without the failure */
    CHECK(held[failed_at] != NULL);
    for (int i = 0; i < n; i++)
        release(f.t, kind, held[i]);
#endif
    ft_debug_fail_allocation(f.rt, -1);
    release(f.t, kind, p);
    CHECK_EQ(stats_of(f.rt).live_blocks, live);
    CHECK_EQ(reftotal(f.rt), 0);
    fixture_teardown(f);
}

TEST(fast_path_allocation_and_the_failure_hook)
{
    fast_path_and_the_failure_hook(SMALL_OBJECT);
    fast_path_and_the_failure_hook(VAR_OBJECT);
    fast_path_and_the_failure_hook(UNINIT_OBJECT);
}

/* A cross-thread drop that must queue the object to its running owner, with the queue needing a new
 * chunk. When that allocation fails, the dropping thread stops the world and merges the object itself
 * (here: frees it, the count being zero); otherwise the owner frees it at a safepoint. */
typedef struct drop_job {
    ft_runtime *rt;
    ft_object *o;
    int64_t n;
    pthread_barrier_t armed;
    _Atomic bool dropped;
    bool injected, freed_at_drop;
} drop_job;

static void *drop_with_failure(void *arg)
{
    drop_job *j = arg;
    ft_thread *t = ft_thread_start(j->rt);
    CHECK_THREAD(t != NULL);
    barrier_detached(t, &j->armed); /* started before the failure is armed */
    ft_debug_fail_allocation(j->rt, j->n);
    ft_decref(j->o);
    j->injected = failure_was_injected(j->rt);
    ft_debug_fail_allocation(j->rt, -1);
    j->freed_at_drop = atomic_load(&counted_deallocs) == 1;
    atomic_store(&j->dropped, true);
    ft_thread_stop(t);
    return NULL;
}

TEST(cross_thread_drop_survives_a_queue_allocation_failure)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    int failures = 0;
    for (int64_t n = 0;; n++) {
        CHECK(n < MAX_FAILURE_SITES);
        atomic_store(&counted_deallocs, 0);
        drop_job j = {.rt = rt, .n = n};
        j.o = ft_alloc(t, &victim_type); /* its only reference goes to the other thread */
        CHECK(j.o != NULL);
        pthread_barrier_init(&j.armed, NULL, 2);
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, drop_with_failure, &j), 0);
        ft_detach(t);
        pthread_barrier_wait(&j.armed);
        ft_attach(t);
        /* Keep running (and reaching safepoints) while the other thread drops: its stop-the-world,
         * if it needs one, waits for this thread. */
        int64_t start = (int64_t)time(NULL);
        while (!atomic_load(&j.dropped) && (int64_t)time(NULL) - start < 60) {
            ft_safepoint(t);
            sched_yield();
        }
        ft_detach(t);
        pthread_join(th, NULL);
        ft_attach(t);
        pthread_barrier_destroy(&j.armed);
        CHECK_THREADS_OK();
        CHECK(atomic_load(&j.dropped));
        if (j.injected) {
            CHECK(j.freed_at_drop); /* merged and freed by the dropping thread */
            failures++;
        }
        ft_safepoint(t); /* otherwise it waited in this thread's queue */
        CHECK_EQ(counted_deallocs, 1);
        CHECK_EQ(stats_of(rt).live_blocks, 0);
        CHECK_EQ(reftotal(rt), 0);
        if (!j.injected)
            break;
    }
    CHECK(failures > 0);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* The same drop done by a thread that has stopped the world itself (as a collector would): the
 * owner is suspended, so a failed queue allocation is merged on the spot. */
typedef struct suspended_owner {
    ft_runtime *rt;
    ft_object *o;
    pthread_barrier_t allocated;
    _Atomic bool release;
} suspended_owner;

static void *owner_that_waits(void *arg)
{
    suspended_owner *s = arg;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    s->o = ft_alloc(t, &victim_type);
    ft_detach(t);
    pthread_barrier_wait(&s->allocated);
    ft_attach(t);
    int64_t start = (int64_t)time(NULL);
    while (!atomic_load(&s->release) && (int64_t)time(NULL) - start < 60) {
        ft_safepoint(t); /* drains its queue when the drop was queued */
        sched_yield();
    }
    ft_thread_stop(t);
    return NULL;
}

TEST(drop_in_a_stopped_world_survives_a_queue_allocation_failure)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    int failures = 0;
    for (int64_t n = 0;; n++) {
        CHECK(n < MAX_FAILURE_SITES);
        atomic_store(&counted_deallocs, 0);
        static suspended_owner s;
        s.rt = rt;
        atomic_store(&s.release, false);
        pthread_barrier_init(&s.allocated, NULL, 2);
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, owner_that_waits, &s), 0);
        ft_detach(t);
        pthread_barrier_wait(&s.allocated);
        ft_attach(t);
        ft_stop_the_world(rt);
        ft_debug_fail_allocation(rt, n);
        ft_decref(s.o);
        bool injected = failure_was_injected(rt);
        ft_debug_fail_allocation(rt, -1);
        int freed_in_stop = atomic_load(&counted_deallocs);
        ft_start_the_world(rt);
        int freed_by_restart = atomic_load(&counted_deallocs);
        atomic_store(&s.release, true);
        ft_detach(t);
        pthread_join(th, NULL); /* its stop drains its queue */
        ft_attach(t);
        pthread_barrier_destroy(&s.allocated);
        CHECK_THREADS_OK();
        /* No destructor runs inside a stop: a drop merged there because its queue could not grow
         * waits for the restart, which deallocates it on the requester. */
        CHECK_EQ(freed_in_stop, 0);
        CHECK_EQ(freed_by_restart, injected ? 1 : 0);
        CHECK_EQ(counted_deallocs, 1);
        CHECK_EQ(stats_of(rt).live_blocks, 0);
        CHECK_EQ(reftotal(rt), 0);
        failures += injected;
        if (!injected)
            break;
    }
    CHECK(failures > 0);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* Freeing objects of many freelist types on a fresh thread creates its freelist table and grows it;
 * when either allocation fails, the object goes back to the heap instead. */
enum { FREELIST_TYPES = 24 };

static ft_type freelist_types[FREELIST_TYPES];
static char freelist_names[FREELIST_TYPES][32];

typedef struct freelist_job {
    ft_runtime *rt;
    int64_t n;
    bool injected;
    int deallocs_after_drop;
    uint64_t live_after_drop;
} freelist_job;

static void *free_many_types(void *arg)
{
    freelist_job *j = arg;
    ft_thread *t = ft_thread_start(j->rt);
    CHECK_THREAD(t != NULL);
    ft_object *objs[FREELIST_TYPES], *again[FREELIST_TYPES];
    for (int k = 0; k < FREELIST_TYPES; k++) {
        objs[k] = ft_alloc(t, &freelist_types[k]);
        CHECK_THREAD(objs[k] != NULL);
    }
    ft_debug_fail_allocation(j->rt, j->n);
    for (int k = 0; k < FREELIST_TYPES; k++)
        ft_decref(objs[k]);
    j->injected = failure_was_injected(j->rt);
    ft_debug_fail_allocation(j->rt, -1);
    j->deallocs_after_drop = atomic_load(&counted_deallocs);
    j->live_after_drop = stats_of(j->rt).live_blocks;
    for (int k = 0; k < FREELIST_TYPES; k++) { /* from the freelist or the heap: both work */
        again[k] = ft_alloc(t, &freelist_types[k]);
        CHECK_THREAD(again[k] != NULL);
    }
    for (int k = 0; k < FREELIST_TYPES; k++)
        ft_decref(again[k]);
    ft_thread_stop(t);
    return NULL;
}

TEST(freelist_table_growth_survives_allocation_failures)
{
    for (int k = 0; k < FREELIST_TYPES; k++) {
        snprintf(freelist_names[k], sizeof freelist_names[k], "freelist type %d", k);
        freelist_types[k] = (ft_type){.name = freelist_names[k],
                                      .basic_size = sizeof(victim),
                                      .freelist_max = 4,
                                      .dealloc = count_dealloc};
    }
    ft_runtime *rt = ft_runtime_new(NULL);
    int failures = 0;
    for (int64_t n = 0;; n++) {
        CHECK(n < MAX_FAILURE_SITES);
        atomic_store(&counted_deallocs, 0);
        freelist_job j = {.rt = rt, .n = n};
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, free_many_types, &j), 0);
        pthread_join(th, NULL);
        CHECK_THREADS_OK();
        CHECK_EQ(j.deallocs_after_drop, FREELIST_TYPES);
        CHECK_EQ(j.live_after_drop, 0);
        CHECK_EQ(counted_deallocs, 2 * FREELIST_TYPES);
        ft_heap_stats s = stats_of(rt);
        CHECK_EQ(s.live_blocks, 0);
        CHECK_EQ(s.abandoned_heaps, 0); /* everything cached went back to the heap at stop */
        CHECK_EQ(reftotal(rt), 0);
        failures += j.injected;
        if (!j.injected)
            break;
    }
    CHECK(failures >= 2); /* creating the table, and growing it */
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

int main(void)
{
    RUN(alloc_from_a_detached_thread_is_fatal);
    RUN(owners_drop_to_zero_while_detached_is_fatal);
    RUN(extra_decref_by_the_owner_is_fatal);
    RUN(extra_decref_of_a_freed_merged_object_is_fatal);
    RUN(merge_below_zero_is_fatal);
#ifdef FTRT_DEBUG
    RUN(use_after_free_is_fatal);
    RUN(use_after_free_of_a_plain_object_is_fatal);
    RUN(use_after_free_of_a_cached_object_is_fatal);
    RUN(owner_refcount_underflow_is_fatal);
    RUN(dealloc_that_keeps_a_reference_is_fatal);
    RUN(counting_on_an_unattached_thread_is_fatal);
    RUN(counting_from_a_thread_of_another_runtime_is_fatal);
#endif
    RUN(thread_start_survives_allocation_failures);
    RUN(alloc_survives_allocation_failures);
    RUN(fast_path_allocation_and_the_failure_hook);
    RUN(cross_thread_drop_survives_a_queue_allocation_failure);
    RUN(drop_in_a_stopped_world_survives_a_queue_allocation_failure);
    RUN(freelist_table_growth_survives_allocation_failures);
    return harness_done();
}
