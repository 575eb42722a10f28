/// The split of the Paul Graham essays between calibration and evaluation: essays sorted by
/// file name; every fifth one (indices 4, 9, 14, … of the sorted list) is held out for
/// evaluation only, the others are calibration text. Each part is its essays joined by "\n\n".
public enum EssaySplit {
    static func parts() throws -> (calibration: [String], heldOut: [String]) {
        let essays = try Haystack.essays(in: Haystack.paulGrahamDirectory())
        var cal: [String] = [], held: [String] = []
        for (i, e) in essays.enumerated() {
            if i % 5 == 4 { held.append(e.text) } else { cal.append(e.text) }
        }
        return (cal, held)
    }

    /// Calibration text (about 80% of the essays).
    public static func calibrationText() throws -> String { try parts().calibration.joined(separator: "\n\n") }

    /// Held-out text for sparse-aware perplexity (about 20% of the essays, never calibrated on).
    public static func heldOutText() throws -> String { try parts().heldOut.joined(separator: "\n\n") }
}
