/* The one JSON string escaper, for every JSON detourd writes (/status, JSON
 * logs, the JSON access log). Its output is always valid UTF-8 JSON, whatever
 * the input bytes: well-formed UTF-8 passes through as is, each ill-formed
 * part (a stray continuation byte, an overlong form, a surrogate, a code
 * point above U+10FFFF, a truncated sequence) becomes one \ufffd, the way
 * browsers decode it; quotes, backslashes and control characters are
 * escaped. */
#ifndef DETOURD_JSON_H
#define DETOURD_JSON_H

#include <stddef.h>

/* The most bytes json_escape() writes for n input bytes. */
#define JSON_ESCAPE_MAX(n) (6 * (size_t)(n))

/* Escapes s[0..n) into out (JSON_ESCAPE_MAX(n) bytes), without the quotes;
 * returns the bytes written. No allocation, no locale. */
size_t json_escape(char *out, const char *s, size_t n);

/* The length (1-4) of the well-formed UTF-8 sequence s[0..n) starts with,
 * or 0 when it starts an ill-formed one: then *bad is the length of its
 * maximal subpart (Unicode 3.9, D93b), the bytes one U+FFFD replaces. n > 0. */
size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad);

struct evbuffer;
/* Appends s as a quoted JSON string, or null for NULL. */
void json_str(struct evbuffer *out, const char *s);

#endif
