/* aws plugin ABI. Version constants only for now; the full contract arrives with ABI v1. */
#ifndef AWS_PLUGIN_H
#define AWS_PLUGIN_H
#define AWS_PLUGIN_ABI_MAJOR 1
#define AWS_PLUGIN_ABI_MINOR 0
#endif
