/* main.c: ftrt_bench, the table of figures and the run around them.
 *
 *     ftrt_bench [results.json] [--filter substr] [--quick]
 *
 * Prints a header (CPU, cores, load, a cache-line ping-pong probe, how often a spinning thread loses
 * its CPU), one line per figure with its goal and both sides' raw medians, the load over the whole
 * run, and writes the figures as a JSON array of {"name","value","unit","baseline","goal","met"},
 * with both sides' labels and raw medians and any samples where a figure has them (bench.h,
 * bench_write_json; default build/bench/results.json; scripts/bench-report draws it). The exit status is 0 unless a sanity check inside a figure failed, the
 * JSON could not be written or --filter matched nothing; a missed goal is reported, not an error. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Names are stable: results.json is compared across runs and against the project's goals file. */
static const struct {
    const char *name;
    bench_figure_fn run;
} figures[] = {
    {"mutex.uncontended", bench_mutex_uncontended},
    {"mutex.contended_throughput", bench_mutex_contended_throughput},
    {"mutex.wait_p999_ms", bench_mutex_wait_p999},
    {"stw.latency_p99_us", bench_stw_latency},
    {"safepoint.poll", bench_safepoint_poll},
    {"rc.owner_vs_plain", bench_rc_owner_vs_plain},
    {"rc.owner_vs_atomic", bench_rc_owner_vs_atomic},
    {"rc.nonowner_vs_atomic", bench_rc_nonowner_vs_atomic},
    {"rc.immortal_scaling_2t", bench_rc_immortal_scaling_2t},
    {"rc.cross_thread_drop", bench_rc_cross_thread_drop},
    {"heap.alloc_free_vs_malloc", bench_heap_alloc_free_vs_malloc},
    {"heap.alloc_free_vs_mimalloc", bench_heap_alloc_free_vs_mimalloc},
    {"heap.alloc_free_vs_mi_zalloc", bench_heap_alloc_free_vs_mi_zalloc},
    {"heap.uninit_free_vs_mimalloc", bench_heap_uninit_free_vs_mimalloc},
    {"heap.remote_free_vs_local", bench_heap_remote_free_vs_local},
    {"heap.bytes_per_object", bench_heap_bytes_per_object},
    #ifdef FTRT_BENCH_HAVE_URCU_QSBR
    {"qsbr.quiescent_vs_urcu", bench_qsbr_quiescent_vs_urcu},
    {"qsbr.delayed_free_vs_call_rcu", bench_qsbr_delayed_free_vs_call_rcu},
#endif
    {"qsbr.peak_memory_vs_immediate", bench_qsbr_peak_memory_vs_immediate},
    {"uniqueid.scaling_2t", bench_uniqueid_scaling_2t},
    {"uniqueid.atomic_control_2t", bench_uniqueid_atomic_control_2t},
    {"tlbc.first_copy_vs_memcpy", bench_tlbc_first_copy_vs_memcpy},
    {"dict.lookup_scaling_2t", bench_dict_lookup_scaling_2t},
    {"dict.lookup_vs_rwlock_2t", bench_dict_lookup_vs_rwlock_2t},
    {"gc.full_live_vs_boehm", bench_gc_full_live_vs_boehm},
    {"gc.garbage_vs_cpython", bench_gc_garbage_vs_cpython},
    {"gc.young_vs_heap_size", bench_gc_young_vs_heap_size},
    {"gc.scheduling_overhead", bench_gc_scheduling_overhead},
    {"gc.young_pause_p99_us", bench_gc_young_pause_p99},
    {"gc.stack_scan_ns_per_slot", bench_gc_stack_scan_ns_per_slot},
    {"gc.parallel_mark_2t", bench_gc_parallel_mark_2t},
    {"gc.parallel_mark_small_2t", bench_gc_parallel_mark_small_2t},
    {"gc.full_live_vs_boehm_2t", bench_gc_full_live_vs_boehm_2t},
    {"stackref.vs_raw", bench_stackref_vs_raw},
    {"stackref.deferred_scaling_2t", bench_stackref_deferred_scaling_2t},
    {"stackref.shared_rc_control_2t", bench_stackref_shared_rc_control_2t},
    {"trace.overhead", bench_trace_overhead},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: ftrt_bench [results.json] [--filter substr] [--quick]\n"
                 "  results.json   where to write the figures (default build/bench/results.json)\n"
                 "  --filter s     run only the figures whose name contains s\n"
                 "  --quick        shorter windows and fewer repetitions (noisier)\n");
}

static void print_cpu_model(void)
{
    char line[512], model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                const char *colon = strchr(line, ':');
                if (colon) {
                    snprintf(model, sizeof model, "%s", colon + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        }
        fclose(f);
    }
    printf("cpu: %s\n", model);
}

static void print_loadavg(const char *when)
{
    char text[128] = "unavailable";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fgets(text, sizeof text, f))
            text[strcspn(text, "\n")] = '\0';
        fclose(f);
    }
    printf("loadavg %s: %s\n", when, text);
}

int main(int argc, char **argv)
{
    const char *json_path = "build/bench/results.json";
    const char *filter = NULL;
    bool quick = false;
    if (argc == 4 && strcmp(argv[1], "--boehm-child") == 0)
        return bench_gc_boehm_child(atoi(argv[2]), atol(argv[3]));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) {
            filter = argv[++i];
        } else if (strncmp(argv[i], "--filter=", 9) == 0) {
            filter = argv[i] + 9;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] != '-') {
            json_path = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }

    bench_config cfg;
    bench_config_init(&cfg, quick);
    bench_make_process_threaded();

    bench_load_sample run_start = bench_load_sample_now();
    printf("ftrt_bench%s: medians of %d interleaved repetitions after a warm-up\n",
           quick ? " --quick" : "", cfg.repetitions);
    print_cpu_model();
    printf("cores: %ld online, %d usable by this process; two-thread figures pin to CPUs %d and %d\n",
           sysconf(_SC_NPROCESSORS_ONLN), cfg.cpu_count, cfg.cpus[0], cfg.cpus[1]);
    printf("compiler: %s\n", __VERSION__);
    print_loadavg("at start");
    bench_print_probe(&cfg);
    bench_print_stalls(&cfg);
    printf("\n");

    int ran = 0;
    for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++) {
        if (filter && !strstr(figures[i].name, filter))
            continue;
        bench_figure_begin();
        figures[i].run(&cfg, figures[i].name);
        ran++;
    }
    if (ran == 0) {
        /* Most likely a typo in the filter: fail rather than write an empty results file. */
        fprintf(stderr, "bench: no figure matches --filter %s\n", filter);
        return 2;
    }

    bench_load_sample run_end = bench_load_sample_now();
    bench_load load = bench_load_between(&run_start, &run_end);
    printf("\nload over the run (%.1f s): other processes %.1f%% of all CPUs, steal %.1f%%%s\n",
           load.wall_s, 100 * load.other_fraction, 100 * load.steal_fraction,
           load.other_fraction + load.steal_fraction > 0.1 ? " (HIGH: rerun for figures you trust)"
                                                          : "");
    print_loadavg("at end");
    printf("%d figures, %d missed their goal\n", ran, bench_missed_goals());

    bool written = bench_write_json(json_path);
    if (written)
        printf("wrote %s\n", json_path);
    return bench_failed() || !written ? 1 : 0;
}
