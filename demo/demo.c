/* demo/demo.c: ftrt's demo: five phases, each checking its invariants. This file has main, the
 * helpers the phases share, and the first phase, a small bank on the foundation layer; graphs.c
 * has the second, graphs of managed objects handed between threads; sharing.c the third, readers
 * and writers sharing a dictionary; gc.c the fourth, cycles collected while threads work; stackrefs.c the fifth,
 * shared deferred functions called through stack references while collections run.
 *
 * The bank. Worker threads move money between accounts. Each account has its own ft_mutex, and a
 * transfer locks the two accounts it touches with a two-mutex critical section, which locks in
 * address order and so cannot deadlock however the workers pick their pairs. Now and then a worker
 * makes a "blocking call": it detaches (a yield), or it waits on an event inside a critical
 * section, which suspends the section (the account's mutex is released while the worker waits) and
 * re-locks it afterwards; the worker then sees whether the balance changed meanwhile, which is the
 * price of a critical section that cannot deadlock. Workers call ft_safepoint() after every
 * operation.
 *
 * An auditor thread stops the world every few milliseconds. While it is stopped, no worker is
 * between the two halves of a transfer (they only reach a safepoint, or detach, with no transfer
 * half done), so the sum of all balances must equal the initial total, no balance may be negative
 * and no worker may finish an operation. The auditor reads the balances through ordinary critical
 * sections, which never wait for a mutex while their thread has the world stopped. That matters: an
 * account's mutex may be held at that moment by a suspended worker that has not begun its transfer
 * yet (an unlock hands a mutex directly to a waiter that has waited over 1 ms, and a two-mutex
 * section keeps the lower mutex while it waits for the higher), and waiting for it would hang.
 *
 * The whole run takes 2 s (or argv[1] milliseconds), a fifth for each phase. When the environment
 * has FTRT_DEMO_TRACE (make demo sets it to build/demo-trace.json), the cycles phase writes a trace
 * of its stops and collections there (ftrt/trace.h). Each phase prints its
 * figures and whether its invariants held; the program exits with 1 if any did not. */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"
#include "ftrt.h"

enum {
    WORKER_COUNT = 3,
    ACCOUNT_COUNT = 8,
    INITIAL_BALANCE = 1000,
    MAX_TRANSFER = 100,
    DEFAULT_RUN_MS = 2000,
    STOP_INTERVAL_US = 2000,
    AUDIT_WAIT_US = 20,
};

/* Each account on its own cache line, so that workers contend only on the accounts they share. */
typedef struct account {
    _Alignas(64) ft_mutex mutex;
    int64_t balance; /* guarded by mutex; read by the auditor while the world is stopped */
} account;

typedef struct worker {
    _Alignas(64) struct bank *bank; /* each worker on its own cache lines */
    pthread_t os_thread;
    uint64_t random_state;
    /* Written by the worker, read by the auditor during stops and by main at the end. */
    _Atomic(uint64_t) operations; /* every operation finished, of any kind */
    _Atomic(uint64_t) transfers;
    _Atomic(uint64_t) declined; /* the source account had too little */
    _Atomic(uint64_t) audits;
    _Atomic(uint64_t) audits_saw_change; /* the balance changed while the section was suspended */
    _Atomic(uint64_t) detaches;
} worker;

typedef struct auditor {
    struct bank *bank;
    pthread_t os_thread;
    demo_latency_log latencies; /* one per stop, measured around ft_stop_the_world */
    uint64_t stops;
    uint64_t sum_violations, negative_violations, progress_violations, not_stopped_violations;
    uint64_t stops_with_locked_mutex; /* informational: a suspended worker held a mutex */
} auditor;

typedef struct bank {
    ft_runtime *rt;
    account accounts[ACCOUNT_COUNT];
    worker workers[WORKER_COUNT];
    auditor auditor;
    ft_event done; /* set by main when the run time is over */
} bank;

/* ---- shared helpers ------------------------------------------------------------------------ */

uint64_t demo_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void demo_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

uint64_t demo_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

void demo_format_duration(char *out, size_t size, uint64_t ns)
{
    if (ns < 1000)
        snprintf(out, size, "%" PRIu64 " ns", ns);
    else if (ns < 1000000)
        snprintf(out, size, "%.1f us", (double)ns / 1e3);
    else
        snprintf(out, size, "%.2f ms", (double)ns / 1e6);
}

void demo_format_bytes(char *out, size_t size, uint64_t bytes)
{
    if (bytes < 1024)
        snprintf(out, size, "%" PRIu64 " B", bytes);
    else if (bytes < 1024 * 1024)
        snprintf(out, size, "%.1f KiB", (double)bytes / 1024);
    else
        snprintf(out, size, "%.2f MiB", (double)bytes / (1024 * 1024));
}

void demo_latency_record(demo_latency_log *log, uint64_t ns)
{
    if (log->count == log->capacity) {
        size_t capacity = log->capacity ? log->capacity * 2 : 1024;
        uint64_t *grown = realloc(log->ns, capacity * sizeof *grown);
        if (grown == NULL)
            return; /* the stop still counts; its latency just goes unrecorded */
        log->ns = grown;
        log->capacity = capacity;
    }
    log->ns[log->count++] = ns;
}

static int compare_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

static uint64_t percentile(const uint64_t *sorted, size_t n, double p)
{
    size_t rank = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[rank];
}

void demo_latency_print_and_free(demo_latency_log *log)
{
    if (log->count > 0) {
        char p50[32], p99[32], max[32];
        qsort(log->ns, log->count, sizeof *log->ns, compare_u64);
        demo_format_duration(p50, sizeof p50, percentile(log->ns, log->count, 0.50));
        demo_format_duration(p99, sizeof p99, percentile(log->ns, log->count, 0.99));
        demo_format_duration(max, sizeof max, log->ns[log->count - 1]);
        printf("  latency      p50 %s, p99 %s, max %s (timed around ft_stop_the_world)\n", p50, p99,
               max);
    }
    free(log->ns);
    *log = (demo_latency_log){0};
}

/* ---- phase 1: the bank ---------------------------------------------------------------------- */

static void count(_Atomic(uint64_t) *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

static void transfer(bank *b, worker *w, ft_thread *t, uint64_t r)
{
    size_t from = r % ACCOUNT_COUNT;
    size_t to = (from + 1 + (r >> 8) % (ACCOUNT_COUNT - 1)) % ACCOUNT_COUNT;
    int64_t amount = 1 + (int64_t)((r >> 16) % MAX_TRANSFER);
    account *src = &b->accounts[from], *dst = &b->accounts[to];

    ft_critical_section2 cs;
    ft_critical_section2_begin(t, &cs, &src->mutex, &dst->mutex);
    /* Both halves happen with no safepoint and no blocking call between them. */
    if (src->balance >= amount) {
        src->balance -= amount;
        dst->balance += amount;
        count(&w->transfers);
    } else {
        count(&w->declined);
    }
    ft_critical_section2_end(t, &cs);
}

/* Read a balance, block while "inside" the account, read it again. The wait detaches the worker,
 * which suspends the critical section and releases the mutex, so other workers may change the
 * balance meanwhile: code that holds a critical section across a blocking call must re-check. */
static void audit(bank *b, worker *w, ft_thread *t, uint64_t r)
{
    account *acc = &b->accounts[r % ACCOUNT_COUNT];
    ft_critical_section cs;
    ft_critical_section_begin(t, &cs, &acc->mutex);
    int64_t before = acc->balance;
    ft_event_wait_timed(&b->done, AUDIT_WAIT_US * FT_NS_PER_US, FT_LOCK_DETACH);
    int64_t after = acc->balance;
    ft_critical_section_end(t, &cs);
    count(&w->audits);
    if (after != before)
        count(&w->audits_saw_change);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    bank *b = w->bank;
    ft_thread *t = ft_thread_start(b->rt);
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    while (!ft_event_is_set(&b->done)) {
        uint64_t r = demo_random(&w->random_state);
        unsigned choice = (unsigned)(r >> 54); /* 0..1023 */
        if (choice == 0) {
            /* A blocking call outside any critical section: detach so stops need not wait. */
            ft_detach(t);
            sched_yield();
            ft_attach(t);
            count(&w->detaches);
        } else if (choice == 1) {
            audit(b, w, t, r);
        } else {
            transfer(b, w, t, r);
        }
        count(&w->operations);
        ft_safepoint(t);
    }
    ft_thread_stop(t);
    return NULL;
}

static uint64_t total_operations(bank *b)
{
    uint64_t total = 0;
    for (size_t i = 0; i < WORKER_COUNT; i++)
        total += atomic_load_explicit(&b->workers[i].operations, memory_order_relaxed);
    return total;
}

/* Runs while the world is stopped by the calling thread t. */
static void check_invariants(bank *b, auditor *a, ft_thread *t)
{
    if (!ft_world_is_stopped(b->rt))
        a->not_stopped_violations++;
    uint64_t operations_before = total_operations(b);

    int64_t sum = 0;
    bool any_negative = false, any_locked = false;
    for (size_t i = 0; i < ACCOUNT_COUNT; i++) {
        account *acc = &b->accounts[i];
        if (ft_mutex_is_locked(&acc->mutex))
            any_locked = true;
        ft_critical_section cs;
        ft_critical_section_begin(t, &cs, &acc->mutex); /* never waits: we stopped the world */
        sum += acc->balance;
        if (acc->balance < 0)
            any_negative = true;
        ft_critical_section_end(t, &cs);
    }

    if (sum != (int64_t)ACCOUNT_COUNT * INITIAL_BALANCE)
        a->sum_violations++;
    if (any_negative)
        a->negative_violations++;
    if (total_operations(b) != operations_before)
        a->progress_violations++;
    if (any_locked)
        a->stops_with_locked_mutex++;
}

static void *auditor_main(void *arg)
{
    auditor *a = arg;
    bank *b = a->bank;
    ft_thread *t = ft_thread_start(b->rt);
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    /* The timed wait detaches, so the auditor never delays anything while it sleeps. */
    while (!ft_event_wait_timed(&b->done, STOP_INTERVAL_US * FT_NS_PER_US, FT_LOCK_DETACH)) {
        uint64_t start = demo_now_ns();
        ft_stop_the_world(b->rt);
        uint64_t stopped = demo_now_ns();
        check_invariants(b, a, t);
        ft_start_the_world(b->rt);
        a->stops++;
        demo_latency_record(&a->latencies, stopped - start);
    }
    ft_thread_stop(t);
    return NULL;
}

static bool parse_run_ms(int argc, char **argv, long *run_ms)
{
    *run_ms = DEFAULT_RUN_MS;
    if (argc < 2)
        return true;
    char *end;
    long value = strtol(argv[1], &end, 10);
    if (argc > 2 || *argv[1] == '\0' || *end != '\0' || value <= 0 || value > 3600000)
        return false;
    *run_ms = value;
    return true;
}

static int report(bank *b, uint64_t elapsed_ns, long cpus)
{
    auditor *a = &b->auditor;
    double seconds = (double)elapsed_ns / 1e9;
    uint64_t transfers = 0, declined = 0, audits = 0, changed = 0, detaches = 0;
    char per_worker[256];
    size_t used = 0;
    for (size_t i = 0; i < WORKER_COUNT; i++) {
        worker *w = &b->workers[i];
        uint64_t n = atomic_load_explicit(&w->transfers, memory_order_relaxed);
        used += (size_t)snprintf(per_worker + used, sizeof per_worker - used, "%s#%zu %" PRIu64,
                                 i ? ", " : "", i, n);
        transfers += n;
        declined += atomic_load_explicit(&w->declined, memory_order_relaxed);
        audits += atomic_load_explicit(&w->audits, memory_order_relaxed);
        changed += atomic_load_explicit(&w->audits_saw_change, memory_order_relaxed);
        detaches += atomic_load_explicit(&w->detaches, memory_order_relaxed);
    }
    printf("transfers      %" PRIu64 " done (%.0f/s), %" PRIu64 " declined for lack of funds\n",
           transfers, (double)transfers / seconds, declined);
    printf("  per worker   %s\n", per_worker);
    printf("audits         %" PRIu64 " by the workers; in %" PRIu64
           " the balance changed during the wait, as other\n               workers took the "
           "released mutex\n",
           audits, changed);
    printf("detaches       %" PRIu64
           " around a yield, plus one in each audit's wait and one each time a\n               "
           "worker waited for a busy mutex\n",
           detaches);

    printf("stops          %" PRIu64 " by the auditor, each checking every balance\n", a->stops);
    demo_latency_print_and_free(&a->latencies);
    ft_runtime_stats stats;
    ft_runtime_get_stats(b->rt, &stats);
    char mean_wait[32], max_wait[32];
    demo_format_duration(mean_wait, sizeof mean_wait,
                    stats.stw_count ? stats.stw_total_ns / stats.stw_count : 0);
    demo_format_duration(max_wait, sizeof max_wait, stats.stw_max_ns);
    printf("  runtime      mean %s, max %s waiting for threads (ft_runtime_get_stats: %" PRIu64
           " stops)\n",
           mean_wait, max_wait, stats.stw_count);
    printf("  mutex held   at %" PRIu64 " stops a stopped worker held an account's mutex (handed "
           "to it while it\n               waited, or the first of the two it was locking); the "
           "auditor read the\n               balance anyway: a critical section opened by the "
           "thread that stopped the\n               world does not wait for a mutex\n",
           a->stops_with_locked_mutex);
    if (cpus > 0 && WORKER_COUNT + 1 > cpus)
        printf("note           %d threads on %ld CPUs: a stop waits until a preempted worker runs "
               "again\n",
               WORKER_COUNT + 1, cpus);

    int64_t final_sum = 0;
    for (size_t i = 0; i < ACCOUNT_COUNT; i++)
        final_sum += b->accounts[i].balance;
    bool final_ok = final_sum == (int64_t)ACCOUNT_COUNT * INITIAL_BALANCE;
    uint64_t violations = a->sum_violations + a->negative_violations + a->progress_violations +
                          a->not_stopped_violations;
    printf("\n");
    if (violations > 0 || !final_ok) {
        printf("invariant held at every stop: NO\n"
               "  wrong sum at %" PRIu64 " stops, a negative balance at %" PRIu64
               ", a worker progressed during %" PRIu64 ", world not stopped at %" PRIu64
               "; final sum %" PRId64 " (expected %d)\n",
               a->sum_violations, a->negative_violations, a->progress_violations,
               a->not_stopped_violations, final_sum, ACCOUNT_COUNT * INITIAL_BALANCE);
        return 1;
    }
    printf("invariant held at every stop: yes (final sum %" PRId64 " = %d accounts x %d)%s\n",
           final_sum, ACCOUNT_COUNT, INITIAL_BALANCE,
           a->stops == 0 ? ", but the run was too short for any stop" : "");
    return 0;
}

/* Phase 1: run the bank for run_ms. */
int demo_bank_phase(long run_ms, long cpus)
{
    static bank b; /* zeroed: unlocked mutexes, unset event, zero counters */
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.name = "demo-bank";
    b.rt = ft_runtime_new(&cfg);
    if (b.rt == NULL) {
        fprintf(stderr, "ftrt_demo: ft_runtime_new: %s\n", ft_status_str(ft_last_error()));
        return 2;
    }
    for (size_t i = 0; i < ACCOUNT_COUNT; i++)
        b.accounts[i].balance = INITIAL_BALANCE;

    printf("== phase 1: a bank (mutexes, critical sections, stop-the-world) ==\n\n"
           "%d workers move money between %d accounts for %ld ms. A transfer locks both of its "
           "accounts\n(a two-mutex critical section, which cannot deadlock). Now and then a "
           "worker makes a\nblocking call instead: it yields the CPU, detached from the runtime, "
           "or it audits an\naccount: it reads the balance, waits %d us inside the account's "
           "critical section, and\nreads the balance again. Waiting suspends the section, which "
           "releases the account's mutex\nto the other workers meanwhile. An auditor thread "
           "stops the world every %d ms and checks\nthat no money has been created or lost.\n\n",
           WORKER_COUNT, ACCOUNT_COUNT, run_ms, AUDIT_WAIT_US, STOP_INTERVAL_US / 1000);
    fflush(stdout);

    uint64_t start = demo_now_ns();
    for (size_t i = 0; i < WORKER_COUNT; i++) {
        worker *w = &b.workers[i];
        w->bank = &b;
        w->random_state = UINT64_C(0x9E3779B97F4A7C15) * (i + 1);
        if (pthread_create(&w->os_thread, NULL, worker_main, w) != 0) {
            fprintf(stderr, "ftrt_demo: pthread_create failed\n");
            exit(2);
        }
    }
    b.auditor.bank = &b;
    if (pthread_create(&b.auditor.os_thread, NULL, auditor_main, &b.auditor) != 0) {
        fprintf(stderr, "ftrt_demo: pthread_create failed\n");
        exit(2);
    }

    demo_sleep_ms(run_ms);
    ft_event_notify(&b.done);
    uint64_t elapsed = demo_now_ns() - start;
    for (size_t i = 0; i < WORKER_COUNT; i++)
        pthread_join(b.workers[i].os_thread, NULL);
    pthread_join(b.auditor.os_thread, NULL);

    int status = report(&b, elapsed, cpus);
    ft_status freed = ft_runtime_free(b.rt);
    if (freed != FT_OK) {
        fprintf(stderr, "ftrt_demo: ft_runtime_free: %s\n", ft_status_str(freed));
        return 2;
    }
    return status;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    long run_ms;
    if (!parse_run_ms(argc, argv, &run_ms) || run_ms < 5) {
        fprintf(stderr, "usage: %s [run time in ms, at least 5, default %d]\n", argv[0],
                DEFAULT_RUN_MS);
        return 2;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long bank_ms = run_ms / 5, graphs_ms = run_ms / 5, sharing_ms = run_ms / 5, gc_ms = run_ms / 5;
    long stackrefs_ms = run_ms - bank_ms - graphs_ms - sharing_ms - gc_ms;
    printf("ftrt demo: five phases, %ld ms in all, on %ld CPUs\n\n", run_ms, cpus);

    int bank_status = demo_bank_phase(bank_ms, cpus);
    printf("\n");
    if (bank_status == 2)
        return 2;
    int graphs_status = demo_graphs_phase(graphs_ms, cpus);
    printf("\n");
    if (graphs_status == 2)
        return 2;
    int sharing_status = demo_sharing_phase(sharing_ms, cpus);
    printf("\n");
    if (sharing_status == 2)
        return 2;
    int gc_status = demo_gc_phase(gc_ms, cpus, getenv("FTRT_DEMO_TRACE"));
    printf("\n");
    if (gc_status == 2)
        return 2;
    int stackrefs_status = demo_stackrefs_phase(stackrefs_ms, cpus);
    if (stackrefs_status == 2)
        return 2;

    bool ok = bank_status == 0 && graphs_status == 0 && sharing_status == 0 && gc_status == 0 &&
              stackrefs_status == 0;
    printf("\nftrt demo: %s\n", ok ? "all five phases held their invariants"
                                   : "an invariant did NOT hold (see above)");
    return ok ? 0 : 1;
}
