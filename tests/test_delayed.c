/* tests/test_delayed.c: delayed free and delayed decref, and QSBR's hold on empty heap pages.
 *
 * Blocks handed to ft_free_delayed must stay allocated, with their contents untouched, until every
 * attached thread has passed a quiescent point after their goal; references handed to
 * ft_decref_delayed likewise. The tests hold a helper thread (a commanded worker, tests/test_util.h)
 * attached without passing a safepoint, poison blocks with patterns, and check that the patterns survive and the allocator never
 * hands the blocks out again until the worker passes one; then that the blocks are free. ftrt has its
 * own heap, so ASan cannot see a block freed too early: the checks are the patterns, the allocator,
 * the heap walk (with the world stopped) and ft_qsbr_get_stats.
 *
 * Also: the self-advance rules (after 127 items, for a block over 1 MiB, after more than 1 MiB in
 * total; each sets FT_PENDING_DELAYED so the next safepoint processes), a stop-the-world frees queued
 * blocks but runs no destructor, a queue that cannot grow frees at once, re-entrant destructors
 * (which queue more items and process the queue themselves) free every object exactly once, a
 * stopping thread hands what it could not free to the runtime's queue, a destructor run from that
 * queue may stop the world, 10,000 short-lived threads leave the queues bounded, lock-free readers
 * never see a retired block reused, an item queued by a destructor during processing waits for a goal
 * of its own, items without a goal yet survive a stop-the-world's compaction, and an emptied page is
 * not given to another size class before its goal. What a stopping thread leaves in the runtime's
 * queue (and what those destructors queue in turn) runs on a live thread that only passes safepoints
 * and advances, runs in ft_runtime_free when no thread is left, and includes what the thread's last
 * merges queued; the core that runs inside a caller's stop drops queued references as merges and
 * hands the dead back.
 *
 * Waits spin on atomics with a generous time limit; the test's own handshakes are sequentially
 * consistent. No sleeps. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include "ftrt.h"
#include "harness.h"
#include "reclaim/delayed.h" /* ft_delayed_process_stopped, the core that runs inside a stop */
#include "thread/thread.h"   /* FT_PENDING_DELAYED */

/* ---- helpers ------------------------------------------------------------------------------------- */

#define WAIT_LIMIT_NS (30 * INT64_C(1000000000)) /* far beyond any correct wait, even under TSan */
#include "test_util.h"
#define MIB ((size_t)1 << 20)

static ft_qsbr_stats qsbr_stats(ft_runtime *rt)
{
    ft_qsbr_stats s;
    ft_qsbr_get_stats(rt, &s);
    return s;
}

static bool delayed_pending_bit(ft_thread *t)
{
    return (atomic_load(&((struct ft_thread_head *)t)->pending) & FT_PENDING_DELAYED) != 0;
}

/* The write sequence, read without advancing it or stopping the world. */
static uint64_t wr_seq(ft_runtime *rt)
{
    return ft_qsbr_next(rt) - 2;
}

/* Make every queued goal reachable and reach it on t alone (the only attached thread). */
static void quiesce(ft_runtime *rt, ft_thread *t)
{
    ft_qsbr_advance(rt);
    ft_safepoint(t);
    ft_delayed_process(t);
}

/* An object type whose deallocs are counted. */
static const ft_type counted_type = {
    .name = "counted",
    .basic_size = sizeof(ft_object) + 16,
    .dealloc = count_dealloc,
};

static void fill(uint64_t *p, size_t words, uint64_t pattern)
{
    for (size_t i = 0; i < words; i++)
        p[i] = pattern ^ (i * 0x9E3779B97F4A7C15ull);
}

static bool intact(const uint64_t *p, size_t words, uint64_t pattern)
{
    for (size_t i = 0; i < words; i++)
        if (p[i] != (pattern ^ (i * 0x9E3779B97F4A7C15ull)))
            return false;
    return true;
}

/* ---- blocks wait for their goal ------------------------------------------------------------------ */

#define POISON_BLOCKS 8
#define POISON_SIZE 256

typedef struct block_search {
    void *const *blocks;
    int n;
    int found;
} block_search;

static bool find_blocks(void *block, size_t size, void *arg)
{
    (void)size;
    block_search *s = arg;
    for (int i = 0; i < s->n; i++)
        s->found += s->blocks[i] == block;
    return true;
}

TEST(block_freed_only_after_every_thread_quiesced)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded b;
    commanded_start(a, &b, rt);
    commanded_do(a, &b, cmd_hold, NULL);

    void *blocks[POISON_BLOCKS];
    for (int i = 0; i < POISON_BLOCKS; i++) {
        blocks[i] = ft_malloc(a, POISON_SIZE);
        CHECK(blocks[i] != NULL);
        fill(blocks[i], POISON_SIZE / 8, 0xA5A5A5A5A5A5A5A5ull + (uint64_t)i);
    }
    for (int i = 0; i < POISON_BLOCKS; i++)
        ft_free_delayed(a, blocks[i], POISON_SIZE);
    ft_object *obj = ft_alloc(a, &counted_type);
    CHECK(obj != NULL);
    atomic_store(&counted_deallocs, 0);
    ft_decref_delayed(a, obj);
    CHECK_EQ(atomic_load(&counted_deallocs), 0); /* not at once */

    uint64_t goal = ft_qsbr_advance(rt); /* the queued goals are reachable now, but b holds */
    for (int round = 0; round < 50; round++) {
        ft_safepoint(a);
        ft_delayed_process(a);
        sched_yield();
    }
    CHECK(!ft_qsbr_poll(a, goal));
    CHECK_EQ(atomic_load(&counted_deallocs), 0);
    for (int i = 0; i < POISON_BLOCKS; i++)
        CHECK(intact(blocks[i], POISON_SIZE / 8, 0xA5A5A5A5A5A5A5A5ull + (uint64_t)i));
    /* The allocator does not hand them out again (a freed block of this size would come back). */
    void *probes[4 * POISON_BLOCKS];
    for (int j = 0; j < 4 * POISON_BLOCKS; j++) {
        probes[j] = ft_malloc(a, POISON_SIZE);
        CHECK(probes[j] != NULL);
        for (int i = 0; i < POISON_BLOCKS; i++)
            CHECK(probes[j] != blocks[i]);
    }
    for (int j = 0; j < 4 * POISON_BLOCKS; j++)
        ft_free(a, probes[j]);

    /* b passes a quiescent point: now the owner's processing frees them. */
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    CHECK(ft_qsbr_poll(a, goal));
    ft_delayed_process(a);
    CHECK_EQ(atomic_load(&counted_deallocs), 1);
    commanded_do(a, &b, cmd_resume, NULL);
    ft_stop_the_world(rt);
    block_search search = {blocks, POISON_BLOCKS, 0};
    ft_status walked = ft_heap_visit(rt, FT_HEAP_RAW, find_blocks, &search);
    ft_qsbr_stats during = qsbr_stats(rt); /* the caller has stopped the world: no nested stop */
    ft_start_the_world(rt);
    CHECK_EQ(walked, FT_OK);
    CHECK_EQ(search.found, 0);
    CHECK_EQ(during.pending_items, 0);
    CHECK_EQ(during.freed_items, POISON_BLOCKS + 1);

    commanded_finish(a, &b);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(queued_blocks_are_live_until_freed)
{
    /* Seen from the heap walk: a queued block is still allocated; once processed, it is not. */
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    void *blocks[POISON_BLOCKS];
    for (int i = 0; i < POISON_BLOCKS; i++) {
        blocks[i] = ft_malloc(a, POISON_SIZE);
        CHECK(blocks[i] != NULL);
        ft_free_delayed(a, blocks[i], POISON_SIZE);
    }
    ft_safepoint(a);
    ft_delayed_process(a); /* nobody advanced: nothing is due */
    ft_stop_the_world(rt);
    block_search search = {blocks, POISON_BLOCKS, 0};
    CHECK_EQ(ft_heap_visit(rt, FT_HEAP_RAW, find_blocks, &search), FT_OK);
    ft_qsbr_stats s = qsbr_stats(rt);
    ft_start_the_world(rt); /* frees them: every other thread is quiescent now */
    CHECK_EQ(search.found, POISON_BLOCKS);
    CHECK_EQ(s.pending_items, POISON_BLOCKS);
    CHECK_EQ(s.pending_bytes, POISON_BLOCKS * POISON_SIZE);
    ft_qsbr_stats after = qsbr_stats(rt);
    CHECK_EQ(after.pending_items, 0);
    CHECK_EQ(after.freed_items, POISON_BLOCKS);
    ft_stop_the_world(rt);
    search.found = 0;
    CHECK_EQ(ft_heap_visit(rt, FT_HEAP_RAW, find_blocks, &search), FT_OK);
    ft_start_the_world(rt);
    CHECK_EQ(search.found, 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(stop_frees_blocks_but_runs_no_destructor)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    atomic_store(&counted_deallocs, 0);
    void *p = ft_malloc(a, 100);
    CHECK(p != NULL);
    ft_object *obj = ft_alloc(a, &counted_type);
    CHECK(obj != NULL);
    ft_free_delayed(a, p, 100);
    ft_decref_delayed(a, obj);
    ft_qsbr_stats s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 2);
    CHECK_EQ(s.pending_bytes, 100);
    CHECK_EQ(s.freed_items, 0);
    s = qsbr_stats(rt); /* the first stop freed the block; the reference stays queued */
    CHECK_EQ(s.pending_items, 1);
    CHECK_EQ(s.pending_bytes, 0);
    CHECK_EQ(s.freed_items, 1);
    CHECK_EQ(atomic_load(&counted_deallocs), 0);
    quiesce(rt, a);
    CHECK_EQ(atomic_load(&counted_deallocs), 1);
    s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 0);
    CHECK_EQ(s.freed_items, 2);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* A delayed decref whose queue cannot grow drops the reference at once; inside a stop the caller
 * holds, the object that dies waits for the caller's restart, so no destructor runs inside the stop. */
TEST(out_of_memory_decref_inside_the_callers_stop_waits_for_the_restart)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    atomic_store(&counted_deallocs, 0);
    ft_object *obj = ft_alloc(a, &counted_type);
    CHECK(obj != NULL);
    ft_stop_the_world(rt);
    ft_debug_fail_allocation(rt, 0); /* the queue's first chunk */
    ft_decref_delayed(a, obj);
    ft_debug_fail_allocation(rt, -1);
    int64_t deallocs_inside = atomic_load(&counted_deallocs);
    ft_start_the_world(rt);
    CHECK_EQ(deallocs_inside, 0);
    CHECK_EQ(atomic_load(&counted_deallocs), 1);
    ft_qsbr_stats stats;
    ft_qsbr_get_stats(rt, &stats);
    CHECK_EQ(stats.pending_items, 0); /* it never was queued */
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* The core a collector runs inside its own stop: with a dead list it also drops the queued
 * references, merging them, and hands back the objects that died, for the caller to deallocate after
 * the restart. */
TEST(stopped_core_drops_references_and_hands_the_dead_back)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    int64_t total = ft_runtime_reftotal(rt);
    atomic_store(&counted_deallocs, 0);
    ft_object *dies = ft_alloc(a, &counted_type), *lives = ft_alloc(a, &counted_type);
    CHECK(dies != NULL && lives != NULL);
    ft_decref_delayed(a, dies);
    ft_incref(lives);
    ft_decref_delayed(a, lives);
    ft_free_delayed(a, ft_malloc(a, 64), 64);
    /* None is due: no advance, and a has passed no quiescent point since. */

    ft_stop_the_world(rt);
    ft_dead_list dead = {0};
    ft_delayed_process_stopped(rt, &dead);
    ft_qsbr_stats inside;
    ft_qsbr_get_stats(rt, &inside);
    int64_t deallocs_inside = atomic_load(&counted_deallocs);
    ft_start_the_world(rt);
    CHECK_EQ(inside.pending_items, 0);
    CHECK_EQ(inside.freed_items, 3);
    CHECK_EQ(deallocs_inside, 0);
    CHECK_EQ(dead.count, 1);
    CHECK_EQ(atomic_load(&counted_deallocs), 0);
    CHECK_EQ(ft_dead_list_dealloc(&dead), 1);
    CHECK_EQ(atomic_load(&counted_deallocs), 1);
    CHECK_EQ(ft_refcount(lives), 1);
    ft_decref(lives);
    CHECK_EQ(atomic_load(&counted_deallocs), 2);
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(rt), total);
#else
    (void)total;
#endif
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(queue_out_of_memory_frees_at_once)
{
    /* ft_free_delayed never fails: if its queue cannot grow, the world is stopped and the block
     * freed (a reference dropped) right away. */
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    atomic_store(&counted_deallocs, 0);
    void *p = ft_malloc(a, POISON_SIZE);
    CHECK(p != NULL);
    ft_debug_fail_allocation(rt, 0); /* the queue's first chunk */
    ft_free_delayed(a, p, POISON_SIZE);
    ft_debug_fail_allocation(rt, -1);
    ft_stop_the_world(rt);
    void *blocks[1] = {p};
    block_search search = {blocks, 1, 0};
    CHECK_EQ(ft_heap_visit(rt, FT_HEAP_RAW, find_blocks, &search), FT_OK);
    ft_qsbr_stats s = qsbr_stats(rt);
    ft_start_the_world(rt);
    CHECK_EQ(search.found, 0);
    CHECK_EQ(s.pending_items, 0);

    ft_object *obj = ft_alloc(a, &counted_type);
    CHECK(obj != NULL);
    ft_debug_fail_allocation(rt, 0);
    ft_decref_delayed(a, obj);
    ft_debug_fail_allocation(rt, -1);
    CHECK_EQ(atomic_load(&counted_deallocs), 1);
    CHECK_EQ(qsbr_stats(rt).pending_items, 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- the self-advance rules ---------------------------------------------------------------------- */

TEST(item_128_advances)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    uint64_t w0 = wr_seq(rt);
    for (int i = 0; i < 127; i++)
        ft_free_delayed(a, ft_malloc(a, 16), 16);
    CHECK_EQ(wr_seq(rt), w0);
    CHECK(!delayed_pending_bit(a));
    ft_free_delayed(a, ft_malloc(a, 16), 16); /* the 128th */
    CHECK_EQ(wr_seq(rt), w0 + 2);
    CHECK(delayed_pending_bit(a));
    /* The next safepoint processes: every queued goal is reached by the caller alone. */
    ft_safepoint(a);
    CHECK(!delayed_pending_bit(a));
    ft_qsbr_stats s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 0);
    CHECK_EQ(s.freed_items, 128);
    CHECK_EQ(s.wr_seq, w0 + 2);

    /* The count restarts after the advance; references count as items too. (A new thread state,
     * so that its queue's first chunk is empty: a full chunk sets the bit as well.) */
    ft_thread_stop(a);
    a = ft_thread_start(rt);
    CHECK(a != NULL);
    w0 = wr_seq(rt);
    atomic_store(&counted_deallocs, 0);
    for (int i = 0; i < 100; i++)
        ft_free_delayed(a, ft_malloc(a, 32), 32);
    for (int i = 0; i < 27; i++)
        ft_decref_delayed(a, ft_alloc(a, &counted_type));
    CHECK_EQ(wr_seq(rt), w0);
    CHECK(!delayed_pending_bit(a));
    ft_decref_delayed(a, ft_alloc(a, &counted_type));
    CHECK_EQ(wr_seq(rt), w0 + 2);
    CHECK(delayed_pending_bit(a));
    ft_safepoint(a);
    CHECK_EQ(atomic_load(&counted_deallocs), 28);
    s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(block_over_1mib_advances_at_once)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    uint64_t w0 = wr_seq(rt);
    void *big = ft_malloc(a, MIB + 64);
    CHECK(big != NULL);
    ft_free_delayed(a, big, MIB + 64);
    CHECK_EQ(wr_seq(rt), w0 + 2);
    CHECK(delayed_pending_bit(a));
    ft_safepoint(a);
    CHECK(!delayed_pending_bit(a));
    ft_qsbr_stats s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 0);
    CHECK_EQ(s.freed_items, 1);

    /* Exactly 1 MiB is not over the limit; one more byte pending is. */
    void *mib = ft_malloc(a, MIB);
    CHECK(mib != NULL);
    ft_free_delayed(a, mib, MIB);
    CHECK_EQ(wr_seq(rt), w0 + 2);
    CHECK(!delayed_pending_bit(a));
    ft_free_delayed(a, ft_malloc(a, 16), 16);
    CHECK_EQ(wr_seq(rt), w0 + 4);
    CHECK(delayed_pending_bit(a));
    ft_safepoint(a);
    s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 0);
    CHECK_EQ(s.freed_items, 3);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(over_1mib_in_total_advances)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    const size_t size = 64 * 1024;
    uint64_t w0 = wr_seq(rt);
    for (int i = 0; i < 16; i++) { /* exactly 1 MiB in total */
        void *p = ft_malloc(a, size);
        CHECK(p != NULL);
        ft_free_delayed(a, p, size);
    }
    CHECK_EQ(wr_seq(rt), w0);
    CHECK(!delayed_pending_bit(a));
    void *p = ft_malloc(a, size);
    CHECK(p != NULL);
    ft_free_delayed(a, p, size);
    CHECK_EQ(wr_seq(rt), w0 + 2);
    CHECK(delayed_pending_bit(a));
    ft_safepoint(a);
    ft_qsbr_stats s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 0);
    CHECK_EQ(s.freed_items, 17);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- re-entrant destructors ---------------------------------------------------------------------- */

#define ROOT_CHILDREN 300
#define GRANDCHILDREN 2
#define TREE_NODES (1 + ROOT_CHILDREN + ROOT_CHILDREN * GRANDCHILDREN)
#define NODE_BUFFER_WORDS 24

typedef struct node {
    ft_object ob;
    uint32_t serial;
    uint32_t nchildren;
    ft_object **children; /* ft_malloc'd; each holds a reference */
    uint64_t *buffer;     /* ft_malloc'd, patterned with the serial */
    bool process_in_dealloc;
} node;

static _Atomic uint32_t node_deallocs[TREE_NODES];
static _Atomic int node_buffer_damage;

static void node_dealloc(ft_object *self)
{
    node *n = (node *)self;
    ft_thread *t = ft_thread_current();
    CHECK_THREAD(t != NULL);
    CHECK_THREAD(n->serial < TREE_NODES);
    if (!t || n->serial >= TREE_NODES)
        return;
    atomic_fetch_add(&node_deallocs[n->serial], 1);
    if (n->buffer) {
        if (!intact(n->buffer, NODE_BUFFER_WORDS, n->serial))
            atomic_fetch_add(&node_buffer_damage, 1);
        ft_free_delayed(t, n->buffer, NODE_BUFFER_WORDS * 8);
    }
    for (uint32_t i = 0; i < n->nchildren; i++)
        ft_decref_delayed(t, n->children[i]);
    ft_free_delayed(t, n->children, n->nchildren * sizeof(ft_object *));
    if (n->process_in_dealloc)
        ft_delayed_process(t);
}

static const ft_type node_type = {
    .name = "node",
    .basic_size = sizeof(node),
    .dealloc = node_dealloc,
};

static node *node_new(ft_thread *t, uint32_t *serial, uint32_t nchildren)
{
    node *n = (node *)ft_alloc(t, &node_type);
    if (!n)
        return NULL;
    n->serial = (*serial)++;
    n->nchildren = nchildren;
    n->children = ft_malloc(t, (nchildren ? nchildren : 1) * sizeof(ft_object *));
    n->buffer = ft_malloc(t, NODE_BUFFER_WORDS * 8);
    if (!n->children || !n->buffer)
        return NULL;
    fill(n->buffer, NODE_BUFFER_WORDS, n->serial);
    n->process_in_dealloc = n->serial % 3 == 0;
    return n;
}

static uint32_t total_node_deallocs(void)
{
    uint32_t total = 0;
    for (int i = 0; i < TREE_NODES; i++)
        total += atomic_load(&node_deallocs[i]);
    return total;
}

TEST(reentrant_destructors_free_everything_once)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    for (int i = 0; i < TREE_NODES; i++)
        atomic_store(&node_deallocs[i], 0);
    atomic_store(&node_buffer_damage, 0);
    uint32_t serial = 0;
    node *root = node_new(a, &serial, ROOT_CHILDREN);
    CHECK(root != NULL);
    for (uint32_t c = 0; c < ROOT_CHILDREN; c++) {
        node *child = node_new(a, &serial, GRANDCHILDREN);
        CHECK(child != NULL);
        for (uint32_t g = 0; g < GRANDCHILDREN; g++) {
            node *grandchild = node_new(a, &serial, 0);
            CHECK(grandchild != NULL);
            child->children[g] = &grandchild->ob; /* the allocation's reference moves in */
        }
        root->children[c] = &child->ob;
    }
    CHECK_EQ(serial, TREE_NODES);

    ft_decref_delayed(a, &root->ob);
    CHECK_EQ(total_node_deallocs(), 0);
    /* Each round reaches every goal queued so far; destructors queue more with later goals. */
    for (int round = 0; round < 100 && total_node_deallocs() < TREE_NODES; round++)
        quiesce(rt, a);
    quiesce(rt, a);
    quiesce(rt, a);
    CHECK_EQ(total_node_deallocs(), TREE_NODES);
    for (int i = 0; i < TREE_NODES; i++)
        CHECK_EQ(atomic_load(&node_deallocs[i]), 1);
    CHECK_EQ(atomic_load(&node_buffer_damage), 0);
    CHECK_THREADS_OK();
    ft_qsbr_stats s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 0);
    /* every node, its children array and its buffer */
    CHECK_EQ(s.freed_items, 3 * TREE_NODES);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- a stopping thread hands over what it cannot free -------------------------------------------- */

#define HANDOVER_ITEMS 40

static void cmd_queue_and_stop(commanded *w)
{
    /* Queue references to objects the worker owns and blocks, then let the worker stop. */
    for (int i = 0; i < HANDOVER_ITEMS; i++) {
        ft_object *o = ft_alloc(w->t, &counted_type);
        CHECK_THREAD(o != NULL);
        ft_decref_delayed(w->t, o);
    }
    for (int i = 0; i < HANDOVER_ITEMS; i++)
        ft_free_delayed(w->t, ft_malloc(w->t, 48), 48);
    atomic_store(&w->quit, true);
}

TEST(stopping_thread_hands_over_to_the_runtime)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    atomic_store(&counted_deallocs, 0);
    commanded b;
    commanded_start(a, &b, rt);
    ft_safepoint(a);
    /* From here a passes no quiescent point until b has stopped. */
    b.fn = cmd_queue_and_stop;
    atomic_store(&b.posted, 1);
    AWAIT(NULL, atomic_load(&b.exited));
    CHECK(atomic_load(&b.exited));
    pthread_join(b.thread, NULL);
    CHECK_THREADS_OK();
    /* a was attached and not quiescent: b could free nothing; nothing was lost either. */
    CHECK_EQ(atomic_load(&counted_deallocs), 0);
    ft_delayed_process(a);
    CHECK_EQ(atomic_load(&counted_deallocs), 0);
    ft_qsbr_stats s = qsbr_stats(rt); /* frees the blocks (world stopped) but not the references */
    CHECK_EQ(s.pending_items, 2 * HANDOVER_ITEMS);
    CHECK_EQ(s.pending_bytes, HANDOVER_ITEMS * 48);
    /* b's stop advanced, so its goals need only a's quiescent point now (no advance here). */
    ft_safepoint(a);
    ft_delayed_process(a); /* a's own queue is empty: the runtime's queue is processed */
    CHECK_EQ(atomic_load(&counted_deallocs), HANDOVER_ITEMS);
    s = qsbr_stats(rt);
    CHECK_EQ(s.pending_items, 0);
    CHECK_EQ(s.freed_items, 2 * HANDOVER_ITEMS);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- a destructor run from the runtime's queue may stop the world -------------------------------- */

/* A destructor may do what any host code does, including stopping the world (CPython's __del__ may
 * run the GC). Here one runs from the runtime's queue while another thread stops with items it has
 * to hand over to that queue. The scenario runs in a forked child with an alarm, so that a deadlock
 * fails the test instead of hanging it. */

static ft_runtime *stw_rt;
static _Atomic int stw_phase; /* 1: in the destructor; 2: the other thread stops; 3: stop done */
static pthread_t stw_stopper;
static bool stw_stopper_started;

static void *stw_stopper_main(void *arg);

static void stw_dealloc(ft_object *self)
{
    (void)self;
    atomic_store(&stw_phase, 1);
    /* The stopper starts only now: started earlier, it could itself take x's item from the runtime's
     * queue at one of its safepoints, and its decref of x (not its owner) would wait in the main
     * thread's merge queue while the main thread waits for it. */
    stw_stopper_started = pthread_create(&stw_stopper, NULL, stw_stopper_main, NULL) == 0;
    AWAIT(NULL, !stw_stopper_started || atomic_load(&stw_phase) == 2);
    ft_qsbr_stats st;
    ft_qsbr_get_stats(stw_rt, &st); /* stops the world */
    atomic_store(&stw_phase, 3);
}

static const ft_type stw_type = {
    .name = "stops the world in dealloc",
    .basic_size = sizeof(ft_object) + 16,
    .dealloc = stw_dealloc,
};

static void *stw_handover_main(void *arg)
{
    ft_thread *t = ft_thread_start(stw_rt);
    if (!t)
        return NULL;
    ft_decref_delayed(t, arg); /* the main thread is not quiescent: this goes to the runtime queue */
    ft_thread_stop(t);
    return NULL;
}

static void *stw_stopper_main(void *arg)
{
    (void)arg;
    ft_thread *t = ft_thread_start(stw_rt);
    if (!t)
        return NULL;
    /* Started from inside the destructor, so queued now, its goal is past the destructor's thread's last quiescent point: the stop below
     * has to hand it over to the runtime's queue. */
    ft_decref_delayed(t, ft_alloc(t, &counted_type));
    atomic_store(&stw_phase, 2);
    ft_thread_stop(t);
    return NULL;
}

static int destructor_stops_world_child(void)
{
    alarm(10);
    stw_rt = ft_runtime_new(NULL);
    if (!stw_rt)
        return 2;
    ft_thread *m = ft_thread_start(stw_rt);
    ft_object *x = m ? ft_alloc(m, &stw_type) : NULL;
    if (!x)
        return 3;
    pthread_t handover;
    if (pthread_create(&handover, NULL, stw_handover_main, x) != 0)
        return 4;
    pthread_join(handover, NULL);
    ft_qsbr_advance(stw_rt);
    ft_safepoint(m);
    ft_delayed_process(m); /* x's destructor runs from the runtime's queue */
    if (!stw_stopper_started)
        return 5;
    ft_detach(m);
    pthread_join(stw_stopper, NULL);
    ft_attach(m);
    if (atomic_load(&stw_phase) != 3)
        return 6;
    quiesce(stw_rt, m);
    ft_thread_stop(m);
    return ft_runtime_free(stw_rt) == FT_OK ? 0 : 7;
}

TEST(destructor_from_runtime_queue_may_stop_the_world)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(destructor_stops_world_child());
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fprintf(stderr, "child killed by signal %d (SIGALRM %d: deadlocked)\n", WTERMSIG(status),
                SIGALRM);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

/* ---- whatever a stopping thread hands over runs -------------------------------------------------- */

/* A family: each node holds a reference to each of its children, and its dealloc drops them with
 * ft_decref_delayed (as a container dropped with ft_decref_delayed does with its items). Dropping the
 * root of a family of depth d therefore queues work d levels deep, each level queued by destructors
 * that the level above ran. */
#define FAMILY_FANOUT 4
#define FAMILY_LEVELS 3 /* the root, its children, their children */

typedef struct family {
    ft_object ob;
    uint32_t level;
    ft_object *children[FAMILY_FANOUT]; /* NULL on the last level */
} family;

static _Atomic int family_deallocs[FAMILY_LEVELS]; /* by level */

static void family_dealloc(ft_object *self)
{
    family *f = (family *)self;
    ft_thread *t = ft_thread_current();
    CHECK_THREAD(t != NULL && f->level < FAMILY_LEVELS);
    if (!t || f->level >= FAMILY_LEVELS)
        return;
    atomic_fetch_add(&family_deallocs[f->level], 1);
    for (int i = 0; i < FAMILY_FANOUT; i++)
        if (f->children[i])
            ft_decref_delayed(t, f->children[i]);
}

static const ft_type family_type = {
    .name = "family",
    .basic_size = sizeof(family),
    .dealloc = family_dealloc,
};

static family *family_new(ft_thread *t, uint32_t level)
{
    family *f = (family *)ft_alloc(t, &family_type);
    if (!f)
        return NULL;
    f->level = level;
    for (int i = 0; level + 1 < FAMILY_LEVELS && i < FAMILY_FANOUT; i++) {
        family *child = family_new(t, level + 1);
        if (!child)
            return NULL;
        f->children[i] = &child->ob; /* the allocation's reference moves in */
    }
    return f;
}

static void family_reset(void)
{
    for (int i = 0; i < FAMILY_LEVELS; i++)
        atomic_store(&family_deallocs[i], 0);
}

/* Every level freed once: 1, 4, 16. */
static bool family_all_freed(void)
{
    int expected = 1;
    for (int i = 0; i < FAMILY_LEVELS; i++, expected *= FAMILY_FANOUT)
        if (atomic_load(&family_deallocs[i]) != expected)
            return false;
    return true;
}

static void print_family(void)
{
    fprintf(stderr, "family deallocs by level: %d %d %d\n", atomic_load(&family_deallocs[0]),
            atomic_load(&family_deallocs[1]), atomic_load(&family_deallocs[2]));
}

/* On a thread that stops right after: queue the drop of a new family's root. */
static void step_drop_family(ft_thread *t, void *arg)
{
    (void)arg;
    family *root = family_new(t, 0);
    CHECK_THREAD(root != NULL);
    if (root)
        ft_decref_delayed(t, &root->ob);
}

static void *drop_family_and_stop(void *arg)
{
    ft_thread *t = ft_thread_start(arg);
    CHECK_THREAD(t != NULL);
    if (t) {
        step_drop_family(t, NULL);
        ft_thread_stop(t);
    }
    return NULL;
}

/* A live thread that only passes safepoints and advances (it never queues anything itself, so its
 * own queue never becomes due) must still run what a stopped thread left in the runtime's queue,
 * and what those destructors queue in turn. */
static void safepoints_and_advances(ft_runtime *rt, ft_thread *a)
{
    for (int i = 0; i < 1000 && !family_all_freed(); i++) {
        ft_safepoint(a);
        ft_qsbr_advance(rt);
    }
    ft_safepoint(a);
}

TEST(runtime_queue_runs_on_a_live_threads_safepoints)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);

    /* a detached while b stops: b's stop frees the root, whose children go to the runtime's
     * queue. */
    family_reset();
    on_other_thread(a, step_drop_family, NULL);
    CHECK_EQ(atomic_load(&family_deallocs[0]), 1);
    safepoints_and_advances(rt, a);
    if (!family_all_freed())
        print_family();
    CHECK(family_all_freed());

    /* a attached and not quiescent while b stops: the root itself goes to the runtime's queue. */
    family_reset();
    ft_safepoint(a);
    pthread_t b;
    CHECK_EQ(pthread_create(&b, NULL, drop_family_and_stop, rt), 0);
    CHECK_EQ(pthread_join(b, NULL), 0); /* a stays attached, passing no quiescent point */
    CHECK_THREADS_OK();
    CHECK_EQ(atomic_load(&family_deallocs[0]), 0);
    safepoints_and_advances(rt, a);
    if (!family_all_freed())
        print_family();
    CHECK(family_all_freed());

    CHECK_EQ(qsbr_stats(rt).pending_items, 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* A stopping thread merges the objects other threads dropped into its queue after it has processed
 * and handed over its delayed items; a destructor run by that merge may queue more. Those must not
 * be left behind in a queue nobody owns. */
static void cmd_new_family(commanded *w)
{
    w->arg = family_new(w->t, 0);
    CHECK_THREAD(w->arg != NULL);
}

TEST(items_queued_by_a_stopping_threads_merges_run)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    family_reset();
    commanded b;
    commanded_start(a, &b, rt);
    commanded_do(a, &b, cmd_new_family, NULL);
    family *root = b.arg;
    CHECK(root != NULL);
    commanded_do(a, &b, cmd_hold, NULL); /* b passes no more safepoints: it merges when it stops */
    ft_decref(&root->ob);        /* b's reference, dropped by a: the root goes to b's merge queue */
    ft_brc_merge(a);     /* a's outbox reaches b's queue now */
    CHECK_EQ(atomic_load(&family_deallocs[0]), 0);
    commanded_finish(a, &b);     /* b's stop merges the root and frees it */
    CHECK_EQ(atomic_load(&family_deallocs[0]), 1);
    safepoints_and_advances(rt, a);
    if (!family_all_freed())
        print_family();
    CHECK(family_all_freed());
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(runtime_free_runs_what_stopped_threads_left)
{
    /* b is the runtime's only thread: its stop frees the root, and the children's drops are left in
     * the runtime's queue with no thread to run them. ft_runtime_free runs them (and what their
     * destructors queue), on the calling OS thread, which is attached to another runtime meanwhile:
     * that stays its current thread. */
    ft_runtime *other = new_runtime(NULL);
    ft_thread *m = ft_thread_start(other);
    CHECK(m != NULL);
    ft_runtime *rt = new_runtime(NULL);
    family_reset();
    run_on_new_thread(rt, m, step_drop_family, NULL);
    CHECK_EQ(atomic_load(&family_deallocs[0]), 1);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
    if (!family_all_freed())
        print_family();
    CHECK(family_all_freed());
    CHECK(ft_thread_current() == m);
    ft_thread_stop(m);
    CHECK_EQ(ft_runtime_free(other), FT_OK);
}

/* ---- thread churn -------------------------------------------------------------------------------- */

#define CHURN_THREADS (UNDER_TSAN ? 1000 : 10000)
#define CHURN_BATCH 4
#define CHURN_SAMPLE_EVERY 500

typedef struct churn_shared {
    ft_runtime *rt;
    ft_object *shared_obj; /* owned by the main thread */
} churn_shared;

static void *churn_main(void *arg)
{
    churn_shared *s = arg;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    static const size_t sizes[] = {32, 1000, 5000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = ft_malloc(t, sizes[i]);
        CHECK_THREAD(p != NULL);
        memset(p, 0x5A, sizes[i]);
        ft_free_delayed(t, p, sizes[i]);
    }
    ft_object *own = ft_alloc(t, &counted_type);
    CHECK_THREAD(own != NULL);
    ft_decref_delayed(t, own);
    ft_incref(s->shared_obj);
    ft_decref_delayed(t, s->shared_obj);
    ft_thread_stop(t);
    return NULL;
}

TEST(thread_churn_keeps_queues_bounded)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    atomic_store(&counted_deallocs, 0);
    churn_shared s = {rt, ft_alloc(a, &counted_type)};
    CHECK(s.shared_obj != NULL);
    uint64_t peak_bytes = 0, peak_items = 0;
    for (int started = 0; started < CHURN_THREADS; started += CHURN_BATCH) {
        pthread_t threads[CHURN_BATCH];
        ft_detach(a);
        for (int i = 0; i < CHURN_BATCH; i++)
            CHECK(pthread_create(&threads[i], NULL, churn_main, &s) == 0);
        for (int i = 0; i < CHURN_BATCH; i++)
            pthread_join(threads[i], NULL);
        ft_attach(a);
        if ((started / CHURN_BATCH) % (CHURN_SAMPLE_EVERY / CHURN_BATCH) == 0) {
            ft_qsbr_stats st = qsbr_stats(rt);
            if (st.pending_bytes > peak_bytes)
                peak_bytes = st.pending_bytes;
            if (st.pending_items > peak_items)
                peak_items = st.pending_items;
        }
    }
    CHECK_THREADS_OK();
    /* Stopping threads kept processing what earlier ones handed over. */
    if (peak_bytes > MIB)
        fprintf(stderr, "peak pending: %" PRIu64 " bytes, %" PRIu64 " items\n", peak_bytes,
                peak_items);
    CHECK(peak_bytes <= MIB);
    quiesce(rt, a);
    ft_qsbr_stats st = qsbr_stats(rt);
    CHECK(st.pending_bytes <= MIB);
    CHECK_EQ(st.pending_items, 0);
    CHECK_EQ(atomic_load(&counted_deallocs), CHURN_THREADS);
    CHECK_EQ(ft_refcount(s.shared_obj), 1);
    ft_decref(s.shared_obj);
    CHECK_EQ(atomic_load(&counted_deallocs), CHURN_THREADS + 1);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- lock-free readers never see a retired block reused ------------------------------------------ */

#define SWAP_WORDS 8
#define SWAP_GENERATIONS (UNDER_TSAN ? 20000 : 200000)
#define SWAP_READERS 2

typedef struct swap_shared {
    ft_runtime *rt;
    uint64_t *_Atomic current; /* a block filled with its generation */
    _Atomic bool writer_done;
    _Atomic int readers_started;
    _Atomic uint64_t reads;
} swap_shared;

static void *swap_reader(void *arg)
{
    swap_shared *s = arg;
    ft_thread *t = ft_thread_start(s->rt);
    CHECK_THREAD(t != NULL);
    if (!t)
        return NULL;
    atomic_fetch_add(&s->readers_started, 1);
    uint64_t last = 0, reads = 0, bad = 0;
    while (!atomic_load(&s->writer_done)) {
        ft_safepoint(t);
        const uint64_t *p = atomic_load_explicit(&s->current, memory_order_acquire);
        uint64_t gen = p[0];
        /* Until the next safepoint the block must keep its generation in every word. */
        for (int pass = 0; pass < 4; pass++) {
            for (int i = 0; i < SWAP_WORDS; i++)
                bad += p[i] != gen;
            sched_yield();
        }
        bad += gen < last;
        last = gen;
        reads++;
    }
    CHECK_THREAD(bad == 0);
    atomic_fetch_add(&s->reads, reads);
    ft_thread_stop(t);
    return NULL;
}

TEST(readers_never_see_a_retired_block_reused)
{
    swap_shared s = {.rt = new_runtime(NULL)};
    ft_thread *w = ft_thread_start(s.rt);
    CHECK(w != NULL);
    uint64_t *first = ft_malloc(w, SWAP_WORDS * 8);
    CHECK(first != NULL);
    for (int i = 0; i < SWAP_WORDS; i++)
        first[i] = 1;
    atomic_store_explicit(&s.current, first, memory_order_release);
    pthread_t readers[SWAP_READERS];
    for (int i = 0; i < SWAP_READERS; i++)
        CHECK(pthread_create(&readers[i], NULL, swap_reader, &s) == 0);
    AWAIT(w, atomic_load(&s.readers_started) == SWAP_READERS);
    for (uint64_t gen = 2; gen <= SWAP_GENERATIONS; gen++) {
        uint64_t *p = ft_malloc(w, SWAP_WORDS * 8);
        CHECK(p != NULL);
        for (int i = 0; i < SWAP_WORDS; i++)
            p[i] = gen;
        uint64_t *old = atomic_exchange_explicit(&s.current, p, memory_order_acq_rel);
        ft_free_delayed(w, old, SWAP_WORDS * 8);
        ft_safepoint(w);
    }
    atomic_store(&s.writer_done, true);
    join_detached(w, readers, SWAP_READERS);
    CHECK(atomic_load(&s.reads) > 0);
    ft_free(w, atomic_load(&s.current));
    quiesce(s.rt, w);
    ft_qsbr_stats st = qsbr_stats(s.rt);
    CHECK_EQ(st.pending_items, 0);
    CHECK_EQ(st.freed_items, SWAP_GENERATIONS - 1);
    ft_thread_stop(w);
    CHECK_EQ(ft_runtime_free(s.rt), FT_OK);
}

/* ---- goals are taken after the unlink, in batches ------------------------------------------------- */

/* A block queued by a destructor while the queue is being processed has no goal yet: that pass must
 * not free it, whatever goals the items before it had. */
static ft_thread *destructor_thread;
static uint64_t *destructor_block;

static void queue_block_dealloc(ft_object *self)
{
    (void)self;
    ft_free_delayed(destructor_thread, destructor_block, POISON_SIZE);
}

static const ft_type queueing_type = {
    .name = "queues_a_block", .basic_size = sizeof(ft_object), .dealloc = queue_block_dealloc};

TEST(block_queued_during_processing_waits_for_its_own_goal)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded b;
    commanded_start(a, &b, rt);
    destructor_thread = a;
    destructor_block = ft_malloc(a, POISON_SIZE);
    CHECK(destructor_block != NULL);
    fill(destructor_block, POISON_SIZE / 8, 0x5A5A5A5A5A5A5A5Aull);

    ft_decref_delayed(a, ft_alloc(a, &queueing_type));
    ft_qsbr_advance(rt);                          /* the reference's goal */
    commanded_do(a, &b, cmd_safepoint, NULL);     /* b reaches it ... */
    commanded_do(a, &b, cmd_hold, NULL);          /* ... then holds, attached */
    ft_safepoint(a);
    ft_delayed_process(a); /* drops the reference; its dealloc queues the block */

    CHECK(intact(destructor_block, POISON_SIZE / 8, 0x5A5A5A5A5A5A5A5Aull));
    void *probe = ft_malloc(a, POISON_SIZE); /* a freed block of this size would come back first */
    CHECK(probe != NULL && probe != (void *)destructor_block);
    ft_free(a, probe);

    commanded_do(a, &b, cmd_resume, NULL);
    commanded_finish(a, &b);
    quiesce(rt, a);
    CHECK_EQ(qsbr_stats(rt).pending_items, 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* A stop-the-world frees queued blocks and compacts what is left, items that have no goal yet
 * included; those must still get one and be processed. */
TEST(items_without_goal_survive_a_stop_the_world)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    atomic_store(&counted_deallocs, 0);
    ft_free_delayed(a, ft_malloc(a, 64), 64);
    ft_qsbr_advance(rt); /* the first block has its goal; what follows has none yet */
    ft_free_delayed(a, ft_malloc(a, 64), 64);
    ft_decref_delayed(a, ft_alloc(a, &counted_type));
    ft_free_delayed(a, ft_malloc(a, 64), 64);
    ft_decref_delayed(a, ft_alloc(a, &counted_type));

    CHECK_EQ(qsbr_stats(rt).pending_items, 5);
    /* That stop freed the three blocks as the world restarted; the references stay. */
    CHECK_EQ(qsbr_stats(rt).pending_items, 2);
    CHECK_EQ(atomic_load(&counted_deallocs), 0);

    quiesce(rt, a);
    CHECK_EQ(atomic_load(&counted_deallocs), 2);
    CHECK_EQ(qsbr_stats(rt).pending_items, 0);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- an emptied page waits for its goal before another size class gets it ------------------------ */

#define PAGE_MASK (~(uintptr_t)0xFFFF) /* pages are 64 KiB, aligned */

static uintptr_t page_of(const void *p)
{
    return (uintptr_t)p & PAGE_MASK;
}

TEST(emptied_page_not_repurposed_before_its_goal)
{
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded b;
    commanded_start(a, &b, rt);
    commanded_do(a, &b, cmd_hold, NULL);

    /* Fill one page with 48-byte blocks: allocate until a block lands in a second page. */
    enum { MAX_BLOCKS = 4096 };
    static void *small[MAX_BLOCKS];
    int n = 0;
    small[n++] = ft_malloc(a, 48);
    CHECK(small[0] != NULL);
    uintptr_t page = page_of(small[0]);
    void *spill = NULL;
    while (n < MAX_BLOCKS) {
        void *p = ft_malloc(a, 48);
        CHECK(p != NULL);
        if (page_of(p) != page) {
            spill = p;
            break;
        }
        small[n++] = p;
    }
    CHECK(spill != NULL);
    CHECK(n > 1000); /* a whole 64 KiB page of 48-byte blocks */

    /* Empty the page, then make its goal reachable: only b holds it back now. */
    for (int i = 0; i < n; i++)
        ft_free(a, small[i]);
    ft_qsbr_advance(rt);
    ft_safepoint(a);

    /* Blocks of another size class: enough for several pages, none in the emptied page. */
    enum { OTHER = 3 * 1100 };
    static void *other[OTHER];
    for (int i = 0; i < OTHER; i++) {
        other[i] = ft_malloc(a, 64);
        CHECK(other[i] != NULL);
        CHECK(page_of(other[i]) != page);
    }

    /* After b's quiescent point (and a's), the page may take the other class. */
    commanded_do(NULL, &b, cmd_safepoint, NULL);
    ft_safepoint(a);
    enum { MORE = 2 * 1100 };
    static void *more[MORE];
    int in_page = 0;
    for (int i = 0; i < MORE; i++) {
        more[i] = ft_malloc(a, 64);
        CHECK(more[i] != NULL);
        in_page += page_of(more[i]) == page;
    }
    CHECK(in_page > 0);

    for (int i = 0; i < OTHER; i++)
        ft_free(a, other[i]);
    for (int i = 0; i < MORE; i++)
        ft_free(a, more[i]);
    ft_free(a, spill);
    commanded_do(a, &b, cmd_resume, NULL);
    commanded_finish(a, &b);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(emptied_page_reused_at_once_for_its_own_class)
{
    /* The reuse rule holds back only a change of layout: the same class may take the page back. */
    ft_runtime *rt = new_runtime(NULL);
    ft_thread *a = ft_thread_start(rt);
    CHECK(a != NULL);
    commanded b;
    commanded_start(a, &b, rt);
    commanded_do(a, &b, cmd_hold, NULL);
    enum { MAX_BLOCKS = 4096 };
    static void *small[MAX_BLOCKS];
    int n = 0;
    small[n++] = ft_malloc(a, 48);
    CHECK(small[0] != NULL);
    uintptr_t page = page_of(small[0]);
    void *spill = NULL;
    while (n < MAX_BLOCKS) {
        void *p = ft_malloc(a, 48);
        CHECK(p != NULL);
        if (page_of(p) != page) {
            spill = p;
            break;
        }
        small[n++] = p;
    }
    CHECK(spill != NULL);
    for (int i = 0; i < n; i++)
        ft_free(a, small[i]);
    /* Fill the spill page and need another: the emptied page comes back for the same class. */
    static void *again[2 * MAX_BLOCKS];
    int in_page = 0, m = 0;
    for (; m < 2 * MAX_BLOCKS && in_page == 0; m++) {
        again[m] = ft_malloc(a, 48);
        CHECK(again[m] != NULL);
        in_page += page_of(again[m]) == page;
    }
    CHECK(in_page > 0);
    for (int i = 0; i < m; i++)
        ft_free(a, again[i]);
    ft_free(a, spill);
    commanded_do(a, &b, cmd_resume, NULL);
    commanded_finish(a, &b);
    ft_thread_stop(a);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

int main(void)
{
    RUN(block_freed_only_after_every_thread_quiesced);
    RUN(queued_blocks_are_live_until_freed);
    RUN(stop_frees_blocks_but_runs_no_destructor);
    RUN(out_of_memory_decref_inside_the_callers_stop_waits_for_the_restart);
    RUN(stopped_core_drops_references_and_hands_the_dead_back);
    RUN(queue_out_of_memory_frees_at_once);
    RUN(item_128_advances);
    RUN(block_over_1mib_advances_at_once);
    RUN(over_1mib_in_total_advances);
    RUN(reentrant_destructors_free_everything_once);
    RUN(stopping_thread_hands_over_to_the_runtime);
    RUN(destructor_from_runtime_queue_may_stop_the_world);
    RUN(runtime_queue_runs_on_a_live_threads_safepoints);
    RUN(runtime_free_runs_what_stopped_threads_left);
    RUN(items_queued_by_a_stopping_threads_merges_run);
    RUN(thread_churn_keeps_queues_bounded);
    RUN(readers_never_see_a_retired_block_reused);
    RUN(block_queued_during_processing_waits_for_its_own_goal);
    RUN(items_without_goal_survive_a_stop_the_world);
    RUN(emptied_page_not_repurposed_before_its_goal);
    RUN(emptied_page_reused_at_once_for_its_own_class);
    return harness_done();
}
