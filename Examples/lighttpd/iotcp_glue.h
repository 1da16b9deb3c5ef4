/*
 * iotcp_glue.h: what lighttpd calls instead of the kernel's socket calls when it runs on iotcp.
 *
 * Every iotcp socket gets a process-unique descriptor number (a duplicate of one unbound, unconnected TCP
 * socket), so lighttpd's tables indexed by descriptor keep working and a call the patch missed reads or
 * writes nothing (ENOTCONN, EPIPE) instead of acting on the wrong thing. Each wrapper has the signature of the call it replaces
 * and passes kernel descriptors straight through, so a patched call site changes one name and nothing else.
 *
 * Switched on by the environment (lighttpd's own configuration file stays as it is):
 *   IOTCP_NIC      "embedded" (the NIC half on a thread of lighttpd, its wire a TAP in a namespace),
 *                  or "shm:PATH" / "rdma://IP:PORT" (an iotcp-nic process). Unset: stock lighttpd.
 *   IOTCP_ROOT     the host directory the NIC half serves as its root: files under it are sent by the
 *                  NIC (offload writes); any other file lighttpd sends goes through the host.
 *   IOTCP_NETNS, IOTCP_ADDRESS, IOTCP_REPLACE_NETNS=1   embedded only, as iotcp_options.
 */
#ifndef IOTCP_GLUE_H
#define IOTCP_GLUE_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

struct epoll_event;

/* 1 when IOTCP_NIC is set: TCP listeners become iotcp listeners. */
int iotcp_glue_enabled(void);
/* 1 when fd is an iotcp socket (a listener or a connection). */
int iotcp_glue_is_socket(int fd);

/* An iotcp listener on the port of `address` (its address must be the stack's or the wildcard). */
int iotcp_glue_listen(const struct sockaddr *address, socklen_t length, int backlog);
/* lighttpd's fdevent_accept_listenfd for an iotcp listener: a new connection or -1/EAGAIN. */
int iotcp_glue_accept(int listener, struct sockaddr *peer, size_t *length);

ssize_t iotcp_glue_read(int fd, void *buffer, size_t length);
ssize_t iotcp_glue_write(int fd, const void *buffer, size_t length);
ssize_t iotcp_glue_writev(int fd, const struct iovec *vectors, int count);
/* setsockopt(2); for an iotcp socket, libiotcp's options (TCP_CORK: the head lighttpd writes before a
   file leaves in the file's first segment). */
int iotcp_glue_setsockopt(int fd, int level, int name, const void *value, socklen_t length);
/* sendfile(2) plus the file's path: for an iotcp socket the NIC sends the bytes (the file is opened on
   the NIC once and kept); -1/EAGAIN while that open is under way, and the socket turns writable again
   when it finishes. */
ssize_t iotcp_glue_sendfile(int fd, int file, off_t *offset, size_t count, const char *path);
int iotcp_glue_shutdown(int fd, int how);
int iotcp_glue_close(int fd);
int iotcp_glue_getsockname(int fd, struct sockaddr *address, socklen_t *length);

/* epoll_ctl/epoll_wait over the kernel's descriptors and iotcp's sockets together. */
int iotcp_glue_epoll_ctl(int epoll, int operation, int fd, struct epoll_event *event);
int iotcp_glue_epoll_wait(int epoll, struct epoll_event *events, int max_events, int timeout_ms);

#endif
