/*
 * shmring.h: the shmover shared-memory ring, producer side, for C.
 *
 * The mover creates each ring segment (a sealed memfd) and two eventfd
 * doorbells and sends the three descriptors over its control socket with
 * SCM_RIGHTS. The client attaches a producer to them, then for each block:
 * shmring_producer_reserve() -> fill the slot in place ->
 * shmring_producer_commit(); shmring_producer_finish() ends the stream.
 *
 * Every function returns a shmring_status_t (0 = success). No function
 * aborts, exits or lets a Rust panic escape. On failure,
 * shmring_last_error() describes the cause on the calling thread.
 *
 * The layout types below describe the segment as it sits in memory; they
 * are checked against the Rust definitions by tests/tests/c_header.rs.
 * Clients never need them to move data: they are for tools and tests.
 */
#ifndef SHMOVER_SHMRING_H
#define SHMOVER_SHMRING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- segment layout ---------------------------------------------------- */

#define SHMRING_MAGIC 0x00474E49524D4853ULL /* "SHMRING\0" little-endian */
#define SHMRING_VERSION 1u
#define SHMRING_PAGE 4096u
#define SHMRING_CONTROL_OFFSET 128u
#define SHMRING_DESC_OFFSET 4096u
#define SHMRING_MAX_SLOT_COUNT 65536u
#define SHMRING_MAX_SLOT_SIZE (64u << 20)
#define SHMRING_MAX_RING_BYTES (1ull << 30) /* slot_count * slot_size, at most */

/* Descriptor flags. */
#define SHMRING_FLAG_EOS 1u /* the stream's last slot (may be empty) */
#define SHMRING_FLAG_CRC 2u /* crc holds the CRC32C of the slot's bytes */

/* Direction as seen from the mover. */
#define SHMRING_DIR_TO_MOVER 1u   /* backup: client produces */
#define SHMRING_DIR_FROM_MOVER 2u /* restore: mover produces */

/* Offset 0: written once by the creator. */
typedef struct shmring_header {
    uint64_t magic;
    uint32_t version;
    uint32_t direction;
    uint32_t slot_count; /* power of two */
    uint32_t slot_size;  /* multiple of SHMRING_PAGE */
    uint64_t desc_offset;
    uint64_t data_offset;
    uint64_t total_size;
    uint8_t reserved[80];
} shmring_header_t;

/* One side's counter line; each alone on 128 bytes. */
typedef struct shmring_counter_line {
    uint64_t counter; /* producer: head (committed); consumer: tail (released) */
    uint32_t waiting; /* 1 while this side sleeps on its doorbell */
    uint32_t closed;  /* 1 once this side detached */
    uint64_t wake_at; /* written before waiting: the peer's counter worth a wake-up (0: any) */
    uint8_t pad[104];
} __attribute__((aligned(128))) shmring_counter_line_t;

/* At SHMRING_CONTROL_OFFSET. */
typedef struct shmring_control {
    shmring_counter_line_t producer;
    shmring_counter_line_t consumer;
} shmring_control_t;

/* At SHMRING_DESC_OFFSET, one per slot. */
typedef struct shmring_desc {
    uint32_t len;
    uint32_t flags;
    uint32_t crc;
    uint32_t reserved;
} shmring_desc_t;

/* ---- status codes ------------------------------------------------------ */

typedef enum shmring_status {
    SHMRING_OK = 0,
    SHMRING_ERR_INVALID = 1,   /* null pointer, bad fd, length or flags */
    SHMRING_ERR_TIMEOUT = 2,   /* the deadline passed */
    SHMRING_ERR_PEER_GONE = 3, /* the consumer detached or hung up */
    SHMRING_ERR_CORRUPT = 4,   /* the consumer wrote impossible counters */
    SHMRING_ERR_FINISHED = 5,  /* the stream already ended */
    SHMRING_ERR_ORDER = 6,     /* commit without reserve */
    SHMRING_ERR_SEGMENT = 7,   /* the received segment failed its checks */
    SHMRING_ERR_IO = 8,        /* a system call failed */
    SHMRING_ERR_INTERNAL = 9   /* a bug inside the library */
} shmring_status_t;

/* ---- producer ---------------------------------------------------------- */

typedef struct shmring_producer shmring_producer_t;

/* Attaches to a received segment. Takes ownership of mem_fd, data_bell_fd
 * and space_bell_fd, on success and on failure. liveness_fd (or -1) is a
 * descriptor the caller keeps open, normally the control socket: when it
 * hangs up, waits end with SHMRING_ERR_PEER_GONE. */
int shmring_producer_attach(int mem_fd, int data_bell_fd, int space_bell_fd,
                            int liveness_fd, shmring_producer_t **out);

/* Waits up to timeout_ms (negative: no limit) for a free slot; returns its
 * address and size. Calling it again before commit returns the same slot. */
int shmring_producer_reserve(shmring_producer_t *p, int timeout_ms,
                             void **buf, size_t *cap);

/* Publishes the reserved slot: len bytes (<= slot size), flags
 * (SHMRING_FLAG_EOS, SHMRING_FLAG_CRC), crc (CRC32C when FLAG_CRC). */
int shmring_producer_commit(shmring_producer_t *p, size_t len, uint32_t flags,
                            uint32_t crc);

/* Commits an empty end-of-stream slot, waiting up to timeout_ms for room. */
int shmring_producer_finish(shmring_producer_t *p, int timeout_ms);

/* The ring's slot size in bytes (0 for NULL). */
size_t shmring_producer_slot_size(const shmring_producer_t *p);

/* Unmaps and frees; a stream not finished reads as aborted. NULL is a no-op. */
void shmring_producer_detach(shmring_producer_t *p);

/* A static name for a status code; never NULL. */
const char *shmring_status_str(int status);

/* The calling thread's last failure, as a sentence; never NULL. */
const char *shmring_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* SHMOVER_SHMRING_H */
