import CLinux

/// The plugin request handles that are live now, one word per exchange slot, so any thread can
/// tell a handle that has ended (AWS_E_GONE) from one called on the wrong thread (AWS_E_THREAD)
/// without touching the exchange. Written only by the worker's loop thread (release stores),
/// read from any thread (acquire loads).
struct HandleTable: @unchecked Sendable {
    private let words: UnsafeMutablePointer<UInt64>
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        // Untouched pages of a large table cost address space, not memory.
        words = .allocate(capacity: capacity)
        words.initialize(repeating: 0, count: capacity)
    }

    func deallocate() { words.deallocate() }

    func isLive(_ handle: UInt64, slot: Int) -> Bool {
        slot < capacity && aws_atomic_load_u64(words + slot) == handle
    }

    /// Loop thread only.
    func set(_ handle: UInt64, slot: Int) {
        if slot < capacity { aws_atomic_store_u64(words + slot, handle) }
    }
}
