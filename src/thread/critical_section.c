/* critical_section.c: per-object critical sections that are released whenever their thread detaches.
 *
 * Each thread keeps a stack of critical-section records (on the C stack, linked through prev) whose
 * top is t->cs_top. A link is tagged: FT_CS_TWO says the record it points to is a two-mutex record,
 * FT_CS_INACTIVE says that record's mutexes were released by a detach.
 *
 * Begin tries the mutex; if that fails, and the top record already holds it, the new record is a
 * no-op (mutex NULL, not pushed); otherwise the record is pushed with no mutex yet, and the thread
 * locks the mutex detached (so all its other sections are released while it waits) before storing
 * it. End unlocks and pops, and re-locks the new top if a detach had released it.
 *
 * Detach walks down from the top, unlocking every active record and marking it INACTIVE, and stops
 * at the first record that is already inactive (everything below it is inactive too). Attach
 * re-locks only the top record; deeper ones are re-locked as the records above them end. So a
 * thread never waits while holding a critical-section mutex, with one exception: a two-mutex section
 * takes its mutexes in address order and keeps the lower while it waits for the higher (the record
 * names neither until it holds both, so a detach meanwhile does not release the lower). Anyone who
 * takes both takes them in that order, so this wait cannot close a cycle: no deadlock.
 *
 * A thread that has stopped the world never waits in its critical sections: a free mutex is taken
 * as usual, a contended one is skipped (the section is a no-op). No other thread runs, and a
 * contended mutex may have been handed to a thread that the stop has suspended, which would never
 * release it (gh-144513). Such sections must end before the world restarts. */
#include "internal/internal.h"

static ft_critical_section *untag(uintptr_t link)
{
    return (ft_critical_section *)(link & ~FT_CS_TAGS);
}

static void push(ft_thread *t, ft_critical_section *c, uintptr_t tag)
{
    c->prev = t->cs_top;
    t->cs_top = (uintptr_t)c | tag;
}

bool ft_critical_section_active_top(const ft_thread *t)
{
    return t->cs_top != 0 && !(t->cs_top & FT_CS_INACTIVE);
}

static bool top_holds(const ft_thread *t, const ft_mutex *m)
{
    if (!ft_critical_section_active_top(t))
        return false;
    ft_critical_section *c = untag(t->cs_top);
    if (c->mutex == m)
        return true;
    return (t->cs_top & FT_CS_TWO) && ((ft_critical_section2 *)c)->mutex2 == m;
}

bool ft_critical_section_holds(const ft_thread *t, const ft_mutex *m)
{
    return m != NULL && top_holds(t, m);
}

void ft_critical_section_begin(ft_thread *t, ft_critical_section *c, ft_mutex *m)
{
    if (FT_LIKELY(ft_mutex_trylock(m))) {
        c->mutex = m;
        push(t, c, 0);
        return;
    }
    if (top_holds(t, m) || ft_stw_is_requester(t)) {
        c->mutex = NULL;
        return;
    }
    c->mutex = NULL;
    push(t, c, 0);
    ft_mutex_lock_timed(m, FT_FOREVER, FT_LOCK_DETACH);
    c->mutex = m;
}

void ft_critical_section_end(ft_thread *t, ft_critical_section *c)
{
    if (!c->mutex)
        return;
    if (FT_UNLIKELY(untag(t->cs_top) != c))
        ft_fatal("ft_critical_section_end: section %p of thread state %p is not the innermost "
                 "(innermost is %p)",
                 (void *)c, (void *)t, (void *)untag(t->cs_top));
    ft_mutex_unlock(c->mutex);
    if (t->cs_top & FT_CS_TWO) {
        ft_critical_section2 *c2 = (ft_critical_section2 *)c;
        if (c2->mutex2)
            ft_mutex_unlock(c2->mutex2);
    }
    t->cs_top = c->prev;
    if (t->cs_top & FT_CS_INACTIVE)
        ft_critical_section_resume(t);
}

void ft_critical_section2_begin(ft_thread *t, ft_critical_section2 *c, ft_mutex *a, ft_mutex *b)
{
    c->mutex2 = NULL;
    if (a == b) {
        ft_critical_section_begin(t, &c->base, a);
        return;
    }
    if ((uintptr_t)a > (uintptr_t)b) {
        ft_mutex *tmp = a;
        a = b;
        b = tmp;
    }
    if (ft_mutex_trylock(a)) {
        if (ft_mutex_trylock(b)) {
            c->base.mutex = a;
            c->mutex2 = b;
            push(t, &c->base, FT_CS_TWO);
            return;
        }
        ft_mutex_unlock(a);
    }
    if ((top_holds(t, a) && top_holds(t, b)) || ft_stw_is_requester(t)) {
        c->base.mutex = NULL;
        return;
    }
    c->base.mutex = NULL;
    push(t, &c->base, FT_CS_TWO);
    ft_mutex_lock_timed(a, FT_FOREVER, FT_LOCK_DETACH);
    ft_mutex_lock_timed(b, FT_FOREVER, FT_LOCK_DETACH);
    c->base.mutex = a;
    c->mutex2 = b;
}

void ft_critical_section2_end(ft_thread *t, ft_critical_section2 *c)
{
    ft_critical_section_end(t, &c->base);
}

void ft_critical_section_suspend_all(ft_thread *t)
{
    uintptr_t *link = &t->cs_top;
    while (*link != 0 && !(*link & FT_CS_INACTIVE)) {
        ft_critical_section *c = untag(*link);
        if (c->mutex)
            ft_mutex_unlock(c->mutex);
        if ((*link & FT_CS_TWO) && ((ft_critical_section2 *)c)->mutex2)
            ft_mutex_unlock(((ft_critical_section2 *)c)->mutex2);
        *link |= FT_CS_INACTIVE;
        link = &c->prev;
    }
}

void ft_critical_section_resume(ft_thread *t)
{
    uintptr_t top = t->cs_top;
    if (!(top & FT_CS_INACTIVE))
        return;
    ft_critical_section *c = untag(top);
    ft_critical_section2 *c2 = (top & FT_CS_TWO) ? (ft_critical_section2 *)c : NULL;
    ft_mutex *m1 = c->mutex, *m2 = c2 ? c2->mutex2 : NULL;
    /* Mark the record active but empty while locking: if a wait detaches us, the nested detach
     * releases nothing of this record (m1 stays held while we wait for m2, in address order) and
     * the nested attach has nothing to re-lock. */
    c->mutex = NULL;
    if (c2)
        c2->mutex2 = NULL;
    t->cs_top = top & ~FT_CS_INACTIVE;
    if (m1)
        ft_mutex_lock_timed(m1, FT_FOREVER, FT_LOCK_DETACH);
    if (m2)
        ft_mutex_lock_timed(m2, FT_FOREVER, FT_LOCK_DETACH);
    c->mutex = m1;
    if (c2)
        c2->mutex2 = m2;
}
