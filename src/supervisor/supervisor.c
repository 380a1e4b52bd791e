/*
 * The supervisor's loop: socket, pid file, signals, timers, stopping and
 * reaping. One thread, one poll loop, signals through a signalfd. It must
 * never initialise Python, so that nothing a project does (a crashing C
 * extension, a hanging import) can take the socket down: the zygote runs in
 * its own process, and when it dies the supervisor starts a new one.
 *
 * The loop mediates between the other files of src/supervisor/, which share
 * internal.h: conn.c (clients), gen.c (generations), changes.c (what
 * changed), variant.c (other environments) and status.c (what it tells).
 *
 * Generations: the current one serves runs; after project files change and
 * the tree has been quiet for the settle time, a fresh one warms up in the
 * background and takes over when warm, and the old one drains. A change
 * outside the project (installed packages, the interpreter) or to pytest's
 * configuration means children cannot be trusted: runs wait for the fresh
 * generation, started once such changes settle (changes.c), and the client is
 * told why.
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
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/peer.h"
#include "zygote/proctree.h"
#include "zygote/proto.h"
#include "zygote/supervisor.h"
#include "zygote/watch.h"
#include "internal.h"

/* The one state, shared by the supervisor's files (internal.h). */
struct supervisor_state s = { .listen_fd = -1, .sigfd = -1, .cur = -1, .next = -1, .ext_fd = -1 };

/* Remove the socket, pages and pid file, answer who is left, and exit. */
static void
finish_and_exit(void)
{
	unlink(s.o->paths.sock);
	gen_unlink_pages();
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

/* Stopping: exit once the generations are gone and the variants answered. */
static void
maybe_finish(void)
{
	for (int i = 0; i < MAX_GENS; i++)
		if (s.gens[i].pid)
			return;
	if (s.nvariant_fds > 0 && now_ms() < s.variants_deadline)
		return;
	finish_and_exit();
}

/* Stop: close the socket, stop the variants, drain every generation. */
void
supervisor_begin_stop(int grace_ms)
{
	if (s.stopping)
		return;
	s.stopping = 1;
	s.grace_ms = grace_ms;
	close(s.listen_fd); /* new clients see "no zygote running" */
	s.listen_fd = -1;
	unlink(s.o->paths.sock);
	for (int i = 0; i < s.nvariants; i++)
		variant_stop(s.variants[i].id);
	s.nvariants = 0;
	s.variants_deadline = now_ms() + grace_ms + 10000;
	int alive = 0;
	for (int i = 0; i < MAX_GENS; i++) {
		struct gen *g = &s.gens[i];
		if (!g->pid)
			continue;
		alive++;
		int32_t grace = g->ready && !g->draining ? grace_ms : 0;
		g->draining = 1;
		gen_send_i32(g, PROTO_MSG_Z_DRAIN, grace);
	}
	if (!alive)
		maybe_finish();
}

/*
 * Our only children are zygote generations. Anything else was re-parented
 * to us (we are a subreaper) because a generation died or exited while its
 * runs, or what they started, were alive: kill it, whole subtrees.
 */
static void
kill_strays(void)
{
	pid_t keep[MAX_GENS];
	int n = 0;
	for (int i = 0; i < MAX_GENS; i++)
		if (s.gens[i].pid)
			keep[n++] = s.gens[i].pid;
	int k = proctree_kill_strays(keep, n);
	if (k > 0)
		log_info("killed %d processes left behind by a zygote generation", k);
}

/* Reap exited generations and kill the strays they left behind. */
static void
reap(void)
{
	int st, reaped = 0;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		reaped = 1;
		int idx = -1;
		for (int i = 0; i < MAX_GENS && idx < 0; i++)
			if (s.gens[i].pid == pid)
				idx = i;
		if (idx < 0)
			continue; /* an orphan we inherited as subreaper */
		struct gen *g = &s.gens[idx];
		int was_draining = g->draining;
		int was_warming = idx == s.next && !g->ready;
		/* Its runs ended with it (their clients saw the connection close). */
		s.running -= g->running;
		g->running = 0;
		peer_destroy(g->ctl);
		g->ctl = NULL;
		g->pid = 0;
		g->ready = 0;
		if (idx == s.next)
			s.next = -1;
		if (s.stopping) {
			maybe_finish();
			continue;
		}
		if (was_draining) {
			log_debug("generation %d drained", g->number);
			continue;
		}
		if (idx == s.cur)
			s.cur = -1;
		if (WIFSIGNALED(st))
			log_warn("zygote generation %d died of signal %d", g->number, WTERMSIG(st));
		else
			log_warn("zygote generation %d exited with status %d", g->number,
				 WEXITSTATUS(st));
		if (!s.ever_ready) {
			/* Never warmed up: starting failed. Say why and give up. */
			char v[900];
			if (!*gen_info_get(g->info, "error", v, sizeof(v)))
				snprintf(v, sizeof(v),
					 "the zygote exited during warm-up (status %d); see %.700s",
					 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
					 s.o->paths.log);
			status_report("error %s", v);
			supervisor_begin_stop(0);
			continue;
		}
		char v[900];
		if (was_warming && !*gen_info_get(g->info, "error", v, sizeof(v))) {
			/* It died warming up, without saying why (Z_READY error
			 * already told the runs that wait). */
			snprintf(v, sizeof(v), "the zygote %s during warm-up (%s %d)",
				 WIFSIGNALED(st) ? "was killed" : "exited",
				 WIFSIGNALED(st) ? "signal" : "status",
				 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			gen_warmup_failed(g, v);
		}
		/* Back off when generations keep dying; runs wait for the next one. */
		s.early_failures++;
		s.respawn_at = now_ms() + (s.early_failures > 3 ? 1000 : 0);
	}
	if (reaped)
		kill_strays();
	conn_dispatch_queue();
}

/* Create the listening socket (mode 0600); 0 or -errno. */
static int
setup_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s.o->paths.sock);
	s.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s.listen_fd < 0)
		return -errno;
	/* We hold the pid file lock, so a socket file here was left by a dead
	 * server: replace it (and what it learned). */
	unlink(s.o->paths.sock);
	gen_unlink_pages();
	mode_t old = umask(0177);
	int r = bind(s.listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(s.listen_fd, 128) < 0)
		return -errno;
	return 0;
}

int
supervisor_default_max_runs(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus < 1)
		cpus = 1;
	return cpus * 2 > 8 ? (int)(cpus * 2 > SUPERVISOR_MAX_RUNS_LIMIT ? SUPERVISOR_MAX_RUNS_LIMIT
									 : cpus * 2)
			    : 8;
}

int
supervisor_main(const struct supervisor_opts *o)
{
	s.o = o;
	s.start_ms = now_ms();
	s.last_run_ms = s.start_ms;
	s.is_variant = o->instance && strchr(o->instance, '~');
	pid_t other = 0;

	s.pfh = pidfile_open(o->paths.pid, 0600, &other);
	if (!s.pfh) {
		if (errno == EEXIST) {
			status_report("running pid=%d", (int)other);
			log_info("already running for %s (pid %d)", o->paths.root, (int)other);
			return 0;
		}
		log_error("cannot open pid file '%s': %s", o->paths.pid, strerror(errno));
		status_report("error cannot open pid file '%s': %s", o->paths.pid, strerror(errno));
		return ZEXIT_NOSTART;
	}
	int lockfd = pidfile_fileno(s.pfh);
	if (lockfd >= 0)
		fcntl(lockfd, F_SETFD, FD_CLOEXEC);
	int r = setup_socket();
	if (r < 0) {
		log_error("cannot listen on '%s': %s", o->paths.sock, strerror(-r));
		status_report("error cannot listen on '%s': %s", o->paths.sock, strerror(-r));
		pidfile_remove(s.pfh);
		return ZEXIT_NOSTART;
	}
	pidfile_write(s.pfh);
	if (s.is_variant)
		setproctitle("supervisor %s (for another environment, %s)", o->paths.root,
			     o->instance);
	else
		setproctitle("supervisor %s", o->paths.root);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	changes_watch_start();

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	s.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s.sigfd < 0 || gen_spawn(0) < 0) {
		status_report("error cannot start the zygote: %s", strerror(errno));
		unlink(o->paths.sock);
		gen_unlink_pages();
		pidfile_remove(s.pfh);
		return ZEXIT_NOSTART;
	}

	/*
	 * Every peer (a generation's control socket, a client's connection, a
	 * reply still going out) is polled for POLLOUT while it has output
	 * queued: nothing in this loop waits on a peer.
	 */
	enum { P_SIG, P_LISTEN, P_WATCH, P_EXT, P_GENS };
	for (;;) {
		struct pollfd pfd[P_GENS + MAX_GENS + MAX_VARIANTS + 2 * MAX_CONNS];
		int n = 0;
		long long now = now_ms();
		long long wake = -1; /* absolute ms, -1: none */
		pfd[n++] = (struct pollfd){ .fd = s.sigfd, .events = POLLIN };
		int accepting = s.listen_fd >= 0 && now >= s.accept_paused_until;
		pfd[n++] = (struct pollfd){ .fd = accepting ? s.listen_fd : -1, .events = POLLIN };
		if (!accepting && s.listen_fd >= 0)
			wake = s.accept_paused_until;
		pfd[n++] =
			(struct pollfd){ .fd = s.watch && s.poll_ms <= 0 ? watch_fd(s.watch) : -1,
					 .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = s.ext_fd, .events = POLLIN };
		for (int i = 0; i < MAX_GENS; i++) {
			struct peer *ctl = s.gens[i].pid ? s.gens[i].ctl : NULL;
			pfd[n++] = (struct pollfd){
				.fd = ctl ? peer_fd(ctl) : -1,
				.events = POLLIN | (ctl && peer_wants_write(ctl) ? POLLOUT : 0)
			};
		}
		int first_variant = n;
		for (int i = 0; i < s.nvariant_fds; i++)
			pfd[n++] = (struct pollfd){ .fd = s.variant_fds[i], .events = POLLIN };
		int first_conn = n;
		for (int i = 0; i < s.nconns; i++) {
			/* Parked requests are watched for hang-up and Ctrl-C. */
			struct peer *p = s.conns[i]->peer;
			pfd[n++] = (struct pollfd){ .fd = peer_fd(p),
						    .events = POLLIN |
							      (peer_wants_write(p) ? POLLOUT : 0) };
		}
		int first_linger = n;
		for (int k = 0; k < s.nlingering; k++)
			pfd[n++] = (struct pollfd){ .fd = peer_fd(s.lingering[k].peer),
						    .events = POLLOUT };

		/* Timers: respawn after a crash, refresh after the settle time, polling. */
		if (!s.stopping && s.cur < 0 && s.next < 0 && s.ever_ready) {
			if (now >= s.respawn_at) {
				gen_spawn(0);
				continue;
			}
			wake = wake < 0 || s.respawn_at < wake ? s.respawn_at : wake;
		}
		/* A variant refreshes only once a run came after the change (its
		 * children re-import meanwhile): several variants of an idle
		 * environment do not all warm up after every save. */
		if (!s.stopping && s.dirty_total > 0 && s.next < 0 && s.cur >= 0 &&
		    (!s.is_variant || s.last_run_ms >= s.last_change_ms)) {
			long long due = s.last_change_ms + s.settle_ms;
			if (now >= due) {
				log_info("files changed (%ld); warming a fresh generation",
					 s.dirty_total);
				gen_spawn(0);
				continue;
			}
			wake = wake < 0 || due < wake ? due : wake;
		}
		/* Runs wait for a fresh generation: start it once the changes settled. */
		if (changes_fresh_timer(now, &wake)) {
			conn_notice_fresh();
			continue;
		}
		if (s.watch && s.poll_ms > 0) {
			if (now >= s.next_poll_ms) {
				changes_watch_settle();
				s.next_poll_ms = now + s.poll_ms;
			}
			wake = wake < 0 || s.next_poll_ms < wake ? s.next_poll_ms : wake;
		}
		if (s.stopping && s.nvariant_fds > 0)
			wake = wake < 0 || s.variants_deadline < wake ? s.variants_deadline : wake;
		if (s.is_variant && !s.stopping && s.running == 0 && s.nconns == 0) {
			/* A zygote for another environment stops when unused. */
			long long due = s.last_run_ms + s.idle_ms;
			if (now >= due) {
				log_info(
					"no runs for %lld s: stopping (a zygote for another environment)",
					s.idle_ms / 1000);
				supervisor_begin_stop(0);
				continue;
			}
			wake = wake < 0 || due < wake ? due : wake;
		}
		if (s.queued > 0) {
			long long due = conn_notice_queued(now);
			if (due >= 0)
				wake = wake < 0 || due < wake ? due : wake;
		}
		if (s.nlingering > 0) {
			long long due = conn_linger_expire(now);
			if (due >= 0)
				wake = wake < 0 || due < wake ? due : wake;
		}
		int timeout = wake < 0 ? -1 : (int)(wake > now ? wake - now : 0);
		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			return 1;
		}
		/* Changes first, so a run that arrives with them sees them. */
		if (pfd[P_WATCH].revents & POLLIN)
			changes_watch_settle();
		if (pfd[P_EXT].revents & POLLIN)
			changes_ext_drain();
		/* Replies going out, then connections, by fd: the handlers
		 * reorder both arrays. */
		for (int j = first_linger; j < n; j++) {
			if (!pfd[j].revents)
				continue;
			for (int k = 0; k < s.nlingering; k++)
				if (peer_fd(s.lingering[k].peer) == pfd[j].fd) {
					conn_linger_writable(k);
					break;
				}
		}
		for (int j = first_conn; j < first_linger; j++) {
			if (!pfd[j].revents)
				continue;
			for (int i = 0; i < s.nconns; i++) {
				if (!s.conns[i]->peer || peer_fd(s.conns[i]->peer) != pfd[j].fd)
					continue;
				if ((pfd[j].revents & POLLOUT) && !conn_writable(i))
					break; /* the client is gone */
				if (!(pfd[j].revents & ~POLLOUT))
					break;
				if (s.conns[i]->waiting)
					conn_waiting_readable(i); /* Ctrl-C or hang-up, parked */
				else
					conn_readable(i);
				break;
			}
		}
		/* Variants we asked to stop: their answer (or hang-up) means gone. */
		for (int j = first_conn - 1; j >= first_variant; j--) {
			if (!pfd[j].revents)
				continue;
			for (int i = 0; i < s.nvariant_fds; i++)
				if (s.variant_fds[i] == pfd[j].fd) {
					close(s.variant_fds[i]);
					s.variant_fds[i] = s.variant_fds[--s.nvariant_fds];
					break;
				}
		}
		if (s.stopping && (s.nvariant_fds == 0 || now_ms() >= s.variants_deadline))
			maybe_finish();
		if (pfd[P_LISTEN].revents & POLLIN)
			conn_accept_clients();
		for (int i = 0; i < MAX_GENS; i++) {
			struct gen *g = &s.gens[i];
			short re = pfd[P_GENS + i].revents;
			if (!re || !g->pid || !g->ctl || peer_fd(g->ctl) != pfd[P_GENS + i].fd)
				continue;
			/* Read first: a zygote that exits closes its end (end of
			 * file, not a write error). */
			if (re & ~POLLOUT)
				gen_readable(g);
			if ((re & POLLOUT) && g->ctl)
				gen_writable(g);
		}
		if (pfd[P_SIG].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(s.sigfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGCHLD)
					continue;
				log_info("signal %d: stopping", (int)si.ssi_signo);
				supervisor_begin_stop(DEFAULT_GRACE_MS);
			}
			reap();
		}
	}
}
