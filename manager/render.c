/* render.c: map -> per-instance configuration directories, for either
 * backend. Writes are atomic (temporary file + rename), grouped under one
 * syncfs, and skipped when the content is unchanged, so a re-render of an
 * unchanged map writes nothing and keeps every mtime. Comparing the old
 * and new files also tells what each instance needs: a start, a restart
 * (its listeners changed) or a reload. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "cf.h"
#include "embed.h"
#include "log.h"
#include "render.h"
#include "util.h"

#define MAX_FILES 3

/* One file of an instance, rendered in memory. */
struct rfile {
	const char *name;
	struct buf text;
	bool restart; /* any change to it re-creates the listeners */
};

/* A file to be renamed into place once every temporary file is flushed. */
struct pending {
	char *tmp, *final; /* relative to the output directory */
};

struct out {
	const struct map *m;
	const struct render_opts *o;
	int dirfd;
	char abs[PATH_MAX]; /* the output directory, absolute */
	struct pending *p;
	size_t np;
	struct render_stats *st;
	bool failed;
};

struct backend_ops {
	const char *primary; /* the file that marks a directory as ours */
	const char *const *files; /* every file render may write in a directory */
	bool host_table;     /* write the host address table */
	void (*render)(struct out *o, const struct map_instance *in, struct rfile *f, size_t *n);
};

static const char *param_value(const struct map *m, const struct map_instance *in,
			       enum param_id id)
{
	for (size_t i = 0; i < in->nparams; i++)
		if (in->params[i].id == id)
			return in->params[i].value;
	for (size_t i = 0; i < m->ndefaults; i++)
		if (m->defaults[i].id == id)
			return m->defaults[i].value;
	return NULL;
}

/* The map's parameters of this instance, defaults overridden by its own,
 * in table order so the output is stable; skip: flags to leave out. */
static void put_params(const struct map *m, const struct map_instance *in, unsigned skip,
		       struct buf *out)
{
	for (int id = 0; id < P__COUNT; id++) {
		const char *v = param_value(m, in, (enum param_id)id);
		if (v && !(param_table[id].flags & skip))
			cf_write_value(out, param_table[id].name, v);
	}
}

/* A template variable: @KEY@ -> value. */
struct var {
	const char *key;
	const char *value;
};

/* set_by_map: line is "name = ..." for a parameter the map sets, so the
 * map's value replaces the template's line. */
static bool set_by_map(const struct map *m, const struct map_instance *in, const char *line,
		       size_t len)
{
	size_t n = 0;
	while (n < len && (line[n] == '_' || (line[n] >= 'a' && line[n] <= 'z') ||
			   (line[n] >= '0' && line[n] <= '9')))
		n++;
	if (n == 0 || n + 2 > len || line[n] != ' ' || line[n + 1] != '=')
		return false;
	int id = param_lookup(line, n);
	return id >= 0 && param_value(m, in, (enum param_id)id) != NULL;
}

/* expand: the template with @KEY@ replaced from vars and @PARAMS@ by the
 * map's parameters (except those with a flag in skip). */
static void expand(const struct map *m, const struct map_instance *in, const char *tpl,
		   const struct var *vars, unsigned skip, struct buf *out)
{
	while (*tpl) {
		const char *eol = strchr(tpl, '\n');
		size_t len = eol ? (size_t)(eol - tpl + 1) : strlen(tpl);
		if (strncmp(tpl, "@PARAMS@", 8) == 0) {
			put_params(m, in, skip, out);
		} else if (!set_by_map(m, in, tpl, len)) {
			for (const char *p = tpl; p < tpl + len; p++) {
				const char *end = *p == '@' ? memchr(p + 1, '@', (size_t)(tpl + len - p - 1)) : NULL;
				const struct var *v = vars;
				for (; end && v->key; v++)
					if (strlen(v->key) == (size_t)(end - p - 1) &&
					    memcmp(v->key, p + 1, (size_t)(end - p - 1)) == 0)
						break;
				if (end == NULL || v->key == NULL) {
					buf_putc(out, *p);
					continue;
				}
				buf_puts(out, v->value);
				p = end;
			}
		}
		tpl += len;
	}
}

static void render_transport(const struct map *m, const struct map_instance *in, bool postfix,
			     struct buf *out)
{
	buf_printf(out, "%s from %s; do not edit.\n", RENDER_MARKER, m->path);
	buf_printf(out, "# Hosted domains of instance %s and the next hop of their inbound mail%s.\n",
		   in->name, postfix ? " (a Postfix texthash: transport map)" : "");
	for (size_t i = 0; i < in->ndomains; i++) {
		const struct map_domain *d = &in->domains[i];
		if (d->deliver)
			buf_printf(out, "%s\t%s\n", d->name, d->deliver);
		else
			buf_printf(out, "# %s: outbound only\n", d->name);
	}
}

static void render_vhostmta(struct out *o, const struct map_instance *in, struct rfile *f,
			    size_t *n)
{
	char confdir[PATH_MAX + 80], siblings[PATH_MAX + 32], queue[PATH_MAX + 80];
	struct buf ifaces = BUF_INIT;

	snprintf(confdir, sizeof confdir, "%s/%s", o->abs, in->name);
	snprintf(siblings, sizeof siblings, "%s/%s", o->abs, RENDER_SIBLINGS);
	snprintf(queue, sizeof queue, "%s/%s", o->o->state_dir ? o->o->state_dir : RENDER_VHOSTMTA_STATE,
		 in->name);
	map_inet_interfaces(in, &ifaces);
	const struct var vars[] = {
		{ "MAP", o->m->path }, { "NAME", in->name }, { "MYHOSTNAME", in->myhostname },
		{ "INET_INTERFACES", buf_cstr(&ifaces) }, { "CONFIG_DIRECTORY", confdir },
		{ "SIBLING_TABLE", siblings }, { "QUEUE_DIRECTORY", queue }, { NULL, NULL },
	};
	f[0].name = "instance.cf";
	expand(o->m, in, embed_instance_cf_in, vars, 0, &f[0].text);
	f[1].name = "transport";
	render_transport(o->m, in, false, &f[1].text);
	*n = 2;
	buf_free(&ifaces);
}

static const char *inet_protocols(const struct map_instance *in)
{
	bool v4 = false, v6 = false;
	for (size_t i = 0; i < in->naddrs; i++)
		*(in->addrs[i].family == AF_INET ? &v4 : &v6) = true;
	return v4 && v6 ? "all" : v6 ? "ipv6" : "ipv4";
}

/* relay_domains: the domains whose inbound mail the instance accepts. */
static void relay_domains(const struct map_instance *in, struct buf *out)
{
	for (size_t i = 0; i < in->ndomains; i++)
		if (in->domains[i].deliver)
			buf_printf(out, "%s%s", out->len ? " " : "", in->domains[i].name);
}

/* ensure_queue: Postfix will not start without its queue_directory. */
static void ensure_queue(const char *state)
{
	char path[PATH_MAX + 96];
	const char *p = state;

	snprintf(path, sizeof path, "%s/queue", state);
	while ((p = strchr(p + 1, '/')) != NULL) {
		char parent[PATH_MAX + 80];
		snprintf(parent, sizeof parent, "%.*s", (int)(p - state), state);
		mkdir(parent, 0755);
	}
	mkdir(state, 0755);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		msg_warn("%s: cannot create the Postfix queue directory: %s", path, strerror(errno));
}

/* lmtp_identity: the lmtp_* twins of the map's smtp_* identity values. */
static void lmtp_identity(const struct map *m, const struct map_instance *in, struct buf *out)
{
	static const struct {
		enum param_id smtp;
		const char *lmtp;
	} twins[] = {
		{ P_smtp_bind_address, "lmtp_bind_address" },
		{ P_smtp_bind_address6, "lmtp_bind_address6" },
		{ P_smtp_helo_name, "lmtp_lhlo_name" },
	};
	for (size_t i = 0; i < ARRAY_LEN(twins); i++) {
		const char *v = param_value(m, in, twins[i].smtp);
		if (v)
			buf_printf(out, "%s%s = %s", out->len ? "\n" : "", twins[i].lmtp, v);
	}
}

static void render_postfix(struct out *o, const struct map_instance *in, struct rfile *f,
			   size_t *n)
{
	char confdir[PATH_MAX + 80], state[PATH_MAX + 80], port[16];
	struct buf ifaces = BUF_INIT, relay = BUF_INIT, lmtp = BUF_INIT;
	const char *listen = param_value(o->m, in, P_smtpd_listen_port);

	snprintf(confdir, sizeof confdir, "%s/%s", o->abs, in->name);
	snprintf(state, sizeof state, "%s/%s", o->o->state_dir ? o->o->state_dir : RENDER_POSTFIX_STATE,
		 in->name);
	snprintf(port, sizeof port, "%-13s", listen && strcmp(listen, "25") != 0 ? listen : "smtp");
	map_inet_interfaces(in, &ifaces);
	relay_domains(in, &relay);
	lmtp_identity(o->m, in, &lmtp);
	const struct var vars[] = {
		{ "MAP", o->m->path }, { "NAME", in->name }, { "MYHOSTNAME", in->myhostname },
		{ "INET_INTERFACES", buf_cstr(&ifaces) }, { "INET_PROTOCOLS", inet_protocols(in) },
		{ "CONFIG_DIRECTORY", confdir }, { "STATE_DIRECTORY", state },
		{ "RELAY_DOMAINS", buf_cstr(&relay) }, { "SMTPD_SERVICE", port },
		{ "LMTP", buf_cstr(&lmtp) }, { NULL, NULL },
	};
	f[0].name = "main.cf";
	expand(o->m, in, embed_main_cf_in, vars, PF_OWN, &f[0].text);
	f[1].name = "master.cf";
	f[1].restart = true;
	expand(o->m, in, embed_master_cf_in, vars, PF_OWN, &f[1].text);
	f[2].name = "transport";
	render_transport(o->m, in, true, &f[2].text);
	*n = 3;
	ensure_queue(state);
	buf_free(&ifaces);
	buf_free(&relay);
	buf_free(&lmtp);
}

static const char *const vhostmta_files[] = { "instance.cf", "transport", NULL };
static const char *const postfix_files[] = { "main.cf", "master.cf", "transport", NULL };

static const struct backend_ops backends[] = {
	[BACKEND_VHOSTMTA] = { "instance.cf", vhostmta_files, true, render_vhostmta },
	[BACKEND_POSTFIX] = { "main.cf", postfix_files, false, render_postfix },
};

/* read_file_at: the whole regular file dirfd/path into b; false if absent. */
static bool read_file_at(int dirfd, const char *path, struct buf *b)
{
	struct stat st;
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	bool ok = false;

	buf_reset(b);
	if (fd < 0)
		return false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < (1 << 24)) {
		buf_reserve(b, (size_t)st.st_size);
		ssize_t r;
		while ((r = read(fd, b->data + b->len, (size_t)st.st_size + 1 - b->len)) > 0 ||
		       (r < 0 && errno == EINTR))
			b->len += r > 0 ? (size_t)r : 0;
		b->data[b->len] = 0;
		ok = r == 0;
	}
	close(fd);
	return ok;
}

/* significant: text without its comment lines; what the instance reads. */
static void significant(const char *text, struct buf *out)
{
	buf_reset(out);
	for (const char *p = text; *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p + 1) : strlen(p);
		if (*p != '#')
			buf_append(out, p, len);
		p += len;
	}
}

/* restart_lines: the logical lines of text that set a parameter whose
 * change needs the listeners re-created, concatenated. */
static void restart_lines(const char *text, struct buf *out)
{
	bool keep = false;

	buf_reset(out);
	for (const char *p = text; *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p + 1) : strlen(p);
		if (*p != ' ' && *p != '\t') {
			size_t n = strcspn(p, " =\t\n");
			int id = param_lookup(p, n);
			keep = id >= 0 && (param_table[id].flags & PF_RESTART);
		}
		if (keep)
			buf_append(out, p, len);
		p += len;
	}
}

static bool buf_equal(const struct buf *a, const struct buf *b)
{
	return a->len == b->len && memcmp(buf_cstr(a), buf_cstr(b), a->len) == 0;
}

static bool write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* stage: write text to a temporary beside dir/file and queue the rename. */
static void stage(struct out *o, const char *dir, const char *file, const struct buf *text)
{
	char path[PATH_MAX], tmp[PATH_MAX];

	snprintf(path, sizeof path, "%s%s%s", dir, *dir ? "/" : "", file);
	snprintf(tmp, sizeof tmp, "%s%s.%s.tmp", dir, *dir ? "/" : "", file);
	int fd = openat(o->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || !write_all(fd, buf_cstr(text), text->len) || close(fd) != 0) {
		msg_error("%s/%s: cannot write: %s", o->o->outdir, tmp, strerror(errno));
		if (fd >= 0)
			unlinkat(o->dirfd, tmp, 0);
		o->failed = true;
		return;
	}
	o->p = xreallocarray(o->p, o->np + 1, sizeof *o->p);
	o->p[o->np++] = (struct pending){ xstrdup(tmp), xstrdup(path) };
}

static void note(struct render_stats *st, const char *name, enum render_change c)
{
	st->items = xreallocarray(st->items, st->nitems + 1, sizeof *st->items);
	struct render_item *it = &st->items[st->nitems++];
	snprintf(it->name, sizeof it->name, "%s", name);
	it->change = c;
}

/* newer: a is later than b. */
static bool newer(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

/* tls_renewed: a certificate, key or CA file that the rendered
 * configuration names has changed since that configuration was written
 * (a renewal): the instance must read it again. The configuration file's
 * own time is the mark; staging it again moves the mark. */
static bool tls_renewed(struct out *o, const char *name, const struct rfile *f)
{
	static const char *const params[] = { "smtpd_tls_cert_file", "smtpd_tls_key_file",
					      "smtp_tls_CAfile" };
	char path[PATH_MAX];
	struct stat conf, st;
	const char *p = buf_cstr(&f->text);

	snprintf(path, sizeof path, "%s/%s", name, f->name);
	if (fstatat(o->dirfd, path, &conf, 0) != 0)
		return false;
	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		for (size_t i = 0; i < ARRAY_LEN(params); i++) {
			size_t k = strlen(params[i]);
			if (len <= k + 3 || strncmp(p, params[i], k) != 0 || strncmp(p + k, " = /", 4) != 0)
				continue;
			char file[PATH_MAX];
			snprintf(file, sizeof file, "%.*s", (int)(len - k - 3), p + k + 3);
			if (stat(file, &st) == 0 &&
			    (newer(&st.st_mtim, &conf.st_mtim) || newer(&st.st_ctim, &conf.st_mtim)))
				return true;
		}
		p += len + (eol != NULL);
	}
	return false;
}

/* stage_instance: stage the files that changed and note what the instance
 * needs. A change in comments only (the map's path in a header) is
 * written but needs nothing. In a directory created just now there is
 * nothing to compare. */
static void stage_instance(struct out *o, const char *name, struct rfile *f, size_t n, bool fresh)
{
	struct buf old = BUF_INIT, a = BUF_INIT, b = BUF_INIT;
	bool changed = false, restart = false, is_new = fresh;

	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/%s", name, f[i].name);
		bool exists = !fresh && read_file_at(o->dirfd, path, &old);
		if (exists && buf_equal(&old, &f[i].text)) {
			o->st->unchanged++;
			continue;
		}
		stage(o, name, f[i].name, &f[i].text);
		if (!exists) {
			is_new |= i == 0;
			changed = true;
			continue;
		}
		significant(buf_cstr(&old), &a);
		significant(buf_cstr(&f[i].text), &b);
		if (buf_equal(&a, &b))
			continue;
		changed = true;
		restart |= f[i].restart;
		if (i == 0) {
			restart_lines(buf_cstr(&old), &a);
			restart_lines(buf_cstr(&f[i].text), &b);
			restart |= !buf_equal(&a, &b);
		}
	}
	if (!changed && !is_new && n > 0 && tls_renewed(o, name, &f[0])) {
		stage(o, name, f[0].name, &f[0].text); /* the new mark */
		o->st->unchanged--;                      /* counted above */
		changed = true;
	}
	if (changed || is_new)
		note(o->st, name, is_new ? CHANGE_NEW : restart ? CHANGE_RESTART : CHANGE_RELOAD);
	buf_free(&old);
	buf_free(&a);
	buf_free(&b);
}

/* commit: one syncfs makes every temporary file durable, then the renames,
 * then one more syncfs for the directory entries. */
static void commit(struct out *o)
{
	if (o->np == 0)
		return;
	if (syncfs(o->dirfd) != 0)
		msg_warn("%s: syncfs: %s", o->o->outdir, strerror(errno));
	for (size_t i = 0; i < o->np; i++) {
		if (!o->failed && renameat(o->dirfd, o->p[i].tmp, o->dirfd, o->p[i].final) == 0) {
			o->st->written++;
		} else {
			if (!o->failed)
				msg_error("%s/%s: cannot rename into place: %s", o->o->outdir,
					  o->p[i].final, strerror(errno));
			o->failed = true;
			unlinkat(o->dirfd, o->p[i].tmp, 0);
		}
		free(o->p[i].tmp);
		free(o->p[i].final);
	}
	free(o->p);
	o->p = NULL;
	o->np = 0;
	if (syncfs(o->dirfd) != 0)
		msg_warn("%s: syncfs: %s", o->o->outdir, strerror(errno));
}

/* ours: dir was written by render (its primary file starts with the marker). */
static bool ours(int dirfd, const char *name, const struct backend_ops *b)
{
	char path[PATH_MAX], head[sizeof RENDER_MARKER];
	snprintf(path, sizeof path, "%s/%s", name, b->primary);
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, head, sizeof head - 1);
	close(fd);
	return n == (ssize_t)sizeof head - 1 && memcmp(head, RENDER_MARKER, sizeof head - 1) == 0;
}

static void remove_instance_dir(struct out *o, const char *name, const struct backend_ops *b)
{
	char path[PATH_MAX];

	for (const char *const *f = b->files; *f; f++) {
		snprintf(path, sizeof path, "%s/%s", name, *f);
		unlinkat(o->dirfd, path, 0);
		snprintf(path, sizeof path, "%s/.%s.tmp", name, *f);
		unlinkat(o->dirfd, path, 0);
	}
	if (unlinkat(o->dirfd, name, AT_REMOVEDIR) == 0) {
		o->st->removed++;
		note(o->st, name, CHANGE_REMOVED);
	} else {
		msg_warn("%s/%s: instance gone from the map, directory kept: %s", o->o->outdir, name,
			 strerror(errno));
	}
}

static void remove_stale(struct out *o, const struct htab *rendered, const struct backend_ops *b)
{
	int fd = dup(o->dirfd);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	char **gone = NULL;
	size_t ngone = 0;

	if (dir == NULL) {
		msg_error("%s: cannot read directory: %s", o->o->outdir, strerror(errno));
		o->failed = true;
		return;
	}
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] == '.' || htab_get(rendered, e->d_name))
			continue;
		if ((e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) && ours(o->dirfd, e->d_name, b)) {
			gone = xreallocarray(gone, ngone + 1, sizeof *gone);
			gone[ngone++] = xstrdup(e->d_name);
		}
	}
	closedir(dir);
	for (size_t i = 0; i < ngone; i++) {
		remove_instance_dir(o, gone[i], b);
		free(gone[i]);
	}
	free(gone);
}

static void render_siblings(const struct map *m, const char *host, struct buf *out)
{
	buf_printf(out, "%s from %s; do not edit.\n", RENDER_MARKER, m->path);
	buf_puts(out, "# Every instance address on this host: address, instance.\n");
	for (size_t i = 0; i < m->n; i++) {
		const struct map_instance *in = &m->inst[i];
		if (!map_on_host(in, host))
			continue;
		for (size_t j = 0; j < in->naddrs; j++)
			buf_printf(out, "%s\t%s\n", in->addr_text[j], in->name);
	}
}

static bool open_outdir(struct out *o, const char *outdir)
{
	if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
		msg_error("%s: cannot create: %s", outdir, strerror(errno));
		return false;
	}
	o->dirfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (o->dirfd < 0) {
		msg_error("%s: cannot open: %s", outdir, strerror(errno));
		return false;
	}
	/* Two renders into one directory at once would interleave renames. */
	if (flock(o->dirfd, LOCK_EX | LOCK_NB) != 0) {
		msg_error("%s: another vhostmta is rendering into it", outdir);
		close(o->dirfd);
		return false;
	}
	if (realpath(outdir, o->abs) == NULL) {
		msg_error("%s: %s", outdir, strerror(errno));
		close(o->dirfd);
		return false;
	}
	return true;
}

/* progress: on a terminal, a line that counts up during long renders. */
static void progress(size_t done, size_t total, bool tty)
{
	if (tty && total >= 1000 && (done % 500 == 0 || done == total))
		fprintf(stderr, "\rrendering: %zu/%zu instances%s", done, total,
			done == total ? "\n" : "");
}

bool render_map(const struct map *m, const struct render_opts *opts, struct render_stats *st)
{
	const struct backend_ops *b = &backends[opts->backend];
	struct out o = { .m = m, .o = opts, .st = st };
	struct htab rendered;
	struct rfile f[MAX_FILES];
	bool tty = isatty(STDERR_FILENO);

	memset(st, 0, sizeof *st);
	memset(f, 0, sizeof f);
	if (!open_outdir(&o, opts->outdir))
		return false;
	htab_init(&rendered, false);
	for (size_t i = 0; i < m->n && !o.failed; i++) {
		const struct map_instance *in = &m->inst[i];
		if (!map_on_host(in, opts->host))
			continue;
		htab_insert(&rendered, in->name, (void *)1);
		bool fresh = mkdirat(o.dirfd, in->name, 0755) == 0;
		if (!fresh && errno != EEXIST) {
			msg_error("%s/%s: cannot create: %s", opts->outdir, in->name, strerror(errno));
			o.failed = true;
			break;
		}
		size_t n = 0;
		for (size_t k = 0; k < MAX_FILES; k++) {
			buf_reset(&f[k].text);
			f[k].restart = false;
		}
		b->render(&o, in, f, &n);
		stage_instance(&o, in->name, f, n, fresh);
		progress(++st->instances, m->n, tty);
	}
	if (b->host_table) {
		buf_reset(&f[0].text);
		render_siblings(m, opts->host, &f[0].text);
		if (read_file_at(o.dirfd, RENDER_SIBLINGS, &f[1].text) && buf_equal(&f[1].text, &f[0].text))
			st->unchanged++;
		else
			stage(&o, "", RENDER_SIBLINGS, &f[0].text);
	}
	commit(&o);
	if (!o.failed)
		remove_stale(&o, &rendered, b);
	for (size_t k = 0; k < MAX_FILES; k++)
		buf_free(&f[k].text);
	htab_free(&rendered);
	close(o.dirfd);
	return !o.failed;
}

void render_stats_free(struct render_stats *st)
{
	free(st->items);
	st->items = NULL;
	st->nitems = 0;
}

const char *render_change_name(enum render_change c)
{
	static const char *const names[] = {
		[CHANGE_NEW] = "new",
		[CHANGE_RESTART] = "restart (listeners changed)",
		[CHANGE_RELOAD] = "reload",
		[CHANGE_REMOVED] = "removed",
	};
	return names[c];
}
