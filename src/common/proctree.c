/*
 * Killing stray subtrees found through /proc (see proctree.h). One scan reads
 * /proc/PID/stat of every process for its state and parent; zombies are
 * skipped (their parent reaps them) but their children are not.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/proctree.h"

struct proc {
	pid_t pid, ppid;
	char state;
};

/* Every process: pid, parent, state. Returns the count or -errno. */
static int
scan(struct proc **ret)
{
	DIR *d = opendir("/proc");
	if (!d)
		return -errno;
	size_t n = 0, cap = 256;
	struct proc *v = malloc(cap * sizeof(*v));
	struct dirent *e;
	while (v && (e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		char path[64], buf[512];
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = '\0';
		/* "pid (comm) S ppid ...": comm may hold spaces and parentheses. */
		char *rp = strrchr(buf, ')');
		char state;
		int ppid;
		if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2)
			continue;
		if (n == cap) {
			struct proc *g = realloc(v, cap * 2 * sizeof(*v));
			if (!g)
				break;
			v = g;
			cap *= 2;
		}
		v[n++] = (struct proc){ .pid = (pid_t)pid, .ppid = (pid_t)ppid, .state = state };
	}
	closedir(d);
	if (!v)
		return -ENOMEM;
	*ret = v;
	return (int)n;
}

static int
in(pid_t pid, const pid_t *set, int n)
{
	for (int i = 0; i < n; i++)
		if (set[i] == pid)
			return 1;
	return 0;
}

/* Mark p[i] and its descendants; kill the live ones. */
static int
kill_subtree(struct proc *p, int n, int root)
{
	int killed = 0;
	/* Iterative: a marked entry's children get marked in later passes. */
	_cleanup_free_ char *mark = calloc((size_t)n, 1);
	if (!mark)
		return 0;
	mark[root] = 1;
	for (int changed = 1; changed;) {
		changed = 0;
		for (int i = 0; i < n; i++) {
			if (mark[i])
				continue;
			for (int j = 0; j < n; j++)
				if (mark[j] && p[i].ppid == p[j].pid) {
					mark[i] = 1;
					changed = 1;
					break;
				}
		}
	}
	for (int i = 0; i < n; i++)
		if (mark[i] && p[i].state != 'Z' && p[i].state != 'X' &&
		    kill(p[i].pid, SIGKILL) == 0)
			killed++;
	return killed;
}

int
proctree_kill_strays(const pid_t *keep, int nkeep)
{
	_cleanup_free_ struct proc *p = NULL;
	int n = scan(&p);
	if (n < 0)
		return n;
	pid_t self = getpid();
	int killed = 0;
	for (int i = 0; i < n; i++)
		if (p[i].ppid == self && !in(p[i].pid, keep, nkeep))
			killed += kill_subtree(p, n, i);
	return killed;
}

int
proctree_children(pid_t *out, int max)
{
	_cleanup_free_ struct proc *p = NULL;
	int n = scan(&p);
	if (n < 0)
		return n;
	pid_t self = getpid();
	int k = 0;
	for (int i = 0; i < n && k < max; i++)
		if (p[i].ppid == self)
			out[k++] = p[i].pid;
	return k;
}

int
proctree_kill_all(int max_ms)
{
	long long deadline = now_ms() + max_ms;
	int total = 0;
	for (;;) {
		int k = proctree_kill_strays(NULL, 0);
		if (k <= 0 || now_ms() >= deadline)
			return total + (k > 0 ? k : 0);
		total += k;
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}
