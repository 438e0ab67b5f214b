/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmctl: the command-line client of microvmd. Shared state of the commands, the exit codes
 * (documented in docs/man/microvmctl.1.rst: keep both in step) and the helpers the commands use.
 */
#pragma once

#include <gio/gio.h>
#include <glib/gi18n.h>
#include <json-glib/json-glib.h>

#include "mvmd-dbus-generated.h"
#include "names.h"

G_BEGIN_DECLS

/* gdbus-codegen defines these for the classes only, not for the interfaces. */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdManager, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdVm, g_object_unref)

/* Exit codes: one per kind of failure, so scripts can tell them apart. */
typedef enum {
    MCTL_EXIT_OK = 0,
    MCTL_EXIT_FAILED = 1,           /* Failed, and every error not below (microvmctl-bus.c) */
    MCTL_EXIT_USAGE = 2,            /* bad command line */
    MCTL_EXIT_NO_DAEMON = 3,        /* no connection, or microvmd is not running */
    MCTL_EXIT_NO_SUCH_VM = 4,       /* NoSuchVM */
    MCTL_EXIT_INVALID_STATE = 5,    /* InvalidState */
    MCTL_EXIT_INVALID_ARGUMENT = 6, /* InvalidArgument */
    MCTL_EXIT_ALREADY_EXISTS = 7,   /* AlreadyExists */
    MCTL_EXIT_NOT_AUTHORIZED = 8,   /* NotAuthorized (polkit said no) */
    MCTL_EXIT_TIMEOUT = 9,          /* Timeout, or no reply in time */
    MCTL_EXIT_LOCAL_IO = 10,        /* a local file or the terminal failed */
} MctlExit;

/* Local errors carry their exit code as the error code. */
#define MCTL_ERROR (mctl_error_quark())
GQuark mctl_error_quark(void);

typedef struct {
    /* From the command line: where the daemon is. */
    char *address;
    char *socket_path;
    gboolean session;
    gboolean system;
    /* Made on first use (mctl_connection()). */
    GDBusConnection *connection;
    /* The daemon's bus name; NULL on a peer-to-peer socket (no bus in between). */
    const char *bus_name;
    gboolean json;
    /* Progress lines go to stderr only when it is a terminal. */
    gboolean show_progress;
} Mctl;

typedef int (*MctlCommandFunc)(Mctl *ctl, int argc, char **argv);

/* microvmctl.c: command-line parsing shared by the commands. */
/* Parses @argc/@argv (argv[0] is the command) with @entries plus the common options. @params
 * is the usage text after the command name, e.g. "NAME". Returns FALSE after printing why
 * (the caller exits with MCTL_EXIT_USAGE). Leaves the positional arguments in @argc/@argv. */
gboolean mctl_parse(Mctl *ctl, const GOptionEntry *entries, const char *params, const char *summary,
                    int *argc, char ***argv);
/* Checks that exactly @n positional arguments follow the command; prints why not. */
gboolean mctl_want_args(int argc, int n, const char *usage);
/* The --json option of the commands that print something. */
#define JSON_ENTRY(ctl)                                                                            \
    {                                                                                              \
        "json", 'j', 0, G_OPTION_ARG_NONE, &(ctl)->json, N_("Print JSON"), NULL                    \
    }
int mctl_usage_error(const char *format, ...) G_GNUC_PRINTF(1, 2);

/* microvmctl-bus.c: the connection, proxies, calls and errors. */
GDBusConnection *mctl_connection(Mctl *ctl, GError **error);
MvmdManager *mctl_manager(Mctl *ctl, GError **error);
MvmdVm *mctl_vm_by_name(Mctl *ctl, const char *name, GError **error);
MvmdVm *mctl_vm_by_path(Mctl *ctl, const char *path, GError **error);
GDBusObjectManager *mctl_object_manager(Mctl *ctl, GError **error);
/* Every VM the daemon has, sorted by name, from one GetManagedObjects round trip. */
GPtrArray *mctl_all_vms(GDBusObjectManager *manager);
/* Calls @method on @proxy; @args NULL means the method's arguments with empty defaults (so an
 * added a{sv} options argument needs no change here). While the call runs longer than a moment
 * on a terminal, shows @progress (may be NULL) with the seconds elapsed on stderr. */
GVariant *mctl_call(Mctl *ctl, GDBusProxy *proxy, const char *method, GVariant *args,
                    GUnixFDList *fds, int timeout_ms, const char *progress, GError **error);
/* Finds the VM @name and calls @method on it (@args: floating, or NULL for the defaults);
 * prints the error and returns the exit code (microvmctl-commands.c). */
int mctl_vm_call(Mctl *ctl, const char *name, const char *method, GVariant *args, GUnixFDList *fds,
                 int timeout_ms, const char *progress);
/* Prints "microvmctl: @what: message" (the daemon's message without the D-Bus error name) and
 * returns the exit code for @error. */
int mctl_fail(const GError *error, const char *what);
int mctl_exit_code(const GError *error);

/* microvmctl-output.c: tables, JSON, human formats. */
void mctl_print_json(JsonNode *node, gboolean pretty);
JsonNode *mctl_json_from_variant(GVariant *value);
/* Guest output is untrusted: make it valid UTF-8 and drop terminal control characters. */
char *mctl_sanitize(const char *text, gssize len);
char *mctl_format_duration_us(gint64 us);
char *mctl_format_mib(guint64 mib);
char *mctl_format_time_us(guint64 realtime_us);
typedef struct MctlTable MctlTable;
MctlTable *mctl_table_new(guint n_columns, const char *const *headers);
void mctl_table_add(MctlTable *table, const char *const *cells);
void mctl_table_print(MctlTable *table);
/* The same, each line after @indent spaces (a table inside a section). */
void mctl_table_print_indented(MctlTable *table, guint indent);
void mctl_table_free(MctlTable *table);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MctlTable, mctl_table_free)

/* microvmctl-console.c */
/* Reads the console's replay until it has been quiet for a moment; returns the last @n lines. */
GStrv mctl_console_tail(Mctl *ctl, MvmdVm *vm, guint n, GError **error);

/* The commands, one function each. */
int mctl_cmd_list(Mctl *ctl, int argc, char **argv);
int mctl_cmd_status(Mctl *ctl, int argc, char **argv);
int mctl_cmd_stats(Mctl *ctl, int argc, char **argv);
int mctl_cmd_create(Mctl *ctl, int argc, char **argv);
int mctl_cmd_verb(Mctl *ctl, int argc, char **argv);
int mctl_cmd_pause(Mctl *ctl, int argc, char **argv);
int mctl_cmd_shutdown(Mctl *ctl, int argc, char **argv);
int mctl_cmd_snapshot(Mctl *ctl, int argc, char **argv);
int mctl_cmd_restore(Mctl *ctl, int argc, char **argv);
int mctl_cmd_working_set(Mctl *ctl, int argc, char **argv);
int mctl_cmd_console(Mctl *ctl, int argc, char **argv);
int mctl_cmd_events(Mctl *ctl, int argc, char **argv);
int mctl_cmd_info(Mctl *ctl, int argc, char **argv);
int mctl_cmd_cpu(Mctl *ctl, int argc, char **argv);
int mctl_cmd_set(Mctl *ctl, int argc, char **argv);

/* microvmctl-resources.c: a rate limit (none, RATE, SIZE/MS) as a{sv} for the daemon, floating;
 * NULL and a G_OPTION_ERROR naming @what when @text is none of them. */
GVariant *mctl_parse_rate_limit(const char *what, const char *text, GError **error);

G_END_DECLS
