/* object/brc.h: the state of biased reference counting's merge queues (brc.c).
 *
 * A non-owner whose decref leaves an object's shared count at zero or below queues the object to its
 * owner, which merges it at its next safepoint. Owners are found through buckets keyed by their OS
 * thread id; a non-owner first collects objects for one owner in its outbox and hands the outbox
 * over in one batch. */
#ifndef FTRT_OBJECT_BRC_H
#define FTRT_OBJECT_BRC_H

#include <stdbool.h>
#include <stdint.h>

#include "ftrt/lock.h"
#include "ftrt/object.h"
#include "thread/stw.h"

#define FT_BRC_OUTBOX 64   /* objects a thread collects for one owner before handing them over */
#define FT_BRC_BUCKETS 257 /* owner buckets per runtime (prime: OS thread ids are aligned) */

struct ft_brc_chunk;

/* One thread's part (ft_thread.brc). */
typedef struct ft_brc_thread {
    ft_thread *bucket_next;     /* the bucket's list; under the bucket's mutex */
    struct ft_brc_chunk *queue; /* objects other threads queued to this one; under the bucket's mutex */
    bool registered;            /* in its bucket; owner only */
    /* The outbox: objects this thread dropped for another, live owner and has not handed over yet,
     * each QUEUED with the reference the outbox holds. Owner only. */
    uintptr_t outbox_tid;       /* the owner id it collects for (every object's ob_tid); 0: none */
    uint32_t outbox_count;      /* < FT_BRC_OUTBOX between calls: a full outbox is handed over */
    ft_object *outbox[FT_BRC_OUTBOX];
} ft_brc_thread;

/* The runtime's part (ft_runtime.brc[FT_BRC_BUCKETS]). */
typedef struct ft_brc_bucket {
    ft_mutex mutex;     /* guards threads and their brc.queue */
    ft_thread *threads; /* registered threads whose os_thread hashes here */
} ft_brc_bucket;

void ft_brc_enqueue(ft_object *o);
void ft_brc_thread_start(ft_thread *t);
void ft_brc_thread_stop(ft_thread *t);
void ft_brc_thread_detach(ft_thread *t); /* hand the outbox over, freeing nothing */
void ft_brc_forget_thread(ft_thread *t); /* after fork: drop a dead thread without draining */
/* Inside a stop the caller holds: merge every object waiting in a queue or an outbox (minus the
 * reference the queue holds) and push those that reach zero onto dead; returns how many merged.
 * Takes head_mutex, then each bucket's mutex. */
size_t ft_brc_merge_stopped(ft_runtime *rt, ft_dead_list *dead);

#endif
