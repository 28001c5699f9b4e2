/* internal/assert.h: invariants checked in code.
 *
 * FT_ASSERT(cond) states an invariant that is cheap to check (a compare or two). Debug builds
 * (FTRT_DEBUG) check it and report a failure through ft_fatal with the condition, the file and the
 * line; other builds compile the condition (so it stays valid code) but never evaluate it.
 *
 * FT_ASSERT_EXPENSIVE(rt, cond) states one that costs a walk (recounting a page's lists, say). Debug
 * builds check it only while rt's configuration asks for expensive checks (ft_config.expensive_checks:
 * on by default in debug builds, FTRT_EXPENSIVE_CHECKS=0 or 1 in the environment overrides), so a
 * debug build can still run a long stress test at a useful speed. */
#ifndef FTRT_INTERNAL_ASSERT_H
#define FTRT_INTERNAL_ASSERT_H

#include "ftrt/common.h"

#ifdef FTRT_DEBUG
#define FT_ASSERT(cond)                                                                            \
    (FT_LIKELY(cond) ? (void)0 : ft_fatal("internal check failed: %s (%s:%d)", #cond, __FILE__, __LINE__))
#define FT_ASSERT_EXPENSIVE(rt, cond) ((rt)->config.expensive_checks ? FT_ASSERT(cond) : (void)0)
#else
#define FT_ASSERT(cond) ((void)sizeof(!(cond)))
#define FT_ASSERT_EXPENSIVE(rt, cond) ((void)sizeof(rt), (void)sizeof(!(cond)))
#endif

#endif
