/* tests/test_stackref_threads.c: stack references and deferred objects with several threads
 * (ftrt/stackref.h).
 *
 * Covered: two threads "call" one shared deferred object, moving its tagged stackref between their
 * registered regions (outer and inner, attached and detached) while a third thread runs full
 * collections back to back: it is never freed while a stack holds it, and the first full collection
 * after every stack let go frees it (and what it reaches); per-thread-counted objects and deferred
 * objects in one garbage cycle, held by another thread's slot and another thread's stack, are
 * collected together by a full collection, and their unique ids are reused only after it; a
 * deferred object referenced only by an old (generation 2) container, counted or tagged, survives
 * young and full collections while the container lives. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>
#include <stddef.h>

#include "ftrt.h"
#define TEST_GC_NODE
#include "test_util.h"


#define setup gc_fixture_setup

static void teardown(fixture f)
{
    ft_gc_collect(f.rt, 2);
    CHECK_EQ(gc_node_live(), 0);
    gc_node_check_all_freed_once();
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
#endif
    fixture_teardown(f);
}

static gc_node *new_deferred(ft_thread *t)
{
    gc_node *n = gc_node_new(t, &gc_deferred_type);
    CHECK(n != NULL);
    CHECK(ft_object_is_deferred(&n->ob));
    return n;
}

/* ---- two threads call one deferred object while a third collects --------------------------------- */

#define CALL_ITERATIONS 1500
#define MIN_COLLECTIONS 40 /* the callers go on until the collector has run this many meanwhile */

static gc_node *shared_fn;
static int shared_id, shared_child_id;
static _Atomic bool stop_collecting;
static _Atomic int collections;

/* A caller's outermost frame: its region stays pushed from enter to leave. */
typedef struct caller {
    ft_stackref slots[2];
    ft_stack_region region;
    int iterations;
    int until_collections; /* a batch of calls goes on until `collections` reaches this */
} caller;

static void check_held(ft_stackref r)
{
    CHECK_THREAD(ft_stackref_is_deferred(r));
    gc_node *n = (gc_node *)ft_stackref_as_object_borrow(r);
    CHECK_THREAD(n == shared_fn);
    CHECK_THREAD(ALIVE(shared_id) && ALIVE(shared_child_id));
    CHECK_THREAD(atomic_load(&n->magic) == GC_NODE_ALIVE);
    CHECK_THREAD(n->n == 1 && n->items[0] != NULL);
}

static void cmd_collect_until_stopped(commanded *w)
{
    while (!atomic_load(&stop_collecting)) {
        ft_gc_collect(w->rt, 2);
        atomic_fetch_add(&collections, 1);
    }
}

/* Load the function onto the caller's outer frame, from the counted reference main still holds. */
static void cmd_enter(commanded *w)
{
    caller *c = w->ctx;
    ft_stack_push_region(w->t, &c->region, c->slots);
    c->slots[0] = ft_stackref_from_object_new(&shared_fn->ob);
    CHECK_THREAD(ft_stackref_is_tagged(c->slots[0])); /* no count taken */
    ft_stack_region_set_top(&c->region, c->slots + 1);
}

/* A batch of calls: each pushes a callee frame; the function's stackref moves into it (the outer frame lets
 * go of it), a local counted object and a garbage cycle come and go, and the stackref moves back.
 * Stops the world may come at each safepoint, and while the thread is detached: the function is
 * then on the outer region only (with an inner region pushed), or on the inner region only. */
static void cmd_calls(commanded *w)
{
    caller *c = w->ctx;
    int64_t start = now_ns();
    for (int i = 0; i < CALL_ITERATIONS || atomic_load(&collections) < c->until_collections; i++) {
        if (now_ns() - start > WAIT_LIMIT_NS) {
            CHECK_THREAD(!"the collector made no progress");
            break;
        }
        ft_stackref callee[3];
        ft_stack_region frame;
        ft_stack_push_region(w->t, &frame, callee);
        gc_node *local = gc_node_new(w->t, &gc_node_type);
        callee[0] = ft_stackref_from_object_steal(&local->ob);
        ft_stack_region_set_top(&frame, callee + 1);
        ft_safepoint(w->t); /* held by the outer region, an inner one pushed */
        check_held(c->slots[0]);
        if (i % 4 == 2) { /* the same, with this thread detached */
            ft_detach(w->t);
            sched_yield();
            ft_attach(w->t);
            check_held(c->slots[0]);
        }

        callee[1] = c->slots[0]; /* a move: ownership (none, it is tagged) goes with it */
        ft_stack_region_set_top(&frame, callee + 2);
        c->slots[0] = FT_STACKREF_NULL;
        ft_stack_region_set_top(&c->region, c->slots);
        ft_safepoint(w->t); /* held by the innermost region only */
        check_held(callee[1]);
        if (i % 4 == 0) { /* a stop may run while this thread is detached */
            ft_detach(w->t);
            sched_yield();
            ft_attach(w->t);
            check_held(callee[1]);
        }
        if (i % 8 == 0) { /* garbage for the collector: a self-cycle */
            gc_node *g = gc_node_new(w->t, &gc_node_type);
            gc_node_append(g, &g->ob);
            callee[2] = ft_stackref_from_object_steal(&g->ob);
            ft_stack_region_set_top(&frame, callee + 3);
            ft_safepoint(w->t);
            ft_stack_region_set_top(&frame, callee + 2);
            ft_stackref_close(callee[2]);
        }
        ft_stackref d = ft_stackref_dup(callee[1]);
        /* The same object (in FTRT_STACKREF_DEBUG builds a dup is a new id, so not the same bits). */
        CHECK_THREAD(ft_stackref_as_object_borrow(d) == ft_stackref_as_object_borrow(callee[1]));
        ft_stackref_close(d);

        c->slots[0] = callee[1]; /* return: the stackref moves back */
        ft_stack_region_set_top(&c->region, c->slots + 1);
        ft_stack_region_set_top(&frame, callee);
        ft_stackref_close(callee[0]);
        ft_stack_pop_region(w->t, &frame);
        c->iterations++;
    }
}

static void cmd_leave(commanded *w)
{
    caller *c = w->ctx;
    ft_stack_region_set_top(&c->region, c->slots);
    ft_stackref_close(c->slots[0]);
    c->slots[0] = FT_STACKREF_NULL;
    ft_stack_pop_region(w->t, &c->region);
}

TEST(shared_deferred_object_on_two_stacks_while_a_third_thread_collects)
{
    fixture f = setup();
    atomic_store(&stop_collecting, false);
    atomic_store(&collections, 0);
    static caller ca, cb;
    memset(&ca, 0, sizeof ca);
    memset(&cb, 0, sizeof cb);
    commanded a, b, collector;
    commanded_start_with(f.t, &a, f.rt, NULL, &ca);
    commanded_start_with(f.t, &b, f.rt, NULL, &cb);
    commanded_start(f.t, &collector, f.rt);

    shared_fn = new_deferred(f.t);
    gc_node *child = gc_node_new(f.t, &gc_node_type);
    gc_node_append(shared_fn, &child->ob);
    ft_decref(&child->ob);
    shared_id = shared_fn->id;
    shared_child_id = child->id;
    commanded_do(f.t, &a, cmd_enter, NULL);
    commanded_do(f.t, &b, cmd_enter, NULL);
    ft_decref(&shared_fn->ob); /* from now on only the two stacks hold it */

    /* Both call it, while full collections run back to back. */
    ca.until_collections = cb.until_collections = MIN_COLLECTIONS;
    int nc = commanded_post(&collector, cmd_collect_until_stopped, NULL);
    int na = commanded_post(&a, cmd_calls, NULL);
    int nb = commanded_post(&b, cmd_calls, NULL);
    commanded_wait(f.t, &a, na);
    commanded_wait(f.t, &b, nb);
    CHECK(ca.iterations >= CALL_ITERATIONS && cb.iterations >= CALL_ITERATIONS);
    CHECK(atomic_load(&collections) >= MIN_COLLECTIONS);
    CHECK(ALIVE(shared_id) && ALIVE(shared_child_id));

    /* a lets go; b goes on calling it alone: each collection now sees it on one stack only, in
     * whichever region it is, attached or detached. */
    commanded_do(f.t, &a, cmd_leave, NULL);
    cb.until_collections = atomic_load(&collections) + MIN_COLLECTIONS;
    commanded_do(f.t, &b, cmd_calls, NULL);
    CHECK(cb.iterations >= 2 * CALL_ITERATIONS);
    CHECK(ALIVE(shared_id) && ALIVE(shared_child_id));

    atomic_store(&stop_collecting, true);
    commanded_wait(f.t, &collector, nc);
    commanded_do(f.t, &b, cmd_leave, NULL);
    ft_gc_collect(f.rt, 0); /* may take the callers' last self-cycles */
    ft_gc_collect(f.rt, 1);
    CHECK(ALIVE(shared_id)); /* young collections never take a deferred object */
    CHECK(ft_gc_collect(f.rt, 2) >= 1);
    CHECK(FREED(shared_id) && FREED(shared_child_id)); /* the first full collection after */

    commanded_finish(f.t, &a);
    commanded_finish(f.t, &b);
    commanded_finish(f.t, &collector);
    check_helpers_ok();
    teardown(f);
}

/* ---- per-thread-counted and deferred objects in one garbage cycle -------------------------------- */

static ft_stackref hold_slots[1];
static ft_stack_region hold_region;

static void cmd_uid_incref(commanded *w)
{
    ft_uniqueid_incref(w->t, w->arg);
}

static void cmd_uid_decref(commanded *w)
{
    ft_uniqueid_decref(w->t, w->arg);
}

static void cmd_push_on_stack(commanded *w)
{
    ft_stack_push_region(w->t, &hold_region, hold_slots);
    hold_slots[0] = ft_stackref_from_object_new(w->arg);
    ft_stack_region_set_top(&hold_region, hold_slots + 1);
}

static void cmd_pop_from_stack(commanded *w)
{
    ft_stack_region_set_top(&hold_region, hold_slots);
    ft_stackref_close(hold_slots[0]);
    ft_stack_pop_region(w->t, &hold_region);
}

static uint32_t enable_id(ft_thread *t, gc_node *n)
{
    CHECK_EQ(ft_uniqueid_enable(t, &n->ob), FT_OK);
    uint32_t id = ft_object_unique_id(&n->ob);
    CHECK(id != 0);
    return id;
}

TEST(per_thread_counted_and_deferred_objects_in_one_garbage_cycle)
{
    fixture f = setup();
    commanded x, y;
    commanded_start(f.t, &x, f.rt);
    commanded_start(f.t, &y, f.rt);
    /* u1 -> d1 -> u2 -> d2 -> u1: two of each kind. */
    gc_node *u1 = gc_node_new(f.t, &gc_uid_type), *u2 = gc_node_new(f.t, &gc_uid_type);
    gc_node *d1 = new_deferred(f.t), *d2 = new_deferred(f.t);
    gc_node_append(u1, &d1->ob);
    gc_node_append(d1, &u2->ob);
    gc_node_append(u2, &d2->ob);
    gc_node_append(d2, &u1->ob);
    int ids[4] = {u1->id, u2->id, d1->id, d2->id};
    uint32_t id1 = enable_id(f.t, u1), id2 = enable_id(f.t, u2);
    commanded_do(f.t, &x, cmd_uid_incref, &u2->ob); /* x's slot holds u2 */
    commanded_do(f.t, &y, cmd_push_on_stack, &d2->ob); /* y's stack holds d2 */
    ft_decref(&u1->ob);
    ft_decref(&u2->ob);
    ft_decref(&d1->ob);
    ft_decref(&d2->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    commanded_do(f.t, &x, cmd_uid_decref, &u2->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0); /* y's stack still holds the cycle */
    CHECK_EQ(ft_uniqueid_merge(f.rt), 0); /* a merge alone frees nothing of a cycle */
    for (int i = 0; i < 4; i++)
        CHECK(ALIVE(ids[i]));

    commanded_do(f.t, &y, cmd_pop_from_stack, NULL);
    /* Garbage now, not yet collected: its ids are still taken. */
    gc_node *early = gc_node_new(f.t, &gc_uid_type);
    uint32_t ide = enable_id(f.t, early);
    CHECK(ide != id1 && ide != id2);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    for (int i = 0; i < 4; i++)
        CHECK(ALIVE(ids[i]));

    CHECK_EQ(ft_gc_collect(f.rt, 2), 4);
    for (int i = 0; i < 4; i++)
        CHECK(FREED(ids[i]));
    /* Released by that collection: the next two ids given out are theirs (smallest first). */
    gc_node *l1 = gc_node_new(f.t, &gc_uid_type), *l2 = gc_node_new(f.t, &gc_uid_type);
    uint32_t i1 = enable_id(f.t, l1), i2 = enable_id(f.t, l2);
    CHECK((i1 == id1 && i2 == id2) || (i1 == id2 && i2 == id1));
    ft_decref(&early->ob);
    ft_decref(&l1->ob);
    ft_decref(&l2->ob);
    CHECK_EQ(ft_uniqueid_merge(f.rt), 3);
    commanded_finish(f.t, &x);
    commanded_finish(f.t, &y);
    teardown(f);
}

/* ---- a deferred object held only by an old container --------------------------------------------- */

/* A heap frame: a fixed array of stackrefs, visited with ft_gc_visit_stackref. */
typedef struct frame_obj {
    ft_object ob;
    ft_stackref slots[2];
} frame_obj;

static int frame_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    frame_obj *fr = (frame_obj *)self;
    for (int i = 0; i < 2; i++) {
        int r = ft_gc_visit_stackref(fr->slots[i], visit, arg);
        if (r)
            return r;
    }
    return 0;
}

static void frame_clear(ft_object *self)
{
    frame_obj *fr = (frame_obj *)self;
    for (int i = 0; i < 2; i++) {
        ft_stackref r = fr->slots[i];
        fr->slots[i] = FT_STACKREF_NULL;
        ft_stackref_xclose(r);
    }
}

static _Atomic int frames_freed;

static void frame_dealloc(ft_object *self)
{
    ft_gc_untrack(self);
    frame_clear(self);
    atomic_fetch_add(&frames_freed, 1);
}

static const ft_type frame_type = {.name = "frame",
                                   .basic_size = sizeof(frame_obj),
                                   .flags = FT_TYPE_GC,
                                   .traverse = frame_traverse,
                                   .clear = frame_clear,
                                   .dealloc = frame_dealloc};

static bool in_generation(ft_runtime *rt, int generation, ft_object *o)
{
    ft_object_list list;
    CHECK_EQ(ft_gc_get_objects(rt, generation, &list), FT_OK);
    bool found = false;
    for (size_t i = 0; i < list.count; i++)
        found |= list.items[i] == o;
    ft_object_list_clear(&list);
    return found;
}

TEST(deferred_object_held_only_by_an_old_container)
{
    fixture f = setup();
    atomic_store(&frames_freed, 0);
    /* The containers grow old first: full collections move survivors to generation 2. */
    gc_node *box = gc_node_new(f.t, &gc_node_type);
    frame_obj *fr = (frame_obj *)ft_alloc(f.t, &frame_type);
    CHECK(fr != NULL);
    fr->slots[0] = fr->slots[1] = FT_STACKREF_NULL;
    ft_gc_track(&fr->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(in_generation(f.rt, 2, &box->ob) && in_generation(f.rt, 2, &fr->ob));

    /* Young deferred objects: one counted by the box, one tagged in the frame (in no count). */
    gc_node *counted = new_deferred(f.t), *tagged = new_deferred(f.t);
    gc_node *child = gc_node_new(f.t, &gc_node_type);
    gc_node_append(tagged, &child->ob);
    ft_decref(&child->ob);
    int idc = counted->id, idt = tagged->id, idk = child->id;
    gc_node_append(box, &counted->ob);
    fr->slots[1] = ft_stackref_from_object_new(&tagged->ob);
    CHECK(ft_stackref_is_deferred(fr->slots[1]) && ft_stackref_is_heap_safe(fr->slots[1]));
    ft_decref(&counted->ob);
    ft_decref(&tagged->ob);
    CHECK(in_generation(f.rt, 0, &tagged->ob) && !in_generation(f.rt, 2, &tagged->ob));

    for (int round = 0; round < 3; round++) {
        CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
        CHECK_EQ(ft_gc_collect(f.rt, 1), 0);
        CHECK(ALIVE(idc) && ALIVE(idt) && ALIVE(idk));
        CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
        CHECK(ALIVE(idc) && ALIVE(idt) && ALIVE(idk));
        CHECK(in_generation(f.rt, 2, &box->ob) && in_generation(f.rt, 2, &fr->ob));
    }

    /* The containers go: their deferred objects wait for the next full collection. */
    ft_decref(&box->ob);
    ft_decref(&fr->ob);
    CHECK_EQ(atomic_load(&frames_freed), 1);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 0);
    CHECK(ALIVE(idc) && ALIVE(idt));
    CHECK_EQ(ft_gc_collect(f.rt, 2), 3); /* and the child, reached only from tagged */
    CHECK(FREED(idc) && FREED(idt) && FREED(idk));
    teardown(f);
}

int main(void)
{
    RUN(shared_deferred_object_on_two_stacks_while_a_third_thread_collects);
    RUN(per_thread_counted_and_deferred_objects_in_one_garbage_cycle);
    RUN(deferred_object_held_only_by_an_old_container);
    return harness_done();
}
