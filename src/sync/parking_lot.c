/* parking_lot.c: threads wait on addresses; wakers find them by address.
 *
 * A fixed, process-wide table of buckets is indexed by a hash of the address. Each bucket has a
 * small lock of its own and a FIFO list of waiters, which live on their threads' stacks.
 *
 * Park: lock the bucket, compare the value at the address with the expected one (the caller's "I am
 * about to sleep because the value is X"), enqueue, unlock, then sleep on the waiter's own futex word.
 * Because wakers change the value before they unpark, and both the comparison and the unpark happen
 * under the bucket lock, a wake-up cannot fall between the check and the sleep.
 *
 * Unpark: lock the bucket, dequeue the oldest waiter for the address, mark it claimed, run the
 * caller's callback (which can hand data to the waiter, e.g. lock ownership), unlock, and only then
 * wake the waiter.
 *
 * Timeouts: a waiter whose sleep times out locks the bucket. If no unparker claimed it, it removes
 * itself and reports the timeout. If one did, the wake-up is already on its way and carries data the
 * waiter must not lose, so it waits for it without a deadline (the unparker posts right after it
 * unlocks the bucket).
 *
 * Invariant: a waiter is in its bucket's list if and only if it is unclaimed; its woken word goes
 * 0 -> 1 exactly once, written by the unparker after its last access to the waiter. */
#include <string.h>

#include "internal/internal.h"

#define BUCKET_COUNT 257 /* prime: spreads addresses that share alignment */

typedef struct waiter {
    struct waiter *next;   /* bucket list; under the bucket lock */
    const void *addr;      /* immutable while queued */
    void *park_arg;        /* immutable while queued */
    void *wake_arg;        /* written by the unparker under the bucket lock before woken = 1 */
    bool claimed;          /* under the bucket lock */
    _Atomic(uint32_t) woken; /* 0 -> 1 by the unparker (release); the waiter sleeps on it */
} waiter;

/* A bucket's lock: 0 free, 1 held, 2 held with sleepers. Held for a few instructions only. */
typedef struct bucket {
    _Atomic(uint32_t) lock;
    waiter *head, *tail; /* under lock */
    char pad[64 - sizeof(_Atomic(uint32_t)) - 2 * sizeof(waiter *)];
} bucket;

/* Process-wide (documented in include/ftrt/parking_lot.h): addresses are process-wide. */
static bucket buckets[BUCKET_COUNT];

static bucket *bucket_for(const void *addr)
{
    uintptr_t a = (uintptr_t)addr;
    return &buckets[(a ^ (a >> 17)) % BUCKET_COUNT];
}

static void bucket_lock(bucket *b)
{
    uint32_t v = 0;
    if (FT_LIKELY(atomic_compare_exchange_strong_explicit(&b->lock, &v, 1, memory_order_acquire,
                                                          memory_order_relaxed)))
        return;
    for (int spin = 0; spin < 100 && v != 0; spin++) {
        ft_cpu_relax();
        v = atomic_load_explicit(&b->lock, memory_order_relaxed);
    }
    if (v == 0 && atomic_compare_exchange_strong_explicit(&b->lock, &v, 1, memory_order_acquire,
                                                          memory_order_relaxed))
        return;
    while (atomic_exchange_explicit(&b->lock, 2, memory_order_acquire) != 0)
        ft_futex_wait_until(&b->lock, 2, FT_FOREVER);
}

static void bucket_unlock(bucket *b)
{
    if (atomic_exchange_explicit(&b->lock, 0, memory_order_release) == 2)
        ft_futex_wake_one(&b->lock);
}

static bool value_equals(const void *addr, const void *expected, size_t size)
{
    switch (size) {
    case 1:
        return atomic_load_explicit((_Atomic(uint8_t) *)addr, memory_order_relaxed) ==
               *(const uint8_t *)expected;
    case 2:
        return atomic_load_explicit((_Atomic(uint16_t) *)addr, memory_order_relaxed) ==
               *(const uint16_t *)expected;
    case 4:
        return atomic_load_explicit((_Atomic(uint32_t) *)addr, memory_order_relaxed) ==
               *(const uint32_t *)expected;
    case 8:
        return atomic_load_explicit((_Atomic(uint64_t) *)addr, memory_order_relaxed) ==
               *(const uint64_t *)expected;
    }
    ft_fatal("ft_parking_lot_park: value size %zu at %p is not 1, 2, 4 or 8 bytes", size, addr);
}

static void enqueue(bucket *b, waiter *w)
{
    w->next = NULL;
    if (b->tail)
        b->tail->next = w;
    else
        b->head = w;
    b->tail = w;
}

/* Unlink the waiter *link points at; prev is its predecessor (NULL at the head). */
static void unlink_waiter(bucket *b, waiter **link, waiter *prev)
{
    waiter *w = *link;
    *link = w->next;
    if (b->tail == w)
        b->tail = prev;
}

/* Remove and return the oldest waiter on addr (NULL if none); *has_more tells whether another
 * waiter on addr remains. */
static waiter *dequeue(bucket *b, const void *addr, bool *has_more)
{
    waiter **link = &b->head, *prev = NULL;
    while (*link && (*link)->addr != addr) {
        prev = *link;
        link = &prev->next;
    }
    waiter *found = *link;
    *has_more = false;
    if (!found)
        return NULL;
    unlink_waiter(b, link, prev);
    for (waiter *w = found->next; w; w = w->next)
        if (w->addr == addr) {
            *has_more = true;
            break;
        }
    return found;
}

static void remove_waiter(bucket *b, waiter *target)
{
    waiter **link = &b->head, *prev = NULL;
    while (*link != target) {
        prev = *link;
        link = &prev->next;
    }
    unlink_waiter(b, link, prev);
}

static void wait_woken(waiter *w, int64_t deadline)
{
    while (atomic_load_explicit(&w->woken, memory_order_acquire) == 0)
        if (ft_futex_wait_until(&w->woken, 0, deadline) == FT_ETIMEDOUT)
            return;
}

ft_status ft_parking_lot_park(const void *addr, const void *expected, size_t size,
                              int64_t timeout_ns, void *park_arg, void **wake_arg)
{
    bucket *b = bucket_for(addr);
    waiter w = {.addr = addr, .park_arg = park_arg};
    int64_t deadline = ft_deadline_after(timeout_ns);

    bucket_lock(b);
    if (!value_equals(addr, expected, size)) {
        bucket_unlock(b);
        return FT_EAGAIN;
    }
    enqueue(b, &w);
    bucket_unlock(b);

    wait_woken(&w, deadline);
    if (atomic_load_explicit(&w.woken, memory_order_acquire) == 0) {
        bucket_lock(b);
        bool claimed = w.claimed;
        if (!claimed)
            remove_waiter(b, &w);
        bucket_unlock(b);
        if (!claimed)
            return FT_ETIMEDOUT;
        wait_woken(&w, FT_FOREVER);
    }
    if (wake_arg)
        *wake_arg = w.wake_arg;
    return FT_OK;
}

static void wake(waiter *w);

bool ft_parking_lot_unpark(const void *addr, ft_unpark_fn fn, void *arg)
{
    bucket *b = bucket_for(addr);
    bool has_more;
    bucket_lock(b);
    waiter *w = dequeue(b, addr, &has_more);
    void *result = NULL;
    if (w)
        w->claimed = true;
    if (fn)
        result = fn(arg, w ? w->park_arg : NULL, has_more);
    if (w)
        w->wake_arg = result;
    bucket_unlock(b);
    if (!w)
        return false;
    wake(w);
    return true;
}

/* Mark w woken. After this store the waiter may return and its stack frame vanish: wake through a
 * copy of the address. A stale futex wake on reused memory is harmless; every sleeper re-checks. */
static void wake(waiter *w)
{
    _Atomic(uint32_t) *word = &w->woken;
    atomic_store_explicit(word, 1, memory_order_release);
    ft_futex_wake_one(word);
}

size_t ft_parking_lot_unpark_all(const void *addr)
{
    /* Take exactly the waiters parked now, under one lock: a woken thread that parks again at once
     * is not woken twice by this call. They are chained through their own next fields. */
    bucket *b = bucket_for(addr);
    waiter *woken = NULL;
    size_t n = 0;
    bool has_more;
    bucket_lock(b);
    for (waiter *w; (w = dequeue(b, addr, &has_more)) != NULL; n++) {
        w->claimed = true;
        w->next = woken;
        woken = w;
    }
    bucket_unlock(b);
    while (woken) {
        waiter *next = woken->next; /* read before the wake: the waiter may return at once */
        wake(woken);
        woken = next;
    }
    return n;
}
