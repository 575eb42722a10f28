import Foundation
import XCTest
@testable import Sift

/// A byte-level stand-in tokenizer: one token per UTF-8 byte.
struct ByteTokenizer: EvalTokenizer {
    func evalEncode(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }
    func evalDecode(_ ids: [Int32]) -> String { String(decoding: ids.map { UInt8($0) }, as: UTF8.self) }
    func endsSentence(_ id: Int32) -> Bool { id == Int32(UInt8(ascii: ".")) }
}

/// The fake chat frame: every text part of the sample plus 12 tokens of turn markers.
func fakeOverhead(_ s: EvalSample) -> Int {
    (s.system ?? "").utf8.count + s.userBefore.utf8.count + s.userAfter.utf8.count
        + (s.question ?? "").utf8.count + s.answerPrefix.utf8.count + 12
}

func count(_ needle: String, in hay: String) -> Int {
    var n = 0
    var rest = hay[...]
    while let r = rest.range(of: needle) { n += 1; rest = rest[r.upperBound...] }
    return n
}

/// Random essays of sentences of 4–14 random lowercase words (fresh per test run).
func randomEssays(count: Int = 4, sentences: Int = 200) -> [String] {
    var g = SystemRandomNumberGenerator()
    return (0..<count).map { _ in
        (0..<sentences).map { _ in
            (0..<Int.random(in: 4...14, using: &g)).map { _ in
                String((0..<Int.random(in: 2...8, using: &g)).map { _ in "abcdefghijklmnopqrstuvwxyz".randomElement(using: &g)! })
            }.joined(separator: " ") + "."
        }.joined(separator: " ")
    }
}

final class EvalGeneratorTests: XCTestCase {
    let tok = ByteTokenizer()

    func testNeedleLengthDepthOnceAndDeterminism() throws {
        let essays = randomEssays()
        let task = try NeedleHaystack(tokenizer: tok, essays: essays, maxLength: 20_000)
        let maxNew = 32
        for length in [600, 2000, 9000, 20_000] {
            for depth in [0.0, 10, 25, 50, 77, 100] {
                let s = try task.sample(length: length, depth: depth, maxNew: maxNew, overhead: fakeOverhead)
                // Exact length: frame + context + answer tokens.
                XCTAssertEqual(fakeOverhead(s) + s.context.count + maxNew, length)
                let text = tok.evalDecode(s.context)
                XCTAssertEqual(count(NeedleHaystack.defaultNeedle, in: text), 1, "needle once at \(length)/\(depth)")
                let at = text.utf8.count - text.range(of: NeedleHaystack.defaultNeedle)!.lowerBound.utf16Offset(in: text)
                let start = text.utf8.count - at
                let hay = s.context.count - NeedleHaystack.defaultNeedle.utf8.count
                // At a sentence boundary, at most one sentence before the requested depth.
                if depth == 100 {
                    XCTAssertEqual(start, hay)
                } else {
                    let target = Int(Double(hay) * depth / 100)
                    XCTAssertLessThanOrEqual(start, target)
                    XCTAssertLessThan(target - start, 130, "more than a sentence early")
                    if start > 0 { XCTAssertEqual(Array(text.utf8)[start - 1], UInt8(ascii: ".")) }
                }
                let again = try task.sample(length: length, depth: depth, maxNew: maxNew, overhead: fakeOverhead)
                XCTAssertEqual(again.context, s.context)
            }
        }
        XCTAssertThrowsError(try task.sample(length: 100, depth: 50, maxNew: maxNew, overhead: fakeOverhead))
        XCTAssertThrowsError(try NeedleHaystack(tokenizer: tok, essays: [], maxLength: 100))
    }

    func testKeyValueRetrieval() throws {
        let task = KeyValueRetrieval(tokenizer: tok)
        for length in [1000, 4000, 16_000] {
            for depth in [0.0, 25, 50, 75, 100] {
                let s = try task.sample(length: length, depth: depth, seed: 7, maxNew: 40, overhead: fakeOverhead)
                let total = fakeOverhead(s) + s.context.count + 40
                XCTAssertLessThanOrEqual(total, length)
                XCTAssertGreaterThan(total, length - 90, "short by more than one pair")
                let json = tok.evalDecode(s.context)
                let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: String])
                let value = s.expected[0]
                let key = try XCTUnwrap(obj.first { $0.value == value }?.key)
                XCTAssertTrue(s.userAfter.contains("\"\(key)\""))
                XCTAssertEqual(count(value, in: json + s.userAfter), 1)
                XCTAssertEqual(count(key, in: json), 1)
                // Position of the asked pair among the pairs ≈ depth.
                let keys = json.split(separator: "\n").map { String($0.drop { $0 == "{" || $0 == " " }.prefix(38)) }
                let index = try XCTUnwrap(keys.firstIndex { $0 == "\"\(key)\"" })
                XCTAssertEqual(Double(index), Double(keys.count - 1) * depth / 100, accuracy: 1)
                let again = try task.sample(length: length, depth: depth, seed: 7, maxNew: 40, overhead: fakeOverhead)
                XCTAssertEqual(again.context, s.context)
                let other = try task.sample(length: length, depth: depth, seed: 8, maxNew: 40, overhead: fakeOverhead)
                XCTAssertNotEqual(other.expected, s.expected)
                // --samples: index 0 is the sample above, later ones differ.
                let zero = try task.sample(length: length, depth: depth, seed: 7, index: 0, maxNew: 40, overhead: fakeOverhead)
                XCTAssertEqual(zero.context, s.context)
                let next = try task.sample(length: length, depth: depth, seed: 7, index: 1, maxNew: 40, overhead: fakeOverhead)
                XCTAssertNotEqual(next.expected, s.expected)
                XCTAssertNotEqual(next.context, s.context)
                // The teacher-forced answer: the value, after an opening that names the key.
                XCTAssertEqual(s.forcedAnswer, value)
                XCTAssertTrue(s.forcedPrefix.contains("\"\(key)\"") && s.forcedPrefix.hasSuffix("is \""), s.forcedPrefix)
            }
        }
    }

    func testRulerTasks() throws {
        let essays = tok.evalEncode(randomEssays().joined())
        let ruler = RulerTasks(tokenizer: tok, essays: essays)
        for task in RulerTasks.names {
            for length in [1500, 6000] {
                let maxNew = 64
                let s = try ruler.sample(task: task, length: length, index: 3, seed: 11, maxNew: maxNew, overhead: fakeOverhead)
                let total = fakeOverhead(s) + s.context.count + maxNew
                XCTAssertLessThanOrEqual(total, length, task)
                XCTAssertGreaterThan(total, length - 64, "\(task) \(length): \(total)")
                let text = tok.evalDecode(s.context)
                XCTAssertFalse(s.expected.isEmpty)
                let again = try ruler.sample(task: task, length: length, index: 3, seed: 11, maxNew: maxNew, overhead: fakeOverhead)
                XCTAssertEqual(again.context, s.context, task)
                XCTAssertEqual(again.expected, s.expected, task)
                let words = text.split { $0 == " " || $0 == "." }.map(String.init)
                switch task {
                case "vt":
                    XCTAssertEqual(s.expected.count, 5)
                    var last = text.startIndex
                    for (i, name) in s.expected.enumerated() {
                        let stmt = i == 0 ? "VAR \(name) = " : "VAR \(name) = VAR \(s.expected[i - 1])."
                        XCTAssertEqual(count(stmt, in: text), 1, stmt)
                        let r = try XCTUnwrap(text.range(of: stmt))
                        XCTAssertGreaterThanOrEqual(r.lowerBound, last, "chain out of order")
                        last = r.lowerBound
                    }
                case "cwe":
                    XCTAssertEqual(s.expected.count, 10)
                    var freq: [String: Int] = [:]
                    for w in words where w.first!.isLetter { freq[w, default: 0] += 1 }
                    let minCommon = s.expected.map { freq[$0] ?? 0 }.min()!
                    let maxOther = freq.filter { !s.expected.contains($0.key) }.map(\.value).max() ?? 0
                    XCTAssertGreaterThan(minCommon, maxOther)
                case "fwe":
                    var freq: [String: Int] = [:]
                    for w in words where !w.isEmpty { freq[w, default: 0] += 1 }
                    let top = s.expected.map { freq[$0] ?? 0 }
                    XCTAssertEqual(top, top.sorted(by: >))
                    XCTAssertGreaterThan(top.min()!, freq.filter { !s.expected.contains($0.key) }.map(\.value).max() ?? 0)
                default:
                    // Needle tasks: each expected value exactly once in the context.
                    for v in s.expected { XCTAssertEqual(count(v, in: text), 1, "\(task): \(v)") }
                    XCTAssertEqual(s.expected.count, task == "niah_multivalue" || task == "niah_multiquery" ? 4 : 1)
                }
            }
        }
        XCTAssertThrowsError(try ruler.sample(task: "nope", length: 1000, index: 0, seed: 0, maxNew: 8, overhead: fakeOverhead))
    }

    /// The real path: Gemma's tokenizer and chat format give a prompt of exactly the length.
    func testNeedlePromptWithGemmaTokenizer() throws {
        let file = try GGUFFile(path: TestModels.path("gemma3-270m"))
        let tokenizer = try Tokenizer(gguf: file)
        let format = EvalPromptFormat(tokenizer: tokenizer, template: try ChatTemplate(gguf: file))
        let task = try NeedleHaystack(tokenizer: tokenizer, essays: randomEssays(), maxLength: 4096)
        let s = try task.sample(length: 2048, depth: 40, maxNew: 32, overhead: format.overhead)
        let prompt = format.tokens(s)
        XCTAssertEqual(prompt.count + 32, 2048)
        let text = tokenizer.decode(prompt)
        XCTAssertTrue(text.hasPrefix("<bos><start_of_turn>user\nYou are a helpful AI bot"), String(text.prefix(80)))
        XCTAssertTrue(text.hasSuffix("What is the best thing to do in San Francisco? Don't give information outside the document or repeat your findings<end_of_turn>\n<start_of_turn>model\n"))
        XCTAssertEqual(count("eat a sandwich and sit in Dolores Park", in: text), 1)
    }
}

final class EvalScorerTests: XCTestCase {
    func testNeedleScorerAcceptsVariedWording() throws {
        let s = try NeedleScorer(answer: NeedleHaystack.defaultAnswer, question: NeedleHaystack.defaultQuestion)
        for ok in ["Eat a sandwich and sit in Dolores Park on a sunny day.",
                   "The best thing to do in San Francisco is to eat sandwiches in Dolores Park.",
                   "Sit in Dolores Park on a sunny day and eat a sandwich",
                   "**Eating a Sandwich at DOLORES PARK**",
                   "eat a sandwich while sitting in dolores park's lawn",
                   "Grab a sandwich, and don't forget to sit in Dolores Park."] {
            XCTAssertTrue(s.accepts(ok), ok)
        }
    }

    func testNeedleScorerRejectsNearMisses() throws {
        let s = try NeedleScorer(answer: NeedleHaystack.defaultAnswer, question: NeedleHaystack.defaultQuestion)
        for bad in ["Eat a burrito and sit in Dolores Park on a sunny day.",
                    "Eat a sandwich and sit in Golden Gate Park on a sunny day.",
                    "Eat a sandwich on Dolores Street.",
                    "Dolores Park",
                    "Do not eat a sandwich in Dolores Park.",
                    "Never a sandwich in Dolores Park",
                    "sandwich park dolores",
                    "The document does not mention it.",
                    ""] {
            XCTAssertFalse(s.accepts(bad), bad)
        }
    }

    func testScorerWithoutBracketsAndAlternatives() throws {
        let s = try NeedleScorer(answer: "The secret ingredient is saffron and smoked paprika.", question: "What is the secret ingredient?")
        XCTAssertEqual(s.terms.map { $0[0] }, [["saffron"], ["smoked"], ["paprika"]])
        XCTAssertTrue(s.accepts("Saffron and smoked paprika"))
        XCTAssertFalse(s.accepts("Saffron and sweet paprika"))
        let alt = try NeedleScorer(answer: "[Paris|the French capital]")
        XCTAssertTrue(alt.accepts("It's the French capital."))
        XCTAssertTrue(alt.accepts("paris"))
        XCTAssertFalse(alt.accepts("the capital"))
        XCTAssertThrowsError(try NeedleScorer(answer: "[unclosed"))
        XCTAssertThrowsError(try NeedleScorer(answer: "the"))
    }

    func testStringMatchAllAndPart() {
        XCTAssertEqual(StringMatch.all("The numbers are 1234567 and 7654321", ["1234567", "7654321", "1111111"]), 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(StringMatch.part("The numbers are 1234567", ["7654321", "1234567"]), 1)
        XCTAssertEqual(StringMatch.part("none", ["7654321"]), 0)
        XCTAssertEqual(StringMatch.all("ABCDE, FGHIJ", ["abcde", "fghij"]), 1)
        // A near-miss UUID (one character changed) does not match.
        XCTAssertEqual(StringMatch.all("5f1c2e0a-1b2c-4d3e-8f40-0123456789ab", ["5f1c2e0a-1b2c-4d3e-8f40-0123456789ac"]), 0)
    }
}
