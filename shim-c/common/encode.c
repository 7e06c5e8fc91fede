/* encode.c: see encode.h. */
#include "encode.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME 1024

/* The length of the well-formed UTF-8 sequence at p (1 to 4: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0 if p starts none. */
static size_t utf8_len(const unsigned char *p) {
    if (p[0] < 0x80) return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF) return (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        unsigned char lo = p[0] == 0xE0 ? 0xA0 : 0x80, hi = p[0] == 0xED ? 0x9F : 0xBF;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        unsigned char lo = p[0] == 0xF0 ? 0x90 : 0x80, hi = p[0] == 0xF4 ? 0x8F : 0xBF;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

int shmover_encode_name(const char *in, char *out, size_t cap) {
    size_t o = 0;
    size_t n = strlen(in);
    size_t plain = 0; /* bytes left of a well-formed multibyte sequence */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        int seg_start = i == 0 || in[i - 1] == '/';
        size_t seg_len = strcspn(in + i, "/");
        int esc = ch == '%' || ch < 0x20 || ch == 0x7f;
        /* Bytes that are not UTF-8 (a Latin-1 name): the mover takes only
         * UTF-8 names. */
        if (plain > 0) plain--;
        else if (ch >= 0x80 && (plain = utf8_len((const unsigned char *)in + i)) > 0) plain--;
        else if (ch >= 0x80) esc = 1;
        if (ch == '/' && (i == 0 || i + 1 == n || in[i + 1] == '/')) esc = 1;
        if (seg_start && ch == '.' && (seg_len == 1 || (seg_len == 2 && in[i + 1] == '.'))) esc = 1;
        if (o + 4 > cap) return -1;
        if (esc) o += (size_t)snprintf(out + o, 4, "%%%02X", ch);
        else out[o++] = (char)ch;
    }
    if (o >= cap) return -1;
    out[o] = '\0';
    return o == 0 || o > MAX_NAME ? -1 : 0;
}

int shmover_encode_segment(const char *in, char *out, size_t cap) {
    size_t o = 0;
    if (!*in) {
        if (cap < 2) return -1;
        strcpy(out, "%");
        return 0;
    }
    int dots = strcmp(in, ".") == 0 || strcmp(in, "..") == 0;
    size_t plain = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        if (o + 4 > cap) return -1;
        int not_utf8 = 0;
        if (plain > 0) plain--;
        else if (*p >= 0x80 && (plain = utf8_len(p)) > 0) plain--;
        else if (*p >= 0x80) not_utf8 = 1;
        if (not_utf8 || *p == '%' || *p == '/' || *p < 0x20 || *p == 0x7f || (dots && *p == '.'))
            o += (size_t)snprintf(out + o, 4, "%%%02X", *p);
        else
            out[o++] = (char)*p;
    }
    if (o >= cap) return -1;
    out[o] = '\0';
    return 0;
}

int shmover_utf8_text(const char *in, char *out, size_t cap) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p;) {
        size_t len = utf8_len(p);
        if (o + (len ? len : 3) >= cap) return -1;
        if (len == 0) {
            o += (size_t)snprintf(out + o, 4, "%%%02X", *p);
            p++;
        } else {
            memcpy(out + o, p, len);
            o += len;
            p += len;
        }
    }
    if (o >= cap) return -1;
    out[o] = '\0';
    return 0;
}

int shmover_percent_decode(const char *in, char *out, size_t cap) {
    size_t o = 0;
    for (const char *p = in; *p; p++) {
        if (o + 1 >= cap) return -1;
        if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return 0;
}
