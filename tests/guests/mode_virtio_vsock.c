/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "virtio.h"

bool mode_vsock(void)
{
    fail("vsock: not built yet");
    return false;
}
