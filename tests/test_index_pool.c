/* tests/test_index_pool.c: the smallest-first index pool.
 *
 * The pool's one promise is that alloc returns the smallest index not currently held. The tests check
 * it against a plain bitmap of held indices over a long random sequence, check that free never grows
 * or moves the heap (it must not allocate), and run alloc/free from several threads with a table of
 * owners that catches one index handed to two holders at once. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <time.h>

#include "ftrt.h"
#include "test_util.h"
#include "thread/index_pool.h"

static uint32_t alloc_index(ft_index_pool *p)
{
    uint32_t index = UINT32_MAX;
    CHECK_EQ(ft_index_pool_alloc(p, &index), FT_OK);
    return index;
}

/* Free, and check that freeing left the heap's storage alone: same capacity, same array. */
static void free_index(ft_index_pool *p, uint32_t index)
{
    uint32_t capacity = p->capacity;
    uint32_t *heap = p->heap;
    ft_index_pool_free(p, index);
    CHECK_EQ(p->capacity, capacity);
    CHECK(p->heap == heap);
}

TEST(smallest_first_order)
{
    ft_index_pool p;
    ft_index_pool_init(&p);
    for (uint32_t i = 0; i < 5; i++)
        CHECK_EQ(alloc_index(&p), i);
    free_index(&p, 3);
    free_index(&p, 1);
    CHECK_EQ(alloc_index(&p), 1);
    CHECK_EQ(alloc_index(&p), 3);
    CHECK_EQ(alloc_index(&p), 5);
    CHECK(p.capacity >= p.next);
    ft_index_pool_destroy(&p);
}

TEST(static_initialiser_works_like_init)
{
    ft_index_pool p = FT_INDEX_POOL_INIT;
    CHECK_EQ(alloc_index(&p), 0);
    CHECK_EQ(alloc_index(&p), 1);
    free_index(&p, 0);
    CHECK_EQ(alloc_index(&p), 0);
    CHECK_EQ(alloc_index(&p), 2);
    ft_index_pool_destroy(&p);
}

/* Enough indices to make the heap grow several times; freed in a scrambled order, they come back
 * in increasing order. */
TEST(growth_and_full_reuse)
{
    enum { COUNT = 5000 };
    ft_index_pool p;
    ft_index_pool_init(&p);
    for (uint32_t i = 0; i < COUNT; i++) {
        CHECK_EQ(alloc_index(&p), i);
        CHECK(p.capacity >= p.next);
    }
    /* 2371 is prime and does not divide COUNT, so i * 2371 % COUNT visits every index once. */
    for (uint32_t i = 0; i < COUNT; i++)
        free_index(&p, (uint32_t)((uint64_t)i * 2371 % COUNT));
    CHECK_EQ(p.size, COUNT);
    for (uint32_t i = 0; i < COUNT; i++)
        CHECK_EQ(alloc_index(&p), i);
    CHECK_EQ(alloc_index(&p), COUNT);
    ft_index_pool_destroy(&p);
}

/* ---- against a reference model ------------------------------------------------------------- */

#define MODEL_LIMIT 600 /* no more indices than this are ever held at once */
#define MODEL_STEPS 100000

static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

TEST(random_operations_match_bitmap_model)
{
    ft_index_pool p;
    ft_index_pool_init(&p);
    static bool held[MODEL_LIMIT + 1]; /* the model: which indices are handed out */
    static uint32_t held_list[MODEL_LIMIT + 1];
    memset(held, 0, sizeof held);
    uint32_t held_count = 0;
    for (long step = 0; step < MODEL_STEPS; step++) {
        /* Drift between allocating and freeing phases so the held set grows and shrinks a lot. */
        uint64_t r = next_random();
        int alloc_percent = (step / 5000) % 2 == 0 ? 65 : 35;
        bool do_alloc = held_count == 0 || (held_count < MODEL_LIMIT && (int)(r % 100) < alloc_percent);
        if (do_alloc) {
            uint32_t expected = 0;
            while (held[expected])
                expected++;
            uint32_t got = alloc_index(&p);
            CHECK_EQ(got, expected);
            held[got] = true;
            held_list[held_count++] = got;
        } else {
            uint32_t at = (uint32_t)((r >> 32) % held_count);
            uint32_t index = held_list[at];
            held_list[at] = held_list[--held_count];
            held[index] = false;
            free_index(&p, index);
        }
        CHECK(p.capacity >= p.next);
        CHECK(p.next <= MODEL_LIMIT);
    }
    ft_index_pool_destroy(&p);
}

/* ---- concurrency --------------------------------------------------------------------------- */

#define POOL_THREADS 4
#define POOL_HOLD_MAX 8 /* indices one thread holds at most */
#define POOL_ROUNDS 20000

static ft_index_pool shared_pool;
static atomic_int index_owner[POOL_THREADS * POOL_HOLD_MAX]; /* 0 = free, else thread number + 1 */
static pthread_barrier_t pool_start;

static void *pool_worker_main(void *arg)
{
    int me = (int)(intptr_t)arg + 1;
    uint32_t seed = (uint32_t)me * 2654435761u;
    uint32_t mine[POOL_HOLD_MAX];
    int count = 0;
    pthread_barrier_wait(&pool_start);
    for (int round = 0; round < POOL_ROUNDS; round++) {
        seed = seed * 1103515245u + 12345u;
        bool do_alloc = count == 0 || (count < POOL_HOLD_MAX && (seed >> 16) % 2 == 0);
        if (do_alloc) {
            uint32_t index;
            ft_status status = ft_index_pool_alloc(&shared_pool, &index);
            CHECK_THREAD(status == FT_OK);
            if (status != FT_OK)
                break;
            /* At most POOL_THREADS * POOL_HOLD_MAX - 1 others are held, so smallest-first stays
             * below this bound. */
            CHECK_THREAD(index < POOL_THREADS * POOL_HOLD_MAX);
            if (index >= POOL_THREADS * POOL_HOLD_MAX)
                break;
            int expected_free = 0;
            CHECK_THREAD(atomic_compare_exchange_strong(&index_owner[index], &expected_free, me));
            mine[count++] = index;
        } else {
            int at = (int)((seed >> 8) % (uint32_t)count);
            uint32_t index = mine[at];
            mine[at] = mine[--count];
            int expected_me = me;
            CHECK_THREAD(atomic_compare_exchange_strong(&index_owner[index], &expected_me, 0));
            ft_index_pool_free(&shared_pool, index);
        }
    }
    while (count > 0) {
        uint32_t index = mine[--count];
        atomic_store(&index_owner[index], 0);
        ft_index_pool_free(&shared_pool, index);
    }
    return NULL;
}

TEST(concurrent_alloc_free_never_shares_an_index)
{
    ft_index_pool_init(&shared_pool);
    for (int i = 0; i < POOL_THREADS * POOL_HOLD_MAX; i++)
        atomic_store(&index_owner[i], 0);
    CHECK_EQ(pthread_barrier_init(&pool_start, NULL, POOL_THREADS), 0);
    pthread_t threads[POOL_THREADS];
    for (int i = 0; i < POOL_THREADS; i++)
        start_thread(&threads[i], pool_worker_main, (void *)(intptr_t)i);
    for (int i = 0; i < POOL_THREADS; i++)
        join_thread(threads[i]);
    pthread_barrier_destroy(&pool_start);
    /* Everything was given back: the pool starts again from 0. */
    CHECK_EQ(shared_pool.size, shared_pool.next);
    CHECK(!ft_mutex_is_locked(&shared_pool.mutex));
    for (uint32_t i = 0; i < shared_pool.next; i++)
        CHECK_EQ(alloc_index(&shared_pool), i);
    ft_index_pool_destroy(&shared_pool);
}

static void free_twice(void *arg)
{
    (void)arg;
    ft_index_pool pool = FT_INDEX_POOL_INIT;
    uint32_t a, b;
    ft_index_pool_alloc(&pool, &a);
    ft_index_pool_alloc(&pool, &b);
    ft_index_pool_free(&pool, a);
    ft_index_pool_free(&pool, a);
}

static void free_never_handed_out(void *arg)
{
    (void)arg;
    ft_index_pool pool = FT_INDEX_POOL_INIT;
    uint32_t a;
    ft_index_pool_alloc(&pool, &a);
    ft_index_pool_free(&pool, a + 1);
}

TEST(bad_frees_are_fatal)
{
    CHECK_DEATH(free_twice, NULL, "ft_index_pool_free", "already free");
    CHECK_DEATH(free_never_handed_out, NULL, "ft_index_pool_free", "never handed out");
}

int main(void)
{
    RUN(smallest_first_order);
    RUN(static_initialiser_works_like_init);
    RUN(growth_and_full_reuse);
    RUN(random_operations_match_bitmap_model);
    RUN(concurrent_alloc_free_never_shares_an_index);
    RUN(bad_frees_are_fatal);
    return harness_done();
}
