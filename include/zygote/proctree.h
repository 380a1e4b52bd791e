/*
 * Finding and killing what a run left behind. Both the supervisor and the
 * zygote are child subreapers (PR_SET_CHILD_SUBREAPER), and so is every test
 * child: a process that leaves its parent's process group (setsid, a double
 * fork) is still re-parented inside our tree, never to init. These helpers
 * walk /proc (this kernel may lack /proc/PID/task/TID/children) and kill
 * whole subtrees. They never log and never kill the caller.
 */
#ifndef ZYGOTE_PROCTREE_H
#define ZYGOTE_PROCTREE_H

#include <sys/types.h>

/*
 * SIGKILL every live child of this process whose pid is not in keep[], and
 * every descendant of those children. Returns how many processes were
 * signalled (0: nothing left behind), or -errno when /proc cannot be read.
 */
int proctree_kill_strays(const pid_t *keep, int nkeep);

/*
 * The pids of this process's children, at most max of them, into out.
 * Returns how many, or -errno when /proc cannot be read.
 */
int proctree_children(pid_t *out, int max);

/*
 * SIGKILL every live descendant of this process, repeating until none is
 * left running or about max_ms have passed (a process may fork while we
 * look). Returns how many were signalled.
 */
int proctree_kill_all(int max_ms);

#endif
