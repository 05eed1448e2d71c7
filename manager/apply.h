/* apply.h: `vhostmta apply`, the map made real under systemd. Checks the
 * map (a map with errors changes nothing), renders it for this host, has
 * systemd reload its units (vhostmta-generator rewrites the socket
 * drop-ins), then acts on each instance as render's comparison says:
 *   new      start vhostmta@NAME.socket
 *   restart  stop vhostmta@NAME.service and .socket, start the socket
 *            (its Listen lines changed)
 *   reload   reload vhostmta@NAME.service, if it runs
 *   removed  stop vhostmta@NAME.socket and .service (the queue is kept)
 * Unchanged instances are not touched; a socket of theirs that is not
 * active (a failed start before) is started. Last, vhostmta.target is
 * started. systemd is reached over sd-bus; every job is waited for. */
#ifndef VHOSTMTA_APPLY_H
#define VHOSTMTA_APPLY_H

#include <stdbool.h>
#include <stddef.h>

struct apply_opts {
	const char *map;
	const char *outdir;   /* the render output directory */
	const char *host;     /* NULL: this machine's host name */
	bool dry_run;         /* print the plan, change nothing */
};

/* apply_run: one line per action on stdout, errors on stderr. Returns
 * the exit status: 0, or 1 when the map has errors (nothing changed),
 * systemd cannot be reached (nothing changed) or refused an action (the
 * others were still carried out). */
int apply_run(const struct apply_opts *o);

/* apply_start_units: start the n units over sd-bus (as apply reaches
 * systemd) and wait for every job; "start UNIT (WHY)" on stdout for each
 * one done, errors on stderr as "vhostmta CMD: ...". Returns 0, or 1 when
 * systemd cannot be reached or refused or failed a start. */
int apply_start_units(const char *cmd, const char *const *units, const char *const *whys,
		      size_t n);

#endif
