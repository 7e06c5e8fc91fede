/*
 * ring-producer: a C client of the shmover ring, used by the test suite and
 * by `mover-bench ring`.
 *
 *   ring-producer SOCKET produce BYTES BLOCK [crc]
 *       Connects to SOCKET, receives the ring's three descriptors with
 *       SCM_RIGHTS, and moves BYTES bytes in BLOCK-byte blocks through the
 *       C ABI: reserve, memcpy from a source buffer, commit. Block i is a
 *       copy of pattern block (i mod K) with its first 8 bytes replaced by i
 *       (little-endian); K = max(1, 64 MiB / BLOCK). With "crc", each
 *       descriptor carries the block's CRC32C, computed here in software.
 *       Prints "produced bytes=N blocks=M seconds=S" on success.
 *
 *   ring-producer SOCKET hostile KIND
 *       Maps the segment directly and writes what an honest producer never
 *       would, to check that the consumer refuses it. Between steps it
 *       writes one byte to the socket ("look now") and, where a step
 *       follows, waits for one byte back. KIND is one of head-ahead,
 *       head-back, slot-length, slot-flags, scribble:SEED.
 *
 *   ring-producer SOCKET hostile-consumer KIND
 *       The same against a producer: KIND is tail-ahead or tail-back.
 *
 * Exit status: 0 success, 2 usage, 3 ring or system error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shmring.h"

#define SOURCE_BYTES (64u << 20)

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* CRC32C (Castagnoli), reflected polynomial 0x82F63B78, slicing by 8. */
static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t crc32c(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^
            crc_table[5][(w >> 16) & 0xFF] ^ crc_table[4][(w >> 24) & 0xFF] ^
            crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
            crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
    return c ^ 0xFFFFFFFFu;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Connects to the socket and receives the three ring descriptors. */
static int connect_and_receive(const char *path, int *sock, int fds[3]) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "ring-producer: socket path too long\n");
        return -1;
    }
    strcpy(addr.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "ring-producer: connect %s: %s\n", path, strerror(errno));
        if (s >= 0) close(s);
        return -1;
    }
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
    struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
    if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(3 * sizeof(int))) {
        fprintf(stderr, "ring-producer: expected three descriptors from the mover\n");
        close(s);
        return -1;
    }
    memcpy(fds, CMSG_DATA(c), 3 * sizeof(int));
    *sock = s;
    return 0;
}

static int fail_ring(const char *what, int rc) {
    fprintf(stderr, "ring-producer: %s: %s (%s)\n", what, shmring_status_str(rc), shmring_last_error());
    return 3;
}

static int produce(int sock, int fds[3], unsigned long long bytes, size_t block, int with_crc) {
    shmring_producer_t *p = NULL;
    int rc = shmring_producer_attach(fds[0], fds[1], fds[2], sock, &p);
    if (rc != SHMRING_OK) return fail_ring("attach", rc);
    if (block == 0 || block > shmring_producer_slot_size(p)) {
        fprintf(stderr, "ring-producer: block %zu does not fit the slot size %zu\n", block,
                shmring_producer_slot_size(p));
        shmring_producer_detach(p);
        return 2;
    }
    size_t k = SOURCE_BYTES / block;
    if (k == 0) k = 1;
    uint8_t *src = NULL;
    if (posix_memalign((void **)&src, 4096, k * block) != 0) {
        fprintf(stderr, "ring-producer: out of memory\n");
        shmring_producer_detach(p);
        return 3;
    }
    for (size_t b = 0; b < k; b++) {
        uint8_t *dst = src + b * block;
        for (size_t j = 0; j * 8 < block; j++) {
            uint64_t w = splitmix64(((uint64_t)b << 32) | j);
            size_t left = block - j * 8;
            memcpy(dst + j * 8, &w, left < 8 ? left : 8);
        }
    }
    if (with_crc) crc_init();

    unsigned long long sent = 0, blocks = 0;
    double t0 = now_seconds();
    while (sent < bytes) {
        void *slot;
        size_t cap;
        rc = shmring_producer_reserve(p, 30000, &slot, &cap);
        if (rc != SHMRING_OK) {
            free(src);
            shmring_producer_detach(p);
            return fail_ring("reserve", rc);
        }
        size_t len = bytes - sent < block ? (size_t)(bytes - sent) : block;
        memcpy(slot, src + (blocks % k) * block, len);
        if (len >= 8) {
            uint64_t idx = blocks;
            memcpy(slot, &idx, 8);
        }
        uint32_t crc = with_crc ? crc32c(slot, len) : 0;
        rc = shmring_producer_commit(p, len, with_crc ? SHMRING_FLAG_CRC : 0, crc);
        if (rc != SHMRING_OK) {
            free(src);
            shmring_producer_detach(p);
            return fail_ring("commit", rc);
        }
        sent += len;
        blocks++;
    }
    rc = shmring_producer_finish(p, 30000);
    double t1 = now_seconds();
    free(src);
    shmring_producer_detach(p);
    if (rc != SHMRING_OK) return fail_ring("finish", rc);
    printf("produced bytes=%llu blocks=%llu seconds=%.6f\n", sent, blocks, t1 - t0);
    return 0;
}

/* Maps the segment for direct (hostile) writes. */
static uint8_t *map_segment(int memfd, size_t *size) {
    struct stat st;
    if (fstat(memfd, &st) < 0) return NULL;
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (m == MAP_FAILED) return NULL;
    *size = (size_t)st.st_size;
    return m;
}

static void signal_peer(int sock) {
    char b = 'x';
    if (write(sock, &b, 1) != 1) fprintf(stderr, "ring-producer: signal: %s\n", strerror(errno));
}

static int await_peer(int sock) {
    char b;
    return read(sock, &b, 1) == 1 ? 0 : -1;
}

static void commit_raw(uint8_t *seg, shmring_control_t *ctl, uint64_t head, uint32_t len, uint32_t flags) {
    shmring_header_t *h = (shmring_header_t *)seg;
    shmring_desc_t *d = (shmring_desc_t *)(seg + h->desc_offset);
    for (uint64_t i = ctl->producer.counter; i < head; i++) {
        d[i % h->slot_count].len = len;
        d[i % h->slot_count].flags = flags;
    }
    __atomic_store_n(&ctl->producer.counter, head, __ATOMIC_RELEASE);
}

static int hostile(int sock, int fds[3], const char *kind, int against_consumer) {
    size_t size;
    uint8_t *seg = map_segment(fds[0], &size);
    if (seg == NULL) {
        fprintf(stderr, "ring-producer: map: %s\n", strerror(errno));
        return 3;
    }
    shmring_header_t *h = (shmring_header_t *)seg;
    shmring_control_t *ctl = (shmring_control_t *)(seg + SHMRING_CONTROL_OFFSET);
    shmring_desc_t *d = (shmring_desc_t *)(seg + h->desc_offset);
    uint64_t n = h->slot_count;
    if (h->magic != SHMRING_MAGIC) {
        fprintf(stderr, "ring-producer: bad magic\n");
        return 3;
    }
    if (against_consumer) {
        if (strcmp(kind, "head-ahead") == 0) {
            commit_raw(seg, ctl, 0, 0, 0);
            __atomic_store_n(&ctl->producer.counter, n + 5, __ATOMIC_RELEASE);
        } else if (strcmp(kind, "head-back") == 0) {
            commit_raw(seg, ctl, 2, 16, 0);
            signal_peer(sock);
            if (await_peer(sock) < 0) return 3;
            __atomic_store_n(&ctl->producer.counter, 1, __ATOMIC_RELEASE);
        } else if (strcmp(kind, "slot-length") == 0) {
            commit_raw(seg, ctl, 1, h->slot_size + 1, 0);
        } else if (strcmp(kind, "slot-flags") == 0) {
            commit_raw(seg, ctl, 1, 16, 0x80);
        } else if (strncmp(kind, "scribble:", 9) == 0) {
            /* Random bytes over the control block and every descriptor. */
            uint64_t seed = strtoull(kind + 9, NULL, 10);
            uint8_t *from = seg + SHMRING_CONTROL_OFFSET;
            uint8_t *to = seg + h->data_offset;
            for (uint64_t i = 0; from + i < to; i += 8) {
                uint64_t w = splitmix64(seed * 1000003u + i);
                memcpy(from + i, &w, 8);
            }
        } else {
            fprintf(stderr, "ring-producer: unknown hostile kind %s\n", kind);
            return 2;
        }
    } else {
        /* The test's producer filled the ring: head == n, tail == 0. */
        if (strcmp(kind, "tail-ahead") == 0) {
            __atomic_store_n(&ctl->consumer.counter, n + 5, __ATOMIC_RELEASE);
        } else if (strcmp(kind, "tail-back") == 0) {
            __atomic_store_n(&ctl->consumer.counter, 1, __ATOMIC_RELEASE);
            signal_peer(sock);
            if (await_peer(sock) < 0) return 3;
            __atomic_store_n(&ctl->consumer.counter, 0, __ATOMIC_RELEASE);
        } else {
            fprintf(stderr, "ring-producer: unknown hostile-consumer kind %s\n", kind);
            return 2;
        }
    }
    (void)d;
    signal_peer(sock);
    /* Stay attached until the test is done looking. */
    await_peer(sock);
    munmap(seg, size);
    return 0;
}

int ring_producer_main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr,
                "usage: ring-producer SOCKET produce BYTES BLOCK [crc]\n"
                "       ring-producer SOCKET hostile KIND\n"
                "       ring-producer SOCKET hostile-consumer KIND\n");
        return 2;
    }
    int sock, fds[3];
    if (strcmp(argv[2], "produce") == 0 && argc >= 5) {
        unsigned long long bytes = strtoull(argv[3], NULL, 10);
        size_t block = (size_t)strtoull(argv[4], NULL, 10);
        int with_crc = argc >= 6 && strcmp(argv[5], "crc") == 0;
        if (connect_and_receive(argv[1], &sock, fds) < 0) return 3;
        int rc = produce(sock, fds, bytes, block, with_crc);
        close(sock);
        return rc;
    }
    if ((strcmp(argv[2], "hostile") == 0 || strcmp(argv[2], "hostile-consumer") == 0) && argc >= 4) {
        if (connect_and_receive(argv[1], &sock, fds) < 0) return 3;
        int rc = hostile(sock, fds, argv[3], strcmp(argv[2], "hostile") == 0);
        close(sock);
        return rc;
    }
    fprintf(stderr, "ring-producer: bad arguments\n");
    return 2;
}
