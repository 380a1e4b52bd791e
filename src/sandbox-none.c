/*
 * The do-nothing sandbox, for builds without libseccomp (-Dseccomp=disabled).
 */
#include "zygote/sandbox.h"

int
sandbox_apply(pid_t zygote, pid_t supervisor, char *err, size_t errsize)
{
	(void)zygote;
	(void)supervisor;
	(void)err;
	(void)errsize;
	return 0;
}

const char *
sandbox_name(void)
{
	return "none";
}
