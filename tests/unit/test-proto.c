/*
 * Unit tests for src/common/proto.c: a whole request encoded and decoded back
 * message by message, then every refusal of the decoder's state machine and
 * the framing and size limits. fds come from real pipes so that ownership
 * (closed on error, kept on success) can be checked with fcntl.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/proto.h"

#include "tap.h"

/* Is fd closed? */
static int
fd_closed(int fd)
{
	return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

/* Three fresh close-on-exec descriptors (two pipes, one end dropped). */
static void
make_fds(int fds[3])
{
	int a[2], b[2];
	if (pipe2(a, O_CLOEXEC) < 0 || pipe2(b, O_CLOEXEC) < 0)
		bail_out("pipe2: %s", strerror(errno));
	fds[0] = a[0];
	fds[1] = a[1];
	fds[2] = b[0];
	close(b[1]);
}

static void
close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0 && !fd_closed(fds[i]))
			close(fds[i]);
}

static int
feed_hello_full(struct proto_decoder *d, uint32_t magic, uint32_t version, uint32_t kind)
{
	struct proto_hello h = { .magic = magic, .version = version, .kind = kind, .flags = 0 };
	return proto_decoder_feed(d, PROTO_MSG_HELLO, &h, sizeof(h), NULL, 0);
}

/* A version-1 HELLO: no BUILD follows (what STATUS, STOP and WAIT send). */
static int
feed_hello(struct proto_decoder *d, uint32_t kind)
{
	return feed_hello_full(d, PROTO_MAGIC, PROTO_VERSION_STABLE, kind);
}

/* Feed a string payload including its terminating NUL. */
static int
feed_str(struct proto_decoder *d, uint32_t type, const char *s)
{
	return proto_decoder_feed(d, type, s, (uint32_t)strlen(s) + 1, NULL, 0);
}

static int
feed_done(struct proto_decoder *d)
{
	return proto_decoder_feed(d, PROTO_MSG_DONE, NULL, 0, NULL, 0);
}

/* A decoder that has accepted HELLO(RUN), ARGV, CWD and ENV. */
static void
start_run(struct proto_decoder *d)
{
	proto_decoder_init(d);
	if (feed_hello(d, PROTO_KIND_RUN) != 0 ||
	    proto_decoder_feed(d, PROTO_MSG_ARGV, "pytest\0-q\0", 10, NULL, 0) != 0 ||
	    feed_str(d, PROTO_MSG_CWD, "/srv/project") != 0 ||
	    proto_decoder_feed(d, PROTO_MSG_ENV, "A=1\0B=2\0", 8, NULL, 0) != 0)
		bail_out("start_run: %s", d->error);
}

/* Check a refusal: -EPROTO, state ERROR and an error text containing needle. */
static void
refused(struct proto_decoder *d, int r, const char *needle, const char *what)
{
	is_int(r, -EPROTO, "%s: refused with -EPROTO", what);
	is_int(d->state, PROTO_ST_ERROR, "%s: decoder in the ERROR state", what);
	has_str(d->error, needle, "%s: error text", what);
}

static void
test_roundtrip(void)
{
	char *argv[] = { "pytest", "-q", "", "-k", "a and not b", NULL };
	char *env[] = { "A=1", "PATH=/usr/bin:/bin", "EMPTY=", "X=y=z", NULL };
	int pipes[3], sent[3];
	struct proto_request req = {
		.kind = PROTO_KIND_RUN,
		.flags = 0x5,
		.argv = argv,
		.argc = 5,
		.cwd = "/home/user/project dir",
		.env = env,
		.envc = 4,
		.nfds = 3,
	};
	struct proto_buf b = { 0 };
	struct proto_decoder d;
	size_t fds_off = 0;

	make_fds(pipes);
	for (int i = 0; i < 3; i++) {
		req.fds[i] = pipes[i];
		sent[i] = fcntl(pipes[i], F_DUPFD_CLOEXEC, 0);
	}

	is_int(proto_request_encode(&b, &req, &fds_off), 0, "encode a run request");
	ok(fds_off + sizeof(struct proto_hdr) + 4 <= b.len, "FDS offset %zu inside the buffer",
	   fds_off);
	struct proto_hdr fh;
	memcpy(&fh, b.data + fds_off, sizeof(fh));
	is_int(fh.type, PROTO_MSG_FDS, "FDS offset points at the FDS header");
	is_int(fh.len, 4, "FDS payload is one uint32");

	proto_decoder_init(&d);
	static const uint32_t want_types[] = { PROTO_MSG_HELLO, PROTO_MSG_BUILD, PROTO_MSG_ARGV,
					       PROTO_MSG_CWD,   PROTO_MSG_ENV,   PROTO_MSG_FDS,
					       PROTO_MSG_DONE };
	size_t off = 0;
	unsigned nmsg = 0;
	int last = -1;
	while (off < b.len) {
		struct proto_hdr h;
		long n = proto_frame(b.data + off, b.len - off, &h);
		if (n <= 0) {
			ok(0, "proto_frame at offset %zu returned %ld", off, n);
			break;
		}
		if (nmsg < ARRAY_SIZE(want_types))
			is_int(h.type, want_types[nmsg], "message %u type", nmsg);
		int *fds = off == fds_off ? sent : NULL;
		last = proto_decoder_feed(&d, h.type, b.data + off + sizeof(h), h.len, fds,
					  fds ? 3 : 0);
		is_int(last, h.type == PROTO_MSG_DONE ? 1 : 0, "feed message %u (type %u): %s",
		       nmsg, h.type, d.error);
		off += (size_t)n;
		nmsg++;
	}
	is_int(off, b.len, "frames cover the whole buffer exactly");
	is_int(nmsg, 7, "seven messages from HELLO to DONE");
	is_int(last, 1, "the request is complete");
	is_int(d.state, PROTO_ST_DONE, "decoder state DONE");

	is_int(d.req.kind, PROTO_KIND_RUN, "kind round-trips");
	is_int(d.req.flags, 0x5, "flags round-trip");
	is_int(d.req.argc, 5, "argc");
	for (size_t i = 0; i < 5 && i < d.req.argc; i++)
		is_str(d.req.argv[i], argv[i], "argv[%zu]", i);
	ok(d.req.argc == 5 && d.req.argv[5] == NULL, "argv is NULL-terminated");
	is_str(d.req.cwd, "/home/user/project dir", "cwd");
	is_int(d.req.envc, 4, "envc");
	for (size_t i = 0; i < 4 && i < d.req.envc; i++)
		is_str(d.req.env[i], env[i], "env[%zu]", i);
	ok(d.req.envc == 4 && d.req.env[4] == NULL, "env is NULL-terminated");
	is_int(d.req.nfds, 3, "three fds");
	for (int i = 0; i < 3; i++)
		is_int(d.req.fds[i], sent[i], "fd %d is the one that came with FDS", i);
	ok(!fd_closed(sent[0]) && !fd_closed(sent[1]) && !fd_closed(sent[2]),
	   "accepted fds are still open");

	/* A consumer steals an fd by setting it to -1; finish closes the rest. */
	int stolen = d.req.fds[1];
	d.req.fds[1] = -1;
	proto_decoder_finish(&d);
	ok(fd_closed(sent[0]) && fd_closed(sent[2]), "finish closes the fds it still owns");
	ok(!fd_closed(stolen), "finish leaves a stolen fd open");
	ok(d.req.argv == NULL && d.req.env == NULL && d.req.cwd == NULL,
	   "finish clears the request");
	close(stolen);
	/* Twice is harmless: new fds that reuse the numbers stay open. */
	int reuse[3];
	make_fds(reuse);
	proto_decoder_finish(&d);
	ok(!fd_closed(reuse[0]) && !fd_closed(reuse[1]) && !fd_closed(reuse[2]),
	   "a second finish closes nothing");
	close_fds(reuse, 3);

	close_fds(pipes, 3);
	proto_buf_free(&b);
	ok(b.data == NULL && b.len == 0 && b.cap == 0, "proto_buf_free resets the buffer");
}

/* An empty ARGV and ENV decode to empty, NULL-terminated vectors. */
static void
test_empty_vectors(void)
{
	struct proto_request req = { .kind = PROTO_KIND_RUN, .cwd = "/", .nfds = 3 };
	struct proto_buf b = { 0 };
	struct proto_decoder d;
	size_t fds_off = 0;
	int fds[3];

	make_fds(fds);
	is_int(proto_request_encode(&b, &req, &fds_off), 0, "encode a run with NULL argv and env");
	proto_decoder_init(&d);
	int r = 0;
	for (size_t off = 0; off < b.len && r >= 0;) {
		struct proto_hdr h;
		long n = proto_frame(b.data + off, b.len - off, &h);
		if (n <= 0)
			break;
		int here = off == fds_off;
		r = proto_decoder_feed(&d, h.type, b.data + off + sizeof(h), h.len,
				       here ? fds : NULL, here ? 3 : 0);
		off += (size_t)n;
	}
	is_int(r, 1, "empty-vector request accepted: %s", d.error);
	ok(d.req.argv && d.req.argv[0] == NULL, "argv is an empty vector");
	is_int(d.req.argc, 0, "argc 0");
	ok(d.req.env && d.req.env[0] == NULL, "env is an empty vector");
	is_str(d.req.cwd, "/", "cwd '/' accepted");
	proto_decoder_finish(&d);
	ok(fd_closed(fds[0]) && fd_closed(fds[1]) && fd_closed(fds[2]), "finish closed the fds");
	proto_buf_free(&b);
}

static void
test_status(void)
{
	struct proto_request req = { .kind = PROTO_KIND_STATUS };
	struct proto_buf b = { 0 };
	struct proto_decoder d;
	size_t fds_off = 0;
	struct proto_hdr h;

	is_int(proto_request_encode(&b, &req, &fds_off), 0, "encode a status request");
	is_int(fds_off, (size_t)-1, "status request has no FDS offset");
	is_int(b.len, 2 * sizeof(h) + sizeof(struct proto_hello), "status request is HELLO + DONE");

	proto_decoder_init(&d);
	long n = proto_frame(b.data, b.len, &h);
	is_int(n, sizeof(h) + sizeof(struct proto_hello), "first frame is HELLO");
	is_int(h.type, PROTO_MSG_HELLO, "HELLO type");
	is_int(proto_decoder_feed(&d, h.type, b.data + sizeof(h), h.len, NULL, 0), 0,
	       "HELLO accepted");
	long m = proto_frame(b.data + n, b.len - (size_t)n, &h);
	is_int(m, sizeof(h), "second frame is an empty DONE");
	is_int(h.type, PROTO_MSG_DONE, "DONE type");
	is_int(proto_decoder_feed(&d, h.type, NULL, 0, NULL, 0), 1,
	       "STATUS with HELLO+DONE complete");
	is_int(d.req.kind, PROTO_KIND_STATUS, "kind STATUS");
	ok(d.req.argv == NULL && d.req.cwd == NULL && d.req.env == NULL, "no body");
	is_int(d.req.nfds, 0, "no fds");
	proto_decoder_finish(&d);
	proto_buf_free(&b);

	/* The other non-run kinds need no body either. */
	for (uint32_t k = PROTO_KIND_STOP; k <= PROTO_KIND_LAST; k++) {
		proto_decoder_init(&d);
		is_int(feed_hello(&d, k), 0, "HELLO kind %u", k);
		is_int(feed_done(&d), 1, "kind %u complete with HELLO+DONE", k);
		proto_decoder_finish(&d);
	}
}

static void
test_hello_refusals(void)
{
	struct proto_decoder d;
	int r;

	proto_decoder_init(&d);
	r = proto_decoder_feed(&d, PROTO_MSG_ARGV, "pytest\0", 7, NULL, 0);
	refused(&d, r, "HELLO", "ARGV before HELLO");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	refused(&d, feed_done(&d), "HELLO", "DONE before HELLO");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	struct proto_hello h = { PROTO_MAGIC, PROTO_VERSION, PROTO_KIND_STATUS, 0 };
	r = proto_decoder_feed(&d, PROTO_MSG_HELLO, &h, sizeof(h) - 1, NULL, 0);
	refused(&d, r, "HELLO", "short HELLO");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	refused(&d, feed_hello_full(&d, 0x50595a47, PROTO_VERSION, PROTO_KIND_RUN), "magic",
		"bad magic");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	r = feed_hello_full(&d, PROTO_MAGIC, PROTO_VERSION + 1, PROTO_KIND_RUN);
	refused(&d, r, "restart", "version mismatch");
	has_str(d.error, "version", "version mismatch: says it is about the version");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	refused(&d, feed_hello_full(&d, PROTO_MAGIC, 0, PROTO_KIND_RUN), "restart", "version 0");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	refused(&d, feed_hello(&d, 0), "kind", "kind 0");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	refused(&d, feed_hello(&d, PROTO_KIND_LAST + 1), "kind", "unknown kind");
	proto_decoder_finish(&d);

	/* A refused decoder stays refused. */
	proto_decoder_init(&d);
	feed_hello(&d, 99);
	r = feed_hello(&d, PROTO_KIND_STATUS);
	is_int(r, -EPROTO, "a good HELLO after an error is still refused");
	is_int(d.state, PROTO_ST_ERROR, "state stays ERROR");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, feed_hello(&d, PROTO_KIND_RUN), "unexpected", "second HELLO");
	proto_decoder_finish(&d);
}

/* Version 2: BUILD right after HELLO; a run of another build is a MISMATCH,
 * a status or a stop of another build is served. */
static void
test_build(void)
{
	struct proto_decoder d;
	char version[32], build[PROTO_BUILD_MAX + 1], proto[8];

	proto_decoder_init(&d);
	is_int(feed_hello_full(&d, PROTO_MAGIC, PROTO_VERSION, PROTO_KIND_RUN), 0, "v2 HELLO");
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_ARGV, "pytest\0", 7, NULL, 0), "BUILD",
		"ARGV right after a v2 HELLO");
	is_int(d.mismatch, 0, "not a mismatch");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello_full(&d, PROTO_MAGIC, PROTO_VERSION, PROTO_KIND_RUN);
	refused(&d, feed_str(&d, PROTO_MSG_BUILD, "0123456789ab"), "version=", "another build");
	is_int(d.mismatch, 1, "another build: a mismatch");
	proto_kv_get(d.error, "version", version, sizeof(version));
	proto_kv_get(d.error, "build", build, sizeof(build));
	proto_kv_get(d.error, "protocol", proto, sizeof(proto));
	ok(*version && strlen(build) == 12 && strcmp(build, "0123456789ab") != 0,
	   "the mismatch names the server's version %s and build %s", version, build);
	is_int(atoi(proto), PROTO_VERSION, "and its protocol");
	proto_decoder_finish(&d);

	/* What this build's encoder sends is accepted (the round trip above). */
	proto_decoder_init(&d);
	feed_hello_full(&d, PROTO_MAGIC, PROTO_VERSION, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_BUILD, "abc", 3, NULL, 0), "malformed",
		"BUILD without its NUL");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello_full(&d, PROTO_MAGIC, PROTO_VERSION, PROTO_KIND_RUN);
	refused(&d, feed_str(&d, PROTO_MSG_BUILD, "ab cd"), "malformed", "BUILD with a space");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello_full(&d, PROTO_MAGIC, PROTO_VERSION, PROTO_KIND_RUN);
	char big[PROTO_BUILD_MAX + 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	refused(&d, feed_str(&d, PROTO_MSG_BUILD, big), "malformed", "BUILD too long");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, feed_str(&d, PROTO_MSG_BUILD, "0123456789ab"), "BUILD",
		"BUILD after a version-1 HELLO");
	proto_decoder_finish(&d);

	/* stop is the way out of a mismatch: served whatever the build. */
	for (uint32_t k = PROTO_KIND_STATUS; k <= PROTO_KIND_LAST; k++) {
		proto_decoder_init(&d);
		feed_hello_full(&d, PROTO_MAGIC, PROTO_VERSION, k);
		is_int(feed_str(&d, PROTO_MSG_BUILD, "0123456789ab"), 0,
		       "kind %u of another build: BUILD accepted", k);
		is_int(feed_done(&d), 1, "and the request is complete");
		proto_decoder_finish(&d);
	}
}

static void
test_order_refusals(void)
{
	struct proto_decoder d;

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	is_int(feed_str(&d, PROTO_MSG_CWD, "/tmp"), 0, "CWD first is fine");
	refused(&d, feed_str(&d, PROTO_MSG_ARGV, "pytest"), "out of order", "ARGV after CWD");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	is_int(feed_str(&d, PROTO_MSG_ARGV, "pytest"), 0, "ARGV accepted");
	refused(&d, feed_str(&d, PROTO_MSG_ARGV, "pytest"), "out of order", "duplicate ARGV");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	feed_str(&d, PROTO_MSG_CWD, "/tmp");
	refused(&d, feed_str(&d, PROTO_MSG_CWD, "/srv"), "out of order", "duplicate CWD");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	is_int(feed_str(&d, PROTO_MSG_ENV, "A=1"), 0, "ENV accepted");
	refused(&d, feed_str(&d, PROTO_MSG_ENV, "B=2"), "out of order", "duplicate ENV");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	feed_str(&d, PROTO_MSG_ENV, "A=1");
	refused(&d, feed_str(&d, PROTO_MSG_CWD, "/tmp"), "out of order", "CWD after ENV");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	uint32_t zero = 0;
	is_int(proto_decoder_feed(&d, PROTO_MSG_FDS, &zero, 4, NULL, 0), 0, "FDS with no fds");
	refused(&d, feed_str(&d, PROTO_MSG_ENV, "A=1"), "out of order", "ENV after FDS");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, 99, NULL, 0, NULL, 0), "unexpected", "unknown type 99");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	int32_t sig = 2;
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_SIGNAL, &sig, 4, NULL, 0), "unexpected",
		"SIGNAL inside a request");
	proto_decoder_finish(&d);
}

static void
test_body_refusals(void)
{
	struct proto_decoder d;

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, feed_str(&d, PROTO_MSG_CWD, "relative/dir"), "CWD", "CWD not absolute");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_CWD, "/tmp", 4, NULL, 0), "CWD",
		"CWD not NUL-terminated");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_CWD, "/tmp\0/etc\0", 10, NULL, 0), "CWD",
		"CWD with an embedded NUL");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_CWD, "", 0, NULL, 0), "CWD", "empty CWD");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_CWD, "", 1, NULL, 0), "CWD", "CWD of one NUL");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_ARGV, "pytest\0-q", 9, NULL, 0), "ARGV",
		"ARGV not NUL-terminated");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_ENV, "A=1\0NOEQUALS\0", 13, NULL, 0), "K=V",
		"ENV entry without '='");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_ENV, "=x\0", 3, NULL, 0), "K=V",
		"ENV entry with an empty name");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_ENV, "A=1", 3, NULL, 0), "ENV",
		"ENV not NUL-terminated");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_STATUS);
	refused(&d, proto_decoder_feed(&d, PROTO_MSG_DONE, "x", 1, NULL, 0), "DONE",
		"DONE with a payload");
	proto_decoder_finish(&d);
}

static void
test_fd_refusals(void)
{
	struct proto_decoder d;
	int fds[3];
	uint32_t count;

	/* fds with a non-FDS message are refused and closed. */
	make_fds(fds);
	start_run(&d);
	int r = proto_decoder_feed(&d, PROTO_MSG_DONE, NULL, 0, fds, 3);
	refused(&d, r, "descriptors", "fds attached to DONE");
	ok(fd_closed(fds[0]) && fd_closed(fds[1]) && fd_closed(fds[2]),
	   "fds attached to DONE were closed");
	proto_decoder_finish(&d);

	make_fds(fds);
	proto_decoder_init(&d);
	struct proto_hello h = { PROTO_MAGIC, PROTO_VERSION, PROTO_KIND_RUN, 0 };
	r = proto_decoder_feed(&d, PROTO_MSG_HELLO, &h, sizeof(h), fds, 2);
	refused(&d, r, "descriptors", "fds attached to HELLO");
	ok(fd_closed(fds[0]) && fd_closed(fds[1]), "fds attached to HELLO were closed");
	ok(!fd_closed(fds[2]), "an fd not handed over stays open");
	close(fds[2]);
	proto_decoder_finish(&d);

	make_fds(fds);
	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	r = proto_decoder_feed(&d, PROTO_MSG_ARGV, "pytest\0", 7, fds, 1);
	refused(&d, r, "descriptors", "fd attached to ARGV");
	ok(fd_closed(fds[0]), "fd attached to ARGV was closed");
	close_fds(fds + 1, 2);
	proto_decoder_finish(&d);

	/* FDS count mismatch. */
	make_fds(fds);
	start_run(&d);
	count = 3;
	r = proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 4, fds, 2);
	refused(&d, r, "count", "FDS says 3, 2 sent");
	ok(fd_closed(fds[0]) && fd_closed(fds[1]), "mismatched fds were closed");
	is_int(d.req.nfds, 0, "no fds recorded after the mismatch");
	close_fds(fds + 2, 1);
	proto_decoder_finish(&d);

	make_fds(fds);
	start_run(&d);
	count = 2;
	r = proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 4, fds, 3);
	refused(&d, r, "count", "FDS says 2, 3 sent");
	ok(fd_closed(fds[0]) && fd_closed(fds[1]) && fd_closed(fds[2]), "all three were closed");
	proto_decoder_finish(&d);

	int four[4];
	make_fds(four);
	four[3] = dup(four[0]);
	start_run(&d);
	count = 4;
	r = proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 4, four, 4);
	refused(&d, r, "count", "FDS with four fds (over PROTO_MAX_FDS)");
	ok(fd_closed(four[0]) && fd_closed(four[1]) && fd_closed(four[2]) && fd_closed(four[3]),
	   "all four were closed");
	proto_decoder_finish(&d);

	make_fds(fds);
	start_run(&d);
	count = 3;
	r = proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 2, fds, 3);
	refused(&d, r, "FDS", "FDS payload of the wrong size");
	ok(fd_closed(fds[0]) && fd_closed(fds[1]) && fd_closed(fds[2]), "its fds were closed");
	proto_decoder_finish(&d);

	/* A second FDS is out of order; the first set stays owned by the decoder. */
	int more[3];
	make_fds(fds);
	make_fds(more);
	start_run(&d);
	count = 3;
	is_int(proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 4, fds, 3), 0, "first FDS accepted");
	r = proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 4, more, 3);
	refused(&d, r, "out of order", "second FDS");
	ok(fd_closed(more[0]) && fd_closed(more[1]) && fd_closed(more[2]),
	   "second FDS's fds were closed");
	ok(!fd_closed(fds[0]) && !fd_closed(fds[1]) && !fd_closed(fds[2]),
	   "first FDS's fds are still held");
	proto_decoder_finish(&d);
	ok(fd_closed(fds[0]) && fd_closed(fds[1]) && fd_closed(fds[2]),
	   "finish closed the first FDS's fds");
}

static void
test_done_refusals(void)
{
	struct proto_decoder d;
	int fds[3];
	uint32_t count = 3;

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	refused(&d, feed_done(&d), "incomplete", "RUN with no body");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	feed_str(&d, PROTO_MSG_ARGV, "pytest");
	feed_str(&d, PROTO_MSG_CWD, "/tmp");
	refused(&d, feed_done(&d), "incomplete", "RUN without ENV and FDS");
	proto_decoder_finish(&d);

	make_fds(fds);
	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	feed_str(&d, PROTO_MSG_ARGV, "pytest");
	feed_str(&d, PROTO_MSG_ENV, "A=1");
	proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 4, fds, 3);
	refused(&d, feed_done(&d), "incomplete", "RUN without CWD");
	proto_decoder_finish(&d);
	ok(fd_closed(fds[0]) && fd_closed(fds[1]) && fd_closed(fds[2]),
	   "fds of a refused request are closed by finish");

	start_run(&d);
	count = 0;
	is_int(proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 4, NULL, 0), 0, "FDS with zero fds");
	refused(&d, feed_done(&d), "three", "RUN with zero fds");
	proto_decoder_finish(&d);

	/* Anything after DONE is refused, and fds that come with it are closed. */
	make_fds(fds);
	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_STATUS);
	is_int(feed_done(&d), 1, "STATUS complete");
	refused(&d, feed_str(&d, PROTO_MSG_ARGV, "pytest"), "after the request ended",
		"ARGV after DONE");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_STATUS);
	feed_done(&d);
	refused(&d, feed_done(&d), "after the request ended", "DONE after DONE");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_STATUS);
	feed_done(&d);
	int r = proto_decoder_feed(&d, PROTO_MSG_FDS, &count, 4, fds, 3);
	is_int(r, -EPROTO, "FDS after DONE refused");
	ok(fd_closed(fds[0]) && fd_closed(fds[1]) && fd_closed(fds[2]),
	   "fds after DONE were closed");
	proto_decoder_finish(&d);
}

static void
test_limits(void)
{
	struct proto_decoder d;
	int r;

	/* One message over PROTO_MAX_PAYLOAD. */
	size_t big = PROTO_MAX_PAYLOAD + 1;
	char *p = calloc(1, big);
	if (!p)
		bail_out("calloc");
	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	r = proto_decoder_feed(&d, PROTO_MSG_ARGV, p, (uint32_t)big, NULL, 0);
	refused(&d, r, "too large", "payload over PROTO_MAX_PAYLOAD");
	proto_decoder_finish(&d);

	/* Exactly PROTO_MAX_PAYLOAD is fine. */
	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	memset(p, 'a', PROTO_MAX_PAYLOAD - 1);
	p[PROTO_MAX_PAYLOAD - 1] = '\0';
	is_int(proto_decoder_feed(&d, PROTO_MSG_ARGV, p, PROTO_MAX_PAYLOAD, NULL, 0), 0,
	       "ARGV of exactly PROTO_MAX_PAYLOAD accepted");
	is_int(d.req.argc, 1, "one 1 MiB argument");
	proto_decoder_finish(&d);

	/*
	 * The whole-request limit. Each body message is accepted at most once
	 * and is at most 1 MiB, so an honest sequence never reaches 8 MiB;
	 * preset the running total to show the limit is enforced.
	 */
	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	d.total = PROTO_MAX_REQUEST - 4;
	is_int(feed_str(&d, PROTO_MSG_ARGV, "abc"), 0,
	       "request of exactly PROTO_MAX_REQUEST accepted");
	refused(&d, feed_str(&d, PROTO_MSG_CWD, "/"), "request too large",
		"request over PROTO_MAX_REQUEST");
	proto_decoder_finish(&d);

	/* PROTO_MAX_STRINGS empty strings are fine, one more is not. */
	memset(p, 0, PROTO_MAX_STRINGS + 1);
	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	r = proto_decoder_feed(&d, PROTO_MSG_ARGV, p, PROTO_MAX_STRINGS, NULL, 0);
	is_int(r, 0, "ARGV with PROTO_MAX_STRINGS strings accepted");
	is_int(d.req.argc, PROTO_MAX_STRINGS, "argc is PROTO_MAX_STRINGS");
	ok(d.req.argc == PROTO_MAX_STRINGS && d.req.argv[PROTO_MAX_STRINGS] == NULL,
	   "and NULL-terminated");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	r = proto_decoder_feed(&d, PROTO_MSG_ARGV, p, PROTO_MAX_STRINGS + 1, NULL, 0);
	refused(&d, r, "ARGV", "ARGV with PROTO_MAX_STRINGS + 1 strings");
	proto_decoder_finish(&d);

	proto_decoder_init(&d);
	feed_hello(&d, PROTO_KIND_RUN);
	for (size_t i = 0; i <= PROTO_MAX_STRINGS; i++)
		memcpy(p + 4 * i, "a=b", 4);
	r = proto_decoder_feed(&d, PROTO_MSG_ENV, p, 4 * (PROTO_MAX_STRINGS + 1), NULL, 0);
	refused(&d, r, "ENV", "ENV with PROTO_MAX_STRINGS + 1 entries");
	proto_decoder_finish(&d);

	/* The encoder refuses what the decoder would. */
	struct proto_buf b = { 0 };
	is_int(proto_buf_put(&b, PROTO_MSG_NOTICE, p, big), -EMSGSIZE,
	       "proto_buf_put refuses an oversized payload");
	is_int(b.len, 0, "and appends nothing");
	char **many = calloc(PROTO_MAX_STRINGS + 2, sizeof(char *));
	if (!many)
		bail_out("calloc");
	for (size_t i = 0; i <= PROTO_MAX_STRINGS; i++)
		many[i] = "";
	is_int(proto_buf_put_strings(&b, PROTO_MSG_ARGV, many), -E2BIG,
	       "proto_buf_put_strings refuses PROTO_MAX_STRINGS + 1 strings");
	is_int(b.len, 0, "and appends nothing");
	free(many);
	proto_buf_free(&b);
	free(p);
}

static void
test_frame(void)
{
	struct proto_buf b = { 0 };
	struct proto_hdr h = { 0 };

	is_int(proto_buf_put(&b, PROTO_MSG_NOTICE, "hello", 5), 0, "put a NOTICE");
	is_int(proto_buf_put_i32(&b, PROTO_MSG_EXIT, -7), 0, "put an EXIT");
	is_int(b.len, 8 + 5 + 8 + 4, "two messages, 25 bytes");

	int partial_ok = 1;
	for (size_t avail = 0; avail < 8 + 5; avail++)
		if (proto_frame(b.data, avail, &h) != 0)
			partial_ok = 0;
	ok(partial_ok, "partial header or payload: proto_frame returns 0 for every short length");
	is_int(proto_frame(b.data, 8 + 5, &h), 13, "whole NOTICE frame");
	is_int(h.type, PROTO_MSG_NOTICE, "NOTICE type");
	is_int(h.len, 5, "NOTICE length");
	ok(memcmp(b.data + 8, "hello", 5) == 0, "NOTICE payload");
	is_int(proto_frame(b.data, b.len, &h), 13, "frame with more bytes after it");

	is_int(proto_frame(b.data + 13, 11, &h), 0, "EXIT frame one byte short");
	is_int(proto_frame(b.data + 13, 12, &h), 12, "EXIT frame");
	int32_t v = 0;
	is_int(proto_get_i32(b.data + 13 + 8, h.len, &v), 0, "proto_get_i32");
	is_int(v, -7, "exit code round-trips");
	is_int(proto_get_i32(b.data + 13 + 8, 3, &v), -EPROTO, "proto_get_i32 refuses 3 bytes");
	is_int(proto_get_i32(b.data, 5, &v), -EPROTO, "proto_get_i32 refuses 5 bytes");

	/* Oversized headers are refused before the payload arrives. */
	struct proto_hdr big = { .type = PROTO_MSG_ARGV, .len = PROTO_MAX_PAYLOAD + 1 };
	is_int(proto_frame(&big, sizeof(big), &h), -EMSGSIZE, "header announcing MAX+1 bytes");
	big.len = UINT32_MAX;
	is_int(proto_frame(&big, sizeof(big), &h), -EMSGSIZE, "header announcing 4 GiB");
	big.len = PROTO_MAX_PAYLOAD;
	is_int(proto_frame(&big, sizeof(big), &h), 0, "header announcing exactly MAX: need more");
	is_int(proto_frame(&big, 4, &h), 0, "half a header: need more");

	proto_buf_free(&b);
}

int
main(void)
{
	test_roundtrip();
	test_empty_vectors();
	test_status();
	test_hello_refusals();
	test_build();
	test_order_refusals();
	test_body_refusals();
	test_fd_refusals();
	test_done_refusals();
	test_limits();
	test_frame();
	/* proto_kv_get: the key=value text of STATUS and Z_READY. */
	{
		char v[8];
		const char *text = "pid=12\nmodules=345678901\nstate=ready\nstate2=x\n";
		is_int(proto_kv_get(text, "state", v, sizeof(v)), 1, "kv: a key is found");
		is_str(v, "ready", "kv: its value, not a longer key's");
		is_int(proto_kv_get(text, "modules", v, sizeof(v)), 1, "kv: a long value");
		is_str(v, "3456789", "kv: truncated to the buffer");
		is_int(proto_kv_get(text, "stat", v, sizeof(v)), 0, "kv: a prefix is not a key");
		is_str(v, "", "kv: absent gives an empty value");
		is_int(proto_kv_get("", "pid", v, sizeof(v)), 0, "kv: empty text");
	}
	/* proto_msg_fds: which messages carry descriptors, and how many. */
	{
		uint32_t n = 3, over = PROTO_MAX_FDS + 1;
		int32_t id = 1;
		is_int(proto_msg_fds(PROTO_MSG_FDS, &n, sizeof(n)), 3, "fds: FDS its count");
		is_int(proto_msg_fds(PROTO_MSG_FDS, &over, sizeof(over)), 0,
		       "fds: an FDS over the limit none (the decoder refuses it)");
		is_int(proto_msg_fds(PROTO_MSG_FDS, &n, 2), 0, "fds: a malformed FDS none");
		is_int(proto_msg_fds(PROTO_MSG_Z_RUN, &id, sizeof(id)), 1,
		       "fds: Z_RUN the client connection");
		is_int(proto_msg_fds(PROTO_MSG_NOTICE, "x", 1), 0, "fds: others none");
	}
	return done_testing();
}
