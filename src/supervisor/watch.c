/*
 * The supervisor's file watcher: one inotify watch per directory, file events
 * filtered through the watch and ignore globs, new directories watched (and
 * the files already in them reported) as they appear, and a stat-snapshot
 * walk for file systems that deliver no events. Runs inside the supervisor's
 * event loop, so it never blocks and never logs: trouble comes back as
 * WATCH_OVERFLOW plus one warning sentence.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/watch.h"
#include "watch-internal.h"

/* What a directory watch reports. IN_EXCL_UNLINK: nothing for files already
 * unlinked but still open; IN_ONLYDIR: never a watch on a file that replaced
 * a directory between readdir and inotify_add_watch. */
#define WATCH_FILE_EVENTS                                                                   \
	(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB | \
	 IN_MODIFY)
#define WATCH_MASK (WATCH_FILE_EVENTS | IN_EXCL_UNLINK | IN_ONLYDIR)

#define READ_SIZE 65536
/* 64 reads of 64 KiB hold the default queue (16,384 events) several times. */
#define MAX_READS 64
#define RETRY_NS 1000000000LL
#define INOTIFY_PROC "/proc/sys/fs/inotify/"

static const char *const default_globs[] = { "**/*.py", NULL };
static const char *const default_ignore[] = {
	".venv/", "venv/",  ".git/", "__pycache__/",  ".tox/",
	".nox/",  "build/", "dist/", "node_modules/", NULL,
};

struct watch {
	char *root;
	struct zglob *globs;
	size_t nglobs;
	struct zglob *ignore;
	size_t nignore;
	char **whole; /* pytest-hot-reloading's globs: absolute, '*' crosses '/' */
	size_t nwhole;
	char **whole_ignore;
	size_t nwhole_ignore;
	int poll;
	int fd;
	int root_wd;
	struct table dirs;  /* wd -> directory */
	struct table files; /* the poll snapshot */
	struct table seen;  /* what this drain has reported */
	unsigned gen;
	size_t polled_dirs;
	long counted;     /* watch_files(): wanted files the walk met */
	long queued_max;  /* max_queued_events when the instance was made */
	int degraded;     /* some wanted directory has no watch */
	int64_t retry_at; /* CLOCK_MONOTONIC ns of the next attempt to fix that */
	int overflow;     /* this drain returns WATCH_OVERFLOW */
	int rescan;       /* this drain must walk the tree again */
	char *move_from;  /* a watched directory renamed away, waiting for its MOVED_TO */
	uint32_t move_cookie;
	char *warning;
	void (*cb)(const char *path, void *arg);
	void *arg;
	int dedupe;
	char *buf;           /* READ_SIZE bytes for read() */
	char path[PATH_MAX]; /* scratch for absolute paths */
};

/* The absolute path of the components p (for the whole-path globs). */
static const char *
join_abs(const struct watch *w, char *const *p, size_t pn, const char *tail, char *buf, size_t size)
{
	size_t n = (size_t)snprintf(buf, size, "%s", strcmp(w->root, "/") ? w->root : "");
	for (size_t i = 0; i < pn && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "/%s", p[i]);
	if (n < size)
		snprintf(buf + n, size - n, "%s", tail);
	return buf;
}

/* Is the file at the path components p watched, its directories aside? */
static int
file_wanted_comps(const struct watch *w, char *const *p, size_t pn)
{
	char abs[PATH_MAX];
	const char *a = NULL;
	int hit = 0;
	for (size_t i = 0; i < w->nglobs && !hit; i++)
		hit = glob_match_comps(w->globs[i].comp, w->globs[i].n, p, pn);
	for (size_t i = 0; i < w->nwhole && !hit; i++) {
		a = a ? a : join_abs(w, p, pn, "", abs, sizeof(abs));
		hit = fnmatch(w->whole[i], a, 0) == 0;
	}
	for (size_t i = 0; i < w->nignore && hit; i++)
		if (!w->ignore[i].dironly &&
		    glob_match_comps(w->ignore[i].comp, w->ignore[i].n, p, pn))
			hit = 0;
	for (size_t i = 0; i < w->nwhole_ignore && hit; i++) {
		a = a ? a : join_abs(w, p, pn, "", abs, sizeof(abs));
		hit = fnmatch(w->whole_ignore[i], a, 0) != 0;
	}
	return hit;
}

/* Is the directory at the components d entered, given that its parent is? */
static int
dir_wanted_comps(const struct watch *w, char *const *d, size_t dn)
{
	char abs[PATH_MAX];
	const char *a =
		w->nwhole + w->nwhole_ignore ? join_abs(w, d, dn, "/", abs, sizeof(abs)) : NULL;
	for (size_t i = 0; i < w->nignore; i++)
		if (glob_match_comps(w->ignore[i].comp, w->ignore[i].n, d, dn))
			return 0;
	/* An ignore glob that ends in '*' and matches "dir/" matches everything
	 * below it: the directory is not entered. */
	for (size_t i = 0; i < w->nwhole_ignore; i++) {
		const char *g = w->whole_ignore[i];
		size_t gl = strlen(g);
		if (gl > 0 && g[gl - 1] == '*' && fnmatch(g, a, 0) == 0)
			return 0;
	}
	for (size_t i = 0; i < w->nglobs; i++)
		if (glob_could_contain(w->globs[i].comp, w->globs[i].n, d, dn))
			return 1;
	for (size_t i = 0; i < w->nwhole; i++)
		if (glob_whole_could_contain(w->whole[i], a))
			return 1;
	return 0;
}

/* The file rel is watched, given that its directory is. */
static int
file_wanted(const struct watch *w, const char *rel)
{
	char buf[PATH_MAX];
	char *p[MAX_COMPONENTS];
	int n = glob_split(rel, buf, sizeof(buf), p, ARRAY_SIZE(p));
	return n > 0 && file_wanted_comps(w, p, (size_t)n);
}

/* The directory rel is entered, given that its parent is. */
static int
dir_wanted(const struct watch *w, const char *rel)
{
	char buf[PATH_MAX];
	char *p[MAX_COMPONENTS];
	int n = glob_split(rel, buf, sizeof(buf), p, ARRAY_SIZE(p));
	return n > 0 && dir_wanted_comps(w, p, (size_t)n);
}

/* The file rel is watched, its directories included. */
static int
path_wanted(const struct watch *w, const char *rel)
{
	char buf[PATH_MAX];
	char *p[MAX_COMPONENTS];
	int n = glob_split(rel, buf, sizeof(buf), p, ARRAY_SIZE(p));
	if (n <= 0)
		return 0;
	for (size_t k = 1; k < (size_t)n; k++)
		if (!dir_wanted_comps(w, p, k))
			return 0;
	return file_wanted_comps(w, p, (size_t)n);
}

/* CLOCK_MONOTONIC in ns. */
static int64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A kernel limit read from /proc/sys, or -1. */
static long
read_limit(const char *path)
{
	char text[32];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	text[n] = '\0';
	return strtol(text, NULL, 10);
}

/*
 * The per-user inotify limit that binds here: the global one, or this user
 * namespace's (a container's) when it is lower. Both are checked by the
 * kernel (ucounts, Linux 5.11+); in the initial namespace they are one value.
 */
static long
pick_limit(const char *global, const char *userns, const char **ret_path)
{
	long value = read_limit(global), ns = read_limit(userns);
	*ret_path = global;
	if (ns > 0 && (value <= 0 || ns < value)) {
		*ret_path = userns;
		value = ns;
	}
	return value;
}

/* Keep the first warning only. */
static __attribute__((format(printf, 2, 3))) void
set_warning(struct watch *w, const char *fmt, ...)
{
	va_list ap;
	if (w->warning)
		return;
	va_start(ap, fmt);
	if (vasprintf(&w->warning, fmt, ap) < 0)
		w->warning = NULL;
	va_end(ap);
}

/* "<what>; raise <path> (it is N; e.g. sysctl <name>=4N)". */
static void
warn_limit(struct watch *w, const char *what, const char *path, long value)
{
	char name[64];
	size_t k = 0;
	/* "/proc/sys/fs/inotify/x" is the sysctl "fs.inotify.x". */
	for (const char *p = path + strlen("/proc/sys/"); *p && k < sizeof(name) - 1; p++)
		name[k++] = *p == '/' ? '.' : *p;
	name[k] = '\0';
	if (value > 0)
		set_warning(w, "%s; raise %s (it is %ld; e.g. sysctl %s=%ld)", what, path, value,
			    name, value * 4);
	else
		set_warning(w, "%s; raise %s", what, path);
}

/* root + "/" + rel in w->path, or NULL if too long. */
static const char *
abspath(struct watch *w, const char *rel)
{
	const char *root = strcmp(w->root, "/") == 0 ? "" : w->root;
	int n = *rel ? snprintf(w->path, sizeof(w->path), "%s/%s", root, rel)
		     : snprintf(w->path, sizeof(w->path), "%s", w->root);
	return n < 0 || (size_t)n >= sizeof(w->path) ? NULL : w->path;
}

/* dir + "/" + name into buf (just name for the root); -ENAMETOOLONG. */
static int
join(char *buf, size_t size, const char *dir, const char *name)
{
	int n = *dir ? snprintf(buf, size, "%s/%s", dir, name) : snprintf(buf, size, "%s", name);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Hand rel to the callback, once per drain. */
static void
report(struct watch *w, const char *rel)
{
	if (!w->cb)
		return;
	if (w->dedupe) {
		uint64_t h = table_hash_str(rel);
		if (table_find(&w->seen, h, rel, 0) >= 0)
			return;
		char *k = strdup(rel);
		/* Out of memory: report it anyway, perhaps twice. */
		if (k)
			table_insert(&w->seen, h, k, 0);
	}
	const char *path = abspath(w, rel);
	if (path)
		w->cb(path, w->arg);
}

/* Watch directory rel (or refresh its entry); 0 or -errno. */
static int
add_watch(struct watch *w, const char *path, const char *rel)
{
	uint32_t mask = WATCH_MASK | (*rel ? IN_DONT_FOLLOW : IN_MOVE_SELF);
	int wd = inotify_add_watch(w->fd, path, mask);
	if (wd < 0) {
		int e = errno;
		if (e == ENOSPC) {
			char what[PATH_MAX + 64];
			const char *limit;
			long value = pick_limit(INOTIFY_PROC "max_user_watches",
						"/proc/sys/user/max_inotify_watches", &limit);
			w->degraded = 1;
			snprintf(
				what, sizeof(what),
				"inotify could not watch every directory under '%s', so every file "
				"is treated as changed until it can",
				w->root);
			warn_limit(w, what, limit, value);
		}
		return -e;
	}
	if (!*rel)
		w->root_wd = wd;
	long i = table_find(&w->dirs, table_hash_wd(wd), NULL, wd);
	if (i < 0) {
		char *k = strdup(rel);
		i = k ? table_insert(&w->dirs, table_hash_wd(wd), k, wd) : -ENOMEM;
		if (i < 0) {
			inotify_rm_watch(w->fd, wd);
			return -ENOMEM;
		}
	} else if (strcmp(w->dirs.v[i].key, rel) != 0) {
		/* The same directory under another name: it was moved. */
		char *k = strdup(rel);
		if (!k)
			return -ENOMEM;
		free(w->dirs.v[i].key);
		w->dirs.v[i].key = k;
	}
	w->dirs.v[i].gen = w->gen;
	return 0;
}

/* Record rel's stat in the snapshot, reporting it if it is new or changed. */
static int
snapshot_update(struct watch *w, const char *rel, const struct stat *st)
{
	uint64_t h = table_hash_str(rel);
	int64_t mtime = (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
	/* The change time too: tools set an old mtime back onto new contents
	 * (cp -p, tar, rsync -t), never a change time; the children trust
	 * what this reports (_zy/reload.py compares the same four). */
	int64_t ctime = (int64_t)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
	long i = table_find(&w->files, h, rel, 0);
	if (i < 0) {
		char *k = strdup(rel);
		if (!k || (i = table_insert(&w->files, h, k, 0)) < 0)
			return -ENOMEM;
	} else if (w->files.v[i].mtime == mtime && w->files.v[i].size == (int64_t)st->st_size &&
		   w->files.v[i].ino == (uint64_t)st->st_ino && w->files.v[i].ctime == ctime) {
		w->files.v[i].gen = w->gen;
		return 0;
	}
	w->files.v[i].mtime = mtime;
	w->files.v[i].size = (int64_t)st->st_size;
	w->files.v[i].ino = (uint64_t)st->st_ino;
	w->files.v[i].ctime = ctime;
	w->files.v[i].gen = w->gen;
	report(w, rel);
	return 0;
}

enum {
	WALK_WATCH = 1,    /* add inotify watches */
	WALK_REPORT = 2,   /* report every wanted file */
	WALK_SNAPSHOT = 4, /* stat wanted files into the snapshot, report changes */
	WALK_COUNT = 8,    /* count wanted files in w->counted */
};

/* Report the file below a renamed directory under its old name too. */
static void
report_old(struct watch *w, const char *old, const char *name)
{
	char orel[PATH_MAX];
	if (join(orel, sizeof(orel), old, name) == 0 && path_wanted(w, orel))
		report(w, orel);
}

/* The directory entries of one level: files handled, subdirectories returned. */
struct subdirs {
	char **v;
	size_t n, cap;
};

/* Free the names from index from on, and the array. */
static void
subdirs_free(struct subdirs *s, size_t from)
{
	for (size_t i = from; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

/* Append a copy of rel; 0 or -ENOMEM. */
static int
subdirs_push(struct subdirs *s, const char *rel)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		char **v = realloc(s->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	if (!(s->v[s->n] = strdup(rel)))
		return -ENOMEM;
	s->n++;
	return 0;
}

/*
 * Walk the wanted directory rel ("" for the root): watch it before reading it
 * (so a file created meanwhile is either read or reported by an event), then
 * handle its files and walk its wanted subdirectories, one directory open at
 * a time. old: rel's previous name after a rename, or NULL. A directory that
 * vanished or cannot be read is skipped; the root's errors and -ENOMEM/-EMFILE
 * are returned. An ENOSPC from inotify only sets w->degraded.
 */
static int
walk(struct watch *w, const char *rel, int flags, const char *old)
{
	struct subdirs subs = { 0 };
	const char *path = abspath(w, rel);
	int r = 0;

	if (!path)
		return *rel ? 0 : -ENAMETOOLONG;
	if (flags & WALK_WATCH) {
		r = add_watch(w, path, rel);
		if (r == -ENOMEM || (!*rel && r < 0 && r != -ENOSPC))
			return r;
	}
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (*rel ? O_NOFOLLOW : 0));
	if (dfd < 0) {
		r = -errno;
		return !*rel || r == -ENOMEM || r == -EMFILE || r == -ENFILE ? r : 0;
	}
	DIR *d = fdopendir(dfd);
	if (!d) {
		r = -errno;
		close(dfd);
		return r;
	}
	if (flags & WALK_SNAPSHOT)
		w->polled_dirs++;
	r = 0;
	for (struct dirent *de; r == 0 && (de = readdir(d));) {
		char crel[PATH_MAX];
		const char *name = de->d_name;
		if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
			continue;
		if (join(crel, sizeof(crel), rel, name) < 0)
			continue;
		int isdir = de->d_type == DT_DIR;
		if (de->d_type == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			isdir = S_ISDIR(st.st_mode);
		}
		if (isdir) {
			if (dir_wanted(w, crel))
				r = subdirs_push(&subs, crel);
			continue;
		}
		if (!(flags & (WALK_REPORT | WALK_SNAPSHOT | WALK_COUNT)) || !file_wanted(w, crel))
			continue;
		if (flags & WALK_COUNT) {
			w->counted++;
			continue;
		}
		if (flags & WALK_SNAPSHOT) {
			struct stat st;
			/* Follow symlinks: the target's changes are what matter. */
			if (fstatat(dfd, name, &st, 0) < 0 || S_ISDIR(st.st_mode))
				continue;
			r = snapshot_update(w, crel, &st);
		}
		if (flags & WALK_REPORT) {
			report(w, crel);
			if (old)
				report_old(w, old, name);
		}
	}
	closedir(d);
	for (size_t i = 0; r == 0 && i < subs.n; i++) {
		char orel[PATH_MAX];
		const char *oldsub = NULL;
		const char *name = subs.v[i] + (*rel ? strlen(rel) + 1 : 0);
		if (old && join(orel, sizeof(orel), old, name) == 0)
			oldsub = orel;
		r = walk(w, subs.v[i], flags, oldsub);
		free(subs.v[i]);
		subs.v[i] = NULL;
	}
	subdirs_free(&subs, 0);
	return r;
}

/*
 * Walk the whole tree again after lost events or a watch that could not be
 * added: watch what is missing, rename what moved, drop the watches of
 * directories that are gone. Sets w->degraded if it could not finish.
 */
static void
rescan(struct watch *w)
{
	w->gen++;
	w->degraded = 0;
	w->root_wd = -1;
	int r = walk(w, "", WALK_WATCH, NULL);
	if (r < 0 || w->root_wd < 0)
		w->degraded = 1;
	if (r == 0) {
		for (size_t i = 0; i < w->dirs.cap;) {
			if (w->dirs.v[i].key && w->dirs.v[i].gen != w->gen) {
				inotify_rm_watch(w->fd, w->dirs.v[i].wd);
				table_del(&w->dirs, i);
				continue;
			}
			i++;
		}
	}
	w->retry_at = now_ns() + RETRY_NS;
}

/* A directory was renamed away: drop its watches and wait for the other half. */
static void
dir_moved_from(struct watch *w, const char *rel, uint32_t cookie)
{
	size_t len = strlen(rel);
	int found = 0;
	for (size_t i = 0; i < w->dirs.cap;) {
		const char *k = w->dirs.v[i].key;
		if (k && strncmp(k, rel, len) == 0 && (k[len] == '\0' || k[len] == '/')) {
			inotify_rm_watch(w->fd, w->dirs.v[i].wd);
			table_del(&w->dirs, i);
			found = 1;
			continue;
		}
		i++;
	}
	if (!found)
		return; /* nothing below it was watched, so nothing to report */
	if (w->move_from) {
		/* The previous one found no partner: it left the tree. */
		w->overflow = 1;
		free(w->move_from);
	}
	w->move_from = strdup(rel);
	w->move_cookie = cookie;
	if (!w->move_from)
		w->overflow = 1;
}

/* A directory appeared (created, or renamed into place). */
static void
dir_arrived(struct watch *w, const char *rel, uint32_t mask, uint32_t cookie)
{
	char *old = NULL;
	if ((mask & IN_MOVED_TO) && w->move_from && w->move_cookie == cookie)
		old = steal_ptr(&w->move_from);
	if (!dir_wanted(w, rel)) {
		/* Renamed to an ignored place: the old names are unknown now. */
		if (old)
			w->overflow = 1;
	} else if (walk(w, rel, WALK_WATCH | WALK_REPORT, old) < 0) {
		w->overflow = 1;
		w->rescan = 1;
	}
	free(old);
}

/* One inotify event: report a file, follow a directory, or note lost events. */
static void
handle_event(struct watch *w, const struct inotify_event *ev)
{
	char rel[PATH_MAX];

	if (ev->mask & IN_Q_OVERFLOW) {
		w->overflow = 1;
		w->rescan = 1;
		warn_limit(w,
			   "inotify's event queue overflowed and changes were lost, so every "
			   "file is treated as changed",
			   INOTIFY_PROC "max_queued_events", w->queued_max);
		return;
	}
	long i = table_find(&w->dirs, table_hash_wd(ev->wd), NULL, ev->wd);
	if (i < 0)
		return; /* a watch this side has already dropped */
	if (ev->mask & IN_IGNORED) {
		/* The directory is gone (its files were reported one by one). */
		if (ev->wd == w->root_wd) {
			w->root_wd = -1;
			w->overflow = 1;
			w->rescan = 1;
		}
		table_del(&w->dirs, (size_t)i);
		return;
	}
	if (ev->mask & IN_MOVE_SELF) {
		/* Only the root asks for it: every path is wrong now. */
		w->overflow = 1;
		w->rescan = 1;
		return;
	}
	if (!ev->len || join(rel, sizeof(rel), w->dirs.v[i].key, ev->name) < 0)
		return;
	if (ev->mask & IN_ISDIR) {
		if (ev->mask & IN_MOVED_FROM)
			dir_moved_from(w, rel, ev->cookie);
		else if (ev->mask & (IN_CREATE | IN_MOVED_TO))
			dir_arrived(w, rel, ev->mask, ev->cookie);
		/* IN_DELETE: its own watch ends with IN_IGNORED. */
		return;
	}
	if ((ev->mask & WATCH_FILE_EVENTS) && file_wanted(w, rel))
		report(w, rel);
}

int
watch_drain(struct watch *w, void (*cb)(const char *path, void *arg), void *arg)
{
	int r = 0, empty = 0;

	if (w->fd < 0)
		return 0;
	w->cb = cb;
	w->arg = arg;
	w->dedupe = 1;
	w->overflow = w->degraded;
	w->rescan = 0;
	for (int reads = 0; reads < MAX_READS; reads++) {
		ssize_t n = read(w->fd, w->buf, READ_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			empty = 1;
			break;
		}
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		for (char *p = w->buf; p < w->buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			handle_event(w, ev);
			p += sizeof(*ev) + ev->len;
		}
	}
	if (!empty && r == 0) {
		/* MAX_READS were not enough (a queue limit raised far beyond the
		 * default): what is left is read next time, but this drain's
		 * answer must not be taken as complete. */
		w->overflow = 1;
	}
	if (empty && w->move_from) {
		/* Renamed out of the tree: which files it held is not known here. */
		w->overflow = 1;
		free(steal_ptr(&w->move_from));
	}
	if (w->rescan || (w->degraded && now_ns() >= w->retry_at))
		rescan(w);
	table_free(&w->seen);
	w->cb = NULL;
	w->arg = NULL;
	w->dedupe = 0;
	if (r < 0)
		return r;
	return w->overflow || w->degraded ? WATCH_OVERFLOW : 0;
}

int
watch_poll(struct watch *w, void (*cb)(const char *path, void *arg), void *arg)
{
	w->cb = cb;
	w->arg = arg;
	w->gen++;
	w->polled_dirs = 0;
	int r = walk(w, "", WALK_SNAPSHOT, NULL);
	if (r == 0) {
		/* Not seen by this walk: deleted (or no longer wanted). */
		for (size_t i = 0; i < w->files.cap;) {
			if (w->files.v[i].key && w->files.v[i].gen != w->gen) {
				report(w, w->files.v[i].key);
				table_del(&w->files, i);
				continue;
			}
			i++;
		}
	}
	w->cb = NULL;
	w->arg = NULL;
	return r;
}

int
watch_create(struct watch **ret, const struct watch_opts *o)
{
	struct watch *w;
	struct stat st;
	int r;

	if (!o || !o->root || o->root[0] != '/')
		return -EINVAL;
	if (!(w = calloc(1, sizeof(*w))))
		return -ENOMEM;
	w->fd = -1;
	w->root_wd = -1;
	w->poll = !!o->poll;
	if (!(w->root = strdup(o->root))) {
		r = -ENOMEM;
		goto fail;
	}
	for (size_t n = strlen(w->root); n > 1 && w->root[n - 1] == '/'; n--)
		w->root[n - 1] = '\0';
	r = globs_compile(&w->globs, &w->nglobs, o->globs ? o->globs : default_globs, w->root, 0);
	if (r < 0)
		goto fail;
	r = globs_compile(&w->ignore, &w->nignore, o->ignore ? o->ignore : default_ignore, w->root,
			  1);
	if (r < 0)
		goto fail;
	if ((r = glob_whole_compile(&w->whole, &w->nwhole, o->whole_globs, w->root)) < 0 ||
	    (r = glob_whole_compile(&w->whole_ignore, &w->nwhole_ignore, o->whole_ignore,
				    w->root)) < 0)
		goto fail;
	if (stat(w->root, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		r = -ENOTDIR;
		goto fail;
	}

	if (!w->poll) {
		/* The queue of an instance is sized when it is made. */
		w->queued_max = read_limit(INOTIFY_PROC "max_queued_events");
		w->fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
		if (w->fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOSYS)) {
			const char *limit;
			long value = pick_limit(INOTIFY_PROC "max_user_instances",
						"/proc/sys/user/max_inotify_instances", &limit);
			warn_limit(w,
				   "no inotify instance could be created (or the open file limit "
				   "was reached), so the project is polled for changes instead",
				   limit, value);
			w->poll = 1;
		} else if (w->fd < 0) {
			r = -errno;
			goto fail;
		}
	}
	w->gen++;
	if (w->poll) {
		r = walk(w, "", WALK_SNAPSHOT, NULL);
	} else {
		r = -ENOMEM;
		if ((w->buf = malloc(READ_SIZE)))
			r = walk(w, "", WALK_WATCH, NULL);
		w->retry_at = now_ns() + RETRY_NS;
	}
	if (r < 0)
		goto fail;
	*ret = w;
	return 0;
fail:
	watch_destroy(w);
	return r;
}

int
watch_fd(const struct watch *w)
{
	return w->fd;
}

const char *
watch_warning(const struct watch *w)
{
	return w->warning;
}

size_t
watch_count(const struct watch *w)
{
	return w->poll ? w->polled_dirs : w->dirs.n;
}

long
watch_files(struct watch *w)
{
	w->counted = 0;
	int r = walk(w, "", WALK_COUNT, NULL);
	return r < 0 ? r : w->counted;
}

int
watch_covers(const struct watch *w, const char *path, char *dirbuf, size_t dirsize)
{
	size_t rl = strcmp(w->root, "/") == 0 ? 0 : strlen(w->root);
	if (strncmp(path, w->root, rl) != 0 || path[rl] != '/' || !path[rl + 1])
		return 0;
	if (!path_wanted(w, path + rl + 1))
		return 0;
	/* Inotify reports a write through this name only: not one to a
	 * symlink's target, nor one through another hard link elsewhere. */
	struct stat st;
	if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || (!w->poll && st.st_nlink != 1))
		return 0;
	/* The walk follows no symlinked directory. The callers' paths come
	 * sorted, so the directory of the last call is remembered in dirbuf. */
	const char *slash = strrchr(path, '/');
	size_t dl = (size_t)(slash - path);
	if (dirbuf && dirsize > dl + 1 && strncmp(dirbuf, path, dl) == 0 && dirbuf[dl] == '\0')
		return 1;
	char dir[PATH_MAX], real[PATH_MAX];
	if (dl == 0 || dl >= sizeof(dir))
		return 0;
	memcpy(dir, path, dl);
	dir[dl] = '\0';
	if (!realpath(dir, real) || strcmp(real, dir) != 0)
		return 0;
	if (dirbuf && dirsize > dl)
		memcpy(dirbuf, dir, dl + 1);
	return 1;
}

void
watch_destroy(struct watch *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	table_free(&w->dirs);
	table_free(&w->files);
	table_free(&w->seen);
	globs_free(w->globs, w->nglobs);
	globs_free(w->ignore, w->nignore);
	glob_strv_free(w->whole, w->nwhole);
	glob_strv_free(w->whole_ignore, w->nwhole_ignore);
	free(w->move_from);
	free(w->warning);
	free(w->buf);
	free(w->root);
	free(w);
}
