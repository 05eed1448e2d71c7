/* render.c: map -> per-instance configuration directories. Writes are
 * atomic (temporary file + rename), grouped under one syncfs, and skipped
 * when the content is unchanged, so a re-render of an unchanged map writes
 * nothing and keeps every mtime. */
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

/* A file to be renamed into place once every temporary file is flushed. */
struct pending {
	char *tmp, *final; /* relative to the output directory */
};

struct out {
	int dirfd;
	const char *dir;
	struct pending *p;
	size_t np;
	struct render_stats *st;
	bool failed;
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
 * in table order so the output is stable. */
static void put_params(const struct map *m, const struct map_instance *in, struct buf *out)
{
	for (int id = 0; id < P__COUNT; id++) {
		const char *v = param_value(m, in, (enum param_id)id);
		if (v)
			cf_write_value(out, param_table[id].name, v);
	}
}

void render_instance_cf(const struct map *m, const struct map_instance *in, const char *confdir,
			const char *sibling_table, struct buf *out)
{
	const char *t = embed_instance_cf_in;

	while (*t) {
		const char *at = strchr(t, '@'), *end = at ? strchr(at + 1, '@') : NULL;
		if (at == NULL || end == NULL) {
			buf_puts(out, t);
			break;
		}
		buf_append(out, t, (size_t)(at - t));
		size_t n = (size_t)(end - at - 1);
		const char *key = at + 1;
		if (n == 3 && memcmp(key, "MAP", 3) == 0)
			buf_puts(out, m->path);
		else if (n == 4 && memcmp(key, "NAME", 4) == 0)
			buf_puts(out, in->name);
		else if (n == 10 && memcmp(key, "MYHOSTNAME", 10) == 0)
			buf_puts(out, in->myhostname);
		else if (n == 15 && memcmp(key, "INET_INTERFACES", 15) == 0)
			map_inet_interfaces(in, out);
		else if (n == 16 && memcmp(key, "CONFIG_DIRECTORY", 16) == 0)
			buf_puts(out, confdir);
		else if (n == 13 && memcmp(key, "SIBLING_TABLE", 13) == 0)
			buf_puts(out, sibling_table);
		else if (n == 6 && memcmp(key, "PARAMS", 6) == 0) {
			put_params(m, in, out);
			if (end[1] == '\n')
				end++; /* the block ends with its own newline */
		} else
			msg_panic("instance.cf.in: unknown placeholder @%.*s@", (int)n, key);
		t = end + 1;
	}
}

static void render_transport(const struct map *m, const struct map_instance *in, struct buf *out)
{
	buf_printf(out, "%s from %s; do not edit.\n", RENDER_MARKER, m->path);
	buf_printf(out, "# Hosted domains of instance %s and the next hop of their inbound mail.\n",
		   in->name);
	for (size_t i = 0; i < in->ndomains; i++) {
		const struct map_domain *d = &in->domains[i];
		if (d->deliver)
			buf_printf(out, "%s\t%s\n", d->name, d->deliver);
		else
			buf_printf(out, "# %s: outbound only\n", d->name);
	}
}

/* same_content: the file at dirfd/path holds exactly text[0..len). */
static bool same_content(int dirfd, const char *path, const char *text, size_t len)
{
	struct stat st;
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	bool same = false;

	if (fd < 0)
		return false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == len) {
		char *cur = xmalloc(len + 1);
		size_t got = 0;
		ssize_t r;
		while (got < len && ((r = read(fd, cur + got, len - got)) > 0 || (r < 0 && errno == EINTR)))
			got += r > 0 ? (size_t)r : 0;
		same = got == len && memcmp(cur, text, len) == 0;
		free(cur);
	}
	close(fd);
	return same;
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

/* stage: unless unchanged, write text to a temporary beside path and
 * queue the rename. In a directory created just now there is nothing to
 * compare with. */
static void stage(struct out *o, const char *dir, const char *file, const struct buf *text,
		  bool fresh)
{
	char path[PATH_MAX], tmp[PATH_MAX];

	snprintf(path, sizeof path, "%s%s%s", dir, *dir ? "/" : "", file);
	snprintf(tmp, sizeof tmp, "%s%s.%s.tmp", dir, *dir ? "/" : "", file);
	if (!fresh && same_content(o->dirfd, path, buf_cstr(text), text->len)) {
		o->st->unchanged++;
		return;
	}
	int fd = openat(o->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || !write_all(fd, buf_cstr(text), text->len) || close(fd) != 0) {
		msg_error("%s/%s: cannot write: %s", o->dir, tmp, strerror(errno));
		if (fd >= 0)
			unlinkat(o->dirfd, tmp, 0);
		o->failed = true;
		return;
	}
	o->p = xreallocarray(o->p, o->np + 1, sizeof *o->p);
	o->p[o->np++] = (struct pending){ xstrdup(tmp), xstrdup(path) };
}

/* commit: one syncfs makes every temporary file durable, then the renames,
 * then one more syncfs for the directory entries. */
static void commit(struct out *o)
{
	if (o->np == 0)
		return;
	if (syncfs(o->dirfd) != 0)
		msg_warn("%s: syncfs: %s", o->dir, strerror(errno));
	for (size_t i = 0; i < o->np; i++) {
		if (!o->failed && renameat(o->dirfd, o->p[i].tmp, o->dirfd, o->p[i].final) == 0) {
			o->st->written++;
		} else {
			if (!o->failed)
				msg_error("%s/%s: cannot rename into place: %s", o->dir, o->p[i].final,
					  strerror(errno));
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
		msg_warn("%s: syncfs: %s", o->dir, strerror(errno));
}

/* ours: dir was written by render (its instance.cf starts with the marker). */
static bool ours(int dirfd, const char *name)
{
	char path[PATH_MAX], head[sizeof RENDER_MARKER];
	snprintf(path, sizeof path, "%s/instance.cf", name);
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, head, sizeof head - 1);
	close(fd);
	return n == (ssize_t)sizeof head - 1 && memcmp(head, RENDER_MARKER, sizeof head - 1) == 0;
}

static void remove_instance_dir(struct out *o, const char *name)
{
	static const char *const files[] = { "instance.cf", "transport", ".instance.cf.tmp",
					     ".transport.tmp" };
	char path[PATH_MAX];

	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		snprintf(path, sizeof path, "%s/%s", name, files[i]);
		unlinkat(o->dirfd, path, 0);
	}
	if (unlinkat(o->dirfd, name, AT_REMOVEDIR) == 0) {
		o->st->removed++;
		msg_debug("removed %s/%s", o->dir, name);
	} else {
		msg_warn("%s/%s: instance gone from the map, directory kept: %s", o->dir, name,
			 strerror(errno));
	}
}

static void remove_stale(struct out *o, const struct htab *rendered)
{
	int fd = dup(o->dirfd);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	char **gone = NULL;
	size_t ngone = 0;

	if (dir == NULL) {
		msg_error("%s: cannot read directory: %s", o->dir, strerror(errno));
		o->failed = true;
		return;
	}
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] == '.' || htab_get(rendered, e->d_name))
			continue;
		if ((e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) && ours(o->dirfd, e->d_name)) {
			gone = xreallocarray(gone, ngone + 1, sizeof *gone);
			gone[ngone++] = xstrdup(e->d_name);
		}
	}
	closedir(dir);
	for (size_t i = 0; i < ngone; i++) {
		remove_instance_dir(o, gone[i]);
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
	return true;
}

/* progress: on a terminal, a line that counts up during long renders. */
static void progress(size_t done, size_t total, bool tty)
{
	if (tty && total >= 1000 && (done % 500 == 0 || done == total))
		fprintf(stderr, "\rrendering: %zu/%zu instances%s", done, total,
			done == total ? "\n" : "");
}

bool render_map(const struct map *m, const char *outdir, const char *host, struct render_stats *st)
{
	bool tty = isatty(STDERR_FILENO);
	struct out o = { .dir = outdir, .st = st };
	struct htab rendered;
	struct buf text = BUF_INIT;
	char abs[PATH_MAX], confdir[PATH_MAX + 80], siblings[PATH_MAX + 32];

	memset(st, 0, sizeof *st);
	if (!open_outdir(&o, outdir))
		return false;
	if (realpath(outdir, abs) == NULL) {
		msg_error("%s: %s", outdir, strerror(errno));
		close(o.dirfd);
		return false;
	}
	snprintf(siblings, sizeof siblings, "%s/%s", abs, RENDER_SIBLINGS);
	htab_init(&rendered, false);
	for (size_t i = 0; i < m->n && !o.failed; i++) {
		const struct map_instance *in = &m->inst[i];
		if (!map_on_host(in, host))
			continue;
		htab_insert(&rendered, in->name, (void *)1);
		bool fresh = mkdirat(o.dirfd, in->name, 0755) == 0;
		if (!fresh && errno != EEXIST) {
			msg_error("%s/%s: cannot create: %s", outdir, in->name, strerror(errno));
			o.failed = true;
			break;
		}
		snprintf(confdir, sizeof confdir, "%s/%s", abs, in->name);
		buf_reset(&text);
		render_instance_cf(m, in, confdir, siblings, &text);
		stage(&o, in->name, "instance.cf", &text, fresh);
		buf_reset(&text);
		render_transport(m, in, &text);
		stage(&o, in->name, "transport", &text, fresh);
		progress(++st->instances, m->n, tty);
	}
	buf_reset(&text);
	render_siblings(m, host, &text);
	stage(&o, "", RENDER_SIBLINGS, &text, false);
	commit(&o);
	if (!o.failed)
		remove_stale(&o, &rendered);
	htab_free(&rendered);
	buf_free(&text);
	close(o.dirfd);
	return !o.failed;
}
