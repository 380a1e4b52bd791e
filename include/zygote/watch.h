/*
 * The project's file watcher for the supervisor: one inotify watch per
 * directory (never per file), globs and ignore globs relative to the project
 * root, and a stat-snapshot poll mode for file systems without events. Never
 * blocks and never logs; the caller polls watch_fd() and logs watch_warning().
 */
#ifndef ZYGOTE_WATCH_H
#define ZYGOTE_WATCH_H

#include <stddef.h>

/* watch_drain(): events were lost or a directory is not watched; treat every
 * file as possibly changed. */
#define WATCH_OVERFLOW 1

struct watch;

struct watch_opts {
	const char *root;         /* absolute project root */
	const char *const *globs; /* NULL-terminated globs relative to root; NULL: every .py file */
	const char *const *ignore; /* NULL-terminated ignore globs; NULL: the defaults below */
	int poll;                  /* 1: no inotify (network mounts); use watch_poll() */
	/* pytest-hot-reloading's globs (NULL-terminated, or NULL): each matched with
	 * fnmatch() against the whole absolute path, '*' crossing '/'. Relative ones
	 * are taken from root, "~" is $HOME, a directory means all below it. A file
	 * is watched if a glob of either kind matches it and no ignore glob of
	 * either kind does. */
	const char *const *whole_globs;
	const char *const *whole_ignore;
};

/*
 * Globs are relative to root (a leading "./" or "root/" is dropped): '*', '?'
 * and '[...]' within one path component, "**" for zero or more components.
 * An ignore glob ending in '/' names a directory: without another '/' it is a
 * directory of that name at any depth (".git/"), else a path from the root
 * ("src/gen/"). Other ignore globs are matched against files and directories
 * alike, and an ignored directory is not entered. The default ignores are
 * ".venv/", "venv/", ".git/", "__pycache__/", ".tox/", ".nox/", "build/",
 * "dist/" and "node_modules/". Directories that no watch glob can reach
 * ("docs" when the only glob is "src/" + "**" + "/" + "*.py") are not
 * watched either. (Globs are spelt in pieces here: a C comment cannot hold
 * them whole.)
 */

/*
 * Walk root and watch every directory that is not ignored (inotify_init1 with
 * IN_CLOEXEC | IN_NONBLOCK, symlinks not followed). In poll mode take the first
 * stat snapshot instead. Returns 0 with *ret set, or -EINVAL (relative root, a
 * glob outside root), -ENOENT/-ENOTDIR/-EACCES for the root, -ENOMEM. If no
 * inotify instance can be had (max_user_instances) it polls instead and says
 * so in watch_warning(). A watch limit (max_user_watches) hit here is not an
 * error: watch_warning() says so and the first watch_drain() returns
 * WATCH_OVERFLOW.
 */
int watch_create(struct watch **ret, const struct watch_opts *o);

/*
 * The inotify fd to poll() for POLLIN (close-on-exec, non-blocking), or -1 in
 * poll mode. It stays the same fd for the life of the watch.
 */
int watch_fd(const struct watch *w);

/*
 * Read the pending events without blocking and call cb(path, arg) once per
 * absolute file path (root as given + "/" + relative path) that matches a
 * watch glob, is not ignored, and may have been written, created, deleted,
 * renamed away or to, or had its attributes changed. Directories that appear
 * are watched and the files already in them reported; a directory renamed
 * within the tree reports the files under both names. Returns 0; or
 * WATCH_OVERFLOW when the caller must treat every file as possibly changed:
 * the kernel queue overflowed, a watch could not be added (max_user_watches;
 * then every call returns it until a retry, at most once a second, watches
 * the whole tree), a watched directory was moved out of the tree, or the root
 * itself was moved or deleted. Returns -errno if the fd cannot be read. The
 * path is valid during the call only; cb must not call watch functions.
 * Reads at most a few MiB per call: if the fd is still readable, call again.
 */
int watch_drain(struct watch *w, void (*cb)(const char *path, void *arg), void *arg);

/*
 * Walk the tree and compare each matching file's (mtime in ns, size, inode)
 * with the previous walk; call cb for every file added, changed or deleted.
 * Works in both modes: in poll mode watch_create() took the first walk; with
 * inotify the first call reports every matching file. Returns 0 or -errno
 * (-ENOMEM; a root that vanished is -ENOENT).
 */
int watch_poll(struct watch *w, void (*cb)(const char *path, void *arg), void *arg);

/*
 * NULL, or a sentence for the user naming the kernel limit to raise (the
 * /proc/sys/fs/inotify file and its value). It is set the first time events
 * are lost or a watch or instance cannot be had, then never changes: log it
 * the first time it is non-NULL.
 */
const char *watch_warning(const struct watch *w);

/*
 * The number of directories watched with inotify; in poll mode, the number
 * of directories the last walk visited.
 */
size_t watch_count(const struct watch *w);

/*
 * The number of files a change of which is reported (the watch globs, not
 * ignored), counted by a walk of the tree now (a directory read per
 * directory, no stat): for the status line of `pytest-zygote watch`, after a
 * batch of changes. Returns the count or -errno (the root's errors, -ENOMEM).
 */
long watch_files(struct watch *w);

/*
 * 1 if every change of the file at the absolute path reaches the callback of
 * watch_drain() or watch_poll() (unless they return WATCH_OVERFLOW): it is
 * under the root, wanted by the globs, in directories the walk enters and
 * reached without a symlink, and (with inotify) its only name, since a write
 * to a symlink's target or through another hard link is reported elsewhere.
 * 0 otherwise. dirbuf (dirsize bytes, "" at first, or NULL) remembers the
 * last directory checked, for paths that come sorted. Reads the file system
 * (lstat, realpath).
 */
int watch_covers(const struct watch *w, const char *path, char *dirbuf, size_t dirsize);

/* Remove the watches, close the fd and free w. Accepts NULL. */
void watch_destroy(struct watch *w);

/*
 * 1 if relpath (relative to the root, '/'-separated) matches glob, else 0.
 * Each component is matched with fnmatch(FNM_PATHNAME); a "**" component
 * matches zero or more components, so "**" + "/" + "*.py" (the default)
 * matches "a.py" and "x/y/a.py". A leading "./" in glob is dropped.
 */
int watch_glob_match(const char *glob, const char *relpath);

#endif
