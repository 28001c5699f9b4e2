/* tests/test_gc_threads.c: the cycle collector and weak references with several threads.
 *
 * The collector stops the world to find garbage among objects that other threads own, count and link;
 * these tests check that it never frees a live object nor misses or doubly frees a dead one:
 *   - collections (of every generation) while commanded workers allocate, link, unlink and drop
 *     random small graphs of their own nodes, and pass nodes to each other through a shared slot
 *     (so graphs span owners); at the end everything is dropped and collected, and every node was
 *     deallocated exactly once;
 *   - cycles through nodes owned by several threads, some of which have stopped (ft_thread_stop);
 *   - ft_weakref_get on one thread racing the referent's last decref on another: it returns NULL or
 *     a live object with a reference, never a freed one;
 *   - nodes with per-thread reference counts (ft_uniqueid_enable) in a garbage cycle are collected
 *     once every thread's slots say so, and their ids are released;
 *   - automatic collections triggered from several threads at once (small thresholds): each cycle is
 *     freed once, and collections happened;
 *   - a page listed young by a thread that then stops (its heap set freed) is still walked;
 *   - a mixed stress: threads make two-object cycles with finalizers that publish their object in
 *     shared slots (resurrection seen by other threads), weak references with callbacks dropped on
 *     any thread, nodes taken from the slots and linked in, collections of every generation started
 *     by every thread and by automatic scheduling; at the end every node is freed once and every
 *     finalizer ran exactly once.
 *
 * Threads hand work to each other through test_util.h's commanded workers; no sleeps. Runs under
 * ThreadSanitizer (make tsan) with fewer iterations. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>

#include "ftrt.h"
#define TEST_GC_NODE
#define WAIT_LIMIT_NS (60 * INT64_C(1000000000)) /* TSan and a shared two-core machine */
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------------------- */

#define SCALE(n) (UNDER_TSAN ? (n) / 10 : (n))

#define setup gc_fixture_setup

/* Every node made since the reset was deallocated exactly once, and none is left. */
static void check_all_freed_once(void)
{
    gc_node_check_all_freed_once();
    CHECK_EQ(gc_node_live(), 0);
}

static void teardown(fixture f)
{
    check_helpers_ok();
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
#endif
    fixture_teardown(f);
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t all_collections(ft_runtime *rt)
{
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(rt, s);
    return s[0].collections + s[1].collections + s[2].collections;
}

/* ---- collections while threads mutate ---------------------------------------------------------- */

#define ROOTS 16
#define FOREIGN 8

/* A worker's graph: its own nodes (which only it mutates) and nodes other threads made (which it
 * only references). */
typedef struct churn {
    gc_node *own[ROOTS];
    ft_object *foreign[FOREIGN];
    uint64_t rng;
    int iterations;
} churn;

static gc_node *_Atomic exchange_slot;

static void put_in_slot(gc_node *n)
{
    ft_incref(&n->ob);
    gc_node *old = atomic_exchange(&exchange_slot, n);
    if (old)
        ft_decref(&old->ob);
}

static void churn_step(ft_thread *t, churn *c)
{
    uint64_t r = xorshift(&c->rng);
    int i = (int)(r % ROOTS), j = (int)((r >> 8) % ROOTS), k = (int)((r >> 16) % FOREIGN);
    switch ((r >> 24) % 10) {
    case 0:
    case 1: /* a new node in slot i, maybe a self-cycle */
        if (c->own[i])
            ft_decref(&c->own[i]->ob);
        c->own[i] = gc_node_new(t, &gc_node_type);
        if (c->own[i] && (r >> 32) % 3 == 0)
            gc_node_append(c->own[i], &c->own[i]->ob);
        break;
    case 2:
    case 3:
    case 4: /* link i -> j (cycles when j reaches i) */
        if (c->own[i] && c->own[j] && c->own[i]->n < 6)
            gc_node_append(c->own[i], &c->own[j]->ob);
        break;
    case 5: /* link i -> a foreign node */
        if (c->own[i] && c->foreign[k] && c->own[i]->n < 6)
            gc_node_append(c->own[i], c->foreign[k]);
        break;
    case 6: /* unlink i's last */
        if (c->own[i])
            ft_xdecref(gc_node_pop(c->own[i]));
        break;
    case 7: /* drop i */
        if (c->own[i]) {
            ft_decref(&c->own[i]->ob);
            c->own[i] = NULL;
        }
        break;
    case 8: /* offer i to the other threads */
        if (c->own[i])
            put_in_slot(c->own[i]);
        break;
    case 9: { /* take what another thread offered */
        gc_node *n = atomic_exchange(&exchange_slot, NULL);
        if (n) {
            ft_xdecref(c->foreign[k]);
            c->foreign[k] = &n->ob;
        }
        break;
    }
    }
}

static _Atomic int churning;

static void cmd_churn(commanded *w)
{
    churn *c = w->ctx;
    for (int n = 0; n < c->iterations; n++) {
        churn_step(w->t, c);
        ft_safepoint(w->t);
    }
    atomic_fetch_sub(&churning, 1);
}

static void cmd_drop_all(commanded *w)
{
    churn *c = w->ctx;
    for (int i = 0; i < ROOTS; i++) {
        if (c->own[i])
            ft_decref(&c->own[i]->ob);
        c->own[i] = NULL;
    }
    for (int k = 0; k < FOREIGN; k++) {
        ft_xdecref(c->foreign[k]);
        c->foreign[k] = NULL;
    }
}

TEST(collections_while_threads_allocate_link_and_drop)
{
    enum { WORKERS = 2 };
    fixture f = setup();
    atomic_store(&exchange_slot, NULL);
    static churn c[WORKERS];
    commanded w[WORKERS];
    int posted[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        c[i].iterations = SCALE(20000);
        commanded_start_with(f.t, &w[i], f.rt, NULL, &c[i]);
    }
    atomic_store(&churning, WORKERS);
    for (int i = 0; i < WORKERS; i++)
        posted[i] = commanded_post(&w[i], cmd_churn, NULL);
    int collections = 0;
    while (atomic_load(&churning) > 0) {
        CHECK(ft_gc_collect(f.rt, collections % 3) >= 0);
        collections++;
        ft_safepoint(f.t);
    }
    for (int i = 0; i < WORKERS; i++)
        commanded_wait(f.t, &w[i], posted[i]);
    check_helpers_ok();
    CHECK(collections > 0);
    for (int i = 0; i < WORKERS; i++)
        commanded_do(f.t, &w[i], cmd_drop_all, NULL);
    gc_node *left = atomic_exchange(&exchange_slot, NULL);
    if (left)
        ft_decref(&left->ob);
    for (int i = 0; i < WORKERS; i++)
        commanded_finish(f.t, &w[i]);
    ft_gc_collect(f.rt, 2);
    ft_gc_collect(f.rt, 2);
    check_all_freed_once();
    teardown(f);
}

/* ---- cycles across owners, some stopped --------------------------------------------------------- */

typedef struct ring_ctx {
    gc_node *mine;
    gc_node *next; /* the node mine links to */
} ring_ctx;

static void cmd_make(commanded *w)
{
    ring_ctx *r = w->ctx;
    r->mine = gc_node_new(w->t, &gc_node_type);
}

static void cmd_link_and_drop(commanded *w)
{
    ring_ctx *r = w->ctx;
    gc_node_append(r->mine, &r->next->ob);
    ft_decref(&r->mine->ob);
}

TEST(cycles_across_owners_some_stopped)
{
    fixture f = setup();
    for (int round = 0; round < 3; round++) {
        /* Ring m (main) -> a (A) -> b (B) -> m; round 0: A stops before the collection; round 1:
         * both stop; round 2: none. */
        gc_node_reset();
        commanded A, B;
        ring_ctx ra = {0}, rb = {0};
        commanded_start_with(f.t, &A, f.rt, NULL, &ra);
        commanded_start_with(f.t, &B, f.rt, NULL, &rb);
        commanded_do(f.t, &A, cmd_make, NULL);
        commanded_do(f.t, &B, cmd_make, NULL);
        gc_node *m = gc_node_new(f.t, &gc_node_type);
        CHECK(m && ra.mine && rb.mine);
        ra.next = rb.mine;
        rb.next = m;
        gc_node_append(m, &ra.mine->ob);
        commanded_do(f.t, &A, cmd_link_and_drop, NULL);
        commanded_do(f.t, &B, cmd_link_and_drop, NULL);
        ft_decref(&m->ob);
        if (round <= 1)
            commanded_finish(f.t, &A);
        if (round == 1)
            commanded_finish(f.t, &B);
        CHECK_EQ(gc_node_live(), 3);
        CHECK_EQ(ft_gc_collect(f.rt, 2), 3);
        CHECK_EQ(gc_node_live(), 0);
        if (round > 1)
            commanded_finish(f.t, &A);
        if (round != 1)
            commanded_finish(f.t, &B);
        check_all_freed_once();
    }

    /* Nodes whose owner stopped before they became garbage: made by a worker, handed to main,
     * the worker stops, then main closes the cycle and drops it. */
    gc_node_reset();
    commanded C;
    ring_ctx rc = {0};
    commanded_start_with(f.t, &C, f.rt, NULL, &rc);
    commanded_do(f.t, &C, cmd_make, NULL);
    gc_node *x = rc.mine; /* main takes C's reference */
    commanded_finish(f.t, &C);
    gc_node *y = gc_node_new(f.t, &gc_node_type);
    CHECK(x && y);
    gc_node_append(y, &x->ob);
    /* x's owner is gone: main may mutate it now that it holds it alone. */
    gc_node_append(x, &y->ob);
    ft_decref(&x->ob);
    ft_decref(&y->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 2);
    check_all_freed_once();
    teardown(f);
}

/* ---- weak reference get racing the last decref --------------------------------------------------- */

#define TARGETS_MAX 4096
typedef struct target {
    ft_object ob;
    ft_weakref *weaklist;
    int id;
    _Atomic uint32_t magic;
} target;
static _Atomic uint8_t target_freed[TARGETS_MAX];
static _Atomic int target_bad;

static void target_dealloc(ft_object *o)
{
    target *p = (target *)o;
    if (atomic_exchange(&p->magic, GC_NODE_DEAD) != GC_NODE_ALIVE)
        atomic_fetch_add(&target_bad, 1);
    atomic_fetch_add(&target_freed[p->id], 1);
}

static const ft_type target_type = {.name = "target",
                                    .basic_size = sizeof(target),
                                    .flags = FT_TYPE_HAS_WEAKREFS,
                                    .weaklist_offset = offsetof(target, weaklist),
                                    .dealloc = target_dealloc};
/* The same, a GC type: the weak reference's get races a collection-free refcount death. */
typedef struct race_ctx {
    target *referent;
    ft_weakref *wr;
    _Atomic int go;
    _Atomic int got, missed;
    int next_id;
} race_ctx;

static void cmd_make_target(commanded *w)
{
    race_ctx *r = w->ctx;
    target *p = (target *)ft_alloc(w->t, &target_type);
    CHECK_THREAD(p != NULL);
    p->id = r->next_id++;
    atomic_store(&p->magic, GC_NODE_ALIVE);
    r->referent = p;
    r->wr = ft_weakref_new(w->t, &p->ob, NULL, NULL);
    CHECK_THREAD(r->wr != NULL);
}

static void wait_go(commanded *w, race_ctx *r)
{
    while (!atomic_load(&r->go))
        ft_safepoint(w->t);
}

static void cmd_get(commanded *w)
{
    race_ctx *r = w->arg;
    wait_go(w, r);
    ft_object *o = ft_weakref_get(r->wr);
    if (o) {
        CHECK_THREAD(o == &r->referent->ob);
        CHECK_THREAD(atomic_load(&((target *)o)->magic) == GC_NODE_ALIVE);
        CHECK_THREAD(ft_refcount(o) >= 1);
        atomic_fetch_add(&r->got, 1);
        ft_decref(o);
    } else {
        atomic_fetch_add(&r->missed, 1);
    }
    /* Once the referent is dead or dying, get says so. */
}

static void cmd_drop_referent(commanded *w)
{
    race_ctx *r = w->ctx;
    wait_go(w, r);
    ft_decref(&r->referent->ob);
}

static void cmd_drop_wr(commanded *w)
{
    race_ctx *r = w->ctx;
    ft_object *o = ft_weakref_get(r->wr);
    /* The referent may still be alive only while the getter's reference is queued to us. */
    if (o) {
        CHECK_THREAD(atomic_load(&((target *)o)->magic) == GC_NODE_ALIVE);
        ft_decref(o);
    }
    ft_decref(&r->wr->ob_base);
    r->wr = NULL;
}

TEST(weakref_get_races_the_last_decref)
{
    fixture f = setup();
    int iterations = UNDER_TSAN ? 300 : 3000;
    CHECK(iterations <= TARGETS_MAX);
    for (int i = 0; i < TARGETS_MAX; i++)
        atomic_store(&target_freed[i], 0);
    atomic_store(&target_bad, 0);
    static race_ctx r;
    memset(&r, 0, sizeof r);
    commanded getter, owner;
    commanded_start(f.t, &getter, f.rt);
    commanded_start_with(f.t, &owner, f.rt, NULL, &r);
    for (int i = 0; i < iterations; i++) {
        commanded_do(f.t, &owner, cmd_make_target, NULL);
        atomic_store(&r.go, 0);
        int g = commanded_post(&getter, cmd_get, &r);
        int o = commanded_post(&owner, cmd_drop_referent, NULL);
        atomic_store(&r.go, 1);
        commanded_wait(f.t, &getter, g);
        commanded_wait(f.t, &owner, o);
        commanded_do(f.t, &owner, cmd_drop_wr, NULL);
    }
    commanded_finish(f.t, &getter);
    commanded_finish(f.t, &owner);
    check_helpers_ok();
    CHECK_EQ(atomic_load(&r.got) + atomic_load(&r.missed), iterations);
    for (int i = 0; i < iterations; i++)
        CHECK_EQ(atomic_load(&target_freed[i]), 1);
    CHECK_EQ(atomic_load(&target_bad), 0);
    teardown(f);
}

/* ---- per-thread reference counts in a garbage cycle ------------------------------------------------ */

static void cmd_uid_incref(commanded *w)
{
    ft_uniqueid_incref(w->t, w->arg);
}

static void cmd_uid_decref(commanded *w)
{
    ft_uniqueid_decref(w->t, w->arg);
}

TEST(per_thread_counted_nodes_in_a_garbage_cycle)
{
    fixture f = setup();
    commanded x;
    commanded_start(f.t, &x, f.rt);
    gc_node *a = gc_node_new(f.t, &gc_uid_type), *b = gc_node_new(f.t, &gc_uid_type);
    CHECK(a && b);
    gc_node_append(a, &b->ob);
    gc_node_append(b, &a->ob);
    CHECK_EQ(ft_uniqueid_enable(f.t, &a->ob), FT_OK);
    CHECK_EQ(ft_uniqueid_enable(f.t, &b->ob), FT_OK);
    uint32_t ida = ft_object_unique_id(&a->ob), idb = ft_object_unique_id(&b->ob);
    CHECK(ida != 0 && idb != 0);
    commanded_do(f.t, &x, cmd_uid_incref, &a->ob); /* x holds a in its slot */
    ft_decref(&a->ob);
    ft_decref(&b->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0);
    CHECK(ALIVE(0) && ALIVE(1));
    /* Slots that cancel out across threads: main +1, x -1 on b; x lets a go. */
    ft_uniqueid_incref(f.t, &b->ob);
    commanded_do(f.t, &x, cmd_uid_decref, &b->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0); /* x still holds a */
    CHECK(ALIVE(0) && ALIVE(1));
    commanded_do(f.t, &x, cmd_uid_decref, &a->ob);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK(FREED(0) && FREED(1));
    /* Their ids were released: the next object to get one reuses one of them. */
    gc_node *fresh = gc_node_new(f.t, &gc_uid_type);
    CHECK(fresh != NULL);
    CHECK_EQ(ft_uniqueid_enable(f.t, &fresh->ob), FT_OK);
    uint32_t idf = ft_object_unique_id(&fresh->ob);
    CHECK(idf == ida || idf == idb);
    ft_decref(&fresh->ob);
    CHECK_EQ(ft_uniqueid_merge(f.rt), 1);
    commanded_finish(f.t, &x);
    check_all_freed_once();
    teardown(f);
}

/* ---- automatic collections from several threads ------------------------------------------------ */

typedef struct alloc_ctx {
    int cycles;
    uint64_t rng;
} alloc_ctx;

static _Atomic int allocating;

static void make_cycles(ft_thread *t, alloc_ctx *c)
{
    for (int i = 0; i < c->cycles; i++) {
        uint64_t r = xorshift(&c->rng);
        gc_node *a = gc_node_new(t, &gc_node_type);
        if (!a)
            return;
        if (r % 2) {
            gc_node_append(a, &a->ob);
        } else {
            gc_node *b = gc_node_new(t, &gc_node_type);
            if (!b)
                return;
            gc_node_append(a, &b->ob);
            gc_node_append(b, &a->ob);
            ft_decref(&b->ob);
        }
        ft_decref(&a->ob);
        ft_safepoint(t);
    }
}

static void cmd_make_cycles(commanded *w)
{
    make_cycles(w->t, w->ctx);
    atomic_fetch_sub(&allocating, 1);
}

TEST(automatic_collections_from_several_threads)
{
    enum { WORKERS = 2 };
    fixture f = setup();
    const long th[FT_GC_GENERATIONS] = {25, 4, 4};
    CHECK_EQ(ft_gc_set_threshold(f.rt, th), FT_OK);
    ft_gc_enable(f.rt);
    static alloc_ctx c[WORKERS + 1];
    commanded w[WORKERS];
    int posted[WORKERS];
    for (int i = 0; i <= WORKERS; i++) {
        c[i].cycles = SCALE(5000);
        c[i].rng = 0x2545F4914F6CDD1Dull * (uint64_t)(i + 1);
    }
    for (int i = 0; i < WORKERS; i++)
        commanded_start_with(f.t, &w[i], f.rt, NULL, &c[i]);
    atomic_store(&allocating, WORKERS);
    for (int i = 0; i < WORKERS; i++)
        posted[i] = commanded_post(&w[i], cmd_make_cycles, NULL);
    make_cycles(f.t, &c[WORKERS]);
    for (int i = 0; i < WORKERS; i++)
        commanded_wait(f.t, &w[i], posted[i]);
    check_helpers_ok();
    uint64_t automatic = all_collections(f.rt);
    CHECK(automatic > 0);
    ft_gc_generation_stats s[FT_GC_GENERATIONS];
    ft_gc_get_stats(f.rt, s);
    CHECK(s[0].collected > 0);
    ft_gc_disable(f.rt);
    for (int i = 0; i < WORKERS; i++)
        commanded_finish(f.t, &w[i]);
    ft_gc_collect(f.rt, 2);
    check_all_freed_once();
    /* The garbage the automatic collections freed, plus the final collection's, is every node. */
    ft_gc_get_stats(f.rt, s);
    CHECK_EQ(s[0].collected + s[1].collected + s[2].collected, atomic_load(&gc_node_next_id));
    teardown(f);
}

/* ---- a page listed by a thread that stops ------------------------------------------------------- */

enum { ORPHAN_FILL = 4096 };
static gc_node *orphan_node, *orphan_fill[ORPHAN_FILL];

/* x: a self-cycle made untracked, then enough other nodes that its page stops being an allocation
 * page. */
static void cmd_make_untracked_cycle(commanded *w)
{
    orphan_node = gc_node_new_untracked(w->t, &gc_node_type);
    CHECK_THREAD(orphan_node != NULL);
    gc_node_append(orphan_node, &orphan_node->ob);
    for (int i = 0; i < ORPHAN_FILL; i++)
        orphan_fill[i] = gc_node_new(w->t, &gc_node_type);
}

/* y, holding the node's only reference: track it (its page is listed on y's heap set) and drop it. */
static void cmd_track_and_drop(commanded *w)
{
    (void)w;
    ft_gc_track(&orphan_node->ob);
    ft_decref(&orphan_node->ob);
}

static void cmd_drop_fill(commanded *w)
{
    (void)w;
    for (int i = 0; i < ORPHAN_FILL; i++)
        ft_decref(&orphan_fill[i]->ob);
}

/* y tracks an object on x's page, then stops with nothing of its own allocated, so its heap set is
 * freed: the page it listed must still be walked by the next young collection (the runtime's
 * orphans, heap.c). */
TEST(young_page_listed_by_a_stopped_thread)
{
    fixture f = setup();
    commanded x, y;
    commanded_start(f.t, &x, f.rt);
    commanded_do(f.t, &x, cmd_make_untracked_cycle, NULL);
    int id = orphan_node->id;
    CHECK_EQ(ft_gc_collect(f.rt, 2), 0); /* a new epoch: x's old pages are not listed */
    commanded_start(f.t, &y, f.rt);
    commanded_do(f.t, &y, cmd_track_and_drop, NULL);
    commanded_finish(f.t, &y);
    CHECK_EQ(ft_gc_collect(f.rt, 0), 1);
    CHECK(FREED(id));
    commanded_do(f.t, &x, cmd_drop_fill, NULL);
    commanded_finish(f.t, &x);
    teardown(f);
}

/* ---- the mixed stress ---------------------------------------------------------------------------- */

enum { STRESS_SLOTS = 64, STRESS_THREADS = 3 };
static ft_object *_Atomic stress_slot[STRESS_SLOTS];
static _Atomic uint8_t stress_has_finalizer[GC_NODE_MAX];

/* Publish o in slot i (a reference for the slot), dropping what was there. */
static void stress_publish(int i, ft_object *o)
{
    ft_object *old = atomic_exchange(&stress_slot[i % STRESS_SLOTS], ft_new_ref_for_shared_slot(o));
    ft_xdecref(old);
}

/* A finalizer that sometimes resurrects its object into a slot other threads read. */
static void stress_finalize(ft_object *self)
{
    gc_node *n = (gc_node *)self;
    atomic_fetch_add(&gc_node_finalized[n->id], 1);
    if (n->id % 8 == 3)
        stress_publish(n->id, self);
}

static const ft_type stress_fin_type = {GC_NODE_TYPE_INIT("stress_fin"), .finalize = stress_finalize};

static void stress_callback(ft_weakref *wr, ft_object *arg)
{
    (void)wr;
    (void)arg;
}

static void cmd_stress(commanded *w)
{
    uint64_t rng = 0x2545F4914F6CDD1Dull * (uint64_t)(uintptr_t)w->arg;
    for (int it = 0; it < SCALE(6000); it++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        unsigned k = (unsigned)(rng >> 33);
        gc_node *a = gc_node_new(w->t, (k & 1) ? &stress_fin_type : &gc_node_type);
        gc_node *b = gc_node_new(w->t, &gc_node_type);
        CHECK_THREAD(a && b);
        if (k & 1)
            atomic_store(&stress_has_finalizer[a->id], 1);
        gc_node_append(a, &b->ob);
        gc_node_append(b, &a->ob);
        ft_object *taken = ft_get_ref(&stress_slot[k % STRESS_SLOTS]);
        if (taken)
            gc_node_append(a, taken), ft_decref(taken);
        ft_weakref *wr = (k & 3) == 0 ? ft_weakref_new(w->t, (k & 4) ? &a->ob : &b->ob,
                                                       stress_callback, NULL)
                                      : NULL;
        if (k % 5 == 0)
            stress_publish((int)(k >> 3), &b->ob);
        ft_decref(&a->ob);
        ft_decref(&b->ob);
        if (wr) {
            ft_object *r = ft_weakref_get(wr);
            ft_xdecref(r);
            if (k & 8)
                stress_publish((int)(k >> 5), &wr->ob_base);
            ft_decref(&wr->ob_base);
        }
        if (k % 997 == 0)
            CHECK_THREAD(ft_gc_collect(w->rt, (int)(k % 3)) >= 0);
        ft_safepoint(w->t);
    }
}

TEST(mixed_stress_with_finalizers_weakrefs_and_shared_slots)
{
    fixture f = setup();
    for (int id = 0; id < GC_NODE_MAX; id++)
        atomic_store(&stress_has_finalizer[id], 0);
    long threshold[FT_GC_GENERATIONS] = {300, 5, 5};
    CHECK_EQ(ft_gc_set_threshold(f.rt, threshold), FT_OK);
    ft_gc_enable(f.rt);
    commanded w[STRESS_THREADS];
    int posted[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++)
        commanded_start(f.t, &w[i], f.rt);
    for (int i = 0; i < STRESS_THREADS; i++)
        posted[i] = commanded_post(&w[i], cmd_stress, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < STRESS_THREADS; i++)
        commanded_wait(f.t, &w[i], posted[i]);
    for (int i = 0; i < STRESS_THREADS; i++)
        commanded_finish(f.t, &w[i]);
    ft_gc_disable(f.rt);
    /* Finalizers may publish again while the slots empty: until nothing is left. */
    for (int round = 0; round < 8 && gc_node_live() > 0; round++) {
        for (int i = 0; i < STRESS_SLOTS; i++)
            ft_xdecref(atomic_exchange(&stress_slot[i], NULL));
        ft_gc_collect(f.rt, 2);
    }
    CHECK_EQ(gc_node_live(), 0);
    /* Each finalizer ran exactly once (by reference counting or by the collector), none twice. */
    int made = atomic_load(&gc_node_next_id), wrong = 0;
    for (int id = 0; id < made; id++)
        wrong += atomic_load(&gc_node_finalized[id]) != atomic_load(&stress_has_finalizer[id]);
    CHECK_EQ(wrong, 0);
    ft_gc_generation_stats stats[FT_GC_GENERATIONS];
    ft_gc_get_stats(f.rt, stats);
    CHECK(stats[0].collections > 0);
    teardown(f);
}

int main(void)
{
    RUN(collections_while_threads_allocate_link_and_drop);
    RUN(cycles_across_owners_some_stopped);
    RUN(weakref_get_races_the_last_decref);
    RUN(per_thread_counted_nodes_in_a_garbage_cycle);
    RUN(automatic_collections_from_several_threads);
    RUN(young_page_listed_by_a_stopped_thread);
    RUN(mixed_stress_with_finalizers_weakrefs_and_shared_slots);
    return harness_done();
}
