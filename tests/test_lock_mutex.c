/* tests/test_lock_mutex.c: ft_mutex's byte protocol, fairness hand-off, timeouts, misuse, and how a
 * blocked mutex waiter behaves inside a runtime.
 *
 * The byte's values (LOCKED = 1, HAS_PARKED = 2) are part of the API, so the tests watch the byte
 * itself. A test never sleeps to let another thread get somewhere: it spins on an atomic with a
 * deadline, so a bug fails a check instead of hanging. To know that a waiter is really in the parking
 * lot, not merely about to park, the tests read the system call it is blocked in from /proc: once the
 * byte says HAS_PARKED and the waiter waits on a futex word in its own stack, it is parked. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>

#include "ftrt.h"
#include "test_util.h"

static uint8_t bits_of(ft_mutex *m)
{
    return atomic_load_explicit(&m->bits, memory_order_acquire);
}

/* ---- the byte through lock and unlock ------------------------------------------------------ */

TEST(uncontended_bits)
{
    ft_mutex m = {0};
    CHECK_EQ(bits_of(&m), FT_MUTEX_UNLOCKED);
    CHECK(!ft_mutex_is_locked(&m));
    ft_mutex_lock(&m);
    CHECK_EQ(bits_of(&m), FT_MUTEX_LOCKED);
    CHECK(ft_mutex_is_locked(&m));
    ft_mutex_unlock(&m);
    CHECK_EQ(bits_of(&m), FT_MUTEX_UNLOCKED);

    CHECK(ft_mutex_trylock(&m));
    CHECK_EQ(bits_of(&m), FT_MUTEX_LOCKED);
    CHECK(!ft_mutex_trylock(&m));
    CHECK_EQ(bits_of(&m), FT_MUTEX_LOCKED);
    ft_mutex_unlock(&m);
    CHECK_EQ(bits_of(&m), FT_MUTEX_UNLOCKED);
}

/* One waiter thread: it publishes its identity, locks `mutex` (with lock_ex and `flags`, or with
 * ft_mutex_lock when use_lock_ex is false), reports that it owns it, holds it until told to release,
 * and unlocks. With a runtime it takes part in it as an attached thread, and calls ft_safepoint right
 * after it gets the mutex. */
typedef struct waiter {
    ft_mutex *mutex;
    ft_runtime *runtime;
    bool use_lock_ex;
    ft_lock_flags flags;
    thread_identity id;
    atomic_bool owns;
    atomic_bool release;
    _Atomic ft_status lock_status;
} waiter;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    ft_thread *thread = NULL;
    if (w->runtime) {
        thread = ft_thread_start(w->runtime);
        CHECK_THREAD(thread != NULL);
        if (!thread)
            return NULL;
    }
    publish_identity(&w->id, __builtin_frame_address(0));
    ft_status status = FT_OK;
    if (w->use_lock_ex)
        status = ft_mutex_lock_timed(w->mutex, FT_FOREVER, w->flags);
    else
        ft_mutex_lock(w->mutex);
    atomic_store(&w->lock_status, status);
    atomic_store(&w->owns, true);
    if (thread)
        ft_safepoint(thread);
    WAIT_FOR_MAIN(atomic_load(&w->release));
    ft_mutex_unlock(w->mutex);
    if (thread)
        ft_thread_stop(thread);
    return NULL;
}

/* Whether w has set HAS_PARKED on the held mutex and is parked. */
static bool waiter_is_parked(waiter *w)
{
    return bits_of(w->mutex) == (FT_MUTEX_LOCKED | FT_MUTEX_HAS_PARKED) && thread_is_parked(&w->id);
}

static ft_mutex contended_mutex;
static waiter contended_waiter;

TEST(contended_byte_reads_locked_and_parked)
{
    ft_mutex *m = &contended_mutex;
    contended_waiter = (waiter){.mutex = m};
    ft_mutex_lock(m);
    pthread_t thread;
    start_thread(&thread, waiter_main, &contended_waiter);
    SPIN_UNTIL(waiter_is_parked(&contended_waiter));
    CHECK_EQ(bits_of(m), FT_MUTEX_LOCKED | FT_MUTEX_HAS_PARKED);
    CHECK(waiter_is_parked(&contended_waiter));
    CHECK(!atomic_load(&contended_waiter.owns));
    ft_mutex_unlock(m);
    SPIN_UNTIL(atomic_load(&contended_waiter.owns));
    CHECK(atomic_load(&contended_waiter.owns));
    CHECK(ft_mutex_is_locked(m));
    atomic_store(&contended_waiter.release, true);
    join_thread(thread);
    /* Nobody waits any more: the last unlock leaves the byte clean. */
    CHECK_EQ(bits_of(m), FT_MUTEX_UNLOCKED);
}

/* ---- mutual exclusion ---------------------------------------------------------------------- */

#define COUNTER_THREADS 5
#define COUNTER_INCREMENTS 10000

static ft_mutex counter_mutex;
static long counter_value; /* plain: only ever touched under counter_mutex */
static pthread_barrier_t counter_start;

static void *counter_main(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&counter_start);
    for (int i = 0; i < COUNTER_INCREMENTS; i++) {
        ft_mutex_lock(&counter_mutex);
        counter_value++;
        ft_mutex_unlock(&counter_mutex);
    }
    return NULL;
}

TEST(counter_under_contention)
{
    counter_value = 0;
    CHECK_EQ(pthread_barrier_init(&counter_start, NULL, COUNTER_THREADS), 0);
    pthread_t threads[COUNTER_THREADS];
    for (int i = 0; i < COUNTER_THREADS; i++)
        start_thread(&threads[i], counter_main, NULL);
    for (int i = 0; i < COUNTER_THREADS; i++)
        join_thread(threads[i]);
    pthread_barrier_destroy(&counter_start);
    CHECK_EQ(counter_value, COUNTER_THREADS * COUNTER_INCREMENTS);
    CHECK_EQ(bits_of(&counter_mutex), FT_MUTEX_UNLOCKED);
}

/* ---- fairness: hand-off to a waiter parked for more than 1 ms ------------------------------- */

static ft_mutex handoff_mutex;
static waiter handoff_waiter;

TEST(waiter_parked_over_1ms_gets_lock_handed_off)
{
    ft_mutex *m = &handoff_mutex;
    handoff_waiter = (waiter){.mutex = m};
    ft_mutex_lock(m);
    pthread_t thread;
    start_thread(&thread, waiter_main, &handoff_waiter);
    SPIN_UNTIL(waiter_is_parked(&handoff_waiter));
    CHECK(waiter_is_parked(&handoff_waiter));
    /* The waiter stamped its park time before it fell asleep, so 2 ms from now it has waited > 1 ms. */
    let_time_pass(2 * FT_NS_PER_MS);
    ft_mutex_unlock(m);
    /* Handed off: the byte never became free, so the unlocking thread cannot take it back. */
    CHECK(!ft_mutex_trylock(m));
    CHECK(ft_mutex_is_locked(m));
    SPIN_UNTIL(atomic_load(&handoff_waiter.owns));
    CHECK(atomic_load(&handoff_waiter.owns));
    CHECK(!ft_mutex_trylock(m));
    atomic_store(&handoff_waiter.release, true);
    join_thread(thread);
    CHECK_EQ(bits_of(m), FT_MUTEX_UNLOCKED);
}

/* Both sides of the rule, decided exactly: the waiter is attached to a runtime, so it is detached
 * while parked, and the main thread stops the world before it unlocks. A woken waiter must attach
 * again before it touches the byte, and attaching waits for the restart, so the byte right after the
 * unlock shows the unlocker's decision alone: LOCKED means handed off, not LOCKED means freed. Which
 * decision is due comes from the clock, honestly: the waiter notes the time just before it starts to
 * lock (its 1 ms starts later), and the main thread notes when it saw the waiter parked (its 1 ms
 * started earlier). Rounds that fall between the two bounds assert nothing. */
#define DECISION_ROUNDS 10

static ft_mutex decision_mutex;
static ft_runtime *decision_runtime;
static thread_identity decision_waiter_id;
static atomic_int decision_round_go, decision_round_owned, decision_round_release;
static atomic_llong decision_lock_started;

static void *decision_waiter_main(void *arg)
{
    (void)arg;
    ft_thread *thread = ft_thread_start(decision_runtime);
    CHECK_THREAD(thread != NULL);
    if (!thread)
        return NULL;
    publish_identity(&decision_waiter_id, __builtin_frame_address(0));
    for (int round = 1; round <= DECISION_ROUNDS; round++) {
        WAIT_FOR_MAIN(atomic_load(&decision_round_go) == round);
        atomic_store(&decision_lock_started, now_ns());
        ft_mutex_lock(&decision_mutex);
        atomic_store(&decision_round_owned, round);
        WAIT_FOR_MAIN(atomic_load(&decision_round_release) == round);
        ft_mutex_unlock(&decision_mutex);
    }
    ft_thread_stop(thread);
    return NULL;
}

TEST(handoff_only_after_1ms_seen_with_world_stopped)
{
    ft_mutex *m = &decision_mutex;
    decision_runtime = new_runtime(NULL);
    forget_identity(&decision_waiter_id);
    atomic_store(&decision_round_go, 0);
    atomic_store(&decision_round_owned, 0);
    atomic_store(&decision_round_release, 0);
    pthread_t thread;
    start_thread(&thread, decision_waiter_main, NULL);
    int early_rounds = 0, late_rounds = 0;
    for (int round = 1; round <= DECISION_ROUNDS; round++) {
        ft_mutex_lock(m);
        atomic_store(&decision_round_go, round);
        SPIN_UNTIL(bits_of(m) == (FT_MUTEX_LOCKED | FT_MUTEX_HAS_PARKED) &&
                   thread_is_parked(&decision_waiter_id));
        CHECK_EQ(bits_of(m), FT_MUTEX_LOCKED | FT_MUTEX_HAS_PARKED);
        CHECK(thread_is_parked(&decision_waiter_id));
        int64_t parked_seen = now_ns();
        if (round % 2 == 0)
            let_time_pass(2 * FT_NS_PER_MS);
        ft_stop_the_world(decision_runtime); /* the parked waiter is detached: this returns */
        int64_t unlock_start = now_ns();
        ft_mutex_unlock(m);
        int64_t unlock_end = now_ns();
        uint8_t after = bits_of(m);
        if (unlock_start - parked_seen >= FT_NS_PER_MS) {
            late_rounds++;
            CHECK_EQ(after & FT_MUTEX_LOCKED, FT_MUTEX_LOCKED);
        } else if (unlock_end - atomic_load(&decision_lock_started) < FT_NS_PER_MS) {
            early_rounds++;
            CHECK_EQ(after & FT_MUTEX_LOCKED, 0);
        }
        CHECK(atomic_load(&decision_round_owned) != round); /* still held back by the stop */
        ft_start_the_world(decision_runtime);
        SPIN_UNTIL(atomic_load(&decision_round_owned) == round);
        CHECK_EQ(atomic_load(&decision_round_owned), round);
        atomic_store(&decision_round_release, round);
    }
    join_thread(thread);
    CHECK_EQ(bits_of(m), FT_MUTEX_UNLOCKED);
    CHECK_EQ(ft_runtime_free(decision_runtime), FT_OK);
    printf("     %d rounds unlocked within 1 ms (freed), %d after it (handed off)\n", early_rounds,
           late_rounds);
    CHECK(late_rounds >= DECISION_ROUNDS / 2);
}

/* ---- timed locking ------------------------------------------------------------------------- */

TEST(timed_lock_times_out_and_leaves_mutex_consistent)
{
    ft_mutex m = {0};
    CHECK_EQ(ft_mutex_lock_timed(&m, 0, FT_LOCK_DONT_DETACH), FT_OK);
    CHECK_EQ(bits_of(&m), FT_MUTEX_LOCKED);

    /* Timeout 0 only tries. The fastest of a few attempts is measured, to be robust to a noisy
     * machine without letting a parking implementation through. */
    int64_t fastest = INT64_MAX;
    for (int attempt = 0; attempt < 5; attempt++) {
        int64_t start = now_ns();
        CHECK_EQ(ft_mutex_lock_timed(&m, 0, FT_LOCK_DONT_DETACH), FT_ETIMEDOUT);
        int64_t elapsed = now_ns() - start;
        fastest = elapsed < fastest ? elapsed : fastest;
    }
    CHECK(fastest < FT_NS_PER_MS);

    for (int flags = FT_LOCK_DONT_DETACH; flags <= FT_LOCK_DETACH; flags++) {
        int64_t start = now_ns();
        CHECK_EQ(ft_mutex_lock_timed(&m, 5 * FT_NS_PER_MS, (ft_lock_flags)flags), FT_ETIMEDOUT);
        CHECK(now_ns() - start >= 5 * FT_NS_PER_MS);
        CHECK(ft_mutex_is_locked(&m)); /* HAS_PARKED may be left behind; LOCKED must stay */
    }

    /* The unlock finds nobody parked and clears the byte; the mutex works as before. */
    ft_mutex_unlock(&m);
    CHECK_EQ(bits_of(&m), FT_MUTEX_UNLOCKED);
    ft_mutex_lock(&m);
    CHECK_EQ(bits_of(&m), FT_MUTEX_LOCKED);
    ft_mutex_unlock(&m);
    CHECK_EQ(bits_of(&m), FT_MUTEX_UNLOCKED);
}

/* A thread that times out on a mutex held by another thread; the holder then unlocks. */
static ft_mutex timeout_mutex;
static _Atomic ft_status timeout_status;
static atomic_llong timeout_elapsed;

static void *timed_locker_main(void *arg)
{
    ft_lock_flags flags = (ft_lock_flags)(intptr_t)arg;
    int64_t start = now_ns();
    atomic_store(&timeout_status, ft_mutex_lock_timed(&timeout_mutex, 5 * FT_NS_PER_MS, flags));
    atomic_store(&timeout_elapsed, now_ns() - start);
    return NULL;
}

TEST(timed_out_waiter_from_other_thread)
{
    for (int flags = FT_LOCK_DONT_DETACH; flags <= FT_LOCK_DETACH; flags++) {
        ft_mutex_lock(&timeout_mutex);
        pthread_t thread;
        start_thread(&thread, timed_locker_main, (void *)(intptr_t)flags);
        join_thread(thread);
        CHECK_EQ(atomic_load(&timeout_status), FT_ETIMEDOUT);
        CHECK(atomic_load(&timeout_elapsed) >= 5 * FT_NS_PER_MS);
        CHECK(ft_mutex_is_locked(&timeout_mutex));
        ft_mutex_unlock(&timeout_mutex);
        CHECK_EQ(bits_of(&timeout_mutex), FT_MUTEX_UNLOCKED);
    }
}

/* lock_ex, with either flag, from threads attached to no runtime: the holder lets go only once
 * the main thread is parked, so the wait really happens. */
static ft_mutex flags_mutex;
static atomic_bool flags_holder_has_it;

static void *releasing_holder_main(void *arg)
{
    (void)arg;
    ft_mutex_lock(&flags_mutex);
    atomic_store(&flags_holder_has_it, true);
    SPIN_UNTIL(bits_of(&flags_mutex) == (FT_MUTEX_LOCKED | FT_MUTEX_HAS_PARKED));
    CHECK_THREAD(bits_of(&flags_mutex) == (FT_MUTEX_LOCKED | FT_MUTEX_HAS_PARKED));
    ft_mutex_unlock(&flags_mutex);
    return NULL;
}

TEST(lock_ex_both_flags_without_runtime)
{
    CHECK(ft_thread_current() == NULL);
    for (int flags = FT_LOCK_DONT_DETACH; flags <= FT_LOCK_DETACH; flags++) {
        CHECK_EQ(ft_mutex_lock_timed(&flags_mutex, FT_FOREVER, (ft_lock_flags)flags), FT_OK);
        ft_mutex_unlock(&flags_mutex);

        atomic_store(&flags_holder_has_it, false);
        pthread_t thread;
        start_thread(&thread, releasing_holder_main, NULL);
        SPIN_UNTIL(atomic_load(&flags_holder_has_it));
        CHECK(atomic_load(&flags_holder_has_it));
        CHECK_EQ(ft_mutex_lock_timed(&flags_mutex, WAIT_LIMIT_NS, (ft_lock_flags)flags), FT_OK);
        CHECK(ft_mutex_is_locked(&flags_mutex));
        join_thread(thread);
        ft_mutex_unlock(&flags_mutex);
        CHECK_EQ(bits_of(&flags_mutex), FT_MUTEX_UNLOCKED);
    }
}

/* ---- a mutex waiter inside a runtime -------------------------------------------------------- */

/* A thread outside the runtime that stops the world, reports it, and restarts it when told. */
typedef struct stopper {
    ft_runtime *runtime;
    atomic_bool stopped;
    atomic_bool saw_world_stopped;
    atomic_bool may_restart;
    atomic_bool restarted;
} stopper;

static void *stopper_main(void *arg)
{
    stopper *s = arg;
    ft_stop_the_world(s->runtime);
    atomic_store(&s->saw_world_stopped, ft_world_is_stopped(s->runtime));
    atomic_store(&s->stopped, true);
    WAIT_FOR_MAIN(atomic_load(&s->may_restart));
    ft_start_the_world(s->runtime);
    atomic_store(&s->restarted, true);
    return NULL;
}

static ft_mutex runtime_mutex;
static waiter runtime_waiter;
static stopper runtime_stopper;

/* Lock runtime_mutex, start an attached waiter that blocks on it (as configured), and wait until
 * it is parked. */
static ft_runtime *start_parked_attached_waiter(pthread_t *thread, bool use_lock_ex,
                                                ft_lock_flags flags)
{
    ft_runtime *rt = new_runtime(NULL);
    runtime_waiter =
        (waiter){.mutex = &runtime_mutex, .runtime = rt, .use_lock_ex = use_lock_ex, .flags = flags};
    runtime_stopper = (stopper){.runtime = rt};
    ft_mutex_lock(&runtime_mutex);
    start_thread(thread, waiter_main, &runtime_waiter);
    SPIN_UNTIL(waiter_is_parked(&runtime_waiter));
    CHECK(waiter_is_parked(&runtime_waiter));
    return rt;
}

TEST(attached_waiter_is_detached_while_parked)
{
    pthread_t waiter_thread, stopper_thread;
    ft_runtime *rt = start_parked_attached_waiter(&waiter_thread, false, FT_LOCK_DETACH);
    start_thread(&stopper_thread, stopper_main, &runtime_stopper);
    /* The waiter never reaches a safepoint while parked: the stop completes only if it is detached. */
    SPIN_UNTIL(atomic_load(&runtime_stopper.stopped));
    CHECK(atomic_load(&runtime_stopper.stopped));
    CHECK(atomic_load(&runtime_stopper.saw_world_stopped));
    CHECK(!atomic_load(&runtime_waiter.owns));
    atomic_store(&runtime_stopper.may_restart, true);
    SPIN_UNTIL(atomic_load(&runtime_stopper.restarted));
    CHECK(atomic_load(&runtime_stopper.restarted));
    join_thread(stopper_thread);

    ft_mutex_unlock(&runtime_mutex);
    SPIN_UNTIL(atomic_load(&runtime_waiter.owns));
    CHECK(atomic_load(&runtime_waiter.owns));
    atomic_store(&runtime_waiter.release, true);
    join_thread(waiter_thread);
    CHECK_EQ(bits_of(&runtime_mutex), FT_MUTEX_UNLOCKED);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(woken_waiter_waits_for_the_world_to_restart)
{
    pthread_t waiter_thread, stopper_thread;
    ft_runtime *rt = start_parked_attached_waiter(&waiter_thread, true, FT_LOCK_DETACH);
    start_thread(&stopper_thread, stopper_main, &runtime_stopper);
    SPIN_UNTIL(atomic_load(&runtime_stopper.stopped));
    CHECK(atomic_load(&runtime_stopper.stopped));

    /* Released while the world is stopped, the waiter wakes but must attach again before it
     * returns from the lock, and attaching waits for the restart. */
    ft_mutex_unlock(&runtime_mutex);
    int64_t start = now_ns();
    while (now_ns() - start < 20 * FT_NS_PER_MS) {
        CHECK(!atomic_load(&runtime_waiter.owns));
        sched_yield();
    }
    atomic_store(&runtime_stopper.may_restart, true);
    SPIN_UNTIL(atomic_load(&runtime_waiter.owns));
    CHECK(atomic_load(&runtime_waiter.owns));
    CHECK_EQ(atomic_load(&runtime_waiter.lock_status), FT_OK);
    join_thread(stopper_thread);
    atomic_store(&runtime_waiter.release, true);
    join_thread(waiter_thread);
    CHECK_EQ(bits_of(&runtime_mutex), FT_MUTEX_UNLOCKED);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(dont_detach_keeps_parked_waiter_attached)
{
    pthread_t waiter_thread, stopper_thread;
    ft_runtime *rt = start_parked_attached_waiter(&waiter_thread, true, FT_LOCK_DONT_DETACH);
    start_thread(&stopper_thread, stopper_main, &runtime_stopper);
    /* The waiter stays attached while parked, so the stop has to wait for it. */
    int64_t start = now_ns();
    while (now_ns() - start < 20 * FT_NS_PER_MS) {
        CHECK(!atomic_load(&runtime_stopper.stopped));
        sched_yield();
    }
    /* Once it has the mutex it reaches its safepoint, and the stop completes. */
    ft_mutex_unlock(&runtime_mutex);
    SPIN_UNTIL(atomic_load(&runtime_stopper.stopped));
    CHECK(atomic_load(&runtime_stopper.stopped));
    CHECK(atomic_load(&runtime_waiter.owns));
    atomic_store(&runtime_stopper.may_restart, true);
    join_thread(stopper_thread);
    atomic_store(&runtime_waiter.release, true);
    join_thread(waiter_thread);
    CHECK_EQ(atomic_load(&runtime_waiter.lock_status), FT_OK);
    CHECK_EQ(bits_of(&runtime_mutex), FT_MUTEX_UNLOCKED);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- misuse -------------------------------------------------------------------------------- */

static ft_mutex misused_mutex;

static void unlock_unlocked_mutex(void *arg)
{
    (void)arg;
    ft_mutex_unlock(&misused_mutex);
}

/* HAS_PARKED without LOCKED happens after an unlock that woke a waiter; the byte is still free. */
static void unlock_mutex_only_marked_parked(void *arg)
{
    (void)arg;
    atomic_store(&misused_mutex.bits, FT_MUTEX_HAS_PARKED);
    ft_mutex_unlock(&misused_mutex);
}

TEST(unlocking_an_unlocked_mutex_is_fatal)
{
    char address[32];
    snprintf(address, sizeof address, "%p", (void *)&misused_mutex);
    CHECK_DEATH(unlock_unlocked_mutex, NULL, "ftrt: fatal:", "unlock", address);
    CHECK_DEATH(unlock_mutex_only_marked_parked, NULL, "ftrt: fatal:", "unlock", address);
}

int main(void)
{
    RUN(uncontended_bits);
    RUN(contended_byte_reads_locked_and_parked);
    RUN(counter_under_contention);
    RUN(waiter_parked_over_1ms_gets_lock_handed_off);
    RUN(handoff_only_after_1ms_seen_with_world_stopped);
    RUN(timed_lock_times_out_and_leaves_mutex_consistent);
    RUN(timed_out_waiter_from_other_thread);
    RUN(lock_ex_both_flags_without_runtime);
    RUN(attached_waiter_is_detached_while_parked);
    RUN(woken_waiter_waits_for_the_world_to_restart);
    RUN(dont_detach_keeps_parked_waiter_attached);
    RUN(unlocking_an_unlocked_mutex_is_fatal);
    return harness_done();
}
