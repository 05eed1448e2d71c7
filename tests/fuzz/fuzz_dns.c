/* fuzz_dns.c: DNS answer parsing (instances/dns.h) as c-ares hands the
 * answer buffer over: dns_parse_mx, or dns_parse_addrs for A or AAAA.
 * What comes out must be safe to use: counts within the caller's
 * maximum, MX names valid lower-case host names, unique and sorted by
 * preference, addresses of the family asked for and without duplicates,
 * the error a printable phrase.
 *
 * Input: [mode byte: low 2 bits MX/A/AAAA, the rest picks max] [answer]. */
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "dns.h"
#include "fuzzutil.h"

#define MAX_OUT 12

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

static void check_err(const char *err, size_t errlen)
{
	const char *nul = memchr(err, 0, errlen);
	FUZZ_CHECK(nul != NULL, "error not NUL-terminated");
	FUZZ_CHECK(fuzz_printable(err, (size_t)(nul - err)), "unprintable error %s", err);
}

static void mx(const unsigned char *abuf, int alen, size_t max)
{
	struct dns_mx out[MAX_OUT];
	size_t n = 99, skipped = 99;
	char err[256] = "";

	enum dns_parse r = dns_parse_mx(abuf, alen, out, max, &n, &skipped, err, sizeof err);
	check_err(err, sizeof err);
	FUZZ_CHECK(n <= max, "%zu records for a max of %zu", n, max);
	if (r != DNS_PARSE_OK) {
		FUZZ_CHECK(r == DNS_PARSE_NODATA || r == DNS_PARSE_NULLMX || r == DNS_PARSE_BAD,
			   "result %d", (int)r);
		FUZZ_CHECK(n == 0, "%zu records with result %d", n, (int)r);
		return;
	}
	FUZZ_CHECK(n >= 1, "OK without a record");
	for (size_t i = 0; i < n; i++) {
		size_t len = strnlen(out[i].name, sizeof out[i].name);
		FUZZ_CHECK(len < sizeof out[i].name, "name not NUL-terminated");
		FUZZ_CHECK(hostname_valid(out[i].name, len, false), "invalid name %s", out[i].name);
		for (size_t k = 0; k < len; k++)
			FUZZ_CHECK(!(out[i].name[k] >= 'A' && out[i].name[k] <= 'Z'), "upper case %s",
				   out[i].name);
		FUZZ_CHECK(out[i].pref <= 65535, "preference %u", out[i].pref);
		FUZZ_CHECK(i == 0 || out[i - 1].pref <= out[i].pref, "not sorted");
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(out[i].name, out[j].name) != 0, "%s twice", out[i].name);
	}
}

static void addrs(const unsigned char *abuf, int alen, int family, size_t max)
{
	struct ipaddr out[MAX_OUT];
	size_t n = 99;
	char err[256] = "";

	enum dns_parse r = dns_parse_addrs(abuf, alen, family, out, max, &n, err, sizeof err);
	check_err(err, sizeof err);
	FUZZ_CHECK(n <= max, "%zu addresses for a max of %zu", n, max);
	if (r != DNS_PARSE_OK) {
		FUZZ_CHECK(r == DNS_PARSE_NODATA || r == DNS_PARSE_BAD, "result %d", (int)r);
		FUZZ_CHECK(n == 0, "%zu addresses with result %d", n, (int)r);
		return;
	}
	FUZZ_CHECK(n >= 1, "OK without an address");
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(out[i].family == family, "family %d", out[i].family);
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(!ipaddr_equal(&out[i], &out[j]), "duplicate address");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	unsigned mode = data[0] & 3;
	size_t max = (size_t)(data[0] >> 2) % MAX_OUT + 1;
	size_t n = size - 1;
	/* An exact-size copy, so ASan sees any read past the end. */
	unsigned char *abuf = malloc(n ? n : 1);
	memcpy(abuf, data + 1, n);
	if (mode == 1)
		addrs(abuf, (int)n, AF_INET, max);
	else if (mode == 2)
		addrs(abuf, (int)n, AF_INET6, max);
	else
		mx(abuf, (int)n, max);
	free(abuf);
	return 0;
}
