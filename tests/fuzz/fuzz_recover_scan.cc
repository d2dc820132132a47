// libFuzzer target: the record walk that recovers a killed run's hidden file
// (storage/recover.hh). Any bytes: the walk must stay inside the file, and
// cutting the file where it stopped must give the same walk again (what
// recovery publishes reads the same as what it measured).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "storage/recover.hh"

using namespace linecap::storage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    int fd = memfd_create("fuzz-recover", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (size > 0 && write(fd, data, size) != static_cast<ssize_t>(size)) {
        close(fd);
        return 0;
    }
    RecordScan s = scan_records(fd, size);
    if (s.end > size) abort();
    if (!s.capture && (s.end != 0 || s.packets != 0)) abort();
    if (s.capture && s.packets > 0) {
        if (ftruncate(fd, static_cast<off_t>(s.end)) != 0) abort();
        RecordScan again = scan_records(fd, s.end);
        if (again.end != s.end || again.packets != s.packets) abort();
    }
    close(fd);
    return 0;
}
