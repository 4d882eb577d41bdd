/*
 * LD_PRELOAD shim for the DHCP benchmark's load generator (perfdhcp): every
 * UDP socket it opens gets a receive buffer of RCVBUF_BYTES (default 4 MB,
 * the size the allworx DHCP server gives its own), so that replies arriving
 * in a burst are not lost in the client's socket before perfdhcp reads them.
 * It changes nothing in the servers under test. Build:
 *     cc -O2 -Wall -shared -fPIC -o rcvbuf.so rcvbuf.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>

#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif

int socket(int domain, int type, int protocol)
{
    static int (*real_socket)(int, int, int);
    if (!real_socket)
        real_socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    int fd = real_socket(domain, type, protocol);
    if (fd >= 0 && (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_DGRAM) {
        const char *env = getenv("RCVBUF_BYTES");
        int bytes = env ? atoi(env) : 4 * 1024 * 1024;
        /* FORCE passes net.core.rmem_max (root); else the plain option, capped by it. */
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    }
    return fd;
}
