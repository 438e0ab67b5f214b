/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmctl events: follows the daemon's ObjectManager (InterfacesAdded/Removed) and every VM's
 * PropertiesChanged, one line per event, as text or as JSON Lines. It starts with one `present`
 * event per VM that exists already, so a consumer sees the whole picture with no race between
 * listing and following.
 */
#include <stdio.h>
#include <unistd.h>

#include <glib-unix.h>

#include "microvmctl.h"

typedef struct {
    Mctl *ctl;
    GMainLoop *loop;
    int status;
} Events;

static char *vm_name(GDBusObject *object)
{
    MvmdVm *vm = mvmd_object_peek_vm(MVMD_OBJECT(object));
    const char *path = g_dbus_object_get_object_path(object);

    if (vm && mvmd_vm_get_name(vm))
        return g_strdup(mvmd_vm_get_name(vm));
    /* Gone before its properties arrived: the name is in the path, escaped. */
    if (g_str_has_prefix(path, MVMD_DBUS_VM_PATH_PREFIX)) {
        char *name = (char *)g_dbus_unescape_object_path(path + strlen(MVMD_DBUS_VM_PATH_PREFIX));

        if (name && g_utf8_validate(name, -1, NULL))
            return name;
        g_free(name);
    }
    return g_strdup(path);
}

static char *value_text(GVariant *value)
{
    const char *s;

    if (!g_variant_is_of_type(value, G_VARIANT_TYPE_STRING))
        return g_variant_print(value, FALSE);
    /* Plain words stay plain; anything with blanks or quotes is quoted as GVariant text. */
    s = g_variant_get_string(value, NULL);
    if (*s && !strpbrk(s, " \t\n'\"\\"))
        return g_strdup(s);
    return g_variant_print(value, FALSE);
}

/* All cached properties of the VM, as an a{sv}. */
static GVariant *vm_properties(GDBusObject *object)
{
    MvmdVm *vm = mvmd_object_peek_vm(MVMD_OBJECT(object));
    GVariantDict dict;
    g_auto(GStrv) names = vm ? g_dbus_proxy_get_cached_property_names(G_DBUS_PROXY(vm)) : NULL;

    g_variant_dict_init(&dict, NULL);
    for (char **n = names; n && *n; n++) {
        g_autoptr(GVariant) value = g_dbus_proxy_get_cached_property(G_DBUS_PROXY(vm), *n);

        if (value)
            g_variant_dict_insert_value(&dict, *n, value);
    }
    return g_variant_dict_end(&dict);
}

/* One event: "EVENT NAME Key=value…", or a JSON object on one line. @properties: a{sv}. */
static void emit(Events *ev, const char *event, GDBusObject *object, GVariant *properties)
{
    g_autofree char *name = vm_name(object);
    g_autoptr(GVariant) props = properties ? g_variant_ref_sink(properties) : NULL;

    if (ev->ctl->json) {
        g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "event", event);
        json_object_set_string_member(o, "name", name);
        json_object_set_string_member(o, "path", g_dbus_object_get_object_path(object));
        if (props)
            json_object_set_member(o, "properties", mctl_json_from_variant(props));
        json_node_take_object(root, o);
        mctl_print_json(root, FALSE);
        return;
    }
    {
        g_autoptr(GString) line = g_string_new(NULL);
        GVariantIter iter;
        const char *key;
        GVariant *value;

        g_string_append_printf(line, "%s %s", event, name);
        if (props) {
            g_variant_iter_init(&iter, props);
            while (g_variant_iter_next(&iter, "{&sv}", &key, &value)) {
                g_autofree char *text = value_text(value);

                g_string_append_printf(line, " %s=%s", key, text);
                g_variant_unref(value);
            }
        }
        g_print("%s\n", line->str);
        fflush(stdout);
    }
}

static void on_object_added(GDBusObjectManager *manager, GDBusObject *object, Events *ev)
{
    emit(ev, "added", object, vm_properties(object));
}

static void on_object_removed(GDBusObjectManager *manager, GDBusObject *object, Events *ev)
{
    emit(ev, "removed", object, NULL);
}

static void on_properties_changed(GDBusObjectManagerClient *manager, GDBusObjectProxy *object,
                                  GDBusProxy *interface, GVariant *changed,
                                  const char *const *invalidated, Events *ev)
{
    if (!MVMD_IS_VM(interface))
        return;
    emit(ev, "changed", G_DBUS_OBJECT(object), g_variant_ref(changed));
}

/* The daemon left the bus (it may come back: the client then reports its VMs as added). */
static void on_name_owner(GObject *manager, GParamSpec *pspec, Events *ev)
{
    g_autofree char *owner =
        g_dbus_object_manager_client_get_name_owner(G_DBUS_OBJECT_MANAGER_CLIENT(manager));

    if (ev->ctl->json)
        g_print("{\"event\":\"%s\"}\n", owner ? "daemon-started" : "daemon-stopped");
    else
        g_print("%s\n", owner ? "daemon-started" : "daemon-stopped");
    fflush(stdout);
}

/* On a peer-to-peer socket there is no coming back. */
static void on_closed(GDBusConnection *connection, gboolean vanished, GError *error, Events *ev)
{
    g_printerr("microvmctl: %s\n", _("The connection to microvmd was closed"));
    ev->status = MCTL_EXIT_NO_DAEMON;
    g_main_loop_quit(ev->loop);
}

static gboolean on_signal(gpointer data)
{
    g_main_loop_quit(((Events *)data)->loop);
    return G_SOURCE_CONTINUE;
}

int mctl_cmd_events(Mctl *ctl, int argc, char **argv)
{
    const GOptionEntry entries[] = {
        {"json", 'j', 0, G_OPTION_ARG_NONE, &ctl->json, N_("Print one JSON object per line"), NULL},
        {NULL},
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(GDBusObjectManager) manager = NULL;
    g_autoptr(GMainLoop) loop = NULL;
    Events ev = {ctl, NULL, MCTL_EXIT_OK};
    GList *objects;

    if (!mctl_parse(ctl, entries, "",
                    _("Follow VMs being added, changed and removed until interrupted. Each VM "
                      "that exists already is reported first as “present”."),
                    &argc, &argv) ||
        !mctl_want_args(argc, 0, "events"))
        return MCTL_EXIT_USAGE;
    manager = mctl_object_manager(ctl, &error);
    if (!manager)
        return mctl_fail(error, NULL);
    loop = g_main_loop_new(NULL, FALSE);
    ev.loop = loop;
    objects = g_dbus_object_manager_get_objects(manager);
    for (GList *l = objects; l; l = l->next)
        emit(&ev, "present", l->data, vm_properties(l->data));
    g_list_free_full(objects, g_object_unref);
    g_signal_connect(manager, "object-added", G_CALLBACK(on_object_added), &ev);
    g_signal_connect(manager, "object-removed", G_CALLBACK(on_object_removed), &ev);
    g_signal_connect(manager, "interface-proxy-properties-changed",
                     G_CALLBACK(on_properties_changed), &ev);
    g_signal_connect(manager, "notify::name-owner", G_CALLBACK(on_name_owner), &ev);
    g_signal_connect(ctl->connection, "closed", G_CALLBACK(on_closed), &ev);
    g_unix_signal_add(SIGINT, on_signal, &ev);
    g_unix_signal_add(SIGTERM, on_signal, &ev);
    g_main_loop_run(loop);
    g_signal_handlers_disconnect_by_data(manager, &ev);
    g_signal_handlers_disconnect_by_data(ctl->connection, &ev);
    return ev.status;
}
