/* tests/test_weakref.c: weak references (ftrt/weakref.h), with Python's weakref.ref semantics, on the
 * reference counting path and in the collector (after CPython's test_weakref.py and the weak
 * reference parts of test_gc.py).
 *
 * Covered: which referents are accepted; get (a new reference, NULL once the referent is dead) and
 * the count of weak references; the refcount path's order (the referent's finalizer, then every weak
 * reference cleared, then the callbacks, newest first), a finalizer that resurrects (nothing cleared,
 * no callback until the object really dies), weak references that die first (no callback), the
 * callback's object (held, released), a callback that drops its weak reference's last reference;
 * the collector's order (every weak reference to the garbage cleared before any finalizer runs, all
 * callbacks before all finalizers, newest first), callbacks of garbage weak references not called,
 * a live weak reference freed right after its callback counted in collect's result, a callback's
 * object that keeps its referent reachable; host subtypes (ft_weakref_new_of_type) whose own
 * traverse, clear and dealloc run, and which take part in cycles.
 *
 * The referents are tests/test_util.h's gc_nodes, whose deallocs are counted by id. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>
#include <stddef.h>

#include "ftrt.h"
#define TEST_GC_NODE
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------------------- */


/* Weak references the callbacks know by a label (1-based), and the ones they check are cleared. */
#define LABELS 16
static ft_weakref *labelled[LABELS + 1];
static int label_count;
static _Atomic int callbacks;

static void reset_labels(void)
{
    memset(labelled, 0, sizeof labelled);
    label_count = 0;
    atomic_store(&callbacks, 0);
}

static int label_of(ft_weakref *wr)
{
    for (int i = 1; i <= label_count; i++)
        if (labelled[i] == wr)
            return i;
    return 0;
}

/* Logs "C<label> " and checks that every labelled weak reference whose referent is dead is clear:
 * they all are cleared before the first callback runs. */
static void log_callback(ft_weakref *wr, ft_object *arg)
{
    (void)arg;
    atomic_fetch_add(&callbacks, 1);
    gc_log("C%d ", label_of(wr));
    ft_object *o = ft_weakref_get(wr);
    CHECK_THREAD(o == NULL);
    ft_xdecref(o);
}

static ft_weakref *new_weakref(ft_thread *t, gc_node *referent, ft_weakref_callback cb,
                               ft_object *arg)
{
    ft_weakref *wr = ft_weakref_new(t, &referent->ob, cb, arg);
    CHECK(wr != NULL);
    CHECK(label_count < LABELS);
    labelled[++label_count] = wr;
    return wr;
}

static void drop_wr(ft_weakref *wr)
{
    ft_decref(&wr->ob_base);
}

static fixture setup(void)
{
    reset_labels();
    return gc_fixture_setup();
}

#define teardown gc_fixture_teardown

static gc_node *new_node(ft_thread *t, const ft_type *type)
{
    gc_node *n = gc_node_new(t, type);
    CHECK(n != NULL);
    return n;
}

static void drop(gc_node *n)
{
    ft_decref(&n->ob);
}

static void link_to(gc_node *from, gc_node *to)
{
    gc_node_append(from, &to->ob);
}

/* A self-cycle of type, dropped. */
static gc_node *self_cycle(ft_thread *t, const ft_type *type)
{
    gc_node *n = new_node(t, type);
    link_to(n, n);
    return n;
}

/* Weakly referenceable objects that are not GC objects; and objects that are not weakly
 * referenceable. */
typedef struct plain_weak {
    ft_object ob;
    ft_weakref *weaklist;
    int payload;
} plain_weak;
static const ft_type plain_weak_type = {.name = "plain_weak",
                                        .basic_size = sizeof(plain_weak),
                                        .flags = FT_TYPE_HAS_WEAKREFS,
                                        .weaklist_offset = offsetof(plain_weak, weaklist),
                                        .dealloc = count_dealloc};
static const ft_type no_weak_type = {
    .name = "no_weak", .basic_size = sizeof(plain_weak), .dealloc = count_dealloc};
static const ft_type gc_no_weak_type = {.name = "gc_no_weak",
                                        .basic_size = sizeof(gc_node),
                                        .flags = FT_TYPE_GC,
                                        .traverse = gc_node_traverse,
                                        .clear = gc_node_clear,
                                        .dealloc = gc_node_dealloc};

/* ---- a weak reference whose last reference waits in its owner's merge queue ------------------- */

static ft_weakref *made_by_x;

static void cmd_make_weakref(commanded *w)
{
    made_by_x = ft_weakref_new(w->t, w->arg, log_callback, NULL);
    CHECK_THREAD(made_by_x != NULL);
}

/* The weak reference is owned by x, which then detaches (its queue is not drained); this thread
 * drops the last reference, so the weak reference waits, QUEUED, in x's merge queue. The
 * collection's settling merges it, dead, while it is still on its referent's list. The collector
 * must neither call its callback nor take a reference to it (a debug build calls that an incref
 * from zero; a release build would free it twice). */
TEST(collector_skips_a_weakref_that_died_in_a_merge_queue)
{
    fixture f = setup();
    commanded x;
    commanded_start(f.t, &x, f.rt);
    gc_node *r = self_cycle(f.t, &gc_node_type);
    int idr = r->id;
    commanded_do(f.t, &x, cmd_make_weakref, &r->ob);
    commanded_do(f.t, &x, (commanded_fn)cmd_detach, NULL);
    drop(r);
    ft_decref(&made_by_x->ob_base); /* the last reference, by a non-owner: queued to x */
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(idr));
    CHECK_EQ(atomic_load(&callbacks), 0);
    commanded_do(f.t, &x, (commanded_fn)cmd_attach, NULL);
    cmd_resume(&x);
    commanded_finish(f.t, &x);
    teardown(f);
}

/* A host subtype: an ft_weakref with a tag and a strong reference of its own. */
typedef struct host_wr {
    ft_weakref base;
    int tag;
    ft_object *extra;
} host_wr;
static _Atomic int host_deallocs, host_clears, host_traverses;

static int host_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    host_wr *h = (host_wr *)self;
    atomic_fetch_add(&host_traverses, 1);
    return h->extra ? visit(h->extra, arg) : 0;
}

static void host_clear(ft_object *self)
{
    host_wr *h = (host_wr *)self;
    ft_object *extra = h->extra;
    h->extra = NULL;
    atomic_fetch_add(&host_clears, 1);
    ft_xdecref(extra);
}

static void host_dealloc(ft_object *self)
{
    host_wr *h = (host_wr *)self;
    ft_object *extra = h->extra;
    h->extra = NULL;
    h->tag = -1;
    ft_xdecref(extra);
    atomic_fetch_add(&host_deallocs, 1);
}

static const ft_type host_wr_type = {.name = "host_wr",
                                     .basic_size = sizeof(host_wr),
                                     .flags = FT_TYPE_GC | FT_TYPE_WEAKREF,
                                     .traverse = host_traverse,
                                     .clear = host_clear,
                                     .dealloc = host_dealloc};

static void reset_host(void)
{
    atomic_store(&host_deallocs, 0);
    atomic_store(&host_clears, 0);
    atomic_store(&host_traverses, 0);
}

/* ---- creation and get ------------------------------------------------------------------------------ */

TEST(only_weakly_referenceable_types)
{
    fixture f = setup();
    atomic_store(&counted_deallocs, 0);
    ft_object *o = ft_alloc(f.t, &no_weak_type);
    CHECK(o != NULL);
    CHECK(ft_weakref_new(f.t, o, NULL, NULL) == NULL);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    gc_node *g = new_node(f.t, &gc_no_weak_type);
    CHECK(ft_weakref_new(f.t, &g->ob, log_callback, NULL) == NULL);
    CHECK_EQ(ft_last_error(), FT_EINVAL);
    CHECK_EQ(ft_refcount(o), 1);
    ft_decref(o);
    drop(g);
    CHECK_EQ(atomic_load(&counted_deallocs), 1);

    teardown(f);
}

/* A host type that is not a weak reference type is a programming error: fatal, naming the type. */
static const ft_type not_flagged = {
    .name = "not_flagged", .basic_size = sizeof(host_wr), .flags = FT_TYPE_GC};
static const ft_type too_small = {.name = "too_small",
                                  .basic_size = sizeof(ft_object) + 8,
                                  .flags = FT_TYPE_GC | FT_TYPE_WEAKREF};

static void weakref_of_bad_type(void *arg)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    gc_node *r = gc_node_new(t, &gc_node_type);
    ft_weakref_new_of_type(t, arg, &r->ob, NULL, NULL);
}

TEST(host_weakref_types_must_be_weakref_types)
{
    CHECK_DEATH(weakref_of_bad_type, (void *)&not_flagged, "ft_weakref_new_of_type", "not_flagged");
    CHECK_DEATH(weakref_of_bad_type, (void *)&too_small, "ft_weakref_new_of_type", "too_small");
}

TEST(get_returns_a_new_reference_until_the_referent_dies)
{
    fixture f = setup();
    gc_node *n = new_node(f.t, &gc_node_type);
    CHECK_EQ(ft_weakref_count(&n->ob), 0);
    ft_weakref *w1 = new_weakref(f.t, n, NULL, NULL);
    CHECK(ft_gc_is_tracked(&w1->ob_base));
    CHECK_EQ(ft_weakref_count(&n->ob), 1);
    CHECK_EQ(ft_refcount(&n->ob), 1); /* weak */
    ft_object *got = ft_weakref_get(w1);
    CHECK(got == &n->ob);
    CHECK_EQ(ft_refcount(&n->ob), 2);
    ft_decref(got);
    ft_weakref *w2 = new_weakref(f.t, n, log_callback, NULL);
    CHECK_EQ(ft_weakref_count(&n->ob), 2);
    drop_wr(w2); /* dies first: no callback, and the count drops */
    CHECK_EQ(ft_weakref_count(&n->ob), 1);
    int id = n->id;
    drop(n);
    CHECK(FREED(id));
    CHECK(ft_weakref_get(w1) == NULL);
    CHECK(ft_weakref_get(w1) == NULL);
    CHECK_EQ(atomic_load(&callbacks), 0);
    drop_wr(w1);

    /* Non-GC referents work the same. */
    atomic_store(&counted_deallocs, 0);
    ft_object *p = ft_alloc(f.t, &plain_weak_type);
    CHECK(p != NULL);
    ft_weakref *w3 = ft_weakref_new(f.t, p, log_callback, NULL);
    CHECK(w3 != NULL);
    got = ft_weakref_get(w3);
    CHECK(got == p);
    ft_decref(got);
    ft_decref(p);
    CHECK_EQ(atomic_load(&counted_deallocs), 1);
    CHECK(ft_weakref_get(w3) == NULL);
    CHECK_EQ(atomic_load(&callbacks), 1);
    drop_wr(w3);
    teardown(f);
}

/* ---- the reference counting path ------------------------------------------------------------------- */

/* The referent's finalizer first (its weak references still see it), then every weak reference
 * cleared, then the callbacks, newest first, each with its own weak reference. */
static ft_weakref *fin_probe;
static void fin_sees_referent(gc_node *self)
{
    ft_object *o = ft_weakref_get(fin_probe);
    gc_log("%s ", o == &self->ob ? "live" : o ? "other" : "cleared");
    ft_xdecref(o);
}

TEST(refcount_path_order)
{
    fixture f = setup();
    gc_node *n = new_node(f.t, &gc_fin_type);
    ft_weakref *w1 = new_weakref(f.t, n, log_callback, NULL);
    ft_weakref *w2 = new_weakref(f.t, n, log_callback, NULL);
    ft_weakref *w3 = new_weakref(f.t, n, log_callback, NULL);
    fin_probe = w1;
    gc_fin_body = fin_sees_referent;
    drop(n);
    CHECK_LOG("F0 live C3 C2 C1 ");
    CHECK(FREED(0));
    CHECK(ft_weakref_get(w1) == NULL && ft_weakref_get(w2) == NULL && ft_weakref_get(w3) == NULL);
    drop_wr(w1);
    drop_wr(w2);
    drop_wr(w3);
    teardown(f);
}

/* A finalizer that resurrects: nothing is cleared and no callback runs; when the object dies for
 * good, the finalizer does not run again and the weak references are cleared then. */
static ft_object *resurrected;
static void resurrect(gc_node *self)
{
    ft_incref(&self->ob);
    resurrected = &self->ob;
}

TEST(refcount_path_resurrection)
{
    fixture f = setup();
    gc_node *n = new_node(f.t, &gc_fin_type);
    ft_weakref *w1 = new_weakref(f.t, n, log_callback, NULL);
    gc_fin_body = resurrect;
    drop(n);
    CHECK_LOG("F0 ");
    CHECK(ALIVE(0));
    ft_object *got = ft_weakref_get(w1);
    CHECK(got == &n->ob);
    ft_decref(got);
    CHECK_EQ(ft_weakref_count(&n->ob), 1);
    gc_fin_body = NULL;
    ft_decref(resurrected);
    CHECK_LOG("F0 C1 ");
    CHECK(FREED(0));
    drop_wr(w1);
    teardown(f);
}

/* The callback's object is held by the weak reference until the weak reference dies or is cleared:
 * a cleared weak reference lets go of its callback and its object once the callback has run
 * (CPython's clear_weakref drops wr_callback). */
TEST(callback_object_is_held_and_released)
{
    fixture f = setup();
    gc_node *arg = new_node(f.t, &gc_node_type);
    gc_node *r1 = new_node(f.t, &gc_node_type), *r2 = new_node(f.t, &gc_node_type);
    ft_weakref *w1 = new_weakref(f.t, r1, log_callback, &arg->ob);
    ft_weakref *w2 = new_weakref(f.t, r2, log_callback, &arg->ob);
    CHECK_EQ(ft_refcount(&arg->ob), 3);
    drop_wr(w1); /* before its referent: no callback */
    CHECK_EQ(ft_refcount(&arg->ob), 2);
    drop(r1);
    CHECK_EQ(ft_refcount(&arg->ob), 2);
    drop(r2); /* w2's callback, then w2 lets arg go */
    CHECK_LOG("C2 ");
    CHECK_EQ(ft_refcount(&arg->ob), 1);
    drop_wr(w2);
    CHECK_EQ(ft_refcount(&arg->ob), 1);
    drop(arg);
    teardown(f);
}

/* A callback that drops the last reference to its own weak reference: the call holds one of its own,
 * so the weak reference dies after the callback returns. */
static ft_weakref *held_wr;
static void drop_own_weakref(ft_weakref *wr, ft_object *arg)
{
    (void)arg;
    CHECK_THREAD(wr == held_wr);
    atomic_fetch_add(&callbacks, 1);
    ft_weakref *w = held_wr;
    held_wr = NULL;
    ft_decref(&w->ob_base);
    CHECK_THREAD(ft_refcount(&wr->ob_base) >= 1);
}

TEST(callback_dropping_its_own_weakref)
{
    fixture f = setup();
    gc_node *arg = new_node(f.t, &gc_node_type);
    gc_node *r = new_node(f.t, &gc_node_type);
    held_wr = new_weakref(f.t, r, drop_own_weakref, &arg->ob);
    drop(r);
    CHECK_EQ(atomic_load(&callbacks), 1);
    CHECK(held_wr == NULL);
    CHECK_EQ(ft_refcount(&arg->ob), 1); /* the weak reference is gone */
    drop(arg);
    teardown(f);
}

/* ---- the collector --------------------------------------------------------------------------------- */

/* Every weak reference to the garbage is cleared before any finalizer runs. */
static ft_weakref *probes[4];
static void fin_checks_cleared(gc_node *self)
{
    for (int i = 0; i < 4; i++) {
        if (!probes[i])
            continue;
        ft_object *o = ft_weakref_get(probes[i]);
        CHECK_THREAD(o == NULL);
        ft_xdecref(o);
    }
    CHECK_THREAD(ft_weakref_count(&self->ob) == 0);
}

TEST(collector_clears_weakrefs_before_finalizers)
{
    fixture f = setup();
    gc_node *a = new_node(f.t, &gc_fin_type), *b = new_node(f.t, &gc_fin_type);
    link_to(a, b);
    link_to(b, a);
    memset(probes, 0, sizeof probes);
    probes[0] = new_weakref(f.t, a, NULL, NULL);
    probes[1] = new_weakref(f.t, b, NULL, NULL);
    probes[2] = new_weakref(f.t, a, NULL, NULL);
    gc_fin_body = fin_checks_cleared;
    drop(a);
    drop(b);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK_EQ(atomic_load(&gc_node_finalizes), 2);
    check_helpers_ok();
    CHECK(FREED(0) && FREED(1));
    for (int i = 0; i < 3; i++) {
        CHECK(ft_weakref_get(probes[i]) == NULL);
        drop_wr(probes[i]);
    }
    teardown(f);
}

/* Callbacks of live weak references run, newest first for one referent, all before any finalizer. */
TEST(collector_calls_live_callbacks_newest_first_before_finalizers)
{
    fixture f = setup();
    gc_node *a = self_cycle(f.t, &gc_fin_type); /* id 0 */
    gc_node *b = self_cycle(f.t, &gc_fin_type); /* id 1 */
    ft_weakref *w[4];
    w[0] = new_weakref(f.t, a, log_callback, NULL); /* C1 */
    w[1] = new_weakref(f.t, a, log_callback, NULL); /* C2 */
    w[2] = new_weakref(f.t, b, log_callback, NULL); /* C3 */
    w[3] = new_weakref(f.t, b, log_callback, NULL); /* C4 */
    drop(a);
    drop(b);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    check_helpers_ok(); /* each callback saw its weak reference cleared */
    CHECK(FREED(0) && FREED(1));
    /* Four callbacks, then two finalizers. */
    const char *c1 = strstr(gc_log_text, "C1 "), *c2 = strstr(gc_log_text, "C2 ");
    const char *c3 = strstr(gc_log_text, "C3 "), *c4 = strstr(gc_log_text, "C4 ");
    const char *f0 = strstr(gc_log_text, "F0 "), *f1 = strstr(gc_log_text, "F1 ");
    if (!(c1 && c2 && c3 && c4 && f0 && f1))
        fprintf(stderr, "log: %s\n", gc_log_text);
    CHECK(c1 && c2 && c3 && c4 && f0 && f1);
    CHECK(c2 < c1 && c4 < c3);
    const char *first_fin = f0 < f1 ? f0 : f1;
    CHECK(c1 < first_fin && c2 < first_fin && c3 < first_fin && c4 < first_fin);
    CHECK_EQ(strlen(gc_log_text), 6 * 3);
    for (int i = 0; i < 4; i++)
        drop_wr(w[i]);
    teardown(f);
}

/* A weak reference that is itself garbage gets no callback, whether its referent is garbage too or
 * alive; it counts as an unreachable object. */
TEST(collector_skips_callbacks_of_garbage_weakrefs)
{
    fixture f = setup();
    /* a -> a and a -> (weak reference to a, with a callback); and a live one with a callback. */
    gc_node *a = self_cycle(f.t, &gc_node_type);
    ft_weakref *inner = new_weakref(f.t, a, log_callback, NULL); /* C1 */
    gc_node_append(a, &inner->ob_base);
    drop_wr(inner);
    ft_weakref *outer = new_weakref(f.t, a, log_callback, NULL); /* C2 */
    drop(a);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK_LOG("C2 ");
    CHECK(FREED(0));
    drop_wr(outer);

    /* Garbage holding a weak reference to a live object: freed without its callback. */
    gc_log_len = 0;
    gc_log_text[0] = 0;
    gc_node *live = new_node(f.t, &gc_node_type);
    gc_node *g = self_cycle(f.t, &gc_node_type);
    ft_weakref *w = new_weakref(f.t, live, log_callback, NULL); /* C3 */
    gc_node_append(g, &w->ob_base);
    drop_wr(w);
    drop(g);
    CHECK_EQ(ft_weakref_count(&live->ob), 1);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK_EQ(ft_weakref_count(&live->ob), 0);
    CHECK_LOG("");
    int id = live->id;
    drop(live);
    CHECK(FREED(id));
    CHECK_LOG("");
    teardown(f);
}

/* A live weak reference whose callback drops its last other reference is freed right after the call,
 * and counts in collect's result (CPython's handle_weakrefs num_freed). */
TEST(weakref_freed_after_its_callback_counts)
{
    fixture f = setup();
    gc_node *a = self_cycle(f.t, &gc_node_type);
    held_wr = new_weakref(f.t, a, drop_own_weakref, NULL);
    drop(a);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK_EQ(atomic_load(&callbacks), 1);
    CHECK(held_wr == NULL);
    CHECK(FREED(0));

    /* The same kept alive by the test: not counted. */
    reset_labels();
    gc_node *b = self_cycle(f.t, &gc_node_type);
    ft_weakref *w = new_weakref(f.t, b, log_callback, NULL);
    drop(b);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK_EQ(atomic_load(&callbacks), 1);
    drop_wr(w);
    teardown(f);
}

/* A live weak reference's callback object is reachable, and so is what it reaches: a weak reference
 * whose callback object is its own referent keeps the referent alive. */
TEST(callback_object_keeps_its_referent_reachable)
{
    fixture f = setup();
    gc_node *a = self_cycle(f.t, &gc_node_type);
    ft_weakref *w = new_weakref(f.t, a, log_callback, &a->ob);
    drop(a);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(ALIVE(0));
    ft_object *got = ft_weakref_get(w);
    CHECK(got == &a->ob);
    ft_decref(got);
    drop_wr(w); /* releases a, a self-cycle again, with no weak reference */
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK(FREED(0));
    CHECK_EQ(atomic_load(&callbacks), 0);
    teardown(f);
}

/* A weak reference to an object resurrected by its finalizer in a collection is cleared all the same
 * (CPython clears before it runs finalizers), and its callback runs. */
TEST(collector_resurrection_still_clears_weakrefs)
{
    fixture f = setup();
    gc_node *a = self_cycle(f.t, &gc_fin_type);
    ft_weakref *w = new_weakref(f.t, a, log_callback, NULL);
    gc_fin_body = resurrect;
    resurrected = NULL;
    drop(a);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(resurrected == &a->ob);
    CHECK(ALIVE(0));
    CHECK_LOG("C1 F0 ");
    CHECK(ft_weakref_get(w) == NULL);
    CHECK_EQ(ft_weakref_count(&a->ob), 0);
    gc_fin_body = NULL;
    ft_decref(resurrected);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 1);
    CHECK_LOG("C1 F0 ");
    CHECK(FREED(0));
    drop_wr(w);
    teardown(f);
}

/* ---- host subtypes --------------------------------------------------------------------------------- */

static _Atomic int host_callback_tag = -2;
static void host_callback(ft_weakref *wr, ft_object *arg)
{
    (void)arg;
    atomic_store(&host_callback_tag, ((host_wr *)wr)->tag);
}

TEST(host_subtype_weakrefs)
{
    fixture f = setup();
    reset_host();
    gc_node *r = new_node(f.t, &gc_node_type);
    gc_node *extra = new_node(f.t, &gc_node_type);
    host_wr *h = (host_wr *)ft_weakref_new_of_type(f.t, &host_wr_type, &r->ob, host_callback, NULL);
    CHECK(h != NULL);
    CHECK(h->base.ob_base.ob_type == &host_wr_type);
    CHECK(ft_gc_is_tracked(&h->base.ob_base));
    CHECK(h->extra == NULL); /* the host part starts zeroed */
    h->tag = 42;
    h->extra = &extra->ob;
    ft_incref(h->extra);
    ft_object *got = ft_weakref_get(&h->base);
    CHECK(got == &r->ob);
    ft_decref(got);
    CHECK_EQ(ft_weakref_count(&r->ob), 1);
    /* Its own traverse runs (referents). */
    ft_object_list l = {0};
    ft_object *self = &h->base.ob_base;
    CHECK_EQ(ft_gc_get_referents(f.rt, &self, 1, &l), FT_OK);
    CHECK(l.count >= 1);
    bool has_extra = false;
    for (size_t i = 0; i < l.count; i++)
        has_extra |= l.items[i] == &extra->ob;
    ft_object_list_clear(&l);
    CHECK(has_extra);
    drop(r);
    CHECK_EQ(atomic_load(&host_callback_tag), 42);
    CHECK(ft_weakref_get(&h->base) == NULL);
    drop(extra);
    CHECK(ALIVE(1));
    ft_decref(&h->base.ob_base);
    CHECK_EQ(atomic_load(&host_deallocs), 1);
    CHECK(FREED(1)); /* released by the host's dealloc */
    teardown(f);
}

/* A host weak reference in a cycle through its own field: found through the host's traverse,
 * broken by the clears, deallocated once; its referent stays alive and loses the weak reference. */
TEST(host_subtype_in_a_cycle)
{
    fixture f = setup();
    reset_host();
    gc_node *r = new_node(f.t, &gc_node_type);
    gc_node *a = new_node(f.t, &gc_node_type);
    host_wr *h = (host_wr *)ft_weakref_new_of_type(f.t, &host_wr_type, &r->ob, host_callback, NULL);
    CHECK(h != NULL);
    h->tag = 7;
    h->extra = &a->ob;
    ft_incref(&a->ob);
    gc_node_append(a, &h->base.ob_base);
    ft_decref(&h->base.ob_base);
    int ida = a->id, idr = r->id;
    drop(a);
    atomic_store(&host_callback_tag, -2);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(atomic_load(&host_traverses) > 0);
    CHECK_EQ(atomic_load(&host_deallocs), 1);
    CHECK(FREED(ida));
    CHECK(ALIVE(idr));
    CHECK_EQ(ft_weakref_count(&r->ob), 0);
    drop(r);
    CHECK(FREED(idr));
    CHECK_EQ(atomic_load(&host_callback_tag), -2); /* it died before its referent */
    teardown(f);
}

int main(void)
{
    RUN(only_weakly_referenceable_types);
    RUN(host_weakref_types_must_be_weakref_types);
    RUN(get_returns_a_new_reference_until_the_referent_dies);
    RUN(refcount_path_order);
    RUN(refcount_path_resurrection);
    RUN(callback_object_is_held_and_released);
    RUN(callback_dropping_its_own_weakref);
    RUN(collector_clears_weakrefs_before_finalizers);
    RUN(collector_calls_live_callbacks_newest_first_before_finalizers);
    RUN(collector_skips_callbacks_of_garbage_weakrefs);
    RUN(weakref_freed_after_its_callback_counts);
    RUN(callback_object_keeps_its_referent_reachable);
    RUN(collector_resurrection_still_clears_weakrefs);
    RUN(collector_skips_a_weakref_that_died_in_a_merge_queue);
    RUN(host_subtype_weakrefs);
    RUN(host_subtype_in_a_cycle);
    return harness_done();
}
