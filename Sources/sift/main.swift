import Sift
let f = try GGUFFile(path: CommandLine.arguments[1])
print(f.version, f.tensors.count, f.metadata.count, f.dataOffset)
for k in f.metadataKeys { print(k, f.metadata[k]!) }
