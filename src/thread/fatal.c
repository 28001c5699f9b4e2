/* fatal.c: status strings, the per-thread last error, and the fatal-error path.
 *
 * The fatal handler and its argument are process-wide and set together, so they are kept as one
 * atomically published pair: a fatal error racing ft_set_fatal_handler sees either the old pair or
 * the new one, never a mix. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal/internal.h"

const char *ft_status_str(ft_status s)
{
    switch (s) {
    case FT_OK:
        return "success";
    case FT_ENOMEM:
        return "out of memory";
    case FT_EINVAL:
        return "invalid argument";
    case FT_EBUSY:
        return "busy: still in use";
    case FT_ETIMEDOUT:
        return "timed out";
    case FT_EEXIST:
        return "already exists";
    case FT_EAGAIN:
        return "value changed; try again";
    case FT_EPERM:
        return "not permitted from this thread or in this state";
    case FT_EIO:
        return "input/output error";
    }
    return "unknown status";
}

static _Thread_local ft_status last_error;

void ft_set_last_error(ft_status s)
{
    last_error = s;
}

ft_status ft_last_error(void)
{
    return last_error;
}

struct fatal_handler {
    ft_fatal_handler fn;
    void *arg;
};

/* Process-wide: the replaceable fatal handler, published with a release store. Handlers live until
 * process exit (a replaced one is not freed: a concurrent fatal error may still be reading it). */
static _Atomic(struct fatal_handler *) fatal_handler;

void ft_set_fatal_handler(ft_fatal_handler fn, void *arg)
{
    struct fatal_handler *h = NULL;
    if (fn) {
        h = malloc(sizeof *h);
        if (!h)
            ft_fatal("ft_set_fatal_handler: out of memory");
        h->fn = fn;
        h->arg = arg;
    }
    atomic_store_explicit(&fatal_handler, h, memory_order_release);
}

void ft_fatal(const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ftrt: fatal: %s\n", message);
    fflush(stderr);
    struct fatal_handler *h = atomic_load_explicit(&fatal_handler, memory_order_acquire);
    if (h)
        h->fn(message, h->arg);
    abort();
}
