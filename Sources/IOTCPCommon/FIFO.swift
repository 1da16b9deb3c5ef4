/// A queue that pops from the front and pushes at the back in O(1) (amortized), indexed from 0 at its
/// front: the data plane's per-flow queues and turn orders, the host's accept queues. An array and a head
/// index, compacted once half of it is spent, so a steady queue reuses its storage and allocates nothing.
///
/// Here rather than from swift-collections' Deque so that the protocol cores keep to the standard library
/// and compile on their own: the fuzz targets build them with plain swiftc.
///
/// Inlinable, so other modules get it specialized for their element: unspecialized, each `popFirst` from the
/// NIC's turn queues went through generic metadata and witness tables, 1.8% of the NIC thread under short
/// connections (`perf record`).
public struct FIFO<Element>: RandomAccessCollection, MutableCollection {
    @usableFromInline var storage: [Element] = []
    @usableFromInline var head = 0

    @inlinable public init() {}

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { storage.count - head }

    @inlinable public subscript(position: Int) -> Element {
        get { storage[head + position] }
        set { storage[head + position] = newValue }
    }

    @inlinable public mutating func append(_ element: Element) { storage.append(element) }

    @inlinable public mutating func append<S: Sequence>(contentsOf elements: S) where S.Element == Element { storage.append(contentsOf: elements) }

    /// Puts `element` at the front.
    @inlinable public mutating func prepend(_ element: Element) {
        if head > 0 {
            head -= 1
            storage[head] = element
        } else {
            storage.insert(element, at: 0)
        }
    }

    /// Inserts `element` at `position` from the front (O(n)).
    @inlinable public mutating func insert(_ element: Element, at position: Int) {
        precondition(position >= 0 && position <= count, "FIFO insert at \(position) of \(count)")
        if position == 0 { prepend(element) } else { storage.insert(element, at: head + position) }
    }

    @inlinable public mutating func popFirst() -> Element? {
        guard head < storage.count else { return nil }
        let element = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    @discardableResult
    @inlinable public mutating func removeFirst() -> Element {
        guard let element = popFirst() else { preconditionFailure("removeFirst on an empty FIFO") }
        return element
    }

    @inlinable public mutating func removeAll(keepingCapacity: Bool = false) {
        storage.removeAll(keepingCapacity: keepingCapacity)
        head = 0
    }
}
