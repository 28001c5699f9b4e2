/* thread/critical_section.h: what detach and attach do to a thread's critical sections
 * (critical_section.c). A thread's innermost section is ft_thread.cs_top, a tagged pointer. */
#ifndef FTRT_THREAD_CRITICAL_SECTION_H
#define FTRT_THREAD_CRITICAL_SECTION_H

#include <stdbool.h>
#include <stdint.h>

#include "ftrt/critical_section.h"

/* Tagging of ft_thread.cs_top and ft_critical_section.prev: the tag describes the record pointed to. */
#define FT_CS_INACTIVE ((uintptr_t)1) /* its mutexes were released by a detach */
#define FT_CS_TWO ((uintptr_t)2)      /* it is an ft_critical_section2 */
#define FT_CS_TAGS (FT_CS_INACTIVE | FT_CS_TWO)

void ft_critical_section_suspend_all(ft_thread *t);
void ft_critical_section_resume(ft_thread *t);
bool ft_critical_section_active_top(const ft_thread *t);

#endif
