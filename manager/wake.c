/* wake.c: `vhostmta wake` (wake.h). Reads each rendered instance.cf for
 * its queue_directory, counts the entries of the queue's incoming/ and
 * deferred/, and has systemd start the service of every instance with
 * mail waiting, through apply's sd-bus code (apply_start_units). It only
 * reads: the queue is the instance's, which it locks while it runs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apply.h"
#include "cf.h"
#include "map.h"
#include "util.h"
#include "wake.h"

#define UNIT_LEN (MAP_NAME_MAX + 64)

/* name_ok: a name render could have written, and a valid systemd
 * instance string (the unit name is built from it). */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > MAP_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

static int is_instance_dir(const struct dirent *e)
{
	return (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) && name_ok(e->d_name);
}

/* count_dir: the entries of queue/sub, other than . and ..; a missing
 * directory is an empty one (a queue not created yet). -1 after an error. */
static long count_dir(int qfd, const char *queue, const char *sub)
{
	int fd = openat(qfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *e;
	long n = 0;

	if (d == NULL) {
		if (fd >= 0)
			close(fd);
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "vhostmta wake: %s/%s: %s\n", queue, sub, strerror(errno));
		return -1;
	}
	errno = 0;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	if (errno != 0) {
		fprintf(stderr, "vhostmta wake: %s/%s: %s\n", queue, sub, strerror(errno));
		n = -1;
	}
	closedir(d);
	return n;
}

/* queue_files: the instance's waiting queue files, -1 after an error
 * (reported). The queue directory itself may be a link: with a dynamic
 * user, systemd keeps it under /var/lib/private. */
static long queue_files(const char *instances, const char *name)
{
	char path[4200];
	struct cf cf;
	struct diag d = DIAG_INIT;
	long n = -1;

	snprintf(path, sizeof path, "%s/%s/instance.cf", instances, name);
	cf_init(&cf);
	bool ok = cf_parse_file(&cf, path, &d);
	if (!(cf_finalize(&cf, path, &d) && ok && d.errors == 0)) {
		fprintf(stderr, "vhostmta wake: %s: unusable, instance %s skipped\n", path, name);
		cf_free(&cf);
		return -1;
	}
	const char *queue = cf_str(&cf, P_queue_directory);
	int qfd = open(queue, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (qfd >= 0) {
		long inc = count_dir(qfd, queue, "incoming");
		long def = inc < 0 ? -1 : count_dir(qfd, queue, "deferred");
		n = def < 0 ? -1 : inc + def;
		close(qfd);
	} else if (errno == ENOENT) {
		n = 0; /* never started: nothing queued */
	} else {
		fprintf(stderr, "vhostmta wake: %s: %s\n", queue, strerror(errno));
	}
	cf_free(&cf);
	return n;
}

int wake_run(const char *instances)
{
	struct dirent **names = NULL;
	char **units = NULL, **whys = NULL;
	size_t n = 0;
	int rc = 0;

	int count = scandir(instances, &names, is_instance_dir, alphasort);
	if (count < 0) {
		/* Nothing applied yet: nothing to wake. */
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "vhostmta wake: %s: %s\n", instances, strerror(errno));
		return 1;
	}
	for (int i = 0; i < count; i++) {
		const char *name = names[i]->d_name;
		char cfpath[4200];
		struct stat st;
		/* A directory without instance.cf is not an instance. */
		snprintf(cfpath, sizeof cfpath, "%s/%s/instance.cf", instances, name);
		if (lstat(cfpath, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		long files = queue_files(instances, name);
		if (files < 0)
			rc = 1;
		if (files <= 0)
			continue;
		units = xreallocarray(units, n + 1, sizeof *units);
		whys = xreallocarray(whys, n + 1, sizeof *whys);
		/* name_ok bounded the name to MAP_NAME_MAX. */
		units[n] = xmalloc(UNIT_LEN);
		whys[n] = xmalloc(UNIT_LEN);
		snprintf(units[n], UNIT_LEN, "vhostmta@%.*s.service", MAP_NAME_MAX, name);
		snprintf(whys[n], UNIT_LEN, "%.*s: %ld queue file%s", MAP_NAME_MAX, name, files,
			 files == 1 ? "" : "s");
		n++;
	}
	if (apply_start_units("wake", (const char *const *)units, (const char *const *)whys, n) != 0)
		rc = 1;
	for (size_t i = 0; i < n; i++) {
		free(units[i]);
		free(whys[i]);
	}
	free(units);
	free(whys);
	for (int i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return rc;
}
