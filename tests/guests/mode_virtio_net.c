/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "virtio.h"

bool mode_net(void)
{
    fail("net: not built yet");
    return false;
}
