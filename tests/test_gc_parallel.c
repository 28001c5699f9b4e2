/* test_gc_parallel.c: parallel marking gives exactly the serial result.
 *
 * Each scenario builds a random graph from a seed: nodes of three owners (the main thread and two
 * commanded workers, each allocating its share in turn, so that ids do not depend on timing), with
 * cycles and shared subgraphs, finalizers, deferred and per-thread-counted nodes, a frozen part, a
 * registered root and some held references. It then runs the same collections (young, then full,
 * then full again after the holders let go) and records what each returned, what it freed and
 * finalized, the stats and the counts. The scenario runs with ft_config.gc_workers 1, 2 and 4, every
 * collection made to use them all (gc_objects_per_worker = 1), and the records must be identical.
 * Under ThreadSanitizer (make tsan) the workers' marking races are checked too. Then: marking whose
 * stacks cannot grow (an allocation failure injected) still finds the same garbage; and the pool
 * runs each helper in exactly the phases of the sessions it takes part in (a helper left out of
 * one session once took that session's last phase for a new one when the next woke it). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftrt.h"
#define TEST_GC_NODE
#define WAIT_LIMIT_NS (60 * INT64_C(1000000000)) /* TSan and a shared two-core machine */
#include "test_util.h"

#include "internal/internal.h"

#define SEEDS (UNDER_TSAN ? 4 : 12)
#define NODES 2400
#define OWNERS 3
#define MAX_EDGES 3

/* A finalizer that only counts (gc_fin_type's also writes the single-threaded event log, and here
 * finalizers run on the owners too, when a merge frees a node). */
static void count_finalize(ft_object *self)
{
    gc_node *n = (gc_node *)self;
    atomic_fetch_add(&gc_node_finalized[n->id], 1);
}

static const ft_type fin_type = {GC_NODE_TYPE_INIT("fin_node"), .finalize = count_finalize};

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* What one run of a scenario observed. */
typedef struct record {
    intptr_t found[3];
    uint8_t freed[3][NODES];
    uint8_t finalized[3][NODES];
    ft_gc_generation_stats stats[3][FT_GC_GENERATIONS];
    long count[3][FT_GC_GENERATIONS];
} record;

/* The scenario's graph, as the builders see it. */
typedef struct scenario {
    uint64_t seed;
    gc_node *nodes[NODES];
    const ft_type *type[NODES];
    ft_object *held[NODES];    /* references the test keeps (plain) */
    ft_object *rooted[NODES];  /* reached from the registered root */
    ft_object *per_thread[NODES]; /* per-thread references of the main thread */
    size_t n_held, n_rooted, n_per_thread;
} scenario;

static void visit_rooted(ft_visit_fn visit, void *visit_arg, void *arg)
{
    scenario *s = arg;
    for (size_t i = 0; i < s->n_rooted; i++)
        visit(s->rooted[i], visit_arg);
}

typedef struct alloc_job {
    scenario *s;
    int first, end;
} alloc_job;

static void allocate_range(ft_thread *t, scenario *s, int first, int end)
{
    for (int i = first; i < end; i++)
        s->nodes[i] = gc_node_new(t, s->type[i]);
}

/* Let the owners run what the main thread's drops queued for them (merges, and the deallocs those
 * cascade into), so that nothing is freed behind a collection's back and every run sees the same. */
static void settle_owners(ft_thread *self, commanded *owner)
{
    int before;
    do {
        before = atomic_load(&gc_node_deallocs);
        ft_safepoint(self);
        for (int k = 0; k < OWNERS - 1; k++)
            commanded_do(self, &owner[k], cmd_safepoint, NULL);
    } while (atomic_load(&gc_node_deallocs) != before);
}

static void cmd_allocate(commanded *w)
{
    alloc_job *job = w->arg;
    allocate_range(w->t, job->s, job->first, job->end);
}

/* Build, collect three times, record, free everything. */
static void run_scenario(uint64_t seed, int workers, bool hub, bool starve, record *out)
{
    memset(out, 0, sizeof *out);
    gc_node_reset();
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.gc_workers = workers;
    cfg.gc_objects_per_worker = 1;
    fixture f = {new_runtime(&cfg), NULL};
    f.t = ft_thread_start(f.rt);
    CHECK(f.t != NULL);
    ft_gc_disable(f.rt);
    scenario *s = calloc(1, sizeof *s);
    CHECK(s != NULL);
    s->seed = seed;
    uint64_t r = seed * 0x9E3779B97F4A7C15u + 1;

    for (int i = 0; i < NODES; i++) {
        unsigned kind = (unsigned)(next_random(&r) % 10);
        s->type[i] = kind == 0   ? &fin_type
                     : kind == 1 ? &gc_deferred_type
                     : kind == 2 ? &gc_uid_type
                                 : &gc_node_type;
    }
    /* Three owners, one after the other: the ids are the indexes. */
    commanded owner[OWNERS - 1];
    for (int k = 0; k < OWNERS - 1; k++)
        commanded_start(f.t, &owner[k], f.rt);
    int share = NODES / OWNERS;
    allocate_range(f.t, s, 0, share);
    ft_gc_freeze(f.rt); /* the main thread's share: frozen, and its references count as external */
    for (int k = 0; k < OWNERS - 1; k++) {
        alloc_job job = {s, share * (k + 1), k == OWNERS - 2 ? NODES : share * (k + 2)};
        commanded_do(f.t, &owner[k], cmd_allocate, &job);
    }
    for (int i = 0; i < NODES; i++)
        CHECK(s->nodes[i] && s->nodes[i]->id == i);

    /* Edges: each node refers to up to MAX_EDGES others, mostly in its cluster of 16 (cycles),
     * sometimes anywhere (shared subgraphs, long cycles, links across owners). */
    for (int i = 0; i < NODES; i++) {
        int edges = (int)(next_random(&r) % (MAX_EDGES + 1));
        for (int e = 0; e < edges; e++) {
            uint64_t x = next_random(&r);
            int j = x % 16 ? (int)(i / 16 * 16 + x / 16 % 16) : (int)(x / 16 % NODES);
            gc_node_append(s->nodes[i], &s->nodes[j]->ob);
        }
    }
    /* With hub: a held hub refers to every node of the other owners but the last 200, more than a
     * deque's first array (1024) holds, and the first 200 of those each refer to one of the last
     * 200. The hub's traverse visits its items last first, so when the deque cannot grow, those
     * first 200 are the ones marked but not queued, and only the rescan reaches the last 200. */
    if (hub) {
        for (int j = share; j < NODES - 200; j++)
            gc_node_append(s->nodes[share], &s->nodes[j]->ob);
        for (int j = share + 1; j <= share + 200; j++)
            gc_node_append(s->nodes[j], &s->nodes[NODES - 200 + (j - share - 1)]->ob);
        ft_incref(&s->nodes[share]->ob);
        s->held[s->n_held++] = &s->nodes[share]->ob;
    }
    /* Who keeps what: some nodes held, some rooted, some held by per-thread counts. */
    for (int i = 0; i < NODES; i++) {
        unsigned pick = (unsigned)(next_random(&r) % 100);
        ft_object *o = &s->nodes[i]->ob;
        if (pick < 1) {
            ft_incref(o);
            s->held[s->n_held++] = o;
        } else if (pick < 2) {
            ft_incref(o);
            s->rooted[s->n_rooted++] = o;
        } else if (pick < 10 && s->type[i] == &gc_uid_type &&
                   ft_uniqueid_enable(f.t, o) == FT_OK) {
            ft_uniqueid_incref(f.t, o);
            s->per_thread[s->n_per_thread++] = o;
        }
    }
    CHECK_EQ(ft_gc_add_root(f.rt, visit_rooted, s), FT_OK);
    /* Drop the allocations' references (a deferred node's goes with its deferral: only a
     * collection frees it). */
    for (int i = 0; i < NODES; i++)
        ft_decref(&s->nodes[i]->ob);

    for (int round = 0; round < 3; round++) {
        if (round == 2) {
            /* Let go of the held and per-thread references, thaw the frozen part. */
            for (size_t i = 0; i < s->n_held; i++)
                ft_decref(s->held[i]);
            for (size_t i = 0; i < s->n_per_thread; i++)
                ft_uniqueid_decref(f.t, s->per_thread[i]);
            s->n_held = s->n_per_thread = 0;
            ft_gc_unfreeze(f.rt);
        }
        settle_owners(f.t, owner);
        /* The owners detach meanwhile: they run nothing, so the injected failure (if any) is the
         * collection's own. */
        for (int k = 0; k < OWNERS - 1; k++)
            commanded_do(f.t, &owner[k], cmd_detach, NULL);
        if (starve)
            ft_debug_fail_allocation(f.rt, 0);
        out->found[round] = ft_gc_collect(f.rt, round == 0 ? 0 : 2);
        ft_debug_fail_allocation(f.rt, -1);
        for (int k = 0; k < OWNERS - 1; k++) {
            commanded_do(f.t, &owner[k], cmd_attach, NULL);
            commanded_do(f.t, &owner[k], cmd_resume, NULL);
        }
        settle_owners(f.t, owner);
        for (int i = 0; i < NODES; i++) {
            out->freed[round][i] = atomic_load(&gc_node_freed[i]);
            out->finalized[round][i] = atomic_load(&gc_node_finalized[i]);
        }
        ft_gc_get_stats(f.rt, out->stats[round]);
        for (int g = 0; g < FT_GC_GENERATIONS; g++) {
            out->stats[round][g].pause_ns = out->stats[round][g].max_pause_ns = 0; /* time varies */
        }
        ft_gc_get_count(f.rt, out->count[round]);
    }

    CHECK_EQ(ft_gc_remove_root(f.rt, visit_rooted, s), FT_OK);
    for (size_t i = 0; i < s->n_rooted; i++)
        ft_decref(s->rooted[i]);
    /* Until nothing is left: an object whose count a collection's settling brought to zero is
     * deallocated after that collection's stop (gc.c's top comment), so what only it held waits
     * for the next collection. */
    for (int pass = 0; pass < 8 && gc_node_live() > 0; pass++) {
        settle_owners(f.t, owner);
        ft_gc_collect(f.rt, 2);
    }
    for (int k = 0; k < OWNERS - 1; k++)
        commanded_finish(f.t, &owner[k]);
    free(s);
    gc_fixture_teardown(f);
}

/* The first difference between two records, for the message. */
static void check_same(const record *serial, const record *parallel, uint64_t seed, int workers)
{
    for (int round = 0; round < 3; round++) {
        bool same = serial->found[round] == parallel->found[round] &&
                    memcmp(serial->freed[round], parallel->freed[round], NODES) == 0 &&
                    memcmp(serial->finalized[round], parallel->finalized[round], NODES) == 0 &&
                    memcmp(serial->stats[round], parallel->stats[round],
                           sizeof serial->stats[round]) == 0 &&
                    memcmp(serial->count[round], parallel->count[round],
                           sizeof serial->count[round]) == 0;
        if (!same)
            fprintf(stderr,
                    "seed %llu, %d workers, collection %d: found %ld (serial %ld), stats or "
                    "freed nodes differ\n",
                    (unsigned long long)seed, workers, round, (long)parallel->found[round],
                    (long)serial->found[round]);
        CHECK(same);
    }
}

TEST(parallel_marking_gives_the_serial_result)
{
    static record serial, parallel;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        run_scenario(seed, 1, false, false, &serial);
        /* The scenario is not trivial: each collection found something, and something survives
         * until the holders let go. */
        CHECK(serial.found[0] > 0 && serial.found[1] > 0 && serial.found[2] > 0);
        for (int workers = 2; workers <= 4; workers *= 2) {
            run_scenario(seed, workers, false, false, &parallel);
            check_same(&serial, &parallel, seed, workers);
        }
    }
}

/* Marking runs out of deque (its growth fails): what it marked but could not queue is followed by a
 * rescan, and the result is the same as with room. */
TEST(marking_without_room_to_queue_finds_the_same_garbage)
{
    static record serial, starved;
    for (uint64_t seed = 1; seed <= 2; seed++) {
        run_scenario(seed, 1, true, false, &serial);
        for (int workers = 1; workers <= 2; workers++) {
            run_scenario(seed, workers, true, true, &starved);
            check_same(&serial, &starved, seed, workers);
        }
    }
}

/* The pool itself, sessions of 1 to 4 workers in a random order, each with a few phases: a helper
 * runs exactly the phases of the sessions it takes part in, each once, never a phase of a session
 * it was left out of. The collector yields between opening a session and publishing its first phase,
 * the window in which a helper just woken could take the last published phase for a new one. */
typedef struct pool_phase {
    _Atomic bool running;
    _Atomic int ran[FT_GC_MAX_WORKERS];
    _Atomic int stale; /* runs while the phase was not running */
} pool_phase;

static void pool_phase_job(void *arg, int worker)
{
    pool_phase *p = arg;
    if (!atomic_load(&p->running))
        atomic_fetch_add(&p->stale, 1);
    atomic_fetch_add(&p->ran[worker], 1);
}

#define POOL_SESSIONS 300
#define POOL_PHASES 3

static int pool_sessions_child(void)
{
    alarm(60);
    ft_runtime *rt = new_runtime(NULL);
    ft_gc_pool *pool = &rt->gc.pool;
    static pool_phase phases[POOL_SESSIONS][POOL_PHASES];
    static int workers_of[POOL_SESSIONS];
    uint64_t r = 12345;
    for (int s = 0; s < POOL_SESSIONS; s++) {
        workers_of[s] = ft_gc_pool_reserve(pool, 1 + (int)(next_random(&r) % 4));
        ft_gc_pool_open(pool, workers_of[s]);
        for (int i = 0; i < 20; i++)
            sched_yield();
        for (int k = 0; k < POOL_PHASES; k++) {
            pool_phase *p = &phases[s][k];
            atomic_store(&p->running, true);
            ft_gc_pool_run(pool, pool_phase_job, p, 0);
            atomic_store(&p->running, false);
        }
        ft_gc_pool_close(pool);
    }
    for (int s = 0; s < POOL_SESSIONS; s++)
        for (int k = 0; k < POOL_PHASES; k++) {
            if (atomic_load(&phases[s][k].stale))
                return 3;
            for (int w = 0; w < FT_GC_MAX_WORKERS; w++)
                if (atomic_load(&phases[s][k].ran[w]) != (w < workers_of[s]))
                    return 4;
        }
    return ft_runtime_free(rt) == FT_OK ? 0 : 5;
}

TEST(pool_helpers_run_exactly_their_sessions_phases)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(pool_sessions_child());
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fprintf(stderr, "child killed by signal %d (SIGALRM %d: the pool is stuck)\n",
                WTERMSIG(status), SIGALRM);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

int main(void)
{
    RUN(parallel_marking_gives_the_serial_result);
    RUN(marking_without_room_to_queue_finds_the_same_garbage);
    RUN(pool_helpers_run_exactly_their_sessions_phases);
    return harness_done();
}
