/* sync/sync.h: what the other layers use of the locks internally.
 *
 * ftrt's own mutexes (the runtime's head, the heaps', the BRC buckets', the pools' and registries')
 * guard short sections that never reach a safepoint, never block on another thread's progress and
 * never call back into the host. So they are taken without detaching: a thread that waits for one
 * stays attached, and a stop-the-world that starts meanwhile waits for it only as long as the
 * holder's section lasts. docs/architecture.md has the order in which they nest. */
#ifndef FTRT_SYNC_H
#define FTRT_SYNC_H

#include "ftrt/lock.h"

static inline void ft_mutex_lock_internal(ft_mutex *m)
{
    ft_mutex_lock_timed(m, FT_FOREVER, FT_LOCK_DONT_DETACH);
}

#endif
