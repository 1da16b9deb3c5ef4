#include "CIOTCPURing.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

struct iotcp_uring {
    struct io_uring ring;
};

struct iotcp_uring *iotcp_uring_create(unsigned entries, int *error) {
    struct iotcp_uring *handle = calloc(1, sizeof *handle);
    if (handle == NULL) {
        *error = ENOMEM;
        return NULL;
    }
    int result = io_uring_queue_init(entries, &handle->ring, 0);
    if (result < 0) {
        free(handle);
        *error = -result;
        return NULL;
    }
    return handle;
}

long iotcp_uring_read(struct iotcp_uring *handle, int descriptor, void *buffer, unsigned length, uint64_t offset) {
    if (length == 0) return 0;
    struct io_uring_sqe *entry = io_uring_get_sqe(&handle->ring);
    if (entry == NULL) return -EAGAIN;
    io_uring_prep_read(entry, descriptor, buffer, length, offset);
    int submitted = io_uring_submit(&handle->ring);
    if (submitted < 0) return submitted;
    struct io_uring_cqe *completion = NULL;
    int waited;
    do {
        waited = io_uring_wait_cqe(&handle->ring, &completion);
    } while (waited == -EINTR);
    if (waited < 0) return waited;
    long result = completion->res;
    io_uring_cqe_seen(&handle->ring, completion);
    return result;
}

void iotcp_uring_destroy(struct iotcp_uring *handle) {
    if (handle == NULL) return;
    io_uring_queue_exit(&handle->ring);
    free(handle);
}
