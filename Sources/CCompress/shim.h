#include <zlib.h>
#include <brotli/encode.h>
#include <zstd.h>

/* deflateInit2 is a macro (it passes the library version and stream size): Swift cannot call
 * it. windowBits 15 + 16 asks zlib for a gzip wrapper rather than zlib's own. */
static inline int aws_deflate_init_gzip(z_stream *strm, int level) {
    return deflateInit2(strm, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}
