/* addr.c: the address grammar of addr.h: strict IP address text, the
 * inet_interfaces and mynetworks lists, host names and next hops. All of it
 * is pure text <-> struct work except iflist_expand, which asks the kernel
 * for interface addresses. Parsers build their result in a local and copy
 * it out only on success, so a refusal never leaves half-built state. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"
#include "util.h"

#define IP_TEXT_MAX 64   /* longest ipaddr_parse input, brackets and tag included */
#define CIDR_STRLEN (IPADDR_STRLEN + 8)
#define HOSTNAME_MAX 253
#define LABEL_MAX 63

/* ---- small character and number helpers (ASCII only: locale never applies) */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_digit(s[i]))
			return false;
	return n > 0;
}

/* parse_dec: s[0..n) is a decimal number <= max without sign, blanks or
 * leading zeros ("0" itself is fine). One rule for octets, ports, prefixes. */
static bool parse_dec(const char *s, size_t n, unsigned max, unsigned *out)
{
	unsigned v = 0;

	if (n == 0 || (s[0] == '0' && n > 1))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* ---- error text */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- IP addresses */

/* parse_v4: exactly four dot-separated parse_dec parts, each <= 255. */
static bool parse_v4(const char *s, size_t n, struct in_addr *out)
{
	uint8_t b[4];

	for (int i = 0; i < 4; i++) {
		const char *dot = i < 3 ? memchr(s, '.', n) : NULL;
		size_t len = dot ? (size_t)(dot - s) : n;
		unsigned v;

		if ((i < 3 && dot == NULL) || !parse_dec(s, len, 255, &v))
			return false;
		b[i] = (uint8_t)v;
		if (dot) {
			n -= len + 1;
			s = dot + 1;
		}
	}
	memcpy(out, b, sizeof b);
	return true;
}

/* Only these can appear in an address; everything else (zone "%", blanks,
 * stray brackets, an embedded NUL) is refused before inet_pton sees it. */
static bool ip_chars(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_hex(s[i]) && s[i] != ':' && s[i] != '.')
			return false;
	return true;
}

bool ipaddr_parse(const char *s, size_t n, struct ipaddr *out)
{
	char tmp[IP_TEXT_MAX + 1];
	bool v6only = false;
	struct ipaddr a;

	if (s == NULL || n == 0 || n > IP_TEXT_MAX)
		return false;
	if (s[0] == '[') {
		if (n < 2 || s[n - 1] != ']')
			return false;
		s++;
		n -= 2;
		if (n >= 5 && ascii_strncasecmp(s, "IPv6:", 5) == 0) {
			s += 5;
			n -= 5;
			v6only = true;
		}
	}
	if (n == 0 || !ip_chars(s, n))
		return false;
	memset(&a, 0, sizeof a);
	if (memchr(s, ':', n) != NULL) {
		memcpy(tmp, s, n); /* inet_pton wants a C string; n <= IP_TEXT_MAX */
		tmp[n] = 0;
		if (inet_pton(AF_INET6, tmp, &a.u.v6) != 1)
			return false;
		a.family = AF_INET6;
	} else {
		if (v6only || !parse_v4(s, n, &a.u.v4))
			return false;
		a.family = AF_INET;
	}
	*out = a;
	return true;
}

const char *ipaddr_format(const struct ipaddr *a, char buf[IPADDR_STRLEN])
{
	if (inet_ntop(a->family, &a->u, buf, IPADDR_STRLEN) == NULL)
		snprintf(buf, IPADDR_STRLEN, "(family %d)", (int)a->family);
	return buf;
}

/* ip_bytes: the address in network order, 4 or 16 bytes. */
static uint8_t *ip_bytes_rw(struct ipaddr *a, size_t *len)
{
	if (a->family == AF_INET) {
		*len = 4;
		return (uint8_t *)&a->u.v4;
	}
	*len = 16;
	return a->u.v6.s6_addr;
}

static const uint8_t *ip_bytes(const struct ipaddr *a, size_t *len)
{
	return ip_bytes_rw((struct ipaddr *)a, len);
}

bool ipaddr_equal(const struct ipaddr *a, const struct ipaddr *b)
{
	size_t len;
	const uint8_t *x = ip_bytes(a, &len), *y = ip_bytes(b, &len);

	return a->family == b->family && memcmp(x, y, len) == 0;
}

bool ipaddr_is_v4mapped(const struct ipaddr *a)
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return a->family == AF_INET6 && memcmp(a->u.v6.s6_addr, prefix, sizeof prefix) == 0;
}

bool ipaddr_is_loopback(const struct ipaddr *a)
{
	static const uint8_t one[16] = { [15] = 1 };
	struct ipaddr u;
	size_t len;

	if (a->family == AF_INET6 && memcmp(a->u.v6.s6_addr, one, 16) == 0)
		return true;
	ipaddr_unmap(a, &u);
	return u.family == AF_INET && ip_bytes(&u, &len)[0] == 127;
}

bool ipaddr_is_unspecified(const struct ipaddr *a)
{
	size_t len;
	const uint8_t *b = ip_bytes(a, &len);

	for (size_t i = 0; i < len; i++)
		if (b[i] != 0)
			return false;
	return true;
}

bool ipaddr_is_multicast(const struct ipaddr *a)
{
	size_t len;
	const uint8_t *b = ip_bytes(a, &len);

	return a->family == AF_INET ? (b[0] & 0xf0) == 0xe0 : b[0] == 0xff;
}

bool ipaddr_is_broadcast(const struct ipaddr *a)
{
	return a->family == AF_INET && a->u.v4.s_addr == 0xffffffffu;
}

void ipaddr_unmap(const struct ipaddr *in, struct ipaddr *out)
{
	struct ipaddr r = *in; /* in and out may be the same object */

	if (ipaddr_is_v4mapped(in)) {
		memset(&r, 0, sizeof r);
		r.family = AF_INET;
		memcpy(&r.u.v4, in->u.v6.s6_addr + 12, 4);
	}
	*out = r;
}

void ipaddr_to_sockaddr(const struct ipaddr *a, uint16_t port,
			struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof *ss);
	if (a->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr = a->u.v4;
		*len = sizeof *sin;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = a->u.v6;
		*len = sizeof *sin6;
	}
}

bool ipaddr_from_sockaddr(const struct sockaddr *sa, socklen_t len,
			  struct ipaddr *out, uint16_t *port)
{
	struct ipaddr a;
	uint16_t p;

	if (sa == NULL)
		return false;
	memset(&a, 0, sizeof a);
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		a.u.v4 = sin->sin_addr;
		p = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		a.u.v6 = sin6->sin6_addr;
		p = ntohs(sin6->sin6_port);
	} else {
		return false;
	}
	a.family = sa->sa_family;
	*out = a;
	if (port != NULL)
		*port = p;
	return true;
}

/* ---- inet_interfaces */

static size_t count_items(const char *value)
{
	const char *cur = value;
	size_t n = 0, len;

	while (list_next(&cur, &len) != NULL)
		n++;
	return n;
}

static bool iflist_keyword(const char *s, size_t n, enum iflist_kind *kind)
{
	if (n == 3 && ascii_strncasecmp(s, "all", 3) == 0)
		*kind = IFLIST_ALL;
	else if (n == 13 && ascii_strncasecmp(s, "loopback-only", 13) == 0)
		*kind = IFLIST_LOOPBACK_ONLY;
	else
		return false;
	return true;
}

/* Unmapped comparison: ::ffff:a.b.c.d and a.b.c.d are one listener. */
static bool addrs_contain(const struct ipaddr *v, size_t n, const struct ipaddr *a)
{
	struct ipaddr x, y;

	ipaddr_unmap(a, &x);
	for (size_t i = 0; i < n; i++) {
		ipaddr_unmap(&v[i], &y);
		if (ipaddr_equal(&x, &y))
			return true;
	}
	return false;
}

/* iflist_item: one explicit inet_interfaces item. Addresses no socket can
 * listen on are refused here rather than when the instance starts. */
static bool iflist_item(const char *s, size_t n, const struct iflist *l,
			struct ipaddr *a, char *err, size_t errlen)
{
	char sh[STR_SHOW_BUF], txt[IPADDR_STRLEN];
	enum iflist_kind kind;

	if (iflist_keyword(s, n, &kind)) {
		seterr(err, errlen, "\"%s\" must be the only item", str_show(s, n, sh));
		return false;
	}
	if (!ipaddr_parse(s, n, a)) {
		seterr(err, errlen, "bad address \"%s\"", str_show(s, n, sh));
		return false;
	}
	if (ipaddr_is_unspecified(a) || ipaddr_is_multicast(a) || ipaddr_is_broadcast(a)) {
		seterr(err, errlen, "not an interface address: \"%s\"%s", str_show(s, n, sh),
		       ipaddr_is_unspecified(a) ? " (use \"all\")" : "");
		return false;
	}
	if (addrs_contain(l->addrs, l->n, a)) {
		seterr(err, errlen, "duplicate address %s", ipaddr_format(a, txt));
		return false;
	}
	return true;
}

bool iflist_parse(const char *value, struct iflist *out, char *err, size_t errlen)
{
	struct iflist l = { IFLIST_ADDRS, 0, NULL };
	const char *cur = value ? value : "", *item;
	size_t count = count_items(cur), len;

	if (count == 0) {
		seterr(err, errlen, "no addresses");
		return false;
	}
	item = list_next(&cur, &len);
	if (count == 1 && iflist_keyword(item, len, &l.kind)) {
		*out = l;
		return true;
	}
	l.addrs = xcalloc(count, sizeof *l.addrs);
	for (; item != NULL; item = list_next(&cur, &len)) {
		if (!iflist_item(item, len, &l, &l.addrs[l.n], err, errlen)) {
			free(l.addrs);
			return false;
		}
		l.n++;
	}
	*out = l;
	return true;
}

void iflist_free(struct iflist *l)
{
	free(l->addrs);
	l->addrs = NULL;
	l->n = 0;
}

bool iflist_contains(const struct iflist *l, const struct ipaddr *a)
{
	return l->kind == IFLIST_ADDRS && addrs_contain(l->addrs, l->n, a);
}

static void iflist_add(struct iflist *l, size_t *cap, const struct ipaddr *a)
{
	if (addrs_contain(l->addrs, l->n, a))
		return; /* one address on two interfaces is still one listener */
	if (l->n == *cap) {
		*cap = *cap ? *cap * 2 : 8;
		l->addrs = xreallocarray(l->addrs, *cap, sizeof *l->addrs);
	}
	l->addrs[l->n++] = *a;
}

/* Link-local IPv6 addresses need a scope id that struct ipaddr cannot
 * carry, so a listener on them could never be named again: skip them. */
static bool usable_ifaddr(const struct sockaddr *sa, struct ipaddr *a)
{
	socklen_t len;

	if (sa->sa_family == AF_INET)
		len = sizeof(struct sockaddr_in);
	else if (sa->sa_family == AF_INET6)
		len = sizeof(struct sockaddr_in6);
	else
		return false;
	if (sa->sa_family == AF_INET6 && ((const struct sockaddr_in6 *)sa)->sin6_scope_id != 0)
		return false;
	return ipaddr_from_sockaddr(sa, len, a, NULL);
}

static bool expand_all(struct iflist *l, char *err, size_t errlen)
{
	struct ifaddrs *ifs;
	struct ipaddr a;
	size_t cap = 0;

	if (getifaddrs(&ifs) < 0) {
		seterr(err, errlen, "getifaddrs: %s", strerror(errno));
		return false;
	}
	for (const struct ifaddrs *i = ifs; i != NULL; i = i->ifa_next)
		if (i->ifa_addr != NULL && (i->ifa_flags & IFF_UP) && usable_ifaddr(i->ifa_addr, &a))
			iflist_add(l, &cap, &a);
	freeifaddrs(ifs);
	if (l->n == 0) {
		seterr(err, errlen, "no interface is up");
		return false;
	}
	return true;
}

bool iflist_expand(const struct iflist *in, struct iflist *out, char *err, size_t errlen)
{
	struct iflist l = { IFLIST_ADDRS, 0, NULL };
	struct ipaddr a;
	size_t cap = 0;

	switch (in->kind) {
	case IFLIST_ALL:
		if (!expand_all(&l, err, errlen)) {
			free(l.addrs);
			return false;
		}
		break;
	case IFLIST_LOOPBACK_ONLY:
		ipaddr_parse("127.0.0.1", 9, &a);
		iflist_add(&l, &cap, &a);
		ipaddr_parse("::1", 3, &a);
		iflist_add(&l, &cap, &a);
		break;
	case IFLIST_ADDRS:
		for (size_t i = 0; i < in->n; i++)
			iflist_add(&l, &cap, &in->addrs[i]);
		break;
	}
	*out = l;
	return true;
}

/* The sole address of a family is the one the instance is known by, so
 * outbound mail leaves from it. Loopback is never a useful source. Mapped
 * addresses count as the IPv4 address they carry. */
bool iflist_bind_address(const struct iflist *l, int family, struct ipaddr *out)
{
	struct ipaddr a, found;
	size_t n = 0;

	if (l->kind != IFLIST_ADDRS)
		return false;
	for (size_t i = 0; i < l->n; i++) {
		ipaddr_unmap(&l->addrs[i], &a);
		if (a.family == family) {
			found = a;
			n++;
		}
	}
	if (n != 1 || ipaddr_is_loopback(&found))
		return false;
	*out = found;
	return true;
}

/* ---- mynetworks */

/* cidr_mask: a with every bit beyond prefix cleared. */
static void cidr_mask(const struct ipaddr *a, unsigned prefix, struct ipaddr *out)
{
	size_t len;
	uint8_t *b;

	*out = *a;
	b = ip_bytes_rw(out, &len);
	for (size_t i = 0; i < len; i++) {
		unsigned first = 8 * (unsigned)i; /* bit number of b[i]'s top bit */
		unsigned keep = prefix <= first ? 0 : prefix - first >= 8 ? 8 : prefix - first;
		b[i] &= (uint8_t)(0xff00u >> keep);
	}
}

static const char *cidr_format(const struct cidr *c, char buf[CIDR_STRLEN])
{
	char txt[IPADDR_STRLEN];

	snprintf(buf, CIDR_STRLEN, c->net.family == AF_INET6 ? "[%s]/%u" : "%s/%u",
		 ipaddr_format(&c->net, txt), c->prefix);
	return buf;
}

/* table_form: "type:name". An IPv6 address also has a word before its
 * first colon, but that word is at most four hex digits and is never
 * followed by '/'. */
static bool table_form(const char *s, size_t n)
{
	const char *colon = memchr(s, ':', n);
	size_t wl = colon ? (size_t)(colon - s) : 0;
	bool hex = wl <= 4;

	if (wl == 0 || !is_alpha(s[0]))
		return false;
	for (size_t i = 0; i < wl; i++) {
		if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '_' && s[i] != '-')
			return false;
		hex = hex && is_hex(s[i]);
	}
	return !hex || (wl + 1 < n && colon[1] == '/');
}

/* Postfix forms we deliberately do not implement get their own message,
 * so nobody mistakes them for a typo. */
static bool netlist_unsupported(const char *s, size_t n, char *err, size_t errlen)
{
	char sh[STR_SHOW_BUF];

	if (s[0] == '!')
		seterr(err, errlen, "negation is not supported: \"%s\"", str_show(s, n, sh));
	else if (s[0] == '/')
		seterr(err, errlen, "file patterns are not supported: \"%s\"", str_show(s, n, sh));
	else if (table_form(s, n))
		seterr(err, errlen, "lookup tables are not supported: \"%s\"", str_show(s, n, sh));
	else
		return false;
	return true;
}

static bool netlist_item(const char *s, size_t n, struct cidr *c, char *err, size_t errlen)
{
	const char *slash = memchr(s, '/', n);
	size_t alen = slash ? (size_t)(slash - s) : n;
	char sh[STR_SHOW_BUF], hint[CIDR_STRLEN];
	struct cidr masked;
	unsigned max;

	if (netlist_unsupported(s, n, err, errlen))
		return false;
	if (!ipaddr_parse(s, alen, &c->net)) {
		seterr(err, errlen, "bad network \"%s\"", str_show(s, n, sh));
		return false;
	}
	max = c->net.family == AF_INET ? 32 : 128;
	c->prefix = max;
	if (slash && !parse_dec(slash + 1, n - alen - 1, 999, &c->prefix)) {
		seterr(err, errlen, "bad prefix length in \"%s\"", str_show(s, n, sh));
		return false;
	}
	if (c->prefix > max) {
		seterr(err, errlen, "prefix length out of range in \"%s\"", str_show(s, n, sh));
		return false;
	}
	masked.prefix = c->prefix;
	cidr_mask(&c->net, c->prefix, &masked.net);
	if (!ipaddr_equal(&masked.net, &c->net)) {
		seterr(err, errlen, "non-null host address bits in \"%s\", perhaps use \"%s\"",
		       str_show(s, n, sh), cidr_format(&masked, hint));
		return false;
	}
	return true;
}

bool netlist_parse(const char *value, struct netlist *out, char *err, size_t errlen)
{
	struct netlist l = { 0, NULL };
	const char *cur = value ? value : "", *item;
	size_t count = count_items(cur), len;

	if (count > 0)
		l.nets = xcalloc(count, sizeof *l.nets);
	while ((item = list_next(&cur, &len)) != NULL) {
		if (!netlist_item(item, len, &l.nets[l.n], err, errlen)) {
			free(l.nets);
			return false;
		}
		l.n++;
	}
	*out = l;
	return true;
}

void netlist_free(struct netlist *l)
{
	free(l->nets);
	l->nets = NULL;
	l->n = 0;
}

static bool cidr_contains(const struct cidr *c, const struct ipaddr *a)
{
	struct ipaddr m;

	if (a->family != c->net.family)
		return false;
	cidr_mask(a, c->prefix, &m);
	return ipaddr_equal(&m, &c->net);
}

/* A client on a dual-stack socket shows up as ::ffff:a.b.c.d; it is still
 * the IPv4 client the IPv4 networks are about. */
bool netlist_match(const struct netlist *l, const struct ipaddr *a)
{
	struct ipaddr u;

	ipaddr_unmap(a, &u);
	for (size_t i = 0; i < l->n; i++)
		if (cidr_contains(&l->nets[i], a) || cidr_contains(&l->nets[i], &u))
			return true;
	return false;
}

void netlist_format(const struct netlist *l, struct buf *out)
{
	char txt[CIDR_STRLEN];

	for (size_t i = 0; i < l->n; i++)
		buf_printf(out, "%s%s", i ? " " : "", cidr_format(&l->nets[i], txt));
}

/* ---- host names */

static bool label_valid(const char *s, size_t n)
{
	if (n == 0 || n > LABEL_MAX || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '-')
			return false;
	return true;
}

bool hostname_valid(const char *s, size_t n, bool fqdn)
{
	size_t start = 0, labels = 0;

	if (s == NULL || n == 0 || n > HOSTNAME_MAX)
		return false;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		if (!label_valid(s + start, i - start))
			return false;
		labels++;
		if (i == n && all_digits(s + start, i - start))
			return false; /* an IPv4 address, or a typo of one */
		start = i + 1;
	}
	return !fqdn || labels >= 2;
}

/* ---- next hops */

static uint16_t default_port(enum nh_proto p) { return p == NH_LMTP ? 24 : 25; }

/* word_is: s starts with word (any case) followed by ':'. */
static bool word_is(const char *s, const char *word)
{
	size_t n = strlen(word);

	return ascii_strncasecmp(s, word, n) == 0 && s[n] == ':';
}

/* looks_like_transport: "relay:..." where the part after the colon is not
 * a port, so the word cannot be a host name followed by its port. */
static bool looks_like_transport(const char *s, size_t *wl)
{
	const char *colon = strchr(s, ':');
	size_t n = colon ? (size_t)(colon - s) : 0;

	if (n == 0 || !is_alpha(s[0]) || all_digits(colon + 1, strlen(colon + 1)))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '-' && s[i] != '_')
			return false;
	*wl = n;
	return true;
}

static bool nh_port(struct nexthop *nh, const char *port, char *err, size_t errlen)
{
	char sh[STR_SHOW_BUF];
	unsigned v;

	if (port == NULL) {
		nh->port = default_port(nh->proto);
		return true;
	}
	if (!parse_dec(port, strlen(port), 65535, &v) || v == 0) {
		seterr(err, errlen, "bad port \"%s\"", str_show(port, strlen(port), sh));
		return false;
	}
	nh->port = (uint16_t)v;
	return true;
}

/* nh_host: s[0..n) is "[ip]", "[host]", "ipv4" or "host". An IP address
 * is stored in canonical text too, so format and parse agree on it. */
static bool nh_host(struct nexthop *nh, const char *s, size_t n, char *err, size_t errlen)
{
	bool bracketed = s[0] == '[';
	char sh[STR_SHOW_BUF];

	if (ipaddr_parse(s, n, &nh->ip)) {
		nh->is_ip = true;
		nh->mx = false;
		ipaddr_format(&nh->ip, nh->host);
		return true;
	}
	if (bracketed) {
		s++;
		n -= 2;
	}
	if (n == 0) {
		seterr(err, errlen, "empty host");
		return false;
	}
	if (!hostname_valid(s, n, false)) {
		seterr(err, errlen, "bad host \"%s\"", str_show(s, n, sh));
		return false;
	}
	memcpy(nh->host, s, n);
	nh->host[n] = 0;
	nh->mx = !bracketed && nh->proto == NH_SMTP;
	return true;
}

/* nh_inet: "[host]", "[host]:port", "host", "host:port". */
static bool nh_inet(struct nexthop *nh, const char *s, char *err, size_t errlen)
{
	const char *end, *port = NULL;
	char sh[STR_SHOW_BUF];

	if (*s == 0) {
		seterr(err, errlen, "empty next hop");
		return false;
	}
	if (s[0] == '[') {
		end = strchr(s, ']');
		if (end == NULL) {
			seterr(err, errlen, "missing \"]\" in \"%s\"", str_show(s, strlen(s), sh));
			return false;
		}
		end++;
		if (*end != 0 && *end != ':') {
			seterr(err, errlen, "garbage after \"]\" in \"%s\"", str_show(s, strlen(s), sh));
			return false;
		}
	} else {
		end = s + strcspn(s, ":");
	}
	if (*end == ':')
		port = end + 1;
	return nh_host(nh, s, (size_t)(end - s), err, errlen) && nh_port(nh, port, err, errlen);
}

/* nh_unix: an absolute path that fits sun_path. Blanks are refused with
 * control bytes: the next hop is written into line- and list-based files. */
static bool nh_unix(struct nexthop *nh, const char *path, char *err, size_t errlen)
{
	size_t n = strlen(path);
	char sh[STR_SHOW_BUF];

	nh->kind = NH_UNIX;
	if (n == 0) {
		seterr(err, errlen, "empty socket path");
		return false;
	}
	if (path[0] != '/') {
		seterr(err, errlen, "socket path \"%s\" is not absolute", str_show(path, n, sh));
		return false;
	}
	if (n >= sizeof nh->path) {
		seterr(err, errlen, "socket path longer than %zu bytes", sizeof nh->path - 1);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)path[i];
		if (c <= 0x20 || c == 0x7f) {
			seterr(err, errlen, "bad character in socket path \"%s\"", str_show(path, n, sh));
			return false;
		}
	}
	memcpy(nh->path, path, n + 1);
	return true;
}

static bool nh_dest(struct nexthop *nh, const char *s, bool explicit_proto,
		    char *err, size_t errlen)
{
	struct ipaddr a;
	char sh[STR_SHOW_BUF];
	size_t wl;

	if (s[0] != '[' && ipaddr_parse(s, strlen(s), &a) && a.family == AF_INET6) {
		seterr(err, errlen, "IPv6 address must be in brackets: \"%s\"", str_show(s, strlen(s), sh));
		return false;
	}
	if (word_is(s, "unix")) {
		if (nh->proto == NH_SMTP) {
			seterr(err, errlen, "smtp over a unix socket is not supported");
			return false;
		}
		return nh_unix(nh, s + 5, err, errlen);
	}
	if (word_is(s, "inet")) {
		if (nh->proto == NH_SMTP) {
			seterr(err, errlen, "\"inet:\" is only for lmtp");
			return false;
		}
		return nh_inet(nh, s + 5, err, errlen);
	}
	if (!explicit_proto && looks_like_transport(s, &wl)) {
		seterr(err, errlen, "unknown transport \"%s\"", str_show(s, wl, sh));
		return false;
	}
	return nh_inet(nh, s, err, errlen);
}

bool nexthop_parse(const char *s, enum nh_proto defproto, struct nexthop *out,
		   char *err, size_t errlen)
{
	struct nexthop nh;
	bool explicit_proto = true;

	memset(&nh, 0, sizeof nh); /* padding too: equal hops compare equal */
	if (s == NULL)
		s = "";
	if (word_is(s, "smtp"))
		nh.proto = NH_SMTP;
	else if (word_is(s, "lmtp"))
		nh.proto = NH_LMTP;
	else
		explicit_proto = false;
	if (explicit_proto)
		s += 5;
	else
		nh.proto = defproto;
	nh.kind = NH_INET;
	if (*s == 0) {
		seterr(err, errlen, "empty next hop");
		return false;
	}
	if (!nh_dest(&nh, s, explicit_proto, err, errlen))
		return false;
	memcpy(out, &nh, sizeof nh); /* padding included, unlike assignment */
	return true;
}

void nexthop_format(const struct nexthop *nh, struct buf *out)
{
	const char *proto = nh->proto == NH_LMTP ? "lmtp" : "smtp";
	char txt[IPADDR_STRLEN];
	const char *host;

	if (nh->kind == NH_UNIX) {
		buf_printf(out, "%s:unix:%s", proto, nh->path);
		return;
	}
	host = nh->is_ip ? ipaddr_format(&nh->ip, txt) : nh->host;
	buf_printf(out, nh->mx ? "%s:%s" : "%s:[%s]", proto, host);
	if (nh->port != default_port(nh->proto))
		buf_printf(out, ":%u", (unsigned)nh->port);
}
