/*
 * encode.h: how the C shims turn the database's names into mover object
 * names. The mover refuses names with empty, "." or ".." segments and
 * control bytes, which SBT handles and HANA paths may have ("/x", "a//b",
 * "./x"): those few bytes are percent-encoded, reversibly; ordinary names
 * pass unchanged.
 */
#ifndef SHMOVER_ENCODE_H
#define SHMOVER_ENCODE_H

#include <stddef.h>

/* A name that may contain '/': '%', control bytes, 0x7f, bytes that are not
 * part of well-formed UTF-8 (a Latin-1 name), a '/' that would make an
 * empty segment (first, last, doubled), and the dots of a "." or ".."
 * segment become %XX. 0, or -1 if empty or longer than 1024 bytes
 * encoded (or than cap). */
int shmover_encode_name(const char *in, char *out, size_t cap);

/* One segment: as above, and every '/' encoded too; empty becomes "%". */
int shmover_encode_segment(const char *in, char *out, size_t cap);

/* Text for display (metadata): bytes that are not well-formed UTF-8 become
 * %XX, everything else passes unchanged. 0, or -1 if it does not fit. */
int shmover_utf8_text(const char *in, char *out, size_t cap);

/* Reverses either encoding. */
int shmover_percent_decode(const char *in, char *out, size_t cap);

#endif
