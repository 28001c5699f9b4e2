/* tests/test_stackref.c: stack references and deferred reference counting (ftrt/stackref.h).
 *
 * Covered: each operation's effect on the count of counted, deferred and immortal objects; tagged
 * integers; a deferred object held only by a thread's registered stack survives full collections
 * (the thread attached or detached) and is freed by the first collection after its stackref is
 * closed; what a deferred object on a stack reaches survives too; a region whose top is unknown
 * keeps every deferred object alive for that collection (gh-129236); young collections never take
 * deferred objects; make-heap-safe; a heap holder of a tagged reference that visits it with
 * ft_gc_visit_stackref keeps it alive while the holder lives, and both are collected together;
 * ft_object_enable_deferred_rc refuses objects that are not private; deferral is removed at
 * shutdown, so ft_runtime_free frees deferred objects. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>
#include <stddef.h>

#include "ftrt.h"
#define TEST_GC_NODE
#include "test_util.h"


#define setup gc_fixture_setup
#define teardown gc_fixture_teardown

static gc_node *new_deferred(ft_thread *t)
{
    gc_node *n = gc_node_new(t, &gc_deferred_type);
    CHECK(n != NULL);
    CHECK(ft_object_is_deferred(&n->ob));
    return n;
}

/* The count without the deferral's bias: what references hold it. */
static intptr_t refs(gc_node *n)
{
    intptr_t c = ft_refcount(&n->ob);
    return ft_object_is_deferred(&n->ob) ? c - (INTPTR_MAX / 8) : c;
}

TEST(operations_touch_counts_as_documented)
{
    fixture f = setup();
    gc_node *counted = gc_node_new(f.t, &gc_node_type);
    gc_node *deferred = new_deferred(f.t);
    CHECK_EQ(refs(counted), 1);
    CHECK_EQ(refs(deferred), 1);

    ft_stackref c = ft_stackref_from_object_new(&counted->ob);
    CHECK(!ft_stackref_is_tagged(c));
    CHECK_EQ(refs(counted), 2);
    ft_stackref d = ft_stackref_from_object_new(&deferred->ob);
    CHECK(ft_stackref_is_tagged(d) && ft_stackref_is_deferred(d));
    CHECK_EQ(refs(deferred), 1);

    ft_stackref c2 = ft_stackref_dup(c), d2 = ft_stackref_dup(d);
    CHECK_EQ(refs(counted), 3);
    CHECK_EQ(refs(deferred), 1);
    ft_stackref_close(c2);
    ft_stackref_close(d2);
    CHECK_EQ(refs(counted), 2);
    CHECK_EQ(refs(deferred), 1);

    /* as_object_steal: a counted reference for the caller; from a tagged one it takes a count. */
    ft_object *o = ft_stackref_as_object_steal(d);
    CHECK(o == &deferred->ob);
    CHECK_EQ(refs(deferred), 2);
    ft_decref(o);
    ft_object *n = ft_stackref_as_object_new(c);
    CHECK_EQ(refs(counted), 3);
    ft_decref(n);
    CHECK(ft_stackref_type(c) == &gc_node_type);
    CHECK(ft_stackref_as_object_steal(c) == &counted->ob); /* hands its count over */
    CHECK_EQ(refs(counted), 2);
    ft_decref(&counted->ob);

    ft_stackref b = ft_stackref_from_object_borrow(&counted->ob);
    CHECK(ft_stackref_is_tagged(b) && !ft_stackref_is_deferred(b));
    CHECK_EQ(refs(counted), 1);
    ft_stackref_close(b); /* owns nothing */
    CHECK_EQ(refs(counted), 1);

    ft_stackref t = ft_stackref_tag_int(-12345);
    CHECK(ft_stackref_is_tagged_int(t) && !ft_stackref_is_tagged(t));
    CHECK_EQ(ft_stackref_untag_int(t), -12345);
    ft_stackref_close(t);
    CHECK(ft_stackref_is_null(FT_STACKREF_NULL));
    ft_stackref_xclose(FT_STACKREF_NULL);

    int idd = deferred->id;
    ft_decref(&counted->ob);
    ft_decref(&deferred->ob); /* its count is the bias now: only a collection frees it */
    CHECK(ALIVE(idd));
    /* No reference left: the collection finds it unreachable, counts it and frees it. */
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(idd));
    teardown(f);
}

TEST(immortal_objects_are_never_counted)
{
    fixture f = setup();
    gc_node *i = gc_node_new(f.t, &gc_node_type);
    ft_immortalize(&i->ob);
    ft_stackref r = ft_stackref_from_object_new(&i->ob);
    CHECK(ft_stackref_is_tagged(r));
    CHECK(ft_stackref_is_heap_safe(r));
    ft_stackref_close(ft_stackref_dup(r));
    CHECK(ft_object_is_immortal(&i->ob));
    ft_stackref_close(ft_stackref_from_object_immortal(&i->ob));
    /* An immortal node is never freed: count it as gone for the teardown's census. */
    atomic_store(&gc_node_freed[i->id], 1);
    atomic_fetch_add(&gc_node_deallocs, 1);
    fixture_teardown(f);
}

/* A deferred object whose only reference is a tagged stackref on a registered region survives
 * full collections, and the first one after its stackref is popped frees it. */
TEST(deferred_object_held_only_by_a_stack_survives)
{
    fixture f = setup();
    ft_stackref slots[4];
    ft_stack_region region;
    ft_stack_push_region(f.t, &region, slots);
    gc_node *d = new_deferred(f.t);
    gc_node *child = gc_node_new(f.t, &gc_node_type);
    gc_node_append(d, &child->ob);
    ft_decref(&child->ob);
    int idd = d->id, idc = child->id;
    slots[0] = ft_stackref_from_object_new(&d->ob);
    ft_stack_region_set_top(&region, slots + 1);
    ft_decref(&d->ob); /* only the stack holds it now */
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK(ALIVE(idd) && ALIVE(idc)); /* and what it reaches */
    ft_stackref_close(slots[0]);
    ft_stack_region_set_top(&region, slots);
    ft_stack_pop_region(f.t, &region);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0); /* young collections never take deferred objects */
    CHECK(ALIVE(idd));
    ft_gc_collect(f.rt, 2);
    CHECK(FREED(idd) && FREED(idc));
    teardown(f);
}

/* The same with the holding thread detached: its registered stack still counts. */
static gc_node *held;
static ft_stackref held_slots[2];
static ft_stack_region held_region;

static void cmd_hold_on_stack(commanded *w)
{
    ft_stack_push_region(w->t, &held_region, held_slots);
    held_slots[0] = ft_stackref_from_object_new(&held->ob);
    ft_stack_region_set_top(&held_region, held_slots + 1);
}

static void cmd_release_stack(commanded *w)
{
    ft_stackref_close(held_slots[0]);
    ft_stack_region_set_top(&held_region, held_slots);
    ft_stack_pop_region(w->t, &held_region);
}

TEST(a_detached_threads_stack_counts)
{
    fixture f = setup();
    commanded x;
    commanded_start(f.t, &x, f.rt);
    held = new_deferred(f.t);
    int id = held->id;
    commanded_do(f.t, &x, cmd_hold_on_stack, NULL);
    ft_decref(&held->ob);
    commanded_do(f.t, &x, (commanded_fn)cmd_detach, NULL);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(ALIVE(id));
    commanded_do(f.t, &x, (commanded_fn)cmd_attach, NULL);
    cmd_resume(&x);
    commanded_do(f.t, &x, cmd_release_stack, NULL);
    ft_gc_collect(f.rt, 2);
    CHECK(FREED(id));
    commanded_finish(f.t, &x);
    teardown(f);
}

/* A region whose top is unknown (NULL) keeps every deferred object alive for that collection. */
TEST(unknown_top_keeps_deferred_objects)
{
    fixture f = setup();
    gc_node *d = new_deferred(f.t);
    int id = d->id;
    gc_node_append(d, &d->ob); /* a deferred self-cycle: garbage once dropped */
    ft_decref(&d->ob);
    ft_stackref slots[1];
    ft_stack_region region;
    ft_stack_push_region(f.t, &region, slots);
    ft_stack_region_set_top(&region, NULL);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(ALIVE(id));
    ft_stack_region_set_top(&region, slots);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(id));
    ft_stack_pop_region(f.t, &region);
    teardown(f);
}

/* A heap holder (a frame object, say) keeps a tagged reference and visits it with
 * ft_gc_visit_stackref: the deferred object lives while the holder does, and a garbage cycle
 * through both is collected. */
typedef struct holder {
    ft_object ob;
    ft_stackref ref;
} holder;

static _Atomic int holders_freed;

static int holder_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    return ft_gc_visit_stackref(((holder *)self)->ref, visit, arg);
}

static void holder_clear(ft_object *self)
{
    ft_stackref r = ((holder *)self)->ref;
    ((holder *)self)->ref = FT_STACKREF_NULL;
    ft_stackref_xclose(r);
}

static void holder_dealloc(ft_object *self)
{
    holder_clear(self);
    atomic_fetch_add(&holders_freed, 1);
}

static const ft_type holder_type = {.name = "holder",
                                    .basic_size = sizeof(holder),
                                    .flags = FT_TYPE_GC,
                                    .traverse = holder_traverse,
                                    .clear = holder_clear,
                                    .dealloc = holder_dealloc};

TEST(heap_holder_of_a_tagged_reference)
{
    fixture f = setup();
    atomic_store(&holders_freed, 0);
    gc_node *d = new_deferred(f.t);
    int id = d->id;
    holder *h = (holder *)ft_alloc(f.t, &holder_type);
    CHECK(h != NULL);
    ft_stackref r = ft_stackref_from_object_new(&d->ob);
    CHECK(ft_stackref_is_heap_safe(r)); /* deferred: the collector sees it through the holder */
    h->ref = r;
    ft_gc_track(&h->ob);
    ft_decref(&d->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(ALIVE(id));
    /* d -> h -> d: a cycle through the tagged reference, garbage once h is dropped. */
    gc_node_append(d, &h->ob);
    ft_decref(&h->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(id));
    CHECK_EQ(atomic_load(&holders_freed), 1);
    teardown(f);
}

TEST(make_heap_safe_counts_a_borrowed_reference)
{
    fixture f = setup();
    gc_node *n = gc_node_new(f.t, &gc_node_type);
    ft_stackref b = ft_stackref_from_object_borrow(&n->ob);
    CHECK(!ft_stackref_is_heap_safe(b));
    ft_stackref s = ft_stackref_make_heap_safe(b);
    CHECK(ft_stackref_is_heap_safe(s) && !ft_stackref_is_tagged(s));
    CHECK_EQ(ft_refcount(&n->ob), 2);
    ft_stackref_close(s);
    ft_decref(&n->ob);
    teardown(f);
}

TEST(enable_deferred_refuses_shared_objects)
{
    fixture f = setup();
    gc_node *n = gc_node_new(f.t, &gc_node_type);
    CHECK_EQ(ft_object_enable_deferred_rc(&n->ob), FT_OK);
    CHECK(ft_object_is_deferred(&n->ob));
    CHECK_EQ(ft_object_enable_deferred_rc(&n->ob), FT_EINVAL); /* already */
    gc_node *m = gc_node_new(f.t, &gc_node_type);
    ft_object_enable_try_incref(&m->ob); /* promised to readers: no longer private */
    CHECK_EQ(ft_object_enable_deferred_rc(&m->ob), FT_EINVAL);
    CHECK(!ft_object_is_deferred(&m->ob));
    /* Only GC objects: nothing else would ever free a deferred object. */
    static const ft_type plain = {.name = "plain", .basic_size = sizeof(ft_object)};
    ft_object *p = ft_alloc(f.t, &plain);
    CHECK_EQ(ft_object_enable_deferred_rc(p), FT_EINVAL);
    ft_decref(p);
    static const ft_type deferred_plain = {
        .name = "deferred plain", .basic_size = sizeof(ft_object), .flags = FT_TYPE_DEFERRED};
    CHECK(ft_alloc(f.t, &deferred_plain) == NULL);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    ft_decref(&n->ob);
    ft_decref(&m->ob);
    teardown(f);
}

/* Shutdown removes deferral: ft_runtime_free frees a deferred object nothing references. */
TEST(runtime_free_frees_deferred_objects)
{
    gc_node_reset();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *t = ft_thread_start(rt);
    gc_node *d = gc_node_new(t, &gc_deferred_type);
    int id = d->id;
    ft_decref(&d->ob);
    CHECK(ALIVE(id));
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
    CHECK(FREED(id));
}

static void pop_wrong_region(void *arg)
{
    (void)arg;
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *t = ft_thread_start(rt);
    ft_stackref slots[2];
    ft_stack_region outer, inner;
    ft_stack_push_region(t, &outer, slots);
    ft_stack_push_region(t, &inner, slots + 1);
    ft_stack_pop_region(t, &outer);
}

TEST(popping_a_region_out_of_order_is_fatal)
{
    CHECK_DEATH(pop_wrong_region, NULL, "ft_stack_pop_region", "innermost");
}

int main(void)
{
    RUN(operations_touch_counts_as_documented);
    RUN(immortal_objects_are_never_counted);
    RUN(deferred_object_held_only_by_a_stack_survives);
    RUN(a_detached_threads_stack_counts);
    RUN(unknown_top_keeps_deferred_objects);
    RUN(heap_holder_of_a_tagged_reference);
    RUN(make_heap_safe_counts_a_borrowed_reference);
    RUN(enable_deferred_refuses_shared_objects);
    RUN(runtime_free_frees_deferred_objects);
    RUN(popping_a_region_out_of_order_is_fatal);
    return harness_done();
}
