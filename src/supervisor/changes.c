/*
 * What changed: the project watcher, a second inotify outside the project
 * (where imports came from, data files they read), the dirty set, each
 * generation's check list (the files its runs compare with its snapshot), and
 * when runs must wait for a fresh generation. Never blocks, never talks to
 * clients.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/watch.h"
#include "internal.h"

#define DEFAULT_SETTLE_MS 300
/* Outside the project changes come in bursts (a package manager installs for
 * a minute): a fresh generation waits for them to stop at least this long. */
#define EXT_QUIET_MIN_MS 1000
/* ...but starts at the latest this long after the first, however long they go on. */
#define FRESH_MAX_PENDING_MS 30000
/* A generation warming with files that changed since is replaced at most once
 * in this long: a stream of bursts must not kill every warm-up. */
#define FRESH_REPLACE_EVERY_MS 30000

static void on_change(const char *path, void *arg);

/* Relevant names in a directory outside the project: code and install records. */
static int
ext_relevant(const struct inotify_event *ev)
{
	const char *n = ev->len ? ev->name : "";
	size_t l = strlen(n);
	if (strcmp(n, "__pycache__") == 0 || (l > 4 && strcmp(n + l - 4, ".pyc") == 0))
		return 0;
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
		return 1;
	if (ev->mask & IN_ISDIR)
		return 1; /* a package or a .dist-info appeared or went */
	static const char *const ends[] = { ".py", ".pth", ".so", ".egg-link" };
	for (size_t i = 0; i < ARRAY_SIZE(ends); i++) {
		size_t el = strlen(ends[i]);
		if (l > el && strcmp(n + l - el, ends[i]) == 0)
			return 1;
	}
	return 0;
}

/* Watch the directories outside the project that the current generation imported from. */
void
changes_ext_rebuild(const char *files)
{
	if (s.ext_fd >= 0)
		close(s.ext_fd);
	s.ext_fd = -1;
	for (int i = 0; i < s.ndata_dirs; i++)
		free(s.data_dirs[i].dir);
	free(s.data_dirs);
	s.data_dirs = NULL;
	s.ndata_dirs = 0;
	for (int i = 0; i < s.next_dirs; i++)
		free(s.ext_dirs[i].dir);
	free(s.ext_dirs);
	s.ext_dirs = NULL;
	s.next_dirs = 0;
	if (!files || s.poll_ms > 0)
		return;
	s.ext_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (s.ext_fd < 0) {
		log_warn("inotify: %s; changes to installed packages are not noticed "
			 "(run 'pytest-zygote restart' after installing)",
			 strerror(errno));
		return;
	}
	int n = 0;
	for (const char *p = files; *p;) {
		size_t l = strcspn(p, "\n");
		if (l > 2 && p[0] == 'X' && p[1] == '\t') {
			char dir[PATH_MAX];
			snprintf(dir, sizeof(dir), "%.*s", (int)(l - 2), p + 2);
			int wd = inotify_add_watch(s.ext_fd, dir,
						   IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
							   IN_CREATE | IN_DELETE | IN_DELETE_SELF |
							   IN_MOVE_SELF | IN_ONLYDIR);
			struct data_dir *d =
				wd < 0 ? NULL
				       : realloc(s.ext_dirs,
						 sizeof(*d) * (size_t)(s.next_dirs + 1));
			if (d) {
				/* Kept to say where changes are (the events name files only). */
				s.ext_dirs = d;
				d[s.next_dirs].wd = wd;
				d[s.next_dirs].dir = strdup(dir);
				if (d[s.next_dirs].dir)
					s.next_dirs++;
			}
			if (wd >= 0)
				n++;
		} else if (l > 2 && (p[0] == 'D' || p[0] == 'F') && p[1] == '\t') {
			/* A project file an import read: watch its directory. */
			char dir[PATH_MAX];
			snprintf(dir, sizeof(dir), "%.*s", (int)(l - 2), p + 2);
			char *slash = strrchr(dir, '/');
			if (slash && slash != dir)
				*slash = '\0';
			int wd = inotify_add_watch(s.ext_fd, dir,
						   IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
							   IN_CREATE | IN_DELETE | IN_ATTRIB |
							   IN_ONLYDIR | IN_MASK_ADD);
			int known = 0;
			for (int i = 0; i < s.ndata_dirs && !known; i++)
				known = s.data_dirs[i].wd == wd;
			struct data_dir *d =
				wd < 0 || known ? NULL
						: realloc(s.data_dirs,
							  sizeof(*d) * (size_t)(s.ndata_dirs + 1));
			if (d) {
				s.data_dirs = d;
				d[s.ndata_dirs].wd = wd;
				d[s.ndata_dirs].dir = strdup(dir);
				if (d[s.ndata_dirs].dir)
					s.ndata_dirs++;
			}
		}
		p += l;
		if (*p)
			p++;
	}
	log_debug("watching %d directories outside the project and %d of files imports read", n,
		  s.ndata_dirs);
}

/* Is there a line "KIND<TAB>path" in a generation's file list? */
static int
files_has(const char *files, char kind, const char *path)
{
	size_t pl = strlen(path);
	for (const char *p = files ? files : ""; *p;) {
		size_t l = strcspn(p, "\n");
		if (l == pl + 2 && p[0] == kind && p[1] == '\t' && memcmp(p + 2, path, pl) == 0)
			return 1;
		p += l;
		if (*p)
			p++;
	}
	return 0;
}

/* The current generation's file list, or NULL. */
static const char *
current_files(void)
{
	return s.cur >= 0 && s.gens[s.cur].pid ? s.gens[s.cur].files : NULL;
}

/*
 * Runs must wait for a fresh generation: one started after this change. It is
 * not started at once: changes come in bursts (a save, a package manager
 * installing for a minute), and one generation per change only burns CPU on
 * warm-ups that are stale before they end. changes_fresh_timer starts it once
 * the changes stopped for quiet_ms.
 */
static void
need_fresh(const char *why, int quiet_ms)
{
	long long now = now_ms();
	if (!s.fresh_needed || !s.fresh_first_ms)
		log_info("fresh zygote needed: %s", why);
	if (!s.fresh_first_ms) {
		s.fresh_first_ms = now;
		s.fresh_changes = 0;
		s.fresh_quiet_ms = 0;
		snprintf(s.fresh_reason, sizeof(s.fresh_reason), "%s", why);
	}
	snprintf(s.fresh_last, sizeof(s.fresh_last), "%s", why);
	s.fresh_changes++;
	if (quiet_ms > s.fresh_quiet_ms)
		s.fresh_quiet_ms = quiet_ms;
	s.fresh_needed = 1;
	s.fresh_since_ms = now;
	s.fresh_failed[0] = '\0'; /* the change may be the fix */
}

/* How long changes outside the project must stop before a fresh generation starts. */
static int
ext_quiet_ms(void)
{
	return s.settle_ms > EXT_QUIET_MIN_MS ? s.settle_ms : EXT_QUIET_MIN_MS;
}

int
changes_fresh_timer(long long now, long long *wake)
{
	if (!s.fresh_first_ms || s.stopping || !s.ever_ready)
		return 0;
	long long quiet = s.fresh_since_ms + s.fresh_quiet_ms;
	long long latest = s.fresh_first_ms + FRESH_MAX_PENDING_MS;
	long long due = quiet < latest ? quiet : latest;
	if (s.next >= 0) {
		/* One warms already, with files from before these changes: it is
		 * replaced once they stopped (not at the latest bound, or a
		 * stream would never let one warm), and at most once in
		 * FRESH_REPLACE_EVERY_MS; else it takes over when warm and the
		 * next starts then. */
		long long allowed =
			s.fresh_replaced_ms ? s.fresh_replaced_ms + FRESH_REPLACE_EVERY_MS : 0;
		due = quiet > allowed ? quiet : allowed;
	}
	if (now < due) {
		if (*wake < 0 || due < *wake)
			*wake = due;
		return 0;
	}
	if (s.next >= 0) {
		struct gen *g = &s.gens[s.next];
		log_info("generation %d started before the last change (%s); replacing it",
			 g->number, s.fresh_last);
		g->draining = 1;
		kill(g->pid, SIGKILL);
		s.next = -1;
		s.fresh_replaced_ms = now;
	}
	log_info("%d change%s that need a fresh zygote, the first %.1f s ago%s; warming one",
		 s.fresh_changes, s.fresh_changes == 1 ? "" : "s",
		 (double)(now - s.fresh_first_ms) / 1000.0,
		 now >= quiet ? "" : " (they go on: starting anyway)");
	return gen_spawn(0) == 0;
}

int
changes_run_waits(struct conn *c)
{
	if (!s.fresh_needed || c->dec.req.kind != PROTO_KIND_RUN)
		return 0;
	/* The changes made before the run came are the ones it must see; a
	 * generation started after them serves it, even if more came since. */
	if (!c->fresh_after_ms)
		c->fresh_after_ms = s.fresh_since_ms;
	struct gen *g = gen_serving();
	if (g && g->started_ms >= c->fresh_after_ms)
		return 0;
	/* The last fresh one could not start and nothing changed since: try
	 * again for this run (the cause may be gone without a change we see). */
	if (s.fresh_failed[0] && s.next < 0 && !s.fresh_first_ms && !s.stopping && s.cur >= 0)
		gen_spawn(0);
	return 1;
}

void
changes_wait_reason(char *buf, size_t size)
{
	long long now = now_ms();
	int n = snprintf(buf, size, "waiting for a fresh zygote: %s", s.fresh_reason);
	if (n < 0 || (size_t)n >= size)
		return;
	if (s.fresh_first_ms) {
		long long latest = s.fresh_first_ms + FRESH_MAX_PENDING_MS;
		if (s.fresh_changes > 1 && strcmp(s.fresh_last, s.fresh_reason) != 0)
			n += snprintf(buf + n, size - (size_t)n,
				      "; %d changes so far, the last: %s", s.fresh_changes,
				      s.fresh_last);
		else if (s.fresh_changes > 1)
			n += snprintf(buf + n, size - (size_t)n, " (%d changes so far)",
				      s.fresh_changes);
		if ((size_t)n < size)
			snprintf(buf + n, size - (size_t)n,
				 "; it starts once nothing changed for %.1f s (at the latest in "
				 "%.0f s), then warms up",
				 s.fresh_quiet_ms / 1000.0,
				 (double)(latest > now ? latest - now : 0) / 1000.0);
	} else if (s.fresh_failed[0]) {
		snprintf(buf + n, size - (size_t)n,
			 "; the last one could not start (%.300s): trying again", s.fresh_failed);
	} else if (s.next >= 0) {
		snprintf(buf + n, size - (size_t)n, "; generation %d is warming up",
			 s.gens[s.next].number);
	}
}

/* Read the events of the watcher outside the project (and of data files). */
void
changes_ext_drain(void)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(s.ext_fd, buf, sizeof(buf));
		if (n <= 0)
			return;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				need_fresh("too many changes outside the project to follow",
					   ext_quiet_ms());
				continue;
			}
			const char *ddir = NULL;
			for (int i = 0; i < s.ndata_dirs && !ddir; i++)
				if (s.data_dirs[i].wd == ev->wd)
					ddir = s.data_dirs[i].dir;
			if (ddir && ev->len) {
				/* A file an import read: the child follows a project
				 * module's (D), a fresh generation the others' (F). */
				char path[PATH_MAX];
				snprintf(path, sizeof(path), "%s/%s", ddir, ev->name);
				if (files_has(current_files(), 'D', path) ||
				    files_has(current_files(), 'F', path))
					on_change(path, NULL);
			}
			if (ddir || !ext_relevant(ev))
				continue;
			const char *dir = NULL;
			for (int i = 0; i < s.next_dirs && !dir; i++)
				if (s.ext_dirs[i].wd == ev->wd)
					dir = s.ext_dirs[i].dir;
			char why[PATH_MAX + 128];
			if (dir && ev->len)
				snprintf(why, sizeof(why), "'%s/%s' changed outside the project",
					 dir, ev->name);
			else
				snprintf(why, sizeof(why), "'%s' changed outside the project",
					 dir       ? dir
					 : ev->len ? ev->name
						   : "a watched directory");
			need_fresh(why, ext_quiet_ms());
		}
	}
}

/* pytest's configuration files at the root: a change needs a fresh generation. */
static int
is_config(const char *path)
{
	static const char *const names[] = { "pytest.ini", ".pytest.ini", "pyproject.toml",
					     "setup.cfg", "tox.ini" };
	size_t rl = strlen(s.o->paths.root);
	if (strncmp(path, s.o->paths.root, rl) != 0 || path[rl] != '/')
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(path + rl + 1, names[i]) == 0)
			return 1;
	return 0;
}

/* A change for the watch clients (path NULL: events were lost), kept until
 * conn_watch_notify sends it; nothing is kept while none is connected. */
static void
note_for_watchers(const char *path)
{
	if (s.watchers <= 0)
		return;
	s.watch_last_ms = now_ms();
	for (int i = 0; path && i < s.nwatch_paths; i++)
		if (strcmp(s.watch_paths[i], path) == 0)
			return;
	/* A name with a newline would break the CHANGES text's lines: counted only. */
	char *d = path && !strchr(path, '\n') && s.nwatch_paths < PROTO_CHANGES_MAX_PATHS
			  ? strdup(path)
			  : NULL;
	if (d)
		s.watch_paths[s.nwatch_paths++] = d;
	else
		s.watch_more++;
}

long
changes_watched_files(void)
{
	return s.watch ? watch_files(s.watch) : -ENOENT;
}

/*
 * The check lists of the generations that may serve runs (struct gen, check):
 * every change seen goes on each, from the generation's start on, so a list
 * holds every file that may differ from the snapshot its warm-up takes later
 * (a change in between is on it too, and costs its children one stat). The
 * dirty set above is cleared when a generation starts; these are not.
 */
static void
gen_note(struct gen *g, const char *path)
{
	if (g->check_lost)
		return;
	for (int j = 0; j < g->ncheck; j++)
		if (strcmp(g->check[j], path) == 0)
			return;
	char **v = NULL;
	char *d = NULL;
	if (g->ncheck < MAX_CHECK && !strchr(path, '\n') &&
	    (v = realloc(g->check, sizeof(*v) * (size_t)(g->ncheck + 1))))
		g->check = v;
	if (v && (d = strdup(path)))
		g->check[g->ncheck++] = d;
	else
		g->check_lost = 1; /* too many, or out of memory: check everything */
}

static void
gens_note(const char *path)
{
	for (int i = 0; i < MAX_GENS; i++)
		if (s.gens[i].pid && !s.gens[i].draining)
			gen_note(&s.gens[i], path);
}

/* Events were lost: every generation's children check every file. */
static void
gens_lose(void)
{
	for (int i = 0; i < MAX_GENS; i++)
		s.gens[i].check_lost = 1;
}

void
changes_gen_begin(struct gen *g)
{
	g->check = NULL;
	g->ncheck = 0;
	g->check_lost = !s.watch;
}

void
changes_gen_end(struct gen *g)
{
	for (int i = 0; i < g->ncheck; i++)
		free(g->check[i]);
	free(g->check);
	g->check = NULL;
	g->ncheck = 0;
	g->check_lost = 1;
}

void
changes_gen_files(struct gen *g)
{
	if (!s.watch || g->check_lost)
		return;
	char dir[PATH_MAX] = "";
	int n = 0;
	for (const char *p = g->files ? g->files : ""; *p && !g->check_lost;) {
		size_t l = strcspn(p, "\n");
		if (l > 2 && l - 2 < PATH_MAX && p[0] == 'M' && p[1] == '\t') {
			char path[PATH_MAX];
			snprintf(path, sizeof(path), "%.*s", (int)(l - 2), p + 2);
			if (!watch_covers(s.watch, path, dir, sizeof(dir))) {
				gen_note(g, path);
				n++;
			}
		}
		p += l;
		if (*p)
			p++;
	}
	if (n)
		log_debug("generation %d: %d imported project file%s the watcher does not cover; "
			  "its runs check them every time",
			  g->number, n, n == 1 ? "" : "s");
	if (g->check_lost)
		log_debug("generation %d: runs check every imported file", g->number);
}

char *
changes_gen_entry(const struct gen *g)
{
	static const char name[] = "PYTEST_ZYGOTE_CHECK=";
	/* Before its Z_FILES, the files the watcher misses are not known. */
	if (g->check_lost || !g->files)
		return NULL;
	size_t len = sizeof(name);
	for (int i = 0; i < g->ncheck; i++)
		len += strlen(g->check[i]) + 1;
	char *e = malloc(len);
	if (!e)
		return NULL;
	size_t n = sizeof(name) - 1;
	memcpy(e, name, n);
	for (int i = 0; i < g->ncheck; i++) {
		size_t l = strlen(g->check[i]);
		if (i)
			e[n++] = '\n';
		memcpy(e + n, g->check[i], l);
		n += l;
	}
	e[n] = '\0';
	return e;
}

/* A file in the project changed (or may have). */
static void
on_change(const char *path, void *arg)
{
	(void)arg;
	char why[PATH_MAX + 128];
	const char *files = current_files();
	s.changes_seen++;
	note_for_watchers(path);
	gens_note(path);
	if (is_config(path)) {
		snprintf(why, sizeof(why), "the pytest configuration '%s' changed", path);
		need_fresh(why, s.settle_ms);
		return;
	}
	/* Modules a child cannot import again: pytest holds objects of them,
	 * or their importer is outside the project. */
	if (files_has(files, 'P', path)) {
		snprintf(why, sizeof(why),
			 "'%s' changed, and pytest or a plugin imported it before the project",
			 path);
		need_fresh(why, s.settle_ms);
		return;
	}
	if (files_has(files, 'F', path)) {
		snprintf(why, sizeof(why),
			 "'%s' changed, and a module outside the project read it at import", path);
		need_fresh(why, s.settle_ms);
		return;
	}
	if (s.reload_fresh && files_has(files, 'M', path)) {
		snprintf(why, sizeof(why), "'%s' changed (reload = fresh)", path);
		need_fresh(why, s.settle_ms);
		return;
	}
	s.dirty_total++;
	s.last_change_ms = now_ms();
	for (int i = 0; i < s.ndirty; i++)
		if (strcmp(s.dirty[i], path) == 0)
			return;
	if (s.ndirty < MAX_DIRTY) {
		char *d = strdup(path);
		if (d)
			s.dirty[s.ndirty++] = d;
	}
}

/* PYTEST_ZYGOTE_TEST_LOSE_EVENTS: count what was seen, keep nothing. */
static void
lose_change(const char *path, void *arg)
{
	(void)path;
	s.changes_seen++;
	(*(int *)arg)++;
}

/* Drain the project watcher. */
void
changes_watch_settle(void)
{
	if (!s.watch)
		return;
	int lost = 0;
	void (*cb)(const char *, void *) = s.lose_events ? lose_change : on_change;
	void *arg = s.lose_events ? &lost : NULL;
	int r = s.poll_ms > 0 ? watch_poll(s.watch, cb, arg) : watch_drain(s.watch, cb, arg);
	if (lost) {
		log_info("PYTEST_ZYGOTE_TEST_LOSE_EVENTS: %d change%s dropped as if inotify's "
			 "queue had overflowed",
			 lost, lost == 1 ? "" : "s");
		r = WATCH_OVERFLOW;
	}
	if (r < 0 || r == WATCH_OVERFLOW)
		gens_lose();
	if (r == WATCH_OVERFLOW) {
		/* Events were lost: any file may have changed. Children check
		 * every imported file anyway; a fresh generation catches up. */
		static int warned;
		const char *w = watch_warning(s.watch);
		if (w && !warned++)
			log_warn("%s", w);
		note_for_watchers(NULL);
		s.changes_seen++;
		s.dirty_total++;
		s.last_change_ms = now_ms();
	}
}

/* Settings from the environment (the config file comes later), and the project watcher. */
static int
env_int(const char *name, int def, int lo, int hi)
{
	const char *v = getenv(name);
	char *end;
	if (!v || !*v)
		return def;
	long x = strtol(v, &end, 10);
	if (*end || x < lo || x > hi) {
		log_warn("%s=%s is not a number between %d and %d; using %d", name, v, lo, hi, def);
		return def;
	}
	return (int)x;
}

/* Split a colon-separated list into a NULL-terminated vector (in a static buffer). */
static const char **
split_globs(const char *list, const char **vec, size_t cap, char *buf, size_t bufsize)
{
	size_t n = 0;
	snprintf(buf, bufsize, "%s", list);
	for (char *save = NULL, *t = strtok_r(buf, ":", &save); t && n + 1 < cap;
	     t = strtok_r(NULL, ":", &save))
		if (*t)
			vec[n++] = t;
	vec[n] = NULL;
	return vec;
}

/* Read the settings from the environment and start the project watcher. */
void
changes_watch_start(void)
{
	/* Watch globs: the user's (PYTEST_ZYGOTE_WATCH_GLOBS, colon-separated),
	 * pytest-hot-reloading's (PYTEST_DAEMON_WATCH_GLOBS), or every .py file;
	 * pytest's configuration files are always watched. Ignore globs:
	 * PYTEST_ZYGOTE_IGNORE_GLOBS replaces the defaults;
	 * PYTEST_DAEMON_IGNORE_WATCH_GLOBS ignores more. */
	static const char *const config_files[] = { "pytest.ini", ".pytest.ini", "pyproject.toml",
						    "setup.cfg", "tox.ini" };
	static const char *globs[72], *ignore[64], *whole[64], *whole_ignore[64];
	static char gbuf[4096], ibuf[4096], wbuf[4096], wibuf[4096];
	const char *wg = getenv("PYTEST_ZYGOTE_WATCH_GLOBS");
	/* pytest-hot-reloading's variables, with its meaning (watch.h: whole_globs). */
	const char *dw = getenv("PYTEST_DAEMON_WATCH_GLOBS");
	const char *di = getenv("PYTEST_DAEMON_IGNORE_WATCH_GLOBS");
	split_globs(dw ? dw : "", whole, ARRAY_SIZE(whole), wbuf, sizeof(wbuf));
	split_globs(di ? di : "", whole_ignore, ARRAY_SIZE(whole_ignore), wibuf, sizeof(wibuf));
	split_globs(wg && *wg ? wg : whole[0] ? "" : "**/*.py", globs, 64, gbuf, sizeof(gbuf));
	size_t n = 0;
	while (globs[n])
		n++;
	for (size_t i = 0; i < ARRAY_SIZE(config_files); i++)
		globs[n++] = config_files[i];
	globs[n] = NULL;
	const char *ig = getenv("PYTEST_ZYGOTE_IGNORE_GLOBS");
	if (ig && *ig)
		split_globs(ig, ignore, ARRAY_SIZE(ignore), ibuf, sizeof(ibuf));
	s.settle_ms = env_int("PYTEST_ZYGOTE_SETTLE_MS", DEFAULT_SETTLE_MS, 0, 3600000);
	s.max_runs = env_int("PYTEST_ZYGOTE_MAX_RUNS", supervisor_default_max_runs(), 0,
			     SUPERVISOR_MAX_RUNS_LIMIT);
	s.poll_ms = env_int("PYTEST_ZYGOTE_POLL_MS", 0, 0, 3600000);
	/* For tests only (docs/hacking.md): what an inotify queue overflow does,
	 * which a user without root cannot cause (max_queued_events is global). */
	s.lose_events = env_int("PYTEST_ZYGOTE_TEST_LOSE_EVENTS", 0, 0, 1);
	/* The check list is ours to give (conn.c, send_run): one in the
	 * environment we were started with would reach the zygote's own runs
	 * (the practice run), which must compare every file. */
	unsetenv("PYTEST_ZYGOTE_CHECK");
	s.max_variants = env_int("PYTEST_ZYGOTE_VARIANTS", 3, 0, MAX_VARIANTS);
	s.idle_ms = env_int("PYTEST_ZYGOTE_VARIANT_IDLE", 1800, 1, 7 * 86400) * 1000LL;
	const char *rl = getenv("PYTEST_ZYGOTE_RELOAD");
	s.reload_fresh = rl && strcmp(rl, "fresh") == 0;
	if (rl && *rl && !s.reload_fresh && strcmp(rl, "child") != 0)
		log_warn("PYTEST_ZYGOTE_RELOAD=%s is not child or fresh; using child", rl);
	struct watch_opts wo = {
		.root = s.o->paths.root,
		.globs = globs,
		.ignore = ig && *ig ? ignore : NULL,
		.poll = s.poll_ms > 0,
		.whole_globs = whole,
		.whole_ignore = whole_ignore,
	};
	int r = watch_create(&s.watch, &wo);
	if (r < 0) {
		log_warn("cannot watch %s: %s; runs check every imported file, but no "
			 "fresh generation follows edits",
			 s.o->paths.root, strerror(-r));
		s.watch = NULL;
		return;
	}
	if (watch_warning(s.watch))
		log_warn("%s", watch_warning(s.watch));
	if (watch_fd(s.watch) < 0 && s.poll_ms <= 0) {
		/* No inotify instance to be had (max_user_instances): poll instead. */
		s.poll_ms = 1000;
	}
	if (s.poll_ms > 0)
		s.next_poll_ms = now_ms() + s.poll_ms;
	log_debug("watching %zu directories under %s", watch_count(s.watch), s.o->paths.root);
}
