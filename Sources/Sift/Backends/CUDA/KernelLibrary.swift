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
    /// returns (unit, PTX bytes); throws with the compiler log on the first failure.
    public func compileAllEmbedded(arch: (major: Int, minor: Int) = (9, 0)) throws -> [(String, Int)] {
        let headers = KernelSources.headers.map { ($0.name, $0.source) }
        return try KernelSources.units.map { unit in
            let ptx = try compile(source: unit.source, name: unit.name, headers: headers, arch: arch, output: .ptx)
            return (unit.name, ptx.count)
        }
    }
}
