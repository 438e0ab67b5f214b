/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshots damaged in every way the restore checks for (truncated, flipped
 * bytes, unknown major, short memory, wrong vCPU count, not in GVariant normal
 * form, a payload key missing or of the wrong type, ...): each is refused with
 * MVM_ERROR_INVALID_ARGUMENT and the reason, and leaves no fd (no VM) behind.
 * The cases that change the payload re-encode it with a right digest, so the
 * check behind the digest is the one that must refuse. Needs KVM and the test
 * guest for the one good snapshot they all start from. A newer minor with keys
 * this build does not know restores.
 */
#include <glib/gstdio.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot-test-util.h"
#include "snapshot.h"
#include "vm-private.h"

static char *good_snapshot; /* a valid snapshot directory, made once */
static guint64 good_vm_vcpus;

static const char *get_good_snapshot(void)
{
    if (good_snapshot != NULL)
        return good_snapshot;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = new_guest("mode=pattern pages=16 base_mib=8 every=5 delay=100", 1, 16, c);
    g_autoptr(GError) error = NULL;

    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 10\n", TIMEOUT_US));
    good_snapshot = make_tmpdir();
    g_assert_true(mvm_vm_snapshot(vm, good_snapshot, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    good_vm_vcpus = vm->n_vcpus;
    return good_snapshot;
}

/* A copy of the good snapshot whose files the caller then damages. */
static char *copy_snapshot(void)
{
    const char *good = get_good_snapshot();
    char *dir = make_tmpdir();

    for (guint i = 0; i < 2; i++) {
        const char *name = i == 0 ? "state" : "memory";
        g_autofree char *from = g_build_filename(good, name, NULL);
        g_autofree char *to = g_build_filename(dir, name, NULL);
        g_autofree char *data = NULL;
        gsize len;
        g_assert_true(g_file_get_contents(from, &data, &len, NULL));
        g_assert_true(g_file_set_contents(to, data, (gssize)len, NULL));
    }
    return dir;
}

static GBytes *read_member(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autofree char *data = NULL;
    gsize len;

    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    return g_bytes_new_take(g_steal_pointer(&data), len);
}

static void write_member(const char *dir, const char *name, const void *data, gsize len)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_assert_true(g_file_set_contents(path, data, (gssize)len, NULL));
}

/* Restoring @dir must fail with INVALID_ARGUMENT mentioning @reason, and leave nothing open. */
static void assert_refused(const char *dir, const char *reason)
{
    g_autoptr(GError) error = NULL;
    guint fds = count_open_fds();
    MvmVm *vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);

    g_assert_null(vm);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_test_message("refused: %s", error->message);
    g_assert_nonnull(strstr(error->message, reason));
    g_assert_cmpuint(count_open_fds(), ==, fds);
}

/* The good state's payload, for re-encoding with one change. */
static GVariant *good_payload(void)
{
    return snapshot_read_payload(get_good_snapshot());
}

/* The payload dictionary with @key set to @value (floating, taken), or removed when NULL. */
/* The config dictionary with @key set to @value. */
static GVariant *config_with(GVariant *payload, const char *key, GVariant *value)
{
    g_autoptr(GVariant) config = g_variant_lookup_value(payload, "config", NULL);

    return vardict_with(payload, "config", vardict_with(config, key, value));
}

typedef void (*DamageFunc)(const char *dir);

static void damage_truncate_state(const char *dir)
{
    g_autoptr(GBytes) state = read_member(dir, "state");
    write_member(dir, "state", g_bytes_get_data(state, NULL), g_bytes_get_size(state) - 100);
}

static void damage_tiny_state(const char *dir)
{
    write_member(dir, "state", "MVMSNAP", 7);
}

static void damage_flip_payload(const char *dir)
{
    g_autoptr(GBytes) state = read_member(dir, "state");
    gsize len;
    g_autofree guint8 *data = g_memdup2(g_bytes_get_data(state, &len), g_bytes_get_size(state));
    data[len / 2] ^= 0x40;
    write_member(dir, "state", data, len);
}

static void damage_flip_digest(const char *dir)
{
    g_autoptr(GBytes) state = read_member(dir, "state");
    gsize len;
    g_autofree guint8 *data = g_memdup2(g_bytes_get_data(state, &len), g_bytes_get_size(state));
    data[len - 1] ^= 0x01;
    write_member(dir, "state", data, len);
}

static void damage_magic(const char *dir)
{
    g_autoptr(GBytes) state = read_member(dir, "state");
    gsize len;
    g_autofree guint8 *data = g_memdup2(g_bytes_get_data(state, &len), g_bytes_get_size(state));
    data[0] = 'X';
    write_member(dir, "state", data, len);
}

static void damage_major(const char *dir)
{
    snapshot_write_payload(dir, good_payload(), MVM_SNAPSHOT_MAJOR + 1, 0);
}

static void damage_missing_key(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(dir, vardict_with(payload, "vcpus", NULL), MVM_SNAPSHOT_MAJOR,
                           MVM_SNAPSHOT_MINOR);
}

static void damage_key_type(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(dir, vardict_with(payload, "memory-size", g_variant_new_uint32(16)),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

/* The generation ID elsewhere than this build puts it: into the guest's RAM, or past it. */
static void damage_vmgenid_addr(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(dir,
                           vardict_with(payload, "vmgenid-addr", g_variant_new_uint64(0x200000)),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

static void damage_vmgenid_type(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(dir,
                           vardict_with(payload, "vmgenid-addr", g_variant_new_uint32(0xff000)),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

/* Diff keys on the full snapshot's state: each refused before anything else is read. */
static void write_diff_keys(const char *dir, GVariant *parent, GVariant *pages)
{
    g_autoptr(GVariant) payload = good_payload();
    g_autoptr(GVariant) with_parent =
        parent != NULL ? vardict_with(payload, "parent", parent) : g_variant_ref(payload);
    snapshot_write_payload(dir,
                           pages != NULL ? vardict_with(with_parent, "changed-pages", pages)
                                         : g_variant_ref(with_parent),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

static GVariant *bytes_of(guint8 value, gsize len)
{
    g_autofree guint8 *data = g_malloc(len);

    memset(data, value, len);
    return g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, data, len, 1);
}

static void damage_diff_without_pages(const char *dir)
{
    write_diff_keys(dir, bytes_of(1, 32), NULL);
}

static void damage_diff_short_parent(const char *dir)
{
    write_diff_keys(dir, bytes_of(1, 31), bytes_of(0, 16 * 1024 * 1024 / 4096 / 8));
}

static void damage_diff_bitmap_size(const char *dir)
{
    write_diff_keys(dir, bytes_of(1, 32), bytes_of(0xff, 16 * 1024 * 1024 / 4096 / 8 + 1));
}

/* A format-1 tuple (here with one member) under the dictionary's major. */
static void damage_tuple_as_v2(const char *dir)
{
    snapshot_write_payload(dir, g_variant_new_parsed("(@a{sv} {},)"), MVM_SNAPSHOT_MAJOR,
                           MVM_SNAPSHOT_MINOR);
}

static void damage_short_memory(const char *dir)
{
    g_autofree char *path = g_build_filename(dir, "memory", NULL);
    g_assert_cmpint(truncate(path, 16 * 1024 * 1024 - 4096), ==, 0);
}

static void damage_no_memory(const char *dir)
{
    g_autofree char *path = g_build_filename(dir, "memory", NULL);
    g_assert_cmpint(g_unlink(path), ==, 0);
}

static void damage_vcpu_count(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(dir,
                           config_with(payload, "vcpus", g_variant_new_uint32(good_vm_vcpus + 1)),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

static void damage_too_many_vcpus(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(dir, config_with(payload, "vcpus", g_variant_new_uint32(100000)),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

static void damage_memory_size(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(dir, config_with(payload, "memory-mib", g_variant_new_uint64(32)),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

static void damage_config_type(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(dir, config_with(payload, "vcpus", g_variant_new_string("1")),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

static void damage_wrong_type(const char *dir)
{
    snapshot_write_payload(dir, g_variant_new_string("not a snapshot"), MVM_SNAPSHOT_MAJOR,
                           MVM_SNAPSHOT_MINOR);
}

/* A `v` whose child claims type (uu) but has 4 bytes: not in normal form; digest still right. */
static void damage_not_normal(const char *dir)
{
    static const guint8 bad[] = {1, 0, 0, 0, 0, '(', 'u', 'u', ')'};
    g_autoptr(GBytes) good =
        mvm_snapshot_encode(g_variant_new_string("x"), MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
    gsize n = MVM_SNAPSHOT_HEADER_SIZE + sizeof(bad) + MVM_SNAPSHOT_DIGEST_SIZE;
    g_autofree guint8 *data = g_malloc0(n);
    guint64 len_le = GUINT64_TO_LE(sizeof(bad));
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    gsize digest_len = MVM_SNAPSHOT_DIGEST_SIZE;

    memcpy(data, g_bytes_get_data(good, NULL), 16); /* magic, version, flags */
    memcpy(data + 16, &len_le, 8);
    memcpy(data + MVM_SNAPSHOT_HEADER_SIZE, bad, sizeof(bad));
    g_checksum_update(sum, data, MVM_SNAPSHOT_HEADER_SIZE + sizeof(bad));
    g_checksum_get_digest(sum, data + MVM_SNAPSHOT_HEADER_SIZE + sizeof(bad), &digest_len);
    write_member(dir, "state", data, n);
}

static void damage_blob_size(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    static const guint8 short_pit[8];
    snapshot_write_payload(
        dir,
        vardict_with(payload, "pit",
                     g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, short_pit, 8, 1)),
        MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

/* vCPU 0's MSRs: one that KVM does not list among those it saves. */
static void damage_unknown_msr(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    g_autoptr(GVariant) vcpus = g_variant_lookup_value(payload, "vcpus", NULL);
    g_autoptr(GVariant) vcpu = g_variant_get_child_value(vcpus, 0);
    GVariant *msrs = g_variant_new_parsed("[(uint32 0xdeadbeef, uint64 0)]");
    GVariant *new_vcpus = variant_replace_child(vcpus, 0, variant_replace_child(vcpu, 10, msrs));
    snapshot_write_payload(dir, vardict_with(payload, "vcpus", new_vcpus), MVM_SNAPSHOT_MAJOR,
                           MVM_SNAPSHOT_MINOR);
}

/* vCPU 0's CPUID table with its first entry twice, or that entry moved to a stray leaf. */
static void write_cpuid_damage(const char *dir, gboolean stray_leaf)
{
    g_autoptr(GVariant) payload = good_payload();
    g_autoptr(GVariant) vcpus = g_variant_lookup_value(payload, "vcpus", NULL);
    g_autoptr(GVariant) vcpu = g_variant_get_child_value(vcpus, 0);
    g_autoptr(GVariant) cpuid = g_variant_get_child_value(vcpu, 0);
    gsize size;
    const guint8 *bytes = g_variant_get_fixed_array(cpuid, &size, 1);
    gsize entry = sizeof(struct kvm_cpuid_entry2);
    g_autofree guint8 *damaged = g_malloc(size + entry);

    memcpy(damaged, bytes, size);
    memcpy(damaged + size, bytes, entry);
    if (stray_leaf)
        ((struct kvm_cpuid_entry2 *)(damaged + size))->function = 0x40000101;
    GVariant *table = g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, damaged, size + entry, 1);
    GVariant *new_vcpus = variant_replace_child(vcpus, 0, variant_replace_child(vcpu, 0, table));
    snapshot_write_payload(dir, vardict_with(payload, "vcpus", new_vcpus), MVM_SNAPSHOT_MAJOR,
                           MVM_SNAPSHOT_MINOR);
}

static void damage_cpuid_twice(const char *dir)
{
    write_cpuid_damage(dir, FALSE);
}

static void damage_cpuid_stray_leaf(const char *dir)
{
    write_cpuid_damage(dir, TRUE);
}

static void damage_unknown_device(const char *dir)
{
    g_autoptr(GVariant) payload = good_payload();
    GVariantDict dict;
    g_variant_dict_init(&dict, NULL);
    g_variant_dict_insert(&dict, "virtio-blk7", "u", 1);
    snapshot_write_payload(dir, vardict_with(payload, "devices", g_variant_dict_end(&dict)),
                           MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
}

static void damage_state_symlink(const char *dir)
{
    g_autofree char *path = g_build_filename(dir, "state", NULL);
    g_autofree char *target = g_build_filename(get_good_snapshot(), "state", NULL);
    g_unlink(path);
    g_assert_cmpint(symlink(target, path), ==, 0);
}

/* A FIFO instead of @name: opening it for reading would wait for a writer that never comes. */
static void replace_by_fifo(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_assert_cmpint(g_unlink(path), ==, 0);
    g_assert_cmpint(mkfifo(path, 0600), ==, 0);
}

static void damage_state_fifo(const char *dir)
{
    replace_by_fifo(dir, "state");
}

static void damage_memory_fifo(const char *dir)
{
    replace_by_fifo(dir, "memory");
}

typedef struct {
    const char *name;
    DamageFunc damage;
    const char *reason;
} Damage;

static const Damage damages[] = {
    {"truncated-state", damage_truncate_state, "truncated"},
    {"tiny-state", damage_tiny_state, "too short"},
    {"flipped-payload-byte", damage_flip_payload, "digest"},
    {"flipped-digest-byte", damage_flip_digest, "digest"},
    {"bad-magic", damage_magic, "magic"},
    {"wrong-major", damage_major, "format version 3.0"},
    {"missing-key", damage_missing_key, "the state has no \"vcpus\""},
    {"key-type", damage_key_type, "the state's \"memory-size\" has type u, expected t"},
    {"vmgenid-addr", damage_vmgenid_addr,
     "the generation ID is at 0x200000; this build has it at 0xff000"},
    {"vmgenid-type", damage_vmgenid_type, "the state's \"vmgenid-addr\" has type u, expected t"},
    {"diff-without-pages", damage_diff_without_pages,
     "the state has \"parent\" without \"changed-pages\""},
    {"diff-short-parent", damage_diff_short_parent, "parent"},
    {"diff-bitmap-size", damage_diff_bitmap_size,
     "the state's \"changed-pages\" has 513 bytes for 4096 pages"},
    {"tuple-as-v2", damage_tuple_as_v2, "the state of format 2 has type (a{sv}), expected a{sv}"},
    {"memory-too-short", damage_short_memory, "memory has"},
    {"memory-missing", damage_no_memory, "cannot open memory"},
    {"wrong-vcpu-count", damage_vcpu_count, "vCPU states for a VM of"},
    {"too-many-vcpus", damage_too_many_vcpus, "100000 vCPUs"},
    {"memory-size-mismatch", damage_memory_size, "bytes of RAM for a VM of 32 MiB"},
    {"config-type", damage_config_type, "has type s, expected u"},
    {"wrong-payload-type", damage_wrong_type, "has type s, expected"},
    {"not-normal-form", damage_not_normal, "normal form"},
    {"short-pit-state", damage_blob_size, "PIT state has 8 bytes"},
    {"unknown-device", damage_unknown_device, "virtio-blk7"},
    {"unknown-msr", damage_unknown_msr, "MSR 0xdeadbeef is not one KVM saves"},
    {"cpuid-leaf-twice", damage_cpuid_twice, "appears twice"},
    {"cpuid-stray-hypervisor-leaf", damage_cpuid_stray_leaf,
     "CPUID leaf 0x40000101 is not one KVM gives"},
    {"state-symlink", damage_state_symlink, "cannot open state"},
    {"state-fifo", damage_state_fifo, "state is not a regular file"},
    {"memory-fifo", damage_memory_fifo, "memory is not a regular file"},
};

static void test_corrupt(gconstpointer data)
{
    const Damage *d = data;

    if (!have_kvm())
        return;
    g_autofree char *dir = copy_snapshot();
    d->damage(dir);
    assert_refused(dir, d->reason);
    rm_rf(dir);
}

/* The unchanged copy restores: the damage, not the copying, is what the cases above refuse. */
static void test_corrupt_control(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autofree char *dir = copy_snapshot();
    /* Re-encoding the payload unchanged must also restore: the test's encoder is sound. */
    snapshot_write_payload(dir, good_payload(), MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
    g_autoptr(MvmVm) vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    g_assert_nonnull(vm);
    rm_rf(dir);
}

/*
 * What a newer minor may write: the version, and keys this build does not know, which it
 * ignores. Such a state restores, and the guest goes on.
 */
static void test_newer_minor(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autofree char *dir = copy_snapshot();
    g_autoptr(GVariant) payload = good_payload();
    snapshot_write_payload(
        dir, vardict_with(payload, "a-later-field", g_variant_new_parsed("(uint32 7, 'x')")),
        MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR + 1);
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    rm_rf(dir);
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER", TIMEOUT_US));
    g_autofree char *out = capture_dup_from(c, 0);
    g_assert_null(strstr(out, "FAIL"));
}

/* A TSC rate 10% off: set with KVM_SET_TSC_KHZ where KVM can scale, else a clear refusal. */
static void test_tsc_mismatch(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autofree char *dir = copy_snapshot();
    g_autoptr(GVariant) payload = good_payload();
    g_autoptr(GVariant) vcpus = g_variant_lookup_value(payload, "vcpus", NULL);
    g_autoptr(GVariant) vcpu = g_variant_get_child_value(vcpus, 0);
    g_autoptr(GVariant) khz = g_variant_get_child_value(vcpu, 12);
    guint32 changed = g_variant_get_uint32(khz) / 10 * 11;
    if (g_variant_get_uint32(khz) == 0) {
        g_test_skip("this host does not tell its TSC rate");
        return;
    }
    GVariant *new_vcpus = variant_replace_child(
        vcpus, 0, variant_replace_child(vcpu, 12, g_variant_new_uint32(changed)));
    snapshot_write_payload(dir, vardict_with(payload, "vcpus", new_vcpus), MVM_SNAPSHOT_MAJOR,
                           MVM_SNAPSHOT_MINOR);
    g_autoptr(MvmVm) vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    if (vm == NULL) {
        g_test_message("refused: %s", error->message);
        g_assert_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED);
        g_assert_nonnull(strstr(error->message, "TSC"));
    }
    rm_rf(dir);
}

static void cleanup_good_snapshot(void)
{
    if (good_snapshot != NULL)
        rm_rf(good_snapshot);
    g_clear_pointer(&good_snapshot, g_free);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    if (g_getenv("MVM_TESTGUEST") == NULL) {
        g_printerr("MVM_TESTGUEST is not set\n");
        return 77;
    }
    g_test_add_func("/snapshot/corrupt/control", test_corrupt_control);
    for (gsize i = 0; i < G_N_ELEMENTS(damages); i++) {
        g_autofree char *path = g_strdup_printf("/snapshot/corrupt/%s", damages[i].name);
        g_test_add_data_func(path, &damages[i], test_corrupt);
    }
    g_test_add_func("/snapshot/corrupt/tsc-mismatch", test_tsc_mismatch);
    g_test_add_func("/snapshot/newer-minor", test_newer_minor);
    int ret = g_test_run();
    cleanup_good_snapshot();
    return ret;
}
