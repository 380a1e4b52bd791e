/*
 * Unit tests for src/common/fdpass.c over real AF_UNIX stream socketpairs: a request
 * with three fds riding on its FDS message, a message larger than one
 * recvmsg, EOF, fds nobody takes, the queue limit and the blocking helpers.
 * Senders that would block run in a forked child; nothing sleeps.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/fdpass.h"
#include "zygote/proto.h"

#include "tap.h"

static int
fd_closed(int fd)
{
	return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

static int
fd_cloexec(int fd)
{
	int f = fcntl(fd, F_GETFD);
	return f >= 0 && (f & FD_CLOEXEC);
}

/* Same open file? (same inode on the same device) */
static int
same_file(int a, int b)
{
	struct stat sa, sb;
	if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
		return 0;
	return sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
}

/* How many fds this process has open (entries of /proc/self/fd, minus the DIR's own). */
static int
count_open_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	if (!dir)
		bail_out("opendir /proc/self/fd: %s", strerror(errno));
	int n = 0;
	struct dirent *e;
	while ((e = readdir(dir)))
		if (e->d_name[0] != '.')
			n++;
	closedir(dir);
	return n - 1;
}

/* Three descriptors of three different files (distinct st_ino). */
static void
make_distinct(int fds[3])
{
	fds[0] = memfd_create("fdpass-a", MFD_CLOEXEC);
	fds[1] = memfd_create("fdpass-b", MFD_CLOEXEC);
	fds[2] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0)
		bail_out("memfd_create/open: %s", strerror(errno));
}

static void
make_socketpair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		bail_out("socketpair: %s", strerror(errno));
}

/* Wait for a forked sender and report whether it exited 0. */
static void
reap(pid_t pid, const char *what)
{
	int status = 0;
	if (waitpid(pid, &status, 0) != pid)
		bail_out("waitpid: %s", strerror(errno));
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: sender exited 0 (status %#x)", what,
	   status);
}

static void
test_request_with_fds(void)
{
	int sv[2], pfd[2];
	char tmpl[] = "/tmp/test-fdpass-XXXXXX";
	int files[3];

	make_socketpair(sv);
	files[0] = mkostemp(tmpl, O_CLOEXEC);
	if (files[0] < 0 || pipe2(pfd, O_CLOEXEC) < 0)
		bail_out("mkostemp/pipe2: %s", strerror(errno));
	unlink(tmpl);
	files[1] = pfd[1];
	files[2] = open("/dev/null", O_RDONLY | O_CLOEXEC);

	char *argv[] = { "pytest", "-x", NULL };
	char *env[] = { "HOME=/root", NULL };
	struct proto_request req = {
		.kind = PROTO_KIND_RUN,
		.argv = argv,
		.cwd = "/tmp",
		.env = env,
		.fds = { files[0], files[1], files[2] },
		.nfds = 3,
	};
	struct proto_buf b = { 0 };
	size_t fds_off = 0;
	if (proto_request_encode(&b, &req, &fds_off) < 0)
		bail_out("proto_request_encode");
	/* Two more messages after the request, as a server would send. */
	proto_buf_put(&b, PROTO_MSG_NOTICE, "warming up", 10);
	proto_buf_put_i32(&b, PROTO_MSG_EXIT, 3);

	is_int(fdpass_send(sv[0], b.data, b.len, files, 3, fds_off), 0,
	       "send %zu bytes with 3 fds at offset %zu", b.len, fds_off);

	struct fdpass_reader r;
	struct proto_decoder d;
	fdpass_reader_init(&r);
	proto_decoder_init(&d);
	int got[3] = { -1, -1, -1 };
	int ntaken = -1, done = 0, fills = 0, nmsg = 0, exit_code = -1;
	char notice[32] = "";
	while (done >= 0 && nmsg < 9) {
		struct proto_hdr h;
		const char *payload;
		int m = fdpass_reader_next(&r, &h, &payload);
		if (m == 0) {
			ssize_t n = fdpass_reader_fill(&r, sv[1]);
			fills++;
			if (n <= 0) {
				ok(0, "fill returned %zd before all messages arrived", n);
				break;
			}
			continue;
		}
		if (m < 0) {
			ok(0, "fdpass_reader_next returned %d", m);
			break;
		}
		nmsg++;
		if (h.type == PROTO_MSG_NOTICE) {
			memcpy(notice, payload,
			       h.len < sizeof(notice) - 1 ? h.len : sizeof(notice) - 1);
			continue;
		}
		if (h.type == PROTO_MSG_EXIT) {
			int32_t v;
			if (proto_get_i32(payload, h.len, &v) == 0)
				exit_code = v;
			break;
		}
		int nfds = 0;
		if (h.type == PROTO_MSG_FDS) {
			ntaken = fdpass_reader_take_fds(&r, got, 3);
			nfds = ntaken;
		}
		done = proto_decoder_feed(&d, h.type, payload, h.len, nfds ? got : NULL, nfds);
		if (done < 0)
			diag("decoder: %s", d.error);
	}
	ok(fills >= 1, "read with %d fill calls", fills);
	is_int(nmsg, 9, "nine messages received");
	is_int(ntaken, 3, "three fds taken at the FDS message");
	is_int(d.state, PROTO_ST_DONE, "decoder accepted the request: %s", d.error);
	is_str(notice, "warming up", "NOTICE after the request");
	is_int(exit_code, 3, "EXIT after the request");
	is_int(r.nfds, 0, "no fds left in the queue");
	for (int i = 0; i < 3; i++) {
		ok(got[i] >= 0 && got[i] != files[i], "fd %d arrived as a new descriptor %d", i,
		   got[i]);
		ok(same_file(got[i], files[i]), "fd %d is the same file (st_dev/st_ino)", i);
		ok(fd_cloexec(got[i]), "fd %d is close-on-exec", i);
		is_int(d.req.fds[i], got[i], "decoder holds fd %d", i);
	}
	/* Check the pipe really is the pipe: write through the received end. */
	ok(write(got[1], "z", 1) == 1, "write through the received pipe end");
	char c = 0;
	ok(read(pfd[0], &c, 1) == 1 && c == 'z', "the byte came out of the original pipe");

	proto_decoder_finish(&d);
	ok(fd_closed(got[0]) && fd_closed(got[1]) && fd_closed(got[2]),
	   "received fds closed by the decoder");
	fdpass_reader_finish(&r);
	proto_buf_free(&b);
	close(files[0]);
	close(files[2]);
	close(pfd[0]);
	close(pfd[1]);
	close(sv[0]);
	close(sv[1]);
}

static void
test_large_message(void)
{
	int sv[2];
	size_t len = 900 * 1024;
	char *payload = malloc(len);
	if (!payload)
		bail_out("malloc");
	for (size_t i = 0; i < len; i++)
		payload[i] = (char)(i * 7 + i / 251);

	make_socketpair(sv);
	pid_t pid = fork();
	if (pid < 0)
		bail_out("fork: %s", strerror(errno));
	if (pid == 0) {
		/* The socket buffer is far smaller than the message: this blocks
		 * until the parent reads. */
		close(sv[1]);
		int r = fdpass_send_msg(sv[0], PROTO_MSG_NOTICE, payload, len);
		r = r == 0 ? fdpass_send_msg(sv[0], PROTO_MSG_EXIT, "\0\0\0\0", 4) : r;
		free(payload);
		_exit(r == 0 ? 0 : 1);
	}
	close(sv[0]);

	struct fdpass_reader r;
	fdpass_reader_init(&r);
	struct proto_hdr h = { 0 };
	const char *got = NULL;
	int fills = 0, m;
	while ((m = fdpass_reader_next(&r, &h, &got)) == 0) {
		ssize_t n = fdpass_reader_fill(&r, sv[1]);
		if (n <= 0) {
			diag("fill returned %zd", n);
			break;
		}
		fills++;
	}
	is_int(m, 1, "the large message was framed");
	ok(fills > 1, "it took %d recvmsg calls", fills);
	is_int(h.type, PROTO_MSG_NOTICE, "type");
	is_int(h.len, len, "length %zu", len);
	ok(got && h.len == len && memcmp(got, payload, len) == 0, "payload intact");

	/* The reader drops consumed bytes and carries on. */
	is_int(fdpass_read_msg(&r, sv[1], &h, &got), 1, "next message after the large one");
	is_int(h.type, PROTO_MSG_EXIT, "it is the EXIT");
	is_int(fdpass_read_msg(&r, sv[1], &h, &got), 0, "then EOF");
	reap(pid, "large message");

	fdpass_reader_finish(&r);
	close(sv[1]);
	free(payload);
}

static void
test_eof(void)
{
	int sv[2];
	struct fdpass_reader r;
	struct proto_hdr h;
	const char *p;

	make_socketpair(sv);
	fdpass_reader_init(&r);
	close(sv[0]);
	is_int(fdpass_reader_fill(&r, sv[1]), 0, "fill at EOF returns 0");
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 0, "read_msg at EOF returns 0");
	fdpass_reader_finish(&r);
	close(sv[1]);

	/* EOF in the middle of a message is EOF too, not a message. */
	make_socketpair(sv);
	fdpass_reader_init(&r);
	struct proto_hdr half = { .type = PROTO_MSG_NOTICE, .len = 10 };
	char buf[sizeof(half) + 3];
	memcpy(buf, &half, sizeof(half));
	memcpy(buf + sizeof(half), "abc", 3);
	is_int(fdpass_send(sv[0], buf, sizeof(buf), NULL, 0, 0), 0, "send a truncated message");
	close(sv[0]);
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 0, "read_msg on a truncated message: EOF");
	fdpass_reader_finish(&r);
	close(sv[1]);

	/* A non-blocking socket with nothing to read. */
	make_socketpair(sv);
	fdpass_reader_init(&r);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	is_int(fdpass_reader_fill(&r, sv[1]), -EAGAIN, "fill with nothing to read: -EAGAIN");
	fdpass_reader_finish(&r);
	close(sv[0]);
	close(sv[1]);
}

static void
test_unexpected_fds(void)
{
	int sv[2], pfd[3];
	struct fdpass_reader r;
	struct proto_hdr h;
	const char *p;

	make_socketpair(sv);
	make_distinct(pfd);
	fdpass_reader_init(&r);
	struct proto_buf b = { 0 };
	proto_buf_put(&b, PROTO_MSG_NOTICE, "hi", 2);
	is_int(fdpass_send(sv[0], b.data, b.len, pfd, 2, 0), 0, "send a NOTICE carrying 2 fds");
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 1, "read it");
	is_int(h.type, PROTO_MSG_NOTICE, "NOTICE");
	is_int(r.nfds, 2, "two fds queued that nobody takes");
	int q0 = r.fds[0], q1 = r.fds[1];
	ok(same_file(q0, pfd[0]) && same_file(q1, pfd[1]), "queued in arrival order");
	fdpass_reader_finish(&r);
	ok(fd_closed(q0) && fd_closed(q1), "fdpass_reader_finish closed them");
	is_int(r.nfds, 0, "queue empty");
	fdpass_reader_finish(&r);
	ok(1, "finishing twice is harmless");

	/* take_fds takes from the head and never more than queued. */
	fdpass_reader_init(&r);
	int three[3] = { pfd[0], pfd[1], pfd[2] };
	is_int(fdpass_send(sv[0], b.data, b.len, three, 3, 0), 0, "send a NOTICE carrying 3 fds");
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 1, "read it");
	int got[4] = { -1, -1, -1, -1 };
	is_int(fdpass_reader_take_fds(&r, got, 1), 1, "take 1");
	ok(same_file(got[0], pfd[0]), "the first one");
	is_int(fdpass_reader_take_fds(&r, got + 1, 5), 2, "asking for 5 gets the 2 left");
	ok(same_file(got[1], pfd[1]) && same_file(got[2], pfd[2]), "in order");
	is_int(fdpass_reader_take_fds(&r, got + 3, 1), 0, "empty queue gives 0");
	for (int i = 0; i < 3; i++)
		close(got[i]);
	fdpass_reader_finish(&r);

	/* More than FDPASS_MAX_QUEUED arriving: the extra ones are closed at once. */
	int base = count_open_fds();
	int ten[10];
	for (int i = 0; i < 10; i++)
		ten[i] = pfd[i % 3];
	fdpass_reader_init(&r);
	is_int(fdpass_send(sv[0], b.data, b.len, ten, 10, 0), 0, "send 10 fds");
	is_int(fdpass_send(sv[0], b.data, b.len, ten, 10, 0), 0, "send 10 more");
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 1, "read the first");
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 1, "read the second");
	is_int(r.nfds, FDPASS_MAX_QUEUED, "queue holds FDPASS_MAX_QUEUED");
	is_int(count_open_fds() - base, FDPASS_MAX_QUEUED, "the 4 beyond the limit were closed");
	fdpass_reader_finish(&r);
	is_int(count_open_fds(), base, "finish closed the queue");

	proto_buf_free(&b);
	close(pfd[0]);
	close(pfd[1]);
	close(pfd[2]);
	close(sv[0]);
	close(sv[1]);
}

static void
test_send_refusals(void)
{
	int sv[2];
	int fds[FDPASS_MAX_QUEUED + 1];
	char buf[16] = "0123456789abcdef";
	char c;

	make_socketpair(sv);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	for (int i = 0; i <= FDPASS_MAX_QUEUED; i++)
		fds[i] = null;
	is_int(fdpass_send(sv[0], buf, sizeof(buf), fds, FDPASS_MAX_QUEUED + 1, 0), -EINVAL,
	       "more than FDPASS_MAX_QUEUED fds refused");
	is_int(fdpass_send(sv[0], buf, sizeof(buf), fds, -1, 0), -EINVAL, "negative count refused");
	is_int(fdpass_send(sv[0], buf, sizeof(buf), fds, 1, sizeof(buf)), -EINVAL,
	       "fd offset past the end refused");
	ok(recv(sv[1], &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "nothing was sent");

	/* fds attached in the middle of a buffer arrive, and all bytes in order. */
	struct fdpass_reader r;
	fdpass_reader_init(&r);
	is_int(fdpass_send(sv[0], buf, sizeof(buf), fds, FDPASS_MAX_QUEUED, 5), 0,
	       "exactly FDPASS_MAX_QUEUED fds at offset 5");
	ssize_t total = 0;
	while (total < (ssize_t)sizeof(buf)) {
		ssize_t n = fdpass_reader_fill(&r, sv[1]);
		if (n <= 0)
			break;
		total += n;
	}
	is_int(total, sizeof(buf), "all bytes arrived");
	ok(r.len == sizeof(buf) && memcmp(r.buf, buf, sizeof(buf)) == 0, "in order");
	is_int(r.nfds, FDPASS_MAX_QUEUED, "all the fds arrived");
	fdpass_reader_finish(&r);

	/*
	 * The fds ride on the byte at the offset, not on the first byte: a
	 * recvmsg of the 5 bytes before it gets none, the next one gets them.
	 */
	is_int(fdpass_send(sv[0], buf, sizeof(buf), fds, 2, 5), 0, "2 fds at offset 5");
	int seen[2] = { -1, -1 };
	for (int i = 0; i < 2; i++) {
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(int) * 2)];
		} control;
		char data[16];
		struct iovec iov = { .iov_base = data, .iov_len = i == 0 ? 5 : sizeof(data) };
		struct msghdr msg = { .msg_iov = &iov,
				      .msg_iovlen = 1,
				      .msg_control = control.buf,
				      .msg_controllen = sizeof(control.buf) };
		ssize_t n = recvmsg(sv[1], &msg, MSG_CMSG_CLOEXEC);
		seen[i] = 0;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			int in[2];
			memcpy(in, CMSG_DATA(cm), sizeof(int) * (size_t)(k < 2 ? k : 2));
			for (int j = 0; j < k && j < 2; j++)
				close(in[j]);
			seen[i] += k;
		}
		is_int(n, i == 0 ? 5 : 11, "recvmsg %d got the expected bytes", i);
	}
	is_int(seen[0], 0, "no fds with the bytes before the offset");
	is_int(seen[1], 2, "both fds with the byte at the offset");

	close(sv[1]);
	ok(fdpass_send(sv[0], buf, sizeof(buf), NULL, 0, 0) == -EPIPE,
	   "send to a closed peer: -EPIPE, no SIGPIPE");
	close(sv[0]);
	close(null);
}

/* A peer that is not fdpass_send attaches more fds than the reader has room for. */
static void
test_ctrunc(void)
{
	enum { N = FDPASS_MAX_QUEUED + 4 };
	int sv[2], null, fds[N];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * N)];
	} control;
	char byte = 'x';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov,
			      .msg_iovlen = 1,
			      .msg_control = control.buf,
			      .msg_controllen = sizeof(control.buf) };

	make_socketpair(sv);
	null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	for (int i = 0; i < N; i++)
		fds[i] = null;
	memset(&control, 0, sizeof(control));
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * N);
	memcpy(CMSG_DATA(c), fds, sizeof(fds));
	if (sendmsg(sv[0], &msg, 0) != 1)
		bail_out("sendmsg: %s", strerror(errno));

	int base = count_open_fds();
	struct fdpass_reader r;
	fdpass_reader_init(&r);
	is_int(fdpass_reader_fill(&r, sv[1]), -EMSGSIZE, "%d fds in one recvmsg: -EMSGSIZE", N);
	is_int(r.nfds, FDPASS_MAX_QUEUED, "the ones that fit are queued");
	is_int(count_open_fds() - base, FDPASS_MAX_QUEUED, "and no others are open");
	fdpass_reader_finish(&r);
	is_int(count_open_fds(), base, "finish closed them");
	close(null);
	close(sv[0]);
	close(sv[1]);
}

static void
test_read_msg(void)
{
	int sv[2], go[2];
	struct fdpass_reader r;
	struct proto_hdr h;
	const char *p;

	make_socketpair(sv);
	if (pipe2(go, O_CLOEXEC) < 0)
		bail_out("pipe2");
	struct proto_buf b = { 0 };
	proto_buf_put(&b, PROTO_MSG_STATUS, "generation=1\n", 13);
	proto_buf_put(&b, PROTO_MSG_NOTICE, "", 0);

	pid_t pid = fork();
	if (pid < 0)
		bail_out("fork: %s", strerror(errno));
	if (pid == 0) {
		/* Half a message, wait for the parent to see it, then the rest a
		 * byte at a time. */
		char c;
		close(sv[1]);
		close(go[1]);
		if (fdpass_send(sv[0], b.data, 6, NULL, 0, 0) < 0)
			_exit(1);
		if (read(go[0], &c, 1) != 1)
			_exit(2);
		for (size_t i = 6; i < b.len; i++)
			if (fdpass_send(sv[0], b.data + i, 1, NULL, 0, 0) < 0)
				_exit(3);
		_exit(0);
	}
	close(sv[0]);
	close(go[0]);

	fdpass_reader_init(&r);
	is_int(fdpass_reader_fill(&r, sv[1]), 6, "fill got the first 6 bytes");
	is_int(fdpass_reader_next(&r, &h, &p), 0, "half a header is not a message");
	if (write(go[1], "g", 1) != 1)
		bail_out("write");
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 1, "read_msg blocks until the message is whole");
	is_int(h.type, PROTO_MSG_STATUS, "STATUS");
	ok(h.len == 13 && memcmp(p, "generation=1\n", 13) == 0, "payload");
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 1, "the empty NOTICE");
	is_int(h.type, PROTO_MSG_NOTICE, "NOTICE");
	is_int(h.len, 0, "no payload");
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), 0, "EOF after the sender exits");
	reap(pid, "read_msg");
	fdpass_reader_finish(&r);
	close(go[1]);
	close(sv[1]);

	/* An oversized header is a protocol error, reported by read_msg. */
	make_socketpair(sv);
	fdpass_reader_init(&r);
	struct proto_hdr big = { .type = PROTO_MSG_NOTICE, .len = PROTO_MAX_PAYLOAD + 1 };
	fdpass_send(sv[0], &big, sizeof(big), NULL, 0, 0);
	is_int(fdpass_read_msg(&r, sv[1], &h, &p), -EMSGSIZE, "oversized header: -EMSGSIZE");
	fdpass_reader_finish(&r);
	close(sv[0]);
	close(sv[1]);
	proto_buf_free(&b);
}

int
main(void)
{
	test_request_with_fds();
	test_large_message();
	test_eof();
	test_unexpected_fds();
	test_send_refusals();
	test_ctrunc();
	test_read_msg();
	return done_testing();
}
