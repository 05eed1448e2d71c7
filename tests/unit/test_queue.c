/* test_queue.c: instances/queue.c. Ids; the write/submit/flush/read round
 * trip; callbacks only in queue_flush and only after the rename; group
 * commit into one shared file (nothing on disk before the flush), a big
 * message spilling into a file of its own; abort and close leave nothing;
 * the writer refuses what the reader would; queue_open's clean-up (tmp/
 * leftovers, a valid single- and multi-message file cut at every length,
 * tables of corrupt and valid files, special entries); I/O errors reach
 * the callback (every message of the shared file) and leave no visible
 * file. Every test
 * gets its own directory under /tmp; log lines are captured from stderr
 * and checked word for word where the brief fixes them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "queue.h"
#include "util.h"

/* L: a literal and its length, embedded NULs included. */
#define L(x) x, sizeof(x) - 1

/* ---- fixture: a fresh directory per test ------------------------------ */

static int setup(void **state)
{
	char tmpl[] = "/tmp/test_queue.XXXXXX";

	if (mkdtemp(tmpl) == NULL)
		return -1;
	*state = xstrdup(tmpl);
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	/* A test may leave a directory without write permission. */
	if (flag == FTW_DP)
		chmod(path, 0700);
	return remove(path);
}

static int teardown(void **state)
{
	nftw(*state, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(*state);
	return 0;
}

/* path: dir/sub/name in a rotating set of static buffers. */
static const char *path(const char *dir, const char *sub, const char *name)
{
	static char bufs[4][1024];
	static int next;
	char *p = bufs[next++ % 4];

	snprintf(p, sizeof bufs[0], "%s%s%s%s%s", dir, sub ? "/" : "", sub ? sub : "",
		 name ? "/" : "", name ? name : "");
	return p;
}

static bool exists(const char *p)
{
	struct stat sb;
	return lstat(p, &sb) == 0;
}

static size_t count_entries(const char *dir, const char *sub)
{
	DIR *d = opendir(path(dir, sub, NULL));
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(d);
	return n;
}

static void write_file(const char *p, const void *data, size_t n)
{
	FILE *fp = fopen(p, "w");

	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, n, fp), n);
	assert_int_equal(fclose(fp), 0);
}

static char *read_file(const char *p, size_t *n)
{
	FILE *fp = fopen(p, "r");
	struct buf b = BUF_INIT;
	char chunk[8192];
	size_t r;

	assert_non_null(fp);
	while ((r = fread(chunk, 1, sizeof chunk, fp)) > 0)
		buf_append(&b, chunk, r);
	fclose(fp);
	*n = b.len;
	return buf_steal(&b);
}

/* ---- stderr capture ----------------------------------------------------- */

static int saved_stderr = -1;
static FILE *cap_file;

static void cap_begin(void)
{
	fflush(stderr);
	cap_file = tmpfile();
	assert_non_null(cap_file);
	saved_stderr = dup(STDERR_FILENO);
	dup2(fileno(cap_file), STDERR_FILENO);
}

/* cap_end: what was logged since cap_begin (caller frees). */
static char *cap_end(void)
{
	struct buf b = BUF_INIT;
	char chunk[4096];
	size_t r;

	fflush(stderr);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	rewind(cap_file);
	while ((r = fread(chunk, 1, sizeof chunk, cap_file)) > 0)
		buf_append(&b, chunk, r);
	fclose(cap_file);
	return buf_steal(&b);
}

static void assert_logged(const char *log, const char *line)
{
	if (strstr(log, line) == NULL)
		fail_msg("log line \"%s\" missing from:\n%s", line, log);
}

/* ---- writing messages through the queue ------------------------------- */

/* find_msg: is message id readable in some file of dir/incoming (named
 * in file, if not NULL)? */
static bool find_msg(const char *dir, const char *id, char file[QID_LEN + 1])
{
	DIR *d = opendir(path(dir, "incoming", NULL));
	struct dirent *de;
	bool found = false;
	char err[256];

	if (d == NULL)
		return false;
	while (!found && (de = readdir(d)) != NULL) {
		struct qmsg *m;
		size_t n;
		if (de->d_name[0] == '.' ||
		    !qmsg_read_all(path(dir, "incoming", de->d_name), &m, &n, err, sizeof err))
			continue;
		for (size_t i = 0; i < n && !found; i++)
			found = strcmp(m[i].id, id) == 0;
		if (found && file)
			snprintf(file, QID_LEN + 1, "%.*s", QID_LEN, de->d_name);
		qmsg_free_all(m, n);
	}
	closedir(d);
	return found;
}

struct done {
	const char *dir;
	int calls, err, order;
	char id[QID_LEN + 1];
	char file[QID_LEN + 1]; /* the file in incoming/ holding it */
	bool in_incoming, in_tmp;
};

static int done_order;

/* on_done: records what the callback saw, the file system included:
 * in_incoming if the message is readable in incoming/, in_tmp if
 * anything at all is left in tmp/. */
static void on_done(void *ctx, int err, const char *id)
{
	struct done *d = ctx;

	d->calls++;
	d->err = err;
	d->order = ++done_order;
	snprintf(d->id, sizeof d->id, "%s", id);
	d->in_incoming = find_msg(d->dir, id, d->file);
	d->in_tmp = count_entries(d->dir, "tmp") > 0;
}

static void add(struct qfile *f, int type, const void *p, size_t n)
{
	if (!qfile_add(f, (enum qrec_type)type, p, n))
		fail_msg("qfile_add '%c' (%zu bytes): %s", type, n, strerror(errno));
}

/* start: a file with the envelope records and nrcpts recipients. */
static struct qfile *start(struct queue *q, char id[QID_LEN + 1], size_t nrcpts)
{
	struct qfile *f = queue_create(q, id);
	char rcpt[64];

	assert_non_null(f);
	add(f, QREC_VERSION, L("1"));
	add(f, QREC_TIME, L("1700000000123456"));
	add(f, QREC_CLIENT, L("192.0.2.1 mx.example.org"));
	add(f, QREC_SENDER, L("alice@example.org"));
	for (size_t i = 0; i < nrcpts; i++) {
		int n = snprintf(rcpt, sizeof rcpt, "user%zu@example.net", i);
		add(f, QREC_RCPT, rcpt, (size_t)n);
	}
	return f;
}

/* submit_one: a small complete message, submitted with d as context. */
static void submit_one(struct queue *q, struct done *d, const char *dir)
{
	char id[QID_LEN + 1];
	struct qfile *f = start(q, id, 1);

	add(f, QREC_DATA, L("Subject: hi\r\n\r\nhello\r\n"));
	memset(d, 0, sizeof *d);
	d->dir = dir;
	queue_submit(f, on_done, d);
}

/* fake_id: a valid id far in the past, n in its last digits. */
static void fake_id(char id[QID_LEN + 1], size_t n)
{
	snprintf(id, QID_LEN + 1, "%016X", (unsigned)n);
}

/* ---- ids ---------------------------------------------------------------- */

static bool hex16(const char *s)
{
	for (int i = 0; i < QID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return s[QID_LEN] == 0;
}

static void test_ids_unique_increasing(void **state)
{
	struct queue *q = queue_open(*state);
	char prev[QID_LEN + 1] = "", id[QID_LEN + 1];
	struct timespec ts;

	assert_non_null(q);
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned long long now = (unsigned long long)ts.tv_sec * 1000000ull;
	for (int i = 0; i < 10000; i++) {
		struct qfile *f = queue_create(q, id);
		assert_non_null(f);
		if (!hex16(id))
			fail_msg("bad id \"%s\"", id);
		if (strcmp(prev, id) >= 0)
			fail_msg("id %d \"%s\" not after \"%s\"", i, id, prev);
		memcpy(prev, id, sizeof id);
		queue_abort(f);
	}
	/* The time part is microseconds since the epoch. */
	char t[14];
	memcpy(t, prev, 13);
	t[13] = 0;
	unsigned long long us = strtoull(t, NULL, 16);
	assert_true(us + 60000000ull > now && us < now + 60000000ull);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	queue_close(q);
}

/* A file in incoming/ with an id ahead of the clock (a clock stepped back
 * across a restart): new ids still sort after it and never reuse it. */
static void test_ids_after_queued_ones(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d;
	char ahead[QID_LEN + 1], id[QID_LEN + 1];
	struct timespec ts;

	assert_non_null(q);
	submit_one(q, &d, *state);
	assert_int_equal(queue_flush(q), 1);
	queue_close(q);
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(ahead, sizeof ahead, "%013llX%03X",
		 ((unsigned long long)ts.tv_sec + 3600) * 1000000ull, 7u);
	assert_int_equal(rename(path(*state, "incoming", d.id), path(*state, "incoming", ahead)), 0);

	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 1);
	struct qfile *f = queue_create(q, id);
	assert_non_null(f);
	if (strcmp(id, ahead) <= 0)
		fail_msg("new id %s not after queued %s", id, ahead);
	queue_abort(f);
	queue_close(q);
}

/* ---- round trip ----------------------------------------------------------- */

/* data_of: the DATA payloads from m->data_offset on, concatenated. */
static char *data_of(const char *p, const struct qmsg *m, size_t *n)
{
	size_t len;
	char *file = read_file(p, &len);
	struct buf b = BUF_INIT;
	size_t off = (size_t)m->data_offset;

	assert_true(m->data_offset > 0 && off + 5 <= len);
	assert_int_equal(file[off], QREC_DATA);
	for (;;) {
		assert_true(off + 5 <= len);
		unsigned char *h = (unsigned char *)file + off;
		size_t rl = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
		if (h[0] == QREC_END)
			break;
		if (h[0] == QREC_DATA)
			buf_append(&b, file + off + 5, rl);
		off += 5 + rl;
	}
	free(file);
	*n = b.len;
	return buf_steal(&b);
}

static void test_round_trip(void **state)
{
	struct queue *q = queue_open(*state);
	char id[QID_LEN + 1], err[256];
	struct done d = { .dir = *state };
	struct buf want = BUF_INIT;
	struct qmsg m;
	/* Chunks: small, with NULs, one larger than the write buffer. */
	size_t big = 300 * 1024;
	char *bigp = xmalloc(big);

	for (size_t i = 0; i < big; i++)
		bigp[i] = (char)("0123456789abcdef\r\n"[i % 18]);
	assert_non_null(q);
	struct qfile *f = start(q, id, 150);
	add(f, QREC_ATTR, L("SIZE=12345"));
	add(f, QREC_ATTR, L("BODY=8BITMIME"));
	const struct { const char *p; size_t n; } chunks[] = {
		{ L("Received: from mx.example.org\r\n") },
		{ L("Subject: \0binary\0\r\n\r\n") },
		{ bigp, big },
		{ L("") },
		{ L("last line\r\n") },
	};
	for (size_t i = 0; i < ARRAY_LEN(chunks); i++) {
		add(f, QREC_DATA, chunks[i].p, chunks[i].n);
		buf_append(&want, chunks[i].p, chunks[i].n);
	}
	queue_submit(f, on_done, &d);
	assert_int_equal(queue_pending(q), 1);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, 0);
	assert_string_equal(d.id, id);
	assert_int_equal(queue_size(q), 1);
	assert_int_equal(queue_pending(q), 0);

	const char *p = path(*state, "incoming", id);
	if (!qmsg_read(p, &m, err, sizeof err))
		fail_msg("qmsg_read: %s", err);
	assert_string_equal(m.id, id);
	assert_true(m.time_us == 1700000000123456ull);
	assert_string_equal(m.client, "192.0.2.1 mx.example.org");
	assert_string_equal(m.sender, "alice@example.org");
	assert_int_equal(m.nrcpts, 150);
	for (size_t i = 0; i < m.nrcpts; i++) {
		char r[64];
		snprintf(r, sizeof r, "user%zu@example.net", i);
		assert_string_equal(m.rcpts[i], r);
	}
	assert_int_equal(m.nattrs, 2);
	assert_string_equal(m.attrs[0], "SIZE=12345");
	assert_string_equal(m.attrs[1], "BODY=8BITMIME");
	assert_int_equal(m.data_len, want.len);
	assert_string_equal(d.file, id); /* spilled: a file of its own */
	size_t n;
	char *data = data_of(p, &m, &n);
	assert_int_equal(n, want.len);
	assert_memory_equal(data, want.data, n);
	free(data);
	qmsg_free(&m);
	assert_null(m.rcpts);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	free(bigp);
	buf_free(&want);
	queue_close(q);
}

/* ---- callbacks and group commit ---------------------------------------- */

static void test_callback_after_rename(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d;

	assert_non_null(q);
	submit_one(q, &d, *state);
	/* Submitted is not durable: no callback, nothing visible yet. */
	assert_int_equal(d.calls, 0);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(queue_size(q), 0);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, 0);
	/* In the callback, the message was readable in incoming/ through its
	 * file, named after it (the only message of the flush). */
	assert_true(d.in_incoming);
	assert_string_equal(d.file, d.id);
	assert_false(d.in_tmp);
	assert_int_equal(queue_size(q), 1);
	assert_int_equal(queue_flush(q), 0);
	assert_int_equal(d.calls, 1);
	queue_close(q);
}

static void test_group_commit(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[20];

	assert_non_null(q);
	done_order = 0;
	for (int i = 0; i < 20; i++)
		submit_one(q, &d[i], *state);
	assert_int_equal(queue_pending(q), 20);
	/* Small messages wait in memory: nothing visible, nothing allocated. */
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(queue_flush(q), 20);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].err, 0);
		assert_int_equal(d[i].order, i + 1); /* submission order */
		/* The shared file was renamed before the first callback ran. */
		assert_true(d[i].in_incoming);
		assert_string_equal(d[i].file, d[0].id);
		assert_false(d[i].in_tmp);
		if (i > 0)
			assert_true(strcmp(d[i - 1].id, d[i].id) < 0);
	}
	assert_int_equal(queue_size(q), 20);
	assert_int_equal(queue_pending(q), 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	/* One file, named after the first message, holding all 20 in order. */
	assert_int_equal(count_entries(*state, "incoming"), 1);
	struct qmsg *m;
	size_t n;
	char err[256];
	if (!qmsg_read_all(path(*state, "incoming", d[0].id), &m, &n, err, sizeof err))
		fail_msg("qmsg_read_all: %s", err);
	assert_int_equal(n, 20);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(m[i].id, d[i].id);
		assert_string_equal(m[i].sender, "alice@example.org");
		assert_int_equal(m[i].nrcpts, 1);
		assert_int_equal(m[i].data_len, sizeof "Subject: hi\r\n\r\nhello\r\n" - 1);
		assert_true(i == 0 || m[i].data_offset > m[i - 1].data_offset);
	}
	qmsg_free_all(m, n);
	queue_close(q);
	/* Reopened: the queue counts messages, not files. */
	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 20);
	queue_close(q);
}

/* A message past QF_SPILL gets its own file at once and streams there;
 * the small ones of the same flush share one file. */
static void test_spill(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[3];
	char id[QID_LEN + 1], err[256];
	size_t big = QF_SPILL + 1000;
	char *bigp = xmalloc(big);

	assert_non_null(q);
	memset(bigp, 'x', big);
	done_order = 0;
	submit_one(q, &d[0], *state);
	struct qfile *f = start(q, id, 2);
	add(f, QREC_DATA, L("Subject: big\r\n\r\n"));
	assert_int_equal(count_entries(*state, "tmp"), 0);
	add(f, QREC_DATA, bigp, big);
	assert_int_equal(count_entries(*state, "tmp"), 1);
	assert_true(exists(path(*state, "tmp", id)));
	memset(&d[1], 0, sizeof d[1]);
	d[1].dir = *state;
	queue_submit(f, on_done, &d[1]);
	submit_one(q, &d[2], *state);
	assert_int_equal(count_entries(*state, "tmp"), 1);
	assert_int_equal(queue_flush(q), 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].err, 0);
		assert_int_equal(d[i].order, i + 1);
		assert_true(d[i].in_incoming);
		assert_false(d[i].in_tmp);
	}
	assert_string_equal(d[1].id, id);
	assert_string_equal(d[1].file, id);
	assert_string_equal(d[0].file, d[0].id);
	assert_string_equal(d[2].file, d[0].id);
	assert_int_equal(count_entries(*state, "incoming"), 2);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(queue_size(q), 3);

	struct qmsg *m;
	size_t n;
	assert_true(qmsg_read_all(path(*state, "incoming", id), &m, &n, err, sizeof err));
	assert_int_equal(n, 1);
	assert_string_equal(m[0].id, id);
	assert_int_equal(m[0].nrcpts, 2);
	assert_int_equal(m[0].data_len, big + sizeof "Subject: big\r\n\r\n" - 1);
	qmsg_free_all(m, n);
	assert_true(qmsg_read_all(path(*state, "incoming", d[0].id), &m, &n, err, sizeof err));
	assert_int_equal(n, 2);
	assert_string_equal(m[0].id, d[0].id);
	assert_string_equal(m[1].id, d[2].id);
	qmsg_free_all(m, n);
	free(bigp);
	queue_close(q);
}

/* A callback that submits again: the new file waits for the next flush. */
struct resubmit {
	struct queue *q;
	struct done first, second;
	const char *dir;
};

static void on_done_resubmit(void *ctx, int err, const char *id)
{
	struct resubmit *r = ctx;

	on_done(&r->first, err, id);
	submit_one(r->q, &r->second, r->dir);
}

static void test_submit_from_callback(void **state)
{
	struct resubmit r = { .dir = *state };
	char id[QID_LEN + 1];

	r.q = queue_open(*state);
	assert_non_null(r.q);
	r.first.dir = *state;
	struct qfile *f = start(r.q, id, 1);
	queue_submit(f, on_done_resubmit, &r);
	assert_int_equal(queue_flush(r.q), 1);
	assert_int_equal(r.first.calls, 1);
	assert_int_equal(r.second.calls, 0);
	assert_int_equal(queue_pending(r.q), 1);
	assert_int_equal(queue_flush(r.q), 1);
	assert_int_equal(r.second.calls, 1);
	assert_int_equal(r.second.err, 0);
	assert_true(r.second.in_incoming);
	assert_int_equal(queue_size(r.q), 2);
	queue_close(r.q);
}

/* ---- abort, close ---------------------------------------------------------- */

static void test_abort_leaves_nothing(void **state)
{
	struct queue *q = queue_open(*state);
	char id[QID_LEN + 1];
	size_t big = QF_SPILL + 1024; /* past the spill threshold: really on disk */
	char *bigp = xcalloc(1, big);

	assert_non_null(q);
	for (int stage = 0; stage < 3; stage++) {
		struct qfile *f = stage == 0 ? queue_create(q, id) : start(q, id, 3);
		assert_non_null(f);
		if (stage == 2)
			add(f, QREC_DATA, bigp, big);
		/* Only a spilled message has a file; the others none at all. */
		assert_int_equal(exists(path(*state, "tmp", id)), stage == 2);
		assert_int_equal(count_entries(*state, "tmp"), stage == 2);
		queue_abort(f);
		assert_false(exists(path(*state, "tmp", id)));
	}
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(queue_pending(q), 0);
	free(bigp);
	queue_close(q);
}

static void test_close_cancels_pending(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[3];

	assert_non_null(q);
	for (int i = 0; i < 3; i++)
		submit_one(q, &d[i], *state);
	queue_close(q);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].err, ECANCELED);
		assert_false(d[i].in_incoming);
		assert_false(d[i].in_tmp);
	}
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(count_entries(*state, "incoming"), 0);
}

/* ---- the writer refuses what the reader would refuse -------------------- */

struct wrec {
	int type;
	const char *p;
	size_t n;
};

#define W(t, s) { t, s, sizeof(s) - 1 }
#define W_HEAD W('V', "1"), W('T', "1700000000000000"), W('C', "192.0.2.1 h"), W('S', "a@b")

static const struct {
	const char *name;
	struct wrec recs[8]; /* the last one is refused (or submit is) */
	bool at_submit;
} refused[] = {
	{ "no VERSION first", { W('T', "1") }, false },
	{ "VERSION 2", { W('V', "2") }, false },
	{ "second VERSION", { W('V', "1"), W('V', "1") }, false },
	{ "END by hand", { W('V', "1"), W('E', "") }, false },
	{ "ID by hand", { W('V', "1"), W('I', "0123456789ABCDEF") }, false },
	{ "ID before VERSION", { W('I', "0123456789ABCDEF") }, false },
	{ "unknown type", { W('V', "1"), W('Z', "x") }, false },
	{ "second SENDER", { W_HEAD, W('S', "c@d") }, false },
	{ "second TIME", { W_HEAD, W('T', "1") }, false },
	{ "NUL in RCPT", { W_HEAD, W('R', "a\0b") }, false },
	{ "TIME not decimal", { W('V', "1"), W('T', "12x") }, false },
	{ "TIME empty", { W('V', "1"), W('T', "") }, false },
	{ "ATTR not name=value", { W_HEAD, W('A', "SIZE") }, false },
	{ "no RCPT", { W_HEAD }, true },
	{ "no SENDER", { W('V', "1"), W('T', "1"), W('C', "c"), W('R', "r") }, true },
	{ "nothing", { { 0, NULL, 0 } }, true },
};

static void test_writer_refuses(void **state)
{
	struct queue *q = queue_open(*state);
	char id[QID_LEN + 1];

	assert_non_null(q);
	for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
		struct done d = { .dir = *state };
		struct qfile *f = queue_create(q, id);
		size_t n = 0;
		while (n < ARRAY_LEN(refused[i].recs) && refused[i].recs[n].type)
			n++;
		cap_begin();
		for (size_t k = 0; k < n; k++) {
			const struct wrec *w = &refused[i].recs[k];
			bool ok = qfile_add(f, (enum qrec_type)w->type, w->p, w->n);
			bool want = refused[i].at_submit || k + 1 < n;
			if (ok != want)
				fail_msg("%s: record %zu: qfile_add gave %d", refused[i].name, k, ok);
			if (!ok)
				assert_int_equal(errno, EINVAL);
		}
		/* A refused file is poisoned: nothing more goes in. */
		if (!refused[i].at_submit)
			assert_false(qfile_add(f, QREC_RCPT, L("x@y")));
		queue_submit(f, on_done, &d);
		assert_int_equal(d.calls, 0);
		assert_int_equal(queue_flush(q), 1);
		free(cap_end());
		if (d.calls != 1 || d.err != EINVAL)
			fail_msg("%s: callback %d, err %d", refused[i].name, d.calls, d.err);
		assert_false(d.in_incoming);
		assert_false(d.in_tmp);
	}
	/* A text record over the limit is refused before it is read. */
	struct done d = { .dir = *state };
	struct qfile *f = queue_create(q, id);
	cap_begin();
	add(f, QREC_VERSION, L("1"));
	assert_false(qfile_add(f, QREC_CLIENT, "x", (size_t)QREC_MAX + 1));
	queue_submit(f, on_done, &d);
	queue_flush(q);
	free(cap_end());
	assert_int_equal(d.err, EINVAL);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(queue_size(q), 0);
	queue_close(q);
}

/* ---- queue_open: tmp/ leftovers ------------------------------------------ */

static void test_open_removes_tmp(void **state)
{
	struct queue *q = queue_open(*state);
	const char *stray = "0123456789ABC001";

	assert_non_null(q);
	queue_close(q);
	write_file(path(*state, "tmp", stray), L("V\0\0\0\0011"));
	write_file(path(*state, "tmp", "odd\nname"), L(""));
	cap_begin();
	q = queue_open(*state);
	char *log = cap_end();
	assert_non_null(q);
	assert_logged(log, "0123456789ABC001: removed incomplete queue file (never acknowledged)\n");
	assert_logged(log, "odd\\x0aname: removed incomplete queue file (never acknowledged)\n");
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(queue_size(q), 0);
	free(log);
	queue_close(q);
}

/* ---- hand-made files ------------------------------------------------------ */

struct rec {
	int type;
	const char *p;
	size_t n;
	long long len; /* the header's length if >= 0, else n */
};

#define R(t, s) { t, s, sizeof(s) - 1, -1 }
#define RL(t, s, l) { t, s, sizeof(s) - 1, l }
#define HEAD R('V', "1"), R('T', "1700000000000000"), R('C', "192.0.2.1 mx.example"), \
	R('S', "a@example.org")
#define RCPT R('R', "b@example.net")
#define END R('E', "")

static void put_rec(struct buf *b, int type, const char *p, size_t n, unsigned long long len)
{
	unsigned char h[5] = { (unsigned char)type, (unsigned char)(len >> 24),
			       (unsigned char)(len >> 16), (unsigned char)(len >> 8),
			       (unsigned char)len };

	buf_append(b, h, sizeof h);
	buf_append(b, p, n);
}

static const struct fcase {
	const char *name;
	struct rec recs[16];
	const char *trailer;
	size_t trailer_n;
	const char *expect; /* NULL: valid */
	size_t nrcpts;
	long long data_len;
} files[] = {
	{ "empty file", { { 0, NULL, 0, 0 } }, NULL, 0, "no END record (truncated)", 0, 0 },
	{ "no END", { HEAD, RCPT }, NULL, 0, "no END record (truncated)", 0, 0 },
	{ "cut header", { HEAD, RCPT }, L("D\0\0"), "no END record (truncated)", 0, 0 },
	{ "bad type", { HEAD, R('Z', "x"), RCPT, END }, NULL, 0, "unknown record type 0x5a", 0, 0 },
	{ "type 0", { HEAD, RCPT }, L("\0\0\0\0\0"), "unknown record type 0x00", 0, 0 },
	{ "type 0xff", { HEAD, RCPT }, L("\xff\0\0\0\0"), "unknown record type 0xff", 0, 0 },
	{ "huge length", { HEAD, RCPT, RL('D', "abc", 123456789), END }, NULL, 0,
	  "record length 123456789 past the end of the file", 0, 0 },
	{ "length 2^32-1", { HEAD, RL('R', "", 0xffffffffLL), END }, NULL, 0,
	  "record length 4294967295 past the end of the file", 0, 0 },
	{ "length one too many", { HEAD, RCPT, RL('D', "abc", 9), END }, NULL, 0,
	  "record length 9 past the end of the file", 0, 0 },
	{ "missing VERSION", { R('T', "1"), R('C', "c"), R('S', "s"), RCPT, END }, NULL, 0,
	  "missing VERSION record (the first record is TIME)", 0, 0 },
	{ "DATA first", { R('D', "x"), HEAD, RCPT, END }, NULL, 0,
	  "missing VERSION record (the first record is DATA)", 0, 0 },
	{ "second VERSION", { HEAD, R('V', "1"), RCPT, END }, NULL, 0, "second VERSION record", 0, 0 },
	{ "VERSION 2", { R('V', "2"), R('T', "1"), R('C', "c"), R('S', "s"), RCPT, END }, NULL, 0,
	  "unsupported VERSION \"2\"", 0, 0 },
	{ "VERSION empty", { R('V', ""), END }, NULL, 0, "unsupported VERSION \"\"", 0, 0 },
	{ "two SENDERs", { HEAD, R('S', "x@example.org"), RCPT, END }, NULL, 0,
	  "second SENDER record", 0, 0 },
	{ "two TIMEs", { HEAD, R('T', "2"), RCPT, END }, NULL, 0, "second TIME record", 0, 0 },
	{ "two CLIENTs", { HEAD, R('C', "c"), RCPT, END }, NULL, 0, "second CLIENT record", 0, 0 },
	{ "bytes after END", { HEAD, RCPT, END }, L("\r\nx"), "3 bytes after the END record", 0, 0 },
	{ "record after END", { HEAD, RCPT, END, RCPT }, NULL, 0, "18 bytes after the END record",
	  0, 0 },
	{ "END with payload", { HEAD, RCPT, R('E', "x") }, NULL, 0,
	  "END record with a 1-byte payload", 0, 0 },
	{ "no RCPT", { HEAD, R('D', "x"), END }, NULL, 0, "no RCPT record", 0, 0 },
	{ "no TIME", { R('V', "1"), R('C', "c"), R('S', "s"), RCPT, END }, NULL, 0,
	  "no TIME record", 0, 0 },
	{ "no CLIENT", { R('V', "1"), R('T', "1"), R('S', "s"), RCPT, END }, NULL, 0,
	  "no CLIENT record", 0, 0 },
	{ "no SENDER", { R('V', "1"), R('T', "1"), R('C', "c"), RCPT, END }, NULL, 0,
	  "no SENDER record", 0, 0 },
	{ "NUL in SENDER", { R('V', "1"), R('T', "1"), R('C', "c"), R('S', "a\0b"), RCPT, END },
	  NULL, 0, "NUL byte in SENDER record", 0, 0 },
	{ "NUL in RCPT", { HEAD, R('R', "\0"), END }, NULL, 0, "NUL byte in RCPT record", 0, 0 },
	{ "NUL in CLIENT", { R('V', "1"), R('T', "1"), R('C', "c\0"), R('S', ""), RCPT, END },
	  NULL, 0, "NUL byte in CLIENT record", 0, 0 },
	{ "bad TIME", { R('V', "1"), R('T', "12x"), END }, NULL, 0, "bad TIME record \"12x\"", 0, 0 },
	{ "TIME overflow", { R('V', "1"), R('T', "18446744073709551616"), END }, NULL, 0,
	  "bad TIME record \"18446744073709551616\"", 0, 0 },
	{ "ATTR without =", { HEAD, RCPT, R('A', "SIZE"), END }, NULL, 0,
	  "ATTR record \"SIZE\" is not name=value", 0, 0 },
	{ "ATTR escaped", { HEAD, RCPT, R('A', "\x1b[1m"), END }, NULL, 0,
	  "ATTR record \"\\x1b[1m\" is not name=value", 0, 0 },
	/* Valid ones: they stay in incoming/ and are counted. */
	{ "minimal", { HEAD, RCPT, END }, NULL, 0, NULL, 1, 0 },
	{ "null sender", { R('V', "1"), R('T', "0"), R('C', ""), R('S', ""), RCPT, END }, NULL, 0,
	  NULL, 1, 0 },
	{ "NULs in DATA", { HEAD, RCPT, RCPT, R('D', "a\0b\r\n"), END }, NULL, 0, NULL, 2, 5 },
	{ "DATA among others", { HEAD, R('D', "ab"), RCPT, R('D', ""), R('A', "X=1"),
				 R('D', "cde"), END }, NULL, 0, NULL, 1, 5 },
};

static char *build(const struct fcase *c, size_t *n)
{
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < ARRAY_LEN(c->recs) && c->recs[i].type; i++) {
		const struct rec *r = &c->recs[i];
		put_rec(&b, r->type, r->p, r->n, r->len >= 0 ? (unsigned long long)r->len : r->n);
	}
	if (c->trailer)
		buf_append(&b, c->trailer, c->trailer_n);
	*n = b.len;
	return buf_steal(&b);
}

static void check_read(const char *p, const char *name, const char *expect, struct qmsg *m)
{
	char err[256] = "";
	bool ok = qmsg_read(p, m, err, sizeof err);

	if (expect == NULL && !ok)
		fail_msg("%s: refused: %s", name, err);
	if (expect != NULL && ok)
		fail_msg("%s: accepted, want \"%s\"", name, expect);
	if (expect != NULL && strcmp(err, expect) != 0)
		fail_msg("%s: \"%s\", want \"%s\"", name, err, expect);
}

static void test_read_table(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		const struct fcase *c = &files[i];
		const char *p = path(*state, "file", NULL);
		struct qmsg m;
		size_t n;
		char *data = build(c, &n);
		write_file(p, data, n);
		check_read(p, c->name, c->expect, &m);
		if (c->expect == NULL) {
			assert_int_equal(m.nrcpts, c->nrcpts);
			assert_int_equal(m.data_len, c->data_len);
			assert_string_equal(m.id, ""); /* "file" is not an id */
			if (c->data_len == 0 && strcmp(c->name, "minimal") == 0)
				assert_int_equal(m.data_offset, -1);
			if (m.data_offset >= 0)
				assert_int_equal(data[m.data_offset], QREC_DATA);
		} else {
			assert_null(m.rcpts);
			assert_null(m.client);
		}
		qmsg_free(&m);
		free(data);
	}
}

/* The same table through queue_open: corrupt files move, valid ones stay. */
static void test_open_table(void **state)
{
	char id[ARRAY_LEN(files)][QID_LEN + 1];
	size_t valid = 0;
	struct queue *q = queue_open(*state);

	assert_non_null(q);
	queue_close(q);
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		size_t n;
		char *data = build(&files[i], &n);
		fake_id(id[i], i + 1);
		write_file(path(*state, "incoming", id[i]), data, n);
		free(data);
		valid += files[i].expect == NULL;
	}
	cap_begin();
	q = queue_open(*state);
	char *log = cap_end();
	assert_non_null(q);
	assert_int_equal(queue_size(q), valid);
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		bool corrupt = files[i].expect != NULL;
		char line[512];
		snprintf(line, sizeof line, "%s: moved to corrupt/: %s\n", id[i], files[i].expect);
		if (corrupt)
			assert_logged(log, line);
		if (exists(path(*state, "incoming", id[i])) == corrupt ||
		    exists(path(*state, "corrupt", id[i])) != corrupt)
			fail_msg("%s: in the wrong directory", files[i].name);
	}
	assert_int_equal(count_entries(*state, "incoming"), valid);
	free(log);
	queue_close(q);
	/* Valid files stay valid: a second open moves nothing. */
	cap_begin();
	q = queue_open(*state);
	log = cap_end();
	assert_non_null(q);
	assert_int_equal(queue_size(q), valid);
	assert_null(strstr(log, "corrupt"));
	free(log);
	queue_close(q);
}

/* A record over QREC_MAX in a file that really is that long (sparse). */
static void test_read_over_limit(void **state)
{
	const char *p = path(*state, "big", NULL);
	struct buf b = BUF_INIT;
	struct qmsg m;
	char err[256];

	put_rec(&b, 'V', L("1"), 1);
	put_rec(&b, 'D', NULL, 0, (unsigned long long)QREC_MAX + 1);
	write_file(p, b.data, b.len);
	assert_int_equal(truncate(p, (off_t)b.len + QREC_MAX + 1 + 5), 0);
	assert_false(qmsg_read(p, &m, err, sizeof err));
	assert_string_equal(err, "record length 67108865 over the limit of 67108864");
	buf_free(&b);
}

/* Recipients are bounded too (a small file can hold a million records). */
static void test_read_too_many_rcpts(void **state)
{
	const char *p = path(*state, "many", NULL);
	struct buf b = BUF_INIT;
	struct qmsg m;
	char err[256];

	put_rec(&b, 'V', L("1"), 1);
	put_rec(&b, 'T', L("1"), 1);
	put_rec(&b, 'C', L("c"), 1);
	put_rec(&b, 'S', L(""), 0);
	for (size_t i = 0; i <= QFILE_MAX_RCPTS; i++)
		put_rec(&b, 'R', L("r"), 1);
	put_rec(&b, 'E', L(""), 0);
	write_file(p, b.data, b.len);
	assert_false(qmsg_read(p, &m, err, sizeof err));
	assert_string_equal(err, "more than 1000000 RCPT records");
	buf_free(&b);
}

static void test_read_not_a_file(void **state)
{
	struct qmsg m;
	char err[256];

	assert_false(qmsg_read(path(*state, "missing", NULL), &m, err, sizeof err));
	assert_string_equal(err, "open: No such file or directory");
	assert_int_equal(mkfifo(path(*state, "fifo", NULL), 0600), 0);
	assert_false(qmsg_read(path(*state, "fifo", NULL), &m, err, sizeof err));
	assert_string_equal(err, "not a regular file");
	assert_false(qmsg_read(*state, &m, err, sizeof err));
	assert_string_equal(err, "not a regular file");
}

/* ---- a valid file cut at every length -------------------------------------- */

/* cut_reason: what the reader must say about the first cut bytes of the
 * valid file v[0..n): inside a record header, or at a record boundary, the
 * END is missing; inside a payload, that record's length is too long;
 * both prefixed with "message K: " inside the K-th message, K > 1. A cut
 * right after a message's END (not the last) leaves a shorter valid file:
 * then the number of messages left is returned (0 otherwise). Such a
 * prefix is indistinguishable from a file of fewer messages, but it can
 * never be seen: a file is durable before its name enters incoming/. */
static size_t cut_reason(const unsigned char *v, size_t n, size_t cut, char *out, size_t outlen)
{
	size_t off = 0, k = 1;
	char why[128];

	snprintf(why, sizeof why, "no END record (truncated)");
	while (off + 5 <= n) {
		size_t len = (size_t)v[off + 1] << 24 | (size_t)v[off + 2] << 16 |
			     (size_t)v[off + 3] << 8 | v[off + 4];
		if (cut < off + 5) {
			break;
		} else if (cut < off + 5 + len) {
			snprintf(why, sizeof why, "record length %zu past the end of the file", len);
			break;
		}
		bool end = v[off] == QREC_END;
		off += 5 + len;
		if (end && cut == off)
			return k;
		k += end;
	}
	if (k > 1)
		snprintf(out, outlen, "message %zu: %s", k, why);
	else
		snprintf(out, outlen, "%s", why);
	return 0;
}

/* check_cuts: the valid file sub/id (sub: incoming or deferred) of nmsgs
 * messages, cut at every length: read directly, then all the cuts in sub/
 * beside it through queue_open (which moves the corrupt ones, whole). */
static void check_cuts(const char *dir, const char *sub, const char *id, size_t nmsgs)
{
	char err[256], want[256], cutid[QID_LEN + 1];
	struct queue *q;
	struct qmsg *m, *all;
	size_t n, nall, short_files = 0, short_msgs = 0;
	char *valid = read_file(path(dir, sub, id), &n);

	assert_true(n > 100);
	if (!qmsg_read_all(path(dir, sub, id), &all, &nall, err, sizeof err))
		fail_msg("qmsg_read_all: %s", err);
	assert_int_equal(nall, nmsgs);
	for (size_t cut = 0; cut < n; cut++) {
		const char *p = path(dir, "cut", NULL);
		size_t k, kk;
		write_file(p, valid, cut);
		k = cut_reason((unsigned char *)valid, n, cut, want, sizeof want);
		bool ok = qmsg_read_all(p, &m, &kk, err, sizeof err);
		if (k > 0) {
			if (!ok)
				fail_msg("cut after message %zu at %zu of %zu: %s", k, cut, n, err);
			assert_int_equal(kk, k);
			for (size_t i = 0; i < k; i++)
				assert_string_equal(m[i].id, all[i].id);
			qmsg_free_all(m, kk);
			short_files++;
			short_msgs += k;
			continue;
		}
		if (ok)
			fail_msg("cut at %zu of %zu accepted", cut, n);
		assert_null(m);
		assert_int_equal(kk, 0);
		if (strcmp(err, want) != 0)
			fail_msg("cut at %zu of %zu: \"%s\", want \"%s\"", cut, n, err, want);
		struct qmsg one;
		assert_false(qmsg_read(p, &one, err, sizeof err));
		assert_string_equal(err, want);
		assert_null(one.rcpts);
	}
	qmsg_free_all(all, nall);
	for (size_t cut = 0; cut < n; cut++) {
		fake_id(cutid, cut);
		write_file(path(dir, sub, cutid), valid, cut);
	}
	cap_begin();
	q = queue_open(dir);
	char *log = cap_end();
	assert_non_null(q);
	assert_int_equal(queue_size(q), nmsgs + short_msgs);
	assert_int_equal(count_entries(dir, sub), 1 + short_files);
	assert_true(exists(path(dir, sub, id)));
	assert_int_equal(count_entries(dir, "corrupt"), n - short_files);
	for (size_t cut = 0; cut < n; cut++) {
		char line[512];
		fake_id(cutid, cut);
		if (cut_reason((unsigned char *)valid, n, cut, want, sizeof want) > 0)
			continue;
		snprintf(line, sizeof line, "%s: moved to corrupt/: %s\n", cutid, want);
		assert_logged(log, line);
	}
	free(log);
	free(valid);
	queue_close(q);
}

static void test_truncated_at_every_length(void **state)
{
	struct queue *q = queue_open(*state);
	char id[QID_LEN + 1];
	struct done d = { .dir = *state };

	assert_non_null(q);
	struct qfile *f = start(q, id, 3);
	add(f, QREC_ATTR, L("BODY=8BITMIME"));
	add(f, QREC_DATA, L("Subject: cut\r\n\r\n"));
	add(f, QREC_DATA, L("body\r\n"));
	queue_submit(f, on_done, &d);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(d.err, 0);
	queue_close(q);
	check_cuts(*state, "incoming", id, 1);
}

/* The same for a shared file of three messages written by one flush. */
static void test_truncated_multi(void **state)
{
	struct queue *q = queue_open(*state);
	char id[QID_LEN + 1];
	struct done d[3];

	assert_non_null(q);
	for (int i = 0; i < 3; i++) {
		struct qfile *f = start(q, id, (size_t)i + 1);
		add(f, QREC_DATA, L("Subject: cut\r\n\r\nbody\r\n"));
		memset(&d[i], 0, sizeof d[i]);
		d[i].dir = *state;
		queue_submit(f, on_done, &d[i]);
	}
	assert_int_equal(queue_flush(q), 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(d[i].err, 0);
		assert_string_equal(d[i].file, d[0].id);
	}
	queue_close(q);
	check_cuts(*state, "incoming", d[0].id, 3);
}

/* ---- files of several messages ------------------------------------------- */

/* A hand-made file of three messages: the first without an ID record (its
 * id is the file name), the others with one. */
static void test_read_multi(void **state)
{
	const char *name = "0123456789ABC042";
	const char *p = path(*state, "incoming", name);
	struct buf b = BUF_INIT;
	struct qmsg *m, one;
	size_t n;
	char err[256];
	long off[3];
	struct queue *q = queue_open(*state);

	assert_non_null(q);
	queue_close(q);
	for (int i = 0; i < 3; i++) {
		put_rec(&b, 'V', L("1"), 1);
		if (i == 1)
			put_rec(&b, 'I', L("0123456789ABC043"), 16);
		if (i == 2)
			put_rec(&b, 'I', L("0123456789ABC041"), 16);
		put_rec(&b, 'T', L("1700000000000000"), 16);
		put_rec(&b, 'C', L("192.0.2.1 h"), 11);
		put_rec(&b, 'S', L("a@example.org"), 13);
		for (int k = 0; k <= i; k++)
			put_rec(&b, 'R', L("b@example.net"), 13);
		off[i] = (long)b.len;
		put_rec(&b, 'D', L("abc"), 3);
		for (int k = 0; k < i; k++)
			put_rec(&b, 'D', L("x"), 1);
		put_rec(&b, 'E', L(""), 0);
	}
	write_file(p, b.data, b.len);
	if (!qmsg_read_all(p, &m, &n, err, sizeof err))
		fail_msg("qmsg_read_all: %s", err);
	assert_int_equal(n, 3);
	assert_string_equal(m[0].id, name);
	assert_string_equal(m[1].id, "0123456789ABC043");
	assert_string_equal(m[2].id, "0123456789ABC041");
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(m[i].nrcpts, i + 1);
		assert_int_equal(m[i].data_offset, off[i]);
		assert_int_equal(m[i].data_len, 3 + i);
		assert_string_equal(m[i].sender, "a@example.org");
	}
	qmsg_free_all(m, n);
	/* qmsg_read: the first message. */
	assert_true(qmsg_read(p, &one, err, sizeof err));
	assert_string_equal(one.id, name);
	assert_int_equal(one.nrcpts, 1);
	assert_int_equal(one.data_offset, off[0]);
	qmsg_free(&one);
	/* Elsewhere, under a name that is no id: the first message has none. */
	write_file(path(*state, "x", NULL), b.data, b.len);
	assert_true(qmsg_read_all(path(*state, "x", NULL), &m, &n, err, sizeof err));
	assert_int_equal(n, 3);
	assert_string_equal(m[0].id, "");
	assert_string_equal(m[1].id, "0123456789ABC043");
	qmsg_free_all(m, n);
	/* queue_open counts messages, and ids sort after the queued ones. */
	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 3);
	queue_close(q);
	buf_free(&b);
}

/* Bad files of several messages: refused whole, with the message named. */
#define MSG1 HEAD, RCPT, END
#define ID2 R('I', "0123456789ABCDEF")

static const struct fcase multi[] = {
	{ "second message without ID", { MSG1, HEAD, RCPT, END }, NULL, 0,
	  "message 2: no ID record", 0, 0 },
	{ "truncated between messages", { MSG1, R('V', "1"), ID2 }, NULL, 0,
	  "message 2: no END record (truncated)", 0, 0 },
	{ "second message header cut", { MSG1 }, L("V\0\0"),
	  "message 2: no END record (truncated)", 0, 0 },
	{ "second message bad ID", { MSG1, R('V', "1"), R('I', "0123456789abcdef"), RCPT, END },
	  NULL, 0, "message 2: bad ID record \"0123456789abcdef\"", 0, 0 },
	{ "second message incomplete", { MSG1, R('V', "1"), ID2, R('T', "1"), RCPT, END }, NULL, 0,
	  "message 2: no CLIENT record", 0, 0 },
	{ "bytes after the second END", { MSG1, R('V', "1"), ID2, R('T', "1"), R('C', "c"),
					  R('S', ""), RCPT, END }, L("\r\nx"),
	  "message 2: 3 bytes after the END record", 0, 0 },
	{ "ID not after VERSION", { R('V', "1"), R('T', "1"), ID2, R('C', "c"), R('S', ""), RCPT,
				    END }, NULL, 0, "ID record not right after VERSION", 0, 0 },
	{ "two IDs", { R('V', "1"), ID2, ID2, R('T', "1"), R('C', "c"), R('S', ""), RCPT, END },
	  NULL, 0, "second ID record", 0, 0 },
	{ "ID short", { R('V', "1"), R('I', "0123"), R('T', "1"), R('C', "c"), R('S', ""), RCPT,
			END }, NULL, 0, "bad ID record \"0123\"", 0, 0 },
	{ "valid pair", { MSG1, R('V', "1"), ID2, R('T', "1"), R('C', "c"), R('S', ""), RCPT,
			  END }, NULL, 0, NULL, 1, 0 },
};

static void test_read_multi_refused(void **state)
{
	char id[ARRAY_LEN(multi)][QID_LEN + 1];
	struct queue *q = queue_open(*state);

	assert_non_null(q);
	queue_close(q);
	for (size_t i = 0; i < ARRAY_LEN(multi); i++) {
		struct qmsg m, *v;
		size_t n, nv;
		char err[256];
		char *data = build(&multi[i], &n);
		write_file(path(*state, "file", NULL), data, n);
		check_read(path(*state, "file", NULL), multi[i].name, multi[i].expect, &m);
		qmsg_free(&m);
		bool ok = qmsg_read_all(path(*state, "file", NULL), &v, &nv, err, sizeof err);
		assert_int_equal(ok, multi[i].expect == NULL);
		assert_int_equal(nv, ok ? 2 : 0);
		qmsg_free_all(v, nv);
		fake_id(id[i], i + 1);
		write_file(path(*state, "incoming", id[i]), data, n);
		free(data);
	}
	cap_begin();
	q = queue_open(*state);
	char *log = cap_end();
	assert_non_null(q);
	assert_int_equal(queue_size(q), 2); /* the valid pair */
	for (size_t i = 0; i < ARRAY_LEN(multi); i++) {
		bool corrupt = multi[i].expect != NULL;
		char line[512];
		snprintf(line, sizeof line, "%s: moved to corrupt/: %s\n", id[i], multi[i].expect);
		if (corrupt)
			assert_logged(log, line);
		if (exists(path(*state, "incoming", id[i])) == corrupt ||
		    exists(path(*state, "corrupt", id[i])) != corrupt)
			fail_msg("%s: in the wrong directory", multi[i].name);
	}
	free(log);
	queue_close(q);
}

/* ---- special entries in incoming/ ------------------------------------------ */

static void test_open_special_entries(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d;

	assert_non_null(q);
	submit_one(q, &d, *state);
	queue_flush(q);
	queue_close(q);
	assert_int_equal(symlink(path(*state, "incoming", d.id),
				 path(*state, "incoming", "00000000000000A1")), 0);
	assert_int_equal(mkdir(path(*state, "incoming", "00000000000000A2"), 0700), 0);
	assert_int_equal(mkfifo(path(*state, "incoming", "00000000000000A3"), 0600), 0);
	write_file(path(*state, "incoming", "notanid"), L(""));
	write_file(path(*state, "incoming", "00000000000000a4"), L("")); /* lower case */
	/* An earlier corrupt file of the same name is never overwritten. */
	write_file(path(*state, "corrupt", "notanid"), L("old"));
	cap_begin();
	q = queue_open(*state);
	char *log = cap_end();
	assert_non_null(q);
	assert_int_equal(queue_size(q), 1);
	assert_int_equal(count_entries(*state, "incoming"), 1);
	assert_logged(log, "00000000000000A1: moved to corrupt/: symbolic link\n");
	assert_logged(log, "00000000000000A2: moved to corrupt/: not a regular file\n");
	assert_logged(log, "00000000000000A3: moved to corrupt/: not a regular file\n");
	assert_logged(log, "notanid: moved to corrupt/: not a queue file name\n");
	assert_logged(log, "00000000000000a4: moved to corrupt/: not a queue file name\n");
	assert_true(exists(path(*state, "corrupt", "notanid.1")));
	size_t n;
	char *old = read_file(path(*state, "corrupt", "notanid"), &n);
	assert_int_equal(n, 3);
	free(old);
	free(log);
	queue_close(q);
}

/* ---- opening ------------------------------------------------------------ */

static void test_open_creates_and_locks(void **state)
{
	char dir[256];
	snprintf(dir, sizeof dir, "%s/q", (const char *)*state);
	struct queue *q = queue_open(dir), *q2;
	struct stat sb;

	assert_non_null(q);
	const char *sub[] = { "tmp", "incoming", "corrupt", "deferred" };
	for (size_t i = 0; i < ARRAY_LEN(sub); i++) {
		assert_int_equal(stat(path(dir, sub[i], NULL), &sb), 0);
		assert_true(S_ISDIR(sb.st_mode));
		assert_int_equal(sb.st_mode & 0777, 0700);
	}
	/* One queue, one owner: a second open would remove live tmp files. */
	cap_begin();
	q2 = queue_open(dir);
	char *log = cap_end();
	assert_null(q2);
	assert_logged(log, "in use by another process");
	free(log);
	queue_close(q);
	q2 = queue_open(dir);
	assert_non_null(q2);
	queue_close(q2);

	write_file(path(*state, "plain", NULL), L(""));
	cap_begin();
	q2 = queue_open(path(*state, "plain", NULL));
	free(cap_end());
	assert_null(q2);
}

/* ---- I/O errors ----------------------------------------------------------- */

/* The rename fails (incoming/ is gone, a plain file in its place): the
 * callback gets the errno, the tmp file is removed, nothing is visible. */
static void test_io_error_rename(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[2];

	assert_non_null(q);
	submit_one(q, &d[0], *state);
	submit_one(q, &d[1], *state);
	assert_int_equal(rmdir(path(*state, "incoming", NULL)), 0);
	write_file(path(*state, "incoming", NULL), L(""));
	cap_begin();
	assert_int_equal(queue_flush(q), 2);
	char *log = cap_end();
	for (int i = 0; i < 2; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].err, ENOENT);
		assert_false(d[i].in_tmp);
		char line[128];
		snprintf(line, sizeof line, "%s: queue file rename failed: %s\n", d[i].id,
			 strerror(ENOENT));
		assert_logged(log, line);
	}
	assert_int_equal(queue_size(q), 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	free(log);
	queue_close(q);
	assert_int_equal(unlink(path(*state, "incoming", NULL)), 0);
}

/* Writes fail (the file size limit stands in for a full disk), once while
 * a big message spills and once for the shared file at the flush, which
 * fails all its messages together: errno to every callback, no file. */
static void test_io_error_write(void **state)
{
	struct queue *q = queue_open(*state);
	struct rlimit old, lim;
	char id[QID_LEN + 1];
	struct done d[3] = { { .dir = *state }, { .dir = *state }, { .dir = *state } };
	size_t big = QF_SPILL + 1024;
	char *bigp = xcalloc(1, big);
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);

	assert_non_null(q);
	done_order = 0;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 1000;
	struct qfile *f1 = start(q, id, 1);
	struct qfile *f2 = start(q, id, 1);
	add(f2, QREC_DATA, bigp, 2000); /* in memory: fails only at the flush */
	struct qfile *f3 = start(q, id, 1); /* small: fails with f2's file */
	cap_begin();
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	bool ok = qfile_add(f1, QREC_DATA, bigp, big);
	int e = errno;
	queue_submit(f1, on_done, &d[0]);
	queue_submit(f2, on_done, &d[1]);
	queue_submit(f3, on_done, &d[2]);
	assert_int_equal(d[0].calls + d[1].calls + d[2].calls, 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	size_t flushed = queue_flush(q);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	char *log = cap_end();
	signal(SIGXFSZ, oldsig);
	assert_false(ok);
	assert_int_equal(e, EFBIG);
	assert_int_equal(flushed, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].err, EFBIG);
		assert_int_equal(d[i].order, i + 1);
		assert_false(d[i].in_incoming);
		assert_false(d[i].in_tmp);
		char line[128];
		snprintf(line, sizeof line, "%s: queue file write failed: %s\n", d[i].id,
			 strerror(EFBIG));
		assert_logged(log, line);
	}
	free(log);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(queue_size(q), 0);
	/* The queue itself is fine afterwards. */
	submit_one(q, &d[0], *state);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(d[0].err, 0);
	assert_int_equal(queue_size(q), 1);
	free(bigp);
	queue_close(q);
}

int main(void)
{
	log_set_prefix(0);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ids_unique_increasing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ids_after_queued_ones, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_callback_after_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_submit_from_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_cancels_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_removes_tmp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_over_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_too_many_rcpts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_not_a_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_at_every_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_multi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_multi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_multi_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_special_entries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_creates_and_locks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_error_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_error_write, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
