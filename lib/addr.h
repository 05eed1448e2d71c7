/* addr.h: the address grammar shared by the manager and the instance:
 * IP addresses (brackets optional), inet_interfaces lists, mynetworks
 * CIDR lists, host and domain names, and next hops. Parsers never allocate
 * on failure, never read past the given length, and explain a refusal in
 * err (one phrase, no file/line: the caller adds where). */
#ifndef VHOSTMTA_ADDR_H
#define VHOSTMTA_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct buf;

/* An IPv4 or IPv6 address. family is AF_INET or AF_INET6. */
struct ipaddr {
	sa_family_t family;
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} u;
};

#define IPADDR_STRLEN 48 /* INET6_ADDRSTRLEN plus room for brackets */

/* ipaddr_parse: s[0..n) is an IPv4 dotted quad (four decimal parts 0-255,
 * no leading zeros) or an IPv6 address, either optionally in [brackets];
 * "[IPv6:...]" (RFC 5321 literal tag, any case) is accepted for IPv6.
 * Zone ids ("%eth0") are refused. */
bool ipaddr_parse(const char *s, size_t n, struct ipaddr *out);
/* ipaddr_format: canonical text without brackets into buf; returns buf. */
const char *ipaddr_format(const struct ipaddr *a, char buf[IPADDR_STRLEN]);
bool ipaddr_equal(const struct ipaddr *a, const struct ipaddr *b);
bool ipaddr_is_loopback(const struct ipaddr *a);   /* 127/8, ::1, ::ffff:127/104 */
bool ipaddr_is_unspecified(const struct ipaddr *a); /* 0.0.0.0, :: */
bool ipaddr_is_multicast(const struct ipaddr *a);  /* 224/4, ff00::/8 */
bool ipaddr_is_broadcast(const struct ipaddr *a);  /* 255.255.255.255 */
bool ipaddr_is_v4mapped(const struct ipaddr *a);   /* ::ffff:0:0/96 */
/* ipaddr_unmap: ::ffff:a.b.c.d becomes a.b.c.d; other addresses unchanged. */
void ipaddr_unmap(const struct ipaddr *in, struct ipaddr *out);
void ipaddr_to_sockaddr(const struct ipaddr *a, uint16_t port,
			struct sockaddr_storage *ss, socklen_t *len);
bool ipaddr_from_sockaddr(const struct sockaddr *sa, socklen_t len,
			  struct ipaddr *out, uint16_t *port);

/* inet_interfaces: "all", "loopback-only", or a list of addresses
 * (white space and/or commas between items, brackets optional). */
enum iflist_kind { IFLIST_ALL, IFLIST_LOOPBACK_ONLY, IFLIST_ADDRS };
struct iflist {
	enum iflist_kind kind;
	size_t n;
	struct ipaddr *addrs; /* IFLIST_ADDRS only; duplicates refused */
};
bool iflist_parse(const char *value, struct iflist *out, char *err, size_t errlen);
void iflist_free(struct iflist *l);
/* iflist_contains: a is in an explicit list (IPv4-mapped IPv6 matches its
 * IPv4 form). For "all" and "loopback-only" see iflist_expand. */
bool iflist_contains(const struct iflist *l, const struct ipaddr *a);
/* iflist_expand: the explicit addresses a list stands for on this host:
 * "all" is every address of every interface that is up, "loopback-only"
 * is 127.0.0.1 and ::1, an explicit list is copied. */
bool iflist_expand(const struct iflist *in, struct iflist *out, char *err, size_t errlen);
/* iflist_bind_address: the postconf(5) rule. True, with *out set, when the
 * list is explicit and holds exactly one address of family and that
 * address is not loopback: it is then the source address of outbound
 * connections of that family. */
bool iflist_bind_address(const struct iflist *l, int family, struct ipaddr *out);

/* mynetworks: a list of "a.b.c.d", "a.b.c.d/len", "[v6]", "[v6]/len"
 * (brackets optional for IPv6). Host bits beyond the prefix, Postfix's
 * "!", "/file" and "type:table" forms are refused. */
struct cidr {
	struct ipaddr net;
	unsigned prefix; /* 0-32 or 0-128 */
};
struct netlist {
	size_t n;
	struct cidr *nets;
};
bool netlist_parse(const char *value, struct netlist *out, char *err, size_t errlen);
void netlist_free(struct netlist *l);
/* netlist_match: a is inside one of the networks; an IPv4-mapped IPv6
 * address matches IPv4 networks. */
bool netlist_match(const struct netlist *l, const struct ipaddr *a);
/* netlist_format: canonical text, IPv6 in brackets, single space between. */
void netlist_format(const struct netlist *l, struct buf *out);

/* Host and domain names: LDH labels of 1-63 octets, no leading or trailing
 * hyphen, at most 253 octets in all, ASCII only (A-labels), no trailing
 * dot, a last label that is not all digits. fqdn requires two labels. */
bool hostname_valid(const char *s, size_t n, bool fqdn);

/* Next hops. Forms ("transport:" optional, defproto when absent):
 *   smtp:host[:port]      MX lookup for host (SMTP only)
 *   smtp:[host][:port]    no MX lookup: host's A/AAAA, or the literal IP
 *   lmtp:[host]:port, lmtp:host:port, lmtp:inet:host:port   (never MX)
 *   lmtp:unix:/absolute/path
 * Default ports: smtp 25, lmtp 24. IPv6 addresses must be bracketed. */
enum nh_proto { NH_SMTP, NH_LMTP };
enum nh_kind { NH_INET, NH_UNIX };
struct nexthop {
	enum nh_proto proto;
	enum nh_kind kind;
	bool mx;        /* look up MX records for host */
	bool is_ip;     /* host is an IP address (then ip is set, mx false) */
	struct ipaddr ip;
	uint16_t port;
	char host[254]; /* without brackets; empty for NH_UNIX */
	char path[108]; /* NH_UNIX: absolute socket path (sun_path size) */
};
bool nexthop_parse(const char *s, enum nh_proto defproto, struct nexthop *out,
		   char *err, size_t errlen);
/* nexthop_format: canonical form that nexthop_parse reads back to the
 * same struct: "smtp:host", "smtp:[host]:2525", "lmtp:unix:/path"; the
 * port is written only when it is not the protocol's default. */
void nexthop_format(const struct nexthop *nh, struct buf *out);

#endif
