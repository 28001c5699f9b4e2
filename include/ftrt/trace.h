/* ftrt/trace.h: traces of every stop, collection and safepoint's work, as Chrome trace-event JSON.
 *
 * A runtime can record what its threads do at the points where they wait for each other: each
 * stop-the-world (who asked, why, how long the threads took to stop and how long they stayed
 * stopped), each collection and its phases, and the merges and delayed frees threads run at their
 * safepoints. The file opens in Perfetto (https://ui.perfetto.dev, "Open trace file") and in
 * offline viewers such as speedscope; docs/tracing.md lists the events and their arguments.
 *
 *     ft_config cfg;
 *     ft_config_init(&cfg);
 *     cfg.trace = "run-trace.json";    // record from creation; written by ft_runtime_free
 *     ft_runtime *rt = ft_runtime_new(&cfg);
 *
 * or around a part of the run:
 *
 *     ft_trace_start(rt, "collections.json");
 *     ...
 *     ft_trace_stop(rt);               // the file is complete, valid JSON, from here on
 *
 * Recording off costs one relaxed load on the slow paths that have hooks and nothing on the inline
 * fast paths. Recording on, threads append fixed-size events to buffers of their own (64 KiB each,
 * made when recording starts or the thread starts) and write them to the file after stops, never
 * inside one; a buffer that fills inside a stop drops events and the trace says how many. */
#ifndef FTRT_TRACE_H
#define FTRT_TRACE_H

#include "common.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Record rt's events from now on and write them to path (created or truncated). FT_EINVAL for a NULL
 * rt or an empty path; FT_EBUSY if rt is recording already; FT_EPERM if the caller holds rt's stop;
 * FT_EIO if path cannot be opened for writing; FT_ENOMEM if out of memory. On error nothing is
 * recorded and no file is left behind. Events from threads that the runtime does not know (those
 * outside it that stop its world) appear on a thread of their own. */
FT_API ft_status ft_trace_start(ft_runtime *rt, const char *path);

/* Stop recording and finish the file. FT_EINVAL if rt is not recording, FT_EPERM if the caller
 * holds rt's stop, FT_EIO if a write failed (the recording stops all the same). A phase that is
 * under way on another thread at this moment may appear with its begin but not its end. */
FT_API ft_status ft_trace_stop(ft_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif
