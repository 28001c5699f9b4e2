/* ftrt: the free-threaded object runtime. Include this header for the whole public API. */
#ifndef FTRT_H
#define FTRT_H

#include "ftrt/common.h"
#include "ftrt/platform.h"
#include "ftrt/parking_lot.h"
#include "ftrt/lock.h"
#include "ftrt/runtime.h"
#include "ftrt/critical_section.h"
#include "ftrt/heap.h"
#include "ftrt/object.h"
#include "ftrt/gc.h"
#include "ftrt/weakref.h"
#include "ftrt/stackref.h"
#include "ftrt/qsbr.h"
#include "ftrt/uniqueid.h"
#include "ftrt/tlbc.h"
#include "ftrt/dict.h"
#include "ftrt/trace.h"

#define FTRT_VERSION_MAJOR 0
#define FTRT_VERSION_MINOR 1
#define FTRT_VERSION_PATCH 0

#endif
