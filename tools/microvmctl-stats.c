/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `microvmctl stats [NAME…]`: each VM's figures (VM.GetStats) as a table, JSON, or the
 * OpenMetrics text format a metrics collector scrapes (Prometheus' exposition format 1.0:
 * families grouped, counters as NAME_total, units in the name, `# EOF` last).
 */
#include "microvmctl.h"

/* One VM's public properties and its GetStats. */
typedef struct {
    char *name;
    char *uuid;
    char *state;
    guint owner;
    guint vcpus;
    GVariant *stats;
} VmFigures;

static void vm_figures_free(VmFigures *f)
{
    g_free(f->name);
    g_free(f->uuid);
    g_free(f->state);
    g_clear_pointer(&f->stats, g_variant_unref);
    g_free(f);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmFigures, vm_figures_free)

static VmFigures *vm_figures_read(MvmdVm *vm, GError **error)
{
    g_autoptr(VmFigures) f = g_new0(VmFigures, 1);

    if (!mvmd_vm_call_get_stats_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &f->stats, NULL, error))
        return NULL;
    f->name = g_strdup(mvmd_vm_get_name(vm));
    f->uuid = g_strdup(mvmd_vm_get_uuid(vm));
    f->state = g_strdup(mvmd_vm_get_state(vm));
    f->owner = mvmd_vm_get_owner(vm);
    f->vcpus = mvmd_vm_get_vcpus(vm);
    return g_steal_pointer(&f);
}

static guint64 stat_u64(GVariant *dict, const char *key)
{
    g_autoptr(GVariant) v = g_variant_lookup_value(dict, key, NULL);

    if (v && g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64))
        return g_variant_get_uint64(v);
    if (v && g_variant_is_of_type(v, G_VARIANT_TYPE_INT64))
        return (guint64)MAX(g_variant_get_int64(v), 0);
    if (v && g_variant_is_of_type(v, G_VARIANT_TYPE_UINT32))
        return g_variant_get_uint32(v);
    return 0;
}

/* The devices of @kind ("disks", "network") in @f's stats; an empty array when none. */
static GVariant *devices_of(const VmFigures *f, const char *kind)
{
    GVariant *v = g_variant_lookup_value(f->stats, kind, G_VARIANT_TYPE("aa{sv}"));

    return v ? v : g_variant_ref_sink(g_variant_new_array(G_VARIANT_TYPE_VARDICT, NULL, 0));
}

/* ---- OpenMetrics ---- */

/* A label value: backslash, double quote and newline escaped. */
static char *escape_label(const char *value)
{
    GString *s = g_string_new(NULL);

    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            g_string_append_c(s, '\\');
        if (*p == '\n')
            g_string_append(s, "\\n");
        else
            g_string_append_c(s, *p);
    }
    return g_string_free(s, FALSE);
}

static void family(const char *name, const char *type, const char *unit, const char *help)
{
    g_print("# TYPE %s %s\n", name, type);
    if (unit)
        g_print("# UNIT %s %s\n", name, unit);
    g_print("# HELP %s %s\n", name, help);
}

/* A counter's or gauge's family: one sample per VM, @value taken from its GetStats. */
typedef struct {
    const char *name;
    const char *type; /* counter (NAME_total) or gauge */
    const char *unit; /* NULL: none */
    const char *help;
    const char *key; /* GetStats' */
    double scale;    /* the key's unit to the metric's */
} VmMetric;

static const VmMetric vm_metrics[] = {
    {"microvmd_vm_cpu_seconds", "counter", "seconds", "CPU time of the VM's vCPU threads.",
     "vcpu-time-us", 1e-6},
    {"microvmd_vm_uptime_seconds", "gauge", "seconds", "Time since the VM's last start.",
     "uptime-us", 1e-6},
    {"microvmd_vm_memory_bytes", "gauge", "bytes", "The VM's guest RAM.", "memory-bytes", 1},
    {"microvmd_vm_restarts", "counter", NULL, "Guest resets answered with a restart since Start.",
     "restarts", 1},
};

/* A device family: one sample per disk or NIC of each VM. */
typedef struct {
    const char *name;
    const char *kind; /* GetStats' "disks" or "network" */
    const char *unit;
    const char *help;
    const char *key;
} DeviceMetric;

static const DeviceMetric device_metrics[] = {
    {"microvmd_disk_read_requests", "disks", NULL, "Read requests done.", "read-requests"},
    {"microvmd_disk_read_bytes", "disks", "bytes", "Bytes read.", "read-bytes"},
    {"microvmd_disk_write_requests", "disks", NULL, "Write requests done.", "write-requests"},
    {"microvmd_disk_write_bytes", "disks", "bytes", "Bytes written.", "write-bytes"},
    {"microvmd_disk_throttled", "disks", NULL, "Times the queue waited for its rate limit.",
     "throttled"},
    {"microvmd_nic_rx_frames", "network", NULL, "Frames to the guest.", "rx-frames"},
    {"microvmd_nic_rx_bytes", "network", "bytes", "Bytes to the guest (no vnet header).",
     "rx-bytes"},
    {"microvmd_nic_tx_frames", "network", NULL, "Frames from the guest the tap took.", "tx-frames"},
    {"microvmd_nic_tx_bytes", "network", "bytes", "Bytes from the guest (no vnet header).",
     "tx-bytes"},
    {"microvmd_nic_tx_dropped", "network", NULL, "Frames from the guest the tap did not take.",
     "tx-dropped"},
    {"microvmd_nic_rx_throttled", "network", NULL, "Times receiving waited for the rate limit.",
     "rx-throttled"},
    {"microvmd_nic_tx_throttled", "network", NULL, "Times sending waited for the rate limit.",
     "tx-throttled"},
};

static const char *const vm_states[] = {"created", "running", "paused", "stopped", "crashed"};

static void print_vm_labels(const VmFigures *f)
{
    g_autofree char *name = escape_label(f->name);

    g_print("vm=\"%s\"", name);
}

static void print_info(GPtrArray *vms)
{
    family("microvmd_vm", "info", NULL, "A VM: its UUID, owner and vCPUs.");
    for (guint i = 0; i < vms->len; i++) {
        const VmFigures *f = vms->pdata[i];
        g_autofree char *uuid = escape_label(f->uuid);

        g_print("microvmd_vm_info{");
        print_vm_labels(f);
        g_print(",uuid=\"%s\",owner=\"%u\",vcpus=\"%u\"} 1\n", uuid, f->owner, f->vcpus);
    }
    family("microvmd_vm_state", "stateset", NULL, "The VM's state.");
    for (guint i = 0; i < vms->len; i++) {
        const VmFigures *f = vms->pdata[i];

        for (guint s = 0; s < G_N_ELEMENTS(vm_states); s++) {
            g_print("microvmd_vm_state{");
            print_vm_labels(f);
            g_print(",microvmd_vm_state=\"%s\"} %d\n", vm_states[s],
                    g_str_equal(f->state, vm_states[s]));
        }
    }
}

static void print_vm_metric(GPtrArray *vms, const VmMetric *m)
{
    const char *suffix = g_str_equal(m->type, "counter") ? "_total" : "";

    family(m->name, m->type, m->unit, m->help);
    for (guint i = 0; i < vms->len; i++) {
        const VmFigures *f = vms->pdata[i];
        char value[G_ASCII_DTOSTR_BUF_SIZE];

        g_ascii_dtostr(value, sizeof(value), (double)stat_u64(f->stats, m->key) * m->scale);
        g_print("%s%s{", m->name, suffix);
        print_vm_labels(f);
        g_print("} %s\n", value);
    }
}

static void print_exits(GPtrArray *vms)
{
    family("microvmd_vm_exits", "counter", NULL, "VM exits to microvmd, by reason.");
    for (guint i = 0; i < vms->len; i++) {
        const VmFigures *f = vms->pdata[i];
        g_autoptr(GVariant) exits =
            g_variant_lookup_value(f->stats, "exits", G_VARIANT_TYPE("a{st}"));
        GVariantIter iter;
        const char *reason;
        guint64 n;

        if (!exits)
            continue;
        g_variant_iter_init(&iter, exits);
        while (g_variant_iter_next(&iter, "{&st}", &reason, &n)) {
            g_autofree char *label = escape_label(reason);

            g_print("microvmd_vm_exits_total{");
            print_vm_labels(f);
            g_print(",reason=\"%s\"} %" G_GUINT64_FORMAT "\n", label, n);
        }
    }
}

static void print_device_metric(GPtrArray *vms, const DeviceMetric *m)
{
    const char *label = g_str_equal(m->kind, "disks") ? "disk" : "nic";

    family(m->name, "counter", m->unit, m->help);
    for (guint i = 0; i < vms->len; i++) {
        const VmFigures *f = vms->pdata[i];
        g_autoptr(GVariant) devices = devices_of(f, m->kind);

        for (gsize d = 0; d < g_variant_n_children(devices); d++) {
            g_autoptr(GVariant) device = g_variant_get_child_value(devices, d);

            g_print("%s_total{", m->name);
            print_vm_labels(f);
            g_print(",%s=\"%" G_GSIZE_FORMAT "\"} %" G_GUINT64_FORMAT "\n", label, d,
                    stat_u64(device, m->key));
        }
    }
}

static void print_openmetrics(GPtrArray *vms)
{
    print_info(vms);
    for (guint i = 0; i < G_N_ELEMENTS(vm_metrics); i++)
        print_vm_metric(vms, &vm_metrics[i]);
    print_exits(vms);
    for (guint i = 0; i < G_N_ELEMENTS(device_metrics); i++)
        print_device_metric(vms, &device_metrics[i]);
    g_print("# EOF\n");
}

/* ---- table and JSON ---- */

/* The sum of @key over the devices of @kind. */
static guint64 devices_sum(const VmFigures *f, const char *kind, const char *key)
{
    g_autoptr(GVariant) devices = devices_of(f, kind);
    guint64 sum = 0;

    for (gsize d = 0; d < g_variant_n_children(devices); d++) {
        g_autoptr(GVariant) device = g_variant_get_child_value(devices, d);
        sum += stat_u64(device, key);
    }
    return sum;
}

static char *format_bytes(guint64 bytes)
{
    return g_format_size_full(bytes, G_FORMAT_SIZE_DEFAULT);
}

static void print_table(GPtrArray *vms)
{
    const char *const headers[] = {_("NAME"),         _("STATE"),  _("CPU"),   _("DISK READ"),
                                   _("DISK WRITTEN"), _("NET RX"), _("NET TX")};
    g_autoptr(MctlTable) table = mctl_table_new(G_N_ELEMENTS(headers), headers);

    for (guint i = 0; i < vms->len; i++) {
        const VmFigures *f = vms->pdata[i];
        g_autofree char *cpu = mctl_format_duration_us((gint64)stat_u64(f->stats, "vcpu-time-us"));
        g_autofree char *read = format_bytes(devices_sum(f, "disks", "read-bytes"));
        g_autofree char *written = format_bytes(devices_sum(f, "disks", "write-bytes"));
        g_autofree char *rx = format_bytes(devices_sum(f, "network", "rx-bytes"));
        g_autofree char *tx = format_bytes(devices_sum(f, "network", "tx-bytes"));
        const char *cells[] = {f->name, f->state, cpu, read, written, rx, tx};

        mctl_table_add(table, cells);
    }
    mctl_table_print(table);
}

static void print_json(GPtrArray *vms)
{
    g_autoptr(JsonArray) array = json_array_new();
    g_autoptr(JsonNode) root = json_node_new(JSON_NODE_ARRAY);

    for (guint i = 0; i < vms->len; i++) {
        const VmFigures *f = vms->pdata[i];
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "name", f->name);
        json_object_set_string_member(o, "state", f->state);
        json_object_set_member(o, "stats", mctl_json_from_variant(f->stats));
        json_array_add_object_element(array, o);
    }
    json_node_set_array(root, array);
    mctl_print_json(root, TRUE);
}

/* ---- the command ---- */

/*
 * The VMs named, or else every VM whose figures the caller may read: a collector run as a user
 * sees that user's VMs (and others' where polkit grants read-others). On an error @failed is
 * the name it is about, if any.
 */
static GPtrArray *collect(Mctl *ctl, int argc, char **argv, const char **failed, GError **error)
{
    g_autoptr(GPtrArray) vms = g_ptr_array_new_with_free_func((GDestroyNotify)vm_figures_free);
    g_autoptr(GPtrArray) all = NULL;

    if (argc > 0) {
        for (int i = 0; i < argc; i++) {
            g_autoptr(MvmdVm) vm = mctl_vm_by_name(ctl, argv[i], error);
            VmFigures *f = vm ? vm_figures_read(vm, error) : NULL;
            if (!f) {
                *failed = argv[i];
                return NULL;
            }
            g_ptr_array_add(vms, f);
        }
        return g_steal_pointer(&vms);
    }
    g_autoptr(GDBusObjectManager) manager = mctl_object_manager(ctl, error);
    if (!manager)
        return NULL;
    all = mctl_all_vms(manager);
    for (guint i = 0; i < all->len; i++) {
        g_autoptr(GError) local = NULL;
        VmFigures *f = vm_figures_read(all->pdata[i], &local);

        if (f)
            g_ptr_array_add(vms, f);
        else if (mctl_exit_code(local) != MCTL_EXIT_NOT_AUTHORIZED &&
                 mctl_exit_code(local) != MCTL_EXIT_NO_SUCH_VM) {
            g_propagate_error(error, g_steal_pointer(&local));
            return NULL;
        }
    }
    return g_steal_pointer(&vms);
}

int mctl_cmd_stats(Mctl *ctl, int argc, char **argv)
{
    g_autofree char *format = NULL;
    const GOptionEntry entries[] = {
        JSON_ENTRY(ctl),
        {"format", 0, 0, G_OPTION_ARG_STRING, &format,
         N_("Output format: text (default), json or openmetrics"), N_("FORMAT")},
        {NULL},
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) vms = NULL;
    const char *failed = NULL;

    if (!mctl_parse(ctl, entries, _("[NAME…]"),
                    _("Show the figures of the VMs named, or of every VM one may read: CPU "
                      "time, uptime, exits, and each disk's and network card's traffic."),
                    &argc, &argv))
        return MCTL_EXIT_USAGE;
    if (format &&
        !g_strv_contains((const char *const[]){"text", "json", "openmetrics", NULL}, format))
        return mctl_usage_error(_("--format must be text, json or openmetrics"));
    vms = collect(ctl, argc, argv, &failed, &error);
    if (!vms)
        return mctl_fail(error, failed);
    if (ctl->json || g_strcmp0(format, "json") == 0)
        print_json(vms);
    else if (g_strcmp0(format, "openmetrics") == 0)
        print_openmetrics(vms);
    else
        print_table(vms);
    return MCTL_EXIT_OK;
}
