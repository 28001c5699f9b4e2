/* tests/test_trace.c: traces (ftrt/trace.h): the file is valid JSON whose events begin and end in
 * order on each thread; stops carry their requester, reason and times; collections show every
 * phase, on a worker and on the main thread; a safepoint's merge is recorded on its thread; the
 * errors (started twice, a bad path, out of memory at every allocation) leave the runtime usable.
 *
 * The file is read back with the small JSON parser below, which checks the whole syntax and keeps
 * the values the tests look at. */
#define _GNU_SOURCE
#define TEST_GC_NODE
#include <math.h>

#include "test_util.h"
#include "trace/trace.h"

/* ---- a JSON parser ------------------------------------------------------------------------------ */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } json_kind;

typedef struct json {
    json_kind kind;
    double num;
    char *str;           /* J_STR; a key's text in an object's members */
    struct json **items; /* J_ARR elements; J_OBJ values */
    char **keys;         /* J_OBJ */
    size_t n;
} json;

typedef struct parser {
    const char *p, *end;
    bool bad;
} parser;

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && strchr(" \t\r\n", *ps->p))
        ps->p++;
}

static bool eat(parser *ps, char c)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return true;
    }
    return false;
}

static json *parse_value(parser *ps);

static char *parse_string(parser *ps)
{
    if (!eat(ps, '"')) {
        ps->bad = true;
        return NULL;
    }
    size_t cap = 16, len = 0;
    char *s = malloc(cap);
    while (ps->p < ps->end && *ps->p != '"') {
        char c = *ps->p++;
        if ((unsigned char)c < 0x20)
            ps->bad = true;
        if (c == '\\') {
            if (ps->p >= ps->end || !strchr("\"\\/bfnrtu", *ps->p)) {
                ps->bad = true;
                break;
            }
            c = *ps->p++;
            if (c == 'u') {
                for (int i = 0; i < 4; i++)
                    if (ps->p >= ps->end || !strchr("0123456789abcdefABCDEF", *ps->p++))
                        ps->bad = true;
                c = '?';
            }
        }
        if (len + 2 > cap)
            s = realloc(s, cap *= 2);
        s[len++] = c;
    }
    s[len] = 0;
    if (ps->p >= ps->end)
        ps->bad = true;
    else
        ps->p++;
    return s;
}

static json *new_json(json_kind kind)
{
    json *j = calloc(1, sizeof *j);
    j->kind = kind;
    return j;
}

static void push_item(json *j, json *item, char *key)
{
    j->items = realloc(j->items, (j->n + 1) * sizeof *j->items);
    if (j->kind == J_OBJ)
        j->keys = realloc(j->keys, (j->n + 1) * sizeof *j->keys), j->keys[j->n] = key;
    j->items[j->n++] = item;
}

static json *parse_value(parser *ps)
{
    skip_ws(ps);
    if (ps->p >= ps->end) {
        ps->bad = true;
        return new_json(J_NULL);
    }
    char c = *ps->p;
    if (c == '{' || c == '[') {
        bool obj = c == '{';
        json *j = new_json(obj ? J_OBJ : J_ARR);
        ps->p++;
        if (eat(ps, obj ? '}' : ']'))
            return j;
        do {
            char *key = obj ? parse_string(ps) : NULL;
            if (obj && !eat(ps, ':'))
                ps->bad = true;
            push_item(j, parse_value(ps), key);
        } while (!ps->bad && eat(ps, ','));
        if (!eat(ps, obj ? '}' : ']'))
            ps->bad = true;
        return j;
    }
    if (c == '"') {
        json *j = new_json(J_STR);
        j->str = parse_string(ps);
        return j;
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(words[i]);
        if ((size_t)(ps->end - ps->p) >= len && memcmp(ps->p, words[i], len) == 0) {
            ps->p += len;
            json *j = new_json(i < 2 ? J_BOOL : J_NULL);
            j->num = i == 0;
            return j;
        }
    }
    /* A number, by JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
    const char *s = ps->p;
    if (*s == '-')
        s++;
    const char *digits = s;
    while (s < ps->end && *s >= '0' && *s <= '9')
        s++;
    if (s == digits || (*digits == '0' && s - digits > 1))
        ps->bad = true;
    if (s < ps->end && *s == '.') {
        const char *frac = ++s;
        while (s < ps->end && *s >= '0' && *s <= '9')
            s++;
        ps->bad |= s == frac;
    }
    if (s < ps->end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < ps->end && (*s == '+' || *s == '-'))
            s++;
        const char *exp = s;
        while (s < ps->end && *s >= '0' && *s <= '9')
            s++;
        ps->bad |= s == exp;
    }
    json *j = new_json(J_NUM);
    j->num = strtod(ps->p, NULL);
    ps->p = s;
    return j;
}

static void json_free(json *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++) {
        json_free(j->items[i]);
        if (j->keys)
            free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j->str);
    free(j);
}

static json *json_get(const json *j, const char *key)
{
    if (!j || j->kind != J_OBJ)
        return NULL;
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->keys[i], key) == 0)
            return j->items[i];
    return NULL;
}

static const char *json_str(const json *j, const char *key)
{
    json *v = json_get(j, key);
    return v && v->kind == J_STR ? v->str : "";
}

static double json_num(const json *j, const char *key)
{
    json *v = json_get(j, key);
    return v && v->kind == J_NUM ? v->num : NAN;
}

/* The whole file parsed (NULL if it is not one JSON value). */
static json *json_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, mem);
    fclose(f);
    fclose(mem);
    parser ps = {text, text + len, false};
    json *root = parse_value(&ps);
    skip_ws(&ps);
    if (ps.bad || ps.p != ps.end) {
        json_free(root);
        root = NULL;
    }
    free(text);
    return root;
}

/* ---- checking a trace --------------------------------------------------------------------------- */

/* The test's trace file, one per process (ctest may run test binaries side by side). */
static char trace_path[64];

static const char *path_for_test(void)
{
    snprintf(trace_path, sizeof trace_path, "/tmp/ftrt-test-trace-%d.json", (int)getpid());
    return trace_path;
}

static json *load_trace(void)
{
    json *root = json_load(trace_path);
    CHECK(root != NULL);
    CHECK(json_get(root, "traceEvents") && json_get(root, "traceEvents")->kind == J_ARR);
    CHECK(strcmp(json_str(root, "displayTimeUnit"), "ms") == 0);
    return root;
}

static json *const *events_of(const json *root, size_t *n)
{
    json *a = json_get(root, "traceEvents");
    *n = a->n;
    return a->items;
}

/* Events named name with phase ph (0: any) on tid (-1: any). */
static int count_events(const json *root, const char *name, char ph, int tid)
{
    size_t n;
    json *const *ev = events_of(root, &n);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(json_str(ev[i], "name"), name) == 0 && (!ph || json_str(ev[i], "ph")[0] == ph) &&
            (tid < 0 || json_num(ev[i], "tid") == tid))
            found++;
    return found;
}

typedef struct interval {
    double start, end;
    const char *name;
} interval;

static int by_start(const void *x, const void *y)
{
    const interval *a = x, *b = y;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    return a->end > b->end ? -1 : a->end < b->end; /* the outer one first */
}

/* On each tid: every E closes the innermost open B of its name, nothing stays open, and the B/E
 * spans and the X spans together nest (each is inside or apart from every other). */
static void check_nesting(const json *root)
{
    size_t n;
    json *const *ev = events_of(root, &n);
    interval *spans = malloc(n * sizeof *spans);
    const json **open = malloc(n * sizeof *open);
    double tids[64];
    size_t ntids = 0;
    for (size_t i = 0; i < n; i++) {
        double tid = json_num(ev[i], "tid");
        bool seen = false;
        for (size_t k = 0; k < ntids; k++)
            seen |= tids[k] == tid;
        if (!seen && ntids < 64)
            tids[ntids++] = tid;
    }
    for (size_t k = 0; k < ntids; k++) {
        size_t nspans = 0, depth = 0;
        for (size_t i = 0; i < n; i++) {
            const json *e = ev[i];
            if (json_num(e, "tid") != tids[k])
                continue;
            char ph = json_str(e, "ph")[0];
            double ts = json_num(e, "ts");
            if (ph == 'B') {
                open[depth++] = e;
            } else if (ph == 'E') {
                if (depth == 0 || strcmp(json_str(open[depth - 1], "name"), json_str(e, "name")))
                    fprintf(stderr, "tid %g: E %s at %.3f closes %s\n", tids[k], json_str(e, "name"),
                            ts, depth ? json_str(open[depth - 1], "name") : "nothing");
                CHECK(depth > 0);
                CHECK(strcmp(json_str(open[depth - 1], "name"), json_str(e, "name")) == 0);
                double begun = json_num(open[--depth], "ts");
                CHECK(begun <= ts);
                spans[nspans++] = (interval){begun, ts, json_str(e, "name")};
            } else if (ph == 'X') {
                spans[nspans++] = (interval){ts, ts + json_num(e, "dur"), json_str(e, "name")};
            }
        }
        CHECK_EQ(depth, 0);
        qsort(spans, nspans, sizeof *spans, by_start);
        size_t sp = 0;
        interval *stack = malloc((nspans + 1) * sizeof *stack);
        const double slack = 0.002; /* microseconds printed to 3 decimals */
        for (size_t i = 0; i < nspans; i++) {
            while (sp && stack[sp - 1].end <= spans[i].start + slack)
                sp--;
            if (sp && spans[i].end > stack[sp - 1].end + slack)
                fprintf(stderr, "tid %g: %s [%.3f, %.3f] overlaps %s [%.3f, %.3f]\n", tids[k],
                        spans[i].name, spans[i].start, spans[i].end, stack[sp - 1].name,
                        stack[sp - 1].start, stack[sp - 1].end);
            CHECK(!sp || spans[i].end <= stack[sp - 1].end + slack);
            stack[sp++] = spans[i];
        }
        free(stack);
    }
    free(spans);
    free(open);
}

/* Every event has the fields its phase needs. */
static void check_fields(const json *root)
{
    size_t n;
    json *const *ev = events_of(root, &n);
    CHECK(n > 0);
    for (size_t i = 0; i < n; i++) {
        const char *ph = json_str(ev[i], "ph");
        CHECK(strlen(ph) == 1 && strchr("BEXiM", ph[0]));
        CHECK(*json_str(ev[i], "name"));
        CHECK(!isnan(json_num(ev[i], "pid")) && !isnan(json_num(ev[i], "tid")));
        CHECK(ph[0] == 'M' || json_num(ev[i], "ts") >= 0);
        CHECK(ph[0] != 'X' || json_num(ev[i], "dur") >= 0);
    }
}

static json *load_checked_trace(void)
{
    json *root = load_trace();
    check_fields(root);
    check_nesting(root);
    return root;
}

/* The first stop event with this reason (NULL if none). */
static const json *stop_with_reason(const json *root, const char *reason)
{
    size_t n;
    json *const *ev = events_of(root, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(json_str(ev[i], "name"), "stop-the-world") == 0 &&
            strcmp(json_str(json_get(ev[i], "args"), "reason"), reason) == 0)
            return ev[i];
    return NULL;
}

/* ---- scenarios ---------------------------------------------------------------------------------- */

static gc_node *root_node;

static void visit_root(ft_visit_fn visit, void *visit_arg, void *arg)
{
    (void)arg;
    visit(&root_node->ob, visit_arg);
}

static _Atomic int callbacks_run;

static void count_callback(ft_weakref *wr, ft_object *arg)
{
    (void)wr;
    (void)arg;
    atomic_fetch_add(&callbacks_run, 1);
}

/* Two finalizable nodes in a cycle, one weakly referenced with a callback. */
static ft_weakref *make_garbage_cycle(ft_thread *t)
{
    gc_node *a = gc_node_new(t, &gc_fin_type), *b = gc_node_new(t, &gc_fin_type);
    CHECK(a && b);
    gc_node_append(a, &b->ob);
    gc_node_append(b, &a->ob);
    ft_weakref *wr = ft_weakref_new(t, &a->ob, count_callback, NULL);
    CHECK(wr != NULL);
    ft_decref(&a->ob);
    ft_decref(&b->ob);
    return wr;
}

/* A full collection that runs every phase: roots (mark alive), a weak reference with a callback,
 * finalizers (so a second stop checks for resurrection), garbage to clear. */
static void collect_every_phase(fixture f)
{
    root_node = gc_node_new(f.t, &gc_node_type);
    CHECK_EQ(ft_gc_add_root(f.rt, visit_root, NULL), FT_OK);
    ft_weakref *wr = make_garbage_cycle(f.t);
    atomic_store(&callbacks_run, 0);
    CHECK_EQ(ft_gc_collect(f.rt, 2), 2);
    CHECK_EQ(atomic_load(&callbacks_run), 1);
    ft_decref(&wr->ob_base);
    CHECK_EQ(ft_gc_remove_root(f.rt, visit_root, NULL), FT_OK);
    ft_decref(&root_node->ob);
}

static void worker_collects(ft_thread *t, void *arg)
{
    (void)arg;
    ft_weakref *wr = make_garbage_cycle(t);
    CHECK_THREAD(ft_gc_collect(ft_thread_runtime(t), 0) == 2);
    ft_decref(&wr->ob_base);
}

static void drop_object(ft_thread *t, void *arg)
{
    (void)t;
    ft_decref(arg); /* not its owner: the object goes to its owner's merge queue */
}

static void *stop_from_outside(void *arg)
{
    ft_stop_the_world(arg);
    ft_start_the_world(arg);
    return NULL;
}

static const ft_type plain_type = {.name = "plain", .basic_size = sizeof(ft_object)};

static const char *const gc_phases[] = {
    "gc.collect", "gc.settle",     "gc.mark_alive",    "gc.scratch_counts", "gc.mark",
    "gc.weakrefs", "gc.finalizers", "gc.resurrection", "gc.clear"};

TEST(records_every_kind_of_event)
{
    fixture f = gc_fixture_setup();
    CHECK_EQ(ft_trace_start(f.rt, path_for_test()), FT_OK);

    collect_every_phase(f);                /* on the main thread: index 0 */
    on_other_thread(f.t, worker_collects, NULL); /* on a worker: index 1 */
    ft_object *o = ft_alloc(f.t, &plain_type);
    CHECK(o != NULL);
    on_other_thread(f.t, drop_object, o);
    ft_safepoint(f.t); /* merges o (and frees it) */
    ft_qsbr_stats qs;
    ft_qsbr_get_stats(f.rt, &qs);
    pthread_t outside;
    ft_detach(f.t);
    start_thread(&outside, stop_from_outside, f.rt);
    join_thread(outside);
    ft_attach(f.t);

    CHECK_EQ(ft_trace_stop(f.rt), FT_OK);
    json *root = load_checked_trace();
    for (size_t i = 0; i < sizeof gc_phases / sizeof *gc_phases; i++) {
        CHECK(count_events(root, gc_phases[i], 'B', 0) >= 1);
        CHECK_EQ(count_events(root, gc_phases[i], 'B', -1), count_events(root, gc_phases[i], 'E', -1));
    }
    CHECK_EQ(count_events(root, "gc.collect", 'E', 0), 1);
    CHECK_EQ(count_events(root, "gc.collect", 'E', 1), 1);
    CHECK(count_events(root, "brc.merge", 'B', 0) >= 1);
    CHECK(count_events(root, "thread_name", 'M', 0) == 1 && count_events(root, "thread_name", 'M', 1));

    /* The collections' counts, on their ends. */
    size_t n;
    json *const *ev = events_of(root, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(json_str(ev[i], "name"), "gc.collect") == 0 && json_str(ev[i], "ph")[0] == 'E') {
            json *args = json_get(ev[i], "args");
            double generation = json_num(args, "generation");
            CHECK(generation == (json_num(ev[i], "tid") == 0 ? 2 : 0));
            CHECK(json_num(args, "candidates") >= 2);
            CHECK_EQ(json_num(args, "collected"), 2);
            CHECK_EQ(json_num(args, "uncollectable"), 0);
        }

    /* Stops: the collector's, the statistics', one from outside the runtime. */
    const json *gc = stop_with_reason(root, "gc"), *stats = stop_with_reason(root, "qsbr stats");
    const json *host = stop_with_reason(root, "host");
    CHECK(gc && stats && host);
    CHECK_EQ(json_num(json_get(stats, "args"), "requester"), 0);
    CHECK_EQ(json_num(json_get(host, "args"), "requester"), -1);
    CHECK_EQ(json_num(host, "tid"), 65535);
    for (const json *s = gc; s; s = s == gc ? stats : s == stats ? host : NULL) {
        json *args = json_get(s, "args");
        CHECK(json_num(args, "time_to_stop_ns") >= 0 && json_num(args, "stopped_ns") >= 0);
        CHECK(json_num(s, "dur") * 1e3 + 2 >= json_num(args, "time_to_stop_ns"));
    }
    CHECK(count_events(root, "stop-the-world", 'X', 65535) == 1);
    json_free(root);
    remove(trace_path);
    gc_fixture_teardown(f);
}

TEST(errors_leave_the_runtime_usable)
{
    fixture f = gc_fixture_setup();
    CHECK_EQ(ft_trace_stop(f.rt), FT_EINVAL); /* not recording */
    CHECK_EQ(ft_trace_start(NULL, "x"), FT_EINVAL);
    CHECK_EQ(ft_trace_start(f.rt, ""), FT_EINVAL);
    CHECK_EQ(ft_trace_start(f.rt, "/nonexistent-ftrt-dir/trace.json"), FT_EIO);
    CHECK_EQ(ft_trace_start(f.rt, path_for_test()), FT_OK);
    CHECK_EQ(ft_trace_start(f.rt, path_for_test()), FT_EBUSY);
    ft_stop_the_world(f.rt);
    CHECK_EQ(ft_trace_stop(f.rt), FT_EPERM);
    ft_start_the_world(f.rt);
    CHECK(ft_gc_collect(f.rt, 0) >= 0);
    CHECK_EQ(ft_trace_stop(f.rt), FT_OK);
    CHECK_EQ(ft_trace_stop(f.rt), FT_EINVAL);
    json *root = load_checked_trace();
    CHECK_EQ(count_events(root, "gc.collect", 'B', 0), 1);
    json_free(root);
    /* A second session writes only its own events. */
    CHECK_EQ(ft_trace_start(f.rt, path_for_test()), FT_OK);
    CHECK_EQ(ft_trace_stop(f.rt), FT_OK);
    root = load_checked_trace();
    CHECK_EQ(count_events(root, "gc.collect", 0, -1), 0);
    json_free(root);
    remove(trace_path);
    gc_fixture_teardown(f);
}

TEST(config_records_from_creation_to_free)
{
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.trace = path_for_test();
    cfg.name = "traced \"runtime\"";
    ft_runtime *rt = new_runtime(&cfg);
    ft_thread *t = ft_thread_start(rt);
    CHECK(t != NULL);
    CHECK_EQ(ft_trace_start(rt, path_for_test()), FT_EBUSY);
    ft_gc_collect(rt, 1);
    ft_thread_stop(t);
    CHECK_EQ(ft_runtime_free(rt), FT_OK);
    json *root = load_checked_trace();
    CHECK(count_events(root, "gc.collect", 'E', 0) >= 2); /* this one, and ft_runtime_free's */
    CHECK(count_events(root, "process_name", 'M', -1) == 1);
    CHECK(stop_with_reason(root, "gc shutdown") != NULL); /* ft_runtime_free's last work */
    json_free(root);
    remove(trace_path);

    cfg.trace = "/nonexistent-ftrt-dir/trace.json";
    CHECK(ft_runtime_new(&cfg) == NULL);
    CHECK_EQ(ft_last_error(), FT_EIO);
}

static _Atomic int threads_started;

static void *start_and_collect(void *arg)
{
    ft_thread *t = ft_thread_start(arg); /* may fail: out of memory */
    if (t) {
        atomic_fetch_add(&threads_started, 1);
        ft_gc_collect(arg, 0);
        ft_thread_stop(t);
    }
    return NULL;
}

/* Every allocation in turn fails: the start of a session, a traced collection, a thread that
 * starts while recording. Each failure leaves a runtime that works and a valid trace; under ASan,
 * nothing leaks. */
TEST(allocation_failures)
{
    fixture f = gc_fixture_setup();
    remove(path_for_test());
    ft_status s = FT_ENOMEM;
    int64_t n;
    for (n = 0; n < 64 && s != FT_OK; n++) {
        ft_debug_fail_allocation(f.rt, n);
        s = ft_trace_start(f.rt, path_for_test());
        ft_debug_fail_allocation(f.rt, -1);
        CHECK(s == FT_OK || s == FT_ENOMEM);
        if (s != FT_OK)
            CHECK(access(trace_path, F_OK) != 0); /* no file left behind */
    }
    CHECK_EQ(s, FT_OK);
    CHECK(n > 1); /* at least one failure was injected and survived */
    for (n = 0; n < 24; n++) {
        ft_weakref *wr = make_garbage_cycle(f.t);
        ft_debug_fail_allocation(f.rt, n);
        intptr_t found = ft_gc_collect(f.rt, 2);
        ft_debug_fail_allocation(f.rt, -1);
        CHECK(found == 2 || found == -1);
        ft_decref(&wr->ob_base);
    }
    for (n = 0; n < 8; n++) {
        pthread_t th;
        ft_detach(f.t);
        ft_debug_fail_allocation(f.rt, n);
        start_thread(&th, start_and_collect, f.rt);
        join_thread(th);
        ft_debug_fail_allocation(f.rt, -1);
        ft_attach(f.t);
    }
    CHECK(atomic_load(&threads_started) > 0);
    CHECK_EQ(ft_gc_collect(f.rt, 2) >= 0, 1);
    CHECK_EQ(ft_trace_stop(f.rt), FT_OK);
    json *root = load_checked_trace();
    CHECK(count_events(root, "gc.collect", 'E', 0) >= 24);
    json_free(root);
    remove(trace_path);
    gc_fixture_teardown(f);
}

/* With marking workers, each helper's share of a phase shows on the helper's own tid, named after
 * the phase, nested like every other span. */
TEST(marking_workers_record_their_phases)
{
    gc_node_reset();
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.gc_workers = 2;
    cfg.gc_objects_per_worker = 1; /* a helper even for this small heap */
    fixture f = {new_runtime(&cfg), NULL};
    f.t = ft_thread_start(f.rt);
    CHECK(f.t != NULL);
    ft_gc_disable(f.rt);
    gc_node *keep = gc_node_new(f.t, &gc_node_type);
    CHECK(keep != NULL);
    ft_gc_collect(f.rt, 2); /* makes the helper (it records from the next collection) */
    CHECK_EQ(ft_trace_start(f.rt, path_for_test()), FT_OK);
    collect_every_phase(f);
    CHECK_EQ(ft_trace_stop(f.rt), FT_OK);
    json *root = load_checked_trace();
    int helper = (int)FT_TRACE_TID_HELPERS + 1;
    const char *phases[] = {"gc.mark_alive", "gc.gather", "gc.subtract", "gc.mark"};
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++) {
        CHECK_EQ(count_events(root, phases[i], 'B', helper), 1);
        CHECK_EQ(count_events(root, phases[i], 'E', helper), 1);
        CHECK_EQ(count_events(root, phases[i], 'B', 0), 1);
    }
    CHECK(count_events(root, "thread_name", 'M', helper) == 1);
    json_free(root);
    remove(trace_path);
    ft_decref(&keep->ob);
    gc_fixture_teardown(f);
}

int main(void)
{
    RUN(records_every_kind_of_event);
    RUN(errors_leave_the_runtime_usable);
    RUN(config_records_from_creation_to_free);
    RUN(allocation_failures);
    RUN(marking_workers_record_their_phases);
    return harness_done();
}
