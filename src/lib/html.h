/* The one HTML escaper, for text and double- or single-quoted attribute
 * values: & < > " ' become references, and what is not well-formed UTF-8
 * (see utf8_seq) or is a control character other than tab and newline
 * becomes U+FFFD, so the output is always valid UTF-8 HTML. */
#ifndef DETOURD_HTML_H
#define DETOURD_HTML_H

#include <stddef.h>

/* The most bytes html_escape() writes for n input bytes ("&quot;"). */
#define HTML_ESCAPE_MAX(n) (6 * (size_t)(n))

/* Escapes s[0..n) into out (HTML_ESCAPE_MAX(n) bytes); returns the bytes
 * written. */
size_t html_escape(char *out, const char *s, size_t n);

struct evbuffer;
/* Appends s escaped (nothing for NULL). */
void html_str(struct evbuffer *out, const char *s);

#endif
