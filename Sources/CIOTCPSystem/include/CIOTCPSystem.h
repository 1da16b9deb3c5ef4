#ifndef CIOTCPSYSTEM_H
#define CIOTCPSYSTEM_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/// POLLRDHUP, which <poll.h> declares only under _GNU_SOURCE.
#define IOTCP_POLLRDHUP 0x2000

/// A non-blocking, close-on-exec eventfd; returns a descriptor or -1 with errno set.
int iotcp_eventfd(void);

/// accept4(2) with SOCK_CLOEXEC.
int iotcp_accept_cloexec(int fd);

/// ppoll(2) with a timeout in nanoseconds; a negative timeout waits without limit.
int iotcp_poll_nanoseconds(struct pollfd *fds, unsigned long count, int64_t nanoseconds);

/// memfd_create(2) with MFD_CLOEXEC and MFD_ALLOW_SEALING; returns a descriptor or -1 with errno set.
int iotcp_memfd_create(const char *name);

/// Seals a memfd's size (F_SEAL_SHRINK, F_SEAL_GROW, and no more seals): no process holding it can make
/// another's mapping of it fault with SIGBUS. 0 or -1.
int iotcp_seal_size(int fd);

/// 1 when a memfd's size is sealed against shrinking and growing, else 0.
int iotcp_size_is_sealed(int fd);

/// The user id of the process at the other end of a Unix socket (SO_PEERCRED). 0 or -1.
int iotcp_peer_uid(int socket, unsigned *uid);

/// Binds a stream socket to a filesystem path (unlinking a stale socket first) and listens.
int iotcp_unix_listen(int fd, const char *path, int backlog);

/// Connects a stream socket to a filesystem path.
int iotcp_unix_connect(int fd, const char *path);

/// Sends `length` bytes of `data` with `count` descriptors attached (SCM_RIGHTS). Returns bytes sent or -1.
long iotcp_send_with_fds(int socket, const void *data, size_t length, const int *fds, int count);

/// Receives up to `length` bytes and up to `max_fds` descriptors; stores how many arrived in
/// `*received_fds`. Returns bytes received (0 at end of stream) or -1.
long iotcp_receive_with_fds(int socket, void *data, size_t length, int *fds, int max_fds, int *received_fds);

/// openat2(2) confined to `directory`: RESOLVE_BENEATH (no `..` above it, no absolute paths, no symlink
/// leading out of it) and RESOLVE_NO_MAGICLINKS, read-only, close-on-exec, non-blocking (a FIFO cannot
/// block the open), with O_DIRECT when `direct`. Returns a descriptor or -1.
int iotcp_open_beneath(int directory, const char *path, int direct);

/// Clears O_NONBLOCK on a descriptor; 0 or -1.
int iotcp_clear_nonblocking(int fd);

/// Opens /dev/net/tun and attaches a TAP interface named `name` (IFF_TAP | IFF_NO_PI), non-blocking; with
/// `vnet_header`, also IFF_VNET_HDR: every frame is preceded by a 10-byte virtio_net_hdr (checksum offload
/// and GSO). Writes the kernel's chosen name back into `name` (at least 16 bytes). Returns a descriptor or -1.
int iotcp_tap_open(char *name, int vnet_header);
/// Offers (or withdraws) checksum and TCP/IPv4 segmentation offload to the kernel for frames it hands the TAP.
int iotcp_tap_set_offload(int fd, int checksum_and_tso4);

/// Names the calling thread (at most 15 bytes are kept), as top, perf and /proc/PID/task/TID/comm show it.
void iotcp_name_thread(const char *name);

/// The one clock of iotcp: CLOCK_MONOTONIC in nanoseconds (host stack, channels, NIC loop, CLIs).
int64_t iotcp_monotonic_nanoseconds(void);

/// Raises glibc's trim and mmap thresholds so freed buffers are kept for reuse, not returned to the kernel.
void iotcp_keep_freed_memory(void);

#endif
