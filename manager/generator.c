/* generator.c: vhostmta-generator. systemd runs it early at boot and on
 * every daemon-reload; it turns the rendered instances into socket
 * drop-ins and .wants links (generator.h).
 *
 * It reads the rendered instance.cf files, not the map: they are what
 * `vhostmta apply` last accepted (it refuses a map with errors) and what
 * each instance checks its passed sockets against, so the sockets always
 * match the instance's own inet_interfaces and smtpd_listen_port. A map
 * edited by hand, broken or not, changes nothing until it is applied.
 *
 * Rules of systemd.generator(7): no unit is started, no other program is
 * run, nothing outside the output directory is written, no failure stops
 * the boot. An instance whose instance.cf cannot be used is skipped and
 * logged; the others are written. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "cf.h"
#include "generator.h"
#include "map.h"
#include "util.h"

#define LOG_LINES_MAX 30 /* a thousand broken instances must not flood the kernel log */

/* ---- logging: /dev/kmsg, else stderr ----------------------------------- */

static int log_fd = -1;
static unsigned log_lines;

/* log_open: systemd's convention, SYSTEMD_LOG_TARGET=console, sends the
 * lines to stderr (tests, a run by hand); otherwise the kernel log, where
 * the journal finds them once it runs. */
static void log_open(void)
{
	const char *target = getenv("SYSTEMD_LOG_TARGET");

	log_lines = 0;
	if (log_fd >= 0 && log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = -1;
	if (target == NULL || strcmp(target, "console") != 0)
		log_fd = open("/dev/kmsg", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (log_fd < 0)
		log_fd = STDERR_FILENO;
}

static void gen_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gen_log(int prio, const char *fmt, ...)
{
	char text[1024], line[1200];
	va_list ap;

	if (log_fd < 0)
		log_open();
	if (++log_lines > LOG_LINES_MAX + 1)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (log_lines == LOG_LINES_MAX + 1)
		snprintf(text, sizeof text, "more messages suppressed");
	/* One record per line: no newline of a message may start another. */
	for (char *p = text; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	int n = snprintf(line, sizeof line, "<%d>" GENERATOR_PROG ": %s\n", LOG_DAEMON | prio, text);
	if (n > 0 && write(log_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0 &&
	    log_fd != STDERR_FILENO) {
		close(log_fd);
		log_fd = STDERR_FILENO;
		(void)!write(log_fd, line, strlen(line));
	}
}

/* diag_to_log: instance.cf problems, as FILE:LINE: error: WHAT lines. */
static void diag_to_log(void *ctx, enum diag_level level, const char *file, unsigned long line,
			const char *msg)
{
	(void)ctx;
	if (level != DIAG_ERROR)
		return;
	if (line)
		gen_log(LOG_ERR, "%s:%lu: error: %s", file, line, msg);
	else
		gen_log(LOG_ERR, "%s: error: %s", file, msg);
}

/* ---- one instance -------------------------------------------------------- */

/* name_ok: a name render could have written, and a valid systemd
 * instance string: [A-Za-z0-9._-], starting with a letter or digit. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > MAP_NAME_MAX || strcmp(s, MAP_HOST_TABLE) == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

static bool family_wanted(const char *protocols, sa_family_t family)
{
	if (ascii_strcasecmp(protocols, "ipv4") == 0)
		return family == AF_INET;
	if (ascii_strcasecmp(protocols, "ipv6") == 0)
		return family == AF_INET6;
	return true;
}

/* listen_lines: the instance's sockets as ListenStream= lines, the way the
 * instance itself reads inet_interfaces: explicit addresses (or
 * loopback-only), those inet_protocols excludes dropped, an IPv4-mapped
 * address as the IPv4 address it carries. "all" cannot be a set of
 * sockets fixed at boot. Returns the number of lines, 0 after an error. */
static size_t listen_lines(const struct cf *cf, const char *path, struct buf *out)
{
	struct iflist parsed, want;
	char err[200], ip[IPADDR_STRLEN];
	const char *protocols = cf_str(cf, P_inet_protocols);
	long long port = 0;
	size_t n = 0;

	if (!param_check_value(P_smtpd_listen_port, cf_str(cf, P_smtpd_listen_port), &port, err,
			       sizeof err)) {
		gen_log(LOG_ERR, "%s: smtpd_listen_port: %s", path, err);
		return 0;
	}
	if (!iflist_parse(cf_str(cf, P_inet_interfaces), &parsed, err, sizeof err)) {
		gen_log(LOG_ERR, "%s: inet_interfaces: %s", path, err);
		return 0;
	}
	if (parsed.kind == IFLIST_ALL) {
		gen_log(LOG_ERR, "%s: inet_interfaces = all: socket activation needs explicit "
			"addresses", path);
		iflist_free(&parsed);
		return 0;
	}
	bool ok = iflist_expand(&parsed, &want, err, sizeof err);
	iflist_free(&parsed);
	if (!ok) {
		gen_log(LOG_ERR, "%s: inet_interfaces: %s", path, err);
		return 0;
	}
	for (size_t i = 0; i < want.n; i++) {
		struct ipaddr a;
		ipaddr_unmap(&want.addrs[i], &a);
		if (!family_wanted(protocols, a.family))
			continue;
		ipaddr_format(&a, ip);
		buf_printf(out, a.family == AF_INET6 ? "ListenStream=[%s]:%lld\n" : "ListenStream=%s:%lld\n",
			   ip, port);
		n++;
	}
	iflist_free(&want);
	if (n == 0)
		gen_log(LOG_ERR, "%s: inet_interfaces has no address for inet_protocols = %s", path,
			protocols);
	return n;
}

/* listen_params_ok: the parameters that make the sockets are sound, even
 * if others in the file are not. Keeping the sockets of such an instance
 * matters: at a daemon-reload systemd closes the sockets of a socket unit
 * that lost its Listen lines, and a unit left without sockets does not
 * get them back before it is restarted. */
static bool listen_params_ok(const struct cf *cf)
{
	static const enum param_id ids[] = { P_inet_interfaces, P_inet_protocols,
					     P_smtpd_listen_port };
	char err[200];

	if (!cf_is_set(cf, P_inet_interfaces))
		return false;
	for (size_t i = 0; i < ARRAY_LEN(ids); i++)
		if (!param_check_value(ids[i], cf_str(cf, ids[i]), NULL, err, sizeof err))
			return false;
	return true;
}

/* read_instance: the drop-in's text for instance name, false after an
 * error (logged). */
static bool read_instance(const char *instances, int dirfd, const char *name, struct buf *out)
{
	char path[4200], rel[MAP_NAME_MAX + 16];
	struct stat st;
	struct cf cf;
	struct diag d = { diag_to_log, NULL, 0, 0 };

	snprintf(rel, sizeof rel, "%s/instance.cf", name);
	snprintf(path, sizeof path, "%s/%s", instances, rel);
	/* A FIFO or a device here would hang the boot: regular files only. */
	if (fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
		gen_log(LOG_ERR, "%s: not a regular file", path);
		return false;
	}
	cf_init(&cf);
	bool clean = cf_parse_file(&cf, path, &d);
	clean = cf_finalize(&cf, path, &d) && clean && d.errors == 0;
	bool ok = clean || listen_params_ok(&cf);
	if (!clean && ok)
		gen_log(LOG_WARNING, "%s has errors: the instance will refuse it, but its sockets "
			"are kept (vhostmta apply rewrites the file)", path);
	if (ok) {
		buf_printf(out, "# Written by " GENERATOR_PROG " from %s; regenerated at every\n"
				"# daemon-reload: change the map and run vhostmta apply.\n[Socket]\n",
			   path);
		ok = listen_lines(&cf, path, out) > 0;
	}
	cf_free(&cf);
	if (!ok)
		gen_log(LOG_ERR, "instance %s skipped: vhostmta@%s.socket gets no sockets", name, name);
	return ok;
}

static bool write_file(int dirfd, const char *path, const struct buf *text)
{
	int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	const char *p = buf_cstr(text);
	size_t left = text->len;

	if (fd < 0)
		return false;
	while (left > 0) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			close(fd);
			return false;
		}
		p += w;
		left -= (size_t)w;
	}
	return close(fd) == 0;
}

static bool make_dir(int dirfd, const char *path)
{
	return mkdirat(dirfd, path, 0755) == 0 || errno == EEXIST;
}

/* emit: the drop-in and the .wants link of one instance. */
static bool emit(const struct generator_opts *o, int outfd, const char *name, const struct buf *text)
{
	char dir[MAP_NAME_MAX + 32], file[MAP_NAME_MAX + 64], link[MAP_NAME_MAX + 64];
	char target[4200];

	snprintf(dir, sizeof dir, "vhostmta@%s.socket.d", name);
	snprintf(file, sizeof file, "%s/" GENERATOR_DROPIN, dir);
	snprintf(link, sizeof link, GENERATOR_TARGET ".wants/vhostmta@%s.socket", name);
	snprintf(target, sizeof target, "%s/vhostmta@.socket", o->unit_dir);
	if (!make_dir(outfd, dir) || !write_file(outfd, file, text)) {
		gen_log(LOG_ERR, "%s/%s: cannot write: %s", o->normal_dir, file, strerror(errno));
		return false;
	}
	if (symlinkat(target, outfd, link) != 0 &&
	    (errno != EEXIST || unlinkat(outfd, link, 0) != 0 || symlinkat(target, outfd, link) != 0)) {
		gen_log(LOG_ERR, "%s/%s: cannot link: %s", o->normal_dir, link, strerror(errno));
		unlinkat(outfd, file, 0);
		unlinkat(outfd, dir, AT_REMOVEDIR);
		return false;
	}
	return true;
}

/* ---- the run --------------------------------------------------------------- */

/* is_instance_dir: a directory entry that render could have written. */
static int is_instance_dir(const struct dirent *e)
{
	return e->d_name[0] != '.' && (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) &&
	       name_ok(e->d_name);
}

unsigned generator_run(const struct generator_opts *o)
{
	struct dirent **names = NULL;
	struct buf text = BUF_INIT;
	unsigned skipped = 0, written = 0;

	int dirfd = open(o->instances, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		/* Nothing applied yet: nothing to generate, and nothing wrong. */
		if (errno == ENOENT)
			return 0;
		gen_log(LOG_ERR, "%s: %s", o->instances, strerror(errno));
		return 1;
	}
	int outfd = open(o->normal_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int n = outfd < 0 ? -1 : scandirat(dirfd, ".", &names, is_instance_dir, alphasort);
	if (outfd < 0 || n < 0) {
		gen_log(LOG_ERR, "%s: %s", outfd < 0 ? o->normal_dir : o->instances, strerror(errno));
		if (outfd >= 0)
			close(outfd);
		close(dirfd);
		return 1;
	}
	bool wants_made = false;
	for (int i = 0; i < n; i++) {
		const char *name = names[i]->d_name;
		struct stat st;
		char rel[sizeof names[i]->d_name + 16];
		snprintf(rel, sizeof rel, "%s/instance.cf", name);
		/* A directory without instance.cf is not an instance (render
		 * writes instance.cf in every one). */
		if (fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		buf_reset(&text);
		if (!wants_made)
			wants_made = make_dir(outfd, GENERATOR_TARGET ".wants");
		if (read_instance(o->instances, dirfd, name, &text) && wants_made &&
		    emit(o, outfd, name, &text))
			written++;
		else
			skipped++;
	}
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	buf_free(&text);
	close(outfd);
	close(dirfd);
	if (skipped)
		gen_log(LOG_WARNING, "%u instance%s of %s written, %u skipped", written,
			written == 1 ? "" : "s", o->instances, skipped);
	return skipped;
}

int generator_main(int argc, char **argv, const char *instances)
{
	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: " GENERATOR_PROG " NORMAL_DIR [EARLY_DIR LATE_DIR]\n");
		return 2;
	}
	struct generator_opts o = { instances, argv[1], UNITDIR };
	log_open();
	generator_run(&o);
	return 0;
}
