/* tests/test_parking_lot.c: the process-wide parking lot: value checks of every size, the hand-over
 * of park_arg and wake_arg through the unpark callback, FIFO order, unpark_all, timeouts, and a race
 * of short timed parks against an unparker in which no wake-up may be lost or invented.
 *
 * A test knows that a thread is parked when /proc shows it blocked on a futex word in its own stack.
 * Waits for other threads spin with a deadline, so a bug fails a check instead of hanging. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>

#include "ftrt.h"
#include "test_util.h"

/* ---- the value check ----------------------------------------------------------------------- */

/* For each size, a word whose first `size` bytes differ from expected makes park return FT_EAGAIN at
 * once; a word whose first `size` bytes match parks (and times out), whatever the bytes after them. */
TEST(park_compares_exactly_size_bytes)
{
    static const size_t sizes[] = {1, 2, 4, 8};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t size = sizes[i];
        _Alignas(16) uint8_t word[16] = {0};
        _Alignas(8) uint8_t expected[8] = {0};
        word[size] = 0xff; /* just past the compared bytes: must not matter */

        int64_t start = now_ns();
        CHECK_EQ(ft_parking_lot_park(word, expected, size, 5 * FT_NS_PER_MS, NULL, NULL),
                 FT_ETIMEDOUT);
        CHECK(now_ns() - start >= 5 * FT_NS_PER_MS);

        word[size - 1] = 1; /* the last compared byte differs */
        start = now_ns();
        CHECK_EQ(ft_parking_lot_park(word, expected, size, WAIT_LIMIT_NS, NULL, NULL), FT_EAGAIN);
        CHECK(now_ns() - start < WAIT_LIMIT_NS / 2);
        word[size - 1] = 0;
        word[0] = 0x80; /* the first compared byte differs */
        CHECK_EQ(ft_parking_lot_park(word, expected, size, WAIT_LIMIT_NS, NULL, NULL), FT_EAGAIN);
    }
}

TEST(park_with_mismatched_value_of_each_type)
{
    uint8_t u8 = 7, e8 = 8;
    uint16_t u16 = 0x1234, e16 = 0x1235;
    uint32_t u32 = 0x12345678, e32 = 0x12345679;
    uint64_t u64 = UINT64_C(0x100000000), e64 = 0; /* differ only in the high half */
    CHECK_EQ(ft_parking_lot_park(&u8, &e8, 1, WAIT_LIMIT_NS, NULL, NULL), FT_EAGAIN);
    CHECK_EQ(ft_parking_lot_park(&u16, &e16, 2, WAIT_LIMIT_NS, NULL, NULL), FT_EAGAIN);
    CHECK_EQ(ft_parking_lot_park(&u32, &e32, 4, WAIT_LIMIT_NS, NULL, NULL), FT_EAGAIN);
    CHECK_EQ(ft_parking_lot_park(&u64, &e64, 8, WAIT_LIMIT_NS, NULL, NULL), FT_EAGAIN);
}

TEST(park_timeouts)
{
    uint32_t word = 5, expected = 5;
    int64_t start = now_ns();
    CHECK_EQ(ft_parking_lot_park(&word, &expected, 4, 0, NULL, NULL), FT_ETIMEDOUT);
    int64_t zero_wait = now_ns() - start;
    start = now_ns();
    CHECK_EQ(ft_parking_lot_park(&word, &expected, 4, 10 * FT_NS_PER_MS, NULL, NULL), FT_ETIMEDOUT);
    int64_t ten_ms_wait = now_ns() - start;
    CHECK(ten_ms_wait >= 10 * FT_NS_PER_MS);
    CHECK(zero_wait < ten_ms_wait);
    /* A timed-out waiter is gone: nobody is left to wake. */
    CHECK(!ft_parking_lot_unpark(&word, NULL, NULL));
    CHECK_EQ(ft_parking_lot_unpark_all(&word), 0);
}

/* ---- unpark and the callback --------------------------------------------------------------- */

typedef struct unpark_record {
    int calls;
    void *park_arg;
    bool has_more;
    void *returned;
} unpark_record;

/* The callback records what it saw and hands the record's `returned` to the woken waiter. */
static void *record_unpark(void *arg, void *park_arg, bool has_more)
{
    unpark_record *r = arg;
    r->calls++;
    r->park_arg = park_arg;
    r->has_more = has_more;
    return r->returned;
}

TEST(unpark_without_waiter)
{
    uint32_t word = 0;
    unpark_record r = {.park_arg = &word, .returned = &r};
    CHECK(!ft_parking_lot_unpark(&word, record_unpark, &r));
    CHECK_EQ(r.calls, 1);
    CHECK(r.park_arg == NULL);
    CHECK(!ft_parking_lot_unpark(&word, NULL, NULL));
    CHECK_EQ(ft_parking_lot_unpark_all(&word), 0);
}

/* A parked thread: records its kernel id, parks on its address with its own park_arg, and keeps
 * what park returned and the wake_arg it got. */
typedef struct parker {
    const uint32_t *address;
    uint32_t expected;
    void *park_arg;
    thread_identity id;
    _Atomic ft_status status;
    void *_Atomic wake_arg;
    atomic_bool returned;
} parker;

static void *parker_main(void *arg)
{
    parker *p = arg;
    publish_identity(&p->id, __builtin_frame_address(0));
    void *wake_arg = NULL;
    ft_status status =
        ft_parking_lot_park(p->address, &p->expected, sizeof p->expected, WAIT_LIMIT_NS,
                            p->park_arg, &wake_arg);
    atomic_store(&p->wake_arg, wake_arg);
    atomic_store(&p->status, status);
    atomic_store(&p->returned, true);
    return NULL;
}

static void init_parker(parker *p, const uint32_t *address, void *park_arg)
{
    *p = (parker){.address = address, .expected = *address, .park_arg = park_arg};
    atomic_store(&p->status, FT_EINVAL);
}

static bool parkers_parked(parker *parkers, int count)
{
    for (int i = 0; i < count; i++)
        if (!thread_is_parked(&parkers[i].id))
            return false;
    return true;
}

static uint32_t single_word;
static parker single_parker;
static int single_park_token, single_wake_token;

TEST(unpark_hands_args_to_single_waiter)
{
    init_parker(&single_parker, &single_word, &single_park_token);
    pthread_t thread;
    start_thread(&thread, parker_main, &single_parker);
    SPIN_UNTIL(parkers_parked(&single_parker, 1));
    CHECK(parkers_parked(&single_parker, 1));
    CHECK(!atomic_load(&single_parker.returned));

    unpark_record r = {.returned = &single_wake_token};
    CHECK(ft_parking_lot_unpark(&single_word, record_unpark, &r));
    CHECK_EQ(r.calls, 1);
    CHECK(r.park_arg == &single_park_token);
    CHECK(!r.has_more);
    join_thread(thread);
    CHECK_EQ(atomic_load(&single_parker.status), FT_OK);
    CHECK(atomic_load(&single_parker.wake_arg) == &single_wake_token);
    CHECK(!ft_parking_lot_unpark(&single_word, NULL, NULL));
}

static uint32_t pair_word;
static parker pair_parkers[2];
static int pair_park_tokens[2], pair_wake_tokens[2];

TEST(unpark_wakes_oldest_first_and_reports_more)
{
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        init_parker(&pair_parkers[i], &pair_word, &pair_park_tokens[i]);
        /* One at a time, so that their order in the queue is known. */
        start_thread(&threads[i], parker_main, &pair_parkers[i]);
        SPIN_UNTIL(parkers_parked(pair_parkers, i + 1));
        CHECK(parkers_parked(pair_parkers, i + 1));
    }

    unpark_record first = {.returned = &pair_wake_tokens[0]};
    CHECK(ft_parking_lot_unpark(&pair_word, record_unpark, &first));
    CHECK(first.park_arg == &pair_park_tokens[0]);
    CHECK(first.has_more);
    join_thread(threads[0]);
    CHECK_EQ(atomic_load(&pair_parkers[0].status), FT_OK);
    CHECK(atomic_load(&pair_parkers[0].wake_arg) == &pair_wake_tokens[0]);
    CHECK(!atomic_load(&pair_parkers[1].returned));

    unpark_record second = {.returned = &pair_wake_tokens[1]};
    CHECK(ft_parking_lot_unpark(&pair_word, record_unpark, &second));
    CHECK(second.park_arg == &pair_park_tokens[1]);
    CHECK(!second.has_more);
    join_thread(threads[1]);
    CHECK_EQ(atomic_load(&pair_parkers[1].status), FT_OK);
    CHECK(atomic_load(&pair_parkers[1].wake_arg) == &pair_wake_tokens[1]);
}

/* unpark_all wakes every waiter on its address, and none parked on another address. */
#define ALL_PARKERS 6

static uint32_t all_word, other_word;
static parker all_parkers[ALL_PARKERS + 1];

TEST(unpark_all_wakes_every_waiter_on_the_address)
{
    pthread_t threads[ALL_PARKERS + 1];
    for (int i = 0; i < ALL_PARKERS; i++)
        init_parker(&all_parkers[i], &all_word, NULL);
    init_parker(&all_parkers[ALL_PARKERS], &other_word, NULL);
    for (int i = 0; i <= ALL_PARKERS; i++)
        start_thread(&threads[i], parker_main, &all_parkers[i]);
    SPIN_UNTIL(parkers_parked(all_parkers, ALL_PARKERS + 1));
    CHECK(parkers_parked(all_parkers, ALL_PARKERS + 1));

    CHECK_EQ(ft_parking_lot_unpark_all(&all_word), ALL_PARKERS);
    for (int i = 0; i < ALL_PARKERS; i++) {
        join_thread(threads[i]);
        CHECK_EQ(atomic_load(&all_parkers[i].status), FT_OK);
    }
    CHECK(!atomic_load(&all_parkers[ALL_PARKERS].returned));
    CHECK_EQ(ft_parking_lot_unpark_all(&all_word), 0);

    CHECK(ft_parking_lot_unpark(&other_word, NULL, NULL));
    join_thread(threads[ALL_PARKERS]);
    CHECK_EQ(atomic_load(&all_parkers[ALL_PARKERS].status), FT_OK);
}

/* Waiters that park again as soon as they are woken: unpark_all must wake the waiters parked when
 * it is called, each once, and count exactly those; it must not chase the ones that park again. */
#define REPARKERS 6
#define REPARK_ROUNDS 5

static _Atomic(uint32_t) repark_word;
static atomic_bool repark_stop;
static atomic_int repark_wakeups;
static thread_identity reparker_ids[REPARKERS];

static void *reparker_main(void *arg)
{
    int index = (int)(intptr_t)arg;
    publish_identity(&reparker_ids[index], __builtin_frame_address(0));
    uint32_t expected = 0;
    while (!atomic_load(&repark_stop)) {
        ft_status status = ft_parking_lot_park(&repark_word, &expected, 4, WAIT_LIMIT_NS, NULL, NULL);
        if (status == FT_OK)
            atomic_fetch_add(&repark_wakeups, 1);
        else if (status != FT_EAGAIN)
            break; /* timed out: the main thread has failed already */
    }
    return NULL;
}

TEST(unpark_all_wakes_each_parked_waiter_once)
{
    atomic_store(&repark_word, 0);
    atomic_store(&repark_stop, false);
    atomic_store(&repark_wakeups, 0);
    pthread_t threads[REPARKERS];
    for (int i = 0; i < REPARKERS; i++) {
        forget_identity(&reparker_ids[i]);
        start_thread(&threads[i], reparker_main, (void *)(intptr_t)i);
    }
    for (int round = 1; round <= REPARK_ROUNDS; round++) {
        SPIN_UNTIL(all_parked(reparker_ids, REPARKERS));
        CHECK(all_parked(reparker_ids, REPARKERS));
        CHECK_EQ(atomic_load(&repark_wakeups), (round - 1) * REPARKERS);
        CHECK_EQ(ft_parking_lot_unpark_all(&repark_word), REPARKERS);
        SPIN_UNTIL(atomic_load(&repark_wakeups) >= round * REPARKERS &&
                   all_parked(reparker_ids, REPARKERS));
        CHECK_EQ(atomic_load(&repark_wakeups), round * REPARKERS);
    }
    /* Change the value first, so a waiter about to park again sees it and stops. */
    atomic_store(&repark_stop, true);
    atomic_store(&repark_word, 1);
    ft_parking_lot_unpark_all(&repark_word);
    for (int i = 0; i < REPARKERS; i++)
        join_thread(threads[i]);
}

/* ---- timeouts racing wake-ups -------------------------------------------------------------- */

#define RACE_PARKERS 3
#define RACE_PARKS_EACH 2000

static uint32_t race_word; /* never changes: every park is a real wait */
static atomic_int race_parkers_done;
static atomic_long race_ok_returns, race_timeouts;
static long race_unpark_successes, race_callbacks_with_waiter; /* the unparker's own counts */

/* Each park gives its own address as park_arg; the unparker hands it back as wake_arg, so a waiter
 * can tell that the wake-up meant for it is the one it got. */
static void *race_parker_main(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    uint32_t expected = 0;
    for (int i = 0; i < RACE_PARKS_EACH; i++) {
        seed = seed * 1103515245u + 12345u;
        int64_t timeout = (int64_t)(seed >> 16) % (50 * FT_NS_PER_US);
        int token;
        void *wake_arg = NULL;
        ft_status status = ft_parking_lot_park(&race_word, &expected, 4, timeout, &token, &wake_arg);
        if (status == FT_OK) {
            CHECK_THREAD(wake_arg == &token);
            atomic_fetch_add(&race_ok_returns, 1);
        } else {
            CHECK_THREAD(status == FT_ETIMEDOUT);
            atomic_fetch_add(&race_timeouts, 1);
        }
    }
    atomic_fetch_add(&race_parkers_done, 1);
    return NULL;
}

static void *hand_back_park_arg(void *arg, void *park_arg, bool has_more)
{
    (void)has_more;
    if (park_arg)
        ++*(long *)arg;
    return park_arg;
}

static void *race_unparker_main(void *arg)
{
    (void)arg;
    unsigned seed = 12345;
    while (atomic_load(&race_parkers_done) < RACE_PARKERS) {
        if (ft_parking_lot_unpark(&race_word, hand_back_park_arg, &race_callbacks_with_waiter))
            race_unpark_successes++;
        /* Pause a few microseconds, at random, so that some parks time out and some are woken,
         * and the two often meet. */
        seed = seed * 1103515245u + 12345u;
        int64_t until = now_ns() + (int64_t)(seed >> 16) % (40 * FT_NS_PER_US);
        while (now_ns() < until)
            ft_cpu_relax();
    }
    return NULL;
}

TEST(timeouts_racing_unparks_lose_no_wakeup)
{
    atomic_store(&race_parkers_done, 0);
    atomic_store(&race_ok_returns, 0);
    atomic_store(&race_timeouts, 0);
    race_unpark_successes = race_callbacks_with_waiter = 0;
    pthread_t parkers[RACE_PARKERS], unparker;
    for (int i = 0; i < RACE_PARKERS; i++)
        start_thread(&parkers[i], race_parker_main, (void *)(uintptr_t)(i + 1));
    start_thread(&unparker, race_unparker_main, NULL);
    for (int i = 0; i < RACE_PARKERS; i++)
        join_thread(parkers[i]);
    join_thread(unparker);
    CHECK_EQ(atomic_load(&race_ok_returns) + atomic_load(&race_timeouts),
             RACE_PARKERS * RACE_PARKS_EACH);
    CHECK_EQ(race_unpark_successes, atomic_load(&race_ok_returns));
    CHECK_EQ(race_callbacks_with_waiter, race_unpark_successes);
    CHECK(!ft_parking_lot_unpark(&race_word, NULL, NULL));
    printf("     %ld wake-ups, %ld timeouts\n", race_unpark_successes, atomic_load(&race_timeouts));
}

int main(void)
{
    RUN(park_compares_exactly_size_bytes);
    RUN(park_with_mismatched_value_of_each_type);
    RUN(park_timeouts);
    RUN(unpark_without_waiter);
    RUN(unpark_hands_args_to_single_waiter);
    RUN(unpark_wakes_oldest_first_and_reports_more);
    RUN(unpark_all_wakes_every_waiter_on_the_address);
    RUN(unpark_all_wakes_each_parked_waiter_once);
    RUN(timeouts_racing_unparks_lose_no_wakeup);
    return harness_done();
}
