import Sift
let f = try GGUFFile(path: CommandLine.arguments[1])
let backend = CPUBackend()
let model = try Architectures.load(f, backend: backend)
let c = model.config
let cache = KVCache(layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: 256)
let att = DenseAttention(cache: cache, pool: backend.pool)
var ids: [Int32] = CommandLine.arguments[2].split(separator: ",").map { Int32($0)! }
var logits = model.forward(ids, start: 0, attention: att, logits: .last)[0]
var out: [Int32] = []
for _ in 0..<32 {
    let best = logits.indices.max(by: { logits[$0] < logits[$1] })!
    out.append(Int32(best))
    logits = model.forward([Int32(best)], start: ids.count + out.count - 1, attention: att, logits: .last)[0]
}
print(out.map(String.init).joined(separator: ","))
let l0 = model.forward(ids, start: 0, attention: DenseAttention(cache: KVCache(layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: 256), pool: backend.pool), logits: .last)[0]
let top = l0.indices.sorted(by: { l0[$0] > l0[$1] }).prefix(5)
print(top.map { "[\($0), \(l0[$0])]" }.joined(separator: " "))
