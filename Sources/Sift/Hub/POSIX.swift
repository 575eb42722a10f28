#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Small libc wrappers for the hub (file system and subprocesses), so the engine needs no
// Foundation.

enum FS {
    static func env(_ name: String) -> String? {
        guard let v = getenv(name) else { return nil }
        let s = String(cString: v)
        return s.isEmpty ? nil : s
    }

    static func homeDirectory() -> String {
        if let h = env("HOME") { return h }
        if let pw = getpwuid(getuid()), let dir = pw.pointee.pw_dir { return String(cString: dir) }
        return "/"
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }

    private static func mode(_ path: String) -> mode_t? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return st.st_mode & S_IFMT
    }

    static func exists(_ path: String) -> Bool { mode(path) != nil }
    static func isRegularFile(_ path: String) -> Bool { mode(path) == S_IFREG }
    static func isDirectory(_ path: String) -> Bool { mode(path) == S_IFDIR }

    static func fileSize(_ path: String) -> Int? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int(st.st_size)
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String) throws {
        if isDirectory(path) { return }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for comp in path.split(separator: "/") {
            prefix += comp
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw HubError.io(path: prefix, message: "cannot create directory: \(errnoText())")
            }
            prefix += "/"
        }
        guard isDirectory(path) else { throw HubError.io(path: path, message: "not a directory") }
    }

    /// A new empty directory `<parent>/<prefix>XXXXXX`.
    static func makeTempDirectory(in parent: String, prefix: String) throws -> String {
        try makeDirectories(parent)
        var template = Array("\(parent)/\(prefix)XXXXXX".utf8CString)
        let ok = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard ok else { throw HubError.io(path: parent, message: "cannot create a temporary directory: \(errnoText())") }
        return String(cString: template)
    }

    /// Entry names of a directory (without "." and ".."), unsorted.
    static func listDirectory(_ path: String) throws -> [String] {
        guard let d = opendir(path) else {
            throw HubError.io(path: path, message: "cannot list directory: \(errnoText())")
        }
        defer { closedir(d) }
        var names: [String] = []
        while let ent = readdir(d) {
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Deletes a file, or a directory and everything under it (symlinks are not followed);
    /// best effort.
    static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR {
            for name in (try? listDirectory(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    static func remove(_ path: String) { unlink(path) }

    static func rename(_ from: String, _ to: String) throws {
        guard cRename(from, to) == 0 else {
            throw HubError.io(path: to, message: "cannot rename \(from) to it: \(errnoText())")
        }
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        let f = try MappedFile(path: path)
        return Array(f.bytes)
    }

    static func basename(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? path
    }
}

@inline(__always) private func cRename(_ a: String, _ b: String) -> Int32 { rename(a, b) }

/// Exit status and captured output of a finished subprocess.
struct ProcessResult {
    /// The exit code, or 128 + the signal number when the process was killed.
    var status: Int32
    var stdout: [UInt8]
    var stderr: [UInt8]

    var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    var stderrText: String { String(decoding: stderr, as: UTF8.self) }

    /// The last `lines` non-empty lines of stderr (for error messages).
    func stderrTail(lines: Int = 15) -> String {
        let all = stderrText.split(separator: "\n", omittingEmptySubsequences: true)
        return all.suffix(lines).joined(separator: "\n")
    }
}

enum Subprocess {
    struct SpawnError: Error { var program: String; var code: Int32 }

    /// Runs `argv` (looked up on PATH), stdin from /dev/null, stdout and stderr captured through
    /// unlinked temporary files (so no pipe can fill up), and waits for it.
    static func run(_ argv: [String]) throws -> ProcessResult {
        precondition(!argv.isEmpty)
        let outFD = try tempFile(), errFD = try tempFile()
        defer { close(outFD); close(errFD) }

        #if canImport(Darwin)
        var actions: posix_spawn_file_actions_t? = nil
        #else
        var actions = posix_spawn_file_actions_t()
        #endif
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outFD, 1)
        posix_spawn_file_actions_adddup2(&actions, errFD, 2)

        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var pid: pid_t = 0
        let rc = cArgs.withUnsafeBufferPointer { args in
            posix_spawnp(&pid, argv[0], &actions, nil, args.baseAddress!, environ)
        }
        guard rc == 0 else { throw SpawnError(program: argv[0], code: rc) }

        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { throw SpawnError(program: argv[0], code: errno) }
        }
        let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return ProcessResult(status: exitCode, stdout: readAll(outFD), stderr: readAll(errFD))
    }

    private static func tempFile() throws -> Int32 {
        let dir = FS.env("TMPDIR") ?? "/tmp"
        var template = Array("\(dir)/sift-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw HubError.io(path: dir, message: "cannot create a temporary file: \(FS.errnoText())") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fd
    }

    private static func readAll(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        guard lseek(fd, 0, SEEK_SET) == 0 else { return out }
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n > 0 { out += buf[0..<n] } else if n < 0 && errno == EINTR { continue } else { break }
        }
        return out
    }
}

/// Writes a progress line to stderr.
func hubLog(_ line: String) {
    fputs(line + "\n", stderr)
}
