/*
 * libsbtmover: the Oracle SBT 2.0 library of shmover.
 *
 * Each RMAN channel's server process calls these functions; backup blocks
 * go into a shared-memory ring of the local mover (one memcpy from RMAN's
 * buffer into a ring slot), control goes over the mover's Unix socket
 * through the shmover client library (shmover_client.h), linked in
 * statically.
 *
 * The exported names (sbtinit, sbtbackup, ...) are thin Rust trampolines
 * (src/lib.rs) that call the sbtmover_* functions here; the function table
 * returned by sbtinit points here directly.
 *
 * Rules kept throughout: all session state lives behind the context;
 * nothing aborts, exits, prints or raises a signal; every wait on the
 * mover is bounded by MOVER_TIMEOUT; errors carry the function, the piece
 * and the cause.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sbt.h"
#include "encode.h"
#include "shmover_client.h"

/* A caller's name for "%.*s": read no further than the longest legal name,
 * in case it is not terminated. */
#define NAME_ARG(n) (int)(SBT_FILENAME_MAX - 1), ((n) ? (n) : "(null)")

#define HIDDEN __attribute__((visibility("hidden")))
#define CTX_MAGIC 0x534254534D4F5652ULL /* "SBTSMOVR" */
#define DEFAULT_SOCKET "/var/lib/shmover/run/mover.sock"
#define DEFAULT_TIMEOUT_S 60
#define MAX_SLOT ((size_t)64 << 20)
#define MAX_ITEMS 4096
/* Settings text: a SEND command (under SBT_COMMAND_MAX), or a string item
 * of sbtinit2 (PARMS are at most 1000 bytes). */
#define SETTINGS_TEXT_MAX 1024

#ifndef SBTMOVER_VERSION_MAJOR
#define SBTMOVER_VERSION_MAJOR 0
#define SBTMOVER_VERSION_MINOR 0
#define SBTMOVER_VERSION_PATCH 0
#endif

/* ---- the context Oracle allocates for us -------------------------------- */

struct session;

typedef struct sbt_ctx {
    uint64_t magic;
    void *self;
    pid_t pid;
    struct session *s;
} sbt_ctx;

enum piece_state { IDLE, WRITING, READING };

struct setting {
    char socket[PATH_MAX];
    int have_socket;
    long timeout_s;
    int have_timeout;
    char label[SBT_LABEL_MAX];
    int have_label;
};

struct info_entry {
    char *name;
    sbt_ulong method, order, share;
    time_t cretime;
    char label[SBT_LABEL_MAX];
    char comment[SBT_COMMENT_MAX];
};

struct session {
    /* trace */
    int trace_fd;
    int trace_level;
    /* configuration: SEND > environment (snapshot at sbtinit2) > file */
    struct setting send, env, file;
    char config_path[PATH_MAX];
    /* connections: the stream's, and one for catalog calls while a piece is open */
    shmover_client_t *c;
    shmover_client_t *cat;
    int stale;
    /* the open piece */
    enum piece_state state;
    int failed;
    char piece[SBT_FILENAME_MAX];
    char enc[SBT_FILENAME_MAX * 3 + 1];
    size_t bs;
    uint64_t bytes, blocks;
    char failure[SBT_ERROR_TEXT_MAX];
    /* restore reassembly */
    const unsigned char *held;
    size_t hlen, hoff;
    int eof;
    /* sbtinfo2 output, valid until the next sbtinfo2 or sbtend */
    sbtbfinfo *items;
    struct info_entry *entries;
    size_t nentries;
    /* pending error */
    int err_pending;
    sbt_ulong err_code;
    char err_text[SBT_ERROR_TEXT_MAX];
    char err_utf8[SBT_ERROR_TEXT_MAX];
};

/* An error raised without a usable context (NULL, never initialised, after
 * sbtend): sbterror looks here first. */
static __thread struct {
    int pending;
    sbt_ulong code;
    char text[SBT_ERROR_TEXT_MAX];
    char utf8[SBT_ERROR_TEXT_MAX];
} tl_err;

/* The trace file name from sbtinit: per thread, with a process-wide
 * fallback for an sbtinit2 on another thread. */
static __thread char tl_trace_name[PATH_MAX];
/* This thread's sbtinit gave a trace name item (NULL: trace nowhere). */
static __thread int tl_trace_given;
static char g_trace_name[PATH_MAX];
static pthread_mutex_t g_trace_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- small helpers -------------------------------------------------------- */

static void copy_str(char *dst, size_t cap, const char *src) {
    if (cap == 0) return;
    size_t n = src ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

/* Copies text into a UTF-8-clean buffer (invalid bytes become '?'). */
static void utf8_clean(char *dst, size_t cap, const char *src) {
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)src;
    while (*p && o + 1 < cap) {
        int len = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        int ok = len > 0;
        for (int i = 1; ok && i < len; i++) ok = (p[i] & 0xC0) == 0x80;
        if (!ok || o + (size_t)len >= cap) {
            if (!ok) {
                dst[o++] = '?';
                p++;
                continue;
            }
            break;
        }
        memcpy(dst + o, p, (size_t)len);
        o += (size_t)len;
        p += len;
    }
    dst[o] = '\0';
}

static sbt_ctx *valid_ctx(void *ctx) {
    sbt_ctx *c = ctx;
    if (c == NULL || c->magic != CTX_MAGIC || c->self != c || c->s == NULL || c->pid != getpid()) return NULL;
    return c;
}

/* ---- trace ---------------------------------------------------------------- */

static void trace(struct session *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void trace(struct session *s, int level, const char *fmt, ...) {
    if (s == NULL || s->trace_fd < 0 || level > s->trace_level) return;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ pid=%d tid=%ld ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                     (int)getpid(), (long)syscall(SYS_gettid));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(s->trace_fd, line, len); /* one write: atomic append */
    (void)w;
}

static void trace_hex(struct session *s, const char *what, const void *buf, size_t len) {
    if (s == NULL || s->trace_level < 2 || buf == NULL) return;
    char hex[65];
    size_t n = len < 32 ? len : 32;
    for (size_t i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)buf)[i]);
    hex[2 * n] = '\0';
    trace(s, 2, "%s first %zu bytes: %s", what, n, hex);
}

/* ---- errors --------------------------------------------------------------- */

static void clear_error(struct session *s) {
    tl_err.pending = 0;
    if (s) s->err_pending = 0;
}

/* Records an error (in the session, or the thread slot) and returns -1. */
static int fail(struct session *s, sbt_ulong code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct session *s, sbt_ulong code, const char *fmt, ...) {
    char text[SBT_ERROR_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (s) {
        s->err_pending = 1;
        s->err_code = code;
        copy_str(s->err_text, sizeof s->err_text, text);
        utf8_clean(s->err_utf8, sizeof s->err_utf8, text);
        trace(s, 0, "error %lu: %s", code, text);
    } else {
        tl_err.pending = 1;
        tl_err.code = code;
        copy_str(tl_err.text, sizeof tl_err.text, text);
        utf8_clean(tl_err.utf8, sizeof tl_err.utf8, text);
    }
    return -1;
}

/* The sentence of the client's last error. */
static const char *client_error(shmover_client_t *c) {
    const char *e = shmover_last_error(c);
    return (e && *e) ? e : "unknown error";
}

/* ---- configuration ---------------------------------------------------------- */

/* Applies one KEY=VALUE; an empty value unsets the key. Returns -1, and
 * changes nothing, for a MOVER_TIMEOUT that is not a positive number of
 * seconds. Unknown keys are ignored (RMAN passes others of its own). */
static int setting_apply(struct setting *st, const char *key, const char *value) {
    if (strcmp(key, "MOVER_SOCKET") == 0) {
        st->have_socket = value[0] != '\0';
        copy_str(st->socket, sizeof st->socket, value);
    } else if (strcmp(key, "MOVER_TIMEOUT") == 0) {
        if (value[0] == '\0') {
            st->have_timeout = 0;
            st->timeout_s = 0;
            return 0;
        }
        char *end;
        errno = 0;
        long t = strtol(value, &end, 10);
        if (*end != '\0' || t <= 0 || errno != 0) return -1;
        st->have_timeout = 1;
        st->timeout_s = t;
    } else if (strcmp(key, "SBTMOVER_LABEL") == 0) {
        st->have_label = value[0] != '\0';
        copy_str(st->label, sizeof st->label, value);
    }
    return 0;
}

/* Loads KEY=VALUE lines ('#' comments, optional quotes) into s->file, all
 * or nothing: a file that cannot be read, is not a regular file, or holds
 * a bad value leaves the settings as they were and records the error. */
static int load_config_file(struct session *s, const char *fn, const char *path) {
    struct setting next;
    memset(&next, 0, sizeof next);
    if (path[0] == '\0') {
        s->file = next;
        s->config_path[0] = '\0';
        return 0;
    }
    /* Non-blocking, and checked before a byte is read: a FIFO (or a
     * device) named here must give an error, not hold the database
     * process in open() for ever. */
    int cfd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (cfd < 0) return fail(s, SBT_ERROR_MM, "%s: cannot read config file %s: %s", fn, path, strerror(errno));
    struct stat st;
    if (fstat(cfd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(cfd);
        return fail(s, SBT_ERROR_MM, "%s: config file %s is not a regular file", fn, path);
    }
    fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) & ~O_NONBLOCK);
    FILE *f = fdopen(cfd, "r");
    if (f == NULL) {
        close(cfd);
        return fail(s, SBT_ERROR_MM, "%s: cannot read config file %s: %s", fn, path, strerror(errno));
    }
    char line[PATH_MAX + 64];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            /* Too long to be a setting: skip the rest of it, so that its
             * tail is not read as a line of its own. */
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {
            }
            continue;
        }
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (*p == '#' || *p == '\0') continue;
        char *eq = strchr(p, '=');
        if (eq == NULL || eq == p) continue;
        *eq = '\0';
        char *key = p, *val = eq + 1;
        for (char *k = eq - 1; k >= key && isspace((unsigned char)*k); k--) *k = '\0';
        while (isspace((unsigned char)*val)) val++;
        size_t vl = strlen(val);
        while (vl > 0 && isspace((unsigned char)val[vl - 1])) val[--vl] = '\0';
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = '\0';
            val++;
        }
        if (setting_apply(&next, key, val) != 0) {
            fclose(f);
            return fail(s, SBT_ERROR_MM, "%s: config file %s, line %d: %s=%.40s is not a positive number of seconds",
                        fn, path, lineno, key, val);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) return fail(s, SBT_ERROR_MM, "%s: cannot read config file %s", fn, path);
    s->file = next;
    copy_str(s->config_path, sizeof s->config_path, path);
    trace(s, 1, "config file %s loaded", path);
    return 0;
}

static const char *cfg_socket(struct session *s) {
    if (s->send.have_socket) return s->send.socket;
    if (s->env.have_socket) return s->env.socket;
    if (s->file.have_socket) return s->file.socket;
    return DEFAULT_SOCKET;
}

static long cfg_timeout(struct session *s) {
    if (s->send.have_timeout) return s->send.timeout_s;
    if (s->env.have_timeout) return s->env.timeout_s;
    if (s->file.have_timeout) return s->file.timeout_s;
    return DEFAULT_TIMEOUT_S;
}

static const char *cfg_label(struct session *s) {
    if (s->send.have_label) return s->send.label;
    if (s->env.have_label) return s->env.label;
    if (s->file.have_label) return s->file.label;
    return "shmover";
}

static const char *socket_hint(struct session *s) {
    return (s->send.have_socket || s->env.have_socket || s->file.have_socket)
               ? ""
               : " (MOVER_SOCKET is not set: use PARMS 'ENV=(MOVER_SOCKET=...)' or SEND 'MOVER_SOCKET=...')";
}

/* ---- connections ------------------------------------------------------------ */

/* Connects a client; on failure records "<fn> <piece>: <cause>" and returns NULL. */
static shmover_client_t *connect_client(struct session *s, const char *fn, const char *piece) {
    char label[64];
    snprintf(label, sizeof label, "sbt pid=%d", (int)getpid());
    long t = cfg_timeout(s);
    int ms = t > INT_MAX / 1000 ? INT_MAX : (int)(t * 1000);
    shmover_client_t *c = NULL;
    int rc = shmover_connect(cfg_socket(s), SHMOVER_KIND_SBT, label, ms, &c);
    if (rc != SHMOVER_OK) {
        fail(s, SBT_ERROR_MM, "%s %s: %s%s", fn, piece, c ? client_error(c) : client_error(NULL), socket_hint(s));
        shmover_disconnect(c);
        return NULL;
    }
    trace(s, 1, "connected to the mover at %s", cfg_socket(s));
    return c;
}

/* The stream connection, (re)connected when missing, stale, or hung up
 * while it sat idle between calls (a mover restarted since): the call then
 * connects afresh rather than fail once on the dead connection. */
static shmover_client_t *stream_client(struct session *s, const char *fn, const char *piece) {
    if (s->c && !s->stale && shmover_broken(s->c)) {
        trace(s, 1, "the mover closed the idle connection; connecting again");
        s->stale = 1;
    }
    if (s->c && s->stale) {
        shmover_disconnect(s->c);
        s->c = NULL;
    }
    s->stale = 0;
    if (s->c == NULL) s->c = connect_client(s, fn, piece);
    return s->c;
}

/* The connection for catalog calls: the stream's when no piece is open. */
static shmover_client_t *catalog_client(struct session *s, const char *fn, const char *piece) {
    if (s->state == IDLE) return stream_client(s, fn, piece);
    if (s->cat && shmover_broken(s->cat)) {
        shmover_disconnect(s->cat);
        s->cat = NULL;
    }
    if (s->cat == NULL) s->cat = connect_client(s, fn, piece);
    return s->cat;
}

/* After a failure that left a connection unusable. */
static void drop_client(shmover_client_t **c) {
    shmover_disconnect(*c);
    *c = NULL;
}

/* Whether connection c, whose last call failed with rc, must be dropped. A
 * stream that failed keeps its connection broken whatever the code (the
 * store's STORE at sbtclose2, say): kept, it would fail every later call of
 * the channel until sbtend. */
static int broken(const shmover_client_t *c, int rc) {
    return rc == SHMOVER_ERR_DISCONNECTED || rc == SHMOVER_ERR_TIMEOUT || rc == SHMOVER_ERR_PROTOCOL ||
           rc == SHMOVER_ERR_RING || rc == SHMOVER_ERR_IO || rc == SHMOVER_ERR_INTERNAL ||
           rc == SHMOVER_ERR_UNREACHABLE || shmover_broken(c);
}

/* ---- names ------------------------------------------------------------------ */

/* SBT allows names the mover refuses ('./x', '/x', 'a//b'): encode.h. */
/* Checks a piece name argument; on success copies it and its encoding. A
 * name that could never have been stored fails with `unstorable`: 7501 for
 * a backup, 7502 (not found) for a restore, as sbtinfo2 and sbtremove2
 * treat it. */
static int take_name(struct session *s, const char *fn, const char *name, char *raw, char *enc, size_t enc_cap,
                     sbt_ulong unstorable) {
    if (name == NULL || name[0] == '\0') return fail(s, SBT_ERROR_MM, "%s: no piece name given", fn);
    if (strnlen(name, SBT_FILENAME_MAX) >= SBT_FILENAME_MAX)
        return fail(s, unstorable, "%s: piece name longer than %d bytes", fn, SBT_FILENAME_MAX - 1);
    copy_str(raw, SBT_FILENAME_MAX, name);
    if (shmover_encode_name(name, enc, enc_cap) != 0) return fail(s, unstorable, "%s %s: the name cannot be stored", fn, name);
    return 0;
}

/* ---- session lifecycle ------------------------------------------------------ */

static void free_info(struct session *s) {
    for (size_t i = 0; i < s->nentries; i++) free(s->entries[i].name);
    free(s->entries);
    free(s->items);
    s->entries = NULL;
    s->items = NULL;
    s->nentries = 0;
}

static void reset_piece(struct session *s) {
    s->state = IDLE;
    s->failed = 0;
    s->piece[0] = s->enc[0] = s->failure[0] = '\0';
    s->bs = 0;
    s->bytes = s->blocks = 0;
    s->held = NULL;
    s->hlen = s->hoff = 0;
    s->eof = 0;
    if (s->cat) drop_client(&s->cat);
}

/* Abandons whatever piece is open: nothing of it becomes visible. */
static void abandon_piece(struct session *s, const char *why) {
    if (s->state == WRITING && s->c) {
        if (shmover_abort(s->c, why) != SHMOVER_OK) drop_client(&s->c);
    } else if (s->state == READING && s->c) {
        if (shmover_close_read(s->c) != SHMOVER_OK) drop_client(&s->c);
    }
    if (s->state != IDLE) trace(s, 1, "piece %s abandoned: %s", s->piece, why);
    reset_piece(s);
}

static void end_session(sbt_ctx *c) {
    struct session *s = c->s;
    abandon_piece(s, "sbtend with the piece still open");
    free_info(s);
    if (s->c) drop_client(&s->c);
    trace(s, 1, "sbtend: exit 0, session ended");
    if (s->trace_fd >= 0) close(s->trace_fd);
    free(s);
    c->s = NULL;
    c->magic = 0;
    c->self = NULL;
}

/* ---- sbtinit ----------------------------------------------------------------- */

static sbt_ulong g_apivsn = SBT_APIVSN(2, 0);
static sbt_ulong g_ctxsize = sizeof(sbt_ctx);
static sbt_ulong g_mmsvsn = SBT_MMSVSN(SBTMOVER_VERSION_MAJOR, SBTMOVER_VERSION_MINOR, SBTMOVER_VERSION_PATCH, 0);
static char g_desc[] = "shmover SBT library (shared-memory data mover)";

HIDDEN int sbtmover_sbtbackup(void *, sbt_ulong, char *, sbtobject *, size_t, size_t, unsigned int, unsigned int);
HIDDEN int sbtmover_sbtclose2(void *, sbt_ulong);
HIDDEN int sbtmover_sbtcommand(void *, sbt_ulong, char *);
HIDDEN int sbtmover_sbtend(void *, sbt_ulong);
HIDDEN int sbtmover_sbterror(void *, sbt_ulong, sbt_ulong *, char **, char **);
HIDDEN int sbtmover_sbtinfo2(void *, sbt_ulong, char **, sbtbfinfo **);
HIDDEN int sbtmover_sbtinit2(void *, sbt_ulong, sbtinit2_input *, sbtinit2_output **);
HIDDEN int sbtmover_sbtread2(void *, sbt_ulong, void *);
HIDDEN int sbtmover_sbtremove2(void *, sbt_ulong, char **);
HIDDEN int sbtmover_sbtrestore(void *, sbt_ulong, char *, size_t);
HIDDEN int sbtmover_sbtwrite2(void *, sbt_ulong, void *);
HIDDEN int sbtmover_sbtpcbackup(void *, sbt_ulong, sbt_ulong *, char *, char *, sbtobject *, sbt_ulong, sbt_ulong,
                                sbt_ulong, unsigned int);
HIDDEN int sbtmover_sbtpccancel(void *, sbt_ulong, sbt_ulong);
HIDDEN int sbtmover_sbtpccommit(void *, sbt_ulong, sbt_ulong);
HIDDEN int sbtmover_sbtpcend(void *, sbt_ulong);
HIDDEN int sbtmover_sbtpcquerybackup(void *, sbt_ulong, char *);
HIDDEN int sbtmover_sbtpcqueryrestore(void *, sbt_ulong, char *, char *);
HIDDEN int sbtmover_sbtpcrestore(void *, sbt_ulong, sbt_ulong *, char *, char *, sbt_ulong);
HIDDEN int sbtmover_sbtpcstart(void *, sbt_ulong, sbt_ulong, sbt_ulong);
HIDDEN int sbtmover_sbtpcstatus(void *, sbt_ulong, sbt_ulong, sbt_ulong *, unsigned int *);
HIDDEN int sbtmover_sbtpcvalidate(void *, sbt_ulong);

static const sbt_mms_fptr g_table = {
    sbtmover_sbtbackup,       sbtmover_sbtclose2,   sbtmover_sbtcommand,       sbtmover_sbtend,
    sbtmover_sbterror,        sbtmover_sbtinfo2,    sbtmover_sbtinit2,         sbtmover_sbtread2,
    sbtmover_sbtremove2,      sbtmover_sbtrestore,  sbtmover_sbtwrite2,        sbtmover_sbtpcbackup,
    sbtmover_sbtpccancel,     sbtmover_sbtpccommit, sbtmover_sbtpcend,         sbtmover_sbtpcquerybackup,
    sbtmover_sbtpcqueryrestore, sbtmover_sbtpcrestore, sbtmover_sbtpcstart,    sbtmover_sbtpcstatus,
    sbtmover_sbtpcvalidate,
};
_Static_assert(sizeof(sbt_mms_fptr) == 21 * sizeof(void (*)(void)), "21 slots");
_Static_assert(sizeof(sbt_item) == 16, "item layout");

static sbtinit_output g_out[] = {
    {SBTINIT_MMS_APIVSN, &g_apivsn}, {SBTINIT_MMS_DESC, g_desc},   {SBTINIT_MMS_FPTR, (void *)&g_table},
    {SBTINIT_CTXSIZE, &g_ctxsize},   {SBTINIT_MMSVSN, &g_mmsvsn},  {SBTINIT_OUTEND, NULL},
};

HIDDEN int sbtmover_sbtinit(bserc *se, sbtinit_input *in, sbtinit_output **out) {
    if (se == NULL) return -1;
    se->bsercoer = 0;
    se->bsercerrno = 0;
    if (out == NULL) {
        se->bsercoer = SBTINIT_ERROR_ARG;
        se->bsercerrno = EINVAL;
        return -1;
    }
    for (int i = 0; in != NULL && i < MAX_ITEMS && in[i].type != SBTINIT_INEND; i++) {
        if (in[i].type != SBTINIT_TRACE_NAME) continue;
        const char *name = in[i].value;
        tl_trace_given = 1;
        if (name == NULL) {
            /* No trace file: not this thread's, nor one an earlier call
             * named for threads that never call sbtinit. */
            tl_trace_name[0] = '\0';
            pthread_mutex_lock(&g_trace_lock);
            g_trace_name[0] = '\0';
            pthread_mutex_unlock(&g_trace_lock);
            continue;
        }
        if (strnlen(name, PATH_MAX) >= PATH_MAX) {
            se->bsercoer = SBTINIT_ERROR_ARG;
            se->bsercerrno = ENAMETOOLONG;
            return -1;
        }
        copy_str(tl_trace_name, sizeof tl_trace_name, name);
        pthread_mutex_lock(&g_trace_lock);
        copy_str(g_trace_name, sizeof g_trace_name, name);
        pthread_mutex_unlock(&g_trace_lock);
    }
    *out = g_out;
    return 0;
}

/* ---- sbtinit2 ---------------------------------------------------------------- */

static int apply_command(struct session *s, struct setting *target, const char *fn, const char *cmd);

/* An environment value without one pair of enclosing quotes: ENV=(K='v')
 * may reach getenv with its quotes. */
static const char *unquoted(const char *v, char *out, size_t cap) {
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '\'' || v[0] == '"') && v[n - 1] == v[0] && n - 2 < cap) {
        memcpy(out, v + 1, n - 2);
        out[n - 2] = '\0';
        return out;
    }
    return v;
}

/* Copies the text at `p` into `out` if it reads as a string: readable,
 * ended by a NUL within cap - 1 bytes, and printable (UTF-8 allowed).
 * Returns its length, or 0 for anything else. The item's type is not one
 * we know, so `p` may point at an integer, or at nothing mapped: it is
 * read with process_vm_readv, which reports EFAULT where a plain read
 * would fault, and in two pieces split at the page boundary so that a
 * string ending just before an unmapped page still reads. */
static size_t probe_text(const void *p, char *out, size_t cap) {
    if (p == NULL || cap < 2) return 0;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) page = 4096;
    uintptr_t a = (uintptr_t)p;
    size_t want = cap - 1;
    size_t first = (size_t)page - (size_t)(a % (uintptr_t)page);
    if (first > want) first = want;
    struct iovec local = {out, want};
    struct iovec remote[2] = {{(void *)p, first}, {(void *)(a + first), want - first}};
    ssize_t n = process_vm_readv(getpid(), &local, 1, remote, want > first ? 2 : 1, 0);
    if (n <= 0) return 0;
    size_t len = 0;
    while (len < (size_t)n && out[len] != '\0') len++;
    if (len == (size_t)n || len == 0) return 0; /* no NUL within reach, or empty */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)out[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return 0;
    }
    return len;
}

/* sbtinit2 items of types this library does not know: each is traced
 * (level 1) and, where its value reads as a string holding KEY=VALUE
 * settings, applied over the environment's. Whether Oracle passes the
 * channel's SBT_PARMS this way or as environment variables is not
 * documented (specs/sbt.md 4.8): both are accepted. */
static int apply_string_items(struct session *s, sbtinit2_input *in) {
    for (int i = 0; in != NULL && i < MAX_ITEMS && in[i].type != SBTINIT2_END; i++) {
        sbt_ulong type = in[i].type;
        if (type == SBTINIT2_TRACE_LEVEL || type == SBTINIT2_CLIENT_APIVSN) continue;
        if (type == SBTINIT2_OPERATOR_NOTIFY) {
            trace(s, 1, "sbtinit2: item type %lu (operator notify): announced", type);
            continue;
        }
        char text[SETTINGS_TEXT_MAX];
        size_t n = probe_text(in[i].value, text, sizeof text);
        if (n == 0) {
            trace(s, 1, "sbtinit2: item type %lu: not a string, ignored", type);
            continue;
        }
        if (strchr(text, '=') == NULL) {
            trace(s, 1, "sbtinit2: item type %lu: a string of %zu bytes without settings, ignored", type, n);
            continue;
        }
        trace(s, 1, "sbtinit2: item type %lu: a string of %zu bytes, read as settings", type, n);
        if (apply_command(s, &s->env, "sbtinit2", text) != 0) return -1;
    }
    return 0;
}


HIDDEN int sbtmover_sbtinit2(void *ctx, sbt_ulong flags, sbtinit2_input *in, sbtinit2_output **out) {
    (void)flags;
    (void)out; /* no output items are defined: left untouched */
    tl_err.pending = 0;
    sbt_ctx *c = ctx;
    if (c == NULL) return fail(NULL, SBT_ERROR_MM, "sbtinit2: no context");
    struct session *s = valid_ctx(ctx) ? c->s : NULL;
    int fresh = s == NULL;
    if (fresh) {
        s = calloc(1, sizeof *s);
        if (s == NULL) return fail(NULL, SBT_ERROR_MM, "sbtinit2: out of memory");
        s->trace_fd = -1;
        const char *tn = tl_trace_name;
        char fallback[PATH_MAX];
        if (tn[0] == '\0' && !tl_trace_given) {
            pthread_mutex_lock(&g_trace_lock);
            copy_str(fallback, sizeof fallback, g_trace_name);
            pthread_mutex_unlock(&g_trace_lock);
            tn = fallback;
        }
        /* O_NONBLOCK: a FIFO named as the trace file, with no reader or a
         * slow one, drops trace lines rather than block the database. */
        if (tn[0] != '\0')
            s->trace_fd = open(tn, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0640);
        for (int i = 0; in != NULL && i < MAX_ITEMS && in[i].type != SBTINIT2_END; i++)
            if (in[i].type == SBTINIT2_TRACE_LEVEL && in[i].value) s->trace_level = (int)*(sbt_ulong *)in[i].value;
        const char *v;
        char uq[PATH_MAX];
        int bad = 0;
        if ((v = getenv("MOVER_SOCKET"))) setting_apply(&s->env, "MOVER_SOCKET", unquoted(v, uq, sizeof uq));
        if ((v = getenv("MOVER_TIMEOUT")) && setting_apply(&s->env, "MOVER_TIMEOUT", unquoted(v, uq, sizeof uq)) != 0)
            bad = fail(s, SBT_ERROR_MM, "sbtinit2: MOVER_TIMEOUT=%.40s is not a positive number of seconds", v);
        if ((v = getenv("SBTMOVER_LABEL"))) setting_apply(&s->env, "SBTMOVER_LABEL", unquoted(v, uq, sizeof uq));
        const char *cfg = getenv("SBTMOVER_CONFIG");
        if (bad == 0 && cfg && cfg[0]) bad = load_config_file(s, "sbtinit2", unquoted(cfg, uq, sizeof uq));
        /* Settings in string items: over the environment's, under SEND's. */
        if (bad == 0) bad = apply_string_items(s, in);
        if (bad != 0) {
            /* keep the error: it goes to the thread slot since the session is not installed */
            tl_err.pending = 1;
            tl_err.code = s->err_code;
            copy_str(tl_err.text, sizeof tl_err.text, s->err_text);
            utf8_clean(tl_err.utf8, sizeof tl_err.utf8, s->err_text);
            if (s->trace_fd >= 0) close(s->trace_fd);
            free(s);
            return -1;
        }
    }
    clear_error(s);
    for (int i = 0; in != NULL && i < MAX_ITEMS && in[i].type != SBTINIT2_END; i++) {
        switch (in[i].type) {
        case SBTINIT2_TRACE_LEVEL:
            if (in[i].value) s->trace_level = (int)*(sbt_ulong *)in[i].value;
            break;
        case SBTINIT2_CLIENT_APIVSN:
            if (in[i].value) trace(s, 1, "client API version %#lx", *(sbt_ulong *)in[i].value);
            break;
        default: /* traced, and string settings applied, by apply_string_items */
            break;
        }
    }
    if (fresh) {
        c->magic = CTX_MAGIC;
        c->self = c;
        c->pid = getpid();
        c->s = s;
    }
    trace(s, 1, "sbtinit2: exit 0, session ready, trace level %d, socket %s, timeout %lds", s->trace_level, cfg_socket(s),
          cfg_timeout(s));
    return 0;
}

/* Entry of every v2 call that needs a session. */
#define SESSION(fn)                                                                                      \
    sbt_ctx *c_ = valid_ctx(ctx);                                                                        \
    tl_err.pending = 0;                                                                                  \
    if (c_ == NULL)                                                                                      \
        return fail(NULL, SBT_ERROR_MM, "%s: no session (sbtinit2 was not called, or sbtend was)", fn); \
    struct session *s = c_->s;                                                                           \
    clear_error(s);                                                                                      \
    trace(s, 1, "%s: enter", fn)

/* ---- sbtcommand -------------------------------------------------------------- */

/* Splits on ',' ' ' '\t' outside quotes (a quoted value may hold spaces
 * and commas) and applies the KEY=VALUE tokens to `target`; an
 * SBTMOVER_CONFIG token loads that file into s->file. `fn` names the
 * call in errors. Returns 0, or -1 with the error recorded (the caller
 * undoes what was applied: see settings_save). */
static int apply_command(struct session *s, struct setting *target, const char *fn, const char *cmd) {
    const char *p = cmd;
    while (isspace((unsigned char)*p)) p++;
    char buf[SETTINGS_TEXT_MAX];
    copy_str(buf, sizeof buf, p);
    char *body = buf;
    size_t bl = strlen(body);
    while (bl > 0 && isspace((unsigned char)body[bl - 1])) body[--bl] = '\0';
    if (strncasecmp(body, "ENV=(", 5) == 0 && bl > 5 && body[bl - 1] == ')') {
        body[bl - 1] = '\0';
        body += 5;
    }
    char tok[SETTINGS_TEXT_MAX];
    const char *q = body;
    int rc = 0;
    while (*q && rc == 0) {
        while (*q == ',' || *q == ' ' || *q == '\t') q++;
        if (!*q) break;
        size_t t = 0;
        char quote = 0;
        while (*q && (quote || (*q != ',' && *q != ' ' && *q != '\t'))) {
            if (!quote && (*q == '\'' || *q == '"')) quote = *q;
            else if (quote && *q == quote) quote = 0;
            else tok[t++] = *q;
            q++;
        }
        tok[t] = '\0';
        char *eq = strchr(tok, '=');
        if (eq == NULL) continue;
        *eq = '\0';
        const char *key = tok, *val = eq + 1;
        /* Arguments are level 2; a value whose key looks like a credential,
         * in any case, is never written. */
        int secret = strcasestr(key, "PASSW") || strcasestr(key, "PWD") || strcasestr(key, "SECRET") ||
                     strcasestr(key, "TOKEN") || strcasestr(key, "CREDENTIAL") || strcasestr(key, "KEY");
        trace(s, 2, "%s: %s=%s", fn, key, secret ? "(hidden)" : val);
        if (strcmp(key, "SBTMOVER_CONFIG") == 0) {
            if (load_config_file(s, fn, val) == 0) s->stale = 1;
            else rc = -1;
            continue;
        }
        if (setting_apply(target, key, val) != 0) {
            rc = fail(s, SBT_ERROR_MM, "%s: %s=%.40s is not a positive number of seconds", fn, key, val);
            continue;
        }
        if (strcmp(key, "MOVER_SOCKET") == 0 || strcmp(key, "MOVER_TIMEOUT") == 0) s->stale = 1;
    }
    return rc;
}

/* The settings a command may change, kept so that a command that fails
 * changes nothing: all of it applies, or none. */
struct settings_saved {
    struct setting send, env, file;
    char config_path[PATH_MAX];
    int stale;
};

static void settings_save(const struct session *s, struct settings_saved *k) {
    k->send = s->send;
    k->env = s->env;
    k->file = s->file;
    memcpy(k->config_path, s->config_path, sizeof k->config_path);
    k->stale = s->stale;
}

static void settings_restore(struct session *s, const struct settings_saved *k) {
    s->send = k->send;
    s->env = k->env;
    s->file = k->file;
    memcpy(s->config_path, k->config_path, sizeof s->config_path);
    s->stale = k->stale;
}

HIDDEN int sbtmover_sbtcommand(void *ctx, sbt_ulong flags, char *command) {
    (void)flags;
    SESSION("sbtcommand");
    if (command == NULL) return fail(s, SBT_ERROR_MM, "sbtcommand: no command given");
    if (strnlen(command, SBT_COMMAND_MAX) >= SBT_COMMAND_MAX)
        return fail(s, SBT_ERROR_MM, "sbtcommand: command longer than %d bytes", SBT_COMMAND_MAX - 1);
    /* A config file named by SEND that cannot be read, or a bad value,
     * fails the whole command: what it set before the bad token is undone. */
    struct settings_saved *before = malloc(sizeof *before);
    if (before == NULL) return fail(s, SBT_ERROR_MM, "sbtcommand: out of memory");
    settings_save(s, before);
    int rc = apply_command(s, &s->send, "sbtcommand", command);
    if (rc != 0) settings_restore(s, before);
    free(before);
    if (rc != 0) return -1;
    trace(s, 1, "sbtcommand: exit 0");
    return 0;
}

/* ---- backup ------------------------------------------------------------------ */

HIDDEN int sbtmover_sbtbackup(void *ctx, sbt_ulong flags, char *name, sbtobject *file_info, size_t block_size,
                              size_t max_size, unsigned int copy_number, unsigned int media_pool) {
    (void)flags;
    SESSION("sbtbackup");
    if (s->state != IDLE)
        return fail(s, SBT_ERROR_MM, "sbtbackup %.*s: a file is already open (%s)", NAME_ARG(name), s->piece);
    char raw[SBT_FILENAME_MAX];
    if (take_name(s, "sbtbackup", name, raw, s->enc, sizeof s->enc, SBT_ERROR_MM) != 0) return -1;
    if (block_size == 0) return fail(s, SBT_ERROR_MM, "sbtbackup %s: block size 0", raw);
    char dbname[SBT_DBNAME_MAX] = "", dbid[32] = "", ftype[32] = "", bs[32], copy[16], pool[16];
    for (int i = 0; file_info != NULL && i < MAX_ITEMS && file_info[i].type != SBTOBJECT_END; i++) {
        void *v = file_info[i].value;
        if (v == NULL) continue;
        if (file_info[i].type == SBTOBJECT_DBNAME) copy_str(dbname, sizeof dbname, v);
        else if (file_info[i].type == SBTOBJECT_DBID) snprintf(dbid, sizeof dbid, "%lu", *(sbt_ulong *)v);
        else if (file_info[i].type == SBTOBJECT_FILETYPE) snprintf(ftype, sizeof ftype, "%lu", *(sbt_ulong *)v);
    }
    snprintf(bs, sizeof bs, "%zu", block_size);
    snprintf(copy, sizeof copy, "%u", copy_number);
    snprintf(pool, sizeof pool, "%u", media_pool);
    /* Metadata is UTF-8: a Latin-1 handle, database name or label keeps its
     * other bytes as %XX. */
    char name_text[3 * SBT_FILENAME_MAX], db_text[3 * SBT_DBNAME_MAX], label_text[3 * 256];
    if (shmover_utf8_text(raw, name_text, sizeof name_text) != 0) name_text[0] = '\0';
    if (shmover_utf8_text(dbname, db_text, sizeof db_text) != 0) db_text[0] = '\0';
    if (shmover_utf8_text(cfg_label(s), label_text, sizeof label_text) != 0) label_text[0] = '\0';
    const char *meta[] = {"sbt.name", name_text, "sbt.dbname", db_text, "sbt.dbid", dbid, "sbt.filetype", ftype,
                          "sbt.block_size", bs, "sbt.copy", copy, "sbt.media_pool", pool, "sbt.label", label_text,
                          NULL};
    trace(s, 2, "sbtbackup %s block_size=%zu max_size=%zu copy=%u pool=%u dbname=%s dbid=%s", raw, block_size,
          max_size, copy_number, media_pool, dbname, dbid);
    shmover_client_t *cl = stream_client(s, "sbtbackup", raw);
    if (cl == NULL) return -1;
    size_t slot = block_size < MAX_SLOT ? block_size : MAX_SLOT;
    int rc = shmover_open_write(cl, s->enc, slot, 0, meta);
    if (rc == SHMOVER_ERR_ALREADY_EXISTS)
        return fail(s, SBT_ERROR_EXISTS, "sbtbackup %s: a backup piece of that name exists", raw);
    if (rc != SHMOVER_OK) {
        fail(s, SBT_ERROR_MM, "sbtbackup %s: %s", raw, client_error(cl));
        if (broken(cl, rc)) drop_client(&s->c);
        return -1;
    }
    s->state = WRITING;
    copy_str(s->piece, sizeof s->piece, raw);
    s->bs = block_size;
    trace(s, 1, "sbtbackup: exit 0, %s open", raw);
    return 0;
}

HIDDEN int sbtmover_sbtwrite2(void *ctx, sbt_ulong flags, void *buf) {
    (void)flags;
    SESSION("sbtwrite2");
    if (s->state != WRITING) return fail(s, SBT_ERROR_MM, "sbtwrite2: no piece is open for writing");
    if (buf == NULL) return fail(s, SBT_ERROR_MM, "sbtwrite2 %s: no buffer", s->piece);
    if (s->failed) return fail(s, SBT_ERROR_MM, "sbtwrite2 %s: the piece already failed: %s", s->piece, s->failure);
    trace_hex(s, "sbtwrite2", buf, s->bs);
    const unsigned char *p = buf;
    size_t rem = s->bs;
    while (rem > 0) {
        void *slot;
        size_t cap;
        int rc = shmover_reserve(s->c, &slot, &cap);
        if (rc == SHMOVER_OK) {
            size_t n = rem < cap ? rem : cap;
            memcpy(slot, p, n); /* the one copy: RMAN's buffer into the ring */
            rc = shmover_commit_block(s->c, n);
            p += n;
            rem -= n;
        }
        if (rc != SHMOVER_OK) {
            s->failed = 1;
            copy_str(s->failure, sizeof s->failure, client_error(s->c));
            return fail(s, SBT_ERROR_MM, "sbtwrite2 %s: block %llu: %s", s->piece, (unsigned long long)s->blocks,
                        s->failure);
        }
    }
    s->blocks++;
    s->bytes += s->bs;
    trace(s, 1, "sbtwrite2: exit 0");
    return 0;
}

/* ---- restore ------------------------------------------------------------------ */

HIDDEN int sbtmover_sbtrestore(void *ctx, sbt_ulong flags, char *name, size_t block_size) {
    (void)flags;
    SESSION("sbtrestore");
    if (s->state != IDLE)
        return fail(s, SBT_ERROR_MM, "sbtrestore %.*s: a file is already open (%s)", NAME_ARG(name), s->piece);
    char raw[SBT_FILENAME_MAX];
    if (take_name(s, "sbtrestore", name, raw, s->enc, sizeof s->enc, SBT_ERROR_NOTFOUND) != 0) return -1;
    trace(s, 2, "sbtrestore %s: block_size=%zu", raw, block_size);
    if (block_size == 0) return fail(s, SBT_ERROR_MM, "sbtrestore %s: block size 0", raw);
    shmover_client_t *cl = stream_client(s, "sbtrestore", raw);
    if (cl == NULL) return -1;
    uint64_t size = 0;
    size_t slot = block_size < MAX_SLOT ? block_size : MAX_SLOT;
    int rc = shmover_open_read(cl, s->enc, slot, &size);
    if (rc == SHMOVER_ERR_NOT_FOUND || rc == SHMOVER_ERR_BAD_NAME)
        return fail(s, SBT_ERROR_NOTFOUND, "sbtrestore %s: backup piece not found", raw);
    if (rc != SHMOVER_OK) {
        fail(s, SBT_ERROR_MM, "sbtrestore %s: %s", raw, client_error(cl));
        if (broken(cl, rc)) drop_client(&s->c);
        return -1;
    }
    s->state = READING;
    copy_str(s->piece, sizeof s->piece, raw);
    s->bs = block_size;
    trace(s, 1, "sbtrestore: exit 0, %s open, %llu bytes", raw, (unsigned long long)size);
    return 0;
}

HIDDEN int sbtmover_sbtread2(void *ctx, sbt_ulong flags, void *buf) {
    (void)flags;
    SESSION("sbtread2");
    if (s->state != READING) return fail(s, SBT_ERROR_MM, "sbtread2: no piece is open for reading");
    if (buf == NULL) return fail(s, SBT_ERROR_MM, "sbtread2 %s: no buffer", s->piece);
    if (s->failed) return fail(s, SBT_ERROR_MM, "sbtread2 %s: the restore already failed: %s", s->piece, s->failure);
    unsigned char *out = buf;
    size_t filled = 0;
    while (filled < s->bs) {
        if (s->held == NULL) {
            if (s->eof) break;
            const void *p;
            size_t len;
            int rc = shmover_read_next(s->c, &p, &len);
            if (rc == SHMOVER_END) {
                s->eof = 1;
                break;
            }
            if (rc != SHMOVER_OK) {
                s->failed = 1;
                copy_str(s->failure, sizeof s->failure, client_error(s->c));
                return fail(s, SBT_ERROR_MM, "sbtread2 %s: at byte %llu: %s", s->piece, (unsigned long long)s->bytes,
                            s->failure);
            }
            s->held = p;
            s->hlen = len;
            s->hoff = 0;
        }
        size_t n = s->bs - filled;
        if (n > s->hlen - s->hoff) n = s->hlen - s->hoff;
        memcpy(out + filled, s->held + s->hoff, n);
        filled += n;
        s->hoff += n;
        s->bytes += n;
        if (s->hoff == s->hlen) {
            s->held = NULL;
            shmover_read_release(s->c);
        }
    }
    if (filled == 0) return fail(s, SBT_ERROR_EOF, "sbtread2 %s: end of the backup piece", s->piece);
    s->blocks++;
    trace_hex(s, "sbtread2", buf, filled);
    trace(s, 1, "sbtread2: exit 0, %zu bytes", filled);
    return 0; /* a short last block leaves the rest of the buffer untouched */
}

/* ---- close -------------------------------------------------------------------- */

HIDDEN int sbtmover_sbtclose2(void *ctx, sbt_ulong flags) {
    SESSION("sbtclose2");
    if (s->state == IDLE) return fail(s, SBT_ERROR_MM, "sbtclose2: no file is open");
    char piece[SBT_FILENAME_MAX];
    copy_str(piece, sizeof piece, s->piece);
    int ret = 0;
    if (s->state == WRITING) {
        if (flags & SBTCLOSE2_ABORT) {
            abandon_piece(s, "sbtclose2 with SBTCLOSE2_ABORT");
            trace(s, 1, "sbtclose2: exit 0 (aborted)");
            return 0;
        }
        if (s->failed) {
            char why[SBT_ERROR_TEXT_MAX];
            copy_str(why, sizeof why, s->failure);
            abandon_piece(s, "the piece failed earlier");
            return fail(s, SBT_ERROR_MM, "sbtclose2 %s: not saved, a write failed: %s", piece, why);
        }
        shmover_info_t *info = NULL;
        int rc = shmover_commit(s->c, &info);
        if (rc == SHMOVER_OK) {
            trace(s, 1, "sbtclose2 %s: saved, %llu bytes, crc32c %08x", piece,
                  (unsigned long long)shmover_info_size(info), shmover_info_crc32c(info));
            shmover_info_free(info);
        } else {
            ret = fail(s, SBT_ERROR_MM, "sbtclose2 %s: not saved: %s", piece, client_error(s->c));
            if (broken(s->c, rc)) drop_client(&s->c);
        }
    } else {
        if (s->held) {
            shmover_read_release(s->c);
            s->held = NULL;
        }
        if (shmover_close_read(s->c) != SHMOVER_OK) drop_client(&s->c);
    }
    reset_piece(s);
    if (ret == 0) trace(s, 1, "sbtclose2: exit 0");
    return ret;
}

/* ---- catalog -------------------------------------------------------------------- */

HIDDEN int sbtmover_sbtinfo2(void *ctx, sbt_ulong flags, char **names, sbtbfinfo **out) {
    (void)flags;
    SESSION("sbtinfo2");
    if (names == NULL || out == NULL) return fail(s, SBT_ERROR_MM, "sbtinfo2: no name list or output");
    free_info(s);
    size_t n = 0;
    while (n < MAX_ITEMS && names[n] != NULL) n++;
    if (names[n] != NULL) return fail(s, SBT_ERROR_MM, "sbtinfo2: more than %d names in one call", MAX_ITEMS);
    s->entries = calloc(n ? n : 1, sizeof *s->entries);
    s->items = calloc(n * 8 + 1, sizeof *s->items);
    if (s->entries == NULL || s->items == NULL) {
        free_info(s);
        return fail(s, SBT_ERROR_MM, "sbtinfo2: out of memory");
    }
    s->nentries = n;
    shmover_client_t *cl = NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct info_entry *e = &s->entries[i];
        e->name = strndup(names[i], SBT_FILENAME_MAX - 1);
        if (e->name == NULL) {
            free_info(s);
            return fail(s, SBT_ERROR_MM, "sbtinfo2: out of memory");
        }
        s->items[k++] = (sbtbfinfo){SBTBFINFO_NAME, e->name};
        char enc[SBT_FILENAME_MAX * 3 + 1];
        if (strnlen(names[i], SBT_FILENAME_MAX) >= SBT_FILENAME_MAX || shmover_encode_name(names[i], enc, sizeof enc) != 0) {
            s->items[k++] = (sbtbfinfo){SBTBFINFO_NOTFOUND, NULL};
            continue;
        }
        if (cl == NULL && (cl = catalog_client(s, "sbtinfo2", names[i])) == NULL) {
            free_info(s);
            return -1; /* an outage is not "not found": CROSSCHECK must not expire good backups */
        }
        shmover_info_t *info = NULL;
        int rc = shmover_stat(cl, enc, &info);
        if (rc == SHMOVER_ERR_NOT_FOUND || rc == SHMOVER_ERR_BAD_NAME) {
            s->items[k++] = (sbtbfinfo){SBTBFINFO_NOTFOUND, NULL};
            continue;
        }
        if (rc != SHMOVER_OK) {
            fail(s, SBT_ERROR_MM, "sbtinfo2 %s: %s", names[i], client_error(cl));
            if (broken(cl, rc)) drop_client(cl == s->c ? &s->c : &s->cat);
            free_info(s);
            return -1;
        }
        e->method = SBTBFINFO_METHOD_STREAM;
        e->order = SBTBFINFO_ORDER_SEQUENTIAL;
        e->share = SBTBFINFO_SHARE_MULTIPLE;
        e->cretime = (time_t)(shmover_info_created_ms(info) / 1000);
        const char *label = shmover_info_meta(info, "sbt.label");
        copy_str(e->label, sizeof e->label, label && *label ? label : "shmover");
        snprintf(e->comment, sizeof e->comment, "shmover size=%llu crc32c=%08x",
                 (unsigned long long)shmover_info_size(info), shmover_info_crc32c(info));
        shmover_info_free(info);
        s->items[k++] = (sbtbfinfo){SBTBFINFO_METHOD, &e->method};
        s->items[k++] = (sbtbfinfo){SBTBFINFO_ORDER, &e->order};
        s->items[k++] = (sbtbfinfo){SBTBFINFO_SHARE, &e->share};
        s->items[k++] = (sbtbfinfo){SBTBFINFO_CRETIME, &e->cretime};
        s->items[k++] = (sbtbfinfo){SBTBFINFO_LABEL, e->label};
        s->items[k++] = (sbtbfinfo){SBTBFINFO_COMMENT, e->comment};
    }
    s->items[k] = (sbtbfinfo){SBTBFINFO_END, NULL};
    *out = s->items;
    trace(s, 1, "sbtinfo2: exit 0");
    return 0;
}

HIDDEN int sbtmover_sbtremove2(void *ctx, sbt_ulong flags, char **names) {
    (void)flags;
    SESSION("sbtremove2");
    if (names == NULL) return fail(s, SBT_ERROR_MM, "sbtremove2: no name list");
    char missing[SBT_ERROR_TEXT_MAX] = "", failed[SBT_ERROR_TEXT_MAX] = "";
    size_t ml = 0, fl = 0;
    size_t count = 0;
    while (count < MAX_ITEMS && names[count] != NULL) count++;
    if (names[count] != NULL) return fail(s, SBT_ERROR_MM, "sbtremove2: more than %d names in one call", MAX_ITEMS);
    for (size_t i = 0; i < count; i++) {
        char enc[SBT_FILENAME_MAX * 3 + 1];
        int rc;
        shmover_client_t *cl = NULL;
        if (strnlen(names[i], SBT_FILENAME_MAX) >= SBT_FILENAME_MAX || shmover_encode_name(names[i], enc, sizeof enc) != 0) {
            rc = SHMOVER_ERR_NOT_FOUND;
        } else if ((cl = catalog_client(s, "sbtremove2", names[i])) == NULL) {
            return -1;
        } else {
            rc = shmover_delete(cl, enc);
        }
        if (rc == SHMOVER_OK) {
            trace(s, 1, "sbtremove2 %s: deleted", names[i]);
        } else if (rc == SHMOVER_ERR_NOT_FOUND || rc == SHMOVER_ERR_BAD_NAME) {
            if (ml < sizeof missing)
                ml += (size_t)snprintf(missing + ml, sizeof missing - ml, "%s%.*s", ml ? ", " : "", NAME_ARG(names[i]));
        } else {
            if (fl < sizeof failed)
                fl += (size_t)snprintf(failed + fl, sizeof failed - fl, "%s%s (%s)", fl ? ", " : "", names[i],
                                       client_error(cl));
            if (broken(cl, rc)) drop_client(cl == s->c ? &s->c : &s->cat);
        }
    }
    if (failed[0]) return fail(s, SBT_ERROR_MM, "sbtremove2: could not delete %s", failed);
    if (missing[0]) return fail(s, SBT_ERROR_NOTFOUND, "sbtremove2: not found: %s", missing);
    trace(s, 1, "sbtremove2: exit 0");
    return 0;
}

/* ---- errors and the end -------------------------------------------------------- */

HIDDEN int sbtmover_sbterror(void *ctx, sbt_ulong flags, sbt_ulong *code, char **text_native, char **text_utf8) {
    (void)flags;
    /* Does not clear: a second call returns the same error. */
    sbt_ctx *c = valid_ctx(ctx);
    struct session *s = c ? c->s : NULL;
    trace(s, 1, "sbterror: enter");
    if (tl_err.pending) {
        if (code) *code = tl_err.code;
        if (text_native) *text_native = tl_err.text;
        if (text_utf8) *text_utf8 = tl_err.utf8;
        trace(s, 1, "sbterror: exit 0, code %lu", tl_err.code);
        return 0;
    }
    if (s && s->err_pending) {
        if (code) *code = s->err_code;
        if (text_native) *text_native = s->err_text;
        if (text_utf8) *text_utf8 = s->err_utf8;
        trace(s, 1, "sbterror: exit 0, code %lu", s->err_code);
        return 0;
    }
    trace(s, 1, "sbterror: exit -1, no error pending");
    return -1;
}

HIDDEN int sbtmover_sbtend(void *ctx, sbt_ulong flags) {
    (void)flags; /* SBTEND_ABEND from another process: the pid check below leaves it alone */
    tl_err.pending = 0;
    sbt_ctx *c = valid_ctx(ctx);
    if (c == NULL) return 0;
    clear_error(c->s);
    trace(c->s, 1, "sbtend%s", (flags & SBTEND_ABEND) ? " (abnormal end)" : "");
    end_session(c);
    return 0;
}

/* ---- proxy copy: not supported, not advertised --------------------------------- */

static int no_proxy(void *ctx, const char *fn) {
    sbt_ctx *c = valid_ctx(ctx);
    tl_err.pending = 0;
    return fail(c ? c->s : NULL, SBT_ERROR_NOPROXY, "%s: proxy copy is not supported by libsbtmover", fn);
}

HIDDEN int sbtmover_sbtpcbackup(void *ctx, sbt_ulong f, sbt_ulong *h, char *b, char *o, sbtobject *i, sbt_ulong r1,
                                sbt_ulong r2, sbt_ulong bs, unsigned int mp) {
    (void)f, (void)h, (void)b, (void)o, (void)i, (void)r1, (void)r2, (void)bs, (void)mp;
    return no_proxy(ctx, "sbtpcbackup");
}
HIDDEN int sbtmover_sbtpccancel(void *ctx, sbt_ulong f, sbt_ulong h) {
    (void)f, (void)h;
    return no_proxy(ctx, "sbtpccancel");
}
HIDDEN int sbtmover_sbtpccommit(void *ctx, sbt_ulong f, sbt_ulong h) {
    (void)f, (void)h;
    return no_proxy(ctx, "sbtpccommit");
}
HIDDEN int sbtmover_sbtpcend(void *ctx, sbt_ulong f) {
    (void)f;
    sbt_ctx *c = valid_ctx(ctx);
    clear_error(c ? c->s : NULL); /* a v2 call clears any pending error */
    return 0;
}
HIDDEN int sbtmover_sbtpcquerybackup(void *ctx, sbt_ulong f, char *o) {
    (void)f, (void)o;
    return no_proxy(ctx, "sbtpcquerybackup");
}
HIDDEN int sbtmover_sbtpcqueryrestore(void *ctx, sbt_ulong f, char *b, char *o) {
    (void)f, (void)b, (void)o;
    return no_proxy(ctx, "sbtpcqueryrestore");
}
HIDDEN int sbtmover_sbtpcrestore(void *ctx, sbt_ulong f, sbt_ulong *h, char *b, char *o, sbt_ulong r) {
    (void)f, (void)h, (void)b, (void)o, (void)r;
    return no_proxy(ctx, "sbtpcrestore");
}
HIDDEN int sbtmover_sbtpcstart(void *ctx, sbt_ulong f, sbt_ulong h, sbt_ulong sz) {
    (void)f, (void)h, (void)sz;
    return no_proxy(ctx, "sbtpcstart");
}
HIDDEN int sbtmover_sbtpcstatus(void *ctx, sbt_ulong f, sbt_ulong h, sbt_ulong *ho, unsigned int *st) {
    (void)f, (void)h, (void)ho, (void)st;
    sbt_ctx *c = valid_ctx(ctx);
    tl_err.pending = 0;
    return fail(c ? c->s : NULL, SBT_ERROR_NOWORK, "sbtpcstatus: no proxy work in progress");
}
HIDDEN int sbtmover_sbtpcvalidate(void *ctx, sbt_ulong f) {
    (void)f;
    return no_proxy(ctx, "sbtpcvalidate");
}
