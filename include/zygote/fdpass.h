/*
 * Sending and receiving framed protocol messages with file descriptors over
 * AF_UNIX stream sockets (SCM_RIGHTS). fds are attached to the first byte of
 * the message that announces them; the reader queues every fd it receives in
 * arrival order and the message handler takes the count it expects. fds that
 * nobody takes are closed when the reader is finished. Every fd received is
 * close-on-exec (MSG_CMSG_CLOEXEC).
 */
#ifndef ZYGOTE_FDPASS_H
#define ZYGOTE_FDPASS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zygote/proto.h"

#define FDPASS_MAX_QUEUED 16
#define FDPASS_SEND_WAIT_MS 5000 /* how long a send waits for room on a full socket */

/*
 * Write len bytes of buf to sock, blocking until all are written (EINTR
 * retried, MSG_NOSIGNAL; on a non-blocking socket, waits up to
 * FDPASS_SEND_WAIT_MS for room, then -ETIMEDOUT). If nfds > 0, the fds are attached to the byte at
 * fds_offset. Returns 0 or -errno.
 */
int fdpass_send(int sock, const void *buf, size_t len, const int *fds, int nfds, size_t fds_offset);

struct fdpass_reader {
	char *buf;
	size_t len;      /* bytes buffered */
	size_t consumed; /* bytes of buf already handed out */
	size_t cap;
	int fds[FDPASS_MAX_QUEUED];
	int nfds;
};

void fdpass_reader_init(struct fdpass_reader *r);
/* Free the buffer and close every queued fd. Accepts an initialised reader twice. */
void fdpass_reader_finish(struct fdpass_reader *r);

/*
 * One recvmsg on sock into the reader. Returns bytes read (> 0), 0 at EOF, or
 * -errno (-EAGAIN on a non-blocking socket with nothing to read). fds beyond
 * FDPASS_MAX_QUEUED are closed at once.
 */
ssize_t fdpass_reader_fill(struct fdpass_reader *r, int sock);

/*
 * The next complete message, if any: returns 1 and sets *ret_hdr and
 * *ret_payload (valid until the next call), 0 when more bytes are needed, or
 * -EMSGSIZE for an oversized header (a protocol error: close the connection).
 */
int fdpass_reader_next(struct fdpass_reader *r, struct proto_hdr *ret_hdr,
		       const char **ret_payload);

/* Take up to n fds from the head of the queue into fds. Returns how many. */
int fdpass_reader_take_fds(struct fdpass_reader *r, int *fds, int n);

/*
 * Blocking helper: read until one whole message is available (filling as
 * needed). Returns 1 with the message, 0 at EOF, or -errno.
 */
int fdpass_read_msg(struct fdpass_reader *r, int sock, struct proto_hdr *ret_hdr,
		    const char **ret_payload);

/* Blocking helper: send one message without fds. Returns 0 or -errno. */
int fdpass_send_msg(int sock, uint32_t type, const void *payload, size_t len);

#endif
