import CFFI
import Glibc

/// A plain C function a plugin exposes with `register_function`, called through libffi: its
/// signature is known only at run time, from a C declaration such as
/// `double area(double w, double h)`. The call interface is prepared once, at registration.
final class FFIFunction {
    enum CType: String {
        case int32 = "int32_t", int64 = "int64_t", uint32 = "uint32_t", uint64 = "uint64_t"
        case double, float, string = "const char *", void

        init?(declaration t: String) {
            let words = t.replacingOccurrences(of: "*", with: " * ").split(separator: " ").filter { $0 != "const" }.joined(separator: " ")
            switch words {
            case "int", "int32_t", "signed", "signed int": self = .int32
            case "long", "long int", "long long", "int64_t", "ssize_t": self = .int64
            case "unsigned", "unsigned int", "uint32_t": self = .uint32
            case "unsigned long", "unsigned long long", "uint64_t", "size_t": self = .uint64
            case "double": self = .double
            case "float": self = .float
            case "char *": self = .string
            case "void": self = .void
            default: return nil
            }
        }

        var ffiType: UnsafeMutablePointer<ffi_type> {
            switch self {
            case .int32: aws_ffi_type_sint32()
            case .int64: aws_ffi_type_sint64()
            case .uint32: aws_ffi_type_uint32()
            case .uint64: aws_ffi_type_uint64()
            case .double: aws_ffi_type_double()
            case .float: aws_ffi_type_float()
            case .string: aws_ffi_type_pointer()
            case .void: aws_ffi_type_void()
            }
        }
    }

    struct SignatureError: Error, CustomStringConvertible { let description: String }

    let name: String
    let returnType: CType
    let parameters: [(name: String, type: CType)]
    private let function: @convention(c) () -> Void
    // The cif and its type array must outlive every call: owned here, freed in deinit.
    private let cif: UnsafeMutablePointer<ffi_cif>
    private let argTypes: UnsafeMutablePointer<UnsafeMutablePointer<ffi_type>?>

    init(signature: String, function: @escaping @convention(c) () -> Void) throws {
        guard let open = signature.firstIndex(of: "("), let close = signature.lastIndex(of: ")"), open < close else {
            throw SignatureError(description: "expected a C declaration like \"double area(double w, double h)\"")
        }
        let (retDecl, fname) = try FFIFunction.split(String(signature[..<open]))
        guard let ret = CType(declaration: retDecl) else { throw SignatureError(description: "unsupported return type \"\(retDecl)\"") }
        var params: [(String, CType)] = []
        let list = signature[signature.index(after: open)..<close].trimmingCharacters(in: .whitespaces)
        if !list.isEmpty && list != "void" {
            for p in list.split(separator: ",") {
                let (decl, pname) = try FFIFunction.split(String(p))
                guard let t = CType(declaration: decl), t != .void else { throw SignatureError(description: "unsupported parameter type \"\(decl)\" for \(pname)") }
                guard !params.contains(where: { $0.0 == pname }) else { throw SignatureError(description: "parameter \(pname) named twice") }
                params.append((pname, t))
            }
        }
        name = fname
        returnType = ret
        parameters = params
        self.function = function
        cif = .allocate(capacity: 1)
        argTypes = .allocate(capacity: max(params.count, 1))
        for (i, p) in params.enumerated() { argTypes[i] = p.1.ffiType }
        let status = ffi_prep_cif(cif, FFI_DEFAULT_ABI, UInt32(params.count), ret.ffiType, argTypes)
        guard status == FFI_OK else {
            cif.deallocate()
            argTypes.deallocate()
            throw SignatureError(description: "ffi_prep_cif failed (\(status))")
        }
    }

    deinit {
        cif.deallocate()
        argTypes.deallocate()
    }

    /// "const char *name" → ("const char *", "name").
    private static func split(_ decl: String) throws -> (String, String) {
        let d = decl.trimmingCharacters(in: .whitespaces)
        var end = d.endIndex
        var start = end
        while start > d.startIndex {
            let c = d[d.index(before: start)]
            if c.isLetter || c.isNumber || c == "_" { start = d.index(before: start) } else { break }
        }
        guard start < end else { throw SignatureError(description: "missing a name in \"\(decl)\"") }
        let name = String(d[start..<end])
        end = start
        let type = d[..<end].trimmingCharacters(in: .whitespaces)
        guard !type.isEmpty else { throw SignatureError(description: "missing a type in \"\(decl)\"") }
        return (type, name)
    }

    enum CallError: Error {
        case missing(String)
        case invalid(String, CType)
        /// The function set errno: it has no result for these arguments (ERANGE, EDOM, ...).
        case failed(Int32)
    }

    /// Converts the named parameters and calls the function; the result rendered as text.
    func call(_ values: [String: String]) -> Result<(text: String, json: String), CallError> {
        let slots = UnsafeMutableRawPointer.allocate(byteCount: max(parameters.count, 1) * 8, alignment: 8)
        let argv = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: max(parameters.count, 1))
        var strings: [UnsafeMutablePointer<CChar>] = []
        defer {
            slots.deallocate()
            argv.deallocate()
            for s in strings { free(s) }
        }
        for (i, p) in parameters.enumerated() {
            guard let raw = values[p.name] else { return .failure(.missing(p.name)) }
            let slot = slots + i * 8
            argv[i] = slot
            let v = raw.trimmingCharacters(in: .whitespaces)
            switch p.type {
            case .int32:
                guard let x = Int32(v) else { return .failure(.invalid(p.name, p.type)) }
                slot.storeBytes(of: x, as: Int32.self)
            case .int64:
                guard let x = Int64(v) else { return .failure(.invalid(p.name, p.type)) }
                slot.storeBytes(of: x, as: Int64.self)
            case .uint32:
                guard let x = UInt32(v) else { return .failure(.invalid(p.name, p.type)) }
                slot.storeBytes(of: x, as: UInt32.self)
            case .uint64:
                guard let x = UInt64(v) else { return .failure(.invalid(p.name, p.type)) }
                slot.storeBytes(of: x, as: UInt64.self)
            case .double:
                guard let x = Double(v), x.isFinite else { return .failure(.invalid(p.name, p.type)) }
                slot.storeBytes(of: x, as: Double.self)
            case .float:
                guard let x = Float(v), x.isFinite else { return .failure(.invalid(p.name, p.type)) }
                slot.storeBytes(of: x, as: Float.self)
            case .string:
                let s = strdup(raw)!
                strings.append(s)
                slot.storeBytes(of: UnsafePointer(s), as: UnsafePointer<CChar>.self)
            case .void:
                return .failure(.invalid(p.name, p.type))
            }
        }
        // libffi widens integral results to a full ffi_arg (8 bytes here).
        var result: (UInt64, UInt64) = (0, 0)
        // The C convention of strtol and <math.h>: errno cleared before the call and set by the
        // function when the arguments have no result. A plain function has no other way to
        // answer an error, and a wrapped or sentinel value would go out as a valid result.
        let failure: Int32 = withUnsafeMutableBytes(of: &result) { r in
            errno = 0
            ffi_call(cif, function, r.baseAddress, argv)
            return errno
        }
        if failure != 0 { return .failure(.failed(failure)) }
        return .success(withUnsafeBytes(of: &result) { r in render(r) })
    }

    private func render(_ r: UnsafeRawBufferPointer) -> (String, String) {
        switch returnType {
        case .int32: let v = Int32(truncatingIfNeeded: r.load(as: Int64.self)); return ("\(v)", "\(v)")
        case .int64: let v = r.load(as: Int64.self); return ("\(v)", "\(v)")
        case .uint32: let v = UInt32(truncatingIfNeeded: r.load(as: UInt64.self)); return ("\(v)", "\(v)")
        case .uint64: let v = r.load(as: UInt64.self); return ("\(v)", "\(v)")
        case .double: return FFIFunction.number(r.load(as: Double.self))
        case .float: return FFIFunction.number(Double(r.load(as: Float.self)))
        case .string:
            guard let p = r.load(as: UnsafePointer<CChar>?.self) else { return ("", "null") }
            let s = String(cString: p)
            return (s, FFIFunction.jsonString(s))
        case .void: return ("", "null")
        }
    }

    private static func number(_ d: Double) -> (String, String) {
        guard d.isFinite else { return ("\(d)", "null") }
        let text = d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)"
        return (text, text)
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = Array("0123456789abcdef")
                    out += "\\u00" + String(hex[Int(u.value >> 4)]) + String(hex[Int(u.value & 15)])
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: WhitespaceSet) -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }

    fileprivate func replacingOccurrences(of a: String, with b: String) -> String {
        split(separator: Character(a), omittingEmptySubsequences: false).joined(separator: b)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: WhitespaceSet) -> String { String(self).trimmingCharacters(in: set) }
}

fileprivate enum WhitespaceSet { case whitespaces }
