/* bench_urcu.h: liburcu's QSBR flavour as the baseline of the qsbr.* figures.
 *
 * liburcu's fast paths are inlined only where _LGPL_SOURCE is defined before its headers; that
 * definition (and every liburcu call) is kept in bench_urcu.c, so the rest of the benchmark is
 * compiled without it. Everything here exists only when bench/CMakeLists.txt found liburcu-qsbr. */
#ifndef FTRT_BENCH_URCU_H
#define FTRT_BENCH_URCU_H

#include "bench.h"

#ifdef FTRT_BENCH_HAVE_URCU_QSBR

/* Register / unregister the calling thread as a QSBR reader (it is online while registered). */
void bench_urcu_register_thread(void);
void bench_urcu_unregister_thread(void);

/* Report a quiescent state (the inlined rcu_quiescent_state). */
void bench_urcu_quiescent(void);

/* The loop of safepoint.poll's shape with an inlined rcu_quiescent_state per iteration: ns per
 * iteration. *sink carries the loop's value in and out, so it cannot be folded. */
double bench_urcu_quiescent_loop_ns(uint64_t iterations, uint64_t *sink);

/* A call_rcu helper thread created by the calling thread (which should be unpinned: the helper
 * inherits its CPU mask), and handing it to the calling thread for its call_rcu. */
void *bench_urcu_helper_new(void);
void bench_urcu_use_helper(void *helper); /* NULL: back to the default */
void bench_urcu_helper_free(void *helper);

/* A block of 48 bytes from malloc with room for call_rcu's link, as a baseline user would make. */
void *bench_urcu_block_new(void);

/* Retire `count` blocks with call_rcu (the callback frees them) on a registered thread, reporting
 * a quiescent state after each, then rcu_barrier() until every callback ran. Returns the elapsed
 * ns; *freed receives how many callbacks ran. */
uint64_t bench_urcu_retire_all(void **blocks, size_t count, uint64_t *freed);

#endif
#endif
