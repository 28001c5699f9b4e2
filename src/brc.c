/* brc.c: the merge queues of biased reference counting.
 *
 * When a non-owner's decref finds an object's shared count at zero, the reference it drops may have
 * been the last one, but only the owner knows its local count. So the decref leaves the shared count
 * at zero, marks the object QUEUED (the queue now holds that reference) and hands it to the owner:
 *
 *   enqueue: look the owner up by ob_tid in the runtime's buckets (hashed by OS thread id, each with
 *            its own mutex), push the object on the owner's queue and set its FT_PENDING_MERGE bit.
 *   drain:   at its next safepoint the owner takes its queue under the bucket mutex and, outside it,
 *            merges each object (local folded into shared, minus the queue's reference) and frees
 *            those that reach zero. Destructors therefore never run under a lock.
 *
 * Edge cases:
 *  - ob_tid is 0 at enqueue: the owner merged the object meanwhile; drop the reference normally.
 *  - the owner is gone (stopped): nobody else can write its local count any more, so the enqueuing
 *    thread merges the object itself, under the bucket mutex (a new thread with the same id would
 *    register under it and become the owner), and frees it after unlocking.
 *  - the queue cannot grow (out of memory): merge with the world stopped, where no owner runs.
 * A thread that stops drains its queue until, under its bucket mutex, the queue is empty and it can
 * unregister; after that its objects are merged by whoever drops them. A later thread that reuses
 * the same OS thread id simply becomes their owner, which is sound: one live thread has that id. */
#include <stdlib.h>

#include "internal/internal.h"

#define CHUNK_OBJECTS 254

typedef struct ft_brc_chunk {
    struct ft_brc_chunk *next;
    size_t count;
    ft_object *objects[CHUNK_OBJECTS];
} ft_brc_chunk;

static ft_brc_bucket *bucket_for(ft_runtime *rt, uintptr_t tid)
{
    return &rt->brc[(tid >> 4) % FT_BRC_BUCKETS];
}

static void bucket_lock(ft_brc_bucket *b)
{
    ft_mutex_lock_ex(&b->mutex, FT_FOREVER, FT_LOCK_DONT_DETACH);
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

/* Push o on t's queue; false if a chunk could not be allocated. Bucket mutex held. */
static bool push(ft_runtime *rt, ft_thread *t, ft_object *o)
{
    ft_brc_chunk *c = t->brc.queue;
    if (!c || c->count == CHUNK_OBJECTS) {
        c = ft_inject_failure(rt) ? NULL : malloc(sizeof *c);
        if (!c)
            return false;
        c->next = t->brc.queue;
        c->count = 0;
        t->brc.queue = c;
    }
    c->objects[c->count++] = o;
    return true;
}

static void merge_and_free(ft_object *o)
{
    if (ft_explicit_merge(o, -1) == 0)
        ft_object_dealloc(o);
}

void ft_brc_enqueue(ft_object *o)
{
    uintptr_t tid = atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
    if (tid == 0) {
        ft_decref_shared(o);
        return;
    }
    ft_runtime *rt = ft_object_runtime(o);
    ft_brc_bucket *b = bucket_for(rt, tid);
    bucket_lock(b);
    ft_thread *owner = find_owner(b, tid);
    if (owner && push(rt, owner, o)) {
        /* Test before set: the owner reads this word at every safepoint; don't write its line
         * again while the bit is still set. */
        if (!(atomic_load_explicit(&owner->head.pending, memory_order_relaxed) & FT_PENDING_MERGE))
            atomic_fetch_or_explicit(&owner->head.pending, FT_PENDING_MERGE, memory_order_relaxed);
        ft_mutex_unlock(&b->mutex);
        return;
    }
    if (!owner) {
        /* Merge before unlocking: a new thread with the same OS thread id registers under this
         * mutex and would then own the object and write its local count while we merge it. */
        intptr_t count = ft_explicit_merge(o, -1);
        ft_mutex_unlock(&b->mutex);
        if (count == 0)
            ft_object_dealloc(o);
        return;
    }
    ft_mutex_unlock(&b->mutex);
    /* Out of memory: the owner is running; merge while it cannot touch its local count. */
    intptr_t count;
    if (ft_world_stopped_by_caller(rt)) {
        count = ft_explicit_merge(o, -1);
    } else {
        ft_stop_the_world(rt);
        count = ft_explicit_merge(o, -1);
        ft_start_the_world(rt);
    }
    if (count == 0)
        ft_object_dealloc(o);
}

/* Take t's whole queue (bucket mutex held by nobody). */
static ft_brc_chunk *take_queue(ft_thread *t, bool unregister_if_empty, bool *unregistered)
{
    ft_brc_bucket *b = bucket_for(t->rt, t->os_thread);
    bucket_lock(b);
    ft_brc_chunk *q = t->brc.queue;
    t->brc.queue = NULL;
    atomic_fetch_and_explicit(&t->head.pending, ~FT_PENDING_MERGE, memory_order_relaxed);
    if (unregister_if_empty && !q) {
        unregister_locked(b, t);
        *unregistered = true;
    }
    ft_mutex_unlock(&b->mutex);
    return q;
}

static void drain(ft_brc_chunk *q)
{
    while (q) {
        for (size_t i = 0; i < q->count; i++)
            merge_and_free(q->objects[i]);
        ft_brc_chunk *next = q->next;
        free(q);
        q = next;
    }
}

void ft_brc_merge_pending(ft_thread *t)
{
    bool unused = false;
    drain(take_queue(t, false, &unused));
}

void ft_brc_thread_start(ft_thread *t)
{
    ft_brc_bucket *b = bucket_for(t->rt, t->os_thread);
    bucket_lock(b);
    t->brc.bucket_next = b->threads;
    b->threads = t;
    t->brc.registered = true;
    ft_mutex_unlock(&b->mutex);
}

void ft_brc_forget_thread(ft_thread *t)
{
    /* Its queued references are lost with it; the objects stay alive (leaked), never freed early. */
    for (struct ft_brc_chunk *c = t->brc.queue, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    t->brc.queue = NULL;
    if (t->brc.registered)
        unregister_locked(bucket_for(t->rt, t->os_thread), t);
}

void ft_brc_thread_stop(ft_thread *t)
{
    bool unregistered = false;
    while (!unregistered)
        drain(take_queue(t, true, &unregistered));
}
