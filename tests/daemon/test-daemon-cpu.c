/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CPU templates through microvmd (issue 21) on a private bus: the config key `cpu-template`
 * (built-in names, the administrator's NAME.json in --cpu-template-dir, everything a caller or
 * a file can get wrong), its persistence, and VM.GetCPUConfig() on real guests. The first part
 * needs no KVM; the tests that run guests skip without a usable /dev/kvm or the test guest.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "harness.h"

#define ERR "org.microvmd.MicroVM1.Error."

/* CPUID.(EAX=7,ECX=0):EBX bit 5 is AVX2; CPUID.1:ECX bit 20 SSE4.2 (Intel SDM vol. 2A, CPUID). */
#define LEAF7_EBX_AVX2  (1u << 5)
#define LEAF1_ECX_SSE42 (1u << 20)

/* A custom template that takes SSE4.2 away: visible on any x86-64 host that has it. */
#define NO_SSE42_JSON                                                                              \
    "{ \"description\": \"no SSE4.2\",\n"                                                          \
    "  \"cpuid\": [ { \"leaf\": \"0x1\", \"register\": \"ecx\", \"clear\": \"0x00100000\" } ] }\n"

static const char *testguest;
static char *kvm_unusable;

typedef struct {
    MvmdTestBus *bus;
    MvmdManager *manager;
    char *template_dir;
} Fixture;

static void start_daemon(Fixture *f)
{
    g_autofree char *dir_arg = g_strconcat("--cpu-template-dir=", f->template_dir, NULL);
    const char *const args[] = {"--shutdown-timeout=2", dir_arg, NULL};

    mvmd_test_bus_start_daemon(f->bus, args);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
}

static void stop_daemon(Fixture *f)
{
    g_clear_object(&f->manager);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    f->bus = mvmd_test_bus_new();
    f->template_dir = g_build_filename(f->bus->tmpdir, "cpu-templates", NULL);
    g_assert_cmpint(g_mkdir(f->template_dir, 0755), ==, 0);
    start_daemon(f);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    if (f->bus->daemon_pid > 0)
        stop_daemon(f);
    g_clear_object(&f->manager);
    mvmd_test_bus_free(f->bus);
    g_free(f->template_dir);
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void write_template(Fixture *f, const char *file, const char *json)
{
    g_autofree char *path = g_build_filename(f->template_dir, file, NULL);
    g_autoptr(GError) error = NULL;

    g_file_set_contents(path, json, -1, &error);
    g_assert_no_error(error);
}

static char *create_vm(Fixture *f, const char *name, const char *text, GError **error)
{
    char *path = NULL;

    mvmd_manager_call_create_vm_sync(f->manager, name, mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL, error);
    return path;
}

/* A VM of the test guest (or a kernel path that need not exist, without KVM). */
static char *guest_config(const char *mode, const char *extra)
{
    return g_strdup_printf("{'kernel': <'%s'>, 'cmdline': <'mode=%s'>, 'debug-exit': <true>,"
                           " 'memory-mib': <uint64 16>%s%s}",
                           testguest ? testguest : "/nonexistent/testguest.elf", mode,
                           extra ? ", " : "", extra ? extra : "");
}

static MvmdVm *create_mode(Fixture *f, const char *name, const char *mode, const char *extra)
{
    g_autofree char *text = guest_config(mode, extra);
    g_autoptr(GError) error = NULL;
    g_autofree char *path = create_vm(f, name, text, &error);

    g_assert_no_error(error);
    return mvmd_test_bus_vm(f->bus, NULL, path);
}

static MvmdVm *create_ok(Fixture *f, const char *name, const char *extra)
{
    return create_mode(f, name, "idle", extra);
}

/* CreateVM with `cpu-template` @name fails with InvalidArgument whose message has @says. */
static void create_refused(Fixture *f, const char *name, const char *says)
{
    g_autoptr(GVariant) quoted = g_variant_ref_sink(g_variant_new_string(name));
    g_autofree char *value = g_variant_print(quoted, FALSE);
    g_autofree char *extra = g_strdup_printf("'cpu-template': <%s>", value);
    g_autofree char *text = guest_config("idle", extra);
    g_autoptr(GError) error = NULL;
    g_autofree char *path = create_vm(f, "refused", text, &error);
    g_autofree char *shown = NULL;

    g_assert_null(path);
    mvmd_test_assert_dbus_error(error, ERR "InvalidArgument");
    shown = g_utf8_substring(value, 0, MIN(g_utf8_strlen(value, -1), 80));
    g_test_message("cpu-template %s: %s", shown, error->message);
    g_assert_cmpuint(strlen(error->message), <, 1024); /* the caller's text is not echoed whole */
    g_assert_nonnull(strstr(error->message, "cpu-template"));
    if (says && !strstr(error->message, says))
        g_error("'%s' is not in: %s", says, error->message);
}

static const char *config_template(MvmdVm *vm)
{
    const char *name = NULL;

    g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "cpu-template", "&s", &name));
    return name;
}

static GVariant *get_cpu_config(MvmdVm *vm, GError **error)
{
    GVariant *config = NULL;

    mvmd_vm_call_get_cpu_config_sync(vm, G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS,
                                     &config, NULL, error);
    return config;
}

static void call_fails(MvmdVm *vm, const char *method, const char *error_name, const char *says)
{
    g_autoptr(GError) error = NULL;

    mvmd_test_vm_call(vm, method, NULL, NULL, &error);
    mvmd_test_assert_dbus_error(error, error_name);
    g_test_message("%s: %s", method, error->message);
    if (says && !strstr(error->message, says))
        g_error("'%s' is not in: %s", says, error->message);
}

static gboolean skip_without_guests(void)
{
    if (kvm_unusable) {
        g_test_skip(kvm_unusable);
        return TRUE;
    }
    if (!testguest) {
        g_test_skip("MVM_TESTGUEST not set, or the test guest was not built");
        return TRUE;
    }
    return FALSE;
}

/* ---- the config key, no KVM needed ------------------------------------------------------- */

/* Built-in names are taken, shown by GetConfig; the default shows as "host". */
static void test_builtin(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) plain = create_ok(f, "plain", NULL);
    g_autoptr(MvmdVm) v2 = create_ok(f, "v2", "'cpu-template': <'x86-64-v2'>");
    g_autoptr(MvmdVm) v3 = create_ok(f, "v3", "'cpu-template': <'x86-64-v3'>");
    g_autoptr(MvmdVm) host = create_ok(f, "host", "'cpu-template': <'host'>");

    g_assert_true(g_strv_contains(mvmd_manager_get_capabilities(f->manager), "cpu-template"));
    g_assert_cmpstr(config_template(plain), ==, "host");
    g_assert_cmpstr(config_template(v2), ==, "x86-64-v2");
    g_assert_cmpstr(config_template(v3), ==, "x86-64-v3");
    g_assert_cmpstr(config_template(host), ==, "host");
}

/*
 * Whatever a caller names, and whatever the template directory holds, CreateVM answers
 * InvalidArgument saying why, and defines nothing. No call may hang on the directory's
 * contents (a FIFO) or follow a link out of it.
 */
static void test_refused(Fixture *f, gconstpointer data)
{
    g_autofree char *fifo = g_build_filename(f->template_dir, "fifo.json", NULL);
    g_autofree char *subdir = g_build_filename(f->template_dir, "dir.json", NULL);
    g_autofree char *link = g_build_filename(f->template_dir, "link.json", NULL);
    g_autofree char *outside = g_build_filename(f->bus->tmpdir, "outside.json", NULL);
    g_autofree char *big = g_strnfill(70000, ' ');
    g_autofree char *long_name = g_strnfill(100000, 'x');

    create_refused(f, "nosuch", "nosuch");
    create_refused(f, "../etc/passwd", NULL);
    create_refused(f, "", NULL);
    create_refused(f, "a/b", NULL);
    create_refused(f, ".hidden", NULL);
    create_refused(f, "/etc/passwd", NULL);
    create_refused(f, "ünïcödé-ünïcödé-ünïcödé-ünïcödé-ünïcödé-ünïcödé-ünïcödé-ünïcödé-ü", NULL);
    create_refused(f, long_name, NULL);

    write_template(f, "corrupt.json", "{ \"cpuid\": [ { \"leaf\": ");
    create_refused(f, "corrupt", "corrupt.json");
    write_template(f, "badleaf.json",
                   "{ \"cpuid\": [ { \"leaf\": \"0x7\", \"register\": \"exx\" } ] }");
    create_refused(f, "badleaf", "badleaf.json");
    write_template(f, "big.json", big);
    create_refused(f, "big", "big.json");

    g_assert_true(g_file_set_contents(outside, NO_SSE42_JSON, -1, NULL));
    g_assert_cmpint(symlink(outside, link), ==, 0);
    create_refused(f, "link", "symbolic link");
    g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
    create_refused(f, "fifo", "not a regular file");
    g_assert_cmpint(g_mkdir(subdir, 0755), ==, 0);
    create_refused(f, "dir", "not a regular file");

    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 0);
}

/* The example of microvmd(8), CPU TEMPLATES: it must stay a valid template. */
#define MAN_PAGE_EXAMPLE                                                                           \
    "{ \"description\": \"our fleet: no AVX-512\",\n"                                              \
    "  \"cpuid\": [ { \"leaf\": \"0x7\", \"subleaf\": \"0x0\", \"register\": \"ebx\",\n"           \
    "               \"clear\": \"0xdc230000\" } ],\n"                                              \
    "  \"msrs\":  [] }\n"

/* The administrator's NAME.json is taken, by its name. */
static void test_custom(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(MvmdVm) fleet = NULL;

    write_template(f, "no-sse4.2.json", NO_SSE42_JSON);
    vm = create_ok(f, "custom", "'cpu-template': <'no-sse4.2'>");
    g_assert_cmpstr(config_template(vm), ==, "no-sse4.2");
    write_template(f, "fleet.json", MAN_PAGE_EXAMPLE);
    fleet = create_ok(f, "fleet", "'cpu-template': <'fleet'>");
    g_assert_cmpstr(config_template(fleet), ==, "fleet");
}

/*
 * A definition keeps its template across a restart of the daemon, even when the template's
 * file went meanwhile; Start then loads it again and says which template is missing.
 */
static void test_persist(Fixture *f, gconstpointer data)
{
    g_autofree char *file = g_build_filename(f->template_dir, "gone.json", NULL);
    g_autoptr(MvmdVm) v3 = NULL;
    g_autoptr(MvmdVm) gone = NULL;
    g_autoptr(MvmdVm) plain = NULL;

    write_template(f, "gone.json", NO_SSE42_JSON);
    g_object_unref(create_ok(f, "v3", "'cpu-template': <'x86-64-v3'>, 'persist': <true>"));
    g_object_unref(create_ok(f, "gone", "'cpu-template': <'gone'>, 'persist': <true>"));
    g_object_unref(create_ok(f, "plain", "'persist': <true>"));
    stop_daemon(f);
    g_assert_cmpint(g_unlink(file), ==, 0);
    start_daemon(f);

    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 3);
    v3 = mvmd_test_bus_vm(f->bus, NULL, "/org/microvmd/MicroVM1/vm/v3");
    gone = mvmd_test_bus_vm(f->bus, NULL, "/org/microvmd/MicroVM1/vm/gone");
    plain = mvmd_test_bus_vm(f->bus, NULL, "/org/microvmd/MicroVM1/vm/plain");
    g_assert_cmpstr(config_template(v3), ==, "x86-64-v3");
    g_assert_cmpstr(config_template(gone), ==, "gone");
    g_assert_cmpstr(config_template(plain), ==, "host");
    call_fails(gone, "Start", ERR "InvalidArgument", "'gone'");
    g_assert_cmpstr(mvmd_vm_get_state(gone), ==, "stopped");
}

/* GetCPUConfig needs vCPUs: a VM that never ran has none. */
static void test_cpu_config_created(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_ok(f, "new", NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) config = get_cpu_config(vm, &error);

    g_assert_null(config);
    mvmd_test_assert_dbus_error(error, ERR "InvalidState");
    g_assert_nonnull(strstr(error->message, "created"));
}

/*
 * Another user reads root's VM's CPU only with manage-others (the read pauses the guest and shows
 * its registers): read-others is not enough, and without polkit never.
 */
static void test_cpu_config_other_user(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_ok(f, "roots", NULL);
    g_autoptr(GSubprocess) client = NULL;
    g_autoptr(GSubprocess) mock = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *out = NULL;

    if (getuid() != 0) {
        g_test_skip("needs root to run a client as nobody");
        return;
    }
    mvmd_test_bus_open_to_all(f->bus);
    client = mvmd_test_vm_call_as_nobody(f->bus, "roots", "GetCPUConfig");
    g_subprocess_communicate_utf8(client, NULL, NULL, &out, NULL, &error);
    g_assert_no_error(error);
    g_test_message("GetCPUConfig as nobody: %s", out);
    g_assert_nonnull(strstr(out, ERR "NotAuthorized"));

    mock = mvmd_test_start_polkit_mock(f->bus, "org.microvmd.vm.read-others");
    if (!mock) {
        g_test_message("python-dbusmock is not installed: polkit's yes not tried");
        return;
    }
    g_clear_object(&client);
    g_clear_pointer(&out, g_free);
    client = mvmd_test_vm_call_as_nobody(f->bus, "roots", "GetCPUConfig");
    g_subprocess_communicate_utf8(client, NULL, NULL, &out, NULL, &error);
    g_assert_no_error(error);
    g_test_message("GetCPUConfig as nobody with read-others: %s", out);
    g_assert_nonnull(strstr(out, ERR "NotAuthorized"));
    g_subprocess_force_exit(mock);
    g_subprocess_wait(mock, NULL, NULL);
    g_clear_object(&mock);

    /* With manage-others it gets past authorization: a created VM then has no vCPUs to show. */
    mock = mvmd_test_start_polkit_mock(f->bus, "org.microvmd.vm.manage-others");
    g_assert_nonnull(mock);
    g_clear_object(&client);
    g_clear_pointer(&out, g_free);
    client = mvmd_test_vm_call_as_nobody(f->bus, "roots", "GetCPUConfig");
    g_subprocess_communicate_utf8(client, NULL, NULL, &out, NULL, &error);
    g_assert_no_error(error);
    g_test_message("GetCPUConfig as nobody with manage-others: %s", out);
    g_assert_nonnull(strstr(out, ERR "InvalidState"));
    g_subprocess_force_exit(mock);
    g_subprocess_wait(mock, NULL, NULL);
}

/* Reload reads [CPUTemplates] Directory= again: templates come from the new directory. */
static void reload_moves_directory(Fixture *f, const char *conf)
{
    g_autofree char *other = g_build_filename(f->bus->tmpdir, "other-templates", NULL);
    g_autofree char *file = g_build_filename(other, "elsewhere.json", NULL);
    g_autofree char *text = g_strdup_printf("[CPUTemplates]\nDirectory=%s\n", other);
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVm) vm = NULL;

    g_assert_cmpint(g_mkdir(other, 0755), ==, 0);
    g_assert_true(g_file_set_contents(file, NO_SSE42_JSON, -1, NULL));
    create_refused(f, "elsewhere", "elsewhere");
    g_assert_true(g_file_set_contents(conf, text, -1, NULL));
    mvmd_manager_call_reload_sync(f->manager, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
    g_assert_no_error(error);
    vm = create_ok(f, "elsewhere", "'cpu-template': <'elsewhere'>");
    create_refused(f, "from-conf", "from-conf");
}

/* The template directory from microvmd.conf, and a mistake there stops the start. */
static void test_config_file(Fixture *f, gconstpointer data)
{
    g_autofree char *conf = g_build_filename(f->bus->tmpdir, "microvmd.conf", NULL);
    g_autofree char *text = g_strdup_printf("[CPUTemplates]\nDirectory=%s\n", f->template_dir);
    g_autofree char *conf_arg = g_strconcat("--config=", conf, NULL);
    const char *const args[] = {conf_arg, NULL};
    g_autoptr(MvmdVm) vm = NULL;

    stop_daemon(f);
    write_template(f, "from-conf.json", NO_SSE42_JSON);
    g_assert_true(g_file_set_contents(conf, text, -1, NULL));
    mvmd_test_bus_start_daemon(f->bus, args);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
    vm = create_ok(f, "conf", "'cpu-template': <'from-conf'>");
    g_assert_cmpstr(config_template(vm), ==, "from-conf");
    reload_moves_directory(f, conf);
    stop_daemon(f);

    for (const char *const *bad =
             (const char *const[]){"[CPUTemplates]\nDirectory=relative\n",
                                   "[CPUTemplates]\nDir=/x\n",
                                   "[CPUTemplates]\nDirectory=/\xe9t\xe9\n", NULL};
         *bad; bad++) {
        const char *argv[] = {g_getenv("MICROVMD"), "--address=unix:path=/nonexistent", conf_arg,
                              NULL};
        g_autofree char *err = NULL;
        int status = 0;

        g_assert_true(g_file_set_contents(conf, *bad, -1, NULL));
        g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL,
                                   NULL, NULL, &err, &status, NULL));
        g_test_message("%s", err);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 2);
        g_assert_nonnull(strstr(err, "CPUTemplates"));
    }
}

/* ---- GetCPUConfig on running guests ------------------------------------------------------ */

/* The CPUID entry @function/@index of one vCPU's a(uuuuuuu), or FALSE. */
static gboolean find_cpuid(GVariant *cpuid, guint32 function, guint32 index, guint32 regs[4])
{
    GVariantIter iter;
    guint32 fn, idx, flags;

    g_variant_iter_init(&iter, cpuid);
    while (g_variant_iter_next(&iter, "(uuuuuuu)", &fn, &idx, &flags, &regs[0], &regs[1], &regs[2],
                               &regs[3])) {
        if (fn == function && (idx == index || !(flags & 1 /* KVM_CPUID_FLAG_SIGNIFCANT_INDEX */)))
            return TRUE;
    }
    return FALSE;
}

/* Checks the shape of GetCPUConfig's answer; returns vCPU @n's cpuid array (a new ref). */
static GVariant *check_cpu_config(GVariant *config, const char *template, guint n_vcpus)
{
    g_autoptr(GVariant) vcpus = g_variant_lookup_value(config, "vcpus", G_VARIANT_TYPE("aa{sv}"));
    const char *name = NULL;
    guint32 tsc_khz = 0;
    gboolean scaling = FALSE;

    g_assert_true(g_variant_lookup(config, "cpu-template", "&s", &name));
    g_assert_cmpstr(name, ==, template);
    g_assert_true(g_variant_lookup(config, "tsc-khz", "u", &tsc_khz));
    g_assert_true(g_variant_lookup(config, "tsc-scaling", "b", &scaling));
    g_assert_nonnull(vcpus);
    g_assert_cmpuint(g_variant_n_children(vcpus), ==, n_vcpus);
    for (guint i = 0; i < n_vcpus; i++) {
        g_autoptr(GVariant) vcpu = g_variant_get_child_value(vcpus, i);
        g_autoptr(GVariant) cpuid =
            g_variant_lookup_value(vcpu, "cpuid", G_VARIANT_TYPE("a(uuuuuuu)"));
        g_autoptr(GVariant) msrs = g_variant_lookup_value(vcpu, "msrs", G_VARIANT_TYPE("a(ut)"));
        guint32 index = G_MAXUINT32;

        g_assert_true(g_variant_lookup(vcpu, "index", "u", &index));
        g_assert_cmpuint(index, ==, i);
        g_assert_nonnull(cpuid);
        g_assert_cmpuint(g_variant_n_children(cpuid), >, 0);
        g_assert_nonnull(msrs);
    }
    {
        g_autoptr(GVariant) vcpu0 = g_variant_get_child_value(vcpus, 0);

        return g_variant_lookup_value(vcpu0, "cpuid", G_VARIANT_TYPE("a(uuuuuuu)"));
    }
}

static gboolean has_feature(GVariant *config, const char *feature)
{
    g_autofree const char **features = NULL;

    g_assert_true(g_variant_lookup(config, "features", "^a&s", &features));
    return g_strv_contains(features, feature);
}

/* The guest's console log (mode=cpuid stay=1) once it has printed every leaf. */
static char *guest_cpuid_output(Fixture *f, const char *name)
{
    g_autofree char *log = g_build_filename(f->bus->runtime_dir, "vm", name, "console.log", NULL);
    gint64 deadline = g_get_monotonic_time() + MVMD_TEST_GUEST_TIMEOUT_MS * 1000LL;
    char *text = NULL;

    for (;;) {
        g_clear_pointer(&text, g_free);
        if (g_file_get_contents(log, &text, NULL, NULL) && strstr(text, "CPUID staying"))
            return text;
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(10 * 1000);
    }
}

/*
 * GetCPUConfig against the guest's own view: what the test guest's CPUID instruction answered
 * on vCPU 0 is what vCPU 0's table says. Bits that follow the guest's own state are left out
 * (testguest README: CPUID.1:ECX.OSXSAVE[27] follows CR4, CPUID.7.0:ECX.OSPKE[4] too).
 */
static void check_guest_view(Fixture *f, const char *name, GVariant *cpuid)
{
    static const struct {
        guint32 leaf, reg, mask; /* reg: 0 eax .. 3 edx */
    } compared[] = {
        {1, 2, ~(1u << 27)}, {1, 3, ~0u},          {7, 1, ~0u},          {7, 2, ~(1u << 4)},
        {7, 3, ~0u},         {0x80000001, 2, ~0u}, {0x80000001, 3, ~0u},
    };
    g_autofree char *out = guest_cpuid_output(f, name);

    for (gsize i = 0; i < G_N_ELEMENTS(compared); i++) {
        guint32 guest[4], table[4], leaf = compared[i].leaf, reg = compared[i].reg;

        g_assert_true(testguest_parse_cpuid(out, leaf, 0, guest));
        g_assert_true(find_cpuid(cpuid, leaf, 0, table));
        if ((guest[reg] & compared[i].mask) != (table[reg] & compared[i].mask))
            g_error("CPUID 0x%x.0 register %u: the guest saw 0x%08x, GetCPUConfig says 0x%08x",
                    leaf, reg, guest[reg], table[reg]);
    }
}

/*
 * Start with a template that takes features away. A kvm_pvm host shows guests its own CPUID
 * whatever the VMM sets (docs/kvm-hosts.md), so lib refuses such a VM there rather than
 * promise what it cannot keep: IncompatibleCPU naming the template. FALSE then (the caller's
 * checks of the guest's CPU cannot run on this host); TRUE once the VM runs.
 */
static gboolean start_masking(MvmdVm *vm, const char *template)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *remote = NULL;

    if (mvmd_test_vm_call(vm, "Start", NULL, NULL, &error))
        return TRUE;
    remote = g_dbus_error_get_remote_error(error);
    if (g_strcmp0(remote, ERR "IncompatibleCPU") != 0)
        g_error("Start with %s: %s", template, error->message);
    g_assert_nonnull(strstr(error->message, template));
    g_test_message("this host's KVM cannot hide CPU features, so Start refused %s: %s", template,
                   error->message);
    return FALSE;
}

/*
 * GetCPUConfig on a running and on a paused guest of the host template: every vCPU has its
 * CPUID table and MSRs, in order; a stopped VM has none. The guest keeps running throughout.
 */
static void test_cpu_config_states(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) config = NULL;
    g_autoptr(GVariant) cpuid = NULL;
    g_autoptr(GError) error = NULL;
    guint32 regs[4];

    if (skip_without_guests())
        return;
    vm = create_mode(f, "host", "cpuid stay=1", "'vcpus': <uint32 2>");
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    config = get_cpu_config(vm, &error);
    g_assert_no_error(error);
    cpuid = check_cpu_config(config, "host", 2);
    check_guest_view(f, "host", cpuid);
    g_assert_true(find_cpuid(cpuid, 1, 0, regs));
    g_assert_true(has_feature(config, "sse2"));
    g_main_context_iteration(NULL, FALSE);
    g_assert_cmpstr(mvmd_vm_get_state(vm), ==, "running");

    mvmd_test_vm_call_ok(vm, "Pause", g_variant_new_parsed("(@a{sv} {},)"));
    g_clear_pointer(&config, g_variant_unref);
    g_clear_pointer(&cpuid, g_variant_unref);
    config = get_cpu_config(vm, &error);
    g_assert_no_error(error);
    cpuid = check_cpu_config(config, "host", 2);
    mvmd_test_vm_wait_state(vm, "paused");
    mvmd_test_vm_call_ok(vm, "Resume", NULL);

    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
    g_clear_pointer(&config, g_variant_unref);
    config = get_cpu_config(vm, &error);
    mvmd_test_assert_dbus_error(error, ERR "InvalidState");
}

/*
 * x86-64-v2: what the vCPUs' CPUID says is the baseline's (no AVX2, SSE2 of course), by bit
 * and by name. Where KVM cannot hide features, the refusal is the answer.
 */
/*
 * Guest @name (mode=cpuid, staying) with template @tmpl and the CreateVM @keys, running: its
 * GetCPUConfig in @config, checked against the guest's own view, and vCPU 0's CPUID returned.
 * NULL when this host cannot run test guests or honour the template (the test has its answer).
 */
static GVariant *start_and_read(Fixture *f, const char *name, const char *tmpl, const char *keys,
                                guint vcpus, MvmdVm **vm, GVariant **config)
{
    g_autoptr(GError) error = NULL;
    GVariant *cpuid;

    if (skip_without_guests())
        return NULL;
    *vm = create_mode(f, name, "cpuid stay=1", keys);
    if (!start_masking(*vm, tmpl))
        return NULL;
    *config = get_cpu_config(*vm, &error);
    g_assert_no_error(error);
    cpuid = check_cpu_config(*config, tmpl, vcpus);
    check_guest_view(f, name, cpuid);
    return cpuid;
}

static void test_baseline(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) config = NULL;
    g_autoptr(GVariant) cpuid =
        start_and_read(f, "v2", "x86-64-v2", "'cpu-template': <'x86-64-v2'>, 'vcpus': <uint32 2>",
                       2, &vm, &config);
    guint32 regs[4];

    if (cpuid == NULL)
        return;
    g_assert_true(find_cpuid(cpuid, 7, 0, regs));
    g_assert_cmphex(regs[1] & LEAF7_EBX_AVX2, ==, 0);
    g_assert_false(has_feature(config, "avx2"));
    g_assert_true(has_feature(config, "sse2"));
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
}

/* A custom template's effect is what the guest's vCPUs have. */
static void test_custom_effect(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) config = NULL;
    g_autoptr(GVariant) cpuid = NULL;
    guint32 regs[4];

    write_template(f, "no-sse4.2.json", NO_SSE42_JSON);
    cpuid =
        start_and_read(f, "custom", "no-sse4.2", "'cpu-template': <'no-sse4.2'>", 1, &vm, &config);
    if (cpuid == NULL)
        return;
    g_assert_true(find_cpuid(cpuid, 1, 0, regs));
    g_assert_cmphex(regs[2] & LEAF1_ECX_SSE42, ==, 0);
    g_assert_false(has_feature(config, "sse4_2"));
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
}

/*
 * A template that sets a bit this host's KVM does not give (one the host template leaves
 * clear in leaf 7) is refused at Start with IncompatibleCPU, not run.
 */
static void test_incompatible_start(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) host = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) config = NULL;
    g_autoptr(GVariant) cpuid = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *json = NULL;
    guint32 regs[4], bit = 0;

    if (skip_without_guests())
        return;
    host = create_ok(f, "host", NULL);
    mvmd_test_vm_call_ok(host, "Start", NULL);
    config = get_cpu_config(host, &error);
    g_assert_no_error(error);
    cpuid = check_cpu_config(config, "host", 1);
    mvmd_test_vm_call_ok(host, "Stop", NULL);
    g_assert_true(find_cpuid(cpuid, 7, 0, regs));
    while (bit < 32 && (regs[1] & (1u << bit)))
        bit++;
    if (bit == 32) {
        g_test_skip("this host's KVM gives every bit of CPUID leaf 7 EBX");
        return;
    }
    json = g_strdup_printf("{ \"cpuid\": [ { \"leaf\": \"0x7\", \"register\": \"ebx\","
                           " \"set\": \"0x%x\" } ] }",
                           1u << bit);
    g_test_message("setting CPUID.7.0:EBX bit %u, which this host's KVM does not give", bit);
    write_template(f, "too-much.json", json);
    vm = create_ok(f, "too-much", "'cpu-template': <'too-much'>");
    call_fails(vm, "Start", ERR "IncompatibleCPU", NULL);
}

/*
 * A snapshot records its template: the restored VM's GetConfig and GetCPUConfig say it. Where
 * KVM cannot hide features, a custom template that hides none stands in for x86-64-v2.
 */
static void test_restore_keeps_template(Fixture *f, gconstpointer data)
{
    const char *template = "x86-64-v2";
    g_autofree char *dir = g_build_filename(f->bus->tmpdir, "snap", NULL);
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(MvmdVm) copy = NULL;
    g_autoptr(GVariant) config = NULL;
    g_autoptr(GVariant) cpuid = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    if (skip_without_guests())
        return;
    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    vm = create_ok(f, "orig", "'cpu-template': <'x86-64-v2'>");
    if (!start_masking(vm, template)) {
        template = "hides-nothing";
        write_template(f, "hides-nothing.json", "{ \"description\": \"the host's CPU\" }");
        g_clear_object(&vm);
        vm = create_ok(f, "orig2", "'cpu-template': <'hides-nothing'>");
        mvmd_test_vm_call_ok(vm, "Start", NULL);
    }
    mvmd_test_vm_call_ok(vm, "Snapshot", g_variant_new("(s@a{sv})", dir, mvmd_test_config("{}")));
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_manager_call_restore_vm_sync(f->manager, "copy", dir, mvmd_test_config("{}"),
                                      G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, NULL,
                                      &path, NULL, NULL, &error);
    g_assert_no_error(error);
    copy = mvmd_test_bus_vm(f->bus, NULL, path);
    g_assert_cmpstr(config_template(copy), ==, template);
    config = get_cpu_config(copy, &error);
    g_assert_no_error(error);
    cpuid = check_cpu_config(config, template, 1);
    if (g_str_equal(template, "x86-64-v2"))
        g_assert_false(has_feature(config, "avx2"));
    mvmd_test_vm_call_ok(copy, "Stop", NULL);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (!g_getenv("MICROVMD")) {
        g_printerr("SKIP: MICROVMD not set\n");
        return 77;
    }
    kvm_unusable = kvm_device_unusable();
    testguest = g_getenv("MVM_TESTGUEST");
    if (testguest && !g_file_test(testguest, G_FILE_TEST_EXISTS))
        testguest = NULL;
#define ADD(name, func) g_test_add(name, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/daemon-cpu/builtin", test_builtin);
    ADD("/daemon-cpu/refused", test_refused);
    ADD("/daemon-cpu/custom", test_custom);
    ADD("/daemon-cpu/persist", test_persist);
    ADD("/daemon-cpu/cpu-config-created", test_cpu_config_created);
    ADD("/daemon-cpu/cpu-config-other-user", test_cpu_config_other_user);
    ADD("/daemon-cpu/config-file", test_config_file);
    ADD("/daemon-cpu/cpu-config-states", test_cpu_config_states);
    ADD("/daemon-cpu/baseline", test_baseline);
    ADD("/daemon-cpu/custom-effect", test_custom_effect);
    ADD("/daemon-cpu/incompatible-start", test_incompatible_start);
    ADD("/daemon-cpu/restore-keeps-template", test_restore_keeps_template);
    return g_test_run();
}
