#include "CIOTCPNVMe.h"

#include <libnvme.h>
#include <string.h>

static void copy_field(char *to, size_t size, const char *from) {
    if (from == NULL) from = "";
    strncpy(to, from, size - 1);
    to[size - 1] = 0;
}

static int matches(nvme_ns_t ns, const char *name, struct iotcp_nvme_namespace *out) {
    const char *ns_name = nvme_ns_get_name(ns);
    if (ns_name == NULL || strcmp(ns_name, name) != 0) return 0;
    copy_field(out->model, sizeof out->model, nvme_ns_get_model(ns));
    copy_field(out->serial, sizeof out->serial, nvme_ns_get_serial(ns));
    out->nsid = (unsigned)nvme_ns_get_nsid(ns);
    return 1;
}

int iotcp_nvme_describe(const char *name, struct iotcp_nvme_namespace *out) {
    if (strncmp(name, "nvme", 4) != 0) return 0;
    nvme_root_t root = nvme_scan(NULL);
    if (root == NULL) return -1;
    int found = 0;
    for (nvme_host_t host = nvme_first_host(root); host != NULL && !found; host = nvme_next_host(root, host)) {
        for (nvme_subsystem_t sub = nvme_first_subsystem(host); sub != NULL && !found; sub = nvme_next_subsystem(host, sub)) {
            // Namespaces hang off the subsystem (multipath) or off each controller.
            for (nvme_ns_t ns = nvme_subsystem_first_ns(sub); ns != NULL && !found; ns = nvme_subsystem_next_ns(sub, ns))
                found = matches(ns, name, out);
            for (nvme_ctrl_t ctrl = nvme_subsystem_first_ctrl(sub); ctrl != NULL && !found; ctrl = nvme_subsystem_next_ctrl(sub, ctrl))
                for (nvme_ns_t ns = nvme_ctrl_first_ns(ctrl); ns != NULL && !found; ns = nvme_ctrl_next_ns(ctrl, ns))
                    found = matches(ns, name, out);
        }
    }
    nvme_free_tree(root);
    return found;
}
