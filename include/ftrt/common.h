/* ftrt/common.h: status codes, the export macro, timeouts and the fatal-error path.
 *
 * Every function that can fail returns an ft_status (or NULL, with the status available from
 * ft_last_error() on the calling OS thread). Misuse that cannot be recovered from goes through
 * ft_fatal(), which prints the message and calls the fatal handler; the default handler aborts. */
#ifndef FTRT_COMMON_H
#define FTRT_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FT_API
#else
#define FT_API __attribute__((visibility("default")))
#endif

#define FT_LIKELY(x) __builtin_expect(!!(x), 1)
#define FT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define FT_NORETURN _Noreturn
#define FT_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* A compile-time check that C and C++ hosts both accept. The headers use it to pin the offset of
 * every field an inline fast path reads: those offsets are compiled into the host's code, so they
 * are part of the ABI, and moving a field must fail the build rather than break programs built
 * against an older header. The checks hold on LP64 targets (64-bit Linux); others skip them. */
#ifdef __cplusplus
#define FT_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define FT_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif
#if defined(__LP64__)
#define FT_ABI_OFFSET(type, field, offset)                                                         \
    FT_STATIC_ASSERT(offsetof(type, field) == (offset), "ABI: " #type "." #field " moved")
#else
#define FT_ABI_OFFSET(type, field, offset) FT_STATIC_ASSERT(1, "")
#endif

typedef enum ft_status {
    FT_OK = 0,
    FT_ENOMEM = -1,    /* an allocation failed; nothing was changed */
    FT_EINVAL = -2,    /* a bad argument */
    FT_EBUSY = -3,     /* the object is in use (e.g. a runtime with threads still started) */
    FT_ETIMEDOUT = -4, /* a timed wait ran out */
    FT_EEXIST = -5,    /* already there (e.g. a second thread state for one OS thread) */
    FT_EAGAIN = -6,    /* the compared value changed; try again */
    FT_EPERM = -7,     /* not allowed from this thread or in this state */
    FT_EIO = -8,       /* a file could not be opened or written (e.g. a trace: ftrt/trace.h) */
} ft_status;

/* A short English description of a status, never NULL. */
FT_API const char *ft_status_str(ft_status s);

/* The status left by the last failed call that returned NULL on the calling OS thread. */
FT_API ft_status ft_last_error(void);

/* Timeouts are in nanoseconds; FT_FOREVER waits without a limit, 0 only tries. */
#define FT_FOREVER ((int64_t)-1)
#define FT_NS_PER_US INT64_C(1000)
#define FT_NS_PER_MS INT64_C(1000000)

/* The fatal handler receives the whole message (no trailing newline). It must not return; if it
 * does, ftrt aborts anyway. The handler is process-wide (one per process, not per runtime), because
 * misuse such as unlocking an unlocked mutex is detected where no runtime is known. Setting it is
 * not synchronised with concurrent fatal errors: set it once at start-up. */
typedef void (*ft_fatal_handler)(const char *message, void *arg);
FT_API void ft_set_fatal_handler(ft_fatal_handler handler, void *arg);

/* Report unrecoverable misuse: prints "ftrt: fatal: <message>" to stderr, calls the handler, aborts. */
FT_API FT_NORETURN void ft_fatal(const char *fmt, ...) FT_PRINTF(1, 2);

#ifdef __cplusplus
}
#endif
#endif
