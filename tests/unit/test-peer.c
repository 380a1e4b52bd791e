/*
 * Unit tests for src/common/peer.c over real AF_UNIX stream socketpairs: a
 * reader that does not read makes peer_send queue instead of block; the
 * frames and their descriptors arrive whole and in order once it reads
 * again; the bound drops a peer; a dropped frame's descriptors are closed;
 * descriptors go to the frame the rule gives them to; a run hand-over
 * decodes; end of file, cut-off frames and a handler that stops.
 * Nothing sleeps: an alarm fails the program if a send blocks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zygote/peer.h"
#include "zygote/proto.h"

#include "tap.h"

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

static ino_t
inode_of(int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return 0;
	return st.st_ino;
}

/* A socketpair; sv[0] (the sender) non-blocking with a small send buffer. */
static void
make_pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		bail_out("socketpair: %s", strerror(errno));
	int size = 16384;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
}

static void
on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "Bail out! a peer call blocked\n";
	ssize_t w = write(1, msg, sizeof(msg) - 1);
	(void)w;
	_exit(1);
}

/* What a reader saw: frames in order, each payload's first 4 bytes a sequence
 * number, and the inode of each descriptor that came with it. */
struct seen {
	int frames;
	int bad; /* payloads not as sent */
	int out_of_order;
	int fds;
	ino_t inodes[64];
	int inode_frame[64];
	uint32_t last_type;
};

/* Payload k: its sequence number, then bytes (k + i) & 0xff. */
static void
fill_payload(char *buf, size_t len, uint32_t k)
{
	memcpy(buf, &k, sizeof(k));
	for (size_t i = sizeof(k); i < len; i++)
		buf[i] = (char)((k + i) & 0xff);
}

static int
record(struct peer *p, struct peer_frame *f, void *arg)
{
	(void)p;
	struct seen *s = arg;
	uint32_t k = 0;
	if (f->len >= sizeof(k))
		memcpy(&k, f->payload, sizeof(k));
	if (k != (uint32_t)s->frames)
		s->out_of_order++;
	for (size_t i = sizeof(k); i < f->len; i++)
		if (f->payload[i] != (char)((k + i) & 0xff)) {
			s->bad++;
			break;
		}
	for (int i = 0; i < f->nfds && s->fds < 64; i++) {
		s->inodes[s->fds] = inode_of(f->fds[i]);
		s->inode_frame[s->fds++] = s->frames;
	}
	s->last_type = f->type;
	s->frames++;
	return 0;
}

/* Pump both ends until the sender's queue is empty and want frames arrived. */
static void
pump(struct peer *tx, struct peer *rx, struct seen *s, int want)
{
	for (int rounds = 0; s->frames < want && rounds < 100000; rounds++) {
		struct pollfd pfd[2] = {
			{ .fd = peer_fd(tx), .events = peer_wants_write(tx) ? POLLOUT : 0 },
			{ .fd = peer_fd(rx), .events = POLLIN },
		};
		if (poll(pfd, 2, 5000) <= 0)
			bail_out("poll: nothing moves");
		if (pfd[0].revents & POLLOUT)
			if (peer_flush(tx) < 0)
				bail_out("peer_flush failed");
		if (pfd[1].revents & POLLIN)
			if (peer_read(rx, record, s) < 0)
				bail_out("peer_read failed");
	}
}

static void
test_queue_when_full(void)
{
	int sv[2];
	make_pair(sv);
	struct peer *tx = peer_create(sv[0]);
	struct peer *rx = peer_create(sv[1]);
	enum { FRAMES = 40, LEN = 10000 };
	static char buf[LEN];
	int queued_at = -1, rc = 0;

	alarm(10);
	for (int k = 0; k < FRAMES; k++) {
		fill_payload(buf, LEN, (uint32_t)k);
		rc |= peer_send(tx, PROTO_MSG_NOTICE, buf, LEN, NULL, 0);
		if (queued_at < 0 && peer_queued(tx) > 0)
			queued_at = k;
	}
	alarm(0);
	is_int(rc, 0, "%d sends of %d bytes to a reader that does not read: all 0", FRAMES, LEN);
	ok(queued_at >= 0 && queued_at < FRAMES - 1, "the socket filled at frame %d: queued",
	   queued_at);
	ok(peer_wants_write(tx), "the sender wants POLLOUT");
	ok(peer_queued(tx) > (size_t)LEN, "%zu bytes queued", peer_queued(tx));

	struct seen s = { 0 };
	pump(tx, rx, &s, FRAMES);
	is_int(s.frames, FRAMES, "every frame arrived once the reader read");
	is_int(s.out_of_order, 0, "in order");
	is_int(s.bad, 0, "and intact (never interleaved)");
	ok(!peer_wants_write(tx), "the queue is empty");
	is_int(peer_queued(tx), 0, "nothing queued");
	peer_destroy(tx);
	peer_destroy(rx);
}

/* The test's rule: a NOTICE whose sequence number is a multiple of 5 carries one. */
static int
every_fifth(uint32_t type, const void *payload, uint32_t len)
{
	uint32_t k;
	if (type != PROTO_MSG_NOTICE || len < sizeof(k))
		return 0;
	memcpy(&k, payload, sizeof(k));
	return k % 5 == 0 ? 1 : 0;
}

static void
test_fds_arrive_with_their_frames(void)
{
	int sv[2];
	make_pair(sv);
	struct peer *tx = peer_create(sv[0]);
	struct peer *rx = peer_create(sv[1]);
	peer_set_fds_rule(rx, every_fifth);
	enum { FRAMES = 40, LEN = 7000 };
	static char buf[LEN];
	ino_t inodes[FRAMES];
	int before = count_open_fds();

	alarm(10);
	for (int k = 0; k < FRAMES; k++) {
		int fd = memfd_create("peer", MFD_CLOEXEC);
		inodes[k] = inode_of(fd);
		fill_payload(buf, LEN, (uint32_t)k);
		if (peer_send(tx, PROTO_MSG_NOTICE, buf, LEN, &fd, k % 5 == 0 ? 1 : 0) < 0)
			bail_out("peer_send");
		close(fd);
	}
	alarm(0);
	ok(peer_queued(tx) > 0, "frames with descriptors queued behind a full socket");
	ok(count_open_fds() > before, "the queue holds duplicates of the queued ones");

	struct seen s = { 0 };
	pump(tx, rx, &s, FRAMES);
	is_int(s.frames, FRAMES, "every frame arrived");
	is_int(s.out_of_order + s.bad, 0, "in order and intact");
	is_int(s.fds, FRAMES / 5, "one descriptor for every fifth frame");
	int right = 0;
	for (int i = 0; i < s.fds; i++)
		right += s.inode_frame[i] % 5 == 0 && s.inodes[i] == inodes[s.inode_frame[i]];
	is_int(right, FRAMES / 5, "each with the frame it was sent with (same file)");
	is_int(peer_unclaimed_fds(rx), 0, "none left over");
	is_int(count_open_fds(), before, "the sender closed its duplicates once sent");
	peer_destroy(tx);
	peer_destroy(rx);
}

static void
test_bound_drops_and_closes(void)
{
	int sv[2], pp[2];
	make_pair(sv);
	if (pipe2(pp, O_CLOEXEC) < 0)
		bail_out("pipe2");
	struct peer *tx = peer_create(sv[0]);
	peer_set_limit(tx, 100000, 64);
	static char buf[8000];
	int base = count_open_fds();

	/* Fill the socket with frames without descriptors. */
	alarm(10);
	int k = 0;
	while (peer_queued(tx) == 0 && k < 1000) {
		fill_payload(buf, sizeof(buf), (uint32_t)k++);
		if (peer_send(tx, PROTO_MSG_NOTICE, buf, sizeof(buf), NULL, 0) < 0)
			bail_out("peer_send before the bound");
	}
	/* Now frames that carry the pipe's write end, all queued, to the bound. */
	int r = 0, carried = 0;
	while (r == 0 && carried < 100) {
		fill_payload(buf, sizeof(buf), (uint32_t)k++);
		r = peer_send(tx, PROTO_MSG_NOTICE, buf, sizeof(buf), &pp[1], 1);
		if (r == 0)
			carried++;
	}
	alarm(0);
	is_int(r, -ENOBUFS, "past the bound: -ENOBUFS");
	ok(carried > 0 && peer_queued(tx) <= 100000,
	   "%d frames with a descriptor queued, %zu bytes", carried, peer_queued(tx));
	is_int(count_open_fds() - base, carried, "one duplicate per queued frame");
	is_int(peer_send(tx, PROTO_MSG_NOTICE, "x", 1, NULL, 0), -ENOBUFS,
	       "the peer is broken: the next send fails the same way");
	ok(!peer_wants_write(tx), "and wants no POLLOUT");
	is_int(peer_flush(tx), -ENOBUFS, "flush says so too");

	close(pp[1]);
	peer_destroy(tx);
	is_int(count_open_fds(), base - 2,
	       "destroy closed the socket and the dropped frames' descriptors");
	/* The frames that were sent carried none: with the reader's end closed
	 * too, no write end is left and the pipe reads end of file. */
	close(sv[1]);
	char c;
	is_int(read(pp[0], &c, 1), 0, "the pipe has no writer left");
	close(pp[0]);
}

static void
test_bound_on_descriptors(void)
{
	int sv[2];
	make_pair(sv);
	struct peer *tx = peer_create(sv[0]);
	peer_set_limit(tx, 1u << 30, 2);
	static char buf[8000];
	alarm(10);
	while (peer_queued(tx) == 0)
		if (peer_send(tx, PROTO_MSG_NOTICE, buf, sizeof(buf), NULL, 0) < 0)
			bail_out("peer_send");
	alarm(0);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	is_int(peer_send(tx, PROTO_MSG_NOTICE, "a", 1, &null, 1), 0, "first descriptor queued");
	is_int(peer_send(tx, PROTO_MSG_NOTICE, "b", 1, &null, 1), 0, "second descriptor queued");
	is_int(peer_send(tx, PROTO_MSG_NOTICE, "c", 1, &null, 1), -ENOBUFS,
	       "a third passes the bound of 2 descriptors: -ENOBUFS");
	close(null);
	peer_destroy(tx);
	close(sv[1]);
}

static void
test_idle_peer_takes_a_big_frame(void)
{
	int sv[2];
	make_pair(sv);
	struct peer *tx = peer_create(sv[0]);
	peer_set_limit(tx, 1000, 4);
	static char buf[50000];
	memset(buf, 'a', sizeof(buf));
	is_int(peer_send(tx, PROTO_MSG_NOTICE, buf, sizeof(buf), NULL, 0), 0,
	       "an idle peer takes a frame larger than its bound");
	ok(peer_queued(tx) > 0, "part of it queued");
	is_int(peer_send(tx, PROTO_MSG_NOTICE, "x", 1, NULL, 0), -ENOBUFS,
	       "then nothing more while over the bound");
	peer_destroy(tx);
	close(sv[1]);
}

static void
test_refusals(void)
{
	int sv[2];
	make_pair(sv);
	struct peer *tx = peer_create(sv[0]);
	int fds[PEER_MAX_FDS + 1];
	for (int i = 0; i < PEER_MAX_FDS + 1; i++)
		fds[i] = 0;
	is_int(peer_send(tx, PROTO_MSG_NOTICE, "x", 1, fds, PEER_MAX_FDS + 1), -EINVAL,
	       "too many descriptors: -EINVAL");
	is_int(peer_send(tx, PROTO_MSG_NOTICE, "x", 1, NULL, 1), -EINVAL,
	       "descriptors without an array: -EINVAL");
	int bad = 1000;
	is_int(peer_send(tx, PROTO_MSG_NOTICE, "x", 1, &bad, 1), -EBADF,
	       "a closed descriptor: -EBADF");
	is_int(peer_queued(tx), 0, "nothing queued by refusals");
	is_int(peer_send_text(tx, PROTO_MSG_NOTICE, "still works"), 0,
	       "refusals do not break the peer");
	/* The other end gone: EPIPE (no SIGPIPE), and the peer stays broken. */
	close(sv[1]);
	is_int(peer_send_text(tx, PROTO_MSG_NOTICE, "x"), -EPIPE, "reader gone: -EPIPE");
	is_int(peer_send_text(tx, PROTO_MSG_NOTICE, "x"), -EPIPE, "sticky");
	peer_destroy(tx);
	peer_destroy(NULL);
	ok(1, "peer_destroy(NULL) is fine");
}

/* A receiver that decodes a run hand-over as the zygote does. */
struct handover {
	int32_t id;
	int conn;
	struct proto_decoder dec;
	int done;
	int err;
};

static int
take_handover(struct peer *p, struct peer_frame *f, void *arg)
{
	(void)p;
	struct handover *h = arg;
	if (f->type == PROTO_MSG_Z_RUN) {
		if (proto_get_i32(f->payload, f->len, &h->id) < 0 || f->nfds != 1) {
			h->err = 1;
			return PEER_STOP;
		}
		h->conn = f->fds[0];
		f->fds[0] = -1;
		return 0;
	}
	int r = proto_decoder_feed(&h->dec, f->type, f->payload, f->len, f->fds, f->nfds);
	f->nfds = 0; /* the decoder owns them, even on error */
	if (r < 0)
		h->err = 1;
	if (r == 1)
		h->done = 1;
	return r == 0 ? 0 : PEER_STOP;
}

/* Note the first frame's type and stop: the rest stays buffered. */
static int
first_type(struct peer *p, struct peer_frame *f, void *arg)
{
	(void)p;
	*(int *)arg = (int)f->type;
	return PEER_STOP;
}

static void
test_handover(void)
{
	int sv[2], conn[2], files[3];
	make_pair(sv);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, conn) < 0)
		bail_out("socketpair");
	for (int i = 0; i < 3; i++)
		files[i] = memfd_create("stdio", MFD_CLOEXEC);
	struct peer *tx = peer_create(sv[0]);
	struct peer *rx = peer_create(sv[1]);

	/* A NOTICE first so the hand-over has something before it. */
	peer_send_text(tx, PROTO_MSG_NOTICE, "first");
	static char big[300000];
	memset(big, 'e', sizeof(big) - 1);
	memcpy(big, "E=", 2);
	char *argv[] = { "pytest", "-q", NULL };
	char *env[] = { "A=1", big, NULL };
	struct proto_request req = {
		.kind = PROTO_KIND_RUN,
		.argv = argv,
		.cwd = "/tmp",
		.env = env,
		.fds = { files[0], files[1], files[2] },
		.nfds = 3,
	};
	alarm(10);
	is_int(peer_send_request(tx, 7, &conn[0], 1, &req), 0,
	       "a hand-over with a 300 KB environment: queued, not blocked");
	alarm(0);
	ok(peer_queued(tx) > 0, "most of it waits in the queue");

	/* Read: NOTICE, then the hand-over. */
	struct handover h = { .id = -1, .conn = -1 };
	proto_decoder_init(&h.dec);
	int first = 0;
	while (!first) {
		struct pollfd pfd = { .fd = sv[1], .events = POLLIN };
		poll(&pfd, 1, 5000);
		peer_read(rx, first_type, &first);
	}
	is_int(first, PROTO_MSG_NOTICE, "the NOTICE came first");
	for (int rounds = 0; !h.done && !h.err && rounds < 10000; rounds++) {
		struct pollfd pfd[2] = {
			{ .fd = sv[0], .events = peer_wants_write(tx) ? POLLOUT : 0 },
			{ .fd = sv[1], .events = POLLIN },
		};
		poll(pfd, 2, 5000);
		if (pfd[0].revents & POLLOUT)
			peer_flush(tx);
		if (pfd[1].revents & POLLIN)
			peer_read(rx, take_handover, &h);
	}
	ok(h.done && !h.err, "the request decodes");
	is_int(h.id, 7, "run id 7");
	ok(h.conn >= 0 && inode_of(h.conn) == inode_of(conn[0]), "the connection rode on Z_RUN");
	is_int(h.dec.req.nfds, 3, "three descriptors on FDS");
	int same = 0;
	for (int i = 0; i < 3; i++)
		same += inode_of(h.dec.req.fds[i]) == inode_of(files[i]);
	is_int(same, 3, "the right three, in order");
	ok(h.dec.req.envc == 2 && strlen(h.dec.req.env[1]) == sizeof(big) - 1,
	   "the environment arrived whole");
	is_int(peer_unclaimed_fds(rx), 0, "no descriptor left unclaimed");
	proto_decoder_finish(&h.dec);
	if (h.conn >= 0)
		close(h.conn);
	for (int i = 0; i < 3; i++)
		close(files[i]);
	close(conn[0]);
	close(conn[1]);
	peer_destroy(tx);
	peer_destroy(rx);
}

static int
stop_after_first(struct peer *p, struct peer_frame *f, void *arg)
{
	(void)p;
	(void)f;
	int *n = arg;
	(*n)++;
	return PEER_STOP;
}

static int
count_frames(struct peer *p, struct peer_frame *f, void *arg)
{
	(void)p;
	(void)f;
	(*(int *)arg)++;
	return 0;
}

static void
test_reader_edges(void)
{
	int sv[2];
	make_pair(sv);
	struct peer *tx = peer_create(sv[0]);
	struct peer *rx = peer_create(sv[1]);
	int n = 0;
	is_int(peer_read(rx, count_frames, &n), 1, "nothing to read yet: 1 (open)");
	peer_send_text(tx, PROTO_MSG_NOTICE, "one");
	peer_send_text(tx, PROTO_MSG_NOTICE, "two");
	peer_send_text(tx, PROTO_MSG_NOTICE, "three");
	is_int(peer_read(rx, stop_after_first, &n), PEER_STOP, "a handler that stops: PEER_STOP");
	is_int(n, 1, "after one frame");
	n = 0;
	is_int(peer_read(rx, count_frames, &n), 1, "the next read hands out the rest");
	is_int(n, 2, "two frames");

	/* A cut-off frame, then end of file. */
	char half[6] = { 42, 0, 0, 0, 9, 0 };
	if (write(sv[0], half, sizeof(half)) != (ssize_t)sizeof(half))
		bail_out("write");
	peer_destroy(tx);
	n = 0;
	is_int(peer_read(rx, count_frames, &n), 1, "half a header: no frame yet");
	is_int(peer_read(rx, count_frames, &n), 0, "then end of file: 0");
	ok(peer_read_partial(rx), "with part of a frame buffered");
	is_int(n, 0, "no frame handed out");
	peer_destroy(rx);

	/* An oversized header. */
	make_pair(sv);
	rx = peer_create(sv[1]);
	struct proto_hdr big = { .type = PROTO_MSG_NOTICE, .len = PROTO_MAX_PAYLOAD + 1 };
	if (write(sv[0], &big, sizeof(big)) != (ssize_t)sizeof(big))
		bail_out("write");
	is_int(peer_read(rx, count_frames, &n), -EMSGSIZE, "oversized frame: -EMSGSIZE");
	peer_destroy(rx);
	close(sv[0]);
}

/* On a blocking socket, a send larger than the buffer blocks until written. */
static void
test_blocking(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		bail_out("socketpair");
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		struct peer *rx = peer_create(sv[1]);
		struct seen s = { 0 };
		while (s.frames < 3)
			if (peer_read(rx, record, &s) <= 0)
				_exit(1);
		_exit(s.bad || s.out_of_order ? 2 : 0);
	}
	close(sv[1]);
	struct peer *tx = peer_create(sv[0]);
	static char buf[400000];
	int rc = 0;
	for (uint32_t k = 0; k < 3; k++) {
		fill_payload(buf, sizeof(buf), k);
		rc |= peer_send(tx, PROTO_MSG_NOTICE, buf, sizeof(buf), NULL, 0);
		rc |= (int)peer_queued(tx);
	}
	is_int(rc, 0, "blocking socket: each send written whole, nothing queued");
	int st;
	waitpid(pid, &st, 0);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reader got them intact (status %#x)", st);
	peer_destroy(tx);
}

int
main(void)
{
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_DFL); /* peer uses MSG_NOSIGNAL: no SIGPIPE even so */
	test_queue_when_full();
	test_fds_arrive_with_their_frames();
	test_bound_drops_and_closes();
	test_bound_on_descriptors();
	test_idle_peer_takes_a_big_frame();
	test_refusals();
	test_handover();
	test_reader_edges();
	test_blocking();
	return done_testing();
}
