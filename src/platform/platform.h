/* platform/platform.h: the operating-system services ftrt builds on, and nothing else.
 *
 * Everything OS-specific sits behind these few calls, implemented once per platform (linux.c today).
 * A port to another OS supplies: a 32-bit address wait/wake (futex, WaitOnAddress, __ulock) and a
 * monotonic clock.
 *
 * ft_futex_wait_until blocks while *addr == expected, until woken, a signal or the absolute monotonic
 * deadline (FT_FOREVER for none). It may return spuriously; callers re-check their condition. */
#ifndef FTRT_PLATFORM_INTERNAL_H
#define FTRT_PLATFORM_INTERNAL_H

#include <stdatomic.h>

#include "ftrt/common.h"
#include "ftrt/platform.h"

/* FT_OK (woken or spurious), FT_EAGAIN (*addr != expected) or FT_ETIMEDOUT. */
ft_status ft_futex_wait_until(_Atomic(uint32_t) *addr, uint32_t expected, int64_t deadline_ns);
void ft_futex_wake_one(_Atomic(uint32_t) *addr);

/* Monotonic nanoseconds since an arbitrary origin. */
int64_t ft_monotonic_ns(void);

/* The absolute deadline for a relative timeout (FT_FOREVER stays FT_FOREVER). */
static inline int64_t ft_deadline_after(int64_t timeout_ns)
{
    return timeout_ns < 0 ? FT_FOREVER : ft_monotonic_ns() + timeout_ns;
}

#endif
