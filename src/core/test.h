/*
 * test.h — the small harness every unit test (a `_test.c` file beside its module) shares.
 *
 * CHECK(cond) counts a passed or failed check and names the failing
 * expression with its file and line (CHECK_CASE adds the case's name);
 * main() ends with
 *     printf("%d passed, %d failed\n", passed, failed); return failed != 0;
 * Include it once, from a test file only (its definitions are static).
 */
#ifndef DRV_CORE_TEST_H
#define DRV_CORE_TEST_H

#include <stdbool.h>
#include <stdio.h>

static int passed, failed;

static void check(bool ok, const char *file, int line, const char *expr, const char *what)
{
    if (ok) {
        passed++;
        return;
    }
    failed++;
    fprintf(stderr, "%s:%d: CHECK(%s) failed%s%s\n", file, line, expr, what ? " -- " : "",
            what ? what : "");
}

#define CHECK(cond) check((cond), __FILE__, __LINE__, #cond, NULL)
/* CHECK naming the table row or case being tested. */
#define CHECK_CASE(cond, name) check((cond), __FILE__, __LINE__, #cond, (name))

#endif
