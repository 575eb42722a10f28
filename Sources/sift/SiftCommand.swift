import ArgumentParser
import Sift

@main
struct SiftCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sift",
        abstract: "Long-context LLM inference with post-training sparse attention.",
        discussion: """
        Models: \(ModelHub.knownNames.joined(separator: ", ")) (default \(ModelHub.defaultModel)), \
        or the path of any supported .gguf file.
        """,
        subcommands: [Run.self, Pull.self, Info.self, PerplexityCommand.self, Bench.self, Calibrate.self, EvalCommand.self,
                      KernelsCommand.self, KernelBench.self, SelfTest.self],
        defaultSubcommand: nil)
}
