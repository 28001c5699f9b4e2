/* trace/trace.h: the state of tracing (trace.c) and the internal API its hooks and helper threads use.
 *
 * A trace records what the runtime's threads did as Chrome trace events (docs/tracing.md). Each
 * recording thread owns an ft_trace_buffer: a ring of fixed-size events with one writer (its owner)
 * and one reader at a time (whoever holds the runtime's trace mutex and writes them to the file).
 * An ft_thread's buffer hangs off its thread state; a helper thread that is not an ft_thread (the
 * collector's marking workers) opens its own with ft_trace_buffer_open and its own tid label. The
 * hooks are inline in internal/internal.h: with recording off they cost one relaxed load. */
#ifndef FTRT_TRACE_TRACE_H
#define FTRT_TRACE_TRACE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ftrt/lock.h"
#include "ftrt/runtime.h"
#include "ftrt/trace.h"

/* What an event is: its name, category and argument names (trace.c's table). */
typedef enum ft_trace_name {
    FT_TRACE_STW,             /* a stop, from its request to its restart (X; args: the times) */
    FT_TRACE_GC_COLLECT,      /* one collection (B/E; its E has the counts) */
    FT_TRACE_GC_SETTLE,       /* inside a collection: its phases (B/E) */
    FT_TRACE_GC_MARK_ALIVE,
    FT_TRACE_GC_SCRATCH,      /* scratch counts: gather the candidates, subtract their references */
    FT_TRACE_GC_GATHER,       /* inside scratch counts, on every marking worker */
    FT_TRACE_GC_SUBTRACT,
    FT_TRACE_GC_MARK,
    FT_TRACE_GC_WEAKREFS,
    FT_TRACE_GC_FINALIZERS,   /* weak reference callbacks, then finalizers */
    FT_TRACE_GC_RESURRECTION,
    FT_TRACE_GC_CLEAR,
    FT_TRACE_BRC_MERGE,       /* at a safepoint (B/E) */
    FT_TRACE_QSBR_PROCESS,    /* delayed frees polled and run at a safepoint (B/E) */
    FT_TRACE_QSBR_ADVANCE,    /* the write sequence advanced (instant) */
    FT_TRACE_NAMES
} ft_trace_name;

/* The tid of the stops requested from outside the runtime. Helper threads pick tids of their own
 * from FT_TRACE_TID_HELPERS up (thread indices are below both). */
#define FT_TRACE_TID_OUTSIDE 65535u
#define FT_TRACE_TID_HELPERS 65536u

typedef struct ft_trace_buffer ft_trace_buffer;

/* One thread's part (ft_thread.trace). buffer: set (release) under rt->head_mutex by ft_trace_start
 * or the thread's own start, taken back to NULL by the thread's stop under the same lock; read by
 * the owner (acquire). NULL: the thread records nothing (no session yet, or no memory). */
typedef struct ft_trace_thread {
    _Atomic(ft_trace_buffer *) buffer;
} ft_trace_thread;

/* The runtime's part (ft_runtime.trace). */
typedef struct ft_trace_runtime {
    /* The session being recorded, or 0: recording off. Written under mutex; read relaxed by every
     * hook (the one load recording off costs), and stored into each event so that an event recorded
     * by a thread that saw the session just before it ended is left out of the next one. */
    _Atomic(uint32_t) session;
    int64_t origin_ns; /* the runtime's creation: event times count from it; immutable */
    /* mutex (level 4 of the lock order: nothing is taken under it) guards everything below: the
     * file, the list of buffers and the reading side of each. Its holders write the file, but never
     * while they hold a stop, so a stop never waits for the file. */
    ft_mutex mutex;
    FILE *file;               /* the open trace, or NULL */
    char *path;               /* its path (owned), to remove it if the start fails */
    int64_t pid;              /* the process that opened the file: each event's pid */
    uint32_t last_session;    /* the last session number given out */
    uint32_t writing;         /* the session whose events go to the file, or 0 */
    bool io_error;            /* a write failed during this session */
    ft_trace_buffer *buffers; /* every open buffer (a list through their prev/next) */
    /* The buffer of stops requested from outside the runtime, whose writer is the holder of
     * rt->stw.mutex: made once under mutex (release), kept until the runtime is freed, read by its
     * writer and by flushers without the mutex (acquire). */
    _Atomic(ft_trace_buffer *) outside;
    /* Events lost because their thread had no buffer: any thread adds (relaxed); read under mutex. */
    _Atomic(uint64_t) lost;
} ft_trace_runtime;

/* ---- lifetime (runtime.c, thread.c) ---------------------------------------------------------- */

void ft_trace_runtime_init(ft_runtime *rt);
/* ft_runtime_free: end the session (writing the file) and free every buffer left. */
ft_status ft_trace_runtime_destroy(ft_runtime *rt);
/* A thread starts, linked under rt->head_mutex (held): it gets a buffer if a session is on. */
void ft_trace_thread_start_locked(ft_thread *t);
/* A thread stops: it unlinks under rt->head_mutex (held), then gives its buffer back. */
ft_trace_buffer *ft_trace_thread_take_locked(ft_thread *t);
void ft_trace_buffer_close(ft_trace_buffer *b);
/* In the child after fork(): the file is the parent's; recording stops without writing it. */
void ft_trace_after_fork_child(ft_runtime *rt);

/* ---- helper threads ---------------------------------------------------------------------------- */

/* A buffer for a thread that is not an ft_thread, shown as tid with the given name (copied); NULL
 * when out of memory. It stays open across sessions until closed; only its owner records into it,
 * and closes it (not while the world is stopped: closing writes what is left). */
ft_trace_buffer *ft_trace_buffer_open(ft_runtime *rt, uint32_t tid, const char *name);
/* Record into b (any thread's buffer, by its owner): a begin or an end of a phase. */
void ft_trace_buffer_begin(ft_trace_buffer *b, ft_trace_name name);
void ft_trace_buffer_end(ft_trace_buffer *b, ft_trace_name name);
/* Write b's events to the file if it is half full; its owner calls it when the world is not
 * stopped and it holds no internal mutex. */
void ft_trace_buffer_flush_due(ft_trace_buffer *b);

/* ---- the hooks' slow paths (internal.h has the inline hooks) ------------------------------------- */

/* Record an event of the calling thread's buffer in rt (ph 'B', 'E' or 'i'), with up to 4 args. */
void ft_trace_record(ft_runtime *rt, ft_trace_name name, char ph, const int64_t *args, int nargs);
/* A stop ended (called by its requester at the restart, stw.mutex held, world still stopped). */
void ft_trace_record_stop(ft_runtime *rt, ft_thread *requester, const char *reason,
                          int64_t requested_ns, int64_t stopped_ns);
/* After a restart or a safepoint's work: write the caller's events if its buffer is half full (t:
 * its attached thread in rt, or NULL for the outside buffer). Holds no internal mutex. */
void ft_trace_flush_due(ft_runtime *rt, ft_thread *t);

#endif
