/* tests/test_heap.c: the page heap: raw memory, statistics, remote frees, abandonment and adoption,
 * and the heap walk.
 *
 * Raw blocks of every small size class and several large sizes are checked for alignment, usable size
 * and overlap (each block is filled with its own byte pattern, checked after all are filled). The
 * statistics are checked against what the test allocated: live blocks, remote frees (a block freed by a
 * thread other than its heap's owner), abandoned heaps (a thread stopped with blocks still allocated)
 * and adopted ones (the next thread to start takes the abandoned heap over, and then frees those blocks
 * locally). The heap walk, with the world stopped, must visit exactly the live blocks of the kind asked
 * for, on running, detached and stopped threads alike: not freed ones, not objects cached on a
 * freelist, not blocks of another kind. A page's owner_tid (the owner's fast free) must name its owner
 * exactly while the page is active in an owned heap, through filling up, abandonment and adoption.
 * A fork child's next thread adopts the heap of a thread that did not survive the fork. Large blocks
 * that another thread frees come back to their running owner: a producer whose consumer frees
 * thousands of them stays at a few pages. The page checker reports a corrupted page (a wrong count,
 * a block twice on a list, a wrong owner_tid, a stale direct slot) by name, called directly and, in
 * debug builds, from a walk. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>

#include "ftrt.h"
#include "test_util.h"
#include "heap/heap.h" /* the page header: remote-free stacks, FT_REMOTE_BATCH */

/* ---- helpers ------------------------------------------------------------------------------------- */

static int compare_pointers(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

static void sort_pointers(void **p, size_t n)
{
    qsort(p, n, sizeof *p, compare_pointers);
}

static const ft_type plain_type = {.name = "plain", .basic_size = 48};
static const ft_type gc_type = {.name = "gc", .basic_size = 64, .flags = FT_TYPE_GC};
static const ft_type gc_var_type = {
    .name = "gc var", .basic_size = 40, .item_size = 8, .flags = FT_TYPE_GC};
static const ft_type gc_large_type = {.name = "gc large", .basic_size = 20000, .flags = FT_TYPE_GC};
static const ft_type gc_cached_type = {
    .name = "gc cached", .basic_size = 96, .flags = FT_TYPE_GC, .freelist_max = 8};

/* ---- raw memory -------------------------------------------------------------------------------- */

#define MAX_RAW 4096

static size_t raw_sizes(size_t *sizes)
{
    size_t n = 0;
    for (size_t s = 1; s <= 512; s++)
        sizes[n++] = s;
    for (size_t s = 513; s <= 8192; s += 37)
        sizes[n++] = s;
    for (size_t p = 128; p <= 8192; p *= 2) { /* around the class boundaries */
        sizes[n++] = p - 1;
        sizes[n++] = p + 1;
        sizes[n++] = p + p / 4;
        sizes[n++] = p + p / 4 + 1;
    }
    sizes[n++] = 8192;
    size_t large[] = {8193, 10000, 65536 - 128, 65536, 65537, 200000, (size_t)1 << 20, (size_t)5 << 20};
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
        sizes[n++] = large[i];
    return n;
}

TEST(raw_blocks_of_every_size)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    static size_t sizes[MAX_RAW];
    static unsigned char *blocks[MAX_RAW];
    size_t n = raw_sizes(sizes);
    for (size_t i = 0; i < n; i++) {
        blocks[i] = ft_malloc(t, sizes[i]);
        CHECK(blocks[i] != NULL);
        CHECK_EQ((uintptr_t)blocks[i] % 16, 0);
        size_t usable = ft_usable_size(blocks[i]);
        CHECK(usable >= sizes[i]);
        CHECK(sizes[i] <= 128 ? usable - sizes[i] < 16 : usable <= sizes[i] + sizes[i] / 4 + 65536);
        memset(blocks[i], (int)(i * 31 + 7) & 0xFF, usable);
        ft_safepoint(t);
    }
    for (size_t i = 0; i < n; i++) { /* no block overlaps another */
        size_t usable = ft_usable_size(blocks[i]);
        for (size_t b = 0; b < usable; b++)
            if (blocks[i][b] != ((i * 31 + 7) & 0xFF))
                CHECK(!"a block was overwritten by another one");
        CHECK(ft_heap_block_owner(blocks[i]) == t);
    }
    ft_heap_stats s = stats_of(rt);
    CHECK_EQ(s.live_blocks, n);
    CHECK(s.pages > 0);
    CHECK(s.page_bytes >= s.pages * 65536);
    CHECK_EQ(s.remote_frees, 0);
    for (size_t i = 0; i < n; i++)
        ft_free(t, blocks[i]);
    ft_free(t, NULL);
    s = stats_of(rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.live_bytes, 0);
    CHECK_EQ(s.remote_frees, 0);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(calloc_zeroes_and_checks_overflow)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    size_t sizes[] = {8, 100, 1000, 8000, 50000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        unsigned char *dirty = ft_malloc(t, sizes[k]);
        CHECK(dirty != NULL);
        memset(dirty, 0xEE, sizes[k]);
        ft_free(t, dirty);
        unsigned char *z = ft_calloc(t, sizes[k] / 4, 4);
        CHECK(z != NULL);
        for (size_t b = 0; b < sizes[k] / 4 * 4; b++)
            CHECK_EQ(z[b], 0);
        ft_free(t, z);
    }
    CHECK(ft_calloc(t, SIZE_MAX / 2, 3) == NULL);
    CHECK_EQ(ft_last_error(), FT_ENOMEM);
    CHECK(ft_malloc(t, SIZE_MAX) == NULL);
    CHECK_EQ(ft_last_error(), FT_ENOMEM);
    CHECK(ft_malloc(t, SIZE_MAX - 65536) == NULL);
    CHECK_EQ(ft_last_error(), FT_ENOMEM);
    CHECK_EQ(stats_of(rt).live_blocks, 0);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

TEST(object_payloads_are_zeroed_in_every_class)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    static const ft_type var = {.name = "bytes", .basic_size = sizeof(ft_object), .item_size = 1};
    for (size_t items = 0; items <= 12000; items += items < 256 ? 8 : 97) {
        for (int round = 0; round < 2; round++) { /* the second allocation reuses the dirty block */
            ft_object *o = ft_alloc_var(t, &var, items);
            CHECK(o != NULL);
            CHECK_EQ((uintptr_t)o % 16, 0);
            unsigned char *payload = (unsigned char *)(o + 1);
            for (size_t b = 0; b < items; b++)
                CHECK_EQ(payload[b], 0);
            memset(payload, 0x5A, items);
            ft_decref(o);
        }
    }
    CHECK_EQ(stats_of(rt).live_blocks, 0);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- the direct slots ---------------------------------------------------------------------------- */

enum { CHURN_SLOTS = 3000, CHURN_STEPS = 120000, CHURN_TYPES = 8, CHECK_EVERY = 15000 };

static const ft_type churn_types[CHURN_TYPES] = {
    {.name = "c32", .basic_size = 32},
    {.name = "c40", .basic_size = 40, .flags = FT_TYPE_GC},
    {.name = "c100", .basic_size = 100},
    {.name = "c256", .basic_size = 256, .flags = FT_TYPE_GC},
    {.name = "c500", .basic_size = 500},
    {.name = "c1024", .basic_size = 1024},
    {.name = "c1025", .basic_size = 1025},
    {.name = "c3000", .basic_size = 3000, .flags = FT_TYPE_GC},
};

typedef struct churn_slot {
    unsigned char *block; /* raw block or object; NULL when free */
    size_t checked;       /* bytes from `from` that hold the slot's pattern */
    size_t from;          /* 0 for raw blocks, the header's size for objects */
    bool object;
} churn_slot;

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static unsigned char pattern_of(size_t slot)
{
    return (unsigned char)(slot * 37 + 11);
}

static bool holds_pattern(const churn_slot *s, size_t slot)
{
    static unsigned char expected[4096];
    memset(expected, pattern_of(slot), s->checked);
    return memcmp(s->block + s->from, expected, s->checked) == 0;
}

/* Random allocations and frees on one thread, of raw blocks of every small size and of objects on
 * both sides of the direct sizes (1024 and 1025 bytes): pages fill, go full, get blocks back, empty
 * and are retired, and the direct slots must follow every change of an active list. Each live block
 * holds its slot's pattern, so a block handed out twice is caught when its first holder frees it. */
TEST(allocation_follows_pages_through_every_list)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    static churn_slot slots[CHURN_SLOTS];
    memset(slots, 0, sizeof slots);
    uint64_t rng = 0x9E3779B97F4A7C15u, live = 0;
    for (int step = 1; step <= CHURN_STEPS; step++) {
        size_t i = next_random(&rng) % CHURN_SLOTS;
        churn_slot *s = &slots[i];
        if (s->block) {
            CHECK(holds_pattern(s, i));
            if (s->object)
                ft_decref((ft_object *)s->block);
            else
                ft_free(t, s->block);
            s->block = NULL;
            live--;
        } else {
            uint64_t r = next_random(&rng);
            if (r % 4 == 0) {
                const ft_type *type = &churn_types[(r >> 8) % CHURN_TYPES];
                s->block = (unsigned char *)ft_alloc(t, type);
                s->object = true;
                s->from = sizeof(ft_object);
                s->checked = type->basic_size - sizeof(ft_object);
            } else {
                size_t size = 1 + (r >> 8) % 1100;
                s->block = ft_malloc(t, size);
                s->object = false;
                s->from = 0;
                s->checked = size;
            }
            CHECK(s->block != NULL);
            CHECK(ft_heap_block_owner(s->block) == t);
            memset(s->block + s->from, pattern_of(i), s->checked);
            live++;
        }
        if (step % CHECK_EVERY == 0)
            CHECK_EQ(stats_of(rt).live_blocks, live);
    }
    for (size_t i = 0; i < CHURN_SLOTS; i++) {
        churn_slot *s = &slots[i];
        if (!s->block)
            continue;
        CHECK(holds_pattern(s, i));
        if (s->object)
            ft_decref((ft_object *)s->block);
        else
            ft_free(t, s->block);
    }
    CHECK_EQ(stats_of(rt).live_blocks, 0);
    ft_thread_stop(t);
    ft_heap_stats st = stats_of(rt);
    CHECK_EQ(st.abandoned_heaps, 0);
    CHECK_EQ(st.pages, 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- statistics, remote frees, abandonment, adoption ---------------------------------------------- */

enum { BLOCKS = 300 };

/* BLOCKS raw blocks of various sizes (some large) and BLOCKS objects, GC and not. */
typedef struct block_set {
    void *raw[BLOCKS];
    ft_object *objects[BLOCKS];
} block_set;

static void allocate_blocks(ft_thread *t, void *arg)
{
    block_set *b = arg;
    for (int i = 0; i < BLOCKS; i++) {
        b->raw[i] = ft_malloc(t, (size_t)(i % 7 == 6 ? 9000 + i : 16 + i * 8 % 2000));
        CHECK_THREAD(b->raw[i] != NULL);
        b->objects[i] = ft_alloc(t, i % 2 ? &gc_type : &plain_type);
        CHECK_THREAD(b->objects[i] != NULL);
    }
}

static void free_blocks(ft_thread *t, block_set *b, int from, int to)
{
    for (int i = from; i < to; i++) {
        ft_free(t, b->raw[i]);
        ft_decref(b->objects[i]);
    }
}

typedef struct range {
    block_set *b;
    int from, to;
    bool local; /* blocks belonged to this helper's heap (checked per block) */
} range;

static void free_range(ft_thread *t, void *arg)
{
    range *r = arg;
    r->local = true;
    for (int i = r->from; i < r->to; i++)
        r->local &= ft_heap_block_owner(r->b->raw[i]) == t &&
                    ft_heap_block_owner(r->b->objects[i]) == t;
    free_blocks(t, r->b, r->from, r->to);
}

TEST(remote_frees_are_counted)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    static block_set b;
    allocate_blocks(t, &b);
    CHECK_THREADS_OK();
    CHECK_EQ(stats_of(rt).live_blocks, 2 * BLOCKS);
    range r = {&b, 0, BLOCKS / 2, false};
    run_on_new_thread(rt, t, free_range, &r);
    CHECK(!r.local);
    /* The raw blocks were freed remotely; the objects were queued to their owner, still alive. */
    ft_heap_stats s = stats_of(rt);
    CHECK_EQ(s.remote_frees, BLOCKS / 2);
    CHECK_EQ(s.live_blocks, 2 * BLOCKS - BLOCKS / 2);
    CHECK_EQ(s.abandoned_heaps, 0);
    ft_safepoint(t); /* the owner frees them, locally */
    s = stats_of(rt);
    CHECK_EQ(s.remote_frees, BLOCKS / 2);
    CHECK_EQ(s.live_blocks, 2 * (BLOCKS - BLOCKS / 2));

    /* The owner's own frees are local; reusing the remotely freed blocks is fine too. */
    free_blocks(t, &b, BLOCKS / 2, BLOCKS);
    CHECK_EQ(stats_of(rt).remote_frees, BLOCKS / 2);
    allocate_blocks(t, &b);
    CHECK_EQ(stats_of(rt).live_blocks, 2 * BLOCKS);
    free_blocks(t, &b, 0, BLOCKS);
    s = stats_of(rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.remote_frees, BLOCKS / 2);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

static void nothing_left(ft_thread *t, void *arg)
{
    (void)arg;
    void *p = ft_malloc(t, 100);
    ft_object *o = ft_alloc(t, &gc_type);
    CHECK_THREAD(p && o);
    ft_free(t, p);
    ft_decref(o);
}

typedef struct adopt_check {
    block_set *b;
    bool adopted;
    uint64_t remote_before, remote_after;
    ft_runtime *rt;
} adopt_check;

static void adopt_and_free(ft_thread *t, void *arg)
{
    adopt_check *a = arg;
    a->adopted = true;
    for (int i = 0; i < BLOCKS; i++)
        if (a->b->raw[i])
            a->adopted &= ft_heap_block_owner(a->b->raw[i]) == t &&
                          ft_heap_block_owner(a->b->objects[i]) == t;
    a->remote_before = stats_of(a->rt).remote_frees;
    for (int i = 0; i < BLOCKS; i++)
        if (a->b->raw[i]) {
            ft_free(t, a->b->raw[i]);
            ft_decref(a->b->objects[i]);
        }
    a->remote_after = stats_of(a->rt).remote_frees;
}

TEST(abandoned_heap_is_adopted_by_the_next_thread)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt); /* started first: it keeps a heap of its own */
    static block_set b;

    /* A thread that stops with nothing allocated leaves no heap behind. */
    run_on_new_thread(rt, t, nothing_left, NULL);
    ft_heap_stats s = stats_of(rt);
    CHECK_EQ(s.abandoned_heaps, 0);
    CHECK_EQ(s.live_blocks, 0);

    run_on_new_thread(rt, t, allocate_blocks, &b);
    s = stats_of(rt);
    CHECK_EQ(s.abandoned_heaps, 1);
    CHECK_EQ(s.adopted_heaps, 0);
    CHECK_EQ(s.live_blocks, 2 * BLOCKS);
    for (int i = 0; i < BLOCKS; i++) {
        CHECK(ft_heap_block_owner(b.raw[i]) == NULL);
        CHECK(ft_heap_block_owner(b.objects[i]) == NULL);
    }

    /* Frees into an abandoned heap are remote; its objects' owner is gone, so they are merged and
     * freed at once. */
    free_blocks(t, &b, 0, 50);
    s = stats_of(rt);
    CHECK_EQ(s.remote_frees, 100);
    CHECK_EQ(s.live_blocks, 2 * (BLOCKS - 50));
    for (int i = 0; i < 50; i++)
        b.raw[i] = NULL;

    /* The next thread to start adopts the heap: the blocks are its own, its frees are local. */
    adopt_check a = {.b = &b, .rt = rt};
    run_on_new_thread(rt, t, adopt_and_free, &a);
    CHECK(a.adopted);
    CHECK_EQ(a.remote_after, a.remote_before);
    s = stats_of(rt);
    CHECK_EQ(s.adopted_heaps, 1);
    CHECK_EQ(s.abandoned_heaps, 0); /* the adopter left it empty when it stopped */
    CHECK_EQ(s.live_blocks, 0);
    ft_thread_stop(t);
    s = stats_of(rt);
    CHECK_EQ(s.pages, 0); /* no heap holds a page any more */
    CHECK_EQ(s.page_bytes, 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* Two threads alive at once, each allocating a block set and stopping (so neither adopts the other's
 * heap). */
typedef struct pair {
    ft_runtime *rt;
    block_set *sets[2];
    pthread_barrier_t both_started;
    _Atomic int next;
} pair;

static void *pair_member(void *arg)
{
    pair *p = arg;
    ft_thread *t = ft_thread_start(p->rt);
    CHECK_THREAD(t != NULL);
    barrier_detached(t, &p->both_started);
    int me = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
    allocate_blocks(t, p->sets[me]);
    ft_thread_stop(t);
    return NULL;
}

static void abandon_two(ft_runtime *rt, block_set *first, block_set *second)
{
    pair p = {.rt = rt, .sets = {first, second}};
    pthread_barrier_init(&p.both_started, NULL, 2);
    pthread_t a, b;
    CHECK_EQ(pthread_create(&a, NULL, pair_member, &p), 0);
    CHECK_EQ(pthread_create(&b, NULL, pair_member, &p), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_barrier_destroy(&p.both_started);
    CHECK_THREADS_OK();
}

typedef struct two_sets {
    block_set *first, *second;
    int owned;
} two_sets;

static void count_owned(ft_thread *t, void *arg)
{
    two_sets *ts = arg;
    ts->owned = (ft_heap_block_owner(ts->first->raw[0]) == t) +
                (ft_heap_block_owner(ts->second->raw[0]) == t);
    /* It frees nothing: at its stop the adopted heap is abandoned again. */
}

TEST(each_abandoned_heap_is_adopted_once)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    static block_set first, second;
    abandon_two(rt, &first, &second);
    ft_heap_stats s = stats_of(rt);
    CHECK_EQ(s.abandoned_heaps, 2);
    CHECK_EQ(s.live_blocks, 4 * BLOCKS);

    two_sets ts = {&first, &second, 0};
    run_on_new_thread(rt, NULL, count_owned, &ts);
    CHECK_EQ(ts.owned, 1); /* one heap per thread */
    s = stats_of(rt);
    CHECK_EQ(s.adopted_heaps, 1);
    CHECK_EQ(s.abandoned_heaps, 2);

    ft_thread *t = ft_thread_start(rt);
    bool owns_first = ft_heap_block_owner(first.raw[0]) == t;
    CHECK(owns_first != (ft_heap_block_owner(second.raw[0]) == t));
    s = stats_of(rt);
    CHECK_EQ(s.abandoned_heaps, 1);
    CHECK_EQ(s.adopted_heaps, 2);
    uint64_t remote_before = s.remote_frees;
    free_blocks(t, &first, 0, BLOCKS);
    free_blocks(t, &second, 0, BLOCKS);
    s = stats_of(rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.remote_frees - remote_before, 2 * BLOCKS); /* the other heap's blocks only */
    ft_thread_stop(t);
    s = stats_of(rt);
    CHECK_EQ(s.abandoned_heaps, 1); /* the other one: emptied remotely, still waiting */
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* A large block's page, once freed, must not turn into a small page that keeps the large mapping's
 * accounting (or its tail) forever: with every block freed and every thread stopped, no heap holds a
 * page, so both page counters are back to zero. */
TEST(large_page_accounting_after_reuse)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt);
    void *large = ft_malloc(t, 200000);
    CHECK(large != NULL);
    ft_free(t, large);
    void *small = ft_malloc(t, 16);
    CHECK(small != NULL);
    ft_free(t, small);
    ft_thread_stop(t);
    ft_heap_stats s = stats_of(rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.pages, 0);
    CHECK_EQ(s.page_bytes, 0);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- the heap walk ------------------------------------------------------------------------------- */

enum { WALKERS = 4, STOPPED_WALKERS = 2, PER_WALKER = 240, PER_SLOT = PER_WALKER + 8 };
#define MAX_EXPECTED ((WALKERS + 1) * PER_SLOT)

/* Slot w < WALKERS belongs to walker thread w, slot WALKERS to the main thread. */
typedef struct walk_test {
    ft_runtime *rt;
    pthread_barrier_t started, ready, release;
    void *gc[WALKERS + 1][PER_SLOT], *objects[WALKERS + 1][PER_SLOT], *raw[WALKERS + 1][PER_SLOT];
    int ngc[WALKERS + 1], nobjects[WALKERS + 1], nraw[WALKERS + 1];
} walk_test;

static walk_test wt;

/* Allocate a mix of blocks of every kind and free a third of them, recording the survivors. */
static void populate(ft_thread *t, int w)
{
    wt.ngc[w] = wt.nobjects[w] = wt.nraw[w] = 0;
    for (int i = 0; i < PER_WALKER; i++) {
        ft_object *g;
        switch (i % 4) {
        case 0:
            g = ft_alloc(t, &gc_type);
            break;
        case 1:
            g = ft_alloc_var(t, &gc_var_type, (size_t)i);
            break;
        case 2:
            g = i % 40 == 2 ? ft_alloc(t, &gc_large_type) : ft_alloc(t, &gc_type);
            break;
        default:
            g = ft_alloc(t, &gc_cached_type);
            break;
        }
        ft_object *plain = ft_alloc(t, &plain_type);
        void *raw = ft_malloc(t, (size_t)(24 + i * 13 % 3000));
        CHECK_THREAD(g && plain && raw);
        if (i % 3 == 0) { /* freed: not in the walk (the cached type's go to the freelist) */
            ft_decref(g);
            ft_decref(plain);
            ft_free(t, raw);
            continue;
        }
        wt.gc[w][wt.ngc[w]++] = g;
        wt.objects[w][wt.nobjects[w]++] = plain;
        wt.raw[w][wt.nraw[w]++] = raw;
    }
}

static void depopulate(ft_thread *t, int w)
{
    for (int i = 0; i < wt.ngc[w]; i++)
        ft_decref(wt.gc[w][i]);
    for (int i = 0; i < wt.nobjects[w]; i++)
        ft_decref(wt.objects[w][i]);
    for (int i = 0; i < wt.nraw[w]; i++)
        ft_free(t, wt.raw[w][i]);
    wt.ngc[w] = wt.nobjects[w] = wt.nraw[w] = 0;
}

static void *walker(void *arg)
{
    int w = (int)(intptr_t)arg;
    ft_thread *t = ft_thread_start(wt.rt);
    CHECK_THREAD(t != NULL);
    populate(t, w);
    ft_detach(t); /* alive but detached: a stop does not wait for it */
    pthread_barrier_wait(&wt.started); /* every heap exists, so none is adopted below */
    if (w < STOPPED_WALKERS) {
        ft_thread_stop(t); /* its heap is abandoned with the blocks in it */
        pthread_barrier_wait(&wt.ready);
        pthread_barrier_wait(&wt.release);
        return NULL;
    }
    pthread_barrier_wait(&wt.ready);
    pthread_barrier_wait(&wt.release);
    ft_attach(t);
    depopulate(t, w);
    ft_thread_stop(t);
    return NULL;
}

typedef struct collected {
    void **blocks;
    size_t count, capacity, min_size;
    bool too_small;
} collected;

static bool collect(void *block, size_t size, void *arg)
{
    collected *c = arg;
    if (size < c->min_size)
        c->too_small = true;
    if (c->count < c->capacity)
        c->blocks[c->count] = block;
    c->count++;
    return true;
}

static bool stop_after_one(void *block, size_t size, void *arg)
{
    (void)block;
    (void)size;
    ++*(int *)arg;
    return false;
}

static bool ignore_block(void *block, size_t size, void *arg)
{
    (void)block;
    (void)size;
    (void)arg;
    return true;
}

/* All recorded blocks of one kind, sorted. */
static size_t expected_blocks(void *table[][PER_SLOT], const int *counts, void **out)
{
    size_t n = 0;
    for (int w = 0; w <= WALKERS; w++)
        for (int i = 0; i < counts[w]; i++)
            out[n++] = table[w][i];
    sort_pointers(out, n);
    return n;
}

static bool same_blocks(void **expected, size_t n, collected *c)
{
    if (c->count != n || c->too_small)
        return false;
    sort_pointers(c->blocks, n);
    return memcmp(expected, c->blocks, n * sizeof(void *)) == 0;
}

typedef struct outside_visit {
    ft_runtime *rt;
    ft_status status;
} outside_visit;

static void *visit_from_outside(void *arg)
{
    outside_visit *v = arg;
    v->status = ft_heap_visit(v->rt, FT_HEAP_GC, ignore_block, NULL);
    return NULL;
}

static ft_status visit_from_another_thread(ft_runtime *rt)
{
    outside_visit v = {rt, FT_OK};
    pthread_t th;
    if (pthread_create(&th, NULL, visit_from_outside, &v) != 0)
        return FT_EINVAL;
    pthread_join(th, NULL);
    return v.status;
}

TEST(heap_walk_visits_exactly_the_live_blocks)
{
    memset(&wt, 0, sizeof wt);
    wt.rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(wt.rt);
    pthread_barrier_init(&wt.started, NULL, WALKERS + 1);
    pthread_barrier_init(&wt.ready, NULL, WALKERS + 1);
    pthread_barrier_init(&wt.release, NULL, WALKERS + 1);
    pthread_t th[WALKERS];
    for (int w = 0; w < WALKERS; w++)
        CHECK_EQ(pthread_create(&th[w], NULL, walker, (void *)(intptr_t)w), 0);
    populate(t, WALKERS);
    /* Two objects of the cached type on the main thread's freelist, two more alive. */
    ft_object *cached[4];
    for (int i = 0; i < 4; i++) {
        cached[i] = ft_alloc(t, &gc_cached_type);
        CHECK(cached[i] != NULL);
    }
    ft_decref(cached[0]);
    ft_decref(cached[1]);
    wt.gc[WALKERS][wt.ngc[WALKERS]++] = cached[2];
    wt.gc[WALKERS][wt.ngc[WALKERS]++] = cached[3];
    ft_detach(t);
    pthread_barrier_wait(&wt.started);
    pthread_barrier_wait(&wt.ready);
    ft_attach(t);
    CHECK_THREADS_OK();

    /* Without a stopped world the walk is refused, inside the runtime and outside it. */
    CHECK_EQ(ft_heap_visit(wt.rt, FT_HEAP_GC, ignore_block, NULL), FT_EPERM);
    CHECK_EQ(visit_from_another_thread(wt.rt), FT_EPERM);

    /* Everything the walk needs is allocated before the stop. */
    static void *expected_gc[MAX_EXPECTED], *expected_objects[MAX_EXPECTED], *expected_raw[MAX_EXPECTED];
    static void *seen_gc[MAX_EXPECTED], *seen_objects[MAX_EXPECTED], *seen_raw[MAX_EXPECTED];
    size_t ngc = expected_blocks(wt.gc, wt.ngc, expected_gc);
    size_t nobjects = expected_blocks(wt.objects, wt.nobjects, expected_objects);
    size_t nraw = expected_blocks(wt.raw, wt.nraw, expected_raw);
    collected gc = {seen_gc, 0, MAX_EXPECTED, 48, false};
    collected objects = {seen_objects, 0, MAX_EXPECTED, plain_type.basic_size, false};
    collected raw = {seen_raw, 0, MAX_EXPECTED, 24, false};
    int visited_before_stop = 0;
    ft_heap_stats stopped_stats;

    ft_stop_the_world(wt.rt);
    ft_status gc_status = ft_heap_visit(wt.rt, FT_HEAP_GC, collect, &gc);
    ft_status objects_status = ft_heap_visit(wt.rt, FT_HEAP_OBJECT, collect, &objects);
    ft_status raw_status = ft_heap_visit(wt.rt, FT_HEAP_RAW, collect, &raw);
    ft_status early_status = ft_heap_visit(wt.rt, FT_HEAP_GC, stop_after_one, &visited_before_stop);
    ft_status bad_kind = ft_heap_visit(wt.rt, FT_HEAP_KINDS, ignore_block, NULL);
    ft_status no_fn = ft_heap_visit(wt.rt, FT_HEAP_GC, NULL, NULL);
    ft_status other_thread = visit_from_another_thread(wt.rt); /* stopped, but not by that thread */
    ft_heap_get_stats(wt.rt, &stopped_stats);                   /* no nested stop */
    ft_start_the_world(wt.rt);

    CHECK_EQ(gc_status, FT_OK);
    CHECK_EQ(objects_status, FT_OK);
    CHECK_EQ(raw_status, FT_OK);
    CHECK_EQ(early_status, FT_OK);
    CHECK_EQ(visited_before_stop, 1);
    CHECK_EQ(bad_kind, FT_EINVAL);
    CHECK_EQ(no_fn, FT_EINVAL);
    CHECK_EQ(other_thread, FT_EPERM);
    CHECK(same_blocks(expected_gc, ngc, &gc));
    CHECK(same_blocks(expected_objects, nobjects, &objects));
    CHECK(same_blocks(expected_raw, nraw, &raw));
    CHECK_EQ(stopped_stats.live_blocks, ngc + nobjects + nraw);
    CHECK_EQ(stopped_stats.abandoned_heaps, STOPPED_WALKERS);

    /* The stopped walkers' blocks are freed from here; the others free their own. */
    for (int w = 0; w < STOPPED_WALKERS; w++)
        depopulate(t, w);
    depopulate(t, WALKERS);
    ft_detach(t);
    pthread_barrier_wait(&wt.release);
    for (int w = 0; w < WALKERS; w++)
        pthread_join(th[w], NULL);
    ft_attach(t);
    CHECK_THREADS_OK();
    pthread_barrier_destroy(&wt.started);
    pthread_barrier_destroy(&wt.ready);
    pthread_barrier_destroy(&wt.release);
    ft_thread_stop(t);
    ft_heap_stats s = stats_of(wt.rt);
    CHECK_EQ(s.live_blocks, 0);
#ifdef FTRT_DEBUG
    CHECK_EQ(ft_runtime_reftotal(wt.rt), 0);
#endif
    CHECK_EQ(ft_runtime_free(wt.rt), FT_OK);
}

/* ---- remote batches ------------------------------------------------------------------------------ */

/* Blocks on the remote-free stack of p's page (taken by the page's owner only, which is not running
 * when the tests look). */
static size_t remote_stack_length(const void *p)
{
    size_t n = 0;
    for (uintptr_t r = atomic_load(&ft_page_of(p)->remote_free); r;
         r = atomic_load(&((ft_block *)r)->next))
        n++;
    return n;
}

typedef struct free_job {
    void **blocks;
    int from, to;
    bool objects;
} free_job;

static void cmd_free(commanded *w)
{
    free_job *j = w->arg;
    for (int i = j->from; i < j->to; i++) {
        if (j->objects)
            ft_decref(j->blocks[i]);
        else
            ft_free(w->t, j->blocks[i]);
    }
}

static void free_on(ft_thread *self, commanded *w, void **blocks, int from, int to, bool objects)
{
    free_job j = {blocks, from, to, objects};
    commanded_do(self, w, cmd_free, &j);
}

static void cmd_detach_and_attach(commanded *w)
{
    ft_detach(w->t);
    ft_attach(w->t);
}

enum { PAGE_BLOCKS = 2 * FT_REMOTE_BATCH + 2 };

TEST(remote_batch_is_pushed_when_full_or_when_the_page_changes)
{
    fixture f = fixture_setup();
    /* 64-byte blocks until PAGE_BLOCKS of them share the first one's page and one lies in another. */
    enum { MAX_BLOCKS = 4096 };
    static void *all[MAX_BLOCKS], *same[PAGE_BLOCKS];
    void *other = NULL;
    int n = 0, nsame = 0;
    while (!other || nsame < PAGE_BLOCKS) {
        CHECK(n < MAX_BLOCKS);
        void *b = all[n++] = ft_malloc(f.t, 64);
        CHECK(b != NULL);
        if (ft_page_of(b) == ft_page_of(all[0])) {
            if (nsame < PAGE_BLOCKS)
                same[nsame++] = b;
        } else if (!other) {
            other = b;
        }
    }
    commanded w;
    commanded_start(f.t, &w, f.rt);
    free_on(f.t, &w, same, 0, FT_REMOTE_BATCH - 1, false);
    CHECK_EQ(remote_stack_length(same[0]), 0); /* all waiting in the batch */
    free_on(f.t, &w, same, FT_REMOTE_BATCH - 1, FT_REMOTE_BATCH, false);
    CHECK_EQ(remote_stack_length(same[0]), FT_REMOTE_BATCH); /* full: pushed with one CAS */
    free_on(f.t, &w, same, FT_REMOTE_BATCH, FT_REMOTE_BATCH + 1, false);
    CHECK_EQ(remote_stack_length(same[0]), FT_REMOTE_BATCH);
    free_on(f.t, &w, &other, 0, 1, false);
    CHECK_EQ(remote_stack_length(same[0]), FT_REMOTE_BATCH + 1); /* another page: pushed */
    CHECK_EQ(remote_stack_length(other), 0);
    free_on(f.t, &w, same, FT_REMOTE_BATCH + 1, FT_REMOTE_BATCH + 2, false);
    CHECK_EQ(remote_stack_length(other), 1);
    CHECK_EQ(remote_stack_length(same[0]), FT_REMOTE_BATCH + 1);
    commanded_do(f.t, &w, cmd_detach_and_attach, NULL);
    CHECK_EQ(remote_stack_length(same[0]), FT_REMOTE_BATCH + 2); /* detach pushes */

    /* A large block's free is never held back: its page goes onto its heap set's stack of emptied
     * large pages at once. */
    void *large = ft_malloc(f.t, 100000);
    CHECK(large != NULL);
    free_on(f.t, &w, &large, 0, 1, false);
    ft_page *large_page = ft_page_of(large);
    CHECK(atomic_load(&large_page->set->large_freed) == (uintptr_t)large_page);
    CHECK_EQ(atomic_load(&large_page->remote_free), FT_LARGE_FREED_TAG); /* the stack's last */

    ft_heap_stats s = stats_of(f.rt);
    CHECK_EQ(s.remote_frees, FT_REMOTE_BATCH + 4);
    CHECK_EQ(s.live_blocks, (uint64_t)n - (FT_REMOTE_BATCH + 3));
    commanded_finish(f.t, &w);
    for (int i = 0; i < n; i++) {
        bool freed = all[i] == other;
        for (int k = 0; k < FT_REMOTE_BATCH + 2 && !freed; k++)
            freed = all[i] == same[k];
        if (!freed)
            ft_free(f.t, all[i]);
    }
    s = stats_of(f.rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.remote_frees, FT_REMOTE_BATCH + 4);
    ft_thread_stop(f.t);
    CHECK_EQ(stats_of(f.rt).pages, 0); /* the owner took every remote free back */
    CHECK_EQ(ft_runtime_free(f.rt), FT_OK);
}

enum { HELD = FT_REMOTE_BATCH / 2 - 1 }; /* 2 * HELD blocks fit in one batch */

typedef struct held_blocks {
    void *raw[2 * HELD];
    ft_object *gc[2 * HELD];
} held_blocks;

static void allocate_held(ft_thread *t, void *arg)
{
    held_blocks *h = arg;
    for (int i = 0; i < 2 * HELD; i++) {
        h->raw[i] = ft_malloc(t, 64);
        h->gc[i] = ft_alloc(t, &gc_type);
        CHECK_THREAD(h->raw[i] && h->gc[i]);
    }
}

static bool in_list(void *const *list, size_t n, const void *p)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == p)
            return true;
    return false;
}

/* Blocks of a stopped thread's heap, half of them freed by two running threads that hold the frees
 * in their batches (the raw ones with ft_free, the objects by dropping their last reference, which
 * merges and frees them on the dropping thread): the walk with the world stopped, and the
 * statistics, see exactly the other half. */
TEST(walks_and_statistics_see_through_remote_batches)
{
    fixture f = fixture_setup();
    static held_blocks h;
    commanded raw_freer, object_dropper; /* started first: they do not adopt the heap below */
    commanded_start(f.t, &raw_freer, f.rt);
    commanded_start(f.t, &object_dropper, f.rt);
    run_on_new_thread(f.rt, f.t, allocate_held, &h);
    CHECK_EQ(stats_of(f.rt).abandoned_heaps, 1);
    free_on(f.t, &raw_freer, h.raw, 0, HELD, false);
    free_on(f.t, &object_dropper, (void **)h.gc, 0, HELD, true);
    CHECK_EQ(remote_stack_length(h.raw[0]), 0); /* both still held */
    CHECK_EQ(remote_stack_length(h.gc[0]), 0);

    static void *seen_gc[4 * HELD], *seen_raw[4 * HELD];
    collected gc = {seen_gc, 0, 4 * HELD, 0, false}, raw = {seen_raw, 0, 4 * HELD, 0, false};
    ft_heap_stats stopped;
    ft_stop_the_world(f.rt);
    ft_status gc_status = ft_heap_visit(f.rt, FT_HEAP_GC, collect, &gc);
    ft_status raw_status = ft_heap_visit(f.rt, FT_HEAP_RAW, collect, &raw);
    ft_heap_get_stats(f.rt, &stopped);
    ft_start_the_world(f.rt);
    CHECK_EQ(gc_status, FT_OK);
    CHECK_EQ(raw_status, FT_OK);
    CHECK_EQ(gc.count, HELD);
    CHECK_EQ(raw.count, HELD);
    for (int i = 0; i < HELD; i++) {
        CHECK(in_list(seen_gc, gc.count, h.gc[HELD + i]));
        CHECK(in_list(seen_raw, raw.count, h.raw[HELD + i]));
    }
    CHECK_EQ(stopped.live_blocks, 2 * HELD);
    CHECK_EQ(stopped.remote_frees, 2 * HELD);
    CHECK_EQ(remote_stack_length(h.raw[0]), HELD); /* the walk pushed the batches */
    CHECK_EQ(remote_stack_length(h.gc[0]), HELD);

    free_on(f.t, &raw_freer, h.raw, HELD, 2 * HELD, false);
    free_on(f.t, &object_dropper, (void **)h.gc, HELD, 2 * HELD, true);
    ft_heap_stats s = stats_of(f.rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.remote_frees, 4 * HELD);
    commanded_finish(f.t, &raw_freer);
    commanded_finish(f.t, &object_dropper);
    fixture_teardown(f);
}

static void cmd_allocate_held(commanded *w)
{
    allocate_held(w->t, w->arg);
}

/* An owner whose blocks were all freed by another thread finds their page empty (used 0: it took
 * every block back) when it stops, once the freeing thread's batch was pushed: by that thread's
 * detach, or by its stop. While the batch still holds them, the page is not empty: the owner's
 * stop abandons its heap with the page in use; the statistics' walk pushes the batch, and the
 * thread that adopts the heap takes the blocks back. */
typedef enum push_by { PUSH_BY_DETACH, PUSH_BY_STOP, NOT_PUSHED } push_by;

static void nothing(ft_thread *t, void *arg)
{
    (void)t;
    (void)arg;
}

static void owner_and_freer(push_by how)
{
    fixture f = fixture_setup();
    static held_blocks h;
    commanded owner, freer;
    commanded_start(f.t, &owner, f.rt);
    commanded_start(f.t, &freer, f.rt);
    commanded_do(f.t, &owner, cmd_allocate_held, &h);
    ft_page *page = ft_page_of(h.raw[0]);
    free_on(f.t, &freer, h.raw, 0, 2 * HELD, false);
    CHECK_EQ(remote_stack_length(h.raw[0]), 0);
    if (how == PUSH_BY_DETACH)
        commanded_do(f.t, &freer, cmd_detach_and_attach, NULL);
    if (how == PUSH_BY_STOP)
        commanded_finish(f.t, &freer);
    if (how != NOT_PUSHED)
        CHECK_EQ(remote_stack_length(h.raw[0]), 2 * HELD);
    free_on(f.t, &owner, (void **)h.gc, 0, 2 * HELD, true); /* its objects: local frees */
    commanded_finish(f.t, &owner);
    CHECK_EQ(page->used, how == NOT_PUSHED ? 2 * HELD : 0);
    ft_heap_stats s = stats_of(f.rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.remote_frees, 2 * HELD);
    if (how == NOT_PUSHED) {
        CHECK_EQ(s.abandoned_heaps, 1);
        CHECK_EQ(remote_stack_length(h.raw[0]), 2 * HELD); /* pushed by the walk */
        run_on_new_thread(f.rt, f.t, nothing, NULL);   /* adopts the heap, stops */
        CHECK_EQ(page->used, 0);
        CHECK_EQ(stats_of(f.rt).adopted_heaps, 1);
        commanded_finish(f.t, &freer);
    }
    if (how == PUSH_BY_DETACH)
        commanded_finish(f.t, &freer);
    CHECK_EQ(stats_of(f.rt).live_blocks, 0);
    fixture_teardown(f);
}

TEST(owner_finds_its_pages_empty_once_the_batch_is_pushed)
{
    owner_and_freer(PUSH_BY_DETACH);
    owner_and_freer(PUSH_BY_STOP);
    owner_and_freer(NOT_PUSHED);
}


/* ---- large blocks freed by another thread -------------------------------------------------------- */

static const ft_type plain_large_type = {.name = "plain large", .basic_size = 20000};

enum { HANDOFFS = 2000, HANDOFF_CHECK_EVERY = 250 };

/* A large page of each mapping size the producer uses may wait, retired, for its goal, beside the one
 * block in use; more than a few pages means freed ones are not coming back. */
#define HANDOFF_PAGE_LIMIT 6
#define HANDOFF_BYTE_LIMIT ((uint64_t)HANDOFF_PAGE_LIMIT * 384 * 1024)

typedef enum handoff_kind { HANDOFF_RAW, HANDOFF_GC_OBJECTS, HANDOFF_PLAIN_OBJECTS } handoff_kind;

/* The producer (the main thread) allocates large blocks one at a time and a consumer frees each one:
 * raw blocks with ft_free, objects by dropping their last reference after the producer gave up its
 * bias (so that the consumer's drop frees them, remotely). Only one block is live at a time, so the
 * heap must stay a few pages, however many blocks went through it. */
static void producer_and_consumer(handoff_kind kind)
{
    fixture f = fixture_setup();
    static commanded consumer; /* static: it outlives a failed check, which leaves it running */
    commanded_start(f.t, &consumer, f.rt);
    int handoffs = UNDER_TSAN ? HANDOFFS / 4 : HANDOFFS;
    for (int i = 0; i < handoffs; i++) {
        void *b;
        if (kind == HANDOFF_RAW) {
            b = ft_malloc(f.t, i % 4 == 3 ? 300000 : 20000);
        } else {
            const ft_type *type = kind == HANDOFF_GC_OBJECTS ? &gc_large_type : &plain_large_type;
            ft_object *o = ft_alloc(f.t, type);
            CHECK(o != NULL);
            ft_object_merge(o, 0);
            b = o;
        }
        CHECK(b != NULL);
        free_on(f.t, &consumer, &b, 0, 1, kind != HANDOFF_RAW);
        if (i % HANDOFF_CHECK_EVERY == HANDOFF_CHECK_EVERY - 1) {
            ft_heap_stats s = stats_of(f.rt);
            CHECK_EQ(s.live_blocks, 0);
            CHECK_EQ(s.remote_frees, i + 1); /* every free was a remote one */
            CHECK(s.pages <= HANDOFF_PAGE_LIMIT);
            CHECK(s.page_bytes <= HANDOFF_BYTE_LIMIT);
        }
    }
    commanded_finish(f.t, &consumer);
    ft_thread_stop(f.t);
    ft_heap_stats s = stats_of(f.rt);
    CHECK_EQ(s.live_blocks, 0);
    CHECK_EQ(s.pages, 0);
    CHECK_EQ(ft_runtime_free(f.rt), FT_OK);
}

TEST(large_blocks_freed_by_a_consumer_come_back_to_the_producer)
{
    producer_and_consumer(HANDOFF_RAW);
    producer_and_consumer(HANDOFF_GC_OBJECTS);
    producer_and_consumer(HANDOFF_PLAIN_OBJECTS);
}

enum { LARGE_HELD = 48, SMALL_KEPT_MAX = 20000 };

typedef struct small_kept {
    void *blocks[SMALL_KEPT_MAX];
    int n;
} small_kept;

/* Allocate FT_CARVE_BATCH more 64-byte blocks and keep them: the allocation slow path carves each
 * batch, so every round reaches it at least once, and no small page ever becomes empty. */
static void keep_allocating(ft_thread *t, small_kept *k)
{
    CHECK(k->n + FT_CARVE_BATCH <= SMALL_KEPT_MAX);
    for (int i = 0; i < FT_CARVE_BATCH; i++) {
        k->blocks[k->n] = ft_malloc(t, 64);
        CHECK(k->blocks[k->n] != NULL);
        k->n++;
    }
}

/* The pages the kept blocks lie in. */
static uint64_t pages_of(const small_kept *k)
{
    uint64_t n = 0;
    for (int i = 0; i < k->n; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = ft_page_of(k->blocks[j]) == ft_page_of(k->blocks[i]);
        n += !seen;
    }
    return n;
}

/* An owner whose large blocks another thread freed gets their pages back on its allocation slow path
 * even if it never allocates a large block again: retired there, and given back to the system on a
 * later one once every thread has passed a quiescent point. */
TEST(large_pages_freed_remotely_come_back_on_any_slow_path)
{
    fixture f = fixture_setup();
    static commanded consumer; /* static: it outlives a failed check, which leaves it running */
    commanded_start(f.t, &consumer, f.rt);
    static void *large[LARGE_HELD];
    static small_kept kept;
    kept.n = 0;
    for (int i = 0; i < LARGE_HELD; i++) {
        large[i] = ft_malloc(f.t, 20000);
        CHECK(large[i] != NULL);
    }
    keep_allocating(f.t, &kept);
    CHECK_EQ(stats_of(f.rt).pages, LARGE_HELD + pages_of(&kept));
    free_on(f.t, &consumer, large, 0, LARGE_HELD, false);
    CHECK_EQ(stats_of(f.rt).pages, LARGE_HELD + pages_of(&kept)); /* nothing has taken them yet */
    AWAIT(f.t, (keep_allocating(f.t, &kept), stats_of(f.rt).pages == pages_of(&kept)));
    ft_heap_stats s = stats_of(f.rt);
    CHECK_EQ(s.pages, pages_of(&kept));
    CHECK_EQ(s.live_blocks, kept.n);
    CHECK_EQ(s.remote_frees, LARGE_HELD);
    for (int i = 0; i < kept.n; i++)
        ft_free(f.t, kept.blocks[i]);
    commanded_finish(f.t, &consumer);
    fixture_teardown(f);
}

/* ---- fork ---------------------------------------------------------------------------------------- */

/* The child's checks; returns its exit status (0: all passed). The child starts no thread (TSan
 * refuses that after a multi-threaded fork): the survivor, whose own heap is empty, stops and starts
 * again, and its new thread state adopts the vanished thread's heap. */
static int fork_child_adopts(ft_runtime *rt, ft_thread *survivor, held_blocks *h)
{
    alarm(20); /* a hang (a lock the vanished thread held) kills the child instead */
    ft_runtime_after_fork_child(rt, survivor);
    ft_heap_stats s;
    ft_heap_get_stats(rt, &s);
    if (s.abandoned_heaps != 1 || s.live_blocks != 4 * HELD)
        return 2;
    for (int i = 0; i < 2 * HELD; i++)
        if (ft_heap_block_owner(h->raw[i]) != NULL)
            return 3;
    ft_thread_stop(survivor);
    ft_thread *t = ft_thread_start(rt);
    if (!t)
        return 4;
    for (int i = 0; i < 2 * HELD; i++)
        if (ft_heap_block_owner(h->raw[i]) != t || ft_heap_block_owner(h->gc[i]) != t)
            return 5;
    ft_heap_stats before;
    ft_heap_get_stats(rt, &before);
    for (int i = 0; i < 2 * HELD; i++) {
        ft_free(t, h->raw[i]);
        ft_decref(h->gc[i]);
    }
    ft_heap_get_stats(rt, &s);
    if (s.remote_frees != before.remote_frees) /* the adopter's own blocks: local frees */
        return 6;
    if (s.abandoned_heaps != 0 || s.adopted_heaps != 1 || s.live_blocks != 0)
        return 7;
    ft_thread_stop(t);
    return ft_runtime_free(rt) == FT_OK ? 0 : 8;
}

/* In the child of a fork, the heap of a thread that did not survive is abandoned (its blocks stay
 * valid, nobody owns them) and the next thread to start adopts it, whole. */
TEST(fork_child_abandons_the_vanished_threads_heaps)
{
    fixture f = fixture_setup();
    static held_blocks h;
    commanded owner;
    commanded_start(f.t, &owner, f.rt);
    commanded_do(f.t, &owner, cmd_allocate_held, &h);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(fork_child_adopts(f.rt, f.t, &h));
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status))
        fprintf(stderr, "fork child: killed by signal %d\n",
                WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);

    /* The parent's heaps are untouched. */
    CHECK(ft_heap_block_owner(h.raw[0]) == owner.t);
    CHECK_EQ(stats_of(f.rt).abandoned_heaps, 0);
    commanded_finish(f.t, &owner); /* it stops with its blocks: its heap is abandoned */
    for (int i = 0; i < 2 * HELD; i++) {
        ft_free(f.t, h.raw[i]);
        ft_decref(h.gc[i]);
    }
    ft_heap_stats s = stats_of(f.rt);
    CHECK_EQ(s.live_blocks, 0);
    fixture_teardown(f);
}

/* ---- the owner's fast free: owner_tid ------------------------------------------------------------- */

#define TID_OBJECTS 3000 /* 48-byte objects: more than two pages' worth, so some pages are full */

typedef struct tid_check {
    ft_runtime *rt;
    ft_object *objects[TID_OBJECTS];
    bool consistent;  /* every page checked carried the owner_tid that its list calls for */
    bool full_page_revived; /* a free into a full page made it active again, with its owner's id */
    bool some_full;   /* the pages checked included full ones, or the check proved less */
    uint64_t remote_before, remote_after;
} tid_check;

/* Whether every page that holds one of c's objects carries tid while active and 0 otherwise. */
static bool owner_tids_are(tid_check *c, uintptr_t tid)
{
    bool ok = true;
    c->some_full = false;
    for (int i = 0; i < TID_OBJECTS; i++) {
        if (!c->objects[i])
            continue;
        ft_page *p = ft_page_of(c->objects[i]);
        c->some_full |= p->list == FT_PAGE_FULL;
        ok &= atomic_load(&p->owner_tid) == (p->list == FT_PAGE_ACTIVE ? tid : 0);
    }
    return ok;
}

static void allocate_objects_and_stop(ft_thread *t, void *arg)
{
    tid_check *c = arg;
    for (int i = 0; i < TID_OBJECTS; i++) {
        c->objects[i] = ft_alloc(t, &plain_type);
        CHECK_THREAD(c->objects[i] != NULL);
    }
    c->consistent = owner_tids_are(c, ft_os_thread_id()) && c->some_full;
    /* The owner's drop of an object in a full page: not the fast free (owner_tid is 0 there), but
     * the page comes back to the active list and takes the owner's id. */
    c->full_page_revived = false;
    for (int i = 0; i < TID_OBJECTS && !c->full_page_revived; i++) {
        ft_page *p = ft_page_of(c->objects[i]);
        if (p->list != FT_PAGE_FULL)
            continue;
        ft_decref(c->objects[i]);
        c->objects[i] = NULL;
        c->full_page_revived = p->list == FT_PAGE_ACTIVE &&
                               atomic_load(&p->owner_tid) == ft_os_thread_id();
    }
    /* It stops with the rest allocated: its heap set is abandoned. */
}

static void adopt_and_drop_objects(ft_thread *t, void *arg)
{
    tid_check *c = arg;
    c->consistent = owner_tids_are(c, ft_os_thread_id());
    c->remote_before = stats_of(c->rt).remote_frees;
    for (int i = 0; i < TID_OBJECTS; i++)
        if (c->objects[i]) {
            ft_decref(c->objects[i]);
            c->objects[i] = NULL;
        }
    ft_object *o = ft_alloc(t, &plain_type); /* from an adopted active page */
    CHECK_THREAD(o != NULL);
    c->consistent &= atomic_load(&ft_page_of(o)->owner_tid) == ft_os_thread_id();
    ft_decref(o);
    c->remote_after = stats_of(c->rt).remote_frees;
}

/* A page's owner_tid names its owner's OS thread exactly while it is active in an owned heap: set
 * when it becomes active, 0 when it fills up, 0 for every page of an abandoned heap (another thread,
 * or a new one that happens to reuse the dead one's thread pointer, must not free into it as its
 * owner), and the adopter's once its heap is adopted, whose frees are then all local. */
TEST(owner_tid_follows_the_pages_and_their_owner)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    ft_thread *t = ft_thread_start(rt); /* started first: it keeps a heap of its own */
    static tid_check c;
    c.rt = rt;
    run_on_new_thread(rt, t, allocate_objects_and_stop, &c);
    CHECK(c.consistent);
    CHECK(c.full_page_revived);
    CHECK_EQ(stats_of(rt).abandoned_heaps, 1);
    CHECK(owner_tids_are(&c, 0));
    CHECK(c.some_full);

    run_on_new_thread(rt, t, adopt_and_drop_objects, &c);
    CHECK(c.consistent);
    CHECK_EQ(c.remote_after, c.remote_before);
    ft_heap_stats s = stats_of(rt);
    CHECK_EQ(s.adopted_heaps, 1);
    CHECK_EQ(s.live_blocks, 0);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
}

/* ---- the page checker ---------------------------------------------------------------------------- */

typedef enum corruption {
    WRONG_USED,      /* used one more than the blocks handed out */
    DUPLICATE_FREE,  /* a block on the free list twice (the list loops back to it) */
    WRONG_OWNER_TID, /* an active page of an owned heap that does not name its owner */
    STALE_DIRECT,    /* a direct slot that misses its class's active page */
} corruption;

enum { CORRUPT_BLOCKS = 8 };

/* A runtime with expensive checks on and one page of 64-byte blocks: CORRUPT_BLOCKS handed out, the
 * last two freed again (they head the page's free list), so it sits on its class's active list. */
static struct {
    ft_runtime *rt;
    ft_thread *t;
    void *blocks[CORRUPT_BLOCKS];
    ft_page *page;
} victim;

static void corrupt(corruption c)
{
    ft_page *page = victim.page;
    ft_block *last = victim.blocks[CORRUPT_BLOCKS - 1], *before = victim.blocks[CORRUPT_BLOCKS - 2];
    switch (c) {
    case WRONG_USED:
        page->used++;
        break;
    case DUPLICATE_FREE: /* the list is last -> before -> ...: make it last -> before -> last */
        atomic_store(&before->next, (uintptr_t)last);
        break;
    case WRONG_OWNER_TID:
        atomic_store(&page->owner_tid, 0);
        break;
    case STALE_DIRECT:
        page->heap->direct[64 / 16] = (ft_page *)&ft_page_empty;
        break;
    }
}

/* In the forked child: corrupt the page, then call the checker (with the world stopped, as it
 * requires), which must report it; the child then aborts. */
static void corrupt_and_check(void *arg)
{
    corrupt((corruption)(intptr_t)arg);
    ft_stop_the_world(victim.rt);
    bool page_ok = ft_page_is_valid(victim.page);
    bool set_ok = ft_heap_set_is_valid(victim.page->set);
    ft_start_the_world(victim.rt);
    if (!page_ok || !set_ok)
        abort();
}

#ifdef FTRT_DEBUG
/* The same, but through a walk of the heap (statistics), which in debug builds checks every page
 * before it visits any and must stop the process with the checker's report. */
static void corrupt_and_walk(void *arg)
{
    corrupt((corruption)(intptr_t)arg);
    ft_heap_stats s;
    ft_heap_get_stats(victim.rt, &s);
}
#endif

TEST(the_checker_reports_a_corrupted_page)
{
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.expensive_checks = true;
    victim.rt = ft_runtime_new(&cfg);
    CHECK(victim.rt != NULL);
    victim.t = ft_thread_start(victim.rt);
    CHECK(victim.t != NULL);
    for (int i = 0; i < CORRUPT_BLOCKS; i++) {
        victim.blocks[i] = ft_malloc(victim.t, 64);
        CHECK(victim.blocks[i] != NULL);
        CHECK(ft_page_of(victim.blocks[i]) == ft_page_of(victim.blocks[0]));
    }
    victim.page = ft_page_of(victim.blocks[0]);
    ft_free(victim.t, victim.blocks[CORRUPT_BLOCKS - 2]);
    ft_free(victim.t, victim.blocks[CORRUPT_BLOCKS - 1]);
    CHECK_EQ(victim.page->list, FT_PAGE_ACTIVE);
    CHECK_EQ(stats_of(victim.rt).live_blocks, CORRUPT_BLOCKS - 2); /* the intact heap passes */

    char page[64];
    snprintf(page, sizeof page, "heap check: page %p", (void *)victim.page);
    CHECK_DEATH(corrupt_and_check, (void *)(intptr_t)WRONG_USED, page, "used");
    CHECK_DEATH(corrupt_and_check, (void *)(intptr_t)DUPLICATE_FREE, page, "twice");
    CHECK_DEATH(corrupt_and_check, (void *)(intptr_t)WRONG_OWNER_TID, page, "owner_tid");
    CHECK_DEATH(corrupt_and_check, (void *)(intptr_t)STALE_DIRECT, "direct slot", "active");
#ifdef FTRT_DEBUG
    CHECK_DEATH(corrupt_and_walk, (void *)(intptr_t)WRONG_USED, page, "used", "internal check failed");
    CHECK_DEATH(corrupt_and_walk, (void *)(intptr_t)DUPLICATE_FREE, page, "twice");
    CHECK_DEATH(corrupt_and_walk, (void *)(intptr_t)WRONG_OWNER_TID, page, "owner_tid");
    CHECK_DEATH(corrupt_and_walk, (void *)(intptr_t)STALE_DIRECT, "direct slot", "active");
#endif
    for (int i = 0; i < CORRUPT_BLOCKS - 2; i++)
        ft_free(victim.t, victim.blocks[i]);
    CHECK_EQ(stats_of(victim.rt).live_blocks, 0);
    ft_thread_stop(victim.t);
    CHECK_EQ(ft_runtime_free(victim.rt), FT_OK);
}

int main(void)
{
    RUN(raw_blocks_of_every_size);
    RUN(calloc_zeroes_and_checks_overflow);
    RUN(object_payloads_are_zeroed_in_every_class);
    RUN(remote_frees_are_counted);
    RUN(abandoned_heap_is_adopted_by_the_next_thread);
    RUN(each_abandoned_heap_is_adopted_once);
    RUN(large_page_accounting_after_reuse);
    RUN(heap_walk_visits_exactly_the_live_blocks);
    RUN(allocation_follows_pages_through_every_list);
    RUN(remote_batch_is_pushed_when_full_or_when_the_page_changes);
    RUN(walks_and_statistics_see_through_remote_batches);
    RUN(owner_finds_its_pages_empty_once_the_batch_is_pushed);
    RUN(owner_tid_follows_the_pages_and_their_owner);
    RUN(fork_child_abandons_the_vanished_threads_heaps);
    RUN(large_blocks_freed_by_a_consumer_come_back_to_the_producer);
    RUN(large_pages_freed_remotely_come_back_on_any_slow_path);
    RUN(the_checker_reports_a_corrupted_page);
    return harness_done();
}
