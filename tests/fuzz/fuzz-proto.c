/*
 * Fuzz target for the request decoder (src/common/proto.c): the input is a byte
 * stream as a client would write it to the socket, framed with proto_frame and
 * fed to proto_decoder_feed message by message. Built with -DFUZZING and
 * -fsanitize=fuzzer it is a libFuzzer target; otherwise it is linked with
 * replay.c, whose main() replays every file of a corpus directory, which is
 * how `meson test --suite fuzz` runs it.
 *
 * fds cannot come from the bytes, so the target models an honest kernel: an
 * FDS message carries as many descriptors (dups of /dev/null, at most
 * PROTO_MAX_FDS + 1) as its count says. After each input every descriptor
 * handed to the decoder must be closed again, and whatever the decoder
 * accepted must satisfy the invariants of struct proto_request.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zygote/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_TRACKED 64

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz-proto: invariant broken: %s\n", what);
		abort();
	}
}

/* What an accepted request must look like. */
static void
check_request(const struct proto_decoder *d)
{
	const struct proto_request *q = &d->req;

	check(q->kind >= PROTO_KIND_RUN && q->kind <= PROTO_KIND_LAST, "kind in range");
	if (q->argv) {
		for (size_t i = 0; i < q->argc; i++)
			check(q->argv[i] != NULL, "argv has argc entries");
		check(q->argv[q->argc] == NULL, "argv NULL-terminated");
		check(q->argc <= PROTO_MAX_STRINGS, "argc within the limit");
	}
	if (q->env) {
		for (size_t i = 0; i < q->envc; i++) {
			const char *eq = strchr(q->env[i], '=');
			check(eq && eq != q->env[i], "env entries are K=V");
		}
		check(q->env[q->envc] == NULL, "env NULL-terminated");
	}
	if (q->cwd)
		check(q->cwd[0] == '/', "cwd absolute");
	check(q->nfds >= 0 && q->nfds <= (int)PROTO_MAX_FDS, "nfds within the limit");
	if (q->kind == PROTO_KIND_RUN) {
		check(q->argv && q->cwd && q->env, "a run has argv, cwd and env");
		check(q->nfds == (int)PROTO_MAX_FDS, "a run has three fds");
		for (int i = 0; i < q->nfds; i++)
			check(fcntl(q->fds[i], F_GETFD) >= 0, "a run's fds are open");
	}
	check(d->total <= PROTO_MAX_REQUEST, "total within the limit");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int devnull = -1;
	struct proto_decoder d;
	int tracked[MAX_TRACKED];
	int ntracked = 0;
	size_t off = 0;

	if (devnull < 0)
		devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	check(devnull >= 0, "/dev/null opens");

	proto_decoder_init(&d);
	while (off < size) {
		struct proto_hdr h;
		long n = proto_frame(data + off, size - off, &h);
		check(n == 0 || n == -EMSGSIZE || n >= (long)sizeof(h), "proto_frame result");
		if (n <= 0)
			break;
		check((size_t)n == sizeof(h) + h.len && (size_t)n <= size - off, "frame size");

		int fds[PROTO_MAX_FDS + 1];
		int nfds = 0;
		uint32_t count;
		if (h.type == PROTO_MSG_FDS && h.len == sizeof(count)) {
			memcpy(&count, data + off + sizeof(h), sizeof(count));
			nfds = count <= PROTO_MAX_FDS + 1 ? (int)count : 0;
			if (ntracked + nfds > MAX_TRACKED)
				nfds = 0;
		}
		for (int i = 0; i < nfds; i++) {
			fds[i] = fcntl(devnull, F_DUPFD_CLOEXEC, 0);
			check(fds[i] >= 0, "dup /dev/null");
			tracked[ntracked++] = fds[i];
		}

		/* Copy the payload so that a read past its end is caught by ASan. */
		uint8_t *payload = malloc(h.len ? h.len : 1);
		check(payload != NULL, "malloc");
		memcpy(payload, data + off + sizeof(h), h.len);
		int r = proto_decoder_feed(&d, h.type, payload, h.len, nfds ? fds : NULL, nfds);
		free(payload);

		check(r == 0 || r == 1 || r == -EPROTO, "feed result");
		if (r == -EPROTO) {
			check(d.state == PROTO_ST_ERROR, "error state after -EPROTO");
			check(d.error[0] != '\0', "error text after -EPROTO");
			check(memchr(d.error, '\0', sizeof(d.error)) != NULL,
			      "error text terminated");
			for (int i = 0; i < nfds; i++)
				check(fcntl(fds[i], F_GETFD) < 0 && errno == EBADF,
				      "refused fds are closed");
		} else if (r == 1) {
			check(d.state == PROTO_ST_DONE, "done state after 1");
			check_request(&d);
		} else {
			check(d.state == PROTO_ST_BODY, "body state after 0");
		}
		off += (size_t)n;
	}
	proto_decoder_finish(&d);
	for (int i = 0; i < ntracked; i++)
		check(fcntl(tracked[i], F_GETFD) < 0 && errno == EBADF,
		      "every fd handed to the decoder is closed after finish");
	return 0;
}
