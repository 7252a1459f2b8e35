@testable import AWSParsing
@testable import Host
import Testing

/// Floods of one event (refused connections, files that cannot be opened) are logged at most
/// once a second, each line with the count since the previous one.
@Suite struct LogThrottleTests {
    @Test func firstEventIsLoggedAtOnceThenOncePerSecondWithTheCount() {
        var t = LogThrottle()
        #expect(t.note(now: 5_000) == 1)
        for ms in stride(from: Int64(5_001), to: 6_000, by: 10) { #expect(t.note(now: ms) == nil) }
        #expect(t.due(now: 5_999) == nil)
        // 100 events between the lines, and the one at 6000 that makes the line due.
        #expect(t.note(now: 6_000) == 101)
        #expect(t.due(now: 9_000) == nil)  // nothing new: no line
    }

    @Test func aBurstsTailIsReportedByTheTick() {
        var t = LogThrottle()
        #expect(t.note(now: 0) == 1)
        #expect(t.note(now: 10) == nil)
        #expect(t.note(now: 20) == nil)
        #expect(t.due(now: 500) == nil)
        #expect(t.due(now: 1_000) == 2)
        #expect(t.due(now: 2_500) == nil)
        #expect(t.note(now: 2_600) == 1)  // a second has passed since the last line
    }
}
