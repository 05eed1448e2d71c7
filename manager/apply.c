/* apply.c: `vhostmta apply` (apply.h). Three parts: the plan (render's
 * list of changed instances turned into unit actions), the dry run
 * (render into a scratch copy of the output directory, so the real one
 * is never written), and the systemd side (sd-bus calls to the manager,
 * each job waited for through its JobRemoved signal).
 *
 * Order matters: the daemon-reload comes first, so that the generator has
 * rewritten the Listen lines before a socket is started; every stop comes
 * before any start, so a restarted socket binds its new addresses. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "apply.h"
#include "buf.h"
#include "log.h"
#include "map.h"
#include "render.h"
#include "util.h"

#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"
#define SD_UNIT "org.freedesktop.systemd1.Unit"
#define SD_PRIVATE "unix:path=/run/systemd/private"
#define TARGET "vhostmta.target"
#define UNIT_MAX (MAP_NAME_MAX + 24)
#define JOB_WAIT_USEC (15ULL * 60 * 1000000) /* one phase; stops drain sessions */
#define COPY_MAX (16u << 20) /* render's own bound on a file it compares */

/* ---- the plan ------------------------------------------------------------ */

enum verb { V_START, V_STOP, V_RELOAD };

static const char *const verb_name[] = { "start", "stop", "reload" };

struct step {
	enum verb verb;
	int phase;            /* 1: stops, 2: starts and reloads */
	char unit[UNIT_MAX];
	char why[MAP_NAME_MAX + 64]; /* "NAME: CHANGE" */
	char *job;            /* the job's object path, while it runs */
	char *result;         /* its JobRemoved result */
	bool failed;
};

struct plan {
	struct step *v;
	size_t n;
};

static void add_step(struct plan *p, int phase, enum verb verb, const char *name,
		     const char *suffix, const char *why)
{
	p->v = xreallocarray(p->v, p->n + 1, sizeof *p->v);
	struct step *s = &p->v[p->n++];
	memset(s, 0, sizeof *s);
	s->verb = verb;
	s->phase = phase;
	snprintf(s->unit, sizeof s->unit, "%s%s%s", name ? "vhostmta@" : "", name ? name : "",
		 suffix);
	snprintf(s->why, sizeof s->why, "%s", why);
}

/* plan_items: the unit actions for render's changed instances. */
static void plan_items(struct plan *p, const struct render_stats *st)
{
	for (size_t i = 0; i < st->nitems; i++) {
		const struct render_item *it = &st->items[i];
		char why[MAP_NAME_MAX + 64];
		snprintf(why, sizeof why, "%s: %s", it->name, render_change_name(it->change));
		switch (it->change) {
		case CHANGE_NEW:
			add_step(p, 2, V_START, it->name, ".socket", why);
			break;
		case CHANGE_RESTART:
			add_step(p, 1, V_STOP, it->name, ".service", why);
			add_step(p, 1, V_STOP, it->name, ".socket", why);
			add_step(p, 2, V_START, it->name, ".socket", why);
			break;
		case CHANGE_RELOAD:
			add_step(p, 2, V_RELOAD, it->name, ".service", why);
			break;
		case CHANGE_REMOVED:
			add_step(p, 1, V_STOP, it->name, ".socket", why);
			add_step(p, 1, V_STOP, it->name, ".service", why);
			break;
		}
	}
}

static void plan_free(struct plan *p)
{
	for (size_t i = 0; i < p->n; i++) {
		free(p->v[i].job);
		free(p->v[i].result);
	}
	free(p->v);
	p->v = NULL;
	p->n = 0;
}

static void print_step(const struct step *s)
{
	printf("%s %s (%s)\n", verb_name[s->verb], s->unit, s->why);
	fflush(stdout);
}

/* ---- the dry run: render into a scratch copy ------------------------------- */

/* read_small: the whole regular file dirfd/name, at most COPY_MAX bytes. */
static bool read_small(int dirfd, const char *name, struct buf *b)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	bool ok = false;

	buf_reset(b);
	if (fd < 0)
		return false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= (off_t)COPY_MAX) {
		char chunk[8192];
		ssize_t r;
		while ((r = read(fd, chunk, sizeof chunk)) > 0 && b->len <= COPY_MAX)
			buf_append(b, chunk, (size_t)r);
		ok = r == 0;
	}
	close(fd);
	return ok;
}

/* relocate: text with every path under from (the real output directory)
 * moved under to, so that the copy compares equal to what render writes
 * into the scratch directory when nothing changed. */
static void relocate(const struct buf *text, const char *from, const char *to, struct buf *out)
{
	const char *p = buf_cstr(text), *end = p + text->len;
	size_t n = strlen(from);

	buf_reset(out);
	while (p < end) {
		const char *hit = memmem(p, (size_t)(end - p), from, n);
		if (hit == NULL) {
			buf_append(out, p, (size_t)(end - p));
			break;
		}
		char next = hit + n < end ? hit[n] : '\0';
		bool whole = next == '/' || next == '\n' || next == ' ' || next == '\t' || next == '\0';
		buf_append(out, p, (size_t)(hit - p));
		buf_puts(out, whole ? to : from);
		p = hit + n;
	}
}

/* write_copy: with the original's times: render compares them (a TLS
 * file renewed since the configuration was written). */
static bool write_copy(int dirfd, const char *name, const struct buf *text,
		       const struct timespec times[2])
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	bool ok = fd >= 0 && (size_t)write(fd, buf_cstr(text), text->len) == text->len;

	if (ok && times)
		(void)futimens(fd, times);
	if (fd >= 0 && close(fd) != 0)
		ok = false;
	return ok;
}

/* open_copy_dir: the scratch directory matching from/sub ("." is the top). */
static int open_copy_dir(int to, const char *sub)
{
	if (strcmp(sub, ".") != 0 && mkdirat(to, sub, 0755) != 0)
		return -1;
	return openat(to, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* copy_dir: the regular files of from/sub into to/sub, relocated; at the
 * top, the instance directories too. Symbolic links and the rest are not
 * render's and are left out. */
static bool copy_dir(int from, int to, const char *sub, const char *real, const char *scratch)
{
	bool top = strcmp(sub, ".") == 0;
	int sfd = openat(from, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int dfd = sfd < 0 ? -1 : open_copy_dir(to, sub);
	DIR *d = dfd < 0 ? NULL : fdopendir(sfd);
	struct buf text = BUF_INIT, moved = BUF_INIT;
	struct dirent *e;
	bool ok = d != NULL;

	if (d == NULL && sfd >= 0)
		close(sfd);
	while (ok && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (read_small(dirfd(d), e->d_name, &text)) {
			struct stat st;
			bool have = fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0;
			struct timespec times[2] = { have ? st.st_atim : (struct timespec){ 0, UTIME_OMIT },
						     have ? st.st_mtim : (struct timespec){ 0, UTIME_OMIT } };
			relocate(&text, real, scratch, &moved);
			ok = write_copy(dfd, e->d_name, &moved, times);
		} else if (top && (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN)) {
			ok = copy_dir(dirfd(d), dfd, e->d_name, real, scratch) || errno == ENOTDIR ||
			     errno == ELOOP;
		}
	}
	if (d)
		closedir(d);
	if (dfd >= 0)
		close(dfd);
	buf_free(&text);
	buf_free(&moved);
	return ok;
}

/* remove_dir: dirfd/name and the files in it (the scratch tree is two
 * levels deep). */
static void remove_dir(int at, const char *name)
{
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *e;

	if (d == NULL && fd >= 0)
		close(fd);
	while (d && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno == EISDIR)
			remove_dir(dirfd(d), e->d_name);
	}
	if (d)
		closedir(d);
	unlinkat(at, name, AT_REMOVEDIR);
}

/* render_scratch: what render would change in ro->outdir, found by
 * rendering into a relocated copy of it. */
static bool render_scratch(const struct map *m, const struct render_opts *ro,
			   struct render_stats *st)
{
	const char *tmpdir = getenv("TMPDIR");
	char scratch[PATH_MAX], real[PATH_MAX], scratch_real[PATH_MAX];
	bool ok = true;

	snprintf(scratch, sizeof scratch, "%s/vhostmta-apply.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (mkdtemp(scratch) == NULL || realpath(scratch, scratch_real) == NULL) {
		msg_error("%s: cannot create a scratch directory: %s", scratch, strerror(errno));
		return false;
	}
	if (realpath(ro->outdir, real) != NULL) {
		int from = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int to = open(scratch_real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		ok = from >= 0 && to >= 0 && copy_dir(from, to, ".", real, scratch_real);
		if (!ok)
			msg_error("%s: cannot copy into %s: %s", ro->outdir, scratch, strerror(errno));
		if (from >= 0)
			close(from);
		if (to >= 0)
			close(to);
	} else if (errno != ENOENT) {
		msg_error("%s: %s", ro->outdir, strerror(errno));
		ok = false;
	}
	if (ok) {
		struct render_opts sro = *ro;
		sro.outdir = scratch_real;
		ok = render_map(m, &sro, st);
	}
	remove_dir(AT_FDCWD, scratch_real);
	return ok;
}

/* ---- pending changes: what a failed apply has not carried out ----------------- */

/* Render compares the new files with the old ones, so once they are
 * written the difference is gone: if systemd then refuses something (or
 * apply is killed), the next apply would see nothing to do. The changes
 * are therefore kept in OUTDIR/.apply-pending until systemd has carried
 * them all out, and merged into the next apply's. */
#define PENDING ".apply-pending"
#define PENDING_MAX (1u << 20)

static const char *const change_word[] = {
	[CHANGE_NEW] = "new", [CHANGE_RESTART] = "restart",
	[CHANGE_RELOAD] = "reload", [CHANGE_REMOVED] = "removed",
};

/* merge_change: one change standing for an older one and a newer one. */
static enum render_change merge_change(enum render_change old, enum render_change cur)
{
	if (cur == CHANGE_REMOVED)
		return CHANGE_REMOVED;
	if (old == CHANGE_REMOVED || old == CHANGE_RESTART || cur == CHANGE_RESTART)
		return CHANGE_RESTART;
	if (old == CHANGE_NEW || cur == CHANGE_NEW)
		return CHANGE_NEW;
	return CHANGE_RELOAD;
}

static bool pending_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > MAP_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

/* merge_one: name's older change into st's items. */
static void merge_one(struct render_stats *st, const char *name, size_t n, enum render_change old)
{
	for (size_t i = 0; i < st->nitems; i++) {
		struct render_item *it = &st->items[i];
		if (strlen(it->name) == n && memcmp(it->name, name, n) == 0) {
			it->change = merge_change(old, it->change);
			return;
		}
	}
	st->items = xreallocarray(st->items, st->nitems + 1, sizeof *st->items);
	struct render_item *it = &st->items[st->nitems++];
	snprintf(it->name, sizeof it->name, "%.*s", (int)n, name);
	it->change = old;
}

/* merge_pending: the changes an earlier apply left undone, into st. */
static void merge_pending(const char *outdir, struct render_stats *st)
{
	struct buf text = BUF_INIT;
	int dirfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dirfd < 0)
		return;
	if (read_small(dirfd, PENDING, &text) && text.len <= PENDING_MAX) {
		for (const char *p = buf_cstr(&text); *p;) {
			const char *eol = strchr(p, '\n');
			size_t len = eol ? (size_t)(eol - p) : strlen(p);
			const char *sp = memchr(p, ' ', len);
			for (int c = 0; sp && *p != '#' && c < (int)ARRAY_LEN(change_word); c++)
				if (strlen(change_word[c]) == len - (size_t)(sp + 1 - p) &&
				    memcmp(sp + 1, change_word[c], strlen(change_word[c])) == 0 &&
				    pending_name_ok(p, (size_t)(sp - p)))
					merge_one(st, p, (size_t)(sp - p), (enum render_change)c);
			p += len + (eol != NULL);
		}
	}
	buf_free(&text);
	close(dirfd);
}

/* save_pending: st's changes, durably, before systemd is asked for any. */
static bool save_pending(const char *outdir, const struct render_stats *st)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	struct buf text = BUF_INIT;

	snprintf(path, sizeof path, "%s/" PENDING, outdir);
	snprintf(tmp, sizeof tmp, "%s/" PENDING ".tmp", outdir);
	if (st->nitems == 0)
		return unlink(path) == 0 || errno == ENOENT;
	buf_puts(&text, "# vhostmta apply: changes systemd has not carried out yet\n");
	for (size_t i = 0; i < st->nitems; i++)
		buf_printf(&text, "%s %s\n", st->items[i].name, change_word[st->items[i].change]);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	bool ok = fd >= 0 && (size_t)write(fd, buf_cstr(&text), text.len) == text.len &&
		  fsync(fd) == 0;
	if (fd >= 0 && close(fd) != 0)
		ok = false;
	ok = ok && rename(tmp, path) == 0;
	if (!ok) {
		fprintf(stderr, "vhostmta apply: %s: %s\n", path, strerror(errno));
		unlink(tmp);
	}
	buf_free(&text);
	return ok;
}

/* ---- systemd ----------------------------------------------------------------- */

struct bus {
	sd_bus *bus;
	sd_bus_slot *slot;
	struct plan *plan;
	size_t pending;
	const char *cmd; /* the command, in messages: "apply" or "wake" */
};

/* bus_open: systemd's private socket as root (what systemctl uses: it
 * works before dbus runs), else the system bus. */
static int bus_open(struct bus *b)
{
	int r;

	if (geteuid() == 0) {
		if ((r = sd_bus_new(&b->bus)) < 0)
			return r;
		if (sd_bus_set_address(b->bus, SD_PRIVATE) >= 0 && sd_bus_start(b->bus) >= 0)
			return 0;
		b->bus = sd_bus_unref(b->bus);
	}
	return sd_bus_open_system(&b->bus);
}

/* bus_ping: systemd answers on the bus (a system bus without systemd as
 * PID 1, in a container, connects but answers nothing). */
static int bus_ping(struct bus *b, sd_bus_error *e)
{
	char *version = NULL;
	int r = sd_bus_get_property_string(b->bus, SD_DEST, SD_PATH, SD_MANAGER, "Version", e,
					   &version);
	free(version);
	return r;
}

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct bus *b = userdata;
	const char *path, *unit, *result;
	uint32_t id;

	(void)ret_error;
	if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0)
		return 0;
	for (size_t i = 0; i < b->plan->n; i++) {
		struct step *s = &b->plan->v[i];
		if (s->job && s->result == NULL && strcmp(s->job, path) == 0) {
			s->result = xstrdup(result);
			b->pending--;
		}
	}
	return 0;
}

static int bus_subscribe(struct bus *b)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	/* No sender in the match: a direct connection carries none. */
	r = sd_bus_match_signal(b->bus, &b->slot, NULL, SD_PATH, SD_MANAGER, "JobRemoved",
				on_job_removed, b);
	if (r >= 0)
		r = sd_bus_call_method(b->bus, SD_DEST, SD_PATH, SD_MANAGER, "Subscribe", &e, NULL, "");
	if (r < 0)
		fprintf(stderr, "vhostmta %s: subscribing to systemd's job signals: %s\n", b->cmd,
			e.message ? e.message : strerror(-r));
	sd_bus_error_free(&e);
	return r;
}

/* active_state: the unit's ActiveState; "inactive" when it is not loaded. */
static char *active_state(struct bus *b, const char *unit)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path;
	char *state = NULL;

	if (sd_bus_call_method(b->bus, SD_DEST, SD_PATH, SD_MANAGER, "GetUnit", &e, &reply, "s",
			       unit) >= 0 &&
	    sd_bus_message_read(reply, "o", &path) >= 0)
		sd_bus_get_property_string(b->bus, SD_DEST, path, SD_UNIT, "ActiveState", &e, &state);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&e);
	return state ? state : xstrdup("inactive");
}

static bool running(const char *state)
{
	return strcmp(state, "active") == 0 || strcmp(state, "reloading") == 0 ||
	       strcmp(state, "activating") == 0;
}

/* queue_job: the step's method call; the job path is kept to wait for. */
static bool queue_job(struct bus *b, struct step *s)
{
	static const char *const method[] = { "StartUnit", "StopUnit", "ReloadUnit" };
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path;
	int r;

	r = sd_bus_call_method(b->bus, SD_DEST, SD_PATH, SD_MANAGER, method[s->verb], &e, &reply,
			       "ss", s->unit, "replace");
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &path);
	if (r >= 0) {
		s->job = xstrdup(path);
		b->pending++;
	} else {
		fprintf(stderr, "vhostmta %s: %s %s: systemd refused: %s\n", b->cmd,
			verb_name[s->verb], s->unit, e.message ? e.message : strerror(-r));
		s->failed = true;
	}
	sd_bus_message_unref(reply);
	sd_bus_error_free(&e);
	return r >= 0;
}

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* wait_jobs: until every queued job has its JobRemoved, or the deadline. */
static bool wait_jobs(struct bus *b)
{
	uint64_t deadline = now_usec() + JOB_WAIT_USEC;

	while (b->pending > 0) {
		int r = sd_bus_process(b->bus, NULL);
		if (r > 0)
			continue;
		uint64_t now = now_usec();
		if (r == 0 && now < deadline)
			r = sd_bus_wait(b->bus, deadline - now);
		if (r < 0 || now >= deadline) {
			fprintf(stderr, "vhostmta %s: waiting for systemd's jobs: %s\n", b->cmd,
				r < 0 ? strerror(-r) : "timed out");
			return false;
		}
	}
	return true;
}

/* run_phase: queue every job of the phase, wait for them all, then one
 * line per step in plan order. */
static unsigned run_phase(struct bus *b, int phase)
{
	unsigned failed = 0;

	for (size_t i = 0; i < b->plan->n; i++) {
		struct step *s = &b->plan->v[i];
		if (s->phase != phase)
			continue;
		if (s->verb == V_RELOAD) {
			char *state = active_state(b, s->unit);
			bool up = running(state);
			free(state);
			if (!up) {
				printf("skip reload %s (%s; not running: its next start reads the new "
				       "configuration)\n", s->unit, s->why);
				s->phase = 0;
				continue;
			}
		}
		queue_job(b, s);
	}
	bool waited = wait_jobs(b);
	for (size_t i = 0; i < b->plan->n; i++) {
		struct step *s = &b->plan->v[i];
		if (s->phase != phase)
			continue;
		const char *res = s->result ? s->result : "unfinished";
		if (!s->failed && s->job && (strcmp(res, "done") == 0 || strcmp(res, "skipped") == 0)) {
			print_step(s);
			continue;
		}
		if (!s->failed)
			fprintf(stderr, "vhostmta %s: %s %s (%s): job %s; see systemctl status %s\n",
				b->cmd, verb_name[s->verb], s->unit, s->why, res, s->unit);
		failed++;
	}
	return failed + (waited ? 0 : 1);
}

/* plan_unchanged: a socket of an unchanged instance that is not active
 * (its start failed in an earlier apply) is started; a running one is
 * never touched. */
static void plan_unchanged(struct bus *b, const struct map *m, const char *host,
			   const struct render_stats *st, struct plan *p)
{
	for (size_t i = 0; i < m->n; i++) {
		const struct map_instance *in = &m->inst[i];
		bool changed = false;
		if (!map_on_host(in, host))
			continue;
		for (size_t k = 0; k < st->nitems && !changed; k++)
			changed = strcmp(st->items[k].name, in->name) == 0;
		if (changed)
			continue;
		char unit[UNIT_MAX], why[MAP_NAME_MAX + 64];
		snprintf(unit, sizeof unit, "vhostmta@%s.socket", in->name);
		char *state = active_state(b, unit);
		if (!running(state)) {
			snprintf(why, sizeof why, "%s: unchanged, socket %s", in->name, state);
			add_step(p, 3, V_START, in->name, ".socket", why);
		}
		free(state);
	}
}

static unsigned daemon_reload(struct bus *b)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r = sd_bus_call_method(b->bus, SD_DEST, SD_PATH, SD_MANAGER, "Reload", &e, NULL, "");

	if (r < 0)
		fprintf(stderr, "vhostmta apply: daemon-reload: systemd refused: %s\n",
			e.message ? e.message : strerror(-r));
	else
		printf("daemon-reload\n");
	fflush(stdout);
	sd_bus_error_free(&e);
	return r < 0;
}

/* ---- the command ---------------------------------------------------------------- */

static bool load_map(struct map *m, const char *path)
{
	struct diag d = DIAG_INIT;

	map_load(m, path, &d);
	if (d.errors == 0)
		return true;
	fprintf(stderr, "vhostmta apply: %s: %u error%s, nothing changed\n", path, d.errors,
		d.errors == 1 ? "" : "s");
	return false;
}

/* this_host: the host name instances are matched against (map host=). */
static bool this_host(char *out, size_t len)
{
	if (gethostname(out, len) != 0) {
		fprintf(stderr, "vhostmta apply: gethostname: %s\n", strerror(errno));
		return false;
	}
	out[len - 1] = 0;
	return true;
}

/* lock_apply: two applies at once would interleave their jobs. */
static int lock_apply(const char *outdir)
{
	char path[PATH_MAX];

	if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "vhostmta apply: %s: cannot create: %s\n", outdir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof path, "%s/.apply.lock", outdir);
	int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
		fprintf(stderr, "vhostmta apply: %s: %s\n", path,
			fd < 0 ? strerror(errno) : "another vhostmta apply is running");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static void summary(const struct apply_opts *o, const struct render_stats *st, bool dry)
{
	size_t count[4] = { 0 };

	for (size_t i = 0; i < st->nitems; i++)
		count[st->items[i].change]++;
	printf("%s: %zu instance%s: %zu new, %zu restarted, %zu reloaded, %zu removed%s\n", o->map,
	       st->instances, st->instances == 1 ? "" : "s", count[CHANGE_NEW],
	       count[CHANGE_RESTART], count[CHANGE_RELOAD], count[CHANGE_REMOVED],
	       dry ? " (dry run: nothing changed)" : "");
}

static int dry_run(const struct apply_opts *o, const struct map *m, const struct render_opts *ro)
{
	struct render_stats st;
	struct plan p = { 0 };

	if (!render_scratch(m, ro, &st)) {
		render_stats_free(&st);
		fprintf(stderr, "vhostmta apply: cannot work out the plan, nothing changed\n");
		return 1;
	}
	merge_pending(ro->outdir, &st);
	plan_items(&p, &st);
	printf("daemon-reload\n");
	for (int phase = 1; phase <= 2; phase++)
		for (size_t i = 0; i < p.n; i++)
			if (p.v[i].phase == phase)
				print_step(&p.v[i]);
	printf("start " TARGET "\n");
	summary(o, &st, true);
	plan_free(&p);
	render_stats_free(&st);
	return 0;
}

static int real_run(const struct apply_opts *o, const struct map *m, const struct render_opts *ro)
{
	struct bus b = { .cmd = "apply" };
	struct render_stats st;
	struct plan p = { 0 };
	unsigned failed = 0;
	int r;

	/* systemd first: if it cannot be reached, nothing is rendered. */
	sd_bus_error e = SD_BUS_ERROR_NULL;
	if ((r = bus_open(&b)) < 0 || (r = bus_ping(&b, &e)) < 0) {
		fprintf(stderr, "vhostmta apply: cannot reach systemd: %s; nothing changed (without "
			"systemd: vhostmta run)\n", e.message ? e.message : strerror(-r));
		sd_bus_error_free(&e);
		sd_bus_unref(b.bus);
		return 1;
	}
	int lock = lock_apply(o->outdir);
	if (lock < 0) {
		sd_bus_unref(b.bus);
		return 1;
	}
	if (!render_map(m, ro, &st)) {
		fprintf(stderr, "vhostmta apply: rendering into %s failed; systemd not touched\n",
			o->outdir);
		render_stats_free(&st);
		close(lock);
		sd_bus_unref(b.bus);
		return 1;
	}
	b.plan = &p;
	merge_pending(o->outdir, &st);
	bool saved = save_pending(o->outdir, &st);
	plan_items(&p, &st);
	failed += daemon_reload(&b);
	if (failed == 0 && bus_subscribe(&b) < 0)
		failed++;
	if (failed == 0) {
		failed += run_phase(&b, 1);
		failed += run_phase(&b, 2);
		plan_unchanged(&b, m, ro->host, &st, &p);
		failed += run_phase(&b, 3);
		add_step(&p, 4, V_START, NULL, TARGET, "every instance");
		failed += run_phase(&b, 4);
	}
	summary(o, &st, false);
	if (failed == 0) {
		struct render_stats done = { 0 };
		saved = save_pending(o->outdir, &done);
	}
	failed += !saved;
	if (failed)
		fprintf(stderr, "vhostmta apply: %u action%s failed\n", failed, failed == 1 ? "" : "s");
	plan_free(&p);
	render_stats_free(&st);
	sd_bus_slot_unref(b.slot);
	sd_bus_flush_close_unref(b.bus);
	close(lock);
	return failed ? 1 : 0;
}

int apply_start_units(const char *cmd, const char *const *units, const char *const *whys,
		      size_t n)
{
	struct bus b = { .cmd = cmd };
	struct plan p = { 0 };
	sd_bus_error e = SD_BUS_ERROR_NULL;
	unsigned failed = 0;
	int r;

	if (n == 0)
		return 0;
	if ((r = bus_open(&b)) < 0 || (r = bus_ping(&b, &e)) < 0) {
		fprintf(stderr, "vhostmta %s: cannot reach systemd: %s\n", cmd,
			e.message ? e.message : strerror(-r));
		sd_bus_error_free(&e);
		sd_bus_unref(b.bus);
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		add_step(&p, 1, V_START, NULL, units[i], whys[i]);
	b.plan = &p;
	failed = bus_subscribe(&b) < 0 ? 1 : run_phase(&b, 1);
	plan_free(&p);
	sd_bus_slot_unref(b.slot);
	sd_bus_flush_close_unref(b.bus);
	return failed ? 1 : 0;
}

int apply_run(const struct apply_opts *o)
{
	struct map m;
	char host[256];
	int rc;

	if (!load_map(&m, o->map)) {
		map_free(&m);
		return 1;
	}
	if (m.backend != BACKEND_VHOSTMTA) {
		fprintf(stderr, "vhostmta apply: %s selects the %s backend: apply runs vhostmta "
			"instances (see docs/postfix.md for Postfix instances); nothing changed\n",
			o->map, backend_name(m.backend));
		map_free(&m);
		return 1;
	}
	if (o->host == NULL && !this_host(host, sizeof host)) {
		map_free(&m);
		return 1;
	}
	struct render_opts ro = { o->outdir, o->host ? o->host : host, BACKEND_VHOSTMTA, NULL };
	rc = o->dry_run ? dry_run(o, &m, &ro) : real_run(o, &m, &ro);
	map_free(&m);
	return rc;
}
