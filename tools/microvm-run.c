/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvm-run: boot one microVM in the foreground, serial console on
 * stdin/stdout, exit status from the guest's fate. The standalone runner on
 * top of libmicrovm; what benchmarks set against qemu-system-x86_64 -M microvm.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "microvm.h"

/* Exit statuses beyond the guest's own debug exit code. */
enum {
    EXIT_GUEST_OK = 0, /* powered off, reset or halted */
    EXIT_USAGE = 64,   /* EX_USAGE */
    EXIT_START_FAILED = 70,
    EXIT_CRASHED = 71,
    EXIT_TIMEOUT = 124, /* like timeout(1) */
    EXIT_INTERRUPTED = 130,
};

typedef struct {
    GMainLoop *loop;
    MvmVm *vm;
    gboolean timed_out;
    gboolean interrupted;
    gint64 start_us;
    gboolean print_markers;
} Runner;

static void write_all(int fd, const guint8 *data, gsize len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* stdout gone: the guest keeps running, its output is dropped */
        data += n;
        len -= (gsize)n;
    }
}

static void on_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data)
{
    write_all(STDOUT_FILENO, data, len);
}

static void on_marker(MvmVm *vm, guint32 marker, gint64 monotonic_us, gpointer user_data)
{
    Runner *runner = user_data;

    if (runner->print_markers)
        g_printerr("microvm-run: marker %u at %.3f ms after start\n", marker,
                   (monotonic_us - runner->start_us) / 1000.0);
}

static gboolean quit_loop(gpointer user_data)
{
    g_main_loop_quit(user_data);
    return G_SOURCE_REMOVE;
}

/* Called on a vCPU thread: hand the news to the main loop and return at once. */
static void on_state(MvmVm *vm, MvmVmState state, gpointer user_data)
{
    Runner *runner = user_data;

    if (state == MVM_VM_STATE_STOPPED || state == MVM_VM_STATE_CRASHED)
        g_main_context_invoke(NULL, quit_loop, runner->loop);
}

static gboolean on_timeout(gpointer user_data)
{
    Runner *runner = user_data;

    runner->timed_out = TRUE;
    g_main_loop_quit(runner->loop);
    return G_SOURCE_REMOVE;
}

static gboolean on_signal(gpointer user_data)
{
    Runner *runner = user_data;

    runner->interrupted = TRUE;
    g_main_loop_quit(runner->loop);
    return G_SOURCE_CONTINUE;
}

static gboolean on_stdin(gint fd, GIOCondition condition, gpointer user_data)
{
    Runner *runner = user_data;
    guint8 buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));

    if (n <= 0)
        return G_SOURCE_REMOVE; /* end of input: the guest keeps running */
    mvm_vm_console_write(runner->vm, buf, (gsize)n);
    return G_SOURCE_CONTINUE;
}

static int exit_status(Runner *runner)
{
    if (runner->interrupted)
        return EXIT_INTERRUPTED;
    if (runner->timed_out)
        return EXIT_TIMEOUT;

    g_autofree char *reason = mvm_vm_dup_exit_reason(runner->vm);
    MvmExitKind kind = mvm_vm_get_exit_kind(runner->vm);
    g_printerr("microvm-run: %s: %s (%.1f ms)\n",
               mvm_vm_state_to_string(mvm_vm_get_state(runner->vm)), reason,
               (g_get_monotonic_time() - runner->start_us) / 1000.0);
    if (kind == MVM_EXIT_DEBUG_EXIT)
        return (int)MIN(mvm_vm_get_exit_code(runner->vm), 255u);
    return mvm_vm_get_state(runner->vm) == MVM_VM_STATE_CRASHED ? EXIT_CRASHED : EXIT_GUEST_OK;
}

static int run(MvmVmConfig *config, guint timeout_s, gboolean print_markers)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
    Runner runner = {
        .loop = loop, .start_us = g_get_monotonic_time(), .print_markers = print_markers};
    g_autoptr(MvmVm) vm = mvm_vm_new(config, &error);

    if (vm == NULL) {
        g_printerr("microvm-run: %s\n", error->message);
        return EXIT_START_FAILED;
    }
    runner.vm = vm;
    mvm_vm_set_console_callback(vm, on_console, &runner);
    mvm_vm_set_state_callback(vm, on_state, &runner);
    mvm_vm_set_marker_callback(vm, on_marker, &runner);
    g_unix_signal_add(SIGINT, on_signal, &runner);
    g_unix_signal_add(SIGTERM, on_signal, &runner);
    g_unix_fd_add(STDIN_FILENO, G_IO_IN | G_IO_HUP, on_stdin, &runner);
    if (timeout_s > 0)
        g_timeout_add_seconds(timeout_s, on_timeout, &runner);

    if (!mvm_vm_start(vm, &error)) {
        g_printerr("microvm-run: %s\n", error->message);
        return EXIT_START_FAILED;
    }
    g_main_loop_run(loop);
    int status = exit_status(&runner);
    mvm_vm_stop(vm, NULL);
    return status;
}

/* A built-in template's name, or a JSON file (named after its base name, less ".json"). */
static MvmCpuTemplate *load_cpu_template(const char *arg, GError **error)
{
    if (g_strv_contains(mvm_cpu_template_builtin_names(), arg))
        return mvm_cpu_template_new_builtin(arg, error);
    g_autofree char *base = g_path_get_basename(arg);
    if (g_str_has_suffix(base, ".json"))
        base[strlen(base) - 5] = '\0';
    int fd = open(arg, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "cannot open %s: %s", arg,
                    g_strerror(errno));
        return NULL;
    }
    MvmCpuTemplate *tmpl = mvm_cpu_template_new_from_fd(base, fd, error);
    close(fd);
    return tmpl;
}

int main(int argc, char **argv)
{
    g_autofree char *kernel = NULL, *initrd = NULL, *cmdline = NULL, *cpu_template = NULL;
    gint vcpus = 1, timeout_s = 0;
    gint64 memory = 128;
    gboolean debug_exit = FALSE, pvh = FALSE, markers = FALSE;
    const GOptionEntry entries[] = {
        {"kernel", 'k', 0, G_OPTION_ARG_FILENAME, &kernel, "Kernel: ELF vmlinux or bzImage",
         "FILE"},
        {"initrd", 'i', 0, G_OPTION_ARG_FILENAME, &initrd, "Initial ramdisk", "FILE"},
        {"cmdline", 'c', 0, G_OPTION_ARG_STRING, &cmdline, "Kernel command line", "TEXT"},
        {"vcpus", 'n', 0, G_OPTION_ARG_INT, &vcpus, "Number of vCPUs (default 1)", "N"},
        {"memory", 'm', 0, G_OPTION_ARG_INT64, &memory, "Guest RAM in MiB (default 128)", "MIB"},
        {"timeout", 't', 0, G_OPTION_ARG_INT, &timeout_s,
         "Stop the guest after SEC seconds (exit 124)", "SEC"},
        {"pvh", 0, 0, G_OPTION_ARG_NONE, &pvh, "Enter an ELF kernel through its PVH note", NULL},
        {"cpu-template", 0, 0, G_OPTION_ARG_FILENAME, &cpu_template,
         "CPU template: host, x86-64-v2, x86-64-v3 or a JSON file", "NAME|FILE"},
        {"debug-exit", 0, 0, G_OPTION_ARG_NONE, &debug_exit,
         "Test guests: debug exit port and test device", NULL},
        {"markers", 0, 0, G_OPTION_ARG_NONE, &markers, "Print test device markers with their time",
         NULL},
        {NULL},
    };
    g_autoptr(GOptionContext) context = g_option_context_new("- run one microVM");
    g_autoptr(GError) error = NULL;

    setlocale(LC_ALL, "");
    g_option_context_add_main_entries(context, entries, NULL);
    g_option_context_set_description(
        context,
        "Exit status: 0 when the guest powered off, reset or halted; the guest's code when a test\n"
        "guest used the debug exit port; 70 when the VM could not start; 71 when it crashed;\n"
        "124 on --timeout; 130 on SIGINT/SIGTERM.\n");
    if (!g_option_context_parse(context, &argc, &argv, &error) || kernel == NULL || vcpus < 1 ||
        memory < 2) {
        g_printerr("microvm-run: %s\n", error != NULL
                                            ? error->message
                                            : "--kernel is required; --vcpus >= 1, --memory >= 2");
        return EXIT_USAGE;
    }

    g_autoptr(MvmVmConfig) config = mvm_vm_config_new();
    config->kernel_path = g_steal_pointer(&kernel);
    config->initrd_path = g_steal_pointer(&initrd);
    config->cmdline = g_steal_pointer(&cmdline);
    config->n_vcpus = (guint)vcpus;
    config->memory_mib = (guint64)memory;
    config->debug_exit = debug_exit;
    config->prefer_pvh = pvh;
    if (cpu_template != NULL &&
        (config->cpu_template = load_cpu_template(cpu_template, &error)) == NULL) {
        g_printerr("microvm-run: %s\n", error->message);
        return EXIT_USAGE;
    }
    return run(config, (guint)MAX(timeout_s, 0), markers);
}
