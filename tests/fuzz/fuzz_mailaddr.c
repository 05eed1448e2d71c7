/* fuzz_mailaddr.c: the parsers of untrusted address text: the arguments
 * of MAIL FROM and RCPT TO (instances/mailaddr.h, both strictness
 * settings) and lib's address grammar (lib/addr.h: IP addresses,
 * inet_interfaces, mynetworks, next hops). Whatever parses must format
 * to a text that parses back to the same value.
 *
 * Input: [mode byte] [text]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"
#include "fuzzutil.h"
#include "mailaddr.h"

enum mode {
	M_MAIL, M_MAIL_STRICT, M_RCPT, M_RCPT_STRICT, M_IPADDR, M_IFLIST, M_NETLIST, M_NEXTHOP,
	M__COUNT
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

/* check_reply: a refusal is one printable SMTP reply line, 4xx or 5xx. */
static void check_reply(const char *e)
{
	size_t n = strlen(e);
	FUZZ_CHECK(n > 4 && (e[0] == '4' || e[0] == '5') && e[3] == ' ', "refusal %s", e);
	FUZZ_CHECK(fuzz_printable(e, n), "unprintable refusal");
}

static void check_mailbox(const struct mailbox *mb)
{
	FUZZ_CHECK(fuzz_printable(mb->local, strlen(mb->local)), "unprintable local part");
	if (mb->null) {
		FUZZ_CHECK(mb->local[0] == 0 && mb->domain[0] == 0, "null path with an address");
	} else if (mb->literal) {
		struct ipaddr ip;
		FUZZ_CHECK(ipaddr_parse(mb->domain, strlen(mb->domain), &ip) &&
				   ipaddr_equal(&ip, &mb->ip),
			   "literal %s", mb->domain);
	} else if (mb->domain[0] != 0) {
		size_t n = strlen(mb->domain);
		FUZZ_CHECK(hostname_valid(mb->domain, n, true), "domain %s", mb->domain);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(!(mb->domain[i] >= 'A' && mb->domain[i] <= 'Z'), "upper case domain");
	} else {
		FUZZ_CHECK(strcmp(mb->local, "postmaster") == 0, "no domain: %s", mb->local);
	}
}

/* path: MAIL FROM or RCPT TO; a parsed path formats to one that the
 * strict parser reads back to the same mailbox. */
static void path(const char *arg, size_t n, bool rcpt, bool strict)
{
	struct mailbox mb, again;
	struct mail_params mp;
	char text[LOCAL_MAX + DOMAIN_MAX + 2], wrapped[LOCAL_MAX + DOMAIN_MAX + 4];

	mailaddr_err e = rcpt ? parse_rcpt_to(arg, n, strict, &mb)
			      : parse_mail_from(arg, n, strict, &mb, &mp);
	if (e) {
		check_reply(e);
		return;
	}
	check_mailbox(&mb);
	FUZZ_CHECK(!rcpt || !mb.null, "null recipient");
	mailbox_format(&mb, text);
	snprintf(wrapped, sizeof wrapped, "<%s>", text);
	e = rcpt ? parse_rcpt_to(wrapped, strlen(wrapped), true, &again)
		 : parse_mail_from(wrapped, strlen(wrapped), true, &again, &mp);
	FUZZ_CHECK(e == NULL, "%s does not parse back: %s", wrapped, e);
	FUZZ_CHECK(again.null == mb.null && again.literal == mb.literal &&
			   strcmp(again.local, mb.local) == 0 && strcmp(again.domain, mb.domain) == 0 &&
			   (!mb.literal || ipaddr_equal(&again.ip, &mb.ip)),
		   "%s parses back differently", wrapped);
}

static void ipaddr(const char *s, size_t n)
{
	struct ipaddr a, b;
	char text[IPADDR_STRLEN];

	if (!ipaddr_parse(s, n, &a))
		return;
	FUZZ_CHECK(a.family == AF_INET || a.family == AF_INET6, "family");
	ipaddr_format(&a, text);
	FUZZ_CHECK(ipaddr_parse(text, strlen(text), &b) && ipaddr_equal(&a, &b), "round trip %s", text);
}

static void iflist(const char *s)
{
	struct iflist l;
	char err[256];

	if (!iflist_parse(s, &l, err, sizeof err)) {
		FUZZ_CHECK(fuzz_printable(err, strlen(err)), "unprintable error");
		return;
	}
	if (l.kind == IFLIST_ADDRS) {
		FUZZ_CHECK(l.n > 0, "an empty list");
		for (size_t i = 0; i < l.n; i++) {
			FUZZ_CHECK(iflist_contains(&l, &l.addrs[i]), "address not in its list");
			for (size_t j = 0; j < i; j++)
				FUZZ_CHECK(!ipaddr_equal(&l.addrs[i], &l.addrs[j]), "duplicate");
		}
	}
	iflist_free(&l);
}

static void netlist(const char *s)
{
	struct netlist l, again;
	struct buf text = BUF_INIT;
	char err[256];

	if (!netlist_parse(s, &l, err, sizeof err)) {
		FUZZ_CHECK(fuzz_printable(err, strlen(err)), "unprintable error");
		return;
	}
	for (size_t i = 0; i < l.n; i++)
		FUZZ_CHECK(netlist_match(&l, &l.nets[i].net), "network does not match itself");
	netlist_format(&l, &text);
	FUZZ_CHECK(netlist_parse(buf_cstr(&text), &again, err, sizeof err), "%s: %s",
		   buf_cstr(&text), err);
	FUZZ_CHECK(again.n == l.n, "%s: count", buf_cstr(&text));
	for (size_t i = 0; i < l.n; i++)
		FUZZ_CHECK(ipaddr_equal(&again.nets[i].net, &l.nets[i].net) &&
				   again.nets[i].prefix == l.nets[i].prefix,
			   "%s: item %zu", buf_cstr(&text), i);
	netlist_free(&again);
	netlist_free(&l);
	buf_free(&text);
}

static void nexthop(const char *s, enum nh_proto defproto)
{
	struct nexthop nh, again;
	struct buf text = BUF_INIT;
	char err[256];

	if (!nexthop_parse(s, defproto, &nh, err, sizeof err)) {
		FUZZ_CHECK(fuzz_printable(err, strlen(err)), "unprintable error");
		return;
	}
	nexthop_format(&nh, &text);
	FUZZ_CHECK(nexthop_parse(buf_cstr(&text), defproto == NH_SMTP ? NH_LMTP : NH_SMTP, &again,
				 err, sizeof err),
		   "%s: %s", buf_cstr(&text), err);
	FUZZ_CHECK(again.proto == nh.proto && again.kind == nh.kind && again.mx == nh.mx &&
			   again.is_ip == nh.is_ip && (!nh.is_ip || ipaddr_equal(&again.ip, &nh.ip)) &&
			   again.port == nh.port && strcmp(again.host, nh.host) == 0 &&
			   strcmp(again.path, nh.path) == 0,
		   "%s parses back differently", buf_cstr(&text));
	buf_free(&text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	unsigned mode = data[0] % M__COUNT;
	bool lmtp = data[0] & 0x80;
	size_t n = size - 1;
	/* Exact size for the (pointer, length) parsers, so ASan sees any read
	 * past the end; a NUL-terminated copy for the C-string ones. */
	char *p = malloc(n ? n : 1);
	memcpy(p, data + 1, n);
	char *s = malloc(n + 1);
	memcpy(s, data + 1, n);
	s[n] = 0;

	switch (mode) {
	case M_MAIL: path(p, n, false, false); break;
	case M_MAIL_STRICT: path(p, n, false, true); break;
	case M_RCPT: path(p, n, true, false); break;
	case M_RCPT_STRICT: path(p, n, true, true); break;
	case M_IPADDR: ipaddr(p, n); break;
	case M_IFLIST: iflist(s); break;
	case M_NETLIST: netlist(s); break;
	case M_NEXTHOP: nexthop(s, lmtp ? NH_LMTP : NH_SMTP); break;
	}
	free(p);
	free(s);
	return 0;
}
