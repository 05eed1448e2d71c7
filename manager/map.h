/* map.h: the XML map of instances, domains and addresses, loaded and
 * checked against every rule of the map format (docs/map.md). */
#ifndef VHOSTMTA_MAP_H
#define VHOSTMTA_MAP_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "diag.h"
#include "param.h"

/* Limits on hostile maps. */
#define MAP_MAX_SIZE (32u << 20) /* bytes */
#define MAP_MAX_DEPTH 8          /* element nesting */
#define MAP_NAME_MAX 64
/* Reserved name: the host address table beside the instance directories. */
#define MAP_HOST_TABLE "host-addresses"

/* What runs the instances: vhostmta-instance, or real Postfix instances. */
enum backend { BACKEND_VHOSTMTA, BACKEND_POSTFIX };

/* backend_parse: "vhostmta" or "postfix"; false for anything else. */
bool backend_parse(const char *s, enum backend *out);
const char *backend_name(enum backend b);

struct map_param {
	enum param_id id;
	char *value;
	unsigned long line;
};

struct map_domain {
	char *name;    /* lower case */
	char *deliver; /* canonical next hop (nexthop_format), NULL: outbound only */
	unsigned long line;
};

struct map_instance {
	char *name;
	char *myhostname;
	char *host; /* NULL: realized on every host */
	unsigned long line;
	size_t naddrs;
	struct ipaddr addrs[2];
	char addr_text[2][IPADDR_STRLEN];
	unsigned long addr_line[2];
	struct map_domain *domains;
	size_t ndomains;
	struct map_param *params; /* its own <param>s, after the defaults */
	size_t nparams;
};

struct map {
	char *path;
	enum backend backend; /* <defaults backend=...>, default vhostmta */
	struct map_param *defaults;
	size_t ndefaults;
	struct map_instance *inst;
	size_t n;
	size_t ndomains; /* over all instances */
};

/* map_load: read, parse and check path; every problem goes to d as
 * "PATH:LINE: error: ...". Returns true when the map has no error; m is
 * filled either way (map_free it). */
bool map_load(struct map *m, const char *path, struct diag *d);
void map_free(struct map *m);

/* map_on_host: the instance is realized on host (NULL: every instance). */
bool map_on_host(const struct map_instance *in, const char *host);

/* map_inet_interfaces: the instance's addresses as an inet_interfaces value. */
void map_inet_interfaces(const struct map_instance *in, struct buf *out);

#endif
