/* The C interface is implemented in Swift (Sources/IOTCPC); this target carries its header. */
