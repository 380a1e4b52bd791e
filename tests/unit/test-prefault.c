/*
 * Unit tests for prefault.c on real forks: a child that writes to pages it
 * shares with its parent records exactly those pages, and prefault_touch
 * makes recorded pages private without changing their contents, skipping
 * ranges that are not mapped.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "zygote/prefault.h"

#define NPAGES 64

static long page;

/* Is the page at addr exclusively ours (pagemap bit 56) and present? */
static int
exclusive(void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t e = 0;
	if (fd >= 0) {
		if (pread(fd, &e, 8, (off_t)((uintptr_t)addr / (uintptr_t)page * 8)) != 8)
			e = 0;
		close(fd);
	}
	return (e >> 63 & 1) && (e >> 56 & 1);
}

/* Does some range cover [addr, addr + n pages)? */
static int
covered(const struct prefault_range *r, long nr, char *addr, int n)
{
	for (int k = 0; k < n; k++) {
		uint64_t a = (uint64_t)(uintptr_t)(addr + (long)k * page);
		int hit = 0;
		for (long i = 0; i < nr && !hit; i++)
			hit = a >= r[i].start && a < r[i].start + r[i].npages * (uint64_t)page;
		if (!hit)
			return 0;
	}
	return 1;
}

/* Run fn in a child; the child writes one result byte per check to a pipe. */
static void
in_child(void (*fn)(int wfd, char *region), char *region, unsigned char *results, int n)
{
	int p[2];
	if (pipe(p) < 0)
		bail_out("pipe");
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		fn(p[1], region);
		_exit(0);
	}
	close(p[1]);
	memset(results, 0xff, (size_t)n);
	ssize_t got = 0, k;
	while (got < n && (k = read(p[0], results + got, (size_t)(n - got))) > 0)
		got += k;
	close(p[0]);
	int st;
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		diag("child status %#x", st);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child exited cleanly");
	is_int(got, n, "child sent every result");
}

static void
put(int fd, int v)
{
	unsigned char c = (unsigned char)v;
	if (write(fd, &c, 1) != 1)
		_exit(1);
}

static void
record_child(int wfd, char *region)
{
	/* Pages 3..10 get written, 20..30 only read. */
	for (int k = 3; k <= 10; k++)
		region[(long)k * page + 7] = 'w';
	volatile char sink = 0;
	for (int k = 20; k <= 30; k++)
		sink ^= region[(long)k * page];
	(void)sink;
	struct prefault_range *r;
	long n = prefault_record(&r);
	put(wfd, n > 0);
	put(wfd, n > 0 && covered(r, n, region + 3 * page, 8));
	int any_read = 0;
	for (int k = 20; k <= 30 && n > 0; k++)
		any_read |= covered(r, n, region + (long)k * page, 1);
	put(wfd, !any_read);
	/* Ranges are in address order and merged. */
	int sorted = 1;
	for (long i = 1; i < n; i++)
		sorted &= r[i].start > r[i - 1].start + r[i - 1].npages * (uint64_t)page - 1;
	put(wfd, sorted);
	if (n >= 0)
		free(r);
}

static void
touch_child(int wfd, char *region)
{
	char *hole = mmap(NULL, (size_t)page * 4, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct prefault_range r[3] = {
		{ (uint64_t)(uintptr_t)(region + 5 * page), 5 },
		{ (uint64_t)(uintptr_t)hole, 4 }, /* not writable: skipped */
		{ (uint64_t)(uintptr_t)(region + 40 * page), 2 },
	};
	put(wfd, !exclusive(region + 5 * page));
	long touched = prefault_touch(r, 3, NULL, NULL, 0);
	put(wfd, touched == 7);
	int all = 1;
	for (int k = 5; k < 10; k++)
		all &= exclusive(region + (long)k * page);
	put(wfd, all && exclusive(region + 40 * page) && exclusive(region + 41 * page));
	put(wfd, !exclusive(region + 20 * page));
	int same = 1;
	for (long i = 0; i < NPAGES * page; i++)
		same &= region[i] == (char)(i % 251);
	put(wfd, same);
}

static int stop_calls;

static int
stop_second(void *arg)
{
	(void)arg;
	return ++stop_calls >= 2;
}

/* A stop callback that says stop before the second chunk: one chunk done. */
static void
stop_child(int wfd, char *region)
{
	(void)region;
	long len = 3 * PREFAULT_CHUNK;
	char *big = mmap(NULL, (size_t)(len * page), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct prefault_range r = { (uint64_t)(uintptr_t)big, (uint64_t)len };
	long touched = prefault_touch(&r, 1, stop_second, NULL, 0);
	put(wfd, touched == PREFAULT_CHUNK && stop_calls == 2);
	put(wfd, exclusive(big) && exclusive(big + (PREFAULT_CHUNK - 1) * page));
	put(wfd, !exclusive(big + PREFAULT_CHUNK * page) && !exclusive(big + (len - 1) * page));
}

/* A large region the parent wrote: every page shared until a child copies it. */
#define BIG_PAGES (256 * PREFAULT_CHUNK)
static char *big_shared;

static int
all_exclusive(char *base, long from, long to)
{
	int all = 1;
	for (long k = from; k < to; k++)
		all &= exclusive(base + k * page);
	return all;
}

/* Told to stop before the second chunk, with a grace: the kernel copies the
 * rest, contents unchanged. */
static void
grace_child(int wfd, char *region)
{
	(void)region;
	stop_calls = 0;
	struct prefault_range r = { (uint64_t)(uintptr_t)big_shared, 3 * PREFAULT_CHUNK };
	long touched = prefault_touch(&r, 1, stop_second, NULL, 60000);
	put(wfd, touched == 3 * PREFAULT_CHUNK && stop_calls == 2);
	put(wfd, all_exclusive(big_shared, 0, 3 * PREFAULT_CHUNK));
	put(wfd, !exclusive(big_shared + 3 * PREFAULT_CHUNK * page));
	int same = 1;
	for (long i = 0; i < 3 * PREFAULT_CHUNK * page; i += 97)
		same &= big_shared[i] == (char)(i % 241);
	put(wfd, same);
}

/* The grace is a bound: 1 ms is not enough to copy 64 MB, and what it did
 * copy comes first. */
static void
grace_bound_child(int wfd, char *region)
{
	(void)region;
	stop_calls = 0;
	struct prefault_range r = { (uint64_t)(uintptr_t)big_shared, BIG_PAGES };
	long touched = prefault_touch(&r, 1, stop_second, NULL, 1);
	put(wfd, touched >= PREFAULT_CHUNK && touched < BIG_PAGES);
	put(wfd, all_exclusive(big_shared, 0, touched) &&
			 !exclusive(big_shared + (BIG_PAGES - 1) * page));
}

/* Whether this kernel has MADV_POPULATE_WRITE (Linux 5.14). */
static int
populate_supported(void)
{
	char *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		       0);
	int yes = p != MAP_FAILED && madvise(p, (size_t)page, 23 /* MADV_POPULATE_WRITE */) == 0;
	if (p != MAP_FAILED)
		munmap(p, (size_t)page);
	return yes;
}

int
main(void)
{
	page = sysconf(_SC_PAGESIZE);
	char *region = mmap(NULL, (size_t)(NPAGES * page), PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		bail_out("mmap");
	for (long i = 0; i < NPAGES * page; i++)
		region[i] = (char)(i % 251);

	unsigned char res[8];
	in_child(record_child, region, res, 4);
	ok(res[0] == 1, "prefault_record finds ranges");
	ok(res[1] == 1, "the pages the child wrote are recorded");
	ok(res[2] == 1, "pages the child only read are not");
	ok(res[3] == 1, "ranges are sorted and merged");

	in_child(touch_child, region, res, 5);
	ok(res[0] == 1, "before touching, a page is shared with the parent");
	ok(res[1] == 1, "prefault_touch touches exactly the mapped writable pages");
	ok(res[2] == 1, "touched pages are now private");
	ok(res[3] == 1, "untouched pages stay shared");
	ok(res[4] == 1, "contents are unchanged");

	in_child(stop_child, region, res, 3);
	ok(res[0] == 1, "stop is asked before each chunk and ends the work");
	ok(res[1] == 1, "the chunk before the stop is private");
	ok(res[2] == 1, "pages after the stop are left alone");

	big_shared = mmap(NULL, (size_t)(BIG_PAGES * page), PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (big_shared == MAP_FAILED)
		bail_out("mmap");
	for (long i = 0; i < BIG_PAGES * page; i += 97)
		big_shared[i] = (char)(i % 241);
	for (long k = 0; k < BIG_PAGES; k++)
		big_shared[k * page] = (char)((k * page) % 241);
	if (!populate_supported()) {
		skip(6, "this kernel has no MADV_POPULATE_WRITE: a stop ends the work at once");
	} else {
		in_child(grace_child, region, res, 4);
		ok(res[0] == 1, "with a grace, the work goes on after the stop to the end");
		ok(res[1] == 1, "the pages after the stop are private too");
		ok(res[2] == 1, "pages outside the ranges stay shared");
		ok(res[3] == 1, "contents are unchanged");
		in_child(grace_bound_child, region, res, 2);
		ok(res[0] == 1, "the grace bounds the work after the stop");
		ok(res[1] == 1, "what was done in it is private, the rest shared");
	}

	return done_testing();
}
