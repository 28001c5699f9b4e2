/* tests/test_stackref_debug.c: FTRT_STACKREF_DEBUG (include/ftrt/stackref.h, object/stackref_debug.c).
 *
 * Covered: stackrefs are ids that keep the tag meaning (counted, tagged, NULL, integers) and the
 * operations keep their counts; death tests for use after close, double close, closing and using an
 * unknown id, and a counted stackref still open when its creating thread stops, each checking that
 * the message names the sites (file:line), the object's address and its type name; stackrefs that
 * own no count, and counted ones made heap safe, may outlive their creating thread; the collector
 * translates ids on registered stacks and through ft_gc_visit_stackref; two threads create, dup,
 * borrow and close stackrefs concurrently (ThreadSanitizer-clean) while a third collects.
 * Without the option the test reports itself skipped (tests/CMakeLists.txt). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>
#include <stddef.h>

#include "ftrt.h"
#define TEST_GC_NODE
#include "test_util.h"

#ifndef FTRT_STACKREF_DEBUG

int main(void)
{
    printf("test_stackref_debug skipped: built without FTRT_STACKREF_DEBUG\n");
    return 0;
}

#else

/* Each helper is one line, so that its enum names the line its stackref operation reports. */
static ft_stackref make(ft_object *o) { return ft_stackref_from_object_new(o); }
enum { make_line = __LINE__ - 1 };
static ft_object *peek(ft_stackref r) { return ft_stackref_as_object_borrow(r); }
enum { peek_line = __LINE__ - 1 };
static void shut(ft_stackref r) { ft_stackref_close(r); }
enum { shut_line = __LINE__ - 1 };
static void use_again(ft_stackref r) { (void)ft_stackref_type(r); }
enum { use_again_line = __LINE__ - 1 };
static void close_again(ft_stackref r) { ft_stackref_close(r); }
enum { close_again_line = __LINE__ - 1 };
static void dup_again(ft_stackref r) { (void)ft_stackref_dup(r); }
enum { dup_again_line = __LINE__ - 1 };

static char *at(int line)
{
    static char buf[8][64];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof buf[0], "test_stackref_debug.c:%d", line);
    return b;
}

static char *address(const void *p)
{
    static char buf[4][32];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%p", p);
    return b;
}

#define setup gc_fixture_setup

static void teardown(fixture f)
{
    ft_gc_collect(f.rt, 2);
    CHECK_EQ(gc_node_live(), 0);
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
    fixture_teardown(f);
}

TEST(ids_keep_the_tags_and_the_counts)
{
    fixture f = setup();
    gc_node *n = gc_node_new(f.t, &gc_node_type);
    ft_stackref c = ft_stackref_from_object_new(&n->ob);
    CHECK(!ft_stackref_is_tagged(c) && !ft_stackref_is_null(c) && !ft_stackref_is_tagged_int(c));
    CHECK(c.bits != (uintptr_t)&n->ob); /* an id, not the address */
    CHECK_EQ(ft_refcount(&n->ob), 2);
    CHECK(ft_stackref_as_object_borrow(c) == &n->ob);
    ft_stackref d = ft_stackref_dup(c);
    CHECK(d.bits != c.bits);
    CHECK_EQ(ft_refcount(&n->ob), 3);
    ft_stackref b = ft_stackref_from_object_borrow(&n->ob);
    CHECK(ft_stackref_is_tagged(b) && !ft_stackref_is_heap_safe(b));
    ft_stackref s = ft_stackref_make_heap_safe(b); /* b is consumed: s has its id, counted */
    CHECK(!ft_stackref_is_tagged(s) && (s.bits >> 2) == (b.bits >> 2));
    CHECK_EQ(ft_refcount(&n->ob), 4);
    ft_stackref_close(s);
    ft_stackref_close(d);
    CHECK(ft_stackref_as_object_steal(c) == &n->ob);
    CHECK_EQ(ft_refcount(&n->ob), 2);
    ft_decref(&n->ob);
    ft_stackref t = ft_stackref_tag_int(-7);
    CHECK(ft_stackref_is_tagged_int(t) && ft_stackref_untag_int(t) == -7);
    ft_stackref_close(t);
    ft_stackref_xclose(FT_STACKREF_NULL);
    CHECK(ft_stackref_is_null(FT_STACKREF_NULL) && FT_STACKREF_NULL.bits == 1);
    ft_decref(&n->ob);
    teardown(f);
}

/* ---- death tests: the object is made in the parent, so that its address is known there ---------- */

static void use_after_close(void *arg)
{
    ft_stackref r = make(arg);
    (void)peek(r);
    shut(r);
    use_again(r);
}

static void double_close(void *arg)
{
    ft_stackref r = make(arg);
    shut(r);
    close_again(r);
}

static void close_unknown(void *arg)
{
    (void)arg;
    close_again((ft_stackref){(uintptr_t)123456 << 2});
}

static void use_unknown(void *arg)
{
    (void)arg;
    dup_again((ft_stackref){((uintptr_t)123457 << 2) | FT_STACKREF_TAG_NO_REF});
}

static void stop_with_open(void *arg)
{
    (void)make(arg);
    ft_thread_stop(ft_thread_current());
}

TEST(misuse_is_fatal_and_names_the_sites)
{
    fixture f = setup();
    gc_node *n = gc_node_new(f.t, &gc_node_type);
    char *p = address(n);
    CHECK_DEATH(use_after_close, &n->ob, "use after close", at(use_again_line), at(make_line),
                at(peek_line), at(shut_line), p, "'gc_node'");
    CHECK_DEATH(double_close, &n->ob, "double close", at(close_again_line), at(make_line),
                at(shut_line), p, "'gc_node'");
    CHECK_DEATH(close_unknown, NULL, "closing an unknown stackref", at(close_again_line));
    CHECK_DEATH(use_unknown, NULL, "using an unknown stackref", at(dup_again_line));
    CHECK_DEATH(stop_with_open, &n->ob, "still open", "creating thread stops", at(make_line), p,
                "'gc_node'");
    ft_decref(&n->ob);
    teardown(f);
}

/* ---- what may outlive its creating thread --------------------------------------------------------- */

static ft_runtime *shared_rt;
static gc_node *shared_node;
static ft_stackref kept_borrowed, kept_heap;

static void *leave_refs(void *arg)
{
    (void)arg;
    ft_thread *t = ft_thread_start(shared_rt);
    kept_borrowed = ft_stackref_from_object_borrow(&shared_node->ob);
    kept_heap = ft_stackref_make_heap_safe(ft_stackref_from_object_new(&shared_node->ob));
    ft_thread_stop(t);
    return NULL;
}

TEST(uncounted_and_heap_safe_stackrefs_outlive_their_thread)
{
    fixture f = setup();
    shared_rt = f.rt;
    shared_node = gc_node_new(f.t, &gc_node_type);
    ft_detach(f.t);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, leave_refs, NULL), 0);
    pthread_join(th, NULL);
    ft_attach(f.t);
    CHECK_EQ(ft_refcount(&shared_node->ob), 2);
    ft_stackref_close(kept_borrowed);
    ft_stackref_close(kept_heap);
    ft_decref(&shared_node->ob);
    teardown(f);
}

/* ---- the collector ------------------------------------------------------------------------------- */

TEST(the_collector_translates_ids_on_stacks)
{
    fixture f = setup();
    ft_stackref slots[2];
    ft_stack_region region;
    ft_stack_push_region(f.t, &region, slots);
    gc_node *d = gc_node_new(f.t, &gc_deferred_type);
    int id = d->id;
    slots[0] = ft_stackref_from_object_new(&d->ob);
    CHECK(ft_stackref_is_deferred(slots[0]));
    slots[1] = ft_stackref_tag_int(5);
    ft_stack_region_set_top(&region, slots + 2);
    ft_decref(&d->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(atomic_load(&gc_node_freed[id]) == 0);
    ft_stackref_close(slots[0]);
    ft_stack_region_set_top(&region, slots);
    ft_stack_pop_region(f.t, &region);
    ft_gc_collect(f.rt, 2);
    CHECK(atomic_load(&gc_node_freed[id]) == 1);
    teardown(f);
}

/* ---- two threads at once --------------------------------------------------------------------------- */

enum { WORKERS = 2 };
static gc_node *shared_counted, *shared_deferred;
static _Atomic int workers_done;

static void *churn(void *arg)
{
    (void)arg;
    int rounds = UNDER_TSAN ? 2000 : 20000;
    ft_thread *t = ft_thread_start(shared_rt);
    ft_stackref slots[4];
    ft_stack_region region;
    ft_stack_push_region(t, &region, slots);
    for (int i = 0; i < rounds; i++) {
        slots[0] = ft_stackref_from_object_new(&shared_counted->ob);
        slots[1] = ft_stackref_from_object_new(&shared_deferred->ob);
        slots[2] = ft_stackref_dup(slots[0]);
        slots[3] = ft_stackref_from_object_borrow(ft_stackref_as_object_borrow(slots[1]));
        ft_stack_region_set_top(&region, slots + 4);
        CHECK_THREAD(ft_stackref_type(slots[2]) == &gc_node_type);
        CHECK_THREAD(ft_stackref_is_deferred(slots[1]));
        ft_stack_region_set_top(&region, slots);
        for (int k = 3; k >= 0; k--)
            ft_stackref_close(slots[k]);
        ft_safepoint(t);
    }
    ft_stack_pop_region(t, &region);
    ft_thread_stop(t);
    atomic_fetch_add(&workers_done, 1);
    return NULL;
}

TEST(two_threads_create_and_close_concurrently)
{
    fixture f = setup();
    shared_rt = f.rt;
    atomic_store(&workers_done, 0);
    shared_counted = gc_node_new(f.t, &gc_node_type);
    shared_deferred = gc_node_new(f.t, &gc_deferred_type);
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, churn, NULL), 0);
    /* The collector scans their stacks meanwhile: the deferred object must survive. */
    while (atomic_load(&workers_done) < WORKERS) {
        ft_gc_collect(f.rt, 2);
        ft_safepoint(f.t);
    }
    ft_detach(f.t);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], NULL);
    ft_attach(f.t);
    CHECK_THREADS_OK();
    CHECK_EQ(ft_refcount(&shared_counted->ob), 1);
    ft_decref(&shared_counted->ob);
    ft_decref(&shared_deferred->ob);
    teardown(f);
}

int main(void)
{
    RUN(ids_keep_the_tags_and_the_counts);
    RUN(misuse_is_fatal_and_names_the_sites);
    RUN(uncounted_and_heap_safe_stackrefs_outlive_their_thread);
    RUN(the_collector_translates_ids_on_stacks);
    RUN(two_threads_create_and_close_concurrently);
    return harness_done();
}

#endif
