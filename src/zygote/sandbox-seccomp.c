/*
 * The seccomp sandbox for test children (libseccomp). Default allow; what
 * could signal, trace or write the memory of the supervisor or a zygote fails
 * with EPERM, and the no-network policy refuses sockets other than AF_UNIX
 * and AF_NETLINK with EACCES. See sandbox.h for the division of labour with
 * dumpability; this file must not log (it runs in a forked child).
 *
 * Why each rule, since seccomp sees only syscall numbers and integer
 * arguments:
 * - kill, tkill, rt_sigqueueinfo, tgkill, rt_tgsigqueueinfo, prlimit64 (a
 *   RLIMIT_CPU kills), fcntl(F_SETOWN) (SIGIO/SIGURG to the owner) and
 *   pidfd_open are refused for every thread id of the protected processes:
 *   kill(tid) of any thread signals its whole process, and a fatal signal to
 *   one thread kills them all. kill(-pgid) and F_SETOWN(-pgid) likewise for
 *   their process groups, and kill(-1) always.
 * - pidfd_send_signal takes a descriptor, and one for any process is a mere
 *   open("/proc/PID", O_DIRECTORY) away, which seccomp cannot see: refused
 *   always (os.kill does the same job). F_SETOWN_EX, FIOSETOWN and SIOCSPGRP
 *   take their pid through a pointer: refused always.
 * - ptrace and process_vm_readv/writev are refused for the protected ids too,
 *   though non-dumpability already makes the kernel refuse them.
 * pid arguments are ints: only the low 32 bits are compared, so negative ids
 * match whatever the upper half of the register holds.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/net.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zygote/conf.h"
#include "zygote/sandbox.h"

/* Thread ids covered; a zygote with more threads than this is unusual (and
 * warned about at warm-up); the rest are left out rather than fail the run. */
#define MAX_PROTECTED 512
#define MAX_PGIDS 16

struct protected
{
	pid_t ids[MAX_PROTECTED];
	int n;
	pid_t pgids[MAX_PGIDS];
	int npg;
};

int
sandbox_mode(void)
{
	const char *v = getenv("PYTEST_ZYGOTE_SANDBOX");
	if (!v || !*v)
		return SANDBOX_ON;
	return conf_parse_sandbox(v);
}

void
sandbox_protect(void)
{
	if (sandbox_mode() != SANDBOX_OFF)
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static void
add_id(struct protected *p, pid_t id)
{
	if (id <= 0)
		return;
	for (int i = 0; i < p->n; i++)
		if (p->ids[i] == id)
			return;
	if (p->n < MAX_PROTECTED)
		p->ids[p->n++] = id;
}

static void
add_pgid(struct protected *p, pid_t pid)
{
	pid_t g = getpgid(pid);
	if (g <= 0)
		return;
	for (int i = 0; i < p->npg; i++)
		if (p->pgids[i] == g)
			return;
	if (p->npg < MAX_PGIDS)
		p->pgids[p->npg++] = g;
}

/* A process, its process group and every thread it has now. */
static void
add_process(struct protected *p, pid_t pid)
{
	char path[64];
	add_id(p, pid);
	add_pgid(p, pid);
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			add_id(p, (pid_t)atoi(e->d_name));
	closedir(d);
}

/*
 * The supervisor, our zygote, and the supervisor's other children: the
 * generations warming up or draining next to ours. /proc/PID/task/PID/children
 * (CONFIG_PROC_CHILDREN) lists them; without it, ours is still covered.
 */
static void
collect(struct protected *p, pid_t zygote, pid_t supervisor)
{
	add_process(p, supervisor);
	add_process(p, zygote);
	char path[96], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)supervisor, (int)supervisor);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (char *save = NULL, *t = strtok_r(buf, " \n", &save); t;
	     t = strtok_r(NULL, " \n", &save))
		add_process(p, (pid_t)atoi(t));
}

static int
deny(scmp_filter_ctx ctx, int nr, unsigned arg, int32_t value)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1,
				SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, 0xffffffffu, (uint32_t)value));
}

/* fcntl(fd, F_SETOWN, value), and fcntl64 for 32-bit programs. */
static int
deny_setown(scmp_filter_ctx ctx, int32_t value)
{
	int r = 0;
	for (int i = 0; i < 2 && r == 0; i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM),
				     i ? SCMP_SYS(fcntl64) : SCMP_SYS(fcntl), 2,
				     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, F_SETOWN),
				     SCMP_A2(SCMP_CMP_MASKED_EQ, 0xffffffffu, (uint32_t)value));
	return r;
}

static int
add_rules(scmp_filter_ctx ctx, const struct protected *p, int mode)
{
	/* Calls whose first argument is a pid or a thread id. */
	static const char *const by_id[] = { "kill",
					     "tkill",
					     "tgkill",
					     "rt_sigqueueinfo",
					     "rt_tgsigqueueinfo",
					     "pidfd_open",
					     "prlimit64",
					     "process_vm_readv",
					     "process_vm_writev" };
	int r = 0;
	for (int i = 0; i < p->n && r == 0; i++) {
		for (size_t k = 0; k < sizeof(by_id) / sizeof(by_id[0]) && r == 0; k++)
			r = deny(ctx, seccomp_syscall_resolve_name(by_id[k]), 0, p->ids[i]);
		if (r == 0)
			r = deny(ctx, SCMP_SYS(ptrace), 1, p->ids[i]);
		if (r == 0)
			r = deny_setown(ctx, p->ids[i]);
	}
	for (int i = 0; i < p->npg && r == 0; i++) {
		r = deny(ctx, SCMP_SYS(kill), 0, -p->pgids[i]);
		if (r == 0)
			r = deny_setown(ctx, -p->pgids[i]);
	}
	if (r == 0)
		r = deny(ctx, SCMP_SYS(kill), 0, -1);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(pidfd_send_signal), 0);
	if (r == 0)
		r = deny(ctx, SCMP_SYS(fcntl), 1, F_SETOWN_EX);
	if (r == 0)
		r = deny(ctx, SCMP_SYS(fcntl64), 1, F_SETOWN_EX);
	if (r == 0)
		r = deny(ctx, SCMP_SYS(ioctl), 1, FIOSETOWN);
	if (r == 0)
		r = deny(ctx, SCMP_SYS(ioctl), 1, SIOCSPGRP);
	if (mode != SANDBOX_NO_NETWORK)
		return r;
	/* Every address family but AF_UNIX and AF_NETLINK (local to this
	 * machine; glibc's getaddrinfo asks the kernel through it). */
	for (int af = 0; af < AF_MAX && r == 0; af++)
		if (af != AF_UNIX && af != AF_NETLINK)
			r = seccomp_rule_add(
				ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1,
				SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, (uint32_t)af));
	/* Old 32-bit programs create sockets through socketcall(SYS_SOCKET,
	 * args), whose domain seccomp cannot see. */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socketcall), 1,
				     SCMP_A0(SCMP_CMP_EQ, SYS_SOCKET));
	/* io_uring can create sockets without socket(2). */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(io_uring_setup), 0);
	return r;
}

/*
 * Give up CAP_SYS_PTRACE (root only has it), which would otherwise let a
 * test open /proc/PID/mem of the non-dumpable supervisor and zygotes: from
 * the effective, permitted, inheritable and ambient sets, and from the
 * bounding set so that no exec (of a setuid-root program, say) regains it.
 */
static int
drop_ptrace(int nnp, char *err, size_t errsize)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
	if (syscall(SYS_capget, &h, d) < 0) {
		snprintf(err, errsize, "capget: %s", strerror(errno));
		return -1;
	}
	unsigned idx = CAP_TO_INDEX(CAP_SYS_PTRACE);
	uint32_t bit = CAP_TO_MASK(CAP_SYS_PTRACE);
	int had = ((d[idx].effective | d[idx].permitted | d[idx].inheritable) & bit) != 0;
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, CAP_SYS_PTRACE, 0, 0);
	/* Without no_new_privs a setuid-root exec would get it back. */
	if (prctl(PR_CAPBSET_READ, CAP_SYS_PTRACE, 0, 0, 0) == 1 &&
	    prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) < 0 && (had || !nnp)) {
		snprintf(err, errsize, "cannot drop CAP_SYS_PTRACE from the bounding set: %s",
			 strerror(errno));
		return -1;
	}
	if (!had)
		return 0;
	d[idx].effective &= ~bit;
	d[idx].permitted &= ~bit;
	d[idx].inheritable &= ~bit;
	if (syscall(SYS_capset, &h, d) < 0) {
		snprintf(err, errsize, "cannot drop CAP_SYS_PTRACE: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * The same rules for the 32-bit ABIs the kernel also runs: otherwise a 32-bit
 * program's system calls would bypass them, and libseccomp's default for a
 * foreign architecture kills the process, legitimate 32-bit tools included.
 */
static int
add_compat_arches(scmp_filter_ctx ctx)
{
	static const uint32_t arches[] = {
#if defined(__x86_64__)
		SCMP_ARCH_X86,
		SCMP_ARCH_X32,
#elif defined(__aarch64__)
		SCMP_ARCH_ARM,
#endif
		0,
	};
	for (size_t i = 0; arches[i]; i++) {
		int r = seccomp_arch_add(ctx, arches[i]);
		if (r < 0 && r != -EEXIST)
			return r;
	}
	return 0;
}

/* Whether we may load a filter without no_new_privs (CAP_SYS_ADMIN). */
static int
has_sys_admin(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
	if (syscall(SYS_capget, &h, d) < 0)
		return 0;
	return (d[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN)) != 0;
}

static const char how_to_disable[] =
	"set 'sandbox = off' in the [pytest-zygote] section or start with "
	"PYTEST_ZYGOTE_SANDBOX=off to run tests without it";

/* A filter with every rule for the protected set p, not yet loaded. */
static int
build(scmp_filter_ctx *ret, const struct protected *p, int mode, int nnp)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return -ENOMEM;
	int r = add_compat_arches(ctx);
	if (r == 0)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, nnp);
	/* The kernel's own errno when loading fails, not libseccomp's ECANCELED. */
	if (r == 0)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1);
	if (r == 0)
		r = add_rules(ctx, p, mode);
	if (r < 0) {
		seccomp_release(ctx);
		return r;
	}
	*ret = ctx;
	return 0;
}

/*
 * The filter a spare built before its request came (sandbox_prepare), as
 * BPF, and the protected set and policy it was built for. Building takes
 * about 0.8 ms of a run's critical path; collecting the set again to check
 * that nothing changed (a generation started or ended) takes 0.15 ms.
 */
static struct {
	int ready, mode, nnp;
	struct protected p;
	struct sock_fprog prog;
} pre;

void
sandbox_prepare(pid_t zygote, pid_t supervisor)
{
	int mode = sandbox_mode();
	if (mode != SANDBOX_ON && mode != SANDBOX_NO_NETWORK)
		return;
	int nnp = !has_sys_admin();
	scmp_filter_ctx ctx;
	memset(&pre.p, 0, sizeof(pre.p));
	collect(&pre.p, zygote, supervisor);
	if (build(&ctx, &pre.p, mode, nnp) < 0)
		return;
	/* libseccomp 2.5 exports only to a descriptor. */
	int fd = memfd_create("pytest-zygote-bpf", MFD_CLOEXEC);
	off_t len = -1;
	if (fd >= 0 && seccomp_export_bpf(ctx, fd) == 0)
		len = lseek(fd, 0, SEEK_CUR);
	seccomp_release(ctx);
	struct sock_filter *f = NULL;
	if (len > 0 && len % (off_t)sizeof(*f) == 0 && len / (off_t)sizeof(*f) <= USHRT_MAX)
		f = malloc((size_t)len);
	if (f && pread(fd, f, (size_t)len, 0) == len) {
		pre.prog.filter = f;
		pre.prog.len = (unsigned short)(len / (off_t)sizeof(*f));
		pre.mode = mode;
		pre.nnp = nnp;
		pre.ready = 1;
	} else {
		free(f);
	}
	if (fd >= 0)
		close(fd);
}

/* Load the prepared filter if it was built for p, mode and nnp: 1 if it was
 * loaded, 0 if it does not apply, -errno if loading failed. */
static int
load_prepared(const struct protected *p, int mode, int nnp)
{
	if (!pre.ready || pre.mode != mode || pre.nnp != nnp || memcmp(p, &pre.p, sizeof(*p)) != 0)
		return 0;
	if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &pre.prog) < 0)
		return -errno;
	return 1;
}

int
sandbox_apply(pid_t zygote, pid_t supervisor, char *err, size_t errsize)
{
	char why[200];
	int mode = sandbox_mode();
	if (mode == SANDBOX_OFF)
		return 0;
	if (mode < 0) {
		snprintf(err, errsize, "PYTEST_ZYGOTE_SANDBOX='%s' is not on, off or no-network",
			 getenv("PYTEST_ZYGOTE_SANDBOX"));
		return -1;
	}
	/* The zygote is not dumpable; the test child is the user's to debug. */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);

	/* Root can load a filter without no_new_privs, so setuid programs run
	 * from tests keep working; anyone else needs it (the kernel's rule). */
	int nnp = !has_sys_admin();
	if (drop_ptrace(nnp, why, sizeof(why)) < 0) {
		snprintf(err, errsize, "cannot sandbox the test process: %s; %s", why,
			 how_to_disable);
		return -1;
	}

	struct protected *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errsize, "cannot sandbox the test process: out of memory");
		return -1;
	}
	collect(p, zygote, supervisor);
	const char *step = "load";
	int r = load_prepared(p, mode, nnp);
	if (r == 0) {
		scmp_filter_ctx ctx;
		step = "build";
		r = build(&ctx, p, mode, nnp);
		if (r == 0) {
			step = "load";
			r = seccomp_load(ctx);
			seccomp_release(ctx);
		}
	}
	free(p);
	if (r < 0) {
		snprintf(err, errsize,
			 "cannot %s the seccomp filter for the test process: %s%s; %s", step,
			 strerror(-r),
			 r == -EINVAL || r == -ENOSYS
				 ? " (this kernel, or the container it runs in, "
				   "does not allow seccomp filters)"
				 : "",
			 how_to_disable);
		return -1;
	}
	return 0;
}

const char *
sandbox_name(void)
{
	static char state[400];
	if (state[0])
		return state;
	int mode = sandbox_mode();
	if (mode == SANDBOX_OFF)
		return "off";
	if (mode < 0) {
		snprintf(state, sizeof(state),
			 "failed: PYTEST_ZYGOTE_SANDBOX='%s' is not on, off or no-network",
			 getenv("PYTEST_ZYGOTE_SANDBOX"));
		return state;
	}
	/* Try it where it is harmless: in a child of ours that exits at once. */
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return "seccomp (not checked)";
	pid_t self = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		char err[sizeof(state) - 10] = "";
		int bad = sandbox_apply(self, self, err, sizeof(err)) < 0;
		ssize_t w = write(fds[1], err, strlen(err));
		(void)w;
		_exit(bad);
	}
	close(fds[1]);
	if (pid < 0) {
		close(fds[0]);
		return "seccomp (not checked)";
	}
	char err[sizeof(state) - 10];
	ssize_t n = read(fds[0], err, sizeof(err) - 1);
	close(fds[0]);
	err[n > 0 ? n : 0] = '\0';
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		snprintf(state, sizeof(state), "%s",
			 mode == SANDBOX_NO_NETWORK ? "seccomp no-network" : "seccomp");
	else
		snprintf(state, sizeof(state), "failed: %s", *err ? err : "the check crashed");
	return state;
}
