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
#include <sys/inotify.h>
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
struct supervisor_state s = {
	.listen_fd = -1, .sigfd = -1, .cur = -1, .next = -1, .ext_fd = -1, .rt_dirfd = -1
};

/*
 * Ownership of our files in the runtime directory. A logout or a /tmp
 * cleaner may delete the directory under us, and a next `start` may create
 * a new one at the same path with a new server's socket and pid file of the
 * same names. We remember the inode of each file we created and unlink a
 * name only while it is still that inode, relative to the directory we
 * opened at start (a new directory at the same path is another inode: its
 * files are never touched). Between the fstatat and the unlinkat another
 * server could replace the file; that window is two system calls long, and
 * only a server that took the pid lock, which we hold until after the
 * unlink, could do so.
 */
static struct stat own_dir, own_pid, own_sock;
static int rt_inotify = -1;        /* the runtime directory's deletions and renames */
static long long rt_check_at = -1; /* when to check who owns our names; -1: not due */
/* A short wait after an event: `rm -rf` deletes our socket a moment before
 * the pid file and the directory, and re-creating the socket meanwhile would
 * make it fail ("Directory not empty"). */
#define RT_SETTLE_MS 300
/* Without inotify (no instance left) the check polls. */
#define RT_POLL_MS 5000

static int
same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* The last component of one of our paths (all are DIR/NAME.SUFFIX). */
static const char *
base_name(const char *path)
{
	return strrchr(path, '/') + 1;
}

/* Unlink path if it is still the file st describes: 0, -ESTALE when it is
 * another file now, or -errno (-ENOENT: gone already). */
static int
unlink_own(const char *path, const struct stat *st)
{
	struct stat cur;
	if (fstatat(s.rt_dirfd, base_name(path), &cur, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!same_file(&cur, st))
		return -ESTALE;
	return unlinkat(s.rt_dirfd, base_name(path), 0) < 0 ? -errno : 0;
}

/* 1 while the pid file at its path is still ours (so are the names beside it). */
static int
pid_file_ours(void)
{
	struct stat cur;
	return fstatat(s.rt_dirfd, base_name(s.o->paths.pid), &cur, AT_SYMLINK_NOFOLLOW) == 0 &&
	       same_file(&cur, &own_pid);
}

/* Remove the socket, pages and pid file, answer who is left, and exit. */
static void
finish_and_exit(void)
{
	if (s.listen_fd >= 0)
		unlink_own(s.o->paths.sock, &own_sock);
	/* The pages carry no inode of ours (zygotes write them): they are ours
	 * while the pid file is. */
	if (pid_file_ours())
		gen_unlink_pages();
	/* Gone before anyone hears "stopped", so a next `start` finds no lock. */
	unlink_own(s.o->paths.pid, &own_pid);
	pidfile_close(s.pfh);
	s.pfh = NULL;
	char text[128];
	snprintf(text, sizeof(text), "stopped=1\npid=%d\n", (int)getpid());
	for (int i = 0; i < s.nconns; i++) {
		struct conn *c = s.conns[i];
		if (c->state == CONN_STOPPING)
			conn_reply(c, PROTO_MSG_STATUS, text);
		else if (c->state != CONN_LINGERING && c->state != CONN_CLOSED)
			conn_reply(c, PROTO_MSG_ERROR, "the server stopped");
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
	unlink_own(s.o->paths.sock, &own_sock);
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

/*
 * Act on what generations reported (gen.c never calls into connections or
 * the loop itself). A first warm-up that failed stops the server before
 * `start` hears of it: a client it lets go at once must find no server, not
 * one going away.
 */
static void
gen_events(const struct gen_events *ev)
{
	if (ev->what & GEN_EV_FIRST_FAILED) {
		supervisor_begin_stop(0);
		status_report("error %s", ev->failed);
		return;
	}
	if (ev->what & GEN_EV_FAILED)
		conn_fail_waiting(ev->failed);
	if (ev->what & GEN_EV_READY)
		conn_serve_waiting(); /* and the queue */
	else if (ev->what & GEN_EV_SLOT_FREE)
		conn_dispatch_queue();
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
		changes_gen_end(g);
		if (idx == s.next)
			s.next = -1;
		if (was_draining)
			log_debug("generation %d drained", g->number);
		/* The one that replaced it may prepare now (gen_ready). */
		for (int i = 0; i < MAX_GENS; i++) {
			if (s.gens[i].pid && s.gens[i].go_after == pid) {
				s.gens[i].go_after = 0;
				gen_send_i32(&s.gens[i], PROTO_MSG_Z_GO, 1);
			}
		}
		if (s.stopping) {
			maybe_finish();
			continue;
		}
		if (was_draining)
			continue;
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
			struct gen_events ev = { 0 };
			gen_warmup_failed(g, v, &ev);
			gen_events(&ev);
		}
		/* Back off when generations keep dying; runs wait for the next one. */
		s.early_failures++;
		s.respawn_at = now_ms() + (s.early_failures > 3 ? 1000 : 0);
	}
	if (reaped)
		kill_strays();
	conn_dispatch_queue();
}

/* Bind and listen on the socket path (mode 0600), remembering its inode:
 * the new listening fd, or -errno. */
static int
bind_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s.o->paths.sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(fd, 128) < 0 ||
	    fstatat(s.rt_dirfd, base_name(s.o->paths.sock), &own_sock, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* Create the listening socket; 0 or -errno. */
static int
setup_socket(void)
{
	/* We hold the pid file lock, so a socket file here was left by a dead
	 * server: replace it (and what it learned). */
	unlinkat(s.rt_dirfd, base_name(s.o->paths.sock), 0);
	gen_unlink_pages();
	int fd = bind_socket();
	if (fd < 0)
		return fd;
	s.listen_fd = fd;
	return 0;
}

/*
 * Do we still own our names in the runtime directory? The directory deleted
 * or replaced (a logout removing /run/user/UID, a /tmp cleaner) or our pid
 * file deleted or replaced means a next `start` makes, or made, another
 * server there: we stop, so that there is never a server nobody can reach
 * beside one that can, and touch none of the files there (unlink_own). Our
 * socket alone deleted (a cleaner that ages files) while we hold the pid
 * file: no other server can own the name, so we bind a new one.
 */
static void
rt_check(void)
{
	struct stat st;
	const char *what = NULL, *path = s.o->paths.dir, *how = "deleted or replaced";
	if (fstat(s.rt_dirfd, &st) < 0 || st.st_nlink == 0)
		what = "the runtime directory", how = "deleted";
	else if (stat(s.o->paths.dir, &st) < 0 || !same_file(&st, &own_dir))
		what = "the runtime directory";
	else if (!pid_file_ours())
		what = "the pid file", path = s.o->paths.pid;
	if (what) {
		log_warn("%s '%s' was %s: stopping (a new `pytest-zygote start` makes a server "
			 "of its own there)",
			 what, path, how);
		supervisor_begin_stop(DEFAULT_GRACE_MS);
		return;
	}
	int r = fstatat(s.rt_dirfd, base_name(s.o->paths.sock), &st, AT_SYMLINK_NOFOLLOW);
	if (r == 0 && same_file(&st, &own_sock))
		return;
	if (r == 0 || errno != ENOENT) {
		log_warn("the socket '%s' was replaced by another file: stopping", s.o->paths.sock);
		supervisor_begin_stop(DEFAULT_GRACE_MS);
		return;
	}
	int fd = bind_socket();
	if (fd < 0) {
		log_error("the socket '%s' was deleted and cannot be made again: %s; stopping",
			  s.o->paths.sock, strerror(-fd));
		supervisor_begin_stop(DEFAULT_GRACE_MS);
		return;
	}
	close(s.listen_fd);
	s.listen_fd = fd;
	log_warn("the socket '%s' was deleted; listening on a new one", s.o->paths.sock);
}

/* Watch the runtime directory for what rt_check looks at; without inotify, poll. */
static void
rt_watch_start(void)
{
	rt_inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (rt_inotify >= 0 &&
	    inotify_add_watch(rt_inotify, s.o->paths.dir,
			      IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
				      IN_MOVE_SELF | IN_ONLYDIR) < 0) {
		close(rt_inotify);
		rt_inotify = -1;
	}
	if (rt_inotify < 0) {
		log_info("cannot watch the runtime directory '%s' (%s); checking it every %d s",
			 s.o->paths.dir, strerror(errno), RT_POLL_MS / 1000);
		rt_check_at = now_ms() + RT_POLL_MS;
	}
}

/* Events on the runtime directory: check a moment later. */
static void
rt_watch_drain(void)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	while (read(rt_inotify, buf, sizeof(buf)) > 0)
		;
	if (rt_check_at < 0)
		rt_check_at = now_ms() + RT_SETTLE_MS;
}

/* How a write to the runtime directory failed, for the user: a full disk named as such. */
static const char *
write_hint(int err)
{
	return err == ENOSPC || err == EDQUOT
		       ? "; the file system of the runtime directory is full: free space there "
			 "or set PYTEST_ZYGOTE_RUNTIME_DIR to another directory"
		       : "";
}

/* A duration in ms from the variable name (seconds, 0 to max; the client
 * checked it), else def seconds. */
static long long
env_seconds_ms(const char *name, double max, long long def)
{
	const char *v = getenv(name);
	char *end;
	double x = v && *v ? strtod(v, &end) : -1;
	if (!v || !*v || *end || !(x >= 0 && x <= max))
		return def * 1000LL;
	return (long long)(x * 1000);
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
	s.last_active_ms = s.start_ms;
	s.is_variant = o->instance && strchr(o->instance, '~');
	pid_t other = 0;

	s.idle_timeout_ms =
		env_seconds_ms("PYTEST_ZYGOTE_IDLE_TIMEOUT", SUPERVISOR_IDLE_TIMEOUT_MAX,
			       SUPERVISOR_IDLE_TIMEOUT_DEFAULT);
	s.wait_timeout_ms =
		env_seconds_ms("PYTEST_ZYGOTE_WAIT_TIMEOUT", SUPERVISOR_WAIT_TIMEOUT_MAX,
			       SUPERVISOR_WAIT_TIMEOUT_DEFAULT);
	s.rt_dirfd = open(o->paths.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s.rt_dirfd < 0 || fstat(s.rt_dirfd, &own_dir) < 0) {
		log_error("cannot open the runtime directory '%s': %s", o->paths.dir,
			  strerror(errno));
		status_report("error cannot open the runtime directory '%s': %s", o->paths.dir,
			      strerror(errno));
		return ZEXIT_NOSTART;
	}
	s.pfh = pidfile_open(o->paths.pid, 0600, &other);
	if (!s.pfh) {
		if (errno == EEXIST) {
			status_report("running pid=%d", (int)other);
			log_info("already running for %s (pid %d)", o->paths.root, (int)other);
			return 0;
		}
		int e = errno;
		log_error("cannot open pid file '%s': %s%s", o->paths.pid, strerror(e),
			  write_hint(e));
		status_report("error cannot open pid file '%s': %s%s", o->paths.pid, strerror(e),
			      write_hint(e));
		return ZEXIT_NOSTART;
	}
	int lockfd = pidfile_fileno(s.pfh);
	if (lockfd >= 0)
		fcntl(lockfd, F_SETFD, FD_CLOEXEC);
	/* The lock is the server's claim on its name: writing the pid can fail
	 * (a full disk), and libbsd then removes the file and drops the lock.
	 * A server without it would be a second one as soon as another start
	 * came, so none runs. */
	if (lockfd < 0 || fstat(lockfd, &own_pid) < 0 || pidfile_write(s.pfh) < 0) {
		int e = errno;
		log_error("cannot write the pid file '%s': %s%s", o->paths.pid, strerror(e),
			  write_hint(e));
		status_report("error cannot write the pid file '%s': %s%s", o->paths.pid,
			      strerror(e), write_hint(e));
		if (s.pfh && pidfile_fileno(s.pfh) >= 0) {
			unlink_own(o->paths.pid, &own_pid);
			pidfile_close(s.pfh);
		}
		return ZEXIT_NOSTART;
	}
	/* Detached by `start`, stderr is the log, opened for appending so that
	 * a start that finds this server running does not wipe its log: this
	 * server, which now holds the name, starts the log afresh. */
	struct stat log_st;
	if (o->report_fd >= 0 && fstat(STDERR_FILENO, &log_st) == 0 && S_ISREG(log_st.st_mode) &&
	    ftruncate(STDERR_FILENO, 0) == 0)
		dprintf(STDERR_FILENO, "pytest-zygote start: the server for %s\n", o->paths.root);
	int r = setup_socket();
	if (r < 0) {
		log_error("cannot listen on '%s': %s%s", o->paths.sock, strerror(-r),
			  write_hint(-r));
		status_report("error cannot listen on '%s': %s%s", o->paths.sock, strerror(-r),
			      write_hint(-r));
		unlink_own(o->paths.pid, &own_pid);
		pidfile_close(s.pfh);
		return ZEXIT_NOSTART;
	}
	if (s.is_variant)
		setproctitle("supervisor %s (for another environment, %s)", o->paths.root,
			     o->instance);
	else
		setproctitle("supervisor %s", o->paths.root);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	changes_watch_start();
	rt_watch_start();

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
		unlink_own(o->paths.sock, &own_sock);
		gen_unlink_pages();
		unlink_own(o->paths.pid, &own_pid);
		pidfile_close(s.pfh);
		return ZEXIT_NOSTART;
	}

	/*
	 * Every peer (a generation's control socket, a client's connection, a
	 * reply still going out) is polled for POLLOUT while it has output
	 * queued: nothing in this loop waits on a peer.
	 */
	enum { P_SIG, P_LISTEN, P_WATCH, P_EXT, P_RT, P_GENS };
	for (;;) {
		struct pollfd pfd[P_GENS + MAX_GENS + MAX_VARIANTS + MAX_CONNS];
		struct conn *polled[MAX_CONNS]; /* the connection of pfd[first_conn + k] */
		int n = 0;
		long long now = now_ms();
		long long wake = -1; /* absolute ms, -1: none */
		/* The connections' timers first: the ones they close are freed
		 * before the poll set is built. */
		if (s.nconns > 0) {
			long long due = conn_expire(now);
			if (due >= 0)
				wake = due;
			conn_sweep();
		}
		pfd[n++] = (struct pollfd){ .fd = s.sigfd, .events = POLLIN };
		int accepting = s.listen_fd >= 0 && now >= s.accept_paused_until;
		pfd[n++] = (struct pollfd){ .fd = accepting ? s.listen_fd : -1, .events = POLLIN };
		if (!accepting && s.listen_fd >= 0)
			wake = wake < 0 || s.accept_paused_until < wake ? s.accept_paused_until
									: wake;
		pfd[n++] =
			(struct pollfd){ .fd = s.watch && s.poll_ms <= 0 ? watch_fd(s.watch) : -1,
					 .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = s.ext_fd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = rt_inotify, .events = POLLIN };
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
		/*
		 * Connections by state: a reply going out is polled for POLLOUT
		 * only; every other connection for its next message (a parked
		 * one: Ctrl-C or hang-up) and for POLLOUT while output waits.
		 */
		int first_conn = n, clients = 0;
		for (int i = 0; i < s.nconns; i++) {
			struct conn *c = s.conns[i];
			short events = peer_wants_write(c->peer) ? POLLOUT : 0;
			if (c->state != CONN_LINGERING) {
				events |= POLLIN;
				clients++;
			}
			polled[n - first_conn] = c;
			pfd[n++] = (struct pollfd){ .fd = peer_fd(c->peer), .events = events };
		}

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
		/* Watch clients: told once the changes settled (the settle time
		 * after the last), the same quiet the refresh above waits for. */
		if (s.watch_last_ms > 0) {
			long long due = s.watch_last_ms + s.settle_ms;
			if (now >= due) {
				conn_watch_notify();
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
		if (s.is_variant && !s.stopping && s.running == 0 && clients == 0) {
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
		/* Idle: no run in progress or waiting (for a slot, or for a
		 * warm generation as `start` and run do), none started, no
		 * first warm-up; measured from when the server was last busy.
		 * `status` and `stop` do not count: polling status must not
		 * keep a server alive; a `watch` connected does (it runs
		 * tests on the next save). */
		int busy = s.running > 0 || s.queued > 0 || !s.ever_ready;
		for (int i = 0; i < s.nconns && !busy; i++)
			busy = s.conns[i]->state == CONN_WAITING ||
			       s.conns[i]->state == CONN_QUEUED ||
			       s.conns[i]->state == CONN_WATCHING;
		if (busy || s.was_busy)
			s.last_active_ms = now;
		if (s.last_run_ms > s.last_active_ms)
			s.last_active_ms = s.last_run_ms;
		s.was_busy = busy;
		if (!s.is_variant && !s.stopping && !busy && s.idle_timeout_ms > 0) {
			long long due = s.last_active_ms + s.idle_timeout_ms;
			if (now >= due) {
				log_info("idle for %.0f s (no runs and no clients): stopping "
					 "(idle_timeout)",
					 (double)s.idle_timeout_ms / 1000.0);
				supervisor_begin_stop(0);
				continue;
			}
			wake = wake < 0 || due < wake ? due : wake;
		}
		if (!s.stopping && rt_check_at >= 0) {
			if (now >= rt_check_at) {
				rt_check_at = rt_inotify < 0 ? now + RT_POLL_MS : -1;
				rt_check();
				continue;
			}
			wake = wake < 0 || rt_check_at < wake ? rt_check_at : wake;
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
		if (pfd[P_RT].revents & POLLIN)
			rt_watch_drain();
		/* A handler may close other connections than its own: they stay
		 * CLOSED (not freed) until conn_sweep below. */
		for (int j = first_conn; j < n; j++) {
			struct conn *c = polled[j - first_conn];
			if (pfd[j].revents & POLLOUT)
				conn_writable(c);
			if (pfd[j].revents & ~POLLOUT)
				conn_readable(c);
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
		conn_sweep();
		if (pfd[P_LISTEN].revents & POLLIN)
			conn_accept_clients();
		for (int i = 0; i < MAX_GENS; i++) {
			struct gen *g = &s.gens[i];
			short re = pfd[P_GENS + i].revents;
			if (!re || !g->pid || !g->ctl || peer_fd(g->ctl) != pfd[P_GENS + i].fd)
				continue;
			/* Read first: a zygote that exits closes its end (end of
			 * file, not a write error). */
			if (re & ~POLLOUT) {
				struct gen_events ev = { 0 };
				gen_readable(g, &ev);
				gen_events(&ev);
			}
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
