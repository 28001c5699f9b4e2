/* demo/graphs.c: the demo's second phase: graphs of managed objects built on one thread, handed to
 * others, shared further and dropped wherever their last reference happens to be.
 *
 * Worker threads build small trees of objects: branches, which hold two references (a GC type, like
 * any container, so they live on the GC heap), and leaves (a plain type with a freelist). A tree
 * sometimes reuses a leaf, so it is a DAG rather than a tree. Every branch stores a checksum of
 * what is below it. A worker posts each new graph to another worker's mailbox, a few atomic slots:
 * whoever fills a slot gives its reference away, whoever empties it takes that reference over. The
 * receiver checks the checksums, sometimes keeps a sub-object for a while (an incref, usually by a
 * thread that does not own the object) and later drops it or posts it on, sometimes wraps the graph
 * in a branch of its own and posts that on, and otherwise drops the graph. Builders build only when
 * some mailbox has room, so the receivers set the pace. The last reference to most objects is
 * therefore dropped on a thread that does not own them: that decref finds the shared count at zero
 * and queues the object to its owner, which frees it at its next ft_safepoint; or the owner has
 * merged the object already (it dropped its own references first) and the dropping thread frees it
 * there, a remote free onto the owner's page.
 *
 * The workers run in two generations. The first stops (ft_thread_stop) while graphs are still in
 * the mailboxes: its heaps are abandoned with those objects in them, the second generation's
 * threads adopt the heaps, receive the graphs and drop them. Whatever is in the mailboxes when the
 * second generation stops is dropped by the main thread, after which every object must have been
 * freed.
 *
 * An auditor stops the world every few milliseconds. With every worker at a safepoint,
 * ft_heap_visit over the GC and object heaps must find exactly as many objects as the demo counts
 * as live (made minus freed: a thread counts an object right after ft_alloc returns and in its
 * dealloc, with no safepoint between either count and the heap change it stands for), each with a
 * positive reference count and each branch's checksum matching its children's.
 *
 * At the end it prints what was built, handed over and freed where, the merges, the heap's use at
 * its peak and at the end, remote frees and abandoned and adopted heaps, and whether every object
 * was freed (in debug builds, also that ft_runtime_reftotal is 0). */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "demo.h"
#include "ftrt.h"

enum {
    GRAPH_WORKERS = 3,
    GENERATIONS = 2,
    MAILBOX_SLOTS = 4,
    MAX_BUILD_DEPTH = 4, /* a new graph has at most 15 branches and 16 leaves */
    MAX_HOPS = 3,        /* times a graph may be wrapped and posted on, which bounds its depth */
    KEPT_MAX = 8,        /* sub-objects a worker keeps for a while */
    GRAPH_STOP_INTERVAL_US = 2000,
    WORKER_THREADS = GENERATIONS * GRAPH_WORKERS,
    ALL_THREADS = WORKER_THREADS + 1, /* the workers, then the main thread's final clean-up */
};

/* ---- the object types ------------------------------------------------------------------------ */

typedef struct leaf {
    ft_object ob;
    uint64_t value;
    uint32_t maker; /* serial of the thread that made it */
} leaf;

typedef struct branch {
    ft_object ob;
    ft_object *left, *right; /* owned references; neither changes once the branch is made */
    uint64_t value;
    uint64_t checksum; /* mix(value, left's checksum, right's checksum) */
    uint32_t maker;
    uint32_t hops; /* how often the graph under it was wrapped on its way */
} branch;

static int branch_traverse(ft_object *self, ft_visit_fn visit, void *arg);
static void branch_dealloc(ft_object *self);
static void leaf_dealloc(ft_object *self);

static const ft_type branch_type = {
    .name = "demo.branch",
    .basic_size = sizeof(branch),
    .flags = FT_TYPE_GC,
    .traverse = branch_traverse,
    .dealloc = branch_dealloc,
};

static const ft_type leaf_type = {
    .name = "demo.leaf",
    .basic_size = sizeof(leaf),
    .freelist_max = 64,
    .dealloc = leaf_dealloc,
};

static bool is_branch(const ft_object *o)
{
    return o->ob_type == &branch_type;
}

static uint64_t mix(uint64_t value, uint64_t left, uint64_t right)
{
    uint64_t h = value ^ (left * UINT64_C(0x9E3779B97F4A7C15));
    h = (h ^ (h >> 31)) * UINT64_C(0xBF58476D1CE4E5B9);
    h ^= right * UINT64_C(0x94D049BB133111EB);
    return h ^ (h >> 29);
}

static uint64_t checksum_of(const ft_object *o)
{
    return is_branch(o) ? ((const branch *)o)->checksum : ((const leaf *)o)->value;
}

static bool branch_checksum_ok(const branch *b)
{
    return b->checksum == mix(b->value, checksum_of(b->left), checksum_of(b->right));
}

/* ---- threads and their counters -------------------------------------------------------------- */

/* One thread's counters. Only that thread writes them (a relaxed load and store: no atomic
 * read-modify-write needed); the auditor reads them with the world stopped, main after joining. */
typedef struct graph_counts {
    _Atomic(uint64_t) branches_made, leaves_made;
    _Atomic(uint64_t) freed;            /* deallocs run on this thread */
    _Atomic(uint64_t) freed_own;        /* ... of objects this thread made */
    _Atomic(uint64_t) freed_merged;     /* ... of objects that had been merged */
    _Atomic(uint64_t) freed_from_queue; /* ... taken from its merge queue (not what they held) */
    _Atomic(uint64_t) graphs_built, graph_objects; /* graph_objects: made by the builds */
    _Atomic(uint64_t) graphs_posted, graphs_unsent;  /* unsent: another sender filled the slot */
    _Atomic(uint64_t) deliveries, objects_checked, checksum_failures;
    _Atomic(uint64_t) wrapped, kept, foreign_increfs, forwarded;
    _Atomic(uint64_t) operations, yields;
} graph_counts;

typedef struct graph_thread {
    _Alignas(64) struct graph_world *world; /* each thread on its own cache lines */
    pthread_t os_thread;
    uint32_t serial;   /* unique in the run, stored in what the thread makes */
    size_t mailbox;    /* the mailbox it receives from (its place among the workers) */
    size_t generation; /* GENERATIONS for the janitor */
    uint64_t random_state;
    bool in_drain;             /* in ft_safepoint or ft_thread_stop, which drain the merge queue */
    unsigned dealloc_depth;    /* > 0 while a dealloc drops what it holds */
    ft_object *kept[KEPT_MAX]; /* a ring of references this thread holds for a while */
    size_t kept_first, kept_count;
    graph_counts counts;
} graph_thread;

typedef struct mailbox {
    _Alignas(64) ft_object *_Atomic slots[MAILBOX_SLOTS]; /* NULL: empty */
} mailbox;

/* What a walk of the heaps found with the world stopped, and how it compares with the counters. */
typedef struct census {
    ft_heap_kind kind; /* the heap being walked */
    /* what the walks found */
    uint64_t branches, leaves, strangers, misplaced, dead, bad_checksums;
    uint64_t queued, merged, abandoned;
    /* the comparison */
    uint64_t counted, found, visit_failures;
    bool stats_mismatch, progressed;
    ft_heap_stats stats;
} census;

typedef struct graph_auditor {
    struct graph_world *world;
    pthread_t os_thread;
    demo_latency_log latencies;
    uint64_t stops;
    /* violations */
    uint64_t count_mismatches, stats_mismatches, strangers, misplaced, dead, bad_checksums;
    uint64_t visit_failures, progress_violations;
    uint64_t first_mismatch_counted, first_mismatch_found; /* the first count mismatch, if any */
    /* what the census saw */
    uint64_t live_sum, live_max, queued_sum, queued_max, merged_sum, merged_max;
    uint64_t peak_page_bytes, peak_pages;
} graph_auditor;

typedef struct graph_world {
    ft_runtime *rt;
    mailbox mailboxes[GRAPH_WORKERS];
    /* Generation g's worker i is threads[g * GRAPH_WORKERS + i]; the last is the main thread,
     * which drops what is left at the end (the janitor). */
    graph_thread threads[ALL_THREADS];
    atomic_bool generation_over[GENERATIONS];
    /* Taken by main when a generation has stopped, before the next starts. */
    uint64_t in_transit[GENERATIONS]; /* graphs in the mailboxes */
    census between[GENERATIONS];
    graph_auditor auditor;
    ft_event done; /* the auditor's cue */
} graph_world;

/* The graph_thread of the calling OS thread, for the deallocs that run on it. */
static _Thread_local graph_thread *current;

static void add(_Atomic(uint64_t) *counter, uint64_t n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static uint64_t get(_Atomic(uint64_t) *counter)
{
    return atomic_load_explicit(counter, memory_order_relaxed);
}

/* ---- making and freeing ---------------------------------------------------------------------- */

static ft_object *make(graph_thread *g, ft_thread *t, const ft_type *type)
{
    /* A leaf's constructor writes every field, so it need not be zeroed first; a branch is a GC
     * object, whose fields must be valid from the start (ft_alloc_uninit refuses it). */
    ft_object *o = type == &leaf_type ? ft_alloc_uninit(t, type) : ft_alloc(t, type);
    if (o == NULL) {
        fprintf(stderr, "ftrt_demo: allocation: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    /* Counted before the next safepoint, so a stopped world never sees the heap and the count
     * disagree. */
    add(type == &branch_type ? &g->counts.branches_made : &g->counts.leaves_made, 1);
    return o;
}

static ft_object *new_leaf(graph_thread *g, ft_thread *t)
{
    leaf *l = (leaf *)make(g, t, &leaf_type);
    l->value = demo_random(&g->random_state);
    l->maker = g->serial;
    return &l->ob;
}

/* A branch that takes over the caller's references to left and right. */
static ft_object *new_branch(graph_thread *g, ft_thread *t, ft_object *left, ft_object *right,
                             uint32_t hops)
{
    branch *b = (branch *)make(g, t, &branch_type);
    b->left = left;
    b->right = right;
    b->value = demo_random(&g->random_state);
    b->checksum = mix(b->value, checksum_of(left), checksum_of(right));
    b->maker = g->serial;
    b->hops = hops;
    return &b->ob;
}

static void note_dealloc(ft_object *o, uint32_t maker)
{
    graph_thread *g = current;
    if (g == NULL) {
        fprintf(stderr, "ftrt_demo: an object was freed on a thread the demo did not expect\n");
        abort();
    }
    add(&g->counts.freed, 1);
    if (maker == g->serial)
        add(&g->counts.freed_own, 1);
    /* The count is zero now; the state bits say how it got there: DEFAULT if the owner dropped its
     * last reference with nobody else holding any, MERGED otherwise. */
    intptr_t shared = atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed);
    if ((shared & FT_SHARED_FLAGS) == FT_SHARED_MERGED)
        add(&g->counts.freed_merged, 1);
    /* A safepoint frees objects only from the merge queue; what those drop is a cascade. */
    if (g->in_drain && g->dealloc_depth == 0)
        add(&g->counts.freed_from_queue, 1);
}

static int branch_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    branch *b = (branch *)self;
    int result = visit(b->left, arg);
    return result ? result : visit(b->right, arg);
}

static void branch_dealloc(ft_object *self)
{
    branch *b = (branch *)self;
    note_dealloc(self, b->maker);
    current->dealloc_depth++;
    ft_decref(b->left);
    ft_decref(b->right);
    current->dealloc_depth--;
}

static void leaf_dealloc(ft_object *self)
{
    note_dealloc(self, ((leaf *)self)->maker);
}

/* A random graph of the given depth: a tree of branches whose leaves are sometimes shared. */
static ft_object *build(graph_thread *g, ft_thread *t, unsigned depth, ft_object **last_leaf)
{
    if (depth == 0) {
        if (*last_leaf && demo_random(&g->random_state) % 4 == 0) {
            ft_incref(*last_leaf); /* the same leaf under two branches */
            return *last_leaf;
        }
        return *last_leaf = new_leaf(g, t);
    }
    ft_object *left = build(g, t, depth - 1, last_leaf);
    ft_object *right = build(g, t, depth - 1, last_leaf);
    return new_branch(g, t, left, right, 0);
}

/* Recompute every checksum from the leaves up; false if any branch's stored one differs. */
static bool verify(const ft_object *o, uint64_t *visited)
{
    (*visited)++;
    if (!is_branch(o))
        return true;
    const branch *b = (const branch *)o;
    return verify(b->left, visited) && verify(b->right, visited) && branch_checksum_ok(b);
}

/* ---- mailboxes and the kept ring ------------------------------------------------------------- */

/* Give o (and the caller's reference) to mailbox `to`; false if it is full. */
static bool post(graph_world *w, size_t to, ft_object *o)
{
    for (size_t i = 0; i < MAILBOX_SLOTS; i++) {
        ft_object *empty = NULL;
        if (atomic_compare_exchange_strong_explicit(&w->mailboxes[to].slots[i], &empty, o,
                                                    memory_order_release, memory_order_relaxed))
            return true;
    }
    return false;
}

static size_t another_mailbox(const graph_thread *g, uint64_t r)
{
    return (g->mailbox + 1 + r % (GRAPH_WORKERS - 1)) % GRAPH_WORKERS;
}

static bool has_room(graph_world *w, size_t m)
{
    for (size_t i = 0; i < MAILBOX_SLOTS; i++)
        if (atomic_load_explicit(&w->mailboxes[m].slots[i], memory_order_relaxed) == NULL)
            return true;
    return false;
}

/* Another worker's mailbox with an empty slot (a hint: it may fill up before we post), starting
 * with a random one; or GRAPH_WORKERS if none has. */
static size_t mailbox_with_room(graph_thread *g, uint64_t r)
{
    for (size_t k = 0; k < GRAPH_WORKERS - 1; k++) {
        size_t m = another_mailbox(g, r + k);
        if (has_room(g->world, m))
            return m;
    }
    return GRAPH_WORKERS;
}

static ft_object *take_oldest_kept(graph_thread *g)
{
    ft_object *o = g->kept[g->kept_first];
    g->kept_first = (g->kept_first + 1) % KEPT_MAX;
    g->kept_count--;
    return o;
}

static void keep(graph_thread *g, ft_object *o)
{
    if (g->kept_count == KEPT_MAX)
        ft_decref(take_oldest_kept(g));
    g->kept[(g->kept_first + g->kept_count) % KEPT_MAX] = o;
    g->kept_count++;
    add(&g->counts.kept, 1);
}

/* Somewhere in o's graph (o itself if r says so): a random walk down. */
static ft_object *pick_sub_object(ft_object *o, uint64_t r)
{
    while (is_branch(o) && (r & 3) != 0) {
        branch *b = (branch *)o;
        o = (r & 4) ? b->left : b->right;
        r >>= 3;
    }
    return o;
}

/* ---- the workers ----------------------------------------------------------------------------- */

/* Safepoints (and a thread's stop) are where queued objects get merged and freed; the flag lets
 * note_dealloc tell those frees from the others. */
static void safepoint(graph_thread *g, ft_thread *t)
{
    g->in_drain = true;
    ft_safepoint(t);
    g->in_drain = false;
}

static void stop_thread(graph_thread *g, ft_thread *t)
{
    g->in_drain = true;
    ft_thread_stop(t);
    g->in_drain = false;
}

static void build_and_post(graph_thread *g, ft_thread *t, uint64_t r, size_t to)
{
    ft_object *last_leaf = NULL;
    uint64_t made_before = get(&g->counts.branches_made) + get(&g->counts.leaves_made);
    ft_object *graph = build(g, t, 1 + (unsigned)(r % MAX_BUILD_DEPTH), &last_leaf);
    add(&g->counts.graphs_built, 1);
    add(&g->counts.graph_objects,
        get(&g->counts.branches_made) + get(&g->counts.leaves_made) - made_before);
    if (post(g->world, to, graph)) {
        add(&g->counts.graphs_posted, 1);
    } else {
        ft_decref(graph); /* all ours, never shared: freed here without one atomic operation */
        add(&g->counts.graphs_unsent, 1); /* another sender took the last slot */
    }
}

/* o arrived in g's mailbox, with a reference that is now g's. */
static void take_delivery(graph_thread *g, ft_thread *t, ft_object *o)
{
    uint64_t r = demo_random(&g->random_state);
    uint64_t visited = 0;
    add(&g->counts.deliveries, 1);
    if (!verify(o, &visited))
        add(&g->counts.checksum_failures, 1);
    add(&g->counts.objects_checked, visited);

    if (r % 4 == 0) {
        /* Keep part of it: another reference, usually to an object another thread owns. */
        ft_object *part = pick_sub_object(o, r >> 8);
        if (!ft_object_is_owned(part))
            add(&g->counts.foreign_increfs, 1);
        ft_incref(part);
        keep(g, part);
    }
    uint32_t hops = is_branch(o) ? ((branch *)o)->hops : 0;
    if (hops < MAX_HOPS && (r >> 4) % 2 == 0) {
        /* Wrap it in a branch of ours, beside a new leaf or something we kept, and post that on. */
        ft_object *beside =
            g->kept_count > 0 && (r >> 5) % 2 ? take_oldest_kept(g) : new_leaf(g, t);
        ft_object *wrapped = new_branch(g, t, o, beside, hops + 1);
        add(&g->counts.wrapped, 1);
        if (!post(g->world, another_mailbox(g, r >> 32), wrapped))
            ft_decref(wrapped);
        return;
    }
    ft_decref(o);
}

static void let_go_of_oldest_kept(graph_thread *g, uint64_t r)
{
    ft_object *o = take_oldest_kept(g);
    if (r % 2 == 0 && post(g->world, another_mailbox(g, r >> 1), o))
        add(&g->counts.forwarded, 1);
    else
        ft_decref(o);
}

static void *graph_worker_main(void *arg)
{
    graph_thread *g = arg;
    graph_world *w = g->world;
    current = g;
    ft_thread *t = ft_thread_start(w->rt); /* adopts a stopped thread's heaps if there is one */
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    mailbox *inbox = &w->mailboxes[g->mailbox];
    while (!atomic_load_explicit(&w->generation_over[g->generation], memory_order_relaxed)) {
        uint64_t r = demo_random(&g->random_state);
        /* Build only what someone can take: receivers set the pace. */
        size_t to = mailbox_with_room(g, r >> 8);
        bool busy = to < GRAPH_WORKERS;
        if (busy)
            build_and_post(g, t, r, to);
        for (size_t i = 0; i < MAILBOX_SLOTS; i++) {
            ft_object *o = atomic_exchange_explicit(&inbox->slots[i], NULL, memory_order_acquire);
            if (o) {
                take_delivery(g, t, o);
                busy = true;
            }
        }
        if (g->kept_count > 0 && (r >> 40) % 4 == 0)
            let_go_of_oldest_kept(g, r >> 42);
        add(&g->counts.operations, 1);
        if (!busy) {
            /* The others are behind (on fewer CPUs than threads, preempted): give them the CPU,
             * detached, so that a stop need not wait for this thread to be scheduled again. */
            ft_detach(t);
            sched_yield();
            ft_attach(t);
            add(&g->counts.yields, 1);
        }
        safepoint(g, t);
    }
    /* What is still in the mailboxes stays there, for the next generation. */
    while (g->kept_count > 0)
        ft_decref(take_oldest_kept(g));
    stop_thread(g, t);
    current = NULL;
    return NULL;
}

/* The main thread, after the last generation: drop what is left in the mailboxes. Their makers
 * have stopped, so a decref that would queue an object finds no owner and merges it itself. */
static void drop_leftovers(graph_world *w)
{
    graph_thread *g = &w->threads[WORKER_THREADS];
    current = g;
    ft_thread *t = ft_thread_start(w->rt);
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    for (size_t m = 0; m < GRAPH_WORKERS; m++)
        for (size_t i = 0; i < MAILBOX_SLOTS; i++) {
            ft_object *o =
                atomic_exchange_explicit(&w->mailboxes[m].slots[i], NULL, memory_order_acquire);
            if (o == NULL)
                continue;
            uint64_t visited = 0;
            add(&g->counts.deliveries, 1);
            if (!verify(o, &visited))
                add(&g->counts.checksum_failures, 1);
            add(&g->counts.objects_checked, visited);
            ft_decref(o);
        }
    stop_thread(g, t);
    current = NULL;
}

/* ---- the auditor ----------------------------------------------------------------------------- */

static uint64_t counted_live(graph_world *w)
{
    uint64_t made = 0, freed = 0;
    for (size_t i = 0; i < ALL_THREADS; i++) {
        graph_counts *c = &w->threads[i].counts;
        made += get(&c->branches_made) + get(&c->leaves_made);
        freed += get(&c->freed);
    }
    return made - freed;
}

static uint64_t total_operations(graph_world *w)
{
    uint64_t total = 0;
    for (size_t i = 0; i < ALL_THREADS; i++)
        total += get(&w->threads[i].counts.operations);
    return total;
}

static bool census_visit(void *block, size_t size, void *arg)
{
    (void)size;
    census *c = arg;
    ft_object *o = block;
    if (o->ob_type == &branch_type) {
        c->branches++;
        if (c->kind != FT_HEAP_GC)
            c->misplaced++;
        if (!branch_checksum_ok((const branch *)o))
            c->bad_checksums++;
    } else if (o->ob_type == &leaf_type) {
        c->leaves++;
        if (c->kind != FT_HEAP_OBJECT)
            c->misplaced++;
    } else {
        c->strangers++;
        return true;
    }
    if (ft_refcount(o) < 1)
        c->dead++;
    intptr_t state =
        atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed) & FT_SHARED_FLAGS;
    if (state == FT_SHARED_QUEUED)
        c->queued++;
    else if (state == FT_SHARED_MERGED)
        c->merged++;
    if (ft_heap_block_owner(o) == NULL)
        c->abandoned++;
    return true;
}

/* Count the live objects, with the world stopped by the caller, and compare with the counters. */
static void take_census(graph_world *w, census *c)
{
    uint64_t operations_before = total_operations(w);
    c->counted = counted_live(w);
    c->kind = FT_HEAP_GC;
    if (ft_heap_visit(w->rt, FT_HEAP_GC, census_visit, c) != FT_OK)
        c->visit_failures++;
    c->kind = FT_HEAP_OBJECT;
    if (ft_heap_visit(w->rt, FT_HEAP_OBJECT, census_visit, c) != FT_OK)
        c->visit_failures++;
    ft_heap_get_stats(w->rt, &c->stats); /* the world is stopped by us: no second stop */
    c->found = c->branches + c->leaves;
    c->stats_mismatch = c->stats.live_blocks != c->found + c->strangers;
    c->progressed = total_operations(w) != operations_before;
}

static bool census_ok(const census *c)
{
    return c->found == c->counted && !c->stats_mismatch && c->strangers == 0 && c->misplaced == 0 &&
           c->dead == 0 && c->bad_checksums == 0 && c->visit_failures == 0 && !c->progressed;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* The auditor's part, at each of its stops: keep the violations and the figures. */
static void audit(graph_world *w, graph_auditor *a)
{
    census c = {0};
    take_census(w, &c);
    if (c.found != c.counted) {
        if (a->count_mismatches == 0) {
            a->first_mismatch_counted = c.counted;
            a->first_mismatch_found = c.found;
        }
        a->count_mismatches++;
    }
    a->stats_mismatches += c.stats_mismatch;
    a->strangers += c.strangers;
    a->misplaced += c.misplaced;
    a->dead += c.dead;
    a->bad_checksums += c.bad_checksums;
    a->visit_failures += c.visit_failures;
    a->progress_violations += c.progressed;

    a->live_sum += c.found;
    a->live_max = max_u64(a->live_max, c.found);
    a->queued_sum += c.queued;
    a->queued_max = max_u64(a->queued_max, c.queued);
    a->merged_sum += c.merged;
    a->merged_max = max_u64(a->merged_max, c.merged);
    if (c.stats.page_bytes > a->peak_page_bytes) {
        a->peak_page_bytes = c.stats.page_bytes;
        a->peak_pages = c.stats.pages;
    }
}

static void *graph_auditor_main(void *arg)
{
    graph_auditor *a = arg;
    graph_world *w = a->world;
    ft_thread *t = ft_thread_start(w->rt);
    if (t == NULL) {
        fprintf(stderr, "ftrt_demo: ft_thread_start: %s\n", ft_status_str(ft_last_error()));
        exit(2);
    }
    while (!ft_event_wait_timed(&w->done, GRAPH_STOP_INTERVAL_US * FT_NS_PER_US, FT_LOCK_DETACH)) {
        uint64_t start = demo_now_ns();
        ft_stop_the_world(w->rt);
        uint64_t stopped = demo_now_ns();
        audit(w, a);
        ft_start_the_world(w->rt);
        a->stops++;
        demo_latency_record(&a->latencies, stopped - start);
    }
    ft_thread_stop(t);
    return NULL;
}

/* ---- the phase ------------------------------------------------------------------------------- */

static uint64_t sum_counter(graph_world *w, size_t offset)
{
    uint64_t total = 0;
    for (size_t i = 0; i < ALL_THREADS; i++)
        total += get((_Atomic(uint64_t) *)((char *)&w->threads[i].counts + offset));
    return total;
}

#define SUM(w, field) sum_counter((w), offsetof(graph_counts, field))

static double mean(uint64_t sum, uint64_t n)
{
    return n ? (double)sum / (double)n : 0.0;
}

static int graphs_report(graph_world *w, uint64_t elapsed_ns, long cpus)
{
    graph_auditor *a = &w->auditor;
    double seconds = (double)elapsed_ns / 1e9;
    uint64_t branches = SUM(w, branches_made), leaves = SUM(w, leaves_made);
    uint64_t made = branches + leaves, freed = SUM(w, freed);
    uint64_t freed_own = SUM(w, freed_own), freed_merged = SUM(w, freed_merged);
    uint64_t freed_from_queue = SUM(w, freed_from_queue);
    uint64_t built = SUM(w, graphs_built), checksum_failures = SUM(w, checksum_failures);

    printf("graphs         %" PRIu64 " built (%.0f/s, %.1f objects each on average); %" PRIu64
           " posted to\n               another worker, %" PRIu64
           " dropped by their builder (a mailbox filled up);\n               %" PRIu64
           " rounds with nothing to do yielded the CPU, detached\n",
           built, (double)built / seconds, mean(SUM(w, graph_objects), built),
           SUM(w, graphs_posted), SUM(w, graphs_unsent), SUM(w, yields));
    printf("deliveries     %" PRIu64 " taken from mailboxes, %" PRIu64
           " objects checked, %" PRIu64 " checksum failures;\n               %" PRIu64
           " wrapped in the receiver's own branch and posted on; %" PRIu64
           " parts kept a while\n               (%" PRIu64
           " increfs by a thread that did not own the part), %" PRIu64 " of them posted on\n",
           SUM(w, deliveries), SUM(w, objects_checked), checksum_failures, SUM(w, wrapped),
           SUM(w, kept), SUM(w, foreign_increfs), SUM(w, forwarded));
    /* Between generations main took a census itself: every live object must be in an abandoned
     * heap then, since every thread that made one has stopped. */
    bool between_ok = true;
    for (size_t gen = 0; gen < GENERATIONS; gen++) {
        const census *c = &w->between[gen];
        between_ok = between_ok && census_ok(c) && c->abandoned == c->found;
        printf("%safter generation %zu: %" PRIu64 " graphs in mailboxes holding %" PRIu64
               " objects, %" PRIu64 " in abandoned\n               heaps (their makers had "
               "stopped); ",
               gen == 0 ? "generations    " : "               ", gen + 1, w->in_transit[gen],
               c->found, c->abandoned);
        if (gen + 1 < GENERATIONS)
            printf("generation %zu adopted the heaps, took the graphs\n", gen + 2);
        else
            printf("the main thread dropped the graphs\n");
    }

    printf("objects        %" PRIu64 " made (%" PRIu64 " branches, %" PRIu64 " leaves), %" PRIu64
           " freed\n",
           made, branches, leaves, freed);
    printf("  freed on     the thread that made them: %" PRIu64 "; another thread: %" PRIu64 "\n",
           freed_own, freed - freed_own);
    printf("  how freed    %" PRIu64 " by their owner, never merged: it dropped the last reference "
           "while no\n               other thread held one (plain stores, no atomic operation)\n",
           freed - freed_merged);
    printf("               %" PRIu64 " at a safepoint, from a merge queue: another thread dropped "
           "what might\n               have been the last reference and queued the object to its "
           "owner, which\n               merged and freed it (or the queuing thread did, if the "
           "owner had stopped)\n",
           freed_from_queue);
    printf("               %" PRIu64 " by whichever thread dropped the last reference, after a "
           "merge (another\n               thread still held a reference when the owner let go, "
           "or the owner had\n               stopped)\n",
           freed_merged - freed_from_queue);

    ft_heap_stats end;
    ft_heap_get_stats(w->rt, &end); /* no thread is started: it stops an empty world */
    char peak[32], at_end[32];
    demo_format_bytes(peak, sizeof peak, a->peak_page_bytes);
    demo_format_bytes(at_end, sizeof at_end, end.page_bytes);
    printf("heap           peak %s in %" PRIu64 " pages (seen at a stop); at the end %s in %" PRIu64
           " pages\n               and %" PRIu64 " empty pages kept for reuse; %" PRIu64
           " blocks freed by a thread other\n               than their page's owner; %" PRIu64
           " heaps of stopped threads adopted by new ones, %" PRIu64 "\n               still "
           "abandoned (empty: their pages wait for a thread to adopt them)\n",
           peak, a->peak_pages, at_end, end.pages, end.pool_pages, end.remote_frees,
           end.adopted_heaps, end.abandoned_heaps);

    printf("stops          %" PRIu64 " by the auditor, each taking a census\n", a->stops);
    demo_latency_print_and_free(&a->latencies);
    printf("  census       live objects per stop, mean (max): %.0f (%" PRIu64
           "); of them waiting in a\n               merge queue %.1f (%" PRIu64
           "), merged %.1f (%" PRIu64 ")\n",
           mean(a->live_sum, a->stops), a->live_max, mean(a->queued_sum, a->stops), a->queued_max,
           mean(a->merged_sum, a->stops), a->merged_max);
    if (cpus > 0 && GRAPH_WORKERS + 1 > cpus)
        printf("note           %d threads on %ld CPUs: a stop waits until a preempted worker runs "
               "again\n",
               GRAPH_WORKERS + 1, cpus);

    uint64_t violations = a->count_mismatches + a->stats_mismatches + a->strangers + a->misplaced +
                          a->dead + a->bad_checksums + a->visit_failures + a->progress_violations +
                          !between_ok;
    printf("\n");
    if (violations > 0) {
        printf("census matched at every stop: NO\n"
               "  count mismatches %" PRIu64 " (first: counted %" PRIu64 ", found %" PRIu64
               "), heap stats mismatches %" PRIu64 ",\n  unknown objects %" PRIu64
               ", on the wrong heap %" PRIu64 ", count below 1 %" PRIu64
               ", bad checksums %" PRIu64 ",\n  visits refused %" PRIu64
               ", a worker progressed during %" PRIu64 " stops; between generations %s\n",
               a->count_mismatches, a->first_mismatch_counted, a->first_mismatch_found,
               a->stats_mismatches, a->strangers, a->misplaced, a->dead, a->bad_checksums,
               a->visit_failures, a->progress_violations, between_ok ? "right" : "WRONG");
    } else {
        printf("census matched at every stop: yes (ft_heap_visit found exactly the objects counted "
               "live,\n               each with a count of at least 1 and a correct checksum)%s\n",
               a->stops == 0 ? ", but the run was too short for any stop" : "");
    }

    bool reftotal_ok = true;
#ifdef FTRT_DEBUG
    int64_t reftotal = ft_runtime_reftotal(w->rt);
    reftotal_ok = reftotal == 0;
    printf("reference total %" PRId64 " (ft_runtime_reftotal, debug build)\n", reftotal);
#endif
    bool all_freed = made == freed && end.live_blocks == 0 && reftotal_ok;
    if (!all_freed)
        printf("every object freed: NO (made %" PRIu64 ", freed %" PRIu64 ", %" PRIu64
               " blocks still allocated)\n",
               made, freed, end.live_blocks);
    else
        printf("every object freed: yes (%" PRIu64 " made, %" PRIu64
               " freed, no block left allocated)\n",
               made, freed);
    return violations == 0 && all_freed && checksum_failures == 0 ? 0 : 1;
}

static void start_thread(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    if (pthread_create(thread, NULL, fn, arg) != 0) {
        fprintf(stderr, "ftrt_demo: pthread_create failed\n");
        exit(2);
    }
}

static uint64_t graphs_in_mailboxes(graph_world *w)
{
    uint64_t n = 0;
    for (size_t m = 0; m < GRAPH_WORKERS; m++)
        for (size_t i = 0; i < MAILBOX_SLOTS; i++)
            n += atomic_load_explicit(&w->mailboxes[m].slots[i], memory_order_relaxed) != NULL;
    return n;
}

int demo_graphs_phase(long run_ms, long cpus)
{
    static graph_world w; /* zeroed: empty mailboxes, unset flags and event, zero counters */
    ft_config cfg;
    ft_config_init(&cfg);
    cfg.name = "demo-graphs";
    w.rt = ft_runtime_new(&cfg);
    if (w.rt == NULL) {
        fprintf(stderr, "ftrt_demo: ft_runtime_new: %s\n", ft_status_str(ft_last_error()));
        return 2;
    }

    printf("== phase 2: object graphs (biased reference counting, merge queues, the page heap) "
           "==\n\n%d generations of %d workers, %ld ms in all, build graphs of objects, hand them "
           "to each\nother through lock-free mailboxes, keep parts of them a while and drop them. "
           "An object\nbelongs to the thread that made it, its owner, which counts its own "
           "references to it\nwith plain stores; other threads count theirs in a second, atomic "
           "count. When the owner\nlets go while others still hold references, or another thread "
           "drops what may be the\nlast one (the object then waits in its owner's merge queue "
           "until the owner's next\nsafepoint), the two counts are merged into the atomic one. "
           "An auditor stops the world\nevery %d ms and counts the live objects with "
           "ft_heap_visit.\n\n",
           GENERATIONS, GRAPH_WORKERS, run_ms, GRAPH_STOP_INTERVAL_US / 1000);
    fflush(stdout);

    uint64_t start = demo_now_ns();
    w.auditor.world = &w;
    start_thread(&w.auditor.os_thread, graph_auditor_main, &w.auditor);
    uint32_t serial = 1;
    for (size_t gen = 0; gen < GENERATIONS; gen++) {
        for (size_t i = 0; i < GRAPH_WORKERS; i++) {
            graph_thread *g = &w.threads[gen * GRAPH_WORKERS + i];
            g->world = &w;
            g->serial = serial++;
            g->mailbox = i;
            g->generation = gen;
            g->random_state = UINT64_C(0xD1B54A32D192ED03) * g->serial;
            start_thread(&g->os_thread, graph_worker_main, g);
        }
        long share = run_ms / GENERATIONS;
        demo_sleep_ms(gen + 1 < GENERATIONS ? share : run_ms - share * (GENERATIONS - 1));
        atomic_store_explicit(&w.generation_over[gen], true, memory_order_relaxed);
        for (size_t i = 0; i < GRAPH_WORKERS; i++)
            pthread_join(w.threads[gen * GRAPH_WORKERS + i].os_thread, NULL);
        w.in_transit[gen] = graphs_in_mailboxes(&w);
        /* No worker runs: every live object is in a heap its stopped maker abandoned. */
        ft_stop_the_world(w.rt);
        take_census(&w, &w.between[gen]);
        ft_start_the_world(w.rt);
    }
    ft_event_notify(&w.done);
    pthread_join(w.auditor.os_thread, NULL);
    uint64_t elapsed = demo_now_ns() - start;

    graph_thread *janitor = &w.threads[WORKER_THREADS];
    janitor->world = &w;
    janitor->serial = serial;
    janitor->generation = GENERATIONS;
    drop_leftovers(&w);

    int status = graphs_report(&w, elapsed, cpus);
    ft_status freed = ft_runtime_free(w.rt);
    if (freed != FT_OK) {
        fprintf(stderr, "ftrt_demo: ft_runtime_free: %s\n", ft_status_str(freed));
        return 2;
    }
    return status;
}
