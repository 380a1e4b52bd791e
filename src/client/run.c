/*
 * pytest-zygote run: hand the run to the server, starting one first with
 * --start-if-needed, or to the zygote for the run's environment when the
 * server redirects it. stdout is pytest's: nothing here may print on it.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client-internal.h"
#include "zygote/client.h"
#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/proto.h"

/* Append s to buf quoted for a POSIX shell (and shlex.split): '...' with
 * each ' as '\''. Returns -1 when it does not fit. */
static int
shell_quote(char *buf, size_t size, const char *s)
{
	size_t n = strlen(buf);
	if (n + 1 >= size)
		return -1;
	buf[n++] = '\'';
	for (; *s; s++) {
		const char *part = *s == '\'' ? "'\\''" : NULL;
		size_t len = part ? 4 : 1;
		if (n + len + 2 >= size)
			return -1;
		memcpy(buf + n, part ? part : s, len);
		n += len;
	}
	buf[n++] = '\'';
	buf[n] = '\0';
	return 0;
}

/*
 * PYTEST_ZYGOTE_WORKER_CMD: how the run's child starts pytest-xdist workers
 * as forks of this server (`pytest-zygote worker --root R --instance I`,
 * the "python" of xdist's popen gateways; see _zy/workers.py). Without it
 * (no path to ourselves) -n starts cold workers, as plain pytest does.
 */
static void
export_worker_cmd(const struct zpaths *p, const char *instance)
{
	char exe[PATH_MAX], cmd[3 * PATH_MAX] = "";
	if (paths_self_exe(exe, sizeof(exe)) < 0 || shell_quote(cmd, sizeof(cmd), exe) < 0 ||
	    strlen(cmd) + 16 >= sizeof(cmd)) {
		unsetenv("PYTEST_ZYGOTE_WORKER_CMD");
		return;
	}
	strcat(cmd, " worker --root ");
	if (shell_quote(cmd, sizeof(cmd), p->root) < 0) {
		unsetenv("PYTEST_ZYGOTE_WORKER_CMD");
		return;
	}
	if (instance && *instance) {
		strcat(cmd, " --instance ");
		if (shell_quote(cmd, sizeof(cmd), instance) < 0) {
			unsetenv("PYTEST_ZYGOTE_WORKER_CMD");
			return;
		}
	}
	setenv("PYTEST_ZYGOTE_WORKER_CMD", cmd, 1);
}

/*
 * The server sent the run to a zygote warmed with its environment (an
 * interpreter setting, or a variable a module outside the project read at
 * import, differs): run it in that variant instance, "INSTANCE~ID", which
 * is started with this environment when it is not running yet.
 */
static int
run_variant(const struct opts *o, int nargs, char **args, struct client_run_hook *hook)
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
	if (!o->worker)
		export_worker_cmd(&vp, inst);
	int code = client_run_hooked(&vp, o->worker ? PROTO_FLAG_WORKER : 0, nargs, args, hook);
	if (code == -ENOENT || code == -ECONNREFUSED) {
		log_info("this run's environment differs from the zygote's in %s; starting a "
			 "zygote for this environment",
			 reason);
		int r = do_start(&vo, &vp);
		if (r != 0)
			return r;
		code = client_run_hooked(&vp, o->worker ? PROTO_FLAG_WORKER : 0, nargs, args, hook);
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

/* What client_run's code means for the command's exit code. */
static int
run_exit(const struct zpaths *p, int code)
{
	if (code == CLIENT_UNTRUSTED)
		return ZEXIT_UNTRUSTED;
	if (code == -ENOENT || code == -ECONNREFUSED)
		return no_server(p);
	if (code < 0) {
		log_error("cannot reach the server at %s: %s", p->sock, strerror(-code));
		return ZEXIT_INTERNAL;
	}
	return code;
}

/* One run as `run` makes it (start-if-needed, the zygote for its
 * environment), with watch's hook or none; pytest's exit code. */
int
run_once(const struct opts *o, const struct zpaths *p, int nargs, char **args,
	 struct client_run_hook *hook)
{
	/* The run's child pops it and selects the tests (_zy/affected.py). */
	if (o->affected)
		setenv("PYTEST_ZYGOTE_AFFECTED", "1", 1);
	export_worker_cmd(p, o->instance);
	int code = client_run_hooked(p, 0, nargs, args, hook);
	if (code == CLIENT_REDIRECT)
		return run_variant(o, nargs, args, hook);
	if ((code == -ENOENT || code == -ECONNREFUSED) && o->start_if_needed) {
		struct opts so = *o;
		so.quiet = 1;
		int r = do_start(&so, p);
		if (r != 0)
			return r;
		code = client_run_hooked(p, 0, nargs, args, hook);
		if (code == CLIENT_REDIRECT)
			return run_variant(o, nargs, args, hook);
	}
	return run_exit(p, code);
}

/* `run`: pytest with args in a fork of the warm zygote; pytest's exit code. */
int
cmd_run(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	return run_once(o, p, nargs, args, NULL);
}

/*
 * `worker`: a pytest-xdist worker of a run in progress, in a fork of the warm
 * zygote: `python [-u] [-B] -c CODE` as execnet's popen gateway starts it,
 * with this process's stdin and stdout as the gateway's channel. The run's
 * child puts this command in xdist's --tx specs; people never type it.
 */
int
cmd_worker(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	int code_at = -1;
	for (int i = 0; i < nargs && code_at < 0; i++) {
		if (strcmp(args[i], "-c") == 0 && i + 1 < nargs)
			code_at = i + 1;
		else if (strcmp(args[i], "-u") != 0 && strcmp(args[i], "-B") != 0)
			break;
	}
	if (code_at < 0) {
		log_error("worker takes Python's [-u] [-B] -c CODE [ARGS] (it is the python of "
			  "pytest-xdist's workers), not '%s'",
			  nargs ? log_escape(args[0]) : "");
		return ZEXIT_USAGE;
	}
	setenv("PYTEST_ZYGOTE_WORKER", "1", 1);
	struct opts wo = *o;
	wo.worker = 1;
	int code = client_run(p, PROTO_FLAG_WORKER, nargs, args);
	if (code == CLIENT_REDIRECT)
		return run_variant(&wo, nargs, args, NULL);
	return run_exit(p, code);
}
