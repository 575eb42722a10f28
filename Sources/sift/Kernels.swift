import ArgumentParser
import Sift

struct KernelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "List the embedded CUDA kernels; --check compiles each to PTX with NVRTC (no GPU needed).")

    @Flag(help: "Compile every embedded kernel source to PTX; exit non-zero with the compiler log on failure.")
    var check = false

    @Option(help: "Compute capability to compile for, e.g. 90 (H100), 80 (A100).")
    var arch: Int = 90

    @Flag(help: "With --check: compile to cubins for sm_<arch> (runs the PTX assembler too, which checks inline PTX).")
    var cubin = false

    func run() throws {
        if !check {
            for h in KernelSources.headers { print("header \(h.name) (\(h.source.utf8.count) bytes)") }
            for u in KernelSources.units { print("unit   \(u.name) (\(u.source.utf8.count) bytes)") }
            return
        }
        guard arch >= 50 && arch < 200 else { throw ValidationError("--arch takes a compute capability such as 90") }
        let nvrtc = try NVRTC.shared()
        let (maj, min) = nvrtc.version
        note("NVRTC \(maj).\(min) from \(nvrtc.libraryPath)")
        for (unit, bytes) in try nvrtc.compileAllEmbedded(arch: (arch / 10, arch % 10), output: cubin ? .cubin : .ptx) {
            print("ok  \(unit) → \(bytes) bytes of \(cubin ? "cubin for sm" : "PTX for compute")_\(arch)")
        }
    }
}
