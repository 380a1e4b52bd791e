/*
 * Small shared helpers: cleanup attributes, ownership transfer, exit codes.
 * Nothing here allocates or logs; every module may include it.
 */
#ifndef ZYGOTE_COMMON_H
#define ZYGOTE_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED __attribute__((unused))

/* Exit codes of the pytest-zygote binary. pytest's own 0..5 pass through
 * unchanged and 128+N means the test child died of signal N. */
#define ZEXIT_USAGE 64    /* bad command line or configuration */
#define ZEXIT_NOSERVER 69 /* no zygote running for this root */
#define ZEXIT_INTERNAL 70 /* protocol error, or the zygote died mid-run */
#define ZEXIT_NOSTART 71  /* the server could not be started */
#define ZEXIT_RETRY 75    /* the zygote died during the run: run again */
#define ZEXIT_MISMATCH 76 /* the server is another build: nothing ran (restart it) */
/* 77 is the sandbox's (sandbox.h) */
#define ZEXIT_UNTRUSTED 78 /* the runtime directory or the server is not ours: nothing sent */

/* FNV-1a, 64 bits: stable names for roots (paths.c) and digests of values
 * (supervisor/variant.c; the zygote's _zy/inputs.py computes the same). */
#define FNV1A_BASIS 14695981039346656037ULL
static inline unsigned long long
fnv1a(unsigned long long h, const void *data, size_t n)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* Milliseconds on the monotonic clock, for timers and durations. */
static inline long long
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void
freep(void *p)
{
	free(*(void **)p);
}

static inline void
closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))

/* Hand ownership out of a cleanup-managed variable. */
static inline void *
steal_ptr(void *pp)
{
	void **p = pp;
	void *v = *p;
	*p = NULL;
	return v;
}

static inline int
steal_fd(int *fd)
{
	int v = *fd;
	*fd = -1;
	return v;
}

#endif
