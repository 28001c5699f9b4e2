/* bench_tlbc.c: what the first use of a code buffer by another thread costs.
 *
 * tlbc.first_copy_vs_memcpy: the first ft_tlbc_get of a code buffer by a thread other than the
 * first (thread index 1) makes that thread's copy: grow the copies array (the old one goes to
 * delayed free), allocate the copy, and call the host's copy callback (a memcpy here). It is
 * compared with a memcpy of the same bytes into a preallocated buffer. Each round registers a batch
 * of fresh buffers (untimed), times the first get of each, then destroys them (untimed); the
 * baseline copies the same batch of originals into as many preallocated buffers. The figure is for
 * 4 KiB of code (batches of 16); 64 KiB (one per round) is printed as a note. Both sides' page
 * faults per op are printed too: the copies' memory comes from glibc's malloc, and when glibc hands
 * freed memory back to the kernel the next copy pays a fault per page, which is the kernel's cost,
 * not ftrt's, and which the batch sizes avoid. */
#include "bench.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ftrt.h"

/* ---- tlbc.first_copy_vs_memcpy ---------------------------------------------------------------- */

typedef struct first_copy {
    BENCH_ALIGNED const bench_config *cfg;
    ft_runtime *rt;
    ft_thread *thread; /* index >= 1: it gets copies */
    size_t code_bytes;
    int batch;  /* code buffers per round */
    int rounds; /* per repetition */
    unsigned char **originals; /* batch buffers of code_bytes, each with its own pattern */
    unsigned char **targets;   /* the baseline's preallocated destinations */
    ft_tlbc *buffers;          /* batch of them, registered and destroyed every round */
    uint64_t sink;
    bench_series faults_per_op[2]; /* minor page faults per op, ftrt (0) and memcpy (1) */
    bench_comparison small, large; /* 4 KiB and 64 KiB of code */
    double small_faults[2], large_faults[2];
} first_copy;

/* Minor page faults of the calling thread so far: memory glibc gave back to the kernel and took
 * again costs a fault per page on first touch, which would dwarf what is measured here. */
static long thread_minor_faults(void)
{
    struct rusage usage;
    getrusage(RUSAGE_THREAD, &usage);
    return usage.ru_minflt;
}

static void copy_code(void *dst, const void *original, size_t size, void *arg)
{
    (void)arg;
    memcpy(dst, original, size);
}

static double ft_first_get_ns(void *arg)
{
    first_copy *f = arg;
    ft_thread *t = f->thread;
    uint64_t timed = 0, sink = f->sink;
    long faults = thread_minor_faults();
    for (int round = 0; round < f->rounds; round++) {
        for (int i = 0; i < f->batch; i++)
            if (ft_tlbc_init(&f->buffers[i], t, f->originals[i], f->code_bytes, copy_code, NULL) !=
                FT_OK) {
                fprintf(stderr, "bench: ft_tlbc_init failed\n");
                exit(2);
            }
        uint64_t start = bench_now_ns();
        for (int i = 0; i < f->batch; i++) {
            unsigned char *code = ft_tlbc_get(&f->buffers[i], t);
            sink += code[f->code_bytes - 1];
            ft_safepoint(t);
        }
        timed += bench_now_ns() - start;
        for (int i = 0; i < f->batch; i++) {
            const unsigned char *code = ft_tlbc_get(&f->buffers[i], t);
            if (code == f->originals[i] || memcmp(code, f->originals[i], f->code_bytes) != 0)
                bench_fail("ft_tlbc_get did not return a copy of the original");
            ft_tlbc_destroy(&f->buffers[i], t);
        }
    }
    f->sink = sink;
    bench_series_add(&f->faults_per_op[0], (double)(thread_minor_faults() - faults) /
                                               ((double)f->rounds * (double)f->batch));
    return (double)timed / ((double)f->rounds * (double)f->batch);
}

static double memcpy_ns(void *arg)
{
    first_copy *f = arg;
    uint64_t timed = 0, sink = f->sink;
    long faults = thread_minor_faults();
    for (int round = 0; round < f->rounds; round++) {
        uint64_t start = bench_now_ns();
        for (int i = 0; i < f->batch; i++) {
            memcpy(f->targets[i], f->originals[i], f->code_bytes);
            BENCH_CLOBBER();
            sink += f->targets[i][f->code_bytes - 1];
        }
        timed += bench_now_ns() - start;
    }
    f->sink = sink;
    bench_series_add(&f->faults_per_op[1], (double)(thread_minor_faults() - faults) /
                                               ((double)f->rounds * (double)f->batch));
    return (double)timed / ((double)f->rounds * (double)f->batch);
}

static bench_comparison compare_first_copy(first_copy *f, size_t code_bytes, int batch, int rounds,
                                           double *faults)
{
    memset(f->faults_per_op, 0, sizeof f->faults_per_op);
    f->code_bytes = code_bytes;
    f->batch = batch;
    f->rounds = rounds;
    f->originals = bench_alloc((size_t)batch * sizeof *f->originals);
    f->targets = bench_alloc((size_t)batch * sizeof *f->targets);
    f->buffers = bench_alloc((size_t)batch * sizeof *f->buffers);
    for (int i = 0; i < batch; i++) {
        f->originals[i] = bench_alloc(code_bytes);
        f->targets[i] = bench_alloc(code_bytes);
        for (size_t k = 0; k < code_bytes; k++)
            f->originals[i][k] = (unsigned char)(k * 31 + (size_t)i);
    }
    bench_side ft = {"ft_tlbc_get (first)", ft_first_get_ns, f};
    bench_side copy = {"memcpy", memcpy_ns, f};
    bench_comparison c = bench_interleave(f->cfg, &ft, &copy);
    faults[0] = bench_series_median(&f->faults_per_op[0]);
    faults[1] = bench_series_median(&f->faults_per_op[1]);
    for (int i = 0; i < batch; i++) {
        free(f->originals[i]);
        free(f->targets[i]);
    }
    free(f->originals);
    free(f->targets);
    free(f->buffers);
    return c;
}

static void *first_copy_thread(void *arg)
{
    first_copy *f = arg;
    f->thread = bench_thread_start(f->rt);
    if (ft_thread_index(f->thread) == 0)
        bench_fail("tlbc: the measuring thread got index 0, which uses the original");
    bool quick = f->cfg->quick;
    /* Batches small enough that glibc keeps the freed copies for the next round rather than
     * trimming them back to the kernel (64 copies of 4 KiB, freed together, made it fault on half
     * of the next round's pages), and that everything stays in L2 on both sides. */
    f->small = compare_first_copy(f, 4096, 16, quick ? 1000 : 3000, f->small_faults);
    f->large = compare_first_copy(f, 65536, 1, quick ? 1500 : 5000, f->large_faults);
    ft_thread_stop(f->thread);
    return NULL;
}

void bench_tlbc_first_copy_vs_memcpy(const bench_config *cfg, const char *name)
{
    ft_config config;
    ft_config_init(&config);
    config.tlbc_disabled = false; /* the figure measures copies, whatever FTRT_TLBC says */
    ft_runtime *rt = ft_runtime_new(&config);
    /* This thread holds index 0 (the original), detached so it never delays anyone. */
    ft_thread *holder = rt ? ft_thread_start(rt) : NULL;
    if (!holder) {
        fprintf(stderr, "bench: cannot start a runtime thread: %s\n",
                ft_status_str(ft_last_error()));
        exit(2);
    }
    ft_detach(holder);
    first_copy *f = bench_alloc(sizeof *f);
    f->cfg = cfg;
    f->rt = rt;
    bench_team_run(cfg, 1, first_copy_thread, f, sizeof *f);
    bench_note("4 KiB: page faults per op %.3f (ftrt, round included) vs %.3f (memcpy)",
               f->small_faults[0], f->small_faults[1]);
    bench_note("64 KiB of code, one buffer per round: first ft_tlbc_get %.0f ns vs memcpy %.0f ns, "
               "ratio %.2f; page faults per op %.3f vs %.3f",
               f->large.median_a, f->large.median_b, f->large.median_ratio, f->large_faults[0],
               f->large_faults[1]);
    ft_attach(holder);
    if (ft_tlbc_count(rt) != 0)
        bench_fail("tlbc: %zu copies left after every buffer was destroyed", ft_tlbc_count(rt));
    ft_thread_stop(holder);
    if (ft_runtime_free(rt) != FT_OK)
        bench_fail("ft_runtime_free refused after every thread stopped");
    bench_report(name, f->small.median_ratio, "ratio",
                 "memcpy of the same 4 KiB into a preallocated buffer; ftrt: the first get by "
                 "thread index 1 (array growth, malloc, copy callback = memcpy), a safepoint "
                 "after each; batches of 16 code buffers",
                 "<= 2.0", "first ft_tlbc_get", f->small.median_a, "memcpy",
                 f->small.median_b, "ns");
    free(f);
}
