import IOTCPEmbedded

/// The NIC stack's counters as `name=value` pairs, in the order an operator reads them: the wire, the host's
/// commands, the disk, the store, the NIC delay it reported. iotcp-nic logs them (every --stats-interval, on
/// SIGUSR1, at exit); the embedded file server prints them when it stops.
public enum NICReport {
    public static func fields(_ runtime: NICRuntime) -> [(String, String)] {
        let wire = runtime.counters, plane = runtime.dataPlane.counters, channel = runtime.channelStatistics
        let dataPlane = runtime.dataPlane
        let meanDelay = plane.echoes > 0 ? plane.echoDelayTotal / UInt64(plane.echoes) : 0
        var fields: [(String, String)] = [
            ("frames-in", "\(wire.framesIn)"), ("frames-out", "\(wire.framesOut)"), ("bytes-in", "\(wire.bytesIn)"),
            ("bytes-out", "\(wire.bytesOut)"), ("super-segments-out", "\(wire.superSegmentsOut)"),
            ("drops", "\(runtime.link.framesDropped + runtime.inbound.dropped + runtime.outbound.dropped)"),
            ("malformed-in", "\(plane.malformedIn)"), ("fragments-in", "\(plane.fragmentsIn)"),
            ("neighbours", "\(runtime.link.neighbourCount)"), ("neighbours-evicted", "\(runtime.link.neighboursEvicted)"),
            ("off-link-drops", "\(runtime.link.offLinkDrops)"), ("arp-requests-limited", "\(runtime.link.arpRequestsLimited)"),
            ("neighbour-solicitations", "\(runtime.link.neighborSolicitationsSent)"),
            ("neighbour-advertisements", "\(runtime.link.neighborAdvertisementsSent)"), ("ipv6-dropped", "\(runtime.link.ipv6Dropped)"),
            ("icmpv6-errors", "\(runtime.link.icmpv6ErrorsSent)"), ("icmpv6-errors-limited", "\(runtime.link.icmpv6ErrorsLimited)"),
            ("dropped-packets-in", "\(channel.droppedPackets)"),
            ("wire-refusals", "\(plane.wireRefusals)"), ("wire-errors", "\(wire.wireErrors)"),
            ("commands-in", "\(wire.commandsIn)"), ("malformed-commands", "\(wire.malformedCommands)"),
            ("messages-out", "\(channel.messages)"), ("commands-out", "\(channel.commands)"), ("held-messages", "\(channel.heldMessages)"),
            ("segments-out", "\(plane.packetsOut)"), ("errors", "\(plane.errors)"),
            ("disk", dataPlane.disk.name), ("reads", "\(plane.reads)"), ("read-bytes", "\(plane.readBytes)"),
            ("read-failures", "\(plane.readFailures)"), ("max-reads-in-flight", "\(plane.maximumReadsInFlight)"),
            ("buffer-waits", "\(plane.bufferWaits)"), ("buffer-memory", "\(dataPlane.pool.allocatedBytes)"),
            ("payload-bytes-copied", "\(plane.payloadBytesCopied)"),
            ("echoes", "\(plane.echoes)"), ("echo-delay-mean-us", "\(meanDelay / 1000)"),
            ("echo-delay-max-us", "\(plane.echoDelayMaximum / 1000)"),
            ("deferred-packets", "\(plane.deferredPackets)"), ("deferred-drops", "\(plane.deferredDrops)"),
            ("retransmitted-bytes", "\(plane.retransmittedBytes)"),
            ("store-bytes", "\(dataPlane.store.heldBytes)"), ("store-buffered-bytes", "\(dataPlane.store.bufferedBytes)"),
            ("store-spills", "\(plane.storeSpills)"), ("open-files", "\(dataPlane.files.openCount)"),
            ("flows", "\(dataPlane.flowCount)"), ("queued-bytes", "\(dataPlane.queuedByteCount)"),
            ("chunks", "\(dataPlane.chunksInUse)"), ("buffers-in-use", "\(dataPlane.pool.inUse)"),
            ("mapped-chunks", "\(plane.mappedChunks)"), ("mapped-bytes", "\(plane.mappedBytes)"),
            ("tls-keyed", "\(plane.tlsFlows)"), ("records-sealed", "\(plane.recordsSealed)"), ("sealed-bytes", "\(plane.sealedBytes)"),
            ("timestamps-held-back", "\(plane.timestampsHeldBack)"), ("changed-file-reseals", "\(plane.changedFileReseals)"),
            ("listening-ports", "\(dataPlane.listenerCount)"), ("syn-cookies-sent", "\(plane.synCookiesSent)"),
            ("handshakes-completed", "\(plane.handshakesCompleted)"), ("cookies-rejected", "\(plane.cookiesRejected)"),
            ("accepts-deferred", "\(plane.acceptsDeferred)"), ("deferred-accepts-out-of-order", "\(plane.deferredAcceptsOutOfOrder)"),
            ("deferrals-refused", "\(plane.deferralsRefused)"),
            ("teardowns", "\(plane.teardowns)"), ("closing-now", "\(dataPlane.closingCount)"), ("fins-sent", "\(plane.finsSent)"),
            ("fin-retransmissions", "\(plane.finRetransmissions)"), ("endings-finished", "\(plane.closingFinished)"),
            ("endings-abandoned", "\(plane.closingAbandoned)"), ("endings-reset", "\(plane.closingReset)"),
            ("time-wait-reused", "\(plane.timeWaitReused)"), ("teardown-overflows", "\(plane.teardownOverflows)"),
            ("endings-with-data", "\(plane.endingsWithData)"), ("ending-data-acknowledged", "\(plane.endingDataAcknowledged)"),
            ("ending-data-resends", "\(plane.endingDataResends)"), ("flows-released", "\(plane.flowsReleased)"),
            ("splices-started", "\(plane.splices)"), ("splices-now", "\(dataPlane.spliceCount)"),
            ("splice-refusals", "\(plane.spliceRefusals)"), ("splice-segments", "\(plane.splicedSegments)"),
            ("splice-payload", "\(plane.splicedBytes)"), ("splice-drops", "\(plane.spliceDrops)"),
            ("splice-queue-drops", "\(plane.spliceQueueDrops)"),
            ("splices-finished", "\(plane.splicesFinished)"), ("splices-reset", "\(plane.splicesReset)"),
            ("splice-idle-resets", "\(plane.spliceIdleResets)"), ("splice-head-resends", "\(plane.spliceHeadResends)"),
            ("super-segments-relayed", "\(plane.superSegmentsRelayed)"), ("super-segments-cut", "\(plane.superSegmentsCut)"),
            ("relayed-segments-joined", "\(plane.relayedSegmentsJoined)"), ("acks-thinned", "\(plane.acknowledgmentsThinned)"),
        ]
        if let table = dataPlane.files as? FileTable, table.directIO {
            fields.append(("direct-fallbacks", "\(table.directFallbacks)"))
        }
        return fields
    }

    /// The same as one line: `name=value name=value ...`.
    public static func line(_ runtime: NICRuntime) -> String {
        fields(runtime).map { "\($0.0)=\($0.1)" }.joined(separator: " ")
    }
}
