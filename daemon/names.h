/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Every bus name, object path, interface and error name microvmd uses (as bolt-names.h does for
 * boltd), so that the daemon, the client and the tests spell them once.
 */
#pragma once

#define MVMD_DBUS_NAME           "org.microvmd.MicroVM1"
#define MVMD_DBUS_PATH           "/org/microvmd/MicroVM1"
#define MVMD_DBUS_VM_PATH_PREFIX MVMD_DBUS_PATH "/vm/"

#define MVMD_DBUS_MANAGER_INTERFACE "org.microvmd.MicroVM1.Manager"
#define MVMD_DBUS_VM_INTERFACE      "org.microvmd.MicroVM1.VM"

#define MVMD_DBUS_ERROR_PREFIX           "org.microvmd.MicroVM1.Error."
#define MVMD_DBUS_ERROR_INVALID_ARGUMENT MVMD_DBUS_ERROR_PREFIX "InvalidArgument"
#define MVMD_DBUS_ERROR_NO_SUCH_VM       MVMD_DBUS_ERROR_PREFIX "NoSuchVM"
#define MVMD_DBUS_ERROR_ALREADY_EXISTS   MVMD_DBUS_ERROR_PREFIX "AlreadyExists"
#define MVMD_DBUS_ERROR_INVALID_STATE    MVMD_DBUS_ERROR_PREFIX "InvalidState"
#define MVMD_DBUS_ERROR_NOT_AUTHORIZED   MVMD_DBUS_ERROR_PREFIX "NotAuthorized"
#define MVMD_DBUS_ERROR_FAILED           MVMD_DBUS_ERROR_PREFIX "Failed"
#define MVMD_DBUS_ERROR_TIMEOUT          MVMD_DBUS_ERROR_PREFIX "Timeout"
#define MVMD_DBUS_ERROR_NO_RESOURCES     MVMD_DBUS_ERROR_PREFIX "NoResources"
#define MVMD_DBUS_ERROR_LIMIT_REACHED    MVMD_DBUS_ERROR_PREFIX "LimitReached"
#define MVMD_DBUS_ERROR_QUOTA_EXCEEDED   MVMD_DBUS_ERROR_PREFIX "QuotaExceeded"
#define MVMD_DBUS_ERROR_INCOMPATIBLE_CPU MVMD_DBUS_ERROR_PREFIX "IncompatibleCPU"
#define MVMD_DBUS_ERROR_NOT_SUPPORTED    MVMD_DBUS_ERROR_PREFIX "NotSupported"

/*
 * polkit action ids (the systemd helper installs the policy). Each pair: acting on one's own VMs
 * (the VM's Owner is the caller) and on another user's (the -others id). Root is never asked.
 * The owner reads their own VMs without asking: MVMD_ACTION_READ is there for the policy and for
 * rules that name it.
 */
#define MVMD_ACTION_READ            "org.microvmd.vm.read"
#define MVMD_ACTION_READ_OTHERS     "org.microvmd.vm.read-others"
#define MVMD_ACTION_CREATE          "org.microvmd.vm.create"
#define MVMD_ACTION_MANAGE          "org.microvmd.vm.manage"
#define MVMD_ACTION_MANAGE_OTHERS   "org.microvmd.vm.manage-others"
#define MVMD_ACTION_CONSOLE         "org.microvmd.vm.console"
#define MVMD_ACTION_CONSOLE_OTHERS  "org.microvmd.vm.console-others"
#define MVMD_ACTION_SNAPSHOT        "org.microvmd.vm.snapshot"
#define MVMD_ACTION_SNAPSHOT_OTHERS "org.microvmd.vm.snapshot-others"

/* polkit details every check carries. */
#define MVMD_DETAIL_VM   "vm"   /* the VM's name */
#define MVMD_DETAIL_VERB "verb" /* the D-Bus method, e.g. "Start" */
/* …and checks on a VM: the uid of its owner, in decimal. */
#define MVMD_DETAIL_OWNER "owner"

/* Structured logging field carrying the VM's name. */
#define MVMD_LOG_FIELD_VM "MICROVM_VM"

/* VM states, as in the State property. */
#define MVMD_STATE_CREATED "created"
#define MVMD_STATE_RUNNING "running"
#define MVMD_STATE_PAUSED  "paused"
#define MVMD_STATE_STOPPED "stopped"
#define MVMD_STATE_CRASHED "crashed"
