/* testutil.h: helpers several unit tests share: removing a test's
 * scratch directory, and capturing what the code under test logs on
 * stderr. Header-only (static inline): each test is its own program. */
#ifndef VHOSTMTA_TESTUTIL_H
#define VHOSTMTA_TESTUTIL_H

#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"

static inline int testutil_rm_one(const char *path, const struct stat *sb, int flag,
				  struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	/* A test may leave a directory without write permission. */
	if (flag == FTW_DP)
		chmod(path, 0700);
	return remove(path);
}

/* rm_tree: dir and everything below it. */
static inline void rm_tree(const char *dir)
{
	nftw(dir, testutil_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int testutil_saved_stderr = -1;
static FILE *testutil_cap_file;

/* cap_begin: stderr goes to a temporary file until cap_end. */
static inline void cap_begin(void)
{
	fflush(stderr);
	testutil_cap_file = tmpfile();
	assert_non_null(testutil_cap_file);
	testutil_saved_stderr = dup(STDERR_FILENO);
	dup2(fileno(testutil_cap_file), STDERR_FILENO);
}

/* cap_end: what was logged since cap_begin (caller frees). */
static inline char *cap_end(void)
{
	struct buf b = BUF_INIT;
	char chunk[4096];
	size_t r;

	fflush(stderr);
	dup2(testutil_saved_stderr, STDERR_FILENO);
	close(testutil_saved_stderr);
	rewind(testutil_cap_file);
	while ((r = fread(chunk, 1, sizeof chunk, testutil_cap_file)) > 0)
		buf_append(&b, chunk, r);
	fclose(testutil_cap_file);
	return buf_steal(&b);
}

static inline void assert_logged(const char *log, const char *line)
{
	if (strstr(log, line) == NULL)
		fail_msg("log line \"%s\" missing from:\n%s", line, log);
}

#endif
