/*
 * Recording the pages a run child made private, and touching them ahead of
 * time in a spare child (see prefault.h for why). Linux only: /proc/self/maps
 * and /proc/self/pagemap (flag bits are readable without privileges).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "zygote/common.h"
#include "zygote/prefault.h"

#define PM_PRESENT (1ULL << 63)
#define PM_EXCLUSIVE (1ULL << 56)
#define PM_UFFD_WP (1ULL << 57)

/* Newer than the kernel headers of Debian 12 (Linux 6.1); the kernel says
 * whether it knows them. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

/*
 * No heap is this big, but reservations are: AddressSanitizer's shadow is one
 * 14 TiB rw-p mapping, and walking its pagemap would take hours.
 */
#define MAX_MAPPING (1ULL << 40)

struct mapping {
	uint64_t start, end;
};

/* Our private writable mappings ("rw-p") up to MAX_MAPPING, in address order. */
static long
private_mappings(struct mapping **ret)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return -errno;
	size_t n = 0, cap = 64;
	struct mapping *m = malloc(cap * sizeof(*m));
	char line[512];
	while (m && fgets(line, sizeof(line), f)) {
		unsigned long long a, b;
		char perms[8];
		if (sscanf(line, "%llx-%llx %7s", &a, &b, perms) != 3)
			continue;
		if (strcmp(perms, "rw-p") != 0 || b - a > MAX_MAPPING)
			continue;
		if (n == cap) {
			struct mapping *g = realloc(m, 2 * cap * sizeof(*m));
			if (!g) {
				free(m);
				m = NULL;
				break;
			}
			m = g;
			cap *= 2;
		}
		m[n++] = (struct mapping){ a, b };
	}
	fclose(f);
	if (!m)
		return -ENOMEM;
	*ret = m;
	return (long)n;
}

/* The pages whose pagemap entry e has (e & mask) == want, as ranges. */
static long
collect(struct prefault_range **ret, uint64_t mask, uint64_t want)
{
	_cleanup_free_ struct mapping *maps = NULL;
	long nmaps = private_mappings(&maps);
	if (nmaps < 0)
		return nmaps;
	_cleanup_close_ int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	size_t n = 0, cap = 256;
	struct prefault_range *r = malloc(cap * sizeof(*r));
	uint64_t buf[512];
	for (long i = 0; r && i < nmaps; i++) {
		for (uint64_t addr = maps[i].start; addr < maps[i].end;) {
			uint64_t count = (maps[i].end - addr) / page;
			if (count > 512)
				count = 512;
			ssize_t got = pread(fd, buf, count * 8, (off_t)(addr / page * 8));
			if (got <= 0)
				break;
			count = (uint64_t)got / 8;
			for (uint64_t k = 0; k < count; k++) {
				uint64_t e = buf[k];
				if ((e & mask) == want) {
					uint64_t a = addr + k * page;
					if (n > 0 && r[n - 1].start + r[n - 1].npages * page == a) {
						r[n - 1].npages++;
						continue;
					}
					if (n == cap) {
						struct prefault_range *g =
							realloc(r, 2 * cap * sizeof(*r));
						if (!g) {
							free(r);
							r = NULL;
							break;
						}
						r = g;
						cap *= 2;
					}
					r[n++] = (struct prefault_range){ a, 1 };
				}
			}
			if (!r)
				break;
			addr += count * page;
		}
	}
	if (!r)
		return -ENOMEM;
	*ret = r;
	return (long)n;
}

long
prefault_record(struct prefault_range **ret)
{
	/* Exclusive and no longer write-protected: copied or written by the
	 * run. A page the spare copied that the run left alone is exclusive
	 * but still protected (see prefault_protect). */
	return collect(ret, PM_PRESENT | PM_EXCLUSIVE | PM_UFFD_WP, PM_PRESENT | PM_EXCLUSIVE);
}

/* Write-protect [lo, hi) through the userfaultfd fd. */
static int
protect_range(int fd, uint64_t lo, uint64_t hi)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = lo, .len = hi - lo },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};
	return ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
}

/*
 * The pages of ranges outside this round's sample: in blocks of
 * PREFAULT_SAMPLE_PAGES, block b is in round b % every. NULL on ENOMEM.
 */
static struct prefault_range *
unsampled(const struct prefault_range *ranges, size_t n, unsigned every, unsigned round,
	  size_t *ret_n)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), block = PREFAULT_SAMPLE_PAGES * page;
	size_t cap = n + 16, k = 0;
	struct prefault_range *r = malloc(cap * sizeof(*r));
	for (size_t i = 0; r && i < n; i++) {
		uint64_t a = ranges[i].start, end = a + ranges[i].npages * page;
		while (a < end) {
			uint64_t b = (a / block + 1) * block;
			if (b > end)
				b = end;
			if ((a / block) % every != round % every) {
				if (k > 0 && r[k - 1].start + r[k - 1].npages * page == a) {
					r[k - 1].npages += (b - a) / page;
				} else {
					if (k == cap) {
						struct prefault_range *g =
							realloc(r, 2 * cap * sizeof(*r));
						if (!g) {
							free(r);
							return NULL;
						}
						r = g;
						cap *= 2;
					}
					r[k++] = (struct prefault_range){ a, (b - a) / page };
				}
			}
			a = b;
		}
	}
	*ret_n = k;
	return r;
}

/* Write-protect [lo, hi) a chunk at a time; 1 when stop(arg) ended it. */
static int
protect_chunks(int fd, uint64_t lo, uint64_t hi, uint64_t page, int (*stop)(void *), void *arg)
{
	while (lo < hi) {
		if (stop && stop(arg))
			return 1;
		uint64_t end =
			hi - lo > 16 * PREFAULT_CHUNK * page ? lo + 16 * PREFAULT_CHUNK * page : hi;
		protect_range(fd, lo, end);
		lo = end;
	}
	return 0;
}

int
prefault_protect(const struct prefault_range *ranges, size_t n, unsigned every, unsigned round,
		 int (*stop)(void *), void *arg)
{
	_cleanup_free_ struct mapping *maps = NULL;
	long nmaps = private_mappings(&maps);
	if (nmaps < 0)
		return (int)nmaps;
	size_t nskip = 0;
	_cleanup_free_ struct prefault_range *skip =
		unsampled(ranges, n, every ? every : 1, round, &nskip);
	if (!skip)
		return -ENOMEM;
	/* Without vm.unprivileged_userfaultfd only faults from user mode may be
	 * handled; asynchronous write protection handles none, so that is all
	 * we ask for (kernels before 5.11 do not know the flag). */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0 && errno == EINVAL)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC };
	if (ioctl(fd, UFFDIO_API, &api) < 0 || !(api.features & UFFD_FEATURE_WP_ASYNC)) {
		close(fd);
		return -EOPNOTSUPP;
	}
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	size_t j = 0;
	int registered = 0;
	for (long i = 0; i < nmaps; i++) {
		/* Anonymous memory only: a private file mapping (a library's
		 * data) cannot be registered and stays as it was. */
		struct uffdio_register reg = {
			.range = { .start = maps[i].start, .len = maps[i].end - maps[i].start },
			.mode = UFFDIO_REGISTER_MODE_WP,
		};
		if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
			continue;
		registered = 1;
		for (uint64_t lo = maps[i].start; lo < maps[i].end;) {
			while (j < nskip && skip[j].start + skip[j].npages * page <= lo)
				j++;
			uint64_t hi = maps[i].end;
			if (j < nskip && skip[j].start < hi)
				hi = skip[j].start > lo ? skip[j].start : lo;
			if (hi > lo && protect_chunks(fd, lo, hi, page, stop, arg))
				return fd;
			if (hi == maps[i].end)
				break;
			lo = skip[j].start + skip[j].npages * page;
		}
	}
	if (!registered) {
		close(fd);
		return -EOPNOTSUPP;
	}
	return fd;
}

static sigjmp_buf touch_jmp;

static void
touch_fault(int sig)
{
	siglongjmp(touch_jmp, sig);
}

/*
 * Not instrumented by AddressSanitizer: touching any byte of a page is the
 * point here, redzones between globals and heap blocks included, and each
 * byte is written back unchanged.
 */
__attribute__((no_sanitize_address)) static void
touch_bytes(uint64_t lo, uint64_t hi, uint64_t page)
{
	for (uint64_t p = lo; p < hi; p += page) {
		volatile unsigned char *c = (volatile unsigned char *)(uintptr_t)p;
		*c = *c;
	}
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/*
 * Make [lo, hi) private. The kernel copies the pages (MADV_POPULATE_WRITE,
 * one call for the chunk) and then, unless lazy, a write of ours touches
 * each: a page the kernel made private still costs the process a trap at its
 * first access of its own (accessed and dirty bits), which a run's Python
 * would otherwise take. Measured on tiny's 3,300 pages on this project's
 * VMs: 14 us a copy-on-write fault by a write alone, 4.5 us a page copied by
 * the kernel plus 4.3 us the write after it (a spare ready in 32 ms, not
 * 60); a run whose spare left out the writes ran its Python 20% slower (the
 * traps). Without the madvise (an older kernel, or a mapping it refuses) the
 * write does both.
 */
static int populate_works = -1; /* -1 not known yet, 0 the kernel cannot */

static void
make_private(uint64_t lo, uint64_t hi, uint64_t page, int lazy)
{
	if (populate_works) {
		if (madvise((void *)(uintptr_t)lo, hi - lo, MADV_POPULATE_WRITE) == 0) {
			populate_works = 1;
			if (lazy)
				return;
		} else if (errno == EINVAL && populate_works < 0) {
			populate_works = 0;
		}
	}
	touch_bytes(lo, hi, page);
}

long
prefault_touch(const struct prefault_range *ranges, size_t n, int (*stop)(void *), void *arg,
	       int grace_ms)
{
	struct mapping *maps;
	long nmaps = private_mappings(&maps);
	if (nmaps <= 0)
		return 0;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	struct sigaction sa = { .sa_handler = touch_fault }, old_segv, old_bus;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	/* volatile: the loop state must survive a siglongjmp. */
	volatile long touched = 0;
	volatile long m = 0;
	volatile size_t i = 0;
	volatile long long deadline = 0; /* stop said so: go on lazily until then */
	if (sigsetjmp(touch_jmp, 1) != 0)
		i++; /* that range faulted: skip it */
	for (; i < n; i++) {
		uint64_t a = ranges[i].start, b = a + ranges[i].npages * page;
		/* Ranges arrive in address order, as maps are. */
		while (m < nmaps && maps[m].end <= a)
			m++;
		if (m > 0 && (m == nmaps || maps[m].start > a))
			while (m > 0 && maps[m - 1].end > a)
				m--;
		for (long k = m; k < nmaps && maps[k].start < b; k++) {
			uint64_t lo = a > maps[k].start ? a : maps[k].start;
			uint64_t hi = b < maps[k].end ? b : maps[k].end;
			while (lo < hi) {
				if (!deadline && stop && stop(arg)) {
					if (grace_ms <= 0 || !populate_works)
						goto out;
					deadline = now_ms() + grace_ms;
				}
				if (deadline && (!populate_works || now_ms() >= deadline))
					goto out;
				uint64_t end = hi - lo > PREFAULT_CHUNK * page
						       ? lo + PREFAULT_CHUNK * page
						       : hi;
				make_private(lo, end, page, deadline != 0);
				touched += (long)((end - lo) / page);
				lo = end;
			}
		}
	}
out:
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	free(maps);
	return touched;
}
