/* queuecmd.c: `vhostmta queue`. Finds the rendered instances (every
 * DIR/NAME holding an instance.cf) and runs vhostmta-instance on each
 * one's instance.cf, never through a shell, reading its standard output
 * line by line: a "NAME:" heading goes before each instance's output, as
 * mailq heads each queue, and a summary line ends the run. What the
 * listing holds is the instance's business; the manager relies only on
 * this: one line per message, starting with its queue id (continuation
 * lines, if any, start with white space). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "map.h"
#include "queuecmd.h"
#include "util.h"

#define OUT_LINE_MAX (64 * 1024) /* a longer line of the instance's is passed on in pieces */

/* One instance's run: the callback sees each line of its output. */
typedef void line_fn(void *ctx, const char *line, size_t len);

struct target {
	const char *name;
	char cf[PATH_MAX];
};

struct run {
	const struct qcmd_opts *o;
	char prog[PATH_MAX];
	struct target *t;
	size_t n;
	size_t failed;
};

/* ---- finding things ---------------------------------------------------------- */

/* qcmd_find_prog: $VHOSTMTA_INSTANCE, else vhostmta-instance beside this
 * program (an installed or a build tree keeps the two together), else
 * the one in sbindir. */
void qcmd_find_prog(char *out)
{
	const char *env = getenv("VHOSTMTA_INSTANCE");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env && strlen(env) < PATH_MAX) {
		memcpy(out, env, strlen(env) + 1);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			slash[1] = 0;
			if (snprintf(out, PATH_MAX, "%s" QCMD_INSTANCE_PROG, self) < PATH_MAX &&
			    access(out, X_OK) == 0)
				return;
		}
	}
	snprintf(out, PATH_MAX, SBINDIR "/" QCMD_INSTANCE_PROG);
}

/* name_ok: what render can have made: a map instance name. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > MAP_NAME_MAX || s[0] == '.' || s[0] == '-' || s[0] == '_')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

/* rendered: DIR/NAME/instance.cf is a regular file; its path in cf. */
static bool rendered(const char *dir, const char *name, char cf[PATH_MAX])
{
	struct stat st;

	if (!name_ok(name) || snprintf(cf, PATH_MAX, "%s/%s/instance.cf", dir, name) >= PATH_MAX)
		return false;
	return stat(cf, &st) == 0 && S_ISREG(st.st_mode);
}

static void add_target(struct run *r, const char *name, const char *cf)
{
	r->t = xreallocarray(r->t, r->n + 1, sizeof *r->t);
	r->t[r->n].name = name;
	memcpy(r->t[r->n].cf, cf, strlen(cf) + 1);
	r->n++;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* all_targets: every rendered instance of DIR, by name. The names are
 * kept in *names for the caller to free. */
static bool all_targets(struct run *r, char ***names, size_t *nnames)
{
	char cf[PATH_MAX];
	DIR *d = opendir(r->o->dir);

	if (d == NULL) {
		fprintf(stderr, "vhostmta queue: %s: %s\n", r->o->dir, strerror(errno));
		return false;
	}
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		if (rendered(r->o->dir, e->d_name, cf)) {
			*names = xreallocarray(*names, *nnames + 1, sizeof **names);
			(*names)[(*nnames)++] = xstrdup(e->d_name);
		}
	closedir(d);
	qsort(*names, *nnames, sizeof **names, name_cmp);
	for (size_t i = 0; i < *nnames; i++) {
		rendered(r->o->dir, (*names)[i], cf);
		add_target(r, (*names)[i], cf);
	}
	return true;
}

/* named_targets: every name given must be a rendered instance; each is
 * reported, and nothing runs unless all are. */
static bool named_targets(struct run *r)
{
	char cf[PATH_MAX], shown[STR_SHOW_BUF];
	bool ok = true;

	for (size_t i = 0; i < r->o->nnames; i++) {
		const char *name = r->o->names[i];
		bool seen = false;
		for (size_t k = 0; k < r->n; k++)
			seen |= strcmp(r->t[k].name, name) == 0;
		if (seen)
			continue;
		if (rendered(r->o->dir, name, cf)) {
			add_target(r, name, cf);
			continue;
		}
		fprintf(stderr, "vhostmta queue: no instance \"%s\" in %s (no %s/%s/instance.cf)\n",
			str_show(name, strlen(name), shown), r->o->dir, r->o->dir, shown);
		ok = false;
	}
	return ok;
}

/* ---- running vhostmta-instance ------------------------------------------------- */

static void read_lines(int fd, line_fn *fn, void *ctx)
{
	struct buf line = BUF_INIT;
	char in[4096];
	ssize_t n;

	while ((n = read(fd, in, sizeof in)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (in[i] == '\n' || line.len >= OUT_LINE_MAX) {
				fn(ctx, buf_cstr(&line), line.len);
				buf_reset(&line);
				if (in[i] == '\n')
					continue;
			}
			buf_putc(&line, in[i]);
		}
	}
	if (line.len > 0)
		fn(ctx, buf_cstr(&line), line.len);
	buf_free(&line);
}

/* run_instance: prog -c CF ARG [ID] with its standard output read by fn;
 * its exit status, or -1 when it could not run (said why). */
static int run_instance(const struct run *r, const struct target *t, const char *arg,
			const char *id, line_fn *fn, void *ctx)
{
	char *argv[] = { (char *)r->prog, "-c", (char *)t->cf, (char *)arg, (char *)id, NULL };
	posix_spawn_file_actions_t fa;
	int p[2], status = 0, err;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "vhostmta queue: pipe: %s\n", strerror(errno));
		return -1;
	}
	fflush(stdout); /* what we printed comes before what it prints */
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
	err = posix_spawn(&pid, r->prog, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (err != 0) {
		fprintf(stderr, "vhostmta queue: cannot run %s: %s\n", r->prog, strerror(err));
		close(p[0]);
		return -1;
	}
	read_lines(p[0], fn, ctx);
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			fprintf(stderr, "vhostmta queue: waitpid: %s\n", strerror(errno));
			return -1;
		}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	fprintf(stderr, "vhostmta queue: %s: %s killed by signal %d\n", t->name, r->prog,
		WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return -1;
}

/* One instance's output, shown under its heading. */
struct shown {
	const char *name;
	bool headed;
	size_t messages;
};

static void heading(struct shown *s)
{
	if (!s->headed)
		printf("%s:\n", s->name);
	s->headed = true;
}

static void show_line(void *ctx, const char *line, size_t len)
{
	struct shown *s = ctx;
	struct buf b = BUF_INIT;

	heading(s);
	if (len > 0 && line[0] != ' ' && line[0] != '\t')
		s->messages++;
	buf_put_printable(&b, line, len);
	buf_putc(&b, '\n');
	fwrite(b.data, 1, b.len, stdout);
	buf_free(&b);
}

static const char *action_arg(enum qcmd_action a)
{
	return a == QCMD_LIST ? "--list-queue" : a == QCMD_FLUSH ? "--flush" : "--delete";
}

/* run_shown: one instance, headed (at once, or before its first line when
 * lazy); false when it failed. */
static bool run_shown(struct run *r, const struct target *t, bool lazy, size_t *messages)
{
	struct shown s = { t->name, false, 0 };
	const char *arg = action_arg(r->o->action);

	if (!lazy)
		heading(&s);
	int rc = run_instance(r, t, arg, r->o->action == QCMD_DELETE ? r->o->id : NULL, show_line, &s);
	if (messages)
		*messages += s.messages;
	if (rc == 0)
		return true;
	if (rc > 0)
		fprintf(stderr, "vhostmta queue: %s: %s %s failed (exit %d)\n", t->name,
			QCMD_INSTANCE_PROG, arg, rc);
	r->failed++;
	return false;
}

/* ---- the actions ------------------------------------------------------------- */

static void plural(size_t n, const char *one, const char *many, struct buf *b)
{
	buf_printf(b, "%zu %s", n, n == 1 ? one : many);
}

static void summary(const struct run *r, struct buf *b)
{
	if (r->failed)
		buf_printf(b, ", %zu failed", r->failed);
	buf_putc(b, '\n');
	fwrite(b->data, 1, b->len, stdout);
}

static void do_list(struct run *r)
{
	struct buf b = BUF_INIT;
	size_t messages = 0;

	for (size_t i = 0; i < r->n; i++)
		run_shown(r, &r->t[i], true, &messages);
	buf_puts(&b, "-- ");
	plural(messages, "message", "messages", &b);
	buf_puts(&b, " in ");
	plural(r->n, "instance", "instances", &b);
	summary(r, &b);
	buf_free(&b);
}

static void do_flush(struct run *r)
{
	struct buf b = BUF_INIT;
	size_t done = 0;

	for (size_t i = 0; i < r->n; i++)
		done += run_shown(r, &r->t[i], false, NULL);
	buf_puts(&b, "-- ");
	plural(done, "instance", "instances", &b);
	buf_printf(&b, " of %zu flushed", r->n);
	summary(r, &b);
	buf_free(&b);
}

/* Finding which instances hold a message: their listings. */
struct holds {
	const char *id;
	bool found;
};

static void find_id(void *ctx, const char *line, size_t len)
{
	struct holds *h = ctx;
	size_t n = strlen(h->id);

	if (len >= n && memcmp(line, h->id, n) == 0 && (len == n || line[n] == ' ' || line[n] == '\t'))
		h->found = true;
}

/* holders: the targets whose queue lists the message; the others drop
 * out of r->t. */
static void holders(struct run *r)
{
	size_t keep = 0;

	for (size_t i = 0; i < r->n; i++) {
		struct holds h = { r->o->id, false };
		int rc = run_instance(r, &r->t[i], "--list-queue", NULL, find_id, &h);
		if (rc != 0) {
			if (rc > 0)
				fprintf(stderr, "vhostmta queue: %s: cannot list its queue (exit %d)\n",
					r->t[i].name, rc);
			r->failed++;
		}
		if (h.found)
			r->t[keep++] = r->t[i];
	}
	r->n = keep;
}

static void do_delete(struct run *r)
{
	struct buf b = BUF_INIT;
	size_t done = 0;

	/* Unnamed, the message is looked for: only its instance is asked. */
	if (r->o->nnames == 0) {
		holders(r);
		if (r->n == 0) {
			fprintf(stderr, "vhostmta queue: %s: no instance in %s has this message\n",
				r->o->id, r->o->dir);
			r->failed++;
			buf_free(&b);
			return;
		}
	}
	for (size_t i = 0; i < r->n; i++)
		done += run_shown(r, &r->t[i], false, NULL);
	buf_printf(&b, "-- %s deleted from ", r->o->id);
	plural(done, "instance", "instances", &b);
	summary(r, &b);
	buf_free(&b);
}

bool qcmd_id_plausible(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > QCMD_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'Z') ||
		      (id[i] >= 'a' && id[i] <= 'z')))
			return false;
	return true;
}

int qcmd_run(const struct qcmd_opts *o)
{
	struct run r = { .o = o };
	char **names = NULL;
	size_t nnames = 0;
	bool ok = o->nnames ? named_targets(&r) : all_targets(&r, &names, &nnames);

	if (ok) {
		qcmd_find_prog(r.prog);
		if (o->action == QCMD_LIST)
			do_list(&r);
		else if (o->action == QCMD_FLUSH)
			do_flush(&r);
		else
			do_delete(&r);
	}
	fflush(stdout);
	for (size_t i = 0; i < nnames; i++)
		free(names[i]);
	free(names);
	free(r.t);
	return ok && r.failed == 0 ? 0 : 1;
}
