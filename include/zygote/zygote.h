/*
 * A zygote generation: embeds Python, warms up, then forks one test child per
 * request the supervisor hands over. Started by the supervisor as
 * `pytest-zygote-server __zygote ...` (fork + exec, a clean process).
 */
#ifndef ZYGOTE_ZYGOTE_H
#define ZYGOTE_ZYGOTE_H

/* Entry point of the internal `__zygote` mode. Returns the process exit code. */
int zygote_main(int argc, char **argv);

/*
 * Where the pytest_zygote package is for this binary (build tree or installed,
 * see paths_pydir), or NULL when the interpreter must import it by itself.
 */
const char *zygote_pydir(void);

/*
 * Does python's major.minor equal the linked libpython's? Returns 1, 0 (with
 * the interpreter's version in ret_version), or -1 when it cannot be run.
 */
int zygote_python_matches(const char *python, char *ret_version, size_t size);

#endif
