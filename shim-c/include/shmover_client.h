/*
 * shmover_client.h: the blocking client of the shmover mover, for C.
 *
 * One connection carries one stream at a time. A backup:
 *   shmover_connect -> shmover_open_write -> { shmover_reserve, fill the
 *   slot in place, shmover_commit_block } ... -> shmover_commit
 *   (or shmover_abort). Nothing is visible until shmover_commit returns 0.
 * A restore:
 *   shmover_open_read -> { shmover_read_next, use the block,
 *   shmover_read_release } ... until SHMOVER_END -> shmover_close_read.
 *
 * The library uses no threads and installs no signal handlers. It never
 * aborts or exits the process: every function returns 0 or an error code
 * (below), and shmover_last_error() gives a sentence naming the object and
 * the cause. A handle may be used by one thread at a time; different
 * handles may be used by different threads at once.
 *
 * Link: libshmover_client.a (static; also -lpthread -ldl -lm) or
 * libshmover_client.so. Checked against the Rust exports by
 * tests/tests/c_header.rs.
 */
#ifndef SHMOVER_CLIENT_H
#define SHMOVER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Client kinds: each has its own name space in the store. */
#define SHMOVER_KIND_GENERIC 1
#define SHMOVER_KIND_SBT 2
#define SHMOVER_KIND_BACKINT 3

/* Return codes. 0 is success; SHMOVER_END is not an error. */
#define SHMOVER_OK 0
#define SHMOVER_ERR_BAD_FRAME 1
#define SHMOVER_ERR_UNSUPPORTED_VERSION 2
#define SHMOVER_ERR_NOT_ALLOWED 3
#define SHMOVER_ERR_BAD_NAME 4
#define SHMOVER_ERR_NOT_FOUND 5
#define SHMOVER_ERR_ALREADY_EXISTS 6
#define SHMOVER_ERR_WRONG_STATE 7
#define SHMOVER_ERR_STORE 8
#define SHMOVER_ERR_RING 9
#define SHMOVER_ERR_RESOURCE 10
#define SHMOVER_ERR_INVALID_ARGUMENT 11
#define SHMOVER_ERR_CHECKSUM 12
#define SHMOVER_ERR_SIZE_MISMATCH 13
#define SHMOVER_ERR_INTERNAL 14
#define SHMOVER_ERR_UNREACHABLE 101
#define SHMOVER_ERR_DISCONNECTED 102
#define SHMOVER_ERR_PROTOCOL 103
#define SHMOVER_ERR_TIMEOUT 104
#define SHMOVER_ERR_IO 105
#define SHMOVER_END 1000

typedef struct shmover_client shmover_client_t;
typedef struct shmover_info shmover_info_t;
typedef struct shmover_list shmover_list_t;

/* Connects. socket_path NULL: $MOVER_SOCKET, else the default path.
 * timeout_ms <= 0: 60 s (or $MOVER_TIMEOUT seconds). On failure *out still
 * receives a handle (unless out is NULL) holding the error; free it with
 * shmover_disconnect. */
int shmover_connect(const char *socket_path, int kind, const char *label,
                    int timeout_ms, shmover_client_t **out);
/* Closes the connection (an open backup is aborted) and frees the handle. */
void shmover_disconnect(shmover_client_t *c);
/* Last error code / sentence of the handle, or of the thread if c is NULL. */
int shmover_last_error_code(const shmover_client_t *c);
const char *shmover_last_error(const shmover_client_t *c);
/* 1 when the connection can serve no further call (a stream on it failed,
 * or the mover closed it), whatever the last error's code: disconnect and
 * connect again. 0 when it can; 1 for NULL. */
int shmover_broken(const shmover_client_t *c);

/* Backup. metadata: NULL or {key, value, ..., NULL}. */
int shmover_open_write(shmover_client_t *c, const char *name, size_t block_size,
                       uint64_t size_hint, const char *const *metadata);
/* *cap is the block size given at open (the most one block carries).
 * Reserving again before a commit returns the same slot. */
int shmover_reserve(shmover_client_t *c, void **buf, size_t *cap);
/* Publishes len bytes (<= *cap) of the slot; len 0 keeps it reserved. */
int shmover_commit_block(shmover_client_t *c, size_t len);
/* Durable on return 0. info may be NULL; else free *info. */
int shmover_commit(shmover_client_t *c, shmover_info_t **info);
int shmover_abort(shmover_client_t *c, const char *reason);

/* Restore. block_size 0: the mover's default. size may be NULL. */
int shmover_open_read(shmover_client_t *c, const char *name, size_t block_size,
                      uint64_t *size);
/* 0 with a block, SHMOVER_END after the last one. The block is valid until
 * shmover_read_release or the next call on the handle. */
int shmover_read_next(shmover_client_t *c, const void **buf, size_t *len);
int shmover_read_release(shmover_client_t *c);
int shmover_close_read(shmover_client_t *c);

/* Catalog. */
int shmover_stat(shmover_client_t *c, const char *name, shmover_info_t **info);
int shmover_list(shmover_client_t *c, const char *prefix, uint32_t limit,
                 shmover_list_t **list);
int shmover_delete(shmover_client_t *c, const char *name);

size_t shmover_list_len(const shmover_list_t *l);
const shmover_info_t *shmover_list_get(const shmover_list_t *l, size_t i);
void shmover_list_free(shmover_list_t *l);

void shmover_info_free(shmover_info_t *i);
const char *shmover_info_name(const shmover_info_t *i);
uint64_t shmover_info_size(const shmover_info_t *i);
int64_t shmover_info_created_ms(const shmover_info_t *i);
uint32_t shmover_info_block_size(const shmover_info_t *i);
uint32_t shmover_info_crc32c(const shmover_info_t *i);
/* A metadata value by key (NULL if absent), or all entries in key order. */
const char *shmover_info_meta(const shmover_info_t *i, const char *key);
size_t shmover_info_meta_count(const shmover_info_t *i);
int shmover_info_meta_at(const shmover_info_t *i, size_t idx, const char **key,
                         const char **value);

#ifdef __cplusplus
}
#endif

#endif /* SHMOVER_CLIENT_H */
