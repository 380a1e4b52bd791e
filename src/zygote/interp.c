/*
 * Interpreter discovery for a zygote: where this binary's pytest_zygote
 * package is, and whether a project's interpreter is the Python this binary
 * embeds. It only looks (one short exec at most); it must not embed Python.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "zygote/paths.h"
#include "zygote/zygote.h"

const char *
zygote_pydir(void)
{
	static const struct paths_layout layout = {
		.build_dir = PYZ_BUILD_DIR,
		.source_pydir = PYZ_SOURCE_PYDIR,
		.rel_pydir = PYZ_REL_PYDIR,
		.install_pydir = PYZ_INSTALL_PYDIR,
		.py_version = PYZ_PY_VERSION,
	};
	static char dir[PATH_MAX];
	char exe[PATH_MAX];
	if (paths_self_exe(exe, sizeof(exe)) < 0 || paths_pydir(exe, &layout, dir, sizeof(dir)) < 0)
		return NULL; /* the interpreter must import the package itself */
	return dir;
}

/* Read "version = X.Y.Z" from a virtualenv's pyvenv.cfg next to bin/. */
static int
venv_version(const char *python, char *buf, size_t size)
{
	char cfg[PATH_MAX];
	snprintf(cfg, sizeof(cfg), "%s", python);
	char *slash = strrchr(cfg, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	slash = strrchr(cfg, '/');
	if (!slash)
		return 0;
	strcpy(slash, "/pyvenv.cfg");
	FILE *f = fopen(cfg, "re");
	if (!f)
		return 0;
	char line[512];
	int found = 0;
	while (!found && fgets(line, sizeof(line), f)) {
		int maj, min;
		if (sscanf(line, " version = %d.%d", &maj, &min) == 2 ||
		    sscanf(line, " version_info = %d.%d", &maj, &min) == 2) {
			snprintf(buf, size, "%d.%d", maj, min);
			found = 1;
		}
	}
	fclose(f);
	return found;
}

/*
 * CPython installs its interpreter as pythonX.Y, python3 and python being
 * links to it (Debian, pyenv, conda, make install): a file so named, links
 * followed, is Python X.Y. Only a match is taken from the name; anything
 * else asks the interpreter (an exec: 31 ms of `start` on this project's
 * VMs).
 */
static int
named_version(const char *python, char *buf, size_t size)
{
	char real[PATH_MAX];
	if (!realpath(python, real))
		return 0;
	const char *base = strrchr(real, '/');
	base = base ? base + 1 : real;
	int maj, min, end = 0;
	if (sscanf(base, "python%d.%d%n", &maj, &min, &end) != 2 || base[end] != '\0')
		return 0;
	snprintf(buf, size, "%d.%d", maj, min);
	return strcmp(buf, PYZ_PY_VERSION) == 0;
}

int
zygote_python_matches(const char *python, char *ret_version, size_t size)
{
	char ver[32] = "";
	if (access(python, X_OK) != 0)
		return -1;
	if (!venv_version(python, ver, sizeof(ver)) && !named_version(python, ver, sizeof(ver))) {
		/* Ask the interpreter itself: one short exec at start only. */
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0)
			return -1;
		pid_t pid = fork();
		if (pid < 0) {
			close(p[0]);
			close(p[1]);
			return -1;
		}
		if (pid == 0) {
			dup2(p[1], 1);
			int devnull = open("/dev/null", O_RDWR);
			if (devnull >= 0)
				dup2(devnull, 2);
			execl(python, python, "-S", "-E", "-c",
			      "import sys; print('%d.%d' % sys.version_info[:2])", (char *)NULL);
			_exit(127);
		}
		close(p[1]);
		ssize_t n = read(p[0], ver, sizeof(ver) - 1);
		close(p[0]);
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		if (n <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			return -1;
		ver[n] = '\0';
		ver[strcspn(ver, "\n")] = '\0';
	}
	snprintf(ret_version, size, "%s", ver);
	return strcmp(ver, PYZ_PY_VERSION) == 0;
}
