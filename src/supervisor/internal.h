/*
 * What the supervisor's files share: the one state (s), the structs of
 * connections, generations and variants, the functions each file offers the
 * others. Private to src/supervisor/: never include it elsewhere (the API is
 * zygote/supervisor.h).
 */
#ifndef ZYGOTE_SUPERVISOR_INTERNAL_H
#define ZYGOTE_SUPERVISOR_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zygote/peer.h"
#include "zygote/proto.h"
#include "zygote/supervisor.h"

struct pidfh;
struct watch;

/*
 * Who calls whom: supervisor.c (the loop) calls every file. conn.c may call
 * gen.c, changes.c, variant.c and status.c; gen.c calls changes.c (what to
 * watch outside the project, a generation's check list) and status.c;
 * changes.c starts a fresh
 * generation (and kills one that warms with old files); status.c reads
 * gen.c; variant.c calls no other file. gen.c never calls into conn.c or the
 * loop: what a generation's messages mean for connections (serve what
 * waits, start queued runs, tell waiting runs it failed, stop after a
 * failed first warm-up) it returns as struct gen_events, and the loop acts
 * on them. The one call that goes a wrong way, a STOP request (conn.c)
 * calling supervisor_begin_stop, is marked "Dependency exception".
 */

/*
 * Hidden: the server links libpython statically with --export-dynamic, so
 * every global of ours is in its dynamic symbol table, where it could
 * interpose on a same-named symbol of an extension module. These names were
 * static before the files were split and must not be exported now.
 */
#pragma GCC visibility push(hidden)

#define MAX_CONNS 512
/* Of the MAX_CONNS slots, this many are never taken by parked runs (waiting
 * for a generation or in the max_runs queue): room for `status` and `stop`. */
#define CONN_RESERVE 16
/* How long a client may take to send its whole request (a client sends it
 * at once) before its connection is closed (docs/security.md). */
#define CONN_REQUEST_MS 10000
#define DEFAULT_GRACE_MS 5000
/* `pytest-zygote watch` connections a server keeps at once (each is held
 * for as long as its watch runs; docs/design.md, "watch"). */
#define MAX_WATCHERS 16
/* How long a reply may take to reach a client that does not read it before
 * its connection is dropped (the wait a blocking send used to have). */
#define LINGER_MS 5000

/* Where a client's connection is. The loop polls it by its state. */
enum conn_state {
	CONN_READING,   /* its request is being read (for at most CONN_REQUEST_MS) */
	CONN_REQUESTED, /* complete, to be acted on once the messages read with it
			 * are taken (a Ctrl-C among them cancels it) */
	CONN_WAITING,   /* a run or WAIT parked until a generation is warm (or one
			 * with a new hash seed); a Ctrl-C cancels it */
	CONN_QUEUED,    /* a run parked at the max_runs limit, first come first served */
	CONN_STOPPING,  /* a STOP, answered once the server has stopped */
	CONN_WATCHING,  /* a WATCH: sent CHANGES after each settled batch of changes
			 * until it hangs up (no deadline; at most MAX_WATCHERS) */
	CONN_LINGERING, /* answered; its reply is still going out (for at most LINGER_MS) */
	CONN_CLOSED,    /* gone; freed by conn_sweep, where no handler holds it */
};

/* A client's connection, from accept until its reply is out or its run is
 * handed over to a zygote. */
struct conn {
	enum conn_state state;
	struct peer *peer; /* non-blocking, like every socket of ours; NULL once CLOSED */
	struct proto_decoder dec;
	long long deadline_ms;    /* READING, LINGERING: closed then; QUEUED: told why then */
	long queue_seq;           /* QUEUED: first come, first served */
	int told;                 /* the client was told why it waits */
	long long fresh_after_ms; /* a run that waits for a fresh generation: one started
				   * after this (the last change it must see) */
	long long wait_since_ms;  /* WAITING: when it first waited for a generation */
};

/* A zygote generation: a slot of s.gens. */
struct gen {
	pid_t pid;        /* 0: a free slot */
	struct peer *ctl; /* the control socket; NULL once the zygote closed it or was dropped */
	int number;
	int ready;
	int prepared; /* Z_PREPARED: its practice run is over, its first spare forked */
	int draining;
	int running;        /* its runs in progress */
	pid_t go_after;     /* the replaced zygote: Z_GO when it is reaped (0: sent) */
	char info[1024];    /* the Z_READY text */
	char *files;        /* the Z_FILES text */
	char progress[256]; /* the last Z_PROGRESS text, while warming */
	long long started_ms;
	double warmup_s;
	int seed_used; /* a run was forked from it: its hash seed is not new */
	/* The project files its children compare with its snapshot instead of
	 * every file (changes.c, changes_gen_*): each one changed since it was
	 * started, so since its snapshot, and each one the watcher does not
	 * cover. check_lost: the list is not complete (events lost, more than
	 * MAX_CHECK, no watcher), and its children check every file. */
	char **check;
	int ncheck;
	int check_lost;
};

/* Zygotes for other environments (variants, started by clients we sent there). */
#define MAX_VARIANTS 16
struct variant {
	char id[20];
	long long used_ms;
};

#define MAX_GENS 8
#define MAX_DIRTY 64
#define MAX_CHECK 512

/* The supervisor's state: one per process, s, defined in supervisor.c. */
struct supervisor_state {
	const struct supervisor_opts *o;
	struct pidfh *pfh;
	int listen_fd;
	int sigfd;
	struct gen gens[MAX_GENS];
	int cur;  /* index of the generation serving runs, or -1 */
	int next; /* index of the generation warming up, or -1 */
	int generations;
	/* change tracking */
	struct watch *watch; /* the project tree */
	int ext_fd;          /* inotify on directories outside the project */
	char *dirty[MAX_DIRTY];
	int ndirty;                      /* paths kept */
	long dirty_total;                /* changes seen since the current generation started */
	unsigned long long changes_seen; /* every change event, ever: PYTEST_ZYGOTE_EPOCH */
	long long last_change_ms;
	int settle_ms;
	int poll_ms;     /* > 0: poll the tree instead of inotify */
	int lose_events; /* PYTEST_ZYGOTE_TEST_LOSE_EVENTS: tests' stand-in for an overflow */
	long long next_poll_ms;
	int fresh_needed;         /* runs must wait for a generation started after now */
	long long fresh_since_ms; /* the last change that needs a fresh generation */
	char fresh_reason[600];   /* the first of the changes pending (or last absorbed) */
	/* Changes no generation started since has seen (changes.c, changes_fresh_timer):
	 * a fresh one starts once they stop for fresh_quiet_ms, or FRESH_MAX_PENDING_MS
	 * after the first. */
	long long fresh_first_ms; /* 0: none pending */
	int fresh_changes;
	int fresh_quiet_ms;
	char fresh_last[600];        /* the latest of them */
	long long fresh_replaced_ms; /* when a warming generation was last replaced */
	char fresh_failed[1000];     /* why the last fresh generation could not start */
	long refreshes;
	/* Every connection, in the order they were accepted (CLOSED ones until
	 * conn_sweep frees them). */
	struct conn *conns[MAX_CONNS];
	int nconns;
	long runs;
	int running;
	int max_runs; /* 0: no limit */
	/* pytest-zygote watch: the connections WATCHING, and the changes not
	 * sent to them yet (changes.c collects, conn_watch_notify sends) */
	int watchers;
	char *watch_paths[PROTO_CHANGES_MAX_PATHS];
	int nwatch_paths;
	long watch_more;         /* changes past the list (a lost event counts one) */
	long long watch_last_ms; /* the latest change not sent yet; 0: none */
	int queued;              /* connections QUEUED */
	long queue_seq;
	int32_t next_run;
	int stopping;
	int grace_ms;
	int ever_ready;
	int early_failures;
	long long start_ms;
	long long accept_paused_until;
	long long respawn_at;
	int reload_fresh; /* reload = fresh: every edit waits for a fresh generation */
	/* directories of project files imports read (D and F lines), on ext_fd */
	struct data_dir {
		int wd;
		char *dir;
	} * data_dirs;
	int ndata_dirs;
	/* the directories outside the project watched on ext_fd, by watch */
	struct data_dir *ext_dirs;
	int next_dirs;
	/* variants: the zygotes for other environments this server sent runs to */
	struct variant variants[MAX_VARIANTS];
	int nvariants;
	int max_variants;
	int variant_fds[MAX_VARIANTS]; /* STOP requests to variants, until they answer */
	int nvariant_fds;
	long long variants_deadline; /* stopping: when to stop waiting for them */
	int is_variant;              /* this server is one (its instance has a '~') */
	long long idle_ms;           /* a variant stops after this long without runs */
	long long last_run_ms;
	/* idle_timeout: a server stops after this long (0: never) with no run,
	 * no client connection and no warm-up; last_active_ms is when it was last
	 * busy. */
	long long idle_timeout_ms;
	/* wait_timeout: a run parked for a generation longer than this (0: no
	 * bound) is told why none became ready, and ends (conn_expire) */
	long long wait_timeout_ms;
	long long last_active_ms;
	int was_busy;
	/* The runtime directory, opened at start: the server unlinks its files
	 * relative to it, never by path (supervisor.c, unlink_own). */
	int rt_dirfd;
};

extern struct supervisor_state s;

/* supervisor.c: the loop */

/* Stop: close the socket, stop the variants, drain every generation; the
 * loop exits once they are gone. Called by the loop, and by conn.c (STOP)
 * and gen.c (the first warm-up failed) as dependency exceptions. */
void supervisor_begin_stop(int grace_ms);

/* conn.c: connections */

/* Send one message to c, then close it (it lingers while the reply goes out). */
void conn_reply(struct conn *c, uint32_t type, const char *text);

/* Start queued runs, oldest first, while there is room under max_runs. */
void conn_dispatch_queue(void);

/* A generation became warm: serve what waited for it. */
void conn_serve_waiting(void);

/* The connections' timers: tell queued runs that have waited about a second
 * why they wait, close connections whose request or reply is overdue. The
 * next time one is due, or -1. */
long long conn_expire(long long now);

/* A fresh generation started: tell the runs that wait for one what they wait for now. */
void conn_notice_fresh(void);

/* Send the WATCHING connections the changes collected since the last time
 * (the loop calls it once they settled), and forget them. */
void conn_watch_notify(void);

/* A generation that runs wait for cannot start: end each such run with msg
 * (exit 71), and answer a `start` waiting when none serves. */
void conn_fail_waiting(const char *msg);

/* POLLIN (or hang-up, error) on c: by its state, read its request and act
 * on it, take a Ctrl-C while it is parked, or finish writing its reply. */
void conn_readable(struct conn *c);

/* POLLOUT on c: write what it has queued; close it once a reply is out. */
void conn_writable(struct conn *c);

/* Accept every pending connection from our own uid; at MAX_CONNS, the
 * oldest that has not sent a whole request makes room. */
void conn_accept_clients(void);

/* Free the CLOSED connections. Only where no handler holds one (the loop). */
void conn_sweep(void);

/* gen.c: generations */

/* A value of a generation's Z_READY text ("" when absent). */
const char *gen_info_get(const char *info, const char *key, char *buf, size_t size);

/* Remove the pages and learned files generations leave beside the socket. */
void gen_unlink_pages(void);

/* The generation serving runs, if it is warm; else NULL. */
struct gen *gen_serving(void);

/* Start a new generation warming up in the background; it becomes s.next.
 * replay: only for a new hash seed (see gen.c). 0 or -1 (logged). */
int gen_spawn(int replay);

/* What generations' messages and ends mean for the rest of the server:
 * gen.c adds them, the loop acts on them (and clears them). */
enum {
	GEN_EV_READY = 1u << 0,        /* a generation took over: serve what waits for one */
	GEN_EV_SLOT_FREE = 1u << 1,    /* a run ended: start queued runs */
	GEN_EV_FAILED = 1u << 2,       /* a generation cannot start: tell the runs that wait */
	GEN_EV_FIRST_FAILED = 1u << 3, /* the first warm-up failed: stop, then report */
};
struct gen_events {
	unsigned what;
	char failed[2000 + PATH_MAX]; /* FAILED, FIRST_FAILED: what to say */
};

/* Read a generation's control socket; what it means for others goes to ev. */
void gen_readable(struct gen *g, struct gen_events *ev);

/* POLLOUT on a generation's control socket: write what waits for it. */
void gen_writable(struct gen *g);

/* Generation g could not warm up (why): the runs that wait for it are to be
 * told (GEN_EV_FAILED), unless files it reads changed meanwhile (the next
 * one is due then). */
void gen_warmup_failed(struct gen *g, const char *why, struct gen_events *ev);

/* Send g a message (Z_DRAIN); a zygote that cannot take it is dropped. */
void gen_send_i32(struct gen *g, uint32_t type, int32_t v);

/* A zygote whose control socket broke or that stopped reading it (its queue
 * passed the bound): say why, kill it; reap() starts the next one. The runs
 * queued for it end as when a zygote dies (exit 75, run again). */
void gen_drop(struct gen *g, int err);

/* changes.c: change tracking */

/* Watch the directories outside the project that the current generation imported from. */
void changes_ext_rebuild(const char *files);

/* Read the events of the watcher outside the project (and of data files). */
void changes_ext_drain(void);

/* Whether run c must wait for a generation fresher than the serving one
 * (starting one again if the last fresh one failed and nothing is due). */
int changes_run_waits(struct conn *c);

/* What a run that waits for a fresh generation is told. */
void changes_wait_reason(char *buf, size_t size);

/* Start the fresh generation that pending changes need once they settled;
 * 1 if it started one, else 0 with *wake lowered to when it is next due. */
int changes_fresh_timer(long long now, long long *wake);

/* How many files the project watcher reports changes of (-errno when it
 * cannot tell, -ENOENT when nothing is watched). */
long changes_watched_files(void);

/* Drain (or poll) the project watcher into the dirty set. */
void changes_watch_settle(void);

/* Read the settings from the environment and start the project watcher. */
void changes_watch_start(void);

/* A generation was started: its check list begins empty (lost without a watcher). */
void changes_gen_begin(struct gen *g);

/* Its Z_FILES came: the project files it imported that the watcher does
 * not cover are on its list for good. */
void changes_gen_files(struct gen *g);

/* It was reaped, or its slot is reused: free the list. */
void changes_gen_end(struct gen *g);

/* The environment entry that hands a run of g its check list
 * (PYTEST_ZYGOTE_CHECK=path\npath...), malloc'd; NULL when the list is lost
 * (the child then checks every file) or out of memory. */
char *changes_gen_entry(const struct gen *g);

/* variant.c: interpreter and environment variants */

/* Whether a run's environment differs from what g started with or read; if
 * so 1, with the run's variant id in id and the names that differ in why. */
int variant_env_differs(const struct gen *g, const struct proto_request *r, char *id, size_t idsize,
			char *why, size_t whysize);

/* Tell the variant server id to stop; its answer is awaited before we exit. */
void variant_stop(const char *id);

/* A run goes to variant id: remember it, least recently used out. */
void variant_used(const char *id);

/* 1 if a run wants a generation with a new hash seed, 0 if not, -1 for a bad
 * PYTEST_ZYGOTE_HASH_SEED. */
int variant_wants_new_seed(const struct proto_request *r);

/* status.c: what the server tells */

/* One line to the `start` process that waits for us, then close the pipe. */
void status_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Warm-up progress for the `start` that waits, never blocking. */
void status_report_progress(const char *text);

/* The status text (key=value lines) a STATUS request is answered with. */
void status_text(char *buf, size_t size);

#pragma GCC visibility pop

#endif
