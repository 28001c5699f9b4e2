/* lock.c: the slow paths of ft_mutex, and the event, once, recursive, reader/writer and sequence locks.
 *
 * ft_mutex is one byte: bit 0 LOCKED, bit 1 HAS_PARKED. Locking is a CAS 0 -> 1 inline; the slow path
 * here:
 *   - takes the lock whenever LOCKED is clear (keeping HAS_PARKED as it is);
 *   - while nobody is parked, spins up to SPIN_LIMIT rounds of SPIN_PAUSES pause instructions
 *     (about 2 us a round here), because a short critical section usually ends sooner than a
 *     park/unpark round trip. The rounds pause rather than yield: sched_yield costs ~0.4 us on a VM
 *     and makes the waiter poll the lock's cache line often enough to slow its holder down;
 *   - otherwise sets HAS_PARKED and parks on the byte, expecting exactly the value it saw.
 * Unlock is a CAS 1 -> 0 inline; with HAS_PARKED set it unparks one waiter, and a callback under the
 * parking-lot bucket lock decides the new byte:
 *   - the waiter has waited longer than FAIR_AFTER_NS: the lock is handed to it directly (the byte
 *     stays LOCKED, the waiter is told it owns the lock), so a thread that keeps re-locking cannot
 *     starve it;
 *   - otherwise the byte is cleared (keeping HAS_PARKED if others wait) and the waiter competes.
 * A mutex is never unlocked by its HAS_PARKED bit alone: the bit can over-report (a timed-out waiter
 * leaves it set), which costs one empty unpark, never a lost wake-up.
 *
 * Detaching: a blocking lock normally detaches the caller's attached thread state while it is
 * parked (see ft_detach), so a stop-the-world does not wait for a thread that waits for a lock held
 * by a thread the stop has already suspended. */
#include "internal/internal.h"

#define SPIN_LIMIT 40
#define SPIN_PAUSES 100
#define FAIR_AFTER_NS FT_NS_PER_MS

/* ---- parking with the caller detached -------------------------------------------------------- */

static ft_status park_maybe_detached(const void *addr, const void *expected, size_t size,
                                     int64_t deadline, ft_lock_flags flags, void *park_arg,
                                     void **wake_arg)
{
    int64_t timeout = FT_FOREVER;
    if (deadline >= 0) {
        timeout = deadline - ft_monotonic_ns();
        if (timeout <= 0)
            return FT_ETIMEDOUT;
    }
    ft_thread *t = (flags & FT_LOCK_DETACH) ? ft_thread_current() : NULL;
    if (t)
        ft_detach(t);
    ft_status s = ft_parking_lot_park(addr, expected, size, timeout, park_arg, wake_arg);
    if (t)
        ft_attach(t);
    return s;
}

/* ---- ft_mutex -------------------------------------------------------------------------------- */

typedef struct mutex_waiter {
    int64_t fair_at;  /* monotonic time after which an unlock hands the lock over */
    bool handed_off;  /* set by the unlocker (under the bucket lock) before the wake-up */
} mutex_waiter;

ft_status ft_mutex_lock_timed(ft_mutex *m, int64_t timeout_ns, ft_lock_flags flags)
{
    uint8_t v = atomic_load_explicit(&m->bits, memory_order_relaxed);
    if (!(v & FT_MUTEX_LOCKED) &&
        atomic_compare_exchange_strong_explicit(&m->bits, &v, v | FT_MUTEX_LOCKED,
                                                memory_order_acquire, memory_order_relaxed))
        return FT_OK;
    if (timeout_ns == 0)
        return FT_ETIMEDOUT;

    int64_t now = ft_monotonic_ns();
    int64_t deadline = timeout_ns < 0 ? FT_FOREVER : now + timeout_ns;
    mutex_waiter self = {.fair_at = now + FAIR_AFTER_NS};
    int spins = 0;
    for (;;) {
        v = atomic_load_explicit(&m->bits, memory_order_relaxed);
        if (!(v & FT_MUTEX_LOCKED)) {
            if (atomic_compare_exchange_weak_explicit(&m->bits, &v, v | FT_MUTEX_LOCKED,
                                                      memory_order_acquire, memory_order_relaxed))
                return FT_OK;
            continue;
        }
        if (!(v & FT_MUTEX_HAS_PARKED) && spins < SPIN_LIMIT) {
            for (int i = 0; i < SPIN_PAUSES; i++)
                ft_cpu_relax();
            if (++spins % 8 == 0 && deadline >= 0 && ft_monotonic_ns() >= deadline)
                return FT_ETIMEDOUT;
            continue;
        }
        uint8_t parked = v | FT_MUTEX_HAS_PARKED;
        if (!(v & FT_MUTEX_HAS_PARKED) &&
            !atomic_compare_exchange_weak_explicit(&m->bits, &v, parked, memory_order_relaxed,
                                                   memory_order_relaxed))
            continue;
        ft_status s = park_maybe_detached(&m->bits, &parked, 1, deadline, flags, &self, NULL);
        if (s == FT_OK && self.handed_off)
            return FT_OK; /* the unlocker left the byte LOCKED for us; its acquire came with the wake */
        if (s == FT_ETIMEDOUT)
            return FT_ETIMEDOUT;
    }
}

void ft__mutex_lock_slow(ft_mutex *m)
{
    ft_mutex_lock_timed(m, FT_FOREVER, FT_LOCK_DETACH);
}

static void *mutex_unpark_cb(void *arg, void *park_arg, bool has_more)
{
    ft_mutex *m = arg;
    mutex_waiter *w = park_arg;
    uint8_t more = has_more ? FT_MUTEX_HAS_PARKED : 0;
    if (w && ft_monotonic_ns() >= w->fair_at) {
        w->handed_off = true;
        atomic_store_explicit(&m->bits, FT_MUTEX_LOCKED | more, memory_order_release);
    } else {
        atomic_store_explicit(&m->bits, more, memory_order_release);
    }
    return NULL;
}

void ft__mutex_unlock_slow(ft_mutex *m)
{
    uint8_t v = atomic_load_explicit(&m->bits, memory_order_relaxed);
    for (;;) {
        if (!(v & FT_MUTEX_LOCKED))
            ft_fatal("ft_mutex_unlock: mutex %p is not locked (unlock of an unlocked mutex)",
                     (void *)m);
        if (v & FT_MUTEX_HAS_PARKED) {
            ft_parking_lot_unpark(&m->bits, mutex_unpark_cb, m);
            return;
        }
        if (atomic_compare_exchange_weak_explicit(&m->bits, &v, FT_MUTEX_UNLOCKED,
                                                  memory_order_release, memory_order_relaxed))
            return;
    }
}

/* ---- ft_event -------------------------------------------------------------------------------- */

enum { EVENT_UNSET = 0, EVENT_SET = 1, EVENT_WAITING = 2 };

void ft_event_notify(ft_event *e)
{
    if (atomic_exchange_explicit(&e->state, EVENT_SET, memory_order_acq_rel) == EVENT_WAITING)
        ft_parking_lot_unpark_all(&e->state);
}

bool ft_event_wait_timed(ft_event *e, int64_t timeout_ns, ft_lock_flags flags)
{
    int64_t deadline = ft_deadline_after(timeout_ns);
    for (;;) {
        uint8_t v = atomic_load_explicit(&e->state, memory_order_acquire);
        if (v == EVENT_SET)
            return true;
        if (v == EVENT_UNSET &&
            !atomic_compare_exchange_weak_explicit(&e->state, &v, EVENT_WAITING,
                                                   memory_order_relaxed, memory_order_relaxed))
            continue;
        uint8_t waiting = EVENT_WAITING;
        if (park_maybe_detached(&e->state, &waiting, 1, deadline, flags, NULL, NULL) ==
            FT_ETIMEDOUT)
            return atomic_load_explicit(&e->state, memory_order_acquire) == EVENT_SET;
    }
}

void ft_event_wait(ft_event *e)
{
    ft_event_wait_timed(e, FT_FOREVER, FT_LOCK_DETACH);
}

void ft_event_reset(ft_event *e)
{
    /* Relaxed: the caller's own synchronisation orders this against the notifies and waits of the
     * rounds before and after. */
    atomic_store_explicit(&e->state, EVENT_UNSET, memory_order_relaxed);
}

/* ---- ft_once --------------------------------------------------------------------------------- */

enum { ONCE_NOT_DONE = 0, ONCE_RUNNING = 1, ONCE_PARKED = 2 };

ft_status ft__once_call_slow(ft_once *o, ft_once_fn fn, void *arg)
{
    for (;;) {
        uint8_t v = atomic_load_explicit(&o->state, memory_order_acquire);
        if (v == FT_ONCE_DONE)
            return FT_OK;
        if (v == ONCE_NOT_DONE) {
            if (!atomic_compare_exchange_weak_explicit(&o->state, &v, ONCE_RUNNING,
                                                       memory_order_acquire, memory_order_relaxed))
                continue;
            ft_status s = fn(arg);
            uint8_t next = s == FT_OK ? FT_ONCE_DONE : ONCE_NOT_DONE;
            if (atomic_exchange_explicit(&o->state, next, memory_order_acq_rel) & ONCE_PARKED)
                ft_parking_lot_unpark_all(&o->state);
            return s;
        }
        uint8_t parked = v | ONCE_PARKED;
        if (!(v & ONCE_PARKED) &&
            !atomic_compare_exchange_weak_explicit(&o->state, &v, parked, memory_order_relaxed,
                                                   memory_order_relaxed))
            continue;
        park_maybe_detached(&o->state, &parked, 1, FT_FOREVER, FT_LOCK_DETACH, NULL, NULL);
    }
}

/* ---- ft_rmutex ------------------------------------------------------------------------------- */

bool ft_rmutex_is_owned(const ft_rmutex *m)
{
    return atomic_load_explicit(&((ft_rmutex *)m)->owner, memory_order_relaxed) ==
           ft_os_thread_id();
}

void ft_rmutex_lock(ft_rmutex *m)
{
    if (ft_rmutex_is_owned(m)) {
        m->level++;
        return;
    }
    ft_mutex_lock(&m->mutex);
    atomic_store_explicit(&m->owner, ft_os_thread_id(), memory_order_relaxed);
    m->level = 1;
}

void ft_rmutex_unlock(ft_rmutex *m)
{
    if (!ft_rmutex_is_owned(m))
        ft_fatal("ft_rmutex_unlock: recursive mutex %p is not held by the calling thread",
                 (void *)m);
    if (--m->level > 0)
        return;
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
    ft_mutex_unlock(&m->mutex);
}

/* ---- ft_rwmutex ------------------------------------------------------------------------------
 * Write-preferring: a reader waits while a writer holds the lock or anyone is parked, so a steady
 * stream of readers cannot starve a parked writer. The last reader out wakes every parked thread but
 * leaves HAS_PARKED set, so that arriving readers keep waiting while the woken writer takes the lock
 * (a writer may lock with HAS_PARKED set); woken readers park again behind it. A writer's unlock
 * clears the word and wakes everyone. HAS_PARKED with no holder therefore always means a writer has
 * been woken and is about to lock. */

#define RW_READER ((uintptr_t)1 << FT_RWMUTEX_READER_SHIFT)

/* Set HAS_PARKED (if needed) and park expecting the result. */
static void rw_park(ft_rwmutex *rw, uintptr_t bits)
{
    uintptr_t parked = bits | FT_RWMUTEX_HAS_PARKED;
    if (!(bits & FT_RWMUTEX_HAS_PARKED) &&
        !atomic_compare_exchange_strong_explicit(&rw->bits, &bits, parked, memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    park_maybe_detached(&rw->bits, &parked, sizeof parked, FT_FOREVER, FT_LOCK_DETACH, NULL, NULL);
}

void ft_rwmutex_rlock(ft_rwmutex *rw)
{
    for (;;) {
        uintptr_t bits = atomic_load_explicit(&rw->bits, memory_order_relaxed);
        if (!(bits & (FT_RWMUTEX_WRITE_LOCKED | FT_RWMUTEX_HAS_PARKED))) {
            if (atomic_compare_exchange_weak_explicit(&rw->bits, &bits, bits + RW_READER,
                                                      memory_order_acquire, memory_order_relaxed))
                return;
            continue;
        }
        rw_park(rw, bits);
    }
}

void ft_rwmutex_runlock(ft_rwmutex *rw)
{
    uintptr_t bits = atomic_fetch_sub_explicit(&rw->bits, RW_READER, memory_order_release);
    if ((bits >> FT_RWMUTEX_READER_SHIFT) == 0)
        ft_fatal("ft_rwmutex_runlock: rwmutex %p has no readers", (void *)rw);
    bits -= RW_READER;
    if ((bits >> FT_RWMUTEX_READER_SHIFT) == 0 && (bits & FT_RWMUTEX_HAS_PARKED))
        ft_parking_lot_unpark_all(&rw->bits);
}

void ft_rwmutex_lock(ft_rwmutex *rw)
{
    for (;;) {
        uintptr_t bits = atomic_load_explicit(&rw->bits, memory_order_relaxed);
        if (!(bits & ~(uintptr_t)FT_RWMUTEX_HAS_PARKED)) {
            if (atomic_compare_exchange_weak_explicit(&rw->bits, &bits,
                                                      bits | FT_RWMUTEX_WRITE_LOCKED,
                                                      memory_order_acquire, memory_order_relaxed))
                return;
            continue;
        }
        rw_park(rw, bits);
    }
}

void ft_rwmutex_unlock(ft_rwmutex *rw)
{
    uintptr_t old = atomic_exchange_explicit(&rw->bits, 0, memory_order_release);
    if (!(old & FT_RWMUTEX_WRITE_LOCKED))
        ft_fatal("ft_rwmutex_unlock: rwmutex %p is not write-locked", (void *)rw);
    if (old & FT_RWMUTEX_HAS_PARKED)
        ft_parking_lot_unpark_all(&rw->bits);
}

/* ---- ft_seqlock ------------------------------------------------------------------------------
 * A writer makes the sequence odd, writes, and makes it even again; a reader copies the data between
 * two reads of the sequence and retries if the sequence was odd or changed. The fences order the
 * data accesses (relaxed atomics in the caller) against the sequence updates. */

void ft_seqlock_write_begin(ft_seqlock *s)
{
    for (;;) {
        uint32_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
        if (!(seq & 1) &&
            atomic_compare_exchange_weak_explicit(&s->seq, &seq, seq + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            break;
        ft_cpu_relax();
    }
    atomic_thread_fence(memory_order_release);
}

void ft_seqlock_write_end(ft_seqlock *s)
{
    atomic_fetch_add_explicit(&s->seq, 1, memory_order_release);
}

void ft_seqlock_write_abandon(ft_seqlock *s)
{
    atomic_fetch_sub_explicit(&s->seq, 1, memory_order_release);
}

uint32_t ft_seqlock_read_begin(ft_seqlock *s)
{
    uint32_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    while (seq & 1) {
        ft_cpu_relax();
        seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    }
    return seq;
}

bool ft_seqlock_read_retry(ft_seqlock *s, uint32_t seq)
{
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&s->seq, memory_order_relaxed) != seq;
}

void ft_seqlock_after_fork(ft_seqlock *s)
{
    if (atomic_load_explicit(&s->seq, memory_order_relaxed) & 1)
        atomic_store_explicit(&s->seq, 0, memory_order_relaxed);
}
