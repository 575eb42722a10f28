/// What the engine needs from a sequence's KV cache wherever it lives (host `KVCache`,
/// GPU `CUDAKVCache`): its geometry and filled length.
public protocol KVStorage: AnyObject {
    var layerCount: Int { get }
    /// Positions it can hold.
    var capacity: Int { get }
    /// Positions filled.
    var length: Int { get }
    func setLength(_ n: Int)
    /// The error for a sequence that needs `needed` positions (more than `capacity`).
    func overflowError(needed: Int) -> Error
}

extension KVStorage {
    public func overflowError(needed: Int) -> Error { ModelError.contextOverflow(needed: needed, limit: capacity) }
}

extension KVCache: KVStorage {}
