// The NIC half of the stack: wire backends, the offloaded file table, disk readers, the segment
// builder and the retransmit store.
@_exported import IOTCPCommon
