/*
 * Unit tests for src/supervisor/watch.c and glob.c: the glob table, then real inotify on real
 * directories under one mkdtemp directory (editor save patterns, new and
 * removed and renamed directories, ignored directories, bursts, a forced
 * queue overflow and watch limit), then poll mode. No sleeps: after a file
 * operation the test drains until the expected path shows up, waiting in
 * poll() on watch_fd with a bound of a few seconds. Nothing expected to stay
 * silent is checked by waiting: a sentinel file written afterwards must be
 * reported, and events arrive in order.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/watch.h"

#include "tap.h"

#define at tap_at
#define mkdirs tap_mkdirs_at

#define WAIT_MS 5000
#define BURST_DIRS 20
#define BURST_FILES 100

static char base[PATH_MAX];

/* max_queued_events to put back at exit ("" when untouched). */
static char saved_queued[32];
static pid_t main_pid;

/* snprintf that gives up on truncation. */
static __attribute__((format(printf, 3, 4))) void
fmt(char *buf, size_t size, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(buf, size, f, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size)
		bail_out("path too long");
}

/* Write text to root/rel (truncating it in place), creating its directory. */
static void
put(const char *rel, const char *text)
{
	tap_mkparent(rel);
	int fd = open(at(rel), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t len = strlen(text);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || close(fd) < 0)
		bail_out("write %s: %s", rel, strerror(errno));
}

/* nftw callback for rm_rf. */
static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		return rmdir(path);
	return unlink(path);
}

/* rm -rf path. */
static void
rm_rf(const char *path)
{
	if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		bail_out("rm -rf %s: %s", path, strerror(errno));
}

/* rename or bail out. */
static void
do_rename(const char *from, const char *to)
{
	if (rename(from, to) < 0)
		bail_out("rename %s %s: %s", from, to, strerror(errno));
}

/* unlink or bail out. */
static void
do_unlink(const char *path)
{
	if (unlink(path) < 0)
		bail_out("unlink %s: %s", path, strerror(errno));
}

/* A fresh project root base/name for one test. */
static void
new_root(const char *name)
{
	if ((size_t)snprintf(tap_tree, sizeof(tap_tree), "%s/%s", base, name) >= sizeof(tap_tree) ||
	    mkdir(tap_tree, 0755) < 0)
		bail_out("mkdir %s: %s", tap_tree, strerror(errno));
}

/* The paths a watch reported. */
struct seen {
	char **v;
	size_t n, cap;
};

/* The drain callback: keep a copy of every path. */
static void
collect(const char *path, void *arg)
{
	struct seen *s = arg;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (!s->v)
			bail_out("realloc");
	}
	if (!(s->v[s->n++] = strdup(path)))
		bail_out("strdup");
}

/* How many times root/rel was reported. */
static int
times_seen(const struct seen *s, const char *rel)
{
	const char *path = at(rel);
	int n = 0;
	for (size_t i = 0; i < s->n; i++)
		n += strcmp(s->v[i], path) == 0;
	return n;
}

/* The first reported path containing needle, or NULL. */
static const char *
seen_sub(const struct seen *s, const char *needle)
{
	for (size_t i = 0; i < s->n; i++)
		if (strstr(s->v[i], needle))
			return s->v[i];
	return NULL;
}

/* Forget what was reported. */
static void
seen_clear(struct seen *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	s->n = 0;
}

/* A watch under test and what it said. */
struct waiter {
	struct watch *w;
	struct seen s;
	int overflow; /* some drain returned WATCH_OVERFLOW */
	int error;    /* a drain failed: -errno */
	void (*cb)(const char *path, void *arg);
	void *arg;
};

/*
 * Drain until cond holds, waiting for the fd in between, for at most
 * timeout_ms. poll() wakes at least every 100 ms so that time-based work
 * (retrying watches after ENOSPC) gets its chance. Returns cond's last value.
 */
static int
wait_until(struct waiter *wt, int (*cond)(struct waiter *, const void *), const void *arg,
	   int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	for (;;) {
		int r = watch_drain(wt->w, wt->cb ? wt->cb : collect, wt->cb ? wt->arg : &wt->s);
		if (r < 0) {
			wt->error = r;
			return 0;
		}
		if (r == WATCH_OVERFLOW)
			wt->overflow = 1;
		if (cond(wt, arg))
			return 1;
		int64_t left = end - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd pfd = { .fd = watch_fd(wt->w), .events = POLLIN };
		poll(&pfd, 1, left > 100 ? 100 : (int)left);
	}
}

/* wait_until conditions: a path reported, an overflow, a watch count. */
static int
cond_seen(struct waiter *wt, const void *rel)
{
	return times_seen(&wt->s, rel) > 0;
}

static int
cond_overflow(struct waiter *wt, const void *unused)
{
	(void)unused;
	return wt->overflow;
}

static int
cond_count(struct waiter *wt, const void *n)
{
	return watch_count(wt->w) == *(const size_t *)n;
}

/* Wait for root/rel to be reported. */
static int
wait_seen(struct waiter *wt, const char *rel)
{
	return wait_until(wt, cond_seen, rel, WAIT_MS);
}

/* Write a new sentinel file and wait for it: whatever happened before it has
 * been drained by then. */
static int
sentinel(struct waiter *wt)
{
	static int k;
	char rel[64];
	snprintf(rel, sizeof(rel), "zz-sentinel-%d.py", k++);
	put(rel, "");
	return wait_seen(wt, rel);
}

/* Start watching root with the given globs and ignores (NULL: defaults). */
static void
start(struct waiter *wt, const char *const *globs, const char *const *ignore)
{
	struct watch_opts o = { .root = tap_tree, .globs = globs, .ignore = ignore };
	memset(wt, 0, sizeof(*wt));
	int r = watch_create(&wt->w, &o);
	if (r < 0)
		bail_out("watch_create %s: %s", tap_tree, strerror(-r));
}

/* Destroy the watch and forget its reports. */
static void
stop(struct waiter *wt)
{
	watch_destroy(wt->w);
	seen_clear(&wt->s);
	free(wt->s.v);
	memset(wt, 0, sizeof(*wt));
}

/* watch_glob_match on a table of globs and paths. */
static void
test_globs(void)
{
	static const struct {
		const char *glob, *path;
		int want;
	} cases[] = {
		{ "**/*.py", "a.py", 1 },
		{ "**/*.py", "x/y/a.py", 1 },
		{ "**/*.py", "a.txt", 0 },
		{ "**/*.py", "x/a.pyc", 0 },
		{ "**/*.py", "x.py/a.txt", 0 },
		{ "./**/*.py", "x/a.py", 1 },
		{ "./**/*.py", "a.py", 1 },
		{ "./*.py", "a.py", 1 },
		{ "./*.py", "x/a.py", 0 },
		{ "*.py", "x/a.py", 0 },
		{ "src/**/*.py", "src/a.py", 1 },
		{ "src/**/*.py", "src/x/y/a.py", 1 },
		{ "src/**/*.py", "a.py", 0 },
		{ "src/**/*.py", "lib/src/a.py", 0 },
		{ "src/**", "src/a/b", 1 },
		{ "src/**", "src", 1 },
		{ "src/**", "srcx/a", 0 },
		{ "**", "any/thing/deep", 1 },
		{ "**/tests/**/*.py", "tests/a.py", 1 },
		{ "**/tests/**/*.py", "a/tests/b/c.py", 1 },
		{ "**/tests/**/*.py", "a/test/c.py", 0 },
		{ "**/.git/**", ".git/x", 1 },
		{ "**/.git/**", "a/b/.git/objects/x", 1 },
		{ "**/.git/**", "a/.gitx/y", 0 },
		{ "**/__pycache__", "a/b/__pycache__", 1 },
		{ "**/__pycache__", "__pycache__", 1 },
		{ "**/__pycache__", "a/__pycache__/x", 0 },
		{ "a/*/c.py", "a/b/c.py", 1 },
		{ "a/*/c.py", "a/b/x/c.py", 0 },
		{ "a?.py", "ab.py", 1 },
		{ "a?.py", "abc.py", 0 },
		{ "[ab].py", "b.py", 1 },
		{ "[ab].py", "c.py", 0 },
		{ "test_*.py", "test_x.py", 1 },
		{ "**/**/*.py", "a.py", 1 },
		{ "a/**/b/**/c.py", "a/x/b/y/z/c.py", 1 },
		{ "a/**/b/**/c.py", "a/b/c.py", 1 },
		{ "a/**/b/**/c.py", "a/x/c.py", 0 },
		{ "a//b.py", "a/b.py", 1 },
		{ "*", ".hidden", 1 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		is_int(watch_glob_match(cases[i].glob, cases[i].path), cases[i].want,
		       "glob '%s' %s '%s'", cases[i].glob,
		       cases[i].want ? "matches" : "does not match", cases[i].path);
}

/* Bad roots and globs; absolute globs and a root with a trailing slash. */
static void
test_errors(void)
{
	struct watch *w = NULL;
	struct watch_opts o = { .root = "relative/dir" };
	is_int(watch_create(&w, &o), -EINVAL, "a relative root: -EINVAL");
	new_root("errors");
	char missing[PATH_MAX];
	snprintf(missing, sizeof(missing), "%s", at("missing"));
	o.root = missing;
	is_int(watch_create(&w, &o), -ENOENT, "a missing root: -ENOENT");
	put("file", "");
	char file[PATH_MAX];
	snprintf(file, sizeof(file), "%s", at("file"));
	o.root = file;
	is_int(watch_create(&w, &o), -ENOTDIR, "a file as root: -ENOTDIR");
	const char *outside[] = { "/elsewhere/**/*.py", NULL };
	o.root = tap_tree;
	o.globs = outside;
	is_int(watch_create(&w, &o), -EINVAL, "an absolute glob outside the root: -EINVAL");
	ok(w == NULL, "and *ret untouched");
	watch_destroy(NULL);
	ok(1, "watch_destroy(NULL) is fine");

	/* An absolute glob under the root and a root with a trailing slash. */
	char inside[PATH_MAX], slashed[PATH_MAX];
	fmt(inside, sizeof(inside), "%s/pkg/**/*.py", tap_tree);
	fmt(slashed, sizeof(slashed), "%s//", tap_tree);
	const char *globs[] = { inside, NULL };
	struct waiter wt;
	memset(&wt, 0, sizeof(wt));
	o.root = slashed;
	o.globs = globs;
	if (watch_create(&wt.w, &o) < 0)
		bail_out("watch_create %s", slashed);
	put("pkg/a.py", "");
	ok(wait_seen(&wt, "pkg/a.py"), "an absolute glob under the root works");
	ok(!seen_sub(&wt.s, "//"), "and a trailing slash on the root gives clean paths");
	stop(&wt);
}

/* Ignored directories at any depth, non-matching files, unreachable dirs. */
static void
test_ignore(void)
{
	struct waiter wt;

	new_root("ignore");
	put("a.py", "");
	put("pkg/b.py", "");
	put("pkg/sub/c.py", "");
	put(".git/hooks/h.py", "");
	mkdirs(".git/objects/ab");
	put("pkg/__pycache__/b.py", "");
	put("pkg/sub/__pycache__/c.py", "");
	mkdirs("docs");
	put("node_modules/m/x.py", "");
	put(".venv/lib/site.py", "");
	put("build/lib/a.py", "");

	start(&wt, NULL, NULL);
	is_int(watch_count(wt.w), 4, "root, pkg, pkg/sub and docs watched; ignored dirs not");
	is_int(watch_files(wt.w), 3, "three files watched: a.py, pkg/b.py, pkg/sub/c.py");
	is_str(watch_warning(wt.w), NULL, "no warning");

	put(".git/hooks/h.py", "x");
	put(".git/objects/ab/cdef", "x");
	put("pkg/__pycache__/b.py", "x");
	put("pkg/sub/__pycache__/c.py", "x");
	put("node_modules/m/x.py", "x");
	put(".venv/lib/site.py", "x");
	put("build/lib/a.py", "x");
	put("x.txt", "x");
	put("pkg/notes.txt", "x");
	put("pkg/b.pyc", "x");
	mkdirs("pkg/sub/.tox/py3");
	put("pkg/sub/.tox/py3/t.py", "x");
	ok(sentinel(&wt), "the sentinel written after them is reported");
	const char *bad = NULL;
	static const char *const quiet[] = { ".git",    "__pycache__", "node_modules", ".venv",
					     "/build/", ".txt",        ".pyc",         ".tox" };
	for (size_t i = 0; i < ARRAY_SIZE(quiet) && !bad; i++)
		bad = seen_sub(&wt.s, quiet[i]);
	ok(!bad, "nothing in ignored dirs or non-matching files reported (got '%s')",
	   bad ? bad : "");
	is_int(watch_count(wt.w), 4, "the new .tox dir at depth is not watched either");
	is_int(wt.s.n, 1, "only the sentinel was reported");
	is_int(watch_files(wt.w), 4,
	       "a.py, b.py, c.py and the sentinel: ignored ones do not count");
	stop(&wt);

	/* Directories no glob can reach are not watched; custom ignores. */
	put("src/app/gen/g.py", "");
	put("src/app/m.py", "");
	mkdirs("other/deep");
	const char *globs[] = { "./src/**/*.py", NULL };
	const char *ignore[] = { "src/app/gen/", "**/*_pb2.py", NULL };
	start(&wt, globs, ignore);
	is_int(watch_count(wt.w), 3, "with src/** globs: root, src, src/app only");
	put("src/app/m_pb2.py", "x");
	put("src/app/gen/g.py", "x");
	put("a.py", "x");
	put("src/app/m.py", "x");
	ok(wait_seen(&wt, "src/app/m.py"), "src/app/m.py reported");
	is_int(wt.s.n, 1, "and nothing else (first: %s)", wt.s.n ? wt.s.v[0] : "");
	stop(&wt);
}

/* How editors save: in place, rename over, delete + create, vim backup. */
static void
test_editors(void)
{
	struct waiter wt;

	new_root("editors");
	put("a.py", "one\n");
	put("b.py", "one\n");
	start(&wt, NULL, NULL);

	/* In-place write. */
	int fd = open(at("a.py"), O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0 || write(fd, "two\n", 4) != 4 || close(fd) < 0)
		bail_out("write a.py");
	ok(wait_seen(&wt, "a.py"), "in-place write reported");
	seen_clear(&wt.s);

	/* Write a temp file, rename it over the target. */
	put(".a.py.swp.tmp", "three\n");
	do_rename(at(".a.py.swp.tmp"), at("a.py"));
	ok(wait_seen(&wt, "a.py"), "temp file renamed over a.py: a.py reported");
	ok(!seen_sub(&wt.s, "swp.tmp"), "the temp file itself is not");
	seen_clear(&wt.s);

	/* Delete, then re-create. */
	do_unlink(at("b.py"));
	ok(wait_seen(&wt, "b.py"), "delete reported");
	seen_clear(&wt.s);
	put("b.py", "again\n");
	ok(wait_seen(&wt, "b.py"), "re-create reported");
	seen_clear(&wt.s);

	/* Vim: rename to a backup, write a new file, delete the backup (vim #15733). */
	put("4913", "");
	do_unlink(at("4913"));
	do_rename(at("a.py"), at("a.py~"));
	put("a.py", "four\n");
	do_unlink(at("a.py~"));
	ok(wait_seen(&wt, "a.py"), "vim-style backup save: a.py reported");
	ok(!seen_sub(&wt.s, "a.py~") && !seen_sub(&wt.s, "4913"), "the backup and 4913 are not");
	seen_clear(&wt.s);
	fd = open(at("a.py"), O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0 || write(fd, "five\n", 5) != 5 || close(fd) < 0)
		bail_out("append a.py");
	ok(wait_seen(&wt, "a.py"), "and the new a.py is still watched");

	/* touch (attributes only). */
	seen_clear(&wt.s);
	if (utimensat(AT_FDCWD, at("b.py"), NULL, 0) < 0)
		bail_out("utimensat: %s", strerror(errno));
	ok(wait_seen(&wt, "b.py"), "touch reported");
	is_int(watch_count(wt.w), 1, "one watch for the root, none per file");
	stop(&wt);
}

/* Directories created with files, renamed in, within and out, removed. */
static void
test_dirs(void)
{
	struct waiter wt;
	char outside[PATH_MAX];

	new_root("dirs");
	put("top.py", "");
	start(&wt, NULL, NULL);
	size_t before = watch_count(wt.w);

	/* A directory with files in it right away (a checkout). */
	mkdirs("n/sub");
	put("n/a.py", "a");
	put("n/sub/b.py", "b");
	ok(wait_seen(&wt, "n/a.py"), "new dir: n/a.py reported");
	ok(wait_seen(&wt, "n/sub/b.py"), "new dir: n/sub/b.py reported");
	is_int(watch_count(wt.w), before + 2, "n and n/sub are watched");
	seen_clear(&wt.s);
	put("n/a.py", "a2");
	ok(wait_seen(&wt, "n/a.py"), "a later write in n reported");
	put("n/sub/c.py", "c");
	ok(wait_seen(&wt, "n/sub/c.py"), "a later file in n/sub reported");
	seen_clear(&wt.s);

	/* A tree built elsewhere and renamed in whole. */
	fmt(outside, sizeof(outside), "%s/outside-dirs", base);
	if (mkdir(outside, 0755) < 0)
		bail_out("mkdir %s", outside);
	char *saved = strdup(tap_tree);
	snprintf(tap_tree, sizeof(tap_tree), "%s", outside);
	put("staged/x/y.py", "y");
	snprintf(tap_tree, sizeof(tap_tree), "%s", saved);
	free(saved);
	char from[PATH_MAX];
	fmt(from, sizeof(from), "%s/staged", outside);
	do_rename(from, at("staged"));
	ok(wait_seen(&wt, "staged/x/y.py"), "a tree renamed into the root: its file reported");
	is_int(watch_count(wt.w), before + 4, "and its two dirs watched");
	seen_clear(&wt.s);

	/* Renamed within the tree: old and new names, watches follow. */
	do_rename(at("n"), at("m"));
	ok(wait_seen(&wt, "m/sub/b.py"), "dir renamed: the file under its new name");
	ok(wait_seen(&wt, "n/sub/b.py"), "and under its old name");
	is_int(watch_count(wt.w), before + 4, "same number of watches");
	is_int(wt.overflow, 0, "no overflow for a rename within the tree");
	seen_clear(&wt.s);
	put("m/sub/c.py", "c2");
	ok(wait_seen(&wt, "m/sub/c.py"), "a write in the renamed dir uses the new name");
	ok(!seen_sub(&wt.s, "/n/"), "never the old one");
	seen_clear(&wt.s);

	/* Removed. */
	rm_rf(at("m"));
	ok(wait_seen(&wt, "m/sub/b.py"), "dir removed: its files reported");
	ok(wait_seen(&wt, "m/a.py"), "all of them");
	int done = wait_until(&wt, cond_count, &(size_t){ before + 2 }, WAIT_MS);
	ok(done, "its watches are dropped (count %zu, want %zu)", watch_count(wt.w), before + 2);
	seen_clear(&wt.s);

	/* Moved out of the tree: which files it held is unknown, so overflow. */
	char to[PATH_MAX];
	fmt(to, sizeof(to), "%s/gone", outside);
	do_rename(at("staged"), to);
	ok(wait_until(&wt, cond_overflow, NULL, WAIT_MS), "dir moved out: WATCH_OVERFLOW");
	is_int(watch_count(wt.w), before, "and its watches are dropped");
	is_str(watch_warning(wt.w), NULL, "no warning for that");
	wt.overflow = 0;
	fmt(to, sizeof(to), "%s/gone/x/y.py", outside);
	FILE *f = fopen(to, "we");
	if (!f || fclose(f) != 0)
		bail_out("write %s", to);
	ok(sentinel(&wt), "sentinel after a write in the moved-away dir");
	ok(!seen_sub(&wt.s, "y.py"), "which is not reported");
	is_int(wt.overflow, 0, "and drains are back to 0");

	/* Deleted and re-created under the same name at once. */
	mkdirs("r");
	ok(wait_until(&wt, cond_count, &(size_t){ before + 1 }, WAIT_MS), "dir r watched");
	rm_rf(at("r"));
	put("r/new.py", "");
	ok(wait_seen(&wt, "r/new.py"), "r removed and re-created: its file reported");
	done = wait_until(&wt, cond_count, &(size_t){ before + 1 }, WAIT_MS);
	ok(done, "one watch for r in the end (count %zu)", watch_count(wt.w));
	seen_clear(&wt.s);
	put("r/new.py", "2");
	ok(wait_seen(&wt, "r/new.py"), "and the new r is watched");
	stop(&wt);
}

/* The burst tests' bookkeeping: which of dNN/fMMM.py were reported. */
struct burst {
	char prefix[PATH_MAX]; /* root + "/" + tag */
	unsigned char hit[BURST_DIRS * BURST_FILES];
	int distinct;
	int stray;
};

/* Mark dNN/fMMM.py under the prefix; anything else is a stray. */
static void
burst_cb(const char *path, void *arg)
{
	struct burst *b = arg;
	size_t pl = strlen(b->prefix);
	unsigned d, f;
	char end;
	if (strncmp(path, b->prefix, pl) != 0 ||
	    sscanf(path + pl, "%u/f%u.py%c", &d, &f, &end) != 2 || d >= BURST_DIRS ||
	    f >= BURST_FILES) {
		b->stray++;
		return;
	}
	if (!b->hit[d * BURST_FILES + f]++)
		b->distinct++;
}

/* All burst files reported, or an overflow. */
static int
cond_burst(struct waiter *wt, const void *unused)
{
	(void)unused;
	return ((struct burst *)wt->arg)->distinct == BURST_DIRS * BURST_FILES || wt->overflow;
}

/* Create (or rewrite, as git does: unlink and create) all burst files under tag. */
static void
burst_write(const char *tag, int rewrite)
{
	char rel[64];
	for (int d = 0; d < BURST_DIRS; d++) {
		for (int f = 0; f < BURST_FILES; f++) {
			snprintf(rel, sizeof(rel), "%s%02d/f%03d.py", tag, d, f);
			if (rewrite)
				do_unlink(at(rel));
			put(rel, "x = 1\n");
		}
	}
}

/* Wait for the burst and check it. */
static void
burst_check(struct waiter *wt, struct burst *b, const char *what)
{
	int done = wait_until(wt, cond_burst, NULL, 3 * WAIT_MS);
	ok(done, "%s: all %d files reported (%d) or WATCH_OVERFLOW (%d)", what,
	   BURST_DIRS * BURST_FILES, b->distinct, wt->overflow);
	is_int(b->stray, 0, "%s: no stray paths", what);
	if (wt->overflow)
		diag("%s: overflowed after %d files", what, b->distinct);
}

/* 2,000 files rewritten at once, then 2,000 in new dirs (a git checkout). */
static void
test_burst(void)
{
	struct waiter wt;
	struct burst *b = calloc(1, sizeof(*b));
	if (!b)
		bail_out("calloc");

	new_root("burst");
	burst_write("d", 0);
	start(&wt, NULL, NULL);
	is_int(watch_count(wt.w), BURST_DIRS + 1, "20 dirs watched");
	fmt(b->prefix, sizeof(b->prefix), "%s/d", tap_tree);
	wt.cb = burst_cb;
	wt.arg = b;
	burst_write("d", 1);
	burst_check(&wt, b, "2,000 files rewritten in 20 dirs");

	memset(b, 0, sizeof(*b));
	wt.overflow = 0;
	fmt(b->prefix, sizeof(b->prefix), "%s/n", tap_tree);
	burst_write("n", 0);
	burst_check(&wt, b, "2,000 files in 20 new dirs");
	int done = wait_until(&wt, cond_count, &(size_t){ 2 * BURST_DIRS + 1 }, WAIT_MS);
	ok(done, "the 20 new dirs are watched (%zu)", watch_count(wt.w));
	stop(&wt);
	free(b);
}

/* Write value to /proc/sys/fs/inotify/name, keeping the old value in saved
 * (once). Returns 0 or -errno. */
static int
set_limit(const char *name, const char *value, char *saved, size_t size)
{
	char path[128], old[32];
	snprintf(path, sizeof(path), "/proc/sys/fs/inotify/%s", name);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, old, sizeof(old) - 1);
	if (n <= 0) {
		close(fd);
		return -EIO;
	}
	old[n] = '\0';
	if (!saved[0])
		snprintf(saved, size, "%s", old);
	if (pwrite(fd, value, strlen(value), 0) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	close(fd);
	return 0;
}

/* Put a limit back (also at exit, if a test bailed out in between). */
static void
restore_limit(const char *name, char *saved)
{
	char ignored[32] = "x";
	if (saved[0] && set_limit(name, saved, ignored, sizeof(ignored)) == 0)
		saved[0] = '\0';
}

/* At exit, bailed out or not: put the limit back and remove the temp dir. */
static void
cleanup(void)
{
	if (getpid() != main_pid)
		return;
	restore_limit("max_queued_events", saved_queued);
	if (base[0])
		nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A 64-event queue: overflow, the warning, and recovery by rescan. */
static void
test_overflow(void)
{
	struct waiter wt;
	struct burst *b = calloc(1, sizeof(*b));
	if (!b)
		bail_out("calloc");

	new_root("overflow");
	if (set_limit("max_queued_events", "64", saved_queued, sizeof(saved_queued)) < 0) {
		skip(7, "/proc/sys/fs/inotify/max_queued_events is not writable");
		free(b);
		return;
	}
	/* An instance's queue is sized when it is created: restore right away. */
	start(&wt, NULL, NULL);
	restore_limit("max_queued_events", saved_queued);

	/* Flood the root's watch, then create directories: their IN_CREATE
	 * events are lost with the rest. */
	for (int i = 0; i < 200; i++) {
		char rel[32];
		fmt(rel, sizeof(rel), "flood%03d.py", i);
		put(rel, "");
	}
	fmt(b->prefix, sizeof(b->prefix), "%s/n", tap_tree);
	wt.cb = burst_cb;
	wt.arg = b;
	burst_write("n", 0);
	ok(wait_until(&wt, cond_overflow, NULL, WAIT_MS), "64-event queue: WATCH_OVERFLOW");
	has_str(watch_warning(wt.w), "/proc/sys/fs/inotify/max_queued_events",
		"the warning names the limit");
	has_str(watch_warning(wt.w), "is 64", "and its value");
	diag("warning: %s", watch_warning(wt.w) ? watch_warning(wt.w) : "(none)");

	/* The directories whose creation was lost are watched after the rescan. */
	int done = wait_until(&wt, cond_count, &(size_t){ BURST_DIRS + 1 }, WAIT_MS);
	ok(done, "all 20 new dirs watched after the overflow (%zu)", watch_count(wt.w));
	const char *first = watch_warning(wt.w);
	wt.cb = NULL;
	wt.arg = NULL;
	wt.overflow = 0;
	put("n19/late.py", "");
	ok(wait_seen(&wt, "n19/late.py"), "a later file in the last new dir is reported");
	ok(watch_warning(wt.w) == first, "the warning does not change");
	is_int(wt.error, 0, "no drain failed");
	stop(&wt);
	free(b);
}

/* Write text to a /proc/sys file; 0 or -errno. */
static int
write_sysctl(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = write(fd, text, strlen(text)) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* The checks of test_watch_limit, in a user namespace whose watch limit is 3. */
static void
watch_limit_checks(void)
{
	struct waiter wt;

	start(&wt, NULL, NULL);
	ok(watch_count(wt.w) == 3, "limit 3: only 3 of 11 dirs watched (%zu)", watch_count(wt.w));
	has_str(watch_warning(wt.w), "/proc/sys/user/max_inotify_watches",
		"the warning names the namespace's limit, the lower one");
	has_str(watch_warning(wt.w), "is 3;", "and its value");
	diag("warning: %s", watch_warning(wt.w) ? watch_warning(wt.w) : "(none)");
	is_int(watch_drain(wt.w, collect, &wt.s), WATCH_OVERFLOW,
	       "the next drain returns WATCH_OVERFLOW");
	if (write_sysctl("/proc/sys/user/max_inotify_watches", "1000") < 0)
		bail_out("raise max_inotify_watches: %s", strerror(errno));
	/* A retry (at most once a second) watches the rest. */
	int done = wait_until(&wt, cond_count, &(size_t){ 11 }, 3 * WAIT_MS);
	ok(done, "after the limit is raised all 11 dirs get watched (%zu)", watch_count(wt.w));
	is_int(watch_drain(wt.w, collect, &wt.s), 0, "and drains return 0 again");
	stop(&wt);
}

/*
 * The watch limit reached at start, then raised. Run in a child in a new user
 * namespace whose own limit (/proc/sys/user/max_inotify_watches) is lowered,
 * so that no other process on the machine is affected; the child hands its
 * TAP counters back through a pipe.
 */
static void
test_watch_limit(void)
{
	int counts[3] = { 0, 0, 0 }; /* tests run, failed; skipped */
	int pfd[2];

	new_root("limit");
	for (int i = 0; i < 10; i++) {
		char rel[32];
		fmt(rel, sizeof(rel), "d%d/x.py", i);
		put(rel, "");
	}
	fflush(stdout);
	if (pipe2(pfd, O_CLOEXEC) < 0)
		bail_out("pipe2: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		bail_out("fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		if (unshare(CLONE_NEWUSER) < 0 ||
		    write_sysctl("/proc/sys/user/max_inotify_watches", "3") < 0)
			counts[2] = 1;
		else
			watch_limit_checks();
		counts[0] = tap_count;
		counts[1] = tap_failed;
		fflush(stdout);
		if (write(pfd[1], counts, sizeof(counts)) != sizeof(counts))
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	ssize_t n = read(pfd[0], counts, sizeof(counts));
	close(pfd[0]);
	int status;
	waitpid(pid, &status, 0);
	if (n != sizeof(counts))
		bail_out("the watch limit test's child died (status %d)", status);
	tap_count = counts[0];
	tap_failed = counts[1];
	if (counts[2])
		skip(6, "no user namespace with its own inotify watch limit");
}

/* Poll mode: ns and inode changes, deletions, additions, ignores. */
static void
test_poll(void)
{
	struct waiter wt;
	struct watch_opts o = { .poll = 1 };
	struct stat st;

	new_root("poll");
	put("p.py", "aaaa");
	put("q.py", "cccc");
	put("pkg/r.py", "r");
	put(".git/x.py", "");
	put("x.txt", "");
	o.root = tap_tree;
	memset(&wt, 0, sizeof(wt));
	if (watch_create(&wt.w, &o) < 0)
		bail_out("watch_create (poll)");
	is_int(watch_fd(wt.w), -1, "poll mode: no fd");
	is_int(watch_drain(wt.w, collect, &wt.s), 0, "watch_drain is a no-op");
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll");
	is_int(wt.s.n, 0, "nothing changed since the first walk: nothing reported");
	is_int(watch_count(wt.w), 2, "2 dirs walked (.git skipped)");

	/* Same size, same second: only the nanoseconds differ. */
	if (stat(at("p.py"), &st) < 0)
		bail_out("stat");
	int fd = open(at("p.py"), O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "bbbb", 4) != 4 || close(fd) < 0)
		bail_out("write p.py");
	struct timespec times[2] = { st.st_atim, st.st_mtim };
	times[1].tv_nsec = (st.st_mtim.tv_nsec + 1) % 1000000000;
	if (utimensat(AT_FDCWD, at("p.py"), times, 0) < 0)
		bail_out("utimensat: %s", strerror(errno));
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll");
	is_int(times_seen(&wt.s, "p.py"), 1, "an edit 1 ns apart, same size: reported once");
	is_int(wt.s.n, 1, "nothing else");
	seen_clear(&wt.s);

	/* Same size, mtime set back to the ns, same inode (cp -p, rsync -t):
	 * only the change time tells. */
	if (stat(at("p.py"), &st) < 0)
		bail_out("stat");
	fd = open(at("p.py"), O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "eeee", 4) != 4 || close(fd) < 0)
		bail_out("write p.py");
	times[1] = st.st_mtim;
	if (utimensat(AT_FDCWD, at("p.py"), times, 0) < 0)
		bail_out("utimensat: %s", strerror(errno));
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll");
	is_int(times_seen(&wt.s, "p.py"), 1, "an edit with the old mtime put back: reported");
	seen_clear(&wt.s);

	/* Same size and mtime to the ns, another inode (a rename over). */
	if (stat(at("q.py"), &st) < 0)
		bail_out("stat");
	put("q.tmp", "dddd");
	times[1] = st.st_mtim;
	if (utimensat(AT_FDCWD, at("q.tmp"), times, 0) < 0)
		bail_out("utimensat: %s", strerror(errno));
	do_rename(at("q.tmp"), at("q.py"));
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll");
	is_int(times_seen(&wt.s, "q.py"), 1, "same size and mtime, new inode: reported");
	seen_clear(&wt.s);

	/* Deleted, added, ignored, not matching. */
	do_unlink(at("pkg/r.py"));
	put("pkg/new/s.py", "s");
	put(".git/y.py", "");
	put("pkg/y.txt", "");
	put("__pycache__/z.py", "");
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll");
	is_int(times_seen(&wt.s, "pkg/r.py"), 1, "deletion reported");
	is_int(times_seen(&wt.s, "pkg/new/s.py"), 1, "addition in a new dir reported");
	is_int(wt.s.n, 2, "nothing ignored or non-matching (%zu reports)", wt.s.n);
	seen_clear(&wt.s);
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll");
	is_int(wt.s.n, 0, "and a deletion is reported only once");
	stop(&wt);

	/* With inotify, the first watch_poll has nothing to compare with. */
	start(&wt, NULL, NULL);
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "inotify mode: watch_poll");
	is_int(wt.s.n, 3, "the first one reports every matching file (%zu)", wt.s.n);
	seen_clear(&wt.s);
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll again");
	is_int(wt.s.n, 0, "then only changes");
	rm_rf(tap_tree);
	is_int(watch_poll(wt.w, collect, &wt.s), -ENOENT, "the root gone: -ENOENT");
	stop(&wt);
}

/* watch_covers: the files whose every change the watcher reports. */
static void
test_covers(void)
{
	struct waiter wt;
	static const char *const ignore[] = { ".git/", "gen/", NULL };
	char dir[PATH_MAX] = "", path[PATH_MAX];

	new_root("covers");
	put("a.py", "a");
	put("pkg/b.py", "b");
	put("pkg/c.py", "c");
	put(".git/d.py", "d");
	put("gen/e.py", "e");
	put("f.txt", "f");
	put("real/g.py", "g");
	put("h.py", "h");
	if (symlink("real", at("link")) < 0 || symlink("h.py", at("i.py")) < 0 ||
	    link(at("h.py"), at("j.py")) < 0)
		bail_out("symlink/link: %s", strerror(errno));
	start(&wt, NULL, ignore);
	is_int(watch_covers(wt.w, at("a.py"), dir, sizeof(dir)), 1, "a file at the root");
	is_int(watch_covers(wt.w, at("pkg/b.py"), dir, sizeof(dir)), 1, "a file in a package");
	is_str(dir, at("pkg"), "its directory remembered");
	is_int(watch_covers(wt.w, at("pkg/c.py"), dir, sizeof(dir)), 1, "the next one there");
	is_int(watch_covers(wt.w, at(".git/d.py"), NULL, 0), 0, "in an ignored directory");
	is_int(watch_covers(wt.w, at("gen/e.py"), NULL, 0), 0, "in another ignored one");
	is_int(watch_covers(wt.w, at("f.txt"), NULL, 0), 0, "not matching the globs");
	is_int(watch_covers(wt.w, at("real/g.py"), NULL, 0), 1, "a directory's real path");
	is_int(watch_covers(wt.w, at("link/g.py"), dir, sizeof(dir)), 0,
	       "the same through a symlinked directory");
	is_int(watch_covers(wt.w, at("i.py"), NULL, 0), 0, "a symlinked file");
	is_int(watch_covers(wt.w, at("h.py"), NULL, 0), 0, "a file with two hard links");
	is_int(watch_covers(wt.w, at("nosuch.py"), NULL, 0), 0, "a file that is not there");
	fmt(path, sizeof(path), "%s-other/a.py", tap_tree);
	is_int(watch_covers(wt.w, path, NULL, 0), 0, "outside the root (a sibling's name)");
	is_int(watch_covers(wt.w, tap_tree, NULL, 0), 0, "the root itself");
	stop(&wt);
}

/* watch_poll over 5,000 files, timed. */
static void
test_poll_timing(void)
{
	struct waiter wt;
	struct watch_opts o = { .poll = 1 };
	char rel[64];

	new_root("timing");
	for (int d = 0; d < 50; d++) {
		for (int f = 0; f < 100; f++) {
			snprintf(rel, sizeof(rel), "pkg%02d/mod%03d.py", d, f);
			put(rel, "x = 1\n");
		}
	}
	o.root = tap_tree;
	memset(&wt, 0, sizeof(wt));
	int64_t t0 = now_ms();
	if (watch_create(&wt.w, &o) < 0)
		bail_out("watch_create (poll)");
	int64_t t1 = now_ms();
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll over 5,000 files");
	int64_t t2 = now_ms();
	is_int(wt.s.n, 0, "no change, no report");
	diag("5,000 files in 50 dirs: first walk %lld ms, watch_poll %lld ms", (long long)(t1 - t0),
	     (long long)(t2 - t1));
	ok(t2 - t1 < 2000, "watch_poll took %lld ms (bound 2 s, for valgrind)",
	   (long long)(t2 - t1));
	put("pkg49/mod099.py", "x = 22\n");
	is_int(watch_poll(wt.w, collect, &wt.s), 0, "watch_poll");
	is_int(times_seen(&wt.s, "pkg49/mod099.py"), 1, "the one changed file is found");
	stop(&wt);

	/* The same tree with inotify. */
	t0 = now_ms();
	start(&wt, NULL, NULL);
	t1 = now_ms();
	is_int(watch_count(wt.w), 51, "inotify: 51 directory watches for 5,000 files");
	diag("inotify watch_create on it: %lld ms", (long long)(t1 - t0));
	stop(&wt);
}

int
main(void)
{
	snprintf(base, sizeof(base), "/tmp/test-watch-XXXXXX");
	if (!mkdtemp(base))
		bail_out("mkdtemp: %s", strerror(errno));
	umask(022);
	main_pid = getpid();
	atexit(cleanup);

	test_globs();
	test_errors();
	test_ignore();
	test_editors();
	test_dirs();
	test_burst();
	test_overflow();
	test_watch_limit();
	test_poll();
	test_covers();
	test_poll_timing();

	return done_testing();
}
