/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <glib.h>

#include "names.h"

G_BEGIN_DECLS

/* Structured message about one VM: MICROVM_VM=<name>, and the name in the text for terminals. */
#define mvmd_vm_log(name, level, fmt, ...)                                                         \
    g_log_structured(G_LOG_DOMAIN, level, MVMD_LOG_FIELD_VM, name, "MESSAGE", "%s: " fmt, name,    \
                     ##__VA_ARGS__)

/* journald when stderr is connected to the journal, else stderr; debug/info only if @verbose. */
void mvmd_log_init(gboolean verbose);

G_END_DECLS
