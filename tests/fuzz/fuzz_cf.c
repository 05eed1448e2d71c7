/* fuzz_cf.c: the instance configuration (lib/cf.h): cf_parse_text and
 * cf_finalize (expansion, type checks) on the input as a .cf file, with
 * the diagnostics collected silently; every diagnostic must be one line
 * without control characters. Then the writer: every value the parser
 * kept, written with cf_write_value (folded as it likes), must read back
 * exactly.
 *
 * Input: a .cf file. */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cf.h"
#include "fuzzutil.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* collect: a diag sink that only checks what it is given. */
static void collect(void *ctx, enum diag_level level, const char *file, unsigned long line,
		    const char *msg)
{
	FUZZ_CHECK(!has_control(msg), "control character in diagnostic: %s", msg);
	FUZZ_CHECK(msg[0] != 0, "empty diagnostic");
	++*(unsigned *)ctx;
}

/* round_trip: every value set in cf, written and read back. */
static void round_trip(const struct cf *cf)
{
	struct buf text = BUF_INIT;
	struct cf again;
	unsigned count = 0;
	struct diag d = { collect, &count, 0, 0 };

	for (int id = 0; id < P__COUNT; id++)
		if (cf->v[id].raw != NULL)
			cf_write_value(&text, param_table[id].name, cf->v[id].raw);
	cf_init(&again);
	bool ok = cf_parse_text(&again, "again.cf", text.data ? text.data : "", text.len, &d);
	FUZZ_CHECK(ok && d.warnings == 0, "written values do not read back:\n%s", buf_cstr(&text));
	for (int id = 0; id < P__COUNT; id++) {
		const char *a = cf->v[id].raw, *b = again.v[id].raw;
		FUZZ_CHECK((a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0),
			   "%s: \"%s\" reads back as \"%s\"", param_table[id].name, a ? a : "(unset)",
			   b ? b : "(unset)");
	}
	cf_free(&again);
	buf_free(&text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cf cf;
	unsigned count = 0;
	struct diag d = { collect, &count, 0, 0 };
	/* An exact-size copy, so ASan sees any read past the end. */
	char *text = malloc(size ? size : 1);
	memcpy(text, data, size);

	cf_init(&cf);
	cf_parse_text(&cf, "fuzz.cf", text, size, &d);
	round_trip(&cf);
	unsigned before = d.errors;
	bool ok = cf_finalize(&cf, "fuzz.cf", &d);
	FUZZ_CHECK(ok == (d.errors == before), "cf_finalize says %d with %u new errors", ok,
		   d.errors - before);
	FUZZ_CHECK(count == d.errors + d.warnings, "diagnostics not counted");
	cf_free(&cf);
	free(text);
	return 0;
}
