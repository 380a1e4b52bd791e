/*
 * Collecting ahead (docs/design.md, "Collecting ahead"): after a run whose
 * collection took a while, a child forked from the zygote starts the same
 * run again (argv, cwd, environment, and stdio of the same kind), collects,
 * and stops before the first test. When the next request is that run again,
 * with no change seen in the project since and every file and directory the
 * collection read as it was, the request goes to this child, which gives the
 * output it wrote so far to the client's stdout and goes on with its tests.
 * Any other request (or any run started meanwhile) drops it.
 *
 * Only stdio that is no terminal is done ahead: a terminal's size and modes
 * decide what pytest prints, and cannot be known before the request.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/peer.h"
#include "zygote/prefault.h"
#include "zygote/proto.h"
#include "zygote/pyembed.h"
#include "zygote/spawn.h"

struct ahead_state ahead = { .sock = -1, .reads = -1 };

/* The last client run that may be done ahead: what the next child repeats. */
static struct {
	int set;
	char **argv;
	size_t argc;
	char *cwd;
	char **env;
	size_t envc;
	int joined; /* its stdout and stderr were the same file */
} last;

static void
strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static char **
strv_dup(char *const *v, size_t n)
{
	char **d = calloc(n + 1, sizeof(*d));
	for (size_t i = 0; d && i < n; i++)
		if (!(d[i] = strdup(v[i]))) {
			strv_free(d, i);
			return NULL;
		}
	return d;
}

static int
strv_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return 0;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return 0;
	return 1;
}

static int
has_var(const struct proto_request *req, const char *name)
{
	size_t l = strlen(name);
	for (size_t i = 0; i < req->envc; i++)
		if (strncmp(req->env[i], name, l) == 0 && req->env[i][l] == '=')
			return 1;
	return 0;
}

/* Whether stdout and stderr are one file; -1 when the request cannot be done
 * ahead (a terminal, a closed or missing descriptor). */
static int
stdio_shape(const struct proto_request *req)
{
	if (req->nfds < 3 || (req->flags & (PROTO_FLAG_CLOSED_FD0 * 7)))
		return -1;
	struct stat st[3];
	for (int i = 0; i < 3; i++)
		if (req->fds[i] < 0 || isatty(req->fds[i]) || fstat(req->fds[i], &st[i]) < 0)
			return -1;
	return st[1].st_dev == st[2].st_dev && st[1].st_ino == st[2].st_ino;
}

/*
 * Whether req may be done ahead at all: the server's check list present (so
 * the change counter means something), no run kind of our own (a worker, an
 * --affected run, a profile), and no terminal.
 */
static int
eligible(const struct proto_request *req)
{
	return req->kind == PROTO_KIND_RUN && has_var(req, "PYTEST_ZYGOTE_CHECK") &&
	       has_var(req, "PYTEST_ZYGOTE_EPOCH") && !has_var(req, "PYTEST_ZYGOTE_WORKER") &&
	       !has_var(req, "PYTEST_ZYGOTE_AFFECTED") && !has_var(req, "PYTEST_ZYGOTE_PROFILE") &&
	       stdio_shape(req) >= 0;
}

/* Remember req (a client's run that has just started) for the next child. */
void
ahead_remember(const struct proto_request *req)
{
	if (ahead.disabled)
		return;
	if (last.set && strv_eq(last.argv, last.argc, req->argv, req->argc) &&
	    strv_eq(last.env, last.envc, req->env, req->envc) && strcmp(last.cwd, req->cwd) == 0 &&
	    last.joined == stdio_shape(req))
		return;
	strv_free(last.argv, last.argc);
	strv_free(last.env, last.envc);
	free(last.cwd);
	memset(&last, 0, sizeof(last));
	if (!eligible(req)) {
		log_debug("the next run is not collected ahead: %s",
			  stdio_shape(req) < 0 ? "a terminal, or a closed descriptor"
					       : "a run of its own kind, or the server's list of "
						 "changes was lost");
		return;
	}
	last.argv = strv_dup(req->argv, req->argc);
	last.env = strv_dup(req->env, req->envc);
	last.cwd = strdup(req->cwd);
	last.argc = req->argc;
	last.envc = req->envc;
	last.joined = stdio_shape(req);
	last.set = last.argv && last.env && last.cwd;
}

/* No child collecting ahead any more (its socket already closed: sock -1). */
static void
ahead_forget(void)
{
	if (ahead.sock >= 0)
		close(ahead.sock);
	if (ahead.reads >= 0)
		close(ahead.reads);
	ahead.sock = ahead.reads = -1;
	ahead.pid = 0;
}

/* Kill the child collecting ahead, if there is one; reap() collects it. */
void
ahead_drop(void)
{
	if (!ahead.pid)
		return;
	kill(ahead.pid, SIGKILL);
	ahead_forget();
}

/* Whether the file at path holds exactly the n bytes at blob. */
static int
same_content(const char *path, const char *blob, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return 0;
	char buf[65536];
	size_t at = 0;
	int same = 1;
	for (;;) {
		ssize_t k = read(fd, buf, sizeof(buf));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			same = same && k == 0 && at == n;
			break;
		}
		if (at + (size_t)k > n || memcmp(buf, blob + at, (size_t)k) != 0) {
			same = 0;
			break;
		}
		at += (size_t)k;
	}
	close(fd);
	return same;
}

/*
 * The files and directories the child read while it collected are as they
 * were. The list (ahead.py): a line "reads TEXTLEN", then one line per path,
 * "ino size mtime_ns ctime_ns blob path" ("- - - -": it was absent; blob:
 * the offset of the file's contents after the text, or -1), then the
 * contents. A file whose stat changed still counts as the same when its
 * bytes are (pytest's cache, rewritten unchanged by every run). Any other
 * difference, or a list we cannot read, is a no.
 */
static int
reads_unchanged(void)
{
	struct stat st;
	if (fstat(ahead.reads, &st) < 0 || st.st_size <= 0)
		return 0;
	size_t len = (size_t)st.st_size;
	char *buf = malloc(len + 1);
	if (!buf || pread(ahead.reads, buf, len, 0) != (ssize_t)len) {
		free(buf);
		return 0;
	}
	buf[len] = '\0';
	size_t textlen = 0;
	int hdr = 0;
	if (sscanf(buf, "reads %zu\n%n", &textlen, &hdr) != 1 || !hdr ||
	    textlen > len - (size_t)hdr) {
		free(buf);
		return 0;
	}
	char *text = buf + hdr;
	const char *blobs = text + textlen;
	size_t nblobs = len - (size_t)hdr - textlen;
	char saved = *(char *)blobs; /* the text ends where the blobs begin */
	*(char *)blobs = '\0';
	int same = 1;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); same && line;
	     line = strtok_r(NULL, "\n", &save)) {
		char ino[32], size[32], mtime[32], ctime[32];
		long long boff;
		int off = 0;
		if (sscanf(line, "%31s %31s %31s %31s %lld %n", ino, size, mtime, ctime, &boff,
			   &off) != 5 ||
		    !off) {
			same = 0;
			break;
		}
		const char *path = line + off;
		if (stat(path, &st) < 0) {
			same = errno == ENOENT && strcmp(ino, "-") == 0;
			continue;
		}
		char now[4][32];
		snprintf(now[0], sizeof(now[0]), "%llu", (unsigned long long)st.st_ino);
		snprintf(now[1], sizeof(now[1]), "%lld", (long long)st.st_size);
		snprintf(now[2], sizeof(now[2]), "%lld",
			 (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
		snprintf(now[3], sizeof(now[3]), "%lld",
			 (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec);
		same = !strcmp(now[0], ino) && !strcmp(now[1], size) && !strcmp(now[2], mtime) &&
		       !strcmp(now[3], ctime);
		if (!same && boff >= 0 && S_ISREG(st.st_mode) && !strcmp(now[1], size) &&
		    (size_t)boff <= nblobs && (size_t)st.st_size <= nblobs - (size_t)boff) {
			*(char *)blobs = saved;
			same = same_content(path, blobs + boff, (size_t)st.st_size);
			*(char *)blobs = '\0';
		}
		if (!same)
			log_debug("collected ahead: '%s' changed since", path);
	}
	free(buf);
	return same;
}

/* Whether the child has collected and said what it read ('R' on its socket). */
static int
ahead_collected(void)
{
	if (ahead.ready)
		return 1;
	char c;
	ssize_t n = recv(ahead.sock, &c, 1, MSG_DONTWAIT);
	ahead.ready = n == 1 && c == 'R';
	return ahead.ready;
}

/*
 * The request is the run being collected ahead, which has not finished (runs
 * back to back: the last one ended a moment ago). A new child would collect
 * all over again: wait for this one, about as long as a collection takes.
 * The zygote's loop waits too; other runs' signals are forwarded late.
 */
static int
ahead_wait(void)
{
	long long deadline = now_ms() + 2 * last_collect_ms + 500;
	for (;;) {
		long long left = deadline - now_ms();
		struct pollfd pfd = { .fd = ahead.sock, .events = POLLIN };
		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			return 0;
		if (pfd.revents & (POLLHUP | POLLERR))
			return ahead_collected();
		if (ahead_collected())
			return 1;
		if (pfd.revents & POLLIN)
			return 0; /* something other than its 'R' */
	}
}

/*
 * Give req to the child collecting ahead when it is the run it repeats and
 * nothing it read has changed. Returns its pid, or 0 (and the child is
 * dropped: req will change what it assumed, as any other run may).
 */
pid_t
ahead_take(const struct proto_request *req, int32_t id, int conn, int learn)
{
	if (!ahead.pid)
		return 0;
	const char *why = NULL;
	if (!last.set || !strv_eq(last.argv, last.argc, req->argv, req->argc) ||
	    strcmp(last.cwd, req->cwd) != 0)
		why = "other arguments";
	else if (!strv_eq(last.env, last.envc, req->env, req->envc))
		why = "another environment, or a change in the project";
	else if (last.joined != stdio_shape(req))
		why = "other stdio";
	else if (!ahead_collected() && !ahead_wait())
		why = "it has not finished collecting";
	else if (!reads_unchanged())
		why = "a file it read changed";
	if (why) {
		log_debug("run %d: not the run collected ahead (%s)", (int)id, why);
		ahead_drop();
		return 0;
	}
	int r = handoff_send(ahead.sock, req, id, conn, learn);
	pid_t pid = ahead.pid;
	ahead.sock = -1; /* handoff_send closed it */
	ahead_forget();
	if (r < 0) {
		kill(pid, SIGKILL);
		return 0;
	}
	log_debug("run %d: collected ahead by %d", (int)id, (int)pid);
	return pid;
}

/* In the child: its socket to the zygote, its reads list, and its learning pipe. */
static int child_sock = -1, child_reads = -1;
static int child_out[2] = { -1, -1 }; /* memfds holding what it wrote to 1 and 2 */
static struct spawn_fd *child_learn;

/* Copy what memfd holds to fd (the client's stdout or stderr). */
static int
copy_out(int memfd, int fd)
{
	char buf[65536];
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(memfd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (int)n;
		for (ssize_t w = 0; w < n;) {
			ssize_t k = write(fd, buf + w, (size_t)(n - w));
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return -1; /* as pytest writing to a closed pipe: it finds out itself */
			w += k;
		}
		off += n;
	}
}

/*
 * _pytest_zygote_c.ahead_adopt(reads, blobs), from the child's Python once it has
 * collected: publish what it read, then wait for the request. 1 once it is
 * the request's run, with the client's stdio on 0/1/2; 0 when there will be
 * none (the zygote dropped us: it kills us, so this is rare).
 */
static int
adopt(const char *reads, const void *blobs, size_t nblobs)
{
	char hdr[48];
	size_t len = strlen(reads);
	int n = snprintf(hdr, sizeof(hdr), "reads %zu\n", len);
	if (pwrite(child_reads, hdr, (size_t)n, 0) != n ||
	    (len && pwrite(child_reads, reads, len, n) != (ssize_t)len) ||
	    (nblobs && pwrite(child_reads, blobs, nblobs, n + (off_t)len) != (ssize_t)nblobs))
		return 0;
	setproctitle("collected ahead gen %d %s", z.generation, z.root);
	if (write(child_sock, "R", 1) != 1)
		return 0;
	struct peer *p = peer_create(child_sock);
	struct handoff_request ar = { .got = { -1, -1 } };
	proto_decoder_init(&ar.dec);
	if (!p)
		return 0;
	peer_set_fds_rule(p, handoff_frame_fds);
	while (!ar.done && !ar.failed)
		if (peer_read(p, handoff_frame, &ar) <= 0)
			return 0;
	peer_destroy(p);
	child_sock = -1;
	/* A request we cannot take is an error of the run's, never a success
	 * (the zygote checked its stdio before it sent it). */
	if (ar.failed || ar.dec.req.nfds < 3)
		_exit(ZEXIT_INTERNAL);
	struct proto_request *req = &ar.dec.req;
	/* What it wrote so far, then the client's stdio in its place. */
	copy_out(child_out[0], req->fds[1]);
	if (child_out[1] >= 0)
		copy_out(child_out[1], req->fds[2]);
	for (int i = 0; i < 3; i++) {
		if (dup2(req->fds[i], i) < 0)
			_exit(ZEXIT_INTERNAL);
		if (req->fds[i] > 2)
			close(req->fds[i]);
	}
	/* The learning pipe where /dev/null stood, so child_finish finds it. */
	struct stat st;
	if (dup3(ar.got[1], child_learn->fd, O_CLOEXEC) < 0 || fstat(child_learn->fd, &st) < 0)
		_exit(ZEXIT_INTERNAL);
	child_learn->dev = st.st_dev;
	child_learn->ino = st.st_ino;
	close(ar.got[1]);
	close(ar.got[0]); /* the client connection: never held while Python runs */
	for (int i = 0; i < 2; i++)
		if (child_out[i] >= 0)
			close(child_out[i]);
	close(child_reads);
	spawn_set_title(req);
	return 1;
}

/* In the child, from fork to _exit. */
static void __attribute__((noreturn))
child(int sock, int reads, const int *close_fds, int nclose, pid_t zygote)
{
	/* Ours while Python runs: high, out of the tests' way (spawn.h). */
	int base = spawn_fd_base();
	int log_fd = fcntl(2, F_DUPFD_CLOEXEC, base);
	child_sock = fcntl(sock, F_DUPFD_CLOEXEC, base);
	child_reads = fcntl(reads, F_DUPFD_CLOEXEC, base);
	int m[2] = { memfd_create("stdout", MFD_CLOEXEC),
		     last.joined ? -1 : memfd_create("stderr", MFD_CLOEXEC) };
	for (int i = 0; i < 2; i++)
		if (m[i] >= 0)
			child_out[i] = fcntl(m[i], F_DUPFD_CLOEXEC, base);
	if (child_sock < 0 || child_reads < 0 || child_out[0] < 0 ||
	    (!last.joined && child_out[1] < 0))
		_exit(0);
	close(sock);
	close(reads);
	/* What the run writes before its request goes to the memfds, which
	 * spawn_child_setup moves onto 1 and 2 (it closes what it is given). */
	struct proto_request req = {
		.kind = PROTO_KIND_RUN,
		.argv = last.argv,
		.argc = last.argc,
		.cwd = last.cwd,
		.env = last.env,
		.envc = last.envc,
		.nfds = 3,
	};
	req.fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	req.fds[1] = m[0];
	req.fds[2] = last.joined ? m[0] : m[1];
	if (req.fds[0] < 0)
		_exit(0);
	static struct spawn_fd learn_fd;
	child_learn = &learn_fd;
	/* No client yet: a failure before Python has nobody to tell. */
	int conn = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (conn < 0 || spawn_child_setup(&req, conn, -1, close_fds, nclose, zygote, z.supervisor,
					  &learn_fd) < 0)
		_exit(0);
	setproctitle("collecting ahead gen %d %s", z.generation, z.root);
	child_randomise();
	/* The pages the last run wrote, as a spare copies them: the tests'
	 * copy-on-write faults are taken now, not after the request. */
	prefault_touch(hot, nhot, NULL, NULL, 0);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	pyembed_on_adopt(adopt);
	int code = pyembed_child_run(&req, 1);
	if (child_sock >= 0 && log_fd >= 0) {
		/* Never adopted: say why in the server's log (debug). */
		char buf[2048];
		ssize_t n = pread(child_out[0], buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = '\0';
		dprintf(log_fd, "collecting ahead: the run ended (%d) before its request:\n%s\n",
			code, buf);
	}
	child_finish(code, &learn_fd);
}

/*
 * After a run ended with no other going: fork the child that collects the
 * last run ahead, when that run's collection took long enough for it to pay.
 */
void
ahead_fork(void)
{
	if (ahead.pid || ahead.disabled || z.draining || z.lean || !last.set || z.nruns)
		return;
	if (last_collect_ms < ahead.min_ms) {
		log_debug("not collecting ahead: the last run collected in %ld ms (< %ld)",
			  last_collect_ms, ahead.min_ms);
		return;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	int reads = memfd_create("reads", MFD_CLOEXEC);
	if (reads < 0) {
		close(sv[0]);
		close(sv[1]);
		return;
	}
	int close_fds[OWN_FDS_MAX];
	int nclose = own_fds(close_fds, sv[0]);
	pid_t zygote = getpid();
	pyembed_fork_prepare();
	pid_t pid = fork();
	if (pid == 0) {
		pyembed_fork_child();
		child(sv[1], reads, close_fds, nclose, zygote);
	}
	pyembed_fork_parent();
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		close(reads);
		return;
	}
	ahead.pid = pid;
	ahead.sock = sv[0];
	ahead.reads = reads;
	ahead.ready = 0;
	log_debug("collecting ahead in %d (the last run collected in %ld ms)", (int)pid,
		  last_collect_ms);
}

/* reap(): the child exited before a request took it (an error in collection,
 * a run it cannot do ahead, such as -n). */
void
ahead_reaped(int status)
{
	log_debug("the child collecting ahead (%d) ended before a request took it (wait status "
		  "%#x)",
		  (int)ahead.pid, status);
	ahead_forget();
}
