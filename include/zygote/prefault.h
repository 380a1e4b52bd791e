/*
 * Taking copy-on-write faults off the critical path. A run child writes to
 * thousands of pages it shares with the zygote (reference counts, caches),
 * and each first write is a copy-on-write fault: about 14-40 us each on the
 * virtual machines this project is measured on, 45 ms or more per run. A run
 * child records which pages it made private; the next spare child, forked
 * ahead of the request, makes those pages private before any request arrives.
 */
#ifndef ZYGOTE_PREFAULT_H
#define ZYGOTE_PREFAULT_H

#include <stddef.h>
#include <stdint.h>

/* One range of pages: [start, start + npages * page size). */
struct prefault_range {
	uint64_t start;
	uint64_t npages;
};

/*
 * In a run child, near its end: the pages of our private writable mappings
 * that are now exclusively ours (/proc/self/pagemap bit 56) and not
 * write-protected by prefault_protect (bit 57), as ranges in *ret
 * (malloc'd). Returns the number of ranges or -errno.
 */
long prefault_record(struct prefault_range **ret);

/* Pages made private at a time between two calls of prefault_touch's stop. */
#define PREFAULT_CHUNK 64

/*
 * In a spare child: make private every page in ranges that lies in one of
 * our private writable mappings, as a write of each page would, contents
 * unchanged (the kernel copies, then a write of ours takes each page's first
 * access). Pages outside them are skipped; a fault on one range skips that
 * range. Before each chunk of PREFAULT_CHUNK pages, stop(arg) (if not NULL)
 * is asked; once it says stop, the kernel alone copies the rest, for at most
 * grace_ms more (a third of the cost of the faults the caller would take
 * instead), or, with grace_ms <= 0 or a kernel that cannot, it ends there.
 * Returns the number of pages made private.
 */
long prefault_touch(const struct prefault_range *ranges, size_t n, int (*stop)(void *), void *arg,
		    int grace_ms);

/* Pages per block of prefault_protect's sample. */
#define PREFAULT_SAMPLE_PAGES 16

/*
 * In a spare child, once its pages are copied: write-protect our private
 * anonymous memory with an asynchronous userfaultfd (Linux 6.7 and later),
 * except the pages of ranges (sorted; the pages the spare copied) outside
 * this round's sample, one block of PREFAULT_SAMPLE_PAGES in every
 * `every`, the blocks of round % every. The kernel lifts the protection of a
 * page at its first write, without a handler, and prefault_record then
 * leaves out the protected pages the run did not write: what a run records
 * is what it wrote, and a page the spares copy but runs no longer write is
 * dropped within `every` runs. Protection costs the run a minor fault on each
 * copied page it writes (about 2.5 us here), hence only a sample of those.
 * Before each chunk stop(arg) (if not NULL) may end it early: the pages left
 * unprotected are recorded as before. Returns the userfaultfd, which must
 * stay open while the run goes on (closing it lifts every protection), or
 * -errno (-EOPNOTSUPP: this kernel cannot; the run records every page it
 * holds privately, the spare's copies too).
 */
int prefault_protect(const struct prefault_range *ranges, size_t n, unsigned every, unsigned round,
		     int (*stop)(void *), void *arg);

#endif
