#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a whole UTF-8 text file (invalid bytes become U+FFFD), with an error naming the file.
public func readTextFile(_ path: String) throws -> String {
    let f = try MappedFile(path: path)
    return String(decoding: f.bytes, as: UTF8.self)
}
