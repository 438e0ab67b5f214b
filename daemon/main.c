/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* microvmd: runs KVM microVMs and publishes them as org.microvmd.MicroVM1 on D-Bus. */
#include <errno.h>
#include <locale.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <glib.h>

#include "microvm.h"

#include "auth.h"
#include "cpu-templates.h"
#include "daemon.h"
#include "errors.h"
#include "log.h"
#include "machine-leader.h"
#include "quota.h"

#define DEFAULT_STATE_DIR        "/var/lib/microvmd"
#define DEFAULT_RUNTIME_DIR      "/run/microvmd"
#define DEFAULT_SHUTDOWN_TIMEOUT 10

/*
 * Each running VM holds descriptors (KVM's VM and vCPU fds, guest memory, eventfds, console):
 * under the usual soft limit of 1024 a few hundred guests would use up what the whole daemon
 * shares. The hard limit is what the administrator allows (LimitNOFILE= in the unit). Nothing
 * in microvmd uses select(), so descriptors past FD_SETSIZE are safe; its only children (the
 * machined leaders) never exec, so no other program inherits the higher limit.
 */
static void raise_nofile_limit(void)
{
    struct rlimit limit;

    if (getrlimit(RLIMIT_NOFILE, &limit) < 0) {
        g_warning("cannot read the descriptor limit: %s", g_strerror(errno));
        return;
    }
    if (limit.rlim_cur == limit.rlim_max) {
        g_debug("descriptor limit (RLIMIT_NOFILE): %llu", (unsigned long long)limit.rlim_cur);
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) < 0) {
        g_warning("cannot raise the descriptor limit to %llu: %s",
                  (unsigned long long)limit.rlim_max, g_strerror(errno));
        return;
    }
    g_debug("descriptor limit (RLIMIT_NOFILE) raised to %llu", (unsigned long long)limit.rlim_cur);
}

static char *dir_from_env(const char *var, const char *fallback)
{
    const char *value = g_getenv(var);
    g_autofree char *first = NULL;
    const char *colon;

    if (!value || !*value)
        return g_strdup(fallback);
    /* systemd passes a colon-separated list when several directories are configured. */
    colon = strchr(value, ':');
    first = colon ? g_strndup(value, colon - value) : g_strdup(value);
    return g_steal_pointer(&first);
}

/* $STATE_DIRECTORY / $RUNTIME_DIRECTORY (systemd), else the user's own for --session, else
 * the system's. */
static char *default_dir(const char *var, gboolean session)
{
    gboolean state = g_str_equal(var, "STATE_DIRECTORY");

    if (g_getenv(var) && *g_getenv(var))
        return dir_from_env(var, NULL);
    if (session)
        return g_build_filename(state ? g_get_user_state_dir() : g_get_user_runtime_dir(),
                                "microvmd", NULL);
    return g_strdup(state ? DEFAULT_STATE_DIR : DEFAULT_RUNTIME_DIR);
}

/* --sandbox, else the environment's MVM_SANDBOX (lib reads it), else enforce. */
static gboolean set_sandbox_mode(const char *text)
{
    MvmSandboxMode mode;

    if (text == NULL)
        return TRUE;
    if (!mvm_sandbox_mode_from_string(text, &mode)) {
        g_printerr("microvmd: --sandbox must be enforce, log or off, not %s\n", text);
        return FALSE;
    }
    mvm_sandbox_set_mode(mode);
    return TRUE;
}

/*
 * Before any thread but this one exists (lib/sandbox.c): calls no part of microvmd makes
 * (execve, ptrace, mount…) end the process from now on, on every thread, with or without the
 * unit's own filter.
 */
static gboolean lock_process(void)
{
    g_autoptr(GError) error = NULL;
    MvmSandboxMode mode = mvm_sandbox_get_mode();

    if (!mvm_sandbox_lock_process(&error)) {
        g_printerr("microvmd: %s (--sandbox=off runs without)\n", error->message);
        return FALSE;
    }
    if (mode == MVM_SANDBOX_MODE_ENFORCE)
        g_debug("sandbox: enforced; Landlock ABI %d", mvm_sandbox_landlock_abi());
    else
        g_message("sandbox: %s: vCPU and I/O threads are %s", mvm_sandbox_mode_to_string(mode),
                  mode == MVM_SANDBOX_MODE_LOG
                      ? "audited: their calls outside the filters are logged, not refused"
                      : "not confined");
    return TRUE;
}

/*
 * systemd-machined's stand-ins for the VMs (machine-leader.h): forked now, while this is the
 * only thread and no guest is mapped. Without it VMs are not registered with machined.
 */
static void start_leader_factory(void)
{
    g_autoptr(GError) error = NULL;

    if (!mvmd_leader_factory_start(&error))
        g_warning("%s: VMs will not be registered with systemd-machined", error->message);
}

/*
 * --cpu-template-dir, else the config file's, else the built-in default. Absolute: the daemon
 * opens it afresh for every template it loads, whatever the working directory is by then.
 */
static gboolean choose_cpu_template_dir(MvmdDaemonOptions *options, char **dir,
                                        const char *config_path, gboolean must_exist)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *given = g_steal_pointer(dir);

    options->cpu_template_dir_fixed = given != NULL;
    /* Its path is quoted in D-Bus replies, which must be UTF-8. */
    if (given && !g_utf8_validate(given, -1, NULL)) {
        g_printerr("microvmd: --cpu-template-dir: the path must be UTF-8\n");
        return FALSE;
    }
    *dir = given ? g_canonicalize_filename(given, NULL)
                 : mvmd_cpu_template_dir_from_config(config_path, must_exist, &error);
    if (!*dir) {
        g_printerr("microvmd: %s\n", error->message);
        return FALSE;
    }
    options->cpu_template_dir = *dir;
    return TRUE;
}

int main(int argc, char **argv)
{
    gboolean system = FALSE, session = FALSE, replace = FALSE, verbose = FALSE;
    gboolean version = FALSE, fd_store = FALSE;
    g_autofree char *address = NULL;
    g_autofree char *state_dir = NULL;
    g_autofree char *runtime_dir = NULL;
    int shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
    g_autofree char *socket_group = NULL;
    g_autofree char *config = NULL;
    g_autofree char *config_path = NULL;
    g_autofree char *sandbox = NULL;
    g_autofree char *cpu_template_dir = NULL;
    const GOptionEntry entries[] = {
        {"system", 0, 0, G_OPTION_ARG_NONE, &system, "Use the system bus (default)", NULL},
        {"session", 0, 0, G_OPTION_ARG_NONE, &session, "Use the session bus", NULL},
        {"address", 0, 0, G_OPTION_ARG_STRING, &address, "Connect to the message bus at ADDR",
         "ADDR"},
        {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir,
         "VM definitions (default $STATE_DIRECTORY, else " DEFAULT_STATE_DIR
         " or with --session $XDG_STATE_HOME/microvmd)",
         "DIR"},
        {"runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &runtime_dir,
         "Console logs (default $RUNTIME_DIRECTORY, else " DEFAULT_RUNTIME_DIR
         " or with --session $XDG_RUNTIME_DIR/microvmd)",
         "DIR"},
        {"replace", 0, 0, G_OPTION_ARG_NONE, &replace,
         "Replace a running microvmd (and exit when replaced)", NULL},
        {"shutdown-timeout", 0, 0, G_OPTION_ARG_INT, &shutdown_timeout,
         "Seconds the guests get to shut down when microvmd stops (default 10)", "SEC"},
        {"socket-group", 0, 0, G_OPTION_ARG_STRING, &socket_group,
         "Members of GROUP may use the socket-activated socket too (default: root only)", "GROUP"},
        {"config", 0, 0, G_OPTION_ARG_FILENAME, &config,
         "Read the quotas and the CPU template directory from FILE (default " MVMD_CONFIG_FILE
         ", if it exists)",
         "FILE"},
        {"cpu-template-dir", 0, 0, G_OPTION_ARG_FILENAME, &cpu_template_dir,
         "Custom CPU templates, NAME.json (default: [CPUTemplates] Directory= of the config "
         "file, else " MVMD_CPU_TEMPLATE_DIR ")",
         "DIR"},
        {"fd-store", 0, 0, G_OPTION_ARG_NONE, &fd_store,
         "systemd keeps a file descriptor store for us (FileDescriptorStoreMax=; systemd 254 "
         "and later say so in $FDSTORE): a restart hands the running VMs to the next microvmd",
         NULL},
        {"sandbox", 0, 0, G_OPTION_ARG_STRING, &sandbox,
         "Sandbox of vCPU and I/O threads: enforce (default), log or off", "MODE"},
        {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log debug messages", NULL},
        {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL},
        {NULL},
    };
    g_autoptr(GOptionContext) context = g_option_context_new("- run KVM microVMs on D-Bus");
    g_autoptr(GError) error = NULL;
    MvmdDaemonOptions options = {0};

    setlocale(LC_ALL, "");
    g_option_context_add_main_entries(context, entries, NULL);
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        g_printerr("microvmd: %s\n", error->message);
        return 2;
    }
    if (version) {
        g_print("microvmd %s\n", MVMD_VERSION);
        return 0;
    }
    if ((system + session + (address != NULL)) > 1) {
        g_printerr("microvmd: --system, --session and --address exclude each other\n");
        return 2;
    }
    if (shutdown_timeout < 0 || shutdown_timeout > 3600) {
        g_printerr("microvmd: --shutdown-timeout must be 0..3600\n");
        return 2;
    }
    if (!mvmd_auth_set_socket_group(socket_group, &error)) {
        g_printerr("microvmd: --socket-group: %s\n", error->message);
        return 2;
    }
    if (!set_sandbox_mode(sandbox))
        return 2;
    /* Absolute: Reload reads it again, whatever the working directory is by then. */
    config_path = g_canonicalize_filename(config ? config : MVMD_CONFIG_FILE, NULL);
    options.quota = mvmd_quota_new();
    if (!mvmd_quota_load(options.quota, config_path, config != NULL, &error)) {
        g_printerr("microvmd: %s\n", error->message);
        mvmd_quota_unref(options.quota);
        return 2;
    }
    options.config_path = config_path;
    options.config_required = config != NULL;
    if (!choose_cpu_template_dir(&options, &cpu_template_dir, config_path, config != NULL)) {
        mvmd_quota_unref(options.quota);
        return 2;
    }
    mvmd_log_init(verbose);
    if (!lock_process())
        return 1;
    start_leader_factory();
    raise_nofile_limit();
    /* Registers the error names before any reply is sent. */
    (void)MVMD_ERROR;

    options.bus = address ? MVMD_BUS_ADDRESS : session ? MVMD_BUS_SESSION : MVMD_BUS_SYSTEM;
    options.address = address;
    options.state_dir = state_dir ? g_strdup(state_dir) : default_dir("STATE_DIRECTORY", session);
    options.runtime_dir =
        runtime_dir ? g_strdup(runtime_dir) : default_dir("RUNTIME_DIRECTORY", session);
    options.replace = replace;
    options.shutdown_timeout_sec = shutdown_timeout;
    options.fd_store = fd_store;
    {
        int status = mvmd_daemon_run(&options);

        g_free(options.state_dir);
        g_free(options.runtime_dir);
        return status;
    }
}
