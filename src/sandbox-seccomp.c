/*
 * The seccomp sandbox for test children (libseccomp). Default allow; the
 * syscalls that could signal, trace or grab the supervisor and the zygote
 * fail with EPERM, as does kill(-1, ...), which would signal every process of
 * the user. pid arguments are ints: compare the low 32 bits only, so negative
 * process-group ids match whatever the upper half of the register holds.
 */
#include <errno.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zygote/sandbox.h"

const char *
sandbox_name(void)
{
	return "seccomp";
}

static int
deny_arg0(scmp_filter_ctx ctx, int nr, int32_t value)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1,
				SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, (uint32_t)value));
}

int
sandbox_apply(pid_t zygote, pid_t supervisor, char *err, size_t errsize)
{
	const char *off = getenv("PYTEST_ZYGOTE_SANDBOX");
	if (off && strcmp(off, "0") == 0)
		return 0;

	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx) {
		snprintf(err, errsize, "seccomp_init failed");
		return -1;
	}
	pid_t pids[] = { zygote, supervisor };
	pid_t pgids[] = { getpgid(zygote), getpgid(supervisor) };
	int r = 0;
	for (size_t i = 0; i < 2 && r == 0; i++) {
		r = deny_arg0(ctx, SCMP_SYS(kill), pids[i]);
		if (r == 0 && pgids[i] > 0)
			r = deny_arg0(ctx, SCMP_SYS(kill), -pgids[i]);
		if (r == 0)
			r = deny_arg0(ctx, SCMP_SYS(tgkill), pids[i]);
		if (r == 0)
			r = deny_arg0(ctx, SCMP_SYS(tkill), pids[i]);
		if (r == 0)
			r = deny_arg0(ctx, SCMP_SYS(pidfd_open), pids[i]);
		if (r == 0)
			r = deny_arg0(ctx, SCMP_SYS(rt_sigqueueinfo), pids[i]);
		if (r == 0)
			r = deny_arg0(ctx, SCMP_SYS(rt_tgsigqueueinfo), pids[i]);
		if (r == 0)
			r = deny_arg0(ctx, SCMP_SYS(process_vm_writev), pids[i]);
		if (r == 0)
			r = deny_arg0(ctx, SCMP_SYS(process_vm_readv), pids[i]);
		if (r == 0)
			r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ptrace), 1,
					     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu,
						     (uint32_t)pids[i]));
	}
	if (r == 0)
		r = deny_arg0(ctx, SCMP_SYS(kill), -1);
	/* Root can load a filter without no_new_privs, so setuid programs run
	 * from tests keep working; other users need it. */
	if (r == 0 && geteuid() == 0)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (r == 0)
		r = seccomp_load(ctx);
	seccomp_release(ctx);
	if (r < 0) {
		snprintf(err, errsize, "cannot load the seccomp sandbox: %s "
			 "(set PYTEST_ZYGOTE_SANDBOX=0 when starting to run without it)",
			 strerror(-r));
		return -1;
	}
	return 0;
}
