/* test_control.c: instances/control.c. A real control socket in a fresh
 * directory, served by an sd-event loop the test drives, and a forked
 * client (control_request, the --flush/--delete commands, or raw bytes)
 * that writes what it got into a pipe the loop also watches. Requests:
 * flush, delete with good, refused and malformed ids, unknown requests,
 * lines at and past CONTROL_LINE_MAX, a request without newline (the
 * 5 s timeout), one request per connection, idle clients that block no
 * one, hostile error text made printable; the socket file: mode 0600, a
 * stale socket replaced, a regular file never removed, removed on close
 * only while it is ours; the peer's uid (as root); no instance running. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "buf.h"
#include "control.h"
#include "util.h"
#include "testutil.h"

#define GOOD_ID "0123456789ABCDEF"   /* the fake queue holds this one */
#define HOSTILE_ID "FFFFFFFFFFFFFFFF" /* its delete fails with hostile text */
#define CLIENT_LIMIT_MS 20000

/* ---- fake queue operations (the seam control.c calls) -------------------- */

struct fake {
	size_t flushes, deletes;
	char last_id[64];
};

static size_t fake_flush(void *ctx)
{
	struct fake *f = ctx;

	f->flushes++;
	return 3;
}

static bool fake_delete(void *ctx, const char *id, char *err, size_t errlen)
{
	struct fake *f = ctx;

	f->deletes++;
	snprintf(f->last_id, sizeof f->last_id, "%s", id);
	if (strcmp(id, GOOD_ID) == 0)
		return true;
	if (strcmp(id, HOSTILE_ID) == 0)
		snprintf(err, errlen, "bad\nline\x1b[31m\\");
	else
		snprintf(err, errlen, "no such message");
	return false;
}

static const struct control_ops fake_ops = { fake_flush, fake_delete };

/* ---- fixture -------------------------------------------------------------- */

struct t {
	char dir[64];
	char path[96];
	sd_event *event;
	struct control *c;
	struct fake fake;
};

static int setup_dir(void **state)
{
	struct t *t = xcalloc(1, sizeof *t);

	snprintf(t->dir, sizeof t->dir, "/tmp/test_control.XXXXXX");
	if (mkdtemp(t->dir) == NULL || sd_event_new(&t->event) < 0)
		return -1;
	snprintf(t->path, sizeof t->path, "%s/" CONTROL_NAME, t->dir);
	*state = t;
	return 0;
}

static int setup(void **state)
{
	if (setup_dir(state) < 0)
		return -1;
	struct t *t = *state;
	t->c = control_open(t->event, t->dir, &fake_ops, &t->fake);
	return t->c ? 0 : -1;
}

static int teardown(void **state)
{
	struct t *t = *state;

	control_close(t->c);
	sd_event_unref(t->event);
	rm_tree(t->dir);
	free(t);
	return 0;
}

/* ---- the forked client and the loop that serves it ------------------------- */

typedef int client_fn(struct t *t, const void *arg, struct buf *out);

static int child_pipe = -1; /* in the child: where its output goes */

struct collect {
	int fd;
	bool done;
	struct buf got;
};

static int on_pipe(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct collect *co = userdata;
	char b[4096];
	ssize_t n = read(fd, b, sizeof b);
	(void)revents;

	if (n > 0) {
		buf_append(&co->got, b, (size_t)n);
		return 0;
	}
	if (n < 0 && errno == EINTR)
		return 0;
	co->done = true;
	sd_event_source_set_enabled(s, SD_EVENT_OFF);
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* run_client: fn in a child (its output and exit status come back);
 * the loop serves the control socket until the child is done. */
static int run_client(struct t *t, client_fn *fn, const void *arg, struct buf *out)
{
	int p[2], status = 0;
	sd_event_source *src = NULL;
	struct collect co = { .got = BUF_INIT };

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct buf b = BUF_INIT;
		close(p[0]);
		child_pipe = p[1];
		int rc = fn(t, arg, &b);
		if (write(p[1], buf_cstr(&b), b.len) < 0)
			_exit(99);
		_exit(rc);
	}
	close(p[1]);
	co.fd = p[0];
	assert_true(sd_event_add_io(t->event, &src, p[0], EPOLLIN, on_pipe, &co) >= 0);
	long long deadline = now_ms() + CLIENT_LIMIT_MS;
	while (!co.done && now_ms() < deadline)
		assert_true(sd_event_run(t->event, 100000) >= 0);
	sd_event_source_unref(src);
	close(p[0]);
	if (!co.done)
		kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(co.done);
	buf_reset(out);
	buf_append(out, buf_cstr(&co.got), co.got.len);
	buf_free(&co.got);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* Child: control_request; "R:reply" or "E:errno". */
static int do_request(struct t *t, const void *arg, struct buf *out)
{
	struct buf r = BUF_INIT;

	if (control_request(t->dir, arg, &r) == 0)
		buf_printf(out, "R:%s", buf_cstr(&r));
	else
		buf_printf(out, "E:%d", errno);
	buf_free(&r);
	return 0;
}

static void request(struct t *t, const char *req, const char *want)
{
	struct buf got = BUF_INIT;

	run_client(t, do_request, req, &got);
	assert_string_equal(buf_cstr(&got), want);
	buf_free(&got);
}

struct raw {
	const char *data;
	size_t len;
	bool half_close; /* shutdown(SHUT_WR) after sending */
};

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -1;
	return fd;
}

/* Child: raw bytes in, everything read until the server closes out
 * ("R:" then the bytes; "X:errno" appended on a read error). */
static int do_raw(struct t *t, const void *arg, struct buf *out)
{
	const struct raw *r = arg;
	char b[512];
	int fd = raw_connect(t->path);

	if (fd < 0) {
		buf_printf(out, "E:%d", errno);
		return 0;
	}
	if (send(fd, r->data, r->len, MSG_NOSIGNAL) != (ssize_t)r->len)
		return 1;
	if (r->half_close)
		shutdown(fd, SHUT_WR);
	buf_puts(out, "R:");
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 15000) != 1)
			return 3;
		ssize_t n = recv(fd, b, sizeof b, 0);
		if (n == 0)
			break;
		if (n < 0) {
			buf_printf(out, "X:%d", errno);
			break;
		}
		buf_append(out, b, (size_t)n);
	}
	close(fd);
	return 0;
}

static void raw(struct t *t, const void *data, size_t len, bool half_close, struct buf *got)
{
	struct raw r = { data, len, half_close };

	assert_int_equal(run_client(t, do_raw, &r, got), 0);
}

/* ---- requests ---------------------------------------------------------------- */

static void test_flush(void **state)
{
	struct t *t = *state;

	request(t, "flush", "R:ok 3");
	assert_int_equal(t->fake.flushes, 1);
	request(t, "flush", "R:ok 3");
	assert_int_equal(t->fake.flushes, 2);
	assert_int_equal(t->fake.deletes, 0);
}

static void test_delete(void **state)
{
	struct t *t = *state;

	request(t, "delete " GOOD_ID, "R:ok");
	assert_int_equal(t->fake.deletes, 1);
	assert_string_equal(t->fake.last_id, GOOD_ID);
	request(t, "delete 00000000000000AA", "R:error no such message");
	assert_int_equal(t->fake.deletes, 2);
	assert_string_equal(t->fake.last_id, "00000000000000AA");
	assert_int_equal(t->fake.flushes, 0);
}

static void test_delete_bad_ids(void **state)
{
	static const char *const bad[] = {
		"delete 0123456789abcdef",   /* lower case */
		"delete 0123456789ABCDE",    /* 15 digits */
		"delete 0123456789ABCDEF0",  /* 17 digits */
		"delete 0123456789ABCDEG",
		"delete ",
		"delete  0123456789ABCDEF",
		"delete 0123456789ABCDEF ",
		"delete 0123456789ABCDEF\r",
		"delete ../../../etc/pass",
	};
	struct t *t = *state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		request(t, bad[i], "R:error invalid queue id");
	assert_int_equal(t->fake.deletes, 0);
}

static void test_unknown(void **state)
{
	static const char *const unknown[] = {
		"", "FLUSH", "flush ", " flush", "flush now", "flush\r", "list", "delete",
		"DELETE " GOOD_ID, "delete\t" GOOD_ID, "\x01\x02\x7f",
	};
	struct t *t = *state;

	for (size_t i = 0; i < ARRAY_LEN(unknown); i++)
		request(t, unknown[i], "R:error unknown request");
	assert_int_equal(t->fake.flushes, 0);
	assert_int_equal(t->fake.deletes, 0);
}

static void test_error_text_printable(void **state)
{
	struct t *t = *state;

	request(t, "delete " HOSTILE_ID, "R:error bad\\x0aline\\x1b[31m\\\\");
}

static void test_line_bounds(void **state)
{
	struct t *t = *state;
	char line[CONTROL_LINE_MAX + 2];
	struct buf got = BUF_INIT;

	/* Exactly CONTROL_LINE_MAX bytes is a line (an unknown one). */
	memset(line, 'a', CONTROL_LINE_MAX);
	line[CONTROL_LINE_MAX] = '\n';
	raw(t, line, CONTROL_LINE_MAX + 1, false, &got);
	assert_string_equal(buf_cstr(&got), "R:error unknown request\n");
	/* One more byte is refused before any newline arrives. */
	memset(line, 'a', CONTROL_LINE_MAX + 1);
	line[CONTROL_LINE_MAX + 1] = '\n';
	raw(t, line, CONTROL_LINE_MAX + 2, false, &got);
	assert_true(str_has_prefix(buf_cstr(&got), "R:error request too long\n"));
	/* A long "flush..." never reaches the queue. */
	memcpy(line, "flush", 5);
	raw(t, line, CONTROL_LINE_MAX + 2, false, &got);
	assert_true(str_has_prefix(buf_cstr(&got), "R:error request too long\n"));
	assert_int_equal(t->fake.flushes, 0);
	/* The client side refuses what the server would. */
	line[CONTROL_LINE_MAX + 1] = 0;
	struct buf r = BUF_INIT;
	errno = 0;
	assert_int_equal(control_request(t->dir, line, &r), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(control_request(t->dir, "flush\nflush", &r), -1);
	assert_int_equal(errno, EINVAL);
	buf_free(&r);
	/* The server is still there. */
	request(t, "flush", "R:ok 3");
	buf_free(&got);
}

static void test_one_request_per_connection(void **state)
{
	static const char two[] = "flush\nflush\ndelete " GOOD_ID "\n";
	struct t *t = *state;
	struct buf got = BUF_INIT;

	raw(t, two, sizeof two - 1, false, &got);
	assert_string_equal(buf_cstr(&got), "R:ok 3\n");
	assert_int_equal(t->fake.flushes, 1);
	assert_int_equal(t->fake.deletes, 0);
	buf_free(&got);
}

static void test_eof_without_newline(void **state)
{
	struct t *t = *state;
	struct buf got = BUF_INIT;

	raw(t, "flush", 5, true, &got);
	assert_string_equal(buf_cstr(&got), "R:");
	assert_int_equal(t->fake.flushes, 0);
	buf_free(&got);
}

static void test_no_newline_times_out(void **state)
{
	struct t *t = *state;
	struct buf got = BUF_INIT;
	long long start = now_ms();

	raw(t, "flush", 5, false, &got);
	long long took = now_ms() - start;
	assert_string_equal(buf_cstr(&got), "R:");
	assert_int_equal(t->fake.flushes, 0);
	assert_true(took >= 4500);
	assert_true(took < 9000);
	buf_free(&got);
}

/* Clients that connect and say nothing hold no one else up. */
static void test_idle_clients_do_not_block(void **state)
{
	struct t *t = *state;
	int idle[5];

	for (size_t i = 0; i < ARRAY_LEN(idle); i++)
		assert_true((idle[i] = raw_connect(t->path)) >= 0);
	request(t, "flush", "R:ok 3");
	request(t, "delete " GOOD_ID, "R:ok");
	for (size_t i = 0; i < ARRAY_LEN(idle); i++)
		close(idle[i]);
}

/* As root: another uid gets through a socket opened up by hand, and is
 * still refused by its credentials. */
static int do_request_as_nobody(struct t *t, const void *arg, struct buf *out)
{
	if (setgid(65534) < 0 || setuid(65534) < 0)
		return 1;
	return do_request(t, arg, out);
}

static void test_peer_credentials(void **state)
{
	struct t *t = *state;
	struct buf got = BUF_INIT;

	if (geteuid() != 0)
		skip();
	assert_int_equal(chmod(t->dir, 0711), 0);
	assert_int_equal(chmod(t->path, 0666), 0);
	assert_int_equal(run_client(t, do_request_as_nobody, "flush", &got), 0);
	assert_string_equal(buf_cstr(&got), "R:error permission denied");
	assert_int_equal(run_client(t, do_request_as_nobody, "delete " GOOD_ID, &got), 0);
	assert_string_equal(buf_cstr(&got), "R:error permission denied");
	assert_int_equal(t->fake.flushes, 0);
	assert_int_equal(t->fake.deletes, 0);
	request(t, "flush", "R:ok 3"); /* root (us) is let in */
	buf_free(&got);
}

/* ---- the socket file ------------------------------------------------------- */

static void test_socket_mode(void **state)
{
	struct t *t = *state;
	struct stat st;

	assert_int_equal(lstat(t->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, geteuid());
}

static void test_socket_mode_under_open_umask(void **state)
{
	struct t *t = *state;
	struct stat st;
	mode_t old = umask(0);

	control_close(t->c);
	t->c = control_open(t->event, t->dir, &fake_ops, &t->fake);
	assert_int_equal(umask(old), 0); /* restored */
	assert_non_null(t->c);
	assert_int_equal(lstat(t->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
}

/* A socket file with nobody behind it: ECONNREFUSED, then replaced. */
static void test_stale_socket(void **state)
{
	struct t *t = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct buf r = BUF_INIT;
	struct stat st;

	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", t->path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	close(fd);
	assert_int_equal(control_request(t->dir, "flush", &r), -1);
	assert_int_equal(errno, ECONNREFUSED);
	t->c = control_open(t->event, t->dir, &fake_ops, &t->fake);
	assert_non_null(t->c);
	assert_int_equal(lstat(t->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	request(t, "flush", "R:ok 3");
	buf_free(&r);
}

static void test_regular_file_kept(void **state)
{
	struct t *t = *state;
	char b[32] = { 0 };
	struct stat st;
	FILE *f = fopen(t->path, "w");

	assert_non_null(f);
	fputs("keep me\n", f);
	fclose(f);
	assert_null(control_open(t->event, t->dir, &fake_ops, &t->fake));
	assert_int_equal(lstat(t->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	f = fopen(t->path, "r");
	assert_non_null(fgets(b, sizeof b, f));
	fclose(f);
	assert_string_equal(b, "keep me\n");
	/* Nor a directory. */
	assert_int_equal(unlink(t->path), 0);
	assert_int_equal(mkdir(t->path, 0700), 0);
	assert_null(control_open(t->event, t->dir, &fake_ops, &t->fake));
	assert_int_equal(lstat(t->path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
}

static void test_close_unlinks_own_socket_only(void **state)
{
	struct t *t = *state;
	struct buf r = BUF_INIT;
	struct stat st;

	control_close(t->c);
	t->c = NULL;
	assert_int_equal(lstat(t->path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(control_request(t->dir, "flush", &r), -1);
	assert_int_equal(errno, ENOENT);
	/* Replaced behind our back: the replacement stays. */
	t->c = control_open(t->event, t->dir, &fake_ops, &t->fake);
	assert_non_null(t->c);
	assert_int_equal(unlink(t->path), 0);
	FILE *f = fopen(t->path, "w");
	assert_non_null(f);
	fclose(f);
	control_close(t->c);
	t->c = NULL;
	assert_int_equal(lstat(t->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	buf_free(&r);
}

static void test_path_too_long(void **state)
{
	struct t *t = *state;
	char dir[200];

	memset(dir, 'd', sizeof dir - 1);
	dir[sizeof dir - 1] = 0;
	assert_null(control_open(t->event, dir, &fake_ops, &t->fake));
}

/* ---- the --flush / --delete commands ------------------------------------------ */

struct cli {
	bool flush;
	const char *id;
};

/* Child: the command with its stdout into the pipe; its exit status. */
static int do_cli(struct t *t, const void *arg, struct buf *out)
{
	const struct cli *c = arg;
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	(void)out;

	if (null < 0 || dup2(child_pipe, STDOUT_FILENO) < 0 || dup2(null, STDERR_FILENO) < 0)
		return 98;
	int rc = c->flush ? control_cli_flush(t->dir) : control_cli_delete(t->dir, c->id);
	fflush(stdout);
	return rc;
}

static int cli(struct t *t, bool flush, const char *id, struct buf *out)
{
	struct cli c = { flush, id };

	return run_client(t, do_cli, &c, out);
}

static void test_cli_running(void **state)
{
	struct t *t = *state;
	struct buf out = BUF_INIT;

	assert_int_equal(cli(t, true, NULL, &out), 0);
	assert_string_equal(buf_cstr(&out), "flush: 3 deferred messages made due now\n");
	assert_int_equal(cli(t, false, GOOD_ID, &out), 0);
	assert_string_equal(buf_cstr(&out), GOOD_ID ": deleted\n");
	assert_int_equal(cli(t, false, "00000000000000AA", &out), 1);
	assert_string_equal(buf_cstr(&out), "");
	assert_int_equal(t->fake.deletes, 2);
	/* A malformed id is refused before the instance is asked. */
	assert_int_equal(cli(t, false, "0123456789abcdef", &out), 2);
	assert_int_equal(cli(t, false, "x", &out), 2);
	assert_int_equal(t->fake.deletes, 2);
	buf_free(&out);
}

static void test_cli_not_running(void **state)
{
	struct t *t = *state;
	struct buf out = BUF_INIT;
	char p[200];

	assert_int_equal(cli(t, false, GOOD_ID, &out), 1);
	/* An empty queue has nothing to flush: done. */
	assert_int_equal(cli(t, true, NULL, &out), 0);
	assert_true(strstr(buf_cstr(&out), "queue is empty") != NULL);
	/* Queued mail with no instance to deliver it: a failure. */
	snprintf(p, sizeof p, "%s/deferred", t->dir);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof p, "%s/deferred/" GOOD_ID, t->dir);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(cli(t, true, NULL, &out), 1);
	assert_string_equal(buf_cstr(&out), "");
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_bad_ids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_text_printable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_bounds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_request_per_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_without_newline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_newline_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_clients_do_not_block, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_credentials, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_mode_under_open_umask, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_socket, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_regular_file_kept, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_close_unlinks_own_socket_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_path_too_long, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_cli_running, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cli_not_running, setup_dir, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
