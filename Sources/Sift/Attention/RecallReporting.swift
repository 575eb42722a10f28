/// A sparse method that can measure, per layer, the share of the exact attention mass its
/// selection keeps (`AttentionOptions.measureRecall`; `sift ppl --recall`).
public protocol RecallReporting: AttentionMethod {
    var recall: RecallMeter? { get }
}

extension DoubleSparseAttention: RecallReporting {}
extension TidalAttention: RecallReporting {}
extension LokiAttention: RecallReporting {}
