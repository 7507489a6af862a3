/* zstd's header from the system (libzstd-dev, Homebrew's zstd): what libkbpack's sources include. */
#include <zstd.h>
