/* bench_urcu.c: the liburcu (QSBR flavour) side of the qsbr.* figures.
 *
 * A user who wants the fastest liburcu reader defines _LGPL_SOURCE, which turns rcu_quiescent_state
 * into an inline load-and-compare instead of a call into liburcu-qsbr.so (0.90 vs 6.8 ns here). The
 * baseline has to be that best case, so this file defines it, and keeps it to itself: the rest of
 * the benchmark must not be compiled with liburcu's static inlines in scope.
 *
 * Delayed free with liburcu is call_rcu: the caller queues a callback on a helper thread, which waits
 * for a grace period and runs it; here the callback frees a 48-byte malloc block. */
#include "bench_urcu.h"

#ifdef FTRT_BENCH_HAVE_URCU_QSBR

#define _LGPL_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <urcu-qsbr.h>

void bench_urcu_register_thread(void)
{
    rcu_register_thread();
}

void bench_urcu_unregister_thread(void)
{
    rcu_unregister_thread();
}

void bench_urcu_quiescent(void)
{
    rcu_quiescent_state();
}

/* The same loop as bench_qsbr.c's ft_qsbr_quiescent loop, started in a fresh 64-byte block for
 * the same reason as safepoint.poll's (see bench_stw.c). */
double bench_urcu_quiescent_loop_ns(uint64_t iterations, uint64_t *sink)
{
    uint64_t x = *sink;
    uint64_t start = bench_now_ns();
    BENCH_ALIGN_CODE();
    for (uint64_t i = 0; i < iterations; i++) {
        x += i;
        BENCH_KEEP(x);
        rcu_quiescent_state();
    }
    uint64_t elapsed = bench_now_ns() - start;
    *sink = x;
    return (double)elapsed / (double)iterations;
}

void *bench_urcu_helper_new(void)
{
    struct call_rcu_data *helper = create_call_rcu_data(0, -1);
    if (!helper) {
        fprintf(stderr, "bench: create_call_rcu_data failed\n");
        exit(2);
    }
    return helper;
}

void bench_urcu_use_helper(void *helper)
{
    set_thread_call_rcu_data(helper);
}

void bench_urcu_helper_free(void *helper)
{
    call_rcu_data_free(helper);
}

typedef struct urcu_block {
    struct rcu_head head; /* 16 bytes: the link call_rcu needs, inside the block as usual */
    char payload[48 - sizeof(struct rcu_head)];
} urcu_block;

_Static_assert(sizeof(urcu_block) == 48, "the baseline frees 48-byte blocks");

/* Written only by the one helper thread that runs the callbacks: a plain load and store, so the
 * count does not add an atomic read-modify-write to the baseline's cost. rcu_barrier orders it
 * before the retiring thread's read. */
static _Atomic(uint64_t) callbacks_run;

static void free_block(struct rcu_head *head)
{
    free((urcu_block *)head);
    atomic_store_explicit(&callbacks_run,
                          atomic_load_explicit(&callbacks_run, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

void *bench_urcu_block_new(void)
{
    urcu_block *b = malloc(sizeof *b);
    if (!b) {
        fprintf(stderr, "bench: out of memory\n");
        exit(2);
    }
    b->payload[0] = 1; /* the block was used before it is retired */
    return b;
}

uint64_t bench_urcu_retire_all(void **blocks, size_t count, uint64_t *freed)
{
    uint64_t before = atomic_load_explicit(&callbacks_run, memory_order_relaxed);
    uint64_t start = bench_now_ns();
    for (size_t i = 0; i < count; i++) {
        call_rcu(&((urcu_block *)blocks[i])->head, free_block);
        rcu_quiescent_state();
    }
    rcu_barrier();
    uint64_t elapsed = bench_now_ns() - start;
    *freed = atomic_load_explicit(&callbacks_run, memory_order_relaxed) - before;
    return elapsed;
}

#endif
