/* stub: to be written */
#include "autoconf.h"

#include "lib/acme_jose.h"
