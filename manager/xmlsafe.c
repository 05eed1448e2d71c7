/* xmlsafe.c: hostile-input-safe libxml2 parsing and schema validation.
 * A DOCTYPE stops the parser at once: the map format needs no DTD, and
 * refusing it outright removes entity expansion, external entities and
 * external subsets as a class. */
#include <errno.h>
#include <fcntl.h>
#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/relaxng.h>
#include <libxml/xmlerror.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "xmlsafe.h"

#define MAX_PARSER_ERRORS 20

struct parse_state {
	const char *path;
	struct diag *d;
	unsigned depth, max_depth;
	unsigned reported;
	int stopped; /* we refused the document ourselves */
	xmlNodePtr stamped; /* the text node on_characters gave its line */
};

/* read_bounded: the whole file, refused when larger than max. */
static char *read_bounded(const char *path, size_t max, size_t *len, struct diag *d)
{
	struct stat st;
	/* O_NONBLOCK: a FIFO without a writer must not block open() forever;
	 * reads block again (a pipe with a writer still works). */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		diag_error(d, path, 0, "cannot open: %s", strerror(errno));
		return NULL;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		diag_error(d, path, 0, "is a directory");
		close(fd);
		return NULL;
	}
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (unsigned long long)st.st_size > max) {
		diag_error(d, path, 0, "map is %llu bytes, more than the limit of %zu",
			   (unsigned long long)st.st_size, max);
		close(fd);
		return NULL;
	}
	struct buf b = BUF_INIT;
	for (;;) {
		buf_reserve(&b, 65536);
		ssize_t n = read(fd, b.data + b.len, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			diag_error(d, path, 0, "read error: %s", strerror(errno));
			break;
		}
		if (n == 0 && b.len == 0) {
			diag_error(d, path, 0, "is empty"); /* libxml2 would say less */
			break;
		}
		if (n == 0) {
			close(fd);
			*len = b.len;
			b.data[b.len] = 0;
			return buf_steal(&b);
		}
		b.len += (size_t)n;
		if (b.len > max) {
			diag_error(d, path, 0, "map is more than the limit of %zu bytes", max);
			break;
		}
	}
	close(fd);
	buf_free(&b);
	return NULL;
}

static struct parse_state *state_of(void *ctx)
{
	return ((xmlParserCtxtPtr)ctx)->_private;
}

static void refuse(void *ctx, const char *why)
{
	xmlParserCtxtPtr ctxt = ctx;
	struct parse_state *st = state_of(ctx);

	if (!st->stopped)
		diag_error(st->d, st->path, (unsigned long)xmlSAX2GetLineNumber(ctx), "%s", why);
	st->stopped = 1;
	xmlStopParser(ctxt);
}

static void on_internal_subset(void *ctx, const xmlChar *name, const xmlChar *ext,
			       const xmlChar *sys)
{
	refuse(ctx, "a DOCTYPE is not allowed in a map (no DTDs, no entities)");
}

static void on_start(void *ctx, const xmlChar *localname, const xmlChar *prefix,
		     const xmlChar *uri, int nb_ns, const xmlChar **ns, int nb_attrs,
		     int nb_defaulted, const xmlChar **attrs)
{
	struct parse_state *st = state_of(ctx);

	if (++st->depth > st->max_depth) {
		char why[80];
		snprintf(why, sizeof why, "elements nested more than %u deep", st->max_depth);
		refuse(ctx, why);
		return;
	}
	xmlSAX2StartElementNs(ctx, localname, prefix, uri, nb_ns, ns, nb_attrs,
			      nb_defaulted, attrs);
}

static void on_end(void *ctx, const xmlChar *localname, const xmlChar *prefix,
		   const xmlChar *uri)
{
	struct parse_state *st = state_of(ctx);

	st->depth--;
	xmlSAX2EndElementNs(ctx, localname, prefix, uri);
}

static bool is_blank(xmlChar c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* on_characters: libxml2 stamps a text node with the line where its first
 * chunk of text ended, often the line of the next tag. Restamp it with the
 * line of its first non-blank character, where "unexpected text" belongs.
 * A node is restamped once; later chunks of it cost one comparison, so a
 * huge text stays linear. */
static void on_characters(void *ctx, const xmlChar *ch, int len)
{
	xmlParserCtxtPtr ctxt = ctx;
	struct parse_state *st = ctxt->_private;
	size_t i = 0, n = len > 0 ? (size_t)len : 0;

	xmlSAX2Characters(ctx, ch, len);
	xmlNodePtr t = ctxt->node ? ctxt->node->last : NULL;
	if (t == NULL || t->type != XML_TEXT_NODE || t == st->stamped)
		return;
	while (i < n && is_blank(ch[i]))
		i++;
	if (i == n)
		return; /* still blank: nothing to report, nothing to stamp */
	long line = xmlSAX2GetLineNumber(ctx);
	for (; i < n; i++)
		line -= ch[i] == '\n';
	if (line < 1)
		line = 1;
	t->line = line < 65535 ? (unsigned short)line : 65535;
	t->psvi = line < 65535 ? NULL : (void *)(ptrdiff_t)line; /* XML_PARSE_BIG_LINES */
	st->stamped = t;
}

/* report: one libxml2 error as one diagnostic line. */
static void report(struct diag *d, const char *path, unsigned *count, const xmlError *e)
{
	if (e->level < XML_ERR_ERROR || ++*count > MAX_PARSER_ERRORS)
		return;
	struct buf msg = BUF_INIT;
	const char *s = e->message ? e->message : "unknown XML error";
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
		n--;
	buf_put_printable(&msg, s, n);
	diag_error(d, path, (unsigned long)(e->line > 0 ? e->line : 0), "%s", buf_cstr(&msg));
	buf_free(&msg);
}

static void on_parse_error(void *ctx, xmlErrorPtr e)
{
	xmlParserCtxtPtr ctxt = ctx;
	struct parse_state *st = ctxt->_private;

	if (st->stopped)
		return; /* we said why already */
	report(st->d, st->path, &st->reported, e);
	/* Without recovery nothing after a fatal error is worth reading:
	 * "Premature end of data" and the like only repeat the cause. */
	if (e->level == XML_ERR_FATAL)
		st->stopped = 1;
}

xmlDocPtr xmlsafe_read(const char *path, size_t max_size, unsigned max_depth, struct diag *d)
{
	size_t len;
	char *text = read_bounded(path, max_size, &len, d);
	if (text == NULL)
		return NULL;

	struct parse_state st = { path, d, 0, max_depth, 0, 0, NULL };
	xmlParserCtxtPtr ctxt = xmlCreateMemoryParserCtxt(text, (int)len);
	if (ctxt == NULL) {
		diag_error(d, path, 0, "cannot create an XML parser");
		free(text);
		return NULL;
	}
	/* No NOENT (no entity substitution), no DTDLOAD, no XINCLUDE, no HUGE. */
	xmlCtxtUseOptions(ctxt, XML_PARSE_NONET | XML_PARSE_BIG_LINES | XML_PARSE_NOCDATA);
	ctxt->_private = &st;
	ctxt->sax->internalSubset = on_internal_subset;
	ctxt->sax->startElementNs = on_start;
	ctxt->sax->endElementNs = on_end;
	ctxt->sax->characters = on_characters;
	ctxt->sax->serror = on_parse_error;
	ctxt->sax->error = NULL;
	ctxt->sax->warning = NULL;
	ctxt->vctxt.error = NULL;
	ctxt->vctxt.warning = NULL;

	xmlParseDocument(ctxt);
	xmlDocPtr doc = ctxt->myDoc;
	int ok = ctxt->wellFormed && !st.stopped;
	if (!ok && !st.stopped && st.reported == 0)
		diag_error(d, path, (unsigned long)xmlSAX2GetLineNumber(ctxt), "not well-formed XML");
	ctxt->myDoc = NULL;
	xmlFreeParserCtxt(ctxt);
	free(text);
	if (!ok) {
		xmlFreeDoc(doc);
		return NULL;
	}
	return doc;
}

struct valid_state {
	const char *path;
	struct diag *d;
	unsigned count;
};

static void on_valid_error(void *ctx, xmlErrorPtr e)
{
	struct valid_state *vs = ctx;
	report(vs->d, vs->path, &vs->count, e);
}

unsigned xmlsafe_validate(xmlDocPtr doc, const char *path, const char *schema, size_t len,
			  struct diag *d)
{
	struct valid_state vs = { path, d, 0 };
	unsigned before = d->errors;

	xmlRelaxNGParserCtxtPtr pc = xmlRelaxNGNewMemParserCtxt(schema, (int)len);
	xmlRelaxNGPtr rng = pc ? xmlRelaxNGParse(pc) : NULL;
	if (rng == NULL) {
		diag_error(d, path, 0, "the built-in map schema does not compile");
		xmlRelaxNGFreeParserCtxt(pc);
		return d->errors - before;
	}
	xmlRelaxNGValidCtxtPtr vc = xmlRelaxNGNewValidCtxt(rng);
	xmlRelaxNGSetValidStructuredErrors(vc, on_valid_error, &vs);
	int rc = xmlRelaxNGValidateDoc(vc, doc);
	if (rc != 0 && d->errors == before)
		diag_error(d, path, 0, "the map does not follow the schema");
	xmlRelaxNGFreeValidCtxt(vc);
	xmlRelaxNGFree(rng);
	xmlRelaxNGFreeParserCtxt(pc);
	return d->errors - before;
}
