/* test_queue.c: instances/queue.c. Ids; the write/submit/flush/read round
 * trip; callbacks only in queue_flush and only after the rename; group
 * commit into one shared file (nothing on disk before the flush), a big
 * message spilling into a file of its own; abort and close leave nothing;
 * the writer refuses what the reader would; queue_open's clean-up (tmp/
 * leftovers, a valid single- and multi-message file cut at every length,
 * tables of corrupt and valid files, special entries); I/O errors reach
 * the callback (every message of the shared file) and leave no visible
 * file. The delivery side: notification of new files, listing, loading
 * (damaged files, links), removal, rewriting into deferred/ (recipients
 * kept, retry state, content byte for byte, failures leave the old file),
 * content reading, hostile RETRY/REASON records, deferred/ at start-up;
 * queue_size() checked against the files on disk throughout. Tests marked
 * "Regression" pin a bug that was found and fixed. Every test
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
#include "testutil.h"

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

static int teardown(void **state)
{
	rm_tree(*state);
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

/* ---- the delivery side: helpers ------------------------------------------- */

/* count_queued: the messages in incoming/ and deferred/, counted the way
 * queue_open counts them; every file there must validate (the queue never
 * writes one that does not). */
static size_t count_queued(const char *dir)
{
	static const char *const sub[] = { "incoming", "deferred" };
	size_t total = 0;

	for (size_t s = 0; s < ARRAY_LEN(sub); s++) {
		DIR *d = opendir(path(dir, sub[s], NULL));
		struct dirent *de;
		assert_non_null(d);
		while ((de = readdir(d)) != NULL) {
			struct qmsg *m;
			size_t n;
			char err[256];
			if (de->d_name[0] == '.')
				continue;
			if (!qmsg_read_all(path(dir, sub[s], de->d_name), &m, &n, err, sizeof err))
				fail_msg("%s/%s does not validate: %s", sub[s], de->d_name, err);
			total += n;
			qmsg_free_all(m, n);
		}
		closedir(d);
	}
	return total;
}

/* check_size: queue_size agrees with what is on disk. A macro, so that a
 * failure names the line. */
#define check_size(q, dir) assert_int_equal(queue_size(q), count_queued(dir))

/* load: queue_load that must succeed. */
static struct qmsg *load(struct queue *q, enum qdir dir, const char *name, int *fd, size_t *n)
{
	struct qmsg *m;

	if (!queue_load(q, dir, name, fd, &m, n))
		fail_msg("queue_load %s/%s failed", dir == QDIR_DEFERRED ? "deferred" : "incoming",
			 name);
	assert_true(*fd >= 0);
	assert_non_null(m);
	assert_true(*n > 0);
	return m;
}

/* content: a message's content through qdata_read, bufsize bytes a call
 * (each call gives 1..bufsize bytes, then 0, and 0 again after that). */
static char *content(int fd, const struct qmsg *m, size_t bufsize, size_t *n)
{
	struct qdata d;
	struct buf b = BUF_INIT;
	char *chunk = xmalloc(bufsize);
	long r;

	qdata_init(&d, fd, m->data_offset);
	while ((r = qdata_read(&d, chunk, bufsize)) > 0) {
		assert_true((size_t)r <= bufsize);
		buf_append(&b, chunk, (size_t)r);
	}
	if (r < 0)
		fail_msg("qdata_read after %zu bytes: %s", b.len, strerror(errno));
	assert_int_equal(qdata_read(&d, chunk, bufsize), 0);
	free(chunk);
	*n = b.len;
	return buf_steal(&b);
}

/* read_back: every message of dir/sub/name, which must validate. */
static struct qmsg *read_back(const char *dir, const char *sub, const char *name, size_t *n)
{
	struct qmsg *m;
	char err[256];

	if (!qmsg_read_all(path(dir, sub, name), &m, n, err, sizeof err))
		fail_msg("%s/%s: %s", sub, name, err);
	return m;
}

/* same_content: message m of the file dir/sub/name holds want[0..n). */
static void same_content(const char *dir, const char *sub, const char *name,
			 const struct qmsg *m, const char *want, size_t n, size_t bufsize)
{
	int fd = open(path(dir, sub, name), O_RDONLY | O_CLOEXEC);
	size_t len;

	assert_true(fd >= 0);
	assert_int_equal(m->data_len, n);
	char *got = content(fd, m, bufsize, &len);
	close(fd);
	assert_int_equal(len, n);
	if (n > 0)
		assert_memory_equal(got, want, n);
	free(got);
}

/* hand_msg: one message appended to b as another writer might make it:
 * id NULL for no ID record, retry NULL for no RETRY record. */
static void hand_msg(struct buf *b, const char *id, const char *retry)
{
	put_rec(b, 'V', L("1"), 1);
	if (id)
		put_rec(b, 'I', id, strlen(id), strlen(id));
	put_rec(b, 'T', L("1700000000000000"), 16);
	put_rec(b, 'C', L("192.0.2.1 h"), 11);
	put_rec(b, 'S', L("a@example.org"), 13);
	put_rec(b, 'R', L("b@example.net"), 13);
	if (retry)
		put_rec(b, 'Y', retry, strlen(retry), strlen(retry));
	put_rec(b, 'D', L("hello\r\n"), 7);
	put_rec(b, 'E', L(""), 0);
}

/* hand_file: dir/sub/name, nmsgs valid messages (the first named by the
 * file, the others by ID records), each with a RETRY record. */
static void hand_file(const char *dir, const char *sub, const char *name, size_t nmsgs)
{
	struct buf b = BUF_INIT;
	char id[QID_LEN + 1];

	for (size_t i = 0; i < nmsgs; i++) {
		snprintf(id, sizeof id, "%.13s%03zX", name, 0x800 + i);
		hand_msg(&b, i == 0 ? NULL : id, "2 1700000000000000 0");
	}
	write_file(path(dir, sub, name), b.data, b.len);
	buf_free(&b);
}

/* flush_n: n small messages in one flush, so in one file (named d[0].id). */
static void flush_n(struct queue *q, struct done *d, size_t n, const char *dir)
{
	for (size_t i = 0; i < n; i++)
		submit_one(q, &d[i], dir);
	assert_int_equal(queue_flush(q), n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(d[i].err, 0);
		assert_string_equal(d[i].file, d[0].id);
	}
}

/* ---- queue_set_notify --------------------------------------------------------- */

struct notes {
	const char *dir;
	int calls;
	char name[8][QID_LEN + 1];
	int order[8];     /* in done_order's sequence, shared with on_done */
	bool visible[8];  /* incoming/NAME existed during the call */
};

static void on_new(void *ctx, const char *name)
{
	struct notes *nt = ctx;

	if (nt->calls >= (int)ARRAY_LEN(nt->name))
		fail_msg("too many notifications (%s)", name);
	snprintf(nt->name[nt->calls], sizeof nt->name[0], "%s", name);
	nt->order[nt->calls] = ++done_order;
	nt->visible[nt->calls] = exists(path(nt->dir, "incoming", name));
	nt->calls++;
}

/* One call per file that lands in incoming/ (the shared file and a
 * spilled one: two for four messages), after every submitter's callback;
 * none for a message that fails, none once unset. */
static void test_notify(void **state)
{
	struct queue *q = queue_open(*state);
	struct notes nt = { .dir = *state };
	struct done d[4], bad = { .dir = *state };
	char bigid[QID_LEN + 1], id[QID_LEN + 1];
	size_t big = QF_SPILL + 100;
	char *bigp = xcalloc(1, big);

	assert_non_null(q);
	queue_set_notify(q, on_new, &nt);
	done_order = 0;
	submit_one(q, &d[0], *state);
	submit_one(q, &d[1], *state);
	struct qfile *f = start(q, bigid, 1);
	add(f, QREC_DATA, bigp, big);
	memset(&d[2], 0, sizeof d[2]);
	d[2].dir = *state;
	queue_submit(f, on_done, &d[2]);
	submit_one(q, &d[3], *state);
	assert_int_equal(nt.calls, 0);
	assert_int_equal(queue_flush(q), 4);
	assert_int_equal(count_entries(*state, "incoming"), 2);
	assert_int_equal(nt.calls, 2);
	bool shared = false, spilled = false;
	for (int i = 0; i < 2; i++) {
		assert_true(nt.visible[i]);
		if (nt.order[i] <= 4)
			fail_msg("notification %d ran before a submitter's callback", i);
		shared |= strcmp(nt.name[i], d[0].id) == 0;
		spilled |= strcmp(nt.name[i], bigid) == 0;
	}
	assert_true(shared && spilled);
	for (int i = 0; i < 4; i++)
		assert_int_equal(d[i].order, i + 1);
	/* Nothing to flush, nothing to say. */
	assert_int_equal(queue_flush(q), 0);
	assert_int_equal(nt.calls, 2);
	/* A refused message lands nowhere: no call. */
	cap_begin();
	f = start(q, id, 0);
	queue_submit(f, on_done, &bad);
	assert_int_equal(queue_flush(q), 1);
	free(cap_end());
	assert_int_equal(bad.err, EINVAL);
	assert_int_equal(nt.calls, 2);
	/* One message, one file, one call. */
	submit_one(q, &d[0], *state);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(nt.calls, 3);
	assert_string_equal(nt.name[2], d[0].id);
	assert_true(nt.visible[2]);
	queue_set_notify(q, NULL, NULL);
	submit_one(q, &d[1], *state);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(nt.calls, 3);
	assert_int_equal(queue_size(q), 6);
	assert_string_equal(queue_dirname(q), *state);
	free(bigp);
	queue_close(q);
}

/* ---- queue_list -------------------------------------------------------------- */

static void test_list(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[3];
	char **v, id[QID_LEN + 1];
	size_t n;

	assert_non_null(q);
	for (int k = 0; k < 2; k++) {
		v = queue_list(q, k ? QDIR_DEFERRED : QDIR_INCOMING, &n);
		assert_non_null(v);
		assert_int_equal(n, 0);
		queue_list_free(v, n);
	}
	for (int i = 0; i < 3; i++) {
		submit_one(q, &d[i], *state);
		assert_int_equal(queue_flush(q), 1);
	}
	/* Entries made behind the queue's back, in reverse order: listed,
	 * sorted, each directory on its own. */
	write_file(path(*state, "incoming", "0000000000000001"), L(""));
	for (size_t i = 200; i-- > 0;) {
		fake_id(id, 0xC000 + i);
		write_file(path(*state, "deferred", id), L(""));
	}
	v = queue_list(q, QDIR_INCOMING, &n);
	assert_non_null(v);
	assert_int_equal(n, 4);
	assert_string_equal(v[0], "0000000000000001");
	for (int i = 0; i < 3; i++)
		assert_string_equal(v[i + 1], d[i].id); /* oldest first */
	queue_list_free(v, n);
	v = queue_list(q, QDIR_DEFERRED, &n);
	assert_non_null(v);
	assert_int_equal(n, 200);
	for (size_t i = 0; i < n; i++) {
		fake_id(id, 0xC000 + i);
		assert_string_equal(v[i], id);
	}
	queue_list_free(v, n);
	/* A directory that cannot be read (no descriptor left to open it
	 * with): NULL, logged. */
	struct rlimit old, lim;
	int next = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(next >= 0);
	close(next);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)next;
	cap_begin();
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	v = queue_list(q, QDIR_DEFERRED, &n);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	char *log = cap_end();
	assert_null(v);
	char line[512];
	snprintf(line, sizeof line, "error: read %s/deferred: %s\n", (const char *)*state,
		 strerror(EMFILE));
	assert_logged(log, line);
	free(log);
	queue_close(q);
}

/* ---- queue_load ------------------------------------------------------------------ */

static void test_load(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[3];
	char def[2][QID_LEN + 1], line[512];
	struct qmsg *m;
	size_t n, len;
	int fd;
	const char *hello = "Subject: hi\r\n\r\nhello\r\n";

	assert_non_null(q);
	flush_n(q, d, 3, *state);
	queue_close(q);
	fake_id(def[0], 0xD0);
	fake_id(def[1], 0xD1);
	hand_file(*state, "deferred", def[0], 1);
	hand_file(*state, "deferred", def[1], 1);
	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 5);

	/* Every message of the file, and an open fd for its content. */
	m = load(q, QDIR_INCOMING, d[0].id, &fd, &n);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(m[i].id, d[i].id);
		assert_int_equal(m[i].nrcpts, 1);
		char *c = content(fd, &m[i], 4096, &len);
		assert_int_equal(len, strlen(hello));
		assert_memory_equal(c, hello, len);
		free(c);
	}
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	qmsg_free_all(m, n);
	m = load(q, QDIR_DEFERRED, def[0], &fd, &n);
	assert_int_equal(n, 1);
	assert_string_equal(m[0].id, def[0]);
	assert_int_equal(m[0].tries, 2);
	assert_true(m[0].next_us == UINT64_C(1700000000000000));
	assert_false(m[0].warned);
	assert_null(m[0].reason);
	close(fd);
	qmsg_free_all(m, n);
	assert_int_equal(queue_size(q), 5);
	check_size(q, *state);

	/* Missing: an error, logged; nothing moves, nothing counted out. */
	cap_begin();
	assert_false(queue_load(q, QDIR_DEFERRED, "00000000000000FF", &fd, &m, &n));
	char *log = cap_end();
	assert_int_equal(fd, -1);
	assert_null(m);
	assert_int_equal(n, 0);
	assert_logged(log, "error: 00000000000000FF: open deferred/00000000000000FF: "
		      "No such file or directory\n");
	free(log);
	assert_int_equal(queue_size(q), 5);
	assert_int_equal(count_entries(*state, "corrupt"), 0);

	/* Damaged since it was counted: moved to corrupt/, counted out. */
	struct stat sb;
	assert_int_equal(stat(path(*state, "deferred", def[1]), &sb), 0);
	assert_int_equal(truncate(path(*state, "deferred", def[1]), sb.st_size - 1), 0);
	cap_begin();
	assert_false(queue_load(q, QDIR_DEFERRED, def[1], &fd, &m, &n));
	log = cap_end();
	assert_int_equal(fd, -1);
	assert_null(m);
	assert_int_equal(n, 0);
	snprintf(line, sizeof line, "%s: moved to corrupt/: no END record (truncated)\n", def[1]);
	assert_logged(log, line);
	free(log);
	assert_false(exists(path(*state, "deferred", def[1])));
	assert_true(exists(path(*state, "corrupt", def[1])));
	assert_int_equal(queue_size(q), 4);
	check_size(q, *state);

	/* A symbolic link, even to a valid file, is never followed. */
	assert_int_equal(symlink(path(*state, "incoming", d[0].id),
				 path(*state, "deferred", "00000000000000F0")), 0);
	cap_begin();
	assert_false(queue_load(q, QDIR_DEFERRED, "00000000000000F0", &fd, &m, &n));
	log = cap_end();
	assert_int_equal(fd, -1);
	assert_null(m);
	assert_logged(log, "00000000000000F0: moved to corrupt/: symbolic link\n");
	free(log);
	assert_int_equal(lstat(path(*state, "corrupt", "00000000000000F0"), &sb), 0);
	assert_true(S_ISLNK(sb.st_mode));
	assert_false(exists(path(*state, "deferred", "00000000000000F0")));
	assert_true(exists(path(*state, "incoming", d[0].id))); /* the target stays */
	assert_int_equal(queue_size(q), 4);

	/* A name that is no queue id. */
	write_file(path(*state, "deferred", "bogus"), L(""));
	cap_begin();
	assert_false(queue_load(q, QDIR_DEFERRED, "bogus", &fd, &m, &n));
	log = cap_end();
	assert_logged(log, "bogus: moved to corrupt/: not a queue file name\n");
	free(log);
	assert_int_equal(count_entries(*state, "deferred"), 1);
	assert_int_equal(count_entries(*state, "corrupt"), 3);
	check_size(q, *state);
	queue_close(q);
	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 4);
	queue_close(q);
}

/* A damaged file of three messages: all three leave the count.
 * Regression (queue_load): the corrupt path took one message off
 * queue_size, so two stayed counted and the instance never went idle
 * (main.c waits for queue_size() == 0). */
static void test_load_corrupt_multi_counted_out(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[3];
	struct qmsg *m;
	size_t n;
	int fd;
	char newname[QID_LEN + 1];
	struct stat sb;

	assert_non_null(q);
	flush_n(q, d, 3, *state);
	m = load(q, QDIR_INCOMING, d[0].id, &fd, &n);
	struct qdefer v[3];
	for (size_t i = 0; i < 3; i++)
		v[i] = (struct qdefer){ &m[i], NULL, 1, 1, false, "later" };
	assert_true(queue_defer(q, fd, v, 3, QDIR_INCOMING, d[0].id, 3, newname));
	close(fd);
	qmsg_free_all(m, n);
	assert_int_equal(queue_size(q), 3);
	check_size(q, *state);
	assert_int_equal(stat(path(*state, "deferred", newname), &sb), 0);
	assert_int_equal(truncate(path(*state, "deferred", newname), sb.st_size - 1), 0);
	cap_begin();
	assert_false(queue_load(q, QDIR_DEFERRED, newname, &fd, &m, &n));
	free(cap_end());
	assert_true(exists(path(*state, "corrupt", newname)));
	assert_int_equal(count_entries(*state, "deferred"), 0);
	size_t size = queue_size(q);
	queue_close(q);
	if (size != 0)
		fail_msg("queue_size %zu after a 3-message file went to corrupt/, "
			 "want 0", size);
}

/* ---- queue_remove ------------------------------------------------------------------- */

static void test_remove(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[4];

	assert_non_null(q);
	flush_n(q, d, 3, *state);
	submit_one(q, &d[3], *state);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(queue_size(q), 4);
	/* The unlink fails (a directory of that name): logged, false, still
	 * counted. */
	assert_int_equal(mkdir(path(*state, "deferred", "00000000000000D0"), 0700), 0);
	cap_begin();
	assert_false(queue_remove(q, QDIR_DEFERRED, "00000000000000D0", 1));
	char *log = cap_end();
	assert_logged(log, "error: 00000000000000D0: remove deferred/00000000000000D0: "
		      "Is a directory\n");
	free(log);
	assert_int_equal(queue_size(q), 4);
	assert_int_equal(rmdir(path(*state, "deferred", "00000000000000D0")), 0);
	/* A file of three: three fewer. */
	assert_true(queue_remove(q, QDIR_INCOMING, d[0].id, 3));
	assert_false(exists(path(*state, "incoming", d[0].id)));
	assert_int_equal(queue_size(q), 1);
	check_size(q, *state);
	assert_true(queue_remove(q, QDIR_INCOMING, d[3].id, 1));
	assert_int_equal(queue_size(q), 0);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	/* A count larger than the queue's stops at zero. */
	submit_one(q, &d[0], *state);
	assert_int_equal(queue_flush(q), 1);
	assert_true(queue_remove(q, QDIR_INCOMING, d[0].id, 5));
	assert_int_equal(queue_size(q), 0);
	check_size(q, *state);
	queue_close(q);
	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 0);
	queue_close(q);
}

/* ---- queue_defer --------------------------------------------------------------------- */

/* incoming/ID -> deferred/ID with some recipients and the retry state;
 * deferred/ID -> deferred/ID again (the file replaced); the limits of
 * the RETRY fields. */
static void test_defer_basic(void **state)
{
	struct queue *q = queue_open(*state);
	struct notes nt = { .dir = *state };
	struct done d = { .dir = *state };
	char id[QID_LEN + 1], newname[QID_LEN + 1];
	struct qmsg *m, *w;
	size_t n, nw, len;
	int fd;
	struct stat sb;

	assert_non_null(q);
	queue_set_notify(q, on_new, &nt);
	struct qfile *f = start(q, id, 3);
	add(f, QREC_ATTR, L("SIZE=42"));
	add(f, QREC_ATTR, L("BODY=8BITMIME"));
	add(f, QREC_DATA, L("Subject: deferred\r\n\r\n"));
	add(f, QREC_DATA, L("\0binary\xff\r\n"));
	queue_submit(f, on_done, &d);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(nt.calls, 1);
	m = load(q, QDIR_INCOMING, id, &fd, &n);
	assert_int_equal(n, 1);
	char *want = content(fd, &m[0], 4096, &len);
	assert_int_equal(len, sizeof "Subject: deferred\r\n\r\n\0binary\xff\r\n" - 1);

	bool keep[3] = { true, false, true };
	struct qdefer v = { &m[0], keep, 3, UINT64_C(1700000000999999), true,
			    "451 4.7.1 greylisted\r\n\x1b[0m" };
	memset(newname, 'x', sizeof newname);
	assert_true(queue_defer(q, fd, &v, 1, QDIR_INCOMING, id, 1, newname));
	close(fd);
	qmsg_free_all(m, n);
	assert_string_equal(newname, id);
	assert_false(exists(path(*state, "incoming", id)));
	assert_int_equal(count_entries(*state, "deferred"), 1);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(nt.calls, 1); /* deferred/ is not incoming/ */
	assert_int_equal(stat(path(*state, "deferred", id), &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(queue_size(q), 1);
	check_size(q, *state);

	w = read_back(*state, "deferred", id, &nw);
	assert_int_equal(nw, 1);
	assert_string_equal(w[0].id, id);
	assert_true(w[0].time_us == UINT64_C(1700000000123456));
	assert_string_equal(w[0].client, "192.0.2.1 mx.example.org");
	assert_string_equal(w[0].sender, "alice@example.org");
	assert_int_equal(w[0].nrcpts, 2);
	assert_string_equal(w[0].rcpts[0], "user0@example.net");
	assert_string_equal(w[0].rcpts[1], "user2@example.net");
	assert_int_equal(w[0].nattrs, 2);
	assert_string_equal(w[0].attrs[0], "SIZE=42");
	assert_string_equal(w[0].attrs[1], "BODY=8BITMIME");
	assert_int_equal(w[0].tries, 3);
	assert_true(w[0].next_us == UINT64_C(1700000000999999));
	assert_true(w[0].warned);
	/* The reason is made printable before it reaches the file. */
	assert_string_equal(w[0].reason, "451 4.7.1 greylisted\\x0d\\x0a\\x1b[0m");
	same_content(*state, "deferred", id, &w[0], want, len, 5);
	qmsg_free_all(w, nw);

	/* Again, from deferred/ under the same name: replaced in place. */
	m = load(q, QDIR_DEFERRED, id, &fd, &n);
	v = (struct qdefer){ &m[0], NULL, 4, 0, false, NULL };
	assert_true(queue_defer(q, fd, &v, 1, QDIR_DEFERRED, id, 1, newname));
	close(fd);
	qmsg_free_all(m, n);
	assert_string_equal(newname, id);
	assert_int_equal(count_entries(*state, "deferred"), 1);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(queue_size(q), 1);
	check_size(q, *state);
	w = read_back(*state, "deferred", id, &nw);
	assert_int_equal(nw, 1);
	assert_int_equal(w[0].nrcpts, 2); /* keep NULL keeps all there were */
	assert_string_equal(w[0].rcpts[1], "user2@example.net");
	assert_int_equal(w[0].tries, 4);
	assert_true(w[0].next_us == 0);
	assert_false(w[0].warned);
	assert_null(w[0].reason);
	same_content(*state, "deferred", id, &w[0], want, len, 4096);
	qmsg_free_all(w, nw);

	/* The largest values the reader takes come back as they went. */
	m = load(q, QDIR_DEFERRED, id, &fd, &n);
	v = (struct qdefer){ &m[0], (const bool[2]){ false, true }, 1000000, UINT64_MAX, true,
			     "x" };
	assert_true(queue_defer(q, fd, &v, 1, QDIR_DEFERRED, id, 1, newname));
	close(fd);
	qmsg_free_all(m, n);
	w = read_back(*state, "deferred", id, &nw);
	assert_int_equal(w[0].nrcpts, 1);
	assert_string_equal(w[0].rcpts[0], "user2@example.net");
	assert_int_equal(w[0].tries, 1000000);
	assert_true(w[0].next_us == UINT64_MAX);
	assert_true(w[0].warned);
	assert_string_equal(w[0].reason, "x");
	qmsg_free_all(w, nw);
	assert_int_equal(queue_size(q), 1);
	check_size(q, *state);
	free(want);
	queue_close(q);
	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 1);
	queue_close(q);
}

/* A file of three: the first is done, the other two deferred (one with
 * no content at all), then one of them, then none. */
static void test_defer_multi(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[3];
	char ids[3][QID_LEN + 1], newname[QID_LEN + 1];
	struct qmsg *m, *w;
	size_t n, nw;
	int fd;
	char *longreason = xmalloc(3001);

	assert_non_null(q);
	memset(longreason, 'r', 3000);
	longreason[3000] = 0;
	for (int i = 0; i < 3; i++) {
		struct qfile *f = start(q, ids[i], 3);
		if (i == 0)
			add(f, QREC_DATA, L("zero\r\n"));
		if (i == 2) {
			add(f, QREC_DATA, L("tw"));
			add(f, QREC_DATA, L(""));
			add(f, QREC_DATA, L("o\r\n"));
		}
		memset(&d[i], 0, sizeof d[i]);
		d[i].dir = *state;
		queue_submit(f, on_done, &d[i]);
	}
	assert_int_equal(queue_flush(q), 3);
	assert_string_equal(d[2].file, ids[0]);
	assert_int_equal(queue_size(q), 3);

	m = load(q, QDIR_INCOMING, ids[0], &fd, &n);
	assert_int_equal(n, 3);
	assert_int_equal(m[1].data_offset, -1);
	struct qdefer v[2] = {
		{ &m[1], NULL, 1, 111, false, "" },
		{ &m[2], (const bool[3]){ false, true, true }, 2, 222, true, longreason },
	};
	assert_true(queue_defer(q, fd, v, 2, QDIR_INCOMING, ids[0], 3, newname));
	close(fd);
	qmsg_free_all(m, n);
	assert_string_equal(newname, ids[1]); /* named after its first message */
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(count_entries(*state, "deferred"), 1);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(queue_size(q), 2);
	check_size(q, *state);
	w = read_back(*state, "deferred", ids[1], &nw);
	assert_int_equal(nw, 2);
	assert_string_equal(w[0].id, ids[1]);
	assert_int_equal(w[0].nrcpts, 3);
	assert_int_equal(w[0].data_offset, -1);
	assert_int_equal(w[0].data_len, 0);
	assert_int_equal(w[0].tries, 1);
	assert_true(w[0].next_us == 111);
	assert_null(w[0].reason); /* "" writes no REASON */
	assert_string_equal(w[1].id, ids[2]);
	assert_int_equal(w[1].nrcpts, 2);
	assert_string_equal(w[1].rcpts[0], "user1@example.net");
	assert_string_equal(w[1].rcpts[1], "user2@example.net");
	assert_int_equal(w[1].tries, 2);
	assert_true(w[1].next_us == 222);
	assert_true(w[1].warned);
	assert_int_equal(strlen(w[1].reason), 2000); /* bounded */
	assert_int_equal(strspn(w[1].reason, "r"), 2000);
	same_content(*state, "deferred", ids[1], &w[0], "", 0, 64);
	same_content(*state, "deferred", ids[1], &w[1], "two\r\n", 5, 1);
	qmsg_free_all(w, nw);

	/* Only the last stays: its own name, the old file goes. */
	m = load(q, QDIR_DEFERRED, ids[1], &fd, &n);
	assert_int_equal(n, 2);
	v[0] = (struct qdefer){ &m[1], NULL, 3, 333, true, m[1].reason };
	assert_true(queue_defer(q, fd, v, 1, QDIR_DEFERRED, ids[1], 2, newname));
	close(fd);
	qmsg_free_all(m, n);
	assert_string_equal(newname, ids[2]);
	assert_false(exists(path(*state, "deferred", ids[1])));
	assert_int_equal(count_entries(*state, "deferred"), 1);
	assert_int_equal(queue_size(q), 1);
	check_size(q, *state);
	w = read_back(*state, "deferred", ids[2], &nw);
	assert_int_equal(nw, 1);
	assert_int_equal(w[0].tries, 3);
	assert_int_equal(strspn(w[0].reason, "r"), 2000);
	same_content(*state, "deferred", ids[2], &w[0], "two\r\n", 5, 4096);
	qmsg_free_all(w, nw);

	/* n == 0 only removes, in deferred/ and in incoming/. */
	memset(newname, 'x', sizeof newname);
	assert_true(queue_defer(q, -1, NULL, 0, QDIR_DEFERRED, ids[2], 1, newname));
	assert_string_equal(newname, "");
	assert_int_equal(count_entries(*state, "deferred"), 0);
	assert_int_equal(queue_size(q), 0);
	submit_one(q, &d[0], *state);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(queue_size(q), 1);
	assert_true(queue_defer(q, -1, NULL, 0, QDIR_INCOMING, d[0].id, 1, newname));
	assert_string_equal(newname, "");
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(count_entries(*state, "deferred"), 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(queue_size(q), 0);
	free(longreason);
	queue_close(q);
	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 0);
	queue_close(q);
}

/* Content over 64 KiB in many DATA records of awkward sizes, NULs and
 * all: copied byte for byte. */
static void test_defer_big(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d = { .dir = *state };
	static const size_t sizes[] = { 100, 300 * 1024, 0, 70000, 1, 200 * 1024, 65536, 65537 };
	struct buf want = BUF_INIT;
	char id[QID_LEN + 1], newname[QID_LEN + 1];
	struct qmsg *m, *w;
	size_t n, nw, len;
	int fd;

	assert_non_null(q);
	struct qfile *f = start(q, id, 2);
	for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
		char *p = xmalloc(sizes[i] + 1);
		for (size_t k = 0; k < sizes[i]; k++)
			p[k] = (char)((k * 31 + i * 7) & 0xff);
		add(f, QREC_DATA, p, sizes[i]);
		buf_append(&want, p, sizes[i]);
		free(p);
	}
	queue_submit(f, on_done, &d);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(d.err, 0);
	m = load(q, QDIR_INCOMING, id, &fd, &n);
	assert_int_equal(m[0].data_len, want.len);
	char *c = content(fd, &m[0], 1 << 20, &len);
	assert_int_equal(len, want.len);
	assert_memory_equal(c, want.data, len);
	free(c);
	struct qdefer v = { &m[0], NULL, 1, 5, false, "busy" };
	assert_true(queue_defer(q, fd, &v, 1, QDIR_INCOMING, id, 1, newname));
	close(fd);
	qmsg_free_all(m, n);
	assert_string_equal(newname, id);
	assert_int_equal(queue_size(q), 1);
	check_size(q, *state);
	w = read_back(*state, "deferred", id, &nw);
	assert_int_equal(nw, 1);
	assert_int_equal(w[0].nrcpts, 2);
	static const size_t bufsizes[] = { 7, 4096, 65536, 1 << 20 };
	for (size_t i = 0; i < ARRAY_LEN(bufsizes); i++)
		same_content(*state, "deferred", id, &w[0], want.data, want.len, bufsizes[i]);
	qmsg_free_all(w, nw);
	buf_free(&want);
	queue_close(q);
}

/* Failures leave the old file as it was, nothing in deferred/ or tmp/,
 * and the count unchanged: the source shrank under us (EIO), and the
 * disk is full (the file size limit stands in). */
static void test_defer_failures(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d = { .dir = *state };
	char id[QID_LEN + 1], newname[QID_LEN + 1], line[512];
	struct qmsg *m;
	size_t n, len0, len1;
	int fd;
	char body[5000];

	assert_non_null(q);
	memset(body, 'b', sizeof body);
	/* The source is cut inside its content after it was loaded. */
	struct qfile *f = start(q, id, 1);
	add(f, QREC_DATA, body, sizeof body);
	queue_submit(f, on_done, &d);
	assert_int_equal(queue_flush(q), 1);
	m = load(q, QDIR_INCOMING, id, &fd, &n);
	assert_int_equal(truncate(path(*state, "incoming", id), m[0].data_offset + 100), 0);
	struct qdefer v = { &m[0], NULL, 1, 5, false, NULL };
	cap_begin();
	assert_false(queue_defer(q, fd, &v, 1, QDIR_INCOMING, id, 1, newname));
	char *log = cap_end();
	snprintf(line, sizeof line, "error: %s: write %s/deferred/%s: %s\n", id,
		 (const char *)*state, id, strerror(EIO));
	assert_logged(log, line);
	free(log);
	close(fd);
	qmsg_free_all(m, n);
	assert_true(exists(path(*state, "incoming", id)));
	assert_int_equal(count_entries(*state, "deferred"), 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(queue_size(q), 1);
	assert_true(queue_remove(q, QDIR_INCOMING, id, 1));

	/* Writes fail: a file of a small message and a larger one. */
	struct rlimit old, lim;
	struct done d2 = { .dir = *state };
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	submit_one(q, &d, *state);
	f = start(q, id, 1);
	add(f, QREC_DATA, body, sizeof body);
	queue_submit(f, on_done, &d2);
	assert_int_equal(queue_flush(q), 2);
	assert_string_equal(d2.file, d.id);
	char *before = read_file(path(*state, "incoming", d.id), &len0);
	m = load(q, QDIR_INCOMING, d.id, &fd, &n);
	assert_int_equal(n, 2);
	struct qdefer v2[2] = { { &m[0], NULL, 1, 5, false, NULL },
				{ &m[1], NULL, 1, 5, false, NULL } };
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 1000;
	cap_begin();
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	bool ok = queue_defer(q, fd, v2, 2, QDIR_INCOMING, d.id, 2, newname);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	log = cap_end();
	signal(SIGXFSZ, oldsig);
	assert_false(ok);
	snprintf(line, sizeof line, "error: %s: write %s/deferred/%s: %s\n", m[0].id,
		 (const char *)*state, m[0].id, strerror(EFBIG));
	assert_logged(log, line);
	free(log);
	char *after = read_file(path(*state, "incoming", d.id), &len1);
	assert_int_equal(len0, len1);
	assert_memory_equal(before, after, len0);
	assert_int_equal(count_entries(*state, "deferred"), 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	assert_int_equal(queue_size(q), 2);
	check_size(q, *state);
	/* With room again, the same call succeeds. */
	assert_true(queue_defer(q, fd, v2, 2, QDIR_INCOMING, d.id, 2, newname));
	assert_string_equal(newname, m[0].id);
	assert_int_equal(queue_size(q), 2);
	check_size(q, *state);
	close(fd);
	qmsg_free_all(m, n);
	free(before);
	free(after);
	queue_close(q);
}

/* A crash between queue_defer's rename and its removal of the old file
 * leaves incoming/ID and deferred/ID both (both counted at the next
 * start). Deferring incoming/ID again replaces deferred/ID: one file is
 * left, and the count must say so.
 * Regression (queue_defer): the replaced file's messages were never
 * taken off queue_size (2 stayed 2). */
static void test_defer_replaces_crash_leftover(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d;
	char newname[QID_LEN + 1];
	struct qmsg *m;
	size_t n, len;
	int fd;

	assert_non_null(q);
	submit_one(q, &d, *state);
	assert_int_equal(queue_flush(q), 1);
	char *copy = read_file(path(*state, "incoming", d.id), &len);
	m = load(q, QDIR_INCOMING, d.id, &fd, &n);
	struct qdefer v = { &m[0], NULL, 1, 5, false, "later" };
	assert_true(queue_defer(q, fd, &v, 1, QDIR_INCOMING, d.id, 1, newname));
	close(fd);
	qmsg_free_all(m, n);
	queue_close(q);
	write_file(path(*state, "incoming", d.id), copy, len); /* the crash */
	free(copy);
	q = queue_open(*state);
	assert_non_null(q);
	assert_int_equal(queue_size(q), 2);
	check_size(q, *state);
	m = load(q, QDIR_INCOMING, d.id, &fd, &n);
	v = (struct qdefer){ &m[0], NULL, 1, 5, false, "later" };
	assert_true(queue_defer(q, fd, &v, 1, QDIR_INCOMING, d.id, 1, newname));
	close(fd);
	qmsg_free_all(m, n);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(count_entries(*state, "deferred"), 1);
	size_t size = queue_size(q), disk = count_queued(*state);
	queue_close(q);
	if (size != disk)
		fail_msg("queue_size %zu, %zu message(s) on disk", size, disk);
}

/* defer_stays_valid: whatever queue_defer is given, it never writes a
 * file the reader refuses (that file, and every other message in it,
 * would go to corrupt/ at the next load): it writes a valid file, or
 * fails and leaves the old one. The first of two messages gets keep0 (it
 * has one recipient) and tries. */
static void defer_stays_valid(const char *dir, const char *what, bool keep0, unsigned tries)
{
	struct queue *q = queue_open(dir);
	struct done d[2];
	char newname[QID_LEN + 1], err[256];
	struct qmsg *m, *w;
	size_t n, nw;
	int fd;
	const bool keep[1] = { keep0 };

	assert_non_null(q);
	flush_n(q, d, 2, dir);
	m = load(q, QDIR_INCOMING, d[0].id, &fd, &n);
	struct qdefer v[2] = {
		{ &m[0], keep, tries, 5, false, "x" },
		{ &m[1], NULL, 1, 5, false, "y" },
	};
	cap_begin();
	bool ok = queue_defer(q, fd, v, 2, QDIR_INCOMING, d[0].id, 2, newname);
	free(cap_end());
	close(fd);
	qmsg_free_all(m, n);
	if (ok) {
		if (!qmsg_read_all(path(dir, "deferred", newname), &w, &nw, err, sizeof err)) {
			queue_close(q);
			fail_msg("%s: queue_defer wrote deferred/%s, which the reader "
				 "refuses: %s", what, newname, err);
		}
		qmsg_free_all(w, nw);
	} else {
		assert_true(exists(path(dir, "incoming", d[0].id)));
		assert_int_equal(count_entries(dir, "deferred"), 0);
	}
	check_size(q, dir);
	queue_close(q);
}

/* Regression (defer_records): a message none of whose recipients is kept
 * was written without any RCPT record. */
static void test_defer_no_rcpt_kept(void **state)
{
	defer_stays_valid(*state, "no recipient kept", false, 1);
}

/* Regression (defer_records): a try count past 1000000 (parse_retry's
 * limit) was written as it is. */
static void test_defer_tries_over_limit(void **state)
{
	defer_stays_valid(*state, "tries 1000001", true, 1000001);
}

/* The same with values the reader takes: a valid file. */
static void test_defer_tries_at_limit(void **state)
{
	defer_stays_valid(*state, "tries 1000000", true, 1000000);
}

/* ---- qdata_read -------------------------------------------------------------------- */

/* dfile: a message whose content is DATA records of the given sizes (byte
 * k of record i is (k * 13 + i) & 0xff), into b; the content into want. */
static void dfile(struct buf *b, struct buf *want, const size_t *sizes, size_t nsizes)
{
	put_rec(b, 'V', L("1"), 1);
	put_rec(b, 'T', L("1"), 1);
	put_rec(b, 'C', L("c"), 1);
	put_rec(b, 'S', L(""), 0);
	put_rec(b, 'R', L("r@example.net"), 13);
	for (size_t i = 0; i < nsizes; i++) {
		char *p = xmalloc(sizes[i] + 1);
		for (size_t k = 0; k < sizes[i]; k++)
			p[k] = (char)((k * 13 + i) & 0xff);
		put_rec(b, 'D', p, sizes[i], sizes[i]);
		buf_append(want, p, sizes[i]);
		free(p);
	}
	put_rec(b, 'E', L(""), 0);
}

/* Exactly the content, across record boundaries (empty records, records
 * larger than the buffer), with any buffer size; pread only (the file
 * offset never moves, two readers share one fd); no content is 0 at
 * once. */
static void test_qdata_read(void **state)
{
	static const size_t sizes[] = { 0, 1, 7, 70000, 0, 3, 65536, 65537 };
	static const size_t bufsizes[] = { 1, 2, 5, 4096, 65536, 1 << 20 };
	struct buf b = BUF_INIT, want = BUF_INIT;
	const char *p = path(*state, "file", NULL);
	struct qmsg m;
	struct qdata d1, d2;
	char err[256], chunk[1000];
	size_t len;

	dfile(&b, &want, sizes, ARRAY_LEN(sizes));
	write_file(p, b.data, b.len);
	if (!qmsg_read(p, &m, err, sizeof err))
		fail_msg("qmsg_read: %s", err);
	assert_int_equal(m.data_len, want.len);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	for (size_t i = 0; i < ARRAY_LEN(bufsizes); i++) {
		char *c = content(fd, &m, bufsizes[i], &len);
		assert_int_equal(len, want.len);
		assert_memory_equal(c, want.data, len);
		free(c);
	}
	assert_int_equal(lseek(fd, 0, SEEK_CUR), 0);
	/* Two readers on one fd, taking turns. */
	struct buf g1 = BUF_INIT, g2 = BUF_INIT;
	long r1 = 1, r2 = 1;
	qdata_init(&d1, fd, m.data_offset);
	qdata_init(&d2, fd, m.data_offset);
	while (r1 > 0 || r2 > 0) {
		if (r1 > 0 && (r1 = qdata_read(&d1, chunk, sizeof chunk)) > 0)
			buf_append(&g1, chunk, (size_t)r1);
		if (r2 > 0 && (r2 = qdata_read(&d2, chunk, 333)) > 0)
			buf_append(&g2, chunk, (size_t)r2);
	}
	assert_int_equal(r1, 0);
	assert_int_equal(r2, 0);
	assert_int_equal(g1.len, want.len);
	assert_int_equal(g2.len, want.len);
	assert_memory_equal(g1.data, want.data, want.len);
	assert_memory_equal(g2.data, want.data, want.len);
	buf_free(&g1);
	buf_free(&g2);
	close(fd);
	qmsg_free(&m);
	/* No content: 0 at once, without touching the fd. */
	qdata_init(&d1, -1, -1);
	assert_int_equal(qdata_read(&d1, chunk, sizeof chunk), 0);
	assert_int_equal(qdata_read(&d1, chunk, sizeof chunk), 0);
	buf_free(&b);
	buf_free(&want);
}

/* A file cut anywhere from the content to the END header: -1 with EIO,
 * never a short content that looks complete; cut after it, the whole
 * content. Also a DATA header over the record limit. */
static void test_qdata_read_truncated(void **state)
{
	static const size_t sizes[] = { 0, 1, 7, 0, 3 };
	struct buf b = BUF_INIT, want = BUF_INIT;
	const char *p = path(*state, "file", NULL), *cp = path(*state, "cut", NULL);
	struct qmsg m;
	struct qdata d;
	char err[256], chunk[64];

	dfile(&b, &want, sizes, ARRAY_LEN(sizes));
	write_file(p, b.data, b.len);
	if (!qmsg_read(p, &m, err, sizeof err))
		fail_msg("qmsg_read: %s", err);
	size_t end = b.len - 5; /* the END header */
	for (size_t cut = (size_t)m.data_offset; cut <= b.len; cut++) {
		struct buf got = BUF_INIT;
		long r;
		write_file(cp, b.data, cut);
		int fd = open(cp, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		qdata_init(&d, fd, m.data_offset);
		errno = 0;
		while ((r = qdata_read(&d, chunk, 2)) > 0)
			buf_append(&got, chunk, (size_t)r);
		int e = errno;
		close(fd);
		if (cut < end + 5) {
			if (r != -1 || e != EIO)
				fail_msg("cut at %zu of %zu: %ld (%s), want -1 (EIO)", cut, b.len,
					 r, strerror(e));
			assert_true(got.len <= want.len);
		} else {
			assert_int_equal(r, 0);
			assert_int_equal(got.len, want.len);
			assert_memory_equal(got.data, want.data, want.len);
		}
		buf_free(&got);
	}
	qmsg_free(&m);
	/* A DATA header past QREC_MAX (in a file that is really that long). */
	buf_reset(&b);
	put_rec(&b, 'D', NULL, 0, (unsigned long long)QREC_MAX + 1);
	write_file(p, b.data, b.len);
	assert_int_equal(truncate(p, (off_t)QREC_MAX + 100), 0);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	qdata_init(&d, fd, 0);
	errno = 0;
	assert_int_equal(qdata_read(&d, chunk, sizeof chunk), -1);
	assert_int_equal(errno, EIO);
	close(fd);
	buf_free(&b);
	buf_free(&want);
}

/* Content in DATA records with other records between them: the writer
 * takes it and the reader counts all of it in data_len, so qdata_read
 * must give all of it.
 * Regression (qdata_read): reading stopped at the first record that was
 * not DATA, so delivery (smtpc.c, bounce.c) and queue_defer's copy got
 * only "ab" of "abcde". */
static void test_qdata_read_interleaved(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d = { .dir = *state };
	char id[QID_LEN + 1];
	struct qmsg *m;
	size_t n, len;
	int fd;

	assert_non_null(q);
	struct qfile *f = start(q, id, 1);
	add(f, QREC_DATA, L("ab"));
	add(f, QREC_RCPT, L("late@example.net"));
	add(f, QREC_DATA, L("cde"));
	queue_submit(f, on_done, &d);
	assert_int_equal(queue_flush(q), 1);
	assert_int_equal(d.err, 0);
	m = load(q, QDIR_INCOMING, id, &fd, &n);
	assert_int_equal(m[0].nrcpts, 2);
	assert_int_equal(m[0].data_len, 5);
	char *c = content(fd, &m[0], 4096, &len);
	bool same = len == 5 && memcmp(c, "abcde", 5) == 0;
	free(c);
	close(fd);
	qmsg_free_all(m, n);
	queue_close(q);
	if (!same)
		fail_msg("qdata_read gave %zu of the 5 content bytes", len);
}

/* ---- RETRY and REASON records from a hostile hand ---------------------------------- */

#define RETRY_OK R('Y', "1 2 0")

static const struct fcase retry_files[] = {
	{ "RETRY two fields", { HEAD, RCPT, R('Y', "1 2"), END }, NULL, 0,
	  "bad RETRY record \"1 2\"", 0, 0 },
	{ "RETRY not decimal", { HEAD, RCPT, R('Y', "x 1 0"), END }, NULL, 0,
	  "bad RETRY record \"x 1 0\"", 0, 0 },
	{ "RETRY four fields", { HEAD, RCPT, R('Y', "1 2 3 4"), END }, NULL, 0,
	  "bad RETRY record \"1 2 3 4\"", 0, 0 },
	{ "RETRY empty", { HEAD, RCPT, R('Y', ""), END }, NULL, 0, "bad RETRY record \"\"", 0, 0 },
	{ "RETRY with NUL", { HEAD, RCPT, R('Y', "1 2\0 0"), END }, NULL, 0,
	  "NUL byte in RETRY record", 0, 0 },
	{ "RETRY negative", { HEAD, RCPT, R('Y', "-1 2 0"), END }, NULL, 0,
	  "bad RETRY record \"-1 2 0\"", 0, 0 },
	{ "RETRY tries over the limit", { HEAD, RCPT, R('Y', "1000001 2 0"), END }, NULL, 0,
	  "bad RETRY record \"1000001 2 0\"", 0, 0 },
	{ "RETRY next overflows", { HEAD, RCPT, R('Y', "1 18446744073709551616 0"), END }, NULL,
	  0, "bad RETRY record \"1 18446744073709551616 0\"", 0, 0 },
	{ "RETRY escaped", { HEAD, RCPT, R('Y', "1 2 0\r\n\x1b"), END }, NULL, 0,
	  "bad RETRY record \"1 2 0\\x0d\\x0a\\x1b\"", 0, 0 },
	{ "RETRY long", { HEAD, RCPT, R('Y', "1 2 0000000000000000000000000000000000000000000000"
				     "000000000000000001"), END }, NULL, 0,
	  "bad RETRY record \"1 2 0000000000000000000000000000\"...", 0, 0 },
	{ "two RETRYs", { HEAD, RCPT, RETRY_OK, RETRY_OK, END }, NULL, 0, "second RETRY record",
	  0, 0 },
	{ "two REASONs", { HEAD, RCPT, R('W', "a"), R('W', "b"), END }, NULL, 0,
	  "second REASON record", 0, 0 },
	{ "NUL in REASON", { HEAD, RCPT, R('W', "451\0x"), END }, NULL, 0,
	  "NUL byte in REASON record", 0, 0 },
	{ "RETRY before VERSION", { R('Y', "1 2 0"), HEAD, RCPT, END }, NULL, 0,
	  "missing VERSION record (the first record is RETRY)", 0, 0 },
	/* Valid ones stay and are counted. */
	{ "RETRY and REASON", { HEAD, RCPT, R('Y', "7 1700000000000001 1"), R('W', "451 later"),
				R('D', "x"), END }, NULL, 0, NULL, 1, 1 },
	{ "RETRY at the limits", { HEAD, RCPT, R('Y', "1000000 18446744073709551615 0"), END },
	  NULL, 0, NULL, 1, 0 },
	{ "REASON alone", { HEAD, RCPT, R('W', "x"), END }, NULL, 0, NULL, 1, 0 },
};

/* Read directly, through queue_open in deferred/, and through queue_load
 * of a deferred file damaged after it was counted. */
static void test_retry_records(void **state)
{
	char id[ARRAY_LEN(retry_files)][QID_LEN + 1], line[512];
	size_t valid = 0;
	struct queue *q = queue_open(*state);
	struct qmsg m;

	assert_non_null(q);
	queue_close(q);
	for (size_t i = 0; i < ARRAY_LEN(retry_files); i++) {
		const struct fcase *c = &retry_files[i];
		size_t n;
		char *data = build(c, &n);
		write_file(path(*state, "file", NULL), data, n);
		check_read(path(*state, "file", NULL), c->name, c->expect, &m);
		if (c->expect == NULL) {
			assert_int_equal(m.nrcpts, c->nrcpts);
			assert_int_equal(m.data_len, c->data_len);
		}
		if (strcmp(c->name, "RETRY and REASON") == 0) {
			assert_int_equal(m.tries, 7);
			assert_true(m.next_us == UINT64_C(1700000000000001));
			assert_true(m.warned);
			assert_string_equal(m.reason, "451 later");
		}
		if (strcmp(c->name, "RETRY at the limits") == 0) {
			assert_int_equal(m.tries, 1000000);
			assert_true(m.next_us == UINT64_MAX);
			assert_false(m.warned);
			assert_null(m.reason);
		}
		if (strcmp(c->name, "REASON alone") == 0) {
			assert_int_equal(m.tries, 0);
			assert_string_equal(m.reason, "x");
		}
		qmsg_free(&m);
		fake_id(id[i], 0x700 + i);
		write_file(path(*state, "deferred", id[i]), data, n);
		free(data);
		valid += c->expect == NULL;
	}
	cap_begin();
	q = queue_open(*state);
	char *log = cap_end();
	assert_non_null(q);
	assert_int_equal(queue_size(q), valid);
	for (size_t i = 0; i < ARRAY_LEN(retry_files); i++) {
		bool corrupt = retry_files[i].expect != NULL;
		snprintf(line, sizeof line, "%s: moved to corrupt/: %s\n", id[i],
			 retry_files[i].expect);
		if (corrupt)
			assert_logged(log, line);
		if (exists(path(*state, "deferred", id[i])) == corrupt ||
		    exists(path(*state, "corrupt", id[i])) != corrupt)
			fail_msg("%s: in the wrong directory", retry_files[i].name);
	}
	free(log);
	check_size(q, *state);
	/* A counted file rewritten with a hostile RETRY: queue_load refuses
	 * it, moves it, counts it out. */
	const char *victim = id[ARRAY_LEN(retry_files) - 1]; /* "REASON alone" */
	size_t n;
	char *data = build(&retry_files[0], &n);
	write_file(path(*state, "deferred", victim), data, n);
	free(data);
	struct qmsg *v;
	int fd;
	cap_begin();
	assert_false(queue_load(q, QDIR_DEFERRED, victim, &fd, &v, &n));
	log = cap_end();
	snprintf(line, sizeof line, "%s: moved to corrupt/: bad RETRY record \"1 2\"\n", victim);
	assert_logged(log, line);
	free(log);
	assert_int_equal(fd, -1);
	assert_int_equal(queue_size(q), valid - 1);
	check_size(q, *state);
	queue_close(q);
}

/* WARNED is 0 or 1, nothing else.
 * Regression (lib/util.c, str_parse_ull): with max 1 (parse_retry's
 * WARNED field) the overflow check (max - d) / 10 wrapped for a digit
 * d > max, so "2".."9", "12", "19" and the like passed as numbers. */
static void test_retry_warned_not_boolean(void **state)
{
	static const char *const bad[] = { "1 2 2", "1 2 9", "1 2 12", "1 2 19", "1 2 123" };
	struct buf fails = BUF_INIT;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const char *p = path(*state, "file", NULL);
		struct buf b = BUF_INIT;
		struct qmsg m;
		char err[256], want[64];
		hand_msg(&b, NULL, bad[i]);
		write_file(p, b.data, b.len);
		buf_free(&b);
		snprintf(want, sizeof want, "bad RETRY record \"%s\"", bad[i]);
		if (qmsg_read(p, &m, err, sizeof err)) {
			buf_printf(&fails, " \"%s\" (warned %d)", bad[i], m.warned);
			qmsg_free(&m);
		} else {
			assert_string_equal(err, want);
		}
	}
	if (fails.len > 0) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", buf_cstr(&fails));
		buf_free(&fails);
		fail_msg("RETRY records accepted:%s", msg);
	}
	buf_free(&fails);
}

/* ---- queue_open and deferred/ --------------------------------------------------------- */

/* deferred/ is checked at start-up like incoming/: valid files counted
 * (ids after theirs), the rest moved to corrupt/ with a reason. */
static void test_open_deferred(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[2];
	char real[QID_LEN + 1], ok1[QID_LEN + 1], cut[QID_LEN + 1], same[QID_LEN + 1];
	char ahead[QID_LEN + 1], id[QID_LEN + 1], newname[QID_LEN + 1], line[512];
	struct qmsg *m;
	size_t n, len;
	int fd;
	struct timespec ts;

	assert_non_null(q);
	flush_n(q, d, 2, *state);
	m = load(q, QDIR_INCOMING, d[0].id, &fd, &n);
	struct qdefer v[2] = { { &m[0], NULL, 1, 5, false, "a" }, { &m[1], NULL, 2, 6, true, "b" } };
	assert_true(queue_defer(q, fd, v, 2, QDIR_INCOMING, d[0].id, 2, newname));
	close(fd);
	qmsg_free_all(m, n);
	memcpy(real, newname, sizeof real);
	queue_close(q);

	fake_id(ok1, 0xE1);
	hand_file(*state, "deferred", ok1, 3);
	fake_id(cut, 0xE2);
	char *valid = read_file(path(*state, "deferred", real), &len);
	write_file(path(*state, "deferred", cut), valid, len - 1);
	free(valid);
	write_file(path(*state, "deferred", "junk"), L(""));
	assert_int_equal(symlink(path(*state, "deferred", real),
				 path(*state, "deferred", "00000000000000E3")), 0);
	/* The same bad name in both directories: neither overwrites. */
	fake_id(same, 0xE4);
	write_file(path(*state, "incoming", same), L("V"));
	write_file(path(*state, "deferred", same), L("V"));
	/* An id ahead of the clock (two hours: an earlier test used one). */
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(ahead, sizeof ahead, "%013llX%03X",
		 ((unsigned long long)ts.tv_sec + 7200) * 1000000ull, 9u);
	hand_file(*state, "deferred", ahead, 1);
	/* What a crashed queue_defer leaves in tmp/. */
	write_file(path(*state, "tmp", real), L("V\0\0\0\0011"));

	cap_begin();
	q = queue_open(*state);
	char *log = cap_end();
	assert_non_null(q);
	assert_int_equal(queue_size(q), 2 + 3 + 1);
	snprintf(line, sizeof line, "%s: moved to corrupt/: message 2: no END record (truncated)\n",
		 cut);
	assert_logged(log, line);
	assert_logged(log, "junk: moved to corrupt/: not a queue file name\n");
	assert_logged(log, "00000000000000E3: moved to corrupt/: symbolic link\n");
	snprintf(line, sizeof line, "%s: moved to corrupt/: no END record (truncated)\n", same);
	assert_logged(log, line);
	snprintf(line, sizeof line, "%s: removed incomplete queue file (never acknowledged)\n",
		 real);
	assert_logged(log, line);
	free(log);
	assert_true(exists(path(*state, "corrupt", same)));
	char alt[QID_LEN + 8];
	snprintf(alt, sizeof alt, "%s.1", same);
	assert_true(exists(path(*state, "corrupt", alt)));
	assert_true(exists(path(*state, "corrupt", cut)));
	assert_int_equal(count_entries(*state, "corrupt"), 5);
	assert_int_equal(count_entries(*state, "deferred"), 3);
	assert_int_equal(count_entries(*state, "incoming"), 0);
	assert_int_equal(count_entries(*state, "tmp"), 0);
	check_size(q, *state);
	struct qfile *f = queue_create(q, id);
	assert_non_null(f);
	if (strcmp(id, ahead) <= 0)
		fail_msg("new id %s not after deferred %s", id, ahead);
	queue_abort(f);
	queue_close(q);
}

/* A deferred file of two messages (RETRY, REASON and all) cut at every
 * length: queue_open moves every cut that is not a whole message to
 * corrupt/. */
static void test_open_deferred_cuts(void **state)
{
	struct queue *q = queue_open(*state);
	struct done d[2];
	char newname[QID_LEN + 1];
	struct qmsg *m;
	size_t n;
	int fd;

	assert_non_null(q);
	flush_n(q, d, 2, *state);
	m = load(q, QDIR_INCOMING, d[0].id, &fd, &n);
	struct qdefer v[2] = { { &m[0], NULL, 1, 5, false, "451 busy" },
			       { &m[1], NULL, 2, 6, true, "452 full" } };
	assert_true(queue_defer(q, fd, v, 2, QDIR_INCOMING, d[0].id, 2, newname));
	close(fd);
	qmsg_free_all(m, n);
	queue_close(q);
	check_cuts(*state, "deferred", newname, 2);
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
		cmocka_unit_test_setup_teardown(test_notify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_corrupt_multi_counted_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_multi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_replaces_crash_leftover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_no_rcpt_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_tries_over_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_tries_at_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qdata_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qdata_read_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qdata_read_interleaved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_warned_not_boolean, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_deferred, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_deferred_cuts, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
