/* Shared by the Check suites: each test file defines make_suite(). */
#ifndef DETOURD_UNIT_H
#define DETOURD_UNIT_H

#include <check.h>

Suite *make_suite(void);

#endif
