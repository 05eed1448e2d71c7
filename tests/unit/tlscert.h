/* tlscert.h: test certificates made with the OpenSSL API, so no openssl
 * binary is needed: a CA, and server certificates for a DNS name signed
 * by a CA or by themselves, written as PEM files into a scratch
 * directory. P-256 keys: quick to make. Header-only (static): each test
 * is its own program. */
#ifndef VHOSTMTA_TLSCERT_H
#define VHOSTMTA_TLSCERT_H

#include <stdbool.h>
#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct tlscert {
	EVP_PKEY *key;
	X509 *cert;
};

static inline void tlscert_free(struct tlscert *c)
{
	EVP_PKEY_free(c->key);
	X509_free(c->cert);
	c->key = NULL;
	c->cert = NULL;
}

/* tlscert_ext: one extension in openssl.cnf syntax, e.g. "critical,CA:TRUE". */
static inline bool tlscert_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (e == NULL)
		return false;
	bool ok = X509_add_ext(cert, e, -1) == 1;
	X509_EXTENSION_free(e);
	return ok;
}

/* tlscert_new: a fresh key and a certificate for cn, valid from an hour
 * ago for a day; signed by issuer, or by itself when issuer is NULL.
 * dns: the subjectAltName (NULL for a CA). */
static inline bool tlscert_new(struct tlscert *out, const char *cn, const char *dns, bool ca,
			       const struct tlscert *issuer)
{
	static long serial = 1;
	char san[300];

	out->key = EVP_EC_gen("P-256");
	out->cert = X509_new();
	if (out->key == NULL || out->cert == NULL)
		goto fail;
	X509 *x = out->cert;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME *name = X509_get_subject_name(x);
	if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
				       0) != 1 ||
	    X509_set_pubkey(x, out->key) != 1 ||
	    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->cert) : name) != 1)
		goto fail;
	X509 *icert = issuer ? issuer->cert : x;
	if (!tlscert_ext(x, icert, NID_subject_key_identifier, "hash"))
		goto fail;
	if (ca) {
		if (!tlscert_ext(x, icert, NID_basic_constraints, "critical,CA:TRUE") ||
		    !tlscert_ext(x, icert, NID_key_usage, "critical,keyCertSign,cRLSign"))
			goto fail;
	} else {
		snprintf(san, sizeof san, "DNS:%s", dns);
		if (!tlscert_ext(x, icert, NID_basic_constraints, "critical,CA:FALSE") ||
		    !tlscert_ext(x, icert, NID_key_usage, "critical,digitalSignature") ||
		    !tlscert_ext(x, icert, NID_ext_key_usage, "serverAuth") ||
		    !tlscert_ext(x, icert, NID_subject_alt_name, san))
			goto fail;
	}
	if (issuer && !tlscert_ext(x, icert, NID_authority_key_identifier, "keyid:always"))
		goto fail;
	if (X509_sign(x, issuer ? issuer->key : out->key, EVP_sha256()) == 0)
		goto fail;
	return true;
fail:
	tlscert_free(out);
	return false;
}

/* tlscert_ca: a CA certificate named cn. */
static inline bool tlscert_ca(struct tlscert *out, const char *cn)
{
	return tlscert_new(out, cn, NULL, true, NULL);
}

/* tlscert_leaf: a server certificate for the DNS name dns, signed by ca,
 * or self-signed when ca is NULL. */
static inline bool tlscert_leaf(struct tlscert *out, const char *dns, const struct tlscert *ca)
{
	return tlscert_new(out, dns, dns, false, ca);
}

/* tlscert_write: the certificate to DIR/NAME.crt and, with key, the
 * key to DIR/NAME.key. */
static inline bool tlscert_write(const struct tlscert *c, const char *dir, const char *name,
				 bool key)
{
	char path[512];
	FILE *fp;
	bool ok;

	snprintf(path, sizeof path, "%s/%s.crt", dir, name);
	if ((fp = fopen(path, "w")) == NULL)
		return false;
	ok = PEM_write_X509(fp, c->cert) == 1;
	ok = fclose(fp) == 0 && ok;
	if (!ok || !key)
		return ok;
	snprintf(path, sizeof path, "%s/%s.key", dir, name);
	if ((fp = fopen(path, "w")) == NULL)
		return false;
	ok = PEM_write_PrivateKey(fp, c->key, NULL, NULL, 0, NULL, NULL) == 1;
	return fclose(fp) == 0 && ok;
}

#endif
