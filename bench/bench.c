/* bench.c: the benchmark framework (see bench.h): clock, statistics, interleaving, pinned thread
 * teams, the ping-pong probe, the load meter and the results registry with its JSON writer. */
#include "bench.h"

#include "ftrt.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- time and statistics ---------------------------------------------------------------------- */

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *values, size_t count)
{
    if (count == 0)
        return NAN;
    qsort(values, count, sizeof *values, compare_doubles);
    if (count % 2)
        return values[count / 2];
    return (values[count / 2 - 1] + values[count / 2]) / 2;
}

/* Nearest rank: the smallest value with at least p% of the values at or below it. */
static size_t nearest_rank_index(size_t count, double p)
{
    double exact = p / 100.0 * (double)count;
    size_t rank = exact > 0 ? (size_t)exact : 0;
    if ((double)rank < exact)
        rank++; /* round up without libm's ceil, so the bench needs no -lm */
    if (rank < 1)
        rank = 1;
    if (rank > count)
        rank = count;
    return rank - 1;
}

uint32_t bench_percentile_u32(uint32_t *values, size_t count, double p)
{
    if (count == 0)
        return 0;
    size_t want = nearest_rank_index(count, p);
    /* Quickselect: millions of samples per repetition make a full sort too slow. */
    size_t lo = 0, hi = count - 1;
    while (lo < hi) {
        uint32_t pivot = values[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (values[i] < pivot)
                i++;
            while (values[j] > pivot)
                j--;
            if (i <= j) {
                uint32_t swap = values[i];
                values[i] = values[j];
                values[j] = swap;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    return values[want];
}

double bench_percentile_double(double *values, size_t count, double p)
{
    if (count == 0)
        return NAN;
    qsort(values, count, sizeof *values, compare_doubles);
    return values[nearest_rank_index(count, p)];
}

void bench_spin_ns(uint64_t ns)
{
    uint64_t end = bench_now_ns() + ns;
    while (bench_now_ns() < end)
        ;
}

static bool warming_up;

bool bench_warming_up(void)
{
    return warming_up;
}

void bench_series_add(bench_series *s, double value)
{
    if (warming_up)
        return;
    if (s->count < (int)(sizeof s->values / sizeof s->values[0]))
        s->values[s->count++] = value;
}

double bench_series_median(bench_series *s)
{
    return bench_median(s->values, (size_t)s->count);
}

/* ---- interleaving ----------------------------------------------------------------------------- */

bench_comparison bench_interleave(const bench_config *cfg, const bench_side *a, const bench_side *b)
{
    double results_a[BENCH_MAX_REPETITIONS], results_b[BENCH_MAX_REPETITIONS];
    double ratios[BENCH_MAX_REPETITIONS];
    int reps = cfg->repetitions < BENCH_MAX_REPETITIONS ? cfg->repetitions : BENCH_MAX_REPETITIONS;
    warming_up = true;
    a->run(a->arg);
    b->run(b->arg);
    warming_up = false;
    for (int i = 0; i < reps; i++) {
        results_a[i] = a->run(a->arg);
        results_b[i] = b->run(b->arg);
        ratios[i] = results_a[i] / results_b[i];
    }
    bench_comparison c;
    c.median_a = bench_median(results_a, (size_t)reps);
    c.median_b = bench_median(results_b, (size_t)reps);
    c.median_ratio = bench_median(ratios, (size_t)reps);
    return c;
}

/* ---- threads ---------------------------------------------------------------------------------- */

static void *do_nothing(void *arg)
{
    return arg;
}

void bench_make_process_threaded(void)
{
    pthread_t thread;
    if (pthread_create(&thread, NULL, do_nothing, NULL) != 0) {
        fprintf(stderr, "bench: cannot create a thread\n");
        exit(2);
    }
    pthread_join(thread, NULL);
}

static cpu_set_t initial_cpus;
static bool pin_warning_printed;

bool bench_pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc != 0 && !pin_warning_printed) {
        pin_warning_printed = true;
        fprintf(stderr, "bench: warning: cannot pin to CPU %d: %s\n", cpu, strerror(rc));
    }
    return rc == 0;
}

void bench_unpin_self(void)
{
    pthread_setaffinity_np(pthread_self(), sizeof initial_cpus, &initial_cpus);
}

void bench_config_init(bench_config *cfg, bool quick)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->quick = quick;
    cfg->repetitions = quick ? 5 : 7;
    CPU_ZERO(&initial_cpus);
    if (sched_getaffinity(0, sizeof initial_cpus, &initial_cpus) != 0)
        CPU_SET(0, &initial_cpus);
    cfg->cpu_count = CPU_COUNT(&initial_cpus);
    int found = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && found < 2; cpu++)
        if (CPU_ISSET(cpu, &initial_cpus))
            cfg->cpus[found++] = cpu;
    if (found < 2)
        cfg->cpus[1] = cfg->cpus[0];
}

void bench_gate_init(bench_gate *g, uint32_t parties)
{
    atomic_store_explicit(&g->arrived, 0, memory_order_relaxed);
    atomic_store_explicit(&g->generation, 0, memory_order_relaxed);
    g->parties = parties;
}

void bench_gate_wait(bench_gate *g)
{
    uint32_t generation = atomic_load_explicit(&g->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&g->arrived, 1, memory_order_acq_rel) + 1 == g->parties) {
        atomic_store_explicit(&g->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&g->generation, generation + 1, memory_order_release);
        return;
    }
    /* Yield after a while: with more threads than CPUs the last arrival may need our CPU. */
    for (uint32_t spins = 0;
         atomic_load_explicit(&g->generation, memory_order_acquire) == generation; spins++) {
        if (spins < 20000)
            ft_cpu_relax();
        else
            sched_yield();
    }
}

void bench_team_run(const bench_config *cfg, int count, bench_thread_fn fn, void *args,
                    size_t arg_size)
{
    pthread_t threads[64];
    if (count > 64) {
        fprintf(stderr, "bench: at most 64 threads per team\n");
        exit(2);
    }
    for (int i = 0; i < count; i++) {
        pthread_attr_t attr;
        cpu_set_t set;
        pthread_attr_init(&attr);
        CPU_ZERO(&set);
        CPU_SET(cfg->cpus[i % 2], &set);
        pthread_attr_setaffinity_np(&attr, sizeof set, &set);
        int rc = pthread_create(&threads[i], &attr, fn, (char *)args + (size_t)i * arg_size);
        if (rc != 0) {
            /* Pinning may be refused (a restricted cpuset): run unpinned rather than not at all. */
            rc = pthread_create(&threads[i], NULL, fn, (char *)args + (size_t)i * arg_size);
        }
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            fprintf(stderr, "bench: cannot create a thread: %s\n", strerror(rc));
            exit(2);
        }
    }
    for (int i = 0; i < count; i++)
        pthread_join(threads[i], NULL);
}

ft_thread *bench_thread_start(ft_runtime *rt)
{
    ft_thread *t = ft_thread_start(rt);
    if (!t) {
        fprintf(stderr, "bench: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    return t;
}

void *bench_alloc(size_t bytes)
{
    size_t padded = (bytes + BENCH_SEPARATION - 1) / BENCH_SEPARATION * BENCH_SEPARATION;
    void *p = aligned_alloc(BENCH_SEPARATION, padded ? padded : BENCH_SEPARATION);
    if (!p) {
        fprintf(stderr, "bench: out of memory\n");
        exit(2);
    }
    memset(p, 0, bytes);
    return p;
}

/* ---- ping-pong probe -------------------------------------------------------------------------- */

#define PINGPONG_ROUNDS 20000
#define PINGPONG_REPETITIONS 5

typedef struct pingpong_shared {
    BENCH_ALIGNED _Atomic(uint64_t) ball; /* odd: thread 0 served; even: thread 1 returned */
    bench_gate gate;
    bool same_cpu;
    double one_way_ns[PINGPONG_REPETITIONS];
} pingpong_shared;

typedef struct pingpong_arg {
    pingpong_shared *shared;
    int index;
} pingpong_arg;

static void wait_for_ball(pingpong_shared *s, uint64_t value)
{
    for (uint32_t spins = 0; atomic_load_explicit(&s->ball, memory_order_acquire) != value; spins++)
        if (s->same_cpu && spins > 100)
            sched_yield();
}

static void *pingpong_thread(void *raw)
{
    pingpong_arg *arg = raw;
    pingpong_shared *s = arg->shared;
    uint64_t rounds = s->same_cpu ? 200 : PINGPONG_ROUNDS;
    for (int rep = 0; rep < PINGPONG_REPETITIONS; rep++) {
        bench_gate_wait(&s->gate);
        uint64_t base = (uint64_t)rep * 2 * rounds;
        uint64_t start = bench_now_ns();
        for (uint64_t i = 0; i < rounds; i++) {
            if (arg->index == 0) {
                atomic_store_explicit(&s->ball, base + 2 * i + 1, memory_order_release);
                wait_for_ball(s, base + 2 * i + 2);
            } else {
                wait_for_ball(s, base + 2 * i + 1);
                atomic_store_explicit(&s->ball, base + 2 * i + 2, memory_order_release);
            }
        }
        if (arg->index == 0)
            s->one_way_ns[rep] = (double)(bench_now_ns() - start) / (2.0 * (double)rounds);
    }
    return NULL;
}

double bench_pingpong_ns(const bench_config *cfg)
{
    static pingpong_shared shared;
    pingpong_arg args[2] = {{&shared, 0}, {&shared, 1}};
    atomic_store_explicit(&shared.ball, 0, memory_order_relaxed);
    bench_gate_init(&shared.gate, 2);
    shared.same_cpu = cfg->cpus[0] == cfg->cpus[1];
    bench_team_run(cfg, 2, pingpong_thread, args, sizeof args[0]);
    return bench_median(shared.one_way_ns, PINGPONG_REPETITIONS);
}

void bench_print_probe(const bench_config *cfg)
{
    printf("  probe: cache-line one-way hand-off CPU %d -> CPU %d: %.0f ns%s\n", cfg->cpus[0],
           cfg->cpus[1], bench_pingpong_ns(cfg),
           cfg->cpus[0] == cfg->cpus[1] ? " (ONE CPU ONLY: two-thread figures are meaningless)" : "");
}

/* ---- stall probe ------------------------------------------------------------------------------ */

#define STALL_PROBE_NS (150 * 1000000ull)
#define STALL_THRESHOLD_NS (100 * 1000ull)

typedef struct stall_probe {
    BENCH_ALIGNED uint64_t gaps; /* clock reads further apart than STALL_THRESHOLD_NS */
    uint64_t longest_ns;
} stall_probe;

static void *stall_probe_thread(void *raw)
{
    stall_probe *p = raw;
    uint64_t previous = bench_now_ns(), end = previous + STALL_PROBE_NS;
    while (previous < end) {
        uint64_t now = bench_now_ns(), gap = now - previous;
        if (gap > STALL_THRESHOLD_NS)
            p->gaps++;
        if (gap > p->longest_ns)
            p->longest_ns = gap;
        previous = now;
    }
    return NULL;
}

void bench_print_stalls(const bench_config *cfg)
{
    stall_probe probes[2];
    memset(probes, 0, sizeof probes);
    bench_team_run(cfg, 2, stall_probe_thread, probes, sizeof probes[0]);
    printf("  stalls: a thread spinning alone for %.2f s lost its CPU for > %.1f ms %llu / %llu "
           "times (CPU %d / %d), longest %.2f / %.2f ms\n",
           (double)STALL_PROBE_NS / 1e9, (double)STALL_THRESHOLD_NS / 1e6,
           (unsigned long long)probes[0].gaps, (unsigned long long)probes[1].gaps, cfg->cpus[0],
           cfg->cpus[1], (double)probes[0].longest_ns / 1e6, (double)probes[1].longest_ns / 1e6);
}

/* ---- load ------------------------------------------------------------------------------------- */

bench_load_sample bench_load_sample_now(void)
{
    bench_load_sample s = {bench_now_ns(), 0, 0, 0};
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0,
                           softirq = 0, steal = 0;
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle,
                   &iowait, &irq, &softirq, &steal) == 8) {
            s.busy_ticks = user + nice + system + irq + softirq;
            s.steal_ticks = steal;
        }
        fclose(f);
    }
    f = fopen("/proc/self/stat", "r");
    if (f) {
        char line[1024];
        if (fgets(line, sizeof line, f)) {
            /* Fields after the command name, which may itself contain spaces or parentheses. */
            const char *after_name = strrchr(line, ')');
            unsigned long long utime = 0, stime = 0;
            if (after_name &&
                sscanf(after_name + 2,
                       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                       &stime) == 2)
                s.self_ticks = utime + stime;
        }
        fclose(f);
    }
    return s;
}

bench_load bench_load_between(const bench_load_sample *start, const bench_load_sample *end)
{
    bench_load load = {0, 0, 0};
    long ticks_per_s = sysconf(_SC_CLK_TCK);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    load.wall_s = (double)(end->wall_ns - start->wall_ns) / 1e9;
    double capacity = load.wall_s * (double)(ticks_per_s > 0 ? ticks_per_s : 100) *
                      (double)(cpus > 0 ? cpus : 1);
    if (capacity <= 0)
        return load;
    double other = (double)(end->busy_ticks - start->busy_ticks) -
                   (double)(end->self_ticks - start->self_ticks);
    load.other_fraction = other > 0 ? other / capacity : 0;
    load.steal_fraction = (double)(end->steal_ticks - start->steal_ticks) / capacity;
    return load;
}

/* ---- results ---------------------------------------------------------------------------------- */

#define MAX_RESULTS 256

typedef struct bench_result {
    char *name, *unit, *baseline, *goal;
    double value;
    bool met;
    bool two_sides; /* label_a ... raw_unit were given */
    char *label_a, *label_b, *raw_unit;
    double raw_a, raw_b;
} bench_result;

static bench_result results[MAX_RESULTS];
static int result_count;
/* result_count when the current figure began: a result at or after it is the current figure's. */
static int figure_first_result;

/* One named set of samples (bench_report_samples), owned by a result or still pending. */
#define MAX_SAMPLE_SETS 64
typedef struct bench_samples {
    char *name, *unit;
    double *values;
    size_t count, capacity;
    int result; /* index in results, or -1 until the current figure is reported */
} bench_samples;

static bench_samples sample_sets[MAX_SAMPLE_SETS];
static int sample_set_count;
static int missed_goals;
static bool any_failure;
static bench_load_sample figure_start;

static char *copy_string(const char *s)
{
    char *copy = strdup(s ? s : "");
    if (!copy) {
        fprintf(stderr, "bench: out of memory\n");
        exit(2);
    }
    return copy;
}

/* Whether value meets a goal written "<= x", ">= x", "< x" or "> x"; true if it cannot be parsed. */
static bool goal_met(const char *goal, double value)
{
    char op[3] = {0};
    double bound;
    if (sscanf(goal, " %2[<>=] %lf", op, &bound) != 2)
        return true;
    if (strcmp(op, "<=") == 0)
        return value <= bound;
    if (strcmp(op, ">=") == 0)
        return value >= bound;
    if (strcmp(op, "<") == 0)
        return value < bound;
    if (strcmp(op, ">") == 0)
        return value > bound;
    return true;
}

void bench_figure_begin(void)
{
    /* Samples of a figure that reported nothing (it was skipped part way) belong to no figure. */
    int kept = 0;
    for (int i = 0; i < sample_set_count; i++) {
        if (sample_sets[i].result >= 0) {
            sample_sets[kept++] = sample_sets[i];
        } else {
            free(sample_sets[i].name);
            free(sample_sets[i].unit);
            free(sample_sets[i].values);
        }
    }
    sample_set_count = kept;
    figure_first_result = result_count;
    figure_start = bench_load_sample_now();
}

void bench_report_samples(const char *name, const char *unit, const double *values, size_t n)
{
    if (warming_up)
        return;
    int owner = result_count > figure_first_result ? result_count - 1 : -1;
    bench_samples *set = NULL;
    for (int i = 0; i < sample_set_count && !set; i++)
        if (sample_sets[i].result == owner && strcmp(sample_sets[i].name, name) == 0)
            set = &sample_sets[i];
    if (!set) {
        if (sample_set_count == MAX_SAMPLE_SETS) {
            fprintf(stderr, "bench: too many sample sets\n");
            exit(2);
        }
        set = &sample_sets[sample_set_count++];
        *set = (bench_samples){.name = copy_string(name), .unit = copy_string(unit), .result = owner};
    }
    if (set->count + n > set->capacity) {
        size_t capacity = set->capacity ? set->capacity : 1024;
        while (capacity < set->count + n)
            capacity *= 2;
        double *grown = realloc(set->values, capacity * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "bench: out of memory\n");
            exit(2);
        }
        set->values = grown;
        set->capacity = capacity;
    }
    if (n)
        memcpy(set->values + set->count, values, n * sizeof *values);
    set->count += n;
}

void bench_report(const char *name, double value, const char *unit, const char *baseline,
                  const char *goal, const char *label_a, double raw_a, const char *label_b,
                  double raw_b, const char *raw_unit)
{
    bench_load_sample now = bench_load_sample_now();
    bench_load load = bench_load_between(&figure_start, &now);
    bool met = goal_met(goal, value);
    if (!met)
        missed_goals++;
    printf("%-28s %10.4g %-5s goal %-7s %-6s", name, value, unit, goal, met ? "met" : "MISSED");
    if (raw_unit)
        printf(" | %s %.4g vs %s %.4g %s", label_a, raw_a, label_b, raw_b, raw_unit);
    printf(" | load %.0f%% steal %.0f%% | baseline: %s\n", 100 * load.other_fraction,
           100 * load.steal_fraction, baseline);
    fflush(stdout);
    if (result_count == MAX_RESULTS) {
        fprintf(stderr, "bench: too many results\n");
        exit(2);
    }
    bench_result *r = &results[result_count++];
    r->name = copy_string(name);
    r->unit = copy_string(unit);
    r->baseline = copy_string(baseline);
    r->goal = copy_string(goal);
    r->value = value;
    r->met = met;
    r->two_sides = raw_unit != NULL;
    if (r->two_sides) {
        r->label_a = copy_string(label_a);
        r->label_b = copy_string(label_b);
        r->raw_unit = copy_string(raw_unit);
        r->raw_a = raw_a;
        r->raw_b = raw_b;
    }
    for (int i = 0; i < sample_set_count; i++)
        if (sample_sets[i].result < 0)
            sample_sets[i].result = result_count - 1;
}

void bench_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("  note: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

void bench_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: FAILED CHECK: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    any_failure = true;
}

double bench_team_seconds(const bench_span *first, size_t stride, int members)
{
    uint64_t first_start = UINT64_MAX, last_end = 0;
    for (int i = 0; i < members; i++) {
        const bench_span *span =
            (const bench_span *)(const void *)((const char *)first + (size_t)i * stride);
        if (span->start_ns < first_start)
            first_start = span->start_ns;
        if (span->end_ns > last_end)
            last_end = span->end_ns;
    }
    return (double)(last_end - first_start) / 1e9;
}

ft_runtime *bench_runtime_new(void)
{
    return bench_runtime_new_with(NULL);
}

ft_runtime *bench_runtime_new_with(const ft_config *cfg)
{
    ft_runtime *rt = ft_runtime_new(cfg);
    if (!rt) {
        fprintf(stderr, "bench: ft_runtime_new: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    return rt;
}

void bench_runtime_free(ft_runtime *rt)
{
    if (ft_runtime_free(rt) != FT_OK)
        bench_fail("ft_runtime_free refused after every thread stopped");
}

bool bench_failed(void)
{
    return any_failure;
}

int bench_missed_goals(void)
{
    return missed_goals;
}

static void write_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* A number, or null when it is not finite (JSON has no NaN or infinity). */
static void write_json_number(FILE *f, double value)
{
    if (isfinite(value))
        fprintf(f, "%.6g", value);
    else
        fprintf(f, "null");
}

/* ", \"key\": " and the string text, or the number when text is NULL. */
static void write_json_field(FILE *f, const char *key, const char *text, double number)
{
    fprintf(f, ", \"%s\": ", key);
    if (text)
        write_json_string(f, text);
    else
        write_json_number(f, number);
}

/* ", \"samples\": [...]" for the sets result index owns, or nothing when it has none. */
static void write_json_samples(FILE *f, int index)
{
    bool first = true;
    for (int i = 0; i < sample_set_count; i++) {
        const bench_samples *set = &sample_sets[i];
        if (set->result != index)
            continue;
        fprintf(f, "%s\n    {\"name\": ", first ? ", \"samples\": [" : ",");
        first = false;
        write_json_string(f, set->name);
        write_json_field(f, "unit", set->unit, 0);
        fprintf(f, ", \"values\": [");
        for (size_t j = 0; j < set->count; j++) {
            fprintf(f, "%s", j == 0 ? "" : j % 16 == 0 ? ",\n      " : ", ");
            write_json_number(f, set->values[j]);
        }
        fprintf(f, "]}");
    }
    if (!first)
        fprintf(f, "\n  ]");
}

/* Create every missing directory above path (like mkdir -p of its dirname). */
static void make_parent_directories(const char *path)
{
    char *copy = copy_string(path);
    for (char *slash = strchr(copy + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST)
            break;
        *slash = '/';
    }
    free(copy);
}

bool bench_write_json(const char *path)
{
    make_parent_directories(path);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
        return false;
    }
    fprintf(f, "[");
    for (int i = 0; i < result_count; i++) {
        const bench_result *r = &results[i];
        fprintf(f, "%s\n  {\"name\": ", i ? "," : "");
        write_json_string(f, r->name);
        write_json_field(f, "value", NULL, r->value);
        write_json_field(f, "unit", r->unit, 0);
        write_json_field(f, "baseline", r->baseline, 0);
        write_json_field(f, "goal", r->goal, 0);
        fprintf(f, ", \"met\": %s", r->met ? "true" : "false");
        if (r->two_sides) {
            write_json_field(f, "label_a", r->label_a, 0);
            write_json_field(f, "raw_a", NULL, r->raw_a);
            write_json_field(f, "label_b", r->label_b, 0);
            write_json_field(f, "raw_b", NULL, r->raw_b);
            write_json_field(f, "raw_unit", r->raw_unit, 0);
        }
        write_json_samples(f, i);
        fprintf(f, "}");
    }
    fprintf(f, "\n]\n");
    bool ok = !ferror(f);
    if (fclose(f) != 0)
        ok = false;
    if (!ok)
        fprintf(stderr, "bench: error writing %s\n", path);
    return ok;
}
