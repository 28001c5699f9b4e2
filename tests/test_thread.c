/* tests/test_thread.c: runtimes and thread states.
 *
 * Checks the life cycle of runtimes and of the thread states in them: creation with and without a
 * config, attach/detach as seen through ft_thread_current(), small indices handed out smallest-first
 * and reused, the one-state-per-OS-thread rule (per runtime, so two runtimes may share an OS thread),
 * FT_EBUSY from freeing a runtime whose threads are still started, the thread count in the stats,
 * and the fatal misuse of stopping a thread state from the wrong OS thread or with a critical section
 * still open. Other OS threads are driven step by step as "puppets" through semaphores, so every
 * step happens at a known point without any sleeping. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <semaphore.h>

#include "ftrt.h"
#include "test_util.h"

/* ---- puppet threads: an OS thread that starts and stops a thread state when told to -------------- */

typedef enum puppet_command {
    PUPPET_START,
    PUPPET_STOP,
    PUPPET_EXIT,
} puppet_command;

typedef struct puppet {
    pthread_t os_thread;
    sem_t go;    /* posted by the test thread after writing command */
    sem_t done;  /* posted by the puppet after carrying it out */
    puppet_command command;
    ft_runtime *rt;
    ft_thread *t;              /* the puppet's thread state, or NULL */
    ft_status start_error;     /* ft_last_error() after a failed start */
    ft_thread *seen_current;   /* ft_thread_current() after the last command */
} puppet;

static void semaphore_wait(sem_t *s)
{
    while (sem_wait(s) != 0 && errno == EINTR) {
    }
}

static void *puppet_main(void *arg)
{
    puppet *p = arg;
    for (;;) {
        semaphore_wait(&p->go);
        switch (p->command) {
        case PUPPET_START:
            p->t = ft_thread_start(p->rt);
            p->start_error = p->t ? FT_OK : ft_last_error();
            CHECK_THREAD(p->t == NULL || ft_thread_index(p->t) < 64); /* small */
            break;
        case PUPPET_STOP:
            ft_thread_stop(p->t);
            p->t = NULL;
            break;
        case PUPPET_EXIT:
            sem_post(&p->done);
            return NULL;
        }
        p->seen_current = ft_thread_current();
        sem_post(&p->done);
    }
}

static void puppet_launch(puppet *p, ft_runtime *rt)
{
    memset(p, 0, sizeof *p);
    p->rt = rt;
    sem_init(&p->go, 0, 0);
    sem_init(&p->done, 0, 0);
    pthread_create(&p->os_thread, NULL, puppet_main, p);
}

/* Carry out one command on the puppet's OS thread and wait until it is done. */
static void puppet_do(puppet *p, puppet_command command)
{
    p->command = command;
    sem_post(&p->go);
    semaphore_wait(&p->done);
}

static void puppet_finish(puppet *p)
{
    puppet_do(p, PUPPET_EXIT);
    pthread_join(p->os_thread, NULL);
    sem_destroy(&p->go);
    sem_destroy(&p->done);
}

/* ---- runtimes ------------------------------------------------------------------------------------ */

TEST(runtime_new_with_defaults)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    CHECK(rt != NULL);
    ft_runtime_stats stats;
    memset(&stats, 0xff, sizeof stats);
    ft_runtime_get_stats(rt, &stats);
    CHECK_EQ(stats.threads, 0);
    CHECK_EQ(stats.stw_count, 0);
    CHECK_EQ(stats.stw_total_ns, 0);
    CHECK_EQ(stats.stw_max_ns, 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(runtime_new_with_config)
{
    ft_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    ft_config_init(&cfg);
    CHECK_EQ(cfg.stw_repoll_ns, FT_NS_PER_MS);
    CHECK_EQ(cfg.stw_spin_ns, 20 * FT_NS_PER_US);

    cfg.name = "test-runtime";
    cfg.stw_repoll_ns = 100 * FT_NS_PER_US;
    cfg.stw_spin_ns = 5 * FT_NS_PER_US;
    ft_runtime *first = ft_runtime_new(&cfg);
    ft_runtime *second = ft_runtime_new(&cfg);
    CHECK(first != NULL);
    CHECK(second != NULL);
    CHECK(first != second);

    /* The configured runtime works: a thread starts in it and can stop its world. */
    ft_thread *t = ft_thread_start(first);
    CHECK(t != NULL);
    CHECK(ft_thread_runtime(t) == first);
    ft_stop_the_world(first);
    CHECK(ft_world_is_stopped(first));
    CHECK(!ft_world_is_stopped(second));
    ft_start_the_world(first);
    CHECK(!ft_world_is_stopped(first));
    ft_runtime_stats stats;
    ft_runtime_get_stats(first, &stats);
    CHECK_EQ(stats.stw_count, 1);
    CHECK_EQ(stats.threads, 1);
    ft_thread_stop(t);

    CHECK_EQ(ft_runtime_free(first), FT_OK);
    CHECK_EQ(ft_runtime_free(second), FT_OK);
}

/* ---- thread states ------------------------------------------------------------------------------- */

TEST(thread_start_attach_detach)
{
    ft_runtime *rt = new_runtime(NULL);
    CHECK(ft_thread_current() == NULL);

    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    CHECK(ft_thread_current() == t);
    CHECK(ft_thread_runtime(t) == rt);
    CHECK_EQ(ft_thread_index(t), 0);
    CHECK_EQ(thread_count(rt), 1);
    ft_safepoint(t);

    ft_detach(t);
    CHECK(ft_thread_current() == NULL);
    CHECK_EQ(thread_count(rt), 1); /* detached is still started */
    ft_attach(t);
    CHECK(ft_thread_current() == t);

    for (int i = 0; i < 100; i++) {
        ft_detach(t);
        ft_attach(t);
        ft_safepoint(t);
    }
    CHECK(ft_thread_current() == t);

    ft_thread_stop(t);
    CHECK(ft_thread_current() == NULL);
    CHECK_EQ(thread_count(rt), 0);

    /* The OS thread can take part again with a fresh state. */
    ft_thread *again = ft_thread_start(rt);
    CHECK(again != NULL);
    CHECK(ft_thread_current() == again);
    CHECK_EQ(ft_thread_index(again), 0);
    ft_thread_stop(again);
    CHECK(ft_thread_current() == NULL);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(thread_stop_while_detached)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    ft_detach(t);
    ft_thread_stop(t);
    CHECK(ft_thread_current() == NULL);
    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* A thread state belongs to its OS thread: another OS thread does not see it as current. */
TEST(thread_current_is_per_os_thread)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *mine = ft_thread_start(rt);
    CHECK(mine != NULL);

    puppet p;
    puppet_launch(&p, rt);
    puppet_do(&p, PUPPET_START);
    CHECK(p.t != NULL);
    CHECK(p.t != mine);
    CHECK(p.seen_current == p.t);
    CHECK(ft_thread_current() == mine);
    CHECK(ft_thread_runtime(p.t) == rt);
    puppet_do(&p, PUPPET_STOP);
    CHECK(p.seen_current == NULL);
    CHECK(ft_thread_current() == mine);
    puppet_finish(&p);

    ft_thread_stop(mine);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(thread_indices_small_distinct_and_reused_smallest_first)
{
    enum { PUPPETS = 3 };
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *mine = ft_thread_start(rt);
    CHECK(mine != NULL);
    CHECK_EQ(ft_thread_index(mine), 0);

    puppet p[PUPPETS];
    for (int i = 0; i < PUPPETS; i++) {
        puppet_launch(&p[i], rt);
        puppet_do(&p[i], PUPPET_START);
        CHECK(p[i].t != NULL);
        CHECK_EQ(thread_count(rt), i + 2);
    }
    /* Started one after another into a fresh runtime: exactly 1, 2, 3 after the main thread's 0. */
    for (int i = 0; i < PUPPETS; i++)
        CHECK_EQ(ft_thread_index(p[i].t), i + 1);

    /* Index 1 freed: the next start gets it back. */
    puppet_do(&p[0], PUPPET_STOP);
    CHECK_EQ(thread_count(rt), PUPPETS);
    puppet_do(&p[0], PUPPET_START);
    CHECK(p[0].t != NULL);
    CHECK_EQ(ft_thread_index(p[0].t), 1);

    /* 3 then 2 freed: the smallest, 2, comes back first, then 3. */
    puppet_do(&p[2], PUPPET_STOP);
    puppet_do(&p[1], PUPPET_STOP);
    CHECK_EQ(thread_count(rt), 2);
    puppet_do(&p[2], PUPPET_START);
    CHECK(p[2].t != NULL);
    CHECK_EQ(ft_thread_index(p[2].t), 2);
    puppet_do(&p[1], PUPPET_START);
    CHECK(p[1].t != NULL);
    CHECK_EQ(ft_thread_index(p[1].t), 3);

    /* Index 0 freed by the main thread goes to the next start, even while higher ones are in use. */
    ft_thread_stop(mine);
    puppet_do(&p[0], PUPPET_STOP);
    puppet_do(&p[0], PUPPET_START);
    CHECK_EQ(ft_thread_index(p[0].t), 0);
    mine = ft_thread_start(rt);
    CHECK(mine != NULL);
    CHECK_EQ(ft_thread_index(mine), 1);

    uint32_t seen[PUPPETS + 1];
    seen[0] = ft_thread_index(mine);
    for (int i = 0; i < PUPPETS; i++)
        seen[i + 1] = ft_thread_index(p[i].t);
    for (int i = 0; i <= PUPPETS; i++) {
        CHECK(seen[i] <= PUPPETS);
        for (int j = 0; j < i; j++)
            CHECK(seen[i] != seen[j]);
    }

    for (int i = 0; i < PUPPETS; i++) {
        puppet_do(&p[i], PUPPET_STOP);
        puppet_finish(&p[i]);
    }
    ft_thread_stop(mine);
    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(second_start_in_same_runtime_is_refused)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);

    ft_thread *twin = ft_thread_start(rt);
    CHECK(twin == NULL);
    CHECK_EQ(ft_last_error(), FT_EEXIST);
    CHECK_EQ(thread_count(rt), 1);

    /* The first state is untouched and still works. */
    CHECK(ft_thread_current() == t);
    ft_safepoint(t);
    ft_detach(t);
    CHECK(ft_thread_current() == NULL);

    /* A detached state still counts as this OS thread's state in rt. */
    twin = ft_thread_start(rt);
    CHECK(twin == NULL);
    CHECK_EQ(ft_last_error(), FT_EEXIST);
    CHECK(ft_thread_current() == NULL);
    ft_attach(t);
    CHECK(ft_thread_current() == t);

    ft_thread_stop(t);
    /* Once stopped, the OS thread may start a state again. */
    t = ft_thread_start(rt);
    CHECK(t != NULL);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* The same OS thread may hold a state in each of two runtimes; it attaches one at a time. */
TEST(one_os_thread_in_two_runtimes)
{
    ft_runtime *rt1 = ft_runtime_new(NULL);
    ft_runtime *rt2 = ft_runtime_new(NULL);
    CHECK(rt1 != NULL);
    CHECK(rt2 != NULL);

    ft_thread *t1 = ft_thread_start(rt1);
    CHECK(t1 != NULL);
    ft_detach(t1);
    ft_thread *t2 = ft_thread_start(rt2);
    CHECK(t2 != NULL);
    CHECK(t2 != t1);
    CHECK(ft_thread_current() == t2);
    CHECK(ft_thread_runtime(t2) == rt2);
    CHECK_EQ(ft_thread_index(t2), 0); /* indices are per runtime */
    CHECK_EQ(thread_count(rt1), 1);
    CHECK_EQ(thread_count(rt2), 1);

    /* Still one state per runtime. */
    CHECK(ft_thread_start(rt2) == NULL);
    CHECK_EQ(ft_last_error(), FT_EEXIST);

    ft_detach(t2);
    ft_attach(t1);
    CHECK(ft_thread_current() == t1);
    ft_safepoint(t1);
    ft_detach(t1);
    ft_attach(t2);
    CHECK(ft_thread_current() == t2);

    ft_thread_stop(t2);
    CHECK(ft_thread_current() == NULL);
    CHECK_EQ(thread_count(rt2), 0);
    ft_attach(t1);
    CHECK(ft_thread_current() == t1);
    ft_thread_stop(t1);
    CHECK_EQ(ft_runtime_free(rt2), FT_OK);
    CHECK_EQ(ft_runtime_free(rt1), FT_OK);
}

TEST(runtime_free_while_threads_started_is_busy)
{
    ft_runtime *rt = new_runtime(NULL);

    /* Started on this OS thread, attached. */
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    CHECK_EQ(ft_runtime_free(rt), FT_EBUSY);
    /* Nothing was freed (ASan would see a use after free): the runtime and the state still work. */
    CHECK_EQ(thread_count(rt), 1);
    CHECK(ft_thread_runtime(t) == rt);
    ft_safepoint(t);
    ft_stop_the_world(rt);
    ft_start_the_world(rt);

    /* Detached still counts as started. */
    ft_detach(t);
    CHECK_EQ(ft_runtime_free(rt), FT_EBUSY);
    ft_attach(t);
    CHECK(ft_thread_current() == t);

    /* Started on another OS thread only. */
    puppet p;
    puppet_launch(&p, rt);
    puppet_do(&p, PUPPET_START);
    CHECK(p.t != NULL);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_EBUSY);
    CHECK_EQ(thread_count(rt), 1);
    puppet_do(&p, PUPPET_STOP);
    puppet_do(&p, PUPPET_START); /* a runtime that refused to be freed still takes new threads */
    CHECK(p.t != NULL);
    CHECK_EQ(ft_runtime_free(rt), FT_EBUSY);
    puppet_do(&p, PUPPET_STOP);
    puppet_finish(&p);

    CHECK_EQ(thread_count(rt), 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(stats_count_started_threads)
{
    enum { PUPPETS = 4 };
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_runtime *other = ft_runtime_new(NULL);
    CHECK(rt != NULL);
    CHECK(other != NULL);
    puppet p[PUPPETS];
    for (int i = 0; i < PUPPETS; i++) {
        puppet_launch(&p[i], rt);
        puppet_do(&p[i], PUPPET_START);
        CHECK_EQ(thread_count(rt), i + 1);
    }
    CHECK_EQ(thread_count(other), 0); /* runtimes never see each other */
    for (int i = 0; i < PUPPETS; i++) {
        puppet_do(&p[i], PUPPET_STOP);
        CHECK_EQ(thread_count(rt), PUPPETS - 1 - i);
        puppet_finish(&p[i]);
    }
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
    CHECK_EQ(ft_runtime_free(other), FT_OK);
}

/* ---- fatal misuse -------------------------------------------------------------------------------- */

/* A stopped thread's state stays with the runtime (QSBR pollers read its slot without a lock) and is
 * reused, reset, by the next thread given its index; a state in use is never handed out twice. */
TEST(stopped_state_is_reused_for_its_index)
{
    ft_runtime *rt = new_runtime(NULL);
    puppet p;
    puppet_launch(&p, rt);
    puppet_do(&p, PUPPET_START);
    ft_thread *first = p.t;
    CHECK_EQ(ft_thread_index(first), 0);
    puppet_do(&p, PUPPET_STOP);

    ft_thread *mine = ft_thread_start(rt);
    CHECK(mine == first);
    CHECK_EQ(ft_thread_index(mine), 0);
    CHECK(ft_thread_current() == mine);
    CHECK(ft_thread_runtime(mine) == rt);
    /* Nothing of the previous owner survives: a QSBR goal needs this thread's own report. */
    uint64_t goal = ft_qsbr_advance(rt);
    CHECK(!ft_qsbr_poll(mine, goal));
    ft_safepoint(mine);
    CHECK(ft_qsbr_poll(mine, goal));

    puppet_do(&p, PUPPET_START);
    CHECK(p.t != mine);
    CHECK_EQ(ft_thread_index(p.t), 1);
    puppet_do(&p, PUPPET_STOP);
    puppet_finish(&p);
    ft_thread_stop(mine);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

static void attach_stopped_state(void *arg)
{
    (void)arg;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    ft_thread_stop(t);
    ft_attach(t);
}

TEST(death_use_of_a_stopped_thread_state)
{
    CHECK_DEATH(attach_stopped_state, NULL, "ft_attach", "was stopped");
}

static void stop_someone_elses_thread(void *arg)
{
    ft_thread_stop(arg);
}

TEST(death_thread_stop_from_another_os_thread)
{
    ft_runtime *rt = new_runtime(NULL);
    puppet p;
    puppet_launch(&p, rt);
    puppet_do(&p, PUPPET_START);
    CHECK(p.t != NULL);

    /* The forked child's only thread is not the puppet's OS thread; the address is the same there. */
    char address[32];
    snprintf(address, sizeof address, "%p", (void *)p.t);
    CHECK_DEATH(stop_someone_elses_thread, p.t, "ft_thread_stop", address);

    /* In this process the misuse never happened: the owner stops its state normally. */
    puppet_do(&p, PUPPET_STOP);
    puppet_finish(&p);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

static void stop_with_open_critical_section(void *arg)
{
    (void)arg;
    static ft_mutex m;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &m);
    ft_thread_stop(t);
}

static void stop_with_open_two_mutex_section(void *arg)
{
    (void)arg;
    static ft_mutex a, b;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    ft_critical_section2 cs;
    ft_critical_section2_begin(t, &cs, &a, &b);
    ft_thread_stop(t);
}

static void stop_detached_with_open_critical_section(void *arg)
{
    (void)arg;
    static ft_mutex m;
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &m);
    ft_detach(t); /* suspended, but still open */
    ft_thread_stop(t);
}

TEST(death_thread_stop_with_open_critical_section)
{
    CHECK_DEATH(stop_with_open_critical_section, NULL, "ft_thread_stop", "critical section");
    CHECK_DEATH(stop_with_open_two_mutex_section, NULL, "ft_thread_stop", "critical section");
    CHECK_DEATH(stop_detached_with_open_critical_section, NULL, "ft_thread_stop", "critical section");
}

int main(void)
{
    RUN(runtime_new_with_defaults);
    RUN(runtime_new_with_config);
    RUN(thread_start_attach_detach);
    RUN(thread_stop_while_detached);
    RUN(thread_current_is_per_os_thread);
    RUN(thread_indices_small_distinct_and_reused_smallest_first);
    RUN(second_start_in_same_runtime_is_refused);
    RUN(one_os_thread_in_two_runtimes);
    RUN(runtime_free_while_threads_started_is_busy);
    RUN(stats_count_started_threads);
    RUN(stopped_state_is_reused_for_its_index);
    RUN(death_thread_stop_from_another_os_thread);
    RUN(death_use_of_a_stopped_thread_state);
    RUN(death_thread_stop_with_open_critical_section);
    return harness_done();
}
