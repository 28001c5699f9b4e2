/* ftrt/parking_lot.h: wait on any address, like a futex on values of 1, 2, 4 or 8 bytes.
 *
 * The parking lot is process-wide (it is keyed by address, so runtimes never collide): a fixed table
 * of buckets hashed by address, each with a short internal lock and a FIFO of waiters. Park checks
 * the value at the address under the bucket lock, so a wake-up that changes the value first and then
 * unparks can never be lost. Unpark runs a callback under the bucket lock that may hand data to the
 * waiter it wakes; the mutex uses this for direct hand-off. */
#ifndef FTRT_PARKING_LOT_H
#define FTRT_PARKING_LOT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Park the caller on addr while *addr equals expected (size bytes: 1, 2, 4 or 8).
 * park_arg is handed to the unparker's callback. Returns FT_OK when woken by an unpark (with the
 * unparker's wake_arg in *wake_arg if not NULL), FT_EAGAIN if *addr did not equal expected, or
 * FT_ETIMEDOUT. The caller's ftrt thread state is not detached: see ft_mutex_lock_timed for that. */
FT_API ft_status ft_parking_lot_park(const void *addr, const void *expected, size_t size,
                                     int64_t timeout_ns, void *park_arg, void **wake_arg);

/* Called under the bucket lock by ft_parking_lot_unpark. park_arg is the woken waiter's (NULL if no
 * waiter was found); has_more tells whether other waiters may remain on the address (it can be a
 * false positive, never a false negative). The return value becomes the waiter's *wake_arg. */
typedef void *(*ft_unpark_fn)(void *arg, void *park_arg, bool has_more);

/* Wake the oldest waiter on addr, running fn first (if not NULL). Returns whether one was woken. */
FT_API bool ft_parking_lot_unpark(const void *addr, ft_unpark_fn fn, void *arg);

/* Wake every waiter on addr. Returns how many were woken. */
FT_API size_t ft_parking_lot_unpark_all(const void *addr);

#ifdef __cplusplus
}
#endif
#endif
