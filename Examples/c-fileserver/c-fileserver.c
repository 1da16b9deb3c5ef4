/*
 * c-fileserver: a static-file HTTP/1.1 server in C on libiotcp, the C twin of iotcp-fileserver. The host
 * parses requests and writes response heads; the NIC half opens the files and sends their bytes.
 *
 * Build: cc -O2 -o c-fileserver c-fileserver.c $(pkg-config --cflags --libs iotcp)
 * Usage (root): c-fileserver ROOT [--nic shm:PATH|rdma://IP:PORT] [--netns NAME] [--address A.B.C.D/N]
 *                                 [--port N]
 * Embedded by default (namespace "iotcp", 10.77.0.2): ip netns exec iotcp curl http://10.77.0.2:8080/file
 * GET and HEAD, keep-alive and pipelining; 400, 403, 404, 405, 500 with a reason. SIGINT/SIGTERM stop it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include "iotcp.h"

#define MAX_CONNECTIONS 4096
#define REQUEST_LIMIT 8192

enum phase { READING, OPENING, WRITING };

struct connection {
    int socket;                 /* -1: a free slot */
    uint32_t generation;        /* in every event token: events for an earlier occupant are dropped */
    enum phase phase;
    size_t request_length;
    size_t request_end;         /* the bytes of the request being answered */
    size_t head_length, head_sent;
    int file;                   /* -1: none */
    uint64_t offset, end;
    int head_only, keep_alive, peer_closed, wants_out;
    uint32_t registered;        /* the events asked of the queue now */
    /* The buffers last: a new connection clears everything before them. */
    char request[REQUEST_LIMIT];
    char head[512];
};

static struct connection connections[MAX_CONNECTIONS];
static iotcp_stack *stack;
static int queue;
static volatile sig_atomic_t stopping;

static void stop(int signal) { (void)signal; stopping = 1; }

static uint64_t token(int index) { return ((uint64_t)connections[index].generation << 32) | (uint32_t)index; }

static struct connection *from_token(uint64_t data, int *index) {
    uint32_t slot = (uint32_t)data;
    if (slot >= MAX_CONNECTIONS) return NULL;
    struct connection *c = &connections[slot];
    if (c->socket < 0 || c->generation != (uint32_t)(data >> 32)) return NULL;
    *index = (int)slot;
    return c;
}

/* Level-triggered interest that follows the connection: no IN once the peer has closed or the request
   buffer is full (or the queue would report it on every wait), OUT only while a write waits for room. */
static void update_interest(int index) {
    struct connection *c = &connections[index];
    if (c->socket < 0) return;
    uint32_t events = (c->wants_out ? IOTCP_EPOLLOUT : 0)
        | (!c->peer_closed && c->request_length < sizeof c->request ? IOTCP_EPOLLIN | IOTCP_EPOLLRDHUP : 0);
    if (events == c->registered) return;
    c->registered = events;
    iotcp_epoll_ctl(stack, queue, IOTCP_EPOLL_CTL_MOD, c->socket, events, token(index));
}

static void interest(int index, int out) {
    connections[index].wants_out = out;
    update_interest(index);
}

static void finish(int index) {
    struct connection *c = &connections[index];
    if (c->file >= 0) iotcp_offload_close(stack, c->file);   /* queued ranges are still sent */
    iotcp_close(stack, c->socket);
    c->socket = -1;
    c->file = -1;
}

static void respond_status(int index, int status, const char *reason) {
    struct connection *c = &connections[index];
    char body[128];
    int body_length = snprintf(body, sizeof body, "%d %s\n", status, reason);
    c->head_length = (size_t)snprintf(c->head, sizeof c->head,
        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s",
        status, reason, c->head_only ? 0 : body_length, c->keep_alive ? "keep-alive" : "close",
        c->head_only ? "" : body);
    c->head_sent = 0;
    c->offset = c->end = 0;
    c->phase = WRITING;
}

static void answer_next(int index);

/* Writes the head, then has the NIC send the body; at the end takes the next pipelined request. */
static void progress(int index) {
    struct connection *c = &connections[index];
    while (c->head_sent < c->head_length) {
        ssize_t n = iotcp_write(stack, c->socket, c->head + c->head_sent, c->head_length - c->head_sent);
        if (n < 0) {
            if (errno == EAGAIN) { interest(index, 1); return; }
            finish(index);
            return;
        }
        c->head_sent += (size_t)n;
    }
    while (c->offset < c->end) {
        ssize_t n = iotcp_offload_write(stack, c->socket, c->file, c->offset, (size_t)(c->end - c->offset));
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN) { interest(index, 1); return; }
            finish(index);   /* the file shrank under us, or the connection failed */
            return;
        }
        c->offset += (uint64_t)n;
    }
    if (c->file >= 0) { iotcp_offload_close(stack, c->file); c->file = -1; }
    interest(index, 0);
    if (!c->keep_alive) { iotcp_shutdown(stack, c->socket, SHUT_WR); finish(index); return; }
    memmove(c->request, c->request + c->request_end, c->request_length - c->request_end);
    c->request_length -= c->request_end;
    c->request_end = 0;
    c->phase = READING;
    answer_next(index);
}

/* Parses the request at the start of the buffer, if it is all there, and starts answering it. */
static void answer_next(int index) {
    struct connection *c = &connections[index];
    char *end = memmem(c->request, c->request_length, "\r\n\r\n", 4);
    if (!end) {
        if (c->request_length == sizeof c->request) {
            c->keep_alive = 0; c->head_only = 0;
            respond_status(index, 431, "Request Header Fields Too Large");
            progress(index);
        } else if (c->peer_closed) {
            finish(index);
        }
        return;
    }
    c->request_end = (size_t)(end - c->request) + 4;
    *end = '\0';
    char method[8], target[2048], version[16];
    c->keep_alive = 1;
    c->head_only = 0;
    if (sscanf(c->request, "%7s %2047s %15s", method, target, version) != 3 || strncmp(version, "HTTP/1.", 7) != 0) {
        c->keep_alive = 0;
        respond_status(index, 400, "Bad Request");
        progress(index);
        return;
    }
    c->keep_alive = strcmp(version, "HTTP/1.1") == 0;
    for (char *line = strstr(c->request, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "Connection:", 11) == 0) {
            const char *value = line + 13;
            while (*value == ' ') value++;
            if (strncasecmp(value, "close", 5) == 0) c->keep_alive = 0;
            if (strncasecmp(value, "keep-alive", 10) == 0) c->keep_alive = 1;
        }
    }
    c->head_only = strcmp(method, "HEAD") == 0;
    if (!c->head_only && strcmp(method, "GET") != 0) { respond_status(index, 405, "Method Not Allowed"); progress(index); return; }
    char *query = strpbrk(target, "?#");
    if (query) *query = '\0';
    if (target[0] != '/' || strstr(target, "..") || strchr(target, '%')) {
        respond_status(index, 403, "Forbidden");
        progress(index);
        return;
    }
    if (strcmp(target, "/") == 0) strcpy(target, "/index.html");
    if (iotcp_offload_open(stack, target, token(index)) != 0) { respond_status(index, 500, "Internal Server Error"); progress(index); return; }
    c->phase = OPENING;
}

static void opened(const iotcp_event *event) {
    int index;
    struct connection *c = from_token(event->data, &index);
    if (!c || c->phase != OPENING) {
        if (event->result >= 0) iotcp_offload_close(stack, event->result);
        return;
    }
    if (event->result < 0) {
        int error = -event->result;
        if (error == ENOENT || error == ENOTDIR || error == EISDIR) respond_status(index, 404, "Not Found");
        else if (error == EACCES || error == EPERM || error == EXDEV || error == ELOOP) respond_status(index, 403, "Forbidden");
        else respond_status(index, 500, "Internal Server Error");
        progress(index);
        return;
    }
    iotcp_file_status status;
    if (iotcp_offload_fstat(stack, event->result, &status) != 0) {
        iotcp_offload_close(stack, event->result);
        respond_status(index, 500, "Internal Server Error");
        progress(index);
        return;
    }
    c->file = event->result;
    c->head_length = (size_t)snprintf(c->head, sizeof c->head,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %llu\r\nConnection: %s\r\n\r\n",
        (unsigned long long)status.size, c->keep_alive ? "keep-alive" : "close");
    c->head_sent = 0;
    c->offset = 0;
    c->end = c->head_only ? 0 : status.size;
    c->phase = WRITING;
    progress(index);
}

static void readable(int index) {
    struct connection *c = &connections[index];
    for (;;) {
        if (c->request_length == sizeof c->request) break;
        ssize_t n = iotcp_read(stack, c->socket, c->request + c->request_length, sizeof c->request - c->request_length);
        if (n > 0) { c->request_length += (size_t)n; continue; }
        if (n == 0) c->peer_closed = 1;
        else if (errno != EAGAIN) { finish(index); return; }
        break;
    }
    if (c->phase == READING) answer_next(index);
    else if (c->peer_closed && c->phase == OPENING) finish(index);
    update_interest(index);
}

static void accept_all(int listener) {
    int socket;
    while ((socket = iotcp_accept(stack, listener, NULL, NULL)) >= 0) {
        int index = -1;
        for (int i = 0; i < MAX_CONNECTIONS; i++) if (connections[i].socket < 0) { index = i; break; }
        if (index < 0) { iotcp_close(stack, socket); continue; }   /* full: the client may retry */
        struct connection *c = &connections[index];
        uint32_t generation = c->generation + 1;
        memset(c, 0, offsetof(struct connection, request));
        c->socket = socket;
        c->generation = generation;
        c->file = -1;
        c->phase = READING;
        /* Nagle would hold a response head (a short write) until the last response was acknowledged. */
        static const int on = 1;
        iotcp_setsockopt(stack, socket, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        c->registered = IOTCP_EPOLLIN | IOTCP_EPOLLRDHUP;
        iotcp_epoll_ctl(stack, queue, IOTCP_EPOLL_CTL_ADD, socket, c->registered, token(index));
    }
}

int main(int argc, char **argv) {
    iotcp_options options = { 0 };
    int port = 8080;
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s ROOT [--nic shm:PATH|rdma://IP:PORT] [--netns NAME] [--address A.B.C.D/N] [--port N]\n", argv[0]);
        return 2;
    }
    options.root = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--nic") == 0) options.nic = argv[i + 1];
        else if (strcmp(argv[i], "--netns") == 0) options.netns = argv[i + 1];
        else if (strcmp(argv[i], "--address") == 0) options.address = argv[i + 1];
        else if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
        else { fprintf(stderr, "c-fileserver: unknown option %s\n", argv[i]); return 2; }
    }
    if (port <= 0 || port > 65535) { fprintf(stderr, "c-fileserver: the port must be 1-65535\n"); return 2; }
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    for (int i = 0; i < MAX_CONNECTIONS; i++) { connections[i].socket = -1; connections[i].file = -1; }

    if (!(stack = iotcp_stack_create(&options))) { fprintf(stderr, "c-fileserver: %s\n", iotcp_last_error()); return 1; }
    queue = iotcp_epoll_create(stack);
    int listener = iotcp_listen(stack, (uint16_t)port, 1024);
    if (listener < 0) { fprintf(stderr, "c-fileserver: %s\n", iotcp_last_error()); iotcp_stack_destroy(stack); return 1; }
    const uint64_t listener_token = UINT64_MAX;
    iotcp_epoll_ctl(stack, queue, IOTCP_EPOLL_CTL_ADD, listener, IOTCP_EPOLLIN, listener_token);
    /* The URL names the IPv4 address if there is one, else the IPv6 one, bracketed (RFC 3986). */
    struct in_addr address;
    struct in6_addr address6;
    char text[INET6_ADDRSTRLEN];
    if (iotcp_stack_address(stack, &address) == 0)
        printf("c-fileserver: serving %s on http://%s:%d/\n", options.root, inet_ntop(AF_INET, &address, text, sizeof text), port);
    else if (iotcp_stack_address6(stack, &address6) == 0)
        printf("c-fileserver: serving %s on http://[%s]:%d/\n", options.root, inet_ntop(AF_INET6, &address6, text, sizeof text), port);
    fflush(stdout);

    static iotcp_event events[256];
    while (!stopping) {
        int count = iotcp_epoll_wait(stack, queue, events, 256, 100);
        if (count < 0) { if (errno == EINTR) continue; fprintf(stderr, "c-fileserver: %s\n", iotcp_last_error()); break; }
        for (int i = 0; i < count; i++) {
            if (events[i].events & IOTCP_OFFLOAD_OPENED) { opened(&events[i]); continue; }
            if (events[i].data == listener_token) { accept_all(listener); continue; }
            int index;
            struct connection *c = from_token(events[i].data, &index);
            if (!c) continue;
            if (events[i].events & (IOTCP_EPOLLERR | IOTCP_EPOLLHUP)) { finish(index); continue; }
            if (events[i].events & (IOTCP_EPOLLIN | IOTCP_EPOLLRDHUP)) readable(index);
            if (c->socket >= 0 && (events[i].events & IOTCP_EPOLLOUT) && c->phase == WRITING) progress(index);
        }
    }
    printf("c-fileserver: stopping\n");
    iotcp_stack_destroy(stack);
    return 0;
}
