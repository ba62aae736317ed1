/* libFuzzer harness: the config loader must survive any bytes, report
 * errors with positions, and leak nothing. */
#include <stdint.h>
#include <stdlib.h>

#include "control/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct diag d;
    diag_init(&d, "fuzz.yaml");
    struct config *c = config_parse("fuzz.yaml", (const char *)data, size, &d);
    if (c)
        config_free(c);
    else if (d.n == 0)
        abort(); /* a failure must always say why */
    diag_free(&d);
    return 0;
}
