/* Runs every dataplane unit test in one EAL, without hugepages or PCI, as a
 * fresh machine does, with the net_null ports the worker tests read. */
#include <gtest/gtest.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    std::string prefix = "--file-prefix=dataplane" + std::to_string(getpid());
    std::vector<std::string> args = {"dataplane_test",
                                     "--no-huge",
                                     "--no-pci",
                                     "-m",
                                     "192",
                                     "--no-shconf",
                                     prefix,
                                     "--no-telemetry",
                                     "--log-level=*:critical",
                                     "-l",
                                     "0"};
    for (int i = 0; i < 4; i++)
        args.push_back("--vdev=net_null" + std::to_string(i) + ",size=64,copy=0");
    std::vector<char*> argv_eal;
    for (auto& a : args) argv_eal.push_back(a.data());
    if (rte_eal_init(static_cast<int>(argv_eal.size()), argv_eal.data()) < 0) {
        std::fprintf(stderr, "dataplane_test: EAL init failed: %s\n", rte_strerror(rte_errno));
        return 1;
    }
    // --no-shconf still makes an empty runtime directory; one per run would
    // pile up (as capd's EalSession does).
    (void)rmdir(rte_eal_get_runtime_dir());
    int rc = RUN_ALL_TESTS();
    rte_eal_cleanup();
    return rc;
}
