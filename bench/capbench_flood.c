/* capbench_flood: a bounded, paced UDP sender for capbench's veth comparison
 * (tcpdump against capd on af_packet).
 *
 *   capbench_flood -d 198.18.200.2 -p 9999 -r 200000 -n 1000000 -t 10 -s 64
 *
 * Sends at most -n datagrams at -r datagrams/s for at most -t seconds, in
 * sendmmsg() batches, then prints one JSON line: {"sent":…,"failed":…,…}.
 * Every payload starts with the 8-byte marker "LCBENCH1" and a 64-bit
 * sequence number, so capbench can count exactly these frames in a capture
 * file and ignore whatever else the kernel put on the link.
 * -s is the Ethernet frame size (14 + 20 + 8 + payload), at least 60.
 *
 * Only meant for veth pairs between network namespaces capbench creates
 * itself, with 198.18.0.0/15 addresses: it refuses any other destination.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { kMaxBatch = 64, kMaxPayload = 9000 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void) {
    fprintf(stderr,
            "usage: capbench_flood -d DST_IPV4 [-p PORT] [-r PPS] [-n COUNT] [-t SECONDS] "
            "[-s FRAME_BYTES] [-S SRC_IPV4]\n");
    exit(2);
}

int main(int argc, char** argv) {
    const char* dst_text = NULL;
    const char* src_text = NULL;
    unsigned port = 9999;
    double rate = 100000, max_seconds = 10;
    unsigned long long count = 100000;
    unsigned frame = 64;
    int opt;
    while ((opt = getopt(argc, argv, "d:p:r:n:t:s:S:")) != -1) {
        switch (opt) {
            case 'd': dst_text = optarg; break;
            case 'S': src_text = optarg; break;
            case 'p': port = (unsigned)strtoul(optarg, NULL, 10); break;
            case 'r': rate = strtod(optarg, NULL); break;
            case 'n': count = strtoull(optarg, NULL, 10); break;
            case 't': max_seconds = strtod(optarg, NULL); break;
            case 's': frame = (unsigned)strtoul(optarg, NULL, 10); break;
            default: usage();
        }
    }
    if (!dst_text || !(rate > 0) || !(max_seconds > 0) || max_seconds > 600 || port == 0 ||
        port > 65535 || frame < 60 || frame > 14 + 20 + 8 + kMaxPayload)
        usage();

    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, dst_text, &dst.sin_addr) != 1) usage();
    /* 198.18.0.0/15 only: benchmark addresses that nobody else owns. */
    if ((ntohl(dst.sin_addr.s_addr) & 0xfffe0000u) != 0xc6120000u) {
        fprintf(stderr, "capbench_flood: %s is outside 198.18.0.0/15\n", dst_text);
        return 2;
    }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("capbench_flood: socket");
        return 1;
    }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    if (src_text) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, src_text, &src.sin_addr) != 1) usage();
        if (bind(fd, (struct sockaddr*)&src, sizeof(src)) != 0) {
            perror("capbench_flood: bind");
            return 1;
        }
    }
    if (connect(fd, (struct sockaddr*)&dst, sizeof(dst)) != 0) {
        perror("capbench_flood: connect");
        return 1;
    }

    size_t payload_len = frame < 60 ? 18 : frame - 14 - 20 - 8;
    if (payload_len < 16) payload_len = 16;
    static uint8_t payload[kMaxBatch][kMaxPayload];
    struct iovec iov[kMaxBatch];
    struct mmsghdr msgs[kMaxBatch];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < kMaxBatch; i++) {
        memcpy(payload[i], "LCBENCH1", 8);
        iov[i].iov_base = payload[i];
        iov[i].iov_len = payload_len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    /* Batches small enough that pacing stays within about a millisecond. */
    unsigned batch = (unsigned)(rate / 1000.0);
    if (batch < 1) batch = 1;
    if (batch > kMaxBatch) batch = kMaxBatch;

    unsigned long long sent = 0, failed = 0, errors = 0;
    int last_errno = 0;
    double start = now_s(), deadline = start + max_seconds;
    while (sent + failed < count) {
        double now = now_s();
        if (now >= deadline) break;
        double due = start + (double)(sent + failed) / rate;
        if (due > now) {
            double wait = due - now;
            struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
            continue;
        }
        unsigned n = batch;
        if (count - sent - failed < n) n = (unsigned)(count - sent - failed);
        for (unsigned i = 0; i < n; i++) {
            uint64_t seq = sent + failed + i;
            memcpy(payload[i] + 8, &seq, 8);
        }
        int r = sendmmsg(fd, msgs, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            /* ENOBUFS and the like: those datagrams are not sent; move on so
             * the loop stays bounded and the count stays honest. */
            last_errno = errno;
            errors++;
            failed += n;
            continue;
        }
        sent += (unsigned)r;
        if ((unsigned)r < n) failed += n - (unsigned)r;
    }
    double elapsed = now_s() - start;
    printf(
        "{\"sent\": %llu, \"failed\": %llu, \"send_errors\": %llu, \"last_error\": \"%s\", "
        "\"requested\": %llu, \"rate_pps\": %.0f, \"elapsed_s\": %.6f, \"frame_bytes\": %zu}\n",
        sent, failed, errors, last_errno ? strerror(last_errno) : "", count, rate, elapsed,
        payload_len + 42);
    close(fd);
    return 0;
}
