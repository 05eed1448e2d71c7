/* queuecmd.h: `vhostmta queue`, the queues of the rendered instances.
 * The manager knows nothing of the queue's format: it runs
 * vhostmta-instance -c DIR/NAME/instance.cf with --list-queue, --flush
 * or --delete ID per instance and gathers what they print. */
#ifndef VHOSTMTA_QUEUECMD_H
#define VHOSTMTA_QUEUECMD_H

#include <stdbool.h>
#include <stddef.h>

#ifndef SBINDIR
#define SBINDIR "/usr/local/sbin"
#endif
#define QCMD_INSTANCE_PROG "vhostmta-instance"
#define QCMD_ID_MAX 64 /* a queue id as the manager accepts it (the instance checks it) */

enum qcmd_action { QCMD_LIST, QCMD_FLUSH, QCMD_DELETE };

struct qcmd_opts {
	const char *dir;          /* the render output directory */
	enum qcmd_action action;
	const char *id;           /* QCMD_DELETE */
	char *const *names;       /* nnames instance names; none: every rendered one */
	size_t nnames;
};

/* qcmd_id_plausible: a word of [0-9A-Za-z], 1..QCMD_ID_MAX long. */
bool qcmd_id_plausible(const char *id);

/* qcmd_run: the action on each instance, a "NAME:" heading before its
 * output and a summary line; errors on stderr. Returns the exit status:
 * 0, or 1 when a name is unknown or any instance's command failed. */
int qcmd_run(const struct qcmd_opts *o);
/* qcmd_find_prog: the vhostmta-instance to run: $VHOSTMTA_INSTANCE, else
 * the one beside this program (an installed or a build tree keeps the two
 * together), else the one in sbindir. out has PATH_MAX bytes. */
void qcmd_find_prog(char *out);

#endif
