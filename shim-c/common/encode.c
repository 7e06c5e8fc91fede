/* encode.c: see encode.h. */
#include "encode.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME 1024

int shmover_encode_name(const char *in, char *out, size_t cap) {
    size_t o = 0;
    size_t n = strlen(in);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        int seg_start = i == 0 || in[i - 1] == '/';
        size_t seg_len = strcspn(in + i, "/");
        int esc = ch == '%' || ch < 0x20 || ch == 0x7f;
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
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        if (o + 4 > cap) return -1;
        if (*p == '%' || *p == '/' || *p < 0x20 || *p == 0x7f || (dots && *p == '.'))
            o += (size_t)snprintf(out + o, 4, "%%%02X", *p);
        else
            out[o++] = (char)*p;
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
