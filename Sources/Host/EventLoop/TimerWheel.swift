/// Something with a deadline: a connection waiting for headers, a body, the peer to read, or
/// its next request.
protocol Timed: AnyObject {
    /// Absolute monotonic milliseconds; `Int64.max` means no deadline.
    var deadline: Int64 { get }
    /// Bookkeeping for the wheel: the tick whose slot holds this object's live entry, or -1.
    var wheelTick: Int64 { get set }
    func deadlineExpired(now: Int64)
}

/// A hashed timer wheel with lazy rescheduling: moving a deadline later costs nothing (the entry
/// is re-filed when its slot comes round), moving it earlier files a second entry and the first
/// becomes stale. So the hot path — a keep-alive request pushing its idle deadline out — never
/// touches the wheel, and no timer needs a thread or a syscall of its own.
final class TimerWheel<Entry: Timed> {
    private var slots: [[Entry]]
    private var spare: [Entry] = []
    private let resolution: Int64
    private var processedTick: Int64

    init(resolutionMillis: Int64, slotCount: Int = 1024, now: Int64) {
        resolution = resolutionMillis
        slots = Array(repeating: [], count: slotCount)
        processedTick = now / resolutionMillis
    }

    /// Call after setting `entry.deadline`.
    func schedule(_ entry: Entry) {
        guard entry.deadline != .max else { return }
        let tick = max(entry.deadline / resolution + 1, processedTick + 1)
        if entry.wheelTick >= 0 && entry.wheelTick <= tick { return }  // an earlier entry will re-file it
        file(entry, at: tick)
    }

    private func file(_ entry: Entry, at tick: Int64) {
        let horizon = processedTick + Int64(slots.count) - 1
        let t = min(tick, horizon)
        entry.wheelTick = t
        slots[Int(t % Int64(slots.count))].append(entry)
    }

    /// Drops the entries of objects that have no deadline any more (a closed connection): the
    /// wheel would otherwise hold them until their slot comes round, up to the longest timeout
    /// later, and an object its owner let go of would live that long. Walks every slot: for the
    /// owner's occasional clean-up after a burst, not the hot path.
    func dropUnscheduled() {
        for i in slots.indices where slots[i].contains(where: { $0.deadline == .max }) {
            slots[i].removeAll { entry in
                guard entry.deadline == .max else { return false }
                entry.wheelTick = -1
                return true
            }
        }
    }

    /// Fires every entry whose deadline has passed by `now`.
    func advance(to now: Int64) {
        let target = now / resolution
        while processedTick < target {
            processedTick += 1
            let index = Int(processedTick % Int64(slots.count))
            swap(&slots[index], &spare)
            for entry in spare where entry.wheelTick == processedTick {
                entry.wheelTick = -1
                if entry.deadline <= now {
                    entry.deadlineExpired(now: now)
                } else if entry.deadline != .max {
                    file(entry, at: entry.deadline / resolution + 1)
                }
            }
            spare.removeAll(keepingCapacity: true)
        }
    }
}
