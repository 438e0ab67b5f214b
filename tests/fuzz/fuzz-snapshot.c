/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the snapshot `state` decoder: the exact code a restore
 * runs on an untrusted file before it touches KVM (lib/snapshot-format.c, snapshot-vcpu.c),
 * plus the serial and i8042 restores it tries on scratch devices. Needs no
 * KVM. Built as a fuzzer with clang; always built as a corpus replay test.
 */
#include <string.h>

#include "devices.h"
#include "snapshot.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);
gboolean fuzz_target_accepts(const guint8 *data, size_t size);

gboolean fuzz_target_accepts(const guint8 *data, size_t size)
{
    MvmSnapshotLimits limits;
    g_autoptr(GError) error = NULL;

    mvm_snapshot_limits_default(&limits);
    g_autoptr(MvmSnapshotState) state = mvm_snapshot_decode(data, size, &limits, &error);
    if (state == NULL)
        g_printerr("refused: %s\n", error->message);
    return state != NULL;
}

static void decode_one(const guint8 *data, size_t size)
{
    MvmSnapshotLimits limits;
    g_autoptr(GError) error = NULL;

    mvm_snapshot_limits_default(&limits);
    g_autoptr(MvmSnapshotState) state = mvm_snapshot_decode(data, size, &limits, &error);
    if (state == NULL) {
        /* Every refusal is a clean INVALID_ARGUMENT with a reason. */
        g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
        return;
    }
    g_assert_cmpuint(state->vcpus->len, ==, state->config->n_vcpus);
    g_autoptr(MvmSerial) serial = mvm_serial_new(4, NULL, NULL, NULL, NULL);
    g_autoptr(MvmI8042) i8042 = mvm_i8042_new(1, NULL, NULL, NULL, NULL);
    if (!mvm_serial_restore(serial, state->serial, &error) ||
        !mvm_i8042_restore(i8042, state->i8042, &error))
        g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

/*
 * Random bytes almost never carry a right length and SHA-256: decode the input
 * as it is (the envelope checks), then again with length and digest made right,
 * so the mutations reach the GVariant and state parsers behind them.
 */
int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    const gsize overhead = MVM_SNAPSHOT_HEADER_SIZE + MVM_SNAPSHOT_DIGEST_SIZE;

    decode_one(data, size);
    if (size < overhead)
        return 0;
    g_autofree guint8 *fixed = g_memdup2(data, size);
    guint64 n = GUINT64_TO_LE((guint64)(size - overhead));
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    gsize digest_len = MVM_SNAPSHOT_DIGEST_SIZE;
    memcpy(fixed + 16, &n, sizeof(n));
    g_checksum_update(sum, fixed, (gssize)(size - MVM_SNAPSHOT_DIGEST_SIZE));
    g_checksum_get_digest(sum, fixed + size - MVM_SNAPSHOT_DIGEST_SIZE, &digest_len);
    decode_one(fixed, size);
    return 0;
}
