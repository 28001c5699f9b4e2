/* tests/test_util.h: helpers that several test files need, written once so they cannot drift apart.
 *
 * Time and waiting: now_ns(); SPIN_UNTIL (the main thread spins with a deadline), AWAIT (the same,
 * polling the safepoint of an attached waiter), WAIT_FOR_MAIN (a helper thread waits for the main
 * thread's signal); let_time_pass() where the passing of time is itself under test. The wait limit
 * is WAIT_LIMIT_NS (WAIT_LIMIT_S in seconds), 10 s unless the test file defines it before including
 * this header.
 *
 * Threads: start_thread() and join_thread() (a timed join that also fails the test if a helper
 * recorded a failure), thread_failures(); join_detached() and barrier_detached(), which wait with the
 * caller detached; thread_identity with thread_is_parked(), which tells from /proc that a thread is
 * really parked, and all_parked(); on_other_thread() and run_on_new_thread(), which run one step on
 * a new OS thread attached to a runtime; new_runtime(), and a runtime with one attached thread
 * (fixture); commanded workers (commanded_start/do/post/wait/finish), attached threads that run one
 * posted command at a time, pass safepoints while idle unless held (cmd_hold/resume) and may run a
 * hook of the test's after each idle safepoint (commanded_start_with).
 *
 * Objects: count_dealloc, a dealloc that counts in counted_deallocs. For the collector and weak
 * references: gc_node, a container host type (a growable array of strong references, a weak
 * reference list head, an id whose deallocs are counted one by one), its plain type gc_node_type,
 * and gc_node_new/append/pop/live (with TEST_GC_NODE defined).
 *
 * Statistics: stats_of() (the heap's) and thread_count() (the runtime's). */
#ifndef FTRT_TEST_UTIL_H
#define FTRT_TEST_UTIL_H

#ifndef _GNU_SOURCE
#error "test files define _GNU_SOURCE before any include (gettid, pthread_timedjoin_np)"
#endif

#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>

#include "ftrt.h"
#include "harness.h"

/* ---- time and waiting ---------------------------------------------------------------------------- */

/* How long any wait for another thread may take before the test is declared failed. Generous,
 * because the machine is shared and TSan slows everything down. */
#ifndef WAIT_LIMIT_NS
#define WAIT_LIMIT_NS (10 * INT64_C(1000000000))
#endif
#define WAIT_LIMIT_S ((time_t)(WAIT_LIMIT_NS / INT64_C(1000000000)))

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * INT64_C(1000000000) + ts.tv_nsec;
}

/* The main thread spins, yielding the CPU, until cond holds or the wait limit passes, and checks
 * cond afterwards. */
#define SPIN_UNTIL(cond)                                                                           \
    for (int64_t spin_deadline_ = now_ns() + WAIT_LIMIT_NS; !(cond) && now_ns() < spin_deadline_;) \
    sched_yield()

/* One step of a wait: poll the safepoint if the waiter is attached, let others run, and say whether
 * the time limit still allows waiting. */
static inline bool still_waiting(ft_thread *t, int64_t start)
{
    if (t)
        ft_safepoint(t);
    sched_yield();
    return now_ns() - start < WAIT_LIMIT_NS;
}

/* Spin until cond holds or the limit passes (t: the waiter's attached state or NULL, so that it
 * never holds up a stop-the-world); check cond afterwards. */
#define AWAIT(t, cond)                                                                             \
    for (int64_t await_start_ = now_ns(); !(cond) && still_waiting((t), await_start_);) {          \
    }

/* A helper thread waits for the main thread's signal without a limit: the main thread gives it
 * unless it has failed its test, and then the process ends without waiting for the helper. */
#define WAIT_FOR_MAIN(cond)                                                                        \
    while (!(cond))                                                                                \
    sched_yield()

/* Yield for at least ns nanoseconds of wall time. Not synchronisation: for tests where the passing
 * of time is itself what is tested (a fairness rule, "nothing happens meanwhile"). */
static inline void let_time_pass(int64_t ns)
{
    int64_t start = now_ns();
    while (now_ns() - start < ns)
        sched_yield();
}

/* ---- helper threads ------------------------------------------------------------------------------ */

static inline int thread_failures(void)
{
    return atomic_load(&harness_thread_failures);
}

/* Fail the current test if a helper thread recorded a failure; the count starts again at zero so
 * that one failure is not blamed on every later test. */
static inline void check_helpers_ok(void)
{
    CHECK_EQ(atomic_exchange(&harness_thread_failures, 0), 0);
}

static inline void start_thread(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    CHECK_EQ(pthread_create(thread, NULL, fn, arg), 0);
}

/* Join, failing the test rather than hanging if the thread does not end within the wait limit, or
 * if it recorded a failure. */
static inline void join_thread(pthread_t thread)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_LIMIT_S;
    CHECK_EQ(pthread_timedjoin_np(thread, NULL, &deadline), 0);
    check_helpers_ok();
}

/* Join n threads with self (the caller's attached state, or NULL) detached meanwhile, so that it
 * never holds up a stop-the-world they make; then fail the test if one of them recorded a failure. */
static inline void join_detached(ft_thread *self, const pthread_t *threads, int n)
{
    if (self)
        ft_detach(self);
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    if (self)
        ft_attach(self);
    CHECK_THREADS_OK();
}

/* Wait at barrier b detached (t: the caller's attached state, or NULL), so that the wait never holds
 * up a stop-the-world. */
static inline void barrier_detached(ft_thread *t, pthread_barrier_t *b)
{
    if (t)
        ft_detach(t);
    pthread_barrier_wait(b);
    if (t)
        ft_attach(t);
}

/* A thread whose parking the main thread must observe publishes its kernel id and the address of
 * the stack frame it will block from (its thread function's), before it blocks. */
typedef struct thread_identity {
    _Atomic pid_t tid;
    void *_Atomic frame;
} thread_identity;

static inline void publish_identity(thread_identity *id, void *frame)
{
    atomic_store(&id->frame, frame);
    atomic_store(&id->tid, gettid());
}

static inline void forget_identity(thread_identity *id)
{
    atomic_store(&id->tid, 0);
}

/* Whether the thread is parked: blocked in the futex system call on a word in its own stack, less
 * than 1 MiB below its published frame, where the parking lot keeps a waiter's record (in the park
 * call's frame: the one thing these tests assume about the implementation). Being asleep is not
 * enough: a thread also sleeps for a moment on locks inside the C library or a sanitizer's runtime,
 * and a test that took that for parking would race with the thread it thinks is parked. */
static inline bool thread_is_parked(thread_identity *id)
{
    pid_t tid = atomic_load(&id->tid);
    if (tid == 0)
        return false;
    char path[64], text[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    long number;
    unsigned long word;
    if (sscanf(text, "%ld %lx", &number, &word) != 2 || number != SYS_futex)
        return false;
    uintptr_t frame = (uintptr_t)atomic_load(&id->frame);
    return word < frame && frame - word < ((uintptr_t)1 << 20);
}

static inline bool all_parked(thread_identity *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (!thread_is_parked(&ids[i]))
            return false;
    return true;
}

/* ---- runtimes and thread states ------------------------------------------------------------------ */

/* A runtime (cfg: NULL for the defaults); the test fails if there is none. */
static inline ft_runtime *new_runtime(const ft_config *cfg)
{
    ft_runtime *rt = ft_runtime_new(cfg);
    CHECK(rt != NULL);
    return rt;
}

/* A runtime with the calling thread attached to it. */
typedef struct fixture {
    ft_runtime *rt;
    ft_thread *t;
} fixture;

static inline fixture fixture_setup(void)
{
    fixture f = {new_runtime(NULL), NULL};
    f.t = ft_thread_start(f.rt);
    CHECK(f.t != NULL);
    return f;
}

/* Stop the thread state and free the runtime, which must have no other thread left. */
static inline void fixture_teardown(fixture f)
{
    ft_thread_stop(f.t);
    CHECK_EQ(ft_runtime_free(f.rt), FT_OK);
}

typedef void (*step_fn)(ft_thread *t, void *arg);

typedef struct step_helper {
    ft_runtime *rt;
    step_fn fn;
    void *arg;
} step_helper;

static inline void *step_helper_main(void *p)
{
    step_helper *h = p;
    ft_thread *t = ft_thread_start(h->rt);
    CHECK_THREAD(t != NULL);
    if (t) {
        h->fn(t, h->arg);
        ft_thread_stop(t);
    }
    return NULL;
}

/* Run fn(t, arg) once on a new OS thread attached to rt, which stops its thread state afterwards.
 * self (may be NULL) is the caller's thread state, detached while it waits so that it never delays
 * a stop-the-world the helper may cause. The join orders the helper's step before what follows. */
static inline void run_on_new_thread(ft_runtime *rt, ft_thread *self, step_fn fn, void *arg)
{
    step_helper h = {rt, fn, arg};
    pthread_t th;
    if (self)
        ft_detach(self);
    int rc = pthread_create(&th, NULL, step_helper_main, &h);
    if (rc == 0)
        pthread_join(th, NULL);
    if (self)
        ft_attach(self);
    CHECK_EQ(rc, 0);
    CHECK_THREADS_OK();
}

/* The same, on self's runtime. */
static inline void on_other_thread(ft_thread *self, step_fn fn, void *arg)
{
    run_on_new_thread(ft_thread_runtime(self), self, fn, arg);
}

/* ---- objects ------------------------------------------------------------------------------------- */

/* A type whose .dealloc is count_dealloc counts its deallocs in counted_deallocs, which the test
 * zeroes before it counts. */
static _Atomic int counted_deallocs;

static inline void count_dealloc(ft_object *o)
{
    (void)o;
    atomic_fetch_add(&counted_deallocs, 1);
}

/* ---- a container for the collector ----------------------------------------------------------------
 *
 * A gc_node is the host's usual GC container: it holds strong references to any objects in an array,
 * may be weakly referenced, and counts its deallocation by id in gc_node_freed (an id freed twice
 * shows as 2). Its traverse visits items n-1..0, its clear empties the array before it drops what the
 * array held, and its dealloc untracks it first. A node is mutated only by the thread that made it,
 * or by whoever holds it exclusively. Tests call gc_node_reset() before they count.
 *
 * Only for files that define TEST_GC_NODE before they include this header: its types reference the
 * collector's functions, which the other tests need not link. */
#ifdef TEST_GC_NODE
#define GC_NODE_MAX (1 << 18)
#define GC_NODE_ALIVE 0x600DA11Eu
#define GC_NODE_DEAD 0xDEADDEADu

typedef struct gc_node {
    ft_object ob;
    ft_weakref *weaklist; /* reserved for ftrt (ft_type.weaklist_offset) */
    uint32_t uid;         /* reserved for ftrt when the type has FT_TYPE_UNIQUEID */
    int id;
    _Atomic uint32_t magic;
    size_t n, cap;
    ft_object **items;
} gc_node;

static _Atomic uint8_t gc_node_freed[GC_NODE_MAX];
static _Atomic int gc_node_next_id, gc_node_deallocs, gc_node_bad_deallocs;
static _Atomic uint8_t gc_node_finalized[GC_NODE_MAX]; /* finalizer calls by id (gc_fin_type) */
static _Atomic int gc_node_finalizes;
static void (*gc_fin_body)(gc_node *self);
static char gc_log_text[8192];
static size_t gc_log_len;

static inline void gc_node_reset(void)
{
    int n = atomic_load(&gc_node_next_id);
    for (int i = 0; i < n && i < GC_NODE_MAX; i++) {
        atomic_store_explicit(&gc_node_freed[i], 0, memory_order_relaxed);
        atomic_store_explicit(&gc_node_finalized[i], 0, memory_order_relaxed);
    }
    atomic_store(&gc_node_finalizes, 0);
    gc_fin_body = NULL;
    gc_log_len = 0;
    gc_log_text[0] = 0;
    atomic_store(&gc_node_next_id, 0);
    atomic_store(&gc_node_deallocs, 0);
    atomic_store(&gc_node_bad_deallocs, 0);
}

/* Nodes made since the reset and not yet deallocated. */
static inline int gc_node_live(void)
{
    return atomic_load(&gc_node_next_id) - atomic_load(&gc_node_deallocs);
}

static inline int gc_node_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    gc_node *n = (gc_node *)self;
    for (size_t i = n->n; i-- > 0;) {
        if (n->items[i]) {
            int r = visit(n->items[i], arg);
            if (r)
                return r;
        }
    }
    return 0;
}

static inline void gc_node_clear(ft_object *self)
{
    gc_node *n = (gc_node *)self;
    ft_object **items = n->items;
    size_t count = n->n;
    n->items = NULL;
    n->n = n->cap = 0;
    for (size_t i = count; i-- > 0;)
        ft_xdecref(items[i]);
    free(items);
}

/* Deallocations by id and in total; a node deallocated twice or never made counts as bad. */
static inline void gc_node_count_dealloc(gc_node *n)
{
    if (atomic_exchange(&n->magic, GC_NODE_DEAD) != GC_NODE_ALIVE || n->id < 0 ||
        n->id >= GC_NODE_MAX)
        atomic_fetch_add(&gc_node_bad_deallocs, 1);
    else
        atomic_fetch_add(&gc_node_freed[n->id], 1);
    atomic_fetch_add(&gc_node_deallocs, 1);
}

static inline void gc_node_dealloc(ft_object *self)
{
    ft_gc_untrack(self);
    gc_node_clear(self);
    gc_node_count_dealloc((gc_node *)self);
}

#define GC_NODE_TYPE_INIT(type_name)                                                               \
    .name = (type_name), .basic_size = sizeof(gc_node), .flags = FT_TYPE_GC | FT_TYPE_HAS_WEAKREFS, \
    .weaklist_offset = offsetof(gc_node, weaklist), .traverse = gc_node_traverse,                  \
    .clear = gc_node_clear, .dealloc = gc_node_dealloc

static const ft_type gc_node_type = {GC_NODE_TYPE_INIT("gc_node")};

/* An event log, for the order of finalizers and callbacks (single-threaded tests): gc_log appends
 * formatted text, CHECK_LOG compares it with what the test expects and shows both when they differ. */
static inline __attribute__((format(printf, 1, 2))) void gc_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(gc_log_text + gc_log_len, sizeof gc_log_text - gc_log_len, fmt, ap);
    va_end(ap);
    if (n > 0 && gc_log_len + (size_t)n < sizeof gc_log_text)
        gc_log_len += (size_t)n;
}

#define CHECK_LOG(expected)                                                                        \
    do {                                                                                           \
        if (strcmp(gc_log_text, (expected)) != 0)                                                  \
            fprintf(stderr, "log: expected \"%s\", got \"%s\"\n", (expected), gc_log_text);        \
        CHECK(strcmp(gc_log_text, (expected)) == 0);                                               \
    } while (0)

/* gc_fin_type: a gc_node with a PEP 442 finalizer that counts its calls by id, logs "F<id> " and
 * then runs the test's gc_fin_body, if any (which may resurrect the node, make cycles, collect). */
static inline void gc_node_finalize(ft_object *self)
{
    gc_node *n = (gc_node *)self;
    if (n->id >= 0 && n->id < GC_NODE_MAX)
        atomic_fetch_add(&gc_node_finalized[n->id], 1);
    atomic_fetch_add(&gc_node_finalizes, 1);
    gc_log("F%d ", n->id);
    if (gc_fin_body)
        gc_fin_body(n);
}

static const ft_type gc_fin_type = {GC_NODE_TYPE_INIT("gc_fin"), .finalize = gc_node_finalize};

/* A node of type (a gc_node type), not yet tracked. */
static inline gc_node *gc_node_new_untracked(ft_thread *t, const ft_type *type)
{
    gc_node *n = (gc_node *)ft_alloc(t, type);
    CHECK_THREAD(n != NULL);
    if (!n)
        return NULL;
    n->id = atomic_fetch_add(&gc_node_next_id, 1);
    CHECK_THREAD(n->id < GC_NODE_MAX);
    atomic_store_explicit(&n->magic, GC_NODE_ALIVE, memory_order_relaxed);
    return n;
}

/* A node of type, tracked. */
static inline gc_node *gc_node_new(ft_thread *t, const ft_type *type)
{
    gc_node *n = gc_node_new_untracked(t, type);
    if (n)
        ft_gc_track(&n->ob);
    return n;
}

/* Append a new reference to o (may be NULL) to n's items. */
static inline void gc_node_append(gc_node *n, ft_object *o)
{
    if (n->n == n->cap) {
        size_t cap = n->cap ? 2 * n->cap : 4;
        ft_object **items = (ft_object **)realloc(n->items, cap * sizeof *items);
        if (!items)
            abort();
        n->items = items;
        n->cap = cap;
    }
    ft_xincref(o);
    n->items[n->n++] = o;
}

/* Remove n's last item and return the reference the array held (NULL if empty). */
static inline ft_object *gc_node_pop(gc_node *n)
{
    return n->n ? n->items[--n->n] : NULL;
}

#define FREED(id) (atomic_load(&gc_node_freed[id]) == 1)
#define ALIVE(id) (atomic_load(&gc_node_freed[id]) == 0)

/* gc_node with deferred reference counting from allocation (ftrt/stackref.h). */
static const ft_type gc_deferred_type = {.name = "gc_deferred",
                                         .basic_size = sizeof(gc_node),
                                         .flags = FT_TYPE_GC | FT_TYPE_HAS_WEAKREFS |
                                                  FT_TYPE_DEFERRED,
                                         .weaklist_offset = offsetof(gc_node, weaklist),
                                         .traverse = gc_node_traverse,
                                         .clear = gc_node_clear,
                                         .dealloc = gc_node_dealloc};

/* gc_node whose instances may get per-thread reference counts (ft_uniqueid_enable). */
static const ft_type gc_uid_type = {.name = "gc_uid",
                                    .basic_size = sizeof(gc_node),
                                    .flags = FT_TYPE_GC | FT_TYPE_HAS_WEAKREFS | FT_TYPE_UNIQUEID,
                                    .unique_id_offset = offsetof(gc_node, uid),
                                    .weaklist_offset = offsetof(gc_node, weaklist),
                                    .traverse = gc_node_traverse,
                                    .clear = gc_node_clear,
                                    .dealloc = gc_node_dealloc};

/* Every node made since the reset was deallocated exactly once (the first few offenders named). */
static inline void gc_node_check_all_freed_once(void)
{
    int n = atomic_load(&gc_node_next_id), bad = 0;
    for (int i = 0; i < n; i++)
        if (atomic_load(&gc_node_freed[i]) != 1 && bad++ < 10)
            fprintf(stderr, "node %d freed %d times\n", i, (int)atomic_load(&gc_node_freed[i]));
    CHECK_EQ(bad, 0);
    CHECK_EQ(atomic_load(&gc_node_bad_deallocs), 0);
}

/* A runtime for collector tests: the gc_node census reset, automatic collection off. */
static inline fixture gc_fixture_setup(void)
{
    gc_node_reset();
    fixture f = fixture_setup();
    ft_gc_disable(f.rt);
    return f;
}

/* A last full collection; then no node is left, none was freed badly, no helper thread failed, and
 * (debug builds) the reference total is back at 0. */
static inline void gc_fixture_teardown(fixture f)
{
    ft_gc_collect(f.rt, 2);
    CHECK_EQ(gc_node_live(), 0);
    CHECK_EQ(atomic_load(&gc_node_bad_deallocs), 0);
    check_helpers_ok();
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(f.rt), 0);
#endif
    fixture_teardown(f);
}
#endif /* TEST_GC_NODE */

/* ---- statistics ---------------------------------------------------------------------------------- */

static inline ft_heap_stats stats_of(ft_runtime *rt)
{
    ft_heap_stats s;
    ft_heap_get_stats(rt, &s);
    return s;
}

static inline uint32_t thread_count(ft_runtime *rt)
{
    ft_runtime_stats stats;
    ft_runtime_get_stats(rt, &stats);
    return stats.threads;
}

/* ---- commanded workers --------------------------------------------------------------------------- */

/* A commanded worker: a thread with its own thread state that runs commands the main thread posts.
 * While idle it passes safepoints (when `quiescent`) or holds still without one, so a test always
 * knows which thread owes a quiescent point. A test may give it an idle hook, which runs after each
 * idle safepoint (to check, between safepoints, something only the worker may look at), and a
 * context for the state its commands and hook share. */
typedef struct commanded commanded;
typedef void (*commanded_fn)(commanded *w);

struct commanded {
    pthread_t thread;
    ft_runtime *rt;
    ft_thread *t;             /* the commanded's thread state; written before `started` */
    _Atomic bool started, exited;
    _Atomic bool quiescent;   /* the idle loop passes safepoints */
    _Atomic bool quit;
    _Atomic int posted, done; /* command sequence numbers */
    commanded_fn fn;          /* the posted command; written before `posted` */
    void *arg;                /* its argument; written before `posted` */
    uint64_t result;          /* a command's result; read after `done` */
    commanded_fn idle;        /* NULL or the idle hook; written before the start */
    void *ctx;                /* the test's state for this commanded; written before the start */
};

static inline void *commanded_main(void *arg)
{
    commanded *w = arg;
    w->t = ft_thread_start(w->rt);
    CHECK_THREAD(w->t != NULL);
    atomic_store(&w->started, true);
    if (!w->t)
        return NULL;
    for (;;) {
        if (atomic_load(&w->quiescent)) {
            ft_safepoint(w->t);
            if (w->idle)
                w->idle(w);
        }
        int posted = atomic_load(&w->posted);
        if (posted != atomic_load(&w->done)) {
            w->fn(w);
            atomic_store(&w->done, posted);
            continue;
        }
        if (atomic_load(&w->quit))
            break;
        sched_yield();
    }
    ft_thread_stop(w->t);
    atomic_store(&w->exited, true);
    return NULL;
}

/* Start a commanded with an idle hook and a context (either may be NULL); `self` (the caller's
 * attached thread state, or NULL) keeps passing safepoints meanwhile, since the commanded's start may
 * stop the world. */
static inline void commanded_start_with(ft_thread *self, commanded *w, ft_runtime *rt,
                                        commanded_fn idle, void *ctx)
{
    memset(w, 0, sizeof *w);
    w->rt = rt;
    w->idle = idle;
    w->ctx = ctx;
    atomic_store(&w->quiescent, true);
    CHECK(pthread_create(&w->thread, NULL, commanded_main, w) == 0);
    AWAIT(self, atomic_load(&w->started));
    CHECK(atomic_load(&w->started) && w->t != NULL);
}

static inline void commanded_start(ft_thread *self, commanded *w, ft_runtime *rt)
{
    commanded_start_with(self, w, rt, NULL, NULL);
}

/* Post fn(w) with w->arg = arg to the commanded without waiting; returns the command's number for
 * commanded_wait. One command at a time: wait for it before posting the next. */
static inline int commanded_post(commanded *w, commanded_fn fn, void *arg)
{
    w->fn = fn;
    w->arg = arg;
    int n = atomic_load(&w->posted) + 1;
    atomic_store(&w->posted, n);
    return n;
}

static inline void commanded_wait(ft_thread *self, commanded *w, int n)
{
    AWAIT(self, atomic_load(&w->done) == n);
    CHECK_EQ(atomic_load(&w->done), n);
}

/* Run fn(w) with w->arg = arg on the commanded and wait for it. */
static inline void commanded_do(ft_thread *self, commanded *w, commanded_fn fn, void *arg)
{
    commanded_wait(self, w, commanded_post(w, fn, arg));
}

static inline void commanded_finish(ft_thread *self, commanded *w)
{
    atomic_store(&w->quit, true);
    AWAIT(self, atomic_load(&w->exited));
    CHECK(atomic_load(&w->exited));
    pthread_join(w->thread, NULL);
}

static inline void cmd_hold(commanded *w)
{
    atomic_store(&w->quiescent, false);
}

static inline void cmd_resume(commanded *w)
{
    atomic_store(&w->quiescent, true);
}

static inline void cmd_safepoint(commanded *w)
{
    ft_safepoint(w->t);
}

/* Detach; the commanded holds meanwhile, since a detached thread passes no safepoints. */
static inline void cmd_detach(commanded *w)
{
    cmd_hold(w);
    ft_detach(w->t);
}

/* Attach again, still holding: cmd_resume lets it pass safepoints. */
static inline void cmd_attach(commanded *w)
{
    ft_attach(w->t);
}

#endif
