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
void ft_futex_wake_all(_Atomic(uint32_t) *addr);

/* The number of CPUs online (at least 1). */
int ft_cpu_count(void);

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

/* Ask for p's cache line in a writable state, for a CAS or store that comes soon (BRC's drain).
 * A read prefetch (all that __builtin_prefetch gives generic x86-64) would fetch the line shared and
 * leave the write another round trip. Processors without PREFETCHW execute it as a no-op. */
static inline void ft_prefetch_for_write(const void *p)
{
#if defined(__x86_64__)
    __asm__("prefetchw %0" ::"m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1);
#endif
}

/* Hide a value from the optimiser without emitting code: the compiler must assume the empty asm
 * changed it, so it neither rebuilds the value before each use nor sees through it (the payload
 * zeroing in object.c). FT_OPAQUE_VECTOR keeps a 16-byte vector in a vector register. */
#define FT_OPAQUE(v) __asm__("" : "+r"(v))
#if defined(__x86_64__) || defined(__i386__)
#define FT_OPAQUE_VECTOR(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define FT_OPAQUE_VECTOR(v) __asm__("" : "+w"(v))
#else
#define FT_OPAQUE_VECTOR(v) __asm__("" : "+m"(v))
#endif

#endif
