/* tcp: the check passes when the connection opens within the timeout. */
#include "autoconf.h"

#include "control/probe.h"

static void tcp_connected(struct probe *p)
{
    probe_finish(p, HR_OK, 0, "connected");
}

static void tcp_readable(struct probe *p)
{
    (void)p; /* not reached: the probe ends at connect */
}

static void tcp_eof(struct probe *p)
{
    probe_finish(p, HR_RESET, 0, "connection closed");
}

const struct probe_kind probe_kind_tcp = {tcp_connected, tcp_readable, tcp_eof};
