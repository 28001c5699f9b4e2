/* brc.c: the merge queues of biased reference counting.
 *
 * When a non-owner's decref finds an object's shared count at zero, the reference it drops may have
 * been the last one, but only the owner knows its local count. So the decref marks the object QUEUED
 * with that reference counted again (the queue now holds it; object.c says how this is settled after
 * the decref's subtract) and hands it to the owner:
 *
 *   hand-over: look the owner up by ob_tid in the runtime's buckets (hashed by OS thread id, each
 *              with its own mutex), append to the owner's queue and set its FT_PENDING_MERGE bit.
 *   outbox:    doing that for every object would cost the dropping thread a lock and a write of the
 *              owner's pending word per object. So the first object for an owner is handed over
 *              alone, and if the owner turned out to be alive, the dropping thread's next objects
 *              for the same owner collect in its outbox (FT_BRC_OUTBOX entries in its own thread
 *              state: no lock, no atomic). The thread sets its own FT_PENDING_MERGE bit meanwhile.
 *              An object in an outbox stays QUEUED; the outbox holds its reference.
 *   flush:     the outbox is handed over as one batch (one lock, one pending-bit write): when it is
 *              full, when an object for another owner arrives, at the thread's next safepoint (its
 *              pending bit), when it detaches, and when it stops.
 *   drain:     at its next safepoint the owner takes its queue under the bucket mutex and, outside
 *              it, merges each object (local folded into shared, minus the queue's reference) and
 *              frees those that reach zero, prefetching a few objects ahead for writing so that
 *              fetching their cache lines (last written by the dropping thread) overlaps.
 *              Destructors therefore never run under a lock.
 *
 * Edge cases:
 *  - ob_tid is 0 at the decref: the owner merged the object meanwhile; drop the reference normally.
 *    If the owner merges it while it sits in an outbox, its drain later merges it once more with
 *    nothing local left, which subtracts exactly the queue's reference.
 *  - the owner is gone (stopped): nobody else can write its local count any more, so the handing
 *    thread merges the objects itself, under the bucket mutex (a new thread with the same id would
 *    register under it and become the owner), and frees those that reached zero after unlocking.
 *    A drop for an owner that has already stopped is therefore freed during the decref; only an
 *    owner that stops while objects wait in an outbox leaves them to that thread's next flush.
 *  - the queue cannot grow (out of memory): merge with the world stopped, where no owner runs (at
 *    once if the handing thread is the one that stopped it).
 *  - one owner id, several runtimes (an OS thread may take part in more than one): a thread counts
 *    only objects of the runtime it is attached to, so an outbox holds one runtime's objects, and
 *    they go to the owner's state in that runtime.
 *  - the owner found is the handing thread itself: the objects go to its own queue like any other,
 *    and its pending bit makes its next safepoint drain them.
 *  - the flush on detach hands over what it can but frees nothing and never stops the world (ft_detach
 *    runs on a lock's slow path): objects whose owner has gone, or that found no memory, stay in the
 *    outbox, pending bit set, for the thread's next safepoint or its stop.
 *  - destructors run by a hand-over or a drain may drop more objects: a flush empties the outbox
 *    before it frees anything, so they start a new batch.
 * A thread that stops flushes its outbox and drains its queue until, under its bucket mutex, both are
 * empty and it can unregister; after that its own drops go to their owners one at a time, and its
 * objects are merged by whoever drops them. A later thread that reuses the same OS thread id simply
 * becomes their owner, which is sound: one live thread has that id.
 *
 * A stop-the-world does not flush outboxes: their objects are alive and QUEUED, like those in the
 * owners' queues. The collector, which needs exact counts, settles both inside its stop
 * (ft_brc_merge_stopped): every queued object is merged there minus its queue's or outbox's
 * reference, as its owner's drain would, and those that reach zero are handed back dead. */
#include <stdlib.h>
#include <string.h>

#include "internal/internal.h"

#define CHUNK_OBJECTS 254
#define DRAIN_AHEAD 8 /* objects prefetched ahead of the one being merged */

typedef struct ft_brc_chunk {
    struct ft_brc_chunk *next;
    size_t count;
    ft_object *objects[CHUNK_OBJECTS];
} ft_brc_chunk;

static ft_brc_bucket *bucket_for(ft_runtime *rt, uintptr_t tid)
{
    return &rt->brc[(tid >> 4) % FT_BRC_BUCKETS];
}

static ft_thread *find_owner(ft_brc_bucket *b, uintptr_t tid)
{
    for (ft_thread *t = b->threads; t; t = t->brc.bucket_next)
        if (t->os_thread == tid)
            return t;
    return NULL;
}

static void unregister_locked(ft_brc_bucket *b, ft_thread *t)
{
    ft_thread **link = &b->threads;
    while (*link != t)
        link = &(*link)->brc.bucket_next;
    *link = t->brc.bucket_next;
    t->brc.registered = false;
}

static void set_pending_merge(ft_thread *t)
{
    /* Test before set: the owner reads this word at every safepoint; don't write its line again
     * while the bit is still set. */
    if (!(atomic_load_explicit(&t->head.pending, memory_order_relaxed) & FT_PENDING_MERGE))
        atomic_fetch_or_explicit(&t->head.pending, FT_PENDING_MERGE, memory_order_relaxed);
}

/* Append objs[0, n) to t's queue; returns how many went in (fewer only when a chunk could not be
 * allocated). Bucket mutex held. */
static size_t push(ft_runtime *rt, ft_thread *t, ft_object *const *objs, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ft_brc_chunk *c = t->brc.queue;
        if (!c || c->count == CHUNK_OBJECTS) {
            c = ft_inject_failure(rt) ? NULL : malloc(sizeof *c);
            if (!c)
                break;
            c->next = t->brc.queue;
            c->count = 0;
            t->brc.queue = c;
        }
        size_t room = CHUNK_OBJECTS - c->count, k = n - done < room ? n - done : room;
        memcpy(&c->objects[c->count], objs + done, k * sizeof *objs);
        c->count += k;
        done += k;
    }
    return done;
}

/* Merge objs[0, n) (each carrying its queue reference) while nobody can write their local counts;
 * move those whose count reached zero to the front and return their number. */
static size_t merge_all(ft_object **objs, size_t n)
{
    size_t dead = 0;
    for (size_t i = 0; i < n; i++)
        if (ft_object_merge(objs[i], -1) == 0)
            objs[dead++] = objs[i];
    return dead;
}

static void dealloc_all(ft_object *const *objs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ft_object_dealloc(objs[i]);
}

/* Out of memory for the queue of a running owner: merge while it cannot touch its local counts. The
 * dead are deallocated after the restart: by this call when it stopped the world, else by the
 * caller's own ft_start_the_world (a destructor must not run inside a stop). */
static void merge_in_stopped_world(ft_runtime *rt, ft_object **objs, size_t n)
{
    bool stopped = ft_stw_stop_unless_held(rt, "brc out of memory");
    size_t dead = merge_all(objs, n);
    if (!stopped) {
        for (size_t i = 0; i < dead; i++)
            ft_dead_list_push(&rt->stw.dead, objs[i]);
        return;
    }
    ft_start_the_world(rt);
    dealloc_all(objs, dead);
}

/* Hand objs[0, n), all of runtime rt and owner id tid, each QUEUED with the reference it carries,
 * to their owner; *pushed says how many went to a live owner's queue. With may_free every object is
 * settled (queued, or merged and perhaps freed). Without, nothing is freed and nothing waits but the
 * bucket mutex: the objects that could not be queued (owner gone, out of memory) are moved to the
 * front and their number returned. */
static size_t deliver(ft_runtime *rt, uintptr_t tid, ft_object **objs, size_t n, bool may_free,
                      size_t *pushed)
{
    ft_brc_bucket *b = bucket_for(rt, tid);
    ft_mutex_lock_internal(&b->mutex);
    ft_thread *owner = find_owner(b, tid);
    *pushed = 0;
    if (owner) {
        *pushed = push(rt, owner, objs, n);
        if (*pushed)
            set_pending_merge(owner);
        ft_mutex_unlock(&b->mutex);
        n -= *pushed;
        memmove(objs, objs + *pushed, n * sizeof *objs);
        if (n && may_free) {
            merge_in_stopped_world(rt, objs, n);
            n = 0;
        }
        return n;
    }
    if (!may_free) {
        ft_mutex_unlock(&b->mutex);
        return n;
    }
    /* Merge before unlocking: a new thread with the same OS thread id registers under this mutex
     * and would then own the objects and write their local counts while we merge them. */
    size_t dead = merge_all(objs, n);
    ft_mutex_unlock(&b->mutex);
    dealloc_all(objs, dead);
    return 0;
}

/* Hand t's outbox to the owner it collects for; see deliver for may_free. */
static void flush(ft_thread *t, bool may_free)
{
    uint32_t n = t->brc.outbox_count;
    uintptr_t tid = t->brc.outbox_tid;
    /* Empty, and collecting for nobody, before anything is freed: destructors may queue again. */
    t->brc.outbox_count = 0;
    t->brc.outbox_tid = 0;
    if (n == 0)
        return;
    ft_object *objs[FT_BRC_OUTBOX];
    memcpy(objs, t->brc.outbox, n * sizeof objs[0]);
    size_t pushed, kept = deliver(t->rt, tid, objs, n, may_free, &pushed);
    if (kept) {
        /* Only without may_free, which ran nothing that could queue: the outbox is still empty, and
         * the pending bit still set. */
        memcpy(t->brc.outbox, objs, kept * sizeof objs[0]);
        t->brc.outbox_count = (uint32_t)kept;
        t->brc.outbox_tid = tid;
    }
}

void ft_brc_enqueue(ft_object *o)
{
    uintptr_t tid = atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
    if (tid == 0) {
        ft_decref_shared(o);
        return;
    }
    ft_thread *t = ft_current_thread;
    if (FT_LIKELY(t != NULL)) {
        /* Collecting for this owner. The outbox is never left full, so there is room. */
        if (FT_LIKELY(t->brc.outbox_tid == tid)) {
            t->brc.outbox[t->brc.outbox_count++] = o;
            if (t->brc.outbox_count == FT_BRC_OUTBOX)
                flush(t, true);
            return;
        }
        flush(t, true); /* another owner's objects, if any */
    }
    /* The first object for an owner goes alone and at once, which also tells whether the owner is
     * alive. If it is, this thread collects its next objects for that owner, unless it is stopping
     * (unregistered) or destructors run by the flush above made it collect for someone else. */
    size_t pushed;
    deliver(t ? t->rt : ft_object_runtime(o), tid, &o, 1, true, &pushed);
    if (pushed && t && t->brc.registered && t->brc.outbox_tid == 0) {
        t->brc.outbox_tid = tid;
        set_pending_merge(t); /* its next safepoint flushes */
    }
}

/* Take t's whole queue (bucket mutex held by nobody). Unregisters t if asked and nothing is left in
 * its queue or its outbox. */
static ft_brc_chunk *take_queue(ft_thread *t, bool unregister_if_empty, bool *unregistered)
{
    ft_brc_bucket *b = bucket_for(t->rt, t->os_thread);
    ft_mutex_lock_internal(&b->mutex);
    ft_brc_chunk *q = t->brc.queue;
    t->brc.queue = NULL;
    atomic_fetch_and_explicit(&t->head.pending, ~FT_PENDING_MERGE, memory_order_relaxed);
    if (unregister_if_empty && !q && t->brc.outbox_count == 0) {
        unregister_locked(b, t);
        t->brc.outbox_tid = 0; /* from now on its drops go to their owners one at a time */
        *unregistered = true;
    }
    ft_mutex_unlock(&b->mutex);
    return q;
}

static void merge_and_free(ft_object *o)
{
    if (ft_object_merge(o, -1) == 0)
        ft_object_dealloc(o);
}

static void drain(ft_brc_chunk *q)
{
    while (q) {
        ft_object **objs = q->objects;
        size_t n = q->count;
        for (size_t i = 0; i < n && i < DRAIN_AHEAD; i++)
            ft_prefetch_for_write(objs[i]);
        for (size_t i = 0; i < n; i++) {
            if (i + DRAIN_AHEAD < n)
                ft_prefetch_for_write(objs[i + DRAIN_AHEAD]);
            merge_and_free(objs[i]);
        }
        ft_brc_chunk *next = q->next;
        free(q);
        q = next;
    }
}

void ft_brc_merge(ft_thread *t)
{
    bool unused = false;
    /* Take the queue (clearing the pending bit) before flushing: whatever the flush or the drain
     * queues afterwards sets the bit again. */
    ft_brc_chunk *q = take_queue(t, false, &unused);
    flush(t, true);
    drain(q);
}

size_t ft_brc_merge_stopped(ft_runtime *rt, ft_dead_list *dead)
{
    FT_ASSERT(ft_stw_held_by_caller(rt));
    size_t merged = 0;
    /* The head lock: threads suspended in ft_thread_stop unlink themselves during a stop. */
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t; t = t->next) {
        for (uint32_t i = 0; i < t->brc.outbox_count; i++, merged++)
            if (ft_object_merge(t->brc.outbox[i], -1) == 0)
                ft_dead_list_push(dead, t->brc.outbox[i]);
        t->brc.outbox_count = 0;
        t->brc.outbox_tid = 0;
        ft_brc_bucket *b = bucket_for(rt, t->os_thread);
        ft_mutex_lock_internal(&b->mutex);
        ft_brc_chunk *q = t->brc.queue;
        t->brc.queue = NULL;
        ft_mutex_unlock(&b->mutex);
        while (q) {
            for (size_t i = 0; i < q->count; i++, merged++)
                if (ft_object_merge(q->objects[i], -1) == 0)
                    ft_dead_list_push(dead, q->objects[i]);
            ft_brc_chunk *next = q->next;
            free(q);
            q = next;
        }
    }
    ft_mutex_unlock(&rt->head_mutex);
    return merged;
}

void ft_brc_thread_start(ft_thread *t)
{
    ft_brc_bucket *b = bucket_for(t->rt, t->os_thread);
    ft_mutex_lock_internal(&b->mutex);
    t->brc.bucket_next = b->threads;
    b->threads = t;
    t->brc.registered = true;
    ft_mutex_unlock(&b->mutex);
}

void ft_brc_thread_detach(ft_thread *t)
{
    flush(t, false);
}

void ft_brc_forget_thread(ft_thread *t)
{
    /* Its queued references are lost with it; the objects stay alive (leaked), never freed early. */
    for (struct ft_brc_chunk *c = t->brc.queue, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    t->brc.queue = NULL;
    t->brc.outbox_count = 0;
    t->brc.outbox_tid = 0;
    if (t->brc.registered)
        unregister_locked(bucket_for(t->rt, t->os_thread), t);
}

void ft_brc_thread_stop(ft_thread *t)
{
    bool unregistered = false;
    while (!unregistered) {
        flush(t, true);
        drain(take_queue(t, true, &unregistered));
    }
}
