/* demo/sharing.c: the demo's third phase: readers and writers sharing a dictionary, on the
 * reclamation layer (QSBR, delayed free and delayed decref) and per-thread reference counts.
 *
 * An ft_dict maps key objects (a number, with hash and equality callbacks) to value objects that
 * record the number of their key. Two writers own half the keys each (by parity): each fills its
 * half from an empty dictionary, which makes the table grow several times while the others already
 * read it, then keeps replacing values, deleting keys and inserting them again, each insertion with
 * a fresh key object. A writer keeps a model of its half (present or not, and the serial of the value
 * it stored last), so the dictionary's size and contents can be checked exactly at the end. Two
 * readers look keys up without a lock, through probe keys of their own (equal to the inserted ones,
 * so lookups run the equality callback), and check that every value they get belongs to the key they
 * asked for and is still alive. The first reader borrows each value (ft_dict_get_borrowed: no
 * reference, valid until its next safepoint), the second takes a reference (ft_dict_get). Old tables,
 * removed keys and replaced or deleted values can only be released once no reader can still be
 * using them: that is QSBR's job, and the readers report their quiescent points with ft_safepoint.
 *
 * The first writer also publishes a raw "config" buffer (ft_malloc memory filled with a pattern)
 * and replaces it now and then, retiring the old one with ft_free_delayed; readers check the pattern
 * of whatever buffer they load, which would break if a buffer were freed (and reused) too early.
 *
 * Every operation of every thread is bracketed by ft_uniqueid_incref / ft_uniqueid_decref on one
 * "hot" shared object, whose type opts in to per-thread reference counts: the counting touches only
 * the thread's own array. The main thread merges those counts with ft_uniqueid_merge every few
 * milliseconds and checks the object's true count (its count minus the deferral bias): the main
 * thread's reference, plus one per worker that a stop caught parked inside an operation (a writer
 * waiting for the dictionary's lock). Every few merges it also samples ft_qsbr_get_stats, to see how
 * much memory waits for readers to move on.
 *
 * At the end, with the workers stopped, the hot object's count must be exactly 1; the dictionary
 * must hold exactly the model's entries; then the main thread drops everything, the hot object
 * included (only a merge can free it), quiesces until nothing is pending, and every key and value
 * object must have been freed exactly once (in debug builds, the reference total must be 0). */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "demo.h"
#include "ftrt.h"

enum {
    READERS = 2,
    WRITERS = 2,
    WORKERS = READERS + WRITERS,
    KEY_COUNT = 512,
    LOOKUPS_PER_SAFEPOINT = 4,
    LOOKUPS_PER_CONFIG_CHECK = 8,
    WRITES_PER_CONFIG_SWAP = 8,
    CONFIG_MIN_WORDS = 32,   /* 256 B */
    CONFIG_MAX_WORDS = 2048, /* 16 KiB */
    MERGE_INTERVAL_MS = 5,
    MERGES_PER_STATS_SAMPLE = 4,
    QUIESCE_ATTEMPTS = 16,
};

/* The deferral bias ft_uniqueid_enable adds, in references (ftrt/uniqueid.h). */
#define UNIQUEID_BIAS (INTPTR_MAX / 8)

#define ALIVE UINT32_C(0xA11FE)
#define DEAD UINT32_C(0xDEAD)

/* ---- the object types ------------------------------------------------------------------------ */

typedef struct key_object {
    ft_object ob;
    uint64_t number;
    uint32_t state; /* ALIVE until its dealloc */
} key_object;

typedef struct value_object {
    ft_object ob;
    uint64_t key_number; /* the key it was stored under */
    uint64_t serial;     /* unique per writer, increasing */
    uint32_t state;
} value_object;

typedef struct hot_object {
    ft_object ob;
    uint32_t unique_id; /* reserved for ftrt */
    uint32_t state;
} hot_object;

static void key_dealloc(ft_object *self);
static void value_dealloc(ft_object *self);
static void hot_dealloc(ft_object *self);

static const ft_type key_type = {
    .name = "demo.key",
    .basic_size = sizeof(key_object),
    .freelist_max = 32,
    .dealloc = key_dealloc,
};

static const ft_type value_type = {
    .name = "demo.value",
    .basic_size = sizeof(value_object),
    .freelist_max = 32, /* freed values come back as new ones: a stale reader must notice */
    .dealloc = value_dealloc,
};

static const ft_type hot_type = {
    .name = "demo.hot",
    .basic_size = sizeof(hot_object),
    .flags = FT_TYPE_UNIQUEID,
    .unique_id_offset = offsetof(hot_object, unique_id),
    .dealloc = hot_dealloc,
};

static uint64_t key_hash(ft_object *key)
{
    uint64_t h = ((key_object *)key)->number * UINT64_C(0x9E3779B97F4A7C15);
    return h ^ (h >> 29);
}

static bool key_equal(ft_object *a, ft_object *b)
{
    return ((key_object *)a)->number == ((key_object *)b)->number;
}

static const ft_dict_ops key_ops = {key_hash, key_equal};

/* ---- the shared state ------------------------------------------------------------------------ */

/* A raw buffer readers check: word i of generation g is pattern_word(g, i). */
typedef struct config_buffer {
    uint64_t generation;
    uint64_t words;
    uint64_t pattern[];
} config_buffer;

/* One worker's counters: only it writes them (a relaxed load and store), main reads them after the
 * join. */
typedef struct worker_counts {
    _Atomic(uint64_t) operations;
    _Atomic(uint64_t) lookups, hits, wrong_values;
    _Atomic(uint64_t) config_checks, config_failures;
    _Atomic(uint64_t) inserts, replaces, deletes, model_mismatches, set_failures;
    _Atomic(uint64_t) configs_retired, config_bytes_retired;
} worker_counts;

typedef struct sharing_worker {
    _Alignas(64) pthread_t os_thread; /* each worker on its own cache lines */
    size_t index;    /* readers first, then writers */
    size_t parity;   /* a writer's half of the keys */
    uint64_t random_state;
    uint64_t serial; /* a writer's last value serial */
    bool present[KEY_COUNT];      /* a writer's model of its half */
    uint64_t stored_serial[KEY_COUNT];
    worker_counts counts;
} sharing_worker;

typedef struct sharing_world {
    ft_runtime *rt;
    ft_dict *dict;
    ft_object *probes[KEY_COUNT]; /* the readers' lookup keys, held by main */
    ft_object *hot;
    config_buffer *_Atomic config;
    atomic_bool done;
    sharing_worker workers[WORKERS];
    /* Counted by whichever thread makes or frees an object. */
    _Atomic(uint64_t) keys_made, keys_freed, values_made, values_freed, hot_freed;
    _Atomic(uint64_t) double_deallocs;
} sharing_world;

static sharing_world world;

static void add(_Atomic(uint64_t) *counter, uint64_t n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static uint64_t get(_Atomic(uint64_t) *counter)
{
    return atomic_load_explicit(counter, memory_order_relaxed);
}

static void count_shared(_Atomic(uint64_t) *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* ---- making and freeing ---------------------------------------------------------------------- */

static ft_object *make(ft_thread *t, const ft_type *type)
{
    ft_object *o = ft_alloc(t, type);
    if (o == NULL) {
        fprintf(stderr, "ftrt_demo: ft_alloc: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    return o;
}

static ft_object *make_key(ft_thread *t, uint64_t number)
{
    key_object *k = (key_object *)make(t, &key_type);
    k->number = number;
    k->state = ALIVE;
    count_shared(&world.keys_made);
    return &k->ob;
}

static ft_object *make_value(ft_thread *t, uint64_t key_number, uint64_t serial)
{
    value_object *v = (value_object *)make(t, &value_type);
    v->key_number = key_number;
    v->serial = serial;
    v->state = ALIVE;
    count_shared(&world.values_made);
    return &v->ob;
}

/* Marks the object dead; a second dealloc of the same object would find it so. */
static void note_dealloc(uint32_t *state, _Atomic(uint64_t) *freed)
{
    if (*state != ALIVE)
        count_shared(&world.double_deallocs);
    *state = DEAD;
    count_shared(freed);
}

static void key_dealloc(ft_object *self)
{
    note_dealloc(&((key_object *)self)->state, &world.keys_freed);
}

static void value_dealloc(ft_object *self)
{
    note_dealloc(&((value_object *)self)->state, &world.values_freed);
}

static void hot_dealloc(ft_object *self)
{
    note_dealloc(&((hot_object *)self)->state, &world.hot_freed);
}

static uint64_t pattern_word(uint64_t generation, uint64_t i)
{
    return (generation * UINT64_C(0xBF58476D1CE4E5B9)) ^ i;
}

static size_t config_size(uint64_t words)
{
    return sizeof(config_buffer) + words * sizeof(uint64_t);
}

static config_buffer *make_config(ft_thread *t, uint64_t generation, uint64_t words)
{
    config_buffer *c = ft_malloc(t, config_size(words));
    if (c == NULL) {
        fprintf(stderr, "ftrt_demo: ft_malloc: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    c->generation = generation;
    c->words = words;
    for (uint64_t i = 0; i < words; i++)
        c->pattern[i] = pattern_word(generation, i);
    return c;
}

/* ---- readers --------------------------------------------------------------------------------- */

/* Valid until the caller's next safepoint, which is all QSBR promises. */
static void check_config(sharing_worker *w)
{
    const config_buffer *c = atomic_load_explicit(&world.config, memory_order_acquire);
    bool ok = c->words >= CONFIG_MIN_WORDS && c->words <= CONFIG_MAX_WORDS;
    for (uint64_t i = 0; ok && i < c->words; i++)
        ok = c->pattern[i] == pattern_word(c->generation, i);
    add(&w->counts.config_checks, 1);
    if (!ok)
        add(&w->counts.config_failures, 1);
}

/* The first reader borrows (the value is valid until its next safepoint), the second takes a
 * reference. */
static void lookup(sharing_worker *w, ft_thread *t, uint64_t number)
{
    bool borrow = w->index == 0;
    ft_object *v = borrow ? ft_dict_get_borrowed(t, world.dict, world.probes[number])
                          : ft_dict_get(t, world.dict, world.probes[number]);
    add(&w->counts.lookups, 1);
    if (v == NULL)
        return;
    add(&w->counts.hits, 1);
    const value_object *value = (const value_object *)v;
    if (v->ob_type != &value_type || value->key_number != number || value->state != ALIVE)
        add(&w->counts.wrong_values, 1);
    if (!borrow)
        ft_decref(v);
}

static void reader_loop(sharing_worker *w, ft_thread *t)
{
    while (!atomic_load_explicit(&world.done, memory_order_relaxed)) {
        uint64_t r = demo_random(&w->random_state);
        ft_uniqueid_incref(t, world.hot);
        lookup(w, t, r % KEY_COUNT);
        uint64_t n = get(&w->counts.lookups);
        if (n % LOOKUPS_PER_CONFIG_CHECK == 0)
            check_config(w);
        ft_uniqueid_decref(t, world.hot);
        add(&w->counts.operations, 1);
        if (n % LOOKUPS_PER_SAFEPOINT == 0)
            ft_safepoint(t);
    }
}

/* ---- writers --------------------------------------------------------------------------------- */

/* Store a new value for number, under a fresh key object if the key is absent. */
static void store(sharing_worker *w, ft_thread *t, uint64_t number)
{
    bool was_present = w->present[number];
    ft_object *key = was_present ? world.probes[number] : make_key(t, number);
    ft_object *value = make_value(t, number, ++w->serial);
    ft_status status = ft_dict_set(t, world.dict, key, value);
    if (status == FT_OK) {
        w->present[number] = true;
        w->stored_serial[number] = w->serial;
        add(was_present ? &w->counts.replaces : &w->counts.inserts, 1);
    } else {
        add(&w->counts.set_failures, 1);
    }
    if (!was_present)
        ft_decref(key); /* the dictionary holds its own reference now */
    ft_decref(value);
}

static void delete(sharing_worker *w, ft_thread *t, uint64_t number)
{
    if (ft_dict_del(t, world.dict, world.probes[number]) != w->present[number])
        add(&w->counts.model_mismatches, 1);
    w->present[number] = false;
    add(&w->counts.deletes, 1);
}

/* Publish a new config buffer; the old one is freed once no reader can still hold it. */
static void swap_config(sharing_worker *w, ft_thread *t, uint64_t r)
{
    uint64_t words = CONFIG_MIN_WORDS + r % (CONFIG_MAX_WORDS - CONFIG_MIN_WORDS + 1);
    config_buffer *fresh = make_config(t, get(&w->counts.configs_retired) + 2, words);
    config_buffer *old = atomic_exchange_explicit(&world.config, fresh, memory_order_acq_rel);
    size_t size = config_size(old->words);
    ft_free_delayed(t, old, size);
    add(&w->counts.configs_retired, 1);
    add(&w->counts.config_bytes_retired, size);
}

static void writer_loop(sharing_worker *w, ft_thread *t)
{
    /* Fill the half from empty: the table grows while the readers already probe it. */
    for (uint64_t number = w->parity; number < KEY_COUNT; number += WRITERS) {
        ft_uniqueid_incref(t, world.hot);
        store(w, t, number);
        ft_uniqueid_decref(t, world.hot);
        add(&w->counts.operations, 1);
        ft_safepoint(t);
    }
    while (!atomic_load_explicit(&world.done, memory_order_relaxed)) {
        uint64_t r = demo_random(&w->random_state);
        uint64_t number = (r % (KEY_COUNT / WRITERS)) * WRITERS + w->parity;
        ft_uniqueid_incref(t, world.hot);
        if (w->present[number] && (r >> 32) % 4 == 0)
            delete(w, t, number);
        else
            store(w, t, number);
        ft_uniqueid_decref(t, world.hot);
        uint64_t n = get(&w->counts.operations) + 1;
        add(&w->counts.operations, 1);
        if (w->parity == 0 && n % WRITES_PER_CONFIG_SWAP == 0)
            swap_config(w, t, r >> 16);
        ft_safepoint(t);
    }
}

static void *sharing_worker_main(void *arg)
{
    sharing_worker *w = arg;
    ft_thread *t = ft_thread_start(world.rt);
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    if (w->index < READERS)
        reader_loop(w, t);
    else
        writer_loop(w, t);
    ft_thread_stop(t); /* folds its per-thread counts into the hot object's shared count */
    return NULL;
}

/* ---- the main thread's sampling -------------------------------------------------------------- */

typedef struct sampling {
    uint64_t merges, merges_exact, count_out_of_range, merge_frees;
    intptr_t count_max;
    uint64_t samples, peak_items, peak_bytes;
} sampling;

static intptr_t hot_true_count(void)
{
    return ft_refcount(world.hot) - UNIQUEID_BIAS;
}

/* Attached: merge the per-thread counts and check what the hot object's count can be now. */
static void merge_and_check(sampling *s)
{
    s->merge_frees += ft_uniqueid_merge(world.rt);
    s->merges++;
    intptr_t n = hot_true_count();
    if (n < 1 || n > 1 + WORKERS)
        s->count_out_of_range++;
    if (n == 1)
        s->merges_exact++;
    if (n > s->count_max)
        s->count_max = n;
}

static void sample_qsbr(sampling *s)
{
    ft_qsbr_stats q;
    ft_qsbr_get_stats(world.rt, &q);
    s->samples++;
    if (q.pending_items > s->peak_items)
        s->peak_items = q.pending_items;
    if (q.pending_bytes > s->peak_bytes)
        s->peak_bytes = q.pending_bytes;
}

static void run_sampling(ft_thread *t, long run_ms, sampling *s)
{
    uint64_t end = demo_now_ns() + (uint64_t)run_ms * 1000000u;
    ft_detach(t); /* while it sleeps, main delays neither stops nor QSBR goals */
    while (demo_now_ns() < end) {
        demo_sleep_ms(MERGE_INTERVAL_MS);
        ft_attach(t);
        merge_and_check(s);
        if (s->merges % MERGES_PER_STATS_SAMPLE == 1)
            sample_qsbr(s);
        ft_safepoint(t);
        ft_detach(t);
    }
    ft_attach(t);
}

/* ---- the end --------------------------------------------------------------------------------- */

typedef struct final_check {
    intptr_t hot_count;       /* with every worker stopped */
    size_t dict_size, model_size;
    uint64_t content_mismatches; /* present/absent or value serial differs from the model */
    size_t hot_freed_by_merge;
    ft_qsbr_stats quiesced;
    unsigned quiesce_rounds;
} final_check;

/* Every key's entry against the writers' models. */
static void check_contents(ft_thread *t, final_check *f)
{
    for (uint64_t number = 0; number < KEY_COUNT; number++) {
        const sharing_worker *w = &world.workers[READERS + number % WRITERS];
        ft_object *v = ft_dict_get(t, world.dict, world.probes[number]);
        f->model_size += w->present[number];
        if (v == NULL) {
            f->content_mismatches += w->present[number];
            continue;
        }
        const value_object *value = (const value_object *)v;
        if (!w->present[number] || value->key_number != number ||
            value->serial != w->stored_serial[number])
            f->content_mismatches++;
        ft_decref(v);
    }
    f->dict_size = ft_dict_size(world.dict);
}

/* Drop everything main holds, then let the delayed frees and decrefs run until none is left. */
static void drop_all(ft_thread *t, final_check *f)
{
    ft_decref(ft_dict_as_object(world.dict));
    world.dict = NULL;
    for (size_t i = 0; i < KEY_COUNT; i++)
        ft_decref(world.probes[i]);
    ft_free(t, atomic_exchange_explicit(&world.config, NULL, memory_order_relaxed));

    ft_decref(world.hot); /* the last reference, yet only a merge can free it */
    f->hot_freed_by_merge = ft_uniqueid_merge(world.rt);
    world.hot = NULL;

    for (f->quiesce_rounds = 1; f->quiesce_rounds <= QUIESCE_ATTEMPTS; f->quiesce_rounds++) {
        ft_qsbr_advance(world.rt);
        ft_safepoint(t); /* main is the only thread left: this reaches the goal */
        ft_delayed_process(t);
        ft_qsbr_get_stats(world.rt, &f->quiesced);
        if (f->quiesced.pending_items == 0)
            break;
    }
}

static uint64_t sum_counter(size_t first, size_t last, size_t offset)
{
    uint64_t total = 0;
    for (size_t i = first; i < last; i++)
        total += get((_Atomic(uint64_t) *)((char *)&world.workers[i].counts + offset));
    return total;
}

#define READERS_SUM(field) sum_counter(0, READERS, offsetof(worker_counts, field))
#define WRITERS_SUM(field) sum_counter(READERS, WORKERS, offsetof(worker_counts, field))

static int sharing_report(const sampling *s, const final_check *f, uint64_t elapsed_ns, long cpus,
                          bool reftotal_ok, int64_t reftotal)
{
    double seconds = (double)elapsed_ns / 1e9;
    uint64_t lookups = READERS_SUM(lookups), hits = READERS_SUM(hits);
    uint64_t wrong = READERS_SUM(wrong_values), config_failures = READERS_SUM(config_failures);
    uint64_t set_failures = WRITERS_SUM(set_failures), del_mismatches = WRITERS_SUM(model_mismatches);
    uint64_t keys_made = get(&world.keys_made), keys_freed = get(&world.keys_freed);
    uint64_t values_made = get(&world.values_made), values_freed = get(&world.values_freed);
    uint64_t double_deallocs = get(&world.double_deallocs);
    char retired[32], peak[32], left[32];
    demo_format_bytes(retired, sizeof retired, WRITERS_SUM(config_bytes_retired));
    demo_format_bytes(peak, sizeof peak, s->peak_bytes);
    demo_format_bytes(left, sizeof left, f->quiesced.pending_bytes);

    printf("lookups        %" PRIu64 " (%.0f/s) by %d readers, %" PRIu64 " hits (%.0f%%), %" PRIu64
           " wrong values\n",
           lookups, (double)lookups / seconds, READERS, hits,
           lookups ? 100.0 * (double)hits / (double)lookups : 0.0, wrong);
    printf("writes         %" PRIu64 " inserts (each with a fresh key object), %" PRIu64
           " replaced values,\n               %" PRIu64 " deletes; %" PRIu64
           " sets failed, %" PRIu64 " deletes disagreed with the model\n",
           WRITERS_SUM(inserts), WRITERS_SUM(replaces), WRITERS_SUM(deletes), set_failures,
           del_mismatches);
    printf("config         %" PRIu64 " buffers (%s) replaced and retired with ft_free_delayed; "
           "%" PRIu64 " reader\n               checks of the pattern, %" PRIu64 " failed\n",
           WRITERS_SUM(configs_retired), retired, READERS_SUM(config_checks), config_failures);
    /* The write sequence starts at 1 and every advance, which starts a grace period, adds 2
     * (ftrt/qsbr.h). */
    printf("qsbr           what writers retire (old tables, replaced values, removed keys, old "
           "buffers)\n               waits until no reader can still be using it. Sampled %" PRIu64
           " times (ft_qsbr_get_stats):\n               at most %" PRIu64 " items waited "
           "(references to drop, and %s of tables and\n               buffers to free); after the "
           "run and %u round%s of quiescing: %" PRIu64 " items (%s);\n               %" PRIu64
           " released in all, over %" PRIu64 " grace periods (each a wait for every reader\n"
           "               to pass a safepoint)\n",
           s->samples, s->peak_items, peak, f->quiesce_rounds, f->quiesce_rounds == 1 ? "" : "s",
           f->quiesced.pending_items, left, f->quiesced.freed_items,
           (f->quiesced.wr_seq - 1) / 2);
    printf("hot object     %" PRIu64 " operations each took and dropped a reference to it, "
           "counted in their\n               thread's own array; the main thread merged the "
           "counts into the object\n               %" PRIu64 " times while the workers ran: its "
           "count was 1 (main's reference) after\n               %" PRIu64 " merges, at most %"
           PRIdPTR " (workers caught waiting mid-operation); times outside\n               1..%d: "
           "%" PRIu64 "; with the workers stopped: %" PRIdPTR " (expected 1); freed by the\n"
           "               final merge: %zu (expected 1)\n",
           READERS_SUM(operations) + WRITERS_SUM(operations), s->merges, s->merges_exact,
           s->count_max, 1 + WORKERS, s->count_out_of_range, f->hot_count, f->hot_freed_by_merge);
    printf("dictionary     %zu entries at the end, the writers' model says %zu; %" PRIu64
           " entries differ\n",
           f->dict_size, f->model_size, f->content_mismatches);
#ifdef FTRT_DEBUG
    printf("reference total %" PRId64 " (ft_runtime_reftotal, debug build)\n", reftotal);
#else
    (void)reftotal;
#endif
    if (cpus > 0 && WORKERS + 1 > cpus)
        printf("note           %d threads on %ld CPUs: a stop waits until a preempted worker runs "
               "again\n",
               WORKERS + 1, cpus);

    bool lookups_ok = wrong == 0 && config_failures == 0;
    bool writes_ok = set_failures == 0 && del_mismatches == 0 && f->content_mismatches == 0 &&
                     f->dict_size == f->model_size;
    bool hot_ok = s->count_out_of_range == 0 && f->hot_count == 1 && f->hot_freed_by_merge == 1 &&
                  get(&world.hot_freed) == 1 && s->merge_frees == 0;
    bool freed_ok = keys_made == keys_freed && values_made == values_freed &&
                    double_deallocs == 0 && f->quiesced.pending_items == 0 && reftotal_ok;
    printf("\n");
    printf("lookups and writes correct: %s\n", lookups_ok && writes_ok ? "yes" : "NO");
    printf("hot object counted right: %s\n", hot_ok ? "yes" : "NO");
    printf("every object freed exactly once: %s (%" PRIu64 " of %" PRIu64 " keys, %" PRIu64
           " of %" PRIu64 " values, %" PRIu64 " freed twice)\n",
           freed_ok ? "yes" : "NO", keys_freed, keys_made, values_freed, values_made,
           double_deallocs);
    return lookups_ok && writes_ok && hot_ok && freed_ok ? 0 : 1;
}

static void start_worker(sharing_worker *w)
{
    if (pthread_create(&w->os_thread, NULL, sharing_worker_main, w) != 0) {
        fprintf(stderr, "ftrt_demo: pthread_create failed\n");
        exit(2);
    }
}

/* Main's part before the workers start: the dictionary, the probe keys, the hot object and the
 * first config buffer. */
static void set_up(ft_thread *t)
{
    world.dict = ft_dict_new(t, &key_ops);
    if (world.dict == NULL) {
        fprintf(stderr, "ftrt_demo: ft_dict_new: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    for (uint64_t number = 0; number < KEY_COUNT; number++)
        world.probes[number] = make_key(t, number);
    world.hot = make(t, &hot_type);
    ((hot_object *)world.hot)->state = ALIVE;
    ft_status status = ft_uniqueid_enable(t, world.hot);
    if (status != FT_OK) {
        fprintf(stderr, "ftrt_demo: ft_uniqueid_enable: %s\n", ft_status_str(status));
        exit(2);
    }
    atomic_store_explicit(&world.config, make_config(t, 1, CONFIG_MIN_WORDS), memory_order_release);
}

int demo_sharing_phase(long run_ms, long cpus)
{
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.name = "demo-sharing";
    world.rt = ft_runtime_new(&cfg);
    if (world.rt == NULL) {
        fprintf(stderr, "ftrt_demo: ft_runtime_new: %s\n", ft_status_str(ft_last_error()));
        return 2;
    }
    ft_thread *t = ft_thread_start(world.rt);
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        return 2;
    }

    printf("== phase 3: a shared dictionary (QSBR, delayed free, per-thread reference counts) "
           "==\n\n%d readers look up %d keys without a lock while %d writers replace, delete and "
           "insert\nthem again, for %ld ms. Every operation also takes and drops a reference to "
           "one shared\n\"hot\" object; each thread counts those in an array of its own, so that the "
           "threads do\nnot fight over one counter, and the main thread merges the counts into "
           "the object every\n%d ms (ft_uniqueid_merge) and checks them.\n\n",
           READERS, KEY_COUNT, WRITERS, run_ms, MERGE_INTERVAL_MS);
    fflush(stdout);

    set_up(t);
    uint64_t start = demo_now_ns();
    for (size_t i = 0; i < WORKERS; i++) {
        sharing_worker *w = &world.workers[i];
        w->index = i;
        w->parity = i < READERS ? 0 : i - READERS;
        w->random_state = UINT64_C(0xA0761D6478BD642F) * (i + 1);
        start_worker(w);
    }
    sampling s = {0};
    run_sampling(t, run_ms, &s);
    atomic_store_explicit(&world.done, true, memory_order_relaxed);
    ft_detach(t); /* a worker's stop may need a stop-the-world, which must not wait for main */
    for (size_t i = 0; i < WORKERS; i++)
        pthread_join(world.workers[i].os_thread, NULL);
    ft_attach(t);
    uint64_t elapsed = demo_now_ns() - start;

    final_check f = {0};
    s.merge_frees += ft_uniqueid_merge(world.rt); /* nothing left to merge: stopped threads folded theirs */
    f.hot_count = hot_true_count();
    check_contents(t, &f);
    drop_all(t, &f);
    ft_thread_stop(t);

    int64_t reftotal = 0;
    bool reftotal_ok = true;
#ifdef FTRT_DEBUG
    reftotal = ft_runtime_reftotal(world.rt);
    reftotal_ok = reftotal == 0;
#endif
    int status = sharing_report(&s, &f, elapsed, cpus, reftotal_ok, reftotal);
    ft_status freed = ft_runtime_free(world.rt);
    if (freed != FT_OK) {
        fprintf(stderr, "ftrt_demo: ft_runtime_free: %s\n", ft_status_str(freed));
        return 2;
    }
    return status;
}
