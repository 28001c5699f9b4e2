/* tests/test_lock.c: the locks built on the parking lot besides ft_mutex: event, once, recursive
 * mutex, reader/writer mutex and sequence lock.
 *
 * As in test_lock_mutex.c, a test waits for another thread only by spinning on an atomic with a deadline,
 * and knows that a thread is parked (not merely about to park) when /proc shows it blocked on a futex
 * word in its own stack. The rwmutex test walks the lock word through
 * an exact sequence of values, because the word's layout is part of the API. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>

#include "ftrt.h"
#include "test_util.h"

/* ---- ft_event ------------------------------------------------------------------------------ */

TEST(event_notified_before_wait)
{
    ft_event e = {0};
    CHECK(!ft_event_is_set(&e));
    CHECK(!ft_event_wait_timed(&e, 0, FT_LOCK_DONT_DETACH));
    ft_event_notify(&e);
    CHECK(ft_event_is_set(&e));
    ft_event_wait(&e); /* returns at once */
    CHECK(ft_event_wait_timed(&e, 0, FT_LOCK_DONT_DETACH));
    CHECK(ft_event_wait_timed(&e, FT_FOREVER, FT_LOCK_DETACH));
    ft_event_notify(&e); /* a second notify changes nothing */
    CHECK(ft_event_is_set(&e));
}

TEST(event_timed_wait_times_out)
{
    ft_event e = {0};
    for (int flags = FT_LOCK_DONT_DETACH; flags <= FT_LOCK_DETACH; flags++) {
        int64_t start = now_ns();
        CHECK(!ft_event_wait_timed(&e, 5 * FT_NS_PER_MS, (ft_lock_flags)flags));
        CHECK(now_ns() - start >= 5 * FT_NS_PER_MS);
        CHECK(!ft_event_is_set(&e));
    }
    /* A waiter that gave up leaves the event usable. */
    ft_event_notify(&e);
    CHECK(ft_event_is_set(&e));
    CHECK(ft_event_wait_timed(&e, 5 * FT_NS_PER_MS, FT_LOCK_DONT_DETACH));
}

#define EVENT_WAITERS 6

static ft_event shared_event;
static thread_identity event_waiter_ids[EVENT_WAITERS];
static atomic_int event_waiters_woken;

static void *event_waiter_main(void *arg)
{
    int index = (int)(intptr_t)arg;
    publish_identity(&event_waiter_ids[index], __builtin_frame_address(0));
    /* Half of them use the timed form with a long limit; both must return with the event set. */
    if (index % 2 == 0)
        ft_event_wait(&shared_event);
    else
        CHECK_THREAD(ft_event_wait_timed(&shared_event, WAIT_LIMIT_NS, FT_LOCK_DETACH));
    CHECK_THREAD(ft_event_is_set(&shared_event));
    atomic_fetch_add(&event_waiters_woken, 1);
    return NULL;
}

/* count waiters park on the event, then a notify from this thread wakes all of them. */
static void wait_then_notify(int count)
{
    shared_event = (ft_event){0};
    atomic_store(&event_waiters_woken, 0);
    for (int i = 0; i < EVENT_WAITERS; i++)
        forget_identity(&event_waiter_ids[i]);
    pthread_t threads[EVENT_WAITERS];
    for (int i = 0; i < count; i++)
        start_thread(&threads[i], event_waiter_main, (void *)(intptr_t)i);
    SPIN_UNTIL(all_parked(event_waiter_ids, count));
    CHECK(all_parked(event_waiter_ids, count));
    CHECK_EQ(atomic_load(&shared_event.state), 2); /* unset, with waiters */
    CHECK_EQ(atomic_load(&event_waiters_woken), 0);
    ft_event_notify(&shared_event);
    for (int i = 0; i < count; i++)
        join_thread(threads[i]);
    CHECK_EQ(atomic_load(&event_waiters_woken), count);
    CHECK(ft_event_is_set(&shared_event));
}

TEST(event_wait_then_notify_from_other_thread)
{
    wait_then_notify(1);
}

TEST(event_wakes_every_waiter)
{
    wait_then_notify(EVENT_WAITERS);
}

/* ---- ft_once ------------------------------------------------------------------------------- */

static atomic_int once_runs;

static ft_status count_run(void *arg)
{
    (void)arg;
    atomic_fetch_add(&once_runs, 1);
    return FT_OK;
}

static ft_status fail_run(void *arg)
{
    (void)arg;
    atomic_fetch_add(&once_runs, 1);
    return FT_ENOMEM;
}

#define ONCE_RACERS 4

static ft_once racing_once;
static pthread_barrier_t once_start;
static _Atomic ft_status once_results[ONCE_RACERS];

static void *once_racer_main(void *arg)
{
    int index = (int)(intptr_t)arg;
    pthread_barrier_wait(&once_start);
    atomic_store(&once_results[index], ft_once_call(&racing_once, count_run, NULL));
    return NULL;
}

TEST(once_runs_once_among_racing_threads)
{
    racing_once = (ft_once){0};
    atomic_store(&once_runs, 0);
    CHECK_EQ(pthread_barrier_init(&once_start, NULL, ONCE_RACERS), 0);
    pthread_t threads[ONCE_RACERS];
    for (int i = 0; i < ONCE_RACERS; i++) {
        atomic_store(&once_results[i], FT_EINVAL);
        start_thread(&threads[i], once_racer_main, (void *)(intptr_t)i);
    }
    for (int i = 0; i < ONCE_RACERS; i++)
        join_thread(threads[i]);
    pthread_barrier_destroy(&once_start);
    CHECK_EQ(atomic_load(&once_runs), 1);
    for (int i = 0; i < ONCE_RACERS; i++)
        CHECK_EQ(atomic_load(&once_results[i]), FT_OK);
    CHECK_EQ(atomic_load(&racing_once.state), FT_ONCE_DONE);
    CHECK_EQ(ft_once_call(&racing_once, count_run, NULL), FT_OK);
    CHECK_EQ(atomic_load(&once_runs), 1);
}

TEST(once_failed_initialiser_is_retried)
{
    ft_once o = {0};
    atomic_store(&once_runs, 0);
    CHECK_EQ(ft_once_call(&o, fail_run, NULL), FT_ENOMEM);
    CHECK_EQ(atomic_load(&once_runs), 1);
    CHECK(atomic_load(&o.state) != FT_ONCE_DONE);
    CHECK_EQ(ft_once_call(&o, fail_run, NULL), FT_ENOMEM);
    CHECK_EQ(atomic_load(&once_runs), 2);
    CHECK_EQ(ft_once_call(&o, count_run, NULL), FT_OK);
    CHECK_EQ(atomic_load(&once_runs), 3);
    CHECK_EQ(atomic_load(&o.state), FT_ONCE_DONE);
    CHECK_EQ(ft_once_call(&o, fail_run, NULL), FT_OK); /* done: not run again */
    CHECK_EQ(atomic_load(&once_runs), 3);
}

/* A first caller whose initialiser blocks until released; later callers arrive meanwhile. */
static ft_once blocking_once;
static atomic_bool first_init_running, first_init_may_finish;
static ft_status first_init_result;
static atomic_int first_init_calls, late_init_calls;

static ft_status blocking_init(void *arg)
{
    (void)arg;
    atomic_fetch_add(&first_init_calls, 1);
    atomic_store(&first_init_running, true);
    WAIT_FOR_MAIN(atomic_load(&first_init_may_finish));
    return first_init_result;
}

static ft_status late_init(void *arg)
{
    (void)arg;
    atomic_fetch_add(&late_init_calls, 1);
    return FT_OK;
}

static void *first_caller_main(void *arg)
{
    (void)arg;
    CHECK_THREAD(ft_once_call(&blocking_once, blocking_init, NULL) == first_init_result);
    return NULL;
}

#define LATE_CALLERS 2

static thread_identity late_caller_ids[LATE_CALLERS];
static _Atomic ft_status late_caller_results[LATE_CALLERS];
static atomic_int late_callers_returned;

static void *late_caller_main(void *arg)
{
    int index = (int)(intptr_t)arg;
    publish_identity(&late_caller_ids[index], __builtin_frame_address(0));
    atomic_store(&late_caller_results[index], ft_once_call(&blocking_once, late_init, NULL));
    atomic_fetch_add(&late_callers_returned, 1);
    return NULL;
}

/* The first caller runs an initialiser that returns `result` once released; LATE_CALLERS threads
 * call meanwhile and must wait (parked, state 1 + 2) for it to end. */
static void run_once_with_late_callers(ft_status result)
{
    blocking_once = (ft_once){0};
    first_init_result = result;
    atomic_store(&first_init_running, false);
    atomic_store(&first_init_may_finish, false);
    atomic_store(&first_init_calls, 0);
    atomic_store(&late_init_calls, 0);
    atomic_store(&late_callers_returned, 0);
    pthread_t first, late[LATE_CALLERS];
    start_thread(&first, first_caller_main, NULL);
    SPIN_UNTIL(atomic_load(&first_init_running));
    CHECK(atomic_load(&first_init_running));
    for (int i = 0; i < LATE_CALLERS; i++) {
        forget_identity(&late_caller_ids[i]);
        atomic_store(&late_caller_results[i], FT_EINVAL);
        start_thread(&late[i], late_caller_main, (void *)(intptr_t)i);
    }
    SPIN_UNTIL(atomic_load(&blocking_once.state) == 3 &&
               thread_is_parked(&late_caller_ids[0]) && thread_is_parked(&late_caller_ids[1]));
    CHECK_EQ(atomic_load(&blocking_once.state), 3); /* running, with waiters parked */
    CHECK(thread_is_parked(&late_caller_ids[0]));
    CHECK(thread_is_parked(&late_caller_ids[1]));
    CHECK_EQ(atomic_load(&late_callers_returned), 0);
    atomic_store(&first_init_may_finish, true);
    join_thread(first);
    for (int i = 0; i < LATE_CALLERS; i++)
        join_thread(late[i]);
    for (int i = 0; i < LATE_CALLERS; i++)
        CHECK_EQ(atomic_load(&late_caller_results[i]), FT_OK);
    CHECK_EQ(atomic_load(&first_init_calls), 1);
    CHECK_EQ(atomic_load(&blocking_once.state), FT_ONCE_DONE);
}

TEST(once_callers_wait_for_running_initialiser)
{
    run_once_with_late_callers(FT_OK);
    CHECK_EQ(atomic_load(&late_init_calls), 0);
}

TEST(once_waiter_retries_after_running_initialiser_fails)
{
    run_once_with_late_callers(FT_ENOMEM);
    /* One waiter ran its own initialiser, which succeeded; the other then saw it done. */
    CHECK_EQ(atomic_load(&late_init_calls), 1);
}

/* ---- ft_rmutex ----------------------------------------------------------------------------- */

TEST(rmutex_nests_in_one_thread)
{
    ft_rmutex m = {0};
    CHECK(!ft_rmutex_is_owned(&m));
    ft_rmutex_lock(&m);
    CHECK(ft_rmutex_is_owned(&m));
    CHECK_EQ(atomic_load(&m.mutex.bits), FT_MUTEX_LOCKED);
    ft_rmutex_lock(&m);
    ft_rmutex_lock(&m);
    CHECK(ft_rmutex_is_owned(&m));
    ft_rmutex_unlock(&m);
    ft_rmutex_unlock(&m);
    CHECK(ft_rmutex_is_owned(&m));
    CHECK_EQ(atomic_load(&m.mutex.bits), FT_MUTEX_LOCKED);
    ft_rmutex_unlock(&m);
    CHECK(!ft_rmutex_is_owned(&m));
    CHECK_EQ(atomic_load(&m.mutex.bits), FT_MUTEX_UNLOCKED);
    CHECK_EQ(atomic_load(&m.owner), 0);
}

static ft_rmutex held_rmutex;
static atomic_bool rmutex_holder_has_it, rmutex_holder_saw_owned, rmutex_holder_may_release;

static void *rmutex_holder_main(void *arg)
{
    (void)arg;
    ft_rmutex_lock(&held_rmutex);
    ft_rmutex_lock(&held_rmutex);
    atomic_store(&rmutex_holder_saw_owned, ft_rmutex_is_owned(&held_rmutex));
    atomic_store(&rmutex_holder_has_it, true);
    WAIT_FOR_MAIN(atomic_load(&rmutex_holder_may_release));
    ft_rmutex_unlock(&held_rmutex);
    ft_rmutex_unlock(&held_rmutex);
    return NULL;
}

static pthread_t start_rmutex_holder(void)
{
    held_rmutex = (ft_rmutex){0};
    atomic_store(&rmutex_holder_has_it, false);
    atomic_store(&rmutex_holder_may_release, false);
    pthread_t thread;
    start_thread(&thread, rmutex_holder_main, NULL);
    SPIN_UNTIL(atomic_load(&rmutex_holder_has_it));
    CHECK(atomic_load(&rmutex_holder_has_it));
    return thread;
}

TEST(rmutex_owned_by_another_thread)
{
    pthread_t thread = start_rmutex_holder();
    CHECK(atomic_load(&rmutex_holder_saw_owned));
    CHECK(!ft_rmutex_is_owned(&held_rmutex));
    CHECK(ft_mutex_is_locked(&held_rmutex.mutex));
    atomic_store(&rmutex_holder_may_release, true);
    join_thread(thread);
    CHECK(!ft_mutex_is_locked(&held_rmutex.mutex));
    ft_rmutex_lock(&held_rmutex); /* free again, and now ours */
    CHECK(ft_rmutex_is_owned(&held_rmutex));
    ft_rmutex_unlock(&held_rmutex);
}

#define RMUTEX_THREADS 4
#define RMUTEX_INCREMENTS 5000

static ft_rmutex counter_rmutex;
static long rmutex_counter; /* plain: only touched under counter_rmutex */
static pthread_barrier_t rmutex_start;

static void *rmutex_counter_main(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&rmutex_start);
    for (int i = 0; i < RMUTEX_INCREMENTS; i++) {
        ft_rmutex_lock(&counter_rmutex);
        ft_rmutex_lock(&counter_rmutex);
        rmutex_counter++;
        ft_rmutex_unlock(&counter_rmutex);
        CHECK_THREAD(ft_rmutex_is_owned(&counter_rmutex));
        ft_rmutex_unlock(&counter_rmutex);
    }
    return NULL;
}

TEST(rmutex_excludes_other_threads)
{
    rmutex_counter = 0;
    CHECK_EQ(pthread_barrier_init(&rmutex_start, NULL, RMUTEX_THREADS), 0);
    pthread_t threads[RMUTEX_THREADS];
    for (int i = 0; i < RMUTEX_THREADS; i++)
        start_thread(&threads[i], rmutex_counter_main, NULL);
    for (int i = 0; i < RMUTEX_THREADS; i++)
        join_thread(threads[i]);
    pthread_barrier_destroy(&rmutex_start);
    CHECK_EQ(rmutex_counter, RMUTEX_THREADS * RMUTEX_INCREMENTS);
    CHECK(!ft_mutex_is_locked(&counter_rmutex.mutex));
}

static ft_rmutex misused_rmutex;

static void unlock_unlocked_rmutex(void *arg)
{
    (void)arg;
    ft_rmutex_unlock(&misused_rmutex);
}

/* Runs in the forked child, where held_rmutex is still marked as held by the parent's holder. */
static void unlock_rmutex_of_other_thread(void *arg)
{
    (void)arg;
    ft_rmutex_unlock(&held_rmutex);
}

TEST(rmutex_unlock_by_non_owner_is_fatal)
{
    char address[32];
    snprintf(address, sizeof address, "%p", (void *)&misused_rmutex);
    CHECK_DEATH(unlock_unlocked_rmutex, NULL, "ftrt: fatal:", "unlock", address);

    pthread_t thread = start_rmutex_holder();
    snprintf(address, sizeof address, "%p", (void *)&held_rmutex);
    CHECK_DEATH(unlock_rmutex_of_other_thread, NULL, "ftrt: fatal:", "unlock", address);
    /* The parent's mutex is untouched by the child's attempt. */
    CHECK(ft_mutex_is_locked(&held_rmutex.mutex));
    atomic_store(&rmutex_holder_may_release, true);
    join_thread(thread);
}

/* ---- ft_rwmutex ---------------------------------------------------------------------------- */

#define RW_READER ((uintptr_t)1 << FT_RWMUTEX_READER_SHIFT)

static uintptr_t rw_bits(ft_rwmutex *rw)
{
    return atomic_load_explicit(&rw->bits, memory_order_acquire);
}

TEST(rwmutex_uncontended_bits)
{
    ft_rwmutex rw = {0};
    ft_rwmutex_rlock(&rw);
    CHECK_EQ(rw_bits(&rw), RW_READER);
    ft_rwmutex_rlock(&rw);
    CHECK_EQ(rw_bits(&rw), 2 * RW_READER);
    ft_rwmutex_runlock(&rw);
    ft_rwmutex_runlock(&rw);
    CHECK_EQ(rw_bits(&rw), 0);
    ft_rwmutex_lock(&rw);
    CHECK_EQ(rw_bits(&rw), FT_RWMUTEX_WRITE_LOCKED);
    ft_rwmutex_unlock(&rw);
    CHECK_EQ(rw_bits(&rw), 0);
}

/* A thread that takes the shared rwmutex (for writing or reading), takes a ticket that orders the
 * acquisitions, holds it until released, and unlocks. */
typedef struct rw_actor {
    bool writer;
    thread_identity id;
    atomic_bool acquired;
    atomic_bool release;
    atomic_int ticket;
} rw_actor;

static ft_rwmutex sequence_rw;
static atomic_int sequence_tickets;

static void *rw_actor_main(void *arg)
{
    rw_actor *a = arg;
    publish_identity(&a->id, __builtin_frame_address(0));
    if (a->writer)
        ft_rwmutex_lock(&sequence_rw);
    else
        ft_rwmutex_rlock(&sequence_rw);
    atomic_store(&a->ticket, atomic_fetch_add(&sequence_tickets, 1));
    atomic_store(&a->acquired, true);
    WAIT_FOR_MAIN(atomic_load(&a->release));
    if (a->writer)
        ft_rwmutex_unlock(&sequence_rw);
    else
        ft_rwmutex_runlock(&sequence_rw);
    return NULL;
}

static rw_actor sequence_writer, sequence_reader1, sequence_reader2;

static bool actor_is_parked(rw_actor *a)
{
    return thread_is_parked(&a->id);
}

/* Two readers hold it (8); a writer parks (10); two more readers arrive and park behind the writer
 * (write preference; still 10); the readers leave (6, then the writer gets it with the late readers
 * still parked: 3); the writer leaves and both late readers get it (8); they leave (0). */
TEST(rwmutex_exact_bit_sequence_and_write_preference)
{
    sequence_rw = (ft_rwmutex){0};
    atomic_store(&sequence_tickets, 0);
    sequence_writer = (rw_actor){.writer = true};
    sequence_reader1 = (rw_actor){.writer = false};
    sequence_reader2 = (rw_actor){.writer = false};

    ft_rwmutex_rlock(&sequence_rw);
    ft_rwmutex_rlock(&sequence_rw);
    CHECK_EQ(rw_bits(&sequence_rw), 2 * RW_READER);

    pthread_t writer, reader1, reader2;
    start_thread(&writer, rw_actor_main, &sequence_writer);
    SPIN_UNTIL(rw_bits(&sequence_rw) == (2 * RW_READER | FT_RWMUTEX_HAS_PARKED) &&
               actor_is_parked(&sequence_writer));
    CHECK_EQ(rw_bits(&sequence_rw), 2 * RW_READER | FT_RWMUTEX_HAS_PARKED);
    CHECK(actor_is_parked(&sequence_writer));
    CHECK(!atomic_load(&sequence_writer.acquired));

    start_thread(&reader1, rw_actor_main, &sequence_reader1);
    start_thread(&reader2, rw_actor_main, &sequence_reader2);
    SPIN_UNTIL((actor_is_parked(&sequence_reader1) && actor_is_parked(&sequence_reader2)) ||
               atomic_load(&sequence_reader1.acquired) || atomic_load(&sequence_reader2.acquired));
    CHECK(!atomic_load(&sequence_reader1.acquired));
    CHECK(!atomic_load(&sequence_reader2.acquired));
    CHECK(actor_is_parked(&sequence_reader1) && actor_is_parked(&sequence_reader2));
    CHECK_EQ(rw_bits(&sequence_rw), 2 * RW_READER | FT_RWMUTEX_HAS_PARKED);

    ft_rwmutex_runlock(&sequence_rw);
    CHECK_EQ(rw_bits(&sequence_rw), RW_READER | FT_RWMUTEX_HAS_PARKED);
    ft_rwmutex_runlock(&sequence_rw);
    SPIN_UNTIL(atomic_load(&sequence_writer.acquired) &&
               rw_bits(&sequence_rw) == (FT_RWMUTEX_HAS_PARKED | FT_RWMUTEX_WRITE_LOCKED));
    CHECK_EQ(rw_bits(&sequence_rw), FT_RWMUTEX_HAS_PARKED | FT_RWMUTEX_WRITE_LOCKED);
    CHECK(atomic_load(&sequence_writer.acquired));
    CHECK(!atomic_load(&sequence_reader1.acquired));
    CHECK(!atomic_load(&sequence_reader2.acquired));

    atomic_store(&sequence_writer.release, true);
    join_thread(writer);
    SPIN_UNTIL(atomic_load(&sequence_reader1.acquired) && atomic_load(&sequence_reader2.acquired));
    CHECK(atomic_load(&sequence_reader1.acquired) && atomic_load(&sequence_reader2.acquired));
    CHECK_EQ(rw_bits(&sequence_rw), 2 * RW_READER);
    CHECK(atomic_load(&sequence_writer.ticket) < atomic_load(&sequence_reader1.ticket));
    CHECK(atomic_load(&sequence_writer.ticket) < atomic_load(&sequence_reader2.ticket));

    atomic_store(&sequence_reader1.release, true);
    atomic_store(&sequence_reader2.release, true);
    join_thread(reader1);
    join_thread(reader2);
    CHECK_EQ(rw_bits(&sequence_rw), 0);
}

#define RW_WRITERS 2
#define RW_READERS 2
#define RW_ROUNDS 5000

static ft_rwmutex exclusion_rw;
static uint64_t rw_data_x, rw_data_y; /* plain; kept equal by the writers */
static atomic_int rw_writers_inside, rw_readers_inside;
static pthread_barrier_t rw_start;

static void *rw_writer_main(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&rw_start);
    for (int i = 0; i < RW_ROUNDS; i++) {
        ft_rwmutex_lock(&exclusion_rw);
        CHECK_THREAD(atomic_fetch_add(&rw_writers_inside, 1) == 0);
        CHECK_THREAD(atomic_load(&rw_readers_inside) == 0);
        rw_data_x++;
        rw_data_y++;
        atomic_fetch_sub(&rw_writers_inside, 1);
        ft_rwmutex_unlock(&exclusion_rw);
    }
    return NULL;
}

static void *rw_reader_main(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&rw_start);
    for (int i = 0; i < RW_ROUNDS; i++) {
        ft_rwmutex_rlock(&exclusion_rw);
        atomic_fetch_add(&rw_readers_inside, 1);
        CHECK_THREAD(atomic_load(&rw_writers_inside) == 0);
        CHECK_THREAD(rw_data_x == rw_data_y);
        atomic_fetch_sub(&rw_readers_inside, 1);
        ft_rwmutex_runlock(&exclusion_rw);
    }
    return NULL;
}

TEST(rwmutex_excludes_writers_from_everyone)
{
    rw_data_x = rw_data_y = 0;
    CHECK_EQ(pthread_barrier_init(&rw_start, NULL, RW_WRITERS + RW_READERS), 0);
    pthread_t threads[RW_WRITERS + RW_READERS];
    for (int i = 0; i < RW_WRITERS + RW_READERS; i++)
        start_thread(&threads[i], i < RW_WRITERS ? rw_writer_main : rw_reader_main, NULL);
    for (int i = 0; i < RW_WRITERS + RW_READERS; i++)
        join_thread(threads[i]);
    pthread_barrier_destroy(&rw_start);
    CHECK_EQ(rw_data_x, RW_WRITERS * RW_ROUNDS);
    CHECK_EQ(rw_data_y, RW_WRITERS * RW_ROUNDS);
    CHECK_EQ(rw_bits(&exclusion_rw), 0);
}

/* ---- ft_seqlock ---------------------------------------------------------------------------- */

static uint32_t seq_of(ft_seqlock *s)
{
    return atomic_load_explicit(&s->seq, memory_order_acquire);
}

TEST(seqlock_versions_and_abandon)
{
    ft_seqlock s = {0};
    uint32_t seq = ft_seqlock_read_begin(&s);
    CHECK_EQ(seq % 2, 0);
    CHECK(!ft_seqlock_read_retry(&s, seq));

    ft_seqlock_write_begin(&s);
    CHECK_EQ(seq_of(&s) % 2, 1);
    ft_seqlock_write_end(&s);
    uint32_t after_write = seq_of(&s);
    CHECK_EQ(after_write % 2, 0);
    CHECK(after_write != seq);
    CHECK(ft_seqlock_read_retry(&s, seq)); /* a write happened since seq was read */

    seq = ft_seqlock_read_begin(&s);
    CHECK_EQ(seq, after_write);
    ft_seqlock_write_begin(&s);
    CHECK_EQ(seq_of(&s) % 2, 1);
    ft_seqlock_write_abandon(&s);
    CHECK_EQ(seq_of(&s), after_write); /* nothing published */
    CHECK(!ft_seqlock_read_retry(&s, seq));
}

#define SEQ_WRITES 20000

static ft_seqlock pair_lock;
static _Atomic uint64_t pair_a, pair_b; /* b == ~a whenever no write section is open */
static atomic_bool pair_writer_done;
static atomic_long pair_consistent_reads;

static void *pair_writer_main(void *arg)
{
    (void)arg;
    for (uint64_t i = 1; i <= SEQ_WRITES; i++) {
        ft_seqlock_write_begin(&pair_lock);
        atomic_store_explicit(&pair_a, i, memory_order_relaxed);
        atomic_store_explicit(&pair_b, ~i, memory_order_relaxed);
        ft_seqlock_write_end(&pair_lock);
        if (i % 64 == 0) {
            /* An abandoned section that wrote nothing, to mix the two endings. */
            ft_seqlock_write_begin(&pair_lock);
            ft_seqlock_write_abandon(&pair_lock);
        }
    }
    atomic_store(&pair_writer_done, true);
    return NULL;
}

static void *pair_reader_main(void *arg)
{
    (void)arg;
    uint64_t last_a = 0;
    bool writer_done;
    do {
        writer_done = atomic_load(&pair_writer_done);
        uint32_t seq = ft_seqlock_read_begin(&pair_lock);
        CHECK_THREAD(seq % 2 == 0);
        uint64_t a = atomic_load_explicit(&pair_a, memory_order_relaxed);
        uint64_t b = atomic_load_explicit(&pair_b, memory_order_relaxed);
        if (ft_seqlock_read_retry(&pair_lock, seq))
            continue;
        CHECK_THREAD(b == ~a);
        CHECK_THREAD(a >= last_a); /* versions never go backwards */
        last_a = a;
        atomic_fetch_add(&pair_consistent_reads, 1);
    } while (!writer_done);
    /* The last pass started after the writer finished, so it saw the final pair. */
    CHECK_THREAD(last_a == SEQ_WRITES);
    return NULL;
}

#define PAIR_READERS 2

TEST(seqlock_readers_never_accept_torn_pair)
{
    pair_lock = (ft_seqlock){0};
    atomic_store(&pair_a, 0);
    atomic_store(&pair_b, ~(uint64_t)0);
    atomic_store(&pair_writer_done, false);
    atomic_store(&pair_consistent_reads, 0);
    pthread_t writer, readers[PAIR_READERS];
    for (int i = 0; i < PAIR_READERS; i++)
        start_thread(&readers[i], pair_reader_main, NULL);
    start_thread(&writer, pair_writer_main, NULL);
    join_thread(writer);
    for (int i = 0; i < PAIR_READERS; i++)
        join_thread(readers[i]);
    CHECK(atomic_load(&pair_consistent_reads) >= PAIR_READERS);
    CHECK_EQ(seq_of(&pair_lock) % 2, 0);
}

#define SEQ_WRITERS 2
#define SEQ_WRITER_ROUNDS 5000

static ft_seqlock writers_lock;
static long writers_counter; /* plain: only touched inside write sections */
static pthread_barrier_t writers_start;

static void *counting_writer_main(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&writers_start);
    for (int i = 0; i < SEQ_WRITER_ROUNDS; i++) {
        ft_seqlock_write_begin(&writers_lock);
        writers_counter++;
        ft_seqlock_write_end(&writers_lock);
    }
    return NULL;
}

TEST(seqlock_writers_exclude_each_other)
{
    writers_lock = (ft_seqlock){0};
    writers_counter = 0;
    CHECK_EQ(pthread_barrier_init(&writers_start, NULL, SEQ_WRITERS), 0);
    pthread_t threads[SEQ_WRITERS];
    for (int i = 0; i < SEQ_WRITERS; i++)
        start_thread(&threads[i], counting_writer_main, NULL);
    for (int i = 0; i < SEQ_WRITERS; i++)
        join_thread(threads[i]);
    pthread_barrier_destroy(&writers_start);
    CHECK_EQ(writers_counter, SEQ_WRITERS * SEQ_WRITER_ROUNDS);
    CHECK_EQ(seq_of(&writers_lock) % 2, 0);
}

TEST(seqlock_after_fork_resets_odd_sequence)
{
    ft_seqlock s = {0};
    ft_seqlock_write_begin(&s);
    ft_seqlock_write_end(&s);
    uint32_t even = seq_of(&s);
    ft_seqlock_after_fork(&s);
    CHECK_EQ(seq_of(&s), even); /* an even sequence is left alone */

    ft_seqlock_write_begin(&s);
    CHECK_EQ(seq_of(&s) % 2, 1);
    ft_seqlock_after_fork(&s);
    CHECK_EQ(seq_of(&s) % 2, 0);
    ft_seqlock_write_begin(&s); /* would spin forever on an odd sequence */
    ft_seqlock_write_end(&s);
    CHECK_EQ(seq_of(&s) % 2, 0);
}

/* The real situation: a thread is inside a write section when the process forks. */
static ft_seqlock forked_lock;
static atomic_bool fork_writer_inside, fork_writer_may_leave;

static void *fork_writer_main(void *arg)
{
    (void)arg;
    ft_seqlock_write_begin(&forked_lock);
    atomic_store(&fork_writer_inside, true);
    WAIT_FOR_MAIN(atomic_load(&fork_writer_may_leave));
    ft_seqlock_write_end(&forked_lock);
    return NULL;
}

TEST(seqlock_after_fork_in_child_of_writer)
{
    forked_lock = (ft_seqlock){0};
    atomic_store(&fork_writer_inside, false);
    atomic_store(&fork_writer_may_leave, false);
    pthread_t writer;
    start_thread(&writer, fork_writer_main, NULL);
    SPIN_UNTIL(atomic_load(&fork_writer_inside));
    CHECK(atomic_load(&fork_writer_inside));
    fflush(stdout);
    fflush(stderr);
    pid_t child = fork();
    if (child == 0) {
        alarm(WAIT_LIMIT_S); /* a child stuck on the odd sequence dies instead of hanging */
        int code = seq_of(&forked_lock) % 2 == 1 ? 0 : 2;
        ft_seqlock_after_fork(&forked_lock);
        if (code == 0 && seq_of(&forked_lock) % 2 != 0)
            code = 3;
        ft_seqlock_write_begin(&forked_lock);
        ft_seqlock_write_end(&forked_lock);
        uint32_t seq = ft_seqlock_read_begin(&forked_lock);
        if (code == 0 && (seq % 2 != 0 || ft_seqlock_read_retry(&forked_lock, seq)))
            code = 4;
        _exit(code);
    }
    CHECK(child > 0);
    int status = 0;
    CHECK_EQ(waitpid(child, &status, 0), child);
    atomic_store(&fork_writer_may_leave, true);
    join_thread(writer);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    CHECK_EQ(seq_of(&forked_lock) % 2, 0);
}

int main(void)
{
    RUN(event_notified_before_wait);
    RUN(event_timed_wait_times_out);
    RUN(event_wait_then_notify_from_other_thread);
    RUN(event_wakes_every_waiter);
    RUN(once_runs_once_among_racing_threads);
    RUN(once_failed_initialiser_is_retried);
    RUN(once_callers_wait_for_running_initialiser);
    RUN(once_waiter_retries_after_running_initialiser_fails);
    RUN(rmutex_nests_in_one_thread);
    RUN(rmutex_owned_by_another_thread);
    RUN(rmutex_excludes_other_threads);
    RUN(rmutex_unlock_by_non_owner_is_fatal);
    RUN(rwmutex_uncontended_bits);
    RUN(rwmutex_exact_bit_sequence_and_write_preference);
    RUN(rwmutex_excludes_writers_from_everyone);
    RUN(seqlock_versions_and_abandon);
    RUN(seqlock_readers_never_accept_torn_pair);
    RUN(seqlock_writers_exclude_each_other);
    RUN(seqlock_after_fork_resets_odd_sequence);
    RUN(seqlock_after_fork_in_child_of_writer);
    return harness_done();
}
