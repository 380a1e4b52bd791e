/*
 * A zygote generation. One thread, one poll loop: the control socket from the
 * supervisor, a signalfd, and one connection per running test child (signals
 * to forward, client death). It never runs test code itself: warm-up only
 * collects. Requests from the supervisor are trusted but decoded with the same
 * state machine as any client's.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "zygote/common.h"
#include "zygote/fdpass.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/prefault.h"
#include "zygote/proctree.h"
#include "zygote/proto.h"
#include "zygote/pyembed.h"
#include "zygote/sandbox.h"
#include "zygote/spawn.h"
#include "zygote/zygote.h"

#define MAX_RUNS 256

struct run {
	int32_t id;
	pid_t pid;
	int conn;  /* -1 once the client is gone */
	int learn; /* read end of the child's SPAWN_FD_LEARN pipe */
	struct fdpass_reader rd;
};

/*
 * The spare: a child forked ahead of the next request, which has already
 * taken the copy-on-write faults the last run took (prefault.h). It waits on
 * its socket for a request in the same form the supervisor sends us.
 */
static struct {
	pid_t pid;
	int sock;
	int disabled;
	int real; /* prepared with the pages of a client's run */
} spare = { .sock = -1 };

/* The pages the last run made private, for the next spare to touch. */
static int hot_real; /* hot came from a client's run, not the practice run */
static struct prefault_range *hot;
static size_t nhot;

#define LEARN_PIPE_SIZE (1 << 20)

/*
 * The pages learned from a client's run, kept in a file for the next
 * generation (--pages, from the supervisor), which prepares its first spare
 * with them instead of the practice run's (collection only). Only useful
 * when both generations have the same address-space layout (the supervisor
 * turns randomisation off for zygotes, stable_layout): the header records
 * where libc is mapped, and a file from another layout is ignored.
 */
static const char *pages_file;
/* The supervisor turned address randomisation off for us (and only us). */
static int stable_layout;

struct pages_header {
	char magic[8];
	uint64_t libc; /* (uintptr_t)&printf of the zygote that wrote it */
	uint64_t n;    /* struct prefault_range entries that follow */
};

static const char pages_magic[8] = "PZPAGES1";

static uint64_t
layout_mark(void)
{
	return (uint64_t)(uintptr_t)&printf;
}

/* Keep hot (nhot ranges) in pages_file; quietly gives up on errors. */
static void
learn_save(const struct prefault_range *ranges, size_t n)
{
	if (!pages_file || !*pages_file)
		return;
	char tmp[PATH_MAX + 32];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.%d", pages_file, (int)getpid()) >= sizeof(tmp))
		return;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	struct pages_header h = { .libc = layout_mark(), .n = n };
	memcpy(h.magic, pages_magic, sizeof(h.magic));
	size_t len = n * sizeof(*ranges);
	int ok = write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) &&
		 write(fd, ranges, len) == (ssize_t)len;
	if (close(fd) < 0 || !ok || rename(tmp, pages_file) < 0)
		unlink(tmp);
}

/* The ranges a previous generation of our layout saved, or NULL. */
static struct prefault_range *
learn_load(size_t *ret_n)
{
	if (!pages_file || !*pages_file)
		return NULL;
	int fd = open(pages_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct pages_header h;
	struct prefault_range *r = NULL;
	struct stat st;
	if (read(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) &&
	    memcmp(h.magic, pages_magic, sizeof(h.magic)) == 0 && h.libc == layout_mark() &&
	    h.n > 0 && h.n <= LEARN_PIPE_SIZE / sizeof(*r) && fstat(fd, &st) == 0 &&
	    (uint64_t)st.st_size == sizeof(h) + h.n * sizeof(*r)) {
		r = malloc(h.n * sizeof(*r));
		if (r && read(fd, r, h.n * sizeof(*r)) != (ssize_t)(h.n * sizeof(*r))) {
			free(r);
			r = NULL;
		}
	}
	close(fd);
	if (r)
		*ret_n = h.n;
	return r;
}
/* The first byte a run child writes to its learning pipe: "my run is over". */
#define LEARN_DONE "E"

static struct {
	int ctl;
	int sigfd;
	pid_t supervisor;
	int generation;
	const char *root;
	struct fdpass_reader ctl_rd;
	struct proto_decoder dec;
	int in_request;
	int32_t req_id;
	int req_conn;
	struct run runs[MAX_RUNS];
	int nruns;
	int draining;
	long long drain_deadline;
} z = { .ctl = -1, .sigfd = -1, .req_conn = -1 };

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

int
zygote_python_matches(const char *python, char *ret_version, size_t size)
{
	char ver[32] = "";
	if (access(python, X_OK) != 0)
		return -1;
	if (!venv_version(python, ver, sizeof(ver))) {
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

static void
send_ready(const char *text)
{
	if (fdpass_send_msg(z.ctl, PROTO_MSG_Z_READY, text, strlen(text) + 1) < 0)
		_exit(0); /* the supervisor is gone */
}

/* Warm-up progress for a `start` that waits; losing one is harmless. */
static void
send_progress(const char *text)
{
	if (fdpass_send_msg(z.ctl, PROTO_MSG_Z_PROGRESS, text, strlen(text) + 1) < 0)
		log_debug("cannot send warm-up progress to the supervisor");
}

/* In the learning run: the control socket is the zygote's alone. */
static void
learning_child_setup(void)
{
	close(z.ctl);
	z.ctl = -1;
	setproctitle("learning gen %d %s", z.generation, z.root);
}

static void
send_done(int32_t id, int32_t code)
{
	int32_t p[2] = { id, code };
	if (fdpass_send_msg(z.ctl, PROTO_MSG_Z_DONE, p, sizeof(p)) < 0)
		log_debug("cannot report run %d to the supervisor", (int)id);
}

/* Tell a client something and finish it (no child was started). */
static void
refuse_run(int conn, int32_t id, const char *text)
{
	fdpass_send_msg(conn, PROTO_MSG_ERROR, text, strlen(text) + 1);
	int32_t code = ZEXIT_INTERNAL;
	fdpass_send_msg(conn, PROTO_MSG_EXIT, &code, sizeof(code));
	close(conn);
	if (id >= 0)
		send_done(id, code);
}

/* The zygote's own descriptors, which no child may keep. */
static int
own_fds(int *fds, int extra)
{
	int n = 0;
	fds[n++] = z.ctl;
	fds[n++] = z.sigfd;
	fds[n++] = spare.sock;
	for (int i = 0; i < z.nruns; i++) {
		fds[n++] = z.runs[i].conn;
		fds[n++] = z.runs[i].learn;
	}
	if (extra >= 0)
		fds[n++] = extra;
	return n;
}

/* A run child, from the fd layout to _exit. */
static void __attribute__((noreturn))
child_main(struct proto_request *req, int conn, int learn, const int *close_fds, int nclose,
	   pid_t zygote)
{
	char err[512];
	/* What the run execs gets randomisation back, as under plain pytest. */
	if (stable_layout)
		personality((unsigned long)personality(0xffffffff) & ~ADDR_NO_RANDOMIZE);
	if (spawn_child_setup(req, conn, learn, close_fds, nclose, zygote, z.supervisor, err,
			      sizeof(err)) < 0) {
		fdpass_send_msg(fcntl(SPAWN_FD_REPORT, F_GETFD) >= 0 ? SPAWN_FD_REPORT : conn,
				PROTO_MSG_ERROR, err, strlen(err) + 1);
		_exit(ZEXIT_INTERNAL);
	}
	/*
	 * A subreaper: whatever the run starts stays below us even if it
	 * leaves the process group (setsid, a double fork), so when the run
	 * ends the zygote finds it among its own children and kills it.
	 */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	int code = pyembed_child_run(req);
	/*
	 * The run is over: say so to the zygote first (LEARN_DONE on the
	 * learning pipe), so that a client that leaves as soon as it has our
	 * exit code does not get us killed while we record our pages.
	 */
	ssize_t d = write(SPAWN_FD_LEARN, LEARN_DONE, 1);
	(void)d;
	/* Report before _exit: the client need not wait for the reap. */
	int32_t c = code;
	fdpass_send_msg(SPAWN_FD_REPORT, PROTO_MSG_EXIT, &c, sizeof(c));
	close(SPAWN_FD_REPORT);
	/* Then, off the client's clock, tell the zygote which pages we copied. */
	struct prefault_range *r;
	long n = prefault_record(&r);
	if (n > 0) {
		size_t len = (size_t)n * sizeof(*r);
		if (len > LEARN_PIPE_SIZE - 1) /* after LEARN_DONE */
			len = (LEARN_PIPE_SIZE - 1) / sizeof(*r) * sizeof(*r);
		ssize_t w = write(SPAWN_FD_LEARN, r, len);
		(void)w;
	}
	_exit(code);
}

/* prefault_touch's stop: a request is waiting on the spare's socket. */
static int
request_waiting(void *arg)
{
	struct pollfd p = { .fd = *(int *)arg, .events = POLLIN };
	return poll(&p, 1, 0) > 0;
}

/*
 * In the spare: take the copy-on-write faults of the last run's pages, a
 * chunk at a time, and stop as soon as a request is waiting: a run that
 * arrives early is served at once, with the rest of the faults its own.
 */
static void
spare_prepare(int sock)
{
	prefault_touch(hot, nhot, request_waiting, &sock);
}

/* Fork the next spare, unless there is one or we are stopping. */
static void
spare_fork(void)
{
	if (spare.pid || spare.disabled || z.draining)
		return;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	int close_fds[2 * MAX_RUNS + 4];
	int nclose = own_fds(close_fds, sv[0]);
	pid_t zygote = getpid();

	pyembed_fork_prepare();
	pid_t pid = fork();
	if (pid == 0) {
		pyembed_fork_child();
		for (int i = 0; i < nclose; i++)
			if (close_fds[i] >= 0)
				close(close_fds[i]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != zygote)
			_exit(0);
		setproctitle("spare gen %d %s", z.generation, z.root);
		sandbox_prepare(zygote, z.supervisor);
		spare_prepare(sv[1]);
		if (!request_waiting(&sv[1]))
			pyembed_spare_speculate();

		/* Wait for a request: Z_RUN (connection and learning pipe) + request. */
		struct fdpass_reader rd;
		struct proto_decoder dec;
		int fds[PROTO_MAX_FDS], got[2] = { -1, -1 };
		fdpass_reader_init(&rd);
		proto_decoder_init(&dec);
		for (;;) {
			struct proto_hdr h;
			const char *p;
			if (fdpass_read_msg(&rd, sv[1], &h, &p) <= 0)
				_exit(0);
			int nfds = 0;
			if (h.type == PROTO_MSG_Z_RUN) {
				if (fdpass_reader_take_fds(&rd, got, 2) != 2)
					_exit(ZEXIT_INTERNAL);
				continue;
			}
			if (h.type == PROTO_MSG_FDS && h.len == sizeof(uint32_t)) {
				uint32_t count;
				memcpy(&count, p, sizeof(count));
				if (count <= PROTO_MAX_FDS)
					nfds = fdpass_reader_take_fds(&rd, fds, (int)count);
			}
			int r = proto_decoder_feed(&dec, h.type, p, h.len, fds, nfds);
			if (r < 0 || got[0] < 0)
				_exit(ZEXIT_INTERNAL);
			if (r == 1)
				break;
		}
		close(sv[1]);
		child_main(&dec.req, got[0], got[1], NULL, 0, zygote);
	}
	pyembed_fork_parent();
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		return;
	}
	spare.pid = pid;
	spare.sock = sv[0];
	spare.real = hot_real;
}

static void
spare_drop(void)
{
	if (!spare.pid)
		return;
	kill(spare.pid, SIGKILL);
	close(spare.sock);
	spare.sock = -1;
	spare.pid = 0; /* reaped by reap() as an unknown pid */
}

/* Give the request to the spare. Returns its pid, or 0 when it cannot. */
static pid_t
spare_take(const struct proto_request *req, int32_t id, int conn, int learn)
{
	if (!spare.pid)
		return 0;
	struct proto_buf b = { 0 };
	size_t off;
	int fds2[2] = { conn, learn };
	int r = proto_buf_put_i32(&b, PROTO_MSG_Z_RUN, id);
	if (r == 0)
		r = fdpass_send(spare.sock, b.data, b.len, fds2, 2, 0);
	proto_buf_free(&b);
	if (r == 0)
		r = proto_request_encode(&b, req, &off);
	if (r == 0)
		r = fdpass_send(spare.sock, b.data, b.len, req->fds, req->nfds, off);
	proto_buf_free(&b);
	pid_t pid = spare.pid;
	close(spare.sock);
	spare.sock = -1;
	spare.pid = 0;
	if (r < 0) {
		kill(pid, SIGKILL);
		return 0;
	}
	return pid;
}

static void practice_done(void);

static void
start_run(struct proto_request *req, int32_t id, int conn)
{
	if (z.nruns >= MAX_RUNS) {
		refuse_run(conn, id, "too many runs at once; try again when some have finished");
		return;
	}
	int lp[2] = { -1, -1 };
	if (pipe2(lp, O_CLOEXEC | O_NONBLOCK) == 0)
		fcntl(lp[0], F_SETPIPE_SZ, LEARN_PIPE_SIZE);

	pid_t pid = spare_take(req, id, conn, lp[1]);
	if (!pid) {
		int close_fds[2 * MAX_RUNS + 4];
		int nclose = own_fds(close_fds, lp[0]);
		pid_t zygote = getpid();
		pyembed_fork_prepare();
		pid = fork();
		if (pid == 0) {
			pyembed_fork_child();
			child_main(req, conn, lp[1], close_fds, nclose, zygote);
		}
		pyembed_fork_parent();
	}
	if (lp[1] >= 0)
		close(lp[1]);
	if (pid < 0) {
		char text[160];
		snprintf(text, sizeof(text), "cannot fork a test child: %s", strerror(errno));
		if (lp[0] >= 0)
			close(lp[0]);
		refuse_run(conn, id, text);
		if (id < 0)
			practice_done();
		return;
	}
	/* The client's stdio belongs to the child now; holding it would keep
	 * `pytest-zygote run | head` from ever seeing EOF. */
	for (int i = 0; i < req->nfds; i++) {
		close(req->fds[i]);
		req->fds[i] = -1;
	}
	struct run *r = &z.runs[z.nruns++];
	r->id = id;
	r->pid = pid;
	r->conn = conn;
	r->learn = lp[0];
	fdpass_reader_init(&r->rd);
	if (id < 0) {
		/* The practice run has no client to hear from. */
		close(conn);
		r->conn = -1;
		return;
	}
	fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK);
	log_debug("run %d: child %d", (int)id, (int)pid);
}

/* The READY text of a generation that waits for its spare (see zygote_main). */
static char deferred_ready[1024];

/* The practice run is over (or never ran): fork the spare, then say ready. */
/*
 * a and b (sorted by address, not overlapping within each) as one sorted
 * list of ranges, overlapping and adjacent ones merged. NULL on ENOMEM.
 */
static struct prefault_range *
ranges_union(const struct prefault_range *a, size_t na, const struct prefault_range *b,
	     size_t nb, size_t *ret_n)
{
	struct prefault_range *r = malloc((na + nb + 1) * sizeof(*r));
	if (!r)
		return NULL;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	size_t n = 0, i = 0, j = 0;
	while (i < na || j < nb) {
		const struct prefault_range *x =
			j >= nb || (i < na && a[i].start <= b[j].start) ? &a[i++] : &b[j++];
		uint64_t end = x->start + x->npages * page;
		if (n > 0 && r[n - 1].start + r[n - 1].npages * page >= x->start) {
			uint64_t cur = r[n - 1].start + r[n - 1].npages * page;
			if (end > cur)
				r[n - 1].npages = (end - r[n - 1].start) / page;
		} else {
			r[n++] = *x;
		}
	}
	*ret_n = n;
	return r;
}

static void
practice_done(void)
{
	/*
	 * The previous generation's pages are where ours are only up to the
	 * first changed module we imported; the practice run's are exactly
	 * ours but leave out what running tests writes. Prepare both.
	 */
	size_t n, nu;
	struct prefault_range *saved = hot_real ? NULL : learn_load(&n);
	struct prefault_range *u = saved ? ranges_union(hot, nhot, saved, n, &nu) : NULL;
	if (u) {
		free(hot);
		hot = u;
		nhot = nu;
		hot_real = 1;
		log_debug("first spare prepares the practice run's pages and %zu ranges a "
			  "previous generation learned", n);
	}
	free(saved);
	spare_fork();
	if (deferred_ready[0]) {
		send_ready(deferred_ready);
		deferred_ready[0] = '\0';
	}
}

/*
 * A practice run right after warm-up: `pytest --collect-only` in a child with
 * /dev/null for its terminal, so the first spare already knows which pages a
 * run touches. It has no client (id -1) and nobody waits for it.
 */
static void
practice_run(void)
{
	extern char **environ;
	static char *argv[] = { "--collect-only", "-q", "-p", "no:cacheprovider", NULL };
	struct proto_request req = {
		.kind = PROTO_KIND_RUN,
		.argv = argv,
		.argc = 4,
		.cwd = (char *)z.root,
		.env = environ,
		.nfds = 3,
	};
	/* The zygote's environment and a mark: child_run then stops collecting
	 * after the learning budget, as the learning run does. */
	static char mark[] = "PYTEST_ZYGOTE_PRACTICE=1";
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 2, sizeof(*env));
	if (env) {
		memcpy(env, environ, n * sizeof(*env));
		env[n++] = mark;
		req.env = env;
	}
	req.envc = n;
	for (int i = 0; i < 3; i++)
		req.fds[i] = open("/dev/null", i == 0 ? O_RDONLY | O_CLOEXEC : O_WRONLY | O_CLOEXEC);
	int conn = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (conn < 0 || req.fds[0] < 0 || req.fds[1] < 0 || req.fds[2] < 0 || spare.disabled) {
		for (int i = 0; i < 3; i++)
			if (req.fds[i] >= 0)
				close(req.fds[i]);
		if (conn >= 0)
			close(conn);
		practice_done();
		free(env);
		return;
	}
	start_run(&req, -1, conn);
	free(env);
}

/* Keep what the finished run's child reported about the pages it copied. */
static void
learn(struct run *r)
{
	char done;
	if (r->learn < 0 || read(r->learn, &done, 1) != 1 || done != LEARN_DONE[0])
		return; /* it died before its run was over */
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			break;
		if (len == cap) {
			char *g = cap < LEARN_PIPE_SIZE ? realloc(buf, cap * 2) : NULL;
			if (!g)
				break;
			buf = g;
			cap *= 2;
		}
		ssize_t n = read(r->learn, buf + len, cap - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (buf && len >= sizeof(struct prefault_range) && len % sizeof(struct prefault_range) == 0) {
		free(hot);
		hot = (struct prefault_range *)buf;
		nhot = len / sizeof(struct prefault_range);
		hot_real = r->id >= 0;
		buf = NULL;
		if (hot_real)
			learn_save(hot, nhot);
		/* The practice run is --collect-only: it leaves out the pages
		 * running tests write. A spare prepared from it is replaced once
		 * the first client's run has said which pages those are. */
		if (hot_real && spare.pid && !spare.real) {
			spare_drop();
			spare_fork();
		}
	}
	free(buf);
}

/* Children the zygote had before serving (started at warm-up): not strays. */
static pid_t *warm_children;
static int nwarm_children;

/*
 * Kill what ended runs left behind. Test children are subreapers, so a
 * process started by a run that is still going stays below that run; a child
 * of ours that is neither a run, the spare nor a warm-up leftover belongs to
 * a run that has ended.
 */
static void
kill_strays(void)
{
	pid_t keep[MAX_RUNS + 1 + 64];
	int n = 0;
	for (int i = 0; i < z.nruns; i++)
		keep[n++] = z.runs[i].pid;
	if (spare.pid)
		keep[n++] = spare.pid;
	for (int i = 0; i < nwarm_children && n < (int)ARRAY_SIZE(keep); i++)
		keep[n++] = warm_children[i];
	int k = proctree_kill_strays(keep, n);
	if (k > 0)
		log_debug("killed %d processes left behind by ended runs", k);
}

/* Remember the children warm-up left running (a server a conftest starts). */
static void
note_warm_children(void)
{
	pid_t kids[64];
	int found = proctree_children(kids, (int)ARRAY_SIZE(kids)), n = 0;
	for (int i = 0; i < found; i++)
		if (kids[i] != spare.pid)
			kids[n++] = kids[i];
	if (n) {
		warm_children = malloc((size_t)n * sizeof(pid_t));
		if (warm_children) {
			memcpy(warm_children, kids, (size_t)n * sizeof(pid_t));
			nwarm_children = n;
		}
	}
}

static void
run_remove(int i)
{
	fdpass_reader_finish(&z.runs[i].rd);
	if (z.runs[i].conn >= 0)
		close(z.runs[i].conn);
	if (z.runs[i].learn >= 0)
		close(z.runs[i].learn);
	z.runs[i] = z.runs[--z.nruns];
}

static void
reap(void)
{
	int st, ended = 0;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		ended = 1;
		for (int i = 0; i < nwarm_children; i++)
			if (warm_children[i] == pid)
				warm_children[i] = 0;
		if (pid == spare.pid) {
			/* The spare died before it was used; fork another later. */
			close(spare.sock);
			spare.sock = -1;
			spare.pid = 0;
			continue;
		}
		for (int i = 0; i < z.nruns; i++) {
			struct run *r = &z.runs[i];
			if (r->pid != pid)
				continue;
			int32_t code = WIFEXITED(st) ? WEXITSTATUS(st)
				       : WIFSIGNALED(st) ? 128 + WTERMSIG(st)
							 : ZEXIT_INTERNAL;
			/* Whatever the run left in its process group goes with it. */
			kill(-pid, SIGKILL);
			if (r->conn >= 0)
				fdpass_send_msg(r->conn, PROTO_MSG_EXIT, &code, sizeof(code));
			if (r->id >= 0)
				send_done(r->id, code);
			learn(r);
			if (r->id < 0)
				practice_done();
			log_debug("run %d: child %d exited with %d", (int)r->id, (int)pid,
				  (int)code);
			run_remove(i);
			/*
			 * The next spare is forked now, not when the run
			 * started: preparing it (thousands of page copies)
			 * next to a running child made that child's Python
			 * run a third slower on this kind of machine.
			 */
			spare_fork();
			break;
		}
	}
	/* A run ended, or a stray died (and its own children came to us). */
	if (ended)
		kill_strays();
}

/* Signals a client may forward to its run. */
static int
forwardable(int sig)
{
	switch (sig) {
	case SIGINT: case SIGTERM: case SIGHUP: case SIGQUIT: case SIGWINCH:
	case SIGUSR1: case SIGUSR2: case SIGCONT: case SIGTSTP:
	case SIGKILL: /* the client's last escalation of Ctrl-C */
		return 1;
	default:
		return 0;
	}
}

/* Whether r's child has written LEARN_DONE: its run is over. */
static int
run_over(const struct run *r)
{
	struct pollfd p = { .fd = r->learn, .events = POLLIN };
	return r->learn >= 0 && poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static void
client_readable(struct run *r)
{
	for (;;) {
		ssize_t n = fdpass_reader_fill(&r->rd, r->conn);
		if (n == -EAGAIN)
			return;
		if (n <= 0)
			goto gone;
		struct proto_hdr h;
		const char *p;
		int m;
		while ((m = fdpass_reader_next(&r->rd, &h, &p)) > 0) {
			int32_t sig;
			if (h.type != PROTO_MSG_SIGNAL || proto_get_i32(p, h.len, &sig) < 0 ||
			    !forwardable(sig))
				goto gone;
			/* SIGTSTP cannot stop an orphaned group's leader usefully: stop it. */
			kill(-r->pid, sig == SIGTSTP ? SIGSTOP : sig);
		}
		if (m < 0)
			goto gone;
	}
gone:
	/*
	 * The client died or broke the protocol: its run dies with it. Unless
	 * the run is over (the child said so on the learning pipe before it
	 * sent the exit code): the client left because it has its answer, and
	 * the child is recording its pages; reap() cleans up after it.
	 */
	if (!run_over(r)) {
		kill(-r->pid, SIGKILL);
		kill(r->pid, SIGKILL);
	}
	close(r->conn);
	r->conn = -1;
}

static void
request_failed(const char *why)
{
	char text[256];
	snprintf(text, sizeof(text), "bad request: %s", why);
	if (z.req_conn >= 0)
		refuse_run(z.req_conn, z.req_id, text);
	z.req_conn = -1;
	proto_decoder_finish(&z.dec);
	z.in_request = 0;
}

/* One message on the control socket. Returns -1 when the zygote must exit. */
static int
ctl_message(const struct proto_hdr *h, const char *p)
{
	int fds[PROTO_MAX_FDS];
	int nfds = 0;

	if (z.in_request) {
		if (h->type == PROTO_MSG_FDS && h->len == sizeof(uint32_t)) {
			uint32_t count;
			memcpy(&count, p, sizeof(count));
			if (count <= PROTO_MAX_FDS)
				nfds = fdpass_reader_take_fds(&z.ctl_rd, fds, (int)count);
		}
		int r = proto_decoder_feed(&z.dec, h->type, p, h->len, fds, nfds);
		if (r < 0) {
			request_failed(z.dec.error);
		} else if (r == 1) {
			start_run(&z.dec.req, z.req_id, z.req_conn);
			z.req_conn = -1;
			proto_decoder_finish(&z.dec);
			z.in_request = 0;
		}
		return 0;
	}
	switch (h->type) {
	case PROTO_MSG_Z_RUN: {
		int32_t id;
		if (proto_get_i32(p, h->len, &id) < 0 ||
		    fdpass_reader_take_fds(&z.ctl_rd, &z.req_conn, 1) != 1) {
			log_error("malformed run hand-over from the supervisor");
			return -1;
		}
		z.req_id = id;
		z.in_request = 1;
		proto_decoder_init(&z.dec);
		return 0;
	}
	case PROTO_MSG_Z_DRAIN: {
		int32_t grace;
		if (proto_get_i32(p, h->len, &grace) < 0)
			grace = 5000;
		z.draining = 1;
		z.drain_deadline = now_ms() + grace;
		spare_drop();
		return 0;
	}
	default:
		log_error("unexpected message %u from the supervisor", h->type);
		return -1;
	}
}

static void
kill_all_runs(void)
{
	spare_drop();
	for (int i = 0; i < z.nruns; i++) {
		kill(-z.runs[i].pid, SIGKILL);
		kill(z.runs[i].pid, SIGKILL);
	}
}

/*
 * The supervisor is gone: nobody can reach us or reap what we leave, so kill
 * every process below us (runs, their process groups, whatever escaped
 * them, the spare), then exit.
 */
static void __attribute__((noreturn))
orphaned_exit(void)
{
	log_warn("the supervisor (pid %d) is gone; killing the runs and exiting",
		 (int)z.supervisor);
	kill_all_runs();
	proctree_kill_all(2000);
	_exit(0);
}

static int
serve(void)
{
	for (;;) {
		if (z.draining && z.nruns == 0)
			return 0;
		struct pollfd pfd[MAX_RUNS + 2];
		int n = 0;
		pfd[n] = (struct pollfd){ .fd = z.ctl, .events = POLLIN };
		n++;
		pfd[n] = (struct pollfd){ .fd = z.sigfd, .events = POLLIN };
		n++;
		for (int i = 0; i < z.nruns; i++) {
			if (z.runs[i].conn < 0)
				continue;
			pfd[n] = (struct pollfd){ .fd = z.runs[i].conn, .events = POLLIN };
			n++;
		}
		int timeout = -1;
		if (z.draining) {
			long long left = z.drain_deadline - now_ms();
			if (left <= 0) {
				kill_all_runs();
				timeout = 100;
			} else {
				timeout = (int)left;
			}
		}
		pyembed_unlock();
		int k = poll(pfd, (nfds_t)n, timeout);
		pyembed_lock();
		if (k < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			return 1;
		}
		/* Clients first: a reap below may reorder z.runs. */
		for (int j = 2; j < n; j++) {
			if (!pfd[j].revents)
				continue;
			for (int i = 0; i < z.nruns; i++)
				if (z.runs[i].conn == pfd[j].fd)
					client_readable(&z.runs[i]);
		}
		if (pfd[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(z.sigfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGTERM && getppid() != z.supervisor)
					orphaned_exit(); /* our PR_SET_PDEATHSIG */
				if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
					if (!z.draining) {
						z.draining = 1;
						z.drain_deadline = now_ms() + 5000;
						spare_drop();
					}
				}
			}
			reap();
		}
		if (pfd[0].revents) {
			ssize_t r = fdpass_reader_fill(&z.ctl_rd, z.ctl);
			if (r == 0 || (r < 0 && r != -EAGAIN)) {
				/* The supervisor is gone: nobody can reach us any more. */
				orphaned_exit();
			}
			struct proto_hdr h;
			const char *p;
			int m;
			while ((m = fdpass_reader_next(&z.ctl_rd, &h, &p)) > 0)
				if (ctl_message(&h, p) < 0)
					return 1;
			if (m < 0)
				return 1;
		}
	}
}

/* How many OS threads are alive, and their names (/proc/self/task/<tid>/comm). */
static int
count_threads(char *names, size_t size)
{
	int n = 0;
	names[0] = '\0';
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return 1;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		n++;
		char cpath[300], comm[64] = "";
		snprintf(cpath, sizeof(cpath), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(cpath, "re");
		if (f) {
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = '\0';
			fclose(f);
		}
		size_t l = strlen(names);
		snprintf(names + l, size - l, "%s%s", l ? "," : "", comm);
	}
	closedir(d);
	return n;
}

int
zygote_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ctl-fd", required_argument, NULL, 'c' },
		{ "root", required_argument, NULL, 'r' },
		{ "python", required_argument, NULL, 'p' },
		{ "generation", required_argument, NULL, 'g' },
		{ "supervisor", required_argument, NULL, 's' },
		{ "pages", required_argument, NULL, 'P' },
		{ "stable-layout", no_argument, NULL, 'L' },
		{ 0 },
	};
	const char *python = PYZ_DEFAULT_PYTHON;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': z.ctl = atoi(optarg); break;
		case 'r': z.root = optarg; break;
		case 'p': python = optarg; break;
		case 'g': z.generation = atoi(optarg); break;
		case 's': z.supervisor = (pid_t)atoi(optarg); break;
		case 'P': pages_file = optarg; break;
		case 'L': stable_layout = 1; break;
		default: return ZEXIT_USAGE;
		}
	}
	if (z.ctl < 0 || !z.root || z.supervisor <= 0) {
		fprintf(stderr, "pytest-zygote: __zygote is internal; use 'pytest-zygote start'\n");
		return ZEXIT_USAGE;
	}
	log_init("zygote", 1);
	/*
	 * SIGTERM when the supervisor dies: during warm-up that ends us (no run
	 * exists yet); once serving, it arrives on the signalfd and we kill
	 * every run and whatever it left before exiting (orphaned_exit), so a
	 * supervisor killed with SIGKILL leaves nothing running.
	 */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != z.supervisor)
		return 0;
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	setproctitle("zygote gen %d %s", z.generation, z.root);
	fdpass_reader_init(&z.ctl_rd);

	char text[1024], err[768], ver[32];
	int m = zygote_python_matches(python, ver, sizeof(ver));
	if (m <= 0) {
		if (m < 0)
			snprintf(text, sizeof(text),
				 "error=cannot run the interpreter '%s'; pass a working one with "
				 "--python\n", python);
		else
			snprintf(text, sizeof(text),
				 "error=the interpreter '%s' is Python %s but this pytest-zygote "
				 "embeds Python %s; rebuild it for that interpreter: meson setup "
				 "build-%s -Dpython=%s && meson compile -C build-%s\n",
				 python, ver, PYZ_PY_VERSION, ver, python, ver);
		send_ready(text);
		return ZEXIT_NOSTART;
	}
	if (chdir(z.root) < 0) {
		snprintf(text, sizeof(text), "error=cannot enter the project root '%s': %s\n",
			 z.root, strerror(errno));
		send_ready(text);
		return ZEXIT_NOSTART;
	}
	/*
	 * Block the signals the serve loop reads from a signalfd before Python
	 * starts: threads inherit the mask, and a thread started at warm-up
	 * (numexpr's pool, a project's) that had them unblocked would take the
	 * zygote's SIGCHLD, and no run would ever be reaped. Test children
	 * reset their mask (spawn_reset_signals).
	 */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (pyembed_init(python, zygote_pydir(), err, sizeof(err)) < 0) {
		snprintf(text, sizeof(text), "error=%s\n", err);
		send_ready(text);
		return ZEXIT_NOSTART;
	}
	struct pyembed_warm w;
	pyembed_on_progress(send_progress);
	pyembed_on_learning_fork(learning_child_setup);
	int warm_failed = pyembed_warmup(z.root, &w, err, sizeof(err)) < 0;
	pyembed_on_progress(NULL);
	if (warm_failed) {
		snprintf(text, sizeof(text), "error=%s\n", err);
		send_ready(text);
		return ZEXIT_NOSTART;
	}
	char names[512];
	int threads = count_threads(names, sizeof(names));
	if (threads > 1)
		log_warn("%d threads are running after warm-up (%s); a thread holding a lock "
			 "at fork can deadlock a test child",
			 threads, names);

	z.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (z.sigfd < 0) {
		snprintf(text, sizeof(text), "error=signalfd: %s\n", strerror(errno));
		send_ready(text);
		return ZEXIT_NOSTART;
	}
	snprintf(text, sizeof(text),
		 "modules=%ld\nproject_files=%ld\nwarmup_ms=%ld\nthreads=%d\nthread_names=%s\n"
		 "status=%s\n",
		 w.modules, w.project_files, (long)(w.seconds * 1000 + 0.5), threads, names,
		 w.status);
	log_info("generation %d warm: %ld modules in %.2f s (%s)", z.generation, w.modules,
		 w.seconds, w.status);
	if (w.files && fdpass_send_msg(z.ctl, PROTO_MSG_Z_FILES, w.files, strlen(w.files) + 1) < 0)
		log_warn("cannot send the watch list to the supervisor");
	free(w.files);
	const char *sp = getenv("PYTEST_ZYGOTE_SPARE");
	spare.disabled = sp && strcmp(sp, "0") == 0;
	/*
	 * The first generation is ready now: `start` is waiting. A later one
	 * takes over from a generation that serves well meanwhile, so it says
	 * ready only once its spare is prepared, and its first run is as fast
	 * as the ones after.
	 */
	if (z.generation > 1 && !spare.disabled)
		snprintf(deferred_ready, sizeof(deferred_ready), "%s", text);
	else
		send_ready(text);
	fcntl(z.ctl, F_SETFL, fcntl(z.ctl, F_GETFL) | O_NONBLOCK);
	note_warm_children();
	/* The supervisor may have died while we were blocking SIGTERM. */
	if (getppid() != z.supervisor)
		orphaned_exit();
	practice_run();
	int rc = serve();
	fflush(stdout);
	fflush(stderr);
	/* No Py_Finalize: it would run the project's atexit handlers and may hang. */
	_exit(rc);
}
