/* tests/test_critical_section.c: per-object critical sections.
 *
 * Single-threaded checks of what begin and end do to the mutexes: locking and unlocking, nesting,
 * re-entry on a mutex the innermost section holds (a no-op), two-mutex sections (address order, a
 * mutex given twice counts once), suspension of every section on detach and lazy re-locking of the
 * outer ones. Then the behaviours that need other threads: a thread blocked beginning a section has
 * released its outer sections; a two-mutex section whose second mutex is handed to it never waits
 * for the first while holding the second (begin and resume), so a plain user locking the pair in
 * address order cannot deadlock with it; transfers between accounts in both argument orders
 * conserve the total without deadlock, also while a requester stops the world and reads the
 * accounts; and the requester of a stop-the-world never waits in its sections, so it cannot
 * deadlock on a mutex owned by a thread outside the runtime or handed off to a suspended thread
 * (gh-144513), and its begins and ends balance.
 *
 * Waits are spins on atomics with a generous time limit, so a broken runtime fails a check rather
 * than hanging, except where a deadlock is the very failure being tested for (the ctest timeout is
 * the backstop there).
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

#define WAIT_LIMIT_NS (30 * INT64_C(1000000000))
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------------------- */

/* A mutex that nobody else holds is free if this thread can take it. */
static bool is_free(ft_mutex *m)
{
    if (!ft_mutex_trylock(m))
        return false;
    ft_mutex_unlock(m);
    return true;
}

/* ---- single-threaded behaviour ------------------------------------------------------------------- */

TEST(begin_and_end_lock_and_unlock)
{
    fixture f = fixture_setup();
    ft_mutex m = {0};

    ft_critical_section cs;
    ft_critical_section_begin(f.t, &cs, &m);
    CHECK(ft_mutex_is_locked(&m));
    CHECK(ft_critical_section_holds(f.t, &m));
    CHECK(cs.mutex == &m);
    ft_safepoint(f.t);
    CHECK(ft_mutex_is_locked(&m));
    ft_critical_section_end(f.t, &cs);
    CHECK(!ft_mutex_is_locked(&m));
    CHECK(!ft_critical_section_holds(f.t, &m));
    CHECK(is_free(&m));

    /* Many rounds on the fast path leave nothing behind. */
    for (int i = 0; i < 1000; i++) {
        ft_critical_section_begin(f.t, &cs, &m);
        ft_critical_section_end(f.t, &cs);
    }
    CHECK(!ft_mutex_is_locked(&m));

    fixture_teardown(f);
}

TEST(nested_sections_on_two_mutexes)
{
    fixture f = fixture_setup();
    ft_mutex outer_mutex = {0}, inner_mutex = {0};

    ft_critical_section outer, inner;
    ft_critical_section_begin(f.t, &outer, &outer_mutex);
    ft_critical_section_begin(f.t, &inner, &inner_mutex);
    CHECK(ft_mutex_is_locked(&outer_mutex));
    CHECK(ft_mutex_is_locked(&inner_mutex));
    /* Only the innermost section counts for holds. */
    CHECK(ft_critical_section_holds(f.t, &inner_mutex));
    CHECK(!ft_critical_section_holds(f.t, &outer_mutex));

    ft_critical_section_end(f.t, &inner);
    CHECK(!ft_mutex_is_locked(&inner_mutex));
    CHECK(ft_mutex_is_locked(&outer_mutex));
    CHECK(ft_critical_section_holds(f.t, &outer_mutex));
    ft_critical_section_end(f.t, &outer);
    CHECK(!ft_mutex_is_locked(&outer_mutex));

    fixture_teardown(f);
}

TEST(reentry_on_a_held_mutex_is_a_no_op)
{
    fixture f = fixture_setup();
    ft_mutex m = {0}, other = {0};

    ft_critical_section outer, inner, innermost;
    ft_critical_section_begin(f.t, &outer, &m);
    ft_critical_section_begin(f.t, &inner, &m); /* would self-deadlock if it locked */
    CHECK(inner.mutex == NULL);
    CHECK(ft_critical_section_holds(f.t, &m));
    ft_critical_section_begin(f.t, &innermost, &m);
    CHECK(innermost.mutex == NULL);
    ft_critical_section_end(f.t, &innermost);
    ft_critical_section_end(f.t, &inner);
    /* The outer section still holds it. */
    CHECK(ft_mutex_is_locked(&m));
    CHECK(ft_critical_section_holds(f.t, &m));
    ft_critical_section_end(f.t, &outer);
    CHECK(!ft_mutex_is_locked(&m));

    /* Either mutex of a two-mutex section counts as held by it. */
    ft_critical_section2 pair;
    ft_critical_section_begin(f.t, &outer, &other);
    ft_critical_section2_begin(f.t, &pair, &m, &other);
    CHECK(ft_critical_section_holds(f.t, &m));
    CHECK(ft_critical_section_holds(f.t, &other));
    ft_critical_section_begin(f.t, &inner, &m);
    CHECK(inner.mutex == NULL);
    ft_critical_section_end(f.t, &inner);
    ft_critical_section_begin(f.t, &inner, &other);
    CHECK(inner.mutex == NULL);
    ft_critical_section_end(f.t, &inner);
    CHECK(ft_mutex_is_locked(&m));
    CHECK(ft_mutex_is_locked(&other));
    ft_critical_section2_end(f.t, &pair);
    /* The outer section on `other` is active again. */
    CHECK(!ft_mutex_is_locked(&m));
    CHECK(ft_mutex_is_locked(&other));
    CHECK(ft_critical_section_holds(f.t, &other));
    ft_critical_section_end(f.t, &outer);
    CHECK(!ft_mutex_is_locked(&other));

    /* Re-entry is judged on the innermost section only: an outer holder does not make it a no-op,
     * so the inner section really waits for the mutex, and gets it after the outer one is
     * suspended by the wait. */
    ft_critical_section_begin(f.t, &outer, &m);
    ft_critical_section_begin(f.t, &inner, &other);
    CHECK(!ft_critical_section_holds(f.t, &m));
    ft_critical_section_begin(f.t, &innermost, &m);
    CHECK(innermost.mutex == &m);
    CHECK(ft_mutex_is_locked(&m));
    CHECK(ft_critical_section_holds(f.t, &m));
    ft_critical_section_end(f.t, &innermost);
    ft_critical_section_end(f.t, &inner);
    ft_critical_section_end(f.t, &outer);
    CHECK(!ft_mutex_is_locked(&m));
    CHECK(!ft_mutex_is_locked(&other));

    fixture_teardown(f);
}

TEST(two_mutex_sections_lock_in_address_order)
{
    fixture f = fixture_setup();
    ft_mutex pair[2] = {{0}, {0}}; /* pair[0] has the lower address */
    ft_mutex *low = &pair[0], *high = &pair[1];

    for (int order = 0; order < 2; order++) {
        ft_critical_section2 cs;
        if (order == 0)
            ft_critical_section2_begin(f.t, &cs, low, high);
        else
            ft_critical_section2_begin(f.t, &cs, high, low);
        CHECK(ft_mutex_is_locked(low));
        CHECK(ft_mutex_is_locked(high));
        CHECK(cs.base.mutex == low);
        CHECK(cs.mutex2 == high);
        CHECK(ft_critical_section_holds(f.t, low));
        CHECK(ft_critical_section_holds(f.t, high));
        ft_critical_section2_end(f.t, &cs);
        CHECK(!ft_mutex_is_locked(low));
        CHECK(!ft_mutex_is_locked(high));
        CHECK(!ft_critical_section_holds(f.t, low));
    }

    /* The same mutex twice is one mutex: locked once, unlocked once (a second unlock is fatal). */
    ft_critical_section2 same;
    ft_critical_section2_begin(f.t, &same, low, low);
    CHECK(ft_mutex_is_locked(low));
    CHECK(ft_critical_section_holds(f.t, low));
    CHECK(!ft_mutex_is_locked(high));
    CHECK(!ft_critical_section_holds(f.t, high));
    ft_critical_section2_end(f.t, &same);
    CHECK(!ft_mutex_is_locked(low));
    CHECK(is_free(low));

    /* A two-mutex section nested in a one-mutex section on one of its mutexes: inside it both are
     * locked (however it gets there: it must not wait for itself forever), and after it ends the
     * outer section holds its mutex again and the other one is free. */
    ft_critical_section outer;
    ft_critical_section2 inner;
    ft_critical_section_begin(f.t, &outer, low);
    ft_critical_section2_begin(f.t, &inner, high, low);
    CHECK(ft_mutex_is_locked(low));
    CHECK(ft_mutex_is_locked(high));
    CHECK(ft_critical_section_holds(f.t, low));
    CHECK(ft_critical_section_holds(f.t, high));
    ft_critical_section2_end(f.t, &inner);
    CHECK(ft_mutex_is_locked(low));
    CHECK(!ft_mutex_is_locked(high));
    CHECK(ft_critical_section_holds(f.t, low));
    ft_critical_section_end(f.t, &outer);
    CHECK(!ft_mutex_is_locked(low));

    fixture_teardown(f);
}

TEST(detach_suspends_every_section_and_attach_resumes_the_top)
{
    fixture f = fixture_setup();
    ft_mutex a = {0}, b = {0}, c = {0};

    /* Two one-mutex sections. */
    ft_critical_section outer, inner;
    ft_critical_section_begin(f.t, &outer, &a);
    ft_critical_section_begin(f.t, &inner, &b);
    ft_detach(f.t);
    CHECK(!ft_mutex_is_locked(&a));
    CHECK(!ft_mutex_is_locked(&b));
    CHECK(is_free(&a)); /* really released: anyone may take them meanwhile */
    CHECK(is_free(&b));
    ft_attach(f.t);
    CHECK(ft_mutex_is_locked(&b));  /* the top one is locked again */
    CHECK(!ft_mutex_is_locked(&a)); /* the outer one only when it is the top again */
    CHECK(ft_critical_section_holds(f.t, &b));
    ft_critical_section_end(f.t, &inner);
    CHECK(!ft_mutex_is_locked(&b));
    CHECK(ft_mutex_is_locked(&a)); /* resumed by the end of the inner one */
    CHECK(ft_critical_section_holds(f.t, &a));
    ft_critical_section_end(f.t, &outer);
    CHECK(!ft_mutex_is_locked(&a));

    /* A two-mutex section on top of a one-mutex section, detached twice over. */
    ft_critical_section2 top;
    ft_critical_section_begin(f.t, &outer, &a);
    ft_critical_section2_begin(f.t, &top, &c, &b);
    for (int i = 0; i < 2; i++) {
        ft_detach(f.t);
        CHECK(!ft_mutex_is_locked(&a));
        CHECK(!ft_mutex_is_locked(&b));
        CHECK(!ft_mutex_is_locked(&c));
        ft_attach(f.t);
        CHECK(!ft_mutex_is_locked(&a));
        CHECK(ft_mutex_is_locked(&b));
        CHECK(ft_mutex_is_locked(&c));
    }
    ft_critical_section2_end(f.t, &top);
    CHECK(!ft_mutex_is_locked(&b));
    CHECK(!ft_mutex_is_locked(&c));
    CHECK(ft_mutex_is_locked(&a));
    ft_critical_section_end(f.t, &outer);
    CHECK(!ft_mutex_is_locked(&a));

    /* A no-op re-entry on top: the record that really holds the mutex is resumed. */
    ft_critical_section_begin(f.t, &outer, &a);
    ft_critical_section_begin(f.t, &inner, &a);
    ft_detach(f.t);
    CHECK(!ft_mutex_is_locked(&a));
    ft_attach(f.t);
    CHECK(ft_mutex_is_locked(&a));
    ft_critical_section_end(f.t, &inner);
    CHECK(ft_mutex_is_locked(&a));
    ft_critical_section_end(f.t, &outer);
    CHECK(!ft_mutex_is_locked(&a));

    /* Three deep: each end resumes exactly the next one out. */
    ft_critical_section s1, s2, s3;
    ft_critical_section_begin(f.t, &s1, &a);
    ft_critical_section_begin(f.t, &s2, &b);
    ft_critical_section_begin(f.t, &s3, &c);
    ft_detach(f.t);
    ft_attach(f.t);
    CHECK(!ft_mutex_is_locked(&a));
    CHECK(!ft_mutex_is_locked(&b));
    CHECK(ft_mutex_is_locked(&c));
    ft_critical_section_end(f.t, &s3);
    CHECK(!ft_mutex_is_locked(&a));
    CHECK(ft_mutex_is_locked(&b));
    CHECK(!ft_mutex_is_locked(&c));
    ft_critical_section_end(f.t, &s2);
    CHECK(ft_mutex_is_locked(&a));
    CHECK(!ft_mutex_is_locked(&b));
    ft_critical_section_end(f.t, &s1);
    CHECK(!ft_mutex_is_locked(&a));

    fixture_teardown(f);
}

/* ---- a thread blocked in begin has released its outer sections ------------------------------------ */

typedef struct blocked_begin {
    ft_runtime *rt;
    ft_mutex outer, inner;
    _Atomic int stage; /* 1: holds outer, beginning inner; 2: inner begun */
} blocked_begin;

static void *blocked_begin_main(void *arg)
{
    blocked_begin *b = arg;
    ft_thread *t = ft_thread_start(b->rt);
    CHECK_THREAD(t != NULL);
    ft_critical_section outer, inner;
    ft_critical_section_begin(t, &outer, &b->outer);
    CHECK_THREAD(ft_mutex_is_locked(&b->outer));
    atomic_store(&b->stage, 1);
    ft_critical_section_begin(t, &inner, &b->inner); /* the test thread holds it */
    atomic_store(&b->stage, 2);
    CHECK_THREAD(ft_mutex_is_locked(&b->inner));
    CHECK_THREAD(ft_critical_section_holds(t, &b->inner));
    ft_critical_section_end(t, &inner);
    /* The outer section was suspended while waiting and is locked again now. */
    CHECK_THREAD(ft_mutex_is_locked(&b->outer));
    CHECK_THREAD(ft_critical_section_holds(t, &b->outer));
    ft_critical_section_end(t, &outer);
    ft_thread_stop(t);
    return NULL;
}

TEST(blocking_begin_releases_outer_sections)
{
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    blocked_begin b;
    memset(&b, 0, sizeof b);
    b.rt = rt;
    ft_mutex_lock(&b.inner); /* this thread is outside the runtime */
    pthread_t thread;
    pthread_create(&thread, NULL, blocked_begin_main, &b);
    AWAIT(NULL, atomic_load(&b.stage) == 1);
    CHECK_THREAD(atomic_load(&b.stage) == 1);

    /* Once it waits for inner, it holds nothing: the outer mutex can be taken. */
    bool took_outer = false;
    AWAIT(NULL, (took_outer = ft_mutex_trylock(&b.outer)));
    CHECK_THREAD(took_outer);
    CHECK_THREAD(atomic_load(&b.stage) == 1); /* still waiting: inner is ours */
    if (took_outer)
        ft_mutex_unlock(&b.outer);
    ft_mutex_unlock(&b.inner);
    pthread_join(thread, NULL);
    CHECK_THREAD(atomic_load(&b.stage) == 2);
    CHECK_THREAD(!ft_mutex_is_locked(&b.outer));
    CHECK_THREAD(!ft_mutex_is_locked(&b.inner));
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- a two-mutex section whose second mutex is handed off ----------------------------------------- */

typedef struct pair_waiter {
    ft_runtime *rt;
    ft_mutex pair[2];          /* pair[0] has the lower address */
    _Atomic bool detached;     /* resume variant: the section is suspended */
    _Atomic bool may_attach;   /* resume variant: the test thread holds the high mutex now */
    _Atomic bool has_both;     /* its begin (or attach) returned with both mutexes */
} pair_waiter;

/* Begins a section on the pair while the test thread holds the high mutex. */
static void *pair_beginner_main(void *arg)
{
    pair_waiter *p = arg;
    ft_thread *t = ft_thread_start(p->rt);
    CHECK_THREAD(t != NULL);
    ft_critical_section2 cs;
    ft_critical_section2_begin(t, &cs, &p->pair[1], &p->pair[0]);
    atomic_store(&p->has_both, true);
    CHECK_THREAD(ft_mutex_is_locked(&p->pair[0]) && ft_mutex_is_locked(&p->pair[1]));
    ft_critical_section2_end(t, &cs);
    ft_thread_stop(t);
    return NULL;
}

/* Holds a section on the pair, detaches, and attaches again (re-locking the pair) while the test
 * thread holds the high mutex. */
static void *pair_resumer_main(void *arg)
{
    pair_waiter *p = arg;
    ft_thread *t = ft_thread_start(p->rt);
    CHECK_THREAD(t != NULL);
    ft_critical_section2 cs;
    ft_critical_section2_begin(t, &cs, &p->pair[0], &p->pair[1]);
    ft_detach(t);
    atomic_store(&p->detached, true);
    AWAIT(NULL, atomic_load(&p->may_attach));
    ft_attach(t);
    atomic_store(&p->has_both, true);
    CHECK_THREAD(ft_mutex_is_locked(&p->pair[0]) && ft_mutex_is_locked(&p->pair[1]));
    ft_critical_section2_end(t, &cs);
    ft_thread_stop(t);
    return NULL;
}

/* Outside every runtime: takes low, then high, in address order like any careful lock user. A
 * limit on the wait for high turns a deadlock into a failure (and lets the waiter go on). */
typedef struct ordered_user {
    pair_waiter *pair;
    _Atomic bool has_low;
    _Atomic bool timed_out;
} ordered_user;

static void *ordered_user_main(void *arg)
{
    ordered_user *u = arg;
    ft_mutex *low = &u->pair->pair[0], *high = &u->pair->pair[1];
    ft_mutex_lock(low);
    atomic_store(&u->has_low, true);
    if (ft_mutex_lock_timed(high, 5000 * FT_NS_PER_MS, FT_LOCK_DONT_DETACH) == FT_OK)
        ft_mutex_unlock(high);
    else
        atomic_store(&u->timed_out, true);
    ft_mutex_unlock(low);
    return NULL;
}

/* The test thread (outside the runtime) holds high, and W waits for it inside a two-mutex section
 * on (low, high). Then U, a plain user, locks low and high in address order, and the test thread
 * lets high go after W has waited past the 1 ms fairness limit, so the unlock hands high to W (the
 * oldest waiter) before W may hold low. Whatever W does (wait holding nothing, or keep low while
 * waiting for high), it must never wait for low while it holds high: with U holding low and
 * waiting for high, that is a deadlock. */
static void check_ordered_user_is_not_deadlocked(pair_waiter *p)
{
    ft_mutex *high = &p->pair[1];
    AWAIT(NULL, atomic_load(&high->bits) & FT_MUTEX_HAS_PARKED);
    CHECK_THREAD(atomic_load(&high->bits) & FT_MUTEX_HAS_PARKED);
    int64_t parked_at = now_ns();
    ordered_user u;
    memset(&u, 0, sizeof u);
    u.pair = p;
    pthread_t user;
    pthread_create(&user, NULL, ordered_user_main, &u);
    /* If W holds nothing while it waits, U gets low now; if W kept low, U waits for it. */
    for (int64_t start = now_ns(); !atomic_load(&u.has_low) && now_ns() - start < 200 * FT_NS_PER_MS;)
        sched_yield();
    while (now_ns() - parked_at < 3 * FT_NS_PER_MS)
        sched_yield();
    ft_mutex_unlock(high);
    pthread_join(user, NULL);
    CHECK_THREAD(!atomic_load(&u.timed_out));
}

TEST(two_mutex_begin_keeps_address_order_after_a_handoff)
{
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    pair_waiter p;
    memset(&p, 0, sizeof p);
    p.rt = rt;
    ft_mutex_lock(&p.pair[1]);
    pthread_t thread;
    pthread_create(&thread, NULL, pair_beginner_main, &p);
    check_ordered_user_is_not_deadlocked(&p);
    pthread_join(thread, NULL);
    CHECK_THREAD(atomic_load(&p.has_both));
    CHECK_THREAD(!ft_mutex_is_locked(&p.pair[0]) && !ft_mutex_is_locked(&p.pair[1]));
    ft_status freed = ft_runtime_free(rt);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(freed, FT_OK);
}

TEST(two_mutex_resume_keeps_address_order_after_a_handoff)
{
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    pair_waiter p;
    memset(&p, 0, sizeof p);
    p.rt = rt;
    pthread_t thread;
    pthread_create(&thread, NULL, pair_resumer_main, &p);
    AWAIT(NULL, atomic_load(&p.detached));
    CHECK_THREAD(atomic_load(&p.detached));
    ft_mutex_lock(&p.pair[1]); /* released by the detach */
    atomic_store(&p.may_attach, true);
    check_ordered_user_is_not_deadlocked(&p);
    pthread_join(thread, NULL);
    CHECK_THREAD(atomic_load(&p.has_both));
    CHECK_THREAD(!ft_mutex_is_locked(&p.pair[0]) && !ft_mutex_is_locked(&p.pair[1]));
    ft_status freed = ft_runtime_free(rt);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(freed, FT_OK);
}

/* ---- transfers between accounts -------------------------------------------------------------------- */

enum { ACCOUNTS = 3, INITIAL_BALANCE = 1000 };

typedef struct account {
    ft_mutex mutex;
    int64_t balance; /* guarded by mutex */
} account;

typedef struct bank {
    ft_runtime *rt;
    account accounts[ACCOUNTS];
    int transfers_per_teller;
    _Atomic bool quit; /* tellers run until told, when transfers_per_teller is 0 */
    _Atomic int tellers_started;
    _Atomic(uint64_t) transfers_done;
    pthread_barrier_t start_line; /* so that the tellers really overlap */
} bank;

typedef struct teller {
    bank *bank;
    uint64_t rng;
    pthread_t os_thread;
    int64_t last_aside_balance; /* read in an outer section resumed after a transfer */
} teller;

static uint32_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (uint32_t)(*state >> 16);
}

/* Move money between two accounts, naming them in either order; sometimes from inside an outer
 * section on the third account, which a contended inner begin suspends and its end resumes. */
static void *teller_main(void *arg)
{
    teller *me = arg;
    bank *bk = me->bank;
    ft_thread *t = ft_thread_start(bk->rt);
    CHECK_THREAD(t != NULL);
    if (!t) {
        pthread_barrier_wait(&bk->start_line);
        return NULL;
    }
    barrier_detached(t, &bk->start_line);
    atomic_fetch_add(&bk->tellers_started, 1);
    for (int n = 0; bk->transfers_per_teller ? n < bk->transfers_per_teller
                                             : !atomic_load_explicit(&bk->quit, memory_order_relaxed);
         n++) {
        uint32_t r = next_random(&me->rng);
        int from = (int)(r % ACCOUNTS);
        int to = (int)((from + 1 + (r >> 8) % (ACCOUNTS - 1)) % ACCOUNTS);
        int third = ACCOUNTS - from - to; /* 0 + 1 + 2 = 3 */
        int64_t amount = (int64_t)((r >> 12) % 50) + 1;
        bool nested = (r >> 20) % 4 == 0;
        account *src = &bk->accounts[from], *dst = &bk->accounts[to], *aside = &bk->accounts[third];

        ft_critical_section outer;
        if (nested)
            ft_critical_section_begin(t, &outer, &aside->mutex);
        ft_critical_section2 cs;
        if ((r >> 24) & 1)
            ft_critical_section2_begin(t, &cs, &src->mutex, &dst->mutex);
        else
            ft_critical_section2_begin(t, &cs, &dst->mutex, &src->mutex);
        CHECK_THREAD(ft_mutex_is_locked(&src->mutex) && ft_mutex_is_locked(&dst->mutex));
        CHECK_THREAD(ft_critical_section_holds(t, &src->mutex));
        CHECK_THREAD(ft_critical_section_holds(t, &dst->mutex));
        int64_t sum = src->balance + dst->balance;
        src->balance -= amount;
        for (int i = 0; i < 32; i++) /* hold the pair a little while: tellers collide often */
            ft_cpu_relax();
        dst->balance += amount;
        CHECK_THREAD(src->balance + dst->balance == sum);
        ft_critical_section2_end(t, &cs);
        if (nested) {
            CHECK_THREAD(ft_mutex_is_locked(&aside->mutex));
            CHECK_THREAD(ft_critical_section_holds(t, &aside->mutex));
            /* A guarded read: TSan sees a race if the resumed section did not really lock. */
            me->last_aside_balance = aside->balance;
            ft_critical_section_end(t, &outer);
        }
        atomic_fetch_add_explicit(&bk->transfers_done, 1, memory_order_relaxed);
        ft_safepoint(t); /* only between transfers, so a stopped world sees whole transfers */
        if (n % 16 == 0)
            sched_yield(); /* more threads than cores: let a parked waiter get a core soon */
    }
    ft_thread_stop(t);
    return NULL;
}

static void bank_open(bank *bk, ft_runtime *rt, int transfers_per_teller)
{
    memset(bk, 0, sizeof *bk);
    bk->rt = rt;
    bk->transfers_per_teller = transfers_per_teller;
    for (int i = 0; i < ACCOUNTS; i++)
        bk->accounts[i].balance = INITIAL_BALANCE;
}

static void tellers_launch(bank *bk, teller *tellers, int count)
{
    pthread_barrier_init(&bk->start_line, NULL, (unsigned)count);
    for (int i = 0; i < count; i++) {
        tellers[i].bank = bk;
        tellers[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        pthread_create(&tellers[i].os_thread, NULL, teller_main, &tellers[i]);
    }
}

static void tellers_join(bank *bk, teller *tellers, int count)
{
    for (int i = 0; i < count; i++)
        pthread_join(tellers[i].os_thread, NULL);
    pthread_barrier_destroy(&bk->start_line);
}

static int64_t bank_total(bank *bk)
{
    int64_t total = 0;
    for (int i = 0; i < ACCOUNTS; i++)
        total += bk->accounts[i].balance;
    return total;
}

TEST(transfers_conserve_the_total)
{
    enum { TELLERS = 4, TRANSFERS = 20000 };
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    bank bk;
    bank_open(&bk, rt, TRANSFERS);
    teller tellers[TELLERS];
    tellers_launch(&bk, tellers, TELLERS);
    tellers_join(&bk, tellers, TELLERS);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(bank_total(&bk), ACCOUNTS * INITIAL_BALANCE);
    for (int i = 0; i < ACCOUNTS; i++)
        CHECK(!ft_mutex_is_locked(&bk.accounts[i].mutex));
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* An attached requester audits the bank while the world is stopped, through critical sections that
 * do not lock; between stops it makes transfers of its own. */
TEST(audits_under_stop_the_world_during_transfers)
{
    enum { TELLERS = 3, AUDITS = 150 };
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    bank bk;
    bank_open(&bk, rt, 0);
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    teller tellers[TELLERS];
    tellers_launch(&bk, tellers, TELLERS);
    AWAIT(t, atomic_load(&bk.tellers_started) == TELLERS);
    CHECK_THREAD(atomic_load(&bk.tellers_started) == TELLERS);

    for (int audit = 0; audit < AUDITS && thread_failures() == failures; audit++) {
        ft_stop_the_world(rt);
        int64_t total = 0;
        for (int i = 0; i < ACCOUNTS; i++) {
            ft_critical_section cs;
            ft_critical_section_begin(t, &cs, &bk.accounts[i].mutex);
            total += bk.accounts[i].balance;
            ft_critical_section_end(t, &cs);
        }
        ft_critical_section2 both;
        ft_critical_section2_begin(t, &both, &bk.accounts[2].mutex, &bk.accounts[0].mutex);
        CHECK_THREAD(bk.accounts[0].balance + bk.accounts[1].balance + bk.accounts[2].balance ==
                     total);
        ft_critical_section2_end(t, &both);
        CHECK_THREAD(total == ACCOUNTS * INITIAL_BALANCE);
        ft_start_the_world(rt);

        /* Back to normal: the requester's sections lock again. */
        ft_critical_section2 cs;
        ft_critical_section2_begin(t, &cs, &bk.accounts[audit % ACCOUNTS].mutex,
                                   &bk.accounts[(audit + 1) % ACCOUNTS].mutex);
        CHECK_THREAD(ft_mutex_is_locked(&bk.accounts[audit % ACCOUNTS].mutex));
        bk.accounts[audit % ACCOUNTS].balance -= 7;
        bk.accounts[(audit + 1) % ACCOUNTS].balance += 7;
        ft_critical_section2_end(t, &cs);
        /* Let the tellers move on before the next audit, or back-to-back stops would starve them. */
        uint64_t done = atomic_load_explicit(&bk.transfers_done, memory_order_relaxed);
        AWAIT(t, atomic_load_explicit(&bk.transfers_done, memory_order_relaxed) >= done + 2 * TELLERS);
    }
    atomic_store(&bk.quit, true);
    tellers_join(&bk, tellers, TELLERS);
    ft_thread_stop(t);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(bank_total(&bk), ACCOUNTS * INITIAL_BALANCE);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- sections of the stop-the-world requester ------------------------------------------------------ */

typedef struct outsider_holder {
    ft_mutex *mutex;
    _Atomic bool holding;
    _Atomic bool release;
    _Atomic bool gave_up_waiting; /* released on its own after the time limit: the requester hung */
} outsider_holder;

/* Outside every runtime: holds the mutex until told, or until the time limit. */
static void *outsider_holder_main(void *arg)
{
    outsider_holder *h = arg;
    ft_mutex_lock(h->mutex);
    atomic_store(&h->holding, true);
    AWAIT(NULL, atomic_load(&h->release));
    if (!atomic_load(&h->release))
        atomic_store(&h->gave_up_waiting, true);
    ft_mutex_unlock(h->mutex);
    return NULL;
}

TEST(requester_sections_do_not_lock_while_the_world_is_stopped)
{
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    ft_mutex free_mutex = {0}, held_mutex = {0}, other = {0};

    /* Whether a free mutex is taken during the stop is not observable by anyone (nobody else
     * runs); what matters is that begin and end balance: an end never unlocks what its begin did
     * not lock (that would be fatal, or would steal another thread's mutex). */
    ft_stop_the_world(rt);
    CHECK(ft_world_is_stopped(rt));
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &free_mutex);
    ft_critical_section_end(t, &cs);
    CHECK(!ft_mutex_is_locked(&free_mutex));
    ft_critical_section2 cs2;
    ft_critical_section2_begin(t, &cs2, &other, &free_mutex);
    ft_critical_section2_end(t, &cs2);
    CHECK(!ft_mutex_is_locked(&free_mutex));
    CHECK(!ft_mutex_is_locked(&other));
    ft_start_the_world(rt);

    ft_critical_section_begin(t, &cs, &free_mutex);
    CHECK(ft_mutex_is_locked(&free_mutex));
    ft_critical_section_end(t, &cs);
    CHECK(!ft_mutex_is_locked(&free_mutex));

    /* A mutex held by a thread outside the runtime, which a stop does not stop: the requester's
     * section must not wait for it. */
    outsider_holder h;
    memset(&h, 0, sizeof h);
    h.mutex = &held_mutex;
    pthread_t holder;
    pthread_create(&holder, NULL, outsider_holder_main, &h);
    AWAIT(t, atomic_load(&h.holding));
    CHECK_THREAD(atomic_load(&h.holding));
    ft_stop_the_world(rt);
    ft_critical_section_begin(t, &cs, &held_mutex);
    CHECK_THREAD(!atomic_load(&h.gave_up_waiting));
    ft_critical_section_end(t, &cs);
    CHECK_THREAD(ft_mutex_is_locked(&held_mutex)); /* still the holder's */
    /* Two mutexes, one free and one held: neither waited for nor left locked by the requester. */
    ft_critical_section2_begin(t, &cs2, &held_mutex, &free_mutex);
    CHECK_THREAD(!atomic_load(&h.gave_up_waiting));
    ft_critical_section2_end(t, &cs2);
    CHECK_THREAD(ft_mutex_is_locked(&held_mutex));
    CHECK_THREAD(!ft_mutex_is_locked(&free_mutex));
    ft_critical_section_begin(t, &cs, &free_mutex); /* nested: outer free, inner held */
    ft_critical_section2_begin(t, &cs2, &free_mutex, &held_mutex);
    CHECK_THREAD(!atomic_load(&h.gave_up_waiting));
    ft_critical_section2_end(t, &cs2);
    ft_critical_section_end(t, &cs);
    CHECK_THREAD(ft_mutex_is_locked(&held_mutex));
    CHECK_THREAD(!ft_mutex_is_locked(&free_mutex));
    ft_start_the_world(rt);
    atomic_store(&h.release, true);
    pthread_join(holder, NULL);
    CHECK_THREAD(!atomic_load(&h.gave_up_waiting));
    CHECK_THREAD(!ft_mutex_is_locked(&held_mutex));

    ft_thread_stop(t);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* gh-144513: a mutex handed off to a thread that the stop has suspended. W waits for M, held by H
 * (outside the runtime, so never stopped). The requester stops the world, which suspends the parked
 * W; once W has waited more than the 1 ms fairness limit, H unlocks M and the unlock hands M to W,
 * which owns it but cannot run until the restart. The requester's section on M must not wait. */
typedef struct handoff {
    ft_runtime *rt;
    ft_mutex mutex;
    _Atomic bool holder_holding, holder_release, holder_released;
    _Atomic bool waiter_began; /* W's begin returned */
} handoff;

static void *handoff_holder_main(void *arg)
{
    handoff *h = arg;
    ft_mutex_lock(&h->mutex);
    atomic_store(&h->holder_holding, true);
    AWAIT(NULL, atomic_load(&h->holder_release));
    CHECK_THREAD(atomic_load(&h->holder_release));
    ft_mutex_unlock(&h->mutex);
    atomic_store(&h->holder_released, true);
    return NULL;
}

static void *handoff_waiter_main(void *arg)
{
    handoff *h = arg;
    ft_thread *t = ft_thread_start(h->rt);
    CHECK_THREAD(t != NULL);
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &h->mutex);
    atomic_store(&h->waiter_began, true);
    CHECK_THREAD(ft_mutex_is_locked(&h->mutex));
    CHECK_THREAD(ft_critical_section_holds(t, &h->mutex));
    ft_critical_section_end(t, &cs);
    ft_thread_stop(t);
    return NULL;
}

TEST(requester_section_on_a_mutex_handed_to_a_suspended_thread)
{
    int failures = thread_failures();
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    handoff h;
    memset(&h, 0, sizeof h);
    h.rt = rt;
    pthread_t holder, waiter;
    pthread_create(&holder, NULL, handoff_holder_main, &h);
    AWAIT(t, atomic_load(&h.holder_holding));
    CHECK_THREAD(atomic_load(&h.holder_holding));
    pthread_create(&waiter, NULL, handoff_waiter_main, &h);
    /* W has announced itself as parked on M. */
    AWAIT(t, atomic_load(&h.mutex.bits) & FT_MUTEX_HAS_PARKED);
    CHECK_THREAD(atomic_load(&h.mutex.bits) & FT_MUTEX_HAS_PARKED);

    /* The stop completes only once W is detached, i.e. parked; waiting past the fairness limit
     * after that makes H's unlock a hand-off (this wait decides which path is tested, never the
     * outcome). */
    ft_stop_the_world(rt);
    int64_t stopped_at = now_ns();
    while (now_ns() - stopped_at < 3 * FT_NS_PER_MS)
        sched_yield();
    atomic_store(&h.holder_release, true);
    AWAIT(NULL, atomic_load(&h.holder_released));
    CHECK_THREAD(atomic_load(&h.holder_released));
    bool handed_off = ft_mutex_is_locked(&h.mutex);

    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &h.mutex); /* deadlocks if it tries to lock */
    CHECK_THREAD(!atomic_load(&h.waiter_began)); /* W cannot run until the restart */
    ft_critical_section_end(t, &cs);
    if (handed_off)
        CHECK_THREAD(ft_mutex_is_locked(&h.mutex)); /* the end left W's mutex alone */
    else
        printf("note: the unlock did not hand the mutex off this time\n");
    ft_start_the_world(rt);

    pthread_join(waiter, NULL);
    pthread_join(holder, NULL);
    CHECK_THREAD(atomic_load(&h.waiter_began));
    CHECK_THREAD(!ft_mutex_is_locked(&h.mutex));
    ft_thread_stop(t);
    CHECK_EQ(thread_failures(), failures);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

int main(void)
{
    RUN(begin_and_end_lock_and_unlock);
    RUN(nested_sections_on_two_mutexes);
    RUN(reentry_on_a_held_mutex_is_a_no_op);
    RUN(two_mutex_sections_lock_in_address_order);
    RUN(detach_suspends_every_section_and_attach_resumes_the_top);
    RUN(blocking_begin_releases_outer_sections);
    RUN(two_mutex_begin_keeps_address_order_after_a_handoff);
    RUN(two_mutex_resume_keeps_address_order_after_a_handoff);
    RUN(transfers_conserve_the_total);
    RUN(audits_under_stop_the_world_during_transfers);
    RUN(requester_sections_do_not_lock_while_the_world_is_stopped);
    RUN(requester_section_on_a_mutex_handed_to_a_suspended_thread);
    return harness_done();
}
