/* tests/test_platform.c: the platform layer: the thread id in include/ftrt/platform.h, and the page
 * memory of src/platform/.
 *
 * This file is compiled as if the compiler had no __has_builtin (tests/without_has_builtin.h), before
 * it includes any ftrt header: ftrt/platform.h must still preprocess, and ft_os_thread_id() must then
 * take another way to the thread pointer than the library, which was compiled with __has_builtin. The
 * two must agree, because the library stores the value (a thread state's OS thread, an object's
 * ob_tid, a page's owner_tid) and the inline fast paths in the caller's code compare with it.
 *
 * Page memory: aligned mappings of several sizes and alignments are aligned, zeroed and writable;
 * decommitting a range gives zeroed memory there on the next touch and leaves the rest as it was. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "without_has_builtin.h"

#include "ftrt/platform.h"
#ifdef __has_builtin
#error "tests/without_has_builtin.h did not take __has_builtin away"
#endif

#include "ftrt.h"
#include "platform/platform.h"
#include "test_util.h"

/* ---- the thread id ------------------------------------------------------------------------------ */

static const ft_type plain_type = {.name = "plain", .basic_size = 48};

typedef struct other_id {
    uintptr_t id, again;
} other_id;

static void *read_id(void *arg)
{
    other_id *o = arg;
    o->id = ft_os_thread_id();
    o->again = ft_os_thread_id();
    return NULL;
}

/* The id this file computes is the library's for the same thread (an object's ob_tid is written by
 * ft_alloc inside the library), stable, non-zero, and another live thread's differs. */
TEST(thread_id_agrees_with_the_library)
{
    fixture f = fixture_setup();
    uintptr_t mine = ft_os_thread_id();
    CHECK(mine != 0);
    CHECK_EQ(ft_os_thread_id(), mine);
    ft_object *o = ft_alloc(f.t, &plain_type);
    CHECK(o != NULL);
    CHECK_EQ(atomic_load_explicit(&o->ob_tid, memory_order_relaxed), mine);
    ft_decref(o);

    other_id other = {0, 0};
    pthread_t th;
    start_thread(&th, read_id, &other);
    join_thread(th);
    CHECK(other.id != 0);
    CHECK_EQ(other.again, other.id);
    CHECK(other.id != mine);
    fixture_teardown(f);
}

/* ---- page memory -------------------------------------------------------------------------------- */

static bool all_bytes_are(const unsigned char *p, size_t n, unsigned char v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return false;
    return true;
}

TEST(aligned_mappings_are_aligned_zeroed_and_writable)
{
    const size_t k = 1024;
    struct {
        size_t size, alignment;
    } cases[] = {{64 * k, 64 * k}, {200 * k, 64 * k}, {4096 * k, 64 * k}, {64 * k, 1024 * k},
                 {4 * k, 4 * k}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char *p = ft_vm_map_aligned(cases[i].size, cases[i].alignment);
        CHECK(p != NULL);
        CHECK_EQ((uintptr_t)p % cases[i].alignment, 0);
        CHECK(all_bytes_are(p, cases[i].size, 0));
        memset(p, 0xA5, cases[i].size);
        CHECK(all_bytes_are(p, cases[i].size, 0xA5));
        ft_vm_release(p, cases[i].size);
    }
}

TEST(decommitted_memory_reads_zero_and_the_rest_is_kept)
{
    const size_t size = 256 * 1024, keep = 4096;
    unsigned char *p = ft_vm_map_aligned(size, 64 * 1024);
    CHECK(p != NULL);
    memset(p, 0x5A, size);
    ft_vm_decommit(p + keep, size / 2 - keep);
    CHECK(all_bytes_are(p, keep, 0x5A));
    CHECK(all_bytes_are(p + keep, size / 2 - keep, 0));
    CHECK(all_bytes_are(p + size / 2, size / 2, 0x5A));
    memset(p + keep, 0x3C, size / 2 - keep); /* still mapped: usable again */
    CHECK(all_bytes_are(p + keep, size / 2 - keep, 0x3C));
    ft_vm_release(p, size);
}

int main(void)
{
    RUN(thread_id_agrees_with_the_library);
    RUN(aligned_mappings_are_aligned_zeroed_and_writable);
    RUN(decommitted_memory_reads_zero_and_the_rest_is_kept);
    return harness_done();
}
