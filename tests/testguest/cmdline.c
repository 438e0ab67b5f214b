/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kernel command line: space-separated "key=value" or bare "key" words.
 */
#include "guest.h"

#define CMDLINE_COPY_MAX 2048
#define MAX_ARGS         48

static char raw[CMDLINE_COPY_MAX];
static char words[CMDLINE_COPY_MAX];
static struct {
    const char *key;
    const char *value; /* "" for a bare key */
} args[MAX_ARGS];
static unsigned n_args;

void cmdline_init(const char *cmdline)
{
    size_t n = 0;

    if (cmdline)
        while (n < CMDLINE_COPY_MAX - 1 && cmdline[n])
            n++;
    memcpy(raw, cmdline ? cmdline : "", n);
    raw[n] = '\0';
    memcpy(words, raw, n + 1);

    char *p = words;
    while (*p && n_args < MAX_ARGS) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            *p++ = '\0';
        if (!*p)
            break;
        args[n_args].key = p;
        args[n_args].value = "";
        while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
            if (*p == '=' && !*args[n_args].value) {
                *p = '\0';
                args[n_args].value = p + 1;
            }
            p++;
        }
        n_args++;
    }
}

const char *cmdline_raw(void)
{
    return raw;
}

/* The last occurrence wins, as on Linux. */
static int find(const char *key)
{
    for (int i = (int)n_args - 1; i >= 0; i--)
        if (!strcmp(args[i].key, key))
            return i;
    return -1;
}

bool arg_present(const char *key)
{
    return find(key) >= 0;
}

const char *arg_str(const char *key, const char *def)
{
    int i = find(key);
    return i >= 0 ? args[i].value : def;
}

/* Decimal, 0x-hex, or decimal with an exponent ("1e8"). Anything else gives def. */
u64 arg_u64(const char *key, u64 def)
{
    const char *s = arg_str(key, NULL);
    u64 v = 0;

    if (!s || !*s)
        return def;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        if (!*s)
            return def;
        for (; *s; s++) {
            unsigned d;
            if (*s >= '0' && *s <= '9')
                d = (unsigned)(*s - '0');
            else if (*s >= 'a' && *s <= 'f')
                d = (unsigned)(*s - 'a' + 10);
            else if (*s >= 'A' && *s <= 'F')
                d = (unsigned)(*s - 'A' + 10);
            else
                return def;
            v = v * 16 + d;
        }
        return v;
    }
    const char *start = s;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (u64)(*s - '0');
    if (s == start)
        return def;
    if (*s == 'e' || *s == 'E') {
        unsigned exp = 0;
        for (s++; *s >= '0' && *s <= '9'; s++)
            exp = exp * 10 + (unsigned)(*s - '0');
        while (exp--)
            v *= 10;
    }
    return *s ? def : v;
}
