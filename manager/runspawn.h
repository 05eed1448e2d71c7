/* runspawn.h: starting one vhostmta-instance for `vhostmta run`: the
 * unprivileged user it runs as, its queue directory (created and owned
 * by that user), and the fork+exec that hands it its listening sockets
 * with systemd's LISTEN_FDS protocol and a NOTIFY_SOCKET of the
 * supervisor's. */
#ifndef VHOSTMTA_RUNSPAWN_H
#define VHOSTMTA_RUNSPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define RUN_DEFAULT_USER "vhostmta"
#define RUN_FALLBACK_USER "nobody"

/* Who the instances run as. */
struct run_user {
	char *name;
	uid_t uid;
	gid_t gid;
	gid_t *groups; /* supplementary groups */
	size_t ngroups;
	bool drop; /* the supervisor is root: switch to uid/gid in the child */
};

/* run_user_resolve: name (NULL: RUN_DEFAULT_USER if it exists, else
 * RUN_FALLBACK_USER). As root the user must exist and must not be root;
 * as anyone else the instances run as the supervisor's own user, and a
 * name that is not that user is refused. */
bool run_user_resolve(const char *name, struct run_user *u, char *err, size_t errlen);
void run_user_free(struct run_user *u);

/* run_queue_prepare: dir exists (parents created 0755), is a directory
 * (never a symbolic link), mode 0700 and owned by u. An existing queue
 * owned by someone else is handed over, files included, when it holds
 * nothing but a queue's entries. */
bool run_queue_prepare(const char *dir, const struct run_user *u, char *err, size_t errlen);

/* One start. */
struct spawn_req {
	const char *prog;    /* vhostmta-instance */
	const char *cf;      /* its -c argument */
	const int *fds;      /* the listening sockets: fds 3.. in the child */
	size_t nfds;
	const char *fdname;  /* LISTEN_FDNAMES: this name for every socket */
	const char *notify;  /* NOTIFY_SOCKET */
	const struct run_user *user;
};

/* run_spawn: fork and exec; the child's pid once it has exec'ed (no
 * copy of another socket is left in it then), or -1 with err set (a
 * failed exec or user switch included: that child is not ours to
 * watch). The child resets the signal mask and SIGPIPE, takes /dev/null
 * as standard input, keeps standard output and error, closes every
 * other descriptor, switches user (when u->drop), asks for SIGTERM when
 * the supervisor dies (PR_SET_PDEATHSIG), sets LISTEN_PID to its own pid
 * and execs. */
pid_t run_spawn(const struct spawn_req *r, char *err, size_t errlen);

#endif
