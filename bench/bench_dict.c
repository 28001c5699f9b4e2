/* bench_dict.c: lookups in ft_dict, which take no lock, against the same table behind a reader lock.
 *
 * A dictionary of 1024 keys (host objects with a number; the hash mixes the number, equality
 * compares numbers) maps each to a value object with a payload. A lookup finds the value for a
 * random key, reads its payload and lets go of it: with ft_dict_get_borrowed there is nothing to let
 * go of (the value is valid until the thread's next safepoint); with ft_dict_get that is a new
 * reference dropped with ft_decref (the values belong to the main thread, so both are atomic
 * operations on the value's shared count, whose line then moves between the cores on nearly every
 * lookup); with the baseline, a pthread_rwlock read lock held around the probe and the read. The
 * baseline's table is the same: open addressing with linear probing, {hash, key, value} entries,
 * the same hash function called through the same ops table, 2048 slots (what ft_dict has grown to at
 * 1024 keys), the same key and value objects. Lookup threads are pinned; ftrt's reach a safepoint
 * every 64 lookups, as a host's would (the borrowed values are used before it).
 *
 * dict.lookup_scaling_2t: total lookups/s of two threads over one thread's, both with the borrowed
 * lookup, the one a QSBR reader uses; a note gives the same ratio for ft_dict_get.
 * dict.lookup_vs_rwlock_2t: two threads with ft_dict_get over two threads with the rwlock (a new
 * reference per lookup, as before the borrowed lookup existed: the conservative comparison). */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftrt.h"

#define DICT_KEYS 1024
#define PLAIN_SLOTS 2048

typedef struct bench_key {
    ft_object ob;
    uint64_t number;
} bench_key;

typedef struct bench_value {
    ft_object ob;
    uint64_t payload;
} bench_value;

static const ft_type key_type = {.name = "bench_key", .basic_size = sizeof(bench_key)};
static const ft_type value_type = {.name = "bench_value", .basic_size = sizeof(bench_value)};

static uint64_t key_hash(ft_object *key)
{
    uint64_t x = ((bench_key *)key)->number + 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static bool key_equal(ft_object *a, ft_object *b)
{
    return ((bench_key *)a)->number == ((bench_key *)b)->number;
}

static const ft_dict_ops key_ops = {key_hash, key_equal};

static uint64_t payload_for(uint64_t index)
{
    return index * 3 + 1;
}

/* The baseline: the same table, guarded by a reader/writer lock. */
typedef struct plain_entry {
    uint64_t hash;
    ft_object *key;
    ft_object *value;
} plain_entry;

typedef struct plain_map {
    BENCH_ALIGNED pthread_rwlock_t lock;
    BENCH_ALIGNED const ft_dict_ops *ops;
    size_t mask;
    plain_entry *entries;
} plain_map;

static void plain_insert(plain_map *m, ft_object *key, ft_object *value)
{
    uint64_t hash = m->ops->hash(key);
    for (size_t i = hash & m->mask;; i = (i + 1) & m->mask) {
        plain_entry *e = &m->entries[i];
        if (!e->key) {
            *e = (plain_entry){hash, key, value};
            return;
        }
    }
}

/* The caller holds the read lock. */
static ft_object *plain_lookup(plain_map *m, ft_object *key)
{
    uint64_t hash = m->ops->hash(key);
    for (size_t i = hash & m->mask;; i = (i + 1) & m->mask) {
        plain_entry *e = &m->entries[i];
        if (!e->key)
            return NULL;
        if (e->hash == hash && (e->key == key || m->ops->equal(e->key, key)))
            return e->value;
    }
}

enum lookup_kind { LOOKUP_FT_BORROWED, LOOKUP_FT, LOOKUP_RWLOCK };

typedef struct lookup_shared {
    const bench_config *cfg;
    ft_runtime *rt;
    ft_thread *main_thread;
    ft_dict *dict;
    plain_map *map;
    ft_object *keys[DICT_KEYS];
    ft_object *values[DICT_KEYS];
    uint64_t duration_ns;
    enum lookup_kind kind;
    bench_gate gate;
} lookup_shared;

typedef struct lookup_worker {
    BENCH_ALIGNED lookup_shared *shared;
    uint64_t seed;
    uint64_t lookups, misses, sum, expected;
    bench_span span;
} lookup_worker;

/* A 64-bit LCG; its top 10 bits pick the key. */
static inline uint64_t next_random(uint64_t x)
{
    return x * 6364136223846793005ull + 1442695040888963407ull;
}

static inline __attribute__((always_inline)) void lookup_loop(lookup_worker *w, ft_thread *t,
                                                              enum lookup_kind kind)
{
    lookup_shared *s = w->shared;
    uint64_t x = w->seed, lookups = 0, misses = 0, sum = 0, expected = 0;
    bench_gate_wait(&s->gate);
    uint64_t start = bench_now_ns(), now;
    uint64_t deadline = start + s->duration_ns;
    do {
        for (int i = 0; i < 64; i++) {
            x = next_random(x);
            size_t index = (size_t)(x >> 54);
            ft_object *key = s->keys[index];
            expected += payload_for(index);
            if (kind == LOOKUP_FT_BORROWED) {
                ft_object *v = ft_dict_get_borrowed(t, s->dict, key);
                if (!v) {
                    misses++;
                    continue;
                }
                sum += ((bench_value *)v)->payload;
            } else if (kind == LOOKUP_FT) {
                ft_object *v = ft_dict_get(t, s->dict, key);
                if (!v) {
                    misses++;
                    continue;
                }
                sum += ((bench_value *)v)->payload;
                ft_decref(v);
            } else {
                pthread_rwlock_rdlock(&s->map->lock);
                ft_object *v = plain_lookup(s->map, key);
                if (v)
                    sum += ((bench_value *)v)->payload;
                else
                    misses++;
                pthread_rwlock_unlock(&s->map->lock);
            }
        }
        lookups += 64;
        if (kind != LOOKUP_RWLOCK)
            ft_safepoint(t);
        now = bench_now_ns();
    } while (now < deadline);
    w->seed = x;
    w->lookups = lookups;
    w->misses = misses;
    w->sum = sum;
    w->expected = expected;
    w->span.start_ns = start;
    w->span.end_ns = now;
}

static void *lookup_thread(void *arg)
{
    lookup_worker *w = arg;
    lookup_shared *s = w->shared;
    if (s->kind == LOOKUP_FT_BORROWED) {
        ft_thread *t = bench_thread_start(s->rt);
        lookup_loop(w, t, LOOKUP_FT_BORROWED);
        ft_thread_stop(t);
    } else if (s->kind == LOOKUP_FT) {
        ft_thread *t = bench_thread_start(s->rt);
        lookup_loop(w, t, LOOKUP_FT);
        ft_thread_stop(t);
    } else {
        lookup_loop(w, NULL, LOOKUP_RWLOCK);
    }
    return NULL;
}

/* Total M lookups/s of `threads` threads of one kind; checks every lookup found its value. */
static double lookup_team_mops(lookup_shared *s, enum lookup_kind kind, int threads)
{
    static uint64_t seeds = 1;
    lookup_worker workers[2];
    memset(workers, 0, sizeof workers);
    for (int i = 0; i < threads; i++) {
        workers[i].shared = s;
        workers[i].seed = seeds++ * 0x9E3779B97F4A7C15ull;
    }
    s->kind = kind;
    bench_gate_init(&s->gate, (uint32_t)threads);
    bench_team_run(s->cfg, threads, lookup_thread, workers, sizeof workers[0]);
    uint64_t lookups = 0;
    for (int i = 0; i < threads; i++) {
        const lookup_worker *w = &workers[i];
        if (w->misses || w->sum != w->expected)
            bench_fail("%s lookups: %llu misses, payload sum %llu, expected %llu",
                       kind == LOOKUP_RWLOCK ? "rwlock map" : "ft_dict", (unsigned long long)w->misses,
                       (unsigned long long)w->sum, (unsigned long long)w->expected);
        lookups += w->lookups;
    }
    double seconds = bench_team_seconds(&workers[0].span, sizeof workers[0], threads);
    return (double)lookups / seconds / 1e6;
}

static double borrowed_two_threads(void *arg)
{
    return lookup_team_mops(arg, LOOKUP_FT_BORROWED, 2);
}

static double borrowed_one_thread(void *arg)
{
    return lookup_team_mops(arg, LOOKUP_FT_BORROWED, 1);
}

static double ft_two_threads(void *arg)
{
    return lookup_team_mops(arg, LOOKUP_FT, 2);
}

static double ft_one_thread(void *arg)
{
    return lookup_team_mops(arg, LOOKUP_FT, 1);
}

static double rwlock_two_threads(void *arg)
{
    return lookup_team_mops(arg, LOOKUP_RWLOCK, 2);
}

static double rwlock_one_thread(void *arg)
{
    return lookup_team_mops(arg, LOOKUP_RWLOCK, 1);
}

static lookup_shared *lookup_fixture_new(const bench_config *cfg)
{
    lookup_shared *s = bench_alloc(sizeof *s);
    plain_map *m = bench_alloc(sizeof *m);
    plain_entry *entries = bench_alloc(PLAIN_SLOTS * sizeof *entries);
    pthread_rwlock_init(&m->lock, NULL);
    m->ops = &key_ops;
    m->mask = PLAIN_SLOTS - 1;
    m->entries = entries;
    s->cfg = cfg;
    s->map = m;
    s->duration_ns = cfg->quick ? 15 * FT_NS_PER_MS : 40 * FT_NS_PER_MS;
    s->rt = ft_runtime_new(NULL);
    s->main_thread = s->rt ? ft_thread_start(s->rt) : NULL;
    s->dict = s->main_thread ? ft_dict_new(s->main_thread, &key_ops) : NULL;
    if (!s->dict) {
        fprintf(stderr, "bench: cannot make a dictionary: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    for (size_t i = 0; i < DICT_KEYS; i++) {
        bench_key *k = (bench_key *)ft_alloc(s->main_thread, &key_type);
        bench_value *v = (bench_value *)ft_alloc(s->main_thread, &value_type);
        if (!k || !v) {
            fprintf(stderr, "bench: ft_alloc failed\n");
            exit(2);
        }
        k->number = i * 2654435761u; /* spread, so the hash has real work to do */
        v->payload = payload_for(i);
        s->keys[i] = &k->ob;
        s->values[i] = &v->ob;
        if (ft_dict_set(s->main_thread, s->dict, &k->ob, &v->ob) != FT_OK) {
            fprintf(stderr, "bench: ft_dict_set failed\n");
            exit(2);
        }
        plain_insert(m, &k->ob, &v->ob);
    }
    if (ft_dict_size(s->dict) != DICT_KEYS)
        bench_fail("ft_dict holds %zu entries, expected %d", ft_dict_size(s->dict), DICT_KEYS);
    ft_detach(s->main_thread); /* quiescent, and out of any stop's way, while the teams run */
    return s;
}

static void lookup_fixture_free(lookup_shared *s)
{
    ft_attach(s->main_thread);
    ft_decref(ft_dict_as_object(s->dict));
    for (size_t i = 0; i < DICT_KEYS; i++) {
        ft_decref(s->keys[i]);
        ft_decref(s->values[i]);
    }
    ft_thread_stop(s->main_thread);
    if (ft_runtime_free(s->rt) != FT_OK)
        bench_fail("ft_runtime_free refused after every thread stopped");
    pthread_rwlock_destroy(&s->map->lock);
    free(s->map->entries);
    free(s->map);
    free(s);
}

void bench_dict_lookup_scaling_2t(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    lookup_shared *s = lookup_fixture_new(cfg);
    bench_side two = {"2 threads", borrowed_two_threads, s};
    bench_side one = {"1 thread", borrowed_one_thread, s};
    bench_comparison c = bench_interleave(cfg, &two, &one);
    bench_side get_two = {"ft_dict_get, 2 threads", ft_two_threads, s};
    bench_side get_one = {"ft_dict_get, 1 thread", ft_one_thread, s};
    bench_comparison get = bench_interleave(cfg, &get_two, &get_one);
    bench_note("ft_dict_get (a new reference per lookup), 2 threads vs 1: %.2f vs %.2f M lookups/s, "
               "ratio %.2f",
               get.median_a, get.median_b, get.median_ratio);
    lookup_fixture_free(s);
    bench_report(name, c.median_ratio, "ratio",
                 "the same ft_dict_get_borrowed loop on 1 thread: 1024 keys, random hits, value "
                 "payload read, no reference, a safepoint every 64 lookups (total lookups/s)",
                 ">= 1.85", two.label, c.median_a, one.label, c.median_b, "M lookups/s");
}

void bench_dict_lookup_vs_rwlock_2t(const bench_config *cfg, const char *name)
{
    bench_print_probe(cfg);
    lookup_shared *s = lookup_fixture_new(cfg);
    bench_side ft = {"ft_dict", ft_two_threads, s};
    bench_side rwlock = {"rwlock map", rwlock_two_threads, s};
    bench_comparison c = bench_interleave(cfg, &ft, &rwlock);
    bench_side rwlock_one = {"rwlock map, 1 thread", rwlock_one_thread, s};
    bench_comparison scaling = bench_interleave(cfg, &rwlock, &rwlock_one);
    bench_note("rwlock map, 2 threads vs 1: %.2f vs %.2f M lookups/s, ratio %.2f", scaling.median_a,
               scaling.median_b, scaling.median_ratio);
    lookup_fixture_free(s);
    bench_report(name, c.median_ratio, "ratio",
                 "the same table (open addressing, same hash, keys, values, 2048 slots) behind a "
                 "pthread_rwlock read lock, 2 pinned threads, random hits (total lookups/s)",
                 ">= 2.0", ft.label, c.median_a, rwlock.label, c.median_b, "M lookups/s");
}
