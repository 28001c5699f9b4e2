/* platform/linux.c: futex wait/wake, the monotonic clock and page memory on Linux.
 *
 * Waits use FUTEX_WAIT_BITSET with an absolute CLOCK_MONOTONIC deadline, so a wait that is
 * interrupted and resumed keeps its original deadline without recomputing it. The futexes are
 * private: ftrt never shares its wait words between processes.
 *
 * Page memory is anonymous private mmap. An aligned mapping is made by mapping alignment bytes more
 * than asked and unmapping the misaligned head and the unused tail, so it is one mapping of exactly
 * the size asked, which munmap later gives back whole. Decommitting is madvise(MADV_DONTNEED), after
 * which private anonymous pages read as zero. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "platform/platform.h"

ft_status ft_futex_wait_until(_Atomic(uint32_t) *addr, uint32_t expected, int64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;
    if (deadline_ns >= 0) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000);
        ts.tv_nsec = (long)(deadline_ns % 1000000000);
        tsp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET_PRIVATE, expected, tsp, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return FT_OK;
    switch (errno) {
    case EAGAIN:
        return FT_EAGAIN;
    case ETIMEDOUT:
        return FT_ETIMEDOUT;
    default: /* EINTR: the caller re-checks and waits again */
        return FT_OK;
    }
}

void ft_futex_wake_one(_Atomic(uint32_t) *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void ft_futex_wake_all(_Atomic(uint32_t) *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

int ft_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > INT32_MAX ? INT32_MAX : (int)n;
}

int64_t ft_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void *ft_vm_map_aligned(size_t size, size_t alignment)
{
    if (size > SIZE_MAX - alignment)
        return NULL;
    size_t span = size + alignment;
    uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *aligned = (uint8_t *)(((uintptr_t)raw + alignment - 1) & ~(uintptr_t)(alignment - 1));
    if (aligned > raw)
        munmap(raw, (size_t)(aligned - raw));
    size_t tail = (size_t)(raw + span - (aligned + size));
    if (tail)
        munmap(aligned + size, tail);
    return aligned;
}

void ft_vm_release(void *p, size_t size)
{
    munmap(p, size);
}

void ft_vm_decommit(void *p, size_t size)
{
    madvise(p, size, MADV_DONTNEED);
}
