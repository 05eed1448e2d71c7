/* main.c: vhostmta-instance, one SMTP instance. Reads instance.cf, opens
 * the queue, takes its listening sockets (passed by systemd or the
 * manager, or bound here), and runs the connections on sd-event until
 * SIGTERM (drain), or until idle_exit_time passes with nothing to do.
 * SIGHUP re-reads instance.cf for new sessions. Owns the process: the
 * signals, sd_notify, the group-commit hook and the timers. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "buf.h"
#include "cf.h"
#include "conn.h"
#include "control.h"
#include "listen.h"
#include "log.h"
#include "policy.h"
#include "qmgr.h"
#include "queue.h"
#include "tls.h"
#include "util.h"

#ifndef VERSION
#define VERSION "0.1"
#endif
#define PROG "vhostmta-instance"
#define USEC_PER_SEC 1000000ULL
#define STATUS_INTERVAL USEC_PER_SEC     /* at most one STATUS= per second */
#define FINAL_GRACE (5 * USEC_PER_SEC)   /* after the forced close, exit anyway */

enum mode { MODE_RUN, MODE_CHECK, MODE_LIST, MODE_FLUSH, MODE_DELETE, MODE_DEFAULTS, MODE_HELP, MODE_VERSION };

struct opts {
	enum mode mode;
	const char *cf;
	const char *id; /* --delete */
	int verbose;
};

struct instance {
	const char *cfpath;
	sd_event *event;
	struct queue *queue;
	struct qmgr *qmgr;
	struct control *control;
	struct listeners listeners;
	struct server server;
	sd_event_source *post, *idle, *stop, *status;
	sd_event_source *commit; /* the group commit window's timer */
	sd_event_source *sig[3];
	bool stopping, forced;
	uint64_t status_at;  /* when STATUS= was last sent */
	size_t peak;         /* most sessions at once since the heap was last trimmed */
	char status_text[96];
};

/* ---- command line ------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " -c FILE [-v] [--check | --list-queue | --flush | --delete ID]\n"
		   "       " PROG " --dump-defaults | --help | --version\n\n"
		   "One vhostmta SMTP instance. Listens on the sockets passed with\n"
		   "LISTEN_FDS (systemd socket activation, or vhostmta run), each of which\n"
		   "must be an inet_interfaces address at smtpd_listen_port; without them\n"
		   "it binds those addresses itself.\n\n"
		   "  -c, --config FILE   the instance's instance.cf (required)\n"
		   "  -v, --verbose       more log lines (repeat for more)\n"
		   "      --check         check FILE, print \"FILE: ok\" and exit\n"
		   "      --list-queue    one line per queued message: id, sender, size,\n"
		   "                      recipients, and for deferred mail the tries, the\n"
		   "                      next attempt and the last reason; and exit\n"
		   "      --flush         make every deferred message due now (the running\n"
		   "                      instance, through its control socket)\n"
		   "      --delete ID     remove message ID without a bounce (the running\n"
		   "                      instance)\n"
		   "      --dump-defaults print every parameter's default and exit\n"
		   "  -h, --help          this text\n"
		   "  -V, --version       print the version\n\n"
		   "Signals: SIGTERM/SIGINT drain and exit, SIGHUP re-reads FILE.\n");
}

static void usage_error(const char *what, const char *arg) __attribute__((noreturn));
static void usage_error(const char *what, const char *arg)
{
	fprintf(stderr, PROG ": %s%s%s%s\n", what, arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
	fprintf(stderr, "Try '" PROG " --help'.\n");
	exit(2);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "check", no_argument, NULL, 'C' },
		{ "list-queue", no_argument, NULL, 'L' },
		{ "flush", no_argument, NULL, 'F' },
		{ "delete", required_argument, NULL, 'X' },
		{ "dump-defaults", no_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	memset(o, 0, sizeof *o);
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":c:vhV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': o->cf = optarg; break;
		case 'v': o->verbose++; break;
		case 'C': o->mode = MODE_CHECK; break;
		case 'L': o->mode = MODE_LIST; break;
		case 'F': o->mode = MODE_FLUSH; break;
		case 'X': o->mode = MODE_DELETE; o->id = optarg; break;
		case 'D': o->mode = MODE_DEFAULTS; break;
		case 'h': o->mode = MODE_HELP; return;
		case 'V': o->mode = MODE_VERSION; return;
		case ':': usage_error("option needs an argument:", argv[optind - 1]);
		default: usage_error("unknown option", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument", argv[optind]);
	if (o->mode != MODE_HELP && o->mode != MODE_VERSION && o->mode != MODE_DEFAULTS && o->cf == NULL)
		usage_error("-c FILE is required", NULL);
}

/* ---- configuration ------------------------------------------------------- */

/* Under the daemon, diagnostics are log lines (with "<N>" priorities). */
static void log_sink(void *ctx, enum diag_level level, const char *file, unsigned long line,
		     const char *msg)
{
	int prio = level == DIAG_ERROR ? LOG_ERR : LOG_WARNING;
	const char *what = level == DIAG_ERROR ? "error" : "warning";
	(void)ctx;

	if (line)
		log_msg(prio, "%s:%lu: %s: %s", file, line, what, msg);
	else
		log_msg(prio, "%s: %s: %s", file, what, msg);
}

/* conf_read: parse and check path; every error is reported. */
static bool conf_read(struct sconf *c, const char *path, struct diag *d)
{
	cf_parse_file(&c->cf, path, d); /* cf_finalize reports the rest too */
	return cf_finalize(&c->cf, path, d) && d->errors == 0;
}

static bool conf_policy(struct sconf *c, struct diag *d)
{
	const struct cf *cf = &c->cf;

	c->policy_loaded = policy_load(&c->policy, cf_str(cf, P_transport_table),
				       cf_str(cf, P_mynetworks), cf_str(cf, P_inet_interfaces),
				       cf_str(cf, P_proxy_interfaces), d);
	return c->policy_loaded && d->errors == 0;
}

/* conf_tls: the server certificate for STARTTLS. Under "encrypt" it
 * must load; under "may" a missing or broken one only means STARTTLS is
 * not offered (as in Postfix): mail keeps flowing in plaintext. A reload
 * reads the files again: new certificates for new sessions. */
static bool conf_tls(struct sconf *c, const char *path, struct diag *d)
{
	const struct cf *cf = &c->cf;
	enum tls_level level = tls_level_parse(cf_str(cf, P_smtpd_tls_security_level));
	char err[512];

	if (level == TLS_LEVEL_NONE)
		return true;
	c->tls = tls_server_ctx(cf_str(cf, P_smtpd_tls_cert_file), cf_str(cf, P_smtpd_tls_key_file),
				err, sizeof err);
	c->smtpd.tls = c->tls != NULL;
	if (c->tls)
		return true;
	if (level == TLS_LEVEL_ENCRYPT) {
		diag_error(d, path, 0, "smtpd_tls_security_level = encrypt: %s", err);
		return false;
	}
	diag_warn(d, path, 0, "%s: STARTTLS is not offered", err);
	return true;
}

/* conf_load: a whole generation, or NULL after reporting why. */
static struct sconf *conf_load(const char *path, struct diag *d)
{
	struct sconf *c = sconf_new();

	if (conf_read(c, path, d) && conf_policy(c, d) && conf_tls(c, path, d))
		return c;
	sconf_unref(c);
	return NULL;
}

/* The running instance keeps these until it is restarted: the listeners
 * (PF_RESTART) and the queue it has open. */
static bool needs_restart(enum param_id id)
{
	return (param_table[id].flags & PF_RESTART) || id == P_queue_directory;
}

/* escape_dollars: v as a raw value that expands back to v. */
static char *escape_dollars(const char *v)
{
	struct buf b = BUF_INIT;

	for (; *v; v++) {
		if (*v == '$')
			buf_putc(&b, '$');
		buf_putc(&b, *v);
	}
	return buf_steal(&b);
}

/* pin_restart_params: a reload keeps the old value of every parameter
 * that needs a restart, with a warning; returns how many changed. */
static size_t pin_restart_params(const struct cf *old, struct cf *cf, const char *path)
{
	size_t n = 0;

	for (size_t i = 0; i < P__COUNT; i++) {
		enum param_id id = (enum param_id)i;
		if (!needs_restart(id) || strcmp(cf_str(old, id), cf_str(cf, id)) == 0)
			continue;
		msg_warn("%s changed: restart the instance to apply", param_table[id].name);
		char *raw = escape_dollars(cf_str(old, id));
		cf_set_id(cf, id, raw, old->v[id].file ? old->v[id].file : path, old->v[id].line);
		free(raw);
		n++;
	}
	return n;
}

/* set_log_name: syslog_name names every log line. */
static void set_log_name(const struct cf *cf)
{
	log_set_name(cf_str(cf, P_syslog_name));
}

/* ---- STATUS=, idle exit, stopping ---------------------------------------- */

static uint64_t now_usec(sd_event *e)
{
	uint64_t t = 0;

	sd_event_now(e, CLOCK_MONOTONIC, &t);
	return t;
}

static void status_send(struct instance *in)
{
	char text[sizeof in->status_text];

	snprintf(text, sizeof text, "STATUS=sessions %zu, queue %zu",
		 server_sessions(&in->server), queue_size(in->queue));
	in->status_at = now_usec(in->event);
	if (strcmp(text, in->status_text) == 0)
		return;
	memcpy(in->status_text, text, sizeof text);
	sd_notify(0, text);
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s; (void)usec;
	status_send(userdata);
	return 0;
}

/* status_changed: STATUS= now, or at most once per STATUS_INTERVAL. */
static void status_changed(struct instance *in)
{
	int on = SD_EVENT_OFF;
	uint64_t due = in->status_at + STATUS_INTERVAL;

	sd_event_source_get_enabled(in->status, &on);
	if (on != SD_EVENT_OFF)
		return;
	if (now_usec(in->event) >= due) {
		status_send(in);
		return;
	}
	sd_event_source_set_time(in->status, due);
	sd_event_source_set_enabled(in->status, SD_EVENT_ONESHOT);
}

static uint64_t idle_usec(const struct instance *in)
{
	return (uint64_t)cf_num(&in->server.conf->cf, P_idle_exit_time) * USEC_PER_SEC;
}

/* idle_rearm: the idle period starts again at the last session's end. */
static void idle_rearm(struct instance *in)
{
	if (in->stopping || idle_usec(in) == 0 || server_sessions(&in->server) > 0) {
		sd_event_source_set_enabled(in->idle, SD_EVENT_OFF);
		return;
	}
	sd_event_source_set_time_relative(in->idle, idle_usec(in));
	sd_event_source_set_enabled(in->idle, SD_EVENT_ONESHOT);
}

static void exit_when_drained(struct instance *in)
{
	if (in->stopping && server_sessions(&in->server) == 0 && qmgr_busy(in->qmgr) == 0)
		sd_event_exit(in->event, 0);
}

/* deliveries_changed: a delivery ended or the queue shrank. */
static void deliveries_changed(void *ctx)
{
	status_changed(ctx);
	exit_when_drained(ctx);
}

static int on_idle(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct instance *in = userdata;
	(void)s; (void)usec;

	if (server_sessions(&in->server) > 0 || queue_size(in->queue) > 0 ||
	    queue_pending(in->queue) > 0) {
		idle_rearm(in);
		return 0;
	}
	msg_info("idle for %llus: exiting", (unsigned long long)(idle_usec(in) / USEC_PER_SEC));
	sd_notify(0, "STOPPING=1");
	in->stopping = true;
	sd_event_exit(in->event, 0);
	return 0;
}

/* TRIM_AFTER: a burst of this many sessions is worth giving back the
 * memory it took once it is over (glibc keeps freed memory otherwise:
 * an instance stayed at its peak after thousands of connections). */
#define TRIM_AFTER 32

static void sessions_changed(void *ctx)
{
	struct instance *in = ctx;
	size_t n = server_sessions(&in->server);

	if (n > in->peak)
		in->peak = n;
	if (n == 0 && in->peak >= TRIM_AFTER) {
		malloc_trim(0);
		in->peak = 0;
	}
	status_changed(in);
	idle_rearm(in);
	exit_when_drained(in);
}

/* on_stop_timer: sessions outlived smtpd_timeout after SIGTERM: close
 * them; if some still wait for the queue after FINAL_GRACE, exit anyway
 * (nothing unacknowledged is lost). */
static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct instance *in = userdata;
	(void)s; (void)usec;

	if (in->forced) {
		msg_warn("sessions that did not end: %zu: exiting anyway", server_sessions(&in->server));
		sd_event_exit(in->event, 0);
		return 0;
	}
	in->forced = true;
	msg_warn("sessions or deliveries still open after smtpd_timeout: %zu, %zu: closing them",
		 server_sessions(&in->server), qmgr_busy(in->qmgr));
	sd_event_source_set_time_relative(in->stop, FINAL_GRACE);
	sd_event_source_set_enabled(in->stop, SD_EVENT_ONESHOT);
	qmgr_abort(in->qmgr);
	server_close_all(&in->server);
	exit_when_drained(in);
	return 0;
}

static void begin_stop(struct instance *in, const char *why)
{
	if (in->stopping) {
		msg_info("%s again: closing every session and delivery now", why);
		in->forced = true;
		qmgr_abort(in->qmgr);
		server_close_all(&in->server);
		exit_when_drained(in);
		return;
	}
	in->stopping = true;
	sd_notify(0, "STOPPING=1");
	msg_info("%s: stopping (open sessions: %zu)", why, server_sessions(&in->server));
	sd_event_source_set_enabled(in->idle, SD_EVENT_OFF);
	uint64_t limit = (uint64_t)cf_num(&in->server.conf->cf, P_smtpd_timeout) * USEC_PER_SEC;
	sd_event_source_set_time_relative(in->stop, limit);
	sd_event_source_set_enabled(in->stop, SD_EVENT_ONESHOT);
	server_shutdown(&in->server);
	qmgr_stop(in->qmgr);
	exit_when_drained(in);
}

/* ---- reload -------------------------------------------------------------- */

static struct sconf *reload_conf(struct instance *in, struct diag *d)
{
	struct sconf *c = sconf_new();
	bool ok = conf_read(c, in->cfpath, d);

	if (ok && pin_restart_params(&in->server.conf->cf, &c->cf, in->cfpath) > 0)
		ok = cf_finalize(&c->cf, in->cfpath, d) && d->errors == 0;
	if (ok && conf_policy(c, d) && conf_tls(c, in->cfpath, d))
		return c;
	sconf_unref(c);
	return NULL;
}

static void reload(struct instance *in)
{
	struct diag d = { log_sink, NULL, 0, 0 };

	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)now_usec(in->event));
	struct sconf *c = reload_conf(in, &d);
	if (c == NULL) {
		msg_error("reload: %s has %u error%s: keeping the old configuration", in->cfpath,
			  d.errors, d.errors == 1 ? "" : "s");
	} else {
		c->smtpd.queue = in->queue;
		server_set_conf(&in->server, c);
		qmgr_set_conf(in->qmgr, c);
		sconf_unref(c);
		set_log_name(&in->server.conf->cf);
		msg_info("reloaded %s: new sessions use it", in->cfpath);
		idle_rearm(in);
	}
	sd_notify(0, "READY=1");
}

/* ---- event sources ------------------------------------------------------- */

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct instance *in = userdata;
	(void)s;

	if (si->ssi_signo == SIGHUP) {
		if (!in->stopping)
			reload(in);
		return 0;
	}
	begin_stop(in, si->ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
	return 0;
}

/* The group commit: one flush makes every message submitted before it
 * durable, at one inode and a few syncs for all of them. A flush waits up
 * to COMMIT_WINDOW_US for more messages unless COMMIT_BATCH are ready or
 * every session is already waiting: the 250 comes at most a millisecond
 * later, the disk does a fraction of the work. */
#define COMMIT_BATCH 8
#define COMMIT_WINDOW_US 1000

static void commit_now(struct instance *in)
{
	sd_event_source_set_enabled(in->commit, SD_EVENT_OFF);
	if (queue_pending(in->queue) > 0) {
		queue_flush(in->queue);
		status_changed(in);
	}
}

static int on_commit_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	commit_now(userdata);
	return 0;
}

/* on_post: after the I/O callbacks of an iteration. */
static int on_post(sd_event_source *s, void *userdata)
{
	struct instance *in = userdata;
	int armed = 0;
	(void)s;

	if (queue_pending(in->queue) == 0)
		return 0;
	/* No one else could join the batch: every session is waiting on it. */
	if (queue_pending(in->queue) >= COMMIT_BATCH || in->stopping ||
	    queue_pending(in->queue) >= server_sessions(&in->server)) {
		commit_now(in);
		return 0;
	}
	sd_event_source_get_enabled(in->commit, &armed);
	if (!armed) {
		sd_event_source_set_time_relative(in->commit, COMMIT_WINDOW_US);
		sd_event_source_set_enabled(in->commit, SD_EVENT_ONESHOT);
	}
	return 0;
}

static void add_signals(struct instance *in)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < ARRAY_LEN(sigs); i++)
		sigaddset(&set, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		msg_fatal("sigprocmask: %s", strerror(errno));
	for (size_t i = 0; i < ARRAY_LEN(sigs); i++) {
		int r = sd_event_add_signal(in->event, &in->sig[i], sigs[i], on_signal, in);
		if (r < 0)
			msg_fatal("sd_event_add_signal: %s", strerror(-r));
	}
	signal(SIGPIPE, SIG_IGN);
}

/* add_timer: a one-shot CLOCK_MONOTONIC timer, disabled until armed. */
static sd_event_source *add_timer(struct instance *in, sd_event_time_handler_t cb,
				  uint64_t accuracy)
{
	sd_event_source *s = NULL;
	int r = sd_event_add_time(in->event, &s, CLOCK_MONOTONIC, UINT64_MAX, accuracy, cb, in);

	if (r < 0)
		msg_fatal("sd_event_add_time: %s", strerror(-r));
	sd_event_source_set_enabled(s, SD_EVENT_OFF);
	return s;
}

static void add_sources(struct instance *in)
{
	int r;

	if ((r = sd_event_default(&in->event)) < 0)
		msg_fatal("sd_event_default: %s", strerror(-r));
	add_signals(in);
	if ((r = sd_event_add_post(in->event, &in->post, on_post, in)) < 0)
		msg_fatal("sd_event_add_post: %s", strerror(-r));
	/* Accuracy 1 us: sd-event's default (0) would let the window slip by
	 * up to 250 ms. */
	if ((r = sd_event_add_time_relative(in->event, &in->commit, CLOCK_MONOTONIC, COMMIT_WINDOW_US,
					    1, on_commit_timer, in)) < 0)
		msg_fatal("sd_event_add_time_relative: %s", strerror(-r));
	sd_event_source_set_enabled(in->commit, SD_EVENT_OFF);
	in->idle = add_timer(in, on_idle, USEC_PER_SEC);
	in->stop = add_timer(in, on_stop_timer, USEC_PER_SEC / 10);
	in->status = add_timer(in, on_status_timer, USEC_PER_SEC / 10);
	if ((r = sd_event_set_watchdog(in->event, true)) < 0)
		msg_fatal("sd_event_set_watchdog: %s", strerror(-r));
}

static void drop_sources(struct instance *in)
{
	for (size_t i = 0; i < ARRAY_LEN(in->sig); i++)
		in->sig[i] = sd_event_source_unref(in->sig[i]);
	in->post = sd_event_source_unref(in->post);
	in->commit = sd_event_source_unref(in->commit);
	in->idle = sd_event_source_unref(in->idle);
	in->stop = sd_event_source_unref(in->stop);
	in->status = sd_event_source_unref(in->status);
}

/* ---- the daemon ---------------------------------------------------------- */

static void log_listeners(const struct listeners *ls)
{
	char txt[SOCKADDR_TEXT_MAX];

	for (size_t i = 0; i < ls->n; i++) {
		const struct listener *l = &ls->v[i];
		sockaddr_text(&l->addr, l->port, txt);
		if (l->passed)
			msg_info("listening on %s (passed socket %s)", txt, l->name);
		else
			msg_info("listening on %s", txt);
	}
}

/* raise_fd_limit: one descriptor per session; systemd's soft limit of
 * 1024 protects select() users, and this daemon never calls select(). */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			msg_warn("setrlimit RLIMIT_NOFILE: %s", strerror(errno));
	}
}

/* start: configuration, queue and listeners; any failure is fatal. */
static struct sconf *start(struct instance *in)
{
	struct diag d = { log_sink, NULL, 0, 0 };
	char err[512];
	struct sconf *c = conf_load(in->cfpath, &d);

	if (c == NULL)
		msg_fatal("%s: %u error%s", in->cfpath, d.errors, d.errors == 1 ? "" : "s");
	set_log_name(&c->cf);
	raise_fd_limit();
	in->queue = queue_open(cf_str(&c->cf, P_queue_directory));
	if (in->queue == NULL)
		msg_fatal("cannot use queue_directory %s", cf_str(&c->cf, P_queue_directory));
	c->smtpd.queue = in->queue;
	if (!listen_open(&c->cf, &in->listeners, err, sizeof err))
		msg_fatal("%s", err);
	return c;
}

static void finish(struct instance *in)
{
	control_close(in->control);
	server_free(&in->server);
	qmgr_free(in->qmgr);
	queue_close(in->queue); /* withdraws anything never acknowledged */
	drop_sources(in);
	in->event = sd_event_unref(in->event);
}

/* The control socket's requests go to the queue manager. */
static size_t control_flush(void *ctx)
{
	return qmgr_flush(((struct instance *)ctx)->qmgr);
}

static bool control_delete(void *ctx, const char *id, char *err, size_t errlen)
{
	return qmgr_delete(((struct instance *)ctx)->qmgr, id, err, errlen);
}

static const struct control_ops control_ops = { control_flush, control_delete };

static int run(const struct opts *o)
{
	struct instance in = { .cfpath = o->cf };
	char err[512];
	struct sconf *c = start(&in);

	add_sources(&in);
	in.qmgr = qmgr_new(in.event, in.queue, c);
	if (in.qmgr == NULL)
		msg_fatal("cannot start the queue manager");
	qmgr_hook(in.qmgr, deliveries_changed, &in);
	in.control = control_open(in.event, cf_str(&c->cf, P_queue_directory), &control_ops, &in);
	server_init(&in.server, in.event, c);
	sconf_unref(c);
	in.server.changed = sessions_changed;
	in.server.ctx = &in;
	if (!server_listen(&in.server, &in.listeners, err, sizeof err))
		msg_fatal("%s", err);
	log_listeners(&in.listeners);
	sd_notify(0, "READY=1");
	status_send(&in);
	idle_rearm(&in);
	int r = sd_event_loop(in.event);
	if (r < 0)
		msg_error("event loop: %s", strerror(-r));
	finish(&in);
	msg_info("stopped");
	return r < 0 ? 1 : r;
}

/* list_queue: one line per message, incoming/ then deferred/, oldest
 * file first within each; a file may hold several messages (one group
 * commit). Read-only: safe beside a running instance. */
static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void print_msg(const struct qmsg *m)
{
	struct buf b = BUF_INIT;

	buf_put_printable(&b, m->sender, strlen(m->sender));
	printf("%s from=<%s> size=%llu nrcpt=%zu", m->id, buf_cstr(&b),
	       (unsigned long long)m->data_len, m->nrcpts);
	if (m->tries > 0) {
		char when[32];
		time_t t = (time_t)(m->next_us / 1000000);
		struct tm tm;
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
		buf_reset(&b);
		buf_put_printable(&b, m->reason ? m->reason : "", m->reason ? strlen(m->reason) : 0);
		printf(" deferred tries=%u next=%s (%s)", m->tries, when, buf_cstr(&b));
	}
	putchar('\n');
	buf_free(&b);
}

static int list_dir_queue(const char *dir)
{
	char path[PATH_MAX + 300], err[200];
	char **names = NULL;
	size_t nnames = 0;
	int rc = 0;
	DIR *dp = opendir(dir);

	if (dp == NULL) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, PROG ": %s: %s\n", dir, strerror(errno));
		return 1;
	}
	for (struct dirent *e; (e = readdir(dp)) != NULL;)
		if (e->d_name[0] != '.') {
			names = xreallocarray(names, nnames + 1, sizeof *names);
			names[nnames++] = xstrdup(e->d_name);
		}
	closedir(dp);
	if (nnames > 0)
		qsort(names, nnames, sizeof *names, name_cmp);
	for (size_t i = 0; i < nnames; i++) {
		struct qmsg *m;
		size_t n;
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (!qmsg_read_all(path, &m, &n, err, sizeof err)) {
			/* Gone meanwhile: delivered, or rewritten into deferred/. */
			if (strcmp(err, "open: No such file or directory") != 0) {
				fprintf(stderr, PROG ": %s: %s\n", path, err);
				rc = 1;
			}
		} else {
			for (size_t k = 0; k < n; k++)
				print_msg(&m[k]);
			qmsg_free_all(m, n);
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

static int list_queue(const char *cfpath)
{
	struct cf cf;
	struct diag d = DIAG_INIT;
	char dir[PATH_MAX + 16];
	int rc;

	cf_init(&cf);
	if (!cf_parse_file(&cf, cfpath, &d) || !cf_finalize(&cf, cfpath, &d)) {
		cf_free(&cf);
		return 1;
	}
	snprintf(dir, sizeof dir, "%s/incoming", cf_str(&cf, P_queue_directory));
	rc = list_dir_queue(dir);
	snprintf(dir, sizeof dir, "%s/deferred", cf_str(&cf, P_queue_directory));
	rc |= list_dir_queue(dir);
	cf_free(&cf);
	return rc;
}

/* queue_command: --flush or --delete ID, through the running instance's
 * control socket in queue_directory. */
static int queue_command(const struct opts *o)
{
	struct cf cf;
	struct diag d = DIAG_INIT;
	int rc;

	cf_init(&cf);
	if (!cf_parse_file(&cf, o->cf, &d) || !cf_finalize(&cf, o->cf, &d)) {
		cf_free(&cf);
		return 1;
	}
	const char *qdir = cf_str(&cf, P_queue_directory);
	rc = o->mode == MODE_FLUSH ? control_cli_flush(qdir) : control_cli_delete(qdir, o->id);
	cf_free(&cf);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct diag d = DIAG_INIT;

	log_init(PROG);
	parse_args(argc, argv, &o);
	log_set_verbose(o.verbose);
	switch (o.mode) {
	case MODE_HELP:
		usage(stdout);
		return 0;
	case MODE_VERSION:
		printf(PROG " %s\n", VERSION);
		return 0;
	case MODE_DEFAULTS:
		param_dump_defaults(stdout);
		return 0;
	case MODE_CHECK: {
		struct sconf *c = conf_load(o.cf, &d);
		if (c == NULL)
			return 1;
		sconf_unref(c);
		printf("%s: ok\n", o.cf);
		return 0;
	}
	case MODE_LIST:
		return list_queue(o.cf);
	case MODE_FLUSH:
	case MODE_DELETE:
		return queue_command(&o);
	case MODE_RUN:
		break;
	}
	return run(&o);
}
