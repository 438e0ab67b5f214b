/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot `state` format without KVM (lib/snapshot-format.c and the vCPU
 * state serialization in lib/snapshot-vcpu.c): round trips of the config and of
 * a vCPU's state, and the decoder refusing damage anywhere in a real state
 * file (the fuzz corpus's valid-1cpu, written by a real snapshot): every
 * truncation, a flipped bit in every region, versions, limits, the payload
 * dictionary's keys. The corpus holds states of format 1 (valid-1cpu,
 * valid-2cpu, valid-golden-1.0) and 2 (valid-golden-2.0): both must decode.
 */
#include <string.h>

#include "snapshot.h"

static GBytes *load_seed(const char *name)
{
    g_autofree char *path =
        g_build_filename(TEST_SRCDIR, "..", "fuzz", "corpus", "snapshot", name, NULL);
    g_autofree char *data = NULL;
    gsize len;
    g_autoptr(GError) error = NULL;

    g_assert_true(g_file_get_contents(path, &data, &len, &error));
    return g_bytes_new_take(g_steal_pointer(&data), len);
}

static MvmSnapshotState *decode(GBytes *bytes, const MvmSnapshotLimits *limits, GError **error)
{
    gsize len;
    const guint8 *data = g_bytes_get_data(bytes, &len);
    return mvm_snapshot_decode(data, len, limits, error);
}

static void assert_refused(GBytes *bytes, const MvmSnapshotLimits *limits, const char *reason)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmSnapshotState) state = decode(bytes, limits, &error);

    g_assert_null(state);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    if (reason != NULL && strstr(error->message, reason) == NULL)
        g_error("expected \"%s\" in: %s", reason, error->message);
}

static void test_seeds_decode(void)
{
    MvmSnapshotLimits limits;
    g_autoptr(GError) error = NULL;

    static const struct {
        const char *name;
        guint n_vcpus;
    } seeds[] = {
        {"valid-1cpu", 1}, {"valid-2cpu", 2}, {"valid-golden-1.0", 1}, {"valid-golden-2.0", 1}};

    mvm_snapshot_limits_default(&limits);
    for (guint i = 0; i < G_N_ELEMENTS(seeds); i++) {
        guint n = seeds[i].n_vcpus;
        g_autoptr(GBytes) seed = load_seed(seeds[i].name);
        g_autoptr(MvmSnapshotState) state = decode(seed, &limits, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(state->config->n_vcpus, ==, n);
        g_assert_cmpuint(state->vcpus->len, ==, n);
        g_assert_cmpuint(state->memory_size, ==, state->config->memory_mib * 1024 * 1024);
        g_assert_cmpuint(state->ioapic.chip_id, ==, KVM_IRQCHIP_IOAPIC);
        MvmVcpuState *vcpu = g_ptr_array_index(state->vcpus, 0);
        g_assert_cmpuint(vcpu->msrs->nmsrs, >, 0);
        g_assert_cmpuint(vcpu->cpuid->nent, >, 0);
        /* The test guest runs in long mode: EFER.LMA in sregs. */
        g_assert_cmpuint(vcpu->sregs.efer & (1u << 10), !=, 0);
    }
}

/* Every length short of the whole file is refused, never read past. */
static void test_truncations(void)
{
    MvmSnapshotLimits limits;
    g_autoptr(GBytes) seed = load_seed("valid-1cpu");
    gsize len;
    const guint8 *data = g_bytes_get_data(seed, &len);

    mvm_snapshot_limits_default(&limits);
    for (gsize n = 0; n < len; n++) {
        /* An exact-size copy, so ASan sees any read past the end. */
        g_autoptr(GBytes) cut = g_bytes_new(data, n);
        assert_refused(cut, &limits, NULL);
    }
}

/* One flipped bit anywhere: the header checks or the digest refuse it. */
static void test_bit_flips(void)
{
    MvmSnapshotLimits limits;
    g_autoptr(GBytes) seed = load_seed("valid-1cpu");
    gsize len;
    const guint8 *data = g_bytes_get_data(seed, &len);

    mvm_snapshot_limits_default(&limits);
    for (gsize i = 0; i < len; i += 7) {
        g_autofree guint8 *copy = g_memdup2(data, len);
        copy[i] ^= 1u << (i % 8);
        g_autoptr(GBytes) bytes = g_bytes_new_take(g_steal_pointer(&copy), len);
        assert_refused(bytes, &limits, NULL);
    }
}

/* A seed's payload, as the format-2 dictionary whatever its format. */
static GVariant *seed_payload(const char *name)
{
    g_autoptr(GBytes) seed = load_seed(name);
    g_autoptr(GError) error = NULL;
    gsize len;
    const guint8 *data = g_bytes_get_data(seed, &len);
    GVariant *payload = mvm_snapshot_unwrap(data, len, &error);

    g_assert_no_error(error);
    return payload;
}

/* The major picks the payload's type; any minor of a known major is read. */
static void test_versions(void)
{
    MvmSnapshotLimits limits;
    g_autoptr(GVariant) payload = seed_payload("valid-1cpu");
    g_autoptr(GBytes) same = mvm_snapshot_encode(payload, MVM_SNAPSHOT_MAJOR, 0);
    g_autoptr(GBytes) minor = mvm_snapshot_encode(payload, MVM_SNAPSHOT_MAJOR, 0xffff);
    g_autoptr(GBytes) major = mvm_snapshot_encode(payload, MVM_SNAPSHOT_MAJOR + 1, 0);
    g_autoptr(GBytes) zero = mvm_snapshot_encode(payload, 0, 0);
    g_autoptr(GBytes) dict_as_tuple = mvm_snapshot_encode(payload, MVM_SNAPSHOT_MAJOR_TUPLE, 0);
    g_autoptr(GError) error = NULL;

    mvm_snapshot_limits_default(&limits);
    for (guint i = 0; i < 2; i++) {
        g_autoptr(MvmSnapshotState) state = decode(i == 0 ? same : minor, &limits, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(state->vcpus->len, ==, 1);
    }
    assert_refused(major, &limits, "format version 3.0; this build reads major 1 to 2");
    assert_refused(zero, &limits, "format version 0.0");
    assert_refused(dict_as_tuple, &limits, "the state of format 1 has type a{sv}, expected (a{sv}");
}

static GBytes *encode_with(GVariant *payload, const char *key, GVariant *value)
{
    GVariantDict dict;

    g_variant_dict_init(&dict, payload);
    if (value != NULL)
        g_variant_dict_insert_value(&dict, key, value);
    else
        g_variant_dict_remove(&dict, key);
    g_autoptr(GVariant) changed = g_variant_ref_sink(g_variant_dict_end(&dict));
    return mvm_snapshot_encode(changed, MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

/*
 * The payload dictionary: a key this build does not know is ignored; each known one is
 * required and of its type, and a refusal names it. Serial and i8042 take any type here:
 * their own restores check them.
 */
static void test_payload_keys(void)
{
    static const char *const keys[] = {"config",    "vcpus",   "clock",      "pic-master",
                                       "pic-slave", "ioapic",  "pit",        "serial",
                                       "i8042",     "devices", "memory-size"};
    MvmSnapshotLimits limits;
    g_autoptr(GVariant) payload = seed_payload("valid-golden-2.0");
    g_autoptr(GError) error = NULL;

    mvm_snapshot_limits_default(&limits);
    g_assert_cmpuint(g_variant_n_children(payload), ==, G_N_ELEMENTS(keys));
    g_autoptr(GBytes) extra =
        encode_with(payload, "a-later-field", g_variant_new_parsed("[(uint32 7, 'x')]"));
    g_autoptr(MvmSnapshotState) state = decode(extra, &limits, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(state->memory_size, ==, state->config->memory_mib * 1024 * 1024);

    for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
        g_autoptr(GVariant) value = g_variant_lookup_value(payload, keys[i], NULL);
        g_assert_nonnull(value);
        g_autoptr(GBytes) missing = encode_with(payload, keys[i], NULL);
        g_autofree char *no_key = g_strdup_printf("the state has no \"%s\"", keys[i]);
        assert_refused(missing, &limits, no_key);

        g_autoptr(GBytes) retyped = encode_with(payload, keys[i], g_variant_new_int16(-1));
        g_autoptr(MvmSnapshotState) any = decode(retyped, &limits, &error);
        if (strcmp(keys[i], "serial") == 0 || strcmp(keys[i], "i8042") == 0) {
            g_assert_no_error(error);
            continue;
        }
        g_assert_null(any);
        g_autofree char *wrong = g_strdup_printf("the state's \"%s\" has type n, expected %s",
                                                 keys[i], g_variant_get_type_string(value));
        g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, wrong));
        g_clear_error(&error);
    }
}

/* A format-1 tuple decodes to what the same state written as format 2 decodes to. */
static void test_tuple_as_dict(void)
{
    g_autoptr(GVariant) v1 = seed_payload("valid-golden-1.0");
    g_autoptr(GVariant) v2 = seed_payload("valid-golden-2.0");
    GVariantIter iter;
    const char *key;
    GVariant *value;

    g_assert_cmpuint(g_variant_n_children(v1), ==, g_variant_n_children(v2));
    g_variant_iter_init(&iter, v2);
    while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) {
        g_autoptr(GVariant) old = g_variant_lookup_value(v1, key, NULL);
        g_assert_nonnull(old);
        g_assert_cmpstr(g_variant_get_type_string(old), ==, g_variant_get_type_string(value));
    }
}

/* What a host allows: vCPUs, MSR count and indices, XSAVE size. */
static void test_limits(void)
{
    MvmSnapshotLimits limits;
    g_autoptr(GBytes) two = load_seed("valid-2cpu");
    g_autoptr(GBytes) one = load_seed("valid-1cpu");
    static const guint32 only_efer[] = {0xc0000080};

    mvm_snapshot_limits_default(&limits);
    limits.max_vcpus = 1;
    assert_refused(two, &limits, "2 vCPUs; this host runs 1 to 1");
    mvm_snapshot_limits_default(&limits);
    limits.max_msrs = 2;
    assert_refused(one, &limits, "MSRs; expected 1 to 2");
    mvm_snapshot_limits_default(&limits);
    limits.msr_indices = only_efer;
    limits.n_msr_indices = G_N_ELEMENTS(only_efer);
    assert_refused(one, &limits, "is not one KVM saves");
    mvm_snapshot_limits_default(&limits);
    limits.max_xsave = 0;
    assert_refused(one, &limits, "XSAVE area");
}

static MvmVmConfig *sample_config(void)
{
    MvmVmConfig *config = mvm_vm_config_new();
    MvmDiskConfig *disk = g_new0(MvmDiskConfig, 1);
    MvmNetConfig *nic = g_new0(MvmNetConfig, 1);

    config->n_vcpus = 3;
    config->memory_mib = 512;
    config->kernel_path = g_strdup("/boot/vmlinux");
    config->cmdline = g_strdup("console=ttyS0");
    config->debug_exit = TRUE;
    config->vsock_cid = 42;
    config->vsock_uds_path = g_strdup("/run/vsock.sock");
    config->rng = TRUE;
    disk->path = g_strdup("/var/disk.img");
    disk->fd = -1;
    disk->read_only = TRUE;
    config->disks = g_ptr_array_new();
    g_ptr_array_add(config->disks, disk);
    nic->tap_name = g_strdup("tap7");
    nic->tap_fd = -1;
    memcpy(nic->mac, "\x02\x00\x00\x00\x00\x07", 6);
    config->nics = g_ptr_array_new();
    g_ptr_array_add(config->nics, nic);
    return config;
}

static void test_config_round_trip(void)
{
    MvmSnapshotLimits limits;
    g_autoptr(MvmVmConfig) config = sample_config();
    g_autoptr(GVariant) v = g_variant_ref_sink(mvm_snapshot_config_to_variant(config));
    g_autoptr(GError) error = NULL;

    mvm_snapshot_limits_default(&limits);
    g_autoptr(MvmVmConfig) back = mvm_snapshot_config_from_variant(v, &limits, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(back->n_vcpus, ==, 3);
    g_assert_cmpuint(back->memory_mib, ==, 512);
    g_assert_cmpstr(back->kernel_path, ==, "/boot/vmlinux");
    g_assert_cmpstr(back->cmdline, ==, "console=ttyS0");
    g_assert_true(back->debug_exit);
    g_assert_cmpuint(back->vsock_cid, ==, 42);
    g_assert_cmpstr(back->vsock_uds_path, ==, "/run/vsock.sock");
    g_assert_true(back->rng);
    g_assert_cmpuint(back->disks->len, ==, 1);
    MvmDiskConfig *disk = g_ptr_array_index(back->disks, 0);
    g_assert_cmpstr(disk->path, ==, "/var/disk.img");
    g_assert_true(disk->read_only);
    g_assert_cmpint(disk->fd, ==, -1);
    MvmNetConfig *nic = g_ptr_array_index(back->nics, 0);
    g_assert_cmpstr(nic->tap_name, ==, "tap7");
    g_assert_cmpmem(nic->mac, 6, "\x02\x00\x00\x00\x00\x07", 6);

    /*
     * A disk or NIC given by fd has no path to store: it comes back without one, and only a
     * restore given its back ends takes it (tests/vm/test-snapshot.c, restore-backends).
     */
    g_clear_pointer(&((MvmDiskConfig *)g_ptr_array_index(config->disks, 0))->path, g_free);
    g_clear_pointer(&((MvmNetConfig *)g_ptr_array_index(config->nics, 0))->tap_name, g_free);
    g_autoptr(GVariant) by_fd = g_variant_ref_sink(mvm_snapshot_config_to_variant(config));
    g_autoptr(MvmVmConfig) pathless = mvm_snapshot_config_from_variant(by_fd, &limits, &error);
    g_assert_no_error(error);
    disk = g_ptr_array_index(pathless->disks, 0);
    g_assert_null(disk->path);
    g_assert_cmpint(disk->fd, ==, -1);
    nic = g_ptr_array_index(pathless->nics, 0);
    g_assert_null(nic->tap_name);
    g_assert_cmpint(nic->tap_fd, ==, -1);
}

static MvmVcpuState *sample_vcpu_state(void)
{
    MvmVcpuState *s = g_new0(MvmVcpuState, 1);

    s->cpuid = g_malloc0(sizeof(*s->cpuid) + 2 * sizeof(s->cpuid->entries[0]));
    s->cpuid->nent = 2;
    s->cpuid->entries[1].function = 0x40000001;
    s->cpuid->entries[1].eax = 0x1234;
    s->msrs = g_malloc0(sizeof(*s->msrs) + 2 * sizeof(s->msrs->entries[0]));
    s->msrs->nmsrs = 2;
    s->msrs->entries[0].index = 0x10;
    s->msrs->entries[0].data = 0x123456789ULL;
    s->msrs->entries[1].index = 0x4b564d01;
    s->msrs->entries[1].data = 0x5001;
    s->mp_state.mp_state = KVM_MP_STATE_RUNNABLE;
    s->regs.rip = 0x100042;
    s->sregs.cr3 = 0x9000;
    s->xsave = g_bytes_new_take(g_malloc0(4096), 4096);
    s->has_xcrs = TRUE;
    s->xcrs.nr_xcrs = 1;
    s->xcrs.xcrs[0].value = 7;
    s->lapic.regs[0x20] = 0x5;
    s->events.exception.nr = 3;
    s->tsc_khz = 2400000;
    return s;
}

static void test_vcpu_round_trip(void)
{
    MvmSnapshotLimits limits;
    g_autoptr(MvmVcpuState) state = sample_vcpu_state();
    g_autoptr(GVariant) v = g_variant_ref_sink(mvm_vcpu_state_to_variant(state));
    g_autoptr(GError) error = NULL;

    mvm_snapshot_limits_default(&limits);
    g_assert_true(g_variant_is_of_type(v, G_VARIANT_TYPE(MVM_SNAPSHOT_VCPU_TYPE)));
    g_autoptr(MvmVcpuState) back = mvm_vcpu_state_from_variant(v, &limits, &error);
    g_assert_no_error(error);
    g_assert_cmpmem(back->cpuid, sizeof(*back->cpuid) + 2 * sizeof(back->cpuid->entries[0]),
                    state->cpuid, sizeof(*state->cpuid) + 2 * sizeof(state->cpuid->entries[0]));
    g_assert_cmpmem(back->msrs, sizeof(*back->msrs) + 2 * sizeof(back->msrs->entries[0]),
                    state->msrs, sizeof(*state->msrs) + 2 * sizeof(state->msrs->entries[0]));
    g_assert_cmpmem(&back->regs, sizeof(back->regs), &state->regs, sizeof(state->regs));
    g_assert_cmpmem(&back->sregs, sizeof(back->sregs), &state->sregs, sizeof(state->sregs));
    g_assert_cmpmem(&back->lapic, sizeof(back->lapic), &state->lapic, sizeof(state->lapic));
    g_assert_cmpmem(&back->events, sizeof(back->events), &state->events, sizeof(state->events));
    g_assert_cmpmem(&back->xcrs, sizeof(back->xcrs), &state->xcrs, sizeof(state->xcrs));
    g_assert_true(g_bytes_equal(back->xsave, state->xsave));
    g_assert_cmpuint(back->mp_state.mp_state, ==, KVM_MP_STATE_RUNNABLE);
    g_assert_cmpuint(back->tsc_khz, ==, 2400000);

    /* KVM_SET_XCRS reads nr_xcrs entries: a count past the array is refused. */
    state->xcrs.nr_xcrs = 1000;
    g_autoptr(GVariant) bad = g_variant_ref_sink(mvm_vcpu_state_to_variant(state));
    g_autoptr(MvmVcpuState) refused = mvm_vcpu_state_from_variant(bad, &limits, &error);
    g_assert_null(refused);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/snapshot-format/seeds-decode", test_seeds_decode);
    g_test_add_func("/snapshot-format/truncations", test_truncations);
    g_test_add_func("/snapshot-format/bit-flips", test_bit_flips);
    g_test_add_func("/snapshot-format/versions", test_versions);
    g_test_add_func("/snapshot-format/limits", test_limits);
    g_test_add_func("/snapshot-format/payload-keys", test_payload_keys);
    g_test_add_func("/snapshot-format/tuple-as-dict", test_tuple_as_dict);
    g_test_add_func("/snapshot-format/config-round-trip", test_config_round_trip);
    g_test_add_func("/snapshot-format/vcpu-round-trip", test_vcpu_round_trip);
    return g_test_run();
}
