/*
 * Runtime directory, per-project socket/pid/log paths and pytest's rootdir
 * rule. The runtime directory is a trust boundary: only its owner may reach
 * the sockets in it, so it must be ours, mode 0700, and not a symlink.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/paths.h"

/* The owner and mode checks on what dir names, once it is known to be no
 * symlink. */
static int
check_stat(const char *dir, const struct stat *st, uid_t uid, char *err, size_t errsize)
{
	if (!S_ISDIR(st->st_mode)) {
		snprintf(err, errsize, "runtime directory '%s' is not a directory; remove it", dir);
		return -ENOTDIR;
	}
	if (st->st_uid != uid) {
		snprintf(err, errsize,
			 "runtime directory '%s' is owned by uid %u, not by you (uid %u); "
			 "remove it or set PYTEST_ZYGOTE_RUNTIME_DIR to a directory of yours",
			 dir, (unsigned)st->st_uid, (unsigned)uid);
		return -EPERM;
	}
	if (st->st_mode & 077) {
		snprintf(err, errsize,
			 "runtime directory '%s' has mode %04o; it must be 0700 "
			 "(run: chmod 700 '%s')",
			 dir, (unsigned)(st->st_mode & 07777), dir);
		return -EPERM;
	}
	return 0;
}

int
paths_check_dir(const char *dir, uid_t uid, char *err, size_t errsize)
{
	struct stat st;
	if (lstat(dir, &st) < 0) {
		int e = errno;
		snprintf(err, errsize, "cannot use runtime directory '%s': %s", dir, strerror(e));
		return -e;
	}
	if (S_ISLNK(st.st_mode)) {
		snprintf(err, errsize,
			 "runtime directory '%s' is a symlink; remove it or set "
			 "PYTEST_ZYGOTE_RUNTIME_DIR to a private directory",
			 dir);
		return -EPERM;
	}
	return check_stat(dir, &st, uid, err, errsize);
}

int
paths_open_dir(const char *dir, uid_t uid, char *err, size_t errsize)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		/* ELOOP or ENOTDIR: say which, as paths_check_dir does. */
		int r = paths_check_dir(dir, uid, err, errsize);
		if (r < 0)
			return r;
		snprintf(err, errsize, "cannot open runtime directory '%s': %s", dir, strerror(e));
		return e == ELOOP || e == ENOTDIR ? -EPERM : -e;
	}
	struct stat st;
	int r = fstat(fd, &st) < 0 ? -errno : check_stat(dir, &st, uid, err, errsize);
	if (r < 0) {
		if (r != -EPERM && r != -ENOTDIR)
			snprintf(err, errsize, "cannot use runtime directory '%s': %s", dir,
				 strerror(-r));
		close(fd);
		return r;
	}
	return fd;
}

/* mkdir -p with mode 0700 for the last component and 0755 for parents. */
static int
mkdir_parents(const char *path)
{
	char tmp[PATH_MAX];
	if (strlen(path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	strcpy(tmp, path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int
paths_runtime_dir(char *buf, size_t size, char *err, size_t errsize)
{
	const char *over = getenv("PYTEST_ZYGOTE_RUNTIME_DIR");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (over && *over) {
		if (over[0] != '/') {
			snprintf(err, errsize,
				 "PYTEST_ZYGOTE_RUNTIME_DIR must be an absolute path, not '%s'",
				 over);
			return -EINVAL;
		}
		n = snprintf(buf, size, "%s", over);
	} else if (xdg && xdg[0] == '/' && access(xdg, W_OK | X_OK) == 0) {
		n = snprintf(buf, size, "%s/pytest-zygote", xdg);
	} else {
		n = snprintf(buf, size, "/tmp/pytest-zygote-%u", (unsigned)getuid());
	}
	if (n < 0 || (size_t)n >= size) {
		snprintf(err, errsize, "runtime directory path is too long");
		return -ENAMETOOLONG;
	}
	/* "/run/x/" is "/run/x": left in, mkdir_parents would create it as a
	 * parent (0755) and the check below would then refuse it. */
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	int r = mkdir_parents(buf);
	if (r < 0) {
		snprintf(err, errsize, "cannot create runtime directory '%s': %s", buf,
			 strerror(-r));
		return r;
	}
	return paths_check_dir(buf, getuid(), err, errsize);
}

/* Does file contain a line that is exactly section (ignoring surrounding blanks)? */
static int
file_has_section(const char *file, const char *section)
{
	FILE *f = fopen(file, "re");
	if (!f)
		return 0;
	char line[4096];
	int found = 0;
	size_t sl = strlen(section);
	while (!found && fgets(line, sizeof(line), f)) {
		char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		if (strncmp(s, section, sl) != 0)
			continue;
		s += sl;
		while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
			s++;
		found = *s == '\0' || *s == '#' || *s == ';';
	}
	fclose(f);
	return found;
}

/* Is dir a pytest config dir (pytest's locate_config, in its order)? */
static int
is_config_dir(const char *dir)
{
	static const struct {
		const char *file;
		const char *section; /* NULL: the file alone is enough */
	} candidates[] = {
		{ "pytest.ini", NULL },
		{ ".pytest.ini", NULL },
		{ "pyproject.toml", "[tool.pytest.ini_options]" },
		{ "tox.ini", "[pytest]" },
		{ "setup.cfg", "[tool:pytest]" },
	};
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", strcmp(dir, "/") ? dir : "",
				     candidates[i].file) >= sizeof(path))
			continue;
		if (access(path, R_OK) != 0)
			continue;
		if (!candidates[i].section || file_has_section(path, candidates[i].section))
			return 1;
	}
	return 0;
}

static int
has_file(const char *dir, const char *name)
{
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", strcmp(dir, "/") ? dir : "", name) >=
	    sizeof(path))
		return 0;
	return access(path, F_OK) == 0;
}

/* Walk from dir up to "/" for the first directory where pred holds: 1 with it
 * in buf, 0 when there is none, -ENAMETOOLONG when it does not fit. */
static int
walk_up(const char *dir, int (*pred)(const char *, const char *), const char *arg, char *buf,
	size_t size)
{
	char cur[PATH_MAX];
	if (strlen(dir) >= sizeof(cur))
		return 0;
	strcpy(cur, dir);
	for (;;) {
		if (pred(cur, arg)) {
			if (strlen(cur) >= size)
				return -ENAMETOOLONG;
			strcpy(buf, cur);
			return 1;
		}
		char *slash = strrchr(cur, '/');
		if (!slash || strcmp(cur, "/") == 0)
			return 0;
		if (slash == cur)
			cur[1] = '\0';
		else
			*slash = '\0';
	}
}

static int
pred_config(const char *dir, const char *unused)
{
	(void)unused;
	return is_config_dir(dir);
}

int
paths_find_rootdir(const char *cwd, char *buf, size_t size)
{
	char real[PATH_MAX];
	if (!realpath(cwd, real))
		return -errno;
	int r = walk_up(real, pred_config, NULL, buf, size);
	if (r == 0)
		r = walk_up(real, has_file, "setup.py", buf, size);
	if (r != 0)
		return r < 0 ? r : 0;
	if (strlen(real) >= size)
		return -ENAMETOOLONG;
	strcpy(buf, real);
	return 0;
}

int
paths_for_root(struct zpaths *p, const char *root, const char *instance, char *err, size_t errsize)
{
	memset(p, 0, sizeof(*p));
	if (!realpath(root, p->root)) {
		int e = errno;
		/* A deleted root may still have a server (stop and status must
		 * reach it): an absolute path is taken as it is. */
		if (e != ENOENT || root[0] != '/' || strlen(root) >= sizeof(p->root)) {
			snprintf(err, errsize, "project root '%s': %s", root, strerror(e));
			return -e;
		}
		strcpy(p->root, root);
	}
	int r = paths_runtime_dir(p->dir, sizeof(p->dir), err, errsize);
	if (r < 0)
		return r;

	const char *base = strrchr(p->root, '/');
	base = base && base[1] ? base + 1 : "root";
	/* A stable, short name for a root (the basis is not FNV's, and stays). */
	unsigned long long h = fnv1a(1469598103934665603ULL, p->root, strlen(p->root));
	if (instance && *instance)
		h = fnv1a(fnv1a(h, "\x01", 1), instance, strlen(instance));
	char safe[25];
	size_t k = 0;
	for (; base[k] && k < sizeof(safe) - 1; k++)
		safe[k] = (base[k] == '.' && k == 0) || base[k] == '/' ? '_' : base[k];
	safe[k] = '\0';
	snprintf(p->name, sizeof(p->name), "%s-%012llx", safe, h & 0xffffffffffffULL);

	int n = snprintf(p->sock, sizeof(p->sock), "%s/%s.sock", p->dir, p->name);
	if (n < 0 || (size_t)n >= sizeof(p->sock)) {
		snprintf(err, errsize,
			 "socket path '%s/%s.sock' is longer than the %zu bytes a Unix socket "
			 "allows; set PYTEST_ZYGOTE_RUNTIME_DIR to a shorter directory",
			 p->dir, p->name, sizeof(p->sock) - 1);
		return -ENAMETOOLONG;
	}
	/* The socket path fitted in 108 bytes, so these fit in PATH_MAX. */
	if (snprintf(p->pid, sizeof(p->pid), "%s/%s.pid", p->dir, p->name) < 0 ||
	    snprintf(p->log, sizeof(p->log), "%s/%s.log", p->dir, p->name) < 0)
		return -ENAMETOOLONG;
	return 0;
}

int
paths_self_exe(char *buf, size_t size)
{
	ssize_t n = readlink("/proc/self/exe", buf, size - 1);
	if (n < 0)
		return -errno;
	if ((size_t)n >= size - 1)
		return -ENAMETOOLONG;
	buf[n] = '\0';
	return 0;
}

/* The directory part of path into buf ("" when path has no slash). */
static void
dir_of(const char *path, char *buf, size_t size)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	if (n >= size)
		n = size - 1;
	memcpy(buf, path, n);
	buf[n] = '\0';
}

/* Does dir hold the package (pytest_zygote/_zygote.py)? */
static int
holds_package(const char *dir)
{
	char f[PATH_MAX];
	if ((size_t)snprintf(f, sizeof(f), "%s/pytest_zygote/_zygote.py", dir) >= sizeof(f))
		return 0;
	return access(f, R_OK) == 0;
}

static int
copy_out(const char *s, char *buf, size_t size)
{
	if (strlen(s) >= size)
		return -ENAMETOOLONG;
	strcpy(buf, s);
	return 0;
}

/* A found candidate, with its ".." resolved. */
static int
copy_real(const char *s, char *buf, size_t size)
{
	char real[PATH_MAX];
	if (!realpath(s, real))
		return -errno;
	return copy_out(real, buf, size);
}

/* 0 when path is a regular file we may execute, else -errno. */
static int
executable_file(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return S_ISDIR(st.st_mode) ? -EISDIR : -EACCES;
	return access(path, X_OK) == 0 ? 0 : -errno;
}

int
paths_server_exe(const char *exe, const char *bindir, char *buf, size_t size, char *err,
		 size_t errsize)
{
	const char *over = getenv("PYTEST_ZYGOTE_SERVER");
	char real[PATH_MAX], sibling[PATH_MAX], installed[PATH_MAX];
	int r;

	if (over && *over) {
		r = realpath(over, real) ? executable_file(real) : -errno;
		if (r == 0)
			return copy_out(real, buf, size);
		snprintf(err, errsize,
			 "PYTEST_ZYGOTE_SERVER='%s' is not an executable file (%s); set it to "
			 "the path of %s, or unset it to use the one next to this program",
			 over, strerror(-r), PATHS_SERVER_NAME);
		return r;
	}
	dir_of(exe, real, sizeof(real));
	if ((size_t)snprintf(sibling, sizeof(sibling), "%s/%s", real, PATHS_SERVER_NAME) >=
	    sizeof(sibling))
		return -ENAMETOOLONG;
	r = executable_file(sibling);
	if (r == 0)
		return copy_out(sibling, buf, size);
	if (bindir && bindir[0] == '/' &&
	    (size_t)snprintf(installed, sizeof(installed), "%s/%s", bindir, PATHS_SERVER_NAME) <
		    sizeof(installed) &&
	    strcmp(installed, sibling) != 0 && executable_file(installed) == 0)
		return copy_out(installed, buf, size);
	snprintf(err, errsize,
		 "cannot run the server '%s': %s; pytest-zygote needs %s installed in the "
		 "same directory (meson install and pip install put both there): reinstall "
		 "pytest-zygote, or set PYTEST_ZYGOTE_SERVER to the path of %s",
		 sibling, strerror(-r), PATHS_SERVER_NAME, PATHS_SERVER_NAME);
	return r;
}

int
paths_pydir(const char *exe, const struct paths_layout *l, char *buf, size_t size)
{
	size_t bl = strlen(l->build_dir);
	if (bl && strncmp(exe, l->build_dir, bl) == 0 && exe[bl] == '/')
		return copy_out(l->source_pydir, buf, size);
	const char *over = getenv("PYTEST_ZYGOTE_PYDIR");
	if (over && *over)
		return copy_out(over, buf, size);

	char bin[PATH_MAX], cand[PATH_MAX];
	dir_of(exe, bin, sizeof(bin));
	if (l->rel_pydir[0] &&
	    (size_t)snprintf(cand, sizeof(cand), "%s/%s", bin, l->rel_pydir) < sizeof(cand) &&
	    holds_package(cand))
		return copy_real(cand, buf, size);
	/* pip into a virtualenv or with --user: scripts in <base>/bin, the
	 * package in <base>/lib/pythonX.Y/site-packages, whatever the build's
	 * interpreter called its own directory. */
	if ((size_t)snprintf(cand, sizeof(cand), "%s/../lib/python%s/site-packages", bin,
			     l->py_version) < sizeof(cand) &&
	    holds_package(cand))
		return copy_real(cand, buf, size);
	if (holds_package(l->install_pydir))
		return copy_out(l->install_pydir, buf, size);
	if (size)
		buf[0] = '\0';
	return -ENOENT;
}

void
paths_default_python(const char *exe, const char *fallback, char *buf, size_t size)
{
	char bin[PATH_MAX], cfg[PATH_MAX], py[PATH_MAX];
	dir_of(exe, bin, sizeof(bin));
	if (bin[0] && (size_t)snprintf(cfg, sizeof(cfg), "%s/../pyvenv.cfg", bin) < sizeof(cfg) &&
	    (size_t)snprintf(py, sizeof(py), "%s/python", bin) < sizeof(py) &&
	    access(cfg, R_OK) == 0 && access(py, X_OK) == 0 && copy_out(py, buf, size) == 0)
		return;
	snprintf(buf, size, "%s", fallback);
}
