/* dladdr is declared only under _GNU_SOURCE (see clinux.h). */
#define _GNU_SOURCE
#include "clinux.h"
#include <dlfcn.h>

const char *aws_dl_file_of(const void *addr) {
    Dl_info info;
    if (addr == NULL || dladdr(addr, &info) == 0) return NULL;
    return info.dli_fname;
}
