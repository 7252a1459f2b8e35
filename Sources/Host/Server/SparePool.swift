/// How many objects of a free list the load did not need lately: the fewest the list held in
/// each of the last two trim intervals (a second each, `Worker.trimPools`). An object is given
/// back only after two whole intervals unused — like the victim cache of Go's sync.Pool — so a
/// load that peaks a little higher every other second keeps its objects instead of freeing and
/// making them again, while the memory a burst took is back two to three seconds after it ends.
struct IdleCount {
    /// The fewest free objects since the last trim.
    private var current = 0
    /// The fewest in the interval before it, less what the last trim removed.
    private var previous = 0

    /// Call after taking an object off the list, with how many are left on it.
    @inline(__always)
    mutating func taken(leaving remaining: Int) {
        if remaining < current { current = remaining }
    }

    /// At a trim: how many of the `count` free objects can go, leaving at least `keep`; the
    /// caller removes that many, and a new interval starts.
    mutating func trim(count: Int, keeping keep: Int) -> Int {
        let idle = max(0, min(previous, current, count - keep))
        previous = current - idle
        current = count - idle
        return idle
    }
}

/// A worker's free list of reusable objects that gives back what the load does not use (see
/// `IdleCount`). Taking and giving cost an array's pop and append, and one comparison.
struct SparePool<Item: AnyObject> {
    private var items: [Item] = []
    private var idle = IdleCount()

    var count: Int { items.count }

    mutating func take() -> Item? {
        guard let item = items.popLast() else { return nil }
        idle.taken(leaving: items.count)
        return item
    }

    mutating func give(_ item: Item) { items.append(item) }

    /// Removes and returns the objects the load did not need lately, leaving at least `keep`;
    /// taken from the top (the last given), the bottom ones stay.
    mutating func trim(keeping keep: Int) -> [Item] {
        let n = idle.trim(count: items.count, keeping: keep)
        guard n > 0 else { return [] }
        defer { items.removeLast(n) }
        return Array(items.suffix(n))
    }
}
