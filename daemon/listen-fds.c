/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "listen-fds.h"

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "errors.h"

typedef struct {
    int fd; /* -1 once stolen */
    char *name;
} PassedFd;

struct _MvmdListenFds {
    GArray *fds; /* of PassedFd */
};

static void passed_fd_clear(PassedFd *passed)
{
    if (passed->fd >= 0)
        close(passed->fd);
    g_free(passed->name);
}

MvmdListenFds *mvmd_listen_fds_take(GError **error)
{
    MvmdListenFds *fds = g_new0(MvmdListenFds, 1);
    g_auto(GStrv) names = NULL;
    int n = sd_listen_fds_with_names(1, &names);

    fds->fds = g_array_new(FALSE, FALSE, sizeof(PassedFd));
    g_array_set_clear_func(fds->fds, (GDestroyNotify)passed_fd_clear);
    if (n < 0) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_FAILED, "cannot take the passed descriptors: %s",
                    g_strerror(-n));
        return fds;
    }
    for (int i = 0; i < n; i++) {
        /* "unknown": systemd-socket-activate and sockets without FileDescriptorName=. */
        PassedFd passed = {SD_LISTEN_FDS_START + i,
                           g_strdup(names && names[i] ? names[i] : "unknown")};
        g_array_append_val(fds->fds, passed);
    }
    return fds;
}

void mvmd_listen_fds_free(MvmdListenFds *fds)
{
    if (!fds)
        return;
    g_array_unref(fds->fds);
    g_free(fds);
}

guint mvmd_listen_fds_count(const MvmdListenFds *fds)
{
    guint n = 0;

    for (guint i = 0; i < fds->fds->len; i++)
        n += g_array_index(fds->fds, PassedFd, i).fd >= 0;
    return n;
}

gboolean mvmd_listen_fds_get(const MvmdListenFds *fds, guint i, int *fd, const char **name)
{
    if (i >= fds->fds->len)
        return FALSE;
    *fd = g_array_index(fds->fds, PassedFd, i).fd;
    *name = g_array_index(fds->fds, PassedFd, i).name;
    return TRUE;
}

int mvmd_listen_fds_steal(MvmdListenFds *fds, guint i)
{
    g_return_val_if_fail(i < fds->fds->len, -1);
    return g_steal_fd(&g_array_index(fds->fds, PassedFd, i).fd);
}

void mvmd_listen_fds_close_rest(MvmdListenFds *fds)
{
    for (guint i = 0; i < fds->fds->len; i++) {
        PassedFd *passed = &g_array_index(fds->fds, PassedFd, i);

        if (passed->fd < 0)
            continue;
        g_warning("closing passed fd %d (%s): nothing here uses it", passed->fd, passed->name);
        close(g_steal_fd(&passed->fd));
        /* Should it be from the store (a format another version wrote), out of it too: a later
         * version must not find it there, older than what the guests did since. */
        if (!g_str_equal(passed->name, "unknown")) {
            g_autofree char *message = g_strdup_printf("FDSTOREREMOVE=1\nFDNAME=%s", passed->name);

            sd_notify(0, message);
        }
    }
}
