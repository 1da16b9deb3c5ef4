/*
 * libiotcp from C, as a C server would use it: an embedded stack in a namespace of its own, a listener in the
 * event queue, requests read and answered with a head written by iotcp_write and the file by
 * iotcp_offload_write, while a Linux client (curl, started by scripts/c-tests.sh in the namespace) downloads
 * and checks the bytes by sha256. Then every error path of the interface: each must fail with the errno the
 * header promises, never crash.
 *
 * With an IPv4 and an IPv6 address (ADDRESS "10.93.0.2/24,fd93::2/64") connections come over both families,
 * and each is named by its own (struct sockaddr_in or struct sockaddr_in6).
 *
 * Usage: iotcp_test ROOT NETNS ADDRESS/PREFIX PORT SECONDS
 * Prints "c: PASS name" / "c: FAIL name: detail" lines and "c: N passed, M failed".
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include "iotcp.h"

static int passed, failed;

static void check(const char *name, int ok, const char *detail) {
    if (ok) { passed++; printf("c: PASS %s\n", name); }
    else { failed++; printf("c: FAIL %s: %s\n", name, detail ? detail : iotcp_last_error()); }
    fflush(stdout);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

#define MAX_CONNECTIONS 64

/* One connection of the tiny server: the request read so far, and how much of the file is queued. */
struct session {
    int open;
    char request[2048];
    size_t request_length;
    int responding;
    uint64_t sent;
};

static void error_paths(iotcp_stack *stack, int epoll, uint16_t port) {
    char buffer[16];
    struct sockaddr_in address;
    socklen_t length = sizeof address;
    iotcp_file_status status;
    iotcp_event events[4];
    struct iovec vector = { buffer, sizeof buffer };

    errno = 0;
    check("a NULL stack is EBADF", iotcp_listen(NULL, 80, 1) == -1 && errno == EBADF, NULL);
    errno = 0;
    check("a pointer that is no stack is EBADF", iotcp_read((iotcp_stack *)&address, 0, buffer, 1) == -1 && errno == EBADF, NULL);
    errno = 0;
    check("an unknown socket is EBADF", iotcp_read(stack, 999, buffer, sizeof buffer) == -1 && errno == EBADF, NULL);
    errno = 0;
    check("a negative socket is EBADF", iotcp_write(stack, -1, buffer, 1) == -1 && errno == EBADF, NULL);
    errno = 0;
    check("a NULL read buffer is EINVAL", iotcp_read(stack, 0, NULL, 10) == -1 && (errno == EINVAL || errno == EBADF), NULL);
    errno = 0;
    check("port 0 is EINVAL", iotcp_listen(stack, 0, 1) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("a port in use is EADDRINUSE", iotcp_listen(stack, port, 1) == -1 && errno == EADDRINUSE, NULL);
    errno = 0;
    check("an unknown file is EBADF", iotcp_offload_fstat(stack, 42, &status) == -1 && errno == EBADF, NULL);
    errno = 0;
    check("offload_close of an unknown file is EBADF", iotcp_offload_close(stack, 42) == -1 && errno == EBADF, NULL);
    errno = 0;
    check("an empty path is EINVAL", iotcp_offload_open(stack, "", 0) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("a NULL path is EINVAL", iotcp_offload_open(stack, NULL, 0) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("an unknown event queue is EBADF", iotcp_epoll_wait(stack, 7, events, 4, 0) == -1 && errno == EBADF, NULL);
    errno = 0;
    check("max_events 0 is EINVAL", iotcp_epoll_wait(stack, epoll, events, 0, 0) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("a NULL events array is EINVAL", iotcp_epoll_wait(stack, epoll, NULL, 4, 0) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("a bad epoll_ctl operation is EINVAL", iotcp_epoll_ctl(stack, epoll, 99, 0, IOTCP_EPOLLIN, 0) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("getsockname with NULL is EINVAL", iotcp_getsockname(stack, 0, NULL, &length) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("getsockname with a NULL length is EINVAL", iotcp_getsockname(stack, 0, (struct sockaddr *)&address, NULL) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("a negative iovcnt is EINVAL", iotcp_writev(stack, 999, &vector, -1) == -1 && (errno == EINVAL || errno == EBADF), NULL);
    errno = 0;
    check("a bad shutdown how is EBADF or EINVAL", iotcp_shutdown(stack, 999, 7) == -1 && (errno == EINVAL || errno == EBADF), NULL);
    errno = 0;
    check("accept on a listener with nobody waiting is EAGAIN", iotcp_accept(stack, 0, (struct sockaddr *)&address, &length) == -1 && errno == EAGAIN, NULL);
    errno = 0;
    check("accept with an address but no length is EINVAL", iotcp_accept(stack, 0, (struct sockaddr *)&address, NULL) == -1 && errno == EINVAL, NULL);
    length = sizeof address;
    check("getsockname of the listener names its port (by the IPv4 address)",
          iotcp_getsockname(stack, 0, (struct sockaddr *)&address, &length) == 0 && length == sizeof address
          && address.sin_family == AF_INET && ntohs(address.sin_port) == port, NULL);
    int one = 1;
    errno = 0;
    check("setsockopt on a listener is EOPNOTSUPP", iotcp_setsockopt(stack, 0, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1 && errno == EOPNOTSUPP, NULL);
    errno = 0;
    check("setsockopt on an unknown socket is EBADF", iotcp_setsockopt(stack, 999, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1 && errno == EBADF, NULL);
    errno = 0;
    check("setsockopt with a NULL value is EINVAL", iotcp_setsockopt(stack, 0, IPPROTO_TCP, TCP_NODELAY, NULL, sizeof one) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("setsockopt with a short value is EINVAL", iotcp_setsockopt(stack, 0, IPPROTO_TCP, TCP_NODELAY, &one, 1) == -1 && errno == EINVAL, NULL);
    errno = 0;
    check("destroying a NULL stack is EBADF", iotcp_stack_destroy(NULL) == -1 && errno == EBADF, NULL);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s ROOT NETNS ADDRESS/PREFIX PORT SECONDS\n", argv[0]);
        return 2;
    }
    iotcp_options options;
    memset(&options, 0, sizeof options);
    options.root = argv[1];
    options.netns = argv[2];
    options.address = argv[3];
    uint16_t port = (uint16_t)atoi(argv[4]);
    double seconds = atof(argv[5]);

    iotcp_options bad;
    memset(&bad, 0, sizeof bad);
    errno = 0;
    check("an embedded stack without a root is refused with EINVAL", iotcp_stack_create(&bad) == NULL && errno == EINVAL, NULL);
    check("... and says why", strstr(iotcp_last_error(), "root") != NULL, iotcp_last_error());
    errno = 0;
    check("NULL options are EINVAL", iotcp_stack_create(NULL) == NULL && errno == EINVAL, NULL);

    iotcp_stack *stack = iotcp_stack_create(&options);
    check("an embedded stack is created", stack != NULL, NULL);
    if (!stack) { printf("c: %d passed, %d failed\n", passed, failed); return 1; }

    int listener = iotcp_listen(stack, port, 1024);
    check("listen", listener >= 0, NULL);
    int epoll = iotcp_epoll_create(stack);
    check("epoll_create", epoll >= 0, NULL);
    check("the listener joins the event queue", iotcp_epoll_ctl(stack, epoll, IOTCP_EPOLL_CTL_ADD, listener, IOTCP_EPOLLIN, (uint64_t)-1) == 0, NULL);
    check("opening a file is asked", iotcp_offload_open(stack, "/file.bin", 77) == 0, NULL);
    check("opening a missing file is asked too", iotcp_offload_open(stack, "/missing", 78) == 0, NULL);
    error_paths(stack, epoll, port);

    printf("ready\n");
    fflush(stdout);

    /* Both families' addresses, when the stack has them. */
    struct in_addr own4;
    struct in6_addr own6;
    int has4 = iotcp_stack_address(stack, &own4) == 0, has6 = iotcp_stack_address6(stack, &own6) == 0;
    check("the stack names its IPv4 and IPv6 addresses", has4 && has6, NULL);
    int accepted4 = 0, accepted6 = 0, named6 = 0;

    int file = -1, missing_result = 0;
    iotcp_file_status status;
    memset(&status, 0, sizeof status);
    struct session sessions[MAX_CONNECTIONS];
    memset(sessions, 0, sizeof sessions);
    int served = 0, waits_with_poll = 0;
    double deadline = now_seconds() + seconds;
    iotcp_event events[64];
    while (now_seconds() < deadline) {
        int count = iotcp_epoll_wait(stack, epoll, events, 64, 0);
        if (count < 0) { check("epoll_wait", 0, NULL); break; }
        for (int i = 0; i < count; i++) {
            iotcp_event *event = &events[i];
            if (event->events & IOTCP_OFFLOAD_OPENED) {
                if (event->data == 77) {
                    file = event->result;
                    check("the open completes through the event queue with a file", file >= 0, NULL);
                    check("fstat gives the file's size", iotcp_offload_fstat(stack, file, &status) == 0 && status.size > 0, NULL);
                } else if (event->data == 78) {
                    missing_result = event->result;
                    check("a missing file's open completes with -ENOENT", missing_result == -ENOENT, NULL);
                }
                continue;
            }
            if (event->data == (uint64_t)-1) {
                struct sockaddr_storage peer;
                socklen_t peer_length = sizeof peer;
                int socket;
                while ((socket = iotcp_accept(stack, listener, (struct sockaddr *)&peer, &peer_length)) >= 0) {
                    if (peer.ss_family == AF_INET && peer_length == sizeof(struct sockaddr_in)) accepted4++;
                    if (peer.ss_family == AF_INET6 && peer_length == sizeof(struct sockaddr_in6)) {
                        /* The client is the namespace's end of the wire (fd93::1), and getsockname names
                           our IPv6 address and port. */
                        struct sockaddr_in6 *from = (struct sockaddr_in6 *)&peer, own;
                        socklen_t own_length = sizeof own;
                        struct in6_addr client = own6;
                        client.s6_addr[15] = 1;
                        if (memcmp(&from->sin6_addr, &client, sizeof client) == 0
                            && iotcp_getsockname(stack, socket, (struct sockaddr *)&own, &own_length) == 0 && own_length == sizeof own
                            && own.sin6_family == AF_INET6 && memcmp(&own.sin6_addr, &own6, sizeof own6) == 0 && ntohs(own.sin6_port) == port)
                            named6++;
                        accepted6++;
                    }
                    peer_length = sizeof peer;
                    if (socket >= MAX_CONNECTIONS) { iotcp_close(stack, socket); continue; }
                    memset(&sessions[socket], 0, sizeof sessions[socket]);
                    sessions[socket].open = 1;
                    static int options_checked;
                    if (!options_checked) {
                        options_checked = 1;
                        int one = 1;
                        check("TCP_NODELAY and SO_KEEPALIVE on a connection",
                              iotcp_setsockopt(stack, socket, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0
                              && iotcp_setsockopt(stack, socket, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0, NULL);
                        errno = 0;
                        check("another option is ENOPROTOOPT",
                              iotcp_setsockopt(stack, socket, SOL_SOCKET, SO_RCVBUF, &one, sizeof one) == -1 && errno == ENOPROTOOPT, NULL);
                    }
                    iotcp_epoll_ctl(stack, epoll, IOTCP_EPOLL_CTL_ADD, socket, IOTCP_EPOLLIN | IOTCP_EPOLLOUT | IOTCP_EPOLLET, (uint64_t)socket);
                }
                continue;
            }
            int socket = (int)event->data;
            if (socket < 0 || socket >= MAX_CONNECTIONS || !sessions[socket].open) continue;
            struct session *session = &sessions[socket];
            /* Read the request head (edge-triggered: until EAGAIN). */
            for (;;) {
                ssize_t got = iotcp_read(stack, socket, session->request + session->request_length,
                                         sizeof session->request - 1 - session->request_length);
                if (got > 0) { session->request_length += (size_t)got; continue; }
                break;
            }
            session->request[session->request_length] = 0;
            if (!session->responding && strstr(session->request, "\r\n\r\n") && file >= 0) {
                char head[256];
                int length = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\nConnection: close\r\n\r\n",
                                      (unsigned long long)status.size);
                struct iovec vectors[2] = { { head, 17 }, { head + 17, (size_t)length - 17 } };
                /* Corked, as lighttpd does: the head waits for the file's first segment and leaves in it. */
                int on = 1;
                check("TCP_CORK on before the head", iotcp_setsockopt(stack, socket, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0, NULL);
                ssize_t wrote = iotcp_writev(stack, socket, vectors, 2);
                check("the head goes out by writev", wrote == length, NULL);
                session->responding = 1;
            }
            while (session->responding && session->sent < status.size) {
                ssize_t queued = iotcp_offload_write(stack, socket, file, session->sent, (size_t)(status.size - session->sent));
                if (queued <= 0) break;
                session->sent += (uint64_t)queued;
            }
            if (session->responding) {
                int off = 0;
                check("TCP_CORK off after the body", iotcp_setsockopt(stack, socket, IPPROTO_TCP, TCP_CORK, &off, sizeof off) == 0, NULL);
            }
            if (session->responding && session->sent == status.size) {
                iotcp_shutdown(stack, socket, SHUT_WR);
                iotcp_close(stack, socket);
                session->open = 0;
                served++;
            }
        }
        /* Sleep in our own poll on iotcp's descriptor, as a server with other descriptors would. */
        if (count == 0) {
            int sleep_ms = iotcp_before_poll(stack, 10);
            if (sleep_ms > 0) {
                struct pollfd descriptor = { iotcp_pollable_fd(stack), POLLIN, 0 };
                poll(&descriptor, descriptor.fd >= 0 ? 1 : 0, sleep_ms);
                iotcp_after_poll(stack);
                waits_with_poll++;
            }
        }
    }
    printf("c: served %d (accepted over IPv4 %d, over IPv6 %d)\n", served, accepted4, accepted6);
    check("requests were served", served > 0, "none served");
    check("connections came over both families, each named by its own sockaddr", accepted4 > 0 && accepted6 > 0, "one family missing");
    check("IPv6 connections name the client and our own address (sockaddr_in6)", named6 == accepted6, "a wrong name");
    check("the loop slept in poll on iotcp's descriptor", waits_with_poll > 0, "never slept");
    if (file >= 0) check("offload_close", iotcp_offload_close(stack, file) == 0, NULL);
    errno = 0;
    if (file >= 0) check("a closed file is EBADF", iotcp_offload_fstat(stack, file, &status) == -1 && errno == EBADF, NULL);
    check("close the listener", iotcp_close(stack, listener) == 0, NULL);
    errno = 0;
    check("a closed socket is EBADF", iotcp_accept(stack, listener, NULL, NULL) == -1 && errno == EBADF, NULL);
    check("destroy", iotcp_stack_destroy(stack) == 0, NULL);
    errno = 0;
    check("a destroyed stack is EBADF", iotcp_listen(stack, 81, 1) == -1 && errno == EBADF, NULL);
    printf("c: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
