/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What lib shares of MvmVmConfig (vm-config.c) beyond the public half in microvm.h. */
#pragma once

#include "microvm.h"

G_BEGIN_DECLS

/* The virtio devices @config asks for: one per disk and NIC, vsock and rng if set. */
guint mvm_vm_config_count_virtio(const MvmVmConfig *config);

G_END_DECLS
