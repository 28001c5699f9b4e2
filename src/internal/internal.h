/* internal/internal.h: functions shared between ftrt's source files, not part of the API. */
#ifndef FTRT_INTERNAL_H
#define FTRT_INTERNAL_H

#include "internal/types.h"
#include "platform/platform.h"

#define FT_TLS_INITIAL_EXEC __attribute__((tls_model("initial-exec")))

/* thread.c: the attached thread state of the calling OS thread (ft_thread_current). */
extern FT_TLS_INITIAL_EXEC _Thread_local ft_thread *ft_current_thread;

/* fatal.c */
void ft_set_last_error(ft_status s);

/* Test hook (ft_debug_fail_allocation): whether this allocation site must fail now. */
static inline bool ft_inject_failure(ft_runtime *rt)
{
    if (FT_LIKELY(atomic_load_explicit(&rt->fail_countdown, memory_order_relaxed) < 0))
        return false;
    return atomic_fetch_sub_explicit(&rt->fail_countdown, 1, memory_order_relaxed) == 0;
}

/* object.c: the count reached zero: finalize, dealloc and free o. */
void ft_object_dealloc(ft_object *o);
ft_runtime *ft_object_runtime(const ft_object *o);

/* brc.c */
void ft_brc_enqueue(ft_object *o);
void ft_brc_thread_start(ft_thread *t);
void ft_brc_thread_stop(ft_thread *t);
void ft_brc_thread_detach(ft_thread *t); /* hand the outbox over, freeing nothing */
void ft_brc_forget_thread(ft_thread *t); /* after fork: drop a dead thread without draining */

/* freelist.c */
ft_object *ft_freelist_pop(ft_thread *t, const ft_type *type);
bool ft_freelist_push(ft_thread *t, ft_object *o);
void ft_freelist_thread_stop(ft_thread *t);

/* qsbr.c */
ft_status ft_qsbr_runtime_init(ft_runtime *rt);
void ft_qsbr_runtime_destroy(ft_runtime *rt);
ft_status ft_qsbr_reserve(ft_runtime *rt, uint32_t index); /* before the thread is linked */
ft_thread *ft_qsbr_state_at(ft_runtime *rt, uint32_t index);  /* head_mutex held */
void ft_qsbr_publish_state(ft_runtime *rt, ft_thread *t);      /* head_mutex held */
void ft_qsbr_bind(ft_thread *t);
void ft_qsbr_attach(ft_thread *t);
void ft_qsbr_detach(ft_thread *t);
bool ft_qsbr_goal_reached(ft_runtime *rt, uint64_t goal); /* attached caller or world stopped */

/* uniqueid.c */
void ft_uniqueid_thread_stop(ft_thread *t);
void ft_uniqueid_runtime_destroy(ft_runtime *rt);

/* delayed.c */
void ft_delayed_install_page_hook(ft_runtime *rt);
void ft_delayed_thread_stop(ft_thread *t);
void ft_delayed_hand_over(ft_thread *t); /* move t's queue to the runtime's */
void ft_delayed_seal(ft_thread *t, uint64_t goal); /* t's items without a goal take this one */
void ft_delayed_process_stopped(ft_runtime *rt); /* the world is stopped by the caller */
void ft_delayed_runtime_destroy(ft_runtime *rt);

/* critical_section.c: called by detach and attach of the owning thread. */
void ft_critical_section_suspend_all(ft_thread *t);
void ft_critical_section_resume(ft_thread *t);
bool ft_critical_section_active_top(const ft_thread *t);

/* Tagging of ft_thread.cs_top and ft_critical_section.prev: the tag describes the record pointed to. */
#define FT_CS_INACTIVE ((uintptr_t)1) /* its mutexes were released by a detach */
#define FT_CS_TWO ((uintptr_t)2)      /* it is an ft_critical_section2 */
#define FT_CS_TAGS (FT_CS_INACTIVE | FT_CS_TWO)

/* stw.c: called by a thread that saw FT_PENDING_STOP, instead of storing DETACHED. */
void ft_stw_suspend_self(ft_thread *t);

/* Whether t is the thread that has stopped its runtime's world. */
static inline bool ft_stw_is_requester(const ft_thread *t)
{
    ft_runtime *rt = t->rt;
    return atomic_load_explicit(&rt->stw.world_stopped, memory_order_relaxed) &&
           atomic_load_explicit(&rt->stw.requester, memory_order_relaxed) == t;
}

#endif
