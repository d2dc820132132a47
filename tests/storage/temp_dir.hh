/* A directory under /tmp for one storage test, removed with everything in
 * it when the test ends. */
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <set>
#include <string>

namespace linecap::storage::test_support {

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char tmpl[] = "/tmp/linecap-storage-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    /* The names in the directory, hidden ones included. */
    std::set<std::string> names() const {
        std::set<std::string> s;
        for (auto& e : std::filesystem::directory_iterator(path))
            s.insert(e.path().filename().string());
        return s;
    }
};

}  // namespace linecap::storage::test_support
