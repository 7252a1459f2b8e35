/* Intentionally empty: the ABI is the header. A source file keeps SwiftPM's C target valid
 * without giving plugins any symbol to export twice. */
#include "aws_plugin.h"
