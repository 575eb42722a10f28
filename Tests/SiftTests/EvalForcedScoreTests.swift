import Foundation
import XCTest
@testable import Sift

/// The teacher-forced answer score of the kv task (`EvalEngine.forcedScore`) against a plain
/// reference: a fresh session that prefills the prompt and then decodes the forced tokens one
/// at a time, as generation would. Real model (Qwen2.5-Coder 0.5B), dense and Double Sparsity
/// at 1/16 of the tokens (channels from a random ranking: the point is the decode-step
/// equivalence, not the selection's quality), fresh random keys and values every run.
final class EvalForcedScoreTests: XCTestCase {
    func testForcedScoreMatchesOneTokenDecodeSteps() throws {
        let m = try LoadedModel(path: try TestModels.path("qwen2.5-coder-0.5b"))
        let c = m.config
        var g = SystemRandomNumberGenerator()
        let config = DoubleSparsityConfig(
            model: .init(config: c, fileSHA256: nil), statistic: .qk,
            calibration: .init(text: "test", tokens: 0, sampleLength: 1, seconds: 0, peakMemoryBytes: 0),
            channels: (0..<c.layerCount).map { _ in (0..<c.kvHeadCount).map { _ in Array(0..<c.headDim).shuffled(using: &g) } })
        let dir = NSTemporaryDirectory() + "sift-forced-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/ds.json"
        try Data(config.encoded()).write(to: URL(fileURLWithPath: path))
        var ds = AttentionOptions()
        ds.dsConfigPath = path
        ds.budget = .fraction(1.0 / 16)

        let length = 640, seed = UInt64.random(in: 1...UInt64.max, using: &g)
        let task = KeyValueRetrieval(tokenizer: m.tokenizer)
        for (name, options) in [("dense", AttentionOptions()), ("double-sparse", ds)] {
            let engine = EvalEngine(model: m, attention: name, options: options)
            let s = try task.sample(length: length, depth: 50, seed: seed, maxNew: 96, overhead: engine.format.overhead)
            // As in a run: the answer first, so the cache holds the prompt and generated tokens.
            _ = try engine.answer(s, length: length, maxNewTokens: 6)
            let f = try XCTUnwrap(try engine.forcedScore(s, length: length))

            let prompt = engine.format.tokens(s)
            let opening = m.tokenizer.encode(s.forcedPrefix, addSpecial: false, parseSpecial: false)
            let target = m.tokenizer.encode(s.expected[0], addSpecial: false, parseSpecial: false)
            XCTAssertEqual(f.logProbs.count, target.count, name)
            XCTAssertGreaterThan(target.count, 10, name)
            let ref = try m.session(contextLength: length, attention: name, options: options)
            var rows = try ref.evaluate(prompt, logits: .last)
            for t in (opening + target).dropLast() { rows += try ref.evaluate([t], logits: .last) }
            for (j, t) in target.enumerated() {
                let row = rows[opening.count + j]
                let lp = Perplexity.logSoftmax(row, at: Int(t))
                XCTAssertEqual(f.logProbs[j], lp, accuracy: 0.02 + 0.02 * abs(lp), "\(name): token \(j)")
                // The greedy flag must agree wherever the choice is not a near tie.
                let sorted = row.sorted(by: >)
                if sorted[0] - sorted[1] > 0.05 {
                    XCTAssertEqual(f.greedy[j], Sampler.argmax(row) == t, "\(name): greedy flag of token \(j)")
                }
            }
            // A wrong answer of the same form must score far worse than the true one: the score
            // sees the answer (dense attention here retrieves; 0.5B copies at this length).
            if name == "dense" {
                XCTAssertTrue(f.copied, "dense 0.5B should copy the value at \(length) tokens")
                var wrong = s
                var r = EvalRandom.generator(seed: seed, "wrong")
                wrong.forcedAnswer = EvalRandom.uuid(&r)
                let w = try XCTUnwrap(try engine.forcedScore(wrong, length: length))
                XCTAssertFalse(w.copied)
                XCTAssertGreaterThan(-w.logProbs.reduce(0, +), -f.logProbs.reduce(0, +) + 20)
            }
        }
    }
}
