import ArgumentParser
import Sift
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

struct SelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check the GPU backend on this machine; exits non-zero if any check fails.",
        discussion: """
        Kernels against float64 references on fresh random inputs; random qwen2- and \
        gemma3-shaped models GPU vs CPU; and, for each -m model (a .gguf path), last-position \
        logits GPU vs CPU (relative error < 2e-2) and the golden greedy continuations of \
        --golden (Tests/Golden/greedy.jsonl) on the GPU.
        """)

    @Option(help: "GPU to test: cuda or cuda:N.")
    var device: String = "cuda"

    @Option(name: [.short, .customLong("model")], parsing: .singleValue,
            help: "Real model .gguf to check (repeatable); its golden cases are found by file name (gemma3-270m.gguf …).")
    var models: [String] = []

    @Option(help: "Golden greedy cases (JSON lines).")
    var golden: String = "Tests/Golden/greedy.jsonl"

    @Option(help: "Random seed (default: from the clock, so each run draws fresh inputs).")
    var seed: UInt64?

    @Option(name: [.short, .customLong("threads")], help: "CPU threads for the CPU side of comparisons.")
    var threads: Int = ThreadPool.processorCount

    @Option(help: "Weight precision of the GPU under test: bf16, f16 or f32 (real models are also compared with an f32 GPU run).")
    var precision: String = "bf16"

    @Flag(help: "Skip the kernel and synthetic-model checks.")
    var modelsOnly = false

    struct GreedyCase: Decodable {
        var prompt: String
        var promptIds: [Int32]
        var greedyIds: [Int32]
        var greedyMargins: [Double]
        var model: String
        enum CodingKeys: String, CodingKey {
            case prompt, model
            case promptIds = "prompt_ids", greedyIds = "greedy_ids", greedyMargins = "greedy_margins"
        }
    }

    func run() throws {
        let spec = try DeviceSpec(parsing: device)
        guard case .cuda(let ordinal) = spec else { throw ValidationError("selftest checks a GPU: --device cuda or cuda:N") }
        let seed = self.seed ?? UInt64(UInt(bitPattern: time(nil))) &* 0x9E37_79B9_7F4A_7C15
        note("seed \(seed)")
        guard let prec = GPUPrecision(rawValue: precision) else { throw ValidationError("--precision must be bf16, f16 or f32") }
        let gpu = try CUDABackend(ordinal: ordinal, threads: threads, precision: prec)
        note("device \(gpu.name), driver \(gpu.context.driver.driverVersion), NVRTC \(try NVRTC.shared().version) from \(try NVRTC.shared().libraryPath), cuBLAS from \(gpu.blas.libraryPath)")
        var checks: [GPUCheck] = []
        func report(_ new: [GPUCheck]) {
            for c in new {
                print("\(c.passed ? "ok  " : "FAIL") \(padRight(c.name, 70)) err \(c.error) (tol \(c.tolerance))\(c.detail.isEmpty ? "" : "  " + c.detail)")
            }
            checks += new
        }
        if !modelsOnly {
            report(try CUDASelfTest.kernelChecks(gpu, seed: seed))
            report(try CUDASelfTest.syntheticChecks(gpu, cpuThreads: threads, seed: seed &+ 7))
            report(try CUDASelfTest.batchAndSamplingChecks(gpu, seed: seed &+ 9))
            report(try CUDASelfTest.doubleSparsityChecks(gpu, cpuThreads: threads, seed: seed &+ 11))
            report(try CUDASelfTest.projectedLabelChecks(gpu, cpuThreads: threads, seed: seed &+ 13))
            report(try CUDASelfTest.sparseMethodChecks(gpu, cpuThreads: threads, seed: seed &+ 11))
        }
        if !models.isEmpty {
            let text = try String(contentsOfFile: golden, encoding: .utf8)
            let cases = try text.split(separator: "\n").map { try JSONDecoder().decode(GreedyCase.self, from: Data($0.utf8)) }
            for path in models {
                let base = String(path.split(separator: "/").last ?? "")
                let name = base.hasSuffix(".gguf") ? String(base.dropLast(5)) : base
                let mine = cases.filter { $0.model == name }
                guard !mine.isEmpty else { throw ValidationError("no golden cases for model '\(name)' in \(golden)") }
                let cpu = try LoadedModel(path: path, threads: threads, maxBatch: 64)
                // The issue's criterion (GPU vs CPU < 2e-2) against the CPU in f32 arithmetic:
                // the default CPU path rounds activations to 8 bits (llama.cpp's scheme).
                let cpuExact = try LoadedModel(path: path, threads: threads, maxBatch: 64)
                (cpuExact.backend as? CPUBackend)?.exactActivations = true
                setenv("SIFT_CUDA_PRECISION", prec.rawValue, 1)
                let gm = try LoadedModel(path: path, threads: threads, maxBatch: 64, device: spec)
                setenv("SIFT_CUDA_PRECISION", "f32", 1)
                let g32 = prec == .f32 ? nil : try LoadedModel(path: path, threads: threads, maxBatch: 64, device: spec)
                unsetenv("SIFT_CUDA_PRECISION")
                for c in mine {
                    let label = "\(name) \(c.prompt.debugDescription)"
                    if let g32 {
                        // The CPU backend rounds activations to 8 bits, so it is itself a few
                        // percent from exact f32 arithmetic on these models. The GPU must agree
                        // with an f32 GPU run within 2e-2, and be no farther from the CPU than
                        // that f32 run is, plus 2e-2.
                        let ref = try CUDASelfTest.compareModels(cpu: cpu.model, gpu: g32.model, prompt: c.promptIds, steps: 8,
                                                                 label: label, tolerance: .infinity, what: "GPU f32 vs CPU (CPU noise)")
                        report(ref)
                        report(try CUDASelfTest.compareModels(cpu: g32.model, gpu: gm.model, prompt: c.promptIds, steps: 8,
                                                              label: label, what: "GPU \(prec) vs GPU f32"))
                        var vsCPU = try CUDASelfTest.compareModels(cpu: cpu.model, gpu: gm.model, prompt: c.promptIds, steps: 8,
                                                                   label: label, what: "GPU \(prec) vs CPU")
                        for i in vsCPU.indices { vsCPU[i].tolerance = ref[i].error + 2e-2 }
                        report(vsCPU)
                    } else {
                        report(try CUDASelfTest.compareModels(cpu: cpu.model, gpu: gm.model, prompt: c.promptIds, steps: 8,
                                                              label: label, tolerance: .infinity, what: "GPU f32 vs CPU (CPU noise)"))
                    }
                    report(try CUDASelfTest.compareModels(cpu: cpuExact.model, gpu: gm.model, prompt: c.promptIds, steps: 8,
                                                          label: label, what: "GPU \(prec) vs CPU with f32 activations"))
                    report(try greedy(gm, c, name: name))
                }
            }
        }
        let failed = checks.filter { !$0.passed }
        print("\(checks.count - failed.count)/\(checks.count) checks passed")
        if !failed.isEmpty { throw ExitCode(1) }
    }

    /// The golden criteria of GoldenModelTests on the GPU: teacher-forced over llama.cpp's 32
    /// tokens (each ours, or within its noise where llama.cpp's margin was small), then
    /// free-running greedy identical up to llama.cpp's first near-tie.
    func greedy(_ m: LoadedModel, _ c: GreedyCase, name: String) throws -> [GPUCheck] {
        let noise = 0.65
        let what = "\(name) \(c.prompt.debugDescription)"
        let s = try m.session(contextLength: 256)
        var logits = try s.evaluate(c.promptIds, logits: .last)[0]
        var bad = 0, agree = 0
        for (step, token) in c.greedyIds.enumerated() {
            let behind = Double(logits.max()! - logits[Int(token)])
            if behind == 0 { agree += 1 }
            if c.greedyMargins[step] >= noise ? behind != 0 : behind >= noise { bad += 1 }
            logits = try s.evaluate([token], logits: .last)[0]
        }
        let f = try m.session(contextLength: 256)
        var l = try f.evaluate(c.promptIds, logits: .last)[0]
        var freeSteps = 0, freeMismatch = 0
        var produced: [Int32] = []
        for (step, token) in c.greedyIds.enumerated() {
            if c.greedyMargins[step] < noise { break }
            let ours = Int32(l.firstIndex(of: l.max()!)!)
            produced.append(ours)
            freeSteps += 1
            if ours != token { freeMismatch = 1; break }
            l = try f.evaluate([ours], logits: .last)[0]
        }
        return [GPUCheck(name: "\(what): teacher-forced golden steps off", error: Double(bad), tolerance: 0,
                         detail: "argmax = llama.cpp at \(agree)/\(c.greedyIds.count)"),
                GPUCheck(name: "\(what): free-running greedy = golden up to first near-tie", error: Double(freeMismatch), tolerance: 0,
                         detail: "\(freeSteps) steps: \(m.tokenizer.decode(produced).debugDescription)")]
    }
}
