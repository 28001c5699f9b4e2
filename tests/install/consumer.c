/* consumer.c: a program outside the ftrt tree that uses the installed library, to show that the
 * installed headers compile on their own and that the libraries link and run (static and shared). */
#include <ftrt.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    ft_runtime *rt = ft_runtime_new(NULL);
    if (rt == NULL) {
        fprintf(stderr, "ft_runtime_new: %s\n", ft_status_str(ft_last_error()));
        return 1;
    }
    ft_thread *t = ft_thread_start(rt);
    if (t == NULL || ft_thread_current() != t) {
        fprintf(stderr, "ft_thread_start did not attach a thread state\n");
        return 1;
    }
    ft_mutex m = {0};
    ft_mutex_lock(&m);
    int locked = ft_mutex_is_locked(&m);
    ft_mutex_unlock(&m);
    ft_thread_stop(t);
    ft_status freed = ft_runtime_free(rt);
    if (!locked || ft_mutex_is_locked(&m) || freed != FT_OK) {
        fprintf(stderr, "unexpected: locked=%d, free: %s\n", locked, ft_status_str(freed));
        return 1;
    }
    printf("ftrt %d.%d.%d consumer ok (%s)\n", FTRT_VERSION_MAJOR, FTRT_VERSION_MINOR,
           FTRT_VERSION_PATCH, ft_status_str(FT_OK));
    return 0;
}
