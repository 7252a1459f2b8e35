@testable import Host
import Testing

private final class Item {
    let id: Int
    init(_ id: Int) { self.id = id }
}

/// The worker's pools (AIO buffers, exchanges, connections) give back what the load has not
/// needed for two whole trim intervals, and keep what it uses (issue 10, defect 8).
@Suite struct SparePoolTests {
    @Test func aBurstIsGivenBackAfterTwoIdleIntervals() {
        var idle = IdleCount()
        // The burst: 100 objects out at once, then all back, within the first interval.
        for left in stride(from: 99, through: 0, by: -1) { idle.taken(leaving: left) }
        #expect(idle.trim(count: 100, keeping: 0) == 0)   // the burst's own interval
        #expect(idle.trim(count: 100, keeping: 0) == 0)   // one idle interval
        #expect(idle.trim(count: 100, keeping: 0) == 100) // two
        #expect(idle.trim(count: 0, keeping: 0) == 0)
    }

    @Test func keepsWhatASteadyLoadUses() {
        var idle = IdleCount()
        var count = 10
        var given = 0
        for _ in 0..<6 {
            // Each interval the load takes up to 6 at once and gives them back.
            idle.taken(leaving: count - 6)
            let n = idle.trim(count: count, keeping: 0)
            count -= n
            given += n
        }
        #expect(given == 4)
        #expect(count == 6)
    }

    // A load that needs 10 every other second and 2 in between keeps its 10: nothing is freed
    // only to be made again a second later.
    @Test func keepsWhatALoadNeedsEveryOtherInterval() {
        var idle = IdleCount()
        for round in 0..<10 {
            idle.taken(leaving: round % 2 == 0 ? 0 : 8)
            #expect(idle.trim(count: 10, keeping: 0) == 0)
        }
    }

    @Test func leavesTheWarmOnes() {
        var idle = IdleCount()
        #expect(idle.trim(count: 100, keeping: 64) == 0)
        #expect(idle.trim(count: 100, keeping: 64) == 0)
        #expect(idle.trim(count: 100, keeping: 64) == 36)
        #expect(idle.trim(count: 64, keeping: 64) == 0)
        #expect(idle.trim(count: 64, keeping: 64) == 0)
    }

    @Test func poolTakesLastGivenAndTrimsFromTheTop() {
        var pool = SparePool<Item>()
        #expect(pool.take() == nil)
        for i in 0..<5 { pool.give(Item(i)) }
        #expect(pool.trim(keeping: 0).isEmpty)   // the interval they came back in
        #expect(pool.trim(keeping: 0).isEmpty)   // one idle interval
        // In the next one the load takes one and gives it back: 4 went unused in both.
        let item = pool.take()
        #expect(item?.id == 4)
        pool.give(item!)
        #expect(pool.trim(keeping: 0).map(\.id) == [1, 2, 3, 4])
        #expect(pool.count == 1)
        #expect(pool.take()?.id == 0)
    }

    @Test func trimmedObjectsAreReleased() {
        var pool = SparePool<Item>()
        weak var top: Item?
        do {
            let item = Item(1)
            top = item
            pool.give(Item(0))
            pool.give(item)
        }
        _ = pool.trim(keeping: 0)
        _ = pool.trim(keeping: 0)
        #expect(top != nil)
        #expect(pool.trim(keeping: 1).count == 1)
        #expect(top == nil)
        #expect(pool.count == 1)
    }
}
