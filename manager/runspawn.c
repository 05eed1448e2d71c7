/* runspawn.c: the user instances run as, their queue directories, and
 * the fork+exec of one instance (see runspawn.h). Everything the child
 * needs is prepared before fork; between fork and exec the child only
 * moves descriptors, drops privileges and fills in its own pid. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "runspawn.h"
#include "util.h"

#define EXIT_NOEXEC 127 /* as a shell says "command not found" */
#define EXIT_NOUSER 126

static bool fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* ---- the user ------------------------------------------------------------------ */

static bool self_user(const char *name, struct run_user *u, char *err, size_t errlen)
{
	struct passwd *pw = getpwuid(geteuid());
	char num[32];

	snprintf(num, sizeof num, "%lu", (unsigned long)geteuid());
	if (name && (pw == NULL || strcmp(pw->pw_name, name) != 0) && strcmp(name, num) != 0)
		return fail(err, errlen, "--user %s: only root can run instances as another user",
			    name);
	u->name = xstrdup(pw ? pw->pw_name : num);
	u->uid = geteuid();
	u->gid = getegid();
	u->drop = false;
	return true;
}

/* groups_of: the supplementary groups of name, as login would set them. */
static void groups_of(const char *name, gid_t gid, struct run_user *u)
{
	int n = 16;

	for (;;) {
		int got = n;
		u->groups = xreallocarray(u->groups, (size_t)n, sizeof *u->groups);
		if (getgrouplist(name, gid, u->groups, &got) >= 0) {
			u->ngroups = (size_t)got;
			return;
		}
		if (got <= n || got > 65536) { /* no progress: just the primary group */
			u->groups[0] = gid;
			u->ngroups = 1;
			return;
		}
		n = got;
	}
}

bool run_user_resolve(const char *name, struct run_user *u, char *err, size_t errlen)
{
	memset(u, 0, sizeof *u);
	if (geteuid() != 0)
		return self_user(name, u, err, errlen);
	const char *want = name ? name : getpwnam(RUN_DEFAULT_USER) ? RUN_DEFAULT_USER
								    : RUN_FALLBACK_USER;
	struct passwd *pw = getpwnam(want);
	if (pw == NULL)
		return fail(err, errlen, "user %s does not exist%s", want,
			    name ? "" : " (create " RUN_DEFAULT_USER " or give --user)");
	if (pw->pw_uid == 0)
		return fail(err, errlen, "user %s is root: instances never run as root", want);
	u->name = xstrdup(pw->pw_name);
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	u->drop = true;
	groups_of(u->name, u->gid, u);
	return true;
}

void run_user_free(struct run_user *u)
{
	free(u->name);
	free(u->groups);
	memset(u, 0, sizeof *u);
}

/* ---- the queue directory ------------------------------------------------------------- */

/* What a queue directory holds (instances/queue.c, instances/control.c). */
static const char *const queue_entries[] = { "tmp", "incoming", "deferred", "corrupt", "control" };
static const char *const queue_subdirs[] = { "tmp", "incoming", "deferred", "corrupt" };

static bool is_queue_entry(const char *name)
{
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return true;
	for (size_t i = 0; i < ARRAY_LEN(queue_entries); i++)
		if (strcmp(name, queue_entries[i]) == 0)
			return true;
	return false;
}

/* only_queue: fd (a directory) holds nothing but a queue's entries. */
static bool only_queue(int fd, char *bad, size_t badlen)
{
	int dup_fd = dup(fd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	bool ok = true;

	if (d == NULL) {
		if (dup_fd >= 0)
			close(dup_fd);
		snprintf(bad, badlen, "cannot read it: %s", strerror(errno));
		return false;
	}
	rewinddir(d);
	for (struct dirent *e; ok && (e = readdir(d)) != NULL;)
		if (!is_queue_entry(e->d_name)) {
			snprintf(bad, badlen, "it holds %.64s", e->d_name);
			ok = false;
		}
	closedir(d);
	return ok;
}

/* chown_files: the regular files of one queue subdirectory, never through
 * a symbolic link, never a file with other hard links. */
static void chown_files(int dfd, const struct run_user *u)
{
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	struct stat st;

	if (d == NULL) {
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (e->d_name[0] == '.' ||
		    fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISREG(st.st_mode) || st.st_nlink != 1)
			continue;
		if (fchownat(dfd, e->d_name, u->uid, u->gid, AT_SYMLINK_NOFOLLOW) != 0) {
			/* the instance reports a file it cannot read */
		}
	}
	closedir(d);
}

/* hand_over: the queue in fd, files included, now belongs to u. */
static void hand_over(int fd, const struct run_user *u)
{
	struct stat st;

	for (size_t i = 0; i < ARRAY_LEN(queue_subdirs); i++) {
		int sub = openat(fd, queue_subdirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		chown_files(sub, u);
		if (fchown(sub, u->uid, u->gid) != 0) {
			/* the instance will say what it cannot open */
		}
		close(sub);
	}
	if (fstatat(fd, "control", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
	    fchownat(fd, "control", u->uid, u->gid, AT_SYMLINK_NOFOLLOW) != 0) {
		/* the instance replaces its control socket at start */
	}
}

/* make_parents: every directory above path, 0755, owned by whoever we are. */
static void make_parents(const char *path)
{
	char p[PATH_MAX];

	snprintf(p, sizeof p, "%s", path);
	for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = 0;
		mkdir(p, 0755);
		*s = '/';
	}
}

static bool take_dir(int fd, const char *dir, bool created, const struct run_user *u,
		     char *err, size_t errlen)
{
	struct stat st;
	char bad[128];

	if (fstat(fd, &st) != 0)
		return fail(err, errlen, "queue directory %s: %s", dir, strerror(errno));
	if (u->drop && (st.st_uid != u->uid || st.st_gid != u->gid)) {
		if (!created && !only_queue(fd, bad, sizeof bad))
			return fail(err, errlen, "queue directory %s belongs to uid %lu and is not a "
				    "queue (%s): not handing it to %s", dir,
				    (unsigned long)st.st_uid, bad, u->name);
		if (!created)
			hand_over(fd, u);
		if (fchown(fd, u->uid, u->gid) != 0)
			return fail(err, errlen, "chown %s to %s: %s", dir, u->name, strerror(errno));
	} else if (st.st_uid != u->uid && !u->drop) {
		return fail(err, errlen, "queue directory %s belongs to uid %lu, not to us", dir,
			    (unsigned long)st.st_uid);
	}
	if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) != 0)
		return fail(err, errlen, "chmod %s: %s", dir, strerror(errno));
	return true;
}

bool run_queue_prepare(const char *dir, const struct run_user *u, char *err, size_t errlen)
{
	bool created;

	if (dir[0] != '/' || strlen(dir) >= PATH_MAX)
		return fail(err, errlen, "queue_directory %s is not an absolute path", dir);
	make_parents(dir);
	created = mkdir(dir, 0700) == 0;
	if (!created && errno != EEXIST)
		return fail(err, errlen, "create queue directory %s: %s", dir, strerror(errno));
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errlen, "queue directory %s: %s", dir,
			    errno == ELOOP ? "is a symbolic link" : strerror(errno));
	bool ok = take_dir(fd, dir, created, u, err, errlen);
	close(fd);
	return ok;
}

/* ---- fork and exec --------------------------------------------------------------- */

static bool inherited(const char *var)
{
	static const char *const ours[] = {
		"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET=",
		"WATCHDOG_PID=", "WATCHDOG_USEC=",
	};
	for (size_t i = 0; i < ARRAY_LEN(ours); i++)
		if (str_has_prefix(var, ours[i]))
			return false;
	return true;
}

/* The child's environment: ours without systemd's per-service variables,
 * plus the sockets' and the notify socket's. LISTEN_PID is filled in by
 * the child. */
struct childenv {
	char **envp;
	size_t n;
	char pid[32];
	char *own[3];
};

static void env_build(struct childenv *c, const struct spawn_req *r)
{
	size_t n = 0;
	struct buf names = BUF_INIT;

	for (char **e = environ; *e; e++)
		n++;
	c->envp = xcalloc(n + 5, sizeof *c->envp);
	c->n = 0;
	for (char **e = environ; *e; e++)
		if (inherited(*e))
			c->envp[c->n++] = *e;
	for (size_t i = 0; i < r->nfds; i++)
		buf_printf(&names, "%s%s", i ? ":" : "", r->fdname);
	struct buf b = BUF_INIT;
	buf_printf(&b, "LISTEN_FDS=%zu", r->nfds);
	c->own[0] = buf_steal(&b);
	buf_printf(&b, "LISTEN_FDNAMES=%s", buf_cstr(&names));
	c->own[1] = buf_steal(&b);
	buf_printf(&b, "NOTIFY_SOCKET=%s", r->notify);
	c->own[2] = buf_steal(&b);
	buf_free(&names);
	for (size_t i = 0; i < ARRAY_LEN(c->own); i++)
		c->envp[c->n++] = c->own[i];
	snprintf(c->pid, sizeof c->pid, "LISTEN_PID=0");
	c->envp[c->n++] = c->pid;
	c->envp[c->n] = NULL;
}

static void env_free(struct childenv *c)
{
	for (size_t i = 0; i < ARRAY_LEN(c->own); i++)
		free(c->own[i]);
	free(c->envp);
}

static void close_from(int lowest)
{
	struct rlimit rl;

	if (close_range((unsigned)lowest, ~0U, 0) == 0)
		return;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur > 1 << 20)
		rl.rlim_cur = 1 << 20;
	for (int fd = lowest; fd < (int)rl.rlim_cur; fd++)
		close(fd);
}

/* What a child that could not exec tells the supervisor. */
struct spawn_fail {
	int err;
	char what[96];
};

/* die: tell the supervisor through fd (the report pipe), then exit. */
static void die(int fd, int code, const char *what, const char *arg) __attribute__((noreturn));
static void die(int fd, int code, const char *what, const char *arg)
{
	struct spawn_fail f = { errno, "" };

	snprintf(f.what, sizeof f.what, "%s %s", what, arg);
	if (write(fd, &f, sizeof f) != (ssize_t)sizeof f) {
		/* the supervisor sees the exit status instead */
	}
	_exit(code);
}

/* child: between fork and exec. report is the write end of a close-on-
 * exec pipe: it closes at exec, which is when the supervisor goes on. */
static void child(const struct spawn_req *r, char **argv, struct childenv *env, int *tmp,
		  int report, pid_t parent) __attribute__((noreturn));
static void child(const struct spawn_req *r, char **argv, struct childenv *env, int *tmp,
		  int report, pid_t parent)
{
	sigset_t none;
	int base = 3 + (int)r->nfds;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL); /* ignored in the supervisor; exec would keep that */
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nul > 0) {
		dup2(nul, STDIN_FILENO);
		close(nul);
	}
	/* Out of the way first, then into place: dup2 clears close-on-exec.
	 * The report pipe goes to base, everything above it is closed. */
	if ((report = fcntl(report, F_DUPFD_CLOEXEC, base + 1)) < 0)
		_exit(EXIT_NOEXEC);
	for (size_t i = 0; i < r->nfds; i++)
		if ((tmp[i] = fcntl(r->fds[i], F_DUPFD, base + 1)) < 0)
			die(report, EXIT_NOEXEC, "passing the sockets to", r->prog);
	for (size_t i = 0; i < r->nfds; i++)
		if (dup2(tmp[i], 3 + (int)i) < 0)
			die(report, EXIT_NOEXEC, "passing the sockets to", r->prog);
	if (dup3(report, base, O_CLOEXEC) < 0)
		_exit(EXIT_NOEXEC);
	report = base;
	close_from(base + 1);
	if (r->user->drop) {
		if (setgroups(r->user->ngroups, r->user->groups) != 0 || setgid(r->user->gid) != 0 ||
		    setuid(r->user->uid) != 0)
			die(report, EXIT_NOUSER, "switching to user", r->user->name);
		if (setuid(0) == 0) /* the switch must not be undoable */
			die(report, EXIT_NOUSER, "still root after switching to", r->user->name);
	}
	/* Orphans would hold the addresses and queues a new supervisor needs:
	 * an instance drains and exits when its supervisor dies. Set after the
	 * user switch, which clears it. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
		die(report, EXIT_NOEXEC, "supervisor gone before starting", r->prog);
	if (chdir("/") != 0)
		die(report, EXIT_NOEXEC, "chdir / before starting", r->prog);
	umask(077);
	snprintf(env->pid, sizeof env->pid, "LISTEN_PID=%ld", (long)getpid());
	execve(r->prog, argv, env->envp);
	die(report, EXIT_NOEXEC, "executing", r->prog);
}

/* exec_result: wait until the child has exec'ed (the pipe closes empty)
 * or failed (it says why). Until then it may still hold copies of other
 * instances' sockets: a socket closed here must be gone when this
 * returns, so that its address can be bound again at once. */
static bool exec_result(int fd, char *err, size_t errlen)
{
	struct spawn_fail f;
	size_t got = 0;

	while (got < sizeof f) {
		ssize_t n = read(fd, (char *)&f + got, sizeof f - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got == 0)
		return true;
	if (got < sizeof f)
		return fail(err, errlen, "the child failed before exec");
	f.what[sizeof f.what - 1] = 0;
	return fail(err, errlen, "%s: %s", f.what, strerror(f.err));
}

pid_t run_spawn(const struct spawn_req *r, char *err, size_t errlen)
{
	char *argv[] = { (char *)r->prog, "-c", (char *)r->cf, NULL };
	struct childenv env;
	int *tmp = xcalloc(r->nfds + 1, sizeof *tmp);
	pid_t parent = getpid();
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0) {
		fail(err, errlen, "pipe: %s", strerror(errno));
		free(tmp);
		return -1;
	}
	env_build(&env, r);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0)
		child(r, argv, &env, tmp, p[1], parent);
	close(p[1]);
	if (pid < 0)
		fail(err, errlen, "fork: %s", strerror(errno));
	else if (!exec_result(p[0], err, errlen))
		pid = -1; /* it exits; its status is of no more interest */
	close(p[0]);
	env_free(&env);
	free(tmp);
	return pid;
}
