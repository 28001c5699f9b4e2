/* delayed.c: delayed free and delayed decref, and QSBR's hook into the page heap.
 *
 * Each thread queues items {pointer, goal} in chunks of CHUNK_ITEMS; bit 0 of the pointer marks "drop
 * a reference to this object" rather than "free this block". Goals never decrease along a queue (they
 * come from the same sequence), so processing polls from the front and stops at the first goal not
 * reached.
 *
 * Choosing a goal. A goal must be read after the caller's unlink is visible to every reader, which
 * takes a full fence (see ft_qsbr_next) unless an advance's read-modify-write does it. So an item is
 * queued unsealed (goal 0: sequences are odd, never 0) and gets its goal later, in a batch: when the
 * thread advances (ft_qsbr_advance, by this layer or by the caller), every unsealed item takes the
 * advance's goal; when the thread processes or hands over its queue, one fence and ft_qsbr_next (no
 * shared write, reached after the next advance by anyone) seal them all. A goal taken later than the
 * unlink is only ever later, so this is safe, and goals still never decrease along the queue. An
 * unsealed item is never due. To bound what is held back, the thread counts what it queued since its
 * last advance; past ADVANCE_ITEMS items or ADVANCE_BYTES bytes it advances. Every advance by a
 * thread whose queue holds items (this layer's or the caller's) marks its queue due
 * (FT_PENDING_DELAYED), so its next safepoint processes it. A block larger than ADVANCE_BYTES
 * advances at once.
 *
 * Processing bumps the read index before it frees an item, because freeing may run a destructor that
 * queues more items, or processes the queue again (re-entry).
 *
 * The runtime's queue. A thread that stops processes what it can and hands the rest to the runtime's
 * queue, sealed by an advance of its own, so that every goal there is reached by quiescent points
 * alone (nobody need advance again); its last merges may run destructors that queue more, which it
 * hands over too. Whoever puts items into the runtime's queue marks every started thread's queue due,
 * and a thread that starts while it holds items marks its own. A thread processes the runtime's queue
 * after its own: it takes the whole queue under the queue's lock (if it can without waiting),
 * processes it with no lock held, since a destructor may block or stop the world, and puts back what
 * is not due, marking every thread again. So the threads poll at their safepoints until the last
 * quiescent point the goals need has passed, one round of safepoints, and whichever thread passes it
 * runs them. When no thread is left, ft_runtime_free runs them (ft_delayed_drain).
 *
 * With the world stopped, the thread that stopped it frees every queued block at once (every other
 * thread is quiescent); references stay queued, since a destructor must not run while the world is
 * stopped (ft_delayed_process_stopped can drop them as merges and hand the dead back instead).
 *
 * The page heap asks this layer when an empty page may take another layout: a page's goal is
 * ft_qsbr_next, or an advance once more than PAGE_ADVANCE_BYTES of pages are pending. */
#include <stdlib.h>

#include "internal/internal.h"

#define CHUNK_ITEMS 254
#define ADVANCE_ITEMS 127
#define ADVANCE_BYTES ((uint64_t)1 << 20)
#define PAGE_ADVANCE_BYTES ((uint64_t)80 << 10)
#define DECREF_TAG ((uintptr_t)1)

typedef struct ft_delayed_item {
    uintptr_t ptr; /* a block, or an object | DECREF_TAG */
    uint64_t goal;
    uint64_t size;
} ft_delayed_item;

typedef struct ft_delayed_chunk {
    struct ft_delayed_chunk *next;
    uint32_t rd, wr; /* items [rd, wr) are pending */
    ft_delayed_item items[CHUNK_ITEMS];
} ft_delayed_chunk;

/* Whether the queue head..tail may hold items: emptied chunks are freed from the front, all but
 * the last (a stop's compaction may empty one further on: then this says yes, which costs one
 * pass). */
static bool holds_items(const ft_delayed_chunk *head, const ft_delayed_chunk *tail)
{
    return head && (head != tail || head->rd != head->wr);
}

/* ---- goals ----------------------------------------------------------------------------------- */

#define UNSEALED 0

/* Give every unsealed item of t's queue the goal g, which is at least every goal before them. */
void ft_delayed_seal(ft_thread *t, uint64_t g)
{
    for (ft_delayed_chunk *c = t->delayed.unsealed; c; c = c->next)
        for (uint32_t i = c == t->delayed.unsealed ? t->delayed.unsealed_at : c->rd; i < c->wr; i++)
            c->items[i].goal = g;
    t->delayed.unsealed = NULL;
}

void ft_delayed_advanced(ft_thread *t, uint64_t g)
{
    ft_delayed_seal(t, g);
    if (holds_items(t->delayed.head, t->delayed.tail))
        atomic_fetch_or_explicit(&t->head.pending, FT_PENDING_DELAYED, memory_order_relaxed);
}

static void seal_with_next(ft_thread *t)
{
    if (t->delayed.unsealed)
        ft_delayed_seal(t, ft_qsbr_next(t->rt));
}

/* The goal for an item of this size: UNSEALED, or an advance's (sealing the earlier items too). */
static uint64_t goal_for(ft_thread *t, uint64_t size, bool *due)
{
    ft_runtime *rt = t->rt;
    t->delayed.count++;
    t->delayed.memory += size;
    if (size > ADVANCE_BYTES || t->delayed.count > ADVANCE_ITEMS ||
        t->delayed.memory > ADVANCE_BYTES) {
        t->delayed.count = 0;
        t->delayed.memory = 0;
        *due = true;
        uint64_t g = ft_qsbr_advance(rt);
        ft_delayed_seal(t, g); /* done already if t is the caller's current thread */
        return g;
    }
    *due = false;
    return UNSEALED;
}

/* ---- freeing one item -------------------------------------------------------------------------- */

static void free_item(ft_thread *t, uintptr_t ptr)
{
    if (ptr & DECREF_TAG)
        ft_decref((ft_object *)(ptr & ~DECREF_TAG));
    else
        ft_heap_free_block(t, (void *)ptr);
}

/* Drop a queued reference inside a stop: ft_decref without the destructor. The object is merged
 * (no owner is counting now) and, if that was its last reference, handed back on dead. */
static void drop_stopped(ft_object *o, ft_dead_list *dead)
{
    if (ft_object_is_immortal(o))
        return; /* made immortal since it was queued: ft_decref would not touch it either */
    if (ft_object_merge(o, -1) == 0) /* counts the dropped reference in the debug total */
        ft_dead_list_push(dead, o);
}

/* The world could not wait (out of memory for the queue): stop it, so that every other thread is
 * quiescent, and free now; a reference is dropped after the restart, since its destructor must not
 * run inside a stop. Inside a stop the caller holds already (enqueue frees blocks itself then), the
 * reference is dropped as a merge, and the caller's restart deallocates the object if it died. */
static void free_now_stopped(ft_thread *t, uintptr_t ptr)
{
    ft_runtime *rt = t->rt;
    ft_object *o = (ft_object *)(ptr & ~DECREF_TAG);
    if (ft_stw_held_by_caller(rt)) {
        FT_ASSERT(ptr & DECREF_TAG);
        drop_stopped(o, &rt->stw.dead);
        return;
    }
    ft_stw_stop(rt, "delayed free out of memory");
    if (!(ptr & DECREF_TAG))
        ft_heap_free_block(t, (void *)ptr);
    ft_start_the_world(rt);
    if (ptr & DECREF_TAG)
        ft_decref(o);
}

/* ---- queues ---------------------------------------------------------------------------------- */

static bool push(ft_thread *t, uintptr_t ptr, uint64_t goal, uint64_t size)
{
    ft_delayed_chunk *c = t->delayed.tail;
    if (!c || c->wr == CHUNK_ITEMS) {
        ft_delayed_chunk *n = ft_inject_failure(t->rt) ? NULL : malloc(sizeof *n);
        if (!n)
            return false;
        n->next = NULL;
        n->rd = n->wr = 0;
        if (c)
            c->next = n;
        else
            t->delayed.head = n;
        t->delayed.tail = n;
        c = n;
    }
    c->items[c->wr++] = (ft_delayed_item){ptr, goal, size};
    return true;
}

static void enqueue(ft_thread *t, uintptr_t ptr, uint64_t size)
{
    if (ft_stw_held_by_caller(t->rt) && !(ptr & DECREF_TAG)) {
        ft_heap_free_block(t, (void *)ptr); /* every other thread is quiescent */
        return;
    }
    bool due;
    uint64_t goal = goal_for(t, size, &due);
    if (!push(t, ptr, goal, size)) {
        free_now_stopped(t, ptr);
        return;
    }
    if (goal == UNSEALED && !t->delayed.unsealed) {
        t->delayed.unsealed = t->delayed.tail;
        t->delayed.unsealed_at = t->delayed.tail->wr - 1;
    }
    if (due || t->delayed.tail->wr == CHUNK_ITEMS)
        atomic_fetch_or_explicit(&t->head.pending, FT_PENDING_DELAYED, memory_order_relaxed);
}

void ft_free_delayed(ft_thread *t, void *p, size_t size)
{
    if (p)
        enqueue(t, (uintptr_t)p, size);
}

void ft_decref_delayed(ft_thread *t, ft_object *obj)
{
    if (obj && !ft_object_is_immortal(obj))
        enqueue(t, (uintptr_t)obj | DECREF_TAG, 0);
}

/* Process the queue whose head is *head (tail *tail): free what is due, free emptied chunks but the
 * last. The owner's queue is re-read on every step because a destructor may append to it. */
static void process_queue(ft_thread *t, ft_delayed_chunk **head, ft_delayed_chunk **tail)
{
    ft_runtime *rt = t->rt;
    uint64_t freed = 0; /* added to the shared total once, not per item */
    for (;;) {
        ft_delayed_chunk *c = *head;
        if (!c)
            break;
        if (c->rd == c->wr) {
            if (c == *tail) {
                c->rd = c->wr = 0; /* empty: reuse its slots */
                break;
            }
            *head = c->next;
            free(c);
            continue;
        }
        ft_delayed_item item = c->items[c->rd];
        /* An item a destructor queued during this pass has no goal yet: it waits for the next. */
        if (item.goal == UNSEALED || !ft_qsbr_goal_reached(rt, item.goal))
            break;
        c->rd++;
        freed++;
        free_item(t, item.ptr);
    }
    if (freed)
        atomic_fetch_add_explicit(&rt->delayed.freed, freed, memory_order_relaxed);
}

/* Mark every started thread's queue due, so that each one's next safepoint processes the runtime's
 * queue (and its own). */
static void flag_threads(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t; t = t->next)
        atomic_fetch_or_explicit(&t->head.pending, FT_PENDING_DELAYED, memory_order_relaxed);
    ft_mutex_unlock(&rt->head_mutex);
}

/* Append the queue head..tail, whose goals are all at most the write sequence (reached once every
 * attached thread passes a quiescent point), to the runtime's queue (at the back, or at the front),
 * and mark every started thread's queue due: whichever thread passes the last quiescent point its
 * goals need will then run them. A thread that finds them not yet due puts them back through here,
 * so the threads keep polling at their safepoints until they run, which takes one round of
 * safepoints. */
static void splice_into_runtime(ft_runtime *rt, ft_delayed_chunk *head, ft_delayed_chunk *tail,
                                bool front)
{
    ft_mutex_lock_internal(&rt->delayed.mutex);
    if (front) {
        tail->next = rt->delayed.head;
        rt->delayed.head = head;
        if (!rt->delayed.tail)
            rt->delayed.tail = tail;
    } else {
        if (rt->delayed.tail)
            rt->delayed.tail->next = head;
        else
            rt->delayed.head = head;
        rt->delayed.tail = tail;
    }
    atomic_store_explicit(&rt->delayed.has_work, true, memory_order_relaxed);
    ft_mutex_unlock(&rt->delayed.mutex);
    flag_threads(rt);
}

/* Take the runtime's whole queue, process it with no lock held (destructors may block, stop the
 * world or re-enter), and put back what is not due yet, in front of anything queued meanwhile. */
static void process_runtime_queue(ft_thread *t)
{
    ft_runtime *rt = t->rt;
    if (!atomic_load_explicit(&rt->delayed.has_work, memory_order_relaxed) ||
        !ft_mutex_trylock(&rt->delayed.mutex))
        return;
    ft_delayed_chunk *head = rt->delayed.head, *tail = rt->delayed.tail;
    rt->delayed.head = rt->delayed.tail = NULL;
    atomic_store_explicit(&rt->delayed.has_work, false, memory_order_relaxed);
    ft_mutex_unlock(&rt->delayed.mutex);
    process_queue(t, &head, &tail);
    if (holds_items(head, tail))
        splice_into_runtime(rt, head, tail, true);
    else
        free(head);
}

void ft_delayed_process(ft_thread *t)
{
    atomic_fetch_and_explicit(&t->head.pending, ~FT_PENDING_DELAYED, memory_order_relaxed);
    seal_with_next(t);
    process_queue(t, &t->delayed.head, &t->delayed.tail);
    process_runtime_queue(t);
}

void ft_delayed_hand_over(ft_thread *t)
{
    ft_delayed_chunk *h = t->delayed.head;
    if (holds_items(h, t->delayed.tail)) {
        /* An advance, not ft_qsbr_next: every goal in the runtime's queue must be reachable by
         * quiescent points alone, since nobody may advance again. */
        ft_delayed_seal(t, ft_qsbr_advance(t->rt));
        splice_into_runtime(t->rt, h, t->delayed.tail, false);
    } else {
        free(h);
    }
    t->delayed.head = t->delayed.tail = NULL;
    t->delayed.unsealed = NULL;
}

void ft_delayed_thread_start(ft_thread *t)
{
    /* t is linked: any splice from now on marks it. One that came earlier marked only the threads
     * linked then, but it set has_work before it took the head lock, and t's link took that lock
     * after it, so this load sees the flag (or a thread took the items since, and will mark t if it
     * puts any back). */
    if (atomic_load_explicit(&t->rt->delayed.has_work, memory_order_relaxed))
        atomic_fetch_or_explicit(&t->head.pending, FT_PENDING_DELAYED, memory_order_relaxed);
}

bool ft_delayed_runtime_pending(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->delayed.mutex);
    bool pending = holds_items(rt->delayed.head, rt->delayed.tail);
    ft_mutex_unlock(&rt->delayed.mutex);
    return pending;
}

void ft_delayed_drain(ft_thread *t)
{
    /* t is its runtime's only thread: each round's advance and quiescent point reach every goal
     * queued so far, so a round runs everything but what its own destructors queue, which the next
     * round runs. A round that runs nothing ends it. */
    ft_runtime *rt = t->rt;
    for (;;) {
        uint64_t before = atomic_load_explicit(&rt->delayed.freed, memory_order_relaxed);
        ft_delayed_seal(t, ft_qsbr_advance(rt));
        ft_qsbr_quiescent(t);
        ft_delayed_process(t);
        if (atomic_load_explicit(&rt->delayed.freed, memory_order_relaxed) == before)
            break;
    }
}

void ft_delayed_thread_stop(ft_thread *t)
{
    /* Make every goal queued so far reachable, pass the quiescent point this thread owes it, free
     * what is due (everything, if no other thread is attached), hand over the rest. */
    if (t->delayed.head || atomic_load_explicit(&t->rt->delayed.has_work, memory_order_relaxed))
        ft_delayed_seal(t, ft_qsbr_advance(t->rt));
    ft_qsbr_quiescent(t);
    ft_delayed_process(t);
    ft_delayed_hand_over(t);
}

/* Run every item of queue q that may run inside a stop (everyone else is quiescent, and the caller
 * is at a quiescent point by contract, whatever the goals): every block, and with dead every
 * reference. What stays (references, without dead) is compacted to the front of its chunk. Returns
 * how many ran. */
static uint64_t run_stopped(ft_thread *self, ft_delayed_chunk *q, ft_dead_list *dead)
{
    uint64_t ran = 0;
    for (ft_delayed_chunk *c = q; c; c = c->next) {
        uint32_t keep = c->rd;
        for (uint32_t i = c->rd; i < c->wr; i++) {
            uintptr_t ptr = c->items[i].ptr;
            if ((ptr & DECREF_TAG) && !dead) {
                c->items[keep++] = c->items[i]; /* stays queued */
                continue;
            }
            if (ptr & DECREF_TAG)
                drop_stopped((ft_object *)(ptr & ~DECREF_TAG), dead);
            else
                ft_heap_free_block(self, (void *)ptr);
            ran++;
        }
        c->wr = keep;
    }
    return ran;
}

void ft_delayed_process_stopped(ft_runtime *rt, ft_dead_list *dead)
{
    FT_ASSERT(ft_stw_held_by_caller(rt));
    ft_thread *self = atomic_load_explicit(&rt->stw.requester, memory_order_relaxed);
    uint64_t ran = 0;
    /* The head lock: threads suspended in ft_thread_stop unlink themselves during a stop. */
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t; t = t->next) {
        seal_with_next(t); /* the compaction moves items */
        ran += run_stopped(self, t->delayed.head, dead);
    }
    ft_mutex_unlock(&rt->head_mutex);
    ft_mutex_lock_internal(&rt->delayed.mutex);
    ran += run_stopped(self, rt->delayed.head, dead);
    ft_mutex_unlock(&rt->delayed.mutex);
    atomic_fetch_add_explicit(&rt->delayed.freed, ran, memory_order_relaxed);
}

void ft_delayed_runtime_destroy(ft_runtime *rt)
{
    for (ft_delayed_chunk *c = rt->delayed.head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    rt->delayed.head = rt->delayed.tail = NULL;
}

/* ---- statistics ------------------------------------------------------------------------------ */

static void count_queue(const ft_delayed_chunk *q, ft_qsbr_stats *out)
{
    for (; q; q = q->next)
        for (uint32_t i = q->rd; i < q->wr; i++) {
            out->pending_items++;
            out->pending_bytes += q->items[i].size;
        }
}

void ft_qsbr_get_stats(ft_runtime *rt, ft_qsbr_stats *out)
{
    *out = (ft_qsbr_stats){0};
    bool stop = ft_stw_stop_unless_held(rt, "qsbr stats");
    /* The stop freezes the queues but not the thread list: a thread suspended in ft_thread_stop
     * unlinks its state, and a starting one links (and resets) a state, under the head lock. */
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t; t = t->next)
        count_queue(t->delayed.head, out);
    ft_mutex_unlock(&rt->head_mutex);
    ft_mutex_lock_internal(&rt->delayed.mutex);
    count_queue(rt->delayed.head, out);
    ft_mutex_unlock(&rt->delayed.mutex);
    out->wr_seq = atomic_load_explicit(&rt->qsbr.wr_seq, memory_order_relaxed);
    out->rd_seq = atomic_load_explicit(&rt->qsbr.rd_seq, memory_order_relaxed);
    out->freed_items = atomic_load_explicit(&rt->delayed.freed, memory_order_relaxed);
    if (stop)
        ft_start_the_world(rt);
}

/* ---- the page heap's reuse hook -------------------------------------------------------------- */

static uint64_t page_retire_goal(void *ctx)
{
    ft_runtime *rt = ctx;
    ft_thread *t = ft_current_thread;
    if (!t || t->rt != rt)
        return ft_qsbr_advance(rt);
    t->delayed.page_memory += FT_PAGE_SIZE;
    if (t->delayed.page_memory > PAGE_ADVANCE_BYTES) {
        t->delayed.page_memory = 0;
        return ft_qsbr_advance(rt);
    }
    return ft_qsbr_next(rt);
}

static bool page_goal_reached(void *ctx, uint64_t goal)
{
    ft_runtime *rt = ctx;
    if (ft_stw_held_by_caller(rt))
        return true;
    if (!ft_qsbr_seq_before(atomic_load_explicit(&rt->qsbr.rd_seq, memory_order_acquire), goal))
        return true;
    ft_thread *t = ft_current_thread;
    return t && t->rt == rt && ft_qsbr_goal_reached(rt, goal);
}

static void page_goals_flush(void *ctx)
{
    ft_runtime *rt = ctx;
    ft_thread *t = ft_current_thread;
    ft_qsbr_advance(rt);
    if (t && t->rt == rt)
        ft_qsbr_quiescent(t);
}

void ft_delayed_install_page_hook(ft_runtime *rt)
{
    ft_page_reuse_hook hook = {page_retire_goal, page_goal_reached, page_goals_flush, rt};
    ft_heap_set_reuse_hook(rt, &hook);
}
