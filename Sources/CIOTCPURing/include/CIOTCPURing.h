// io_uring behind an opaque handle. liburing's header stays inside uring.c: its io_uring structures and
// swift-system's (from <linux/io_uring.h>) cannot both be seen by one Swift module.
#pragma once
#include <stddef.h>
#include <stdint.h>

struct iotcp_uring;

// A ring of `entries` submission slots (completion queue twice that); NULL with *error set to an errno value
// when the kernel refuses. The calling thread should be the ring's only submitter.
struct iotcp_uring *iotcp_uring_create(unsigned entries, int *error);

void iotcp_uring_destroy(struct iotcp_uring *ring);

// Makes room for `count` registered buffers (a sparse table filled by iotcp_uring_register_buffer).
// 0, or a negative errno value (old kernels, RLIMIT_MEMLOCK): reads then go without registered buffers.
int iotcp_uring_reserve_buffers(struct iotcp_uring *ring, unsigned count);

// Registers `length` bytes at `base` as registered buffer `index` (pinned for the ring's life).
int iotcp_uring_register_buffer(struct iotcp_uring *ring, unsigned index, void *base, size_t length);

// Has the kernel signal `descriptor` (an eventfd) whenever completions are posted.
int iotcp_uring_register_eventfd(struct iotcp_uring *ring, int descriptor);

// Queues a read of `length` bytes of `descriptor` at `offset` into `buffer`, tagged `tag`; with
// `registered_index` >= 0, `buffer` lies inside that registered buffer. With `in_background`, the kernel
// runs it on its own worker threads from the start (IOSQE_ASYNC) instead of trying it inline first: for
// reads known to miss the page cache, whose page allocation and reclaim would otherwise stall the caller.
// Nothing reaches the kernel until iotcp_uring_submit. 0, or -EBUSY when every submission slot is taken.
int iotcp_uring_queue_read(struct iotcp_uring *ring, int descriptor, void *buffer, unsigned length, uint64_t offset,
                           int registered_index, int in_background, uint64_t tag);

// Hands every queued read to the kernel in one system call: how many, or a negative errno value.
int iotcp_uring_submit(struct iotcp_uring *ring);

// Takes up to `max` completions without waiting: their tags and results (bytes, or a negative errno value).
unsigned iotcp_uring_reap(struct iotcp_uring *ring, uint64_t *tags, int32_t *results, unsigned max);

// Reads up to `length` bytes of `descriptor` at `offset` into `buffer` and waits for the completion: the count
// read (0 at the end of the file) or a negative errno value. For a ring used synchronously only.
long iotcp_uring_read(struct iotcp_uring *ring, int descriptor, void *buffer, unsigned length, uint64_t offset);
