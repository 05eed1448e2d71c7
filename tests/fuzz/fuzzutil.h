/* fuzzutil.h: what the libFuzzer harnesses share: quiet logs, a scratch
 * directory, input splitting and a check macro that aborts with a message
 * (so libFuzzer records the input that broke an invariant). */
#ifndef VHOSTMTA_FUZZUTIL_H
#define VHOSTMTA_FUZZUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The libFuzzer entry points each harness defines. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_CHECK: an invariant of the code under test; on failure the
 * message goes to file descriptor 2 and the harness aborts. */
#define FUZZ_CHECK(cond, ...) \
	do { \
		if (!(cond)) \
			fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
	} while (0)

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
	__attribute__((format(printf, 4, 5), noreturn));

/* fuzz_quiet: the project's log lines (stdio stderr) go to /dev/null;
 * libFuzzer's own output and the sanitizers' reports keep file
 * descriptor 2. */
void fuzz_quiet(void);

/* fuzz_tmpdir: a fresh directory under $TMPDIR (or /tmp) named after
 * the harness, removed with its contents at exit. */
const char *fuzz_tmpdir(const char *name);
/* fuzz_rmtree: remove path and everything below it. */
void fuzz_rmtree(const char *path);
/* fuzz_clear_dir: remove the files directly inside dir. */
void fuzz_clear_dir(const char *dir);
/* fuzz_write_file: path holds exactly data[0..n). */
void fuzz_write_file(const char *path, const uint8_t *data, size_t n);

/* Read splits chosen by the input: a count byte (its low 3 bits: 0-7
 * split lengths follow), then the lengths; each read takes the next
 * length in turn (0 means all the rest). With no lengths, one read. */
struct fuzz_splits {
	uint8_t len[7];
	size_t n, next;
};
/* fuzz_splits_take: the splits from the front of *data (advanced);
 * *extra gets the count byte's high 5 bits for the harness's own use. */
void fuzz_splits_take(struct fuzz_splits *sp, const uint8_t **data, size_t *size,
		      unsigned *extra);
/* fuzz_splits_next: the length of the next read, at most left. */
size_t fuzz_splits_next(struct fuzz_splits *sp, size_t left);

/* fuzz_printable: p[0..n) is printable ASCII. */
bool fuzz_printable(const char *p, size_t n);

#endif
