#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Perplexity computed the way llama.cpp's `llama-perplexity` does, so the two compare:
/// the token stream is cut into non-overlapping chunks of `ctx` tokens; each chunk is
/// evaluated from an empty cache (its first token replaced by BOS when the model adds one);
/// the first half of each chunk is context only, and each later position predicts the next
/// token: the scored positions are `ctx/2 ..< ctx-1`, i.e. ctx - 1 - ctx/2 tokens per chunk.
public struct Perplexity {
    public struct Result: Sendable {
        public var ppl: Double
        public var tokensScored: Int
        public var ctx: Int
        public var chunks: Int
        /// Running perplexity after each chunk (as llama.cpp prints it).
        public var running: [Double]
    }

    public enum Failure: Error, CustomStringConvertible {
        case tooShort(tokens: Int, ctx: Int)
        public var description: String {
            switch self {
            case .tooShort(let n, let ctx):
                return "the text has \(n) tokens, fewer than one chunk of \(ctx) (use a longer text or a smaller -c)"
            }
        }
    }

    /// - Parameters:
    ///   - tokens: the whole text, tokenized as the model would (BOS first if it adds one).
    ///   - bos: the BOS id to put at the start of every chunk, or nil.
    ///   - session: a session whose context holds at least `ctx` tokens; it is reset per chunk.
    public static func compute(tokens: [Int32], bos: Int32?, ctx: Int, maxChunks: Int? = nil,
                               session: Session, progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> Result {
        var chunks = tokens.count / ctx
        if let m = maxChunks, m > 0 { chunks = min(chunks, m) }
        guard chunks > 0 else { throw Failure.tooShort(tokens: tokens.count, ctx: ctx) }
        let first = ctx / 2
        var nll = 0.0
        var count = 0
        var running: [Double] = []
        for c in 0..<chunks {
            var chunk = Array(tokens[(c * ctx)..<((c + 1) * ctx)])
            if let bos { chunk[0] = bos }
            session.reset()
            // Positions before `first` only fill the cache (a dense prefill); logits are needed
            // from `first` on, where sparse methods attend as they would at decode.
            let sparse = session.attention as? SparseAwareAttention
            sparse?.sparsePrefill = false
            _ = try session.evaluate(Array(chunk[0..<first]), logits: .none)
            sparse?.sparsePrefill = true
            let logits = try session.evaluate(Array(chunk[first..<(ctx - 1)]), logits: .all)
            for (j, row) in logits.enumerated() {
                nll -= logSoftmax(row, at: Int(chunk[first + j + 1]))
                count += 1
            }
            running.append(exp(nll / Double(count)))
            progress(c + 1, chunks, running.last!)
        }
        return Result(ppl: running.last!, tokensScored: count, ctx: ctx, chunks: chunks, running: running)
    }

    /// log softmax(row)[i], in double precision.
    public static func logSoftmax(_ row: [Float], at i: Int) -> Double {
        var m = -Float.infinity
        for v in row { m = max(m, v) }
        var sum = 0.0
        for v in row { sum += exp(Double(v - m)) }
        return Double(row[i] - m) - log(sum)
    }
}
