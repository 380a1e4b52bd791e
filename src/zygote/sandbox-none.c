/*
 * The do-nothing sandbox, for builds without libseccomp (-Dseccomp=disabled).
 * The default policy quietly becomes "none" (status says so); the one a user
 * asks for by name, no-network, cannot be honoured and fails every run with
 * a message instead of running tests with the network on.
 */
#include <stdio.h>
#include <stdlib.h>

#include "zygote/conf.h"
#include "zygote/sandbox.h"

static const char no_network_msg[] =
	"sandbox = no-network needs seccomp, but this pytest-zygote was built with "
	"-Dseccomp=disabled; rebuild it with libseccomp (meson setup build "
	"-Dseccomp=enabled) or start it with PYTEST_ZYGOTE_SANDBOX=on";

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
}

void
sandbox_prepare(pid_t zygote, pid_t supervisor)
{
	(void)zygote;
	(void)supervisor;
}

int
sandbox_apply(pid_t zygote, pid_t supervisor, char *err, size_t errsize)
{
	(void)zygote;
	(void)supervisor;
	int mode = sandbox_mode();
	if (mode == SANDBOX_NO_NETWORK) {
		snprintf(err, errsize, "%s", no_network_msg);
		return -1;
	}
	if (mode < 0) {
		snprintf(err, errsize, "PYTEST_ZYGOTE_SANDBOX='%s' is not on, off or no-network",
			 getenv("PYTEST_ZYGOTE_SANDBOX"));
		return -1;
	}
	return 0;
}

const char *
sandbox_name(void)
{
	switch (sandbox_mode()) {
	case SANDBOX_OFF:
		return "off";
	case SANDBOX_ON:
		return "none";
	default:
		return "failed: sandbox = no-network needs a build with seccomp";
	}
}
