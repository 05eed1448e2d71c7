/* mailaddr.c: the arguments of MAIL FROM and RCPT TO (RFC 5321 §4.1.2,
 * §4.1.3, RFC 1870 SIZE, RFC 6152 BODY), parsed strictly by one left to
 * right scan that stops at the first byte outside the grammar. The scan is
 * bounded by n (an embedded NUL is just a byte that is never in the
 * grammar), allocates nothing, and fills the caller's structs only on
 * success.
 *
 * What this means for relaying: the domain of a mailbox is what follows
 * the only '@' outside quotes. '%' and '!' are ordinary atext, a quoted
 * local part may hold '@' but stays a local part, a source route is parsed
 * and dropped, and "user@a@b" is refused, so no spelling can name a
 * destination other than the domain the policy looks at.
 *
 * Decisions where RFC 5321 leaves room (see also docs):
 * - Leading spaces and tabs before the path are skipped here (the session
 *   skips them too; doing it twice is harmless). Trailing spaces and tabs
 *   are tolerated, and parameters may be separated by runs of them.
 * - A quoted local part is kept as written, quotes and backslashes
 *   included; the 64-octet limit counts it as written. Spaces inside the
 *   quotes are qtextSMTP and therefore accepted; an empty quoted string
 *   ("") is refused like any empty local part.
 * - Domains must be fully qualified (two labels or more); a single label
 *   gets a 553 of its own. Names longer than 253 octets (the most the DNS
 *   can hold) are "too long".
 * - An IPv6 literal needs its "IPv6:" tag (any case); "[::1]" is refused
 *   like every other General-address-literal.
 * - Route (A-d-l) domains: hostname_valid(…, false), since they are never
 *   used; the whole route is at most PATH_MAX_LEN octets.
 * - SIZE values that do not fit 64 bits (RFC 1870 allows 20 digits) are
 *   read as UINT64_MAX, which every size limit then refuses.
 * - 8-bit bytes in an address: "553 5.6.7" (RFC 6531/6533: non-ASCII
 *   address, SMTPUTF8 not offered); in a parameter: a syntax error. */
#include <stdio.h>
#include <string.h>

#include "mailaddr.h"
#include "util.h"

#define DNS_NAME_MAX 253 /* longest name hostname_valid accepts */
#define KEY_SHOW_MAX 32  /* parameter name octets quoted in a 555 reply */
#define SIZE_DIGITS_MAX 20

/* The replies that depend on the command. */
struct replies {
	const char *syntax;  /* the argument is not a path at all */
	const char *bad;     /* the path is not in the grammar */
	const char *toolong; /* a part exceeds its limit */
	const char *fqdn;    /* a single-label domain */
};

static const struct replies mail_replies = {
	"501 5.5.4 Syntax: MAIL FROM:<address>",
	"501 5.1.7 Bad sender address syntax",
	"501 5.1.7 Sender address too long",
	"553 5.1.7 Sender domain must be fully qualified",
};

static const struct replies rcpt_replies = {
	"501 5.5.4 Syntax: RCPT TO:<address>",
	"501 5.1.3 Bad recipient address syntax",
	"501 5.1.3 Recipient address too long",
	"553 5.1.3 Recipient domain must be fully qualified",
};

static const char r_8bit[] = "553 5.6.7 Non-ASCII address not permitted";
static const char r_param_syntax[] = "501 5.5.4 Syntax error in parameters";
static const char r_size[] = "501 5.5.4 Bad SIZE parameter syntax";
static const char r_body[] = "501 5.5.4 Bad BODY parameter value";
static const char r_dup_size[] = "501 5.5.4 Duplicate SIZE parameter";
static const char r_dup_body[] = "501 5.5.4 Duplicate BODY parameter";
static const char r_unsupported[] = "555 5.5.4 Unsupported option: ";

/* The 555 reply names the parameter, so it cannot be a constant: it lives
 * in this per-thread buffer and stays valid until the next call of
 * parse_mail_from or parse_rcpt_to in the same thread. */
static _Thread_local char unsupported_buf[sizeof r_unsupported + KEY_SHOW_MAX + 4];

/* ---- character classes (ASCII; bytes >= 0x80 are in none of them) */

static bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool is_blank(unsigned char c) { return c == ' ' || c == '\t'; }

/* atext, RFC 5322 §3.2.3 (used by RFC 5321's Atom). */
static bool is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* qtextSMTP: %d32-33 / %d35-91 / %d93-126. */
static bool is_qtext(unsigned char c) { return c >= 32 && c <= 126 && c != '"' && c != '\\'; }

/* dcontent: %d33-90 / %d94-126. */
static bool is_dcontent(unsigned char c) { return c >= 33 && c <= 126 && c != '[' && c != ']' && c != '\\'; }

static bool is_domain_char(unsigned char c) { return is_alpha(c) || is_digit(c) || c == '-' || c == '.'; }

/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static bool keyword_valid(const char *s, size_t n)
{
	if (n == 0 || !(is_alpha((unsigned char)s[0]) || is_digit((unsigned char)s[0])))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_alpha((unsigned char)s[i]) && !is_digit((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}

/* esmtp-value = 1*(%d33-60 / %d62-126) */
static bool value_valid(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126 || s[i] == '=')
			return false;
	return true;
}

static bool word_is(const char *s, size_t n, const char *word)
{
	return n == strlen(word) && ascii_strncasecmp(s, word, n) == 0;
}

/* ---- the scanner */

struct scan {
	const char *s;
	size_t n, i;
	const struct replies *r;
};

static bool at_end(const struct scan *sc) { return sc->i >= sc->n; }
static unsigned char cur(const struct scan *sc) { return (unsigned char)sc->s[sc->i]; }

/* refuse: the reply for an unexpected byte (or the end) at the cursor. */
static const char *refuse(const struct scan *sc)
{
	return !at_end(sc) && cur(sc) >= 0x80 ? r_8bit : sc->r->bad;
}

/* local_part: Dot-string / Quoted-string, up to (not including) the '@'. */
static const char *local_part(struct scan *sc, struct mailbox *mb)
{
	size_t start = sc->i;

	if (!at_end(sc) && cur(sc) == '"') {
		sc->i++;
		for (;;) {
			if (at_end(sc))
				return sc->r->bad;
			unsigned char c = cur(sc);
			if (c == '"')
				break;
			if (c == '\\') {
				sc->i++;
				if (at_end(sc) || cur(sc) < 32 || cur(sc) > 126)
					return refuse(sc);
			} else if (!is_qtext(c)) {
				return refuse(sc);
			}
			sc->i++;
			if (sc->i - start > LOCAL_MAX)
				return sc->r->toolong;
		}
		sc->i++; /* the closing quote */
		if (sc->i - start > LOCAL_MAX)
			return sc->r->toolong;
		if (sc->i - start == 2)
			return sc->r->bad; /* "" is an empty local part */
	} else {
		bool dot_ok = false; /* a '.' may come next: not first, not after '.' */
		while (!at_end(sc) && (is_atext(cur(sc)) || cur(sc) == '.')) {
			if (cur(sc) == '.') {
				if (!dot_ok)
					return sc->r->bad;
				dot_ok = false;
			} else {
				dot_ok = true;
			}
			sc->i++;
			if (sc->i - start > LOCAL_MAX)
				return sc->r->toolong;
		}
		if (sc->i == start || !dot_ok)
			return refuse(sc); /* empty, or a trailing dot */
	}
	if (at_end(sc) || cur(sc) != '@')
		return refuse(sc);
	memcpy(mb->local, sc->s + start, sc->i - start);
	mb->local[sc->i - start] = 0;
	sc->i++; /* the '@' */
	return NULL;
}

/* domain_name: the LDH characters at the cursor, lower-cased into out. */
static const char *domain_name(struct scan *sc, char out[DOMAIN_MAX + 1], size_t *len)
{
	size_t start = sc->i;

	while (!at_end(sc) && is_domain_char(cur(sc))) {
		sc->i++;
		if (sc->i - start > DNS_NAME_MAX)
			return sc->r->toolong;
	}
	*len = sc->i - start;
	for (size_t k = 0; k < *len; k++)
		out[k] = ascii_tolower(sc->s[start + k]);
	out[*len] = 0;
	return NULL;
}

/* terminated: the byte at the cursor may end a mailbox: '>' inside
 * brackets; the end of the argument or a blank for a bare address. */
static bool terminated(const struct scan *sc, bool bracketed)
{
	if (bracketed)
		return !at_end(sc) && cur(sc) == '>';
	return at_end(sc) || is_blank(cur(sc));
}

/* literal_valid: text[0..len) ("[...]") is an IPv4 or a tagged IPv6
 * address literal. */
static bool literal_valid(const char *text, size_t len, struct mailbox *mb)
{
	if (!ipaddr_parse(text, len, &mb->ip))
		return false;
	/* ipaddr_parse also takes an untagged "[v6]"; RFC 5321 does not. */
	if (mb->ip.family == AF_INET6 && (len < 7 || ascii_strncasecmp(text + 1, "IPv6:", 5) != 0))
		return false;
	memcpy(mb->domain, text, len);
	mb->domain[len] = 0;
	mb->literal = true;
	return true;
}

/* mailbox: Local-part "@" ( Domain / address-literal ), followed by its
 * terminator (not consumed). A wrong terminator is reported before a bad
 * domain, so "a@b\xff" is an 8-bit refusal, not a single-label one. */
static const char *mailbox(struct scan *sc, struct mailbox *mb, bool bracketed)
{
	const char *e = local_part(sc, mb);
	size_t start = sc->i, len;

	if (e)
		return e;
	if (!at_end(sc) && cur(sc) == '[') {
		sc->i++;
		while (!at_end(sc) && is_dcontent(cur(sc))) {
			sc->i++;
			if (sc->i - start + 1 > DOMAIN_MAX) /* + 1: the ']' */
				return sc->r->toolong;
		}
		if (at_end(sc) || cur(sc) != ']')
			return refuse(sc);
		sc->i++;
		if (!terminated(sc, bracketed))
			return refuse(sc);
		return literal_valid(sc->s + start, sc->i - start, mb) ? NULL : sc->r->bad;
	}
	if ((e = domain_name(sc, mb->domain, &len)) != NULL)
		return e;
	if (!terminated(sc, bracketed))
		return refuse(sc);
	if (!hostname_valid(mb->domain, len, false))
		return sc->r->bad;
	if (!hostname_valid(mb->domain, len, true))
		return sc->r->fqdn;
	return NULL;
}

/* route: A-d-l ":" at the cursor (on its first '@'), parsed and dropped.
 * At-domain is "@" Domain: no address literals. */
static const char *route(struct scan *sc)
{
	size_t start = sc->i, len;
	char dom[DOMAIN_MAX + 1];
	const char *e;

	for (;;) {
		if (at_end(sc) || cur(sc) != '@')
			return refuse(sc);
		sc->i++;
		if ((e = domain_name(sc, dom, &len)) != NULL)
			return e;
		if (at_end(sc) || (cur(sc) != ',' && cur(sc) != ':'))
			return refuse(sc);
		if (!hostname_valid(dom, len, false))
			return sc->r->bad;
		if (sc->i + 1 - start > PATH_MAX_LEN)
			return sc->r->toolong;
		if (cur(sc) == ':') {
			sc->i++;
			return NULL;
		}
		sc->i++; /* ',' */
	}
}

/* postmaster: "postmaster" (any case) at the cursor, then the terminator
 * of the path: RFC 5321 §4.5.1's "RCPT TO:<Postmaster>". */
static bool postmaster(struct scan *sc, bool bracketed, struct mailbox *mb)
{
	struct scan after = *sc;

	if (sc->n - sc->i < 10 || ascii_strncasecmp(sc->s + sc->i, "postmaster", 10) != 0)
		return false;
	after.i += 10;
	if (!terminated(&after, bracketed))
		return false;
	sc->i = after.i + (bracketed ? 1 : 0);
	strcpy(mb->local, "postmaster");
	mb->domain[0] = 0;
	return true;
}

/* path: leading blanks, then "<" [ A-d-l ":" ] Mailbox ">", "<>" (MAIL
 * only), "<postmaster>" (RCPT only), or when not strict a bare Mailbox
 * (or bare "postmaster" for RCPT). */
static const char *path(struct scan *sc, bool strict, bool rcpt, struct mailbox *mb)
{
	const char *e;

	while (!at_end(sc) && is_blank(cur(sc)))
		sc->i++;
	if (at_end(sc))
		return sc->r->syntax;
	if (cur(sc) != '<') {
		if (strict)
			return sc->r->syntax;
		if (rcpt && postmaster(sc, false, mb))
			return NULL;
		return mailbox(sc, mb, false);
	}
	sc->i++;
	if (!at_end(sc) && cur(sc) == '>') {
		if (rcpt)
			return sc->r->bad;
		mb->null = true;
		sc->i++;
		return NULL;
	}
	if (rcpt && postmaster(sc, true, mb))
		return NULL;
	if (!at_end(sc) && cur(sc) == '@' && (e = route(sc)) != NULL)
		return e;
	if ((e = mailbox(sc, mb, true)) != NULL)
		return e;
	sc->i++; /* '>' */
	return NULL;
}

/* ---- ESMTP parameters */

static const char *unsupported(const char *key, size_t n)
{
	size_t o = sizeof r_unsupported - 1;

	memcpy(unsupported_buf, r_unsupported, o);
	for (size_t i = 0; i < n && i < KEY_SHOW_MAX; i++) {
		unsigned char c = (unsigned char)key[i];
		unsupported_buf[o++] = c > 32 && c < 127 ? (char)c : '?';
	}
	if (n > KEY_SHOW_MAX) {
		memcpy(unsupported_buf + o, "...", 3);
		o += 3;
	}
	unsupported_buf[o] = 0;
	return unsupported_buf;
}

/* size_value: RFC 1870 size-value = 1*20DIGIT; a value beyond 64 bits is
 * read as UINT64_MAX (larger than any limit) rather than refused. */
static bool size_value(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > SIZE_DIGITS_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*out = v;
	return true;
}

/* parameters: what follows the path. mp NULL (RCPT): every parameter is
 * unsupported. */
static const char *parameters(struct scan *sc, struct mail_params *mp)
{
	bool seen_size = false, seen_body = false;

	if (!at_end(sc) && !is_blank(cur(sc)))
		return sc->r->syntax; /* "<a@b.example>x" */
	for (;;) {
		while (!at_end(sc) && is_blank(cur(sc)))
			sc->i++;
		if (at_end(sc))
			return NULL;
		const char *key = sc->s + sc->i, *val = NULL;
		size_t k0 = sc->i, klen, vlen = 0;
		while (!at_end(sc) && cur(sc) != '=' && !is_blank(cur(sc)))
			sc->i++;
		klen = sc->i - k0;
		if (!keyword_valid(key, klen))
			return r_param_syntax;
		if (!at_end(sc) && cur(sc) == '=') {
			size_t v0 = ++sc->i;
			while (!at_end(sc) && !is_blank(cur(sc)))
				sc->i++;
			val = sc->s + v0;
			vlen = sc->i - v0;
			if (!value_valid(val, vlen))
				return r_param_syntax;
		}
		if (mp == NULL) {
			return unsupported(key, klen);
		} else if (word_is(key, klen, "SIZE")) {
			if (seen_size)
				return r_dup_size;
			seen_size = true;
			if (val == NULL || !size_value(val, vlen, &mp->size))
				return r_size;
			mp->has_size = true;
		} else if (word_is(key, klen, "BODY")) {
			if (seen_body)
				return r_dup_body;
			seen_body = true;
			if (val != NULL && word_is(val, vlen, "7BIT"))
				mp->body = BODY_7BIT;
			else if (val != NULL && word_is(val, vlen, "8BITMIME"))
				mp->body = BODY_8BITMIME;
			else
				return r_body;
		} else {
			return unsupported(key, klen);
		}
	}
}

/* ---- the interface */

mailaddr_err parse_mail_from(const char *arg, size_t n, bool strict, struct mailbox *mb,
			     struct mail_params *params)
{
	struct scan sc = { arg, arg ? n : 0, 0, &mail_replies };
	struct mailbox m;
	struct mail_params mp;
	const char *e;

	memset(&m, 0, sizeof m);
	memset(&mp, 0, sizeof mp);
	mp.body = BODY_NONE;
	if ((e = path(&sc, strict, false, &m)) != NULL || (e = parameters(&sc, &mp)) != NULL)
		return e;
	*mb = m;
	*params = mp;
	return NULL;
}

mailaddr_err parse_rcpt_to(const char *arg, size_t n, bool strict, struct mailbox *mb)
{
	struct scan sc = { arg, arg ? n : 0, 0, &rcpt_replies };
	struct mailbox m;
	const char *e;

	memset(&m, 0, sizeof m);
	if ((e = path(&sc, strict, true, &m)) != NULL || (e = parameters(&sc, NULL)) != NULL)
		return e;
	*mb = m;
	return NULL;
}

void mailbox_format(const struct mailbox *mb, char out[LOCAL_MAX + DOMAIN_MAX + 2])
{
	if (mb->null)
		out[0] = 0;
	else if (mb->domain[0] == 0)
		snprintf(out, LOCAL_MAX + DOMAIN_MAX + 2, "%s", mb->local);
	else
		snprintf(out, LOCAL_MAX + DOMAIN_MAX + 2, "%s@%s", mb->local, mb->domain);
}
