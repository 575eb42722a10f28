/// A hash map from byte strings to `Int32` values, looked up by pointer and length so that
/// the tokenizer's inner loops can ask "is this span of the input a token?" without building
/// a `String` or an `Array` for every question. Keys are copied into one arena; the table is
/// open-addressed with linear probing and grows at 50% load.
struct ByteStringMap {
    /// Key bytes; starts with one unused byte so that its base address is never nil.
    private var arena: [UInt8] = [0]
    private var keyStart: [Int] = []
    private var keyLength: [Int32] = []
    private var values: [Int32] = []
    /// Slot → entry index + 1 (0 = empty).
    private var slots: [Int32]
    private var mask: Int

    init(capacity: Int = 16) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        slots = [Int32](repeating: 0, count: n)
        mask = n - 1
        keyStart.reserveCapacity(capacity)
        keyLength.reserveCapacity(capacity)
        values.reserveCapacity(capacity)
    }

    var count: Int { values.count }

    /// FNV-1a over the bytes, finished with a multiply-xorshift so that the low bits mix well.
    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<n {
            h = (h ^ UInt64(p[i])) &* 0x100_0000_01b3
        }
        h ^= h >> 29
        h = h &* 0xbf58_476d_1ce4_e5b9
        h ^= h >> 32
        return Int(truncatingIfNeeded: h)
    }

    /// The value stored for the `n` bytes at `p`, or nil.
    @inline(__always)
    func get(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32? {
        var i = ByteStringMap.hash(p, n) & mask
        return slots.withUnsafeBufferPointer { slots in
            arena.withUnsafeBufferPointer { arena in
                while true {
                    let e = Int(slots[i])
                    if e == 0 { return nil }
                    let entry = e - 1
                    if Int(keyLength[entry]) == n {
                        let start = keyStart[entry]
                        var same = true
                        for k in 0..<n where arena[start + k] != p[k] {
                            same = false
                            break
                        }
                        if same { return values[entry] }
                    }
                    i = (i + 1) & mask
                }
            }
        }
    }

    func get(_ bytes: [UInt8]) -> Int32? {
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else {
                var zero: UInt8 = 0
                return withUnsafePointer(to: &zero) { get($0, 0) }
            }
            return get(base, b.count)
        }
    }

    /// Inserts or replaces the value for the `n` bytes at `p`.
    mutating func set(_ p: UnsafePointer<UInt8>, _ n: Int, _ value: Int32) {
        if (values.count + 1) * 2 > slots.count { grow() }
        var i = ByteStringMap.hash(p, n) & mask
        while true {
            let e = Int(slots[i])
            if e == 0 { break }
            let entry = e - 1
            if Int(keyLength[entry]) == n {
                let start = keyStart[entry]
                var same = true
                for k in 0..<n where arena[start + k] != p[k] {
                    same = false
                    break
                }
                if same {
                    values[entry] = value
                    return
                }
            }
            i = (i + 1) & mask
        }
        keyStart.append(arena.count)
        keyLength.append(Int32(n))
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        values.append(value)
        slots[i] = Int32(values.count)
    }

    mutating func set(_ bytes: [UInt8], _ value: Int32) {
        bytes.withUnsafeBufferPointer { b in
            if let base = b.baseAddress {
                set(base, b.count, value)
            } else {
                var zero: UInt8 = 0
                withUnsafePointer(to: &zero) { set($0, 0, value) }
            }
        }
    }

    mutating func removeAll() {
        arena.removeAll(keepingCapacity: true)
        arena.append(0)
        keyStart.removeAll(keepingCapacity: true)
        keyLength.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
        for i in slots.indices { slots[i] = 0 }
    }

    private mutating func grow() {
        let n = slots.count * 2
        var newSlots = [Int32](repeating: 0, count: n)
        let newMask = n - 1
        arena.withUnsafeBufferPointer { arena in
            for entry in 0..<values.count {
                let h = ByteStringMap.hash(arena.baseAddress! + keyStart[entry], Int(keyLength[entry]))
                var i = h & newMask
                while newSlots[i] != 0 { i = (i + 1) & newMask }
                newSlots[i] = Int32(entry + 1)
            }
        }
        slots = newSlots
        mask = newMask
    }
}
