/* policy.h: who may send mail to whom through this instance (DESIGN §5:
 * never an open relay). A recipient in a hosted domain with a next hop is
 * accepted from anyone; an address literal that is one of our own
 * (inet_interfaces or proxy_interfaces) is local; anything else is a
 * relay, allowed only from a client in mynetworks. */
#ifndef VHOSTMTA_POLICY_H
#define VHOSTMTA_POLICY_H

#include <stdbool.h>

#include "addr.h"
#include "diag.h"
#include "mailaddr.h"
#include "util.h"

struct policy {
	struct htab hosted;      /* lower-case domain -> next hop text (owned) */
	struct netlist mynetworks;
	struct iflist own;       /* inet_interfaces expanded, plus proxy_interfaces */
};

enum rcpt_verdict {
	RCPT_HOSTED,  /* a hosted domain: relayed to its next hop */
	RCPT_LOCAL,   /* postmaster, or a literal of our own address */
	RCPT_RELAY,   /* elsewhere, and the client may relay */
	RCPT_DENIED,  /* elsewhere, and the client may not: 554 5.7.1 */
};

/* policy_load: from the expanded parameters: the transport table file
 * (lines "domain next-hop", '#' comments; errors as FILE:LINE through d),
 * mynetworks, inet_interfaces and proxy_interfaces. */
bool policy_load(struct policy *p, const char *transport_table, const char *mynetworks,
		 const char *inet_interfaces, const char *proxy_interfaces, struct diag *d);
void policy_free(struct policy *p);

enum rcpt_verdict policy_rcpt(const struct policy *p, const struct ipaddr *client,
			      const struct mailbox *rcpt);
/* policy_nexthop: the next hop of a hosted domain, or NULL. */
const char *policy_nexthop(const struct policy *p, const char *domain);

#endif
