/* JOSE and X.509 helpers for the ACME client (control/acme.c): RFC 8555
 * requests signed as JWS (RFC 7515) with ES256, JWK thumbprints (RFC 7638),
 * key authorizations, CSRs, the tls-alpn-01 challenge certificate (RFC
 * 8737), the ARI certificate identifier (RFC 9773) and PEM chains. Pure
 * functions over OpenSSL: no I/O, no global state, any thread.
 *
 * Every returned string is malloc'd (the caller frees it); NULL means
 * failure (out of memory, or input OpenSSL refused). */
#ifndef DETOURD_ACME_JOSE_H
#define DETOURD_ACME_JOSE_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum acme_key_type { ACME_KEY_EC256, ACME_KEY_RSA2048 };

/* base64url without padding (RFC 7515 section 2) */
char *b64url(const void *p, size_t n);
/* Decodes base64url (padding and whitespace refused); *out malloc'd. */
bool b64url_decode(const char *s, size_t len, unsigned char **out, size_t *outlen);

/* A new private key of type t. */
EVP_PKEY *acme_key_new(enum acme_key_type t);
/* The key as unencrypted PKCS#8 PEM, and back (NULL if not a key). */
char *acme_key_pem(EVP_PKEY *k);
EVP_PKEY *acme_key_from_pem(const char *pem, size_t len);

/* The public key as a JWK with only the required members, in
 * lexicographic order and without whitespace (the RFC 7638 input):
 * {"crv":"P-256","kty":"EC","x":"...","y":"..."} or {"e":"...","kty":"RSA","n":"..."}. */
char *acme_jwk(EVP_PKEY *k);
/* base64url(SHA-256(acme_jwk(k))) */
char *acme_thumbprint(EVP_PKEY *k);
/* The key authorization: token "." thumbprint */
char *acme_keyauth(const char *token, const char *thumbprint);
/* base64url(SHA-256(keyauth)): the dns-01 value (unused) and the digest
 * tls-alpn-01 puts in its certificate (raw bytes: out[32]). */
void acme_keyauth_digest(const char *keyauth, unsigned char out[32]);

/* A flattened JWS JSON serialization (RFC 7515 7.2.2) of payload signed
 * with the account key acct (ES256 for an EC P-256 key: r||s, 64 bytes;
 * RS256 for RSA): protected header {"alg","kid" or "jwk","nonce","url"}.
 * kid NULL puts the account's "jwk" instead (newAccount, revokeCert by
 * key). payload NULL or "" makes a POST-as-GET (empty payload). */
char *acme_jws(EVP_PKEY *acct, const char *kid, const char *nonce, const char *url,
               const char *payload);
/* The externalAccountBinding value for newAccount (RFC 8555 7.3.4): a JWS
 * object, HS256 with the HMAC key, protected {"alg":"HS256","kid","url"},
 * payload the account's JWK. */
char *acme_eab(const char *kid, const unsigned char *hmac, size_t hlen, EVP_PKEY *acct,
               const char *url);

/* A CSR for names (subject CN names[0], every name in subjectAltName as
 * dNSName), signed by key, as base64url DER (the finalize "csr" value).
 * A names[0] longer than the 64 characters a CN holds leaves the subject
 * empty: CAs take the names from subjectAltName. */
char *acme_csr(EVP_PKEY *key, const char *const *names, size_t n);

/* The tls-alpn-01 challenge certificate for name (RFC 8737 3): a fresh
 * P-256 key, self-signed, valid from now - 1 h for 7 days, one dNSName
 * (name) and the critical id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31)
 * extension holding the DER OCTET STRING of SHA-256(keyauth). */
bool acme_alpn_cert(const char *name, const char *keyauth, X509 **cert, EVP_PKEY **key);

/* The ARI certificate identifier (RFC 9773 4.1): base64url of the
 * Authority Key Identifier's keyIdentifier "." base64url of the serial
 * number's DER content bytes; NULL without an AKI keyIdentifier. */
char *acme_ari_id(X509 *leaf);

/* Parses a PEM certificate chain (application/pem-certificate-chain): the
 * first certificate is the leaf, the others its chain (possibly none).
 * False if there is no certificate or a block is not one. */
bool acme_chain_parse(const char *pem, size_t len, X509 **leaf, STACK_OF(X509) * *chain);
/* The certificate's validity as time_t (UTC); 0 if it cannot be read. */
time_t acme_not_after(X509 *c);
time_t acme_not_before(X509 *c);
/* True when a dNSName of c matches name exactly (case-insensitive) or as
 * a wildcard over its first label. */
bool acme_cert_covers(X509 *c, const char *name);
/* True when key is c's private key. */
bool acme_cert_key_match(X509 *c, EVP_PKEY *key);

#endif
