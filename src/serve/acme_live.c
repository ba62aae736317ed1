/* stub: to be written */
#include "autoconf.h"

#include "serve/acme_live.h"
