/* policy.c: the relay decision of policy.h and the tables it is made
 * from. The decision looks only at what mailaddr.c parsed: the domain
 * after the one '@' outside quotes (lower case) or the address literal.
 * There is no subdomain matching, no rewriting of the local part and no
 * lookup of anything the client chose other than that exact domain, so
 * the only ways to RCPT_RELAY are a client in mynetworks, or a literal of
 * one of our own addresses (which is RCPT_LOCAL, not a relay).
 *
 * Decisions where the contract is silent:
 * - The transport table is the renderer's format, which is also a Postfix
 *   texthash: "domain next-hop", '#' comment lines, blank lines. A line
 *   that starts with white space is a continuation line in Postfix tables;
 *   rather than give it another meaning it is an error. Trailing blanks
 *   and a CR before the newline are ignored.
 * - Table domains must be fully qualified (as the map requires), and the
 *   next hop must pass nexthop_parse (smtp by default, as in the map); it
 *   is stored as written.
 * - Errors in the parameters are reported with the parameter name in
 *   place of the file name and line 0 ("mynetworks: error: ...").
 * - On any error policy_load returns false with p already freed (calling
 *   policy_free on it again is harmless). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "policy.h"

#define TABLE_LINE_MAX 4096

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* ---- the transport table */

/* add_hosted: one entry; key and next hop share one allocation (the key
 * comes first, so freeing the keys frees everything). */
static bool add_hosted(struct policy *p, const char *dom, size_t dlen, const char *hop,
		       size_t hlen)
{
	char *block = xmalloc(dlen + 1 + hlen + 1);

	memcpy(block, dom, dlen);
	block[dlen] = 0;
	memcpy(block + dlen + 1, hop, hlen);
	block[dlen + 1 + hlen] = 0;
	if (htab_insert(&p->hosted, block, block + dlen + 1) != NULL) {
		free(block);
		return false;
	}
	return true;
}

static void table_line(struct policy *p, const char *file, unsigned long lineno,
		       const char *s, size_t len, struct diag *d)
{
	char sh[STR_SHOW_BUF], dom[DOMAIN_MAX + 1], err[256];
	size_t i = 0, d0, dlen, h0, hlen;

	if (len > 0 && s[len - 1] == '\n')
		len--;
	while (len > 0 && (is_blank(s[len - 1]) || s[len - 1] == '\r'))
		len--;
	if (memchr(s, 0, len) != NULL) {
		diag_error(d, file, lineno, "NUL byte in line");
		return;
	}
	if (len > TABLE_LINE_MAX) {
		diag_error(d, file, lineno, "line too long (more than %d bytes)", TABLE_LINE_MAX);
		return;
	}
	while (i < len && is_blank(s[i]))
		i++;
	if (i == len || s[i] == '#')
		return;
	if (i > 0) {
		diag_error(d, file, lineno,
			   "line starts with white space (continuation lines are not supported)");
		return;
	}
	for (d0 = i; i < len && !is_blank(s[i]); i++)
		;
	dlen = i - d0;
	if (dlen > DOMAIN_MAX || !hostname_valid(s + d0, dlen, false)) {
		diag_error(d, file, lineno, "bad domain \"%s\"", str_show(s + d0, dlen, sh));
		return;
	}
	if (!hostname_valid(s + d0, dlen, true)) {
		diag_error(d, file, lineno, "domain \"%s\" is not fully qualified",
			   str_show(s + d0, dlen, sh));
		return;
	}
	for (size_t k = 0; k < dlen; k++)
		dom[k] = ascii_tolower(s[d0 + k]);
	dom[dlen] = 0;
	while (i < len && is_blank(s[i]))
		i++;
	if (i == len) {
		diag_error(d, file, lineno, "missing next hop for \"%s\"", dom);
		return;
	}
	for (h0 = i; i < len && !is_blank(s[i]); i++)
		;
	hlen = i - h0;
	while (i < len && is_blank(s[i]))
		i++;
	if (i < len) {
		diag_error(d, file, lineno, "unexpected text after the next hop: \"%s\"",
			   str_show(s + i, len - i, sh));
		return;
	}
	char *hop = xstrndup(s + h0, hlen);
	struct nexthop nh;
	if (!nexthop_parse(hop, NH_SMTP, &nh, err, sizeof err))
		diag_error(d, file, lineno, "bad next hop for \"%s\": %s", dom, err);
	else if (!add_hosted(p, dom, dlen, hop, hlen))
		diag_error(d, file, lineno, "duplicate domain \"%s\"", dom);
	free(hop);
}

static void load_table(struct policy *p, const char *file, struct diag *d)
{
	FILE *f = fopen(file, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	unsigned long lineno = 0;

	if (f == NULL) {
		diag_error(d, file, 0, "cannot open: %s", strerror(errno));
		return;
	}
	errno = 0;
	while ((len = getline(&line, &cap, f)) != -1)
		table_line(p, file, ++lineno, line, (size_t)len, d);
	if (ferror(f))
		diag_error(d, file, 0, "read error: %s", strerror(errno));
	free(line);
	fclose(f);
}

/* ---- our own addresses */

static bool has_items(const char *value)
{
	const char *c = value ? value : "";
	size_t len;

	return list_next(&c, &len) != NULL;
}

static void load_own(struct policy *p, const char *inet_interfaces,
		     const char *proxy_interfaces, struct diag *d)
{
	struct iflist inet, proxy;
	char err[256];

	if (!iflist_parse(inet_interfaces, &inet, err, sizeof err)) {
		diag_error(d, "inet_interfaces", 0, "%s", err);
	} else {
		if (!iflist_expand(&inet, &p->own, err, sizeof err))
			diag_error(d, "inet_interfaces", 0, "%s", err);
		iflist_free(&inet);
	}
	if (!has_items(proxy_interfaces))
		return;
	if (!iflist_parse(proxy_interfaces, &proxy, err, sizeof err)) {
		diag_error(d, "proxy_interfaces", 0, "%s", err);
		return;
	}
	if (proxy.kind != IFLIST_ADDRS) {
		diag_error(d, "proxy_interfaces", 0, "a list of addresses is expected, not \"%s\"",
			   proxy.kind == IFLIST_ALL ? "all" : "loopback-only");
		return;
	}
	p->own.addrs = xreallocarray(p->own.addrs, p->own.n + proxy.n, sizeof *p->own.addrs);
	for (size_t i = 0; i < proxy.n; i++)
		if (!iflist_contains(&p->own, &proxy.addrs[i]))
			p->own.addrs[p->own.n++] = proxy.addrs[i];
	iflist_free(&proxy);
}

/* ---- the interface */

bool policy_load(struct policy *p, const char *transport_table, const char *mynetworks,
		 const char *inet_interfaces, const char *proxy_interfaces, struct diag *d)
{
	unsigned errors = d->errors;
	char err[256];

	memset(p, 0, sizeof *p);
	htab_init(&p->hosted, true);
	p->own.kind = IFLIST_ADDRS;
	if (transport_table != NULL && transport_table[0] != 0)
		load_table(p, transport_table, d);
	if (!netlist_parse(mynetworks, &p->mynetworks, err, sizeof err))
		diag_error(d, "mynetworks", 0, "%s", err);
	load_own(p, inet_interfaces, proxy_interfaces, d);
	if (d->errors != errors) {
		policy_free(p);
		return false;
	}
	return true;
}

void policy_free(struct policy *p)
{
	for (size_t i = 0; i < p->hosted.cap; i++)
		free((char *)p->hosted.keys[i]);
	htab_free(&p->hosted);
	netlist_free(&p->mynetworks);
	iflist_free(&p->own);
	p->own.kind = IFLIST_ADDRS;
}

enum rcpt_verdict policy_rcpt(const struct policy *p, const struct ipaddr *client,
			      const struct mailbox *rcpt)
{
	if (rcpt->null)
		return RCPT_DENIED; /* mailaddr.c never gives one */
	if (rcpt->literal) {
		if (iflist_contains(&p->own, &rcpt->ip)) /* unmaps both sides */
			return RCPT_LOCAL;
	} else if (rcpt->domain[0] == 0) {
		/* Only the bare <postmaster> of RFC 5321 §4.5.1 has no domain. */
		return ascii_strcasecmp(rcpt->local, "postmaster") == 0 ? RCPT_LOCAL : RCPT_DENIED;
	} else if (htab_get(&p->hosted, rcpt->domain) != NULL) {
		return RCPT_HOSTED;
	}
	return client != NULL && netlist_match(&p->mynetworks, client) ? RCPT_RELAY : RCPT_DENIED;
}

const char *policy_nexthop(const struct policy *p, const char *domain)
{
	return domain == NULL ? NULL : htab_get(&p->hosted, domain);
}
