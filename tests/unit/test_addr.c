/* test_addr.c: table-driven tests of lib/addr.c. Every parser is fed its
 * valid and invalid tables; length-bounded parsers get exact-size heap
 * copies so ASan catches a read past n; next hops are checked for the
 * parse(format(parse(x))) == parse(x) round trip over the whole valid table. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"
#include "util.h"

/* L: a literal and its length, embedded NULs included. */
#define L(x) x, sizeof(x) - 1

/* CHECK: like assert_true, but names the table row that failed. */
#define CHECK(cond, row) do { \
	if (!(cond)) \
		fail_msg("%s: failed for \"%s\"", #cond, (row)); \
} while (0)

/* exact: s[0..n) on the heap with nothing after it: reading past n is an
 * ASan error instead of a silent pass. */
static char *exact(const char *s, size_t n)
{
	char *p = xmalloc(n);
	memcpy(p, s, n);
	return p;
}

static char *repeat(char c, size_t n)
{
	char *p = xmalloc(n + 1);
	memset(p, c, n);
	p[n] = 0;
	return p;
}

static struct ipaddr ip(const char *s)
{
	struct ipaddr a;

	if (!ipaddr_parse(s, strlen(s), &a))
		fail_msg("test bug: bad address \"%s\"", s);
	return a;
}

static bool parse_exact(const char *s, size_t n, struct ipaddr *a)
{
	char *p = exact(s, n);
	bool ok = ipaddr_parse(p, n, a);
	free(p);
	return ok;
}

/* ---- ipaddr_parse / ipaddr_format */

static const struct {
	const char *s;
	size_t n;
	int family;
	const char *canon;
} ip_ok[] = {
	{ L("0.0.0.0"), AF_INET, "0.0.0.0" },
	{ L("1.2.3.4"), AF_INET, "1.2.3.4" },
	{ L("192.0.2.1"), AF_INET, "192.0.2.1" },
	{ L("10.0.0.0"), AF_INET, "10.0.0.0" },
	{ L("100.200.250.255"), AF_INET, "100.200.250.255" },
	{ L("255.255.255.255"), AF_INET, "255.255.255.255" },
	{ L("127.0.0.1"), AF_INET, "127.0.0.1" },
	{ L("[192.0.2.1]"), AF_INET, "192.0.2.1" },
	{ L("[0.0.0.0]"), AF_INET, "0.0.0.0" },
	{ L("::"), AF_INET6, "::" },
	{ L("::1"), AF_INET6, "::1" },
	{ L("[::1]"), AF_INET6, "::1" },
	{ L("[::]"), AF_INET6, "::" },
	{ L("[IPv6:::1]"), AF_INET6, "::1" },
	{ L("[ipv6:2001:db8::1]"), AF_INET6, "2001:db8::1" },
	{ L("[IPV6:2001:DB8::1]"), AF_INET6, "2001:db8::1" },
	{ L("[iPv6:2001:db8::1]"), AF_INET6, "2001:db8::1" },
	{ L("2001:DB8:0:0:0:0:0:1"), AF_INET6, "2001:db8::1" },
	{ L("2001:0db8:0000:0000:0000:0000:0000:0001"), AF_INET6, "2001:db8::1" },
	{ L("0000:0000:0000:0000:0000:0000:0000:0000"), AF_INET6, "::" },
	{ L("1:2:3:4:5:6:7:8"), AF_INET6, "1:2:3:4:5:6:7:8" },
	{ L("1::"), AF_INET6, "1::" },
	{ L("1:2:3:4:5:6:7::"), AF_INET6, "1:2:3:4:5:6:7:0" },
	{ L("fe80::1"), AF_INET6, "fe80::1" },
	{ L("ff02::1"), AF_INET6, "ff02::1" },
	{ L("::ffff:127.0.0.1"), AF_INET6, "::ffff:127.0.0.1" },
	{ L("::ffff:192.0.2.1"), AF_INET6, "::ffff:192.0.2.1" },
	{ L("::FFFF:192.0.2.1"), AF_INET6, "::ffff:192.0.2.1" },
	{ L("[::ffff:192.0.2.1]"), AF_INET6, "::ffff:192.0.2.1" },
	{ L("1:2:3:4:5:6:1.2.3.4"), AF_INET6, "1:2:3:4:5:6:102:304" },
	{ L("[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]"), AF_INET6,
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
	{ L("[IPv6:0000:0000:0000:0000:0000:0000:0000:0001]"), AF_INET6, "::1" },
	/* n shorter than the string: only s[0..n) counts */
	{ "1.2.3.45", 7, AF_INET, "1.2.3.4" },
	{ "1.2.3.4\0garbage", 7, AF_INET, "1.2.3.4" },
	{ "::1 trailing", 3, AF_INET6, "::1" },
	{ "[::1]]", 5, AF_INET6, "::1" },
	{ "10.0.0.1/8", 8, AF_INET, "10.0.0.1" },
};

static const struct {
	const char *s;
	size_t n;
} ip_bad[] = {
	{ L("") }, { L("[") }, { L("]") }, { L("[]") }, { L("[[]]") },
	{ L("[1.2.3.4") }, { L("1.2.3.4]") }, { L("[[1.2.3.4]]") }, { L("[::1") },
	{ L("::1]") }, { L("[::1]x") }, { L("x[::1]") }, { L("[ ::1]") },
	{ L("256.1.1.1") }, { L("1.2.3.256") }, { L("1.256.3.4") }, { L("999.1.1.1") },
	{ L("1000.1.1.1") }, { L("4294967297.1.1.1") },
	{ L("99999999999999999999999.1.1.1") }, { L("1.2.3") }, { L("1.2") },
	{ L("1") }, { L("16909060") }, { L("1.2.3.4.5") }, { L("1.2.3.") },
	{ L("1.2.3.4.") }, { L(".1.2.3.4") }, { L("1..2.3") }, { L("1.2..3.4") },
	{ L("...") }, { L("01.2.3.4") }, { L("1.2.3.04") }, { L("1.2.3.00") },
	{ L("00.0.0.0") }, { L("0000000001.2.3.4") }, { L("1.2.3.-1") }, { L("+1.2.3.4") },
	{ L("1.2.3.+4") }, { L(" 1.2.3.4") }, { L("1.2.3.4 ") }, { L("1.2.3.4\n") },
	{ L("1 .2.3.4") }, { L("1.2.3.4\t") }, { L("0x1.2.3.4") }, { L("0x7f000001") },
	{ L("1.2.3.4a") }, { L("a.b.c.d") }, { L("1.2.3.4/32") }, { L("1.2.3.4:25") },
	{ L("1.2\0.3.4") }, { L("1.2.3.4\0") }, { L("\0") }, { L("::1\0") },
	{ "1.2.3.4", 6 }, { "[::1]", 4 }, { "1.2.3.4", 0 }, { "[1.2.3.4]", 1 },
	{ L("fe80::1%eth0") }, { L("[fe80::1%eth0]") }, { L("fe80::1%1") },
	{ L("[IPv6:1.2.3.4]") }, { L("IPv6:::1") }, { L("[IPv6:]") }, { L("[IPv6]") },
	{ L("[IPv6:") }, { L("[IPv6::1]") }, { L("IPv6:[::1]") }, { L("[IPv4:1.2.3.4]") },
	{ L("[IPv6: ::1]") }, { L("::1::") }, { L("1::2::3") }, { L(":::") }, { L(":1::") },
	{ L("1:2:3:4:5:6:7:8:9") }, { L("00001::") }, { L("::ffff:1.2.3") },
	{ L("::ffff:01.2.3.4") }, { L("::256.1.1.1") }, { L("::1.2.3.4.5") },
	{ L("g::1") }, { L("::g") }, { L(":") }, { L(".") }, { L("localhost") },
	{ L("[::1]/128") }, { L("1.2.3.\xc3\xa4") }, { L("\xff") }, { L("::\xff") },
	{ L("1.2.3.4,5.6.7.8") }, { L("[1.2.3.4][5.6.7.8]") },
};

static void test_ipaddr_parse_valid(void **state)
{
	char txt[IPADDR_STRLEN];

	for (size_t i = 0; i < ARRAY_LEN(ip_ok); i++) {
		struct ipaddr a;
		memset(&a, 0x5a, sizeof a);
		CHECK(parse_exact(ip_ok[i].s, ip_ok[i].n, &a), ip_ok[i].s);
		CHECK(a.family == ip_ok[i].family, ip_ok[i].s);
		assert_string_equal(ipaddr_format(&a, txt), ip_ok[i].canon);
		/* the canonical form reads back to the same address */
		struct ipaddr b = ip(txt);
		CHECK(ipaddr_equal(&a, &b), ip_ok[i].s);
	}
}

static void test_ipaddr_parse_invalid(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(ip_bad); i++) {
		struct ipaddr a, before;
		memset(&a, 0x5a, sizeof a);
		before = a;
		CHECK(!parse_exact(ip_bad[i].s, ip_bad[i].n, &a), ip_bad[i].s);
		CHECK(memcmp(&a, &before, sizeof a) == 0, ip_bad[i].s);
	}
}

/* Long input is refused before it is copied, whatever it holds. */
static void test_ipaddr_parse_overlong(void **state)
{
	static const size_t lens[] = { 64, 65, 100, 1000, 100000 };
	struct ipaddr a;

	for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
		char *s = repeat('1', lens[i]);
		assert_false(parse_exact(s, lens[i], &a));
		memset(s, ':', lens[i]);
		assert_false(parse_exact(s, lens[i], &a));
		free(s);
	}
	/* a valid-looking tail behind 60 zeros: refused by length alone */
	char *z = repeat('0', 70);
	memcpy(z + 60, "1:2::3", 6);
	assert_false(parse_exact(z, 70, &a));
	free(z);
	assert_false(ipaddr_parse(NULL, 4, &a));
}

static void test_ipaddr_format(void **state)
{
	char txt[IPADDR_STRLEN];
	struct ipaddr a;

	memset(&a, 0, sizeof a);
	a.family = AF_INET;
	a.u.v4.s_addr = htonl(0xc0000201);
	assert_string_equal(ipaddr_format(&a, txt), "192.0.2.1");
	a = ip("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255");
	assert_string_equal(ipaddr_format(&a, txt), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	assert_true(ipaddr_format(&a, txt) == txt);
	a = ip("[2001:db8:0:0:1:0:0:1]");
	assert_string_equal(ipaddr_format(&a, txt), "2001:db8::1:0:0:1");
}

/* ---- predicates, unmap, equal, sockaddr */

static const struct {
	const char *s;
	bool loop, unspec, mcast, bcast, mapped;
} pred[] = {
	{ "127.0.0.1", 1, 0, 0, 0, 0 },
	{ "127.255.255.254", 1, 0, 0, 0, 0 },
	{ "127.0.0.0", 1, 0, 0, 0, 0 },
	{ "126.255.255.255", 0, 0, 0, 0, 0 },
	{ "128.0.0.1", 0, 0, 0, 0, 0 },
	{ "192.0.2.1", 0, 0, 0, 0, 0 },
	{ "0.0.0.0", 0, 1, 0, 0, 0 },
	{ "0.0.0.1", 0, 0, 0, 0, 0 },
	{ "::", 0, 1, 0, 0, 0 },
	{ "::1", 1, 0, 0, 0, 0 },
	{ "::2", 0, 0, 0, 0, 0 },
	{ "1::1", 0, 0, 0, 0, 0 },
	{ "::ffff:127.0.0.1", 1, 0, 0, 0, 1 },
	{ "::ffff:127.1.2.3", 1, 0, 0, 0, 1 },
	{ "::ffff:128.0.0.1", 0, 0, 0, 0, 1 },
	{ "::ffff:0.0.0.0", 0, 0, 0, 0, 1 },
	{ "::ffff:224.0.0.1", 0, 0, 0, 0, 1 },
	{ "::ffff:255.255.255.255", 0, 0, 0, 0, 1 },
	{ "0:0:0:0:0:ffff:1.2.3.4", 0, 0, 0, 0, 1 },
	{ "::127.0.0.1", 0, 0, 0, 0, 0 },
	{ "::fffe:1.2.3.4", 0, 0, 0, 0, 0 },
	{ "1::ffff:1.2.3.4", 0, 0, 0, 0, 0 },
	{ "::ffff:0:1.2.3.4", 0, 0, 0, 0, 0 },
	{ "224.0.0.1", 0, 0, 1, 0, 0 },
	{ "224.0.0.0", 0, 0, 1, 0, 0 },
	{ "239.255.255.255", 0, 0, 1, 0, 0 },
	{ "223.255.255.255", 0, 0, 0, 0, 0 },
	{ "240.0.0.1", 0, 0, 0, 0, 0 },
	{ "ff02::1", 0, 0, 1, 0, 0 },
	{ "ff00::", 0, 0, 1, 0, 0 },
	{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, 0, 1, 0, 0 },
	{ "fe80::1", 0, 0, 0, 0, 0 },
	{ "feff::", 0, 0, 0, 0, 0 },
	{ "255.255.255.255", 0, 0, 0, 1, 0 },
	{ "255.255.255.254", 0, 0, 0, 0, 0 },
};

static void test_ipaddr_predicates(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(pred); i++) {
		struct ipaddr a = ip(pred[i].s);
		CHECK(ipaddr_is_loopback(&a) == pred[i].loop, pred[i].s);
		CHECK(ipaddr_is_unspecified(&a) == pred[i].unspec, pred[i].s);
		CHECK(ipaddr_is_multicast(&a) == pred[i].mcast, pred[i].s);
		CHECK(ipaddr_is_broadcast(&a) == pred[i].bcast, pred[i].s);
		CHECK(ipaddr_is_v4mapped(&a) == pred[i].mapped, pred[i].s);
	}
}

static const struct {
	const char *in, *out;
} unmap[] = {
	{ "::ffff:192.0.2.1", "192.0.2.1" },
	{ "::ffff:127.0.0.1", "127.0.0.1" },
	{ "::ffff:0.0.0.0", "0.0.0.0" },
	{ "192.0.2.1", "192.0.2.1" },
	{ "::1", "::1" },
	{ "::192.0.2.1", "::192.0.2.1" },
	{ "2001:db8::1", "2001:db8::1" },
	{ "::fffe:192.0.2.1", "::fffe:192.0.2.1" },
};

static void test_ipaddr_unmap(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(unmap); i++) {
		struct ipaddr a = ip(unmap[i].in), want = ip(unmap[i].out), got;
		ipaddr_unmap(&a, &got);
		CHECK(ipaddr_equal(&got, &want), unmap[i].in);
		ipaddr_unmap(&a, &a); /* in place */
		CHECK(ipaddr_equal(&a, &want), unmap[i].in);
	}
}

static const struct {
	const char *a, *b;
	bool equal;
} eq[] = {
	{ "192.0.2.1", "192.0.2.1", 1 },
	{ "192.0.2.1", "[192.0.2.1]", 1 },
	{ "192.0.2.1", "192.0.2.2", 0 },
	{ "2001:db8::1", "2001:DB8:0:0:0:0:0:1", 1 },
	{ "2001:db8::1", "[IPv6:2001:db8::1]", 1 },
	{ "2001:db8::1", "2001:db8::2", 0 },
	/* equality is exact: mapping is the caller's business */
	{ "192.0.2.1", "::ffff:192.0.2.1", 0 },
	{ "0.0.0.0", "::", 0 },
	{ "0.0.0.1", "::1", 0 },
};

static void test_ipaddr_equal(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(eq); i++) {
		struct ipaddr a = ip(eq[i].a), b = ip(eq[i].b);
		CHECK(ipaddr_equal(&a, &b) == eq[i].equal, eq[i].a);
		CHECK(ipaddr_equal(&b, &a) == eq[i].equal, eq[i].b);
	}
}

static void test_ipaddr_sockaddr(void **state)
{
	static const char *const addrs[] = { "192.0.2.1", "0.0.0.0", "::1", "2001:db8::1",
					     "::ffff:192.0.2.1" };
	static const uint16_t ports[] = { 0, 1, 25, 65535 };
	struct sockaddr_storage ss;
	socklen_t len;
	struct ipaddr b;
	uint16_t port;

	for (size_t i = 0; i < ARRAY_LEN(addrs); i++) {
		struct ipaddr a = ip(addrs[i]);
		for (size_t j = 0; j < ARRAY_LEN(ports); j++) {
			ipaddr_to_sockaddr(&a, ports[j], &ss, &len);
			CHECK(ss.ss_family == a.family, addrs[i]);
			CHECK(len == (a.family == AF_INET ? sizeof(struct sockaddr_in)
							  : sizeof(struct sockaddr_in6)), addrs[i]);
			CHECK(ipaddr_from_sockaddr((struct sockaddr *)&ss, len, &b, &port), addrs[i]);
			CHECK(ipaddr_equal(&a, &b) && port == ports[j], addrs[i]);
			CHECK(ipaddr_from_sockaddr((struct sockaddr *)&ss, len, &b, NULL), addrs[i]);
			/* a truncated sockaddr is refused */
			CHECK(!ipaddr_from_sockaddr((struct sockaddr *)&ss, len - 1, &b, &port), addrs[i]);
		}
	}
	/* network byte order on the wire */
	struct ipaddr a = ip("192.0.2.1");
	ipaddr_to_sockaddr(&a, 25, &ss, &len);
	assert_int_equal(((struct sockaddr_in *)&ss)->sin_port, htons(25));
	assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr, htonl(0xc0000201));

	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_UNIX;
	assert_false(ipaddr_from_sockaddr((struct sockaddr *)&ss, sizeof ss, &b, &port));
	ss.ss_family = AF_UNSPEC;
	assert_false(ipaddr_from_sockaddr((struct sockaddr *)&ss, sizeof ss, &b, &port));
	assert_false(ipaddr_from_sockaddr(NULL, sizeof ss, &b, &port));
	assert_false(ipaddr_from_sockaddr((struct sockaddr *)&ss, 0, &b, &port));
}

/* ---- inet_interfaces */

/* join: the canonical addresses of an explicit list, one space between. */
static char *iflist_join(const struct iflist *l)
{
	struct buf b = BUF_INIT;
	char txt[IPADDR_STRLEN];

	for (size_t i = 0; i < l->n; i++)
		buf_printf(&b, "%s%s", i ? " " : "", ipaddr_format(&l->addrs[i], txt));
	return buf_steal(&b);
}

static const struct {
	const char *value;
	enum iflist_kind kind;
	const char *addrs;
} if_ok[] = {
	{ "all", IFLIST_ALL, "" },
	{ "ALL", IFLIST_ALL, "" },
	{ "All", IFLIST_ALL, "" },
	{ " all ", IFLIST_ALL, "" },
	{ "all,", IFLIST_ALL, "" },
	{ ",\tall\n", IFLIST_ALL, "" },
	{ "loopback-only", IFLIST_LOOPBACK_ONLY, "" },
	{ "LOOPBACK-ONLY", IFLIST_LOOPBACK_ONLY, "" },
	{ " Loopback-Only ,", IFLIST_LOOPBACK_ONLY, "" },
	{ "192.0.2.1", IFLIST_ADDRS, "192.0.2.1" },
	{ "[192.0.2.1]", IFLIST_ADDRS, "192.0.2.1" },
	{ "  192.0.2.1  ", IFLIST_ADDRS, "192.0.2.1" },
	{ "127.0.0.1", IFLIST_ADDRS, "127.0.0.1" },
	{ "::1", IFLIST_ADDRS, "::1" },
	{ "[::1]", IFLIST_ADDRS, "::1" },
	{ "[IPv6:2001:db8::1]", IFLIST_ADDRS, "2001:db8::1" },
	{ "2001:DB8::1", IFLIST_ADDRS, "2001:db8::1" },
	{ "::ffff:192.0.2.1", IFLIST_ADDRS, "::ffff:192.0.2.1" },
	{ "192.0.2.1 2001:db8::1", IFLIST_ADDRS, "192.0.2.1 2001:db8::1" },
	{ "192.0.2.1,[2001:db8::1]", IFLIST_ADDRS, "192.0.2.1 2001:db8::1" },
	{ "192.0.2.1, 192.0.2.2 ,, 192.0.2.3", IFLIST_ADDRS, "192.0.2.1 192.0.2.2 192.0.2.3" },
	{ "127.0.0.1 ::1", IFLIST_ADDRS, "127.0.0.1 ::1" },
	{ "192.0.2.1\n\t198.51.100.1\r\n", IFLIST_ADDRS, "192.0.2.1 198.51.100.1" },
	{ "fe80::1", IFLIST_ADDRS, "fe80::1" },
};

static const struct {
	const char *value;
	const char *err; /* expected in the message */
} if_bad[] = {
	{ "", "no addresses" },
	{ " ", "no addresses" },
	{ " , ,\t\n", "no addresses" },
	{ "all, 1.2.3.4", "\"all\" must be the only item" },
	{ "1.2.3.4, all", "\"all\" must be the only item" },
	{ "all all", "\"all\" must be the only item" },
	{ "ALL,loopback-only", "\"ALL\" must be the only item" },
	{ "loopback-only 127.0.0.1", "\"loopback-only\" must be the only item" },
	{ "127.0.0.1 Loopback-Only", "\"Loopback-Only\" must be the only item" },
	{ "1.2.3", "bad address \"1.2.3\"" },
	{ "192.0.2.1 1.2.3", "bad address \"1.2.3\"" },
	{ "192.0.2.1 256.1.1.1", "bad address \"256.1.1.1\"" },
	{ "192.0.2.01", "bad address \"192.0.2.01\"" },
	{ "192.0.2.1/32", "bad address \"192.0.2.1/32\"" },
	{ "[192.0.2.1", "bad address \"[192.0.2.1\"" },
	{ "192.0.2.1]", "bad address \"192.0.2.1]\"" },
	{ "[]", "bad address \"[]\"" },
	{ "[", "bad address \"[\"" },
	{ "]", "bad address \"]\"" },
	{ "fe80::1%eth0", "bad address \"fe80::1%eth0\"" },
	{ "localhost", "bad address \"localhost\"" },
	{ "all-interfaces", "bad address \"all-interfaces\"" },
	{ "allx", "bad address \"allx\"" },
	{ "192.0.2.1;192.0.2.2", "bad address \"192.0.2.1;192.0.2.2\"" },
	{ "1.2.3.4\x01", "bad address \"1.2.3.4\\x01\"" },
	{ "\"192.0.2.1\"", "bad address \"\\x22192.0.2.1\\x22\"" },
	{ "192.0.2.1 192.0.2.1", "duplicate address 192.0.2.1" },
	{ "192.0.2.1 [192.0.2.1]", "duplicate address 192.0.2.1" },
	{ "192.0.2.1 192.0.2.2 192.0.2.1", "duplicate address 192.0.2.1" },
	{ "2001:db8::1 [2001:DB8:0::1]", "duplicate address 2001:db8::1" },
	{ "192.0.2.1 ::ffff:192.0.2.1", "duplicate address ::ffff:192.0.2.1" },
	{ "::ffff:192.0.2.1 192.0.2.1", "duplicate address 192.0.2.1" },
	{ "0.0.0.0", "not an interface address: \"0.0.0.0\" (use \"all\")" },
	{ "[::]", "not an interface address: \"[::]\" (use \"all\")" },
	{ "224.0.0.1", "not an interface address: \"224.0.0.1\"" },
	{ "ff02::1", "not an interface address: \"ff02::1\"" },
	{ "255.255.255.255", "not an interface address: \"255.255.255.255\"" },
};

static void test_iflist_parse_valid(void **state)
{
	char err[128];

	for (size_t i = 0; i < ARRAY_LEN(if_ok); i++) {
		struct iflist l;
		CHECK(iflist_parse(if_ok[i].value, &l, err, sizeof err), if_ok[i].value);
		CHECK(l.kind == if_ok[i].kind, if_ok[i].value);
		char *got = iflist_join(&l);
		if (strcmp(got, if_ok[i].addrs) != 0)
			fail_msg("\"%s\": got \"%s\", want \"%s\"", if_ok[i].value, got, if_ok[i].addrs);
		free(got);
		iflist_free(&l);
		CHECK(l.n == 0 && l.addrs == NULL, if_ok[i].value);
		iflist_free(&l); /* twice is harmless */
	}
}

static void test_iflist_parse_invalid(void **state)
{
	char err[128];

	for (size_t i = 0; i < ARRAY_LEN(if_bad); i++) {
		struct iflist l = { IFLIST_ALL, 42, NULL };
		strcpy(err, "untouched");
		CHECK(!iflist_parse(if_bad[i].value, &l, err, sizeof err), if_bad[i].value);
		if (strstr(err, if_bad[i].err) == NULL)
			fail_msg("\"%s\": err \"%s\", want \"%s\"", if_bad[i].value, err, if_bad[i].err);
		CHECK(l.kind == IFLIST_ALL && l.n == 42 && l.addrs == NULL, if_bad[i].value);
	}
}

static void test_iflist_parse_edges(void **state)
{
	struct iflist l;
	char err[64];

	assert_false(iflist_parse(NULL, &l, err, sizeof err));
	assert_string_equal(err, "no addresses");
	/* no err buffer, or a tiny one: refused all the same, never overrun */
	assert_false(iflist_parse("1.2.3", &l, NULL, 0));
	assert_false(iflist_parse("1.2.3", &l, err, 0));
	assert_false(iflist_parse("1.2.3", &l, err, 5));
	assert_string_equal(err, "bad ");

	/* an overlong item is quoted, but cut */
	char *big = repeat('1', 5000);
	assert_false(iflist_parse(big, &l, err, sizeof err));
	assert_non_null(strstr(err, "bad address \"1111"));
	assert_true(strlen(err) < sizeof err);
	free(big);

	/* a long list of distinct addresses */
	struct buf b = BUF_INIT;
	for (int i = 0; i < 1000; i++)
		buf_printf(&b, "10.0.%d.%d,", i / 250, i % 250 + 1);
	assert_true(iflist_parse(buf_cstr(&b), &l, err, sizeof err));
	assert_int_equal(l.n, 1000);
	iflist_free(&l);
	buf_puts(&b, " 10.0.3.250"); /* the last one again */
	assert_false(iflist_parse(buf_cstr(&b), &l, err, sizeof err));
	assert_string_equal(err, "duplicate address 10.0.3.250");
	buf_free(&b);
}

static const struct {
	const char *list, *addr;
	bool in;
} if_has[] = {
	{ "192.0.2.1 2001:db8::1", "192.0.2.1", 1 },
	{ "192.0.2.1 2001:db8::1", "::ffff:192.0.2.1", 1 },
	{ "192.0.2.1 2001:db8::1", "192.0.2.2", 0 },
	{ "192.0.2.1 2001:db8::1", "2001:db8::1", 1 },
	{ "192.0.2.1 2001:db8::1", "2001:db8::2", 0 },
	{ "192.0.2.1 2001:db8::1", "::192.0.2.1", 0 },
	{ "::ffff:192.0.2.1", "192.0.2.1", 1 },
	{ "::ffff:192.0.2.1", "::ffff:192.0.2.1", 1 },
	{ "::ffff:192.0.2.1", "::ffff:192.0.2.2", 0 },
	{ "127.0.0.1", "127.0.0.1", 1 },
	{ "127.0.0.1", "127.0.0.2", 0 },
	{ "127.0.0.1", "::1", 0 },
	{ "all", "127.0.0.1", 0 },
	{ "all", "192.0.2.1", 0 },
	{ "loopback-only", "127.0.0.1", 0 },
	{ "loopback-only", "::1", 0 },
};

static void test_iflist_contains(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(if_has); i++) {
		struct iflist l;
		struct ipaddr a = ip(if_has[i].addr);
		assert_true(iflist_parse(if_has[i].list, &l, NULL, 0));
		CHECK(iflist_contains(&l, &a) == if_has[i].in, if_has[i].addr);
		iflist_free(&l);
	}
}

static const struct {
	const char *list;
	int family;
	const char *want; /* NULL: no bind address */
} bind_cases[] = {
	{ "192.0.2.1", AF_INET, "192.0.2.1" },
	{ "192.0.2.1", AF_INET6, NULL },
	{ "[192.0.2.1]", AF_INET, "192.0.2.1" },
	{ "192.0.2.1 192.0.2.2", AF_INET, NULL },
	{ "192.0.2.1 192.0.2.2", AF_INET6, NULL },
	{ "127.0.0.1", AF_INET, NULL },
	{ "127.0.0.2", AF_INET, NULL },
	{ "192.0.2.1 127.0.0.1", AF_INET, NULL },
	{ "192.0.2.1 2001:db8::1", AF_INET, "192.0.2.1" },
	{ "192.0.2.1 2001:db8::1", AF_INET6, "2001:db8::1" },
	{ "2001:db8::1", AF_INET6, "2001:db8::1" },
	{ "2001:db8::1", AF_INET, NULL },
	{ "2001:db8::1 2001:db8::2", AF_INET6, NULL },
	{ "2001:db8::1 2001:db8::2 192.0.2.1", AF_INET, "192.0.2.1" },
	{ "::1", AF_INET6, NULL },
	{ "::1 192.0.2.1", AF_INET, "192.0.2.1" },
	{ "::1 192.0.2.1", AF_INET6, NULL },
	{ "127.0.0.1 ::1", AF_INET, NULL },
	{ "127.0.0.1 ::1", AF_INET6, NULL },
	{ "fe80::1", AF_INET6, "fe80::1" },
	{ "all", AF_INET, NULL },
	{ "all", AF_INET6, NULL },
	{ "loopback-only", AF_INET, NULL },
	{ "loopback-only", AF_INET6, NULL },
	/* a mapped address is the IPv4 address it carries */
	{ "::ffff:192.0.2.1", AF_INET, "192.0.2.1" },
	{ "::ffff:192.0.2.1", AF_INET6, NULL },
	{ "::ffff:127.0.0.1", AF_INET, NULL },
	{ "::ffff:192.0.2.1 192.0.2.2", AF_INET, NULL },
	{ "::ffff:192.0.2.1 2001:db8::1", AF_INET6, "2001:db8::1" },
	{ "192.0.2.1", AF_UNIX, NULL },
};

static void test_iflist_bind_address(void **state)
{
	char txt[IPADDR_STRLEN];

	for (size_t i = 0; i < ARRAY_LEN(bind_cases); i++) {
		struct iflist l;
		struct ipaddr got;
		memset(&got, 0x5a, sizeof got);
		struct ipaddr before = got;
		assert_true(iflist_parse(bind_cases[i].list, &l, NULL, 0));
		bool ok = iflist_bind_address(&l, bind_cases[i].family, &got);
		if (ok != (bind_cases[i].want != NULL))
			fail_msg("\"%s\" family %d: got %d", bind_cases[i].list, bind_cases[i].family, ok);
		if (ok)
			assert_string_equal(ipaddr_format(&got, txt), bind_cases[i].want);
		else
			CHECK(memcmp(&got, &before, sizeof got) == 0, bind_cases[i].list);
		iflist_free(&l);
	}
}

static bool listed(const struct iflist *l, const char *s)
{
	struct ipaddr a = ip(s);

	for (size_t i = 0; i < l->n; i++)
		if (ipaddr_equal(&l->addrs[i], &a))
			return true;
	return false;
}

static void test_iflist_expand_fixed(void **state)
{
	struct iflist in, out;
	char err[128];

	assert_true(iflist_parse("Loopback-Only", &in, err, sizeof err));
	assert_true(iflist_expand(&in, &out, err, sizeof err));
	assert_int_equal(out.kind, IFLIST_ADDRS);
	assert_int_equal(out.n, 2);
	assert_true(listed(&out, "127.0.0.1") && listed(&out, "::1"));
	iflist_free(&out);

	assert_true(iflist_parse("192.0.2.1 [2001:db8::1]", &in, err, sizeof err));
	assert_true(iflist_expand(&in, &out, err, sizeof err));
	assert_int_equal(out.kind, IFLIST_ADDRS);
	assert_int_equal(out.n, 2);
	assert_true(out.addrs != in.addrs); /* a copy: both are freed */
	assert_true(ipaddr_equal(&out.addrs[0], &in.addrs[0]));
	assert_true(ipaddr_equal(&out.addrs[1], &in.addrs[1]));
	iflist_free(&in);
	iflist_free(&out);
}

/* "all" against the kernel's own list: what we report is up, usable and
 * unique, and no up IPv4 address is missing. */
static void test_iflist_expand_all(void **state)
{
	struct iflist in, out;
	struct ifaddrs *ifs;
	char err[128];

	assert_true(iflist_parse("all", &in, err, sizeof err));
	if (!iflist_expand(&in, &out, err, sizeof err))
		fail_msg("expand all: %s", err);
	assert_int_equal(out.kind, IFLIST_ADDRS);
	assert_true(out.n > 0);
	assert_int_equal(getifaddrs(&ifs), 0);
	for (size_t i = 0; i < out.n; i++) {
		bool seen = false;
		for (const struct ifaddrs *f = ifs; f != NULL; f = f->ifa_next) {
			struct ipaddr a;
			socklen_t len = f->ifa_addr && f->ifa_addr->sa_family == AF_INET
				? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
			if (f->ifa_addr && (f->ifa_flags & IFF_UP) &&
			    ipaddr_from_sockaddr(f->ifa_addr, len, &a, NULL) &&
			    ipaddr_equal(&a, &out.addrs[i]))
				seen = true;
		}
		assert_true(seen);
		for (size_t j = 0; j < i; j++)
			assert_false(ipaddr_equal(&out.addrs[i], &out.addrs[j]));
		if (out.addrs[i].family == AF_INET6)
			assert_false(out.addrs[i].u.v6.s6_addr[0] == 0xfe &&
				     (out.addrs[i].u.v6.s6_addr[1] & 0xc0) == 0x80);
	}
	for (const struct ifaddrs *f = ifs; f != NULL; f = f->ifa_next) {
		struct ipaddr a;
		if (f->ifa_addr && (f->ifa_flags & IFF_UP) && f->ifa_addr->sa_family == AF_INET &&
		    ipaddr_from_sockaddr(f->ifa_addr, sizeof(struct sockaddr_in), &a, NULL)) {
			bool found = false;
			for (size_t i = 0; i < out.n; i++)
				found = found || ipaddr_equal(&a, &out.addrs[i]);
			assert_true(found);
		}
	}
	freeifaddrs(ifs);
	iflist_free(&out);
}

/* ---- mynetworks */

static const struct {
	const char *value, *canon;
} net_ok[] = {
	{ "", "" },
	{ " , \t\n", "" },
	{ "127.0.0.0/8 [::1]/128", "127.0.0.0/8 [::1]/128" },
	{ "10.0.0.0/8", "10.0.0.0/8" },
	{ "192.0.2.1", "192.0.2.1/32" },
	{ "192.0.2.1/32", "192.0.2.1/32" },
	{ "[192.0.2.0]/24", "192.0.2.0/24" },
	{ "[192.0.2.1]", "192.0.2.1/32" },
	{ "0.0.0.0/0", "0.0.0.0/0" },
	{ "192.0.2.128/25", "192.0.2.128/25" },
	{ "192.0.2.0/31", "192.0.2.0/31" },
	{ "128.0.0.0/1", "128.0.0.0/1" },
	{ "255.255.255.255/32", "255.255.255.255/32" },
	{ "255.255.255.254/31", "255.255.255.254/31" },
	{ "172.16.0.0/12", "172.16.0.0/12" },
	{ "[::]/0", "[::]/0" },
	{ "::/0", "[::]/0" },
	{ "[::1]", "[::1]/128" },
	{ "::1", "[::1]/128" },
	{ "::1/128", "[::1]/128" },
	{ "2001:db8::/32", "[2001:db8::]/32" },
	{ "[2001:DB8::]/32", "[2001:db8::]/32" },
	{ "[IPv6:2001:db8::]/32", "[2001:db8::]/32" },
	{ "2001:db8:0:0:0:0:0:0/48", "[2001:db8::]/48" },
	{ "2001:db8::1/128", "[2001:db8::1]/128" },
	{ "fe80::/10", "[fe80::]/10" },
	{ "ff00::/8", "[ff00::]/8" },
	{ "8000::/1", "[8000::]/1" },
	{ "2001:db8:8000::/33", "[2001:db8:8000::]/33" },
	{ "::ffff:127.0.0.1", "[::ffff:127.0.0.1]/128" },
	{ "::ffff:0:0/96", "[::ffff:0.0.0.0]/96" },
	{ "10.0.0.0/8,192.168.0.0/16\t172.16.0.0/12", "10.0.0.0/8 192.168.0.0/16 172.16.0.0/12" },
	{ "  10.0.0.0/8 ,, [::1]  ", "10.0.0.0/8 [::1]/128" },
	{ "10.0.0.0/8 10.0.0.0/8", "10.0.0.0/8 10.0.0.0/8" },
};

static const struct {
	const char *value, *err;
} net_bad[] = {
	{ "1.2.3.4/33", "prefix length out of range in \"1.2.3.4/33\"" },
	{ "[::1]/129", "prefix length out of range in \"[::1]/129\"" },
	{ "::/129", "prefix length out of range in \"::/129\"" },
	{ "10.0.0.0/999", "prefix length out of range" },
	{ "10.0.0.0/", "bad prefix length in \"10.0.0.0/\"" },
	{ "10.0.0.0/08", "bad prefix length in \"10.0.0.0/08\"" },
	{ "0.0.0.0/00", "bad prefix length" },
	{ "10.0.0.0/-1", "bad prefix length" },
	{ "10.0.0.0/+8", "bad prefix length" },
	{ "10.0.0.0/8/8", "bad prefix length" },
	{ "10.0.0.0/8a", "bad prefix length" },
	{ "10.0.0.0/0x8", "bad prefix length" },
	{ "10.0.0.0/99999999999999999999999", "bad prefix length" },
	{ "10.0.0.1/8", "non-null host address bits in \"10.0.0.1/8\", perhaps use \"10.0.0.0/8\"" },
	{ "192.168.1.1/16", "perhaps use \"192.168.0.0/16\"" },
	{ "192.0.2.129/25", "perhaps use \"192.0.2.128/25\"" },
	{ "192.0.2.1/31", "perhaps use \"192.0.2.0/31\"" },
	{ "1.0.0.0/0", "perhaps use \"0.0.0.0/0\"" },
	{ "[2001:db8::1]/32", "non-null host address bits in \"[2001:db8::1]/32\", "
			      "perhaps use \"[2001:db8::]/32\"" },
	{ "2001:db8::1/64", "perhaps use \"[2001:db8::]/64\"" },
	{ "2001:db8:ffff::/33", "perhaps use \"[2001:db8:8000::]/33\"" },
	{ "::1/0", "perhaps use \"[::]/0\"" },
	{ "!10.0.0.0/8", "negation is not supported: \"!10.0.0.0/8\"" },
	{ "10.0.0.0/8 !192.0.2.1", "negation is not supported: \"!192.0.2.1\"" },
	{ "/etc/postfix/network_table", "file patterns are not supported: \"/etc/postfix/network_table\"" },
	{ "hash:/etc/postfix/network_table", "lookup tables are not supported: \"hash:" },
	{ "cidr:/etc/postfix/nets", "lookup tables are not supported" },
	{ "cdb:/etc/x", "lookup tables are not supported" },
	{ "texthash:/etc/x", "lookup tables are not supported" },
	{ "inline:{", "lookup tables are not supported" },
	{ "static:all", "lookup tables are not supported" },
	{ "fail:x", "lookup tables are not supported" },
	{ "10.0.0.0/8 hash:/etc/x", "lookup tables are not supported: \"hash:/etc/x\"" },
	{ "10.0.0", "bad network \"10.0.0\"" },
	{ "10.0.0.0/8,garbage", "bad network \"garbage\"" },
	{ "10.0.0.0.0/8", "bad network" },
	{ "256.0.0.0/8", "bad network \"256.0.0.0/8\"" },
	{ "010.0.0.0/8", "bad network" },
	{ "[10.0.0.0/8]", "bad network" },
	{ "[::1/128]", "bad network" },
	{ "[::1", "bad network" },
	{ "::1]", "bad network" },
	{ "[]", "bad network" },
	{ "[]/0", "bad network" },
	{ "/", "file patterns are not supported" },
	{ "/8", "file patterns are not supported" },
	{ "fe80::%eth0/64", "bad network" },
	{ "example.com", "bad network \"example.com\"" },
	{ "dead:beef", "bad network \"dead:beef\"" },
	{ "[IPv6:10.0.0.0]/8", "bad network" },
	{ "*", "bad network" },
	{ "10.0.0.0/8\x01", "bad prefix length in \"10.0.0.0/8\\x01\"" },
};

static void test_netlist_parse_valid(void **state)
{
	struct buf b = BUF_INIT;
	char err[160];

	for (size_t i = 0; i < ARRAY_LEN(net_ok); i++) {
		struct netlist l, again;
		CHECK(netlist_parse(net_ok[i].value, &l, err, sizeof err), net_ok[i].value);
		buf_reset(&b);
		netlist_format(&l, &b);
		if (strcmp(buf_cstr(&b), net_ok[i].canon) != 0)
			fail_msg("\"%s\": got \"%s\", want \"%s\"", net_ok[i].value, buf_cstr(&b),
				 net_ok[i].canon);
		/* the canonical form reads back to the same networks */
		CHECK(netlist_parse(buf_cstr(&b), &again, err, sizeof err), net_ok[i].value);
		CHECK(again.n == l.n, net_ok[i].value);
		for (size_t j = 0; j < l.n; j++)
			CHECK(ipaddr_equal(&again.nets[j].net, &l.nets[j].net) &&
			      again.nets[j].prefix == l.nets[j].prefix, net_ok[i].value);
		netlist_free(&again);
		netlist_free(&l);
		CHECK(l.n == 0 && l.nets == NULL, net_ok[i].value);
	}
	buf_free(&b);
}

static void test_netlist_parse_invalid(void **state)
{
	char err[160];

	for (size_t i = 0; i < ARRAY_LEN(net_bad); i++) {
		struct netlist l = { 42, NULL };
		strcpy(err, "untouched");
		CHECK(!netlist_parse(net_bad[i].value, &l, err, sizeof err), net_bad[i].value);
		if (strstr(err, net_bad[i].err) == NULL)
			fail_msg("\"%s\": err \"%s\", want \"%s\"", net_bad[i].value, err, net_bad[i].err);
		CHECK(l.n == 42 && l.nets == NULL, net_bad[i].value);
	}
}

static void test_netlist_parse_edges(void **state)
{
	struct netlist l;
	struct buf b = BUF_INIT;
	char err[96];

	assert_true(netlist_parse(NULL, &l, err, sizeof err));
	assert_int_equal(l.n, 0);
	netlist_free(&l);
	assert_false(netlist_parse("10.0.0.1/8", &l, NULL, 0));

	char *big = repeat('1', 10000);
	assert_false(netlist_parse(big, &l, err, sizeof err));
	assert_non_null(strstr(err, "bad network \"111"));
	big[5000] = '/';
	assert_false(netlist_parse(big, &l, err, sizeof err));
	free(big);

	for (int i = 0; i < 500; i++)
		buf_printf(&b, "10.%d.%d.0/24 ", i / 256, i % 256);
	assert_true(netlist_parse(buf_cstr(&b), &l, err, sizeof err));
	assert_int_equal(l.n, 500);
	netlist_free(&l);
	buf_puts(&b, "10.0.0.1/24");
	assert_false(netlist_parse(buf_cstr(&b), &l, err, sizeof err));
	buf_free(&b);

	/* netlist_format appends */
	assert_true(netlist_parse("10.0.0.0/8", &l, err, sizeof err));
	buf_puts(&b, "mynetworks = ");
	netlist_format(&l, &b);
	assert_string_equal(buf_cstr(&b), "mynetworks = 10.0.0.0/8");
	netlist_free(&l);
	buf_free(&b);
}

/* Every prefix length, both families: the network address itself parses,
 * one host bit past the prefix is refused. */
static void test_netlist_every_prefix(void **state)
{
	struct netlist l;
	char s[96], err[160];

	for (unsigned p = 0; p <= 128; p++) {
		snprintf(s, sizeof s, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]/%u", p);
		struct ipaddr all = ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
		assert_int_equal(netlist_parse(s, &l, err, sizeof err), p == 128);
		if (p == 128)
			netlist_free(&l);
		snprintf(s, sizeof s, "::/%u", p);
		assert_true(netlist_parse(s, &l, err, sizeof err));
		struct ipaddr zero = ip("::");
		assert_true(netlist_match(&l, &zero));
		assert_int_equal(netlist_match(&l, &all), p == 0);
		netlist_free(&l);
		if (p < 128) {
			struct ipaddr a = ip("::");
			a.u.v6.s6_addr[p / 8] = (uint8_t)(0x80 >> (p % 8));
			char txt[IPADDR_STRLEN];
			snprintf(s, sizeof s, "[%s]/%u", ipaddr_format(&a, txt), p);
			assert_false(netlist_parse(s, &l, err, sizeof err));
			assert_non_null(strstr(err, "perhaps use \"[::]/"));
			snprintf(s, sizeof s, "[%s]/%u", txt, p + 1);
			assert_true(netlist_parse(s, &l, err, sizeof err));
			assert_true(netlist_match(&l, &a));
			netlist_free(&l);
		}
	}
	for (unsigned p = 0; p <= 32; p++) {
		uint32_t bit = p < 32 ? 0x80000000u >> p : 0;
		snprintf(s, sizeof s, "0.0.0.0/%u", p);
		assert_true(netlist_parse(s, &l, err, sizeof err));
		netlist_free(&l);
		if (p < 32) {
			snprintf(s, sizeof s, "%u.%u.%u.%u/%u", bit >> 24, (bit >> 16) & 255,
				 (bit >> 8) & 255, bit & 255, p);
			assert_false(netlist_parse(s, &l, err, sizeof err));
			assert_non_null(strstr(err, "perhaps use \"0.0.0.0/"));
		}
		snprintf(s, sizeof s, "255.255.255.255/%u", p);
		assert_int_equal(netlist_parse(s, &l, err, sizeof err), p == 32);
		if (p == 32)
			netlist_free(&l);
	}
}

static const struct {
	const char *list, *client;
	bool match;
} net_match[] = {
	{ "10.0.0.0/8", "10.1.2.3", 1 },
	{ "10.0.0.0/8", "10.255.255.255", 1 },
	{ "10.0.0.0/8", "11.0.0.0", 0 },
	{ "10.0.0.0/8", "9.255.255.255", 0 },
	{ "10.0.0.0/8", "::ffff:10.1.2.3", 1 },
	{ "10.0.0.0/8", "::ffff:11.0.0.1", 0 },
	{ "10.0.0.0/8", "::10.1.2.3", 0 },
	{ "10.0.0.0/8", "a00::", 0 },
	{ "192.0.2.1", "192.0.2.1", 1 },
	{ "192.0.2.1", "192.0.2.2", 0 },
	{ "192.0.2.1", "::ffff:192.0.2.1", 1 },
	{ "192.0.2.128/25", "192.0.2.128", 1 },
	{ "192.0.2.128/25", "192.0.2.255", 1 },
	{ "192.0.2.128/25", "192.0.2.127", 0 },
	{ "192.0.2.0/31", "192.0.2.1", 1 },
	{ "192.0.2.0/31", "192.0.2.2", 0 },
	{ "0.0.0.0/0", "1.2.3.4", 1 },
	{ "0.0.0.0/0", "0.0.0.0", 1 },
	{ "0.0.0.0/0", "255.255.255.255", 1 },
	{ "0.0.0.0/0", "::ffff:1.2.3.4", 1 },
	{ "0.0.0.0/0", "::1", 0 },
	{ "0.0.0.0/0", "2001:db8::1", 0 },
	{ "::/0", "::1", 1 },
	{ "::/0", "2001:db8::1", 1 },
	{ "::/0", "::ffff:1.2.3.4", 1 },
	{ "::/0", "1.2.3.4", 0 },
	{ "[2001:db8::]/32", "2001:db8:ffff::1", 1 },
	{ "[2001:db8::]/32", "2001:db9::1", 0 },
	{ "[2001:db8::]/32", "2001:db7:ffff::1", 0 },
	{ "fe80::/10", "febf::1", 1 },
	{ "fe80::/10", "fec0::1", 0 },
	{ "::1", "::1", 1 },
	{ "::1", "::2", 0 },
	{ "127.0.0.0/8 [::1]/128", "127.0.0.1", 1 },
	{ "127.0.0.0/8 [::1]/128", "127.255.0.1", 1 },
	{ "127.0.0.0/8 [::1]/128", "::1", 1 },
	{ "127.0.0.0/8 [::1]/128", "::ffff:127.0.0.1", 1 },
	{ "127.0.0.0/8 [::1]/128", "::2", 0 },
	{ "127.0.0.0/8 [::1]/128", "128.0.0.1", 0 },
	{ "", "127.0.0.1", 0 },
	{ "", "::1", 0 },
	{ "::ffff:0:0/96", "::ffff:1.2.3.4", 1 },
	{ "::ffff:0:0/96", "1.2.3.4", 0 },
	{ "::ffff:10.0.0.0/104", "::ffff:10.9.9.9", 1 },
	{ "192.0.2.0/24 198.51.100.0/24 2001:db8::/32", "198.51.100.7", 1 },
	{ "192.0.2.0/24 198.51.100.0/24 2001:db8::/32", "2001:db8::7", 1 },
	{ "192.0.2.0/24 198.51.100.0/24 2001:db8::/32", "203.0.113.7", 0 },
};

static void test_netlist_match(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(net_match); i++) {
		struct netlist l;
		struct ipaddr a = ip(net_match[i].client);
		assert_true(netlist_parse(net_match[i].list, &l, NULL, 0));
		if (netlist_match(&l, &a) != net_match[i].match)
			fail_msg("\"%s\" vs %s: want %d", net_match[i].list, net_match[i].client,
				 net_match[i].match);
		netlist_free(&l);
	}
}

/* ---- host names */

static const struct {
	const char *s;
	size_t n;
	bool host, fqdn; /* valid with fqdn false, with fqdn true */
} names[] = {
	{ L("localhost"), 1, 0 },
	{ L("a"), 1, 0 },
	{ L("example.com"), 1, 1 },
	{ L("EXAMPLE.COM"), 1, 1 },
	{ L("mx1.example.com"), 1, 1 },
	{ L("a.b"), 1, 1 },
	{ L("a.b.c.d.e.f"), 1, 1 },
	{ L("xn--bcher-kva.example"), 1, 1 },
	{ L("a-b.c-d"), 1, 1 },
	{ L("x--y.example"), 1, 1 },
	{ L("1a.example"), 1, 1 },
	{ L("example.123a"), 1, 1 },
	{ L("example.a123"), 1, 1 },
	{ L("0.example"), 1, 1 },
	{ L("123.example"), 1, 1 },
	{ L("1.2.3.a"), 1, 1 },
	{ L("0a"), 1, 0 },
	{ L(""), 0, 0 },
	{ L("."), 0, 0 },
	{ L(".."), 0, 0 },
	{ L(".example.com"), 0, 0 },
	{ L("example.com."), 0, 0 },
	{ L("localhost."), 0, 0 },
	{ L("example..com"), 0, 0 },
	{ L("-a.example"), 0, 0 },
	{ L("a-.example"), 0, 0 },
	{ L("example.-com"), 0, 0 },
	{ L("example.com-"), 0, 0 },
	{ L("-"), 0, 0 },
	{ L("exa_mple.com"), 0, 0 },
	{ L("_dmarc.example.com"), 0, 0 },
	{ L("exa mple.com"), 0, 0 },
	{ L(" example.com"), 0, 0 },
	{ L("example.com\n"), 0, 0 },
	{ L("ex\xc3\xa4mple.com"), 0, 0 },
	{ L("\xff.example"), 0, 0 },
	{ L("1.2.3.4"), 0, 0 },
	{ L("192.0.2.1"), 0, 0 },
	{ L("example.123"), 0, 0 },
	{ L("123"), 0, 0 },
	{ L("0"), 0, 0 },
	{ L("*.example.com"), 0, 0 },
	{ L("ex*ample.com"), 0, 0 },
	{ L("[example.com]"), 0, 0 },
	{ L("example.com:25"), 0, 0 },
	{ L("example/com"), 0, 0 },
	{ L("::1"), 0, 0 },
	{ L("example.com\0evil.org"), 0, 0 },
	{ L("example\0.com"), 0, 0 },
	{ "example.com\0", 11, 1, 1 },
	{ "example.com.", 11, 1, 1 },
	{ "example.com", 9, 1, 1 },
	{ "a-", 1, 1, 0 },
	{ "a.-b", 1, 1, 0 },
	{ "a.-b", 2, 0, 0 },
	{ "ab", 0, 0, 0 },
	{ "1.2.3.4x", 7, 0, 0 },
	{ "example.com", 8, 0, 0 },
};

static bool host_exact(const char *s, size_t n, bool fqdn)
{
	char *p = exact(s, n);
	bool ok = hostname_valid(p, n, fqdn);
	free(p);
	return ok;
}

static void test_hostname_valid(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		CHECK(host_exact(names[i].s, names[i].n, false) == names[i].host, names[i].s);
		CHECK(host_exact(names[i].s, names[i].n, true) == names[i].fqdn, names[i].s);
	}
	assert_false(hostname_valid(NULL, 3, false));
}

/* Lengths at and just past each limit: labels of 63/64, names of 253/254. */
static void test_hostname_lengths(void **state)
{
	char s[400];

	memset(s, 'a', 64);
	assert_true(host_exact(s, 63, false));
	assert_false(host_exact(s, 64, false));
	memcpy(s + 63, ".example", 8);
	assert_true(host_exact(s, 71, true));
	memcpy(s + 64, ".example", 8);
	assert_false(host_exact(s, 72, true));

	/* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 */
	memset(s, 'b', sizeof s);
	s[63] = s[127] = s[191] = '.';
	assert_true(host_exact(s, 253, true));
	assert_false(host_exact(s, 254, true)); /* last label 62: fine, total not */
	s[253] = '.';
	assert_false(host_exact(s, 255, true));
	assert_false(host_exact(s, 254, true));

	/* many one-letter labels */
	for (size_t i = 0; i < sizeof s; i++)
		s[i] = i % 2 ? '.' : 'x';
	assert_true(host_exact(s, 253, true));
	assert_false(host_exact(s, 255, true));
	assert_false(host_exact(s, 254, true)); /* trailing dot */

	char *huge = repeat('a', 100000);
	assert_false(host_exact(huge, 100000, false));
	free(huge);
}

/* ---- next hops */

struct nh_case {
	const char *s;
	enum nh_proto def;
	enum nh_proto proto;
	enum nh_kind kind;
	bool mx, is_ip;
	const char *host; /* or path for NH_UNIX */
	uint16_t port;
	const char *canon;
};

#define SMTP NH_SMTP
#define LMTP NH_LMTP
#define INET NH_INET
#define UNIX NH_UNIX

static const struct nh_case nh_ok[] = {
	{ "smtp:example.com", SMTP, SMTP, INET, 1, 0, "example.com", 25, "smtp:example.com" },
	{ "example.com", SMTP, SMTP, INET, 1, 0, "example.com", 25, "smtp:example.com" },
	{ "SMTP:example.com", LMTP, SMTP, INET, 1, 0, "example.com", 25, "smtp:example.com" },
	{ "sMtP:Example.COM", SMTP, SMTP, INET, 1, 0, "Example.COM", 25, "smtp:Example.COM" },
	{ "smtp:example.com:25", SMTP, SMTP, INET, 1, 0, "example.com", 25, "smtp:example.com" },
	{ "smtp:example.com:587", SMTP, SMTP, INET, 1, 0, "example.com", 587, "smtp:example.com:587" },
	{ "smtp:example.com:1", SMTP, SMTP, INET, 1, 0, "example.com", 1, "smtp:example.com:1" },
	{ "smtp:example.com:65535", SMTP, SMTP, INET, 1, 0, "example.com", 65535,
	  "smtp:example.com:65535" },
	{ "smtp:[mx.example.com]", SMTP, SMTP, INET, 0, 0, "mx.example.com", 25,
	  "smtp:[mx.example.com]" },
	{ "[mx.example.com]", SMTP, SMTP, INET, 0, 0, "mx.example.com", 25, "smtp:[mx.example.com]" },
	{ "smtp:[mx.example.com]:2525", SMTP, SMTP, INET, 0, 0, "mx.example.com", 2525,
	  "smtp:[mx.example.com]:2525" },
	{ "smtp:[mx.example.com]:25", SMTP, SMTP, INET, 0, 0, "mx.example.com", 25,
	  "smtp:[mx.example.com]" },
	{ "smtp:localhost", SMTP, SMTP, INET, 1, 0, "localhost", 25, "smtp:localhost" },
	{ "smtp:[localhost]", SMTP, SMTP, INET, 0, 0, "localhost", 25, "smtp:[localhost]" },
	{ "smtp:xn--bcher-kva.example", SMTP, SMTP, INET, 1, 0, "xn--bcher-kva.example", 25,
	  "smtp:xn--bcher-kva.example" },
	{ "smtp:[192.0.2.1]", SMTP, SMTP, INET, 0, 1, "192.0.2.1", 25, "smtp:[192.0.2.1]" },
	{ "smtp:192.0.2.1", SMTP, SMTP, INET, 0, 1, "192.0.2.1", 25, "smtp:[192.0.2.1]" },
	{ "192.0.2.1", SMTP, SMTP, INET, 0, 1, "192.0.2.1", 25, "smtp:[192.0.2.1]" },
	{ "smtp:192.0.2.1:2525", SMTP, SMTP, INET, 0, 1, "192.0.2.1", 2525, "smtp:[192.0.2.1]:2525" },
	{ "smtp:[192.0.2.1]:2525", SMTP, SMTP, INET, 0, 1, "192.0.2.1", 2525,
	  "smtp:[192.0.2.1]:2525" },
	{ "smtp:[2001:db8::1]", SMTP, SMTP, INET, 0, 1, "2001:db8::1", 25, "smtp:[2001:db8::1]" },
	{ "smtp:[IPv6:2001:DB8::1]:25", SMTP, SMTP, INET, 0, 1, "2001:db8::1", 25,
	  "smtp:[2001:db8::1]" },
	{ "smtp:[ipv6:::1]:26", SMTP, SMTP, INET, 0, 1, "::1", 26, "smtp:[::1]:26" },
	{ "smtp:[::ffff:192.0.2.1]", SMTP, SMTP, INET, 0, 1, "::ffff:192.0.2.1", 25,
	  "smtp:[::ffff:192.0.2.1]" },
	{ "smtp:[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", SMTP, SMTP, INET, 0, 1,
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
	  "smtp:[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535" },
	{ "[::1]:24", LMTP, LMTP, INET, 0, 1, "::1", 24, "lmtp:[::1]" },
	{ "lmtp:[127.0.0.1]:24", SMTP, LMTP, INET, 0, 1, "127.0.0.1", 24, "lmtp:[127.0.0.1]" },
	{ "lmtp:[127.0.0.1]", SMTP, LMTP, INET, 0, 1, "127.0.0.1", 24, "lmtp:[127.0.0.1]" },
	{ "lmtp:[127.0.0.1]:25", SMTP, LMTP, INET, 0, 1, "127.0.0.1", 25, "lmtp:[127.0.0.1]:25" },
	{ "lmtp:127.0.0.1:2424", SMTP, LMTP, INET, 0, 1, "127.0.0.1", 2424, "lmtp:[127.0.0.1]:2424" },
	{ "LMTP:inet:127.0.0.1:24", SMTP, LMTP, INET, 0, 1, "127.0.0.1", 24, "lmtp:[127.0.0.1]" },
	{ "lmtp:inet:[::1]:2424", SMTP, LMTP, INET, 0, 1, "::1", 2424, "lmtp:[::1]:2424" },
	{ "lmtp:inet:localhost:24", SMTP, LMTP, INET, 0, 0, "localhost", 24, "lmtp:[localhost]" },
	{ "lmtp:INET:mail.example.com:10024", SMTP, LMTP, INET, 0, 0, "mail.example.com", 10024,
	  "lmtp:[mail.example.com]:10024" },
	{ "lmtp:inet:[mail.example.com]", SMTP, LMTP, INET, 0, 0, "mail.example.com", 24,
	  "lmtp:[mail.example.com]" },
	{ "lmtp:mail.example.com", SMTP, LMTP, INET, 0, 0, "mail.example.com", 24,
	  "lmtp:[mail.example.com]" },
	{ "lmtp:mail.example.com:24", SMTP, LMTP, INET, 0, 0, "mail.example.com", 24,
	  "lmtp:[mail.example.com]" },
	{ "lmtp:[mail.example.com]:24", SMTP, LMTP, INET, 0, 0, "mail.example.com", 24,
	  "lmtp:[mail.example.com]" },
	{ "inet:127.0.0.1:24", LMTP, LMTP, INET, 0, 1, "127.0.0.1", 24, "lmtp:[127.0.0.1]" },
	{ "mail.example.com:2424", LMTP, LMTP, INET, 0, 0, "mail.example.com", 2424,
	  "lmtp:[mail.example.com]:2424" },
	{ "lmtp:unix:/run/dovecot/lmtp", SMTP, LMTP, UNIX, 0, 0, "/run/dovecot/lmtp", 0,
	  "lmtp:unix:/run/dovecot/lmtp" },
	{ "lmtp:UNIX:/x", SMTP, LMTP, UNIX, 0, 0, "/x", 0, "lmtp:unix:/x" },
	{ "lmtp:unix:/", SMTP, LMTP, UNIX, 0, 0, "/", 0, "lmtp:unix:/" },
	{ "unix:/run/dovecot/lmtp", LMTP, LMTP, UNIX, 0, 0, "/run/dovecot/lmtp", 0,
	  "lmtp:unix:/run/dovecot/lmtp" },
	{ "lmtp:unix:/path:with:colons", SMTP, LMTP, UNIX, 0, 0, "/path:with:colons", 0,
	  "lmtp:unix:/path:with:colons" },
	{ "lmtp:unix:/run/[x]", SMTP, LMTP, UNIX, 0, 0, "/run/[x]", 0, "lmtp:unix:/run/[x]" },
};

static const struct {
	const char *s;
	enum nh_proto def;
	const char *err;
} nh_bad[] = {
	{ "", SMTP, "empty next hop" },
	{ "", LMTP, "empty next hop" },
	{ "smtp:", SMTP, "empty next hop" },
	{ "lmtp:", SMTP, "empty next hop" },
	{ "SMTP:", LMTP, "empty next hop" },
	{ "lmtp:inet:", SMTP, "empty next hop" },
	{ "relay:[mx.example.com]", SMTP, "unknown transport \"relay\"" },
	{ "relay:mx.example.com", SMTP, "unknown transport \"relay\"" },
	{ "relay:[mx.example.com]:25", LMTP, "unknown transport \"relay\"" },
	{ "esmtp:example.com", SMTP, "unknown transport \"esmtp\"" },
	{ "local:", SMTP, "unknown transport \"local\"" },
	{ "smtps:example.com", SMTP, "unknown transport \"smtps\"" },
	{ "smtp:unix:/run/x", SMTP, "smtp over a unix socket is not supported" },
	{ "unix:/run/x", SMTP, "smtp over a unix socket is not supported" },
	{ "smtp:inet:example.com:25", SMTP, "\"inet:\" is only for lmtp" },
	{ "lmtp:unix:relative", SMTP, "socket path \"relative\" is not absolute" },
	{ "lmtp:unix:./lmtp", SMTP, "socket path \"./lmtp\" is not absolute" },
	{ "unix:run/lmtp", LMTP, "not absolute" },
	{ "lmtp:unix:", SMTP, "empty socket path" },
	{ "lmtp:unix:/run/a b", SMTP, "bad character in socket path \"/run/a b\"" },
	{ "lmtp:unix:/run/a\tb", SMTP, "bad character in socket path \"/run/a\\x09b\"" },
	{ "lmtp:unix:/run/\x01", SMTP, "bad character in socket path" },
	{ "lmtp:unix:/run/lmtp\x7f", SMTP, "bad character in socket path" },
	{ "lmtp:unix:/run/lmtp\n", SMTP, "bad character in socket path" },
	{ "smtp:[mx.example.com]:0", SMTP, "bad port \"0\"" },
	{ "smtp:[mx.example.com]:65536", SMTP, "bad port \"65536\"" },
	{ "smtp:[mx.example.com]:99999999999999999999999", SMTP, "bad port \"9999" },
	{ "smtp:[mx.example.com]:025", SMTP, "bad port \"025\"" },
	{ "smtp:[mx.example.com]:+25", SMTP, "bad port \"+25\"" },
	{ "smtp:[mx.example.com]: 25", SMTP, "bad port \" 25\"" },
	{ "smtp:[mx.example.com]:", SMTP, "bad port \"\"" },
	{ "smtp:[mx.example.com]:-1", SMTP, "bad port \"-1\"" },
	{ "smtp:[mx.example.com]:25x", SMTP, "bad port \"25x\"" },
	{ "smtp:[mx.example.com]:0x19", SMTP, "bad port \"0x19\"" },
	{ "smtp:[mx.example.com]:25:26", SMTP, "bad port \"25:26\"" },
	{ "smtp:[mx.example.com]:smtp", SMTP, "bad port \"smtp\"" },
	{ "smtp:example.com:0", SMTP, "bad port \"0\"" },
	{ "smtp:example.com:", SMTP, "bad port \"\"" },
	{ "smtp:example.com:25:25", SMTP, "bad port \"25:25\"" },
	{ "smtp:example.com:smtp", SMTP, "bad port \"smtp\"" },
	{ "example.com:smtp", SMTP, "bad port \"smtp\"" },
	{ "smtp:smtp:example.com", SMTP, "bad port \"example.com\"" },
	{ "lmtp:inet:unix:/x", SMTP, "bad port \"/x\"" },
	{ "lmtp:127.0.0.1:0", SMTP, "bad port \"0\"" },
	{ "smtp:[", SMTP, "missing \"]\" in \"[\"" },
	{ "smtp:[mx.example.com", SMTP, "missing \"]\" in \"[mx.example.com\"" },
	{ "smtp:[192.0.2.1", SMTP, "missing \"]\"" },
	{ "smtp:[]", SMTP, "empty host" },
	{ "smtp:[]:25", SMTP, "empty host" },
	{ "[]", LMTP, "empty host" },
	{ "smtp:]", SMTP, "bad host \"]\"" },
	{ "smtp:mx.example.com]", SMTP, "bad host \"mx.example.com]\"" },
	{ "smtp:192.0.2.1]", SMTP, "bad host \"192.0.2.1]\"" },
	{ "smtp:[mx.example.com]x", SMTP, "garbage after \"]\"" },
	{ "smtp:[mx.example.com]]", SMTP, "garbage after \"]\"" },
	{ "smtp:[mx.example.com] ", SMTP, "garbage after \"]\"" },
	{ "smtp:[[mx.example.com]]", SMTP, "garbage after \"]\"" },
	{ "smtp:[[mx.example.com]", SMTP, "bad host \"[mx.example.com\"" },
	{ "smtp:2001:db8::1", SMTP, "IPv6 address must be in brackets: \"2001:db8::1\"" },
	{ "2001:db8::1", SMTP, "IPv6 address must be in brackets" },
	{ "smtp:::1", SMTP, "IPv6 address must be in brackets" },
	{ "lmtp:::1:24", SMTP, "IPv6 address must be in brackets" },
	{ "smtp:::ffff:192.0.2.1", SMTP, "IPv6 address must be in brackets" },
	{ "smtp:1.2.3", SMTP, "bad host \"1.2.3\"" },
	{ "smtp:256.1.1.1", SMTP, "bad host \"256.1.1.1\"" },
	{ "smtp:[256.1.1.1]", SMTP, "bad host \"256.1.1.1\"" },
	{ "smtp:[1.2.3.4.5]", SMTP, "bad host \"1.2.3.4.5\"" },
	{ "smtp:01.2.3.4", SMTP, "bad host \"01.2.3.4\"" },
	{ "smtp:example.com.", SMTP, "bad host \"example.com.\"" },
	{ "smtp:-example.com", SMTP, "bad host \"-example.com\"" },
	{ "smtp:exa_mple.com", SMTP, "bad host \"exa_mple.com\"" },
	{ "smtp:example.com extra", SMTP, "bad host \"example.com extra\"" },
	{ "smtp: example.com", SMTP, "bad host \" example.com\"" },
	{ "smtp:example.com\n", SMTP, "bad host \"example.com\\x0a\"" },
	{ "smtp:ex\xc3\xa4mple.com", SMTP, "bad host \"ex\\xc3\\xa4mple.com\"" },
	{ "smtp:[fe80::1%eth0]", SMTP, "bad host \"fe80::1%eth0\"" },
	{ "smtp:[IPv6:192.0.2.1]", SMTP, "bad host \"IPv6:192.0.2.1\"" },
	{ "smtp:[IPv6:]", SMTP, "bad host \"IPv6:\"" },
	{ "smtp:[IPv6:mx.example.com]", SMTP, "bad host" },
	{ "smtp:[mx.example.com:25]", SMTP, "bad host" },
	{ "smtp:[ mx.example.com]", SMTP, "bad host" },
	{ "smtp:.", SMTP, "bad host" },
	{ "smtp:\"example.com\"", SMTP, "bad host \"\\x22example.com\\x22\"" },
	{ "smtp:example.com/25", SMTP, "bad host" },
	{ "smtp::25", SMTP, "empty host" },
	{ "smtp:[]]", SMTP, "garbage after \"]\"" },
	{ ":25", SMTP, "empty host" },
	{ ":", LMTP, "empty host" },
};

static void check_nh(const struct nexthop *nh, const struct nh_case *c)
{
	CHECK(nh->proto == c->proto, c->s);
	CHECK(nh->kind == c->kind, c->s);
	CHECK(nh->mx == c->mx, c->s);
	CHECK(nh->is_ip == c->is_ip, c->s);
	if (c->kind == NH_UNIX) {
		assert_string_equal(nh->path, c->host);
		CHECK(nh->host[0] == 0 && nh->port == 0, c->s);
		return;
	}
	assert_string_equal(nh->host, c->host);
	CHECK(nh->path[0] == 0, c->s);
	CHECK(nh->port == c->port, c->s);
	if (c->is_ip) {
		char txt[IPADDR_STRLEN];
		assert_string_equal(ipaddr_format(&nh->ip, txt), c->host);
	}
}

static void test_nexthop_parse_valid(void **state)
{
	char err[128];

	for (size_t i = 0; i < ARRAY_LEN(nh_ok); i++) {
		struct nexthop nh;
		if (!nexthop_parse(nh_ok[i].s, nh_ok[i].def, &nh, err, sizeof err))
			fail_msg("\"%s\": %s", nh_ok[i].s, err);
		check_nh(&nh, &nh_ok[i]);
	}
}

/* parse(format(parse(x))) == parse(x), whatever the default protocol. */
static void test_nexthop_round_trip(void **state)
{
	struct buf b = BUF_INIT;
	char err[128];

	for (size_t i = 0; i < ARRAY_LEN(nh_ok); i++) {
		struct nexthop first, again;
		assert_true(nexthop_parse(nh_ok[i].s, nh_ok[i].def, &first, err, sizeof err));
		buf_reset(&b);
		nexthop_format(&first, &b);
		if (strcmp(buf_cstr(&b), nh_ok[i].canon) != 0)
			fail_msg("\"%s\": formatted \"%s\", want \"%s\"", nh_ok[i].s, buf_cstr(&b),
				 nh_ok[i].canon);
		for (int def = NH_SMTP; def <= NH_LMTP; def++) {
			if (!nexthop_parse(buf_cstr(&b), (enum nh_proto)def, &again, err, sizeof err))
				fail_msg("\"%s\" -> \"%s\": %s", nh_ok[i].s, buf_cstr(&b), err);
			CHECK(memcmp(&first, &again, sizeof first) == 0, nh_ok[i].s);
			check_nh(&again, &nh_ok[i]);
		}
	}
	buf_free(&b);
}

static void test_nexthop_parse_invalid(void **state)
{
	char err[128];

	for (size_t i = 0; i < ARRAY_LEN(nh_bad); i++) {
		struct nexthop nh, before;
		memset(&nh, 0x5a, sizeof nh);
		before = nh;
		strcpy(err, "untouched");
		CHECK(!nexthop_parse(nh_bad[i].s, nh_bad[i].def, &nh, err, sizeof err), nh_bad[i].s);
		if (strstr(err, nh_bad[i].err) == NULL)
			fail_msg("\"%s\": err \"%s\", want \"%s\"", nh_bad[i].s, err, nh_bad[i].err);
		CHECK(memcmp(&nh, &before, sizeof nh) == 0, nh_bad[i].s);
	}
}

struct shape {
	const char *pre, *post;
};

/* wrap: b = pre + s[0..n) + post. */
static void wrap(struct buf *b, const struct shape *sh, const char *s, size_t n)
{
	buf_reset(b);
	buf_puts(b, sh->pre);
	buf_append(b, s, n);
	buf_puts(b, sh->post);
}

/* Sizes at the edges of the struct's buffers, and absurd input. */
static void test_nexthop_lengths(void **state)
{
	struct nexthop nh;
	struct buf b = BUF_INIT;
	char err[128], name[254];
	static const struct shape shapes[] = {
		{ "smtp:", "" }, { "smtp:[", "]" }, { "smtp:[", "]:2525" }, { "lmtp:", ":24" },
	};
	static const struct shape hostile[] = {
		{ "smtp:", "" }, { "smtp:[", "]" }, { "smtp:[", "" }, { "lmtp:unix:/", "" },
		{ "smtp:x:", "" }, { "", ":x" }, { "smtp:[x]:", "" }, { "relay", ":x" },
	};

	/* sun_path: 107 bytes of path fit, 108 do not */
	char *path = repeat('p', 108);
	path[0] = '/';
	buf_printf(&b, "lmtp:unix:%.107s", path);
	assert_true(nexthop_parse(buf_cstr(&b), NH_SMTP, &nh, err, sizeof err));
	assert_int_equal(strlen(nh.path), 107);
	buf_reset(&b);
	buf_printf(&b, "lmtp:unix:%s", path);
	assert_false(nexthop_parse(buf_cstr(&b), NH_SMTP, &nh, err, sizeof err));
	assert_string_equal(err, "socket path longer than 107 bytes");
	free(path);

	/* host: 253 bytes fit, 254 do not, bracketed or not */
	memset(name, 'h', sizeof name);
	name[63] = name[127] = name[191] = '.';
	for (size_t i = 0; i < ARRAY_LEN(shapes); i++) {
		struct nexthop again;
		struct buf f = BUF_INIT;
		wrap(&b, &shapes[i], name, 253);
		assert_true(nexthop_parse(buf_cstr(&b), NH_SMTP, &nh, err, sizeof err));
		assert_int_equal(strlen(nh.host), 253);
		nexthop_format(&nh, &f);
		assert_true(nexthop_parse(buf_cstr(&f), NH_LMTP, &again, err, sizeof err));
		assert_memory_equal(&nh, &again, sizeof nh);
		buf_free(&f);
		wrap(&b, &shapes[i], name, 254);
		assert_false(nexthop_parse(buf_cstr(&b), NH_SMTP, &nh, err, sizeof err));
		assert_non_null(strstr(err, "bad host"));
	}
	/* a 64-octet label */
	buf_reset(&b);
	buf_printf(&b, "smtp:[%s.example]", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_false(nexthop_parse(buf_cstr(&b), NH_SMTP, &nh, err, sizeof err));

	/* huge input of every shape: refused, and the quote in err is cut */
	char *huge = repeat('9', 100000);
	for (size_t i = 0; i < ARRAY_LEN(hostile); i++) {
		wrap(&b, &hostile[i], huge, 100000);
		assert_false(nexthop_parse(buf_cstr(&b), NH_SMTP, &nh, err, sizeof err));
		assert_true(strlen(err) < sizeof err);
	}
	free(huge);
	buf_free(&b);

	/* NULL input and NULL or tiny err buffers */
	assert_false(nexthop_parse(NULL, NH_SMTP, &nh, err, sizeof err));
	assert_string_equal(err, "empty next hop");
	assert_false(nexthop_parse("smtp:[x]:0", NH_SMTP, &nh, NULL, 0));
	assert_false(nexthop_parse("smtp:[x]:0", NH_SMTP, &nh, err, 1));
	assert_string_equal(err, "");
}

/* Every port number: in range round-trips, the default is not written. */
static void test_nexthop_ports(void **state)
{
	struct nexthop nh, again;
	struct buf b = BUF_INIT, f = BUF_INIT;
	char err[128];

	for (unsigned p = 0; p <= 70000; p += p < 100 ? 1 : p < 65500 ? 997 : 1) {
		buf_reset(&b);
		buf_printf(&b, "lmtp:[192.0.2.1]:%u", p);
		bool ok = nexthop_parse(buf_cstr(&b), NH_SMTP, &nh, err, sizeof err);
		assert_int_equal(ok, p >= 1 && p <= 65535);
		if (!ok)
			continue;
		assert_int_equal(nh.port, p);
		buf_reset(&f);
		nexthop_format(&nh, &f);
		buf_reset(&b);
		if (p == 24)
			buf_puts(&b, "lmtp:[192.0.2.1]");
		else
			buf_printf(&b, "lmtp:[192.0.2.1]:%u", p);
		assert_string_equal(buf_cstr(&f), buf_cstr(&b));
		assert_true(nexthop_parse(buf_cstr(&f), NH_SMTP, &again, err, sizeof err));
		assert_memory_equal(&nh, &again, sizeof nh);
	}
	buf_free(&b);
	buf_free(&f);
}

/* nexthop_format appends to what the buffer holds. */
static void test_nexthop_format_appends(void **state)
{
	struct nexthop nh;
	struct buf b = BUF_INIT;

	assert_true(nexthop_parse("[mx.example.com]:2525", NH_SMTP, &nh, NULL, 0));
	buf_puts(&b, "relayhost = ");
	nexthop_format(&nh, &b);
	assert_string_equal(buf_cstr(&b), "relayhost = smtp:[mx.example.com]:2525");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipaddr_parse_valid),
		cmocka_unit_test(test_ipaddr_parse_invalid),
		cmocka_unit_test(test_ipaddr_parse_overlong),
		cmocka_unit_test(test_ipaddr_format),
		cmocka_unit_test(test_ipaddr_predicates),
		cmocka_unit_test(test_ipaddr_unmap),
		cmocka_unit_test(test_ipaddr_equal),
		cmocka_unit_test(test_ipaddr_sockaddr),
		cmocka_unit_test(test_iflist_parse_valid),
		cmocka_unit_test(test_iflist_parse_invalid),
		cmocka_unit_test(test_iflist_parse_edges),
		cmocka_unit_test(test_iflist_contains),
		cmocka_unit_test(test_iflist_bind_address),
		cmocka_unit_test(test_iflist_expand_fixed),
		cmocka_unit_test(test_iflist_expand_all),
		cmocka_unit_test(test_netlist_parse_valid),
		cmocka_unit_test(test_netlist_parse_invalid),
		cmocka_unit_test(test_netlist_parse_edges),
		cmocka_unit_test(test_netlist_every_prefix),
		cmocka_unit_test(test_netlist_match),
		cmocka_unit_test(test_hostname_valid),
		cmocka_unit_test(test_hostname_lengths),
		cmocka_unit_test(test_nexthop_parse_valid),
		cmocka_unit_test(test_nexthop_round_trip),
		cmocka_unit_test(test_nexthop_parse_invalid),
		cmocka_unit_test(test_nexthop_lengths),
		cmocka_unit_test(test_nexthop_ports),
		cmocka_unit_test(test_nexthop_format_appends),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
