/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * How much of the one microvmd process a single VM or a single local user may hold. Every VM
 * lives in this process, so without these bounds one tenant (a caller, a socket peer, or a
 * guest) could starve all the others of descriptors, memory or the journal. The bounds that
 * lib/ enforces for the guest's side (vsock connections, guest-caused log lines) are
 * in lib/include/microvm.h (MVM_VSOCK_CONNECTIONS_MAX, MVM_GUEST_LOG_*); docs/usage-dbus.md
 * lists them all.
 */
#pragma once

/* Clients attached to one VM's console at once (OpenConsole): each holds a socket pair and
 * up to MVMD_CONSOLE_CLIENT_MAX bytes of pending output. */
#define MVMD_CONSOLE_CLIENTS_MAX 16

/* Calls waiting for one VM to stop at once (Shutdown, and a Stop of a VM already on its way
 * out): each holds a pending D-Bus reply and a timer. */
#define MVMD_VM_WAITERS_MAX 64

/* Connections on the peer-to-peer socket, in all and per uid, authenticated or not. */
#define MVMD_PEERS_MAX         256
#define MVMD_PEERS_PER_UID_MAX 32

/* A peer that has not finished D-Bus authentication by then is disconnected. */
#define MVMD_PEER_AUTH_TIMEOUT_SEC 5
