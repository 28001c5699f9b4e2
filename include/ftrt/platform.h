/* ftrt/platform.h: the few platform facts that inline fast paths need.
 *
 * ft_os_thread_id() names the calling OS thread with one instruction: the thread pointer (the TLS
 * base register), which is unique among live threads and stable for a thread's life. It is not a
 * kernel tid; it may be reused after the thread exits. It is read with __builtin_thread_pointer where
 * the compiler has it, else with an instruction on x86-64 and AArch64 (the same value); on any other
 * target this header stops the build rather than guess. Everything else that is platform-specific
 * lives in src/platform/. */
#ifndef FTRT_PLATFORM_H
#define FTRT_PLATFORM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* __has_builtin is tested on a line of its own: on a compiler without it, `__has_builtin(x)` in the
 * same #if would be a syntax error even behind `defined(__has_builtin) &&`. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_thread_pointer)
#define FT_HAVE_BUILTIN_THREAD_POINTER 1
#endif
#endif

static inline uintptr_t ft_os_thread_id(void)
{
    uintptr_t tid;
#if defined(FT_HAVE_BUILTIN_THREAD_POINTER)
    /* The compiler knows this value is constant for the thread, so it reads the register once per
     * function rather than once per use (an asm statement is not moved across memory clobbers). */
    tid = (uintptr_t)__builtin_thread_pointer();
#elif defined(__x86_64__)
    /* The first word of the thread control block points to itself: the same value. */
    __asm__("movq %%fs:0, %0" : "=r"(tid));
#elif defined(__aarch64__)
    __asm__("mrs %0, tpidr_el0" : "=r"(tid));
#else
    /* No per-TU fallback: a _Thread_local in this inline function would be a different object in
     * every translation unit, so the library and its callers would disagree about the id. */
#error "ftrt/platform.h: no way to read the thread pointer on this target (add one here)"
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
