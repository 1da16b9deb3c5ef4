// io_uring file reads behind an opaque handle. liburing's header stays inside uring.c: its io_uring
// structures and swift-system's (from <linux/io_uring.h>) cannot both be seen by one Swift module.
#pragma once
#include <stdint.h>

struct iotcp_uring;

// A ring of `entries` submission slots; NULL with *error set to an errno value when the kernel refuses.
struct iotcp_uring *iotcp_uring_create(unsigned entries, int *error);

// Reads up to `length` bytes of `descriptor` at `offset` into `buffer` through the ring and waits for the
// completion: the count read (0 at the end of the file) or a negative errno value.
long iotcp_uring_read(struct iotcp_uring *ring, int descriptor, void *buffer, unsigned length, uint64_t offset);

void iotcp_uring_destroy(struct iotcp_uring *ring);
