/*
 * pytest-zygote-server: the half of pytest-zygote that links libpython,
 * libseccomp and libbsd. `pytest-zygote start` execs it as
 * `pytest-zygote-server supervise ...` with every setting already resolved
 * (root, interpreter, and the project's settings in the environment); the
 * supervisor execs it again (argv[0] "pytest-zygote", as the process titles
 * say) with `__zygote ...` for each zygote generation. It reads no
 * configuration and takes no options from users: main.c does that, in the
 * small client binary.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h> /* setprogname: libbsd-overlay */
#include <string.h>
#include <unistd.h> /* setproctitle_init: libbsd-overlay */

#include "build-id.h"
#include "config.h"
#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/proto.h"
#include "zygote/sandbox.h"
#include "zygote/supervisor.h"
#include "zygote/zygote.h"

extern char **environ;

static const char usage_text[] =
	"Usage: pytest-zygote-server supervise --root DIR --python PATH --client-version V\n"
	"                            [--instance NAME] [--foreground]\n"
	"                            [--ready-fd N] [--report-fd N]\n"
	"\n"
	"The server of pytest-zygote: the supervisor and the zygotes that embed Python.\n"
	"`pytest-zygote start` runs it with the project's settings; use that instead.\n";

/* Tell the `start` that waits on fd (if any) why we did not start, and return. */
static int refuse(int report_fd, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int
refuse(int report_fd, int code, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s", msg);
	if (report_fd >= 0) {
		dprintf(report_fd, "error %s\n", msg);
		close(report_fd);
	}
	return code;
}

/* An inherited descriptor number from the command line, or -1. */
static int
fd_arg(const char *s)
{
	char *end;
	long fd = strtol(s, &end, 10);
	if (!*s || *end || fd < 0 || fd > 1024 || fcntl((int)fd, F_GETFD) < 0)
		return -1;
	return (int)fd;
}

static int
supervise(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "root", required_argument, NULL, 'r' },
		{ "instance", required_argument, NULL, 'i' },
		{ "python", required_argument, NULL, 'p' },
		{ "client-version", required_argument, NULL, 'v' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "ready-fd", required_argument, NULL, 'R' },
		{ "report-fd", required_argument, NULL, 'P' },
		{ 0 },
	};
	const char *root = NULL, *instance = NULL, *python = NULL, *client_version = NULL;
	int foreground = 0, ready_fd = -1, report_fd = -1, bad_fd = 0, c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			root = optarg;
			break;
		case 'i':
			instance = optarg;
			break;
		case 'p':
			python = optarg;
			break;
		case 'v':
			client_version = optarg;
			break;
		case 'f':
			foreground = 1;
			break;
		case 'R':
			bad_fd |= (ready_fd = fd_arg(optarg)) < 0;
			break;
		case 'P':
			bad_fd |= (report_fd = fd_arg(optarg)) < 0;
			break;
		default:
			fputs(usage_text, stderr);
			return ZEXIT_USAGE;
		}
	}
	/* Nothing the caller left open reaches a zygote or a test child (a
	 * foreground server keeps what it inherited; `start` closes it). */
	close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	/* Neither may reach a zygote or a test child. */
	if (ready_fd >= 0)
		fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
	if (report_fd >= 0)
		fcntl(report_fd, F_SETFD, FD_CLOEXEC);
	if (optind < argc || !root || !python || !client_version || bad_fd) {
		fputs(usage_text, stderr);
		return refuse(report_fd, ZEXIT_USAGE,
			      "pytest-zygote-server was started with bad arguments; start it with "
			      "pytest-zygote start");
	}
	char exe[PATH_MAX];
	if (paths_self_exe(exe, sizeof(exe)) < 0)
		return refuse(report_fd, ZEXIT_NOSTART,
			      "cannot find this program "
			      "(/proc/self/exe): %s",
			      strerror(errno));
	/* Client and server talk through argv, the report pipe and the socket:
	 * both must come from one build. */
	if (strcmp(client_version, PYZ_VERSION) != 0)
		return refuse(report_fd, ZEXIT_NOSTART,
			      "the server %s is version %s but pytest-zygote is version %s; "
			      "install both from the same build (or fix PYTEST_ZYGOTE_SERVER)",
			      exe, PYZ_VERSION, log_escape(client_version));

	struct supervisor_opts so = {
		.python = python,
		.self_exe = exe,
		.ready_fd = ready_fd,
		.report_fd = report_fd,
	};
	char err[PATHS_ERR_MAX];
	so.instance = instance;
	if (paths_for_root(&so.paths, root, instance, err, sizeof(err)) < 0)
		return refuse(report_fd, ZEXIT_NOSTART, "%s", err);
	log_init(foreground ? "pytest-zygote" : "supervisor", 1);
	sandbox_protect();
	return supervisor_main(&so);
}

int
main(int argc, char **argv)
{
	/* Process titles read "pytest-zygote: supervisor ROOT", whatever argv[0].
	 * Before setproctitle_init, which keeps a copy of the name it finds. */
	setprogname("pytest-zygote");
	setproctitle_init(argc, argv, environ);
	log_init("pytest-zygote", 0);
	if (argc >= 2 && strcmp(argv[1], "__zygote") == 0) {
		sandbox_protect(); /* exec made us dumpable again */
		return zygote_main(argc - 1, argv + 1);
	}
	if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
		printf("pytest-zygote-server %s (build %s, protocol %u, Python %s)\n", PYZ_VERSION,
		       PYZ_BUILD_ID, PROTO_VERSION, PYZ_PY_VERSION);
		return 0;
	}
	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "supervise") == 0)
		return supervise(argc - 1, argv + 1);
	fputs(usage_text, stderr);
	return ZEXIT_USAGE;
}
