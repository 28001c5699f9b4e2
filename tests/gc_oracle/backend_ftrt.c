/* tests/gc_oracle/backend_ftrt.c: the gc-oracle driver's backend (driver/backend.h) on ftrt's public
 * API, so that gcdriver.c runs the oracle's scenarios against ftrt's collector and prints what CPython
 * 3.11 prints when ftrt matches it.
 *
 * The oracle folder (../shared/gc-oracle, README.md there) is a development instrument, not part of
 * the repository; tests/gc_oracle/CMakeLists.txt builds gcdriver_ftrt from its gcdriver.c and this
 * file when the folder is there. The objects are the ones backend_cpython.c makes, as ftrt types:
 *
 *   node    a GC type, weakly referenceable: an id and a growable array of strong references.
 *           traverse visits the items last to first; clear reports the death, detaches the array
 *           and releases the items last to first; dealloc (ftrt has already run the finalizer and
 *           cleared the weak references, calling their callbacks) reports the death and releases
 *           the items last to first.
 *   fnode   node plus a PEP 442 finalizer that calls drv_finalize: a separate type, so that plain
 *           nodes never get the finalized bit.
 *   wref    a host type that starts with an ft_weakref and carries the id; ftrt traverses, clears
 *           and deallocates the ft_weakref part. One callback function for all of them.
 *   atom    a non-GC leaf; fatom has a finalizer.
 *
 * Death is reported (drv_dead) once per object, first thing in clear, and in dealloc before the
 * items are released. A 100,000-deep chain freed by reference counting does not recurse 100,000
 * levels deep in C: ftrt's dealloc has CPython's trashcan.
 *
 * Everything runs on one thread, attached to a runtime made by gcb_init; the hooks re-enter the
 * driver from finalizers, weak reference callbacks and gc callbacks on that thread. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftrt.h"

#include "backend.h"

static ft_runtime *rt;
static ft_thread *thr;

static FT_NORETURN void fail(const char *what)
{
    fprintf(stderr, "backend_ftrt: %s failed (%s)\n", what, ft_status_str(ft_last_error()));
    fflush(stdout);
    fflush(stderr);
    _exit(3);
}

static FT_NORETURN void fail_status(const char *what, ft_status s)
{
    fprintf(stderr, "backend_ftrt: %s failed (%s)\n", what, ft_status_str(s));
    fflush(stdout);
    fflush(stderr);
    _exit(3);
}

/* ---- nodes -------------------------------------------------------------------------------------- */

typedef struct node {
    ft_object ob;
    int id;
    int dead;
    size_t n, cap;
    ft_object **items;
    void *weaklist; /* ftrt's: the head of the weak references (weaklist_offset) */
} node;

static int node_traverse(ft_object *self, ft_visit_fn visit, void *arg)
{
    node *s = (node *)self;
    for (size_t i = s->n; i-- > 0;) {
        int r = visit(s->items[i], arg);
        if (r)
            return r;
    }
    return 0;
}

static void report_death(int id, int *dead)
{
    if (!*dead) {
        *dead = 1;
        drv_dead(id);
    }
}

static void release_items(ft_object **items, size_t n)
{
    while (n-- > 0)
        ft_decref(items[n]);
    free(items);
}

/* Report the death, detach the array, then release it: the releases may re-enter and look at
 * self. */
static void node_die(node *s)
{
    report_death(s->id, &s->dead);
    ft_object **items = s->items;
    size_t n = s->n;
    s->items = NULL;
    s->n = s->cap = 0;
    if (items)
        release_items(items, n);
}

static void node_clear(ft_object *self)
{
    node_die((node *)self);
}

static void node_finalize(ft_object *self)
{
    drv_finalize(((node *)self)->id);
}

/* ftrt has run the finalizer (it did not resurrect) and cleared the weak references, calling their
 * callbacks, before it calls this. */
static void node_dealloc(ft_object *self)
{
    ft_gc_untrack(self);
    node_die((node *)self);
}

static const ft_type node_type = {
    .name = "gcdriver.Node",
    .basic_size = sizeof(node),
    .flags = FT_TYPE_GC | FT_TYPE_HAS_WEAKREFS,
    .weaklist_offset = offsetof(node, weaklist),
    .traverse = node_traverse,
    .clear = node_clear,
    .dealloc = node_dealloc,
};

static const ft_type fnode_type = {
    .name = "gcdriver.FNode",
    .basic_size = sizeof(node),
    .flags = FT_TYPE_GC | FT_TYPE_HAS_WEAKREFS,
    .weaklist_offset = offsetof(node, weaklist),
    .traverse = node_traverse,
    .clear = node_clear,
    .finalize = node_finalize,
    .dealloc = node_dealloc,
};

static bool is_node(const ft_object *o)
{
    return o->ob_type == &node_type || o->ob_type == &fnode_type;
}

/* ---- weak references ---------------------------------------------------------------------------- */

typedef struct wref {
    ft_weakref wr; /* first: ftrt traverses, clears and deallocates this part */
    int id;
    int dead;
} wref;

static void wref_clear(ft_object *self)
{
    wref *w = (wref *)self;
    report_death(w->id, &w->dead); /* then ftrt clears the ft_weakref part */
}

static void wref_dealloc(ft_object *self)
{
    wref *w = (wref *)self;
    ft_gc_untrack(self);
    report_death(w->id, &w->dead);
}

static const ft_type wref_type = {
    .name = "gcdriver.WRef",
    .basic_size = sizeof(wref),
    .flags = FT_TYPE_GC | FT_TYPE_WEAKREF,
    .clear = wref_clear,
    .dealloc = wref_dealloc,
};

/* The one callback of every weak reference made with one. */
static void wref_callback(ft_weakref *wr, ft_object *arg)
{
    (void)arg;
    if (wr->ob_base.ob_type == &wref_type)
        drv_weakref_callback(((wref *)wr)->id);
}

/* ---- atoms -------------------------------------------------------------------------------------- */

typedef struct atom {
    ft_object ob;
    int id;
    int dead;
} atom;

static void atom_finalize(ft_object *self)
{
    drv_finalize(((atom *)self)->id);
}

static void atom_dealloc(ft_object *self)
{
    atom *a = (atom *)self;
    report_death(a->id, &a->dead);
}

static const ft_type atom_type = {
    .name = "gcdriver.Atom",
    .basic_size = sizeof(atom),
    .dealloc = atom_dealloc,
};

static const ft_type fatom_type = {
    .name = "gcdriver.FAtom",
    .basic_size = sizeof(atom),
    .finalize = atom_finalize,
    .dealloc = atom_dealloc,
};

static bool is_gc(const ft_object *o)
{
    return (o->ob_type->flags & FT_TYPE_GC) != 0;
}

/* ---- setup -------------------------------------------------------------------------------------- */

const char *gcb_name(void)
{
    static char name[64];
    snprintf(name, sizeof name, "ftrt %d.%d.%d", FTRT_VERSION_MAJOR, FTRT_VERSION_MINOR,
             FTRT_VERSION_PATCH);
    return name;
}

int gcb_init(void)
{
    rt = ft_runtime_new(NULL);
    if (!rt)
        return -1;
    thr = ft_thread_start(rt);
    if (!thr)
        return -1;
    /* a fresh runtime: debug 0, nothing frozen, no garbage, no callbacks, default thresholds */
    ft_gc_disable(rt);
    ft_gc_set_debug(rt, 0);
    return 0;
}

/* ---- objects ------------------------------------------------------------------------------------ */

gcb_obj *gcb_new(int id, unsigned flags)
{
    if (flags & GCB_NOGC) {
        atom *a = (atom *)ft_alloc(thr, (flags & GCB_FIN) ? &fatom_type : &atom_type);
        if (!a)
            return NULL;
        a->id = id;
        return (gcb_obj *)a;
    }
    node *n = (node *)ft_alloc(thr, (flags & GCB_FIN) ? &fnode_type : &node_type);
    if (!n)
        return NULL;
    n->id = id;
    /* CPython collects inside the allocation, before the new object is tracked: an allocation that
     * crossed threshold 0 has ftrt collect at this thread's next safepoint, which is here. */
    ft_safepoint(thr);
    if (!(flags & GCB_UNTRACKED))
        ft_gc_track(&n->ob);
    return (gcb_obj *)n;
}

gcb_obj *gcb_new_weakref(int id, gcb_obj *target, int with_callback)
{
    wref *w = (wref *)ft_weakref_new_of_type(thr, &wref_type, (ft_object *)target,
                                             with_callback ? wref_callback : NULL, NULL);
    if (!w)
        return NULL;
    w->id = id;
    /* ftrt tracks a new weak reference at once; CPython collects before it tracks it. Keep it out of
     * the automatic collection its allocation may have scheduled, as CPython does. */
    ft_gc_untrack(&w->wr.ob_base);
    ft_safepoint(thr);
    ft_gc_track(&w->wr.ob_base);
    return (gcb_obj *)w;
}

void gcb_incref(gcb_obj *o)
{
    ft_incref((ft_object *)o);
}

void gcb_decref(gcb_obj *o)
{
    ft_decref((ft_object *)o);
}

int gcb_id(gcb_obj *o)
{
    ft_object *p = (ft_object *)o;
    if (is_node(p))
        return ((node *)p)->id;
    if (p->ob_type == &wref_type)
        return ((wref *)p)->id;
    if (p->ob_type == &atom_type || p->ob_type == &fatom_type)
        return ((atom *)p)->id;
    return -1;
}

void gcb_link(gcb_obj *src, gcb_obj *dst)
{
    node *s = (node *)src;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4;
        ft_object **items = realloc(s->items, cap * sizeof *items);
        if (!items)
            fail("link");
        s->items = items;
        s->cap = cap;
    }
    ft_incref((ft_object *)dst);
    s->items[s->n++] = (ft_object *)dst;
}

int gcb_unlink(gcb_obj *src, gcb_obj *dst)
{
    node *s = (node *)src;
    for (size_t i = 0; i < s->n; i++) {
        if (s->items[i] == (ft_object *)dst) {
            ft_object *old = s->items[i];
            memmove(&s->items[i], &s->items[i + 1], (s->n - i - 1) * sizeof *s->items);
            s->n--;
            ft_decref(old); /* the array is updated first */
            return 0;
        }
    }
    return -1;
}

void gcb_links(gcb_obj *o, gcb_ids *out)
{
    ft_object *p = (ft_object *)o;
    if (!is_node(p))
        return;
    node *s = (node *)p;
    for (size_t i = 0; i < s->n; i++)
        gcb_ids_push(out, gcb_id((gcb_obj *)s->items[i]));
}

gcb_obj *gcb_weakref_get(gcb_obj *w)
{
    ft_object *t = ft_weakref_get((ft_weakref *)w);
    if (!t)
        return NULL;
    ft_decref(t); /* borrowed: the referent is alive, so this is not its last reference */
    return (gcb_obj *)t;
}

/* ---- tracking ----------------------------------------------------------------------------------- */

int gcb_is_tracked(gcb_obj *o)
{
    return is_gc((ft_object *)o) && ft_gc_is_tracked((ft_object *)o);
}

void gcb_track(gcb_obj *o)
{
    ft_gc_track((ft_object *)o);
}

void gcb_untrack(gcb_obj *o)
{
    ft_gc_untrack((ft_object *)o);
}

int gcb_is_finalized(gcb_obj *o)
{
    return is_gc((ft_object *)o) && ft_gc_is_finalized((ft_object *)o);
}

static bool in_generation(ft_object *o, int gen)
{
    ft_object_list list = {0};
    ft_status s = ft_gc_get_objects(rt, gen, &list);
    if (s != FT_OK)
        fail_status("ft_gc_get_objects", s);
    bool found = false;
    for (size_t i = 0; i < list.count && !found; i++)
        found = list.items[i] == o;
    ft_object_list_clear(&list);
    return found;
}

int gcb_gen_of(gcb_obj *o)
{
    ft_object *p = (ft_object *)o;
    if (!gcb_is_tracked(o))
        return GCB_GEN_UNTRACKED;
    for (int g = 0; g < FT_GC_GENERATIONS; g++)
        if (in_generation(p, g))
            return g;
    return GCB_GEN_FROZEN; /* tracked but in no generation */
}

/* ---- collector ---------------------------------------------------------------------------------- */

long gcb_collect(int gen)
{
    intptr_t r = ft_gc_collect(rt, gen);
    if (r < 0)
        fail("ft_gc_collect");
    return (long)r;
}

void gcb_set_enabled(int on)
{
    if (on)
        ft_gc_enable(rt);
    else
        ft_gc_disable(rt);
}

int gcb_is_enabled(void)
{
    return ft_gc_is_enabled(rt);
}

void gcb_get_threshold(long t[3])
{
    ft_gc_get_threshold(rt, t);
}

void gcb_set_threshold(const long t[3])
{
    ft_status s = ft_gc_set_threshold(rt, t);
    if (s != FT_OK)
        fail_status("ft_gc_set_threshold", s);
}

void gcb_get_count(long c[3])
{
    ft_gc_get_count(rt, c);
}

void gcb_get_stats(gcb_gen_stats s[3])
{
    ft_gc_generation_stats st[FT_GC_GENERATIONS];
    ft_gc_get_stats(rt, st);
    for (int i = 0; i < 3; i++) {
        s[i].collections = (long)st[i].collections;
        s[i].collected = (long)st[i].collected;
        s[i].uncollectable = (long)st[i].uncollectable;
    }
}

void gcb_set_debug_saveall(int on)
{
    ft_gc_set_debug(rt, on ? FT_GC_DEBUG_SAVEALL : 0);
}

static void ids_of_list(ft_object_list *list, gcb_ids *out)
{
    for (size_t i = 0; i < list->count; i++)
        gcb_ids_push(out, gcb_id((gcb_obj *)list->items[i]));
    ft_object_list_clear(list);
}

void gcb_garbage(gcb_ids *out)
{
    ft_object_list list = {0};
    ft_status s = ft_gc_garbage(rt, &list);
    if (s != FT_OK)
        fail_status("ft_gc_garbage", s);
    ids_of_list(&list, out);
}

void gcb_clear_garbage(void)
{
    ft_gc_clear_garbage(rt);
}

void gcb_freeze(void)
{
    ft_gc_freeze(rt);
}

void gcb_unfreeze(void)
{
    ft_gc_unfreeze(rt);
}

long gcb_freeze_count(void)
{
    return (long)ft_gc_get_freeze_count(rt);
}

void gcb_referrers(gcb_obj *o, gcb_ids *out)
{
    ft_object *p = (ft_object *)o;
    ft_object_list list = {0};
    ft_status s = ft_gc_get_referrers(rt, &p, 1, &list);
    if (s != FT_OK)
        fail_status("ft_gc_get_referrers", s);
    ids_of_list(&list, out);
}

void gcb_referents(gcb_obj *o, gcb_ids *out)
{
    ft_object *p = (ft_object *)o;
    ft_object_list list = {0};
    ft_status s = ft_gc_get_referents(rt, &p, 1, &list);
    if (s != FT_OK)
        fail_status("ft_gc_get_referents", s);
    ids_of_list(&list, out);
}

/* gc callbacks: one function, the driver's tag as its argument */
static void gc_hook(ft_runtime *r, ft_gc_phase phase, const ft_gc_info *info, void *arg)
{
    (void)r;
    drv_gc_phase((int)(intptr_t)arg, phase == FT_GC_PHASE_STOP, info->generation,
                 (long)info->collected, (long)info->uncollectable);
}

int gcb_callback_add(int tag)
{
    return ft_gc_callback_add(rt, gc_hook, (void *)(intptr_t)tag) == FT_OK ? 0 : -1;
}

int gcb_callback_remove(int tag)
{
    return ft_gc_callback_remove(rt, gc_hook, (void *)(intptr_t)tag) == FT_OK ? 0 : -1;
}
