/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reading untrusted image files: every length is checked against the file. */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot-private.h"
#include "microvm.h"

gboolean mvm_boot_file_size(int fd, const char *what, guint64 *size, GError **error)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        int saved = errno;
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT, "cannot stat the %s: %s", what,
                    g_strerror(saved));
        return FALSE;
    }
    if (!S_ISREG(st.st_mode))
        return mvm_set_invalid(error, "the %s is not a regular file", what);
    *size = (guint64)st.st_size;
    return TRUE;
}

gboolean mvm_boot_pread(int fd, void *buf, gsize len, guint64 offset, const char *what,
                        GError **error)
{
    guint8 *p = buf;

    for (gsize done = 0; done < len;) {
        /* Chunks stay far below SSIZE_MAX and the off_t range is checked by the callers. */
        ssize_t n = pread(fd, p + done, MIN(len - done, (gsize)(64 << 20)), (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "cannot read the %s: %s", what,
                        g_strerror(saved));
            return FALSE;
        }
        if (n == 0)
            return mvm_set_invalid(error,
                                   "the %s is truncated (%" G_GSIZE_FORMAT
                                   " bytes missing at offset 0x%" G_GINT64_MODIFIER "x)",
                                   what, len - done, offset + done);
        done += (gsize)n;
    }
    return TRUE;
}

gboolean mvm_boot_pread_to_guest(MvmMemory *mem, int fd, guint64 gpa, guint64 len, guint64 offset,
                                 const char *what, GError **error)
{
    void *dst = mvm_memory_get_ptr(mem, gpa, len);

    if (dst == NULL)
        return mvm_set_invalid(error,
                               "the %s at 0x%" G_GINT64_MODIFIER "x+0x%" G_GINT64_MODIFIER
                               "x does not fit in guest RAM",
                               what, gpa, len);
    if (len > G_MAXSIZE)
        return mvm_set_invalid(error, "the %s is too large", what);
    return mvm_boot_pread(fd, dst, (gsize)len, offset, what, error);
}
