/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Building a VM: KVM VM fd, memory, irqchip, devices, kernel, vCPUs. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "acpi.h"
#include "layout.h"
#include "vm-private.h"
#include "vm-virtio.h"

/* ---- names ---- */

const char *mvm_vm_state_to_string(MvmVmState state)
{
    static const char *const names[] = {"created", "running", "paused", "stopped", "crashed"};
    return (guint)state < G_N_ELEMENTS(names) ? names[state] : "unknown";
}

const char *mvm_exit_kind_to_string(MvmExitKind kind)
{
    static const char *const names[] = {
        "none",       "requested",  "reset",        "poweroff",
        "debug-exit", "halted",     "triple-fault", "internal-error",
        "fail-entry", "host-error", "guest-panic",  "sandbox-violation",
    };
    return (guint)kind < G_N_ELEMENTS(names) ? names[kind] : "unknown";
}

/* ---- device glue: these run on vCPU threads ---- */

static void raise_irq(gpointer opaque, guint32 gsi, gboolean level)
{
    MvmVm *vm = opaque;
    struct kvm_irq_level irq = {.irq = gsi, .level = level ? 1 : 0};

    if (mvm_kvm_ioctl(vm->fd, KVM_IRQ_LINE, &irq) < 0)
        g_warning("KVM_IRQ_LINE %u: %s", gsi, g_strerror(errno));
}

static void serial_output(gpointer opaque, const guint8 *data, gsize len)
{
    MvmVm *vm = opaque;

    if (vm->console_func != NULL)
        vm->console_func(vm, data, len, vm->console_data);
}

static void guest_reset(gpointer opaque)
{
    mvm_vm_guest_exit(opaque, MVM_EXIT_RESET, g_strdup("guest reset"), 0);
}

static void debug_exit(gpointer opaque, guint32 code)
{
    mvm_vm_guest_exit(opaque, MVM_EXIT_DEBUG_EXIT,
                      g_strdup_printf("test guest exited with code %u", code), code);
}

static void guest_marker(gpointer opaque, guint32 marker)
{
    MvmVm *vm = opaque;

    if (vm->marker_func != NULL)
        vm->marker_func(vm, marker, g_get_monotonic_time(), vm->marker_data);
}

/*
 * The ACPI sleep control register of our hardware-reduced FADT (ACPI 6.4
 * §4.8.3.7): SLP_EN with the S5 type the DSDT's \_S5 names means power off.
 */
static void acpi_sleep_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    guint8 value = data[0];
    guint sleep_type = (value & MVM_ACPI_SLEEP_TYP_MASK) >> MVM_ACPI_SLEEP_TYP_SHIFT;

    if ((value & MVM_ACPI_SLEEP_EN) && sleep_type == MVM_ACPI_S5_SLP_TYP)
        mvm_vm_guest_exit(opaque, MVM_EXIT_POWEROFF, g_strdup("guest powered off"), 0);
}

static void acpi_sleep_read(gpointer opaque, guint64 offset, guint8 *data, guint len)
{
    memset(data, 0, len);
}

#ifdef MVM_TEST_HOOKS
/* What a device a guest took over would try: a network socket (sandbox.c allows neither). */
static gboolean make_forbidden_call(gpointer unused)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd >= 0)
        close(fd);
    return G_SOURCE_REMOVE;
}

static void sandbox_probe_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    MvmVm *vm = opaque;

    if (offset != 0 || len != 1)
        return;
    if (data[0] == 1)
        make_forbidden_call(NULL);
    else if (data[0] == 2 && vm->io_thread != NULL)
        g_main_context_invoke(mvm_io_thread_get_context(vm->io_thread), make_forbidden_call, NULL);
}

static gboolean attach_test_hooks(MvmVm *vm, GError **error)
{
    static const MvmIoOps probe_ops = {.write = sandbox_probe_write};

    return mvm_io_bus_register(vm->bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_SANDBOX_PORT, 1, &probe_ops,
                               vm, "sandbox probe", error);
}
#else
static gboolean attach_test_hooks(MvmVm *vm, GError **error)
{
    return TRUE;
}
#endif

static gboolean attach_devices(MvmVm *vm, GError **error)
{
    static const MvmIoOps acpi_sleep_ops = {acpi_sleep_read, acpi_sleep_write};

    vm->bus = mvm_io_bus_new();
    vm->serial = mvm_serial_new(MVM_SERIAL_COM1_IRQ, raise_irq, vm, serial_output, vm);
    vm->i8042 = mvm_i8042_new(1, raise_irq, vm, guest_reset, vm);
    if (!mvm_serial_attach(vm->serial, vm->bus, MVM_SERIAL_COM1_PORT, error) ||
        !mvm_i8042_attach(vm->i8042, vm->bus, error) ||
        !mvm_io_bus_register(vm->bus, MVM_IO_SPACE_PIO, MVM_ACPI_SLEEP_PORT, 1, &acpi_sleep_ops, vm,
                             "acpi-sleep", error))
        return FALSE;
    if (vm->config->debug_exit) {
        vm->testdev = mvm_testdev_new(debug_exit, guest_marker, vm);
        if (!mvm_testdev_attach(vm->testdev, vm->bus, error) || !attach_test_hooks(vm, error))
            return FALSE;
    }
    return mvm_vm_attach_virtio(vm, error);
}

/* ---- KVM VM ---- */

static gboolean create_kvm_vm(MvmVm *vm, GError **error)
{
    vm->fd = ioctl(vm->kvm->fd, KVM_CREATE_VM, 0);
    if (vm->fd < 0)
        return mvm_kvm_set_errno_error(error, "KVM_CREATE_VM");
    /* Intel needs a TSS and identity map for real mode; both lie in the MMIO gap. */
    if (ioctl(vm->fd, KVM_SET_TSS_ADDR, (unsigned long)MVM_KVM_TSS_ADDR) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_TSS_ADDR");
    guint64 identity = MVM_KVM_IDENTITY_MAP_ADDR;
    if (ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_IDENTITY_MAP_ADDR");
    return TRUE;
}

static gboolean register_memory(MvmVm *vm, guint32 flags, GError **error)
{
    for (guint i = 0; i < mvm_memory_get_n_regions(vm->memory); i++) {
        const MvmMemoryRegion *r = mvm_memory_get_region(vm->memory, i);
        struct kvm_userspace_memory_region region = {
            .slot = i,
            .flags = flags,
            .guest_phys_addr = r->gpa,
            .memory_size = r->size,
            .userspace_addr = (guint64)(guintptr)r->host,
        };
        if (mvm_kvm_ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
            return mvm_kvm_set_errno_error(error, "KVM_SET_USER_MEMORY_REGION");
    }
    return TRUE;
}

/* The same slots again, flags changed: KVM allows that on a live slot. */
gboolean mvm_vm_log_dirty_pages(MvmVm *vm, GError **error)
{
    return register_memory(vm, KVM_MEM_LOG_DIRTY_PAGES, error);
}

/*
 * Memory goes in before the irqchip: measured on our hosts, a memslot added
 * after KVM_CREATE_IRQCHIP costs milliseconds, before it a tenth of one.
 */
static gboolean setup_machine(MvmVm *vm, GError **error)
{
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};

    if (vm->memory == NULL)
        vm->memory = mvm_memory_new(vm->config->memory_mib * MVM_MIB, error);
    if (vm->memory == NULL || !register_memory(vm, 0, error))
        return FALSE;
    if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_CREATE_IRQCHIP");
    if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_CREATE_PIT2");
    return TRUE;
}

/*
 * The caller's fd is borrowed (dup'ed, which fails only when the process is out of
 * descriptors); a path is opened here and closed after loading.
 */
static int open_input(int fd, const char *path, const char *what, GError **error)
{
    int opened;

    if (fd >= 0) {
        opened = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (opened < 0)
            mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot duplicate the %s descriptor",
                                what);
        return opened;
    }
    opened = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (opened < 0)
        mvm_set_errno_error(error, MVM_ERROR_INVALID_ARGUMENT, "cannot open %s %s", what, path);
    return opened;
}

/* @config is the caller's: its fds are borrowed for the load and not kept. */
static gboolean load_kernel(MvmVm *vm, const MvmVmConfig *config, GError **error)
{
    int kernel_fd = open_input(config->kernel_fd, config->kernel_path, "kernel", error);
    if (kernel_fd < 0)
        return FALSE;
    int initrd_fd = -1;
    if (config->initrd_fd >= 0 || config->initrd_path != NULL) {
        initrd_fd = open_input(config->initrd_fd, config->initrd_path, "initrd", error);
        if (initrd_fd < 0) {
            close(kernel_fd);
            return FALSE;
        }
    }
    guint n_mmio = 0;
    g_autofree MvmBootMmioDevice *mmio = mvm_vm_virtio_boot_devices(vm, &n_mmio);
    MvmBootConfig boot = {
        .kernel_fd = kernel_fd,
        .initrd_fd = initrd_fd,
        .cmdline = config->cmdline,
        .n_vcpus = vm->n_vcpus,
        .prefer_pvh = config->prefer_pvh,
        /* Both: the DSDT for distro kernels, the command line for VIRTIO_MMIO_CMDLINE_DEVICES. */
        .announce_mmio_on_cmdline = n_mmio > 0,
        .mmio_devices = mmio,
        .n_mmio_devices = n_mmio,
    };
    gboolean ok = mvm_boot_load_linux(vm->memory, &boot, &vm->boot, error);
    close(kernel_fd);
    if (initrd_fd >= 0)
        close(initrd_fd);
    return ok;
}

static gboolean create_vcpus(MvmVm *vm, GError **error)
{
    vm->vcpus = g_new0(MvmVcpuThread, vm->n_vcpus);
    for (guint i = 0; i < vm->n_vcpus; i++) {
        vm->vcpus[i].vm = vm;
        vm->vcpus[i].vcpu = mvm_vcpu_new(vm->kvm, vm->fd, i, error);
        if (vm->vcpus[i].vcpu == NULL)
            return FALSE;
        mvm_vcpu_set_io_bus(vm->vcpus[i].vcpu, vm->bus);
    }
    return TRUE;
}

static gboolean configure_vcpus(MvmVm *vm, GError **error)
{
    for (guint i = 0; i < vm->n_vcpus; i++)
        if (!mvm_vcpu_configure(vm->vcpus[i].vcpu, vm->config->cpu_template, vm->n_vcpus, &vm->boot,
                                error))
            return FALSE;
    return TRUE;
}

/*
 * A NIC without a MAC gets a random one here, in the VM's own config, so that the MAC the guest
 * sees is the one mvm_vm_get_config() shows and a snapshot records: locally administered and
 * unicast (IEEE 802: bit 1 set, bit 0 clear in the first byte).
 */
static void choose_macs(MvmVmConfig *config)
{
    static const guint8 zero[6] = {0};

    for (guint i = 0; config->nics != NULL && i < config->nics->len; i++) {
        MvmNetConfig *nic = g_ptr_array_index(config->nics, i);
        if (memcmp(nic->mac, zero, sizeof(zero)) != 0)
            continue;
        for (guint b = 0; b < sizeof(nic->mac); b++)
            nic->mac[b] = (guint8)g_random_int();
        nic->mac[0] = (nic->mac[0] & 0xfe) | 0x02;
    }
}

MvmVm *mvm_vm_alloc(const MvmVmConfig *config, GError **error)
{
    const MvmKvm *kvm;

    if (!mvm_vm_config_validate(config, error) || (kvm = mvm_kvm_get(error)) == NULL)
        return NULL;

    MvmVm *vm = g_new0(MvmVm, 1);
    mvm_guest_log_init(&vm->guest_log, vm, "the guest");
    g_mutex_init(&vm->lock);
    g_mutex_init(&vm->op_lock);
    g_cond_init(&vm->cond);
    vm->fd = -1;
    vm->kvm = kvm;
    vm->config = mvm_vm_config_copy(config);
    vm->config->kernel_fd = vm->config->initrd_fd = -1; /* borrowed; not ours to keep */
    choose_macs(vm->config);
    vm->n_vcpus = config->n_vcpus;
    vm->state = MVM_VM_STATE_CREATED;
    return vm;
}

gboolean mvm_vm_build(MvmVm *vm, MvmMemory *memory, GError **error)
{
    vm->memory = memory;
    if (!create_kvm_vm(vm, error) || !setup_machine(vm, error))
        return FALSE;
    return attach_devices(vm, error) && create_vcpus(vm, error);
}

MvmVm *mvm_vm_new(const MvmVmConfig *config, GError **error)
{
    g_autoptr(MvmVm) vm = mvm_vm_alloc(config, error);

    if (vm == NULL || !mvm_vm_build(vm, NULL, error) || !load_kernel(vm, config, error) ||
        !mvm_vm_vmgenid_boot(vm, error) || !configure_vcpus(vm, error))
        return NULL;
    return g_steal_pointer(&vm);
}

void mvm_vm_release_devices(MvmVm *vm)
{
    if (vm->devices_released)
        return;
    mvm_vm_stop(vm, NULL);
    /* A lazily restored VM's threads may wait on a page its file never gives: not any more. */
    if (vm->memory != NULL)
        mvm_memory_lazy_abort(vm->memory);
    mvm_vm_join_vcpus(vm);
    for (guint i = 0; vm->vcpus != NULL && i < vm->n_vcpus; i++)
        mvm_vcpu_free(vm->vcpus[i].vcpu);
    g_clear_pointer(&vm->vcpus, g_free);
    mvm_vm_detach_virtio(vm);
    g_clear_pointer(&vm->testdev, mvm_testdev_free);
    g_clear_pointer(&vm->i8042, mvm_i8042_free);
    g_clear_pointer(&vm->serial, mvm_serial_free);
    g_clear_pointer(&vm->bus, mvm_io_bus_free);
    vm->devices_released = TRUE;
}

void mvm_vm_free(MvmVm *vm)
{
    if (vm == NULL)
        return;
    mvm_vm_release_devices(vm);
    if (vm->fd >= 0)
        close(vm->fd);
    /* Unmapped after the VM fd is closed, so KVM never sees a memslot without memory. */
    mvm_memory_free(vm->memory);
    mvm_boot_info_clear(&vm->boot);
    mvm_vm_config_free(vm->config);
    g_free(vm->exit_reason);
    mvm_vm_free_device_states(vm);
    mvm_guest_log_clear(&vm->guest_log); /* after the devices: it says what they suppressed */
    g_mutex_clear(&vm->lock);
    g_mutex_clear(&vm->op_lock);
    g_cond_clear(&vm->cond);
    g_free(vm);
}

/* ---- accessors ---- */

void mvm_vm_set_state_callback(MvmVm *vm, MvmVmStateFunc func, gpointer user_data)
{
    vm->state_func = func;
    vm->state_data = user_data;
}

void mvm_vm_set_console_callback(MvmVm *vm, MvmVmConsoleFunc func, gpointer user_data)
{
    vm->console_func = func;
    vm->console_data = user_data;
}

void mvm_vm_set_log_callback(MvmVm *vm, MvmVmLogFunc func, gpointer user_data)
{
    mvm_guest_log_set_func(&vm->guest_log, func, user_data);
}

void mvm_vm_set_marker_callback(MvmVm *vm, MvmVmMarkerFunc func, gpointer user_data)
{
    vm->marker_func = func;
    vm->marker_data = user_data;
}

MvmVmState mvm_vm_get_state(MvmVm *vm)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);
    return vm->state;
}

MvmExitKind mvm_vm_get_exit_kind(MvmVm *vm)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);
    return vm->exit_kind;
}

char *mvm_vm_dup_exit_reason(MvmVm *vm)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);
    return g_strdup(vm->exit_reason != NULL ? vm->exit_reason : "");
}

guint32 mvm_vm_get_exit_code(MvmVm *vm)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);
    return vm->exit_code;
}

const MvmVmConfig *mvm_vm_get_config(MvmVm *vm)
{
    return vm->config;
}

gsize mvm_vm_console_write(MvmVm *vm, const guint8 *data, gsize len)
{
    return mvm_serial_queue_input(vm->serial, data, len);
}

static gint64 thread_cpu_time_us(MvmVcpuThread *t)
{
    clockid_t clock;
    struct timespec ts;

    if (g_atomic_int_get(&t->exited))
        return t->cpu_time_us;
    if (!g_atomic_int_get(&t->tid_valid))
        return 0;
    if (pthread_getcpuclockid(t->tid, &clock) != 0 || clock_gettime(clock, &ts) != 0)
        return 0;
    return (gint64)ts.tv_sec * G_USEC_PER_SEC + ts.tv_nsec / 1000;
}

void mvm_vm_get_stats(MvmVm *vm, MvmVmStats *stats)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);

    memset(stats, 0, sizeof(*stats));
    for (guint i = 0; i < vm->n_vcpus; i++) {
        MvmVcpuCounters c;
        mvm_vcpu_get_counters(vm->vcpus[i].vcpu, &c);
        stats->exits_io += c.io;
        stats->exits_mmio += c.mmio;
        stats->exits_hlt += c.hlt;
        stats->exits_other += c.other;
        stats->exits_unhandled_io += c.unhandled_io;
        stats->vcpu_time_us += thread_cpu_time_us(&vm->vcpus[i]);
    }
    stats->kvmclock_ctrl_einval = vm->kvmclock_einval;
    stats->started_at_us = vm->started_at_us;
    stats->memory_bytes = mvm_memory_get_size(vm->memory);
}
