/* tests/test_brc.c: biased reference counting across threads: merge queues and thread exit.
 *
 * An object dropped by a thread that does not own it is queued to its owner, and freed by the owner's
 * next safepoint (or by the owner's ft_thread_stop); once the owner has stopped, whoever drops the
 * object merges and frees it directly. These tests hand objects between threads in each of those
 * situations and check, through a dealloc callback that records every deallocation by object id, that
 * every object is freed exactly once, never early, and by the thread the rules name.
 *
 * The outbox tests (a dropping thread collects a live owner's objects and hands them over in
 * batches) drive an owner and a dropper as commanded workers and check each way an outbox is handed
 * over (full, another owner, the dropper's safepoint, detach, stop), an owner that stops while its
 * objects wait in an outbox, one owner id in two runtimes, destructors that drop objects while a
 * thread stops, and an allocation failure during a hand-over.
 *
 * Stress tests race an owner's ft_thread_stop against other threads' drops; bounce thousands of
 * objects between three threads at random while a fourth repeatedly stops the world and walks the
 * heap, checking that the walk sees exactly the objects not yet freed; race lock-free readers'
 * try-increfs against the last decref, checking that no reader ever gets hold of a freed object; and
 * let four threads drop each other's objects at random while detaching and restarting their thread
 * states.
 *
 * Threads wait for each other with barriers (detached, so a stop-the-world never waits for a blocked
 * thread) or by spinning on atomics with ft_safepoint and a generous deadline. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "ftrt.h"
#include "internal/types.h" /* FT_BRC_OUTBOX; ft_runtime.fail_countdown */

#define WAIT_LIMIT_NS (30 * INT64_C(1000000000))
#include "test_util.h"

/* ---- tracked objects ------------------------------------------------------------------------------ */

#define MAX_OBJECTS (1 << 16)
#define ALIVE 0xA11Eu
#define DEAD 0xDEADu

typedef struct tracked {
    ft_object ob;
    uint32_t id;
    _Atomic uint32_t magic; /* ALIVE from allocation until dealloc poisons it */
} tracked;

static _Atomic uint8_t freed_count[MAX_OBJECTS];
static _Atomic uintptr_t freed_by[MAX_OBJECTS]; /* ft_os_thread_id() of the deallocating thread */
static _Atomic uint32_t next_id, total_freed, bad_deallocs;

static void tracked_dealloc(ft_object *o)
{
    tracked *p = (tracked *)o;
    if (atomic_exchange_explicit(&p->magic, DEAD, memory_order_relaxed) != ALIVE)
        atomic_fetch_add(&bad_deallocs, 1);
    atomic_store(&freed_by[p->id], ft_os_thread_id()); /* before the count others wait for */
    atomic_fetch_add(&freed_count[p->id], 1);
    atomic_fetch_add(&total_freed, 1);
}

static const ft_type tracked_type = {
    .name = "tracked", .basic_size = sizeof(tracked), .dealloc = tracked_dealloc};

static void reset_tracking(void)
{
    for (uint32_t i = 0; i < MAX_OBJECTS; i++) {
        atomic_store_explicit(&freed_count[i], 0, memory_order_relaxed);
        atomic_store_explicit(&freed_by[i], 0, memory_order_relaxed);
    }
    atomic_store(&next_id, 0);
    atomic_store(&total_freed, 0);
    atomic_store(&bad_deallocs, 0);
}

static tracked *new_tracked(ft_thread *t, const ft_type *type)
{
    tracked *p = (tracked *)ft_alloc(t, type);
    if (!p)
        return NULL;
    uint32_t id = atomic_fetch_add(&next_id, 1);
    if (id >= MAX_OBJECTS) {
        fprintf(stderr, "test_brc: more than %d objects\n", MAX_OBJECTS);
        abort();
    }
    p->id = id;
    atomic_store_explicit(&p->magic, ALIVE, memory_order_relaxed);
    return p;
}

static bool is_alive(tracked *p)
{
    return atomic_load_explicit(&p->magic, memory_order_relaxed) == ALIVE &&
           atomic_load(&freed_count[p->id]) == 0;
}

/* Every object allocated since reset_tracking freed exactly once, none freed in a bad state. */
static bool all_freed_once(void)
{
    uint32_t n = atomic_load(&next_id);
    for (uint32_t i = 0; i < n; i++)
        if (atomic_load(&freed_count[i]) != 1) {
            fprintf(stderr, "object %u freed %u times\n", i, (unsigned)atomic_load(&freed_count[i]));
            return false;
        }
    return atomic_load(&total_freed) == n && atomic_load(&bad_deallocs) == 0;
}

static uintptr_t pending_bits(ft_thread *t)
{
    return atomic_load_explicit(&((struct ft_thread_head *)t)->pending, memory_order_relaxed);
}

static void check_heap_empty(ft_runtime *rt)
{
    ft_heap_stats s;
    ft_heap_get_stats(rt, &s);
    CHECK_EQ(s.live_blocks, 0);
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(rt), 0);
#endif
}

/* ---- an owner that keeps running ------------------------------------------------------------------ */

enum { HANDOFF = 600 }; /* more than one merge-queue chunk */

typedef struct handoff {
    ft_runtime *rt;
    tracked *objects[HANDOFF];
    uint32_t ids[HANDOFF]; /* read after the objects are freed, so not from them */
    int count;
    pthread_barrier_t barrier;
    _Atomic uintptr_t owner_os;
    _Atomic bool owner_saw_pending, freed_before_safepoint;
    _Atomic int next_drop; /* phase 2: objects dropped so far, one at a time */
} handoff;

static void handoff_init(handoff *h, ft_runtime *rt, int count)
{
    memset(h->objects, 0, sizeof h->objects);
    h->rt = rt;
    h->count = count;
    pthread_barrier_init(&h->barrier, NULL, 2);
    atomic_store(&h->owner_os, 0);
    atomic_store(&h->owner_saw_pending, false);
    atomic_store(&h->freed_before_safepoint, false);
    atomic_store(&h->next_drop, 0);
}

static void allocate_all(ft_thread *t, handoff *h)
{
    for (int i = 0; i < h->count; i++) {
        h->objects[i] = new_tracked(t, &tracked_type);
        CHECK_THREAD(h->objects[i] != NULL);
        h->ids[i] = h->objects[i] ? h->objects[i]->id : 0;
    }
}

/* The owner allocates, then (phase 1) waits detached while the other thread drops everything, then
 * runs one safepoint; then (phase 2) allocates again and spins at safepoints while the other thread
 * drops them one by one. */
static void *running_owner(void *arg)
{
    handoff *h = arg;
    ft_thread *t = ft_thread_start(h->rt);
    CHECK_THREAD(t != NULL);
    atomic_store(&h->owner_os, ft_os_thread_id());
    allocate_all(t, h);
    barrier_detached(t, &h->barrier); /* handed over */
    barrier_detached(t, &h->barrier); /* all dropped */
    atomic_store(&h->owner_saw_pending, (pending_bits(t) & FT_PENDING_MERGE) != 0);
    atomic_store(&h->freed_before_safepoint, atomic_load(&total_freed) != 0);
    ft_safepoint(t);
    CHECK_THREAD(atomic_load(&total_freed) == (uint32_t)h->count);
    barrier_detached(t, &h->barrier); /* phase 1 done */
    barrier_detached(t, &h->barrier); /* phase 1 checked */

    allocate_all(t, h);
    barrier_detached(t, &h->barrier); /* handed over */
    AWAIT(t, atomic_load(&total_freed) == 2 * (uint32_t)h->count);
    barrier_detached(t, &h->barrier);
    ft_thread_stop(t);
    return NULL;
}

TEST(drop_on_another_thread_while_the_owner_runs)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    static handoff h;
    handoff_init(&h, rt, HANDOFF);
    pthread_t owner;
    CHECK_EQ(pthread_create(&owner, NULL, running_owner, &h), 0);

    barrier_detached(t, &h.barrier);
    for (int i = 0; i < h.count; i++) {
        ft_decref(&h.objects[i]->ob);
        CHECK(is_alive(h.objects[i])); /* queued, not freed: only the owner knows its local count */
        CHECK_EQ(atomic_load(&h.objects[i]->ob.ob_ref_shared), FT_SHARED_QUEUED);
    }
    CHECK_EQ(atomic_load(&total_freed), 0);
    barrier_detached(t, &h.barrier);
    barrier_detached(t, &h.barrier);
    CHECK(atomic_load(&h.owner_saw_pending));
    CHECK(!atomic_load(&h.freed_before_safepoint));
    for (int i = 0; i < h.count; i++) {
        CHECK_EQ(atomic_load(&freed_count[h.ids[i]]), 1);
        CHECK_EQ(atomic_load(&freed_by[h.ids[i]]), atomic_load(&h.owner_os));
    }
    barrier_detached(t, &h.barrier);

    /* Phase 2: the owner is busy at its safepoints; each drop is freed there promptly. */
    barrier_detached(t, &h.barrier);
    for (int i = 0; i < h.count; i++) {
        uint32_t id = h.ids[i];
        ft_decref(&h.objects[i]->ob);
        AWAIT(t, atomic_load(&freed_count[id]) != 0);
        CHECK_EQ(atomic_load(&freed_count[id]), 1);
        CHECK_EQ(atomic_load(&freed_by[id]), atomic_load(&h.owner_os));
    }
    barrier_detached(t, &h.barrier);
    join_detached(t, &owner, 1);
    pthread_barrier_destroy(&h.barrier);
    CHECK(all_freed_once());
    check_heap_empty(rt);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- an owner that stops -------------------------------------------------------------------------- */

/* The owner allocates and hands over, then waits detached; when released it stops its thread state
 * (without a safepoint first), then waits again before its OS thread exits. */
static void *stopping_owner(void *arg)
{
    handoff *h = arg;
    ft_thread *t = ft_thread_start(h->rt);
    CHECK_THREAD(t != NULL);
    atomic_store(&h->owner_os, ft_os_thread_id());
    allocate_all(t, h);
    barrier_detached(t, &h->barrier); /* handed over */
    barrier_detached(t, &h->barrier); /* may stop now */
    ft_thread_stop(t);
    pthread_barrier_wait(&h->barrier); /* stopped */
    pthread_barrier_wait(&h->barrier); /* the OS thread may exit */
    return NULL;
}

TEST(queued_objects_are_freed_when_the_owner_stops)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    static handoff h;
    handoff_init(&h, rt, HANDOFF);
    pthread_t owner;
    CHECK_EQ(pthread_create(&owner, NULL, stopping_owner, &h), 0);
    barrier_detached(t, &h.barrier);
    for (int i = 0; i < h.count; i++)
        ft_decref(&h.objects[i]->ob);
    CHECK_EQ(atomic_load(&total_freed), 0);
    barrier_detached(t, &h.barrier);
    barrier_detached(t, &h.barrier); /* the owner's ft_thread_stop has returned */
    CHECK_EQ(atomic_load(&total_freed), (uint32_t)h.count);
    for (int i = 0; i < h.count; i++)
        CHECK_EQ(atomic_load(&freed_by[h.ids[i]]), atomic_load(&h.owner_os));
    barrier_detached(t, &h.barrier);
    pthread_join(owner, NULL);
    pthread_barrier_destroy(&h.barrier);
    CHECK_THREADS_OK();
    CHECK(all_freed_once());
    check_heap_empty(rt);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* After the owner has stopped, drops merge and free directly: check both when its OS thread is still
 * alive and when it has exited. Half the objects also carry a shared reference taken before the stop,
 * so their first drop only subtracts and their second one frees. */
static void drop_after_owner_stopped(bool owner_exits)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    static handoff h;
    handoff_init(&h, rt, 200);
    pthread_t owner;
    CHECK_EQ(pthread_create(&owner, NULL, stopping_owner, &h), 0);
    barrier_detached(t, &h.barrier);
    for (int i = 0; i < h.count; i += 2)
        ft_incref(&h.objects[i]->ob);
    barrier_detached(t, &h.barrier);
    barrier_detached(t, &h.barrier); /* the owner has stopped */
    if (owner_exits) {
        barrier_detached(t, &h.barrier);
        pthread_join(owner, NULL);
    }
    CHECK_EQ(atomic_load(&total_freed), 0);
    for (int i = 0; i < h.count; i++) {
        tracked *p = h.objects[i];
        uint32_t id = h.ids[i];
        if (i % 2 == 0) {
            ft_decref(&p->ob);
            CHECK(is_alive(p));
        }
        ft_decref(&p->ob);
        CHECK_EQ(atomic_load(&freed_count[id]), 1); /* at once: nobody else could merge it */
        CHECK_EQ(atomic_load(&freed_by[id]), ft_os_thread_id());
    }
    CHECK_EQ(pending_bits(t) & FT_PENDING_MERGE, 0);
    if (!owner_exits) {
        barrier_detached(t, &h.barrier);
        pthread_join(owner, NULL);
    }
    pthread_barrier_destroy(&h.barrier);
    CHECK_THREADS_OK();
    CHECK(all_freed_once());
    check_heap_empty(rt);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(drop_after_the_owner_stopped)
{
    drop_after_owner_stopped(false);
}

TEST(drop_after_the_owner_exited)
{
    drop_after_owner_stopped(true);
}

/* ---- a thread that restarts owns its objects again ------------------------------------------------ */

typedef struct restart_args {
    ft_runtime *rt;
    bool owned_after_restart;
    int freed_at_local_drop;
} restart_args;

static void *restarting_thread(void *arg)
{
    restart_args *a = arg;
    ft_thread *t = ft_thread_start(a->rt);
    tracked *p = new_tracked(t, &tracked_type);
    ft_thread_stop(t);
    t = ft_thread_start(a->rt); /* same OS thread, so the same thread id */
    a->owned_after_restart = ft_object_is_owned(&p->ob);
    ft_decref(&p->ob); /* a local decref to zero: freed here, with no merge */
    a->freed_at_local_drop = atomic_load(&freed_count[p->id]);
    ft_thread_stop(t);
    return NULL;
}

TEST(restarted_thread_owns_its_objects_again)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    restart_args a = {.rt = rt};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, restarting_thread, &a), 0);
    pthread_join(th, NULL);
    CHECK(a.owned_after_restart);
    CHECK_EQ(a.freed_at_local_drop, 1);
    CHECK(all_freed_once());
    check_heap_empty(rt);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- the outbox: a dropping thread's batch for one owner ------------------------------------------ */

/* The owner (A) and the dropping thread (B) are commanded workers held still (no safepoints unless
 * commanded), so each test decides exactly when an outbox is flushed and when a queue is drained; the
 * main thread only gives commands and looks. After B's first drop for a live owner (handed over at
 * once), B collects that owner's objects in its outbox (FT_BRC_OUTBOX of them): objects still in the
 * outbox are not freed by the owner's safepoint; once flushed, they are. */
enum { OUTBOX_OBJECTS = 2 * FT_BRC_OUTBOX + 8 };

typedef struct batch {
    tracked *objs[OUTBOX_OBJECTS];
    uint32_t ids[OUTBOX_OBJECTS];
    int n;        /* cmd_alloc: how many to allocate */
    int from, to; /* cmd_drop: which to drop */
} batch;

static void cmd_alloc(commanded *w)
{
    batch *b = w->arg;
    for (int i = 0; i < b->n; i++) {
        b->objs[i] = new_tracked(w->t, &tracked_type);
        CHECK_THREAD(b->objs[i] != NULL);
        b->ids[i] = b->objs[i] ? b->objs[i]->id : 0;
    }
}

static void cmd_drop(commanded *w)
{
    batch *b = w->arg;
    for (int i = b->from; i < b->to; i++)
        ft_decref(&b->objs[i]->ob);
}

static void cmd_whoami(commanded *w)
{
    w->result = ft_os_thread_id();
}

static void cmd_detach_attach(commanded *w)
{
    ft_detach(w->t);
    ft_attach(w->t);
}

/* Start a commanded worker that passes no safepoint unless told to; returns its OS thread id. */
static uintptr_t start_held(commanded *w, ft_runtime *rt)
{
    commanded_start(NULL, w, rt);
    commanded_do(NULL, w, cmd_hold, NULL);
    commanded_do(NULL, w, cmd_whoami, NULL);
    return (uintptr_t)w->result;
}

static void allocate_on(commanded *owner, batch *b, int n)
{
    b->n = n;
    commanded_do(NULL, owner, cmd_alloc, b);
}

static void drop_on(commanded *dropper, batch *b, int from, int to)
{
    b->from = from;
    b->to = to;
    commanded_do(NULL, dropper, cmd_drop, b);
}

/* How many of b's objects [from, to) have been freed, each of them by `by`. */
static int freed_by_thread(const batch *b, int from, int to, uintptr_t by)
{
    int n = 0;
    for (int i = from; i < to; i++)
        if (atomic_load(&freed_count[b->ids[i]]) == 1 && atomic_load(&freed_by[b->ids[i]]) == by)
            n++;
    return n;
}

static int freed_in(const batch *b, int from, int to)
{
    int n = 0;
    for (int i = from; i < to; i++)
        n += atomic_load(&freed_count[b->ids[i]]);
    return n;
}

static void finish_runtime(ft_runtime *rt)
{
    CHECK_THREADS_OK();
    CHECK(all_freed_once());
    check_heap_empty(rt);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(outbox_collects_until_full_then_hands_over)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    commanded a, b;
    uintptr_t a_os = start_held(&a, rt);
    start_held(&b, rt);
    static batch objs;
    allocate_on(&a, &objs, FT_BRC_OUTBOX + 1);

    drop_on(&b, &objs, 0, 1); /* the first one goes to A's queue at once */
    CHECK(pending_bits(a.t) & FT_PENDING_MERGE);
    CHECK(pending_bits(b.t) & FT_PENDING_MERGE); /* B's own bit: its outbox collects for A now */
    drop_on(&b, &objs, 1, FT_BRC_OUTBOX); /* one short of a full outbox */
    commanded_do(NULL, &a, cmd_safepoint, NULL);
    CHECK_EQ(freed_by_thread(&objs, 0, 1, a_os), 1);
    CHECK_EQ(freed_in(&objs, 1, FT_BRC_OUTBOX), 0); /* still in B's outbox */
    CHECK_EQ(pending_bits(a.t) & FT_PENDING_MERGE, 0);
    for (int i = 1; i < FT_BRC_OUTBOX; i++)
        CHECK_EQ(atomic_load(&objs.objs[i]->ob.ob_ref_shared), FT_SHARED_QUEUED);

    drop_on(&b, &objs, FT_BRC_OUTBOX, FT_BRC_OUTBOX + 1); /* fills it: handed over at once */
    CHECK(pending_bits(a.t) & FT_PENDING_MERGE);
    commanded_do(NULL, &a, cmd_safepoint, NULL);
    CHECK_EQ(freed_by_thread(&objs, 0, FT_BRC_OUTBOX + 1, a_os), FT_BRC_OUTBOX + 1);

    commanded_finish(NULL, &b);
    commanded_finish(NULL, &a);
    finish_runtime(rt);
}

TEST(outbox_hands_over_when_the_owner_changes)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    commanded a1, a2, b;
    uintptr_t a1_os = start_held(&a1, rt), a2_os = start_held(&a2, rt);
    start_held(&b, rt);
    static batch first, second;
    allocate_on(&a1, &first, 4);
    allocate_on(&a2, &second, 2);

    drop_on(&b, &first, 0, 4); /* one to A1's queue, three collected */
    commanded_do(NULL, &a1, cmd_safepoint, NULL);
    CHECK_EQ(freed_in(&first, 0, 4), 1);
    CHECK_EQ(pending_bits(a1.t) & FT_PENDING_MERGE, 0);

    drop_on(&b, &second, 0, 1); /* another owner: A1's three are handed over first */
    CHECK(pending_bits(a1.t) & FT_PENDING_MERGE);
    CHECK(pending_bits(a2.t) & FT_PENDING_MERGE);
    commanded_do(NULL, &a1, cmd_safepoint, NULL);
    CHECK_EQ(freed_by_thread(&first, 0, 4, a1_os), 4);
    drop_on(&b, &second, 1, 2); /* collected for A2 now */
    commanded_do(NULL, &a2, cmd_safepoint, NULL);
    CHECK_EQ(freed_by_thread(&second, 0, 2, a2_os), 1);
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    commanded_do(NULL, &a2, cmd_safepoint, NULL);
    CHECK_EQ(freed_by_thread(&second, 0, 2, a2_os), 2);

    commanded_finish(NULL, &b);
    commanded_finish(NULL, &a2);
    commanded_finish(NULL, &a1);
    finish_runtime(rt);
}

/* How the dropping thread's outbox gets flushed in the next test. */
enum flush_by { AT_SAFEPOINT, AT_DETACH, AT_STOP };

static void outbox_flushed_by(enum flush_by how)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    commanded a, b;
    uintptr_t a_os = start_held(&a, rt);
    start_held(&b, rt);
    static batch objs;
    allocate_on(&a, &objs, 5);
    drop_on(&b, &objs, 0, 5);
    commanded_do(NULL, &a, cmd_safepoint, NULL);
    CHECK_EQ(freed_in(&objs, 0, 5), 1);
    CHECK(pending_bits(b.t) & FT_PENDING_MERGE); /* so that B's next safepoint flushes */

    if (how == AT_SAFEPOINT)
        commanded_do(NULL, &b, cmd_safepoint, NULL);
    else if (how == AT_DETACH)
        commanded_do(NULL, &b, cmd_detach_attach, NULL);
    else
        commanded_finish(NULL, &b);
    CHECK(pending_bits(a.t) & FT_PENDING_MERGE);
    CHECK_EQ(freed_in(&objs, 0, 5), 1); /* handed over, not freed: only A may merge them */
    commanded_do(NULL, &a, cmd_safepoint, NULL);
    CHECK_EQ(freed_by_thread(&objs, 0, 5, a_os), 5);

    if (how != AT_STOP)
        commanded_finish(NULL, &b);
    commanded_finish(NULL, &a);
    finish_runtime(rt);
}

TEST(outbox_flushes_at_the_droppers_safepoint)
{
    outbox_flushed_by(AT_SAFEPOINT);
}

TEST(outbox_flushes_when_the_dropper_detaches)
{
    outbox_flushed_by(AT_DETACH);
}

TEST(outbox_flushes_when_the_dropper_stops)
{
    outbox_flushed_by(AT_STOP);
}

/* The owner stops while B holds some of its objects in B's outbox: its stop cannot see them. B's
 * detach hands nothing over (no owner) and frees nothing; B's next safepoint merges and frees them
 * itself. A drop that joins the outbox after the owner stopped waits for that flush too. */
TEST(owner_stops_while_its_objects_wait_in_an_outbox)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    commanded a, b;
    uintptr_t a_os = start_held(&a, rt);
    uintptr_t b_os = start_held(&b, rt);
    static batch objs;
    allocate_on(&a, &objs, 6);
    drop_on(&b, &objs, 0, 4); /* 0 in A's queue, 1..3 in B's outbox */
    commanded_finish(NULL, &a); /* drains its queue: frees 0; 1..3 stay alive */
    CHECK_EQ(freed_by_thread(&objs, 0, 1, a_os), 1);
    CHECK_EQ(freed_in(&objs, 1, 6), 0);

    drop_on(&b, &objs, 4, 5); /* B still collects for A's id: joins the outbox */
    CHECK_EQ(freed_in(&objs, 1, 6), 0);
    commanded_do(NULL, &b, cmd_detach_attach, NULL); /* no owner: nothing handed over or freed */
    CHECK_EQ(freed_in(&objs, 1, 6), 0);
    for (int i = 1; i < 5; i++)
        CHECK_EQ(atomic_load(&objs.objs[i]->ob.ob_ref_shared), FT_SHARED_QUEUED);
    CHECK(pending_bits(b.t) & FT_PENDING_MERGE);

    commanded_do(NULL, &b, cmd_safepoint, NULL); /* merged and freed by B */
    CHECK_EQ(freed_by_thread(&objs, 1, 5, b_os), 4);
    drop_on(&b, &objs, 5, 6); /* an owner already gone: freed during the drop */
    CHECK_EQ(freed_by_thread(&objs, 5, 6, b_os), 1);

    commanded_finish(NULL, &b);
    finish_runtime(rt);
}

/* One OS thread owns objects in two runtimes (it has a thread state in each), so all of them carry
 * its id; so does the dropping thread, which also has a state in each and attaches the one of the
 * runtime whose objects it drops. Each drop must reach the owner's state in the object's own
 * runtime: rt1's objects its rt1 state, rt2's its rt2 state. */
typedef struct two_runtimes {
    ft_runtime *rt1, *rt2;
    ft_thread *t1, *t2;
    tracked *o1, *o1b, *o2;
    _Atomic int step; /* main -> owner: 1 allocate, 2 drain t2, 3 drain t1 and stop */
    _Atomic int done;
} two_runtimes;

static void *owner_in_two_runtimes(void *arg)
{
    two_runtimes *s = arg;
    WAIT_FOR_MAIN(atomic_load(&s->step) == 1);
    s->t1 = ft_thread_start(s->rt1);
    CHECK_THREAD(s->t1 != NULL);
    s->o1 = new_tracked(s->t1, &tracked_type);
    s->o1b = new_tracked(s->t1, &tracked_type);
    ft_detach(s->t1);
    s->t2 = ft_thread_start(s->rt2);
    CHECK_THREAD(s->t2 != NULL);
    s->o2 = new_tracked(s->t2, &tracked_type);
    ft_detach(s->t2);
    atomic_store(&s->done, 1);
    WAIT_FOR_MAIN(atomic_load(&s->step) == 2);
    ft_attach(s->t2);
    ft_safepoint(s->t2);
    ft_detach(s->t2);
    atomic_store(&s->done, 2);
    WAIT_FOR_MAIN(atomic_load(&s->step) == 3);
    ft_attach(s->t1);
    ft_safepoint(s->t1);
    ft_thread_stop(s->t1);
    ft_attach(s->t2);
    ft_thread_stop(s->t2);
    atomic_store(&s->done, 3);
    return NULL;
}

static void owner_step(two_runtimes *s, int step)
{
    atomic_store(&s->step, step);
    SPIN_UNTIL(atomic_load(&s->done) == step);
    CHECK_EQ(atomic_load(&s->done), step);
}

TEST(drops_reach_the_owner_state_of_the_objects_runtime)
{
    reset_tracking();
    static two_runtimes s;
    memset(&s, 0, sizeof s);
    s.rt1 = ft_runtime_new(NULL);
    s.rt2 = ft_runtime_new(NULL);
    pthread_t owner;
    start_thread(&owner, owner_in_two_runtimes, &s);
    owner_step(&s, 1);
    ft_thread *b2 = ft_thread_start(s.rt2);
    ft_detach(b2);
    ft_thread *b1 = ft_thread_start(s.rt1);
    ft_decref(&s.o1->ob);  /* handed to t1 at once; b1 now collects for the owner's id */
    ft_decref(&s.o1b->ob); /* into b1's outbox */
    CHECK_EQ(b1->brc.outbox_count, 1);
    ft_detach(b1); /* hands the outbox over */
    CHECK_EQ(b1->brc.outbox_count, 0);
    CHECK(pending_bits(s.t1) & FT_PENDING_MERGE);
    CHECK_EQ(pending_bits(s.t2) & FT_PENDING_MERGE, 0);
    ft_attach(b2);
    ft_decref(&s.o2->ob); /* the same owner id: handed to t2, not to t1 */
    CHECK(pending_bits(s.t2) & FT_PENDING_MERGE);
    ft_detach(b2);
    owner_step(&s, 2); /* t2 drains: o2 and nothing else */
    CHECK_EQ(atomic_load(&freed_count[s.o2->id]), 1);
    CHECK(is_alive(s.o1) && is_alive(s.o1b));
    owner_step(&s, 3); /* t1 drains: o1 and o1b */
    join_thread(owner);
    ft_attach(b1);
    ft_thread_stop(b1);
    ft_attach(b2);
    ft_thread_stop(b2);
    CHECK(all_freed_once());
    check_heap_empty(s.rt1);
    check_heap_empty(s.rt2);
    CHECK_EQ(ft_runtime_free(s.rt1), FT_OK);
    CHECK_EQ(ft_runtime_free(s.rt2), FT_OK);
}

/* Destructors that B's stop runs (merging objects whose owner has gone) drop objects of a live owner
 * C: the first goes to C at once, the second into B's outbox, which B must still hand over before it
 * unregisters. */
typedef struct holder {
    tracked base;
    ft_object *held; /* one reference, dropped by the holder's dealloc */
} holder;

static void holder_dealloc(ft_object *o)
{
    ft_decref(((holder *)o)->held);
    tracked_dealloc(o);
}

static const ft_type holder_type = {
    .name = "holder", .basic_size = sizeof(holder), .dealloc = holder_dealloc};

typedef struct holders {
    batch *inner;   /* allocated by C */
    holder *h[2];   /* allocated by A, holding inner's objects 0 and 1 */
    tracked *first; /* A's: the drop that makes B collect for A */
} holders;

static void cmd_alloc_holders(commanded *w)
{
    holders *hs = w->arg;
    hs->first = new_tracked(w->t, &tracked_type);
    for (int i = 0; i < 2; i++) {
        hs->h[i] = (holder *)new_tracked(w->t, &holder_type);
        CHECK_THREAD(hs->h[i] != NULL);
        hs->h[i]->held = &hs->inner->objs[i]->ob;
    }
}

static void cmd_drop_holders(commanded *w)
{
    holders *hs = w->arg;
    ft_decref(&hs->first->ob);
    ft_decref(&hs->h[0]->base.ob);
    ft_decref(&hs->h[1]->base.ob);
}

TEST(objects_dropped_by_a_stopping_threads_destructors_are_handed_over)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    commanded a, b, c;
    start_held(&a, rt);
    start_held(&b, rt);
    uintptr_t c_os = start_held(&c, rt);
    static batch inner;
    static holders hs;
    allocate_on(&c, &inner, 2);
    hs.inner = &inner;
    commanded_do(NULL, &a, cmd_alloc_holders, &hs);
    commanded_do(NULL, &b, cmd_drop_holders, &hs); /* first: to A; the holders: B's outbox */
    commanded_finish(NULL, &a);                    /* A is gone; the holders are B's to merge */
    CHECK(is_alive(&hs.h[0]->base) && is_alive(&hs.h[1]->base));
    commanded_finish(NULL, &b); /* frees both holders, which drop C's two objects */
    CHECK_EQ(freed_in(&inner, 0, 2), 0);
    commanded_do(NULL, &c, cmd_safepoint, NULL);
    CHECK_EQ(freed_by_thread(&inner, 0, 2, c_os), 2);
    commanded_finish(NULL, &c);
    finish_runtime(rt);
}

/* A flush whose owner's queue needs a chunk that cannot be allocated. At a safepoint, B merges the
 * objects with the world stopped (A must then reach a safepoint too) and frees them itself; when B
 * detaches, it keeps them instead (no stop, no destructor there) and hands them over later. */
static bool failure_was_used(ft_runtime *rt)
{
    return atomic_load_explicit(&rt->fail_countdown, memory_order_relaxed) < 0;
}

static void outbox_flush_fails(enum flush_by how)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    commanded a, b;
    uintptr_t a_os = start_held(&a, rt);
    uintptr_t b_os = start_held(&b, rt);
    static batch objs;
    allocate_on(&a, &objs, 4);
    drop_on(&b, &objs, 0, 4);
    commanded_do(NULL, &a, cmd_safepoint, NULL); /* frees 0; A's queue is empty (no chunk) again */
    CHECK_EQ(freed_in(&objs, 0, 4), 1);
    commanded_do(NULL, &a, cmd_resume, NULL); /* a stop-the-world must not wait for A forever */
    ft_runtime_stats before, after;
    ft_runtime_get_stats(rt, &before);

    ft_debug_fail_allocation(rt, 0);
    commanded_do(NULL, &b, how == AT_SAFEPOINT ? cmd_safepoint : cmd_detach_attach, NULL);
    bool used = failure_was_used(rt);
    ft_debug_fail_allocation(rt, -1);
    ft_runtime_get_stats(rt, &after);
    CHECK(used);
    if (how == AT_SAFEPOINT) {
        CHECK_EQ(freed_by_thread(&objs, 1, 4, b_os), 3);
        CHECK_EQ(after.stw_count, before.stw_count + 1);
    } else {
        CHECK_EQ(freed_in(&objs, 1, 4), 0);
        CHECK_EQ(after.stw_count, before.stw_count);
        CHECK(pending_bits(b.t) & FT_PENDING_MERGE);
        commanded_do(NULL, &b, cmd_safepoint, NULL); /* memory again: handed to A */
        AWAIT(NULL, freed_in(&objs, 1, 4) == 3);   /* A passes safepoints now */
        CHECK_EQ(freed_by_thread(&objs, 1, 4, a_os), 3);
    }
    commanded_finish(NULL, &b);
    commanded_finish(NULL, &a);
    finish_runtime(rt);
}

TEST(outbox_flush_at_a_safepoint_survives_a_queue_allocation_failure)
{
    outbox_flush_fails(AT_SAFEPOINT);
}

TEST(outbox_flush_on_detach_survives_a_queue_allocation_failure)
{
    outbox_flush_fails(AT_DETACH);
}

/* ---- stress: an owner stops while others drop its objects ----------------------------------------- */

enum { RACE_ROUNDS = 150, RACE_OBJECTS = 64 };

typedef struct race {
    ft_runtime *rt;
    tracked *objects[RACE_OBJECTS];
    pthread_barrier_t barrier;
} race;

static void *owner_that_stops_at_once(void *arg)
{
    race *r = arg;
    ft_thread *t = ft_thread_start(r->rt);
    CHECK_THREAD(t != NULL);
    for (int i = 0; i < RACE_OBJECTS; i++) {
        r->objects[i] = new_tracked(t, &tracked_type);
        if (i % 3 == 0)
            ft_incref(&r->objects[i]->ob); /* one reference for each dropper */
    }
    barrier_detached(t, &r->barrier);
    ft_thread_stop(t); /* races the drops */
    return NULL;
}

static void *dropper(void *arg)
{
    race *r = arg;
    ft_thread *t = ft_thread_start(r->rt);
    CHECK_THREAD(t != NULL);
    barrier_detached(t, &r->barrier);
    for (int i = RACE_OBJECTS - 1; i >= 0; i--) {
        if (i % 3 == 0)
            ft_decref(&r->objects[i]->ob);
        ft_safepoint(t);
    }
    ft_thread_stop(t);
    return NULL;
}

TEST(owner_stop_races_drops)
{
    reset_tracking();
    ft_runtime *rt = ft_runtime_new(NULL);
    static race r;
    r.rt = rt;
    ft_thread *t = ft_thread_start(rt);
    for (int round = 0; round < RACE_ROUNDS; round++) {
        uint32_t before = atomic_load(&next_id);
        pthread_barrier_init(&r.barrier, NULL, 3);
        pthread_t owner, other;
        CHECK_EQ(pthread_create(&owner, NULL, owner_that_stops_at_once, &r), 0);
        CHECK_EQ(pthread_create(&other, NULL, dropper, &r), 0);
        barrier_detached(t, &r.barrier);
        for (int i = 0; i < RACE_OBJECTS; i++) {
            ft_decref(&r.objects[i]->ob);
            ft_safepoint(t);
        }
        ft_detach(t);
        pthread_join(owner, NULL);
        pthread_join(other, NULL);
        ft_attach(t);
        pthread_barrier_destroy(&r.barrier);
        for (uint32_t id = before; id < atomic_load(&next_id); id++)
            CHECK_EQ(atomic_load(&freed_count[id]), 1); /* by the end of its round */
    }
    CHECK_THREADS_OK();
    CHECK(all_freed_once());
    check_heap_empty(rt);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- stress: objects bounced between threads at random -------------------------------------------- */

/* Every object is marked for try-incref by its owner at allocation, so a slot that holds an object can
 * always be read with ft_get_ref (its shared state never returns to an unmarked zero).
 *
 * Readers may try-incref an object that another thread has just freed. That is sound here even with
 * the default page-reuse hook (which lets an empty page be repurposed at once): every object has the
 * same size class and nothing else allocates from the object heaps, so a block a stale pointer reaches
 * is always an object header of this type, or a zeroed released page, never something else. */
enum { BOUNCERS = 3, SLOTS = 32, HELD = 8, BOUNCE_ITERATIONS = 12000, WALK_EVERY = 1000 };

typedef struct bounce {
    ft_runtime *rt;
    ft_object *_Atomic slots[SLOTS];
    _Atomic int finished;
    _Atomic uint64_t walks;
} bounce;

typedef struct bouncer {
    bounce *b;
    uint64_t rng;
    tracked *held[HELD];
    int nheld;
} bouncer;

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void hold(bouncer *me, tracked *p)
{
    if (!p)
        return;
    CHECK_THREAD(is_alive(p));
    if (me->nheld < HELD)
        me->held[me->nheld++] = p;
    else
        ft_decref(&p->ob);
}

static tracked *take_held(bouncer *me, uint64_t r)
{
    if (me->nheld == 0)
        return NULL;
    int i = (int)(r % (uint64_t)me->nheld);
    tracked *p = me->held[i];
    me->held[i] = me->held[--me->nheld];
    return p;
}

static void bounce_step(ft_thread *t, bouncer *me)
{
    bounce *b = me->b;
    uint64_t r = next_random(&me->rng);
    ft_object *_Atomic *slot = &b->slots[(r >> 8) % SLOTS];
    switch (r % 8) {
    case 0: { /* a new object, into a slot */
        tracked *p = new_tracked(t, &tracked_type);
        CHECK_THREAD(p != NULL);
        if (!p)
            return;
        ft_object_enable_try_incref(&p->ob);
        hold(me, (tracked *)atomic_exchange(slot, &p->ob));
        break;
    }
    case 1:
    case 2: { /* swap a held reference (or nothing) with a slot's */
        tracked *mine = take_held(me, r >> 16);
        hold(me, (tracked *)atomic_exchange(slot, mine ? &mine->ob : NULL));
        break;
    }
    case 3: /* a lock-free read */
        hold(me, (tracked *)ft_get_ref(slot));
        break;
    case 4: { /* one lock-free attempt on what was just seen */
        ft_object *seen = atomic_load(slot);
        if (seen && ft_try_incref_compare(slot, seen))
            hold(me, (tracked *)seen);
        break;
    }
    case 5: { /* a second reference to something held */
        if (me->nheld == 0)
            break;
        tracked *p = me->held[(r >> 16) % (uint64_t)me->nheld];
        ft_incref(&p->ob);
        hold(me, p);
        break;
    }
    default: { /* drop something held */
        tracked *p = take_held(me, r >> 16);
        if (p) {
            CHECK_THREAD(is_alive(p));
            ft_decref(&p->ob);
        }
        break;
    }
    }
}

static void *bouncer_main(void *arg)
{
    bouncer *me = arg;
    ft_thread *t = ft_thread_start(me->b->rt);
    CHECK_THREAD(t != NULL);
    uint64_t walks_seen = 0;
    for (int i = 1; i <= BOUNCE_ITERATIONS; i++) {
        bounce_step(t, me);
        ft_safepoint(t);
        if (i % WALK_EVERY == 0) { /* let the main thread walk the heap in the middle of it all */
            AWAIT(t, atomic_load(&me->b->walks) > walks_seen);
            walks_seen = atomic_load(&me->b->walks);
        }
    }
    while (me->nheld > 0)
        ft_decref(&me->held[--me->nheld]->ob);
    ft_thread_stop(t); /* the others may still be dropping this thread's objects */
    atomic_fetch_add(&me->b->finished, 1);
    return NULL;
}

typedef struct walk_count {
    uint64_t visited, not_alive;
} walk_count;

static bool count_live(void *block, size_t size, void *arg)
{
    (void)size;
    walk_count *w = arg;
    tracked *p = block;
    w->visited++;
    if (!is_alive(p))
        w->not_alive++;
    return true;
}

TEST(objects_bounced_between_threads)
{
    reset_tracking();
    static bounce b;
    memset(&b, 0, sizeof b);
    b.rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(b.rt);
    static bouncer workers[BOUNCERS];
    pthread_t th[BOUNCERS];
    for (int i = 0; i < BOUNCERS; i++) {
        workers[i] = (bouncer){.b = &b, .rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)};
        CHECK_EQ(pthread_create(&th[i], NULL, bouncer_main, &workers[i]), 0);
    }
    /* While they run: with the world stopped, the heap walk sees exactly the objects not yet freed
     * (allocation and dealloc both finish between two safepoints, so the counters are exact). */
    while (atomic_load(&b.finished) < BOUNCERS) {
        ft_stop_the_world(b.rt);
        walk_count w = {0, 0};
        ft_status st = ft_heap_visit(b.rt, FT_HEAP_OBJECT, count_live, &w);
        uint32_t allocated = atomic_load(&next_id), freed = atomic_load(&total_freed);
        ft_start_the_world(b.rt);
        CHECK_EQ(st, FT_OK);
        CHECK_EQ(w.not_alive, 0);
        CHECK_EQ(w.visited, allocated - freed);
        atomic_fetch_add(&b.walks, 1);
        ft_safepoint(t);
        sched_yield();
    }
    join_detached(t, th, BOUNCERS);
    for (int i = 0; i < SLOTS; i++) {
        ft_object *o = atomic_exchange(&b.slots[i], NULL);
        if (o) {
            CHECK(is_alive((tracked *)o));
            ft_decref(o); /* its owner has stopped: merged and freed here */
        }
    }
    CHECK(atomic_load(&next_id) > 1000);
    CHECK(atomic_load(&b.walks) >= BOUNCE_ITERATIONS / WALK_EVERY);
    CHECK(all_freed_once());
    ft_thread_stop(t);
    check_heap_empty(b.rt); /* from outside the runtime */
    CHECK_EQ(ft_runtime_free(b.rt), FT_OK);
}

/* ---- stress: try-incref racing the last decref ----------------------------------------------------- */

/* A writer publishes fresh objects in one slot; readers take references through the slot with
 * ft_try_incref_compare and check that what they got is alive. Two ways of publishing:
 *  - owning: the slot holds a reference; the writer swaps the object out, then drops that reference,
 *    often the last one while a reader is trying;
 *  - weak: the slot holds no reference (like a weak reference, which its object's dealloc clears);
 *    the writer drops its only reference while the object is still in the slot, so a reader's try
 *    can succeed on the slot's current object at the very moment its count reaches zero: the try
 *    must then fail, and the object be freed once, or the try succeed and the object live on.
 *    (Without the clearing, the slot would keep a freed address, and an object later allocated at
 *    that address would seem to be in the slot before it was published.)
 *
 * Soundness with the default page-reuse hook: the writer allocates a pin object first and at most a
 * handful of objects are alive at once, so every object comes from the pin's page, which never
 * empties; a freed block there is only ever reused as an object of the same type, and a freed block
 * reads as count zero. The test checks that precondition at the end. */
enum { TRY_READERS = 2, TRY_OBJECTS = 5000, TRY_AWAIT_EVERY = 64, TRY_MIN_READS = 20 };

typedef struct try_race {
    ft_runtime *rt;
    bool weak;
    pthread_barrier_t start;
    ft_object *_Atomic slot;
    _Atomic bool done;
    _Atomic uint64_t looks, reads;
    _Atomic bool off_page;
} try_race;

static uintptr_t page_of(const void *p)
{
    return (uintptr_t)p & ~(uintptr_t)0xFFFF; /* the heap's 64 KiB pages */
}

static ft_object *_Atomic *weak_slot; /* the slot weakly_tracked objects clear when they die */

static void weakly_tracked_dealloc(ft_object *o)
{
    ft_object *expected = o;
    atomic_compare_exchange_strong(weak_slot, &expected, NULL);
    tracked_dealloc(o);
}

static const ft_type weakly_tracked_type = {
    .name = "weakly tracked", .basic_size = sizeof(tracked), .dealloc = weakly_tracked_dealloc};

/* Every TRY_AWAIT_EVERY objects, wait until the readers have looked at the slot a few times since
 * `looks` was read (so at least once since the writer's last store): a short spin, then yielding. On a
 * busy machine the readers might otherwise run only while the writer is preempted. */
static void await_a_look(ft_thread *t, try_race *r, int i, uint64_t looks)
{
    if (i % TRY_AWAIT_EVERY != 0)
        return;
    uint64_t enough = looks + TRY_READERS + 1;
    for (int spin = 0; spin < 2000; spin++) {
        if (atomic_load(&r->looks) >= enough)
            return;
        ft_cpu_relax();
    }
    AWAIT(t, atomic_load(&r->looks) >= enough);
}

static void *try_writer(void *arg)
{
    try_race *r = arg;
    ft_thread *t = ft_thread_start(r->rt);
    CHECK_THREAD(t != NULL);
    tracked *pin = new_tracked(t, &tracked_type);
    barrier_detached(t, &r->start);
    for (int i = 0; i < TRY_OBJECTS; i++) {
        tracked *p = new_tracked(t, r->weak ? &weakly_tracked_type : &tracked_type);
        CHECK_THREAD(p != NULL);
        if (!p)
            break;
        if (page_of(p) != page_of(pin))
            atomic_store(&r->off_page, true);
        if (r->weak) {
            ft_object_enable_try_incref(&p->ob); /* readers may try it while the writer owns it */
            atomic_store(&r->slot, &p->ob);
            await_a_look(t, r, i, atomic_load(&r->looks));
            ft_decref(&p->ob); /* frees it in the slot, unless a reader holds a reference */
        } else {
            ft_object *stored = &p->ob;
            if (i % 2 == 0)
                ft_new_ref_for_shared_slot(stored); /* promised */
            else
                ft_incref(stored); /* no promise: readers succeed only once others count */
            ft_object *old = atomic_exchange(&r->slot, stored);
            ft_decref(&p->ob);
            if (old)
                ft_decref(old); /* often the last reference, racing the readers' tries */
            await_a_look(t, r, i, atomic_load(&r->looks));
        }
    }
    ft_object *last = atomic_exchange(&r->slot, NULL);
    if (last && !r->weak)
        ft_decref(last);
    atomic_store(&r->done, true);
    ft_decref(&pin->ob);
    ft_thread_stop(t);
    return NULL;
}

static void *try_reader(void *arg)
{
    try_race *r = arg;
    ft_thread *t = ft_thread_start(r->rt);
    CHECK_THREAD(t != NULL);
    barrier_detached(t, &r->start);
    while (!atomic_load(&r->done)) {
        ft_object *seen = atomic_load(&r->slot);
        if (seen) {
            if (ft_try_incref_compare(&r->slot, seen)) {
                CHECK_THREAD(is_alive((tracked *)seen));
                ft_incref(seen); /* a second reference, counted in shared */
                ft_decref(seen);
                CHECK_THREAD(is_alive((tracked *)seen));
                ft_decref(seen); /* may be the last one: then freed here */
                atomic_fetch_add_explicit(&r->reads, 1, memory_order_relaxed);
            }
        }
        atomic_fetch_add_explicit(&r->looks, 1, memory_order_relaxed);
        ft_safepoint(t);
    }
    ft_thread_stop(t);
    return NULL;
}

static void try_incref_race(bool weak)
{
    reset_tracking();
    static try_race r;
    memset(&r, 0, sizeof r);
    r.rt = ft_runtime_new(NULL);
    r.weak = weak;
    weak_slot = &r.slot;
    pthread_barrier_init(&r.start, NULL, TRY_READERS + 1);
    pthread_t writer, readers[TRY_READERS];
    for (int i = 0; i < TRY_READERS; i++)
        CHECK_EQ(pthread_create(&readers[i], NULL, try_reader, &r), 0);
    CHECK_EQ(pthread_create(&writer, NULL, try_writer, &r), 0);
    pthread_join(writer, NULL);
    for (int i = 0; i < TRY_READERS; i++)
        pthread_join(readers[i], NULL);
    pthread_barrier_destroy(&r.start);
    CHECK_THREADS_OK();
    CHECK(!atomic_load(&r.off_page)); /* the soundness precondition above */
    CHECK(atomic_load(&r.reads) >= TRY_MIN_READS);
    CHECK(all_freed_once());
    check_heap_empty(r.rt);
    CHECK_EQ(ft_runtime_free(r.rt), FT_OK);
}

TEST(try_incref_races_the_last_decref)
{
    try_incref_race(false);
}

TEST(try_incref_races_the_last_decref_through_a_weak_slot)
{
    try_incref_race(true);
}

/* ---- stress: many threads drop each other's objects at random ----------------------------------- */

/* DROPPERS threads share a table of slots, each holding one reference or nothing. A step allocates an
 * object into a slot (sometimes with extra references into other slots), or takes a slot's reference
 * and drops it, so drops land on random owners and outboxes keep changing owner; a thread passes its
 * safepoint only now and then, sometimes detaches, and sometimes stops and starts its thread state
 * again (on the same OS thread, so its old objects are its own once more) while its objects sit in
 * other threads' outboxes. Threads also finish at different times: owners that are gone for good.
 * Every object must be freed exactly once, never while a slot still references it. */
enum { DROPPERS = 4, DROP_SLOTS = 64, DROP_STEPS = 6000 };

typedef struct random_drops {
    ft_runtime *rt;
    ft_object *_Atomic slots[DROP_SLOTS];
    _Atomic uint64_t restarts, detaches;
} random_drops;

typedef struct dropper_arg {
    random_drops *s;
    uint64_t rng;
    int steps;
} dropper_arg;

static void put_in_slot(random_drops *s, uint64_t r, ft_object *o)
{
    ft_object *old = atomic_exchange(&s->slots[r % DROP_SLOTS], o);
    if (old) {
        CHECK_THREAD(is_alive((tracked *)old));
        ft_decref(old);
    }
}

static void *random_dropper(void *arg)
{
    dropper_arg *d = arg;
    random_drops *s = d->s;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    for (int i = 0; i < d->steps && t; i++) {
        uint64_t r = next_random(&d->rng);
        switch (r % 16) {
        case 0:
        case 1: { /* a new object, with one to three references in slots */
            tracked *p = new_tracked(t, &tracked_type);
            CHECK_THREAD(p != NULL);
            if (!p)
                break;
            int extra = (int)((r >> 8) % 3);
            for (int k = 0; k < extra; k++)
                ft_incref(&p->ob);
            for (int k = 0; k <= extra; k++)
                put_in_slot(s, r >> (16 + 6 * k), &p->ob);
            break;
        }
        case 2:
            ft_safepoint(t);
            break;
        case 3:
            if ((r >> 8) % 8 == 0) {
                ft_detach(t);
                ft_attach(t);
                atomic_fetch_add(&s->detaches, 1);
            }
            break;
        case 4:
            if ((r >> 8) % 64 == 0) {
                ft_thread_stop(t);
                t = ft_thread_start(s->rt);
                CHECK_THREAD(t != NULL);
                atomic_fetch_add(&s->restarts, 1);
            }
            break;
        default: { /* drop a slot's reference: usually another thread's object */
            ft_object *o = atomic_exchange(&s->slots[(r >> 8) % DROP_SLOTS], NULL);
            if (o) {
                CHECK_THREAD(is_alive((tracked *)o));
                ft_decref(o);
            }
            break;
        }
        }
    }
    if (t)
        ft_thread_stop(t);
    return NULL;
}

TEST(random_drops_by_many_threads_free_every_object_once)
{
    reset_tracking();
    static random_drops s;
    memset(&s, 0, sizeof s);
    s.rt = ft_runtime_new(NULL);
    static dropper_arg args[DROPPERS];
    pthread_t th[DROPPERS];
    for (int i = 0; i < DROPPERS; i++) {
        /* Different lengths: some owners stop for good while others still drop their objects. */
        args[i] = (dropper_arg){.s = &s,
                                .rng = 0xD1B54A32D192ED03ull * (uint64_t)(i + 1),
                                .steps = DROP_STEPS * (i + 2) / 2};
        start_thread(&th[i], random_dropper, &args[i]);
    }
    for (int i = 0; i < DROPPERS; i++)
        join_thread(th[i]);
    ft_thread *t = ft_thread_start(s.rt);
    for (int i = 0; i < DROP_SLOTS; i++) {
        ft_object *o = atomic_exchange(&s.slots[i], NULL);
        if (o) {
            CHECK(is_alive((tracked *)o));
            ft_decref(o); /* every owner has stopped: merged and freed here */
        }
    }
    CHECK(all_freed_once());
    CHECK(atomic_load(&next_id) > 2000);
    CHECK(atomic_load(&s.restarts) > 0);
    CHECK(atomic_load(&s.detaches) > 0);
    ft_thread_stop(t);
    check_heap_empty(s.rt);
    CHECK_EQ(ft_runtime_free(s.rt), FT_OK);
}

#ifdef FTRT_DEBUG
/* ---- a non-owner's decref between its subtract and its settling ----------------------------------- */

/* A non-owner's decref that takes a biased shared count below zero has dropped its reference before it
 * marks the object QUEUED. Debug builds call the runtime's decref_window_hook in that window; these
 * tests hold a thread there (a gate per thread) while other threads free the object and reuse its
 * block, then let it settle. */

typedef struct window_gate {
    _Atomic bool entered, open;
} window_gate;

static _Thread_local window_gate *this_threads_gate;

static void hold_in_window(void *arg)
{
    (void)arg;
    window_gate *g = this_threads_gate;
    if (!g)
        return;
    this_threads_gate = NULL; /* once: the settling that follows may drop more */
    atomic_store(&g->entered, true);
    WAIT_FOR_MAIN(atomic_load(&g->open));
}

typedef struct gated_drop {
    window_gate gate;
    ft_object *o;
    int command;
} gated_drop;

static void cmd_gated_drop(commanded *w)
{
    gated_drop *d = w->arg;
    this_threads_gate = &d->gate;
    ft_decref(d->o);
    this_threads_gate = NULL;
}

static void cmd_drop_one(commanded *w)
{
    ft_decref(w->arg);
}

static void cmd_incref_one(commanded *w)
{
    ft_incref(w->arg);
}

/* Post a drop of o on w that stops inside the window; returns once w is there. */
static void drop_into_window(commanded *w, gated_drop *d, ft_object *o)
{
    memset(d, 0, sizeof *d);
    d->o = o;
    d->command = commanded_post(w, cmd_gated_drop, d);
    SPIN_UNTIL(atomic_load(&d->gate.entered));
}

/* Let w settle and wait for it; the main thread passes no safepoint meanwhile (none of these steps
 * needs one), so its merge queue stays as the step left it. */
static void leave_window(commanded *w, gated_drop *d)
{
    atomic_store(&d->gate.open, true);
    commanded_wait(NULL, w, d->command);
}

static intptr_t shared_word(const void *o)
{
    return atomic_load_explicit(&((ft_object *)o)->ob_ref_shared, memory_order_relaxed);
}

typedef struct window_setup {
    ft_runtime *rt;
    ft_thread *a; /* the owner: the main thread */
    commanded b, c, d;
} window_setup;

static void window_setup_start(window_setup *s)
{
    reset_tracking();
    s->rt = ft_runtime_new(NULL);
    s->a = ft_thread_start(s->rt);
    CHECK(s->a != NULL);
    s->rt->decref_window_hook = hold_in_window;
    start_held(&s->b, s->rt);
    start_held(&s->c, s->rt);
    start_held(&s->d, s->rt);
}

static void window_setup_finish(window_setup *s)
{
    commanded_finish(s->a, &s->b);
    commanded_finish(s->a, &s->c);
    commanded_finish(s->a, &s->d);
    s->rt->decref_window_hook = NULL;
    ft_thread_stop(s->a);
    finish_runtime(s->rt);
}

/* A owns x with three references: its own, B's and C's. B's drop stops in the window with the shared
 * word at -1; C's drop (-2) settles it: x is QUEUED with -1, which A's drain merges to count 1. A's
 * drop of its last reference frees x, and A's next allocation gets x's block. */
static tracked *reuse_while_b_waits(window_setup *s, gated_drop *b_drop)
{
    tracked *x = new_tracked(s->a, &tracked_type);
    ft_incref(&x->ob);
    ft_incref(&x->ob);
    drop_into_window(&s->b, b_drop, &x->ob);
    CHECK_EQ(shared_word(x), -FT_SHARED_ONE);
    commanded_do(NULL, &s->c, cmd_drop_one, &x->ob);
    CHECK_EQ(shared_word(x), -FT_SHARED_ONE | FT_SHARED_QUEUED);
    ft_safepoint(s->a);
    CHECK_EQ(ft_refcount(&x->ob), 1);
    CHECK(is_alive(x));
    uint32_t x_id = x->id;
    ft_decref(&x->ob);
    CHECK_EQ(atomic_load(&freed_count[x_id]), 1);
    tracked *y = new_tracked(s->a, &tracked_type);
    CHECK(y == x); /* the freed block, reused at once */
    return y;
}

TEST(settling_after_the_block_was_reused_leaves_the_new_object_alone)
{
    window_setup s;
    window_setup_start(&s);
    gated_drop b_drop;
    tracked *y = reuse_while_b_waits(&s, &b_drop);
    leave_window(&s.b, &b_drop); /* B settles on y's block: count 0, nothing owed */
    CHECK_EQ(shared_word(y), 0);
    CHECK_EQ(ft_refcount(&y->ob), 1);
    CHECK_EQ(pending_bits(s.a) & FT_PENDING_MERGE, 0);
    CHECK(ft_object_is_unique(&y->ob));
    ft_decref(&y->ob);
    window_setup_finish(&s);
}

TEST(settling_on_a_reused_block_settles_the_new_objects_drop)
{
    window_setup s;
    window_setup_start(&s);
    gated_drop b_drop, d_drop;
    tracked *y = reuse_while_b_waits(&s, &b_drop);
    ft_incref(&y->ob); /* D's reference */
    drop_into_window(&s.d, &d_drop, &y->ob);
    CHECK_EQ(shared_word(y), -FT_SHARED_ONE);
    leave_window(&s.b, &b_drop); /* B finds y's word negative: it queues y for D */
    CHECK_EQ(shared_word(y), FT_SHARED_QUEUED);
    CHECK(pending_bits(s.a) & FT_PENDING_MERGE);
    leave_window(&s.d, &d_drop); /* D finds y QUEUED: nothing left to do */
    CHECK_EQ(shared_word(y), FT_SHARED_QUEUED);
    CHECK_EQ(ft_refcount(&y->ob), 2); /* A's reference and the queue's */
    ft_safepoint(s.a);                 /* drain: merged to 1 */
    CHECK_EQ(ft_refcount(&y->ob), 1);
    CHECK(is_alive(y));
    ft_decref(&y->ob);
    window_setup_finish(&s);
}

TEST(a_count_brought_back_to_zero_needs_no_settling)
{
    window_setup s;
    window_setup_start(&s);
    tracked *x = new_tracked(s.a, &tracked_type);
    ft_incref(&x->ob); /* B's */
    gated_drop b_drop;
    drop_into_window(&s.b, &b_drop, &x->ob);
    commanded_do(NULL, &s.c, cmd_incref_one, &x->ob); /* C takes a reference: the word is 0 */
    leave_window(&s.b, &b_drop);
    CHECK_EQ(shared_word(x), 0);
    CHECK_EQ(pending_bits(s.a) & FT_PENDING_MERGE, 0);
    CHECK_EQ(ft_refcount(&x->ob), 2); /* A's and C's */
    commanded_do(NULL, &s.c, cmd_drop_one, &x->ob); /* C's drop queues it */
    CHECK_EQ(shared_word(x), FT_SHARED_QUEUED);
    ft_safepoint(s.a);
    CHECK_EQ(ft_refcount(&x->ob), 1);
    ft_decref(&x->ob);
    window_setup_finish(&s);
}

#endif

/* Two threads each receive every object the owner allocates with a reference for each, and each
 * takes one more and drops both: every object's last non-owner drops start at a shared count of
 * zero, so they go through the window, while the owner drains, frees and reuses blocks. */
enum { WINDOW_OBJECTS = 20000 };

typedef struct window_race {
    ft_runtime *rt;
    tracked *objs[WINDOW_OBJECTS];
    _Atomic int published;
    _Atomic int finished; /* racers that have stopped their thread states */
    _Atomic int windows;  /* debug builds: drops that went through the window */
} window_race;

static void count_window(void *arg)
{
    atomic_fetch_add_explicit((_Atomic int *)arg, 1, memory_order_relaxed);
}

static void *window_racer(void *arg)
{
    window_race *r = arg;
    ft_thread *t = ft_thread_start(r->rt);
    CHECK_THREAD(t != NULL);
    for (int i = 0; i < WINDOW_OBJECTS; i++) {
        AWAIT(t, atomic_load_explicit(&r->published, memory_order_acquire) > i);
        CHECK_THREAD(atomic_load_explicit(&r->published, memory_order_acquire) > i);
        ft_object *o = &r->objs[i]->ob;
        ft_incref(o);
        ft_decref(o);
        ft_decref(o);
        if (i % 64 == 0)
            ft_safepoint(t);
    }
    ft_thread_stop(t);
    atomic_fetch_add(&r->finished, 1);
    return NULL;
}

TEST(racing_non_owner_drops_from_zero_free_every_object_once)
{
    reset_tracking();
    static window_race r;
    memset(&r, 0, sizeof r);
    r.rt = ft_runtime_new(NULL);
    r.rt->decref_window_hook = count_window;
    r.rt->decref_window_arg = &r.windows;
    ft_thread *a = ft_thread_start(r.rt);
    pthread_t racers[2];
    for (int k = 0; k < 2; k++)
        start_thread(&racers[k], window_racer, &r);
    for (int i = 0; i < WINDOW_OBJECTS; i++) {
        tracked *p = new_tracked(a, &tracked_type);
        CHECK(p != NULL);
        ft_incref(&p->ob);
        ft_incref(&p->ob);
        r.objs[i] = p;
        atomic_store_explicit(&r.published, i + 1, memory_order_release);
        ft_decref(&p->ob);
        ft_safepoint(a); /* drains: frees what both racers have dropped, and its blocks are reused */
    }
    AWAIT(a, atomic_load(&r.finished) == 2); /* their stops may stop the world */
    for (int k = 0; k < 2; k++)
        join_thread(racers[k]);
    ft_safepoint(a);
    CHECK(all_freed_once());
#ifdef FTRT_DEBUG
    CHECK(atomic_load(&r.windows) >= WINDOW_OBJECTS); /* at least one per object */
#endif
    ft_thread_stop(a);
    check_heap_empty(r.rt);
    CHECK_EQ(ft_runtime_free(r.rt), FT_OK);
}

int main(void)
{
    RUN(drop_on_another_thread_while_the_owner_runs);
    RUN(queued_objects_are_freed_when_the_owner_stops);
    RUN(drop_after_the_owner_stopped);
    RUN(drop_after_the_owner_exited);
    RUN(restarted_thread_owns_its_objects_again);
    RUN(outbox_collects_until_full_then_hands_over);
    RUN(outbox_hands_over_when_the_owner_changes);
    RUN(outbox_flushes_at_the_droppers_safepoint);
    RUN(outbox_flushes_when_the_dropper_detaches);
    RUN(outbox_flushes_when_the_dropper_stops);
    RUN(owner_stops_while_its_objects_wait_in_an_outbox);
    RUN(drops_reach_the_owner_state_of_the_objects_runtime);
    RUN(objects_dropped_by_a_stopping_threads_destructors_are_handed_over);
    RUN(outbox_flush_at_a_safepoint_survives_a_queue_allocation_failure);
    RUN(outbox_flush_on_detach_survives_a_queue_allocation_failure);
    RUN(owner_stop_races_drops);
    RUN(objects_bounced_between_threads);
    RUN(try_incref_races_the_last_decref);
    RUN(try_incref_races_the_last_decref_through_a_weak_slot);
    RUN(random_drops_by_many_threads_free_every_object_once);
#ifdef FTRT_DEBUG
    RUN(settling_after_the_block_was_reused_leaves_the_new_object_alone);
    RUN(settling_on_a_reused_block_settles_the_new_objects_drop);
    RUN(a_count_brought_back_to_zero_needs_no_settling);
#endif
    RUN(racing_non_owner_drops_from_zero_free_every_object_once);
    return harness_done();
}
