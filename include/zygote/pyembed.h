/*
 * The only interface to the embedded interpreter. pyembed.c is the only file
 * that includes Python.h; no Python types appear here.
 */
#ifndef ZYGOTE_PYEMBED_H
#define ZYGOTE_PYEMBED_H

#include <stddef.h>

#include "zygote/proto.h"

struct pyembed_warm {
	long modules;       /* len(sys.modules) after warm-up */
	long project_files; /* project files in the stat snapshot */
	double seconds;     /* warm-up wall time */
	int threads;        /* OS threads alive after warm-up */
	char status[256];   /* "ok" or what went wrong in collection */
	char *files;        /* malloc'd: "X<TAB>dir" lines the supervisor must watch */
};

/*
 * Warm-up progress: fn receives "phase=...\nmodules=N\n" texts from the
 * Python side (throttled there). Set before pyembed_init.
 */
void pyembed_on_progress(void (*fn)(const char *text));
/* fn runs in the learning run (a child forked at warm-up) before it starts. */
void pyembed_on_learning_fork(void (*fn)(void));

/*
 * Initialise the interpreter as `python` would be (a virtualenv's pyvenv.cfg
 * is honoured), without Python's signal handlers, and import the package's
 * _zygote module from pydir (NULL: from the interpreter's own sys.path, where
 * an installed package is). Returns 0 or -1 with a sentence in err.
 */
int pyembed_init(const char *python, const char *pydir, char *err, size_t errsize);

/* Run the warm-up collection in root. learn_fd and learn_pid: a learning
 * run already forked (learn_early in zygote.c) to read from, or -1 and 0.
 * Returns 0 or -1 with err set. */
int pyembed_warmup(const char *root, int learn_fd, int learn_pid, struct pyembed_warm *ret,
		   char *err, size_t errsize);

/* After ready, before the zygote's first fork: collect what warm-up's
 * imports left and freeze the heap (gc.freeze). */
void pyembed_settle(void);

/* In a learning run forked before Python started: run it in root, reporting
 * on fd w. Returns only if it could not start (the Python error printed). */
void pyembed_learn(const char *root, int w);

/* Around fork(), from the thread holding the GIL (PyOS_*Fork). */
void pyembed_fork_prepare(void);
void pyembed_fork_parent(void);
void pyembed_fork_child(void);

/* Let other Python threads run while the zygote waits in poll(). */
void pyembed_unlock(void);
void pyembed_lock(void);

/* In a spare, before its request: build what a run can start from
 * (_zygote.spare_speculate). Errors are dropped: the run does the work. */
void pyembed_spare_speculate(void);

/* In a test child: run pytest for req. Returns the exit code (0..255).
 * ahead: a child collecting ahead (ahead.c), which stops once collected and
 * calls the function pyembed_on_adopt gave, with the files it read (and
 * the contents of the small ones). */
int pyembed_child_run(const struct proto_request *req, int ahead);
void pyembed_on_adopt(int (*fn)(const char *reads, const void *blobs, size_t nblobs));

/* In a test child, after its run: how long its collection took (ms). */
long pyembed_collect_ms(void);

#endif
