/// Activation buffers of one model, sized for `maxBatch` tokens, and the chunked driver loop
/// shared by the model files (embed → layers → final norm → logits).
final class Buffers {
    let maxBatch: Int
    let x, h, q, k, v, attn, gate, up, last: Tensor
    /// The logits of the last pass, [rows × vocab]: created on first use with the rows needed
    /// (1 for decode, B for a batch; a whole chunk only for perplexity) and grown when more are.
    private(set) var logits: Tensor
    private var logitsCapacity = 0
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
        logits = Tensor(rows: 0, cols: c.vocabSize)
    }

    /// Sets every buffer's row count to the chunk size.
    func resize(_ n: Int) {
        for t in [x, h, q, k, v, attn, gate, up] { t.rows = n }
    }

    /// Set while `runBatch` runs: the layers' attention goes through its batched decode call.
    private var batched: BatchedDecodeAttention?

    /// The attention of one layer, for the model files: a batched decode step when `runBatch`
    /// is running (row i = sequence i at `positions[i]`), else a chunk of one sequence at
    /// positions `positions[0]...`.
    func attend(_ attention: AttentionMethod, layer: Int, positions: [Int32], shape: AttentionShape) {
        if let batched {
            batched.attendBatch(layer: layer, q: q, k: k, v: v, positions: positions, shape: shape, out: attn)
        } else {
            attention.attend(layer: layer, q: q, k: k, v: v, start: Int(positions[0]), shape: shape, out: attn)
        }
    }

    /// One decode step of several sequences in one pass: token i is the next token of
    /// sequence i, at position `positions[i]`. Returns the logits of every row. The batch must
    /// fit the buffers (`BatchSession` checks).
    func runBatch(_ tokens: [Int32], positions: [Int32], readLogits: Bool, output: Weight, outputNorm: Weight, eps: Float,
                  embed: (Backend, [Int32], Tensor) -> Void,
                  layer: (Backend, Int, Tensor, [Int32], Buffers) -> Void,
                  attention: BatchedDecodeAttention) -> [[Float]] {
        precondition(tokens.count == positions.count && tokens.count <= attention.sequenceCount && tokens.count <= maxBatch)
        resize(tokens.count)
        embed(backend, tokens, x)
        batched = attention
        for l in 0..<attention.kv.layerCount { layer(backend, l, x, positions, self) }
        batched = nil
        for (i, p) in positions.enumerated() { attention.withSequence(i) { attention.kv.setLength(Int(p) + 1) } }
        project(x, output: output, outputNorm: outputNorm, eps: eps)
        return readLogits ? backend.read(logits) : []
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
            case .last where !isLastChunk, .lastOnBackend where !isLastChunk: break
            case .last, .lastOnBackend:
                last.rows = 1
                b.copyRow(x, n - 1, into: last, 0)
                project(last, output: output, outputNorm: outputNorm, eps: eps)
                if case .last = want { result += backend.read(logits) }
            case .all:
                result += finalLogits(x, output: output, outputNorm: outputNorm, eps: eps)
            }
            offset += n
        }
        return result
    }

    private func finalLogits(_ x: Tensor, output: Weight, outputNorm: Weight, eps: Float) -> [[Float]] {
        project(x, output: output, outputNorm: outputNorm, eps: eps)
        return backend.read(logits)
    }

    /// Final norm and output projection of the rows of `x` into `logits`.
    private func project(_ x: Tensor, output: Weight, outputNorm: Weight, eps: Float) {
        if x.rows > logitsCapacity {
            logits = backend.makeTensor(rows: x.rows, cols: vocabSize)
            logitsCapacity = x.rows
        }
        backend.rmsNorm(x, weight: outputNorm, groupSize: x.cols, eps: eps, into: x)
        backend.linear(x, output, bias: nil, into: logits)
    }
}

