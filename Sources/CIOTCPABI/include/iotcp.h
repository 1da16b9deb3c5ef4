/*
 * iotcp.h: the C interface of iotcp's host half (libiotcp).
 *
 * A stack is the host half of an iotcp server: TCP connections whose file data the NIC half sends. It runs
 * embedded (the NIC half on a thread of this process, its wire a TAP device in a network namespace it
 * creates) or split (the NIC half is an iotcp-nic process reached at "shm:PATH" or "rdma://IP:PORT").
 *
 * Threads: a stack, its sockets, its files and its event queue belong to one thread at a time: call them
 * from one thread, or serialise the calls yourself. Different stacks are independent.
 *
 * Errors: calls return -1 (or NULL) and set errno, as POSIX calls do: EBADF for an unknown, closed or stale
 * socket or file, EINVAL for a bad argument (a NULL pointer included), EAGAIN when the call would block
 * (every socket is non-blocking, the only mode), ENOTCONN, ECONNRESET, ETIMEDOUT, ECONNREFUSED for a
 * connection's own failure, EPIPE for a write after shutdown, EIO when the NIC half failed.
 * iotcp_last_error() gives the text of the calling thread's last failure.
 *
 * Work happens inside the calls: the stack runs its timers and takes what the NIC half sent only while you
 * call it, chiefly iotcp_epoll_wait, so call that at least every few tens of milliseconds.
 *
 * Linking: libiotcp is Swift inside; `pkg-config --libs iotcp` puts the Swift runtime's directory in your
 * program's run path. It also needs libibverbs, librdmacm, libnvme and liburing at run time (Debian's
 * packages of those names).
 */
#ifndef IOTCP_H
#define IOTCP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct iotcp_stack iotcp_stack;

/* How to create a stack. Zero-initialise it and set what you need. */
typedef struct iotcp_options {
    /* NULL: embedded. "shm:PATH" or "rdma://IP:PORT": split, the NIC half is an iotcp-nic there. */
    const char *nic;
    /* Embedded: the directory whose files may be offloaded (required). */
    const char *root;
    /* Embedded: the network namespace created for clients (NULL: "iotcp"); removed by iotcp_stack_destroy. */
    const char *netns;
    /* The stack's address and prefix (NULL: "10.77.0.2/24"): IPv4, IPv6 ("fd77::2/64") or one of each
       ("10.77.0.2/24,fd77::2/64"); embedded, the namespace's end of the wire takes the first other address
       of each prefix (10.77.0.1, fd77::1). Listeners take connections over every family the stack has. */
    const char *address;
    /* Embedded: take over the namespace even if another server's interfaces or processes are in it. */
    int replace_netns;
} iotcp_options;

/* Returns once the stack can serve (embedded: the namespace, its TAP and the NIC thread are up), or NULL:
   EINVAL for bad options, EEXIST when the namespace exists and holds another server (see replace_netns),
   EPERM without the privilege to make it (embedded needs root or CAP_NET_ADMIN), ECONNREFUSED when a split
   stack's iotcp-nic cannot be reached. */
iotcp_stack *iotcp_stack_create(const iotcp_options *options);
/* Resets every connection still open (nothing queued is sent after this: close sockets and let their
   transfers finish first if they matter), closes every file, stops the NIC half (embedded) and removes the
   namespace it created. The pointer is invalid afterwards. */
int iotcp_stack_destroy(iotcp_stack *stack);
/* The stack's IPv4 address, or its IPv6 address, in network byte order: -1/EADDRNOTAVAIL when it has none
   of that family. */
int iotcp_stack_address(iotcp_stack *stack, struct in_addr *address);
int iotcp_stack_address6(iotcp_stack *stack, struct in6_addr *address);

/* The text of the calling thread's last failure ("" if none). Valid until the thread's next call. */
const char *iotcp_last_error(void);

/* ---- Sockets: small non-negative integers, per stack, reused after iotcp_close (not necessarily the
   lowest free one). They are not kernel descriptors: never pass them to close(2) or poll(2). */

/* Listens on the stack's own address (it has one address; there is no bind). */
int iotcp_listen(iotcp_stack *stack, uint16_t port, int backlog);
/* -1/EAGAIN when no connection waits. As accept(2): `peer` (may be NULL) gets a struct sockaddr_in or
   struct sockaddr_in6 by the connection's family, at most *length bytes of it (a struct sockaddr_storage
   always has room), and *length is set to its size. */
int iotcp_accept(iotcp_stack *stack, int listener, struct sockaddr *peer, socklen_t *length);
/* Bytes read; 0 at end of stream; -1/EAGAIN when nothing is there yet. */
ssize_t iotcp_read(iotcp_stack *stack, int socket, void *buffer, size_t length);
/* Bytes queued (maybe fewer than asked); -1/EAGAIN when none could be. */
ssize_t iotcp_write(iotcp_stack *stack, int socket, const void *buffer, size_t length);
ssize_t iotcp_writev(iotcp_stack *stack, int socket, const struct iovec *vectors, int count);
/* SHUT_WR (or SHUT_RDWR): a FIN after what is queued. SHUT_RD alone changes nothing here: reads still
   return what arrives. */
int iotcp_shutdown(iotcp_stack *stack, int socket, int how);
/* A listener stops listening; a connection sends FIN after its queued data, offloaded file ranges included
   (closing right after the last iotcp_offload_write is safe), and finishes closing by itself. The socket
   leaves the event queue: no IOTCP_EPOLL_CTL_DEL is needed. */
int iotcp_close(iotcp_stack *stack, int socket);
/* As getsockname(2) and getpeername(2), `address` and *length as for iotcp_accept. A listener is named by
   the stack's IPv4 address if it has one, else by its IPv6 address. */
int iotcp_getsockname(iotcp_stack *stack, int socket, struct sockaddr *address, socklen_t *length);
int iotcp_getpeername(iotcp_stack *stack, int socket, struct sockaddr *address, socklen_t *length);
/* On a connection: IPPROTO_TCP/TCP_NODELAY (Nagle off; it is on by default, as on Linux),
   IPPROTO_TCP/TCP_CORK (writes wait for what follows until it is turned off or the stack next waits, so a
   head written before iotcp_offload_write leaves in the file's first segment) and
   SOL_SOCKET/SO_KEEPALIVE (probes after 2 h idle, 75 s apart, 9 of them, unless the stack sets its own),
   with an int value. Other options are ENOPROTOOPT; a listener is EOPNOTSUPP. */
int iotcp_setsockopt(iotcp_stack *stack, int socket, int level, int name, const void *value, socklen_t length);

/* ---- Offloaded files: the NIC half opens, reads and sends them; the host never touches their bytes. */

typedef struct iotcp_file_status {
    uint64_t size;
    int64_t modification_seconds;
    uint32_t modification_nanoseconds;
    uint32_t mode;
    uint64_t inode;
    uint64_t device;
} iotcp_file_status;

/* Asks the NIC to open `path`, relative to its export root ("/a/b.bin", "a/b.bin" and "./a/b.bin" name the
   same file; a host path such as "/srv/www/a/b.bin" is not understood). Returns 0, or -1 (EINVAL for an
   empty path or one over 4,096 bytes). The answer comes from iotcp_epoll_wait as an IOTCP_OFFLOAD_OPENED
   event carrying `data` (nothing needs registering for it, but iotcp_epoll_create must have been called):
   its `result` is the file (>= 0) or -errno: -ENOENT, -EACCES for a path out of the root (".." above it,
   a symlink out of it), -EMFILE... */
int iotcp_offload_open(iotcp_stack *stack, const char *path, uint64_t data);
/* Answers at once from what the open brought (no round trip to the NIC). */
int iotcp_offload_fstat(iotcp_stack *stack, int file, iotcp_file_status *status);
/* sendfile: queues up to `length` bytes of `file` from `offset` on `socket`, in order with its writes.
   Bytes queued; 0 at or past the end of the file; -1/EAGAIN when none could be. */
ssize_t iotcp_offload_write(iotcp_stack *stack, int socket, int file, uint64_t offset, size_t length);
/* Ranges already queued are still sent: the NIC closes the file once they are acknowledged. */
int iotcp_offload_close(iotcp_stack *stack, int file);

/* ---- The event queue (one per stack), as epoll. */

#define IOTCP_EPOLLIN        0x001u   /* readable, or a listener has connections */
#define IOTCP_EPOLLOUT       0x004u   /* a write would take bytes */
#define IOTCP_EPOLLERR       0x008u   /* always reported */
#define IOTCP_EPOLLHUP       0x010u   /* always reported */
#define IOTCP_EPOLLRDHUP     0x2000u  /* the peer closed its side */
#define IOTCP_EPOLLET        (1u << 31)
#define IOTCP_OFFLOAD_OPENED (1u << 24)  /* an iotcp_offload_open finished: see `result` */

#define IOTCP_EPOLL_CTL_ADD 1
#define IOTCP_EPOLL_CTL_DEL 2
#define IOTCP_EPOLL_CTL_MOD 3

typedef struct iotcp_event {
    uint32_t events;
    /* IOTCP_OFFLOAD_OPENED: the file (>= 0) or -errno. Otherwise the socket. */
    int32_t result;
    /* The `data` given to iotcp_epoll_ctl for this socket, or to iotcp_offload_open. */
    uint64_t data;
} iotcp_event;

/* The stack's event queue, a number of iotcp's (not a kernel descriptor: nothing to close; it lives as
   long as the stack). A second call returns the same one. */
int iotcp_epoll_create(iotcp_stack *stack);
/* Level-triggered unless `events` has IOTCP_EPOLLET, as epoll. */
int iotcp_epoll_ctl(iotcp_stack *stack, int epoll, int operation, int socket, uint32_t events, uint64_t data);
/* Waits up to `timeout_ms` (-1: until something happens, 0: never) and does the stack's work. Returns the
   number of events. A signal does not end the wait early: a server that stops on a signal should wait in
   short slices (or in its own poll on iotcp_pollable_fd, which a signal does interrupt). */
int iotcp_epoll_wait(iotcp_stack *stack, int epoll, iotcp_event *events, int max_events, int timeout_ms);

/* ---- Waiting in your own event loop (poll, epoll, libev...) together with your own descriptors. */

/* A descriptor that turns readable when the NIC half sends, or -1 when the channel busy-polls. */
int iotcp_pollable_fd(iotcp_stack *stack);
/* How long your loop may sleep, in ms (at most `limit_ms`), or 0 when work is waiting: then call
   iotcp_epoll_wait(..., 0) again rather than sleeping. After a positive answer, sleep on iotcp_pollable_fd
   and your descriptors, then call iotcp_after_poll, whatever woke you. */
int iotcp_before_poll(iotcp_stack *stack, int limit_ms);
void iotcp_after_poll(iotcp_stack *stack);

#ifdef __cplusplus
}
#endif

#endif
