/* ftrt/critical_section.h: per-object critical sections that cannot deadlock.
 *
 * A critical section locks one ft_mutex (or two, in address order) for the calling thread, like a
 * scoped lock, with two differences that make it safe to nest them freely:
 *  - when the thread detaches (around any blocking call, including waiting for a contended mutex), all
 *    of its critical sections are suspended and their mutexes released; on attach only the innermost
 *    is locked again, and outer ones are re-locked when the inner ones end;
 *  - beginning a section on a mutex the innermost section already holds is a no-op.
 * So a thread only ever waits while it holds no critical-section mutex, with one exception: a
 * two-mutex section takes its mutexes in address order and keeps the lower while it waits for the
 * higher. Every two-mutex section takes them in that order, so no lock-order deadlock is possible.
 * The price: after anything that may block, an outer section's invariants may have changed, and code
 * must re-check them.
 *
 * Records live on the caller's stack and must be ended in reverse order:
 *
 *     ft_critical_section cs;
 *     ft_critical_section_begin(t, &cs, &obj->mutex);
 *     ...
 *     ft_critical_section_end(t, &cs);
 *
 * While a thread has stopped the world, its critical sections never wait: a mutex that is free is
 * taken as usual, a contended one is skipped (the other threads cannot run, and the mutex may have
 * been handed to a thread that the stop has suspended, which would never release it: gh-144513).
 * Such sections must end before the world restarts. */
#ifndef FTRT_CRITICAL_SECTION_H
#define FTRT_CRITICAL_SECTION_H

#include "lock.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ft_critical_section {
    uintptr_t prev;  /* the enclosing record, tagged; owner thread only */
    ft_mutex *mutex; /* NULL for a no-op section */
} ft_critical_section;

typedef struct ft_critical_section2 {
    ft_critical_section base;
    ft_mutex *mutex2; /* the higher-addressed mutex */
} ft_critical_section2;

FT_API void ft_critical_section_begin(ft_thread *t, ft_critical_section *c, ft_mutex *m);
FT_API void ft_critical_section_end(ft_thread *t, ft_critical_section *c);
FT_API void ft_critical_section2_begin(ft_thread *t, ft_critical_section2 *c, ft_mutex *a,
                                       ft_mutex *b);
FT_API void ft_critical_section2_end(ft_thread *t, ft_critical_section2 *c);

/* Whether the innermost active section of t holds m (either mutex of a two-mutex section). */
FT_API bool ft_critical_section_holds(const ft_thread *t, const ft_mutex *m);

#ifdef __cplusplus
}
#endif
#endif
