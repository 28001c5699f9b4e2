/* lib/tlbc.h: the state of thread-local code copies (tlbc.c): the runtime's registry of code
 * buffers, which ft_tlbc_clear_unused_stopped walks. Each thread's copy index is
 * ft_thread_head.tlbc_index. */
#ifndef FTRT_LIB_TLBC_H
#define FTRT_LIB_TLBC_H

#include "ftrt/lock.h"
#include "ftrt/tlbc.h"

/* The runtime's part (ft_runtime.tlbc). */
typedef struct ft_tlbc_runtime {
    ft_mutex mutex; /* guards list and every buffer's prev/next; taken after head_mutex, never
                       with it held */
    ft_tlbc *list;  /* every registered code buffer; under mutex */
} ft_tlbc_runtime;

/* ft_tlbc_clear_unused inside a stop the caller holds: free the copies at indices no started
 * thread holds; returns how many. Plain memory, no destructors: nothing to hand back. */
size_t ft_tlbc_clear_unused_stopped(ft_runtime *rt);

#endif
