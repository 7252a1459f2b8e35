@testable import AWSParsing
@testable import Host
import Testing

private final class Timer: Timed {
    var deadline: Int64 = .max
    var wheelTick: Int64 = -1
    var fired: [Int64] = []
    func deadlineExpired(now: Int64) { fired.append(now) }
}

/// 100 ms ticks on 8 slots, so horizons and wrap-around are reached with small numbers.
@Suite struct TimerWheelTests {
    private func wheel(now: Int64 = 0) -> TimerWheel<Timer> {
        TimerWheel(resolutionMillis: 100, slotCount: 8, now: now)
    }

    /// Advances one millisecond at a time, the finest a caller can, up to `end`.
    private func step(_ wheel: TimerWheel<Timer>, from start: Int64, to end: Int64) {
        for now in start...end { wheel.advance(to: now) }
    }

    // An entry fires at the first tick boundary after its deadline: never early, at most one
    // resolution late.
    @Test(arguments: [(Int64(1), Int64(100)), (99, 100), (100, 200), (250, 300), (299, 300), (300, 400), (799, 800)])
    func firesAtTheTickAfterTheDeadline(_ deadline: Int64, _ firesAt: Int64) {
        let w = wheel()
        let t = Timer()
        t.deadline = deadline
        w.schedule(t)
        step(w, from: 0, to: firesAt - 1)
        #expect(t.fired.isEmpty)
        w.advance(to: firesAt)
        #expect(t.fired == [firesAt])
        #expect(t.wheelTick == -1)
        step(w, from: firesAt, to: firesAt + 2000)
        #expect(t.fired == [firesAt])
    }

    @Test func deadlineAlreadyPastFiresOnTheNextTick() {
        let w = wheel(now: 1000)
        let t = Timer()
        t.deadline = 500
        w.schedule(t)
        w.advance(to: 1099)
        #expect(t.fired.isEmpty)
        w.advance(to: 1100)
        #expect(t.fired == [1100])
    }

    @Test func oneBigAdvanceFiresOnceWithItsTime() {
        let w = wheel()
        let t = Timer()
        t.deadline = 250
        w.schedule(t)
        w.advance(to: 5000)
        #expect(t.fired == [5000])
    }

    // The keep-alive hot path: the deadline moves out without telling the wheel.
    @Test func movingLaterWithoutRescheduling() {
        let w = wheel()
        let t = Timer()
        t.deadline = 250
        w.schedule(t)
        #expect(t.wheelTick == 3)
        t.deadline = 720
        step(w, from: 0, to: 799)
        #expect(t.fired.isEmpty)
        #expect(t.wheelTick == 8)   // re-filed when tick 3 came round
        w.advance(to: 800)
        #expect(t.fired == [800])
    }

    @Test func movingLaterAndReschedulingKeepsTheEarlierEntry() {
        let w = wheel()
        let t = Timer()
        t.deadline = 250
        w.schedule(t)
        t.deadline = 720
        w.schedule(t)
        #expect(t.wheelTick == 3)
        step(w, from: 0, to: 799)
        #expect(t.fired.isEmpty)
        w.advance(to: 800)
        #expect(t.fired == [800])
    }

    @Test func movingEarlierFilesASecondEntryAndTheFirstGoesStale() {
        let w = wheel()
        let t = Timer()
        t.deadline = 550
        w.schedule(t)
        #expect(t.wheelTick == 6)
        t.deadline = 250
        w.schedule(t)
        #expect(t.wheelTick == 3)
        step(w, from: 0, to: 299)
        #expect(t.fired.isEmpty)
        w.advance(to: 300)
        #expect(t.fired == [300])
        step(w, from: 300, to: 3000)   // past the stale entry's slot, several times round
        #expect(t.fired == [300])
    }

    @Test func maxDeadlineIsNeverFiled() {
        let w = wheel()
        let t = Timer()
        t.deadline = .max
        w.schedule(t)
        #expect(t.wheelTick == -1)
        w.advance(to: 100_000)
        #expect(t.fired.isEmpty)
    }

    // Setting `.max` after scheduling cancels: the entry is dropped when its slot comes round.
    @Test func maxAfterSchedulingCancels() {
        let w = wheel()
        let t = Timer()
        t.deadline = 250
        w.schedule(t)
        t.deadline = .max
        w.advance(to: 300)
        #expect(t.wheelTick == -1)
        w.advance(to: 100_000)
        #expect(t.fired.isEmpty)
    }

    // A deadline past the last slot waits in the farthest one and is re-filed, lap by lap.
    @Test func deadlineBeyondTheHorizon() {
        let w = wheel()
        let t = Timer()
        t.deadline = 2000   // tick 21; the 8 slots reach tick 7
        w.schedule(t)
        #expect(t.wheelTick == 7)
        step(w, from: 0, to: 2099)
        #expect(t.fired.isEmpty)
        w.advance(to: 2100)
        #expect(t.fired == [2100])
    }

    // In one jump the entry fires when its re-filed slot comes round with `now` already past
    // the deadline; jumps that stop short leave it filed for the tick after the deadline.
    @Test func deadlineBeyondTheHorizonInJumps() {
        let w = wheel()
        let t = Timer()
        t.deadline = 2000
        w.schedule(t)
        w.advance(to: 1999)
        w.advance(to: 2099)
        #expect(t.fired.isEmpty)
        w.advance(to: 2100)
        #expect(t.fired == [2100])

        let v = wheel()
        let u = Timer()
        u.deadline = 2000
        v.schedule(u)
        v.advance(to: 2099)
        #expect(u.fired == [2099])
    }

    // A closed connection (deadline `.max`) leaves the wheel at once, so the wheel no longer
    // keeps alive an object its owner freed; entries with a deadline stay and fire.
    @Test func dropUnscheduledLetsGoOfEntriesWithoutADeadline() {
        let w = wheel()
        var closed: Timer? = Timer()
        weak var closedRef = closed
        closed!.deadline = 550
        w.schedule(closed!)
        closed!.deadline = .max
        let live = Timer()
        live.deadline = 550
        w.schedule(live)
        w.dropUnscheduled()
        #expect(closed!.wheelTick == -1)
        closed = nil
        #expect(closedRef == nil)
        step(w, from: 0, to: 600)
        #expect(live.fired == [600])
    }

    // An entry dropped while it had no deadline is filed afresh when it gets one again (a
    // pooled connection reused), even for a tick after the one it was dropped from (which
    // `schedule` would otherwise leave to the dropped entry).
    @Test func aDroppedEntryCanBeScheduledAgain() {
        let w = wheel()
        let t = Timer()
        t.deadline = 550
        w.schedule(t)
        #expect(t.wheelTick == 6)
        t.deadline = .max
        w.dropUnscheduled()
        t.deadline = 650
        w.schedule(t)
        #expect(t.wheelTick == 7)
        step(w, from: 0, to: 699)
        #expect(t.fired.isEmpty)
        w.advance(to: 700)
        #expect(t.fired == [700])
    }

    @Test func manyTimersFireEachAtItsOwnTick() {
        let w = wheel()
        let timers = (0..<40).map { i -> Timer in
            let t = Timer()
            t.deadline = Int64(i) * 37
            w.schedule(t)
            return t
        }
        step(w, from: 0, to: 2000)
        for (i, t) in timers.enumerated() {
            #expect(t.fired == [Int64(i) * 37 / 100 * 100 + 100])
        }
    }
}
