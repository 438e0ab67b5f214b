/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "virtio.h"
MvmVirtio *mvm_virtio_net_new(const MvmNetConfig *config, const MvmVirtioEnv *env, GError **error)
{
    g_set_error_literal(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED, "not yet");
    return NULL;
}
