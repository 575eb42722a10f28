import XCTest
@testable import Sift

final class GGUFTests: XCTestCase {
    func testRoundTripMetadataAndTensors() throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("a.u8", .uint8(7))
        w.set("a.i64", .int64(-5))
        w.set("a.f64", .float64(2.5))
        w.set("a.bool", .bool(true))
        w.set("a.nested", .array(.array, [.int32s([1, 2]), .int32s([])]))
        w.set("a.strings", .strings(["x", "héllo", ""]))
        let values: [Float] = (0..<24).map { Float($0) * 0.5 - 3 }
        w.add(.init(name: "t0", shape: [8, 3], floats: values))
        w.add(.init(name: "t1", shape: [4], floats: [1, 2, 3, 4]))
        let f = try GGUFFile(file: MappedFile(copying: w.bytes()))
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f.metadataKeys.count, 7)
        XCTAssertEqual(f["a.u8"], .uint8(7))
        XCTAssertEqual(f["a.i64"]?.int, -5)
        XCTAssertEqual(f["a.f64"]?.double, 2.5)
        XCTAssertEqual(f["a.bool"], .bool(true))
        XCTAssertEqual(f["a.nested"], .array(.array, [.int32s([1, 2]), .int32s([])]))
        XCTAssertEqual(try f.stringArray("a.strings"), ["x", "héllo", ""])
        let t0 = try XCTUnwrap(f.tensorsByName["t0"])
        XCTAssertEqual(t0.shape, [8, 3])
        XCTAssertEqual(t0.rowCount, 3)
        XCTAssertEqual(t0.fileOffset % 32, 0)
        let p = f.data(t0).assumingMemoryBound(to: Float.self)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: p, count: 24)), values)
        let t1 = try XCTUnwrap(f.tensorsByName["t1"])
        XCTAssertEqual(f.data(t1).load(fromByteOffset: 12, as: Float.self), 4)
    }
}
