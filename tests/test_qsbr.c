/* tests/test_qsbr.c: quiescent-state-based reclamation: sequences, goals, polls, slots, fork.
 *
 * A goal from ft_qsbr_advance must stay unreached while any attached thread has not passed a
 * quiescent point since the advance, and must be reached once every attached thread has. The tests
 * drive helper threads ("workers") step by step through commands: a worker either loops over
 * ft_safepoint (quiescent, and stoppable) or holds still without one (attached but not quiescent),
 * so the main thread knows exactly which threads owe a quiescent point when it polls. Further tests:
 * goals from ft_qsbr_next need somebody's advance; detached threads never hold a goal back; the slot
 * array grows (with the world stopped) while dozens of threads advance, poll and pass safepoints,
 * after which every thread's slot still counts on its own; a start whose array cannot grow fails
 * alone; the statistics race with threads starting and stopping (under TSan); and a forked child whose
 * parent had a non-quiescent thread can still reach goals and stop the world.
 *
 * Waits spin on atomics with a generous time limit (a broken runtime fails a check rather than
 * hanging); the test's own handshakes use sequentially consistent atomics so that they never hide an
 * ordering bug of the runtime under TSan. "Must not happen yet" checks look many times, yielding
 * between looks; they never decide whether a correct runtime passes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "ftrt.h"
#include "harness.h"

/* ---- helpers ------------------------------------------------------------------------------------- */

#define WAIT_LIMIT_NS (30 * INT64_C(1000000000)) /* far beyond any correct wait, even under TSan */
#include "test_util.h"
#define NEGATIVE_LOOKS 200                        /* looks at a goal that must stay unreached */

/* Poll goal NEGATIVE_LOOKS times without t passing a quiescent point; true if it was ever reached. */
static bool reached_without_quiescing(ft_thread *t, uint64_t goal)
{
    for (int i = 0; i < NEGATIVE_LOOKS; i++) {
        if (ft_qsbr_poll(t, goal))
            return true;
        sched_yield();
    }
    return false;
}

static void cmd_quiescent(commanded *w)
{
    ft_qsbr_quiescent(w->t);
}

static void cmd_advance(commanded *w)
{
    w->result = ft_qsbr_advance(w->rt);
}

/* ---- sequences ----------------------------------------------------------------------------------- */

TEST(sequences_are_odd_and_advance_by_two)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    uint64_t next = ft_qsbr_next(rt);
    CHECK_EQ(next % 2, 1);
    CHECK_EQ(ft_qsbr_next(rt), next); /* next does not advance */
    uint64_t g = ft_qsbr_advance(rt);
    CHECK_EQ(g, next);
    CHECK_EQ(ft_qsbr_next(rt), g + 2);
    CHECK_EQ(ft_qsbr_advance(rt), g + 2);
    ft_qsbr_stats stats;
    ft_qsbr_get_stats(rt, &stats);
    CHECK_EQ(stats.wr_seq, g + 2);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- goals and quiescent points ------------------------------------------------------------------ */

TEST(goal_waits_for_every_attached_thread)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded b;
    commanded_start(a, &b, rt);

    /* The caller alone: reached once it passes a quiescent point itself. */
    commanded_do(a, &b, cmd_hold, NULL);
    uint64_t g = ft_qsbr_advance(rt);
    CHECK(!ft_qsbr_poll(a, g)); /* a itself has not passed one since the advance */
    ft_safepoint(a);
    CHECK(!reached_without_quiescing(a, g)); /* b is attached and holds still */
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    CHECK(ft_qsbr_poll(a, g));

    /* ft_qsbr_quiescent reports the same thing. */
    uint64_t g2 = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    CHECK(!reached_without_quiescing(a, g2));
    commanded_do(NULL, &b, cmd_quiescent, NULL);
    CHECK(ft_qsbr_poll(a, g2));
    CHECK(ft_qsbr_poll(a, g)); /* an older goal stays reached */

    /* The poller's own point counts too: b quiescent, a not. */
    uint64_t g3 = ft_qsbr_advance(rt);
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    CHECK(!reached_without_quiescing(a, g3));
    ft_qsbr_quiescent(a);
    CHECK(ft_qsbr_poll(a, g3));

    /* Two goals: quiescing after the first advance only does not reach the second. */
    uint64_t g4 = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    uint64_t g5 = ft_qsbr_advance(rt);
    CHECK(ft_qsbr_poll(a, g4));
    CHECK(!ft_qsbr_poll(a, g5));
    ft_qsbr_quiescent(a);
    CHECK(!reached_without_quiescing(a, g5));
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    CHECK(ft_qsbr_poll(a, g5));

    commanded_do(a, &b, cmd_resume, NULL);
    commanded_finish(a, &b);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(next_goal_needs_an_advance)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);

    uint64_t g = ft_qsbr_next(rt);
    ft_qsbr_quiescent(a);
    CHECK(!ft_qsbr_poll(a, g));
    ft_safepoint(a);
    CHECK(!reached_without_quiescing(a, g)); /* nobody advanced: quiescing alone never reaches it */

    /* Another thread advances: the sequence it gets is exactly the goal. */
    commanded b;
    commanded_start(a, &b, rt);
    commanded_do(a, &b, cmd_hold, NULL);
    uint64_t g1 = ft_qsbr_next(rt);
    CHECK(!ft_qsbr_poll(a, g1));
    commanded_do(NULL, &b, cmd_advance, NULL);
    CHECK_EQ(b.result, g1);
    ft_qsbr_quiescent(a);
    CHECK(!reached_without_quiescing(a, g1)); /* b advanced but has not passed a point since */
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    CHECK(ft_qsbr_poll(a, g1));
    CHECK(ft_qsbr_poll(a, g));

    /* The caller advances itself. */
    uint64_t g2 = ft_qsbr_next(rt);
    CHECK(!ft_qsbr_poll(a, g2));
    CHECK_EQ(ft_qsbr_advance(rt), g2);
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    CHECK(!ft_qsbr_poll(a, g2));
    ft_qsbr_quiescent(a);
    CHECK(ft_qsbr_poll(a, g2));

    commanded_do(a, &b, cmd_resume, NULL);
    commanded_finish(a, &b);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(detached_thread_never_blocks_a_goal)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded b;
    commanded_start(a, &b, rt);

    /* Detached: goals advanced meanwhile need only a. */
    commanded_do(a, &b, cmd_detach, NULL);
    uint64_t g = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    CHECK(ft_qsbr_poll(a, g));
    uint64_t g2 = ft_qsbr_advance(rt);
    ft_safepoint(a);
    CHECK(ft_qsbr_poll(a, g2));

    /* Attaching publishes the current sequence: goals before it stay reached, later ones wait. */
    commanded_do(NULL, &b, cmd_attach, NULL);
    CHECK(ft_qsbr_poll(a, g2));
    uint64_t g3 = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    CHECK(!reached_without_quiescing(a, g3));
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    CHECK(ft_qsbr_poll(a, g3));

    /* A goal pending while b detaches is released by the detach. */
    uint64_t g4 = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    CHECK(!ft_qsbr_poll(a, g4));
    commanded_do(NULL, &b, cmd_detach, NULL);
    CHECK(ft_qsbr_poll(a, g4));

    commanded_do(a, &b, cmd_attach, NULL);
    commanded_do(a, &b, cmd_resume, NULL);
    commanded_finish(a, &b);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(stopped_thread_never_blocks_a_goal)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded b;
    commanded_start(a, &b, rt);
    commanded_do(a, &b, cmd_hold, NULL);
    uint64_t g = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    CHECK(!ft_qsbr_poll(a, g));
    commanded_finish(NULL, &b); /* stops without passing ft_safepoint on its own */
    CHECK(ft_qsbr_poll(a, g));
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- the slot array grows while threads run ------------------------------------------------------ */

#define GROWTH_THREADS 40 /* plus the main thread: slots grow 8 -> 16 -> 32 -> 64 */

typedef struct growth_shared {
    ft_runtime *rt;
    _Atomic int phase;    /* 0: advance and poll; 1: hold still one by one; 2: stop */
    _Atomic int started;
    _Atomic uint64_t max_index;
} growth_shared;

typedef struct growth_thread {
    pthread_t thread;
    growth_shared *shared;
    _Atomic uint64_t rounds;  /* goals this thread advanced and saw reached */
    _Atomic bool holding;     /* phase 1: attached, not passing safepoints */
    _Atomic bool release;     /* pass one safepoint now */
    _Atomic bool passed;
} growth_thread;

static void *growth_main(void *arg)
{
    growth_thread *g = arg;
    growth_shared *s = g->shared;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    uint64_t index = ft_thread_index(t);
    for (uint64_t m = atomic_load(&s->max_index); index > m;)
        atomic_compare_exchange_weak(&s->max_index, &m, index);
    atomic_fetch_add(&s->started, 1);
    int64_t start = now_ns();
    while (atomic_load(&s->phase) == 0) {
        uint64_t goal = ft_qsbr_advance(s->rt);
        bool reached = false;
        while (!reached && atomic_load(&s->phase) == 0) {
            ft_safepoint(t);
            reached = ft_qsbr_poll(t, goal);
            if (!reached)
                sched_yield();
        }
        if (reached)
            atomic_fetch_add(&g->rounds, 1);
        if (now_ns() - start > WAIT_LIMIT_NS) {
            CHECK_THREAD(!"phase 0 did not end");
            break;
        }
    }
    /* Phase 1: hold still (the last safepoint above was before this point), pass exactly one
     * safepoint when released, then hold still again. */
    atomic_store(&g->holding, true);
    start = now_ns();
    while (!atomic_load(&g->release) && now_ns() - start < WAIT_LIMIT_NS)
        sched_yield();
    ft_safepoint(t);
    atomic_store(&g->passed, true);
    while (atomic_load(&s->phase) != 2 && now_ns() - start < WAIT_LIMIT_NS)
        sched_yield();
    ft_thread_stop(t);
    return NULL;
}

static bool all_rounds_at_least(growth_thread *threads, uint64_t rounds)
{
    for (int i = 0; i < GROWTH_THREADS; i++)
        if (atomic_load(&threads[i].rounds) < rounds)
            return false;
    return true;
}

TEST(slots_grow_while_threads_run)
{
    static growth_thread threads[GROWTH_THREADS];
    growth_shared shared = {.rt = new_runtime(NULL)};
    ft_thread *a = ft_thread_start(shared.rt);
    CHECK(a != NULL);
    memset(threads, 0, sizeof threads);
    for (int i = 0; i < GROWTH_THREADS; i++) {
        threads[i].shared = &shared;
        CHECK(pthread_create(&threads[i].thread, NULL, growth_main, &threads[i]) == 0);
    }
    /* Every thread started (each start past the array's end grew it, with the world stopped) and
     * saw goals reached, while the others kept advancing, polling and passing safepoints. */
    AWAIT(a, atomic_load(&shared.started) == GROWTH_THREADS && all_rounds_at_least(threads, 3));
    CHECK_EQ(atomic_load(&shared.started), GROWTH_THREADS);
    CHECK(all_rounds_at_least(threads, 3));
    CHECK(atomic_load(&shared.max_index) >= 32); /* the array grew past 8, 16 and 32 slots */
    CHECK_THREADS_OK();

    /* Now every thread holds still; each thread's slot must hold the goal back on its own. */
    atomic_store(&shared.phase, 1);
    for (int i = 0; i < GROWTH_THREADS; i++) {
        AWAIT(a, atomic_load(&threads[i].holding));
        CHECK(atomic_load(&threads[i].holding));
    }
    uint64_t goal = ft_qsbr_advance(shared.rt);
    ft_qsbr_quiescent(a);
    CHECK(!reached_without_quiescing(a, goal));
    for (int k = 0; k < GROWTH_THREADS; k++) {
        int i = (k * 17 + 5) % GROWTH_THREADS; /* a scrambled order (17 is coprime with 40) */
        atomic_store(&threads[i].release, true);
        AWAIT(NULL, atomic_load(&threads[i].passed));
        CHECK(atomic_load(&threads[i].passed));
        if (k < GROWTH_THREADS - 1)
            CHECK(!ft_qsbr_poll(a, goal));
        else
            CHECK(ft_qsbr_poll(a, goal));
    }
    atomic_store(&shared.phase, 2);
    ft_detach(a);
    for (int i = 0; i < GROWTH_THREADS; i++)
        pthread_join(threads[i].thread, NULL);
    ft_attach(a);
    CHECK_THREADS_OK();
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(shared.rt), FT_OK);
}

/* A thread start whose slot array cannot grow fails cleanly, and the runtime keeps working. */

typedef struct start_attempt {
    ft_runtime *rt;
    ft_thread *t;
    ft_status error;
} start_attempt;

static void *try_start(void *arg)
{
    start_attempt *s = arg;
    s->t = ft_thread_start(s->rt);
    s->error = s->t ? FT_OK : ft_last_error();
    if (s->t)
        ft_thread_stop(s->t);
    return NULL;
}

TEST(slot_growth_failure_fails_the_start_only)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    enum { FIRST_ARRAY = 8 }; /* slots; the next start needs a bigger array */
    static commanded w[FIRST_ARRAY - 1];
    for (int i = 0; i < FIRST_ARRAY - 1; i++)
        commanded_start(a, &w[i], rt);
    start_attempt s = {.rt = rt};
    /* Allocation sites of a start: its state, its index, then the slot array's growth. */
    ft_debug_fail_allocation(rt, 2);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, try_start, &s) == 0);
    join_detached(a, &th, 1);
    ft_debug_fail_allocation(rt, -1);
    CHECK(s.t == NULL);
    CHECK_EQ(s.error, FT_ENOMEM);
    ft_runtime_stats stats;
    ft_runtime_get_stats(rt, &stats);
    CHECK_EQ(stats.threads, FIRST_ARRAY);

    /* Goals still need every thread; the next start grows the array and counts too. */
    commanded_do(a, &w[3], cmd_hold, NULL);
    uint64_t g = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    CHECK(!reached_without_quiescing(a, g));
    commanded_do(NULL, &w[3], cmd_safepoint, NULL);
    AWAIT(a, ft_qsbr_poll(a, g));
    CHECK(ft_qsbr_poll(a, g));
    commanded_do(a, &w[3], cmd_resume, NULL);
    commanded extra;
    commanded_start(a, &extra, rt);
    CHECK_EQ(ft_thread_index(extra.t), FIRST_ARRAY);
    commanded_do(a, &extra, cmd_hold, NULL);
    uint64_t g2 = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    CHECK(!reached_without_quiescing(a, g2));
    commanded_do(NULL, &extra, cmd_safepoint, NULL);
    AWAIT(a, ft_qsbr_poll(a, g2));
    CHECK(ft_qsbr_poll(a, g2));
    commanded_do(a, &extra, cmd_resume, NULL);
    commanded_finish(a, &extra);
    for (int i = 0; i < FIRST_ARRAY - 1; i++)
        commanded_finish(a, &w[i]);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- statistics while threads start and stop ----------------------------------------------------- */

/* ft_qsbr_get_stats walks the runtime's threads with the world stopped. A stop does not freeze the
 * thread list: a thread suspended inside ft_thread_stop goes on to unlink itself, and a thread that
 * starts meanwhile links (and resets a reused) state. Under TSan an unguarded walk shows as a race. */
#define STATS_CHURNERS 3
#define STATS_CHURN_ROUNDS (UNDER_TSAN ? 300 : 2000)

typedef struct stats_churn {
    ft_runtime *rt;
    _Atomic int finished;
} stats_churn;

static void *stats_churn_main(void *arg)
{
    stats_churn *s = arg;
    for (int r = 0; r < STATS_CHURN_ROUNDS; r++) {
        ft_thread *t = ft_thread_start(s->rt);
        CHECK_THREAD(t != NULL);
        if (!t)
            break;
        for (int i = 0; i < 3; i++)
            ft_free_delayed(t, ft_malloc(t, 64), 64);
        ft_thread_stop(t);
    }
    atomic_fetch_add(&s->finished, 1);
    return NULL;
}

TEST(stats_race_with_thread_start_and_stop)
{
    stats_churn s = {.rt = new_runtime(NULL)};
    pthread_t threads[STATS_CHURNERS];
    for (int i = 0; i < STATS_CHURNERS; i++)
        CHECK_EQ(pthread_create(&threads[i], NULL, stats_churn_main, &s), 0);
    /* The caller is outside the runtime: it never holds a goal back, so every stop's leftovers are
     * freed by the next thread's stop, and the queues stay small. */
    ft_qsbr_stats last = {0};
    uint64_t calls = 0;
    int64_t start = now_ns();
    while (atomic_load(&s.finished) < STATS_CHURNERS && now_ns() - start < WAIT_LIMIT_NS) {
        ft_qsbr_stats st;
        if (calls % 2) {
            ft_qsbr_get_stats(s.rt, &st);
        } else { /* the same walk inside the caller's own stop */
            ft_stop_the_world(s.rt);
            ft_qsbr_get_stats(s.rt, &st);
            ft_start_the_world(s.rt);
        }
        CHECK_EQ(st.wr_seq % 2, 1);
        CHECK((int64_t)(st.wr_seq - last.wr_seq) >= 0);
        CHECK(st.freed_items >= last.freed_items);
        last = st;
        calls++;
    }
    for (int i = 0; i < STATS_CHURNERS; i++)
        join_thread(threads[i]);
    CHECK(calls > 0);
    ft_qsbr_stats st;
    ft_qsbr_get_stats(s.rt, &st);
    CHECK_EQ(st.freed_items + st.pending_items, (uint64_t)STATS_CHURNERS * STATS_CHURN_ROUNDS * 3);
    CHECK_EQ(ft_runtime_free(s.rt), FT_OK);
}

/* ---- fork ---------------------------------------------------------------------------------------- */

/* The child's checks; returns the exit status (0: all passed). */
static int fork_child_checks(ft_runtime *rt, ft_thread *a)
{
    alarm(20); /* a stop that waits for the vanished thread would hang: die instead */
    ft_runtime_after_fork_child(rt, a);
    uint64_t goal = ft_qsbr_advance(rt);
    if (ft_qsbr_poll(a, goal))
        return 2; /* a has not passed a quiescent point since the advance */
    ft_qsbr_quiescent(a);
    if (!ft_qsbr_poll(a, goal))
        return 3; /* the parent's other thread still holds goals back */
    ft_stop_the_world(rt);
    ft_start_the_world(rt);
    ft_runtime_stats stats;
    ft_runtime_get_stats(rt, &stats);
    if (stats.threads != 1)
        return 4;
    uint64_t goal2 = ft_qsbr_advance(rt);
    ft_safepoint(a);
    if (!ft_qsbr_poll(a, goal2))
        return 5;
    ft_thread_stop(a);
    if (ft_runtime_free(rt) != FT_OK)
        return 6;
    return 0;
}

TEST(fork_child_resets_other_threads)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded b;
    commanded_start(a, &b, rt);
    commanded_do(a, &b, cmd_hold, NULL); /* attached and not quiescent at the fork */
    uint64_t before = ft_qsbr_advance(rt);
    ft_qsbr_quiescent(a);
    CHECK(!ft_qsbr_poll(a, before));

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(fork_child_checks(rt, a));
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status))
        fprintf(stderr, "fork child: killed by signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);

    /* The parent is unaffected: b still holds the goal back. */
    CHECK(!reached_without_quiescing(a, before));
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    CHECK(ft_qsbr_poll(a, before));
    commanded_do(a, &b, cmd_resume, NULL);
    commanded_finish(a, &b);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

int main(void)
{
    RUN(sequences_are_odd_and_advance_by_two);
    RUN(goal_waits_for_every_attached_thread);
    RUN(next_goal_needs_an_advance);
    RUN(detached_thread_never_blocks_a_goal);
    RUN(stopped_thread_never_blocks_a_goal);
    RUN(slots_grow_while_threads_run);
    RUN(slot_growth_failure_fails_the_start_only);
    RUN(stats_race_with_thread_start_and_stop);
    RUN(fork_child_resets_other_threads);
    return harness_done();
}
