/* ftrt/platform.h: the few platform facts that inline fast paths need.
 *
 * ft_os_thread_id() names the calling OS thread with one instruction: the thread pointer (the TLS
 * base register), which is unique among live threads and stable for a thread's life. It is not a
 * kernel tid; it may be reused after the thread exits. Everything else that is platform-specific
 * lives in src/platform/. */
#ifndef FTRT_PLATFORM_H
#define FTRT_PLATFORM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline uintptr_t ft_os_thread_id(void)
{
    uintptr_t tid;
#if defined(__has_builtin) && __has_builtin(__builtin_thread_pointer)
    /* The compiler knows this value is constant for the thread, so it reads the register once per
     * function rather than once per use (an asm statement is not moved across memory clobbers). */
    tid = (uintptr_t)__builtin_thread_pointer();
#elif defined(__x86_64__)
    __asm__("movq %%fs:0, %0" : "=r"(tid));
#elif defined(__aarch64__)
    __asm__("mrs %0, tpidr_el0" : "=r"(tid));
#else
    static _Thread_local char ft_tid_anchor;
    tid = (uintptr_t)&ft_tid_anchor;
#endif
    return tid;
}

/* A hint inside spin loops. */
static inline void ft_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

#ifdef __cplusplus
}
#endif
#endif
