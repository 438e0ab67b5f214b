/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one piece of ACPI hardware a hardware-reduced guest uses: the sleep
 * control/status register of the FADT (ACPI 6.4 §4.8.3.7, §5.2.9), a byte at
 * MVM_ACPI_SLEEP_PORT. The VM registers a device there:
 *   - a write with MVM_ACPI_SLEEP_EN set and SLP_TYP == MVM_ACPI_S5_SLP_TYP
 *     ((value >> 2) & 7) means "power off" (Linux writes 0x34);
 *   - a write of MVM_ACPI_WAKE_STS (0x80) clears the wake status (ignore it);
 *   - reads return 0.
 * 0x600 is where QEMU's PIIX4/ICH9 put their PM block: outside the ISA range
 * 0-0x3ff that legacy drivers probe, and used by nothing else we emulate.
 */
#pragma once

#include "boot.h"

#define MVM_ACPI_SLEEP_PORT      0x600
#define MVM_ACPI_SLEEP_EN        0x20 /* SLP_EN, bit 5 */
#define MVM_ACPI_SLEEP_TYP_SHIFT 2    /* SLP_TYP, bits 2-4 */
#define MVM_ACPI_SLEEP_TYP_MASK  0x1c
#define MVM_ACPI_WAKE_STS        0x80 /* WAK_STS, bit 7 */
#define MVM_ACPI_S5_SLP_TYP      5    /* the value of \_S5 in our DSDT */

/* The FADT's RESET_REG: the i8042 "pulse reset line" command, 0xfe to port 0x64. */
#define MVM_ACPI_RESET_PORT  0x64
#define MVM_ACPI_RESET_VALUE 0xfe
