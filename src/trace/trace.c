/* trace.c: recording stops, collections and safepoint work as Chrome trace-event JSON.
 *
 * Recording. A session is on while rt->trace.session is nonzero. Every hook loads it (relaxed) and
 * does nothing more when it is 0, so recording off costs one load on the paths that have hooks,
 * all of them slow paths. When it is on, a hook appends one fixed-size event (time, phase, a name
 * from the table below, up to four integers, a stop's static reason) to the calling thread's
 * buffer. Appending never allocates, never takes a lock and never writes the file, so hooks may sit
 * inside stops and under any mutex.
 *
 * Buffers. A buffer is a ring of RING_EVENTS events with one writer, its owner, and one reader at a
 * time, whoever holds the trace mutex: the writer fills slots from head and publishes head
 * (release); the reader takes the slots from tail to head (acquire), writes them out and publishes
 * tail (release), which gives the slots back to the writer (acquire). A full ring drops the event
 * and counts it; the count is written as a "trace.dropped" event. An ft_thread's buffer is made for
 * it by ft_trace_start (for the threads there are) or by its own start (during a session), and
 * lives until the thread stops, across sessions, so a writer never sees its buffer freed. Stops
 * requested by a thread outside the runtime go to the runtime's outside buffer, whose writer is
 * whoever holds rt->stw.mutex. Helper threads that are not ft_threads open buffers of their own.
 *
 * Writing. Buffers are written out by their owners, at points where the world runs and they hold
 * no internal mutex, once half full: after a restart (the requester) and at the end of a
 * safepoint's work; and whole by ft_trace_stop and by a closing buffer. So a stop never waits for
 * the file. Each event carries its session number: one recorded by a thread that saw the session
 * just before it ended is dropped when read, not written into the next session's file. The file
 * is valid JSON once the session ends: a header at the start, events each after a comma, a footer
 * at the end. Times are microseconds since the runtime was made. */
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal/internal.h"

#define RING_EVENTS 1024 /* a power of two: indices wrap with the 64-bit counters */
#define MAX_ARGS 4

typedef struct ft_trace_event {
    int64_t ts_ns, dur_ns;  /* since rt->trace.origin_ns; dur for X events */
    const char *reason;     /* a stop's reason (static), or NULL */
    int64_t args[MAX_ARGS]; /* named by the table */
    uint32_t session;
    uint8_t name;           /* ft_trace_name */
    char ph;                /* 'B', 'E', 'X' or 'i' */
    uint8_t nargs;
} ft_trace_event;

struct ft_trace_buffer {
    ft_runtime *rt; /* immutable */
    uint32_t tid;   /* immutable */
    char label[48]; /* its thread_name; immutable */
    ft_trace_buffer *prev, *next; /* rt->trace.buffers; under the trace mutex */
    /* The writer's side: head (written by the owner with release, read by the reader with
     * acquire) and the events it dropped (owner adds, reader reads; relaxed: only a count). */
    _Alignas(64) _Atomic(uint64_t) head;
    _Atomic(uint64_t) dropped;
    /* The reader's side, under the trace mutex: tail (release; the owner reads it with acquire),
     * the dropped count already written, and the session whose thread_name was written. */
    _Alignas(64) _Atomic(uint64_t) tail;
    uint64_t dropped_written;
    uint32_t named_session;
    ft_trace_event events[RING_EVENTS];
};

typedef struct ft_trace_kind {
    const char *name, *cat;
    const char *args[MAX_ARGS];
} ft_trace_kind;

static const ft_trace_kind kinds[FT_TRACE_NAMES] = {
    [FT_TRACE_STW] = {"stop-the-world", "stw", {"requester", "time_to_stop_ns", "stopped_ns"}},
    [FT_TRACE_GC_COLLECT] = {"gc.collect", "gc",
                             {"generation", "candidates", "collected", "uncollectable"}},
    [FT_TRACE_GC_SETTLE] = {"gc.settle", "gc", {0}},
    [FT_TRACE_GC_MARK_ALIVE] = {"gc.mark_alive", "gc", {0}},
    [FT_TRACE_GC_SCRATCH] = {"gc.scratch_counts", "gc", {0}},
    [FT_TRACE_GC_GATHER] = {"gc.gather", "gc", {0}},
    [FT_TRACE_GC_SUBTRACT] = {"gc.subtract", "gc", {0}},
    [FT_TRACE_GC_MARK] = {"gc.mark", "gc", {0}},
    [FT_TRACE_GC_WEAKREFS] = {"gc.weakrefs", "gc", {0}},
    [FT_TRACE_GC_FINALIZERS] = {"gc.finalizers", "gc", {0}},
    [FT_TRACE_GC_RESURRECTION] = {"gc.resurrection", "gc", {0}},
    [FT_TRACE_GC_CLEAR] = {"gc.clear", "gc", {0}},
    [FT_TRACE_BRC_MERGE] = {"brc.merge", "safepoint", {0}},
    [FT_TRACE_QSBR_PROCESS] = {"qsbr.process", "safepoint", {0}},
    [FT_TRACE_QSBR_ADVANCE] = {"qsbr.advance", "qsbr", {"goal"}},
};

static int64_t since_origin(ft_runtime *rt)
{
    return ft_monotonic_ns() - rt->trace.origin_ns;
}

/* ---- writing the file (trace mutex held) --------------------------------------------------- */

/* One event's text, built in memory and written with one fwrite: formatting with fprintf (its
 * doubles above all) cost a microsecond or two per event, as long as a young collection's stop for
 * the dozen events each collection records. Strings are cut to MAX_STRING bytes, so a line always
 * fits. */
#define MAX_STRING 200

typedef struct line {
    char text[1024];
    size_t len;
} line;

static void put(line *l, const char *s)
{
    size_t n = strlen(s);
    memcpy(l->text + l->len, s, n);
    l->len += n;
}

static void put_uint(line *l, uint64_t v)
{
    char digits[20];
    int n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        l->text[l->len++] = digits[--n];
}

static void put_int(line *l, int64_t v)
{
    if (v < 0)
        l->text[l->len++] = '-';
    put_uint(l, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

/* Nanoseconds as microseconds with three decimals. */
static void put_us(line *l, int64_t ns)
{
    if (ns < 0) {
        l->text[l->len++] = '-';
        ns = -ns;
    }
    put_uint(l, (uint64_t)ns / 1000);
    uint32_t frac = (uint32_t)((uint64_t)ns % 1000);
    l->text[l->len++] = '.';
    l->text[l->len++] = (char)('0' + frac / 100);
    l->text[l->len++] = (char)('0' + frac / 10 % 10);
    l->text[l->len++] = (char)('0' + frac % 10);
}

static void put_string(line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    l->text[l->len++] = '"';
    for (size_t i = 0; s[i] && i < MAX_STRING; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            l->text[l->len++] = '\\';
            l->text[l->len++] = (char)c;
        } else if (c < 0x20) {
            put(l, "\\u00");
            l->text[l->len++] = hex[c >> 4];
            l->text[l->len++] = hex[c & 15];
        } else {
            l->text[l->len++] = (char)c;
        }
    }
    l->text[l->len++] = '"';
}

static void emit(ft_runtime *rt, const line *l)
{
    fwrite(l->text, 1, l->len, rt->trace.file);
}

/* The opening of an event object, after the comma that separates it from the one before: every
 * field but its args and closing brace. */
static void put_head(ft_runtime *rt, line *l, const char *name, const char *cat, char ph,
                     uint32_t tid, int64_t ts_ns)
{
    l->len = 0;
    put(l, ",\n{\"name\":\"");
    put(l, name);
    put(l, "\",\"cat\":\"");
    put(l, cat);
    put(l, "\",\"ph\":\"");
    l->text[l->len++] = ph;
    put(l, "\",\"pid\":");
    put_int(l, rt->trace.pid);
    put(l, ",\"tid\":");
    put_uint(l, tid);
    put(l, ",\"ts\":");
    put_us(l, ts_ns);
}

static void put_metadata(ft_runtime *rt, line *l, const char *what, uint32_t tid, const char *value)
{
    put_head(rt, l, what, "__metadata", 'M', tid, 0);
    put(l, ",\"args\":{\"name\":");
    put_string(l, value);
    put(l, "}}");
}

static void write_metadata(ft_runtime *rt, const char *what, uint32_t tid, const char *value)
{
    line l;
    put_metadata(rt, &l, what, tid, value);
    emit(rt, &l);
}

static void write_count(ft_runtime *rt, const char *name, uint32_t tid, uint64_t count)
{
    line l;
    put_head(rt, &l, name, "trace", 'i', tid, since_origin(rt));
    put(&l, ",\"s\":\"t\",\"args\":{\"events\":");
    put_uint(&l, count);
    put(&l, "}}");
    emit(rt, &l);
}

static void write_event(ft_runtime *rt, const ft_trace_buffer *b, const ft_trace_event *e)
{
    const ft_trace_kind *k = &kinds[e->name];
    line l;
    put_head(rt, &l, k->name, k->cat, e->ph, b->tid, e->ts_ns);
    if (e->ph == 'X') {
        put(&l, ",\"dur\":");
        put_us(&l, e->dur_ns);
    } else if (e->ph == 'i') {
        put(&l, ",\"s\":\"t\"");
    }
    if (e->nargs || e->reason) {
        put(&l, ",\"args\":{");
        const char *sep = "";
        if (e->reason) {
            put(&l, "\"reason\":");
            put_string(&l, e->reason);
            sep = ",";
        }
        for (int i = 0; i < e->nargs; i++, sep = ",") {
            put(&l, sep);
            l.text[l.len++] = '"';
            put(&l, k->args[i]);
            put(&l, "\":");
            put_int(&l, e->args[i]);
        }
        l.text[l.len++] = '}';
    }
    l.text[l.len++] = '}';
    emit(rt, &l);
}

/* Read b's events: those of the session being written go to the file, the others are dropped. */
static void drain_locked(ft_runtime *rt, ft_trace_buffer *b)
{
    uint32_t session = rt->trace.writing; /* 0, which no event has, when none is written */
    uint64_t tail = atomic_load_explicit(&b->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&b->head, memory_order_acquire);
    for (; tail != head; tail++) {
        const ft_trace_event *e = &b->events[tail % RING_EVENTS];
        if (e->session != session)
            continue;
        if (b->named_session != session) {
            write_metadata(rt, "thread_name", b->tid, b->label);
            b->named_session = session;
        }
        write_event(rt, b, e);
    }
    atomic_store_explicit(&b->tail, tail, memory_order_release);
    uint64_t dropped = atomic_load_explicit(&b->dropped, memory_order_relaxed);
    if (session && dropped != b->dropped_written)
        write_count(rt, "trace.dropped", b->tid, dropped - b->dropped_written);
    b->dropped_written = dropped;
}

static void drain(ft_trace_buffer *b)
{
    ft_runtime *rt = b->rt;
    ft_mutex_lock_internal(&rt->trace.mutex);
    drain_locked(rt, b);
    ft_mutex_unlock(&rt->trace.mutex);
}

/* ---- buffers --------------------------------------------------------------------------------- */

/* A new buffer in rt's list (trace mutex held), or NULL when out of memory. */
static ft_trace_buffer *buffer_new_locked(ft_runtime *rt, uint32_t tid, const char *label)
{
    ft_trace_buffer *b = ft_inject_failure(rt) ? NULL : aligned_alloc(64, sizeof *b);
    if (!b)
        return NULL;
    memset(b, 0, sizeof *b);
    b->rt = rt;
    b->tid = tid;
    snprintf(b->label, sizeof b->label, "%s", label);
    FT_LIST_PUSH(rt->trace.buffers, b);
    return b;
}

static ft_trace_buffer *buffer_new(ft_runtime *rt, uint32_t tid, const char *label)
{
    ft_mutex_lock_internal(&rt->trace.mutex);
    ft_trace_buffer *b = buffer_new_locked(rt, tid, label);
    ft_mutex_unlock(&rt->trace.mutex);
    return b;
}

ft_trace_buffer *ft_trace_buffer_open(ft_runtime *rt, uint32_t tid, const char *name)
{
    return buffer_new(rt, tid, name);
}

void ft_trace_buffer_close(ft_trace_buffer *b)
{
    ft_runtime *rt = b->rt;
    ft_mutex_lock_internal(&rt->trace.mutex);
    drain_locked(rt, b);
    FT_LIST_REMOVE(rt->trace.buffers, b);
    ft_mutex_unlock(&rt->trace.mutex);
    free(b);
}

static uint64_t used(ft_trace_buffer *b)
{
    return atomic_load_explicit(&b->head, memory_order_relaxed) -
           atomic_load_explicit(&b->tail, memory_order_acquire);
}

/* The owner appends e; a full ring drops it, unless the owner may write the ring out first (the
 * world runs and the hook holds no internal mutex: may_flush). */
static void append(ft_trace_buffer *b, const ft_trace_event *e, bool may_flush)
{
    if (used(b) == RING_EVENTS) {
        if (may_flush && !ft_world_is_stopped(b->rt))
            drain(b);
        if (used(b) == RING_EVENTS) {
            atomic_fetch_add_explicit(&b->dropped, 1, memory_order_relaxed);
            return;
        }
    }
    uint64_t head = atomic_load_explicit(&b->head, memory_order_relaxed);
    b->events[head % RING_EVENTS] = *e;
    atomic_store_explicit(&b->head, head + 1, memory_order_release);
}

void ft_trace_buffer_flush_due(ft_trace_buffer *b)
{
    if (used(b) >= RING_EVENTS / 2)
        drain(b);
}

static void buffer_record(ft_trace_buffer *b, ft_trace_name name, char ph)
{
    uint32_t session = atomic_load_explicit(&b->rt->trace.session, memory_order_relaxed);
    if (session == 0)
        return;
    ft_trace_event e = {.ts_ns = since_origin(b->rt), .session = session, .name = (uint8_t)name,
                        .ph = ph};
    append(b, &e, true);
}

void ft_trace_buffer_begin(ft_trace_buffer *b, ft_trace_name name)
{
    buffer_record(b, name, 'B');
}

void ft_trace_buffer_end(ft_trace_buffer *b, ft_trace_name name)
{
    buffer_record(b, name, 'E');
}

/* ---- ft_threads -------------------------------------------------------------------------------- */

static ft_trace_buffer *buffer_of(const ft_thread *t)
{
    return atomic_load_explicit(&((ft_thread *)t)->trace.buffer, memory_order_acquire);
}

static ft_trace_buffer *outside_of(ft_runtime *rt)
{
    return atomic_load_explicit(&rt->trace.outside, memory_order_acquire);
}

/* Whether a session is open or opening (a file): threads that start then need a buffer. */
static bool file_open(ft_runtime *rt)
{
    ft_mutex_lock_internal(&rt->trace.mutex);
    bool open = rt->trace.file != NULL;
    ft_mutex_unlock(&rt->trace.mutex);
    return open;
}

/* Give t a buffer if it has none; false when out of memory. Head mutex held. */
static bool give_buffer_locked(ft_thread *t)
{
    if (buffer_of(t))
        return true;
    char label[32];
    snprintf(label, sizeof label, "thread %u", t->index);
    ft_trace_buffer *b = buffer_new(t->rt, t->index, label);
    atomic_store_explicit(&t->trace.buffer, b, memory_order_release);
    return b != NULL;
}

void ft_trace_thread_start_locked(ft_thread *t)
{
    if (file_open(t->rt))
        give_buffer_locked(t); /* out of memory: its events are counted as lost */
}

ft_trace_buffer *ft_trace_thread_take_locked(ft_thread *t)
{
    return atomic_exchange_explicit(&t->trace.buffer, NULL, memory_order_acquire);
}

void ft_trace_record(ft_runtime *rt, ft_trace_name name, char ph, const int64_t *args, int nargs)
{
    uint32_t session = atomic_load_explicit(&rt->trace.session, memory_order_relaxed);
    if (session == 0)
        return;
    ft_thread *t = ft_current_thread;
    ft_trace_buffer *b = t && t->rt == rt ? buffer_of(t) : NULL;
    if (!b) {
        atomic_fetch_add_explicit(&rt->trace.lost, 1, memory_order_relaxed);
        return;
    }
    ft_trace_event e = {.ts_ns = since_origin(rt), .session = session, .name = (uint8_t)name,
                        .ph = ph, .nargs = (uint8_t)nargs};
    for (int i = 0; i < nargs; i++)
        e.args[i] = args[i];
    /* Instants sit in paths that may hold internal mutexes (ft_qsbr_advance): they never write. */
    append(b, &e, ph != 'i');
}

void ft_trace_record_stop(ft_runtime *rt, ft_thread *requester, const char *reason,
                          int64_t requested_ns, int64_t stopped_ns)
{
    uint32_t session = atomic_load_explicit(&rt->trace.session, memory_order_relaxed);
    if (session == 0)
        return;
    ft_trace_buffer *b = requester ? buffer_of(requester) : outside_of(rt);
    if (!b) {
        atomic_fetch_add_explicit(&rt->trace.lost, 1, memory_order_relaxed);
        return;
    }
    int64_t now = ft_monotonic_ns();
    ft_trace_event stop = {.ts_ns = requested_ns - rt->trace.origin_ns,
                           .dur_ns = now - requested_ns,
                           .reason = reason,
                           .args = {requester ? (int64_t)requester->index : -1,
                                    stopped_ns - requested_ns, now - stopped_ns},
                           .session = session,
                           .name = FT_TRACE_STW,
                           .ph = 'X',
                           .nargs = 3};
    append(b, &stop, false);
}

void ft_trace_flush_due(ft_runtime *rt, ft_thread *t)
{
    ft_trace_buffer *b = t ? buffer_of(t) : outside_of(rt);
    if (b && !ft_world_is_stopped(rt))
        ft_trace_buffer_flush_due(b);
}

/* ---- sessions ---------------------------------------------------------------------------------- */

void ft_trace_runtime_init(ft_runtime *rt)
{
    rt->trace.origin_ns = ft_monotonic_ns();
}

/* Close the file (trace mutex held); FT_EIO if any write failed. remove: an aborted start. */
static ft_status close_file_locked(ft_runtime *rt, bool remove_it)
{
    bool failed = rt->trace.io_error || ferror(rt->trace.file);
    failed |= fclose(rt->trace.file) != 0;
    if (remove_it)
        remove(rt->trace.path);
    free(rt->trace.path);
    rt->trace.file = NULL;
    rt->trace.path = NULL;
    rt->trace.io_error = false;
    return failed ? FT_EIO : FT_OK;
}

/* Claim the trace and open its file, without starting the session yet (trace mutex held). */
static ft_status open_file_locked(ft_runtime *rt, const char *path)
{
    if (rt->trace.file)
        return FT_EBUSY;
    char *copy = ft_inject_failure(rt) ? NULL : strdup(path);
    if (!copy)
        return FT_ENOMEM;
    FILE *f = fopen(path, "w");
    if (!f) {
        free(copy);
        return FT_EIO;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 16); /* a buffer's worth of events per write */
    rt->trace.file = f;
    rt->trace.path = copy;
    rt->trace.pid = getpid();
    fputs("{\"traceEvents\":[\n", f);
    line l;
    put_metadata(rt, &l, "process_name", 0, rt->config.name ? rt->config.name : "ftrt runtime");
    fwrite(l.text + 2, 1, l.len - 2, f); /* the first element: without the comma before it */
    return FT_OK;
}

/* The outside buffer is made once and kept until the runtime is freed (its writer may be any
 * thread holding a stop, whose stops are not synchronised with sessions). */
static ft_status make_outside_locked(ft_runtime *rt)
{
    if (!outside_of(rt))
        atomic_store_explicit(
            &rt->trace.outside,
            buffer_new_locked(rt, FT_TRACE_TID_OUTSIDE, "stops from outside the runtime"),
            memory_order_release);
    return outside_of(rt) ? FT_OK : FT_ENOMEM;
}

ft_status ft_trace_start(ft_runtime *rt, const char *path)
{
    if (!rt || !path || !*path)
        return FT_EINVAL;
    if (ft_stw_held_by_caller(rt))
        return FT_EPERM;
    ft_mutex_lock_internal(&rt->trace.mutex);
    ft_status s = open_file_locked(rt, path);
    if (s == FT_OK && (s = make_outside_locked(rt)) != FT_OK)
        close_file_locked(rt, true);
    ft_mutex_unlock(&rt->trace.mutex);
    if (s != FT_OK)
        return s;
    /* Buffers for the threads there are; threads that start from now on make their own, since the
     * file is open. Those made before a failure stay with their threads for a later session. */
    bool complete = true;
    ft_mutex_lock_internal(&rt->head_mutex);
    for (ft_thread *t = rt->threads; t && complete; t = t->next)
        complete = give_buffer_locked(t);
    ft_mutex_unlock(&rt->head_mutex);
    ft_mutex_lock_internal(&rt->trace.mutex);
    if (complete) {
        if (++rt->trace.last_session == 0)
            rt->trace.last_session = 1;
        rt->trace.writing = rt->trace.last_session;
        atomic_store_explicit(&rt->trace.session, rt->trace.writing, memory_order_relaxed);
    } else {
        close_file_locked(rt, true);
    }
    ft_mutex_unlock(&rt->trace.mutex);
    return complete ? FT_OK : FT_ENOMEM;
}

/* End the session (trace mutex held): write every buffer, the lost count and the footer. Events
 * recorded by threads that saw the session just before it ended are left out when next read. */
static ft_status end_session_locked(ft_runtime *rt)
{
    atomic_store_explicit(&rt->trace.session, 0, memory_order_relaxed);
    for (ft_trace_buffer *b = rt->trace.buffers; b; b = b->next)
        drain_locked(rt, b);
    rt->trace.writing = 0;
    uint64_t lost = atomic_exchange_explicit(&rt->trace.lost, 0, memory_order_relaxed);
    if (lost)
        write_count(rt, "trace.lost", 0, lost);
    fputs("\n],\"displayTimeUnit\":\"ms\"}\n", rt->trace.file);
    return close_file_locked(rt, false);
}

ft_status ft_trace_stop(ft_runtime *rt)
{
    if (!rt)
        return FT_EINVAL;
    if (ft_stw_held_by_caller(rt))
        return FT_EPERM;
    ft_mutex_lock_internal(&rt->trace.mutex);
    ft_status s = atomic_load_explicit(&rt->trace.session, memory_order_relaxed)
                      ? end_session_locked(rt)
                      : FT_EINVAL;
    ft_mutex_unlock(&rt->trace.mutex);
    return s;
}

ft_status ft_trace_runtime_destroy(ft_runtime *rt)
{
    ft_status s = FT_OK;
    if (atomic_load_explicit(&rt->trace.session, memory_order_relaxed))
        s = end_session_locked(rt); /* no other thread is left to take the mutex */
    while (rt->trace.buffers) {
        ft_trace_buffer *b = rt->trace.buffers;
        FT_LIST_REMOVE(rt->trace.buffers, b);
        free(b);
    }
    atomic_store_explicit(&rt->trace.outside, NULL, memory_order_relaxed);
    return s;
}

void ft_trace_after_fork_child(ft_runtime *rt)
{
    /* The file is the parent's: the child neither writes it nor flushes the parent's buffered
     * bytes into it a second time. Its buffers stay, for a later session of its own. */
    rt->trace.mutex = (ft_mutex){0};
    atomic_store_explicit(&rt->trace.session, 0, memory_order_relaxed);
    if (rt->trace.file) {
        __fpurge(rt->trace.file);
        fclose(rt->trace.file);
        free(rt->trace.path);
        rt->trace.file = NULL;
        rt->trace.path = NULL;
    }
    rt->trace.writing = 0;
}
