/* run.c: the supervisor of `vhostmta run` (see run.h). One sd-event loop
 * owns every instance: its state, its listening sockets (held here for
 * the instance's whole life, so a restart or a crash refuses no
 * connection), its process, and what it last said through the notify
 * socket. Signals: SIGCHLD (an instance ended), SIGHUP (apply the map
 * again), SIGTERM and SIGINT (stop everything). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "buf.h"
#include "log.h"
#include "map.h"
#include "queuecmd.h"
#include "render.h"
#include "run.h"
#include "runctl.h"
#include "runnotify.h"
#include "runsock.h"
#include "runspawn.h"
#include "util.h"

#define USEC_PER_SEC 1000000ULL
#define BACKOFF_MIN (USEC_PER_SEC / 10)   /* first restart after a crash */
#define BACKOFF_MAX (30 * USEC_PER_SEC)   /* doubling up to this */
#define STABLE_AFTER (60 * USEC_PER_SEC)  /* up this long: the backoff starts over */
#define STOP_TIMEOUT (90 * USEC_PER_SEC)  /* after SIGTERM, then SIGKILL (systemd's default) */
#define LOCK_NAME ".lock"
#define ERROR_MAX 200
#define STATUS_MAX 128

enum istate {
	IS_STARTING,   /* forked, no READY=1 yet */
	IS_RUNNING,
	IS_STOPPING,   /* SIGTERM sent, or it said STOPPING=1 */
	IS_BACKOFF,    /* crashed: restarted when its timer fires */
	IS_ONDEMAND,   /* exited when idle: its next connection starts it */
	IS_FAILED,     /* could not be started: SIGHUP tries again */
	IS_WAITING,    /* for an address another instance holds until it stops */
	IS_STOPPED,    /* not started yet, or the supervisor is stopping */
};

static const char *const state_names[] = {
	[IS_STARTING] = "starting",   [IS_RUNNING] = "running",   [IS_STOPPING] = "stopping",
	[IS_BACKOFF] = "restarting",  [IS_ONDEMAND] = "on-demand", [IS_FAILED] = "failed",
	[IS_WAITING] = "waiting",     [IS_STOPPED] = "stopped",
};

/* What to do once a process we stopped has exited. */
enum after { AFTER_NOTHING, AFTER_START, AFTER_FORGET };

struct sup;

struct inst {
	struct sup *sup;
	char *name;
	char *cf; /* DIR/NAME/instance.cf */
	struct rsocks socks;
	sd_event_source **watch; /* IS_ONDEMAND: one per socket */
	size_t nwatch;
	sd_event_source *timer;  /* IS_BACKOFF: restart; IS_STOPPING: SIGKILL */
	pid_t pid;
	enum istate state;
	enum after after;
	bool term_sent, reload_pending, reloading, in_map;
	uint64_t started_us;     /* CLOCK_MONOTONIC, at fork */
	uint64_t backoff_us;
	unsigned restarts;
	long long sessions, queue; /* from STATUS=; -1 unknown */
	char status[STATUS_MAX];
	char last_error[ERROR_MAX];
};

struct sup {
	const struct run_opts *o;
	const char *host; /* the instances realized: map_on_host */
	char hostbuf[256];
	char dir[PATH_MAX], state[PATH_MAX], prog[PATH_MAX];
	struct run_user user;
	sd_event *event;
	sd_event_source *sig[5];
	struct notify *notify;
	struct runctl *ctl;
	struct inst **v;
	size_t n;
	bool stopping, ready;
	uint64_t started_us;
	int lockfd;
};

static void inst_start(struct inst *in);
static void inst_stop(struct inst *in, enum after after);

/* ---- small things ------------------------------------------------------------- */

static uint64_t now_us(const struct sup *s)
{
	uint64_t t = 0;

	sd_event_now(s->event, CLOCK_MONOTONIC, &t);
	return t;
}

static void set_error(struct inst *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct inst *in, const char *fmt, ...)
{
	char when[16] = "";
	time_t t = time(NULL);
	struct tm tm;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(in->last_error, sizeof in->last_error, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof in->last_error && localtime_r(&t, &tm))
		strftime(when, sizeof when, " at %H:%M:%S", &tm);
	if (n >= 0 && (size_t)n + strlen(when) < sizeof in->last_error)
		strcat(in->last_error, when);
}

/* exit_text: a wait status in words. */
static void exit_text(int status, char *out, size_t len)
{
	if (WIFEXITED(status)) {
		int c = WEXITSTATUS(status);
		snprintf(out, len, "exited with status %d%s", c,
			 c == 127 ? " (could not execute it)" : c == 126 ? " (could not switch user)" : "");
	} else if (WIFSIGNALED(status)) {
		const char *abbrev = sigabbrev_np(WTERMSIG(status));
		snprintf(out, len, "killed by signal %d%s%s%s%s", WTERMSIG(status),
			 abbrev ? " (SIG" : "", abbrev ? abbrev : "", abbrev ? ")" : "",
			 WCOREDUMP(status) ? ", core dumped" : "");
	} else {
		snprintf(out, len, "ended with wait status %#x", (unsigned)status);
	}
}

static double secs(uint64_t us)
{
	return (double)us / (double)USEC_PER_SEC;
}

static void arm_timer(struct inst *in, uint64_t usec, sd_event_time_handler_t cb);

static void disarm_timer(struct inst *in)
{
	if (in->timer)
		sd_event_source_set_enabled(in->timer, SD_EVENT_OFF);
}

/* ---- the instance table ---------------------------------------------------------- */

static struct inst *find_name(struct sup *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i]->name, name) == 0)
			return s->v[i];
	return NULL;
}

static struct inst *find_pid(struct sup *s, pid_t pid)
{
	for (size_t i = 0; pid > 0 && i < s->n; i++)
		if (s->v[i]->pid == pid)
			return s->v[i];
	return NULL;
}

static struct inst *inst_add(struct sup *s, const char *name)
{
	struct inst *in = xcalloc(1, sizeof *in);
	struct buf b = BUF_INIT;

	in->sup = s;
	in->name = xstrdup(name);
	buf_printf(&b, "%s/%s/instance.cf", s->dir, name);
	in->cf = buf_steal(&b);
	in->sessions = in->queue = -1;
	in->state = IS_STOPPED;
	s->v = xreallocarray(s->v, s->n + 1, sizeof *s->v);
	s->v[s->n++] = in;
	return in;
}

static void unwatch(struct inst *in)
{
	for (size_t i = 0; i < in->nwatch; i++)
		sd_event_source_unref(in->watch[i]);
	free(in->watch);
	in->watch = NULL;
	in->nwatch = 0;
}

/* inst_forget: out of the table, sockets closed. */
static void inst_forget(struct inst *in)
{
	struct sup *s = in->sup;

	msg_info("%s: removed", in->name);
	unwatch(in);
	sd_event_source_unref(in->timer);
	runsock_close(&in->socks);
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i] == in) {
			memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof *s->v);
			s->n--;
			break;
		}
	free(in->name);
	free(in->cf);
	free(in);
}

/* ---- readiness and shutdown ------------------------------------------------------- */

/* check_ready: the first time no instance is starting any more, say so
 * (and tell a service manager above us, if any). */
static void check_ready(struct sup *s)
{
	size_t running = 0, failed = 0;

	if (s->ready || s->stopping)
		return;
	for (size_t i = 0; i < s->n; i++) {
		if (s->v[i]->state == IS_STARTING || s->v[i]->state == IS_STOPPED)
			return; /* started, or still to be started */
		running += s->v[i]->state == IS_RUNNING;
		failed += s->v[i]->state == IS_FAILED;
	}
	s->ready = true;
	msg_info("ready: %zu instance%s running, %zu failed, %zu other, in %.2f s", running,
		 running == 1 ? "" : "s", failed, s->n - running - failed,
		 secs(now_us(s) - s->started_us));
	sd_notifyf(0, "READY=1\nSTATUS=%zu instances running", running);
}

/* check_stopped: during shutdown, exit once no instance process is left. */
static void check_stopped(struct sup *s)
{
	if (!s->stopping)
		return;
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i]->pid > 0)
			return;
	msg_info("every instance stopped: exiting");
	sd_event_exit(s->event, 0);
}

/* ---- starting ------------------------------------------------------------------- */

static void fail_start(struct inst *in, const char *why)
{
	struct buf b = BUF_INIT;

	buf_put_printable(&b, why, strlen(why));
	msg_error("%s: cannot start: %s (SIGHUP tries again)", in->name, buf_cstr(&b));
	set_error(in, "%s", buf_cstr(&b));
	buf_free(&b);
	/* Nobody would serve what queues on its sockets: refuse instead. */
	unwatch(in);
	runsock_close(&in->socks);
	in->state = IS_FAILED;
	check_ready(in->sup);
}

enum prep { PREP_OK, PREP_FAIL, PREP_WAIT };

/* holder: the other instance holding a socket on one of c's addresses
 * (an address moving between instances), or NULL; its text in txt. */
static struct inst *holder(const struct inst *in, const struct inst_conf *c,
			   char txt[RUNSOCK_TEXT_MAX])
{
	const struct sup *s = in->sup;

	for (size_t i = 0; i < s->n; i++) {
		const struct rsocks *k = &s->v[i]->socks;
		for (size_t j = 0; s->v[i] != in && j < k->n; j++)
			for (size_t a = 0; a < c->addrs.n; a++)
				if (k->v[j].port == c->port &&
				    ipaddr_equal(&k->v[j].addr, &c->addrs.addrs[a])) {
					runsock_text(&k->v[j], txt);
					return s->v[i];
				}
	}
	return NULL;
}

/* prepare: the instance's sockets match its instance.cf and its queue
 * directory is ready for its user; PREP_WAIT while an instance that is
 * stopping still holds one of its addresses. */
static enum prep prepare(struct inst *in, char *err, size_t errlen)
{
	struct inst_conf c;
	char txt[RUNSOCK_TEXT_MAX];
	enum prep r = PREP_FAIL;

	if (!inst_conf_read(in->cf, &c, err, errlen))
		return PREP_FAIL;
	struct inst *other = holder(in, &c, txt);
	if (other && other->term_sent) {
		msg_info("%s: waiting for %s until %s has stopped", in->name, txt, other->name);
		r = PREP_WAIT;
	} else if (other) {
		snprintf(err, errlen, "%s is held by instance %s", txt, other->name);
	} else if (runsock_sync(&in->socks, &c, err, errlen) &&
		   run_queue_prepare(c.queue_dir, &in->sup->user, err, errlen)) {
		r = PREP_OK;
	}
	inst_conf_free(&c);
	return r;
}

/* wait_address: until the holder stops. Its own sockets go meanwhile:
 * two instances swapping addresses must not wait for each other. */
static void wait_address(struct inst *in)
{
	runsock_close(&in->socks);
	in->state = IS_WAITING;
}

static void log_started(const struct inst *in)
{
	struct buf b = BUF_INIT;
	char txt[RUNSOCK_TEXT_MAX];

	for (size_t i = 0; i < in->socks.n; i++)
		buf_printf(&b, "%s%s", i ? ", " : "", runsock_text(&in->socks.v[i], txt));
	msg_info("%s: started (pid %ld) on %s", in->name, (long)in->pid, buf_cstr(&b));
	buf_free(&b);
}

static void inst_start(struct inst *in)
{
	struct sup *s = in->sup;
	char err[512];

	disarm_timer(in);
	unwatch(in);
	if (s->stopping)
		return;
	switch (prepare(in, err, sizeof err)) {
	case PREP_FAIL:
		fail_start(in, err);
		return;
	case PREP_WAIT:
		wait_address(in);
		return;
	case PREP_OK:
		break;
	}
	int *fds = xcalloc(in->socks.n + 1, sizeof *fds);
	for (size_t i = 0; i < in->socks.n; i++)
		fds[i] = in->socks.v[i].fd;
	struct spawn_req r = { s->prog, in->cf, fds, in->socks.n, in->name,
			       notify_address(s->notify), &s->user };
	in->pid = run_spawn(&r, err, sizeof err);
	free(fds);
	if (in->pid < 0) {
		in->pid = 0;
		fail_start(in, err);
		return;
	}
	in->state = IS_STARTING;
	in->started_us = now_us(s);
	in->term_sent = in->reloading = false;
	in->after = AFTER_NOTHING;
	in->status[0] = 0;
	in->sessions = -1;
	log_started(in);
}

static int on_backoff(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct inst *in = userdata;
	(void)src; (void)usec;

	inst_start(in);
	return 0;
}

static int on_connection(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct inst *in = userdata;
	char txt[RUNSOCK_TEXT_MAX];
	(void)src; (void)revents;

	for (size_t i = 0; i < in->socks.n; i++)
		if (in->socks.v[i].fd == fd)
			msg_info("%s: connection on %s: starting it", in->name,
				 runsock_text(&in->socks.v[i], txt));
	inst_start(in);
	return 0;
}

/* watch: socket activation: the first connection on any socket starts
 * the instance (the connection waits in the backlog meanwhile). */
static void watch(struct inst *in)
{
	unwatch(in);
	in->watch = xcalloc(in->socks.n + 1, sizeof *in->watch);
	in->nwatch = in->socks.n;
	for (size_t i = 0; i < in->socks.n; i++) {
		int r = sd_event_add_io(in->sup->event, &in->watch[i], in->socks.v[i].fd, EPOLLIN,
					on_connection, in);
		if (r < 0) {
			msg_warn("%s: cannot watch its sockets (%s): starting it now", in->name,
				 strerror(-r));
			inst_start(in);
			return;
		}
	}
	in->state = IS_ONDEMAND;
}

/* ---- stopping ------------------------------------------------------------------- */

static int on_stop_timeout(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct inst *in = userdata;
	(void)src; (void)usec;

	if (in->pid <= 0)
		return 0;
	msg_warn("%s: pid %ld did not stop within %llu s: killing it", in->name, (long)in->pid,
		 (unsigned long long)(STOP_TIMEOUT / USEC_PER_SEC));
	set_error(in, "did not stop within %llu s: killed",
		  (unsigned long long)(STOP_TIMEOUT / USEC_PER_SEC));
	kill(in->pid, SIGKILL);
	return 0;
}

static void arm_timer(struct inst *in, uint64_t usec, sd_event_time_handler_t cb)
{
	int r;

	sd_event_source_unref(in->timer);
	in->timer = NULL;
	r = sd_event_add_time_relative(in->sup->event, &in->timer, CLOCK_MONOTONIC, usec,
				       USEC_PER_SEC / 100, cb, in);
	if (r < 0)
		msg_error("%s: sd_event_add_time_relative: %s", in->name, strerror(-r));
}

/* inst_stop: SIGTERM (the instance drains), then after, once it exited;
 * at once when no process runs. A removal wins over a restart. */
static void inst_stop(struct inst *in, enum after after)
{
	if (after > in->after)
		in->after = after;
	if (in->pid <= 0) {
		enum after a = in->after;
		in->after = AFTER_NOTHING;
		disarm_timer(in);
		if (a == AFTER_FORGET)
			inst_forget(in);
		else if (a == AFTER_START)
			inst_start(in);
		else {
			unwatch(in);
			in->state = IS_STOPPED;
		}
		return;
	}
	if (in->term_sent)
		return;
	in->term_sent = true;
	in->state = IS_STOPPING;
	kill(in->pid, SIGTERM);
	arm_timer(in, STOP_TIMEOUT, on_stop_timeout);
}

/* ---- an instance ended ------------------------------------------------------------ */

/* retry_waiting: a stopped instance may have freed an address that a
 * waiting one needs: an address moved between instances. */
static void retry_waiting(struct sup *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i]->state == IS_WAITING && s->v[i]->in_map)
			inst_start(s->v[i]);
}

static void ended_requested(struct inst *in, pid_t pid, const char *how, int status)
{
	enum after a = in->after;
	bool clean = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
		     (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);

	if (clean)
		msg_info("%s: stopped (pid %ld %s)", in->name, (long)pid, how);
	else
		msg_warn("%s: pid %ld %s while stopping", in->name, (long)pid, how);
	if (!clean && in->last_error[0] == 0)
		set_error(in, "%s while stopping", how);
	in->term_sent = false;
	in->after = AFTER_NOTHING;
	in->state = IS_STOPPED;
	if (a == AFTER_FORGET)
		inst_forget(in);
	else if (a == AFTER_START && !in->sup->stopping)
		inst_start(in);
}

/* restart_later: the next start after the backoff, which doubles while
 * the instance keeps ending soon after its start. */
static void restart_later(struct inst *in, uint64_t up)
{
	if (up >= STABLE_AFTER || in->backoff_us == 0)
		in->backoff_us = BACKOFF_MIN;
	else if ((in->backoff_us *= 2) > BACKOFF_MAX)
		in->backoff_us = BACKOFF_MAX;
	in->restarts++;
	in->state = IS_BACKOFF;
	arm_timer(in, in->backoff_us, on_backoff);
}

static void ended_crash(struct inst *in, pid_t pid, const char *how, uint64_t up)
{
	restart_later(in, up);
	set_error(in, "%s", how);
	msg_warn("%s: pid %ld %s after %.1f s: restarting in %.1f s", in->name, (long)pid, how,
		 secs(up), secs(in->backoff_us));
}

/* ended: the process of in has exited with status. */
static void ended(struct inst *in, int status)
{
	struct sup *s = in->sup;
	pid_t pid = in->pid;
	uint64_t up = now_us(s) - in->started_us;
	char how[96];

	exit_text(status, how, sizeof how);
	in->pid = 0;
	in->sessions = -1;
	disarm_timer(in);
	if (in->term_sent) {
		ended_requested(in, pid, how, status);
		retry_waiting(s);
	} else if (s->stopping) {
		msg_info("%s: pid %ld %s", in->name, (long)pid, how);
		in->state = IS_STOPPED;
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && in->queue > 0) {
		/* Its own exit, but with mail to deliver: that cannot wait for a
		 * connection. */
		restart_later(in, up);
		msg_info("%s: pid %ld exited with %lld message%s queued: starting it again in %.1f s",
			 in->name, (long)pid, in->queue, in->queue == 1 ? "" : "s",
			 secs(in->backoff_us));
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		msg_info("%s: pid %ld exited on its own (idle): its next connection starts it",
			 in->name, (long)pid);
		watch(in);
	} else {
		ended_crash(in, pid, how, up);
	}
	check_ready(s);
	check_stopped(s);
}

static void reap(struct sup *s)
{
	int status;
	pid_t pid;

	/* What an instance said before it ended is read first. */
	notify_drain(s->notify);
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct inst *in = find_pid(s, pid);
		if (in)
			ended(in, status);
	}
}

/* ---- what instances say ---------------------------------------------------------- */

/* number: the decimal digits at *p (at most 18), then past them. */
static bool number(const char **p, long long *out)
{
	char digits[20];
	size_t n = strspn(*p, "0123456789");
	unsigned long long v;

	if (n == 0 || n >= sizeof digits - 1)
		return false;
	memcpy(digits, *p, n);
	digits[n] = 0;
	if (!str_parse_ull(digits, 999999999999999999ULL, &v))
		return false;
	*out = (long long)v;
	*p += n;
	return true;
}

/* parse_status: "sessions N, queue N", the instance's STATUS= text. */
static void parse_status(struct inst *in)
{
	const char *p = in->status;
	long long sess, q;

	if (str_has_prefix(p, "sessions ") && (p += 9, number(&p, &sess)) &&
	    str_has_prefix(p, ", queue ") && (p += 8, number(&p, &q)) && *p == 0) {
		in->sessions = sess;
		in->queue = q;
	}
}

static void on_notify(void *ctx, pid_t pid, const char *msg, size_t len)
{
	struct sup *s = ctx;
	struct inst *in = find_pid(s, pid);
	const char *v;
	size_t vlen;

	if (in == NULL) {
		msg_debug("notify: message from pid %ld, no instance of ours", (long)pid);
		return;
	}
	if ((v = notify_field(msg, len, "STATUS", &vlen)) != NULL) {
		struct buf b = BUF_INIT;
		buf_put_printable(&b, v, vlen < STATUS_MAX ? vlen : STATUS_MAX);
		snprintf(in->status, sizeof in->status, "%s", buf_cstr(&b));
		buf_free(&b);
		parse_status(in);
	}
	if (notify_field(msg, len, "RELOADING", &vlen))
		in->reloading = true;
	if ((v = notify_field(msg, len, "STOPPING", &vlen)) && vlen == 1 && *v == '1') {
		if (!in->term_sent)
			msg_info("%s: stopping on its own (pid %ld)", in->name, (long)pid);
		in->state = IS_STOPPING;
	}
	if ((v = notify_field(msg, len, "READY", &vlen)) && vlen == 1 && *v == '1') {
		if (in->state == IS_STARTING) {
			in->state = IS_RUNNING;
			msg_info("%s: ready (pid %ld, %.2f s)", in->name, (long)pid,
				 secs(now_us(s) - in->started_us));
			if (in->reload_pending && kill(in->pid, SIGHUP) == 0)
				msg_info("%s: reloading (pid %ld)", in->name, (long)pid);
			in->reload_pending = false;
			check_ready(s);
		} else if (in->reloading) {
			msg_info("%s: reloaded (pid %ld)", in->name, (long)pid);
		}
		in->reloading = false;
	}
}

/* ---- the map ------------------------------------------------------------------- */

/* inst_reload: the instance reads its instance.cf again (sessions go on). */
static void inst_reload(struct inst *in)
{
	if (in->state == IS_STARTING) {
		in->reload_pending = true; /* SIGHUP before its handler would kill it */
	} else if (in->state == IS_RUNNING && in->pid > 0) {
		kill(in->pid, SIGHUP);
		msg_info("%s: reloading (pid %ld)", in->name, (long)in->pid);
	}
	/* Otherwise it reads the new file when it next starts (a failed one
	 * is tried again by apply). */
}

/* inst_restart: its listeners changed: stop it, then new sockets, then
 * start; the sockets of addresses it keeps stay open throughout. */
static void inst_restart(struct inst *in)
{
	char err[512];

	switch (in->state) {
	case IS_STARTING:
	case IS_RUNNING:
	case IS_STOPPING:
		inst_stop(in, AFTER_START);
		break;
	case IS_ONDEMAND:
		/* Not running: only its sockets change, and it still waits. */
		unwatch(in);
		switch (prepare(in, err, sizeof err)) {
		case PREP_OK: watch(in); break;
		case PREP_WAIT: wait_address(in); break;
		case PREP_FAIL: fail_start(in, err); break;
		}
		break;
	case IS_BACKOFF:
	case IS_WAITING:
	case IS_STOPPED:
		inst_start(in);
		break;
	case IS_FAILED:
		break; /* apply tries it again */
	}
}

struct tally {
	size_t started, restarted, reloaded, removed;
};

static void apply_item(struct sup *s, const struct render_item *it, struct tally *t)
{
	struct inst *in = find_name(s, it->name);

	if (in == NULL || !in->in_map)
		return; /* a removal: handled below, from the map */
	if (it->change == CHANGE_NEW || it->change == CHANGE_RESTART) {
		/* NEW for an instance we run: its directory was recreated */
		if (in->state != IS_STOPPED || in->pid > 0) {
			msg_info("%s: listeners changed: restarting it", in->name);
			inst_restart(in);
			t->restarted++;
		}
	} else if (it->change == CHANGE_RELOAD && (in->state != IS_STOPPED || in->pid > 0)) {
		inst_reload(in);
		t->reloaded++;
	}
}

/* apply: the instances of m (just rendered, with st) become the running
 * set. Unchanged instances are not touched. */
static void apply(struct sup *s, const struct map *m, const struct render_stats *st)
{
	struct tally t = { 0 };
	size_t n = 0;

	for (size_t i = 0; i < s->n; i++)
		s->v[i]->in_map = false;
	for (size_t i = 0; i < m->n; i++) {
		if (!map_on_host(&m->inst[i], s->host))
			continue;
		struct inst *in = find_name(s, m->inst[i].name);
		if (in == NULL)
			in = inst_add(s, m->inst[i].name);
		in->in_map = true;
		n++;
	}
	for (size_t i = 0; i < st->nitems; i++)
		apply_item(s, &st->items[i], &t);
	for (size_t i = 0; i < s->n;) {
		struct inst *in = s->v[i];
		if (!in->in_map) {
			t.removed++;
			inst_stop(in, AFTER_FORGET); /* may free in at once */
			if (i < s->n && s->v[i] == in)
				i++;
			continue;
		}
		if (in->state == IS_STOPPED && in->pid <= 0) {
			inst_start(in);
			t.started++;
		} else if (in->state == IS_FAILED) {
			inst_start(in); /* SIGHUP tries again */
		}
		i++;
	}
	msg_info("%s: %zu instance%s: %zu started, %zu restarted, %zu reloaded, %zu removed",
		 s->o->map, n, n == 1 ? "" : "s", t.started, t.restarted, t.reloaded, t.removed);
}

/* load: the map, checked; false after logging why (nothing to do). */
static bool load(struct sup *s, struct map *m)
{
	struct diag d = DIAG_INIT;
	const char *nothing = s->n ? "nothing changed" : "nothing started";

	map_load(m, s->o->map, &d);
	if (d.errors) {
		msg_error("%s: %u error%s, %s", s->o->map, d.errors, d.errors == 1 ? "" : "s",
			  nothing);
		map_free(m);
		return false;
	}
	if (m->backend != BACKEND_VHOSTMTA) {
		msg_error("%s: the map's backend is %s: vhostmta run runs vhostmta instances only; "
			  "%s", s->o->map, backend_name(m->backend), nothing);
		map_free(m);
		return false;
	}
	return true;
}

/* render: m written under the output directory; false (m freed) after
 * logging why. */
static bool render(struct sup *s, struct map *m, struct render_stats *st)
{
	struct render_opts ro = { s->dir, s->host, BACKEND_VHOSTMTA, s->state };

	if (render_map(m, &ro, st))
		return true;
	msg_error("%s: cannot render into %s: %s", s->o->map, s->dir,
		  s->n ? "nothing changed" : "nothing started");
	render_stats_free(st);
	map_free(m);
	return false;
}

static void on_reload(struct sup *s)
{
	struct map m;
	struct render_stats st;

	msg_info("SIGHUP: reading %s", s->o->map);
	if (!load(s, &m) || !render(s, &m, &st))
		return;
	apply(s, &m, &st);
	render_stats_free(&st);
	map_free(&m);
}

/* ---- signals -------------------------------------------------------------------- */

static void shutdown_all(struct sup *s, const char *why)
{
	size_t n = 0;

	if (s->stopping) {
		msg_info("%s again: every instance closes its sessions now", why);
		for (size_t i = 0; i < s->n; i++)
			if (s->v[i]->pid > 0)
				kill(s->v[i]->pid, SIGTERM);
		return;
	}
	s->stopping = true;
	sd_notify(0, "STOPPING=1");
	for (size_t i = 0; i < s->n; i++) {
		struct inst *in = s->v[i];
		n += in->pid > 0;
		in->after = AFTER_NOTHING;
		inst_stop(in, AFTER_NOTHING);
	}
	msg_info("%s: stopping %zu instance%s", why, n, n == 1 ? "" : "s");
	check_stopped(s);
}

static int on_signal(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata)
{
	struct sup *s = userdata;
	(void)src;

	switch (si->ssi_signo) {
	case SIGCHLD:
		reap(s);
		break;
	case SIGHUP:
		if (!s->stopping)
			on_reload(s);
		break;
	default:
		shutdown_all(s, si->ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
	}
	return 0;
}

/* ---- the control socket's report -------------------------------------------------- */

static void report_num(struct buf *b, long long v)
{
	if (v < 0)
		buf_puts(b, "\t-");
	else
		buf_printf(b, "\t%lld", v);
}

static void report(void *ctx, struct buf *out)
{
	struct sup *s = ctx;
	uint64_t now = now_us(s);

	buf_puts(out, RUNCTL_MAGIC);
	buf_printf(out, "\t%ld\t%llu\t", (long)getpid(),
		   (unsigned long long)((now - s->started_us) / USEC_PER_SEC));
	runctl_field(out, s->o->map);
	buf_putc(out, '\t');
	runctl_field(out, s->user.name);
	buf_putc(out, '\n');
	for (size_t i = 0; i < s->n; i++) {
		const struct inst *in = s->v[i];
		runctl_field(out, in->name);
		buf_printf(out, "\t%s", state_names[in->state]);
		report_num(out, in->pid > 0 ? in->pid : -1);
		report_num(out, in->pid > 0 ? (long long)((now - in->started_us) / USEC_PER_SEC) : -1);
		report_num(out, in->pid > 0 ? in->sessions : -1);
		report_num(out, in->queue);
		report_num(out, in->restarts);
		buf_putc(out, '\t');
		runctl_field(out, in->last_error);
		buf_putc(out, '\t');
		runctl_field(out, in->status);
		buf_putc(out, '\n');
	}
}

/* ---- setting up ------------------------------------------------------------------- */

bool run_default_dir(char out[PATH_MAX])
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	if (geteuid() == 0)
		return snprintf(out, PATH_MAX, "%s", RUN_ROOT_DIR) < PATH_MAX;
	if (xdg && xdg[0] == '/')
		return snprintf(out, PATH_MAX, "%s/vhostmta/instances", xdg) < PATH_MAX;
	return false;
}

/* default_state: root's queues live in RENDER_VHOSTMTA_STATE; anyone
 * else's in $XDG_STATE_HOME/vhostmta or ~/.local/state/vhostmta. */
static bool default_state(char out[PATH_MAX])
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

	if (geteuid() == 0)
		return snprintf(out, PATH_MAX, "%s", RENDER_VHOSTMTA_STATE) < PATH_MAX;
	if (xdg && xdg[0] == '/')
		return snprintf(out, PATH_MAX, "%s/vhostmta", xdg) < PATH_MAX;
	if (home && home[0] == '/')
		return snprintf(out, PATH_MAX, "%s/.local/state/vhostmta", home) < PATH_MAX;
	return false;
}

/* make_dir: path and its parents (0755), then its absolute name. */
static bool make_dir(const char *path, char abs[PATH_MAX], const char *what)
{
	char p[PATH_MAX];

	if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) {
		msg_error("%s %s: path too long", what, path);
		return false;
	}
	for (char *c = strchr(p + 1, '/'); c; c = strchr(c + 1, '/')) {
		*c = 0;
		mkdir(p, 0755);
		*c = '/';
	}
	if (mkdir(p, 0755) != 0 && errno != EEXIST) {
		msg_error("%s %s: cannot create: %s", what, path, strerror(errno));
		return false;
	}
	if (realpath(p, abs) == NULL) {
		msg_error("%s %s: %s", what, path, strerror(errno));
		return false;
	}
	return true;
}

static bool take_lock(struct sup *s)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof path, "%s/" LOCK_NAME, s->dir);
	s->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->lockfd < 0) {
		msg_error("%s: %s", path, strerror(errno));
		return false;
	}
	if (flock(s->lockfd, LOCK_EX | LOCK_NB) != 0) {
		msg_error("%s: another vhostmta run supervises this directory", s->dir);
		return false;
	}
	return true;
}

/* std_fds: descriptors 0-2 open, so no socket ever lands there. */
static void std_fds(void)
{
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0) {
			int nul = open("/dev/null", O_RDWR);
			if (nul >= 0 && nul != fd) {
				dup2(nul, fd);
				close(nul);
			}
		}
}

/* raise_fd_limit: two sockets per instance stay open here. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			msg_warn("setrlimit RLIMIT_NOFILE: %s", strerror(errno));
	}
}

static bool setup_paths(struct sup *s)
{
	char dir[PATH_MAX], state[PATH_MAX], err[256];

	s->host = s->o->host;
	if (s->host == NULL) {
		if (gethostname(s->hostbuf, sizeof s->hostbuf) != 0) {
			msg_error("gethostname: %s", strerror(errno));
			return false;
		}
		s->hostbuf[sizeof s->hostbuf - 1] = 0;
		s->host = s->hostbuf;
	}
	if (s->o->outdir)
		snprintf(dir, sizeof dir, "%s", s->o->outdir);
	else if (!run_default_dir(dir)) {
		msg_error("-o DIR is required (not root, and no $XDG_RUNTIME_DIR)");
		return false;
	}
	if (s->o->state_dir)
		snprintf(state, sizeof state, "%s", s->o->state_dir);
	else if (!default_state(state)) {
		msg_error("--state-dir SDIR is required (not root, and no $XDG_STATE_HOME or $HOME)");
		return false;
	}
	if (!make_dir(dir, s->dir, "output directory") ||
	    !make_dir(state, s->state, "state directory"))
		return false;
	if (!run_user_resolve(s->o->user, &s->user, err, sizeof err)) {
		msg_error("%s", err);
		return false;
	}
	qcmd_find_prog(s->prog);
	if (access(s->prog, X_OK) != 0) {
		msg_error("%s: %s (set $VHOSTMTA_INSTANCE)", s->prog, strerror(errno));
		return false;
	}
	return take_lock(s);
}

static bool setup_loop(struct sup *s)
{
	static const int sigs[] = { SIGCHLD, SIGHUP, SIGTERM, SIGINT };
	char err[256], ctl[PATH_MAX + 16];
	sigset_t set;
	int r;

	if ((r = sd_event_new(&s->event)) < 0) {
		msg_error("sd_event_new: %s", strerror(-r));
		return false;
	}
	sigemptyset(&set);
	for (size_t i = 0; i < ARRAY_LEN(sigs); i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (size_t i = 0; i < ARRAY_LEN(sigs); i++)
		if ((r = sd_event_add_signal(s->event, &s->sig[i], sigs[i], on_signal, s)) < 0) {
			msg_error("sd_event_add_signal: %s", strerror(-r));
			return false;
		}
	signal(SIGPIPE, SIG_IGN);
	s->started_us = now_us(s);
	s->notify = notify_open(s->event, on_notify, s, err, sizeof err);
	if (s->notify == NULL) {
		msg_error("%s", err);
		return false;
	}
	snprintf(ctl, sizeof ctl, "%s/" RUNCTL_NAME, s->dir);
	s->ctl = runctl_open(s->event, ctl, report, s, err, sizeof err);
	if (s->ctl == NULL) {
		msg_error("%s", err);
		return false;
	}
	return true;
}

static void teardown(struct sup *s)
{
	while (s->n > 0) {
		struct inst *in = s->v[s->n - 1];
		unwatch(in);
		sd_event_source_unref(in->timer);
		runsock_close(&in->socks);
		free(in->name);
		free(in->cf);
		free(in);
		s->n--;
	}
	free(s->v);
	runctl_close(s->ctl);
	notify_close(s->notify);
	for (size_t i = 0; i < ARRAY_LEN(s->sig); i++)
		sd_event_source_unref(s->sig[i]);
	sd_event_unref(s->event);
	run_user_free(&s->user);
	if (s->lockfd >= 0)
		close(s->lockfd);
}

int run_supervise(const struct run_opts *o)
{
	struct sup s = { .o = o, .lockfd = -1 };
	struct map m;
	struct render_stats st;
	int rc = 1;

	umask(022); /* the rendered files are read by the instances' user */
	std_fds();
	raise_fd_limit();
	if (!load(&s, &m))
		return 1; /* before anything is created */
	if (!setup_paths(&s) || !setup_loop(&s)) {
		map_free(&m);
	} else if (render(&s, &m, &st)) {
		msg_info("supervising %s for host %s (rendered into %s, queues in %s, instances "
			 "run as %s)", o->map, s.host, s.dir, s.state, s.user.name);
		apply(&s, &m, &st);
		render_stats_free(&st);
		map_free(&m);
		check_ready(&s);
		int r = sd_event_loop(s.event);
		if (r < 0)
			msg_error("event loop: %s", strerror(-r));
		rc = r < 0 ? 1 : 0;
	}
	teardown(&s);
	return rc;
}

int run_status(const char *outdir, bool json)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];

	if (outdir)
		snprintf(dir, sizeof dir, "%s", outdir);
	else if (!run_default_dir(dir)) {
		fprintf(stderr, "vhostmta status: -o DIR is required (not root, and no "
				"$XDG_RUNTIME_DIR)\n");
		return 1;
	}
	snprintf(path, sizeof path, "%s/" RUNCTL_NAME, dir);
	return runctl_status(path, json);
}
