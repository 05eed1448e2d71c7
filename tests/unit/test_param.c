/* test_param.c: the parameter table is consistent (names, bounds, choices,
 * defaults that pass their own type), lookup finds exactly the table's
 * names, param_check_value's contract, and the two generated listings. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cf.h"
#include "param.h"
#include "util.h"

#define ALL_FLAGS (PF_IDENTITY | PF_MANAGER | PF_RESTART | PF_REQUIRED | PF_OWN)

static void record(void *ctx, enum diag_level level, const char *file,
		   unsigned long line, const char *msg)
{
	buf_printf(ctx, "%s:%lu: %s: %s\n", file, line,
		   level == DIAG_ERROR ? "error" : "warning", msg);
}

/* listing: what a FILE-writing function prints, as a string. (A temporary
 * file, not open_memstream: gcc -O3 warns about the latter's pointer.) */
static char *listing(void (*fn)(FILE *))
{
	FILE *f = tmpfile();

	assert_non_null(f);
	fn(f);
	long n = ftell(f);
	assert_true(n > 0);
	rewind(f);
	char *text = xmalloc((size_t)n + 1);
	assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
	text[n] = 0;
	assert_int_equal(fclose(f), 0);
	return text;
}

static bool name_valid(const char *s)
{
	if (*s == 0)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

static void fail_param(const struct param_def *p, const char *why)
{
	print_error("%s: %s\n", p->name, why);
	fail();
}

static void test_table_entries(void **state)
{
	for (size_t i = 0; i < P__COUNT; i++) {
		const struct param_def *p = &param_table[i];
		if (!name_valid(p->name))
			fail_param(p, "bad name");
		for (size_t j = 0; j < i; j++)
			if (strcmp(p->name, param_table[j].name) == 0)
				fail_param(p, "declared twice");
		if (p->def == NULL || p->doc == NULL || strlen(p->doc) < 10)
			fail_param(p, "no default or no doc");
		if (p->doc[strlen(p->doc) - 1] != '.')
			fail_param(p, "doc is not a sentence");
		if (p->flags & ~(unsigned)ALL_FLAGS)
			fail_param(p, "unknown flag");
		if (strcmp(param_type_name(p->type), "unknown") == 0)
			fail_param(p, "unknown type");
		bool bounded = p->type == PT_INT || p->type == PT_TIME;
		if (bounded && p->min > p->max)
			fail_param(p, "min > max");
		/* param.c saturates at +-LLONG_MAX: that must be out of bounds. */
		if (bounded && (p->max == LLONG_MAX || p->min <= -LLONG_MAX))
			fail_param(p, "bounds too wide");
		if (!bounded && (p->min != 0 || p->max != 0))
			fail_param(p, "bounds on a type without bounds");
		if ((p->type == PT_ENUM) != (p->choices != NULL))
			fail_param(p, "choices only and always for PT_ENUM");
		/* A time default names its unit: it is the unit of a bare number. */
		if (p->type == PT_TIME && !strchr("smhdw", p->def[strlen(p->def) - 1]))
			fail_param(p, "time default without a unit");
		if ((p->flags & PF_REQUIRED) && *p->def)
			fail_param(p, "required with a default");
	}
}

/* Every default passes its own type once expanded, in the smallest cf the
 * manager writes: the identity the map gives. */
static void test_defaults_pass(void **state)
{
	struct cf cf;
	struct buf log = BUF_INIT;
	struct diag d = { record, &log, 0, 0 };
	char err[256];
	long long num;

	cf_init(&cf);
	cf_set_id(&cf, P_myhostname, "mail.example.com", "map.xml", 1);
	cf_set_id(&cf, P_instance_name, "x", "map.xml", 1);
	bool ok = cf_finalize(&cf, "defaults", &d);
	if (!ok || d.errors || d.warnings) {
		print_error("%s", buf_cstr(&log));
		fail();
	}
	for (size_t i = 0; i < P__COUNT; i++) {
		const struct param_def *p = &param_table[i];
		if (!param_check_value((enum param_id)i, cf_str(&cf, (enum param_id)i), &num,
				       err, sizeof err))
			fail_param(p, err);
		if (p->type == PT_ENUM && !param_check_value((enum param_id)i, p->def, NULL,
							     err, sizeof err))
			fail_param(p, "default is not among the choices");
	}
	cf_free(&cf);
	buf_free(&log);
}

static void test_lookup(void **state)
{
	char key[128];

	for (size_t i = 0; i < P__COUNT; i++) {
		const char *name = param_table[i].name;
		size_t n = strlen(name);
		/* Found with a counted key that is not NUL-terminated. */
		snprintf(key, sizeof key, "%sXYZ", name);
		assert_int_equal(param_lookup(key, n), (int)i);
		/* Near misses. */
		assert_int_equal(param_lookup(key, n + 1), -1);
		int pre = param_lookup(name, n - 1); /* smtp_bind_address6 -> ...address */
		assert_true(pre == -1 || (strlen(param_table[pre].name) == n - 1 &&
					  memcmp(param_table[pre].name, name, n - 1) == 0));
		snprintf(key, sizeof key, "%s", name);
		key[0] = key[0] >= 'a' && key[0] <= 'z' ? (char)(key[0] - 32) : (char)(key[0] + 32);
		assert_int_equal(param_lookup(key, n), -1);
		snprintf(key, sizeof key, "%s", name);
		key[n - 1] = key[n - 1] == 'x' ? 'y' : 'x';
		assert_int_equal(param_lookup(key, n), -1);
		memcpy(key, name, n + 1);
		assert_int_equal(param_lookup(key, n + 1), -1); /* the NUL counted */
	}
	assert_int_equal(param_lookup("", 0), -1);
	assert_int_equal(param_lookup("zzzz", 4), -1);
	assert_int_equal(param_lookup("\0mail_name", 10), -1);
	assert_int_equal(param_lookup("mail_name", 9), P_mail_name);
}

static void test_type_names(void **state)
{
	for (int t = PT_STR; t <= PT_PATH; t++)
		assert_string_not_equal(param_type_name((enum param_type)t), "unknown");
	assert_string_equal(param_type_name(PT_TIME), "time");
	assert_string_equal(param_type_name((enum param_type)99), "unknown");
}

/* The contract of param.h: num only on success and only when asked for,
 * err always a terminated phrase, however small. */
static void test_check_value(void **state)
{
	char err[16];
	long long num = -7;

	assert_true(param_check_value(P_smtpd_listen_port, "2525", NULL, NULL, 0));
	assert_true(param_check_value(P_smtpd_listen_port, "2525", &num, NULL, 0));
	assert_int_equal(num, 2525);
	assert_false(param_check_value(P_smtpd_listen_port, "0", &num, err, sizeof err));
	assert_int_equal(num, 2525);
	assert_string_equal(err, "value 0 is belo");
	assert_false(param_check_value(P_smtpd_listen_port, "x", NULL, NULL, 0));
	assert_true(param_check_value(P_mail_name, "anything at all", &num, err, sizeof err));
	assert_int_equal(num, 0);
	assert_true(param_check_value(P_smtp_tls_security_level, "VERIFY", &num, NULL, 0));
	assert_int_equal(num, 3);
	assert_true(param_check_value(P_maximal_queue_lifetime, "1", &num, NULL, 0));
	assert_int_equal(num, 86400);
	assert_true(param_check_value(P_smtpd_timeout, "1", &num, NULL, 0));
	assert_int_equal(num, 1);
	assert_false(param_check_value((enum param_id)P__COUNT, "1", &num, err, sizeof err));
}

static void test_dump_defaults(void **state)
{
	char *text = listing(param_dump_defaults);
	char prev[128] = "", name[128];
	size_t lines = 0;

	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		size_t n = strcspn(line, " ");
		snprintf(name, sizeof name, "%.*s", (int)n, line);
		int id = param_lookup(name, n);
		assert_true(id >= 0);
		const char *def = param_table[id].def;
		char want[512];
		snprintf(want, sizeof want, "%s =%s%s", name, *def ? " " : "", def);
		assert_string_equal(line, want);
		assert_true(strcmp(prev, name) < 0);
		memcpy(prev, name, sizeof prev);
		lines++;
	}
	assert_int_equal(lines, P__COUNT);
	free(text);
}

static void test_write_doc(void **state)
{
	char *text = listing(param_write_doc);
	char heading[160];
	const char *prev = text;

	assert_true(str_has_prefix(text, "# vhostmta instance parameters\n"));
	for (size_t i = 0; i < P__COUNT; i++) {
		snprintf(heading, sizeof heading, "\n## %s\n", param_table[i].name);
		const char *h = strstr(text, heading);
		if (h == NULL || strstr(h + 1, heading) != NULL)
			fail_param(&param_table[i], "not exactly one heading");
		assert_non_null(strstr(h, param_table[i].doc));
	}
	/* Sorted: the headings come in name order. */
	size_t n = 0;
	char last[128] = "";
	for (const char *h = strstr(prev, "\n## "); h; h = strstr(h + 1, "\n## ")) {
		char cur[128];
		snprintf(cur, sizeof cur, "%.*s", (int)strcspn(h + 4, "\n"), h + 4);
		assert_true(strcmp(last, cur) < 0);
		memcpy(last, cur, sizeof last);
		n++;
	}
	assert_int_equal(n, P__COUNT);
	/* What each kind of line says. */
	assert_non_null(strstr(text, "\n## maximal_queue_lifetime\n\nType: time from 0s to"
				     " 365d; a number without a unit is in days."
				     " Default: `5d`.\n"));
	assert_non_null(strstr(text, "\n## inet_interfaces\n\nType: interface list. Default: `all`."
				     " Set by the map. A change restarts the instance's"
				     " listeners.\n"));
	assert_non_null(strstr(text, "\n## myhostname\n\nType: fully qualified host name."
				     " Default: (empty). Required. Set by the map.\n"));
	assert_non_null(strstr(text, "Type: one of `all`, `ipv4` or `ipv6`. Default: `all`."));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_entries),
		cmocka_unit_test(test_defaults_pass),
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_type_names),
		cmocka_unit_test(test_check_value),
		cmocka_unit_test(test_dump_defaults),
		cmocka_unit_test(test_write_doc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
