/*
 * RTP load generator of bench/relay.py: sends every stream of a plan as
 * G.711 (172-byte packets: 12-byte header + 160 bytes, every 20 ms, the
 * streams' send times spread evenly over the 20 ms) from a few sockets, and
 * receives them all back on the same sockets, telling streams apart by SSRC.
 * At the end it prints, per stream, the packets of the measured window
 * received and the RFC 3550 interarrival jitter (mean over the window and
 * the largest), as one JSON object.
 *
 * The plan (stdin):
 *   WARMUP_S MEASURE_S DRAIN_MS NSOCK NSTREAM
 *   NSOCK lines:   HOST PORT              (the generator's own sockets)
 *   NSTREAM lines: SOCK_INDEX HOST PORT   (stream i: SSRC 0x5a000000+i, sent
 *                                          from that socket to HOST:PORT)
 * Stdout: "measure" when the first measured packet goes out, "end" after
 * the last one, then the JSON.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_NS 20000000LL
#define PAYLOAD 160
#define SSRC_BASE 0x5a000000u
#define BATCH_NS 100000LL            /* send what is due within 0.1 ms in one wake-up */

struct stream {
    int sock;
    struct sockaddr_in to;
    long long offset_ns;
    /* receiving */
    long received;                   /* measured-window packets */
    double jitter, jitter_sum, jitter_max, last_transit;
    int have_transit;
};

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

int main(void)
{
    double warmup_s, measure_s;
    int drain_ms, nsock, nstream;
    if (scanf("%lf %lf %d %d %d", &warmup_s, &measure_s, &drain_ms, &nsock, &nstream) != 5)
        die("plan header");
    int *socks = calloc(nsock, sizeof(int));
    struct stream *st = calloc(nstream, sizeof(struct stream));
    int ep = epoll_create1(0);
    for (int i = 0; i < nsock; i++) {
        char host[64];
        int port;
        if (scanf("%63s %d", host, &port) != 2)
            die("plan socket");
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        inet_pton(AF_INET, host, &a.sin_addr);
        socks[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int size = 16 << 20;
        if (setsockopt(socks[i], SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
            setsockopt(socks[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        if (setsockopt(socks[i], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
            setsockopt(socks[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        if (bind(socks[i], (struct sockaddr *)&a, sizeof a) < 0)
            die("bind");
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, socks[i], &ev);
    }
    for (int i = 0; i < nstream; i++) {
        char host[64];
        int port;
        if (scanf("%d %63s %d", &st[i].sock, host, &port) != 3)
            die("plan stream");
        st[i].to.sin_family = AF_INET;
        st[i].to.sin_port = htons(port);
        inet_pton(AF_INET, host, &st[i].to.sin_addr);
        st[i].offset_ns = PERIOD_NS * i / nstream;
    }
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = 0xffffffffu};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

    long warm = (long)(warmup_s * 50), measured = (long)(measure_s * 50);
    long total = warm + measured;
    long long t0 = now_ns() + 50000000LL;
    long frame = 0;                  /* the frame being sent */
    int next = 0;                    /* the stream whose turn it is in that frame */
    long long send_late_max = 0, send_late_sum = 0, sent = 0, send_errors = 0;
    long long ended_at = 0;
    unsigned char pkt[12 + PAYLOAD], buf[2048];
    memset(pkt, 0xff, sizeof pkt);
    pkt[0] = 0x80;
    pkt[1] = 0;                      /* PCMU */

    for (;;) {
        long long now = now_ns();
        /* Send everything due (or due within the batch window). */
        while (frame < total) {
            long long due = t0 + frame * PERIOD_NS + st[next].offset_ns;
            if (due > now + BATCH_NS)
                break;
            if (frame == warm && next == 0) {
                printf("measure\n");
                fflush(stdout);
            }
            uint16_t seq = htons((uint16_t)frame);
            uint32_t ts = htonl((uint32_t)(frame * PAYLOAD));
            uint32_t ssrc = htonl(SSRC_BASE + next);
            memcpy(pkt + 2, &seq, 2);
            memcpy(pkt + 4, &ts, 4);
            memcpy(pkt + 8, &ssrc, 4);
            if (sendto(socks[st[next].sock], pkt, sizeof pkt, 0, (struct sockaddr *)&st[next].to,
                       sizeof st[next].to) < 0)
                send_errors++;
            if (frame >= warm) {
                long long late = now - due;
                if (late > send_late_max)
                    send_late_max = late;
                send_late_sum += late > 0 ? late : 0;
                sent++;
            }
            if (++next == nstream) {
                next = 0;
                frame++;
                if (frame == total) {
                    printf("end\n");
                    fflush(stdout);
                    ended_at = now;
                }
            }
        }
        if (frame == total && now >= ended_at + drain_ms * 1000000LL)
            break;
        long long wake = frame < total ? t0 + frame * PERIOD_NS + st[next].offset_ns
                                       : ended_at + drain_ms * 1000000LL;
        struct itimerspec its = {{0, 0}, {wake / 1000000000LL, wake % 1000000000LL}};
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        struct epoll_event evs[16];
        int n = epoll_wait(ep, evs, 16, 1000);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int e = 0; e < n; e++) {
            if (evs[e].data.u32 == 0xffffffffu) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0) { /* nothing */ }
                continue;
            }
            int s = socks[evs[e].data.u32];
            for (;;) {
                ssize_t len = recv(s, buf, sizeof buf, 0);
                if (len < 0)
                    break;
                if (len < 12)
                    continue;
                long long arrival = now_ns();
                uint32_t ssrc;
                uint16_t seq;
                uint32_t ts;
                memcpy(&ssrc, buf + 8, 4);
                memcpy(&seq, buf + 2, 2);
                memcpy(&ts, buf + 4, 4);
                ssrc = ntohl(ssrc) - SSRC_BASE;
                long k = ntohs(seq);
                if (ssrc >= (uint32_t)nstream || k < warm || k >= total)
                    continue;
                struct stream *p = &st[ssrc];
                double transit = arrival * 8e-6 - (double)ntohl(ts);    /* 8 kHz units */
                if (p->have_transit) {
                    double d = transit - p->last_transit;
                    if (d < 0)
                        d = -d;
                    p->jitter += (d - p->jitter) / 16.0;
                    p->jitter_sum += p->jitter;
                    if (p->jitter > p->jitter_max)
                        p->jitter_max = p->jitter;
                }
                p->last_transit = transit;
                p->have_transit = 1;
                p->received++;
            }
        }
    }
    printf("{\"streams\": %d, \"per_stream\": %ld, \"sent\": %lld, \"send_errors\": %lld, "
           "\"send_late_max_ms\": %.3f, \"send_late_mean_ms\": %.4f, \"received\": [",
           nstream, measured, sent, send_errors, send_late_max / 1e6,
           sent ? send_late_sum / 1e6 / sent : 0.0);
    for (int i = 0; i < nstream; i++)
        printf("%s%ld", i ? "," : "", st[i].received);
    printf("], \"jitter_mean_ms\": [");
    for (int i = 0; i < nstream; i++)
        printf("%s%.4f", i ? "," : "", st[i].received > 1 ? st[i].jitter_sum / (st[i].received - 1) / 8.0 : -1.0);
    printf("], \"jitter_max_ms\": [");
    for (int i = 0; i < nstream; i++)
        printf("%s%.4f", i ? "," : "", st[i].jitter_max / 8.0);
    printf("]}\n");
    return 0;
}
