// The platform module brings the core with it: `import IOTCPNIC` is all a NIC program needs.
@_exported import IOTCPNICCore
