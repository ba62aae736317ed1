#include "autoconf.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "lib/html.h"
#include "lib/json.h"
#include "lib/lit.h"
#include "unit.h"

#define R "\\ufffd" /* one replacement character, as escaped */

/* escapes n bytes of in and compares with want */
static void check(const char *in, size_t n, const char *want)
{
    char *out = malloc(JSON_ESCAPE_MAX(n) + 1);
    ck_assert_ptr_nonnull(out);
    size_t len = json_escape(out, in, n);
    ck_assert_uint_le(len, JSON_ESCAPE_MAX(n));
    out[len] = '\0';
    ck_assert_str_eq(out, want);
    ck_assert_uint_eq(len, strlen(want));
    free(out);
}

#define CHECK(lit, want) check(LIT(lit), want)

START_TEST(ascii_and_escapes)
{
    CHECK("", "");
    CHECK("plain text /a?b=c", "plain text /a?b=c");
    CHECK("say \"hi\" \\ o/", "say \\\"hi\\\" \\\\ o/");
    CHECK("a\nb\rc\td\be\ff", "a\\nb\\rc\\td\\be\\ff");
    CHECK("\x01\x1f\x7f", "\\u0001\\u001f\\u007f");
    check("a\0b", 3, "a\\u0000b");
}
END_TEST

START_TEST(valid_utf8_passes)
{
    CHECK("caf\xc3\xa9", "caf\xc3\xa9");             /* U+00E9 */
    CHECK("\xc2\x80", "\xc2\x80");                   /* U+0080, smallest 2-byte */
    CHECK("\xdf\xbf", "\xdf\xbf");                   /* U+07FF */
    CHECK("\xe0\xa0\x80", "\xe0\xa0\x80");           /* U+0800, smallest 3-byte */
    CHECK("\xe2\x82\xac", "\xe2\x82\xac");           /* U+20AC */
    CHECK("\xed\x9f\xbf", "\xed\x9f\xbf");           /* U+D7FF, below the surrogates */
    CHECK("\xee\x80\x80", "\xee\x80\x80");           /* U+E000, above them */
    CHECK("\xef\xbf\xbd", "\xef\xbf\xbd");           /* U+FFFD itself */
    CHECK("\xf0\x90\x80\x80", "\xf0\x90\x80\x80");   /* U+10000 */
    CHECK("\xf0\x9f\x98\x80!", "\xf0\x9f\x98\x80!"); /* U+1F600 */
    CHECK("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf");   /* U+10FFFF, the last */
}
END_TEST

START_TEST(invalid_bytes)
{
    CHECK("a\x80z", "a" R "z");  /* stray continuation */
    CHECK("\x80\xbf", R R);      /* each stray byte is one */
    CHECK("\xfe\xff", R R);      /* never in UTF-8 */
    CHECK("\xf5\x80", R R);      /* lead beyond U+10FFFF */
    CHECK("/caf\xe9", "/caf" R); /* Latin-1 */
    CHECK("\xe9t\xe9", R "t" R);
}
END_TEST

START_TEST(overlong)
{
    CHECK("\xc0\xaf", R R); /* '/' in two bytes */
    CHECK("\xc1\xbf", R R);
    CHECK("\xe0\x80\xaf", R R R);       /* '/' in three */
    CHECK("\xe0\x9f\xbf", R R R);       /* U+07FF in three */
    CHECK("\xf0\x80\x80\xaf", R R R R); /* '/' in four */
    CHECK("\xf0\x8f\xbf\xbf", R R R R); /* U+FFFF in four */
    CHECK("\xc0\x80", R R);             /* "modified UTF-8" NUL */
}
END_TEST

START_TEST(surrogates_and_beyond)
{
    CHECK("\xed\xa0\x80", R R R);                   /* U+D800 */
    CHECK("\xed\xbf\xbf", R R R);                   /* U+DFFF */
    CHECK("\xed\xa0\xbd\xed\xb8\x80", R R R R R R); /* CESU-8 pair */
    CHECK("\xf4\x90\x80\x80", R R R R);             /* U+110000 */
}
END_TEST

START_TEST(truncated)
{
    CHECK("\xc3", R);
    CHECK("a\xc3", "a" R);
    CHECK("\xe2\x82", R); /* a maximal subpart is one */
    CHECK("\xe2\x82x", R "x");
    CHECK("\xf0\x9f\x98", R);
    CHECK("\xf0\x9f\x98z\"", R "z\\\"");
    CHECK("\xe2\x82\xe2\x82\xac", R "\xe2\x82\xac"); /* the next lead starts afresh */
    CHECK("\xf0\x9f\xc3\xa9", R "\xc3\xa9");
    /* a string cut inside a sequence (a length limit) ends in one U+FFFD */
    check("\xe2\x82\xac", 2, R);
}
END_TEST

START_TEST(worst_case_bound)
{
    /* every byte escapes to six: the bound is tight */
    char in[64], out[JSON_ESCAPE_MAX(sizeof(in))];
    memset(in, 0x80, sizeof(in));
    ck_assert_uint_eq(json_escape(out, in, sizeof(in)), sizeof(out));
    memset(in, 0x01, sizeof(in));
    ck_assert_uint_eq(json_escape(out, in, sizeof(in)), sizeof(out));
}
END_TEST

START_TEST(seq_lengths)
{
    size_t bad;
    ck_assert_uint_eq(utf8_seq((const unsigned char *)"a", 1, &bad), 1);
    ck_assert_uint_eq(utf8_seq((const unsigned char *)"\xc3\xa9", 2, &bad), 2);
    ck_assert_uint_eq(utf8_seq((const unsigned char *)"\xe2\x82\xac", 3, &bad), 3);
    ck_assert_uint_eq(utf8_seq((const unsigned char *)"\xf0\x9f\x98\x80", 4, &bad), 4);
    ck_assert_uint_eq(utf8_seq((const unsigned char *)"\xf0\x9f\x98", 3, &bad), 0);
    ck_assert_uint_eq(bad, 3);
    ck_assert_uint_eq(utf8_seq((const unsigned char *)"\xed\xa0\x80", 3, &bad), 0);
    ck_assert_uint_eq(bad, 1);
    ck_assert_uint_eq(utf8_seq((const unsigned char *)"\xff", 1, &bad), 0);
    ck_assert_uint_eq(bad, 1);
}
END_TEST

START_TEST(evbuffer_string)
{
    struct evbuffer *b = evbuffer_new();
    ck_assert_ptr_nonnull(b);
    json_str(b, NULL);
    evbuffer_add(b, LIT(","));
    json_str(b, "/etc/d\xe9tourd/\"x\".yaml");
    evbuffer_add(b, LIT(","));
    json_str(b, "");
    size_t n = evbuffer_get_length(b);
    char *s = (char *)evbuffer_pullup(b, -1);
    const char want[] = "null,\"/etc/d" R "tourd/\\\"x\\\".yaml\",\"\"";
    ck_assert_uint_eq(n, sizeof(want) - 1);
    ck_assert_int_eq(memcmp(s, want, n), 0);
    evbuffer_free(b);
}
END_TEST

static void hcheck(const char *in, size_t n, const char *want)
{
    char *out = malloc(HTML_ESCAPE_MAX(n) + 1);
    ck_assert_ptr_nonnull(out);
    size_t len = html_escape(out, in, n);
    ck_assert_uint_le(len, HTML_ESCAPE_MAX(n));
    out[len] = '\0';
    ck_assert_str_eq(out, want);
    free(out);
}

#define HCHECK(lit, want) hcheck(LIT(lit), want)
#define U                 "\xef\xbf\xbd" /* U+FFFD, as UTF-8 */

START_TEST(html_escapes)
{
    HCHECK("", "");
    HCHECK("eu-west", "eu-west");
    HCHECK("<script>\"a\" & 'b'</script>",
           "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;");
    HCHECK("tab\tnew\nline", "tab\tnew\nline");
    HCHECK("\x01\x7f", U U); /* control characters are not HTML text */
    HCHECK("caf\xc3\xa9 \xf0\x9f\x98\x80", "caf\xc3\xa9 \xf0\x9f\x98\x80");
    HCHECK("caf\xe9", "caf" U);
    HCHECK("\xed\xa0\x80", U U U);
    HCHECK("\xc0\xaf", U U);
    HCHECK("\xf0\x9f\x98<", U "&lt;");
}
END_TEST

START_TEST(html_evbuffer)
{
    struct evbuffer *b = evbuffer_new();
    ck_assert_ptr_nonnull(b);
    html_str(b, NULL);
    html_str(b, "");
    html_str(b, "a<\xff");
    size_t n = evbuffer_get_length(b);
    const char want[] = "a&lt;" U;
    ck_assert_uint_eq(n, sizeof(want) - 1);
    ck_assert_int_eq(memcmp(evbuffer_pullup(b, -1), want, n), 0);
    evbuffer_free(b);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("escape");
    tcase_add_test(tc, ascii_and_escapes);
    tcase_add_test(tc, valid_utf8_passes);
    tcase_add_test(tc, invalid_bytes);
    tcase_add_test(tc, overlong);
    tcase_add_test(tc, surrogates_and_beyond);
    tcase_add_test(tc, truncated);
    tcase_add_test(tc, worst_case_bound);
    tcase_add_test(tc, seq_lengths);
    tcase_add_test(tc, evbuffer_string);
    suite_add_tcase(s, tc);
    tc = tcase_create("html");
    tcase_add_test(tc, html_escapes);
    tcase_add_test(tc, html_evbuffer);
    suite_add_tcase(s, tc);
    return s;
}
