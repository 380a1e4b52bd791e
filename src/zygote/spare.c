/*
 * The spare child: forked ahead of the next request, it takes the copy-on-write
 * faults of the pages learn.c stored, then waits for a request of its own. It
 * reads those pages and never changes them; reaping is zygote.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "zygote/common.h"
#include "zygote/peer.h"
#include "zygote/prefault.h"
#include "zygote/proto.h"
#include "zygote/pyembed.h"
#include "zygote/sandbox.h"
#include "zygote/spawn.h"
#include "zygote/log.h"

/* The spare, when there is one (pid 0: none); see internal.h. */
struct spare_state spare = { .sock = -1, .taken = -1 };

/* prefault_touch's stop: a request is waiting on the spare's socket. */
static int
request_waiting(void *arg)
{
	struct pollfd p = { .fd = *(int *)arg, .events = POLLIN };
	return poll(&p, 1, 0) > 0;
}

/*
 * How long a request that came while the spare prepares (runs back to back)
 * waits for the kernel to copy the rest of the last run's pages. Copied so,
 * a page costs a third of the fault the run would take on it: on tiny the
 * rest takes 15 ms, and a run back to back took 89-94 ms instead of 113-117
 * (a warm run: 48-50 ms). The bound keeps a small run that follows a large
 * one (a page set it needs little of) from waiting for all of it.
 */
#define SPARE_REQUEST_WAIT_MS 50

/*
 * In the spare: take the copy-on-write faults of the last run's pages, a
 * chunk at a time. Once a request is waiting, the kernel copies the rest
 * for at most SPARE_REQUEST_WAIT_MS, then the run is served, with whatever
 * is left its own faults.
 */
static long
spare_prepare(int sock)
{
	return prefault_touch(hot, nhot, request_waiting, &sock, SPARE_REQUEST_WAIT_MS);
}

/* A page the spares copy is checked for a write in one run out of this many
 * (prefault_protect): a stale page is dropped within as many runs. */
#define SPARE_SAMPLE_EVERY 8

/*
 * In the spare, once prepared: write-protect our memory (prefault_protect),
 * so that the run records the pages it wrote, not those we copied for it.
 * The userfaultfd goes where the harness's descriptors go (spawn.h), out of
 * the tests' way; it is closed at exec and with the run. Without it (an
 * older kernel) the run records every page it holds privately, ours too.
 */
static void
spare_protect(int sock, unsigned round)
{
	/* A request already waiting (runs back to back) is served at once:
	 * it records the spare's copies too, as on a kernel without this. */
	if (request_waiting(&sock))
		return;
	int fd = prefault_protect(hot, nhot, SPARE_SAMPLE_EVERY, round, request_waiting, &sock);
	if (fd < 0)
		return;
	int high = fcntl(fd, F_DUPFD_CLOEXEC, spawn_fd_base());
	close(fd);
	(void)high;
}

/* A child's (the spare's, or one collecting ahead) Z_RUN carries two
 * descriptors: the client connection and the write end of the learning pipe. */
int
handoff_frame_fds(uint32_t type, const void *payload, uint32_t len)
{
	return type == PROTO_MSG_Z_RUN ? 2 : proto_msg_fds(type, payload, len);
}

int
handoff_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	(void)p;
	struct handoff_request *sr = arg;
	if (f->type == PROTO_MSG_Z_RUN) {
		if (f->nfds != 2) {
			sr->failed = 1;
			return PEER_STOP;
		}
		for (int i = 0; i < 2; i++) {
			sr->got[i] = f->fds[i];
			f->fds[i] = -1;
		}
		return 0;
	}
	int r = proto_decoder_feed(&sr->dec, f->type, f->payload, f->len, f->fds, f->nfds);
	f->nfds = 0; /* the decoder's now */
	if (r < 0 || sr->got[0] < 0) {
		sr->failed = 1;
		return PEER_STOP;
	}
	sr->done = r == 1;
	return sr->done ? PEER_STOP : 0;
}

/* How long a child may take to read a request before it is given up on
 * and the run gets a fork of its own (it reads at once when it runs). */
#define HANDOFF_SEND_MS 1000

int
handoff_send(int sock, const struct proto_request *req, int32_t id, int conn, int learn)
{
	/* The child stops what it is doing and reads as soon as a request is
	 * waiting; what the socket does not take at once goes as it reads,
	 * within HANDOFF_SEND_MS. */
	int fds2[2] = { conn, learn };
	struct peer *p = peer_create(sock); /* closes it on failure */
	int r = p ? peer_send_request(p, id, fds2, 2, req) : -ENOMEM;
	long long deadline = now_ms() + HANDOFF_SEND_MS;
	while (r == 0 && peer_wants_write(p)) {
		long long left = deadline - now_ms();
		struct pollfd pfd = { .fd = peer_fd(p), .events = POLLOUT };
		if (left <= 0 || poll(&pfd, 1, (int)left) == 0)
			r = -ETIMEDOUT;
		else
			r = peer_flush(p);
	}
	peer_destroy(p);
	return r;
}

/* Fork the next spare, unless there is one or we are stopping. */
void
spare_fork(void)
{
	if (spare.pid || spare.disabled || z.draining || z.lean)
		return;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	int close_fds[OWN_FDS_MAX];
	int nclose = own_fds(close_fds, sv[0]);
	pid_t zygote = getpid();
	static unsigned rounds;
	unsigned round = rounds++;

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
		long long t0 = now_ms();
		long copied = spare_prepare(sv[1]);
		if (!request_waiting(&sv[1]))
			pyembed_spare_speculate();
		spare_protect(sv[1], round);
		log_debug("spare %d: copied %ld pages of the %zu learned, ready in %lld ms",
			  (int)getpid(), copied, hot_pages(), now_ms() - t0);

		/* Wait for a request: Z_RUN (connection and learning pipe) + request,
		 * read on a blocking socket: the spare has nothing else to do. */
		struct peer *p = peer_create(sv[1]);
		struct handoff_request sr = { .got = { -1, -1 } };
		proto_decoder_init(&sr.dec);
		if (!p)
			_exit(ZEXIT_INTERNAL);
		peer_set_fds_rule(p, handoff_frame_fds);
		while (!sr.done && !sr.failed)
			if (peer_read(p, handoff_frame, &sr) <= 0)
				_exit(0);
		if (sr.failed)
			_exit(ZEXIT_INTERNAL);
		peer_destroy(p);
		child_main(&sr.dec.req, sr.got[0], sr.got[1], NULL, 0, zygote);
	}
	pyembed_fork_parent();
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		return;
	}
	/* Our end never blocks: a spare that does not read (stopped, stuck)
	 * costs its request a plain fork, not the zygote its loop. */
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	spare.pid = pid;
	spare.sock = sv[0];
	spare.real = hot_real;
}

/* Kill the spare, if there is one; reap() collects it. */
void
spare_drop(void)
{
	if (!spare.pid)
		return;
	kill(spare.pid, SIGKILL);
	close(spare.sock);
	spare.sock = -1;
	spare.pid = 0; /* reaped by reap() as an unknown pid */
}

/*
 * Runs back to back: a request within BACK_TO_BACK_MS of the last run's end,
 * as a script's loop sends them. The spare forked when that run ended is
 * still preparing then (the next request comes 3-10 ms after the exit; the
 * spare takes 30-50 ms), so each such run would take its own faults. For a
 * run back to back the next spare is therefore forked during the run, as soon
 * as the run's own spare has read its request (it first lets the kernel copy
 * the rest of its pages: two processes copying at once slow each other on
 * this project's VMs), and the run after finds it prepared. Measured on tiny
 * (median of 10 rounds of a settled run and four back to back): 86, 85, 86
 * and 86 ms before, 94, 48, 57 and 51 ms so (a warm run: 40-42 ms). A person
 * does not start runs this close together, so between their runs there is
 * one spare, forked when the run ended, and nothing prepares next to a run.
 */
#define BACK_TO_BACK_MS 300

int
spare_back_to_back(void)
{
	return spare.last_end && now_ms() - spare.last_end < BACK_TO_BACK_MS;
}

/* Stop watching the spare taken for a run back to back. */
void
spare_taken_forget(void)
{
	if (spare.taken >= 0)
		close(spare.taken);
	spare.taken = -1;
}

/* The spare taken for a run back to back has read its request (or died):
 * fork the next one now. */
void
spare_taken_read(void)
{
	if (spare.taken < 0)
		return;
	spare_taken_forget();
	spare_fork();
	if (spare.pid)
		log_debug("runs back to back: spare %d prepares during the run", (int)spare.pid);
}

/*
 * Give the request to the spare. Returns its pid, or 0 when it cannot. With
 * early, the next spare is forked once this one has read the request
 * (spare.taken; see BACK_TO_BACK_MS).
 */
pid_t
spare_take(const struct proto_request *req, int32_t id, int conn, int learn, int early)
{
	if (!spare.pid)
		return 0;
	if (early && spare.taken < 0)
		spare.taken = fcntl(spare.sock, F_DUPFD_CLOEXEC, 3);
	int r = handoff_send(spare.sock, req, id, conn, learn);
	pid_t pid = spare.pid;
	spare.sock = -1;
	spare.pid = 0;
	if (r < 0) {
		kill(pid, SIGKILL);
		return 0;
	}
	return pid;
}

/*
 * The practice run is --collect-only: it leaves out the pages running tests
 * write. A spare prepared from it is replaced once the first client's run has
 * said which pages those are (learn() has just stored them).
 */
void
spare_replace_practice(void)
{
	if (hot_real && spare.pid && !spare.real) {
		spare_drop();
		spare_fork();
	}
}
