/* runsock.h: what `vhostmta run` needs from one rendered instance.cf (its
 * listening addresses, port and queue directory), and the listening
 * sockets the supervisor binds for it and holds for its whole life, so
 * that a restart or a crash never refuses a connection. */
#ifndef VHOSTMTA_RUNSOCK_H
#define VHOSTMTA_RUNSOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

#define RUNSOCK_BACKLOG 1024
#define RUNSOCK_TEXT_MAX (IPADDR_STRLEN + 8) /* "[2001:db8::1]:25" */

/* The parts of an instance.cf that the supervisor acts on. */
struct inst_conf {
	struct iflist addrs; /* inet_interfaces expanded, filtered by inet_protocols */
	uint16_t port;       /* smtpd_listen_port */
	char *queue_dir;     /* queue_directory, expanded */
};

struct rsock {
	int fd; /* listening, blocking, close-on-exec */
	struct ipaddr addr;
	uint16_t port;
};

struct rsocks {
	size_t n;
	struct rsock *v;
};

/* inst_conf_read: parse and check path as the instance will. Problems
 * go to the log as FILE:LINE: error: WHAT; false then, with a phrase in
 * err. */
bool inst_conf_read(const char *path, struct inst_conf *out, char *err, size_t errlen);
void inst_conf_free(struct inst_conf *c);

/* runsock_sync: make s exactly one socket per address of c at c->port:
 * sockets already bound there are kept (their pending connections too),
 * the others closed, the missing ones bound (SO_REUSEADDR, IP_FREEBIND,
 * IPV6_V6ONLY, listen backlog RUNSOCK_BACKLOG). On failure s is left as
 * it was and err says which address failed and why. */
bool runsock_sync(struct rsocks *s, const struct inst_conf *c, char *err, size_t errlen);
void runsock_close(struct rsocks *s);

/* runsock_text: "192.0.2.1:25" or "[2001:db8::1]:25". */
const char *runsock_text(const struct rsock *r, char buf[RUNSOCK_TEXT_MAX]);

#endif
