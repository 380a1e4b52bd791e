/*
 * What the files of a zygote generation share: zygote.c (serve loop, runs),
 * spare.c (the spare child) and learn.c (the pages runs made private). Private
 * to src/zygote/: nothing outside it includes this, and it declares no API.
 */
#ifndef ZYGOTE_INTERNAL_H
#define ZYGOTE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zygote/peer.h"
#include "zygote/prefault.h"
#include "zygote/proto.h"

#define MAX_RUNS 256

struct run {
	int32_t id;
	pid_t pid;
	struct peer *conn; /* the client; NULL once it is gone */
	int learn;         /* read end of the child's learning pipe (spawn.h) */
	int stopped;       /* SIGKILLed when a drain's grace ran out: ZEXIT_RETRY */
};

/* The generation (zygote.c). */
struct zygote_state {
	struct peer *ctl; /* to the supervisor; blocking until warm, then not */
	int sigfd;
	pid_t supervisor;
	int generation;
	const char *root;
	struct proto_decoder dec;
	int in_request;
	int32_t req_id;
	int req_conn;
	struct run runs[MAX_RUNS];
	int nruns;
	int draining;
	long long drain_deadline;
	int lean;              /* a new generation warms: no spare, nothing collected ahead */
	int await_go;          /* ready, the practice run waits for Z_GO */
	long long go_deadline; /* ... or for this (a supervisor that never says) */
};
extern struct zygote_state z;

/*
 * The spare (spare.c): a child forked ahead of the next request, which has
 * already taken the copy-on-write faults the last run took (prefault.h). It
 * waits on its socket for a request in the same form the supervisor sends us.
 */
struct spare_state {
	pid_t pid;
	int sock;
	int disabled;
	int real; /* prepared with the pages of a client's run */
	/* Runs back to back (spare_take): a descriptor of the spare just
	 * taken, which ends when that spare has read its request; -1 none. */
	int taken;
	long long last_end; /* when the last client's run ended (now_ms) */
};
extern struct spare_state spare;

/*
 * The child collecting ahead (ahead.c): forked after a run whose collection
 * took at least min_ms, it starts that run again and waits, collected, for
 * the same request.
 */
struct ahead_state {
	pid_t pid;
	int sock;  /* our end of its socket: 'R' once collected, then the request */
	int reads; /* memfd: the files and directories its collection read */
	int ready; /* its 'R' came */
	int disabled;
	long min_ms;
};
extern struct ahead_state ahead;
/* How long the last client run's collection took (learn.c, from its child). */
extern long last_collect_ms;

/* The learning pipe: its size, and the first byte a run child writes to it,
 * "my run got to its end" (then the pages it copied, then it exits). */
#define LEARN_PIPE_SIZE (1 << 20)
#define LEARN_DONE "E"
/* then a uint32_t: the milliseconds its collection took */

/* The pages the last run made private, for the next spare to touch (learn.c). */
extern int hot_real; /* hot came from a client's run, not the practice run */
extern struct prefault_range *hot;
extern size_t nhot;
size_t hot_pages(void);
/* Where learned pages are kept for the next generation (--pages); see learn.c. */
extern const char *pages_file;

/* zygote.c */
int own_fds(int *fds, int extra);
/* What own_fds may list: six of ours, two per run, extra. */
#define OWN_FDS_MAX (2 * MAX_RUNS + 7)
void __attribute__((noreturn)) child_main(struct proto_request *req, int conn, int learn,
					  const int *close_fds, int nclose, pid_t zygote);
void start_run(struct proto_request *req, int32_t id, int conn);
void child_randomise(void);
struct spawn_fd;
void __attribute__((noreturn)) child_finish(int code, const struct spawn_fd *pipe_fd);

/* spare.c: handing a request to a child forked ahead of it (the spare, or
 * one collecting ahead), over a socket pair: Z_RUN with the client
 * connection and the learning pipe, then the request. handoff_send returns
 * 0, or -errno (the child did not take it within a second); it closes sock.
 * In the child, handoff_frame reads it into a handoff_request. */
struct handoff_request {
	struct proto_decoder dec;
	int got[2]; /* the connection and the learning pipe */
	int done;
	int failed;
};
int handoff_send(int sock, const struct proto_request *req, int32_t id, int conn, int learn);
int handoff_frame_fds(uint32_t type, const void *payload, uint32_t len);
struct peer_frame;
int handoff_frame(struct peer *p, struct peer_frame *f, void *arg);

/* spare.c */
void spare_fork(void);
void spare_drop(void);
pid_t spare_take(const struct proto_request *req, int32_t id, int conn, int learn, int early);
int spare_back_to_back(void);
void spare_taken_read(void);
void spare_taken_forget(void);
void spare_replace_practice(void);

/* ahead.c */
void ahead_remember(const struct proto_request *req);
pid_t ahead_take(const struct proto_request *req, int32_t id, int conn, int learn);
void ahead_fork(void);
void ahead_drop(void);
void ahead_reaped(int status);

/* learn.c */
int learn(struct run *r);
void learn_add_saved(void);
int practice_run(void);

#endif
