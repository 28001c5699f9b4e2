/* tests/test_stw.c: safepoints and stop-the-world.
 *
 * Worker threads spin in hot loops that bump their own counters and call ft_safepoint(); requesters
 * (outside the runtime, or attached to it) stop the world over and over and check, while it is
 * stopped, that every counter is frozen and that an invariant the workers only break between two
 * safepoints holds. The workers' plain (non-atomic) fields are read by the requester only while the
 * world is stopped, so under TSan these tests also check that stopping and starting order memory.
 * Further tests cover detached threads (a stop does not wait for them; attaching during a stop waits
 * for the restart), threads starting and stopping during a stop, churn, two runtimes side by side, a
 * slow safepoint that makes the stop re-poll, the calls built on cores that run inside the caller's
 * own stop (they stop the world only when the caller does not hold it), and the fatal misuse of
 * nesting stops or starting a world that is not stopped.
 *
 * Waits are spins on atomics with a generous time limit, so a broken runtime fails a check rather
 * than hanging; the few fixed-length waits only give a wrong behaviour time to show and never decide
 * whether a correct runtime passes.
 *
 * The tests' own flags use the default, sequentially consistent atomics on purpose: a handshake of
 * the test must never be the weak link that hides (or invents) an ordering bug of the runtime under
 * TSan. Explicit relaxed orders mark the counters that only need to be counted. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "ftrt.h"
#include "thread/thread.h" /* FT_PENDING_STOP */
#include "thread/stw.h" /* ft_stw_stop_unless_held, ft_stw_held_by_caller */

#define WAIT_LIMIT_NS (30 * INT64_C(1000000000)) /* far beyond any correct wait, even under TSan */
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------------------- */

#define NEGATIVE_WINDOW_NS (20 * FT_NS_PER_MS)   /* how long a "must not happen yet" is watched */
#define FREEZE_SPINS 4000                        /* the busy interval between two looks at frozen counters */

static void busy_for_ns(int64_t ns)
{
    int64_t start = now_ns();
    while (now_ns() - start < ns)
        ft_cpu_relax();
}

static uint64_t stw_count(ft_runtime *rt)
{
    ft_runtime_stats stats;
    ft_runtime_get_stats(rt, &stats);
    return stats.stw_count;
}

static bool stop_requested(ft_thread *t)
{
    return (atomic_load_explicit(&((struct ft_thread_head *)t)->pending, memory_order_relaxed) &
            FT_PENDING_STOP) != 0;
}

/* ---- hot-loop workers ---------------------------------------------------------------------------- */

enum { MAX_WORKERS = 4 };

typedef struct worker {
    pthread_t os_thread;
    struct workload *load;
    _Atomic(uint64_t) counter; /* loop iterations; read by anyone at any time */
    /* Written by the worker between safepoints, read by a requester only while the world is stopped:
     * equal at every safepoint, and plain so that TSan sees whether the stop orders them. */
    uint64_t steps_begun, steps_done;
} worker;

typedef struct workload {
    ft_runtime *rt;
    int count;
    worker workers[MAX_WORKERS];
    /* Bumped by every worker, one before and one after a short busy stretch, with no safepoint in
     * between: equal whenever all workers are at safepoints. */
    _Atomic(uint64_t) pair_first, pair_second;
    _Atomic int started;
    _Atomic bool quit;
} workload;

static void *worker_main(void *arg)
{
    worker *w = arg;
    workload *load = w->load;
    ft_thread *t = ft_thread_start(load->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    atomic_fetch_add_explicit(&load->started, 1, memory_order_release);
    while (!atomic_load_explicit(&load->quit, memory_order_relaxed)) {
        w->steps_begun++;
        atomic_fetch_add_explicit(&load->pair_first, 1, memory_order_relaxed);
        for (int i = 0; i < 16; i++)
            ft_cpu_relax();
        atomic_fetch_add_explicit(&load->pair_second, 1, memory_order_relaxed);
        w->steps_done++;
        uint64_t count = atomic_load_explicit(&w->counter, memory_order_relaxed) + 1;
        atomic_store_explicit(&w->counter, count, memory_order_relaxed);
        ft_safepoint(t);
        /* More workers than cores: yield now and then, so each gets a turn within a few
         * microseconds rather than a scheduler time slice. */
        if (count % 32 == 0)
            sched_yield();
    }
    ft_thread_stop(t);
    return NULL;
}

/* Start count workers in rt and wait until each is attached and looping. */
static void workload_launch(workload *load, ft_runtime *rt, int count)
{
    memset(load, 0, sizeof *load);
    load->rt = rt;
    load->count = count;
    for (int i = 0; i < count; i++) {
        load->workers[i].load = load;
        pthread_create(&load->workers[i].os_thread, NULL, worker_main, &load->workers[i]);
    }
    AWAIT(NULL, atomic_load(&load->started) == count);
    CHECK_THREAD(atomic_load(&load->started) == count);
    for (int i = 0; i < count; i++) {
        AWAIT(NULL, atomic_load(&load->workers[i].counter) > 0);
        CHECK_THREAD(atomic_load(&load->workers[i].counter) > 0);
    }
}

/* Tell the workers to stop (the world must be running) and join them. */
static void workload_finish(workload *load)
{
    atomic_store(&load->quit, true);
    for (int i = 0; i < load->count; i++)
        pthread_join(load->workers[i].os_thread, NULL);
}

typedef struct snapshot {
    uint64_t counters[MAX_WORKERS];
} snapshot;

static void take_snapshot(workload *load, snapshot *s)
{
    for (int i = 0; i < load->count; i++)
        s->counters[i] = atomic_load_explicit(&load->workers[i].counter, memory_order_relaxed);
}

/* With load's world stopped by the caller: the workers' invariants hold and nothing moves during a
 * busy stretch. Fills *s with the frozen counters. Returns whether all was well. */
static bool check_frozen(workload *load, snapshot *s)
{
    int failures = thread_failures();
    take_snapshot(load, s);
    uint64_t first = atomic_load_explicit(&load->pair_first, memory_order_relaxed);
    uint64_t second = atomic_load_explicit(&load->pair_second, memory_order_relaxed);
    CHECK_THREAD(first == second);
    for (int i = 0; i < load->count; i++)
        CHECK_THREAD(load->workers[i].steps_begun == load->workers[i].steps_done);
    for (int i = 0; i < FREEZE_SPINS; i++)
        ft_cpu_relax();
    snapshot later;
    take_snapshot(load, &later);
    for (int i = 0; i < load->count; i++)
        CHECK_THREAD(later.counters[i] == s->counters[i]);
    CHECK_THREAD(atomic_load_explicit(&load->pair_first, memory_order_relaxed) == first);
    CHECK_THREAD(atomic_load_explicit(&load->pair_second, memory_order_relaxed) == second);
    return thread_failures() == failures;
}

/* After a restart: every worker moves past where it was frozen. t is the caller's attached state or
 * NULL. */
static bool check_moving(workload *load, const snapshot *s, ft_thread *t)
{
    int failures = thread_failures();
    for (int i = 0; i < load->count; i++) {
        AWAIT(t, atomic_load_explicit(&load->workers[i].counter, memory_order_relaxed) >
                     s->counters[i]);
        CHECK_THREAD(atomic_load_explicit(&load->workers[i].counter, memory_order_relaxed) >
                     s->counters[i]);
    }
    return thread_failures() == failures;
}

/* ---- basic stops --------------------------------------------------------------------------------- */

TEST(stop_with_no_other_threads)
{
    ft_runtime *rt = new_runtime(NULL);
    CHECK(!ft_world_is_stopped(rt));

    /* From outside the runtime. */
    ft_stop_the_world(rt);
    CHECK(ft_world_is_stopped(rt));
    ft_start_the_world(rt);
    CHECK(!ft_world_is_stopped(rt));
    CHECK_EQ(stw_count(rt), 1);

    /* From an attached thread, which keeps running: it may still poll its safepoint. */
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    ft_stop_the_world(rt);
    CHECK(ft_world_is_stopped(rt));
    ft_safepoint(t);
    CHECK(ft_thread_current() == t);
    ft_start_the_world(rt);
    CHECK(!ft_world_is_stopped(rt));
    CHECK_EQ(stw_count(rt), 2);

    /* From the same thread while detached, i.e. as an outsider. */
    ft_detach(t);
    ft_stop_the_world(rt);
    CHECK(ft_world_is_stopped(rt));
    ft_start_the_world(rt);
    ft_attach(t);
    CHECK_EQ(stw_count(rt), 3);

    ft_runtime_stats stats;
    ft_runtime_get_stats(rt, &stats);
    CHECK(stats.stw_total_ns >= stats.stw_max_ns);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* A core that needs the world stopped stops it only if the caller does not hold the stop, and says
 * whether it did, so that it restarts only then; the public calls built on cores run inside the
 * caller's own stop without stopping again (a collector will run them all in one stop). */
typedef struct held_probe {
    ft_runtime *rt;
    bool held;
} held_probe;

static void *probe_held(void *arg)
{
    held_probe *p = arg;
    p->held = ft_stw_held_by_caller(p->rt);
    return NULL;
}

TEST(cores_run_inside_the_callers_stop)
{
    fixture f = fixture_setup();
    uint64_t stops = stw_count(f.rt);

    CHECK(!ft_stw_held_by_caller(f.rt));
    bool stopped = ft_stw_stop_unless_held(f.rt, "test");
    CHECK(stopped);
    CHECK(ft_stw_held_by_caller(f.rt));
    CHECK(!ft_stw_stop_unless_held(f.rt, "test")); /* nested: nothing to do, nothing to undo */
    ft_qsbr_stats qs;
    ft_qsbr_get_stats(f.rt, &qs);
    ft_heap_stats hs;
    ft_heap_get_stats(f.rt, &hs);
    CHECK_EQ(ft_uniqueid_merge(f.rt), 0);
    CHECK_EQ(ft_tlbc_clear_unused(f.rt), 0);
    CHECK(ft_stw_held_by_caller(f.rt));
    ft_start_the_world(f.rt);
    CHECK(!ft_stw_held_by_caller(f.rt));
    CHECK_EQ(stw_count(f.rt), stops + 1);

    /* Another OS thread does not hold this thread's stop. */
    held_probe probe = {f.rt, true};
    ft_stop_the_world(f.rt);
    pthread_t th;
    int rc = pthread_create(&th, NULL, probe_held, &probe);
    if (rc == 0)
        pthread_join(th, NULL);
    ft_start_the_world(f.rt);
    CHECK_EQ(rc, 0);
    CHECK(!probe.held);

    /* Outside a stop, the calls stop the world themselves, once each. */
    stops = stw_count(f.rt);
    ft_qsbr_get_stats(f.rt, &qs);
    ft_heap_get_stats(f.rt, &hs);
    CHECK_EQ(ft_uniqueid_merge(f.rt), 0);
    CHECK_EQ(ft_tlbc_clear_unused(f.rt), 0);
    CHECK_EQ(stw_count(f.rt), stops + 4);
    fixture_teardown(f);
}

/* Stop a world of hot workers STOPS times; requester is NULL (outside) or an attached state. */
static void stop_hot_workers_repeatedly(ft_runtime *rt, ft_thread *requester, int workers, int stops)
{
    workload load;
    workload_launch(&load, rt, workers);
    for (int round = 0; round < stops && thread_failures() == 0; round++) {
        snapshot frozen;
        ft_stop_the_world(rt);
        CHECK_THREAD(ft_world_is_stopped(rt));
        bool ok = check_frozen(&load, &frozen);
        if (requester)
            ft_safepoint(requester); /* the requester runs on and may poll */
        ft_start_the_world(rt);
        CHECK_THREAD(!ft_world_is_stopped(rt));
        if (ok)
            check_moving(&load, &frozen, requester);
    }
    workload_finish(&load);
}

TEST(stop_freezes_hot_workers_from_outside)
{
    enum { STOPS = 200 };
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    stop_hot_workers_repeatedly(rt, NULL, 3, STOPS);
    CHECK_EQ(thread_failures(), failures);
    ft_runtime_stats stats;
    ft_runtime_get_stats(rt, &stats);
    CHECK_EQ(stats.stw_count, STOPS);
    CHECK_EQ(stats.threads, 0);
    CHECK(stats.stw_total_ns >= stats.stw_max_ns);
    CHECK(stats.stw_max_ns > 0); /* each stop waited for three running threads */
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(stop_freezes_hot_workers_from_attached_thread)
{
    enum { STOPS = 200 };
    int failures = thread_failures();
    fixture f = fixture_setup();
    stop_hot_workers_repeatedly(f.rt, f.t, 3, STOPS);
    CHECK_EQ(thread_failures(), failures);
    CHECK(ft_thread_current() == f.t);
    CHECK_EQ(stw_count(f.rt), STOPS);
    fixture_teardown(f);
}

/* Two requesters on one runtime, one attached and one outside, take turns: stops are serialised. */
typedef struct rival {
    ft_runtime *rt;
    workload *load;
    bool attached;
    int stops;
    _Atomic int *inside; /* requesters between their stop and start: at most one */
} rival;

static void *rival_main(void *arg)
{
    rival *r = arg;
    ft_thread *t = NULL;
    if (r->attached) {
        t = ft_thread_start(r->rt);
        CHECK_THREAD(t != NULL);
    }
    for (int i = 0; i < r->stops; i++) {
        snapshot frozen;
        ft_stop_the_world(r->rt);
        CHECK_THREAD(atomic_fetch_add(r->inside, 1) == 0);
        CHECK_THREAD(ft_world_is_stopped(r->rt));
        check_frozen(r->load, &frozen);
        CHECK_THREAD(atomic_fetch_sub(r->inside, 1) == 1);
        ft_start_the_world(r->rt);
        if (t)
            ft_safepoint(t);
    }
    if (t)
        ft_thread_stop(t);
    return NULL;
}

TEST(concurrent_requesters_are_serialised)
{
    enum { STOPS = 100 };
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    workload load;
    workload_launch(&load, rt, 2);
    _Atomic int inside = 0;
    rival rivals[2] = {
        {rt, &load, true, STOPS, &inside},
        {rt, &load, false, STOPS, &inside},
    };
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, rival_main, &rivals[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    workload_finish(&load);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(stw_count(rt), 2 * STOPS);
    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- detached threads ---------------------------------------------------------------------------- */

typedef struct detached_thread {
    ft_runtime *rt;
    ft_event wakeup;           /* for the event waiter */
    _Atomic bool detached;     /* the spinner has detached */
    _Atomic bool go_attach;    /* the spinner may call ft_attach */
    _Atomic bool attaching;    /* the spinner is about to call ft_attach */
    _Atomic bool attached;     /* its ft_attach returned */
    _Atomic bool wait_returned; /* the event waiter's ft_event_wait returned */
} detached_thread;

/* Detaches, then touches nothing of the runtime until told to attach. */
static void *detached_spinner_main(void *arg)
{
    detached_thread *d = arg;
    ft_thread *t = ft_thread_start(d->rt);
    CHECK_THREAD(t != NULL);
    ft_detach(t);
    atomic_store(&d->detached, true);
    AWAIT(NULL, atomic_load(&d->go_attach));
    atomic_store(&d->attaching, true);
    ft_attach(t);
    atomic_store(&d->attached, true);
    CHECK_THREAD(ft_thread_current() == t);
    ft_thread_stop(t);
    return NULL;
}

/* Blocks in ft_event_wait, which detaches it while parked. */
static void *event_waiter_main(void *arg)
{
    detached_thread *d = arg;
    ft_thread *t = ft_thread_start(d->rt);
    CHECK_THREAD(t != NULL);
    ft_event_wait(&d->wakeup);
    atomic_store(&d->wait_returned, true);
    CHECK_THREAD(ft_thread_current() == t);
    CHECK_THREAD(ft_event_is_set(&d->wakeup));
    ft_thread_stop(t);
    return NULL;
}

TEST(detached_threads_do_not_delay_a_stop_and_wait_to_attach)
{
    enum { STOPS_WHILE_DETACHED = 50 };
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    detached_thread d;
    memset(&d, 0, sizeof d);
    d.rt = rt;
    workload load;
    workload_launch(&load, rt, 1);
    pthread_t spinner, waiter;
    pthread_create(&spinner, NULL, detached_spinner_main, &d);
    pthread_create(&waiter, NULL, event_waiter_main, &d);
    AWAIT(NULL, atomic_load(&d.detached));
    CHECK_THREAD(atomic_load(&d.detached));
    /* State 2: unset with a waiter, i.e. the waiter is in ft_event_wait. */
    AWAIT(NULL, atomic_load(&d.wakeup.state) == 2);
    CHECK_THREAD(atomic_load(&d.wakeup.state) == 2);

    /* Neither detached thread ever reaches a safepoint, yet every stop completes. */
    for (int i = 0; i < STOPS_WHILE_DETACHED && thread_failures() == failures; i++) {
        snapshot frozen;
        ft_stop_the_world(rt);
        check_frozen(&load, &frozen);
        ft_start_the_world(rt);
        check_moving(&load, &frozen, NULL);
    }

    /* During a stop, both try to attach again: neither gets through until the restart. */
    ft_stop_the_world(rt);
    atomic_store(&d.go_attach, true);
    ft_event_notify(&d.wakeup);
    AWAIT(NULL, atomic_load(&d.attaching));
    CHECK_THREAD(atomic_load(&d.attaching));
    bool got_through = false;
    int64_t start = now_ns();
    while (now_ns() - start < NEGATIVE_WINDOW_NS) {
        got_through |= atomic_load(&d.attached) || atomic_load(&d.wait_returned);
        sched_yield();
    }
    got_through |= atomic_load(&d.attached) || atomic_load(&d.wait_returned);
    CHECK_THREAD(!got_through);
    snapshot frozen;
    check_frozen(&load, &frozen);
    CHECK_THREAD(ft_world_is_stopped(rt));
    ft_start_the_world(rt);

    pthread_join(spinner, NULL);
    pthread_join(waiter, NULL);
    CHECK_THREAD(atomic_load(&d.attached));
    CHECK_THREAD(atomic_load(&d.wait_returned));
    workload_finish(&load);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- threads starting and stopping around a stop -------------------------------------------------- */

typedef struct newcomer {
    ft_runtime *rt;
    _Atomic bool calling_start;
    _Atomic bool start_returned;
} newcomer;

static void *newcomer_main(void *arg)
{
    newcomer *n = arg;
    atomic_store(&n->calling_start, true);
    ft_thread *t = ft_thread_start(n->rt);
    atomic_store(&n->start_returned, true);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    CHECK_THREAD(ft_thread_current() == t);
    CHECK_THREAD(!ft_world_is_stopped(n->rt));
    ft_safepoint(t);
    ft_thread_stop(t);
    return NULL;
}

TEST(thread_start_during_a_stop_waits_for_the_restart)
{
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    workload load;
    workload_launch(&load, rt, 1);
    newcomer n;
    memset(&n, 0, sizeof n);
    n.rt = rt;

    ft_stop_the_world(rt);
    pthread_t thread;
    pthread_create(&thread, NULL, newcomer_main, &n);
    AWAIT(NULL, atomic_load(&n.calling_start));
    CHECK_THREAD(atomic_load(&n.calling_start));
    bool returned_early = false;
    int64_t start = now_ns();
    while (now_ns() - start < NEGATIVE_WINDOW_NS) {
        returned_early |= atomic_load(&n.start_returned);
        sched_yield();
    }
    returned_early |= atomic_load(&n.start_returned);
    CHECK_THREAD(!returned_early);
    snapshot frozen;
    check_frozen(&load, &frozen);
    ft_start_the_world(rt);
    pthread_join(thread, NULL);
    CHECK_THREAD(atomic_load(&n.start_returned));
    workload_finish(&load);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

typedef struct leaver {
    ft_runtime *rt;
    _Atomic(ft_thread *) t;
    _Atomic bool ready;   /* started (and detached, for the detached leaver) */
    _Atomic bool go;      /* may stop its state now */
    _Atomic bool stopped; /* ft_thread_stop returned */
} leaver;

/* Detaches, then stops its state when told: during a stop, in the test below. */
static void *detached_leaver_main(void *arg)
{
    leaver *l = arg;
    ft_thread *t = ft_thread_start(l->rt);
    CHECK_THREAD(t != NULL);
    ft_detach(t);
    atomic_store(&l->ready, true);
    AWAIT(NULL, atomic_load(&l->go));
    ft_thread_stop(t);
    atomic_store(&l->stopped, true);
    return NULL;
}

TEST(detached_thread_stops_during_a_stop)
{
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    workload load;
    workload_launch(&load, rt, 1);
    leaver l;
    memset(&l, 0, sizeof l);
    l.rt = rt;
    pthread_t thread;
    pthread_create(&thread, NULL, detached_leaver_main, &l);
    AWAIT(NULL, atomic_load(&l.ready));
    CHECK_THREAD(atomic_load(&l.ready));
    CHECK_THREAD(thread_count(rt) == 2);

    ft_stop_the_world(rt);
    atomic_store(&l.go, true);
    /* Stopping a state attaches it first (its teardown may free objects), so a detached thread
     * that stops during a stop finishes after the restart; the stop itself is not held up. */
    CHECK_THREAD(ft_world_is_stopped(rt));
    snapshot frozen;
    check_frozen(&load, &frozen);
    CHECK_THREAD(!atomic_load(&l.stopped) || thread_count(rt) == 1);
    ft_start_the_world(rt);
    pthread_join(thread, NULL);
    CHECK_THREAD(atomic_load(&l.stopped));
    CHECK_THREAD(thread_count(rt) == 1);

    /* The runtime is still sound: stops keep working. */
    ft_stop_the_world(rt);
    check_frozen(&load, &frozen);
    ft_start_the_world(rt);
    workload_finish(&load);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(stw_count(rt), 2);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* Attached and never polling: a stop has to wait for it, until it stops its state instead. */
static void *attached_leaver_main(void *arg)
{
    leaver *l = arg;
    ft_thread *t = ft_thread_start(l->rt);
    CHECK_THREAD(t != NULL);
    atomic_store(&l->t, t);
    atomic_store(&l->ready, true);
    while (!atomic_load(&l->go))
        ft_cpu_relax();
    ft_thread_stop(t);
    atomic_store(&l->stopped, true);
    return NULL;
}

typedef struct requester {
    ft_runtime *rt;
    _Atomic bool stopped; /* ft_stop_the_world returned */
} requester;

static void *requester_main(void *arg)
{
    requester *r = arg;
    ft_stop_the_world(r->rt);
    atomic_store(&r->stopped, true);
    CHECK_THREAD(ft_world_is_stopped(r->rt));
    ft_start_the_world(r->rt);
    return NULL;
}

TEST(attached_thread_stops_while_a_stop_waits_for_it)
{
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    leaver l;
    memset(&l, 0, sizeof l);
    l.rt = rt;
    pthread_t leaver_thread, requester_thread;
    pthread_create(&leaver_thread, NULL, attached_leaver_main, &l);
    AWAIT(NULL, atomic_load(&l.ready));
    CHECK_THREAD(atomic_load(&l.ready));

    requester r = {rt, false};
    pthread_create(&requester_thread, NULL, requester_main, &r);
    /* The request reaches the leaver's pending word; the stop cannot complete while it runs on. */
    ft_thread *t = atomic_load(&l.t);
    AWAIT(NULL, stop_requested(t));
    CHECK_THREAD(stop_requested(t));
    bool stopped_early = false;
    int64_t start = now_ns();
    while (now_ns() - start < NEGATIVE_WINDOW_NS) {
        stopped_early |= atomic_load(&r.stopped);
        sched_yield();
    }
    stopped_early |= atomic_load(&r.stopped);
    CHECK_THREAD(!stopped_early);

    /* Instead of reaching a safepoint it stops its state: the stop must count it out and finish. */
    atomic_store(&l.go, true);
    pthread_join(requester_thread, NULL);
    pthread_join(leaver_thread, NULL);
    CHECK_THREAD(atomic_load(&r.stopped));
    CHECK_THREAD(atomic_load(&l.stopped));
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(stw_count(rt), 1);

    /* And the next stop does not wait for the departed thread. */
    ft_stop_the_world(rt);
    ft_start_the_world(rt);
    CHECK_EQ(stw_count(rt), 2);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* Threads start and stop their states over and over while a requester stops the world in a loop. */
typedef struct churn {
    ft_runtime *rt;
    int lives;           /* start/stop cycles per churner */
    _Atomic int live;    /* churners between "started" and "about to stop": frozen during a stop */
    _Atomic int lives_done;
    _Atomic int churners_done;
} churn;

static void *churner_main(void *arg)
{
    churn *c = arg;
    for (int life = 0; life < c->lives; life++) {
        ft_thread *t = ft_thread_start(c->rt);
        CHECK_THREAD(t != NULL);
        if (!t)
            break;
        atomic_fetch_add_explicit(&c->live, 1, memory_order_relaxed);
        for (int i = 0; i < 20; i++) {
            ft_safepoint(t);
            if (i % 8 == life % 8) {
                ft_detach(t);
                sched_yield();
                ft_attach(t);
            }
        }
        atomic_fetch_sub_explicit(&c->live, 1, memory_order_relaxed);
        if (life % 2)
            ft_detach(t); /* stop sometimes from the detached state */
        ft_thread_stop(t);
        atomic_fetch_add(&c->lives_done, 1);
    }
    atomic_fetch_add(&c->churners_done, 1);
    return NULL;
}

TEST(churn_of_threads_during_repeated_stops)
{
    enum { CHURNERS = 2, LIVES = 300 };
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    workload load;
    workload_launch(&load, rt, 1);
    churn c;
    memset(&c, 0, sizeof c);
    c.rt = rt;
    c.lives = LIVES;
    pthread_t threads[CHURNERS];
    for (int i = 0; i < CHURNERS; i++)
        pthread_create(&threads[i], NULL, churner_main, &c);

    uint64_t stops = 0;
    while (atomic_load(&c.churners_done) < CHURNERS && thread_failures() == failures) {
        snapshot frozen;
        ft_stop_the_world(rt);
        stops++;
        CHECK_THREAD(ft_world_is_stopped(rt));
        int live = atomic_load_explicit(&c.live, memory_order_relaxed);
        int lives_done = atomic_load(&c.lives_done);
        check_frozen(&load, &frozen);
        CHECK_THREAD(atomic_load_explicit(&c.live, memory_order_relaxed) == live);
        ft_start_the_world(rt);
        /* Back to back stops would starve the churners: let at least one more life end first. */
        AWAIT(NULL, atomic_load(&c.lives_done) != lives_done ||
                        atomic_load(&c.churners_done) == CHURNERS);
    }
    for (int i = 0; i < CHURNERS; i++)
        pthread_join(threads[i], NULL);
    workload_finish(&load);
    CHECK_EQ(thread_failures(), failures);
    CHECK(stops > 0);
    CHECK_EQ(stw_count(rt), stops);
    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- two runtimes -------------------------------------------------------------------------------- */

TEST(a_stop_leaves_other_runtimes_running)
{
    int failures = thread_failures();
    ft_runtime *rt1 = ft_runtime_new(NULL);
    ft_runtime *rt2 = ft_runtime_new(NULL);
    CHECK(rt1 != NULL);
    CHECK(rt2 != NULL);
    workload load1, load2;
    workload_launch(&load1, rt1, 2);
    workload_launch(&load2, rt2, 2);

    for (int round = 0; round < 20 && thread_failures() == failures; round++) {
        snapshot frozen1, before2;
        ft_stop_the_world(rt1);
        CHECK_THREAD(!ft_world_is_stopped(rt2));
        take_snapshot(&load2, &before2);
        check_frozen(&load1, &frozen1);
        check_moving(&load2, &before2, NULL); /* rt2 makes progress while rt1 is stopped */
        snapshot still1;
        take_snapshot(&load1, &still1);
        for (int i = 0; i < load1.count; i++)
            CHECK_THREAD(still1.counters[i] == frozen1.counters[i]);
        ft_start_the_world(rt1);
        check_moving(&load1, &frozen1, NULL);
    }
    workload_finish(&load1);
    workload_finish(&load2);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(stw_count(rt2), 0);
    CHECK_EQ(ft_runtime_free(rt1), FT_OK);
    CHECK_EQ(ft_runtime_free(rt2), FT_OK);
}

typedef struct stopper {
    workload *load;
    int stops;
} stopper;

static void *stopper_main(void *arg)
{
    stopper *s = arg;
    for (int i = 0; i < s->stops; i++) {
        snapshot frozen;
        ft_stop_the_world(s->load->rt);
        bool ok = check_frozen(s->load, &frozen);
        ft_start_the_world(s->load->rt);
        if (!ok || !check_moving(s->load, &frozen, NULL))
            break;
    }
    return NULL;
}

TEST(two_runtimes_stopped_concurrently)
{
    enum { STOPS = 100 };
    int failures = thread_failures();
    ft_runtime *rt[2];
    workload load[2];
    stopper stoppers[2];
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        rt[i] = ft_runtime_new(NULL);
        CHECK(rt[i] != NULL);
    }
    for (int i = 0; i < 2; i++) {
        workload_launch(&load[i], rt[i], 2);
        stoppers[i] = (stopper){&load[i], STOPS};
    }
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, stopper_main, &stoppers[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < 2; i++)
        workload_finish(&load[i]);
    CHECK_EQ(thread_failures(), failures);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(stw_count(rt[i]), STOPS);
        CHECK_EQ(ft_runtime_free(rt[i]), FT_OK);
    }
}

/* ---- a slow safepoint ---------------------------------------------------------------------------- */

#define SLOW_SAFEPOINT_NS (5 * FT_NS_PER_MS)

typedef struct slowpoke {
    ft_runtime *rt;
    _Atomic bool ready;
    _Atomic bool quit;
    _Atomic int slow_rounds;  /* stop requests it answered late */
    _Atomic(uint64_t) loops;  /* bumped while attached: moving means it is past its attach */
} slowpoke;

/* Polls its safepoint only when a stop is pending, and only after a busy stretch of
 * SLOW_SAFEPOINT_NS: every stop has to wait at least that long, beyond the first re-poll. */
static void *slowpoke_main(void *arg)
{
    slowpoke *s = arg;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    atomic_store(&s->ready, true);
    while (!atomic_load_explicit(&s->quit, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&s->loops, 1, memory_order_relaxed);
        if (stop_requested(t)) {
            busy_for_ns(SLOW_SAFEPOINT_NS);
            atomic_fetch_add(&s->slow_rounds, 1);
            ft_safepoint(t);
        }
        ft_cpu_relax();
    }
    ft_thread_stop(t);
    return NULL;
}

static void check_stop_waits_for_slow_safepoint(const ft_config *cfg)
{
    enum { STOPS = 5 };
    int failures = thread_failures();
    ft_runtime *rt = ft_runtime_new(cfg);
    CHECK(rt != NULL);
    slowpoke s;
    memset(&s, 0, sizeof s);
    s.rt = rt;
    pthread_t thread;
    pthread_create(&thread, NULL, slowpoke_main, &s);
    AWAIT(NULL, atomic_load(&s.ready));
    CHECK_THREAD(atomic_load(&s.ready));
    for (int i = 0; i < STOPS; i++) {
        int64_t start = now_ns();
        ft_stop_the_world(rt);
        int64_t waited = now_ns() - start;
        /* The slowpoke was attached and reached its safepoint only after its busy stretch. */
        CHECK_THREAD(atomic_load(&s.slow_rounds) == i + 1);
        CHECK_THREAD(waited >= SLOW_SAFEPOINT_NS);
        uint64_t frozen_loops = atomic_load(&s.loops);
        ft_start_the_world(rt);
        /* Right after the restart it is detached until it wakes and attaches again, and a stop
         * would rightly not wait for it: wait until it loops, attached, again. */
        AWAIT(NULL, atomic_load(&s.loops) > frozen_loops);
        CHECK_THREAD(atomic_load(&s.loops) > frozen_loops);
    }
    atomic_store(&s.quit, true);
    pthread_join(thread, NULL);
    CHECK_EQ(thread_failures(), failures);
    ft_runtime_stats stats;
    ft_runtime_get_stats(rt, &stats);
    CHECK_EQ(stats.stw_count, STOPS);
    /* Where the runtime starts its clock is its business; half the stretch is surely inside. */
    CHECK(stats.stw_max_ns >= (uint64_t)SLOW_SAFEPOINT_NS / 2);
    CHECK(stats.stw_total_ns >= (uint64_t)STOPS * SLOW_SAFEPOINT_NS / 2);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(stop_waits_for_a_slow_safepoint)
{
    check_stop_waits_for_slow_safepoint(NULL);
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.name = "fast-repoll";
    cfg.stw_repoll_ns = 100 * FT_NS_PER_US;
    cfg.stw_spin_ns = 0;
    check_stop_waits_for_slow_safepoint(&cfg);
}

/* ---- fatal misuse -------------------------------------------------------------------------------- */

static void nested_stop_from_outside(void *arg)
{
    (void)arg;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_stop_the_world(rt);
    ft_stop_the_world(rt);
}

static void nested_stop_from_attached_thread(void *arg)
{
    (void)arg;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread_start(rt);
    ft_stop_the_world(rt);
    ft_stop_the_world(rt);
}

TEST(death_nested_stop)
{
    CHECK_DEATH(nested_stop_from_outside, NULL, "ft_stop_the_world");
    CHECK_DEATH(nested_stop_from_attached_thread, NULL, "ft_stop_the_world");
}

static void start_without_stop(void *arg)
{
    (void)arg;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_start_the_world(rt);
}

static void start_twice(void *arg)
{
    (void)arg;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread_start(rt);
    ft_stop_the_world(rt);
    ft_start_the_world(rt);
    ft_start_the_world(rt);
}

TEST(death_start_when_not_stopped)
{
    CHECK_DEATH(start_without_stop, NULL, "ft_start_the_world");
    CHECK_DEATH(start_twice, NULL, "ft_start_the_world");
}

/* The OS thread holding the stop detached its own state in the runtime: attaching it would wait for
 * the restart that only this thread can make. */
static void attach_own_state_while_holding_the_stop(void *arg)
{
    (void)arg;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    ft_detach(t);
    ft_stop_the_world(rt);
    ft_attach(t);
}

TEST(death_attach_own_state_while_holding_the_stop)
{
    CHECK_DEATH(attach_own_state_while_holding_the_stop, NULL, "ft_attach", "cannot attach");
}

int main(void)
{
    RUN(stop_with_no_other_threads);
    RUN(cores_run_inside_the_callers_stop);
    RUN(stop_freezes_hot_workers_from_outside);
    RUN(stop_freezes_hot_workers_from_attached_thread);
    RUN(concurrent_requesters_are_serialised);
    RUN(detached_threads_do_not_delay_a_stop_and_wait_to_attach);
    RUN(thread_start_during_a_stop_waits_for_the_restart);
    RUN(detached_thread_stops_during_a_stop);
    RUN(attached_thread_stops_while_a_stop_waits_for_it);
    RUN(churn_of_threads_during_repeated_stops);
    RUN(a_stop_leaves_other_runtimes_running);
    RUN(two_runtimes_stopped_concurrently);
    RUN(stop_waits_for_a_slow_safepoint);
    RUN(death_nested_stop);
    RUN(death_start_when_not_stopped);
    RUN(death_attach_own_state_while_holding_the_stop);
    return harness_done();
}
