/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmicrovm against real KVM: boots the test guest (tests/testguest/) in each
 * of its modes and checks what it prints, how it ends, and what the VM says.
 * Skipped, with the reason, on hosts without /dev/kvm.
 */
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "microvm.h"
#include "test-util.h"
#include "vm-private.h"

#define GUEST_TIMEOUT_US (120 * G_USEC_PER_SEC)

/* What a VM printed (test-util's Capture) and the states it went through. */
typedef struct {
    Capture *console;
    GMutex lock;
    GArray *states; /* MvmVmState, in order of the callbacks */
} Watch;

static void watch_state(MvmVm *vm, MvmVmState state, gpointer user_data)
{
    Watch *w = user_data;

    g_mutex_lock(&w->lock);
    g_array_append_val(w->states, state);
    g_mutex_unlock(&w->lock);
}

static void watch_init(Watch *w)
{
    w->console = capture_new();
    g_mutex_init(&w->lock);
    w->states = g_array_new(FALSE, FALSE, sizeof(MvmVmState));
}

static void watch_clear(Watch *w)
{
    /* Callers free their VM first: freeing announces the stop to the watch. */
    capture_free(w->console);
    g_array_unref(w->states);
    g_mutex_clear(&w->lock);
}

/* Waits until @needle shows up in the guest's output; FALSE after the timeout. */
static gboolean watch_wait_for(Watch *w, const char *needle, gint64 timeout_us)
{
    return capture_wait_from(w->console, 0, needle, timeout_us);
}

static char *watch_dup(Watch *w)
{
    return capture_dup_from(w->console, 0);
}

static MvmVm *new_guest(const char *cmdline, guint vcpus, guint64 memory_mib, Watch *c)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVmConfig) config = testguest_config(cmdline, vcpus, memory_mib);
    MvmVm *vm = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_CREATED);
    mvm_vm_set_console_callback(vm, on_console, c->console);
    mvm_vm_set_state_callback(vm, watch_state, c);
    return vm;
}

/* Boots a guest that ends by itself and returns what it printed. */
static char *run_to_end(const char *cmdline, guint vcpus, guint64 memory_mib, MvmVm **out_vm)
{
    g_autoptr(GError) error = NULL;
    Watch c;

    watch_init(&c);
    MvmVm *vm = new_guest(cmdline, vcpus, memory_mib, &c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_no_error(error);
    gboolean ended = mvm_vm_wait(vm, GUEST_TIMEOUT_US);
    mvm_vm_stop(vm, NULL);
    char *output = watch_dup(&c);
    if (!ended)
        g_error("guest '%s' did not end; it printed:\n%s", cmdline, output);
    g_test_message("guest '%s' printed:\n%s", cmdline, output);
    mvm_vm_set_console_callback(vm, NULL, NULL);
    mvm_vm_set_state_callback(vm, NULL, NULL);
    watch_clear(&c);
    *out_vm = vm;
    return output;
}

static void assert_debug_exit(MvmVm *vm, guint32 code)
{
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_STOPPED);
    g_assert_cmpint(mvm_vm_get_exit_kind(vm), ==, MVM_EXIT_DEBUG_EXIT);
    g_assert_cmpuint(mvm_vm_get_exit_code(vm), ==, code);
}

static void test_boot(gconstpointer data)
{
    guint64 memory_mib = GPOINTER_TO_UINT(data);
    g_autoptr(MvmVm) vm = NULL;
    g_autofree char *cmdline = g_strdup_printf(
        "mode=boot expect_mem_mib=%" G_GUINT64_FORMAT " expect_cpus=1 token=xyzzy", memory_mib);

    if (!have_kvm())
        return;
    g_autofree char *out = run_to_end(cmdline, 1, memory_mib, &vm);
    g_autofree char *echoed = g_strdup_printf("CMDLINE %s", cmdline);
    g_assert_nonnull(strstr(out, echoed));
    g_assert_nonnull(strstr(out, "TESTGUEST-DONE boot PASS"));
    g_assert_null(strstr(out, "FAIL"));
    assert_debug_exit(vm, 0);
}

static void test_iotest(void)
{
    g_autoptr(MvmVm) vm = NULL;
    MvmVmStats stats;

    if (!have_kvm())
        return;
    g_autofree char *out = run_to_end("mode=iotest iterations=200", 1, 16, &vm);
    g_assert_nonnull(strstr(out, "PASS pio"));
    g_assert_nonnull(strstr(out, "PASS mmio"));
    g_assert_nonnull(strstr(out, "TESTGUEST-DONE iotest PASS"));
    assert_debug_exit(vm, 0);
    mvm_vm_get_stats(vm, &stats);
    /* Every round trip is a write and a read exit. */
    g_assert_cmpuint(stats.exits_io, >=, 400);
    g_assert_cmpuint(stats.exits_mmio, >=, 400);
    g_assert_cmpuint(stats.memory_bytes, ==, 16 * 1024 * 1024);
    g_assert_cmpint(stats.vcpu_time_us, >, 0);
}

static void test_smp(void)
{
    g_autoptr(MvmVm) vm = NULL;
    guint vcpus = MIN(mvm_kvm_max_vcpus(), 4u);

    if (!have_kvm())
        return;
    if (vcpus < 2) {
        g_test_skip("KVM allows one vCPU only");
        return;
    }
    g_autofree char *cmdline = g_strdup_printf("mode=smp expect_cpus=%u", vcpus);
    g_autofree char *out = run_to_end(cmdline, vcpus, 32, &vm);
    g_autofree char *pass = g_strdup_printf("PASS smp cpus=%u", vcpus);
    for (guint i = 1; i < vcpus; i++) {
        g_autofree char *ap = g_strdup_printf("AP %u up", i);
        g_assert_nonnull(strstr(out, ap));
    }
    g_assert_nonnull(strstr(out, pass));
    assert_debug_exit(vm, 0);
}

static void test_reset(void)
{
    g_autoptr(MvmVm) vm = NULL;

    if (!have_kvm())
        return;
    g_autofree char *out = run_to_end("mode=reset", 1, 16, &vm);
    g_assert_null(strstr(out, "FAIL"));
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_STOPPED);
    g_assert_cmpint(mvm_vm_get_exit_kind(vm), ==, MVM_EXIT_RESET);
}

static void test_triple_fault(void)
{
    g_autoptr(MvmVm) vm = NULL;

    if (!have_kvm())
        return;
    g_autofree char *out = run_to_end("mode=triplefault", 1, 16, &vm);
    g_autofree char *reason = mvm_vm_dup_exit_reason(vm);
    g_assert_nonnull(strstr(out, "TRIPLEFAULT now"));
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_CRASHED);
    /* A triple fault is KVM_EXIT_SHUTDOWN on hardware, an internal error under emulating KVMs. */
    g_assert_true(mvm_vm_get_exit_kind(vm) == MVM_EXIT_TRIPLE_FAULT ||
                  mvm_vm_get_exit_kind(vm) == MVM_EXIT_INTERNAL_ERROR);
    g_assert_cmpstr(reason, !=, "");
}

static guint count_counter_lines(Watch *c)
{
    g_autofree char *out = watch_dup(c);
    guint n = 0;
    for (const char *p = out; (p = strstr(p, "COUNTER ")) != NULL; p++)
        n++;
    return n;
}

/*
 * A device taken over by its guest tries a network socket (the test build's probe port): on
 * the vCPU thread (@thread "vcpu") or the I/O thread ("io"). That VM alone crashes, with the
 * call in its reason; a VM beside it counts on.
 */
static void test_sandbox_violation(gconstpointer data)
{
    const char *thread = data;
    g_autoptr(GError) error = NULL;
    Watch bystander_watch, prober_watch;

    if (!have_kvm())
        return;
#ifndef MVM_TEST_HOOKS
    g_test_skip("the probe is in test builds only (meson -Dtest_hooks=true)");
    return;
#endif
    if (mvm_sandbox_get_mode() != MVM_SANDBOX_MODE_ENFORCE) {
        g_test_skip("the sandbox is not enforced here (MVM_SANDBOX)");
        return;
    }
    watch_init(&bystander_watch);
    watch_init(&prober_watch);
    g_autoptr(MvmVm) bystander =
        new_guest("mode=pattern pages=16 every=1", 1, 32, &bystander_watch);
    g_assert_true(mvm_vm_start(bystander, &error));
    g_assert_true(watch_wait_for(&bystander_watch, "COUNTER 2", GUEST_TIMEOUT_US));

    g_autofree char *cmdline = g_strdup_printf("mode=sandbox thread=%s", thread);
    g_autoptr(MvmVmConfig) config = testguest_config(cmdline, 1, 16);
    config->rng = TRUE; /* an I/O thread to probe */
    g_autoptr(MvmVm) prober = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(prober, on_console, prober_watch.console);
    g_assert_true(mvm_vm_start(prober, &error));
    g_assert_true(mvm_vm_wait(prober, GUEST_TIMEOUT_US));

    g_autofree char *out = watch_dup(&prober_watch);
    g_autofree char *reason = mvm_vm_dup_exit_reason(prober);
    g_autofree char *who =
        g_strdup_printf("the %s thread", g_str_equal(thread, "io") ? "I/O" : "vCPU 0");
    g_test_message("the prober printed:\n%s\nreason: %s", out, reason);
    g_assert_nonnull(strstr(out, "SANDBOX probing"));
    g_assert_null(strstr(out, "still running"));
    g_assert_cmpint(mvm_vm_get_state(prober), ==, MVM_VM_STATE_CRASHED);
    g_assert_cmpint(mvm_vm_get_exit_kind(prober), ==, MVM_EXIT_SANDBOX_VIOLATION);
    g_assert_nonnull(strstr(reason, who));
    g_assert_nonnull(strstr(reason, "system call socket (41"));

    /* The bystander never noticed: still running, still counting. */
    guint before = count_counter_lines(&bystander_watch);
    g_autofree char *next = g_strdup_printf("COUNTER %u", before + 2);
    g_assert_true(watch_wait_for(&bystander_watch, next, GUEST_TIMEOUT_US));
    g_assert_cmpint(mvm_vm_get_state(bystander), ==, MVM_VM_STATE_RUNNING);
    g_assert_true(mvm_vm_stop(bystander, &error));
    g_clear_pointer(&prober, mvm_vm_free);
    g_clear_pointer(&bystander, mvm_vm_free);
    watch_clear(&prober_watch);
    watch_clear(&bystander_watch);
}

static void test_echo(void)
{
    g_autoptr(GError) error = NULL;
    Watch c;

    if (!have_kvm())
        return;
    watch_init(&c);
    g_autoptr(MvmVm) vm = new_guest("mode=echo", 1, 16, &c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(watch_wait_for(&c, "READY", GUEST_TIMEOUT_US));
    const char *input = "hello microvm\r";
    g_assert_cmpuint(mvm_vm_console_write(vm, (const guint8 *)input, strlen(input)), ==,
                     strlen(input));
    g_assert_true(watch_wait_for(&c, "hello microvm", GUEST_TIMEOUT_US));
    mvm_vm_console_write(vm, (const guint8 *)"quit\r", 5);
    g_assert_true(mvm_vm_wait(vm, GUEST_TIMEOUT_US));
    assert_debug_exit(vm, 0);
    g_clear_pointer(&vm, mvm_vm_free);
    watch_clear(&c);
}

static void test_pause_resume(void)
{
    g_autoptr(GError) error = NULL;
    Watch c;

    if (!have_kvm())
        return;
    watch_init(&c);
    g_autoptr(MvmVm) vm = new_guest("mode=pattern pages=16 every=1", 2, 64, &c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(watch_wait_for(&c, "COUNTER 3", GUEST_TIMEOUT_US));

    /* Wrong-state calls are refused with INVALID_STATE. */
    g_assert_false(mvm_vm_resume(vm, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
    g_clear_error(&error);

    g_assert_true(mvm_vm_pause(vm, &error));
    g_assert_no_error(error);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_PAUSED);
    g_assert_false(mvm_vm_pause(vm, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
    g_clear_error(&error);

    /* Paused means no vCPU runs: no new output for a while. */
    guint before = count_counter_lines(&c);
    g_usleep(300 * 1000);
    g_assert_cmpuint(count_counter_lines(&c), ==, before);

    g_assert_true(mvm_vm_resume(vm, &error));
    g_autofree char *next = g_strdup_printf("COUNTER %u", before + 2);
    g_assert_true(watch_wait_for(&c, next, GUEST_TIMEOUT_US));
    g_autofree char *out = watch_dup(&c);
    g_assert_null(strstr(out, "FAIL"));

    g_assert_true(mvm_vm_stop(vm, &error));
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_STOPPED);
    g_assert_cmpint(mvm_vm_get_exit_kind(vm), ==, MVM_EXIT_REQUESTED);
    /* created, running, paused, running, stopped: every change was announced. */
    g_assert_cmpuint(c.states->len, ==, 4);
    g_assert_cmpint(g_array_index(c.states, MvmVmState, 0), ==, MVM_VM_STATE_RUNNING);
    g_assert_cmpint(g_array_index(c.states, MvmVmState, 1), ==, MVM_VM_STATE_PAUSED);
    g_assert_cmpint(g_array_index(c.states, MvmVmState, 2), ==, MVM_VM_STATE_RUNNING);
    g_assert_cmpint(g_array_index(c.states, MvmVmState, 3), ==, MVM_VM_STATE_STOPPED);
    g_clear_pointer(&vm, mvm_vm_free);
    watch_clear(&c);
}

static void test_vcpu_state_round_trip(void)
{
    g_autoptr(GError) error = NULL;
    Watch c;

    if (!have_kvm())
        return;
    watch_init(&c);
    g_autoptr(MvmVm) vm = new_guest("mode=pattern pages=4 every=1", 1, 32, &c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(watch_wait_for(&c, "COUNTER 2", GUEST_TIMEOUT_US));
    g_assert_true(mvm_vm_pause(vm, &error));

    MvmVcpu *vcpu = vm->vcpus[0].vcpu;
    g_autoptr(MvmVcpuState) saved = mvm_vcpu_save_state(vcpu, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(saved->msrs->nmsrs, >, 0);
    g_assert_cmpuint(saved->cpuid->nent, >, 0);
    g_assert_true(mvm_vcpu_restore_state(vcpu, saved, &error));
    g_assert_no_error(error);
    g_autoptr(MvmVcpuState) again = mvm_vcpu_save_state(vcpu, &error);
    g_assert_no_error(error);
    g_assert_cmpmem(&saved->regs, sizeof(saved->regs), &again->regs, sizeof(again->regs));
    g_assert_cmpuint(saved->sregs.cr3, ==, again->sregs.cr3);
    g_assert_cmpuint(saved->msrs->nmsrs, ==, again->msrs->nmsrs);

    g_autoptr(MvmVcpuCpuDump) cpu_config = mvm_vcpu_dump_cpu_config(vcpu, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(cpu_config->msrs->nmsrs, ==, saved->msrs->nmsrs);

    /* The guest goes on counting after its state went out and came back. */
    guint before = count_counter_lines(&c);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_autofree char *next = g_strdup_printf("COUNTER %u", before + 2);
    g_assert_true(watch_wait_for(&c, next, GUEST_TIMEOUT_US));
    g_clear_pointer(&vm, mvm_vm_free);
    watch_clear(&c);
}

static void test_msr_chunks(void)
{
    g_autoptr(GError) error = NULL;
    Watch c;

    if (!have_kvm())
        return;
    watch_init(&c);
    g_autoptr(MvmVm) vm = new_guest("mode=boot", 1, 16, &c);
    MvmVcpu *vcpu = vm->vcpus[0].vcpu;
    const GArray *saveable = mvm_vcpu_get_saveable_msrs(vcpu, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(saveable->len, >, 0);

    /* An MSR that does not exist: KVM returns fewer than asked, and we say which one. */
    guint32 bogus[] = {g_array_index(saveable, guint32, 0), 0xdeadbeef};
    struct kvm_msrs *msrs = mvm_vcpu_get_msr_chunk(vcpu, bogus, 2, &error);
    g_assert_null(msrs);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_FAILED);
    g_assert_nonnull(strstr(error->message, "0xdeadbeef"));
    g_clear_error(&error);

    /* More than one chunk's worth: the same MSRs again and again. */
    g_autoptr(GArray) many = g_array_new(FALSE, FALSE, sizeof(guint32));
    while (many->len < 600)
        g_array_append_vals(many, saveable->data, MIN(saveable->len, 600 - many->len));
    g_autofree struct kvm_msrs *all =
        mvm_vcpu_get_msrs(vcpu, (const guint32 *)many->data, many->len, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(all->nmsrs, ==, 600);

    guint32 khz = mvm_vcpu_get_tsc_khz(vcpu, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(khz, >, 0);
    gboolean required = TRUE;
    g_assert_true(mvm_vcpu_is_tsc_scaling_required(vcpu, khz, &required, &error));
    g_assert_false(required);
    g_assert_true(mvm_vcpu_is_tsc_scaling_required(vcpu, khz / 2, &required, &error));
    g_assert_true(required);
    g_clear_pointer(&vm, mvm_vm_free);
    watch_clear(&c);
}

static guint count_open_fds(void)
{
    g_autoptr(GDir) dir = g_dir_open("/proc/self/fd", 0, NULL);
    guint n = 0;
    while (g_dir_read_name(dir) != NULL)
        n++;
    return n;
}

static void test_lifecycle_leaks_nothing(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    guint fds_before = count_open_fds();
    for (guint i = 0; i < 10; i++) {
        Watch c;
        watch_init(&c);
        g_autoptr(MvmVm) vm = new_guest("mode=echo", 2, 16, &c);
        /* Freed in every state a caller may leave it in: created, running, paused, stopped. */
        if (i % 4 >= 1)
            g_assert_true(mvm_vm_start(vm, &error));
        if (i % 4 == 2)
            g_assert_true(mvm_vm_pause(vm, &error));
        if (i % 4 == 3) {
            g_assert_true(mvm_vm_stop(vm, &error));
            g_assert_false(mvm_vm_start(vm, &error));
            g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
            g_clear_error(&error);
        }
        g_clear_pointer(&vm, mvm_vm_free);
        watch_clear(&c);
    }
    g_assert_cmpuint(count_open_fds(), ==, fds_before);
}

static void test_bad_kernel(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autoptr(MvmVmConfig) config = mvm_vm_config_new();

    if (!have_kvm())
        return;
    int fd = g_file_open_tmp("bad-kernel-XXXXXX", &path, &error);
    g_assert_no_error(error);
    g_assert_cmpint(write(fd,
                          "\x7f"
                          "ELF garbage that is not a kernel",
                          32),
                    ==, 32);
    close(fd);
    config->kernel_path = g_strdup(path);
    g_assert_null(mvm_vm_new(config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    g_free(config->kernel_path);
    config->kernel_path = g_strdup("/nonexistent/kernel");
    g_assert_null(mvm_vm_new(config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_unlink(path);
}

static void test_config_validation(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVmConfig) config = mvm_vm_config_new();

    g_assert_false(mvm_vm_config_validate(config, &error)); /* no kernel */
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    config->kernel_path = g_strdup("/boot/vmlinux");
    g_assert_true(mvm_vm_config_validate(config, &error));
    config->n_vcpus = 0;
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_clear_error(&error);
    config->n_vcpus = 1;
    config->memory_mib = 3;
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_clear_error(&error);
    config->memory_mib = G_MAXUINT64;
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/vm/config-validation", test_config_validation);
    g_test_add_data_func("/vm/boot/64MiB", GUINT_TO_POINTER(64), test_boot);
    /* Above 3 GiB RAM continues at 4 GiB: the e820 map must show both parts. */
    g_test_add_data_func("/vm/boot/3200MiB", GUINT_TO_POINTER(3200), test_boot);
    g_test_add_func("/vm/iotest", test_iotest);
    g_test_add_func("/vm/echo", test_echo);
    g_test_add_func("/vm/reset", test_reset);
    g_test_add_func("/vm/triple-fault", test_triple_fault);
    g_test_add_data_func("/vm/sandbox/vcpu-thread", "vcpu", test_sandbox_violation);
    g_test_add_data_func("/vm/sandbox/io-thread", "io", test_sandbox_violation);
    g_test_add_func("/vm/smp", test_smp);
    g_test_add_func("/vm/pause-resume", test_pause_resume);
    g_test_add_func("/vm/vcpu-state-round-trip", test_vcpu_state_round_trip);
    g_test_add_func("/vm/msr-chunks-and-tsc", test_msr_chunks);
    g_test_add_func("/vm/lifecycle-leaks-nothing", test_lifecycle_leaks_nothing);
    g_test_add_func("/vm/bad-kernel", test_bad_kernel);
    return g_test_run();
}
