/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Config validation and the GKeyFile round trip, without a bus. */
#include <glib/gstdio.h>

#include "caller-files.h"
#include "definition.h"
#include "errors.h"
#include "store.h"

static MvmdVmDefinition *parse(const char *name, const char *text, GError **error)
{
    g_autoptr(GVariant) v = g_variant_parse(G_VARIANT_TYPE_VARDICT, text, NULL, NULL, NULL);

    g_assert_nonnull(v);
    return mvmd_vm_definition_new_from_variant(name, NULL, v, NULL, error);
}

static void test_defaults(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmDefinition) c = parse("vm", "{'kernel': <'/k'>}", &error);

    g_assert_no_error(error);
    g_assert_cmpuint(c->vcpus, ==, 1);
    g_assert_cmpuint(c->memory_mib, ==, MVMD_DEFAULT_MEMORY);
    g_assert_cmpstr(c->kernel, ==, "/k");
    g_assert_cmpint(c->kernel_fd, ==, -1);
    g_assert_null(c->initrd);
    g_assert_false(c->persist);
    g_assert_cmpint(c->on_reboot, ==, MVMD_ON_REBOOT_RESTART);
    g_assert_true(g_uuid_string_is_valid(c->uuid));
}

static void test_invalid(void)
{
    static const struct {
        const char *name;
        const char *text;
        const char *key; /* named in the message */
    } cases[] = {
        {"vm", "{}", "kernel"},
        {"vm", "{'kernel': <'k'>}", "kernel"},
        {"vm", "{'kernel': <'/k'>, 'vcpus': <uint32 0>}", "vcpus"},
        {"vm", "{'kernel': <'/k'>, 'vcpus': <uint32 256>}", "vcpus"},
        {"vm", "{'kernel': <'/k'>, 'vcpus': <2>}", "vcpus"},
        {"vm", "{'kernel': <'/k'>, 'memory-mib': <uint64 0>}", "memory-mib"},
        {"vm", "{'kernel': <'/k'>, 'memory-mib': <uint64 7>}", "memory-mib"},
        {"vm", "{'kernel': <'/k'>, 'memory-mib': <uint64 2097152>}", "memory-mib"},
        {"vm", "{'kernel': <'/k'>, 'x': <1>}", "x"},
        {"vm", "{'kernel': <'/k'>, 'vsock': <@a{sv} {}>}", "vsock.cid"},
        {"vm", "{'kernel': <'/k'>, 'vsock': <{'cid': <uint32 2>, 'uds-path': <'/v'>}>}",
         "vsock.cid"},
        {"vm", "{'kernel': <'/k'>, 'vsock': <{'cid': <uint32 3>}>}", "vsock.uds-path"},
        {"vm", "{'kernel': <'/k'>, 'vsock': <{'cid': <uint32 3>, 'uds-path': <'v'>}>}",
         "vsock.uds-path"},
        {"vm", "{'kernel': <'/k'>, 'vsock': <{'cid': <3>, 'uds-path': <'/v'>}>}", "vsock.cid"},
        {"vm", "{'kernel': <'/k'>, 'vsock': <{'cid': <uint32 3>, 'uds-path': <'/v'>, 'x': <1>}>}",
         "vsock.x"},
        {"vm", "{'kernel': <'/k'>, 'disks': <[@a{sv} {}]>}", "disks[0].path"},
        {"vm", "{'kernel': <'/k'>, 'disks': <[{'path': <'rel'>}]>}", "disks[0].path"},
        {"vm", "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>}, {'path': <'/b'>, 'ro': <true>}]>}",
         "disks[1].ro"},
        {"vm", "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'read-only': <1>}]>}",
         "disks[0].read-only"},
        {"vm", "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'fd': <handle 0>}]>}",
         "disks[0].fd"},
        {"vm", "{'kernel': <'/k'>, 'disks': <[{'fd': <handle 0>}]>}", "disks[0].fd"},
        {"vm", "{'kernel': <'/k'>, 'disks': <'sda'>}", "disks"},
        /* Rate limits: both of size and refill time, in range, of type t. */
        {"vm", "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'ops': <{'size': <uint64 1>}>}]>}",
         "disks[0].ops.refill-time-ms"},
        {"vm",
         "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'bandwidth': <{'refill-time-ms': "
         "<uint64 1>}>}]>}",
         "disks[0].bandwidth.size"},
        {"vm",
         "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'bandwidth': <{'size': <uint64 0>, "
         "'refill-time-ms': <uint64 1>}>}]>}",
         "disks[0].bandwidth.size"},
        {"vm",
         "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'bandwidth': <{'size': <uint64 "
         "1125899906842625>, 'refill-time-ms': <uint64 1>}>}]>}",
         "disks[0].bandwidth.size"},
        {"vm",
         "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'ops': <{'size': <uint64 1>, "
         "'refill-time-ms': <uint64 86400001>}>}]>}",
         "disks[0].ops.refill-time-ms"},
        {"vm",
         "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'ops': <{'size': <uint64 1>, "
         "'refill-time-ms': <uint64 1>, 'one-time-burst': <uint64 1125899906842625>}>}]>}",
         "disks[0].ops.one-time-burst"},
        {"vm",
         "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'ops': <{'size': <1>, "
         "'refill-time-ms': <uint64 1>}>}]>}",
         "disks[0].ops.size"},
        {"vm",
         "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'ops': <{'size': <uint64 1>, "
         "'refill-time-ms': <uint64 1>, 'rate': <uint64 1>}>}]>}",
         "disks[0].ops.rate"},
        {"vm", "{'kernel': <'/k'>, 'disks': <[{'path': <'/a'>, 'ops': <uint64 200>}]>}",
         "disks[0].ops"},
        {"vm",
         "{'kernel': <'/k'>, 'network': <[{'tap': <'t'>, 'rx-ops': <{'size': <uint64 1>}>}]>}",
         "network[0].rx-ops.refill-time-ms"},
        {"vm",
         "{'kernel': <'/k'>, 'network': <[{'tap': <'t'>, 'tx-bandwidth': <{'size': <uint64 0>, "
         "'refill-time-ms': <uint64 1>}>}]>}",
         "network[0].tx-bandwidth.size"},
        {"vm",
         "{'kernel': <'/k'>, 'network': <[{'tap': <'t'>, 'bandwidth': <{'size': <uint64 1>, "
         "'refill-time-ms': <uint64 1>}>}]>}",
         "network[0].bandwidth"},
        {"vm", "{'kernel': <'/k'>, 'network': <[{'tap': <'tap0'>, 'mac': <'52:54:00:12:34'>}]>}",
         "network[0].mac"},
        {"vm", "{'kernel': <'/k'>, 'network': <[{'tap': <'t'>, 'mac': <'01:00:00:00:00:01'>}]>}",
         "network[0].mac"},
        {"vm", "{'kernel': <'/k'>, 'network': <[{'tap': <'t'>, 'mac': <'zz:00:00:00:00:01'>}]>}",
         "network[0].mac"},
        {"vm", "{'kernel': <'/k'>, 'network': <[{'tap': <'a/b'>}]>}", "network[0].tap"},
        {"vm", "{'kernel': <'/k'>, 'network': <[{'tap': <'0123456789abcdef'>}]>}",
         "network[0].tap"},
        {"vm", "{'kernel': <'/k'>, 'network': <[@a{sv} {}]>}", "network[0].tap"},
        {"vm", "{'kernel': <'/k'>, 'rng': <1>}", "rng"},
        {"vm", "{'kernel': <'/k'>, 'autostart': <true>}", "autostart"},
        {"vm", "{'kernel': <'/k'>, 'on-reboot': <'never'>}", "on-reboot"},
        {"vm", "{'kernel': <'/k'>, 'kernel': <'/j'>}", "kernel"},
        /* A template name becomes part of a file name: never a path, never empty. */
        {"vm", "{'kernel': <'/k'>, 'cpu-template': <''>}", "cpu-template"},
        {"vm", "{'kernel': <'/k'>, 'cpu-template': <'../etc/passwd'>}", "cpu-template"},
        {"vm", "{'kernel': <'/k'>, 'cpu-template': <'a/b'>}", "cpu-template"},
        {"vm", "{'kernel': <'/k'>, 'cpu-template': <'/etc/x'>}", "cpu-template"},
        {"vm", "{'kernel': <'/k'>, 'cpu-template': <'.hidden'>}", "cpu-template"},
        {"vm", "{'kernel': <'/k'>, 'cpu-template': <'a b'>}", "cpu-template"},
        {"vm", "{'kernel': <'/k'>, 'cpu-template': <'x\\n'>}", "cpu-template"},
        {"vm",
         "{'kernel': <'/k'>, 'cpu-template': "
         "<'a123456789b123456789c123456789d123456789e123456789f123456789g1234'>}",
         "cpu-template"},
        {"vm", "{'kernel': <'/k'>, 'cpu-template': <uint32 2>}", "cpu-template"},
        {"", "{'kernel': <'/k'>}", NULL},
        {"a/b", "{'kernel': <'/k'>}", NULL},
        {"-a", "{'kernel': <'/k'>}", NULL},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(MvmdVmDefinition) c = parse(cases[i].name, cases[i].text, &error);

        g_assert_null(c);
        g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
        if (cases[i].key) {
            g_autofree char *quoted = g_strdup_printf("'%s'", cases[i].key);
            g_assert_nonnull(strstr(error->message, quoted));
        }
    }
}

static void test_devices(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmDefinition) c =
        parse("dev",
              "{'kernel': <'/k'>, 'disks': <[{'path': <'/d0'>, 'bandwidth': <@a{sv} {}>}, "
              "{'path': <'/d1'>, 'read-only': <true>, 'ops': <{'size': <uint64 10>, "
              "'refill-time-ms': <uint64 50>, 'one-time-burst': <uint64 5>}>}]>, "
              "'network': <[{'tap': <'tap0'>, 'mac': <'52:54:00:AB:cd:01'>}, {'tap': "
              "<'tap1'>, 'rx-ops': <{'size': <uint64 7>, 'refill-time-ms': <uint64 70>}>, "
              "'tx-bandwidth': <{'size': <uint64 9>, 'refill-time-ms': <uint64 90>}>}]>, 'vsock': "
              "<{'cid': <uint32 42>, 'uds-path': <'/run/v.sock'>}>, 'rng': "
              "<true>}",
              &error);
    g_autoptr(MvmVmConfig) mvm = NULL;
    MvmDiskConfig *d1;
    MvmNetConfig *n0;

    g_assert_no_error(error);
    mvm = mvmd_vm_definition_to_mvm(c);
    g_assert_cmpuint(mvm->disks->len, ==, 2);
    d1 = mvm->disks->pdata[1];
    g_assert_cmpstr(d1->path, ==, "/d1");
    g_assert_true(d1->read_only);
    g_assert_cmpint(d1->fd, ==, -1);
    g_assert_cmpuint(d1->rate_limit.ops.size, ==, 10);
    g_assert_cmpuint(d1->rate_limit.ops.refill_time_ms, ==, 50);
    g_assert_cmpuint(d1->rate_limit.ops.one_time_burst, ==, 5);
    g_assert_cmpuint(d1->rate_limit.bandwidth.size, ==, 0);
    /* An empty bucket is no limit. */
    g_assert_cmpuint(((MvmDiskConfig *)mvm->disks->pdata[0])->rate_limit.bandwidth.size, ==, 0);
    g_assert_cmpuint(mvm->nics->len, ==, 2);
    n0 = mvm->nics->pdata[0];
    g_assert_cmpstr(n0->tap_name, ==, "tap0");
    g_assert_cmpmem(n0->mac, 6, ((const guint8[]){0x52, 0x54, 0x00, 0xab, 0xcd, 0x01}), 6);
    g_assert_cmpuint(n0->rx_rate_limit.ops.size + n0->tx_rate_limit.bandwidth.size, ==, 0);
    const MvmNetConfig *n1 = mvm->nics->pdata[1];
    g_assert_cmpuint(n1->rx_rate_limit.ops.size, ==, 7);
    g_assert_cmpuint(n1->rx_rate_limit.ops.refill_time_ms, ==, 70);
    g_assert_cmpuint(n1->rx_rate_limit.bandwidth.size, ==, 0);
    g_assert_cmpuint(n1->tx_rate_limit.bandwidth.size, ==, 9);
    g_assert_cmpuint(n1->tx_rate_limit.bandwidth.refill_time_ms, ==, 90);
    g_assert_cmpuint(n1->tx_rate_limit.ops.size, ==, 0);
    g_assert_cmpuint(mvm->vsock_cid, ==, 42);
    g_assert_cmpstr(mvm->vsock_uds_path, ==, "/run/v.sock");
    g_assert_true(mvm->rng);
    /* The defaults: no device but none asked for. */
    {
        g_autoptr(MvmdVmDefinition) plain = parse("plain", "{'kernel': <'/k'>}", &error);
        g_autoptr(MvmVmConfig) pm = mvmd_vm_definition_to_mvm(plain);

        g_assert_true(pm->disks == NULL || pm->disks->len == 0);
        g_assert_cmpuint(pm->vsock_cid, ==, 0);
        g_assert_false(pm->rng);
    }
}

static gboolean parse_backends(MvmdDevices *devices, const char *text, gboolean clone,
                               GError **error)
{
    g_autoptr(GVariant) v = g_variant_parse(G_VARIANT_TYPE_VARDICT, text, NULL, NULL, NULL);
    gboolean given = FALSE;

    g_assert_nonnull(v);
    return mvmd_devices_parse_backends(devices, v, NULL, clone, &given, error);
}

/*
 * RestoreVM's back ends: a MAC, or a vsock without the snapshot's CID, only for a clone (the
 * guest of any other restore knows the snapshot's).
 */
static void test_restore_backends(void)
{
    static const char nic_mac[] = "{'network': <[{'tap': <'t0'>}, {'tap': <'t1'>, 'mac': "
                                  "<'52:54:00:00:00:02'>}]>}";
    static const char vsock_no_cid[] = "{'vsock': <{'uds-path': <'/run/c.sock'>}>}";
    MvmdDevices devices;
    g_autoptr(GError) error = NULL;

    mvmd_devices_init(&devices);
    g_assert_false(parse_backends(&devices, nic_mac, FALSE, &error));
    g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "'network[1].mac'"));
    g_assert_nonnull(strstr(error->message, "snapshot's MAC"));
    g_assert_nonnull(strstr(error->message, "'clone'"));
    g_clear_error(&error);
    g_assert_false(parse_backends(&devices, vsock_no_cid, FALSE, &error));
    g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "'vsock.cid'"));
    g_clear_error(&error);
    mvmd_devices_clear(&devices);

    /* A clone: the MAC it names, and a CID the restore chooses (0 until then). */
    mvmd_devices_init(&devices);
    g_assert_true(parse_backends(&devices, nic_mac, TRUE, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(devices.nics->len, ==, 2);
    g_assert_false(((MvmdNic *)devices.nics->pdata[0])->has_mac);
    g_assert_true(((MvmdNic *)devices.nics->pdata[1])->has_mac);
    g_assert_cmpmem(((MvmdNic *)devices.nics->pdata[1])->mac, 6,
                    ((const guint8[]){0x52, 0x54, 0, 0, 0, 2}), 6);
    g_assert_true(parse_backends(&devices, vsock_no_cid, TRUE, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(devices.vsock_cid, ==, 0);
    g_assert_cmpstr(devices.vsock_uds_path, ==, "/run/c.sock");
    /* Given, a CID is checked as ever. */
    g_assert_false(parse_backends(&devices, "{'vsock': <{'cid': <uint32 2>, 'uds-path': <'/c'>}>}",
                                  TRUE, &error));
    g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "'vsock.cid'"));
    mvmd_devices_clear(&devices);
}

/* The NIC records of a definition's GetConfig (@stored FALSE) or stored form. */
static GVariant *network_of(const MvmdVmDefinition *c, gboolean stored)
{
    g_autoptr(GVariant) all = NULL;

    if (stored) {
        g_autoptr(GKeyFile) kf = mvmd_vm_definition_to_keyfile(c);
        g_autofree char *text = g_key_file_get_string(kf, "Config", "network", NULL);

        g_assert_nonnull(text);
        return g_variant_parse(G_VARIANT_TYPE("aa{sv}"), text, NULL, NULL, NULL);
    }
    all = g_variant_ref_sink(mvmd_vm_definition_to_variant(c));
    return g_variant_lookup_value(all, "network", G_VARIANT_TYPE("aa{sv}"));
}

/*
 * What the machine got goes back into the definition: GetConfig shows the MAC the library
 * chose for a NIC without one (never all zero), the next start asks for it again, and the
 * stored definition still has none; a given MAC stays; the CID is the machine's.
 */
static void test_update_from_machine(void)
{
    static const guint8 chosen[6] = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmDefinition) c = parse(
        "nics",
        "{'kernel': <'/k'>, 'persist': <true>, 'network': <[{'tap': <'t0'>}, {'tap': <'t1'>, "
        "'mac': <'52:54:00:00:00:02'>}]>, 'vsock': <{'cid': <uint32 7>, 'uds-path': <'/v'>}>}",
        &error);
    g_autoptr(MvmVmConfig) machine = NULL;
    g_autoptr(MvmVmConfig) again = NULL;
    g_autoptr(GVariant) shown = NULL;
    g_autoptr(GVariant) stored = NULL;
    g_autoptr(GVariant) nic0 = NULL;
    const char *mac = NULL;

    g_assert_no_error(error);
    shown = network_of(c, FALSE);
    nic0 = g_variant_get_child_value(shown, 0);
    g_assert_false(g_variant_lookup(nic0, "mac", "&s", &mac));
    g_clear_pointer(&nic0, g_variant_unref);
    g_clear_pointer(&shown, g_variant_unref);

    /* The machine as mvm_vm_get_config() has it. */
    machine = mvmd_vm_definition_to_mvm(c);
    memcpy(((MvmNetConfig *)machine->nics->pdata[0])->mac, chosen, 6);
    mvmd_devices_update_from_mvm(&c->devices, machine);

    shown = network_of(c, FALSE);
    nic0 = g_variant_get_child_value(shown, 0);
    g_assert_true(g_variant_lookup(nic0, "mac", "&s", &mac));
    g_assert_cmpstr(mac, ==, "02:11:22:33:44:55");
    g_clear_pointer(&nic0, g_variant_unref);
    nic0 = g_variant_get_child_value(shown, 1);
    g_assert_true(g_variant_lookup(nic0, "mac", "&s", &mac));
    g_assert_cmpstr(mac, ==, "52:54:00:00:00:02");
    g_clear_pointer(&nic0, g_variant_unref);

    stored = network_of(c, TRUE);
    nic0 = g_variant_get_child_value(stored, 0);
    g_assert_false(g_variant_lookup(nic0, "mac", "&s", &mac));
    g_clear_pointer(&nic0, g_variant_unref);
    nic0 = g_variant_get_child_value(stored, 1);
    g_assert_true(g_variant_lookup(nic0, "mac", "&s", &mac));
    g_assert_cmpstr(mac, ==, "52:54:00:00:00:02");

    again = mvmd_vm_definition_to_mvm(c);
    g_assert_cmpmem(((MvmNetConfig *)again->nics->pdata[0])->mac, 6, chosen, 6);
    g_assert_cmpuint(again->vsock_cid, ==, 7);
}

/* 17 disks, 9 NICs, or more than the 19 interrupt lines in all, are refused. */
static void test_device_limits(void)
{
    g_autoptr(GString) disks = g_string_new("[");
    g_autoptr(GString) nics = g_string_new("[");
    g_autofree char *text = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmDefinition) c = NULL;

    for (int i = 0; i < 17; i++)
        g_string_append_printf(disks, "%s{'path': <'/d%d'>}", i ? ", " : "", i);
    g_string_append(disks, "]");
    for (int i = 0; i < 9; i++)
        g_string_append_printf(nics, "%s{'tap': <'t%d'>}", i ? ", " : "", i);
    g_string_append(nics, "]");
    text = g_strdup_printf("{'kernel': <'/k'>, 'disks': <%s>}", disks->str);
    c = parse("lim", text, &error);
    g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_free(text);
    text = g_strdup_printf("{'kernel': <'/k'>, 'network': <%s>}", nics->str);
    c = parse("lim", text, &error);
    g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    /* 16 disks + 3 NICs = 19: fine; + rng = 20: too many. */
    g_string_truncate(disks, 0);
    g_string_append(disks, "[");
    for (int i = 0; i < 16; i++)
        g_string_append_printf(disks, "%s{'path': <'/d%d'>}", i ? ", " : "", i);
    g_string_append(disks, "]");
    g_free(text);
    text = g_strdup_printf("{'kernel': <'/k'>, 'disks': <%s>, 'network': <[{'tap': <'a'>}, "
                           "{'tap': <'b'>}, {'tap': <'c'>}]>}",
                           disks->str);
    c = parse("lim", text, &error);
    g_assert_no_error(error);
    g_clear_pointer(&c, mvmd_vm_definition_free);
    g_free(text);
    text = g_strdup_printf("{'kernel': <'/k'>, 'disks': <%s>, 'network': <[{'tap': <'a'>}, "
                           "{'tap': <'b'>}, {'tap': <'c'>}]>, 'rng': <true>}",
                           disks->str);
    c = parse("lim", text, &error);
    g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "at most 19"));
}

static void test_keyfile_roundtrip(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmDefinition) c =
        parse("round.trip",
              "{'kernel': <'/k'>, 'initrd': <'/i'>, 'cmdline': <'a=1 b=\"2\"\\n'>,"
              " 'vcpus': <uint32 4>, 'memory-mib': <uint64 256>, 'persist': <true>,"
              " 'autostart': <true>, 'on-reboot': <'stop'>, 'debug-exit': <true>,"
              " 'disks': <[{'path': <'/d'>, 'read-only': <true>, 'bandwidth': <{'size':"
              " <uint64 100000>, 'refill-time-ms': <uint64 10>}>}]>, 'rng': <true>,"
              " 'network': <[{'tap': <'tap0'>, 'mac': <'52:54:00:00:00:01'>, 'tx-ops':"
              " <{'size': <uint64 100>, 'refill-time-ms': <uint64 100>, 'one-time-burst':"
              " <uint64 5>}>}]>,"
              " 'vsock': <{'cid': <uint32 7>, 'uds-path': <'/v'>}>,"
              " 'cpu-template': <'x86-64-v2'>}",
              &error);
    g_autoptr(GKeyFile) kf = NULL;
    g_autoptr(MvmdVmDefinition) back = NULL;
    g_autoptr(GVariant) v1 = NULL;
    g_autoptr(GVariant) v2 = NULL;

    g_assert_no_error(error);
    c->owner = 1000;
    kf = mvmd_vm_definition_to_keyfile(c);
    back = mvmd_vm_definition_new_from_keyfile(kf, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(back->name, ==, c->name);
    g_assert_cmpstr(back->uuid, ==, c->uuid);
    g_assert_cmpuint(back->owner, ==, 1000);
    v1 = g_variant_ref_sink(mvmd_vm_definition_to_variant(c));
    v2 = g_variant_ref_sink(mvmd_vm_definition_to_variant(back));
    g_assert_true(g_variant_equal(v1, v2));
    g_autofree char *text = g_variant_print(v2, TRUE);
    g_assert_nonnull(strstr(text, "'bandwidth': <{'size': <uint64 100000>, 'refill-time-ms': "
                                  "<uint64 10>}>"));
}

/* A definition stored before VMs had owners is root's; a bad Owner is refused, not guessed. */
static void test_keyfile_owner(void)
{
    static const char *const head = "[VM]\nName=old\nUUID=2f5d7e0a-8c1e-4a57-9b83-6f2a0c1d9e44\n";
    static const char *const tail = "[Config]\nkernel=/k\npersist=true\n";
    static const struct {
        const char *owner_line;
        gint64 owner; /* -1: refused */
    } cases[] = {{"", 0},
                 {"Owner=65534\n", 65534},
                 {"Owner=-1\n", -1},
                 {"Owner=4294967295\n", -1},
                 {"Owner=me\n", -1}};

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *text = g_strconcat(head, cases[i].owner_line, tail, NULL);
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(MvmdVmDefinition) c = NULL;
        g_autoptr(GError) error = NULL;

        g_assert_true(g_key_file_load_from_data(kf, text, -1, G_KEY_FILE_NONE, NULL));
        c = mvmd_vm_definition_new_from_keyfile(kf, &error);
        if (cases[i].owner < 0) {
            g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
            g_assert_nonnull(strstr(error->message, "Owner"));
            continue;
        }
        g_assert_no_error(error);
        g_assert_cmpuint(c->owner, ==, cases[i].owner);
    }
}

static void test_store(void)
{
    g_autofree char *dir = g_dir_make_tmp("mvmd-store-XXXXXX", NULL);
    g_autoptr(MvmdStore) store = mvmd_store_new(dir);
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmDefinition) c = parse("s1", "{'kernel': <'/k'>, 'persist': <true>}", &error);
    g_autoptr(GPtrArray) loaded = NULL;
    g_autofree char *junk = g_build_filename(mvmd_store_get_dir(store), "junk.vm", NULL);
    g_autofree char *file = g_build_filename(mvmd_store_get_dir(store), "s1.vm", NULL);

    g_assert_no_error(error);
    g_assert_true(mvmd_store_save(store, c, &error));
    g_assert_no_error(error);
    g_assert_true(g_file_set_contents(junk, "garbage", -1, NULL));
    {
        /* The skip is logged as a warning, which GTest would make fatal. */
        GLogLevelFlags fatal = g_log_set_always_fatal(G_LOG_FATAL_MASK);
        loaded = mvmd_store_load_all(store, &error);
        g_log_set_always_fatal(fatal);
    }
    g_assert_no_error(error);
    g_assert_cmpuint(loaded->len, ==, 1);
    g_assert_cmpstr(((MvmdVmDefinition *)loaded->pdata[0])->uuid, ==, c->uuid);
    g_assert_true(g_file_test(junk, G_FILE_TEST_EXISTS));
    g_assert_true(mvmd_store_remove(store, "s1", &error));
    g_assert_true(mvmd_store_remove(store, "s1", &error)); /* gone: fine */
    g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
    g_remove(junk);
    g_rmdir(mvmd_store_get_dir(store));
    g_rmdir(dir);
}

/*
 * Caller files are placed by the device number in mountinfo's third field, the same in every
 * mount namespace (mount IDs are not); the type is the first field after " - ".
 */
static const char mountinfo_sample[] =
    "22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    "28 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "30 22 0:26 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,inode64\n"
    "41 28 0:45 / /run/user/1000/doc rw,nosuid,nodev,relatime shared:60 - fuse portal rw\n"
    "42 28 8:17 / /media/usb rw,nosuid,nodev,relatime shared:61 - fuseblk /dev/sdb1 rw\n"
    "43 28 0:47 / /home/u/remote rw,nosuid,nodev,relatime shared:62 - fuse.sshfs u@h: rw\n"
    "44 28 254:0 /srv /var/srv rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "45 28 0:48 / /mnt/odd\\040name rw - tmpfs none rw\n"
    "not a mountinfo line\n";

static void assert_fstype(guint major, guint minor, const char *expected, gboolean local)
{
    g_autofree char *fstype = mvmd_mountinfo_fstype(mountinfo_sample, major, minor);

    g_assert_cmpstr(fstype, ==, expected);
    if (fstype)
        g_assert_cmpint(mvmd_fstype_is_local(fstype), ==, local);
}

static void test_mountinfo(void)
{
    assert_fstype(0, 21, "proc", FALSE);
    assert_fstype(254, 0, "ext4", TRUE);
    assert_fstype(0, 26, "tmpfs", TRUE);
    assert_fstype(0, 45, "fuse", FALSE);
    assert_fstype(8, 17, "fuseblk", FALSE);
    assert_fstype(0, 47, "fuse.sshfs", FALSE);
    assert_fstype(0, 48, "tmpfs", TRUE);
    /* Whole numbers: 0:2 is not 0:21 nor 0:26, 25:0 is not 254:0. */
    assert_fstype(0, 2, NULL, FALSE);
    assert_fstype(25, 0, NULL, FALSE);
    g_assert_null(mvmd_mountinfo_fstype("", 0, 21));
    g_assert_null(mvmd_mountinfo_fstype("22 28 0:21 / /proc rw", 0, 21)); /* no " - " */
    g_assert_false(mvmd_fstype_is_local("nfs4"));
    g_assert_false(mvmd_fstype_is_local("ext"));
    g_assert_false(mvmd_fstype_is_local("sysfs"));
}

/* lib's MVM_ERROR_INCOMPATIBLE_CPU reaches callers as its own D-Bus error, message kept. */
static void test_incompatible_cpu_error(void)
{
    g_autoptr(GError) lib =
        g_error_new_literal(MVM_ERROR, MVM_ERROR_INCOMPATIBLE_CPU, "this host lacks avx512f");
    g_autoptr(GError) mapped = mvmd_error_from_error(lib, "cannot restore the snapshot");
    g_autofree char *name = g_dbus_error_encode_gerror(mapped);

    g_assert_error(mapped, MVMD_ERROR, MVMD_ERROR_INCOMPATIBLE_CPU);
    g_assert_cmpstr(mapped->message, ==, "cannot restore the snapshot: this host lacks avx512f");
    g_assert_cmpstr(name, ==, "org.microvmd.MicroVM1.Error.IncompatibleCPU");
}

/* lib's MVM_ERROR_NOT_SUPPORTED (no userfaultfd, no working set) is NotSupported, not Failed. */
static void test_not_supported_error(void)
{
    g_autoptr(GError) lib =
        g_error_new_literal(MVM_ERROR, MVM_ERROR_NOT_SUPPORTED, "the VM was not restored lazily");
    g_autoptr(GError) mapped = mvmd_error_from_error(lib, "cannot save the working set");
    g_autofree char *name = g_dbus_error_encode_gerror(mapped);

    g_assert_error(mapped, MVMD_ERROR, MVMD_ERROR_NOT_SUPPORTED);
    g_assert_cmpstr(mapped->message, ==,
                    "cannot save the working set: the VM was not restored lazily");
    g_assert_cmpstr(name, ==, "org.microvmd.MicroVM1.Error.NotSupported");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    mvmd_config_set_max_vcpus(255);
    g_test_add_func("/config/defaults", test_defaults);
    g_test_add_func("/config/invalid", test_invalid);
    g_test_add_func("/config/devices", test_devices);
    g_test_add_func("/config/device-limits", test_device_limits);
    g_test_add_func("/config/restore-backends", test_restore_backends);
    g_test_add_func("/config/update-from-machine", test_update_from_machine);
    g_test_add_func("/config/keyfile-roundtrip", test_keyfile_roundtrip);
    g_test_add_func("/config/keyfile-owner", test_keyfile_owner);
    g_test_add_func("/config/store", test_store);
    g_test_add_func("/config/mountinfo", test_mountinfo);
    g_test_add_func("/config/incompatible-cpu-error", test_incompatible_cpu_error);
    g_test_add_func("/config/not-supported-error", test_not_supported_error);
    return g_test_run();
}
