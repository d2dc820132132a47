/* -Z USER: dropping root once the capture is set up, as tcpdump does.
 *
 * Hugepage mapping, PCI/VFIO access, AF_PACKET/AF_XDP sockets and the control
 * socket need root and are all set up before the drop; afterwards capd only
 * writes files, which USER must be able to create in the output directory. */
#pragma once

#include <string>

#include "dataplane/result.hh"

namespace linecap::dataplane {

/* Before anything is created: checks in a child process that `user` exists
 * and could create files in the directory of `output_path`. */
Status check_run_as(const std::string& user, const std::string& output_path);

/* Checks that `user` exists and can write in the directory of `path`, hands
 * it the files already open under `open_files`, then sets the group list,
 * gid and uid of the whole process (every thread). */
Status drop_privileges(const std::string& user, const std::string& output_path);

}  // namespace linecap::dataplane
