/*
 * The supervisor: socket, pid file, generations, status. One thread, one poll
 * loop, signals through a signalfd. It must never initialise Python, so that
 * nothing a project does (a crashing C extension, a hanging import) can take
 * the socket down: the zygote runs in its own process, and when it dies the
 * supervisor starts a new one.
 */
#include <bsd/libutil.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "zygote/common.h"
#include "zygote/fdpass.h"
#include "zygote/log.h"
#include "zygote/proto.h"
#include "zygote/sandbox.h"
#include "zygote/spawn.h"
#include "zygote/supervisor.h"

#define MAX_CONNS 512
#define DEFAULT_GRACE_MS 5000

struct conn {
	int fd;
	struct fdpass_reader rd;
	struct proto_decoder dec;
	int waiting; /* request complete, parked until a generation is warm / stop ends */
};

struct gen {
	pid_t pid; /* 0 when none */
	int ctl;
	int number;
	int ready;
	struct fdpass_reader rd;
	char info[1024]; /* the Z_READY text */
	long long started_ms;
	double warmup_s;
};

static struct {
	const struct supervisor_opts *o;
	struct pidfh *pfh;
	int listen_fd;
	int sigfd;
	struct gen gen;
	int generations;
	struct conn *conns[MAX_CONNS];
	int nconns;
	long runs;
	int running;
	int32_t next_run;
	int stopping;
	int grace_ms;
	int ever_ready;
	int early_failures;
	long long start_ms;
	long long accept_paused_until;
	long long respawn_at;
} s = { .listen_fd = -1, .sigfd = -1 };

static long long
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One line to the `start` process that waits for us, then close the pipe. */
static void
report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
report(const char *fmt, ...)
{
	if (s.o->report_fd < 0)
		return;
	char line[1200];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(s.o->report_fd, line, (size_t)n);
	(void)w;
	close(s.o->report_fd);
	((struct supervisor_opts *)s.o)->report_fd = -1;
}

static const char *
info_get(const char *key, char *buf, size_t size)
{
	size_t kl = strlen(key);
	for (const char *p = s.gen.info; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t l = strcspn(p + kl + 1, "\n");
			if (l >= size)
				l = size - 1;
			memcpy(buf, p + kl + 1, l);
			buf[l] = '\0';
			return buf;
		}
	}
	snprintf(buf, size, "%s", "");
	return buf;
}

static long
rss_kb(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	long kb = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static const char *
state_name(void)
{
	if (s.stopping)
		return "stopping";
	if (s.gen.pid && s.gen.ready)
		return "ready";
	return s.ever_ready ? "restarting" : "warming";
}

static void
status_text(char *buf, size_t size)
{
	char v[256], t[256], n[256];
	int len = snprintf(buf, size,
		 "pid=%d\nroot=%s\npython=%s\nsocket=%s\nlog=%s\nuptime_s=%.1f\n"
		 "generation=%d\nzygote_pid=%d\nmodules=%s\nproject_files=%s\nwarmup_s=%.3f\n"
		 "runs=%ld\nrunning=%d\nrss_kb=%ld\nthreads=%s\nstate=%s\nsandbox=%s\n"
		 "version=%s\n",
		 (int)getpid(), s.o->paths.root, s.o->python, s.o->paths.sock, s.o->paths.log,
		 (double)(now_ms() - s.start_ms) / 1000.0, s.gen.number, (int)s.gen.pid,
		 info_get("modules", v, sizeof(v)), info_get("project_files", n, sizeof(n)),
		 s.gen.warmup_s, s.runs, s.running, s.gen.pid ? rss_kb(s.gen.pid) : 0,
		 info_get("threads", t, sizeof(t)), state_name(), sandbox_name(), PYZ_VERSION);
	if (len < 0 || (size_t)len >= size)
		log_warn("status text truncated");
}

/*
 * Close a client's socket after a reply. Unread bytes in our receive queue
 * would make the kernel reset the connection, and the client would see
 * ECONNRESET instead of our reply: read what is there first.
 */
static void
close_draining(int fd)
{
	char buf[4096];
	shutdown(fd, SHUT_WR);
	for (int k = 0; k < 64 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; k++)
		;
	close(fd);
}

static void
conn_close(int i)
{
	struct conn *c = s.conns[i];
	fdpass_reader_finish(&c->rd);
	proto_decoder_finish(&c->dec);
	if (c->fd >= 0)
		close_draining(c->fd);
	free(c);
	s.conns[i] = s.conns[--s.nconns];
}

static void
conn_reply(int i, uint32_t type, const char *text)
{
	/* The socket is non-blocking; a reply is small and the buffer empty. */
	fdpass_send_msg(s.conns[i]->fd, type, text, strlen(text) + 1);
	conn_close(i);
}

static void
reply_status(int i)
{
	char text[16384];
	status_text(text, sizeof(text));
	conn_reply(i, PROTO_MSG_STATUS, text);
}

/* Hand a complete run request to the current generation. */
static void
hand_over(int i)
{
	struct conn *c = s.conns[i];
	struct proto_buf b = { 0 };
	size_t fds_off;
	int32_t id = ++s.next_run;
	int r = proto_buf_put_i32(&b, PROTO_MSG_Z_RUN, id);
	if (r == 0)
		r = fdpass_send(s.gen.ctl, b.data, b.len, &c->fd, 1, 0);
	proto_buf_free(&b);
	if (r == 0)
		r = proto_request_encode(&b, &c->dec.req, &fds_off);
	if (r == 0)
		r = fdpass_send(s.gen.ctl, b.data, b.len, c->dec.req.fds, c->dec.req.nfds, fds_off);
	proto_buf_free(&b);
	if (r < 0) {
		log_warn("cannot hand run %d to the zygote: %s", (int)id, strerror(-r));
		conn_reply(i, PROTO_MSG_ERROR, "the zygote is not answering; it is being restarted");
		return;
	}
	s.runs++;
	s.running++;
	/* The zygote holds the connection and the fds now: a plain close, since
	 * shutdown() would act on the socket the zygote shares. */
	close(c->fd);
	c->fd = -1;
	conn_close(i);
}

static void begin_stop(int grace_ms);

static void
request_complete(int i)
{
	struct conn *c = s.conns[i];
	switch (c->dec.req.kind) {
	case PROTO_KIND_STATUS:
		reply_status(i);
		return;
	case PROTO_KIND_STOP:
		c->waiting = 1;
		begin_stop(c->dec.req.flags ? (int)c->dec.req.flags : DEFAULT_GRACE_MS);
		return;
	case PROTO_KIND_RUN:
		if (s.stopping) {
			conn_reply(i, PROTO_MSG_ERROR, "the server is stopping; start it again");
			return;
		}
		/* fall through */
	case PROTO_KIND_WAIT:
		if (s.gen.pid && s.gen.ready) {
			if (c->dec.req.kind == PROTO_KIND_RUN)
				hand_over(i);
			else
				reply_status(i);
			return;
		}
		c->waiting = 1;
		return;
	}
}

/* A generation became warm: serve what waited for it. */
static void
serve_waiting(void)
{
	for (int i = s.nconns - 1; i >= 0; i--) {
		struct conn *c = s.conns[i];
		if (!c->waiting || c->dec.req.kind == PROTO_KIND_STOP)
			continue;
		c->waiting = 0;
		request_complete(i);
	}
}

static void
conn_readable(int i)
{
	struct conn *c = s.conns[i];
	for (;;) {
		ssize_t n = fdpass_reader_fill(&c->rd, c->fd);
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			conn_close(i);
			return;
		}
		struct proto_hdr h;
		const char *p;
		int m;
		while ((m = fdpass_reader_next(&c->rd, &h, &p)) > 0) {
			if (c->dec.state == PROTO_ST_DONE)
				break; /* data after the request (e.g. an early SIGNAL): keep it */
			int fds[PROTO_MAX_FDS];
			int nfds = 0;
			if (h.type == PROTO_MSG_FDS && h.len == sizeof(uint32_t)) {
				uint32_t count;
				memcpy(&count, p, sizeof(count));
				if (count <= PROTO_MAX_FDS)
					nfds = fdpass_reader_take_fds(&c->rd, fds, (int)count);
			}
			int r = proto_decoder_feed(&c->dec, h.type, p, h.len, fds, nfds);
			if (r < 0) {
				log_info("closing a connection: %s", log_escape(c->dec.error));
				conn_reply(i, PROTO_MSG_ERROR, c->dec.error);
				return;
			}
			if (r == 1) {
				request_complete(i);
				return;
			}
		}
		if (m < 0) {
			conn_reply(i, PROTO_MSG_ERROR, "message too large");
			return;
		}
	}
}

static void
accept_clients(void)
{
	for (;;) {
		int fd = accept4(s.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Out of descriptors: pause accepting instead of spinning. */
				log_warn("out of file descriptors; not accepting for 100 ms");
				s.accept_paused_until = now_ms() + 100;
			}
			return;
		}
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
		    cred.uid != getuid()) {
			char msg[160];
			snprintf(msg, sizeof(msg),
				 "refused: this zygote belongs to uid %u; start your own with "
				 "'pytest-zygote start'",
				 (unsigned)getuid());
			fdpass_send_msg(fd, PROTO_MSG_ERROR, msg, strlen(msg) + 1);
			log_warn("refused a connection from uid %u", (unsigned)cred.uid);
			close_draining(fd);
			continue;
		}
		if (s.nconns >= MAX_CONNS) {
			const char *msg = "too many connections; try again shortly";
			fdpass_send_msg(fd, PROTO_MSG_ERROR, msg, strlen(msg) + 1);
			close_draining(fd);
			continue;
		}
		struct conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		fdpass_reader_init(&c->rd);
		proto_decoder_init(&c->dec);
		s.conns[s.nconns++] = c;
	}
}

static int
spawn_generation(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("socketpair: %s", strerror(errno));
		return -1;
	}
	int number = ++s.generations;
	pid_t sup = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		/* fd layout of a zygote: 0 /dev/null, 1 the log, 2 our stderr, 3 control. */
		spawn_reset_signals();
		int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
		int logfd = open(s.o->paths.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (devnull >= 0)
			dup2(devnull, 0);
		if (logfd >= 0)
			dup2(logfd, 1);
		dup2(sv[1], 3);
		char gen[16], supbuf[16];
		snprintf(gen, sizeof(gen), "%d", number);
		snprintf(supbuf, sizeof(supbuf), "%d", (int)sup);
		execl(s.o->self_exe, "pytest-zygote", "__zygote", "--ctl-fd", "3", "--root",
		      s.o->paths.root, "--python", s.o->python, "--generation", gen,
		      "--supervisor", supbuf, (char *)NULL);
		fprintf(stderr, "pytest-zygote: cannot run '%s': %s\n", s.o->self_exe,
			strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	fdpass_reader_finish(&s.gen.rd);
	memset(&s.gen, 0, sizeof(s.gen));
	s.gen.pid = pid;
	s.gen.ctl = sv[0];
	s.gen.number = number;
	s.gen.started_ms = now_ms();
	fdpass_reader_init(&s.gen.rd);
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	log_debug("generation %d: zygote pid %d", number, (int)pid);
	return 0;
}

static void
gen_ready(const char *text)
{
	snprintf(s.gen.info, sizeof(s.gen.info), "%s", text);
	char v[900];
	if (*info_get("error", v, sizeof(v))) {
		log_error("generation %d failed: %s", s.gen.number, v);
		if (!s.ever_ready) {
			report("error %s", v);
			return; /* it exits; reap() gives up */
		}
		/* A restart failed: tell whoever waits for it, then keep trying. */
		char msg[1000];
		snprintf(msg, sizeof(msg), "the zygote cannot start: %s", v);
		for (int i = s.nconns - 1; i >= 0; i--)
			if (s.conns[i]->waiting && s.conns[i]->dec.req.kind != PROTO_KIND_STOP)
				conn_reply(i, PROTO_MSG_ERROR, msg);
		return;
	}
	s.gen.ready = 1;
	s.ever_ready = 1;
	s.early_failures = 0;
	s.gen.warmup_s = atof(info_get("warmup_ms", v, sizeof(v))) / 1000.0;
	char mods[32], th[32], st[300];
	info_get("modules", mods, sizeof(mods));
	info_get("threads", th, sizeof(th));
	info_get("status", st, sizeof(st));
	log_info("generation %d ready: %s modules, warm-up %.2f s", s.gen.number, mods,
		 s.gen.warmup_s);
	report("ready pid=%d modules=%s warmup_s=%.2f threads=%s status=%s", (int)getpid(), mods,
	       s.gen.warmup_s, th, st);
	if (s.o->ready_fd >= 0) {
		ssize_t w = write(s.o->ready_fd, "\n", 1);
		(void)w;
		close(s.o->ready_fd);
		((struct supervisor_opts *)s.o)->ready_fd = -1;
	}
	serve_waiting();
}

static void
gen_readable(void)
{
	ssize_t n = fdpass_reader_fill(&s.gen.rd, s.gen.ctl);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		/* The zygote is exiting; SIGCHLD tells how. Stop polling it. */
		close(s.gen.ctl);
		s.gen.ctl = -1;
		s.gen.ready = 0;
		return;
	}
	struct proto_hdr h;
	const char *p;
	while (fdpass_reader_next(&s.gen.rd, &h, &p) > 0) {
		switch (h.type) {
		case PROTO_MSG_Z_READY:
			if (h.len > 0 && p[h.len - 1] == '\0')
				gen_ready(p);
			break;
		case PROTO_MSG_Z_DONE:
			if (s.running > 0)
				s.running--;
			break;
		case PROTO_MSG_Z_FILES:
			break;
		default:
			log_warn("unexpected message %u from the zygote", h.type);
		}
	}
}

static void
finish_and_exit(void)
{
	unlink(s.o->paths.sock);
	/* Gone before anyone hears "stopped", so a next `start` finds no lock. */
	pidfile_remove(s.pfh);
	s.pfh = NULL;
	char text[128];
	snprintf(text, sizeof(text), "stopped=1\npid=%d\n", (int)getpid());
	for (int i = s.nconns - 1; i >= 0; i--) {
		if (s.conns[i]->waiting && s.conns[i]->dec.req.kind == PROTO_KIND_STOP)
			conn_reply(i, PROTO_MSG_STATUS, text);
		else
			conn_reply(i, PROTO_MSG_ERROR, "the server stopped");
	}
	log_info("stopped");
	exit(0);
}

static void
begin_stop(int grace_ms)
{
	if (s.stopping)
		return;
	s.stopping = 1;
	s.grace_ms = grace_ms;
	close(s.listen_fd); /* new clients see "no zygote running" */
	s.listen_fd = -1;
	unlink(s.o->paths.sock);
	if (!s.gen.pid)
		finish_and_exit();
	if (s.gen.ctl >= 0) {
		int32_t g = grace_ms;
		fdpass_send_msg(s.gen.ctl, PROTO_MSG_Z_DRAIN, &g, sizeof(g));
	} else {
		kill(s.gen.pid, SIGKILL);
	}
}

static void
reap(void)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid != s.gen.pid)
			continue; /* an orphan we inherited as subreaper */
		int was_ready = s.gen.ready;
		if (s.gen.ctl >= 0)
			close(s.gen.ctl);
		s.gen.ctl = -1;
		s.gen.pid = 0;
		s.gen.ready = 0;
		s.running = 0;
		if (s.stopping)
			finish_and_exit();
		if (WIFSIGNALED(st))
			log_warn("zygote generation %d died of signal %d; starting a new one",
				 s.gen.number, WTERMSIG(st));
		else
			log_warn("zygote generation %d exited with status %d%s", s.gen.number,
				 WEXITSTATUS(st), was_ready ? "; starting a new one" : "");
		if (!s.ever_ready) {
			/* Never warmed up: starting failed. Say why and give up. */
			char v[900];
			if (!*info_get("error", v, sizeof(v)))
				snprintf(v, sizeof(v),
					 "the zygote exited during warm-up (status %d); see %.700s",
					 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
					 s.o->paths.log);
			report("error %s", v);
			begin_stop(0);
		}
		/* Back off when generations keep dying. */
		s.early_failures++;
		s.respawn_at = now_ms() + (s.early_failures > 3 ? 1000 : 0);
	}
}

static int
setup_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s.o->paths.sock);
	s.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s.listen_fd < 0)
		return -errno;
	/* We hold the pid file lock, so a socket file here was left by a dead
	 * server: replace it. */
	unlink(s.o->paths.sock);
	mode_t old = umask(0177);
	int r = bind(s.listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(s.listen_fd, 128) < 0)
		return -errno;
	return 0;
}

int
supervisor_main(const struct supervisor_opts *o)
{
	s.o = o;
	s.start_ms = now_ms();
	pid_t other = 0;

	s.pfh = pidfile_open(o->paths.pid, 0600, &other);
	if (!s.pfh) {
		if (errno == EEXIST) {
			report("running pid=%d", (int)other);
			log_info("already running for %s (pid %d)", o->paths.root, (int)other);
			return 0;
		}
		log_error("cannot open pid file '%s': %s", o->paths.pid, strerror(errno));
		report("error cannot open pid file '%s': %s", o->paths.pid, strerror(errno));
		return ZEXIT_NOSTART;
	}
	int lockfd = pidfile_fileno(s.pfh);
	if (lockfd >= 0)
		fcntl(lockfd, F_SETFD, FD_CLOEXEC);
	int r = setup_socket();
	if (r < 0) {
		log_error("cannot listen on '%s': %s", o->paths.sock, strerror(-r));
		report("error cannot listen on '%s': %s", o->paths.sock, strerror(-r));
		pidfile_remove(s.pfh);
		return ZEXIT_NOSTART;
	}
	pidfile_write(s.pfh);
	setproctitle("supervisor %s", o->paths.root);
	prctl(PR_SET_CHILD_SUBREAPER, 1);

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	s.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s.sigfd < 0 || spawn_generation() < 0) {
		report("error cannot start the zygote: %s", strerror(errno));
		unlink(o->paths.sock);
		pidfile_remove(s.pfh);
		return ZEXIT_NOSTART;
	}

	for (;;) {
		struct pollfd pfd[MAX_CONNS + 3];
		int n = 0;
		long long now = now_ms();
		int timeout = -1;
		pfd[n++] = (struct pollfd){ .fd = s.sigfd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = s.gen.ctl, .events = POLLIN };
		int accepting = s.listen_fd >= 0 && now >= s.accept_paused_until;
		pfd[n++] = (struct pollfd){ .fd = accepting ? s.listen_fd : -1, .events = POLLIN };
		if (!accepting && s.listen_fd >= 0)
			timeout = (int)(s.accept_paused_until - now);
		for (int i = 0; i < s.nconns; i++)
			/* Parked requests are watched for hang-up only. */
			pfd[n++] = (struct pollfd){ .fd = s.conns[i]->fd,
						    .events = s.conns[i]->waiting ? 0 : POLLIN };
		if (!s.gen.pid && !s.stopping) {
			long long left = s.respawn_at - now;
			if (left <= 0) {
				spawn_generation();
				continue;
			}
			timeout = (int)left;
		}
		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			return 1;
		}
		/* Connections first, by fd, since the handlers reorder s.conns. */
		for (int j = 3; j < n; j++) {
			if (!pfd[j].revents)
				continue;
			for (int i = 0; i < s.nconns; i++) {
				if (s.conns[i]->fd != pfd[j].fd)
					continue;
				if (s.conns[i]->waiting)
					conn_close(i); /* hung up while parked */
				else
					conn_readable(i);
				break;
			}
		}
		if (pfd[2].revents & POLLIN)
			accept_clients();
		if (pfd[1].revents)
			gen_readable();
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(s.sigfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGCHLD)
					continue;
				log_info("signal %d: stopping", (int)si.ssi_signo);
				begin_stop(DEFAULT_GRACE_MS);
			}
			reap();
		}
	}
}
