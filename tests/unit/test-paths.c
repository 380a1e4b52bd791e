/*
 * Unit tests for src/common/paths.c: the runtime directory checks (mode, symlink,
 * owner), its creation and the PYTEST_ZYGOTE_RUNTIME_DIR override, pytest's
 * rootdir rule on small trees of config files, and the per-root socket paths.
 * Everything happens under one mkdtemp directory that is removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/paths.h"

#include "tap.h"

#define at tap_at
#define mkdirs tap_mkdirs_at

#define base tap_tree /* the tree tap_at() names paths in */

/* Write text to base/rel, creating its directory. */
static void
put(const char *rel, const char *text)
{
	tap_mkparent(rel);
	FILE *f = fopen(at(rel), "we");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		bail_out("write %s: %s", rel, strerror(errno));
}

static mode_t
mode_of(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return (mode_t)-1;
	return st.st_mode & 07777;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		return rmdir(path);
	return unlink(path);
}

static void
test_check_dir(void)
{
	char err[PATHS_ERR_MAX];
	const char *good = at("good");

	if (mkdir(good, 0700) < 0 || chmod(good, 0700) < 0)
		bail_out("mkdir %s: %s", good, strerror(errno));
	err[0] = '\0';
	is_int(paths_check_dir(good, getuid(), err, sizeof(err)), 0,
	       "a fresh 0700 dir is accepted");
	is_str(err, "", "and no error text");

	chmod(good, 0755);
	is_int(paths_check_dir(good, getuid(), err, sizeof(err)), -EPERM, "mode 0755 refused");
	has_str(err, "chmod 700", "the error says how to fix it");
	has_str(err, good, "and names the directory");
	chmod(good, 0710);
	is_int(paths_check_dir(good, getuid(), err, sizeof(err)), -EPERM, "mode 0710 refused");
	chmod(good, 0701);
	is_int(paths_check_dir(good, getuid(), err, sizeof(err)), -EPERM, "mode 0701 refused");
	chmod(good, 0700);

	const char *link = at("link");
	if (symlink(good, link) < 0)
		bail_out("symlink: %s", strerror(errno));
	is_int(paths_check_dir(link, getuid(), err, sizeof(err)), -EPERM,
	       "a symlink to a good dir is refused");
	has_str(err, "symlink", "the error says it is a symlink");

	put("plain-file", "x");
	chmod(at("plain-file"), 0600);
	is_int(paths_check_dir(at("plain-file"), getuid(), err, sizeof(err)), -ENOTDIR,
	       "a regular file is refused");
	has_str(err, "not a directory", "the error says it is not a directory");

	is_int(paths_check_dir(at("missing"), getuid(), err, sizeof(err)), -ENOENT,
	       "a missing dir gives -ENOENT");
	has_str(err, strerror(ENOENT), "with the strerror text");

	/* The same checks on an open descriptor. */
	int fd = paths_open_dir(good, getuid(), err, sizeof(err));
	ok(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC), "open_dir: a 0700 dir gives a cloexec fd");
	struct stat a, b;
	ok(fd >= 0 && fstat(fd, &a) == 0 && stat(good, &b) == 0 && a.st_ino == b.st_ino,
	   "open_dir: of that very directory");
	if (fd >= 0)
		close(fd);
	is_int(paths_open_dir(link, getuid(), err, sizeof(err)), -EPERM,
	       "open_dir: a symlink to a good dir is refused");
	has_str(err, "symlink", "open_dir: the error says it is a symlink");
	is_int(paths_open_dir(at("plain-file"), getuid(), err, sizeof(err)), -ENOTDIR,
	       "open_dir: a regular file is refused");
	chmod(good, 0750);
	is_int(paths_open_dir(good, getuid(), err, sizeof(err)), -EPERM,
	       "open_dir: mode 0750 refused");
	has_str(err, "chmod 700", "open_dir: the error says how to fix it");
	chmod(good, 0700);
	is_int(paths_open_dir(at("missing"), getuid(), err, sizeof(err)), -ENOENT,
	       "open_dir: a missing dir gives -ENOENT");

	if (geteuid() != 0) {
		skip(4, "chown to another uid needs root");
		return;
	}
	const char *theirs = at("theirs");
	if (mkdir(theirs, 0700) < 0 || chown(theirs, 65534, 65534) < 0)
		bail_out("mkdir/chown %s: %s", theirs, strerror(errno));
	is_int(mode_of(theirs), 0700, "the other user's dir is 0700");
	is_int(paths_check_dir(theirs, getuid(), err, sizeof(err)), -EPERM,
	       "a dir owned by uid 65534 is refused");
	has_str(err, "owned by uid 65534", "the error names the owner");
	is_int(paths_check_dir(theirs, 65534, err, sizeof(err)), 0,
	       "the same dir is fine for uid 65534");
}

static void
test_runtime_dir(void)
{
	char buf[PATH_MAX], err[PATHS_ERR_MAX];
	const char *rt = at("deep/er/rt");

	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", rt, 1);
	is_int(paths_runtime_dir(buf, sizeof(buf), err, sizeof(err)), 0,
	       "override to a missing nested dir: created");
	is_str(buf, rt, "the override is used");
	is_int(mode_of(rt), 0700, "created with mode 0700");
	is_int(mode_of(at("deep/er")), 0755 & ~0022, "its parents are created too");

	is_int(paths_runtime_dir(buf, sizeof(buf), err, sizeof(err)), 0, "again: it exists, fine");

	/* An existing dir with a bad mode is not silently fixed. */
	const char *loose = at("loose");
	mkdir(loose, 0755);
	chmod(loose, 0755);
	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", loose, 1);
	is_int(paths_runtime_dir(buf, sizeof(buf), err, sizeof(err)), -EPERM,
	       "existing 0755 override refused");
	has_str(err, "chmod 700", "with the chmod advice");
	is_int(mode_of(loose), 0755, "and left alone");

	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", "relative/rt", 1);
	is_int(paths_runtime_dir(buf, sizeof(buf), err, sizeof(err)), -EINVAL,
	       "a relative override is refused");
	has_str(err, "PYTEST_ZYGOTE_RUNTIME_DIR", "the error names the variable");
	ok(access(at("relative"), F_OK) < 0, "and nothing was created in the cwd");

	/* A trailing slash is the same directory and must get the same mode. */
	char trail[PATH_MAX];
	snprintf(trail, sizeof(trail), "%s/", at("trail"));
	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", trail, 1);
	int r = paths_runtime_dir(buf, sizeof(buf), err, sizeof(err));
	is_int(r, 0, "override with a trailing slash accepted: %s", r < 0 ? err : "");
	is_int(mode_of(at("trail")), 0700, "and created with mode 0700 (is %04o)",
	       (unsigned)mode_of(at("trail")));

	/* Without the override: $XDG_RUNTIME_DIR/pytest-zygote. */
	const char *xdg = at("xdg");
	mkdir(xdg, 0700);
	unsetenv("PYTEST_ZYGOTE_RUNTIME_DIR");
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	is_int(paths_runtime_dir(buf, sizeof(buf), err, sizeof(err)), 0, "XDG_RUNTIME_DIR used");
	is_str(buf, at("xdg/pytest-zygote"), "as $XDG_RUNTIME_DIR/pytest-zygote");
	is_int(mode_of(at("xdg/pytest-zygote")), 0700, "created 0700");

	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", "", 1);
	is_int(paths_runtime_dir(buf, sizeof(buf), err, sizeof(err)), 0,
	       "an empty override is unset");
	is_str(buf, at("xdg/pytest-zygote"), "so XDG_RUNTIME_DIR still wins");
	unsetenv("PYTEST_ZYGOTE_RUNTIME_DIR");

	char tiny[8];
	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", rt, 1);
	is_int(paths_runtime_dir(tiny, sizeof(tiny), err, sizeof(err)), -ENAMETOOLONG,
	       "a buffer too small: -ENAMETOOLONG");
	unsetenv("PYTEST_ZYGOTE_RUNTIME_DIR");
	unsetenv("XDG_RUNTIME_DIR");
}

/* Check paths_find_rootdir from base/cwd_rel against base/want_rel. */
static void
root_is(const char *cwd_rel, const char *want_rel, const char *what)
{
	char buf[PATH_MAX];
	mkdirs(cwd_rel);
	int r = paths_find_rootdir(at(cwd_rel), buf, sizeof(buf));
	is_int(r, 0, "%s: found", what);
	is_str(r == 0 ? buf : NULL, at(want_rel), "%s: rootdir", what);
}

static void
test_find_rootdir(void)
{
	char buf[PATH_MAX];

	/* Nothing above base may decide these cases. */
	mkdirs("none/a/b");
	if (paths_find_rootdir(at("none/a/b"), buf, sizeof(buf)) != 0 ||
	    strcmp(buf, at("none/a/b")) != 0)
		bail_out("a config file or setup.py above %s decides the rootdir (%s)", base, buf);
	root_is("none/a/b", "none/a/b", "no config anywhere: cwd");

	put("ini/pytest.ini", "");
	root_is("ini/pkg/tests", "ini", "empty pytest.ini");
	root_is("ini", "ini", "pytest.ini in cwd");

	put("dotini/.pytest.ini", "[pytest]\n");
	root_is("dotini/x", "dotini", ".pytest.ini");

	put("toml/pyproject.toml", "[project]\nname = \"x\"\n\n[tool.pytest.ini_options]\n"
				   "addopts = \"-q\"\n");
	root_is("toml/src/pkg", "toml", "pyproject.toml with [tool.pytest.ini_options]");

	put("tomlno/pyproject.toml", "[project]\nname = \"x\"\n[tool.black]\n");
	root_is("tomlno/a", "tomlno/a", "pyproject.toml without the table is not a config");

	put("tomlsetup/setup.py", "");
	put("tomlsetup/sub/pyproject.toml", "[build-system]\n");
	root_is("tomlsetup/sub/a", "tomlsetup",
		"table-less pyproject.toml below setup.py: setup.py");

	put("tox/tox.ini", "[tox]\nenvlist = py3\n\n[pytest]\naddopts = -q\n");
	root_is("tox/t", "tox", "tox.ini with [pytest]");

	put("toxno/tox.ini", "[tox]\nenvlist = py3\n[pytest:extra]\n");
	root_is("toxno/t", "toxno/t", "tox.ini without [pytest]");

	put("cfg/setup.cfg", "[metadata]\nname = x\n[tool:pytest]  # tests\ntestpaths = t\n");
	root_is("cfg/t/u", "cfg", "setup.cfg with [tool:pytest] and a comment");

	put("cfgno/setup.cfg", "[metadata]\nname = x\n[pytest]\n");
	root_is("cfgno/t", "cfgno/t", "setup.cfg with only [pytest] is not a config");

	put("setup/setup.py", "from setuptools import setup\nsetup()\n");
	root_is("setup/pkg/sub", "setup", "setup.py alone");

	/* Config files anywhere up the tree beat a nearer setup.py. */
	put("prec/tox.ini", "[pytest]\n");
	put("prec/inner/setup.py", "");
	root_is("prec/inner/x", "prec", "config above beats setup.py below");

	/* The nearest config wins. */
	put("near/pytest.ini", "");
	put("near/inner/setup.cfg", "[tool:pytest]\n");
	root_is("near/inner/x", "near/inner", "nearest config wins");

	/* Within one dir the first candidate in pytest's order decides; any will do. */
	put("both/tox.ini", "[tox]\n");
	put("both/setup.cfg", "[tool:pytest]\n");
	root_is("both", "both", "setup.cfg counts when tox.ini has no [pytest]");

	/* A symlinked cwd is resolved first. */
	mkdirs("ini/pkg");
	if (symlink(at("ini/pkg"), at("lnk")) < 0)
		bail_out("symlink: %s", strerror(errno));
	root_is("lnk", "ini", "symlinked cwd resolved");

	is_int(paths_find_rootdir(at("nowhere"), buf, sizeof(buf)), -ENOENT,
	       "missing cwd: -ENOENT");
	is_int(paths_find_rootdir(at("ini/pkg"), buf, 4), -ENAMETOOLONG,
	       "a buffer too small: -ENAMETOOLONG");

	/*
	 * A buffer big enough for the setup.py dir but not for the (nearer)
	 * config dir must be an error, not a different rootdir.
	 */
	put("small/setup.py", "");
	put("small/deeper/pytest.ini", "");
	char *small_buf = malloc(strlen(at("small")) + 1);
	if (!small_buf)
		bail_out("malloc");
	int r = paths_find_rootdir(at("small/deeper"), small_buf, strlen(at("small")) + 1);
	ok(r == -ENAMETOOLONG, "buffer too small for the config dir: -ENAMETOOLONG (got %d, '%s')",
	   r, r == 0 ? small_buf : "");
	free(small_buf);
}

static void
test_for_root(void)
{
	struct zpaths p, q;
	char err[PATHS_ERR_MAX];
	char real[PATH_MAX];

	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", at("rt2"), 1);
	mkdirs("proj/sub");
	mkdirs(".hidden");
	if (!realpath(at("proj"), real))
		bail_out("realpath: %s", strerror(errno));

	is_int(paths_for_root(&p, at("proj"), NULL, err, sizeof(err)), 0, "paths for proj");
	is_str(p.root, real, "root is resolved");
	is_str(p.dir, at("rt2"), "dir is the runtime dir");
	is_int(mode_of(at("rt2")), 0700, "runtime dir created 0700");
	ok(strncmp(p.name, "proj-", 5) == 0, "name '%s' starts with the basename", p.name);
	is_int(strlen(p.name), 5 + 12, "name is basename-<12 hex digits>");
	char want[PATH_MAX];
	snprintf(want, sizeof(want), "%s/%s.sock", at("rt2"), p.name);
	is_str(p.sock, want, "socket path");
	snprintf(want, sizeof(want), "%s/%s.pid", at("rt2"), p.name);
	is_str(p.pid, want, "pid path");
	snprintf(want, sizeof(want), "%s/%s.log", at("rt2"), p.name);
	is_str(p.log, want, "log path");

	is_int(paths_for_root(&q, at("proj"), NULL, err, sizeof(err)), 0, "again");
	is_str(q.sock, p.sock, "same root, same socket");
	is_int(paths_for_root(&q, at("proj/sub/.."), "", err, sizeof(err)), 0, "via proj/sub/..");
	is_str(q.sock, p.sock, "an unresolved spelling and instance \"\" give the same socket");

	is_int(paths_for_root(&q, at("proj"), "2", err, sizeof(err)), 0, "instance 2");
	ok(strcmp(q.sock, p.sock) != 0, "another instance, another socket (%s)", q.name);
	char other[sizeof(q.sock)];
	snprintf(other, sizeof(other), "%s", q.sock);
	is_int(paths_for_root(&q, at("proj"), "3", err, sizeof(err)), 0, "instance 3");
	ok(strcmp(q.sock, other) != 0 && strcmp(q.sock, p.sock) != 0,
	   "instances 2 and 3 differ too");

	is_int(paths_for_root(&q, at("proj/sub"), NULL, err, sizeof(err)), 0, "another root");
	ok(strcmp(q.sock, p.sock) != 0, "another root, another socket");

	is_int(paths_for_root(&q, at(".hidden"), NULL, err, sizeof(err)), 0, "a dot-dir root");
	ok(q.name[0] == '_' && strncmp(q.name + 1, "hidden-", 7) == 0,
	   "a leading dot becomes '_' (%s)", q.name);

	is_int(paths_for_root(&q, "/", NULL, err, sizeof(err)), 0, "root '/'");
	ok(strncmp(q.name, "root-", 5) == 0, "'/' is named root-<hash> (%s)", q.name);

	/* A deleted root may still have a server that stop and status must
	 * reach: an absolute path is taken as it is; a relative one is not. */
	is_int(paths_for_root(&q, at("nonexistent"), NULL, err, sizeof(err)), 0,
	       "missing absolute root: accepted as given");
	is_str(q.root, at("nonexistent"), "and kept verbatim");
	err[0] = '\0';
	is_int(paths_for_root(&q, "no/such/relative/root", NULL, err, sizeof(err)), -ENOENT,
	       "missing relative root: -ENOENT");
	has_str(err, "no/such/relative/root", "the error names it");

	/* A runtime dir so long the socket path cannot fit in sun_path. */
	char longdir[PATH_MAX];
	int n = snprintf(longdir, sizeof(longdir), "%s/", base);
	while (n < (int)sizeof(p.sock) + 10)
		longdir[n++] = 'L';
	longdir[n] = '\0';
	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", longdir, 1);
	int r = paths_for_root(&q, at("proj"), NULL, err, sizeof(err));
	is_int(r, -ENAMETOOLONG, "runtime dir of %d bytes: -ENAMETOOLONG", n);
	has_str(err, "PYTEST_ZYGOTE_RUNTIME_DIR", "the error suggests PYTEST_ZYGOTE_RUNTIME_DIR");

	/* Just short enough still works. */
	n = snprintf(longdir, sizeof(longdir), "%s/", base);
	while (n < (int)sizeof(p.sock) - 1 - (int)strlen("/proj-123456789abc.sock"))
		longdir[n++] = 'S';
	longdir[n] = '\0';
	setenv("PYTEST_ZYGOTE_RUNTIME_DIR", longdir, 1);
	r = paths_for_root(&q, at("proj"), NULL, err, sizeof(err));
	is_int(r, 0, "a socket path of exactly %zu bytes fits", sizeof(p.sock) - 1);
	is_int(strlen(q.sock), sizeof(p.sock) - 1, "and fills sun_path");
	unsetenv("PYTEST_ZYGOTE_RUNTIME_DIR");
}

/* Where a binary finds its package, on trees laid out as each route leaves them. */
static void
test_pydir(void)
{
	char got[PATH_MAX], want[PATH_MAX], build[PATH_MAX], source[PATH_MAX], install[PATH_MAX];
	/* at() returns one of a few rotating buffers: keep copies. */
	snprintf(build, sizeof(build), "%s", at("build"));
	snprintf(source, sizeof(source), "%s", at("src/plugin/src"));
	snprintf(install, sizeof(install), "%s", at("usr/lib/python3/dist-packages"));
	struct paths_layout l = {
		.build_dir = build,
		.source_pydir = source,
		.rel_pydir = "../lib/python3/dist-packages/",
		.install_pydir = install,
		.py_version = "3.11",
	};
	unsetenv("PYTEST_ZYGOTE_PYDIR");
	is_int(paths_pydir(at("build/pytest-zygote"), &l, got, sizeof(got)), 0, "build tree");
	is_str(got, at("src/plugin/src"), "a binary in the build dir uses the source tree's");
	is_int(paths_pydir(at("buildx/pytest-zygote"), &l, got, sizeof(got)), -ENOENT,
	       "a sibling whose name merely starts like the build dir is not in it");

	/* meson install --prefix (or DESTDIR staging): found beside the binary,
	 * not at the configured prefix. */
	put("stage/usr/lib/python3/dist-packages/pytest_zygote/_zygote.py", "");
	put("stage/usr/bin/pytest-zygote", "");
	is_int(paths_pydir(at("stage/usr/bin/pytest-zygote"), &l, got, sizeof(got)), 0,
	       "staged meson install");
	is_str(got, at("stage/usr/lib/python3/dist-packages"), "relative to the binary, resolved");

	/* pip into a virtualenv: lib/python3.11/site-packages. */
	put("venv/lib/python3.11/site-packages/pytest_zygote/_zygote.py", "");
	put("venv/bin/pytest-zygote", "");
	is_int(paths_pydir(at("venv/bin/pytest-zygote"), &l, got, sizeof(got)), 0, "venv");
	is_str(got, at("venv/lib/python3.11/site-packages"), "the virtualenv's site-packages");

	/* Moved away from everything: the configured install dir, if it has it. */
	is_int(paths_pydir(at("elsewhere/pytest-zygote"), &l, got, sizeof(got)), -ENOENT,
	       "nothing anywhere: -ENOENT");
	is_str(got, "", "and an empty directory");
	put("usr/lib/python3/dist-packages/pytest_zygote/_zygote.py", "");
	is_int(paths_pydir(at("elsewhere/pytest-zygote"), &l, got, sizeof(got)), 0,
	       "configured install dir");
	is_str(got, at("usr/lib/python3/dist-packages"), "is the last resort");

	setenv("PYTEST_ZYGOTE_PYDIR", at("mine"), 1);
	is_int(paths_pydir(at("venv/bin/pytest-zygote"), &l, got, sizeof(got)), 0, "override");
	is_str(got, at("mine"), "PYTEST_ZYGOTE_PYDIR wins over installed trees");
	is_int(paths_pydir(at("build/pytest-zygote"), &l, got, sizeof(got)), 0, "override");
	is_str(got, at("src/plugin/src"), "but not over the build tree's own");
	unsetenv("PYTEST_ZYGOTE_PYDIR");

	l.rel_pydir = "";
	is_int(paths_pydir(at("stage/usr/bin/pytest-zygote"), &l, got, sizeof(got)), 0,
	       "no relative dir (absolute bindir)");
	is_str(got, at("usr/lib/python3/dist-packages"), "falls back to the configured dir");

	/* The default interpreter. */
	put("venv/bin/python", "");
	chmod(at("venv/bin/python"), 0755);
	paths_default_python(at("venv/bin/pytest-zygote"), "/usr/bin/python3", got, sizeof(got));
	is_str(got, "/usr/bin/python3", "bin/python without pyvenv.cfg is no virtualenv");
	put("venv/pyvenv.cfg", "home = /usr/bin\n");
	paths_default_python(at("venv/bin/pytest-zygote"), "/usr/bin/python3", got, sizeof(got));
	snprintf(want, sizeof(want), "%s", at("venv/bin/python"));
	is_str(got, want, "a binary in a virtualenv's bin/ runs its python");
	paths_default_python(at("stage/usr/bin/pytest-zygote"), "/usr/bin/python3", got,
			     sizeof(got));
	is_str(got, "/usr/bin/python3", "elsewhere: the build's interpreter");
}

/* Which server binary the client starts: the variable, its sibling, the bindir. */
static void
test_server_exe(void)
{
	char got[PATH_MAX], err[PATHS_ERR_MAX], bindir[PATH_MAX], want[PATH_MAX];
	snprintf(bindir, sizeof(bindir), "%s", at("prefix/bin"));
	unsetenv("PYTEST_ZYGOTE_SERVER");

	/* Nothing installed anywhere: the error names the sibling path and the fix. */
	err[0] = '\0';
	is_int(paths_server_exe(at("inst/bin/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       -ENOENT, "no server anywhere: -ENOENT");
	has_str(err, at("inst/bin/pytest-zygote-server"), "the error names the expected path");
	has_str(err, "PYTEST_ZYGOTE_SERVER", "and says what to set");

	/* In the configured bindir only (a client copied elsewhere). */
	put("prefix/bin/pytest-zygote-server", "");
	is_int(paths_server_exe(at("inst/bin/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       -ENOENT, "a server without x bits is not taken");
	chmod(at("prefix/bin/pytest-zygote-server"), 0755);
	is_int(paths_server_exe(at("inst/bin/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       0, "the configured bindir's server");
	is_str(got, at("prefix/bin/pytest-zygote-server"), "is the fallback");
	is_int(paths_server_exe(at("inst/bin/pytest-zygote"), "relative/bin", got, sizeof(got), err,
				sizeof(err)),
	       -ENOENT, "a relative bindir is not looked in");

	/* Beside the client wins over the bindir; a directory of that name does not. */
	mkdirs("inst/bin/pytest-zygote-server");
	is_int(paths_server_exe(at("inst/bin/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       0, "a directory beside the client");
	is_str(got, at("prefix/bin/pytest-zygote-server"), "is skipped for the bindir's");
	put("dev/build/pytest-zygote-server", "");
	chmod(at("dev/build/pytest-zygote-server"), 0755);
	is_int(paths_server_exe(at("dev/build/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       0, "a build directory");
	is_str(got, at("dev/build/pytest-zygote-server"), "uses its own server, not the bindir's");

	/* PYTEST_ZYGOTE_SERVER wins, made absolute; a bad one is an error, not skipped. */
	setenv("PYTEST_ZYGOTE_SERVER", "dev/build/pytest-zygote-server", 1); /* cwd is base */
	is_int(paths_server_exe(at("inst/bin/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       0, "PYTEST_ZYGOTE_SERVER, relative");
	is_str(got, at("dev/build/pytest-zygote-server"), "is resolved");
	setenv("PYTEST_ZYGOTE_SERVER", at("nonexistent"), 1);
	snprintf(want, sizeof(want), "%s", at("nonexistent"));
	is_int(paths_server_exe(at("dev/build/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       -ENOENT, "PYTEST_ZYGOTE_SERVER naming nothing: -ENOENT");
	has_str(err, want, "the error names it");
	has_str(err, "PYTEST_ZYGOTE_SERVER", "and the variable");
	setenv("PYTEST_ZYGOTE_SERVER", at("inst/bin/pytest-zygote-server"), 1);
	is_int(paths_server_exe(at("dev/build/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       -EISDIR, "PYTEST_ZYGOTE_SERVER naming a directory: -EISDIR");
	setenv("PYTEST_ZYGOTE_SERVER", "", 1);
	is_int(paths_server_exe(at("dev/build/pytest-zygote"), bindir, got, sizeof(got), err,
				sizeof(err)),
	       0, "an empty PYTEST_ZYGOTE_SERVER is unset");
	unsetenv("PYTEST_ZYGOTE_SERVER");
}

int
main(void)
{
	snprintf(base, sizeof(base), "/tmp/test-paths-XXXXXX");
	if (!mkdtemp(base))
		bail_out("mkdtemp: %s", strerror(errno));
	unsetenv("PYTEST_ZYGOTE_RUNTIME_DIR");
	unsetenv("XDG_RUNTIME_DIR");
	umask(022);
	/* Work inside base so that a stray relative path lands there too. */
	if (chdir(base) < 0)
		bail_out("chdir %s: %s", base, strerror(errno));

	test_check_dir();
	test_runtime_dir();
	test_find_rootdir();
	test_for_root();
	test_pydir();
	test_server_exe();

	if (chdir("/") < 0 || nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		diag("could not remove %s: %s", base, strerror(errno));
	return done_testing();
}
