/*
 * The spare child: forked ahead of the next request, it takes the copy-on-write
 * faults of the pages learn.c stored, then waits for a request of its own. It
 * reads those pages and never changes them; reaping is zygote.c's.
 */
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "zygote/common.h"
#include "zygote/fdpass.h"
#include "zygote/prefault.h"
#include "zygote/proto.h"
#include "zygote/pyembed.h"
#include "zygote/sandbox.h"

/* The spare, when there is one (pid 0: none); see internal.h. */
struct spare_state spare = { .sock = -1 };

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
void
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

/* Give the request to the spare. Returns its pid, or 0 when it cannot. */
pid_t
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
