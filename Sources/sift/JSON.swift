#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Prints a value as one JSON object on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    let data = try e.encode(value)
    print(String(decoding: data, as: UTF8.self))
}

/// Formats a number with a fixed count of decimals (no Foundation String(format:)).
func fixed(_ x: Double, _ decimals: Int) -> String {
    if !x.isFinite { return "\(x)" }
    var p = 1.0
    for _ in 0..<decimals { p *= 10 }
    let r = (abs(x) * p).rounded()
    let whole = Int(r / p)
    let frac = Int(r - Double(whole) * p)
    var s = "\(whole)"
    if decimals > 0 {
        var f = "\(frac)"
        while f.count < decimals { f = "0" + f }
        s += "." + f
    }
    return (x < 0 && r != 0 ? "-" : "") + s
}

func padLeft(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
func padRight(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }

/// `x` in scientific notation with `decimals` digits after the point ("3.142e-05").
func scientific(_ x: Double, _ decimals: Int) -> String {
    if !x.isFinite { return "\(x)" }
    if x == 0 { return fixed(0, decimals) + "e+00" }
    var e = Int(log10(abs(x)).rounded(.down))
    var m = x / pow(10, Double(e))
    if abs(Double(fixed(abs(m), decimals))!) >= 10 { m /= 10; e += 1 }
    let exp = abs(e) < 10 ? "0\(abs(e))" : "\(abs(e))"
    return fixed(m, decimals) + "e" + (e < 0 ? "-" : "+") + exp
}
