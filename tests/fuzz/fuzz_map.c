/* fuzz_map.c: the XML map loader (manager/map.h) on hostile files:
 * libxml2 parses, our safe loading must refuse entities, DTDs and deep
 * nesting, and every check of the map format runs on whatever parses.
 * Each diagnostic must be one line without control characters; the map
 * is freed whatever happened.
 *
 * Input: a map file. */
#include <stdio.h>
#include <string.h>

#include "fuzzutil.h"
#include "map.h"

static char path[600];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	snprintf(path, sizeof path, "%s/map.xml", fuzz_tmpdir("map"));
	return 0;
}

static void collect(void *ctx, enum diag_level level, const char *file, unsigned long line,
		    const char *msg)
{
	for (const char *c = msg; *c; c++)
		FUZZ_CHECK((unsigned char)*c >= 0x20 && *c != 0x7f,
			   "control character in diagnostic: %s", msg);
	FUZZ_CHECK(msg[0] != 0, "empty diagnostic");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct map m;
	struct diag d = { collect, NULL, 0, 0 };

	fuzz_write_file(path, data, size);
	bool ok = map_load(&m, path, &d);
	FUZZ_CHECK(ok == (d.errors == 0), "map_load says %d with %u errors", ok, d.errors);
	for (size_t i = 0; i < m.n; i++) {
		FUZZ_CHECK(m.inst[i].naddrs <= 2, "%zu addresses", m.inst[i].naddrs);
		if (ok)
			FUZZ_CHECK(m.inst[i].name != NULL && m.inst[i].myhostname != NULL,
				   "instance without identity");
	}
	map_free(&m);
	return 0;
}
