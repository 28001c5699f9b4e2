/* tests/test_tlbc.c: thread-local copies of code buffers.
 *
 * The host's "code" here is a byte buffer whose byte 0 is a "specialised" marker (set in the
 * original, as if the first thread had specialised it) and whose other bytes hold a pattern. The copy
 * callback copies the original and clears the marker, and counts its calls. Threads then behave like
 * an interpreter that specialises in place: each writes its own tag over the copy ft_tlbc_get
 * returned to it and checks it never sees another thread's bytes (plain writes and reads, so under
 * TSan a copy shared by two threads would also be reported as a race).
 *
 * Checked: the first thread (index 0) executes the original and no copy exists while it runs alone;
 * every other thread gets its own copy, made once and unspecialised; with the feature disabled (by
 * the configuration or by FTRT_TLBC=0 in the environment) everyone shares the original; a stopped
 * thread's copy is inherited by the next thread with its index; ft_tlbc_clear_unused frees the copies
 * of indices no started thread holds, and never one whose thread is running in it (attached) or will
 * resume in it (detached), also inside a stop the caller holds; the copies array grows while threads
 * with high indices read it; copies go with ft_tlbc_destroy; a failed copy reports FT_ENOMEM and a
 * later try succeeds. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "ftrt.h"
#include "harness.h"
#include "lib/tlbc.h" /* ft_tlbc_clear_unused_stopped, the core that runs inside a stop */

/* ---- helpers ------------------------------------------------------------------------------------- */

#define WAIT_LIMIT_NS (30 * INT64_C(1000000000)) /* far beyond any correct wait, even under TSan */
#include "test_util.h"
#define CODE_SIZE 256
#define BODY 8 /* bytes [BODY, CODE_SIZE) carry the pattern or a thread's tag */

/* Wait, detached, until n threads have arrived. */
static void gate(ft_thread *t, _Atomic int *arrived, int n)
{
    atomic_fetch_add(arrived, 1);
    ft_detach(t);
    AWAIT(NULL, atomic_load(arrived) >= n);
    ft_attach(t);
}

static _Atomic int copy_calls;
static _Atomic int copy_misuse;
static int copy_arg_token;

static void copy_code(void *dst, const void *original, size_t size, void *arg)
{
    if (size != CODE_SIZE || arg != &copy_arg_token)
        atomic_fetch_add(&copy_misuse, 1);
    memcpy(dst, original, size);
    ((unsigned char *)dst)[0] = 0; /* not specialised */
    atomic_fetch_add(&copy_calls, 1);
}

static unsigned char pattern_byte(size_t i)
{
    return (unsigned char)(i * 7 + 3);
}

static void make_original(unsigned char *code)
{
    code[0] = 1; /* the first thread has specialised the original */
    for (size_t i = 1; i < CODE_SIZE; i++)
        code[i] = pattern_byte(i);
}

static bool is_original(const unsigned char *code, unsigned char marker)
{
    if (code[0] != marker)
        return false;
    for (size_t i = 1; i < CODE_SIZE; i++)
        if (code[i] != pattern_byte(i))
            return false;
    return true;
}

/* A thread specialises its copy: marker set, body overwritten with its tag. */
static void specialise(unsigned char *code, unsigned char tag)
{
    code[0] = 1;
    memset(code + BODY, tag, CODE_SIZE - BODY);
}

static bool specialised_by(const unsigned char *code, unsigned char tag)
{
    if (code[0] != 1)
        return false;
    for (size_t i = BODY; i < CODE_SIZE; i++)
        if (code[i] != tag)
            return false;
    return true;
}

static void reset_counts(void)
{
    atomic_store(&copy_calls, 0);
    atomic_store(&copy_misuse, 0);
}

/* A worker: a commanded thread (tests/test_util.h) with what it knows of its copy. Once it has a
 * copy, its idle hook keeps checking, between safepoints, that the copy still holds its tag. */
typedef struct tlbc_worker {
    commanded thread; /* thread.ctx is this tlbc_worker */
    ft_tlbc *c;
    unsigned char *code; /* the copy it executes in; worker only, read by main after a command */
    unsigned char tag;
    _Atomic int damage;  /* checks of its own copy that failed */
} tlbc_worker;

static void check_own_copy(commanded *w)
{
    tlbc_worker *k = w->ctx;
    if (k->code && !specialised_by(k->code, k->tag))
        atomic_fetch_add(&k->damage, 1);
}

static void tlbc_worker_start(ft_thread *self, tlbc_worker *k, ft_runtime *rt, ft_tlbc *c,
                              unsigned char tag)
{
    k->c = c;
    k->code = NULL;
    k->tag = tag;
    atomic_store(&k->damage, 0);
    commanded_start_with(self, &k->thread, rt, check_own_copy, k);
}

/* Get the worker's copy; it must be fresh (unspecialised), then specialise it with the tag. */
static void cmd_get_and_specialise(commanded *w)
{
    tlbc_worker *k = w->ctx;
    unsigned char *code = ft_tlbc_get(k->c, w->t);
    CHECK_THREAD(code != NULL);
    if (!code)
        return;
    CHECK_THREAD(is_original(code, 0));
    specialise(code, k->tag);
    k->code = code;
}

/* Get the worker's copy again: the same one, still holding the tag. */
static void cmd_check_copy(commanded *w)
{
    tlbc_worker *k = w->ctx;
    unsigned char *code = ft_tlbc_get(k->c, w->t);
    CHECK_THREAD(code == k->code);
    CHECK_THREAD(code != NULL && specialised_by(code, k->tag));
}

/* Get the copy the worker's index already has (a stopped thread's): specialised with the tag. */
static void cmd_get_inherited(commanded *w)
{
    tlbc_worker *k = w->ctx;
    unsigned char *code = ft_tlbc_get(k->c, w->t);
    CHECK_THREAD(code != NULL && specialised_by(code, k->tag));
    k->code = code;
}

/* ---- the original, and one copy per thread ------------------------------------------------------- */

TEST(first_thread_executes_the_original)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    CHECK_EQ(ft_thread_index(a), 0);
    CHECK(ft_tlbc_enabled(rt));
    unsigned char code[CODE_SIZE];
    make_original(code);
    ft_tlbc c;
    CHECK_EQ(ft_tlbc_init(&c, a, code, CODE_SIZE, copy_code, &copy_arg_token), FT_OK);
    for (int i = 0; i < 3; i++)
        CHECK(ft_tlbc_get(&c, a) == code);
    CHECK_EQ(ft_tlbc_count(rt), 0);
    CHECK_EQ(atomic_load(&copy_calls), 0);
    CHECK_EQ(ft_tlbc_clear_unused(rt), 0);
    CHECK(ft_tlbc_get(&c, a) == code);
    ft_tlbc_destroy(&c, a);
    CHECK(is_original(code, 1)); /* the original is the host's: left alone */
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

#define OWN_THREADS 5
#define OWN_ROUNDS 200

typedef struct own_shared {
    ft_runtime *rt;
    ft_tlbc *c;
    unsigned char *original;
    _Atomic int arrived1, arrived2;
    unsigned char *copies[OWN_THREADS];
    uint32_t indices[OWN_THREADS];
    bool disabled; /* everyone should get the original */
} own_shared;

typedef struct own_arg {
    own_shared *s;
    int i;
} own_arg;

static void *own_main(void *arg)
{
    own_arg *o = arg;
    own_shared *s = o->s;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    s->indices[o->i] = ft_thread_index(t);
    gate(t, &s->arrived1, OWN_THREADS); /* all started: distinct indices */
    unsigned char *code = ft_tlbc_get(s->c, t);
    s->copies[o->i] = code;
    CHECK_THREAD(code != NULL);
    if (s->disabled) {
        CHECK_THREAD(code == s->original);
        for (int r = 0; r < OWN_ROUNDS; r++) {
            CHECK_THREAD(ft_tlbc_get(s->c, t) == s->original);
            ft_safepoint(t);
        }
    } else if (code) {
        CHECK_THREAD(code != s->original);
        CHECK_THREAD(is_original(code, 0)); /* a fresh, unspecialised copy */
        unsigned char tag = (unsigned char)(0x40 + o->i);
        for (int r = 0; r < OWN_ROUNDS; r++) {
            CHECK_THREAD(ft_tlbc_get(s->c, t) == code);
            specialise(code, tag);
            ft_safepoint(t);
            CHECK_THREAD(specialised_by(code, tag));
        }
    }
    gate(t, &s->arrived2, OWN_THREADS); /* nobody stops (freeing an index) before all are done */
    ft_thread_stop(t);
    return NULL;
}

static void run_own_threads(ft_thread *a, own_shared *s)
{
    pthread_t threads[OWN_THREADS];
    own_arg args[OWN_THREADS];
    for (int i = 0; i < OWN_THREADS; i++) {
        args[i] = (own_arg){s, i};
        CHECK(pthread_create(&threads[i], NULL, own_main, &args[i]) == 0);
    }
    join_detached(a, threads, OWN_THREADS);
}

TEST(each_thread_specialises_its_own_copy)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    unsigned char code[CODE_SIZE];
    make_original(code);
    ft_tlbc c;
    CHECK_EQ(ft_tlbc_init(&c, a, code, CODE_SIZE, copy_code, &copy_arg_token), FT_OK);
    own_shared s = {.rt = rt, .c = &c, .original = code};
    run_own_threads(a, &s);
    for (int i = 0; i < OWN_THREADS; i++) {
        CHECK(s.indices[i] != 0);
        for (int j = 0; j < i; j++)
            CHECK(s.copies[i] != s.copies[j]);
    }
    CHECK_EQ(atomic_load(&copy_calls), OWN_THREADS);
    CHECK_EQ(atomic_load(&copy_misuse), 0);
    CHECK_EQ(ft_tlbc_count(rt), OWN_THREADS);
    CHECK(is_original(code, 1));         /* nobody wrote into the original */
    CHECK(ft_tlbc_get(&c, a) == code);   /* index 0 still executes it */
    ft_tlbc_destroy(&c, a);
    CHECK_EQ(ft_tlbc_count(rt), 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- disabled ------------------------------------------------------------------------------------ */

static void check_everyone_shares(ft_runtime *rt)
{
    reset_counts();
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    CHECK(!ft_tlbc_enabled(rt));
    unsigned char code[CODE_SIZE];
    make_original(code);
    ft_tlbc c;
    CHECK_EQ(ft_tlbc_init(&c, a, code, CODE_SIZE, copy_code, &copy_arg_token), FT_OK);
    own_shared s = {.rt = rt, .c = &c, .original = code, .disabled = true};
    run_own_threads(a, &s);
    for (int i = 0; i < OWN_THREADS; i++)
        CHECK(s.indices[i] != 0); /* real indices, all mapped to the original */
    CHECK_EQ(atomic_load(&copy_calls), 0);
    CHECK_EQ(ft_tlbc_count(rt), 0);
    ft_tlbc_destroy(&c, a);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(disabled_by_config_shares_the_original)
{
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.tlbc_disabled = true;
    check_everyone_shares(new_runtime(&cfg));
}

TEST(disabled_by_environment_shares_the_original)
{
    ft_config cfg;
    CHECK(setenv("FTRT_TLBC", "0", 1) == 0);
    ft_config_init(&cfg);
    CHECK(cfg.tlbc_disabled);
    ft_runtime *rt = new_runtime(NULL); /* the defaults read the environment too */
    CHECK(unsetenv("FTRT_TLBC") == 0);
    check_everyone_shares(rt);

    ft_config_init(&cfg);
    CHECK(!cfg.tlbc_disabled);
    CHECK(setenv("FTRT_TLBC", "1", 1) == 0);
    ft_config_init(&cfg);
    CHECK(unsetenv("FTRT_TLBC") == 0);
    CHECK(!cfg.tlbc_disabled);
}

/* ---- reuse and clearing -------------------------------------------------------------------------- */

TEST(stopped_threads_copy_goes_to_the_next_thread_with_its_index)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    unsigned char code[CODE_SIZE];
    make_original(code);
    ft_tlbc c;
    CHECK_EQ(ft_tlbc_init(&c, a, code, CODE_SIZE, copy_code, &copy_arg_token), FT_OK);

    tlbc_worker x;
    tlbc_worker_start(a, &x, rt, &c, 0x11);
    uint32_t index = ft_thread_index(x.thread.t);
    commanded_do(a, &x.thread, cmd_get_and_specialise, NULL);
    unsigned char *copy = x.code;
    CHECK(copy != NULL && copy != code);
    commanded_finish(a, &x.thread);
    CHECK_EQ(ft_tlbc_count(rt), 1); /* kept after the stop */

    tlbc_worker y;
    tlbc_worker_start(a, &y, rt, &c, 0x11);
    CHECK_EQ(ft_thread_index(y.thread.t), index); /* smallest-first: the index comes back */
    commanded_do(a, &y.thread, cmd_get_inherited, NULL);
    CHECK(y.code == copy); /* the same copy, as x left it */
    CHECK_EQ(atomic_load(&copy_calls), 1);
    CHECK_EQ(ft_tlbc_count(rt), 1);
    commanded_finish(a, &y.thread);
    CHECK_THREADS_OK();
    CHECK_EQ(atomic_load(&x.damage) + atomic_load(&y.damage), 0);
    ft_tlbc_destroy(&c, a);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(clear_unused_spares_copies_in_use)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    unsigned char code[CODE_SIZE];
    make_original(code);
    ft_tlbc c;
    CHECK_EQ(ft_tlbc_init(&c, a, code, CODE_SIZE, copy_code, &copy_arg_token), FT_OK);

    tlbc_worker x, y, z; /* x runs attached in its copy; y is detached; z stops */
    tlbc_worker_start(a, &x, rt, &c, 0x21);
    tlbc_worker_start(a, &y, rt, &c, 0x22);
    tlbc_worker_start(a, &z, rt, &c, 0x23);
    commanded_do(a, &x.thread, cmd_get_and_specialise, NULL);
    commanded_do(a, &y.thread, cmd_get_and_specialise, NULL);
    commanded_do(a, &z.thread, cmd_get_and_specialise, NULL);
    CHECK_EQ(ft_tlbc_count(rt), 3);
    uint32_t z_index = ft_thread_index(z.thread.t);
    commanded_do(a, &y.thread, cmd_detach, NULL);
    commanded_finish(a, &z.thread);

    CHECK_EQ(ft_tlbc_clear_unused(rt), 1); /* z's only */
    CHECK_EQ(ft_tlbc_count(rt), 2);
    CHECK_EQ(ft_tlbc_clear_unused(rt), 0);
    CHECK(ft_tlbc_get(&c, a) == code);
    commanded_do(a, &x.thread, cmd_check_copy, NULL);
    commanded_do(a, &y.thread, cmd_attach, NULL);
    commanded_do(a, &y.thread, cmd_resume, NULL);
    commanded_do(a, &y.thread, cmd_check_copy, NULL);

    /* The next thread with z's index gets a fresh copy, not z's tag. */
    tlbc_worker w;
    tlbc_worker_start(a, &w, rt, &c, 0x24);
    CHECK_EQ(ft_thread_index(w.thread.t), z_index);
    commanded_do(a, &w.thread, cmd_get_and_specialise, NULL); /* checks the copy is fresh */
    CHECK_EQ(atomic_load(&copy_calls), 4);
    CHECK_EQ(ft_tlbc_count(rt), 3);

    commanded_finish(a, &x.thread);
    commanded_finish(a, &y.thread);
    commanded_finish(a, &w.thread);
    CHECK_THREADS_OK();
    CHECK_EQ(atomic_load(&x.damage) + atomic_load(&y.damage) + atomic_load(&w.damage), 0);
    CHECK_EQ(ft_tlbc_clear_unused(rt), 3); /* all stopped now */
    CHECK_EQ(ft_tlbc_count(rt), 0);
    ft_tlbc_destroy(&c, a);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* Inside a stop the caller holds (as a collector will), the clearing core and the public call both
 * clear, without stopping the world again. */
TEST(clear_unused_inside_the_callers_stop)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    unsigned char code[CODE_SIZE];
    make_original(code);
    ft_tlbc c;
    CHECK_EQ(ft_tlbc_init(&c, a, code, CODE_SIZE, copy_code, &copy_arg_token), FT_OK);
    tlbc_worker x, z;
    tlbc_worker_start(a, &x, rt, &c, 0x31);
    tlbc_worker_start(a, &z, rt, &c, 0x32);
    commanded_do(a, &x.thread, cmd_get_and_specialise, NULL);
    commanded_do(a, &z.thread, cmd_get_and_specialise, NULL);
    commanded_finish(a, &z.thread);
    CHECK_EQ(ft_tlbc_count(rt), 2);

    ft_runtime_stats before;
    ft_runtime_get_stats(rt, &before);
    ft_stop_the_world(rt);
    size_t cleared = ft_tlbc_clear_unused_stopped(rt);
    size_t again = ft_tlbc_clear_unused(rt);
    ft_start_the_world(rt);
    ft_runtime_stats after;
    ft_runtime_get_stats(rt, &after);
    CHECK_EQ(cleared, 1); /* z's */
    CHECK_EQ(again, 0);
    CHECK_EQ(after.stw_count, before.stw_count + 1); /* no stop of their own */
    CHECK_EQ(ft_tlbc_count(rt), 1);
    commanded_do(a, &x.thread, cmd_check_copy, NULL);

    commanded_finish(a, &x.thread);
    CHECK_THREADS_OK();
    CHECK_EQ(atomic_load(&x.damage) + atomic_load(&z.damage), 0);
    ft_runtime_get_stats(rt, &before);
    CHECK_EQ(ft_tlbc_clear_unused(rt), 1); /* outside a stop: stops the world itself */
    ft_runtime_get_stats(rt, &after);
    CHECK_EQ(after.stw_count, before.stw_count + 1);
    ft_tlbc_destroy(&c, a);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- the copies array grows while threads read it ------------------------------------------------ */

#define GROW_THREADS 24
#define GROW_ROUNDS 300

typedef struct grow_shared {
    ft_runtime *rt;
    ft_tlbc *c[2];
    unsigned char *original[2];
    _Atomic int finished;
    unsigned char *copies[GROW_THREADS][2];
} grow_shared;

typedef struct grow_arg {
    grow_shared *s;
    int i;
} grow_arg;

/* Allocate, overwrite and free blocks of the copies arrays' sizes: a grower that freed an old array
 * at once (instead of after a grace period) would get its block back here and overwrite it under a
 * reader still probing it. */
static void scribble(ft_thread *t)
{
    static const size_t sizes[] = {16, 24, 40, 72, 136, 264, 520};
    void *blocks[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        blocks[i] = ft_malloc(t, sizes[i]);
        CHECK_THREAD(blocks[i] != NULL);
        if (blocks[i])
            memset(blocks[i], 0xEE, sizes[i]);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        ft_free(t, blocks[i]);
}

static void *grow_main(void *arg)
{
    grow_arg *g = arg;
    grow_shared *s = g->s;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    unsigned char tag = (unsigned char)(0x80 + g->i);
    unsigned char *mine[2] = {NULL, NULL};
    for (int r = 0; r < GROW_ROUNDS; r++) {
        for (int k = 0; k < 2; k++) {
            unsigned char *code = ft_tlbc_get(s->c[k], t);
            CHECK_THREAD(code != NULL && code != s->original[k]);
            if (!code)
                continue;
            if (!mine[k]) {
                CHECK_THREAD(is_original(code, 0));
                mine[k] = code;
            }
            CHECK_THREAD(code == mine[k]);
            if (r > 0)
                CHECK_THREAD(specialised_by(code, tag));
            specialise(code, tag);
        }
        scribble(t);
        ft_safepoint(t);
        if (r % 16 == 0)
            sched_yield();
    }
    s->copies[g->i][0] = mine[0];
    s->copies[g->i][1] = mine[1];
    gate(t, &s->finished, GROW_THREADS); /* indices stay distinct until everyone is done */
    ft_thread_stop(t);
    return NULL;
}

TEST(copies_array_grows_while_threads_read)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    unsigned char code[2][CODE_SIZE];
    ft_tlbc c[2];
    grow_shared s = {.rt = rt};
    for (int k = 0; k < 2; k++) {
        make_original(code[k]);
        CHECK_EQ(ft_tlbc_init(&c[k], a, code[k], CODE_SIZE, copy_code, &copy_arg_token), FT_OK);
        s.c[k] = &c[k];
        s.original[k] = code[k];
    }
    pthread_t threads[GROW_THREADS];
    grow_arg args[GROW_THREADS];
    ft_detach(a);
    for (int i = 0; i < GROW_THREADS; i++) {
        args[i] = (grow_arg){&s, i};
        CHECK(pthread_create(&threads[i], NULL, grow_main, &args[i]) == 0);
    }
    for (int i = 0; i < GROW_THREADS; i++)
        pthread_join(threads[i], NULL);
    ft_attach(a);
    CHECK_THREADS_OK();
    CHECK_EQ(atomic_load(&copy_calls), 2 * GROW_THREADS);
    CHECK_EQ(ft_tlbc_count(rt), 2 * GROW_THREADS);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < GROW_THREADS; i++)
            for (int j = 0; j < i; j++)
                CHECK(s.copies[i][k] != s.copies[j][k]);
    for (int k = 0; k < 2; k++) {
        CHECK(is_original(code[k], 1));
        ft_tlbc_destroy(&c[k], a);
    }
    CHECK_EQ(ft_tlbc_count(rt), 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- running out of memory ----------------------------------------------------------------------- */

static ft_status get_status;

static void cmd_get_expect_failure(commanded *w)
{
    tlbc_worker *k = w->ctx;
    void *code = ft_tlbc_get(k->c, w->t);
    get_status = code ? FT_OK : ft_last_error();
}

TEST(failed_copy_reports_enomem_and_can_be_retried)
{
    reset_counts();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    unsigned char code[CODE_SIZE];
    make_original(code);
    ft_tlbc c;
    ft_debug_fail_allocation(rt, 0); /* the first copies array */
    CHECK_EQ(ft_tlbc_init(&c, a, code, CODE_SIZE, copy_code, &copy_arg_token), FT_ENOMEM);
    ft_debug_fail_allocation(rt, -1);
    CHECK_EQ(ft_tlbc_count(rt), 0);
    CHECK_EQ(ft_tlbc_init(&c, a, code, CODE_SIZE, copy_code, &copy_arg_token), FT_OK);
    tlbc_worker x;
    tlbc_worker_start(a, &x, rt, &c, 0x31);
    for (int site = 0; site < 2; site++) { /* the array's growth, then the copy itself */
        ft_debug_fail_allocation(rt, site);
        commanded_do(a, &x.thread, cmd_get_expect_failure, NULL);
        ft_debug_fail_allocation(rt, -1);
        if (site > 0 && get_status == FT_OK)
            break; /* one allocation site fewer than tried: the first failed as it should */
        CHECK_EQ(get_status, FT_ENOMEM);
        CHECK_EQ(ft_tlbc_count(rt), 0);
        CHECK_EQ(atomic_load(&copy_calls), 0);
    }
    commanded_do(a, &x.thread, cmd_get_and_specialise, NULL);
    CHECK_EQ(atomic_load(&copy_calls), 1);
    CHECK_EQ(ft_tlbc_count(rt), 1);
    commanded_finish(a, &x.thread);
    CHECK_THREADS_OK();
    ft_tlbc_destroy(&c, a);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

int main(void)
{
    RUN(first_thread_executes_the_original);
    RUN(each_thread_specialises_its_own_copy);
    RUN(disabled_by_config_shares_the_original);
    RUN(disabled_by_environment_shares_the_original);
    RUN(stopped_threads_copy_goes_to_the_next_thread_with_its_index);
    RUN(clear_unused_spares_copies_in_use);
    RUN(clear_unused_inside_the_callers_stop);
    RUN(copies_array_grows_while_threads_read);
    RUN(failed_copy_reports_enomem_and_can_be_retried);
    return harness_done();
}
