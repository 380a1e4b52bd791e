/*
 * A zygote generation. One thread, one poll loop: the control socket from the
 * supervisor, a signalfd, and one connection per running test child (signals
 * to forward, client death). It never runs test code itself: warm-up only
 * collects. Requests from the supervisor are trusted but decoded with the same
 * state machine as any client's. The spare is spare.c's, the pages runs made
 * private learn.c's, the interpreter check interp.c's.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "internal.h"
#include "zygote/common.h"
#include "zygote/conf.h"
#include "zygote/fdpass.h"
#include "zygote/peer.h"
#include "zygote/log.h"
#include "zygote/prefault.h"
#include "zygote/proctree.h"
#include "zygote/proto.h"
#include "zygote/pyembed.h"
#include "zygote/spawn.h"
#include "zygote/zygote.h"

/* Why a run ends with ZEXIT_RETRY when the drain's grace runs out. */
#define STOPPED_TEXT                                                                       \
	"the server was stopped (or this generation retired) during the run, and the run " \
	"was killed when the grace period ended; run again"

/* The supervisor turned address randomisation off for us (and only us). */
static int stable_layout;

struct zygote_state z = { .sigfd = -1, .req_conn = -1 };

/*
 * Messages to the supervisor go through z.ctl: during warm-up its socket
 * blocks (there is no loop to flush a queue, and the supervisor always
 * reads); once serving it does not, and serve() flushes on POLLOUT.
 */
static void
send_ready(const char *text)
{
	if (!z.ctl || peer_send_text(z.ctl, PROTO_MSG_Z_READY, text) < 0)
		_exit(0); /* the supervisor is gone */
}

/* Warm-up progress for a `start` that waits; losing one is harmless. */
static void
send_progress(const char *text)
{
	if (!z.ctl || peer_send_text(z.ctl, PROTO_MSG_Z_PROGRESS, text) < 0)
		log_debug("cannot send warm-up progress to the supervisor");
}

/* In the learning run: the control socket is the zygote's alone. */
static void
learning_child_setup(void)
{
	peer_destroy(z.ctl);
	z.ctl = NULL;
	setproctitle("learning gen %d %s", z.generation, z.root);
}

/*
 * The learning run of a generation no other serves next to (the first;
 * one after a failed or stopped one), forked before Python starts when a
 * second CPU can run it next to the zygote's own imports: it is the
 * critical path of `start`, and a child forked from Python pays for every
 * page of the interpreter it touches (first accesses and copies, about 24
 * ms of a tiny project's import of pytest on this project's VMs), where
 * this one starts Python itself, next to the zygote doing the same. A
 * refresh (PYTEST_ZYGOTE_LEARN_FIRST) forks it from Python, sharing the
 * interpreter's pages: it runs next to a serving generation, where memory
 * matters more. A replay has none. Returns the read end of its report
 * pipe and sets *pid, or -1 (then warm-up forks it from Python).
 */
static int
learn_early(const char *python, pid_t *pid)
{
	const char *lf = getenv("PYTEST_ZYGOTE_LEARN_FIRST");
	const char *replay = getenv("PYTEST_ZYGOTE_REPLAY");
	const char *learned = getenv("PYTEST_ZYGOTE_LEARNED");
	cpu_set_t cpus;
	if ((lf && strcmp(lf, "1") == 0) ||
	    (replay && strcmp(replay, "1") == 0 && learned && *learned) ||
	    sched_getaffinity(0, sizeof(cpus), &cpus) < 0 || CPU_COUNT(&cpus) < 2)
		return -1;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid_t self = getpid();
	fflush(NULL);
	*pid = fork();
	if (*pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (*pid == 0) {
		close(p[0]);
		learning_child_setup();
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != self)
			_exit(70);
		char err[768];
		if (pyembed_init(python, zygote_pydir(), err, sizeof(err)) < 0)
			log_error("the learning run cannot start Python: %s", err);
		else
			pyembed_learn(z.root, p[1]);
		_exit(70); /* the zygote's warm-up says "learning run failed" */
	}
	close(p[1]);
	log_debug("generation %d: learning run %d started before Python", z.generation, (int)*pid);
	return p[0];
}

static void
send_done(int32_t id, int32_t code)
{
	int32_t p[2] = { id, code };
	if (!z.ctl || peer_send(z.ctl, PROTO_MSG_Z_DONE, p, sizeof(p), NULL, 0) < 0)
		log_debug("cannot report run %d to the supervisor", (int)id);
}

/* Tell a client something and finish it (no child was started). Its socket
 * does not block: what it cannot take now is lost, with the connection. */
static void
refuse_run(int conn, int32_t id, const char *text)
{
	struct peer *p = peer_create(conn);
	int32_t code = ZEXIT_INTERNAL;
	if (p) {
		peer_send_text(p, PROTO_MSG_ERROR, text);
		peer_send_i32(p, PROTO_MSG_EXIT, code);
		peer_destroy(p);
	}
	if (id >= 0)
		send_done(id, code);
}

/* The zygote's own descriptors, which no child may keep. */
int
own_fds(int *fds, int extra)
{
	int n = 0;
	fds[n++] = z.ctl ? peer_fd(z.ctl) : -1;
	fds[n++] = z.sigfd;
	fds[n++] = spare.sock;
	fds[n++] = spare.taken;
	fds[n++] = ahead.sock;
	fds[n++] = ahead.reads;
	for (int i = 0; i < z.nruns; i++) {
		fds[n++] = z.runs[i].conn ? peer_fd(z.runs[i].conn) : -1;
		fds[n++] = z.runs[i].learn;
	}
	if (extra >= 0)
		fds[n++] = extra;
	return n;
}

/* In a run child: what the run execs gets randomisation back, as under
 * plain pytest. */
void
child_randomise(void)
{
	if (stable_layout)
		personality((unsigned long)personality(0xffffffff) & ~ADDR_NO_RANDOMIZE);
}

/* A run child, from the fd layout to _exit. */
void __attribute__((noreturn)) child_main(struct proto_request *req, int conn, int learn,
					  const int *close_fds, int nclose, pid_t zygote)
{
	child_randomise();
	struct spawn_fd pipe_fd;
	if (spawn_child_setup(req, conn, learn, close_fds, nclose, zygote, z.supervisor, &pipe_fd) <
	    0)
		_exit(ZEXIT_INTERNAL);
	/*
	 * A subreaper: whatever the run starts stays below us even if it
	 * leaves the process group (setsid, a double fork), so when the run
	 * ends the zygote finds it among its own children and kills it.
	 */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	child_finish(pyembed_child_run(req, 0), &pipe_fd);
}

/*
 * Tell the zygote how long collection took and which pages we copied (after
 * LEARN_DONE, "the run got to its end"), then exit: the zygote reports our
 * exit status to the client. Only into the pipe we were given: a test may
 * have closed it and opened a file of its own on its number.
 */
void __attribute__((noreturn)) child_finish(int code, const struct spawn_fd *pipe_fd)
{
	if (!spawn_fd_same(pipe_fd)) {
		log_debug("the learning pipe (fd %d) was closed or replaced during the run; "
			  "not recording pages",
			  pipe_fd->fd);
		_exit(code);
	}
	char head[1 + sizeof(uint32_t)];
	uint32_t ms = (uint32_t)pyembed_collect_ms();
	head[0] = LEARN_DONE[0];
	memcpy(head + 1, &ms, sizeof(ms));
	ssize_t d = write(pipe_fd->fd, head, sizeof(head));
	(void)d;
	struct prefault_range *r;
	long n = prefault_record(&r);
	if (n > 0) {
		size_t len = (size_t)n * sizeof(*r);
		if (len > LEARN_PIPE_SIZE - sizeof(head))
			len = (LEARN_PIPE_SIZE - sizeof(head)) / sizeof(*r) * sizeof(*r);
		ssize_t w = write(pipe_fd->fd, r, len);
		(void)w;
	}
	_exit(code);
}

static void practice_done(void);
static int client_runs(void);

/* Start a run of req for the client on conn: in the spare, or in a new fork. */
void
start_run(struct proto_request *req, int32_t id, int conn)
{
	if (z.nruns >= MAX_RUNS) {
		refuse_run(conn, id, "too many runs at once; try again when some have finished");
		return;
	}
	/*
	 * A client's run right after `start` or a takeover comes while the
	 * practice run (a generation says ready before it) is still going:
	 * end it. It only teaches the spare which pages to prepare, this run
	 * teaches that better, and its copy-on-write faults next to the run
	 * made the run a third slower (the run itself takes the faults a
	 * spare would have).
	 */
	if (id >= 0)
		for (int i = 0; i < z.nruns; i++)
			if (z.runs[i].id < 0)
				kill(z.runs[i].pid, SIGKILL);
	int lp[2] = { -1, -1 };
	if (pipe2(lp, O_CLOEXEC | O_NONBLOCK) == 0)
		fcntl(lp[0], F_SETPIPE_SZ, LEARN_PIPE_SIZE);

	pid_t pid = id >= 0 ? ahead_take(req, id, conn, lp[1]) : 0;
	if (!pid)
		pid = spare_take(req, id, conn, lp[1],
				 id >= 0 && !client_runs() && spare_back_to_back());
	if (!pid) {
		int close_fds[OWN_FDS_MAX];
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
	if (id >= 0 && pid > 0)
		ahead_remember(req);
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
	r->conn = NULL;
	r->learn = lp[0];
	r->stopped = 0;
	if (id < 0) {
		/* The practice run has no client to hear from. */
		close(conn);
		return;
	}
	fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK);
	r->conn = peer_create(conn); /* NULL (out of memory): as if the client left */
	log_debug("run %d: child %d", (int)id, (int)pid);
}

/* Whether a client's run is going (the practice run is not one). */
static int
client_runs(void)
{
	for (int i = 0; i < z.nruns; i++)
		if (z.runs[i].id >= 0)
			return 1;
	return 0;
}

/*
 * The practice run is over (or never ran): fork the spare, then tell the
 * supervisor (status: preparing=0; what waits for a prepared generation,
 * such as a measurement of its runs, waits for this).
 */
static void
practice_done(void)
{
	static int told;
	learn_add_saved();
	/* With a client's run going (it ended the practice run), the spare is
	 * forked when that run ends: not next to it. */
	if (!client_runs())
		spare_fork();
	if (!told) {
		told = 1;
		if (!z.ctl || peer_send_i32(z.ctl, PROTO_MSG_Z_PREPARED, 1) < 0)
			log_debug("cannot tell the supervisor the practice run is over");
	}
}

/*
 * Start the practice run, once the supervisor says the generation we replaced
 * has exited (Z_GO), or after GO_WAIT_MS without a word. Not next to a
 * client's run, nor when a run ended meanwhile forked the spare: that run
 * taught the spare better.
 */
#define GO_WAIT_MS 3000

static void
practice_go(void)
{
	if (!z.await_go)
		return;
	z.await_go = 0;
	log_debug("generation %d: the practice run may start", z.generation);
	if (spare.disabled || client_runs() || spare.pid || z.draining || practice_run() < 0)
		practice_done();
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
	pid_t keep[MAX_RUNS + 2 + 64];
	int n = 0;
	for (int i = 0; i < z.nruns; i++)
		keep[n++] = z.runs[i].pid;
	if (spare.pid)
		keep[n++] = spare.pid;
	if (ahead.pid)
		keep[n++] = ahead.pid;
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
	peer_destroy(z.runs[i].conn);
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
		if (pid == ahead.pid) {
			ahead_reaped(st);
			continue;
		}
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
			int32_t code = WIFEXITED(st)     ? WEXITSTATUS(st)
				       : WIFSIGNALED(st) ? 128 + WTERMSIG(st)
							 : ZEXIT_INTERNAL;
			/* Whatever the run left in its process group goes with it. */
			kill(-pid, SIGKILL);
			/*
			 * The run's one EXIT: its wait status, which no test
			 * can forge (the child holds no descriptor to the
			 * client while Python runs).
			 */
			if (r->stopped && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
				code = ZEXIT_RETRY;
				if (r->conn)
					peer_send_text(r->conn, PROTO_MSG_ERROR, STOPPED_TEXT);
			}
			if (r->conn)
				peer_send_i32(r->conn, PROTO_MSG_EXIT, code);
			if (r->id >= 0)
				send_done(r->id, code);
			if (learn(r))
				spare_replace_practice();
			if (r->id < 0)
				practice_done();
			log_debug("run %d: child %d exited with %d", (int)r->id, (int)pid,
				  (int)code);
			int32_t r_id = r->id;
			if (r_id >= 0)
				spare.last_end = now_ms();
			run_remove(i);
			spare_taken_forget(); /* its spare never read it */
			/*
			 * The next spare is forked now, not when the run
			 * started: preparing it (thousands of page copies)
			 * next to a running child made that child's Python
			 * run a third slower on this kind of machine. Runs
			 * back to back are the exception (spare.c,
			 * BACK_TO_BACK_MS): there a spare has been forked
			 * during the run. Not when the practice run ends
			 * next to a client's run (which ended it): when that
			 * run ends.
			 */
			if (r_id >= 0 || !client_runs())
				spare_fork();
			ahead_fork();
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
	case SIGINT:
	case SIGTERM:
	case SIGHUP:
	case SIGQUIT:
	case SIGWINCH:
	case SIGUSR1:
	case SIGUSR2:
	case SIGCONT:
	case SIGTSTP:
	case SIGKILL: /* the client's last escalation of Ctrl-C */
		return 1;
	default:
		return 0;
	}
}

/* A message from a run's client: a signal to forward, or the end of it. */
static int
client_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	struct run *r = arg;
	int32_t sig;
	if (f->type != PROTO_MSG_SIGNAL || proto_get_i32(f->payload, f->len, &sig) < 0 ||
	    !forwardable(sig))
		return PEER_STOP; /* broke the protocol: gone */
	/* SIGTSTP cannot stop an orphaned group's leader usefully: stop it. */
	kill(-r->pid, sig == SIGTSTP ? SIGSTOP : sig);
	return 0;
}

static void
client_readable(struct run *r)
{
	if (peer_read(r->conn, client_frame, r) == 1)
		return;
	/* The client died or broke the protocol (it has no answer before the
	 * reap, which sends it): its run dies with it. */
	kill(-r->pid, SIGKILL);
	kill(r->pid, SIGKILL);
	peer_destroy(r->conn);
	r->conn = NULL;
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

/* One message on the control socket, with the descriptors that came with
 * it. PEER_STOP, with *(int *)arg set, when the zygote must exit. */
static int
ctl_frame(struct peer *peer, struct peer_frame *f, void *arg)
{
	const char *p = f->payload;
	if (z.in_request) {
		/* The decoder owns the descriptors from here. */
		int r = proto_decoder_feed(&z.dec, f->type, p, f->len, f->fds, f->nfds);
		f->nfds = 0;
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
	switch (f->type) {
	case PROTO_MSG_Z_RUN: {
		int32_t id;
		if (proto_get_i32(p, f->len, &id) < 0 || f->nfds != 1) {
			log_error("malformed run hand-over from the supervisor");
			*(int *)arg = 1;
			return PEER_STOP;
		}
		z.req_conn = f->fds[0];
		f->fds[0] = -1;
		z.req_id = id;
		z.in_request = 1;
		proto_decoder_init(&z.dec);
		return 0;
	}
	case PROTO_MSG_Z_DRAIN: {
		int32_t grace;
		if (proto_get_i32(p, f->len, &grace) < 0)
			grace = 5000;
		z.draining = 1;
		z.drain_deadline = now_ms() + grace;
		spare_drop();
		ahead_drop();
		return 0;
	}
	case PROTO_MSG_Z_GO:
		practice_go();
		return 0;
	case PROTO_MSG_Z_LEAN: {
		/*
		 * A new generation warms next to us: a refresh would hold two
		 * zygotes, the new one's learning run, our spare and our child
		 * collected ahead at once. The last two go until it is ready
		 * (then we drain) or failed (then we go on as before); runs
		 * meanwhile are plain forks.
		 */
		int32_t on;
		if (proto_get_i32(p, f->len, &on) < 0)
			on = 1;
		z.lean = on != 0;
		if (z.lean) {
			spare_drop();
			ahead_drop();
		} else if (!z.nruns) {
			spare_fork();
		}
		log_debug("%s", z.lean ? "a new generation warms: no spare until it is ready"
				       : "the new generation failed: spares again");
		return 0;
	}
	default:
		log_error("unexpected message %u from the supervisor", f->type);
		*(int *)arg = 1;
		return PEER_STOP;
	}
}

static void
kill_all_runs(void)
{
	spare_drop();
	ahead_drop();
	for (int i = 0; i < z.nruns; i++) {
		z.runs[i].stopped = 1;
		kill(-z.runs[i].pid, SIGKILL);
		kill(z.runs[i].pid, SIGKILL);
	}
}

/*
 * The supervisor is gone: nobody can reach us or reap what we leave, so kill
 * every process below us (runs, their process groups, whatever escaped
 * them, the spare), then exit.
 */
static void __attribute__((noreturn)) orphaned_exit(void)
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
		struct pollfd pfd[MAX_RUNS + 3];
		int n = 0;
		/* What waits to go to the supervisor goes on POLLOUT: a
		 * supervisor that does not read costs a queue, not a wait. */
		pfd[n] = (struct pollfd){ .fd = peer_fd(z.ctl),
					  .events = POLLIN |
						    (peer_wants_write(z.ctl) ? POLLOUT : 0) };
		n++;
		pfd[n] = (struct pollfd){ .fd = z.sigfd, .events = POLLIN };
		n++;
		for (int i = 0; i < z.nruns; i++) {
			struct peer *c = z.runs[i].conn;
			if (!c)
				continue;
			pfd[n] = (struct pollfd){ .fd = peer_fd(c),
						  .events = POLLIN |
							    (peer_wants_write(c) ? POLLOUT : 0) };
			n++;
		}
		int nconns = n, taken = -1;
		if (spare.taken >= 0) {
			taken = n;
			pfd[n++] = (struct pollfd){ .fd = spare.taken, .events = POLLIN };
		}
		int timeout = -1;
		if (z.await_go) {
			long long left = z.go_deadline - now_ms();
			if (left <= 0) {
				log_debug("no word from the supervisor: the practice run starts");
				practice_go();
			} else {
				timeout = (int)left;
			}
		}
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
		if (taken >= 0 && pfd[taken].revents)
			spare_taken_read();
		/* Clients first: a reap below may reorder z.runs. */
		for (int j = 2; j < nconns; j++) {
			if (!pfd[j].revents)
				continue;
			for (int i = 0; i < z.nruns; i++) {
				struct run *r = &z.runs[i];
				if (!r->conn || peer_fd(r->conn) != pfd[j].fd)
					continue;
				if (pfd[j].revents & POLLOUT)
					peer_flush(r->conn); /* a failure shows as end of file */
				if (pfd[j].revents & ~POLLOUT)
					client_readable(r);
			}
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
						ahead_drop();
					}
				}
			}
			reap();
		}
		if ((pfd[0].revents & POLLOUT) && peer_flush(z.ctl) < 0)
			orphaned_exit(); /* the supervisor is gone */
		if (pfd[0].revents & ~POLLOUT) {
			int fatal = 0;
			int r = peer_read(z.ctl, ctl_frame, &fatal);
			if (fatal || r == -EMSGSIZE)
				return 1;
			if (r <= 0)
				/* The supervisor is gone: nobody can reach us any more. */
				orphaned_exit();
		}
	}
}

/*
 * Leave a process that initialised Python: flush our stdio and _exit. No
 * Py_Finalize (it would run the project's atexit handlers and may hang), and
 * no exit(): what Python still holds is not a leak of ours to report (a
 * failed warm-up, say, leaves objects no longer reachable).
 */
static _Noreturn void
leave_python(int code)
{
	fflush(stdout);
	fflush(stderr);
	_exit(code);
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
	int c, ctl_fd = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			ctl_fd = atoi(optarg);
			break;
		case 'r':
			z.root = optarg;
			break;
		case 'p':
			python = optarg;
			break;
		case 'g':
			z.generation = atoi(optarg);
			break;
		case 's':
			z.supervisor = (pid_t)atoi(optarg);
			break;
		case 'P':
			pages_file = optarg;
			break;
		case 'L':
			stable_layout = 1;
			break;
		default:
			return ZEXIT_USAGE;
		}
	}
	if (ctl_fd < 0 || !z.root || z.supervisor <= 0) {
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
	z.ctl = peer_create(ctl_fd);
	if (!z.ctl)
		return ZEXIT_NOSTART;

	char text[1024], err[768], ver[32];
	int m = zygote_python_matches(python, ver, sizeof(ver));
	if (m <= 0) {
		if (m < 0)
			snprintf(text, sizeof(text),
				 "error=cannot run the interpreter '%s'; pass a working one with "
				 "--python\n",
				 python);
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
	pid_t learn_pid = 0;
	int learn_fd = learn_early(python, &learn_pid);
	if (pyembed_init(python, zygote_pydir(), err, sizeof(err)) < 0) {
		snprintf(text, sizeof(text), "error=%s\n", err);
		send_ready(text);
		leave_python(ZEXIT_NOSTART);
	}
	struct pyembed_warm w;
	pyembed_on_progress(send_progress);
	pyembed_on_learning_fork(learning_child_setup);
	int warm_failed =
		pyembed_warmup(z.root, learn_fd, (int)learn_pid, &w, err, sizeof(err)) < 0;
	pyembed_on_progress(NULL);
	if (warm_failed) {
		snprintf(text, sizeof(text), "error=%s\n", err);
		send_ready(text);
		leave_python(ZEXIT_NOSTART);
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
		leave_python(ZEXIT_NOSTART);
	}
	snprintf(text, sizeof(text),
		 "modules=%ld\nproject_files=%ld\nwarmup_ms=%ld\nthreads=%d\nthread_names=%s\n"
		 "status=%s\n",
		 w.modules, w.project_files, (long)(w.seconds * 1000 + 0.5), threads, names,
		 w.status);
	log_info("generation %d warm: %ld modules in %.2f s (%s)", z.generation, w.modules,
		 w.seconds, w.status);
	if (w.files && peer_send_text(z.ctl, PROTO_MSG_Z_FILES, w.files) < 0)
		log_warn("cannot send the watch list to the supervisor");
	free(w.files);
	const char *sp = getenv("PYTEST_ZYGOTE_SPARE");
	spare.disabled = sp && conf_parse_bool(sp) == 0;
	const char *ca = getenv("PYTEST_ZYGOTE_COLLECT_AHEAD_MS");
	ahead.min_ms = ca && *ca ? strtol(ca, NULL, 10) : 200;
	ahead.disabled = ahead.min_ms <= 0;
	/*
	 * Ready now, before the practice run, in every generation: the first
	 * one has `start` waiting; a later one takes over at once, and the
	 * generation it replaces (which holds no spare while this one warms)
	 * exits before this one's practice run and first spare (Z_GO says
	 * so), and a refresh never holds two zygotes and a practice run at
	 * once (its peak memory, docs/benchmarks.md). A run that comes
	 * meanwhile ends the practice run or goes before it and is a plain
	 * fork, as it was in the replaced generation.
	 */
	z.await_go = 1;
	z.go_deadline = now_ms() + GO_WAIT_MS;
	send_ready(text);
	pyembed_settle();
	fcntl(peer_fd(z.ctl), F_SETFL, fcntl(peer_fd(z.ctl), F_GETFL) | O_NONBLOCK);
	note_warm_children();
	/* The supervisor may have died while we were blocking SIGTERM. */
	if (getppid() != z.supervisor)
		orphaned_exit();
	leave_python(serve());
}
