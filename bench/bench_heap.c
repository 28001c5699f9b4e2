/* bench_heap.c: the page heap against the allocators a C programmer would otherwise use.
 *
 * heap.alloc_free_vs_malloc    ft_alloc + ft_decref of 32..256-byte objects, 1024 allocated then
 *                              1024 dropped, ÷ glibc malloc + free of the same sizes and pattern
 * heap.alloc_free_vs_mimalloc  the same ÷ mimalloc's mi_malloc + mi_free
 * heap.alloc_free_vs_mi_zalloc the same ÷ mi_zalloc + mi_free (ft_alloc zeroes the payload, and
 *                              so does mi_zalloc; malloc and mi_malloc do not)
 * heap.uninit_free_vs_mimalloc
 *                              ft_alloc_uninit + ft_decref ÷ mi_malloc + mi_free (neither zeroes)
 * heap.remote_free_vs_local    ft_free of a block by a thread that does not own it ÷ by its owner
 *                              (the frees alone are timed; a remote free waits in the freeing
 *                              thread's batch for its page, and the pushes of those batches are
 *                              timed too, but for the last round's final partial batch, which the
 *                              thread's stop pushes)
 * heap.bytes_per_object        heap bytes per live 48-byte object ÷ 48
 *
 * The process has created a thread before any of this runs (main.c), so glibc is on its
 * multi-threaded paths, as in a real user's process. mimalloc is loaded at run time with dlopen
 * (RTLD_LOCAL): Debian's libmimalloc exports malloc and free, and linking it would replace the
 * allocator of the whole process, glibc baseline and ftrt's own bookkeeping included. */
#include "bench.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftrt.h"
#include "heap/heap.h" /* FT_REMOTE_BATCH, for a note */

static void *checked_malloc(size_t size)
{
    void *p = malloc(size);
    if (!p) {
        fprintf(stderr, "bench: out of memory\n");
        exit(2);
    }
    memset(p, 0, size);
    return p;
}

static void out_of_memory(const char *what)
{
    fprintf(stderr, "bench: %s returned NULL\n", what);
    exit(2);
}

/* ---- heap.alloc_free_vs_malloc, _vs_mimalloc, _vs_mi_zalloc; heap.uninit_free_vs_mimalloc ---- */

#define CHURN_BATCH 1024
#define CHURN_SIZES 7

static const size_t churn_sizes[CHURN_SIZES] = {32, 48, 64, 96, 128, 192, 256};

/* One type per size, no freelist: the heap itself is measured, as it is for any type that does
 * not ask for a freelist. */
static const ft_type churn_types[CHURN_SIZES] = {
    {.name = "bench.32", .basic_size = 32},   {.name = "bench.48", .basic_size = 48},
    {.name = "bench.64", .basic_size = 64},   {.name = "bench.96", .basic_size = 96},
    {.name = "bench.128", .basic_size = 128}, {.name = "bench.192", .basic_size = 192},
    {.name = "bench.256", .basic_size = 256},
};

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef ft_object *(*ft_alloc_fn)(ft_thread *, const ft_type *);

/* An allocator to compare with: its plain allocation, its zeroing one, and its free. */
typedef struct allocator {
    const char *name;          /* "glibc", "mimalloc" */
    const char *plain_label;   /* "malloc+free", "mi_malloc+mi_free" */
    const char *zeroed_label;  /* "calloc+free", "mi_zalloc+mi_free" */
    malloc_fn allocate;        /* malloc, mi_malloc */
    malloc_fn allocate_zeroed; /* calloc(1, n), mi_zalloc */
    free_fn release;
} allocator;

typedef struct churn {
    ft_thread *thread;
    const ft_type *types[CHURN_BATCH]; /* block i's type / size: the sizes in turn */
    size_t sizes[CHURN_BATCH];
    void *blocks[CHURN_BATCH];
    allocator with;
    uint64_t rounds;
} churn;

/* 1024 objects allocated with alloc, then 1024 dropped (the owner's last reference: freed). */
static inline __attribute__((always_inline)) double ft_churn(churn *c, ft_alloc_fn alloc)
{
    ft_thread *t = c->thread;
    uint64_t start = bench_now_ns();
    for (uint64_t r = 0; r < c->rounds; r++) {
        for (int i = 0; i < CHURN_BATCH; i++) {
            ft_object *o = alloc(t, c->types[i]);
            if (FT_UNLIKELY(!o))
                out_of_memory("ft_alloc");
            c->blocks[i] = o;
        }
        BENCH_CLOBBER();
        for (int i = 0; i < CHURN_BATCH; i++)
            ft_decref(c->blocks[i]);
        BENCH_CLOBBER();
        ft_safepoint(t);
    }
    return (double)(bench_now_ns() - start) / (double)(c->rounds * CHURN_BATCH);
}

static double ft_alloc_churn_ns(void *arg)
{
    return ft_churn(arg, ft_alloc);
}

static double ft_alloc_uninit_churn_ns(void *arg)
{
    return ft_churn(arg, ft_alloc_uninit);
}

static inline __attribute__((always_inline)) double other_churn(churn *c, malloc_fn allocate)
{
    free_fn release = c->with.release;
    uint64_t start = bench_now_ns();
    for (uint64_t r = 0; r < c->rounds; r++) {
        for (int i = 0; i < CHURN_BATCH; i++) {
            void *p = allocate(c->sizes[i]);
            if (FT_UNLIKELY(!p))
                out_of_memory(c->with.name);
            c->blocks[i] = p;
        }
        BENCH_CLOBBER();
        for (int i = 0; i < CHURN_BATCH; i++)
            release(c->blocks[i]);
        BENCH_CLOBBER();
    }
    return (double)(bench_now_ns() - start) / (double)(c->rounds * CHURN_BATCH);
}

static double other_churn_ns(void *arg)
{
    churn *c = arg;
    return other_churn(c, c->with.allocate);
}

static double other_zeroed_churn_ns(void *arg)
{
    churn *c = arg;
    return other_churn(c, c->with.allocate_zeroed);
}

/* The least an object runtime on top of the other allocator would do: a 32-byte header like ftrt's
 * (owner, a word with the local count, the shared word, the type) written at allocation, and at the
 * drop an owner check, the local count's decrement and a look at the shared word before the free.
 * Plain stores and loads: the cost of the header's memory traffic and instructions, no more. */
typedef struct bench_header {
    uintptr_t owner;
    uint64_t local_word;
    intptr_t shared;
    const void *type;
} bench_header;

static double other_header_churn_ns(void *arg)
{
    churn *c = arg;
    malloc_fn allocate = c->with.allocate;
    free_fn release = c->with.release;
    uintptr_t me = ft_os_thread_id();
    uint64_t start = bench_now_ns();
    for (uint64_t r = 0; r < c->rounds; r++) {
        for (int i = 0; i < CHURN_BATCH; i++) {
            bench_header *h = allocate(c->sizes[i]);
            if (FT_UNLIKELY(!h))
                out_of_memory(c->with.name);
            *h = (bench_header){me, (uint64_t)1 << 32, 0, c->types[i]};
            c->blocks[i] = h;
        }
        BENCH_CLOBBER();
        for (int i = 0; i < CHURN_BATCH; i++) {
            bench_header *h = c->blocks[i];
            if (FT_UNLIKELY(h->owner != me))
                bench_fail("a block lost its header");
            uint32_t local = (uint32_t)(h->local_word >> 32) - 1;
            h->local_word = (uint64_t)local << 32;
            if (FT_LIKELY(local == 0 && h->shared == 0))
                release(h);
        }
        BENCH_CLOBBER();
    }
    return (double)(bench_now_ns() - start) / (double)(c->rounds * CHURN_BATCH);
}

static void *glibc_zalloc(size_t size)
{
    return calloc(1, size);
}

static const allocator glibc = {"glibc", "malloc+free", "calloc+free", malloc, glibc_zalloc, free};

/* mimalloc's entry points, looked up in a privately loaded copy; false if it is not installed or
 * loading it would have replaced the process's malloc. */
static bool load_mimalloc(allocator *out)
{
    static const char *const sonames[] = {"libmimalloc.so.2", "libmimalloc.so"};
    void *process_malloc = dlsym(RTLD_DEFAULT, "malloc");
    void *lib = NULL;
    for (size_t i = 0; i < sizeof sonames / sizeof sonames[0] && !lib; i++)
        lib = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return false;
    void *mi_malloc = dlsym(lib, "mi_malloc"), *mi_zalloc = dlsym(lib, "mi_zalloc"),
         *mi_free = dlsym(lib, "mi_free");
    if (!mi_malloc || !mi_zalloc || !mi_free)
        return false;
    if (dlsym(RTLD_DEFAULT, "malloc") != process_malloc) {
        /* Never expected with RTLD_LOCAL; the whole run's baselines would be wrong. */
        bench_fail("loading mimalloc replaced the process's malloc");
        return false;
    }
    /* Function and object pointers share a representation on every POSIX system (dlsym needs it). */
    out->name = "mimalloc";
    out->plain_label = "mi_malloc+mi_free";
    out->zeroed_label = "mi_zalloc+mi_free";
    memcpy(&out->allocate, &mi_malloc, sizeof out->allocate);
    memcpy(&out->allocate_zeroed, &mi_zalloc, sizeof out->allocate_zeroed);
    memcpy(&out->release, &mi_free, sizeof out->release);
    return true;
}

/* Which ftrt allocation and which of the other allocator's a churn figure pairs. */
typedef enum churn_pairing {
    FT_ALLOC_VS_PLAIN,  /* ft_alloc (zeroes) vs malloc: the figure, unlike for unlike */
    FT_ALLOC_VS_ZEROED, /* ft_alloc vs calloc / mi_zalloc: both zero */
    UNINIT_VS_PLAIN,    /* ft_alloc_uninit vs malloc / mi_malloc: neither zeroes */
} churn_pairing;

typedef struct churn_figure {
    const char *name;
    const allocator *with;
    churn_pairing pairing;
    const char *baseline;
} churn_figure;

static void report_churn(const bench_config *cfg, const churn_figure *fig)
{
    ft_runtime *rt = bench_runtime_new();
    bench_pin_self(cfg->cpus[0]);
    ft_thread *t = bench_thread_start(rt);
    churn *c = checked_malloc(sizeof *c);
    for (int i = 0; i < CHURN_BATCH; i++) {
        c->types[i] = &churn_types[i % CHURN_SIZES];
        c->sizes[i] = churn_sizes[i % CHURN_SIZES];
    }
    c->thread = t;
    c->with = *fig->with;
    /* About 15 ms per repetition at ~15 ns per pair. */
    c->rounds = cfg->quick ? 300 : 1000;

    bench_side zeroing_ft = {"ft_alloc+ft_decref", ft_alloc_churn_ns, c};
    bench_side uninit_ft = {"ft_alloc_uninit+ft_decref", ft_alloc_uninit_churn_ns, c};
    bench_side plain = {c->with.plain_label, other_churn_ns, c};
    bench_side zeroed = {c->with.zeroed_label, other_zeroed_churn_ns, c};
    const bench_side *ft = fig->pairing == UNINIT_VS_PLAIN ? &uninit_ft : &zeroing_ft;
    const bench_side *other = fig->pairing == FT_ALLOC_VS_ZEROED ? &zeroed : &plain;
    bench_comparison cmp = bench_interleave(cfg, ft, other);
    if (fig->pairing == UNINIT_VS_PLAIN) {
        bench_side with_header = {"with a header", other_header_churn_ns, c};
        bench_comparison floor = bench_interleave(cfg, &with_header, &plain);
        bench_note("%s writing and reading a 32-byte header like ftrt's (no checks, no atomics): "
                   "%.2f vs %.2f ns/pair without, ratio %.3f",
                   c->with.name, floor.median_a, floor.median_b, floor.median_ratio);
    }
    if (fig->pairing == FT_ALLOC_VS_PLAIN)
        bench_note("ft_alloc zeroes the payload and %s's malloc does not; like for like: "
                   "heap.alloc_free_vs_mi_zalloc and heap.uninit_free_vs_mimalloc",
                   c->with.name);
    bench_report(fig->name, cmp.median_ratio, "ratio", fig->baseline, "<= 1.0", ft->label,
                 cmp.median_a, other->label, cmp.median_b, "ns/pair");
    ft_thread_stop(t);
    bench_unpin_self();
    if (ft_runtime_free(rt) != FT_OK)
        bench_fail("ft_runtime_free refused after the only thread stopped");
    free(c);
}

#define CHURN_PATTERN "sizes 32..256 in turn, 1024 allocated then 1024 freed, threaded process"

void bench_heap_alloc_free_vs_malloc(const bench_config *cfg, const char *name)
{
    churn_figure fig = {name, &glibc, FT_ALLOC_VS_PLAIN, "glibc malloc+free, " CHURN_PATTERN};
    report_churn(cfg, &fig);
}

/* The mimalloc figures, skipped with a note when it is not installed. */
static void report_mimalloc_churn(const bench_config *cfg, const char *name,
                                  churn_pairing pairing, const char *baseline)
{
    allocator mimalloc;
    if (!load_mimalloc(&mimalloc)) {
        printf("%-28s skipped: libmimalloc.so.2 not found (apt-get install libmimalloc-dev)\n",
               name);
        return;
    }
    churn_figure fig = {name, &mimalloc, pairing, baseline};
    report_churn(cfg, &fig);
}

void bench_heap_alloc_free_vs_mimalloc(const bench_config *cfg, const char *name)
{
    report_mimalloc_churn(cfg, name, FT_ALLOC_VS_PLAIN,
                          "mimalloc mi_malloc+mi_free (dlopen'ed), " CHURN_PATTERN);
}

void bench_heap_alloc_free_vs_mi_zalloc(const bench_config *cfg, const char *name)
{
    report_mimalloc_churn(cfg, name, FT_ALLOC_VS_ZEROED,
                          "mimalloc mi_zalloc+mi_free (dlopen'ed; zeroes, as ft_alloc does), "
                          CHURN_PATTERN);
}

void bench_heap_uninit_free_vs_mimalloc(const bench_config *cfg, const char *name)
{
    report_mimalloc_churn(cfg, name, UNINIT_VS_PLAIN,
                          "mimalloc mi_malloc+mi_free (dlopen'ed; neither side zeroes), "
                          CHURN_PATTERN);
}

/* ---- heap.remote_free_vs_local ---------------------------------------------------------------- */

#define REMOTE_BATCH 1024
#define REMOTE_BLOCK 64

/* A allocates a batch and writes every block (a producer filling messages). Then whoever frees the
 * batch first uses each block, writing a word in it (a consumer reading and updating a message),
 * and only then the free is timed: so both sides free blocks hot in their own cache, and the
 * difference is the free itself. The cold variant skips the consumer's use: the remote free then
 * also pays to bring every block's line over from A. */
enum remote_mode { FREE_LOCAL, FREE_REMOTE_USED, FREE_REMOTE_COLD };

typedef struct remote_shared {
    const bench_config *cfg;
    ft_runtime *rt;
    enum remote_mode mode;
    uint64_t rounds;
    bench_gate gate;
    BENCH_ALIGNED void *blocks[REMOTE_BATCH];
    BENCH_ALIGNED uint64_t free_ns; /* timed frees, all rounds */
} remote_shared;

typedef struct remote_worker {
    BENCH_ALIGNED remote_shared *shared;
    int role; /* 0: allocates; 1: frees remotely */
} remote_worker;

static void use_blocks(void **blocks, uint64_t tag)
{
    for (int i = 0; i < REMOTE_BATCH; i++)
        ((uint64_t *)blocks[i])[1] += tag;
}

static uint64_t free_blocks_timed(ft_thread *t, void **blocks)
{
    uint64_t start = bench_now_ns();
    for (int i = 0; i < REMOTE_BATCH; i++)
        ft_free(t, blocks[i]);
    return bench_now_ns() - start;
}

static void *remote_thread(void *arg)
{
    remote_worker *w = arg;
    remote_shared *s = w->shared;
    ft_thread *t = bench_thread_start(s->rt);
    bench_gate_wait(&s->gate);
    for (uint64_t r = 0; r < s->rounds; r++) {
        if (w->role == 0) {
            for (int i = 0; i < REMOTE_BATCH; i++) {
                uint64_t *b = ft_malloc(t, REMOTE_BLOCK);
                if (!b)
                    out_of_memory("ft_malloc");
                memset(b, (int)r, REMOTE_BLOCK);
                s->blocks[i] = b;
            }
            if (s->mode == FREE_LOCAL) {
                use_blocks(s->blocks, r);
                s->free_ns += free_blocks_timed(t, s->blocks);
            }
        }
        ft_safepoint(t);
        if (s->mode == FREE_LOCAL)
            continue;
        bench_gate_wait(&s->gate); /* the batch is ready */
        if (w->role == 1) {
            if (s->mode == FREE_REMOTE_USED)
                use_blocks(s->blocks, r);
            s->free_ns += free_blocks_timed(t, s->blocks);
        }
        bench_gate_wait(&s->gate); /* the batch is freed */
    }
    ft_thread_stop(t);
    return NULL;
}

/* One repetition of one mode: ns per timed free; checks that the remote frees were remote. */
static double remote_ns_per_free(void *arg)
{
    remote_shared *s = arg;
    remote_worker workers[2] = {{.shared = s, .role = 0}, {.shared = s, .role = 1}};
    int threads = s->mode == FREE_LOCAL ? 1 : 2;
    ft_heap_stats before, after;
    ft_heap_get_stats(s->rt, &before);
    s->free_ns = 0;
    bench_gate_init(&s->gate, (uint32_t)threads);
    bench_team_run(s->cfg, threads, remote_thread, workers, sizeof workers[0]);
    ft_heap_get_stats(s->rt, &after);
    uint64_t expected = s->mode == FREE_LOCAL ? 0 : s->rounds * REMOTE_BATCH;
    if (after.remote_frees - before.remote_frees != expected)
        bench_fail("remote_free_vs_local: %llu remote frees counted, expected %llu",
                   (unsigned long long)(after.remote_frees - before.remote_frees),
                   (unsigned long long)expected);
    return (double)s->free_ns / (double)(s->rounds * REMOTE_BATCH);
}

void bench_heap_remote_free_vs_local(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    remote_shared *local = aligned_alloc(BENCH_SEPARATION, sizeof *local);
    remote_shared *remote = aligned_alloc(BENCH_SEPARATION, sizeof *remote);
    if (!local || !remote)
        out_of_memory("aligned_alloc");
    memset(local, 0, sizeof *local);
    local->cfg = cfg;
    local->rt = bench_runtime_new();
    local->mode = FREE_LOCAL;
    local->rounds = cfg->quick ? 100 : 300;
    memset(remote, 0, sizeof *remote);
    remote->cfg = cfg;
    remote->rt = local->rt;
    remote->mode = FREE_REMOTE_USED;
    remote->rounds = local->rounds;
    bench_side a = {"remote ft_free", remote_ns_per_free, remote};
    bench_side b = {"local ft_free", remote_ns_per_free, local};
    bench_comparison c = bench_interleave(cfg, &a, &b);
    remote->mode = FREE_REMOTE_COLD;
    bench_comparison cold = bench_interleave(cfg, &a, &b);
    bench_note("remote free of blocks the freeing thread never touched (their lines still in the "
               "allocating thread's cache): %.2f vs local %.2f ns/block, ratio %.2f",
               cold.median_a, cold.median_b, cold.median_ratio);
    bench_note("remote frees are batched: up to %d blocks of one page per CAS onto its remote-free "
               "stack",
               FT_REMOTE_BATCH);
    bench_report(name, c.median_ratio, "ratio",
                 "ft_free by the owning thread; free side only, 64-byte blocks in batches of 1024, "
                 "each block just used (written) by the freeing thread",
                 "<= 3", a.label, c.median_a, b.label, c.median_b, "ns/block");
    if (ft_runtime_free(local->rt) != FT_OK)
        bench_fail("ft_runtime_free refused after every thread stopped");
    free(local);
    free(remote);
}

/* ---- heap.bytes_per_object -------------------------------------------------------------------- */

typedef struct sized48 {
    ft_object ob;
    uint64_t payload[2];
} sized48;

_Static_assert(sizeof(sized48) == 48, "a 48-byte object");

static const ft_type sized48_type = {.name = "bench.48b", .basic_size = sizeof(sized48)};

void bench_heap_bytes_per_object(const bench_config *cfg, const char *name)
{
    size_t count = cfg->quick ? 200000 : 1000000;
    ft_object **objects = malloc(count * sizeof *objects);
    if (!objects)
        out_of_memory("malloc");
    ft_runtime *rt = bench_runtime_new();
    ft_thread *t = bench_thread_start(rt);
    for (size_t i = 0; i < count; i++) {
        objects[i] = ft_alloc(t, &sized48_type);
        if (!objects[i])
            out_of_memory("ft_alloc");
    }
    ft_heap_stats stats;
    ft_heap_get_stats(rt, &stats);
    if (stats.live_blocks != count)
        bench_fail("bytes_per_object: %llu live blocks, expected %zu",
                   (unsigned long long)stats.live_blocks, count);
    double per_object = (double)stats.page_bytes / (double)count;
    bench_note("%zu objects: %llu pages, %llu page bytes, %llu live bytes", count,
               (unsigned long long)stats.pages, (unsigned long long)stats.page_bytes,
               (unsigned long long)stats.live_bytes);
    bench_report(name, per_object / (double)sizeof(sized48), "ratio",
                 "48 bytes per object (ft_heap_get_stats page_bytes / live 48-byte objects, one "
                 "thread)",
                 "<= 1.15", "heap", per_object, "object", (double)sizeof(sized48), "bytes/object");
    for (size_t i = 0; i < count; i++)
        ft_decref(objects[i]);
    ft_thread_stop(t);
    if (ft_runtime_free(rt) != FT_OK)
        bench_fail("ft_runtime_free refused after the only thread stopped");
    free(objects);
}
