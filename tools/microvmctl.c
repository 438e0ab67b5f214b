/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmctl: controls microvmd from the command line, like machinectl or virsh. The daemon is
 * on the system bus by default; --session, --address and --socket (peer-to-peer) choose another.
 * This file holds main(): translations, the options every command takes and the command table.
 */
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "microvmctl.h"

typedef struct {
    const char *name;
    MctlCommandFunc func;
    const char *help;
} MctlCommand;

static const MctlCommand commands[] = {
    {"list", mctl_cmd_list, N_("List the VMs")},
    {"status", mctl_cmd_status, N_("Show a VM's configuration, statistics and console")},
    {"stats", mctl_cmd_stats, N_("Show VMs' figures: CPU, disk and network; for collectors too")},
    {"info", mctl_cmd_info, N_("Show the daemon's version and capabilities")},
    {"create", mctl_cmd_create, N_("Define a new VM")},
    {"start", mctl_cmd_verb, N_("Start a VM")},
    {"stop", mctl_cmd_verb, N_("Stop a VM at once")},
    {"shutdown", mctl_cmd_shutdown, N_("Ask a VM's guest to shut down, and wait")},
    {"reboot", mctl_cmd_verb, N_("Reset a VM and boot it again")},
    {"pause", mctl_cmd_pause, N_("Pause a running VM")},
    {"resume", mctl_cmd_verb, N_("Resume a paused VM")},
    {"delete", mctl_cmd_verb, N_("Delete a VM that is not running")},
    {"set", mctl_cmd_set, N_("Change a VM's resources (disk and network rate limits), live")},
    {"snapshot", mctl_cmd_snapshot, N_("Save a VM's state into a directory")},
    {"restore", mctl_cmd_restore, N_("Create a VM from a snapshot directory")},
    {"working-set", mctl_cmd_working_set,
     N_("Save the pages a lazily restored VM read, for the next restore to read first")},
    {"cpu", mctl_cmd_cpu, N_("Show the CPU a VM's guest is given: CPUID, MSRs, TSC")},
    {"console", mctl_cmd_console, N_("Attach to a VM's serial console")},
    {"events", mctl_cmd_events, N_("Follow VMs being added, changed and removed")},
};

/* The macro makes the name a string: clang-format must not space its dashes. */
/* clang-format off */
G_DEFINE_QUARK(microvmctl-error-quark, mctl_error)
/* clang-format on */

/* The options every command accepts, before or after the command name. */
static GOptionEntry *common_entries(Mctl *ctl)
{
    const GOptionEntry entries[] = {
        {"system", 0, 0, G_OPTION_ARG_NONE, &ctl->system, N_("Connect to the system bus (default)"),
         NULL},
        {"session", 0, 0, G_OPTION_ARG_NONE, &ctl->session, N_("Connect to the session bus"), NULL},
        {"address", 0, 0, G_OPTION_ARG_STRING, &ctl->address,
         N_("Connect to the message bus at ADDRESS"), N_("ADDRESS")},
        {"socket", 0, 0, G_OPTION_ARG_FILENAME, &ctl->socket_path,
         N_("Connect to microvmd's own socket at PATH (no bus)"), N_("PATH")},
        {NULL},
    };

    return g_memdup2(entries, sizeof(entries));
}

static char *commands_description(void)
{
    GString *text = g_string_new(_("Commands:"));

    g_string_append_c(text, '\n');
    for (gsize i = 0; i < G_N_ELEMENTS(commands); i++)
        g_string_append_printf(text, "  %-11s %s\n", commands[i].name, _(commands[i].help));
    g_string_append_printf(text, "\n%s",
                           _("Run “microvmctl COMMAND --help” for a command's options."));
    return g_string_free(text, FALSE);
}

static GOptionContext *new_context(Mctl *ctl, const char *params, const char *summary,
                                   const GOptionEntry *entries)
{
    GOptionContext *context = g_option_context_new(params);
    g_autofree GOptionEntry *common = common_entries(ctl);

    g_option_context_set_translation_domain(context, GETTEXT_PACKAGE);
    if (summary)
        g_option_context_set_summary(context, summary);
    if (entries)
        g_option_context_add_main_entries(context, entries, GETTEXT_PACKAGE);
    g_option_context_add_main_entries(context, common, GETTEXT_PACKAGE);
    return context;
}

static gboolean check_connection_options(Mctl *ctl, GError **error)
{
    guint n = !!ctl->system + !!ctl->session + !!ctl->address + !!ctl->socket_path;

    if (n > 1) {
        g_set_error_literal(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                            _("Give at most one of --system, --session, --address and --socket"));
        return FALSE;
    }
    return TRUE;
}

int mctl_usage_error(const char *format, ...)
{
    va_list args;
    g_autofree char *message = NULL;

    va_start(args, format);
    message = g_strdup_vprintf(format, args);
    va_end(args);
    g_printerr("microvmctl: %s\n", message);
    g_printerr("%s\n", _("Run “microvmctl --help” for usage."));
    return MCTL_EXIT_USAGE;
}

gboolean mctl_parse(Mctl *ctl, const GOptionEntry *entries, const char *params, const char *summary,
                    int *argc, char ***argv)
{
    g_autofree char *full_params = g_strdup_printf("%s %s", (*argv)[0], params ? params : "");
    g_autoptr(GOptionContext) context = new_context(ctl, full_params, summary, entries);
    g_autoptr(GError) error = NULL;
    /* GOption overwrites a string without freeing it: a value given after the command
     * replaces the one given before it. */
    g_autofree char *address = g_steal_pointer(&ctl->address);
    g_autofree char *socket_path = g_steal_pointer(&ctl->socket_path);

    if (!g_option_context_parse(context, argc, argv, &error)) {
        mctl_usage_error("%s", error->message);
        return FALSE;
    }
    if (!ctl->address)
        ctl->address = g_steal_pointer(&address);
    if (!ctl->socket_path)
        ctl->socket_path = g_steal_pointer(&socket_path);
    if (!check_connection_options(ctl, &error)) {
        mctl_usage_error("%s", error->message);
        return FALSE;
    }
    /* Drop the program name GOption kept, so argv[0] is the first positional argument. */
    (*argc)--;
    (*argv)++;
    return TRUE;
}

gboolean mctl_want_args(int argc, int n, const char *usage)
{
    if (argc == n)
        return TRUE;
    mctl_usage_error(
        argc < n ? _("Missing arguments; usage: %s") : _("Too many arguments; usage: %s"), usage);
    return FALSE;
}

static const MctlCommand *find_command(const char *name)
{
    for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (g_str_equal(commands[i].name, name))
            return &commands[i];
    }
    return NULL;
}

/* Tests run uninstalled: MICROVMCTL_LOCALEDIR points at the build tree's catalogs. */
static void setup_i18n(void)
{
    const char *dir = g_getenv("MICROVMCTL_LOCALEDIR");

    setlocale(LC_ALL, "");
    bindtextdomain(GETTEXT_PACKAGE, dir && *dir ? dir : LOCALEDIR);
    bind_textdomain_codeset(GETTEXT_PACKAGE, "UTF-8");
    textdomain(GETTEXT_PACKAGE);
}

static void mctl_clear(Mctl *ctl)
{
    g_clear_object(&ctl->connection);
    g_clear_pointer(&ctl->address, g_free);
    g_clear_pointer(&ctl->socket_path, g_free);
}

/* Parses the options before the command and runs the command. */
static int run(Mctl *ctl, int argc, char **argv)
{
    gboolean version = FALSE;
    const GOptionEntry global_entries[] = {
        {"version", 0, 0, G_OPTION_ARG_NONE, &version, N_("Print the version and exit"), NULL},
        {NULL},
    };
    g_autoptr(GOptionContext) context = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *description = NULL;
    const MctlCommand *command;

    context = new_context(ctl, _("COMMAND [ARGUMENTS…]"),
                          _("Control the KVM microVMs of microvmd."), global_entries);
    description = commands_description();
    g_option_context_set_description(context, description);
    /* Options up to the command are ours; the rest belong to the command. */
    g_option_context_set_strict_posix(context, TRUE);
    if (!g_option_context_parse(context, &argc, &argv, &error) ||
        !check_connection_options(ctl, &error))
        return mctl_usage_error("%s", error->message);
    if (version) {
        g_print("microvmctl %s\n", MVMD_VERSION);
        return MCTL_EXIT_OK;
    }
    if (argc < 2)
        return mctl_usage_error(_("No command given"));
    if (g_str_equal(argv[1], "help")) {
        g_autofree char *help = g_option_context_get_help(context, TRUE, NULL);

        g_print("%s", help);
        return MCTL_EXIT_OK;
    }
    command = find_command(argv[1]);
    if (!command)
        return mctl_usage_error(_("Unknown command “%s”"), argv[1]);
    ctl->show_progress = isatty(STDERR_FILENO);
    return command->func(ctl, argc - 1, argv + 1);
}

int main(int argc, char **argv)
{
    Mctl ctl = {0};
    int status;

    setup_i18n();
    status = run(&ctl, argc, argv);
    mctl_clear(&ctl);
    return status;
}
