/*
 * The client: sends a request (argv, cwd, environment, and its own stdin,
 * stdout and stderr as descriptors), then relays terminal signals to the run
 * until the server reports its exit code. It never reads or writes the test
 * output itself: the child writes straight to our terminal.
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

#include "zygote/client.h"
#include "zygote/common.h"
#include "zygote/fdpass.h"
#include "zygote/log.h"
#include "zygote/proto.h"

extern char **environ;

char client_redirect[1024 + 4096];

int
client_connect(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(sock) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
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

int
client_request(const struct zpaths *p, uint32_t kind, uint32_t flags, char **ret_text)
{
	_cleanup_close_ int fd = client_connect(p->sock);
	if (fd < 0)
		return fd;
	struct proto_request req = { .kind = kind, .flags = flags };
	struct proto_buf b = { 0 };
	int r = proto_request_encode(&b, &req, NULL);
	if (r == 0)
		r = fdpass_send(fd, b.data, b.len, NULL, 0, 0);
	proto_buf_free(&b);
	if (r < 0)
		return r;
	struct fdpass_reader rd;
	fdpass_reader_init(&rd);
	struct proto_hdr h;
	const char *payload;
	r = fdpass_read_msg(&rd, fd, &h, &payload);
	if (r == 1 && (h.type == PROTO_MSG_STATUS || h.type == PROTO_MSG_ERROR)) {
		*ret_text = strndup(payload, h.len);
		r = h.type == PROTO_MSG_STATUS ? 0 : -EPROTO;
	} else if (r >= 0) {
		r = -ECONNRESET;
	}
	fdpass_reader_finish(&rd);
	return r;
}

/* Make sure 0, 1 and 2 are open, so the child gets three valid fds. */
static void
ensure_stdio(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
		if (n >= 0 && n != fd) {
			dup2(n, fd);
			close(n);
		}
	}
}

static int
send_signal(int fd, int sig)
{
	int32_t v = sig;
	return fdpass_send_msg(fd, PROTO_MSG_SIGNAL, &v, sizeof(v));
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
interrupt_step(struct interrupt *in, int fd, int by_timer)
{
	switch (in->stage) {
	case 0:
		send_signal(fd, SIGINT);
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
		send_signal(fd, SIGTERM);
		in->next_ms = now_ms() + TERM_TO_KILL_MS;
		break;
	case 2:
		log_info("%s: killing the run (SIGKILL)",
			 by_timer ? "the run did not stop after SIGTERM" : "Ctrl-C again");
		send_signal(fd, SIGKILL);
		in->next_ms = -1;
		break;
	default:
		return;
	}
	in->stage++;
}

int
client_run(const struct zpaths *p, int nargs, char **args)
{
	ensure_stdio();
	_cleanup_close_ int fd = client_connect(p->sock);
	if (fd < 0)
		return fd; /* the caller says "no zygote running" or starts one */

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
		.argv = argv,
		.cwd = cwd,
		.env = environ,
		.fds = { 0, 1, 2 },
		.nfds = 3,
	};
	struct proto_buf b = { 0 };
	size_t fds_off;
	int r = proto_request_encode(&b, &req, &fds_off);
	free(argv);
	if (r == 0)
		r = fdpass_send(fd, b.data, b.len, req.fds, 3, fds_off);
	proto_buf_free(&b);
	if (r < 0) {
		log_error("cannot send the request: %s%s", strerror(-r),
			  r == -E2BIG ? " (arguments or environment over 1 MiB)" : "");
		return ZEXIT_INTERNAL;
	}

	struct fdpass_reader rd;
	fdpass_reader_init(&rd);
	int code = -1;
	int error_seen = 0;
	struct interrupt intr = { .next_ms = -1, .timeout_ms = interrupt_timeout_ms() };
	int redirected = 0;
	while (code < 0 && !redirected) {
		struct pollfd pfd[2] = {
			{ .fd = fd, .events = POLLIN },
			{ .fd = sigfd, .events = POLLIN },
		};
		int timeout = -1;
		if (intr.next_ms >= 0) {
			long long left = intr.next_ms - now_ms();
			timeout = left > 0 ? (int)left : 0;
		}
		int k = poll(pfd, 2, timeout);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (k == 0) {
			interrupt_step(&intr, fd, 1);
			continue;
		}
		if (pfd[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
				int sig = (int)si.ssi_signo;
				if (sig == SIGINT) {
					interrupt_step(&intr, fd, 0);
					continue;
				}
				send_signal(fd, sig);
				if (sig == SIGTSTP) {
					/* Stop ourselves too, as the shell expects; SIGCONT
					 * on `fg` is forwarded in turn. */
					raise(SIGSTOP);
				}
			}
		}
		if (!pfd[0].revents)
			continue;
		ssize_t n = fdpass_reader_fill(&rd, fd);
		if (n == 0 || (n < 0 && n != -EAGAIN)) {
			if (!error_seen) {
				/* No exit report: the zygote died (the server starts a new one). */
				log_error("the zygote went away during the run (it is being "
					  "restarted); run again");
				code = ZEXIT_RETRY;
			} else {
				code = ZEXIT_INTERNAL;
			}
			break;
		}
		struct proto_hdr h;
		const char *payload;
		while (code < 0 && !redirected && fdpass_reader_next(&rd, &h, &payload) > 0) {
			int32_t v;
			switch (h.type) {
			case PROTO_MSG_EXIT:
				if (proto_get_i32(payload, h.len, &v) == 0)
					code = v & 0xff;
				break;
			case PROTO_MSG_ERROR:
				log_error("%.*s", (int)h.len, payload);
				error_seen = 1;
				break;
			case PROTO_MSG_NOTICE:
				log_info("%.*s", (int)h.len, payload);
				break;
			case PROTO_MSG_REDIRECT:
				/* Before the run started: nothing of it happened. */
				snprintf(client_redirect, sizeof(client_redirect), "%.*s",
					 (int)h.len, payload);
				redirected = 1;
				break;
			default:
				break;
			}
		}
	}
	fdpass_reader_finish(&rd);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return redirected ? CLIENT_REDIRECT : code;
}
