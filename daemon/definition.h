/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A VM definition as the daemon keeps it: validated from CreateVM's a{sv} (or from a stored
 * GKeyFile, through the same checks), shown by GetConfig, turned into a
 * libmicrovm MvmVmConfig at each start.
 */
#pragma once

#include <gio/gio.h>

#include "config-devices.h"
#include "microvm.h"

G_BEGIN_DECLS

typedef enum {
    MVMD_ON_REBOOT_RESTART,
    MVMD_ON_REBOOT_STOP,
} MvmdOnReboot;

typedef struct {
    char *name;
    char *uuid;
    /* Who created or restored it (caller's uid); 0 for definitions stored before owners. */
    guint32 owner;
    guint vcpus;
    guint64 memory_mib;
    char *kernel; /* absolute path, or NULL when kernel_fd >= 0 */
    int kernel_fd;
    char *initrd; /* NULL: none, or initrd_fd */
    int initrd_fd;
    char *cmdline;
    gboolean persist;
    gboolean autostart;
    gboolean debug_exit;
    MvmdOnReboot on_reboot;
    MvmdDevices devices; /* disks, network, vsock, rng */
    /* `cpu-template`: NULL for "host". Only the name: the template is loaded at each start
     * (its file may change or go), and checked at CreateVM (mvmd_cpu_template_load()). */
    char *cpu_template;
    /* A VM made by RestoreVM starts from its snapshot, not from a kernel. */
    char *snapshot_dir;
    int snapshot_fd;
    int snapshot_state_fd; /* or its two files, as the caller passed them */
    int snapshot_memory_fd;
    gboolean copy_memory;
    /* RestoreVM's `clone`: each restore (the first, and each Start) is MVM_RESTORE_CLONE, with
     * the MACs and CID the first one gave (devices), so that the clone keeps its identity. */
    gboolean clone;
    /*
     * RestoreVM's `layers`: the snapshots beneath a diff snapshot, base first, as the caller's
     * fds (each pair checked as `state-fd` and `memory-fd` are), restored again at each Start;
     * NULL and 0 for none. Closed with the definition (mvmd_snapshot_layers_free()).
     */
    MvmSnapshotFiles *snapshot_layers;
    guint n_snapshot_layers;
    /* RestoreVM's `track-changes`: each restore is MVM_RESTORE_TRACK_CHANGES. */
    gboolean track_changes;
    /*
     * RestoreVM's `lazy`: each restore (the first, and each Start) is MVM_RESTORE_LAZY. Its
     * `working-set` is not kept here: it is the first restore's alone (OpArgs), so that the
     * definition holds no descriptor the caller gave only to speed one restore up.
     */
    gboolean lazy;
} MvmdVmDefinition;

#define MVMD_VM_NAME_MAX 64
#define MVMD_CMDLINE_MAX 4096
/* Stricter than lib's MVM_MAX_MEMORY_MIB: the daemon's own bound. */
#define MVMD_MEMORY_MIB_MAX (1024 * 1024)
#define MVMD_DEFAULT_MEMORY 128
/*
 * The largest working set file RestoreVM's `working-set` may be: a header (well under a page)
 * and one bit per 4 KiB page of the largest guest RAM the daemon allows, 32 bytes per MiB
 * (lib/working-set.c has the format, and checks the exact length).
 */
#define MVMD_WORKING_SET_MAX_BYTES (4096 + MVMD_MEMORY_MIB_MAX * G_GUINT64_CONSTANT(32))

void mvmd_vm_definition_free(MvmdVmDefinition *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdVmDefinition, mvmd_vm_definition_free)

/* The host limit for the vcpus key (set once at start-up from mvm_kvm_max_vcpus()). */
void mvmd_config_set_max_vcpus(guint max_vcpus);
guint mvmd_config_get_max_vcpus(void);

/* 1..64 of [A-Za-z0-9._-], not starting with '.' or '-'. MVMD_ERROR_INVALID_ARGUMENT. */
gboolean mvmd_vm_name_validate(const char *name, GError **error);

/*
 * Validates @config (a{sv}) for a VM called @name; fds (type h) are looked up in @fd_list
 * and dup'ed. Errors: MVMD_ERROR_INVALID_ARGUMENT naming the key. @uuid may be NULL (a new
 * one is generated).
 */
MvmdVmDefinition *mvmd_vm_definition_new_from_variant(const char *name, const char *uuid,
                                                      GVariant *config, GUnixFDList *fd_list,
                                                      GError **error);

/*
 * A definition for RestoreVM: the snapshot as @dir or @dir_fd (taken). vCPUs and memory are
 * filled in once the snapshot is loaded. MVMD_ERROR_INVALID_ARGUMENT for a bad name or path.
 */
MvmdVmDefinition *mvmd_vm_definition_new_restored(const char *name, const char *dir, int dir_fd,
                                                  gboolean copy_memory, GError **error);
/* The same with the snapshot as its two files, @state_fd and @memory_fd (taken). */
MvmdVmDefinition *mvmd_vm_definition_new_restored_files(const char *name, int state_fd,
                                                        int memory_fd, gboolean copy_memory,
                                                        GError **error);
/* Made by RestoreVM: starts from its snapshot. */
gboolean mvmd_vm_definition_is_restored(const MvmdVmDefinition *config);

/* What GetConfig answers: every key with defaults filled in (a{sv}, floating). */
GVariant *mvmd_vm_definition_to_variant(const MvmdVmDefinition *config);

/* The `cpu-template` name, "host" when none was given. */
const char *mvmd_vm_definition_cpu_template(const MvmdVmDefinition *config);

/* For mvm_vm_new(); fds are borrowed (the library dups what it needs). No CPU template: the
 * operation that builds the machine loads it (vm-ops.c). */
MvmVmConfig *mvmd_vm_definition_to_mvm(const MvmdVmDefinition *config);

/* Persistence: group [VM] with Name and UUID, group [Config] with the config keys. */
GKeyFile *mvmd_vm_definition_to_keyfile(const MvmdVmDefinition *config);
MvmdVmDefinition *mvmd_vm_definition_new_from_keyfile(GKeyFile *keyfile, GError **error);

/*
 * For a handoff (handoff.h): the same, and each descriptor the caller passed (`kernel-fd`,
 * `initrd-fd`, a disk's or a NIC's `fd`) written as a handle, its descriptor appended to @fds
 * (of int, borrowed). Read back with the handles into @fd_list, each descriptor dup'ed and
 * checked as CreateVM checks a caller's.
 */
GKeyFile *mvmd_vm_definition_to_keyfile_with_fds(const MvmdVmDefinition *config, GArray *fds);
MvmdVmDefinition *mvmd_vm_definition_new_from_keyfile_with_fds(GKeyFile *keyfile,
                                                               GUnixFDList *fd_list,
                                                               GError **error);

G_END_DECLS
