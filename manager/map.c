/* map.c: the map's rules. The walker reads the document element by
 * element, reports every problem with its line in one run, and builds the
 * list of instances; the RELAX NG schema runs afterwards as a backstop,
 * so its terser messages appear only for what the walker does not know. */
#include <errno.h>
#include <libxml/tree.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "cf.h"
#include "embed.h"
#include "map.h"
#include "util.h"
#include "xmlsafe.h"

#define MAP_NS "urn:vhostmta:map:1"

/* The state of one check: the map being built and the uniqueness tables. */
struct walk {
	struct map *m;
	struct diag *d;
	const char *path;
	struct htab names;       /* instance name -> instance + 1 */
	struct htab hostnames;   /* myhostname -> first instance + 1 */
	struct htab addrs;       /* canonical address -> instance + 1 */
	struct htab domains;     /* domain -> struct map_domain owner + 1 */
	char *default_deliver;
	unsigned long default_deliver_line;
	unsigned defaults_errors;
};

static unsigned long line_of(xmlNodePtr n) { return (unsigned long)xmlGetLineNo(n); }

static bool is_elem(xmlNodePtr n, const char *name)
{
	return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

static const char *attr(xmlNodePtr n, const char *name)
{
	for (xmlAttrPtr a = n->properties; a; a = a->next)
		if (a->ns == NULL && strcmp((const char *)a->name, name) == 0)
			return a->children && a->children->content ?
				(const char *)a->children->content : "";
	return NULL;
}

/* quoted: s as a printable quoted string for a message (static buffer). */
static const char *quoted(const char *s)
{
	static struct buf b;
	buf_reset(&b);
	buf_putc(&b, '"');
	buf_put_printable(&b, s, strnlen(s, 300));
	if (strlen(s) > 300)
		buf_puts(&b, "...");
	buf_putc(&b, '"');
	return buf_cstr(&b);
}

/* check_attrs: every attribute of n is one of allowed (NULL-terminated). */
static void check_attrs(struct walk *w, xmlNodePtr n, const char *const *allowed)
{
	for (xmlAttrPtr a = n->properties; a; a = a->next) {
		bool ok = a->ns == NULL;
		for (const char *const *p = allowed; ok && *p; p++)
			if (strcmp((const char *)a->name, *p) == 0)
				break;
			else if (p[1] == NULL)
				ok = false;
		if (allowed[0] == NULL)
			ok = false;
		if (!ok)
			diag_error(w->d, w->path, line_of(n), "unknown attribute %s on <%s>",
				   quoted((const char *)a->name), n->name);
	}
}

/* check_text: n may hold only white space, comments and the allowed elements. */
static bool is_blank(const char *s)
{
	for (; s && *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
			return false;
	return true;
}

static bool skippable(struct walk *w, xmlNodePtr c, xmlNodePtr parent)
{
	if (c->type == XML_COMMENT_NODE || c->type == XML_PI_NODE)
		return true;
	if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
		if (!is_blank((const char *)c->content))
			diag_error(w->d, w->path, line_of(c), "unexpected text in <%s>", parent->name);
		return true;
	}
	if (c->type != XML_ELEMENT_NODE)
		return true;
	if (c->ns == NULL || strcmp((const char *)c->ns->href, MAP_NS) != 0) {
		diag_error(w->d, w->path, line_of(c), "element <%s> is not in the map namespace %s",
			   c->name, MAP_NS);
		return true;
	}
	return false;
}

static void no_children(struct walk *w, xmlNodePtr n)
{
	for (xmlNodePtr c = n->children; c; c = c->next)
		if (!skippable(w, c, n))
			diag_error(w->d, w->path, line_of(c), "unexpected element <%s> in <%s>",
				   c->name, n->name);
}

/* read_param: one <param name= value=> into the list *ps. */
static void read_param(struct walk *w, xmlNodePtr n, struct map_param **ps, size_t *np,
		       const char *where)
{
	static const char *const allowed[] = { "name", "value", NULL };
	const char *name = attr(n, "name"), *value = attr(n, "value");
	unsigned long line = line_of(n);

	check_attrs(w, n, allowed);
	no_children(w, n);
	if (name == NULL || value == NULL) {
		diag_error(w->d, w->path, line, "<param> needs a name and a value attribute");
		return;
	}
	int id = param_lookup(name, strlen(name));
	if (id < 0) {
		diag_error(w->d, w->path, line, "unknown parameter %s", quoted(name));
		return;
	}
	unsigned flags = param_table[id].flags;
	if (flags & PF_IDENTITY) {
		diag_error(w->d, w->path, line,
			   "parameter %s comes from the <instance> attributes and addresses, not from <param>",
			   name);
		return;
	}
	if (flags & PF_MANAGER) {
		diag_error(w->d, w->path, line, "parameter %s is written by vhostmta, not set in the map",
			   name);
		return;
	}
	for (size_t i = 0; i < *np; i++) {
		if ((*ps)[i].id == (enum param_id)id) {
			diag_error(w->d, w->path, line, "parameter %s is set twice in %s (first at line %lu)",
				   name, where, (*ps)[i].line);
			return;
		}
	}
	*ps = xreallocarray(*ps, *np + 1, sizeof **ps);
	(*ps)[(*np)++] = (struct map_param){ (enum param_id)id, xstrdup(value), line };
}

/* check_deliver: a next hop attribute; canonical form into *out. */
static bool check_deliver(struct walk *w, const char *value, unsigned long line,
			  const char *what, char **out)
{
	struct nexthop nh;
	char err[200];

	if (!nexthop_parse(value, NH_SMTP, &nh, err, sizeof err)) {
		diag_error(w->d, w->path, line, "invalid deliver %s for %s: %s", quoted(value), what, err);
		return false;
	}
	struct buf b = BUF_INIT;
	nexthop_format(&nh, &b);
	*out = buf_steal(&b);
	return true;
}

static void read_defaults(struct walk *w, xmlNodePtr n)
{
	static const char *const allowed[] = { "deliver", "backend", NULL };
	const char *deliver = attr(n, "deliver"), *backend = attr(n, "backend");
	unsigned before = w->d->errors;

	check_attrs(w, n, allowed);
	if (backend && !backend_parse(backend, &w->m->backend))
		diag_error(w->d, w->path, line_of(n), "unknown backend %s: vhostmta or postfix",
			   quoted(backend));
	if (deliver && strcmp(deliver, "none") != 0) { /* "none": as on <instance> */
		w->default_deliver_line = line_of(n);
		check_deliver(w, deliver, line_of(n), "<defaults>", &w->default_deliver);
	}
	for (xmlNodePtr c = n->children; c; c = c->next) {
		if (skippable(w, c, n))
			continue;
		if (is_elem(c, "param"))
			read_param(w, c, &w->m->defaults, &w->m->ndefaults, "<defaults>");
		else
			diag_error(w->d, w->path, line_of(c), "unexpected element <%s> in <defaults>",
				   c->name);
	}
	w->defaults_errors = w->d->errors - before;
}

static char *lower(const char *s)
{
	char *p = xstrdup(s);
	for (char *q = p; *q; q++)
		*q = ascii_tolower(*q);
	return p;
}

static bool is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

/* trimmed: a copy of s without surrounding XML white space. */
static char *trimmed(const char *s)
{
	const char *e;

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	for (e = s + strlen(s); e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r');)
		e--;
	return xstrndup(s, (size_t)(e - s));
}

static const char *instance_label(const struct map_instance *in)
{
	return in->name ? in->name : in->myhostname ? in->myhostname : "?";
}

/* add_address: at most one IPv4 and one IPv6 per instance, each address
 * in one instance only. */
static void add_address(struct walk *w, struct map_instance *in, const struct ipaddr *a,
			unsigned long line)
{
	const char *fam = a->family == AF_INET ? "IPv4" : "IPv6";

	for (size_t i = 0; i < in->naddrs; i++) {
		if (ipaddr_equal(&in->addrs[i], a)) {
			diag_error(w->d, w->path, line, "address %s is listed twice in this instance",
				   in->addr_text[i]);
			return;
		}
		if (in->addrs[i].family == a->family) {
			diag_error(w->d, w->path, line,
				   "a second %s address: an instance has at most one IPv4 and one IPv6 address",
				   fam);
			return;
		}
	}
	if (in->naddrs == 2)
		return;
	size_t k = in->naddrs++;
	in->addrs[k] = *a;
	in->addr_line[k] = line;
	ipaddr_format(a, in->addr_text[k]);
	void *prev = htab_insert(&w->addrs, in->addr_text[k], (void *)(in - w->m->inst + 1));
	if (prev) {
		const struct map_instance *o = &w->m->inst[(size_t)prev - 1];
		diag_error(w->d, w->path, line, "address %s is also used by instance \"%s\" (line %lu)",
			   in->addr_text[k], instance_label(o), o->line);
	}
}

static void read_address(struct walk *w, struct map_instance *in, xmlNodePtr n)
{
	unsigned long line = line_of(n);
	xmlChar *content = xmlNodeGetContent(n);
	char *s = trimmed((const char *)content);
	struct ipaddr a;

	xmlFree(content);
	check_attrs(w, n, (const char *const[]){ NULL });
	for (xmlNodePtr c = n->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE)
			diag_error(w->d, w->path, line_of(c), "unexpected element <%s> in <address>", c->name);
	if (*s == 0)
		diag_error(w->d, w->path, line, "empty <address>");
	else if (!ipaddr_parse(s, strlen(s), &a))
		diag_error(w->d, w->path, line, "invalid address %s", quoted(s));
	else if (ipaddr_is_v4mapped(&a))
		diag_error(w->d, w->path, line, "address %s is IPv4-mapped: write it as IPv4", quoted(s));
	else if (ipaddr_is_unspecified(&a))
		diag_error(w->d, w->path, line, "address %s is unspecified: give the instance's own address",
			   quoted(s));
	else if (ipaddr_is_multicast(&a) || ipaddr_is_broadcast(&a))
		diag_error(w->d, w->path, line, "address %s is %s, not a host address", quoted(s),
			   ipaddr_is_multicast(&a) ? "multicast" : "broadcast");
	else
		add_address(w, in, &a, line);
	free(s);
}

static void read_domain(struct walk *w, struct map_instance *in, xmlNodePtr n,
			const char *inst_deliver)
{
	static const char *const allowed[] = { "name", "deliver", NULL };
	const char *name = attr(n, "name"), *deliver = attr(n, "deliver");
	unsigned long line = line_of(n);
	struct map_domain dom = { NULL, NULL, line };

	check_attrs(w, n, allowed);
	no_children(w, n);
	if (name == NULL) {
		diag_error(w->d, w->path, line, "<domain> needs a name attribute");
		return;
	}
	if (!is_ascii(name)) {
		diag_error(w->d, w->path, line, "domain %s is not ASCII: write its A-label (xn--...)",
			   quoted(name));
		return;
	}
	if (!hostname_valid(name, strlen(name), true)) {
		diag_error(w->d, w->path, line, "invalid domain name %s", quoted(name));
		return;
	}
	if (deliver == NULL && inst_deliver && strcmp(inst_deliver, "none") != 0) {
		dom.deliver = xstrdup(inst_deliver);
	} else if (deliver && strcmp(deliver, "none") != 0) {
		/* A copy: check_deliver quotes the value in quoted()'s buffer. */
		char *what = xstrdup(quoted(name));
		bool ok = check_deliver(w, deliver, line, what, &dom.deliver);
		free(what);
		if (!ok)
			return;
	}
	dom.name = lower(name);
	in->domains = xreallocarray(in->domains, in->ndomains + 1, sizeof *in->domains);
	in->domains[in->ndomains++] = dom;
}

/* register_domains: after all instances are read (the arrays no longer
 * move), each domain is hosted by one instance only. */
static void register_domains(struct walk *w)
{
	for (size_t i = 0; i < w->m->n; i++) {
		struct map_instance *in = &w->m->inst[i];
		for (size_t j = 0; j < in->ndomains; j++) {
			struct map_domain *dom = &in->domains[j];
			void *prev = htab_insert(&w->domains, dom->name, (void *)(i + 1));
			if (prev == NULL)
				continue;
			const struct map_instance *o = &w->m->inst[(size_t)prev - 1];
			if (o == in)
				diag_error(w->d, w->path, dom->line, "domain %s is listed twice in this instance",
					   dom->name);
			else
				diag_error(w->d, w->path, dom->line,
					   "domain %s is also hosted by instance \"%s\" (line %lu)",
					   dom->name, instance_label(o), o->line);
		}
		w->m->ndomains += in->ndomains;
	}
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* check_name: a name is a directory under render's output and a systemd
 * instance string: it starts with a letter or digit, and the name of the
 * host address table is taken. */
static void check_name(struct walk *w, struct map_instance *in, const char *name, bool given)
{
	size_t n = strlen(name);
	bool ok = n > 0 && n <= MAP_NAME_MAX && name[0] != '.' && name[0] != '_' && name[0] != '-';

	for (const char *p = name; ok && *p; p++)
		ok = name_char(*p);
	if (!ok && !given) {
		diag_error(w->d, w->path, in->line,
			   "myhostname %s cannot serve as the instance name (at most %d characters): "
			   "add a name attribute", quoted(name), MAP_NAME_MAX);
		return;
	}
	if (!ok) {
		diag_error(w->d, w->path, in->line,
			   "invalid instance name %s: 1 to %d of A-Z a-z 0-9 . _ -, starting with a letter or digit",
			   quoted(name), MAP_NAME_MAX);
		return;
	}
	if (strcmp(name, MAP_HOST_TABLE) == 0) {
		diag_error(w->d, w->path, in->line, "instance name %s is reserved", quoted(name));
		return;
	}
	in->name = xstrdup(name);
	void *prev = htab_insert(&w->names, in->name, (void *)(in - w->m->inst + 1));
	if (prev) {
		const struct map_instance *o = &w->m->inst[(size_t)prev - 1];
		diag_error(w->d, w->path, in->line, "instance name %s is also used at line %lu",
			   quoted(name), o->line);
	}
}

static bool hosts_overlap(const char *a, const char *b)
{
	return a == NULL || b == NULL || ascii_strcasecmp(a, b) == 0;
}

static void check_identity(struct walk *w, struct map_instance *in, xmlNodePtr n)
{
	const char *myhostname = attr(n, "myhostname"), *name = attr(n, "name");
	const char *host = attr(n, "host");

	if (host && !hostname_valid(host, strlen(host), false))
		diag_error(w->d, w->path, in->line, "invalid host %s", quoted(host));
	else if (host)
		in->host = lower(host);
	if (myhostname == NULL) {
		diag_error(w->d, w->path, in->line, "<instance> needs a myhostname attribute");
	} else if (!hostname_valid(myhostname, strlen(myhostname), false)) {
		diag_error(w->d, w->path, in->line, "invalid myhostname %s", quoted(myhostname));
	} else if (!hostname_valid(myhostname, strlen(myhostname), true)) {
		diag_error(w->d, w->path, in->line, "myhostname %s is not a fully qualified domain name",
			   quoted(myhostname));
	} else {
		in->myhostname = lower(myhostname);
	}
	if (name)
		check_name(w, in, name, true);
	else if (in->myhostname)
		check_name(w, in, in->myhostname, false);
}

/* check_hostnames: myhostname unique among the instances of one host
 * (Postfix: instances that share myhostname see false mail loops). */
static void check_hostnames(struct walk *w)
{
	size_t *next = xcalloc(w->m->n, sizeof *next); /* chain of same myhostname */

	for (size_t i = 0; i < w->m->n; i++) {
		struct map_instance *in = &w->m->inst[i];
		if (in->myhostname == NULL)
			continue;
		size_t first = (size_t)htab_insert(&w->hostnames, in->myhostname, (void *)(i + 1));
		if (first == 0)
			continue;
		size_t k = first - 1, last = k;
		for (; ; k = next[k] - 1) {
			const struct map_instance *o = &w->m->inst[k];
			if (hosts_overlap(o->host, in->host)) {
				diag_error(w->d, w->path, in->line,
					   "myhostname %s is also used by instance \"%s\" (line %lu) on the same host",
					   in->myhostname, instance_label(o), o->line);
				break;
			}
			last = k;
			if (next[k] == 0)
				break;
		}
		while (next[last] != 0)
			last = next[last] - 1;
		next[last] = i + 1;
	}
	free(next);
}

static void read_instance(struct walk *w, struct map_instance *in, xmlNodePtr n)
{
	static const char *const allowed[] = { "myhostname", "name", "host", "deliver", NULL };
	const char *deliver = attr(n, "deliver");
	char *inst_deliver = NULL;

	in->line = line_of(n);
	check_attrs(w, n, allowed);
	check_identity(w, in, n);
	/* An instance's deliver is checked once here, not once per domain. */
	if (deliver && strcmp(deliver, "none") != 0)
		check_deliver(w, deliver, in->line, "this <instance>", &inst_deliver);
	if (deliver == NULL)
		deliver = w->default_deliver;
	else if (strcmp(deliver, "none") != 0)
		deliver = inst_deliver;
	for (xmlNodePtr c = n->children; c; c = c->next) {
		if (skippable(w, c, n))
			continue;
		if (is_elem(c, "address"))
			read_address(w, in, c);
		else if (is_elem(c, "domain"))
			read_domain(w, in, c, deliver);
		else if (is_elem(c, "param"))
			read_param(w, c, &in->params, &in->nparams, "this <instance>");
		else
			diag_error(w->d, w->path, line_of(c), "unexpected element <%s> in <instance>",
				   c->name);
	}
	if (in->naddrs == 0)
		diag_error(w->d, w->path, in->line, "instance \"%s\" has no <address>",
			   instance_label(in));
	free(inst_deliver);
}

/* A defaults error is reported once, not once per instance. */
struct param_filter {
	struct diag *d;
	const struct map *m;
	const char *instance; /* NULL: the defaults pass */
	struct seen_error {   /* defaults errors already reported; by line */
		unsigned long line; /* and text, for several <param>s on one line */
		char *msg;
	} *seen;
	size_t nseen;
};

static bool is_defaults_line(const struct map *m, unsigned long line)
{
	for (size_t i = 0; i < m->ndefaults; i++)
		if (m->defaults[i].line == line)
			return true;
	return false;
}

static void filter_sink(void *ctx, enum diag_level level, const char *file, unsigned long line,
			const char *msg)
{
	struct param_filter *f = ctx;
	bool dflt = is_defaults_line(f->m, line);

	if (dflt) {
		for (size_t i = 0; i < f->nseen; i++)
			if (f->seen[i].line == line && strcmp(f->seen[i].msg, msg) == 0)
				return;
		f->seen = xreallocarray(f->seen, f->nseen + 1, sizeof *f->seen);
		f->seen[f->nseen++] = (struct seen_error){ line, xstrdup(msg) };
	}
	if (level == DIAG_WARNING)
		diag_warn(f->d, file, line, "%s", msg);
	else if (dflt && f->instance)
		diag_error(f->d, file, line, "%s (in instance \"%s\")", msg, f->instance);
	else
		diag_error(f->d, file, line, "%s", msg);
}

/* check_bind: smtp_bind_address(6) must not be another instance's address. */
static void check_bind(struct walk *w, const struct map_instance *in, const struct cf *cf,
		       enum param_id id)
{
	const char *v = cf_str(cf, id);
	struct ipaddr a;
	char text[IPADDR_STRLEN];

	if (*v == 0 || !ipaddr_parse(v, strlen(v), &a) || ipaddr_is_unspecified(&a))
		return;
	size_t owner = (size_t)htab_get(&w->addrs, ipaddr_format(&a, text));
	if (owner == 0 || &w->m->inst[owner - 1] == in)
		return;
	const struct map_instance *o = &w->m->inst[owner - 1];
	diag_error(w->d, w->path, cf->v[id].line ? cf->v[id].line : in->line,
		   "%s %s is the address of instance \"%s\" (line %lu)%s%s%s",
		   param_table[id].name, text, instance_label(o), o->line,
		   in->name ? " (in instance \"" : "", in->name ? in->name : "",
		   in->name ? "\")" : "");
}

/* check_tls: STARTTLS needs a certificate; "encrypt" without one could
 * not start, "may" without one would just not offer STARTTLS. Files that
 * cannot be read here are warnings only: the map may be checked on
 * another machine than the one that runs the instance. */
static void check_tls(struct walk *w, const struct map_instance *in, const struct cf *cf)
{
	const char *level = cf_str(cf, P_smtpd_tls_security_level);
	unsigned long line = cf->v[P_smtpd_tls_security_level].line;
	bool encrypt = strcmp(level, "encrypt") == 0;

	if (strcmp(level, "none") == 0)
		return;
	if (*cf_str(cf, P_smtpd_tls_cert_file) == 0) {
		if (encrypt)
			diag_error(w->d, w->path, line ? line : in->line,
				   "smtpd_tls_security_level = encrypt needs smtpd_tls_cert_file (instance \"%s\")",
				   instance_label(in));
		else
			diag_warn(w->d, w->path, line ? line : in->line,
				  "smtpd_tls_security_level = %s without smtpd_tls_cert_file: STARTTLS will not be offered (instance \"%s\")",
				  level, instance_label(in));
		return;
	}
	static const enum param_id files[] = { P_smtpd_tls_cert_file, P_smtpd_tls_key_file };
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		const char *f = cf_str(cf, files[i]);
		unsigned long fl = cf->v[files[i]].line;
		if (i > 0 && strcmp(f, cf_str(cf, files[0])) == 0)
			break; /* the key is in the certificate's file */
		if (*f && access(f, R_OK) != 0)
			diag_warn(w->d, w->path, fl ? fl : in->line, "%s %s: %s (instance \"%s\")",
				  param_table[files[i]].name, f, strerror(errno), instance_label(in));
	}
}

/* check_params: every parameter of every instance, expanded and checked
 * by type exactly as the instance will read it. */
static void check_params(struct walk *w, struct param_filter *f, struct map_instance *in)
{
	struct cf cf;
	struct buf ifaces = BUF_INIT;
	struct diag fd = { filter_sink, f, 0, 0 };

	cf_init(&cf);
	for (size_t i = 0; i < w->m->ndefaults; i++)
		cf_set_id(&cf, w->m->defaults[i].id, w->m->defaults[i].value, w->path,
			  w->m->defaults[i].line);
	if (in) {
		for (size_t i = 0; i < in->nparams; i++)
			cf_set_id(&cf, in->params[i].id, in->params[i].value, w->path, in->params[i].line);
		map_inet_interfaces(in, &ifaces);
	}
	/* Broken identity was reported already: stand-ins let the other
	 * parameters be checked in the same run. */
	cf_set_id(&cf, P_myhostname, in && in->myhostname ? in->myhostname : "stand-in.invalid",
		  w->path, in ? in->line : 0);
	cf_set_id(&cf, P_instance_name, in && in->name ? in->name : "stand-in", w->path,
		  in ? in->line : 0);
	cf_set_id(&cf, P_inet_interfaces, ifaces.len ? buf_cstr(&ifaces) : "192.0.2.1", w->path,
		  in ? in->line : 0);
	f->instance = in ? instance_label(in) : NULL;
	cf_finalize(&cf, w->path, &fd);
	if (in && fd.errors == 0) {
		check_bind(w, in, &cf, P_smtp_bind_address);
		check_bind(w, in, &cf, P_smtp_bind_address6);
		check_tls(w, in, &cf);
	}
	cf_free(&cf);
	buf_free(&ifaces);
}

static size_t count_instances(xmlNodePtr root)
{
	size_t n = 0;
	for (xmlNodePtr c = root->children; c; c = c->next)
		n += is_elem(c, "instance");
	return n;
}

static void walk_root(struct walk *w, xmlNodePtr root)
{
	bool seen_defaults = false, seen_instance = false;

	if (!is_elem(root, "map")) {
		diag_error(w->d, w->path, line_of(root), "the root element is <%s>, not <map>", root->name);
		return;
	}
	if (root->ns == NULL || strcmp((const char *)root->ns->href, MAP_NS) != 0) {
		diag_error(w->d, w->path, line_of(root), "<map> must be in the namespace %s (xmlns=\"%s\")",
			   MAP_NS, MAP_NS);
		return;
	}
	check_attrs(w, root, (const char *const[]){ NULL });
	w->m->inst = xcalloc(count_instances(root), sizeof *w->m->inst);
	for (xmlNodePtr c = root->children; c; c = c->next) {
		if (skippable(w, c, root))
			continue;
		if (is_elem(c, "defaults")) {
			if (seen_defaults || seen_instance)
				diag_error(w->d, w->path, line_of(c),
					   "<defaults> must come once, before the first <instance>");
			else
				read_defaults(w, c);
			seen_defaults = true;
		} else if (is_elem(c, "instance")) {
			seen_instance = true;
			read_instance(w, &w->m->inst[w->m->n++], c);
		} else {
			diag_error(w->d, w->path, line_of(c), "unexpected element <%s> in <map>", c->name);
		}
	}
}

static void silent(void *ctx, const char *fmt, ...) {}

bool map_load(struct map *m, const char *path, struct diag *d)
{
	struct walk w = { .m = m, .d = d, .path = path };
	unsigned before = d->errors;

	memset(m, 0, sizeof *m);
	m->path = xstrdup(path);
	w.path = m->path;
	xmlSetGenericErrorFunc(NULL, silent);
	xmlDocPtr doc = xmlsafe_read(path, MAP_MAX_SIZE, MAP_MAX_DEPTH, d);
	if (doc == NULL)
		return false;
	htab_init(&w.names, false);
	htab_init(&w.hostnames, true);
	htab_init(&w.addrs, false);
	htab_init(&w.domains, true);

	walk_root(&w, xmlDocGetRootElement(doc));
	register_domains(&w);
	check_hostnames(&w);
	struct param_filter f = { d, m, NULL, NULL, 0 };
	check_params(&w, &f, NULL);
	for (size_t i = 0; i < m->n; i++)
		check_params(&w, &f, &m->inst[i]);
	for (size_t i = 0; i < f.nseen; i++)
		free(f.seen[i].msg);
	free(f.seen);
	if (d->errors == before)
		xmlsafe_validate(doc, path, embed_map_rng, embed_map_rng_len, d);

	free(w.default_deliver);
	htab_free(&w.names);
	htab_free(&w.hostnames);
	htab_free(&w.addrs);
	htab_free(&w.domains);
	xmlFreeDoc(doc);
	return d->errors == before;
}

static void free_params(struct map_param *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(p[i].value);
	free(p);
}

void map_free(struct map *m)
{
	for (size_t i = 0; i < m->n; i++) {
		struct map_instance *in = &m->inst[i];
		for (size_t j = 0; j < in->ndomains; j++) {
			free(in->domains[j].name);
			free(in->domains[j].deliver);
		}
		free(in->domains);
		free_params(in->params, in->nparams);
		free(in->name);
		free(in->myhostname);
		free(in->host);
	}
	free(m->inst);
	free_params(m->defaults, m->ndefaults);
	free(m->path);
	memset(m, 0, sizeof *m);
}

bool backend_parse(const char *s, enum backend *out)
{
	if (strcmp(s, "vhostmta") == 0)
		*out = BACKEND_VHOSTMTA;
	else if (strcmp(s, "postfix") == 0)
		*out = BACKEND_POSTFIX;
	else
		return false;
	return true;
}

const char *backend_name(enum backend b) { return b == BACKEND_POSTFIX ? "postfix" : "vhostmta"; }

bool map_on_host(const struct map_instance *in, const char *host)
{
	return host == NULL || in->host == NULL || ascii_strcasecmp(in->host, host) == 0;
}

void map_inet_interfaces(const struct map_instance *in, struct buf *out)
{
	for (size_t i = 0; i < in->naddrs; i++)
		buf_printf(out, "%s%s", i ? " " : "", in->addr_text[i]);
}
