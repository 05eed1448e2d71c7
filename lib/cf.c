/* cf.c: one instance's configuration. Owns the raw values (with the file
 * and line that set each), the main.cf-syntax reader, cf_finalize (expand
 * $name references once each, catch loops, check every value by type and
 * report each problem where its value was set) and the writer that folds
 * long values the way the reader reads them back. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "cf.h"
#include "util.h"

#define CF_LINE_MAX 65536         /* bytes in one logical line */
#define CF_FILE_MAX (16ul << 20)  /* bytes in one file */
#define EXPAND_DEPTH_MAX 32       /* nested $name expansions */
#define QUOTE_MAX 100             /* bytes of a value quoted in a message */
#define FOLD_COLUMNS 78           /* cf_write_value folds lines longer */
#define FOLD_INDENT "    "

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_';
}

static size_t name_span(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n && is_name_char(s[i]))
		i++;
	return i;
}

/* quote: s[0..n) escaped and shortened, for one-line messages. */
static const char *quote(struct buf *b, const char *s, size_t n)
{
	buf_reset(b);
	buf_put_printable(b, s, n < QUOTE_MAX ? n : QUOTE_MAX);
	if (n > QUOTE_MAX)
		buf_puts(b, "...");
	return buf_cstr(b);
}

/* ---- values ---------------------------------------------------------- */

void cf_init(struct cf *cf) { memset(cf, 0, sizeof *cf); }

/* All expanded values of a cf live in one block that starts at exp[0]. */
static void exp_release(struct cf *cf)
{
	free(cf->exp[0]);
	memset(cf->exp, 0, sizeof cf->exp);
	memset(cf->num, 0, sizeof cf->num);
	cf->final = false;
}

void cf_free(struct cf *cf)
{
	for (size_t i = 0; i < P__COUNT; i++)
		free(cf->v[i].raw);
	exp_release(cf);
	cf_init(cf);
}

void cf_set_id(struct cf *cf, enum param_id id, const char *value,
	       const char *file, unsigned long line)
{
	struct cf_value *v = &cf->v[id];

	free(v->raw);
	v->raw = xstrdup(value);
	v->file = file;
	v->line = line;
	cf->final = false;
}

/* Tab is white space in main.cf; every other control byte is refused. */
static bool has_control(const char *s)
{
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return true;
	return false;
}

static void warn_override(const struct cf_value *old, const char *name,
			  const char *file, unsigned long line, struct diag *d)
{
	const char *oldfile = old->file ? old->file : "(unknown)";

	if (old->line)
		diag_warn(d, file, line, "%s: overriding earlier value at %s:%lu",
			  name, oldfile, old->line);
	else
		diag_warn(d, file, line, "%s: overriding earlier value from %s", name, oldfile);
}

bool cf_set(struct cf *cf, const char *name, size_t namelen, const char *value,
	    const char *file, unsigned long line, struct diag *d)
{
	int id = param_lookup(name, namelen);

	if (id < 0) {
		struct buf q = BUF_INIT;
		diag_error(d, file, line, "unknown parameter \"%s\"", quote(&q, name, namelen));
		buf_free(&q);
		return false;
	}
	const char *pname = param_table[id].name;
	if (has_control(value)) {
		diag_error(d, file, line, "%s: control character in value", pname);
		return false;
	}
	if (cf->v[id].raw != NULL)
		warn_override(&cf->v[id], pname, file, line, d);
	cf_set_id(cf, (enum param_id)id, value, file, line);
	return true;
}

/* ---- the reader ------------------------------------------------------ */

/* A logical line: its first physical line and any continuation lines,
 * trimmed and joined with single spaces. */
struct reader {
	struct cf *cf;
	const char *file;
	struct diag *d;
	struct buf text;
	unsigned long first; /* line number of its first physical line */
	bool open;           /* collecting one */
	bool orphan;         /* it began with white space: nothing to continue */
	bool nul, toolong;
};

static void assign(struct reader *r)
{
	char *s = r->text.data;
	char *eq = memchr(s, '=', r->text.len);
	struct buf q = BUF_INIT;

	if (eq == NULL) {
		diag_error(r->d, r->file, r->first, "missing \"=\" in \"%s\"",
			   quote(&q, s, r->text.len));
	} else {
		size_t n = (size_t)(eq - s);
		while (n > 0 && is_blank(s[n - 1]))
			n--;
		const char *value = eq + 1;
		while (is_blank(*value))
			value++;
		if (n == 0)
			diag_error(r->d, r->file, r->first, "missing parameter name before \"=\"");
		else if (name_span(s, n) != n)
			diag_error(r->d, r->file, r->first, "bad parameter name \"%s\"",
				   quote(&q, s, n));
		else
			cf_set(r->cf, s, n, value, r->file, r->first, r->d);
	}
	buf_free(&q);
}

static void flush(struct reader *r)
{
	if (!r->open)
		return;
	r->open = false;
	if (r->orphan)
		diag_error(r->d, r->file, r->first,
			   "continuation line with nothing to continue"
			   " (a line that starts with white space)");
	else if (r->nul)
		diag_error(r->d, r->file, r->first, "NUL byte in line");
	else if (r->toolong)
		diag_error(r->d, r->file, r->first, "line longer than %d bytes", CF_LINE_MAX);
	else
		assign(r);
}

static void start(struct reader *r, unsigned long lineno, bool orphan)
{
	flush(r);
	buf_reset(&r->text);
	r->first = lineno;
	r->open = true;
	r->orphan = orphan;
	r->nul = r->toolong = false;
}

/* append: one trimmed piece of the logical line. Past the limit the rest is
 * dropped (not buffered): the line is an error anyway. */
static void append(struct reader *r, const char *s, size_t n)
{
	size_t sep = r->text.len > 0;

	if (r->toolong || r->text.len + sep + n > CF_LINE_MAX) {
		r->toolong = true;
		return;
	}
	if (sep)
		buf_putc(&r->text, ' ');
	buf_append(&r->text, s, n);
}

static void physical(struct reader *r, const char *s, size_t n, unsigned long lineno)
{
	size_t i = 0;

	if (n > 0 && s[n - 1] == '\r') /* CRLF */
		n--;
	bool nul = memchr(s, 0, n) != NULL;
	while (i < n && is_blank(s[i]))
		i++;
	while (n > i && is_blank(s[n - 1]))
		n--;
	if (i == n)
		return; /* blank */
	if (s[i] == '#') {
		/* A comment is ignored, but a NUL in it still means the file is
		 * not text. */
		if (nul)
			diag_error(r->d, r->file, lineno, "NUL byte in line");
		return;
	}
	if (i == 0 || !r->open)
		start(r, lineno, i > 0);
	r->nul |= nul;
	append(r, s + i, n - i);
}

bool cf_parse_text(struct cf *cf, const char *file, const char *text, size_t len,
		   struct diag *d)
{
	struct reader r = { .cf = cf, .file = file, .d = d };
	const char *p = text, *end = len ? text + len : text;
	unsigned long lineno = 0;
	unsigned errors = d->errors;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end; /* last line without newline */
		physical(&r, p, (size_t)(eol - p), ++lineno);
		p = nl ? nl + 1 : end;
	}
	flush(&r);
	buf_free(&r.text);
	return d->errors == errors;
}

/* read_all: the whole file, at most CF_FILE_MAX bytes. */
static bool read_all(int fd, const char *path, struct buf *b, struct diag *d)
{
	for (;;) {
		buf_reserve(b, 65536);
		ssize_t n = read(fd, b->data + b->len, b->cap - b->len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			diag_error(d, path, 0, "cannot read: %s", strerror(errno));
			return false;
		}
		if (n == 0)
			return true;
		b->len += (size_t)n;
		b->data[b->len] = 0;
		if (b->len > CF_FILE_MAX) {
			diag_error(d, path, 0, "file is larger than %lu MiB", CF_FILE_MAX >> 20);
			return false;
		}
	}
}

bool cf_parse_file(struct cf *cf, const char *path, struct diag *d)
{
	struct buf b = BUF_INIT;
	bool ok;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		diag_error(d, path, 0, "cannot open: %s", strerror(errno));
		return false;
	}
	ok = read_all(fd, path, &b, d);
	close(fd);
	if (ok)
		ok = cf_parse_text(cf, path, buf_cstr(&b), b.len, d);
	buf_free(&b);
	return ok;
}

/* ---- expansion ------------------------------------------------------- */

enum xstate { XS_TODO, XS_BUSY, XS_OK, XS_BAD };

/* An error held back: expansion finds them in table order, the user reads
 * them best in file order. */
struct xmsg {
	const char *file;
	unsigned long line;
	size_t filerank, seq;
	char *text;
};

/* One cf_finalize run. Values are expanded on a stack (work): a reference
 * to a parameter not yet done expands that one above the partial value of
 * the referrer, moves the result to done, and pops. Each parameter is
 * expanded once; its result is reused from done. */
struct expander {
	struct cf *cf;
	const char *deffile;
	struct diag *d;
	struct buf work;
	struct buf done;            /* finished values, each NUL-terminated */
	size_t off[P__COUNT], len[P__COUNT];
	unsigned char state[P__COUNT];
	enum param_id stack[EXPAND_DEPTH_MAX + 1]; /* being expanded, outermost first */
	bool looped[P__COUNT];      /* a loop was reported at this parameter */
	unsigned depth;
	struct buf q;               /* scratch for quoting */
	struct xmsg *msgs;          /* errors, emitted sorted at the end */
	size_t nmsgs, capmsgs;
};

static void finalize_one(struct expander *x, enum param_id id);

/* Where the value of id was set: diagnostics about it go there. */
static const char *where(const struct expander *x, enum param_id id, unsigned long *line)
{
	const struct cf_value *v = &x->cf->v[id];

	if (v->raw != NULL && v->file != NULL) {
		*line = v->line;
		return v->file;
	}
	*line = v->raw != NULL ? v->line : 0;
	return x->deffile;
}

static void xerror(struct expander *x, enum param_id owner, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void xerror(struct expander *x, enum param_id owner, const char *fmt, ...)
{
	struct buf b = BUF_INIT;
	struct xmsg *m;
	va_list ap;

	if (x->nmsgs == x->capmsgs) {
		x->capmsgs = x->capmsgs ? 2 * x->capmsgs : 8;
		x->msgs = xreallocarray(x->msgs, x->capmsgs, sizeof *x->msgs);
	}
	m = &x->msgs[x->nmsgs];
	m->file = where(x, owner, &m->line);
	m->seq = x->nmsgs++;
	buf_printf(&b, "%s: ", param_table[owner].name);
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	m->text = buf_steal(&b);
}

/* Files in the order they first appear; within a file by line (0, the
 * table's defaults, first); then in the order found. */
static int xmsg_cmp(const void *pa, const void *pb)
{
	const struct xmsg *a = pa, *b = pb;

	if (a->filerank != b->filerank)
		return a->filerank < b->filerank ? -1 : 1;
	if (a->line != b->line)
		return a->line < b->line ? -1 : 1;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void emit_errors(struct expander *x)
{
	for (size_t i = 0; i < x->nmsgs; i++) {
		size_t r = 0;
		/* Few distinct files: a linear search is fine. */
		while (x->msgs[r].file != x->msgs[i].file && strcmp(x->msgs[r].file, x->msgs[i].file))
			r++;
		x->msgs[i].filerank = r;
	}
	if (x->nmsgs > 1)
		qsort(x->msgs, x->nmsgs, sizeof *x->msgs, xmsg_cmp);
	for (size_t i = 0; i < x->nmsgs; i++) {
		diag_error(x->d, x->msgs[i].file, x->msgs[i].line, "%s", x->msgs[i].text);
		free(x->msgs[i].text);
	}
	free(x->msgs);
}

/* loop_error: id is already being expanded, so the stack from id to its
 * top is a loop. It is reported once, at the first parameter of the loop
 * that has a value of its own (a default rarely is the mistake), naming the
 * parameter it refers to next. */
static void loop_error(struct expander *x, enum param_id id)
{
	unsigned k = 0, j;

	while (k < x->depth && x->stack[k] != id)
		k++;
	for (j = k; j < x->depth && x->cf->v[x->stack[j]].raw == NULL; j++)
		;
	if (j == x->depth) /* all defaults: a bug in the table */
		j = k;
	enum param_id next = j + 1 < x->depth ? x->stack[j + 1] : id;
	if (x->looped[x->stack[j]]) /* "$a $a" closes the same loop twice */
		return;
	x->looped[x->stack[j]] = true;
	xerror(x, x->stack[j], "recursive expansion of $%s", param_table[next].name);
}

/* resolve: the expanded value of id, expanding it first if needed. *ok
 * becomes false when id is in error: the referrer then skips its own type
 * check, so one mistake gives one message. */
static const char *resolve(struct expander *x, enum param_id owner, enum param_id id,
			   size_t *len, bool *ok)
{
	*len = 0;
	if (x->state[id] == XS_BUSY) {
		loop_error(x, id);
		*ok = false;
		return "";
	}
	if (x->state[id] == XS_TODO) {
		if (x->depth >= EXPAND_DEPTH_MAX) {
			xerror(x, owner, "expansion of $%s nested too deeply (more than %d levels)",
			       param_table[id].name, EXPAND_DEPTH_MAX);
			*ok = false;
			return "";
		}
		finalize_one(x, id);
	}
	if (x->state[id] == XS_BAD)
		*ok = false;
	*len = x->len[id];
	return buf_cstr(&x->done) + x->off[id];
}

static int lookup_ref(struct expander *x, enum param_id owner, const char *name,
		      size_t n, bool *ok)
{
	int id = param_lookup(name, n);

	if (id < 0) {
		xerror(x, owner, "undefined parameter $%.*s", (int)(n < 200 ? n : 200), name);
		*ok = false;
	}
	return id;
}

/* ref: $name. With emit false (the unused branch of ${a?b}) the name is
 * only checked, not expanded, so an unused branch never forms a loop. */
static void ref(struct expander *x, enum param_id owner, const char *name, size_t n,
		bool emit, bool *ok)
{
	int id = lookup_ref(x, owner, name, n, ok);
	size_t len;

	if (id < 0 || !emit)
		return;
	const char *v = resolve(x, owner, (enum param_id)id, &len, ok);
	buf_append(&x->work, v, len);
}

static bool expand(struct expander *x, enum param_id owner, const char *s, size_t n,
		   bool emit);

/* ${name?text} / ${name:text}: text (expanded) when name's value is
 * non-empty / empty. The text is checked even when it is not used. */
static void cond(struct expander *x, enum param_id owner, const char *name, size_t nlen,
		 bool if_set, const char *text, size_t tlen, bool emit, bool *ok)
{
	int id = lookup_ref(x, owner, name, nlen, ok);
	bool use = false;

	if (id >= 0 && emit) {
		size_t len;
		resolve(x, owner, (enum param_id)id, &len, ok);
		use = (len > 0) == if_set;
	}
	if (!expand(x, owner, text, tlen, use))
		*ok = false;
}

/* match: index of the close that ends a text begun at from, counting
 * nested open/close pairs; n when there is none. */
static size_t match(const char *s, size_t from, size_t n, char open, char close)
{
	unsigned depth = 0;

	for (size_t k = from; k < n; k++) {
		if (s[k] == open)
			depth++;
		else if (s[k] == close && depth-- == 0)
			return k;
	}
	return n;
}

/* braced: s[i] is '{' or '(' after a '$'. Returns the index after it. */
static size_t braced(struct expander *x, enum param_id owner, const char *s, size_t n,
		     size_t i, bool emit, bool *ok)
{
	char open = s[i], close = open == '{' ? '}' : ')';
	size_t nlen = name_span(s + i + 1, n - i - 1), after = i + 1 + nlen;

	if (nlen > 0 && after < n && s[after] == close) {
		ref(x, owner, s + i + 1, nlen, emit, ok);
		return after + 1;
	}
	if (nlen > 0 && after < n && (s[after] == '?' || s[after] == ':')) {
		size_t end = match(s, after + 1, n, open, close);
		if (end < n) {
			cond(x, owner, s + i + 1, nlen, s[after] == '?', s + after + 1,
			     end - after - 1, emit, ok);
			return end + 1;
		}
	}
	xerror(x, owner, "malformed \"$%c...%c\" in value", open, close);
	*ok = false;
	size_t end = match(s, i + 1, n, open, close);
	return end < n ? end + 1 : n;
}

/* dollar: s[i] is '$'. Returns the index after the expression. */
static size_t dollar(struct expander *x, enum param_id owner, const char *s, size_t n,
		     size_t i, bool emit, bool *ok)
{
	size_t j = i + 1;

	if (j < n && s[j] == '$') {
		if (emit)
			buf_putc(&x->work, '$');
		return j + 1;
	}
	if (j < n && is_name_char(s[j])) {
		size_t nlen = name_span(s + j, n - j);
		ref(x, owner, s + j, nlen, emit, ok);
		return j + nlen;
	}
	if (j < n && (s[j] == '{' || s[j] == '('))
		return braced(x, owner, s, n, j, emit, ok);
	xerror(x, owner, "stray \"$\" in value");
	*ok = false;
	return j;
}

/* expand: s[0..n) onto the work stack (only checked when emit is false).
 * False when the value is in error, here or in a parameter it uses. */
static bool expand(struct expander *x, enum param_id owner, const char *s, size_t n,
		   bool emit)
{
	bool ok = true;
	size_t i = 0;

	while (i < n) {
		const char *d = memchr(s + i, '$', n - i);
		size_t lit = d ? (size_t)(d - (s + i)) : n - i;
		if (emit)
			buf_append(&x->work, s + i, lit);
		i += lit;
		if (i < n)
			i = dollar(x, owner, s, n, i, emit, &ok);
	}
	return ok;
}

/* check: type, bounds and PF_REQUIRED of a value that expanded cleanly. */
static bool check(struct expander *x, enum param_id id)
{
	const char *v = buf_cstr(&x->done) + x->off[id];
	char err[512];

	if (*v == 0 && (param_table[id].flags & PF_REQUIRED)) {
		xerror(x, id, "required parameter is not set");
		return false;
	}
	if (!param_check_value(id, v, &x->cf->num[id], err, sizeof err)) {
		xerror(x, id, "invalid value \"%s\": %s", quote(&x->q, v, x->len[id]), err);
		return false;
	}
	return true;
}

static void finalize_one(struct expander *x, enum param_id id)
{
	const char *raw = x->cf->v[id].raw ? x->cf->v[id].raw : param_table[id].def;
	size_t start = x->work.len;

	x->state[id] = XS_BUSY;
	x->stack[x->depth++] = id;
	bool ok = expand(x, id, raw, strlen(raw), true);
	x->depth--;
	x->off[id] = x->done.len;
	x->len[id] = x->work.len - start;
	buf_append(&x->done, buf_cstr(&x->work) + start, x->len[id]);
	buf_putc(&x->done, 0);
	x->work.len = start; /* pop */
	x->work.data[start] = 0;
	x->state[id] = ok && check(x, id) ? XS_OK : XS_BAD;
}

/* publish: one allocation for all values, in id order so that exp[0] is
 * the block (see exp_release). */
static void publish(struct expander *x)
{
	char *block = xmalloc(x->done.len);
	size_t o = 0;

	for (size_t i = 0; i < P__COUNT; i++) {
		x->cf->exp[i] = block + o;
		memcpy(block + o, x->done.data + x->off[i], x->len[i] + 1);
		o += x->len[i] + 1;
	}
}

bool cf_finalize(struct cf *cf, const char *file, struct diag *d)
{
	struct expander x = { .cf = cf, .deffile = file ? file : "(defaults)", .d = d };

	exp_release(cf);
	buf_reserve(&x.done, 4096);
	buf_reserve(&x.work, 1024);
	for (size_t i = 0; i < P__COUNT; i++)
		if (x.state[i] == XS_TODO)
			finalize_one(&x, (enum param_id)i);
	publish(&x);
	bool ok = x.nmsgs == 0;
	emit_errors(&x);
	buf_free(&x.work);
	buf_free(&x.done);
	buf_free(&x.q);
	cf->final = true;
	return ok;
}

const char *cf_str(const struct cf *cf, enum param_id id)
{
	return cf->exp[id] ? cf->exp[id] : "";
}

long long cf_num(const struct cf *cf, enum param_id id) { return cf->num[id]; }

bool cf_is_set(const struct cf *cf, enum param_id id) { return cf->v[id].raw != NULL; }

/* ---- the writer ------------------------------------------------------ */

/* A value may be folded only at a single space between two non-blank
 * bytes, and not before a '#': the reader trims the pieces and joins them
 * with one space, and a continuation that starts with '#' is a comment.
 * So any value without leading or trailing white space reads back
 * exactly; a value with no such space stays on one (long) line. */
static bool foldable(const char *value, size_t k)
{
	return value[k] == ' ' && k > 0 && !is_blank(value[k - 1]) &&
	       value[k + 1] != 0 && !is_blank(value[k + 1]) && value[k + 1] != '#';
}

void cf_write_value(struct buf *out, const char *name, const char *value)
{
	size_t col = strlen(name) + 2, k = 0, word;

	buf_puts(out, name);
	buf_puts(out, " =");
	while (value[k]) {
		/* The next word: up to the next place where a fold may go. */
		for (word = k + 1; value[word] && !foldable(value, word); word++)
			;
		size_t n = word - k;
		if (k > 0 && col + 1 + n > FOLD_COLUMNS) {
			buf_puts(out, "\n" FOLD_INDENT);
			col = strlen(FOLD_INDENT);
		} else {
			buf_putc(out, ' ');
			col++;
		}
		buf_append(out, value + k, n);
		col += n;
		k = value[word] ? word + 1 : word;
	}
	buf_putc(out, '\n');
}
