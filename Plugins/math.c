/*
 * math — ordinary C functions served over HTTP with register_function: no handler, no request
 * parsing. The host reads each parameter by name from the query string (or, for POST, an
 * application/x-www-form-urlencoded body), converts it to the declared C type, calls the
 * function through libffi and sends the result as text, or as JSON {"result": ...} when the
 * client asks with `?format=json` or `Accept: application/json`.
 *
 *   GET /math/area?w=3&h=4        12           double   area(double w, double h)
 *   GET /math/add?a=2&b=40        42           int64_t  add(int64_t a, int64_t b)
 *   GET /math/greet?name=Ada      Hello, Ada!  const char *greet(const char *name)
 *   GET /math/fib?n=10            55           uint32_t fib(uint32_t n)
 *
 * A missing or malformed parameter is answered 400 by the host, naming it ("missing parameter:
 * w", "invalid parameter n: expected uint32_t"). A function whose arguments are well-formed but
 * have no result sets errno, as strtol and <math.h> do: the host clears errno before the call
 * and answers 422 with the function's name and strerror ("add: Numerical result out of range"
 * for INT64_MAX + 1). fib still shows the older way, a documented sentinel past 47.
 *
 * ABI features shown: register_function with the supported C types (double, int64_t, uint32_t,
 * const char *); a returned string the host copies and never frees; errno for "no result".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include "aws_plugin.h"

static double area(double w, double h) { return w * h; }

/* A sum outside int64_t is not answered with a wrapped-around number: errno = ERANGE tells the
 * host there is no result (422). */
static int64_t add(int64_t a, int64_t b) {
    int64_t sum;
    if (__builtin_add_overflow(a, b, &sum)) {
        errno = ERANGE;
        return 0;
    }
    return sum;
}

/* Returns a pointer the host copies at once and does not free: a buffer per thread, so that a
 * server with several loop threads never has two calls share one. `name` is borrowed. Names
 * longer than the buffer are cut. */
static const char *greet(const char *name) {
    static _Thread_local char text[256];
    snprintf(text, sizeof text, "Hello, %s!", name);
    return text;
}

/* fib(0) = 0, fib(1) = 1, ...; fib(47) = 2971215073 is the last that fits in a uint32_t. Past
 * it the result is UINT32_MAX (4294967295), which is not a Fibonacci number. */
static uint32_t fib(uint32_t n) {
    if (n > 47) return UINT32_MAX;
    uint32_t a = 0, b = 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t next = a + b;
        a = b;
        b = next;
    }
    return a;
}

/* register_function takes a generic function pointer; the signature string tells the host the
 * real type. Converting between function pointer types is fine in C as long as the call goes
 * through the right type, which libffi's call interface, built from the signature, provides. */
#define FN(f) ((void (*)(void))(f))

static int init(const aws_host_api *host, aws_plugin_ctx *ctx) {
    int rc;
    if ((rc = host->register_function(ctx, "/math/area", "double area(double w, double h)", FN(area))) != AWS_OK) return rc;
    if ((rc = host->register_function(ctx, "/math/add", "int64_t add(int64_t a, int64_t b)", FN(add))) != AWS_OK) return rc;
    if ((rc = host->register_function(ctx, "/math/greet", "const char *greet(const char *name)", FN(greet))) != AWS_OK) return rc;
    return host->register_function(ctx, "/math/fib", "uint32_t fib(uint32_t n)", FN(fib));
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor),
    .name = "math",
    .version = "1.0.0",
    .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
