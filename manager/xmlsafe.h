/* xmlsafe.h: libxml2 used safely on hostile input: size-limited read, no
 * DTD at all (so no entities, no external subsets), no network, bounded
 * element depth, parser errors reported as diagnostics with line numbers;
 * and RELAX NG validation against an in-memory schema. */
#ifndef VHOSTMTA_XMLSAFE_H
#define VHOSTMTA_XMLSAFE_H

#include <libxml/tree.h>
#include <stddef.h>

#include "diag.h"

/* xmlsafe_read: parse path; NULL (after reporting why) on any error. */
xmlDocPtr xmlsafe_read(const char *path, size_t max_size, unsigned max_depth,
		       struct diag *d);
/* xmlsafe_validate: RELAX NG check of doc against schema[0..len);
 * every violation reported at its line. Returns the number of errors. */
unsigned xmlsafe_validate(xmlDocPtr doc, const char *path, const char *schema,
			  size_t len, struct diag *d);

#endif
