@testable import AWSParsing
@testable import Host
import Testing

@Suite struct EntityTagsTests {
    let etag = Array("\"1a-2b-3c\"".utf8)

    private func contains(_ list: String, weak: Bool) -> Bool {
        let result = EntityTags.list(embedded(list), contains: etag, weak: weak)
        #expect(EntityTags.list(bytes(list), contains: etag, weak: weak) == result)
        return result
    }

    @Test(arguments: [
        "\"1a-2b-3c\"",
        "\"x\", \"1a-2b-3c\"",
        "\"x\",\"1a-2b-3c\",\"y\"",
        " ,\t\"1a-2b-3c\" , ",
        "*",
        "\"x\", *",
    ])
    func strongMatch(_ list: String) {
        #expect(contains(list, weak: false))
        #expect(contains(list, weak: true))
    }

    @Test(arguments: ["W/\"1a-2b-3c\"", "\"x\", W/\"1a-2b-3c\""])
    func weakTagMatchesOnlyWeakly(_ list: String) {
        #expect(!contains(list, weak: false))
        #expect(contains(list, weak: true))
    }

    @Test(arguments: [
        "", " , ", "\"x\"", "\"1a-2b-3C\"", "\"1a-2b-3c", "1a-2b-3c",
        "w/\"1a-2b-3c\"",   // the W/ prefix is case-sensitive (RFC 9110 §8.8.3)
        "W/ \"1a-2b-3c\"", "\"\"", "W/",
    ])
    func noMatch(_ list: String) {
        #expect(!contains(list, weak: false))
        #expect(!contains(list, weak: true))
    }

    @Test func quotedCommaStaysInsideTheTag() {
        let tag = Array("\"a,b\"".utf8)
        #expect(EntityTags.list(bytes("\"x\", \"a,b\""), contains: tag, weak: false))
        #expect(!EntityTags.list(bytes("\"a\", \"b\""), contains: tag, weak: false))
    }

    // The parser does not insist on a separator after a tag: what follows a closing quote starts
    // the next token, so a tag with junk glued on still matches, a "*" glued to a tag reads as
    // "any", and so does a "*" at the start of any token.
    @Test(arguments: ["\"1a-2b-3c\"x", "\"x\"*", "*junk"])
    func starAnywhereAtATokenStart(_ list: String) {
        #expect(contains(list, weak: false))
    }
}
