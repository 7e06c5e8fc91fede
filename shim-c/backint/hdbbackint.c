/*
 * hdbbackint: the SAP HANA BACKINT program of shmover.
 *
 *   hdbbackint -f backup|restore|inquire|delete [-p PARAMFILE] [-i IN] [-o OUT]
 *              [-u USER] [-s BACKUPID] [-c COUNT] [-l LEVEL] [-v|-V]
 *
 * HANA writes an input file of #PIPE/#FILE/#EBID/#NULL lines; we answer in
 * the output file with #SAVED/#RESTORED/#BACKUP/#DELETED/#NOTFOUND/#ERROR.
 * Backup drains every pipe at the same time, one thread, one mover
 * connection and one shared-memory ring per pipe, read() going straight
 * into ring slots. Objects are named USER/PATH/EBID in the mover's backint
 * namespace (see common/encode.h), so every version
 * of a path is kept.
 *
 * Exit codes: 0 every line got a definitive answer, 1 any #ERROR or a
 * fatal error, 2 usage or parameter-file errors.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "encode.h"
#include "shmover_client.h"

#ifndef HDBBACKINT_VERSION
#define HDBBACKINT_VERSION "0.0.0"
#endif
#define OUR_API 150
#define MAX_NAME 1024
#define MAX_PATH_TEXT (3 * MAX_NAME + 1)

/* ---- settings ------------------------------------------------------------------ */

static struct {
    char socket[PATH_MAX];
    int have_socket;
    long timeout_s;
    long pipe_timeout_s;
    long pipe_peer_timeout_s;
    size_t block_size;
    size_t restore_block_size;
    char log_file[PATH_MAX];
    int log_level; /* 0 error, 1 warn, 2 info, 3 debug */
    char label[64];
} cfg = {.timeout_s = 60, .pipe_timeout_s = 60, .pipe_peer_timeout_s = 1800, .block_size = 1 << 20, .log_level = 2,
         .label = "hdbbackint"};

static const char *fn_name = "?";
static char user[256] = "", backup_id[64] = "", level[64] = "", count[32] = "";
static int api = 0; /* HANA's offered version as MAJOR*100+MINOR; 0 if no #SOFTWAREID */
static int log_fd = 2;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int out_fd = 1;
static volatile int any_error;
static char hana_id[256] = "";

/* ---- log ------------------------------------------------------------------------ */

static void logm(int lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logm(int lvl, const char *fmt, ...) {
    if (lvl > cfg.log_level) return;
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[4096];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ hdbbackint[%d] %s u=%s s=%s %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), (int)getpid(), fn_name, user, backup_id, names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    (void)w;
}

/* ---- output --------------------------------------------------------------------- */

/* Appends a value in output form: always quoted, only '"' escaped. A value
 * ending in '\' cannot be quoted faithfully: written bare if possible. */
static void put_value(char *buf, size_t cap, size_t *o, const char *v) {
    size_t n = strlen(v);
    int bare = n > 0 && v[n - 1] == '\\' && strpbrk(v, " \t\"") == NULL;
    if (!bare && *o < cap) buf[(*o)++] = '"';
    for (size_t i = 0; i < n && *o + 2 < cap; i++) {
        if (v[i] == '"' && !bare) buf[(*o)++] = '\\';
        buf[(*o)++] = v[i];
    }
    if (!bare && *o < cap) buf[(*o)++] = '"';
}

/* Whether a value can be written back in BACKINT's quoting: a quoted value
 * cannot end in '\' (it would read as an escaped quote), and a value with a
 * space, tab or quote must be quoted. */
static int representable(const char *v) {
    size_t n = strlen(v);
    return n == 0 || v[n - 1] != '\\' || strpbrk(v, " \t\"") == NULL;
}

/* Writes one output line: KEYWORD then values (quoted) then an optional bare number. */
static void out_line(const char *kw, const char *v1, const char *v2, const char *bare, const char *v3) {
    char buf[8192];
    size_t o = 0;
    o += (size_t)snprintf(buf, sizeof buf, "%s", kw);
    const char *vals[] = {v1, v2};
    for (int i = 0; i < 2; i++)
        if (vals[i]) {
            buf[o++] = ' ';
            put_value(buf, sizeof buf - 64, &o, vals[i]);
        }
    if (bare) o += (size_t)snprintf(buf + o, sizeof buf - o, " %s", bare);
    if (v3) {
        buf[o++] = ' ';
        put_value(buf, sizeof buf - 8, &o, v3);
    }
    buf[o++] = '\n';
    pthread_mutex_lock(&out_lock);
    size_t done = 0;
    while (done < o) {
        ssize_t w = write(out_fd, buf + done, o - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            any_error = 1;
            break;
        }
        done += (size_t)w;
    }
    pthread_mutex_unlock(&out_lock);
    if (strcmp(kw, "#ERROR") == 0) any_error = 1;
    logm(2, "output: %.*s", (int)o - 1, buf);
}

/* ---- tokenizer (spec 2.1) ----------------------------------------------------- */

#define MAX_TOKENS 8
typedef struct line_tokens {
    char kw[32];
    int n;
    char *tok[MAX_TOKENS];
    int malformed;
    const char *rest; /* raw text after the keyword */
} line_tokens;

/* Splits one input line. Returns 0 for a comment (no known keyword). */
static int tokenize(char *line, line_tokens *t) {
    memset(t, 0, sizeof *t);
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') line[--len] = '\0';
    if (line[0] != '#') return 0;
    size_t k = strcspn(line, " \t");
    if (k >= sizeof t->kw) return 0;
    memcpy(t->kw, line, k);
    t->kw[k] = '\0';
    static const char *known[] = {"#SOFTWAREID", "#TOOLOPTION", "#PIPE", "#FILE", "#NULL", "#EBID"};
    int ok = 0;
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok |= strcmp(t->kw, known[i]) == 0;
    if (!ok) return 0;
    char *p = line + k;
    while (*p == ' ' || *p == '\t') p++;
    t->rest = p;
    /* Tokens are unescaped in place into a copy. */
    char *copy = strdup(p);
    if (copy == NULL) {
        t->malformed = 1;
        return 1;
    }
    char *r = copy, *w = copy;
    while (*r && t->n < MAX_TOKENS) {
        while (*r == ' ' || *r == '\t') r++;
        if (!*r) break;
        t->tok[t->n++] = w;
        if (*r == '"') {
            r++;
            int closed = 0;
            while (*r) {
                if (r[0] == '\\' && r[1] == '"') {
                    *w++ = '"';
                    r += 2;
                } else if (*r == '"') {
                    closed = 1;
                    r++;
                    break;
                } else {
                    *w++ = *r++;
                }
            }
            if (!closed || (*r && *r != ' ' && *r != '\t')) t->malformed = 1;
        } else {
            while (*r && *r != ' ' && *r != '\t') {
                if (r[0] == '\\' && r[1] == '"') {
                    *w++ = '"';
                    r += 2;
                } else if (*r == '"') {
                    t->malformed = 1;
                    r++;
                } else {
                    *w++ = *r++;
                }
            }
        }
        /* An unquoted token without escapes was copied onto itself (w ==
         * r): the terminator then lands on the separator, so step past
         * the separator by what it was, not by what is there now. */
        char sep = *r;
        *w++ = '\0';
        if (sep) r++;
    }
    return 1;
}

/* ---- names ------------------------------------------------------------------------ */

/* Names: USER/PATH/EBID, encoded as libsbtmover encodes piece names. */
/* "USER/PATH/" (the prefix of every version of a path). */
static int path_prefix(const char *path, char *out, size_t cap) {
    char u[768], p[MAX_NAME * 3 + 1];
    if (shmover_encode_segment(user, u, sizeof u) || shmover_encode_name(path, p, sizeof p)) return -1;
    int n = snprintf(out, cap, "%s/%s/", u, p);
    return n < 0 || (size_t)n >= cap || n > MAX_NAME ? -1 : 0;
}

static int object_name(const char *path, const char *ebid, char *out, size_t cap) {
    char pre[MAX_NAME * 4], e[768];
    if (path_prefix(path, pre, sizeof pre) || shmover_encode_segment(ebid, e, sizeof e)) return -1;
    int n = snprintf(out, cap, "%s%s", pre, e);
    return n < 0 || (size_t)n >= cap || n > MAX_NAME ? -1 : 0;
}

/* ---- mover connections -------------------------------------------------------------- */

static shmover_client_t *connect_mover(const char *what) {
    char label[512];
    snprintf(label, sizeof label, "%.64s pid=%d %s u=%.256s", cfg.label, (int)getpid(), fn_name, user);
    long ms = cfg.timeout_s > INT_MAX / 1000 ? INT_MAX : cfg.timeout_s * 1000;
    shmover_client_t *c = NULL;
    int rc = shmover_connect(cfg.have_socket ? cfg.socket : NULL, SHMOVER_KIND_BACKINT, label, (int)ms, &c);
    if (rc != SHMOVER_OK) {
        logm(0, "%s: %s", what, shmover_last_error(c));
        shmover_disconnect(c);
        return NULL;
    }
    return c;
}

/* The catalog connection for the next line. One that a failed call left
 * broken (a listing slower than the timeout, a mover restarted) is replaced,
 * so that one failure fails its own line and not every line after it. */
static shmover_client_t *catalog_for_next_line(shmover_client_t **cat) {
    if (*cat == NULL || shmover_broken(*cat)) {
        if (*cat) logm(1, "the catalog connection broke; connecting again");
        shmover_disconnect(*cat);
        *cat = connect_mover("catalog");
    }
    return *cat;
}

static uint64_t now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)(tv.tv_usec / 1000);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- backup ---------------------------------------------------------------------- */

typedef struct item {
    char *path;
    int is_file;
    uint64_t hint;
    char ebid[32];
    char *dest;
    char want_ebid[256];
    int by_ebid;
    pthread_t th;
    int started;
} item;

/* Opens a backup source: retries ENOENT up to pipe_timeout_s, then waits
 * for the writer (a FIFO read before a writer opened would be a false EOF). */
static int open_source(const char *path, char *why, size_t cap) {
    uint64_t deadline = now_ms() + (uint64_t)cfg.pipe_timeout_s * 1000;
    long backoff = 100;
    int fd;
    for (;;) {
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) break;
        if (errno == EINTR) continue;
        if (errno != ENOENT || now_ms() >= deadline) {
            snprintf(why, cap, "cannot open %s: %s", path, errno == ENOENT ? "it never appeared" : strerror(errno));
            return -1;
        }
        sleep_ms(backoff);
        backoff = backoff * 2 > 3000 ? 3000 : backoff * 2;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, cap, "stat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (S_ISFIFO(st.st_mode)) {
        struct pollfd pfd = {fd, POLLIN, 0};
        long left = cfg.pipe_peer_timeout_s * 1000;
        int r;
        do {
            r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        } while (r < 0 && errno == EINTR);
        if (r <= 0) {
            snprintf(why, cap, "no writer opened %s within %lds", path, cfg.pipe_peer_timeout_s);
            close(fd);
            return -1;
        }
    } else if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode)) {
        snprintf(why, cap, "%s is neither a pipe nor a file", path);
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

/* A #PIPE that fails before we open it: HANA's writer may be blocked in
 * open(O_WRONLY) for want of a reader, and would stay there after we exit.
 * Opening the read end releases it; closing it then makes its writes fail
 * with EPIPE, and our #ERROR says why. HANA may open its end just after
 * we looked, so the read end stays open for up to a second, until the
 * writer has written (POLLIN) or come and gone (POLLHUP): a writer that
 * arrives in that second is released too. */
#define RELEASE_GRACE_MS 1000
static void release_writer(const char *path) {
    struct stat st;
    if (path == NULL || stat(path, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    uint64_t end = now_ms() + RELEASE_GRACE_MS;
    for (;;) {
        uint64_t now = now_ms();
        if (now >= end) break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, (int)(end - now));
        if (n > 0 || (n < 0 && errno != EINTR)) break;
    }
    close(fd);
}

static void *backup_item(void *arg) {
    item *it = arg;
    char why[1024] = "", name[MAX_NAME + 1];
    shmover_client_t *c = connect_mover(it->path);
    int fd = -1, opened = 0;
    uint64_t bytes = 0, t0 = now_ms();
    if (c == NULL) {
        release_writer(it->path);
        out_line("#ERROR", it->path, NULL, NULL, NULL);
        return NULL;
    }
    char hint[32];
    snprintf(hint, sizeof hint, "%llu", (unsigned long long)it->hint);
    /* Metadata is UTF-8 text: a path or argument in another encoding
     * (Latin-1) keeps its other bytes as %XX there. The object's name
     * keeps the exact bytes, and inquire reads the path back from it. */
    char path_text[MAX_PATH_TEXT], user_text[3 * sizeof user], id_text[3 * sizeof backup_id],
        level_text[3 * sizeof level];
    if (shmover_utf8_text(it->path, path_text, sizeof path_text) != 0) path_text[0] = '\0';
    if (shmover_utf8_text(user, user_text, sizeof user_text) != 0) user_text[0] = '\0';
    if (shmover_utf8_text(backup_id, id_text, sizeof id_text) != 0) id_text[0] = '\0';
    if (shmover_utf8_text(level, level_text, sizeof level_text) != 0) level_text[0] = '\0';
    for (int attempt = 0; attempt < 100; attempt++) {
        if (object_name(it->path, it->ebid, name, sizeof name) != 0) {
            snprintf(why, sizeof why, "the path cannot be stored (too long)");
            break;
        }
        const char *meta[] = {"backint.path", path_text, "backint.ebid", it->ebid, "backint.type",
                              it->is_file ? "FILE" : "PIPE", "backint.user", user_text, "backint.backup_id", id_text,
                              "backint.level", level_text, "backint.count", count, "backint.size_hint", hint, NULL};
        int rc = shmover_open_write(c, name, cfg.block_size, it->hint, meta);
        if (rc == SHMOVER_OK) {
            opened = 1;
            break;
        }
        if (rc != SHMOVER_ERR_ALREADY_EXISTS) {
            snprintf(why, sizeof why, "%s", shmover_last_error(c));
            break;
        }
        /* Another process took this EBID for this path: the next one. */
        snprintf(it->ebid, sizeof it->ebid, "%llu", strtoull(it->ebid, NULL, 10) + 1);
    }
    if (opened) fd = open_source(it->path, why, sizeof why);
    int sourced = fd >= 0;
    if (fd >= 0) {
        int eof = 0, failed = 0;
        while (!eof && !failed) {
            void *slot;
            size_t cap, fill = 0;
            if (shmover_reserve(c, &slot, &cap) != SHMOVER_OK) {
                snprintf(why, sizeof why, "%s", shmover_last_error(c));
                failed = 1;
                break;
            }
            while (fill < cap) { /* read() straight into the ring slot */
                ssize_t n = read(fd, (char *)slot + fill, cap - fill);
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) {
                    snprintf(why, sizeof why, "reading %s: %s", it->path, strerror(errno));
                    failed = 1;
                    break;
                }
                if (n == 0) {
                    eof = 1;
                    break;
                }
                fill += (size_t)n;
            }
            if (!failed && fill > 0) {
                if (shmover_commit_block(c, fill) != SHMOVER_OK) {
                    snprintf(why, sizeof why, "%s", shmover_last_error(c));
                    failed = 1;
                }
                bytes += fill;
            }
        }
        close(fd); /* at once: a writer still there gets EPIPE, not a hang */
        fd = -1;
        if (!failed) {
            shmover_info_t *info = NULL;
            if (shmover_commit(c, &info) == SHMOVER_OK && shmover_info_size(info) == bytes) {
                char b[32];
                snprintf(b, sizeof b, "%llu", (unsigned long long)bytes);
                out_line("#SAVED", it->ebid, it->path, b, NULL);
                double s = (double)(now_ms() - t0) / 1000.0;
                logm(2, "saved %s as %s: %llu bytes in %.3f s (%.3f GB/s)", it->path, name,
                     (unsigned long long)bytes, s, s > 0 ? (double)bytes / s / 1e9 : 0.0);
                shmover_info_free(info);
                shmover_disconnect(c);
                return NULL;
            }
            if (info != NULL) {
                /* Stored, but not what we read: it must not become the
                 * newest version of the path. */
                snprintf(why, sizeof why, "the mover stored %llu bytes of %llu",
                         (unsigned long long)shmover_info_size(info), (unsigned long long)bytes);
                if (shmover_delete(c, name) != SHMOVER_OK)
                    logm(0, "could not delete %s after a size mismatch: %s", name, shmover_last_error(c));
            } else {
                snprintf(why, sizeof why, "commit: %s", shmover_last_error(c));
            }
            shmover_info_free(info);
            opened = 0;
        }
    }
    if (opened) shmover_abort(c, why);
    if (!sourced && !it->is_file) release_writer(it->path);
    logm(0, "backup of %s failed: %s", it->path, why);
    out_line("#ERROR", it->path, NULL, NULL, NULL);
    shmover_disconnect(c);
    return NULL;
}

/* ---- catalog lookups ------------------------------------------------------------ */

typedef struct version {
    char ebid[512];
    char path[MAX_NAME + 1];
    int64_t created;
    char type[8];
} version;

static int cmp_versions(const void *a, const void *b) {
    const version *x = a, *y = b;
    if (x->created != y->created) return x->created < y->created ? 1 : -1;
    size_t lx = strlen(x->ebid), ly = strlen(y->ebid);
    if (lx != ly) return lx < ly ? 1 : -1;
    return -strcmp(x->ebid, y->ebid);
}

/* Versions under `prefix` (ends with '/'); with `direct`, only names right
 * below it (the versions of one path). Sorted newest first. Returns the
 * count, or -1 on error (why set). */
static int list_versions(shmover_client_t *c, const char *prefix, int direct, const char *only_ebid, version **out,
                         char *why, size_t cap) {
    *out = NULL;
    shmover_list_t *l = NULL;
    int rc = shmover_list(c, prefix, 0, &l);
    if (rc == SHMOVER_ERR_BAD_NAME) return 0;
    if (rc != SHMOVER_OK) {
        snprintf(why, cap, "%s", shmover_last_error(c));
        return -1;
    }
    size_t n = shmover_list_len(l), k = 0;
    version *v = calloc(n ? n : 1, sizeof *v);
    if (v == NULL) {
        shmover_list_free(l);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < n; i++) {
        const shmover_info_t *info = shmover_list_get(l, i);
        const char *nm = shmover_info_name(info);
        if (strncmp(nm, prefix, plen) != 0) continue;
        const char *rest = nm + plen;
        const char *last = strrchr(nm, '/');
        if (direct && strchr(rest, '/') != NULL) continue;
        if (last == NULL) continue;
        char e[512];
        if (shmover_percent_decode(last + 1, e, sizeof e) != 0) continue;
        if (only_ebid && strcmp(e, only_ebid) != 0) continue;
        /* A BACKINT object has its path in its metadata (as UTF-8 text);
         * the exact bytes are in its name, USER/PATH/EBID. */
        if (shmover_info_meta(info, "backint.path") == NULL) continue;
        const char *first = strchr(nm, '/');
        char enc[sizeof v[k].path * 3 + 1];
        size_t el = first && last > first ? (size_t)(last - first - 1) : 0;
        if (el == 0 || el >= sizeof enc) continue;
        memcpy(enc, first + 1, el);
        enc[el] = '\0';
        if (shmover_percent_decode(enc, v[k].path, sizeof v[k].path) != 0) continue;
        snprintf(v[k].ebid, sizeof v[k].ebid, "%s", e);
        const char *t = shmover_info_meta(info, "backint.type");
        snprintf(v[k].type, sizeof v[k].type, "%s", t ? t : "PIPE");
        v[k].created = shmover_info_created_ms(info);
        k++;
    }
    shmover_list_free(l);
    qsort(v, k, sizeof *v, cmp_versions);
    *out = v;
    return (int)k;
}

static void iso_ms(int64_t ms, char *out, size_t cap) {
    /* A time the mover should never send (before 1970, or past what
     * gmtime can express) prints as the epoch, not as garbage. */
    if (ms < 0) ms = 0;
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm) == NULL) {
        s = 0;
        ms = 0;
        gmtime_r(&s, &tm);
    }
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* ---- restore -------------------------------------------------------------------- */

/* Opens the restore destination: a FIFO HANA created (O_WRONLY|O_NONBLOCK
 * with retries while it has no reader), else a regular file. */
static int open_dest(const char *dest, const char *type, char *why, size_t cap) {
    uint64_t start = now_ms();
    long backoff = 50;
    for (;;) {
        struct stat st;
        if (stat(dest, &st) != 0) {
            if (errno != ENOENT) {
                snprintf(why, cap, "stat %s: %s", dest, strerror(errno));
                return -1;
            }
            if (strcmp(type, "FILE") == 0) {
                int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
                if (fd < 0) snprintf(why, cap, "creating %s: %s", dest, strerror(errno));
                return fd;
            }
            if (now_ms() - start >= (uint64_t)cfg.pipe_timeout_s * 1000) {
                snprintf(why, cap, "the pipe %s never appeared", dest);
                return -1;
            }
        } else if (S_ISFIFO(st.st_mode)) {
            int fd = open(dest, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
            if (fd >= 0) {
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
                return fd;
            }
            if (errno != ENXIO && errno != ENOENT && errno != EINTR) {
                snprintf(why, cap, "opening %s: %s", dest, strerror(errno));
                return -1;
            }
            if (now_ms() - start >= (uint64_t)cfg.pipe_peer_timeout_s * 1000) {
                snprintf(why, cap, "no reader opened %s within %lds", dest, cfg.pipe_peer_timeout_s);
                return -1;
            }
        } else if (S_ISREG(st.st_mode)) {
            /* Truncated once the object's stream is open: a restore that
             * cannot start leaves the file as it was. */
            int fd = open(dest, O_WRONLY | O_CLOEXEC);
            if (fd < 0) snprintf(why, cap, "opening %s: %s", dest, strerror(errno));
            return fd;
        } else {
            snprintf(why, cap, "%s is neither a pipe nor a file", dest);
            return -1;
        }
        sleep_ms(backoff);
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
}

static void restore_one(item *it) {
    char why[1024] = "", name[MAX_NAME + 1], ebid[512];
    const char *dest = it->dest ? it->dest : it->path;
    shmover_client_t *c = connect_mover(it->path);
    if (c == NULL) {
        out_line("#ERROR", it->path, NULL, NULL, NULL);
        return;
    }
    /* Look the object up before touching HANA's pipe: a missing object must
     * not hand HANA an empty stream. */
    char type[8] = "PIPE";
    int found = 0;
    if (it->by_ebid) {
        snprintf(ebid, sizeof ebid, "%s", it->want_ebid);
        shmover_info_t *info = NULL;
        if (object_name(it->path, ebid, name, sizeof name) == 0) {
            int rc = shmover_stat(c, name, &info);
            if (rc == SHMOVER_OK) {
                const char *t = shmover_info_meta(info, "backint.type");
                if (t) snprintf(type, sizeof type, "%s", t);
                found = 1;
            } else if (rc != SHMOVER_ERR_NOT_FOUND && rc != SHMOVER_ERR_BAD_NAME) {
                snprintf(why, sizeof why, "%s", shmover_last_error(c));
            }
            shmover_info_free(info);
        }
    } else {
        char prefix[MAX_NAME * 4];
        version *v = NULL;
        int n = path_prefix(it->path, prefix, sizeof prefix) == 0
                    ? list_versions(c, prefix, 1, NULL, &v, why, sizeof why)
                    : 0;
        if (n > 0) {
            snprintf(ebid, sizeof ebid, "%s", v[0].ebid);
            snprintf(type, sizeof type, "%s", v[0].type);
            found = object_name(it->path, ebid, name, sizeof name) == 0;
        }
        free(v);
    }
    if (!found) {
        if (why[0]) {
            logm(0, "restore of %s failed: %s", it->path, why);
            out_line("#ERROR", it->path, NULL, NULL, NULL);
        } else {
            out_line("#NOTFOUND", it->path, NULL, NULL, NULL);
        }
        shmover_disconnect(c);
        return;
    }
    int fd = open_dest(dest, type, why, sizeof why);
    if (fd < 0) {
        logm(0, "restore of %s failed: %s", it->path, why);
        out_line("#ERROR", it->path, NULL, NULL, NULL);
        shmover_disconnect(c);
        return;
    }
    uint64_t size = 0, bytes = 0, t0 = now_ms();
    int rc = shmover_open_read(c, name, cfg.restore_block_size, &size);
    int ok = rc == SHMOVER_OK;
    if (!ok) snprintf(why, sizeof why, "%s", shmover_last_error(c));
    struct stat dst;
    if (ok && fstat(fd, &dst) == 0 && S_ISREG(dst.st_mode) && ftruncate(fd, 0) != 0) {
        snprintf(why, sizeof why, "truncating %s: %s", dest, strerror(errno));
        ok = 0; /* the stream is closed below */
    }
    while (ok) {
        const void *buf;
        size_t len;
        rc = shmover_read_next(c, &buf, &len);
        if (rc == SHMOVER_END) break;
        if (rc != SHMOVER_OK) {
            snprintf(why, sizeof why, "%s", shmover_last_error(c));
            ok = 0;
            break;
        }
        size_t done = 0;
        while (done < len) {
            ssize_t w = write(fd, (const char *)buf + done, len - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                snprintf(why, sizeof why, "writing %s: %s", dest,
                         w == 0 ? "no progress" : errno == EPIPE ? "the reader closed the pipe" : strerror(errno));
                ok = 0;
                break;
            }
            done += (size_t)w;
        }
        bytes += len;
        shmover_read_release(c);
    }
    if (rc == SHMOVER_OK || rc == SHMOVER_END || !ok) shmover_close_read(c);
    struct stat st;
    if (ok && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && fsync(fd) != 0) {
        snprintf(why, sizeof why, "fsync %s: %s", dest, strerror(errno));
        ok = 0;
    }
    close(fd);
    if (ok) {
        double s = (double)(now_ms() - t0) / 1000.0;
        logm(2, "restored %s (%s) to %s: %llu bytes in %.3f s", it->path, ebid, dest, (unsigned long long)bytes, s);
        out_line("#RESTORED", ebid, it->path, NULL, NULL);
    } else {
        logm(0, "restore of %s failed: %s", it->path, why);
        out_line("#ERROR", it->path, NULL, NULL, NULL);
    }
    shmover_disconnect(c);
}

static void *restore_item(void *arg) {
    restore_one(arg);
    return NULL;
}

/* Log backups are restored one after another, in input order. */
typedef struct lane {
    item **items;
    size_t n;      /* items handed to the lane so far */
    int closed;    /* no more will come */
    pthread_mutex_t lock;
    pthread_cond_t more;
} lane;

/* Restores log backups one after another, as they are handed over. */
static void *restore_lane(void *arg) {
    lane *l = arg;
    for (size_t i = 0;; i++) {
        pthread_mutex_lock(&l->lock);
        while (i >= l->n && !l->closed) pthread_cond_wait(&l->more, &l->lock);
        int done = i >= l->n;
        item *it = done ? NULL : l->items[i];
        pthread_mutex_unlock(&l->lock);
        if (done) return NULL;
        restore_one(it);
    }
}

static void lane_push(lane *l, item *it, int close) {
    pthread_mutex_lock(&l->lock);
    if (it) l->items[l->n++] = it;
    if (close) l->closed = 1;
    pthread_cond_signal(&l->more);
    pthread_mutex_unlock(&l->lock);
}

/* ---- parameter file (a TOML subset) ------------------------------------------------- */

static int parse_size(const char *s, size_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned long long m = 1;
    if (end == s || errno == ERANGE) return -1;
    switch (toupper((unsigned char)*end)) {
    case 'K': m = 1ULL << 10; end++; break;
    case 'M': m = 1ULL << 20; end++; break;
    case 'G': m = 1ULL << 30; end++; break;
    case 0: break;
    default: return -1;
    }
    if (*end || v > SIZE_MAX / m) return -1;
    *out = (size_t)(v * m);
    return 0;
}

/* Returns 0, or -1 with `why` set (a configuration error). */
static int load_params(const char *path, char *why, size_t cap) {
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(why, cap, "parameter file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[PATH_MAX + 256];
    int ln = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        ln++;
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (*p == '#' || *p == '\0') continue;
        char key[64];
        size_t k = 0;
        while ((isalnum((unsigned char)*p) || *p == '_' || *p == '-') && k + 1 < sizeof key) key[k++] = *p++;
        key[k] = '\0';
        while (*p == ' ' || *p == '\t') p++;
        if (k == 0 || *p != '=') {
            snprintf(why, cap, "parameter file %s line %d: expected key = value", path, ln);
            rc = -1;
            break;
        }
        p++;
        while (*p == ' ' || *p == '\t') p++;
        char val[PATH_MAX];
        int is_str = 0;
        size_t v = 0;
        if (*p == '"' || *p == '\'') {
            char q = *p++;
            is_str = 1;
            while (*p && *p != q && v + 1 < sizeof val) {
                if (q == '"' && *p == '\\' && p[1]) {
                    p++;
                    char e = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
                    val[v++] = e;
                    p++;
                } else {
                    val[v++] = *p++;
                }
            }
            if (*p != q) {
                snprintf(why, cap, "parameter file %s line %d: unterminated string", path, ln);
                rc = -1;
                break;
            }
            p++;
        } else {
            while (*p && !isspace((unsigned char)*p) && *p != '#' && v + 1 < sizeof val) {
                if (*p != '_') val[v++] = *p;
                p++;
            }
        }
        val[v] = '\0';
        while (*p == ' ' || *p == '\t') p++;
        if (*p && *p != '#' && *p != '\n' && *p != '\r') {
            snprintf(why, cap, "parameter file %s line %d: unexpected text after the value", path, ln);
            rc = -1;
            break;
        }
        char *end;
        errno = 0;
        long num = strtol(val, &end, 10);
        /* Times over about eleven days are surely a mistake (and would
         * overflow a millisecond count). */
        int is_int = !is_str && v > 0 && *end == '\0' && errno == 0 && num <= 1000000;
        if (strcmp(key, "socket") == 0 && is_str) {
            snprintf(cfg.socket, sizeof cfg.socket, "%s", val);
            cfg.have_socket = val[0] != '\0';
        } else if (strcmp(key, "timeout_s") == 0 && is_int && num > 0) {
            cfg.timeout_s = num;
        } else if (strcmp(key, "pipe_timeout_s") == 0 && is_int && num >= 0) {
            cfg.pipe_timeout_s = num;
        } else if (strcmp(key, "pipe_peer_timeout_s") == 0 && is_int && num > 0) {
            cfg.pipe_peer_timeout_s = num;
        } else if ((strcmp(key, "block_size") == 0 || strcmp(key, "restore_block_size") == 0) &&
                   (is_int || is_str)) {
            size_t sz;
            if (parse_size(val, &sz) != 0 || sz > ((size_t)64 << 20) ||
                (sz == 0 && strcmp(key, "block_size") == 0)) {
                snprintf(why, cap, "parameter file %s line %d: %s must be a size up to 64M", path, ln, key);
                rc = -1;
            } else if (strcmp(key, "block_size") == 0) {
                cfg.block_size = sz;
            } else {
                cfg.restore_block_size = sz;
            }
        } else if (strcmp(key, "log_file") == 0 && is_str) {
            snprintf(cfg.log_file, sizeof cfg.log_file, "%s", val);
        } else if (strcmp(key, "log_level") == 0 && is_str) {
            static const char *lv[] = {"error", "warn", "info", "debug"};
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(val, lv[i]) == 0) found = i;
            if (found < 0) {
                snprintf(why, cap, "parameter file %s line %d: log_level must be error, warn, info or debug", path, ln);
                rc = -1;
            } else {
                cfg.log_level = found;
            }
        } else if (strcmp(key, "label") == 0 && is_str) {
            snprintf(cfg.label, sizeof cfg.label, "%s", val);
        } else {
            static const char *keys[] = {"socket", "timeout_s", "pipe_timeout_s", "pipe_peer_timeout_s", "block_size",
                                         "restore_block_size", "log_file", "log_level", "label"};
            int known = 0;
            for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) known |= strcmp(key, keys[i]) == 0;
            snprintf(why, cap, "parameter file %s line %d: %s \"%s\"", path, ln,
                     known ? "bad value for key" : "unknown key", key);
            rc = -1;
        }
    }
    fclose(f);
    return rc;
}

/* ---- main ------------------------------------------------------------------------- */

static void console(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void console(const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "hdbbackint: error: %s\n", msg);
    logm(0, "%s", msg);
}

static int parse_api(const char *v) {
    if (strncasecmp(v, "backint ", 8) != 0) return 104;
    int maj = 0, min = 0;
    char minor[8] = "";
    /* At most three digits of major version: no overflow below. */
    if (sscanf(v + 8, "%3d.%7s", &maj, minor) < 1 || maj < 0) return 104;
    if (strlen(minor) == 1) strcat(minor, "0");
    min = atoi(minor);
    return maj * 100 + min;
}

int hdbbackint_main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN); /* a reader that quits early is EPIPE, an #ERROR */
    const char *function = NULL, *params = NULL, *in_path = NULL, *out_path = NULL;
    int usage = 0, print_version = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        /* Only where an option may stand: "-u -v" is a user named "-v". */
        if (strcmp(a, "-v") == 0 || strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            print_version = 1;
        } else if (a[0] == '-' && a[1] && strchr("fpiouscl", a[1]) && a[2] == '\0') {
            if (i + 1 >= argc) {
                fprintf(stderr, "hdbbackint: error: %s needs a value\n", a);
                usage = 1;
                break;
            }
            const char *v = argv[++i];
            switch (a[1]) {
            case 'f': function = v; break;
            case 'p': params = v; break;
            case 'i': in_path = v; break;
            case 'o': out_path = v; break;
            case 'u':
                /* A cut user would share a namespace with every user that
                 * starts the same way: refuse it rather than cut it. */
                if (strlen(v) >= sizeof user) {
                    fprintf(stderr, "hdbbackint: error: -u is longer than %zu bytes\n", sizeof user - 1);
                    usage = 1;
                } else {
                    memcpy(user, v, strlen(v) + 1);
                }
                break;
            case 's': snprintf(backup_id, sizeof backup_id, "%s", v); break;
            case 'c': snprintf(count, sizeof count, "%s", v); break;
            case 'l': snprintf(level, sizeof level, "%s", v); break;
            }
        } else if (a[0] == '-') {
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                fprintf(stderr, "hdbbackint: warning: unknown option %s %s ignored\n", a, argv[i + 1]);
                i++;
            } else {
                fprintf(stderr, "hdbbackint: warning: unknown option %s ignored\n", a);
            }
        } else {
            fprintf(stderr, "hdbbackint: warning: unexpected argument %s ignored\n", a);
        }
    }
    if (print_version) {
        printf("hdbbackint %s (shmover; BACKINT API 1.50)\n", HDBBACKINT_VERSION);
        return 0;
    }
    enum { F_NONE, F_BACKUP, F_RESTORE, F_INQUIRE, F_DELETE } fn = F_NONE;
    if (function) {
        if (strcasecmp(function, "backup") == 0) fn = F_BACKUP, fn_name = "backup";
        else if (strcasecmp(function, "restore") == 0) fn = F_RESTORE, fn_name = "restore";
        else if (strcasecmp(function, "inquire") == 0) fn = F_INQUIRE, fn_name = "inquire";
        else if (strcasecmp(function, "delete") == 0) fn = F_DELETE, fn_name = "delete";
    }
    if (usage || fn == F_NONE) {
        fprintf(stderr, "hdbbackint: error: %s\nusage: hdbbackint -f backup|restore|inquire|delete [-p PARAMFILE] "
                        "[-i IN] [-o OUT] [-u USER] [-s ID] [-c N] [-l LEVEL] [-v]\n",
                usage ? "bad arguments" : function ? "unknown function" : "no function (-f) given");
        if (out_path && strcmp(out_path, "-") != 0) close(open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
        return 2;
    }
    /* Settings: parameter file, then MOVER_SOCKET as the fallback socket. */
    char cfg_error[2048] = "";
    const char *env;
    if ((env = getenv("MOVER_TIMEOUT")) && atol(env) > 0) cfg.timeout_s = atol(env);
    if (params && load_params(params, cfg_error, sizeof cfg_error) != 0) {
    }
    if (!cfg.have_socket && (env = getenv("MOVER_SOCKET")) && env[0]) {
        snprintf(cfg.socket, sizeof cfg.socket, "%s", env);
        cfg.have_socket = 1;
    }
    if (cfg.log_file[0]) {
        int fd = open(cfg.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd >= 0) log_fd = fd;
    } else {
        cfg.log_level = cfg.log_level > 1 ? 1 : cfg.log_level;
    }
    {
        char args[2048];
        size_t o = 0;
        for (int i = 0; i < argc && o < sizeof args - 2; i++)
            o += (size_t)snprintf(args + o, sizeof args - o, "%s%s", i ? " " : "", argv[i]);
        logm(2, "started: %s", args);
    }
    /* Output first, so that even a failed run leaves its answers. */
    if (out_path && strcmp(out_path, "-") != 0) {
        out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (out_fd < 0) {
            console("cannot write the output file %s: %s", out_path, strerror(errno));
            return 1;
        }
    }
    FILE *in = stdin;
    if (in_path && strcmp(in_path, "-") != 0 && (in = fopen(in_path, "re")) == NULL) {
        console("cannot read the input file %s: %s", in_path, strerror(errno));
        return 1;
    }
    /* Read everything first: #SOFTWAREID decides the answer's form. */
    size_t n_lines = 0, cap_lines = 64;
    line_tokens *lines = calloc(cap_lines, sizeof *lines);
    char *buf = NULL;
    size_t bcap = 0;
    int saw_swid = 0;
    ssize_t got;
    while (lines && (got = getline(&buf, &bcap, in)) >= 0) {
        size_t l = strlen(buf);
        /* A NUL inside the line would cut it short: '#PIPE /a<NUL>/b' read
         * as /a. Such a line is answered #ERROR, never taken shorter. */
        int has_nul = l != (size_t)got;
        if (l && buf[l - 1] == '\n') buf[l - 1] = '\0';
        line_tokens t;
        if (!tokenize(buf, &t)) {
            if (buf[0]) logm(3, "ignored line: %s", buf);
            continue;
        }
        if (has_nul) {
            logm(0, "a line holds a NUL byte: %s...", buf);
            t.malformed = 1;
        }
        if (strcmp(t.kw, "#SOFTWAREID") == 0) {
            if (!saw_swid) {
                saw_swid = 1;
                api = t.n >= 1 ? parse_api(t.tok[0]) : 104;
                snprintf(hana_id, sizeof hana_id, "%s", t.n >= 2 ? t.tok[1] : "");
            }
            continue;
        }
        if (strcmp(t.kw, "#TOOLOPTION") == 0) {
            /* Its k=v pairs may hold credentials: never logged. */
            logm(2, "tool option of %zu bytes ignored", strlen(t.rest));
            continue;
        }
        if (n_lines == cap_lines) {
            cap_lines *= 2;
            lines = realloc(lines, cap_lines * sizeof *lines);
            if (!lines) break;
        }
        t.rest = strdup(t.rest);
        lines[n_lines++] = t;
    }
    free(buf);
    /* A read error is not the end of the input: lines after it would get
     * no answer while we exit as if all went well. */
    int read_failed = lines != NULL && ferror(in);
    if (in != stdin) fclose(in);
    if (lines == NULL) {
        console("out of memory");
        return 1;
    }
    if (read_failed) {
        console("reading the input file failed; its lines are not answered");
        return 1;
    }
    if (saw_swid) {
        char ver[32];
        int v = api < OUR_API ? api : OUR_API;
        snprintf(ver, sizeof ver, "backint %d.%02d", v / 100, v % 100);
        char ours[64];
        snprintf(ours, sizeof ours, "shmover hdbbackint %s", HDBBACKINT_VERSION);
        out_line("#SOFTWAREID", ver, ours, NULL, NULL);
    }
    int with_ts = saw_swid && api >= 150;
    if (cfg_error[0]) console("%s", cfg_error);
    /* The catalog connection (inquire, delete); backups and restores use one per item. */
    shmover_client_t *cat = NULL;
    if (!cfg_error[0] && (fn == F_INQUIRE || fn == F_DELETE)) {
        cat = connect_mover("catalog");
        if (cat == NULL) console("the mover is not reachable (set socket in the parameter file, or MOVER_SOCKET)");
    }
    int fatal = cfg_error[0] || ((fn == F_INQUIRE || fn == F_DELETE) && cat == NULL);
    item *items = calloc(n_lines ? n_lines : 1, sizeof *items);
    item **log_items = calloc(n_lines ? n_lines : 1, sizeof *log_items);
    /* Log backups go to one lane, started at the first of them, so that
     * every line starts in file order. */
    lane ln = {log_items, 0, 0, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
    pthread_t lane_th;
    int lane_started = 0, lane_failed = 0;
    uint64_t last_ebid = 0;
    for (size_t i = 0; i < n_lines; i++) {
        line_tokens *t = &lines[i];
        item *it = &items[i];
        int bad = t->malformed;
        if (fn == F_BACKUP) {
            bad |= !(strcmp(t->kw, "#PIPE") == 0 || strcmp(t->kw, "#FILE") == 0) || t->n < 1 || !t->tok[0][0];
            if (bad || fatal) {
                if (t->n >= 1 && !t->malformed && strcmp(t->kw, "#PIPE") == 0) release_writer(t->tok[0]);
                if (t->n >= 1 && !t->malformed) out_line("#ERROR", t->tok[0], NULL, NULL, NULL);
                else out_line("#ERROR", t->rest, NULL, NULL, NULL);
                continue;
            }
            it->path = t->tok[0];
            if (!representable(it->path)) {
                logm(0, "the path %s ends in a backslash and holds a space or quote: it cannot be answered in "
                        "BACKINT's quoting", it->path);
                out_line("#ERROR", t->rest, NULL, NULL, NULL);
                continue;
            }
            it->is_file = strcmp(t->kw, "#FILE") == 0;
            it->hint = t->n >= 2 ? strtoull(t->tok[1], NULL, 10) : 0;
            if (it->is_file && it->hint == 0) {
                struct stat st;
                if (stat(it->path, &st) == 0) it->hint = (uint64_t)st.st_size;
            }
            uint64_t e = now_ms();
            if (e <= last_ebid) e = last_ebid + 1;
            last_ebid = e;
            snprintf(it->ebid, sizeof it->ebid, "%llu", (unsigned long long)e);
            it->started = pthread_create(&it->th, NULL, backup_item, it) == 0;
            if (!it->started) out_line("#ERROR", it->path, NULL, NULL, NULL);
        } else if (fn == F_RESTORE) {
            int is_null = strcmp(t->kw, "#NULL") == 0, is_ebid = strcmp(t->kw, "#EBID") == 0;
            int need = is_ebid ? 2 : 1;
            bad |= !(is_null || is_ebid) || t->n < need;
            if (bad || fatal) {
                /* The parameters the line had, parsed; the raw text only
                 * for a line that does not parse. */
                const char *p = t->malformed || t->n < 1 ? t->rest : t->tok[t->n >= need ? need - 1 : 0];
                out_line("#ERROR", p, NULL, NULL, NULL);
                continue;
            }
            if (is_ebid && strlen(t->tok[0]) >= sizeof it->want_ebid) {
                logm(0, "the EBID given for %s is longer than %zu bytes: no backup has it", t->tok[1],
                     sizeof it->want_ebid - 1);
                out_line("#NOTFOUND", t->tok[1], NULL, NULL, NULL);
                continue;
            }
            it->by_ebid = is_ebid;
            if (is_ebid) snprintf(it->want_ebid, sizeof it->want_ebid, "%s", t->tok[0]);
            it->path = t->tok[need - 1];
            it->dest = t->n > need ? t->tok[need] : NULL;
            if (strstr(it->path, "log_backup")) {
                if (!lane_started && !lane_failed) {
                    lane_started = pthread_create(&lane_th, NULL, restore_lane, &ln) == 0;
                    lane_failed = !lane_started;
                }
                if (lane_started) lane_push(&ln, it, 0);
                else out_line("#ERROR", it->path, NULL, NULL, NULL);
            } else {
                it->started = pthread_create(&it->th, NULL, restore_item, it) == 0;
                if (!it->started) out_line("#ERROR", it->path, NULL, NULL, NULL);
            }
        } else if (fn == F_INQUIRE) {
            int is_null = strcmp(t->kw, "#NULL") == 0, is_ebid = strcmp(t->kw, "#EBID") == 0;
            if (bad || !(is_null || is_ebid) || (is_ebid && t->n < 1) || fatal) {
                if (!t->malformed && is_ebid && t->n >= 1) out_line("#ERROR", t->tok[0], t->n >= 2 ? t->tok[1] : NULL, NULL, NULL);
                else if (!t->malformed && is_null && t->n >= 1) out_line("#ERROR", t->tok[0], NULL, NULL, NULL);
                else if (!t->malformed && is_null) out_line("#ERROR", NULL, NULL, NULL, NULL);
                else out_line("#ERROR", t->rest, NULL, NULL, NULL);
                continue;
            }
            const char *path = is_null ? (t->n >= 1 ? t->tok[0] : NULL) : (t->n >= 2 ? t->tok[1] : NULL);
            const char *ebid = is_ebid ? t->tok[0] : NULL;
            catalog_for_next_line(&cat);
            char prefix[MAX_NAME * 4], u[768], why[1024] = "";
            version *v = NULL;
            int n;
            if (path) {
                n = path_prefix(path, prefix, sizeof prefix) == 0 ? list_versions(cat, prefix, 1, ebid, &v, why, sizeof why) : 0;
            } else {
                shmover_encode_segment(user, u, sizeof u);
                snprintf(prefix, sizeof prefix, "%s/", u);
                n = list_versions(cat, prefix, 0, ebid, &v, why, sizeof why);
            }
            if (n < 0) {
                logm(0, "inquire failed: %s", why);
                out_line("#ERROR", ebid ? ebid : path, ebid ? path : NULL, NULL, NULL);
            } else if (n == 0) {
                out_line("#NOTFOUND", ebid ? ebid : path, ebid ? path : NULL, NULL, NULL);
            } else {
                for (int k = 0; k < n; k++) {
                    char ts[96];
                    iso_ms(v[k].created, ts, sizeof ts);
                    out_line("#BACKUP", v[k].ebid, v[k].path, NULL, with_ts ? ts : NULL);
                }
            }
            free(v);
        } else { /* delete */
            bad |= strcmp(t->kw, "#EBID") != 0 || t->n < 2;
            if (bad || fatal) {
                if (!t->malformed && t->n >= 1) out_line("#ERROR", t->tok[0], t->n >= 2 ? t->tok[1] : NULL, NULL, NULL);
                else out_line("#ERROR", t->rest, NULL, NULL, NULL);
                continue;
            }
            char name[MAX_NAME + 1];
            catalog_for_next_line(&cat);
            int rc = object_name(t->tok[1], t->tok[0], name, sizeof name) == 0 ? shmover_delete(cat, name)
                                                                                : SHMOVER_ERR_NOT_FOUND;
            if (rc == SHMOVER_OK) out_line("#DELETED", t->tok[0], t->tok[1], NULL, NULL);
            else if (rc == SHMOVER_ERR_NOT_FOUND || rc == SHMOVER_ERR_BAD_NAME)
                out_line("#NOTFOUND", t->tok[0], t->tok[1], NULL, NULL);
            else {
                logm(0, "delete of %s failed: %s", t->tok[1], shmover_last_error(cat));
                out_line("#ERROR", t->tok[0], t->tok[1], NULL, NULL);
            }
        }
    }
    if (lane_started) lane_push(&ln, NULL, 1);
    for (size_t i = 0; i < n_lines; i++)
        if (items[i].started) pthread_join(items[i].th, NULL);
    if (lane_started) pthread_join(lane_th, NULL);
    shmover_disconnect(cat);
    if (fsync(out_fd) != 0 && errno != EINVAL && errno != ENOTSUP && errno != EBADF) any_error = 1;
    if (out_fd != 1) close(out_fd);
    logm(2, "finished: %s", cfg_error[0] ? "configuration error" : any_error ? "with errors" : "ok");
    if (cfg_error[0]) return 2;
    if (fatal) return 1;
    return any_error ? 1 : 0;
}
