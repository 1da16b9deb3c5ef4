// The NVMe namespace under a block device, named through libnvme. libnvme's headers stay inside nvme.c, so
// the Swift side sees only this plain interface (its headers, like liburing's, clash with swift-system's).
#pragma once
#include <stddef.h>

struct iotcp_nvme_namespace {
    char model[41];   // as the controller reports it, NUL-terminated, trailing spaces kept
    char serial[21];
    unsigned nsid;
};

// Looks up the block device `name` (a namespace such as "nvme0n1"; partitions are resolved by the caller)
// among the NVMe namespaces libnvme finds in sysfs. Returns 1 and fills `out` when it is one, 0 when it is
// not (or there is no NVMe at all), -1 when the scan itself failed.
int iotcp_nvme_describe(const char *name, struct iotcp_nvme_namespace *out);
