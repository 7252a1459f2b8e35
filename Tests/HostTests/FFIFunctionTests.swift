@testable import AWSParsing
@testable import Host
import Glibc
import Testing

/// Any C function pointer, typed as the registry stores it.
private func erase<F>(_ f: F) -> @convention(c) () -> Void {
    unsafeBitCast(f, to: (@convention(c) () -> Void).self)
}

private let noop: @convention(c) () -> Void = {}

@Suite struct FFISignatureTests {
    typealias T = FFIFunction.CType

    private func parse(_ signature: String) throws -> (String, T, [String], [T]) {
        let f = try FFIFunction(signature: signature, function: noop)
        return (f.name, f.returnType, f.parameters.map(\.name), f.parameters.map(\.type))
    }

    @Test func parsesADeclaration() throws {
        let (name, ret, names, types) = try parse("double area(double w, double h)")
        #expect(name == "area")
        #expect(ret == .double)
        #expect(names == ["w", "h"])
        #expect(types == [.double, .double])
    }

    @Test(arguments: ["int f()", "int f(void)", "int f( void )", "  int   f  (  )  "])
    func noParameters(_ signature: String) throws {
        let (name, ret, names, _) = try parse(signature)
        #expect(name == "f")
        #expect(ret == .int32)
        #expect(names.isEmpty)
    }

    @Test(arguments: [
        ("int", T.int32), ("signed", .int32), ("signed int", .int32), ("int32_t", .int32),
        ("long", .int64), ("long int", .int64), ("long long", .int64), ("int64_t", .int64), ("ssize_t", .int64),
        ("unsigned", .uint32), ("unsigned int", .uint32), ("uint32_t", .uint32),
        ("unsigned long", .uint64), ("unsigned long long", .uint64), ("uint64_t", .uint64), ("size_t", .uint64),
        ("double", .double), ("float", .float), ("const int", .int32),
        ("char *", .string), ("const char *", .string), ("char*", .string), ("const char*", .string),
        ("char const *", .string), ("const  char  *", .string),
    ])
    func types(_ declaration: String, _ expected: T) throws {
        let (_, ret, names, types) = try parse("\(declaration) f(\(declaration) x)")
        #expect(ret == expected)
        #expect(names == ["x"])
        #expect(types == [expected])
    }

    @Test func pointerGluedToTheName() throws {
        let (name, ret, names, types) = try parse("const char *greet(const char *who, int32_t n)")
        #expect(name == "greet")
        #expect(ret == .string)
        #expect(names == ["who", "n"])
        #expect(types == [.string, .int32])
    }

    @Test func voidReturn() throws {
        #expect(try parse("void tick(uint64_t n)").1 == .void)
    }

    @Test(arguments: [
        ("double area", "expected a C declaration like \"double area(double w, double h)\""),
        ("double area)(", "expected a C declaration like \"double area(double w, double h)\""),
        ("", "expected a C declaration like \"double area(double w, double h)\""),
        ("(int a)", "missing a name in \"\""),
        ("area(int a)", "missing a type in \"area\""),
        ("double (int a)", "missing a type in \"double \""),
        ("double *(int a)", "missing a name in \"double *\""),
        ("struct s f(int a)", "unsupported return type \"struct s\""),
        ("int *f(int a)", "unsupported return type \"int *\""),
        ("char f(int a)", "unsupported return type \"char\""),
        ("bool f(int a)", "unsupported return type \"bool\""),
        ("int f(int)", "missing a type in \"int\""),
        ("int f(int a, b)", "missing a type in \" b\""),
        ("int f(void x)", "unsupported parameter type \"void\" for x"),
        ("int f(short s)", "unsupported parameter type \"short\" for s"),
        ("int f(int *p)", "unsupported parameter type \"int *\" for p"),
        ("int f(int a, double a)", "parameter a named twice"),
        ("int f(int a[])", "missing a name in \"int a[]\""),
    ])
    func rejects(_ signature: String, _ message: String) {
        let error = #expect(throws: FFIFunction.SignatureError.self) {
            try FFIFunction(signature: signature, function: noop)
        }
        #expect(error?.description == message)
    }

    // Empty items between commas are skipped rather than refused.
    @Test(arguments: ["int f(int a,)", "int f(int a,,int b)", "int f(,int a)"])
    func emptyParametersAreSkipped(_ signature: String) throws {
        let (_, _, names, _) = try parse(signature)
        #expect(names.first == "a")
    }
}

@Suite struct FFICallTests {
    @Test func doubles() throws {
        let area: @convention(c) (Double, Double) -> Double = { $0 * $1 }
        let f = try FFIFunction(signature: "double area(double w, double h)", function: erase(area))
        let r = try f.call(["w": "3", "h": "2.5"]).get()
        #expect(r.text == "7.5")
        #expect(r.json == "7.5")
        // Whole results print without a fraction.
        #expect(try f.call(["w": " 3 ", "h": "2"]).get().text == "6")
        #expect(try f.call(["w": "-1e3", "h": "1e3"]).get().text == "-1000000")
        #expect(try f.call(["w": "1e10", "h": "1e10"]).get().text == "1e+20")
    }

    @Test func argumentsGoByName() throws {
        let minus: @convention(c) (Int64, Int64) -> Int64 = { $0 - $1 }
        let f = try FFIFunction(signature: "long minus(long a, long b)", function: erase(minus))
        #expect(try f.call(["b": "2", "a": "10", "extra": "x"]).get().text == "8")
        #expect(try f.call(["a": "\(Int64.min + 1)", "b": "1"]).get().text == "\(Int64.min)")
    }

    @Test func int32SignIsKept() throws {
        let negate: @convention(c) (Int32) -> Int32 = { -$0 }
        let f = try FFIFunction(signature: "int negate(int x)", function: erase(negate))
        let r = try f.call(["x": "5"]).get()
        #expect(r.text == "-5")
        #expect(r.json == "-5")
        #expect(try f.call(["x": "-2147483647"]).get().text == "2147483647")
    }

    @Test func unsigned() throws {
        let twice: @convention(c) (UInt32) -> UInt32 = { $0 &* 2 }
        let f = try FFIFunction(signature: "unsigned twice(unsigned x)", function: erase(twice))
        #expect(try f.call(["x": "3000000000"]).get().text == "1705032704")   // wraps at 2^32
        let max: @convention(c) (UInt64) -> UInt64 = { $0 }
        let g = try FFIFunction(signature: "uint64_t id(uint64_t x)", function: erase(max))
        #expect(try g.call(["x": "18446744073709551615"]).get().text == "18446744073709551615")
    }

    @Test func float() throws {
        let half: @convention(c) (Float) -> Float = { $0 / 2 }
        let f = try FFIFunction(signature: "float half(float x)", function: erase(half))
        #expect(try f.call(["x": "3"]).get().text == "1.5")
    }

    @Test func strings() throws {
        let echo: @convention(c) (UnsafePointer<CChar>?) -> UnsafePointer<CChar>? = { $0 }
        let f = try FFIFunction(signature: "const char *echo(const char *s)", function: erase(echo))
        // Strings go through untrimmed, and are escaped for JSON.
        let r = try f.call(["s": " say \"hi\"\n\u{1}"]).get()
        #expect(r.text == " say \"hi\"\n\u{1}")
        #expect(r.json == "\" say \\\"hi\\\"\\n\\u0001\"")
        let null: @convention(c) (UnsafePointer<CChar>?) -> UnsafePointer<CChar>? = { _ in nil }
        let g = try FFIFunction(signature: "const char *null(const char *s)", function: erase(null))
        let n = try g.call(["s": "x"]).get()
        #expect(n.text == "")
        #expect(n.json == "null")
    }

    @Test func aCFunctionFromTheCLibrary() throws {
        let f = try FFIFunction(signature: "size_t strlen(const char *s)", function: erase(strlen as @convention(c) (UnsafePointer<CChar>) -> Int))
        #expect(try f.call(["s": "hello"]).get().text == "5")
    }

    @Test func voidResult() throws {
        let nothing: @convention(c) (Int32) -> Void = { _ in }
        let f = try FFIFunction(signature: "void nothing(int x)", function: erase(nothing))
        let r = try f.call(["x": "1"]).get()
        #expect(r.text == "")
        #expect(r.json == "null")
    }

    @Test func missingAndInvalidArguments() throws {
        let area: @convention(c) (Double, Double) -> Double = { $0 * $1 }
        let f = try FFIFunction(signature: "double area(double w, double h)", function: erase(area))
        #expect(describe(f.call(["w": "1"])) == "missing h")
        #expect(describe(f.call(["h": "1"])) == "missing w")
        #expect(describe(f.call(["w": "x", "h": "1"])) == "invalid w double")
        #expect(describe(f.call(["w": "inf", "h": "1"])) == "invalid w double")
        #expect(describe(f.call(["w": "nan", "h": "1"])) == "invalid w double")
        #expect(describe(f.call(["w": "", "h": "1"])) == "invalid w double")

        let negate: @convention(c) (Int32) -> Int32 = { -$0 }
        let g = try FFIFunction(signature: "int negate(int x)", function: erase(negate))
        #expect(describe(g.call(["x": "2147483648"])) == "invalid x int32_t")
        #expect(describe(g.call(["x": "1.5"])) == "invalid x int32_t")
        let u = try FFIFunction(signature: "unsigned u(unsigned x)", function: noop)
        #expect(describe(u.call(["x": "-1"])) == "invalid x uint32_t")
    }

    private func describe(_ r: Result<(text: String, json: String), FFIFunction.CallError>) -> String {
        switch r {
        case .success(let v): "ok \(v.text)"
        case .failure(.missing(let name)): "missing \(name)"
        case .failure(.invalid(let name, let type)): "invalid \(name) \(type.rawValue)"
        case .failure(.failed(let code)): "failed \(code)"
        }
    }

    @Test func errnoSetByTheFunctionMeansNoResult() throws {
        let checkedAdd: @convention(c) (Int64, Int64) -> Int64 = { a, b in
            let (sum, overflow) = a.addingReportingOverflow(b)
            if overflow { errno = ERANGE }
            return sum
        }
        let f = try FFIFunction(signature: "int64_t add(int64_t a, int64_t b)", function: erase(checkedAdd))
        #expect(describe(f.call(["a": "\(Int64.max)", "b": "1"])) == "failed \(ERANGE)")
        #expect(describe(f.call(["a": "\(Int64.max)", "b": "0"])) == "ok \(Int64.max)")
        // errno left over from before the call is not the function's: it is cleared first.
        errno = EINVAL
        #expect(describe(f.call(["a": "2", "b": "40"])) == "ok 42")
    }

    @Test(arguments: [
        ("", "\"\""), ("plain", "\"plain\""), ("a\\b", "\"a\\\\b\""), ("\r\t", "\"\\r\\t\""),
        ("\u{1f}", "\"\\u001f\""), ("é ✓", "\"é ✓\""),
    ])
    func jsonString(_ s: String, _ expected: String) {
        #expect(FFIFunction.jsonString(s) == expected)
    }
}
