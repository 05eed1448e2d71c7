/* dns.h: asynchronous DNS for the delivery side: MX and address lookups
 * with c-ares, run inside the instance's sd-event loop (no threads, no
 * blocking). Answers are hostile input: every name is checked with
 * hostname_valid(), every count bounded, and a malformed, truncated or
 * otherwise unusable answer is a temporary failure, never a crash. */
#ifndef VHOSTMTA_DNS_H
#define VHOSTMTA_DNS_H

#include <stdbool.h>
#include <stddef.h>

#include <systemd/sd-event.h>

#include "addr.h"

#define DNS_MAX_HOSTS 10 /* MX hosts kept, lowest preference first */
#define DNS_MAX_ADDRS 8  /* addresses kept per host */
#define DNS_MAX_SERVERS 3 /* servers in dns_resolver (resolv.conf's MAXNS) */

/* Each try waits DNS_TIMEOUT_MS, doubled after every round over the
 * servers, and there are DNS_TRIES rounds: a dead server costs 2 s + 4 s,
 * three dead servers 18 s at most, before DNS_TEMP. */
#define DNS_TIMEOUT_MS 2000
#define DNS_TRIES 2

/* Families to look up: a bit mask. */
#define DNS_V4 1
#define DNS_V6 2

enum dns_status {
	DNS_OK,       /* hosts[] holds at least one host with an address */
	DNS_NOTFOUND, /* permanent: NXDOMAIN, or no address for any MX host
		       * (every lookup answered, none had records) */
	DNS_NULLMX,   /* permanent: RFC 7505 null MX ("0 .") */
	DNS_TEMP,     /* temporary: SERVFAIL, REFUSED, timeout, malformed
		       * answer, or an MX host whose lookup failed temporarily
		       * while no other host had an address */
};

struct dns_host {
	char name[256];  /* validated host name (lower case, no trailing dot) */
	unsigned pref;   /* MX preference; 0 for an implicit MX or dns_host() */
	size_t naddrs;
	struct ipaddr addrs[DNS_MAX_ADDRS];
};

struct dns_result {
	enum dns_status status;
	/* For status != DNS_OK: a printable reason in Postfix's words, e.g.
	 * "Host or domain name not found. Name service error for
	 * name=dest.test type=MX: Host not found". */
	char reason[300];
	bool implicit_mx; /* no MX records: the domain itself is the host */
	size_t nhosts;
	struct dns_host *hosts; /* sorted by pref; equal prefs in random order */
};

struct dns;
struct dns_query;

/* The callback runs once per query, always from the event loop (never
 * from inside dns_mx()/dns_host()); r and everything in it is valid only
 * during the call. */
typedef void dns_fn(void *ctx, const struct dns_result *r);

/* dns_new: a resolver on event. servers: the dns_resolver parameter
 * ("ip", "ip:port", "[ipv6]:port", comma separated) or "" for
 * /etc/resolv.conf. NULL with a phrase in err on failure. */
struct dns *dns_new(sd_event *event, const char *servers, char *err, size_t errlen);
/* dns_new_timeout: dns_new with another per-try timeout and number of
 * tries (tests use short ones). */
struct dns *dns_new_timeout(sd_event *event, const char *servers, unsigned timeout_ms,
			    unsigned tries, char *err, size_t errlen);
/* dns_free: pending queries are cancelled (their callbacks never run). */
void dns_free(struct dns *d);

/* dns_mx: the MX hosts of domain with their addresses (families); no MX
 * records (NODATA) means the domain's own A/AAAA (implicit_mx). Every MX
 * host's address lookups run in parallel. A host's addresses come in
 * random order within a family, the families interleaved IPv6 first
 * (RFC 8305); hosts without an address are left out. families 0 means
 * both. Never NULL; an invalid domain is a DNS_NOTFOUND callback. */
struct dns_query *dns_mx(struct dns *d, const char *domain, int families, dns_fn *fn, void *ctx);
/* dns_host: the addresses of one host (no MX lookup), as one dns_host
 * with pref 0. */
struct dns_query *dns_host(struct dns *d, const char *host, int families, dns_fn *fn, void *ctx);
/* dns_cancel: the callback will not run; q is freed. Safe inside any
 * callback; a no-op on the query whose callback is running (it is freed
 * when the callback returns). dns_free is safe inside a callback too. */
void dns_cancel(struct dns_query *q);

/* ---- answer parsing, separate so tests can feed it hostile packets ---- */

struct dns_mx {
	char name[256];
	unsigned pref;
};

enum dns_parse {
	DNS_PARSE_OK,      /* records found */
	DNS_PARSE_NODATA,  /* the name exists, no records of the type */
	DNS_PARSE_NULLMX,  /* MX only: a "0 ." record (RFC 7505). As in
			    * Postfix, a "." exchange among other records
			    * counts too: the domain said it takes no mail */
	DNS_PARSE_BAD,     /* malformed answer (err says why) */
};

/* dns_parse_mx: the MX records of a raw answer (abuf, alen as c-ares
 * hands them over), lowest preference first, at most max; records whose
 * exchange is not a valid host name are skipped (counted in *skipped).
 * Only records owned by the question's name or a CNAME chained from it
 * count; a name listed twice keeps its lowest preference; equal
 * preferences keep their order in the answer. Records that are all
 * invalid make the answer DNS_PARSE_BAD (never NODATA: that would mean
 * the domain's own address). */
enum dns_parse dns_parse_mx(const unsigned char *abuf, int alen, struct dns_mx *out, size_t max,
			    size_t *n, size_t *skipped, char *err, size_t errlen);
/* dns_parse_addrs: the A (family AF_INET) or AAAA (AF_INET6) records of
 * a raw answer, at most max, duplicates dropped; a record of the wrong
 * length makes the answer DNS_PARSE_BAD. */
enum dns_parse dns_parse_addrs(const unsigned char *abuf, int alen, int family,
			       struct ipaddr *out, size_t max, size_t *n, char *err, size_t errlen);

#endif
