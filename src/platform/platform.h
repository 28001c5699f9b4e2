/* platform/platform.h: the operating-system services ftrt builds on, and nothing else.
 *
 * Everything OS-specific sits behind these few calls, implemented once per platform (linux.c today).
 * A port to another OS supplies: a 32-bit address wait/wake (futex, WaitOnAddress, __ulock), a
 * monotonic clock, and page memory (mmap/munmap/madvise, VirtualAlloc/VirtualFree, ...).
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

/* Page memory, for the heap (heap/page.c). Addresses and sizes are multiples of the system page size;
 * an alignment is a power of two.
 *
 * ft_vm_map_aligned returns size bytes of zeroed read/write memory starting at a multiple of
 * alignment, or NULL when the system has none. ft_vm_release gives back a whole mapping, as mapped.
 * ft_vm_decommit gives the physical memory under [p, p + size) back to the system and keeps the range
 * mapped: the next touch finds zeroed memory there. */
void *ft_vm_map_aligned(size_t size, size_t alignment);
void ft_vm_release(void *p, size_t size);
void ft_vm_decommit(void *p, size_t size);

#endif
