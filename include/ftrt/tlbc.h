/* ftrt/tlbc.h: thread-local copies of code (thread-local bytecode).
 *
 * An interpreter that specialises its bytecode in place (rewriting instructions with type-specific
 * variants as it learns) cannot share one buffer between threads that specialise differently. ftrt
 * keeps per-thread copies of a code buffer, indexed by the thread's small index (ft_thread_index):
 *
 *  - index 0 is the original buffer, used by the first thread (index 0), and by every thread when
 *    the feature is off (ft_config.tlbc_disabled, or FTRT_TLBC=0 in the environment; then the host
 *    must not specialise, since all threads share one buffer);
 *  - another thread's copy is made on its first ft_tlbc_get, by the host's copy callback (which
 *    copies the original and resets its specialisation);
 *  - the copies array grows under the buffer's lock and is published with a release store; the old
 *    array is freed with QSBR, so lock-free readers of it stay safe;
 *  - a stopped thread's copy is kept and inherited by the next thread that gets the same index;
 *    ft_tlbc_clear_unused frees the copies at indices no started thread holds.
 *
 * The rule that makes freeing copies safe (CPython's open question: a suspended frame carrying a
 * dead thread's index): a thread executes only in the copy ft_tlbc_get returned *to it*, and host
 * frames store positions as offsets, never as pointers into a copy or as a copy's index. A frame
 * resumed on any thread calls ft_tlbc_get for that thread and continues at the same offset. There
 * is no call that returns a copy by index. So a copy is in use only by the live thread whose index
 * it has, and ft_tlbc_clear_unused (with the world stopped) never frees such a copy. */
#ifndef FTRT_TLBC_H
#define FTRT_TLBC_H

#include <stdatomic.h>

#include "lock.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Copy size bytes of the original code into dst, resetting whatever the host specialised. */
typedef void (*ft_tlbc_copy_fn)(void *dst, const void *original, size_t size, void *arg);

typedef struct ft_tlbc_array {
    size_t size;              /* entries; immutable once published */
    void *_Atomic entries[];  /* index i's copy or NULL: stored (release) under the buffer's mutex,
                                 or cleared with the world stopped; loaded with acquire; [0] is
                                 the original */
} ft_tlbc_array;
/* Read by ft_tlbc_get. */
FT_ABI_OFFSET(ft_tlbc_array, size, 0);
FT_ABI_OFFSET(ft_tlbc_array, entries, 8);

/* Embed one in the host's code object. All fields are ftrt's. */
typedef struct ft_tlbc {
    _Atomic(ft_tlbc_array *) copies; /* release-stored under mutex; read without a lock */
    ft_mutex mutex;                  /* guards growth and the making of copies */
    size_t size;                     /* code bytes; immutable */
    ft_tlbc_copy_fn copy;            /* immutable */
    void *arg;                       /* immutable */
    ft_runtime *rt;                  /* immutable */
    struct ft_tlbc *prev, *next;     /* the runtime's list of buffers; under its tlbc lock */
} ft_tlbc;
FT_ABI_OFFSET(ft_tlbc, copies, 0); /* read by ft_tlbc_get */

/* Register code (size bytes, owned by the host and kept alive until ft_tlbc_destroy) in rt.
 * FT_ENOMEM if the first copies array cannot be allocated. */
FT_API ft_status ft_tlbc_init(ft_tlbc *c, ft_thread *t, void *code, size_t size,
                              ft_tlbc_copy_fn copy, void *arg);

/* Free every copy (not the original) and unregister. No thread may execute in c any more. */
FT_API void ft_tlbc_destroy(ft_tlbc *c, ft_thread *t);

/* ABI, not API: the slow path of ft_tlbc_get, called only by the inline code below (the ft__
 * prefix: see ftrt/object.h, "ABI, not API"). */
FT_API void *ft__tlbc_get_slow(ft_tlbc *c, ft_thread *t);

/* The code t executes: its own copy, made on first use. NULL (ft_last_error() == FT_ENOMEM) only if
 * a copy had to be made and could not. Growing the copies array retires the old one with
 * ft_free_delayed, which stops the world if its queue cannot grow (ftrt/qsbr.h). */
static inline void *ft_tlbc_get(ft_tlbc *c, ft_thread *t)
{
    ft_tlbc_array *a = atomic_load_explicit(&c->copies, memory_order_acquire);
    size_t index = ((struct ft_thread_head *)t)->tlbc_index;
    if (FT_LIKELY(index < a->size)) {
        void *code = atomic_load_explicit(&a->entries[index], memory_order_acquire);
        if (FT_LIKELY(code != NULL))
            return code;
    }
    return ft__tlbc_get_slow(c, t);
}

/* Whether threads get their own copies (false when disabled: everyone shares the original). */
FT_API bool ft_tlbc_enabled(const ft_runtime *rt);

/* Stop the world (unless the caller holds the stop already) and free the copies at indices that no
 * started thread holds; returns how many. The stop makes it a quiescent point for the caller
 * (ftrt/qsbr.h). */
FT_API size_t ft_tlbc_clear_unused(ft_runtime *rt);

/* Copies in existence (originals excluded), over all of rt's buffers. Stops the world (unless the
 * caller holds the stop already), so it is a quiescent point for the caller. */
FT_API size_t ft_tlbc_count(ft_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif
