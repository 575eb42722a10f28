/// The embedded kernels (`KernelSources`, generated from Kernels/*.cu) compiled for a device.
extension CUDAContext {
    /// The module of the embedded translation unit `unit` (e.g. "core.cu"), compiled by NVRTC
    /// for this device's architecture on first use (every embedded header is includable).
    public func kernelModule(_ unit: String) throws -> CUDAModule {
        guard let src = KernelSources.units.first(where: { $0.name == unit }) else {
            throw CUDAError.invalid("no embedded kernel source \(unit) (have: \(KernelSources.units.map(\.name).joined(separator: ", ")))")
        }
        return try module(named: unit, source: src.source, headers: KernelSources.headers.map { ($0.name, $0.source) })
    }

    /// The kernel `name` of the embedded unit `unit`.
    public func kernel(_ unit: String, _ name: String) throws -> CUDAFunction {
        try kernelModule(unit).function(name)
    }
}

extension NVRTC {
    /// Compiles every embedded unit to PTX for compute capability `arch` (no GPU needed) and
    /// returns (unit, PTX bytes; or cubin bytes, which runs the assembler too and so checks the
    /// inline PTX); throws with the compiler log on the first failure. Units
    /// with per-shape builds (SIFT_DECODE_D / SIFT_DECODE_G, which also hold the experimental
    /// variants) are compiled again for `shapeBuilds` (head_dim, group), named `unit#dDgG`.
    public func compileAllEmbedded(arch: (major: Int, minor: Int) = (9, 0), output: Output = .ptx,
                                   shapeBuilds: [(Int, Int)] = [(128, 4), (128, 6), (64, 7)]) throws -> [(String, Int)] {
        let headers = KernelSources.headers.map { ($0.name, $0.source) }
        var out: [(String, Int)] = []
        for unit in KernelSources.units {
            out.append((unit.name, try compile(source: unit.source, name: unit.name, headers: headers, arch: arch, output: output).count))
            guard unit.source.contains("SIFT_DECODE_D") else { continue }
            for (d, g) in shapeBuilds {
                let name = "\(unit.name)#d\(d)g\(g)"
                let src = "#define SIFT_DECODE_D \(d)\n#define SIFT_DECODE_G \(g)\n" + unit.source
                out.append((name, try compile(source: src, name: name, headers: headers, arch: arch, output: output).count))
            }
        }
        return out
    }
}
