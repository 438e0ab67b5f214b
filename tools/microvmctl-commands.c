/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmctl: list, status, info, and the commands that act on one VM (snapshot and restore:
 * microvmctl-snapshot.c).
 */
#include <pwd.h>
#include <stdio.h>

#include "microvmctl.h"

/* Lifecycle calls can take a while on a loaded host with emulated guest kernels. */
#define LIFECYCLE_TIMEOUT_MS (5 * 60 * 1000)
/* Shutdown's own default (VM.xml) and the slack the reply may need beyond the guest's time. */
#define SHUTDOWN_DEFAULT_SEC 60
#define SHUTDOWN_SLACK_MS    (30 * 1000)
#define SHUTDOWN_MAX_SEC     3600

static gboolean vm_is_live(MvmdVm *vm)
{
    const char *state = mvmd_vm_get_state(vm);

    return g_strcmp0(state, MVMD_STATE_RUNNING) == 0 || g_strcmp0(state, MVMD_STATE_PAUSED) == 0;
}

/* Microseconds since the VM last started, or -1 when it is not running or paused. */
static gint64 vm_uptime_us(MvmdVm *vm)
{
    g_autoptr(GVariant) stats = NULL;
    gint64 uptime = -1;

    if (!vm_is_live(vm) ||
        !mvmd_vm_call_get_stats_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &stats, NULL, NULL))
        return -1;
    if (!g_variant_lookup(stats, "uptime-us", "x", &uptime))
        return -1;
    return uptime;
}

static gint compare_vm_names(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(mvmd_vm_get_name(*(MvmdVm **)a), mvmd_vm_get_name(*(MvmdVm **)b));
}

GPtrArray *mctl_all_vms(GDBusObjectManager *manager)
{
    GList *objects = g_dbus_object_manager_get_objects(manager);
    GPtrArray *vms = g_ptr_array_new_with_free_func(g_object_unref);

    for (GList *l = objects; l; l = l->next) {
        MvmdVm *vm = mvmd_object_get_vm(MVMD_OBJECT(l->data));

        if (vm)
            g_ptr_array_add(vms, vm);
    }
    g_list_free_full(objects, g_object_unref);
    g_ptr_array_sort(vms, compare_vm_names);
    return vms;
}

static JsonNode *vm_summary_json(MvmdVm *vm, gint64 uptime)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, mvmd_vm_get_name(vm));
    json_builder_set_member_name(b, "path");
    json_builder_add_string_value(b, g_dbus_proxy_get_object_path(G_DBUS_PROXY(vm)));
    json_builder_set_member_name(b, "uuid");
    json_builder_add_string_value(b, mvmd_vm_get_uuid(vm));
    json_builder_set_member_name(b, "state");
    json_builder_add_string_value(b, mvmd_vm_get_state(vm));
    json_builder_set_member_name(b, "owner");
    json_builder_add_int_value(b, mvmd_vm_get_owner(vm));
    json_builder_set_member_name(b, "vcpus");
    json_builder_add_int_value(b, mvmd_vm_get_vcpus(vm));
    json_builder_set_member_name(b, "memory-mib");
    json_builder_add_int_value(b, (gint64)mvmd_vm_get_memory_mib(vm));
    json_builder_set_member_name(b, "uptime-us");
    if (uptime >= 0)
        json_builder_add_int_value(b, uptime);
    else
        json_builder_add_null_value(b);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

/* A user name for a uid, or the number when it has none here. */
static char *format_owner(guint32 uid)
{
    struct passwd *pw = getpwuid(uid);

    return pw ? g_strdup(pw->pw_name) : g_strdup_printf("%u", uid);
}

static void print_vm_table(GPtrArray *vms)
{
    const char *headers[] = {_("NAME"),  _("STATE"),  _("OWNER"),
                             _("VCPUS"), _("MEMORY"), _("UPTIME")};
    g_autoptr(MctlTable) table = mctl_table_new(G_N_ELEMENTS(headers), headers);

    for (guint i = 0; i < vms->len; i++) {
        MvmdVm *vm = vms->pdata[i];
        g_autofree char *vcpus = g_strdup_printf("%u", mvmd_vm_get_vcpus(vm));
        g_autofree char *memory = mctl_format_mib(mvmd_vm_get_memory_mib(vm));
        g_autofree char *uptime = mctl_format_duration_us(vm_uptime_us(vm));
        g_autofree char *owner = format_owner(mvmd_vm_get_owner(vm));
        const char *row[] = {
            mvmd_vm_get_name(vm), mvmd_vm_get_state(vm), owner, vcpus, memory, uptime};

        mctl_table_add(table, row);
    }
    mctl_table_print(table);
}

int mctl_cmd_list(Mctl *ctl, int argc, char **argv)
{
    gboolean names = FALSE;
    const GOptionEntry entries[] = {
        JSON_ENTRY(ctl),
        {"names", 0, 0, G_OPTION_ARG_NONE, &names, N_("Print only the names, one per line"), NULL},
        {NULL},
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(GDBusObjectManager) manager = NULL;
    g_autoptr(GPtrArray) vms = NULL;

    if (!mctl_parse(ctl, entries, "", _("List the VMs with their state, vCPUs, memory and uptime."),
                    &argc, &argv) ||
        !mctl_want_args(argc, 0, "list"))
        return MCTL_EXIT_USAGE;
    manager = mctl_object_manager(ctl, &error);
    if (!manager)
        return mctl_fail(error, NULL);
    vms = mctl_all_vms(manager);
    if (ctl->json) {
        g_autoptr(JsonArray) array = json_array_new();
        g_autoptr(JsonNode) root = json_node_new(JSON_NODE_ARRAY);

        for (guint i = 0; i < vms->len; i++)
            json_array_add_element(array,
                                   vm_summary_json(vms->pdata[i], vm_uptime_us(vms->pdata[i])));
        json_node_set_array(root, array);
        mctl_print_json(root, TRUE);
    } else if (names) {
        for (guint i = 0; i < vms->len; i++)
            g_print("%s\n", mvmd_vm_get_name(vms->pdata[i]));
    } else {
        print_vm_table(vms);
    }
    return MCTL_EXIT_OK;
}

/* ---- status ---------------------------------------------------------------------------- */

static char *value_to_text(GVariant *value);

/* A dictionary on one line: "key value, key value" (a{sv}: the devices; a{st}: exit counts). */
static char *dict_to_text(GVariant *dict)
{
    GString *text = g_string_new(NULL);
    GVariantIter iter;
    const char *key;
    GVariant *value;

    g_variant_iter_init(&iter, dict);
    while (g_variant_iter_next(&iter, "{&s@*}", &key, &value)) {
        g_autofree char *v = value_to_text(value);

        g_string_append_printf(text, "%s%s %s", text->len ? ", " : "", key, v);
        g_variant_unref(value);
    }
    return g_string_free(text, FALSE);
}

static char *value_to_text(GVariant *value)
{
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_VARIANT)) {
        g_autoptr(GVariant) inner = g_variant_get_variant(value);

        return value_to_text(inner);
    }
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING))
        return g_strdup(g_variant_get_string(value, NULL));
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_BOOLEAN))
        return g_strdup(g_variant_get_boolean(value) ? _("yes") : _("no"));
    if (g_variant_is_of_type(value, G_VARIANT_TYPE("a{s*}")))
        return dict_to_text(value);
    if (g_variant_is_of_type(value, G_VARIANT_TYPE("aa{sv}"))) {
        /* A list of devices: one "[…]" each. */
        GString *text = g_string_new(NULL);

        for (gsize i = 0; i < g_variant_n_children(value); i++) {
            g_autoptr(GVariant) child = g_variant_get_child_value(value, i);
            g_autofree char *c = dict_to_text(child);

            g_string_append_printf(text, "%s[%s]", i ? " " : "", c);
        }
        return g_string_free(text, FALSE);
    }
    return g_variant_print(value, FALSE);
}

/* Prints a dictionary as "  key  value" lines. */
static void print_dict(GVariant *dict)
{
    GVariantIter iter;
    const char *key;
    GVariant *value;

    g_variant_iter_init(&iter, dict);
    while (g_variant_iter_next(&iter, "{&sv}", &key, &value)) {
        g_autofree char *text = value_to_text(value);

        g_print("  %-20s %s\n", key, text);
        g_variant_unref(value);
    }
}

/* What status shows beyond the public properties: the owner's (or with read-others). */
typedef struct {
    GVariant *stats;
    GVariant *config;
    char *exit_reason;
} Details;

static void details_clear(Details *d)
{
    g_clear_pointer(&d->stats, g_variant_unref);
    g_clear_pointer(&d->config, g_variant_unref);
    g_clear_pointer(&d->exit_reason, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Details, details_clear)

static gboolean fetch_details(MvmdVm *vm, Details *d, GError **error)
{
    return mvmd_vm_call_get_stats_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &d->stats, NULL, error) &&
           mvmd_vm_call_get_config_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &d->config, NULL, error) &&
           mvmd_vm_call_get_exit_reason_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &d->exit_reason, NULL,
                                             error);
}

static void print_status(MvmdVm *vm, const Details *d, GStrv console, guint lines)
{
    g_autofree char *since = mctl_format_time_us(mvmd_vm_get_state_changed_at(vm));
    g_autofree char *memory = mctl_format_mib(mvmd_vm_get_memory_mib(vm));
    g_autofree char *owner = format_owner(mvmd_vm_get_owner(vm));

    g_print("%s\n", mvmd_vm_get_name(vm));
    g_print("  %-20s %s (%s %s)\n", _("State:"), mvmd_vm_get_state(vm), _("since"), since);
    g_print("  %-20s %s\n", _("UUID:"), mvmd_vm_get_uuid(vm));
    g_print("  %-20s %s\n", _("Owner:"), owner);
    g_print("  %-20s %u\n", _("vCPUs:"), mvmd_vm_get_vcpus(vm));
    g_print("  %-20s %s\n", _("Memory:"), memory);
    if (d->exit_reason && *d->exit_reason)
        g_print("  %-20s %s\n", _("Last exit:"), d->exit_reason);
    if (d->config) {
        g_print("%s\n", _("Configuration:"));
        print_dict(d->config);
    }
    if (d->stats) {
        g_print("%s\n", _("Statistics:"));
        print_dict(d->stats);
    }
    if (console && lines > 0) {
        g_print(ngettext("Console (last line):", "Console (last %u lines):", lines), lines);
        g_print("\n");
        for (char **l = console; *l; l++)
            g_print("  %s\n", *l);
    }
}

static JsonNode *status_json(MvmdVm *vm, const Details *d, GStrv console)
{
    g_autoptr(JsonNode) root = vm_summary_json(vm, -1);
    JsonObject *o = json_node_get_object(root);
    gint64 uptime = -1;

    if (d->stats && vm_is_live(vm))
        g_variant_lookup(d->stats, "uptime-us", "x", &uptime);
    if (uptime >= 0)
        json_object_set_int_member(o, "uptime-us", uptime);
    json_object_set_int_member(o, "state-changed-at", (gint64)mvmd_vm_get_state_changed_at(vm));
    if (d->exit_reason)
        json_object_set_string_member(o, "exit-reason", d->exit_reason);
    else
        json_object_set_null_member(o, "exit-reason");
    json_object_set_member(o, "config", mctl_json_from_variant(d->config));
    json_object_set_member(o, "stats", mctl_json_from_variant(d->stats));
    if (console) {
        JsonArray *lines = json_array_new();

        for (char **l = console; *l; l++)
            json_array_add_string_element(lines, *l);
        json_object_set_array_member(o, "console", lines);
    } else {
        json_object_set_null_member(o, "console");
    }
    return g_steal_pointer(&root);
}

int mctl_cmd_status(Mctl *ctl, int argc, char **argv)
{
    int lines = 10;
    const GOptionEntry entries[] = {
        JSON_ENTRY(ctl),
        {"lines", 'n', 0, G_OPTION_ARG_INT, &lines,
         N_("Show the last N lines of the console (default 10, 0 for none)"), N_("N")},
        {NULL},
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_auto(Details) details = {0};
    g_auto(GStrv) console = NULL;

    if (!mctl_parse(ctl, entries, _("NAME"),
                    _("Show a VM's state, configuration, statistics and "
                      "last console lines."),
                    &argc, &argv) ||
        !mctl_want_args(argc, 1, "status NAME"))
        return MCTL_EXIT_USAGE;
    if (lines < 0 || lines > 10000)
        return mctl_usage_error(_("--lines must be between 0 and 10000"));
    vm = mctl_vm_by_name(ctl, argv[0], &error);
    if (!vm)
        return mctl_fail(error, argv[0]);
    if (!fetch_details(vm, &details, &error)) {
        /* Another user's VM: its details need polkit's read-others; the rest is public. */
        if (mctl_exit_code(error) != MCTL_EXIT_NOT_AUTHORIZED)
            return mctl_fail(error, argv[0]);
        g_dbus_error_strip_remote_error(error);
        g_printerr(_("microvmctl: cannot read the VM's details: %s\n"), error->message);
        g_clear_error(&error);
        details_clear(&details);
    }
    if (lines > 0 && g_strcmp0(mvmd_vm_get_state(vm), MVMD_STATE_CREATED) == 0) {
        /* Never started: nothing was printed, and asking would only wait. */
        console = g_new0(char *, 1);
    } else if (lines > 0) {
        /* The console needs its own permission: without it, status shows the rest. */
        console = mctl_console_tail(ctl, vm, lines, &error);
        if (!console) {
            g_dbus_error_strip_remote_error(error);
            g_printerr(_("microvmctl: cannot read the console: %s\n"), error->message);
            g_clear_error(&error);
        }
    }
    if (ctl->json) {
        g_autoptr(JsonNode) root = status_json(vm, &details, console);

        mctl_print_json(root, TRUE);
    } else {
        print_status(vm, &details, console, lines);
    }
    return MCTL_EXIT_OK;
}

/* ---- info ------------------------------------------------------------------------------ */

int mctl_cmd_info(Mctl *ctl, int argc, char **argv)
{
    const GOptionEntry entries[] = {JSON_ENTRY(ctl), {NULL}};
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdManager) manager = NULL;
    const char *const *caps;
    g_autofree char *caps_text = NULL;

    if (!mctl_parse(ctl, entries, "", _("Show the daemon's version and capabilities."), &argc,
                    &argv) ||
        !mctl_want_args(argc, 0, "info"))
        return MCTL_EXIT_USAGE;
    manager = mctl_manager(ctl, &error);
    /* A proxy without a name owner has no properties: the daemon is not there. */
    if (manager && !mvmd_manager_get_version(manager))
        g_set_error(&error, MCTL_ERROR, MCTL_EXIT_NO_DAEMON, _("microvmd is not running"));
    if (error)
        return mctl_fail(error, NULL);
    caps = mvmd_manager_get_capabilities(manager);
    if (ctl->json) {
        g_autoptr(JsonBuilder) b = json_builder_new();
        g_autoptr(JsonNode) root = NULL;

        json_builder_begin_object(b);
        json_builder_set_member_name(b, "version");
        json_builder_add_string_value(b, mvmd_manager_get_version(manager));
        json_builder_set_member_name(b, "kvm-api-version");
        json_builder_add_int_value(b, mvmd_manager_get_kvm_api_version(manager));
        json_builder_set_member_name(b, "vm-count");
        json_builder_add_int_value(b, mvmd_manager_get_vm_count(manager));
        json_builder_set_member_name(b, "capabilities");
        json_builder_begin_array(b);
        for (gsize i = 0; caps && caps[i]; i++)
            json_builder_add_string_value(b, caps[i]);
        json_builder_end_array(b);
        json_builder_end_object(b);
        root = json_builder_get_root(b);
        mctl_print_json(root, TRUE);
        return MCTL_EXIT_OK;
    }
    caps_text = caps ? g_strjoinv(" ", (char **)caps) : g_strdup("");
    g_print("%-20s %s\n", _("Version:"), mvmd_manager_get_version(manager));
    g_print("%-20s %d\n", _("KVM API version:"), mvmd_manager_get_kvm_api_version(manager));
    g_print("%-20s %u\n", _("VMs:"), mvmd_manager_get_vm_count(manager));
    g_print("%-20s %s\n", _("Capabilities:"), caps_text);
    return MCTL_EXIT_OK;
}

/* ---- commands on one VM ---------------------------------------------------------------- */

static const struct {
    const char *command;
    const char *method;
    const char *summary;
    const char *progress; /* followed by the VM's name */
} verbs[] = {
    {"start", "Start", N_("Start a VM: build the machine from its configuration and boot it."),
     N_("Starting")},
    {"stop", "Stop", N_("Stop a running or paused VM at once, without asking the guest."),
     N_("Stopping")},
    {"reboot", "Reboot", N_("Reset a running or paused VM and boot it again from its kernel."),
     N_("Rebooting")},
    {"resume", "Resume", N_("Let a paused VM run again."), N_("Resuming")},
    {"delete", "Delete", N_("Delete a VM that is not running, with its stored definition."),
     N_("Deleting")},
};

int mctl_vm_call(Mctl *ctl, const char *name, const char *method, GVariant *args, GUnixFDList *fds,
                 int timeout_ms, const char *progress)
{
    g_autoptr(GVariant) owned_args = args ? g_variant_ref_sink(args) : NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVm) vm = mctl_vm_by_name(ctl, name, &error);
    g_autofree char *text = progress ? g_strdup_printf("%s %s", progress, name) : NULL;
    g_autoptr(GVariant) reply = NULL;

    if (!vm)
        return mctl_fail(error, name);
    reply = mctl_call(ctl, G_DBUS_PROXY(vm), method, owned_args, fds, timeout_ms, text, &error);
    if (!reply)
        return mctl_fail(error, name);
    return MCTL_EXIT_OK;
}

int mctl_cmd_verb(Mctl *ctl, int argc, char **argv)
{
    const char *command = argv[0];
    g_autofree char *usage = g_strconcat(command, " NAME", NULL);

    for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++) {
        if (!g_str_equal(verbs[i].command, command))
            continue;
        if (!mctl_parse(ctl, NULL, _("NAME"), _(verbs[i].summary), &argc, &argv) ||
            !mctl_want_args(argc, 1, usage))
            return MCTL_EXIT_USAGE;
        return mctl_vm_call(ctl, argv[0], verbs[i].method, NULL, NULL, LIFECYCLE_TIMEOUT_MS,
                            _(verbs[i].progress));
    }
    g_return_val_if_reached(MCTL_EXIT_FAILED);
}

int mctl_cmd_pause(Mctl *ctl, int argc, char **argv)
{
    gboolean freeze_clock = FALSE;
    const GOptionEntry entries[] = {
        {"freeze-clock", 0, 0, G_OPTION_ARG_NONE, &freeze_clock,
         N_("Keep the guest's clock still while it is paused"), NULL},
        {NULL},
    };
    g_auto(GVariantDict) options = G_VARIANT_DICT_INIT(NULL);

    if (!mctl_parse(ctl, entries, _("NAME"),
                    _("Pause a running VM; its memory and devices are kept."), &argc, &argv) ||
        !mctl_want_args(argc, 1, "pause NAME"))
        return MCTL_EXIT_USAGE;
    if (freeze_clock)
        g_variant_dict_insert(&options, "freeze-clock", "b", TRUE);
    return mctl_vm_call(ctl, argv[0], "Pause",
                        g_variant_new("(@a{sv})", g_variant_dict_end(&options)), NULL,
                        LIFECYCLE_TIMEOUT_MS, _("Pausing"));
}

int mctl_cmd_shutdown(Mctl *ctl, int argc, char **argv)
{
    int timeout = 0;
    gboolean force = FALSE;
    const GOptionEntry entries[] = {
        {"timeout", 't', 0, G_OPTION_ARG_INT, &timeout,
         N_("Give the guest SECONDS to shut down (default 60, at most 3600)"), N_("SECONDS")},
        {"force", 'f', 0, G_OPTION_ARG_NONE, &force,
         N_("Stop the VM when the guest has not shut down in time"), NULL},
        {NULL},
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autofree char *progress = NULL;
    int wait_sec;

    if (!mctl_parse(ctl, entries, _("NAME"),
                    _("Ask the guest to shut down (Ctrl-Alt-Del) and wait until the VM has "
                      "stopped."),
                    &argc, &argv) ||
        !mctl_want_args(argc, 1, "shutdown NAME"))
        return MCTL_EXIT_USAGE;
    if (timeout < 0 || timeout > SHUTDOWN_MAX_SEC)
        return mctl_usage_error(_("--timeout must be between 0 and %d"), SHUTDOWN_MAX_SEC);
    vm = mctl_vm_by_name(ctl, argv[0], &error);
    if (!vm)
        return mctl_fail(error, argv[0]);
    wait_sec = timeout ? timeout : SHUTDOWN_DEFAULT_SEC;
    progress = g_strdup_printf(_("Waiting up to %d s for %s to shut down"), wait_sec, argv[0]);
    reply = mctl_call(ctl, G_DBUS_PROXY(vm), "Shutdown", g_variant_new("(u)", (guint32)timeout),
                      NULL, wait_sec * 1000 + SHUTDOWN_SLACK_MS, progress, &error);
    if (!reply && force && mctl_exit_code(error) == MCTL_EXIT_TIMEOUT) {
        g_printerr(_("microvmctl: %s did not shut down in time; stopping it\n"), argv[0]);
        return mctl_vm_call(ctl, argv[0], "Stop", NULL, NULL, LIFECYCLE_TIMEOUT_MS, _("Stopping"));
    }
    if (!reply)
        return mctl_fail(error, argv[0]);
    return MCTL_EXIT_OK;
}
