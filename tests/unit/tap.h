/*
 * A tiny TAP producer for the C unit tests (one program per module, run by
 * `meson test` with protocol 'tap'). Header-only; each test program includes
 * it once. Failures print the file, line and the values compared as TAP
 * comments; done_testing() returns the exit status for main().
 */
#ifndef ZYGOTE_TAP_H
#define ZYGOTE_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_planned = -1;
static int tap_count;
static int tap_failed;

/* Announce how many tests will run. Optional: done_testing() prints the plan if not. */
static inline void
plan(int n)
{
	tap_planned = n;
	printf("1..%d\n", n);
	fflush(stdout);
}

/* A TAP comment line. */
static inline __attribute__((format(printf, 1, 2))) void
diag(const char *fmt, ...)
{
	va_list ap;
	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static inline __attribute__((format(printf, 4, 0))) void
tap_vresult(int pass, const char *file, int line, const char *fmt, va_list ap)
{
	tap_count++;
	printf("%sok %d - ", pass ? "" : "not ", tap_count);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	if (!pass) {
		tap_failed++;
		printf("#   Failed test at %s line %d.\n", file, line);
	}
	fflush(stdout);
}

static inline __attribute__((format(printf, 4, 5))) int
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	tap_vresult(pass, file, line, fmt, ap);
	va_end(ap);
	return pass;
}

static inline __attribute__((format(printf, 5, 6))) int
tap_is_int(long long got, long long want, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	int pass = got == want;
	va_start(ap, fmt);
	tap_vresult(pass, file, line, fmt, ap);
	va_end(ap);
	if (!pass)
		printf("#          got: %lld\n#     expected: %lld\n", got, want);
	return pass;
}

static inline __attribute__((format(printf, 5, 6))) int
tap_is_str(const char *got, const char *want, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	int pass = (got && want) ? strcmp(got, want) == 0 : got == want;
	va_start(ap, fmt);
	tap_vresult(pass, file, line, fmt, ap);
	va_end(ap);
	if (!pass)
		printf("#          got: %s%s%s\n#     expected: %s%s%s\n", got ? "'" : "",
		       got ? got : "NULL", got ? "'" : "", want ? "'" : "", want ? want : "NULL",
		       want ? "'" : "");
	return pass;
}

static inline __attribute__((format(printf, 5, 6))) int
tap_has_str(const char *got, const char *needle, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	int pass = got && strstr(got, needle) != NULL;
	va_start(ap, fmt);
	tap_vresult(pass, file, line, fmt, ap);
	va_end(ap);
	if (!pass)
		printf("#          got: '%s'\n#     expected to contain: '%s'\n",
		       got ? got : "NULL", needle);
	return pass;
}

/* ok(cond, name...): pass when cond is true. Returns cond. */
#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* is_int(got, want, name...): integers compared as long long. */
#define is_int(got, want, ...) \
	tap_is_int((long long)(got), (long long)(want), __FILE__, __LINE__, __VA_ARGS__)
/* is_str(got, want, name...): NUL-terminated strings, NULL equal only to NULL. */
#define is_str(got, want, ...) tap_is_str((got), (want), __FILE__, __LINE__, __VA_ARGS__)
/* has_str(got, needle, name...): got contains needle. */
#define has_str(got, needle, ...) tap_has_str((got), (needle), __FILE__, __LINE__, __VA_ARGS__)

/* Record n tests as skipped, with a reason. */
static inline void
skip(int n, const char *reason)
{
	for (int i = 0; i < n; i++) {
		tap_count++;
		printf("ok %d # skip %s\n", tap_count, reason);
	}
	fflush(stdout);
}

/* Give up on the whole program (a setup step failed). */
static inline __attribute__((noreturn, format(printf, 1, 2))) void
bail_out(const char *fmt, ...)
{
	va_list ap;
	fputs("Bail out! ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	exit(1);
}

/* Print the plan if none was given; return the exit status for main(). */
static inline int
done_testing(void)
{
	if (tap_planned < 0)
		printf("1..%d\n", tap_count);
	else if (tap_planned != tap_count)
		diag("planned %d tests but ran %d", tap_planned, tap_count);
	if (tap_failed)
		diag("failed %d of %d tests", tap_failed, tap_count);
	fflush(stdout);
	return tap_failed || (tap_planned >= 0 && tap_planned != tap_count) ? 1 : 0;
}

#include <errno.h>
#include <sys/stat.h>

/* mkdir -p for a test tree: create every directory of path after its first
 * skip bytes (the existing temporary base), mode 0755. */
static inline void
tap_mkdirs(const char *path_in, size_t skip)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s", path_in) >= sizeof(path))
		bail_out("path too long: %s", path_in);
	for (char *p = path + skip + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			bail_out("mkdir %s: %s", path, strerror(errno));
		*p = '/';
	}
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		bail_out("mkdir %s: %s", path, strerror(errno));
}

/* A test's temporary tree, and paths in it ("rel" is relative to the tree). */
static char tap_tree[4096];

/* tap_tree/rel, in a static ring so a few can be used in one expression. */
static inline const char *
tap_at(const char *rel)
{
	static char ring[8][4096];
	static unsigned k;
	char *s = ring[k++ % 8];
	if ((size_t)snprintf(s, sizeof(ring[0]), "%s/%s", tap_tree, rel) >= sizeof(ring[0]))
		bail_out("path too long: %s/%s", tap_tree, rel);
	return s;
}

/* mkdir -p tap_tree/rel. */
static inline void
tap_mkdirs_at(const char *rel)
{
	tap_mkdirs(tap_at(rel), strlen(tap_tree));
}

/* mkdir -p of the directory that holds tap_tree/rel. */
static inline void
tap_mkparent(const char *rel)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", tap_at(rel));
	char *slash = strrchr(dir, '/');
	if (slash && slash > dir + strlen(tap_tree)) {
		*slash = '\0';
		tap_mkdirs(dir, strlen(tap_tree));
	}
}

#endif
