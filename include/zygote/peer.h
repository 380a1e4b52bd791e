/*
 * One peer: a connected AF_UNIX stream socket with a buffered reader that
 * hands out whole frames with the descriptors that rode along, and a bounded
 * queue of whole outgoing frames with theirs (the shape of tmux's proc.c
 * peers). Never logs; returns -errno. On a non-blocking socket it never
 * blocks: peer_send writes what the socket takes and queues the rest, the
 * owner adds POLLOUT while peer_wants_write() and calls peer_flush(), and
 * decides (and logs) what a peer whose queue passed its bound, or whose
 * socket broke, costs. On a blocking socket the same calls block, which is
 * what a blocking program (the client) wants.
 *
 * Frames leave in the order they were queued and are never interleaved: a
 * partial write leaves the rest of its frame at the head of the queue.
 * Descriptors ride on the first byte of their frame (SCM_RIGHTS). The peer
 * queues duplicates of them, so the caller's stay the caller's, and closes
 * those of a frame that is dropped unsent.
 */
#ifndef ZYGOTE_PEER_H
#define ZYGOTE_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "zygote/proto.h"

/*
 * The default bound on what one peer may have queued: 64 MiB (sixteen
 * requests of the largest size; a request is usually a few KiB to a few
 * hundred) and 1024 descriptors (a run hand-over carries four).
 */
#define PEER_MAX_QUEUED (64u << 20)
#define PEER_MAX_QUEUED_FDS 1024
/* The most descriptors one frame may carry (the reader's queue, fdpass.h). */
#define PEER_MAX_FDS 16

struct peer;

/* A frame handed to a peer_read handler. payload is valid during the call. */
struct peer_frame {
	uint32_t type;
	uint32_t len;
	const char *payload;
	/* The descriptors that rode along (as many as the peer's rule says this
	 * frame carries; fewer if the sender sent fewer). The handler takes one
	 * by setting its entry to -1; the others are closed after the call. */
	int fds[PEER_MAX_FDS];
	int nfds;
};

/* peer_read's handler: 0 to go on with the next frame, PEER_STOP to stop
 * (required when the handler destroyed the peer; the rest stays buffered). */
typedef int peer_handler_fn(struct peer *p, struct peer_frame *f, void *arg);
#define PEER_STOP 2

/* How many descriptors ride along with a frame (the default is proto_msg_fds). */
typedef int peer_fds_fn(uint32_t type, const void *payload, uint32_t len);

/*
 * A peer on the connected socket fd, which it owns from now on (closed by
 * peer_destroy). The bound is PEER_MAX_QUEUED bytes and PEER_MAX_QUEUED_FDS
 * descriptors; the socket's blocking mode is the caller's choice. NULL with
 * errno ENOMEM (fd is then closed).
 */
struct peer *peer_create(int fd);

/* Close the socket, free the buffers, close every queued and unread
 * descriptor; what was not sent is lost. Accepts NULL. */
void peer_destroy(struct peer *p);

static inline void
peer_destroyp(struct peer **p)
{
	peer_destroy(*p);
}
#define _cleanup_peer_ __attribute__((cleanup(peer_destroyp)))

/* The socket, for poll() (and shutdown()). */
int peer_fd(const struct peer *p);

/* Change the bound (max_bytes of frames, max_fds descriptors queued). */
void peer_set_limit(struct peer *p, size_t max_bytes, int max_fds);

/* Change how many descriptors each incoming frame carries (NULL: proto_msg_fds). */
void peer_set_fds_rule(struct peer *p, peer_fds_fn *fn);

/*
 * Queue one frame (type, len bytes of payload) with nfds descriptors on its
 * first byte, then write what the socket takes. All or nothing: on error
 * nothing of the frame is queued. Returns 0; -EMSGSIZE (payload over
 * PROTO_MAX_PAYLOAD), -EINVAL (nfds), -ENOMEM or -EMFILE (duplicating the
 * descriptors); -ENOBUFS when the frame would take the queue past its bound,
 * or the socket's error (-EPIPE, ...). After -ENOBUFS or a socket error the
 * peer is broken: every later send returns the same error, and the owner
 * drops it.
 */
int peer_send(struct peer *p, uint32_t type, const void *payload, size_t len, const int *fds,
	      int nfds);

/* peer_send of a NUL-terminated text (the NUL included). */
int peer_send_text(struct peer *p, uint32_t type, const char *text);

/* peer_send of one int32. */
int peer_send_i32(struct peer *p, uint32_t type, int32_t v);

/*
 * Queue a whole request (HELLO .. DONE, req->fds riding on FDS), preceded,
 * if run_id >= 0, by Z_RUN with run_id and run_fds on it: a run hand-over.
 * All or nothing, as peer_send; also -E2BIG (too many strings).
 */
int peer_send_request(struct peer *p, int32_t run_id, const int *run_fds, int nrun_fds,
		      const struct proto_request *req);

/* Write what the socket takes of the queue (on POLLOUT). 0 (whether or not
 * all went), or the socket's error (the peer is broken). */
int peer_flush(struct peer *p);

/* Whether frames wait to be written: poll for POLLOUT. */
int peer_wants_write(const struct peer *p);

/* 0, or the error that broke the peer (-ENOBUFS, the socket's): drop it. */
int peer_error(const struct peer *p);

/* Bytes of frames queued and not yet written. */
size_t peer_queued(const struct peer *p);

/*
 * One read from the socket (blocking on a blocking socket), then every
 * complete frame buffered goes to fn with its descriptors, in order.
 * Returns 1 while the peer is open; 0 at end of file, once every complete
 * frame was handed out; PEER_STOP when fn stopped; -ETOOMANYREFS for more
 * descriptors in one read than a frame may carry, or the socket's error
 * (both before any frame is handed out), or -EMSGSIZE for a frame over
 * PROTO_MAX_PAYLOAD: the connection is unusable.
 */
int peer_read(struct peer *p, peer_handler_fn *fn, void *arg);

/* Whether part of a frame is buffered (at end of file: the peer cut a frame off). */
int peer_read_partial(const struct peer *p);

/* Descriptors received that no frame has taken yet. */
int peer_unclaimed_fds(const struct peer *p);

#endif
