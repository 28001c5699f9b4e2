/* tests/harness.h: the smallest test harness that does what ftrt's tests need.
 *
 * A test file defines test functions with TEST(name), lists them in main() with RUN(name), and ends
 * with `return harness_done();`, which prints "N passed, N failed" and exits non-zero on any failure.
 * CHECK* record a failure with file and line and end the current test. Death tests run a function in a
 * forked child (under an alarm) and check that it aborts with a message on stderr that contains the
 * expected text. */
#ifndef FTRT_TEST_HARNESS_H
#define FTRT_TEST_HARNESS_H

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whether the tests run under ThreadSanitizer, which makes every atomic operation several times
 * slower: stress tests scale their iteration counts down with it. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#define HARNESS_UNUSED __attribute__((unused))
static int harness_passed HARNESS_UNUSED, harness_failed HARNESS_UNUSED;
static jmp_buf harness_jmp HARNESS_UNUSED;
static const char *harness_current HARNESS_UNUSED;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                                                  \
    do {                                                                                           \
        harness_current = #name;                                                                   \
        if (setjmp(harness_jmp) == 0) {                                                            \
            test_##name();                                                                         \
            harness_passed++;                                                                      \
            printf("ok   %s\n", #name);                                                            \
        } else {                                                                                   \
            harness_failed++;                                                                      \
            printf("FAIL %s\n", #name);                                                            \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

/* Only the main test thread may fail a test with CHECK (it longjmps); helper threads use
 * CHECK_THREAD, which records the failure and lets the main thread report it. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, harness_current,  \
                    #cond);                                                                        \
            longjmp(harness_jmp, 1);                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long harness_a_ = (long long)(a), harness_b_ = (long long)(b);                        \
        if (harness_a_ != harness_b_) {                                                            \
            fprintf(stderr, "%s:%d: %s: check failed: %s == %s (%lld != %lld)\n", __FILE__,       \
                    __LINE__, harness_current, #a, #b, harness_a_, harness_b_);                    \
            longjmp(harness_jmp, 1);                                                               \
        }                                                                                          \
    } while (0)

static _Atomic int harness_thread_failures HARNESS_UNUSED;
#define CHECK_THREAD(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed in a helper thread: %s\n", __FILE__, __LINE__,    \
                    #cond);                                                                        \
            harness_thread_failures++;                                                             \
        }                                                                                          \
    } while (0)
/* Call in the main thread after joining helpers. */
#define CHECK_THREADS_OK() CHECK_EQ(harness_thread_failures, 0)

/* How long a death test's child may run: one that hangs instead of aborting dies by SIGALRM, which
 * fails the test, rather than hanging the parent that waits for it. */
#define HARNESS_DEATH_ALARM_S 20

/* Run fn(arg) in a forked child; pass if the child dies by SIGABRT and its stderr contains each of
 * the NULL-terminated expected strings. */
static inline int harness_death(void (*fn)(void *), void *arg, const char *const *expected)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 0;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        alarm(HARNESS_DEATH_ALARM_S);
        fn(arg);
        _exit(0); /* fn returned: not a death */
    }
    close(fds[1]);
    char buf[8192];
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    int ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
    for (const char *const *e = expected; ok && *e; e++)
        ok = strstr(buf, *e) != NULL;
    if (!ok)
        fprintf(stderr, "death test: status %d, stderr was:\n%s\n", status, buf);
    return ok;
}

#define CHECK_DEATH(fn, arg, ...)                                                                  \
    do {                                                                                           \
        const char *const harness_expect_[] = {__VA_ARGS__, NULL};                                 \
        CHECK(harness_death((fn), (arg), harness_expect_));                                        \
    } while (0)

static inline int harness_done(void)
{
    printf("%d passed, %d failed\n", harness_passed, harness_failed);
    return harness_failed ? 1 : 0;
}

#endif
