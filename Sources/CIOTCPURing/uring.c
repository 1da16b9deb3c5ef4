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
    // Completions are reaped by polling the ring, never by signal: the kernel need not interrupt the loop to
    // post them. (Not SINGLE_ISSUER: a ring is often made on one thread and driven by the NIC's own.)
    struct io_uring_params params = {0};
    params.flags = IORING_SETUP_COOP_TASKRUN;
    int result = io_uring_queue_init_params(entries, &handle->ring, &params);
    if (result == -EINVAL) {
        // Kernels before 5.19 do not know the flag.
        struct io_uring_params plain = {0};
        result = io_uring_queue_init_params(entries, &handle->ring, &plain);
    }
    if (result < 0) {
        free(handle);
        *error = -result;
        return NULL;
    }
    return handle;
}

void iotcp_uring_destroy(struct iotcp_uring *handle) {
    if (handle == NULL) return;
    io_uring_queue_exit(&handle->ring);
    free(handle);
}

int iotcp_uring_reserve_buffers(struct iotcp_uring *handle, unsigned count) {
    return io_uring_register_buffers_sparse(&handle->ring, count);
}

int iotcp_uring_register_buffer(struct iotcp_uring *handle, unsigned index, void *base, size_t length) {
    struct iovec vector = {.iov_base = base, .iov_len = length};
    __u64 tag = 0;
    int result = io_uring_register_buffers_update_tag(&handle->ring, index, &vector, &tag, 1);
    return result < 0 ? result : 0;
}

int iotcp_uring_register_eventfd(struct iotcp_uring *handle, int descriptor) {
    return io_uring_register_eventfd(&handle->ring, descriptor);
}

int iotcp_uring_queue_read(struct iotcp_uring *handle, int descriptor, void *buffer, unsigned length, uint64_t offset,
                           int registered_index, int in_background, uint64_t tag) {
    struct io_uring_sqe *entry = io_uring_get_sqe(&handle->ring);
    if (entry == NULL) return -EBUSY;
    if (registered_index >= 0) {
        io_uring_prep_read_fixed(entry, descriptor, buffer, length, offset, registered_index);
    } else {
        io_uring_prep_read(entry, descriptor, buffer, length, offset);
    }
    if (in_background) entry->flags |= IOSQE_ASYNC;
    io_uring_sqe_set_data64(entry, tag);
    return 0;
}

int iotcp_uring_submit(struct iotcp_uring *handle) {
    int result;
    do {
        result = io_uring_submit(&handle->ring);
    } while (result == -EINTR);
    return result;
}

unsigned iotcp_uring_reap(struct iotcp_uring *handle, uint64_t *tags, int32_t *results, unsigned max) {
    struct io_uring_cqe *completions[64];
    unsigned total = 0;
    while (total < max) {
        unsigned want = max - total < 64 ? max - total : 64;
        unsigned count = io_uring_peek_batch_cqe(&handle->ring, completions, want);
        if (count == 0) break;
        for (unsigned index = 0; index < count; index++) {
            tags[total + index] = io_uring_cqe_get_data64(completions[index]);
            results[total + index] = completions[index]->res;
        }
        io_uring_cq_advance(&handle->ring, count);
        total += count;
    }
    return total;
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
