/* listen.h: the instance's listening sockets. Under systemd (or the
 * manager, which speaks the same LISTEN_FDS protocol) they are passed in,
 * and each one must be an address of inet_interfaces at
 * smtpd_listen_port: an instance never serves an address it was not
 * configured for. Without passed sockets the instance binds every
 * address itself, one socket per address (never the wildcard), so the
 * local address of every connection is known. */
#ifndef VHOSTMTA_LISTEN_H
#define VHOSTMTA_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

struct cf;

#define LISTENER_NAME_MAX 256

struct listener {
	int fd;                        /* listening, nonblocking, close-on-exec */
	struct ipaddr addr;            /* its local address */
	uint16_t port;
	bool passed;                   /* from LISTEN_FDS, not bound by us */
	char name[LISTENER_NAME_MAX];  /* FileDescriptorName, or ADDR:PORT */
};

struct listeners {
	size_t n;
	struct listener *v;
};

/* listen_open: the listeners for cf (finalized). On failure returns
 * false with one phrase in err, e.g. "passed socket smtp (127.0.0.5:25)
 * matches no address in inet_interfaces"; nothing is left open. */
bool listen_open(const struct cf *cf, struct listeners *out, char *err, size_t errlen);
void listen_close(struct listeners *l);

/* listen_wanted: inet_interfaces expanded ("all", "loopback-only") and
 * filtered by inet_protocols: the addresses the instance listens on. */
bool listen_wanted(const struct cf *cf, struct iflist *out, char *err, size_t errlen);

/* sockaddr_text: "192.0.2.1:25" or "[2001:db8::1]:25". */
#define SOCKADDR_TEXT_MAX (IPADDR_STRLEN + 8)
const char *sockaddr_text(const struct ipaddr *a, uint16_t port, char buf[SOCKADDR_TEXT_MAX]);

#endif
