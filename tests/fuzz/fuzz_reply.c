/* fuzz_reply.c: the SMTP client's reply parser (instances/smtpc.h), fed
 * what a hostile server sends: the input is cut into lines at LF (one CR
 * before it dropped, as the client's reader does) and fed until the
 * reply is complete or refused; then the next reply starts. The caller
 * must be able to trust what comes out: the text printable, NUL-
 * terminated and within SMTPC_REPLY_MAX, the code 200-599, the enhanced
 * status well-formed and of the code's class, the EHLO keywords
 * printable and upper-case. */
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "smtpc.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* dsn_ok: "C.S.D" with 1-3 digits in S and D, C the code's class. */
static bool dsn_ok(const char *d, int code)
{
	size_t i = 0;

	if (d[0] == 0)
		return true;
	if (d[0] != '0' + code / 100 || d[1] != '.')
		return false;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t k = 0;
		while (is_digit(d[i])) {
			i++;
			k++;
		}
		if (k < 1 || k > 3)
			return false;
		if (part == 0 && d[i++] != '.')
			return false;
	}
	return d[i] == 0;
}

static void check(const struct smtpc_reply *r, enum smtpc_rp rp)
{
	const char *nul = memchr(r->text, 0, SMTPC_REPLY_MAX);

	FUZZ_CHECK(nul != NULL, "text not NUL-terminated");
	FUZZ_CHECK(fuzz_printable(r->text, (size_t)(nul - r->text)), "unprintable text");
	FUZZ_CHECK(memchr(r->dsn, 0, sizeof r->dsn) != NULL, "dsn not NUL-terminated");
	FUZZ_CHECK(r->nlines <= SMTPC_REPLY_LINES, "%zu lines", r->nlines);
	FUZZ_CHECK(r->next <= r->nlines, "more keywords than lines");
	for (size_t i = 0; i < r->next; i++) {
		const char *e = r->ext[i];
		FUZZ_CHECK(e[0] != 0 && fuzz_printable(e, strlen(e)), "keyword %zu", i);
		for (const char *c = e; *c; c++)
			FUZZ_CHECK(!(*c >= 'a' && *c <= 'z'), "lower-case keyword %s", e);
	}
	if (r->code != 0) {
		FUZZ_CHECK(r->code >= 200 && r->code <= 599, "code %d", r->code);
		FUZZ_CHECK(strlen(r->text) >= 3 && r->text[0] == '0' + r->code / 100 &&
				   r->text[1] == '0' + r->code / 10 % 10 && r->text[2] == '0' + r->code % 10,
			   "text %s does not start with its code", r->text);
		FUZZ_CHECK(dsn_ok(r->dsn, r->code), "dsn %s of a %d", r->dsn, r->code);
	} else {
		FUZZ_CHECK(r->nlines == 0 && r->next == 0 && r->text[0] == 0, "data without a code");
	}
	if (rp == SMTPC_RP_DONE)
		FUZZ_CHECK(r->end && r->nlines > 0, "done without a last line");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtpc_reply r;
	const char *p = (const char *)data, *end = p + size;

	smtpc_reply_init(&r);
	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		const char *eol = lf ? lf : end;
		size_t n = (size_t)(eol - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		/* An exact-size copy, so ASan sees any read past the end. */
		char *line = malloc(n ? n : 1);
		memcpy(line, p, n);
		enum smtpc_rp rp = smtpc_reply_line(&r, line, n);
		free(line);
		check(&r, rp);
		if (rp != SMTPC_RP_MORE) {
			smtpc_reply_free(&r);
			FUZZ_CHECK(r.code == 0 && r.ext == NULL && r.next == 0, "free did not reset");
		}
		p = lf ? lf + 1 : end;
	}
	smtpc_reply_free(&r);
	return 0;
}
