/* tests/without_has_builtin.h: makes the including file look, to the preprocessor, like a compiler
 * that has no __has_builtin (older GCC and other C11 compilers), so that the headers it includes next
 * are checked for that case. The #undef of a built-in macro draws a warning that no flag turns off
 * (GCC); a system header's warnings are not reported, so this header declares itself one. */
#ifndef FTRT_TEST_WITHOUT_HAS_BUILTIN_H
#define FTRT_TEST_WITHOUT_HAS_BUILTIN_H
#pragma GCC system_header
#undef __has_builtin
#endif
