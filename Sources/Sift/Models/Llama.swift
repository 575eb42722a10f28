/// The Llama family: Llama 2/3, Mistral and Qwen2 (which adds biases to the q, k, v
/// projections). For each layer l, with x the residual stream of a token:
///
///     h  = RMSNorm(x) ⊙ g_attn
///     q  = W_q h + b_q,  k = W_k h + b_k,  v = W_v h + b_v          (b_* only in Qwen2)
///     q, k ← RoPE(q, k, position)
///     x ← x + W_o · Attention(q, K, V)                              (GQA: heads share KV heads)
///     h  = RMSNorm(x) ⊙ g_ffn
///     x ← x + W_down (SiLU(W_gate h) ⊙ W_up h)
///
/// and logits = W_out · (RMSNorm(x) ⊙ g_out), with W_out = the embedding table when tied.
public final class LlamaModel: LanguageModel {
    public let config: ModelConfig
    public let backend: Backend

    struct Layer {
        let attnNorm: Weight
        let wq, wk, wv, wo: Weight
        let bq, bk, bv: Weight?
        let ffnNorm: Weight
        let wGate, wUp, wDown: Weight
    }

    let embedding: Weight
    let layers: [Layer]
    let outputNorm: Weight
    let output: Weight
    let buffers: Buffers

    public init(file: GGUFFile, backend: Backend, maxBatch: Int) throws {
        let c = try ModelConfig(gguf: file)
        config = c
        self.backend = backend
        let w = WeightLoader(file: file, backend: backend)
        embedding = try w("token_embd.weight", [c.dim, c.vocabSize])
        layers = try (0..<c.layerCount).map { l in
            let p = "blk.\(l)."
            return Layer(
                attnNorm: try w(p + "attn_norm.weight", [c.dim]),
                wq: try w(p + "attn_q.weight", [c.dim, c.qDim]),
                wk: try w(p + "attn_k.weight", [c.dim, c.kvDim]),
                wv: try w(p + "attn_v.weight", [c.dim, c.kvDim]),
                wo: try w(p + "attn_output.weight", [c.qDim, c.dim]),
                bq: try w.optional(p + "attn_q.bias", [c.qDim]),
                bk: try w.optional(p + "attn_k.bias", [c.kvDim]),
                bv: try w.optional(p + "attn_v.bias", [c.kvDim]),
                ffnNorm: try w(p + "ffn_norm.weight", [c.dim]),
                wGate: try w(p + "ffn_gate.weight", [c.dim, c.ffnDim]),
                wUp: try w(p + "ffn_up.weight", [c.dim, c.ffnDim]),
                wDown: try w(p + "ffn_down.weight", [c.ffnDim, c.dim]))
        }
        outputNorm = try w("output_norm.weight", [c.dim])
        output = try w.optional("output.weight", [c.dim, c.vocabSize]) ?? embedding
        buffers = Buffers(config: c, backend: backend, maxBatch: maxBatch)
    }

    public func attentionShape(layer l: Int) -> AttentionShape {
        AttentionShape(heads: config.headCount, kvHeads: config.kvHeadCount, headDim: config.headDim,
                       scale: config.attentionScale)
    }

    public func forward(_ tokens: [Int32], start: Int, attention: AttentionMethod, logits: LogitRows) -> [[Float]] {
        buffers.run(tokens, start: start, logits: logits, output: output, outputNorm: outputNorm, eps: config.normEps,
                    embed: embedTokens, layer: { self.layer($0, $1, $2, $3, $4, attention) }, attention: attention)
    }

    public func forwardBatch(_ tokens: [Int32], positions: [Int32], attention: BatchedDecodeAttention,
                             readLogits: Bool) -> [[Float]] {
        buffers.runBatch(tokens, positions: positions, readLogits: readLogits, output: output, outputNorm: outputNorm,
                         eps: config.normEps,
                         embed: embedTokens, layer: { self.layer($0, $1, $2, $3, $4, attention) }, attention: attention)
    }

    public var chunkSize: Int { buffers.maxBatch }
    public var logitsOnBackend: Tensor { buffers.logits }

    private func embedTokens(_ b: Backend, _ chunk: [Int32], _ x: Tensor) {
        b.embed(chunk, table: embedding, scale: 1, into: x)
    }

    /// Layer `l` on the residual stream `x` (rows at `positions`).
    private func layer(_ b: Backend, _ l: Int, _ x: Tensor, _ positions: [Int32], _ s: Buffers, _ attention: AttentionMethod) {
        let L = self.layers[l], c = self.config
        b.rmsNorm(x, weight: L.attnNorm, groupSize: c.dim, eps: c.normEps, into: s.h)
        b.linear(s.h, L.wq, bias: L.bq, into: s.q)
        b.linear(s.h, L.wk, bias: L.bk, into: s.k)
        b.linear(s.h, L.wv, bias: L.bv, into: s.v)
        b.rope(s.q, headDim: c.headDim, positions: positions, base: c.ropeBase, scale: c.ropeScale, style: c.ropeStyle)
        b.rope(s.k, headDim: c.headDim, positions: positions, base: c.ropeBase, scale: c.ropeScale, style: c.ropeStyle)
        s.attend(attention, layer: l, positions: positions, shape: self.attentionShape(layer: l))
        b.linear(s.attn, L.wo, bias: nil, into: s.h)
        b.add(x, s.h)

        b.rmsNorm(x, weight: L.ffnNorm, groupSize: c.dim, eps: c.normEps, into: s.h)
        b.linear(s.h, L.wGate, bias: nil, into: s.gate)
        b.linear(s.h, L.wUp, bias: nil, into: s.up)
        b.gatedActivation(s.gate, s.up, .silu)
        b.linear(s.gate, L.wDown, bias: nil, into: s.h)
        b.add(x, s.h)
    }
}

