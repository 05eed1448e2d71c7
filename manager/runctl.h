/* runctl.h: the control socket of `vhostmta run` and `vhostmta status`,
 * its client. The supervisor listens on DIR/.control (mode 0600: its own
 * user and root); a client connects and reads one report until the
 * supervisor closes the connection: nothing is sent the other way.
 *
 * The report is lines of tab-separated fields, every field printable
 * ASCII without tabs, "-" when absent:
 *   vhostmta-run 1 <TAB> PID <TAB> UPTIME <TAB> MAP <TAB> USER
 *   NAME STATE PID UPTIME SESSIONS QUEUE RESTARTS LAST-ERROR STATUS
 * (one line per instance, UPTIME in seconds). */
#ifndef VHOSTMTA_RUNCTL_H
#define VHOSTMTA_RUNCTL_H

#include <stdbool.h>

#include <systemd/sd-event.h>

struct buf;

#define RUNCTL_NAME ".control"
#define RUNCTL_MAGIC "vhostmta-run 1"
#define RUNCTL_REPORT_MAX (64u << 20) /* what a client reads at most */

/* The supervisor fills out with the report for one client. */
typedef void runctl_report_fn(void *ctx, struct buf *out);

struct runctl;

/* runctl_open: listen on path (a stale socket there is replaced: the
 * caller holds the directory's run lock). */
struct runctl *runctl_open(sd_event *e, const char *path, runctl_report_fn *fn, void *ctx,
			   char *err, size_t errlen);
/* runctl_close: stop listening and remove the socket. */
void runctl_close(struct runctl *c);

/* runctl_status: `vhostmta status`: the report of the supervisor on path
 * as a table (or JSON) on standard output. Returns the exit status: 0,
 * or 1 when no supervisor answers there (said on standard error). */
int runctl_status(const char *path, bool json);

/* runctl_field: append s as a report field: printable, no tab, "-" for
 * NULL or empty. */
void runctl_field(struct buf *out, const char *s);

#endif
