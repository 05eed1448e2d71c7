/* run.h: `vhostmta run`, the supervisor for machines without systemd,
 * and `vhostmta status`. The supervisor renders the map, binds every
 * instance's listening sockets itself and starts each vhostmta-instance
 * as an unprivileged user with systemd's LISTEN_FDS and NOTIFY_SOCKET
 * protocols, so the instance has one code path; it restarts crashed
 * instances with backoff, starts idle-exited ones again on their next
 * connection, applies a changed map on SIGHUP and stops everything on
 * SIGTERM (docs/vhostmta.8, RUNNING WITHOUT SYSTEMD). */
#ifndef VHOSTMTA_RUN_H
#define VHOSTMTA_RUN_H

#include <limits.h>
#include <stdbool.h>

#ifndef RUNSTATEDIR
#define RUNSTATEDIR "/run"
#endif
#define RUN_ROOT_DIR RUNSTATEDIR "/vhostmta/instances"

struct run_opts {
	const char *map;
	const char *outdir;    /* NULL: run_default_dir() */
	const char *state_dir; /* NULL: RENDER_VHOSTMTA_STATE as root, else see run.c */
	const char *user;      /* NULL: RUN_DEFAULT_USER if it exists, else RUN_FALLBACK_USER */
	const char *host;      /* NULL: this machine's host name (gethostname) */
};

/* run_default_dir: where run renders and status looks: RUN_ROOT_DIR as
 * root, else $XDG_RUNTIME_DIR/vhostmta/instances; false when neither
 * applies (then -o DIR is required). */
bool run_default_dir(char out[PATH_MAX]);

/* run_supervise: the supervisor; returns the exit status (0 after
 * SIGTERM or SIGINT, 1 when it cannot start: every reason logged). */
int run_supervise(const struct run_opts *o);

/* run_status: the supervisor of outdir's instances, one row each (or
 * JSON); 1 when none runs. */
int run_status(const char *outdir, bool json);

#endif
