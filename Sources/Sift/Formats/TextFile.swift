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

/// Whether a regular file exists at `path`.
public func fileExists(_ path: String) -> Bool { FS.isRegularFile(path) }

/// Reads a file with read(2) until EOF (for /proc files, whose size stat reports as 0).
public func readStreamFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw FileError(path: path, message: "cannot open (errno \(errno))") }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
        if n <= 0 { break }
        bytes += buf[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Writes bytes to a file (created or truncated), with an error naming the file.
public func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw FileError(path: path, message: "cannot create (errno \(errno))") }
    defer { close(fd) }
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
        guard n > 0 else { throw FileError(path: path, message: "write failed (errno \(errno))") }
        off += n
    }
}

/// Creates a directory and its parents (like mkdir -p).
public func makeDirectories(_ path: String) throws { try FS.makeDirectories(path) }
