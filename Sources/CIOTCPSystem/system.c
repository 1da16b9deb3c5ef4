// The few system interfaces Swift cannot reach directly: memfd_create is declared only under
// _GNU_SOURCE, and the CMSG_* macros for passing descriptors are function-like macros.
#define _GNU_SOURCE
#include "CIOTCPSystem.h"

#include <errno.h>
#include <time.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

int iotcp_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

int iotcp_seal_size(int fd) {
    return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
}

int iotcp_size_is_sealed(int fd) {
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) return 0;
    return (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW);
}

int iotcp_peer_uid(int socket, unsigned *uid) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    *uid = credentials.uid;
    return 0;
}

int iotcp_eventfd(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

int iotcp_accept_cloexec(int fd) {
    return accept4(fd, NULL, NULL, SOCK_CLOEXEC);
}

int iotcp_poll_nanoseconds(struct pollfd *fds, unsigned long count, int64_t nanoseconds) {
    if (nanoseconds < 0) return ppoll(fds, count, NULL, NULL);
    struct timespec timeout = {.tv_sec = nanoseconds / 1000000000, .tv_nsec = nanoseconds % 1000000000};
    return ppoll(fds, count, &timeout, NULL);
}

static int fill_address(struct sockaddr_un *address, const char *path) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof address->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(address->sun_path, path, length);
    return 0;
}

int iotcp_unix_listen(int fd, const char *path, int backlog) {
    struct sockaddr_un address;
    if (fill_address(&address, path) != 0) return -1;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0) return -1;
    return listen(fd, backlog);
}

int iotcp_unix_connect(int fd, const char *path) {
    struct sockaddr_un address;
    if (fill_address(&address, path) != 0) return -1;
    return connect(fd, (struct sockaddr *)&address, sizeof address);
}

#define IOTCP_MAX_FDS 8

long iotcp_send_with_fds(int socket, const void *data, size_t length, const int *fds, int count) {
    if (count < 0 || count > IOTCP_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    struct iovec vector = {.iov_base = (void *)data, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * IOTCP_MAX_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1};
    if (count > 0) {
        message.msg_control = control.buffer;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(header), fds, sizeof(int) * count);
    }
    long sent;
    do {
        sent = sendmsg(socket, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent;
}

long iotcp_receive_with_fds(int socket, void *data, size_t length, int *fds, int max_fds, int *received_fds) {
    *received_fds = 0;
    if (max_fds < 0 || max_fds > IOTCP_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    struct iovec vector = {.iov_base = data, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * IOTCP_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer,
                             .msg_controllen = sizeof control.buffer};
    long received;
    do {
        received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    } while (received < 0 && errno == EINTR);
    if (received < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *passed = (int *)CMSG_DATA(header);
        for (int i = 0; i < count; i++) {
            // Keep what fits; close the rest so a misbehaving peer cannot leak descriptors into us.
            if (*received_fds < max_fds) fds[(*received_fds)++] = passed[i];
            else close(passed[i]);
        }
    }
    return received;
}

int iotcp_open_beneath(int directory, const char *path, int direct) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    // O_NONBLOCK so a FIFO or device under the root cannot block the open; the caller refuses anything
    // that is not a regular file and clears the flag again (io_uring honours it on regular files too).
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (direct ? O_DIRECT : 0);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    long fd;
    do {
        fd = syscall(SYS_openat2, directory, path, &how, sizeof how);
    } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
    return (int)fd;
}

int iotcp_clear_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

int iotcp_tap_open(char *name, int vnet_header) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    request.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_header ? IFF_VNET_HDR : 0);
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    int header_size = 10;  // struct virtio_net_hdr, without num_buffers
    if (ioctl(fd, TUNSETIFF, &request) < 0 || (vnet_header && ioctl(fd, TUNSETVNETHDRSZ, &header_size) < 0)) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    strncpy(name, request.ifr_name, IFNAMSIZ);
    return fd;
}

int iotcp_tap_set_offload(int fd, int checksum_and_tso4) {
    // TUN_F_CSUM | TUN_F_TSO4: the kernel may hand over its TCP/IPv4 packets unsummed and uncut.
    unsigned int flags = checksum_and_tso4 ? (TUN_F_CSUM | TUN_F_TSO4) : 0;
    return ioctl(fd, TUNSETOFFLOAD, flags);
}

int64_t iotcp_monotonic_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

void iotcp_name_thread(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

void iotcp_keep_freed_memory(void) {
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
}
