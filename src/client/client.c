/*
 * The client: sends a request (argv, cwd, environment, and its own stdin,
 * stdout and stderr as descriptors), then relays terminal signals to the run
 * until the server reports its exit code. It never reads or writes the test
 * output itself: the child writes straight to our terminal. It talks through
 * the same peer layer as the server (peer.h), on a blocking socket: a
 * client has nothing to do but wait for its server.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "build-id.h"
#include "config.h"
#include "zygote/client.h"
#include "zygote/common.h"
#include "zygote/peer.h"
#include "zygote/log.h"
#include "zygote/proto.h"

extern char **environ;

char client_redirect[1024 + 4096];

/*
 * The server we may talk to is one of our own uid listening in our private
 * runtime directory. The directory is checked on an open descriptor (no
 * symlink, ours, mode 0700) and the socket is reached through that
 * descriptor, /proc/self/fd/N/NAME, so a parent directory renamed between
 * the check and the connect cannot send us to another directory; then the
 * listening process's uid (SO_PEERCRED) must be ours. Both before anything
 * is sent: the request carries the environment and the terminal.
 */
int
client_connect(const struct zpaths *p)
{
	char err[PATHS_ERR_MAX];
	_cleanup_close_ int dfd = paths_open_dir(p->dir, getuid(), err, sizeof(err));
	if (dfd == -EPERM || dfd == -ENOTDIR) {
		log_error("%s", err);
		return CLIENT_UNTRUSTED;
	}
	if (dfd < 0)
		return dfd;
	const char *name = strrchr(p->sock, '/');
	name = name ? name + 1 : p->sock;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dfd, name) >=
	    sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (cred.uid != geteuid()) {
		log_error(
			"the server at %s runs as uid %u, not as you (uid %u): refusing to send "
			"it anything; a server of yours listens in a directory only you can "
			"write: check %s, or set PYTEST_ZYGOTE_RUNTIME_DIR to a private directory",
			p->sock, (unsigned)cred.uid, (unsigned)geteuid(), p->dir);
		return CLIENT_UNTRUSTED;
	}
	return steal_fd(&fd);
}

char *
client_status_get(const char *text, const char *key)
{
	size_t size = strlen(text) + 1;
	char *buf = malloc(size);
	if (buf && !proto_kv_get(text, key, buf, size)) {
		free(buf);
		buf = NULL;
	}
	return buf;
}

/* The first message of a reply: its type and text. */
struct reply {
	int got;
	uint32_t type;
	char *text;
};

static int
reply_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	struct reply *rep = arg;
	rep->got = 1;
	rep->type = f->type;
	rep->text = strndup(f->payload, f->len);
	return PEER_STOP;
}

int
client_request(const struct zpaths *p, uint32_t kind, uint32_t flags, char **ret_text)
{
	int fd = client_connect(p);
	if (fd < 0)
		return fd;
	struct peer *peer = peer_create(fd);
	if (!peer)
		return -ENOMEM;
	struct proto_request req = { .kind = kind, .flags = flags };
	struct reply rep = { 0 };
	int r = peer_send_request(peer, -1, NULL, 0, &req);
	while (r == 0 && !rep.got) {
		int m = peer_read(peer, reply_frame, &rep);
		if (m <= 0)
			r = m < 0 ? m : -ECONNRESET;
	}
	peer_destroy(peer);
	if (r == 0 && rep.type != PROTO_MSG_STATUS && rep.type != PROTO_MSG_ERROR)
		r = -ECONNRESET;
	else if (r == 0 && !rep.text)
		r = -ENOMEM;
	else if (r == 0)
		r = rep.type == PROTO_MSG_STATUS ? 0 : -EPROTO;
	if (r == 0 || r == -EPROTO)
		*ret_text = steal_ptr(&rep.text);
	free(rep.text);
	return r;
}

/*
 * Make sure 0, 1 and 2 are open, so nothing of ours lands there and the
 * child gets three valid fds. The ones that were closed at the first call
 * are returned, every time, as PROTO_FLAG_CLOSED_FD0 bits: the child closes
 * them again (plain pytest with stdout closed has sys.stdout None, not
 * /dev/null).
 */
uint32_t
client_fill_stdio(void)
{
	static int done;
	static uint32_t closed;
	if (done)
		return closed;
	done = 1;
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		closed |= PROTO_FLAG_CLOSED_FD0 << fd;
		int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
		if (n >= 0 && n != fd) {
			dup2(n, fd);
			close(n);
		}
	}
	return closed;
}

static int
send_signal(struct peer *peer, int sig)
{
	return peer_send_i32(peer, PROTO_MSG_SIGNAL, sig);
}

#define DEFAULT_INTERRUPT_TIMEOUT_MS 10000
#define TERM_TO_KILL_MS 2000

/* PYTEST_ZYGOTE_INTERRUPT_TIMEOUT: seconds from the first Ctrl-C to SIGTERM (0: never). */
static int
interrupt_timeout_ms(void)
{
	const char *v = getenv("PYTEST_ZYGOTE_INTERRUPT_TIMEOUT");
	char *end;
	if (!v || !*v)
		return DEFAULT_INTERRUPT_TIMEOUT_MS;
	double sec = strtod(v, &end);
	if (*end || sec < 0 || sec > 86400) {
		log_warn("PYTEST_ZYGOTE_INTERRUPT_TIMEOUT=%s is not seconds from 0 to 86400; "
			 "using %d",
			 log_escape(v), DEFAULT_INTERRUPT_TIMEOUT_MS / 1000);
		return DEFAULT_INTERRUPT_TIMEOUT_MS;
	}
	return (int)(sec * 1000);
}

/*
 * Ctrl-C, escalating. The first is forwarded as SIGINT (pytest stops and
 * prints its summary). If the run is still going at the second Ctrl-C, or
 * PYTEST_ZYGOTE_INTERRUPT_TIMEOUT seconds after the first, its process group
 * gets SIGTERM; at the third, or 2 s after SIGTERM, SIGKILL. Each step past
 * the first prints one line on stderr.
 */
struct interrupt {
	int stage;         /* 0 none, 1 SIGINT sent, 2 SIGTERM sent, 3 SIGKILL sent */
	long long next_ms; /* when to escalate on our own, or -1 */
	int timeout_ms;
};

static void
interrupt_step(struct interrupt *in, struct peer *peer, int by_timer)
{
	switch (in->stage) {
	case 0:
		send_signal(peer, SIGINT);
		in->next_ms = in->timeout_ms > 0 ? now_ms() + in->timeout_ms : -1;
		break;
	case 1:
		if (by_timer)
			log_info("the run did not stop within %.3g s of Ctrl-C; sending it SIGTERM "
				 "(SIGKILL in %d s)",
				 in->timeout_ms / 1000.0, TERM_TO_KILL_MS / 1000);
		else
			log_info("Ctrl-C again: sending the run SIGTERM (SIGKILL in %d s)",
				 TERM_TO_KILL_MS / 1000);
		send_signal(peer, SIGTERM);
		in->next_ms = now_ms() + TERM_TO_KILL_MS;
		break;
	case 2:
		log_info("%s: killing the run (SIGKILL)",
			 by_timer ? "the run did not stop after SIGTERM" : "Ctrl-C again");
		send_signal(peer, SIGKILL);
		in->next_ms = -1;
		break;
	default:
		return;
	}
	in->stage++;
}

/* Where a run is, from the client's side. */
struct run_state {
	int code; /* -1 until EXIT */
	int error_seen;
	int redirected;
	int mismatch;           /* the server is another build: it ran nothing */
	char server_build[160]; /* MISMATCH's text; "" from a server older than builds */
};

/* One message from the server during a run. */
static int
run_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	struct run_state *st = arg;
	int32_t v;
	switch (f->type) {
	case PROTO_MSG_EXIT:
		if (proto_get_i32(f->payload, f->len, &v) == 0)
			st->code = v & 0xff;
		break;
	case PROTO_MSG_MISMATCH:
		snprintf(st->server_build, sizeof(st->server_build), "%.*s", (int)f->len,
			 f->payload);
		st->mismatch = 1;
		break;
	case PROTO_MSG_ERROR:
		/* A server from before build ids refuses a version-2 HELLO so. */
		if (f->len >= sizeof(PROTO_VERSION_ERROR) - 1 &&
		    memcmp(f->payload, PROTO_VERSION_ERROR, sizeof(PROTO_VERSION_ERROR) - 1) == 0) {
			st->mismatch = 1;
			break;
		}
		log_error("%.*s", (int)f->len, f->payload);
		st->error_seen = 1;
		break;
	case PROTO_MSG_NOTICE:
		log_info("%.*s", (int)f->len, f->payload);
		break;
	case PROTO_MSG_REDIRECT:
		/* Before the run started: nothing of it happened. */
		snprintf(client_redirect, sizeof(client_redirect), "%.*s", (int)f->len, f->payload);
		st->redirected = 1;
		break;
	default:
		break;
	}
	return st->code >= 0 || st->redirected || st->mismatch ? PEER_STOP : 0;
}

/* Say that the server at p is another build, and how to replace it. */
static int
mismatch(const struct zpaths *p, const char *text)
{
	char version[64], build[PROTO_BUILD_MAX + 1], proto[16], theirs[200];
	proto_kv_get(text, "version", version, sizeof(version));
	proto_kv_get(text, "build", build, sizeof(build));
	proto_kv_get(text, "protocol", proto, sizeof(proto));
	if (*build)
		snprintf(theirs, sizeof(theirs), "%s build %s, protocol %s", version, build, proto);
	else
		snprintf(theirs, sizeof(theirs), "an older build, from before protocol %u",
			 PROTO_VERSION);
	log_error("the server for %s is another build of pytest-zygote (server: %s; this "
		  "client: %s build %s, protocol %u); nothing was run. Replace the server with "
		  "this build: pytest-zygote restart --root %s",
		  p->root, theirs, PYZ_VERSION, PYZ_BUILD_ID, PROTO_VERSION, p->root);
	return ZEXIT_MISMATCH;
}

int
client_run(const struct zpaths *p, uint32_t flags, int nargs, char **args)
{
	return client_run_hooked(p, flags, nargs, args, NULL);
}

int
client_run_hooked(const struct zpaths *p, uint32_t flags, int nargs, char **args,
		  struct client_run_hook *hook)
{
	uint32_t closed = client_fill_stdio();
	int fd = client_connect(p);
	if (fd < 0)
		return fd; /* the caller says "no zygote running" or starts one */
	_cleanup_peer_ struct peer *peer = peer_create(fd);
	if (!peer)
		return ZEXIT_INTERNAL;

	/*
	 * Terminal signals are ours (the child is in its own session): take
	 * them through a signalfd and forward them. Blocked before the request
	 * goes out, so none is lost in between.
	 */
	static const int forwarded[] = { SIGINT,  SIGTERM, SIGHUP,  SIGQUIT, SIGWINCH,
					 SIGUSR1, SIGUSR2, SIGTSTP, SIGCONT };
	sigset_t set, old;
	sigemptyset(&set);
	for (size_t i = 0; i < ARRAY_SIZE(forwarded); i++)
		sigaddset(&set, forwarded[i]);
	sigprocmask(SIG_BLOCK, &set, &old);
	signal(SIGPIPE, SIG_IGN);
	_cleanup_close_ int sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);

	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd))) {
		log_error("cannot get the current directory: %s%s", strerror(errno),
			  errno == ENOENT ? " (it was deleted; cd to a directory that exists)"
					  : "");
		return ZEXIT_USAGE;
	}
	char **argv = calloc((size_t)nargs + 1, sizeof(char *));
	if (!argv)
		return ZEXIT_INTERNAL;
	for (int i = 0; i < nargs; i++)
		argv[i] = args[i];
	struct proto_request req = {
		.kind = PROTO_KIND_RUN,
		.flags = flags | closed,
		.argv = argv,
		.cwd = cwd,
		.env = environ,
		.fds = { 0, 1, 2 },
		.nfds = 3,
	};
	int r = peer_send_request(peer, -1, NULL, 0, &req);
	free(argv);
	/* A server that refuses the run (another build) may close before it has
	 * read all of it: its answer is still there to read. */
	int send_error = r == -EPIPE || r == -ECONNRESET ? r : 0;
	if (r < 0 && !send_error) {
		log_error("cannot send the request: %s%s", strerror(-r),
			  r == -E2BIG ? " (arguments or environment over 1 MiB)" : "");
		return ZEXIT_INTERNAL;
	}

	struct run_state st = { .code = -1 };
	struct interrupt intr = { .next_ms = -1, .timeout_ms = interrupt_timeout_ms() };
	while (st.code < 0 && !st.redirected && !st.mismatch) {
		struct pollfd pfd[3] = {
			{ .fd = fd, .events = POLLIN },
			{ .fd = sigfd, .events = POLLIN },
			{ .fd = hook ? hook->fd : -1, .events = POLLIN },
		};
		int timeout = -1;
		if (intr.next_ms >= 0) {
			long long left = intr.next_ms - now_ms();
			timeout = left > 0 ? (int)left : 0;
		}
		int k = poll(pfd, 3, timeout);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (k == 0) {
			interrupt_step(&intr, peer, 1);
			continue;
		}
		if (pfd[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
				int sig = (int)si.ssi_signo;
				if (hook && (sig == SIGTERM || sig == SIGHUP))
					hook->quit_signal = sig;
				if (sig == SIGINT) {
					interrupt_step(&intr, peer, 0);
					continue;
				}
				send_signal(peer, sig);
				if (sig == SIGTSTP) {
					/* Stop ourselves too, as the shell expects; SIGCONT
					 * on `fg` is forwarded in turn. */
					raise(SIGSTOP);
				}
			}
		}
		if (pfd[2].revents) {
			/* watch: a change came; cancel the run as Ctrl-C does (once:
			 * a run that does not stop escalates on the timer). */
			int cancel = hook->readable(hook->arg);
			if (cancel < 0)
				hook->fd = -1; /* its end is seen after the run */
			if (cancel > 0 && intr.stage == 0) {
				hook->cancelled = 1;
				interrupt_step(&intr, peer, 0);
			}
		}
		if (!pfd[0].revents)
			continue;
		int m = peer_read(peer, run_frame, &st);
		if (m <= 0 && st.mismatch)
			break;
		if (m <= 0) {
			/* A status round trip, not a connect: a supervisor killed a
			 * moment ago may still have its socket open while its
			 * zygote already dropped the run. */
			char *alive = NULL;
			int answers =
				st.error_seen || send_error
					? 0
					: client_request(p, PROTO_KIND_STATUS, 0, &alive) == 0;
			free(alive);
			if (send_error && !st.error_seen) {
				log_error("cannot send the request: %s", strerror(-send_error));
				st.code = ZEXIT_INTERNAL;
			} else if (answers) {
				/* No exit report, and the server still answers: the
				 * zygote died, and the server starts a new one. */
				log_error("the zygote went away during the run (it is being "
					  "restarted); run again");
				st.code = ZEXIT_RETRY;
			} else if (!st.error_seen) {
				/* Nobody listens any more: the server itself is gone (it
				 * closed its socket before its zygotes heard of it). */
				log_error("the server went away during the run (it was stopped or "
					  "killed), and no zygote is running for %s now; start one "
					  "with: pytest-zygote start --root %s (or use run "
					  "--start-if-needed), then run again",
					  p->root, p->root);
				st.code = ZEXIT_NOSERVER;
			} else {
				st.code = ZEXIT_INTERNAL;
			}
			break;
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (st.mismatch)
		return mismatch(p, st.server_build);
	return st.redirected ? CLIENT_REDIRECT : st.code;
}
