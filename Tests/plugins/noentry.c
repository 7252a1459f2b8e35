/* noentry — a shared library without the aws_plugin_entry symbol (only a differently named
 * function): the host must refuse it and skip it. */
#include "aws_plugin.h"

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "noentry", .version = "1.0",
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry_v2(void) { return &descriptor; }
AWS_PLUGIN_EXPORT int not_an_aws_plugin(void) { return 42; }
