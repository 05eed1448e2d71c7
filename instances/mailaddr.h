/* mailaddr.h: RFC 5321 paths and the arguments of MAIL and RCPT, parsed
 * strictly. Nothing here rewrites an address: no %-hack, no bang paths,
 * no source routing (a route is parsed and dropped, RFC 5321 §3.6.1 and
 * appendix C), so no spelling of an address can reach another domain than
 * the one after its last '@' outside quotes. */
#ifndef VHOSTMTA_MAILADDR_H
#define VHOSTMTA_MAILADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

#define LOCAL_MAX 64   /* RFC 5321 §4.5.3.1.1 */
#define DOMAIN_MAX 255 /* §4.5.3.1.2 */
#define PATH_MAX_LEN 256

struct mailbox {
	bool null;                    /* <> (MAIL FROM only) */
	char local[LOCAL_MAX + 1];    /* as written, quotes included if quoted */
	char domain[DOMAIN_MAX + 1];  /* lower case; for a literal, "[...]" as written */
	bool literal;                 /* domain is an address literal */
	struct ipaddr ip;             /* the literal's address */
};

/* ESMTP parameters of MAIL FROM we implement. */
enum body_type { BODY_NONE, BODY_7BIT, BODY_8BITMIME };
struct mail_params {
	bool has_size;
	uint64_t size;
	enum body_type body;
};

/* The verdict of a parse: 0 on success, else the SMTP reply to give,
 * e.g. "501 5.1.7 Bad sender address syntax". */
typedef const char *mailaddr_err;

/* parse_mail_from: the argument after "MAIL FROM:" (leading spaces
 * allowed), i.e. "<path> [params]". strict (strict_rfc821_envelopes):
 * brackets required; else a bare address is accepted too. */
mailaddr_err parse_mail_from(const char *arg, size_t n, bool strict, struct mailbox *mb,
			     struct mail_params *params);
/* parse_rcpt_to: the argument after "RCPT TO:"; <> is refused; any ESMTP
 * parameter is refused (555). "<postmaster>" is accepted as in §4.5.1
 * (domain left empty). */
mailaddr_err parse_rcpt_to(const char *arg, size_t n, bool strict, struct mailbox *mb);

/* mailbox_format: "local@domain" (or "" for the null path) into out. */
void mailbox_format(const struct mailbox *mb, char out[LOCAL_MAX + DOMAIN_MAX + 2]);

#endif
