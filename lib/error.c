/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "microvm.h"

G_DEFINE_QUARK(mvm - error - quark, mvm_error)
