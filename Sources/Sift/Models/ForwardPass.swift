/// Activation buffers of one model, sized for `maxBatch` tokens, and the chunked driver loop
/// shared by the model files (embed → layers → final norm → logits).
final class Buffers {
    let maxBatch: Int
    let x, h, q, k, v, attn, gate, up, last: Tensor
    /// Created on first use: [maxBatch × vocab] floats are only needed for perplexity.
    lazy var logits: Tensor = backend.makeTensor(rows: maxBatch, cols: vocabSize)
    let vocabSize: Int
    unowned let backend: Backend

    init(config c: ModelConfig, backend: Backend, maxBatch: Int) {
        self.maxBatch = maxBatch
        self.backend = backend
        x = backend.makeTensor(rows: maxBatch, cols: c.dim)
        h = backend.makeTensor(rows: maxBatch, cols: c.dim)
        q = backend.makeTensor(rows: maxBatch, cols: c.qDim)
        k = backend.makeTensor(rows: maxBatch, cols: c.kvDim)
        v = backend.makeTensor(rows: maxBatch, cols: c.kvDim)
        attn = backend.makeTensor(rows: maxBatch, cols: c.qDim)
        gate = backend.makeTensor(rows: maxBatch, cols: c.ffnDim)
        up = backend.makeTensor(rows: maxBatch, cols: c.ffnDim)
        last = backend.makeTensor(rows: maxBatch, cols: c.dim)
        vocabSize = c.vocabSize
    }

    /// Sets every buffer's row count to the chunk size.
    func resize(_ n: Int) {
        for t in [x, h, q, k, v, attn, gate, up] { t.rows = n }
    }

    func run(_ tokens: [Int32], start: Int, logits want: LogitRows, output: Weight, outputNorm: Weight, eps: Float,
             embed: (Backend, [Int32], Tensor) -> Void,
             layer: (Backend, Int, Tensor, [Int32], Buffers) -> Void,
             attention: AttentionMethod) -> [[Float]] {
        let b = backend
        let layerCount = attention.kv.layerCount
        var result: [[Float]] = []
        var offset = 0
        while offset < tokens.count {
            let n = min(maxBatch, tokens.count - offset)
            let chunk = Array(tokens[offset..<(offset + n)])
            let positions = (0..<n).map { Int32(start + offset + $0) }
            resize(n)
            embed(b, chunk, x)
            for l in 0..<layerCount { layer(b, l, x, positions, self) }
            attention.kv.setLength(start + offset + n)
            let isLastChunk = offset + n == tokens.count
            switch want {
            case .none: break
            case .last where !isLastChunk: break
            case .last:
                last.rows = 1
                b.copyRow(x, n - 1, into: last, 0)
                result += finalLogits(last, output: output, outputNorm: outputNorm, eps: eps)
            case .all:
                result += finalLogits(x, output: output, outputNorm: outputNorm, eps: eps)
            }
            offset += n
        }
        return result
    }

    private func finalLogits(_ x: Tensor, output: Weight, outputNorm: Weight, eps: Float) -> [[Float]] {
        backend.rmsNorm(x, weight: outputNorm, groupSize: x.cols, eps: eps, into: x)
        backend.linear(x, output, bias: nil, into: logits)
        return backend.read(logits)
    }
}
