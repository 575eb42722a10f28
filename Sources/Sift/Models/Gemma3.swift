/// Gemma 3 (text). For each layer l, with x the residual stream of a token:
///
///     h  = RMSNorm(x) ⊙ g_attn
///     q  = RMSNorm_head(W_q h) ⊙ g_q,  k = RMSNorm_head(W_k h) ⊙ g_k,  v = W_v h
///     q, k ← RoPE(q, k, position; base 10 000 on local layers, rope.freq_base on global ones)
///     a  = Attention(q, K, V)   local layers: only the last `sliding_window` positions
///     x ← x + RMSNorm(W_o a) ⊙ g_post_attn
///     h  = RMSNorm(x) ⊙ g_ffn
///     x ← x + RMSNorm(W_down (GELU_tanh(W_gate h) ⊙ W_up h)) ⊙ g_post_ffn
///
/// Embeddings are scaled by √d; every 6th layer is global, the others local; logits use the
/// (tied) embedding table. Gemma's norms compute x/rms(x)·(1 + w); GGUF files store (1 + w),
/// so the same RMSNorm as Llama applies.
public final class Gemma3Model: LanguageModel {
    public let config: ModelConfig
    public let backend: Backend

    struct Layer {
        let attnNorm, qNorm, kNorm, postAttnNorm: Weight
        let wq, wk, wv, wo: Weight
        let ffnNorm, postFfnNorm: Weight
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
                qNorm: try w(p + "attn_q_norm.weight", [c.headDim]),
                kNorm: try w(p + "attn_k_norm.weight", [c.headDim]),
                postAttnNorm: try w(p + "post_attention_norm.weight", [c.dim]),
                wq: try w(p + "attn_q.weight", [c.dim, c.qDim]),
                wk: try w(p + "attn_k.weight", [c.dim, c.kvDim]),
                wv: try w(p + "attn_v.weight", [c.dim, c.kvDim]),
                wo: try w(p + "attn_output.weight", [c.qDim, c.dim]),
                ffnNorm: try w(p + "ffn_norm.weight", [c.dim]),
                postFfnNorm: try w(p + "post_ffw_norm.weight", [c.dim]),
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
                       scale: config.attentionScale,
                       window: config.isSlidingLayer(l) ? config.slidingWindow : 0)
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
        let embedScale = Float(config.dim).squareRoot()
        b.embed(chunk, table: embedding, scale: embedScale, into: x)
    }

    /// Layer `l` on the residual stream `x` (rows at `positions`).
    private func layer(_ b: Backend, _ l: Int, _ x: Tensor, _ positions: [Int32], _ s: Buffers, _ attention: AttentionMethod) {
        let L = self.layers[l], c = self.config
        let base = c.isSlidingLayer(l) ? c.ropeBaseLocal : c.ropeBase
        b.rmsNorm(x, weight: L.attnNorm, groupSize: c.dim, eps: c.normEps, into: s.h)
        b.linear(s.h, L.wq, bias: nil, into: s.q)
        b.linear(s.h, L.wk, bias: nil, into: s.k)
        b.linear(s.h, L.wv, bias: nil, into: s.v)
        b.rmsNorm(s.q, weight: L.qNorm, groupSize: c.headDim, eps: c.normEps, into: s.q)
        b.rmsNorm(s.k, weight: L.kNorm, groupSize: c.headDim, eps: c.normEps, into: s.k)
        b.rope(s.q, headDim: c.headDim, positions: positions, base: base, scale: 1, style: .neox)
        b.rope(s.k, headDim: c.headDim, positions: positions, base: base, scale: 1, style: .neox)
        s.attend(attention, layer: l, positions: positions, shape: self.attentionShape(layer: l))
        b.linear(s.attn, L.wo, bias: nil, into: s.h)
        b.rmsNorm(s.h, weight: L.postAttnNorm, groupSize: c.dim, eps: c.normEps, into: s.h)
        b.add(x, s.h)

        b.rmsNorm(x, weight: L.ffnNorm, groupSize: c.dim, eps: c.normEps, into: s.h)
        b.linear(s.h, L.wGate, bias: nil, into: s.gate)
        b.linear(s.h, L.wUp, bias: nil, into: s.up)
        b.gatedActivation(s.gate, s.up, .geluTanh)
        b.linear(s.gate, L.wDown, bias: nil, into: s.h)
        b.rmsNorm(s.h, weight: L.postFfnNorm, groupSize: c.dim, eps: c.normEps, into: s.h)
        b.add(x, s.h)
    }
}
