/*
 * Where things live: the per-user runtime directory (checked for owner and
 * mode), the socket, pid and log paths of one project's zygote, and the
 * project root pytest itself would choose. Helpers return 0 or -errno and put
 * a sentence for the user in err; they never log.
 */
#ifndef ZYGOTE_PATHS_H
#define ZYGOTE_PATHS_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/un.h>

#define PATHS_ERR_MAX 512

struct zpaths {
	char root[PATH_MAX]; /* absolute, symlinks resolved */
	char dir[PATH_MAX];  /* runtime directory */
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char pid[PATH_MAX];
	char log[PATH_MAX];
	char name[96]; /* <root basename>-<hash> */
};

/*
 * Check that dir is a real directory (not a symlink) owned by uid with no
 * group or other permission bits. Returns 0, or -EPERM/-ENOTDIR/-errno with a
 * sentence in err that says what is wrong and what to do.
 */
int paths_check_dir(const char *dir, uid_t uid, char *err, size_t errsize);

/*
 * paths_check_dir's checks on an open descriptor: dir is opened without
 * following a symlink (O_NOFOLLOW) and the checks are made with fstat on what
 * was opened, so a path swapped after the check cannot lead elsewhere: use
 * the directory through the returned fd (openat, /proc/self/fd/N/NAME).
 * Returns the fd (O_CLOEXEC), or -errno with a sentence in err: -EPERM when
 * the directory is not private to uid or is a symlink.
 */
int paths_open_dir(const char *dir, uid_t uid, char *err, size_t errsize);

/*
 * The runtime directory: $PYTEST_ZYGOTE_RUNTIME_DIR if set, else
 * $XDG_RUNTIME_DIR/pytest-zygote, else /tmp/pytest-zygote-<uid>. Created with
 * mode 0700 when missing (parents of the override too), then checked.
 */
int paths_runtime_dir(char *buf, size_t size, char *err, size_t errsize);

/*
 * The directory pytest would use as rootdir when run without path arguments
 * from cwd: the first ancestor holding pytest.ini, .pytest.ini, pyproject.toml
 * with [tool.pytest.ini_options], tox.ini with [pytest] or setup.cfg with
 * [tool:pytest]; else the first ancestor with setup.py; else cwd.
 */
int paths_find_rootdir(const char *cwd, char *buf, size_t size);

/*
 * Fill p for the project at root (made absolute and resolved) and instance
 * (NULL or "" for the default one; a name or number selects another zygote for
 * the same root). Creates the runtime directory.
 */
int paths_for_root(struct zpaths *p, const char *root, const char *instance, char *err,
		   size_t errsize);

/*
 * Where a binary finds the Python package it runs in the zygote (the
 * directory holding pytest_zygote/), from the build's configuration.
 */
struct paths_layout {
	const char *build_dir;     /* a binary inside it uses source_pydir */
	const char *source_pydir;  /* plugin/src of the source tree */
	const char *rel_pydir;     /* relative to the installed binary's directory, or "" */
	const char *install_pydir; /* absolute, as configured (prefix/...) */
	const char *py_version;    /* "3.11": for a pip --user or virtualenv layout */
};

/*
 * The running binary's own path (/proc/self/exe), symlinks resolved.
 * Returns 0 or -errno.
 */
int paths_self_exe(char *buf, size_t size);

/* The server's file name: installed next to pytest-zygote, in the same bindir. */
#define PATHS_SERVER_NAME "pytest-zygote-server"

/*
 * The server binary that the client at exe starts: $PYTEST_ZYGOTE_SERVER when
 * set (made absolute), else <exe dir>/pytest-zygote-server, else
 * <bindir>/pytest-zygote-server (bindir: the configured, absolute one). The
 * first of the last two that is an executable file wins. Returns 0 with the
 * path in buf, or -errno with a sentence in err that names the path and what
 * to do.
 */
int paths_server_exe(const char *exe, const char *bindir, char *buf, size_t size, char *err,
		     size_t errsize);

/*
 * The package directory for the binary at exe, first of: source_pydir when
 * exe is inside build_dir; $PYTEST_ZYGOTE_PYDIR; then the first of
 * <exe dir>/rel_pydir, <exe dir>/../lib/python<ver>/site-packages and
 * install_pydir that holds pytest_zygote/_zygote.py. Returns 0 with the
 * directory in buf, or -ENOENT (buf empty) when none holds it: the package
 * must then be importable by the interpreter itself.
 */
int paths_pydir(const char *exe, const struct paths_layout *l, char *buf, size_t size);

/*
 * The interpreter a binary at exe runs when none is named: the virtualenv's
 * python when exe sits in a virtualenv's bin/ (bin/python and ../pyvenv.cfg
 * exist, as after pip install into it), else fallback. Never resolves the
 * symlink bin/python, which is what makes the interpreter find pyvenv.cfg.
 */
void paths_default_python(const char *exe, const char *fallback, char *buf, size_t size);

#endif
