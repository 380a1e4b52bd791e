/*
 * pytest-zygote run: hand the run to the server, starting one first with
 * --start-if-needed, or to the zygote for the run's environment when the
 * server redirects it. stdout is pytest's: nothing here may print on it.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "client-internal.h"
#include "zygote/client.h"
#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/proto.h"

/*
 * The server sent the run to a zygote warmed with its environment (an
 * interpreter setting, or a variable a module outside the project read at
 * import, differs): run it in that variant instance, "INSTANCE~ID", which
 * is started with this environment when it is not running yet.
 */
static int
run_variant(const struct opts *o, int nargs, char **args)
{
	char id[32], reason[800], inst[192];
	static char python[PATH_MAX];
	proto_kv_get(client_redirect, "variant", id, sizeof(id));
	proto_kv_get(client_redirect, "reason", reason, sizeof(reason));
	proto_kv_get(client_redirect, "python", python, sizeof(python));
	if (!*id || strspn(id, "0123456789abcdef") != strlen(id)) {
		log_error("the server sent the run to a zygote it did not name; run again");
		return ZEXIT_INTERNAL;
	}
	snprintf(inst, sizeof(inst), "%s~%s", o->instance ? o->instance : "", id);
	struct opts vo = *o;
	vo.instance = inst;
	vo.quiet = 1;
	if (python[0] == '/')
		vo.python = python; /* the server's interpreter, whatever this client would pick */
	struct zpaths vp;
	if (resolve_paths(&vo, &vp) < 0)
		return ZEXIT_USAGE;
	int code = client_run(&vp, nargs, args);
	if (code == -ENOENT || code == -ECONNREFUSED) {
		log_info("this run's environment differs from the zygote's in %s; starting a "
			 "zygote for this environment",
			 reason);
		int r = do_start(&vo, &vp);
		if (r != 0)
			return r;
		code = client_run(&vp, nargs, args);
	}
	if (code == CLIENT_UNTRUSTED)
		return ZEXIT_UNTRUSTED;
	if (code == CLIENT_REDIRECT) {
		log_error("the zygote for this environment sent the run elsewhere again; run "
			  "'pytest-zygote stop' and run again");
		return ZEXIT_INTERNAL;
	}
	if (code < 0) {
		log_error("cannot reach the server at %s: %s", vp.sock, strerror(-code));
		return ZEXIT_INTERNAL;
	}
	return code;
}

/* `run`: pytest with args in a fork of the warm zygote; pytest's exit code. */
int
cmd_run(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	int code = client_run(p, nargs, args);
	if (code == CLIENT_UNTRUSTED)
		return ZEXIT_UNTRUSTED;
	if (code == CLIENT_REDIRECT)
		return run_variant(o, nargs, args);
	if ((code == -ENOENT || code == -ECONNREFUSED) && o->start_if_needed) {
		struct opts so = *o;
		so.quiet = 1;
		int r = do_start(&so, p);
		if (r != 0)
			return r;
		code = client_run(p, nargs, args);
		if (code == CLIENT_UNTRUSTED)
			return ZEXIT_UNTRUSTED;
		if (code == CLIENT_REDIRECT)
			return run_variant(o, nargs, args);
	}
	if (code == -ENOENT || code == -ECONNREFUSED)
		return no_server(p);
	if (code < 0) {
		log_error("cannot reach the server at %s: %s", p->sock, strerror(-code));
		return ZEXIT_INTERNAL;
	}
	return code;
}
