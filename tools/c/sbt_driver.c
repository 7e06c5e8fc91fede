/*
 * sbt-driver: exercises an SBT 2.0 library the way an Oracle server process
 * does (dlopen, sbtinit, the function table, a context per session) and
 * checks the results the SBT specification requires (section 5 of
 * ../shared/specs/sbt.md). Prints one line per check and finally
 * "N passed, M failed"; exits 1 if anything failed.
 *
 *   sbt-driver [--lib PATH] [--socket PATH] [--channels N] [--large]
 *              [--prefix P] [--only NAME] [--seed S] [--ops N] [--kill-mover PID]
 *
 * --socket sets MOVER_SOCKET before the library is loaded, as RMAN's
 * PARMS 'ENV=(MOVER_SOCKET=...)' does. --large adds a piece over 4 GiB.
 * --bench-bytes N times a backup and a restore of N bytes instead (used by
 * `mover-bench sbt`); with --bench-step it prints "bench ready" before the
 * backup and "bench backup-done" between the backup and the restore, and
 * after each waits for a line on stdin; --bench-keep leaves the piece in
 * the store instead of removing it.
 * --seed and --ops replay and size the random-calls scenario.
 * --kill-mover PID runs only the mover-death scenario: it SIGKILLs the
 * mover mid-piece and checks the library fails the piece, without hanging.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../shim-c/sbt/c/sbt.h"

typedef int (*sbtinit_fn)(bserc *, sbtinit_input *, sbtinit_output **);

static sbtinit_fn g_init;
static const sbt_mms_fptr *g_t;
static sbt_ulong g_ctxsize;
static char g_prefix[256];
static const char *g_only;
static char g_lib[PATH_MAX];
static char g_socket[PATH_MAX];
static int g_channels = 4;
static int g_large;
static pid_t g_kill_mover;
static const char *g_handshake; /* --restart-handshake DIR */
static unsigned long long g_bench_bytes;
static size_t g_bench_block = 1 << 20;
static int g_bench_step; /* --bench-step: pause before the backup and between backup and restore */
static int g_bench_keep; /* --bench-keep: leave the piece in the store */
static pthread_mutex_t g_out_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_passed, g_failed;

static void report(int ok, const char *scenario, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(int ok, const char *scenario, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_out_lock);
    printf("%s %s: %s\n", ok ? "ok" : "FAIL", scenario, msg);
    fflush(stdout);
    if (ok) g_passed++;
    else g_failed++;
    pthread_mutex_unlock(&g_out_lock);
}

#define CHECK(sc, cond, ...) report((cond) != 0, sc, __VA_ARGS__)

/* ---- sessions ----------------------------------------------------------------- */

typedef struct chan {
    void *ctx;
} chan;

static int open_session(chan *ch, sbt_ulong level) {
    ch->ctx = calloc(1, g_ctxsize);
    sbt_ulong api = SBT_APIVSN(2, 0);
    sbtinit2_input in[] = {{SBTINIT2_TRACE_LEVEL, &level}, {SBTINIT2_CLIENT_APIVSN, &api}, {SBTINIT2_END, NULL}};
    sbtinit2_output *out = NULL;
    return g_t->sbtinit2(ch->ctx, 0, in, &out);
}

static void close_session(chan *ch) {
    g_t->sbtend(ch->ctx, 0);
    free(ch->ctx);
    ch->ctx = NULL;
}

/* The pending error: returns the code (0 if none) and copies the text. */
static sbt_ulong last_error(chan *ch, char *text, size_t cap) {
    sbt_ulong code = 0;
    char *native = NULL, *utf8 = NULL;
    text[0] = '\0';
    if (g_t->sbterror(ch->ctx, 0, &code, &native, &utf8) != 0) return 0;
    if (native) snprintf(text, cap, "%s", native);
    return code;
}

/* rc must be -1 with `code` pending and a non-empty text under 1024 bytes. */
static int expect_error(const char *sc, chan *ch, int rc, sbt_ulong code, const char *what, const char *must_contain) {
    char text[1100];
    sbt_ulong got = last_error(ch, text, sizeof text);
    int ok = rc == -1 && got == code && text[0] != '\0' && strlen(text) < 1024 &&
             (must_contain == NULL || strstr(text, must_contain) != NULL);
    report(ok, sc, "%s fails with %lu (rc %d, code %lu: %s)", what, code, rc, got, text);
    return ok;
}

/* ---- data -------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Bytes [off, off+len) of stream `seed`, whatever the block size. */
static void gen(uint64_t seed, uint64_t off, unsigned char *buf, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint64_t o = off + i;
        uint64_t w = splitmix64(seed ^ (o / 8));
        size_t k = o % 8;
        for (; k < 8 && i < len; k++, i++) buf[i] = (unsigned char)(w >> (8 * k));
    }
}

static void piece_name(char *out, size_t cap, const char *sc, const char *tag) {
    snprintf(out, cap, "%s/%s/%s", g_prefix, sc, tag);
}

/* Writes `blocks` blocks of `bs` bytes of stream `seed`; returns 0 or the failing rc. */
static int backup(chan *ch, const char *name, size_t bs, uint64_t blocks, uint64_t seed, int close) {
    sbt_ulong dbid = 12345, ftype = 1;
    sbtobject info[] = {{SBTOBJECT_DBNAME, "DRV"}, {SBTOBJECT_DBID, &dbid}, {SBTOBJECT_FILETYPE, &ftype},
                        {SBTOBJECT_END, NULL}};
    int rc = g_t->sbtbackup(ch->ctx, 0, (char *)name, info, bs, 0, 1, 0);
    if (rc != 0) return rc;
    unsigned char *buf = malloc(bs);
    for (uint64_t b = 0; b < blocks && rc == 0; b++) {
        gen(seed, b * bs, buf, bs);
        rc = g_t->sbtwrite2(ch->ctx, 0, buf);
    }
    free(buf);
    if (rc == 0 && close) rc = g_t->sbtclose2(ch->ctx, 0);
    return rc;
}

/* Restores with block size `bs` and checks every byte of a `total`-byte
 * stream, the short last block (tail untouched) and EOF (7504). */
static int restore_check(const char *sc, chan *ch, const char *name, size_t bs, uint64_t total, uint64_t seed) {
    int rc = g_t->sbtrestore(ch->ctx, 0, (char *)name, bs);
    if (rc != 0) {
        char text[1100];
        report(0, sc, "sbtrestore %s bs=%zu: code %lu %s", name, bs, last_error(ch, text, sizeof text), text);
        return 0;
    }
    unsigned char *buf = malloc(bs), *want = malloc(bs);
    uint64_t off = 0, reads = 0;
    int ok = 1;
    char why[256] = "";
    for (;;) {
        memset(buf, 0xEE, bs);
        rc = g_t->sbtread2(ch->ctx, 0, buf);
        if (rc != 0) break;
        size_t n = total - off < bs ? (size_t)(total - off) : bs;
        if (n == 0) {
            ok = 0;
            snprintf(why, sizeof why, "data past the end");
            break;
        }
        gen(seed, off, want, n);
        if (memcmp(buf, want, n) != 0) {
            ok = 0;
            snprintf(why, sizeof why, "bytes differ in the block at %llu", (unsigned long long)off);
            break;
        }
        for (size_t i = n; i < bs; i++)
            if (buf[i] != 0xEE) {
                ok = 0;
                snprintf(why, sizeof why, "the short last block wrote past its data");
                break;
            }
        off += n;
        reads++;
    }
    char text[1100];
    sbt_ulong code = rc == 0 ? 0 : last_error(ch, text, sizeof text);
    if (ok && (off != total || code != SBT_ERROR_EOF)) {
        ok = 0;
        snprintf(why, sizeof why, "ended at %llu of %llu with code %lu", (unsigned long long)off,
                 (unsigned long long)total, code);
    }
    if (ok) { /* EOF again, before close */
        rc = g_t->sbtread2(ch->ctx, 0, buf);
        if (rc != -1 || last_error(ch, text, sizeof text) != SBT_ERROR_EOF) {
            ok = 0;
            snprintf(why, sizeof why, "a read after EOF did not say 7504 again");
        }
    }
    int crc = g_t->sbtclose2(ch->ctx, 0);
    report(ok && crc == 0, sc, "restore of %s with %zu-byte blocks: %llu reads, %llu bytes%s%s", name, bs,
           (unsigned long long)reads, (unsigned long long)off, why[0] ? ": " : "", why);
    free(buf);
    free(want);
    return ok;
}

/* sbtinfo2 on one name: 1 found, 0 NOTFOUND, -1 failure. */
static int info_one(chan *ch, const char *name, sbtbfinfo **out) {
    char *names[] = {(char *)name, NULL};
    if (g_t->sbtinfo2(ch->ctx, 0, names, out) != 0) return -1;
    for (sbtbfinfo *p = *out; p->type != SBTBFINFO_END; p++)
        if (p->type == SBTBFINFO_NOTFOUND) return 0;
    return 1;
}

static int remove_one(chan *ch, const char *name) {
    char *names[] = {(char *)name, NULL};
    return g_t->sbtremove2(ch->ctx, 0, names);
}

static int wanted(const char *sc) { return g_only == NULL || strstr(g_only, sc) != NULL; }

/* ---- scenarios ---------------------------------------------------------------- */

/* The trace file sbtinit is given: removed at exit when every check passed,
 * kept for reading when one failed. */
static char g_trace[PATH_MAX];

static void remove_trace(void) {
    if (g_failed == 0 && g_trace[0] != '\0') unlink(g_trace);
}

static void sc_load(void) {
    const char *sc = "load";
    void *h = dlopen(g_lib, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        report(0, sc, "dlopen %s: %s", g_lib, dlerror());
        return;
    }
    g_init = (sbtinit_fn)dlsym(h, "sbtinit");
    CHECK(sc, g_init != NULL, "sbtinit is exported");
    if (g_init == NULL) return;
    const char *v2[] = {"sbtinit2", "sbtbackup", "sbtwrite2", "sbtclose2", "sbtrestore", "sbtread2",
                        "sbtremove2", "sbtinfo2", "sbtcommand", "sbterror", "sbtend"};
    int all = 1;
    for (size_t i = 0; i < sizeof v2 / sizeof *v2; i++) all &= dlsym(h, v2[i]) != NULL;
    CHECK(sc, all, "the 11 v2 entry points are exported");
    const char *v1[] = {"sbtopen", "sbtread", "sbtwrite", "sbtclose", "sbtinfo", "sbtremove"};
    int stubs = 1;
    for (size_t i = 0; i < sizeof v1 / sizeof *v1; i++) {
        int (*f)(void) = (int (*)(void))dlsym(h, v1[i]);
        stubs &= f != NULL && f() == -1;
    }
    CHECK(sc, stubs, "the 6 v1 names exist and fail cleanly");
    sbtinit_output *firsts = NULL;
    for (int round = 1; round <= 2; round++) {
        bserc se = {-1, -1};
        if (g_trace[0] == '\0') {
            snprintf(g_trace, sizeof g_trace, "/tmp/sbt-driver-%d.trc", (int)getpid());
            atexit(remove_trace);
        }
        sbtinit_input in[] = {{SBTINIT_TRACE_NAME, g_trace}, {SBTINIT_INEND, NULL}};
        sbtinit_output *out = NULL;
        int rc = g_init(&se, in, &out);
        CHECK(sc, rc == 0 && se.bsercoer == 0 && out != NULL, "sbtinit (call %d) succeeds", round);
        if (rc != 0 || out == NULL) return;
        sbt_ulong api = 0, mms = 0;
        const char *desc = NULL;
        int proxy = 0, n = 0;
        for (sbtinit_output *p = out; p->type != SBTINIT_OUTEND && n < 64; p++, n++) {
            if (p->type == SBTINIT_MMS_APIVSN && p->value) api = *(sbt_ulong *)p->value;
            if (p->type == SBTINIT_MMS_DESC) desc = p->value;
            if (p->type == SBTINIT_MMS_FPTR) g_t = p->value;
            if (p->type == SBTINIT_CTXSIZE && p->value) g_ctxsize = *(sbt_ulong *)p->value;
            if (p->type == SBTINIT_MMSVSN && p->value) mms = *(sbt_ulong *)p->value;
            if (p->type == SBTINIT_PROXY) proxy = 1;
        }
        if (round == 1) firsts = out;
        CHECK(sc, ((api >> 8) & 0xff) == 2, "API version 2.x (%#lx)", api);
        CHECK(sc, desc != NULL && strlen(desc) > 0 && strlen(desc) <= 63, "a description of at most 63 characters: %s",
              desc ? desc : "(none)");
        CHECK(sc, g_ctxsize > 0 && g_ctxsize <= 1048576, "a context size (%lu bytes)", g_ctxsize);
        CHECK(sc, mms != 0, "an MMS version %lu.%lu.%lu.%lu", mms >> 24, (mms >> 16) & 255,
              (mms >> 8) & 255, mms & 255);
        CHECK(sc, !proxy, "proxy copy is not advertised");
        int slots = 0;
        if (g_t) {
            void *const *f = (void *const *)g_t;
            for (int i = 0; i < 21; i++) slots += f[i] != NULL;
        }
        CHECK(sc, slots == 21, "the function table has 21 slots, none NULL (%d)", slots);
        if (round == 2) CHECK(sc, out == firsts, "a second sbtinit returns the same table");
    }
    chan ch;
    sbt_ulong level = 0, odd = 5;
    ch.ctx = calloc(1, g_ctxsize);
    sbtinit2_input in[] = {{SBTINIT2_TRACE_LEVEL, &level}, {77, &odd}, {SBTINIT2_OPERATOR_NOTIFY, NULL},
                           {SBTINIT2_END, NULL}};
    sbtinit2_output *out = NULL;
    CHECK(sc, g_t->sbtinit2(ch.ctx, 0, in, &out) == 0, "sbtinit2 ignores item types it does not know");
    close_session(&ch);
}

static void sc_backup_restore(void) {
    const char *sc = "backup";
    chan ch;
    if (open_session(&ch, 1) != 0) {
        report(0, sc, "sbtinit2 failed");
        return;
    }
    char name[512];
    piece_name(name, sizeof name, sc, "p16k");
    int rc = backup(&ch, name, 16384, 100, 1, 1);
    CHECK(sc, rc == 0, "a 100-block piece of 16 KiB blocks is written and closed");
    sbtbfinfo *out = NULL;
    int found = info_one(&ch, name, &out);
    CHECK(sc, found == 1, "sbtinfo2 finds the piece after the close");
    if (found == 1) {
        int name_first = out[0].type == SBTBFINFO_NAME && strcmp(out[0].value, name) == 0;
        sbt_ulong method = 0, order = 0, share = 0;
        time_t cre = 0;
        const char *label = NULL, *comment = NULL;
        int end = 0;
        for (sbtbfinfo *p = out; p->type != SBTBFINFO_END; p++) {
            if (p->type == SBTBFINFO_METHOD) method = *(sbt_ulong *)p->value;
            if (p->type == SBTBFINFO_ORDER) order = *(sbt_ulong *)p->value;
            if (p->type == SBTBFINFO_SHARE) share = *(sbt_ulong *)p->value;
            if (p->type == SBTBFINFO_CRETIME) cre = *(time_t *)p->value;
            if (p->type == SBTBFINFO_LABEL) label = p->value;
            if (p->type == SBTBFINFO_COMMENT) comment = p->value;
            end = p[1].type == SBTBFINFO_END;
        }
        CHECK(sc, name_first, "the group starts with NAME, the caller's string");
        CHECK(sc, method == 1 && order >= 1 && share >= 1, "METHOD stream, ORDER and SHARE given");
        long skew = (long)(cre - time(NULL));
        CHECK(sc, skew > -300 && skew < 300, "CRETIME is now (%ld s off)", skew);
        CHECK(sc, label && strlen(label) <= 63 && comment && strlen(comment) <= 79, "LABEL %s, COMMENT %s",
              label ? label : "-", comment ? comment : "-");
        CHECK(sc, end, "the list ends with 9999");
    }
    sc = "restore";
    restore_check(sc, &ch, name, 16384, 100 * 16384ULL, 1);
    sc = "restore-other-block-size";
    char big[512];
    piece_name(big, sizeof big, sc, "p256k");
    /* 1,638,400 bytes: 6.25 blocks of 256 KiB */
    CHECK(sc, backup(&ch, big, 16384, 100, 7, 1) == 0, "a 1,638,400-byte piece is written");
    restore_check(sc, &ch, big, 262144, 1638400, 7);
    restore_check(sc, &ch, big, 4096, 1638400, 7);
    restore_check(sc, &ch, big, 10000, 1638400, 7);
    restore_check(sc, &ch, big, 4 << 20, 1638400, 7);
    sc = "empty-piece";
    char empty[512];
    piece_name(empty, sizeof empty, sc, "p0");
    CHECK(sc, backup(&ch, empty, 8192, 0, 3, 1) == 0, "a piece with no blocks is saved");
    restore_check(sc, &ch, empty, 8192, 0, 3);
    char *names[] = {name, big, empty, NULL};
    CHECK(sc, g_t->sbtremove2(ch.ctx, 0, names) == 0, "the pieces are deleted");
    /* A handle in Latin-1 (a FORMAT literal, a database character set that
     * is not UTF-8): stored under a reversible encoding, found, restored and
     * deleted like any other. */
    sc = "latin1-name";
    char lat[512];
    piece_name(lat, sizeof lat, sc, "caf\xe9-\xff\xc3");
    char why[1100] = "";
    rc = backup(&ch, lat, 8192, 5, 9, 1);
    if (rc != 0) last_error(&ch, why, sizeof why);
    CHECK(sc, rc == 0, "a piece whose name is not UTF-8 is written %s", why);
    found = info_one(&ch, lat, &out);
    CHECK(sc, found == 1 && strcmp(out[0].value, lat) == 0, "sbtinfo2 finds it under the caller's bytes");
    restore_check(sc, &ch, lat, 8192, 5 * 8192ULL, 9);
    char *lats[] = {lat, NULL};
    CHECK(sc, g_t->sbtremove2(ch.ctx, 0, lats) == 0, "it is deleted");
    CHECK(sc, info_one(&ch, lat, &out) == 0, "and then not found");
    close_session(&ch);
}

static void sc_visibility(void) {
    const char *sc = "invisible-until-close";
    chan a, b;
    open_session(&a, 0);
    open_session(&b, 0);
    char name[512];
    piece_name(name, sizeof name, sc, "p");
    CHECK(sc, backup(&a, name, 8192, 20, 2, 0) == 0, "session A writes without closing");
    sbtbfinfo *out;
    CHECK(sc, info_one(&b, name, &out) == 0, "session B sees NOTFOUND while the piece is open");
    expect_error(sc, &b, g_t->sbtrestore(b.ctx, 0, name, 8192), SBT_ERROR_NOTFOUND, "sbtrestore of the open piece",
                 NULL);
    CHECK(sc, g_t->sbtclose2(a.ctx, 0) == 0, "session A closes");
    CHECK(sc, info_one(&b, name, &out) == 1, "session B sees it after the close");
    remove_one(&b, name);
    close_session(&a);
    close_session(&b);
}

static void sc_errors(void) {
    chan ch;
    open_session(&ch, 0);
    const char *sc = "not-found";
    char missing[512], a[512];
    piece_name(missing, sizeof missing, sc, "never-written");
    piece_name(a, sizeof a, sc, "a");
    backup(&ch, a, 4096, 3, 4, 1);
    char *names[] = {a, missing, a, NULL};
    sbtbfinfo *out = NULL;
    int rc = g_t->sbtinfo2(ch.ctx, 0, names, &out);
    int groups = 0, order_ok = rc == 0, nf = 0;
    for (sbtbfinfo *p = out; rc == 0 && p->type != SBTBFINFO_END; p++) {
        if (p->type == SBTBFINFO_NAME) {
            order_ok &= strcmp(p->value, names[groups]) == 0;
            groups++;
        }
        if (p->type == SBTBFINFO_NOTFOUND) nf++;
    }
    CHECK(sc, rc == 0 && groups == 3 && order_ok && nf == 1, "sbtinfo2 answers one group per name, in order, one NOTFOUND");
    expect_error(sc, &ch, g_t->sbtrestore(ch.ctx, 0, missing, 4096), SBT_ERROR_NOTFOUND, "sbtrestore of a missing piece",
                 missing);
    {
        /* A name too long to have been stored is not found, as sbtinfo2
         * and sbtremove2 answer it, not a failure of the library. */
        char longname[700];
        memset(longname, 'x', sizeof longname - 1);
        longname[sizeof longname - 1] = '\0';
        expect_error(sc, &ch, g_t->sbtrestore(ch.ctx, 0, longname, 4096), SBT_ERROR_NOTFOUND,
                     "sbtrestore of a name too long to be stored", "longer than");
    }

    sc = "duplicate";
    expect_error(sc, &ch, backup(&ch, a, 4096, 1, 4, 1), SBT_ERROR_EXISTS, "sbtbackup of an existing name", a);
    char other[512];
    piece_name(other, sizeof other, sc, "fresh");
    CHECK(sc, backup(&ch, other, 4096, 2, 5, 1) == 0, "the session still backs up a new name");

    sc = "abort";
    char ab[512];
    piece_name(ab, sizeof ab, sc, "aborted");
    CHECK(sc, backup(&ch, ab, 8192, 10, 6, 0) == 0, "10 blocks written");
    CHECK(sc, g_t->sbtclose2(ch.ctx, SBTCLOSE2_ABORT) == 0, "sbtclose2 with SBTCLOSE2_ABORT succeeds");
    CHECK(sc, info_one(&ch, ab, &out) == 0, "the aborted piece is not found");
    CHECK(sc, backup(&ch, ab, 8192, 2, 6, 1) == 0, "the name can be written again");
    char ended[512];
    piece_name(ended, sizeof ended, sc, "ended-open");
    chan e;
    open_session(&e, 0);
    CHECK(sc, backup(&e, ended, 8192, 5, 8, 0) == 0, "another session writes and ends without a close");
    close_session(&e);
    CHECK(sc, info_one(&ch, ended, &out) == 0, "a piece open at sbtend is not found");

    sc = "delete";
    char *del[] = {ab, missing, NULL};
    expect_error(sc, &ch, g_t->sbtremove2(ch.ctx, 0, del), SBT_ERROR_NOTFOUND, "sbtremove2 of a present and a missing name",
                 missing);
    CHECK(sc, info_one(&ch, ab, &out) == 0, "the present name was deleted anyway");
    char *del2[] = {a, other, NULL};
    CHECK(sc, g_t->sbtremove2(ch.ctx, 0, del2) == 0, "sbtremove2 of present names succeeds");

    sc = "commands";
    CHECK(sc, g_t->sbtcommand(ch.ctx, 0, "ENV=(SOMETHING=else)") == 0, "an unknown ENV key is accepted");
    CHECK(sc, g_t->sbtcommand(ch.ctx, 0, "set username U password P") == 0, "an unknown command is accepted");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ENV=(MOVER_SOCKET='%.400s',MOVER_TIMEOUT=30)", g_socket);
    CHECK(sc, g_t->sbtcommand(ch.ctx, 0, cmd) == 0, "ENV=(MOVER_SOCKET=...,MOVER_TIMEOUT=30) is accepted");
    char after[512];
    piece_name(after, sizeof after, sc, "after-send");
    CHECK(sc, backup(&ch, after, 4096, 2, 9, 1) == 0 && remove_one(&ch, after) == 0, "a backup works after SEND");
    char longcmd[700];
    memset(longcmd, 'x', sizeof longcmd - 1);
    longcmd[sizeof longcmd - 1] = '\0';
    expect_error(sc, &ch, g_t->sbtcommand(ch.ctx, 0, longcmd), SBT_ERROR_MM, "a command over 511 bytes", NULL);

    sc = "config";
    {
        /* A SEND that names a bad config file, or gives a bad value,
         * fails and leaves the settings it found in place. */
        char dir[256], good[300], bad[300];
        snprintf(dir, sizeof dir, "/tmp/sbt-driver-config-%d", (int)getpid());
        mkdir(dir, 0700);
        snprintf(good, sizeof good, "%s/good.conf", dir);
        snprintf(bad, sizeof bad, "%s/bad.conf", dir);
        FILE *f = fopen(good, "w");
        if (f) fputs("# the label RMAN shows\nSBTMOVER_LABEL = from-file\n", f), fclose(f);
        f = fopen(bad, "w");
        if (f) fputs("MOVER_TIMEOUT=soon\n", f), fclose(f);
        chan y;
        open_session(&y, 0);
        snprintf(cmd, sizeof cmd, "SBTMOVER_CONFIG=%s", good);
        CHECK(sc, g_t->sbtcommand(y.ctx, 0, cmd) == 0, "SEND SBTMOVER_CONFIG=<file> is accepted");
        expect_error(sc, &y, g_t->sbtcommand(y.ctx, 0, "SBTMOVER_CONFIG=/nonexistent/sbt.conf"), SBT_ERROR_MM,
                     "SEND of a config file that does not exist", "/nonexistent/sbt.conf");
        snprintf(cmd, sizeof cmd, "SBTMOVER_CONFIG=%s", dir);
        expect_error(sc, &y, g_t->sbtcommand(y.ctx, 0, cmd), SBT_ERROR_MM, "SEND of a directory as the config file",
                     "not a regular file");
        /* A FIFO nobody writes: an error at once, not a server process
         * held in open() for ever. */
        char fifo[300];
        snprintf(fifo, sizeof fifo, "%s/fifo.conf", dir);
        mkfifo(fifo, 0600);
        snprintf(cmd, sizeof cmd, "SBTMOVER_CONFIG=%s", fifo);
        expect_error(sc, &y, g_t->sbtcommand(y.ctx, 0, cmd), SBT_ERROR_MM, "SEND of a FIFO as the config file",
                     "not a regular file");
        unlink(fifo);
        snprintf(cmd, sizeof cmd, "SBTMOVER_CONFIG=%s", bad);
        expect_error(sc, &y, g_t->sbtcommand(y.ctx, 0, cmd), SBT_ERROR_MM, "SEND of a config file with a bad MOVER_TIMEOUT",
                     "line 1: MOVER_TIMEOUT=soon");
        expect_error(sc, &y, g_t->sbtcommand(y.ctx, 0, "MOVER_TIMEOUT=soon"), SBT_ERROR_MM, "SEND 'MOVER_TIMEOUT=soon'",
                     "not a positive number of seconds");
        /* All or nothing: a SEND whose last setting is bad leaves the
         * label (and the socket) it set before that as they were. */
        expect_error(sc, &y, g_t->sbtcommand(y.ctx, 0, "SBTMOVER_LABEL=from-send MOVER_SOCKET=/nonexistent/send.sock "
                                                      "MOVER_TIMEOUT=soon"),
                     SBT_ERROR_MM, "SEND 'SBTMOVER_LABEL=... MOVER_SOCKET=... MOVER_TIMEOUT=soon'", "MOVER_TIMEOUT=soon");
        expect_error(sc, &y, g_t->sbtcommand(y.ctx, 0, "SBTMOVER_LABEL=from-send,SBTMOVER_CONFIG=/nonexistent/c.conf"),
                     SBT_ERROR_MM, "SEND 'SBTMOVER_LABEL=...,SBTMOVER_CONFIG=<missing file>'", "/nonexistent/c.conf");
        char lp[512];
        piece_name(lp, sizeof lp, sc, "labelled");
        const char *label = NULL;
        sbtbfinfo *o = NULL;
        if (backup(&y, lp, 4096, 1, 10, 1) == 0 && info_one(&y, lp, &o) == 1)
            for (sbtbfinfo *p = o; p->type != SBTBFINFO_END; p++)
                if (p->type == SBTBFINFO_LABEL) label = p->value;
        CHECK(sc, label && strcmp(label, "from-file") == 0, "the first file's label survives the failed SENDs (%s)",
              label ? label : "no piece");
        remove_one(&y, lp);
        close_session(&y);
        unlink(good);
        unlink(bad);
        rmdir(dir);
    }

    sc = "error-text";
    chan x;
    open_session(&x, 0);
    g_t->sbtcommand(x.ctx, 0, "MOVER_SOCKET=/nonexistent/dir/mover.sock");
    char nm[512];
    piece_name(nm, sizeof nm, sc, "unreachable");
    rc = g_t->sbtbackup(x.ctx, 0, nm, NULL, 8192, 0, 1, 0);
    expect_error(sc, &x, rc, SBT_ERROR_MM, "sbtbackup with no mover at the socket", "/nonexistent/dir/mover.sock");
    char t1[1100], t2[1100];
    last_error(&x, t1, sizeof t1);
    last_error(&x, t2, sizeof t2);
    CHECK(sc, strstr(t1, nm) != NULL && strstr(t1, "no such socket") != NULL, "the text names the piece and the cause: %s", t1);
    CHECK(sc, strcmp(t1, t2) == 0, "sbterror does not clear the error");
    snprintf(cmd, sizeof cmd, "MOVER_SOCKET=%.400s", g_socket);
    g_t->sbtcommand(x.ctx, 0, cmd);
    sbt_ulong code;
    char *nat;
    CHECK(sc, g_t->sbterror(x.ctx, 0, &code, &nat, NULL) == -1, "a successful call clears the pending error");
    close_session(&x);
    close_session(&ch);
}

static void sc_call_order(void) {
    const char *sc = "call-order";
    chan ch;
    ch.ctx = calloc(1, g_ctxsize);
    unsigned char buf[8192];
    expect_error(sc, &ch, g_t->sbtbackup(ch.ctx, 0, "x", NULL, 8192, 0, 1, 0), SBT_ERROR_MM, "sbtbackup before sbtinit2",
                 NULL);
    free(ch.ctx);
    open_session(&ch, 0);
    expect_error(sc, &ch, g_t->sbtwrite2(ch.ctx, 0, buf), SBT_ERROR_MM, "sbtwrite2 before sbtbackup", NULL);
    expect_error(sc, &ch, g_t->sbtread2(ch.ctx, 0, buf), SBT_ERROR_MM, "sbtread2 before sbtrestore", NULL);
    expect_error(sc, &ch, g_t->sbtclose2(ch.ctx, 0), SBT_ERROR_MM, "sbtclose2 with nothing open", NULL);
    char name[512], second[512];
    piece_name(name, sizeof name, sc, "first");
    piece_name(second, sizeof second, sc, "second");
    CHECK(sc, backup(&ch, name, 8192, 2, 10, 0) == 0, "a piece is open");
    expect_error(sc, &ch, g_t->sbtbackup(ch.ctx, 0, second, NULL, 8192, 0, 1, 0), SBT_ERROR_MM,
                 "a second sbtbackup while one is open", "already open");
    expect_error(sc, &ch, g_t->sbtread2(ch.ctx, 0, buf), SBT_ERROR_MM, "sbtread2 on a backup", NULL);
    CHECK(sc, g_t->sbtclose2(ch.ctx, 0) == 0, "the first piece still closes");
    CHECK(sc, g_t->sbtrestore(ch.ctx, 0, name, 8192) == 0, "a restore is open");
    expect_error(sc, &ch, g_t->sbtwrite2(ch.ctx, 0, buf), SBT_ERROR_MM, "sbtwrite2 on a restore", NULL);
    g_t->sbtclose2(ch.ctx, 0);
    remove_one(&ch, name);
    g_t->sbtend(ch.ctx, 0);
    int rc = g_t->sbtread2(ch.ctx, 0, buf);
    expect_error(sc, &ch, rc, SBT_ERROR_MM, "sbtread2 after sbtend", NULL);
    CHECK(sc, g_t->sbtend(ch.ctx, 0) == 0, "a second sbtend succeeds");
    free(ch.ctx);
    CHECK(sc, open_session(&ch, 0) == 0, "a new session on a fresh context after sbtend");
    void *zero = calloc(1, g_ctxsize);
    CHECK(sc, g_t->sbtend(zero, 0) == 0, "sbtend on a never-initialised context succeeds");
    free(zero);
    CHECK(sc, g_t->sbtbackup(NULL, 0, "x", NULL, 8192, 0, 1, 0) == -1, "a NULL context fails without a crash");
    close_session(&ch);
}

static void sc_trace(void) {
    const char *sc = "trace";
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/sbt-driver-%d-trace.log", (int)getpid());
    unlink(path);
    bserc se;
    sbtinit_input in[] = {{SBTINIT_TRACE_NAME, path}, {SBTINIT_INEND, NULL}};
    sbtinit_output *out;
    g_init(&se, in, &out);
    chan ch;
    open_session(&ch, 2);
    char name[512];
    piece_name(name, sizeof name, sc, "traced");
    /* Arguments at level 2, but never a value whose key names a secret,
     * in whatever case. */
    g_t->sbtcommand(ch.ctx, 0, "db_Password=hunter2 MOVER_TIMEOUT=31");
    backup(&ch, name, 4096, 1, 11, 1);
    remove_one(&ch, name);
    sbt_ulong code = 0;
    char *native = NULL, *utf8 = NULL;
    g_t->sbterror(ch.ctx, 0, &code, &native, &utf8);
    close_session(&ch);
    /* Level 1: entry and exit of every call, no arguments. */
    open_session(&ch, 1);
    g_t->sbtcommand(ch.ctx, 0, "MOVER_TIMEOUT=32");
    piece_name(name, sizeof name, sc, "traced-1");
    backup(&ch, name, 4096, 1, 12, 1);
    remove_one(&ch, name);
    close_session(&ch);
    FILE *f = fopen(path, "r");
    char line[2100];
    int enter = 0, hex = 0, hidden = 0, leaked = 0, arg2 = 0, arg1 = 0, exits = 0, sbterror = 0;
    const char *exit_of[5] = {"sbtinit2: exit 0", "sbtbackup: exit 0", "sbtclose2: exit 0", "sbtremove2: exit 0",
                              "sbtend: exit 0"};
    int call_exits[5] = {0};
    while (f && fgets(line, sizeof line, f)) {
        enter += strstr(line, "sbtbackup: enter") != NULL;
        char *p = strstr(line, "first 32 bytes: ");
        hex += p != NULL && strlen(p + 16) >= 64;
        hidden += strstr(line, "db_Password=(hidden)") != NULL;
        leaked += strstr(line, "hunter2") != NULL;
        arg2 += strstr(line, "MOVER_TIMEOUT=31") != NULL;
        arg1 += strstr(line, "MOVER_TIMEOUT=32") != NULL;
        exits += strstr(line, "sbtwrite2: exit 0") != NULL;
        sbterror += strstr(line, "sbterror: exit") != NULL;
        for (int k = 0; k < 5; k++) call_exits[k] += strstr(line, exit_of[k]) != NULL;
    }
    if (f) fclose(f);
    unlink(path);
    CHECK(sc, enter > 0 && hex > 0, "level 2 traces calls and the first 32 bytes of buffers in %s", path);
    CHECK(sc, hidden == 1 && leaked == 0 && arg2 == 1,
          "level 2 traces sbtcommand's settings, with a password's value hidden whatever its case "
          "(hidden %d, leaked %d, shown %d)", hidden, leaked, arg2);
    CHECK(sc, arg1 == 0 && exits >= 2 && sbterror == 1,
          "level 1 traces no arguments, and the exit of each call, sbterror's too (arguments %d, "
          "sbtwrite2 exits %d, sbterror %d)", arg1, exits, sbterror);
    for (int k = 0; k < 5; k++)
        CHECK(sc, call_exits[k] == 2, "both sessions trace \"%s\" once each (%d)", exit_of[k], call_exits[k]);
    /* Back to the driver's own trace file (removed at exit). */
    in[0].value = g_trace[0] != '\0' ? g_trace : NULL;
    g_init(&se, in, &out);
}

/* sbtinit2 items of types the library does not know: a string holding
 * settings applies them (the way SBT_PARMS may arrive), anything else is
 * ignored without being dereferenced blindly, and each is traced. */
static void sc_init_items(void) {
    const char *sc = "init-items";
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/sbt-driver-%d-items.log", (int)getpid());
    unlink(path);
    bserc se;
    sbtinit_input tin[] = {{SBTINIT_TRACE_NAME, path}, {SBTINIT_INEND, NULL}};
    sbtinit_output *tout;
    g_init(&se, tin, &tout);
    sbt_ulong level = 1, api = SBT_APIVSN(2, 0), seven = 7;
    char name[512], cmd[600];

    /* A string item's socket is used over the environment's; SEND's over both. */
    chan a;
    a.ctx = calloc(1, g_ctxsize);
    sbtinit2_input ia[] = {{SBTINIT2_TRACE_LEVEL, &level},
                           {SBTINIT2_CLIENT_APIVSN, &api},
                           {100, "MOVER_SOCKET=/nonexistent/item.sock"},
                           {SBTINIT2_END, NULL}};
    sbtinit2_output *out = NULL;
    CHECK(sc, g_t->sbtinit2(a.ctx, 0, ia, &out) == 0, "sbtinit2 with a string item of settings succeeds");
    piece_name(name, sizeof name, sc, "via-item");
    expect_error(sc, &a, backup(&a, name, 4096, 1, 20, 1), SBT_ERROR_MM,
                 "a backup through the socket a string item named", "/nonexistent/item.sock");
    snprintf(cmd, sizeof cmd, "MOVER_SOCKET=%.400s", g_socket);
    CHECK(sc, g_t->sbtcommand(a.ctx, 0, cmd) == 0 && backup(&a, name, 4096, 1, 20, 1) == 0 && remove_one(&a, name) == 0,
          "SEND's socket wins over the item's: the backup works");
    close_session(&a);

    /* Integers, NULL, an unmapped address, a string ending at the last
     * byte of a page whose next page is unmapped, and quoted values with
     * spaces and commas. */
    long pg = sysconf(_SC_PAGESIZE);
    char *pages = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *edge = NULL;
    if (pages != MAP_FAILED) {
        munmap(pages + pg, (size_t)pg);
        const char *e = "MOVER_TIMEOUT=45";
        edge = pages + pg - strlen(e) - 1;
        memcpy(edge, e, strlen(e) + 1);
    }
    chan b;
    b.ctx = calloc(1, g_ctxsize);
    sbtinit2_input ib[] = {{SBTINIT2_TRACE_LEVEL, &level},
                           {101, &seven},
                           {102, (void *)16},
                           {103, NULL},
                           {104, "SBTMOVER_LABEL='two words, one label', MOVER_TIMEOUT=30"},
                           {105, edge},
                           {106, pages != MAP_FAILED ? pages + pg : NULL},
                           {SBTINIT2_END, NULL}};
    CHECK(sc, g_t->sbtinit2(b.ctx, 0, ib, &out) == 0,
          "sbtinit2 with integer, NULL, unmapped and string items succeeds");
    piece_name(name, sizeof name, sc, "labelled");
    const char *label = NULL;
    sbtbfinfo *o = NULL;
    if (backup(&b, name, 4096, 1, 21, 1) == 0 && info_one(&b, name, &o) == 1)
        for (sbtbfinfo *p = o; p->type != SBTBFINFO_END; p++)
            if (p->type == SBTBFINFO_LABEL) label = p->value;
    CHECK(sc, label && strcmp(label, "two words, one label") == 0,
          "a quoted value with a space and a comma arrives whole (%s)", label ? label : "no piece");
    remove_one(&b, name);
    close_session(&b);
    if (pages != MAP_FAILED) munmap(pages, (size_t)pg);

    /* A bad value in a string item fails sbtinit2, saying which. */
    chan c;
    c.ctx = calloc(1, g_ctxsize);
    sbtinit2_input ic[] = {{SBTINIT2_TRACE_LEVEL, &level}, {107, "MOVER_TIMEOUT=soon"}, {SBTINIT2_END, NULL}};
    expect_error(sc, &c, g_t->sbtinit2(c.ctx, 0, ic, &out), SBT_ERROR_MM, "sbtinit2 with MOVER_TIMEOUT=soon in an item",
                 "MOVER_TIMEOUT=soon");
    free(c.ctx);

    FILE *f = fopen(path, "r");
    char line[2100];
    int strings = 0, others = 0, edge_seen = 0;
    while (f && fgets(line, sizeof line, f)) {
        strings += strstr(line, "item type 104: a string of") != NULL;
        edge_seen += strstr(line, "item type 105: a string of 16 bytes") != NULL;
        others += strstr(line, "item type 101: not a string") != NULL || strstr(line, "item type 102: not a string") ||
                  strstr(line, "item type 103: not a string") || strstr(line, "item type 106: not a string");
    }
    if (f) fclose(f);
    unlink(path);
    CHECK(sc, strings == 1 && edge_seen == (edge != NULL) && others == 4,
          "level 1 traces each unknown item: strings as settings (%d, at a page's end %d), others ignored (%d of 4)",
          strings, edge_seen, others);
    tin[0].value = g_trace[0] != '\0' ? g_trace : NULL;
    g_init(&se, tin, &tout);
}

/* Reports a failed step of a channel with the pending error, so a
 * channel that fails says where and why. Returns 0. */
static int channel_failed(chan *ch, int k, const char *sc, const char *step, const char *name) {
    char text[1100];
    sbt_ulong code = last_error(ch, text, sizeof text);
    report(0, sc, "channel %d: %s of %s failed: code %lu %s", k, step, name, code, text);
    return 0;
}

/* One full session: the body of a channel (process or thread). */
static int channel_body(int k, const char *sc) {
    chan ch;
    char name[512], tag[32];
    snprintf(tag, sizeof tag, "channel-%d", k);
    piece_name(name, sizeof name, sc, tag);
    if (open_session(&ch, 0) != 0) return channel_failed(&ch, k, sc, "sbtinit2", name);
    uint64_t seed = 100 + (uint64_t)k;
    int ok = backup(&ch, name, 65536, 64 + (uint64_t)k, seed, 1) == 0;
    if (!ok) channel_failed(&ch, k, sc, "the backup", name);
    ok = ok && restore_check(sc, &ch, name, 16384 * (size_t)(k % 3 + 1), 65536ULL * (64 + (uint64_t)k), seed);
    sbtbfinfo *out;
    if (ok && info_one(&ch, name, &out) != 1) ok = channel_failed(&ch, k, sc, "sbtinfo2", name);
    if (ok && remove_one(&ch, name) != 0) ok = channel_failed(&ch, k, sc, "sbtremove2", name);
    /* A deliberate not-found in channel 0 must not leak into the others. */
    if (k == 0) g_t->sbtrestore(ch.ctx, 0, "never/written/anywhere", 8192);
    else if (ok) {
        sbt_ulong code;
        char *nat;
        if (g_t->sbterror(ch.ctx, 0, &code, &nat, NULL) != -1) {
            report(0, sc, "channel %d: an error is pending after a clean session: code %lu %s", k, code,
                   nat ? nat : "");
            ok = 0;
        }
    }
    close_session(&ch);
    return ok;
}

static pthread_barrier_t g_barrier;

static void *thread_main(void *arg) {
    int k = (int)(intptr_t)arg;
    pthread_barrier_wait(&g_barrier);
    int ok = channel_body(k, "channels-threads");
    report(ok, "channels-threads", "channel %d (a thread) backed up, restored, listed and deleted its piece", k);
    return NULL;
}

static void sc_channels(const char *self) {
    pthread_t th[64];
    int n = g_channels > 64 ? 64 : g_channels;
    pthread_barrier_init(&g_barrier, NULL, (unsigned)n);
    for (int k = 0; k < n; k++) pthread_create(&th[k], NULL, thread_main, (void *)(intptr_t)k);
    for (int k = 0; k < n; k++) pthread_join(th[k], NULL);
    pthread_barrier_destroy(&g_barrier);

    const char *sc = "channels-processes";
    pid_t pids[64];
    for (int k = 0; k < n; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            char ks[16];
            snprintf(ks, sizeof ks, "%d", k);
            execl(self, self, "--lib", g_lib, "--socket", g_socket, "--prefix", g_prefix, "--child", ks, (char *)NULL);
            _exit(127);
        }
    }
    for (int k = 0; k < n; k++) {
        int st = 0;
        waitpid(pids[k], &st, 0);
        CHECK(sc, WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "channel %d (a process with its own dlopen) succeeded (exit status %d, signal %d)", k,
              WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
}

static void sc_large(void) {
    const char *sc = "large";
    chan ch;
    open_session(&ch, 0);
    char name[512];
    piece_name(name, sizeof name, sc, "over-4gib");
    uint64_t blocks = 16385; /* 4 GiB + 256 KiB in 256 KiB blocks */
    CHECK(sc, backup(&ch, name, 262144, blocks, 12, 1) == 0, "a piece of 4 GiB + 256 KiB is written");
    restore_check(sc, &ch, name, 1 << 20, blocks * 262144ULL, 12);
    remove_one(&ch, name);
    close_session(&ch);
}

/* The mover dies mid-piece: the next calls that need it fail with text
 * naming the piece instead of hanging, and the session can still end. */
static void sc_mover_death(void) {
    const char *sc = "mover-death";
    chan ch;
    open_session(&ch, 0);
    char name[512];
    piece_name(name, sizeof name, sc, "orphan");
    CHECK(sc, backup(&ch, name, 65536, 8, 13, 0) == 0, "a piece is open with 8 blocks written");
    kill(g_kill_mover, SIGKILL);
    unsigned char *buf = calloc(1, 65536);
    int rc = 0;
    uint64_t writes = 0;
    time_t t0 = time(NULL);
    while (rc == 0 && writes < 100000) {
        rc = g_t->sbtwrite2(ch.ctx, 0, buf);
        writes++;
    }
    int failed_in_write = rc != 0;
    if (rc == 0) rc = g_t->sbtclose2(ch.ctx, 0);
    char text[1100];
    sbt_ulong code = last_error(&ch, text, sizeof text);
    CHECK(sc, rc == -1 && code == SBT_ERROR_MM && strstr(text, name) != NULL,
          "a call fails after the mover died (%llu more writes, %ld s): %s", (unsigned long long)writes,
          (long)(time(NULL) - t0), text);
    /* RMAN closes with ABORT after a failed write: that discards the piece.
     * A failed close has already reset the per-file state (spec 2.3), so an
     * ABORT after it finds no file open. */
    int arc = g_t->sbtclose2(ch.ctx, SBTCLOSE2_ABORT);
    if (failed_in_write)
        CHECK(sc, arc == 0, "sbtclose2 ABORT after the failed write discards the piece");
    else
        CHECK(sc, arc == -1, "sbtclose2 ABORT after the failed close finds no file open");
    CHECK(sc, g_t->sbtend(ch.ctx, 0) == 0, "sbtend returns 0");
    free(ch.ctx);
    free(buf);
    printf("orphan piece: %s\n", name);
}

/* ---- mover restart ------------------------------------------------------------ */

/* Waits up to `secs` for `path` to exist. */
static int wait_file(const char *path, int secs) {
    for (int i = 0; i < secs * 20; i++) {
        if (access(path, F_OK) == 0) return 1;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* The channel's connection sits idle between pieces while the mover is
 * restarted (an upgrade, a crash and restart). The next calls must connect
 * afresh, not fail once on the dead connection: a failed sbtinfo2 during a
 * restore sends RMAN to an older backup. The test restarts the mover when
 * DIR/ready appears and says so with DIR/restarted. */
static void sc_mover_restart(void) {
    const char *sc = "mover-restart";
    chan ch;
    CHECK(sc, open_session(&ch, 0) == 0, "sbtinit2");
    char a[512], b[512], path[PATH_MAX], text[1100];
    piece_name(a, sizeof a, sc, "before");
    piece_name(b, sizeof b, sc, "after");
    CHECK(sc, backup(&ch, a, 65536, 16, 21, 1) == 0, "a piece is saved before the restart");
    sbtbfinfo *inf = NULL;
    CHECK(sc, info_one(&ch, a, &inf) == 1, "sbtinfo2 finds it on the same connection");
    snprintf(path, sizeof path, "%s/ready", g_handshake);
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/restarted", g_handshake);
    CHECK(sc, wait_file(path, 120), "the mover was restarted");
    int r = info_one(&ch, a, &inf);
    CHECK(sc, r == 1, "sbtinfo2 after the restart finds the piece (%d)%s%s", r, r < 0 ? ": " : "",
          r < 0 ? (last_error(&ch, text, sizeof text), text) : "");
    r = backup(&ch, b, 65536, 16, 22, 1);
    CHECK(sc, r == 0, "the next piece is saved after the restart%s%s", r ? ": " : "",
          r ? (last_error(&ch, text, sizeof text), text) : "");
    restore_check(sc, &ch, a, 65536, 16 * 65536, 21);
    restore_check(sc, &ch, b, 65536, 16 * 65536, 22);
    CHECK(sc, remove_one(&ch, a) == 0 && remove_one(&ch, b) == 0, "both pieces are removed");
    close_session(&ch);
}

/* ---- random calls -------------------------------------------------------------- */

/* A model-checked random walk over the v2 calls, as a confused or hostile
 * caller might make them: two sessions, a small pool of names, odd block
 * sizes, NULL buffers and names, calls in any order. Every call's result
 * (0, or -1 with the pending code) must be the one the specification and
 * the model give, every byte read back must be the bytes written, and at
 * the end every committed piece, and only those, must be in the store.
 * --seed S replays a run; --ops N sets its length. */
static unsigned long long g_seed;
static int g_seed_given;
static int g_ops = 1500;

#define RC_NAMES 4
#define RC_SESSIONS 2
#define RC_MAX_BYTES ((uint64_t)4 << 20)

typedef struct rc_piece {
    int present;
    size_t bs;
    uint64_t blocks, seed;
} rc_piece;

typedef struct rc_sess {
    chan ch;
    enum { RC_UNINIT, RC_IDLE, RC_WRITING, RC_READING } st;
    int name;      /* the open piece's index in the pool */
    size_t bs;     /* its block size */
    uint64_t blocks, seed; /* writing: blocks written so far; the stream's seed */
    uint64_t off;  /* reading: bytes returned so far */
} rc_sess;

enum { RC_INIT, RC_BACKUP, RC_WRITE, RC_RESTORE, RC_READ, RC_CLOSE, RC_INFO, RC_REMOVE, RC_COMMAND, RC_END, RC_KINDS };

static uint64_t rc_rng;
static uint64_t rc_next(void) { return splitmix64(rc_rng++); }
static uint64_t rc_below(uint64_t n) { return rc_next() % n; }

/* The next call for a session in state `st`: one a caller in that state
 * would make three times in four, any call at all otherwise. */
static int rc_pick(int st) {
    if (rc_below(4) == 0) return (int)rc_below(RC_KINDS);
    uint64_t r = rc_below(100);
    switch (st) {
    case RC_UNINIT: return RC_INIT;
    case RC_IDLE:
        return r < 40 ? RC_BACKUP : r < 70 ? RC_RESTORE : r < 80 ? RC_INFO : r < 90 ? RC_REMOVE : r < 95 ? RC_COMMAND : RC_END;
    default:
        return r < 90 ? (st == RC_WRITING ? RC_WRITE : RC_READ) : r < 98 ? RC_CLOSE : RC_END;
    }
}

/* The last calls, for the failure report. */
static char rc_log[32][200];
static int rc_nlog, rc_op;
static void rc_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void rc_note(const char *fmt, ...) {
    char *e = rc_log[rc_nlog % 32];
    int n = snprintf(e, sizeof rc_log[0], "call %d: ", rc_op);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e + n, sizeof rc_log[0] - (size_t)n, fmt, ap);
    va_end(ap);
    rc_nlog++;
}

static unsigned long long rc_refusals;

/* Reports a departure from the model at call `op`, with the calls before it. */
static void rc_fail(const char *sc, int op, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rc_fail(const char *sc, int op, const char *fmt, ...) {
    char msg[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)op;
    report(0, sc, "seed %llu, %s: %s", g_seed, rc_log[(rc_nlog - 1) % 32], msg);
    int from = rc_nlog > 32 ? rc_nlog - 32 : 0;
    for (int i = from; i < rc_nlog; i++) printf("  %s\n", rc_log[i % 32]);
}

/* Checks one call's outcome against `want` (0, or an SBT error code). */
static int rc_expect(const char *sc, rc_sess *s, int rc, sbt_ulong want, int op) {
    char text[1100] = "";
    sbt_ulong code = rc == 0 ? 0 : last_error(&s->ch, text, sizeof text);
    int ok = want == 0 ? rc == 0 : (rc == -1 && code == want && text[0] != '\0' && strlen(text) < 1024);
    if (ok) {
        rc_refusals += want != 0;
        return 1;
    }
    rc_fail(sc, op, "rc %d code %lu (%s), the model says %lu", rc, code, text, want);
    return 0;
}

/* A piece name for a call: one in 20 NULL, one empty, one 600 bytes long. */
static const char *rc_name(uint64_t v, const char *toolong, const char *name) {
    return v == 0 ? NULL : v == 1 ? "" : v == 2 ? toolong : name;
}

/* The model after a successful sbtbackup or sbtrestore of name `k`. */
static void rc_open(rc_sess *s, int st, int k, size_t bs, uint64_t seed) {
    s->st = st;
    s->name = k;
    s->bs = bs;
    s->blocks = s->off = 0;
    s->seed = seed;
}

static void sc_random_calls(void) {
    const char *sc = "random-calls";
    if (!g_seed_given) g_seed = (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 20);
    rc_rng = splitmix64(g_seed ^ 0xD1B54A32D192ED03ULL); /* seeds 1 and 2 are not one walk shifted */
    static const size_t sizes[] = {1, 3, 512, 1000, 4096, 8192, 65536, 262147};
    const size_t nsizes = sizeof sizes / sizeof *sizes;
    char names[RC_NAMES][512];
    static const char *const tags[RC_NAMES] = {"p0", "p1", "/p2 after a double slash", "p3.with.dots"};
    for (int i = 0; i < RC_NAMES; i++) {
        char tag[64];
        snprintf(tag, sizeof tag, "%llu/%s", g_seed, tags[i]);
        piece_name(names[i], sizeof names[i], sc, tag);
    }
    char toolong[600];
    memset(toolong, 'n', sizeof toolong - 1);
    toolong[sizeof toolong - 1] = '\0';
    rc_piece model[RC_NAMES] = {{0}};
    rc_sess ss[RC_SESSIONS];
    for (int k = 0; k < RC_SESSIONS; k++) {
        memset(&ss[k], 0, sizeof ss[k]);
        ss[k].ch.ctx = calloc(1, g_ctxsize);
        ss[k].st = RC_UNINIT;
    }
    size_t cap = sizes[nsizes - 1];
    unsigned char *buf = malloc(cap), *want = malloc(cap);
    int ok = 1, op;
    /* What the walk reached: pieces committed, bytes read back, EOFs, refusals. */
    unsigned long long commits = 0, nonempty = 0, readback = 0, eofs = 0;
    for (op = 0; op < g_ops && ok; op++) {
        rc_op = op;
        rc_sess *s = &ss[rc_below(RC_SESSIONS)];
        rc_sess *o = &ss[s == &ss[0]]; /* the other session */
        int k = (int)rc_below(RC_NAMES);
        /* Whether name k is open in a session, and how. */
        int writing_k = (s->st == RC_WRITING && s->name == k) || (o->st == RC_WRITING && o->name == k);
        int open_k = writing_k || (s->st == RC_READING && s->name == k) || (o->st == RC_READING && o->name == k);
        int r = rc_pick(s->st);
        if (r == RC_INIT) { /* sbtinit2: a fresh session, or settings again */
            sbt_ulong level = 0;
            sbtinit2_input in[] = {{SBTINIT2_TRACE_LEVEL, &level}, {SBTINIT2_END, NULL}};
            sbtinit2_output *out = NULL;
            rc_note("sbtinit2 (session %d)", (int)(s - ss));
            ok = rc_expect(sc, s, g_t->sbtinit2(s->ch.ctx, 0, in, &out), 0, op);
            if (s->st == RC_UNINIT) s->st = RC_IDLE;
        } else if (r == RC_BACKUP) { /* sbtbackup */
            if (o->st != RC_UNINIT && o->name == k && o->st == RC_WRITING) continue; /* two writers of one name: RMAN never */
            size_t bs = sizes[rc_below(nsizes)];
            uint64_t v = rc_below(20);
            const char *nm = rc_name(v, toolong, names[k]);
            uint64_t seed = rc_next();
            rc_note("sbtbackup %s bs=%zu (session %d)", v == 2 ? "(600 bytes)" : nm ? nm : "(null)", bs, (int)(s - ss));
            sbt_ulong dbid = 1, ftype = 1;
            sbtobject info[] = {{SBTOBJECT_DBNAME, "RND"}, {SBTOBJECT_DBID, &dbid}, {SBTOBJECT_FILETYPE, &ftype},
                                {SBTOBJECT_END, NULL}};
            int rc = g_t->sbtbackup(s->ch.ctx, 0, (char *)nm, info, bs, 0, 1, 0);
            sbt_ulong w = s->st != RC_IDLE || v < 3 ? SBT_ERROR_MM : model[k].present ? SBT_ERROR_EXISTS : 0;
            ok = rc_expect(sc, s, rc, w, op);
            if (w == 0) rc_open(s, RC_WRITING, k, bs, seed);
        } else if (r == RC_WRITE) { /* sbtwrite2 */
            int null = rc_below(30) == 0;
            if (s->st == RC_WRITING && !null && (s->blocks + 1) * s->bs > RC_MAX_BYTES) continue;
            if (s->st == RC_WRITING) gen(s->seed, s->blocks * s->bs, buf, s->bs);
            rc_note("sbtwrite2%s (session %d)", null ? " NULL" : "", (int)(s - ss));
            int rc = g_t->sbtwrite2(s->ch.ctx, 0, null ? NULL : buf);
            int good = s->st == RC_WRITING && !null;
            ok = rc_expect(sc, s, rc, good ? 0 : SBT_ERROR_MM, op);
            if (good) s->blocks++;
        } else if (r == RC_RESTORE) { /* sbtrestore */
            size_t bs = sizes[rc_below(nsizes)];
            uint64_t v = rc_below(20);
            const char *nm = rc_name(v, toolong, names[k]);
            rc_note("sbtrestore %s bs=%zu (session %d)", v == 2 ? "(600 bytes)" : nm ? nm : "(null)", bs, (int)(s - ss));
            int rc = g_t->sbtrestore(s->ch.ctx, 0, (char *)nm, bs);
            /* A name too long to have been stored is not found (7502). */
            sbt_ulong w = s->st != RC_IDLE || v < 2 ? SBT_ERROR_MM
                          : v == 2 || !model[k].present ? SBT_ERROR_NOTFOUND
                                                        : 0;
            ok = rc_expect(sc, s, rc, w, op);
            if (w == 0) rc_open(s, RC_READING, k, bs, 0);
        } else if (r == RC_READ) { /* sbtread2 */
            int null = rc_below(30) == 0;
            memset(buf, 0xEE, cap);
            rc_note("sbtread2%s (session %d)", null ? " NULL" : "", (int)(s - ss));
            int rc = g_t->sbtread2(s->ch.ctx, 0, null ? NULL : buf);
            if (s->st != RC_READING || null) {
                ok = rc_expect(sc, s, rc, SBT_ERROR_MM, op);
                continue;
            }
            rc_piece *p = &model[s->name];
            uint64_t total = p->bs * p->blocks;
            size_t n = total - s->off < s->bs ? (size_t)(total - s->off) : s->bs;
            ok = rc_expect(sc, s, rc, n > 0 ? 0 : SBT_ERROR_EOF, op);
            eofs += n == 0;
            if (ok && n > 0) {
                readback += n;
                gen(p->seed, s->off, want, n);
                size_t tail = n;
                while (tail < s->bs && buf[tail] == 0xEE) tail++;
                if (memcmp(buf, want, n) != 0 || tail != s->bs) {
                    rc_fail(sc, op, "at byte %llu of %s: %s", (unsigned long long)s->off, names[s->name],
                            tail != s->bs ? "the short block wrote past its data" : "the bytes differ");
                    ok = 0;
                }
                s->off += n;
            }
        } else if (r == RC_CLOSE) { /* sbtclose2, now and then with ABORT */
            int abort_ = rc_below(4) == 0;
            rc_note("sbtclose2%s (session %d)", abort_ ? " ABORT" : "", (int)(s - ss));
            int rc = g_t->sbtclose2(s->ch.ctx, abort_ ? SBTCLOSE2_ABORT : 0);
            ok = rc_expect(sc, s, rc, s->st == RC_WRITING || s->st == RC_READING ? 0 : SBT_ERROR_MM, op);
            if (s->st == RC_WRITING && !abort_) {
                model[s->name] = (rc_piece){1, s->bs, s->blocks, s->seed};
                commits++;
                nonempty += s->blocks > 0;
            }
            if (s->st != RC_UNINIT) s->st = RC_IDLE;
        } else if (r == RC_INFO) { /* sbtinfo2: committed pieces only */
            char *list[] = {names[k], names[(k + 1) % RC_NAMES], NULL};
            sbtbfinfo *out = NULL;
            rc_note("sbtinfo2 %s, %s (session %d)", list[0], list[1], (int)(s - ss));
            int rc = g_t->sbtinfo2(s->ch.ctx, 0, list, &out);
            ok = rc_expect(sc, s, rc, s->st == RC_UNINIT ? SBT_ERROR_MM : 0, op);
            if (ok && rc == 0) {
                int g = -1, found[2] = {1, 1};
                for (sbtbfinfo *p = out; p->type != SBTBFINFO_END; p++) {
                    if (p->type == SBTBFINFO_NAME) g++;
                    if (p->type == SBTBFINFO_NOTFOUND && g >= 0 && g < 2) found[g] = 0;
                }
                int want0 = model[k].present, want1 = model[(k + 1) % RC_NAMES].present;
                if (g != 1 || found[0] != want0 || found[1] != want1) {
                    rc_fail(sc, op, "found %d,%d in %d groups; the model says %d,%d", found[0], found[1], g + 1, want0,
                            want1);
                    ok = 0;
                }
            }
        } else if (r == RC_REMOVE) { /* sbtremove2 of a name nobody has open */
            if (open_k) continue;
            char *list[] = {names[k], NULL};
            rc_note("sbtremove2 %s (session %d)", names[k], (int)(s - ss));
            int rc = g_t->sbtremove2(s->ch.ctx, 0, list);
            ok = rc_expect(sc, s, rc, s->st == RC_UNINIT ? SBT_ERROR_MM : model[k].present ? 0 : SBT_ERROR_NOTFOUND,
                           op);
            if (s->st != RC_UNINIT) model[k].present = 0;
        } else if (r == RC_COMMAND) { /* sbtcommand: a harmless setting, or one too long */
            int bad = rc_below(3) == 0;
            char cmd[600];
            if (bad) {
                memset(cmd, 'c', sizeof cmd - 1);
                cmd[sizeof cmd - 1] = '\0';
            } else {
                snprintf(cmd, sizeof cmd, "ENV=(MOVER_TIMEOUT=30)");
            }
            rc_note("sbtcommand %s (session %d)", bad ? "(600 bytes)" : cmd, (int)(s - ss));
            ok = rc_expect(sc, s, g_t->sbtcommand(s->ch.ctx, 0, cmd), s->st == RC_UNINIT || bad ? SBT_ERROR_MM : 0, op);
        } else { /* sbtend: an open piece is abandoned, never committed */
            rc_note("sbtend (session %d)", (int)(s - ss));
            ok = rc_expect(sc, s, g_t->sbtend(s->ch.ctx, 0), 0, op);
            s->st = RC_UNINIT;
        }
    }
    for (int i = 0; i < RC_SESSIONS; i++) close_session(&ss[i].ch);
    CHECK(sc, ok,
          "%d calls of seed %llu in two sessions gave the model's results: %llu pieces committed (%llu with data), "
          "%llu bytes read back, %llu EOFs, %llu refusals (replay: --only random-calls --seed %llu)",
          op, g_seed, commits, nonempty, readback, eofs, rc_refusals, g_seed);
    /* The store holds the committed pieces, and only those, byte for byte. */
    chan ch;
    open_session(&ch, 0);
    for (int i = 0; i < RC_NAMES; i++) {
        sbtbfinfo *out;
        int found = info_one(&ch, names[i], &out);
        CHECK(sc, found == model[i].present, "%s is %s", names[i], model[i].present ? "stored" : "not stored");
        if (found == 1 && model[i].present) {
            restore_check(sc, &ch, names[i], sizes[rc_below(nsizes)], model[i].bs * model[i].blocks, model[i].seed);
            remove_one(&ch, names[i]);
        }
    }
    close_session(&ch);
    free(buf);
    free(want);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Benchmark: one piece of g_bench_bytes in g_bench_block blocks, copied by
 * sbtwrite2 from a 64 MiB buffer (as from RMAN's buffers), then restored;
 * prints the seconds of each, close and end included. */
static int bench(void) {
    chan ch;
    if (open_session(&ch, 0) != 0) return 1;
    size_t bs = g_bench_block;
    /* The source is at most 64 MiB, and no more than the piece. */
    size_t src_bytes = g_bench_bytes < ((size_t)64 << 20) ? (size_t)g_bench_bytes : ((size_t)64 << 20);
    size_t src_blocks = src_bytes / bs ? src_bytes / bs : 1;
    unsigned char *src = malloc(src_blocks * bs), *buf = malloc(bs);
    for (size_t b = 0; b < src_blocks; b++) gen(99, (uint64_t)b * bs, src + b * bs, bs);
    char name[512];
    piece_name(name, sizeof name, "bench", "piece");
    unsigned long long blocks = g_bench_bytes / bs;
    if (g_bench_step) { /* the caller starts every channel's backup at once */
        printf("bench ready\n");
        fflush(stdout);
        int c;
        while ((c = getchar()) != EOF && c != '\n') {}
    }
    double t0 = now_s();
    int rc = g_t->sbtbackup(ch.ctx, 0, name, NULL, bs, 0, 1, 0);
    for (unsigned long long b = 0; rc == 0 && b < blocks; b++) rc = g_t->sbtwrite2(ch.ctx, 0, src + (b % src_blocks) * bs);
    if (rc == 0) rc = g_t->sbtclose2(ch.ctx, 0);
    double t1 = now_s();
    if (rc != 0) {
        char text[1100];
        fprintf(stderr, "bench backup failed: %s\n", (last_error(&ch, text, sizeof text), text));
        return 1;
    }
    if (g_bench_step) { /* the caller samples the mover's CPU, then a newline goes on */
        printf("bench backup-done\n");
        fflush(stdout);
        int c;
        while ((c = getchar()) != EOF && c != '\n') {}
    }
    unsigned long long got = 0;
    double t2 = now_s();
    rc = g_t->sbtrestore(ch.ctx, 0, name, bs);
    while (rc == 0 && (rc = g_t->sbtread2(ch.ctx, 0, buf)) == 0) got += bs;
    char text[1100];
    sbt_ulong code = last_error(&ch, text, sizeof text);
    int crc = g_t->sbtclose2(ch.ctx, 0);
    double t3 = now_s();
    if (code != SBT_ERROR_EOF || crc != 0 || got != blocks * bs) {
        fprintf(stderr, "bench restore failed: %llu of %llu bytes: %s\n", got, blocks * bs, text);
        return 1;
    }
    if (!g_bench_keep) remove_one(&ch, name);
    close_session(&ch);
    printf("bench bytes=%llu block=%zu backup_seconds=%.6f restore_seconds=%.6f\n", blocks * bs, bs, t1 - t0, t3 - t2);
    free(src);
    free(buf);
    return 0;
}

int sbt_driver_main(int argc, char **argv) {
    signal(SIGPIPE, SIG_DFL); /* as in an Oracle server process */
    int child = -1;
    const char *sock = getenv("MOVER_SOCKET");
    snprintf(g_socket, sizeof g_socket, "%s", sock ? sock : "");
    char exe[PATH_MAX];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[el > 0 ? el : 0] = '\0';
    snprintf(g_lib, sizeof g_lib, "%.*s/libsbtmover.so", (int)(strrchr(exe, '/') ? strrchr(exe, '/') - exe : 1),
             el > 0 ? exe : ".");
    snprintf(g_prefix, sizeof g_prefix, "sbt-driver/%d-%ld", (int)getpid(), (long)time(NULL));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--lib") == 0 && v) snprintf(g_lib, sizeof g_lib, "%s", argv[++i]);
        else if (strcmp(a, "--socket") == 0 && v) snprintf(g_socket, sizeof g_socket, "%s", argv[++i]);
        else if (strcmp(a, "--channels") == 0 && v) g_channels = atoi(argv[++i]);
        else if (strcmp(a, "--prefix") == 0 && v) snprintf(g_prefix, sizeof g_prefix, "%s", argv[++i]);
        else if (strcmp(a, "--only") == 0 && v) g_only = argv[++i];
        else if (strcmp(a, "--child") == 0 && v) child = atoi(argv[++i]);
        else if (strcmp(a, "--large") == 0) g_large = 1;
        else if (strcmp(a, "--kill-mover") == 0 && v) g_kill_mover = (pid_t)atoi(argv[++i]);
        else if (strcmp(a, "--restart-handshake") == 0 && v) g_handshake = argv[++i];
        else if (strcmp(a, "--bench-bytes") == 0 && v) g_bench_bytes = strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--bench-block") == 0 && v) g_bench_block = (size_t)strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--bench-step") == 0) g_bench_step = 1;
        else if (strcmp(a, "--bench-keep") == 0) g_bench_keep = 1;
        else if (strcmp(a, "--seed") == 0 && v) g_seed = strtoull(argv[++i], NULL, 10), g_seed_given = 1;
        else if (strcmp(a, "--ops") == 0 && v) g_ops = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: sbt-driver [--lib PATH] [--socket PATH] [--channels N] [--large] [--prefix P] "
                            "[--only NAMES] [--seed S] [--ops N] [--kill-mover PID] [--restart-handshake DIR] [--bench-bytes N [--bench-block B] [--bench-step] [--bench-keep]]\n");
            return 2;
        }
    }
    if (g_socket[0]) setenv("MOVER_SOCKET", g_socket, 1); /* PARMS 'ENV=(MOVER_SOCKET=...)' */
    if (child >= 0) {
        /* A channel process: its own dlopen and statics, like an Oracle server process. */
        g_only = "";
        sc_load();
        if (g_t == NULL) return 1;
        return channel_body(child, "channels-processes") ? 0 : 1;
    }
    sc_load();
    if (g_t == NULL) {
        printf("%d passed, %d failed\n", g_passed, g_failed);
        return 1;
    }
    if (g_bench_bytes > 0) {
        g_only = "";
        return bench();
    }
    if (g_handshake != NULL) {
        sc_mover_restart();
        printf("%d passed, %d failed\n", g_passed, g_failed);
        return g_failed == 0 ? 0 : 1;
    }
    if (g_kill_mover > 0) {
        sc_mover_death();
        printf("%d passed, %d failed\n", g_passed, g_failed);
        return g_failed == 0 ? 0 : 1;
    }
    if (wanted("backup")) sc_backup_restore();
    if (wanted("invisible")) sc_visibility();
    if (wanted("errors")) sc_errors();
    if (wanted("call-order")) sc_call_order();
    if (wanted("trace")) sc_trace();
    if (wanted("init-items")) sc_init_items();
    if (wanted("random-calls")) sc_random_calls();
    if (wanted("channels")) sc_channels(exe);
    if (g_large) sc_large();
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
