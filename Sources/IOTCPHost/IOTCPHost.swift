// The host half of the stack: the TCP control plane, the socket and offload API, the event queue.
// Built on the command protocol of IOTCPCommon; it holds no wire or disk I/O of its own.
@_exported import IOTCPCommon
