/* String literals with their length counted by the compiler, never by
 * hand: LIT("abc") expands to the two arguments `"abc", 3`, so it fits any
 * (pointer, length) call: put(b, LIT("null")), evbuffer_add(o, LIT("]}")),
 * memcmp(p, LIT("HTTP/")). The "" around s rejects anything but a literal. */
#ifndef DETOURD_LIT_H
#define DETOURD_LIT_H

#define LIT_LEN(s) (sizeof("" s "") - 1)
#define LIT(s)     ("" s ""), LIT_LEN(s)

#endif
