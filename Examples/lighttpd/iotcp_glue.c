/*
 * iotcp_glue.c: lighttpd's sockets on libiotcp (see iotcp_glue.h for what each call replaces).
 *
 * Three tables:
 *   - sockets, indexed by the descriptor number lighttpd holds: the iotcp socket behind it, the events
 *     lighttpd asked for and the pointer it wants back, and whether the socket waits for a file to open;
 *   - offloaded files, by path under IOTCP_ROOT: opened on the NIC once (asynchronously: the answer is an
 *     event of the iotcp queue) and kept while the file lighttpd opened is the same file;
 *   - the sockets waiting for each file that is still opening.
 * Single-threaded, as lighttpd's event loop is.
 */
#define _GNU_SOURCE
#include "iotcp_glue.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iotcp.h"

/* ---- The stack, made from the environment by the process that serves.

   lighttpd makes its listeners before it daemonises, so the glue only notes them then; the stack (and,
   embedded, its NIC thread, which a fork would not carry) is made at the first event-loop call, in the
   process that runs the loop. */

static iotcp_stack *stack;
static int queue = -1;          /* the stack's event queue */
static int placeholder = -1;    /* the AF_UNIX socket every iotcp descriptor duplicates */
static const char *root;        /* IOTCP_ROOT without a trailing '/' */
static size_t root_length;
static pid_t owner;             /* the process that made the stack: a fork must not use it */

static void destroy_stack(void) {
    if (stack && getpid() == owner) iotcp_stack_destroy(stack);
    stack = NULL;
}

int iotcp_glue_enabled(void) {
    const char *nic = getenv("IOTCP_NIC");
    return nic != NULL && *nic != '\0';
}

static iotcp_stack *the_stack(void) {
    if (stack) return stack;
    const char *nic = getenv("IOTCP_NIC");
    const char *directory = getenv("IOTCP_ROOT");
    if (!nic || !*nic) { errno = EINVAL; return NULL; }
    if (!directory || directory[0] != '/') {
        fprintf(stderr, "iotcp: IOTCP_ROOT must be the absolute path of the directory the NIC half serves\n");
        errno = EINVAL;
        return NULL;
    }
    root_length = strlen(directory);
    while (root_length > 0 && directory[root_length - 1] == '/') root_length--;   /* "/" is length 0 */
    root = directory;
    iotcp_options options;
    memset(&options, 0, sizeof options);
    options.nic = strcmp(nic, "embedded") == 0 ? NULL : nic;
    options.root = directory;
    options.netns = getenv("IOTCP_NETNS");
    options.address = getenv("IOTCP_ADDRESS");
    const char *replace = getenv("IOTCP_REPLACE_NETNS");
    options.replace_netns = replace && strcmp(replace, "1") == 0;
    stack = iotcp_stack_create(&options);
    if (!stack) {
        int error = errno;
        fprintf(stderr, "iotcp: the stack could not start: %s\n", iotcp_last_error());
        errno = error;
        return NULL;
    }
    queue = iotcp_epoll_create(stack);
    owner = getpid();
    atexit(destroy_stack);
    return stack;
}

/* The stack's threads (the embedded NIC half) do not survive fork: a process forked after the stack was
   made would wait forever on a stack nobody runs. */
static void refuse_fork(void) {
    if (!stack || getpid() == owner) return;
    fprintf(stderr, "iotcp: lighttpd forked after making its iotcp stack: run it in the foreground (-D) "
                    "and without server.max-worker\n");
    _exit(1);
}

/* ---- Sockets by descriptor number. */

struct glue_socket {
    int used;               /* this descriptor is iotcp's */
    int socket;             /* the iotcp socket; -1 for a listener the stack is not made for yet */
    uint16_t pending_port;  /* such a listener's port and backlog */
    int pending_backlog;
    uint32_t generation;    /* bumped at close, so a stale waiter is recognised */
    uint32_t events;        /* what lighttpd asked for */
    uint64_t data;          /* what lighttpd wants back with them */
    int registered;
    int waiting;            /* OUT held back until a file finishes opening */
};

static struct glue_socket *sockets;
static int socket_capacity;

static struct glue_socket *glue_socket(int fd) {
    if (fd < 0 || fd >= socket_capacity || !sockets[fd].used) return NULL;
    return &sockets[fd];
}

int iotcp_glue_is_socket(int fd) { return glue_socket(fd) != NULL; }

/* A descriptor number for iotcp socket `socket` (-1: a listener still to make), or -1 (errno set; the
   socket is then closed). */
/* An unbound, unconnected TCP socket: a call the patch missed reads and writes nothing (ENOTCONN, EPIPE),
   and getsockname on it answers 0.0.0.0:0 rather than bytes of an address it does not have. */
static int make_placeholder(void) {
    if (placeholder < 0) placeholder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    return placeholder;
}

static int adopt(int socket) {
    if (make_placeholder() < 0) return -1;
    int fd = fcntl(placeholder, F_DUPFD_CLOEXEC, 0);
    if (fd >= socket_capacity) {
        int capacity = socket_capacity ? socket_capacity : 1024;
        while (capacity <= fd) capacity *= 2;
        struct glue_socket *grown = realloc(sockets, (size_t)capacity * sizeof *grown);
        if (!grown) { close(fd); fd = -1; errno = ENOMEM; }
        else {
            for (int i = socket_capacity; i < capacity; i++) grown[i] = (struct glue_socket){ .socket = -1 };
            sockets = grown;
            socket_capacity = capacity;
        }
    }
    if (fd < 0) {
        int error = errno;
        if (socket >= 0) iotcp_close(stack, socket);
        errno = error;
        return -1;
    }
    uint32_t generation = sockets[fd].generation + 1;
    sockets[fd] = (struct glue_socket){ .used = 1, .socket = socket, .generation = generation };
    return fd;
}

/* Makes the stack, and the listeners noted before it, in the serving process; nothing is served without
   them, so a failure ends lighttpd with the reason. */
static void ensure_stack(void) {
    if (stack) { refuse_fork(); return; }
    if (!the_stack()) _exit(1);
    for (int fd = 0; fd < socket_capacity; fd++) {
        struct glue_socket *s = &sockets[fd];
        if (!s->used || s->socket >= 0) continue;
        if ((s->socket = iotcp_listen(stack, s->pending_port, s->pending_backlog)) < 0) {
            fprintf(stderr, "iotcp: listening on port %u: %s\n", s->pending_port, iotcp_last_error());
            destroy_stack();   /* the namespace it made goes too */
            _exit(1);
        }
    }
}

static int apply_interest(struct glue_socket *s) {
    uint32_t events = s->events;
    if (s->waiting) events &= ~(uint32_t)EPOLLOUT;
    int operation = s->registered ? IOTCP_EPOLL_CTL_MOD : IOTCP_EPOLL_CTL_ADD;
    if (iotcp_epoll_ctl(stack, queue, operation, s->socket, events, s->data) != 0) return -1;
    s->registered = 1;
    return 0;
}

/* Whether `address` (a bind address lighttpd was configured with) is the wildcard of its family or one of
   the stack's own addresses: IOTCP_ADDRESS, "A/P" or "A/P,B/Q" (10.77.0.2 unless it says otherwise). */
static int is_own_address(const struct sockaddr *address) {
    char configured[128] = "10.77.0.2/24";
    const char *given = getenv("IOTCP_ADDRESS");
    if (given && *given) snprintf(configured, sizeof configured, "%s", given);
    if (address->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)address;
        if (in->sin_addr.s_addr == htonl(INADDR_ANY)) return 1;
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
        if (memcmp(&in6->sin6_addr, &in6addr_any, sizeof in6addr_any) == 0) return 1;
    }
    char *rest = NULL;
    for (char *part = strtok_r(configured, ",", &rest); part; part = strtok_r(NULL, ",", &rest)) {
        part[strcspn(part, "/")] = 0;
        unsigned char own[16];
        if (address->sa_family == AF_INET && inet_pton(AF_INET, part, own) == 1
            && memcmp(&((const struct sockaddr_in *)address)->sin_addr, own, 4) == 0) return 1;
        if (address->sa_family == AF_INET6 && inet_pton(AF_INET6, part, own) == 1
            && memcmp(&((const struct sockaddr_in6 *)address)->sin6_addr, own, 16) == 0) return 1;
    }
    return 0;
}

int iotcp_glue_listen(const struct sockaddr *address, socklen_t length, int backlog) {
    /* One listener per port takes the stack's connections of every family: lighttpd binding 0.0.0.0 serves
       IPv6 clients too when the stack has an IPv6 address. */
    if (!address || (address->sa_family == AF_INET && length < (socklen_t)sizeof(struct sockaddr_in))
        || (address->sa_family == AF_INET6 && length < (socklen_t)sizeof(struct sockaddr_in6))
        || (address->sa_family != AF_INET && address->sa_family != AF_INET6)) {
        errno = EAFNOSUPPORT;
        return -1;
    }
    const char *directory = getenv("IOTCP_ROOT");
    if (!directory || directory[0] != '/') {
        fprintf(stderr, "iotcp: IOTCP_ROOT must be the absolute path of the directory the NIC half serves\n");
        errno = EINVAL;
        return -1;
    }
    if (!is_own_address(address)) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    /* The port sits at the same place in sockaddr_in and sockaddr_in6. */
    const struct sockaddr_in *in = (const struct sockaddr_in *)address;
    if (backlog < 1) backlog = 1024;
    int fd;
    if (stack) {
        int socket = iotcp_listen(stack, ntohs(in->sin_port), backlog);
        if (socket < 0) return -1;
        fd = adopt(socket);
    } else {
        fd = adopt(-1);
    }
    if (fd >= 0 && sockets[fd].socket < 0) {
        sockets[fd].pending_port = ntohs(in->sin_port);
        sockets[fd].pending_backlog = backlog;
    }
    return fd;
}

int iotcp_glue_accept(int listener, struct sockaddr *peer, size_t *length) {
    struct glue_socket *s = glue_socket(listener);
    if (!s) { errno = EBADF; return -1; }
    ensure_stack();
    struct sockaddr_storage from;
    socklen_t from_length = sizeof from;
    int socket = iotcp_accept(stack, s->socket, (struct sockaddr *)&from, &from_length);
    if (socket < 0) return -1;
    int fd = adopt(socket);
    if (fd < 0) return -1;
    /* What lighttpd does to every TCP connection it accepts (network_accept_tcp_nagle_disable). */
    static const int on = 1;
    (void)iotcp_setsockopt(stack, socket, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (peer && length) {
        size_t size = *length < from_length ? *length : from_length;
        memcpy(peer, &from, size);
        *length = from_length;
    }
    return fd;
}

ssize_t iotcp_glue_read(int fd, void *buffer, size_t length) {
    struct glue_socket *s = glue_socket(fd);
    return s ? iotcp_read(stack, s->socket, buffer, length) : read(fd, buffer, length);
}

ssize_t iotcp_glue_write(int fd, const void *buffer, size_t length) {
    struct glue_socket *s = glue_socket(fd);
    return s ? iotcp_write(stack, s->socket, buffer, length) : write(fd, buffer, length);
}

ssize_t iotcp_glue_writev(int fd, const struct iovec *vectors, int count) {
    struct glue_socket *s = glue_socket(fd);
    return s ? iotcp_writev(stack, s->socket, vectors, count) : writev(fd, vectors, count);
}

int iotcp_glue_setsockopt(int fd, int level, int name, const void *value, socklen_t length) {
    struct glue_socket *s = glue_socket(fd);
    return s ? iotcp_setsockopt(stack, s->socket, level, name, value, length) : setsockopt(fd, level, name, value, length);
}

int iotcp_glue_shutdown(int fd, int how) {
    struct glue_socket *s = glue_socket(fd);
    return s ? iotcp_shutdown(stack, s->socket, how) : shutdown(fd, how);
}

int iotcp_glue_getsockname(int fd, struct sockaddr *address, socklen_t *length) {
    struct glue_socket *s = glue_socket(fd);
    if (!s) return getsockname(fd, address, length);
    if (!address || !length) { errno = EFAULT; return -1; }
    return iotcp_getsockname(stack, s->socket, address, length);
}

int iotcp_glue_close(int fd) {
    struct glue_socket *s = glue_socket(fd);
    if (!s) return close(fd);
    int result = s->socket >= 0 ? iotcp_close(stack, s->socket) : 0;
    int error = errno;
    s->used = 0;
    s->socket = -1;
    s->generation++;
    s->registered = 0;
    s->waiting = 0;
    close(fd);
    errno = error;
    return result;
}

/* ---- Offloaded files by path. */

enum { OPENING = 1, OPEN, FAILED };

struct waiter { int fd; uint32_t generation; };

struct offloaded {
    char *path;                 /* under the NIC's root; NULL: a free slot */
    int state;
    int file;                   /* OPEN: the iotcp file */
    uint32_t generation;        /* in the open's token: an answer for an evicted entry is recognised */
    struct stat identity;       /* the file lighttpd opened when this entry was made */
    struct waiter *waiters;
    int waiter_count, waiter_capacity;
};

#define FILE_SLOTS 4096         /* a power of two; evicted wholesale at 3/4 full */
static struct offloaded files[FILE_SLOTS];
static int file_count;
static uint32_t file_generation;

static uint32_t path_hash(const char *path) {
    uint32_t hash = 2166136261u;
    for (; *path; path++) hash = (hash ^ (uint8_t)*path) * 16777619u;
    return hash;
}

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size
        && a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void wake_waiters(struct offloaded *entry) {
    for (int i = 0; i < entry->waiter_count; i++) {
        struct glue_socket *s = glue_socket(entry->waiters[i].fd);
        if (!s || s->generation != entry->waiters[i].generation || !s->waiting) continue;
        s->waiting = 0;
        if (s->registered) (void)apply_interest(s);
    }
    entry->waiter_count = 0;
}

static void release(struct offloaded *entry) {
    if (entry->state == OPEN) iotcp_offload_close(stack, entry->file);
    wake_waiters(entry);    /* they retry and open afresh */
    free(entry->path);
    free(entry->waiters);
    memset(entry, 0, sizeof *entry);
}

/* Too many files: forget every one (the NIC closes each once its queued ranges are acknowledged). */
static void evict_all(void) {
    for (int i = 0; i < FILE_SLOTS; i++) if (files[i].path) release(&files[i]);
    file_count = 0;
}

static struct offloaded *find(const char *path, int create) {
    if (create && file_count >= FILE_SLOTS / 4 * 3) evict_all();
    for (uint32_t i = path_hash(path), n = 0; n < FILE_SLOTS; i++, n++) {
        struct offloaded *entry = &files[i & (FILE_SLOTS - 1)];
        if (!entry->path) {
            if (!create) return NULL;
            if (!(entry->path = strdup(path))) return NULL;
            file_count++;
            return entry;
        }
        if (strcmp(entry->path, path) == 0) return entry;
    }
    return NULL;
}

static int start_open(struct offloaded *entry, const struct stat *identity) {
    entry->identity = *identity;
    entry->state = OPENING;
    entry->generation = ++file_generation;
    uint64_t token = ((uint64_t)entry->generation << 32) | (uint64_t)(entry - files);
    if (iotcp_offload_open(stack, entry->path, token) != 0) {
        entry->state = FAILED;
        return -1;
    }
    return 0;
}

static void opened(const iotcp_event *event) {
    uint32_t slot = (uint32_t)(event->data & 0xffffffffu), generation = (uint32_t)(event->data >> 32);
    struct offloaded *entry = slot < FILE_SLOTS ? &files[slot] : NULL;
    if (!entry || !entry->path || entry->state != OPENING || entry->generation != generation) {
        if (event->result >= 0) iotcp_offload_close(stack, event->result);   /* nobody wants it now */
        return;
    }
    iotcp_file_status status = { 0 };
    if (event->result < 0) {
        fprintf(stderr, "iotcp: the NIC could not open %s (%s): lighttpd sends it through the host\n",
                entry->path, strerror(-event->result));
        entry->state = FAILED;
    } else if (iotcp_offload_fstat(stack, event->result, &status) != 0
               || (off_t)status.size != entry->identity.st_size
               || (time_t)status.modification_seconds != entry->identity.st_mtim.tv_sec
               || (long)status.modification_nanoseconds != entry->identity.st_mtim.tv_nsec) {
        /* Size and mtime must agree: the NIC's file is then the one lighttpd stat'ed (the same file, or an
           exact copy with its times kept). Anything else could send other bytes under lighttpd's headers. */
        fprintf(stderr, "iotcp: the NIC's %s is not the file lighttpd opened (%llu bytes, mtime %lld, not %lld "
                "bytes, mtime %lld): lighttpd sends it through the host\n", entry->path,
                (unsigned long long)status.size, (long long)status.modification_seconds,
                (long long)entry->identity.st_size, (long long)entry->identity.st_mtim.tv_sec);
        iotcp_offload_close(stack, event->result);
        entry->state = FAILED;
    } else {
        entry->file = event->result;
        entry->state = OPEN;
    }
    wake_waiters(entry);
}

/* The host sends the bytes itself: files outside the NIC's root (lighttpd's temporary files) and files
   the NIC could not open. */
static ssize_t send_through_host(struct glue_socket *s, int file, off_t *offset, size_t count) {
    static char buffer[65536];
    if (count > sizeof buffer) count = sizeof buffer;
    ssize_t got = pread(file, buffer, count, *offset);
    if (got <= 0) return got;
    ssize_t sent = iotcp_write(stack, s->socket, buffer, (size_t)got);
    if (sent > 0) *offset += sent;
    return sent;
}

ssize_t iotcp_glue_sendfile(int fd, int file, off_t *offset, size_t count, const char *path) {
    struct glue_socket *s = glue_socket(fd);
    if (!s) return sendfile(fd, file, offset, count);
    if (!path || strncmp(path, root, root_length) != 0 || path[root_length] != '/')
        return send_through_host(s, file, offset, count);
    struct stat identity;
    if (fstat(file, &identity) != 0) return -1;
    struct offloaded *entry = find(path + root_length, 1);
    if (!entry) return send_through_host(s, file, offset, count);
    if (entry->state && !same_file(&entry->identity, &identity)) {
        /* The entry is for another file than the one this response is made of. If the path no longer
           names this response's file (it was replaced while being sent), the NIC cannot open it again:
           the host sends the rest. Otherwise the entry is the stale one: open the file anew. */
        struct stat now;
        if (stat(path, &now) != 0 || !same_file(&now, &identity)) return send_through_host(s, file, offset, count);
        if (entry->state == OPENING) return send_through_host(s, file, offset, count);  /* an older open is on its way */
        if (entry->state == OPEN) iotcp_offload_close(stack, entry->file);
        entry->state = 0;
    }
    if (!entry->state && start_open(entry, &identity) != 0) {
        fprintf(stderr, "iotcp: asking the NIC to open %s: %s: lighttpd sends it through the host\n",
                entry->path, iotcp_last_error());
        return send_through_host(s, file, offset, count);
    }
    switch (entry->state) {
    case OPENING:
        if (entry->waiter_count == entry->waiter_capacity) {
            int capacity = entry->waiter_capacity ? entry->waiter_capacity * 2 : 8;
            struct waiter *grown = realloc(entry->waiters, (size_t)capacity * sizeof *grown);
            if (!grown) { errno = ENOMEM; return -1; }
            entry->waiters = grown;
            entry->waiter_capacity = capacity;
        }
        entry->waiters[entry->waiter_count++] = (struct waiter){ fd, s->generation };
        s->waiting = 1;
        if (s->registered) (void)apply_interest(s);
        errno = EAGAIN;
        return -1;
    case OPEN: {
        ssize_t sent = iotcp_offload_write(stack, s->socket, entry->file, (uint64_t)*offset, count);
        if (sent > 0) *offset += sent;
        return sent;
    }
    default:
        return send_through_host(s, file, offset, count);
    }
}

/* ---- One event loop for both. */

static int pollable = -2;       /* -2: not asked yet; -1: the channel has no descriptor */
static char pollable_marker;    /* its events carry this address: never a lighttpd pointer */
static iotcp_event *gathered;
static int gathered_capacity;

int iotcp_glue_epoll_ctl(int epoll, int operation, int fd, struct epoll_event *event) {
    struct glue_socket *s = glue_socket(fd);
    if (!s) return epoll_ctl(epoll, operation, fd, event);
    ensure_stack();
    if (operation == EPOLL_CTL_DEL) {
        s->registered = 0;
        return iotcp_epoll_ctl(stack, queue, IOTCP_EPOLL_CTL_DEL, s->socket, 0, 0);
    }
    if (!event) { errno = EFAULT; return -1; }
    s->events = event->events;
    s->data = (uint64_t)(uintptr_t)event->data.ptr;
    return apply_interest(s);
}

/* Moves what iotcp has ready into `events` (finished opens are the glue's own), up to `room`. */
static int gather(struct epoll_event *events, int room) {
    if (room <= 0) return 0;
    if (room > gathered_capacity) {
        iotcp_event *grown = realloc(gathered, (size_t)room * sizeof *grown);
        if (!grown) return 0;
        gathered = grown;
        gathered_capacity = room;
    }
    int count = iotcp_epoll_wait(stack, queue, gathered, room, 0);
    if (count < 0 && errno != EINTR) {
        /* The NIC half failed or the channel to it dropped: no connection can go on. Stop (atexit removes
           what the stack made) so a supervisor can start lighttpd again, rather than spin. */
        fprintf(stderr, "iotcp: the stack failed (%s): lighttpd stops\n", iotcp_last_error());
        exit(1);
    }
    int delivered = 0;
    for (int i = 0; i < count; i++) {
        if (gathered[i].events & IOTCP_OFFLOAD_OPENED) { opened(&gathered[i]); continue; }
        events[delivered].events = gathered[i].events;
        events[delivered].data.u64 = gathered[i].data;
        delivered++;
    }
    return delivered;
}

/* Drops the iotcp descriptor's own wake-ups from what the kernel reported. */
static int without_marker(struct epoll_event *events, int count) {
    int kept = 0;
    for (int i = 0; i < count; i++)
        if (events[i].data.ptr != &pollable_marker) events[kept++] = events[i];
    return kept;
}

int iotcp_glue_epoll_wait(int epoll, struct epoll_event *events, int max_events, int timeout_ms) {
    if (!stack && placeholder < 0) return epoll_wait(epoll, events, max_events, timeout_ms);  /* stock */
    ensure_stack();
    if (pollable == -2) pollable = iotcp_pollable_fd(stack);
    int ready = gather(events, max_events);
    if (ready > 0) {
        int kernel = epoll_wait(epoll, events + ready, max_events - ready, 0);
        return ready + (kernel > 0 ? without_marker(events + ready, kernel) : 0);
    }
    int limit = timeout_ms < 0 ? 1000 : timeout_ms;
    int sleep_ms = iotcp_before_poll(stack, limit);
    if (sleep_ms < 0) sleep_ms = limit;                 /* the NIC half failed: lighttpd's timers go on */
    if (sleep_ms > 0 && pollable < 0) sleep_ms = 1;     /* a busy-polled channel: look again soon */
    if (sleep_ms > 0 && pollable >= 0) {
        /* Added before every sleep (EEXIST once it is there): lighttpd makes a new epoll descriptor on a
           graceful restart, often with the old number, and a sleep without it would miss the NIC. */
        struct epoll_event wake = { .events = EPOLLIN, .data.ptr = &pollable_marker };
        if (epoll_ctl(epoll, EPOLL_CTL_ADD, pollable, &wake) != 0 && errno != EEXIST) sleep_ms = sleep_ms > 1 ? 1 : sleep_ms;
    }
    int kernel = epoll_wait(epoll, events, max_events, sleep_ms);
    int saved = errno;
    if (sleep_ms > 0) iotcp_after_poll(stack);
    if (kernel < 0) { errno = saved; return saved == EINTR ? 0 : -1; }
    kernel = without_marker(events, kernel);
    return kernel + gather(events + kernel, max_events - kernel);
}
