/*
 * Page learning: the pages a run made private (from its learning pipe, or the
 * practice run's), kept for the next spare and in the pages file for the next
 * generation. It stores pages and never touches the spare (spare.c reads them).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "zygote/log.h"
#include "zygote/prefault.h"
#include "zygote/proto.h"

long last_collect_ms;

/* The pages the last run made private, for the next spare to touch. */
int hot_real; /* hot came from a client's run, not the practice run */
struct prefault_range *hot;
size_t nhot;

/* How many pages hot holds. */
size_t
hot_pages(void)
{
	size_t n = 0;
	for (size_t i = 0; i < nhot; i++)
		n += hot[i].npages;
	return n;
}

/*
 * The pages learned from a client's run, kept in a file for the next
 * generation (--pages, from the supervisor), which prepares its first spare
 * with them instead of the practice run's (collection only). Only useful
 * when both generations have the same address-space layout (the supervisor
 * turns randomisation off for zygotes, stable_layout): the header records
 * where libc is mapped, and a file from another layout is ignored.
 */
const char *pages_file;

struct pages_header {
	char magic[8];
	uint64_t libc; /* (uintptr_t)&printf of the zygote that wrote it */
	uint64_t n;    /* struct prefault_range entries that follow */
};

static const char pages_magic[8] = "PZPAGES1";

static uint64_t
layout_mark(void)
{
	return (uint64_t)(uintptr_t)&printf;
}

/* Keep hot (nhot ranges) in pages_file; quietly gives up on errors. */
static void
learn_save(const struct prefault_range *ranges, size_t n)
{
	if (!pages_file || !*pages_file)
		return;
	char tmp[PATH_MAX + 32];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.%d", pages_file, (int)getpid()) >= sizeof(tmp))
		return;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	struct pages_header h = { .libc = layout_mark(), .n = n };
	memcpy(h.magic, pages_magic, sizeof(h.magic));
	size_t len = n * sizeof(*ranges);
	int ok = write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) &&
		 write(fd, ranges, len) == (ssize_t)len;
	if (close(fd) < 0 || !ok || rename(tmp, pages_file) < 0)
		unlink(tmp);
}

/* The ranges a previous generation of our layout saved, or NULL. */
static struct prefault_range *
learn_load(size_t *ret_n)
{
	if (!pages_file || !*pages_file)
		return NULL;
	int fd = open(pages_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct pages_header h;
	struct prefault_range *r = NULL;
	struct stat st;
	if (read(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) &&
	    memcmp(h.magic, pages_magic, sizeof(h.magic)) == 0 && h.libc == layout_mark() &&
	    h.n > 0 && h.n <= LEARN_PIPE_SIZE / sizeof(*r) && fstat(fd, &st) == 0 &&
	    (uint64_t)st.st_size == sizeof(h) + h.n * sizeof(*r)) {
		r = malloc(h.n * sizeof(*r));
		if (r && read(fd, r, h.n * sizeof(*r)) != (ssize_t)(h.n * sizeof(*r))) {
			free(r);
			r = NULL;
		}
	}
	close(fd);
	if (r)
		*ret_n = h.n;
	return r;
}

/*
 * a and b (sorted by address, not overlapping within each) as one sorted
 * list of ranges, overlapping and adjacent ones merged. NULL on ENOMEM.
 */
static struct prefault_range *
ranges_union(const struct prefault_range *a, size_t na, const struct prefault_range *b, size_t nb,
	     size_t *ret_n)
{
	struct prefault_range *r = malloc((na + nb + 1) * sizeof(*r));
	if (!r)
		return NULL;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	size_t n = 0, i = 0, j = 0;
	while (i < na || j < nb) {
		const struct prefault_range *x =
			j >= nb || (i < na && a[i].start <= b[j].start) ? &a[i++] : &b[j++];
		uint64_t end = x->start + x->npages * page;
		if (n > 0 && r[n - 1].start + r[n - 1].npages * page >= x->start) {
			uint64_t cur = r[n - 1].start + r[n - 1].npages * page;
			if (end > cur)
				r[n - 1].npages = (end - r[n - 1].start) / page;
		} else {
			r[n++] = *x;
		}
	}
	*ret_n = n;
	return r;
}

/*
 * Before the first spare: add the pages a previous generation saved to the
 * practice run's. The previous generation's pages are where ours are only up
 * to the first changed module we imported; the practice run's are exactly
 * ours but leave out what running tests writes. Prepare both.
 */
void
learn_add_saved(void)
{
	size_t n, nu;
	struct prefault_range *saved = hot_real ? NULL : learn_load(&n);
	struct prefault_range *u = saved ? ranges_union(hot, nhot, saved, n, &nu) : NULL;
	if (u) {
		free(hot);
		hot = u;
		nhot = nu;
		hot_real = 1;
		log_debug("first spare prepares the practice run's pages and %zu ranges a "
			  "previous generation learned",
			  n);
	}
	free(saved);
}

/*
 * A practice run right after warm-up: `pytest --collect-only` in a child with
 * /dev/null for its terminal, so the first spare already knows which pages a
 * run touches. It has no client (id -1) and nobody waits for it. Returns -1
 * when it cannot start (the caller goes on as if it were over), else 0.
 */
int
practice_run(void)
{
	extern char **environ;
	static char *argv[] = { "--collect-only", "-q", "-p", "no:cacheprovider", NULL };
	struct proto_request req = {
		.kind = PROTO_KIND_RUN,
		.argv = argv,
		.argc = 4,
		.cwd = (char *)z.root,
		.env = environ,
		.nfds = 3,
	};
	/* The zygote's environment and a mark: child_run then stops collecting
	 * after the learning budget, as the learning run does. */
	static char mark[] = "PYTEST_ZYGOTE_PRACTICE=1";
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 2, sizeof(*env));
	if (env) {
		memcpy(env, environ, n * sizeof(*env));
		env[n++] = mark;
		req.env = env;
	}
	req.envc = n;
	for (int i = 0; i < 3; i++)
		req.fds[i] =
			open("/dev/null", i == 0 ? O_RDONLY | O_CLOEXEC : O_WRONLY | O_CLOEXEC);
	int conn = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (conn < 0 || req.fds[0] < 0 || req.fds[1] < 0 || req.fds[2] < 0) {
		for (int i = 0; i < 3; i++)
			if (req.fds[i] >= 0)
				close(req.fds[i]);
		if (conn >= 0)
			close(conn);
		free(env);
		return -1;
	}
	start_run(&req, -1, conn);
	free(env);
	return 0;
}

/*
 * Keep what the finished run's child reported about the pages it copied.
 * Returns 1 when it stored them, else 0.
 */
int
learn(struct run *r)
{
	char done;
	uint32_t ms;
	if (r->learn < 0 || read(r->learn, &done, 1) != 1 || done != LEARN_DONE[0] ||
	    read(r->learn, &ms, sizeof(ms)) != sizeof(ms))
		return 0; /* it died before its run was over */
	if (r->id >= 0)
		last_collect_ms = (long)ms;
	size_t cap = 4096, len = 0;
	int stored = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			break;
		if (len == cap) {
			char *g = cap < LEARN_PIPE_SIZE ? realloc(buf, cap * 2) : NULL;
			if (!g)
				break;
			buf = g;
			cap *= 2;
		}
		ssize_t n = read(r->learn, buf + len, cap - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (buf && len >= sizeof(struct prefault_range) &&
	    len % sizeof(struct prefault_range) == 0) {
		free(hot);
		hot = (struct prefault_range *)buf;
		nhot = len / sizeof(struct prefault_range);
		hot_real = r->id >= 0;
		buf = NULL;
		stored = 1;
		log_debug("run %d: %zu pages written, for the next spare", (int)r->id, hot_pages());
		if (hot_real)
			learn_save(hot, nhot);
	}
	free(buf);
	return stored;
}
