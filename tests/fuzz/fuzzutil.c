/* fuzzutil.c: helpers shared by the libFuzzer harnesses (fuzzutil.h). */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzzutil.h"

static char tmproot[512];

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	dprintf(2, "%s:%d: invariant broken: %s: ", file, line, cond);
	va_start(ap, fmt);
	vdprintf(2, fmt, ap);
	va_end(ap);
	dprintf(2, "\n");
	abort();
}

void fuzz_quiet(void)
{
	/* Only the stdio stream is replaced: libFuzzer captured stderr
	 * before this runs, and the sanitizers write to the descriptor. */
	FILE *null = fopen("/dev/null", "w");
	if (null != NULL)
		stderr = null;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

void fuzz_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void rm_tmproot(void)
{
	if (tmproot[0])
		fuzz_rmtree(tmproot);
}

const char *fuzz_tmpdir(const char *name)
{
	const char *base = getenv("TMPDIR");

	if (base == NULL || base[0] == 0)
		base = "/tmp";
	snprintf(tmproot, sizeof tmproot, "%s/vhostmta-fuzz-%s-XXXXXX", base, name);
	if (mkdtemp(tmproot) == NULL) {
		dprintf(2, "fuzz: mkdtemp %s failed\n", tmproot);
		abort();
	}
	atexit(rm_tmproot);
	return tmproot;
}

void fuzz_clear_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[1024];

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		unlink(path);
	}
	closedir(d);
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0) {
		dprintf(2, "fuzz: cannot create %s\n", path);
		abort();
	}
	while (n > 0) {
		ssize_t w = write(fd, data, n);
		if (w <= 0) {
			dprintf(2, "fuzz: cannot write %s\n", path);
			abort();
		}
		data += w;
		n -= (size_t)w;
	}
	close(fd);
}

void fuzz_splits_take(struct fuzz_splits *sp, const uint8_t **data, size_t *size,
		      unsigned *extra)
{
	memset(sp, 0, sizeof *sp);
	*extra = 0;
	if (*size == 0)
		return;
	size_t k = (*data)[0] & 7;
	*extra = (*data)[0] >> 3;
	(*data)++;
	(*size)--;
	if (k > *size)
		k = *size;
	memcpy(sp->len, *data, k);
	sp->n = k;
	*data += k;
	*size -= k;
}

size_t fuzz_splits_next(struct fuzz_splits *sp, size_t left)
{
	if (sp->n == 0)
		return left;
	size_t len = sp->len[sp->next++ % sp->n];
	return len == 0 || len > left ? left : len;
}

bool fuzz_printable(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
			return false;
	return true;
}
